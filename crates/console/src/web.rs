//! Sessions, CSRF tokens, flashes, security headers and static files.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use hmac::{Hmac, Mac};
use riposte_model::{authorize, Operation, Principal};
use riposte_server::service::{Caller, Core, ThreatResponsePatch};
use riposte_server::ServiceError;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "riposte_session";

/// The Content-Security-Policy of every console response.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

const CSS: &str = include_str!("../static/console.css");
const JS: &str = include_str!("../static/console.js");

/// The console's shared state.
#[derive(Clone)]
pub struct Console {
    inner: Arc<Inner>,
}

struct Inner {
    core: Arc<Core>,
    csrf_key: [u8; 32],
    flashes: Mutex<HashMap<String, Vec<Flash>>>,
    /// Live streams open per session (by the session token's CSRF MAC, not the token).
    streams: Mutex<HashMap<String, usize>>,
}

/// Live task streams one session may hold open at once. Each one polls the database
/// every second for as long as it is open, so a session (or a stolen cookie) must not be
/// able to open them without bound; a few browser tabs on tasks stay well under it.
pub const MAX_STREAMS_PER_SESSION: usize = 8;

/// The largest form the console reads: room for an indicator document of 200 KB,
/// URL-encoded.
pub const FORM_LIMIT: usize = 256 * 1024;

/// One open live stream of a session: counted while it exists.
pub struct StreamSlot {
    inner: Arc<Inner>,
    key: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut streams = self.inner.streams.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = streams.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                streams.remove(&self.key);
            }
        }
    }
}

/// A message shown once on the next page.
#[derive(Debug, Clone)]
pub struct Flash {
    pub ok: bool,
    pub text: String,
}

impl Console {
    pub fn new(core: Arc<Core>) -> Console {
        // Derived from the server's secret key, not random per process: a form rendered
        // by one server process must be accepted by another, and after a restart.
        let csrf_key = core.sealer.derive_key("console-csrf");
        Console {
            inner: Arc::new(Inner {
                core,
                csrf_key,
                flashes: Mutex::default(),
                streams: Mutex::default(),
            }),
        }
    }

    /// A slot for one more live stream of the session with `token`, or why not.
    pub fn stream_slot(&self, token: &str) -> Result<StreamSlot, Reject> {
        let key = self.csrf_for(token);
        let mut streams = self.inner.streams.lock().unwrap_or_else(|e| e.into_inner());
        let open = streams.entry(key.clone()).or_default();
        if *open >= MAX_STREAMS_PER_SESSION {
            return Err(Reject::TooMany(format!(
                "this session already has {MAX_STREAMS_PER_SESSION} live task views open; \
                 close some tabs and reload"
            )));
        }
        *open += 1;
        Ok(StreamSlot {
            inner: self.inner.clone(),
            key,
        })
    }

    pub fn core(&self) -> &Core {
        &self.inner.core
    }

    pub fn core_arc(&self) -> Arc<Core> {
        self.inner.core.clone()
    }

    /// The CSRF token of a session: HMAC-SHA256 of the session token.
    fn csrf_for(&self, token: &str) -> String {
        hex::encode(self.csrf_mac(token).finalize().into_bytes())
    }

    fn csrf_mac(&self, token: &str) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.inner.csrf_key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(b"riposte-console-csrf\0");
        mac.update(token.as_bytes());
        mac
    }

    fn csrf_ok(&self, token: &str, given: &str) -> bool {
        match hex::decode(given) {
            Ok(bytes) => self.csrf_mac(token).verify_slice(&bytes).is_ok(),
            Err(_) => false,
        }
    }

    /// Queues a message for the session's next page.
    pub fn flash(&self, s: &Session, ok: bool, text: impl Into<String>) {
        if let Ok(mut m) = self.inner.flashes.lock() {
            let list = m.entry(s.key.clone()).or_default();
            if list.len() < 10 {
                list.push(Flash {
                    ok,
                    text: text.into(),
                });
            }
        }
    }

    /// Takes the session's queued messages.
    pub fn take_flashes(&self, s: &Session) -> Vec<Flash> {
        self.inner
            .flashes
            .lock()
            .ok()
            .and_then(|mut m| m.remove(&s.key))
            .unwrap_or_default()
    }

    /// The policy edit kept by OK, not saved yet. It lives in the database, sealed (it
    /// may hold the special account's password), so that any server process can show
    /// and save it; it goes with the session.
    pub async fn draft(&self, s: &Session, group: i64) -> Option<ThreatResponsePatch> {
        let sealed = self
            .core()
            .store
            .console_draft(&s.key, group)
            .await
            .ok()??;
        let json = self.core().sealer.open(&sealed)?;
        serde_json::from_str(&json).ok()
    }

    /// Stages an edit; says so when it cannot be kept.
    pub async fn set_draft(
        &self,
        s: &Session,
        group: i64,
        patch: ThreatResponsePatch,
    ) -> Result<(), ServiceError> {
        let json = serde_json::to_string(&patch)
            .map_err(|e| ServiceError::Internal(format!("cannot keep the changes: {e}")))?;
        let sealed = self.core().sealer.seal(&json);
        self.core()
            .store
            .put_console_draft(&s.key, group, &sealed)
            .await
            .map_err(ServiceError::from)
    }

    pub async fn clear_draft(&self, s: &Session, group: i64) {
        let _ = self.core().store.delete_console_draft(&s.key, group).await;
    }

    fn forget_session(&self, key: &str) {
        if let Ok(mut m) = self.inner.flashes.lock() {
            m.remove(key);
        }
    }
}

