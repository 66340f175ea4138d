//! Parser and evaluator tests on synthetic items (no file system).

use riposte_ioc::eval::{evaluate, evaluate_host, Item, Truth};
use riposte_ioc::model::{Field, FieldValue, ItemType, Timestamp};
use riposte_ioc::{ioc_from_detection, openioc, stix, DetectedObject, Detection, Error, Ioc};
use std::borrow::Cow;
use std::collections::HashMap;

struct Fake(ItemType, HashMap<Field, FieldValue>);
impl Item for Fake {
    fn item_type(&self) -> ItemType {
        self.0
    }
    fn value(&mut self, f: Field) -> Option<Cow<'_, FieldValue>> {
        self.1.get(&f).map(Cow::Borrowed)
    }
}

fn file(name: &str, size: i64, md5: &str, mtime: i64) -> Fake {
    let mut m = HashMap::new();
    m.insert(Field::FileName, FieldValue::Str(name.into()));
    m.insert(
        Field::FileFullPath,
        FieldValue::Str(format!("/tmp/x/{name}")),
    );
    m.insert(
        Field::FileExtension,
        FieldValue::Str(name.rsplit('.').next().unwrap().into()),
    );
    m.insert(Field::FileSize, FieldValue::Int(size));
    m.insert(Field::FileMd5, FieldValue::Str(md5.into()));
    m.insert(
        Field::FileModified,
        FieldValue::Time(Timestamp::from_secs(mtime)),
    );
    Fake(ItemType::File, m)
}

fn v11(items: &str) -> String {
    format!(
        r#"<?xml version="1.0"?>
<OpenIOC xmlns="http://openioc.org/schemas/OpenIOC_1.1" id="t1" last-modified="2020-01-01T00:00:00Z" published-date="2020-01-01T00:00:00Z">
<metadata><short_description>test</short_description><authored_date>2020-01-01T00:00:00Z</authored_date></metadata>
<criteria>{items}</criteria></OpenIOC>"#
    )
}

fn item11(cond: &str, search: &str, ty: &str, val: &str, negate: bool, pc: bool) -> String {
    format!(
        r#"<IndicatorItem id="i-{search}-{cond}" condition="{cond}" preserve-case="{pc}" negate="{negate}"><Context document="X" search="{search}" type="mir"/><Content type="{ty}">{val}</Content></IndicatorItem>"#
    )
}

fn check(ioc: &Ioc, item: &mut Fake) -> Truth {
    evaluate(ioc, item, &|_| Truth::False).truth
}

fn one(cond: &str, search: &str, ty: &str, val: &str, negate: bool, pc: bool) -> Ioc {
    let x = v11(&format!(
        r#"<Indicator operator="OR" id="r">{}</Indicator>"#,
        item11(cond, search, ty, val, negate, pc)
    ));
    openioc::parse(&x, "t.ioc").unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn every_condition_negate_and_case() {
    let mut f = file(
        "Evil.EXE",
        1234,
        "0123456789abcdef0123456789abcdef",
        1_600_000_000,
    );
    let cases: &[(&str, &str, &str, &str, bool, bool, Truth)] = &[
        (
            "is",
            "FileItem/FileName",
            "string",
            "evil.exe",
            false,
            false,
            Truth::True,
        ),
        (
            "is",
            "FileItem/FileName",
            "string",
            "evil.exe",
            false,
            true,
            Truth::False,
        ),
        (
            "is",
            "FileItem/FileName",
            "string",
            "Evil.EXE",
            false,
            true,
            Truth::True,
        ),
        (
            "is",
            "FileItem/FileName",
            "string",
            "evil.exe",
            true,
            false,
            Truth::False,
        ),
        (
            "is",
            "FileItem/FileName",
            "string",
            "good.exe",
            true,
            false,
            Truth::True,
        ),
        (
            "contains",
            "FileItem/FileName",
            "string",
            "vil.e",
            false,
            false,
            Truth::True,
        ),
        (
            "contains",
            "FileItem/FileName",
            "string",
            "vil.e",
            false,
            true,
            Truth::False,
        ),
        (
            "starts-with",
            "FileItem/FileName",
            "string",
            "EVIL",
            false,
            false,
            Truth::True,
        ),
        (
            "starts-with",
            "FileItem/FileName",
            "string",
            "vil",
            false,
            false,
            Truth::False,
        ),
        (
            "ends-with",
            "FileItem/FileName",
            "string",
            ".exe",
            false,
            false,
            Truth::True,
        ),
        (
            "ends-with",
            "FileItem/FileName",
            "string",
            ".dll",
            false,
            false,
            Truth::False,
        ),
        (
            "matches",
            "FileItem/FileName",
            "string",
            "^e.il\\.exe$",
            false,
            false,
            Truth::True,
        ),
        (
            "matches",
            "FileItem/FileName",
            "string",
            "^e.il\\.exe$",
            false,
            true,
            Truth::False,
        ),
        (
            "is",
            "FileItem/FileExtension",
            "string",
            ".exe",
            false,
            false,
            Truth::True,
        ),
        (
            "is",
            "FileItem/SizeInBytes",
            "int",
            "1234",
            false,
            false,
            Truth::True,
        ),
        (
            "is",
            "FileItem/SizeInBytes",
            "int",
            "1000 TO 2000",
            false,
            false,
            Truth::True,
        ),
        (
            "is",
            "FileItem/SizeInBytes",
            "int",
            "1235 TO 2000",
            false,
            false,
            Truth::False,
        ),
        (
            "greater-than",
            "FileItem/SizeInBytes",
            "int",
            "1233",
            false,
            false,
            Truth::True,
        ),
        (
            "greater-than",
            "FileItem/SizeInBytes",
            "int",
            "1234",
            false,
            false,
            Truth::False,
        ),
        (
            "less-than",
            "FileItem/SizeInBytes",
            "int",
            "1235",
            false,
            false,
            Truth::True,
        ),
        (
            "less-than",
            "FileItem/SizeInBytes",
            "int",
            "1235",
            true,
            false,
            Truth::False,
        ),
        // A size written as a string is still a number: as text, "1234" < "200".
        (
            "greater-than",
            "FileItem/SizeInBytes",
            "string",
            "200",
            false,
            false,
            Truth::True,
        ),
        (
            "less-than",
            "FileItem/SizeInBytes",
            "string",
            "200",
            false,
            false,
            Truth::False,
        ),
        (
            "greater-than",
            "FileItem/Modified",
            "string",
            "2020-01-01T00:00:00Z",
            false,
            false,
            Truth::True,
        ),
        (
            "is",
            "FileItem/Md5sum",
            "md5",
            "0123456789ABCDEF0123456789ABCDEF",
            false,
            false,
            Truth::True,
        ),
        (
            "is",
            "FileItem/Md5sum",
            "md5",
            "ffffffffffffffffffffffffffffffff",
            false,
            false,
            Truth::False,
        ),
        (
            "is",
            "FileItem/Modified",
            "date",
            "2020-09-13T12:26:40Z",
            false,
            false,
            Truth::True,
        ),
        (
            "greater-than",
            "FileItem/Modified",
            "date",
            "2020-01-01T00:00:00Z",
            false,
            false,
            Truth::True,
        ),
        (
            "less-than",
            "FileItem/Modified",
            "date",
            "2020-01-01",
            false,
            false,
            Truth::False,
        ),
        (
            "is",
            "FileItem/Modified",
            "date",
            "2020-09-01T00:00:00Z TO 2020-10-01T00:00:00Z",
            false,
            false,
            Truth::True,
        ),
        (
            "is",
            "FileItem/Created",
            "date",
            "2020-09-13T12:26:40Z",
            true,
            false,
            Truth::True,
        ),
        // A day alone is the whole day: `is` any time of it, `greater-than` after it,
        // a range's last day taken in whole; an instant stays an instant.
        (
            "is",
            "FileItem/Modified",
            "date",
            "2020-09-13",
            false,
            false,
            Truth::True,
        ),
        (
            "is",
            "FileItem/Modified",
            "date",
            "2020-09-12",
            false,
            false,
            Truth::False,
        ),
        (
            "is",
            "FileItem/Modified",
            "date",
            "2020-09-13T00:00:00Z",
            false,
            false,
            Truth::False,
        ),
        (
            "greater-than",
            "FileItem/Modified",
            "date",
            "2020-09-13",
            false,
            false,
            Truth::False,
        ),
        (
            "greater-than",
            "FileItem/Modified",
            "date",
            "2020-09-12",
            false,
            false,
            Truth::True,
        ),
        (
            "less-than",
            "FileItem/Modified",
            "date",
            "2020-09-13",
            false,
            false,
            Truth::False,
        ),
        (
            "less-than",
            "FileItem/Modified",
            "date",
            "2020-09-14",
            false,
            false,
            Truth::True,
        ),
        (
            "is",
            "FileItem/Modified",
            "date",
            "2020-09-01 TO 2020-09-13",
            false,
            false,
            Truth::True,
        ),
        (
            "is",
            "FileItem/Modified",
            "date",
            "2020-09-13 TO 2020-09-20",
            false,
            false,
            Truth::True,
        ),
        (
            "is",
            "FileItem/Modified",
            "date",
            "2020-09-01 TO 2020-09-12",
            false,
            false,
            Truth::False,
        ),
    ];
    for (cond, search, ty, val, neg, pc, want) in cases {
        let ioc = one(cond, search, ty, val, *neg, *pc);
        assert_eq!(
            check(&ioc, &mut f),
            *want,
            "{cond} {search} {ty} {val} negate={neg} preserve-case={pc}"
        );
    }
}

#[test]
fn ip_and_duration_content_types() {
    let mut m = HashMap::new();
    m.insert(
        Field::PortRemoteIp,
        FieldValue::Ip("10.1.2.3".parse().unwrap()),
    );
    m.insert(Field::PortRemotePort, FieldValue::Int(4444));
    let mut port = Fake(ItemType::Port, m);
    for (cond, ty, val, want) in [
        ("is", "IP", "10.1.2.3", Truth::True),
        ("is", "IP", "10.1.0.0 TO 10.1.255.255", Truth::True),
        ("is", "IP", "10.2.0.0 TO 10.2.255.255", Truth::False),
        ("starts-with", "IP", "10.1.", Truth::True),
        ("greater-than", "IP", "10.1.2.2", Truth::True),
    ] {
        let ioc = one(cond, "PortItem/remoteIP", ty, val, false, false);
        assert_eq!(check(&ioc, &mut port), want, "{cond} {val}");
    }
    let mut m = HashMap::new();
    m.insert(Field::ProcUserTime, FieldValue::Duration(90.0));
    let mut p = Fake(ItemType::Process, m);
    for (cond, val, want) in [
        ("greater-than", "PT1M", Truth::True),
        ("less-than", "PT1M", Truth::False),
        ("is", "PT1M TO PT2M", Truth::True),
    ] {
        let ioc = one(cond, "ProcessItem/userTime", "duration", val, false, false);
        assert_eq!(check(&ioc, &mut p), want, "{cond} {val}");
    }
}

/// A term whose content type can never be compared with its field's values is listed
/// as unsupported, with why, instead of being a silent "no match" for ever.
#[test]
fn content_type_that_cannot_compare_is_unsupported() {
    let sha256_zeros = "0".repeat(64);
    let never = [
        (
            "is",
            "FileItem/SizeInBytes",
            "IP",
            "10.0.0.1",
            "which is a number",
        ),
        (
            "greater-than",
            "FileItem/SizeInBytes",
            "date",
            "2020-01-01",
            "which is a number",
        ),
        (
            "is",
            "FileItem/Md5sum",
            "sha256",
            sha256_zeros.as_str(),
            "which is an MD5 digest",
        ),
        (
            "is",
            "FileItem/Modified",
            "IP",
            "10.0.0.1",
            "which is a time",
        ),
        (
            "less-than",
            "ProcessItem/userTime",
            "date",
            "2020-01-01",
            "which is a duration",
        ),
        (
            "is",
            "PortItem/localIP",
            "int",
            "80",
            "which is an IP address",
        ),
        (
            "is",
            "FileItem/FileName",
            "duration",
            "PT1M",
            "which is text",
        ),
    ];
    for (cond, search, ty, val, kind) in never {
        let ioc = one(cond, search, ty, val, false, false);
        assert!(ioc.terms.is_empty(), "{search} {ty}");
        assert_eq!(ioc.unsupported.len(), 1, "{search} {ty}");
        assert_eq!(ioc.unsupported[0].search, search);
        let reason = &ioc.unsupported[0].reason;
        assert!(
            reason.contains(&format!(
                "content type '{ty}' cannot be compared with {search}, {kind}"
            )),
            "{reason}"
        );
        // Unknown, not "no match": the item could hold what the indicator meant.
        let mut f = file("a.txt", 1, "0123456789abcdef0123456789abcdef", 0);
        if search.starts_with("FileItem") {
            assert_eq!(check(&ioc, &mut f), Truth::Unknown, "{search} {ty}");
        }
    }
    // What can compare stays a term: text parsed as a number, a size written as a
    // string, a duration against a size, a time against Unix seconds, text conditions.
    let can = [
        ("is", "FileItem/SizeInBytes", "string", "1"),
        ("is", "FileItem/SizeInBytes", "duration", "PT1S"),
        ("greater-than", "FileItem/Modified", "int", "0"),
        ("is", "FileItem/FileName", "int", "1"),
        (
            "is",
            "FileItem/Md5sum",
            "md5",
            "0123456789abcdef0123456789abcdef",
        ),
        ("contains", "FileItem/SizeInBytes", "IP", "1"),
        ("is", "PortItem/localIP", "string", "10.0.0.1"),
    ];
    for (cond, search, ty, val) in can {
        let ioc = one(cond, search, ty, val, false, false);
        assert_eq!(ioc.terms.len(), 1, "{search} {ty}: {:?}", ioc.unsupported);
    }
}

#[test]
fn nesting_and_unsupported_three_valued() {
    let reg = item11("is", "RegistryItem/Path", "string", "HKLM\\x", false, false);
    let name = item11(
        "is",
        "FileItem/FileName",
        "string",
        "evil.exe",
        false,
        false,
    );
    let size = item11("is", "FileItem/SizeInBytes", "int", "1", false, false);
    let md5 = item11(
        "is",
        "FileItem/Md5sum",
        "md5",
        "0123456789abcdef0123456789abcdef",
        false,
        false,
    );
    let mut f = file("evil.exe", 1234, "0123456789abcdef0123456789abcdef", 0);
    // OR(unsupported, miss) => unknown
    let x = v11(&format!(
        r#"<Indicator operator="OR" id="a">{reg}{size}</Indicator>"#
    ));
    let ioc = openioc::parse(&x, "t").unwrap();
    assert_eq!(ioc.unsupported.len(), 1);
    assert_eq!(ioc.unsupported[0].search, "RegistryItem/Path");
    assert_eq!(check(&ioc, &mut f), Truth::Unknown);
    assert_eq!(evaluate_host(&ioc, &|_| Truth::False), Truth::Unknown);
    // AND(unsupported, miss) => false
    let x = v11(&format!(
        r#"<Indicator operator="AND" id="a">{reg}{size}</Indicator>"#
    ));
    assert_eq!(
        check(&openioc::parse(&x, "t").unwrap(), &mut f),
        Truth::False
    );
    // OR(AND(name, md5), AND(size, reg)) => true, matched terms name and md5
    let x = v11(&format!(
        r#"<Indicator operator="OR" id="a"><Indicator operator="AND" id="b">{md5}{name}</Indicator><Indicator operator="AND" id="c">{size}{reg}</Indicator></Indicator>"#
    ));
    let ioc = openioc::parse(&x, "t").unwrap();
    let ev = evaluate(&ioc, &mut f, &|_| Truth::False);
    assert_eq!(ev.truth, Truth::True);
    let mut ids: Vec<_> = ev
        .matched
        .iter()
        .map(|i| ioc.terms[*i].id.clone())
        .collect();
    ids.sort();
    assert_eq!(ids, ["i-FileItem/FileName-is", "i-FileItem/Md5sum-is"]);
    // cheap term (FileName) is ordered before the content term (Md5sum)
    struct Counting(Fake, Vec<Field>);
    impl Item for Counting {
        fn item_type(&self) -> ItemType {
            ItemType::File
        }
        fn value(&mut self, f: Field) -> Option<Cow<'_, FieldValue>> {
            self.1.push(f);
            self.0.value(f)
        }
    }
    let mut c = Counting(file("other.exe", 1, "00", 0), Vec::new());
    let x = v11(&format!(
        r#"<Indicator operator="AND" id="b">{md5}{name}</Indicator>"#
    ));
    let ioc = openioc::parse(&x, "t").unwrap();
    assert_eq!(
        evaluate(&ioc, &mut c, &|_| Truth::False).truth,
        Truth::False
    );
    assert_eq!(
        c.1,
        [Field::FileName],
        "md5 must not be computed when the name misses"
    );
}

