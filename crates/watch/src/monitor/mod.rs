//! Seeing new and executed objects: fanotify where the kernel allows it, else inotify.
//!
//! Why two back ends: fanotify (close-after-write and exec events on whole mounts, with
//! the writing or running process's pid and an open descriptor of the object) is the
//! right tool but needs CAP_SYS_ADMIN; inotify works for any user but only sees writes
//! and renames into folders it watches, one watch per directory, and no exec. Either
//! runs on one thread blocked in `poll(2)` together with a stop pipe, and hands objects
//! to the watcher's processing task; beside fanotify, which has no event for a rename
//! or a link, a second thread watches the folders with inotify for objects moved or
//! hard-linked in only; events outside the configured folders (fanotify marks
//! whole mounts) and inside the watcher's own queue are dropped here.

mod fanotify;
mod inotify;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use tokio::sync::mpsc::UnboundedSender;

use crate::config::{BackendChoice, WatchConfig};
use crate::event::AlertCode;
use crate::object::Trigger;
use crate::WatchError;

/// The kernel interface in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// fanotify mount marks: close-after-write and exec, with the process id.
    Fanotify,
    /// inotify watches on the configured folders: close-after-write and moves in.
    Inotify,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Fanotify => "fanotify",
            Backend::Inotify => "inotify",
        })
    }
}

/// What a monitor thread sends to the processing task.
#[derive(Debug)]
pub(crate) enum MonitorMsg {
    /// An object to look at.
    Object(Trigger),
    /// A problem with watching itself.
    Alert(AlertCode, String, Option<String>),
}

/// Directories of this process's databases named by [`keep_quiet`].
static QUIET_DIRS: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Adds `dir` to the directories whose files no watcher of this process gets events for
/// (see [`crate::WatchConfig::quiet_dirs`]): for a process that holds databases the
/// agent's settings do not know of, such as `riposte up`'s server.
pub fn keep_quiet(dir: PathBuf) {
    let mut dirs = QUIET_DIRS.lock().unwrap_or_else(|e| e.into_inner());
    if !dirs.contains(&dir) {
        dirs.push(dir);
    }
}

/// The folders in scope, as host paths, and how to map them back to device paths.
#[derive(Debug, Clone)]
pub(crate) struct Scope {
    host_root: PathBuf,
    /// (device path, host path) of each existing folder.
    folders: Vec<(String, PathBuf)>,
    exclude: PathBuf,
    /// Directories whose files raise no event (see [`crate::WatchConfig::quiet_dirs`]).
    quiet: Vec<PathBuf>,
}

impl Scope {
    /// Host path → device path (in its `path_text` form, so that the object can be found
    /// again whatever bytes its name has), if inside a watched folder and outside the queue.
    pub(crate) fn device_path(&self, host: &Path) -> Option<String> {
        if host.starts_with(&self.exclude) {
            return None;
        }
        if !self.folders.iter().any(|(_, f)| host.starts_with(f)) {
            return None;
        }
        let rel = host.strip_prefix(&self.host_root).ok()?;
        Some(format!("/{}", riposte_model::path_text::encode(rel)))
    }

    /// The object at `host`, if it is in scope; `writer_uid` is asked only then (it reads
    /// `/proc`, and fanotify reports every write and exec of the whole mount).
    fn trigger(
        &self,
        host: PathBuf,
        fd: Option<OwnedFd>,
        writer_uid: impl FnOnce() -> Option<u32>,
    ) -> Option<Trigger> {
        Some(Trigger {
            device_path: self.device_path(&host)?,
            host_path: host,
            fd,
            writer_uid: writer_uid(),
            manual: false,
        })
    }
}

fn change_time(m: &std::fs::Metadata) -> std::time::Duration {
    use std::os::unix::fs::MetadataExt;
    std::time::Duration::new(
        u64::try_from(m.ctime()).unwrap_or(0),
        u32::try_from(m.ctime_nsec()).unwrap_or(0),
    )
}

/// The kernel's file clock now: the change time of a file written in `dir` (file times
/// come from a coarser clock than the system time, and may read earlier than it).
fn file_clock_now(dir: &Path) -> std::time::Duration {
    use std::os::unix::fs::OpenOptionsExt;
    let stamp = dir.join(".watch-started");
    // 0600 whatever the umask: nobody else has reason to write it.
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&stamp)
        .and_then(|f| f.metadata())
        .map(|m| change_time(&m))
        .unwrap_or_else(|_| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
        })
}

