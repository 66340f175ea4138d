//! The Riposte administration server.
//!
//! It owns the certificate authority and enrollment, the agent hub and channel (push over
//! mutual TLS), the REST API under `/api/v1`, IOC scan tasks and their fan-out, and the
//! audit log. Its state lives in the store (SQLite or PostgreSQL); the process itself keeps
//! only live connections, so it can be restarted at any moment without losing anything.
//!
//! Module map: [`service`] holds every operation (authorisation first), [`api`] maps
//! HTTP to it, [`channel`] serves agents, [`hub`] wakes connected agents, [`pki`] is the CA,
//! [`secrets`] hashes and seals.

pub mod api;
pub mod channel;
pub mod error;
mod files;
pub mod hub;
pub mod iocgen;
pub mod pki;
pub mod secrets;
pub mod service;
pub mod throttle;

use crate::pki::Authority;
use crate::secrets::Sealer;
use crate::service::{Core, CoreConfig};
use riposte_store::Store;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

pub use error::{ServiceError, ServiceResult};

/// How to start a server.
#[derive(Clone)]
pub struct ServerOptions {
    /// Data directory: CA, keys, and the SQLite database by default.
    pub data_dir: PathBuf,
    /// HTTPS address of the API and console.
    pub listen: SocketAddr,
    /// Address of the agent channel; by default the API port + 1 (or any port if 0).
    pub agent_listen: Option<SocketAddr>,
    /// `postgres://…` or `sqlite://…`; by default SQLite in the data directory.
    pub database: Option<String>,
    /// PostgreSQL schema (tests).
    pub database_schema: Option<String>,
    /// Password for the first `admin` account; generated when absent.
    pub admin_password: Option<String>,
    /// Extra names (DNS or IP) for the server certificate.
    pub tls_names: Vec<String>,
    pub core: CoreConfig,
    /// How long a client may take to send a request's headers (slow clients holding
    /// connections open are cut off).
    pub header_timeout: Duration,
    /// More routes served beside the API (the web console), built over the same core.
    pub ui: Option<UiBuilder>,
}

/// Builds extra routes (the web console) over the server's core.
pub type UiBuilder = Arc<dyn Fn(Arc<Core>) -> axum::Router + Send + Sync>;

impl ServerOptions {
    pub fn new(data_dir: PathBuf, listen: SocketAddr) -> Self {
        ServerOptions {
            data_dir,
            listen,
            agent_listen: None,
            database: None,
            database_schema: None,
            admin_password: None,
            tls_names: Vec::new(),
            core: CoreConfig::default(),
            header_timeout: Duration::from_secs(20),
            ui: None,
        }
    }
}

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    // The I/O error is said in the message and is not also the error's source: a
    // report of the whole chain would say it twice.
    #[error("cannot use the data directory {path}: {cause}")]
    DataDir { path: String, cause: std::io::Error },
    #[error("cannot listen on {addr}: {cause}")]
    Listen {
        addr: SocketAddr,
        cause: std::io::Error,
    },
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    #[error("storage: {0}")]
    Store(#[from] riposte_store::StoreError),
    #[error("{0}")]
    Service(#[from] ServiceError),
    #[error(
        "the database is used by a server with another {what}: every server process on one \
         database must share the first one's ca.pem, ca.key and secret.key (copy them from its \
         data directory into {dir}), or it could not open what the others sealed nor be \
         trusted by their agents"
    )]
    KeysDiffer { what: &'static str, dir: String },
}

/// Where in the data directory a generated administrator password is kept (mode
/// 0600), from before its account exists until the administrator deletes the file: a
/// first start that fails, or is killed, after creating the account must not lose it.
pub const INITIAL_ADMIN_PASSWORD_FILE: &str = "initial-admin-password";

/// A running server.
pub struct RunningServer {
    pub core: Arc<Core>,
    pub api_addr: SocketAddr,
    pub agent_addr: SocketAddr,
    /// The administrator account this start created: on the first start, or when no
    /// account had the Administrator role left.
    pub created_admin: Option<service::CreatedAdmin>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningServer {
    /// Stops accepting, closes connections, and waits for the listeners to end.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        self.core.store.close().await;
    }

    /// The CA certificate clients pin.
    pub fn ca_pem(&self) -> &str {
        &self.core.authority.ca_pem
    }
}

