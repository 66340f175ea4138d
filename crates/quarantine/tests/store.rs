//! Quarantine store behaviour: round trip, restore, conflicts, refusals,
//! bad input, limits and the symlink-swap race.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use riposte_host::{HostError, HostRoot};
use riposte_quarantine::{
    ConflictPolicy, QuarantineConfig, QuarantineError, QuarantineRequest, QuarantineStore,
    RestoreTarget,
};
use sha2::{Digest, Sha256};

struct Env {
    _t: tempfile::TempDir,
    root: PathBuf,
    data: PathBuf,
}

fn env() -> Env {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let data = t.path().join("data");
    fs::create_dir_all(root.join("home/alice")).unwrap();
    Env { root, data, _t: t }
}

fn cfg() -> QuarantineConfig {
    QuarantineConfig {
        min_free_bytes: 0,
        ..Default::default()
    }
}

fn store(e: &Env, c: QuarantineConfig) -> QuarantineStore {
    QuarantineStore::open(&e.data, HostRoot::new(&e.root), c)
        .unwrap()
        .0
}

fn req(p: &str) -> QuarantineRequest {
    QuarantineRequest {
        path: PathBuf::from(p),
        detection_id: "det-1".into(),
        threat_name: "Eicar-Test".into(),
        user: "alice".into(),
        expected: None,
    }
}

fn write(e: &Env, dev: &str, data: &[u8]) -> PathBuf {
    let p = e.root.join(dev.trim_start_matches('/'));
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, data).unwrap();
    p
}

fn sha(d: &[u8]) -> String {
    hex::encode(Sha256::digest(d))
}

#[test]
fn quarantine_and_restore_original_with_owner_mode_times() {
    let e = env();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    let p = write(&e, "/home/alice/evil.bin", &data);
    std::os::unix::fs::chown(&p, Some(1234), Some(2345)).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o4751)).unwrap();
    let before = fs::metadata(&p).unwrap();
    let s = store(&e, cfg());
    let rec = s.quarantine(&req("/home/alice/evil.bin")).unwrap();
    assert!(!p.exists(), "original must be deleted");
    assert_eq!(rec.sha256, sha(&data));
    assert_eq!(rec.md5, hex::encode(md5::Md5::digest(&data)));
    assert_eq!(
        (rec.uid, rec.gid, rec.mode, rec.size),
        (1234, 2345, 0o4751, data.len() as u64)
    );
    assert_eq!(rec.user, "alice");
    // stored encrypted: the plaintext does not appear in the store
    let obj = fs::read(e.data.join("objects").join(format!("{}.obj", rec.id))).unwrap();
    assert!(!obj.windows(64).any(|w| w == &data[1000..1064]));
    let key = e.data.join("quarantine.key");
    assert_eq!(
        fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(s.list().unwrap().entries, vec![rec.clone()]);

    let out = s
        .restore(&rec.id, &RestoreTarget::Original, ConflictPolicy::Refuse)
        .unwrap();
    assert_eq!(out, PathBuf::from("/home/alice/evil.bin"));
    assert_eq!(fs::read(&p).unwrap(), data);
    let after = fs::metadata(&p).unwrap();
    assert_eq!((after.uid(), after.gid()), (1234, 2345));
    assert_eq!(after.permissions().mode() & 0o7777, 0o4751);
    assert_eq!(after.mtime(), before.mtime());
    assert_eq!(after.mtime_nsec(), before.mtime_nsec());
    assert!(
        s.list().unwrap().entries.is_empty(),
        "restored entry leaves quarantine"
    );
}

#[test]
fn restore_to_new_path_and_conflicts() {
    let e = env();
    write(&e, "/home/alice/a", b"payload-a");
    let s = store(&e, cfg());
    let rec = s.quarantine(&req("/home/alice/a")).unwrap();
    // conflict: original path re-created by someone else
    write(&e, "/home/alice/a", b"new content");
    let err = s
        .restore(&rec.id, &RestoreTarget::Original, ConflictPolicy::Refuse)
        .unwrap_err();
    assert!(matches!(err, QuarantineError::TargetExists(_)), "{err}");
    assert_eq!(
        fs::read(e.root.join("home/alice/a")).unwrap(),
        b"new content"
    );
    assert_eq!(
        s.list().unwrap().entries.len(),
        1,
        "entry kept after refused restore"
    );
    assert!(!fs::read_dir(e.root.join("home/alice")).unwrap().any(|d| d
        .unwrap()
        .file_name()
        .to_string_lossy()
        .contains("riposte")));
    // Rename keeps both
    let out = s
        .restore(&rec.id, &RestoreTarget::Original, ConflictPolicy::Rename)
        .unwrap();
    assert_eq!(out, PathBuf::from("/home/alice/a.restored"));
    assert_eq!(
        fs::read(e.root.join("home/alice/a.restored")).unwrap(),
        b"payload-a"
    );
    assert_eq!(
        fs::read(e.root.join("home/alice/a")).unwrap(),
        b"new content"
    );

    // new path, then Replace
    let rec = s.quarantine(&req("/home/alice/a")).unwrap();
    write(&e, "/tmp/x/b", b"old");
    let out = s
        .restore(
            &rec.id,
            &RestoreTarget::Path("/tmp/x/b".into()),
            ConflictPolicy::Replace,
        )
        .unwrap();
    assert_eq!(out, PathBuf::from("/tmp/x/b"));
    assert_eq!(fs::read(e.root.join("tmp/x/b")).unwrap(), b"new content");
    // missing parent directory: clear error, entry kept
    let rec = s.quarantine(&req("/home/alice/a.restored")).unwrap();
    let err = s
        .restore(
            &rec.id,
            &RestoreTarget::Path("/nope/dir/x".into()),
            ConflictPolicy::Refuse,
        )
        .unwrap_err();
    assert!(
        matches!(err, QuarantineError::Host(HostError::NotFound { .. })),
        "{err}"
    );
    assert_eq!(s.list().unwrap().entries.len(), 1);
    s.delete(&rec.id).unwrap();
    assert!(s.list().unwrap().entries.is_empty());
    assert!(matches!(
        s.delete(&rec.id),
        Err(QuarantineError::NoSuchEntry(_))
    ));
}

