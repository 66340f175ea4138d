//! `riposte agent`: enroll once, then run; `status` shows what the agent knows.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use riposte_agent::daemon::{self, Agent};
use riposte_agent::identity::{self, Identity, IdentityError};
use riposte_agent::scanner::SweepRunner;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// The agent's data directory (identity, state, quarantine).
    #[arg(long)]
    pub data: PathBuf,
    /// Server API URL, for enrollment (e.g. https://server:8443).
    #[arg(long)]
    pub server: Option<String>,
    /// The server's CA certificate, pinned at enrollment.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Enrollment token (needed once). Older servers made tokens that may begin with `-`.
    /// A command line is visible to every user of the machine (`ps`): prefer
    /// --enroll-token-file.
    #[arg(long, allow_hyphen_values = true, conflicts_with = "enroll_token_file")]
    pub enroll_token: Option<String>,
    /// A file holding the enrollment token (its first line).
    #[arg(long)]
    pub enroll_token_file: Option<PathBuf>,
    /// Device name shown in the console (default: host name).
    #[arg(long)]
    pub name: Option<String>,
    /// Treat this directory as the device's `/` for watching, scans and critical areas.
    #[arg(long, default_value = "/")]
    pub host_root: PathBuf,
    /// A directory the agent never quarantines from nor restores into, as its own
    /// --data (repeatable): another Riposte part's data on this machine, such as a
    /// server's (its CA key) or a sandbox's.
    #[arg(long = "protect", value_name = "DIR")]
    pub protect: Vec<PathBuf>,
    /// Use ClamAV's clamd at this unix socket as the EPP (default: the built-in scanner).
    #[arg(long)]
    pub clamd: Option<PathBuf>,
    /// clamd's configuration file, for its size limits and its `ExcludePath`s, which the
    /// agent applies to the files it streams to clamd.
    #[arg(long, requires = "clamd")]
    pub clamd_conf: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<AgentCommand>,
}

#[derive(Subcommand, Debug)]
pub enum AgentCommand {
    /// Identity, server, connection state, effective settings, tasks. Exits 0 when the
    /// agent is running, 3 when it is not (as `systemctl status` does).
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Talk to the running agent over its control socket (root only).
    #[command(subcommand)]
    Ctl(CtlCommand),
}

