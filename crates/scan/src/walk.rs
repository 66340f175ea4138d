//! Parallel directory walk with scope rules.
//!
//! Workers share one stack of directories: each pops a directory, lists it, pushes its
//! subdirectories and handles its files itself. With as many workers as cores this
//! keeps every core busy on deep and wide trees alike, with std threads only.
//!
//! The listing is `getdents64` into one buffer per worker, and each file's status a
//! `statx` relative to the open directory: a sweep with size indicators must stat every
//! file, and on a warm cache that stat is most of its cost, so the walk adds as little
//! as it can around it (no allocation per entry, no path lookup from `/`).

use riposte_ioc::value::Timestamp;
use std::cell::Cell;
use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::OpenOptionsExt;
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

/// One element of a compiled glob.
#[derive(Debug, Clone, PartialEq, Eq)]
enum GlobToken {
    /// A byte of the pattern's text, matched as it is (a character of several bytes is
    /// several of these, in a row).
    Byte(u8),
    /// `?`: one character other than `/`.
    AnyChar,
    /// `[…]`: one character other than `/` in these ranges, or, negated, in none of them.
    Class {
        ranges: Vec<(char, char)>,
        negated: bool,
    },
    /// `*`: any text within a segment.
    Star,
    /// `**`: any text, across segments.
    AnyPath,
    /// `**/`: nothing, or any text ending with `/` (whole segments).
    AnySegments,
}

impl GlobToken {
    fn admits(&self, c: char) -> bool {
        match self {
            GlobToken::AnyChar => c != '/',
            GlobToken::Class { ranges, negated } => {
                c != '/' && ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)) != *negated
            }
            _ => false,
        }
    }
}

/// Reads a character class at the start of `pat` (which begins with `[`): `[abc]`,
/// `[a-z0-9]`, `[!abc]` or `[^abc]` for the complement, `]` first to include it. Returns
/// the token and the length of its text; `None` when it is not closed, and the `[` then
/// stands for itself, as in the shell.
fn parse_class(pat: &str) -> Option<(GlobToken, usize)> {
    let chars: Vec<(usize, char)> = pat.char_indices().collect();
    let mut j = 1;
    let negated = matches!(chars.get(j), Some((_, '!' | '^')));
    if negated {
        j += 1;
    }
    let first = j;
    let mut ranges = Vec::new();
    loop {
        let (at, c) = *chars.get(j)?;
        if c == ']' && j > first {
            return Some((GlobToken::Class { ranges, negated }, at + 1));
        }
        match (chars.get(j + 1), chars.get(j + 2)) {
            (Some((_, '-')), Some(&(_, end))) if end != ']' => {
                ranges.push((c, end));
                j += 3;
            }
            _ => {
                ranges.push((c, c));
                j += 1;
            }
        }
    }
}

fn compile_glob(pat: &str) -> Vec<GlobToken> {
    let b = pat.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let (token, len) = match b[i] {
            b'*' if b.get(i + 1) == Some(&b'*') => {
                if b.get(i + 2) == Some(&b'/') {
                    (GlobToken::AnySegments, 3)
                } else {
                    (GlobToken::AnyPath, 2)
                }
            }
            b'*' => (GlobToken::Star, 1),
            b'?' => (GlobToken::AnyChar, 1),
            b'[' => parse_class(&pat[i..]).unwrap_or((GlobToken::Byte(b'['), 1)),
            byte => (GlobToken::Byte(byte), 1),
        };
        tokens.push(token);
        i += len;
    }
    tokens
}

/// Whether `tokens` match the whole of `s`. One pass per token over a row of "the
/// tokens so far match `s[..j]`" (byte offsets): time `tokens × s`, whatever the
/// pattern (a recursive matcher is exponential in the number of stars).
fn tokens_match(tokens: &[GlobToken], s: &str) -> bool {
    let b = s.as_bytes();
    let mut rows = [[false; 512]; 2];
    let mut on_heap = Vec::new();
    let (m, next): (&mut [bool], &mut [bool]) = if b.len() < 512 {
        let [m, next] = &mut rows;
        (&mut m[..=b.len()], &mut next[..=b.len()])
    } else {
        on_heap.resize(2 * (b.len() + 1), false);
        on_heap.split_at_mut(b.len() + 1)
    };
    m[0] = true;
    for t in tokens {
        match t {
            GlobToken::Star => {
                for j in 1..m.len() {
                    m[j] = m[j] || (m[j - 1] && b[j - 1] != b'/');
                }
            }
            GlobToken::AnyPath => {
                for j in 1..m.len() {
                    m[j] = m[j] || m[j - 1];
                }
            }
            GlobToken::AnySegments => {
                let mut before = false;
                for j in 0..m.len() {
                    let old = m[j];
                    m[j] = old || (before && b[j - 1] == b'/');
                    before |= old;
                }
            }
            GlobToken::Byte(byte) => {
                for j in (0..b.len()).rev() {
                    m[j + 1] = m[j] && b[j] == *byte;
                }
                m[0] = false;
            }
            one_char => {
                next.fill(false);
                for (j, c) in s.char_indices() {
                    if m[j] && one_char.admits(c) {
                        next[j + c.len_utf8()] = true;
                    }
                }
                m.copy_from_slice(next);
            }
        }
        if !m.contains(&true) {
            return false;
        }
    }
    m[b.len()]
}

/// Glob match: `*`, `?` and `[…]` stay within a path segment (`?` and `[…]` stand for
/// one character), `**` crosses segments and `**/` stands for whole segments (none
/// too).
pub fn glob_match(pat: &str, s: &str) -> bool {
    tokens_match(&compile_glob(pat), s)
}

/// An exclusion pattern without its trailing `/` (`/data/skip/`, as a shell completes a
/// directory): device paths never end with one. `/` alone stays.
fn without_trailing_slash(pattern: &str) -> &str {
    match pattern.trim_end_matches('/') {
        "" => pattern,
        trimmed => trimmed,
    }
}

/// Why an exclusion pattern could never match, if it could not: a pattern with a `/` is
/// matched against whole device paths, which are absolute.
pub fn check_exclude(pattern: &str) -> Result<(), String> {
    // No file has an empty name: an empty pattern (an unset shell variable, say) would
    // leave out nothing while its author thinks something is.
    if pattern.is_empty() {
        return Err("an empty pattern matches no file: give a name or a path".into());
    }
    let pattern = without_trailing_slash(pattern);
    if pattern.contains('/') && !pattern.starts_with('/') && !pattern.starts_with("**") {
        return Err(format!(
            "a pattern with '/' matches whole paths from the root: write /{pattern}, or **/{pattern} for any depth"
        ));
    }
    Ok(())
}

/// Exclusion globs: a pattern with a `/` matches the whole device path, one without
/// matches the file name only.
#[derive(Debug, Clone, Default)]
pub struct Excludes(Vec<Exclude>);

#[derive(Debug, Clone)]
struct Exclude {
    tokens: Vec<GlobToken>,
    whole_path: bool,
}

