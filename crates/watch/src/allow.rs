//! Content an administrator has declared harmless: SHA-256s the watcher neither
//! submits nor reports as malicious.
//!
//! Why: restoring a quarantined object is an administrator's decision that the sandbox
//! was wrong about it. The restore itself writes the object back into a watched folder,
//! and the verdict cache still says "malicious" for its SHA-256, so without this list the
//! object would be quarantined again at once, and again after every later sighting. The
//! list is one JSON file rewritten atomically, like the verdict cache, but never
//! expires: an administrator's decision outlives any TTL. It is shared (one instance,
//! behind an `Arc`) by the agent, which adds to it on restore, and the watcher.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::fsutil::{private_dir, remove_interrupted_writes, write_atomic};
use crate::WatchError;

/// The file's name in the watcher's state directory.
const FILE_NAME: &str = "allowed.json";

/// The persisted set of allowed SHA-256s (lowercase hex).
#[derive(Debug)]
pub struct AllowList {
    path: PathBuf,
    entries: Mutex<BTreeSet<String>>,
}

/// `sha256` as 64 lowercase hex digits, or an error that says what was given.
fn normalise(sha256: &str) -> Result<String, WatchError> {
    let s = sha256.trim().to_ascii_lowercase();
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(s)
    } else {
        Err(WatchError::NotSha256(sha256.to_string()))
    }
}

impl AllowList {
    /// Opens the list kept in the watcher's state directory `queue_dir` (see
    /// [`crate::WatchConfig::queue_dir`]), creating the directory if needed.
    ///
    /// An unreadable or damaged file is an error, not an empty list: starting empty
    /// would silently undo administrators' decisions and the next save would erase them.
    pub fn open_in(queue_dir: &Path) -> Result<AllowList, WatchError> {
        private_dir(queue_dir)?;
        let path = queue_dir.join(FILE_NAME);
        remove_interrupted_writes(&path);
        let entries = match std::fs::read(&path) {
            Ok(b) => {
                let damaged = |reason: String| WatchError::Damaged {
                    path: path.clone(),
                    reason,
                };
                let list: Vec<String> =
                    serde_json::from_slice(&b).map_err(|e| damaged(e.to_string()))?;
                list.iter()
                    .map(|s| normalise(s))
                    .collect::<Result<BTreeSet<_>, _>>()
                    .map_err(|e| damaged(e.to_string()))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
            Err(e) => return Err(WatchError::io("read", &path, e)),
        };
        Ok(AllowList {
            path,
            entries: Mutex::new(entries),
        })
    }

    /// Whether the content with this SHA-256 was allowed.
    pub fn contains(&self, sha256: &str) -> bool {
        let Ok(s) = normalise(sha256) else {
            return false;
        };
        self.lock().contains(&s)
    }

    /// Allows the content with this SHA-256 and persists the list before returning.
    /// Returns whether it was new (`false`: it was already allowed).
    pub fn allow(&self, sha256: &str) -> Result<bool, WatchError> {
        let s = normalise(sha256)?;
        let mut entries = self.lock();
        if !entries.insert(s.clone()) {
            return Ok(false);
        }
        if let Err(e) = self.save(&entries) {
            // Memory must not claim what the disk does not hold.
            entries.remove(&s);
            return Err(e);
        }
        Ok(true)
    }

    /// Withdraws an allowance: an administrator's change of mind, or the undoing of
    /// [`AllowList::allow`] when the restore it was made for fails. Returns whether it
    /// was there (`false`: nothing to withdraw, nothing written).
    pub fn revoke(&self, sha256: &str) -> Result<bool, WatchError> {
        let s = normalise(sha256)?;
        let mut entries = self.lock();
        if !entries.remove(&s) {
            return Ok(false);
        }
        if let Err(e) = self.save(&entries) {
            entries.insert(s);
            return Err(e);
        }
        Ok(true)
    }

    /// Every allowed SHA-256, in order.
    pub fn list(&self) -> Vec<String> {
        self.lock().iter().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn save(&self, entries: &BTreeSet<String>) -> Result<(), WatchError> {
        let bytes = serde_json::to_vec(entries).map_err(|e| {
            WatchError::io(
                "serialize",
                &self.path,
                std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            )
        })?;
        write_atomic(&self.path, &bytes, 0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persists_normalises_and_refuses_what_is_not_a_sha256() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("sandbox-watch");
        let sha = "AB".repeat(32);
        let a = AllowList::open_in(&dir).unwrap();
        assert!(!a.contains(&sha));
        assert!(a.allow(&sha).unwrap());
        assert!(
            !a.allow(&sha.to_lowercase()).unwrap(),
            "same hash, other case"
        );
        assert!(matches!(
            a.allow("../../etc/passwd"),
            Err(WatchError::NotSha256(_))
        ));
        let b = AllowList::open_in(&dir).unwrap();
        assert!(b.contains(&sha.to_lowercase()), "survives a reopen");
        assert_eq!(b.list(), vec![sha.to_lowercase()]);
        assert!(b.revoke(&sha).unwrap());
        assert!(!b.revoke(&sha).unwrap(), "nothing left to withdraw");
        assert!(!AllowList::open_in(&dir).unwrap().contains(&sha));
        assert!(b.list().is_empty());

        // A write cut short by a crash left its temporary: gone at the next open, unless
        // its process still runs (it may be writing it now).
        let dead = dir.join(format!(".{FILE_NAME}.4294000000.tmp"));
        let live = dir.join(format!(".{FILE_NAME}.1.tmp"));
        let other = dir.join(format!(".{FILE_NAME}.x.tmp"));
        for p in [&dead, &live, &other] {
            std::fs::write(p, b"[").unwrap();
        }
        assert!(!AllowList::open_in(&dir).unwrap().contains(&sha));
        assert!(!dead.exists());
        assert!(live.exists() && other.exists());

        std::fs::write(dir.join(FILE_NAME), b"{garbage").unwrap();
        assert!(
            matches!(AllowList::open_in(&dir), Err(WatchError::Damaged { .. })),
            "a damaged list is reported, not emptied"
        );
    }
}
