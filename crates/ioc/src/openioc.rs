//! OpenIOC 1.0 and 1.1 reader.
//!
//! Parsed with `roxmltree` (a conforming, non-validating XML parser that refuses DTDs,
//! so no entity expansion attacks), then checked against the rules of the two XSDs
//! (`openioc_10_schema.xsd`, `openioc_11_schema.xsd`): root element and namespace,
//! required attributes and elements, the operator and condition enumerations, the
//! content types, and operands that parse as their declared type. Real files start
//! with a UTF-8 byte-order mark or have no XML declaration; both are accepted.

use crate::model::{
    Condition, ContentType, Field, Ioc, IocFormat, Node, Operand, Term, UnsupportedTerm,
};
use crate::value::{
    parse_datetime, parse_datetime_operand, parse_datetime_precise, parse_duration, parse_int,
    parse_ip, unwritten_seconds, Timestamp,
};
use crate::Error;
use roxmltree::{Document, Node as XNode, ParsingOptions};

/// Namespace of OpenIOC 1.0 documents.
pub const NS_10: &str = "http://schemas.mandiant.com/2010/ioc";
/// Namespace of OpenIOC 1.1 documents.
pub const NS_11: &str = "http://openioc.org/schemas/OpenIOC_1.1";
/// Largest document accepted (bytes). Real IOCs are kilobytes; this bounds memory.
pub const MAX_DOCUMENT_BYTES: usize = 8 << 20;

struct Ctx<'a> {
    origin: &'a str,
    doc: &'a Document<'a>,
    format: IocFormat,
    terms: Vec<Term>,
    unsupported: Vec<UnsupportedTerm>,
}

impl Ctx<'_> {
    fn err(&self, node: XNode, msg: impl Into<String>) -> Error {
        let pos = self.doc.text_pos_at(node.range().start);
        Error::Invalid {
            origin: self.origin.to_string(),
            line: pos.row,
            col: pos.col,
            msg: msg.into(),
        }
    }

    fn ns(&self) -> &'static str {
        if self.format == IocFormat::OpenIoc10 {
            NS_10
        } else {
            NS_11
        }
    }

    fn is(&self, n: XNode, name: &str) -> bool {
        n.is_element() && n.tag_name().name() == name && n.tag_name().namespace() == Some(self.ns())
    }

    fn child<'b>(&self, n: XNode<'b, 'b>, name: &str) -> Option<XNode<'b, 'b>> {
        n.children().find(|c| self.is(*c, name))
    }

    /// Refuses an element of this version's namespace that the schema does not place
    /// under `parent` (`<Definition>` for `<definition>`: dropped, its indicators would
    /// silently be no indicators), and one of the other OpenIOC version's namespace (a
    /// 1.1 item in a 1.0 document). Elements of other namespaces are extensions, left
    /// alone.
    fn refuse_unexpected(&self, n: XNode, parent: &str, expected: &[&str]) -> Result<(), Error> {
        let other = if self.ns() == NS_10 { NS_11 } else { NS_10 };
        let name = n.tag_name().name();
        match n.tag_name().namespace() {
            Some(ns) if ns == self.ns() && !expected.contains(&name) => Err(self.err(
                n,
                format!(
                    "unexpected <{name}> in <{parent}> (the schema allows <{}> there; names are \
                     case-sensitive)",
                    expected.join(">, <")
                ),
            )),
            Some(ns) if ns == other => Err(self.err(
                n,
                format!(
                    "<{name}> is in the namespace of the other OpenIOC version ('{other}'), in a \
                     document of '{}': a document uses one version's namespace throughout",
                    self.ns()
                ),
            )),
            _ => Ok(()),
        }
    }
}

/// Parses an OpenIOC document given as bytes, in UTF-8 (a byte-order mark is skipped),
/// UTF-16 (with a byte-order mark, or starting `<?`), or what its XML declaration names
/// of ISO-8859-1, windows-1252 and US-ASCII: editors on Windows save these.
pub fn parse_bytes(bytes: &[u8], origin: &str) -> Result<Ioc, Error> {
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(Error::TooLarge {
            origin: origin.to_string(),
            size: bytes.len(),
            limit: MAX_DOCUMENT_BYTES,
        });
    }
    let text = decode_xml(bytes).map_err(|msg| Error::Invalid {
        origin: origin.to_string(),
        line: 0,
        col: 0,
        msg,
    })?;
    parse(&text, origin)
}