impl Excludes {
    /// Compiles the patterns. A trailing `/` (`/data/skip/`, as a shell completes a
    /// directory) is dropped: device paths never end with one.
    pub fn new(patterns: &[String]) -> Self {
        Excludes(
            patterns
                .iter()
                .map(|p| {
                    let p = without_trailing_slash(p);
                    Exclude {
                        tokens: compile_glob(p),
                        whole_path: p.contains('/'),
                    }
                })
                .collect(),
        )
    }

    /// No patterns: nothing is excluded (lets the walk skip building device paths).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Is this device path excluded?
    pub fn matches(&self, device_path: &str) -> bool {
        let name = device_path.rsplit('/').next().unwrap_or(device_path);
        self.0.iter().any(|p| {
            let subject = if p.whole_path { device_path } else { name };
            tokens_match(&p.tokens, subject)
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
    /// How each regular file's status is learnt.
    pub file_status: FileStatus,
}

/// How the walk learns the status of a regular file before handing it over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FileStatus {
    /// `statx` of its name relative to its directory: for a sweep that decides from
    /// the status (size, times) whether to read the file at all.
    #[default]
    ByName,
    /// Open it for reading and `statx` the open descriptor, and hand the open file
    /// over ([`FileEntry::open`] returns it): for a sweep that reads every file anyway,
    /// one path lookup per file instead of the two a stat and then an open make. A file
    /// that cannot be opened is stated by name instead, so that it is still seen.
    Opened,
    /// No status until [`FileEntry::meta`] asks for it: for a sweep whose indicators
    /// test only names and paths, which stats only the files whose names match.
    Deferred,
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

/// The device path of a host path (`host_root/etc/x` → `/etc/x`), in its
/// [`riposte_model::path_text`] form: hits name the file so that the agent can find the very
/// same file again (a name that is not UTF-8 keeps its bytes as `\xHH`).
pub fn device_path(host_root: &Path, p: &Path) -> String {
    use riposte_model::path_text::{encode, encode_bytes_into};
    match p.strip_prefix(host_root) {
        Ok(rel) => {
            // One allocation: this runs for every file a name or path test looks at.
            let rel = rel.as_os_str().as_bytes();
            let mut out = String::with_capacity(rel.len() + 1);
            out.push('/');
            encode_bytes_into(rel, &mut out);
            out
        }
        Err(_) => encode(p),
    }
}

/// The device's directories that are links to others (`/lib -> usr/lib` on a merged
/// `/usr`, `/var/run -> /run`): each as `(link, what it resolves to)`, both device paths.
/// The walk never follows a link, so a file is seen only under the second; an indicator
/// naming the first (`/lib/libgcc4.4.so`) means the same file.
pub fn directory_aliases(host_root: &Path) -> Vec<(String, String)> {
    let mut aliases = Vec::new();
    for parent in ["/", "/var"] {
        // `/var` itself may be a link: the device's, followed inside its root.
        let Ok(parent_dir) = resolve_in_root(host_root, Path::new(parent)) else {
            continue;
        };
        let Ok(entries) = DeviceDir::open(host_root, &parent_dir).and_then(|d| d.entries()) else {
            continue;
        };
        for (name, is_link) in entries {
            let Some(name) = name.to_str().filter(|_| is_link) else {
                continue;
            };
            let link = parent_dir.join(name);
            let Ok(target) = resolve_in_root(host_root, &link) else {
                continue;
            };
            let is_dir = DeviceDir::exists(host_root, &target);
            if is_dir && target != link && target != Path::new("/") {
                if let (Some(link), Some(target)) = (link.to_str(), target.to_str()) {
                    aliases.push((link.to_string(), target.to_string()));
                }
            }
        }
    }
    aliases.sort();
    aliases
}

/// `device` (an absolute device path) resolved inside `host_root` as the device's own
/// kernel would resolve it: a symbolic link is read as the device's (an absolute one
/// from the device's `/`, not the host's), and `..` never climbs above the device's `/`.
/// Returns the device path of what it names, which must exist. The kernel does the
/// resolution (`openat2` with `RESOLVE_IN_ROOT`), so that no link in an image can point
/// a sweep at the host's own files.
pub fn resolve_in_root(host_root: &Path, device: &Path) -> std::io::Result<PathBuf> {
    use std::os::fd::AsRawFd;
    let root = std::fs::canonicalize(host_root)?;
    let fd = open_in_root(&root, device, libc::O_PATH)?;
    let host = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    let inside = host
        .strip_prefix(&root)
        .map_err(|_| std::io::Error::other("resolved outside the device's root"))?;
    Ok(Path::new("/").join(inside))
}

/// Opens `device` (a path on the device) with `flags` (and `O_CLOEXEC`), its links
/// followed inside `host_root` as the device would follow them: an absolute link in an
/// image names the image's file, never this machine's, and `..` stops at its root.
pub fn open_in_root(
    host_root: &Path,
    device: &Path,
    flags: libc::c_int,
) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::ffi::CString;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    let rel = device.strip_prefix("/").unwrap_or(device);
    // On this machine's own root, the kernel's ordinary resolution is the device's (and
    // needs no `openat2`, which kernels before 5.6 and some seccomp profiles lack).
    if host_root == Path::new("/") {
        let path = CString::new(Path::new("/").join(rel).as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        // SAFETY: a NUL-terminated path; the flags are the caller's plus O_CLOEXEC.
        let fd = unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the kernel just returned this descriptor to us, and nothing else owns it.
        return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    let root_fd = std::fs::File::open(host_root)?;
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let name = CString::new(rel.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: open_how is plain data; zeroed is a valid value before the fields are set.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: the pointers are to a live C string and a live open_how of the size given.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root_fd.as_raw_fd(),
            name.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us, and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The text of the device's file `device` (`etc/passwd`), read as
/// [`read_device_bytes`] reads it; an error where it is not UTF-8.
pub fn read_device_file(host_root: &Path, device: &str) -> std::io::Result<String> {
    String::from_utf8(read_device_bytes(host_root, device)?)
        .map_err(|_| std::io::Error::other(format!("{device} is not UTF-8")))
}

/// The bytes of the device's file `device`, found as [`open_in_root`] finds it; an
/// error where it is not a regular file, or is larger than [`DEVICE_FILE_LIMIT`] (a
/// file someone else may write, a user's unit, must not stall or exhaust the sweep, and
/// one read in part would be judged on what it does not say).
pub fn read_device_bytes(host_root: &Path, device: &str) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    // Found first without being opened (`O_PATH`): a link to a device node
    // (`/dev/watchdog`) must not reach its driver, whose open alone may act.
    let found = std::fs::File::from(open_in_root(host_root, Path::new(device), libc::O_PATH)?);
    if !found.metadata()?.is_file() {
        return Err(std::io::Error::other(format!(
            "{device} is not a regular file"
        )));
    }
    // Then that very file opened for reading, through its descriptor, without waiting.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(format!("/proc/self/fd/{}", found.as_raw_fd()))?;
    let mut bytes = Vec::new();
    file.take(DEVICE_FILE_LIMIT + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > DEVICE_FILE_LIMIT {
        return Err(std::io::Error::other(format!(
            "{device} is larger than {} MiB",
            DEVICE_FILE_LIMIT >> 20
        )));
    }
    Ok(bytes)
}

/// The status of the device's file `device` (a link followed inside the device's
/// tree), without opening it.
pub fn device_file_status(host_root: &Path, device: &str) -> std::io::Result<std::fs::Metadata> {
    std::fs::File::from(open_in_root(host_root, Path::new(device), libc::O_PATH)?).metadata()
}

/// The most read of one configuration file of the device ([`read_device_file`]).
pub const DEVICE_FILE_LIMIT: u64 = 16 << 20;

/// A directory of the device, opened as [`open_in_root`] resolves it and then read
/// through that descriptor only: what is listed, and the links and entries looked up in
/// it, are that directory's, even if the path that led there changes meanwhile (a live
/// root whose owner swaps a folder for a link to this machine's files).
pub struct DeviceDir {
    fd: OwnedFd,
}

impl DeviceDir {
    /// Opens the device's directory `device` (with or without its leading `/`).
    pub fn open(host_root: &Path, device: impl AsRef<Path>) -> std::io::Result<DeviceDir> {
        let fd = open_in_root(
            host_root,
            device.as_ref(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NONBLOCK,
        )?;
        Ok(DeviceDir { fd })
    }

    /// Whether the device has a directory `device`, found as [`DeviceDir::open`] finds
    /// it but without reading it (a folder the sweep may not list still exists).
    pub fn exists(host_root: &Path, device: impl AsRef<Path>) -> bool {
        open_in_root(host_root, device.as_ref(), libc::O_PATH | libc::O_DIRECTORY).is_ok()
    }

    /// The names of its entries but `.` and `..`, with whether each is a symbolic link
    /// (as the directory listing says, or a `stat` of the entry where it does not).
    pub fn entries(&self) -> std::io::Result<Vec<(std::ffi::OsString, bool)>> {
        // From the start, however often it is listed.
        // SAFETY: a seek on a descriptor this value owns.
        if unsafe { libc::lseek(self.fd.as_raw_fd(), 0, libc::SEEK_SET) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut buffer = vec![0u64; 4096];
        let mut out = Vec::new();
        list_dir(
            &self.fd,
            &mut buffer,
            &AtomicBool::new(false),
            &mut |name, ty| {
                let is_link = match ty {
                    libc::DT_UNKNOWN => self.is_link(OsStr::from_bytes(name.to_bytes())),
                    t => t == libc::DT_LNK,
                };
                out.push((OsStr::from_bytes(name.to_bytes()).to_os_string(), is_link));
            },
        )?;
        Ok(out)
    }

    /// The target of the link `name` in it.
    pub fn read_link(&self, name: &OsStr) -> std::io::Result<PathBuf> {
        let c = CString::new(name.as_bytes())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        let mut buffer = vec![0u8; libc::PATH_MAX as usize];
        // SAFETY: `c` is NUL-terminated and the buffer is writable for its length.
        let n = unsafe {
            libc::readlinkat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // A target that filled the buffer may have been cut.
        if n as usize >= buffer.len() {
            return Err(std::io::Error::from_raw_os_error(libc::ENAMETOOLONG));
        }
        buffer.truncate(n as usize);
        Ok(PathBuf::from(std::ffi::OsString::from_vec(buffer)))
    }

    /// Whether it has an entry `name` of any type, a link not followed.
    pub fn has(&self, name: &OsStr) -> bool {
        self.mode_of(name).is_some()
    }

    fn is_link(&self, name: &OsStr) -> bool {
        self.mode_of(name)
            .is_some_and(|m| m & libc::S_IFMT == libc::S_IFLNK)
    }

    fn mode_of(&self, name: &OsStr) -> Option<u32> {
        let c = CString::new(name.as_bytes()).ok()?;
        // SAFETY: stat is plain data; zeroed is a valid value for the kernel to fill.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `c` is NUL-terminated and `st` is a live, writable stat.
        let r = unsafe {
            libc::fstatat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        (r == 0).then_some(st.st_mode)
    }
}

/// What the walk learnt of a file from one `statx`, relative to its directory and
/// without following a symlink. (`std::fs::Metadata` cannot be built from a `statx`
/// the walk makes itself.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMeta {
    dev: u64,
    ino: u64,
    size: u64,
    mode: u32,
    uid: u32,
    atime: Timestamp,
    mtime: Timestamp,
    ctime: Timestamp,
    btime: Option<Timestamp>,
}

fn timestamp(t: &libc::statx_timestamp) -> Timestamp {
    Timestamp {
        secs: t.tv_sec,
        nanos: t.tv_nsec,
    }
}

impl FileMeta {
    /// This status as a file system that does not record creation times gives it.
    #[cfg(test)]
    pub(crate) fn without_birth_time(self) -> Self {
        FileMeta {
            btime: None,
            ..self
        }
    }

    fn from_statx(s: &libc::statx) -> Self {
        FileMeta {
            // As `std::os::unix::fs::MetadataExt::dev` computes it, so the two compare.
            dev: libc::makedev(s.stx_dev_major, s.stx_dev_minor),
            ino: s.stx_ino,
            size: s.stx_size,
            mode: u32::from(s.stx_mode),
            uid: s.stx_uid,
            atime: timestamp(&s.stx_atime),
            mtime: timestamp(&s.stx_mtime),
            ctime: timestamp(&s.stx_ctime),
            btime: (s.stx_mask & libc::STATX_BTIME != 0).then(|| timestamp(&s.stx_btime)),
        }
    }

    /// `statx` of an open file (an empty path relative to its descriptor).
    fn of_fd(fd: RawFd) -> std::io::Result<Self> {
        FileMeta::statx(fd, c"", libc::AT_EMPTY_PATH)
    }

    /// `statx` of `name` in directory `dir` (or of a path, with `libc::AT_FDCWD`),
    /// without following a symlink.
    fn stat_at(dir: RawFd, name: &CStr) -> std::io::Result<Self> {
        FileMeta::statx(dir, name, libc::AT_SYMLINK_NOFOLLOW)
    }

    fn statx(dir: RawFd, name: &CStr, flags: libc::c_int) -> std::io::Result<Self> {
        let mut s = std::mem::MaybeUninit::<libc::statx>::zeroed();
        // SAFETY: `name` is NUL-terminated, `s` is a writable statx buffer, and `dir`
        // is an open descriptor or AT_FDCWD.
        let r = unsafe {
            libc::statx(
                dir,
                name.as_ptr(),
                flags | libc::AT_NO_AUTOMOUNT,
                libc::STATX_BASIC_STATS | libc::STATX_BTIME,
                s.as_mut_ptr(),
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: statx succeeded and filled the buffer (zeroed before, so any field
        // it left out is zero).
        Ok(FileMeta::from_statx(unsafe { s.assume_init_ref() }))
    }

    /// The status of `path` itself (a symlink is not followed).
    pub fn of_path(path: &Path) -> std::io::Result<Self> {
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::other("path contains a NUL byte"))?;
        FileMeta::stat_at(libc::AT_FDCWD, &c)
    }

    /// Device id, as `MetadataExt::dev`.
    pub fn dev(&self) -> u64 {
        self.dev
    }
    /// Inode number.
    pub fn ino(&self) -> u64 {
        self.ino
    }
    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }
    /// Owner's uid.
    pub fn uid(&self) -> u32 {
        self.uid
    }
    /// Last access.
    pub fn atime(&self) -> Timestamp {
        self.atime
    }
    /// Last modification.
    pub fn mtime(&self) -> Timestamp {
        self.mtime
    }
    /// Last status change.
    pub fn ctime(&self) -> Timestamp {
        self.ctime
    }
    /// Creation, where the file system records it.
    pub fn created(&self) -> Option<Timestamp> {
        self.btime
    }
    /// A regular file?
    pub fn is_file(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }
    /// A directory?
    pub fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }
}

/// A regular file the walk found: its path, its status, and how to open it relative
/// to the directory it was listed in (so a renamed or symlinked parent directory cannot
/// redirect the open elsewhere).
pub struct FileEntry<'a> {
    /// Host path.
    pub path: &'a Path,
    /// Status, from the walk's `statx`, or (with [`FileStatus::Deferred`]) from the
    /// first call of [`FileEntry::meta`].
    meta: Cell<Option<FileMeta>>,
    dir: RawFd,
    name: &'a CStr,
    /// The file the walk opened to learn `meta` ([`FileStatus::Opened`]), until
    /// [`FileEntry::open`] hands it over.
    opened: Cell<Option<std::fs::File>>,
}

impl FileEntry<'_> {
    /// The file's status: the walk's, or with [`FileStatus::Deferred`], a `statx` of its
    /// name now (an error if it is gone or no longer a regular file).
    pub fn meta(&self) -> Result<FileMeta, Stale> {
        if let Some(meta) = self.meta.get() {
            return Ok(meta);
        }
        let meta = FileMeta::stat_at(self.dir, self.name).map_err(Stale::Io)?;
        if !meta.is_file() {
            return Err(Stale::NotRegular);
        }
        self.meta.set(Some(meta));
        Ok(meta)
    }

    /// The status, where the walk has it already.
    pub fn known_meta(&self) -> Option<FileMeta> {
        self.meta.get()
    }

    /// Opens the file for reading as [`crate::items::open_content`] does, relative to
    /// its directory; the first call returns the file the walk already opened, if it
    /// did (the very object `meta` describes).
    pub fn open(&self) -> std::io::Result<std::fs::File> {
        match self.opened.take() {
            Some(file) => Ok(file),
            None => crate::items::open_content_at(self.dir, self.name),
        }
    }
}

/// Why [`FileEntry::meta`] has no status for a file the walk listed: it changed since.
#[derive(Debug)]
pub enum Stale {
    /// Replaced by something other than a regular file (counted as the walk counts a
    /// [`SkipReason::NotRegular`]).
    NotRegular,
    /// Its `statx` failed: gone, say.
    Io(std::io::Error),
}

impl std::fmt::Display for Stale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stale::NotRegular => f.write_str(crate::items::REPLACED_BY_NON_REGULAR),
            Stale::Io(e) => e.fmt(f),
        }
    }
}

/// Walks `roots` (host paths). `on_file` gets each regular file, `on_skip` each skipped
/// path, `on_error` each path that could not be read.
pub fn walk<F, S, E>(roots: &[PathBuf], cfg: &WalkConfig, on_file: F, on_skip: S, on_error: E)
where
    F: Fn(&FileEntry) + Sync,
    S: Fn(&Path, SkipReason) + Sync,
    E: Fn(&Path, &std::io::Error) + Sync,
{
    walk_with(
        roots,
        cfg,
        || (),
        |_, file| on_file(file),
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
    F: Fn(&mut W, &FileEntry) + Sync,
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
        // An exclusion holds for a root as for what is under it, and is counted the same:
        // `--preset critical-areas --exclude /tmp` leaves out /tmp.
        if !cfg.excludes.is_empty() && cfg.excludes.matches(&device_path(cfg.host_root, root)) {
            on_skip(root, SkipReason::Excluded);
            continue;
        }
        match FileMeta::of_path(root) {
            // A root on a pseudo file system (see `scope_roots`).
            Ok(m) if m.is_dir() && cfg.skip_dirs.contains(root) => {
                on_skip(root, SkipReason::PseudoFs)
            }
            Ok(m) if m.is_dir() => queue
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .dirs
                .push((root.clone(), m.dev())),
            Ok(m) if m.is_file() => {
                let Ok(name) = CString::new(root.as_os_str().as_bytes()) else {
                    continue;
                };
                let mut w = start();
                let entry = FileEntry {
                    path: root,
                    meta: Cell::new(Some(m)),
                    dir: libc::AT_FDCWD,
                    name: &name,
                    opened: Cell::new(None),
                };
                on_file(&mut w, &entry);
                finish(w);
            }
            Ok(_) => on_skip(root, SkipReason::NotRegular),
            Err(e) => on_error(root, &e),
        }
    }
    let threads = cfg.threads.max(1);
    let skip_dirs = SkipDirs::new(cfg.skip_dirs);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut worker = start();
                let w = &mut worker;
                walk_worker(
                    &queue, &cv, cfg, &skip_dirs, w, &on_file, &on_skip, &on_error,
                );
                finish(worker);
            });
        }
    });
}

