//! The analysis report: verdict, threat name, evidence and IOCs.
//!
//! Why one shape for every source: the agent and the sweep consume reports from the
//! built-in analysers and from CAPE/Cuckoo alike, so importers and analysers all fill
//! the same [`Report`]. IOCs are what the sweep hunts for on other machines, so they
//! are kept separate from evidence (which explains the verdict).

use md5::Md5;
use serde::{Deserialize, Serialize};
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// Outcome of an analysis, ordered by severity (`Clean < Suspicious < Malicious`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Nothing malicious observed.
    Clean,
    /// Worth a look, not enough to act on automatically.
    Suspicious,
    /// Malicious: the agent may quarantine and the sweep hunts the IOCs.
    Malicious,
}

impl Verdict {
    /// `true` for [`Verdict::Malicious`].
    pub fn is_malicious(self) -> bool {
        self == Verdict::Malicious
    }
}

/// Hashes and size of a file (the object itself or a file it dropped).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct FileIoc {
    /// Path or name where the file was seen, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// MD5, lowercase hex (empty if the source did not give it).
    #[serde(default)]
    pub md5: String,
    /// SHA-1, lowercase hex (empty if unknown).
    #[serde(default)]
    pub sha1: String,
    /// SHA-256, lowercase hex.
    pub sha256: String,
    /// Size in bytes.
    #[serde(default)]
    pub size: u64,
}

impl FileIoc {
    /// Hash `data` (MD5, SHA-1, SHA-256) and record its size.
    pub fn from_bytes(path: Option<String>, data: &[u8]) -> Self {
        FileIoc {
            path,
            md5: hex::encode(Md5::digest(data)),
            sha1: hex::encode(Sha1::digest(data)),
            sha256: hex::encode(Sha256::digest(data)),
            size: data.len() as u64,
        }
    }
}

/// A program the object started.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProcessIoc {
    /// Executable path.
    pub path: String,
    /// Command line (arguments joined by spaces).
    #[serde(default)]
    pub command_line: String,
}

/// A network destination the object contacted or tried to contact.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Destination {
    /// IP address.
    pub ip: String,
    /// Port, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `tcp`, `udp` or `unknown`.
    pub protocol: String,
}

/// A persistence location the object changed or tried to change.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PersistenceIoc {
    /// File path or registry key.
    pub location: String,
    /// Kind (`cron`, `systemd`, `shell-profile`, `autostart`, `ld-preload`, `registry-run`, ...).
    pub kind: String,
    /// Whether the change succeeded (in a jail writes to system paths fail).
    pub succeeded: bool,
}

/// Indicators of compromise found by an analysis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Iocs {
    /// The analysed object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<FileIoc>,
    /// Files the object wrote, with hashes.
    #[serde(default)]
    pub dropped_files: Vec<FileIoc>,
    /// Programs it started.
    #[serde(default)]
    pub processes: Vec<ProcessIoc>,
    /// Network destinations (background noise removed).
    #[serde(default)]
    pub destinations: Vec<Destination>,
    /// Domain names looked up or contacted (background noise removed).
    #[serde(default)]
    pub domains: Vec<String>,
    /// URLs requested.
    #[serde(default)]
    pub urls: Vec<String>,
    /// Persistence changes.
    #[serde(default)]
    pub persistence: Vec<PersistenceIoc>,
}

/// One reason behind a verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// Which analyser produced it (`hash-list`, `rules`, `behaviour`, `cuckoo2`, ...).
    pub engine: String,
    /// Rule, signature or list name.
    pub rule: String,
    /// Human-readable detail.
    pub detail: String,
    /// Severity 0..=10.
    pub severity: u8,
}

/// A full analysis report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Verdict.
    pub verdict: Verdict,
    /// Threat name when malicious (or the best guess when suspicious).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threat_name: Option<String>,
    /// Source score normalised to 0..=10 when the source has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// Producer: `riposte-static`, `riposte-dynamic`, `cuckoo2`, `cuckoo3`, `cape`, `webhook`.
    pub source: String,
    /// Name the object was submitted under.
    #[serde(default)]
    pub object_name: String,
    /// Reasons.
    #[serde(default)]
    pub evidence: Vec<Evidence>,
    /// Indicators.
    pub iocs: Iocs,
    /// Notes about the analysis itself (e.g. why dynamic analysis was skipped).
    #[serde(default)]
    pub notes: Vec<String>,
    /// Unix time of the analysis.
    #[serde(default)]
    pub analysed_at: u64,
    /// The IOCs as an OpenIOC 1.1 document (filled by [`Report::finalize`]).
    #[serde(default)]
    pub openioc: String,
}

impl Report {
    /// Empty clean report for `source` and `object_name`.
    pub fn new(source: &str, object_name: &str) -> Self {
        Report {
            verdict: Verdict::Clean,
            threat_name: None,
            score: None,
            source: source.to_string(),
            object_name: object_name.to_string(),
            evidence: Vec::new(),
            iocs: Iocs::default(),
            notes: Vec::new(),
            analysed_at: crate::util::now_secs(),
            openioc: String::new(),
        }
    }

    /// Raise the verdict to at least `verdict`, keeping the first threat name set at
    /// the highest level.
    pub fn raise(&mut self, verdict: Verdict, threat_name: Option<&str>) {
        if verdict > self.verdict {
            self.verdict = verdict;
            self.threat_name = threat_name.map(str::to_string);
        } else if verdict == self.verdict && self.threat_name.is_none() && verdict > Verdict::Clean
        {
            self.threat_name = threat_name.map(str::to_string);
        }
    }

    /// Deduplicate IOCs and render the OpenIOC document. Call once the report is complete.
    pub fn finalize(mut self) -> Self {
        dedup(&mut self.iocs.dropped_files);
        dedup(&mut self.iocs.processes);
        dedup(&mut self.iocs.destinations);
        dedup(&mut self.iocs.domains);
        dedup(&mut self.iocs.urls);
        dedup(&mut self.iocs.persistence);
        self.openioc = crate::openioc::render(&self);
        self
    }
}

/// Remove duplicates while keeping first-seen order.
fn dedup<T: Clone + Eq + std::hash::Hash>(v: &mut Vec<T>) {
    let mut seen = std::collections::HashSet::new();
    v.retain(|x| seen.insert(x.clone()));
}
