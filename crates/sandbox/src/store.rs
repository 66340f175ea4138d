//! Persistence of tasks, verdicts, queued objects and webhook records in the data
//! directory, one JSON file per record written atomically.
//!
//! Why files: the sandbox is a single process whose state is small and append-mostly;
//! atomic rename gives crash safety without a database, and a restart simply rescans
//! the directory to re-queue unfinished tasks.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::report::{Report, Verdict};
use crate::util::write_atomic;
use crate::SandboxError;

/// Life cycle of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting in the queue.
    Queued,
    /// A worker is analysing it.
    Processing,
    /// Finished with a report.
    Done,
    /// Analysis failed; `error` says why.
    Failed,
}

/// A task as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// Task id.
    pub id: String,
    /// Submitted name.
    pub name: String,
    /// Object SHA-256.
    pub sha256: String,
    /// Object size.
    pub size: u64,
    /// State.
    pub state: TaskState,
    /// Submission time (Unix seconds).
    pub submitted_at: u64,
    /// Completion time.
    #[serde(default)]
    pub finished_at: Option<u64>,
    /// Report once done.
    #[serde(default)]
    pub report: Option<Report>,
    /// Error once failed.
    #[serde(default)]
    pub error: Option<String>,
    /// The serial numbers (hex) of the device certificates it was submitted with, where
    /// the sandbox admits enrolled devices only: if every one of them is revoked before
    /// the object's turn comes, it is not analysed. Empty for anonymous submissions.
    #[serde(default)]
    pub submitters: Vec<String>,
}

/// A verdict received through the webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookRecord {
    /// Device id.
    pub device_id: String,
    /// Object SHA-256.
    pub sha256: String,
    /// Verdict.
    pub verdict: Verdict,
    /// Threat name.
    pub threat_name: Option<String>,
    /// Sending sandbox.
    pub source: String,
    /// Receive time.
    pub received_at: u64,
}

/// The data directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

fn safe_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 80 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

impl Store {
    /// Open (creating) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, SandboxError> {
        for sub in ["tasks", "verdicts", "objects", "webhook"] {
            let p = dir.join(sub);
            std::fs::create_dir_all(&p).map_err(|e| SandboxError::io("create", &p, e))?;
        }
        Ok(Store {
            dir: dir.to_path_buf(),
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn read_json<T: for<'de> Deserialize<'de>>(
        &self,
        path: &Path,
    ) -> Result<Option<T>, SandboxError> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
                SandboxError::io(
                    "parse",
                    path,
                    std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(SandboxError::io("read", path, e)),
        }
    }

    fn write_json<T: Serialize>(&self, path: &Path, v: &T) -> Result<(), SandboxError> {
        let bytes = serde_json::to_vec_pretty(v).map_err(|e| {
            SandboxError::io(
                "serialize",
                path,
                std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            )
        })?;
        write_atomic(path, &bytes, None)
    }

    /// Save a task.
    pub fn put_task(&self, t: &TaskRecord) -> Result<(), SandboxError> {
        self.write_json(&self.dir.join("tasks").join(format!("{}.json", t.id)), t)
    }

    /// Load a task (`None` if unknown or the id is not well-formed).
    pub fn task(&self, id: &str) -> Result<Option<TaskRecord>, SandboxError> {
        if !safe_id(id) {
            return Ok(None);
        }
        self.read_json(&self.dir.join("tasks").join(format!("{id}.json")))
    }

    /// All tasks.
    pub fn tasks(&self) -> Result<Vec<TaskRecord>, SandboxError> {
        let dir = self.dir.join("tasks");
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir)
            .map_err(|e| SandboxError::io("list", &dir, e))?
            .flatten()
        {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "json") {
                if let Some(t) = self.read_json(&p)? {
                    out.push(t);
                }
            }
        }
        Ok(out)
    }

    /// Keep a queued object's bytes until it is analysed.
    pub fn put_object(&self, id: &str, bytes: &[u8]) -> Result<(), SandboxError> {
        write_atomic(&self.dir.join("objects").join(id), bytes, Some(0o600))
    }

    /// A queued object's bytes.
    pub fn object(&self, id: &str) -> Result<Option<Vec<u8>>, SandboxError> {
        let p = self.dir.join("objects").join(id);
        match std::fs::read(&p) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(SandboxError::io("read", &p, e)),
        }
    }

    /// Drop a queued object's bytes.
    pub fn remove_object(&self, id: &str) {
        let _ = std::fs::remove_file(self.dir.join("objects").join(id));
    }

    /// Save the verdict for an object (keyed by its SHA-256).
    pub fn put_verdict(&self, sha256: &str, r: &Report) -> Result<(), SandboxError> {
        if !safe_id(sha256) {
            return Err(SandboxError::BadRequest(format!(
                "{sha256:?} is not a SHA-256"
            )));
        }
        self.write_json(&self.dir.join("verdicts").join(format!("{sha256}.json")), r)
    }

    /// Verdict for an object, if analysed.
    pub fn verdict(&self, sha256: &str) -> Result<Option<Report>, SandboxError> {
        if !safe_id(sha256) {
            return Ok(None);
        }
        self.read_json(&self.dir.join("verdicts").join(format!("{sha256}.json")))
    }

    /// Record a webhook verdict.
    pub fn add_webhook(&self, r: &WebhookRecord) -> Result<(), SandboxError> {
        let name = format!("{}-{}.json", r.received_at, crate::util::uuid4());
        self.write_json(&self.dir.join("webhook").join(name), r)
    }

    /// All webhook verdicts received.
    pub fn webhook_records(&self) -> Result<Vec<WebhookRecord>, SandboxError> {
        let dir = self.dir.join("webhook");
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir)
            .map_err(|e| SandboxError::io("list", &dir, e))?
            .flatten()
        {
            if let Some(r) = self.read_json(&e.path())? {
                out.push(r);
            }
        }
        Ok(out)
    }
}
