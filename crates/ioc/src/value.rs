//! Parsing of typed literal values shared by the OpenIOC and STIX front ends.
//!
//! Both languages write dates, durations, numbers and IP addresses as text; the
//! evaluator compares them as numbers, so the conversion lives in one place.

use std::net::IpAddr;

/// Seconds since the Unix epoch for a civil date (proleptic Gregorian, UTC).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days in month `m` (1–12) of year `y`, proleptic Gregorian.
fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Civil date (y, m, d) for a day count since the epoch.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn num(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A point in time: Unix seconds, and the nanoseconds past them (a time before 1970 is
/// the second before it plus a positive fraction, so that the pair orders as the time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp {
    /// Whole seconds since the Unix epoch.
    pub secs: i64,
    /// Nanoseconds past `secs`, below 1,000,000,000.
    pub nanos: u32,
}

impl Timestamp {
    /// A whole second.
    pub const fn from_secs(secs: i64) -> Self {
        Timestamp { secs, nanos: 0 }
    }

    /// This time with its fraction of a second cut to `digits` decimal digits (0 to 9):
    /// how an item's time is compared with an operand written to that precision.
    pub fn truncated(self, digits: u8) -> Self {
        let unit = 10u32.pow(9 - u32::from(digits.min(9)));
        Timestamp {
            secs: self.secs,
            nanos: self.nanos - self.nanos % unit,
        }
    }
}

/// Reports carry a time as whole Unix seconds, as they did before fractions counted.
impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(self.secs)
    }
}

/// Parses an ISO 8601 date or date-time (`2014-09-03`, `2014-09-03T19:35:19`,
/// `2014-09-03T19:35:19.123Z`, `…+02:00`) into Unix seconds, the fraction dropped. A
/// missing zone means UTC.
pub fn parse_datetime(s: &str) -> Option<i64> {
    parse_datetime_precise(s).map(|(t, _)| t.secs)
}

/// [`parse_datetime`], keeping the fraction of a second: the time, and the number of
/// decimal digits of a second it is written to (`07.50` two, `07` none), at most nine:
/// digits past the nanosecond are cut.
pub fn parse_datetime_precise(s: &str) -> Option<(Timestamp, u8)> {
    parse_time(s).map(|(t, digits, _)| (t, digits))
}

/// [`parse_datetime_precise`] for an operand an item's time is compared with: a fraction
/// finer than a nanosecond, which no file system records, is refused rather than cut
/// (cut, `less-than …07.1234567891` would miss a file at …07.123456789).
pub fn parse_datetime_operand(s: &str) -> Option<(Timestamp, u8)> {
    match parse_time(s)? {
        (_, _, true) => None,
        (t, digits, false) => Some((t, digits)),
    }
}

