//! Test support: a real server on loopback with TLS, a pinned HTTPS client, and a recording
//! agent link.
#![allow(dead_code)]

use riposte_agent::identity::{pinned_http_client, Identity};
use riposte_agent::link::{LinkHandler, Renewal};
use riposte_proto::{AgentToServer, Delivery};
use riposte_server::{RunningServer, ServerOptions};
use riposte_store::testing::TestDb;
use riposte_store::Backend;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const ADMIN_PASSWORD: &str = "admin-password-for-tests";

pub struct TestServer {
    pub server: Option<RunningServer>,
    pub dir: tempfile::TempDir,
    pub db: Option<TestDb>,
    pub backend: Backend,
    pub url: String,
    pub ca: String,
}

pub fn options(dir: &std::path::Path, db: &TestDb, backend: Backend) -> ServerOptions {
    let mut o = ServerOptions::new(dir.to_path_buf(), "127.0.0.1:0".parse().unwrap());
    if backend == Backend::Postgres {
        o.database = Some(db.url.clone());
        o.database_schema = db.schema.clone();
    } else {
        o.database = Some(db.url.clone());
    }
    o.admin_password = Some(ADMIN_PASSWORD.to_string());
    // Tests store their detections before asking; a missing one is refused sooner.
    o.core.detection_wait_ms = 1_000;
    o
}

impl TestServer {
    pub async fn start(backend: Backend) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let db = TestDb::new(backend).await;
        let server = riposte_server::start(options(dir.path(), &db, backend))
            .await
            .unwrap();
        let url = format!("https://127.0.0.1:{}", server.api_addr.port());
        let ca = server.ca_pem().to_string();
        TestServer {
            server: Some(server),
            dir,
            db: Some(db),
            backend,
            url,
            ca,
        }
    }

    /// A server with group `A`, and an administrator's client.
    pub async fn with_group_a(backend: Backend) -> (TestServer, Api) {
        let ts = TestServer::start(backend).await;
        let api = ts.client().await;
        api.ok("POST", "/api/v1/groups", Some(json!({"name": "A"})))
            .await;
        (ts, api)
    }

    /// A second server process on the same data directory and database (PostgreSQL:
    /// several processes share one database).
    pub async fn another_process(&self) -> RunningServer {
        self.another_process_with(|_| {}).await
    }

    /// [`TestServer::another_process`], with options changed by `change`.
    pub async fn another_process_with(
        &self,
        change: impl FnOnce(&mut ServerOptions),
    ) -> RunningServer {
        let mut o = options(self.dir.path(), self.db.as_ref().unwrap(), self.backend);
        change(&mut o);
        riposte_server::start(o).await.unwrap()
    }

    pub fn running(&self) -> &RunningServer {
        self.server.as_ref().unwrap()
    }

    /// Stops the server and starts it again on the same data and database, same ports.
    pub async fn restart(&mut self) {
        self.restart_with(|_| {}).await
    }

    /// [`TestServer::restart`], with options changed by `change`.
    pub async fn restart_with(&mut self, change: impl FnOnce(&mut ServerOptions)) {
        let old = self.server.take().unwrap();
        let (api, agent) = (old.api_addr, old.agent_addr);
        old.shutdown().await;
        let mut o = options(self.dir.path(), self.db.as_ref().unwrap(), self.backend);
        o.listen = api;
        o.agent_listen = Some(agent);
        change(&mut o);
        self.server = Some(riposte_server::start(o).await.unwrap());
    }

    pub async fn client(&self) -> Api {
        Api::login(&self.url, &self.ca, "admin", ADMIN_PASSWORD).await
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
        if let Some(db) = self.db.take() {
            db.cleanup().await;
        }
    }
}

/// A logged-in API client.
pub struct Api {
    pub http: reqwest::Client,
    pub url: String,
    pub token: String,
}

impl Api {
    pub async fn login(url: &str, ca: &str, user: &str, password: &str) -> Api {
        let http = pinned_http_client(ca, Duration::from_secs(30)).unwrap();
        let (status, body) = send(
            &http,
            reqwest::Method::POST,
            &format!("{url}/api/v1/login"),
            "",
            Some(json!({"user": user, "password": password})),
        )
        .await;
        assert_eq!(status, 200, "login as {user}: {body}");
        Api {
            http,
            url: url.to_string(),
            token: body["token"].as_str().unwrap().to_string(),
        }
    }

    /// A client that sends a name and password with every request (as agents do for
    /// the special account), without a session.
    pub fn basic(url: &str, ca: &str, user: &str, password: &str) -> Api {
        use base64::Engine;
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        Api {
            http: pinned_http_client(ca, Duration::from_secs(30)).unwrap(),
            url: url.to_string(),
            token: format!("Basic {encoded}"),
        }
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        send(
            &self.http,
            m,
            &format!("{}{path}", self.url),
            &self.token,
            body,
        )
        .await
    }

