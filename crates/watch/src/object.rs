//! Reading one object: open without following links, check type and size, hash it
//! (MD5, SHA-1, SHA-256 in one read) and find the account behind it.
//!
//! Why one read: the bytes hashed are the bytes copied into the queue and submitted,
//! so the verdict, the hashes and the queued copy always describe the same content even
//! if the file changes or disappears afterwards.

use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use md5::Md5;
use riposte_host::{HostError, HostRoot};
use riposte_model::path_text;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::config::{ObjectFilter, WatchConfig};
use crate::event::AlertCode;

/// An object's content and hashes.
#[derive(Debug, Clone)]
pub(crate) struct Object {
    /// File name used for the submission.
    pub name: String,
    /// The content.
    pub bytes: Vec<u8>,
    /// MD5 hex.
    pub md5: String,
    /// SHA-1 hex.
    pub sha1: String,
    /// SHA-256 hex.
    pub sha256: String,
}

/// Where and by whom an object was seen.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Sighting {
    /// Device path, in its `path_text` form.
    pub device_path: String,
    /// Account name, when the uid is in the device's passwd file.
    pub user_name: Option<String>,
    /// Uid.
    pub user_uid: Option<u32>,
}

/// Result of reading one object.
#[derive(Debug)]
pub(crate) enum ReadOutcome {
    /// Read and hashed.
    Object(Object, Sighting),
    /// Not in scope (filtered by type, empty, not a regular file, a symbolic link).
    Skipped(&'static str),
    /// Could not be read; tell the administrator.
    Alert(AlertCode, String),
}

/// What triggered the read.
#[derive(Debug)]
pub(crate) struct Trigger {
    /// Device path, in its `path_text` form.
    pub device_path: String,
    /// Host path.
    pub host_path: std::path::PathBuf,
    /// File descriptor from fanotify (the object itself, immune to renames).
    pub fd: Option<OwnedFd>,
    /// Real uid of the process that wrote or ran it (fanotify), read from `/proc` as
    /// soon as the event was read: later, the writer may have exited, or its pid may
    /// belong to another process, whose account would be recorded instead.
    pub writer_uid: Option<u32>,
    /// Manual submission: the type filter does not apply and skips are reported.
    pub manual: bool,
}

const EXEC_EXTENSIONS: &[&str] = &[
    "exe", "com", "dll", "sys", "scr", "msi", "bat", "cmd", "ps1", "psm1", "vbs", "vbe", "js",
    "jse", "wsf", "hta", "jar", "sh", "bash", "py", "pl", "rb", "php", "elf", "so", "bin", "run",
    "appimage", "lnk", "docm", "xlsm", "pptm", "doc", "docx", "xls", "xlsx", "ppt", "pptx", "rtf",
    "pdf", "one", "iso", "img", "zip", "7z", "rar",
];

/// Leading bytes of documents and archives that carry active content as often as
/// programs do (macros, scripts, exploits, packed executables): PDF, OLE2 (Office 97–2003,
/// MSI), RTF, ZIP (Office Open XML, JAR, APK and plain archives).
const ACTIVE_CONTENT_MAGIC: &[&[u8]] = &[
    b"%PDF-",
    b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
    b"{\\rtf",
    b"PK\x03\x04",
];

/// Whether `bytes` (with file `mode` and `name`) passes `filter`.
pub(crate) fn passes_filter(filter: ObjectFilter, name: &str, mode: u32, bytes: &[u8]) -> bool {
    match filter {
        ObjectFilter::Any => true,
        ObjectFilter::Executables => {
            bytes.starts_with(b"\x7fELF")
                || bytes.starts_with(b"MZ")
                || bytes.starts_with(b"#!")
                || ACTIVE_CONTENT_MAGIC.iter().any(|m| bytes.starts_with(m))
                || mode & 0o111 != 0
                || Path::new(name)
                    .extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| EXEC_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        }
    }
}

/// Open, check, read and hash the object of `t`.
pub(crate) fn read_object(config: &WatchConfig, t: Trigger) -> ReadOutcome {
    let shown = &t.device_path;
    let file = match t.fd {
        Some(fd) => File::from(fd),
        // Every component is opened without following links and the object is checked
        // to be a regular file before it is opened: O_NOFOLLOW alone covers only the
        // last component, so a directory swapped for a link would lead anywhere.
        None => match HostRoot::new(&config.host_root)
            .open_regular(&path_text::decode(&t.device_path))
        {
            Ok(opened) => opened.file,
            Err(HostError::NotFound { .. }) => {
                return ReadOutcome::Alert(
                    AlertCode::PathVanished,
                    format!(
                        "{shown} vanished before it could be hashed (deleted or renamed right after it was written); nothing was submitted for it. If it reappears under another name in a watched folder it is seen there"
                    ),
                )
            }
            Err(HostError::SymlinkInPath { component, .. }) => {
                return if t.manual {
                    ReadOutcome::Alert(
                        AlertCode::ReadFailed,
                        format!("{shown}: {component:?} is a symbolic link, not followed; submit the path of the file itself"),
                    )
                } else {
                    ReadOutcome::Skipped("symbolic link")
                }
            }
            Err(HostError::NotRegularFile { kind, .. }) => {
                return if t.manual {
                    ReadOutcome::Alert(
                        AlertCode::ReadFailed,
                        format!("{shown} is a {kind}, not a regular file; only files can be submitted"),
                    )
                } else {
                    ReadOutcome::Skipped("not a regular file")
                }
            }
            Err(e @ (HostError::InvalidPath { .. } | HostError::NotADirectory { .. })) => {
                return ReadOutcome::Alert(AlertCode::ReadFailed, e.to_string())
            }
            Err(e) => {
                return ReadOutcome::Alert(
                    AlertCode::ReadFailed,
                    format!("cannot open {shown}: {e}; check that the agent runs as root"),
                )
            }
        },
    };
    let meta = match file.metadata() {
        Ok(m) => m,
        Err(e) => {
            return ReadOutcome::Alert(AlertCode::ReadFailed, format!("cannot stat {shown}: {e}"))
        }
    };
    if !meta.is_file() {
        return if t.manual {
            ReadOutcome::Alert(
                AlertCode::ReadFailed,
                format!("{shown} is not a regular file; only files can be submitted"),
            )
        } else {
            ReadOutcome::Skipped("not a regular file")
        };
    }
    if meta.len() == 0 && !t.manual {
        return ReadOutcome::Skipped("empty");
    }
    let too_large = |size: u64| {
        ReadOutcome::Alert(
            AlertCode::ObjectTooLarge,
            format!(
                "{shown} is {size} bytes, over the {}-byte limit for sandbox submission; it was not submitted. Raise the limit or have it analysed another way",
                config.max_object_size
            ),
        )
    };
    if meta.len() > config.max_object_size {
        return too_large(meta.len());
    }
    // Encoded like the device path, so that the sandbox's report names the same bytes.
    let name = t
        .host_path
        .file_name()
        .map(path_text::encode)
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "object".into());
    // Read at most one byte past the limit: the file may grow after the stat.
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    if let Err(e) = (&file)
        .take(config.max_object_size + 1)
        .read_to_end(&mut bytes)
    {
        return ReadOutcome::Alert(AlertCode::ReadFailed, format!("cannot read {shown}: {e}"));
    }
    if bytes.len() as u64 > config.max_object_size {
        return too_large(bytes.len() as u64);
    }
    if !t.manual && !passes_filter(config.filter, &name, meta.permissions().mode(), &bytes) {
        return ReadOutcome::Skipped("not an executable type");
    }
    let uid = t.writer_uid.unwrap_or_else(|| meta.uid());
    let sighting = Sighting {
        device_path: t.device_path.clone(),
        user_name: user_name(&config.host_root, uid),
        user_uid: Some(uid),
    };
    let (md5, sha1, sha256) = (
        Md5::digest(&bytes),
        Sha1::digest(&bytes),
        Sha256::digest(&bytes),
    );
    ReadOutcome::Object(
        Object {
            name,
            md5: hex::encode(md5),
            sha1: hex::encode(sha1),
            sha256: hex::encode(sha256),
            bytes,
        },
        sighting,
    )
}

