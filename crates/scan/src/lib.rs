//! The Riposte IOC sweep: one pass over a live Linux system evaluating many indicators.
//!
//! Why a dedicated engine: sweeping a fleet for indicators must not cost each device a
//! full hash of its disk. So the sweep loads every indicator first (OpenIOC, STIX,
//! YARA), works out which item types, fields and hash algorithms they need, and then:
//!
//! * collects processes, sockets, users, services, host info and hosts entries once;
//! * walks the file scope in parallel on all cores; looks up each file's size, name and
//!   path (one Aho–Corasick pass for all path tests) in an index of what each indicator
//!   can accept (`FileNecessity`), so hash IOCs with sizes cost one stat per file and
//!   path IOCs one pass over the path, and a hashed file's digests in the set each
//!   indicator needs; evaluates cheap terms (path, name, size, times)
//!   first and reads a file only when a remaining term needs its content — once, for
//!   all hash algorithms and YARA rule sets together;
//! * hashes MD5 and SHA-256 sixteen files at a time per thread ([`multi`], [`md5x16`],
//!   [`sha256x16`]): MD5 with AVX-512 or AVX2, SHA-256 with whichever of SHA-NI (two
//!   streams interleaved), AVX-512 and AVX2 is fastest on this CPU, timed once per
//!   process; one stream of either cannot fill a core;
//! * reports per indicator a verdict (hit, no match, or undetermined when unsupported
//!   terms could change the outcome) and the unsupported terms by id.
//!
//! `host_root` makes a directory stand for the device's `/`; reported paths are the
//! device's own.

pub mod cli;
pub mod items;
pub mod kernel;
pub mod md5x16;
pub mod multi;
pub mod sha256x16;
pub mod walk;

use items::{Algorithms, ContentError, FileItem, HitItem, SimpleItem};
use multi::{Lanes, Source};
use riposte_ioc::eval::{
    evaluate, evaluate_host, evaluate_without_content, FileNecessity, TextNeed, Truth,
};
use riposte_ioc::model::{Condition, Field, ItemType};
use riposte_ioc::yara::YaraRules;
use riposte_ioc::{openioc, stix, Ioc, IocFormat};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use walk::{Excludes, SkipReason, WalkConfig};

pub use riposte_ioc::{ioc_from_detection, DetectedObject, Detection};

/// Errors of a sweep (bad indicators; `--strict` refusals).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An indicator document did not load.
    #[error(transparent)]
    Ioc(#[from] riposte_ioc::Error),
    /// Under strict mode, an indicator uses a term that cannot be evaluated.
    #[error("{origin}: IOC {ioc_id}: unsupported term {term_id} ({search}): {reason}")]
    Unsupported {
        /// Document.
        origin: String,
        /// Indicator id.
        ioc_id: String,
        /// Term id.
        term_id: String,
        /// What the term looks at.
        search: String,
        /// Why it is unsupported.
        reason: String,
    },
    /// Under strict mode, a YARA rule or import the engine refused (elsewhere it is
    /// skipped, with a warning in the report).
    #[error(
        "{origin}: a YARA rule or import did not compile (an error in strict mode): {message}"
    )]
    RefusedRule {
        /// Document.
        origin: String,
        /// Which rule, where, and why.
        message: String,
    },
    /// A STIX document without any indicator (a JSON file of something else).
    #[error(
        "{0}: no STIX indicator in it (give a bundle or an indicator object, or a file \
         holding one pattern)"
    )]
    EmptyDocument(String),
    /// Nothing to look for; what the documents held but set aside, if anything.
    #[error("no indicators given{}", set_aside_note(.0))]
    NoIndicators(Vec<String>),
    /// A scope path does not exist.
    #[error("scope path {0}: {1}")]
    Scope(String, std::io::Error),
    /// An exclusion pattern that could never match.
    #[error("--exclude {0}: {1}")]
    Exclude(String, String),
}

fn set_aside_note(set_aside: &[String]) -> String {
    if set_aside.is_empty() {
        String::new()
    } else {
        format!(
            " to evaluate; set aside: {}",
            riposte_ioc::first_of(set_aside, 5)
        )
    }
}

/// The language of an indicator document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum DocumentKind {
    /// OpenIOC 1.0 / 1.1 XML.
    OpenIoc,
    /// STIX 2.1 bundle, indicator, or bare pattern.
    Stix,
    /// YARA rules.
    Yara,
}

/// One indicator document, as text.
#[derive(Debug, Clone)]
pub struct IocDocument {
    /// Its language.
    pub kind: DocumentKind,
    /// Name used in reports and errors (file name, task id…).
    pub origin: String,
    /// The content.
    pub text: String,
    /// Where a YARA document's `include`s resolve from (the folder of the file it was
    /// read from); `None` refuses them, for documents that came over the network.
    pub include_dir: Option<std::path::PathBuf>,
}

/// Named sets of places to sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
pub enum Preset {
    /// Every local disk file system from `/` (pseudo and network file systems skipped).
    SystemDrives,
    /// Where malware lands and persists: binaries, `/etc`, temp dirs, homes, cron, units.
    CriticalAreas,
}

/// Device paths of the *critical areas* preset.
pub const CRITICAL_AREAS: &[&str] = &[
    "/bin",
    "/sbin",
    "/usr/bin",
    "/usr/sbin",
    "/usr/local/bin",
    "/usr/local/sbin",
    "/etc",
    "/tmp",
    "/var/tmp",
    "/dev/shm",
    "/root",
    "/home",
    "/opt",
    "/var/spool/cron",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
    "/usr/lib/systemd/user",
    "/var/www",
    // Kernel modules, boot loader and kernels, and shared objects an administrator or
    // an intruder installed (`/etc/ld.so.preload` names them): not the packages' own
    // `/usr/lib`, the size of a whole system, which `system-drives` covers.
    "/usr/lib/modules",
    "/lib/modules",
    "/boot",
    "/usr/local/lib",
    // Memory-backed and so often the first place a dropper writes.
    "/run",
];

/// Where to look.
#[derive(Debug, Clone)]
pub struct Scope {
    /// Host directory standing for the device's `/` (usually `/`).
    pub host_root: PathBuf,
    /// Device paths to walk (joined under `host_root`).
    pub paths: Vec<PathBuf>,
    /// Preset paths added to `paths`.
    pub preset: Option<Preset>,
    /// Exclusion globs on device paths (`*.iso`, `/home/*/.cache/**`).
    pub exclude: Vec<String>,
    /// Files larger than this are not read (their content terms fail; counted).
    pub max_file_size: Option<u64>,
    /// Do not cross into other file systems below each path.
    pub one_file_system: bool,
    /// Worker threads for the walk; 0 = all cores.
    pub threads: usize,
    /// Where process and socket tables are read (usually `/proc`); `None` where the
    /// host root is no live system (an image): processes and ports are then not
    /// collected, and terms on them are undetermined rather than "no match".
    pub proc_root: Option<PathBuf>,
    /// Collect processes, ports, users, services, host info and hosts entries.
    pub system_items: bool,
}

/// The reason in [`IocSummary::undetermined_because`] of an indicator with terms this
/// scanner cannot evaluate (its `unsupported`), which a summary that counts those
/// indicators apart can leave out.
pub const UNSUPPORTED_TERMS_REASON: &str =
    "it has terms this scanner cannot evaluate (listed under its unsupported terms)";

impl Scope {
    /// Whether items of type `ty` are collected at all: files always; the others
    /// unless system items are off; processes and ports only from a live system.
    pub fn collects(&self, ty: ItemType) -> bool {
        match ty {
            ItemType::File => true,
            ItemType::Process | ItemType::Port => self.system_items && self.proc_root.is_some(),
            _ => self.system_items,
        }
    }

    /// Whether `field` is read at all: as [`Scope::collects`] its item type, but a
    /// host's addresses come from `/proc` too.
    pub fn collects_field(&self, field: Field) -> bool {
        self.collects(field.item()) && (field != Field::SysIpAddress || self.proc_root.is_some())
    }
}

impl Default for Scope {
    fn default() -> Self {
        Scope {
            host_root: PathBuf::from("/"),
            paths: Vec::new(),
            preset: None,
            exclude: Vec::new(),
            max_file_size: Some(100 << 20),
            one_file_system: false,
            threads: 0,
            proc_root: Some(PathBuf::from("/proc")),
            system_items: true,
        }
    }
}

/// Live counters, readable while a sweep runs (for progress display).
#[derive(Debug, Default)]
pub struct Progress {
    /// Files examined.
    pub files: AtomicU64,
    /// Bytes of files examined (their sizes), where [`Progress::counts_sizes`] says so.
    pub bytes: AtomicU64,
    /// Files whose content was read.
    pub read: AtomicU64,
    /// Set by the sweep before it walks: does `bytes` count the sizes of the files
    /// examined? Not in a sweep whose indicators need no file's size up front, which
    /// does not stat every file (see `walk::FileStatus::Deferred`).
    pub counts_sizes: std::sync::OnceLock<bool>,
}

/// A sweep request.
#[derive(Debug, Clone, Default)]
pub struct SweepRequest {
    /// Indicator documents.
    pub documents: Vec<IocDocument>,
    /// Where to look.
    pub scope: Scope,
    /// Refuse indicators with unsupported terms.
    pub strict: bool,
    /// Set to stop early; the report then has `cancelled = true`.
    pub cancel: Arc<AtomicBool>,
    /// Live counters.
    pub progress: Option<Arc<Progress>>,
}

