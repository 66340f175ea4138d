//! # riposte-quarantine: the endpoint's quarantine store
//!
//! Quarantining moves a detected file out of reach: its content is copied,
//! encrypted and authenticated (see [`crypto`]), into the agent's data
//! directory together with a record of where it came from and who owned it,
//! and the original is deleted — safely, through `riposte-host`, which
//! refuses to delete anything but the very object that was copied.
//!
//! ## Crash safety
//! The store never loses an object: at every instant the object is intact at
//! its path, or fully in quarantine with a complete record. The order is
//!
//! 1. write an *intent* (`journal/ID.json`, fsynced);
//! 2. encrypt the content into `objects/ID.obj`, fsync;
//! 3. write the record `records/ID.json` atomically (tmp, fsync, rename,
//!    fsync dir) — the commit point;
//! 4. delete the original (device, inode and SHA-256 re-checked, and size,
//!    mtime and ctime still those seen when the copy was made) and fsync
//!    its directory;
//! 5. remove the intent.
//!
//! [`QuarantineStore::open`] runs [`QuarantineStore::recover`]: an intent
//! without record is rolled back (partial object removed; the original was
//! never touched), an intent with record is finished (the original deleted if
//! it is still the same object), and an intent whose record exists but cannot
//! be read is left alone with a warning (the object may be the only copy).
//! Restores are journaled the same way.
//!
//! ## Layout of the data directory
//! `quarantine.key` (32 random bytes, mode 0600), `objects/`, `records/`
//! (one JSON record per entry — no database to corrupt or to build),
//! `journal/`.

pub mod crypto;
mod error;
mod protect;

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use md5::Md5;
use rand::RngCore;
use riposte_host::{FileIdentity, FileStamp, HostError, HostRoot};
use rustix::fs::{Mode, OFlags, RenameFlags, Timespec, Timestamps};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};
use sha1::Sha1;
use sha2::{Digest, Sha256};

pub use error::QuarantineError;
pub use protect::default_protected;

/// Hook called between the copy and the deletion (instrumentation and race
/// tests).
pub type PreDeleteHook = Arc<dyn Fn(&Path) + Send + Sync>;

/// Limits and policy of the store.
#[derive(Clone)]
pub struct QuarantineConfig {
    /// Largest object accepted (bytes). Default 100 MiB.
    pub max_object_size: u64,
    /// Largest total size of stored objects (bytes). Default 2 GiB.
    pub max_store_size: u64,
    /// Free space that must remain on the store's file system after the
    /// object is stored (bytes). Default 64 MiB.
    pub min_free_bytes: u64,
    /// Protected device paths: exact paths, `dir/` prefixes, and `*`
    /// wildcards within one component, in their [`riposte_model::path_text`]
    /// form (`\xHH` for a byte that is not UTF-8). Default [`default_protected`].
    pub protected: Vec<String>,
    /// Called after the copy is committed and before the original is deleted.
    pub pre_delete_hook: Option<PreDeleteHook>,
}

impl Default for QuarantineConfig {
    fn default() -> Self {
        QuarantineConfig {
            max_object_size: 100 << 20,
            max_store_size: 2 << 30,
            min_free_bytes: 64 << 20,
            protected: default_protected(),
            pre_delete_hook: None,
        }
    }
}

impl std::fmt::Debug for QuarantineConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuarantineConfig")
            .field("max_object_size", &self.max_object_size)
            .field("max_store_size", &self.max_store_size)
            .field("min_free_bytes", &self.min_free_bytes)
            .field("protected", &self.protected)
            .finish_non_exhaustive()
    }
}

/// What to quarantine and why.
#[derive(Debug, Clone, Default)]
pub struct QuarantineRequest {
    /// Device path of the object.
    pub path: PathBuf,
    /// Detection that caused the quarantine.
    pub detection_id: String,
    /// Threat name reported by the detection.
    pub threat_name: String,
    /// Account under which the threat was detected.
    pub user: String,
    /// Identity seen at detection time; when given, the object must still be
    /// that inode with that SHA-256, else nothing is done.
    pub expected: Option<FileIdentity>,
}

/// The record of one quarantined object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineRecord {
    /// Record format version.
    pub format: u32,
    /// Entry id (32 hex digits).
    pub id: String,
    /// Device path the object was taken from. Stored in its
    /// [`riposte_model::path_text`] form, so that a name that is not UTF-8 is
    /// restored under its own bytes (plain serde refuses such a path).
    #[serde(with = "riposte_model::path_text::as_string")]
    pub original_path: PathBuf,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Permission bits.
    pub mode: u32,
    /// Size in bytes.
    pub size: u64,
    /// Access time (s, ns).
    pub atime: (i64, i64),
    /// Modification time (s, ns).
    pub mtime: (i64, i64),
    /// Status change time (s, ns), informational.
    pub ctime: (i64, i64),
    /// Device id of the original.
    pub dev: u64,
    /// Inode of the original.
    pub ino: u64,
    /// MD5 (hex).
    pub md5: String,
    /// SHA-1 (hex).
    pub sha1: String,
    /// SHA-256 (hex).
    pub sha256: String,
    /// Detection id.
    pub detection_id: String,
    /// Threat name.
    pub threat_name: String,
    /// Account under which it was detected.
    pub user: String,
    /// When it was quarantined (seconds since the epoch).
    pub quarantined_at: u64,
}

/// What [`QuarantineStore::list`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    /// Entries whose record was read, oldest first.
    pub entries: Vec<QuarantineRecord>,
    /// Entries whose record cannot be read (damaged, unreadable). Their
    /// objects are kept; they cannot be restored until the record is fixed.
    pub unreadable: Vec<UnreadableEntry>,
}

