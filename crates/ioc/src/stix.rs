//! STIX 2.1 patterns: a hand-written recursive-descent parser and the mapping of
//! STIX object properties onto the Linux collectors' fields.
//!
//! Hand-written so that every error carries the byte offset where parsing stopped and
//! so that nothing but the grammar below is accepted:
//!
//! ```text
//! pattern     := obs_fby EOF
//! obs_fby     := obs_or ("FOLLOWEDBY" obs_or)*
//! obs_or      := obs_and ("OR" obs_and)*
//! obs_and     := obs_qual ("AND" obs_qual)*
//! obs_qual    := obs_atom qualifier*
//! obs_atom    := "[" cmp_or "]" | "(" obs_fby ")"
//! qualifier   := "WITHIN" num "SECONDS" | "REPEATS" int "TIMES" | "START" t'…' "STOP" t'…'
//! cmp_or      := cmp_and ("OR" cmp_and)*
//! cmp_and     := cmp ("AND" cmp)*
//! cmp         := "(" cmp_or ")" | path ["NOT"] op value | ["NOT"] "EXISTS" path
//! op          := = != < <= > >= IN LIKE MATCHES ISSUBSET ISSUPERSET
//! ```
//!
//! FOLLOWEDBY binds loosest, as in STIX 2.1's grammar (STIXPattern.g4): `[a] OR [b]
//! FOLLOWEDBY [c]` is `([a] OR [b]) FOLLOWEDBY [c]`, and so needs event history as a
//! whole; binding it tighter would let `[a]` alone make the pattern a hit.
//!
//! Observation operators and qualifiers that need event history (FOLLOWEDBY, WITHIN,
//! REPEATS, START/STOP) cannot be decided by a point-in-time sweep: they are kept as
//! unsupported terms, so a pattern using them is "undetermined" rather than "no match".
//! A pattern of several observations (`[file:name = 'a'] AND [file:name = 'b']`) holds
//! where each observation is matched by an object, those an AND joins by different
//! objects (two files here): it keeps its observations apart ([`Observations`]), and a
//! sweep judges each over every object before joining them
//! ([`crate::eval::join_observations`]).

use crate::model::{
    Condition, ContentType, Field, Ioc, IocFormat, Node, Observations, Operand, Term,
    UnsupportedTerm,
};
use crate::openioc::build_term;
use crate::value::{parse_datetime, parse_datetime_operand, parse_ip, Timestamp};
use crate::Error;
use std::net::IpAddr;

/// Longest pattern accepted (bytes).
pub const MAX_PATTERN_BYTES: usize = 1 << 20;
/// Largest JSON document accepted (bytes).
pub const MAX_DOCUMENT_BYTES: usize = 16 << 20;
const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq)]
enum Lit {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// A timestamp and the decimal digits of a second it is written to.
    Time(Timestamp, u8),
    Bin(String),
    List(Vec<Lit>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    Like,
    Matches,
    IsSubset,
    IsSuperset,
    Exists,
}

#[derive(Debug, Clone)]
enum Cmp {
    And(Vec<Cmp>),
    Or(Vec<Cmp>),
    Leaf {
        /// Byte offset of the comparison in the pattern, for errors found after parsing.
        at: usize,
        text: String,
        object: String,
        path: Vec<String>,
        negated: bool,
        op: Op,
        value: Lit,
    },
}

#[derive(Debug, Clone)]
enum Obs {
    Atom(Cmp),
    And(Vec<Obs>),
    Or(Vec<Obs>),
    Temporal(Vec<Obs>, String),
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
    depth: usize,
}

type PResult<T> = Result<T, (usize, String)>;

impl<'a> Parser<'a> {
    fn err<T>(&self, msg: impl Into<String>) -> PResult<T> {
        Err((self.pos, msg.into()))
    }

    fn ws(&mut self) {
        while let Some(c) = self.src[self.pos..].chars().next() {
            if c.is_whitespace() {
                self.pos += c.len_utf8();
            } else {
                break;
            }
        }
    }

    fn peek(&mut self) -> Option<char> {
        self.ws();
        self.src[self.pos..].chars().next()
    }

    fn eat(&mut self, s: &str) -> bool {
        self.ws();
        if self.src[self.pos..].starts_with(s) {
            self.pos += s.len();
            true
        } else {
            false
        }
    }

    /// Consumes keyword `kw` only when followed by a non-identifier character.
    fn kw(&mut self, kw: &str) -> bool {
        self.ws();
        let rest = &self.src[self.pos..];
        if rest.starts_with(kw)
            && !rest[kw.len()..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            self.pos += kw.len();
            true
        } else {
            false
        }
    }

