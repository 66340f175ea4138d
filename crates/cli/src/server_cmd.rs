//! `riposte server`.

use anyhow::Context;
use clap::{Args, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct ServerArgs {
    /// Data directory (CA, keys, SQLite database).
    #[arg(long)]
    pub data: PathBuf,
    /// HTTPS address of the API and console.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// Address of the agent channel (default: the API port + 1).
    #[arg(long)]
    pub agent_listen: Option<SocketAddr>,
    /// Database URL: postgres://… (default: SQLite in the data directory).
    #[arg(long)]
    pub database: Option<String>,
    /// File holding the first `admin` account's password (default: generate one and print it once).
    #[arg(long)]
    pub admin_password_file: Option<PathBuf>,
    /// Extra DNS names or IP addresses for the server certificate.
    #[arg(long = "tls-name")]
    pub tls_names: Vec<String>,
    /// How many days a device certificate is valid. Agents renew theirs once a third of
    /// its life is left; a device away for longer than this must enroll again.
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub device_cert_days: u32,
    #[command(subcommand)]
    pub action: Option<ServerAction>,
}

/// What `riposte server` does instead of serving.
#[derive(Subcommand, Debug)]
pub enum ServerAction {
    /// Set an administrator account's password straight in the server's database, for
    /// when no administrator remembers one. Needs the server's --data (and --database if
    /// it uses PostgreSQL); the server may be running. Its sessions end.
    ResetPassword {
        /// The account.
        name: String,
        /// File holding the new password (12 characters or more).
        #[arg(long)]
        password_file: std::path::PathBuf,
    },
}

pub async fn run(a: ServerArgs) -> anyhow::Result<ExitCode> {
    if let Some(ServerAction::ResetPassword {
        name,
        password_file,
    }) = &a.action
    {
        let password = crate::read_secret_file(password_file)?;
        let ended = riposte_server::reset_password_offline(
            &a.data,
            a.database.as_deref(),
            None,
            name,
            &password,
        )
        .await
        .with_context(|| format!("the password of '{name}' is not reset"))?;
        println!("password of '{name}' reset; {ended} session(s) ended");
        return Ok(ExitCode::SUCCESS);
    }
    let mut o = riposte_server::ServerOptions::new(a.data.clone(), a.listen);
    o.agent_listen = a.agent_listen;
    o.database = a.database;
    o.tls_names = a.tls_names;
    o.core.device_cert_lifetime_ms = i64::from(a.device_cert_days) * 24 * 3600 * 1000;
    o.ui = crate::console_ui();
    if let Some(f) = &a.admin_password_file {
        o.admin_password = Some(crate::read_secret_file(f)?);
    }
    let server = riposte_server::start(o)
        .await
        .context("cannot start the server")?;
    let stop_signal = crate::shutdown_signal();
    println!("Riposte administration server");
    println!("  API and console: https://{}/", server.api_addr);
    println!("  agent channel:   {}", server.agent_addr);
    println!("  CA certificate:  {}", a.data.join("ca.pem").display());
    if let Some(created) = &server.created_admin {
        let why = if created.first_start {
            "first start"
        } else {
            "no account had the Administrator role left"
        };
        match &created.generated_password {
            Some(pw) => {
                println!(
                    "  {why}: administrator account '{}' created with password: {pw}",
                    created.name
                );
                println!(
                    "  (also in {}: delete that file once you have stored the password)",
                    a.data
                        .join(riposte_server::INITIAL_ADMIN_PASSWORD_FILE)
                        .display()
                );
            }
            None => println!(
                "  {why}: administrator account '{}' created with the password of \
                 --admin-password-file",
                created.name
            ),
        }
    }
    stop_signal.await;
    eprintln!("shutting down");
    server.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