#[test]
fn protected_objects_are_refused() {
    let e = env();
    write(&e, "/boot/vmlinuz-6.1", b"kernel");
    write(&e, "/usr/bin/sh", b"shell");
    write(&e, "/lib/x86_64-linux-gnu/libc.so.6", b"libc");
    std::os::unix::fs::symlink("usr/bin", e.root.join("bin")).unwrap();
    let s = store(&e, cfg());
    for p in [
        "/boot/vmlinuz-6.1",
        "/usr/bin/sh",
        "/lib/x86_64-linux-gnu/libc.so.6",
    ] {
        let err = s.quarantine(&req(p)).unwrap_err();
        assert!(
            matches!(err, QuarantineError::Protected { .. }),
            "{p}: {err}"
        );
        assert!(err.to_string().contains("protected"));
    }
    // The same files named unusually: still the protected files.
    for p in [
        "//boot/vmlinuz-6.1",
        "/./lib/x86_64-linux-gnu/libc.so.6",
        "/usr//bin/./sh",
    ] {
        let err = s.quarantine(&req(p)).unwrap_err();
        assert!(
            matches!(err, QuarantineError::Protected { .. }),
            "{p}: {err}"
        );
    }
    assert!(e.root.join("lib/x86_64-linux-gnu/libc.so.6").exists());
    // identity-based: /usr/bin/dash hard-linked to sh
    fs::hard_link(e.root.join("usr/bin/sh"), e.root.join("usr/bin/sh2")).unwrap();
    let err = s.quarantine(&req("/usr/bin/sh2")).unwrap_err();
    assert!(matches!(err, QuarantineError::Protected { .. }), "{err}");
    assert!(e.root.join("boot/vmlinuz-6.1").exists() && e.root.join("usr/bin/sh").exists());
    // the agent's own data directory (mapped into the device root)
    let e2 = env();
    let data_in_root = e2.root.join("var/lib/riposte");
    fs::create_dir_all(&data_in_root).unwrap();
    let (s2, _) = QuarantineStore::open(&data_in_root, HostRoot::new(&e2.root), cfg()).unwrap();
    let err = s2
        .quarantine(&req("/var/lib/riposte/quarantine.key"))
        .unwrap_err();
    assert!(matches!(err, QuarantineError::Protected { .. }), "{err}");
    // configurable list
    let c = QuarantineConfig {
        protected: vec!["/home/alice/keep*".into()],
        ..cfg()
    };
    write(&e, "/home/alice/keepme", b"x");
    let s3 = QuarantineStore::open(e.data.join("other"), HostRoot::new(&e.root), c)
        .unwrap()
        .0;
    assert!(matches!(
        s3.quarantine(&req("/home/alice/keepme")),
        Err(QuarantineError::Protected { .. })
    ));
}

