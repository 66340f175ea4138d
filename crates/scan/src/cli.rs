//! `riposte scan`: sweep this device for indicators from the command line.
//!
//! Exit codes follow grep: 0 nothing found, 1 something found, 2 error.

use crate::{
    sweep, DocumentKind, IocDocument, Preset, Progress, Scope, SweepReport, SweepRequest, Verdict,
};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Arguments of `riposte scan`.
#[derive(Debug, Clone, clap::Args)]
pub struct ScanArgs {
    #[command(flatten)]
    pub indicators: IndicatorFiles,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Fail (exit 2) if an indicator has a term that cannot be evaluated.
    #[arg(long)]
    pub strict: bool,
    /// Directory standing for the device's `/`; paths are reported as the device's.
    /// Processes and ports come from a `/proc` mounted in it (a live system); an image
    /// has none, and terms on them are then undetermined.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub host_root: PathBuf,
    /// Preset scope, swept beside any PATH given (with neither, system-drives).
    #[arg(long, value_enum)]
    pub preset: Option<Preset>,
    /// Exclusion glob on device paths (repeatable): `*.iso`, `/var/lib/docker/**`,
    /// `/home/**/cache`, `core.[0-9]*`. `*`, `?` and `[…]` stay within a segment; a
    /// pattern without `/` matches file names. Paths are matched as the report shows
    /// them: a backslash is `\\`, a control or invisible byte `\xHH`.
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Do not read files larger than this many bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 100 << 20)]
    pub max_file_size: u64,
    /// Stay on the file system of each PATH.
    #[arg(long)]
    pub one_file_system: bool,
    /// Walk threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Do not collect processes, ports, users, services, host info, hosts entries.
    #[arg(long)]
    pub no_system_items: bool,
    /// Device paths to sweep. A relative path is taken from the current directory, as
    /// grep does (with `--host-root`, from the device's `/`).
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

/// The indicator files of `riposte scan`, as given: each occurrence of an option with
/// its values, apart. (`--ioc a.ioc /srv --ioc b.ioc`: /srv ends the first occurrence's
/// files, and b.ioc is one again; see `split_trailing_paths`.) Written out rather than
/// derived: the derive keeps occurrences apart only under an unstable clap feature.
#[derive(Debug, Clone, Default)]
pub struct IndicatorFiles {
    /// `--ioc`: OpenIOC 1.0/1.1 files.
    pub ioc: Vec<Vec<PathBuf>>,
    /// `--yara`: YARA rule files.
    pub yara: Vec<Vec<PathBuf>>,
    /// `--stix`: STIX 2.1 documents or bare patterns.
    pub stix: Vec<Vec<PathBuf>>,
}

const INDICATOR_OPTIONS: [(&str, &str); 3] = [
    ("ioc", "OpenIOC 1.0/1.1 files."),
    ("yara", "YARA rule files (matched against file contents)."),
    (
        "stix",
        "STIX 2.1 bundles, indicators, or files holding one bare pattern.",
    ),
];

impl clap::FromArgMatches for IndicatorFiles {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let mut files = IndicatorFiles::default();
        files.update_from_arg_matches(m)?;
        Ok(files)
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        let occurrences = |id: &str| -> Vec<Vec<PathBuf>> {
            m.get_occurrences::<PathBuf>(id)
                .map(|o| o.map(|values| values.cloned().collect()).collect())
                .unwrap_or_default()
        };
        self.ioc = occurrences("ioc");
        self.yara = occurrences("yara");
        self.stix = occurrences("stix");
        Ok(())
    }
}

