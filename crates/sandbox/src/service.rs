//! The sandbox HTTPS service: submission, polling, webhook, worker queue.
//!
//! Why this shape: submissions must return immediately (the agent is on a timer), so
//! they are queued on a bounded channel drained by a fixed number of workers; a full
//! queue is an explicit error rather than unbounded memory. Verdicts are keyed by
//! SHA-256 so the same object is analysed once fleet-wide. All state lives in the data
//! directory ([`crate::store`]) so a restart re-queues unfinished tasks. Handlers are
//! thin: they parse, call a method on [`App`], and map the result to JSON.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tokio::sync::{mpsc, watch};

use crate::dynamic::{is_runnable, DynamicAnalyzer, JailConfig};
use crate::protocol::{
    verify_webhook, PollResponse, SubmitResponse, WebhookVerdict, SIGNATURE_HEADER,
};
use crate::report::{FileIoc, Report};
use crate::revocation::{Accepting, CrlSource, TlsState};
use crate::static_analysis::{HashList, RuleEngine, StaticAnalyzer};
use crate::store::{Store, TaskRecord, TaskState, WebhookRecord};
use crate::util::{now_secs, uuid4, write_atomic};
use crate::SandboxError;

/// Default object size limit: 60 MB.
pub const DEFAULT_MAX_OBJECT_SIZE: u64 = 60 * 1024 * 1024;

/// Service configuration.
pub struct SandboxConfig {
    /// Data directory (certificate, webhook key, tasks, verdicts, hash lists in `hashes/`).
    pub data_dir: PathBuf,
    /// Largest accepted object in bytes.
    pub max_object_size: u64,
    /// Queue capacity (tasks waiting for a worker).
    pub queue_capacity: usize,
    /// Number of analysis workers.
    pub workers: usize,
    /// Run ELF programs and scripts in the bubblewrap jail.
    pub dynamic: bool,
    /// Jail limits.
    pub jail: JailConfig,
    /// Extra hash lists (`.hdb`, `.hsb`, `.csv`) besides `DATA_DIR/hashes/`.
    pub hash_lists: Vec<PathBuf>,
    /// Folder of extra YARA rules (`.yar`/`.yara`); `None` means `DATA_DIR/rules`.
    pub rules_dir: Option<PathBuf>,
    /// Extra rule engines besides the default rules.
    pub rule_engines: Vec<Box<dyn RuleEngine>>,
    /// Extra DNS names / IPs for the certificate.
    pub server_names: Vec<String>,
    /// The CA of the administration server (PEM): only clients presenting a certificate
    /// it issued (enrolled agents) may submit objects and read verdicts. `None` admits
    /// anyone who reaches the sandbox, who can then fill its queue and run what they
    /// like in its jail; `riposte sandbox` asks for that choice explicitly.
    pub client_ca_pem: Option<String>,
    /// Where the client CA's revocation list comes from ([`crate::revocation`]): a
    /// device the administration server revoked is then refused, in the handshake and on
    /// each request.
    /// `None` trusts every certificate the CA ever issued.
    pub client_crl: Option<CrlSource>,
    /// How often the revocation list is fetched again.
    pub crl_refresh: std::time::Duration,
}

impl std::fmt::Debug for SandboxConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxConfig")
            .field("data_dir", &self.data_dir)
            .field("max_object_size", &self.max_object_size)
            .field("queue_capacity", &self.queue_capacity)
            .field("workers", &self.workers)
            .field("dynamic", &self.dynamic)
            .field("hash_lists", &self.hash_lists)
            .field("client_crl", &self.client_crl)
            .finish_non_exhaustive()
    }
}

impl SandboxConfig {
    /// Defaults: 60 MB limit, queue of 64, 2 workers, dynamic analysis on.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        SandboxConfig {
            data_dir: data_dir.into(),
            max_object_size: DEFAULT_MAX_OBJECT_SIZE,
            queue_capacity: 64,
            workers: 2,
            dynamic: true,
            jail: JailConfig::default(),
            hash_lists: Vec::new(),
            rules_dir: None,
            rule_engines: Vec::new(),
            server_names: Vec::new(),
            client_ca_pem: None,
            client_crl: None,
            crl_refresh: crate::revocation::DEFAULT_REFRESH,
        }
    }
}

/// Static analysis, then dynamic analysis for runnable objects when available.
pub struct Pipeline {
    static_analyzer: StaticAnalyzer,
    dynamic: Option<DynamicAnalyzer>,
    dynamic_unavailable: Option<String>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("static", &self.static_analyzer)
            .field("dynamic", &self.dynamic.is_some())
            .field("dynamic_unavailable", &self.dynamic_unavailable)
            .finish()
    }
}