#[test]
fn bad_input_gets_clear_errors_and_loses_nothing() {
    let e = env();
    let s = store(&e, cfg());
    let err = s.quarantine(&req("/home/alice/missing")).unwrap_err();
    assert!(
        matches!(err, QuarantineError::Host(HostError::NotFound { .. })),
        "{err}"
    );
    let err = s.quarantine(&req("/home/alice")).unwrap_err();
    assert!(
        matches!(
            err,
            QuarantineError::Host(HostError::NotRegularFile {
                kind: "directory",
                ..
            })
        ),
        "{err}"
    );
    fs::create_dir_all(e.root.join("dev")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        e.root.join("dev/null"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    let err = s.quarantine(&req("/dev/null")).unwrap_err();
    assert!(
        matches!(
            err,
            QuarantineError::Host(HostError::NotRegularFile {
                kind: "character device",
                ..
            })
        ),
        "{err}"
    );
    rustix::fs::mknodat(
        rustix::fs::CWD,
        e.root.join("home/alice/fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let err = s.quarantine(&req("/home/alice/fifo")).unwrap_err();
    assert!(
        matches!(
            err,
            QuarantineError::Host(HostError::NotRegularFile { kind: "fifo", .. })
        ),
        "{err}"
    );
    write(&e, "/etc/passwd", b"root:x:0:0");
    let err = s
        .quarantine(&req("/home/alice/../../etc/passwd"))
        .unwrap_err();
    assert!(
        matches!(err, QuarantineError::Host(HostError::InvalidPath { .. })),
        "{err}"
    );
    assert!(err.to_string().contains(".."));
    let err = s.quarantine(&req("home/alice/x")).unwrap_err();
    assert!(
        matches!(err, QuarantineError::Host(HostError::InvalidPath { .. })),
        "{err}"
    );
    // symlink as the object and as a directory component
    std::os::unix::fs::symlink(e.root.join("etc/passwd"), e.root.join("home/alice/link")).unwrap();
    let err = s.quarantine(&req("/home/alice/link")).unwrap_err();
    assert!(
        matches!(err, QuarantineError::Host(HostError::SymlinkInPath { .. })),
        "{err}"
    );
    std::os::unix::fs::symlink(e.root.join("etc"), e.root.join("home/alice/etcdir")).unwrap();
    let err = s.quarantine(&req("/home/alice/etcdir/passwd")).unwrap_err();
    assert!(
        matches!(err, QuarantineError::Host(HostError::SymlinkInPath { .. })),
        "{err}"
    );
    assert_eq!(fs::read(e.root.join("etc/passwd")).unwrap(), b"root:x:0:0");
    assert!(s.list().unwrap().entries.is_empty());
    assert_eq!(fs::read_dir(e.data.join("objects")).unwrap().count(), 0);
    assert_eq!(fs::read_dir(e.data.join("journal")).unwrap().count(), 0);
}

#[test]
fn limits_are_distinct_errors_and_lose_nothing() {
    let e = env();
    let big = write(&e, "/home/alice/big", &vec![1u8; 5000]);
    // object size
    let s = store(
        &e,
        QuarantineConfig {
            max_object_size: 4096,
            ..cfg()
        },
    );
    let err = s.quarantine(&req("/home/alice/big")).unwrap_err();
    assert!(
        matches!(
            err,
            QuarantineError::TooLarge {
                size: 5000,
                limit: 4096,
                ..
            }
        ),
        "{err}"
    );
    // store size
    write(&e, "/home/alice/s1", &[2u8; 3000]);
    let e2 = env();
    let s = QuarantineStore::open(
        &e2.data,
        HostRoot::new(&e.root),
        QuarantineConfig {
            max_store_size: 7000,
            ..cfg()
        },
    )
    .unwrap()
    .0;
    s.quarantine(&req("/home/alice/s1")).unwrap();
    let err = s.quarantine(&req("/home/alice/big")).unwrap_err();
    assert!(matches!(err, QuarantineError::StoreFull { .. }), "{err}");
    // disk full: a reserve larger than the free space
    let e3 = env();
    let s = QuarantineStore::open(
        &e3.data,
        HostRoot::new(&e.root),
        QuarantineConfig {
            min_free_bytes: u64::MAX / 4,
            ..cfg()
        },
    )
    .unwrap()
    .0;
    let err = s.quarantine(&req("/home/alice/big")).unwrap_err();
    assert!(matches!(err, QuarantineError::LowDiskSpace { .. }), "{err}");
    assert!(err.to_string().contains("free disk space"));
    assert_eq!(fs::read(&big).unwrap(), vec![1u8; 5000]);
}

#[test]
fn real_full_disk_on_tiny_tmpfs() {
    // Only where mounting works (root with CAP_SYS_ADMIN); otherwise the
    // threshold test above covers the logic.
    let e = env();
    let mnt = e.data.with_file_name("tiny");
    fs::create_dir_all(&mnt).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&mnt)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("skipping: cannot mount tmpfs here");
        return;
    }
    struct Umount(PathBuf);
    impl Drop for Umount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _u = Umount(mnt.clone());
    let data: Vec<u8> = (0..600_000u32).map(|i| (i * 7 % 255) as u8).collect();
    let p = write(&e, "/home/alice/large", &data);
    let s = QuarantineStore::open(&mnt, HostRoot::new(&e.root), cfg())
        .unwrap()
        .0;
    let err = s.quarantine(&req("/home/alice/large")).unwrap_err();
    assert!(matches!(err, QuarantineError::LowDiskSpace { .. }), "{err}");
    // even past the pre-check, ENOSPC during the copy rolls back cleanly
    assert_eq!(fs::read(&p).unwrap(), data);
    assert_eq!(fs::read_dir(mnt.join("objects")).unwrap().count(), 0);
}

#[test]
fn symlink_swap_before_delete_deletes_nothing() {
    let e = env();
    write(&e, "/home/alice/evil", b"malware body");
    let victim = write(&e, "/etc/important", b"precious");
    let root = e.root.clone();
    let hook: riposte_quarantine::PreDeleteHook = Arc::new(move |p: &Path| {
        let hp = root.join(p.strip_prefix("/").unwrap());
        fs::remove_file(&hp).unwrap();
        std::os::unix::fs::symlink(root.join("etc/important"), &hp).unwrap();
    });
    let s = store(
        &e,
        QuarantineConfig {
            pre_delete_hook: Some(hook),
            ..cfg()
        },
    );
    let err = s.quarantine(&req("/home/alice/evil")).unwrap_err();
    let QuarantineError::ChangedBeforeDelete { id, source } = &err else {
        panic!("{err}")
    };
    assert!(matches!(source, HostError::Changed { .. }));
    assert_eq!(
        fs::read(&victim).unwrap(),
        b"precious",
        "the other file is never deleted"
    );
    assert!(fs::symlink_metadata(e.root.join("home/alice/evil"))
        .unwrap()
        .file_type()
        .is_symlink());
    // the copy of the detected object is kept as evidence
    let mut out = Vec::new();
    s.extract(id, &mut out).unwrap();
    assert_eq!(out, b"malware body");
}

#[test]
fn modified_between_copy_and_delete_deletes_nothing() {
    let e = env();
    let p = write(&e, "/home/alice/evil", b"malware body");
    let hp = p.clone();
    // Same inode and, in the end, the same content: only size/mtime/ctime show
    // that someone wrote to it after the copy.
    let hook: riposte_quarantine::PreDeleteHook = Arc::new(move |_: &Path| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        fs::write(&hp, b"something else entirely").unwrap();
        fs::write(&hp, b"malware body").unwrap();
    });
    let ino = fs::metadata(&p).unwrap().ino();
    let s = store(
        &e,
        QuarantineConfig {
            pre_delete_hook: Some(hook),
            ..cfg()
        },
    );
    let err = s.quarantine(&req("/home/alice/evil")).unwrap_err();
    let QuarantineError::ChangedBeforeDelete { id, source } = &err else {
        panic!("{err}")
    };
    assert!(
        source
            .to_string()
            .contains("changed while being quarantined"),
        "{source}"
    );
    assert_eq!(fs::metadata(&p).unwrap().ino(), ino);
    assert_eq!(fs::read(&p).unwrap(), b"malware body", "not deleted");
    let mut out = Vec::new();
    s.extract(id, &mut out).unwrap();
    assert_eq!(out, b"malware body");
    assert_eq!(fs::read_dir(e.data.join("journal")).unwrap().count(), 0);
}

#[test]
fn swap_between_detection_and_quarantine_is_refused() {
    let e = env();
    let host = HostRoot::new(&e.root);
    write(&e, "/home/alice/evil", b"malware body");
    let victim = write(&e, "/home/alice/other", b"other file");
    let ident = host.identify(Path::new("/home/alice/evil")).unwrap();
    let s = store(&e, cfg());
    // swapped for another regular file (rename over it)
    fs::copy(&victim, e.root.join("home/alice/tmp")).unwrap();
    fs::rename(
        e.root.join("home/alice/tmp"),
        e.root.join("home/alice/evil"),
    )
    .unwrap();
    let mut r = req("/home/alice/evil");
    r.expected = Some(ident);
    let err = s.quarantine(&r).unwrap_err();
    assert!(
        matches!(err, QuarantineError::Host(HostError::Changed { .. })),
        "{err}"
    );
    assert_eq!(
        fs::read(e.root.join("home/alice/evil")).unwrap(),
        b"other file"
    );
    assert_eq!(fs::read(&victim).unwrap(), b"other file");
    assert!(s.list().unwrap().entries.is_empty());
    // content modified in place (same inode)
    write(&e, "/home/alice/m", b"v1");
    let ident = host.identify(Path::new("/home/alice/m")).unwrap();
    fs::OpenOptions::new()
        .append(true)
        .open(e.root.join("home/alice/m"))
        .unwrap();
    fs::write(e.root.join("home/alice/m"), b"v2").unwrap();
    let mut r = req("/home/alice/m");
    r.expected = Some(ident);
    assert!(matches!(
        s.quarantine(&r),
        Err(QuarantineError::Host(HostError::Changed { .. }))
    ));
    assert_eq!(fs::read(e.root.join("home/alice/m")).unwrap(), b"v2");
    assert!(s.list().unwrap().entries.is_empty());
    assert_eq!(fs::read_dir(e.data.join("objects")).unwrap().count(), 0);
}

#[test]
fn tampered_object_is_detected_and_restore_refused() {
    let e = env();
    write(&e, "/home/alice/t", &[9u8; 100_000]);
    let s = store(&e, cfg());
    let rec = s.quarantine(&req("/home/alice/t")).unwrap();
    let obj = e.data.join("objects").join(format!("{}.obj", rec.id));
    let mut d = fs::read(&obj).unwrap();
    d[5000] ^= 0x40;
    fs::write(&obj, d).unwrap();
    let err = s
        .restore(&rec.id, &RestoreTarget::Original, ConflictPolicy::Refuse)
        .unwrap_err();
    assert!(matches!(err, QuarantineError::Corrupt { .. }), "{err}");
    assert!(
        !e.root.join("home/alice/t").exists(),
        "nothing half-restored"
    );
    assert!(
        fs::read_dir(e.root.join("home/alice"))
            .unwrap()
            .next()
            .is_none(),
        "temporary removed"
    );
    assert_eq!(s.list().unwrap().entries.len(), 1);
}

#[test]
fn recovery_rolls_back_and_finishes() {
    let e = env();
    let s = store(&e, cfg());
    write(&e, "/home/alice/r1", b"one");
    // a quarantine that finished everything but deleting and the intent
    let rec = s.quarantine(&req("/home/alice/r1")).unwrap();
    write(&e, "/home/alice/r1", b"ONE"); // another object at the path: must NOT be deleted
    fs::write(
        e.data.join("journal").join(format!("{}.json", rec.id)),
        format!(
            r#"{{"Quarantine":{{"id":"{}","path":"/home/alice/r1"}}}}"#,
            rec.id
        ),
    )
    .unwrap();
    // an interrupted one: intent + partial object, no record
    let id2 = "0123456789abcdef0123456789abcdef";
    fs::write(
        e.data.join("journal").join(format!("{id2}.json")),
        b"{\"Quarant",
    )
    .unwrap();
    fs::write(
        e.data.join("objects").join(format!("{id2}.obj")),
        b"partial",
    )
    .unwrap();
    drop(s);
    let (s, rep) = QuarantineStore::open(&e.data, HostRoot::new(&e.root), cfg()).unwrap();
    assert_eq!(rep.completed, vec![rec.id.clone()]);
    assert_eq!(rep.rolled_back, vec![id2.to_string()]);
    assert!(
        e.root.join("home/alice/r1").exists(),
        "a different object is not deleted by recovery"
    );
    // Said apart, for the response resumed after it to report the deletion not done.
    assert_eq!(rep.originals_kept.len(), 1, "{rep:?}");
    assert_eq!(rep.originals_kept[0].0, rec.id);
    assert!(rep.originals_kept[0].1.contains("changed"), "{rep:?}");
    assert!(!e.data.join("objects").join(format!("{id2}.obj")).exists());
    assert_eq!(fs::read_dir(e.data.join("journal")).unwrap().count(), 0);
    assert_eq!(s.list().unwrap().entries.len(), 1);
}

/// A restore with renames that a stop cut short after its file landed beside the
/// target (`NAME.restored`) is finished by recovery, not taken for rolled back.
#[test]
fn recovery_finds_a_renamed_restore_beside_its_target() {
    let e = env();
    let s = store(&e, cfg());
    write(&e, "/home/alice/rn", b"restored content");
    let rec = s.quarantine(&req("/home/alice/rn")).unwrap();
    write(&e, "/home/alice/rn", b"what took its place");
    write(&e, "/home/alice/rn.restored", b"an earlier file");
    // The state the stop left: the object at the second free name, entry and intent
    // still there.
    write(&e, "/home/alice/rn.restored-2", b"restored content");
    let intent = |renames: bool| {
        format!(
            r#"{{"Restore":{{"id":"{}","target":"/home/alice/rn","tmp_name":".riposte-restore-{}.tmp","renames":{renames}}}}}"#,
            rec.id, rec.id
        )
    };
    let journal = e.data.join("journal").join(format!("{}.json", rec.id));
    // Without renames only the target counts: the entry stays.
    fs::write(&journal, intent(false)).unwrap();
    drop(s);
    let (s, rep) = QuarantineStore::open(&e.data, HostRoot::new(&e.root), cfg()).unwrap();
    assert_eq!(rep.restores_cleaned, vec![rec.id.clone()]);
    assert_eq!(s.list().unwrap().entries.len(), 1);
    fs::write(&journal, intent(true)).unwrap();
    drop(s);
    let (s, rep) = QuarantineStore::open(&e.data, HostRoot::new(&e.root), cfg()).unwrap();
    assert_eq!(rep.restores_cleaned, vec![rec.id.clone()]);
    assert!(s.list().unwrap().entries.is_empty(), "finished: {rep:?}");
    assert_eq!(
        fs::read(e.root.join("home/alice/rn")).unwrap(),
        b"what took its place"
    );
}

#[test]
fn recovery_keeps_the_object_when_the_record_is_unreadable() {
    let e = env();
    let s = store(&e, cfg());
    write(&e, "/home/alice/r", b"only copy");
    let rec = s.quarantine(&req("/home/alice/r")).unwrap();
    assert!(!e.root.join("home/alice/r").exists());
    drop(s);
    // Crash between deleting the original and removing the intent, and the
    // record damaged since: the object is the only copy left.
    let intent = e.data.join("journal").join(format!("{}.json", rec.id));
    fs::write(
        &intent,
        format!(
            r#"{{"Quarantine":{{"id":"{}","path":"/home/alice/r"}}}}"#,
            rec.id
        ),
    )
    .unwrap();
    let record = e.data.join("records").join(format!("{}.json", rec.id));
    fs::write(&record, b"{\"format\": 1, \"id\": ").unwrap();
    let object = e.data.join("objects").join(format!("{}.obj", rec.id));
    let (store, rep) = QuarantineStore::open(&e.data, HostRoot::new(&e.root), cfg()).unwrap();
    assert!(rep.rolled_back.is_empty(), "{rep:?}");
    assert!(object.exists(), "the encrypted object is kept");
    assert!(record.exists(), "the damaged record is kept");
    assert!(intent.exists(), "the intent is kept for the next start");
    assert!(rep.warnings.iter().any(|w| w.contains(&rec.id)), "{rep:?}");
    // Listed as damaged, and deleted when asked: the one thing left to do with it.
    let listing = store.list().unwrap();
    assert_eq!(listing.unreadable.len(), 1, "{listing:?}");
    store.delete(&rec.id).unwrap();
    assert!(!record.exists() && !object.exists());
    assert!(
        !intent.exists(),
        "nothing is left for the next start to roll back"
    );
    assert!(store.list().unwrap().unreadable.is_empty());
    assert!(matches!(
        store.delete(&rec.id),
        Err(QuarantineError::NoSuchEntry(_))
    ));
}

#[test]
fn recovery_keeps_an_object_whose_record_cannot_be_checked() {
    let e = env();
    let s = store(&e, cfg());
    write(&e, "/home/alice/o", b"data");
    let rec = s.quarantine(&req("/home/alice/o")).unwrap();
    drop(s);
    // A record path that cannot be resolved (a symlink loop): stat fails with
    // ELOOP, which says nothing about whether a record exists.
    let record = e.data.join("records").join(format!("{}.json", rec.id));
    fs::remove_file(&record).unwrap();
    std::os::unix::fs::symlink(&record, &record).unwrap();
    let object = e.data.join("objects").join(format!("{}.obj", rec.id));
    let (_s, rep) = QuarantineStore::open(&e.data, HostRoot::new(&e.root), cfg()).unwrap();
    assert!(object.exists(), "{rep:?}");
    assert!(
        rep.warnings.iter().any(|w| w.contains("kept object")),
        "{rep:?}"
    );
}

#[test]
fn intents_are_owner_only_and_an_open_store_tightens_its_directories() {
    let e = env();
    // A store directory made readable by all (by hand or an older version).
    for sub in ["", "objects", "records", "journal"] {
        fs::create_dir_all(e.data.join(sub)).unwrap();
        fs::set_permissions(e.data.join(sub), fs::Permissions::from_mode(0o755)).unwrap();
    }
    write(&e, "/home/alice/evil", b"payload");
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (journal, modes) = (e.data.join("journal"), seen.clone());
    let hook: riposte_quarantine::PreDeleteHook = Arc::new(move |_: &Path| {
        for f in fs::read_dir(&journal).unwrap() {
            let mode = f.unwrap().metadata().unwrap().permissions().mode();
            modes.lock().unwrap().push(mode & 0o777);
        }
    });
    let s = store(
        &e,
        QuarantineConfig {
            pre_delete_hook: Some(hook),
            ..cfg()
        },
    );
    for sub in ["", "objects", "records", "journal"] {
        let mode = fs::metadata(e.data.join(sub)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "{sub:?}");
    }
    s.quarantine(&req("/home/alice/evil")).unwrap();
    assert_eq!(*seen.lock().unwrap(), [0o600], "the intent while it exists");
}

/// Files of the store left readable by all (copied in by hand, or by an older version)
/// are restricted to their owner when it opens, through no symlink.
#[test]
fn an_open_store_tightens_its_files() {
    let e = env();
    write(&e, "/home/alice/evil", b"payload");
    let s = store(&e, cfg());
    s.quarantine(&req("/home/alice/evil")).unwrap();
    drop(s);
    let mut loosened = Vec::new();
    for sub in ["objects", "records"] {
        for f in fs::read_dir(e.data.join(sub)).unwrap() {
            let p = f.unwrap().path();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
            loosened.push(p);
        }
    }
    assert_eq!(loosened.len(), 2, "{loosened:?}");
    let key = e.data.join("quarantine.key");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o640)).unwrap();
    loosened.push(key);
    // A link planted among the records: what it points to keeps its mode.
    let outside = e.root.join("outside.txt");
    fs::write(&outside, b"not the store's").unwrap();
    fs::set_permissions(&outside, fs::Permissions::from_mode(0o644)).unwrap();
    std::os::unix::fs::symlink(&outside, e.data.join("records/planted.json")).unwrap();
    let s = store(&e, cfg());
    for p in &loosened {
        let mode = fs::metadata(p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", p.display());
    }
    let mode = fs::metadata(&outside).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o644);
    // The store still reads its entry.
    assert_eq!(s.list().unwrap().entries.len(), 1);
    drop(s);
    // A folder of the store that is a link is refused, and what it points to untouched.
    let elsewhere = e.root.join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    fs::set_permissions(&elsewhere, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(elsewhere.join("f"), b"x").unwrap();
    fs::set_permissions(elsewhere.join("f"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::rename(e.data.join("journal"), e.root.join("journal-aside")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, e.data.join("journal")).unwrap();
    let Err(err) = QuarantineStore::open(&e.data, HostRoot::new(&e.root), cfg()) else {
        panic!("opened through a linked folder");
    };
    assert!(err.to_string().contains("symbolic link"), "{err}");
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&elsewhere), 0o755);
    assert_eq!(mode(&elsewhere.join("f")), 0o644);
}

