//! The processing task (object → hash → cache → queue) and the submission worker
//! (queue → sandbox → verdict).
//!
//! Why two tasks: hashing is local and fast and must keep up with the monitor, while
//! the sandbox may be slow or down for hours. The queue on disk sits between them, so
//! an outage only grows the queue (up to its cap, with an alert) and a restart loses
//! nothing. The worker submits each object once (the task id is persisted), polls,
//! backs off exponentially while no server answers, and gives every sighting of an
//! object its verdict when it arrives.

use std::sync::Arc;
use std::time::{Duration, Instant};

use riposte_sandbox::{Report, SandboxClient, SandboxError, Submitted, TaskStatus};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::{watch, Notify};

use crate::allow::AllowList;
use crate::cache::{CacheEntry, VerdictCache};
use crate::config::WatchConfig;
use crate::event::{AlertCode, Verdict, WatchEvent};
use crate::fsutil::now_secs;
use crate::monitor::MonitorMsg;
use crate::object::{read_object, ReadOutcome, Sighting, Trigger};
use crate::queue::{Enqueued, Queue, QueueItem};

/// Analyses that failed at the sandbox before an object leaves the queue.
const MAX_FAILURES: u32 = 3;

/// State shared by the processing task and the worker.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: WatchConfig,
    pub queue: Queue,
    pub cache: VerdictCache,
    pub allowed: Arc<AllowList>,
    pub sink: UnboundedSender<WatchEvent>,
    pub wake: Notify,
}

impl Shared {
    pub fn alert(&self, code: AlertCode, message: String, device_path: Option<String>) {
        tracing::warn!(%code, "{message}");
        let _ = self.sink.send(WatchEvent::Alert {
            code,
            message,
            device_path,
        });
    }
}

/// Receive objects from the monitor (and manual submissions) until the channel closes.
pub(crate) async fn run_processor(shared: Arc<Shared>, mut rx: UnboundedReceiver<MonitorMsg>) {
    while let Some(msg) = rx.recv().await {
        match msg {
            MonitorMsg::Alert(code, message, path) => shared.alert(code, message, path),
            MonitorMsg::Object(t) => {
                let s = shared.clone();
                if let Err(e) = tokio::task::spawn_blocking(move || process(&s, t)).await {
                    tracing::error!("object processing crashed: {e}");
                }
            }
        }
    }
}

/// Read, hash, look up the cache, queue. Blocking.
fn process(shared: &Shared, t: Trigger) {
    let device_path = t.device_path.clone();
    let (object, sighting) = match read_object(&shared.config, t) {
        ReadOutcome::Object(o, s) => (o, s),
        ReadOutcome::Skipped(why) => {
            tracing::debug!(path = %device_path, "skipped: {why}");
            return;
        }
        ReadOutcome::Alert(code, message) => {
            shared.alert(code, message, Some(device_path));
            return;
        }
    };
    // Before the cache: a cached "malicious" is exactly what an administrator overruled.
    if shared.allowed.contains(&object.sha256) {
        tracing::debug!(path = %device_path, "allowed by an administrator; not submitted");
        return;
    }
    if let Some(hit) = shared.cache.get(&object.sha256) {
        let v = verdict(
            &sighting,
            object.bytes.len() as u64,
            &object.md5,
            &object.sha1,
            &object.sha256,
            &hit,
            true,
        );
        let _ = shared.sink.send(WatchEvent::Verdict(v));
        return;
    }
    match shared.queue.enqueue(&object, sighting) {
        Ok(Enqueued::Added) | Ok(Enqueued::Merged) => shared.wake.notify_one(),
        Ok(Enqueued::Full { queued, cap }) => shared.alert(
            AlertCode::QueueFull,
            format!(
                "submission queue full ({queued} of {cap} bytes used): {device_path} ({} bytes, SHA-256 {}) was not queued for the sandbox; check that a sandbox server is reachable, or raise the queue size",
                object.bytes.len(),
                object.sha256
            ),
            Some(device_path),
        ),
        Err(e) => shared.alert(
            AlertCode::StateFailed,
            format!("cannot queue {device_path} for the sandbox: {e}"),
            Some(device_path),
        ),
    }
}