    fn enter(&mut self) -> PResult<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.err(format!("nesting deeper than {MAX_DEPTH}"));
        }
        Ok(())
    }

    fn obs_fby(&mut self) -> PResult<Obs> {
        let mut v = vec![self.obs_or()?];
        while self.kw("FOLLOWEDBY") {
            v.push(self.obs_or()?);
        }
        Ok(if v.len() == 1 {
            v.remove(0)
        } else {
            Obs::Temporal(v, "FOLLOWEDBY".into())
        })
    }

    fn obs_or(&mut self) -> PResult<Obs> {
        let mut v = vec![self.obs_and()?];
        while self.kw("OR") {
            v.push(self.obs_and()?);
        }
        Ok(if v.len() == 1 {
            v.remove(0)
        } else {
            Obs::Or(v)
        })
    }

    fn obs_and(&mut self) -> PResult<Obs> {
        let mut v = vec![self.obs_qual()?];
        while self.kw("AND") {
            v.push(self.obs_qual()?);
        }
        Ok(if v.len() == 1 {
            v.remove(0)
        } else {
            Obs::And(v)
        })
    }

    fn obs_qual(&mut self) -> PResult<Obs> {
        let mut o = self.obs_atom()?;
        loop {
            let start = self.pos;
            if self.kw("WITHIN") {
                self.number()?;
                if !self.kw("SECONDS") {
                    return self.err("expected SECONDS after WITHIN <number>");
                }
            } else if self.kw("REPEATS") {
                self.number()?;
                if !self.kw("TIMES") {
                    return self.err("expected TIMES after REPEATS <int>");
                }
            } else if self.kw("START") {
                self.literal()?;
                if !self.kw("STOP") {
                    return self.err("expected STOP after START <timestamp>");
                }
                self.literal()?;
            } else {
                break;
            }
            let q = self.src[start..self.pos].trim().to_string();
            o = Obs::Temporal(vec![o], q);
        }
        Ok(o)
    }

    fn obs_atom(&mut self) -> PResult<Obs> {
        self.enter()?;
        let r = if self.eat("[") {
            let c = self.cmp_or()?;
            if !self.eat("]") {
                return self.err("expected ']' or AND/OR");
            }
            Obs::Atom(c)
        } else if self.eat("(") {
            let o = self.obs_fby()?;
            if !self.eat(")") {
                return self.err("expected ')'");
            }
            o
        } else {
            return self.err("expected '[' or '(' to start an observation expression");
        };
        self.depth -= 1;
        Ok(r)
    }

    fn cmp_or(&mut self) -> PResult<Cmp> {
        let mut v = vec![self.cmp_and()?];
        while self.kw("OR") {
            v.push(self.cmp_and()?);
        }
        Ok(if v.len() == 1 {
            v.remove(0)
        } else {
            Cmp::Or(v)
        })
    }

    fn cmp_and(&mut self) -> PResult<Cmp> {
        let mut v = vec![self.cmp()?];
        while self.kw("AND") {
            v.push(self.cmp()?);
        }
        Ok(if v.len() == 1 {
            v.remove(0)
        } else {
            Cmp::And(v)
        })
    }

    fn cmp(&mut self) -> PResult<Cmp> {
        if self.eat("(") {
            self.enter()?;
            let c = self.cmp_or()?;
            if !self.eat(")") {
                return self.err("expected ')'");
            }
            self.depth -= 1;
            return Ok(c);
        }
        self.ws();
        let start = self.pos;
        let pre_not = self.kw("NOT");
        if self.kw("EXISTS") {
            let (object, path) = self.path()?;
            return Ok(Cmp::Leaf {
                at: start,
                text: self.src[start..self.pos].trim().to_string(),
                object,
                path,
                negated: pre_not,
                op: Op::Exists,
                value: Lit::Bool(true),
            });
        }
        if pre_not {
            return self.err("expected EXISTS after NOT");
        }
        let (object, path) = self.path()?;
        let negated = self.kw("NOT");
        let op = if self.eat("!=") {
            Op::Ne
        } else if self.eat("<=") {
            Op::Le
        } else if self.eat(">=") {
            Op::Ge
        } else if self.eat("=") {
            Op::Eq
        } else if self.eat("<") {
            Op::Lt
        } else if self.eat(">") {
            Op::Gt
        } else if self.kw("IN") {
            Op::In
        } else if self.kw("LIKE") {
            Op::Like
        } else if self.kw("MATCHES") {
            Op::Matches
        } else if self.kw("ISSUBSET") {
            Op::IsSubset
        } else if self.kw("ISSUPERSET") {
            Op::IsSuperset
        } else {
            return self.err("expected a comparison operator (=, !=, <, <=, >, >=, IN, LIKE, MATCHES, ISSUBSET, ISSUPERSET)");
        };
        let value = if op == Op::In {
            if !self.eat("(") {
                return self.err("expected '(' after IN");
            }
            let mut items = vec![self.literal()?];
            while self.eat(",") {
                items.push(self.literal()?);
            }
            if !self.eat(")") {
                return self.err("expected ',' or ')' in IN list");
            }
            Lit::List(items)
        } else {
            self.literal()?
        };
        Ok(Cmp::Leaf {
            at: start,
            text: self.src[start..self.pos].trim().to_string(),
            object,
            path,
            negated,
            op,
            value,
        })
    }

    fn ident(&mut self) -> PResult<String> {
        self.ws();
        let rest = &self.src[self.pos..];
        let len = rest
            .char_indices()
            .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
            .map_or(rest.len(), |(i, _)| i);
        if len == 0 || !rest.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
            return self.err("expected an identifier");
        }
        self.pos += len;
        Ok(rest[..len].to_string())
    }

    fn path(&mut self) -> PResult<(String, Vec<String>)> {
        let object = self.ident()?;
        if !self.src[self.pos..].starts_with(':') {
            return self.err("expected ':' after the object type (e.g. file:name)");
        }
        self.pos += 1;
        let mut path = vec![self.prop()?];
        loop {
            if self.src[self.pos..].starts_with('.') {
                self.pos += 1;
                path.push(self.prop()?);
            } else if self.src[self.pos..].starts_with('[') {
                self.pos += 1;
                let rest = &self.src[self.pos..];
                let end = rest
                    .find(']')
                    .ok_or((self.pos, "expected ']'".to_string()))?;
                let idx = rest[..end].trim();
                if idx != "*" && idx.parse::<i64>().is_err() {
                    return self.err("list index must be an integer or '*'");
                }
                path.push(format!("[{idx}]"));
                self.pos += end + 1;
            } else {
                break;
            }
        }
        Ok((object, path))
    }

    fn prop(&mut self) -> PResult<String> {
        if self.src[self.pos..].starts_with('\'') {
            match self.literal()? {
                Lit::Str(s) => Ok(s),
                _ => self.err("expected a quoted property name"),
            }
        } else {
            let rest = &self.src[self.pos..];
            let len = rest
                .char_indices()
                .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
                .map_or(rest.len(), |(i, _)| i);
            if len == 0 {
                return self.err("expected a property name");
            }
            self.pos += len;
            Ok(rest[..len].to_string())
        }
    }

    fn quoted(&mut self) -> PResult<String> {
        // at the opening quote
        let start = self.pos;
        self.pos += 1;
        let mut out = String::new();
        let mut chars = self.src[self.pos..].char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, e @ ('\'' | '\\'))) => out.push(e),
                    _ => {
                        self.pos += i;
                        return self.err("only \\' and \\\\ escapes are allowed in strings");
                    }
                },
                '\'' => {
                    self.pos += i + 1;
                    return Ok(out);
                }
                c => out.push(c),
            }
        }
        self.pos = start;
        self.err("unterminated string")
    }

    fn number(&mut self) -> PResult<Lit> {
        self.ws();
        let rest = &self.src[self.pos..];
        let len = rest
            .char_indices()
            .find(|(i, c)| {
                !(c.is_ascii_digit() || *c == '.' || (*i == 0 && (*c == '-' || *c == '+')))
            })
            .map_or(rest.len(), |(i, _)| i);
        let t = &rest[..len];
        if let Ok(i) = t.parse::<i64>() {
            self.pos += len;
            return Ok(Lit::Int(i));
        }
        if let Ok(f) = t.parse::<f64>() {
            self.pos += len;
            return Ok(Lit::Float(f));
        }
        self.err("expected a number")
    }

    fn literal(&mut self) -> PResult<Lit> {
        match self.peek() {
            Some('\'') => Ok(Lit::Str(self.quoted()?)),
            Some('t') if self.src[self.pos..].starts_with("t'") => {
                let at = self.pos;
                self.pos += 1;
                let s = self.quoted()?;
                match parse_datetime_operand(&s) {
                    Some((t, digits)) if rfc3339_utc(&s) => Ok(Lit::Time(t, digits)),
                    _ => Err((
                        at,
                        format!(
                            "'{s}' is not an RFC 3339 timestamp ending in Z (to the second, \
                             or to at most nine digits of one)"
                        ),
                    )),
                }
            }
            Some('h') if self.src[self.pos..].starts_with("h'") => {
                let at = self.pos;
                self.pos += 1;
                let s = self.quoted()?;
                if s.len() % 2 != 0 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err((at, format!("'{s}' is not hex")));
                }
                Ok(Lit::Bin(s.to_ascii_lowercase()))
            }
            Some('b') if self.src[self.pos..].starts_with("b'") => {
                self.pos += 1;
                let s = self.quoted()?;
                Ok(Lit::Bin(s))
            }
            Some(c) if c.is_ascii_digit() || c == '-' || c == '+' => self.number(),
            _ if self.kw("true") => Ok(Lit::Bool(true)),
            _ if self.kw("false") => Ok(Lit::Bool(false)),
            _ => self.err("expected a literal ('string', number, true/false, t'…', h'…', b'…')"),
        }
    }
}