/// Every file under `dir`, as paths relative to it.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                todo.push(e.path());
            } else {
                out.push(e.path().strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn restore_refuses_protected_targets_and_writes_nothing() {
    let e = env();
    // The store on the device itself, as in production (host root `/`).
    let data = e.root.join("var/lib/riposte/quarantine");
    let mut c = cfg();
    // Protected under a name that goes through a link: the file is reached
    // as /opt/real/agentd.
    c.protected.push("/opt/link/agentd".into());
    fs::create_dir_all(e.root.join("opt/real")).unwrap();
    std::os::unix::fs::symlink("real", e.root.join("opt/link")).unwrap();
    fs::create_dir_all(e.root.join("boot")).unwrap();
    fs::create_dir_all(e.root.join("usr/bin")).unwrap();
    let s = QuarantineStore::open(&data, HostRoot::new(&e.root), c)
        .unwrap()
        .0;
    write(&e, "/home/alice/a", b"payload");
    let rec = s.quarantine(&req("/home/alice/a")).unwrap();
    let store_before = files_under(&data);
    let key_before = fs::read(data.join("quarantine.key")).unwrap();

    for (target, why) in [
        ("/boot/vmlinuz", "protected pattern \"/boot/\""),
        ("/usr/bin/sh", "protected pattern \"/usr/bin/sh\""),
        (
            "/opt/real/agentd",
            "same file as protected \"/opt/link/agentd\"",
        ),
        (
            "/var/lib/riposte/quarantine/quarantine.key",
            "inside the quarantine store",
        ),
        (
            "/var/lib/riposte/quarantine/records/x.json",
            "inside the quarantine store",
        ),
    ] {
        for policy in [ConflictPolicy::Refuse, ConflictPolicy::Replace] {
            let err = s
                .restore(&rec.id, &RestoreTarget::Path(target.into()), policy)
                .unwrap_err();
            assert!(
                matches!(&err, QuarantineError::ProtectedTarget { path, reason }
                    if path == Path::new(target) && reason.contains(why)),
                "{target}: {err}"
            );
        }
    }
    assert!(files_under(&e.root.join("boot")).is_empty());
    assert!(files_under(&e.root.join("usr/bin")).is_empty());
    assert!(files_under(&e.root.join("opt/real")).is_empty());
    assert_eq!(
        files_under(&data),
        store_before,
        "nothing written to the store"
    );
    assert_eq!(fs::read(data.join("quarantine.key")).unwrap(), key_before);
    assert_eq!(s.list().unwrap().entries, vec![rec.clone()], "entry kept");
    // A target that is allowed still works.
    s.restore(&rec.id, &RestoreTarget::Original, ConflictPolicy::Refuse)
        .unwrap();
    assert_eq!(fs::read(e.root.join("home/alice/a")).unwrap(), b"payload");
}

/// A file inside a protected directory is not quarantined when its path names the
/// directory another way: the pattern goes through a link, the file's path does not.
#[test]
fn a_file_in_a_protected_directory_under_another_name_is_not_quarantined() {
    let e = env();
    let mut c = cfg();
    c.protected.push("/opt/link/".into());
    fs::create_dir_all(e.root.join("opt/real/sub")).unwrap();
    std::os::unix::fs::symlink("real", e.root.join("opt/link")).unwrap();
    let s = store(&e, c);
    write(&e, "/opt/real/sub/tool", b"the agent's own tool");
    let err = s.quarantine(&req("/opt/real/sub/tool")).unwrap_err();
    assert!(
        matches!(&err, QuarantineError::Protected { reason, .. }
            if reason.contains("inside protected directory \"/opt/link/\"")),
        "{err}"
    );
    assert_eq!(
        fs::read(e.root.join("opt/real/sub/tool")).unwrap(),
        b"the agent's own tool"
    );
    assert!(s.list().unwrap().entries.is_empty());
}

/// A protected directory whose name holds a `*` (the agent's data directory can be
/// anywhere) is still compared by identity, like any other protected directory: here
/// it is named through a link, and the restore names the real directory.
#[test]
fn a_protected_directory_named_with_a_star_is_refused_under_another_name() {
    let e = env();
    let mut c = cfg();
    c.protected.push("/opt/data*link/".into());
    fs::create_dir_all(e.root.join("opt/real")).unwrap();
    std::os::unix::fs::symlink("real", e.root.join("opt/data*link")).unwrap();
    let s = store(&e, c);
    write(&e, "/home/alice/a", b"payload");
    let rec = s.quarantine(&req("/home/alice/a")).unwrap();
    let err = s
        .restore(
            &rec.id,
            &RestoreTarget::Path("/opt/real/a".into()),
            ConflictPolicy::Refuse,
        )
        .unwrap_err();
    assert!(
        matches!(&err, QuarantineError::ProtectedTarget { reason, .. }
            if reason.contains("inside protected directory \"/opt/data*link/\"")),
        "{err}"
    );
    assert!(files_under(&e.root.join("opt/real")).is_empty());
    // The `*` is not a wildcard in a directory pattern: a sibling is not protected.
    fs::create_dir_all(e.root.join("opt/dataXlink")).unwrap();
    s.restore(
        &rec.id,
        &RestoreTarget::Path("/opt/dataXlink/a".into()),
        ConflictPolicy::Refuse,
    )
    .unwrap();
    assert_eq!(
        fs::read(e.root.join("opt/dataXlink/a")).unwrap(),
        b"payload"
    );
}

#[test]
fn restored_elsewhere_a_file_keeps_its_owner_only_in_a_directory_of_that_owner() {
    let e = env();
    let s = store(&e, cfg());
    let quarantine = |dev: &str| {
        let p = write(&e, dev, b"* * * * * root /home/alice/x.sh\n");
        std::os::unix::fs::chown(&p, Some(1234), Some(2345)).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o666)).unwrap();
        s.quarantine(&req(dev)).unwrap()
    };
    let owner_and_mode = |dev: &str| {
        let m = fs::metadata(e.root.join(dev.trim_start_matches('/'))).unwrap();
        (m.uid(), m.gid(), m.permissions().mode() & 0o7777)
    };
    // Into a directory only root writes: root's file, writable by root alone.
    let cron = e.root.join("etc/cron.d");
    fs::create_dir_all(&cron).unwrap();
    std::os::unix::fs::chown(&cron, Some(0), Some(0)).unwrap();
    let rec = quarantine("/home/alice/payload");
    s.restore(
        &rec.id,
        &RestoreTarget::Path("/etc/cron.d/job".into()),
        ConflictPolicy::Refuse,
    )
    .unwrap();
    assert_eq!(owner_and_mode("/etc/cron.d/job"), (0, 0, 0o644));
    // Into another directory of the same owner: its owner, still without group and
    // other write.
    let other = e.root.join("home/alice/restored");
    fs::create_dir_all(&other).unwrap();
    std::os::unix::fs::chown(&other, Some(1234), Some(2345)).unwrap();
    let rec = quarantine("/home/alice/payload");
    s.restore(
        &rec.id,
        &RestoreTarget::Path("/home/alice/restored/payload".into()),
        ConflictPolicy::Refuse,
    )
    .unwrap();
    assert_eq!(
        owner_and_mode("/home/alice/restored/payload"),
        (1234, 2345, 0o644)
    );
    // At its own path, whatever the directory: as it was.
    let rec = quarantine("/home/alice/payload");
    s.restore(&rec.id, &RestoreTarget::Original, ConflictPolicy::Refuse)
        .unwrap();
    assert_eq!(owner_and_mode("/home/alice/payload"), (1234, 2345, 0o666));
}

