//! MD5 of sixteen independent streams at once, with AVX-512.
//!
//! Why: one MD5 stream is a chain of dependent 32-bit operations, so a core hashes one
//! file at well under its arithmetic width (about 0.7–0.9 GB/s here). A sweep has
//! thousands of files to hash, so it can run sixteen of them side by side, one per
//! 32-bit lane of a 512-bit register, and the dependency chains overlap. This is the
//! "multi-buffer" technique of Intel's ISA-L and minio's md5-simd.
//!
//! This module is only the compression function over lanes; [`crate::multi`] feeds it
//! files, pads them and reads the digests out. Where AVX-512F is absent the sweep uses
//! the scalar `md-5` crate instead.

/// Number of streams hashed together.
pub const LANES: usize = 16;

/// MD5 state of sixteen streams, word-major: `state[w][lane]`.
pub type State = [[u32; LANES]; 4];

/// The MD5 initial state, in every lane.
pub const INIT: State = [
    [0x6745_2301; LANES],
    [0xefcd_ab89; LANES],
    [0x98ba_dcfe; LANES],
    [0x1032_5476; LANES],
];

/// Is the AVX-512 kernel usable on this CPU?
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Runs `blocks` 64-byte blocks of every lane through MD5's compression function.
/// Lane `l` reads its blocks from `arena[offsets[l]..offsets[l] + blocks * 64]`.
///
/// # Panics
/// Where [`available`] is false, or a lane's range is outside `arena` (both are the
/// caller's bugs, not input errors).
pub fn compress(state: &mut State, arena: &[u8], offsets: &[i32; LANES], blocks: usize) {
    assert!(
        i32::try_from(arena.len()).is_ok(),
        "arena too large for 32-bit offsets"
    );
    for &o in offsets {
        let end = usize::try_from(o)
            .ok()
            .and_then(|o| o.checked_add(blocks * 64));
        assert!(
            end.is_some_and(|e| e <= arena.len()),
            "lane outside the arena"
        );
    }
    assert!(available(), "md5x16::compress without AVX-512F");
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the CPU has AVX-512F, and every lane's range lies inside `arena`.
    unsafe {
        kernel(state, arena.as_ptr(), offsets, blocks)
    }
}

/// The AVX-512 body of [`compress`].
///
/// # Safety
/// AVX-512F must be available, and for every lane the `blocks * 64` bytes from
/// `base + offsets[l]` must be readable.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn kernel(state: &mut State, base: *const u8, offsets: &[i32; LANES], blocks: usize) {
    use std::arch::x86_64::*;
    // SAFETY (whole function): loads and stores are unaligned ones of our own arrays;
    // gathers read only the ranges the caller vouches for.
    let load = |w: &[u32; LANES]| unsafe { _mm512_loadu_si512(w.as_ptr().cast()) };
    let mut a = load(&state[0]);
    let mut b = load(&state[1]);
    let mut c = load(&state[2]);
    let mut d = load(&state[3]);
    let mut offs = unsafe { _mm512_loadu_si512(offsets.as_ptr().cast()) };
    let step = _mm512_set1_epi32(64);
    for _ in 0..blocks {
        let mut m = [_mm512_setzero_si512(); 16];
        for (j, w) in m.iter_mut().enumerate() {
            let at = _mm512_add_epi32(offs, _mm512_set1_epi32(4 * j as i32));
            *w = unsafe { _mm512_i32gather_epi32::<1>(at, base.cast()) };
        }
        let (aa, bb, cc, dd) = (a, b, c, d);
        // One MD5 step: a = b + rotl(a + f(b, c, d) + k + m[g], s). The boolean
        // functions are single ternary-logic instructions: F = b ? c : d (0xCA),
        // G = d ? b : c (0xE4), H = b ^ c ^ d (0x96), I = c ^ (b | !d) (0x39).
        macro_rules! step {
            ($f:literal, $a:ident, $b:ident, $c:ident, $d:ident, $g:expr, $k:expr, $s:literal) => {
                let f = _mm512_ternarylogic_epi32::<$f>($b, $c, $d);
                let t = _mm512_add_epi32(
                    _mm512_add_epi32($a, f),
                    _mm512_add_epi32(m[$g], _mm512_set1_epi32($k as i32)),
                );
                $a = _mm512_add_epi32($b, _mm512_rol_epi32::<$s>(t));
            };
        }
        macro_rules! round {
            ($f:literal, $s0:literal, $s1:literal, $s2:literal, $s3:literal, $first:expr, $g:expr) => {
                let mut i = $first;
                while i < $first + 16 {
                    step!($f, a, b, c, d, $g(i), K[i], $s0);
                    step!($f, d, a, b, c, $g(i + 1), K[i + 1], $s1);
                    step!($f, c, d, a, b, $g(i + 2), K[i + 2], $s2);
                    step!($f, b, c, d, a, $g(i + 3), K[i + 3], $s3);
                    i += 4;
                }
            };
        }
        round!(0xCA, 7, 12, 17, 22, 0, |i: usize| i);
        round!(0xE4, 5, 9, 14, 20, 16, |i: usize| (5 * i + 1) % 16);
        round!(0x96, 4, 11, 16, 23, 32, |i: usize| (3 * i + 5) % 16);
        round!(0x39, 6, 10, 15, 21, 48, |i: usize| (7 * i) % 16);
        a = _mm512_add_epi32(a, aa);
        b = _mm512_add_epi32(b, bb);
        c = _mm512_add_epi32(c, cc);
        d = _mm512_add_epi32(d, dd);
        offs = _mm512_add_epi32(offs, step);
    }
    let store = |w: &mut [u32; LANES], v| unsafe { _mm512_storeu_si512(w.as_mut_ptr().cast(), v) };
    store(&mut state[0], a);
    store(&mut state[1], b);
    store(&mut state[2], c);
    store(&mut state[3], d);
}

