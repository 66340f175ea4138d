//! Static analysis over real programs from /usr/bin: zero malicious verdicts expected.

mod common;

use riposte_sandbox::report::Verdict;
use riposte_sandbox::static_analysis::{HashList, StaticAnalyzer};

#[test]
fn usr_bin_programs_are_not_malicious() {
    let mut hashes = HashList::new();
    hashes
        .load_file(&common::corpus().join("clamav/all-hashes.csv"))
        .unwrap();
    // The service's default engine: YARA with the shipped rules (DATA_DIR/rules empty).
    let no_extra = tempfile::tempdir().unwrap();
    let engines = riposte_sandbox::service::default_engines(no_extra.path()).unwrap();
    let analyzer = StaticAnalyzer::new(hashes, engines);
    let mut paths: Vec<_> = std::fs::read_dir("/usr/bin")
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    let mut scanned = 0;
    let mut false_positives = Vec::new();
    for p in paths {
        if scanned == 300 {
            break;
        }
        let Ok(data) = std::fs::read(&p) else {
            continue;
        };
        // Larger programs are left out to keep the unoptimised test build quick; the
        // benchmark (release build) covers them.
        if data.len() > 512 << 10 {
            continue;
        }
        scanned += 1;
        let r = analyzer.analyse(&p.display().to_string(), &data);
        if r.verdict == Verdict::Malicious {
            false_positives.push((p.display().to_string(), r.threat_name));
        }
    }
    eprintln!(
        "scanned {scanned} programs from /usr/bin, false positives: {}",
        false_positives.len()
    );
    assert!(scanned >= 250, "only {scanned} programs in /usr/bin");
    assert!(false_positives.is_empty(), "{false_positives:?}");
}

/// 173 real-world YARA rules (FireEye red-team tool countermeasures) over the first 40
/// programs: the rules folder must not add false positives either. (Kept small: boreal
/// is unoptimised in test builds.)
#[test]
fn real_world_yara_rules_on_usr_bin() {
    let rules_dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        common::corpus().join("yara/fireeye-rttc-all.yar"),
        rules_dir.path().join("fireeye.yar"),
    )
    .unwrap();
    let engines = riposte_sandbox::service::default_engines(rules_dir.path()).unwrap();
    let analyzer = StaticAnalyzer::new(HashList::new(), engines);
    let mut paths: Vec<_> = std::fs::read_dir("/usr/bin")
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    let mut fp = Vec::new();
    for p in paths.iter().take(40) {
        let Ok(data) = std::fs::read(p) else { continue };
        if data.len() > 512 << 10 {
            continue;
        }
        let r = analyzer.analyse(&p.display().to_string(), &data);
        if r.verdict == Verdict::Malicious {
            fp.push(p.display().to_string());
        }
    }
    assert!(fp.is_empty(), "{fp:?}");
    // And the set still detects: EICAR through the default rules.
    let r = analyzer.analyse("eicar", riposte_sandbox::static_analysis::EICAR);
    assert_eq!(r.verdict, Verdict::Malicious);
}
