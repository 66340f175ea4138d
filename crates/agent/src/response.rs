//! The response to a malicious verdict on this device: the local actions (quarantine and
//! delete, notify the user, EPP scan of critical areas) and the group action (an
//! autonomous IOC scan task on the server, as the special account).
//!
//! The agent acts on a reported object only while the object at its path is a regular file
//! with the reported SHA-256; every action's outcome is reported to the server, and a
//! failed group action never stops the local ones.

use riposte_epp::Epp;
use riposte_host::{HostRoot, Notifier, NotifyOutcome};
use riposte_model::{path_text, Action};
use riposte_proto::DetectionRecord;
use riposte_quarantine::{QuarantineConfig, QuarantineRecord, QuarantineRequest, QuarantineStore};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The YARA rules of the built-in EPP scanner (the EICAR test file and a few Linux rules).
const DEFAULT_RULES: &[(&str, &str)] = &[
    ("eicar.yar", include_str!("../../sandbox/rules/eicar.yar")),
    (
        "linux_ld_preload.yar",
        include_str!("../../sandbox/rules/linux_ld_preload.yar"),
    ),
    (
        "linux_reverse_shell.yar",
        include_str!("../../sandbox/rules/linux_reverse_shell.yar"),
    ),
];

/// The built-in EPP scanner with the default rules (the embedded default).
pub fn builtin_epp() -> anyhow::Result<riposte_epp::builtin::BuiltinScanner> {
    let mut rules = String::new();
    for (_, text) in DEFAULT_RULES {
        rules.push_str(text);
        rules.push('\n');
    }
    let yara = riposte_ioc::yara::YaraRules::compile_str(&rules, "built-in rules")?;
    Ok(
        riposte_epp::builtin::BuiltinScanner::new(riposte_epp::builtin::HashDb::new())
            .with_rules(Box::new(yara)),
    )
}

/// ClamAV's clamd at a unix socket as the EPP; `conf` is its clamd.conf, whose limits and
/// `ExcludePath`s the client applies itself (clamd answers OK for what it did not scan,
/// and applies its exclusions only to what it reads by path, not to the streams it is
/// sent).
pub fn clamd_epp(
    socket: &Path,
    conf: Option<&Path>,
) -> anyhow::Result<riposte_epp::clamd::ClamdClient> {
    use anyhow::Context;
    use riposte_epp::clamd::{ClamdExclusions, ClamdLimits};
    let (limits, exclusions) = match conf {
        Some(c) => {
            let text = std::fs::read_to_string(c)
                .with_context(|| format!("cannot read clamd's configuration {}", c.display()))?;
            let exclusions = ClamdExclusions::from_conf(&text);
            for ignored in exclusions.ignored() {
                tracing::warn!("{}: {ignored}", c.display());
            }
            (ClamdLimits::from_conf(&text), exclusions)
        }
        None => (ClamdLimits::default(), ClamdExclusions::default()),
    };
    let client = riposte_epp::clamd::ClamdClient::new(
        riposte_epp::clamd::ClamdAddr::Unix(socket.to_path_buf()),
        limits,
    )
    .with_exclusions(exclusions);
    // clamd opens its socket only once its signatures are loaded, which takes a while
    // at boot: the agent starts anyway (quarantine, tasks and the channel do not need
    // it), and each scan says that clamd could not be reached until it can.
    if let Err(e) = riposte_epp::Epp::check(&client) {
        tracing::warn!(
            "clamd at {} does not answer yet ({e}); critical-areas scans fail until it does",
            socket.display()
        );
    }
    Ok(client)
}

/// What a sandbox (or an external tool) reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DetectionInput {
    /// Device path of the object, in its [`path_text`] form (a byte that is not UTF-8 as
    /// `\xHH`, a backslash as `\\`; a lone backslash typed by hand is taken as it is).
    pub path: String,
    pub sha256: String,
    pub threat: String,
    /// Account under which the object was written or run.
    pub user: String,
    #[serde(default)]
    pub user_uid: Option<u32>,
    #[serde(default = "default_source")]
    pub source: String,
    #[serde(default)]
    pub source_ref: Option<String>,
    #[serde(default)]
    pub dropped_sha256: Vec<String>,
    /// What the watcher read of the object when it was judged (never taken from a
    /// request): where the object has been renamed, moved or changed by the time of the
    /// response, the detection is still recorded with these and the group sweep looks for
    /// the object by them, on this device too.
    #[serde(skip)]
    pub seen: Option<SeenObject>,
}

