//! The crate's error type. Every message says what went wrong and what to do, because
//! the agent shows these to an administrator who cannot read the code.

use std::path::PathBuf;

/// What can stop the watcher from starting or from being reconfigured.
///
/// Problems with single objects (too large, vanished, queue full, sandbox down) are not
/// errors: they are reported as [`crate::WatchEvent::Alert`] and the watcher keeps running.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// A file or directory of the watcher's own state could not be used.
    #[error("cannot {action} {}: {source}; check that the agent's data directory exists and is writable by the agent", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration cannot work.
    #[error("invalid sandbox integration settings: {0}")]
    Config(String),
    /// Neither fanotify nor inotify could be set up.
    #[error("cannot watch for new objects: {0}")]
    Monitor(String),
    /// The sandbox client could not be built (bad pinned certificate, no URL).
    #[error("cannot set up the sandbox client: {0}; check the sandbox URLs and the pinned certificate (the sandbox's DATA_DIR/cert.pem)")]
    Client(#[from] riposte_sandbox::SandboxError),
    /// A state file holds something this version cannot read.
    #[error("{} is damaged ({reason}); move it away to start afresh", path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A SHA-256 was expected.
    #[error("{0:?} is not a SHA-256 (64 hexadecimal digits)")]
    NotSha256(String),
}

impl WatchError {
    /// Shorthand for [`WatchError::Io`].
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        WatchError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