/// The time `s` stands for, the decimal digits of a second it is written to (at most
/// nine), and whether it is written finer than a nanosecond (a digit past the ninth that
/// is not 0).
fn parse_time(s: &str) -> Option<(Timestamp, u8, bool)> {
    let s = s.trim();
    let (date, time) = match s.find(['T', 't', ' ']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let mut parts = date.split('-');
    let y = num(parts.next()?)?;
    // Four-digit years, as ISO 8601 writes them without agreement: beyond, the seconds
    // would overflow.
    if y > 9999 {
        return None;
    }
    let m = num(parts.next()?)?;
    let d = num(parts.next()?)?;
    if parts.next().is_some() || !(1..=12).contains(&m) || !(1..=days_in_month(y, m)).contains(&d) {
        return None;
    }
    let mut secs = days_from_civil(y, m, d) * 86_400;
    if let Some(t) = time {
        let (clock, offset) = if let Some(stripped) = t.strip_suffix(['Z', 'z']) {
            (stripped, 0)
        } else if let Some(i) = t.rfind(['+', '-']) {
            let (c, o) = t.split_at(i);
            let sign = if o.starts_with('-') { -1 } else { 1 };
            let o = &o[1..];
            let (oh, om) = match o.split_once(':') {
                Some((h, m)) => (num(h)?, num(m)?),
                None if o.len() == 4 && o.is_ascii() => (num(&o[..2])?, num(&o[2..])?),
                None => (num(o)?, 0),
            };
            if oh > 23 || om > 59 {
                return None;
            }
            (c, sign * (oh * 3600 + om * 60))
        } else {
            (t, 0)
        };
        let mut cp = clock.split(':');
        let h = num(cp.next()?)?;
        let mi = num(cp.next()?)?;
        // Fractions of a second must be digits.
        let (sec, fraction) = match cp.next() {
            Some(sp) => match sp.split_once(['.', ',']) {
                Some((whole, fraction)) => {
                    if fraction.is_empty() || !fraction.bytes().all(|b| b.is_ascii_digit()) {
                        return None;
                    }
                    (num(whole)?, fraction)
                }
                None => (num(sp)?, ""),
            },
            None => (0, ""),
        };
        let finer_than_nanoseconds = fraction.bytes().skip(9).any(|b| b != b'0');
        let end_of_day = h == 24 && mi == 0 && sec == 0 && fraction.bytes().all(|b| b == b'0');
        if cp.next().is_some() || (h > 23 && !end_of_day) || mi > 59 || sec > 60 {
            return None;
        }
        secs += h * 3600 + mi * 60 + sec - offset;
        let digits = fraction.len().min(9);
        let nanos = fraction[..digits]
            .bytes()
            .chain(std::iter::repeat(b'0'))
            .take(9)
            .fold(0u32, |n, b| n * 10 + u32::from(b - b'0'));
        return Some((
            Timestamp { secs, nanos },
            digits as u8,
            finer_than_nanoseconds,
        ));
    }
    Some((Timestamp::from_secs(secs), 0, false))
}

/// Formats Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_datetime(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The last second of a day, counted from its first.
const DAY_LAST_SECOND: i64 = 86_399;

/// How many seconds past its first one a time written without its seconds stands for:
/// a day alone (`2020-01-15`) the whole day, a time to the minute (`2020-01-15T10:30Z`)
/// the whole minute; 0 for a time given to the second or finer.
pub fn unwritten_seconds(t: &str) -> i64 {
    let t = t.trim();
    let Some(i) = t.find(['T', 't', ' ']) else {
        return DAY_LAST_SECOND;
    };
    let clock = t[i + 1..].trim_end_matches(['Z', 'z']);
    let clock = clock.rfind(['+', '-']).map_or(clock, |zone| &clock[..zone]);
    if clock.matches(':').count() == 1 {
        59
    } else {
        0
    }
}

/// Orders an item's time `v` against a time written as `s`, at the precision `s` is
/// written to: `Equal` anywhere within a day alone, a minute, a second or a fraction of
/// one as written. `None` when `s` is not a time.
pub fn cmp_time_text(v: Timestamp, s: &str) -> Option<std::cmp::Ordering> {
    use std::cmp::Ordering;
    let (start, digits) = parse_datetime_precise(s)?;
    let unwritten = unwritten_seconds(s);
    if unwritten == 0 {
        return Some(v.truncated(digits).cmp(&start));
    }
    Some(if v.secs < start.secs {
        Ordering::Less
    } else if v.secs > start.secs + unwritten {
        Ordering::Greater
    } else {
        Ordering::Equal
    })
}

/// [`format_datetime`] with `digits` decimal digits of a second (none when 0).
pub fn format_timestamp(t: Timestamp, digits: u8) -> String {
    let whole = format_datetime(t.secs);
    if digits == 0 {
        return whole;
    }
    let fraction = format!("{:09}", t.nanos);
    format!(
        "{}.{}Z",
        whole.trim_end_matches('Z'),
        &fraction[..usize::from(digits.min(9))]
    )
}

/// Parses a duration: ISO 8601 (`P1DT2H3M4.5S`, `PT30S`), `HH:MM:SS`, or plain seconds.
pub fn parse_duration(s: &str) -> Option<f64> {
    let s = s.trim();
    if let Ok(v) = s.parse::<f64>() {
        return v.is_finite().then_some(v);
    }
    if let Some(rest) = s.strip_prefix(['P', 'p']) {
        let mut total = 0.0;
        let mut in_time = false;
        let mut acc = String::new();
        let mut any = false;
        for c in rest.chars() {
            match c {
                'T' | 't' => in_time = true,
                '0'..='9' | '.' => acc.push(c),
                _ => {
                    let v: f64 = acc.parse().ok()?;
                    acc.clear();
                    let mult = match (c.to_ascii_uppercase(), in_time) {
                        ('W', false) => 604_800.0,
                        ('D', false) => 86_400.0,
                        ('H', true) => 3600.0,
                        ('M', true) => 60.0,
                        ('S', true) => 1.0,
                        _ => return None,
                    };
                    total += v * mult;
                    any = true;
                }
            }
        }
        return (any && acc.is_empty()).then_some(total);
    }
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() == 3 {
        let h: f64 = parts[0].parse().ok()?;
        let m: f64 = parts[1].parse().ok()?;
        let sec: f64 = parts[2].parse().ok()?;
        return Some(h * 3600.0 + m * 60.0 + sec);
    }
    None
}

/// Parses an IPv4 or IPv6 address (brackets around IPv6 are tolerated).
pub fn parse_ip(s: &str) -> Option<IpAddr> {
    let s = s.trim().trim_start_matches('[').trim_end_matches(']');
    s.parse().ok()
}

/// Maps an address to one ordered number (IPv4 is mapped into IPv6) for range tests.
pub fn ip_key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// Parses a decimal integer, also accepting `0x` hexadecimal.
pub fn parse_int(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        return i64::from_str_radix(h, 16).ok();
    }
    s.parse().ok()
}