impl clap::Args for IndicatorFiles {
    fn augment_args(mut cmd: clap::Command) -> clap::Command {
        for (id, help) in INDICATOR_OPTIONS {
            cmd = cmd.arg(
                clap::Arg::new(id)
                    .long(id)
                    .value_name("FILE")
                    .num_args(1..)
                    .action(clap::ArgAction::Append)
                    .value_parser(clap::value_parser!(PathBuf))
                    .help(help),
            );
        }
        cmd
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

/// Largest indicator document read (bytes). Each parser has its own, lower limit; this
/// one only keeps `--ioc /dev/zero` or a runaway pipe from filling memory first.
const MAX_DOCUMENT_READ: u64 = 64 << 20;

fn read_docs(
    paths: &[PathBuf],
    kind: DocumentKind,
    out: &mut Vec<IocDocument>,
) -> anyhow::Result<()> {
    use std::io::Read;
    // The same file named twice is read once: its indicators would be counted, and
    // their hits listed, twice. (Each path is resolved once: thousands of files are
    // named at a time.)
    let mut seen = std::collections::HashSet::new();
    for p in paths {
        if !seen.insert(std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())) {
            continue;
        }
        let fail = |e: &dyn std::fmt::Display| {
            anyhow::anyhow!("{}: {e}", riposte_model::path_text::encode(p.as_os_str()))
        };
        if p.is_dir() {
            return Err(fail(
                &"a directory, not an indicator file: name the indicator files first, \
                  then the paths to sweep (`riposte scan --ioc FILE... PATH...`)",
            ));
        }
        let mut bytes = Vec::new();
        open_document(p)
            .and_then(|f| f.take(MAX_DOCUMENT_READ + 1).read_to_end(&mut bytes))
            .map_err(|e| fail(&e))?;
        if bytes.len() as u64 > MAX_DOCUMENT_READ {
            return Err(fail(&format!(
                "larger than {} MiB: not an indicator document",
                MAX_DOCUMENT_READ >> 20
            )));
        }
        // OpenIOC is XML, which editors also save as UTF-16 or Latin-1; the others are
        // UTF-8 by their specifications.
        let text = match kind {
            DocumentKind::OpenIoc => riposte_ioc::openioc::decode_xml(&bytes)
                .map(|t| t.into_owned())
                .map_err(|e| fail(&e))?,
            _ => String::from_utf8(bytes).map_err(|e| fail(&format!("not UTF-8 text: {e}")))?,
        };
        // Includes resolve from the rule file's folder, as `yara` does; from the
        // current one for a pipe or `<(…)`, whose folder is /dev/fd.
        let include_dir = match p.parent() {
            Some(dir) if !is_descriptor_path(p) && !dir.as_os_str().is_empty() => {
                Some(dir.to_path_buf())
            }
            _ => Some(PathBuf::from(".")),
        };
        out.push(IocDocument {
            kind,
            origin: riposte_model::path_text::encode(p.as_os_str()),
            text,
            include_dir,
        });
    }
    Ok(())
}

/// Opens an indicator document for reading without waiting for a writer: a named FIFO
/// that nobody writes to reads as empty (and is refused as an empty document) rather than
/// holding the scan for ever; one with a writer is read to its end, as a pipe is.
fn open_document(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    // Reads wait again from here on: a writer that has not written yet is waited for.
    // SAFETY: F_GETFL and F_SETFL on a descriptor this function owns.
    unsafe {
        let flags = libc::fcntl(file.as_raw_fd(), libc::F_GETFL);
        if flags == -1
            || libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK) == -1
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(file)
}

/// Checks that every PATH named on the command line exists, as grep does (exit 2, and
/// nothing swept, rather than a clean "no hit" for a mistyped path). On the real root, a
/// PATH that is a symbolic link is followed, as `grep -r` follows one named on its
/// command line; links found inside the tree are never followed. Links in a pseudo file
/// system are not: `/proc/<pid>/root` reads as `/` from here, whatever it is in the
/// process's own namespace.
fn resolve_named_paths(scope: &mut Scope) -> anyhow::Result<()> {
    // A PATH excluded as it was named stays as named, so that the walk leaves it out
    // (`--exclude /bin /bin`, `/bin` a link to `usr/bin`), once it is known to exist.
    let excludes = crate::walk::Excludes::new(&scope.exclude);
    let excluded = |p: &Path| {
        !excludes.is_empty() && excludes.matches(&riposte_model::path_text::encode(p.as_os_str()))
    };
    if scope.host_root != Path::new("/") {
        // Under another root, links are the device's: resolved inside it, never to
        // the host's files (an image's `/var/run -> /run` is its own `/run`).
        for p in &mut scope.paths {
            if excluded(p) {
                std::fs::symlink_metadata(crate::host_path(&scope.host_root, p)).map_err(|e| {
                    anyhow::anyhow!("{}: {e}", riposte_model::path_text::encode(p.as_os_str()))
                })?;
                continue;
            }
            *p = match crate::walk::resolve_in_root(&scope.host_root, p) {
                Ok(resolved) => resolved,
                // A kernel before 5.6 has no openat2: `..` is then read lexically,
                // and a link is not followed.
                Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                    let normal = lexically_normal(p);
                    std::fs::symlink_metadata(crate::host_path(&scope.host_root, &normal))
                        .map_err(|e| {
                            anyhow::anyhow!(
                                "{}: {e}",
                                riposte_model::path_text::encode(p.as_os_str())
                            )
                        })?;
                    normal
                }
                Err(e) => {
                    return Err(anyhow::anyhow!(
                        "{}: {e}",
                        riposte_model::path_text::encode(p.as_os_str())
                    ))
                }
            };
        }
        return Ok(());
    }
    for p in &mut scope.paths {
        let host = crate::host_path(&scope.host_root, p);
        let meta = std::fs::symlink_metadata(&host).map_err(|e| {
            anyhow::anyhow!("{}: {e}", riposte_model::path_text::encode(p.as_os_str()))
        })?;
        let in_pseudo_fs = || host.parent().is_some_and(crate::walk::on_pseudo_fs);
        if scope.host_root != Path::new("/") || in_pseudo_fs() || excluded(p) {
            continue;
        }
        let fail = |e: std::io::Error| {
            anyhow::anyhow!("{}: {e}", riposte_model::path_text::encode(p.as_os_str()))
        };
        if meta.file_type().is_symlink() {
            *p = std::fs::canonicalize(&host).map_err(fail)?;
        } else if let (Some(parent), Some(name)) = (host.parent(), host.file_name()) {
            // Its directory by its real path (`/lib/os-release` is `/usr/lib/os-release`
            // where `/lib` links to `usr/lib`): files are reported, and path terms
            // through the system's directory links rewritten (`directory_aliases`), as
            // a walk from `/` sees them.
            *p = std::fs::canonicalize(parent).map_err(fail)?.join(name);
        }
    }
    Ok(())
}

