//! Small file helpers: crash-safe writes and Unix time.
//!
//! Why: the queue, the allow list and the verdict cache must survive a crash or power
//! loss at any point, so every file is written to a temporary name, synced, then renamed.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::WatchError;

/// Write `data` to `path` atomically (temporary file, fsync, rename, fsync of the directory).
pub(crate) fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), WatchError> {
    let dir = path
        .parent()
        .ok_or_else(|| WatchError::Config(format!("{} has no parent directory", path.display())))?;
    // Built from the name's bytes: a lossy copy could give two files one temporary.
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(path.file_name().unwrap_or_default());
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        WatchError::io("write", path, e)
    })
}

/// Removes what [`write_atomic`] to `path` left behind when its process died between
/// creating the temporary and renaming it (`.NAME.PID.tmp` beside `path`). Temporaries of
/// a process still running are left alone: it may be writing them now.
pub(crate) fn remove_interrupted_writes(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(name);
    prefix.push(".");
    let prefix = prefix.as_encoded_bytes().to_vec();
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name
            .as_encoded_bytes()
            .strip_prefix(prefix.as_slice())
            .and_then(|rest| rest.strip_suffix(b".tmp"))
            .and_then(|pid| std::str::from_utf8(pid).ok())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let running = pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists();
        if !running {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Create `dir` (and parents) and restrict it to the owner (0700).
pub(crate) fn private_dir(dir: &Path) -> Result<(), WatchError> {
    std::fs::create_dir_all(dir).map_err(|e| WatchError::io("create", dir, e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| WatchError::io("restrict to mode 0700", dir, e))
}

/// Seconds since the Unix epoch.
pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
