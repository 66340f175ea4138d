//! `riposte up`: the server, the built-in sandbox and one agent on this machine, with
//! embedded defaults; `--demo` then shows the whole flow on a harmless test object.

use anyhow::Context;
use clap::Args;
use riposte_agent::daemon;
use riposte_model::{Action, PolicyMode, Principal, Role};
use riposte_server::service::{Caller, Core, SandboxPatch, ThreatResponsePatch};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct UpArgs {
    /// Where everything keeps its data (server/, sandbox/, agent/, watched/).
    #[arg(long, default_value = "riposte-data")]
    pub data: PathBuf,
    /// HTTPS address of the API and console (the agent channel uses the next port, the
    /// sandbox the one after).
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// Drop a harmless test object (EICAR) into the watched folder and show the response.
    #[arg(long)]
    pub demo: bool,
}

/// The group the local agent joins.
pub const DEFAULT_GROUP: &str = "Local";

fn system() -> Caller {
    Caller {
        principal: Principal::Account {
            name: "riposte-up".into(),
            role: Role::Administrator,
        },
        source: "local".into(),
        request: None,
    }
}

/// First start: the default group, the special account, and a policy enabling Threat
/// Response with local actions, the group IOC scan (reporting, not removing) and the
/// built-in sandbox.
async fn configure(
    core: &Core,
    watched: &Path,
    sandbox_url: &str,
    sandbox_cert: &str,
) -> anyhow::Result<()> {
    let me = system();
    if let Ok(group) = core.store.group_by_name(DEFAULT_GROUP).await {
        // Started again with another --listen: the group's policy still names the
        // built-in sandbox at its old address (known by its certificate, which is kept):
        // pointed at this start's. A sandbox an administrator chose is left alone.
        let section = core
            .store
            .policy(group.id)
            .await?
            .and_then(|p| p.sandbox_integration);
        if let Some(section) = section {
            let v = &section.value;
            let built_in = v.sandbox_ca_pem.as_deref() == Some(sandbox_cert)
                && v.sandboxes.len() == 1
                && v.sandboxes[0] != sandbox_url;
            if built_in {
                core.set_policy_sandbox(
                    &me,
                    DEFAULT_GROUP,
                    &SandboxPatch {
                        sandboxes: Some(vec![sandbox_url.to_string()]),
                        ..Default::default()
                    },
                )
                .await?;
            }
        }
        return Ok(());
    }
    core.create_group(&me, DEFAULT_GROUP, None).await?;
    let special_password = if core.store.special_account().await?.is_none() {
        // 16 characters, the longest the special account allows.
        let pw: String = riposte_server::secrets::random_token()[..16].to_string();
        core.create_special(&me, &pw).await?;
        Some(pw)
    } else {
        None
    };
    let mut actions = vec![Action::QuarantineAndDelete, Action::NotifyUser];
    // The group's IOC scan sweeps the whole machine: on a machine `up` runs on (a
    // workstation, a test host) it reports the copies it finds, and removes nothing
    // outside the watched folder unless an administrator adds
    // `group_ioc_quarantine_and_delete` to the policy.
    if special_password.is_some() {
        actions.push(Action::GroupIocScan);
    }
    core.set_policy_threat_response(
        &me,
        DEFAULT_GROUP,
        &ThreatResponsePatch {
            mode: Some(PolicyMode::Enforce),
            enabled: Some(true),
            actions: Some(actions),
            special_password,
        },
    )
    .await?;
    core.set_policy_sandbox(
        &me,
        DEFAULT_GROUP,
        &SandboxPatch {
            mode: Some(PolicyMode::Enforce),
            sandboxes: Some(vec![sandbox_url.to_string()]),
            sandbox_ca_pem: Some(sandbox_cert.to_string()),
            watch: Some(vec![watched.display().to_string()]),
            request_timeout_secs: Some(30),
        },
    )
    .await?;
    Ok(())
}

/// Points `up`'s own agent at this start's server, where data set up with another
/// --listen left it naming the old addresses (it would try them for ever).
fn repoint_agent(agent_dir: &Path, url: &str, channel_addr: &str) -> anyhow::Result<()> {
    let mut id = riposte_agent::identity::Identity::load(agent_dir)?;
    if id.server_url == url && id.channel_addr == channel_addr {
        return Ok(());
    }
    id.server_url = url.to_string();
    id.channel_addr = channel_addr.to_string();
    id.save(agent_dir)
        .with_context(|| format!("cannot point the agent in {} at {url}", agent_dir.display()))?;
    Ok(())
}