impl Pipeline {
    /// Pipeline with `static_analyzer`; `dynamic` is probed, and if the jail cannot be
    /// created the reason is kept and recorded in every report.
    pub async fn new(static_analyzer: StaticAnalyzer, dynamic: Option<DynamicAnalyzer>) -> Self {
        let (dynamic, dynamic_unavailable) = match dynamic {
            None => (
                None,
                Some("dynamic analysis disabled by configuration".to_string()),
            ),
            Some(d) => match d.probe().await {
                Ok(()) => (Some(d), None),
                Err(e) => {
                    tracing::warn!("dynamic analysis unavailable: {e}");
                    (None, Some(e.to_string()))
                }
            },
        };
        Pipeline {
            static_analyzer,
            dynamic,
            dynamic_unavailable,
        }
    }

    /// Analyse one object.
    pub async fn analyse(self: &Arc<Self>, name: &str, data: Arc<Vec<u8>>) -> Report {
        let this = self.clone();
        let (n, d) = (name.to_string(), data.clone());
        let mut report =
            match tokio::task::spawn_blocking(move || this.static_analyzer.analyse(&n, &d)).await {
                Ok(r) => r,
                Err(e) => {
                    let mut r = Report::new("riposte-static", name);
                    r.notes.push(format!("static analysis crashed: {e}"));
                    r.iocs.object = Some(FileIoc::from_bytes(Some(name.to_string()), &data));
                    r
                }
            };
        if report.verdict.is_malicious() || !is_runnable(&data) {
            return report.finalize();
        }
        match &self.dynamic {
            Some(dynamic) => match dynamic.run(name, &data).await {
                Ok(b) => {
                    report.source = "riposte-static+dynamic".into();
                    crate::dynamic::apply_behaviour(&mut report, &b);
                }
                Err(e) => report.notes.push(format!(
                    "dynamic analysis failed ({e}); verdict from static analysis only"
                )),
            },
            None => report.notes.push(format!(
                "dynamic analysis not run: {}; verdict from static analysis only",
                self.dynamic_unavailable.as_deref().unwrap_or("unavailable")
            )),
        }
        report.finalize()
    }
}

/// The revocation list enrolled clients are judged by: none while it has not been
/// loaded yet or has expired without a fresh one, when whoever asks is told to retry.
fn list_in_force(tls: &TlsState) -> Result<Arc<crate::revocation::RevocationList>, SandboxError> {
    match tls.current().list {
        None => Err(SandboxError::RevocationUnknown(
            "its revocation list has not been loaded yet".into(),
        )),
        Some(list) if list.next_update <= crate::util::now_secs() as i64 => {
            Err(SandboxError::RevocationUnknown(
                "its revocation list has expired and no fresh one could be fetched".into(),
            ))
        }
        Some(list) => Ok(list),
    }
}

/// What becomes of a queued task at its turn ([`App::submitters_standing`]).
enum Standing {
    Analyse,
    /// Not until a revocation list is in force: back in the queue a little later.
    Wait,
    /// Not at all, for this reason.
    Drop(String),
}

/// How long a task whose submitters cannot be checked yet waits before its next turn.
const STANDING_RETRY: std::time::Duration = std::time::Duration::from_secs(2);

/// Shared service state (explicit state for the handlers).
pub struct App {
    store: Store,
    pipeline: Arc<Pipeline>,
    queue: mpsc::Sender<String>,
    capacity: usize,
    max_object_size: u64,
    webhook_key: Vec<u8>,
    pending: Mutex<HashMap<String, String>>,
    /// Submissions and polls need a verified client certificate.
    clients_must_be_enrolled: bool,
    /// The revocation list in force, where one is required.
    revocation: Option<TlsState>,
}

/// What the TLS layer established about the client of a connection (set per connection
/// by [`serve`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientStanding {
    /// No client certificate.
    Anonymous,
    /// A certificate that chains to the client CA (the handshake refuses any other), with
    /// its serial number, which each request checks against the list in force.
    Certified(Vec<u8>),
}

impl App {
    /// Refuses a request from a client that is not admitted (see
    /// [`SandboxConfig::client_ca_pem`]): each request, not only the handshake, so that a
    /// device revoked since it connected is refused on its open connection too. Returns
    /// the admitted client's certificate serial, where enrolled clients are required.
    fn admit(
        &self,
        client: Option<axum::Extension<ClientStanding>>,
    ) -> Result<Option<Vec<u8>>, SandboxError> {
        if !self.clients_must_be_enrolled {
            return Ok(None);
        }
        let serial = match client.map(|axum::Extension(s)| s) {
            Some(ClientStanding::Certified(serial)) => serial,
            Some(ClientStanding::Anonymous) | None => return Err(SandboxError::NotAdmitted),
        };
        let Some(tls) = &self.revocation else {
            return Ok(Some(serial));
        };
        if list_in_force(tls)?.revokes(&serial) {
            return Err(SandboxError::Revoked);
        }
        Ok(Some(serial))
    }