/// A term that held, for the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MatchedTerm {
    /// Term id.
    pub id: String,
    /// What it looked at (`FileItem/Md5sum`, `yara`).
    pub search: String,
    /// Condition (`is`, `contains`…, or `rule` for YARA); a negated one as OpenIOC 1.0
    /// writes it (`isnot`, `containsnot`), or else marked (`starts-with (negated)`).
    pub condition: String,
    /// Operand as written.
    pub value: String,
}

/// One match of one indicator on one item.
#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    /// Indicator id (YARA: rule name).
    pub ioc_id: String,
    /// Indicator name.
    pub ioc_name: String,
    /// Document it came from.
    pub origin: String,
    /// The item.
    pub item: HitItem,
    /// Terms that held.
    pub matched: Vec<MatchedTerm>,
}

/// Outcome per indicator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// At least one item matched.
    Hit,
    /// Nothing matched and unsupported terms could not have changed that.
    NoMatch,
    /// Nothing matched, but unsupported terms leave the outcome open.
    Undetermined,
}

/// The verdict in the words of the text report's summary (`no match`), not its Rust
/// name (`NoMatch`).
impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Hit => "hit",
            Verdict::NoMatch => "no match",
            Verdict::Undetermined => "undetermined",
        })
    }
}

/// Per-indicator summary.
#[derive(Debug, Clone, Serialize)]
pub struct IocSummary {
    /// Indicator id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Document.
    pub origin: String,
    /// Verdict.
    pub verdict: Verdict,
    /// Supported term count.
    pub supported_terms: usize,
    /// Unsupported terms.
    pub unsupported: Vec<riposte_ioc::UnsupportedTerm>,
    /// Why an undetermined indicator is undetermined, beside its unsupported terms:
    /// the first item on which a term could not be decided, and why; items not
    /// collected; places the walk could not look; a cancelled sweep.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub undetermined_because: Vec<String>,
}

/// A file that could not be read.
#[derive(Debug, Clone, Serialize)]
pub struct Unreadable {
    /// Device path.
    pub path: String,
    /// Error.
    pub error: String,
}

/// Counters.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    /// Regular files examined.
    pub files_seen: u64,
    /// Files whose content was read (hashing and/or YARA).
    pub files_read: u64,
    /// Bytes read for content.
    pub bytes_read: u64,
    /// Hits on files the sweep had not hashed (matched by name, size…), read once more
    /// to give their SHA-256.
    pub hits_hashed: u64,
    /// Bytes read for those.
    pub hits_hashed_bytes: u64,
    /// Files and directories gone between their listing and their opening (removed or
    /// renamed during the sweep): not unreadable, as there was nothing left to look at.
    pub gone: u64,
    /// Skipped paths by reason.
    pub skipped: BTreeMap<String, u64>,
    /// Non-file items collected, by type.
    pub items: BTreeMap<String, u64>,
    /// Wall time, milliseconds.
    pub elapsed_ms: u64,
}

/// What a sweep found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SweepReport {
    /// All hits.
    pub hits: Vec<Hit>,
    /// One entry per indicator (YARA rule sets excluded).
    pub iocs: Vec<IocSummary>,
    /// YARA rules loaded (their hits are in `hits`, with the rule's name as `ioc_id`).
    pub yara_rules: usize,
    /// Files that could not be read (listed, not fatal). Capped at 1000 entries.
    pub unreadable: Vec<Unreadable>,
    /// Counters.
    pub stats: Stats,
    /// Non-fatal problems (skipped YARA rules…).
    pub warnings: Vec<String>,
    /// The sweep was cancelled before finishing.
    pub cancelled: bool,
}

struct Loaded {
    ioc: Ioc,
    origin: String,
}

/// An indicator as the report lists it.
enum Listed {
    /// Swept as it is: its index among the swept indicators.
    Swept(usize),
    /// A pattern of several observations ([`riposte_ioc::Observations`]): each
    /// observation is swept as an indicator of its own (`parts`, indices among the swept
    /// indicators), so that different objects may match them, and joined after.
    Joined {
        pattern: Box<Loaded>,
        parts: Vec<usize>,
    },
}

/// `exclude`, with each pattern written through one of the device's directory links
/// (`aliases`, from [`walk::directory_aliases`]) also written where the walk sees the
/// files: the walk follows no link, so `/lib/modules/*/kernel` holds at
/// `/usr/lib/modules/*/kernel` only so. Only a pattern that names the link as written
/// is rewritten: one that reaches it through a wildcard (`/*/libgcc*`) is not.
pub fn exclusions_through_links(exclude: &[String], aliases: &[(String, String)]) -> Vec<String> {
    let mut all = exclude.to_vec();
    for pattern in exclude {
        for (link, target) in aliases {
            let Some(rest) = pattern.strip_prefix(link.as_str()) else {
                continue;
            };
            let through = format!("{target}{rest}");
            if (rest.is_empty() || rest.starts_with('/')) && !all.contains(&through) {
                all.push(through);
            }
        }
    }
    all
}

/// Rewrites path terms that name a file through one of the device's directory links
/// (`FullPath is /lib/libgcc4.4.so`, `/lib` a link to `usr/lib`) to the path the walk
/// sees it under (`/usr/lib/libgcc4.4.so`): `is` and `starts-with` on the full path or
/// the directory. (`contains` and `ends-with` hold through the link as written; a
/// regular expression, and `starts-with /lib` without its `/`, are left as written.)
fn through_aliases(ioc: &mut Ioc, aliases: &[(String, String)]) {
    use riposte_ioc::model::{Condition, Operand};
    if aliases.is_empty() {
        return;
    }
    for t in &mut ioc.terms {
        if !matches!(t.field, Field::FileFullPath | Field::FilePath)
            || !matches!(t.condition, Condition::Is | Condition::StartsWith)
        {
            continue;
        }
        let Operand::Str(path) = &mut t.operand else {
            continue;
        };
        for (link, target) in aliases {
            let Some(head) = path.get(..link.len()) else {
                continue;
            };
            let same = if t.preserve_case {
                head == link
            } else {
                head.eq_ignore_ascii_case(link)
            };
            let rest = &path[link.len()..];
            // `starts-with /lib` also names `/libroot`, and the link's target prefix
            // (`/usr/lib`) would name `/usr/libexec`: only a whole directory is read
            // through the link.
            let whole = rest.starts_with('/') || rest.is_empty() && t.condition == Condition::Is;
            if same && whole {
                *path = format!("{target}{rest}");
                break;
            }
        }
    }
}

/// The indicators to sweep, with every pattern of several observations split into one
/// indicator per observation, and what the report lists, in the documents' order.
fn observations_apart(loaded: Vec<Loaded>) -> (Vec<Loaded>, Vec<Listed>) {
    let mut swept = Vec::with_capacity(loaded.len());
    let mut listed = Vec::with_capacity(loaded.len());
    for l in loaded {
        let observations = l.ioc.observation_parts();
        if observations.is_empty() {
            listed.push(Listed::Swept(swept.len()));
            swept.push(l);
            continue;
        }
        let parts = (swept.len()..swept.len() + observations.len()).collect();
        swept.extend(observations.into_iter().map(|ioc| Loaded {
            ioc,
            origin: l.origin.clone(),
        }));
        listed.push(Listed::Joined {
            pattern: Box::new(l),
            parts,
        });
    }
    (swept, listed)
}

fn condition_name(c: Condition) -> &'static str {
    match c {
        Condition::Is => "is",
        Condition::Contains => "contains",
        Condition::StartsWith => "starts-with",
        Condition::EndsWith => "ends-with",
        Condition::Matches => "matches",
        Condition::GreaterThan => "greater-than",
        Condition::LessThan => "less-than",
    }
}

/// A term's condition as its author would write it: OpenIOC 1.0's own negations
/// (`isnot`, `containsnot`), elsewhere the condition marked `(negated)` (OpenIOC 1.1's
/// `negate="true"`, and STIX's `!=`, `>=`, `<=` and `NOT`, which are built as negations).
fn condition_text(format: IocFormat, condition: Condition, negate: bool) -> String {
    match (negate, format, condition) {
        (false, ..) => condition_name(condition).to_string(),
        (true, IocFormat::OpenIoc10, Condition::Is) => "isnot".to_string(),
        (true, IocFormat::OpenIoc10, Condition::Contains) => "containsnot".to_string(),
        (true, ..) => format!("{} (negated)", condition_name(condition)),
    }
}

fn matched_terms(ioc: &Ioc, idx: &[usize]) -> Vec<MatchedTerm> {
    idx.iter()
        .map(|i| {
            let t = &ioc.terms[*i];
            MatchedTerm {
                id: t.id.clone(),
                search: t.field.search().to_string(),
                condition: condition_text(ioc.format, t.condition, t.negate),
                value: t.raw.clone(),
            }
        })
        .collect()
}

/// Loads documents into indicators and YARA rule sets.
/// Indicators, YARA rule sets and warnings loaded from a request.
type LoadedSet = (Vec<Loaded>, Vec<YaraRules>, Vec<String>);

/// A named collector of one item type.
type Collector<'a> = (ItemType, &'a str, &'a dyn Fn() -> items::Collected);

