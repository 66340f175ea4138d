//! Tests against a real clamd started by the test with a private config and
//! signatures generated here. Needs the Debian package `clamav-daemon`; set
//! RIPOSTE_SKIP_CLAMD=1 to skip when it is not installed.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use md5::Md5;
use riposte_epp::clamd::{ClamdAddr, ClamdClient, ClamdLimits};
use riposte_epp::{scan_critical_areas, Epp, ScanOutcome};
use riposte_host::HostRoot;
use sha2::Digest;

/// Kills clamd when the test ends, whatever happens.
struct Clamd {
    child: Child,
    _dir: tempfile::TempDir,
    socket: PathBuf,
    tcp: String,
    conf: String,
}

impl Drop for Clamd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn clamd_bin() -> Option<PathBuf> {
    ["/usr/sbin/clamd", "/usr/bin/clamd", "/usr/local/sbin/clamd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// The EICAR test string, assembled at run time so that this source file is
/// not itself flagged by scanners.
fn eicar() -> Vec<u8> {
    let parts = [
        "X5O!P%@AP[4\\PZX54(P^)7CC)7}",
        "$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!",
        "$H+H*",
    ];
    parts.concat().into_bytes()
}

fn start_clamd(known_bad: &[u8]) -> Option<Clamd> {
    let Some(bin) = clamd_bin() else {
        if std::env::var("RIPOSTE_SKIP_CLAMD").as_deref() == Ok("1") {
            eprintln!("clamd not installed; skipped because RIPOSTE_SKIP_CLAMD=1");
            return None;
        }
        panic!("clamd is not installed: run `apt-get install -y clamav-daemon` (or set RIPOSTE_SKIP_CLAMD=1 to skip)");
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    fs::create_dir(&db).unwrap();
    fs::write(
        db.join("test.hdb"),
        format!(
            "{}:{}:Riposte.Test.KnownBad\n",
            hex::encode(Md5::digest(known_bad)),
            known_bad.len()
        ),
    )
    .unwrap();
    let e = eicar();
    fs::write(
        db.join("eicar.hdb"),
        format!(
            "{}:{}:Riposte.Test.EICAR\n",
            hex::encode(Md5::digest(&e)),
            e.len()
        ),
    )
    .unwrap();
    fs::write(
        db.join("marker.ndb"),
        format!("Riposte.Test.Marker:0:*:{}\n", hex::encode(MARKER)),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let socket = dir.path().join("clamd.sock");
    let conf = format!(
        "LocalSocket {}\nTCPSocket {port}\nTCPAddr 127.0.0.1\nForeground yes\nDatabaseDirectory {}\nLogFile {}\nPidFile {}\nTemporaryDirectory {}\n\
         MaxFileSize 1M\nMaxScanSize 4M\nStreamMaxLength 1M\nMaxThreads 2\nBytecode no\nOfficialDatabaseOnly no\n",
        socket.display(),
        db.display(),
        dir.path().join("clamd.log").display(),
        dir.path().join("clamd.pid").display(),
        dir.path().display(),
    );
    let conf_path = dir.path().join("clamd.conf");
    fs::write(&conf_path, &conf).unwrap();
    let child = Command::new(bin)
        .arg("--config-file")
        .arg(&conf_path)
        .arg("--foreground")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut c = Clamd {
        child,
        socket,
        tcp: format!("127.0.0.1:{port}"),
        conf,
        _dir: dir,
    };
    let client = ClamdClient::new(ClamdAddr::Unix(c.socket.clone()), ClamdLimits::default());
    let t0 = Instant::now();
    while client.ping().is_err() {
        if let Some(st) = c.child.try_wait().unwrap() {
            let log = fs::read_to_string(c._dir.path().join("clamd.log")).unwrap_or_default();
            panic!("clamd exited with {st}: {log}");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "clamd did not answer PING within 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(c)
}

#[test]
fn real_clamd_protocol_limits_and_critical_areas() {
    let known_bad = b"riposte generated known-bad sample 1234567890".to_vec();
    let Some(clamd) = start_clamd(&known_bad) else {
        return;
    };
    let limits = ClamdLimits::from_conf(&clamd.conf);
    assert_eq!(limits.max_file_size, 1 << 20);
    let unix = ClamdClient::new(ClamdAddr::Unix(clamd.socket.clone()), limits);
    let tcp = ClamdClient::new(ClamdAddr::Tcp(clamd.tcp.clone()), limits);
    unix.ping().unwrap();
    tcp.ping().unwrap();
    assert!(unix.version().unwrap().starts_with("ClamAV "));

    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    w(root, "/home/alice/bad.bin", &known_bad);
    w(root, "/home/alice/eicar.com", &eicar());
    w(root, "/home/alice/clean.txt", b"hello world");
    let mut big = vec![b'a'; 1_500_000];
    big[10..10 + MARKER.len()].copy_from_slice(MARKER);
    w(root, "/home/alice/big.bin", &big);
    let host = HostRoot::new(root);
    for c in [&unix, &tcp] {
        assert_eq!(
            c.scan_file(&host, Path::new("/home/alice/bad.bin"))
                .unwrap(),
            ScanOutcome::Infected {
                threat: "Riposte.Test.KnownBad.UNOFFICIAL".into()
            }
        );
        assert_eq!(
            c.scan_file(&host, Path::new("/home/alice/eicar.com"))
                .unwrap(),
            ScanOutcome::Infected {
                threat: "Riposte.Test.EICAR.UNOFFICIAL".into()
            }
        );
        assert_eq!(
            c.scan_file(&host, Path::new("/home/alice/clean.txt"))
                .unwrap(),
            ScanOutcome::Clean
        );
        // bytes via INSTREAM
        let mut sector = vec![0u8; 512];
        sector[40..40 + MARKER.len()].copy_from_slice(MARKER);
        assert_eq!(
            c.scan_bytes("mbr", &sector).unwrap(),
            ScanOutcome::Infected {
                threat: "Riposte.Test.Marker.UNOFFICIAL".into()
            }
        );
        assert_eq!(
            c.scan_bytes("mbr", &[0u8; 512]).unwrap(),
            ScanOutcome::Clean
        );
    }
    // clamd answers OK for what it did not scan: the client must not trust it.
    let raw = unix.contscan(&root.join("home/alice/big.bin")).unwrap();
    assert_eq!(
        raw[0].outcome,
        Ok(ScanOutcome::Clean),
        "clamd itself says OK for the oversized infected file"
    );
    match unix
        .scan_file(&host, Path::new("/home/alice/big.bin"))
        .unwrap()
    {
        ScanOutcome::Skipped { reason } => {
            assert!(reason.contains("larger than clamd's limit"), "{reason}")
        }
        o => panic!("oversized file must be skipped, got {o:?}"),
    }
    match unix.scan_bytes("big", &big).unwrap() {
        ScanOutcome::Skipped { reason } => assert!(reason.contains("larger than clamd's limit")),
        o => panic!("{o:?}"),
    }
    // MULTISCAN of a directory reports the infected files.
    let replies = unix.multiscan(&root.join("home/alice")).unwrap();
    let found: Vec<&str> = replies
        .iter()
        .filter(|r| matches!(r.outcome, Ok(ScanOutcome::Infected { .. })))
        .map(|r| r.path.rsplit('/').next().unwrap())
        .collect();
    assert!(
        found.contains(&"bad.bin") && found.contains(&"eicar.com"),
        "{replies:?}"
    );
    // Missing file / directory / `..`: skipped with the reason, not an error.
    for p in ["/home/alice/missing", "/home/alice", "/home/../etc"] {
        assert!(
            matches!(
                unix.scan_file(&host, Path::new(p)).unwrap(),
                ScanOutcome::Skipped { .. }
            ),
            "{p}"
        );
    }

    // Critical areas through clamd.
    let dev = tempfile::tempdir().unwrap();
    fake_device(dev.path(), &known_bad);
    let rep = scan_critical_areas(&HostRoot::new(dev.path()), &unix);
    assert!(rep.engine.starts_with("clamd (ClamAV"), "{}", rep.engine);
    let threats: Vec<(String, String)> = rep
        .findings
        .iter()
        .map(|f| (f.path.display().to_string(), f.threat.clone()))
        .collect();
    assert!(
        threats.contains(&(
            "/usr/local/bin/evil".into(),
            "Riposte.Test.KnownBad.UNOFFICIAL".into()
        )),
        "{threats:?}"
    );
    assert!(
        threats.contains(&("/dev/sda".into(), "Riposte.Test.Marker.UNOFFICIAL".into())),
        "{threats:?}"
    );
    assert_eq!(rep.boot_sectors_scanned, 1);
    assert!(rep.files_scanned >= 10);
    assert!(rep.skipped.iter().any(|s| s.what == "/dev/sda1"));
}

#[test]
fn unreachable_clamd_is_a_clear_error() {
    let c = ClamdClient::new(
        ClamdAddr::Unix("/nonexistent/clamd.sock".into()),
        ClamdLimits::default(),
    );
    let e = c.ping().unwrap_err();
    assert!(e.to_string().contains("cannot reach clamd"), "{e}");
}
