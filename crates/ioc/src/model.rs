//! The language-neutral indicator model.
//!
//! OpenIOC documents and STIX patterns are both compiled into one [`Ioc`]: a tree of
//! AND/OR nodes over [`Term`]s, each term naming an item type and a [`Field`] that a
//! Linux collector can fill in. Having one model lets a sweep evaluate many indicators
//! from different languages in a single pass over the system. Terms that no collector
//! can evaluate are kept as [`UnsupportedTerm`]s so that they are reported, never
//! silently treated as "no match".

pub use crate::value::Timestamp;
use crate::value::{format_datetime, format_timestamp, ip_key, parse_datetime_precise};
use regex::Regex;
use serde::Serialize;
use std::borrow::Cow;
use std::cmp::Ordering;
use std::net::IpAddr;

/// The kinds of items a Linux sweep collects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum ItemType {
    /// A file found by the file-system walk.
    File,
    /// A running process (from `/proc`).
    Process,
    /// A socket (from `/proc/net/{tcp,udp}{,6}`).
    Port,
    /// A local account (from `/etc/passwd`).
    User,
    /// A systemd service unit.
    Service,
    /// The host itself (one item).
    SystemInfo,
    /// A static name entry (from `/etc/hosts`).
    DnsEntry,
}

/// Every field a collector can provide. Each belongs to exactly one [`ItemType`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[allow(missing_docs)]
pub enum Field {
    FileFullPath,
    FilePath,
    FileName,
    FileExtension,
    FileSize,
    FileMd5,
    FileSha1,
    FileSha256,
    FileCreated,
    FileModified,
    FileAccessed,
    FileChanged,
    FileOwner,
    ProcName,
    ProcPath,
    ProcPid,
    ProcParentPid,
    ProcArguments,
    ProcUser,
    ProcStartTime,
    ProcKernelTime,
    ProcUserTime,
    PortLocalIp,
    PortLocalPort,
    PortRemoteIp,
    PortRemotePort,
    PortProtocol,
    PortState,
    PortPid,
    PortProcess,
    PortPath,
    UserName,
    UserId,
    UserGroupId,
    UserHome,
    UserShell,
    UserFullName,
    ServiceName,
    ServicePath,
    ServiceStatus,
    ServiceMode,
    ServiceProgram,
    ServiceArguments,
    ServiceDescription,
    SysHostname,
    SysOs,
    SysIpAddress,
    DnsHost,
    DnsAddress,
    DnsRecordType,
}

