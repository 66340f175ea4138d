use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

use crate::HostError;

/// A directory treated as the device's `/`.
///
/// Detections name *device paths*; the agent maps them under the root. In
/// production the root is `/`; tests point it at a temporary directory so
/// that they can build a fake device (with `/proc/modules`, `/boot`, `/dev`…)
/// and run in parallel.
///
/// Device paths are taken and given as `Path`s, which keep every byte of a
/// name. Where one is carried as text (detections, hits, records) it goes
/// through [`riposte_model::path_text`]: a lossy string would lead to another
/// file, or to none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoot {
    root: PathBuf,
}

impl Default for HostRoot {
    fn default() -> Self {
        Self::system()
    }
}

impl HostRoot {
    /// The real device: root `/`.
    pub fn system() -> Self {
        HostRoot {
            root: PathBuf::from("/"),
        }
    }

    /// A root at `dir` (used by tests and for offline images).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        HostRoot { root: dir.into() }
    }

    /// The directory used as `/`.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Validates a device path and returns its components below `/`.
    ///
    /// Refuses relative paths and paths with `..` components. `.` components
    /// are dropped. The returned list is empty for `/` itself.
    pub fn components(device_path: &Path) -> Result<Vec<OsString>, HostError> {
        let invalid = |reason: &str| HostError::InvalidPath {
            path: device_path.to_path_buf(),
            reason: reason.to_string(),
        };
        if !device_path.is_absolute() {
            return Err(invalid("the path is not absolute"));
        }
        let mut out = Vec::new();
        for c in device_path.components() {
            match c {
                Component::RootDir | Component::CurDir => {}
                Component::ParentDir => return Err(invalid("the path contains a `..` component")),
                Component::Prefix(_) => return Err(invalid("path prefixes are not supported")),
                Component::Normal(n) => out.push(n.to_os_string()),
            }
        }
        Ok(out)
    }

    /// Maps a device path under the root (without touching the file system).
    pub fn host_path(&self, device_path: &Path) -> Result<PathBuf, HostError> {
        let comps = Self::components(device_path)?;
        let mut p = self.root.clone();
        for c in comps {
            p.push(c);
        }
        Ok(p)
    }

    /// Maps a host path (under the root) back to a device path, if it is
    /// under the root.
    pub fn device_path(&self, host_path: &Path) -> Option<PathBuf> {
        let rel = host_path.strip_prefix(&self.root).ok()?;
        Some(Path::new("/").join(rel))
    }

    /// The running kernel's release (`uname -r`), read from
    /// `/proc/sys/kernel/osrelease` under the root so that tests can fake it,
    /// falling back to `uname(2)` for the real root.
    pub fn kernel_release(&self) -> Option<String> {
        if let Ok(s) = std::fs::read_to_string(self.root.join("proc/sys/kernel/osrelease")) {
            let s = s.trim();
            if !s.is_empty() {
                return Some(s.to_string());
            }
        }
        if self.root == Path::new("/") {
            return Some(
                rustix::system::uname()
                    .release()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_and_refuses() {
        let r = HostRoot::new("/tmp/x");
        assert_eq!(
            r.host_path(Path::new("/etc/./passwd")).unwrap(),
            PathBuf::from("/tmp/x/etc/passwd")
        );
        assert!(matches!(
            r.host_path(Path::new("/etc/../passwd")),
            Err(HostError::InvalidPath { .. })
        ));
        assert!(matches!(
            r.host_path(Path::new("etc/passwd")),
            Err(HostError::InvalidPath { .. })
        ));
        assert_eq!(
            r.device_path(Path::new("/tmp/x/etc/passwd")).unwrap(),
            PathBuf::from("/etc/passwd")
        );
        assert!(r.device_path(Path::new("/etc/passwd")).is_none());
    }
}
