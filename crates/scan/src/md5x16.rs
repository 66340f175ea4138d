//! MD5 of sixteen independent streams at once, with AVX-512 or AVX2.
//!
//! Why: one MD5 stream is a chain of dependent 32-bit operations, so a core hashes one
//! file at well under its arithmetic width (about 0.5–0.9 GB/s on the machines here). A
//! sweep has thousands of files to hash, so it can run sixteen of them side by side, one
//! per 32-bit lane, and the dependency chains overlap. This is the "multi-buffer"
//! technique of Intel's ISA-L and minio's md5-simd.
//!
//! Two kernels compute the same thing: with AVX-512F, one 512-bit register holds a word
//! of all sixteen streams; with AVX2 (most x86-64 CPUs since 2013, AMD EPYC among them),
//! two 256-bit registers hold eight streams each and every step is done on both halves,
//! which also gives the core two independent chains to interleave.
//!
//! This module is only the compression function over lanes; [`crate::multi`] feeds it
//! files, pads them and reads the digests out. Where neither AVX-512F nor AVX2 is
//! present the sweep uses the scalar `md-5` crate instead.

pub use crate::kernel::{Kernel, LANES};

/// MD5 state of sixteen streams, word-major: `state[w][lane]`.
pub type State = [[u32; LANES]; 4];

/// The MD5 initial state, in every lane.
pub const INIT: State = [
    [0x6745_2301; LANES],
    [0xefcd_ab89; LANES],
    [0x98ba_dcfe; LANES],
    [0x1032_5476; LANES],
];

/// Runs `blocks` 64-byte blocks of every lane through MD5's compression function, with
/// the best kernel of this CPU. Lane `l` reads its blocks from
/// `arena[offsets[l]..offsets[l] + blocks * 64]`.
///
/// # Panics
/// Where the CPU has no kernel ([`Kernel::best`] is `None`), or a lane's range is outside `arena` (both are the
/// caller's bugs, not input errors).
pub fn compress(state: &mut State, arena: &[u8], offsets: &[i32; LANES], blocks: usize) {
    let kernel = Kernel::best().expect("md5x16::compress without AVX-512F or AVX2");
    compress_with(kernel, state, arena, offsets, blocks);
}

/// [`compress`] with a chosen kernel.
///
/// # Panics
/// Where `kernel` is not available on this CPU, or a lane's range is outside `arena`.
pub fn compress_with(
    kernel: Kernel,
    state: &mut State,
    arena: &[u8],
    offsets: &[i32; LANES],
    blocks: usize,
) {
    compress_some(kernel, state, arena, offsets, blocks, u16::MAX);
}

