//! Runs IOC scan tasks with the sweep engine (`riposte-scan`) over the device, as seen under
//! the agent's host root.

use crate::daemon::TaskRunner;
use riposte_model::{DeviceTaskState, ScanScope};
use riposte_proto::{TaskOffer, TaskUpdate};
use riposte_scan::items::HitItem;
use riposte_scan::{DocumentKind, IocDocument, Preset, Progress, Scope, SweepRequest};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Sweeps the device for a task's IOCs.
pub struct SweepRunner {
    /// The directory treated as the device's `/`.
    pub host_root: PathBuf,
    /// How often a running sweep reports its progress (files, bytes, files read).
    pub progress_every: Duration,
}

impl SweepRunner {
    /// A runner for the device under `host_root`, reporting progress every 30 seconds:
    /// each report is a store write on the server, and a fleet-wide task on 10,000
    /// devices makes about 330 of them a second at that pace.
    pub fn new(host_root: PathBuf) -> SweepRunner {
        SweepRunner {
            host_root,
            progress_every: Duration::from_secs(30),
        }
    }
}

/// A sweep's counters as the results of a `running` update; `bytes` only where the
/// sweep counts the sizes of the files it examines (see `Progress::counts_sizes`).
fn progress_json(p: &Progress) -> serde_json::Value {
    let mut progress = serde_json::json!({
        "files": p.files.load(Ordering::Relaxed),
        "read": p.read.load(Ordering::Relaxed),
    });
    if p.counts_sizes.get() == Some(&true) {
        progress["bytes"] = p.bytes.load(Ordering::Relaxed).into();
    }
    serde_json::json!({ "progress": progress })
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
                include_dir: None,
                kind,
                origin: d.name.clone(),
                text: d.content.clone(),
            });
        }
        let scope = Scope {
            host_root: self.host_root.clone(),
            // The device's own processes and sockets: none where the root holds no live
            // system, rather than this machine's.
            proc_root: riposte_scan::live_proc(&self.host_root),
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
    fn run(
        &self,
        offer: TaskOffer,
        mut cancel_rx: watch::Receiver<bool>,
        report: &(dyn Fn(serde_json::Value) + Sync),
    ) -> TaskUpdate {
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
        let mut request = match self.request(&offer, cancel.clone()) {
            Ok(r) => r,
            Err(e) => return fail(e),
        };
        let progress = Arc::new(Progress::default());
        request.progress = Some(progress.clone());
        let finished = AtomicBool::new(false);
        let outcome = std::thread::scope(|s| {
            s.spawn(|| {
                let mut last = Instant::now();
                while !finished.load(Ordering::Relaxed) {
                    std::thread::sleep(self.progress_every.min(Duration::from_millis(50)));
                    if last.elapsed() >= self.progress_every && !finished.load(Ordering::Relaxed) {
                        report(progress_json(&progress));
                        last = Instant::now();
                    }
                }
            });
            let outcome = riposte_scan::sweep(&request);
            finished.store(true, Ordering::Relaxed);
            outcome
        });
        // The last counts, so that a device's progress ends where its sweep did.
        report(progress_json(&progress));
        match outcome {
            Ok(report) if report.cancelled => fail("cancelled".into()),
            Ok(report) => {
                let total = report.hits.len();
                let mut hits = report.hits;
                hits.truncate(MAX_REPORTED_HITS);
                let files: Vec<String> = hits
                    .iter()
                    .filter_map(|h| match &h.item {
                        HitItem::File { path, .. } => Some(path.clone()),
                        _ => None,
                    })
                    .collect();
                let undetermined: Vec<&riposte_scan::IocSummary> = report
                    .iocs
                    .iter()
                    .filter(|i| i.verdict == riposte_scan::Verdict::Undetermined)
                    .collect();
                // Said where a device reports no hit: "0 hits" is not "clean" when an
                // indicator could not be decided here.
                let undetermined_note = (!undetermined.is_empty()).then(|| {
                    let unsupported = undetermined.iter().filter(|i| !i.unsupported.is_empty()).count();
                    // One reason, for the row: the rest are in the results' `iocs`.
                    // Unsupported terms are counted apart just above.
                    let example = undetermined
                        .iter()
                        .find_map(|i| {
                            i.undetermined_because
                                .iter()
                                .find(|why| *why != riposte_scan::UNSUPPORTED_TERMS_REASON)
                        })
                        .map(|why| format!("; for one: {why}"))
                        .unwrap_or_default();
                    format!(
                        "{} of {} indicators undetermined here ({unsupported} with terms no Linux collector evaluates{example})",
                        undetermined.len(),
                        report.iocs.len()
                    )
                });
                // What was not looked for at all (a revoked or expired indicator, a rule
                // the engine refused), beside the task's row rather than only in results.
                let warnings_note =
                    report
                        .warnings
                        .first()
                        .map(|first| match report.warnings.len() {
                            1 => format!("not looked for: {first}"),
                            n => format!("not looked for: {first} (and {} more)", n - 1),
                        });
                let reason = match (undetermined_note, warnings_note) {
                    (Some(a), Some(b)) => Some(format!("{a}; {b}")),
                    (a, b) => a.or(b),
                };
                TaskUpdate {
                    task_id: offer.task_id,
                    state: DeviceTaskState::Completed,
                    hits: total as u64,
                    reason,
                    results: serde_json::json!({
                        "hit_files": files,
                        "hits": hits,
                        "hits_total": total,
                        "hits_truncated": total > MAX_REPORTED_HITS,
                        "iocs": report.iocs,
                        "stats": report.stats,
                        "unreadable": report.unreadable.len(),
                        // Indicators set aside (revoked, expired) and rules skipped: the
                        // administrator sees what this device did not look for.
                        "warnings": report.warnings.iter().take(20).collect::<Vec<_>>(),
                        "warnings_total": report.warnings.len(),
                    }),
                }
            }
            Err(e) => fail(format!("the IOC scan failed: {e}")),
        }
    }
}

