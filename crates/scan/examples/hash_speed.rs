//! One core's in-memory hashing speed, per algorithm, with the implementations the
//! sweep uses. `bench/sweep.sh` uses it for the hashing limit of the machine.
//!
//! `cargo run --release -p riposte-scan --example hash_speed [MB]`

use std::time::Instant;

fn main() {
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
    let run = |name: &str, f: &dyn Fn(&[u8]) -> usize| {
        // Hash in 256 KiB pieces, as the sweep does, best of three.
        let best = (0..3)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(f(&data));
                t.elapsed().as_secs_f64()
            })
            .fold(f64::MAX, f64::min);
        println!("{name} {:.1}", (data.len() as f64 / 1e6) / best);
    };
    use md5::Digest as _;
    run("md5", &|d| {
        let mut h = md5::Md5::new();
        d.chunks(256 << 10).for_each(|c| h.update(c));
        h.finalize()[0] as usize
    });
    if riposte_scan::md5x16::available() {
        // Sixteen streams side by side, one sixteenth of the data each: the sweep's MD5
        // when it has many files to hash.
        run("md5x16", &|d| {
            use riposte_scan::md5x16::{compress, INIT, LANES};
            let per_lane = d.len() / LANES / 64 * 64;
            let offsets: [i32; LANES] = std::array::from_fn(|l| (l * per_lane) as i32);
            let mut state = INIT;
            // SAFETY: AVX-512F is available; each lane reads inside `d`.
            unsafe { compress(&mut state, d.as_ptr(), &offsets, per_lane / 64) };
            state[0][0] as usize
        });
    }
    run("sha1", &|d| {
        let mut h = sha1::Sha1::new();
        d.chunks(256 << 10).for_each(|c| h.update(c));
        h.finalize()[0] as usize
    });
    run("sha256", &|d| {
        let mut h = sha2::Sha256::new();
        d.chunks(256 << 10).for_each(|c| h.update(c));
        h.finalize()[0] as usize
    });
}