/// An object as the watcher hashed it, through the descriptor of its event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenObject {
    pub size: u64,
    pub md5: String,
    pub sha1: String,
}

impl DetectionInput {
    /// The detection of an object no longer where it was judged (`why`), from what the
    /// watcher read of it; `None` where the watcher did not read it (a report by hand).
    pub fn record_without_object(&self) -> Option<DetectionRecord> {
        let seen = self.seen.as_ref()?;
        Some(DetectionRecord {
            detection_id: format!("{:032x}", rand::random::<u128>()),
            path: self.path.clone(),
            size: seen.size,
            md5: seen.md5.to_ascii_lowercase(),
            sha1: seen.sha1.to_ascii_lowercase(),
            sha256: self.sha256.trim().to_ascii_lowercase(),
            threat: path_text::shown(&self.threat).into_owned(),
            source: path_text::shown(&self.source).into_owned(),
            source_ref: self.source_ref.clone(),
            user_name: path_text::shown(&self.user).into_owned(),
            user_uid: self.user_uid,
            detected_at_ms: crate::daemon::now_ms(),
            dropped_sha256: self.dropped_sha256.clone(),
        })
    }
}

fn default_source() -> String {
    "external".into()
}

/// One action's outcome, as reported to the server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Outcome {
    pub action: String,
    /// `done`, `failed`, `skipped`, `shown`, `not_shown`.
    pub outcome: String,
    pub detail: String,
}

impl Outcome {
    fn new(action: &str, outcome: &str, detail: impl Into<String>) -> Outcome {
        Outcome {
            action: action.into(),
            outcome: outcome.into(),
            detail: detail.into(),
        }
    }
}

/// The device-side machinery of the local actions.
pub struct LocalActions {
    pub host: HostRoot,
    pub quarantine: Mutex<QuarantineStore>,
    pub notifier: Notifier,
    pub epp: Arc<dyn Epp>,
}

impl LocalActions {
    /// Opens the quarantine store in `DIR/quarantine` (recovering anything half done) and
    /// sets up notification and the built-in EPP scanner.
    pub fn open(
        data_dir: &Path,
        host_root: &Path,
        epp: Option<Arc<dyn Epp>>,
    ) -> anyhow::Result<(LocalActions, riposte_quarantine::RecoveryReport)> {
        Self::open_protecting(data_dir, host_root, epp, &[])
    }