/// Sets an administrator account's password straight in the store, without the API: the
/// way back in for whoever holds the server's data directory (or its database) when no
/// administrator remembers a password. Every session of the account ends, its failed
/// logins are forgotten, and the audit log records the reset as done on the server's
/// machine. Returns how many sessions ended. A server may be running on the store.
pub async fn reset_password_offline(
    data_dir: &std::path::Path,
    database: Option<&str>,
    schema: Option<&str>,
    name: &str,
    password: &str,
) -> Result<u64, ServiceError> {
    use riposte_model::accounts::{validate_admin_password, SPECIAL_ACCOUNT_NAME};
    if name == SPECIAL_ACCOUNT_NAME {
        return Err(riposte_model::AccountError::SpecialPasswordImmutable.into());
    }
    validate_admin_password(password)?;
    // Opened as it is: nothing created where a URL or a directory was mistyped, and no
    // migration under a server that may be running on it.
    let (url, what) = match database {
        Some(url) => (url.to_string(), "the database of --database"),
        None => {
            if !data_dir.join("riposte.db").is_file() {
                return Err(ServiceError::NotFound(format!(
                    "{} holds no server database (riposte.db): give the server's --data, \
                     and its --database if it uses PostgreSQL",
                    data_dir.display()
                )));
            }
            (
                format!("sqlite://{}", data_dir.join("riposte.db").display()),
                "the server's database",
            )
        }
    };
    let store = match Store::open_current(&url, schema).await {
        Ok(store) => store,
        Err(riposte_store::StoreError::NotFound(_)) => {
            return Err(ServiceError::NotFound(format!(
                "{what} holds no Riposte server data: give the server's own --database"
            )))
        }
        Err(riposte_store::StoreError::Conflict(why)) => {
            return Err(ServiceError::Conflict(format!("{what}: {why}")))
        }
        Err(e) => return Err(ServiceError::BadRequest(format!("cannot read {what}: {e}"))),
    };
    let outcome = async {
        if database.is_some() {
            same_server(&store, data_dir).await?;
        }
        let account = store
            .account_by_name(name)
            .await?
            .filter(|a| a.kind == riposte_store::AccountKind::Admin)
            .ok_or_else(|| {
                ServiceError::NotFound(format!("no administrator account named '{name}'"))
            })?;
        let hash = service::hash_off_thread(password).await?;
        let ended = store
            .set_account_password(account.id, None, &hash)
            .await?
            .ok_or_else(|| {
                ServiceError::NotFound(format!("no administrator account named '{name}'"))
            })?;
        // The reset is done: what follows is said, not turned into its failure.
        if let Err(e) = throttle::forget_account(&store, &account.name).await {
            tracing::warn!(
                "cannot forget the failed logins and known addresses of '{}': {e}",
                account.name
            );
        }
        if let Err(e) = store
            .audit(
                "server (offline reset)",
                "local",
                "account_password_set",
                &format!("{}; {ended} session(s) ended", account.name),
            )
            .await
        {
            tracing::warn!("the reset is not in the audit log: {e}");
        }
        Ok(ended)
    }
    .await;
    store.close().await;
    outcome
}

/// Refuses an offline reset where `data_dir` is not the data of the server whose
/// database `store` is (PostgreSQL, where the database is given apart from `--data`): a
/// mistyped `--database` of another deployment, or the data of another server, would
/// reset an account there.
async fn same_server(store: &Store, data_dir: &std::path::Path) -> Result<(), ServiceError> {
    let ca_file = data_dir.join("ca.pem");
    let ca_pem = std::fs::read_to_string(&ca_file).map_err(|e| {
        ServiceError::NotFound(format!(
            "cannot read {}: {e}; give the server's own --data (where its ca.pem is)",
            ca_file.display()
        ))
    })?;
    let mine = pki::pem_fingerprint(&ca_pem)
        .map_err(|e| ServiceError::BadRequest(format!("{}: {e}", ca_file.display())))?;
    match store.server_key("ca").await? {
        Some(recorded) if recorded != mine => Err(ServiceError::Conflict(format!(
            "the CA in {} is not the one of the server using this database: give that \
             server's --data and --database together",
            data_dir.display()
        ))),
        _ => Ok(()),
    }
}