/// Most objects looked at when the watch starts: a folder holding more is said so in
/// the log, and the rest are looked at when they are written again.
const INITIAL_SCAN_LIMIT: usize = 100_000;

/// Sends every regular file already in the watched folders to be looked at, as the
/// monitor sends a new one (the type filter applies; the verdict cache and the queue
/// keep a known object from being sent to the sandbox again). Links are not followed;
/// the queue's directory and the quiet directories are left alone: opening and closing
/// a file of this process's databases would drop its locks on them.
///
/// Only objects last changed before `watched_since` (a file's change time, so that it
/// reads the kernel's clock as theirs do) are sent: one written, renamed or linked in
/// since then raises its own event, and sending it twice would judge (and answer) it
/// twice.
fn look_at_what_is_there(
    scope: &Scope,
    tx: &UnboundedSender<MonitorMsg>,
    watched_since: std::time::Duration,
) {
    let changed_before = |m: &std::fs::Metadata| change_time(m) < watched_since;
    let skip =
        |p: &Path| p.starts_with(&scope.exclude) || scope.quiet.iter().any(|q| p.starts_with(q));
    let mut pending: Vec<PathBuf> = scope.folders.iter().map(|(_, f)| f.clone()).collect();
    let mut sent = 0usize;
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if skip(&path) {
                continue;
            }
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_file() {
                if !entry.metadata().is_ok_and(|m| changed_before(&m)) {
                    continue;
                }
                if sent == INITIAL_SCAN_LIMIT {
                    tracing::warn!(
                        "more than {INITIAL_SCAN_LIMIT} objects already in the watched folders: \
                         the others are looked at when they are written again"
                    );
                    return;
                }
                let Some(trigger) = scope.trigger(path, None, || None) else {
                    continue;
                };
                if tx.send(MonitorMsg::Object(trigger)).is_err() {
                    return; // the watcher stopped
                }
                sent += 1;
            }
        }
    }
    if sent > 0 {
        tracing::info!("{sent} objects already in the watched folders sent to be looked at");
    }
}

/// A running monitor thread.
#[derive(Debug)]
pub(crate) struct Monitor {
    /// Back end in use.
    pub backend: Backend,
    stop: Option<OwnedFd>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Beside fanotify, the inotify watches that see objects moved or linked in.
    moves: Option<(OwnedFd, std::thread::JoinHandle<()>)>,
}

