//! Importers for external sandbox reports: CAPE, Cuckoo 2 and Cuckoo3.
//!
//! Why: sites that already run a Windows sandbox should get the same verdicts and IOCs
//! as from the built-in one. Each importer maps the sandbox's score and signatures to a
//! [`Verdict`] and extracts IOCs — object and dropped-file hashes, started programs,
//! hosts, domains, URLs, persistence — with guest background traffic removed (see
//! [`noise`]). Input is the report JSON as bytes; anything that is not a report of the
//! expected shape is a [`SandboxError::MalformedReport`], never an empty clean report.

pub mod noise;

use serde_json::Value;

use crate::report::{Destination, Evidence, FileIoc, PersistenceIoc, ProcessIoc, Report, Verdict};
use crate::SandboxError;
use noise::{is_noise_domain, is_noise_process, NoiseFilter};

/// Score (0..=10) from which a report is malicious.
pub const MALICIOUS_SCORE: f64 = 6.5;
/// Score (0..=10) from which a report is suspicious.
pub const SUSPICIOUS_SCORE: f64 = 4.0;
/// Signature severity from which a single signature makes a report malicious.
pub const MALICIOUS_SEVERITY: i64 = 5;
/// VirusTotal positives from which a report is malicious.
pub const MALICIOUS_AV_POSITIVES: i64 = 10;

fn parse(format: &'static str, bytes: &[u8]) -> Result<Value, SandboxError> {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let v: Value = serde_json::from_slice(bytes).map_err(|e| SandboxError::MalformedReport {
        format,
        reason: format!("not JSON: {e}"),
    })?;
    if !v.is_object() {
        return Err(SandboxError::MalformedReport {
            format,
            reason: "top level is not a JSON object".into(),
        });
    }
    Ok(v)
}

fn s(v: &Value) -> Option<&str> {
    v.as_str().filter(|s| !s.is_empty())
}

fn arr(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn file_from(v: &Value) -> Option<FileIoc> {
    let sha256 = s(&v["sha256"])?.to_ascii_lowercase();
    Some(FileIoc {
        path: s(&v["filepath"])
            .or_else(|| s(&v["guest_paths"]))
            .or_else(|| arr(&v["guest_paths"]).first().and_then(s))
            .or_else(|| s(&v["name"]))
            .or_else(|| s(&v["filename"]))
            .or_else(|| s(&v["orig_filename"]))
            .map(str::to_string),
        md5: s(&v["md5"]).unwrap_or_default().to_ascii_lowercase(),
        sha1: s(&v["sha1"]).unwrap_or_default().to_ascii_lowercase(),
        sha256,
        size: v["size"].as_u64().unwrap_or(0),
    })
}

/// Generic words in AV labels that are not family names.
const GENERIC_LABEL_WORDS: &[&str] = &[
    "trojan",
    "ransom",
    "generic",
    "win32",
    "w32",
    "win64",
    "malware",
    "deepscan",
    "gen",
    "heur",
    "variant",
    "agent",
    "ai",
    "score",
    "malicious",
    "high",
    "confidence",
    "riskware",
    "unsafe",
    "behaveslike",
    "trojware",
    "ml",
    "attribute",
    "highconfidence",
    "static",
    "susgen",
    "pe",
    "backdoor",
    "worm",
    "virus",
    "packed",
    "dropper",
    "downloader",
    "suspicious",
    "tr",
    "msil",
    "application",
    "cryptor",
    "kcloud",
    "mg",
    "ransomware",
    "other",
    "crypt",
    "filecoder",
    "encoder",
    "tiggre",
    "razy",
    "bulz",
    "lazy",
    "kryptik",
    "win",
    "exploit",
    "genetic",
    "classic",
    "detected",
    "engine",
    "multi",
    "wacatac",
    "dll",
    "a",
    "b",
    "c",
];

/// Most common non-generic word across AV labels, e.g. `Sodinokibi`.
fn family_from_labels<'a>(labels: impl Iterator<Item = &'a str>) -> Option<String> {
    let mut counts: std::collections::HashMap<String, (usize, String)> = Default::default();
    for label in labels {
        let mut seen = std::collections::HashSet::new();
        for word in label.split(|c: char| !c.is_ascii_alphanumeric()) {
            let lower = word.to_ascii_lowercase();
            if word.len() < 4
                || word.chars().any(|c| c.is_ascii_digit())
                || GENERIC_LABEL_WORDS.contains(&lower.as_str())
                || !seen.insert(lower.clone())
            {
                continue;
            }
            let e = counts.entry(lower).or_insert((0, word.to_string()));
            e.0 += 1;
        }
    }
    counts
        .into_values()
        .filter(|(n, _)| *n >= 2)
        .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(&a.1)))
        .map(|(_, w)| w)
}