/// The text of an XML document's bytes (see [`parse_bytes`] for the encodings).
pub fn decode_xml(bytes: &[u8]) -> Result<std::borrow::Cow<'_, str>, String> {
    use std::borrow::Cow;
    let utf16 = |body: &[u8], little: bool| -> Result<Cow<'_, str>, String> {
        if !body.len().is_multiple_of(2) {
            return Err("UTF-16 text of an odd number of bytes".into());
        }
        let units = body.chunks_exact(2).map(|p| {
            if little {
                u16::from_le_bytes([p[0], p[1]])
            } else {
                u16::from_be_bytes([p[0], p[1]])
            }
        });
        char::decode_utf16(units)
            .collect::<Result<String, _>>()
            .map(Cow::Owned)
            .map_err(|e| format!("not UTF-16 text: {e}"))
    };
    match bytes {
        [0xEF, 0xBB, 0xBF, rest @ ..] => return utf8(rest),
        [0xFF, 0xFE, 0, 0, ..] | [0, 0, 0xFE, 0xFF, ..] => {
            return Err(
                "the document is in UTF-32, which is not read here: convert it to UTF-8 (`iconv -f UTF-32 -t UTF-8`)"
                    .into(),
            )
        }
        [0xFF, 0xFE, rest @ ..] => return utf16(rest, true),
        [0xFE, 0xFF, rest @ ..] => return utf16(rest, false),
        [b'<', 0, b'?', 0, ..] => return utf16(bytes, true),
        [0, b'<', 0, b'?', ..] => return utf16(bytes, false),
        _ => {}
    }
    match declared_encoding(bytes).map(|e| e.to_ascii_lowercase()) {
        None => utf8(bytes),
        Some(e) if e == "utf-8" || e == "utf8" => utf8(bytes),
        // A declaration of UTF-16 on 8-bit text: what `iconv` leaves after converting a
        // UTF-16 file (it does not rewrite the declaration). Such text is UTF-8.
        Some(e) if e.starts_with("utf-16") || e == "ucs-2" => utf8(bytes).map_err(|e| {
            format!("{e}, and the declared UTF-16 would start with a byte-order mark")
        }),
        Some(e) if matches!(e.as_str(), "iso-8859-1" | "iso8859-1" | "latin1" | "l1") => {
            Ok(Cow::Owned(bytes.iter().map(|&b| char::from(b)).collect()))
        }
        Some(e) if matches!(e.as_str(), "windows-1252" | "cp1252") => {
            Ok(Cow::Owned(bytes.iter().map(|&b| windows_1252(b)).collect()))
        }
        Some(e) if matches!(e.as_str(), "us-ascii" | "ascii") => match bytes.iter().position(|b| !b.is_ascii()) {
            None => utf8(bytes),
            Some(at) => Err(format!("a byte that is not US-ASCII at offset {at}, as the declaration says the text is")),
        },
        Some(e) => Err(format!(
            "the document is in {e}, which is not read here: convert it to UTF-8 (`iconv -f {e} -t UTF-8`)"
        )),
    }
}

fn utf8(bytes: &[u8]) -> Result<std::borrow::Cow<'_, str>, String> {
    std::str::from_utf8(bytes)
        .map(std::borrow::Cow::Borrowed)
        .map_err(|e| format!("not UTF-8 text (byte offset {})", e.valid_up_to()))
}

/// The `encoding` of an XML declaration at the start of `bytes`, if there is one.
fn declared_encoding(bytes: &[u8]) -> Option<&str> {
    let head = bytes.strip_prefix(b"<?xml")?;
    let end = head.iter().position(|&b| b == b'>')?;
    let decl = std::str::from_utf8(&head[..end]).ok()?;
    let after = &decl[decl.find("encoding")? + "encoding".len()..];
    let after = after.trim_start().strip_prefix('=')?.trim_start();
    let quote = after.chars().next().filter(|q| *q == '"' || *q == '\'')?;
    let value = &after[1..];
    Some(&value[..value.find(quote)?])
}

/// windows-1252: ISO-8859-1 but for 0x80–0x9F, which hold punctuation (the five bytes
/// it leaves undefined are kept as their C1 controls, as browsers do).
fn windows_1252(b: u8) -> char {
    const HIGH: [char; 32] = [
        '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8d}', 'Ž',
        '\u{8f}', '\u{90}', '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9d}',
        'ž', 'Ÿ',
    ];
    match b {
        0x80..=0x9F => HIGH[usize::from(b - 0x80)],
        _ => char::from(b),
    }
}