    /// Whether a queued task is analysed now: not if every device that submitted it has
    /// been revoked since (a revoked device's key may be in other hands, and what it
    /// queued is theirs to run in the jail), and not yet while no usable list is in
    /// force to tell (a task queued before a restart, when the list's server is not up
    /// yet). Anonymous submissions and sandboxes without a list go ahead.
    fn submitters_standing(&self, task: &TaskRecord) -> Standing {
        let Some(tls) = &self.revocation else {
            return Standing::Analyse;
        };
        if task.submitters.is_empty() {
            return Standing::Analyse;
        }
        let Ok(list) = list_in_force(tls) else {
            return Standing::Wait;
        };
        let all_revoked = task
            .submitters
            .iter()
            .all(|s| hex::decode(s).is_ok_and(|serial| list.revokes(&serial)));
        if all_revoked {
            Standing::Drop(
                "every device that submitted it was revoked before its turn came".to_string(),
            )
        } else {
            Standing::Analyse
        }
    }
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl App {
    /// Accept an object: known verdict, already-queued task, or a new task.
    pub fn submit(&self, name: &str, data: &[u8]) -> Result<SubmitResponse, SandboxError> {
        self.submit_from(name, data, None)
    }

    /// [`App::submit`] for the device whose certificate has serial `submitter`, which
    /// the task records ([`TaskRecord::submitters`]).
    pub fn submit_from(
        &self,
        name: &str,
        data: &[u8],
        submitter: Option<&[u8]>,
    ) -> Result<SubmitResponse, SandboxError> {
        let submitter = submitter.map(hex::encode);
        let object = FileIoc::from_bytes(Some(name.to_string()), data);
        if let Some(r) = self.store.verdict(&object.sha256)? {
            return Ok(SubmitResponse::AlreadyScanned {
                sha256: object.sha256,
                verdict: r.verdict,
                threat_name: r.threat_name.clone(),
                report: Box::new(r),
            });
        }
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(id) = pending.get(&object.sha256) {
            // Another device wants it too: it is analysed unless every one that asked
            // is revoked.
            if let (Some(submitter), Some(mut task)) = (submitter, self.store.task(id)?) {
                if task.state == TaskState::Queued && !task.submitters.contains(&submitter) {
                    task.submitters.push(submitter);
                    self.store.put_task(&task)?;
                }
            }
            return Ok(SubmitResponse::Queued {
                task_id: id.clone(),
            });
        }
        let permit = self
            .queue
            .try_reserve()
            .map_err(|_| SandboxError::QueueFull {
                capacity: self.capacity,
            })?;
        let id = uuid4();
        self.store.put_object(&id, data)?;
        self.store.put_task(&TaskRecord {
            id: id.clone(),
            name: name.to_string(),
            sha256: object.sha256.clone(),
            size: object.size,
            state: TaskState::Queued,
            submitted_at: now_secs(),
            finished_at: None,
            report: None,
            error: None,
            submitters: submitter.into_iter().collect(),
        })?;
        pending.insert(object.sha256, id.clone());
        permit.send(id.clone());
        Ok(SubmitResponse::Queued { task_id: id })
    }

    /// State of a task.
    pub fn poll(&self, id: &str) -> Result<PollResponse, SandboxError> {
        let t = self
            .store
            .task(id)?
            .ok_or_else(|| SandboxError::UnknownTask(id.to_string()))?;
        Ok(match (t.state, t.report) {
            (TaskState::Done, Some(report)) if report.verdict.is_malicious() => {
                PollResponse::Found {
                    task_id: t.id,
                    threat_name: report
                        .threat_name
                        .clone()
                        .unwrap_or_else(|| "Malicious".into()),
                    report: Box::new(report),
                }
            }
            (TaskState::Done, Some(report)) => PollResponse::NotFound {
                task_id: t.id,
                report: Box::new(report),
            },
            (TaskState::Failed, _) | (TaskState::Done, None) => PollResponse::Error {
                error: format!(
                    "analysis of task {} failed: {}; resubmit the object",
                    t.id,
                    t.error.unwrap_or_else(|| "no report".into())
                ),
            },
            _ => PollResponse::Processing { task_id: t.id },
        })
    }

    /// Verify and record a webhook verdict.
    pub fn webhook(&self, signature: Option<&str>, body: &[u8]) -> Result<(), SandboxError> {
        let sig = signature.ok_or(SandboxError::BadSignature)?;
        if !verify_webhook(&self.webhook_key, body, sig) {
            return Err(SandboxError::BadSignature);
        }
        let v: WebhookVerdict = serde_json::from_slice(body)
            .map_err(|e| SandboxError::BadRequest(format!("webhook body is not a verdict: {e}")))?;
        let sha = v.sha256.to_ascii_lowercase();
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(SandboxError::BadRequest(
                "sha256 must be 64 hex digits".into(),
            ));
        }
        if v.device_id.is_empty() || v.source.is_empty() {
            return Err(SandboxError::BadRequest(
                "device_id and source are required".into(),
            ));
        }
        self.store.add_webhook(&WebhookRecord {
            device_id: v.device_id.clone(),
            sha256: sha.clone(),
            verdict: v.verdict,
            threat_name: v.threat_name.clone(),
            source: v.source.clone(),
            received_at: now_secs(),
        })?;
        let existing = self.store.verdict(&sha)?;
        if existing.as_ref().is_none_or(|r| v.verdict > r.verdict) {
            let mut report = v.report.unwrap_or_else(|| Report::new(&v.source, ""));
            report.source = format!("webhook:{}", v.source);
            report.verdict = v.verdict;
            report.threat_name = v.threat_name;
            if report.iocs.object.is_none() {
                report.iocs.object = Some(FileIoc {
                    sha256: sha.clone(),
                    ..Default::default()
                });
            }
            self.store.put_verdict(&sha, &report.finalize())?;
        }
        Ok(())
    }