fn registry_persistence(key: &str) -> Option<&'static str> {
    let k = key.to_ascii_lowercase();
    if k.contains("\\currentversion\\run")
        || k.contains("\\currentversion\\policies\\explorer\\run")
    {
        Some("registry-run")
    } else if k.contains("\\currentcontrolset\\services\\") {
        Some("service")
    } else if k.contains("\\winlogon\\") {
        Some("winlogon")
    } else if k.contains("\\image file execution options\\") {
        Some("ifeo")
    } else {
        None
    }
}

fn file_persistence(path: &str) -> Option<&'static str> {
    let p = path.to_ascii_lowercase();
    if p.contains("\\start menu\\programs\\startup\\") {
        Some("startup-folder")
    } else if p.contains("\\system32\\tasks\\") {
        Some("scheduled-task")
    } else {
        None
    }
}

/// Network, dropped files, processes and persistence in the Cuckoo 2 / CAPE layout.
fn cuckoo_like_iocs(v: &Value, report: &mut Report) {
    let net = &v["network"];
    let mut filter = NoiseFilter::new();
    for r in arr(&net["dns_servers"]) {
        if let Some(ip) = s(r) {
            filter.add_noise_ip(ip);
        }
    }
    let mut domains = Vec::new();
    for q in arr(&net["dns"]) {
        let Some(name) = s(&q["request"]) else {
            continue;
        };
        if is_noise_domain(name) {
            for a in arr(&q["answers"]) {
                if let Some(ip) = s(&a["data"]) {
                    filter.add_noise_ip(ip);
                }
            }
        } else {
            domains.push(name.to_ascii_lowercase());
        }
    }
    for d in arr(&net["domains"]) {
        let Some(name) = s(&d["domain"]) else {
            continue;
        };
        if is_noise_domain(name) {
            if let Some(ip) = s(&d["ip"]) {
                filter.add_noise_ip(ip);
            }
        } else {
            domains.push(name.to_ascii_lowercase());
        }
    }
    for (proto, key) in [("tcp", "tcp"), ("udp", "udp")] {
        for c in arr(&net[key]) {
            let Some(ip) = s(&c["dst"]) else { continue };
            if filter.ip_is_noise(ip) {
                continue;
            }
            report.iocs.destinations.push(Destination {
                ip: ip.to_string(),
                port: c["dport"].as_u64().and_then(|p| u16::try_from(p).ok()),
                protocol: proto.into(),
            });
        }
    }
    for h in arr(&net["http"])
        .iter()
        .chain(arr(&net["http_ex"]))
        .chain(arr(&net["https_ex"]))
    {
        let host = s(&h["host"]).unwrap_or_default();
        let uri = s(&h["uri"]).unwrap_or_default();
        let url = if uri.contains("://") {
            uri.to_string()
        } else if !host.is_empty() {
            let scheme = s(&h["protocol"]).unwrap_or("http");
            format!("{scheme}://{host}{uri}")
        } else {
            continue;
        };
        if !filter.url_is_noise(&url) {
            report.iocs.urls.push(url);
        }
    }
    report.iocs.domains.extend(domains);
    for d in arr(&v["dropped"]) {
        if let Some(f) = file_from(d) {
            report.iocs.dropped_files.push(f);
        }
    }
    let behavior = &v["behavior"];
    for p in arr(&behavior["processes"]) {
        let image = s(&p["process_path"])
            .or_else(|| s(&p["module_path"]))
            .or_else(|| s(&p["process_name"]))
            .unwrap_or_default();
        if image.is_empty() || is_noise_process(image) {
            continue;
        }
        let cmd = s(&p["command_line"])
            .or_else(|| s(&p["environ"]["CommandLine"]))
            .unwrap_or(image);
        report.iocs.processes.push(ProcessIoc {
            path: image.to_string(),
            command_line: cmd.trim().to_string(),
        });
    }
    let summary = &behavior["summary"];
    for k in arr(&summary["regkey_written"]) {
        if let Some(key) = s(k) {
            if let Some(kind) = registry_persistence(key) {
                report.iocs.persistence.push(PersistenceIoc {
                    location: key.to_string(),
                    kind: kind.into(),
                    succeeded: true,
                });
            }
        }
    }
    for f in arr(&summary["file_written"])
        .iter()
        .chain(arr(&summary["write_files"]))
    {
        if let Some(path) = s(f) {
            if let Some(kind) = file_persistence(path) {
                report.iocs.persistence.push(PersistenceIoc {
                    location: path.to_string(),
                    kind: kind.into(),
                    succeeded: true,
                });
            }
        }
    }
}