#[test]
fn openioc_10_conditions_and_bom() {
    let x = "\u{feff}<ioc xmlns=\"http://schemas.mandiant.com/2010/ioc\" id=\"x\" last-modified=\"2014-01-01T00:00:00\"><short_description>s</short_description><authored_date>2014-01-01T00:00:00</authored_date><definition><Indicator operator=\"AND\" id=\"a\">\
<IndicatorItem id=\"1\" condition=\"isnot\"><Context document=\"FileItem\" search=\"FileItem/FileName\" type=\"mir\"/><Content type=\"string\">good.exe</Content></IndicatorItem>\
<IndicatorItem id=\"2\" condition=\"containsnot\"><Context document=\"FileItem\" search=\"FileItem/FullPath\" type=\"mir\"/><Content type=\"string\">/usr/</Content></IndicatorItem>\
</Indicator></definition></ioc>";
    let ioc = openioc::parse_bytes(x.as_bytes(), "t").unwrap();
    assert_eq!(ioc.format, riposte_ioc::IocFormat::OpenIoc10);
    assert_eq!(check(&ioc, &mut file("evil.exe", 1, "", 0)), Truth::True);
    assert_eq!(check(&ioc, &mut file("good.exe", 1, "", 0)), Truth::False);
}

/// A comment or processing instruction inside a value is left out, not where the value
/// ends: `a<!-- c -->.txt` is `a.txt`, as an XML reader sees it.
#[test]
fn openioc_values_read_past_comments() {
    for content in [
        "<!-- c -->a.txt",
        "a<!--c-->.txt",
        "a<?pi x?>.txt",
        "a<![CDATA[.txt]]>",
    ] {
        let x = v11(&format!(
            r#"<Indicator operator="OR" id="o"><IndicatorItem id="n" condition="is" negate="false" preserve-case="false"><Context document="FileItem" search="FileItem/FileName" type="mir"/><Content type="string">{content}</Content></IndicatorItem></Indicator>"#
        ));
        let ioc = openioc::parse(&x, "t").unwrap();
        assert_eq!(
            check(&ioc, &mut file("a.txt", 1, "", 0)),
            Truth::True,
            "{content}"
        );
    }
}

/// A document saved as UTF-16 (with or without a byte-order mark), ISO-8859-1 or
/// windows-1252 (as its declaration says) reads as its UTF-8 twin; a name with `é` or `’`
/// matches. An encoding not read here is named, with what to do.
#[test]
fn openioc_in_utf16_latin1_and_windows_1252() {
    let name = "caf\u{e9}\u{2019}s.exe";
    let doc = |encoding: &str| {
        v11(&format!(
            r#"<Indicator operator="OR" id="r">{}</Indicator>"#,
            item11("is", "FileItem/FileName", "string", name, false, false)
        ))
        .replacen(
            r#"<?xml version="1.0"?>"#,
            &format!(r#"<?xml version="1.0" encoding="{encoding}"?>"#),
            1,
        )
    };
    let hits = |ioc: &riposte_ioc::Ioc| check(ioc, &mut file(name, 1, "", 0)) == Truth::True;
    let utf8 = openioc::parse_bytes(doc("UTF-8").as_bytes(), "t").unwrap();
    assert!(hits(&utf8));

    let text = doc("UTF-16");
    let le: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let be: Vec<u8> = text.encode_utf16().flat_map(u16::to_be_bytes).collect();
    for (bytes, what) in [
        ([&[0xFF, 0xFE][..], &le].concat(), "LE with BOM"),
        ([&[0xFE, 0xFF][..], &be].concat(), "BE with BOM"),
        (le.clone(), "LE"),
        (be.clone(), "BE"),
    ] {
        let ioc = openioc::parse_bytes(&bytes, "t").unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(hits(&ioc), "{what}");
    }

    // é is 0xE9 in both; ’ is 0x92 in windows-1252 only.
    let latin1 = doc("ISO-8859-1")
        .replace('\u{2019}', "")
        .replace('\u{e9}', "\u{0}");
    let latin1: Vec<u8> = latin1
        .bytes()
        .map(|b| if b == 0 { 0xE9 } else { b })
        .collect();
    let ioc = openioc::parse_bytes(&latin1, "t").unwrap();
    assert!(check(&ioc, &mut file("caf\u{e9}s.exe", 1, "", 0)) == Truth::True);
    let cp1252: Vec<u8> = doc("windows-1252")
        .chars()
        .map(|c| match c {
            '\u{e9}' => 0xE9,
            '\u{2019}' => 0x92,
            c => u8::try_from(c).unwrap(),
        })
        .collect();
    assert!(hits(&openioc::parse_bytes(&cp1252, "t").unwrap()));

    // What iconv leaves of a UTF-16 file: UTF-8 text that still declares UTF-16.
    assert!(hits(
        &openioc::parse_bytes(doc("UTF-16").as_bytes(), "t").unwrap()
    ));
    let utf32 = [&[0xFF, 0xFE, 0, 0][..], b"<\0\0\0"].concat();
    let e = openioc::parse_bytes(&utf32, "t").unwrap_err().to_string();
    assert!(e.contains("UTF-32") && e.contains("iconv"), "{e}");
    let e = openioc::parse_bytes(doc("EUC-JP").as_bytes(), "t")
        .unwrap_err()
        .to_string();
    assert!(e.contains("euc-jp") && e.contains("iconv"), "{e}");
    // Latin-1 bytes under a UTF-8 declaration are still refused, with where.
    let mislabelled: Vec<u8> = latin1.splitn(2, |b| *b == b'\n').nth(1).unwrap().to_vec();
    let e = openioc::parse_bytes(&mislabelled, "t")
        .unwrap_err()
        .to_string();
    assert!(e.contains("not UTF-8 text (byte offset"), "{e}");
}

fn err(x: &str) -> String {
    openioc::parse(x, "bad.ioc").unwrap_err().to_string()
}

/// Thousands of nested elements in a few kilobytes are refused with their position,
/// before the XML parser (which descends one call per level) could overflow the stack.
/// The check is lexical: markup in comments, CDATA and attribute values is not counted.
#[test]
fn deeply_nested_documents_are_refused_not_a_crash() {
    let term = item11("is", "FileItem/FileName", "string", "a.exe", false, false);
    let deep_links = v11(&format!(
        r#"<Indicator operator="OR" id="r">{term}</Indicator>"#
    ))
    .replace(
        "<criteria>",
        &format!("<!-- {} -->\n<criteria>", "<x>".repeat(20_000)),
    )
    .replace(
        "</metadata>",
        &format!(
            "<links>{}{}</links></metadata>",
            "<x>".repeat(5_000),
            "</x>".repeat(5_000)
        ),
    );
    let e = openioc::parse(&deep_links, "deep.ioc")
        .unwrap_err()
        .to_string();
    assert!(e.contains("elements nested deeper than 256 levels"), "{e}");
    assert!(e.starts_with("deep.ioc:"), "{e}");
    let deep_indicators = v11(&format!(
        "{}{term}{}",
        r#"<Indicator operator="AND" id="n">"#.repeat(5_000),
        "</Indicator>".repeat(5_000)
    ));
    let e = err(&deep_indicators);
    assert!(e.contains("nested deeper than"), "{e}");

    // Under the limit, with markup-like text where it is not markup, it parses.
    let fine = v11(&format!(
        r#"<Indicator operator="OR" id="r"><!-- <<< <x> --><![CDATA[ ]]>{term}</Indicator>"#
    ))
    .replace(
        "</metadata>",
        &format!(
            "<links>{}<link rel=\"a>b\" href='c/>d'/>{}</links></metadata>",
            "<x>".repeat(200),
            "</x>".repeat(200)
        ),
    );
    let ioc = openioc::parse(&fine, "fine.ioc").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ioc.terms.len(), 1);
}