/// Starts the server: opens the store, loads or creates the CA, and serves the API and the
/// agent channel until [`RunningServer::shutdown`].
pub async fn start(opts: ServerOptions) -> Result<RunningServer, StartError> {
    let dir = &opts.data_dir;
    std::fs::create_dir_all(dir).map_err(|cause| StartError::DataDir {
        path: dir.display().to_string(),
        cause,
    })?;
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    let store = match &opts.database {
        Some(url) => Store::open(url, opts.database_schema.as_deref()).await?,
        None => Store::open_sqlite_in(dir).await?,
    };
    let authority = Authority::load_or_create(dir)?;
    let sealer = Sealer::load_or_create(dir).map_err(|cause| StartError::DataDir {
        path: dir.display().to_string(),
        cause,
    })?;
    let ca = pki::pem_fingerprint(&authority.ca_pem)?;
    for (name, what, mine) in [
        ("ca", "certificate authority", ca),
        ("secret", "sealing key (secret.key)", sealer.check_value()),
    ] {
        if store.claim_server_key(name, &mine).await? != mine {
            return Err(StartError::KeysDiffer {
                what,
                dir: dir.display().to_string(),
            });
        }
    }

    let api_listener =
        TcpListener::bind(opts.listen)
            .await
            .map_err(|cause| StartError::Listen {
                addr: opts.listen,
                cause,
            })?;
    let api_addr = api_listener
        .local_addr()
        .map_err(|cause| StartError::Listen {
            addr: opts.listen,
            cause,
        })?;
    let agent_want = opts.agent_listen.unwrap_or_else(|| {
        let mut a = api_addr;
        a.set_port(if opts.listen.port() == 0 {
            0
        } else {
            api_addr.port() + 1
        });
        a
    });
    let agent_listener =
        TcpListener::bind(agent_want)
            .await
            .map_err(|cause| StartError::Listen {
                addr: agent_want,
                cause,
            })?;
    let agent_addr = agent_listener
        .local_addr()
        .map_err(|cause| StartError::Listen {
            addr: agent_want,
            cause,
        })?;

    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    if let Ok(h) = std::fs::read_to_string("/etc/hostname") {
        let h = h.trim();
        if !h.is_empty() {
            names.push(h.to_string());
        }
    }
    if !api_addr.ip().is_unspecified() {
        names.push(api_addr.ip().to_string());
    }
    names.extend(opts.tls_names.iter().cloned());
    names.sort();
    names.dedup();
    let (chain, key) = authority.server_identity(dir, &names)?;
    let api_tls = pki::api_tls_config(chain.clone(), key.clone_key())?;
    let agent_tls = authority.agent_tls_config(chain, key)?;

    let mut config = opts.core.clone();
    config.agent_port = agent_addr.port();
    let core = Core::new(store, sealer, authority, config);
    let created_admin = core
        .bootstrap(
            opts.admin_password.clone(),
            Some(&dir.join(INITIAL_ADMIN_PASSWORD_FILE)),
        )
        .await?;

    let (shutdown, rx) = watch::channel(false);
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(channel::serve(
        core.clone(),
        agent_listener,
        agent_tls,
        rx.clone(),
    )));
    let mut app = api::router(core.clone());
    if let Some(ui) = &opts.ui {
        app = app.merge(ui(core.clone()));
    }
    let app = app
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed);
    tasks.push(tokio::spawn(serve_https(
        app,
        api_listener,
        api_tls,
        opts.header_timeout,
        rx.clone(),
    )));
    let wake_core = core.clone();
    let wake_listener = core.store.spawn_wake_listener(move |signal| match signal {
        riposte_store::Signal::Wake(d) => wake_core.hub.wake(d),
        riposte_store::Signal::Kick(d) => wake_core.hub.kick(d),
    });
    // Alive before the first request, so that devices held by other processes show
    // connected at once.
    if let Err(e) = core.beat().await {
        tracing::warn!("cannot record this server process as alive: {e}");
    }
    let beat_core = core.clone();
    let mut beat_rx = rx.clone();
    tasks.push(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(service::PROCESS_BEAT) => {}
                _ = beat_rx.changed() => return,
            }
            if let Err(e) = beat_core.beat().await {
                tracing::warn!("cannot record this server process as alive: {e}");
            }
        }
    }));
    let hk_core = core.clone();
    let mut hk_rx = rx.clone();
    tasks.push(tokio::spawn(async move {
        loop {
            if let Err(e) = hk_core.housekeeping().await {
                tracing::warn!("housekeeping: {e}");
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                _ = hk_rx.changed() => return,
            }
        }
    }));
    if let Some(listener) = wake_listener {
        let mut rx = rx.clone();
        tasks.push(tokio::spawn(async move {
            let _ = rx.changed().await;
            listener.abort();
        }));
    }
    tracing::info!(%api_addr, %agent_addr, "administration server started");
    Ok(RunningServer {
        core,
        api_addr,
        agent_addr,
        created_admin,
        shutdown,
        tasks,
    })
}

/// Serves a router over HTTPS until `shutdown` turns true.
pub async fn serve_https(
    app: axum::Router,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    header_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use tower::ServiceExt;
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("API listener: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let mut conn_shutdown = shutdown.clone();
        tokio::spawn(async move {
            let Ok(Ok(tls)) =
                tokio::time::timeout(Duration::from_secs(15), acceptor.accept(tcp)).await
            else {
                return;
            };
            let service = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(api::RemoteAddr(peer));
                    app.clone().oneshot(req.map(axum::body::Body::new))
                },
            );
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = conn_shutdown.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                }
            }
        });
    }
}