/// An entry whose record cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnreadableEntry {
    /// Entry id.
    pub id: String,
    /// Why its record cannot be read.
    pub reason: String,
}

/// Where to restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreTarget {
    /// The original path.
    Original,
    /// Another device path.
    Path(PathBuf),
}

/// What to do when the restore target exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictPolicy {
    /// Fail with [`QuarantineError::TargetExists`].
    Refuse,
    /// Atomically replace the existing file.
    Replace,
    /// Restore next to it as `NAME.restored`, `NAME.restored-2`, …
    Rename,
}

/// What [`QuarantineStore::recover`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Quarantines finished (record was complete).
    pub completed: Vec<String>,
    /// Quarantines rolled back (no complete record; original untouched).
    pub rolled_back: Vec<String>,
    /// Restores whose leftovers were cleaned.
    pub restores_cleaned: Vec<String>,
    /// Quarantines finished whose original was not deleted (entry id, why): the copy
    /// is in quarantine, and the path still holds something (another file put there
    /// since, say), which was left alone. Also in `completed` and `warnings`.
    pub originals_kept: Vec<(String, String)>,
    /// Problems found (reported, not fatal).
    pub warnings: Vec<String>,
}

// Paths as `path_text`, like the records: recovery must find the same bytes.
#[derive(Debug, Serialize, Deserialize)]
enum Intent {
    Quarantine {
        id: String,
        #[serde(with = "riposte_model::path_text::as_string")]
        path: PathBuf,
    },
    Restore {
        id: String,
        #[serde(with = "riposte_model::path_text::as_string")]
        target: PathBuf,
        tmp_name: String,
        /// Restored with [`ConflictPolicy::Rename`]: it may have landed beside the
        /// target, as `NAME.restored`, `NAME.restored-2`…
        #[serde(default)]
        renames: bool,
    },
}

/// The quarantine store in an agent data directory.
pub struct QuarantineStore {
    dir: PathBuf,
    host: HostRoot,
    cfg: QuarantineConfig,
    key: [u8; 32],
    lock: Mutex<()>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn valid_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

fn fsync_dir(dir: &Path) -> Result<(), QuarantineError> {
    let f = File::open(dir).map_err(error::io_err("opening", dir))?;
    f.sync_all().map_err(error::io_err("syncing", dir))
}

/// Writes `data` to `dir/name` atomically: tmp file, fsync, rename, fsync dir.
fn atomic_write(dir: &Path, name: &str, data: &[u8]) -> Result<(), QuarantineError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let dst = dir.join(name);
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(error::io_err("creating", &tmp))?;
        f.write_all(data).map_err(error::io_err("writing", &tmp))?;
        f.sync_all().map_err(error::io_err("syncing", &tmp))?;
    }
    fs::rename(&tmp, &dst).map_err(error::io_err("renaming", &dst))?;
    fsync_dir(dir)
}

/// Makes the unlink of an original durable. Must come before its intent is
/// removed: otherwise a power cut can bring the original back with no intent
/// left to say it must go.
fn sync_original_dir(parent: &OwnedFd) -> std::io::Result<()> {
    riposte_host::safefs::sync_dir(parent)?;
    step("synced original's directory");
    Ok(())
}

/// Records a step whose order crash safety depends on, for the unit tests.
fn step(name: &'static str) {
    #[cfg(test)]
    tests::STEPS.with(|s| s.borrow_mut().push(name));
    let _ = name;
}

fn remove_if_exists(p: &Path) -> Result<(), QuarantineError> {
    match fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(error::io_err("removing", p)(e)),
    }
}

impl QuarantineStore {
    /// Opens (creating if needed) the store in `dir` for the device at
    /// `host`, and recovers interrupted operations.
    pub fn open(
        dir: impl Into<PathBuf>,
        host: HostRoot,
        cfg: QuarantineConfig,
    ) -> Result<(Self, RecoveryReport), QuarantineError> {
        let s = Self::open_no_recover(dir, host, cfg)?;
        let r = s.recover()?;
        Ok((s, r))
    }