impl Monitor {
    /// Start watching `config.folders` (config.host_root must be canonical).
    pub(crate) fn start(
        config: &WatchConfig,
        tx: UnboundedSender<MonitorMsg>,
    ) -> Result<Monitor, WatchError> {
        let mut folders = Vec::new();
        for f in &config.folders {
            // `validate` has refused such folders already; never watch one anyway.
            let Ok(host) = config.host_path(f) else {
                continue;
            };
            match std::fs::canonicalize(&host) {
                Ok(p) if p.is_dir() && p.starts_with(&config.host_root) => {
                    folders.push((f.clone(), p))
                }
                Ok(_) => {
                    let _ = tx.send(MonitorMsg::Alert(
                        AlertCode::WatchFailed,
                        format!("watched folder {f} is not a directory inside the device's file system; fix the Sandbox integration settings"),
                        Some(f.clone()),
                    ));
                }
                Err(e) => {
                    let _ = tx.send(MonitorMsg::Alert(
                        AlertCode::WatchFailed,
                        format!("watched folder {f} cannot be watched ({e}); create it or fix the Sandbox integration settings"),
                        Some(f.clone()),
                    ));
                }
            }
        }
        let scope = Scope {
            host_root: config.host_root.clone(),
            folders,
            exclude: std::fs::canonicalize(&config.queue_dir).unwrap_or(config.queue_dir.clone()),
            quiet: config
                .quiet_dirs
                .iter()
                .chain(QUIET_DIRS.lock().unwrap_or_else(|e| e.into_inner()).iter())
                .filter_map(|d| std::fs::canonicalize(d).ok())
                .collect(),
        };
        let initial_scope = scope.clone();
        let initial_tx = tx.clone();
        let (fd, backend) = match config.backend {
            BackendChoice::Inotify => (None, Backend::Inotify),
            BackendChoice::Fanotify => (
                Some(fanotify::init(&scope).map_err(|e| {
                    WatchError::Monitor(format!(
                        "fanotify unavailable ({e}); run the agent as root with CAP_SYS_ADMIN or choose inotify"
                    ))
                })?),
                Backend::Fanotify,
            ),
            BackendChoice::Auto => match fanotify::init(&scope) {
                Ok(fd) => (Some(fd), Backend::Fanotify),
                Err(e) => {
                    tracing::info!("fanotify unavailable ({e}); watching with inotify");
                    (None, Backend::Inotify)
                }
            },
        };
        let (stop_read, stop_write) = pipe()?;
        // fanotify has no event for a rename or a link into a folder (not without its
        // file-handle mode, Linux 5.9, and no descriptor then): inotify watches the
        // folders for those beside it.
        let moves = match fd {
            Some(_) => Self::start_moves(scope.clone(), &tx),
            None => None,
        };
        let thread = match fd {
            Some(fd) => std::thread::Builder::new()
                .name("riposte-fanotify".into())
                .spawn(move || fanotify::run(fd, scope, stop_read, tx)),
            None => {
                let mut ino = inotify::Inotify::new(scope)
                    .map_err(|e| WatchError::Monitor(format!("inotify unavailable: {e}")))?;
                ino.add_folders(&tx);
                std::thread::Builder::new()
                    .name("riposte-inotify".into())
                    .spawn(move || ino.run(stop_read, tx))
            }
        }
        .map_err(|e| WatchError::Monitor(format!("cannot start the monitor thread: {e}")))?;
        tracing::info!(%backend, "watching for new objects");
        // What is in the folders already was written while nobody watched (the agent
        // stopped, crashed with objects not yet queued, or the folder came later): it
        // is looked at as a new object would be, once the watch is in place so that
        // nothing falls between the two.
        let initial = initial_scope;
        let watched_since = file_clock_now(&config.queue_dir);
        if let Err(e) = std::thread::Builder::new()
            .name("riposte-watch-scan".into())
            .spawn(move || look_at_what_is_there(&initial, &initial_tx, watched_since))
        {
            tracing::warn!("cannot look at the objects already in the watched folders: {e}");
        }
        Ok(Monitor {
            backend,
            stop: Some(stop_write),
            thread: Some(thread),
            moves,
        })
    }

    /// The inotify watches for moves and links in, on a thread of their own; `None`
    /// (said in an alert) where inotify cannot be had.
    fn start_moves(
        scope: Scope,
        tx: &UnboundedSender<MonitorMsg>,
    ) -> Option<(OwnedFd, std::thread::JoinHandle<()>)> {
        let started = (|| {
            let mut ino = inotify::Inotify::moves_only(scope).map_err(|e| e.to_string())?;
            ino.add_folders(tx);
            let (stop_read, stop_write) = pipe().map_err(|e| e.to_string())?;
            let tx = tx.clone();
            let thread = std::thread::Builder::new()
                .name("riposte-moves".into())
                .spawn(move || ino.run(stop_read, tx))
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((stop_write, thread))
        })();
        match started {
            Ok(moves) => Some(moves),
            Err(e) => {
                let _ = tx.send(MonitorMsg::Alert(
                    AlertCode::WatchFailed,
                    format!("objects moved or linked into the watched folders are not seen: inotify unavailable ({e})"),
                    None,
                ));
                None
            }
        }
    }

    /// Stop the thread and wait for it.
    pub(crate) fn stop(&mut self) {
        if let Some(w) = self.stop.take() {
            // SAFETY: writing one byte from a valid buffer to a pipe we own.
            unsafe { libc::write(w.as_raw_fd(), b"x".as_ptr().cast(), 1) };
            drop(w);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some((w, t)) = self.moves.take() {
            // SAFETY: writing one byte from a valid buffer to a pipe we own.
            unsafe { libc::write(w.as_raw_fd(), b"x".as_ptr().cast(), 1) };
            drop(w);
            let _ = t.join();
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop();
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), WatchError> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills two descriptors on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(WatchError::Monitor(format!(
            "cannot create a pipe: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: both descriptors are fresh and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Block until `fd` is readable (`true`) or the stop pipe is (`false`).
pub(crate) fn wait_readable(fd: &OwnedFd, stop: &OwnedFd) -> bool {
    loop {
        let mut fds = [
            libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: stop.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: fds is a valid array of two pollfd.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return false;
        }
        if fds[1].revents != 0 {
            return false;
        }
        if fds[0].revents & (libc::POLLERR | libc::POLLNVAL) != 0 {
            return false;
        }
        if fds[0].revents & libc::POLLIN != 0 {
            return true;
        }
    }
}
