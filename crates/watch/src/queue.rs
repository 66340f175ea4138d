//! The on-disk submission queue: copies of objects waiting for a sandbox verdict.
//!
//! Why copies: the path may be renamed, rewritten or deleted before the sandbox is
//! reachable, and the verdict must describe exactly the bytes that were hashed. Copies
//! live in `objects/` (mode 0700, files 0600, named by SHA-256), their records (hashes,
//! every sighting with path and account, the sandbox task id once submitted) in
//! `items/`. An object is written before its record and removed after it, so a crash
//! leaves at most an orphan copy, which the next start deletes. The byte cap is checked
//! before anything is written: a full queue is reported, never silently dropped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::fsutil::{now_secs, private_dir, write_atomic};
use crate::object::{Object, Sighting};
use crate::WatchError;

/// Most sightings remembered per object (the first ones and the latest ones are kept).
const MAX_SIGHTINGS: usize = 64;

/// One queued object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct QueueItem {
    /// SHA-256 (also the file names).
    pub sha256: String,
    /// MD5.
    pub md5: String,
    /// SHA-1.
    pub sha1: String,
    /// Size of the copy.
    pub size: u64,
    /// Name used for the submission.
    pub name: String,
    /// Order of arrival.
    pub seq: u64,
    /// When first queued (Unix seconds).
    pub enqueued_at: u64,
    /// Where and by whom it was seen; each gets a verdict.
    pub sightings: Vec<Sighting>,
    /// Sandbox task, once submitted.
    #[serde(default)]
    pub task_id: Option<String>,
    /// Failed analyses so far (the sandbox answered with an error).
    #[serde(default)]
    pub failures: u32,
}

/// Result of [`Queue::enqueue`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Enqueued {
    /// A new copy was queued.
    Added,
    /// The object was already queued; the sighting was added to it.
    Merged,
    /// No room: queuing `size` bytes would exceed the cap.
    Full {
        /// Bytes queued now.
        queued: u64,
        /// The cap.
        cap: u64,
    },
}

#[derive(Debug, Default)]
struct State {
    items: HashMap<String, QueueItem>,
    bytes: u64,
    next_seq: u64,
}

