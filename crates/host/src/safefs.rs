//! Safe file operations under a [`HostRoot`].
//!
//! Why this module exists: the agent runs as root and acts on paths named by
//! detections, i.e. on paths that an attacker may control. A naive
//! `std::fs::remove_file(path)` follows symlinks in the directory part of the
//! path, and between "scan" and "delete" the attacker can replace the file by
//! a symlink (or rename another file over it). We therefore:
//!
//! 1. open every directory of the path one by one with
//!    `openat(parent, name, O_DIRECTORY | O_NOFOLLOW)` starting from the root,
//!    so no component can be a symlink;
//! 2. `fstatat(..., AT_SYMLINK_NOFOLLOW)` the last component and refuse
//!    anything but a regular file *before* opening it (opening a device node
//!    or fifo can have side effects), then open it with `O_NOFOLLOW` and check
//!    through the descriptor that it is the same inode;
//! 3. before deleting, re-check device, inode and SHA-256 through the
//!    descriptor, re-check that the name in the (already open) parent
//!    directory still refers to that inode, and only then `unlinkat` relative
//!    to the parent descriptor;
//! 4. bracket the re-hash with `fstat`s of the descriptor and require the
//!    same size, mtime and ctime before it, after it (immediately before
//!    `unlinkat`) and, when the caller gives one, as the [`FileStamp`] taken
//!    when the file was copied: a hash alone passes a write that lands behind
//!    the re-hash's read position, or content changed and changed back.
//!
//! A residual window remains between the last `fstatat` and `unlinkat` (Linux
//! has no "unlink if inode is X"); it is a few instructions wide and an
//! attacker winning it can only make us unlink *a name inside the directory
//! we already verified*, never follow a link elsewhere.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use sha2::{Digest, Sha256};

use crate::{HostError, HostRoot};

/// Metadata of an opened object, from `fstat` on its descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMeta {
    /// Device id (`st_dev`).
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Full `st_mode` (type and permission bits).
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Number of hard links.
    pub nlink: u64,
    /// Last access time (seconds, nanoseconds).
    pub atime: (i64, i64),
    /// Last modification time (seconds, nanoseconds).
    pub mtime: (i64, i64),
    /// Last status change time (seconds, nanoseconds).
    pub ctime: (i64, i64),
}

impl FileMeta {
    pub(crate) fn from_stat(st: &rustix::fs::Stat) -> Self {
        FileMeta {
            dev: st.st_dev,
            ino: st.st_ino,
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            size: st.st_size as u64,
            nlink: st.st_nlink,
            atime: (st.st_atime, st.st_atime_nsec as i64),
            mtime: (st.st_mtime, st.st_mtime_nsec as i64),
            ctime: (st.st_ctime, st.st_ctime_nsec as i64),
        }
    }

    /// Permission bits (`mode & 0o7777`).
    pub fn permissions(&self) -> u32 {
        self.mode & 0o7777
    }

    /// Size and change times: what any write, truncation or attribute change moves.
    pub fn stamp(&self) -> FileStamp {
        FileStamp {
            size: self.size,
            mtime: self.mtime,
            ctime: self.ctime,
        }
    }
}

/// Size, mtime and ctime (with nanoseconds) of a file at one instant.
///
/// The kernel moves mtime on every write and ctime on every write, attribute
/// change and `utimensat`; ctime cannot be set back by anyone short of
/// changing the clock, so an equal stamp means "not modified since".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    /// Size in bytes.
    pub size: u64,
    /// Last modification time (seconds, nanoseconds).
    pub mtime: (i64, i64),
    /// Last status change time (seconds, nanoseconds).
    pub ctime: (i64, i64),
}

/// What identifies "the object that was inspected": device, inode and content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileIdentity {
    /// Device id.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// SHA-256 of the content.
    pub sha256: [u8; 32],
}

/// A regular file opened safely, together with its parent directory.
#[derive(Debug)]
pub struct OpenedFile {
    /// The device path that was opened.
    pub device_path: PathBuf,
    /// Descriptor of the parent directory (opened without following links).
    pub parent: OwnedFd,
    /// Name of the object inside `parent`.
    pub name: OsString,
    /// The open file (read-only).
    pub file: File,
    /// `fstat` of `file`.
    pub meta: FileMeta,
}

impl OpenedFile {
    /// SHA-256 of the whole content, read through the descriptor (positional
    /// reads: the file offset is not moved).
    pub fn sha256(&self) -> Result<[u8; 32], HostError> {
        hash_file(&self.file).map_err(|e| HostError::io("reading", &self.device_path, e))
    }

    /// Device, inode and SHA-256 of the opened object.
    pub fn identity(&self) -> Result<FileIdentity, HostError> {
        Ok(FileIdentity {
            dev: self.meta.dev,
            ino: self.meta.ino,
            sha256: self.sha256()?,
        })
    }
}

/// SHA-256 of a file read with positional reads.
pub fn hash_file(file: &File) -> io::Result<[u8; 32]> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut off = 0u64;
    loop {
        let n = file.read_at(&mut buf, off)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        off += n as u64;
    }
    Ok(h.finalize().into())
}