/// A logged-in visitor.
#[derive(Debug, Clone)]
pub struct Session {
    pub caller: Caller,
    /// The session token (the cookie's value).
    pub token: String,
    /// A hash of the token, naming the session in memory.
    pub key: String,
    /// The CSRF token for forms.
    pub csrf: String,
}

impl Session {
    /// Whether the visitor may perform `op` (to show or hide the controls that do it).
    pub fn can(&self, op: Operation) -> bool {
        authorize(&self.caller.principal, op).is_ok()
    }

    pub fn name(&self) -> &str {
        self.caller.principal.display_name()
    }

    pub fn role(&self) -> &str {
        match &self.caller.principal {
            Principal::Account { role, .. } => role.as_str(),
            Principal::Special => "special",
        }
    }
}

/// Why a request was not served.
#[derive(Debug, thiserror::Error)]
pub enum Reject {
    #[error("log in first")]
    Login,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    TooMany(String),
    #[error("{0}")]
    Internal(String),
}

impl From<ServiceError> for Reject {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Unauthorized(m) | ServiceError::Forbidden(m) => Reject::Forbidden(m),
            ServiceError::NotFound(m) => Reject::NotFound(m),
            ServiceError::BadRequest(m)
            | ServiceError::Conflict(m)
            | ServiceError::TooManyAttempts(m) => Reject::BadRequest(m),
            ServiceError::Internal(m) => Reject::Internal(m),
        }
    }
}

impl IntoResponse for Reject {
    fn into_response(self) -> Response {
        let (status, title) = match &self {
            Reject::Login => return Redirect::to("/login").into_response(),
            Reject::Forbidden(_) => (StatusCode::FORBIDDEN, "Refused"),
            Reject::BadRequest(_) => (StatusCode::BAD_REQUEST, "Bad request"),
            Reject::NotFound(_) => (StatusCode::NOT_FOUND, "Not found"),
            Reject::TooMany(_) => (StatusCode::TOO_MANY_REQUESTS, "Too many open views"),
            Reject::Internal(m) => {
                tracing::error!("console: {m}");
                (StatusCode::INTERNAL_SERVER_ERROR, "Internal error")
            }
        };
        let text = match &self {
            Reject::Internal(_) => "Something went wrong on the server; see its log.".to_string(),
            other => other.to_string(),
        };
        (status, crate::layout::error_page(title, &text)).into_response()
    }
}

fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// Where the request comes from, for the audit log.
pub fn source(parts: &Parts) -> String {
    parts
        .extensions
        .get::<riposte_server::api::RemoteAddr>()
        .map(|a| format!("console {}", a.0.ip()))
        .unwrap_or_else(|| "console".to_string())
}

/// The request's source address, as written to the audit log.
pub struct Source(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Source {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Source(source(parts)))
    }
}

