//! CAPEv2 connector against a small fake CAPE REST server.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use riposte_sandbox::cape::CapeClient;
use riposte_sandbox::report::Verdict;
use serde_json::json;

#[derive(Default)]
struct Fake {
    polls: AtomicUsize,
    uploaded: Mutex<Option<(String, Vec<u8>)>>,
    early_report_fetch: AtomicUsize,
    fail: bool,
}

const STATES: &[&str] = &["pending", "running", "completed", "completed", "reported"];

fn authorized(h: &HeaderMap) -> bool {
    h.get("authorization").and_then(|v| v.to_str().ok()) == Some("Token s3cret")
}

async fn create(State(f): State<Arc<Fake>>, h: HeaderMap, body: Bytes) -> Response {
    if !authorized(&h) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"detail": "Invalid token."})),
        )
            .into_response();
    }
    let ct = h
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(ct.starts_with("multipart/form-data"), "{ct}");
    // Minimal multipart check: the "file" part with its file name and content.
    let text = String::from_utf8_lossy(&body);
    let name = text
        .split("name=\"file\"; filename=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_default()
        .to_string();
    let content = text
        .split("\r\n\r\n")
        .nth(1)
        .and_then(|r| r.split("\r\n--").next())
        .unwrap_or_default()
        .as_bytes()
        .to_vec();
    *f.uploaded.lock().unwrap() = Some((name, content));
    Json(json!({"error": false, "data": {"task_ids": [42], "message": "Task ID 42 has been submitted"}}))
        .into_response()
}

fn state_of(f: &Fake) -> &'static str {
    if f.fail {
        return "failed_analysis";
    }
    STATES[f.polls.load(Ordering::SeqCst).min(STATES.len() - 1)]
}

async fn status(State(f): State<Arc<Fake>>, h: HeaderMap, Path(id): Path<u64>) -> Response {
    assert!(authorized(&h));
    assert_eq!(id, 42);
    let s = state_of(&f);
    f.polls.fetch_add(1, Ordering::SeqCst);
    Json(json!({"error": false, "data": s})).into_response()
}

async fn report(State(f): State<Arc<Fake>>, h: HeaderMap, Path(id): Path<u64>) -> Response {
    assert!(authorized(&h));
    assert_eq!(id, 42);
    if f.polls.load(Ordering::SeqCst) < STATES.len() {
        f.early_report_fetch.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::NOT_FOUND, "report not ready").into_response();
    }
    let v: serde_json::Value = serde_json::from_str(include_str!("data/cape_report.json")).unwrap();
    Json(v).into_response()
}

async fn fake(fail: bool) -> (String, Arc<Fake>) {
    let f = Arc::new(Fake {
        fail,
        ..Default::default()
    });
    let app = Router::new()
        .route("/apiv2/tasks/create/file/", post(create))
        .route("/apiv2/tasks/status/{id}/", get(status))
        .route("/apiv2/tasks/get/report/{id}/", get(report))
        .with_state(f.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    (format!("http://{addr}"), f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_poll_until_reported_and_import() {
    let (url, f) = fake(false).await;
    let c = CapeClient::new(&url, Some("s3cret".into()), Duration::from_secs(5)).unwrap();
    let r = c
        .analyse(
            "invoice.exe",
            b"MZ fake",
            Duration::from_millis(10),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(
        f.uploaded.lock().unwrap().clone(),
        Some(("invoice.exe".to_string(), b"MZ fake".to_vec()))
    );
    // It waited through "completed" to "reported" and never fetched early.
    assert_eq!(f.polls.load(Ordering::SeqCst), STATES.len());
    assert_eq!(f.early_report_fetch.load(Ordering::SeqCst), 0);
    assert_eq!(r.source, "cape");
    assert_eq!(r.verdict, Verdict::Malicious);
    assert_eq!(r.threat_name.as_deref(), Some("AgentTesla"));
    assert_eq!(r.iocs.domains, vec!["smtp.evil-exfil.example".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_token_and_failed_task_are_errors() {
    let (url, _f) = fake(false).await;
    let c = CapeClient::new(&url, Some("wrong".into()), Duration::from_secs(5)).unwrap();
    let e = c.submit("a", b"a").await.unwrap_err();
    assert!(e.to_string().contains("token"), "{e}");
    let (url, _f) = fake(true).await;
    let c = CapeClient::new(&url, Some("s3cret".into()), Duration::from_secs(5)).unwrap();
    let e = c
        .analyse("a", b"a", Duration::from_millis(10), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("failed_analysis"), "{e}");
}
