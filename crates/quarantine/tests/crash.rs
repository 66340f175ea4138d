//! Crash test: quarantine 200 files while `kill -9`-ing the process at
//! random instants, restarting it each time (recovery runs on open). After
//! every kill and at the end, every object must be intact at its path or in
//! quarantine with a complete, decryptable record whose hash matches. None
//! lost, none half-done.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use rand::Rng;
use riposte_host::HostRoot;
use riposte_quarantine::{QuarantineConfig, QuarantineStore};
use sha2::{Digest, Sha256};

const N: usize = 200;

fn content(i: usize) -> Vec<u8> {
    let len = 100 + (i * 7919) % 40_000;
    (0..len).map(|k| ((k * 31 + i * 17) % 251) as u8).collect()
}

/// Checks the invariant; `recovered` says whether recovery ran (then no
/// object may be both at its path and in quarantine, and no intent remains).
fn check(root: &Path, data: &Path, recovered: bool) -> (usize, usize) {
    let cfg = QuarantineConfig {
        min_free_bytes: 0,
        ..Default::default()
    };
    let s = QuarantineStore::open_no_recover(data, HostRoot::new(root), cfg).unwrap();
    let mut in_q: HashMap<PathBuf, usize> = HashMap::new();
    let listing = s.list().unwrap();
    assert!(
        listing.unreadable.is_empty(),
        "every record is complete and parseable: {:?}",
        listing.unreadable
    );
    for rec in listing.entries {
        let mut out = Vec::new();
        s.extract(&rec.id, &mut out)
            .expect("every recorded object decrypts and matches its hash");
        let i: usize = rec.original_path.to_string_lossy()[8..].parse().unwrap();
        assert_eq!(
            hex::encode(Sha256::digest(&out)),
            hex::encode(Sha256::digest(content(i)))
        );
        *in_q.entry(rec.original_path.clone()).or_default() += 1;
    }
    let (mut at_path, mut quarantined) = (0, 0);
    for i in 0..N {
        let dev = PathBuf::from(format!("/files/f{i:03}"));
        let host = root.join(format!("files/f{i:03}"));
        let q = in_q.get(&dev).copied().unwrap_or(0);
        assert!(q <= 1, "f{i:03} quarantined twice");
        match fs::read(&host) {
            Ok(d) => {
                assert_eq!(d, content(i), "f{i:03} modified at its path");
                at_path += 1;
                if recovered {
                    assert_eq!(
                        q, 0,
                        "f{i:03} both at its path and in quarantine after recovery"
                    );
                }
            }
            Err(_) => {
                assert_eq!(q, 1, "f{i:03} LOST: neither at its path nor in quarantine");
                quarantined += 1;
            }
        }
    }
    if recovered {
        assert_eq!(
            fs::read_dir(data.join("journal")).unwrap().count(),
            0,
            "intents left after recovery"
        );
    }
    (at_path, quarantined)
}

#[test]
fn kill_9_during_200_quarantines_loses_nothing() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let data = t.path().join("data");
    fs::create_dir_all(root.join("files")).unwrap();
    for i in 0..N {
        fs::write(root.join(format!("files/f{i:03}")), content(i)).unwrap();
    }
    let exe = env!("CARGO_BIN_EXE_quarantine-crash-helper");
    let mut rng = rand::thread_rng();
    let mut kills = 0;
    let mut finished = false;
    for round in 0..400 {
        let mut child = Command::new(exe)
            .arg(&data)
            .arg(&root)
            .arg(N.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Kill at a random instant for the first rounds; let it finish later.
        if round < 40 {
            std::thread::sleep(Duration::from_micros(rng.gen_range(0..25_000)));
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap(); // SIGKILL
                kills += 1;
            }
            let status = child.wait().unwrap();
            check(&root, &data, false);
            if status.success() {
                finished = true;
                break;
            }
        } else {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "helper failed: {:?}", out);
            finished = true;
            break;
        }
    }
    assert!(finished);
    assert!(kills >= 10, "only {kills} kills happened");
    // Final recovery, then the strict check.
    QuarantineStore::open(
        &data,
        HostRoot::new(&root),
        QuarantineConfig {
            min_free_bytes: 0,
            ..Default::default()
        },
    )
    .unwrap();
    let (at_path, quarantined) = check(&root, &data, true);
    assert_eq!(
        (at_path, quarantined),
        (0, N),
        "the last run quarantines everything left"
    );
    eprintln!("{kills} kills, {quarantined} quarantined");
}
