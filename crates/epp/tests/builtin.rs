//! Built-in scanner and critical-area scanning, no external engine.

mod common;

use std::path::Path;

use common::*;
use md5::Md5;
use riposte_epp::builtin::{BuiltinScanner, HashDb, RuleMatcher};
use riposte_epp::{scan_critical_areas, Epp, ScanOutcome};
use riposte_host::{CriticalCategory, HostRoot};
use sha2::{Digest, Sha256};

struct MarkerRule;
impl RuleMatcher for MarkerRule {
    fn matches(&self, data: &[u8]) -> Result<Vec<String>, String> {
        Ok(if data.windows(MARKER.len()).any(|w| w == MARKER) {
            vec!["Test.MarkerRule".into()]
        } else {
            vec![]
        })
    }
}

#[test]
fn hash_formats_and_errors() {
    let data = b"some malware";
    let mut db = HashDb::new();
    let md5 = hex::encode(Md5::digest(data));
    let sha = hex::encode(Sha256::digest(data));
    assert_eq!(
        db.load_clamav(
            &format!("{md5}:{}:Test.Md5\n", data.len()),
            Path::new("t.hdb")
        )
        .unwrap(),
        1
    );
    assert_eq!(db.scan(data), Some("Test.Md5"));
    let mut db = HashDb::new();
    db.load_clamav(&format!("{sha}:*:Test.Sha\n"), Path::new("t.hsb"))
        .unwrap();
    assert_eq!(db.scan(data), Some("Test.Sha"));
    let mut db = HashDb::new();
    db.load_csv(
        &format!("hash,name,size\n{sha},Test.Csv,999\n"),
        Path::new("t.csv"),
    )
    .unwrap();
    assert_eq!(db.scan(data), None, "size must match");
    db.load_csv(
        &format!("{},Test.Sha1\n", hex::encode(sha1::Sha1::digest(data))),
        Path::new("t.csv"),
    )
    .unwrap();
    assert_eq!(db.scan(data), Some("Test.Sha1"));
    let err = HashDb::new()
        .load_clamav("zz:1:x\n", Path::new("bad.hdb"))
        .unwrap_err();
    assert!(
        err.to_string().contains("bad.hdb") && err.to_string().contains("line 1"),
        "{err}"
    );
}

#[test]
fn critical_areas_enumerated_and_scanned() {
    let t = tempfile::tempdir().unwrap();
    let evil = b"evil startup program".to_vec();
    fake_device(t.path(), &evil);
    let host = HostRoot::new(t.path());
    let areas = host.critical_areas();
    let has = |p: &str, c: CriticalCategory| {
        areas
            .files
            .iter()
            .any(|o| o.path == Path::new(p) && o.category == c)
    };
    assert!(has(
        "/lib/modules/6.1.0-test/kernel/drivers/bad/badmod.ko.xz",
        CriticalCategory::KernelModule
    ));
    assert!(has(
        "/boot/vmlinuz-6.1.0-test",
        CriticalCategory::KernelImage
    ));
    assert!(has(
        "/boot/initrd.img-6.1.0-test",
        CriticalCategory::KernelImage
    ));
    assert!(has(
        "/etc/systemd/system/evil.service",
        CriticalCategory::Startup
    ));
    assert!(has("/usr/local/bin/evil", CriticalCategory::StartupProgram));
    assert!(has("/usr/lib/libhide.so", CriticalCategory::StartupProgram));
    assert!(has("/etc/ld.so.preload", CriticalCategory::Startup));
    assert!(has("/etc/crontab", CriticalCategory::Startup));
    assert!(has("/etc/rc.local", CriticalCategory::Startup));
    assert!(has("/home/alice/.bashrc", CriticalCategory::Startup));
    assert!(has("/opt/x/run", CriticalCategory::StartupProgram));
    assert!(
        areas.skipped.iter().any(|s| s.what == "module ghost"),
        "{:?}",
        areas.skipped
    );
    assert!(
        areas.skipped.iter().any(|s| s.what == "/dev/sda1"),
        "{:?}",
        areas.skipped
    );
    assert!(areas.skipped.iter().any(|s| s.what == "/dev/loop0"));
    assert_eq!(areas.boot_sectors.len(), 1);
    assert_eq!(
        areas.boot_sectors[0].data.len(),
        riposte_host::critical::BOOT_SECTOR_BYTES
    );

    let mut db = HashDb::new();
    db.load_clamav(
        &format!(
            "{}:{}:Test.EvilStartup\n",
            hex::encode(Md5::digest(&evil)),
            evil.len()
        ),
        Path::new("t.hdb"),
    )
    .unwrap();
    let scanner = BuiltinScanner::new(db).with_rules(Box::new(MarkerRule));
    let rep = scan_critical_areas(&host, &scanner);
    let threats: Vec<(&str, &str)> = rep
        .findings
        .iter()
        .map(|f| (f.path.to_str().unwrap(), f.threat.as_str()))
        .collect();
    assert!(
        threats.contains(&("/usr/local/bin/evil", "Test.EvilStartup")),
        "{threats:?}"
    );
    assert!(
        threats.contains(&("/dev/sda", "Test.MarkerRule")),
        "{threats:?}"
    );
    assert_eq!(rep.boot_sectors_scanned, 1);
    // /opt/x/run does not exist: skipped with the reason, not counted
    assert!(rep
        .skipped
        .iter()
        .any(|s| s.what == "/opt/x/run" && s.reason.contains("does not exist")));
    assert!(rep.skipped.iter().any(|s| s.what == "/bin/true"));
    assert_eq!(rep.files_scanned, areas.files.len() - 2);
}

#[test]
fn builtin_skips_what_it_cannot_scan() {
    let t = tempfile::tempdir().unwrap();
    w(t.path(), "/big", &[0u8; 2000]);
    std::fs::create_dir(t.path().join("dir")).unwrap();
    let host = HostRoot::new(t.path());
    let s = BuiltinScanner::new(HashDb::new()).with_max_file_size(1000);
    assert!(
        matches!(s.scan_file(&host, Path::new("/big")).unwrap(), ScanOutcome::Skipped { reason } if reason.contains("larger"))
    );
    assert!(
        matches!(s.scan_file(&host, Path::new("/dir")).unwrap(), ScanOutcome::Skipped { reason } if reason.contains("directory"))
    );
    assert!(
        matches!(s.scan_file(&host, Path::new("/a/../big")).unwrap(), ScanOutcome::Skipped { reason } if reason.contains(".."))
    );
}

#[cfg(feature = "yara")]
#[test]
fn yara_rules_from_riposte_ioc() {
    let rules = riposte_ioc::yara::YaraRules::compile_str(
        "rule Test_Yara_Marker { strings: $m = \"RIPOSTE-TEST-MALWARE-MARKER\" condition: $m }",
        "test.yar",
    )
    .unwrap();
    let s = BuiltinScanner::new(HashDb::new()).with_rules(Box::new(rules));
    let mut data = vec![0u8; 600];
    data[300..300 + MARKER.len()].copy_from_slice(MARKER);
    assert_eq!(
        s.scan_bytes("x", &data).unwrap(),
        ScanOutcome::Infected {
            threat: "Test_Yara_Marker".into()
        }
    );
    assert_eq!(s.scan_bytes("x", &[0u8; 600]).unwrap(), ScanOutcome::Clean);
}
