//! Watcher configuration, built from the *Sandbox integration* settings group.
//!
//! Why a separate struct from [`riposte_model::SandboxIntegration`]: the settings group
//! holds only what an administrator sets in a policy (folders, servers, certificate,
//! timeout); the watcher also needs local facts (where the host's file system is, where
//! its state lives) and tuning knobs that tests shorten.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use riposte_model::{path_text, SandboxIntegration};

/// Default cap on the bytes held in the submission queue: 100 MB.
pub const DEFAULT_MAX_QUEUE_BYTES: u64 = 100 * 1024 * 1024;
/// Default largest object submitted: 60 MB (the built-in sandbox's limit).
pub const DEFAULT_MAX_OBJECT_SIZE: u64 = 60 * 1024 * 1024;

/// Which objects are hashed and submitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectFilter {
    /// Executable and active content: ELF (`\x7fELF`), PE (`MZ`), scripts (`#!`),
    /// documents and archives (PDF, OLE2 Office, RTF, ZIP), any file with an execute
    /// bit, and files with such an extension (`.exe`, `.com`, `.dll`, `.bat`, `.ps1`,
    /// `.js`, `.vbs`, `.jar`, `.sh`, `.py`, `.docx`, `.pdf`, `.zip`, ...).
    Executables,
    /// Every regular, non-empty file (for tests and for folders where anything counts).
    Any,
}

/// Which kernel interface reports new objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendChoice {
    /// fanotify where the kernel allows it (root with CAP_SYS_ADMIN), else inotify.
    Auto,
    /// fanotify only; starting fails if it is unavailable.
    Fanotify,
    /// inotify only (recursive watches on the configured folders).
    Inotify,
}

/// Everything the watcher needs. Build it with [`WatchConfig::from_settings`] and adjust.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// Where the device's file system is mounted (`/` on a real host, a tempdir in tests).
    /// Device paths (`/home/a/x`) are looked up as `host_root/home/a/x`.
    pub host_root: PathBuf,
    /// Folders to watch, as device paths (recursively, new subfolders included).
    pub folders: Vec<String>,
    /// Sandbox base URLs (`https://host:port`), tried in order with failover.
    pub sandboxes: Vec<String>,
    /// PEM certificate pinned for the sandbox servers. Without it nothing is submitted:
    /// objects stay queued and an alert says so.
    pub pinned_cert_pem: Option<String>,
    /// The device's certificate and key, for a sandbox that admits only enrolled agents.
    pub client_identity: Option<riposte_sandbox::tls::ClientIdentity>,
    /// Per-request timeout towards a sandbox.
    pub request_timeout: Duration,
    /// The watcher's state directory: the submission queue (`objects/`, mode 0700, and
    /// `items/`) and the verdict cache (`verdicts.json`). Survives restarts.
    pub queue_dir: PathBuf,
    /// Cap on the bytes of queued object copies; over it new objects raise an alert.
    pub max_queue_bytes: u64,
    /// Largest object submitted; larger ones raise an alert and are not submitted.
    pub max_object_size: u64,
    /// How long a cached verdict is trusted.
    pub cache_ttl: Duration,
    /// Pause between polls of a task the sandbox is still analysing.
    pub poll_interval: Duration,
    /// First pause after the sandbox could not be reached; doubles up to `max_retry_backoff`.
    pub retry_backoff: Duration,
    /// Longest pause between attempts while the sandbox is unreachable.
    pub max_retry_backoff: Duration,
    /// Raise a [`crate::AlertCode::SandboxUnreachable`] alert once the sandbox has been
    /// unreachable this long (once per outage).
    pub unreachable_alert_after: Duration,
    /// Which objects are submitted.
    pub filter: ObjectFilter,
    /// Which kernel interface to use.
    pub backend: BackendChoice,
    /// Content an administrator declared harmless (see [`crate::AllowList`]), shared
    /// with whoever adds to it. `None`: the watcher opens the list in `queue_dir` itself.
    pub allowed: Option<Arc<crate::AllowList>>,
    /// Directories whose files this process keeps databases in (the agent's data
    /// directory; see also [`crate::monitor::keep_quiet`]). The kernel is told to give the
    /// watcher no event for the files directly in them: a fanotify event hands the
    /// watcher a descriptor of the file, and closing any descriptor of a file drops
    /// every POSIX lock the process holds on it, SQLite's among them.
    pub quiet_dirs: Vec<PathBuf>,
}