#[test]
fn bad_openioc_inputs_have_clear_errors_with_positions() {
    let e = err(&v11(&format!(
        r#"<Indicator operator="OR" id="r">{}</Indicator>"#,
        item11("is", "FileItem/SizeInBytes", "int", "10 TO 4", false, false)
    )));
    assert!(
        e.contains("the range '10 TO 4' ends before it starts"),
        "{e}"
    );
    // Ranges that mean nothing: refused, not kept to match nothing.
    for (cond, ty, value, says) in [
        ("is", "int", "1 TO 3 TO 5", "a range is 'A TO B'"),
        ("is", "int", "5 TO 3 TO 9", "a range is 'A TO B'"),
        (
            "greater-than",
            "int",
            "1 TO 5",
            "goes with the condition 'is'",
        ),
        (
            "is",
            "md5",
            &format!("{} TO {}", "f".repeat(32), "0".repeat(32)),
            "no range",
        ),
        (
            "is",
            "IP",
            "10.0.0.9 TO ::ffff:10.0.0.1",
            "ends before it starts",
        ),
        ("is", "IP", "10.0.0.1 TO ::1", "mixes an IPv4 and an IPv6"),
    ] {
        let e = err(&v11(&format!(
            r#"<Indicator operator="OR" id="r">{}</Indicator>"#,
            item11(cond, "FileItem/SizeInBytes", ty, value, false, false)
        )));
        assert!(e.contains(says), "{cond} {value}: {e}");
    }
    // An IPv4 address and its IPv4-mapped form are one family.
    let ok = v11(&format!(
        r#"<Indicator operator="OR" id="r">{}</Indicator>"#,
        item11(
            "is",
            "PortItem/remoteIP",
            "IP",
            "10.0.0.1 TO ::ffff:10.0.0.9",
            false,
            false
        )
    ));
    openioc::parse(&ok, "ok.ioc").unwrap_or_else(|e| panic!("{e}"));
    assert!(
        err("not xml at all").starts_with("bad.ioc:1:1: XML error"),
        "{}",
        err("not xml")
    );
    let e = err("<ioc xmlns=\"urn:other\"/>");
    assert!(
        e.contains("namespace 'urn:other'") && e.starts_with("bad.ioc:1:1"),
        "{e}"
    );
    let e = err(&v11(&format!(
        r#"<Indicator operator="OR" id="r">
{}</Indicator>"#,
        item11(
            "resembles",
            "FileItem/FileName",
            "string",
            "x",
            false,
            false
        )
    )));
    assert!(
        e.contains("unknown condition 'resembles'") && e.starts_with("bad.ioc:5:1"),
        "{e}"
    );
    let e = err(&v11(&format!(
        r#"<Indicator operator="OR" id="r">{}</Indicator>"#,
        item11(
            "matches",
            "FileItem/FileName",
            "string",
            "a(b",
            false,
            false
        )
    )));
    // One line, naming the pattern and what is wrong with it (not the regex crate's
    // lines, which a report would show escaped).
    assert!(
        e.ends_with("bad regular expression 'a(b': unclosed group"),
        "{e}"
    );
    let e = err(&v11(r#"<Indicator operator="XOR" id="r"/>"#));
    assert!(e.contains("operator 'XOR'"), "{e}");
    let e = err(&v11(&format!(
        r#"<Indicator operator="OR" id="r">{}</Indicator>"#,
        item11("is", "FileItem/SizeInBytes", "int", "lots", false, false)
    )));
    assert!(e.contains("'lots' is not a valid int"), "{e}");
    let e = err(&v11(&format!(
        r#"<Indicator operator="OR" id="r">{}</Indicator>"#,
        item11("is", "FileItem/Md5sum", "md5", "abc", false, false)
    )));
    assert!(e.contains("not a valid Md5 hash"), "{e}");
    let e = err("<OpenIOC xmlns=\"http://openioc.org/schemas/OpenIOC_1.1\" id=\"x\" last-modified=\"2020-01-01T00:00:00\" published-date=\"2020-01-01T00:00:00\"/>");
    assert!(e.contains("requires a <metadata>"), "{e}");
    // 50 MB document: refused quickly by size, not parsed
    let big = format!("<ioc>{}</ioc>", "x".repeat(50 << 20));
    let t = std::time::Instant::now();
    let e = openioc::parse(&big, "big.ioc").unwrap_err();
    assert!(matches!(e, Error::TooLarge { .. }), "{e}");
    assert!(t.elapsed().as_millis() < 500);
    // DTD (entity expansion) refused
    let e = err("<!DOCTYPE x [<!ENTITY a \"aaaa\">]><ioc/>");
    assert!(e.contains("XML error"), "{e}");
}

#[test]
fn stix_patterns_operators() {
    let mut f = file(
        "evil.exe",
        1234,
        "0123456789abcdef0123456789abcdef",
        1_600_000_000,
    );
    let cases = [
        ("[file:name = 'evil.exe']", Truth::True),
        ("[file:name = 'EVIL.exe']", Truth::False),
        ("[file:name != 'evil.exe']", Truth::False),
        ("[file:size > 1000 AND file:size < 2000]", Truth::True),
        ("[file:size >= 1234 AND file:size <= 1234]", Truth::True),
        ("[file:size >= 1235]", Truth::False),
        ("[file:name IN ('a.exe', 'evil.exe')]", Truth::True),
        ("[file:name NOT IN ('a.exe', 'evil.exe')]", Truth::False),
        ("[file:name LIKE 'ev%.e_e']", Truth::True),
        ("[file:name LIKE 'v%']", Truth::False),
        ("[file:name MATCHES '^e[a-z]+\\\\.exe$']", Truth::True),
        ("[file:hashes.'MD5' = '0123456789ABCDEF0123456789ABCDEF']", Truth::True),
        ("[file:hashes.MD5 = 'ffffffffffffffffffffffffffffffff' OR (file:name = 'x' OR file:size = 1234)]", Truth::True),
        ("[file:mtime = t'2020-09-13T12:26:40Z']", Truth::True),
        ("[file:name = 'evil.exe'] AND [file:size = 1234]", Truth::True),
        // On one item, a pattern of several observations is what that item alone
        // satisfies; a sweep joins observations matched by different items (below).
        ("[file:name = 'evil.exe'] AND [file:name = 'other.exe']", Truth::False),
        ("[file:name = 'nope.exe'] AND [file:size = 1]", Truth::False),
        ("[file:name = 'evil.exe'] FOLLOWEDBY [file:size = 1234]", Truth::Unknown),
        ("[file:name = 'evil.exe'] WITHIN 300 SECONDS", Truth::Unknown),
        ("[file:name = 'nope.exe'] REPEATS 5 TIMES", Truth::False),
        ("[file:name = 'x'] OR [windows-registry-key:key = 'HKLM']", Truth::Unknown),
        // A property the object does not have (this file has no birth time nor SHA-256):
        // no comparison on it holds, negated ones neither.
        ("[file:ctime >= t'2100-01-01T00:00:00Z']", Truth::False),
        ("[file:ctime <= t'2100-01-01T00:00:00Z']", Truth::False),
        ("[file:ctime != t'2100-01-01T00:00:00Z']", Truth::False),
        (
            "[file:hashes.'SHA-256' NOT = 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa']",
            Truth::False,
        ),
        ("[file:name NOT = 'x.exe']", Truth::True),
    ];
    for (p, want) in cases {
        let ioc = stix::parse_pattern(p, "id", "n", "t").unwrap_or_else(|e| panic!("{p}: {e}"));
        assert_eq!(check(&ioc, &mut f), want, "{p}");
    }
    let ioc = stix::parse_pattern(
        "[file:name = 'x'] START t'2020-01-01T00:00:00Z' STOP t'2021-01-01T00:00:00Z'",
        "i",
        "n",
        "t",
    )
    .unwrap();
    assert_eq!(ioc.unsupported[0].search, "START");
    // Said once: the kind, the keyword, then the qualifier whole.
    assert_eq!(ioc.unsupported[0].id, "qualifier");
    assert!(
        ioc.unsupported[0].reason.starts_with(
            "START t'2020-01-01T00:00:00Z' STOP t'2021-01-01T00:00:00Z' needs event history"
        ),
        "{:?}",
        ioc.unsupported[0]
    );
    let mut m = HashMap::new();
    m.insert(
        Field::PortRemoteIp,
        FieldValue::Ip("198.51.100.7".parse().unwrap()),
    );
    m.insert(Field::PortRemotePort, FieldValue::Int(443));
    m.insert(Field::PortProtocol, FieldValue::Str("tcp".into()));
    let mut port = Fake(ItemType::Port, m);
    for (p, want) in [
        ("[ipv4-addr:value = '198.51.100.7']", Truth::True),
        ("[ipv4-addr:value ISSUBSET '198.51.100.0/24']", Truth::True),
        ("[ipv4-addr:value ISSUBSET '198.51.101.0/24']", Truth::False),
        (
            "[network-traffic:dst_port = 443 AND network-traffic:protocols[*] = 'tcp']",
            Truth::True,
        ),
        (
            "[network-traffic:dst_ref.value = '198.51.100.8']",
            Truth::False,
        ),
    ] {
        let ioc = stix::parse_pattern(p, "id", "n", "t").unwrap();
        assert_eq!(check(&ioc, &mut port), want, "{p}");
    }
    // A constant of another type than a text property is refused, as for the other
    // kinds: built as negations, `>=`, `<=` and `!=` would hold on every name. An
    // address block has no order: ordering an address against one is refused.
    let text = "where this property holds text (write the value in quotes)";
    let block = "'10.0.0.0/8' is an address block, which has no order";
    for (p, said) in [
        ("[file:name >= 5]", text),
        ("[file:name <= 5]", text),
        ("[file:name >= 5.5]", text),
        ("[file:name != 5]", text),
        ("[file:name != true]", text),
        ("[file:name = t'2020-01-01T00:00:00Z']", text),
        ("[network-traffic:src_ref.value >= '10.0.0.0/8']", block),
        ("[ipv4-addr:value < '10.0.0.0/8']", block),
    ] {
        let e = stix::parse_pattern(p, "id", "n", "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains(said), "{p}: {e}");
    }
}

/// A regular expression valid in PCRE that this engine cannot run (look-around, a
/// back-reference) is an unsupported term with why, in both languages; a broken one
/// stays an error.
#[test]
fn pcre_only_regular_expressions_are_unsupported_not_errors() {
    for p in [
        r"[file:name MATCHES '^(?!x)abc\\.bin$']",
        r"[file:name MATCHES '(a)\\1']",
        r"[file:name MATCHES '(?<n>a)\\k<n>']",
        r"[file:name MATCHES '(?P<n>a)(?P=n)']",
        r"[file:name MATCHES '(?>a)b']",
        r"[file:name MATCHES '(?<n>a)\\k{n}']",
        r"[file:name MATCHES '(a)?(?(1)b|c)']",
        r"[file:name MATCHES 'a(*FAIL)|b']",
        r"[file:name MATCHES '^\\X$']",
        r"[file:name MATCHES '^a++b']",
        r"[file:name MATCHES '^x(b*+)']",
        r"[file:name MATCHES 'c?+\\.bin']",
        r"[file:name MATCHES '(?:a|b){2}+c']",
    ] {
        let ioc = stix::parse_pattern(p, "id", "n", "t").unwrap_or_else(|e| panic!("{p}: {e}"));
        assert!(ioc.terms.is_empty(), "{p}");
        assert_eq!(ioc.unsupported.len(), 1, "{p}");
        assert!(
            ioc.unsupported[0]
                .reason
                .contains("which this scanner's engine does not run"),
            "{p}: {:?}",
            ioc.unsupported[0]
        );
        let mut f = file("abc.bin", 1, "0123456789abcdef0123456789abcdef", 0);
        assert_eq!(check(&ioc, &mut f), Truth::Unknown, "{p}");
    }
    let either = stix::parse_pattern(
        r"[file:name MATCHES '(?<=a)b' OR file:name = 'abc.bin']",
        "i",
        "n",
        "t",
    )
    .unwrap();
    let mut f = file("abc.bin", 1, "0123456789abcdef0123456789abcdef", 0);
    assert_eq!(check(&either, &mut f), Truth::True);
    assert!(stix::parse_pattern("[file:name MATCHES '(a']", "i", "n", "t").is_err());
    // A quantifier right after another that PCRE refuses is a broken expression here
    // too, not a repetition of a repetition that matches every name.
    for p in [
        r"[file:name MATCHES 'a++?']",
        r"[file:name MATCHES 'a*+?']",
        r"[file:name MATCHES 'a**']",
        r"[file:name MATCHES 'x|(b{2}{3})']",
        r"[file:name MATCHES 'a++b**']",
        r"[file:name MATCHES 'a+?+']",
        r"[file:name MATCHES 'a{2,3}?+']",
    ] {
        let e = stix::parse_pattern(p, "id", "n", "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("which PCRE refuses"), "{p}: {e}");
    }
    // A repetition of a group, a lazy quantifier and a plain one are not possessive.
    for p in [
        r"[file:name MATCHES '^(?:ab+)+c\\.bin$']",
        r"[file:name MATCHES '^a+?bc\\.bin$']",
        r"[file:name MATCHES '^ab{1}c\\.bin$']",
    ] {
        let ioc = stix::parse_pattern(p, "id", "n", "t").unwrap_or_else(|e| panic!("{p}: {e}"));
        assert!(ioc.unsupported.is_empty(), "{p}: {:?}", ioc.unsupported);
        let mut f = file("abc.bin", 1, "0123456789abcdef0123456789abcdef", 0);
        assert_eq!(check(&ioc, &mut f), Truth::True, "{p}");
    }

    let ioc = one(
        "matches",
        "FileItem/FileName",
        "string",
        "(?&lt;=a)bc",
        false,
        false,
    );
    assert_eq!(ioc.unsupported.len(), 1);
    assert!(
        ioc.unsupported[0].reason.contains("uses look-around"),
        "{:?}",
        ioc.unsupported[0]
    );
    let x = v11(&format!(
        r#"<Indicator operator="OR" id="r">{}</Indicator>"#,
        item11("matches", "FileItem/FileName", "string", "(a", false, false)
    ));
    assert!(openioc::parse(&x, "t.ioc").is_err());
}

/// A time written with a fraction of a second compares to that fraction: the item's time
/// is cut to as many digits as the operand is written with, in both languages (`.000`
/// is to the millisecond). A whole second still holds all through that second.
#[test]
fn fractions_of_a_second_compare_to_the_operands_precision() {
    // 2020-01-01T00:00:07 and a fraction.
    let at = |nanos: u32| {
        let mut f = file("a.bin", 1, "0123456789abcdef0123456789abcdef", 0);
        f.1.insert(
            Field::FileModified,
            FieldValue::Time(Timestamp {
                secs: 1_577_836_807,
                nanos,
            }),
        );
        f
    };
    // Does the OpenIOC term on the file's modification time hold?
    let holds = |cond: &str, ty: &str, value: &str, nanos: u32| {
        let ioc = one(cond, "FileItem/Modified", ty, value, false, false);
        check(&ioc, &mut at(nanos))
    };
    // Why the OpenIOC `date` operand `value` is refused.
    let refusal = |value: &str| {
        let x = v11(&format!(
            r#"<Indicator operator="OR" id="r">{}</Indicator>"#,
            item11("is", "FileItem/Modified", "date", value, false, false)
        ));
        openioc::parse(&x, "t.ioc").unwrap_err().to_string()
    };
    for (cond, value, nanos, want) in [
        ("less-than", "2020-01-01T00:00:07.5Z", 0, Truth::True),
        (
            "less-than",
            "2020-01-01T00:00:07.5Z",
            499_999_999,
            Truth::True,
        ),
        (
            "less-than",
            "2020-01-01T00:00:07.5Z",
            500_000_000,
            Truth::False,
        ),
        (
            "greater-than",
            "2020-01-01T00:00:07.25Z",
            260_000_000,
            Truth::True,
        ),
        (
            "greater-than",
            "2020-01-01T00:00:07.25Z",
            259_999_999,
            Truth::False,
        ),
        ("is", "2020-01-01T00:00:07.5Z", 530_000_000, Truth::True),
        ("is", "2020-01-01T00:00:07.50Z", 600_000_000, Truth::False),
        ("is", "2020-01-01T00:00:07Z", 999_999_999, Truth::True),
        ("is", "2020-01-01T00:00:07.000Z", 300_000_000, Truth::False),
        ("is", "2020-01-01T00:00:07.000Z", 999_999, Truth::True),
        (
            "greater-than",
            "2020-01-01T00:00:07.000Z",
            1_000_000,
            Truth::True,
        ),
        (
            "greater-than",
            "2020-01-01T00:00:07Z",
            300_000_000,
            Truth::False,
        ),
        (
            "less-than",
            "2020-01-01T00:00:08Z",
            999_999_999,
            Truth::True,
        ),
        (
            "is",
            "2020-01-01T00:00:07.2Z TO 2020-01-01T00:00:07.4Z",
            450_000_000,
            Truth::True,
        ),
        (
            "is",
            "2020-01-01T00:00:07.2Z TO 2020-01-01T00:00:07.4Z",
            500_000_000,
            Truth::False,
        ),
        (
            "is",
            "2020-01-01T00:00:07.2Z TO 2020-01-01T00:00:07.4Z",
            100_000_000,
            Truth::False,
        ),
        // An end stands for all of its unit: up to …07.999 here.
        (
            "is",
            "2020-01-01T00:00:06.5Z TO 2020-01-01T00:00:07Z",
            900_000_000,
            Truth::True,
        ),
        (
            "is",
            "2020-01-01T00:00:07.4Z TO 2020-01-01T00:00:07Z",
            500_000_000,
            Truth::True,
        ),
        // A time to the minute stands for the whole minute.
        ("is", "2020-01-01T00:00Z", 500_000_000, Truth::True),
        ("is", "2020-01-01T00:01Z", 500_000_000, Truth::False),
        (
            "greater-than",
            "2020-01-01T00:00Z",
            500_000_000,
            Truth::False,
        ),
        ("less-than", "2020-01-01T00:01Z", 500_000_000, Truth::True),
        (
            "is",
            "2020-01-01T00:00+00:00 TO 2020-01-01T00:00Z",
            500_000_000,
            Truth::True,
        ),
        ("is", "2020-01-01T01:00+01:00", 500_000_000, Truth::True),
    ] {
        assert_eq!(
            holds(cond, "date", value, nanos),
            want,
            "{cond} {value} at .{nanos:09}"
        );
    }
    // A reversed range is still refused at the end's precision, and so is a fraction
    // finer than a nanosecond.
    for (value, said) in [
        (
            "2020-01-01T00:00:08.1Z TO 2020-01-01T00:00:07Z",
            "ends before it starts",
        ),
        ("2020-01-01T00:00:07.1234567891Z", "at most nine digits"),
    ] {
        let e = refusal(value);
        assert!(e.contains(said), "{value}: {e}");
    }
    // A time written as text on a time field compares at the precision it is written
    // to, a day or a minute included (OpenIOC `string` content).
    for (cond, value, nanos, want) in [
        (
            "greater-than",
            "2020-01-01T00:00Z",
            500_000_000,
            Truth::False,
        ),
        ("is", "2020-01-01T00:00Z", 500_000_000, Truth::True),
        ("is", "2020-01-01", 500_000_000, Truth::True),
        (
            "less-than",
            "2020-01-01T00:00:07.5Z",
            400_000_000,
            Truth::True,
        ),
        (
            "less-than",
            "2020-01-01T00:00:07.5Z",
            600_000_000,
            Truth::False,
        ),
    ] {
        assert_eq!(
            holds(cond, "string", value, nanos),
            want,
            "{cond} '{value}' as text at .{nanos:09}"
        );
    }
    // The hint on a date that does not parse says the right thing.
    for (value, said, not_said) in [
        ("garbage", "is not a valid ISO 8601 date", "nine digits"),
        (
            "2020-01-15T10:30+1\u{e9}1",
            "is not a valid ISO 8601 date",
            "nine digits",
        ),
        (
            "2020-01-01T00:00:07.1234567891Z",
            "finer than a nanosecond",
            "not a valid",
        ),
    ] {
        let e = refusal(value);
        assert!(e.contains(said) && !e.contains(not_said), "{value}: {e}");
    }
    // STIX timestamps are RFC 3339 in UTC, with their seconds, written as t'…' or as
    // text.
    for bad in [
        "'2020-01-01T00:00Z'",
        "'2020-01-01'",
        "'2020-01-01T00:00:07,5Z'",
        "t'2020-01-01T00:00:07,5Z'",
        "t'2020-01-01T24:00:00Z'",
        "t'2020-01-01T00:00Z'",
        "t'2020-01-01T00:00:07.Z'",
        "t'2020-1-01T00:00:07Z'",
    ] {
        let p = format!("[file:mtime = {bad}]");
        let e = stix::parse_pattern(&p, "i", "n", "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not an RFC 3339 timestamp"), "{p}: {e}");
    }
    for (pattern, nanos, want) in [
        ("[file:mtime < t'2020-01-01T00:00:07.5Z']", 0, Truth::True),
        (
            "[file:mtime < t'2020-01-01T00:00:07.5Z']",
            700_000_000,
            Truth::False,
        ),
        (
            "[file:mtime = t'2020-01-01T00:00:07.123Z']",
            123_999_999,
            Truth::True,
        ),
        (
            "[file:mtime = t'2020-01-01T00:00:07.123Z']",
            124_000_000,
            Truth::False,
        ),
        (
            "[file:mtime = t'2020-01-01T00:00:07.000Z']",
            124_000_000,
            Truth::False,
        ),
        (
            "[file:mtime > t'2020-01-01T00:00:07.000Z']",
            500_000_000,
            Truth::True,
        ),
        (
            "[file:mtime <= t'2020-01-01T00:00:07.000Z']",
            500_000_000,
            Truth::False,
        ),
        (
            "[file:mtime >= '2020-01-01T00:00:07.9Z']",
            950_000_000,
            Truth::True,
        ),
    ] {
        let ioc = stix::parse_pattern(pattern, "i", "n", "t").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            check(&ioc, &mut at(nanos)),
            want,
            "{pattern} at .{nanos:09}"
        );
    }
}

/// OpenIOC: an order that does not exist (a name that is no number against an `int`)
/// holds neither way; `isnot` still holds on a value that cannot equal the operand.
#[test]
fn openioc_order_against_what_cannot_be_ordered_holds_neither_way() {
    for (name, cond, negate, want) in [
        ("a.txt", "greater-than", true, Truth::False),
        ("a.txt", "greater-than", false, Truth::False),
        ("a.txt", "less-than", true, Truth::False),
        ("7", "greater-than", true, Truth::False),
        ("3", "greater-than", true, Truth::True),
        ("7", "greater-than", false, Truth::True),
        ("a.txt", "is", true, Truth::True),
        ("5", "is", true, Truth::False),
    ] {
        let ioc = one(cond, "FileItem/FileName", "int", "5", negate, false);
        let mut f = file(name, 1, "0123456789abcdef0123456789abcdef", 0);
        f.1.insert(Field::FileName, FieldValue::Str(name.into()));
        assert_eq!(check(&ioc, &mut f), want, "{name} {cond} negate={negate}");
    }
}

#[test]
fn stix_observations_are_kept_apart_and_joined() {
    use riposte_ioc::join_observations;
    use std::collections::BTreeSet;
    // One observation: nothing to join.
    let one = stix::parse_pattern("[file:name = 'a' AND file:size = 1]", "i", "n", "t").unwrap();
    assert!(one.observations.is_none());
    assert!(one.observation_parts().is_empty());

    let p = "[file:name = 'a.exe'] AND ([file:size = 7] OR [process:name = 'x' AND file:name = 'b']) FOLLOWEDBY [user-account:user_id = '0']";
    let ioc = stix::parse_pattern(p, "indicator--j", "joined", "t").unwrap();
    let parts = ioc.observation_parts();
    assert_eq!(parts.len(), 4, "{parts:#?}");
    let ids: Vec<&str> = parts.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "indicator--j#observation-1",
            "indicator--j#observation-2",
            "indicator--j#observation-3",
            "indicator--j#observation-4"
        ]
    );
    // Each part keeps only its own comparisons, renumbered.
    let fields = |i: &Ioc| {
        let mut f: Vec<Field> = i.fields().collect();
        f.sort();
        f
    };
    assert_eq!(fields(&parts[0]), [Field::FileName]);
    assert_eq!(fields(&parts[1]), [Field::FileSize]);
    assert_eq!(fields(&parts[2]), [Field::FileName, Field::ProcName]);
    assert_eq!(fields(&parts[3]), [Field::UserId]);
    assert_eq!(parts[0].terms[0].raw, "a.exe");
    assert_eq!(
        parts[2]
            .terms
            .iter()
            .map(|t| t.raw.as_str())
            .collect::<BTreeSet<_>>(),
        BTreeSet::from(["x", "b"])
    );
    assert!(parts.iter().all(|p| p.unsupported.is_empty()));
    // FOLLOWEDBY stays unsupported, in the indicator and in its formula.
    assert_eq!(ioc.unsupported.len(), 1);
    assert_eq!(ioc.unsupported[0].search, "FOLLOWEDBY");
    assert_eq!(ioc.unsupported[0].id, "observation operator");
    assert!(
        ioc.unsupported[0].reason.starts_with("needs event history"),
        "{:?}",
        ioc.unsupported[0]
    );
    let formula = &ioc.observations.as_ref().unwrap().formula;
    // Each observation matched by an object of its own, where it matched.
    let truths = |t: [Truth; 4]| {
        t.iter()
            .enumerate()
            .map(|(k, &truth)| riposte_ioc::ObservationOutcome {
                truth,
                objects: if truth == Truth::True {
                    vec![format!("object {k}")]
                } else {
                    Vec::new()
                },
            })
            .collect::<Vec<_>>()
    };
    use Truth::{False as F, True as T, Unknown as U};
    // The observations' joins, with FOLLOWEDBY unknown: never better than unknown.
    assert_eq!(join_observations(formula, &truths([T, T, F, T])).0, U);
    assert_eq!(join_observations(formula, &truths([F, T, T, T])).0, F);
    assert_eq!(join_observations(formula, &truths([T, F, F, T])).0, F);

    let ioc = stix::parse_pattern(
        "[file:name = 'a'] AND ([file:name = 'b'] OR [file:size = 3])",
        "i",
        "n",
        "t",
    )
    .unwrap();
    let formula = &ioc.observations.as_ref().unwrap().formula;
    let (truth, witnesses) = join_observations(formula, &truths([T, T, T, F]));
    assert_eq!(truth, T);
    assert_eq!(
        witnesses,
        BTreeSet::from([0, 1, 2]),
        "every matching observation"
    );
    let (truth, witnesses) = join_observations(formula, &truths([T, F, T, F]));
    assert_eq!(truth, T);
    assert_eq!(
        witnesses,
        BTreeSet::from([0, 2]),
        "not the observation that failed"
    );
    assert_eq!(
        join_observations(formula, &truths([T, U, F, F])),
        (U, BTreeSet::new())
    );
    assert_eq!(join_observations(formula, &truths([F, T, T, F])).0, F);

    // The observations an AND joins are matched by different objects: one file named
    // `a` cannot be both of `[file:name = 'a'] AND [file:name = 'a']`.
    let twice =
        stix::parse_pattern("[file:name = 'a'] AND [file:name = 'a']", "i", "n", "t").unwrap();
    let formula = &twice.observations.as_ref().unwrap().formula;
    let seen = |objects: &[&[&str]]| {
        objects
            .iter()
            .map(|o| riposte_ioc::ObservationOutcome {
                truth: if o.is_empty() { F } else { T },
                objects: o.iter().map(|s| s.to_string()).collect(),
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(join_observations(formula, &seen(&[&["/a"], &["/a"]])).0, F);
    assert_eq!(
        join_observations(formula, &seen(&[&["/a", "/b/a"], &["/a"]])).0,
        T
    );
    // An OR with one alternative that fits: held by it alone.
    let either = stix::parse_pattern(
        "([file:name = 'a'] AND [file:size = 1]) OR [file:name = 'b']",
        "i",
        "n",
        "t",
    )
    .unwrap();
    let formula = &either.observations.as_ref().unwrap().formula;
    let (truth, witnesses) = join_observations(formula, &seen(&[&["/a"], &["/a"], &["/b"]]));
    assert_eq!(truth, T);
    assert_eq!(
        witnesses,
        BTreeSet::from([2]),
        "not the AND one file cannot fill"
    );
}

/// LIKE's wildcards match any character, a newline too: a name or a command line with
/// a newline in it does not escape a LIKE indicator; its other characters stay literal.
#[test]
fn stix_like_wildcards_match_newlines() {
    let mut f = file(
        "nl\nname",
        1,
        "0123456789abcdef0123456789abcdef",
        1_600_000_000,
    );
    let mut m = HashMap::new();
    m.insert(Field::ProcName, FieldValue::Str("sh".into()));
    m.insert(
        Field::ProcArguments,
        FieldValue::Str("x\n--evil-flag".into()),
    );
    let mut process = Fake(ItemType::Process, m);
    let holds = |p: &str, item: &mut Fake| {
        let ioc = stix::parse_pattern(p, "id", "n", "t").unwrap_or_else(|e| panic!("{p}: {e}"));
        check(&ioc, item)
    };
    for (p, want) in [
        ("[file:name LIKE '%name']", Truth::True),
        ("[file:name LIKE 'nl_name']", Truth::True),
        ("[file:name LIKE 'nl%']", Truth::True),
        ("[file:name LIKE 'nl.name']", Truth::False),
        ("[file:name LIKE 'nl_nam']", Truth::False),
    ] {
        assert_eq!(holds(p, &mut f), want, "{p}");
    }
    for (p, want) in [
        ("[process:command_line LIKE '%evil-flag%']", Truth::True),
        ("[process:command_line LIKE 'x_--evil-flag']", Truth::True),
        ("[process:command_line LIKE '%evil.flag%']", Truth::False),
    ] {
        assert_eq!(holds(p, &mut process), want, "{p}");
    }
}

/// FOLLOWEDBY binds loosest (STIX 2.1, STIXPattern.g4): in `[a] OR [b] FOLLOWEDBY [c]`
/// the OR is one side of the FOLLOWEDBY, so `[a]` alone never makes the pattern hold.
#[test]
fn stix_followedby_binds_looser_than_or_and_and() {
    use riposte_ioc::{join_observations, ObservationOutcome};
    use Truth::{False as F, True as T, Unknown as U};
    let outcomes = |truths: &[Truth]| {
        truths
            .iter()
            .enumerate()
            .map(|(k, &truth)| ObservationOutcome {
                truth,
                objects: if truth == T {
                    vec![format!("object {k}")]
                } else {
                    Vec::new()
                },
            })
            .collect::<Vec<_>>()
    };
    let joined = |pattern: &str, truths: &[Truth]| {
        let ioc = stix::parse_pattern(pattern, "i", "n", "t")
            .unwrap_or_else(|e| panic!("{pattern}: {e}"));
        assert_eq!(ioc.unsupported.len(), 1, "{pattern}");
        assert_eq!(ioc.unsupported[0].search, "FOLLOWEDBY", "{pattern}");
        let formula = &ioc.observations.as_ref().expect(pattern).formula;
        join_observations(formula, &outcomes(truths)).0
    };
    // Each side of the FOLLOWEDBY matched: only event history could tell.
    for (pattern, truths) in [
        (
            "[file:name = 'a'] OR [file:name = 'nope'] FOLLOWEDBY [file:name = 'b']",
            [T, F, T],
        ),
        (
            "[file:name = 'a'] FOLLOWEDBY [file:name = 'nope'] OR [file:name = 'b']",
            [T, F, T],
        ),
        (
            "[file:name = 'a'] AND [file:name = 'c'] FOLLOWEDBY [file:name = 'b']",
            [T, T, T],
        ),
        (
            "([file:name = 'a'] OR [file:name = 'nope']) FOLLOWEDBY [file:name = 'b']",
            [T, F, T],
        ),
    ] {
        assert_eq!(joined(pattern, &truths), U, "{pattern}");
    }
    // One side matched by nothing: the FOLLOWEDBY cannot hold, whatever the history.
    assert_eq!(
        joined(
            "[file:name = 'a'] OR [file:name = 'nope'] FOLLOWEDBY [file:name = 'b']",
            &[T, F, F]
        ),
        F
    );
    assert_eq!(
        joined(
            "[file:name = 'a'] FOLLOWEDBY [file:name = 'nope'] OR [file:name = 'b']",
            &[F, F, T]
        ),
        F
    );
    // Parentheses still group a FOLLOWEDBY under an OR, which an alternative then fills.
    assert_eq!(
        joined(
            "[file:name = 'a'] OR ([file:name = 'nope'] FOLLOWEDBY [file:name = 'b'])",
            &[T, F, T]
        ),
        T
    );
    assert_eq!(
        joined(
            "([file:name = 'a'] FOLLOWEDBY [file:name = 'nope']) OR [file:name = 'b']",
            &[F, F, T]
        ),
        T
    );
    // On one object alike: `evil.exe` matches the OR, not the FOLLOWEDBY.
    let mut f = file(
        "evil.exe",
        1234,
        "0123456789abcdef0123456789abcdef",
        1_600_000_000,
    );
    for p in [
        "[file:name = 'evil.exe'] OR [file:name = 'nope'] FOLLOWEDBY [file:size = 1234]",
        "[file:size = 1234] FOLLOWEDBY [file:name = 'nope'] OR [file:name = 'evil.exe']",
    ] {
        let ioc = stix::parse_pattern(p, "id", "n", "t").unwrap();
        assert_eq!(check(&ioc, &mut f), Truth::Unknown, "{p}");
    }
}

#[test]
fn stix_errors_have_offsets() {
    for (p, offset, needle) in [
        ("file:name = 'x'", 0, "expected '['"),
        ("[file:name = 'x'", 16, "expected ']'"),
        ("[file:name ~ 'x']", 11, "comparison operator"),
        ("[file:name = 'x] ", 13, "unterminated string"),
        ("[file name = 'x']", 5, "expected ':'"),
        ("[file:name = 'x'] garbage", 18, "unexpected text"),
        ("[file:mtime = t'yesterday']", 14, "not an RFC 3339"),
        ("[file:name = 'x'] WITHIN 5 MINUTES", 27, "SECONDS"),
    ] {
        match stix::parse_pattern(p, "i", "n", "t") {
            Err(Error::Stix { offset: o, msg, .. }) => {
                assert_eq!(o, offset, "{p}: {msg}");
                assert!(msg.contains(needle), "{p}: {msg}");
            }
            other => panic!("{p}: {other:?}"),
        }
    }
    let e = stix::parse_pattern("[file:name MATCHES 'a(']", "i", "n", "t").unwrap_err();
    assert!(
        e.to_string()
            .ends_with("bad regular expression 'a(': unclosed group"),
        "{e}"
    );
    let e = stix::parse_pattern("[file:name MATCHES 'a{99999}{99999}']", "i", "n", "t")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("bad regular expression 'a{99999}{99999}': ") && !e.contains('\n'),
        "{e}"
    );
    // A literal of the wrong kind for its property is an error, not a comparison that
    // can never hold.
    for (p, needle) in [
        ("[file:size > 'abc']", "'abc' is not a number"),
        (
            "[network-traffic:dst_port IN (443, 'https')]",
            "'https' is not a number",
        ),
        (
            "[file:hashes.MD5 = 'xyz']",
            "'xyz' is not a Md5 hash (32 hex digits)",
        ),
        (
            "[ipv4-addr:value = 'not-an-ip']",
            "not an IP address or a CIDR block",
        ),
        ("[file:mtime > 'last week']", "is not an RFC 3339 timestamp"),
        (
            "[file:ctime > 5]",
            "a number where this property holds a timestamp",
        ),
        (
            "[file:size > t'2020-01-01T00:00:00Z']",
            "a timestamp where this property holds a number",
        ),
        (
            "[file:hashes.MD5 = 5]",
            "a number where this property holds a hash in quotes",
        ),
        (
            "[ipv4-addr:value = 7]",
            "a number where this property holds an address in quotes",
        ),
    ] {
        let e = stix::parse_pattern(p, "i", "n", "t").unwrap_err();
        assert!(e.to_string().contains(needle), "{p}: {e}");
        // The error points at the comparison, found after parsing.
        assert!(matches!(e, Error::Stix { offset: 1, .. }), "{p}: {e:?}");
    }
    let e = stix::parse_pattern(
        "[file:name = 'a'] AND [file:size > 'abc' OR file:name = 'b']",
        "i",
        "n",
        "t",
    )
    .unwrap_err();
    assert!(matches!(e, Error::Stix { offset: 23, .. }), "{e:?}");
    // What such a property can hold is still taken: a date written without t'…', an
    // address block with `=`, and text for the text operators.
    for p in [
        "[file:mtime > '2020-01-01T00:00:00Z']",
        "[ipv4-addr:value = '198.51.100.0/24']",
        "[file:size LIKE '12%']",
        "[file:hashes.MD5 MATCHES '^00']",
    ] {
        stix::parse_pattern(p, "i", "n", "t").unwrap_or_else(|e| panic!("{p}: {e}"));
    }
    let deep = format!("{}[file:name = 'x']{}", "(".repeat(200), ")".repeat(200));
    assert!(stix::parse_pattern(&deep, "i", "n", "t")
        .unwrap_err()
        .to_string()
        .contains("nesting"));
}

#[test]
fn stix_bundle_document() {
    let doc = r#"{"type":"bundle","id":"bundle--1","objects":[
      {"type":"indicator","id":"indicator--a","name":"Evil file","pattern_type":"stix","pattern":"[file:name = 'evil.exe']"},
      {"type":"malware","id":"malware--x"},
      {"type":"indicator","id":"indicator--b","pattern_type":"snort","pattern":"alert tcp any any"}]}"#;
    let iocs = stix::parse_document(doc, "b.json").unwrap();
    assert_eq!(iocs.len(), 2);
    assert_eq!(iocs[0].name, "Evil file");
    assert_eq!(iocs[1].unsupported.len(), 1);
    let bare = stix::parse_document("[file:size = 3]", "p.txt").unwrap();
    assert_eq!(bare.len(), 1);
    let e = stix::parse_document("{\"type\": ", "j.json").unwrap_err();
    assert!(e.to_string().contains("line 1"), "{e}");
}