#[test]
fn set_id_bits_are_restored_only_at_the_original_path() {
    let e = env();
    let s = store(&e, cfg());
    let mode = |dev: &str| {
        fs::metadata(e.root.join(dev.trim_start_matches('/')))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    let quarantine = |dev: &str| {
        let p = write(&e, dev, b"a privileged tool");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o6755)).unwrap();
        s.quarantine(&req(dev)).unwrap()
    };

    // Elsewhere: the bits go.
    let rec = quarantine("/home/alice/tool");
    fs::create_dir_all(e.root.join("srv")).unwrap();
    s.restore(
        &rec.id,
        &RestoreTarget::Path("/srv/tool".into()),
        ConflictPolicy::Refuse,
    )
    .unwrap();
    assert_eq!(mode("/srv/tool"), 0o755);

    // Beside the original (Rename on a conflict): another path, the bits go.
    let rec = quarantine("/home/alice/tool");
    write(&e, "/home/alice/tool", b"someone else's file");
    let out = s
        .restore(&rec.id, &RestoreTarget::Original, ConflictPolicy::Rename)
        .unwrap();
    assert_eq!(out, Path::new("/home/alice/tool.restored"));
    assert_eq!(mode("/home/alice/tool.restored"), 0o755);

    // Rename without a conflict lands on the original path: the bits stay.
    fs::remove_file(e.root.join("home/alice/tool")).unwrap();
    let rec = quarantine("/home/alice/tool.restored");
    let out = s
        .restore(&rec.id, &RestoreTarget::Original, ConflictPolicy::Rename)
        .unwrap();
    assert_eq!(out, Path::new("/home/alice/tool.restored"));
    assert_eq!(mode("/home/alice/tool.restored"), 0o6755);

    // The original path named differently is still the original path.
    let rec = quarantine("/home/alice/tool");
    s.restore(
        &rec.id,
        &RestoreTarget::Path("/home/./alice/tool".into()),
        ConflictPolicy::Refuse,
    )
    .unwrap();
    assert_eq!(mode("/home/alice/tool"), 0o6755);
}