/// Parses an OpenIOC 1.0 or 1.1 document; `origin` names it in errors.
pub fn parse(text: &str, origin: &str) -> Result<Ioc, Error> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(Error::TooLarge {
            origin: origin.to_string(),
            size: text.len(),
            limit: MAX_DOCUMENT_BYTES,
        });
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if let Some(at) = too_deep(text) {
        let (line, col) = line_col(text, at);
        return Err(Error::Xml {
            origin: origin.to_string(),
            line,
            col,
            msg: format!("elements nested deeper than {MAX_ELEMENT_DEPTH} levels"),
        });
    }
    let opts = ParsingOptions {
        allow_dtd: false,
        nodes_limit: 1_000_000,
    };
    let doc = Document::parse_with_options(text, opts).map_err(|e| {
        let p = e.pos();
        Error::Xml {
            origin: origin.to_string(),
            line: p.row,
            col: p.col,
            msg: e.to_string(),
        }
    })?;
    let root = doc.root_element();
    let ns = root.tag_name().namespace().unwrap_or("");
    let format = match (root.tag_name().name(), ns) {
        ("ioc", NS_10) => IocFormat::OpenIoc10,
        ("OpenIOC", NS_11) => IocFormat::OpenIoc11,
        (name, ns) => {
            let pos = doc.text_pos_at(root.range().start);
            return Err(Error::Invalid {
                origin: origin.to_string(),
                line: pos.row,
                col: pos.col,
                msg: format!(
                    "root element <{name}> in namespace '{ns}' is not OpenIOC \
                     (expected <ioc xmlns=\"{NS_10}\"> or <OpenIOC xmlns=\"{NS_11}\">)"
                ),
            });
        }
    };
    let mut cx = Ctx {
        origin,
        doc: &doc,
        format,
        terms: Vec::new(),
        unsupported: Vec::new(),
    };
    let id = root.attribute("id").unwrap_or("").to_string();
    check_datetime_attr(&cx, root, "last-modified", true)?;
    let allowed: &[&str] = if format == IocFormat::OpenIoc11 {
        &["metadata", "criteria", "parameters"]
    } else {
        &[
            "short_description",
            "description",
            "keywords",
            "authored_by",
            "authored_date",
            "links",
            "definition",
        ]
    };
    for c in root.children().filter(|c| c.is_element()) {
        cx.refuse_unexpected(c, root.tag_name().name(), allowed)?;
    }
    let (meta, criteria) = if format == IocFormat::OpenIoc11 {
        if id.is_empty() {
            return Err(cx.err(root, "<OpenIOC> requires attribute 'id'"));
        }
        check_datetime_attr(&cx, root, "published-date", true)?;
        let meta = cx
            .child(root, "metadata")
            .ok_or_else(|| cx.err(root, "<OpenIOC> requires a <metadata> element"))?;
        let criteria = cx
            .child(root, "criteria")
            .ok_or_else(|| cx.err(root, "<OpenIOC> requires a <criteria> element"))?;
        (meta, Some(criteria))
    } else {
        (root, cx.child(root, "definition"))
    };
    if cx.child(meta, "authored_date").is_none() {
        return Err(cx.err(meta, "missing required element <authored_date>"));
    }
    let name = cx
        .child(meta, "short_description")
        .map(text_of)
        .unwrap_or_default()
        .trim()
        .to_string();
    let mut roots = Vec::new();
    if let Some(criteria) = criteria {
        for c in criteria.children().filter(|c| c.is_element()) {
            if cx.is(c, "Indicator") {
                roots.push(indicator(&mut cx, c, 0)?);
            } else {
                cx.refuse_unexpected(c, criteria.tag_name().name(), &["Indicator"])?;
            }
        }
        if format == IocFormat::OpenIoc11 && roots.is_empty() {
            return Err(cx.err(criteria, "<criteria> requires at least one <Indicator>"));
        }
    }
    // Valid by the schema, but a document without a single item would be "no match"
    // everywhere, whatever is there: refused, as a STIX document without a pattern is.
    if cx.terms.is_empty() && cx.unsupported.is_empty() {
        return Err(cx.err(
            criteria.unwrap_or(root),
            "the document has no <IndicatorItem>: there is nothing to look for",
        ));
    }
    let root_node = if roots.len() == 1 {
        roots.pop().unwrap_or(Node::Or(Vec::new()))
    } else {
        Node::Or(roots)
    };
    Ok(Ioc::new(
        id,
        name,
        format,
        root_node,
        cx.terms,
        cx.unsupported,
    ))
}