/// [`compress_with`] for the lanes whose bit is set in `active` (bit `l` for lane `l`);
/// the others are left as they are or hashed. With only a few lanes in use they are
/// hashed one plain stream each ([`compress_one`]), which is faster.
///
/// # Panics
/// As [`compress_with`].
pub fn compress_some(
    kernel: Kernel,
    state: &mut State,
    arena: &[u8],
    offsets: &[i32; LANES],
    blocks: usize,
    active: u16,
) {
    crate::kernel::check_call(kernel, kernel.is_available(), arena, offsets, blocks);
    if active.count_ones() <= crate::kernel::FEW_LANES {
        return crate::kernel::lane_by_lane(active, arena, offsets, blocks, |l, data| {
            compress_one(state, l, data)
        });
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the CPU has the kernel's features, and every lane's range lies inside
    // `arena`.
    unsafe {
        match kernel {
            Kernel::Avx512 => kernel_avx512(state, arena.as_ptr(), offsets, blocks),
            Kernel::Avx2 => kernel_avx2(state, arena.as_ptr(), offsets, blocks),
        }
    }
}

/// MD5's 64 steps over one block, for any vector width: `$step!(f, a, b, c, d, g, k, s)`
/// is the kernel's own step (boolean function `f` of the round, message word `g`,
/// constant `k`, rotation `s`); `$f0`..`$f3` name each round's boolean function as that
/// step understands it. The shifts and message schedule are MD5's (RFC 1321).
macro_rules! md5_rounds {
    ($step:ident, $a:ident, $b:ident, $c:ident, $d:ident; $f0:tt, $f1:tt, $f2:tt, $f3:tt) => {
        md5_rounds!(@round $step, $a, $b, $c, $d, $f0, 7, 12, 17, 22, 0, |i: usize| i);
        md5_rounds!(@round $step, $a, $b, $c, $d, $f1, 5, 9, 14, 20, 16, |i: usize| (5 * i + 1) % 16);
        md5_rounds!(@round $step, $a, $b, $c, $d, $f2, 4, 11, 16, 23, 32, |i: usize| (3 * i + 5) % 16);
        md5_rounds!(@round $step, $a, $b, $c, $d, $f3, 6, 10, 15, 21, 48, |i: usize| (7 * i) % 16);
    };
    (@round $step:ident, $a:ident, $b:ident, $c:ident, $d:ident, $f:tt,
     $s0:literal, $s1:literal, $s2:literal, $s3:literal, $first:expr, $g:expr) => {
        let mut i = $first;
        while i < $first + 16 {
            $step!($f, $a, $b, $c, $d, $g(i), K[i], $s0);
            $step!($f, $d, $a, $b, $c, $g(i + 1), K[i + 1], $s1);
            $step!($f, $c, $d, $a, $b, $g(i + 2), K[i + 2], $s2);
            $step!($f, $b, $c, $d, $a, $g(i + 3), K[i + 3], $s3);
            i += 4;
        }
    };
}

/// Runs the 64-byte blocks of `data` through MD5's compression function for lane `lane`
/// alone, one plain stream: with one or two lanes left (the end of a sweep) this is
/// several times faster than a vector kernel over all sixteen.
///
/// # Panics
/// Where `data` is not whole blocks or `lane` is not a lane (the caller's bugs).
pub fn compress_one(state: &mut State, lane: usize, data: &[u8]) {
    assert!(
        data.len().is_multiple_of(64),
        "MD5 takes whole 64-byte blocks"
    );
    let [mut a, mut b, mut c, mut d] = [0, 1, 2, 3].map(|w| state[w][lane]);
    for block in data.chunks_exact(64) {
        let m: [u32; 16] = std::array::from_fn(|j| {
            u32::from_le_bytes([
                block[4 * j],
                block[4 * j + 1],
                block[4 * j + 2],
                block[4 * j + 3],
            ])
        });
        let (aa, bb, cc, dd) = (a, b, c, d);
        macro_rules! f {
            (0, $b:expr, $c:expr, $d:expr) => {
                $d ^ ($b & ($c ^ $d))
            };
            (1, $b:expr, $c:expr, $d:expr) => {
                $c ^ ($d & ($b ^ $c))
            };
            (2, $b:expr, $c:expr, $d:expr) => {
                $b ^ $c ^ $d
            };
            (3, $b:expr, $c:expr, $d:expr) => {
                $c ^ ($b | !$d)
            };
        }
        macro_rules! step {
            ($f:tt, $a:ident, $b:ident, $c:ident, $d:ident, $g:expr, $k:expr, $s:literal) => {
                let t = $a
                    .wrapping_add(f!($f, $b, $c, $d))
                    .wrapping_add(m[$g])
                    .wrapping_add($k);
                $a = $b.wrapping_add(t.rotate_left($s));
            };
        }
        md5_rounds!(step, a, b, c, d; 0, 1, 2, 3);
        a = a.wrapping_add(aa);
        b = b.wrapping_add(bb);
        c = c.wrapping_add(cc);
        d = d.wrapping_add(dd);
    }
    for (w, value) in [a, b, c, d].into_iter().enumerate() {
        state[w][lane] = value;
    }
}

/// The AVX-512 body of [`compress`].
///
/// # Safety
/// AVX-512F must be available, and for every lane the `blocks * 64` bytes from
/// `base + offsets[l]` must be readable.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn kernel_avx512(state: &mut State, base: *const u8, offsets: &[i32; LANES], blocks: usize) {
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
        md5_rounds!(step, a, b, c, d; 0xCA, 0xE4, 0x96, 0x39);
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

/// The AVX2 body of [`compress`]: lanes 0–7 in one set of 256-bit registers, lanes
/// 8–15 in another, each step applied to both.
///
/// # Safety
/// AVX2 must be available, and for every lane the `blocks * 64` bytes from
/// `base + offsets[l]` must be readable.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn kernel_avx2(state: &mut State, base: *const u8, offsets: &[i32; LANES], blocks: usize) {
    use std::arch::x86_64::*;
    const HALF: usize = LANES / 2;
    // SAFETY (whole function): loads and stores are unaligned ones of our own arrays;
    // gathers read only the ranges the caller vouches for.
    let load = |w: &[u32]| unsafe { _mm256_loadu_si256(w.as_ptr().cast()) };
    let mut a = [load(&state[0][..HALF]), load(&state[0][HALF..])];
    let mut b = [load(&state[1][..HALF]), load(&state[1][HALF..])];
    let mut c = [load(&state[2][..HALF]), load(&state[2][HALF..])];
    let mut d = [load(&state[3][..HALF]), load(&state[3][HALF..])];
    let mut offs = [
        unsafe { _mm256_loadu_si256(offsets[..HALF].as_ptr().cast()) },
        unsafe { _mm256_loadu_si256(offsets[HALF..].as_ptr().cast()) },
    ];
    let step = _mm256_set1_epi32(64);
    let ones = _mm256_set1_epi32(-1);
    for _ in 0..blocks {
        let mut m = [[_mm256_setzero_si256(); 16]; 2];
        for h in 0..2 {
            for (j, w) in m[h].iter_mut().enumerate() {
                let at = _mm256_add_epi32(offs[h], _mm256_set1_epi32(4 * j as i32));
                *w = unsafe { _mm256_i32gather_epi32::<1>(base.cast(), at) };
            }
        }
        let (aa, bb, cc, dd) = (a, b, c, d);
        // The boolean functions without ternary logic: F = d ^ (b & (c ^ d)),
        // G = c ^ (d & (b ^ c)), H = b ^ c ^ d, I = c ^ (b | !d).
        macro_rules! f {
            (0, $b:expr, $c:expr, $d:expr) => {
                _mm256_xor_si256($d, _mm256_and_si256($b, _mm256_xor_si256($c, $d)))
            };
            (1, $b:expr, $c:expr, $d:expr) => {
                _mm256_xor_si256($c, _mm256_and_si256($d, _mm256_xor_si256($b, $c)))
            };
            (2, $b:expr, $c:expr, $d:expr) => {
                _mm256_xor_si256(_mm256_xor_si256($b, $c), $d)
            };
            (3, $b:expr, $c:expr, $d:expr) => {
                _mm256_xor_si256($c, _mm256_or_si256($b, _mm256_xor_si256($d, ones)))
            };
        }
        macro_rules! step {
            ($f:tt, $a:ident, $b:ident, $c:ident, $d:ident, $g:expr, $k:expr, $s:literal) => {
                let k = _mm256_set1_epi32($k as i32);
                for h in 0..2 {
                    let t = _mm256_add_epi32(
                        _mm256_add_epi32($a[h], f!($f, $b[h], $c[h], $d[h])),
                        _mm256_add_epi32(m[h][$g], k),
                    );
                    let r = _mm256_or_si256(
                        _mm256_slli_epi32::<$s>(t),
                        _mm256_srli_epi32::<{ 32 - $s }>(t),
                    );
                    $a[h] = _mm256_add_epi32($b[h], r);
                }
            };
        }
        md5_rounds!(step, a, b, c, d; 0, 1, 2, 3);
        for h in 0..2 {
            a[h] = _mm256_add_epi32(a[h], aa[h]);
            b[h] = _mm256_add_epi32(b[h], bb[h]);
            c[h] = _mm256_add_epi32(c[h], cc[h]);
            d[h] = _mm256_add_epi32(d[h], dd[h]);
            offs[h] = _mm256_add_epi32(offs[h], step);
        }
    }
    let store = |w: &mut [u32], v| unsafe { _mm256_storeu_si256(w.as_mut_ptr().cast(), v) };
    for (word, v) in [a, b, c, d].into_iter().enumerate() {
        store(&mut state[word][..HALF], v[0]);
        store(&mut state[word][HALF..], v[1]);
    }
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

    const MD5: crate::kernel::checks::LaneHash<Kernel, 4> = crate::kernel::checks::LaneHash {
        init: INIT,
        compress: compress_with,
        compress_one,
        pad_tail,
        digest: |state, l| digest(state, l).to_vec(),
        reference: |m| md5::Md5::digest(m).to_vec(),
    };

    #[test]
    fn one_lane_alone_hashes_as_md5_and_leaves_the_others() {
        MD5.one_lane_alone();
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
        MD5.every_tail_length(&Kernel::all_available());
    }

    #[test]
    fn several_blocks_in_one_call_hash_as_md5_in_every_kernel() {
        MD5.several_blocks_in_one_call(&Kernel::all_available());
    }
}