type DirQueue = Mutex<Queue>;

/// [`WalkConfig::skip_dirs`], each with its last name: a directory entry is compared
/// with a whole path only where its name is that name. Comparing paths component by
/// component against every skipped directory, for every directory walked, was a tenth
/// of a sweep's own work in profiles.
struct SkipDirs<'a>(Vec<(Option<&'a OsStr>, &'a Path)>);

impl<'a> SkipDirs<'a> {
    fn new(dirs: &'a [PathBuf]) -> Self {
        SkipDirs(dirs.iter().map(|d| (d.file_name(), d.as_path())).collect())
    }

    /// Is the entry `name`, at `path`, a skipped directory?
    fn contains(&self, name: &CStr, path: &Path) -> bool {
        let name = OsStr::from_bytes(name.to_bytes());
        self.0
            .iter()
            .any(|&(last, dir)| last == Some(name) && dir == path)
    }
}

struct Queue {
    /// Directories to list, with the device of the root they were found under.
    dirs: Vec<(PathBuf, u64)>,
    busy: usize,
}

/// Bytes asked of each `getdents64`: most directories fit in one call.
const DIRENT_BUFFER: usize = 64 * 1024;

/// Opens a directory to list, refusing a symlink in its place.
///
/// A path longer than the kernel takes at once (`PATH_MAX`, 4,096 bytes) is opened a
/// part at a time, each part relative to the directory before it: a tree nested that
/// deep is still walked (it would otherwise hide what lies there from every sweep).
fn open_dir(path: &Path) -> std::io::Result<OwnedFd> {
    const FLAGS: libc::c_int =
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() < libc::PATH_MAX as usize {
        return open_dir_at(libc::AT_FDCWD, bytes, FLAGS);
    }
    // The longest leading part, ending at a `/`, that the kernel takes at once (links
    // in it followed, as in a shorter path), then the rest name by name, never
    // through a link.
    let cut = bytes[..libc::PATH_MAX as usize - 1]
        .iter()
        .rposition(|&b| b == b'/')
        .filter(|&i| i > 0)
        .ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENAMETOOLONG))?;
    let mut dir = open_dir_at(
        libc::AT_FDCWD,
        &bytes[..cut],
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
    )?;
    for name in bytes[cut..].split(|&b| b == b'/').filter(|n| !n.is_empty()) {
        dir = open_dir_at(dir.as_raw_fd(), name, FLAGS)?;
    }
    Ok(dir)
}