    /// Opens the store without recovering interrupted operations (for
    /// inspection tools and tests; do not quarantine through it).
    pub fn open_no_recover(
        dir: impl Into<PathBuf>,
        host: HostRoot,
        cfg: QuarantineConfig,
    ) -> Result<Self, QuarantineError> {
        let dir = dir.into();
        for sub in ["", "objects", "records", "journal"] {
            let d = dir.join(sub);
            // Its folders are the store's own: one that is a link would have the store
            // write, and restrict the modes of, whatever it points to.
            if !sub.is_empty() && fs::symlink_metadata(&d).is_ok_and(|m| m.is_symlink()) {
                return Err(error::io_err("opening", &d)(std::io::Error::other(
                    "a symbolic link where the quarantine keeps a folder of its own: move it \
                     aside and restart",
                )));
            }
            if !d.is_dir() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&d)
                    .map_err(error::io_err("creating directory", &d))?;
            }
            // A directory made by hand or by an older version may be readable by all.
            fs::set_permissions(&d, fs::Permissions::from_mode(0o700))
                .map_err(error::io_err("restricting to mode 0700", &d))?;
            if !sub.is_empty() {
                restrict_files(&d)?;
            }
        }
        let key = load_or_create_key(&dir)?;
        restrict_file(&dir.join("quarantine.key"));
        Ok(QuarantineStore {
            dir,
            host,
            cfg,
            key,
            lock: Mutex::new(()),
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The host root objects are taken from.
    pub fn host(&self) -> &HostRoot {
        &self.host
    }

    fn object_path(&self, id: &str) -> PathBuf {
        self.dir.join("objects").join(format!("{id}.obj"))
    }
    fn record_path(&self, id: &str) -> PathBuf {
        self.dir.join("records").join(format!("{id}.json"))
    }
    fn journal_dir(&self) -> PathBuf {
        self.dir.join("journal")
    }

    fn write_intent(&self, id: &str, intent: &Intent) -> Result<(), QuarantineError> {
        let data = serde_json::to_vec(intent)
            .map_err(|e| error::io_err("encoding intent", self.journal_dir())(e.into()))?;
        let p = self.journal_dir().join(format!("{id}.json"));
        // An intent names the path of a detected object: owner-only, like the records.
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&p)
            .map_err(error::io_err("creating", &p))?;
        // `mode` applies only to a file it creates; a leftover keeps its own.
        f.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(error::io_err("restricting", &p))?;
        f.write_all(&data).map_err(error::io_err("writing", &p))?;
        f.sync_all().map_err(error::io_err("syncing", &p))?;
        fsync_dir(&self.journal_dir())
    }

    fn remove_intent(&self, id: &str) -> Result<(), QuarantineError> {
        remove_if_exists(&self.journal_dir().join(format!("{id}.json")))?;
        step("removed intent");
        Ok(())
    }

    /// Total bytes of stored objects.
    pub fn store_size(&self) -> Result<u64, QuarantineError> {
        let d = self.dir.join("objects");
        let mut total = 0;
        for e in fs::read_dir(&d).map_err(error::io_err("listing", &d))? {
            let e = e.map_err(error::io_err("listing", &d))?;
            total += e.metadata().map(|m| m.len()).unwrap_or(0);
        }
        Ok(total)
    }

    fn free_bytes(&self) -> Result<u64, QuarantineError> {
        let st = rustix::fs::statvfs(&self.dir)
            .map_err(|e| error::io_err("statvfs", &self.dir)(e.into()))?;
        Ok(st.f_bavail.saturating_mul(st.f_frsize))
    }

    /// Quarantines the object named by `req.path`: copy (encrypted), record,
    /// then safe deletion. Returns the record.
    pub fn quarantine(&self, req: &QuarantineRequest) -> Result<QuarantineRecord, QuarantineError> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let path = &req.path;
        protect::check_path(&self.cfg.protected, path)?;
        let opened = self.host.open_regular(path)?;
        protect::check_identity(&self.host, &self.cfg.protected, &self.dir, &opened)?;
        if let Some(exp) = &req.expected {
            if exp.dev != opened.meta.dev || exp.ino != opened.meta.ino {
                return Err(HostError::Changed {
                    path: path.clone(),
                    detail: "it is another file than the one detected".into(),
                }
                .into());
            }
        }
        let size = opened.meta.size;
        if size > self.cfg.max_object_size {
            return Err(QuarantineError::TooLarge {
                path: path.clone(),
                size,
                limit: self.cfg.max_object_size,
            });
        }
        let used = self.store_size()?;
        if used.saturating_add(size) > self.cfg.max_store_size {
            return Err(QuarantineError::StoreFull {
                path: path.clone(),
                size,
                used,
                limit: self.cfg.max_store_size,
            });
        }
        let free = self.free_bytes()?;
        let overhead = size / 1000 + 64 * 1024;
        if free
            < size
                .saturating_add(overhead)
                .saturating_add(self.cfg.min_free_bytes)
        {
            return Err(QuarantineError::LowDiskSpace {
                path: path.clone(),
                size,
                free,
                reserve: self.cfg.min_free_bytes,
            });
        }

        let mut idb = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut idb);
        let id = hex::encode(idb);
        self.write_intent(
            &id,
            &Intent::Quarantine {
                id: id.clone(),
                path: path.clone(),
            },
        )?;
        let rollback = |s: &Self| {
            let _ = remove_if_exists(&s.object_path(&id));
            let _ = remove_if_exists(&s.dir.join("records").join(format!("{id}.json.tmp")));
            let _ = s.remove_intent(&id);
        };

        // Copy, encrypted, hashing on the way.
        let (mut md5, mut sha1, mut sha256) = (Md5::new(), Sha1::new(), Sha256::new());
        let obj = self.object_path(&id);
        let copy = (|| -> Result<u64, QuarantineError> {
            let f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&obj)
                .map_err(error::io_err("creating", &obj))?;
            let mut w = BufWriter::with_capacity(256 * 1024, f);
            let mut src = &opened.file;
            let n = crypto::encrypt_stream(
                &self.key,
                &id,
                &mut src,
                &mut w,
                self.cfg.max_object_size,
                |c| {
                    md5.update(c);
                    sha1.update(c);
                    sha256.update(c);
                },
            )
            .map_err(|e| match e {
                crypto::EncryptError::Read(e) => HostError::Io {
                    op: "reading",
                    path: path.clone(),
                    source: e,
                }
                .into(),
                crypto::EncryptError::Write(e) => error::io_err("writing", &obj)(e),
                crypto::EncryptError::TooLarge(n) => QuarantineError::TooLarge {
                    path: path.clone(),
                    size: n,
                    limit: self.cfg.max_object_size,
                },
            })?;
            let f = w
                .into_inner()
                .map_err(|e| error::io_err("writing", &obj)(e.into_error()))?;
            f.sync_all().map_err(error::io_err("syncing", &obj))?;
            fsync_dir(&self.dir.join("objects"))?;
            Ok(n)
        })();
        let n = match copy {
            Ok(n) => n,
            Err(e) => {
                rollback(self);
                return Err(e);
            }
        };
        let sha256: [u8; 32] = sha256.finalize().into();
        if let Some(exp) = &req.expected {
            if exp.sha256 != sha256 {
                rollback(self);
                return Err(HostError::Changed {
                    path: path.clone(),
                    detail: "its content differs from what was detected".into(),
                }
                .into());
            }
        }
        let m = opened.meta;
        let record = QuarantineRecord {
            format: 1,
            id: id.clone(),
            original_path: path.clone(),
            uid: m.uid,
            gid: m.gid,
            mode: m.permissions(),
            size: n,
            atime: m.atime,
            mtime: m.mtime,
            ctime: m.ctime,
            dev: m.dev,
            ino: m.ino,
            md5: hex::encode(md5.finalize()),
            sha1: hex::encode(sha1.finalize()),
            sha256: hex::encode(sha256),
            detection_id: req.detection_id.clone(),
            threat_name: req.threat_name.clone(),
            user: req.user.clone(),
            quarantined_at: now_secs(),
        };
        let json = serde_json::to_vec_pretty(&record)
            .map_err(|e| error::io_err("encoding record", &obj)(e.into()))?;
        if let Err(e) = atomic_write(&self.dir.join("records"), &format!("{id}.json"), &json) {
            rollback(self);
            return Err(e);
        }
        // Committed: from here on the object is safe in quarantine.
        drop(opened);
        if let Some(h) = &self.cfg.pre_delete_hook {
            h(path);
        }
        let ident = FileIdentity {
            dev: m.dev,
            ino: m.ino,
            sha256,
        };
        match self.host.safe_unlink_since(path, &ident, Some(&m.stamp())) {
            Ok(parent) => {
                step("unlinked original");
                if let Err(e) = sync_original_dir(&parent) {
                    // The unlink may not survive a power cut yet; the intent
                    // stays so that recovery deletes the original again (or
                    // finds it gone and syncs). The object is safe either way.
                    tracing::warn!(
                        id = %id,
                        path = %riposte_model::path_text::encode(path),
                        error = %e,
                        "could not sync the directory of a quarantined file after deleting it; \
                         the deletion is finished again at the next start"
                    );
                    return Ok(record);
                }
            }
            Err(HostError::NotFound { .. }) => {}
            Err(e @ HostError::Changed { .. }) => {
                self.remove_intent(&id)?;
                return Err(QuarantineError::ChangedBeforeDelete { id, source: e });
            }
            Err(e) => {
                let _ = remove_if_exists(&self.record_path(&id));
                if let Err(sync) = fsync_dir(&self.dir.join("records")) {
                    tracing::warn!(id = %id, error = %sync, "could not sync the quarantine's records directory while rolling back");
                }
                rollback(self);
                return Err(QuarantineError::DeleteFailed {
                    path: path.clone(),
                    source: e,
                });
            }
        }
        self.remove_intent(&id)?;
        Ok(record)
    }

    /// Finishes or rolls back operations interrupted by a crash. Called by
    /// [`QuarantineStore::open`].
    pub fn recover(&self) -> Result<RecoveryReport, QuarantineError> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut rep = RecoveryReport::default();
        let jd = self.journal_dir();
        let mut entries: Vec<PathBuf> = fs::read_dir(&jd)
            .map_err(error::io_err("listing", &jd))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for p in entries {
            let Some(id) = p.file_stem().and_then(|s| s.to_str()).map(str::to_string) else {
                continue;
            };
            if !valid_id(&id) || p.extension().and_then(|e| e.to_str()) != Some("json") {
                rep.warnings
                    .push(format!("removed stray journal file {}", p.display()));
                remove_if_exists(&p)?;
                continue;
            }
            let intent: Option<Intent> = fs::read(&p)
                .ok()
                .and_then(|d| serde_json::from_slice(&d).ok());
            match intent {
                Some(Intent::Restore {
                    id,
                    target,
                    tmp_name,
                    renames,
                }) => {
                    self.recover_restore(&id, &target, &tmp_name, renames, &mut rep);
                }
                // A torn intent was written before anything else happened.
                Some(Intent::Quarantine { .. }) | None => {
                    let path = match &intent {
                        Some(Intent::Quarantine { path, .. }) => Some(path.clone()),
                        _ => None,
                    };
                    match self.read_record(&id) {
                        Ok(rec) => {
                            let ident = hex::decode(&rec.sha256)
                                .ok()
                                .and_then(|h| <[u8; 32]>::try_from(h).ok())
                                .map(|sha256| FileIdentity {
                                    dev: rec.dev,
                                    ino: rec.ino,
                                    sha256,
                                });
                            let copied = FileStamp {
                                size: rec.size,
                                mtime: rec.mtime,
                                ctime: rec.ctime,
                            };
                            if let (Some(ident), true) = (ident, self.object_path(&id).exists()) {
                                let synced = match self.host.safe_unlink_since(
                                    &rec.original_path,
                                    &ident,
                                    Some(&copied),
                                ) {
                                    Ok(parent) => {
                                        step("unlinked original");
                                        sync_original_dir(&parent)
                                    }
                                    // Gone already, perhaps by our unlink before a
                                    // crash that came before its directory was synced.
                                    Err(HostError::NotFound { .. }) => {
                                        match self.host.open_parent(&rec.original_path) {
                                            Ok((parent, _)) => sync_original_dir(&parent),
                                            Err(HostError::NotFound { .. }) => Ok(()),
                                            Err(e) => Err(std::io::Error::other(e)),
                                        }
                                    }
                                    Err(e) => {
                                        rep.warnings
                                            .push(format!("entry {id}: original not deleted: {e}"));
                                        rep.originals_kept.push((id.clone(), e.to_string()));
                                        Ok(())
                                    }
                                };
                                if let Err(e) = synced {
                                    // Keep the intent: the deletion is not durable yet.
                                    rep.warnings.push(format!(
                                        "entry {id}: cannot sync the original's directory, will retry: {e}"
                                    ));
                                    continue;
                                }
                                rep.completed.push(id.clone());
                            } else {
                                rep.warnings
                                    .push(format!("entry {id}: record without valid object"));
                            }
                        }
                        // No record was ever committed: the original was never
                        // touched, so the partial copy is worthless.
                        Err(QuarantineError::NoSuchEntry(_)) => {
                            remove_if_exists(&self.object_path(&id))?;
                            remove_if_exists(&self.dir.join("records").join(format!("{id}.json")))?;
                            rep.rolled_back.push(id.clone());
                            let _ = path;
                        }
                        // A record exists but cannot be read (I/O error, damage): it
                        // may have been committed and the original deleted, making
                        // the object the only copy. Keep object, record and intent
                        // for the operator; the next start looks again.
                        Err(e) => {
                            rep.warnings.push(format!(
                                "entry {id}: interrupted quarantine left as is, its record cannot be read: {e}"
                            ));
                            continue;
                        }
                    }
                }
            }
            remove_if_exists(&self.dir.join("records").join(format!("{id}.json.tmp")))?;
            remove_if_exists(&p)?;
            step("removed intent");
        }
        // Objects without record nor intent (interrupted deletion from the
        // store) and stray temporaries.
        for sub in ["objects", "records"] {
            let d = self.dir.join(sub);
            for e in fs::read_dir(&d)
                .map_err(error::io_err("listing", &d))?
                .flatten()
            {
                // Exact in the warnings; a name that is not UTF-8 keeps `\xHH`, so
                // it can never pass for an entry's id.
                let name = riposte_model::path_text::encode(e.file_name());
                if name.ends_with(".tmp") {
                    remove_if_exists(&e.path())?;
                } else if sub == "objects" {
                    let id = name.trim_end_matches(".obj");
                    match self.record_path(id).try_exists() {
                        Ok(true) => {}
                        Ok(false) => {
                            rep.warnings.push(format!("removed orphan object {name}"));
                            remove_if_exists(&e.path())?;
                        }
                        // Not knowing whether the record exists is no proof that
                        // the object is an orphan.
                        Err(err) => rep.warnings.push(format!(
                            "kept object {name}: cannot tell whether its record exists: {err}"
                        )),
                    }
                }
            }
        }
        fsync_dir(&jd)?;
        Ok(rep)
    }

    fn recover_restore(
        &self,
        id: &str,
        target: &Path,
        tmp_name: &str,
        renames: bool,
        rep: &mut RecoveryReport,
    ) {
        if let Ok(tmp) = target.parent().map(|p| p.join(tmp_name)).ok_or(()) {
            if let Ok((parent, name)) = self.host.open_parent(&tmp) {
                let _ =
                    rustix::fs::unlinkat(&parent, name.as_os_str(), rustix::fs::AtFlags::empty());
            }
        }
        if let Ok(rec) = self.read_record(id) {
            // Finished if the target, or with renames a name it took beside the target
            // (the first free one of those tried, in order), holds the restored content.
            let holds = |path: &Path| {
                self.host
                    .identify(path)
                    .map(|i| hex::encode(i.sha256) == rec.sha256)
            };
            let done = if renames {
                let mut done = false;
                for candidate in rename_candidates(target) {
                    match holds(&candidate) {
                        Ok(true) => {
                            done = true;
                            break;
                        }
                        Ok(false) => {}
                        // Past the first free name, the restore did not go; a name
                        // taken by other than a regular file was passed over.
                        Err(_) => {
                            let taken = self
                                .host
                                .host_path(&candidate)
                                .is_ok_and(|p| p.symlink_metadata().is_ok());
                            if !taken {
                                break;
                            }
                        }
                    }
                }
                done
            } else {
                holds(target).unwrap_or(false)
            };
            if done {
                let _ = self.remove_entry(id);
            }
        }
        rep.restores_cleaned.push(id.to_string());
    }

    /// Reads one record.
    pub fn read_record(&self, id: &str) -> Result<QuarantineRecord, QuarantineError> {
        if !valid_id(id) {
            return Err(QuarantineError::NoSuchEntry(id.to_string()));
        }
        let p = self.record_path(id);
        let data = match fs::read(&p) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(QuarantineError::NoSuchEntry(id.to_string()))
            }
            Err(e) => return Err(error::io_err("reading", &p)(e)),
        };
        let rec: QuarantineRecord =
            serde_json::from_slice(&data).map_err(|e| QuarantineError::Corrupt {
                id: id.to_string(),
                reason: format!("record unreadable: {e}"),
            })?;
        if rec.id != id {
            return Err(QuarantineError::Corrupt {
                id: id.to_string(),
                reason: "record id mismatch".into(),
            });
        }
        Ok(rec)
    }

    /// Lists entries, oldest first, and the entries whose record cannot be
    /// read. Fails only if the records directory itself cannot be listed: one
    /// damaged record must not hide every other entry from the administrator.
    pub fn list(&self) -> Result<Listing, QuarantineError> {
        let d = self.dir.join("records");
        let mut out = Listing::default();
        for e in fs::read_dir(&d)
            .map_err(error::io_err("listing", &d))?
            .flatten()
        {
            // A name that is not UTF-8 keeps `\xHH` and is no valid id.
            let name = riposte_model::path_text::encode(e.file_name());
            if let Some(id) = name.strip_suffix(".json") {
                if valid_id(id) {
                    match self.read_record(id) {
                        Ok(rec) => out.entries.push(rec),
                        // Deleted or restored since the directory was read.
                        Err(QuarantineError::NoSuchEntry(_)) => {}
                        Err(e) => out.unreadable.push(UnreadableEntry {
                            id: id.to_string(),
                            reason: e.to_string(),
                        }),
                    }
                }
            }
        }
        out.entries
            .sort_by(|a, b| (a.quarantined_at, &a.id).cmp(&(b.quarantined_at, &b.id)));
        out.unreadable.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Decrypts entry `id` into `out`, verifying its SHA-256 against the
    /// record. Returns the record. `out` may have received data when this
    /// fails: write to a temporary.
    pub fn extract(
        &self,
        id: &str,
        out: &mut impl Write,
    ) -> Result<QuarantineRecord, QuarantineError> {
        let rec = self.read_record(id)?;
        let p = self.object_path(id);
        let mut f = File::open(&p).map_err(|e| QuarantineError::Corrupt {
            id: id.to_string(),
            reason: format!("object {}: {e}", p.display()),
        })?;
        let mut hw = HashWriter {
            inner: out,
            h: Sha256::new(),
        };
        let n = crypto::decrypt_stream(&self.key, id, &mut f, &mut hw).map_err(|e| match e {
            crypto::DecryptError::Io(e) => error::io_err("decrypting", &p)(e),
            e => QuarantineError::Corrupt {
                id: id.to_string(),
                reason: e.to_string(),
            },
        })?;
        let got = hex::encode(hw.h.finalize());
        if got != rec.sha256 || n != rec.size {
            return Err(QuarantineError::Corrupt {
                id: id.to_string(),
                reason: format!("content hash {got} / size {n} does not match the record"),
            });
        }
        Ok(rec)
    }

    /// Deletes entry `id` from quarantine (the sample is gone for good).
    pub fn delete(&self, id: &str) -> Result<(), QuarantineError> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        match self.read_record(id) {
            Ok(_) => self.remove_entry(id),
            // A damaged entry can be neither listed whole nor restored: deleting it is
            // the one thing left to do with it, and must not need what is damaged. An
            // intent kept for it (recovery could not finish without the record) goes
            // too, or the next start would report a quarantine rolled back.
            Err(QuarantineError::Corrupt { .. }) if self.record_path(id).exists() => {
                self.remove_entry(id)?;
                remove_if_exists(&self.journal_dir().join(format!("{id}.json")))?;
                fsync_dir(&self.journal_dir())
            }
            Err(e) => Err(e),
        }
    }

    fn remove_entry(&self, id: &str) -> Result<(), QuarantineError> {
        remove_if_exists(&self.record_path(id))?;
        fsync_dir(&self.dir.join("records"))?;
        remove_if_exists(&self.object_path(id))
    }

    /// Restores entry `id` to its original path or to `target`, with owner,
    /// mode and timestamps, then removes it from quarantine. Returns the
    /// device path written (which differs from the target with
    /// [`ConflictPolicy::Rename`]).
    ///
    /// A target that matches the protected list, or lies inside the store or
    /// a protected directory, is refused with
    /// [`QuarantineError::ProtectedTarget`] before anything is written.
    /// Set-user-id and set-group-id bits are restored only at the original
    /// path. Elsewhere the file loses group and other write permission, and,
    /// in a directory the entry's owner does not own, takes the directory's
    /// owner and group: whoever could write the quarantined file must not get
    /// a file they can change in a directory only root could write to
    /// (`/etc/cron.d`, say).
    pub fn restore(
        &self,
        id: &str,
        target: &RestoreTarget,
        policy: ConflictPolicy,
    ) -> Result<PathBuf, QuarantineError> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let rec = self.read_record(id)?;
        let target = match target {
            RestoreTarget::Original => rec.original_path.clone(),
            RestoreTarget::Path(p) => p.clone(),
        };
        let (parent, name) = self.host.open_parent(&target)?;
        protect::check_restore_target(
            &self.host,
            &self.cfg.protected,
            &self.dir,
            &target,
            &parent,
            &name,
        )?;
        // Set-id bits were the original's privilege at its own path; anywhere
        // else they would hand its owner's rights to whoever can run it there.
        let at_original = matches!(
            (HostRoot::components(&target), HostRoot::components(&rec.original_path)),
            (Ok(t), Ok(o)) if t == o
        );
        let tmp_name = format!(".riposte-restore-{id}.tmp");
        self.write_intent(
            id,
            &Intent::Restore {
                id: id.to_string(),
                target: target.clone(),
                tmp_name: tmp_name.clone(),
                renames: policy == ConflictPolicy::Rename,
            },
        )?;
        let r = self.restore_inner(
            &rec,
            &target,
            at_original,
            &parent,
            &name,
            &tmp_name,
            policy,
        );
        if r.is_err() {
            let _ = rustix::fs::unlinkat(&parent, tmp_name.as_str(), rustix::fs::AtFlags::empty());
            let _ = self.remove_intent(id);
            return r;
        }
        self.remove_entry(id)?;
        self.remove_intent(id)?;
        r
    }

    #[allow(clippy::too_many_arguments)]
    fn restore_inner(
        &self,
        rec: &QuarantineRecord,
        target: &Path,
        at_original: bool,
        parent: &OwnedFd,
        name: &std::ffi::OsStr,
        tmp_name: &str,
        policy: ConflictPolicy,
    ) -> Result<PathBuf, QuarantineError> {
        let fail = |op: &'static str| {
            let t = target.to_path_buf();
            move |e: Errno| QuarantineError::Io {
                op,
                path: t,
                source: e.into(),
            }
        };
        let _ = rustix::fs::unlinkat(parent, tmp_name, rustix::fs::AtFlags::empty());
        let fd = rustix::fs::openat(
            parent,
            tmp_name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(fail("creating temporary for"))?;
        let f = File::from(fd);
        let mut w = BufWriter::with_capacity(256 * 1024, &f);
        self.extract(&rec.id, &mut w)?;
        w.flush().map_err(error::io_err("writing", target))?;
        drop(w);
        let parent_st = rustix::fs::fstat(parent).map_err(fail("inspecting the directory of"))?;
        let adopted = !at_original && parent_st.st_uid != rec.uid;
        let (uid, gid) = if adopted {
            (parent_st.st_uid, parent_st.st_gid)
        } else {
            (rec.uid, rec.gid)
        };
        rustix::fs::fchown(
            &f,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
        )
        .map_err(fail("setting owner of"))?;
        // Elsewhere, never writable by group or others: the place was chosen for it.
        let full_mode = if at_original {
            rec.mode & 0o7777
        } else {
            rec.mode & 0o7777 & !0o6022
        };
        // Rename may land beside the original instead of on it: set-id bits
        // are added back only once the file is known to be at its own path.
        let exact = at_original && policy != ConflictPolicy::Rename;
        let first_mode = if exact {
            full_mode
        } else {
            full_mode & !0o6000
        };
        rustix::fs::fchmod(&f, Mode::from_raw_mode(first_mode)).map_err(fail("setting mode of"))?;
        let ts = |t: (i64, i64)| Timespec {
            tv_sec: t.0,
            tv_nsec: t.1 as _,
        };
        rustix::fs::futimens(
            &f,
            &Timestamps {
                last_access: ts(rec.atime),
                last_modification: ts(rec.mtime),
            },
        )
        .map_err(fail("setting times of"))?;
        f.sync_all().map_err(error::io_err("syncing", target))?;
        let final_name = match policy {
            ConflictPolicy::Replace => {
                rustix::fs::renameat(parent, tmp_name, parent, name).map_err(fail("replacing"))?;
                name.to_os_string()
            }
            ConflictPolicy::Refuse => match rustix::fs::renameat_with(
                parent,
                tmp_name,
                parent,
                name,
                RenameFlags::NOREPLACE,
            ) {
                Ok(()) => name.to_os_string(),
                Err(Errno::EXIST) => {
                    return Err(QuarantineError::TargetExists(target.to_path_buf()))
                }
                Err(e) => return Err(fail("restoring")(e)),
            },
            ConflictPolicy::Rename => {
                let mut i = 0u32;
                loop {
                    let cand = rename_candidate(name, i);
                    match rustix::fs::renameat_with(
                        parent,
                        tmp_name,
                        parent,
                        cand.as_os_str(),
                        RenameFlags::NOREPLACE,
                    ) {
                        Ok(()) => break cand,
                        Err(Errno::EXIST) if i < 1000 => i += 1,
                        Err(e) => return Err(fail("restoring")(e)),
                    }
                }
            }
        };
        if at_original && final_name == name && first_mode != full_mode {
            rustix::fs::fchmod(&f, Mode::from_raw_mode(full_mode))
                .map_err(fail("setting mode of"))?;
            f.sync_all().map_err(error::io_err("syncing", target))?;
        }
        rustix::fs::fsync(parent.as_fd()).map_err(fail("syncing directory of"))?;
        Ok(target.with_file_name(final_name))
    }
}