/// Versions of one indicator (one id) in a bundle: only the most recently modified is
/// evaluated (each of the newest where they are equally new and differ), and none when
/// that version is revoked. Indicators with other ids stay, in
/// document order.
#[test]
fn stix_versions_count_once_and_revoked_indicators_not_at_all() {
    let doc = r#"{"type":"bundle","id":"bundle--1","objects":[
      {"type":"indicator","id":"indicator--a","modified":"2020-01-01T00:00:00.000Z","name":"a v1","pattern_type":"stix","pattern":"[file:name = 'old.exe']"},
      {"type":"indicator","id":"indicator--b","modified":"2020-01-01T00:00:00Z","name":"b","pattern_type":"stix","pattern":"[file:name = 'b.exe']"},
      {"type":"indicator","id":"indicator--a","modified":"2021-06-01T00:00:00.500Z","name":"a v3","pattern_type":"stix","pattern":"[file:name = 'new.exe']"},
      {"type":"indicator","id":"indicator--a","modified":"2021-06-01T00:00:00.100Z","name":"a v2","pattern_type":"stix","pattern":"[file:name = 'mid.exe']"},
      {"type":"indicator","id":"indicator--c","modified":"2020-01-01T00:00:00Z","name":"c v1","pattern_type":"stix","pattern":"[file:name = 'c.exe']"},
      {"type":"indicator","id":"indicator--c","modified":"2022-01-01T00:00:00Z","name":"c v2","revoked":true,"pattern_type":"stix","pattern":"[file:name = 'c.exe']"},
      {"type":"indicator","id":"indicator--d","modified":"2022-01-01T00:00:00.51Z","name":"d v2","pattern_type":"stix","pattern":"[file:name = 'd.exe']"},
      {"type":"indicator","id":"indicator--d","modified":"2022-01-01T00:00:00.5Z","name":"d v1","pattern_type":"stix","pattern":"[file:name = 'd.exe']"},
      {"type":"indicator","id":"indicator--e","name":"e one","pattern_type":"stix","pattern":"[file:name = 'e1.exe']"},
      {"type":"indicator","id":"indicator--e","name":"e other","pattern_type":"stix","pattern":"[file:name = 'e2.exe']"},
      {"type":"indicator","id":"indicator--f","name":"f","pattern_type":"stix","pattern":"[file:name = 'f.exe']"},
      {"type":"indicator","id":"indicator--f","name":"f","pattern_type":"stix","pattern":"[file:name = 'f.exe']"}]}"#;
    let iocs = stix::parse_document(doc, "b.json").unwrap();
    let names: Vec<&str> = iocs.iter().map(|i| i.name.as_str()).collect();
    // Fractions compare as numbers: .51 is after .5. Equally new versions that differ
    // are each evaluated (nothing tells which stands); identical copies once.
    assert_eq!(names, ["b", "a v3", "d v2", "e one", "e other", "f"]);
}