/// OpenIOC search paths accepted for each field (matched case-insensitively).
const SEARCHES: &[(&str, Field)] = &[
    ("FileItem/FullPath", Field::FileFullPath),
    ("FileItem/FilePath", Field::FilePath),
    ("FileItem/FileName", Field::FileName),
    ("FileItem/FileExtension", Field::FileExtension),
    ("FileItem/SizeInBytes", Field::FileSize),
    ("FileItem/Md5sum", Field::FileMd5),
    ("FileItem/Sha1sum", Field::FileSha1),
    ("FileItem/Sha256sum", Field::FileSha256),
    ("FileItem/Created", Field::FileCreated),
    ("FileItem/Modified", Field::FileModified),
    ("FileItem/Accessed", Field::FileAccessed),
    ("FileItem/Changed", Field::FileChanged),
    ("FileItem/Username", Field::FileOwner),
    ("ProcessItem/name", Field::ProcName),
    ("ProcessItem/path", Field::ProcPath),
    ("ProcessItem/pid", Field::ProcPid),
    ("ProcessItem/parentpid", Field::ProcParentPid),
    ("ProcessItem/arguments", Field::ProcArguments),
    ("ProcessItem/Username", Field::ProcUser),
    ("ProcessItem/startTime", Field::ProcStartTime),
    ("ProcessItem/kernelTime", Field::ProcKernelTime),
    ("ProcessItem/userTime", Field::ProcUserTime),
    ("PortItem/localIP", Field::PortLocalIp),
    ("PortItem/localPort", Field::PortLocalPort),
    ("PortItem/remoteIP", Field::PortRemoteIp),
    ("PortItem/remotePort", Field::PortRemotePort),
    ("PortItem/protocol", Field::PortProtocol),
    ("PortItem/state", Field::PortState),
    ("PortItem/pid", Field::PortPid),
    ("PortItem/process", Field::PortProcess),
    ("PortItem/path", Field::PortPath),
    ("UserItem/Username", Field::UserName),
    ("UserItem/userid", Field::UserId),
    ("UserItem/groupid", Field::UserGroupId),
    ("UserItem/homedirectory", Field::UserHome),
    ("UserItem/shell", Field::UserShell),
    ("UserItem/fullname", Field::UserFullName),
    ("ServiceItem/name", Field::ServiceName),
    ("ServiceItem/path", Field::ServicePath),
    ("ServiceItem/status", Field::ServiceStatus),
    ("ServiceItem/mode", Field::ServiceMode),
    ("ServiceItem/serviceDLL", Field::ServiceProgram),
    ("ServiceItem/arguments", Field::ServiceArguments),
    ("ServiceItem/descriptiveName", Field::ServiceDescription),
    ("SystemInfoItem/hostname", Field::SysHostname),
    ("SystemInfoItem/OS", Field::SysOs),
    ("SystemInfoItem/ipAddress", Field::SysIpAddress),
    (
        "SystemInfoItem/networkArray/networkInfo/ipArray/ipInfo/ipAddress",
        Field::SysIpAddress,
    ),
    ("DnsEntryItem/Host", Field::DnsHost),
    ("DnsEntryItem/RecordName", Field::DnsHost),
    ("DnsEntryItem/RecordData/Host", Field::DnsHost),
    ("DnsEntryItem/RecordData/IPv4Address", Field::DnsAddress),
    ("DnsEntryItem/RecordType", Field::DnsRecordType),
];

impl Field {
    /// The field an OpenIOC `Context/@search` names, if a Linux collector provides it.
    pub fn from_search(search: &str) -> Option<Field> {
        SEARCHES
            .iter()
            .find(|(s, _)| s.eq_ignore_ascii_case(search))
            .map(|(_, f)| *f)
    }

    /// The canonical OpenIOC search path of this field.
    pub fn search(self) -> &'static str {
        SEARCHES
            .iter()
            .find(|(_, f)| *f == self)
            .map(|(s, _)| *s)
            .unwrap_or("?")
    }

    /// The item type this field belongs to.
    pub fn item(self) -> ItemType {
        use Field::*;
        match self {
            FileFullPath | FilePath | FileName | FileExtension | FileSize | FileMd5 | FileSha1
            | FileSha256 | FileCreated | FileModified | FileAccessed | FileChanged | FileOwner => {
                ItemType::File
            }
            ProcName | ProcPath | ProcPid | ProcParentPid | ProcArguments | ProcUser
            | ProcStartTime | ProcKernelTime | ProcUserTime => ItemType::Process,
            PortLocalIp | PortLocalPort | PortRemoteIp | PortRemotePort | PortProtocol
            | PortState | PortPid | PortProcess | PortPath => ItemType::Port,
            UserName | UserId | UserGroupId | UserHome | UserShell | UserFullName => ItemType::User,
            ServiceName | ServicePath | ServiceStatus | ServiceMode | ServiceProgram
            | ServiceArguments | ServiceDescription => ItemType::Service,
            SysHostname | SysOs | SysIpAddress => ItemType::SystemInfo,
            DnsHost | DnsAddress | DnsRecordType => ItemType::DnsEntry,
        }
    }

    /// True when evaluating the field requires reading the file's content.
    pub fn needs_content(self) -> bool {
        matches!(self, Field::FileMd5 | Field::FileSha1 | Field::FileSha256)
    }

    /// The kind of value the collectors give for this field.
    pub fn value_kind(self) -> ValueKind {
        use Field::*;
        match self {
            FileSize | ProcPid | ProcParentPid | PortLocalPort | PortRemotePort | PortPid
            | UserId | UserGroupId => ValueKind::Int,
            FileCreated | FileModified | FileAccessed | FileChanged | ProcStartTime => {
                ValueKind::Time
            }
            ProcKernelTime | ProcUserTime => ValueKind::Duration,
            PortLocalIp | PortRemoteIp | SysIpAddress | DnsAddress => ValueKind::Ip,
            FileMd5 => ValueKind::Digest(ContentType::Md5),
            FileSha1 => ValueKind::Digest(ContentType::Sha1),
            FileSha256 => ValueKind::Digest(ContentType::Sha256),
            _ => ValueKind::Text,
        }
    }

    /// Why `is`, `greater-than` or `less-than` with an operand of `content` type means
    /// nothing for this field, if it does not: such a term would never hold (a silent
    /// "no match" for ever), or, negated, hold on every item (an IP against a size, an
    /// MD5 against a SHA-256 digest). Text conditions compare the value's text and
    /// always mean something.
    pub fn uncomparable_with(self, content: ContentType, condition: Condition) -> Option<String> {
        if !matches!(
            condition,
            Condition::Is | Condition::GreaterThan | Condition::LessThan
        ) {
            return None;
        }
        use ContentType as C;
        let comparable = match (self.value_kind(), content) {
            (_, C::String) => true,
            // Text is parsed as what the operand is, or compared as text with a digest.
            (ValueKind::Text, C::Int | C::Date | C::Ip | C::Md5 | C::Sha1 | C::Sha256) => true,
            (ValueKind::Text, C::Duration) => false,
            (ValueKind::Int, C::Int | C::Duration) => true,
            (ValueKind::Time, C::Int | C::Date) => true,
            (ValueKind::Duration, C::Int | C::Duration) => true,
            (ValueKind::Ip, C::Ip) => true,
            (ValueKind::Digest(algorithm), content) => algorithm == content,
            _ => false,
        };
        (!comparable).then(|| {
            format!(
                "content type '{}' cannot be compared with {}, {}: the term means nothing \
                 there",
                content.name(),
                self.search(),
                self.value_kind().description()
            )
        })
    }
}

