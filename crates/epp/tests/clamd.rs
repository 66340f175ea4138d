//! Tests against a real clamd started by the test with a private config and
//! signatures generated here. Needs the Debian package `clamav-daemon`; set
//! RIPOSTE_SKIP_CLAMD=1 to skip when it is not installed.

mod common;

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use common::*;
use riposte_epp::clamd::{ClamdAddr, ClamdClient, ClamdExclusions, ClamdLimits};
use riposte_epp::testing::{eicar, start_clamd as start_clamd_in, Clamd};
use riposte_epp::{scan_critical_areas, Epp, ScanOutcome};
use riposte_host::HostRoot;

fn start_clamd(known_bad: &[u8]) -> Option<(Clamd, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    start_clamd_in(dir.path(), known_bad, MARKER).map(|c| (c, dir))
}

#[test]
fn real_clamd_protocol_limits_and_critical_areas() {
    let known_bad = b"riposte generated known-bad sample 1234567890".to_vec();
    let Some((clamd, _dir)) = start_clamd(&known_bad) else {
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
    // A name that is not UTF-8: clamd's path commands cannot carry it; the client
    // streams the descriptor it opened instead, so the file is still scanned.
    let odd = Path::new(std::ffi::OsStr::from_bytes(b"/home/alice/evil\xff.bin"));
    std::fs::write(root.join(odd.strip_prefix("/").unwrap()), &known_bad).unwrap();
    let by_path = unix.contscan(&root.join(odd.strip_prefix("/").unwrap()));
    assert!(
        by_path.unwrap_err().to_string().contains("not UTF-8"),
        "clamd's path command cannot name the file"
    );
    for c in [&unix, &tcp] {
        assert_eq!(
            c.scan_file(&host, odd).unwrap(),
            ScanOutcome::Infected {
                threat: "Riposte.Test.KnownBad.UNOFFICIAL".into()
            }
        );
    }
    // A path clamd.conf excludes is not streamed to clamd (which would scan a stream
    // whatever its configuration excludes): it is skipped, saying why.
    let conf = format!("{}\nExcludePath ^/home/alice/eicar\\.\n", clamd.conf);
    let excluding = ClamdClient::new(ClamdAddr::Unix(clamd.socket.clone()), limits)
        .with_exclusions(ClamdExclusions::from_conf(&conf));
    match excluding
        .scan_file(&host, Path::new("/home/alice/eicar.com"))
        .unwrap()
    {
        ScanOutcome::Skipped { reason } => {
            assert!(
                reason.contains("ExcludePath ^/home/alice/eicar"),
                "{reason}"
            )
        }
        other => panic!("an excluded path was scanned: {other:?}"),
    }
    assert!(matches!(
        excluding.scan_file(&host, Path::new("/home/alice/bad.bin")),
        Ok(ScanOutcome::Infected { .. })
    ));
    // A file over the stream limit the client is configured with, but within clamd's
    // file limit, goes by path (CONTSCAN) and is still scanned.
    let mut mid = vec![b'b'; 5000];
    mid[100..100 + MARKER.len()].copy_from_slice(MARKER);
    w(root, "/home/alice/mid.bin", &mid);
    let short_streams = ClamdClient::new(
        ClamdAddr::Unix(clamd.socket.clone()),
        ClamdLimits {
            stream_max_length: 1000,
            ..limits
        },
    );
    assert_eq!(
        short_streams
            .scan_file(&host, Path::new("/home/alice/mid.bin"))
            .unwrap(),
        ScanOutcome::Infected {
            threat: "Riposte.Test.Marker.UNOFFICIAL".into()
        }
    );
    assert!(matches!(
        short_streams.scan_bytes("mid", &mid).unwrap(),
        ScanOutcome::Skipped { .. }
    ));
    // A client told of a larger stream limit than clamd's own (no --clamd-conf): clamd
    // stops reading, says why and hangs up; its reason is the outcome, not "cannot
    // reach clamd".
    let mut large = vec![b'c'; 3 << 20];
    large[7..7 + MARKER.len()].copy_from_slice(MARKER);
    w(root, "/home/alice/large.bin", &large);
    for addr in [
        ClamdAddr::Unix(clamd.socket.clone()),
        ClamdAddr::Tcp(clamd.tcp.clone()),
    ] {
        let uninformed = ClamdClient::new(
            addr.clone(),
            ClamdLimits {
                stream_max_length: 100 << 20,
                max_file_size: 100 << 20,
                max_scan_size: 100 << 20,
            },
        );
        match uninformed
            .scan_file(&host, Path::new("/home/alice/large.bin"))
            .unwrap()
        {
            ScanOutcome::Skipped { reason } => {
                assert!(reason.contains("size limit exceeded"), "{addr:?}: {reason}")
            }
            o => panic!(
                "{addr:?}: a stream over clamd's limit must be skipped with its reason, got {o:?}"
            ),
        }
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

/// A clamd that cannot be reached scans nothing: the critical-areas scan stops at the
/// first object and says why, rather than report every object skipped (a clean look)
/// after waiting for each.
#[test]
fn a_clamd_that_cannot_be_reached_stops_the_scan_with_the_reason() {
    let dev = tempfile::tempdir().unwrap();
    common::fake_device(dev.path(), b"whatever");
    let gone = riposte_epp::clamd::ClamdClient::new(
        riposte_epp::clamd::ClamdAddr::Unix(dev.path().join("no-clamd.sock")),
        riposte_epp::clamd::ClamdLimits::default(),
    );
    let rep = scan_critical_areas(&HostRoot::new(dev.path()), &gone);
    let failure = rep.engine_failure.expect("the engine failure is reported");
    assert!(failure.contains("cannot reach clamd"), "{failure}");
    assert_eq!(rep.files_scanned + rep.boot_sectors_scanned, 0);
    assert!(
        !rep.skipped
            .iter()
            .any(|s| s.reason.contains("cannot reach")),
        "{:?}",
        rep.skipped
    );
}

/// A clamd that takes the connection and never answers (hung, or not clamd at all):
/// the critical-areas scan gives up after the short check, not the scan timeout, and
/// says that nothing answered.
#[test]
fn a_clamd_that_never_answers_fails_the_scan_at_the_check() {
    let dev = tempfile::tempdir().unwrap();
    common::fake_device(dev.path(), b"whatever");
    let sock = dev.path().join("silent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    let silent = ClamdClient::new(ClamdAddr::Unix(sock), ClamdLimits::default());
    let rep = scan_critical_areas(&HostRoot::new(dev.path()), &silent);
    let failure = rep.engine_failure.expect("the engine failure is reported");
    assert!(
        failure.contains(&format!(
            "no answer within {} s",
            riposte_epp::clamd::CHECK_TIMEOUT.as_secs()
        )),
        "{failure}"
    );
    assert_eq!(rep.files_scanned, 0);
}