/// Maps a STIX object path onto a collector field.
fn field_for(object: &str, path: &[String]) -> Option<Field> {
    let p: Vec<&str> = path.iter().map(String::as_str).collect();
    Some(match (object, p.as_slice()) {
        ("file", ["name"]) => Field::FileName,
        ("file", ["size"]) => Field::FileSize,
        ("file", ["hashes", h]) => match h.to_ascii_uppercase().replace('-', "").as_str() {
            "MD5" => Field::FileMd5,
            "SHA1" => Field::FileSha1,
            "SHA256" => Field::FileSha256,
            _ => return None,
        },
        ("file", ["parent_directory_ref", "path"]) => Field::FilePath,
        ("file", ["ctime" | "created"]) => Field::FileCreated,
        ("file", ["mtime" | "modified"]) => Field::FileModified,
        ("file", ["atime" | "accessed"]) => Field::FileAccessed,
        ("process", ["pid"]) => Field::ProcPid,
        ("process", ["name"] | ["image_ref", "name"]) => Field::ProcName,
        ("process", ["command_line"]) => Field::ProcArguments,
        ("process", ["created_time" | "created"]) => Field::ProcStartTime,
        ("process", ["parent_ref", "pid"]) => Field::ProcParentPid,
        ("process", ["user_ref", "account_login"]) => Field::ProcUser,
        ("network-traffic", ["src_port"]) => Field::PortLocalPort,
        ("network-traffic", ["dst_port"]) => Field::PortRemotePort,
        ("network-traffic", ["src_ref", "value"]) => Field::PortLocalIp,
        ("network-traffic", ["dst_ref", "value"]) => Field::PortRemoteIp,
        ("network-traffic", ["protocols", _]) => Field::PortProtocol,
        ("ipv4-addr" | "ipv6-addr", ["value"]) => Field::PortRemoteIp,
        ("domain-name", ["value"]) => Field::DnsHost,
        ("user-account", ["user_id"]) => Field::UserId,
        ("user-account", ["account_login"]) => Field::UserName,
        ("user-account", ["display_name"]) => Field::UserFullName,
        ("user-account", ["extensions", "unix-account-ext", "home_dir"]) => Field::UserHome,
        ("user-account", ["extensions", "unix-account-ext", "shell"]) => Field::UserShell,
        ("user-account", ["extensions", "unix-account-ext", "gid"]) => Field::UserGroupId,
        _ => return None,
    })
}