fn load(req: &SweepRequest) -> Result<LoadedSet, Error> {
    let mut iocs = Vec::new();
    let mut yara = Vec::new();
    let mut warnings = Vec::new();
    // STIX documents are read together, as one feed: a revocation or newer version of
    // an indicator in one replaces the indicator in another.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.as_secs() as i64);
    let stix_sources: Vec<(&str, &str)> = req
        .documents
        .iter()
        .filter(|d| d.kind == DocumentKind::Stix)
        .map(|d| (d.text.as_str(), d.origin.as_str()))
        .collect();
    let mut stix_documents = stix::parse_documents_noting(&stix_sources, now)?.into_iter();
    for d in &req.documents {
        match d.kind {
            DocumentKind::OpenIoc => iocs.push(Loaded {
                ioc: openioc::parse(&d.text, &d.origin)?,
                origin: d.origin.clone(),
            }),
            DocumentKind::Stix => {
                let Some(document) = stix_documents.next() else {
                    continue;
                };
                // A file given for its indicators that holds none (a JSON file of
                // something else, an empty bundle) is a mistake to name, not a file to
                // leave out without a word while the others are swept.
                if document.iocs.is_empty() && document.set_aside.is_empty() {
                    return Err(Error::EmptyDocument(d.origin.clone()));
                }
                warnings.extend(
                    document
                        .set_aside
                        .iter()
                        .map(|w| format!("{}: {w}", d.origin)),
                );
                for ioc in document.iocs {
                    iocs.push(Loaded {
                        ioc,
                        origin: d.origin.clone(),
                    })
                }
            }
            DocumentKind::Yara => {
                let includes = match &d.include_dir {
                    Some(dir) => riposte_ioc::yara::Includes::RelativeTo(dir),
                    None => riposte_ioc::yara::Includes::Refused,
                };
                let r = YaraRules::compile(&d.text, &d.origin, includes)?;
                if let Some(w) = r.warnings().first().filter(|_| req.strict) {
                    return Err(Error::RefusedRule {
                        origin: d.origin.clone(),
                        message: w.clone(),
                    });
                }
                warnings.extend(r.warnings().iter().map(|w| format!("{}: {w}", d.origin)));
                yara.push(r);
            }
        }
    }
    if req.strict {
        for l in &iocs {
            if let Some(u) = l.ioc.unsupported.first() {
                return Err(Error::Unsupported {
                    origin: l.origin.clone(),
                    ioc_id: l.ioc.id.clone(),
                    term_id: u.id.clone(),
                    search: u.search.clone(),
                    reason: u.reason.clone(),
                });
            }
        }
    }
    if iocs.is_empty() && yara.is_empty() {
        return Err(Error::NoIndicators(warnings));
    }
    Ok((iocs, yara, warnings))
}

/// The count in [`Stats::skipped`] of a hit left without its SHA-256, by why.
fn hit_unhashed(why: &ContentError) -> String {
    match why {
        ContentError::TooLarge => "hit's SHA-256: larger than max file size".to_string(),
        ContentError::Gone => "hit's SHA-256: gone during the sweep".to_string(),
        ContentError::Unreadable(e) => format!("hit's SHA-256: {e}"),
        ContentError::Cancelled => "hit's SHA-256: the sweep was cancelled".to_string(),
    }
}

fn skip_name(r: SkipReason) -> &'static str {
    match r {
        SkipReason::Excluded => "excluded",
        SkipReason::PseudoFs => "pseudo or network file system",
        SkipReason::OtherFs => "other file system",
        SkipReason::NotRegular => "not a regular file",
    }
}

/// The host path of a device path under `host_root` (`/` is `host_root` itself; a
/// relative path is taken from the device's `/`).
pub fn host_path(host_root: &Path, device: &Path) -> PathBuf {
    let rel = device.strip_prefix("/").unwrap_or(device);
    if rel.as_os_str().is_empty() {
        host_root.to_path_buf()
    } else {
        host_root.join(rel)
    }
}

/// Where a sweep of the device at `host_root` reads processes and sockets: this
/// machine's `/proc` when the device is this machine; the device's own where one is
/// mounted in its root (a live system mounted whole, `/proc` with it); none for an
/// image, whose processes are not this machine's.
pub fn live_proc(host_root: &Path) -> Option<PathBuf> {
    let this_machine = std::fs::canonicalize(host_root).is_ok_and(|r| r == Path::new("/"));
    if this_machine {
        return Some(PathBuf::from("/proc"));
    }
    let proc = host_root.join("proc");
    // A link there (to this machine's `/proc`, say) is not a /proc mounted in the image.
    let mounted_here = std::fs::symlink_metadata(&proc).is_ok_and(|m| m.is_dir());
    let procfs = crate::walk::fs_magic(&proc) == Some(crate::walk::PROC_MAGIC);
    (mounted_here && procfs).then_some(proc)
}

/// The host paths a scope walks, and the host directories never entered.
pub fn scope_roots(scope: &Scope) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut device: Vec<PathBuf> = scope.paths.clone();
    match scope.preset {
        Some(Preset::SystemDrives) => device.push(PathBuf::from("/")),
        Some(Preset::CriticalAreas) => device.extend(CRITICAL_AREAS.iter().map(PathBuf::from)),
        None => {}
    }
    let hr = &scope.host_root;
    let excludes = walk::Excludes::new(&scope.exclude);
    let excluded_as_named = |d: &Path| {
        !excludes.is_empty() && excludes.matches(&riposte_model::path_text::encode(d.as_os_str()))
    };
    let mut roots: Vec<PathBuf> = Vec::new();
    let mut identities: Vec<Option<(u64, u64)>> = Vec::new();
    for d in device {
        // The walk follows no link, so a root is walked where its links lead: on a merged
        // `/usr` the preset's `/bin` is `/usr/bin`, and walked as the link it is, it
        // would be one entry, skipped, while `/usr/bin`, the same directory, was dropped
        // as a repeat of it. Under another root, a link on the way is the device's
        // (`walk::resolve_in_root`): a preset's `/var/tmp` in an image must not lead to
        // the host's. A path excluded as named stays so, and the walk leaves it out.
        let excluded = excluded_as_named(&d);
        let d = if excluded {
            d
        } else if hr == Path::new("/") {
            std::fs::canonicalize(&d).unwrap_or(d)
        } else {
            walk::resolve_in_root(hr, &d).unwrap_or(d)
        };
        let host = host_path(hr, &d);
        if scope.preset == Some(Preset::CriticalAreas)
            && !host.exists()
            && !scope.paths.contains(&d)
        {
            continue;
        }
        // One directory reached by two paths (`/lib/systemd/system` and
        // `/usr/lib/systemd/system` where `/lib` links to `usr/lib`) is swept once,
        // under the first.
        // One left out does not count: another path to its directory is still swept.
        let identity = std::fs::metadata(&host)
            .ok()
            .filter(|_| !excluded)
            .map(|m| {
                use std::os::unix::fs::MetadataExt;
                (m.dev(), m.ino())
            });
        if !roots.contains(&host)
            && !identities
                .iter()
                .any(|seen| identity.is_some() && *seen == identity)
        {
            identities.push(identity);
            roots.push(host);
        }
    }
    let mut skip: Vec<PathBuf> = ["proc", "sys", "dev"].iter().map(|p| hr.join(p)).collect();
    if hr == Path::new("/") {
        // The mounts of this process's own namespace: those the walk meets.
        let own = Path::new("/proc");
        skip.extend(walk::mounts_of_type(own, hr, walk::PSEUDO_FS));
        if scope.preset == Some(Preset::SystemDrives) {
            skip.extend(walk::mounts_of_type(own, hr, walk::NETWORK_FS));
        }
    }
    // An explicitly requested root is walked even if it lies in a skipped area (say
    // `/dev/shm`, a tmpfs), but not if it is itself on a pseudo file system (`/proc`,
    // `/sys/kernel`): reading `/proc/<pid>/pagemap` alone would never end.
    // So too under another root: a preset's `/root -> /proc` in an image, its `proc`
    // mounted, is no place to sweep.
    skip.retain(|s| !roots.contains(s));
    skip.extend(roots.iter().filter(|r| walk::on_pseudo_fs(r)).cloned());
    let roots = without_nested(roots, &skip, scope.one_file_system);
    (roots, skip)
}

/// `roots` without those another root's walk reaches anyway, so that no file is swept
/// twice (`riposte scan /etc /etc/ssh`): a root inside another is dropped unless a
/// skipped directory lies between them or, on one file system, they are on different
/// ones (the outer walk would then not enter it).
fn without_nested(roots: Vec<PathBuf>, skip: &[PathBuf], one_file_system: bool) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let device = |p: &Path| std::fs::symlink_metadata(p).map(|m| m.dev()).ok();
    let reached_from = |outer: &Path, inner: &Path| {
        inner != outer
            && inner.starts_with(outer)
            && !skip
                .iter()
                .any(|s| s.starts_with(outer) && s != outer && inner.starts_with(s))
            && (!one_file_system || device(outer).is_some_and(|d| device(inner) == Some(d)))
    };
    roots
        .iter()
        .filter(|r| !roots.iter().any(|outer| reached_from(outer, r)))
        .cloned()
        .collect()
}

/// Runs a sweep: loads the indicators, collects items, walks the scope, and reports.
/// Largest file content (read for YARA) handed to the hashing lanes from memory.
const MAX_LANE_BUFFER: usize = 1 << 20;

/// A file waiting in the hashing lanes, with what its evaluation needs.
struct LaneJob {
    path: PathBuf,
    meta: walk::FileMeta,
    to_evaluate: Vec<usize>,
    /// YARA matches, when the rules read the file first.
    yara_hits: Vec<(usize, Vec<String>)>,
    /// The YARA read already counted this file as read.
    counted: bool,
}

/// Adds a file's size to the progress's bytes when dropped: when the sweep is done with
/// the file, whichever way it leaves (`progress` is cleared where the hashing lanes take
/// the file: they count its bytes as they read them).
struct BytesDone<'a> {
    progress: Option<&'a Progress>,
    size: u64,
}

