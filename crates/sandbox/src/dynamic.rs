//! Dynamic analysis: run an ELF program or script in a throw-away bubblewrap jail under
//! `strace`, and turn the system-call trace into behaviour IOCs and a verdict.
//!
//! Why this design: bubblewrap gives an unprivileged, per-run jail with no network
//! (`--unshare-all`), read-only system binds and private writable scratch directories,
//! torn down with the run (`--die-with-parent`); `strace -f` inside the jail sees every
//! file, process and network call the object makes without a kernel module. Writes land
//! in scratch directories bind-mounted from a host temp dir, so dropped files can be
//! hashed after the run and nothing reaches the host's real paths. Connection attempts
//! fail (no network) but are still recorded; DNS lookups go to a stub resolver address
//! on the jail's loopback, so the queried names appear in the trace.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use riposte_model::path_text;

use crate::report::{Destination, Evidence, FileIoc, PersistenceIoc, ProcessIoc, Report, Verdict};
use crate::SandboxError;

/// Jail limits and tool locations.
#[derive(Debug, Clone)]
pub struct JailConfig {
    /// `bwrap` binary.
    pub bwrap: PathBuf,
    /// `strace` binary (as seen inside the jail; `/usr` is bound read-only).
    pub strace: PathBuf,
    /// Wall-clock limit for the object's run.
    pub timeout: Duration,
    /// Address-space limit in bytes (`prlimit --as`).
    pub memory_bytes: u64,
    /// Largest file the object may write (`prlimit --fsize`).
    pub max_file_bytes: u64,
    /// Largest dropped file that is read back and hashed.
    pub max_hashed_file: u64,
}

impl Default for JailConfig {
    fn default() -> Self {
        JailConfig {
            bwrap: PathBuf::from("/usr/bin/bwrap"),
            strace: PathBuf::from("/usr/bin/strace"),
            timeout: Duration::from_secs(10),
            memory_bytes: 1 << 30,
            max_file_bytes: 64 << 20,
            max_hashed_file: 64 << 20,
        }
    }
}

/// `true` if `data` is something the jail can run: an ELF file or a `#!` script.
pub fn is_runnable(data: &[u8]) -> bool {
    data.starts_with(b"\x7fELF") || data.starts_with(b"#!")
}

/// What the object did, from the trace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Behaviour {
    /// Files written inside the jail's writable scratch areas, hashed.
    pub files_written: Vec<FileIoc>,
    /// Write attempts that the jail refused (read-only or missing system paths).
    pub writes_denied: Vec<String>,
    /// Programs started (successful `execve`, the object itself excluded).
    pub processes: Vec<ProcessIoc>,
    /// Connection attempts to non-loopback addresses.
    pub destinations: Vec<Destination>,
    /// DNS names queried.
    pub domains: Vec<String>,
    /// Persistence locations touched.
    pub persistence: Vec<PersistenceIoc>,
    /// Whether the run hit the time limit.
    pub timed_out: bool,
}

/// Runs objects in the jail.
#[derive(Debug, Clone, Default)]
pub struct DynamicAnalyzer {
    config: JailConfig,
}

/// Where the jail's writable areas live inside the jail → name of the scratch subdir.
const WRITABLE: &[(&str, &str)] = &[("/tmp", "tmp"), ("/root", "home"), ("/var/tmp", "vartmp")];
/// Where the object is placed inside the jail.
const SAMPLE_DIR: &str = "/.riposte-sample";
const TRACE_DIR: &str = "/.riposte-trace";

impl DynamicAnalyzer {
    /// Analyzer with `config`.
    pub fn new(config: JailConfig) -> Self {
        DynamicAnalyzer { config }
    }

