//! The agent-side client of the sandbox protocol.
//!
//! Why failover and pinning here: agents run unattended; a sandbox server being down
//! must not stop submissions (try the next URL, back off, retry), and the only trust
//! anchor an agent has is the server certificate it was given (`cert.pem`), so TLS
//! accepts that exact certificate and nothing else.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::protocol::{PollResponse, SubmitResponse};
use crate::report::Report;
use crate::SandboxError;

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Sandbox base URLs (`https://host:port`), tried in order with failover.
    pub servers: Vec<String>,
    /// The server certificate to pin (PEM, e.g. the server's `DATA_DIR/cert.pem`).
    pub pinned_cert_pem: String,
    /// Per-request timeout (connect + upload + answer).
    pub timeout: Duration,
    /// Extra rounds over all servers after the first one fails.
    pub retries: u32,
    /// Initial pause between rounds; doubles each round.
    pub backoff: Duration,
    /// The device's certificate and key, presented to a sandbox that admits only
    /// enrolled agents.
    pub identity: Option<crate::tls::ClientIdentity>,
}

impl ClientConfig {
    /// Defaults: 30 s timeout, 2 retries, 500 ms initial backoff.
    pub fn new(servers: Vec<String>, pinned_cert_pem: String) -> Self {
        ClientConfig {
            servers,
            pinned_cert_pem,
            timeout: Duration::from_secs(30),
            retries: 2,
            backoff: Duration::from_millis(500),
            identity: None,
        }
    }
}

/// Result of a submission.
#[derive(Debug, Clone, PartialEq)]
pub enum Submitted {
    /// The server already has a verdict for this object.
    AlreadyScanned(Box<Report>),
    /// Queued; poll with this task id.
    Queued(String),
}

/// Result of a poll.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskStatus {
    /// Still being analysed.
    Processing,
    /// Malicious.
    Found {
        /// Threat name.
        threat_name: String,
        /// Report.
        report: Box<Report>,
    },
    /// Analysed and not malicious.
    NotFound(Box<Report>),
    /// The server reports an error for this task.
    Failed(String),
}

/// Client with failover over several sandbox servers.
#[derive(Debug)]
pub struct SandboxClient {
    http: reqwest::Client,
    servers: Vec<String>,
    preferred: AtomicUsize,
    task_servers: Mutex<HashMap<String, usize>>,
    retries: u32,
    backoff: Duration,
    /// The TLS settings, kept to probe a failed connection for a certificate refusal
    /// when the client presents one.
    identity_tls: Option<Arc<rustls::ClientConfig>>,
}

/// Why one attempt failed.
enum Attempt {
    /// Try the next server.
    Retry(String),
    /// Do not retry (the server judged the request).
    Fatal(SandboxError),
}

/// The TLS alert by which a server refused this client's certificate, if that is why
/// the request (or a probe) failed: a refusal waiting will not mend, unlike a network
/// outage.
fn certificate_refusal(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    use rustls::AlertDescription as A;
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = src {
        // An I/O error holds the TLS error as its payload rather than as its source.
        let tls = err.downcast_ref::<rustls::Error>().or_else(|| {
            err.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(rustls::Error::AlertReceived(alert)) = tls {
            if matches!(
                alert,
                A::BadCertificate
                    | A::UnsupportedCertificate
                    | A::CertificateRevoked
                    | A::CertificateExpired
                    | A::CertificateUnknown
                    | A::UnknownCA
                    | A::DecryptError
                    | A::AccessDenied
                    | A::CertificateRequired
            ) {
                return Some(format!("{alert:?}"));
            }
        }
        src = err.source();
    }
    None
}

/// Asks the sandbox at `base` whether it refuses this client's certificate, on a
/// connection of its own that sends nothing: the alert saying so, or `None` (admitted,
/// or no answer within two seconds).
///
/// Why: under TLS 1.3 a client finishes its side of the handshake before the server
/// has checked its certificate, so it learns of a refusal only while it sends its
/// request. The HTTP client then reports the connection as lost or reset and drops the
/// alert, and the refusal would be retried in silence as if it were an outage.
async fn refusal_on_probe(tls: Arc<rustls::ClientConfig>, base: &str) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let url = reqwest::Url::parse(base).ok()?;
    let port = url.port_or_known_default()?;
    let host = url.host_str()?;
    let address = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let name: rustls::pki_types::ServerName<'static> = match address.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.into(),
        Err(_) => address.clone().try_into().ok()?,
    };
    let probe = async {
        let tcp = tokio::net::TcpStream::connect((address.as_str(), port))
            .await
            .ok()?;
        let mut stream = match tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
        {
            Ok(stream) => stream,
            // TLS 1.2: the refusal ends the handshake itself.
            Err(e) => return certificate_refusal(&e),
        };
        let mut byte = [0u8; 1];
        match stream.read(&mut byte).await {
            Err(e) => certificate_refusal(&e),
            Ok(_) => None,
        }
    };
    tokio::time::timeout(Duration::from_secs(2), probe)
        .await
        .ok()
        .flatten()
}

