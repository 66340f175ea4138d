use std::path::PathBuf;

use riposte_host::HostError;

/// Errors from the quarantine store. Each is distinct so that the agent can
/// report it as an event; none is a silent skip.
#[derive(Debug, thiserror::Error)]
pub enum QuarantineError {
    /// The host refused or failed the file operation (missing file, not a
    /// regular file, symlink in path, invalid path…).
    #[error(transparent)]
    Host(#[from] HostError),
    /// The object is protected (part of the OS or of the agent itself).
    #[error("refusing to quarantine {path:?}: {reason}; protected objects are never removed (remediate manually if needed)")]
    Protected {
        /// Device path.
        path: PathBuf,
        /// Which protection matched.
        reason: String,
    },
    /// The restore target is protected: it matches the protected list, or it
    /// is inside the quarantine store or a protected directory (the agent's
    /// own data). Nothing was written.
    #[error("refusing to restore to {path:?}: {reason}; choose another target")]
    ProtectedTarget {
        /// Device path of the requested target.
        path: PathBuf,
        /// Which protection matched.
        reason: String,
    },
    /// The object is larger than the configured maximum object size.
    #[error("{path:?} is {size} bytes, over the quarantine's limit of {limit} bytes for one object; nothing was done: remove or move it by hand")]
    TooLarge {
        /// Device path.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// Adding the object would exceed the store's size limit.
    #[error("quarantine store full: {used} bytes used + {size} for {path:?} exceeds the limit of {limit} bytes; delete entries no longer needed (`riposte agent ctl quarantine delete ID`, or from the console) and try again")]
    StoreFull {
        /// Device path.
        path: PathBuf,
        /// Size of the object.
        size: u64,
        /// Bytes already used by the store.
        used: u64,
        /// The limit.
        limit: u64,
    },
    /// Not enough free space on the store's file system.
    #[error("not enough disk space to quarantine {path:?}: {free} bytes free, need {size} plus the reserve of {reserve} bytes; free disk space")]
    LowDiskSpace {
        /// Device path.
        path: PathBuf,
        /// Size of the object.
        size: u64,
        /// Free bytes available to the agent.
        free: u64,
        /// Configured reserve (free-space threshold).
        reserve: u64,
    },
    /// The object was copied into quarantine but its path changed before the
    /// deletion (swapped for a symlink or another file, or modified): nothing
    /// was deleted. The copy stays in quarantine as entry `id`.
    #[error("quarantined a copy as entry {id} but did not delete: {source}")]
    ChangedBeforeDelete {
        /// The quarantine entry holding the copy.
        id: String,
        /// What the host reported.
        #[source]
        source: HostError,
    },
    /// Deleting the original failed; the quarantine copy was rolled back, the
    /// object is untouched at its path.
    #[error("could not delete {path:?} after copying it, quarantine rolled back: {source}")]
    DeleteFailed {
        /// Device path.
        path: PathBuf,
        /// The failure.
        #[source]
        source: HostError,
    },
    /// No entry with this id.
    #[error("no quarantine entry {0:?}; list entries to see valid ids")]
    NoSuchEntry(String),
    /// The restore target exists and the policy is `Refuse`.
    #[error("{0:?} already exists; restore anyway by replacing it or beside it under a new name (--replace or --rename)")]
    TargetExists(PathBuf),
    /// A stored object or record is damaged or was tampered with.
    #[error("quarantine entry {id} is damaged: {reason}")]
    Corrupt {
        /// Entry id.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// The key file is unusable.
    #[error("quarantine key {path:?}: {reason}")]
    Key {
        /// Key file path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Other I/O error in the store.
    #[error("{op} {path:?}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// Path concerned.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

pub(crate) fn io_err(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> QuarantineError {
    let path = path.into();
    move |source| QuarantineError::Io { op, path, source }
}