/// Human name of a file type, for messages.
pub fn kind_name(ft: FileType) -> &'static str {
    match ft {
        FileType::RegularFile => "regular file",
        FileType::Directory => "directory",
        FileType::Symlink => "symbolic link",
        FileType::Fifo => "fifo",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        _ => "object of unknown type",
    }
}

fn classify_dir_error(parent: &OwnedFd, name: &OsStr, path: &Path, e: Errno) -> HostError {
    let component = name.to_string_lossy().into_owned();
    match e {
        Errno::NOENT => HostError::NotFound {
            path: path.to_path_buf(),
            missing_folder: Some(component),
        },
        Errno::LOOP | Errno::NOTDIR => {
            match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
                    HostError::SymlinkInPath {
                        path: path.to_path_buf(),
                        component,
                    }
                }
                _ => HostError::NotADirectory {
                    path: path.to_path_buf(),
                    component,
                },
            }
        }
        e => HostError::io("opening directory", path, e),
    }
}

impl HostRoot {
    /// Opens the root directory itself.
    pub fn open_root(&self) -> Result<OwnedFd, HostError> {
        rustix::fs::open(
            self.path(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| HostError::io("opening host root", self.path(), e))
    }

    fn walk_dirs(&self, device_path: &Path, comps: &[OsString]) -> Result<OwnedFd, HostError> {
        let mut dir = self.open_root()?;
        for c in comps {
            let next = rustix::fs::openat(
                &dir,
                c.as_os_str(),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| classify_dir_error(&dir, c, device_path, e))?;
            dir = next;
        }
        Ok(dir)
    }

    /// Opens a directory (every component opened without following links).
    pub fn open_dir(&self, device_dir: &Path) -> Result<OwnedFd, HostError> {
        let comps = Self::components(device_dir)?;
        self.walk_dirs(device_dir, &comps)
    }

    /// Opens the parent directory of `device_path` safely and returns it with
    /// the last component's name.
    pub fn open_parent(&self, device_path: &Path) -> Result<(OwnedFd, OsString), HostError> {
        // `name/` and `name/.` name a directory (POSIX resolves them so); taken for the
        // file `name`, a restore `--to dir/` would write a file called `dir`.
        let bytes = device_path.as_os_str().as_encoded_bytes();
        if bytes.len() > 1 && (bytes.ends_with(b"/") || bytes.ends_with(b"/.")) {
            let end = if bytes.ends_with(b"/") { "/" } else { "/." };
            return Err(HostError::InvalidPath {
                path: device_path.to_path_buf(),
                reason: format!(
                    "it ends with `{end}`, so it names a directory; give the file's path"
                ),
            });
        }
        let mut comps = Self::components(device_path)?;
        let name = comps.pop().ok_or_else(|| HostError::InvalidPath {
            path: device_path.to_path_buf(),
            reason: "it names the root directory itself".into(),
        })?;
        let dir = self.walk_dirs(device_path, &comps)?;
        Ok((dir, name))
    }

    /// Opens a regular file read-only, refusing symlinks anywhere in the path
    /// and any object that is not a regular file.
    pub fn open_regular(&self, device_path: &Path) -> Result<OpenedFile, HostError> {
        let (parent, name) = self.open_parent(device_path)?;
        let st = rustix::fs::statat(&parent, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW).map_err(
            |e| {
                if e == Errno::NOENT {
                    HostError::NotFound {
                        path: device_path.to_path_buf(),
                        missing_folder: None,
                    }
                } else {
                    HostError::io("inspecting", device_path, e)
                }
            },
        )?;
        let ft = FileType::from_raw_mode(st.st_mode);
        if ft == FileType::Symlink {
            return Err(HostError::SymlinkInPath {
                path: device_path.to_path_buf(),
                component: name.to_string_lossy().into_owned(),
            });
        }
        if ft != FileType::RegularFile {
            return Err(HostError::NotRegularFile {
                path: device_path.to_path_buf(),
                kind: kind_name(ft),
            });
        }
        let fd = rustix::fs::openat(
            &parent,
            name.as_os_str(),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::NOENT => HostError::NotFound {
                path: device_path.to_path_buf(),
                missing_folder: None,
            },
            Errno::LOOP => HostError::SymlinkInPath {
                path: device_path.to_path_buf(),
                component: name.to_string_lossy().into_owned(),
            },
            e => HostError::io("opening", device_path, e),
        })?;
        let fst = rustix::fs::fstat(&fd).map_err(|e| HostError::io("fstat", device_path, e))?;
        let ft2 = FileType::from_raw_mode(fst.st_mode);
        if ft2 != FileType::RegularFile {
            return Err(HostError::NotRegularFile {
                path: device_path.to_path_buf(),
                kind: kind_name(ft2),
            });
        }
        if fst.st_dev != st.st_dev || fst.st_ino != st.st_ino {
            return Err(HostError::Changed {
                path: device_path.to_path_buf(),
                detail: "replaced while being opened".into(),
            });
        }
        Ok(OpenedFile {
            device_path: device_path.to_path_buf(),
            parent,
            name,
            file: File::from(fd),
            meta: FileMeta::from_stat(&fst),
        })
    }