/// The `i`th name a restore with [`ConflictPolicy::Rename`] tries for `name`: the
/// name itself, then `NAME.restored`, `NAME.restored-2`…
fn rename_candidate(name: &std::ffi::OsStr, i: u32) -> std::ffi::OsString {
    let mut cand = name.to_os_string();
    match i {
        0 => {}
        1 => cand.push(".restored"),
        n => cand.push(format!(".restored-{n}")),
    }
    cand
}

/// The paths a restore with [`ConflictPolicy::Rename`] to `target` tries, in order.
fn rename_candidates(target: &Path) -> impl Iterator<Item = PathBuf> + '_ {
    (0..=1000).filter_map(move |i| {
        let name = target.file_name()?;
        Some(target.with_file_name(rename_candidate(name, i)))
    })
}

struct HashWriter<'a, W: Write> {
    inner: &'a mut W,
    h: Sha256,
}

impl<W: Write> Write for HashWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.h.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Restricts every regular file in `dir` to its owner (0600), as this store creates
/// them: one copied in by hand, or left by an older version, may be readable by all.
/// What cannot be restricted is logged, not fatal: the folder (0700) already keeps
/// others out, and a store that would not open could not quarantine at all.
fn restrict_files(dir: &Path) -> Result<(), QuarantineError> {
    for entry in fs::read_dir(dir).map_err(error::io_err("listing", dir))? {
        let entry = entry.map_err(error::io_err("listing", dir))?;
        restrict_file(&entry.path());
    }
    Ok(())
}

