//! Protected objects: what quarantine must never remove.
//!
//! Deleting the kernel, the boot loader, the dynamic loader, `/bin/sh` or
//! libc makes the device unbootable or unusable, and deleting the agent's own
//! data would blind it; a false positive on any of them must end in a clear
//! refusal, not in an outage. Paths are matched by name (exact, `dir/`
//! prefix, `*` within a component of a file pattern; a `dir/` pattern is
//! literal, so a directory named with a `*` is still exactly that directory)
//! and, for literal names, by identity (device and inode, resolved under the
//! root with links followed), so that
//! `/usr/bin/sh` is protected when `/bin/sh` is listed and `/bin` links to
//! `/usr/bin`.

use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use riposte_host::{HostError, HostRoot, OpenedFile};
use riposte_model::path_text;
use rustix::fs::{Mode, OFlags};

use crate::QuarantineError;

/// The default protected list.
pub fn default_protected() -> Vec<String> {
    [
        "/boot/",
        "/bin/sh",
        "/usr/bin/sh",
        "/bin/dash",
        "/usr/bin/dash",
        "/bin/bash",
        "/usr/bin/bash",
        "/sbin/init",
        "/usr/sbin/init",
        "/lib/systemd/systemd",
        "/usr/lib/systemd/systemd",
        "/lib/ld-linux*",
        "/lib64/ld-linux*",
        "/usr/lib/ld-linux*",
        "/usr/lib64/ld-linux*",
        "/lib/*-linux-gnu*/ld-linux*",
        "/usr/lib/*-linux-gnu*/ld-linux*",
        "/lib/ld-musl*",
        "/usr/lib/ld-musl*",
        "/lib/*-linux-gnu*/libc.so*",
        "/usr/lib/*-linux-gnu*/libc.so*",
        "/lib64/libc.so*",
        "/usr/lib64/libc.so*",
        "/lib/libc.so*",
        "/usr/lib/libc.so*",
        "/lib/libc.musl*",
        "/usr/lib/libc.musl*",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// `*` matches any run of characters other than `/`.
fn wildcard(pat: &[u8], s: &[u8]) -> bool {
    match pat.first() {
        None => s.is_empty(),
        Some(b'*') => (0..=s.len())
            .take_while(|&i| i == 0 || s[i - 1] != b'/')
            .any(|i| wildcard(&pat[1..], &s[i..])),
        Some(&c) => s.first() == Some(&c) && wildcard(&pat[1..], &s[1..]),
    }
}

/// `path` as the patterns spell paths, as bytes: absolute, one `/` between
/// components, no `.`. Without this `//boot/vmlinuz` or `/./lib/…/libc.so.6`
/// would name a protected file and match no pattern. Relative paths and `..`
/// are refused, as the host refuses them. Bytes, not text: a lossy copy would
/// let names that differ only in bytes that are not UTF-8 match alike.
pub(crate) fn normalise(path: &Path) -> Result<Vec<u8>, HostError> {
    let mut out = Vec::new();
    for c in HostRoot::components(path)? {
        out.push(b'/');
        out.extend_from_slice(c.as_bytes());
    }
    if out.is_empty() {
        out.push(b'/');
    }
    Ok(out)
}

/// Whether the normalised path `p` matches protection pattern `pat`, a device
/// path in its [`path_text`] form (so that a pattern can name any bytes).
pub(crate) fn matches(pat: &str, p: &[u8]) -> bool {
    let pat = path_text::decode_bytes(pat);
    if let Some(dir) = pat.strip_suffix(b"/") {
        return p == dir || p.starts_with(&pat);
    }
    wildcard(&pat, p)
}

/// Does `pat` name one path (so that it can also be compared by identity)? A
/// directory pattern always does: [`matches`] takes it literally.
fn is_literal(pat: &str) -> bool {
    pat.ends_with('/') || !pat.contains('*')
}

/// The first pattern of `list` that `path` matches, once normalised.
fn first_match<'a>(list: &'a [String], path: &Path) -> Result<Option<&'a String>, HostError> {
    let p = normalise(path)?;
    Ok(list.iter().find(|pat| matches(pat, &p)))
}