fn verdict(
    s: &Sighting,
    size: u64,
    md5: &str,
    sha1: &str,
    sha256: &str,
    e: &CacheEntry,
    from_cache: bool,
) -> Verdict {
    Verdict {
        device_path: s.device_path.clone(),
        size,
        md5: md5.to_string(),
        sha1: sha1.to_string(),
        sha256: sha256.to_string(),
        user_name: s.user_name.clone(),
        user_uid: s.user_uid,
        threat: e.threat.clone(),
        malicious: e.malicious,
        source: e.source.clone(),
        source_ref: e.source_ref.clone(),
        dropped_sha256: e.dropped_sha256.clone(),
        from_cache,
        report: e.report.clone(),
    }
}

/// What one step on a queued object came to.
enum Step {
    /// Verdict delivered, or the object left the queue with an alert.
    Finished,
    /// Submitted; the sandbox is still working on it.
    Waiting,
    /// No server answered.
    Unreachable(String),
    /// A server answered that it does not admit this device (revoked, or enrolled with
    /// another administration server): waiting will not mend it, an administrator must.
    Refused(String),
}

/// Drain the queue into the sandbox until `stop` turns true.
pub(crate) async fn run_worker(
    shared: Arc<Shared>,
    client: Option<SandboxClient>,
    mut stop: watch::Receiver<bool>,
) {
    let cfg = &shared.config;
    let Some(client) = client else {
        if !cfg.folders.is_empty() || shared.queue.usage().0 > 0 {
            shared.alert(
                AlertCode::SandboxNotConfigured,
                "no sandbox server or no pinned sandbox certificate in the Sandbox integration settings: objects are queued but not submitted; set --sandbox URL,... and --sandbox-ca FILE".into(),
                None,
            );
        }
        let _ = stop.changed().await;
        return;
    };
    let mut backoff = cfg.retry_backoff;
    let mut down_since: Option<Instant> = None;
    let mut alerted = false;
    loop {
        let mut unreachable = None;
        let mut waiting = false;
        for item in shared.queue.pending() {
            if *stop.borrow() {
                return;
            }
            // Allowed while it waited (the same content was restored from quarantine).
            if shared.allowed.contains(&item.sha256) {
                shared.queue.remove(&item.sha256);
                continue;
            }
            let step = tokio::select! {
                _ = stop.changed() => return,
                s = step(&shared, &client, item) => s,
            };
            match step {
                Step::Finished => {}
                Step::Waiting => waiting = true,
                Step::Unreachable(m) => {
                    unreachable = Some((m, false));
                    break;
                }
                Step::Refused(m) => {
                    unreachable = Some((m, true));
                    break;
                }
            }
        }
        if let Some((msg, refused)) = unreachable {
            let since = *down_since.get_or_insert_with(Instant::now);
            // A refusal is said at once: unlike a network outage it does not pass.
            if !alerted && (refused || since.elapsed() >= cfg.unreachable_alert_after) {
                alerted = true;
                let (n, bytes) = shared.queue.usage();
                let message = if refused {
                    format!(
                        "the sandbox refuses this device: {msg}; {n} objects ({bytes} bytes) wait in the queue and are submitted once it admits the device"
                    )
                } else {
                    format!(
                        "no sandbox server has answered for {} s ({msg}); {n} objects ({bytes} bytes) wait in the queue and are submitted when one answers",
                        since.elapsed().as_secs()
                    )
                };
                shared.alert(AlertCode::SandboxUnreachable, message, None);
            }
            let pause = backoff;
            backoff = backoff.saturating_mul(2).min(cfg.max_retry_backoff);
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(pause) => {}
            }
            continue;
        }
        if down_since.take().is_some() && alerted {
            alerted = false;
            shared.alert(
                AlertCode::SandboxReachable,
                "a sandbox server answers again; queued objects are being submitted".into(),
                None,
            );
        }
        backoff = cfg.retry_backoff;
        let pause = if waiting {
            cfg.poll_interval
        } else if shared.queue.usage().0 > 0 {
            Duration::ZERO
        } else {
            Duration::from_secs(3600)
        };
        tokio::select! {
            _ = stop.changed() => return,
            _ = shared.wake.notified() => {}
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

async fn step(shared: &Shared, client: &SandboxClient, item: QueueItem) -> Step {
    if let Some(task) = item.task_id.clone() {
        return match client.poll(&task).await {
            Ok(TaskStatus::Processing) => Step::Waiting,
            Ok(TaskStatus::Found { report, .. }) | Ok(TaskStatus::NotFound(report)) => {
                finish(shared, &item, &report, Some(task))
            }
            Ok(TaskStatus::Failed(msg)) => failed(shared, &item, msg),
            // Revoked, or the sandbox changed its mind about this device: the task
            // stays; an administrator must act.
            Err(
                e @ (SandboxError::NotAdmitted
                | SandboxError::Revoked
                | SandboxError::CertificateRefused(_)),
            ) => Step::Refused(e.to_string()),
            Err(e) => {
                // The server may have lost the task: submit again next round (the
                // sandbox keys objects by SHA-256, so this never analyses twice).
                if let Err(e) = shared.queue.update(&item.sha256, None, item.failures) {
                    tracing::warn!("{e}");
                }
                Step::Unreachable(e.to_string())
            }
        };
    }
    let bytes = match shared.queue.object(&item.sha256) {
        Ok(b) => b,
        Err(e) => {
            drop_item(shared, &item, AlertCode::StateFailed, &format!("{e}"));
            return Step::Finished;
        }
    };
    match client.submit(&item.name, &bytes).await {
        Ok(Submitted::AlreadyScanned(report)) => finish(shared, &item, &report, None),
        Ok(Submitted::Queued(id)) => {
            if let Err(e) = shared.queue.update(&item.sha256, Some(id), item.failures) {
                tracing::warn!("{e}");
            }
            Step::Waiting
        }
        Err(SandboxError::Unreachable(m)) => Step::Unreachable(m),
        // A sandbox that does not admit this device (its CA is another server's, or it
        // was started before this device enrolled): the object stays queued, and the
        // alert for an unreachable sandbox tells why, until an administrator mends it.
        Err(
            e @ (SandboxError::NotAdmitted
            | SandboxError::Revoked
            | SandboxError::CertificateRefused(_)),
        ) => Step::Refused(e.to_string()),
        Err(e) => {
            drop_item(shared, &item, AlertCode::SandboxRejected, &e.to_string());
            Step::Finished
        }
    }
}

fn failed(shared: &Shared, item: &QueueItem, msg: String) -> Step {
    let failures = item.failures + 1;
    if failures >= MAX_FAILURES {
        drop_item(
            shared,
            item,
            AlertCode::SandboxRejected,
            &format!("analysis failed {failures} times, last: {msg}"),
        );
        return Step::Finished;
    }
    if let Err(e) = shared.queue.update(&item.sha256, None, failures) {
        tracing::warn!("{e}");
    }
    Step::Waiting
}

/// Take an object out of the queue without a verdict, telling the administrator.
fn drop_item(shared: &Shared, item: &QueueItem, code: AlertCode, why: &str) {
    let item = shared
        .queue
        .remove(&item.sha256)
        .unwrap_or_else(|| item.clone());
    for s in &item.sightings {
        shared.alert(
            code,
            format!(
                "{} (SHA-256 {}) got no sandbox verdict and left the queue: {why}",
                s.device_path, item.sha256
            ),
            Some(s.device_path.clone()),
        );
    }
}

/// Deliver a verdict to every sighting and remember it.
fn finish(shared: &Shared, item: &QueueItem, report: &Report, task: Option<String>) -> Step {
    let malicious = report.verdict.is_malicious();
    let entry = CacheEntry {
        malicious,
        threat: malicious.then(|| {
            report
                .threat_name
                .clone()
                .unwrap_or_else(|| "Malicious".into())
        }),
        source: if report.source.starts_with("riposte") {
            "riposte-sandbox".into()
        } else {
            report.source.clone()
        },
        source_ref: task,
        dropped_sha256: report
            .iocs
            .dropped_files
            .iter()
            .map(|f| f.sha256.clone())
            .filter(|s| !s.is_empty())
            .collect(),
        report: Some(Box::new(report.clone())),
        at: now_secs(),
    };
    // Cache first, then leave the queue: a sighting arriving in between finds one of them.
    if let Err(e) = shared.cache.put(&item.sha256, entry.clone()) {
        shared.alert(
            AlertCode::StateFailed,
            format!("cannot save the verdict cache: {e}"),
            None,
        );
    }
    let item = shared
        .queue
        .remove(&item.sha256)
        .unwrap_or_else(|| item.clone());
    // Allowed while the sandbox worked on it: the administrator's decision stands.
    if shared.allowed.contains(&item.sha256) {
        return Step::Finished;
    }
    for s in &item.sightings {
        let v = verdict(
            s,
            item.size,
            &item.md5,
            &item.sha1,
            &item.sha256,
            &entry,
            false,
        );
        let _ = shared.sink.send(WatchEvent::Verdict(v));
    }
    Step::Finished
}
