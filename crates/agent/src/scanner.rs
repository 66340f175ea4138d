//! Runs IOC scan tasks with the sweep engine (`riposte-scan`) over the device, as seen under
//! the agent's host root.

use crate::daemon::TaskRunner;
use riposte_model::{DeviceTaskState, ScanScope};
use riposte_proto::{TaskOffer, TaskUpdate};
use riposte_scan::items::HitItem;
use riposte_scan::{DocumentKind, IocDocument, Preset, Scope, SweepRequest};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

/// Sweeps the device for a task's IOCs.
pub struct SweepRunner {
    /// The directory treated as the device's `/`.
    pub host_root: PathBuf,
}

impl SweepRunner {
    fn request(&self, offer: &TaskOffer, cancel: Arc<AtomicBool>) -> Result<SweepRequest, String> {
        let mut documents = Vec::new();
        for d in &offer.iocs {
            let kind = match d.format.as_str() {
                "openioc" => DocumentKind::OpenIoc,
                "stix" => DocumentKind::Stix,
                "yara" => DocumentKind::Yara,
                other => return Err(format!("unknown IOC format '{other}'")),
            };
            documents.push(IocDocument {
                kind,
                origin: d.name.clone(),
                text: d.content.clone(),
            });
        }
        let scope = Scope {
            host_root: self.host_root.clone(),
            preset: Some(match offer.scope {
                ScanScope::SystemDrives => Preset::SystemDrives,
                ScanScope::CriticalAreas => Preset::CriticalAreas,
            }),
            ..Scope::default()
        };
        Ok(SweepRequest {
            documents,
            scope,
            cancel,
            ..SweepRequest::default()
        })
    }
}

impl TaskRunner for SweepRunner {
    fn run(&self, offer: TaskOffer, mut cancel_rx: watch::Receiver<bool>) -> TaskUpdate {
        let cancel = Arc::new(AtomicBool::new(false));
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let flag = cancel.clone();
            handle.spawn(async move {
                while cancel_rx.changed().await.is_ok() {
                    if *cancel_rx.borrow() {
                        flag.store(true, Ordering::SeqCst);
                        return;
                    }
                }
            });
        }
        let fail = |reason: String| TaskUpdate {
            task_id: offer.task_id,
            state: DeviceTaskState::Failed,
            hits: 0,
            reason: Some(reason),
            results: serde_json::Value::Null,
        };
        let request = match self.request(&offer, cancel.clone()) {
            Ok(r) => r,
            Err(e) => return fail(e),
        };
        match riposte_scan::sweep(&request) {
            Ok(report) if report.cancelled => fail("cancelled".into()),
            Ok(report) => {
                let files: Vec<String> = report
                    .hits
                    .iter()
                    .filter_map(|h| match &h.item {
                        HitItem::File { path } => Some(path.clone()),
                        _ => None,
                    })
                    .collect();
                TaskUpdate {
                    task_id: offer.task_id,
                    state: DeviceTaskState::Completed,
                    hits: report.hits.len() as u64,
                    reason: None,
                    results: serde_json::json!({
                        "hit_files": files,
                        "hits": report.hits,
                        "stats": report.stats,
                        "unreadable": report.unreadable.len(),
                    }),
                }
            }
            Err(e) => fail(format!("the IOC scan failed: {e}")),
        }
    }
}