/// The kind of value a collector gives for a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// Text (names, paths, command lines…).
    Text,
    /// An integer (sizes, ids, ports).
    Int,
    /// A point in time.
    Time,
    /// A duration in seconds.
    Duration,
    /// An IP address (or a list of them).
    Ip,
    /// A digest of the file's content, in lower-case hex.
    Digest(ContentType),
}

impl ValueKind {
    fn description(self) -> &'static str {
        match self {
            ValueKind::Text => "which is text",
            ValueKind::Int => "which is a number",
            ValueKind::Time => "which is a time",
            ValueKind::Duration => "which is a duration",
            ValueKind::Ip => "which is an IP address",
            ValueKind::Digest(ContentType::Md5) => "which is an MD5 digest",
            ValueKind::Digest(ContentType::Sha1) => "which is a SHA-1 digest",
            ValueKind::Digest(_) => "which is a SHA-256 digest",
        }
    }
}

/// How a term compares the item's value with the indicator's operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Condition {
    /// Equality (or inclusion in an `A TO B` range).
    Is,
    /// Substring.
    Contains,
    /// Prefix.
    StartsWith,
    /// Suffix.
    EndsWith,
    /// Regular expression search.
    Matches,
    /// Item value greater than the operand.
    GreaterThan,
    /// Item value less than the operand.
    LessThan,
}

/// The declared type of an operand (`Content/@type` in OpenIOC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[allow(missing_docs)]
pub enum ContentType {
    String,
    Int,
    Date,
    Duration,
    Md5,
    Sha1,
    Sha256,
    Ip,
}

impl ContentType {
    /// The name OpenIOC writes in `Content/@type`.
    pub fn name(self) -> &'static str {
        match self {
            ContentType::String => "string",
            ContentType::Int => "int",
            ContentType::Date => "date",
            ContentType::Duration => "duration",
            ContentType::Md5 => "md5",
            ContentType::Sha1 => "sha1",
            ContentType::Sha256 => "sha256",
            ContentType::Ip => "IP",
        }
    }
}