pub async fn run(a: UpArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&a.data)
        .with_context(|| format!("cannot create {}", a.data.display()))?;
    let data = std::fs::canonicalize(&a.data)?;
    // Nobody else may rename what it holds (the agent's data, the lock), whatever the
    // umask it was made under.
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&data)?.permissions().mode();
        if mode & 0o022 != 0 {
            std::fs::set_permissions(&data, std::fs::Permissions::from_mode(mode & !0o022))
                .with_context(|| format!("cannot restrict {}", data.display()))?;
        }
    }
    // One `up` per data directory, decided before anything starts: a second one would
    // start a second server on the same database before its agent found the first's.
    crate::hold_lock(&data.join("up.lock"), || {
        format!(
            "another `riposte up` is running on {} (it holds up.lock); stop it first, or give \
             this one another --data",
            data.display()
        )
    })?;
    let server_dir = data.join("server");
    let agent_dir = data.join("agent");
    let sandbox_dir = data.join("sandbox");
    let watched = data.join("watched");
    std::fs::create_dir_all(&watched)?;

    // The agent runs in this process: its watcher must never be handed (and close) a
    // descriptor of the server's or the sandbox's database files, which would drop this
    // process's locks on them.
    for dir in [&server_dir, &sandbox_dir] {
        std::fs::create_dir_all(dir)?;
        riposte_watch::monitor::keep_quiet(dir.clone());
    }
    let mut opts = riposte_server::ServerOptions::new(server_dir.clone(), a.listen);
    opts.ui = crate::console_ui();
    let server = riposte_server::start(opts)
        .await
        .context("cannot start the server")?;
    let core = server.core.clone();
    let url = format!("https://{}", server.api_addr);

    let mut sandbox_addr = server.api_addr;
    sandbox_addr.set_port(if a.listen.port() == 0 {
        0
    } else {
        server.agent_addr.port() + 1
    });
    let listener = tokio::net::TcpListener::bind(sandbox_addr)
        .await
        .with_context(|| format!("cannot listen on {sandbox_addr} for the sandbox"))?;
    // Only agents this server enrolled may submit: the sandbox listens on the server's
    // address, which need not be loopback (--listen).
    let mut sandbox_config = riposte_sandbox::SandboxConfig::new(sandbox_dir.clone());
    sandbox_config.client_ca_pem = Some(server.ca_pem().to_string());
    // Revoked devices too are refused, by the list the server publishes for any sandbox.
    sandbox_config.client_crl = Some(riposte_sandbox::revocation::CrlSource::Url(format!(
        "{url}/api/v1/pki/crl"
    )));
    let sandbox = riposte_sandbox::serve(sandbox_config, listener)
        .await
        .context("cannot start the built-in sandbox")?;
    let sandbox_url = format!("https://{}", sandbox.addr);

    configure(&core, &watched, &sandbox_url, &sandbox.cert_pem).await?;
    if riposte_agent::identity::Identity::load(&agent_dir).is_err() {
        let (token, _) = core
            .create_enroll_token(&system(), DEFAULT_GROUP, 3600, 1)
            .await?;
        let args = crate::agent_cmd::AgentArgs {
            data: agent_dir.clone(),
            server: Some(url.clone()),
            ca: Some(server_dir.join("ca.pem")),
            enroll_token: Some(token),
            enroll_token_file: None,
            name: Some("local-agent".into()),
            host_root: "/".into(),
            protect: Vec::new(),
            clamd: None,
            clamd_conf: None,
            command: None,
        };
        crate::agent_cmd::ensure_enrolled(&args).await?;
    } else {
        repoint_agent(&agent_dir, &url, &server.agent_addr.to_string())?;
    }
    // The server's and the sandbox's data (the CA key, the secret key) and the lock
    // that keeps a second `up` off them are as much out of the agent's reach as its
    // own; the watched folder beside them is not.
    let (agent, rx) = crate::agent_cmd::open_agent(
        &agent_dir,
        Path::new("/"),
        None,
        &[
            server_dir.clone(),
            sandbox_dir.clone(),
            data.join("up.lock"),
        ],
    )?;
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let agent_task = tokio::spawn(daemon::run(agent, rx, stop));

    let password_file = server_dir.join(riposte_server::INITIAL_ADMIN_PASSWORD_FILE);
    println!("Riposte is up.");
    println!("  console and API: {url}/");
    println!("  CA certificate:  {}", server_dir.join("ca.pem").display());
    match server
        .created_admin
        .as_ref()
        .map(|c| (&c.name, &c.generated_password))
    {
        Some((name, Some(pw))) => println!(
            "  admin user:      {name}, password: {pw} (also in {}: delete that file once \
             you have stored the password)",
            password_file.display()
        ),
        Some((name, None)) => println!("  admin user:      {name} (with the password given)"),
        None if password_file.exists() => println!(
            "  admin user:      admin (its first password is in {}: delete that file once \
             you have stored it)",
            password_file.display()
        ),
        None => println!("  admin user:      admin (its password was shown at the first start)"),
    }
    println!(
        "  sandbox:         {sandbox_url}/ (certificate {})",
        sandbox_dir.join("cert.pem").display()
    );
    println!("  watched folder:  {}", watched.display());
    println!(
        "  response:        quarantine in the watched folder; the group IOC scan reports \
         copies elsewhere on this machine (add group_ioc_quarantine_and_delete to the \
         {DEFAULT_GROUP} policy to remove them too)"
    );
    println!("  agent data:      {}", agent_dir.display());

    if a.demo {
        if let Err(e) = demo(&core, &watched).await {
            println!("demo failed: {e:#}");
        }
    }
    // Catch Ctrl-C from before the line that invites it (until now it ends the process).
    let stop_signal = crate::shutdown_signal();
    println!("Press Ctrl-C to stop.");
    stop_signal.await;
    eprintln!("shutting down");
    let _ = stop_tx.send(true);
    let _ = agent_task.await;
    sandbox.shutdown().await;
    server.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// Drops EICAR into the watched folder and follows it: the agent's watcher sends it to the