impl Drop for BytesDone<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.progress {
            p.bytes.fetch_add(self.size, Ordering::Relaxed);
        }
    }
}

/// What each walk thread keeps between files.
struct SweepWorker {
    /// Its multi-file hashing lanes, where they are worth it.
    lanes: ThreadLanes,
    files_seen: u64,
}

/// A walk thread's multi-file hashing lanes, set up when its first file needs them: a
/// sweep whose hash indicators are narrowed by size hashes a handful of files, and
/// should not pay for a megabyte of arena per thread and the timing of the SHA-256
/// kernels ([`sha256x16::preferred`]) before its first file.
enum ThreadLanes {
    /// Not worth it for these algorithms on this CPU, or they could not be set up.
    Unused,
    /// Worth it, and not needed yet.
    NotYet,
    Ready(Box<Lanes<LaneJob>>),
}

impl ThreadLanes {
    /// The lanes, set up with `make` the first time; `None` where they are unused.
    fn get(
        &mut self,
        make: impl FnOnce() -> Option<Lanes<LaneJob>>,
    ) -> Option<&mut Lanes<LaneJob>> {
        if let ThreadLanes::NotYet = self {
            *self = make().map_or(ThreadLanes::Unused, |l| ThreadLanes::Ready(Box::new(l)));
        }
        match self {
            ThreadLanes::Ready(lanes) => Some(lanes),
            ThreadLanes::Unused | ThreadLanes::NotYet => None,
        }
    }
}

/// Hashes the sizes [`Candidates::by_size`] is keyed by. Every file of a sweep is looked
/// up there, and SipHash was about 2 % of a hash + size sweep's own work. Its resistance
/// to collisions is not needed: the keys are the sizes the indicators name, so a file's
/// size can collide with at most those few.
#[derive(Default)]
struct SizeHasher(u64);

impl std::hash::Hasher for SizeHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing: the product's high bits depend on every bit of the size.
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        // hashbrown takes the bucket from the low bits and a tag from the top seven.
        self.0.rotate_left(32)
    }
}

/// Hashes the names and path parts the text indexes are keyed by (FNV-1a). As with
/// [`SizeHasher`], every file is looked up there, SipHash was a few per cent of a name
/// and path sweep, and its resistance is not needed: the keys are the indicators'
/// operands, so a crafted file name can collide with at most those few.
struct TextHasher(u64);

impl Default for TextHasher {
    fn default() -> Self {
        TextHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for TextHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A map keyed by names or path parts, hashed with [`TextHasher`].
type TextMap<V> = HashMap<String, V, std::hash::BuildHasherDefault<TextHasher>>;

/// Index from a file's size, name and path to the file indicators that may hold on
/// it, and from its digests to those that still may once it is hashed.
struct Candidates {
    by_size: HashMap<u64, Vec<usize>, std::hash::BuildHasherDefault<SizeHasher>>,
    by_name: TextMap<Vec<usize>>,
    /// Constrained by both: the size index finds them, the name is checked after.
    names_of: HashMap<usize, FileNecessity>,
    always: Vec<usize>,
    /// Per indicator, the digests a file must have one of, where its terms say so.
    digests_of: HashMap<usize, FileNecessity>,
    /// Per indicator: has a term on file content (a hash).
    needs_content: Vec<bool>,
    /// Per indicator: every term is on file content, so without the content it is
    /// unknown on any file (the sweep need not evaluate it to know it must hash).
    content_only: Vec<bool>,
    /// Indicators that need one of a few tests on the path (and no size or name).
    by_text: TextIndex,
    /// Where device paths start on the host, for the text index.
    host_root: PathBuf,
}

/// The indicators using one needle, each with its condition.
type NeedleUsers = Vec<(Condition, usize)>;

/// One field's automaton over its substring needles, and each needle's users (by
/// pattern id).
struct FieldAutomaton {
    field: Field,
    automaton: aho_corasick::AhoCorasick,
    users: Vec<NeedleUsers>,
}

/// The path tests of the indicators that need one ([`FileNecessity::texts`]), indexed
/// so that a file's path is matched against all of them at once: `is` tests by value,
/// the substring tests of each field by one Aho–Corasick automaton. An indicator none
/// of whose tests holds on a file is false on it without evaluation.
#[derive(Default)]
struct TextIndex {
    /// Indicators indexed here: all of them are candidates on a path that is not ASCII,
    /// since Unicode case folding can make a non-ASCII path match an ASCII operand.
    iocs: Vec<usize>,
    /// Per field, lower-cased value → indicators with an `is` test of it (looked up
    /// with the file's text as it is, without a copy).
    is: BTreeMap<Field, TextMap<Vec<usize>>>,
    /// Per field, the automaton of its `contains` / `starts-with` / `ends-with` needles
    /// and, per needle, the (condition, indicator) pairs that use it.
    substrings: Vec<FieldAutomaton>,
}

impl TextIndex {
    /// The index of `needs` (indicator, its tests), and the indicators it could not
    /// index (to be evaluated on every file).
    fn new(needs: &[(usize, BTreeSet<TextNeed>)]) -> (Self, Vec<usize>) {
        let mut index = TextIndex::default();
        let mut unindexed = Vec::new();
        let mut needles: BTreeMap<Field, BTreeMap<&str, NeedleUsers>> = BTreeMap::new();
        for (ioc, tests) in needs {
            index.iocs.push(*ioc);
            for t in tests {
                if t.condition == Condition::Is {
                    index
                        .is
                        .entry(t.field)
                        .or_default()
                        .entry(t.needle.clone())
                        .or_default()
                        .push(*ioc);
                } else {
                    needles
                        .entry(t.field)
                        .or_default()
                        .entry(t.needle.as_str())
                        .or_default()
                        .push((t.condition, *ioc));
                }
            }
        }
        for (field, by_needle) in needles {
            let (patterns, users): (Vec<&str>, Vec<_>) = by_needle.into_iter().unzip();
            match aho_corasick::AhoCorasick::new(&patterns) {
                Ok(automaton) => index.substrings.push(FieldAutomaton {
                    field,
                    automaton,
                    users,
                }),
                // Too many needles for one automaton: those indicators are evaluated on
                // every file instead (sound, only slower).
                Err(_) => unindexed.extend(users.into_iter().flatten().map(|(_, ioc)| ioc)),
            }
        }
        (index, unindexed)
    }

    /// Adds to `out` the indicators whose path tests may hold on `device_path`.
    fn candidates(&self, device_path: &str, out: &mut Vec<usize>) {
        // Not indexed: a path that is not ASCII (Unicode case folding may make it match),
        // and one with an escape, whose characters terms compare (`matching_text`).
        if !device_path.is_ascii() || device_path.contains('\\') {
            out.extend(&self.iocs);
            return;
        }
        let lower = device_path.to_ascii_lowercase();
        let fields = items::PathFields::of(&lower);
        for (field, value) in [
            (Field::FileFullPath, Some(fields.full)),
            (Field::FilePath, Some(fields.dir)),
            (Field::FileName, Some(fields.name)),
            (Field::FileExtension, fields.extension),
        ] {
            let Some(value) = value else { continue };
            if let Some(v) = self.is.get(&field).and_then(|by_value| by_value.get(value)) {
                out.extend(v);
            }
            for fa in self.substrings.iter().filter(|fa| fa.field == field) {
                for m in fa.automaton.find_overlapping_iter(value) {
                    for &(condition, ioc) in &fa.users[m.pattern().as_usize()] {
                        let holds = match condition {
                            Condition::StartsWith => m.start() == 0,
                            Condition::EndsWith => m.end() == value.len(),
                            _ => true,
                        };
                        if holds {
                            out.push(ioc);
                        }
                    }
                }
            }
        }
    }
}

impl Candidates {
    fn new(iocs: &[Loaded], file_iocs: &[usize], host_root: &Path) -> Self {
        let mut text_needs = Vec::new();
        let mut c = Candidates {
            by_size: HashMap::default(),
            by_name: TextMap::default(),
            names_of: HashMap::new(),
            always: Vec::new(),
            digests_of: HashMap::new(),
            needs_content: iocs
                .iter()
                .map(|l| l.ioc.fields().any(|f| f.needs_content()))
                .collect(),
            content_only: iocs
                .iter()
                .map(|l| !l.ioc.terms.is_empty() && l.ioc.fields().all(|f| f.needs_content()))
                .collect(),
            by_text: TextIndex::default(),
            host_root: host_root.to_path_buf(),
        };
        for &i in file_iocs {
            let need = FileNecessity::of(&iocs[i].ioc);
            if need.digests.is_some() {
                c.digests_of.insert(i, need.clone());
            }
            match (&need.sizes, &need.names) {
                (Some(sizes), names) => {
                    for s in sizes {
                        c.by_size.entry(*s).or_default().push(i);
                    }
                    if names.is_some() {
                        c.names_of.insert(i, need);
                    }
                }
                (None, Some(names)) => {
                    for n in names {
                        c.by_name.entry(n.clone()).or_default().push(i);
                    }
                }
                (None, None) => match need.texts {
                    // An empty needle holds on every path: nothing to index.
                    Some(t) if !t.is_empty() && t.iter().all(|n| !n.needle.is_empty()) => {
                        text_needs.push((i, t))
                    }
                    // No test can hold: the indicator is false on every file.
                    Some(t) if t.is_empty() => {}
                    _ => c.always.push(i),
                },
            }
        }
        let (by_text, unindexed) = TextIndex::new(&text_needs);
        c.by_text = by_text;
        c.always.extend(unindexed);
        c.always.sort_unstable();
        c.always.dedup();
        c
    }

    /// The indicators to evaluate on a file, in load order.
    fn for_file(&self, size: u64, path: &Path) -> Vec<usize> {
        let mut out = self.always.clone();
        // Spelt as terms compare it (`matching_text`), so that the lookups agree with
        // the evaluation.
        let lower_name = || {
            path.file_name()
                .map(|n| {
                    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(n);
                    if bytes.iter().all(|&b| b == b' ' || b.is_ascii_graphic())
                        && !bytes.contains(&b'\\')
                    {
                        // Printable ASCII without a backslash: text as it is, which the
                        // general way below would copy twice to the same result.
                        String::from_utf8(bytes.to_ascii_lowercase()).unwrap_or_default()
                    } else {
                        riposte_model::path_text::matching_text(&riposte_model::path_text::encode(
                            n,
                        ))
                        .to_lowercase()
                    }
                })
                .unwrap_or_default()
        };
        if let Some(v) = self.by_size.get(&size) {
            out.extend(v.iter().filter(|i| {
                self.names_of
                    .get(i)
                    .is_none_or(|need| need.admits(size, lower_name))
            }));
        }
        if !self.by_name.is_empty() {
            if let Some(v) = self.by_name.get(&lower_name()) {
                out.extend(v);
            }
        }
        if !self.by_text.iocs.is_empty() {
            let device_path = walk::device_path(&self.host_root, path);
            self.by_text.candidates(&device_path, &mut out);
        }
        if out.len() > 1 {
            out.sort_unstable();
            out.dedup();
        }
        out
    }

    /// Can indicator `ioc` hold on a file with these digests (every algorithm the
    /// sweep computes)? Lets a file be judged with one set lookup per indicator.
    fn admits_digests(&self, ioc: usize, digests: &items::Digests) -> bool {
        self.digests_of.get(&ioc).is_none_or(|need| {
            need.admits_digests(
                [digests.md5(), digests.sha1(), digests.sha256()]
                    .into_iter()
                    .flatten(),
            )
        })
    }
}

/// Descriptors one sweep thread holds at most: the directory it lists, a file in each
/// of its lanes, the file being pushed into them and the one the walk just opened.
const DESCRIPTORS_PER_THREAD: u64 = md5x16::LANES as u64 + 3;

/// This process's soft limit on open descriptors (`RLIMIT_NOFILE`), if it has one.
fn open_files_limit() -> Option<u64> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    let r = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) };
    (r == 0 && rl.rlim_cur != libc::RLIM_INFINITY).then_some(rl.rlim_cur)
}