impl WatchConfig {
    /// Configuration from the effective *Sandbox integration* settings, with the device's
    /// file system at `host_root` and the watcher state under `data_dir/sandbox-watch`.
    /// Defaults: 100 MB queue, 60 MB objects, 24 h cache, 2 s polling, backoff 1 s..5 min,
    /// alert after 10 min unreachable, executables only, fanotify when allowed.
    pub fn from_settings(
        settings: &SandboxIntegration,
        host_root: impl Into<PathBuf>,
        data_dir: &Path,
    ) -> Self {
        WatchConfig {
            host_root: host_root.into(),
            folders: settings.watch.clone(),
            sandboxes: settings.sandboxes.clone(),
            pinned_cert_pem: settings.sandbox_ca_pem.clone(),
            client_identity: None,
            request_timeout: Duration::from_secs(settings.request_timeout_secs.max(1)),
            queue_dir: Self::queue_dir(data_dir),
            max_queue_bytes: DEFAULT_MAX_QUEUE_BYTES,
            max_object_size: DEFAULT_MAX_OBJECT_SIZE,
            cache_ttl: Duration::from_secs(24 * 3600),
            poll_interval: Duration::from_secs(2),
            retry_backoff: Duration::from_secs(1),
            max_retry_backoff: Duration::from_secs(300),
            unreachable_alert_after: Duration::from_secs(600),
            filter: ObjectFilter::Executables,
            backend: BackendChoice::Auto,
            allowed: None,
            quiet_dirs: vec![data_dir.to_path_buf()],
        }
    }

    /// The watcher's state directory in the agent's data directory.
    pub fn queue_dir(data_dir: &Path) -> PathBuf {
        data_dir.join("sandbox-watch")
    }

    /// The host path of a device path (`/x/y` → `host_root/x/y`), given in its
    /// [`path_text`] form (bytes that are not UTF-8 as `\xHH`). Relative paths and paths
    /// with `..` are refused: they could name something outside the device.
    pub fn host_path(&self, device_path: &str) -> Result<PathBuf, crate::WatchError> {
        riposte_host::HostRoot::new(&self.host_root)
            .host_path(&path_text::decode(device_path))
            .map_err(|e| crate::WatchError::Config(e.to_string()))
    }

    /// The device path of a host path under `host_root`, if it is under it, in its
    /// [`path_text`] form: [`WatchConfig::host_path`] finds the very same file again.
    pub fn device_path(&self, host_path: &Path) -> Option<String> {
        let rel = host_path.strip_prefix(&self.host_root).ok()?;
        Some(format!("/{}", path_text::encode(rel)))
    }

    pub(crate) fn validate(&self) -> Result<(), crate::WatchError> {
        if !self.host_root.is_absolute() {
            return Err(crate::WatchError::Config(format!(
                "host root {} must be an absolute path",
                self.host_root.display()
            )));
        }
        if let Some(f) = self.folders.iter().find(|f| !f.starts_with('/')) {
            return Err(crate::WatchError::Config(format!(
                "watched folder {f:?} must be an absolute device path such as /home"
            )));
        }
        for f in &self.folders {
            self.host_path(f)?;
        }
        if self.max_queue_bytes == 0 || self.max_object_size == 0 {
            return Err(crate::WatchError::Config(
                "max_queue_bytes and max_object_size must be above zero".into(),
            ));
        }
        Ok(())
    }
}