/// A parsed operand.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// Text (compared case-insensitively unless the term preserves case).
    Str(String),
    /// An integer.
    Int(i64),
    /// A point in time, and the decimal digits of a second it is written to (zeros
    /// too): an item's time is cut to as many before they compare, so that
    /// `is 2020-01-01T00:00:07Z` holds all through that second and `less-than …07.5Z`
    /// holds at 07.0.
    Date(Timestamp, u8),
    /// A duration, seconds.
    Duration(f64),
    /// A hash, lower-case hex.
    Hash(String),
    /// An IP address.
    Ip(IpAddr),
    /// An inclusive range `A TO B`.
    Range(Box<Operand>, Box<Operand>),
}

/// A value produced by a collector for one field of one item.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum FieldValue {
    /// Text.
    Str(String),
    /// An integer.
    Int(i64),
    /// A point in time, to the nanosecond where the source has it.
    Time(Timestamp),
    /// A duration, seconds.
    Duration(f64),
    /// An IP address.
    Ip(IpAddr),
    /// Several values; a term matches when any of them does.
    List(Vec<FieldValue>),
}

impl FieldValue {
    /// The value as text (dates in ISO 8601); borrowed for text values, which a sweep
    /// compares millions of times.
    pub fn text(&self) -> Cow<'_, str> {
        match self {
            FieldValue::Str(s) => Cow::Borrowed(s),
            FieldValue::Int(i) => Cow::Owned(i.to_string()),
            FieldValue::Time(t) => Cow::Owned(format_datetime(t.secs)),
            FieldValue::Duration(d) => Cow::Owned(d.to_string()),
            FieldValue::Ip(ip) => Cow::Owned(ip.to_string()),
            FieldValue::List(l) => {
                Cow::Owned(l.iter().map(|v| v.text()).collect::<Vec<_>>().join(","))
            }
        }
    }
}

/// One comparison of an indicator.
#[derive(Debug, Clone)]
pub struct Term {
    /// The id of the `IndicatorItem` (OpenIOC) or the comparison text (STIX).
    pub id: String,
    /// The field compared.
    pub field: Field,
    /// The comparison.
    pub condition: Condition,
    /// Inverts the result.
    pub negate: bool,
    /// Compare text case-sensitively.
    pub preserve_case: bool,
    /// Declared operand type.
    pub content_type: ContentType,
    /// The operand as written.
    pub raw: String,
    /// The parsed operand.
    pub operand: Operand,
    /// Compiled regex for [`Condition::Matches`].
    pub regex: Option<Regex>,
    /// A value the item does not have, or one that cannot be compared with the
    /// operand, makes the term false, negated or not. STIX compares only properties an
    /// object has, with constants of their type (`file:ctime >= t'…'` must not hold on a
    /// file system that keeps no birth time, nor `file:name >= 5` on any file, though
    /// `>=` is built as a negated `<`); an OpenIOC `isnot` holds where the value is
    /// missing.
    pub undefined_never_holds: bool,
}

/// A term that no Linux collector can evaluate; reported, never treated as "no match".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnsupportedTerm {
    /// The id of the `IndicatorItem` (or the STIX comparison text).
    pub id: String,
    /// What it looks at (`RegistryItem/Path`, `fileWriteEvent/md5`, `FOLLOWEDBY`…).
    pub search: String,
    /// Why it is not evaluated.
    pub reason: String,
}

/// A node of the indicator's logic tree.
#[derive(Debug, Clone)]
pub enum Node {
    /// All children must hold.
    And(Vec<Node>),
    /// One child must hold.
    Or(Vec<Node>),
    /// Index into [`Ioc::terms`].
    Term(usize),
    /// Index into [`Ioc::unsupported`]; evaluates to "unknown".
    Unsupported(usize),
}

/// The language an indicator was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum IocFormat {
    /// OpenIOC 1.0 (`http://schemas.mandiant.com/2010/ioc`).
    OpenIoc10,
    /// OpenIOC 1.1 (`http://openioc.org/schemas/OpenIOC_1.1`).
    OpenIoc11,
    /// A STIX 2.1 pattern.
    Stix21,
}

