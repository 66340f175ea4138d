//! # riposte-epp: endpoint protection back ends
//!
//! The agent scans files (by path) and raw bytes (boot sectors) through one
//! trait, [`Epp`], so that the response logic does not care which engine is
//! behind it:
//!
//! * [`clamd::ClamdClient`] talks to a ClamAV daemon over its socket protocol
//!   (unix socket or TCP). clamd answers `OK` for what it did *not* scan
//!   (objects over `MaxFileSize`/`MaxScanSize`/`StreamMaxLength`), so the
//!   client knows clamd's limits and reports such objects as skipped instead
//!   of trusting the `OK`.
//! * [`builtin::BuiltinScanner`] is the embedded default: hash signatures
//!   (ClamAV `.hdb`/`.hsb`, CSV) and optional rules behind
//!   [`builtin::RuleMatcher`] (YARA).
//!
//! [`scan_critical_areas`] scans what `riposte-host` enumerates as the
//! device's critical areas and reports findings, counts and everything
//! skipped with its reason.

pub mod builtin;
pub mod clamd;
#[cfg(feature = "testing")]
pub mod testing;

use std::path::{Path, PathBuf};

use riposte_host::{CriticalCategory, HostRoot, Skipped};

/// Result of scanning one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanOutcome {
    /// Scanned, nothing found.
    Clean,
    /// Scanned, a threat was found.
    Infected {
        /// Threat (signature) name.
        threat: String,
    },
    /// Not scanned (too large, not a regular file…), with the reason.
    Skipped {
        /// Why.
        reason: String,
    },
}

/// Errors of a scanning back end (the engine could not be used at all).
#[derive(Debug, thiserror::Error)]
pub enum EppError {
    /// The engine could not be reached.
    #[error("cannot reach {engine} at {addr}: {source}; check that it is running and the address is right")]
    Unreachable {
        /// Engine name.
        engine: &'static str,
        /// Address used.
        addr: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The engine answered something unexpected or reported an error.
    #[error("{engine} error: {message}")]
    Engine {
        /// Engine name.
        engine: &'static str,
        /// What it said.
        message: String,
    },
    /// A signature file could not be loaded.
    #[error("signature file {path:?} line {line}: {message}")]
    Signatures {
        /// File.
        path: PathBuf,
        /// 1-based line number (0 if not line-specific).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// Reading the object failed.
    #[error("reading {path:?}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// An endpoint protection engine.
pub trait Epp: Send + Sync {
    /// Engine name and version, for reports.
    fn name(&self) -> String;
    /// Scans the regular file at device path `path` under `host`. Objects
    /// that are not regular files, or are too large for the engine, give
    /// [`ScanOutcome::Skipped`].
    fn scan_file(&self, host: &HostRoot, path: &Path) -> Result<ScanOutcome, EppError>;
    /// Scans bytes (e.g. a boot sector); `label` names them in reports.
    fn scan_bytes(&self, label: &str, data: &[u8]) -> Result<ScanOutcome, EppError>;
    /// Whether the engine can be reached now ([`EppError::Unreachable`] if not); an
    /// engine inside the process always can.
    fn check(&self) -> Result<(), EppError> {
        Ok(())
    }
}

/// A threat found in a critical area.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Device path of the file, or `/dev/NAME` of a boot sector.
    pub path: PathBuf,
    /// Category (`None` for boot sectors).
    pub category: Option<CriticalCategory>,
    /// Why the object is in a critical area.
    pub origin: String,
    /// Threat name.
    pub threat: String,
}

/// Result of [`scan_critical_areas`].
#[derive(Debug, Clone, Default)]
pub struct CriticalAreasReport {
    /// Engine used.
    pub engine: String,
    /// Threats found.
    pub findings: Vec<Finding>,
    /// Files actually scanned.
    pub files_scanned: usize,
    /// Boot sectors actually scanned.
    pub boot_sectors_scanned: usize,
    /// Everything not scanned, with the reason (enumeration and scanning).
    pub skipped: Vec<Skipped>,
    /// The engine could not be reached (down, or silent past its timeout): the scan
    /// stopped at the first such error rather than wait that long for every object.
    pub engine_failure: Option<String>,
}

/// Enumerates the critical areas of `host` and scans them with `epp`.
pub fn scan_critical_areas(host: &HostRoot, epp: &dyn Epp) -> CriticalAreasReport {
    let areas = host.critical_areas();
    // Asked first, with a short wait: with nothing to scan on a small device an engine
    // that is down would otherwise go unnoticed, and its name is asked of it too.
    let checked = epp.check();
    let mut rep = CriticalAreasReport {
        engine: match &checked {
            Ok(()) => epp.name(),
            Err(_) => String::new(),
        },
        skipped: areas.skipped,
        ..Default::default()
    };
    if let Err(e) = checked {
        rep.engine_failure = Some(e.to_string());
        return rep;
    }
    for obj in &areas.files {
        match epp.scan_file(host, &obj.path) {
            Ok(ScanOutcome::Clean) => rep.files_scanned += 1,
            Ok(ScanOutcome::Infected { threat }) => {
                rep.files_scanned += 1;
                rep.findings.push(Finding {
                    path: obj.path.clone(),
                    category: Some(obj.category),
                    origin: obj.origin.clone(),
                    threat,
                });
            }
            Ok(ScanOutcome::Skipped { reason }) => rep.skipped.push(Skipped {
                what: obj.path.display().to_string(),
                reason,
            }),
            Err(e @ EppError::Unreachable { .. }) => {
                rep.engine_failure = Some(e.to_string());
                return rep;
            }
            Err(e) => rep.skipped.push(Skipped {
                what: obj.path.display().to_string(),
                reason: e.to_string(),
            }),
        }
    }
    for bs in &areas.boot_sectors {
        let label = format!("boot sector of {}", bs.path.display());
        match epp.scan_bytes(&label, &bs.data) {
            Ok(ScanOutcome::Clean) => rep.boot_sectors_scanned += 1,
            Ok(ScanOutcome::Infected { threat }) => {
                rep.boot_sectors_scanned += 1;
                rep.findings.push(Finding {
                    path: bs.path.clone(),
                    category: None,
                    origin: label,
                    threat,
                });
            }
            Ok(ScanOutcome::Skipped { reason }) => rep.skipped.push(Skipped {
                what: label,
                reason,
            }),
            Err(e @ EppError::Unreachable { .. }) => {
                rep.engine_failure = Some(e.to_string());
                return rep;
            }
            Err(e) => rep.skipped.push(Skipped {
                what: label,
                reason: e.to_string(),
            }),
        }
    }
    rep
}

/// Maps a host error from opening an object to a skip reason, or passes
/// other errors through.
pub(crate) fn skip_reason(e: &riposte_host::HostError) -> Option<String> {
    use riposte_host::HostError::*;
    match e {
        NotFound { .. }
        | NotRegularFile { .. }
        | SymlinkInPath { .. }
        | NotADirectory { .. }
        | InvalidPath { .. } => Some(e.to_string()),
        _ => None,
    }
}