    async fn process(&self, id: &str) {
        let Ok(Some(mut task)) = self.store.task(id) else {
            tracing::warn!(task = id, "queued task vanished from the store");
            return;
        };
        let data = match self.store.object(id) {
            Ok(Some(d)) => d,
            other => {
                task.state = TaskState::Failed;
                task.error = Some(match other {
                    Err(e) => e.to_string(),
                    _ => "object bytes missing from the data directory".into(),
                });
                let _ = self.store.put_task(&task);
                self.finish(&task.sha256);
                return;
            }
        };
        // Read again under the lock submissions take: a device that asked for the same
        // object a moment ago is among the submitters judged.
        let standing = {
            let _pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            if let Ok(Some(fresh)) = self.store.task(id) {
                task = fresh;
            }
            self.submitters_standing(&task)
        };
        if let Standing::Wait = standing {
            tracing::debug!(task = id, "waiting for a revocation list before analysing");
            let queue = self.queue.clone();
            let id = id.to_string();
            tokio::spawn(async move {
                tokio::time::sleep(STANDING_RETRY).await;
                let _ = queue.send(id).await;
            });
            return;
        }
        if let Standing::Drop(why) = standing {
            tracing::info!(task = id, sha256 = %task.sha256, "not analysed: {why}");
            task.state = TaskState::Failed;
            task.error = Some(why);
            task.finished_at = Some(now_secs());
            if let Err(e) = self.store.put_task(&task) {
                tracing::error!(task = id, "cannot save task: {e}");
            }
            self.store.remove_object(id);
            self.finish(&task.sha256);
            return;
        }
        task.state = TaskState::Processing;
        let _ = self.store.put_task(&task);
        let report = self.pipeline.analyse(&task.name, Arc::new(data)).await;
        let saved = self.store.put_verdict(&task.sha256, &report);
        task.finished_at = Some(now_secs());
        match saved {
            Ok(()) => {
                task.state = TaskState::Done;
                task.report = Some(report);
            }
            Err(e) => {
                task.state = TaskState::Failed;
                task.error = Some(e.to_string());
            }
        }
        if let Err(e) = self.store.put_task(&task) {
            tracing::error!(task = id, "cannot save task: {e}");
        }
        self.store.remove_object(id);
        self.finish(&task.sha256);
    }

    fn finish(&self, sha256: &str) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(sha256);
    }
}

