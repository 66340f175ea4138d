//! inotify back end: recursive watches on the configured folders.
//!
//! inotify has one watch per directory, so new subdirectories get a watch when they
//! appear, and the files already inside them (written before the watch existed) are
//! looked at once. It sees writes (`IN_CLOSE_WRITE`) and moves into a folder
//! (`IN_MOVED_TO`), not executions, and gives no process: the account is the owner.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use tokio::sync::mpsc::UnboundedSender;

use super::{wait_readable, MonitorMsg, Scope};
use crate::event::AlertCode;

const MASK: u32 = libc::IN_CLOSE_WRITE
    | libc::IN_MOVED_TO
    | libc::IN_CREATE
    | libc::IN_DONT_FOLLOW
    | libc::IN_EXCL_UNLINK
    | libc::IN_ONLYDIR;

/// What fanotify's close-after-write and exec events do not show: an object renamed or
/// moved into a folder (a download written as `x.crdownload`, then renamed `x.exe`), and
/// a hard link made in one. Watched beside fanotify (see [`Inotify::moves_only`]).
const MOVES_MASK: u32 = libc::IN_MOVED_TO
    | libc::IN_CREATE
    | libc::IN_DONT_FOLLOW
    | libc::IN_EXCL_UNLINK
    | libc::IN_ONLYDIR;

/// An inotify instance and its watch descriptors.
pub(super) struct Inotify {
    fd: OwnedFd,
    scope: Scope,
    dirs: HashMap<i32, PathBuf>,
    /// Beside fanotify: only moves in and hard links (see [`MOVES_MASK`]).
    moves_only: bool,
}

impl Inotify {
    /// Watches for objects moved or linked into the folders only: fanotify sees the
    /// writes and executions, with the process.
    pub(super) fn moves_only(scope: Scope) -> std::io::Result<Self> {
        let mut ino = Self::new(scope)?;
        ino.moves_only = true;
        Ok(ino)
    }

    pub(super) fn new(scope: Scope) -> std::io::Result<Self> {
        // SAFETY: plain syscall; the result is checked.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Inotify {
            // SAFETY: raw is a fresh descriptor we own.
            fd: unsafe { OwnedFd::from_raw_fd(raw) },
            scope,
            dirs: HashMap::new(),
            moves_only: false,
        })
    }

    /// Watch every configured folder (existing files are not looked at).
    pub(super) fn add_folders(&mut self, tx: &UnboundedSender<MonitorMsg>) {
        let roots: Vec<PathBuf> = self.scope.folders.iter().map(|(_, p)| p.clone()).collect();
        for r in roots {
            self.add_tree(&r, false, tx);
        }
    }

    /// Watch `dir` and its subdirectories; with `scan`, send the files found.
    fn add_tree(&mut self, dir: &Path, scan: bool, tx: &UnboundedSender<MonitorMsg>) {
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            if d.starts_with(&self.scope.exclude) {
                continue;
            }
            let Ok(c) = std::ffi::CString::new(d.as_os_str().as_encoded_bytes()) else {
                continue;
            };
            let mask = if self.moves_only { MOVES_MASK } else { MASK };
            // SAFETY: valid descriptor and C string.
            let wd = unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), c.as_ptr(), mask) };
            if wd < 0 {
                let e = std::io::Error::last_os_error();
                let hint = if e.raw_os_error() == Some(libc::ENOSPC) {
                    "; raise fs.inotify.max_user_watches"
                } else {
                    ""
                };
                let _ = tx.send(MonitorMsg::Alert(
                    AlertCode::WatchFailed,
                    format!("cannot watch {} ({e}){hint}", d.display()),
                    self.scope.device_path(&d),
                ));
                continue;
            }
            self.dirs.insert(wd, d.clone());
            let Ok(list) = std::fs::read_dir(&d) else {
                continue;
            };
            for entry in list.flatten() {
                let Ok(ft) = entry.file_type() else { continue };
                if ft.is_dir() {
                    stack.push(entry.path());
                } else if scan && ft.is_file() && !self.moves_only {
                    if let Some(t) = self.scope.trigger(entry.path(), None, || None) {
                        let _ = tx.send(MonitorMsg::Object(t));
                    }
                }
            }
        }
    }

    /// Read events until stopped.
    pub(super) fn run(mut self, stop: OwnedFd, tx: UnboundedSender<MonitorMsg>) {
        let header = std::mem::size_of::<libc::inotify_event>();
        let mut buf = vec![0u8; 64 * 1024];
        while wait_readable(&self.fd, &stop) {
            // SAFETY: reading into a buffer we own, of the given length.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) {
                    continue;
                }
                let _ = tx.send(MonitorMsg::Alert(
                    AlertCode::WatchFailed,
                    format!("reading inotify events failed ({e}); restart the agent"),
                    None,
                ));
                return;
            }
            let n = n as usize;
            let mut off = 0;
            while off + header <= n {
                // SAFETY: header bytes are available at off; read_unaligned copes with
                // any alignment.
                let ev: libc::inotify_event =
                    unsafe { std::ptr::read_unaligned(buf.as_ptr().add(off).cast()) };
                let name_end = (off + header + ev.len as usize).min(n);
                let raw_name = &buf[off + header..name_end];
                off = name_end;
                let name_len = raw_name
                    .iter()
                    .position(|&b| b == 0)
                    .unwrap_or(raw_name.len());
                let name = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(
                    &raw_name[..name_len],
                );
                self.handle(ev, name, &tx);
            }
        }
    }

    fn handle(
        &mut self,
        ev: libc::inotify_event,
        name: &std::ffi::OsStr,
        tx: &UnboundedSender<MonitorMsg>,
    ) {
        if ev.mask & libc::IN_Q_OVERFLOW != 0 {
            let _ = tx.send(MonitorMsg::Alert(
                AlertCode::WatchFailed,
                "the inotify queue overflowed: some new objects were not seen; raise fs.inotify.max_queued_events".into(),
                None,
            ));
            return;
        }
        if ev.mask & libc::IN_IGNORED != 0 {
            self.dirs.remove(&ev.wd);
            return;
        }
        let Some(dir) = self.dirs.get(&ev.wd) else {
            return;
        };
        if name.is_empty() {
            return;
        }
        let path = dir.join(name);
        if ev.mask & libc::IN_ISDIR != 0 {
            if ev.mask & (libc::IN_CREATE | libc::IN_MOVED_TO) != 0 {
                self.add_tree(&path, true, tx);
            }
        } else if ev.mask & (libc::IN_CLOSE_WRITE | libc::IN_MOVED_TO) != 0
            || (self.moves_only && ev.mask & libc::IN_CREATE != 0 && is_hard_link(&path))
        {
            if let Some(t) = self.scope.trigger(path, None, || None) {
                let _ = tx.send(MonitorMsg::Object(t));
            }
        }
    }
}

/// A name just created for a file that already had one: a hard link, whose content no
/// write will follow (a new file's name is created empty and is looked at once written).
fn is_hard_link(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file() && m.nlink() > 1)
}