/// MD5's additive constants, `floor(abs(sin(i + 1)) * 2^32)`.
const K: [u32; 64] = [
    0xd76a_a478,
    0xe8c7_b756,
    0x2420_70db,
    0xc1bd_ceee,
    0xf57c_0faf,
    0x4787_c62a,
    0xa830_4613,
    0xfd46_9501,
    0x6980_98d8,
    0x8b44_f7af,
    0xffff_5bb1,
    0x895c_d7be,
    0x6b90_1122,
    0xfd98_7193,
    0xa679_438e,
    0x49b4_0821,
    0xf61e_2562,
    0xc040_b340,
    0x265e_5a51,
    0xe9b6_c7aa,
    0xd62f_105d,
    0x0244_1453,
    0xd8a1_e681,
    0xe7d3_fbc8,
    0x21e1_cde6,
    0xc337_07d6,
    0xf4d5_0d87,
    0x455a_14ed,
    0xa9e3_e905,
    0xfcef_a3f8,
    0x676f_02d9,
    0x8d2a_4c8a,
    0xfffa_3942,
    0x8771_f681,
    0x6d9d_6122,
    0xfde5_380c,
    0xa4be_ea44,
    0x4bde_cfa9,
    0xf6bb_4b60,
    0xbebf_bc70,
    0x289b_7ec6,
    0xeaa1_27fa,
    0xd4ef_3085,
    0x0488_1d05,
    0xd9d4_d039,
    0xe6db_99e5,
    0x1fa2_7cf8,
    0xc4ac_5665,
    0xf429_2244,
    0x432a_ff97,
    0xab94_23a7,
    0xfc93_a039,
    0x655b_59c3,
    0x8f0c_cc92,
    0xffef_f47d,
    0x8584_5dd1,
    0x6fa8_7e4f,
    0xfe2c_e6e0,
    0xa301_4314,
    0x4e08_11a1,
    0xf753_7e82,
    0xbd3a_f235,
    0x2ad7_d2bb,
    0xeb86_d391,
];

/// The padded tail of a stream: its last partial block, `0x80`, zeros and the length in
/// bits, as one or two blocks.
pub fn pad_tail(tail: &[u8], total_len: u64, out: &mut [u8; 128]) -> usize {
    debug_assert!(tail.len() < 64);
    out.fill(0);
    out[..tail.len()].copy_from_slice(tail);
    out[tail.len()] = 0x80;
    let blocks = if tail.len() < 56 { 1 } else { 2 };
    out[blocks * 64 - 8..blocks * 64].copy_from_slice(&(total_len.wrapping_mul(8)).to_le_bytes());
    blocks
}

/// The digest of lane `lane`, as MD5's 16 bytes.
pub fn digest(state: &State, lane: usize) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (w, chunk) in out.chunks_mut(4).enumerate() {
        chunk.copy_from_slice(&state[w][lane].to_le_bytes());
    }
    out
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use md5::Digest as _;

    /// Hashes whole messages through the lanes, the slow simple way (one block row at a
    /// time), to check the kernel, the padding and the digest layout.
    fn md5_lanes(messages: &[Vec<u8>]) -> Vec<[u8; 16]> {
        let padded: Vec<Vec<u8>> = messages
            .iter()
            .map(|m| {
                let full = m.len() / 64 * 64;
                let mut v = m[..full].to_vec();
                let mut tail = [0u8; 128];
                let n = pad_tail(&m[full..], m.len() as u64, &mut tail);
                v.extend_from_slice(&tail[..n * 64]);
                v
            })
            .collect();
        let max_blocks = padded.iter().map(|p| p.len() / 64).max().unwrap_or(0);
        let mut state = INIT;
        let mut done = vec![[0u8; 16]; messages.len()];
        for blk in 0..max_blocks {
            // One arena: lane l's block at l * 64.
            let mut arena = vec![0u8; LANES * 64];
            for (l, p) in padded.iter().enumerate() {
                if blk * 64 < p.len() {
                    arena[l * 64..l * 64 + 64].copy_from_slice(&p[blk * 64..blk * 64 + 64]);
                }
            }
            let offsets: [i32; LANES] = std::array::from_fn(|l| (l * 64) as i32);
            compress(&mut state, &arena, &offsets, 1);
            for (l, p) in padded.iter().enumerate() {
                if blk + 1 == p.len() / 64 {
                    done[l] = digest(&state, l);
                }
            }
        }
        done
    }

    #[test]
    #[should_panic(expected = "lane outside the arena")]
    fn a_lane_outside_the_arena_is_refused() {
        let arena = vec![0u8; LANES * 64];
        let mut offsets = [0i32; LANES];
        offsets[3] = (LANES * 64 - 32) as i32;
        compress(&mut INIT.clone(), &arena, &offsets, 1);
    }

    #[test]
    fn sixteen_lanes_agree_with_md5_on_every_tail_length() {
        if !available() {
            eprintln!("no AVX-512F on this CPU: kernel not tested here");
            return;
        }
        // Lengths around every padding boundary, and longer ones.
        let lens: Vec<usize> = (0..130).chain([1000, 4096, 65_537]).collect();
        for group in lens.chunks(LANES) {
            let msgs: Vec<Vec<u8>> = group
                .iter()
                .map(|&n| (0..n).map(|i| (i * 7 + n) as u8).collect())
                .collect();
            let got = md5_lanes(&msgs);
            for (m, g) in msgs.iter().zip(&got) {
                assert_eq!(
                    hex::encode(g),
                    hex::encode(md5::Md5::digest(m)),
                    "len {}",
                    m.len()
                );
            }
        }
    }
}