fn error_status(e: &SandboxError) -> StatusCode {
    match e {
        SandboxError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        SandboxError::QueueFull { .. } | SandboxError::RevocationUnknown(_) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        SandboxError::UnknownTask(_) => StatusCode::NOT_FOUND,
        SandboxError::BadSignature | SandboxError::NotAdmitted => StatusCode::UNAUTHORIZED,
        SandboxError::Revoked => StatusCode::FORBIDDEN,
        SandboxError::BadRequest(_) | SandboxError::Truncated { .. } => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// `Retry-After` for a refusal that passes soon: the refresher asks every few seconds
/// while no usable list is in force.
fn retry_after(e: &SandboxError) -> Option<[(header::HeaderName, &'static str); 1]> {
    matches!(e, SandboxError::RevocationUnknown(_)).then_some([(header::RETRY_AFTER, "10")])
}

fn error_response(e: SandboxError) -> Response {
    (
        error_status(&e),
        retry_after(&e),
        Json(SubmitResponse::Error {
            error: e.to_string(),
        }),
    )
        .into_response()
}

/// Read a body, enforcing `limit` and the announced Content-Length.
async fn read_body(headers: &HeaderMap, body: Body, limit: u64) -> Result<Vec<u8>, SandboxError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared {
        if n > limit {
            return Err(SandboxError::TooLarge { size: n, limit });
        }
    }
    let cap = usize::try_from(limit).unwrap_or(usize::MAX);
    match axum::body::to_bytes(body, cap).await {
        Ok(b) => {
            if let Some(n) = declared {
                if b.len() as u64 != n {
                    return Err(SandboxError::Truncated {
                        detail: format!(
                            "Content-Length announced {n} bytes but {} arrived",
                            b.len()
                        ),
                    });
                }
            }
            Ok(b.to_vec())
        }
        Err(e) => {
            let msg = format!("{e}");
            let chain = std::error::Error::source(&e)
                .map(|s| s.to_string())
                .unwrap_or_default();
            if declared.is_none()
                && (msg.contains("length limit") || chain.contains("length limit"))
            {
                Err(SandboxError::TooLarge {
                    size: limit + 1,
                    limit,
                })
            } else {
                Err(SandboxError::Truncated {
                    detail: format!(
                        "the connection ended before the {} announced bytes arrived ({msg}{}{chain})",
                        declared.map(|n| n.to_string()).unwrap_or_else(|| "chunked".into()),
                        if chain.is_empty() { "" } else { ": " }
                    ),
                })
            }
        }
    }
}

#[derive(Debug, Deserialize)]
struct SubmitQuery {
    name: Option<String>,
}

async fn submit_handler(
    State(app): State<Arc<App>>,
    client: Option<axum::Extension<ClientStanding>>,
    query: Result<Query<SubmitQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let submitter = match app.admit(client) {
        Ok(serial) => serial,
        Err(e) => return error_response(e),
    };
    let name = match query
        .ok()
        .and_then(|Query(q)| q.name)
        .filter(|n| !n.is_empty())
    {
        Some(n) if n.len() <= 1024 => n,
        _ => {
            return error_response(SandboxError::BadRequest(
                "pass the object's file name as ?name=FILENAME (1..=1024 bytes)".into(),
            ))
        }
    };
    // A file name, as agents send it (`path_text`: control and invisible characters as
    // `\xHH`): it is shown in reports and logs, and must not fake a line there nor
    // read as a path.
    if name == "."
        || name == ".."
        || name.contains('/')
        || name.chars().any(riposte_model::path_text::hidden)
    {
        return error_response(SandboxError::BadRequest(format!(
            "'{}' is not a file name: no '/', no '.' or '..', and control or invisible \
             characters written \\xHH",
            riposte_model::path_text::shown(&name)
        )));
    }
    let data = match read_body(&headers, body, app.max_object_size).await {
        Ok(d) => d,
        Err(e) => return error_response(e),
    };
    // Hashing and the fsync'd write of up to 60 MB are blocking work.
    let result =
        tokio::task::spawn_blocking(move || app.submit_from(&name, &data, submitter.as_deref()))
            .await;
    match result {
        Ok(Ok(r)) => Json(r).into_response(),
        Ok(Err(e)) => error_response(e),
        Err(e) => error_response(SandboxError::Server(format!("submission task failed: {e}"))),
    }
}

async fn poll_handler(
    State(app): State<Arc<App>>,
    client: Option<axum::Extension<ClientStanding>>,
    Path(task_id): Path<String>,
) -> Response {
    match app.admit(client).and_then(|_| app.poll(&task_id)) {
        Ok(r) => Json(r).into_response(),
        Err(e) => {
            let status = error_status(&e);
            (
                status,
                retry_after(&e),
                Json(PollResponse::Error {
                    error: e.to_string(),
                }),
            )
                .into_response()
        }
    }
}

async fn webhook_handler(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Response {
    let data = match read_body(&headers, body, 8 << 20).await {
        Ok(d) => d,
        Err(e) => return error_response(e),
    };
    let sig = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    match app.webhook(sig, &data) {
        Ok(()) => Json(serde_json::json!({"status": "recorded"})).into_response(),
        Err(e) => error_response(e),
    }
}

/// What `GET /` and an unknown path answer: the routes there are, so that the API can
/// be found from the service itself.
fn routes_index() -> serde_json::Value {
    serde_json::json!({
        "service": "riposte-sandbox",
        "routes": {
            "POST /sandbox/v1/tasks?name=NAME": "submit an object (the request body); answers the task id, or the report of content already analysed",
            "GET /sandbox/v1/tasks/{task_id}": "a task's state and, once done, its report",
            "POST /sandbox/v1/webhook": "an external sandbox's report, signed with HMAC-SHA256 of webhook.key in the X-Riposte-Signature header",
        }
    })
}

async fn index_handler() -> Response {
    Json(routes_index()).into_response()
}

async fn not_found_handler() -> Response {
    let mut body = routes_index();
    body["error"] = serde_json::json!("no such route");
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}

/// The HTTP routes over `app`.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(index_handler))
        .route("/sandbox/v1/tasks", post(submit_handler))
        .route("/sandbox/v1/tasks/{task_id}", get(poll_handler))
        .route("/sandbox/v1/webhook", post(webhook_handler))
        .fallback(not_found_handler)
        .with_state(app)
}

/// A running service. Dropping it (or calling [`ServeHandle::shutdown`]) stops the
/// accept loop and the workers; keep it alive for as long as the service should run.
#[derive(Debug)]
pub struct ServeHandle {
    /// Bound address.
    pub addr: SocketAddr,
    /// The server certificate (PEM) for clients to pin.
    pub cert_pem: String,
    /// The webhook HMAC key (contents of `DATA_DIR/webhook.key`).
    pub webhook_key: Vec<u8>,
    /// The shared state (for in-process callers such as `riposte up`).
    pub app: Arc<App>,
    shutdown: watch::Sender<bool>,
    accept: tokio::task::JoinHandle<()>,
    /// The analysis workers, waited for at shutdown (each finishes the object it holds).
    workers: Vec<tokio::task::JoinHandle<()>>,
    /// `DATA_DIR/sandbox.lock`, locked while this sandbox serves it: until its workers
    /// have stopped (each holds it too), so that a sandbox started after
    /// [`ServeHandle::shutdown`], or after the handle is dropped, never analyses an
    /// object beside one of them.
    _lock: Arc<std::fs::File>,
}

impl ServeHandle {
    /// Stop accepting connections and stop the workers.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.accept.await;
        for worker in self.workers {
            let _ = worker.await;
        }
    }

    /// Wait until the accept loop ends (it runs until [`ServeHandle::shutdown`]).
    pub async fn wait(&mut self) {
        let _ = (&mut self.accept).await;
    }
}

fn load_or_create_webhook_key(dir: &std::path::Path) -> Result<Vec<u8>, SandboxError> {
    let path = dir.join("webhook.key");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().as_bytes().to_vec()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(SandboxError::io("read", &path, e)),
    }
    let mut b = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut b);
    let key = hex::encode(b);
    write_atomic(&path, key.as_bytes(), Some(0o600))?;
    Ok(key.into_bytes())
}

