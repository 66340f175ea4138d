use std::path::PathBuf;

/// Errors from host operations. Each message says what was refused and what
/// the operator can do about it.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The device path is not absolute, contains `..`, or is otherwise unusable.
    #[error(
        "invalid device path {path:?}: {reason}; give an absolute path without `..` components"
    )]
    InvalidPath {
        /// The path as given.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// Nothing exists at the path.
    #[error("{}", not_found_text(path, missing_folder.as_deref()))]
    NotFound {
        /// Device path.
        path: PathBuf,
        /// The folder on the way to it that does not exist, where that is what is missing.
        missing_folder: Option<String>,
    },
    /// A component of the path (or the object itself) is a symbolic link.
    #[error("{path:?}: component {component:?} is a symbolic link; refusing to follow it (use the resolved path of the object instead)")]
    SymlinkInPath {
        /// Device path.
        path: PathBuf,
        /// The component that is a symlink.
        component: String,
    },
    /// A directory component of the path is not a directory.
    #[error("{path:?}: component {component:?} is not a directory")]
    NotADirectory {
        /// Device path.
        path: PathBuf,
        /// The offending component.
        component: String,
    },
    /// The object exists but is not a regular file.
    #[error("{path:?} is a {kind}, not a regular file; only regular files can be handled")]
    NotRegularFile {
        /// Device path.
        path: PathBuf,
        /// What it is instead (directory, symlink, fifo, ...).
        kind: &'static str,
    },
    /// The object at the path is no longer the one that was inspected
    /// (different device/inode, different content, or replaced by a symlink).
    /// Nothing was deleted.
    #[error("{path:?} changed since it was inspected ({detail}); nothing was deleted — re-scan the path")]
    Changed {
        /// Device path.
        path: PathBuf,
        /// What differs.
        detail: String,
    },
    /// An I/O error from the operating system.
    #[error("{op} {path:?}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// Device (or host) path concerned.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl HostError {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
        source: impl Into<std::io::Error>,
    ) -> Self {
        HostError::Io {
            op,
            path: path.into(),
            source: source.into(),
        }
    }
}

/// The message of [`HostError::NotFound`]: a missing folder on the way is named, since
/// "already removed" would send the reader looking for the object itself.
fn not_found_text(path: &std::path::Path, missing_folder: Option<&str>) -> String {
    match missing_folder {
        Some(folder) => format!("{path:?}: its folder {folder:?} does not exist"),
        None => format!("{path:?} does not exist (it may already have been removed)"),
    }
}
