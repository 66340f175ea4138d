//! `riposte up`: the server and one agent on this machine, with embedded defaults.

use anyhow::Context;
use clap::Args;
use riposte_agent::daemon;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct UpArgs {
    /// Where everything keeps its data (server/, sandbox/, agent/).
    #[arg(long, default_value = "riposte-data")]
    pub data: PathBuf,
    /// HTTPS address of the API and console.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
}

/// The group the local agent joins.
pub const DEFAULT_GROUP: &str = "Local";

pub async fn run(a: UpArgs) -> anyhow::Result<ExitCode> {
    let server_dir = a.data.join("server");
    let agent_dir = a.data.join("agent");
    std::fs::create_dir_all(&a.data)
        .with_context(|| format!("cannot create {}", a.data.display()))?;
    let server = riposte_server::start(riposte_server::ServerOptions::new(
        server_dir.clone(),
        a.listen,
    ))
    .await
    .context("cannot start the server")?;
    let core = server.core.clone();
    let url = format!("https://{}", server.api_addr);
    let system = riposte_server::service::Caller {
        principal: riposte_model::Principal::Account {
            name: "riposte-up".into(),
            role: riposte_model::Role::Administrator,
        },
        source: "local".into(),
    };
    if core.store.group_by_name(DEFAULT_GROUP).await.is_err() {
        core.create_group(&system, DEFAULT_GROUP, None).await?;
        core.set_policy_threat_response(
            &system,
            DEFAULT_GROUP,
            &riposte_server::service::ThreatResponsePatch {
                mode: Some(riposte_model::PolicyMode::Enforce),
                enabled: Some(true),
                actions: Some(vec![
                    riposte_model::Action::QuarantineAndDelete,
                    riposte_model::Action::NotifyUser,
                ]),
                special_password: None,
            },
        )
        .await?;
    }
    if riposte_agent::identity::Identity::load(&agent_dir).is_err() {
        let (token, _) = core
            .create_enroll_token(&system, DEFAULT_GROUP, 3600, 1)
            .await?;
        let args = crate::agent_cmd::AgentArgs {
            data: agent_dir.clone(),
            server: Some(url.clone()),
            ca: Some(server_dir.join("ca.pem")),
            enroll_token: Some(token),
            name: Some("local-agent".into()),
            host_root: "/".into(),
            command: None,
        };
        crate::agent_cmd::ensure_enrolled(&args).await?;
    }
    let (agent, rx) = crate::agent_cmd::open_agent(&agent_dir, std::path::Path::new("/"))?;
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let agent_task = tokio::spawn(daemon::run(agent, rx, stop));

    println!("Riposte is up.");
    println!("  console and API: {url}/");
    println!("  CA certificate:  {}", server_dir.join("ca.pem").display());
    match &server.generated_admin_password {
        Some(pw) => println!("  admin user:      admin, one-time password: {pw} (shown only once)"),
        None => println!("  admin user:      admin (password shown at the first start)"),
    }
    println!("  agent data:      {}", agent_dir.display());
    println!("Press Ctrl-C to stop.");
    crate::shutdown_signal().await;
    eprintln!("shutting down");
    let _ = stop_tx.send(true);
    let _ = agent_task.await;
    server.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
