//! The embedded scanner: hash signatures plus optional rules (YARA).
//!
//! Hash signatures are the cheapest reliable detection and the format every
//! threat-intel feed can export: ClamAV `.hdb` (`md5:size:name`), `.hsb`
//! (`sha1:size:name` or `sha256:size:name`, size may be `*`) and CSV
//! (`hash,name[,size]`, hash type by length, `#` comments, optional header).
//! Rules sit behind [`RuleMatcher`] so that the YARA engine (from
//! `riposte-ioc`) can be plugged in without this crate depending on it.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use md5::Md5;
use riposte_host::HostRoot;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::{Epp, EppError, ScanOutcome};

/// A rule engine (YARA) scanning bytes.
pub trait RuleMatcher: Send + Sync {
    /// Names of the rules matching `data`.
    fn matches(&self, data: &[u8]) -> Result<Vec<String>, String>;
}

#[derive(Debug, Clone)]
struct Sig {
    size: Option<u64>,
    name: String,
}

/// A set of hash signatures (MD5, SHA-1, SHA-256).
#[derive(Debug, Clone, Default)]
pub struct HashDb {
    sigs: HashMap<Vec<u8>, Vec<Sig>>,
}

fn sig_err(path: &Path, line: usize, message: impl Into<String>) -> EppError {
    EppError::Signatures {
        path: path.to_path_buf(),
        line,
        message: message.into(),
    }
}

impl HashDb {
    /// An empty database.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of signatures.
    pub fn len(&self) -> usize {
        self.sigs.values().map(Vec::len).sum()
    }

    /// Whether there is no signature.
    pub fn is_empty(&self) -> bool {
        self.sigs.is_empty()
    }

    fn add(
        &mut self,
        hash: &str,
        size: Option<u64>,
        name: &str,
        src: &Path,
        line: usize,
    ) -> Result<(), EppError> {
        let h = hex::decode(hash.trim())
            .map_err(|_| sig_err(src, line, format!("{hash:?} is not a hex hash")))?;
        if ![16, 20, 32].contains(&h.len()) {
            return Err(sig_err(
                src,
                line,
                "hash must be MD5, SHA-1 or SHA-256 (32, 40 or 64 hex digits)",
            ));
        }
        if name.trim().is_empty() {
            return Err(sig_err(src, line, "empty signature name"));
        }
        self.sigs.entry(h).or_default().push(Sig {
            size,
            name: name.trim().to_string(),
        });
        Ok(())
    }

    /// Loads ClamAV `.hdb`/`.hsb` text (`hash:size:name[:flevel…]`); `src`
    /// names it in errors.
    pub fn load_clamav(&mut self, text: &str, src: &Path) -> Result<usize, EppError> {
        let mut n = 0;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 3 {
                return Err(sig_err(src, i + 1, "expected hash:size:name"));
            }
            let size = match f[1] {
                "*" => None,
                s => Some(
                    s.parse()
                        .map_err(|_| sig_err(src, i + 1, format!("bad size {s:?}")))?,
                ),
            };
            self.add(f[0], size, f[2], src, i + 1)?;
            n += 1;
        }
        Ok(n)
    }

    /// Loads CSV text: `hash,name[,size]`.
    pub fn load_csv(&mut self, text: &str, src: &Path) -> Result<usize, EppError> {
        let mut n = 0;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let f: Vec<&str> = line
                .split(',')
                .map(|s| s.trim().trim_matches('"'))
                .collect();
            if i == 0 && hex::decode(f[0]).is_err() {
                continue; // header
            }
            if f.len() < 2 {
                return Err(sig_err(src, i + 1, "expected hash,name[,size]"));
            }
            let size = match f.get(2) {
                Some(s) if !s.is_empty() => Some(
                    s.parse()
                        .map_err(|_| sig_err(src, i + 1, format!("bad size {s:?}")))?,
                ),
                _ => None,
            };
            self.add(f[0], size, f[1], src, i + 1)?;
            n += 1;
        }
        Ok(n)
    }

    /// Loads a file by extension: `.hdb`, `.hsb` (ClamAV) or `.csv`.
    pub fn load_file(&mut self, path: &Path) -> Result<usize, EppError> {
        let text = std::fs::read_to_string(path).map_err(|e| EppError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        match path.extension().and_then(|e| e.to_str()) {
            Some("hdb") | Some("hsb") => self.load_clamav(&text, path),
            Some("csv") => self.load_csv(&text, path),
            _ => Err(sig_err(
                path,
                0,
                "unknown signature file type (expected .hdb, .hsb or .csv)",
            )),
        }
    }

    /// Looks up content by its digests.
    pub fn lookup(&self, size: u64, md5: &[u8], sha1: &[u8], sha256: &[u8]) -> Option<&str> {
        [md5, sha1, sha256].into_iter().find_map(|h| {
            self.sigs
                .get(h)?
                .iter()
                .find(|s| s.size.is_none_or(|x| x == size))
                .map(|s| s.name.as_str())
        })
    }

    /// Scans bytes.
    pub fn scan(&self, data: &[u8]) -> Option<&str> {
        self.lookup(
            data.len() as u64,
            &Md5::digest(data),
            &Sha1::digest(data),
            &Sha256::digest(data),
        )
    }
}