/// The default rule engine: YARA (default rules + `rules_dir`) when built with the
/// `yara` feature, else the native implementation of the default rules.
pub fn default_engines(
    rules_dir: &std::path::Path,
) -> Result<Vec<Box<dyn RuleEngine>>, SandboxError> {
    #[cfg(feature = "yara")]
    {
        let mut y = crate::static_analysis::YaraEngine::with_default_rules()?;
        y.load_dir(rules_dir)?;
        for w in y.warnings() {
            tracing::warn!("YARA: {w}");
        }
        Ok(vec![Box::new(y)])
    }
    #[cfg(not(feature = "yara"))]
    {
        if rules_dir.exists() {
            tracing::warn!(
                "{} ignored: built without the yara feature",
                rules_dir.display()
            );
        }
        Ok(vec![Box::new(crate::static_analysis::BuiltinRules)])
    }
}

/// Fetches the revocation list again and again, and swaps the TLS configuration when
/// it arrives.
struct Refresher {
    source: CrlSource,
    http: reqwest::Client,
    state: TlsState,
    cert_pem: String,
    key_pem: String,
    client_ca_pem: String,
}

impl Refresher {
    async fn run(self, every: std::time::Duration, mut stop: watch::Receiver<bool>) {
        // When fetching began to fail, and what was last said of it, when.
        let mut failing: Option<(std::time::Instant, String, std::time::Instant)> = None;
        let mut said_expired = false;
        loop {
            let in_force = self.state.current().list;
            let now_secs = crate::util::now_secs() as i64;
            let usable = in_force
                .as_ref()
                .filter(|l| l.next_update > now_secs)
                .is_some();
            if in_force.is_some() && !usable && !said_expired {
                said_expired = true;
                tracing::warn!(
                    source = %self.source,
                    "the revocation list in force has expired: enrolled devices are asked to retry until a fresh one arrives"
                );
            }
            // While no usable list is in force, enrolled devices are turned away: ask
            // often.
            let wait = if usable {
                every
            } else {
                every.min(std::time::Duration::from_secs(5))
            };
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            let built = crate::revocation::fetch(&self.source, &self.http, &self.client_ca_pem)
                .await
                .and_then(|list| match &in_force {
                    Some(current) => list
                        .may_follow(current)
                        .map(|()| list)
                        .map_err(|e| format!("{}: {e}", self.source)),
                    None => Ok(list),
                })
                .and_then(|list| {
                    crate::tls::server_config(
                        &self.cert_pem,
                        &self.key_pem,
                        Some(&self.client_ca_pem),
                        Some(vec![list.der.clone()]),
                    )
                    .map(|config| (config, list))
                    .map_err(|e| e.to_string())
                });
            match built {
                Ok((config, list)) => {
                    said_expired = false;
                    if failing.take().is_some() {
                        tracing::info!(source = %self.source, "revocation list fetched again");
                    }
                    self.state.replace(Accepting {
                        config: Arc::new(config),
                        list: Some(Arc::new(list)),
                    });
                }
                Err(e) => {
                    // Said at once, again when the cause changes, else hourly: a server
                    // down for a day should not fill the log.
                    let now = std::time::Instant::now();
                    let (since, last, said) =
                        failing.get_or_insert_with(|| (now, String::new(), now));
                    if *last != e || now.duration_since(*said).as_secs() >= 3600 {
                        *said = now;
                        last.clone_from(&e);
                        let standing = if usable {
                            "the last good list stays in force until its nextUpdate"
                        } else {
                            "no usable list is in force: enrolled devices are asked to retry"
                        };
                        tracing::warn!(
                            "cannot refresh the revocation list ({e}), for {} min now; {standing}",
                            now.duration_since(*since).as_secs() / 60
                        );
                    }
                }
            }
        }
    }
}