/// How many of `wanted` sweep threads fit in the descriptor limit, leaving a quarter of
/// it to the rest of the process (the agent's connections and databases): past it every
/// open fails with `EMFILE`, and files would be reported unreadable instead of swept.
/// The usual soft limit, 1024, allows 40 threads.
fn threads_within(wanted: usize, open_files_limit: Option<u64>) -> usize {
    let Some(limit) = open_files_limit else {
        return wanted.max(1);
    };
    let fit = (limit - limit / 4) / DESCRIPTORS_PER_THREAD;
    wanted
        .min(usize::try_from(fit).unwrap_or(usize::MAX))
        .max(1)
}

pub fn sweep(request: &SweepRequest) -> Result<SweepReport, Error> {
    let start = std::time::Instant::now();
    for pattern in &request.scope.exclude {
        walk::check_exclude(pattern).map_err(|why| Error::Exclude(pattern.clone(), why))?;
    }
    let (mut loaded, yara, warnings) = load(request)?;
    let aliases = walk::directory_aliases(&request.scope.host_root);
    for l in &mut loaded {
        through_aliases(&mut l.ioc, &aliases);
    }
    let (iocs, listed) = observations_apart(loaded);
    let scope = &Scope {
        exclude: exclusions_through_links(&request.scope.exclude, &aliases),
        ..request.scope.clone()
    };
    let mut report = SweepReport {
        warnings,
        yara_rules: yara.iter().map(YaraRules::rule_count).sum(),
        ..Default::default()
    };
    let needs = |t: ItemType| iocs.iter().any(|l| l.ioc.item_types().contains(&t));
    let names = items::user_names(&scope.host_root);

    // 1. Non-file items, only the types some indicator needs.
    let mut collected: Vec<SimpleItem> = Vec::new();
    // Item types whose source is not there at all (an image without `etc/passwd`):
    // terms on them are unknown, not false, as where they are not collected.
    let mut sourceless: Vec<(ItemType, &str)> = Vec::new();
    // Item types collected in part (a unit directory that could not be read), each with
    // the places not read: a term no collected item satisfies is unknown, not false.
    let mut collected_in_part: Vec<(ItemType, String, Vec<String>)> = Vec::new();
    if scope.system_items {
        let hr = &scope.host_root;
        // Without a live system, the image's own (most likely empty) `proc`.
        let image_proc = hr.join("proc");
        let pr = scope.proc_root.as_deref().unwrap_or(&image_proc);
        let kinds: [Collector; 6] = [
            (ItemType::Process, "processes", &|| {
                items::processes(pr, &names).into()
            }),
            (ItemType::Port, "ports", &|| items::ports(pr).into()),
            (ItemType::User, "users", &|| items::users(hr).into()),
            (ItemType::Service, "services", &|| items::services(hr)),
            (ItemType::SystemInfo, "system", &|| {
                items::system_info(hr, scope.proc_root.as_deref()).into()
            }),
            (ItemType::DnsEntry, "hosts entries", &|| {
                items::dns_entries(hr).into()
            }),
        ];
        for (ty, label, f) in kinds {
            let source = match ty {
                ItemType::User => Some("etc/passwd"),
                ItemType::DnsEntry => Some("etc/hosts"),
                _ => None,
            };
            // Looked for in the device's tree, and read, as the collectors read it: one
            // there but closed to the sweep says nothing either.
            if let Some(source) = source.filter(|s| crate::walk::read_device_bytes(hr, s).is_err())
            {
                if needs(ty) {
                    sourceless.push((ty, source));
                }
                continue;
            }
            if needs(ty) && scope.collects(ty) {
                let items::Collected {
                    items: mut v,
                    unread,
                } = f();
                if !unread.is_empty() {
                    let more = match unread.len() {
                        1..=3 => String::new(),
                        n => format!("; and {} more", n - 3),
                    };
                    // SAFETY: geteuid has no preconditions.
                    let as_root = unsafe { libc::geteuid() } == 0;
                    report.warnings.push(format!(
                        "{label}: not every place they are kept in could be read, so what \
                         is there is not known: {}{more}{}",
                        unread[..unread.len().min(3)].join("; "),
                        if as_root {
                            ""
                        } else {
                            " (a sweep as root reads them)"
                        }
                    ));
                    collected_in_part.push((ty, label.to_string(), unread));
                }
                // An image's addresses are not in it: unknown, not "none".
                if ty == ItemType::SystemInfo && !scope.collects_field(Field::SysIpAddress) {
                    for item in &mut v {
                        item.values.remove(&Field::SysIpAddress);
                        item.undetermined.push(Field::SysIpAddress);
                    }
                }
                report.stats.items.insert(label.to_string(), v.len() as u64);
                collected.extend(v);
            }
        }
    }

    // 2. Existential truth of each non-file term: does any collected item satisfy it?
    //    File terms start false and are set by the walk.
    let exists: Vec<Vec<AtomicBool>> = iocs
        .iter()
        .map(|l| {
            l.ioc
                .terms
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let ty = t.field.item();
                    let any = ty != ItemType::File
                        && collected.iter().filter(|it| it.ty == ty).any(|it| {
                            let mut it = it.clone();
                            riposte_ioc::eval::eval_term(&l.ioc, i, &mut it)
                        });
                    AtomicBool::new(any)
                })
                .collect()
        })
        .collect();
    let saw_unknown: Vec<AtomicBool> = iocs.iter().map(|_| AtomicBool::new(false)).collect();
    // The first item each indicator could not be decided on, and why: said with the
    // verdict, so that "undetermined" comes with something to act on.
    let first_unknown: Vec<std::sync::OnceLock<String>> =
        iocs.iter().map(|_| std::sync::OnceLock::new()).collect();
    // Without system items (`Scope::system_items` off) nothing was collected to test a
    // process, port, user, service, host or hosts-entry term on: such a term is unknown,
    // not false, so the indicator is undetermined rather than "no match".
    // Where the walk could not look somewhere (a directory it could not list, a file it
    // could not stat), a file term no file was found to satisfy is unknown, not false:
    // what it looks for may be just there. A file gone since its listing is not that.
    let walk_incomplete = AtomicBool::new(false);
    let truth_of = |ioc: usize| {
        let e = &exists[ioc];
        let terms = &iocs[ioc].ioc.terms;
        let walk_incomplete = &walk_incomplete;
        let sourceless = &sourceless;
        let collected_in_part = &collected_in_part;
        move |t: usize| {
            let ty = terms[t].field.item();
            let is_file = ty == ItemType::File;
            let found = e[t].load(Ordering::Relaxed);
            if !scope.collects_field(terms[t].field)
                || sourceless.iter().any(|(of, _)| *of == ty)
                || is_file && !found && walk_incomplete.load(Ordering::Relaxed)
                || !found && collected_in_part.iter().any(|(of, _, _)| *of == ty)
            {
                Truth::Unknown
            } else {
                Truth::from(found)
            }
        }
    };

    // 3. The file walk.
    let file_iocs: Vec<usize> = (0..iocs.len())
        .filter(|i| iocs[*i].ioc.item_types().contains(&ItemType::File))
        .collect();
    let mut alg = Algorithms::default();
    for l in &iocs {
        for f in l.ioc.fields() {
            match f {
                riposte_ioc::Field::FileMd5 => alg.md5 = true,
                riposte_ioc::Field::FileSha1 => alg.sha1 = true,
                riposte_ioc::Field::FileSha256 => alg.sha256 = true,
                _ => {}
            }
        }
    }
    // Which indicators a file of a given size or name can still satisfy; the rest are
    // false on it without evaluation (see `FileNecessity`).
    let candidates = Candidates::new(&iocs, &file_iocs, &scope.host_root);
    let (roots, skip_dirs) = scope_roots(scope);
    let hits = Mutex::new(Vec::<Hit>::new());
    let unreadable = Mutex::new(Vec::<Unreadable>::new());
    let skipped = Mutex::new(BTreeMap::<String, u64>::new());
    // The swept indicators that are observations of a pattern (see `Listed::Joined`).
    let part_ids: std::collections::HashSet<(&str, &str)> = listed
        .iter()
        .filter_map(|entry| match entry {
            Listed::Joined { parts, .. } => Some(parts),
            Listed::Swept(_) => None,
        })
        .flatten()
        .map(|&i| (iocs[i].ioc.id.as_str(), iocs[i].origin.as_str()))
        .collect();
    let files_seen = AtomicU64::new(0);
    let files_read = AtomicU64::new(0);
    let bytes_read = AtomicU64::new(0);
    let hits_hashed = AtomicU64::new(0);
    let hits_hashed_bytes = AtomicU64::new(0);
    // The SHA-256 of a hit's file (host path and identity at the walk's stat), which
    // lets an action refuse an object changed since. Not past the scope's maximum size:
    // a hit by name on a 4 GB image must not read it (the action then goes without the
    // check). A hit left without one is counted with the reason, as the action on it
    // will go without the check.
    let hash_hit = |host: &Path, dev: u64, ino: u64| match items::sha256_of_inode(
        host,
        dev,
        ino,
        scope.max_file_size,
    ) {
        Ok((sha256, size)) => {
            hits_hashed.fetch_add(1, Ordering::Relaxed);
            hits_hashed_bytes.fetch_add(size, Ordering::Relaxed);
            Some(sha256)
        }
        Err(why) => {
            *skipped
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(hit_unhashed(&why))
                .or_default() += 1;
            None
        }
    };
    let unreadable_count = AtomicU64::new(0);
    let gone_count = AtomicU64::new(0);
    if !roots.is_empty() && (!file_iocs.is_empty() || !yara.is_empty()) {
        let excludes = Excludes::new(&scope.exclude);
        let threads = if scope.threads == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            scope.threads
        };
        let threads = threads_within(threads, open_files_limit());
        // Where every file is read (YARA, or an indicator of hashes alone that no
        // size narrows), the walk opens each file to stat it, instead of a stat by
        // name and then an open: one path lookup per file instead of two. Where no
        // indicator is looked up by size, a file's status is not needed to know which
        // indicators it can satisfy: only the files that some indicator's name or path
        // tests select (or every file, for an indicator no test narrows) are stated,
        // before they are evaluated; the stat is most of the cost of such a sweep.
        let file_status = if !yara.is_empty()
            || candidates
                .always
                .iter()
                .any(|&i| candidates.content_only[i])
        {
            walk::FileStatus::Opened
        } else if candidates.by_size.is_empty() {
            walk::FileStatus::Deferred
        } else {
            walk::FileStatus::ByName
        };
        let deferred = file_status == walk::FileStatus::Deferred;
        if let Some(p) = &request.progress {
            let _ = p.counts_sizes.set(!deferred);
        }
        let cfg = WalkConfig {
            host_root: &scope.host_root,
            excludes: &excludes,
            skip_dirs: &skip_dirs,
            one_file_system: scope.one_file_system,
            threads,
            cancel: &request.cancel,
            file_status,
        };
        let note_unreadable = |path: &Path, err: String| {
            unreadable_count.fetch_add(1, Ordering::Relaxed);
            let mut u = unreadable.lock().unwrap_or_else(|e| e.into_inner());
            if u.len() < 1000 {
                u.push(Unreadable {
                    path: walk::device_path(&scope.host_root, path),
                    error: err,
                });
            }
        };
        // A path the walk listed and could not open or stat: gone since (counted), or
        // unreadable (listed).
        let note_failure = |path: &Path, err: &std::io::Error| {
            if items::gone(err) {
                gone_count.fetch_add(1, Ordering::Relaxed);
            } else {
                note_unreadable(path, err.to_string())
            }
        };
        let count_skip = |reason: &str| {
            *skipped
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(reason.to_string())
                .or_default() += 1;
        };
        // Evaluates the candidate indicators on one file whose content, if any was
        // needed, has been read (YARA) or hashed (the lanes), and records the outcome.
        // A file whose exact size an indicator names is hashed whatever its size: that
        // indicator has narrowed the sweep to files of the size already (an 800 MB
        // object a detection named by its hashes and size must be found again).
        let max_size_for = |size: u64| {
            if candidates.by_size.contains_key(&size) {
                None
            } else {
                scope.max_file_size
            }
        };
        let judge = |path: &Path,
                     meta: &walk::FileMeta,
                     entry: Option<&walk::FileEntry>,
                     to_evaluate: &[usize],
                     content: Option<Vec<u8>>,
                     yara_hits: Vec<(usize, Vec<String>)>,
                     digests: Option<Result<items::Digests, ContentError>>,
                     counted: bool| {
            // `counted`: the read was already counted (and any error noted) by the
            // YARA read that supplied the bytes.
            let counted = counted || content.is_some();
            // Most files hashed for digest indicators have none of their digests: they
            // are false without evaluation (see `FileNecessity`), and cost no path text.
            let evaluated = match &digests {
                Some(Ok(d)) => to_evaluate.iter().any(|&i| candidates.admits_digests(i, d)),
                _ => !to_evaluate.is_empty(),
            };
            let device_path = if evaluated || !yara_hits.is_empty() {
                walk::device_path(&scope.host_root, path)
            } else {
                String::new()
            };
            let mut item = FileItem {
                host_path: path,
                device_path: device_path.clone(),
                meta,
                entry,
                names: &names,
                algorithms: alg,
                max_size: max_size_for(meta.size()),
                content: content.as_deref(),
                digests,
                texts: Vec::new(),
            };
            let mut local_hits = Vec::new();
            for &i in to_evaluate.iter().filter(|_| evaluated) {
                if let Some(Ok(d)) = &item.digests {
                    if !candidates.admits_digests(i, d) {
                        continue;
                    }
                }
                let l = &iocs[i];
                let ev = evaluate(&l.ioc, &mut item, &truth_of(i));
                if ev.truth == Truth::Unknown || ev.witness == Truth::Unknown {
                    saw_unknown[i].store(true, Ordering::Relaxed);
                    let why = if first_unknown[i].get().is_some() {
                        // Said once, for the first: no text for the others.
                        None
                    } else {
                        match &item.digests {
                            Some(Err(ContentError::TooLarge)) => {
                                Some("larger than the maximum file size".to_string())
                            }
                            Some(Err(ContentError::Gone)) => {
                                Some("gone during the sweep".to_string())
                            }
                            Some(Err(ContentError::Unreadable(e))) => Some(e.clone()),
                            Some(Err(ContentError::Cancelled)) => {
                                Some("the sweep was cancelled while it was read".to_string())
                            }
                            // Nothing wrong with the file: the indicator's unsupported terms
                            // leave it unknown on any, which its reasons say once.
                            _ if !l.ioc.unsupported.is_empty() => None,
                            _ => Some("a term could not be decided on it".to_string()),
                        }
                    };
                    if let Some(why) = why {
                        // The device path is in the report's form already.
                        first_unknown[i]
                            .get_or_init(|| format!("file {}: {why}", item.device_path));
                    }
                }
                if ev.witness == Truth::True {
                    for t in &ev.matched {
                        if l.ioc.terms[*t].field.item() == ItemType::File {
                            exists[i][*t].store(true, Ordering::Relaxed);
                        }
                    }
                    local_hits.push(Hit {
                        ioc_id: l.ioc.id.clone(),
                        ioc_name: l.ioc.name.clone(),
                        origin: l.origin.clone(),
                        item: HitItem::File {
                            path: device_path.clone(),
                            dev: meta.dev(),
                            ino: meta.ino(),
                            sha256: None,
                        },
                        matched: matched_terms(&l.ioc, &ev.matched),
                    });
                }
            }
            match &item.digests {
                Some(Ok(_)) if !counted => {
                    files_read.fetch_add(1, Ordering::Relaxed);
                    bytes_read.fetch_add(meta.size(), Ordering::Relaxed);
                }
                // Where YARA runs, its read already counted the file (once per file).
                Some(Err(ContentError::TooLarge)) if yara.is_empty() => {
                    count_skip("content: larger than max file size")
                }
                Some(Err(ContentError::Unreadable(e))) if !counted => {
                    note_unreadable(path, e.clone())
                }
                Some(Err(ContentError::Gone)) if !counted => {
                    gone_count.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
            if let Some(p) = &request.progress {
                if item.digests.is_some() || counted {
                    p.read.fetch_add(1, Ordering::Relaxed);
                }
            }
            for (i, rules) in yara_hits {
                for rule in rules {
                    local_hits.push(Hit {
                        ioc_id: rule.clone(),
                        ioc_name: rule.clone(),
                        origin: yara[i].origin().to_string(),
                        item: HitItem::File {
                            path: device_path.clone(),
                            dev: meta.dev(),
                            ino: meta.ino(),
                            sha256: None,
                        },
                        // Reads `yara rule "NAME"`, as a term reads `FileName is "x"`.
                        matched: vec![MatchedTerm {
                            id: rule.clone(),
                            search: "yara".into(),
                            condition: "rule".into(),
                            value: rule,
                        }],
                    });
                }
            }
            if !local_hits.is_empty() {
                // The SHA-256 lets an action on the hit refuse an object changed since:
                // the sweep's own when it computed one, else read now (hits are few).
                let computed = match &item.digests {
                    Some(Ok(d)) => d.sha256().map(str::to_string),
                    _ => None,
                };
                // A file matched by observations of a pattern only is read for it once
                // the pattern is known to hold (step 5), not now.
                if computed.is_none()
                    && local_hits
                        .iter()
                        .all(|h| part_ids.contains(&(h.ioc_id.as_str(), h.origin.as_str())))
                {
                    hits.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .extend(local_hits);
                    return;
                }
                let sha256 = computed.or_else(|| hash_hit(path, meta.dev(), meta.ino()));
                for h in &mut local_hits {
                    if let HitItem::File { sha256: s, .. } = &mut h.item {
                        s.clone_from(&sha256);
                    }
                }
                hits.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(local_hits);
            }
        };
        // Files whose indicators need their hashes and no YARA read: hashed sixteen at
        // a time per thread (see `multi`), where the CPU allows.
        let lanes_wanted = multi::worth_it(alg);
        let from_lanes = |job: LaneJob, r: std::io::Result<items::Digests>| {
            let digests = r.map_err(ContentError::from);
            judge(
                &job.path,
                &job.meta,
                None,
                &job.to_evaluate,
                None,
                job.yara_hits,
                Some(digests),
                job.counted,
            );
        };
        walk::walk_with(
            &roots,
            &cfg,
            || SweepWorker {
                lanes: if lanes_wanted {
                    ThreadLanes::NotYet
                } else {
                    ThreadLanes::Unused
                },
                files_seen: 0,
            },
            |worker, entry| {
                let path = entry.path;
                // Counted per thread and added up at the end: a shared counter bumped
                // for every file costs the two cores a cache line each time.
                worker.files_seen += 1;
                let known = entry.known_meta();
                if let Some(p) = &request.progress {
                    p.files.fetch_add(1, Ordering::Relaxed);
                }
                // The file's bytes count as done when this call ends, unless the lanes
                // take it: they count its bytes as they read them.
                let mut bytes_done = BytesDone {
                    progress: request.progress.as_deref().filter(|_| !deferred),
                    size: known.map_or(0, |m| m.size()),
                };
                // Without a status (`FileStatus::Deferred`) no indicator is looked up by
                // size, so the size given here selects nothing.
                debug_assert!(known.is_some() || candidates.by_size.is_empty());
                let to_evaluate = candidates.for_file(known.map_or(0, |m| m.size()), path);
                if to_evaluate.is_empty() && yara.is_empty() {
                    return;
                }
                let meta = &match entry.meta() {
                    Ok(meta) => meta,
                    // Changed since the listing: reported as the walk reports it.
                    Err(e) => {
                        worker.files_seen -= 1;
                        return match e {
                            walk::Stale::NotRegular => {
                                count_skip(skip_name(SkipReason::NotRegular))
                            }
                            walk::Stale::Io(e) => note_failure(path, &e),
                        };
                    }
                };
                let too_large = scope.max_file_size.is_some_and(|m| meta.size() > m);
                // Do the hash indicators need this file's digests? (Only asked where
                // the lanes would hash them; elsewhere the item computes them lazily,
                // a file past the maximum size too where its size is named.)
                let to_lanes = !matches!(worker.lanes, ThreadLanes::Unused)
                    && !too_large
                    && (to_evaluate.iter().any(|&i| candidates.content_only[i]) || {
                        let mut item = FileItem {
                            host_path: path,
                            device_path: walk::device_path(&scope.host_root, path),
                            meta,
                            entry: Some(entry),
                            names: &names,
                            algorithms: alg,
                            max_size: scope.max_file_size,
                            content: None,
                            digests: None,
                            texts: Vec::new(),
                        };
                        to_evaluate.iter().any(|&i| {
                            candidates.needs_content[i]
                                && evaluate_without_content(&iocs[i].ioc, &mut item, &truth_of(i))
                                    == Truth::Unknown
                        })
                    });
                let mut content: Option<Vec<u8>> = None;
                let mut yara_hits: Vec<(usize, Vec<String>)> = Vec::new();
                // A failed YARA read has noted the file (unreadable, or gone): judged
                // after it, the file is not noted a second time.
                let mut read_noted = false;
                if !yara.is_empty() {
                    if too_large {
                        count_skip("content: larger than max file size");
                    } else {
                        match entry.open().and_then(|f| {
                            items::read_all(f, meta.size(), scope.max_file_size, &request.cancel)
                        }) {
                            Ok(data) => {
                                files_read.fetch_add(1, Ordering::Relaxed);
                                bytes_read.fetch_add(data.len() as u64, Ordering::Relaxed);
                                for (i, r) in yara.iter().enumerate() {
                                    let m = r.scan_bytes(&data);
                                    if !m.is_empty() {
                                        yara_hits.push((i, m));
                                    }
                                }
                                content = Some(data);
                            }
                            // Left unjudged, as the lanes leave their files: the report
                            // says the sweep was cancelled.
                            Err(e) if items::cancelled(&e) => return,
                            Err(e) => {
                                read_noted = true;
                                note_failure(path, &e)
                            }
                        }
                    }
                }
                // Bytes held for the lanes are bounded (16 lanes × 1 MiB per thread): a
                // larger file YARA has read is hashed from its buffer here, one stream.
                let small = content.as_ref().is_none_or(|c| c.len() <= MAX_LANE_BUFFER);
                let new_lanes = || {
                    Lanes::new(alg).map(|l| {
                        l.capped_at(scope.max_file_size)
                            .cancelled_by(request.cancel.clone())
                            .counting_into(request.progress.clone().filter(|_| !deferred))
                    })
                };
                if let Some(lanes) = (to_lanes && small)
                    .then(|| worker.lanes.get(new_lanes))
                    .flatten()
                {
                    let counted = content.is_some();
                    let job = LaneJob {
                        path: path.to_path_buf(),
                        meta: *meta,
                        to_evaluate,
                        yara_hits,
                        counted,
                    };
                    let source = match content {
                        // YARA has read it: hash those bytes, do not read again.
                        Some(data) => Source::Memory(data),
                        None if !yara.is_empty() => {
                            // YARA could not read it either: judged without content.
                            let LaneJob {
                                to_evaluate,
                                yara_hits,
                                ..
                            } = job;
                            return judge(
                                path,
                                meta,
                                Some(entry),
                                &to_evaluate,
                                None,
                                yara_hits,
                                None,
                                true,
                            );
                        }
                        None => match entry.open() {
                            Ok(f) => Source::File(f),
                            Err(e) => return from_lanes(job, Err(e)),
                        },
                    };
                    bytes_done.progress = None;
                    lanes.push(job, source, meta.size(), &mut |job, r| from_lanes(job, r));
                    return;
                }
                judge(
                    path,
                    meta,
                    Some(entry),
                    &to_evaluate,
                    content,
                    yara_hits,
                    None,
                    read_noted,
                );
            },
            |worker| {
                files_seen.fetch_add(worker.files_seen, Ordering::Relaxed);
                // A cancelled sweep leaves the files in flight unjudged (it reports
                // itself cancelled) rather than finish hashing up to sixteen of them.
                if let ThreadLanes::Ready(mut lanes) = worker.lanes {
                    if !request.cancel.load(Ordering::Relaxed) {
                        lanes.flush(&mut |job, r| from_lanes(job, r));
                    }
                }
            },
            |_, reason| count_skip(skip_name(reason)),
            |path, err| {
                if !items::gone(err) {
                    walk_incomplete.store(true, Ordering::Relaxed);
                }
                if roots.iter().any(|root| root == path) {
                    // A root that is not there was asked for and never seen: said as
                    // unreadable, with the error, rather than counted as gone.
                    note_unreadable(path, err.to_string())
                } else {
                    note_failure(path, err)
                }
            },
        );
    }
    let mut hits = hits.into_inner().unwrap_or_else(|e| e.into_inner());

    // 4. Non-file items, now that file terms' existential truths are known.
    for (i, l) in iocs.iter().enumerate() {
        let types = l.ioc.item_types();
        for it in collected.iter().filter(|it| types.contains(&it.ty)) {
            let mut it = it.clone();
            let ev = evaluate(&l.ioc, &mut it, &truth_of(i));
            if ev.truth == Truth::Unknown || ev.witness == Truth::Unknown {
                saw_unknown[i].store(true, Ordering::Relaxed);
                if l.ioc.unsupported.is_empty() {
                    first_unknown[i].get_or_init(|| {
                        format!("{}: a term could not be decided on it", it.describe)
                    });
                }
            }
            if ev.witness == Truth::True {
                hits.push(Hit {
                    ioc_id: l.ioc.id.clone(),
                    ioc_name: l.ioc.name.clone(),
                    origin: l.origin.clone(),
                    item: it.describe.clone(),
                    matched: matched_terms(&l.ioc, &ev.matched),
                });
            }
        }
    }

    // 5. Verdicts, and the observations of a pattern joined.
    // Per indicator (id, document), the items it hit: looked up, not searched for, as
    // a sweep may hold thousands of indicators and of hits.
    let mut hit_items: HashMap<(&str, &str), Vec<String>> = HashMap::new();
    for h in &hits {
        let items = hit_items
            .entry((h.ioc_id.as_str(), h.origin.as_str()))
            .or_default();
        if part_ids.contains(&(h.ioc_id.as_str(), h.origin.as_str())) {
            items.push(h.item.to_string());
        }
    }
    let verdicts: Vec<Verdict> = iocs
        .iter()
        .enumerate()
        .map(|(i, l)| {
            if hit_items.contains_key(&(l.ioc.id.as_str(), l.origin.as_str())) {
                Verdict::Hit
            } else if request.cancel.load(Ordering::Relaxed)
                // A cancelled sweep did not look everywhere: nothing found is no answer.
                || saw_unknown[i].load(Ordering::Relaxed)
                || evaluate_host(&l.ioc, &truth_of(i)) == Truth::Unknown
            {
                Verdict::Undetermined
            } else {
                Verdict::NoMatch
            }
        })
        .collect();
    // Why indicator `i` may be undetermined, in the order a reader acts on them.
    let reasons_of = |i: usize| {
        let mut why = Vec::new();
        if request.cancel.load(Ordering::Relaxed) {
            why.push("the sweep was cancelled before it looked everywhere".to_string());
        }
        if !iocs[i].ioc.unsupported.is_empty() {
            why.push(UNSUPPORTED_TERMS_REASON.to_string());
        }
        if let Some(first) = first_unknown[i].get() {
            why.push(first.clone());
        }
        let types = iocs[i].ioc.item_types();
        if !scope.system_items && types.iter().any(|t| *t != ItemType::File) {
            why.push(
                "items other than files (processes, ports, users, services…) were not \
                 collected"
                    .to_string(),
            );
        } else if iocs[i].ioc.fields().any(|f| !scope.collects_field(f)) {
            why.push(format!(
                "processes, ports and the host's addresses were not collected: {} is not \
                 a live system (no /proc is mounted in it)",
                scope.host_root.display()
            ));
        }
        for (ty, source) in &sourceless {
            if types.contains(ty) {
                why.push(format!(
                    "{} has no {source} the sweep can read: its {} could not be read",
                    scope.host_root.display(),
                    if *ty == ItemType::User {
                        "accounts"
                    } else {
                        "hosts entries"
                    }
                ));
            }
        }
        for (ty, label, unread) in &collected_in_part {
            if types.contains(ty) {
                why.push(format!(
                    "some places {label} are kept in could not be read ({}), and none of \
                     the {label} read satisfied its terms on them",
                    unread[0]
                ));
            }
        }
        if walk_incomplete.load(Ordering::Relaxed) && types.contains(&ItemType::File) {
            why.push(
                "some places could not be looked at (listed as unreadable), and no file \
                 seen satisfied its file terms"
                    .to_string(),
            );
        }
        why
    };
    let summary = |l: &Loaded, verdict, because: Vec<String>| IocSummary {
        id: l.ioc.id.clone(),
        name: l.ioc.name.clone(),
        origin: l.origin.clone(),
        verdict,
        supported_terms: l.ioc.terms.len(),
        unsupported: l.ioc.unsupported.clone(),
        undetermined_because: if verdict == Verdict::Undetermined {
            because
        } else {
            Vec::new()
        },
    };
    // Hits of an observation count only as hits of its pattern, where the pattern holds.
    let mut part_of: HashMap<(&str, &str), (usize, usize)> = HashMap::new();
    let mut shown: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); listed.len()];
    for (n, entry) in listed.iter().enumerate() {
        match entry {
            Listed::Swept(i) => report
                .iocs
                .push(summary(&iocs[*i], verdicts[*i], reasons_of(*i))),
            Listed::Joined { pattern, parts } => {
                let formula = pattern
                    .ioc
                    .observations
                    .as_ref()
                    .map_or(&pattern.ioc.root, |o| &o.formula);
                let outcomes: Vec<riposte_ioc::ObservationOutcome> = parts
                    .iter()
                    .map(|&i| riposte_ioc::ObservationOutcome {
                        truth: match verdicts[i] {
                            Verdict::Hit => Truth::True,
                            Verdict::NoMatch => Truth::False,
                            Verdict::Undetermined => Truth::Unknown,
                        },
                        objects: hit_items
                            .get(&(iocs[i].ioc.id.as_str(), iocs[i].origin.as_str()))
                            .cloned()
                            .unwrap_or_default(),
                    })
                    .collect();
                let (truth, witnesses) = riposte_ioc::join_observations(formula, &outcomes);
                for (k, &i) in parts.iter().enumerate() {
                    part_of.insert((&iocs[i].ioc.id, &iocs[i].origin), (n, k));
                }
                shown[n] = witnesses;
                // The reasons of its undetermined observations, each said once.
                let mut because: Vec<String> = Vec::new();
                for &i in parts
                    .iter()
                    .filter(|&&i| verdicts[i] == Verdict::Undetermined)
                {
                    for r in reasons_of(i) {
                        if !because.contains(&r) {
                            because.push(r);
                        }
                    }
                }
                report.iocs.push(summary(
                    pattern,
                    match truth {
                        Truth::True => Verdict::Hit,
                        Truth::False => Verdict::NoMatch,
                        Truth::Unknown => Verdict::Undetermined,
                    },
                    because,
                ));
            }
        }
    }
    // The SHA-256 of a file a pattern's observation matched, read now that the pattern
    // holds (as step 3 does for other hits), once per file.
    let mut hashed: HashMap<String, Option<String>> = HashMap::new();
    let hash_observed = |device_path: &str, dev: u64, ino: u64| {
        let host = host_path(
            &scope.host_root,
            &riposte_model::path_text::decode(device_path),
        );
        hash_hit(&host, dev, ino)
    };
    let mut hits: Vec<Hit> = hits
        .into_iter()
        .filter_map(|mut h| {
            let Some(&(n, k)) = part_of.get(&(h.ioc_id.as_str(), h.origin.as_str())) else {
                return Some(h);
            };
            let Listed::Joined { pattern, .. } = &listed[n] else {
                return None;
            };
            shown[n].contains(&k).then(|| {
                h.ioc_id = pattern.ioc.id.clone();
                h.ioc_name = pattern.ioc.name.clone();
                if let HitItem::File {
                    path,
                    dev,
                    ino,
                    sha256: sha256 @ None,
                } = &mut h.item
                {
                    *sha256 = hashed
                        .entry(path.clone())
                        .or_insert_with(|| hash_observed(path, *dev, *ino))
                        .clone();
                }
                h
            })
        })
        .collect();
    hits.sort_by(|a, b| (&a.ioc_id, a.item.to_string()).cmp(&(&b.ioc_id, b.item.to_string())));
    // One object that matched several observations of a pattern is one hit of it, with
    // the terms of them all.
    hits.dedup_by(|later, kept| {
        let same = later.ioc_id == kept.ioc_id
            && later.origin == kept.origin
            && later.item.to_string() == kept.item.to_string();
        if same {
            kept.matched.append(&mut later.matched);
        }
        same
    });
    report.hits = hits;
    report.unreadable = unreadable.into_inner().unwrap_or_else(|e| e.into_inner());
    report.stats.files_seen = files_seen.load(Ordering::Relaxed);
    report.stats.files_read = files_read.load(Ordering::Relaxed);
    report.stats.bytes_read = bytes_read.load(Ordering::Relaxed);
    report.stats.hits_hashed = hits_hashed.load(Ordering::Relaxed);
    report.stats.hits_hashed_bytes = hits_hashed_bytes.load(Ordering::Relaxed);
    report.stats.gone = gone_count.load(Ordering::Relaxed);
    report.stats.skipped = skipped.into_inner().unwrap_or_else(|e| e.into_inner());
    let n_unreadable = unreadable_count.load(Ordering::Relaxed);
    if n_unreadable > 0 {
        report
            .stats
            .skipped
            .insert("unreadable".into(), n_unreadable);
    }
    report.stats.elapsed_ms = start.elapsed().as_millis() as u64;
    report.cancelled = request.cancel.load(Ordering::Relaxed);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::{hit_unhashed, threads_within, ContentError};

    #[test]
    fn a_hit_left_without_its_sha256_is_counted_by_why() {
        assert_eq!(
            hit_unhashed(&ContentError::TooLarge),
            "hit's SHA-256: larger than max file size"
        );
        assert_eq!(
            hit_unhashed(&ContentError::Unreadable(
                "replaced during the sweep".into()
            )),
            "hit's SHA-256: replaced during the sweep"
        );
    }

    #[test]
    fn a_sweep_runs_no_more_threads_than_its_descriptor_limit_holds() {
        // 1024 descriptors, a quarter kept for the rest of the process, 19 per thread.
        assert_eq!(threads_within(64, Some(1024)), 40);
        assert_eq!(threads_within(8, Some(1024)), 8);
        assert_eq!(threads_within(64, Some(65_536)), 64);
        assert_eq!(threads_within(64, None), 64);
        // Never none, however low the limit: the sweep then reports what it cannot open.
        assert_eq!(threads_within(4, Some(20)), 1);
        assert_eq!(threads_within(0, None), 1);
    }
}