#[test]
fn a_damaged_record_is_reported_and_hides_no_other_entry() {
    let e = env();
    let s = store(&e, cfg());
    let mut recs: Vec<_> = ["/home/alice/1", "/home/alice/2", "/home/alice/3"]
        .iter()
        .map(|p| {
            write(&e, p, p.as_bytes());
            s.quarantine(&req(p)).unwrap()
        })
        .collect();
    let bad = recs.remove(1);
    fs::write(
        e.data.join("records").join(format!("{}.json", bad.id)),
        b"{\"format\": 1, \"id\": ",
    )
    .unwrap();

    let listing = s.list().unwrap();
    let mut ids: Vec<_> = listing.entries.iter().map(|r| r.id.clone()).collect();
    ids.sort();
    let mut want: Vec<_> = recs.iter().map(|r| r.id.clone()).collect();
    want.sort();
    assert_eq!(ids, want, "both readable entries are listed");
    assert_eq!(listing.unreadable.len(), 1, "{listing:?}");
    assert_eq!(listing.unreadable[0].id, bad.id);
    assert!(
        listing.unreadable[0].reason.contains("damaged"),
        "{:?}",
        listing.unreadable[0]
    );
    // The damaged entry's object is kept, and the others still restore.
    assert!(e
        .data
        .join("objects")
        .join(format!("{}.obj", bad.id))
        .exists());
    s.restore(
        &recs[0].id,
        &RestoreTarget::Original,
        ConflictPolicy::Refuse,
    )
    .unwrap();
    assert_eq!(
        fs::read(e.root.join("home/alice/1")).unwrap(),
        b"/home/alice/1"
    );
}