/// Real uid of a running process (`None` once it has exited).
pub(crate) fn process_uid(pid: u32) -> Option<u32> {
    // Read lossily: the Name: line holds the process's raw name, which need not be UTF-8
    // (a sample can name itself so), while the Uid: line is ASCII.
    let status = std::fs::read(format!("/proc/{pid}/status")).ok()?;
    let status = String::from_utf8_lossy(&status);
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Account name of `uid` in the device's `/etc/passwd` (under `host_root`).
pub(crate) fn user_name(host_root: &Path, uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string(host_root.join("etc/passwd")).ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let entry_uid: u32 = f.nth(1)?.parse().ok()?;
        (entry_uid == uid && !name.is_empty()).then(|| name.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_by_type() {
        let f = ObjectFilter::Executables;
        assert!(passes_filter(f, "a", 0o644, b"\x7fELF\x02"));
        assert!(passes_filter(f, "a", 0o644, b"MZ\x90\x00"));
        assert!(passes_filter(f, "a", 0o644, b"#!/bin/sh\n"));
        assert!(passes_filter(f, "a", 0o755, b"data"));
        assert!(passes_filter(f, "setup.EXE", 0o644, b"data"));
        assert!(!passes_filter(f, "notes.txt", 0o644, b"hello"));
        // Documents and archives, by content whatever their name, and by name.
        for magic in [
            &b"%PDF-1.4\n"[..],
            b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1\x00",
            b"{\\rtf1\\ansi",
            b"PK\x03\x04\x14\x00",
        ] {
            assert!(passes_filter(f, "download", 0o644, magic), "{magic:?}");
        }
        assert!(passes_filter(f, "Invoice.DOCX", 0o644, b"data"));
        assert!(passes_filter(
            ObjectFilter::Any,
            "notes.txt",
            0o644,
            b"hello"
        ));
    }

    fn trigger(root: &Path, device_path: &str, manual: bool) -> Trigger {
        Trigger {
            device_path: device_path.into(),
            host_path: HostRoot::new(root)
                .host_path(&path_text::decode(device_path))
                .unwrap(),
            fd: None,
            writer_uid: None,
            manual,
        }
    }

    #[test]
    fn a_symlinked_directory_on_the_way_is_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir_all(root.join("secret")).unwrap();
        std::fs::create_dir_all(root.join("watched")).unwrap();
        std::fs::write(
            root.join("secret/key.sh"),
            b"#!/bin/sh
secret
",
        )
        .unwrap();
        std::fs::write(
            root.join("watched/real.sh"),
            b"#!/bin/sh
real
",
        )
        .unwrap();
        std::os::unix::fs::symlink(root.join("secret"), root.join("watched/dir")).unwrap();
        let config = WatchConfig::from_settings(&Default::default(), &root, d.path());

        match read_object(&config, trigger(&root, "/watched/dir/key.sh", false)) {
            ReadOutcome::Skipped(why) => assert_eq!(why, "symbolic link"),
            other => panic!("{other:?}"),
        }
        match read_object(&config, trigger(&root, "/watched/dir/key.sh", true)) {
            ReadOutcome::Alert(AlertCode::ReadFailed, m) => {
                assert!(m.contains("\"dir\" is a symbolic link"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        match read_object(&config, trigger(&root, "/watched/real.sh", false)) {
            ReadOutcome::Object(o, _) => assert_eq!(o.bytes, b"#!/bin/sh\nreal\n"),
            other => panic!("{other:?}"),
        }
    }

    /// A writer that names itself with bytes that are not UTF-8 is still attributed to its
    /// account, not to the file's owner.
    #[test]
    fn the_uid_of_a_process_named_with_bytes_that_are_not_utf8_is_found() {
        use std::os::unix::ffi::OsStrExt;
        let d = tempfile::tempdir().unwrap();
        let exe = d.path().join(std::ffi::OsStr::from_bytes(b"wri\xffter"));
        std::fs::copy("/usr/bin/sleep", &exe).unwrap();
        let mut child = std::process::Command::new(&exe).arg("30").spawn().unwrap();
        // Until the child has run exec, its status still names this test.
        let status = format!("/proc/{}/status", child.id());
        for _ in 0..200 {
            if std::fs::read(&status).is_ok_and(|s| s.windows(3).any(|w| w == b"\xffte")) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let uid = process_uid(child.id());
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(uid, Some(unsafe { libc::getuid() }));
    }

    #[test]
    fn passwd_lookup() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nbroken\nalice:x:4242:4242::/home/alice:/bin/sh\n",
        )
        .unwrap();
        assert_eq!(user_name(d.path(), 4242).as_deref(), Some("alice"));
        assert_eq!(user_name(d.path(), 0).as_deref(), Some("root"));
        assert_eq!(user_name(d.path(), 7), None);
        assert_eq!(
            process_uid(std::process::id()),
            Some(unsafe { libc::getuid() })
        );
    }
}