fn signature_evidence(engine: &str, sigs: &[Value], score_key: &str) -> (i64, Vec<Evidence>) {
    let mut max = 0;
    let mut ev = Vec::new();
    for sig in sigs {
        let sev = sig[score_key].as_i64().unwrap_or(0);
        max = max.max(sev);
        ev.push(Evidence {
            engine: engine.into(),
            rule: s(&sig["name"]).unwrap_or("unnamed").to_string(),
            detail: s(&sig["description"])
                .or_else(|| s(&sig["short_description"]))
                .unwrap_or_default()
                .to_string(),
            severity: sev.clamp(0, 10) as u8,
        });
    }
    (max, ev)
}

fn apply_score(
    report: &mut Report,
    score: f64,
    max_sev: i64,
    av_positives: i64,
    family: Option<String>,
) {
    report.score = Some(score);
    let verdict = if score >= MALICIOUS_SCORE
        || max_sev >= MALICIOUS_SEVERITY
        || av_positives >= MALICIOUS_AV_POSITIVES
    {
        Verdict::Malicious
    } else if score >= SUSPICIOUS_SCORE {
        Verdict::Suspicious
    } else {
        Verdict::Clean
    };
    let name = family.unwrap_or_else(|| "Generic.Sandbox".to_string());
    report.raise(verdict, Some(&name));
}