fn is_ip_field(f: Field) -> bool {
    matches!(
        f,
        Field::PortLocalIp | Field::PortRemoteIp | Field::SysIpAddress | Field::DnsAddress
    )
}

/// The operand a literal gives a comparison with `field`. A literal of the wrong kind
/// for the field (`file:size > 'abc'`, an MD5 that is not one) is an error rather than a
/// comparison that can never hold; `textual` comparisons (LIKE, MATCHES, ISSUBSET) take
/// the text as it is and are checked where they are built.
fn operand_for(field: Field, lit: &Lit, textual: bool) -> Result<(ContentType, Operand), String> {
    if let (Lit::Bin(s) | Lit::Str(s), false) = (lit, textual) {
        if is_number_field(field) {
            // STIX writes some numbers as strings (`user-account:user_id = '0'`).
            return match s.trim().parse::<i64>() {
                Ok(n) => Ok((ContentType::Int, Operand::Int(n))),
                Err(_) => Err(format!(
                    "'{s}' is not a number, and this property holds one"
                )),
            };
        }
        if is_time_field(field) {
            return match parse_datetime_operand(s).filter(|_| rfc3339_utc(s)) {
                Some((t, digits)) => Ok((ContentType::Date, Operand::Date(t, digits))),
                None => Err(format!(
                    "'{s}' is not an RFC 3339 timestamp in UTC to at most nine digits of a \
                     second (write t'2020-01-01T00:00:00Z')"
                )),
            };
        }
        if field.needs_content() {
            let (ty, len) = match field {
                Field::FileMd5 => (ContentType::Md5, 32),
                Field::FileSha1 => (ContentType::Sha1, 40),
                _ => (ContentType::Sha256, 64),
            };
            if s.len() != len || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("'{s}' is not a {ty:?} hash ({len} hex digits)"));
            }
        }
        if is_ip_field(field) && parse_ip(s).is_none() {
            return match cidr_range(s) {
                // An address written as a block (`= '198.51.100.0/24'`): any in it.
                Some(range) => Ok((ContentType::Ip, range)),
                None => Err(format!("'{s}' is not an IP address or a CIDR block")),
            };
        }
    }
    // A literal of another kind than the property's: a number for a time (`file:ctime >
    // 5` would hold on every file), a time or a number for a hash, and so on.
    if !textual {
        let kind = match lit {
            Lit::Int(_) | Lit::Float(_) => Some("a number"),
            Lit::Time(..) => Some("a timestamp"),
            Lit::Bool(_) => Some("a boolean"),
            Lit::Str(_) | Lit::Bin(_) | Lit::List(_) => None,
        };
        let wanted = if is_number_field(field) {
            (!matches!(lit, Lit::Int(_) | Lit::Float(_))).then_some("a number")
        } else if is_time_field(field) {
            (!matches!(lit, Lit::Time(..))).then_some("a timestamp (t'2020-01-01T00:00:00Z')")
        } else if field.needs_content() {
            Some("a hash in quotes")
        } else if is_ip_field(field) {
            Some("an address in quotes")
        } else {
            // Text: `file:name >= 5` would compare a name with a number (STIX makes it
            // false; a name that reads as a number would not be), `!= true` with "true".
            Some("text (write the value in quotes)")
        };
        if let (Some(kind), Some(wanted)) = (kind, wanted) {
            return Err(format!("{kind} where this property holds {wanted}"));
        }
    }
    Ok(operand_of(field, lit))
}

/// Properties that hold a number.
fn is_number_field(f: Field) -> bool {
    matches!(
        f,
        Field::FileSize
            | Field::ProcPid
            | Field::ProcParentPid
            | Field::PortLocalPort
            | Field::PortRemotePort
            | Field::UserId
            | Field::UserGroupId
    )
}

/// Properties that hold a time.
fn is_time_field(f: Field) -> bool {
    matches!(
        f,
        Field::FileCreated | Field::FileModified | Field::FileAccessed | Field::ProcStartTime
    )
}

/// Is `s` written as STIX writes a timestamp (RFC 3339 in UTC: `2020-01-01T00:00:07Z`,
/// `…07.5Z`), rather than one of the looser ISO 8601 forms OpenIOC documents use?
fn rfc3339_utc(s: &str) -> bool {
    let b = s.as_bytes();
    // The shortest: `2020-01-01T00:00:00Z`.
    if b.len() < 20 {
        return false;
    }
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let fraction = match b.get(19) {
        Some(b'.') => {
            let n = b[20..].iter().take_while(|d| d.is_ascii_digit()).count();
            if n == 0 {
                return false;
            }
            &b[20 + n..]
        }
        _ => &b[19..],
    };
    digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && &s[11..13] < "24"
        && fraction == b"Z"
}

