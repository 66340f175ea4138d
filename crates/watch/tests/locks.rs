//! A fanotify event hands the watcher a descriptor of the file written, and closing any
//! descriptor of a file drops every POSIX lock the process holds on it. In `riposte up`
//! the agent shares its process with the server's SQLite database, so a write to that
//! database by anyone (a backup, an administrator's `sqlite3`) took the server's locks
//! away, and the next reader checkpointed and deleted the live write-ahead log: what the
//! server committed after that was lost on a crash. The directories of the process's
//! databases are now quiet: the kernel gives the watcher no event for their files.

mod common;

use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use riposte_watch::{Backend, BackendChoice, Watcher};

/// A write lock over the whole file, as SQLite takes its locks (`fcntl`, per process).
fn lock(file: &std::fs::File) {
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as _;
    fl.l_whence = libc::SEEK_SET as _;
    // SAFETY: a valid descriptor and a flock struct we own.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &fl) };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
}

/// Does this process still hold a POSIX lock on the file `probe` is open on? An
/// open-file-description lock conflicts with it even within the process that holds it.
/// (The probe is opened once and kept: closing it would drop the lock it looks for.)
fn still_locked(probe: &std::fs::File) -> bool {
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as _;
    fl.l_whence = libc::SEEK_SET as _;
    // SAFETY: a valid descriptor and a flock struct we own.
    let r = unsafe { libc::fcntl(probe.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
    i32::from(fl.l_type) != libc::F_UNLCK
}

/// Another process opens `path` for writing and closes it: a close-after-write event.
fn written_by_another_process(path: &Path) {
    let status = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(format!(": >> '{}'", path.display()))
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_to_a_database_of_this_process_leaves_its_locks_alone() {
    let host = Host::new();
    let mut config = host.config(Vec::new(), None);
    config.backend = BackendChoice::Fanotify;
    // On the watched folder's mount, outside the folder: one directory quiet, as the
    // server's is in `riposte up`, and one not, to show what the watcher did before.
    let (quiet, loud) = (host.path("/var/lib/db"), host.path("/var/lib/other"));
    std::fs::create_dir_all(&quiet).unwrap();
    std::fs::create_dir_all(&loud).unwrap();
    config.quiet_dirs.push(quiet.clone());
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let watcher = match Watcher::start(config, tx) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("skipped (fanotify needs root): {e}");
            return;
        }
    };
    assert_eq!(watcher.backend(), Some(Backend::Fanotify));
    let (db, other) = (quiet.join("riposte.db"), loud.join("riposte.db"));
    std::fs::write(&db, b"database").unwrap();
    std::fs::write(&other, b"database").unwrap();
    let open = |p: &Path| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(p)
            .unwrap()
    };
    let (held, probes) = ([open(&db), open(&other)], [open(&db), open(&other)]);
    held.iter().for_each(lock);
    assert!(probes.iter().all(still_locked));

    written_by_another_process(&other);
    written_by_another_process(&db);
    // The watcher has handled the loud file's event once that lock is gone; the quiet
    // file's event, raised right after, would have been handled by then too.
    let deadline = Instant::now() + Duration::from_secs(10);
    while still_locked(&probes[1]) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !still_locked(&probes[1]),
        "the watcher never closed the loud file's descriptor: the test shows nothing"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(still_locked(&probes[0]), "the database's lock was dropped");
    drop((held, probes));
    watcher.shutdown().await;
}