#[derive(Subcommand, Debug)]
pub enum CtlCommand {
    /// The quarantine store of this device.
    #[command(subcommand)]
    Quarantine(QuarantineCmd),
    /// Content allowed on this device: restoring a quarantined object allows its
    /// SHA-256, so that neither the sandbox integration, nor IOC scan tasks, nor
    /// `report-detection` act on it again.
    #[command(subcommand)]
    Allowed(AllowedCmd),
    /// Report a malicious object: the agent responds per its Threat Response settings.
    /// Content an administrator allowed here (by restoring it) is refused with an error
    /// and left alone; see `allowed`.
    ///
    /// Exits 0 when every action was taken (or skipped as the settings say), 1 when one
    /// failed (the outcomes say which and why), 2 when the detection was not recorded.
    ReportDetection {
        /// Device path of the object, as detections spell it: a byte that is not UTF-8 as
        /// \xHH, a backslash as \\ (a lone backslash is taken as it is).
        #[arg(long)]
        path: String,
        /// Its SHA-256; the agent acts only while the file at PATH has it.
        #[arg(long)]
        sha256: String,
        /// Threat name.
        #[arg(long)]
        threat: String,
        /// Account under which the threat was detected.
        #[arg(long)]
        user: String,
        /// Who gave the verdict.
        #[arg(long, default_value = "external")]
        source: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum AllowedCmd {
    /// The allowed SHA-256s.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Withdraw an allowance: the content is acted on again when it is found.
    Withdraw {
        sha256: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum QuarantineCmd {
    List {
        #[arg(long)]
        json: bool,
    },
    Restore {
        id: String,
        /// Restore to this device path instead of the original one (spelt as in
        /// detections: \xHH for a byte that is not UTF-8).
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        on_conflict: crate::conflict::OnConflict,
        #[arg(long)]
        json: bool,
    },
    Delete {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}

/// Enrolls the agent if its data directory has no identity yet.
pub async fn ensure_enrolled(a: &AgentArgs) -> anyhow::Result<Identity> {
    match Identity::load(&a.data) {
        Ok(id) => {
            if a.enroll_token.is_some() || a.enroll_token_file.is_some() {
                eprintln!(
                    "riposte agent: {} already holds device {}'s identity: the enrollment \
                     token is not used (to enroll again, give a new --data directory)",
                    a.data.display(),
                    id.device_id
                );
            }
            Ok(id)
        }
        Err(IdentityError::NotEnrolled) => {
            let token = match (&a.enroll_token, &a.enroll_token_file) {
                (Some(t), _) => Some(t.clone()),
                (None, Some(f)) => Some(crate::read_secret_file(f)?.trim().to_string()),
                (None, None) => None,
            };
            let (Some(server), Some(ca), Some(token)) = (&a.server, &a.ca, token) else {
                bail!(
                    "this agent is not enrolled yet: give --server URL --ca FILE and \
                     --enroll-token-file FILE (or --enroll-token T)"
                );
            };
            let ca_pem = std::fs::read_to_string(ca)
                .with_context(|| format!("cannot read the CA file {}", ca.display()))?;
            let host = hostname();
            let name = a.name.clone().unwrap_or_else(|| host.clone());
            let id = enroll_with_retries(server, &ca_pem, &token, &name, &host).await?;
            std::fs::create_dir_all(&a.data)
                .with_context(|| format!("cannot create {}", a.data.display()))?;
            {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(&a.data, std::fs::Permissions::from_mode(0o700));
            }
            id.save(&a.data)?;
            eprintln!(
                "enrolled as device {} with server {}",
                id.device_id, id.server_url
            );
            Ok(id)
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn run(a: AgentArgs) -> anyhow::Result<ExitCode> {
    match &a.command {
        Some(AgentCommand::Status { json }) => return status(&a, *json),
        Some(AgentCommand::Ctl(c)) => return ctl(&a, c).await,
        None => {}
    }
    ensure_enrolled(&a).await?;
    let stop_signal = crate::shutdown_signal();
    let epp: Option<Arc<dyn riposte_epp::Epp>> = match &a.clamd {
        Some(sock) => Some(Arc::new(riposte_agent::response::clamd_epp(
            sock,
            a.clamd_conf.as_deref(),
        )?)),
        None => None,
    };
    let (agent, rx) = open_agent(&a.data, &a.host_root, epp, &a.protect)?;
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let handle = tokio::spawn(daemon::run(agent, rx, stop));
    stop_signal.await;
    let _ = stop_tx.send(true);
    let _ = handle.await;
    Ok(ExitCode::SUCCESS)
}

fn status(a: &AgentArgs, json: bool) -> anyhow::Result<ExitCode> {
    if !a.data.is_dir() {
        anyhow::bail!(
            "no agent data in {}: give the --data the agent runs with",
            a.data.display()
        );
    }
    let id = Identity::load(&a.data)?;
    let mut state = riposte_agent::state::StateFile::new(&a.data).load()?;
    // The state file says what the agent last knew; a stopped (or crashed) agent is
    // connected to nothing, whatever it last wrote.
    let running =
        std::os::unix::net::UnixStream::connect(riposte_agent::control::socket_path(&a.data))
            .is_ok();
    if !running {
        state.connected = false;
        state.last_link_note =
            "the agent is not running (its control socket does not answer)".into();
    }
    let tasks: Vec<serde_json::Value> = state
        .tasks
        .values()
        .map(|t| serde_json::json!({"task_id": t.offer.task_id, "state": t.state, "autonomous": t.offer.autonomous}))
        .collect();
    let expires = id.certificate_expires_ms();
    let now = riposte_agent::daemon::now_ms();
    let renewal = id
        .pending_renewal(&a.data)
        .map(|r| r.certificate_expires_ms());
    let v = serde_json::json!({
        "device_id": id.device_id,
        "server": id.server_url,
        "channel": id.channel_addr,
        "certificate_expires_ms": expires,
        "certificate_expired": expires.is_some_and(|at| at <= now),
        "certificate_renewal_pending": renewal.is_some(),
        "certificate_renewal_expires_ms": renewal.flatten(),
        "running": running,
        "connected": state.connected,
        "link": state.last_link_note,
        "last_applied": state.last_applied,
        "settings": state.settings,
        "tasks": tasks,
        "unsent_events": state.outbox.len(),
        "quarantine": quarantine_summary(&a.data, &a.host_root),
    });
    if json {
        outln!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        outln!("device:    {}", id.device_id);
        outln!("server:    {} (channel {})", id.server_url, id.channel_addr);
        outln!("connected: {} ({})", state.connected, state.last_link_note);
        for line in certificate_lines(expires, now, renewal) {
            outln!("{line}");
        }
        match &state.settings {
            Some(s) => {
                let tr = &s.threat_response.value;
                let actions: Vec<&str> = tr.actions.iter().map(|a| a.as_str()).collect();
                outln!(
                    "threat response: {} [{}], from {}",
                    if tr.enabled { "on" } else { "off" },
                    actions.join(", "),
                    s.threat_response.provenance.describe()
                );
                let si = &s.sandbox_integration.value;
                // A folder that does not exist is not watched until it does (the agent
                // looks for it every few seconds).
                let folders: Vec<String> = si
                    .watch
                    .iter()
                    .map(|f| {
                        if std::path::Path::new(f).is_dir() {
                            f.clone()
                        } else {
                            format!("{f} (missing: watched once it exists)")
                        }
                    })
                    .collect();
                outln!(
                    "sandbox integration: {} sandbox server(s), watching [{}], from {}",
                    si.sandboxes.len(),
                    folders.join(", "),
                    s.sandbox_integration.provenance.describe()
                );
            }
            None => outln!("threat response: no settings received yet"),
        }
        outln!("tasks:     {}", tasks.len());
        outln!("unsent events: {}", state.outbox.len());
        for line in quarantine_lines(&v["quarantine"]) {
            outln!("{line}");
        }
    }
    Ok(if running {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

/// What the text `status` says of the quarantine ([`quarantine_summary`]): its size, or
/// why it cannot be read, and each entry whose record cannot be read (said in text too,
/// not only in JSON).
fn quarantine_lines(q: &serde_json::Value) -> Vec<String> {
    let mut lines = vec![match q["error"].as_str() {
        Some(error) => format!("quarantine: cannot be read: {error}"),
        None => format!("quarantine: {} objects, {} bytes", q["objects"], q["bytes"]),
    }];
    for e in q["unreadable"].as_array().into_iter().flatten() {
        lines.push(format!(
            "quarantine entry {} is unreadable: {}",
            e["id"].as_str().unwrap_or("?"),
            e["reason"].as_str().unwrap_or("")
        ));
    }
    lines
}

/// What `status` says of the device certificate: until when it is valid (renewed over
/// the channel well before then), whether a renewed one waits for the server to accept
/// it (`renewal`: its expiry, `None` inside when it cannot be read), and, once no usable
/// certificate is left, what to do.
fn certificate_lines(
    expires_ms: Option<i64>,
    now_ms: i64,
    renewal: Option<Option<i64>>,
) -> Vec<String> {
    let renewal_usable = renewal.is_some_and(|r| r.is_some_and(|at| at > now_ms));
    let mut lines = Vec::new();
    match expires_ms {
        Some(at) if at <= now_ms && !renewal_usable => lines.push(format!(
            "certificate: EXPIRED on {}: enroll the agent again in a new data directory",
            riposte_model::time::utc(at)
        )),
        Some(at) if at <= now_ms => lines.push(format!(
            "certificate: EXPIRED on {}",
            riposte_model::time::utc(at)
        )),
        Some(at) => lines.push(format!(
            "certificate: valid until {}",
            riposte_model::time::utc(at)
        )),
        None => {}
    }
    match renewal {
        Some(Some(at)) if at > now_ms => lines.push(format!(
            "certificate: a renewed one, valid until {}, waits to be accepted by the server \
             (the agent offers it when it connects)",
            riposte_model::time::utc(at)
        )),
        Some(_) => lines.push(
            "certificate: a renewed one waits, but it has expired or cannot be read: \
             the server will refuse it"
                .into(),
        ),
        None => {}
    }
    lines
}

/// Opens the agent with its local actions (recovering the quarantine first).
pub fn open_agent(
    data: &std::path::Path,
    host_root: &std::path::Path,
    epp: Option<Arc<dyn riposte_epp::Epp>>,
    protect: &[PathBuf],
) -> anyhow::Result<(
    Arc<Agent>,
    tokio::sync::mpsc::UnboundedReceiver<riposte_proto::AgentToServer>,
)> {
    // One agent per data directory: a second would recover the first one's quarantine
    // under it, and on exit remove the control socket the first one listens on.
    crate::hold_lock(&data.join("agent.lock"), || {
        format!(
            "another agent is running on {} (it holds agent.lock); stop it first",
            data.display()
        )
    })?;
    for dir in protect {
        if !dir.exists() {
            eprintln!(
                "riposte agent: warning: --protect {} does not exist (yet); it is protected \
                 as a directory, by its path as given",
                dir.display()
            );
        }
    }
    // A lost quarantine key stops the quarantine, not the agent: detections are still
    // reported and group sweeps still run, and the administrator is told.
    let (local, recovery, unavailable) =
        match riposte_agent::response::LocalActions::open_protecting(data, host_root, epp, protect)
        {
            Ok((local, recovery)) => (Some(Arc::new(local)), recovery, None),
            Err(e)
                if matches!(
                    e.downcast_ref::<riposte_quarantine::QuarantineError>(),
                    Some(riposte_quarantine::QuarantineError::Key { .. })
                ) =>
            {
                eprintln!(
                    "riposte agent: warning: {e:#}; running without local actions \
                     (quarantine, notification, EPP scan) until it is mended"
                );
                (None, Default::default(), Some(format!("{e:#}")))
            }
            Err(e) => return Err(e),
        };
    // What a stop cut short, finished or undone now: said in words (the ids are the
    // quarantine entries', as `ctl quarantine list` shows them).
    for (ids, what) in [
        (&recovery.completed, "quarantines finished"),
        (
            &recovery.rolled_back,
            "quarantines rolled back (the object stays where it was)",
        ),
        (&recovery.restores_cleaned, "restores cut short, cleaned up"),
    ] {
        if !ids.is_empty() {
            eprintln!(
                "quarantine recovery: {} {what}: {}",
                ids.len(),
                ids.join(", ")
            );
        }
    }
    for w in &recovery.warnings {
        eprintln!("quarantine recovery: warning: {w}");
    }
    let runner = Arc::new(SweepRunner::new(host_root.to_path_buf()));
    let (agent, rx) = Agent::open(data.to_path_buf(), runner, local)?;
    if let Some(why) = unavailable {
        agent.run_without_local_actions(why);
    }
    agent.settle_interrupted_quarantine_changes(&recovery.restores_cleaned);
    agent.note_originals_kept(&recovery.originals_kept);
    Ok((agent, rx))
}

async fn ctl(a: &AgentArgs, c: &CtlCommand) -> anyhow::Result<ExitCode> {
    use riposte_agent::control::{call, Request};
    let (req, json) = match c {
        CtlCommand::Quarantine(QuarantineCmd::List { json }) => (Request::QuarantineList, *json),
        CtlCommand::Quarantine(QuarantineCmd::Restore {
            id,
            to,
            on_conflict,
            json,
        }) => (
            Request::QuarantineRestore {
                id: id.clone(),
                to: to.clone(),
                on_conflict: Some(on_conflict.policy().into()),
            },
            *json,
        ),
        CtlCommand::Quarantine(QuarantineCmd::Delete { id, json }) => {
            (Request::QuarantineDelete { id: id.clone() }, *json)
        }
        CtlCommand::Allowed(AllowedCmd::List { json }) => (Request::AllowedList, *json),
        CtlCommand::Allowed(AllowedCmd::Withdraw { sha256, json }) => (
            Request::AllowedWithdraw {
                sha256: sha256.clone(),
            },
            *json,
        ),
        CtlCommand::ReportDetection {
            path,
            sha256,
            threat,
            user,
            source,
            json,
        } => (
            Request::ReportDetection(riposte_agent::response::DetectionInput {
                path: path.clone(),
                sha256: sha256.clone(),
                threat: threat.clone(),
                user: user.clone(),
                user_uid: None,
                source: source.clone(),
                source_ref: None,
                dropped_sha256: Vec::new(),
                seen: None,
            }),
            *json,
        ),
    };
    let v = call(&a.data, &req).await?;
    if let CtlCommand::Quarantine(QuarantineCmd::List { .. }) = c {
        return print_quarantine_list(&v, json);
    }
    // A response some of whose actions failed is not a success: a script that reports a
    // detection must learn that the object may still be in place.
    let failed: Vec<String> = match c {
        CtlCommand::ReportDetection { .. } => v["outcomes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|o| o["outcome"] == "failed")
            .map(|o| o["action"].as_str().unwrap_or("?").to_string())
            .collect(),
        _ => Vec::new(),
    };
    let status = if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "riposte: the response is incomplete: failed: {}",
            failed.join(", ")
        );
        ExitCode::FAILURE
    };
    if json {
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(status);
    }
    match c {
        // Printed above.
        CtlCommand::Quarantine(QuarantineCmd::List { .. }) => {}
        CtlCommand::Quarantine(QuarantineCmd::Restore { .. }) => {
            outln!("restored to {}", v["restored_to"].as_str().unwrap_or("?"))
        }
        CtlCommand::Quarantine(QuarantineCmd::Delete { id, .. }) => {
            outln!("quarantine entry {id} deleted")
        }
        CtlCommand::Allowed(AllowedCmd::List { .. }) => {
            let list = v["allowed"].as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                outln!("no content is allowed on this device");
            }
            for h in list {
                outln!("{}", h.as_str().unwrap_or("?"));
            }
        }
        CtlCommand::Allowed(AllowedCmd::Withdraw { .. }) => {
            outln!(
                "allowance of {} withdrawn",
                v["withdrawn"].as_str().unwrap_or("?")
            )
        }
        CtlCommand::ReportDetection { .. } => {
            outln!(
                "detection {}",
                v["detection"]["detection_id"].as_str().unwrap_or("?")
            );
            for o in v["outcomes"].as_array().cloned().unwrap_or_default() {
                outln!(
                    "  {}: {} — {}",
                    o["action"].as_str().unwrap_or("?"),
                    o["outcome"].as_str().unwrap_or("?"),
                    o["detail"].as_str().unwrap_or("")
                );
            }
        }
    }
    Ok(status)
}

/// Prints the quarantine as listed by the agent: entries on standard output (a JSON array
/// with `--json`, as before damaged records were reported), damaged records on standard
/// error. Some entries unreadable is a failure: a script must not take the list as whole.
fn print_quarantine_list(v: &serde_json::Value, json: bool) -> anyhow::Result<ExitCode> {
    let entries = v["entries"].as_array().cloned().unwrap_or_default();
    if json {
        outln!("{}", serde_json::to_string_pretty(&entries)?);
    } else {
        for e in &entries {
            outln!(
                "{}  {}  {} bytes  {}",
                e["id"].as_str().unwrap_or("?"),
                e["original_path"].as_str().unwrap_or("?"),
                e["size"],
                e["threat_name"].as_str().unwrap_or("")
            );
        }
    }
    let unreadable = v["unreadable"].as_array().cloned().unwrap_or_default();
    for e in &unreadable {
        eprintln!(
            "quarantine entry {} is unreadable: {}",
            e["id"].as_str().unwrap_or("?"),
            e["reason"].as_str().unwrap_or("")
        );
    }
    Ok(if unreadable.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn quarantine_summary(data: &std::path::Path, host_root: &std::path::Path) -> serde_json::Value {
    // Opening a quarantine makes its folders and its key: a quarantine that never held
    // anything is said empty without opening it, so that a status creates nothing.
    // (Entries without their key are left to the store, which refuses them and says why.)
    let dir = data.join("quarantine");
    // Only what is known to be missing or empty counts: a folder that cannot be read is
    // left to the store, which says why.
    let missing = |p: &std::path::Path| {
        std::fs::symlink_metadata(p).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
    };
    let holds_nothing = |sub: &str| match std::fs::read_dir(dir.join(sub)) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    };
    if missing(&dir.join("quarantine.key"))
        && ["records", "objects", "journal"]
            .into_iter()
            .all(holds_nothing)
    {
        return serde_json::json!({ "objects": 0, "bytes": 0, "unreadable": [] });
    }
    let store = riposte_quarantine::QuarantineStore::open_no_recover(
        data.join("quarantine"),
        riposte_host::HostRoot::new(host_root),
        Default::default(),
    );
    match store.and_then(|s| s.list()) {
        Ok(list) => serde_json::json!({
            "objects": list.entries.len(),
            "bytes": list.entries.iter().map(|r| r.size).sum::<u64>(),
            "unreadable": list.unreadable,
        }),
        Err(e) => serde_json::json!({ "error": e.to_string() }),
    }
}

/// Enrolls, retrying while the server cannot be reached (it may be starting or briefly
/// overloaded); a refusal (bad token, wrong CA) ends at once. Gives up after five minutes.
async fn enroll_with_retries(
    server: &str,
    ca_pem: &str,
    token: &str,
    name: &str,
    host: &str,
) -> anyhow::Result<Identity> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    let mut wait = std::time::Duration::from_secs(1);
    loop {
        match identity::enroll(server, ca_pem, token, name, host).await {
            Ok(id) => return Ok(id),
            Err(e @ IdentityError::Unreachable { .. })
                if std::time::Instant::now() + wait < deadline =>
            {
                eprintln!("{e}; retrying in {} s", wait.as_secs());
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_secs(30));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{certificate_lines, quarantine_lines, quarantine_summary, AgentArgs};

    /// The text status lists the entries it cannot read, as the JSON one does.
    #[test]
    fn a_text_status_lists_unreadable_entries() {
        let q = serde_json::json!({
            "objects": 4, "bytes": 10,
            "unreadable": [{"id": "q-1", "reason": "record unreadable: expected value"}],
        });
        assert_eq!(
            quarantine_lines(&q),
            [
                "quarantine: 4 objects, 10 bytes",
                "quarantine entry q-1 is unreadable: record unreadable: expected value"
            ]
        );
        let q = serde_json::json!({ "error": "the key is missing" });
        assert_eq!(
            quarantine_lines(&q),
            ["quarantine: cannot be read: the key is missing"]
        );
        // Through the store: an entry whose record was damaged.
        let t = tempfile::tempdir().unwrap();
        let (root, data) = (t.path().join("root"), t.path().join("data"));
        std::fs::create_dir_all(root.join("home")).unwrap();
        std::fs::write(root.join("home/evil"), b"payload").unwrap();
        let (store, _) = riposte_quarantine::QuarantineStore::open(
            data.join("quarantine"),
            riposte_host::HostRoot::new(&root),
            riposte_quarantine::QuarantineConfig {
                min_free_bytes: 0,
                ..Default::default()
            },
        )
        .unwrap();
        let rec = store
            .quarantine(&riposte_quarantine::QuarantineRequest {
                path: "/home/evil".into(),
                detection_id: "d".into(),
                threat_name: "T".into(),
                user: "u".into(),
                expected: None,
            })
            .unwrap();
        drop(store);
        let record = data.join(format!("quarantine/records/{}.json", rec.id));
        std::fs::write(&record, b"not a record").unwrap();
        let lines = quarantine_lines(&quarantine_summary(&data, &root));
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("quarantine entry {} is unreadable: ", rec.id))),
            "{lines:?}"
        );
    }

    /// A status reads: a quarantine that never held anything is said empty, and neither
    /// its folders nor its key are made; entries without their key are still said.
    #[test]
    fn a_status_creates_no_quarantine() {
        let data = tempfile::tempdir().unwrap();
        let v = quarantine_summary(data.path(), std::path::Path::new("/"));
        assert_eq!(v["objects"], 0, "{v}");
        assert_eq!(std::fs::read_dir(data.path()).unwrap().count(), 0);
        // Emptied folders left behind count as nothing held either.
        std::fs::create_dir_all(data.path().join("quarantine/records")).unwrap();
        let v = quarantine_summary(data.path(), std::path::Path::new("/"));
        assert_eq!(v["objects"], 0, "{v}");
        assert!(!data.path().join("quarantine/quarantine.key").exists());
        // A record whose key is gone: the store's refusal is what the status says.
        std::fs::write(data.path().join("quarantine/records/x.json"), "{}").unwrap();
        let v = quarantine_summary(data.path(), std::path::Path::new("/"));
        assert!(
            v["error"]
                .as_str()
                .is_some_and(|e| e.contains("restore the key")),
            "{v}"
        );
        assert!(!data.path().join("quarantine/quarantine.key").exists());
    }
    use clap::Parser;
    use riposte_model::time::utc;

    #[test]
    fn status_says_until_when_the_certificate_holds_and_what_to_do_once_it_has_expired() {
        const DAY: i64 = 86_400_000;
        let now = 1_800_000_000_000;
        assert_eq!(
            certificate_lines(Some(now + DAY), now, None),
            [format!("certificate: valid until {}", utc(now + DAY))]
        );
        assert_eq!(
            certificate_lines(Some(now - DAY), now, None),
            [format!(
                "certificate: EXPIRED on {}: enroll the agent again in a new data directory",
                utc(now - DAY)
            )]
        );
        // A renewal still to be accepted: the agent offers it, so no advice to enroll.
        let waiting = certificate_lines(Some(now - DAY), now, Some(Some(now + 365 * DAY)));
        assert_eq!(
            waiting[0],
            format!("certificate: EXPIRED on {}", utc(now - DAY))
        );
        assert!(
            waiting[1].contains(&format!(
                "a renewed one, valid until {}",
                utc(now + 365 * DAY)
            )),
            "{waiting:?}"
        );
        assert_eq!(waiting.len(), 2);
        // An expired or unreadable renewal helps nothing.
        for useless in [Some(now - 1), None] {
            let lines = certificate_lines(Some(now - DAY), now, Some(useless));
            assert!(lines[0].ends_with("enroll the agent again in a new data directory"));
            assert!(lines[1].contains("the server will refuse it"), "{lines:?}");
        }
        assert!(certificate_lines(None, now, None).is_empty());
    }

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        agent: AgentArgs,
    }

    #[test]
    fn an_enrollment_token_may_begin_with_a_hyphen() {
        let w = Wrapper::try_parse_from(["agent", "--data", "d", "--enroll-token", "-Kx_9"])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(w.agent.enroll_token.as_deref(), Some("-Kx_9"));
    }

    #[test]
    fn an_enrollment_token_is_given_once() {
        let both = Wrapper::try_parse_from([
            "agent",
            "--data",
            "d",
            "--enroll-token",
            "t",
            "--enroll-token-file",
            "f",
        ]);
        assert!(both.is_err(), "a token on the command line and in a file");
    }
}
