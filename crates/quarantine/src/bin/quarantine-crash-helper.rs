//! Crash-test helper: quarantines `/files/fNNN` (NNN in 0..COUNT) from the
//! device root ROOT into the store DATA_DIR, recovering first. The crash test
//! kills it with SIGKILL at random instants and starts it again.
//!
//! Usage: quarantine-crash-helper DATA_DIR ROOT COUNT

use std::path::PathBuf;

use riposte_host::HostRoot;
use riposte_quarantine::{QuarantineConfig, QuarantineRequest, QuarantineStore};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: quarantine-crash-helper DATA_DIR ROOT COUNT");
        std::process::exit(2);
    }
    let count: usize = args[3].parse().unwrap_or_else(|_| {
        eprintln!("COUNT must be a number");
        std::process::exit(2)
    });
    let host = HostRoot::new(&args[2]);
    let cfg = QuarantineConfig {
        min_free_bytes: 0,
        ..Default::default()
    };
    let (store, rep) = match QuarantineStore::open(&args[1], host.clone(), cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("open: {e}");
            std::process::exit(1)
        }
    };
    eprintln!("recovered: {rep:?}");
    for i in 0..count {
        let path = PathBuf::from(format!("/files/f{i:03}"));
        if !host.path().join(format!("files/f{i:03}")).exists() {
            continue;
        }
        let req = QuarantineRequest {
            path,
            detection_id: format!("det-{i}"),
            threat_name: "Test.Crash".into(),
            user: "root".into(),
            expected: None,
        };
        if let Err(e) = store.quarantine(&req) {
            eprintln!("f{i:03}: {e}");
            std::process::exit(1);
        }
    }
    println!("done");
}
