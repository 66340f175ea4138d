//! Connector for a CAPEv2 server's REST API (`/apiv2/`).
//!
//! Why: sites with CAPE get Windows detonation for objects the built-in Linux jail
//! cannot run. Flow: `tasks/create/file/` → poll `tasks/status/{id}/` until
//! `reported` (`completed` only means the VM finished; the report is not written yet)
//! → `tasks/get/report/{id}/` → [`crate::importers::import_cape`].

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::report::Report;
use crate::SandboxError;

/// CAPEv2 API client.
#[derive(Debug, Clone)]
pub struct CapeClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl CapeClient {
    /// Client for `base_url` (e.g. `http://cape:8000`), with an optional API token.
    pub fn new(
        base_url: &str,
        token: Option<String>,
        timeout: Duration,
    ) -> Result<Self, SandboxError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| SandboxError::Cape(format!("cannot build the HTTP client: {e}")))?;
        Ok(CapeClient {
            http,
            base: format!("{}/apiv2", base_url.trim_end_matches('/')),
            token,
        })
    }

    fn auth(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => rb.header("Authorization", format!("Token {t}")),
            None => rb,
        }
    }

    async fn json(&self, rb: reqwest::RequestBuilder, what: &str) -> Result<Value, SandboxError> {
        let r = self
            .auth(rb)
            .send()
            .await
            .map_err(|e| SandboxError::Cape(format!("{what}: request failed: {e}")))?;
        let status = r.status();
        if status.as_u16() == 401 || status.as_u16() == 403 {
            return Err(SandboxError::Cape(format!(
                "{what}: {status}: check the API token (Authorization: Token ...)"
            )));
        }
        let v: Value = r.json().await.map_err(|e| {
            SandboxError::Cape(format!("{what}: {status}: answer is not JSON: {e}"))
        })?;
        if !status.is_success() || v["error"].as_bool() == Some(true) {
            let msg = v["error_value"]
                .as_str()
                .or(v["message"].as_str())
                .unwrap_or("");
            return Err(SandboxError::Cape(format!("{what}: {status}: {msg}")));
        }
        Ok(v)
    }

    /// Submit a file; returns the CAPE task id.
    pub async fn submit(&self, name: &str, bytes: &[u8]) -> Result<u64, SandboxError> {
        let part = reqwest::multipart::Part::bytes(bytes.to_vec()).file_name(name.to_string());
        let form = reqwest::multipart::Form::new().part("file", part);
        let v = self
            .json(
                self.http
                    .post(format!("{}/tasks/create/file/", self.base))
                    .multipart(form),
                "tasks/create/file",
            )
            .await?;
        v["data"]["task_ids"]
            .as_array()
            .and_then(|a| a.first())
            .and_then(Value::as_u64)
            .or_else(|| v["data"]["task_id"].as_u64())
            .ok_or_else(|| SandboxError::Cape(format!("tasks/create/file: no task id in {v}")))
    }

    /// Task status string (`pending`, `running`, `completed`, `reported`, `failed_*`).
    pub async fn status(&self, task_id: u64) -> Result<String, SandboxError> {
        let v = self
            .json(
                self.http
                    .get(format!("{}/tasks/status/{task_id}/", self.base)),
                "tasks/status",
            )
            .await?;
        v["data"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| SandboxError::Cape(format!("tasks/status: no status in {v}")))
    }

    /// Fetch and import the JSON report.
    pub async fn report(&self, task_id: u64) -> Result<Report, SandboxError> {
        let r = self
            .auth(
                self.http
                    .get(format!("{}/tasks/get/report/{task_id}/", self.base)),
            )
            .send()
            .await
            .map_err(|e| SandboxError::Cape(format!("tasks/get/report: request failed: {e}")))?;
        let status = r.status();
        let body = r
            .bytes()
            .await
            .map_err(|e| SandboxError::Cape(format!("tasks/get/report: {e}")))?;
        if !status.is_success() {
            return Err(SandboxError::Cape(format!(
                "tasks/get/report: {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            )));
        }
        crate::importers::import_cape(&body)
    }

    /// Submit, wait for `reported` (polling every `interval`, up to `deadline`), import.
    pub async fn analyse(
        &self,
        name: &str,
        bytes: &[u8],
        interval: Duration,
        deadline: Duration,
    ) -> Result<Report, SandboxError> {
        let id = self.submit(name, bytes).await?;
        let start = Instant::now();
        loop {
            let s = self.status(id).await?;
            match s.as_str() {
                "reported" => return self.report(id).await,
                s if s.starts_with("failed") => {
                    return Err(SandboxError::Cape(format!("task {id} ended as {s}")))
                }
                _ => {}
            }
            if start.elapsed() >= deadline {
                return Err(SandboxError::Cape(format!(
                    "task {id} not reported after {deadline:?} (last status {s}); raise the deadline"
                )));
            }
            tokio::time::sleep(interval).await;
        }
    }
}