/// Import a Cuckoo 2 `report.json`.
pub fn import_cuckoo2(bytes: &[u8]) -> Result<Report, SandboxError> {
    let v = parse("Cuckoo 2", bytes)?;
    if !v["info"].is_object() || !v["target"].is_object() {
        return Err(SandboxError::MalformedReport {
            format: "Cuckoo 2",
            reason: "missing the \"info\" or \"target\" section".into(),
        });
    }
    let target = &v["target"]["file"];
    let name = s(&target["name"]).unwrap_or("object");
    let mut report = Report::new("cuckoo2", name);
    report.iocs.object = file_from(target);
    let score = v["info"]["score"].as_f64().unwrap_or(0.0);
    let sigs = arr(&v["signatures"]);
    let (max_sev, ev) = signature_evidence("cuckoo2", sigs, "severity");
    report.evidence = ev;
    let positives = v["virustotal"]["positives"]
        .as_i64()
        .or_else(|| v["virustotal"]["summary"]["positives"].as_i64())
        .unwrap_or(0);
    let labels: Vec<&str> = sigs
        .iter()
        .filter(|s| {
            s["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("antivirus"))
        })
        .flat_map(|s| arr(&s["marks"]))
        .filter_map(|m| s(&m["ioc"]))
        .chain(
            v["virustotal"]["scans"]
                .as_object()
                .into_iter()
                .flat_map(|m| m.values())
                .filter_map(|r| s(&r["result"])),
        )
        .collect();
    let family = family_from_labels(labels.into_iter());
    apply_score(&mut report, score, max_sev, positives, family);
    cuckoo_like_iocs(&v, &mut report);
    Ok(report.finalize())
}

/// Import a CAPEv2 `report.json` (also what `tasks/get/report/` returns).
pub fn import_cape(bytes: &[u8]) -> Result<Report, SandboxError> {
    let v = parse("CAPE", bytes)?;
    if !v["info"].is_object() {
        return Err(SandboxError::MalformedReport {
            format: "CAPE",
            reason: "missing the \"info\" section".into(),
        });
    }
    let target = &v["target"]["file"];
    let name = s(&target["name"]).unwrap_or("object");
    let mut report = Report::new("cape", name);
    report.iocs.object = file_from(target);
    let score = v["malscore"]
        .as_f64()
        .or_else(|| v["info"]["score"].as_f64())
        .unwrap_or(0.0);
    let sigs = arr(&v["signatures"]);
    let (max_sev, ev) = signature_evidence("cape", sigs, "severity");
    report.evidence = ev;
    let family = s(&v["malfamily"])
        .map(str::to_string)
        .or_else(|| s(&v["detections"]).map(str::to_string))
        .or_else(|| {
            arr(&v["detections"])
                .iter()
                .find_map(|d| s(&d["family"]).map(str::to_string))
        })
        .or_else(|| {
            sigs.iter().find_map(|s| {
                arr(&s["families"])
                    .first()
                    .and_then(|f| f.as_str())
                    .map(str::to_string)
            })
        });
    // A CAPE family detection (config extraction / YARA on payloads) is conclusive.
    let detections = if family.is_some() {
        MALICIOUS_AV_POSITIVES
    } else {
        0
    };
    apply_score(&mut report, score, max_sev, detections, family);
    cuckoo_like_iocs(&v, &mut report);
    for p in arr(&v["CAPE"]["payloads"]).iter().chain(arr(&v["CAPE"])) {
        if let Some(f) = file_from(p) {
            report.iocs.dropped_files.push(f);
        }
    }
    Ok(report.finalize())
}

/// Import a Cuckoo3 analysis: `analysis.json` (optional), `pre.json` (optional, static
/// stage) and `post.json` (behaviour stage of one task).
pub fn import_cuckoo3(
    analysis: Option<&[u8]>,
    pre: Option<&[u8]>,
    post: &[u8],
) -> Result<Report, SandboxError> {
    let post = parse("Cuckoo3 post.json", post)?;
    if post.get("task_id").is_none()
        || post.get("network").is_none() && post.get("processes").is_none()
    {
        return Err(SandboxError::MalformedReport {
            format: "Cuckoo3 post.json",
            reason: "missing \"task_id\" and behaviour sections".into(),
        });
    }
    let analysis = analysis
        .map(|b| parse("Cuckoo3 analysis.json", b))
        .transpose()?;
    let pre = pre.map(|b| parse("Cuckoo3 pre.json", b)).transpose()?;
    let target = analysis
        .as_ref()
        .map(|a| &a["target"])
        .or_else(|| pre.as_ref().map(|p| &p["target"]));
    let name = target
        .and_then(|t| s(&t["filename"]).or_else(|| s(&t["orig_filename"])))
        .unwrap_or("object");
    let mut report = Report::new("cuckoo3", name);
    report.iocs.object = target.and_then(file_from);
    let score = [
        analysis.as_ref().and_then(|a| a["score"].as_f64()),
        pre.as_ref().and_then(|p| p["score"].as_f64()),
        post["score"].as_f64(),
    ]
    .into_iter()
    .flatten()
    .fold(0.0, f64::max);
    let mut max_sev = 0;
    for doc in pre.iter().chain(std::iter::once(&post)) {
        let (m, ev) = signature_evidence("cuckoo3", arr(&doc["signatures"]), "score");
        max_sev = max_sev.max(m);
        report.evidence.extend(ev);
    }
    let family = analysis
        .as_ref()
        .and_then(|a| arr(&a["families"]).first().and_then(s).map(str::to_string))
        .or_else(|| {
            arr(&post["families"])
                .first()
                .and_then(s)
                .map(str::to_string)
        })
        .or_else(|| {
            arr(&post["signatures"])
                .iter()
                .find_map(|sig| s(&sig["family"]).map(str::to_string))
        });
    // Cuckoo3 signature scores are on the 0..=10 analysis scale, not a severity.
    apply_score(&mut report, score, 0, 0, family);
    let _ = max_sev;

    // Network: correlate DNS answers with queries (response dstport = query srcport).
    let net = &post["network"];
    let mut filter = NoiseFilter::new();
    let mut noise_ports = std::collections::HashSet::new();
    let mut domains = Vec::new();
    for q in arr(&net["dns"]["query"]) {
        if let Some(ip) = s(&q["dstip"]) {
            filter.add_noise_ip(ip);
        }
        let Some(name) = s(&q["name"]) else { continue };
        if is_noise_domain(name) {
            if let Some(p) = q["srcport"].as_u64() {
                noise_ports.insert(p);
            }
        } else {
            domains.push(name.to_ascii_lowercase());
        }
    }
    for r in arr(&net["dns"]["response"]) {
        let port = r["dstport"].as_u64().unwrap_or(0);
        if noise_ports.contains(&port) && matches!(s(&r["type"]), Some("A") | Some("AAAA")) {
            if let Some(ip) = s(&r["data"]) {
                filter.add_noise_ip(ip);
            }
        }
    }
    for d in arr(&net["domain"]) {
        if let Some(name) = s(d) {
            if !is_noise_domain(name) {
                domains.push(name.to_ascii_lowercase());
            }
        }
    }
    for (proto, key) in [("tcp", "tcp"), ("udp", "udp")] {
        for c in arr(&net[key]) {
            let Some(ip) = s(&c["dstip"]) else { continue };
            if filter.ip_is_noise(ip) {
                continue;
            }
            report.iocs.destinations.push(Destination {
                ip: ip.to_string(),
                port: c["dstport"].as_u64().and_then(|p| u16::try_from(p).ok()),
                protocol: proto.into(),
            });
        }
    }
    for h in arr(&net["http"]) {
        let Some(url) = s(&h["request"]["url"]) else {
            continue;
        };
        let dst_noise = s(&h["dstip"]).is_some_and(|ip| filter.ip_is_noise(ip));
        if !filter.url_is_noise(url) && !dst_noise {
            report.iocs.urls.push(url.to_string());
        }
    }
    report.iocs.domains.extend(domains);
    for p in arr(&post["processes"]) {
        let Some(image) = s(&p["image"]) else {
            continue;
        };
        if is_noise_process(image) {
            continue;
        }
        report.iocs.processes.push(ProcessIoc {
            path: image.to_string(),
            command_line: s(&p["commandline"]).unwrap_or(image).trim().to_string(),
        });
    }
    Ok(report.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_vote() {
        let labels = [
            "DeepScan:Generic.Ransom.Sodinokibi.91A8D78D",
            "Ransom.SodinokibiRI.S7669123",
            "Trojan.Ransom.Sodinokibi",
            "Ransom.Sodinokibi",
        ];
        assert_eq!(
            family_from_labels(labels.into_iter()).as_deref(),
            Some("Sodinokibi")
        );
    }

    #[test]
    fn malformed_reports_are_errors() {
        assert!(matches!(
            import_cuckoo2(b"{not json"),
            Err(SandboxError::MalformedReport { .. })
        ));
        assert!(matches!(
            import_cuckoo2(b"[1,2]"),
            Err(SandboxError::MalformedReport { .. })
        ));
        assert!(matches!(
            import_cuckoo2(b"{\"info\":{}}"),
            Err(SandboxError::MalformedReport { .. })
        ));
        assert!(matches!(
            import_cape(b"{}"),
            Err(SandboxError::MalformedReport { .. })
        ));
        assert!(matches!(
            import_cuckoo3(None, None, b"{}"),
            Err(SandboxError::MalformedReport { .. })
        ));
    }
}
