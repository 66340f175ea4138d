//! One core's in-memory hashing speed, per algorithm, with the implementations the
//! sweep uses. `bench/sweep.sh` uses it for the hashing limit of the machine.
//!
//! `cargo run --release -p riposte-scan --example hash_speed [MB]`
//! `cargo run --release -p riposte-scan --example hash_speed -- --read-tree DIR`: the
//! I/O floor of a content sweep: the sweep's own walk and reads, every file, no hashing.
//! `... -- --stat-tree DIR`: the floor of a sweep with size indicators: the sweep's own
//! walk and `statx` of every file, on all cores, nothing evaluated.

use std::time::Instant;

fn main() {
    let (flag, dir) = (std::env::args().nth(1), std::env::args().nth(2));
    match (flag.as_deref(), dir) {
        (Some("--read-tree"), Some(dir)) => return walk_tree(&dir, true),
        (Some("--stat-tree"), Some(dir)) => return walk_tree(&dir, false),
        _ => {}
    }
    let mb: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    // Non-zero, incompressible-looking data, in memory: what the sweep hashes after a read.
    let mut data = vec![0u8; mb << 20];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let run = |name: &str, note: &str, f: &dyn Fn(&[u8]) -> usize| {
        // Hash in 256 KiB pieces, as the sweep does, best of three.
        let best = (0..3)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(f(&data));
                t.elapsed().as_secs_f64()
            })
            .fold(f64::MAX, f64::min);
        println!("{name} {:.1}{note}", (data.len() as f64 / 1e6) / best);
    };
    use md5::Digest as _;
    run("md5", "", &|d| {
        let mut h = md5::Md5::new();
        d.chunks(256 << 10).for_each(|c| h.update(c));
        h.finalize()[0] as usize
    });
    if let Some(kernel) = riposte_scan::md5x16::Kernel::best() {
        // Sixteen streams side by side, one sixteenth of the data each: the sweep's MD5
        // when it has many files to hash.
        let note = match kernel {
            riposte_scan::md5x16::Kernel::Avx512 => " AVX-512",
            riposte_scan::md5x16::Kernel::Avx2 => " AVX2",
        };
        run("md5x16", note, &|d| {
            use riposte_scan::md5x16::{compress, INIT, LANES};
            let per_lane = d.len() / LANES / 64 * 64;
            let offsets: [i32; LANES] = std::array::from_fn(|l| (l * per_lane) as i32);
            let mut state = INIT;
            compress(&mut state, d, &offsets, per_lane / 64);
            state[0][0] as usize
        });
    }
    run("sha1", "", &|d| {
        let mut h = sha1::Sha1::new();
        d.chunks(256 << 10).for_each(|c| h.update(c));
        h.finalize()[0] as usize
    });
    run("sha256", "", &|d| {
        let mut h = sha2::Sha256::new();
        d.chunks(256 << 10).for_each(|c| h.update(c));
        h.finalize()[0] as usize
    });
    // Every SHA-256 lane kernel this CPU runs, marked where it is the one a sweep would
    // choose (timed in this process as a sweep's is: where two are close, a sweep may
    // choose the other).
    for kernel in riposte_scan::sha256x16::Sha256Kernel::all_available() {
        use riposte_scan::kernel::Kernel;
        use riposte_scan::sha256x16::{compress_with, Sha256Kernel, INIT, LANES};
        let which = match kernel {
            Sha256Kernel::ShaNi => "sha-ni",
            Sha256Kernel::Vector(Kernel::Avx512) => "avx512",
            Sha256Kernel::Vector(Kernel::Avx2) => "avx2",
        };
        let used = if Some(kernel) == riposte_scan::sha256x16::preferred() {
            " (used by the sweep)"
        } else {
            ""
        };
        run(&format!("sha256x16-{which}"), used, &|d| {
            let per_lane = d.len() / LANES / 64 * 64;
            let offsets: [i32; LANES] = std::array::from_fn(|l| (l * per_lane) as i32);
            let mut state = INIT;
            compress_with(kernel, &mut state, d, &offsets, per_lane / 64);
            state[0][0] as usize
        });
    }
}

/// Walks `dir` on all cores as the sweep does, and reads every file once (`read`: as a
/// sweep that hashes every file opens them) or only stats it (as a sweep with size
/// indicators does).
fn walk_tree(dir: &str, read: bool) {
    use riposte_scan::walk::{walk_with, Excludes, FileStatus, WalkConfig};
    use std::io::Read;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let cancel = AtomicBool::new(false);
    let excludes = Excludes::default();
    let cfg = WalkConfig {
        host_root: std::path::Path::new("/"),
        excludes: &excludes,
        skip_dirs: &[],
        one_file_system: false,
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        cancel: &cancel,
        file_status: if read {
            FileStatus::Opened
        } else {
            FileStatus::ByName
        },
    };
    let bytes = AtomicU64::new(0);
    let files = AtomicU64::new(0);
    let t = Instant::now();
    // Counted per thread, as the sweep counts: a counter shared by the cores and bumped
    // per file would cost them a cache line each time. Reads go to a 64 KiB buffer, the
    // size of one of the sweep's lanes.
    walk_with(
        &[std::path::PathBuf::from(dir)],
        &cfg,
        || (0u64, 0u64, vec![0u8; 64 * 1024]),
        |(n, total, buf), file| {
            *n += 1;
            if !read {
                // What the status says, as a sweep with size indicators compares it.
                *total += file.meta().map_or(0, |m| m.size());
                return;
            }
            let Ok(mut f) = file.open() else {
                return;
            };
            while let Ok(got @ 1..) = f.read(buf) {
                *total += got as u64;
            }
        },
        |(n, total, _)| {
            files.fetch_add(n, Ordering::Relaxed);
            bytes.fetch_add(total, Ordering::Relaxed);
        },
        |_, _| {},
        |_, _| {},
    );
    println!(
        "{} {} files, {} MB in {:.3} s",
        if read { "read" } else { "stat" },
        files.load(Ordering::Relaxed),
        bytes.load(Ordering::Relaxed) / 1_000_000,
        t.elapsed().as_secs_f64()
    );
}