/// A device path whose last component is `name`'s bytes.
fn odd_path(dir: &str, name: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    Path::new(dir).join(std::ffi::OsStr::from_bytes(name))
}

fn host_of(e: &Env, dev: &Path) -> PathBuf {
    HostRoot::new(&e.root).host_path(dev).unwrap()
}

/// An object whose name is not UTF-8 goes into quarantine, its record keeps the name as
/// `\xHH` text, and a restore puts it back under its exact bytes, also after a reopen.
#[test]
fn a_name_that_is_not_utf8_is_restored_under_its_own_bytes() {
    let e = env();
    let dev = odd_path("/home/alice", b"evil\xff\xfe.bin");
    let original = host_of(&e, &dev);
    fs::write(&original, b"payload").unwrap();
    // Where a lossy copy of the name would lead: another file, left alone throughout.
    let lookalike = e.root.join("home/alice/evil\u{fffd}\u{fffd}.bin");
    fs::write(&lookalike, b"innocent").unwrap();
    let s = store(&e, cfg());
    let rec = s
        .quarantine(&QuarantineRequest {
            path: dev.clone(),
            ..req("/")
        })
        .unwrap();
    assert!(!original.exists(), "original must be deleted");
    assert_eq!(rec.original_path, dev);
    let json = fs::read_to_string(e.data.join("records").join(format!("{}.json", rec.id))).unwrap();
    assert!(
        json.contains(r#""original_path": "/home/alice/evil\\xff\\xfe.bin""#),
        "{json}"
    );
    drop(s);

    let s = store(&e, cfg());
    assert_eq!(s.list().unwrap().entries, vec![rec.clone()]);
    let out = s
        .restore(&rec.id, &RestoreTarget::Original, ConflictPolicy::Refuse)
        .unwrap();
    assert_eq!(out, dev);
    assert_eq!(fs::read(&original).unwrap(), b"payload");
    assert_eq!(fs::read(&lookalike).unwrap(), b"innocent");
}

/// A quarantine of such a name cut short between the commit and the deletion is
/// finished by recovery: the intent, too, keeps the name's bytes.
#[test]
fn recovery_finishes_the_quarantine_of_a_name_that_is_not_utf8() {
    let e = env();
    let dev = odd_path("/home/alice", b"crash\xff");
    let original = host_of(&e, &dev);
    fs::write(&original, b"payload").unwrap();
    let crash = QuarantineConfig {
        pre_delete_hook: Some(Arc::new(|_: &Path| panic!("simulated crash"))),
        ..cfg()
    };
    let s = store(&e, crash);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        s.quarantine(&QuarantineRequest {
            path: dev.clone(),
            ..req("/")
        })
    }));
    assert!(r.is_err());
    assert!(original.exists());
    drop(s);
    let (s, rep) = QuarantineStore::open(&e.data, HostRoot::new(&e.root), cfg()).unwrap();
    assert_eq!(rep.completed.len(), 1, "{rep:?}");
    assert!(!original.exists(), "recovery deletes the original");
    assert_eq!(s.list().unwrap().entries[0].original_path, dev);
}

