//! Objects that cannot be submitted: too large, vanished, no room in the queue. Each
//! gives an alert naming the right path, and nothing else is lost or mis-attributed.

mod common;

use std::time::Duration;

use common::*;
use riposte_watch::{AlertCode, WatchEvent, Watcher};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_over_the_size_limit_is_reported_and_not_submitted() {
    let host = Host::new();
    let sdir = tempfile::tempdir().unwrap();
    let sb = sandbox(sdir.path()).await;
    let front = counting_front(&sb, sdir.path()).await;
    let mut config = host.config(vec![front.url.clone()], Some(sb.cert_pem.clone()));
    config.max_object_size = 1024;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let watcher = Watcher::start(config, tx).unwrap();
    let mut big = b"#!/bin/sh\n".to_vec();
    big.resize(4096, b'#');
    std::fs::write(host.path("/watched/big.sh"), &big).unwrap();
    std::fs::write(host.path("/watched/small.sh"), harmless("small")).unwrap();
    let e = collect_until(&mut rx, Duration::from_secs(20), |e| {
        !verdicts(e).is_empty() && !alerts(e, AlertCode::ObjectTooLarge).is_empty()
    })
    .await;
    let too_large = alerts(&e, AlertCode::ObjectTooLarge);
    assert_eq!(too_large.len(), 1);
    assert_eq!(too_large[0].1, Some("/watched/big.sh"));
    assert!(
        too_large[0].0.contains("4096 bytes") && too_large[0].0.contains("1024-byte limit"),
        "{}",
        too_large[0].0
    );
    let v = verdicts(&e);
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].device_path, "/watched/small.sh");
    assert_eq!(front.uploads(), 1, "the large object was never uploaded");
    watcher.shutdown().await;
    sb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_that_vanished_before_hashing_is_reported() {
    let host = Host::new();
    let sdir = tempfile::tempdir().unwrap();
    let sb = sandbox(sdir.path()).await;
    let config = host.config_for(&sb);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let watcher = Watcher::start(config, tx).unwrap();
    watcher.submit_path("/watched/gone.sh").unwrap();
    let e = collect_until(&mut rx, Duration::from_secs(10), |e| {
        !alerts(e, AlertCode::PathVanished).is_empty()
    })
    .await;
    let a = alerts(&e, AlertCode::PathVanished);
    assert_eq!(a[0].1, Some("/watched/gone.sh"));
    assert!(
        a[0].0.contains("/watched/gone.sh") && a[0].0.contains("vanished"),
        "{}",
        a[0].0
    );
    let rest = drain_for(&mut rx, Duration::from_millis(300)).await;
    assert!(
        verdicts(&rest).is_empty() && verdicts(&e).is_empty(),
        "no verdict for a vanished path"
    );
    assert_eq!(watcher.status().unwrap().queued_objects, 0);
    watcher.shutdown().await;
    sb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_raises_an_alert_and_keeps_what_it_holds() {
    let host = Host::new();
    let sdir = tempfile::tempdir().unwrap();
    let (cert, _) = riposte_sandbox::tls::load_or_create(sdir.path(), &[]).unwrap();
    let url = dead_url().await;
    let first = harmless("first object, long enough to fill");
    let second = harmless("second object, long enough too");
    let mut config = host.config(vec![url.clone()], Some(cert));
    config.max_queue_bytes = first.len() as u64 + 10;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let watcher = Watcher::start(config, tx).unwrap();
    std::fs::write(host.path("/watched/first.sh"), &first).unwrap();
    wait_for(Duration::from_secs(10), || {
        watcher.status().unwrap().queued_objects == 1
    })
    .await;
    std::fs::write(host.path("/watched/second.sh"), &second).unwrap();
    let e = collect_until(&mut rx, Duration::from_secs(10), |e| {
        !alerts(e, AlertCode::QueueFull).is_empty()
    })
    .await;
    let full = alerts(&e, AlertCode::QueueFull);
    assert_eq!(full[0].1, Some("/watched/second.sh"));
    assert!(
        full[0].0.contains(&hashes(&second).2),
        "the alert names the object: {}",
        full[0].0
    );
    assert_eq!(watcher.status().unwrap().queued_objects, 1);

    // The sandbox returns: the queued object gets its verdict, attributed to its path.
    let sb = sandbox_at(sdir.path(), url.trim_start_matches("https://")).await;
    let e = collect_until(&mut rx, Duration::from_secs(20), |e| {
        !verdicts(e).is_empty()
    })
    .await;
    let v = verdicts(&e);
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].device_path, "/watched/first.sh");
    assert_eq!(v[0].sha256, hashes(&first).2);
    let rest = drain_for(&mut rx, Duration::from_millis(300)).await;
    assert!(!rest
        .iter()
        .any(|e| matches!(e, WatchEvent::Verdict(v) if v.device_path == "/watched/second.sh")));
    watcher.shutdown().await;
    sb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_are_refused_with_a_clear_error() {
    let host = Host::new();
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let mut config = host.config(
        vec!["https://127.0.0.1:1".into()],
        Some("not a certificate".into()),
    );
    let e = Watcher::start(config.clone(), tx.clone())
        .unwrap_err()
        .to_string();
    assert!(e.contains("pinned certificate"), "{e}");
    config.pinned_cert_pem = None;
    config.folders = vec!["relative".into()];
    let e = Watcher::start(config, tx).unwrap_err().to_string();
    assert!(e.contains("absolute device path"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_folder_and_a_missing_sandbox_are_reported() {
    let host = Host::new();
    let mut config = host.config(vec![], None);
    config.folders.push("/does/not/exist".into());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let watcher = Watcher::start(config, tx).unwrap();
    let e = collect_until(&mut rx, Duration::from_secs(10), |e| {
        !alerts(e, AlertCode::WatchFailed).is_empty()
            && !alerts(e, AlertCode::SandboxNotConfigured).is_empty()
    })
    .await;
    assert_eq!(
        alerts(&e, AlertCode::WatchFailed)[0].1,
        Some("/does/not/exist")
    );
    // Objects are still queued while no sandbox is configured.
    std::fs::write(host.path("/watched/wait.sh"), harmless("wait")).unwrap();
    wait_for(Duration::from_secs(10), || {
        watcher.status().unwrap().queued_objects == 1
    })
    .await;
    watcher.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submitted_path_with_dotdot_or_relative_is_refused() {
    let host = Host::new();
    let sdir = tempfile::tempdir().unwrap();
    let sb = sandbox(sdir.path()).await;
    let config = host.config_for(&sb);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let watcher = Watcher::start(config, tx).unwrap();
    let e = watcher
        .submit_path("/watched/../../outside-the-device.sh")
        .unwrap_err();
    assert!(e.to_string().contains("`..`"), "{e}");
    let e = watcher.submit_path("watched/x.sh").unwrap_err();
    assert!(e.to_string().contains("absolute"), "{e}");
    let rest = drain_for(&mut rx, Duration::from_millis(500)).await;
    assert!(
        verdicts(&rest).is_empty() && alerts(&rest, AlertCode::PathVanished).is_empty(),
        "nothing was looked at"
    );
    assert_eq!(watcher.status().unwrap().queued_objects, 0);
    watcher.shutdown().await;
    sb.shutdown().await;
}

/// A sandbox that answers but does not admit this device (it wants an enrolled agent's
/// certificate) is said at once, not after the long wait for a network outage: waiting
/// will not mend it. The object stays queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_that_refuses_the_device_is_said_at_once() {
    let host = Host::new();
    let sdir = tempfile::tempdir().unwrap();
    let mut cfg = riposte_sandbox::SandboxConfig::new(sdir.path());
    cfg.dynamic = false;
    // Any CA: this watcher presents no certificate at all.
    let ca = tempfile::tempdir().unwrap();
    let other = sandbox(ca.path()).await;
    cfg.client_ca_pem = Some(other.cert_pem.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sb = riposte_sandbox::serve(cfg, listener).await.unwrap();
    let config = host.config_for(&sb);
    assert_eq!(config.unreachable_alert_after, Duration::from_secs(3600));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let watcher = Watcher::start(config, tx).unwrap();
    std::fs::write(host.path("/watched/x.sh"), harmless("refused")).unwrap();
    let e = collect_until(&mut rx, Duration::from_secs(20), |e| {
        !alerts(e, AlertCode::SandboxUnreachable).is_empty()
    })
    .await;
    let said = alerts(&e, AlertCode::SandboxUnreachable);
    assert!(
        said.first()
            .is_some_and(|(m, _)| m.contains("refuses this device")),
        "{e:#?}"
    );
    assert_eq!(watcher.status().unwrap().queued_objects, 1);
    watcher.shutdown().await;
    sb.shutdown().await;
    other.shutdown().await;
}