/// An indicator outside its validity (STIX 2.1 `valid_from`, `valid_until`) or revoked
/// is set aside, and said so; malformed bounds, or an end not after the start, are
/// errors that name the indicator.
#[test]
fn stix_indicators_outside_their_validity_are_set_aside_and_said_so() {
    let now = 1_700_000_000; // 2023-11-14T22:13:20Z
    let indicator = |id: &str, extra: &str| {
        format!(
            r#"{{"type":"indicator","id":"indicator--{id}",{extra}"pattern_type":"stix","pattern":"[file:name = '{id}.exe']"}}"#
        )
    };
    let doc = format!(
        r#"{{"type":"bundle","id":"bundle--1","objects":[{},{},{},{},{}]}}"#,
        indicator(
            "current",
            r#""valid_from":"2023-01-01T00:00:00Z","valid_until":"2024-01-01T00:00:00Z","#
        ),
        indicator(
            "expired",
            r#""valid_from":"2020-01-01T00:00:00Z","valid_until":"2023-11-14T22:13:20Z","#
        ),
        indicator("future", r#""valid_from":"2023-11-14T22:13:21.5Z","#),
        indicator("withdrawn", r#""revoked":true,"valid_from":"not checked","#),
        indicator("open", r#""valid_from":"2016-05-12T08:17:27.000Z","#),
    );
    let d = stix::parse_document_noting(&doc, "v.json", now).unwrap();
    let ids: Vec<&str> = d.iocs.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["indicator--current", "indicator--open"]);
    assert_eq!(
        d.set_aside,
        [
            "indicator indicator--expired expired at 2023-11-14T22:13:20Z (valid_until): not evaluated",
            "indicator indicator--future is valid only from 2023-11-14T22:13:21.5Z (valid_from): not evaluated",
            "indicator indicator--withdrawn is revoked by its producer: not evaluated",
        ]
    );

    for (extra, says) in [
        (
            r#""valid_from":"yesterday","#,
            "'valid_from' is not a timestamp",
        ),
        (r#""valid_until":42,"#, "'valid_until' is not a timestamp"),
        (
            r#""valid_from":"2023-02-30T00:00:00Z","#,
            "'valid_from' is not a timestamp",
        ),
        (
            r#""valid_from":"2023-01-02T00:00:00Z","valid_until":"2023-01-01T00:00:00Z","#,
            "'valid_until' is not after 'valid_from'",
        ),
    ] {
        let doc = format!(
            r#"{{"type":"bundle","id":"bundle--1","objects":[{}]}}"#,
            indicator("x", extra)
        );
        let e = stix::parse_document_noting(&doc, "bad.json", now)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("bad.json") && e.contains("indicator--x") && e.contains(says),
            "{e}"
        );
    }
}

/// Validity compares to the nanosecond; `revoked` and `modified` of the wrong kind are
/// errors; indicators without an id keep apart.
#[test]
fn stix_validity_fractions_property_kinds_and_indicators_without_ids() {
    let now = 1_700_000_000;
    let one = |extra: &str| {
        format!(
            r#"[{{"type":"indicator",{extra}"pattern_type":"stix","pattern":"[file:name = 'a.exe']"}}]"#
        )
    };
    // A window of less than a second, to come: valid, set aside as not yet valid.
    let d = stix::parse_document_noting(
        &one(r#""id":"indicator--w","valid_from":"2099-01-01T00:00:00.1Z","valid_until":"2099-01-01T00:00:00.9Z","#),
        "w.json",
        now,
    )
    .unwrap();
    assert!(d.iocs.is_empty() && d.set_aside.len() == 1, "{d:?}");
    for (extra, says) in [
        (
            r#""id":"indicator--r","revoked":"true","#,
            "'revoked' must be true or false",
        ),
        (
            r#""id":"indicator--r","revoked":1,"#,
            "'revoked' must be true or false",
        ),
        (
            r#""id":"indicator--m","modified":"2099-99-01T00:00:00Z","#,
            "'modified' is not a timestamp",
        ),
    ] {
        let e = stix::parse_document_noting(&one(extra), "k.json", now)
            .unwrap_err()
            .to_string();
        assert!(e.contains("k.json") && e.contains(says), "{e}");
    }
    let two = r#"[{"type":"indicator","name":"A","pattern":"[file:name = 'a']"},
                 {"type":"indicator","id":5,"name":"B","pattern":"[file:name = 'b']"}]"#;
    let d = stix::parse_document_noting(two, "n.json", now).unwrap();
    let ids: Vec<&str> = d.iocs.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(
        ids,
        ["(indicator 1 without an id)", "(indicator 2 without an id)"]
    );
    // An error in such an indicator names it in one pair of parentheses, as others.
    for (document, named) in [
        (
            r#"[{"type":"indicator","pattern":"[file:name ~ 'a']"}]"#,
            "q.json (indicator 1 without an id): STIX pattern error",
        ),
        (
            r#"[{"type":"indicator","id":"indicator--x","pattern":"[file:name ~ 'a']"}]"#,
            "q.json (indicator--x): STIX pattern error",
        ),
    ] {
        let e = stix::parse_document_noting(document, "q.json", now)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(named), "{e}");
    }
    assert_eq!(
        riposte_ioc::first_of(&(1..=7).map(|i| i.to_string()).collect::<Vec<_>>(), 5),
        "1; 2; 3; 4; 5; and 2 more"
    );
}

/// Documents read together are one feed: a newer version in an update file (a
/// revocation, a changed pattern) replaces the indicator of the earlier file.
#[test]
fn stix_versions_are_compared_across_documents() {
    let v = |modified: &str, extra: &str, file: &str| {
        format!(
            r#"{{"type":"indicator","id":"indicator--v","modified":"{modified}",{extra}"pattern":"[file:name = '{file}']"}}"#
        )
    };
    let old = format!("[{}]", v("2020-01-01T00:00:00Z", "", "old.exe"));
    let revoked = format!(
        "[{}]",
        v("2021-01-01T00:00:00Z", r#""revoked":true,"#, "old.exe")
    );
    let newer = format!("[{}]", v("2022-01-01T00:00:00Z", "", "new.exe"));
    let docs =
        stix::parse_documents_noting(&[(&old, "old.json"), (&revoked, "update.json")], 0).unwrap();
    assert!(
        docs[0].iocs.is_empty() && docs[1].iocs.is_empty(),
        "{docs:?}"
    );
    assert_eq!(
        docs[1].set_aside,
        ["indicator indicator--v is revoked by its producer: not evaluated"]
    );
    // Order does not matter: the newest version wins wherever it is.
    let docs = stix::parse_documents_noting(
        &[
            (&newer, "new.json"),
            (&old, "old.json"),
            (&revoked, "update.json"),
        ],
        0,
    )
    .unwrap();
    assert_eq!(docs[0].iocs.len(), 1);
    assert!(docs[1].iocs.is_empty() && docs[2].iocs.is_empty() && docs[2].set_aside.is_empty());
    // Read alone, each is its own feed.
    assert_eq!(
        stix::parse_document_noting(&old, "old.json", 0)
            .unwrap()
            .iocs
            .len(),
        1
    );
}

#[test]
fn generated_ioc_roundtrips_and_matches_size_then_hash() {
    let d = Detection {
        id: String::new(),
        name: "Trojan.Test <1>".into(),
        description: "found & removed".into(),
        author: "riposte".into(),
        time: 1_700_000_000,
        objects: vec![
            DetectedObject {
                size: Some(1234),
                md5: Some("0123456789ABCDEF0123456789ABCDEF".into()),
                ..Default::default()
            },
            DetectedObject {
                size: Some(99),
                sha256: Some("a".repeat(64)),
                md5: Some("b".repeat(32)),
                ..Default::default()
            },
        ],
    };
    let xml = ioc_from_detection(&d);
    assert_eq!(xml, ioc_from_detection(&d), "deterministic");
    let ioc = openioc::parse(&xml, "gen").unwrap();
    assert_eq!(ioc.name, "Trojan.Test <1>");
    assert!(ioc.unsupported.is_empty());
    let fields: Vec<Field> = ioc.fields().collect();
    assert_eq!(
        fields,
        [
            Field::FileSize,
            Field::FileMd5,
            Field::FileSize,
            Field::FileSha256
        ]
    );
    assert_eq!(
        check(
            &ioc,
            &mut file("a", 1234, "0123456789abcdef0123456789abcdef", 0)
        ),
        Truth::True
    );
    assert_eq!(
        check(
            &ioc,
            &mut file("a", 1235, "0123456789abcdef0123456789abcdef", 0)
        ),
        Truth::False
    );
}

mod necessity {
    use super::*;
    use riposte_ioc::eval::FileNecessity;
    use std::collections::BTreeSet;

    fn sizes(v: &[u64]) -> Option<BTreeSet<u64>> {
        Some(v.iter().copied().collect())
    }

    #[test]
    fn or_of_hash_and_size_pairs_needs_one_of_the_sizes() {
        let pair = |size: &str, md5: &str| {
            format!(
                r#"<Indicator operator="AND" id="a{size}">{}{}</Indicator>"#,
                item11("is", "FileItem/SizeInBytes", "int", size, false, false),
                item11("is", "FileItem/Md5sum", "md5", md5, false, false)
            )
        };
        let x = v11(&format!(
            r#"<Indicator operator="OR" id="r">{}{}</Indicator>"#,
            pair("10", "0123456789abcdef0123456789abcdef"),
            pair("20", "fedcba9876543210fedcba9876543210")
        ));
        let ioc = openioc::parse(&x, "t").unwrap();
        let n = FileNecessity::of(&ioc);
        assert_eq!(n.sizes, sizes(&[10, 20]));
        assert_eq!(n.names, None);
        assert!(n.admits(20, String::new));
        assert!(!n.admits(21, String::new));
    }

    #[test]
    fn negation_other_conditions_and_other_items_need_nothing() {
        for (cond, negate) in [("is", true), ("greater-than", false)] {
            let ioc = one(cond, "FileItem/SizeInBytes", "int", "10", negate, false);
            assert_eq!(
                FileNecessity::of(&ioc).sizes,
                None,
                "{cond} negate={negate}"
            );
        }
        // OR with a process term: a file of any size may be part of a hit.
        let x = v11(&format!(
            r#"<Indicator operator="OR" id="r">{}{}</Indicator>"#,
            item11("is", "FileItem/SizeInBytes", "int", "10", false, false),
            item11("is", "ProcessItem/name", "string", "evil", false, false)
        ));
        assert_eq!(
            FileNecessity::of(&openioc::parse(&x, "t").unwrap()).sizes,
            None
        );
        // AND of a size and a name: both are needed; names are compared lower-cased.
        let x = v11(&format!(
            r#"<Indicator operator="AND" id="r">{}{}</Indicator>"#,
            item11("is", "FileItem/SizeInBytes", "int", "10", false, false),
            item11("is", "FileItem/FileName", "string", "Evil.EXE", false, true)
        ));
        let n = FileNecessity::of(&openioc::parse(&x, "t").unwrap());
        assert_eq!(n.sizes, sizes(&[10]));
        assert_eq!(n.names, Some(BTreeSet::from(["evil.exe".to_string()])));
        assert!(n.admits(10, || "evil.exe".into()));
        assert!(!n.admits(10, || "good.exe".into()));
    }

    #[test]
    fn hash_terms_need_their_digests() {
        // An OR of hash terms needs one of the digests, lower-cased, whatever the
        // algorithm; a negated hash or an OR with a name term needs none.
        let x = v11(&format!(
            r#"<Indicator operator="OR" id="r">{}{}</Indicator>"#,
            item11(
                "is",
                "FileItem/Md5sum",
                "md5",
                "0123456789ABCDEF0123456789ABCDEF",
                false,
                false
            ),
            item11(
                "is",
                "FileItem/Sha256sum",
                "sha256",
                &"c".repeat(64),
                false,
                false
            )
        ));
        let n = FileNecessity::of(&openioc::parse(&x, "t").unwrap());
        let md5 = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            n.digests,
            Some(BTreeSet::from([md5.to_string(), "c".repeat(64)]))
        );
        assert!(n.admits_digests([md5, "d".repeat(64).as_str()]));
        assert!(!n.admits_digests(["f".repeat(32).as_str(), "d".repeat(64).as_str()]));
        // An AND of digests of two algorithms: a file meets each with its own digest.
        let both = v11(&format!(
            r#"<Indicator operator="AND" id="r">{}{}</Indicator>"#,
            item11("is", "FileItem/Md5sum", "md5", md5, false, false),
            item11(
                "is",
                "FileItem/Sha256sum",
                "sha256",
                &"c".repeat(64),
                false,
                false
            )
        ));
        let n = FileNecessity::of(&openioc::parse(&both, "t").unwrap());
        assert!(n.admits_digests([md5, "c".repeat(64).as_str()]));
        assert!(!n.admits_digests(["f".repeat(32).as_str(), "d".repeat(64).as_str()]));
        // Two MD5s in an AND: no file has both.
        let twice = v11(&format!(
            r#"<Indicator operator="AND" id="r">{}{}</Indicator>"#,
            item11("is", "FileItem/Md5sum", "md5", md5, false, false),
            item11(
                "is",
                "FileItem/Md5sum",
                "md5",
                &"f".repeat(32),
                false,
                false
            )
        ));
        assert_eq!(
            FileNecessity::of(&openioc::parse(&twice, "t").unwrap()).digests,
            Some(BTreeSet::new())
        );
        let ioc = one("is", "FileItem/Md5sum", "md5", md5, true, false);
        assert_eq!(FileNecessity::of(&ioc).digests, None);
        let x = v11(&format!(
            r#"<Indicator operator="OR" id="r">{}{}</Indicator>"#,
            item11("is", "FileItem/Md5sum", "md5", md5, false, false),
            item11("is", "FileItem/FileName", "string", "a.exe", false, false)
        ));
        assert_eq!(
            FileNecessity::of(&openioc::parse(&x, "t").unwrap()).digests,
            None
        );
    }

    #[test]
    fn path_terms_need_one_of_their_tests() {
        use riposte_ioc::eval::TextNeed;
        use riposte_ioc::model::Condition;
        let need = |field, condition, needle: &str| TextNeed {
            field,
            condition,
            needle: needle.into(),
        };
        // OR: one of the children's tests; the operands lower-cased.
        let x = v11(&format!(
            r#"<Indicator operator="OR" id="r">{}{}</Indicator>"#,
            item11(
                "contains",
                "FileItem/FullPath",
                "string",
                "/TMP/Evil/",
                false,
                false
            ),
            item11(
                "is",
                "FileItem/FileName",
                "string",
                "Dropper.EXE",
                false,
                false
            )
        ));
        let n = FileNecessity::of(&openioc::parse(&x, "t").unwrap());
        assert_eq!(
            n.texts,
            Some(BTreeSet::from([
                need(Field::FileFullPath, Condition::Contains, "/tmp/evil/"),
                need(Field::FileName, Condition::Is, "dropper.exe"),
            ]))
        );
        let at = |full: &'static str, name: &'static str| {
            move |f: Field| match f {
                Field::FileFullPath => Some(full),
                Field::FileName => Some(name),
                _ => None,
            }
        };
        assert!(n.admits_texts(at("/tmp/evil/x", "x")));
        assert!(n.admits_texts(at("/home/dropper.exe", "dropper.exe")));
        assert!(!n.admits_texts(at("/home/x", "x")));
        // AND: every child is needed, so one child's tests suffice.
        let x = v11(&format!(
            r#"<Indicator operator="AND" id="r">{}{}</Indicator>"#,
            item11(
                "ends-with",
                "FileItem/FileName",
                "string",
                ".so",
                false,
                false
            ),
            item11(
                "starts-with",
                "FileItem/FullPath",
                "string",
                "/tmp/",
                false,
                false
            )
        ));
        let texts = FileNecessity::of(&openioc::parse(&x, "t").unwrap())
            .texts
            .unwrap();
        assert_eq!(texts.len(), 1);
        // Negated, case-preserving, regular-expression and non-ASCII terms need nothing.
        for (cond, val, negate, pc) in [
            ("contains", "/tmp/", true, false),
            ("contains", "/tmp/", false, true),
            ("matches", "^/tmp/", false, false),
            ("contains", "/tmp/é", false, false),
        ] {
            let ioc = one(cond, "FileItem/FullPath", "string", val, negate, pc);
            assert_eq!(
                FileNecessity::of(&ioc).texts,
                None,
                "{cond} {val} {negate} {pc}"
            );
        }
    }

    #[test]
    fn detection_iocs_need_their_sizes() {
        let d = Detection {
            id: String::new(),
            name: "x".into(),
            description: String::new(),
            author: "t".into(),
            time: 0,
            objects: vec![
                DetectedObject {
                    size: Some(68),
                    md5: None,
                    sha1: None,
                    sha256: Some("a".repeat(64)),
                    name: None,
                },
                DetectedObject {
                    size: Some(4096),
                    md5: Some("b".repeat(32)),
                    sha1: None,
                    sha256: None,
                    name: None,
                },
            ],
        };
        let ioc = openioc::parse(&ioc_from_detection(&d), "d").unwrap();
        assert_eq!(FileNecessity::of(&ioc).sizes, sizes(&[68, 4096]));
    }

    /// Soundness, on random indicator trees: where a file is not admitted, the
    /// indicator evaluates to false on it (never true, never unknown), whatever the
    /// other item types say.
    #[test]
    fn a_file_not_admitted_is_false_on_random_indicators() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let leaves = [
            ("is", "FileItem/SizeInBytes", "int", "10", false, false),
            ("is", "FileItem/SizeInBytes", "int", "20", false, false),
            ("is", "FileItem/SizeInBytes", "int", "10", true, false),
            (
                "is",
                "FileItem/SizeInBytes",
                "int",
                "10 TO 30",
                false,
                false,
            ),
            ("is", "FileItem/FileName", "string", "A.exe", false, false),
            ("is", "FileItem/FileName", "string", "b.exe", false, true),
            ("is", "FileItem/FileName", "string", "b.exe", true, false),
            (
                "contains",
                "FileItem/FileName",
                "string",
                "exe",
                false,
                false,
            ),
            (
                "is",
                "FileItem/Md5sum",
                "md5",
                "0123456789abcdef0123456789abcdef",
                false,
                false,
            ),
            (
                "is",
                "FileItem/Md5sum",
                "md5",
                "FEDCBA9876543210FEDCBA9876543210",
                false,
                false,
            ),
            (
                "is",
                "FileItem/Md5sum",
                "md5",
                "0123456789abcdef0123456789abcdef",
                true,
                false,
            ),
            (
                "is",
                "FileItem/Sha256sum",
                "sha256",
                "00000000000000000000000000000000000000000000000000000000000000aa",
                false,
                false,
            ),
            ("is", "ProcessItem/name", "string", "evil", false, false),
            ("is", "RegistryItem/Path", "string", "HKLM", false, false),
            (
                "contains",
                "FileItem/FullPath",
                "string",
                "/TMP/X/B",
                false,
                false,
            ),
            (
                "starts-with",
                "FileItem/FullPath",
                "string",
                "/tmp/x/c",
                false,
                false,
            ),
            (
                "ends-with",
                "FileItem/FileName",
                "string",
                ".EXE",
                false,
                false,
            ),
            (
                "is",
                "FileItem/FileExtension",
                "string",
                "txt",
                false,
                false,
            ),
            ("contains", "FileItem/FileName", "string", "a", false, true),
            (
                "contains",
                "FileItem/FullPath",
                "string",
                "/tmp/",
                true,
                false,
            ),
            ("matches", "FileItem/FileName", "string", "^b", false, false),
            // The SHA-256 the files below get from their MD5 ("{md5}{md5}"): beside an
            // MD5 term in an AND, a file matches each with a different algorithm.
            (
                "is",
                "FileItem/Sha256sum",
                "sha256",
                "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                false,
                false,
            ),
        ];
        fn tree(
            depth: u32,
            rnd: &mut dyn FnMut(u64) -> u64,
            leaves: &[(&str, &str, &str, &str, bool, bool)],
            id: &mut u32,
        ) -> String {
            *id += 1;
            if depth == 0 || rnd(3) == 0 {
                let (c, s, t, v, n, pc) = leaves[rnd(leaves.len() as u64) as usize];
                return format!(
                    r#"<IndicatorItem id="i{id}" condition="{c}" preserve-case="{pc}" negate="{n}"><Context document="X" search="{s}" type="mir"/><Content type="{t}">{v}</Content></IndicatorItem>"#
                );
            }
            let op = if rnd(2) == 0 { "AND" } else { "OR" };
            let kids: String = (0..1 + rnd(3))
                .map(|_| tree(depth - 1, rnd, leaves, id))
                .collect();
            format!(r#"<Indicator operator="{op}" id="n{id}">{kids}</Indicator>"#)
        }
        let files = [
            ("A.exe", 10, "0123456789abcdef0123456789abcdef"),
            ("a.EXE", 20, "fedcba9876543210fedcba9876543210"),
            ("b.exe", 15, "0123456789abcdef0123456789abcdef"),
            ("b.exe", 10, "11111111111111111111111111111111"),
            ("c.txt", 20, "fedcba9876543210fedcba9876543210"),
            ("c.txt", 99, "22222222222222222222222222222222"),
        ];
        let (mut constrained, mut checked) = (0, 0);
        for _ in 0..600 {
            let mut id = 0;
            let body = tree(3, &mut rnd, &leaves, &mut id);
            let body = if body.starts_with("<IndicatorItem") {
                format!(r#"<Indicator operator="OR" id="root">{body}</Indicator>"#)
            } else {
                body
            };
            let ioc = openioc::parse(&v11(&body), "r").unwrap_or_else(|e| panic!("{e}\n{body}"));
            let n = FileNecessity::of(&ioc);
            if n.sizes.is_some() || n.names.is_some() || n.digests.is_some() || n.texts.is_some() {
                constrained += 1;
            }
            for (name, size, md5) in files {
                // The sweep's SHA-256 of the same file, never one of the leaves'.
                let sha256 = format!("{md5}{md5}");
                // The file's text fields as the sweep hands them over: lower-cased ASCII.
                let full = format!("/tmp/x/{name}").to_ascii_lowercase();
                let lower = name.to_ascii_lowercase();
                let ext = lower.rsplit('.').next().unwrap_or("").to_string();
                let text = |f: Field| match f {
                    Field::FileFullPath => Some(full.as_str()),
                    Field::FileName => Some(lower.as_str()),
                    Field::FileExtension => Some(ext.as_str()),
                    _ => None,
                };
                if n.admits(size as u64, || name.to_lowercase())
                    && n.admits_digests([md5, sha256.as_str()])
                    && n.admits_texts(text)
                {
                    continue;
                }
                checked += 1;
                let mut f = file(name, size, md5, 0);
                f.1.insert(Field::FileSha256, FieldValue::Str(sha256.clone()));
                for other in [Truth::True, Truth::Unknown, Truth::False] {
                    assert_eq!(
                        evaluate(&ioc, &mut f, &|_| other).truth,
                        Truth::False,
                        "{name} {size} not admitted by {n:?}, other={other:?}\n{body}"
                    );
                }
            }
        }
        println!("{constrained} of 600 random indicators constrained, {checked} file checks");
        assert!(
            constrained > 100 && checked > 300,
            "{constrained} {checked}"
        );
    }
}

/// PCRE's everyday spellings that this engine writes otherwise (a brace that starts no
/// quantifier, `\h`, `\Z`, octal, `\Q…\E`, a hyphen after a class escape) are read as
/// PCRE reads them, in both languages: they hit and miss as there, where they were
/// errors that refused the whole document.
#[test]
fn pcre_spellings_are_read_as_pcre_reads_them() {
    let cases: &[(&str, &str, bool)] = &[
        (r"^{[0-9A-F]{8}}\.dll$", "{DEADBEEF}.dll", true),
        (r"^{[0-9A-F]{8}}\.dll$", "DEADBEEF.dll", false),
        (r"^report\h2024\.pdf\Z", "report 2024.pdf", true),
        (r"^report\h2024\.pdf\Z", "report\n2024.pdf", false),
        (r"^a\053b$", "a+b", true),
        (r"^\Qa+b.exe\E$", "a+b.exe", true),
        (r"^\Qa+b.exe\E$", "aab.exe", false),
        (r"^[\w-.]+\.sh$", "run-me.now.sh", true),
        (r"^[\w-.]+\.sh$", "run me.sh", false),
        (r"^x{abc}$", "x{abc}", true),
    ];
    for &(expression, name, hits) in cases {
        let want = if hits { Truth::True } else { Truth::False };
        let mut f = file(name, 1, "0123456789abcdef0123456789abcdef", 0);
        let ioc = one(
            "matches",
            "FileItem/FileName",
            "string",
            expression,
            false,
            true,
        );
        assert!(
            ioc.unsupported.is_empty(),
            "{expression}: {:?}",
            ioc.unsupported
        );
        assert_eq!(
            check(&ioc, &mut f),
            want,
            "OpenIOC {expression} on {name:?}"
        );
        let quoted = expression.replace('\\', r"\\").replace('\'', r"\'");
        let pattern = format!("[file:name MATCHES '{quoted}']");
        let ioc = stix::parse_pattern(&pattern, "id", "n", "t")
            .unwrap_or_else(|e| panic!("{pattern}: {e}"));
        assert!(
            ioc.unsupported.is_empty(),
            "{pattern}: {:?}",
            ioc.unsupported
        );
        assert_eq!(check(&ioc, &mut f), want, "STIX {pattern} on {name:?}");
    }
}

/// An extension written with its dot names the same extension in every text
/// condition, exactly: `ends-with .EXE` is the extension `exe`, `contains .ex` one
/// that starts with `ex` (not `tex`).
#[test]
fn an_extension_written_with_its_dot_is_the_extension() {
    let cases: &[(&str, &str, &str, bool)] = &[
        ("is", ".EXE", "Evil.EXE", true),
        ("ends-with", ".EXE", "Evil.EXE", true),
        ("ends-with", ".exe", "evil.xexe", false),
        ("ends-with", "xe", "evil.exe", true),
        ("contains", ".ex", "evil.exe", true),
        ("contains", ".ex", "paper.tex", false),
        ("contains", "ex", "paper.tex", true),
        ("starts-with", ".ex", "evil.exe", true),
        ("ends-with", ".tar.gz", "a.tar.gz", false),
    ];
    for &(condition, operand, name, hits) in cases {
        let ioc = one(
            condition,
            "FileItem/FileExtension",
            "string",
            operand,
            false,
            false,
        );
        let mut f = file(name, 1, "0123456789abcdef0123456789abcdef", 0);
        let want = if hits { Truth::True } else { Truth::False };
        assert_eq!(check(&ioc, &mut f), want, "{condition} {operand} on {name}");
    }
}

/// A hex digest has no case, whatever content type or preserve-case its term says.
#[test]
fn digests_compare_without_case_whatever_their_content_type() {
    let digest = "6f5902ac237024bdd0c176cb93063dc4";
    for (ty, pc) in [("string", true), ("string", false), ("md5", true)] {
        for (condition, operand) in [
            ("is", digest.to_uppercase()),
            ("starts-with", digest[..8].to_uppercase()),
            ("matches", format!("^{}", &digest[..6].to_uppercase())),
        ] {
            if ty == "md5" && condition != "is" {
                continue;
            }
            let ioc = one(condition, "FileItem/Md5sum", ty, &operand, false, pc);
            let mut f = file("a.bin", 1, digest, 0);
            assert_eq!(
                check(&ioc, &mut f),
                Truth::True,
                "{ty} {pc} {condition} {operand}"
            );
        }
    }
}

/// A document that could only ever be "no match" is refused, with where: one whose
/// indicators were under a misspelt element, in the other version's namespace, or
/// empty. What the schema allows is still read.
#[test]
fn a_document_with_nothing_to_look_for_is_refused() {
    let v10 = |body: &str| {
        format!(
            r#"<ioc xmlns="http://schemas.mandiant.com/2010/ioc" id="x" last-modified="2020-01-01T00:00:00"><short_description>d</short_description><authored_date>2020-01-01T00:00:00</authored_date>{body}</ioc>"#
        )
    };
    let item10 = r#"<IndicatorItem id="t0" condition="is"><Context document="FileItem" search="FileItem/FileName" type="mir"/><Content type="string">alpha.txt</Content></IndicatorItem>"#;
    let item11_in_10 = r#"<IndicatorItem xmlns="http://openioc.org/schemas/OpenIOC_1.1" id="t0" condition="is" preserve-case="false" negate="false"><Context document="FileItem" search="FileItem/FileName" type="mir"/><Content type="string">alpha.txt</Content></IndicatorItem>"#;
    for (doc, said) in [
        (
            v10(&format!(
                r#"<Definition><Indicator operator="OR" id="i">{item10}</Indicator></Definition>"#
            )),
            "unexpected <Definition> in <ioc>",
        ),
        (
            v10(&format!(
                r#"<definition><Indicator operator="OR" id="i">{item11_in_10}</Indicator></definition>"#
            )),
            "namespace of the other OpenIOC version",
        ),
        (
            v10(r#"<definition><Indicator operator="AND" id="i"></Indicator></definition>"#),
            "no <IndicatorItem>",
        ),
        (v10(""), "no <IndicatorItem>"),
        (
            v11(
                r#"<Indicator operator="OR" id="i"><Indicator operator="AND" id="j"/></Indicator>"#,
            ),
            "no <IndicatorItem>",
        ),
    ] {
        let e = openioc::parse(&doc, "x.ioc").unwrap_err().to_string();
        assert!(e.contains(said), "{said}: {e}");
        let position = e
            .strip_prefix("x.ioc:")
            .and_then(|rest| rest.split(':').next());
        assert!(
            position.is_some_and(|line| line.parse::<u32>().is_ok()),
            "a position: {e}"
        );
    }
    // Foreign elements (an extension's) are left alone, and an empty Indicator beside
    // items is allowed, as the schema allows both.
    let ok = v10(&format!(
        r#"<definition xmlns:x="urn:example"><Indicator operator="OR" id="i"><x:note>n</x:note><Indicator operator="AND" id="e"/>{item10}</Indicator></definition>"#
    ));
    assert_eq!(openioc::parse(&ok, "ok.ioc").unwrap().terms.len(), 1);
}