fn operand_of(field: Field, lit: &Lit) -> (ContentType, Operand) {
    match lit {
        Lit::Int(i) => (ContentType::Int, Operand::Int(*i)),
        Lit::Float(f) if f.fract() == 0.0 && f.abs() < 9e15 => {
            (ContentType::Int, Operand::Int(*f as i64))
        }
        Lit::Float(f) => (ContentType::Duration, Operand::Duration(*f)),
        Lit::Time(t, digits) => (ContentType::Date, Operand::Date(*t, *digits)),
        Lit::Bool(b) => (ContentType::String, Operand::Str(b.to_string())),
        Lit::Bin(s) | Lit::Str(s) => {
            if field.needs_content() {
                let ty = match field {
                    Field::FileMd5 => ContentType::Md5,
                    Field::FileSha1 => ContentType::Sha1,
                    _ => ContentType::Sha256,
                };
                (ty, Operand::Hash(s.to_ascii_lowercase()))
            } else if is_ip_field(field) {
                match parse_ip(s) {
                    Some(ip) => (ContentType::Ip, Operand::Ip(ip)),
                    None => (ContentType::String, Operand::Str(s.clone())),
                }
            } else {
                (ContentType::String, Operand::Str(s.clone()))
            }
        }
        Lit::List(_) => (ContentType::String, Operand::Str(String::new())),
    }
}

fn cidr_range(s: &str) -> Option<Operand> {
    let (addr, bits) = s.split_once('/')?;
    let ip: IpAddr = addr.trim().parse().ok()?;
    let bits: u32 = bits.trim().parse().ok()?;
    let (lo, hi) = match ip {
        IpAddr::V4(v4) => {
            if bits > 32 {
                return None;
            }
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            let n = u32::from(v4);
            (
                IpAddr::from((n & mask).to_be_bytes()),
                IpAddr::from((n | !mask).to_be_bytes()),
            )
        }
        IpAddr::V6(v6) => {
            if bits > 128 {
                return None;
            }
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            let n = u128::from(v6);
            (
                IpAddr::from((n & mask).to_be_bytes()),
                IpAddr::from((n | !mask).to_be_bytes()),
            )
        }
    };
    Some(Operand::Range(
        Box::new(Operand::Ip(lo)),
        Box::new(Operand::Ip(hi)),
    ))
}

/// The regular expression of a LIKE operand. `%` and `_` match any character, as SQL's
/// wildcards do, a newline too (`(?s)`): a file name or command line holding a newline
/// must not escape `LIKE '%name'`.
fn like_to_regex(s: &str) -> String {
    let mut r = String::from("(?s)^");
    for c in s.chars() {
        match c {
            '%' => r.push_str(".*"),
            '_' => r.push('.'),
            c => r.push_str(&regex::escape(&c.to_string())),
        }
    }
    // The very end, as SQL's LIKE means (not PCRE's `$`, which a final newline passes).
    r.push_str(r"\z");
    r
}

struct Builder {
    terms: Vec<Term>,
    unsupported: Vec<UnsupportedTerm>,
    /// Per observation (`[…]`), its comparisons.
    parts: Vec<Node>,
}

impl Builder {
    fn unsupported(&mut self, id: &str, search: &str, reason: String) -> Node {
        self.unsupported.push(UnsupportedTerm {
            id: id.to_string(),
            search: search.to_string(),
            reason,
        });
        Node::Unsupported(self.unsupported.len() - 1)
    }

    /// Compiles an observation expression into the pattern as one object would satisfy
    /// it (the first node) and into its formula over observations (the second: each
    /// `[…]` becomes `Node::Term(k)`, its comparisons kept in `parts[k]`).
    fn obs(&mut self, o: &Obs) -> PResult<(Node, Node)> {
        Ok(match o {
            Obs::Atom(c) => {
                let root = self.cmp(c)?;
                self.parts.push(root.clone());
                (root, Node::Term(self.parts.len() - 1))
            }
            Obs::And(v) => {
                let (roots, formulas) = self.each(v)?;
                (Node::And(roots), Node::And(formulas))
            }
            Obs::Or(v) => {
                let (roots, formulas) = self.each(v)?;
                (Node::Or(roots), Node::Or(formulas))
            }
            Obs::Temporal(v, what) => {
                let word = what.split_whitespace().next().unwrap_or(what).to_string();
                let (mut roots, mut formulas) = self.each(v)?;
                // Said once each: "observation operator FOLLOWEDBY: needs event
                // history…", "qualifier WITHIN: WITHIN 5 SECONDS needs event history…".
                let (kind, said) = if *what == word {
                    ("observation operator", String::new())
                } else {
                    ("qualifier", format!("{what} "))
                };
                let history = self.unsupported(
                    kind,
                    &word,
                    format!("{said}needs event history; a point-in-time scan cannot evaluate it"),
                );
                roots.push(history.clone());
                formulas.push(history);
                (Node::And(roots), Node::And(formulas))
            }
        })
    }

    fn each(&mut self, v: &[Obs]) -> PResult<(Vec<Node>, Vec<Node>)> {
        let mut roots = Vec::with_capacity(v.len());
        let mut formulas = Vec::with_capacity(v.len());
        for o in v {
            let (root, formula) = self.obs(o)?;
            roots.push(root);
            formulas.push(formula);
        }
        Ok((roots, formulas))
    }