fn check_datetime_attr(cx: &Ctx, n: XNode, attr: &str, required: bool) -> Result<(), Error> {
    match n.attribute(attr) {
        None if required => Err(cx.err(n, format!("missing required attribute '{attr}'"))),
        None => Ok(()),
        Some(v) if parse_datetime(v).is_some() => Ok(()),
        Some(v) => Err(cx.err(n, format!("attribute '{attr}'='{v}' is not an xs:dateTime"))),
    }
}

const MAX_DEPTH: usize = 64;

/// Deepest element nesting accepted. The XML parser descends one call per level: a
/// document of a few kilobytes nested thousands deep would overflow the stack, so the
/// depth is measured before parsing.
const MAX_ELEMENT_DEPTH: usize = 256;

/// The byte offset of the first start tag nested deeper than [`MAX_ELEMENT_DEPTH`], if
/// any. A lexical pass: comments, CDATA sections, processing instructions and
/// declarations are skipped, and a `>` inside a quoted attribute value does not end its
/// tag (a `<` cannot appear there in XML). Text that is not XML is left to the parser.
fn too_deep(text: &str) -> Option<usize> {
    let b = text.as_bytes();
    let find = |from: usize, what: &[u8]| {
        b[from..]
            .windows(what.len())
            .position(|w| w == what)
            .map_or(b.len(), |p| from + p + what.len())
    };
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(p) = b[i..].iter().position(|&c| c == b'<') {
        let start = i + p;
        let rest = &b[start..];
        i = if rest.starts_with(b"<!--") {
            find(start + 4, b"-->")
        } else if rest.starts_with(b"<![CDATA[") {
            find(start + 9, b"]]>")
        } else if rest.starts_with(b"<?") {
            find(start + 2, b"?>")
        } else if rest.starts_with(b"<!") {
            find(start + 2, b">")
        } else if rest.starts_with(b"</") {
            depth = depth.saturating_sub(1);
            find(start + 2, b">")
        } else {
            // A start tag: to its `>`, outside quoted attribute values.
            let mut quote = None;
            let mut j = start + 1;
            while j < b.len() {
                match (quote, b[j]) {
                    (None, q @ (b'"' | b'\'')) => quote = Some(q),
                    (Some(q), c) if c == q => quote = None,
                    (None, b'>') => break,
                    _ => {}
                }
                j += 1;
            }
            if j >= b.len() || b[j - 1] != b'/' {
                depth += 1;
                if depth > MAX_ELEMENT_DEPTH {
                    return Some(start);
                }
            }
            j + 1
        };
        if i >= b.len() {
            break;
        }
    }
    None
}

/// The 1-based line and column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (u32, u32) {
    let before = &text[..offset];
    let line = before.bytes().filter(|&c| c == b'\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (
        u32::try_from(line).unwrap_or(u32::MAX),
        u32::try_from(col).unwrap_or(u32::MAX),
    )
}

fn indicator(cx: &mut Ctx, n: XNode, depth: usize) -> Result<Node, Error> {
    if depth > MAX_DEPTH {
        return Err(cx.err(n, format!("Indicator nesting deeper than {MAX_DEPTH}")));
    }
    let op = n
        .attribute("operator")
        .ok_or_else(|| cx.err(n, "<Indicator> requires attribute 'operator'"))?;
    let is_and = match op {
        "AND" => true,
        "OR" => false,
        other => return Err(cx.err(n, format!("operator '{other}' is not one of AND, OR"))),
    };
    if cx.format == IocFormat::OpenIoc11 && n.attribute("id").is_none() {
        return Err(cx.err(n, "<Indicator> requires attribute 'id'"));
    }
    let mut children = Vec::new();
    for c in n.children().filter(|c| c.is_element()) {
        if cx.is(c, "Indicator") {
            children.push(indicator(cx, c, depth + 1)?);
        } else if cx.is(c, "IndicatorItem") {
            children.push(item(cx, c)?);
        } else {
            cx.refuse_unexpected(c, "Indicator", &["Indicator", "IndicatorItem"])?;
        }
    }
    Ok(if is_and {
        Node::And(children)
    } else {
        Node::Or(children)
    })
}