/// A compiled indicator.
#[derive(Debug, Clone)]
pub struct Ioc {
    /// Document id (OpenIOC `id`, STIX indicator id).
    pub id: String,
    /// Short description or STIX name.
    pub name: String,
    /// Source language.
    pub format: IocFormat,
    /// The logic tree; children are ordered cheapest first.
    pub root: Node,
    /// Supported comparisons.
    pub terms: Vec<Term>,
    /// Comparisons that cannot be evaluated on Linux.
    pub unsupported: Vec<UnsupportedTerm>,
    /// For a pattern of several observations (STIX), each of which an object of its own
    /// may match: the observations and how they combine. `root` is then the pattern as
    /// one object alone would satisfy it; a sweep judges every observation over all
    /// objects and joins them with [`Observations::formula`].
    pub observations: Option<Observations>,
}

/// The observations of a STIX pattern such as `[file:name = 'a'] AND [file:name = 'b']`,
/// which holds where both files exist: each observation is matched by an object, and
/// those an AND joins by different objects.
#[derive(Debug, Clone)]
pub struct Observations {
    /// Per observation, its comparisons: nodes into the indicator's `terms` and
    /// `unsupported`.
    pub parts: Vec<Node>,
    /// How the observations combine: `Node::Term(k)` is "some object matches observation
    /// `k`", `Node::Unsupported(j)` is the indicator's unsupported term `j` (an operator
    /// that needs event history).
    pub formula: Node,
}

impl Ioc {
    /// Builds an indicator, ordering every node's children so that cheap terms
    /// (names, paths, sizes, times) are evaluated before those needing file content.
    pub fn new(
        id: String,
        name: String,
        format: IocFormat,
        root: Node,
        terms: Vec<Term>,
        unsupported: Vec<UnsupportedTerm>,
    ) -> Ioc {
        let mut ioc = Ioc {
            id,
            name,
            format,
            root,
            terms,
            unsupported,
            observations: None,
        };
        let mut root = std::mem::replace(&mut ioc.root, Node::And(Vec::new()));
        sort_by_cost(&mut root, &ioc.terms);
        ioc.root = root;
        ioc
    }

    /// This indicator with its observations set (see [`Ioc::observations`]).
    pub fn with_observations(mut self, observations: Observations) -> Ioc {
        self.observations = Some(observations);
        self
    }

    /// One standalone indicator per observation (empty without [`Ioc::observations`]):
    /// observation `k` keeps only its own terms, renumbered, and is named after this
    /// indicator with `#observation-{k+1}` appended to its id.
    pub fn observation_parts(&self) -> Vec<Ioc> {
        let Some(obs) = &self.observations else {
            return Vec::new();
        };
        obs.parts
            .iter()
            .enumerate()
            .map(|(k, part)| {
                let mut terms = Vec::new();
                let mut unsupported = Vec::new();
                let root = self.renumbered(part, &mut terms, &mut unsupported);
                Ioc::new(
                    format!("{}#observation-{}", self.id, k + 1),
                    self.name.clone(),
                    self.format,
                    root,
                    terms,
                    unsupported,
                )
            })
            .collect()
    }

    /// `node` with its terms and unsupported terms copied into `terms` and `unsupported`.
    fn renumbered(
        &self,
        node: &Node,
        terms: &mut Vec<Term>,
        unsupported: &mut Vec<UnsupportedTerm>,
    ) -> Node {
        match node {
            Node::Term(i) => {
                terms.push(self.terms[*i].clone());
                Node::Term(terms.len() - 1)
            }
            Node::Unsupported(j) => {
                unsupported.push(self.unsupported[*j].clone());
                Node::Unsupported(unsupported.len() - 1)
            }
            Node::And(c) => Node::And(
                c.iter()
                    .map(|n| self.renumbered(n, terms, unsupported))
                    .collect(),
            ),
            Node::Or(c) => Node::Or(
                c.iter()
                    .map(|n| self.renumbered(n, terms, unsupported))
                    .collect(),
            ),
        }
    }

    /// The item types this indicator has supported terms for.
    pub fn item_types(&self) -> Vec<ItemType> {
        let mut v: Vec<ItemType> = self.terms.iter().map(|t| t.field.item()).collect();
        v.sort();
        v.dedup();
        v
    }