/// The queue directory.
#[derive(Debug)]
pub(crate) struct Queue {
    objects: PathBuf,
    items: PathBuf,
    max_bytes: u64,
    state: Mutex<State>,
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Queue {
    /// Open (creating) the queue in `dir`. Returns the queue and a description of each
    /// record that had to be dropped because its copy was missing or damaged.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<(Self, Vec<String>), WatchError> {
        private_dir(dir)?;
        let objects = dir.join("objects");
        let items = dir.join("items");
        private_dir(&objects)?;
        private_dir(&items)?;
        let mut state = State::default();
        let mut damaged = Vec::new();
        let list = std::fs::read_dir(&items).map_err(|e| WatchError::io("list", &items, e))?;
        for entry in list.flatten() {
            let p = entry.path();
            if p.extension().is_none_or(|x| x != "json") {
                let _ = std::fs::remove_file(&p); // temporary file of an interrupted write
                continue;
            }
            let item: Option<QueueItem> = std::fs::read(&p)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            let ok = item.as_ref().is_some_and(|i| {
                is_sha256(&i.sha256)
                    && std::fs::metadata(objects.join(&i.sha256)).is_ok_and(|m| m.len() == i.size)
            });
            match item {
                Some(i) if ok => {
                    state.bytes += i.size;
                    state.next_seq = state.next_seq.max(i.seq + 1);
                    state.items.insert(i.sha256.clone(), i);
                }
                other => {
                    let paths = other
                        .map(|i| {
                            i.sightings
                                .iter()
                                .map(|s| s.device_path.clone())
                                .collect::<Vec<_>>()
                                .join(", ")
                        })
                        .unwrap_or_else(|| "unknown paths".into());
                    damaged.push(format!(
                        "queue record {} was damaged or its copy is missing ({paths}); those objects must be submitted again",
                        p.display()
                    ));
                    let _ = std::fs::remove_file(&p);
                }
            }
        }
        // Copies without a record: a crash between writing the copy and its record.
        if let Ok(list) = std::fs::read_dir(&objects) {
            for entry in list.flatten() {
                // Copies are named by SHA-256; a name that is not even UTF-8 is no copy.
                let known = entry
                    .file_name()
                    .to_str()
                    .is_some_and(|name| state.items.contains_key(name));
                if !known {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        Ok((
            Queue {
                objects,
                items,
                max_bytes,
                state: Mutex::new(state),
            },
            damaged,
        ))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn item_path(&self, sha256: &str) -> PathBuf {
        self.items.join(format!("{sha256}.json"))
    }

    fn save(&self, item: &QueueItem) -> Result<(), WatchError> {
        let bytes = serde_json::to_vec_pretty(item).map_err(|e| {
            WatchError::io(
                "serialize",
                self.item_path(&item.sha256),
                std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            )
        })?;
        write_atomic(&self.item_path(&item.sha256), &bytes, 0o600)
    }

    /// Queue `object` seen as `sighting`, or add the sighting to the queued copy.
    pub fn enqueue(&self, object: &Object, sighting: Sighting) -> Result<Enqueued, WatchError> {
        let mut st = self.lock();
        if let Some(item) = st.items.get_mut(&object.sha256) {
            if !item.sightings.contains(&sighting) {
                if item.sightings.len() >= MAX_SIGHTINGS {
                    item.sightings.remove(MAX_SIGHTINGS / 2);
                }
                item.sightings.push(sighting);
                let item = item.clone();
                self.save(&item)?;
            }
            return Ok(Enqueued::Merged);
        }
        let size = object.bytes.len() as u64;
        if st.bytes.saturating_add(size) > self.max_bytes {
            return Ok(Enqueued::Full {
                queued: st.bytes,
                cap: self.max_bytes,
            });
        }
        let item = QueueItem {
            sha256: object.sha256.clone(),
            md5: object.md5.clone(),
            sha1: object.sha1.clone(),
            size,
            name: object.name.clone(),
            seq: st.next_seq,
            enqueued_at: now_secs(),
            sightings: vec![sighting],
            task_id: None,
            failures: 0,
        };
        write_atomic(&self.objects.join(&object.sha256), &object.bytes, 0o600)?;
        if let Err(e) = self.save(&item) {
            let _ = std::fs::remove_file(self.objects.join(&object.sha256));
            return Err(e);
        }
        st.next_seq += 1;
        st.bytes += size;
        st.items.insert(item.sha256.clone(), item);
        Ok(Enqueued::Added)
    }

    /// Queued items, oldest first.
    pub fn pending(&self) -> Vec<QueueItem> {
        let mut v: Vec<QueueItem> = self.lock().items.values().cloned().collect();
        v.sort_by_key(|i| i.seq);
        v
    }

    /// Number of queued objects and their bytes.
    pub fn usage(&self) -> (usize, u64) {
        let st = self.lock();
        (st.items.len(), st.bytes)
    }

    /// The queued copy of an object.
    pub fn object(&self, sha256: &str) -> Result<Vec<u8>, WatchError> {
        let p = self.objects.join(sha256);
        std::fs::read(&p).map_err(|e| WatchError::io("read the queued copy", p, e))
    }

    /// Record the task id (or clear it) and the failure count of a queued object.
    pub fn update(
        &self,
        sha256: &str,
        task_id: Option<String>,
        failures: u32,
    ) -> Result<(), WatchError> {
        let mut st = self.lock();
        let Some(item) = st.items.get_mut(sha256) else {
            return Ok(());
        };
        item.task_id = task_id;
        item.failures = failures;
        let item = item.clone();
        self.save(&item)
    }

    /// Take an object out of the queue; returns its record with every sighting so far.
    pub fn remove(&self, sha256: &str) -> Option<QueueItem> {
        let mut st = self.lock();
        let item = st.items.remove(sha256)?;
        st.bytes = st.bytes.saturating_sub(item.size);
        let _ = std::fs::remove_file(self.item_path(sha256));
        let _ = std::fs::remove_file(self.objects.join(sha256));
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(data: &[u8]) -> Object {
        use sha2::Digest;
        Object {
            name: "x".into(),
            bytes: data.to_vec(),
            md5: String::new(),
            sha1: String::new(),
            sha256: hex::encode(sha2::Sha256::digest(data)),
        }
    }

    fn seen(p: &str) -> Sighting {
        Sighting {
            device_path: p.into(),
            user_name: None,
            user_uid: Some(0),
        }
    }

    #[test]
    fn cap_merge_and_restart() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let (q, damaged) = Queue::open(d.path(), 10).unwrap();
        assert!(damaged.is_empty());
        let mode = std::fs::metadata(d.path().join("objects"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        assert_eq!(
            q.enqueue(&obj(b"123456"), seen("/a")).unwrap(),
            Enqueued::Added
        );
        assert_eq!(
            q.enqueue(&obj(b"123456"), seen("/b")).unwrap(),
            Enqueued::Merged
        );
        assert_eq!(
            q.enqueue(&obj(b"abcdef"), seen("/c")).unwrap(),
            Enqueued::Full { queued: 6, cap: 10 }
        );
        q.update(&obj(b"123456").sha256, Some("t1".into()), 0)
            .unwrap();
        drop(q);
        // An orphan copy (crash before the record) is cleaned up on open.
        std::fs::write(d.path().join("objects").join("f".repeat(64)), b"zz").unwrap();
        let (q, _) = Queue::open(d.path(), 10).unwrap();
        assert_eq!(q.usage(), (1, 6));
        assert!(!d.path().join("objects").join("f".repeat(64)).exists());
        let items = q.pending();
        assert_eq!(items[0].task_id.as_deref(), Some("t1"));
        let paths: Vec<_> = items[0]
            .sightings
            .iter()
            .map(|s| s.device_path.as_str())
            .collect();
        assert_eq!(paths, ["/a", "/b"]);
        assert_eq!(q.object(&items[0].sha256).unwrap(), b"123456");
        assert!(q.remove(&items[0].sha256).is_some());
        assert_eq!(q.usage(), (0, 0));
    }
}