/// The directory holding `path`, opened as [`open_dir`] opens it (part by part past
/// `PATH_MAX`), and the last name of `path`, to open relative to it: a file the walk
/// found that deep is opened again by its path (a hit read for its SHA-256).
pub(crate) fn open_parent(path: &Path) -> std::io::Result<(OwnedFd, CString)> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(std::io::Error::other("not a path to a file in a directory"));
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let name = CString::new(name.as_bytes())
        .map_err(|_| std::io::Error::other("path contains a NUL byte"))?;
    Ok((open_dir(parent)?, name))
}

/// `openat(dir, name, flags)` of a directory.
fn open_dir_at(dir: RawFd, name: &[u8], flags: libc::c_int) -> std::io::Result<OwnedFd> {
    let c = CString::new(name).map_err(|_| std::io::Error::other("path contains a NUL byte"))?;
    // SAFETY: `c` is NUL-terminated; the result is checked before it is owned.
    let fd = unsafe { libc::openat(dir, c.as_ptr(), flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// One worker: pops directories until none is left and none is being listed.
#[allow(clippy::too_many_arguments)]
fn walk_worker<W, F, S, E>(
    queue: &DirQueue,
    cv: &Condvar,
    cfg: &WalkConfig,
    skip_dirs: &SkipDirs,
    worker: &mut W,
    on_file: &F,
    on_skip: &S,
    on_error: &E,
) where
    F: Fn(&mut W, &FileEntry) + Sync,
    S: Fn(&Path, SkipReason) + Sync,
    E: Fn(&Path, &std::io::Error) + Sync,
{
    // `u64`s, so the records `getdents64` writes are 8-byte aligned.
    let mut buffer = vec![0u64; DIRENT_BUFFER / 8];
    // The path of the entry at hand: the directory's bytes, a `/`, then the name,
    // rebuilt in place for every entry instead of allocated.
    let mut path_bytes: Vec<u8> = Vec::with_capacity(4096);
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
        match open_dir(&dir) {
            Err(e) => on_error(&dir, &e),
            Ok(fd) => {
                path_bytes.clear();
                path_bytes.extend_from_slice(dir.as_os_str().as_bytes());
                if path_bytes.last() != Some(&b'/') {
                    path_bytes.push(b'/');
                }
                let dir_len = path_bytes.len();
                let mut list = |name: &CStr, d_type: u8| {
                    path_bytes.truncate(dir_len);
                    path_bytes.extend_from_slice(name.to_bytes());
                    let path = Path::new(OsStr::from_bytes(&path_bytes));
                    visit(
                        cfg,
                        skip_dirs,
                        fd.as_raw_fd(),
                        dev,
                        name,
                        d_type,
                        path,
                        worker,
                        &mut subdirs,
                        on_file,
                        on_skip,
                        on_error,
                    );
                };
                if let Err(e) = list_dir(&fd, &mut buffer, cfg.cancel, &mut list) {
                    on_error(&dir, &e);
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

/// Calls `entry` with the name and `d_type` of every entry of directory `fd` but `.`
/// and `..`, reading them with `getdents64` into `buffer`.
fn list_dir(
    fd: &OwnedFd,
    buffer: &mut [u64],
    cancel: &AtomicBool,
    entry: &mut dyn FnMut(&CStr, u8),
) -> std::io::Result<()> {
    // Offsets of the fields of `struct linux_dirent64` (d_ino u64, d_off i64,
    // d_reclen u16, d_type u8, then the NUL-terminated name).
    const RECLEN: usize = 16;
    const TYPE: usize = 18;
    const NAME: usize = 19;
    loop {
        // SAFETY: the buffer is writable for its whole length in bytes, and `fd` is
        // an open directory.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                fd.as_raw_fd(),
                buffer.as_mut_ptr(),
                std::mem::size_of_val(buffer),
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Ok(());
        }
        // SAFETY: the kernel wrote `n` bytes of the buffer; reading them as bytes is
        // always valid.
        let bytes = unsafe { std::slice::from_raw_parts(buffer.as_ptr().cast::<u8>(), n as usize) };
        let mut at = 0;
        while at + NAME < bytes.len() {
            let reclen = usize::from(u16::from_ne_bytes([
                bytes[at + RECLEN],
                bytes[at + RECLEN + 1],
            ]));
            let record = bytes.get(at..at + reclen).filter(|_| reclen > NAME);
            let Some(record) = record else {
                return Err(std::io::Error::other(
                    "malformed directory listing from the kernel",
                ));
            };
            let name = CStr::from_bytes_until_nul(&record[NAME..]).map_err(|_| {
                std::io::Error::other("malformed directory listing from the kernel")
            })?;
            if name.to_bytes() != b"." && name.to_bytes() != b".." {
                if cancel.load(Ordering::Relaxed) {
                    return Ok(());
                }
                entry(name, record[TYPE]);
            }
            at += reclen;
        }
    }
}

/// Handles one directory entry: a file goes to `on_file`, a directory to `subdirs`.
#[allow(clippy::too_many_arguments)]
fn visit<W, F, S, E>(
    cfg: &WalkConfig,
    skip_dirs: &SkipDirs,
    dir: RawFd,
    dev: u64,
    name: &CStr,
    d_type: u8,
    path: &Path,
    worker: &mut W,
    subdirs: &mut Vec<(PathBuf, u64)>,
    on_file: &F,
    on_skip: &S,
    on_error: &E,
) where
    F: Fn(&mut W, &FileEntry),
    S: Fn(&Path, SkipReason),
    E: Fn(&Path, &std::io::Error),
{
    // File systems that do not fill `d_type` (DT_UNKNOWN) cost a stat to tell.
    let stat = || FileMeta::stat_at(dir, name);
    let (is_dir, is_file, mut meta) = match d_type {
        libc::DT_DIR => (true, false, None),
        libc::DT_REG => (false, true, None),
        libc::DT_UNKNOWN => match stat() {
            Ok(m) => (m.is_dir(), m.is_file(), Some(m)),
            Err(e) => return on_error(path, &e),
        },
        _ => (false, false, None),
    };
    let excluded =
        || !cfg.excludes.is_empty() && cfg.excludes.matches(&device_path(cfg.host_root, path));
    if is_dir {
        if skip_dirs.contains(name, path) {
            return on_skip(path, SkipReason::PseudoFs);
        }
        if excluded() {
            return on_skip(path, SkipReason::Excluded);
        }
        if cfg.one_file_system {
            match meta.map_or_else(stat, Ok) {
                Ok(m) if m.dev() != dev => return on_skip(path, SkipReason::OtherFs),
                Ok(_) => {}
                Err(e) => return on_error(path, &e),
            }
        }
        subdirs.push((path.to_path_buf(), dev));
    } else if is_file {
        if excluded() {
            return on_skip(path, SkipReason::Excluded);
        }
        let mut opened = None;
        if cfg.file_status == FileStatus::Opened && meta.is_none() {
            match crate::items::open_unchecked_at(dir, name)
                .and_then(|f| Ok((FileMeta::of_fd(f.as_raw_fd())?, f)))
            {
                // Replaced by something else since the listing (a FIFO or a device
                // opens without blocking, and is closed unread).
                Ok((m, _)) if !m.is_file() => return on_skip(path, SkipReason::NotRegular),
                Ok((m, f)) => {
                    meta = Some(m);
                    opened = Some(f);
                }
                // Replaced by a symbolic link since the listing.
                Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                    return on_skip(path, SkipReason::NotRegular)
                }
                // Unreadable, or no longer a regular file: the stat by name below tells
                // which, and an unreadable file is still seen (its name may match).
                Err(_) => {}
            }
        }
        let meta = if cfg.file_status == FileStatus::Deferred && meta.is_none() {
            None
        } else {
            match meta.take().map_or_else(stat, Ok) {
                Ok(m) if m.is_file() => Some(m),
                // Replaced by something else since the listing.
                Ok(_) => return on_skip(path, SkipReason::NotRegular),
                Err(e) => return on_error(path, &e),
            }
        };
        on_file(
            worker,
            &FileEntry {
                path,
                meta: Cell::new(meta),
                dir,
                name,
                opened: Cell::new(opened),
            },
        );
    } else {
        on_skip(path, SkipReason::NotRegular);
    }
}

/// Mount points (host paths) under `host_root` whose type is in `types`, from
/// `proc_root/self/mountinfo` (only meaningful when `host_root` is `/`).
pub fn mounts_of_type(proc_root: &Path, host_root: &Path, types: &[&str]) -> Vec<PathBuf> {
    mounts(proc_root, host_root)
        .into_iter()
        .filter(|(mp, fstype)| types.contains(&fstype.as_str()) && mp != host_root)
        .map(|(mp, _)| mp)
        .collect()
}

/// Is `path` (followed if it is a link) on a pseudo file system, whose files are not
/// at rest (proc, sysfs, debugfs, cgroup...)? By the type the kernel reports for it
/// (`statfs`), which resolves `..` and links as the walk would, and mounts an automount
/// point rather than judging it by its `autofs` placeholder. devtmpfs reports tmpfs's
/// type: a `/dev` named explicitly is walked (its device nodes are not regular files).
pub fn on_pseudo_fs(path: &Path) -> bool {
    const PSEUDO_MAGIC: &[u32] = &[
        PROC_MAGIC,
        0x6265_6572, // sysfs
        0x6462_6720, // debugfs
        0x7472_6163, // tracefs
        0x7363_6673, // securityfs
        0x0027_e0eb, // cgroup
        0x6367_7270, // cgroup2
        0xcafe_4a11, // bpf
        0x6265_6570, // configfs
        0x6165_676c, // pstore
        0xde5e_81e0, // efivarfs
        0x1cd1,      // devpts
        0x1980_0202, // mqueue
        0x6573_5543, // fusectl
        0x4249_4e4d, // binfmt_misc
        0x6e73_6673, // nsfs
        0x6759_6969, // rpc_pipefs
    ];
    fs_magic(path).is_some_and(|magic| PSEUDO_MAGIC.contains(&magic))
}

/// The type of proc file systems, as [`fs_magic`] reports it.
pub const PROC_MAGIC: u32 = 0x9fa0;

/// The type the kernel reports for the file system of `path` (followed if it is a
/// link), by `statfs`; `None` where it cannot be asked.
pub fn fs_magic(path: &Path) -> Option<u32> {
    let c = CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: `c` is NUL-terminated and `st` a writable statfs buffer.
    if unsafe { libc::statfs(c.as_ptr(), st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: statfs succeeded and filled the buffer.
    let kind = unsafe { st.assume_init_ref() }.f_type;
    // Magic numbers are 32-bit; `f_type` is wider on 64-bit targets.
    Some(kind as u32)
}

/// Every mount: its mount point as a host path, and its file-system type.
fn mounts(proc_root: &Path, host_root: &Path) -> Vec<(PathBuf, String)> {
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
        let mp = mount_point.replace("\\040", " ");
        out.push((
            host_root.join(mp.trim_start_matches('/')),
            fstype.to_string(),
        ));
    }
    out
}

/// Makes a FIFO at `path`, as the tests put one where a file was expected.
#[cfg(test)]
pub(crate) fn make_fifo(path: &Path) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// A walk of absolute roots on one thread, nothing skipped but `excludes`.
    fn one_thread_from_root<'a>(
        excludes: &'a Excludes,
        cancel: &'a AtomicBool,
        file_status: FileStatus,
    ) -> WalkConfig<'a> {
        WalkConfig {
            host_root: Path::new("/"),
            excludes,
            skip_dirs: &[],
            one_file_system: false,
            threads: 1,
            cancel,
            file_status,
        }
    }

    /// A device file that is not a regular file is refused without ever being opened:
    /// a link to a device node must not reach its driver (`/dev/watchdog` arms at its
    /// open). Seen here on a FIFO, whose writer's open returns only once a reader
    /// opened it.
    #[test]
    fn a_device_file_that_is_no_regular_file_is_never_opened() {
        let image = tempfile::tempdir().unwrap();
        std::fs::create_dir(image.path().join("etc")).unwrap();
        let fifo = image.path().join("etc/passwd");
        make_fifo(&fifo);
        let writer = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::OpenOptions::new().write(true).open(fifo))
        };
        // The writer waits in its open before the file is looked at.
        std::thread::sleep(std::time::Duration::from_millis(300));
        for root in [image.path(), Path::new("/")] {
            let device = if root == Path::new("/") {
                fifo.to_str().unwrap().to_string()
            } else {
                "etc/passwd".to_string()
            };
            let e = read_device_file(root, &device).unwrap_err();
            assert!(e.to_string().contains("not a regular file"), "{e}");
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(!writer.is_finished(), "the FIFO was opened for reading");
        // Release the writer.
        drop(std::fs::File::open(&fifo).unwrap());
        writer.join().unwrap().unwrap();
        // A regular file through a link is read.
        std::fs::remove_file(&fifo).unwrap();
        std::fs::write(image.path().join("etc/real"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        std::os::unix::fs::symlink("/etc/real", &fifo).unwrap();
        assert_eq!(
            read_device_file(image.path(), "etc/passwd").unwrap(),
            "root:x:0:0::/root:/bin/sh\n"
        );
    }

    /// A device directory is found through the device's links, inside its root, and
    /// is then read through its descriptor: swapping the path for a link to another
    /// directory afterwards changes nothing of what it lists or finds in it.
    #[test]
    fn device_directories_are_the_devices_and_stay_the_one_opened() {
        let image = tempfile::tempdir().unwrap();
        let r = image.path();
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(r.join("a")).unwrap();
        std::fs::write(r.join("a/unit.service"), "x").unwrap();
        std::fs::write(elsewhere.path().join("other.service"), "y").unwrap();
        // Absolute, as an image's links are: the image's `/a`, not this machine's.
        std::os::unix::fs::symlink("/a", r.join("l")).unwrap();
        std::os::unix::fs::symlink("loop", r.join("loop")).unwrap();

        let top = DeviceDir::open(r, "/").unwrap();
        let mut entries = top.entries().unwrap();
        entries.sort();
        let shown: Vec<(String, bool)> = entries
            .into_iter()
            .map(|(n, link)| (n.into_string().unwrap(), link))
            .collect();
        assert_eq!(
            shown,
            [
                ("a".into(), false),
                ("l".into(), true),
                ("loop".into(), true)
            ]
        );
        assert_eq!(top.read_link(OsStr::new("l")).unwrap(), Path::new("/a"));
        assert!(top.read_link(OsStr::new("a")).is_err(), "not a link");

        let through_link = DeviceDir::open(r, "l").unwrap();
        assert!(through_link.has(OsStr::new("unit.service")));
        assert!(!through_link.has(OsStr::new("missing.service")));
        assert!(DeviceDir::open(r, "loop").is_err());
        assert!(
            DeviceDir::open(r, "a/unit.service").is_err(),
            "a file is no directory"
        );

        // The path now leads elsewhere; the open directory is still the one found.
        std::fs::rename(r.join("a"), r.join("b")).unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), r.join("a")).unwrap();
        let names: Vec<_> = through_link
            .entries()
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, [std::ffi::OsString::from("unit.service")]);
        // And a fresh open follows the absolute link inside the image, where it
        // names nothing.
        assert!(DeviceDir::open(r, "l").is_err());
    }

    #[test]
    fn the_walk_finds_regular_files_with_their_status_and_skips_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("sub/deep")).unwrap();
        std::fs::create_dir_all(root.join("skipped")).unwrap();
        std::fs::create_dir_all(root.join("cache")).unwrap();
        std::fs::write(root.join("a.txt"), b"hello").unwrap();
        std::fs::write(root.join("sub/deep/b.bin"), vec![7u8; 70_000]).unwrap();
        std::fs::write(root.join("skipped/c"), b"c").unwrap();
        std::fs::write(root.join("cache/d"), b"d").unwrap();
        std::fs::write(root.join("sub/e.iso"), b"e").unwrap();
        // A name that is not UTF-8 is still a file to sweep.
        let odd = OsStr::from_bytes(b"odd\xff\xfe.bin");
        std::fs::write(root.join(odd), b"odd").unwrap();
        std::os::unix::fs::symlink(root.join("a.txt"), root.join("link-to-file")).unwrap();
        std::os::unix::fs::symlink(root.join("sub"), root.join("link-to-dir")).unwrap();
        make_fifo(&root.join("fifo"));
        // Enough entries that one directory takes several getdents64 calls.
        for i in 0..3000 {
            std::fs::write(
                root.join("sub")
                    .join(format!("many-{i:04}-{}", "x".repeat(40))),
                b"",
            )
            .unwrap();
        }

        // Both ways of learning a file's status find the same files, with the same status.
        for file_status in [FileStatus::ByName, FileStatus::Opened, FileStatus::Deferred] {
            let cancel = AtomicBool::new(false);
            let excludes = Excludes::new(&["*.iso".into(), "/cache".into()]);
            let skip_dirs = [root.join("skipped")];
            let cfg = WalkConfig {
                host_root: root,
                excludes: &excludes,
                skip_dirs: &skip_dirs,
                one_file_system: true,
                threads: 2,
                cancel: &cancel,
                file_status,
            };
            let files = Mutex::new(Vec::new());
            let skips = Mutex::new(Vec::new());
            let errors = Mutex::new(Vec::new());
            walk(
                &[root.to_path_buf()],
                &cfg,
                |f| {
                    assert_eq!(
                        f.known_meta().is_none(),
                        file_status == FileStatus::Deferred
                    );
                    // The status is the file's own, as std reads it, and the entry opens it.
                    let std_meta = std::fs::symlink_metadata(f.path).unwrap();
                    assert_eq!(
                        (
                            f.meta().unwrap().size(),
                            f.meta().unwrap().ino(),
                            f.meta().unwrap().dev(),
                            f.meta().unwrap().mtime(),
                            f.meta().unwrap().uid()
                        ),
                        (
                            std_meta.len(),
                            std_meta.ino(),
                            std_meta.dev(),
                            Timestamp {
                                secs: std_meta.mtime(),
                                nanos: std_meta.mtime_nsec() as u32
                            },
                            std_meta.uid()
                        ),
                        "{}",
                        f.path.display()
                    );
                    let mut content = Vec::new();
                    std::io::Read::read_to_end(&mut f.open().unwrap(), &mut content).unwrap();
                    assert_eq!(content.len() as u64, f.meta().unwrap().size());
                    files
                        .lock()
                        .unwrap()
                        .push(f.path.strip_prefix(root).unwrap().to_path_buf());
                },
                |p, why| {
                    skips
                        .lock()
                        .unwrap()
                        .push((p.strip_prefix(root).unwrap().to_path_buf(), why))
                },
                |p, e| errors.lock().unwrap().push(format!("{}: {e}", p.display())),
            );
            assert_eq!(errors.into_inner().unwrap(), Vec::<String>::new());
            let mut files = files.into_inner().unwrap();
            files.retain(|p| !p.to_string_lossy().contains("many-"));
            files.sort();
            let want: Vec<PathBuf> = vec![
                "a.txt".into(),
                Path::new(odd).into(),
                "sub/deep/b.bin".into(),
            ];
            let mut want = want;
            want.sort();
            assert_eq!(files, want);
            let mut skips = skips.into_inner().unwrap();
            skips.sort();
            assert_eq!(
                skips,
                vec![
                    (PathBuf::from("cache"), SkipReason::Excluded),
                    (PathBuf::from("fifo"), SkipReason::NotRegular),
                    (PathBuf::from("link-to-dir"), SkipReason::NotRegular),
                    (PathBuf::from("link-to-file"), SkipReason::NotRegular),
                    (PathBuf::from("skipped"), SkipReason::PseudoFs),
                    (PathBuf::from("sub/e.iso"), SkipReason::Excluded),
                ]
            );
        }
    }

    #[test]
    fn a_file_the_walk_opened_to_stat_is_the_one_its_entry_reads() {
        let dir = tempfile::tempdir().unwrap();
        // The replacement is written beside the walked directory, not in it.
        let (walked, beside) = (dir.path().join("walked"), dir.path().join("beside"));
        std::fs::create_dir(&walked).unwrap();
        std::fs::create_dir(&beside).unwrap();
        let cancel = AtomicBool::new(false);
        let excludes = Excludes::default();
        for (file_status, want) in [
            (FileStatus::Opened, &b"what the walk saw"[..]),
            // By name, the entry opens whatever holds the name by then.
            (FileStatus::ByName, &b"a replacement"[..]),
            (FileStatus::Deferred, &b"a replacement"[..]),
        ] {
            std::fs::write(walked.join("f"), b"what the walk saw").unwrap();
            let cfg = one_thread_from_root(&excludes, &cancel, file_status);
            let read = Mutex::new(Vec::new());
            walk(
                std::slice::from_ref(&walked),
                &cfg,
                |f| {
                    let mut read = read.lock().unwrap();
                    // A file system may list the renamed entry once more: the first
                    // listing is the one under test.
                    if !read.is_empty() {
                        return;
                    }
                    // Replaced between the walk's status and the sweep's read.
                    let tmp = beside.join("tmp");
                    std::fs::write(&tmp, b"a replacement").unwrap();
                    std::fs::rename(&tmp, f.path).unwrap();
                    let mut content = Vec::new();
                    std::io::Read::read_to_end(&mut f.open().unwrap(), &mut content).unwrap();
                    read.push(content);
                },
                |p, why| panic!("{} skipped: {why:?}", p.display()),
                |p, e| panic!("{}: {e}", p.display()),
            );
            assert_eq!(
                read.into_inner().unwrap(),
                vec![want.to_vec()],
                "{file_status:?}"
            );
        }
    }

    #[test]
    fn a_deferred_status_of_a_file_gone_or_replaced_since_the_listing_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("gone"), b"g").unwrap();
        std::fs::write(dir.path().join("now-a-dir"), b"d").unwrap();
        let cancel = AtomicBool::new(false);
        let excludes = Excludes::default();
        let cfg = one_thread_from_root(&excludes, &cancel, FileStatus::Deferred);
        let errors = Mutex::new(Vec::new());
        walk(
            &[dir.path().to_path_buf()],
            &cfg,
            |f| {
                std::fs::remove_file(f.path).unwrap();
                if f.path.ends_with("now-a-dir") {
                    std::fs::create_dir(f.path).unwrap();
                }
                let e = f.meta().unwrap_err();
                errors
                    .lock()
                    .unwrap()
                    .push((f.path.file_name().unwrap().to_owned(), e.to_string()));
            },
            |p, why| panic!("{} skipped: {why:?}", p.display()),
            |p, e| panic!("{}: {e}", p.display()),
        );
        let mut errors = errors.into_inner().unwrap();
        errors.sort();
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].0, "gone");
        assert!(errors[0].1.contains("No such file"), "{}", errors[0].1);
        assert_eq!(errors[1].0, "now-a-dir");
        assert!(
            errors[1].1.contains("no longer a regular file"),
            "{}",
            errors[1].1
        );
    }

    #[test]
    fn a_symlink_as_a_root_or_a_missing_root_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("real")).unwrap();
        std::fs::write(dir.path().join("real/f"), b"f").unwrap();
        std::os::unix::fs::symlink(dir.path().join("real"), dir.path().join("link")).unwrap();
        let cancel = AtomicBool::new(false);
        let excludes = Excludes::default();
        let cfg = one_thread_from_root(&excludes, &cancel, FileStatus::ByName);
        let files = Mutex::new(0);
        let skips = Mutex::new(Vec::new());
        let errors = Mutex::new(0);
        walk(
            &[dir.path().join("link"), dir.path().join("missing")],
            &cfg,
            |_| *files.lock().unwrap() += 1,
            |p, why| skips.lock().unwrap().push((p.to_path_buf(), why)),
            |_, _| *errors.lock().unwrap() += 1,
        );
        assert_eq!(*files.lock().unwrap(), 0);
        assert_eq!(
            skips.into_inner().unwrap(),
            vec![(dir.path().join("link"), SkipReason::NotRegular)]
        );
        assert_eq!(*errors.lock().unwrap(), 1);
    }

    #[test]
    fn globs() {
        assert!(glob_match("*.log", "a.log"));
        assert!(!glob_match("*.log", "dir/a.log"));
        assert!(glob_match("/var/**/*.log", "/var/a/b/c.log"));
        assert!(glob_match("/var/**", "/var/a/b"));
        assert!(glob_match("/tmp/?x", "/tmp/ax"));
        assert!(!glob_match("/tmp/?x", "/tmp/x"));
        // `**/` stands for whole segments: it no longer matches inside a name.
        assert!(glob_match("/var/**/x.log", "/var/x.log"));
        assert!(glob_match("/var/**/x.log", "/var/a/b/x.log"));
        assert!(!glob_match("/var/**/x.log", "/var/ax.log"));
        assert!(glob_match("**/cache", "/home/bob/cache"));
        assert!(glob_match("/a/**", "/a/"));
        // Character classes, within a segment.
        assert!(glob_match("core.[0-9]*", "core.123"));
        assert!(!glob_match("core.[0-9]*", "core.x1"));
        assert!(glob_match("[!.]*", "visible"));
        assert!(!glob_match("[!.]*", ".hidden"));
        assert!(glob_match("[^.]*", "visible"));
        assert!(glob_match("[]x]", "]"));
        assert!(!glob_match("a[/]b", "a/b"));
        assert!(
            !glob_match("a[!x]b", "a/b"),
            "a class never matches a slash"
        );
        assert!(
            glob_match("file[", "file["),
            "an unclosed [ stands for itself"
        );
        assert!(glob_match("[ab]", "b") && !glob_match("[ab]", "c"));
        // No exponential time on many stars (this took minutes with the recursive matcher).
        let stars = "**a**a**a**a**a**a**a**a**a**a**a**a**b";
        assert!(!glob_match(stars, &"a".repeat(200)));
        // `?` and classes stand for characters, not bytes.
        assert!(glob_match("caf?", "café"));
        assert!(glob_match("caf[éè]", "café") && !glob_match("caf[!é]", "café"));
        assert!(glob_match("[à-ü]*", "élan"));
        // Paths past the stack rows.
        let deep = format!("/{}x.log", "a/".repeat(300));
        assert!(glob_match("/**/x.?og", &deep) && !glob_match("/**/y.log", &deep));
        // A relative pattern with a slash could never match an absolute device path.
        assert!(check_exclude("nd/skipme")
            .unwrap_err()
            .contains("/nd/skipme"));
        assert!(check_exclude("").unwrap_err().contains("empty pattern"));
        for fine in [
            "/nd/skipme",
            "**/skipme",
            "*.iso",
            "core.[0-9]*",
            "cache/",
            "/",
        ] {
            assert_eq!(check_exclude(fine), Ok(()), "{fine}");
        }
        let ex = Excludes::new(&["*.iso".into(), "/home/*/cache".into()]);
        assert!(ex.matches("/data/big.iso"));
        assert!(ex.matches("/home/bob/cache"));
        assert!(!ex.matches("/home/bob/cache2"));
    }
}
