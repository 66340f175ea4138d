//! EICAR and a harmless script written into a watched folder go through the monitor,
//! the queue, the real built-in sandbox and back as verdicts.

mod common;

use std::time::Duration;

use common::*;
use riposte_watch::{Backend, WatchEvent, Watcher};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eicar_is_malicious_and_a_harmless_script_is_not() {
    let host = Host::new();
    let sdir = tempfile::tempdir().unwrap();
    let sb = sandbox(sdir.path()).await;
    let config = host.config_for(&sb);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let watcher = Watcher::start(config, tx).unwrap();
    let backend = watcher.backend().unwrap();
    eprintln!("backend in use: {backend}");
    // As root in a test, fanotify should be available unless the kernel forbids it.
    assert!(matches!(backend, Backend::Fanotify | Backend::Inotify));

    let eicar = eicar();
    let clean = harmless("end_to_end");
    std::fs::write(host.path("/watched/eicar.com"), &eicar).unwrap();
    std::fs::write(host.path("/watched/hello.sh"), &clean).unwrap();
    // Not an executable type: filtered out, no verdict.
    std::fs::write(host.path("/watched/notes.txt"), b"just some notes").unwrap();

    let events = collect_until(&mut rx, Duration::from_secs(20), |e| verdicts(e).len() >= 2).await;
    let mut more = drain_for(&mut rx, Duration::from_millis(500)).await;
    let mut all = events;
    all.append(&mut more);
    let v = verdicts(&all);
    assert_eq!(v.len(), 2, "exactly one verdict per object: {all:#?}");

    let bad = v
        .iter()
        .find(|v| v.device_path == "/watched/eicar.com")
        .expect("EICAR verdict");
    let (md5, sha1, sha256) = hashes(&eicar);
    assert!(bad.malicious, "{bad:#?}");
    assert_eq!(
        (bad.md5.as_str(), bad.sha1.as_str(), bad.sha256.as_str()),
        (md5.as_str(), sha1.as_str(), sha256.as_str())
    );
    assert_eq!(bad.size, eicar.len() as u64);
    assert!(
        bad.threat
            .as_deref()
            .is_some_and(|t| t.to_ascii_lowercase().contains("eicar")),
        "{:?}",
        bad.threat
    );
    assert_eq!(bad.source, "riposte-sandbox");
    assert!(bad.source_ref.is_some(), "task id recorded");
    assert!(!bad.from_cache);
    assert_eq!(bad.user_name.as_deref(), Some("root"));
    assert!(bad.report.as_ref().is_some_and(|r| r
        .iocs
        .object
        .as_ref()
        .is_some_and(|o| o.sha256 == sha256)));

    let good = v
        .iter()
        .find(|v| v.device_path == "/watched/hello.sh")
        .expect("clean verdict");
    assert!(!good.malicious, "{good:#?}");
    assert_eq!(good.threat, None);
    assert_eq!(good.sha256, hashes(&clean).2);
    assert!(!all
        .iter()
        .any(|e| matches!(e, WatchEvent::Verdict(v) if v.device_path.ends_with("notes.txt"))));

    assert_eq!(watcher.status().unwrap().queued_objects, 0, "queue drained");
    watcher.shutdown().await;
    sb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_submission_skips_the_type_filter() {
    let host = Host::new();
    let sdir = tempfile::tempdir().unwrap();
    let sb = sandbox(sdir.path()).await;
    let mut config = host.config_for(&sb);
    config.folders.clear(); // nothing watched: only the manual submission counts
    std::fs::create_dir_all(host.path("/srv")).unwrap();
    std::fs::write(host.path("/srv/eicar.txt"), eicar()).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let watcher = Watcher::start(config, tx).unwrap();
    watcher.submit_path("/srv/eicar.txt").unwrap();
    let events = collect_until(&mut rx, Duration::from_secs(20), |e| {
        !verdicts(e).is_empty()
    })
    .await;
    let v = verdicts(&events)[0];
    assert_eq!(v.device_path, "/srv/eicar.txt");
    assert!(v.malicious);
    assert!(watcher.submit_path("relative/path").is_err());
    watcher.shutdown().await;
    sb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconfigure_moves_the_watch_and_keeps_the_queue() {
    let host = Host::new();
    let sdir = tempfile::tempdir().unwrap();
    let (cert, _) = riposte_sandbox::tls::load_or_create(sdir.path(), &[]).unwrap();
    let url = dead_url().await;
    let config = host.config(vec![url.clone()], Some(cert));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut watcher = Watcher::start(config.clone(), tx).unwrap();
    std::fs::write(host.path("/watched/queued.sh"), harmless("queued")).unwrap();
    wait_for(Duration::from_secs(10), || {
        watcher.status().unwrap().queued_objects == 1
    })
    .await;

    // New settings: another folder, and the sandbox is now up.
    std::fs::create_dir_all(host.path("/other")).unwrap();
    let sb = sandbox_at(sdir.path(), url.trim_start_matches("https://")).await;
    let mut next = config;
    next.folders = vec!["/other".into()];
    watcher.reconfigure(next).await.unwrap();
    std::fs::write(host.path("/other/new.sh"), harmless("other")).unwrap();
    std::fs::write(host.path("/watched/ignored.sh"), harmless("ignored")).unwrap();
    let e = collect_until(&mut rx, Duration::from_secs(20), |e| verdicts(e).len() >= 2).await;
    let mut paths: Vec<_> = verdicts(&e).iter().map(|v| v.device_path.clone()).collect();
    paths.sort();
    assert_eq!(paths, ["/other/new.sh", "/watched/queued.sh"]);
    let rest = drain_for(&mut rx, Duration::from_millis(300)).await;
    assert!(
        verdicts(&rest).is_empty(),
        "the old folder is no longer watched: {rest:#?}"
    );
    watcher.shutdown().await;
    sb.shutdown().await;
}

/// A malicious object whose name is not UTF-8, seen in a watched folder (by either back
/// end) or submitted by hand as `\xHH` text, comes back as a verdict whose device path
/// names it with `\xHH` and decodes to the file itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_is_not_utf8_is_seen_and_named_losslessly() {
    use std::os::unix::ffi::OsStrExt;
    let odd = std::ffi::OsStr::from_bytes(b"eicar\xff\xfe.com");
    for backend in [
        riposte_watch::BackendChoice::Auto,
        riposte_watch::BackendChoice::Inotify,
    ] {
        let host = Host::new();
        let sdir = tempfile::tempdir().unwrap();
        let sb = sandbox(sdir.path()).await;
        let mut config = host.config_for(&sb);
        config.backend = backend;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let watcher = Watcher::start(config.clone(), tx).unwrap();
        let original = host.path("/watched").join(odd);
        std::fs::write(&original, eicar()).unwrap();
        let events = collect_until(&mut rx, Duration::from_secs(20), |e| {
            !verdicts(e).is_empty()
        })
        .await;
        let v = verdicts(&events);
        assert_eq!(v.len(), 1, "{backend:?}: {events:#?}");
        assert!(v[0].malicious, "{backend:?}: {:#?}", v[0]);
        assert_eq!(
            v[0].device_path, "/watched/eicar\\xff\\xfe.com",
            "{backend:?}"
        );
        assert_eq!(config.host_path(&v[0].device_path).unwrap(), original);

        // By hand, in the same text: the same object, the same name.
        std::fs::create_dir_all(host.path("/srv")).unwrap();
        std::fs::write(host.path("/srv").join(odd), eicar()).unwrap();
        watcher.submit_path("/srv/eicar\\xff\\xfe.com").unwrap();
        let events = collect_until(&mut rx, Duration::from_secs(20), |e| {
            !verdicts(e).is_empty()
        })
        .await;
        let v = verdicts(&events);
        assert_eq!(v.len(), 1, "{backend:?}: {events:#?}");
        assert_eq!(v[0].device_path, "/srv/eicar\\xff\\xfe.com", "{backend:?}");
        assert!(v[0].malicious);
        watcher.shutdown().await;
        sb.shutdown().await;
    }
}

/// Objects written while no watcher ran (the agent stopped, or crashed before it had
/// queued them) are looked at when it starts: nothing in a watched folder stays
/// unjudged because it arrived at the wrong time. The type filter still applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_already_in_the_folders_are_looked_at_on_start() {
    let host = Host::new();
    let sdir = tempfile::tempdir().unwrap();
    let sb = sandbox(sdir.path()).await;
    std::fs::create_dir_all(host.path("/watched/deeper")).unwrap();
    std::fs::write(host.path("/watched/deeper/early.com"), eicar()).unwrap();
    std::fs::write(host.path("/watched/notes.txt"), b"just some notes").unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let watcher = Watcher::start(host.config_for(&sb), tx).unwrap();
    let events = collect_until(&mut rx, Duration::from_secs(20), |e| {
        !verdicts(e).is_empty()
    })
    .await;
    let mut all = events;
    all.append(&mut drain_for(&mut rx, Duration::from_millis(500)).await);
    let v = verdicts(&all);
    assert_eq!(v.len(), 1, "{all:#?}");
    assert_eq!(v[0].device_path, "/watched/deeper/early.com");
    assert!(v[0].malicious, "{:#?}", v[0]);
    watcher.shutdown().await;
    sb.shutdown().await;
}