/// sandbox, the verdict triggers the response, the group action creates the autonomous task.
async fn demo(core: &Arc<Core>, watched: &Path) -> anyhow::Result<()> {
    // Assembled at run time so that this source file is not itself flagged.
    let eicar = [
        "X5O!P%@AP[4\\PZX54(P^)7CC)7}$",
        "EICAR-STANDARD-ANTIVIRUS-",
        "TEST-FILE!$H+H*",
    ]
    .concat();
    // Give the watcher a moment to take the folder from the settings.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let path = watched.join(format!("eicar-demo-{}.com", std::process::id()));
    std::fs::write(&path, eicar.as_bytes())?;
    // As the agent writes it in the detection (the host root is `/` here).
    let device_path = riposte_model::path_text::encode(&path);
    println!("demo: dropped the EICAR test file at {device_path}");
    // Every action of the group's policy reports an outcome (the group action comes
    // right after the quarantine, before the notification): the demo shows them all.
    let expected = match core.store.group_by_name(DEFAULT_GROUP).await {
        Ok(g) => core
            .store
            .policy(g.id)
            .await?
            .and_then(|p| p.threat_response)
            .map_or(1, |tr| tr.value.actions.len().max(1)),
        Err(_) => 1,
    };
    let mut detection = None;
    for _ in 0..240 {
        let found = core
            .store
            .detections(None, 100)
            .await?
            .into_iter()
            .find(|d| d.record["path"] == device_path.as_str());
        if let Some(d) = found {
            if d.outcomes.len() >= expected {
                detection = Some(d);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let Some(d) = detection else {
        anyhow::bail!(
            "no verdict arrived within a minute; see `riposte agent --data DIR status` and the log"
        );
    };
    println!(
        "demo: verdict from {}: malicious, {}",
        d.record["source"].as_str().unwrap_or("?"),
        d.record["threat"].as_str().unwrap_or("?")
    );
    for o in &d.outcomes {
        println!("demo: {}: {} — {}", o.action, o.outcome, o.detail);
    }
    let detection_id = d.id.clone();
    for _ in 0..600 {
        let d = core.store.detection(&detection_id).await?;
        if let Some(task_id) = d.task_id {
            let rows = core.store.task_devices(task_id).await?;
            if !rows.is_empty() && rows.iter().all(|r| r.state.is_final()) {
                for r in rows {
                    println!(
                        "demo: task {task_id} on {}: {} ({} hits){}",
                        r.device_name,
                        r.state.as_str(),
                        r.hits,
                        r.reason.map(|x| format!(": {x}")).unwrap_or_default()
                    );
                }
                break;
            }
        } else if let Some(e) = &d.group_action_error {
            println!("demo: group action failed: {e}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!("demo: complete");
    Ok(())
}