pub(crate) fn check_path(list: &[String], path: &Path) -> Result<(), QuarantineError> {
    if let Some(pat) = first_match(list, path)? {
        return Err(QuarantineError::Protected {
            path: path.to_path_buf(),
            reason: format!("matches protected pattern {pat:?}"),
        });
    }
    Ok(())
}

pub(crate) fn check_identity(
    host: &HostRoot,
    list: &[String],
    data_dir: &Path,
    f: &OpenedFile,
) -> Result<(), QuarantineError> {
    for pat in list.iter().filter(|p| is_literal(p) && !p.ends_with('/')) {
        if let Ok(hp) = host.host_path(&path_text::decode(pat)) {
            if let Ok(md) = std::fs::metadata(&hp) {
                if md.dev() == f.meta.dev && md.ino() == f.meta.ino {
                    return Err(QuarantineError::Protected {
                        path: f.device_path.clone(),
                        reason: format!("it is the same file as protected {pat:?}"),
                    });
                }
            }
        }
    }
    // Inside a protected directory, or the store, under whatever name: compared by
    // identity from the directory the file was opened in up to `/`.
    let io = |e: rustix::io::Errno| QuarantineError::Io {
        op: "inspecting the directories above",
        path: f.device_path.clone(),
        source: e.into(),
    };
    let store =
        identity_of(data_dir).map(|id| (id, "it is inside the agent's data directory".into()));
    match protected_ancestor(host, list, store, &f.parent).map_err(io)? {
        Some(reason) => Err(QuarantineError::Protected {
            path: f.device_path.clone(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Why the directory `parent`, or one above it, is protected, if it is: its device
/// and inode are compared with those of every literal directory pattern of `list`
/// and with `also`, going up through `..`, so that what is compared is where a file
/// is, whatever name the path gave it (a bind mount, a link higher up in a
/// pattern's own path).
fn protected_ancestor(
    host: &HostRoot,
    list: &[String],
    also: Option<((u64, u64), String)>,
    parent: &OwnedFd,
) -> Result<Option<String>, rustix::io::Errno> {
    let mut dirs: Vec<((u64, u64), String)> = also.into_iter().collect();
    for pat in list.iter().filter(|p| is_literal(p)) {
        if let Some(dir) = pat.strip_suffix('/') {
            if let Some(id) = host
                .host_path(&path_text::decode(dir))
                .ok()
                .and_then(|p| identity_of(&p))
            {
                dirs.push((id, format!("it is inside protected directory {pat:?}")));
            }
        }
    }
    if dirs.is_empty() {
        return Ok(None);
    }
    let open_dir = |at: &OwnedFd, name: &str| {
        rustix::fs::openat(
            at,
            name,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
    };
    let mut cur = open_dir(parent, ".")?;
    let st = rustix::fs::fstat(&cur)?;
    let mut id = (st.st_dev, st.st_ino);
    // Deeper than any real tree; a bound keeps a bind-mount loop from spinning.
    for _ in 0..4096 {
        if let Some((_, why)) = dirs.iter().find(|(d, _)| *d == id) {
            return Ok(Some(why.clone()));
        }
        let up = open_dir(&cur, "..")?;
        let st = rustix::fs::fstat(&up)?;
        if (st.st_dev, st.st_ino) == id {
            return Ok(None); // `/`: its `..` is itself
        }
        id = (st.st_dev, st.st_ino);
        cur = up;
    }
    Ok(Some("its directory is nested too deeply to check".into()))
}

/// Device and inode of what `p` names, links followed.
fn identity_of(p: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

/// Refuses a restore to `target` (whose parent directory is open as
/// `parent`, the last component being `name`) when the target is protected.
///
/// Restores run as root with the entry's owner and mode, so a target is as
/// dangerous as a deletion: over the boot loader, into the agent's data, or
/// into the quarantine store itself (a forged record or key). Names alone are
/// not enough: a directory can be reached under another name (a bind mount, a
/// link higher up in the protected list's own paths), so protected
/// directories are also compared by device and inode with every directory
/// from `parent` up to `/`, and protected files by their directory's identity
/// and their name.
pub(crate) fn check_restore_target(
    host: &HostRoot,
    list: &[String],
    store_dir: &Path,
    target: &Path,
    parent: &OwnedFd,
    name: &OsStr,
) -> Result<(), QuarantineError> {
    let refuse = |reason: String| QuarantineError::ProtectedTarget {
        path: target.to_path_buf(),
        reason,
    };
    if let Some(pat) = first_match(list, target)? {
        return Err(refuse(format!("it matches protected pattern {pat:?}")));
    }
    let io = |e: rustix::io::Errno| QuarantineError::Io {
        op: "inspecting the directories above",
        path: target.to_path_buf(),
        source: e.into(),
    };
    let parent_st = rustix::fs::fstat(parent).map_err(io)?;
    let parent_id = (parent_st.st_dev, parent_st.st_ino);
    for pat in list.iter().filter(|p| is_literal(p) && !p.ends_with('/')) {
        let pat_path = path_text::decode(pat);
        let same_name = pat_path.file_name() == Some(name);
        let pat_dir = pat_path.parent().and_then(|d| host.host_path(d).ok());
        if same_name && pat_dir.and_then(|d| identity_of(&d)) == Some(parent_id) {
            return Err(refuse(format!("it is the same file as protected {pat:?}")));
        }
    }
    let store = identity_of(store_dir).map(|id| (id, "it is inside the quarantine store".into()));
    match protected_ancestor(host, list, store, parent).map_err(io)? {
        Some(why) => Err(refuse(why)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(matches("/boot/", b"/boot/vmlinuz"));
        assert!(matches("/boot/", b"/boot"));
        assert!(!matches("/boot/", b"/bootx"));
        assert!(matches(
            "/lib/*-linux-gnu*/libc.so*",
            b"/lib/x86_64-linux-gnu/libc.so.6"
        ));
        assert!(!matches(
            "/lib/*-linux-gnu*/libc.so*",
            b"/lib/x86_64-linux-gnu/sub/libc.so.6"
        ));
        assert!(matches("/bin/sh", b"/bin/sh"));
        assert!(!matches("/bin/sh", b"/bin/shx"));
    }

    #[test]
    fn a_path_spelled_unusually_still_matches_and_dotdot_is_refused() {
        let list = default_protected();
        for p in [
            "//boot/vmlinuz",
            "/./lib/x86_64-linux-gnu/libc.so.6",
            "/lib//x86_64-linux-gnu/./libc.so.6",
            "/boot/./",
            "/usr/bin/sh/",
        ] {
            assert!(
                matches!(
                    check_path(&list, Path::new(p)),
                    Err(QuarantineError::Protected { .. })
                ),
                "{p}"
            );
        }
        for p in ["/boot/../etc/passwd", "boot/vmlinuz", ""] {
            assert!(
                matches!(
                    check_path(&list, Path::new(p)),
                    Err(QuarantineError::Host(HostError::InvalidPath { .. }))
                ),
                "{p}"
            );
        }
        assert!(check_path(&list, Path::new("/home/alice/boot/vmlinuz")).is_ok());
    }

    #[test]
    fn names_that_are_not_utf8_are_matched_by_their_bytes() {
        let odd = |b: &[u8]| Path::new(OsStr::from_bytes(b)).to_path_buf();
        let list = vec![
            "/boot/".to_string(),
            "/opt/evil\\xff.bin".to_string(),
            "/opt/lib\\xfe*".to_string(),
        ];
        for p in [
            odd(b"/boot/vmlinuz\xff"),
            odd(b"/boot/\xff\xfe/x"),
            odd(b"/opt/evil\xff.bin"),
            odd(b"/opt/lib\xfe.so.1"),
        ] {
            assert!(
                matches!(
                    check_path(&list, &p),
                    Err(QuarantineError::Protected { .. })
                ),
                "{p:?}"
            );
        }
        // Another byte, or U+FFFD (what a lossy copy of \xff would read), is another name.
        for p in [
            odd(b"/opt/evil\xfe.bin"),
            odd("/opt/evil\u{fffd}.bin".as_bytes()),
        ] {
            assert!(check_path(&list, &p).is_ok(), "{p:?}");
        }
    }
}