/// The protected list still protects names that are not UTF-8: inside a protected
/// directory, under a pattern that spells the bytes as `\xHH`, and as restore targets.
#[test]
fn protected_paths_with_names_that_are_not_utf8_are_refused() {
    let e = env();
    let c = QuarantineConfig {
        protected: vec!["/opt/keep/".into(), "/opt/tools/agent\\xff".into()],
        ..cfg()
    };
    let s = store(&e, c);
    let in_dir = odd_path("/opt/keep", b"child\xfe");
    let named = odd_path("/opt/tools", b"agent\xff");
    for dev in [&in_dir, &named] {
        fs::create_dir_all(host_of(&e, dev).parent().unwrap()).unwrap();
        fs::write(host_of(&e, dev), b"needed").unwrap();
        let err = s
            .quarantine(&QuarantineRequest {
                path: dev.clone(),
                ..req("/")
            })
            .unwrap_err();
        assert!(
            matches!(err, QuarantineError::Protected { .. }),
            "{dev:?}: {err}"
        );
        assert!(host_of(&e, dev).exists());
    }
    // Another byte in the same place is another name, and not protected.
    let other = odd_path("/opt/tools", b"agent\xfe");
    fs::write(host_of(&e, &other), b"payload").unwrap();
    let rec = s
        .quarantine(&QuarantineRequest {
            path: other.clone(),
            ..req("/")
        })
        .unwrap();
    fs::remove_file(host_of(&e, &named)).unwrap();
    for target in [&in_dir, &named] {
        let err = s
            .restore(
                &rec.id,
                &RestoreTarget::Path(target.clone()),
                ConflictPolicy::Replace,
            )
            .unwrap_err();
        assert!(
            matches!(err, QuarantineError::ProtectedTarget { .. }),
            "{target:?}: {err}"
        );
    }
    assert!(!host_of(&e, &named).exists(), "nothing written");
    assert_eq!(fs::read(host_of(&e, &in_dir)).unwrap(), b"needed");
}

/// A key lost while the quarantine holds entries is not replaced by a new one, which
/// could open none of them and would seal the next ones with a key a restored backup
/// lacks: the store refuses to open and says to restore the key.
#[test]
fn a_lost_key_is_not_replaced_while_entries_need_it() {
    let e = env();
    let s = store(&e, cfg());
    write(&e, "/home/alice/k", b"keyed");
    s.quarantine(&req("/home/alice/k")).unwrap();
    drop(s);
    let key = e.data.join("quarantine.key");
    let saved = fs::read(&key).unwrap();
    fs::remove_file(&key).unwrap();
    let Err(err) = QuarantineStore::open(&e.data, HostRoot::new(&e.root), cfg()) else {
        panic!("opened without its key");
    };
    let err = err.to_string();
    assert!(
        err.contains("is missing, but the quarantine holds 1 entry"),
        "{err}"
    );
    assert!(err.contains("restore the key from backup"), "{err}");
    assert!(!key.exists(), "no new key was made");
    // With the key back, the entry opens.
    fs::write(&key, &saved).unwrap();
    let (s, _) = QuarantineStore::open(&e.data, HostRoot::new(&e.root), cfg()).unwrap();
    let id = s.list().unwrap().entries[0].id.clone();
    let mut out = Vec::new();
    s.extract(&id, &mut out).unwrap();
    assert_eq!(out, b"keyed");
}