    fn cmp(&mut self, c: &Cmp) -> PResult<Node> {
        let (at, text, object, path, negated, op, value) = match c {
            Cmp::And(v) => {
                return Ok(Node::And(
                    v.iter().map(|c| self.cmp(c)).collect::<Result<_, _>>()?,
                ))
            }
            Cmp::Or(v) => {
                return Ok(Node::Or(
                    v.iter().map(|c| self.cmp(c)).collect::<Result<_, _>>()?,
                ))
            }
            Cmp::Leaf {
                at,
                text,
                object,
                path,
                negated,
                op,
                value,
            } => (*at, text, object, path, *negated, *op, value),
        };
        let search = format!("{object}:{}", path.join("."));
        let Some(field) = field_for(object, path) else {
            return Ok(self.unsupported(
                text,
                &search,
                format!("no Linux collector for STIX property '{search}'"),
            ));
        };
        if matches!(op, Op::IsSuperset | Op::Exists) {
            return Ok(self.unsupported(
                text,
                &search,
                format!("operator {op:?} is not supported"),
            ));
        }
        // MATCHES is PCRE: an expression valid there that this engine cannot run is
        // set aside, not taken for a broken pattern that would refuse the whole feed.
        if let (Op::Matches, Lit::Str(expression)) = (op, value) {
            if let Some(reason) = crate::value::regex_beyond_this_engine(expression) {
                return Ok(self.unsupported(text, &search, reason));
            }
        }
        let mut one = |lit: &Lit, cond: Condition, neg: bool| -> PResult<Node> {
            let textual = matches!(op, Op::Like | Op::Matches | Op::IsSubset);
            let (ty, mut operand) =
                operand_for(field, lit, textual).map_err(|e| (at, format!("in '{text}': {e}")))?;
            let mut raw = match lit {
                Lit::Str(s) | Lit::Bin(s) => s.clone(),
                Lit::Int(i) => i.to_string(),
                Lit::Float(f) => f.to_string(),
                Lit::Bool(b) => b.to_string(),
                Lit::Time(t, digits) => crate::value::format_timestamp(*t, *digits),
                Lit::List(_) => String::new(),
            };
            let mut cond = cond;
            match op {
                Op::Like => {
                    raw = like_to_regex(&raw);
                    operand = Operand::Str(raw.clone());
                }
                Op::Matches => operand = Operand::Str(raw.clone()),
                Op::IsSubset => {
                    operand = cidr_range(&raw)
                        .ok_or_else(|| (at, format!("'{raw}' is not a CIDR block")))?;
                    cond = Condition::Is;
                }
                _ => {}
            }
            if matches!(cond, Condition::LessThan | Condition::GreaterThan)
                && matches!(operand, Operand::Range(..))
            {
                return Err((
                    at,
                    format!(
                        "'{raw}' is an address block, which has no order: compare an \
                         address with it by = or ISSUBSET"
                    ),
                ));
            }
            let mut t = build_term(text.clone(), field, cond, neg, true, ty, raw, operand)
                .map_err(|e| (at, e))?;
            // A comparison on a property the object does not have, or with a constant its
            // value cannot be compared with, is false, whatever its operator: `!=`, `>=`
            // and `<=` are built as negations, which would hold there.
            t.undefined_never_holds = true;
            self.terms.push(t);
            Ok(Node::Term(self.terms.len() - 1))
        };
        let n = negated;
        Ok(match op {
            Op::Eq => one(value, Condition::Is, n)?,
            Op::Ne => one(value, Condition::Is, !n)?,
            Op::Lt => one(value, Condition::LessThan, n)?,
            Op::Ge => one(value, Condition::LessThan, !n)?,
            Op::Gt => one(value, Condition::GreaterThan, n)?,
            Op::Le => one(value, Condition::GreaterThan, !n)?,
            Op::Like | Op::Matches => {
                if !matches!(value, Lit::Str(_)) {
                    return Err((at, format!("{op:?} needs a string in '{text}'")));
                }
                one(value, Condition::Matches, n)?
            }
            Op::IsSubset => one(value, Condition::Is, n)?,
            Op::In => {
                let Lit::List(items) = value else {
                    return Err((at, "IN needs a list".into()));
                };
                let nodes = items
                    .iter()
                    .map(|l| one(l, Condition::Is, n))
                    .collect::<Result<Vec<_>, _>>()?;
                if n {
                    Node::And(nodes)
                } else {
                    Node::Or(nodes)
                }
            }
            Op::IsSuperset | Op::Exists => unreachable!("handled above"),
        })
    }
}

/// Parses one STIX 2.1 pattern into an indicator named `id`/`name`; `origin` names the
/// document in errors.
pub fn parse_pattern(pattern: &str, id: &str, name: &str, origin: &str) -> Result<Ioc, Error> {
    let fail = |offset: usize, msg: String| Error::Stix {
        origin: if id.is_empty() || id == origin {
            origin.to_string()
        } else if id.starts_with('(') && id.ends_with(')') {
            // Named by its position (`(indicator 1 without an id)`), already in
            // parentheses.
            format!("{origin} {id}")
        } else {
            format!("{origin} ({id})")
        },
        offset,
        msg,
    };
    if pattern.len() > MAX_PATTERN_BYTES {
        return Err(fail(
            0,
            format!(
                "pattern is {} bytes, over the {MAX_PATTERN_BYTES}-byte limit",
                pattern.len()
            ),
        ));
    }
    let mut p = Parser {
        src: pattern,
        pos: 0,
        depth: 0,
    };
    let obs = p.obs_fby().map_err(|(o, m)| fail(o, m))?;
    p.ws();
    if p.pos != pattern.len() {
        return Err(fail(p.pos, "unexpected text after the pattern".into()));
    }
    let mut b = Builder {
        terms: Vec::new(),
        unsupported: Vec::new(),
        parts: Vec::new(),
    };
    let (root, formula) = b.obs(&obs).map_err(|(o, m)| fail(o, m))?;
    let ioc = Ioc::new(
        id.to_string(),
        name.to_string(),
        IocFormat::Stix21,
        root,
        b.terms,
        b.unsupported,
    );
    Ok(if b.parts.len() > 1 {
        ioc.with_observations(Observations {
            parts: b.parts,
            formula,
        })
    } else {
        ioc
    })
}