fn describe(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    if e.is_timeout() {
        s.push_str(" (timed out)");
    }
    s
}

impl SandboxClient {
    /// Build a client; fails if the certificate PEM is unusable or no server is given.
    pub fn new(config: ClientConfig) -> Result<Self, SandboxError> {
        if config.servers.is_empty() {
            return Err(SandboxError::BadRequest(
                "give at least one sandbox server URL".into(),
            ));
        }
        let tls =
            crate::tls::pinned_client_config(&config.pinned_cert_pem, config.identity.as_ref())?;
        let identity_tls = config.identity.is_some().then(|| Arc::new(tls.clone()));
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .build()
            .map_err(|e| {
                SandboxError::Tls(format!("cannot build the HTTPS client: {}", describe(&e)))
            })?;
        Ok(SandboxClient {
            http,
            servers: config
                .servers
                .into_iter()
                .map(|s| s.trim_end_matches('/').to_string())
                .collect(),
            preferred: AtomicUsize::new(0),
            task_servers: Mutex::new(HashMap::new()),
            retries: config.retries,
            backoff: config.backoff,
            identity_tls,
        })
    }

    /// A failed request as an attempt's outcome: a certificate refused is final,
    /// anything else is tried again (another server, later).
    async fn send_failed(&self, base: &str, e: &reqwest::Error) -> Attempt {
        if let Some(alert) = certificate_refusal(e) {
            return Attempt::Fatal(SandboxError::CertificateRefused(alert));
        }
        if let Some(tls) = &self.identity_tls {
            if let Some(alert) = refusal_on_probe(tls.clone(), base).await {
                return Attempt::Fatal(SandboxError::CertificateRefused(alert));
            }
        }
        Attempt::Retry(describe(e))
    }

    /// Run `f` against servers starting at `first`, failing over and backing off.
    async fn with_failover<T, F, Fut>(&self, first: usize, f: F) -> Result<(usize, T), SandboxError>
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = Result<T, Attempt>>,
    {
        let n = self.servers.len();
        let mut errors = Vec::new();
        let mut pause = self.backoff;
        for round in 0..=self.retries {
            if round > 0 {
                tokio::time::sleep(pause).await;
                pause = pause.saturating_mul(2);
            }
            for k in 0..n {
                let i = (first + k) % n;
                match f(self.servers[i].clone()).await {
                    Ok(v) => {
                        self.preferred.store(i, Ordering::Relaxed);
                        return Ok((i, v));
                    }
                    Err(Attempt::Fatal(e)) => return Err(e),
                    Err(Attempt::Retry(msg)) => {
                        tracing::debug!(server = %self.servers[i], "sandbox request failed: {msg}");
                        errors.push(format!("{}: {msg}", self.servers[i]));
                    }
                }
            }
        }
        Err(SandboxError::Unreachable(errors.join("; ")))
    }