    pub async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (s, v) = self.call(method, path, body).await;
        assert_eq!(s, 200, "{method} {path}: {v}");
        v
    }

    /// A call that must be refused with `status` and an error that says `says`.
    pub async fn refused(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        status: u16,
        says: &str,
    ) -> Value {
        let (s, v) = self.call(method, path, body).await;
        assert_eq!(s, status, "{method} {path}: {v}");
        let error = v["error"].as_str().unwrap_or_default();
        assert!(error.contains(says), "{method} {path}: {v}");
        v
    }
}

pub async fn send(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = http.request(method, url);
    if token.starts_with("Basic ") {
        req = req.header(reqwest::header::AUTHORIZATION, token);
    } else if !token.is_empty() {
        req = req.bearer_auth(token);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Records what the link delivers.
#[derive(Default)]
pub struct Recorder {
    pub last: AtomicU64,
    pub got: Mutex<Vec<(u64, Delivery)>>,
    pub up: AtomicBool,
    pub notes: Mutex<Vec<String>>,
    pub changed: tokio::sync::Notify,
    /// The identities the link renewed to, in order.
    pub renewed: Mutex<Vec<Identity>>,
    /// Fail to store a renewed certificate (as a full disk would).
    pub fail_renewal: AtomicBool,
    /// The renewal steps the link took: `issued`, `accepted`, `discarded`.
    pub renewal_steps: Mutex<Vec<&'static str>>,
}

impl LinkHandler for Recorder {
    fn last_applied(&self) -> u64 {
        self.last.load(Ordering::SeqCst)
    }
    async fn apply(&self, seq: u64, delivery: Delivery) {
        self.got.lock().unwrap().push((seq, delivery));
        self.last.store(seq, Ordering::SeqCst);
        self.changed.notify_waiters();
    }
    fn resend_on_connect(&self) -> Vec<AgentToServer> {
        Vec::new()
    }
    fn event_acked(&self, _: &str) {}
    fn link_state(&self, up: bool, note: &str) {
        self.up.store(up, Ordering::SeqCst);
        self.notes.lock().unwrap().push(note.to_string());
        self.changed.notify_waiters();
    }
    fn renewal(&self, step: Renewal<'_>) -> Result<(), String> {
        self.renewal_steps.lock().unwrap().push(match step {
            Renewal::Issued(_) => "issued",
            Renewal::Accepted(_) => "accepted",
            Renewal::Discarded => "discarded",
        });
        if let Renewal::Issued(identity) = step {
            if self.fail_renewal.load(Ordering::SeqCst) {
                self.notes.lock().unwrap().push("renewal not stored".into());
                return Err("no space left on device".into());
            }
            self.renewed.lock().unwrap().push(identity.clone());
        }
        self.changed.notify_waiters();
        Ok(())
    }
}

impl Recorder {
    /// Waits until `pred` holds on the deliveries, up to `limit`.
    pub async fn wait_for(
        &self,
        limit: Duration,
        pred: impl Fn(&[(u64, Delivery)]) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let n = self.changed.notified();
            if pred(&self.got.lock().unwrap()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, n).await.is_err() {
                return pred(&self.got.lock().unwrap());
            }
        }
    }
}

/// A running test agent link.
pub struct TestAgent {
    pub identity: Identity,
    pub recorder: Arc<Recorder>,
    pub tx: tokio::sync::mpsc::UnboundedSender<AgentToServer>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl TestAgent {
    pub fn start(identity: Identity, recorder: Arc<Recorder>) -> TestAgent {
        TestAgent::start_with_pending(identity, None, recorder)
    }

    /// [`TestAgent::start`] with a renewed identity waiting to be accepted.
    pub fn start_with_pending(
        identity: Identity,
        pending: Option<Identity>,
        recorder: Arc<Recorder>,
    ) -> TestAgent {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(riposte_agent::link::run(
            identity.clone(),
            pending,
            "test-host".into(),
            recorder.clone(),
            rx,
            stop_rx,
        ));
        TestAgent {
            identity,
            recorder,
            tx,
            stop,
            task,
        }
    }

    pub async fn stop(self) -> Arc<Recorder> {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        self.recorder
    }
}

/// Creates an enrollment token for `group` and enrolls a device with it.
/// Creates the special account with `password` and enforces on `group` a Threat Response
/// policy that carries it, with these actions.
pub async fn enforce_group_actions(api: &Api, group: &str, password: &str, actions: &[&str]) {
    api.ok(
        "POST",
        "/api/v1/special-account",
        Some(json!({ "password": password })),
    )
    .await;
    api.ok(
        "PUT",
        &format!("/api/v1/groups/{group}/policy/threat-response"),
        Some(
            json!({"enabled": true, "mode": "enforce", "special_password": password,
                    "actions": actions}),
        ),
    )
    .await;
}

pub async fn enroll(api: &Api, ca: &str, group: &str, name: &str) -> Identity {
    let t = api
        .ok(
            "POST",
            "/api/v1/enroll-tokens",
            Some(json!({"group": group, "max_uses": 1})),
        )
        .await;
    riposte_agent::identity::enroll(&api.url, ca, t["token"].as_str().unwrap(), name, name)
        .await
        .unwrap()
}
