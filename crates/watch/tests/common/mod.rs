//! Test helpers: a host root in a tempdir, the real built-in sandbox in process, a
//! counting HTTPS front for it, and event collection with deadlines.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use riposte_sandbox::{serve, SandboxConfig, ServeHandle};
use riposte_watch::{AlertCode, BackendChoice, ObjectFilter, Verdict, WatchConfig, WatchEvent};
use sha2::Digest;
use tokio::sync::mpsc::UnboundedReceiver;

/// The EICAR test file, assembled at run time so this source is not flagged.
pub fn eicar() -> Vec<u8> {
    let parts = [
        "X5O!P%@AP[4\\PZX54(P^)7CC)7}$",
        "EICAR-STANDARD-",
        "ANTIVIRUS-TEST-",
        "FILE!$H+H*",
    ];
    parts.concat().into_bytes()
}

/// A harmless shell script, unique per call.
pub fn harmless(tag: &str) -> Vec<u8> {
    format!("#!/bin/sh\necho 'hello from {tag}'\n").into_bytes()
}

/// (md5, sha1, sha256) of `data`.
pub fn hashes(data: &[u8]) -> (String, String, String) {
    (
        hex::encode(md5::Md5::digest(data)),
        hex::encode(sha1::Sha1::digest(data)),
        hex::encode(sha2::Sha256::digest(data)),
    )
}

/// A device file system in a tempdir (with `/watched` and an `/etc/passwd`) and a
/// separate state directory.
pub struct Host {
    pub root: tempfile::TempDir,
    pub state: tempfile::TempDir,
}

impl Host {
    pub fn new() -> Host {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("watched")).unwrap();
        std::fs::create_dir_all(root.path().join("etc")).unwrap();
        std::fs::write(
            root.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nalice:x:4242:4242:Alice:/home/alice:/bin/sh\nbob:x:4343:4343:Bob:/home/bob:/bin/sh\n",
        )
        .unwrap();
        Host {
            root,
            state: tempfile::tempdir().unwrap(),
        }
    }

    /// Host path of a device path.
    pub fn path(&self, device: &str) -> PathBuf {
        self.root.path().join(device.trim_start_matches('/'))
    }

    /// [`Host::config`] with `sandbox` as the only sandbox, trusted by its certificate.
    pub fn config_for(&self, sandbox: &ServeHandle) -> WatchConfig {
        self.config(
            vec![format!("https://{}", sandbox.addr)],
            Some(sandbox.cert_pem.clone()),
        )
    }

    /// Watcher settings with short timings for tests.
    pub fn config(&self, sandboxes: Vec<String>, cert: Option<String>) -> WatchConfig {
        let settings = riposte_model::SandboxIntegration {
            sandboxes,
            sandbox_ca_pem: cert,
            watch: vec!["/watched".into()],
            request_timeout_secs: 5,
        };
        let mut c = WatchConfig::from_settings(&settings, self.root.path(), self.state.path());
        c.poll_interval = Duration::from_millis(50);
        c.retry_backoff = Duration::from_millis(100);
        c.max_retry_backoff = Duration::from_millis(400);
        c.unreachable_alert_after = Duration::from_secs(3600);
        c.filter = ObjectFilter::Executables;
        // RIPOSTE_WATCH_BACKEND=inotify runs the suite as on a host without fanotify.
        c.backend = match std::env::var("RIPOSTE_WATCH_BACKEND").as_deref() {
            Ok("inotify") => BackendChoice::Inotify,
            _ => BackendChoice::Auto,
        };
        c
    }
}

/// The built-in sandbox (static analysis only, for speed) on a free loopback port.
pub async fn sandbox(dir: &Path) -> ServeHandle {
    sandbox_at(dir, "127.0.0.1:0").await
}

/// The built-in sandbox on `addr`.
pub async fn sandbox_at(dir: &Path, addr: &str) -> ServeHandle {
    let mut cfg = SandboxConfig::new(dir);
    cfg.dynamic = false;
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    serve(cfg, listener).await.unwrap()
}

/// A loopback URL where nothing listens (bound, then released).
pub async fn dead_url() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("https://{addr}")
}

/// An HTTPS front with the sandbox's own certificate that serves the real sandbox's
/// routes and counts object uploads (`POST /sandbox/v1/tasks`).
pub struct Counting {
    pub url: String,
    pub uploads: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Counting {
    pub fn uploads(&self) -> usize {
        self.uploads.load(Ordering::SeqCst)
    }
}

impl Drop for Counting {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn counting_front(h: &ServeHandle, data_dir: &Path) -> Counting {
    let (cert, key) = riposte_sandbox::tls::load_or_create(data_dir, &[]).unwrap();
    let tls = Arc::new(riposte_sandbox::tls::server_config(&cert, &key, None, None).unwrap());
    let uploads = Arc::new(AtomicUsize::new(0));
    let counter = uploads.clone();
    let routes = riposte_sandbox::service::router(h.app.clone()).layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let counter = counter.clone();
            async move {
                if req.method() == axum::http::Method::POST
                    && req.uri().path() == "/sandbox/v1/tasks"
                {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
                next.run(req).await
            }
        },
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let svc = hyper_util::service::TowerToHyperService::new(routes.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                .await;
            });
        }
    });
    Counting { url, uploads, task }
}

/// Collect events until `done` says so or `within` passes (then panic with what came).
pub async fn collect_until(
    rx: &mut UnboundedReceiver<WatchEvent>,
    within: Duration,
    mut done: impl FnMut(&[WatchEvent]) -> bool,
) -> Vec<WatchEvent> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while !done(&got) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(e)) => got.push(e),
            Ok(None) => panic!("event channel closed; got {got:#?}"),
            Err(_) => panic!("timed out after {within:?}; got {got:#?}"),
        }
    }
    got
}

/// Events that arrive within `d` (to check that nothing more comes).
pub async fn drain_for(rx: &mut UnboundedReceiver<WatchEvent>, d: Duration) -> Vec<WatchEvent> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + d;
    while let Ok(Some(e)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        got.push(e);
    }
    got
}

pub fn verdicts(events: &[WatchEvent]) -> Vec<&Verdict> {
    events
        .iter()
        .filter_map(|e| match e {
            WatchEvent::Verdict(v) => Some(v),
            _ => None,
        })
        .collect()
}

pub fn alerts(events: &[WatchEvent], code: AlertCode) -> Vec<(&str, Option<&str>)> {
    events
        .iter()
        .filter_map(|e| match e {
            WatchEvent::Alert {
                code: c,
                message,
                device_path,
            } if *c == code => Some((message.as_str(), device_path.as_deref())),
            _ => None,
        })
        .collect()
}

/// Wait until `f` holds, polling every 20 ms, for at most `within`.
pub async fn wait_for(within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + within;
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "condition not met within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
