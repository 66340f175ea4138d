//! Importers on the real reports in the shared corpus (and a CAPE report built from
//! the documented layout: the corpus holds no CAPE sample).

mod common;

use riposte_sandbox::importers::{import_cape, import_cuckoo2, import_cuckoo3};
use riposte_sandbox::report::Verdict;
use riposte_sandbox::SandboxError;

#[test]
fn cuckoo2_malicious_revil_dll() {
    let r = import_cuckoo2(&common::read_corpus(
        "sandbox-reports/cuckoo2/malicious_report.json",
    ))
    .unwrap();
    // Score is only 2.4 (the DLL barely ran); the 54-engine AV signature (severity 6) decides.
    assert_eq!(r.verdict, Verdict::Malicious);
    assert_eq!(r.threat_name.as_deref(), Some("Sodinokibi"));
    let obj = r.iocs.object.as_ref().unwrap();
    assert_eq!(
        obj.sha256,
        "fbaeb1a0ded98e0246ec2c9bd9743687df480b4a3a5d2ecfdb13e09a0c873690"
    );
    assert_eq!(obj.md5, "4387700607ebc371736db021193c32fa");
    assert_eq!(obj.sha1, "fb8143058e4303602a6f64aded95812218d8f4cf");
    assert_eq!(obj.size, 167936);
    // Its only traffic was guest background (msftncsi, teredo, LLMNR, Google DNS).
    assert!(r.iocs.domains.is_empty(), "{:?}", r.iocs.domains);
    assert!(r.iocs.destinations.is_empty(), "{:?}", r.iocs.destinations);
    assert!(r
        .evidence
        .iter()
        .any(|e| e.rule == "antivirus_virustotal" && e.severity == 6));
    assert!(r.openioc.contains("http://openioc.org/schemas/OpenIOC_1.1"));
    assert!(r
        .openioc
        .contains("fbaeb1a0ded98e0246ec2c9bd9743687df480b4a3a5d2ecfdb13e09a0c873690"));
}

#[test]
fn cuckoo2_benign_cmdkey_has_no_verdict_and_no_background_iocs() {
    let r = import_cuckoo2(&common::read_corpus(
        "sandbox-reports/cuckoo2/benign_report.json",
    ))
    .unwrap();
    assert_eq!(r.verdict, Verdict::Clean);
    assert_eq!(
        r.iocs.object.as_ref().unwrap().sha256,
        "f51c7675be8fe3df77207ada324235246b54c12d530765fc5a8da1ed39de2da6"
    );
    // Background: update.googleapis.com, time.windows.com (NTP), dns.msftncsi.com,
    // teredo, 8.8.8.8 resolver, NetBIOS/LLMNR/SSDP multicast and broadcast.
    assert!(r.iocs.domains.is_empty(), "{:?}", r.iocs.domains);
    assert!(r.iocs.destinations.is_empty(), "{:?}", r.iocs.destinations);
    assert!(r.iocs.urls.is_empty(), "{:?}", r.iocs.urls);
    for noise in [
        "8.8.8.8",
        "40.81.188.85",
        "172.217.18.131",
        "224.0.0.252",
        "time.windows.com",
    ] {
        assert!(
            !r.openioc.contains(noise),
            "{noise} leaked into the OpenIOC"
        );
    }
    // lsass.exe is a guest system process, not something cmdkey started.
    assert!(r
        .iocs
        .processes
        .iter()
        .all(|p| !p.path.to_ascii_lowercase().contains("lsass")));
}

#[test]
fn cuckoo3_emotet() {
    let r = import_cuckoo3(
        Some(&common::read_corpus(
            "sandbox-reports/cuckoo3/analysis.json",
        )),
        Some(&common::read_corpus("sandbox-reports/cuckoo3/pre.json")),
        &common::read_corpus("sandbox-reports/cuckoo3/post.json"),
    )
    .unwrap();
    assert_eq!(r.verdict, Verdict::Malicious);
    assert_eq!(r.threat_name.as_deref(), Some("emotet"));
    let obj = r.iocs.object.as_ref().unwrap();
    assert_eq!(
        obj.sha256,
        "cbdb56e796b3fefb8c911e4f9237047d2d805dceccbea3dbac1ff87328e5f425"
    );
    assert_eq!(obj.md5, "d9ea2b4a5f6613d624e9ee0eee44c232");
    // The two Emotet C2s; every Microsoft/Akamai/DigiCert address came from a noise lookup.
    let dests: Vec<(String, Option<u16>)> = r
        .iocs
        .destinations
        .iter()
        .map(|d| (d.ip.clone(), d.port))
        .collect();
    assert_eq!(
        dests,
        vec![
            ("41.220.119.246".to_string(), Some(80)),
            ("37.157.194.134".to_string(), Some(443))
        ]
    );
    assert_eq!(
        r.iocs.urls,
        vec![
            "http://41.220.119.246/enable/codec/".to_string(),
            "http://37.157.194.134:443/window/window/sess/merge/".to_string()
        ]
    );
    // All ten looked-up names are Windows/PKI background.
    assert!(r.iocs.domains.is_empty(), "{:?}", r.iocs.domains);
    assert!(r
        .iocs
        .processes
        .iter()
        .any(|p| p.path == "C:\\Windows\\SysWOW64\\structsreadand.exe"));
    assert!(r
        .iocs
        .processes
        .iter()
        .all(|p| !p.path.to_ascii_lowercase().ends_with("svchost.exe")));
    assert!(r
        .openioc
        .contains("<Content type=\"IP\">41.220.119.246</Content>"));
}

const CAPE_REPORT: &str = include_str!("data/cape_report.json");

#[test]
fn cape_report() {
    let r = import_cape(CAPE_REPORT.as_bytes()).unwrap();
    assert_eq!(r.verdict, Verdict::Malicious);
    assert_eq!(r.threat_name.as_deref(), Some("AgentTesla"));
    assert_eq!(r.iocs.domains, vec!["smtp.evil-exfil.example".to_string()]);
    assert_eq!(r.iocs.destinations.len(), 1);
    assert_eq!(r.iocs.destinations[0].ip, "198.51.100.23");
    assert_eq!(r.iocs.destinations[0].port, Some(587));
    assert_eq!(r.iocs.dropped_files.len(), 1);
    assert_eq!(
        r.iocs.dropped_files[0].path.as_deref(),
        Some("C:\\Users\\u\\AppData\\Roaming\\x.exe")
    );
    assert_eq!(r.iocs.persistence.len(), 1);
    assert_eq!(r.iocs.persistence[0].kind, "registry-run");
    assert_eq!(r.iocs.processes.len(), 1);
}

#[test]
fn malformed_reports_give_clear_errors() {
    let truncated = &common::read_corpus("sandbox-reports/cuckoo2/malicious_report.json")[..5000];
    let e = import_cuckoo2(truncated).unwrap_err();
    assert!(matches!(e, SandboxError::MalformedReport { .. }));
    assert!(e.to_string().contains("not JSON"), "{e}");
    let e = import_cuckoo3(None, None, b"{\"score\": 3}").unwrap_err();
    assert!(e.to_string().contains("Cuckoo3"), "{e}");
    // A Cuckoo3 post.json fed to the Cuckoo 2 importer is refused, not read as clean.
    let e = import_cuckoo2(&common::read_corpus("sandbox-reports/cuckoo3/post.json")).unwrap_err();
    assert!(e.to_string().contains("info"), "{e}");
}
