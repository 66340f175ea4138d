//! Client behaviour: failover, timeouts, certificate pinning.

use std::time::{Duration, Instant};

use riposte_sandbox::static_analysis::EICAR;
use riposte_sandbox::{
    serve, ClientConfig, SandboxClient, SandboxConfig, SandboxError, ServeHandle, Submitted,
};

async fn start(dir: &std::path::Path) -> ServeHandle {
    let mut cfg = SandboxConfig::new(dir);
    cfg.dynamic = false;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    serve(cfg, listener).await.unwrap()
}

/// A URL where nothing listens (bound, then released).
async fn dead_url() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("https://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_over_to_the_second_server() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path()).await;
    let mut cfg = ClientConfig::new(
        vec![dead_url().await, format!("https://{}", h.addr)],
        h.cert_pem.clone(),
    );
    cfg.timeout = Duration::from_secs(5);
    cfg.retries = 0;
    let c = SandboxClient::new(cfg).unwrap();
    let Submitted::Queued(id) = c.submit("eicar.com", EICAR).await.unwrap() else {
        panic!()
    };
    // The poll goes to the server that queued the task.
    let s = c
        .wait(&id, Duration::from_millis(20), Duration::from_secs(10))
        .await
        .unwrap();
    assert!(
        matches!(s, riposte_sandbox::TaskStatus::Found { .. }),
        "{s:?}"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_servers_down_retries_with_backoff_then_errors() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path()).await;
    let mut cfg = ClientConfig::new(vec![dead_url().await, dead_url().await], h.cert_pem.clone());
    cfg.retries = 2;
    cfg.backoff = Duration::from_millis(50);
    let c = SandboxClient::new(cfg).unwrap();
    let t = Instant::now();
    let e = c.submit("x", b"x").await.unwrap_err();
    // Three rounds over two servers, pauses of 50 + 100 ms.
    assert!(
        t.elapsed() >= Duration::from_millis(150),
        "{:?}",
        t.elapsed()
    );
    let SandboxError::Unreachable(msg) = &e else {
        panic!("{e}")
    };
    assert_eq!(msg.matches("Connection refused").count(), 6, "{msg}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_timeout_applies() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path()).await;
    // Accepts TCP and never answers the TLS handshake.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            conns.push(s);
        }
    });
    let mut cfg = ClientConfig::new(vec![format!("https://{addr}")], h.cert_pem.clone());
    cfg.timeout = Duration::from_millis(300);
    cfg.retries = 0;
    let c = SandboxClient::new(cfg).unwrap();
    let t = Instant::now();
    let e = c.submit("x", b"x").await.unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(e.to_string().contains("timed out"), "{e}");
    hold.abort();
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_certificate_mismatch_is_refused() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let h1 = start(d1.path()).await;
    let h2 = start(d2.path()).await;
    assert_ne!(h1.cert_pem, h2.cert_pem);
    // Talk to server 1 while pinning server 2's certificate.
    let mut cfg = ClientConfig::new(vec![format!("https://{}", h1.addr)], h2.cert_pem.clone());
    cfg.retries = 0;
    let c = SandboxClient::new(cfg).unwrap();
    let e = c.submit("eicar.com", EICAR).await.unwrap_err();
    assert!(e.to_string().contains("pinned"), "{e}");
    assert_eq!(
        std::fs::read_dir(d1.path().join("tasks")).unwrap().count(),
        0
    );
    // A garbage PEM is refused up front.
    let e =
        SandboxClient::new(ClientConfig::new(vec!["https://x".into()], "nope".into())).unwrap_err();
    assert!(e.to_string().contains("cert.pem"), "{e}");
    h1.shutdown().await;
    h2.shutdown().await;
}