/// The embedded scanner.
pub struct BuiltinScanner {
    hashes: HashDb,
    rules: Option<Box<dyn RuleMatcher>>,
    max_file_size: u64,
}

impl BuiltinScanner {
    /// A scanner with hash signatures only; files over 100 MiB are skipped.
    pub fn new(hashes: HashDb) -> Self {
        BuiltinScanner {
            hashes,
            rules: None,
            max_file_size: 100 << 20,
        }
    }

    /// Adds a rule engine.
    pub fn with_rules(mut self, rules: Box<dyn RuleMatcher>) -> Self {
        self.rules = Some(rules);
        self
    }

    /// Sets the largest file scanned.
    pub fn with_max_file_size(mut self, n: u64) -> Self {
        self.max_file_size = n;
        self
    }

    fn scan_data(&self, data: &[u8]) -> Result<ScanOutcome, EppError> {
        if let Some(n) = self.hashes.scan(data) {
            return Ok(ScanOutcome::Infected {
                threat: n.to_string(),
            });
        }
        if let Some(r) = &self.rules {
            let m = r.matches(data).map_err(|m| EppError::Engine {
                engine: "rules",
                message: m,
            })?;
            if let Some(first) = m.first() {
                return Ok(ScanOutcome::Infected {
                    threat: first.clone(),
                });
            }
        }
        Ok(ScanOutcome::Clean)
    }
}

impl Epp for BuiltinScanner {
    fn name(&self) -> String {
        format!(
            "built-in ({} hash signatures{})",
            self.hashes.len(),
            if self.rules.is_some() { ", rules" } else { "" }
        )
    }

    fn scan_file(&self, host: &HostRoot, path: &Path) -> Result<ScanOutcome, EppError> {
        let opened = match host.open_regular(path) {
            Ok(o) => o,
            Err(e) => match crate::skip_reason(&e) {
                Some(r) => return Ok(ScanOutcome::Skipped { reason: r }),
                None => {
                    return Err(EppError::Io {
                        path: path.to_path_buf(),
                        source: std::io::Error::other(e.to_string()),
                    })
                }
            },
        };
        if opened.meta.size > self.max_file_size {
            return Ok(ScanOutcome::Skipped {
                reason: format!(
                    "skipped: larger than the scanner's limit ({} > {} bytes)",
                    opened.meta.size, self.max_file_size
                ),
            });
        }
        let mut data = Vec::with_capacity(opened.meta.size as usize);
        (&opened.file)
            .take(self.max_file_size + 1)
            .read_to_end(&mut data)
            .map_err(|e| EppError::Io {
                path: path.to_path_buf(),
                source: e,
            })?;
        if data.len() as u64 > self.max_file_size {
            return Ok(ScanOutcome::Skipped {
                reason: "skipped: grew over the scanner's limit while being read".into(),
            });
        }
        self.scan_data(&data)
    }

    fn scan_bytes(&self, _label: &str, data: &[u8]) -> Result<ScanOutcome, EppError> {
        self.scan_data(data)
    }
}

#[cfg(feature = "yara")]
impl RuleMatcher for riposte_ioc::yara::YaraRules {
    fn matches(&self, data: &[u8]) -> Result<Vec<String>, String> {
        Ok(self.scan_bytes(data))
    }
}