fn bool_attr(cx: &Ctx, n: XNode, attr: &str) -> Result<bool, Error> {
    match n.attribute(attr) {
        None if cx.format == IocFormat::OpenIoc11 => {
            Err(cx.err(n, format!("<IndicatorItem> requires attribute '{attr}'")))
        }
        None => Ok(false),
        Some("true" | "1") => Ok(true),
        Some("false" | "0") => Ok(false),
        Some(v) => Err(cx.err(n, format!("attribute '{attr}'='{v}' is not an xs:boolean"))),
    }
}

fn item(cx: &mut Ctx, n: XNode) -> Result<Node, Error> {
    let id = match n.attribute("id") {
        Some(id) => id.to_string(),
        None if cx.format == IocFormat::OpenIoc11 => {
            return Err(cx.err(n, "<IndicatorItem> requires attribute 'id'"))
        }
        None => String::new(),
    };
    let cond_s = n
        .attribute("condition")
        .ok_or_else(|| cx.err(n, "<IndicatorItem> requires attribute 'condition'"))?;
    let mut negate = bool_attr(cx, n, "negate")?;
    let preserve_case = bool_attr(cx, n, "preserve-case")?;
    let v10 = cx.format == IocFormat::OpenIoc10;
    let condition = match cond_s {
        "is" => Condition::Is,
        "contains" => Condition::Contains,
        "isnot" if v10 => {
            negate = !negate;
            Condition::Is
        }
        "containsnot" if v10 => {
            negate = !negate;
            Condition::Contains
        }
        "matches" => Condition::Matches,
        "starts-with" => Condition::StartsWith,
        "ends-with" => Condition::EndsWith,
        "greater-than" => Condition::GreaterThan,
        "less-than" => Condition::LessThan,
        other => {
            let allowed = if v10 {
                "is, isnot, contains, containsnot (and the 1.1 conditions)"
            } else {
                "is, contains, matches, starts-with, ends-with, greater-than, less-than"
            };
            return Err(cx.err(
                n,
                format!("unknown condition '{other}' (allowed: {allowed})"),
            ));
        }
    };
    let context = cx
        .child(n, "Context")
        .ok_or_else(|| cx.err(n, "<IndicatorItem> requires a <Context>"))?;
    let content = cx
        .child(n, "Content")
        .ok_or_else(|| cx.err(n, "<IndicatorItem> requires a <Content>"))?;
    let search = context.attribute("search").unwrap_or("").to_string();
    let document = context.attribute("document").unwrap_or("");
    let ctype_s = content
        .attribute("type")
        .ok_or_else(|| cx.err(content, "<Content> requires attribute 'type'"))?;
    let content_type = match ctype_s.to_ascii_lowercase().as_str() {
        "string" => ContentType::String,
        "int" => ContentType::Int,
        "date" => ContentType::Date,
        "duration" => ContentType::Duration,
        "md5" => ContentType::Md5,
        "sha1" => ContentType::Sha1,
        "sha256" => ContentType::Sha256,
        "ip" => ContentType::Ip,
        other => {
            return Err(cx.err(
                content,
                format!(
                    "unknown content type '{other}' (allowed: string, int, date, duration, md5, sha1, sha256, IP)"
                ),
            ))
        }
    };
    let raw = text_of(content);
    let operand = parse_operand(content_type, condition, &raw).map_err(|m| cx.err(content, m))?;
    let Some(field) = Field::from_search(&search) else {
        let event = context.attribute("type") == Some("event")
            || document.ends_with("Event")
            || search
                .split('/')
                .any(|s| s.ends_with("Event") || s == "eventItem");
        let reason = if event {
            format!("event context '{document}' needs event history; a point-in-time scan cannot evaluate it")
        } else {
            format!("no Linux collector for '{search}'")
        };
        cx.unsupported.push(UnsupportedTerm { id, search, reason });
        return Ok(Node::Unsupported(cx.unsupported.len() - 1));
    };
    // Listed rather than refused: the rest of a vendor's document still counts, and
    // `--strict` makes it an error as it does any term that cannot be evaluated.
    let beyond_this_engine = (condition == Condition::Matches)
        .then(|| crate::value::regex_beyond_this_engine(&raw))
        .flatten();
    if let Some(reason) =
        beyond_this_engine.or_else(|| field.uncomparable_with(content_type, condition))
    {
        cx.unsupported.push(UnsupportedTerm { id, search, reason });
        return Ok(Node::Unsupported(cx.unsupported.len() - 1));
    }
    let term = build_term(
        id,
        field,
        condition,
        negate,
        preserve_case,
        content_type,
        raw,
        operand,
    )
    .map_err(|m| cx.err(content, m))?;
    cx.terms.push(term);
    Ok(Node::Term(cx.terms.len() - 1))
}