    /// Check that a jail can be created on this host (runs `/bin/true` in one).
    pub async fn probe(&self) -> Result<(), SandboxError> {
        let mut cmd = tokio::process::Command::new(&self.config.bwrap);
        cmd.args(jail_args())
            .args(["--", "/usr/bin/true"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(10), cmd.output())
            .await
            .map_err(|_| SandboxError::Jail("bwrap probe timed out".into()))?
            .map_err(|e| {
                SandboxError::Jail(format!(
                    "cannot run {}: {e} (install the Debian package bubblewrap)",
                    self.config.bwrap.display()
                ))
            })?;
        if !out.status.success() {
            return Err(SandboxError::Jail(format!(
                "bwrap failed ({}): {} — user namespaces may be disabled on this host",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        if !self.config.strace.exists() {
            return Err(SandboxError::Jail(format!(
                "{} not found (install the Debian package strace)",
                self.config.strace.display()
            )));
        }
        Ok(())
    }

    /// Run `data` (named `name`) in a fresh jail and collect its behaviour.
    pub async fn run(&self, name: &str, data: &[u8]) -> Result<Behaviour, SandboxError> {
        if !is_runnable(data) {
            return Err(SandboxError::Jail(
                "object is neither an ELF program nor a #! script".into(),
            ));
        }
        let scratch = tempfile::Builder::new()
            .prefix("riposte-jail-")
            .tempdir()
            .map_err(|e| SandboxError::io("create jail scratch dir in", std::env::temp_dir(), e))?;
        let root = scratch.path();
        let mkdir =
            |p: &Path| std::fs::create_dir_all(p).map_err(|e| SandboxError::io("create", p, e));
        for (_, sub) in WRITABLE {
            mkdir(&root.join(sub))?;
        }
        mkdir(&root.join("sample"))?;
        mkdir(&root.join("trace"))?;
        let file_name = sanitize_name(name);
        let sample = root.join("sample").join(&file_name);
        std::fs::write(&sample, data).map_err(|e| SandboxError::io("write", &sample, e))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&sample, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| SandboxError::io("chmod", &sample, e))?;
        }
        let resolv = root.join("resolv.conf");
        std::fs::write(
            &resolv,
            "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
        )
        .map_err(|e| SandboxError::io("write", &resolv, e))?;

        let jail_sample = format!("{SAMPLE_DIR}/{file_name}");
        let trace_file = format!("{TRACE_DIR}/trace.txt");
        let secs = self.config.timeout.as_secs().max(1).to_string();
        let mut cmd = tokio::process::Command::new(&self.config.bwrap);
        cmd.args(jail_args())
            .arg("--ro-bind")
            .arg(&resolv)
            .arg("/etc/resolv.conf");
        for (inside, sub) in WRITABLE {
            cmd.arg("--bind").arg(root.join(sub)).arg(inside);
        }
        cmd.arg("--ro-bind")
            .arg(root.join("sample"))
            .arg(SAMPLE_DIR)
            .arg("--bind")
            .arg(root.join("trace"))
            .arg(TRACE_DIR)
            .args([
                "--chdir",
                "/tmp",
                "--",
                "/usr/bin/timeout",
                "-s",
                "KILL",
                &secs,
            ])
            .arg("/usr/bin/prlimit")
            .arg(format!("--as={}", self.config.memory_bytes))
            .arg(format!("--fsize={}", self.config.max_file_bytes))
            .arg("--nproc=256")
            .arg("--")
            .arg(&self.config.strace)
            .args([
                "-f",
                "-qq",
                "-s",
                "512",
                "-e",
                "trace=file,process,network",
                "-o",
            ])
            .arg(&trace_file)
            .arg("--")
            .arg(&jail_sample)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let started = Instant::now();
        let outer = self.config.timeout + Duration::from_secs(5);
        let out = match tokio::time::timeout(outer, cmd.output()).await {
            Ok(r) => r.map_err(|e| {
                SandboxError::Jail(format!(
                    "cannot start {}: {e} (install the Debian package bubblewrap)",
                    self.config.bwrap.display()
                ))
            })?,
            Err(_) => {
                return Err(SandboxError::Jail(format!(
                    "jail did not finish within {outer:?}"
                )))
            }
        };
        let trace_path = root.join("trace").join("trace.txt");
        let trace = std::fs::read(&trace_path).map_err(|_| {
            SandboxError::Jail(format!(
                "no trace produced (bwrap exit {}: {})",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        })?;
        let text = String::from_utf8_lossy(&trace);
        let trace = parse_strace(&text, &jail_sample);
        let mut b = Behaviour {
            timed_out: started.elapsed() >= self.config.timeout,
            ..Default::default()
        };
        for w in &trace.written {
            match host_path(root, w) {
                Some(host) => {
                    if let Ok(meta) = std::fs::metadata(&host) {
                        if meta.is_file() && meta.len() <= self.config.max_hashed_file {
                            if let Ok(bytes) = std::fs::read(&host) {
                                b.files_written
                                    .push(FileIoc::from_bytes(Some(w.clone()), &bytes));
                            }
                        }
                    }
                }
                None => b.writes_denied.push(w.clone()),
            }
        }
        b.writes_denied.extend(trace.write_failed.iter().cloned());
        b.writes_denied.sort();
        b.writes_denied.dedup();
        b.processes = trace.execs;
        b.destinations = trace.connects;
        b.domains = trace.dns_names;
        for (path, ok) in trace.touched {
            if let Some(kind) = persistence_kind(&path) {
                b.persistence.push(PersistenceIoc {
                    location: path,
                    kind: kind.to_string(),
                    succeeded: ok,
                });
            }
        }
        drop(scratch);
        Ok(b)
    }

    /// Run the object and produce a report (verdict from [`behaviour_verdict`]).
    pub async fn analyse(&self, name: &str, data: &[u8]) -> Result<Report, SandboxError> {
        let b = self.run(name, data).await?;
        let mut report = Report::new("riposte-dynamic", name);
        apply_behaviour(&mut report, &b);
        report.iocs.object = Some(FileIoc::from_bytes(Some(name.to_string()), data));
        Ok(report)
    }
}

/// Fill `report` with the behaviour IOCs and the behaviour rules' verdict.
pub fn apply_behaviour(report: &mut Report, b: &Behaviour) {
    let (verdict, threat, evidence) = behaviour_verdict(b);
    report.evidence.extend(evidence);
    report.raise(verdict, threat.as_deref());
    report
        .iocs
        .dropped_files
        .extend(b.files_written.iter().cloned());
    report.iocs.processes.extend(b.processes.iter().cloned());
    report
        .iocs
        .destinations
        .extend(b.destinations.iter().cloned());
    report.iocs.domains.extend(b.domains.iter().cloned());
    report
        .iocs
        .persistence
        .extend(b.persistence.iter().cloned());
    if b.timed_out {
        report
            .notes
            .push("dynamic run hit the time limit; behaviour may be incomplete".into());
    }
}

fn base_jail_args() -> Vec<&'static str> {
    vec![
        "--unshare-all",
        "--die-with-parent",
        "--new-session",
        "--clearenv",
        "--setenv",
        "PATH",
        "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        "--setenv",
        "HOME",
        "/root",
        "--hostname",
        "sandbox",
        "--ro-bind",
        "/usr",
        "/usr",
        "--symlink",
        "usr/bin",
        "/bin",
        "--symlink",
        "usr/sbin",
        "/sbin",
        "--symlink",
        "usr/lib",
        "/lib",
        "--symlink",
        "usr/lib64",
        "/lib64",
        "--ro-bind",
        "/etc",
        "/etc",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
    ]
}

/// Host secrets under the read-only `/etc` bind that the object must not read.
const HIDDEN_FILES: &[&str] = &[
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
];
const HIDDEN_DIRS: &[&str] = &["/etc/ssh", "/etc/ssl/private", "/etc/riposte"];

/// Base jail arguments plus masks over host secrets that exist on this host.
fn jail_args() -> Vec<String> {
    let mut v: Vec<String> = base_jail_args().into_iter().map(String::from).collect();
    for f in HIDDEN_FILES {
        if Path::new(f).exists() {
            v.extend(["--ro-bind".into(), "/dev/null".into(), (*f).into()]);
        }
    }
    for d in HIDDEN_DIRS {
        if Path::new(d).is_dir() {
            v.extend([
                "--tmpfs".into(),
                (*d).into(),
                "--remount-ro".into(),
                (*d).into(),
            ]);
        }
    }
    v
}

fn sanitize_name(name: &str) -> String {
    let base = name.rsplit('/').next().unwrap_or(name);
    let s: String = base
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(64)
        .collect();
    if s.is_empty() || s.starts_with('.') {
        format!("sample{s}")
    } else {
        s
    }
}

/// Map a path inside the jail (in its `path_text` form, as the trace's paths are kept) to
/// the host scratch path if it is in a writable area: decoded, so that a file the sample
/// named with bytes that are not UTF-8 is found and hashed.
fn host_path(root: &Path, jail_path: &str) -> Option<PathBuf> {
    for (inside, sub) in WRITABLE {
        if let Some(rest) = jail_path.strip_prefix(inside) {
            if rest.is_empty() || rest.starts_with('/') {
                let rest = path_text::decode(rest.trim_start_matches('/'));
                // Checked after decoding: only plain names may lead below the scratch area.
                if !rest
                    .components()
                    .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
                {
                    return None;
                }
                return Some(root.join(sub).join(rest));
            }
        }
    }
    None
}

/// Classify a path as a persistence location.
pub fn persistence_kind(path: &str) -> Option<&'static str> {
    let home_rel = path.strip_prefix("/root/").or_else(|| {
        path.strip_prefix("/home/")
            .and_then(|r| r.split_once('/').map(|(_, rest)| rest))
    });
    if let Some(rel) = home_rel {
        let kind = match rel {
            ".bashrc" | ".profile" | ".bash_profile" | ".bash_login" | ".zshrc" | ".zprofile"
            | ".bash_logout" => Some("shell-profile"),
            r if r.starts_with(".config/autostart/") => Some("autostart"),
            r if r.starts_with(".config/systemd/") => Some("systemd"),
            r if r.starts_with(".ssh/authorized_keys") => Some("ssh-authorized-keys"),
            _ => None,
        };
        if kind.is_some() {
            return kind;
        }
    }
    let rules: &[(&str, &str)] = &[
        ("/etc/cron", "cron"),
        ("/var/spool/cron", "cron"),
        ("/etc/anacrontab", "cron"),
        ("/etc/systemd/", "systemd"),
        ("/lib/systemd/system", "systemd"),
        ("/usr/lib/systemd/system", "systemd"),
        ("/etc/init.d/", "init"),
        ("/etc/rc.local", "init"),
        ("/etc/profile", "shell-profile"),
        ("/etc/bash.bashrc", "shell-profile"),
        ("/etc/xdg/autostart/", "autostart"),
        ("/etc/ld.so.preload", "ld-preload"),
        ("/etc/sudoers", "sudoers"),
        ("/etc/udev/rules.d/", "udev"),
        ("/etc/update-motd.d/", "motd"),
        ("/root/.ssh/authorized_keys", "ssh-authorized-keys"),
    ];
    rules
        .iter()
        .find(|(prefix, _)| path.starts_with(prefix))
        .map(|(_, k)| *k)
}

/// Turn behaviour into a verdict, threat name and evidence.
///
/// Rules: touching a persistence location, or executing a file the object itself
/// wrote, is malicious; connecting out to a non-local address is suspicious.
pub fn behaviour_verdict(b: &Behaviour) -> (Verdict, Option<String>, Vec<Evidence>) {
    let mut verdict = Verdict::Clean;
    let mut threat = None;
    let mut ev = Vec::new();
    for p in &b.persistence {
        ev.push(Evidence {
            engine: "behaviour".into(),
            rule: format!("persistence:{}", p.kind),
            detail: format!(
                "{} {} ({})",
                if p.succeeded {
                    "modified"
                } else {
                    "tried to modify"
                },
                p.location,
                p.kind
            ),
            severity: 9,
        });
        if verdict < Verdict::Malicious {
            verdict = Verdict::Malicious;
            threat = Some(format!("Linux.Persistence.{}", p.kind));
        }
    }
    let written: BTreeSet<&str> = b
        .files_written
        .iter()
        .filter_map(|f| f.path.as_deref())
        .collect();
    for p in &b.processes {
        if written.contains(p.path.as_str()) {
            ev.push(Evidence {
                engine: "behaviour".into(),
                rule: "drop-and-execute".into(),
                detail: format!("executed {} which it wrote itself", p.path),
                severity: 8,
            });
            if verdict < Verdict::Malicious {
                verdict = Verdict::Malicious;
                threat = Some("Linux.Dropper".into());
            }
        }
    }
    for d in &b.destinations {
        ev.push(Evidence {
            engine: "behaviour".into(),
            rule: "network-connect".into(),
            detail: format!(
                "tried to connect to {}:{} ({})",
                d.ip,
                d.port.map(|p| p.to_string()).unwrap_or_default(),
                d.protocol
            ),
            severity: 4,
        });
        if verdict < Verdict::Suspicious {
            verdict = Verdict::Suspicious;
            threat = Some("Linux.Suspicious.NetworkConnect".into());
        }
    }
    (verdict, threat, ev)
}

/// Facts extracted from an strace log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Trace {
    /// Paths opened for writing successfully (absolute, jail view).
    pub written: Vec<String>,
    /// Paths whose write attempt failed.
    pub write_failed: Vec<String>,
    /// Every path a write was attempted on, with success.
    pub touched: Vec<(String, bool)>,
    /// Successful execs (the object itself excluded).
    pub execs: Vec<ProcessIoc>,
    /// Connection attempts to non-loopback IP addresses.
    pub connects: Vec<Destination>,
    /// DNS names queried.
    pub dns_names: Vec<String>,
}

/// Parse `strace -f` output. `sample_path` is the object's path inside the jail.
pub fn parse_strace(text: &str, sample_path: &str) -> Trace {
    let mut pending: HashMap<String, String> = HashMap::new();
    let mut t = Trace::default();
    let mut cwd: HashMap<String, String> = HashMap::new();
    let mut socket_kind: HashMap<(String, String), &'static str> = HashMap::new();
    for raw in text.lines() {
        let raw = raw.trim_end();
        let (pid, rest) = match raw.split_once(char::is_whitespace) {
            Some((p, r)) if p.bytes().all(|b| b.is_ascii_digit()) => {
                (p.to_string(), r.trim_start())
            }
            _ => ("0".to_string(), raw),
        };
        let line = if let Some(prefix) = rest.strip_suffix("<unfinished ...>") {
            pending.insert(pid, prefix.to_string());
            continue;
        } else if let Some(after) = rest.strip_prefix("<... ") {
            let Some((_, tail)) = after.split_once(" resumed>") else {
                continue;
            };
            match pending.remove(&pid) {
                Some(prefix) => format!("{prefix}{tail}"),
                None => continue,
            }
        } else {
            rest.to_string()
        };
        let Some((name, args, ret)) = split_call(&line) else {
            continue;
        };
        let ok = !ret.starts_with('-') && ret != "?";
        let strings = quoted_strings(args);
        let resolve = |p: &str, cwd: &HashMap<String, String>| -> String {
            if p.starts_with('/') {
                normalize(p)
            } else {
                let base = cwd.get(&pid).map(String::as_str).unwrap_or("/tmp");
                normalize(&format!("{base}/{p}"))
            }
        };
        match name {
            "open" | "openat" | "creat" | "open_by_handle_at" | "openat2" => {
                let Some(path) = strings.first() else {
                    continue;
                };
                let path = path_text::encode_bytes(path);
                let writes = name == "creat"
                    || args.contains("O_WRONLY")
                    || args.contains("O_RDWR")
                    || args.contains("O_CREAT")
                    || args.contains("O_TRUNC");
                if !writes || is_noise_path(&path) {
                    continue;
                }
                let full = resolve(&path, &cwd);
                record_write(&mut t, full, ok);
            }
            "rename" | "renameat" | "renameat2" | "link" | "linkat" | "symlink" | "symlinkat"
            | "truncate" => {
                let target = if name == "truncate" {
                    strings.first()
                } else {
                    strings.get(1)
                };
                if let Some(p) = target {
                    let full = resolve(&path_text::encode_bytes(p), &cwd);
                    record_write(&mut t, full, ok);
                }
            }
            "chdir" if ok => {
                if let Some(p) = strings.first() {
                    let full = resolve(&path_text::encode_bytes(p), &cwd);
                    cwd.insert(pid.clone(), full);
                }
            }
            "execve" | "execveat" if ok => {
                let Some(path) = strings.first() else {
                    continue;
                };
                let path = path_text::encode_bytes(path);
                if path == sample_path {
                    continue;
                }
                let argv: Vec<String> = strings[1..]
                    .iter()
                    .map(|a| String::from_utf8_lossy(a).to_string())
                    .collect();
                t.execs.push(ProcessIoc {
                    path: resolve(&path, &cwd),
                    command_line: argv.join(" "),
                });
            }
            "socket" if ok => {
                let kind = if args.contains("SOCK_DGRAM") {
                    "udp"
                } else {
                    "tcp"
                };
                socket_kind.insert((pid.clone(), ret.trim().to_string()), kind);
            }
            "connect" | "sendto" | "sendmsg" | "sendmmsg" => {
                if let Some((ip, port)) = sockaddr(args) {
                    let loopback = ip.is_loopback() || ip.is_unspecified();
                    if !loopback {
                        let fd = args.split(',').next().unwrap_or("").trim().to_string();
                        let proto = socket_kind
                            .get(&(pid.clone(), fd))
                            .copied()
                            .unwrap_or("unknown");
                        let d = Destination {
                            ip: ip.to_string(),
                            port: Some(port),
                            protocol: proto.to_string(),
                        };
                        if !t.connects.contains(&d) {
                            t.connects.push(d);
                        }
                    }
                }
                if name != "connect" {
                    for s in &strings {
                        if let Some(q) = dns_query_name(s) {
                            if !t.dns_names.contains(&q) {
                                t.dns_names.push(q);
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    t
}

fn record_write(t: &mut Trace, path: String, ok: bool) {
    if !t.touched.contains(&(path.clone(), ok)) {
        t.touched.push((path.clone(), ok));
    }
    let list = if ok {
        &mut t.written
    } else {
        &mut t.write_failed
    };
    if !list.contains(&path) {
        list.push(path);
    }
}

fn is_noise_path(p: &str) -> bool {
    p.starts_with("/dev/")
        || p.starts_with("/proc/")
        || p.starts_with("/sys/")
        || p.starts_with(TRACE_DIR)
}

fn normalize(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Split `name(args) = ret` into its parts.
fn split_call(line: &str) -> Option<(&str, &str, &str)> {
    let open = line.find('(')?;
    let name = &line[..open];
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return None;
    }
    let eq = line.rfind(" = ")?;
    let call = line[..eq].trim_end();
    let close = call.strip_suffix(')')?.len();
    if close < open {
        return None;
    }
    Some((name, &line[open + 1..close], line[eq + 3..].trim()))
}

/// Decode every double-quoted strace string in `args` to bytes.
fn quoted_strings(args: &str) -> Vec<Vec<u8>> {
    let b = args.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'"' {
            i += 1;
            continue;
        }
        i += 1;
        let mut s = Vec::new();
        while i < b.len() && b[i] != b'"' {
            if b[i] == b'\\' && i + 1 < b.len() {
                i += 1;
                match b[i] {
                    b'n' => s.push(b'\n'),
                    b't' => s.push(b'\t'),
                    b'r' => s.push(b'\r'),
                    b'v' => s.push(0x0b),
                    b'f' => s.push(0x0c),
                    b'x' => {
                        let hex = args.get(i + 1..i + 3).unwrap_or("");
                        if let Ok(v) = u8::from_str_radix(hex, 16) {
                            s.push(v);
                            i += 2;
                        }
                    }
                    b'0'..=b'7' => {
                        let mut v: u32 = 0;
                        let mut n = 0;
                        while n < 3 && i < b.len() && (b'0'..=b'7').contains(&b[i]) {
                            v = v * 8 + u32::from(b[i] - b'0');
                            i += 1;
                            n += 1;
                        }
                        s.push(v as u8);
                        continue;
                    }
                    c => s.push(c),
                }
                i += 1;
            } else {
                s.push(b[i]);
                i += 1;
            }
        }
        i += 1;
        out.push(s);
    }
    out
}

/// Extract the IP and port from an strace-printed sockaddr.
fn sockaddr(args: &str) -> Option<(IpAddr, u16)> {
    let port_key = if args.contains("sin6_port=htons(") {
        "sin6_port=htons("
    } else {
        "sin_port=htons("
    };
    let p = args.find(port_key)? + port_key.len();
    let port: u16 = args[p..].split(')').next()?.parse().ok()?;
    let ip = if let Some(i) = args.find("inet_addr(\"") {
        let s = &args[i + 11..];
        s.split('"').next()?.parse().ok()?
    } else if let Some(i) = args.find("inet_pton(AF_INET6, \"") {
        let s = &args[i + 21..];
        s.split('"').next()?.parse().ok()?
    } else {
        return None;
    };
    Some((ip, port))
}

/// If `buf` is a DNS query, return the queried name.
fn dns_query_name(buf: &[u8]) -> Option<String> {
    if buf.len() < 17 {
        return None;
    }
    let flags = u16::from_be_bytes([buf[2], buf[3]]);
    let qd = u16::from_be_bytes([buf[4], buf[5]]);
    let an = u16::from_be_bytes([buf[6], buf[7]]);
    if flags & 0x8000 != 0 || qd != 1 || an != 0 {
        return None;
    }
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = *buf.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        let label = buf.get(i..i + len)?;
        if !label
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
        {
            return None;
        }
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        i += len;
    }
    // QTYPE and QCLASS follow; class must be IN.
    let class = buf.get(i + 2..i + 4)?;
    if labels.is_empty() || class != [0, 1] {
        return None;
    }
    Some(labels.join("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_strace_lines() {
        let text = r#"6     execve("/.riposte-sample/s.sh", ["/.riposte-sample/s.sh"], 0x7ffe /* 3 vars */) = 0
6     openat(AT_FDCWD, "/tmp/dd/x.txt", O_WRONLY|O_CREAT|O_TRUNC, 0666) = 3
6     openat(AT_FDCWD, "/etc/cron.d/evil", O_WRONLY|O_CREAT|O_APPEND, 0666) = -1 EROFS (Read-only file system)
6     openat(AT_FDCWD, "/etc/passwd", O_RDONLY|O_CLOEXEC) = 3
8     execve("/usr/bin/id", ["id", "-u"], 0x55d2 /* 39 vars */ <unfinished ...>
8     <... execve resumed>)             = 0
9     execve("/usr/bin/nope", ["nope"], 0x55d2 /* 39 vars */) = -1 ENOENT (No such file or directory)
10    socket(AF_INET, SOCK_STREAM, IPPROTO_TCP) = 3
10    connect(3, {sa_family=AF_INET, sin_port=htons(4444), sin_addr=inet_addr("203.0.113.7")}, 16) = -1 ENETUNREACH (Network is unreachable)
11    connect(3, {sa_family=AF_INET, sin_port=htons(53), sin_addr=inet_addr("127.0.0.1")}, 16) = 0
11    sendto(3, "\3115\1\0\0\1\0\0\0\0\0\0\4evil\7example\3com\0\0\34\0\1", 34, MSG_NOSIGNAL, NULL, 0) = 34
12    connect(4, {sa_family=AF_INET6, sin6_port=htons(443), sin6_flowinfo=htonl(0), inet_pton(AF_INET6, "2001:db8::1", &sin6_addr), sin6_scope_id=0}, 28) = -1 ENETUNREACH (Network is unreachable)
"#;
        let t = parse_strace(text, "/.riposte-sample/s.sh");
        assert_eq!(t.written, vec!["/tmp/dd/x.txt"]);
        assert_eq!(t.write_failed, vec!["/etc/cron.d/evil"]);
        assert_eq!(t.execs.len(), 1);
        assert_eq!(t.execs[0].path, "/usr/bin/id");
        assert_eq!(t.execs[0].command_line, "id -u");
        assert_eq!(t.connects.len(), 2);
        assert_eq!(t.connects[0].ip, "203.0.113.7");
        assert_eq!(t.connects[0].port, Some(4444));
        assert_eq!(t.connects[0].protocol, "tcp");
        assert_eq!(t.connects[1].ip, "2001:db8::1");
        assert_eq!(t.dns_names, vec!["evil.example.com"]);
    }

    /// A file the sample names with bytes that are not UTF-8 keeps them in the trace, and
    /// is found in the scratch area to be hashed (its SHA-256 is a dropped-file IOC).
    #[test]
    fn a_written_name_that_is_not_utf8_leads_to_the_file_itself() {
        let text = r#"7     openat(AT_FDCWD, "/tmp/drop\377\376.bin", O_WRONLY|O_CREAT|O_TRUNC, 0666) = 3
7     openat(AT_FDCWD, "/tmp/back\\slash", O_WRONLY|O_CREAT, 0666) = 4
"#;
        let t = parse_strace(text, "/.riposte-sample/s.sh");
        assert_eq!(t.written, ["/tmp/drop\\xff\\xfe.bin", "/tmp/back\\\\slash"]);
        let scratch = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(scratch.path().join("tmp")).unwrap();
        let dropped = scratch.path().join("tmp").join(
            <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"drop\xff\xfe.bin"),
        );
        std::fs::write(&dropped, b"payload").unwrap();
        assert_eq!(host_path(scratch.path(), &t.written[0]), Some(dropped));
        assert_eq!(
            host_path(scratch.path(), &t.written[1]),
            Some(scratch.path().join("tmp/back\\slash"))
        );
        // Whatever a path decodes to, it stays below the scratch area.
        for escape in [
            "/tmp/\\x2e\\x2e/etc/passwd",
            "/tmp/\\x2fetc/passwd",
            "/tmp/../etc",
        ] {
            assert_eq!(host_path(scratch.path(), escape), None, "{escape}");
        }
    }

    #[test]
    fn persistence_paths() {
        assert_eq!(persistence_kind("/etc/cron.d/x"), Some("cron"));
        assert_eq!(persistence_kind("/root/.bashrc"), Some("shell-profile"));
        assert_eq!(
            persistence_kind("/home/bob/.config/autostart/a.desktop"),
            Some("autostart")
        );
        assert_eq!(persistence_kind("/tmp/x"), None);
    }
}