    /// Opens the file and returns its identity (device, inode, SHA-256).
    pub fn identify(&self, device_path: &Path) -> Result<FileIdentity, HostError> {
        self.open_regular(device_path)?.identity()
    }

    /// Deletes `device_path` only if it still is the object described by
    /// `expected` (same device, inode and SHA-256, reached without symlinks,
    /// and not modified while it was being re-checked).
    ///
    /// Returns [`HostError::Changed`] — and deletes nothing — when the path now
    /// leads to a symlink, to another file, or to modified content;
    /// [`HostError::NotFound`] when it is gone.
    pub fn safe_unlink(
        &self,
        device_path: &Path,
        expected: &FileIdentity,
    ) -> Result<(), HostError> {
        self.safe_unlink_since(device_path, expected, None)
            .map(|_parent| ())
    }

    /// [`HostRoot::safe_unlink`], additionally requiring that size, mtime and
    /// ctime still equal `since` (taken when the object was copied), so that a
    /// write after the copy refuses the deletion even if the content was put
    /// back.
    ///
    /// Returns the descriptor of the directory the name was removed from: the
    /// removal is durable only once the caller has synced it ([`sync_dir`]).
    pub fn safe_unlink_since(
        &self,
        device_path: &Path,
        expected: &FileIdentity,
        since: Option<&FileStamp>,
    ) -> Result<OwnedFd, HostError> {
        let changed = |detail: String| HostError::Changed {
            path: device_path.to_path_buf(),
            detail,
        };
        let opened = match self.open_regular(device_path) {
            Ok(o) => o,
            Err(HostError::SymlinkInPath { component, .. }) => {
                return Err(changed(format!("{component:?} is now a symbolic link")))
            }
            Err(HostError::NotRegularFile { kind, .. }) => {
                return Err(changed(format!("it is now a {kind}")))
            }
            Err(HostError::NotADirectory { component, .. }) => {
                return Err(changed(format!("{component:?} is no longer a directory")))
            }
            Err(e) => return Err(e),
        };
        unlink_opened(&opened, expected, since)?;
        Ok(opened.parent)
    }
}

fn fstat_stamp(opened: &OpenedFile) -> Result<FileStamp, HostError> {
    let st = rustix::fs::fstat(&opened.file)
        .map_err(|e| HostError::io("fstat", &opened.device_path, e))?;
    Ok(FileMeta::from_stat(&st).stamp())
}

/// Deletes an already opened file if it still matches `expected` (and
/// `since`, when given); see [`HostRoot::safe_unlink_since`].
pub fn unlink_opened(
    opened: &OpenedFile,
    expected: &FileIdentity,
    since: Option<&FileStamp>,
) -> Result<(), HostError> {
    let path = &opened.device_path;
    let changed = |detail: String| HostError::Changed {
        path: path.clone(),
        detail,
    };
    let modified = |when: &str| {
        changed(format!(
            "it changed while being quarantined (size, modification or change time differ from {when})"
        ))
    };
    if opened.meta.dev != expected.dev || opened.meta.ino != expected.ino {
        return Err(changed(format!(
            "it is now another file (dev {} inode {}, expected dev {} inode {})",
            opened.meta.dev, opened.meta.ino, expected.dev, expected.ino
        )));
    }
    let before = fstat_stamp(opened)?;
    if since.is_some_and(|s| *s != before) {
        return Err(modified("when it was copied"));
    }
    if before != opened.meta.stamp() {
        return Err(modified("when it was opened for deletion"));
    }
    let now = opened.sha256()?;
    if now != expected.sha256 {
        return Err(changed("its content was modified".into()));
    }
    let st = rustix::fs::statat(
        &opened.parent,
        opened.name.as_os_str(),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| {
        if e == Errno::NOENT {
            HostError::NotFound {
                path: path.clone(),
                missing_folder: None,
            }
        } else {
            HostError::io("inspecting", path, e)
        }
    })?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile
        || st.st_dev != expected.dev
        || st.st_ino != expected.ino
    {
        return Err(changed(
            "the name was switched to another object just before deletion".into(),
        ));
    }
    // Last look before the unlink: a write that landed behind the re-hash's
    // read position changed the content without changing the hash we computed.
    if fstat_stamp(opened)? != before {
        return Err(modified("before its final check"));
    }
    rustix::fs::unlinkat(&opened.parent, opened.name.as_os_str(), AtFlags::empty())
        .map_err(|e| HostError::io("deleting", path, e))?;
    Ok(())
}

/// `fsync` a directory descriptor (makes a rename/unlink inside it durable).
pub fn sync_dir(dir: &impl AsFd) -> io::Result<()> {
    rustix::fs::fsync(dir).map_err(io::Error::from)
}
