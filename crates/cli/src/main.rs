//! `riposte`: one binary, thin subcommands that wire the crates together.

/// `println!` for a command's output: a reader that went away (`riposte admin … | head`)
/// ends the command quietly, as it ends `cat`, instead of a panic.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            $crate::output_failed(e);
        }
    }};
}

mod admin;
mod agent_cmd;
mod conflict;
mod server_cmd;
mod up;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "riposte",
    version,
    about = "Riposte: endpoint threat response across a fleet"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the administration server (API, agent channel, console).
    Server(server_cmd::ServerArgs),
    /// Run or control the endpoint agent.
    Agent(agent_cmd::AgentArgs),
    /// Run the built-in sandbox (HTTPS; its certificate is written to DIR/cert.pem).
    Sandbox(riposte_sandbox::cli::SandboxArgs),
    /// Scan this system for IOCs (OpenIOC, STIX 2.1, YARA); exit 0 no hit, 1 hit, 2 error.
    Scan(riposte_scan::cli::ScanArgs),
    /// Administer a server over its API.
    Admin(admin::AdminArgs),
    /// Run server, sandbox and one agent on this machine with embedded defaults.
    Up(up::UpArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// N simulated agents against a real server process: enrollment rate, server memory
    /// per agent, autonomous task fan-out and results (see docs/FLEET.md).
    Fleet(riposte_fleet::FleetArgs),
}

/// Ends the process after its standard output failed: quietly where the reader closed
/// it, with a message otherwise.
fn output_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("riposte: cannot write the output: {e}");
    std::process::exit(2)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RIPOSTE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("riposte: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Server(a) => server_cmd::run(a).await,
            Command::Agent(a) => agent_cmd::run(a).await,
            Command::Admin(a) => admin::run(a).await,
            Command::Up(a) => up::run(a).await,
            Command::Bench(BenchCommand::Fleet(a)) => {
                riposte_fleet::run(a).await.map(|_| ExitCode::SUCCESS)
            }
            Command::Sandbox(a) => riposte_sandbox::cli::run(a)
                .await
                .map(|_| ExitCode::SUCCESS),
            Command::Scan(a) => {
                let code = tokio::task::spawn_blocking(move || riposte_scan::cli::run(a)).await??;
                Ok(ExitCode::from(code.clamp(0, 255) as u8))
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            // Messages quote what others wrote (indicator ids, device names, a server's
            // answer): escaped, so that none fakes a line or sends terminal escapes.
            eprintln!(
                "riposte: {}",
                riposte_model::path_text::shown(&format!("{e:#}"))
            );
            ExitCode::from(2)
        }
    }
}

/// Reads a secret from a file, without its trailing newline.
pub fn read_secret_file(path: &std::path::Path) -> anyhow::Result<String> {
    use anyhow::Context;
    let s =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let secret = s.trim_end_matches(['\n', '\r']);
    if secret.is_empty() {
        anyhow::bail!("{} is empty: write the password in it", path.display());
    }
    Ok(secret.to_string())
}

/// Takes the lock file at `path` for as long as this process runs, or says `taken()`
/// where another process holds it: one process per data directory.
pub fn hold_lock(path: &std::path::Path, taken: impl FnOnce() -> String) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::os::unix::fs::OpenOptionsExt;
    // 0600 whatever the umask: a lock others could write is one they could also swap.
    // Not through a link: the `chmod` below would restrict whatever it points to.
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!("{}", taken()),
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
    // `mode` applies only to a file it creates: one left by an older version, or made
    // by hand, is restricted now.
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = lock
            .metadata()
            .with_context(|| format!("cannot read {}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            // Another owner's lock cannot be restricted by this one: said, not fatal,
            // as the lock still works.
            if let Err(e) = lock.set_permissions(std::fs::Permissions::from_mode(0o600)) {
                tracing::warn!("cannot restrict {} to mode 0600: {e}", path.display());
            }
        }
    }
    // Held until the process ends (the kernel lets go of it then, however it ends).
    std::mem::forget(lock);
    Ok(())
}

/// Waits for Ctrl-C or SIGTERM.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    // Registered now, not when first awaited: a Ctrl-C that arrives between the
    // "Press Ctrl-C" line and the await must stop the process cleanly, not kill it.
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).ok();
    let mut term = signal(SignalKind::terminate()).ok();
    async move {
        tokio::select! {
            _ = recv(int.as_mut()) => {}
            _ = recv(term.as_mut()) => {}
        }
    }
}

async fn recv(s: Option<&mut tokio::signal::unix::Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

/// The web console's routes, served beside the API.
pub fn console_ui() -> Option<riposte_server::UiBuilder> {
    Some(std::sync::Arc::new(riposte_console::router))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    /// A lock file left readable and writable by others is restricted once held, and a
    /// second holder is told who has it.
    #[test]
    fn a_held_lock_is_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        std::fs::write(&path, b"").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        super::hold_lock(&path, || "taken".into()).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let e = super::hold_lock(&path, || "held by another".into()).unwrap_err();
        assert_eq!(e.to_string(), "held by another");
        // A link where the lock should be is refused, and what it points to untouched.
        let target = dir.path().join("target");
        std::fs::write(&target, b"").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
        let link = dir.path().join("linked.lock");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(super::hold_lock(&link, || "taken".into()).is_err());
        let mode = std::fs::metadata(&target).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
    }
}