/// Why the regular expression `pattern`, valid in PCRE (STIX's `MATCHES`, the engines
/// most OpenIOC editors test with), cannot run here: look-around and back-references,
/// which an engine that matches in linear time does not have, and PCRE's other syntax
/// (atomic groups, named back-references, recursion…). `None` for any other expression,
/// valid or not (a broken one is an error of the document). PCRE spellings this engine
/// writes otherwise are rewritten first ([`crate::pcre::to_rust`]).
pub fn regex_beyond_this_engine(pattern: &str) -> Option<String> {
    const PCRE_ONLY: &[(&str, &str)] = &[
        ("\\k<", "a named back-reference"),
        ("\\k{", "a named back-reference"),
        ("\\k'", "a named back-reference"),
        ("(?P=", "a named back-reference"),
        ("\\g", "a back-reference"),
        ("(?>", "an atomic group"),
        ("\\G", "the \\G anchor (other than first)"),
        ("(?|", "a branch-reset group"),
        ("(?R)", "recursion"),
        ("(?&", "recursion"),
        ("(?P>", "recursion"),
        ("(?(", "a conditional group"),
        ("(*", "a backtracking control verb"),
        ("(?C", "a callout"),
        ("\\X", "an extended grapheme cluster (\\X)"),
        ("\\C", "a single code unit (\\C)"),
    ];
    use regex_syntax::ast::ErrorKind;
    let written = pattern;
    let pattern = &*crate::pcre::to_rust(written);
    let e = match regex_syntax::ast::parse::Parser::new().parse(pattern) {
        // `a++` parses here too, as `(a+)+`: run, it would match what PCRE's possessive
        // quantifier refuses (`a++a` never matches in PCRE).
        Ok(ast) => {
            return (nested_quantifier(&ast) == Some(Nesting::Possessive)).then(|| {
                format!(
                    "the regular expression '{written}' uses a possessive quantifier ('++', \
                     '*+', '?+' or '{{n}}+'), which this scanner's engine does not run (it \
                     would read it as a greedy one, and match what PCRE does not)"
                )
            })
        }
        Err(e) => e,
    };
    let what = match e.kind() {
        ErrorKind::UnsupportedLookAround => "look-around (look-ahead or look-behind)",
        ErrorKind::UnsupportedBackreference => "a back-reference",
        // Other PCRE syntax this engine's parser does not know, so reads as broken:
        // told apart by its spelling.
        _ => PCRE_ONLY
            .iter()
            .find(|(spelling, _)| pattern.contains(spelling))
            .map(|(_, what)| *what)?,
    };
    Some(format!(
        "the regular expression '{written}' uses {what}, which this scanner's engine does not \
         run (it matches in linear time, so that no expression can stall a sweep)"
    ))
}

