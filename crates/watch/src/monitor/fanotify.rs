//! fanotify back end: mount marks for close-after-write and exec.
//!
//! A mount mark sees every file on the mount, so events are filtered to the watched
//! folders by the path of the descriptor the kernel hands us (`/proc/self/fd/N`). The
//! descriptor itself is passed on and read, so a rename after the event does not change
//! what is hashed; it is closed by the processing task.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

use tokio::sync::mpsc::UnboundedSender;

use super::{wait_readable, MonitorMsg, Scope};
use crate::event::AlertCode;

/// Create a fanotify group and mark the mount of every watched folder.
pub(super) fn init(scope: &Scope) -> std::io::Result<OwnedFd> {
    // SAFETY: plain syscall; the result is checked.
    let raw = unsafe {
        libc::fanotify_init(
            libc::FAN_CLASS_NOTIF | libc::FAN_CLOEXEC | libc::FAN_NONBLOCK,
            (libc::O_RDONLY | libc::O_LARGEFILE | libc::O_CLOEXEC) as libc::c_uint,
        )
    };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: raw is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    for (_, folder) in &scope.folders {
        let c = std::ffi::CString::new(folder.as_os_str().as_encoded_bytes())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        let mark = |mask: u64| {
            // SAFETY: fd and the C string are valid for the call.
            unsafe {
                libc::fanotify_mark(
                    fd.as_raw_fd(),
                    libc::FAN_MARK_ADD | libc::FAN_MARK_MOUNT,
                    mask,
                    libc::AT_FDCWD,
                    c.as_ptr(),
                )
            }
        };
        if mark(libc::FAN_CLOSE_WRITE | libc::FAN_OPEN_EXEC) != 0 {
            // Kernels before 5.0 have no FAN_OPEN_EXEC: keep close-after-write.
            if mark(libc::FAN_CLOSE_WRITE) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            tracing::warn!("fanotify without exec events on this kernel");
        }
    }
    for dir in &scope.quiet {
        quiet(&fd, dir);
    }
    Ok(fd)
}

/// `FAN_MARK_IGNORE` (Linux 6.0): an ignore mask that also honours `FAN_EVENT_ON_CHILD`.
const FAN_MARK_IGNORE: libc::c_uint = 0x0000_0400;

/// Tells the kernel to raise no event for the files directly in `dir`, so that the
/// watcher never receives (and closes) a descriptor of one of this process's databases:
/// closing it would drop the process's POSIX locks on it, and another process could
/// then check the database point the live write-ahead log away (see
/// [`crate::WatchConfig::quiet_dirs`]). Before Linux 6.0 a directory cannot carry such
/// a mask for its children: the files in it now are marked one by one.
fn quiet(fd: &OwnedFd, dir: &std::path::Path) {
    let mark = |path: &std::path::Path, flags: libc::c_uint, mask: u64| {
        let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
            return false;
        };
        // SAFETY: fd and the C string are valid for the call.
        unsafe { libc::fanotify_mark(fd.as_raw_fd(), flags, mask, libc::AT_FDCWD, c.as_ptr()) == 0 }
    };
    let events = libc::FAN_CLOSE_WRITE | libc::FAN_OPEN_EXEC;
    let ignore = libc::FAN_MARK_ADD | libc::FAN_MARK_IGNORED_SURV_MODIFY;
    if mark(
        dir,
        ignore | FAN_MARK_IGNORE,
        events | libc::FAN_EVENT_ON_CHILD,
    ) || mark(
        dir,
        ignore | FAN_MARK_IGNORE,
        libc::FAN_CLOSE_WRITE | libc::FAN_EVENT_ON_CHILD,
    ) {
        return;
    }
    tracing::warn!(
        dir = %dir.display(),
        "this kernel cannot ignore a directory's files (Linux 6.0 can): its files now are ignored one by one"
    );
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            let path = entry.path();
            let _ = mark(&path, ignore | libc::FAN_MARK_IGNORED_MASK, events)
                || mark(
                    &path,
                    ignore | libc::FAN_MARK_IGNORED_MASK,
                    libc::FAN_CLOSE_WRITE,
                );
        }
    }
}

/// Read events until stopped.
pub(super) fn run(fd: OwnedFd, scope: Scope, stop: OwnedFd, tx: UnboundedSender<MonitorMsg>) {
    let meta_len = std::mem::size_of::<libc::fanotify_event_metadata>();
    let mut buf = vec![0u8; 64 * 1024];
    while wait_readable(&fd, &stop) {
        // SAFETY: reading into a buffer we own, of the given length.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
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
                format!("reading fanotify events failed ({e}); restart the agent"),
                None,
            ));
            return;
        }
        let n = n as usize;
        let mut off = 0;
        while off + meta_len <= n {
            // SAFETY: at least meta_len bytes are available at off; read_unaligned copes
            // with any alignment.
            let m: libc::fanotify_event_metadata =
                unsafe { std::ptr::read_unaligned(buf.as_ptr().add(off).cast()) };
            let len = m.event_len as usize;
            if len < meta_len || off + len > n {
                break;
            }
            off += len;
            if m.mask & libc::FAN_Q_OVERFLOW != 0 {
                let _ = tx.send(MonitorMsg::Alert(
                    AlertCode::WatchFailed,
                    "the fanotify queue overflowed: some new objects were not seen; the system is writing faster than the agent hashes".into(),
                    None,
                ));
            }
            if m.fd < 0 {
                continue;
            }
            // SAFETY: the kernel opened this descriptor for us; we own it now.
            let obj = unsafe { OwnedFd::from_raw_fd(m.fd) };
            let Ok(link) = std::fs::read_link(format!("/proc/self/fd/{}", obj.as_raw_fd())) else {
                continue;
            };
            // A file deleted since the event still has its content behind the descriptor.
            let bytes = link.as_os_str().as_encoded_bytes();
            let path = match bytes.strip_suffix(b" (deleted)") {
                Some(b) => {
                    PathBuf::from(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b))
                }
                None => link,
            };
            // Looked up now, while the writer most likely still runs (or is a zombie
            // not yet reaped): by the time the object is read, its pid may be gone or
            // reused by another account's process.
            let writer_uid = || {
                u32::try_from(m.pid)
                    .ok()
                    .and_then(crate::object::process_uid)
            };
            if let Some(t) = scope.trigger(path, Some(obj), writer_uid) {
                if tx.send(MonitorMsg::Object(t)).is_err() {
                    return;
                }
            }
        }
    }
}