    /// [`LocalActions::open`], with `protect` (host paths: another Riposte part's data
    /// on this machine, such as the server's CA key under `up`) never quarantined from
    /// nor restored into, as the agent's own data directory is not.
    pub fn open_protecting(
        data_dir: &Path,
        host_root: &Path,
        epp: Option<Arc<dyn Epp>>,
        protect: &[std::path::PathBuf],
    ) -> anyhow::Result<(LocalActions, riposte_quarantine::RecoveryReport)> {
        let host = HostRoot::new(host_root);
        let mut config = QuarantineConfig::default();
        // The agent's own files are never quarantined nor restored over. Canonical, so
        // that a relative `--data` or one reached through a link is still recognised.
        let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.into());
        let device_root = HostRoot::new(canonical(host_root));
        for dir in std::iter::once(data_dir).chain(protect.iter().map(|p| p.as_path())) {
            if let Some(own) = device_root.device_path(&canonical(dir)) {
                // `DIR/` protects DIR itself too: a file given (`up`'s lock) is covered.
                config
                    .protected
                    .push(format!("{}/", path_text::encode(own)));
            }
        }
        let (store, recovery) =
            QuarantineStore::open(data_dir.join("quarantine"), host.clone(), config)?;
        let sessions = Arc::new(riposte_host::SystemSessions { root: host.clone() });
        let notifier = Notifier::new(host.clone(), sessions).with_app_name("Riposte");
        let epp = match epp {
            Some(e) => e,
            None => Arc::new(builtin_epp()?),
        };
        Ok((
            LocalActions {
                host,
                quarantine: Mutex::new(store),
                notifier,
                epp,
            },
            recovery,
        ))
    }

    fn store(&self) -> std::sync::MutexGuard<'_, QuarantineStore> {
        self.quarantine.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Quarantines and deletes the object at device path `path` ([`path_text`] form, as
    /// detections and hits carry it).
    pub fn quarantine(
        &self,
        path: &str,
        detection_id: &str,
        threat: &str,
        user: &str,
        expected: Option<riposte_host::FileIdentity>,
    ) -> Result<QuarantineRecord, String> {
        let req = QuarantineRequest {
            path: path_text::decode(path),
            detection_id: detection_id.to_string(),
            threat_name: threat.to_string(),
            user: user.to_string(),
            expected,
        };
        self.store().quarantine(&req).map_err(|e| e.to_string())
    }

    /// How many names (hard links) the regular file at device path `path` has.
    pub fn link_count(&self, path: &str) -> Option<u64> {
        self.host
            .open_regular(&path_text::decode(path))
            .ok()
            .map(|o| o.meta.nlink)
    }

    /// One entry's record.
    pub fn store_record(&self, id: &str) -> Result<QuarantineRecord, String> {
        self.store().read_record(id).map_err(|e| e.to_string())
    }

    /// [`LocalActions::store_record`], with `None` for an entry whose record is
    /// damaged (which can still be deleted).
    pub fn store_record_unless_damaged(
        &self,
        id: &str,
    ) -> Result<Option<QuarantineRecord>, String> {
        match self.store().read_record(id) {
            Ok(record) => Ok(Some(record)),
            Err(riposte_quarantine::QuarantineError::Corrupt { .. }) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Entries in quarantine, and those whose record cannot be read.
    pub fn quarantine_list(&self) -> Result<riposte_quarantine::Listing, String> {
        self.store().list().map_err(|e| e.to_string())
    }

    /// Restores an entry; `to` another device path ([`path_text`] form); `on_conflict`
    /// refuse|replace|rename. Returns the device path written.
    pub fn quarantine_restore(
        &self,
        id: &str,
        to: Option<&str>,
        on_conflict: Option<&str>,
    ) -> Result<PathBuf, String> {
        let target = match to {
            Some(p) => riposte_quarantine::RestoreTarget::Path(path_text::decode(p)),
            None => riposte_quarantine::RestoreTarget::Original,
        };
        let policy = match on_conflict.unwrap_or("refuse") {
            "refuse" => riposte_quarantine::ConflictPolicy::Refuse,
            "replace" => riposte_quarantine::ConflictPolicy::Replace,
            "rename" => riposte_quarantine::ConflictPolicy::Rename,
            other => {
                return Err(format!(
                    "unknown conflict policy '{other}'; use refuse, replace or rename"
                ))
            }
        };
        self.store()
            .restore(id, &target, policy)
            .map_err(|e| e.to_string())
    }

    /// Deletes an entry from quarantine for good.
    pub fn quarantine_delete(&self, id: &str) -> Result<(), String> {
        self.store().delete(id).map_err(|e| e.to_string())
    }

    /// Runs the EPP scan of critical areas; the outcome's detail summarises the report.
    pub fn critical_areas_scan(&self) -> Outcome {
        let report = riposte_epp::scan_critical_areas(&self.host, self.epp.as_ref());
        let mut detail = format!(
            "{}: {} files and {} boot sectors scanned, {} skipped, {} threats",
            report.engine,
            report.files_scanned,
            report.boot_sectors_scanned,
            report.skipped.len(),
            report.findings.len()
        );
        for f in &report.findings {
            detail.push_str(&format!("; {} in {}", f.threat, path_text::encode(&f.path)));
        }
        // An engine that could not be reached scanned nothing it was asked to: that is
        // no clean result.
        if let Some(e) = &report.engine_failure {
            return Outcome::new(
                "epp_critical_areas_scan",
                "failed",
                format!(
                    "{e}; the scan stopped there ({} files and {} boot sectors scanned)",
                    report.files_scanned, report.boot_sectors_scanned
                ),
            );
        }
        Outcome::new("epp_critical_areas_scan", "done", detail)
    }

    /// Checks the reported object and computes its detection record.
    pub fn examine(
        &self,
        input: &DetectionInput,
    ) -> Result<(DetectionRecord, riposte_host::FileIdentity), String> {
        let wanted = input.sha256.trim();
        if wanted.len() != 64 || !wanted.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "not acting on {}: '{}' is not a SHA-256 (64 hexadecimal digits)",
                input.path, input.sha256
            ));
        }
        let device_path = path_text::decode(&input.path);
        let opened = self
            .host
            .open_regular(&device_path)
            .map_err(|e| format!("not acting on {}: {e}", input.path))?;
        let identity = opened.identity().map_err(|e| e.to_string())?;
        if !hex::encode(identity.sha256).eq_ignore_ascii_case(wanted) {
            return Err(format!(
                "not acting on {}: it no longer has SHA-256 {} (the file changed or was replaced)",
                input.path, input.sha256
            ));
        }
        let (md5, sha1) =
            md5_sha1(&opened.file).map_err(|e| format!("cannot read {}: {e}", input.path))?;
        let record = DetectionRecord {
            detection_id: format!("{:032x}", rand::random::<u128>()),
            // Canonical (no `.`, no doubled `/`), so that the record names the object as
            // the watcher and the sweep do, however a tool typed it; the file was opened
            // through it, so its components are valid.
            path: path_text::encode(
                riposte_host::HostRoot::components(&device_path)
                    .map(|c| {
                        std::iter::once(std::ffi::OsString::from("/"))
                            .chain(c)
                            .collect::<PathBuf>()
                    })
                    .unwrap_or_else(|_| device_path.clone()),
            ),
            size: opened.meta.size,
            md5,
            sha1,
            sha256: hex::encode(identity.sha256),
            // Shown in listings, notifications and logs: escaped as paths are.
            threat: path_text::shown(&input.threat).into_owned(),
            source: path_text::shown(&input.source).into_owned(),
            source_ref: input.source_ref.clone(),
            user_name: path_text::shown(&input.user).into_owned(),
            user_uid: input.user_uid,
            detected_at_ms: crate::daemon::now_ms(),
            dropped_sha256: input.dropped_sha256.clone(),
        };
        Ok((record, identity))
    }

    /// The notify-the-user action.
    pub async fn notify(&self, record: &DetectionRecord, quarantined: bool) -> Outcome {
        let body = format!(
            "{} was detected in {}{}",
            record.threat,
            record.path,
            if quarantined {
                " and moved to quarantine."
            } else {
                "."
            }
        );
        match self
            .notifier
            .notify(&record.user_name, "Threat detected", &body)
            .await
        {
            NotifyOutcome::Shown { how } => Outcome::new("notify_user", "shown", how),
            NotifyOutcome::NotShown => Outcome::new(
                "notify_user",
                "not_shown",
                format!("user {} is not logged on to this device", record.user_name),
            ),
            NotifyOutcome::Failed { reason } => Outcome::new("notify_user", "failed", reason),
        }
    }
}

