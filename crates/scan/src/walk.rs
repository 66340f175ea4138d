//! Parallel directory walk with scope rules.
//!
//! Workers share one stack of directories: each pops a directory, lists it, pushes its
//! subdirectories and handles its files itself. With as many workers as cores this
//! keeps every core busy on deep and wide trees alike, with std threads only.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};

/// File-system types never walked: they hold no files at rest.
pub const PSEUDO_FS: &[&str] = &[
    "proc",
    "sysfs",
    "devtmpfs",
    "devpts",
    "cgroup",
    "cgroup2",
    "securityfs",
    "debugfs",
    "tracefs",
    "pstore",
    "bpf",
    "configfs",
    "fusectl",
    "mqueue",
    "hugetlbfs",
    "autofs",
    "binfmt_misc",
    "efivarfs",
    "rpc_pipefs",
    "nsfs",
];
/// Network file-system types, skipped by the *system drives* preset.
pub const NETWORK_FS: &[&str] = &["nfs", "nfs4", "cifs", "smb3", "smbfs", "fuse.sshfs", "9p"];

/// Glob match: `*` and `?` stay within a path segment, `**` crosses segments.
pub fn glob_match(pat: &[u8], s: &[u8]) -> bool {
    match (pat.first(), s.first()) {
        (None, None) => true,
        (None, Some(_)) => false,
        (Some(b'*'), _) if pat.get(1) == Some(&b'*') => {
            let rest = &pat[2..];
            let rest = rest.strip_prefix(b"/").unwrap_or(rest);
            (0..=s.len()).any(|i| glob_match(rest, &s[i..]))
                || (0..=s.len()).any(|i| glob_match(&pat[2..], &s[i..]))
        }
        (Some(b'*'), _) => {
            let mut i = 0;
            loop {
                if glob_match(&pat[1..], &s[i..]) {
                    return true;
                }
                if i >= s.len() || s[i] == b'/' {
                    return false;
                }
                i += 1;
            }
        }
        (Some(b'?'), Some(c)) if *c != b'/' => glob_match(&pat[1..], &s[1..]),
        (Some(p), Some(c)) if p == c => glob_match(&pat[1..], &s[1..]),
        _ => false,
    }
}

/// Exclusion globs: a pattern with a `/` matches the whole device path, one without
/// matches the file name only.
#[derive(Debug, Clone, Default)]
pub struct Excludes(Vec<String>);

impl Excludes {
    /// Wraps the patterns.
    pub fn new(patterns: &[String]) -> Self {
        Excludes(patterns.to_vec())
    }

    /// No patterns: nothing is excluded (lets the walk skip building device paths).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Is this device path excluded?
    pub fn matches(&self, device_path: &str) -> bool {
        let name = device_path.rsplit('/').next().unwrap_or(device_path);
        self.0.iter().any(|p| {
            if p.contains('/') {
                glob_match(p.as_bytes(), device_path.as_bytes())
            } else {
                glob_match(p.as_bytes(), name.as_bytes())
            }
        })
    }
}

/// What the walk needs to decide where to go.
pub struct WalkConfig<'a> {
    /// Host directory standing for the device's `/`.
    pub host_root: &'a Path,
    /// Exclusions on device paths.
    pub excludes: &'a Excludes,
    /// Host paths never descended into (pseudo and, per preset, network mounts).
    pub skip_dirs: &'a [PathBuf],
    /// Stay on each root's file system.
    pub one_file_system: bool,
    /// Worker count.
    pub threads: usize,
    /// Stop early.
    pub cancel: &'a AtomicBool,
}

/// Why a path was not looked at (counted in the report).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SkipReason {
    /// Matched an exclusion glob.
    Excluded,
    /// A pseudo or network file system.
    PseudoFs,
    /// On another file system while `one_file_system` is set.
    OtherFs,
    /// Not a regular file or directory (socket, fifo, device, symlink).
    NotRegular,
}

/// The device path of a host path (`host_root/etc/x` → `/etc/x`).
pub fn device_path(host_root: &Path, p: &Path) -> String {
    match p.strip_prefix(host_root) {
        Ok(rel) => format!("/{}", rel.display()),
        Err(_) => p.display().to_string(),
    }
}

/// Walks `roots` (host paths). `on_file` gets each regular file with its metadata,
/// `on_skip` each skipped path, `on_error` each path that could not be read.
pub fn walk<F, S, E>(roots: &[PathBuf], cfg: &WalkConfig, on_file: F, on_skip: S, on_error: E)
where
    F: Fn(&Path, &Metadata) + Sync,
    S: Fn(&Path, SkipReason) + Sync,
    E: Fn(&Path, &std::io::Error) + Sync,
{
    walk_with(
        roots,
        cfg,
        || (),
        |_, path, meta| on_file(path, meta),
        |_| {},
        on_skip,
        on_error,
    )
}

