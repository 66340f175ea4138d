//! Quarantine latency and throughput against `cp` + `sync` + `rm`.
//!
//! `cargo bench -p riposte-quarantine` (set RIPOSTE_BENCH_DIR to choose the
//! file system; default: the system temp dir). Prints a table with p50/p99
//! latency, files/second and the ratio to the shell baseline.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use riposte_host::HostRoot;
use riposte_quarantine::{QuarantineConfig, QuarantineRequest, QuarantineStore};

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn make_files(root: &Path, tag: &str, size: usize, n: usize) -> Vec<PathBuf> {
    let dir = root.join(tag);
    std::fs::create_dir_all(&dir).unwrap();
    (0..n)
        .map(|i| {
            let data: Vec<u8> = (0..size).map(|k| ((k * 131 + i * 7) % 251) as u8).collect();
            let p = dir.join(format!("f{i}"));
            std::fs::write(&p, data).unwrap();
            p
        })
        .collect()
}

fn main() {
    let base = std::env::var_os("RIPOSTE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let t = tempfile::tempdir_in(&base).unwrap();
    let root = t.path().join("root");
    let data = t.path().join("data");
    let cfg = QuarantineConfig {
        min_free_bytes: 0,
        max_store_size: u64::MAX,
        ..Default::default()
    };
    let (store, _) = QuarantineStore::open(&data, HostRoot::new(&root), cfg).unwrap();
    println!("file system of {}", base.display());
    println!(
        "| size | n | quarantine p50 | p99 | files/s | cp+sync+rm p50 | p99 | files/s | ratio (p50 quarantine / baseline) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (label, size, n) in [
        ("4 KB", 4096usize, 200usize),
        ("1 MB", 1 << 20, 30),
        ("50 MB", 50 << 20, 4),
    ] {
        let files = make_files(&root, &format!("q{size}"), size, n);
        let mut lat = Vec::new();
        let t0 = Instant::now();
        for p in &files {
            let dev = Path::new("/").join(p.strip_prefix(&root).unwrap());
            let s = Instant::now();
            store
                .quarantine(&QuarantineRequest {
                    path: dev,
                    detection_id: "bench".into(),
                    threat_name: "Bench".into(),
                    user: "root".into(),
                    expected: None,
                })
                .unwrap();
            lat.push(s.elapsed());
        }
        let qrate = n as f64 / t0.elapsed().as_secs_f64();
        for r in store.list().unwrap().entries {
            store.delete(&r.id).unwrap();
        }
        let files = make_files(&root, &format!("c{size}"), size, n);
        let dst = t.path().join("cpdst");
        std::fs::create_dir_all(&dst).unwrap();
        let mut blat = Vec::new();
        let t1 = Instant::now();
        for (i, p) in files.iter().enumerate() {
            let d = dst.join(format!("f{i}"));
            let s = Instant::now();
            let ok = Command::new("sh")
                .arg("-c")
                .arg("cp \"$1\" \"$2\" && sync \"$2\" && rm \"$1\"")
                .arg("sh")
                .arg(p)
                .arg(&d)
                .status()
                .unwrap()
                .success();
            assert!(ok);
            blat.push(s.elapsed());
        }
        let brate = n as f64 / t1.elapsed().as_secs_f64();
        let (q50, q99, b50, b99) = (
            pct(&mut lat, 0.5),
            pct(&mut lat, 0.99),
            pct(&mut blat, 0.5),
            pct(&mut blat, 0.99),
        );
        println!(
            "| {label} | {n} | {:.2} ms | {:.2} ms | {:.1} | {:.2} ms | {:.2} ms | {:.1} | {:.2}x |",
            q50.as_secs_f64() * 1e3,
            q99.as_secs_f64() * 1e3,
            qrate,
            b50.as_secs_f64() * 1e3,
            b99.as_secs_f64() * 1e3,
            brate,
            q50.as_secs_f64() / b50.as_secs_f64()
        );
        let _ = std::fs::remove_dir_all(&dst);
    }
}