/// [`restrict_files`] for one file. Only a regular file is opened (a device or a socket
/// is left alone), without following a link, and its descriptor is checked again before
/// the `chmod`: a path could be swapped meanwhile.
fn restrict_file(p: &Path) {
    let loose = |mode: u32| mode & 0o077 != 0;
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_file() && loose(m.permissions().mode()) => {}
        _ => return,
    }
    let restricted = rustix::fs::open(
        p,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .and_then(|fd| {
        let st = rustix::fs::fstat(&fd)?;
        let regular =
            rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile;
        if regular && loose(st.st_mode) {
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o600))?;
        }
        Ok(())
    });
    match restricted {
        Ok(()) | Err(Errno::NOENT | Errno::LOOP) => {}
        Err(e) => tracing::warn!(
            "cannot restrict {} to mode 0600: {e}; its folder keeps others out",
            p.display()
        ),
    }
}

/// Loads the per-device key, creating it (32 random bytes, mode 0600,
/// written to a temporary and renamed) on first use.
fn load_or_create_key(dir: &Path) -> Result<[u8; 32], QuarantineError> {
    let p = dir.join("quarantine.key");
    let bad = |reason: String| QuarantineError::Key {
        path: p.clone(),
        reason,
    };
    match File::open(&p) {
        Ok(mut f) => {
            let mut k = Vec::new();
            f.read_to_end(&mut k)
                .map_err(|e| bad(format!("unreadable: {e}")))?;
            return <[u8; 32]>::try_from(k.as_slice())
                .map_err(|_| bad(format!("is {} bytes, expected 32; restore it from backup (entries cannot be decrypted without it)", k.len())));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(bad(format!("unreadable: {e}"))),
    }
    // A new key cannot open what the lost one sealed: made silently, it would leave
    // every entry "damaged" and seal the next ones with a key a restored backup lacks.
    let held = ["records", "objects"]
        .iter()
        .map(|sub| {
            fs::read_dir(dir.join(sub)).map_or(0, |entries| {
                entries
                    .flatten()
                    .filter(|e| !e.file_name().to_string_lossy().ends_with(".tmp"))
                    .count()
            })
        })
        .max()
        .unwrap_or(0);
    if held > 0 {
        return Err(bad(format!(
            "is missing, but the quarantine holds {held} entr{} sealed with it: restore the \
             key from backup (a new key could not open them), or move {} aside to start an \
             empty quarantine",
            if held == 1 { "y" } else { "ies" },
            dir.display()
        )));
    }
    let mut k = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut k);
    let tmp = dir.join(format!("quarantine.key.{}.tmp", std::process::id()));
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| bad(format!("cannot create: {e}")))?;
        f.write_all(&k)
            .map_err(|e| bad(format!("cannot write: {e}")))?;
        f.sync_all().map_err(|e| bad(format!("cannot sync: {e}")))?;
    }
    // link() fails if another process created the key meanwhile: use theirs.
    match fs::hard_link(&tmp, &p) {
        Ok(()) => {
            let _ = fs::remove_file(&tmp);
            fsync_dir(dir)?;
            Ok(k)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let _ = fs::remove_file(&tmp);
            load_or_create_key(dir)
        }
        Err(e) => Err(bad(format!("cannot install: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    thread_local! {
        pub(super) static STEPS: RefCell<Vec<&'static str>> = const { RefCell::new(Vec::new()) };
    }

    fn take_steps() -> Vec<&'static str> {
        STEPS.with(|s| std::mem::take(&mut *s.borrow_mut()))
    }

    fn cfg(hook: Option<PreDeleteHook>) -> QuarantineConfig {
        QuarantineConfig {
            min_free_bytes: 0,
            pre_delete_hook: hook,
            ..Default::default()
        }
    }

    fn request(path: &str) -> QuarantineRequest {
        QuarantineRequest {
            path: PathBuf::from(path),
            detection_id: "det".into(),
            threat_name: "t".into(),
            user: "u".into(),
            expected: None,
        }
    }

    #[test]
    fn original_directory_is_synced_after_unlink_and_before_intent_removal() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        let data = t.path().join("data");
        fs::create_dir_all(root.join("home/u")).unwrap();
        fs::write(root.join("home/u/live"), b"live").unwrap();
        fs::write(root.join("home/u/crashed"), b"crashed").unwrap();
        let host = HostRoot::new(&root);

        // Live path.
        let (s, _) = QuarantineStore::open(&data, host.clone(), cfg(None)).unwrap();
        take_steps();
        s.quarantine(&request("/home/u/live")).unwrap();
        assert_eq!(
            take_steps(),
            [
                "unlinked original",
                "synced original's directory",
                "removed intent"
            ]
        );
        drop(s);

        // Recovery path: a crash between the commit and the unlink.
        let crash: PreDeleteHook = Arc::new(|_: &Path| panic!("simulated crash"));
        let (s, _) = QuarantineStore::open(&data, host.clone(), cfg(Some(crash))).unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            s.quarantine(&request("/home/u/crashed"))
        }));
        assert!(r.is_err());
        assert!(root.join("home/u/crashed").exists());
        drop(s);
        take_steps();
        let (_s, rep) = QuarantineStore::open(&data, host, cfg(None)).unwrap();
        assert_eq!(rep.completed.len(), 1, "{rep:?}");
        assert!(!root.join("home/u/crashed").exists());
        assert_eq!(
            take_steps(),
            [
                "unlinked original",
                "synced original's directory",
                "removed intent"
            ]
        );
    }
}
