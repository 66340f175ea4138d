//! Test support: a real server with the console on loopback (SQLite), a plain HTTPS client
//! that keeps the session cookie, and a small W3C WebDriver client for headless Chromium.
#![allow(dead_code)]

use riposte_model::{Principal, Role};
use riposte_server::service::{Caller, Core};
use riposte_server::{RunningServer, ServerOptions};
use riposte_store::testing::TestDb;
use riposte_store::Backend;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const ADMIN_PASSWORD: &str = "admin-password-for-tests";

/// A server with the console.
pub struct Harness {
    pub server: Option<RunningServer>,
    pub url: String,
    pub ca: String,
    pub dir: tempfile::TempDir,
    _db: TestDb,
    _console_stop: Option<tokio::sync::watch::Sender<bool>>,
}

pub fn admin() -> Caller {
    Caller {
        principal: Principal::Account {
            name: "admin".into(),
            role: Role::Administrator,
        },
        source: "test".into(),
        request: None,
    }
}

impl Harness {
    pub async fn start() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let db = TestDb::new(Backend::Sqlite).await;
        let mut o = ServerOptions::new(dir.path().join("server"), "127.0.0.1:0".parse().unwrap());
        o.database = Some(db.url.clone());
        o.admin_password = Some(ADMIN_PASSWORD.to_string());
        o.ui = Some(Arc::new(riposte_console::router));
        let server = riposte_server::start(o).await.unwrap();
        let ca = server.ca_pem().to_string();
        let mut url = format!("https://127.0.0.1:{}", server.api_addr.port());
        let mut stop = None;
        // The console must be served beside the API; if this server build does not merge
        // `ServerOptions::ui` yet, serve the same router on a listener of our own.
        let probe = client(&ca)
            .get(format!("{url}/login"))
            .send()
            .await
            .unwrap();
        if !probe
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .starts_with("text/html")
        {
            let (u, tx) = serve_console(server.core.clone(), dir.path()).await;
            url = u;
            stop = Some(tx);
        }
        Harness {
            server: Some(server),
            url,
            ca,
            dir,
            _db: db,
            _console_stop: stop,
        }
    }

    pub fn core(&self) -> Arc<Core> {
        self.server.as_ref().unwrap().core.clone()
    }

    /// Creates a group under the root.
    pub async fn group(&self, name: &str) -> i64 {
        self.core()
            .create_group(&admin(), name, None)
            .await
            .unwrap()
    }

    /// Enrolls a device into `group` the way an agent does (token + CSR over HTTPS).
    pub async fn enroll(&self, group: &str, name: &str) -> i64 {
        let (token, _) = self
            .core()
            .create_enroll_token(&admin(), group, 3600, 1)
            .await
            .unwrap();
        let server_url = format!(
            "https://127.0.0.1:{}",
            self.server.as_ref().unwrap().api_addr.port()
        );
        riposte_agent::identity::enroll(&server_url, &self.ca, &token, name, name)
            .await
            .unwrap()
            .device_id
    }

    pub async fn add_account(&self, name: &str, role: Role, password: &str) {
        self.core()
            .create_account(&admin(), name, role, password)
            .await
            .unwrap();
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self._console_stop.take() {
            let _ = tx.send(true);
        }
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }
}

/// Serves a console router of its own over `core` on a new port (as a second server
/// process would); returns its URL and the sender that stops it.
pub async fn serve_console(
    core: Arc<Core>,
    dir: &std::path::Path,
) -> (String, tokio::sync::watch::Sender<bool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (chain, key) = core
        .authority
        .server_identity(dir, &["127.0.0.1".to_string()])
        .unwrap();
    let tls = riposte_server::pki::api_tls_config(chain, key).unwrap();
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(riposte_server::serve_https(
        riposte_console::router(core),
        listener,
        tls,
        std::time::Duration::from_secs(20),
        rx,
    ));
    (format!("https://127.0.0.1:{port}"), tx)
}