fn key_of(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl FromRequestParts<Console> for Session {
    type Rejection = Reject;

    async fn from_request_parts(parts: &mut Parts, state: &Console) -> Result<Self, Reject> {
        let token = cookie_value(&parts.headers, SESSION_COOKIE).ok_or(Reject::Login)?;
        let principal = match state.core().session(&token).await {
            Ok(p) => p,
            Err(ServiceError::Unauthorized(_)) => return Err(Reject::Login),
            Err(e) => return Err(e.into()),
        };
        // The special account exists for devices; it has nothing to do in the console.
        if principal == Principal::Special {
            return Err(Reject::Forbidden(
                "the special account cannot use the console".into(),
            ));
        }
        Ok(Session {
            caller: Caller {
                principal,
                source: source(parts),
                // The console's own address of the page or form (`POST /accounts`).
                request: Some(format!("{} {}", parts.method, parts.uri.path())),
            },
            key: key_of(&token),
            csrf: state.csrf_for(&token),
            token,
        })
    }
}

/// Refuses a cross-site request: `Origin`, when the browser sends it, must be this host.
pub fn same_origin(headers: &HeaderMap) -> Result<(), Reject> {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if !matches!(site, "same-origin" | "none") {
            return Err(Reject::Forbidden(
                "refused: the form was not sent from this console".into(),
            ));
        }
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if origin == format!("https://{host}") {
        Ok(())
    } else {
        Err(Reject::Forbidden(
            "refused: the form was not sent from this console".into(),
        ))
    }
}

/// The fields of a posted form.
#[derive(Debug, Default)]
pub struct Fields(pub Vec<(String, String)>);

impl Fields {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A field's trimmed value; empty when absent.
    pub fn text(&self, name: &str) -> String {
        self.get(name).unwrap_or_default().trim().to_string()
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The page to go back to: a local path only.
    pub fn back(&self, default: &str) -> String {
        match self.get("back") {
            Some(b) if is_local_path(b) => b.to_string(),
            _ => default.to_string(),
        }
    }
}

/// Whether `b` is a path on this site that no browser reads as another host: it starts
/// with one `/`, and holds no backslash, control character or whitespace (browsers
/// drop tabs and newlines from URLs, so `/\t/evil.example` would become
/// `//evil.example`).
fn is_local_path(b: &str) -> bool {
    b.starts_with('/')
        && !b.starts_with("//")
        && !b
            .chars()
            .any(|c| c == '\\' || c.is_control() || c.is_whitespace())
}

/// A state-changing form from a logged-in visitor whose CSRF token was checked.
pub struct Posted {
    pub session: Session,
    pub fields: Fields,
}

impl FromRequest<Console> for Posted {
    type Rejection = Reject;

    async fn from_request(req: Request, state: &Console) -> Result<Self, Reject> {
        let (mut parts, body) = req.into_parts();
        same_origin(&parts.headers)?;
        let session = Session::from_request_parts(&mut parts, state).await?;
        let req = Request::from_parts(parts, body);
        let axum::Form(pairs) = axum::Form::<Vec<(String, String)>>::from_request(req, state)
            .await
            .map_err(|e| {
                let e = e.to_string();
                Reject::BadRequest(if e.contains("length limit") {
                    format!(
                        "the form is larger than the console takes ({} KiB); a larger indicator \
                         document goes through the API (`riposte admin task create`, up to {} MiB)",
                        FORM_LIMIT / 1024,
                        riposte_server::api::BODY_LIMIT / (1024 * 1024)
                    )
                } else {
                    format!("unreadable form: {e}")
                })
            })?;
        let fields = Fields(pairs);
        let given = fields.get("csrf").unwrap_or_default();
        if !state.csrf_ok(&session.token, given) {
            return Err(Reject::Forbidden(
                "refused: the form's security token (CSRF) is missing or wrong; reload the page and try again".into(),
            ));
        }
        Ok(Posted { session, fields })
    }
}

/// The `Set-Cookie` value of a new session.
pub fn session_cookie(token: &str, max_age_secs: i64) -> String {
    format!("{SESSION_COOKIE}={token}; Secure; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age_secs}")
}

/// The `Set-Cookie` value that ends a session.
pub fn clear_cookie() -> String {
    format!("{SESSION_COOKIE}=; Secure; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
}

/// Ends a session in the core and in memory.
pub async fn end_session(state: &Console, s: &Session) {
    let _ = state.core().logout(&s.token).await;
    forget(state, s);
}

/// Drops what the console keeps in memory for a session the server has already ended.
pub fn forget(state: &Console, s: &Session) {
    state.forget_session(&s.key);
}

/// Adds the security headers to every console response.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

fn asset(body: &'static str, kind: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "private, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// `GET /static/console.css`.
pub async fn css() -> Response {
    asset(CSS, "text/css; charset=utf-8")
}

/// `GET /static/console.js`.
pub async fn js() -> Response {
    asset(JS, "text/javascript; charset=utf-8")
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_paths_on_this_site_are_taken_as_where_to_go_back() {
        for ok in ["/", "/quarantine", "/devices/3?tab=quarantine"] {
            assert!(super::is_local_path(ok), "{ok}");
        }
        for bad in [
            "//evil.example",
            "/\t/evil.example",
            "/\n/evil.example",
            "/ /evil.example",
            "/\\evil.example",
            "https://evil.example",
            "evil",
            "",
        ] {
            assert!(!super::is_local_path(bad), "{bad:?}");
        }
    }
}
