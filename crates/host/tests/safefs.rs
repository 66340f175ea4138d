//! Safe open/unlink under a host root: refusals and the swap race.

use std::fs;
use std::path::Path;

use riposte_host::{HostError, HostRoot};

fn setup() -> (tempfile::TempDir, HostRoot) {
    let t = tempfile::tempdir().unwrap();
    fs::create_dir_all(t.path().join("home/u")).unwrap();
    fs::write(t.path().join("home/u/evil"), b"evil").unwrap();
    fs::write(t.path().join("home/u/victim"), b"victim").unwrap();
    let h = HostRoot::new(t.path());
    (t, h)
}

#[test]
fn unlink_of_unchanged_file_works() {
    let (t, h) = setup();
    let id = h.identify(Path::new("/home/u/evil")).unwrap();
    h.safe_unlink(Path::new("/home/u/evil"), &id).unwrap();
    assert!(!t.path().join("home/u/evil").exists());
    assert!(matches!(
        h.safe_unlink(Path::new("/home/u/evil"), &id),
        Err(HostError::NotFound { .. })
    ));
}

#[test]
fn swapped_for_symlink_deletes_nothing() {
    let (t, h) = setup();
    let id = h.identify(Path::new("/home/u/evil")).unwrap();
    fs::remove_file(t.path().join("home/u/evil")).unwrap();
    std::os::unix::fs::symlink(t.path().join("home/u/victim"), t.path().join("home/u/evil"))
        .unwrap();
    let e = h.safe_unlink(Path::new("/home/u/evil"), &id).unwrap_err();
    assert!(matches!(e, HostError::Changed { .. }), "{e}");
    assert!(e.to_string().contains("nothing was deleted"));
    assert_eq!(fs::read(t.path().join("home/u/victim")).unwrap(), b"victim");
    assert!(fs::symlink_metadata(t.path().join("home/u/evil"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn parent_swapped_for_symlink_deletes_nothing() {
    let (t, h) = setup();
    fs::create_dir_all(t.path().join("other/u")).unwrap();
    fs::write(t.path().join("other/u/evil"), b"evil").unwrap(); // same content elsewhere
    let id = h.identify(Path::new("/home/u/evil")).unwrap();
    fs::rename(t.path().join("home"), t.path().join("home.old")).unwrap();
    std::os::unix::fs::symlink(t.path().join("other"), t.path().join("home")).unwrap();
    let e = h.safe_unlink(Path::new("/home/u/evil"), &id).unwrap_err();
    assert!(matches!(e, HostError::Changed { .. }), "{e}");
    assert!(t.path().join("other/u/evil").exists());
}

#[test]
fn replaced_or_modified_file_deletes_nothing() {
    let (t, h) = setup();
    let id = h.identify(Path::new("/home/u/evil")).unwrap();
    fs::copy(t.path().join("home/u/victim"), t.path().join("home/u/tmp")).unwrap();
    fs::rename(t.path().join("home/u/tmp"), t.path().join("home/u/evil")).unwrap();
    assert!(matches!(
        h.safe_unlink(Path::new("/home/u/evil"), &id),
        Err(HostError::Changed { .. })
    ));
    assert!(t.path().join("home/u/evil").exists());
    let id = h.identify(Path::new("/home/u/victim")).unwrap();
    fs::write(t.path().join("home/u/victim"), b"victim2").unwrap();
    assert!(matches!(
        h.safe_unlink(Path::new("/home/u/victim"), &id),
        Err(HostError::Changed { .. })
    ));
    assert!(t.path().join("home/u/victim").exists());
}

#[test]
fn refusals() {
    let (t, h) = setup();
    assert!(matches!(
        h.open_regular(Path::new("/home/u")),
        Err(HostError::NotRegularFile {
            kind: "directory",
            ..
        })
    ));
    assert!(matches!(
        h.open_regular(Path::new("/home/u/../u/evil")),
        Err(HostError::InvalidPath { .. })
    ));
    assert!(matches!(
        h.open_regular(Path::new("relative")),
        Err(HostError::InvalidPath { .. })
    ));
    assert!(matches!(
        h.open_regular(Path::new("/")),
        Err(HostError::InvalidPath { .. })
    ));
    assert!(matches!(
        h.open_regular(Path::new("/home/u/evil/x")),
        Err(HostError::NotADirectory { .. })
    ));
    assert!(matches!(
        h.open_regular(Path::new("/nope")),
        Err(HostError::NotFound { .. })
    ));
    // A missing folder on the way is named as such, not taken for a removed object.
    let e = h.open_regular(Path::new("/home/missing/evil")).unwrap_err();
    assert!(
        matches!(&e, HostError::NotFound { missing_folder: Some(f), .. } if f == "missing"),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "\"/home/missing/evil\": its folder \"missing\" does not exist"
    );
    assert!(h
        .open_regular(Path::new("/home/u/gone"))
        .unwrap_err()
        .to_string()
        .contains("may already have been removed"));
    std::os::unix::fs::symlink("u", t.path().join("home/link")).unwrap();
    let e = h.open_regular(Path::new("/home/link/evil")).unwrap_err();
    assert!(
        matches!(&e, HostError::SymlinkInPath { component, .. } if component == "link"),
        "{e}"
    );
}

#[test]
fn written_since_the_copy_deletes_nothing_even_with_the_same_content() {
    let (t, h) = setup();
    let opened = h.open_regular(Path::new("/home/u/evil")).unwrap();
    let copied = opened.meta.stamp();
    let id = opened.identity().unwrap();
    drop(opened);
    std::thread::sleep(std::time::Duration::from_millis(50));
    fs::write(t.path().join("home/u/evil"), b"evil, appended").unwrap();
    fs::write(t.path().join("home/u/evil"), b"evil").unwrap();
    let e = h
        .safe_unlink_since(Path::new("/home/u/evil"), &id, Some(&copied))
        .unwrap_err();
    assert!(matches!(e, HostError::Changed { .. }), "{e}");
    assert!(
        e.to_string().contains("changed while being quarantined"),
        "{e}"
    );
    assert_eq!(fs::read(t.path().join("home/u/evil")).unwrap(), b"evil");
    // Unchanged since the (new) copy: deleted.
    let opened = h.open_regular(Path::new("/home/u/evil")).unwrap();
    let copied = opened.meta.stamp();
    let id = opened.identity().unwrap();
    drop(opened);
    h.safe_unlink_since(Path::new("/home/u/evil"), &id, Some(&copied))
        .unwrap();
    assert!(!t.path().join("home/u/evil").exists());
}

/// A path ending with `/` names a directory: it is refused rather than taken for the
/// file of that name (which a restore `--to dir/` would have written).
#[test]
fn a_trailing_slash_names_a_directory_not_the_file() {
    let (t, h) = setup();
    for path in [
        "/home/u/evil/",
        "/home/u/new/",
        "/home/u/evil/.",
        "/home/u/evil//",
    ] {
        let Err(e) = h.open_regular(Path::new(path)) else {
            panic!("{path}: opened");
        };
        assert!(matches!(e, HostError::InvalidPath { .. }), "{path}: {e}");
        assert!(e.to_string().contains("names a directory"), "{path}: {e}");
        assert!(h.open_parent(Path::new(path)).is_err(), "{path}");
    }
    assert_eq!(fs::read(t.path().join("home/u/evil")).unwrap(), b"evil");
    assert!(h.open_regular(Path::new("/home/u/evil")).is_ok());
}
