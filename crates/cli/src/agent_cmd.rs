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
    /// Enrollment token (needed once).
    #[arg(long)]
    pub enroll_token: Option<String>,
    /// Device name shown in the console (default: host name).
    #[arg(long)]
    pub name: Option<String>,
    /// Treat this directory as the device's `/` for watching, scans and critical areas.
    #[arg(long, default_value = "/")]
    pub host_root: PathBuf,
    #[command(subcommand)]
    pub command: Option<AgentCommand>,
}

#[derive(Subcommand, Debug)]
pub enum AgentCommand {
    /// Identity, server, connection state, effective settings, tasks.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Talk to the running agent over its control socket.
    Ctl {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
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
        Ok(id) => Ok(id),
        Err(IdentityError::NotEnrolled) => {
            let (Some(server), Some(ca), Some(token)) = (&a.server, &a.ca, &a.enroll_token) else {
                bail!(
                    "this agent is not enrolled yet: give --server URL --ca FILE --enroll-token T"
                );
            };
            let ca_pem = std::fs::read_to_string(ca)
                .with_context(|| format!("cannot read the CA file {}", ca.display()))?;
            let host = hostname();
            let name = a.name.clone().unwrap_or_else(|| host.clone());
            let id = identity::enroll(server, &ca_pem, token, &name, &host).await?;
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
        Some(AgentCommand::Ctl { .. }) => {
            eprintln!("riposte agent ctl: not available yet in this build");
            return Ok(ExitCode::from(2));
        }
        None => {}
    }
    ensure_enrolled(&a).await?;
    let (agent, rx) = Agent::open(
        a.data.clone(),
        Arc::new(SweepRunner {
            host_root: a.host_root.clone(),
        }),
    )?;
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let handle = tokio::spawn(daemon::run(agent, rx, stop));
    crate::shutdown_signal().await;
    let _ = stop_tx.send(true);
    let _ = handle.await;
    Ok(ExitCode::SUCCESS)
}

fn status(a: &AgentArgs, json: bool) -> anyhow::Result<ExitCode> {
    let id = Identity::load(&a.data)?;
    let state = riposte_agent::state::StateFile::new(&a.data).load()?;
    let tasks: Vec<serde_json::Value> = state
        .tasks
        .values()
        .map(|t| serde_json::json!({"task_id": t.offer.task_id, "state": t.state, "autonomous": t.offer.autonomous}))
        .collect();
    let v = serde_json::json!({
        "device_id": id.device_id,
        "server": id.server_url,
        "channel": id.channel_addr,
        "connected": state.connected,
        "link": state.last_link_note,
        "last_applied": state.last_applied,
        "settings": state.settings,
        "tasks": tasks,
        "unsent_events": state.outbox.len(),
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("device:    {}", id.device_id);
        println!("server:    {} (channel {})", id.server_url, id.channel_addr);
        println!("connected: {} ({})", state.connected, state.last_link_note);
        match &state.settings {
            Some(s) => {
                let tr = &s.threat_response.value;
                let actions: Vec<&str> = tr.actions.iter().map(|a| a.as_str()).collect();
                println!(
                    "threat response: {} [{}]",
                    if tr.enabled { "on" } else { "off" },
                    actions.join(", ")
                );
            }
            None => println!("threat response: no settings received yet"),
        }
        println!("tasks:     {}", tasks.len());
        println!("unsent events: {}", state.outbox.len());
    }
    Ok(ExitCode::SUCCESS)
}