/// Exclusions written through the device's directory links hold where the walk sees
/// the files (as `sweep` does too), here for the progress line's count as well.
fn exclusions_through_links(scope: &mut Scope) {
    let aliases = crate::walk::directory_aliases(&scope.host_root);
    scope.exclude = crate::exclusions_through_links(&scope.exclude, &aliases);
}

/// The PATH arguments as device paths: on the real root a relative path is the
/// current directory's, so `riposte scan .` sweeps where the user stands.
///
/// A `..` is resolved as the kernel would, through the file system (a symbolic link
/// before it counts); under `--host-root` inside the device, `/..` being its `/`, so that
/// no PATH climbs out of it (`resolve_named_paths`). Either way the paths reported, and
/// those that path terms and exclusions see, are free of `..`.
fn sweep_paths(args: &ScanArgs) -> anyhow::Result<Vec<PathBuf>> {
    let climbs = |p: &Path| p.components().any(|c| c == std::path::Component::ParentDir);
    if args.host_root != Path::new("/") {
        // Resolved inside the device's root later (`resolve_named_paths`).
        return Ok(args.paths.iter().map(|p| Path::new("/").join(p)).collect());
    }
    args.paths
        .iter()
        .map(|p| {
            let fail = |e: std::io::Error| {
                anyhow::anyhow!(
                    "{}: cannot resolve the path: {e}",
                    riposte_model::path_text::encode(p.as_os_str())
                )
            };
            let abs = std::path::absolute(p).map_err(fail)?;
            if climbs(&abs) {
                std::fs::canonicalize(&abs).map_err(fail)
            } else {
                Ok(abs)
            }
        })
        .collect()
}

/// `path` as an absolute device path without `.` or `..`, read lexically (`/..` is `/`).
fn lexically_normal(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(name) => out.push(name),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// The sweep scope these arguments describe (no PATH: the *system drives* preset).
pub fn scope_of(args: &ScanArgs) -> anyhow::Result<Scope> {
    let preset = match (args.preset, args.paths.is_empty()) {
        (None, true) => Some(Preset::SystemDrives),
        (p, _) => p,
    };
    // Said of the host root itself, before any PATH below it reads as missing.
    match std::fs::metadata(&args.host_root) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => anyhow::bail!("--host-root {}: not a directory", args.host_root.display()),
        Err(e) => anyhow::bail!("--host-root {}: {e}", args.host_root.display()),
    }
    Ok(Scope {
        host_root: args.host_root.clone(),
        paths: sweep_paths(args)?,
        preset,
        exclude: args.exclude.clone(),
        max_file_size: Some(args.max_file_size),
        one_file_system: args.one_file_system,
        threads: args.threads,
        proc_root: crate::live_proc(&args.host_root),
        system_items: !args.no_system_items,
    })
}

/// Does the file at `path` look like an indicator document of `kind`? Only its first
/// bytes are read. A directory does not; a path that cannot be read does (reading it as
/// an indicator then says why it cannot be).
fn looks_like_indicators(path: &Path, kind: DocumentKind) -> bool {
    use std::io::Read;
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => return false,
        Ok(m) if m.is_file() => {}
        // A pipe the shell opened for this command (`--ioc <(…)`, /dev/stdin) must not
        // lose its first bytes to a peek.
        Ok(_) if is_descriptor_path(path) => return true,
        // Any other special file (a named FIFO, a device, a socket) is a PATH: opening a
        // FIFO no one writes to waits for ever, and `/dev/zero` never ends.
        Ok(_) => return false,
        // Reading it as an indicator file says why it cannot be read.
        Err(_) => return true,
    }
    let mut head = Vec::new();
    let limit = match kind {
        DocumentKind::Yara => 64 << 10,
        _ => 4 << 10,
    };
    match std::fs::File::open(path).and_then(|f| f.take(limit).read_to_end(&mut head)) {
        Ok(_) => {}
        Err(_) => return true,
    }
    let text = match std::str::from_utf8(&head) {
        Ok(t) => t,
        // Cut inside a character at the limit: what came before it counts.
        Err(e) if e.error_len().is_none() => {
            std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or_default()
        }
        Err(_) => return false,
    };
    let start = text.trim_start_matches('\u{feff}').trim_start();
    match kind {
        // XML of another kind (a `pom.xml`) is a PATH: the head must name OpenIOC.
        DocumentKind::OpenIoc => {
            start.starts_with('<')
                && [
                    "mandiant.com/2010/ioc",
                    "openioc.org/schemas",
                    "<ioc",
                    "<OpenIOC",
                ]
                .iter()
                .any(|t| text.contains(t))
        }
        // A bare pattern (`[file:…`, `(`), or JSON that names a bundle or an indicator:
        // any JSON file (a `package.json` given as a PATH) is not STIX.
        DocumentKind::Stix => {
            let pattern = start.starts_with('(')
                || start.strip_prefix('[').is_some_and(|rest| {
                    rest.trim_start()
                        .starts_with(|c: char| c.is_ascii_alphabetic())
                });
            pattern || start.starts_with(['{', '[']) && json_is_stix(path, text)
        }
        // A rule declaration (`rule name {`, `rule name : tag {`): the words `import` or
        // `include` alone are in many scripts and makefiles.
        DocumentKind::Yara => start.is_empty() || declares_a_rule(text),
    }
}