/// An HTTPS client that trusts the server's CA and does not follow redirects.
pub fn client(ca: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        // A fresh connection per request: after refusing an oversized form unread, the
        // server closes its connection, and a pooled one could be reused as it closes
        // (the next request then fails with an incomplete message).
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// A browser-less visitor: keeps the session cookie by hand.
pub struct Visitor {
    pub http: reqwest::Client,
    pub url: String,
    pub cookie: Option<String>,
}

pub struct Page {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Page {
    pub fn location(&self) -> &str {
        self.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// The page's CSRF token (from a hidden form field).
    pub fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .expect("a form with a CSRF token");
        let rest = &self.body[at + 19..];
        rest[..rest.find('"').unwrap()].to_string()
    }
}

impl Visitor {
    pub fn new(h: &Harness) -> Visitor {
        Visitor {
            http: client(&h.ca),
            url: h.url.clone(),
            cookie: None,
        }
    }

    async fn page(resp: reqwest::Response) -> Page {
        Page {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            body: resp.text().await.unwrap(),
        }
    }

    pub async fn get(&self, path: &str) -> Page {
        let mut r = self.http.get(format!("{}{path}", self.url));
        if let Some(c) = &self.cookie {
            r = r.header("cookie", c);
        }
        Self::page(r.send().await.unwrap()).await
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Page {
        let mut r = self.http.post(format!("{}{path}", self.url)).form(form);
        if let Some(c) = &self.cookie {
            r = r.header("cookie", c);
        }
        Self::page(r.send().await.unwrap()).await
    }

    /// Logs in through the form; returns the response.
    pub async fn login(&mut self, user: &str, password: &str) -> Page {
        let p = self
            .post("/login", &[("user", user), ("password", password)])
            .await;
        if let Some(sc) = p.headers.get("set-cookie").and_then(|v| v.to_str().ok()) {
            self.cookie = sc.split(';').next().map(String::from);
        }
        p
    }
}

// ----- WebDriver --------------------------------------------------------------------------

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Headless Chromium driven over the W3C WebDriver protocol; everything is killed on drop.
pub struct Browser {
    driver: Child,
    port: u16,
    http: reqwest::Client,
    session: String,
    _profile: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Browser {
    pub async fn start() -> Browser {
        use std::os::unix::process::CommandExt;
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromedriver is needed (Debian packages chromium and chromium-driver)");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(r) = http.get(format!("{base}/status")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--ignore-certificate-errors".into(),
            "--window-size=1280,800".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args},
        }}});
        let mut b = Browser {
            driver,
            port,
            http,
            session: String::new(),
            _profile: profile,
        };
        let v = b.cmd(reqwest::Method::POST, "/session", Some(caps)).await;
        b.session = v["sessionId"]
            .as_str()
            .expect("a WebDriver session")
            .to_string();
        b
    }

    async fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        match self.try_cmd(method, path, body).await {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        }
    }

    /// Runs one command on an element found by `css`, finding it again when the page was
    /// re-rendered in between (a "stale element reference", or Chromium's "node does not
    /// belong to the document", under load is not a failure).
    async fn on_element(
        &self,
        css: &str,
        method: reqwest::Method,
        op: &str,
        body: Option<Value>,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let e = self.find(css).await;
            match self
                .try_cmd(
                    method.clone(),
                    &self.s(&format!("/element/{e}{op}")),
                    body.clone(),
                )
                .await
            {
                Ok(v) => return v,
                // Chromium names a node of the page being replaced either way.
                Err(err)
                    if (err.contains("stale element")
                        || err.contains("does not belong to the document"))
                        && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(err) => panic!("{err}"),
            }
        }
    }

    async fn try_cmd(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        let mut r = self.http.request(method.clone(), &url);
        if let Some(b) = body {
            r = r.json(&b);
        } else if method == reqwest::Method::POST {
            r = r.json(&json!({}));
        }
        let resp = r.send().await.map_err(|e| format!("{path}: {e}"))?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(format!("WebDriver {path}: {status} {v}"));
        }
        Ok(v["value"].clone())
    }

    fn s(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    pub async fn goto(&self, url: &str) {
        self.cmd(
            reqwest::Method::POST,
            &self.s("/url"),
            Some(json!({"url": url})),
        )
        .await;
    }

    pub async fn find_all(&self, css: &str) -> Vec<String> {
        let v = self
            .cmd(
                reqwest::Method::POST,
                &self.s("/elements"),
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e[ELEMENT].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits up to 15 s for an element.
    pub async fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(e) = self.find_all(css).await.into_iter().next() {
                return e;
            }
            if Instant::now() > deadline {
                let src = self
                    .cmd(reqwest::Method::GET, &self.s("/source"), None)
                    .await;
                let src = src.as_str().unwrap_or_default();
                panic!(
                    "no element matches {css} on {}: {}",
                    self.url().await,
                    &src[..src.len().min(3000)]
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn click(&self, css: &str) {
        self.on_element(css, reqwest::Method::POST, "/click", None)
            .await;
    }

    /// Clicks the link whose text is exactly `text`.
    pub async fn click_link(&self, text: &str) {
        let v = self
            .cmd(
                reqwest::Method::POST,
                &self.s("/element"),
                Some(json!({"using": "link text", "value": text})),
            )
            .await;
        let e = v[ELEMENT].as_str().unwrap().to_string();
        self.cmd(
            reqwest::Method::POST,
            &self.s(&format!("/element/{e}/click")),
            None,
        )
        .await;
    }

    pub async fn clear(&self, css: &str) {
        self.on_element(css, reqwest::Method::POST, "/clear", None)
            .await;
    }

    pub async fn type_in(&self, css: &str, text: &str) {
        self.on_element(
            css,
            reqwest::Method::POST,
            "/value",
            Some(json!({"text": text})),
        )
        .await;
    }

    pub async fn text(&self, css: &str) -> String {
        self.on_element(css, reqwest::Method::GET, "/text", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub async fn selected(&self, css: &str) -> bool {
        self.on_element(css, reqwest::Method::GET, "/selected", None)
            .await
            .as_bool()
            .unwrap_or(false)
    }

    pub async fn enabled(&self, css: &str) -> bool {
        self.on_element(css, reqwest::Method::GET, "/enabled", None)
            .await
            .as_bool()
            .unwrap_or(false)
    }

    pub async fn url(&self) -> String {
        self.cmd(reqwest::Method::GET, &self.s("/url"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Waits up to 15 s until the element's text contains `want`; returns the text.
    pub async fn wait_text(&self, css: &str, want: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let t = self.text(css).await;
            if t.contains(want) {
                return t;
            }
            assert!(Instant::now() < deadline, "{css} shows {t:?}, not {want:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Takes a screenshot; writes it to `docs/screenshots/NAME.png` when that file does not
    /// exist yet or `RIPOSTE_SCREENSHOTS=1` (so test runs do not churn the repository).
    pub async fn screenshot(&self, name: &str) {
        use base64::Engine;
        let v = self
            .cmd(reqwest::Method::GET, &self.s("/screenshot"), None)
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots");
        let path = dir.join(format!("{name}.png"));
        if std::env::var("RIPOSTE_SCREENSHOTS").is_ok_and(|v| v == "1") || !path.exists() {
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::write(&path, &png);
        }
    }

    /// Logs in through the login page.
    pub async fn login(&self, base: &str, user: &str, password: &str) {
        self.goto(&format!("{base}/login")).await;
        self.type_in("#user", user).await;
        self.type_in("#password", password).await;
        self.click("#login").await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // End the session (Chromium quits), then the driver's whole process group.
        if !self.session.is_empty() {
            use std::io::{Read, Write};
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let _ = write!(
                    s,
                    "DELETE /session/{} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                    self.session
                );
                let mut buf = Vec::new();
                let _ = s.read_to_end(&mut buf);
            }
        }
        // chromedriver leads its own process group (Chromium and its helpers are in it).
        if let Ok(pgid) = i32::try_from(self.driver.id()) {
            if pgid > 1 {
                // SAFETY: kill(2) with a negative pid signals that process group only.
                unsafe {
                    libc::kill(-pgid, libc::SIGKILL);
                }
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