/// Most hits a device reports, and acts on, per task: an indicator that hits half a
/// million files (`[file:ctime > t'…']`) is a mistake to be seen in the count, not a
/// frame over the channel's limit nor half a million quarantines.
pub const MAX_REPORTED_HITS: usize = 5_000;

/// The files a completed sweep hit, each once, with the identity the sweep saw (device,
/// inode, SHA-256); `None` where the sweep could not read the file to hash it.
pub fn hit_file_identities(
    results: &serde_json::Value,
) -> Vec<(String, Option<riposte_host::FileIdentity>)> {
    let mut out: Vec<(String, Option<riposte_host::FileIdentity>)> = Vec::new();
    for hit in results["hits"].as_array().into_iter().flatten() {
        let item = &hit["item"];
        let Some(path) = item["path"].as_str().filter(|_| item["type"] == "file") else {
            continue;
        };
        if out.iter().any(|(p, _)| p == path) {
            continue;
        }
        let sha256 = item["sha256"]
            .as_str()
            .and_then(|h| hex::decode(h).ok())
            .and_then(|b| <[u8; 32]>::try_from(b).ok());
        let identity = match (item["dev"].as_u64(), item["ino"].as_u64(), sha256) {
            (Some(dev), Some(ino), Some(sha256)) => {
                Some(riposte_host::FileIdentity { dev, ino, sha256 })
            }
            _ => None,
        };
        out.push((path.to_string(), identity));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn a_running_sweep_reports_progress_and_ends_with_its_counts() {
        let root = tempfile::tempdir().unwrap();
        for i in 0..400 {
            let d = root.path().join(format!("home/u/d{}", i % 9));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(format!("f{i}.txt")), format!("file number {i}")).unwrap();
        }
        let ioc = r#"<OpenIOC xmlns="http://openioc.org/schemas/OpenIOC_1.1" id="p" last-modified="2020-01-01T00:00:00Z" published-date="2020-01-01T00:00:00Z"><metadata><short_description>p</short_description><authored_date>2020-01-01T00:00:00Z</authored_date></metadata><criteria><Indicator operator="OR" id="o"><IndicatorItem id="i" condition="is" preserve-case="false" negate="false"><Context document="FileItem" search="FileItem/FileName" type="mir"/><Content type="string">f7.txt</Content></IndicatorItem></Indicator></criteria></OpenIOC>"#;
        let offer = TaskOffer {
            task_id: 7,
            autonomous: false,
            iocs: vec![riposte_proto::IocDocument {
                format: "openioc".into(),
                name: "p.ioc".into(),
                content: ioc.into(),
            }],
            scope: ScanScope::SystemDrives,
            actions: Vec::new(),
        };
        let runner = SweepRunner {
            host_root: root.path().to_path_buf(),
            progress_every: Duration::from_millis(1),
        };
        let reports = Mutex::new(Vec::<serde_json::Value>::new());
        let (_cancel, rx) = watch::channel(false);
        let done = runner.run(offer, rx, &|v| {
            reports.lock().unwrap_or_else(|e| e.into_inner()).push(v)
        });
        assert_eq!(done.state, DeviceTaskState::Completed, "{done:?}");
        assert_eq!(done.hits, 1);
        let reports = reports.into_inner().unwrap_or_else(|e| e.into_inner());
        let files: Vec<u64> = reports
            .iter()
            .map(|r| r["progress"]["files"].as_u64().unwrap())
            .collect();
        assert!(!files.is_empty());
        assert!(files.windows(2).all(|w| w[0] <= w[1]), "{files:?}");
        assert_eq!(
            files.last().copied(),
            done.results["stats"]["files_seen"].as_u64(),
            "the last report is the sweep's own count"
        );
        assert_eq!(files.last(), Some(&400));
        // A sweep of names stats only the files whose names match: it reports no bytes
        // rather than a count of none.
        assert!(
            reports.iter().all(|r| r["progress"].get("bytes").is_none()),
            "{reports:?}"
        );
    }

    fn offer_of(task_id: i64, format: &str, content: &str) -> TaskOffer {
        TaskOffer {
            task_id,
            autonomous: false,
            iocs: vec![riposte_proto::IocDocument {
                format: format.into(),
                name: format!("doc.{format}"),
                content: content.into(),
            }],
            scope: ScanScope::SystemDrives,
            actions: Vec::new(),
        }
    }

    /// An indicator that hits more files than a device reports: the count is whole, the
    /// list is cut and says so, and the results stay far under the channel's frame limit.
    #[test]
    fn a_sweep_with_too_many_hits_reports_the_count_and_a_cut_list() {
        let root = tempfile::tempdir().unwrap();
        let many = MAX_REPORTED_HITS + 7;
        for i in 0..many {
            let d = root.path().join(format!("srv/d{}", i % 50));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(format!("f{i}.log")), b"x").unwrap();
        }
        let runner = SweepRunner {
            host_root: root.path().to_path_buf(),
            progress_every: Duration::from_secs(60),
        };
        let (_cancel, rx) = watch::channel(false);
        let done = runner.run(offer_of(8, "stix", "[file:name LIKE '%.log']"), rx, &|_| {});
        assert_eq!(done.state, DeviceTaskState::Completed, "{done:?}");
        assert_eq!(done.hits, many as u64);
        assert_eq!(done.results["hits_total"], many);
        assert_eq!(done.results["hits_truncated"], true);
        assert_eq!(
            done.results["hits"].as_array().unwrap().len(),
            MAX_REPORTED_HITS
        );
        assert_eq!(hit_file_identities(&done.results).len(), MAX_REPORTED_HITS);
        let size = serde_json::to_vec(&done.results).unwrap().len();
        assert!(size < riposte_proto::MAX_FRAME / 4, "{size} bytes");
    }

    /// No hit is not "clean" where an indicator could not be decided: the device says so.
    #[test]
    fn a_sweep_with_undetermined_indicators_says_so() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("srv")).unwrap();
        let runner = SweepRunner {
            host_root: root.path().to_path_buf(),
            progress_every: Duration::from_secs(60),
        };
        let (_cancel, rx) = watch::channel(false);
        let done = runner.run(offer_of(9, "stix", "[file:nosuchprop = 'a']"), rx, &|_| {});
        assert_eq!(done.state, DeviceTaskState::Completed, "{done:?}");
        assert_eq!(done.hits, 0);
        assert_eq!(
            done.reason.as_deref(),
            Some("1 of 1 indicators undetermined here (1 with terms no Linux collector evaluates)")
        );
        assert_eq!(done.results["iocs"][0]["verdict"], "undetermined");
    }

    /// A device whose root holds no live system (an image, a host mounted without its
    /// `/proc`) has no processes this machine could stand in for: a process term is
    /// undetermined there, not decided on the agent's own machine.
    #[test]
    fn a_sweep_of_a_root_without_its_proc_judges_no_process_of_this_machine() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("srv")).unwrap();
        let mut sleeper = std::process::Command::new("sleep")
            .arg("987.4321")
            .spawn()
            .unwrap();
        let runner = SweepRunner {
            host_root: root.path().to_path_buf(),
            progress_every: Duration::from_secs(60),
        };
        let (_cancel, rx) = watch::channel(false);
        let pattern = "[process:command_line LIKE '%987.4321%']";
        let done = runner.run(offer_of(11, "stix", pattern), rx, &|_| {});
        let _ = sleeper.kill();
        let _ = sleeper.wait();
        assert_eq!(done.state, DeviceTaskState::Completed, "{done:?}");
        assert_eq!(done.hits, 0, "{done:?}");
        assert_eq!(
            done.results["iocs"][0]["verdict"], "undetermined",
            "{done:?}"
        );
    }

    /// The row says why, for one indicator: here a file too large to hash.
    #[test]
    fn an_undetermined_sweep_says_why_for_one() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("srv")).unwrap();
        // Sparse: over the default 100 MiB limit without taking the disk.
        std::fs::File::create(root.path().join("srv/big.bin"))
            .unwrap()
            .set_len(101 << 20)
            .unwrap();
        let runner = SweepRunner {
            host_root: root.path().to_path_buf(),
            progress_every: Duration::from_secs(60),
        };
        let (_cancel, rx) = watch::channel(false);
        let pattern = format!("[file:hashes.MD5 = '{}']", "0".repeat(32));
        let done = runner.run(offer_of(10, "stix", &pattern), rx, &|_| {});
        assert_eq!(done.state, DeviceTaskState::Completed, "{done:?}");
        assert_eq!(
            done.reason.as_deref(),
            Some(
                "1 of 1 indicators undetermined here (0 with terms no Linux collector evaluates; \
                 for one: file /srv/big.bin: larger than the maximum file size)"
            )
        );
        assert_eq!(
            done.results["iocs"][0]["undetermined_because"][0],
            "file /srv/big.bin: larger than the maximum file size"
        );
    }

    /// What a device did not look for (an expired indicator beside a live one) is on the
    /// task's row and in its results.
    #[test]
    fn a_sweep_says_which_indicators_it_set_aside() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("srv")).unwrap();
        let runner = SweepRunner {
            host_root: root.path().to_path_buf(),
            progress_every: Duration::from_secs(60),
        };
        let feed = r#"[{"type":"indicator","id":"indicator--live","pattern":"[file:name = 'nothing-here']"},
                       {"type":"indicator","id":"indicator--old","valid_until":"2001-01-01T00:00:00Z","pattern":"[file:name = 'x']"}]"#;
        let (_cancel, rx) = watch::channel(false);
        let done = runner.run(offer_of(10, "stix", feed), rx, &|_| {});
        assert_eq!(done.state, DeviceTaskState::Completed, "{done:?}");
        assert_eq!(
            done.reason.as_deref(),
            Some("not looked for: doc.stix: indicator indicator--old expired at 2001-01-01T00:00:00Z (valid_until): not evaluated")
        );
        assert_eq!(done.results["warnings_total"], 1);
    }
}