/// Does `text` declare a YARA rule: the word `rule`, a name, then `{` or `:`?
fn declares_a_rule(text: &str) -> bool {
    text.match_indices("rule").any(|(at, _)| {
        let before = text[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            return false;
        }
        let rest = &text[at + 4..];
        let after_space = rest.trim_start();
        if after_space.len() == rest.len() {
            return false;
        }
        let name_len = after_space
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after_space.len());
        let starts_well = after_space
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        starts_well && after_space[name_len..].trim_start().starts_with(['{', ':'])
    })
}

/// Does the JSON file at `path` (its first bytes `head`) hold STIX indicators: a bundle,
/// an indicator, or an array with one? The whole document is read, up to the size an
/// indicator document may have: a feed often opens with long identity or report objects.
/// A larger file, or one that is not JSON, is judged by its words, so that loading it
/// says what is wrong with it.
fn json_is_stix(path: &Path, head: &str) -> bool {
    use std::io::Read;
    let names_stix = |text: &str| {
        ["\"bundle\"", "\"indicator\""]
            .iter()
            .any(|t| text.contains(t))
    };
    let limit = riposte_ioc::stix::MAX_DOCUMENT_BYTES as u64;
    let mut whole = Vec::new();
    match std::fs::File::open(path).and_then(|f| f.take(limit + 1).read_to_end(&mut whole)) {
        Ok(n) if n as u64 <= limit => {}
        _ => return names_stix(head),
    }
    let text = String::from_utf8_lossy(&whole);
    let is_type =
        |v: &serde_json::Value, t: &str| v.get("type").and_then(|v| v.as_str()) == Some(t);
    match serde_json::from_str::<serde_json::Value>(text.trim_start_matches('\u{feff}')) {
        Ok(serde_json::Value::Array(items)) => items.iter().any(|v| is_type(v, "indicator")),
        Ok(v) => is_type(&v, "bundle") || is_type(&v, "indicator"),
        Err(_) => names_stix(&text),
    }
}

/// Is the regular file at `path` named as only a document of `kind` is (`.ioc`,
/// `.stix`, `.yar`, `.yara`)? Such a file given to the option is an indicator file
/// whatever it holds, so that a broken one is refused with its reason rather than swept
/// as a PATH (which would drop its indicators without a word). Names that other files
/// share (`.xml`, `.json`: a `pom.xml`, a `package.json`) are judged by their content.
fn named_as(path: &Path, kind: DocumentKind) -> bool {
    let extensions: &[&str] = match kind {
        DocumentKind::OpenIoc => &["ioc"],
        DocumentKind::Stix => &["stix"],
        DocumentKind::Yara => &["yar", "yara"],
    };
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| extensions.iter().any(|x| e.eq_ignore_ascii_case(x)))
        && std::fs::metadata(path).is_ok_and(|m| m.is_file())
}

/// May a value after an option's first be one of its documents by its name alone?
/// Named as only its documents are ([`named_as`]), or with a name other files share
/// (`.xml`, `.json`, a YARA `.rules`), or with no extension, where its content then
/// decides. Any other name (`notes.txt`, a suspect `x.js`) is a PATH whatever it holds:
/// a file given to be swept, perhaps written by an attacker, is never taken for
/// indicators (and left unswept) because of what it holds.
fn may_be_document(path: &Path, kind: DocumentKind) -> bool {
    let shared: &[&str] = match kind {
        DocumentKind::OpenIoc => &["xml"],
        DocumentKind::Stix => &["json"],
        DocumentKind::Yara => &["rule", "rules"],
    };
    match path.extension().and_then(|e| e.to_str()) {
        None => true,
        Some(e) => shared.iter().any(|x| e.eq_ignore_ascii_case(x)),
    }
}