/// Assembles a term, compiling its regex; errors are messages for the caller to locate.
#[allow(clippy::too_many_arguments)]
pub(crate) fn build_term(
    id: String,
    field: Field,
    condition: Condition,
    negate: bool,
    preserve_case: bool,
    content_type: ContentType,
    raw: String,
    mut operand: Operand,
) -> Result<Term, String> {
    // Hex digests have no case: `6F59…` and `6f59…` are one digest, whatever the content
    // type says (an MD5 written as a `string` with preserve-case).
    let preserve_case =
        preserve_case && !matches!(field, Field::FileMd5 | Field::FileSha1 | Field::FileSha256);
    if field == Field::FileExtension {
        if let Operand::Str(s) = &mut operand {
            // Held without its dot (`exe`): an operand written with one names the same
            // extension (see `Term::test_one` for `ends-with` and `contains`).
            if matches!(
                condition,
                Condition::Is | Condition::StartsWith | Condition::EndsWith | Condition::Contains
            ) {
                if let Some(stripped) = s.strip_prefix('.') {
                    *s = stripped.to_string();
                }
            }
        }
    }
    let regex = if condition == Condition::Matches {
        if let Some(why) = crate::value::regex_refused_by_pcre(&raw) {
            return Err(format!("bad regular expression '{raw}': {why}"));
        }
        Some(
            regex::RegexBuilder::new(&crate::pcre::to_rust(&raw))
                .case_insensitive(!preserve_case)
                .size_limit(1 << 22)
                .build()
                .map_err(|e| format!("bad regular expression '{raw}': {}", regex_error_text(&e)))?,
        )
    } else {
        None
    };
    Ok(Term {
        id,
        field,
        condition,
        negate,
        preserve_case,
        content_type,
        raw,
        operand,
        regex,
        undefined_never_holds: false,
    })
}

/// What the regex crate says is wrong, on one line. Its syntax errors span several
/// lines (the pattern, a caret under the place, then `error: unclosed group`), which
/// reports escape into one unreadable line; the last says what is wrong, and the
/// caller names the pattern.
fn regex_error_text(e: &regex::Error) -> String {
    match e {
        regex::Error::Syntax(text) => text
            .lines()
            .map(str::trim)
            .rfind(|line| !line.is_empty())
            .map(|line| line.strip_prefix("error:").unwrap_or(line).trim())
            .unwrap_or(text)
            .to_string(),
        other => other.to_string().replace('\n', "; "),
    }
}

/// Parses an operand of a declared type; `A TO B` gives an inclusive range.
/// Text conditions (contains, starts-with, ends-with, matches) keep the operand as text
/// whatever its declared type, since `103.41.124.` is a valid prefix but not an address.
/// The text of an element: all of its text, a comment or processing instruction inside
/// it left out rather than cutting it short (`a<!-- c -->.txt` is `a.txt`).
fn text_of(node: roxmltree::Node) -> String {
    node.children()
        .filter(|n| n.is_text())
        .filter_map(|n| n.text())
        .collect()
}

/// What a date operand `t` that does not parse is told.
fn not_a_date(t: &str) -> String {
    if parse_datetime_precise(t).is_some() {
        format!("'{t}' is finer than a nanosecond: a fraction of a second has at most nine digits")
    } else {
        format!("'{t}' is not a valid ISO 8601 date")
    }
}