/// As [`walk`], with state per worker thread: `start` makes it, `on_file` gets it with
/// each file, and `finish` gets it when the worker has no directory left. The sweep
/// keeps its multi-file hashing lanes there.
pub fn walk_with<W, I, F, D, S, E>(
    roots: &[PathBuf],
    cfg: &WalkConfig,
    start: I,
    on_file: F,
    finish: D,
    on_skip: S,
    on_error: E,
) where
    I: Fn() -> W + Sync,
    F: Fn(&mut W, &Path, &Metadata) + Sync,
    D: Fn(W) + Sync,
    S: Fn(&Path, SkipReason) + Sync,
    E: Fn(&Path, &std::io::Error) + Sync,
{
    let queue: DirQueue = Mutex::new(Queue {
        dirs: Vec::new(),
        busy: 0,
    });
    let cv = Condvar::new();
    for root in roots {
        match std::fs::symlink_metadata(root) {
            Ok(m) if m.is_dir() => queue
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .dirs
                .push((root.clone(), m.dev())),
            Ok(m) if m.is_file() => {
                if !cfg.excludes.matches(&device_path(cfg.host_root, root)) {
                    let mut w = start();
                    on_file(&mut w, root, &m);
                    finish(w);
                }
            }
            Ok(_) => on_skip(root, SkipReason::NotRegular),
            Err(e) => on_error(root, &e),
        }
    }
    let threads = cfg.threads.max(1);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut worker = start();
                walk_worker(&queue, &cv, cfg, &mut worker, &on_file, &on_skip, &on_error);
                finish(worker);
            });
        }
    });
}

type DirQueue = Mutex<Queue>;

struct Queue {
    dirs: Vec<(PathBuf, u64)>,
    busy: usize,
}

/// One worker: pops directories until none is left and none is being listed.
fn walk_worker<W, F, S, E>(
    queue: &DirQueue,
    cv: &Condvar,
    cfg: &WalkConfig,
    worker: &mut W,
    on_file: &F,
    on_skip: &S,
    on_error: &E,
) where
    F: Fn(&mut W, &Path, &Metadata) + Sync,
    S: Fn(&Path, SkipReason) + Sync,
    E: Fn(&Path, &std::io::Error) + Sync,
{
    loop {
        let (dir, dev) = {
            let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if cfg.cancel.load(Ordering::Relaxed) {
                    q.dirs.clear();
                }
                if let Some(d) = q.dirs.pop() {
                    q.busy += 1;
                    break d;
                }
                if q.busy == 0 {
                    cv.notify_all();
                    return;
                }
                q = cv.wait(q).unwrap_or_else(|e| e.into_inner());
            }
        };
        let mut subdirs = Vec::new();
        match std::fs::read_dir(&dir) {
            Err(e) => on_error(&dir, &e),
            Ok(rd) => {
                for entry in rd {
                    if cfg.cancel.load(Ordering::Relaxed) {
                        break;
                    }
                    let entry = match entry {
                        Ok(e) => e,
                        Err(e) => {
                            on_error(&dir, &e);
                            continue;
                        }
                    };
                    let path = entry.path();
                    let ft = match entry.file_type() {
                        Ok(t) => t,
                        Err(e) => {
                            on_error(&path, &e);
                            continue;
                        }
                    };
                    if ft.is_dir() {
                        if cfg.skip_dirs.iter().any(|s| s == &path) {
                            on_skip(&path, SkipReason::PseudoFs);
                            continue;
                        }
                        if !cfg.excludes.is_empty()
                            && cfg.excludes.matches(&device_path(cfg.host_root, &path))
                        {
                            on_skip(&path, SkipReason::Excluded);
                            continue;
                        }
                        if cfg.one_file_system {
                            match entry.metadata() {
                                Ok(m) if m.dev() != dev => {
                                    on_skip(&path, SkipReason::OtherFs);
                                    continue;
                                }
                                Ok(_) => {}
                                Err(e) => {
                                    on_error(&path, &e);
                                    continue;
                                }
                            }
                        }
                        subdirs.push((path, dev));
                    } else if ft.is_file() {
                        if !cfg.excludes.is_empty()
                            && cfg.excludes.matches(&device_path(cfg.host_root, &path))
                        {
                            on_skip(&path, SkipReason::Excluded);
                            continue;
                        }
                        match entry.metadata() {
                            Ok(m) => on_file(worker, &path, &m),
                            Err(e) => on_error(&path, &e),
                        }
                    } else {
                        on_skip(&path, SkipReason::NotRegular);
                    }
                }
            }
        }
        let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
        q.busy -= 1;
        let n = subdirs.len();
        q.dirs.extend(subdirs);
        if n > 0 || q.busy == 0 {
            cv.notify_all();
        }
    }
}

/// Mount points (host paths) under `host_root` whose type is in `types`, from
/// `proc_root/self/mountinfo` (only meaningful when `host_root` is `/`).
pub fn mounts_of_type(proc_root: &Path, host_root: &Path, types: &[&str]) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string(proc_root.join("self/mountinfo")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mount_point = left.split(' ').nth(4).unwrap_or("");
        let fstype = right.split(' ').next().unwrap_or("");
        if types.contains(&fstype) && mount_point != "/" {
            let mp = mount_point.replace("\\040", " ");
            out.push(host_root.join(mp.trim_start_matches('/')));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match(b"*.log", b"a.log"));
        assert!(!glob_match(b"*.log", b"dir/a.log"));
        assert!(glob_match(b"/var/**/*.log", b"/var/a/b/c.log"));
        assert!(glob_match(b"/var/**", b"/var/a/b"));
        assert!(glob_match(b"/tmp/?x", b"/tmp/ax"));
        assert!(!glob_match(b"/tmp/?x", b"/tmp/x"));
        let ex = Excludes::new(&["*.iso".into(), "/home/*/cache".into()]);
        assert!(ex.matches("/data/big.iso"));
        assert!(ex.matches("/home/bob/cache"));
        assert!(!ex.matches("/home/bob/cache2"));
    }
}