/// Is `path` one of this process's descriptors by name (`/dev/stdin`, `/dev/fd/N`,
/// `/proc/self/fd/N`), as a shell's process substitution gives?
fn is_descriptor_path(path: &Path) -> bool {
    path == Path::new("/dev/stdin")
        || path.starts_with("/dev/fd")
        || path.starts_with("/proc/self/fd")
}

/// Lets the synopsis `riposte scan --ioc FILE... PATH...` work as written: the values of
/// an indicator option, from the first that is a directory or a file not of the option's
/// format (by its name, else its content: see [`may_be_document`]) on, are PATHs to
/// sweep. (Without that, `--ioc` takes every value that follows
/// it.) The first value always stays an indicator file, so `--ioc DIR` says what is
/// wrong rather than sweeping with no indicator. Under `--host-root`, a value that is
/// no file here but is one on the device is a PATH too.
fn split_trailing_paths(args: &mut ScanArgs) {
    let host_root = args.host_root.clone();
    let on_device_only = |p: &Path| {
        host_root != Path::new("/")
            && std::fs::symlink_metadata(p).is_err()
            && std::fs::symlink_metadata(crate::host_path(&host_root, p)).is_ok()
    };
    let mut paths = Vec::new();
    // Each occurrence of an option on its own: in `--ioc a.ioc /srv --ioc b.ioc`, /srv
    // ends the first list and b.ioc is an indicator file again.
    for (occurrences, kind) in [
        (&mut args.indicators.ioc, DocumentKind::OpenIoc),
        (&mut args.indicators.stix, DocumentKind::Stix),
        (&mut args.indicators.yara, DocumentKind::Yara),
    ] {
        for values in occurrences.iter_mut() {
            if let Some(first) = values.iter().skip(1).position(|p| {
                on_device_only(p)
                    || !(named_as(p, kind)
                        || may_be_document(p, kind) && looks_like_indicators(p, kind))
            }) {
                paths.extend(values.drain(first + 1..));
            }
        }
    }
    paths.append(&mut args.paths);
    args.paths = paths;
}

/// Builds the sweep request for these arguments.
pub fn request(args: &ScanArgs) -> anyhow::Result<SweepRequest> {
    let mut args = args.clone();
    split_trailing_paths(&mut args);
    let args = &args;
    let mut documents = Vec::new();
    let files = &args.indicators;
    read_docs(&files.ioc.concat(), DocumentKind::OpenIoc, &mut documents)?;
    read_docs(&files.stix.concat(), DocumentKind::Stix, &mut documents)?;
    read_docs(&files.yara.concat(), DocumentKind::Yara, &mut documents)?;
    let mut scope = scope_of(args)?;
    resolve_named_paths(&mut scope)?;
    exclusions_through_links(&mut scope);
    Ok(SweepRequest {
        documents,
        scope,
        strict: args.strict,
        cancel: Arc::new(AtomicBool::new(false)),
        progress: Some(Arc::new(Progress::default())),
    })
}

fn human(bytes: f64) -> String {
    if bytes >= 1e9 {
        format!("{:.1} GB", bytes / 1e9)
    } else {
        format!("{:.1} MB", bytes / 1e6)
    }
}

/// Runs the command; returns the exit code (0 no hit, 1 hit, 2 error).
pub fn run(args: ScanArgs) -> anyhow::Result<i32> {
    let req = match request(&args) {
        Ok(r) => r,
        Err(e) => {
            // Errors quote the documents (ids, values): escaped as the report is.
            eprintln!(
                "riposte scan: {}",
                riposte_model::path_text::shown(&format!("{e:#}"))
            );
            return Ok(2);
        }
    };
    let mut req = req;
    let shown = std::io::stderr().is_terminal();
    if !shown {
        // Nobody reads the counts: each file's two shared counters, which both walk
        // threads bump, are saved.
        req.progress = None;
    }
    let interrupt = on_interrupt_cancel(&req.cancel);
    let done = Arc::new(AtomicBool::new(false));
    let progress_thread = shown.then(|| {
        spawn_progress(
            &req,
            done.clone(),
            std::io::stderr(),
            std::time::Duration::from_millis(250),
        )
    });
    let result = sweep(&req);
    for id in interrupt {
        signal_hook_registry::unregister(id);
    }
    done.store(true, Ordering::Relaxed);
    if let Some(h) = progress_thread {
        let _ = h.join();
    }
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "riposte scan: {}",
                riposte_model::path_text::shown(&e.to_string())
            );
            return Ok(2);
        }
    };
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        serde_json::to_writer_pretty(&mut out, &report)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        print_text(&mut out, &report)
    };
    match written.and_then(|()| out.flush()) {
        // A reader that stopped early (`riposte scan --json … | head`) still gets the
        // answer in the exit code, as grep gives it.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => return Err(e.into()),
        Ok(()) => {}
    }
    if report.cancelled {
        eprintln!(
            "riposte scan: interrupted: the sweep did not finish; the report covers what it \
             looked at"
        );
        // A hit found is still a hit; no hit in an unfinished sweep is not "no hit".
        return Ok(if report.hits.is_empty() { 2 } else { 1 });
    }
    Ok(if report.hits.is_empty() { 0 } else { 1 })
}