/// Start the service on `listener` (bind port 0 in tests). Creates the certificate
/// and webhook key on first start, re-queues unfinished tasks, and spawns the workers.
pub async fn serve(
    config: SandboxConfig,
    listener: tokio::net::TcpListener,
) -> Result<ServeHandle, SandboxError> {
    let dir = config.data_dir.clone();
    std::fs::create_dir_all(&dir).map_err(|e| SandboxError::io("create", &dir, e))?;
    // It holds the objects devices sent (malware, and whatever else a device judged
    // suspicious: someone's documents), their verdicts, and the TLS and webhook keys:
    // no other local account has anything to read there.
    // Where this account may not change it (a directory another account owns and lends
    // it), the sandbox still starts, and says so.
    {
        use std::os::unix::fs::PermissionsExt;
        if let Err(e) = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)) {
            tracing::warn!(
                "cannot make {} private to this account (mode 0700): {e}; objects devices \
                 sent are kept there",
                dir.display()
            );
        }
    }
    // One process per data directory: a second would queue the first one's unfinished
    // tasks again, analyse each object twice and race it on every file here. Held until
    // the handle (and its accept loop) is gone; the kernel lets go however it ends.
    let lock_path = dir.join("sandbox.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| SandboxError::io("open", &lock_path, e))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Err(SandboxError::DataDirInUse(dir)),
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(SandboxError::io("lock", &lock_path, e))
        }
    }
    let store = Store::open(&dir)?;
    let (cert_pem, key_pem) = crate::tls::load_or_create(&dir, &config.server_names)?;
    let revocation = match (&config.client_ca_pem, &config.client_crl) {
        (Some(ca), Some(source)) => Some((
            source.clone(),
            crate::revocation::ca_client(ca)?,
            ca.clone(),
        )),
        _ => None,
    };
    let first_list = match &revocation {
        None => None,
        Some((source, http, ca)) => match crate::revocation::fetch(source, http, ca).await {
            Ok(crls) => Some(crls),
            // A file is the administrator's to mend now; a server may simply not be up
            // yet, and the refresher keeps asking.
            Err(e) if matches!(source, CrlSource::File(_)) => {
                return Err(SandboxError::Tls(format!(
                    "cannot read the revocation list: {e}"
                )))
            }
            Err(e) => {
                tracing::warn!(
                    "cannot fetch the revocation list yet ({e}); enrolled agents are asked to retry until it arrives"
                );
                None
            }
        },
    };
    let tls_state = TlsState::new(
        Arc::new(crate::tls::server_config(
            &cert_pem,
            &key_pem,
            config.client_ca_pem.as_deref(),
            first_list.as_ref().map(|l| vec![l.der.clone()]),
        )?),
        first_list.map(Arc::new),
    );
    let webhook_key = load_or_create_webhook_key(&dir)?;

    let mut hashes = HashList::new();
    hashes.load_dir(&dir.join("hashes"))?;
    for p in &config.hash_lists {
        hashes.load_file(p)?;
    }
    let rules_dir = config
        .rules_dir
        .clone()
        .unwrap_or_else(|| dir.join("rules"));
    let mut engines = default_engines(&rules_dir)?;
    engines.extend(config.rule_engines);
    let static_analyzer = StaticAnalyzer::new(hashes, engines);
    let dynamic = config
        .dynamic
        .then(|| DynamicAnalyzer::new(config.jail.clone()));
    let pipeline = Arc::new(Pipeline::new(static_analyzer, dynamic).await);

    // Re-queue unfinished tasks first so they get queue slots before new submissions.
    let unfinished: Vec<TaskRecord> = store
        .tasks()?
        .into_iter()
        .filter(|t| matches!(t.state, TaskState::Queued | TaskState::Processing))
        .collect();
    let capacity = config.queue_capacity.max(1).max(unfinished.len());
    let (tx, rx) = mpsc::channel::<String>(capacity);
    let mut pending = HashMap::new();
    for t in &unfinished {
        pending.insert(t.sha256.clone(), t.id.clone());
        if tx.try_send(t.id.clone()).is_err() {
            tracing::warn!(task = %t.id, "cannot re-queue task");
        }
    }
    let app = Arc::new(App {
        store,
        pipeline,
        queue: tx,
        capacity: config.queue_capacity.max(1),
        max_object_size: config.max_object_size,
        webhook_key: webhook_key.clone(),
        pending: Mutex::new(pending),
        clients_must_be_enrolled: config.client_ca_pem.is_some(),
        revocation: revocation.is_some().then(|| tls_state.clone()),
    });

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    // Each worker holds the lock too: a handle dropped without `shutdown` stops them
    // (its sender goes), but one may still be finishing an object, and the directory is
    // not free until it has.
    let lock = Arc::new(lock);
    let mut workers = Vec::new();
    for _ in 0..config.workers.max(1) {
        let (app, rx, mut stop) = (app.clone(), rx.clone(), shutdown_rx.clone());
        let held = lock.clone();
        workers.push(tokio::spawn(async move {
            let _held = held;
            loop {
                let id = tokio::select! {
                    _ = stop.changed() => break,
                    id = async { rx.lock().await.recv().await } => id,
                };
                match id {
                    Some(id) => app.process(&id).await,
                    None => break,
                }
            }
        }));
    }

    let addr = listener
        .local_addr()
        .map_err(|e| SandboxError::io("read the address of", PathBuf::from("listener"), e))?;
    if let Some((source, http, client_ca_pem)) = revocation {
        let refresher = Refresher {
            source,
            http,
            state: tls_state.clone(),
            cert_pem: cert_pem.clone(),
            key_pem: key_pem.to_string(),
            client_ca_pem,
        };
        tokio::spawn(refresher.run(config.crl_refresh, shutdown_rx.clone()));
    }
    let routes = router(app.clone());
    let mut stop = shutdown_rx;
    let accept = tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                _ = stop.changed() => break,
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(tls_state.current().config);
            let routes = routes.clone();
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(
                    std::time::Duration::from_secs(10),
                    acceptor.accept(tcp),
                )
                .await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        // A revoked or foreign certificate is worth an administrator's
                        // eye; a scanner's half-open connection is not.
                        let refused = e
                            .get_ref()
                            .and_then(|e| e.downcast_ref::<rustls::Error>())
                            .is_some_and(|e| matches!(e, rustls::Error::InvalidCertificate(_)));
                        if refused {
                            tracing::info!(peer = %peer, "client certificate refused: {e}");
                        } else {
                            tracing::debug!("TLS handshake failed: {e}");
                        }
                        return;
                    }
                    Err(_) => return,
                };
                // A certificate that reached this point chained to the client CA and
                // was not on the list in force: the handshake refuses any other.
                // One whose serial cannot be read could not be checked against the
                // list: it counts as none.
                let standing = match tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|certs| certs.first())
                    .and_then(|c| crate::revocation::certificate_serial(c))
                {
                    None => ClientStanding::Anonymous,
                    Some(serial) => ClientStanding::Certified(serial),
                };
                let svc = hyper_util::service::TowerToHyperService::new(
                    routes.layer(axum::Extension(standing)),
                );
                let builder = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                );
                if let Err(e) = builder
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await
                {
                    tracing::debug!("connection error: {e}");
                }
            });
        }
    });
    Ok(ServeHandle {
        addr,
        cert_pem,
        webhook_key,
        app,
        shutdown: shutdown_tx,
        accept,
        workers,
        _lock: lock,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(
            error_status(&SandboxError::BadSignature),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            error_status(&SandboxError::TooLarge { size: 2, limit: 1 }),
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }
}
