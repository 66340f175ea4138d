//! The submission queue and the worker: outages and restarts, the verdict cache,
//! failover between sandbox servers.

mod common;

use std::time::Duration;

use common::*;
use riposte_watch::{AlertCode, Watcher};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_down_objects_wait_and_are_processed_after_a_watcher_restart() {
    let host = Host::new();
    let sdir = tempfile::tempdir().unwrap();
    // The sandbox's certificate exists, but the sandbox is not running yet.
    let (cert, _) = riposte_sandbox::tls::load_or_create(sdir.path(), &[]).unwrap();
    let url = dead_url().await;
    let mut config = host.config(vec![url.clone()], Some(cert));
    config.unreachable_alert_after = Duration::ZERO;

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let first = Watcher::start(config.clone(), tx).unwrap();
    let (eicar, clean) = (eicar(), harmless("restart"));
    std::fs::write(host.path("/watched/eicar.com"), &eicar).unwrap();
    std::fs::write(host.path("/watched/tool.sh"), &clean).unwrap();
    wait_for(Duration::from_secs(10), || {
        first.status().unwrap().queued_objects == 2
    })
    .await;
    let events = collect_until(&mut rx, Duration::from_secs(10), |e| {
        !alerts(e, AlertCode::SandboxUnreachable).is_empty()
    })
    .await;
    assert!(
        verdicts(&events).is_empty(),
        "no verdict while the sandbox is down"
    );
    first.shutdown().await;

    // Delete the originals: the queue holds copies, so the verdicts still come.
    std::fs::remove_file(host.path("/watched/eicar.com")).unwrap();
    std::fs::remove_file(host.path("/watched/tool.sh")).unwrap();

    // A new watcher on the same queue directory, then the sandbox comes up.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let second = Watcher::start(config, tx).unwrap();
    assert_eq!(
        second.status().unwrap().queued_objects,
        2,
        "queue survived the restart"
    );
    let addr = url.trim_start_matches("https://").to_string();
    let sb = sandbox_at(sdir.path(), &addr).await;
    let events = collect_until(&mut rx, Duration::from_secs(20), |e| verdicts(e).len() >= 2).await;
    let v = verdicts(&events);
    let bad = v
        .iter()
        .find(|v| v.device_path == "/watched/eicar.com")
        .unwrap();
    assert!(bad.malicious);
    assert_eq!(bad.sha256, hashes(&eicar).2);
    let good = v
        .iter()
        .find(|v| v.device_path == "/watched/tool.sh")
        .unwrap();
    assert!(!good.malicious);
    assert_eq!(good.sha256, hashes(&clean).2);
    wait_for(Duration::from_secs(5), || {
        second.status().unwrap().queued_objects == 0
    })
    .await;
    assert_eq!(second.status().unwrap().queued_bytes, 0);
    second.shutdown().await;
    sb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_verdict_makes_no_second_submission_even_after_restart() {
    let host = Host::new();
    let sdir = tempfile::tempdir().unwrap();
    let sb = sandbox(sdir.path()).await;
    let front = counting_front(&sb, sdir.path()).await;
    let config = host.config(vec![front.url.clone()], Some(sb.cert_pem.clone()));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let watcher = Watcher::start(config.clone(), tx).unwrap();

    let data = eicar();
    std::fs::write(host.path("/watched/one.com"), &data).unwrap();
    let e = collect_until(&mut rx, Duration::from_secs(20), |e| {
        !verdicts(e).is_empty()
    })
    .await;
    let v = verdicts(&e)[0];
    assert!(v.malicious && !v.from_cache);
    assert_eq!(front.uploads(), 1);

    // Same content under another name: answered from the cache.
    std::fs::write(host.path("/watched/two.com"), &data).unwrap();
    let e = collect_until(&mut rx, Duration::from_secs(10), |e| {
        !verdicts(e).is_empty()
    })
    .await;
    let v = verdicts(&e)[0];
    assert_eq!(v.device_path, "/watched/two.com");
    assert!(v.malicious && v.from_cache, "{v:#?}");
    assert_eq!(v.sha256, hashes(&data).2);
    assert!(
        v.report.is_some(),
        "malicious cached verdicts keep their report (IOCs)"
    );
    watcher.shutdown().await;

    // The cache is on disk: a new watcher answers from it too.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let watcher = Watcher::start(config, tx).unwrap();
    std::fs::write(host.path("/watched/three.com"), &data).unwrap();
    // The new watcher's look at what was there on start answers one.com and two.com
    // too: the verdict that counts is three.com's.
    let three = |v: &&riposte_watch::Verdict| v.device_path == "/watched/three.com";
    let e = collect_until(&mut rx, Duration::from_secs(10), |e| {
        verdicts(e).iter().any(three)
    })
    .await;
    let v = verdicts(&e).into_iter().find(three);
    assert!(v.is_some_and(|v| v.from_cache), "{e:#?}");
    assert_eq!(front.uploads(), 1, "no second submission");
    watcher.shutdown().await;
    sb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_over_to_the_second_server() {
    let host = Host::new();
    let sdir = tempfile::tempdir().unwrap();
    let sb = sandbox(sdir.path()).await;
    let front = counting_front(&sb, sdir.path()).await;
    let config = host.config(
        vec![dead_url().await, front.url.clone()],
        Some(sb.cert_pem.clone()),
    );
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let watcher = Watcher::start(config, tx).unwrap();
    std::fs::write(host.path("/watched/x.com"), eicar()).unwrap();
    let e = collect_until(&mut rx, Duration::from_secs(20), |e| {
        !verdicts(e).is_empty()
    })
    .await;
    let v = verdicts(&e)[0];
    assert!(v.malicious);
    assert_eq!(v.device_path, "/watched/x.com");
    assert_eq!(front.uploads(), 1, "submitted once, to the second server");
    assert!(alerts(&e, AlertCode::SandboxUnreachable).is_empty());
    watcher.shutdown().await;
    sb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_object_seen_twice_while_queued_is_submitted_once_and_both_get_verdicts() {
    let host = Host::new();
    let sdir = tempfile::tempdir().unwrap();
    let (cert, _) = riposte_sandbox::tls::load_or_create(sdir.path(), &[]).unwrap();
    let url = dead_url().await;
    let config = host.config(vec![url.clone()], Some(cert));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let watcher = Watcher::start(config, tx).unwrap();
    let data = harmless("twice");
    std::fs::write(host.path("/watched/a.sh"), &data).unwrap();
    std::fs::write(host.path("/watched/b.sh"), &data).unwrap();
    wait_for(Duration::from_secs(10), || {
        watcher.status().unwrap().queued_objects == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        watcher.status().unwrap().queued_bytes,
        data.len() as u64,
        "one copy"
    );
    let sb = sandbox_at(sdir.path(), url.trim_start_matches("https://")).await;
    let e = collect_until(&mut rx, Duration::from_secs(20), |e| verdicts(e).len() >= 2).await;
    let mut paths: Vec<_> = verdicts(&e).iter().map(|v| v.device_path.clone()).collect();
    paths.sort();
    assert_eq!(paths, ["/watched/a.sh", "/watched/b.sh"]);
    watcher.shutdown().await;
    sb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_content_is_neither_submitted_nor_given_a_verdict() {
    let host = Host::new();
    let sdir = tempfile::tempdir().unwrap();
    let sb = sandbox(sdir.path()).await;
    let front = counting_front(&sb, sdir.path()).await;
    let mut config = host.config(vec![front.url.clone()], Some(sb.cert_pem.clone()));
    let allowed =
        std::sync::Arc::new(riposte_watch::AllowList::open_in(&config.queue_dir).unwrap());
    config.allowed = Some(allowed.clone());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let watcher = Watcher::start(config, tx).unwrap();

    let data = eicar();
    std::fs::write(host.path("/watched/one.com"), &data).unwrap();
    let e = collect_until(&mut rx, Duration::from_secs(20), |e| {
        !verdicts(e).is_empty()
    })
    .await;
    assert!(verdicts(&e)[0].malicious);
    assert_eq!(front.uploads(), 1);

    // An administrator restores it: the running watcher sees the shared list at once.
    assert!(allowed.allow(&hashes(&data).2).unwrap());
    std::fs::write(host.path("/watched/restored.com"), &data).unwrap();
    // Seen after it, so handled after it: once this has its verdict, so would the other.
    std::fs::write(host.path("/watched/later.sh"), harmless("later")).unwrap();
    let e = collect_until(&mut rx, Duration::from_secs(20), |e| {
        verdicts(e)
            .iter()
            .any(|v| v.device_path == "/watched/later.sh")
    })
    .await;
    let paths: Vec<_> = verdicts(&e)
        .iter()
        .map(|v| v.device_path.as_str())
        .collect();
    assert_eq!(
        paths,
        ["/watched/later.sh"],
        "no verdict for the allowed content"
    );
    assert_eq!(front.uploads(), 2, "only the later object was submitted");
    watcher.shutdown().await;
    sb.shutdown().await;
}