pub(crate) fn parse_operand(
    ty: ContentType,
    condition: Condition,
    raw: &str,
) -> Result<Operand, String> {
    if matches!(
        condition,
        Condition::Contains | Condition::StartsWith | Condition::EndsWith | Condition::Matches
    ) {
        return Ok(Operand::Str(raw.to_string()));
    }
    if ty != ContentType::String {
        if let Some((a, b)) = raw.split_once(" TO ") {
            let range = raw.trim();
            if b.contains(" TO ") {
                return Err(format!("'{range}' is not a range: a range is 'A TO B'"));
            }
            if condition != Condition::Is {
                return Err(format!(
                    "the range '{range}' goes with the condition 'is' (a value in it), \
                     not '{}'",
                    if condition == Condition::GreaterThan {
                        "greater-than"
                    } else {
                        "less-than"
                    }
                ));
            }
            if matches!(
                ty,
                ContentType::Md5 | ContentType::Sha1 | ContentType::Sha256
            ) {
                return Err(format!("'{range}': digests have no order, so no range"));
            }
            let (a, b) = if ty == ContentType::Date {
                // A day alone as an end is the whole of it: `2020-01-01 TO 2020-01-31`
                // takes in the 31st.
                let (a, b) = (a.trim(), b.trim());
                let point = |t: &str| parse_datetime_operand(t).ok_or_else(|| not_a_date(t));
                let (start, start_digits) = point(a)?;
                let (mut end, end_digits) = point(b)?;
                // A day or a minute as an end takes in all of it.
                end.secs += unwritten_seconds(b);
                (
                    Operand::Date(start, start_digits),
                    Operand::Date(end, end_digits),
                )
            } else {
                (
                    parse_operand(ty, condition, a)?,
                    parse_operand(ty, condition, b)?,
                )
            };
            // Addresses of one family: an IPv4 address is the IPv4-mapped IPv6 one.
            let v4 = |ip: &std::net::IpAddr| match ip {
                std::net::IpAddr::V4(v4) => Some(*v4),
                std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped(),
            };
            let reversed = match (&a, &b) {
                (Operand::Int(a), Operand::Int(b)) => a > b,
                // An end stands for all of its last unit (`…00Z` up to `…00.999…`).
                (Operand::Date(a, _), Operand::Date(b, digits)) => a.truncated(*digits) > *b,
                (Operand::Duration(a), Operand::Duration(b)) => a > b,
                (Operand::Ip(a), Operand::Ip(b)) => match (v4(a), v4(b)) {
                    (Some(a), Some(b)) => a > b,
                    (None, None) => a > b,
                    _ => {
                        return Err(format!(
                            "the range '{range}' mixes an IPv4 and an IPv6 address"
                        ))
                    }
                },
                _ => false,
            };
            if reversed {
                return Err(format!(
                    "the range '{}' ends before it starts: nothing is in it",
                    raw.trim()
                ));
            }
            return Ok(Operand::Range(Box::new(a), Box::new(b)));
        }
    }
    let t = raw.trim();
    let bad = |what: &str| format!("'{t}' is not a valid {what}");
    Ok(match ty {
        ContentType::String => Operand::Str(raw.to_string()),
        ContentType::Int => Operand::Int(parse_int(t).ok_or_else(|| bad("int"))?),
        ContentType::Date => {
            let (at, digits) = parse_datetime_operand(t).ok_or_else(|| not_a_date(t))?;
            let unwritten = unwritten_seconds(t);
            let last_second = Timestamp::from_secs(at.secs + unwritten);
            // A day alone (`2020-01-15`) stands for the whole day, not its first second,
            // and a time to the minute for the whole minute: `is` holds at any time of
            // it, `greater-than` after it, `less-than` before.
            match condition {
                Condition::Is if unwritten > 0 => Operand::Range(
                    Box::new(Operand::Date(at, 0)),
                    Box::new(Operand::Date(last_second, 0)),
                ),
                Condition::GreaterThan if unwritten > 0 => Operand::Date(last_second, 0),
                _ => Operand::Date(at, digits),
            }
        }
        ContentType::Duration => {
            Operand::Duration(parse_duration(t).ok_or_else(|| bad("duration"))?)
        }
        ContentType::Ip => Operand::Ip(parse_ip(t).ok_or_else(|| bad("IP address"))?),
        ContentType::Md5 | ContentType::Sha1 | ContentType::Sha256 => {
            let len = match ty {
                ContentType::Md5 => 32,
                ContentType::Sha1 => 40,
                _ => 64,
            };
            if t.len() != len || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "'{t}' is not a valid {ty:?} hash ({len} hex digits)"
                ));
            }
            Operand::Hash(t.to_ascii_lowercase())
        }
    })
}