    /// The fields this indicator uses.
    pub fn fields(&self) -> impl Iterator<Item = Field> + '_ {
        self.terms.iter().map(|t| t.field)
    }
}

fn cost(node: &Node, terms: &[Term]) -> u8 {
    match node {
        Node::Term(i) => u8::from(terms[*i].field.needs_content()),
        Node::Unsupported(_) => 0,
        Node::And(c) | Node::Or(c) => c.iter().map(|n| cost(n, terms)).max().unwrap_or(0),
    }
}

fn sort_by_cost(node: &mut Node, terms: &[Term]) {
    if let Node::And(c) | Node::Or(c) = node {
        for child in c.iter_mut() {
            sort_by_cost(child, terms);
        }
        c.sort_by_key(|n| cost(n, terms));
    }
}

fn fold(s: &str, preserve: bool) -> Cow<'_, str> {
    if preserve || (s.is_ascii() && !s.bytes().any(|b| b.is_ascii_uppercase())) {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(s.to_lowercase())
    }
}

/// Orders two texts as their lower-case forms would order, without allocating when
/// both are ASCII (the common case for paths, names and hex digests).
fn cmp_folded(a: &str, b: &str, preserve: bool) -> Ordering {
    if preserve {
        a.cmp(b)
    } else if a.is_ascii() && b.is_ascii() {
        let fold = |c: &u8| c.to_ascii_lowercase();
        a.as_bytes()
            .iter()
            .map(fold)
            .cmp(b.as_bytes().iter().map(fold))
    } else {
        a.to_lowercase().cmp(&b.to_lowercase())
    }
}

/// `contains` / `starts-with` / `ends-with` under the term's case rule.
fn text_condition(condition: Condition, value: &str, operand: &str, preserve: bool) -> bool {
    if !preserve && value.is_ascii() && operand.is_ascii() {
        let (v, o) = (value.as_bytes(), operand.as_bytes());
        return match condition {
            Condition::Contains => {
                o.is_empty() || v.windows(o.len()).any(|w| w.eq_ignore_ascii_case(o))
            }
            Condition::StartsWith => v.len() >= o.len() && v[..o.len()].eq_ignore_ascii_case(o),
            _ => v.len() >= o.len() && v[v.len() - o.len()..].eq_ignore_ascii_case(o),
        };
    }
    let (v, o) = (fold(value, preserve), fold(operand, preserve));
    match condition {
        Condition::Contains => v.contains(o.as_ref()),
        Condition::StartsWith => v.starts_with(o.as_ref()),
        _ => v.ends_with(o.as_ref()),
    }
}

/// Orders an item value against an operand, when they are comparable.
fn compare(value: &FieldValue, op: &Operand, preserve: bool) -> Option<Ordering> {
    match (value, op) {
        (FieldValue::Int(v), Operand::Int(o)) => Some(v.cmp(o)),
        (FieldValue::Int(v), Operand::Duration(o)) => (*v as f64).partial_cmp(o),
        (FieldValue::Time(v), Operand::Date(o, digits)) => Some(v.truncated(*digits).cmp(o)),
        (FieldValue::Time(v), Operand::Int(o)) => Some(v.secs.cmp(o)),
        (FieldValue::Duration(v), Operand::Duration(o)) => v.partial_cmp(o),
        (FieldValue::Duration(v), Operand::Int(o)) => v.partial_cmp(&(*o as f64)),
        (FieldValue::Ip(v), Operand::Ip(o)) => Some(ip_key(*v).cmp(&ip_key(*o))),
        (FieldValue::Str(v), Operand::Int(o)) => crate::value::parse_int(v).map(|v| v.cmp(o)),
        (FieldValue::Str(v), Operand::Ip(o)) => {
            crate::value::parse_ip(v).map(|v| ip_key(v).cmp(&ip_key(*o)))
        }
        (FieldValue::Str(v), Operand::Date(o, digits)) => {
            parse_datetime_precise(v).map(|(v, _)| v.truncated(*digits).cmp(o))
        }
        (v, Operand::Hash(h)) => Some(cmp_folded(&v.text(), h, false)),
        // A number or a time written as a `string` (as some IOC editors write sizes) is
        // compared as what it is: as text, "6" is greater than "100".
        (v, Operand::Str(s)) => {
            let as_what_it_is = match v {
                FieldValue::Int(v) => crate::value::parse_int(s).map(|o| v.cmp(&o)),
                FieldValue::Time(v) => crate::value::cmp_time_text(*v, s),
                _ => None,
            };
            Some(as_what_it_is.unwrap_or_else(|| cmp_folded(&v.text(), s, preserve)))
        }
        _ => None,
    }
}