/// Makes Ctrl-C (`SIGINT`) and `SIGTERM` stop the sweep, which then reports what it
/// looked at, marked cancelled; a second one ends the process at once (exit 130).
fn on_interrupt_cancel(cancel: &Arc<AtomicBool>) -> Vec<signal_hook_registry::SigId> {
    [libc::SIGINT, libc::SIGTERM]
        .into_iter()
        .filter_map(|signal| {
            let cancel = cancel.clone();
            // SAFETY: the action only swaps an atomic and may call `_exit`, both
            // async-signal-safe.
            unsafe {
                signal_hook_registry::register(signal, move || {
                    if cancel.swap(true, Ordering::SeqCst) {
                        libc::_exit(130);
                    }
                })
            }
            .ok()
        })
        .collect()
}

/// Counts the scope's files and bytes in the background (for the ETA) and writes a
/// progress line to `out` (standard error) `every` so often until `done`.
fn spawn_progress(
    req: &SweepRequest,
    done: Arc<AtomicBool>,
    mut out: impl Write + Send + 'static,
    every: std::time::Duration,
) -> std::thread::JoinHandle<()> {
    let scope = req.scope.clone();
    let progress = req.progress.clone().unwrap_or_default();
    std::thread::spawn(move || {
        let total_bytes = Arc::new(AtomicU64::new(0));
        let total_files = Arc::new(AtomicU64::new(0));
        let counted = Arc::new(AtomicBool::new(false));
        {
            let (tb, tf, c, d, scope, progress) = (
                total_bytes.clone(),
                total_files.clone(),
                counted.clone(),
                done.clone(),
                scope.clone(),
                progress.clone(),
            );
            std::thread::spawn(move || {
                // Counts what the sweep counts: sizes only where the sweep stats every
                // file, so that this walk does not stat what the sweep spares.
                let sizes = loop {
                    if let Some(sizes) = progress.counts_sizes.get() {
                        break *sizes;
                    }
                    if d.load(Ordering::Relaxed) {
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                };
                let (roots, skip) = crate::scope_roots(&scope);
                let ex = crate::walk::Excludes::new(&scope.exclude);
                let cfg = crate::walk::WalkConfig {
                    host_root: &scope.host_root,
                    excludes: &ex,
                    skip_dirs: &skip,
                    one_file_system: scope.one_file_system,
                    threads: 1,
                    cancel: &d,
                    file_status: if sizes {
                        crate::walk::FileStatus::ByName
                    } else {
                        crate::walk::FileStatus::Deferred
                    },
                };
                crate::walk::walk(
                    &roots,
                    &cfg,
                    |file| {
                        tf.fetch_add(1, Ordering::Relaxed);
                        if sizes {
                            tb.fetch_add(file.meta().map_or(0, |m| m.size()), Ordering::Relaxed);
                        }
                    },
                    |_, _| {},
                    |_, _| {},
                );
                c.store(true, Ordering::Relaxed);
            });
        }
        let start = std::time::Instant::now();
        while !done.load(Ordering::Relaxed) {
            std::thread::sleep(every);
            let files = progress.files.load(Ordering::Relaxed);
            let secs = start.elapsed().as_secs_f64().max(0.001);
            let counted = counted.load(Ordering::Relaxed);
            let line = if progress.counts_sizes.get() == Some(&true) {
                let bytes = progress.bytes.load(Ordering::Relaxed);
                let total = counted.then(|| total_bytes.load(Ordering::Relaxed));
                // Share done and ETA first: a narrow terminal cuts the line's end.
                format!(
                    "{}  {files} files, {} ({}/s, {:.0} files/s), read {}",
                    eta(total, bytes, secs),
                    human(bytes as f64),
                    human(bytes as f64 / secs),
                    files as f64 / secs,
                    progress.read.load(Ordering::Relaxed),
                )
            } else {
                let total = counted.then(|| total_files.load(Ordering::Relaxed));
                format!(
                    "{}  {files} files ({:.0} files/s), read {}",
                    eta(total, files, secs),
                    files as f64 / secs,
                    progress.read.load(Ordering::Relaxed),
                )
            };
            let _ = out.write_all(redraw(&line, terminal_width()).as_bytes());
            let _ = out.flush();
        }
        let _ = writeln!(out);
    })
}

/// What redraws the progress line in place: back to the line's start, the line cut to
/// the terminal's width (a wrapped line would scroll on every redraw), then an erase to
/// the end of the line (a shorter line leaves nothing of the last behind).
fn redraw(line: &str, width: Option<usize>) -> String {
    let shown: String = match width {
        Some(w) if w > 1 => line.chars().take(w - 1).collect(),
        _ => line.to_string(),
    };
    format!("\r{shown}\x1b[K")
}

/// The width of the terminal on standard error, if it is one that says.
fn terminal_width() -> Option<usize> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` through the pointer, which is valid.
    let ok = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    (ok && size.ws_col > 0).then_some(usize::from(size.ws_col))
}

/// The progress line's estimate of the time left: `total` units of work in the scope
/// (once counted: bytes, or files where the sweep does not count sizes), `done` of them
/// after `secs` seconds. Until the background count is done there is no total to show.
fn eta(total: Option<u64>, done: u64, secs: f64) -> String {
    let Some(total) = total else {
        return "ETA after the count".into();
    };
    let rate = done as f64 / secs;
    let percent = (done.min(total) as f64 * 100.0 / total.max(1) as f64).floor();
    if rate > 0.0 {
        let left = total.saturating_sub(done) as f64 / rate;
        format!("{percent:.0}%, ETA {}", duration(left))
    } else {
        format!("{percent:.0}%, ETA ?")
    }
}

/// `secs` as `42s`, `3m05s` or `2h07m`.
fn duration(secs: f64) -> String {
    let s = secs.round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// Writes the human-readable report.
pub fn print_text(out: &mut impl Write, r: &SweepReport) -> std::io::Result<()> {
    // Indicator documents come from outside as much as file names do: their names, ids
    // and values are shown escaped, so that a hostile document cannot forge a line of
    // the report or send escapes to the terminal.
    let v = |text: &str| riposte_model::path_text::shown(text).into_owned();
    for h in &r.hits {
        // An indicator without a description goes by its id.
        let name = if h.ioc_name.trim().is_empty() {
            &h.ioc_id
        } else {
            &h.ioc_name
        };
        writeln!(out, "HIT {} [{}] ({})", v(name), v(&h.ioc_id), v(&h.origin))?;
        writeln!(out, "    {}", h.item)?;
        for t in &h.matched {
            writeln!(
                out,
                "      {} {} \"{}\" (term {})",
                v(&t.search),
                v(&t.condition),
                v(&t.value),
                v(&t.id)
            )?;
        }
    }
    let count = |v: Verdict| r.iocs.iter().filter(|i| i.verdict == v).count();
    writeln!(
        out,
        "indicators: {} ({} {}, {} {}, {} {}); hits: {}",
        r.iocs.len(),
        count(Verdict::Hit),
        Verdict::Hit,
        count(Verdict::NoMatch),
        Verdict::NoMatch,
        count(Verdict::Undetermined),
        Verdict::Undetermined,
        r.hits.len()
    )?;
    if r.yara_rules > 0 {
        // Hits of no indicator listed are the rules'.
        let mut matched: Vec<(&str, &str)> = r
            .hits
            .iter()
            .filter(|h| {
                !r.iocs
                    .iter()
                    .any(|i| i.id == h.ioc_id && i.origin == h.origin)
            })
            .map(|h| (h.origin.as_str(), h.ioc_id.as_str()))
            .collect();
        matched.sort_unstable();
        matched.dedup();
        writeln!(
            out,
            "YARA rules: {} ({} matched)",
            r.yara_rules,
            matched.len()
        )?;
    }
    // Undetermined without an unsupported term: a term could not be decided somewhere
    // (a file unreadable or over the size limit, items not collected).
    let unsure: Vec<_> = r
        .iocs
        .iter()
        .filter(|i| i.verdict == Verdict::Undetermined && i.unsupported.is_empty())
        .collect();
    if !unsure.is_empty() {
        writeln!(
            out,
            "undetermined (a term could not be decided: unreadable or too large files, items not collected):"
        )?;
        for i in unsure {
            writeln!(out, "  {} [{}] ({})", v(&i.name), v(&i.id), v(&i.origin))?;
            for why in &i.undetermined_because {
                writeln!(out, "    because {}", v(why))?;
            }
        }
    }
    let with_unsupported: Vec<_> = r
        .iocs
        .iter()
        .filter(|i| !i.unsupported.is_empty())
        .collect();
    if !with_unsupported.is_empty() {
        writeln!(out, "unsupported terms:")?;
        for i in with_unsupported {
            writeln!(out, "  {} [{}] ({}):", v(&i.name), v(&i.id), i.verdict)?;
            for u in &i.unsupported {
                writeln!(out, "    {} {}: {}", v(&u.id), v(&u.search), v(&u.reason))?;
            }
            for why in &i.undetermined_because {
                writeln!(out, "    also because {}", v(why))?;
            }
        }
    }
    for w in &r.warnings {
        writeln!(out, "warning: {}", v(w))?;
    }
    let s = &r.stats;
    write!(
        out,
        "files: {} seen, {} read ({}), {} ms",
        s.files_seen,
        s.files_read,
        human(s.bytes_read as f64),
        s.elapsed_ms
    )?;
    if s.hits_hashed > 0 {
        write!(
            out,
            "; hits hashed for their SHA-256: {} ({})",
            s.hits_hashed,
            human(s.hits_hashed_bytes as f64)
        )?;
    }
    if s.gone > 0 {
        write!(out, "; gone during the sweep: {}", s.gone)?;
    }
    for (k, v) in &s.skipped {
        write!(out, "; {k}: {v}")?;
    }
    writeln!(out)?;
    if !s.items.is_empty() {
        let items: Vec<String> = s.items.iter().map(|(k, v)| format!("{v} {k}")).collect();
        writeln!(out, "items: {}", items.join(", "))?;
    }
    for u in r.unreadable.iter().take(20) {
        writeln!(out, "unreadable: {} ({})", u.path, u.error)?;
    }
    if r.cancelled {
        writeln!(out, "cancelled before completion")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{eta, redraw, spawn_progress};
    use crate::{Progress, Scope, SweepRequest};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    /// What the progress thread wrote, shared with the test.
    #[derive(Clone, Default)]
    struct Screen(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Screen {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Screen {
        /// The last line drawn (lines are redrawn after a carriage return, and end with
        /// an erase to the end of the line).
        fn last_line(&self) -> String {
            let text = String::from_utf8_lossy(&self.0.lock().unwrap()).to_string();
            let last = text.rsplit('\r').next().unwrap_or_default();
            last.trim_end().trim_end_matches("\x1b[K").to_string()
        }
    }

    #[test]
    fn a_redrawn_line_fits_the_terminal_and_erases_what_was_there() {
        let line = "40%, ETA 3s  12 files, 3.4 MB (1.0 MB/s, 10 files/s), read 2";
        assert_eq!(redraw(line, Some(30)), format!("\r{}\x1b[K", &line[..29]));
        assert_eq!(redraw(line, None), format!("\r{line}\x1b[K"));
        assert_eq!(
            redraw("é".repeat(50).as_str(), Some(11)),
            format!("\r{}\x1b[K", "é".repeat(10))
        );
    }

    #[test]
    fn the_progress_line_shows_counts_rate_share_done_and_eta() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("a"), vec![0u8; 3_000_000]).unwrap();
        std::fs::write(tmp.path().join("b"), vec![0u8; 1_000_000]).unwrap();
        let progress = Arc::new(Progress::default());
        let req = SweepRequest {
            scope: Scope {
                paths: vec![tmp.path().to_path_buf()],
                ..Scope::default()
            },
            progress: Some(progress.clone()),
            ..SweepRequest::default()
        };
        // As a sweep that has examined the first file of the two.
        progress.counts_sizes.set(true).unwrap();
        progress.files.store(1, Ordering::Relaxed);
        progress.bytes.store(3_000_000, Ordering::Relaxed);
        progress.read.store(1, Ordering::Relaxed);
        let done = Arc::new(AtomicBool::new(false));
        let screen = Screen::default();
        let thread = spawn_progress(
            &req,
            done.clone(),
            screen.clone(),
            std::time::Duration::from_millis(5),
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        // Three quarters of the bytes counted in the background are done.
        while !screen.last_line().contains("75%, ETA ") {
            assert!(
                std::time::Instant::now() < deadline,
                "{:?}",
                screen.last_line()
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        done.store(true, Ordering::Relaxed);
        thread.join().unwrap();
        let line = screen.last_line();
        // Share and ETA lead: a narrow terminal cuts the line's end, not them.
        assert!(line.starts_with("75%, ETA "), "{line}");
        assert!(line.contains("  1 files, 3.0 MB ("), "{line}");
        assert!(
            line.contains("MB/s, ") && line.ends_with(" files/s), read 1"),
            "{line}"
        );
        assert!(screen.0.lock().unwrap().ends_with(b"\n"), "ends its line");
    }

    #[test]
    fn the_estimate_is_what_is_left_at_the_rate_so_far() {
        // 100 of 1,000 bytes in 2 s: 900 left at 50/s.
        assert_eq!(eta(Some(1000), 100, 2.0), "10%, ETA 18s");
        // Files, where the sweep counts no sizes: 20 of 100 in 1 s.
        assert_eq!(eta(Some(100), 20, 1.0), "20%, ETA 4s");
        assert_eq!(eta(None, 20, 1.0), "ETA after the count");
        assert_eq!(eta(Some(100), 0, 1.0), "0%, ETA ?");
        // More done than counted (files created since the count): nothing left.
        assert_eq!(eta(Some(10), 20, 1.0), "100%, ETA 0s");
        // Long sweeps in minutes and hours: 1 of 1,000 GB in 10 s.
        assert_eq!(eta(Some(1000), 1, 10.0), "0%, ETA 2h46m");
        assert_eq!(eta(Some(1000), 100, 20.0), "10%, ETA 3m00s");
    }
}
