//! The account recorded with a verdict: the file owner (inotify, or a writer that has
//! exited), or the writing process's account (fanotify, while the writer runs).

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::*;
use riposte_watch::{Backend, BackendChoice, WatchEvent, Watcher};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_owner_is_recorded_and_new_subfolders_are_watched() {
    let host = Host::new();
    let sdir = tempfile::tempdir().unwrap();
    let sb = sandbox(sdir.path()).await;
    let mut config = host.config_for(&sb);
    config.backend = BackendChoice::Inotify;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let watcher = Watcher::start(config, tx).unwrap();
    assert_eq!(watcher.backend(), Some(Backend::Inotify));

    // Owned by alice (uid 4242 in the device's passwd) before the close that triggers.
    let data = eicar();
    {
        let mut f = std::fs::File::create(host.path("/watched/alice.com")).unwrap();
        std::os::unix::fs::fchown(&f, Some(4242), Some(4242)).unwrap();
        f.write_all(&data).unwrap();
    }
    // A subfolder created after the start is watched too; a uid without a passwd entry
    // is kept as a uid with no name.
    std::fs::create_dir_all(host.path("/watched/new/deeper")).unwrap();
    {
        let mut f = std::fs::File::create(host.path("/watched/new/deeper/x.sh")).unwrap();
        std::os::unix::fs::fchown(&f, Some(5555), None).unwrap();
        f.write_all(&harmless("deeper")).unwrap();
    }
    let e = collect_until(&mut rx, Duration::from_secs(20), |e| verdicts(e).len() >= 2).await;
    let v = verdicts(&e);
    let a = v
        .iter()
        .find(|v| v.device_path == "/watched/alice.com")
        .unwrap();
    assert_eq!(
        (a.user_name.as_deref(), a.user_uid),
        (Some("alice"), Some(4242))
    );
    assert!(a.malicious);
    let x = v
        .iter()
        .find(|v| v.device_path == "/watched/new/deeper/x.sh")
        .unwrap();
    assert_eq!((x.user_name.as_deref(), x.user_uid), (None, Some(5555)));
    watcher.shutdown().await;
    sb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_fanotify_the_writing_process_account_is_recorded() {
    let host = Host::new();
    let sdir = tempfile::tempdir().unwrap();
    let sb = sandbox(sdir.path()).await;
    let mut config = host.config_for(&sb);
    config.backend = BackendChoice::Fanotify;
    // bob may traverse the host root and write the file, which alice owns.
    std::fs::set_permissions(host.root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        host.path("/watched"),
        std::fs::Permissions::from_mode(0o777),
    )
    .unwrap();
    let target = host.path("/watched/by-bob.sh");
    let src = host.state.path().join("src.sh");
    std::fs::write(&src, harmless("bob")).unwrap();
    std::fs::set_permissions(host.state.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let watcher = match Watcher::start(config, tx) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("skipped: {e}");
            return;
        }
    };
    // Created only now, so that the look at what was there on start cannot take it up
    // (and read bob's content under the owner's name), and created read-only, so that
    // root's own close raises no close-after-write event.
    {
        let c_target = std::ffi::CString::new(target.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path; the descriptor is closed right below.
        let fd = unsafe {
            libc::open(
                c_target.as_ptr(),
                libc::O_CREAT | libc::O_EXCL | libc::O_RDONLY | libc::O_CLOEXEC,
                0o666 as libc::c_uint,
            )
        };
        assert!(fd >= 0, "{}", std::io::Error::last_os_error());
        // SAFETY: just opened, owned by nobody else.
        let file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        std::os::unix::fs::fchown(&file, Some(4242), Some(4242)).unwrap();
        file.set_permissions(std::fs::Permissions::from_mode(0o666))
            .unwrap();
    }
    // bob writes, then stays alive a while so his process can be looked up. The shell
    // itself holds the file open (descriptor 3) while `cat` fills it, so the close that
    // raises the event is the shell's, not that of a `cat` that may already be gone.
    // The shell then becomes the `sleep` (`exec`), so that killing it below leaves no
    // grandchild holding the test's output open past its end.
    let mut child = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(format!(
            "exec 3>'{}'; cat '{}' >&3; exec 3>&-; exec sleep 3",
            target.display(),
            src.display()
        ))
        .uid(4343)
        .spawn()
        .unwrap();
    let e = collect_until(&mut rx, Duration::from_secs(20), |e| {
        !verdicts(e).is_empty()
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let v = verdicts(&e)[0];
    assert_eq!(v.device_path, "/watched/by-bob.sh");
    assert_eq!(
        (v.user_name.as_deref(), v.user_uid),
        (Some("bob"), Some(4343)),
        "writer, not owner"
    );
    watcher.shutdown().await;
    sb.shutdown().await;
}

use std::os::unix::process::CommandExt;

/// fanotify sees writes and executions, not renames or links: an object written
/// elsewhere and then moved, renamed or hard-linked into a watched folder (a download
/// written as `.crdownload`, then renamed) is seen all the same, through inotify
/// watches beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_fanotify_objects_moved_or_linked_in_are_seen() {
    let host = Host::new();
    let sdir = tempfile::tempdir().unwrap();
    let sb = sandbox(sdir.path()).await;
    let mut config = host.config_for(&sb);
    config.backend = BackendChoice::Fanotify;
    // Written before the watcher starts: no write event will ever show them.
    std::fs::create_dir_all(host.path("/outside")).unwrap();
    std::fs::write(host.path("/outside/moved.sh"), harmless("moved")).unwrap();
    std::fs::write(host.path("/outside/linked.sh"), harmless("linked")).unwrap();
    std::fs::write(host.path("/watched/dl.crdownload"), harmless("renamed")).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let watcher = match Watcher::start(config, tx) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("skipped (fanotify needs root): {e}");
            return;
        }
    };
    assert_eq!(watcher.backend(), Some(Backend::Fanotify));
    std::fs::rename(
        host.path("/outside/moved.sh"),
        host.path("/watched/moved.sh"),
    )
    .unwrap();
    std::fs::hard_link(
        host.path("/outside/linked.sh"),
        host.path("/watched/linked.sh"),
    )
    .unwrap();
    std::fs::rename(
        host.path("/watched/dl.crdownload"),
        host.path("/watched/dl.sh"),
    )
    .unwrap();
    let names = |e: &[WatchEvent]| -> Vec<String> {
        verdicts(e)
            .iter()
            .map(|v| v.device_path.clone())
            // Already in the folder at the start, the download may be looked at as it
            // was then too: what is under test is the rename's own event.
            .filter(|p| p != "/watched/dl.crdownload")
            .collect()
    };
    let e = collect_until(&mut rx, Duration::from_secs(20), |e| names(e).len() >= 3).await;
    let seen = names(&e);
    let mut seen: Vec<&str> = seen.iter().map(String::as_str).collect();
    seen.sort();
    assert_eq!(
        seen,
        ["/watched/dl.sh", "/watched/linked.sh", "/watched/moved.sh"],
        "{e:#?}"
    );
    watcher.shutdown().await;
    sb.shutdown().await;
}
