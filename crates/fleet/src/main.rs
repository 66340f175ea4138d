//! `riposte-fleet`: the fleet simulator on its own (the same as `riposte bench fleet`), and
//! `riposte-fleet server …`, which runs the real Riposte server exactly as `riposte server`
//! does, so the benchmark and its tests need no other binary.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "riposte-fleet",
    about = "Simulate N agents against a real Riposte server and measure it",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    fleet: riposte_fleet::FleetArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the administration server (the same options as `riposte server`).
    #[command(hide = true)]
    Server(ServerArgs),
}

#[derive(clap::Args)]
struct ServerArgs {
    #[arg(long)]
    data: PathBuf,
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    #[arg(long)]
    agent_listen: Option<SocketAddr>,
    #[arg(long)]
    database: Option<String>,
    #[arg(long)]
    admin_password_file: Option<PathBuf>,
}

async fn server(a: ServerArgs) -> anyhow::Result<()> {
    let mut o = riposte_server::ServerOptions::new(a.data.clone(), a.listen);
    o.agent_listen = a.agent_listen;
    o.database = a.database;
    if let Some(f) = &a.admin_password_file {
        let pw =
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        o.admin_password = Some(pw.trim_end_matches(['\n', '\r']).to_string());
    }
    let server = riposte_server::start(o)
        .await
        .context("cannot start the server")?;
    println!("Riposte administration server");
    println!("  API and console: https://{}/", server.api_addr);
    println!("  agent channel:   {}", server.agent_addr);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    server.shutdown().await;
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RIPOSTE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("riposte-fleet: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Some(Command::Server(a)) => server(a).await,
            None => riposte_fleet::run(cli.fleet).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("riposte-fleet: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