/// The indicators of `objects` in their current versions: of several objects with one
/// id (versions of one indicator), the one most recently `modified` (STIX 2.1, 3.6), or
/// each of the newest where they differ. In document order.
fn current_versions<'a>(
    objects: Vec<(usize, &'a serde_json::Value)>,
    origins: &[&str],
) -> Result<Vec<(usize, &'a serde_json::Value)>, Error> {
    let indicators: Vec<(usize, &serde_json::Value)> = objects
        .into_iter()
        .filter(|(_, o)| o.get("type").and_then(|v| v.as_str()) == Some("indicator"))
        .collect();
    // Each one's `modified`; none counts as the oldest.
    let modified = indicators
        .iter()
        .map(|(doc, o)| {
            let id = o.get("id").and_then(|v| v.as_str()).unwrap_or_default();
            timestamp_field(o, "modified", id, origins[*doc])
        })
        .collect::<Result<Vec<_>, Error>>()?;
    // Per id, the newest versions: several where they are equally new (no `modified`,
    // or the same one) but differ, since nothing tells which one stands and dropping
    // either would drop its pattern without a word; identical copies count once.
    let mut latest: std::collections::HashMap<&str, Vec<usize>> = std::collections::HashMap::new();
    for (i, (_, o)) in indicators.iter().enumerate() {
        // An indicator without an id cannot be a version of another.
        let Some(id) = o.get("id").and_then(|v| v.as_str()) else {
            continue;
        };
        let newest = latest.entry(id).or_default();
        match newest.first() {
            Some(&j) if modified[j] > modified[i] => {}
            Some(&j) if modified[j] == modified[i] => {
                if !newest.iter().any(|&k| indicators[k].1 == *o) {
                    newest.push(i);
                }
            }
            _ => *newest = vec![i],
        }
    }
    Ok(indicators
        .iter()
        .enumerate()
        .filter(|(i, (_, o))| match o.get("id").and_then(|v| v.as_str()) {
            Some(id) => latest.get(id).is_some_and(|newest| newest.contains(i)),
            None => true,
        })
        .map(|(_, found)| *found)
        .collect())
}

/// A STIX timestamp as (Unix seconds, nanoseconds), so that fractions compare as
/// numbers (`.5` after `.49999`, `.9` after `.1` of the same second).
fn stix_time(text: &str) -> Option<(i64, u32)> {
    let secs = parse_datetime(text)?;
    let fraction = text
        .split_once('.')
        .map(|(_, f)| {
            f.bytes()
                .take_while(u8::is_ascii_digit)
                .take(9)
                .collect::<Vec<u8>>()
        })
        .unwrap_or_default();
    let nanos = fraction
        .iter()
        .chain(std::iter::repeat(&b'0'))
        .take(9)
        .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
    Some((secs, nanos))
}

/// An indicator's timestamp property `field` (`modified`, `valid_from`, `valid_until`),
/// if it has one; one that is not a timestamp is an error naming the indicator.
fn timestamp_field(
    o: &serde_json::Value,
    field: &str,
    id: &str,
    origin: &str,
) -> Result<Option<(i64, u32)>, Error> {
    match o.get(field) {
        None => Ok(None),
        Some(v) => v
            .as_str()
            .and_then(stix_time)
            .map(Some)
            .ok_or_else(|| Error::Json {
                origin: origin.to_string(),
                msg: format!(
                    "indicator {id}: '{field}' is not a timestamp (`2024-01-31T12:00:00Z`): {v}"
                ),
            }),
    }
}

/// Reads STIX content: a bundle, one indicator object, a JSON array of objects, or a
/// bare pattern (text starting with `[` or `(`). Returns one indicator per STIX
/// indicator with `pattern_type` `stix` (or none), in its current version, unless it is
/// set aside (see [`parse_document_noting`]); other objects are ignored.
pub fn parse_document(text: &str, origin: &str) -> Result<Vec<Ioc>, Error> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    parse_document_noting(text, origin, now).map(|d| d.iocs)
}

/// A STIX document's indicators, and those it holds that are not evaluated.
#[derive(Debug)]
pub struct StixDocument {
    /// The indicators to evaluate.
    pub iocs: Vec<Ioc>,
    /// One line per indicator set aside: revoked by its producer, expired (`valid_until`
    /// passed) or not valid yet (`valid_from` to come) at the time of reading.
    pub set_aside: Vec<String>,
}

/// [`parse_document`] at time `now` (Unix seconds), saying which indicators it set
/// aside. A `valid_from` or `valid_until` that is not a timestamp, or a `valid_until`
/// not after `valid_from`, is an error (STIX 2.1, 4.1.1).
pub fn parse_document_noting(text: &str, origin: &str, now: i64) -> Result<StixDocument, Error> {
    let mut docs = parse_documents_noting(&[(text, origin)], now)?;
    Ok(docs.pop().unwrap_or(StixDocument {
        iocs: Vec::new(),
        set_aside: Vec::new(),
    }))
}