    /// Upload an object named `name`.
    pub async fn submit(&self, name: &str, bytes: &[u8]) -> Result<Submitted, SandboxError> {
        let body = bytes.to_vec();
        let first = self.preferred.load(Ordering::Relaxed);
        let (server, resp) = self
            .with_failover(first, |base| {
                let req = self
                    .http
                    .post(format!("{base}/sandbox/v1/tasks"))
                    .query(&[("name", name)])
                    .body(body.clone());
                async move {
                    let r = match req.send().await {
                        Ok(r) => r,
                        Err(e) => return Err(self.send_failed(&base, &e).await),
                    };
                    let status = r.status();
                    let parsed: Result<SubmitResponse, _> = r.json().await;
                    match parsed {
                        Ok(SubmitResponse::Error { .. }) if status.as_u16() == 401 => {
                            Err(Attempt::Fatal(SandboxError::NotAdmitted))
                        }
                        Ok(SubmitResponse::Error { .. }) if status.as_u16() == 403 => {
                            Err(Attempt::Fatal(SandboxError::Revoked))
                        }
                        Ok(SubmitResponse::Error { error }) if status.is_server_error() => {
                            Err(Attempt::Retry(format!("{status}: {error}")))
                        }
                        Ok(SubmitResponse::Error { error }) => Err(Attempt::Fatal(
                            SandboxError::Server(format!("{status}: {error}")),
                        )),
                        Ok(ok) => Ok(ok),
                        Err(e) => Err(Attempt::Retry(format!(
                            "{status}: unreadable answer: {}",
                            describe(&e)
                        ))),
                    }
                }
            })
            .await?;
        Ok(match resp {
            SubmitResponse::AlreadyScanned { report, .. } => Submitted::AlreadyScanned(report),
            SubmitResponse::Queued { task_id } => {
                self.task_servers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(task_id.clone(), server);
                Submitted::Queued(task_id)
            }
            SubmitResponse::Error { error } => return Err(SandboxError::Server(error)),
        })
    }

    /// Ask for a task's state (at the server that queued it first).
    pub async fn poll(&self, task_id: &str) -> Result<TaskStatus, SandboxError> {
        let first = self
            .task_servers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(task_id)
            .copied()
            .unwrap_or_else(|| self.preferred.load(Ordering::Relaxed));
        let (_, resp) = self
            .with_failover(first, |base| {
                let req = self.http.get(format!("{base}/sandbox/v1/tasks/{task_id}"));
                async move {
                    let r = match req.send().await {
                        Ok(r) => r,
                        Err(e) => return Err(self.send_failed(&base, &e).await),
                    };
                    let status = r.status();
                    match r.json::<PollResponse>().await {
                        // Not admitted: no other server of the list would say otherwise
                        // of this task, and the task itself has not failed.
                        Ok(PollResponse::Error { .. }) if status.as_u16() == 401 => {
                            Err(Attempt::Fatal(SandboxError::NotAdmitted))
                        }
                        Ok(PollResponse::Error { .. }) if status.as_u16() == 403 => {
                            Err(Attempt::Fatal(SandboxError::Revoked))
                        }
                        Ok(PollResponse::Error { error })
                            if status.is_server_error() || status.as_u16() == 404 =>
                        {
                            Err(Attempt::Retry(format!("{status}: {error}")))
                        }
                        Ok(p) => Ok(p),
                        Err(e) => Err(Attempt::Retry(format!(
                            "{status}: unreadable answer: {}",
                            describe(&e)
                        ))),
                    }
                }
            })
            .await?;
        Ok(match resp {
            PollResponse::Processing { .. } => TaskStatus::Processing,
            PollResponse::Found {
                threat_name,
                report,
                ..
            } => TaskStatus::Found {
                threat_name,
                report,
            },
            PollResponse::NotFound { report, .. } => TaskStatus::NotFound(report),
            PollResponse::Error { error } => TaskStatus::Failed(error),
        })
    }

    /// Poll every `interval` until the task leaves `Processing` or `deadline` passes.
    pub async fn wait(
        &self,
        task_id: &str,
        interval: Duration,
        deadline: Duration,
    ) -> Result<TaskStatus, SandboxError> {
        let start = std::time::Instant::now();
        loop {
            let s = self.poll(task_id).await?;
            if s != TaskStatus::Processing || start.elapsed() >= deadline {
                return Ok(s);
            }
            tokio::time::sleep(interval).await;
        }
    }
}
