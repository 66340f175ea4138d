//! The persisted verdict cache: SHA-256 → verdict, trusted for a TTL.
//!
//! Why: the same object is written and run many times (builds, package installs, every
//! launch of a program); each sighting must get a verdict but only the first may cost a
//! submission. The cache is one JSON file rewritten atomically, small enough because
//! entries are bounded and reports are kept only for malicious verdicts.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::fsutil::{now_secs, remove_interrupted_writes, write_atomic};
use crate::WatchError;

/// Most entries kept; the oldest go first.
const MAX_ENTRIES: usize = 20_000;

/// A cached verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct CacheEntry {
    /// Malicious.
    pub malicious: bool,
    /// Threat name.
    pub threat: Option<String>,
    /// Source (see [`crate::Verdict::source`]).
    pub source: String,
    /// Task id.
    pub source_ref: Option<String>,
    /// Dropped files.
    #[serde(default)]
    pub dropped_sha256: Vec<String>,
    /// Report, kept for malicious verdicts only.
    #[serde(default)]
    pub report: Option<Box<riposte_sandbox::Report>>,
    /// When the verdict was received (Unix seconds).
    pub at: u64,
}

/// The cache file and its contents.
#[derive(Debug)]
pub(crate) struct VerdictCache {
    path: PathBuf,
    ttl: Duration,
    entries: Mutex<HashMap<String, CacheEntry>>,
}

impl VerdictCache {
    /// Load `path` (a missing or unreadable file starts an empty cache, with a warning
    /// for the unreadable case: losing the cache costs resubmissions, not verdicts).
    pub fn open(path: PathBuf, ttl: Duration) -> Self {
        remove_interrupted_writes(&path);
        let entries = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                tracing::warn!(
                    "verdict cache {} unreadable ({e}); starting empty",
                    path.display()
                );
                HashMap::new()
            }),
            Err(_) => HashMap::new(),
        };
        VerdictCache {
            path,
            ttl,
            entries: Mutex::new(entries),
        }
    }

    /// A verdict younger than the TTL.
    pub fn get(&self, sha256: &str) -> Option<CacheEntry> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let e = entries.get(sha256)?;
        (now_secs().saturating_sub(e.at) < self.ttl.as_secs().max(1)).then(|| e.clone())
    }

    /// Record a verdict and persist the cache.
    pub fn put(&self, sha256: &str, mut entry: CacheEntry) -> Result<(), WatchError> {
        if !entry.malicious {
            entry.report = None;
        }
        let bytes = {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            let now = now_secs();
            let ttl = self.ttl.as_secs().max(1);
            entries.retain(|_, e| now.saturating_sub(e.at) < ttl);
            if entries.len() >= MAX_ENTRIES {
                let mut ages: Vec<(u64, String)> =
                    entries.iter().map(|(k, e)| (e.at, k.clone())).collect();
                ages.sort();
                for (_, k) in ages.into_iter().take(entries.len() + 1 - MAX_ENTRIES) {
                    entries.remove(&k);
                }
            }
            entries.insert(sha256.to_string(), entry);
            serde_json::to_vec(&*entries).map_err(|e| {
                WatchError::io(
                    "serialize",
                    &self.path,
                    std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                )
            })?
        };
        write_atomic(&self.path, &bytes, 0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(at: u64) -> CacheEntry {
        CacheEntry {
            malicious: false,
            threat: None,
            source: "riposte-sandbox".into(),
            source_ref: None,
            dropped_sha256: vec![],
            report: None,
            at,
        }
    }

    #[test]
    fn persists_and_expires() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("verdicts.json");
        let c = VerdictCache::open(p.clone(), Duration::from_secs(60));
        c.put("aa", entry(now_secs())).unwrap();
        c.put("old", entry(now_secs() - 120)).unwrap();
        let c = VerdictCache::open(p.clone(), Duration::from_secs(60));
        assert!(c.get("aa").is_some());
        assert!(c.get("old").is_none(), "older than the TTL");
        assert!(c.get("bb").is_none());
        std::fs::write(&p, b"{garbage").unwrap();
        assert!(VerdictCache::open(p, Duration::from_secs(60))
            .get("aa")
            .is_none());
    }
}