/// Several STIX documents (text, origin) read as one feed, each as
/// [`parse_document_noting`] reads it, except that the versions of an indicator are
/// compared across them: a revocation or a newer version sent in an update file
/// replaces the indicator of an earlier file. One [`StixDocument`] per document, in
/// order.
pub fn parse_documents_noting(docs: &[(&str, &str)], now: i64) -> Result<Vec<StixDocument>, Error> {
    let mut out: Vec<StixDocument> = docs
        .iter()
        .map(|_| StixDocument {
            iocs: Vec::new(),
            set_aside: Vec::new(),
        })
        .collect();
    let origins: Vec<&str> = docs.iter().map(|(_, origin)| *origin).collect();
    let mut parsed: Vec<(usize, serde_json::Value)> = Vec::new();
    for (doc, (text, origin)) in docs.iter().enumerate() {
        if text.len() > MAX_DOCUMENT_BYTES {
            return Err(Error::TooLarge {
                origin: origin.to_string(),
                size: text.len(),
                limit: MAX_DOCUMENT_BYTES,
            });
        }
        let t = text.trim_start_matches('\u{feff}').trim();
        if t.starts_with('[') && serde_json::from_str::<serde_json::Value>(t).is_err()
            || t.starts_with('(')
        {
            out[doc]
                .iocs
                .push(parse_pattern(t, origin, origin, origin)?);
            continue;
        }
        let json: serde_json::Value = serde_json::from_str(t).map_err(|e| Error::Json {
            origin: origin.to_string(),
            msg: format!("not JSON nor a STIX pattern: {e}"),
        })?;
        parsed.push((doc, json));
    }
    let mut objects: Vec<(usize, &serde_json::Value)> = Vec::new();
    for (doc, json) in &parsed {
        match json {
            serde_json::Value::Array(a) => objects.extend(a.iter().map(|o| (*doc, o))),
            serde_json::Value::Object(o)
                if o.get("type").and_then(|v| v.as_str()) == Some("bundle") =>
            {
                if let Some(a) = o.get("objects").and_then(|v| v.as_array()) {
                    objects.extend(a.iter().map(|o| (*doc, o)));
                }
            }
            v @ serde_json::Value::Object(_) => objects.push((*doc, v)),
            _ => {
                return Err(Error::Json {
                    origin: origins[*doc].to_string(),
                    msg: "expected a STIX bundle, an indicator object or an array".into(),
                })
            }
        }
    }
    // Indicators without an id are numbered within their own document.
    let mut numbered = vec![0usize; docs.len()];
    for (doc, o) in current_versions(objects, &origins)? {
        numbered[doc] += 1;
        match indicator(o, numbered[doc], origins[doc], now)? {
            Ok(ioc) => out[doc].iocs.push(ioc),
            Err(why) => out[doc].set_aside.push(why),
        }
    }
    Ok(out)
}

/// One indicator object of document `origin` (the `n`th there): the indicator, or why
/// it is set aside.
fn indicator(
    o: &serde_json::Value,
    n: usize,
    origin: &str,
    now: i64,
) -> Result<Result<Ioc, String>, Error> {
    // Named by position when it has no id: verdicts are kept per indicator id.
    let id = match o
        .get("id")
        .and_then(|v| v.as_str())
        .filter(|id| !id.is_empty())
    {
        Some(id) => id.to_string(),
        None => format!("(indicator {n} without an id)"),
    };
    let revoked = match o.get("revoked") {
        None => false,
        Some(serde_json::Value::Bool(b)) => *b,
        Some(other) => {
            return Err(Error::Json {
                origin: origin.to_string(),
                msg: format!("indicator {id}: 'revoked' must be true or false, not {other}"),
            })
        }
    };
    if revoked {
        return Ok(Err(format!(
            "indicator {id} is revoked by its producer: not evaluated"
        )));
    }
    let valid_from = timestamp_field(o, "valid_from", &id, origin)?;
    let valid_until = timestamp_field(o, "valid_until", &id, origin)?;
    if let (Some(from), Some(until)) = (valid_from, valid_until) {
        if until <= from {
            return Err(Error::Json {
                origin: origin.to_string(),
                msg: format!("indicator {id}: 'valid_until' is not after 'valid_from'"),
            });
        }
    }
    let shown = |field: &str| o.get(field).and_then(|v| v.as_str()).unwrap_or_default();
    if valid_until.is_some_and(|until| until <= (now, 0)) {
        return Ok(Err(format!(
            "indicator {id} expired at {} (valid_until): not evaluated",
            shown("valid_until")
        )));
    }
    if valid_from.is_some_and(|from| from > (now, 0)) {
        return Ok(Err(format!(
            "indicator {id} is valid only from {} (valid_from): not evaluated",
            shown("valid_from")
        )));
    }
    let name = o
        .get("name")
        .and_then(|v| v.as_str())
        .unwrap_or(&id)
        .to_string();
    let ptype = o
        .get("pattern_type")
        .and_then(|v| v.as_str())
        .unwrap_or("stix");
    let Some(pattern) = o.get("pattern").and_then(|v| v.as_str()) else {
        return Err(Error::Json {
            origin: origin.to_string(),
            msg: format!("indicator {id} has no 'pattern'"),
        });
    };
    if ptype != "stix" {
        let u = UnsupportedTerm {
            id: id.clone(),
            search: format!("pattern_type {ptype}"),
            reason: format!("pattern_type '{ptype}' is not evaluated by the sweep"),
        };
        return Ok(Ok(Ioc::new(
            id,
            name,
            IocFormat::Stix21,
            Node::Unsupported(0),
            Vec::new(),
            vec![u],
        )));
    }
    Ok(Ok(parse_pattern(pattern, &id, &name, origin)?))
}