/// Why PCRE refuses `pattern`, which this engine would run: a quantifier right after
/// another (`a**`, `a++?`, `a{2}{3}`), which its parser reads as a repetition of a
/// repetition. `None` otherwise (the possessive form is [`regex_beyond_this_engine`]'s).
pub fn regex_refused_by_pcre(pattern: &str) -> Option<&'static str> {
    let ast = regex_syntax::ast::parse::Parser::new()
        .parse(&crate::pcre::to_rust(pattern))
        .ok()?;
    (nested_quantifier(&ast) == Some(Nesting::Refused)).then_some(
        "a quantifier right after another ('a**', 'a++?', 'a{2}{3}'), which PCRE refuses: \
         put a group around the first repetition if one was meant",
    )
}

/// A quantifier written right after another, with no group between; ordered by how
/// much it says (an expression holding both is one PCRE refuses).
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Nesting {
    /// PCRE's possessive form: `a++`, `a*+`, `a?+`, `a{2}+`.
    Possessive,
    /// What PCRE refuses: `a**`, `a++?`, `a{2}{3}`.
    Refused,
}

/// The quantifiers of `ast` written right after another, which this engine's parser
/// takes for a repetition of a repetition: what PCRE refuses if any is, else possessive.
fn nested_quantifier(ast: &regex_syntax::ast::Ast) -> Option<Nesting> {
    use regex_syntax::ast::{Ast, RepetitionKind};
    match ast {
        Ast::Repetition(outer) => {
            let here = match &*outer.ast {
                // `a+?+` is no possessive form: PCRE refuses a quantifier after a lazy one.
                Ast::Repetition(inner)
                    if inner.greedy
                        && outer.greedy
                        && outer.op.kind == RepetitionKind::OneOrMore =>
                {
                    Some(Nesting::Possessive)
                }
                Ast::Repetition(_) => Some(Nesting::Refused),
                _ => None,
            };
            here.max(nested_quantifier(&outer.ast))
        }
        Ast::Group(g) => nested_quantifier(&g.ast),
        Ast::Alternation(a) => a.asts.iter().filter_map(nested_quantifier).max(),
        Ast::Concat(c) => c.asts.iter().filter_map(nested_quantifier).max(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_roundtrip() {
        assert_eq!(parse_datetime("1970-01-01"), Some(0));
        assert_eq!(parse_datetime("2014-09-03T19:35:19Z"), Some(1_409_772_919));
        assert_eq!(
            parse_datetime("2014-09-03T21:35:19+02:00"),
            Some(1_409_772_919)
        );
        assert_eq!(
            parse_datetime("2014-09-03T19:35:19.999"),
            Some(1_409_772_919)
        );
        assert_eq!(format_datetime(1_409_772_919), "2014-09-03T19:35:19Z");
        assert_eq!(parse_datetime("2014-13-03"), None);
        assert_eq!(parse_datetime("yesterday"), None);
    }

    /// A fraction of a second is kept to the digits it is written with, at most nine.
    #[test]
    fn fractions_of_a_second_are_kept() {
        let at = |s| parse_datetime_precise(s).unwrap();
        let t = |secs, nanos| Timestamp { secs, nanos };
        assert_eq!(at("2014-09-03T19:35:19Z"), (t(1_409_772_919, 0), 0));
        assert_eq!(at("2014-09-03T19:35:19.000Z"), (t(1_409_772_919, 0), 3));
        assert_eq!(
            at("2014-09-03T19:35:19.50Z"),
            (t(1_409_772_919, 500_000_000), 2)
        );
        assert_eq!(
            at("2014-09-03T21:35:19,123456789+02:00"),
            (t(1_409_772_919, 123_456_789), 9)
        );
        assert_eq!(
            at("2014-09-03T19:35:19.99999999900000000000Z"),
            (t(1_409_772_919, 999_999_999), 9)
        );
        // Finer than a nanosecond: cut, as a document's own dates are read, but refused
        // as an operand, which would compare wrongly.
        assert_eq!(
            at("2014-09-03T19:35:19.1234567891Z"),
            (t(1_409_772_919, 123_456_789), 9)
        );
        let operand = parse_datetime_operand;
        assert_eq!(operand("2014-09-03T19:35:19.1234567891Z"), None);
        assert_eq!(
            operand("2014-09-03T19:35:19.0000000000000000000000001Z"),
            None
        );
        assert_eq!(
            operand("2014-09-03T19:35:19.12345678900Z"),
            Some((t(1_409_772_919, 123_456_789), 9))
        );
        // An offset that is not ASCII is refused, not cut inside a character.
        assert_eq!(parse_datetime_precise("2020-01-15T10:30+1\u{e9}1"), None);
        assert_eq!(at("1969-12-31T23:59:59.25Z"), (t(-1, 250_000_000), 2));
        assert_eq!(at("2014-09-03"), (t(1_409_702_400, 0), 0));
        assert_eq!(
            format_timestamp(t(1_409_772_919, 500_000_000), 3),
            "2014-09-03T19:35:19.500Z"
        );
        assert_eq!(format_timestamp(t(0, 5), 0), "1970-01-01T00:00:00Z");
        assert_eq!(t(7, 987_654_321).truncated(1), t(7, 900_000_000));
        assert_eq!(t(7, 987_654_321).truncated(0), t(7, 0));
        assert_eq!(t(7, 987_654_321).truncated(9), t(7, 987_654_321));
        assert!(t(-1, 250_000_000) < t(0, 0));
    }

    /// Dates that do not exist are refused, not rolled over into the next month, and
    /// the parts of a time must be in range and digits.
    #[test]
    fn impossible_dates_and_times_are_refused() {
        for bad in [
            "2015-02-29",
            "2015-02-31",
            "2016-04-31",
            "1900-02-29",
            "2014-09-03T24:30:00Z",
            "2014-09-03T12:00:00.5x",
            "2014-09-03T12:00:00.Z",
            "2014-09-03T12:00:00+24:00",
            "2014-09-03T12:00:00+02:60",
            "10000-01-01",
            "1000000000000000-01-01T00:00:00Z",
        ] {
            assert_eq!(parse_datetime(bad), None, "{bad}");
        }
        assert!(parse_datetime("2016-02-29").is_some(), "a leap year");
        assert!(parse_datetime("2000-02-29").is_some(), "divisible by 400");
        assert_eq!(
            parse_datetime("2014-09-03T24:00:00Z"),
            parse_datetime("2014-09-04T00:00:00Z"),
            "the end of a day"
        );
        assert_eq!(
            parse_datetime("2014-09-03T19:35:19,250Z"),
            Some(1_409_772_919)
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("PT1H2M3S"), Some(3723.0));
        assert_eq!(parse_duration("P1D"), Some(86400.0));
        assert_eq!(parse_duration("01:00:01"), Some(3601.0));
        assert_eq!(parse_duration("12.5"), Some(12.5));
        assert_eq!(parse_duration("P1X"), None);
    }

    #[test]
    fn ips_and_ints() {
        assert!(ip_key(parse_ip("10.0.0.1").unwrap()) < ip_key(parse_ip("10.0.0.2").unwrap()));
        assert_eq!(parse_ip("[::1]"), Some("::1".parse().unwrap()));
        assert_eq!(parse_int("0x10"), Some(16));
        assert_eq!(parse_int("x"), None);
    }
}