fn operand_text(op: &Operand) -> Cow<'_, str> {
    match op {
        Operand::Str(s) | Operand::Hash(s) => Cow::Borrowed(s),
        Operand::Int(i) => Cow::Owned(i.to_string()),
        Operand::Date(d, digits) => Cow::Owned(format_timestamp(*d, *digits)),
        Operand::Duration(d) => Cow::Owned(d.to_string()),
        Operand::Ip(ip) => Cow::Owned(ip.to_string()),
        Operand::Range(a, b) => Cow::Owned(format!("{} TO {}", operand_text(a), operand_text(b))),
    }
}

impl Term {
    /// Does the condition hold for one value (before `negate`)? `None` where the value
    /// cannot be compared with the operand (a name that is no number against an `int`,
    /// a size against a date).
    fn test_one(&self, value: &FieldValue) -> Option<bool> {
        if let FieldValue::List(l) = value {
            let mut comparable = l.is_empty();
            for v in l {
                match self.test_one(v) {
                    Some(true) => return Some(true),
                    Some(false) => comparable = true,
                    None => {}
                }
            }
            return comparable.then_some(false);
        }
        let pc = self.preserve_case;
        match self.condition {
            Condition::Is => match &self.operand {
                Operand::Range(a, b) => {
                    let (from, to) = (compare(value, a, pc)?, compare(value, b, pc)?);
                    Some(from != Ordering::Less && to != Ordering::Greater)
                }
                op => compare(value, op, pc).map(|o| o == Ordering::Equal),
            },
            Condition::GreaterThan => {
                compare(value, &self.operand, pc).map(|o| o == Ordering::Greater)
            }
            Condition::LessThan => compare(value, &self.operand, pc).map(|o| o == Ordering::Less),
            Condition::Matches => Some(
                self.regex
                    .as_ref()
                    .is_some_and(|r| r.is_match(&value.text())),
            ),
            Condition::Contains | Condition::StartsWith | Condition::EndsWith => {
                let (value, operand) = (value.text(), operand_text(&self.operand));
                // An extension is held without its dot, and so is an operand written with
                // one (`.exe`), whose dot must then be the one before the extension: as an
                // extension holds no dot, `ends-with .exe` is the extension `exe` itself,
                // and `contains .ex` one that starts with `ex`.
                let condition = match self.condition {
                    c if self.field != Field::FileExtension || !self.raw.starts_with('.') => c,
                    Condition::EndsWith => {
                        return Some(cmp_folded(&value, &operand, pc) == Ordering::Equal)
                    }
                    Condition::Contains => Condition::StartsWith,
                    c => c,
                };
                Some(text_condition(condition, &value, &operand, pc))
            }
        }
    }

    /// Evaluates the term on a value; `None` (the item has no such value) counts as
    /// a failed condition, which `negate` then inverts, unless the term's language
    /// says a missing value never holds ([`Term::undefined_never_holds`]).
    pub fn test(&self, value: Option<&FieldValue>) -> bool {
        match value {
            None if self.undefined_never_holds => false,
            None => self.negate,
            Some(v) => match self.test_one(v) {
                Some(holds) => holds != self.negate,
                // An order that does not exist holds neither way: a name is neither
                // greater than 5 nor "not greater" than it.
                None if self.undefined_never_holds
                    || matches!(self.condition, Condition::GreaterThan | Condition::LessThan) =>
                {
                    false
                }
                // OpenIOC: a value that cannot be read as the operand is not equal to it.
                None => self.negate,
            },
        }
    }
}
