//! `riposte sandbox`: run the sandbox service from the command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use crate::revocation::CrlSource;
use crate::service::{serve, SandboxConfig, DEFAULT_MAX_OBJECT_SIZE};

fn parse_crl_source(text: &str) -> Result<CrlSource, String> {
    CrlSource::parse(text)
}

/// Arguments of `riposte sandbox`.
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("clients").required(true).args(["client_ca", "allow_anonymous_clients"])))]
pub struct SandboxArgs {
    /// Address to listen on (HTTPS).
    #[arg(long, default_value = "0.0.0.0:8443", env = "RIPOSTE_SANDBOX_LISTEN")]
    pub listen: SocketAddr,
    /// Data directory: certificate, webhook key, tasks, verdicts, hash lists (hashes/).
    #[arg(long, env = "RIPOSTE_SANDBOX_DATA")]
    pub data: PathBuf,
    /// Largest accepted object in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_OBJECT_SIZE)]
    pub max_object_size: u64,
    /// Analysis workers.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Tasks that may wait in the queue.
    #[arg(long, default_value_t = 64)]
    pub queue: usize,
    /// Do not run objects in the bubblewrap jail (static analysis only).
    #[arg(long)]
    pub no_dynamic: bool,
    /// Time limit of one dynamic run, in seconds.
    #[arg(long, default_value_t = 10)]
    pub dynamic_timeout: u64,
    /// Extra hash lists (.hdb, .hsb, .csv).
    #[arg(long = "hash-list")]
    pub hash_lists: Vec<PathBuf>,
    /// Folder of YARA rules (.yar/.yara) added to the default set [default: DATA/rules].
    #[arg(long)]
    pub rules: Option<PathBuf>,
    /// Extra names for the self-signed certificate.
    #[arg(long = "server-name")]
    pub server_names: Vec<String>,
    /// The administration server's CA certificate (its DATA/ca.pem): only agents it
    /// enrolled, presenting their device certificates, may submit objects and read
    /// verdicts. Requires --crl, so that a revoked device is refused too.
    #[arg(long, value_name = "FILE", requires = "crl")]
    pub client_ca: Option<PathBuf>,
    /// Where that CA's revocation list comes from, so that a device the server revoked
    /// may no longer submit: the server's `https://SERVER:PORT/api/v1/pki/crl` (fetched
    /// every minute, trusting only the client CA), or a PEM file kept current by other
    /// means. A list past its nextUpdate (7 days after signing) admits no one. Required
    /// with --client-ca.
    #[arg(
        long,
        value_name = "SOURCE",
        value_parser = parse_crl_source,
        requires = "client_ca",
        conflicts_with = "allow_anonymous_clients"
    )]
    pub crl: Option<CrlSource>,
    /// Accept objects from anyone who can reach the sandbox, who can then fill its queue
    /// and have anything run in its jail (a sandbox on a closed network only).
    #[arg(long)]
    pub allow_anonymous_clients: bool,
}

/// Run the service until Ctrl-C.
pub async fn run(args: SandboxArgs) -> anyhow::Result<()> {
    let mut config = SandboxConfig::new(&args.data);
    config.max_object_size = args.max_object_size;
    config.workers = args.workers;
    config.queue_capacity = args.queue;
    config.dynamic = !args.no_dynamic;
    config.jail.timeout = Duration::from_secs(args.dynamic_timeout.max(1));
    config.hash_lists = args.hash_lists.clone();
    config.server_names = args.server_names.clone();
    config.rules_dir = args.rules.clone();
    if let Some(ca) = &args.client_ca {
        config.client_ca_pem = Some(std::fs::read_to_string(ca).with_context(|| {
            format!(
                "cannot read the client CA {}: give the administration server's ca.pem",
                ca.display()
            )
        })?);
    }
    config.client_crl = args.crl.clone();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let handle = serve(config, listener).await.with_context(|| {
        format!(
            "cannot start the sandbox with data directory {}",
            args.data.display()
        )
    })?;
    tracing::info!(
        addr = %handle.addr,
        cert = %args.data.join("cert.pem").display(),
        anonymous_clients = args.allow_anonymous_clients,
        "sandbox listening; give agents cert.pem to pin"
    );
    tokio::signal::ctrl_c()
        .await
        .context("cannot wait for Ctrl-C")?;
    handle.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        args: SandboxArgs,
    }

    #[test]
    fn parses_listen_and_data() {
        let c = Cmd::try_parse_from([
            "riposte",
            "--listen",
            "127.0.0.1:0",
            "--data",
            "/tmp/sb",
            "--no-dynamic",
            "--client-ca",
            "/srv/ca.pem",
            "--crl",
            "https://srv:8443/api/v1/pki/crl",
        ])
        .unwrap();
        assert_eq!(c.args.client_ca, Some(PathBuf::from("/srv/ca.pem")));
        assert_eq!(
            c.args.crl,
            Some(CrlSource::Url("https://srv:8443/api/v1/pki/crl".into()))
        );
        assert_eq!(c.args.data, PathBuf::from("/tmp/sb"));
        assert!(c.args.no_dynamic);
        assert_eq!(c.args.max_object_size, DEFAULT_MAX_OBJECT_SIZE);
        assert!(Cmd::try_parse_from(["riposte", "--listen", "nope", "--data", "/x"]).is_err());
    }

    #[test]
    fn who_may_submit_is_a_choice_made_at_start() {
        let err = Cmd::try_parse_from(["riposte", "--data", "/x"])
            .err()
            .expect("neither --client-ca nor --allow-anonymous-clients");
        assert!(err.to_string().contains("--client-ca"), "{err}");
        let err = Cmd::try_parse_from(["riposte", "--data", "/x", "--client-ca", "ca.pem"])
            .err()
            .expect("a client CA without its revocation list");
        assert!(err.to_string().contains("--crl"), "{err}");
        assert!(Cmd::try_parse_from([
            "riposte",
            "--data",
            "/x",
            "--client-ca",
            "ca.pem",
            "--crl",
            "http://srv/api/v1/pki/crl"
        ])
        .is_err());
        // A list with no client CA to judge it by would be ignored: refused instead.
        assert!(Cmd::try_parse_from([
            "riposte",
            "--data",
            "/x",
            "--allow-anonymous-clients",
            "--crl",
            "crl.pem"
        ])
        .is_err());
        let c =
            Cmd::try_parse_from(["riposte", "--data", "/x", "--allow-anonymous-clients"]).unwrap();
        assert!(c.args.allow_anonymous_clients);
        assert!(Cmd::try_parse_from([
            "riposte",
            "--data",
            "/x",
            "--allow-anonymous-clients",
            "--client-ca",
            "ca.pem"
        ])
        .is_err());
    }
}