fn md5_sha1(file: &std::fs::File) -> std::io::Result<(String, String)> {
    use md5::Digest;
    use std::os::unix::fs::FileExt;
    let mut m = md5::Md5::new();
    let mut s = sha1::Sha1::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut off = 0u64;
    loop {
        let n = file.read_at(&mut buf, off)?;
        if n == 0 {
            break;
        }
        m.update(&buf[..n]);
        s.update(&buf[..n]);
        off += n as u64;
    }
    Ok((hex::encode(m.finalize()), hex::encode(s.finalize())))
}

/// Which actions the effective settings select, in the order they start (the group
/// request runs beside the notification and the EPP scan).
pub fn selected(settings: Option<&riposte_model::EffectiveSettings>) -> Option<Vec<Action>> {
    let tr = &settings?.threat_response.value;
    if !tr.enabled {
        return None;
    }
    // The group action right after the quarantine: the rest of the fleet should not
    // wait for a notification or a critical-areas scan that can take minutes.
    const ORDER: [Action; 6] = [
        Action::QuarantineAndDelete,
        Action::GroupIocScan,
        Action::NotifyUser,
        Action::EppCriticalAreasScan,
        Action::GroupIocQuarantineAndDelete,
        Action::GroupIocEppCriticalAreasScan,
    ];
    Some(
        ORDER
            .into_iter()
            .filter(|a| tr.actions.contains(a))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// clamd's `ExcludePath`s reach the client the agent scans with (clamd applies them
    /// only to what it reads by path, never to a stream); one that cannot be compiled
    /// excludes nothing, as in clamd, and does not keep the agent from starting.
    #[test]
    fn the_clamd_client_applies_clamd_conf_exclusions() {
        use riposte_epp::Epp;
        let t = tempfile::tempdir().unwrap();
        let conf = t.path().join("clamd.conf");
        std::fs::write(&conf, "MaxFileSize 1M\nExcludePath ^/home/u/skip/\n").unwrap();
        std::fs::create_dir_all(t.path().join("home/u/skip")).unwrap();
        std::fs::write(t.path().join("home/u/skip/x"), b"x").unwrap();
        // No clamd listens there: an excluded path is answered without asking it.
        let client = clamd_epp(&t.path().join("no.sock"), Some(&conf)).unwrap();
        assert_eq!(client.limits().max_file_size, 1 << 20);
        let host = riposte_host::HostRoot::new(t.path());
        match client.scan_file(&host, Path::new("/home/u/skip/x")) {
            Ok(riposte_epp::ScanOutcome::Skipped { reason }) => {
                assert!(reason.contains("ExcludePath ^/home/u/skip/"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        std::fs::write(&conf, "ExcludePath [\nExcludePath ^/home/u/skip/|\n").unwrap();
        let client = clamd_epp(&t.path().join("no.sock"), Some(&conf)).unwrap();
        match client.scan_file(&host, Path::new("/home/u/skip/x")) {
            Err(riposte_epp::EppError::Unreachable { .. }) => {}
            other => panic!("an expression left out excluded a file: {other:?}"),
        }
    }

    /// A lost quarantine key is told apart from other failures (the agent then runs
    /// without local actions rather than not at all).
    #[test]
    fn a_lost_quarantine_key_is_a_key_error() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        let data = t.path().join("data");
        std::fs::create_dir_all(root.join("home/u")).unwrap();
        std::fs::write(root.join("home/u/evil"), b"evil").unwrap();
        let (local, _) = LocalActions::open(&data, &root, None).unwrap();
        local
            .quarantine("/home/u/evil", "d1", "T", "u", None)
            .unwrap();
        drop(local);
        std::fs::remove_file(data.join("quarantine/quarantine.key")).unwrap();
        let Err(e) = LocalActions::open(&data, &root, None) else {
            panic!("opened without its key");
        };
        assert!(
            matches!(
                e.downcast_ref::<riposte_quarantine::QuarantineError>(),
                Some(riposte_quarantine::QuarantineError::Key { .. })
            ),
            "{e:#}"
        );
    }

    /// A file given to protect (`up`'s lock) is protected alone: it is neither
    /// quarantined nor restored over, while its neighbours stay in reach.
    #[test]
    fn a_protected_file_is_out_of_reach_and_its_neighbours_are_not() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        let data = t.path().join("data");
        std::fs::create_dir_all(root.join("srv/up")).unwrap();
        std::fs::write(root.join("srv/up/up.lock"), b"").unwrap();
        std::fs::write(root.join("srv/up/up.lock2"), b"neighbour").unwrap();
        let (local, _) =
            LocalActions::open_protecting(&data, &root, None, &[root.join("srv/up/up.lock")])
                .unwrap();
        let refused = local
            .quarantine("/srv/up/up.lock", "d1", "T", "u", None)
            .unwrap_err();
        assert!(refused.contains("protected"), "{refused}");
        assert!(root.join("srv/up/up.lock").exists());
        local
            .quarantine("/srv/up/up.lock2", "d2", "T", "u", None)
            .unwrap();
        assert!(!root.join("srv/up/up.lock2").exists());
    }
}
