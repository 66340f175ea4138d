//! SHA-256 of sixteen independent streams at once: with the SHA extensions (SHA-NI),
//! AVX-512 or AVX2.
//!
//! Why: one SHA-256 stream is a chain of dependent rounds, each waiting for the one
//! before, and leaves most of a core idle. Without SHA-NI it runs at about 0.2–0.6 GB/s
//! per core on the machines here; with SHA-NI at 1.4–2.1 GB/s, still bound by the
//! latency of `sha256rnds2`. A sweep that hashes every file has thousands of streams, so
//! it runs sixteen side by side (Intel's ISA-L calls this "multi-buffer" hashing), as
//! [`crate::md5x16`] does for MD5:
//!
//! * with SHA-NI, two lanes at a time with their rounds interleaved, so that each
//!   stream's round runs while the other's waits ([`Sha256Kernel::ShaNi`]);
//! * without it, one stream per 32-bit element of a vector register
//!   ([`Sha256Kernel::Vector`]).
//!
//! This module is only the compression function over lanes, its padding and digest
//! layout; [`crate::multi`] feeds it files.

pub use crate::kernel::{Kernel, LANES};

/// SHA-256 state of sixteen streams, word-major: `state[w][lane]`.
pub type State = [[u32; LANES]; 8];

/// The SHA-256 initial state (FIPS 180-4, 5.3.3), in every lane.
pub const INIT: State = [
    [0x6a09_e667; LANES],
    [0xbb67_ae85; LANES],
    [0x3c6e_f372; LANES],
    [0xa54f_f53a; LANES],
    [0x510e_527f; LANES],
    [0x9b05_688c; LANES],
    [0x1f83_d9ab; LANES],
    [0x5be0_cd19; LANES],
];

/// A way to run SHA-256's compression function over the sixteen lanes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sha256Kernel {
    /// The SHA extensions (with SSSE3 and SSE4.1), two lanes at a time, interleaved.
    ShaNi,
    /// One stream per 32-bit element of a vector register.
    Vector(Kernel),
}

impl Sha256Kernel {
    /// Every kernel this CPU runs, in order of preference where their speeds are close
    /// (see [`preferred`]; tests check each of them).
    pub fn all_available() -> Vec<Sha256Kernel> {
        let mut out = Vec::new();
        if Sha256Kernel::ShaNi.is_available() {
            out.push(Sha256Kernel::ShaNi);
        }
        out.extend(
            Kernel::all_available()
                .into_iter()
                .map(Sha256Kernel::Vector),
        );
        out
    }

    /// Is this kernel usable on this CPU? (Asked before every call: no allocation.)
    pub fn is_available(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Sha256Kernel::ShaNi => {
                std::arch::is_x86_feature_detected!("sha")
                    && std::arch::is_x86_feature_detected!("ssse3")
                    && std::arch::is_x86_feature_detected!("sse4.1")
            }
            #[cfg(not(target_arch = "x86_64"))]
            Sha256Kernel::ShaNi => false,
            Sha256Kernel::Vector(kernel) => kernel.is_available(),
        }
    }
}

/// The kernel the sweep uses for SHA-256 on this CPU: the fastest one, or `None` where
/// the CPU has none (the sweep then hashes one stream at a time with the `sha2` crate).
///
/// Which is fastest depends on the CPU, not only on its features. On the AMD EPYC of the
/// fifth session, which has both, SHA-NI hashed 1.5× as fast as AVX-512; on the Intel
/// Xeon of the seventh, AVX-512 hashed 1.5× as fast as SHA-NI (BENCH.md). So where the
/// CPU runs more than one, each is timed once per process on data in cache, and the
/// order of [`Sha256Kernel::all_available`] decides unless a kernel is clearly faster
/// ([`fastest_by`]). That costs about half a millisecond, paid by the first sweep thread
/// that hashes with the lanes; the choice then holds for the process (the agent's too).
pub fn preferred() -> Option<Sha256Kernel> {
    static CHOSEN: std::sync::OnceLock<Option<Sha256Kernel>> = std::sync::OnceLock::new();
    *CHOSEN.get_or_init(|| fastest(&Sha256Kernel::all_available()))
}

/// Bytes per lane that [`fastest`] hashes in one timed call: 128 KiB in all (tens of
/// microseconds), in the L2 cache of every CPU here.
const CALIBRATION_BYTES: usize = 8 * 1024;
/// Timed calls per kernel; each kernel keeps its quickest, so that a burst of load on
/// the host (steal time on these VMs) does not decide.
const CALIBRATION_ROUNDS: usize = 3;
/// How much faster than the preferred kernels before it a kernel must be to displace
/// them: a choice that holds for the whole process should not turn on timing noise.
const CLEARLY_FASTER: f64 = 1.1;

/// [`fastest_by`], timing each kernel on sixteen lanes of [`CALIBRATION_BYTES`].
///
/// # Panics
/// Where a kernel given is not available on this CPU (see [`compress_with`]).
pub fn fastest(kernels: &[Sha256Kernel]) -> Option<Sha256Kernel> {
    if kernels.len() <= 1 {
        return kernels.first().copied();
    }
    let arena: Vec<u8> = (0..LANES * CALIBRATION_BYTES)
        .map(|i| (i % 251) as u8)
        .collect();
    let offsets: [i32; LANES] = std::array::from_fn(|l| (l * CALIBRATION_BYTES) as i32);
    fastest_by(kernels, CALIBRATION_ROUNDS, |kernel| {
        let mut state = INIT;
        let start = std::time::Instant::now();
        compress_with(kernel, &mut state, &arena, &offsets, CALIBRATION_BYTES / 64);
        // The state is used before the clock stops, so the work stays inside the span.
        std::hint::black_box(&mut state);
        start.elapsed()
    })
}

/// Of `kernels` (in order of preference), the one with the shortest of its `rounds`
/// times from `time`, where it beats each kernel preferred to it by [`CLEARLY_FASTER`];
/// else the earliest of them. `None` for no kernels; a lone kernel is not timed.
pub fn fastest_by(
    kernels: &[Sha256Kernel],
    rounds: usize,
    mut time: impl FnMut(Sha256Kernel) -> std::time::Duration,
) -> Option<Sha256Kernel> {
    if kernels.len() <= 1 {
        return kernels.first().copied();
    }
    let mut quickest = vec![std::time::Duration::MAX; kernels.len()];
    // Rounds take the kernels in turn, so that the host's load falls on all of them.
    for _ in 0..rounds.max(1) {
        for (kernel, best) in kernels.iter().zip(quickest.iter_mut()) {
            *best = (*best).min(time(*kernel));
        }
    }
    let mut chosen = 0;
    for (at, time) in quickest.iter().enumerate().skip(1) {
        if time.as_secs_f64() * CLEARLY_FASTER < quickest[chosen].as_secs_f64() {
            chosen = at;
        }
    }
    kernels.get(chosen).copied()
}

/// Runs `blocks` 64-byte blocks of every lane through SHA-256's compression function
/// with `kernel`. Lane `l` reads its blocks from
/// `arena[offsets[l]..offsets[l] + blocks * 64]`.
///
/// # Panics
/// Where `kernel` is not available on this CPU, or a lane's range is outside `arena`
/// (both are the caller's bugs, not input errors).
pub fn compress_with(
    kernel: Sha256Kernel,
    state: &mut State,
    arena: &[u8],
    offsets: &[i32; LANES],
    blocks: usize,
) {
    compress_some(kernel, state, arena, offsets, blocks, u16::MAX);
}

/// [`compress_with`] for the lanes whose bit is set in `active` (bit `l` for lane `l`);
/// the others are left as they are or hashed, whichever is cheaper for the kernel. The
/// SHA-NI kernel's cost is per lane; a vector kernel with only a few lanes in use
/// hashes them one plain stream each ([`compress_one`]). So a sweep's last few files do
/// not pay for sixteen.
///
/// # Panics
/// As [`compress_with`].
pub fn compress_some(
    kernel: Sha256Kernel,
    state: &mut State,
    arena: &[u8],
    offsets: &[i32; LANES],
    blocks: usize,
    active: u16,
) {
    crate::kernel::check_call(kernel, kernel.is_available(), arena, offsets, blocks);
    if kernel != Sha256Kernel::ShaNi && active.count_ones() <= crate::kernel::FEW_LANES {
        return crate::kernel::lane_by_lane(active, arena, offsets, blocks, |l, data| {
            compress_one(state, l, data)
        });
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the CPU has the kernel's features, and every lane's range lies inside
    // `arena`.
    unsafe {
        match kernel {
            Sha256Kernel::ShaNi => kernel_sha_ni(state, arena.as_ptr(), offsets, blocks, active),
            Sha256Kernel::Vector(Kernel::Avx512) => {
                kernel_avx512(state, arena.as_ptr(), offsets, blocks)
            }
            Sha256Kernel::Vector(Kernel::Avx2) => {
                kernel_avx2(state, arena.as_ptr(), offsets, blocks)
            }
        }
    }
}

/// Runs the 64-byte blocks of `data` through SHA-256's compression function for lane
/// `lane` alone, one plain stream (the `sha2` crate's, with SHA-NI where the CPU has
/// it): with one or two lanes left this beats a vector kernel over all sixteen.
///
/// # Panics
/// Where `data` is not whole blocks or `lane` is not a lane (the caller's bugs).
pub fn compress_one(state: &mut State, lane: usize, data: &[u8]) {
    assert!(
        data.len().is_multiple_of(64),
        "SHA-256 takes whole 64-byte blocks"
    );
    let mut one: [u32; 8] = std::array::from_fn(|w| state[w][lane]);
    for block in data.chunks_exact(64) {
        let block = sha2::digest::generic_array::GenericArray::from_slice(block);
        sha2::compress256(&mut one, std::slice::from_ref(block));
    }
    for (w, value) in one.into_iter().enumerate() {
        state[w][lane] = value;
    }
}

/// The SHA-NI body of [`compress_some`]: the active lanes two at a time, the rounds of
/// the two streams interleaved (a lone last lane runs as one stream). A `sha256rnds2`
/// (two rounds) needs the result of the one before it in its stream, so one stream
/// leaves the unit waiting; the other stream's rounds run in that time. Two streams hash 1.5–1.9× as fast as one on the AMD EPYC of the
/// fifth session (BENCH.md); three or four need more than the sixteen XMM registers the
/// SHA instructions can use, and spill.
///
/// # Safety
/// SHA, SSSE3 and SSE4.1 must be available, and for every lane the `blocks * 64` bytes
/// from `base + offsets[l]` must be readable.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
unsafe fn kernel_sha_ni(
    state: &mut State,
    base: *const u8,
    offsets: &[i32; LANES],
    blocks: usize,
    active: u16,
) {
    let mut lanes = [0usize; LANES];
    let mut n = 0;
    for l in (0..LANES).filter(|l| active & (1 << l) != 0) {
        lanes[n] = l;
        n += 1;
    }
    let mut pairs = lanes[..n].chunks_exact(2);
    for pair in pairs.by_ref() {
        // SAFETY: as this function's.
        unsafe { sha_ni_streams(state, base, offsets, blocks, [pair[0], pair[1]]) };
    }
    if let [lone] = pairs.remainder() {
        // SAFETY: as this function's.
        unsafe { sha_ni_streams(state, base, offsets, blocks, [*lone]) };
    }
}

/// `blocks` blocks of each of `lanes` through SHA-NI, their rounds interleaved.
///
/// # Safety
/// As [`kernel_sha_ni`]'s, and every entry of `lanes` is below [`LANES`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
unsafe fn sha_ni_streams<const STREAMS: usize>(
    state: &mut State,
    base: *const u8,
    offsets: &[i32; LANES],
    blocks: usize,
    lanes: [usize; STREAMS],
) {
    use std::arch::x86_64::*;
    // Big-endian words from little-endian loads.
    let byte_swap = _mm_set_epi64x(0x0c0d_0e0f_0809_0a0b, 0x0405_0607_0001_0203);
    {
        // The SHA instructions hold a state as (a, b, e, f) and (c, d, g, h), `a` and
        // `c` in the highest element.
        let word = |lane: usize, w: usize| state[w][lane] as i32;
        let mut abef = lanes.map(|l| _mm_set_epi32(word(l, 0), word(l, 1), word(l, 4), word(l, 5)));
        let mut cdgh = lanes.map(|l| _mm_set_epi32(word(l, 2), word(l, 3), word(l, 6), word(l, 7)));
        let mut block = lanes.map(|l| base.wrapping_add(offsets[l] as usize));
        for _ in 0..blocks {
            let (abef_in, cdgh_in) = (abef, cdgh);
            // SAFETY: sixteen bytes inside the block the caller vouches for.
            let load = |p: *const u8, j: usize| unsafe { _mm_loadu_si128(p.add(16 * j).cast()) };
            // w[s] holds stream s's next sixteen message words, four per register.
            let mut w = block.map(|p| {
                std::array::from_fn::<_, 4, _>(|j| _mm_shuffle_epi8(load(p, j), byte_swap))
            });
            for quad in 0..16 {
                // SAFETY: four of the 64 round constants.
                let k = unsafe { _mm_loadu_si128(K.as_ptr().add(4 * quad).cast()) };
                for s in 0..STREAMS {
                    if quad >= 4 {
                        // Message words 16 rounds on (FIPS 180-4, 6.2.2 step 1): σ0 by
                        // msg1, the w[t-7] term by the byte shift, σ1 by msg2.
                        let [w0, w1, w2, w3] = w[s];
                        let partial = _mm_add_epi32(
                            _mm_sha256msg1_epu32(w0, w1),
                            _mm_alignr_epi8::<4>(w3, w2),
                        );
                        w[s] = [w1, w2, w3, _mm_sha256msg2_epu32(partial, w3)];
                    }
                    let kw = _mm_add_epi32(w[s][quad.min(3)], k);
                    cdgh[s] = _mm_sha256rnds2_epu32(cdgh[s], abef[s], kw);
                    abef[s] =
                        _mm_sha256rnds2_epu32(abef[s], cdgh[s], _mm_shuffle_epi32::<0x0E>(kw));
                }
            }
            for s in 0..STREAMS {
                abef[s] = _mm_add_epi32(abef[s], abef_in[s]);
                cdgh[s] = _mm_add_epi32(cdgh[s], cdgh_in[s]);
                block[s] = block[s].wrapping_add(64);
            }
        }
        for (s, &lane) in lanes.iter().enumerate() {
            let (mut x, mut y) = ([0u32; 4], [0u32; 4]);
            // SAFETY: unaligned stores to our own arrays of four words.
            unsafe {
                _mm_storeu_si128(x.as_mut_ptr().cast(), abef[s]);
                _mm_storeu_si128(y.as_mut_ptr().cast(), cdgh[s]);
            }
            let words = [x[3], x[2], y[3], y[2], x[1], x[0], y[1], y[0]];
            for (w, value) in words.into_iter().enumerate() {
                state[w][lane] = value;
            }
        }
    }
}

/// SHA-256's 64 rounds over one block, for any vector width. `$round!(a, ..., h, j, k)`
/// is the kernel's round `j` of a 16-round chunk (it adds `k`, the round constant, and
/// the message word `w[j]` to `h`, adds the sum to `d` and leaves the new `a` in `h`);
/// `$schedule!(j)` replaces `w[j]` by the message word 16 rounds later. The round
/// function and schedule are FIPS 180-4, 6.2.2; the names rotate instead of the values.
macro_rules! sha256_rounds {
    ($round:ident, $schedule:ident, $a:ident, $b:ident, $c:ident, $d:ident,
     $e:ident, $f:ident, $g:ident, $h:ident) => {
        sha256_rounds!(@chunk $round, $a, $b, $c, $d, $e, $f, $g, $h, 0, {});
        for chunk in 1..4 {
            sha256_rounds!(@chunk $round, $a, $b, $c, $d, $e, $f, $g, $h, chunk, $schedule);
        }
    };
    (@chunk $round:ident, $a:ident, $b:ident, $c:ident, $d:ident,
     $e:ident, $f:ident, $g:ident, $h:ident, $chunk:expr, $schedule:tt) => {
        sha256_rounds!(@eight $round, $a, $b, $c, $d, $e, $f, $g, $h, $chunk, 0, $schedule);
        sha256_rounds!(@eight $round, $a, $b, $c, $d, $e, $f, $g, $h, $chunk, 8, $schedule);
    };
    (@eight $round:ident, $a:ident, $b:ident, $c:ident, $d:ident,
     $e:ident, $f:ident, $g:ident, $h:ident, $chunk:expr, $o:literal, $schedule:tt) => {
        sha256_rounds!(@one $round, $a, $b, $c, $d, $e, $f, $g, $h, $chunk, $o + 0, $schedule);
        sha256_rounds!(@one $round, $h, $a, $b, $c, $d, $e, $f, $g, $chunk, $o + 1, $schedule);
        sha256_rounds!(@one $round, $g, $h, $a, $b, $c, $d, $e, $f, $chunk, $o + 2, $schedule);
        sha256_rounds!(@one $round, $f, $g, $h, $a, $b, $c, $d, $e, $chunk, $o + 3, $schedule);
        sha256_rounds!(@one $round, $e, $f, $g, $h, $a, $b, $c, $d, $chunk, $o + 4, $schedule);
        sha256_rounds!(@one $round, $d, $e, $f, $g, $h, $a, $b, $c, $chunk, $o + 5, $schedule);
        sha256_rounds!(@one $round, $c, $d, $e, $f, $g, $h, $a, $b, $chunk, $o + 6, $schedule);
        sha256_rounds!(@one $round, $b, $c, $d, $e, $f, $g, $h, $a, $chunk, $o + 7, $schedule);
    };
    (@one $round:ident, $a:ident, $b:ident, $c:ident, $d:ident,
     $e:ident, $f:ident, $g:ident, $h:ident, $chunk:expr, $j:expr, {}) => {
        $round!($a, $b, $c, $d, $e, $f, $g, $h, $j, K[$chunk * 16 + $j]);
    };
    (@one $round:ident, $a:ident, $b:ident, $c:ident, $d:ident,
     $e:ident, $f:ident, $g:ident, $h:ident, $chunk:expr, $j:expr, $schedule:ident) => {
        $schedule!($j);
        $round!($a, $b, $c, $d, $e, $f, $g, $h, $j, K[$chunk * 16 + $j]);
    };
}

/// The AVX-512 body of [`compress_with`].
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
    let mut v: [__m512i; 8] = std::array::from_fn(|i| load(&state[i]));
    let mut offs = unsafe { _mm512_loadu_si512(offsets.as_ptr().cast()) };
    let step = _mm512_set1_epi32(64);
    let low_bytes = _mm512_set1_epi32(0x00ff_00ff);
    for _ in 0..blocks {
        let mut w = [_mm512_setzero_si512(); 16];
        for (j, word) in w.iter_mut().enumerate() {
            let at = _mm512_add_epi32(offs, _mm512_set1_epi32(4 * j as i32));
            let x = unsafe { _mm512_i32gather_epi32::<1>(at, base.cast()) };
            // Big-endian words: bytes 0 and 2 come from rotl(x, 8), 1 and 3 from
            // rotr(x, 8); ternary logic 0xCA is "mask ? first : second".
            *word = _mm512_ternarylogic_epi32::<0xCA>(
                low_bytes,
                _mm512_rol_epi32::<8>(x),
                _mm512_ror_epi32::<8>(x),
            );
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = v;
        // Σ0, Σ1, σ0, σ1 are three rotations or shifts joined by one three-way xor
        // (0x96); Ch is "e ? f : g" (0xCA) and Maj the majority (0xE8).
        macro_rules! xor3 {
            ($x:expr, $y:expr, $z:expr) => {
                _mm512_ternarylogic_epi32::<0x96>($x, $y, $z)
            };
        }
        macro_rules! round {
            ($a:ident, $b:ident, $c:ident, $d:ident, $e:ident, $f:ident, $g:ident,
             $h:ident, $j:expr, $k:expr) => {
                let s1 = xor3!(
                    _mm512_ror_epi32::<6>($e),
                    _mm512_ror_epi32::<11>($e),
                    _mm512_ror_epi32::<25>($e)
                );
                let ch = _mm512_ternarylogic_epi32::<0xCA>($e, $f, $g);
                let kw = _mm512_add_epi32(_mm512_set1_epi32($k as i32), w[$j]);
                let t1 = _mm512_add_epi32(_mm512_add_epi32($h, s1), _mm512_add_epi32(ch, kw));
                let s0 = xor3!(
                    _mm512_ror_epi32::<2>($a),
                    _mm512_ror_epi32::<13>($a),
                    _mm512_ror_epi32::<22>($a)
                );
                let maj = _mm512_ternarylogic_epi32::<0xE8>($a, $b, $c);
                $d = _mm512_add_epi32($d, t1);
                $h = _mm512_add_epi32(t1, _mm512_add_epi32(s0, maj));
            };
        }
        macro_rules! schedule {
            ($j:expr) => {
                let w15 = w[($j + 1) % 16];
                let w2 = w[($j + 14) % 16];
                let s0 = xor3!(
                    _mm512_ror_epi32::<7>(w15),
                    _mm512_ror_epi32::<18>(w15),
                    _mm512_srli_epi32::<3>(w15)
                );
                let s1 = xor3!(
                    _mm512_ror_epi32::<17>(w2),
                    _mm512_ror_epi32::<19>(w2),
                    _mm512_srli_epi32::<10>(w2)
                );
                w[$j] = _mm512_add_epi32(
                    _mm512_add_epi32(w[$j], s0),
                    _mm512_add_epi32(w[($j + 9) % 16], s1),
                );
            };
        }
        sha256_rounds!(round, schedule, a, b, c, d, e, f, g, h);
        for (acc, x) in v.iter_mut().zip([a, b, c, d, e, f, g, h]) {
            *acc = _mm512_add_epi32(*acc, x);
        }
        offs = _mm512_add_epi32(offs, step);
    }
    for (word, x) in state.iter_mut().zip(v) {
        // SAFETY: an unaligned store to our own array of sixteen words.
        unsafe { _mm512_storeu_si512(word.as_mut_ptr().cast(), x) };
    }
}

/// The AVX2 body of [`compress_with`]: lanes 0–7 in one set of 256-bit registers, lanes
/// 8–15 in another, each operation applied to both.
///
/// # Safety
/// AVX2 must be available, and for every lane the `blocks * 64` bytes from
/// `base + offsets[l]` must be readable.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn kernel_avx2(state: &mut State, base: *const u8, offsets: &[i32; LANES], blocks: usize) {
    use std::arch::x86_64::*;
    const HALF: usize = LANES / 2;
    type Pair = [__m256i; 2];
    // SAFETY (whole function): loads and stores are unaligned ones of our own arrays;
    // gathers read only the ranges the caller vouches for.
    let load = |w: &[u32]| unsafe { _mm256_loadu_si256(w.as_ptr().cast()) };
    let mut v: [Pair; 8] =
        std::array::from_fn(|i| [load(&state[i][..HALF]), load(&state[i][HALF..])]);
    let mut offs: Pair = [
        unsafe { _mm256_loadu_si256(offsets[..HALF].as_ptr().cast()) },
        unsafe { _mm256_loadu_si256(offsets[HALF..].as_ptr().cast()) },
    ];
    let step = _mm256_set1_epi32(64);
    // Byte order within each 32-bit word reversed: big-endian message words.
    let bswap = _mm256_setr_epi8(
        3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12, 3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8,
        15, 14, 13, 12,
    );
    macro_rules! pair {
        ($op:ident, $x:expr, $y:expr) => {{
            let (x, y): (Pair, Pair) = ($x, $y);
            [$op(x[0], y[0]), $op(x[1], y[1])]
        }};
    }
    // AVX2 has no rotate: rotr(x, n) is the or of two shifts.
    macro_rules! ror {
        ($n:literal, $x:expr) => {{
            let x: Pair = $x;
            let one = |x| {
                _mm256_or_si256(
                    _mm256_srli_epi32::<$n>(x),
                    _mm256_slli_epi32::<{ 32 - $n }>(x),
                )
            };
            [one(x[0]), one(x[1])]
        }};
    }
    macro_rules! shr {
        ($n:literal, $x:expr) => {{
            let x: Pair = $x;
            [_mm256_srli_epi32::<$n>(x[0]), _mm256_srli_epi32::<$n>(x[1])]
        }};
    }
    macro_rules! xor3 {
        ($x:expr, $y:expr, $z:expr) => {
            pair!(_mm256_xor_si256, pair!(_mm256_xor_si256, $x, $y), $z)
        };
    }
    macro_rules! add {
        ($x:expr, $y:expr) => {
            pair!(_mm256_add_epi32, $x, $y)
        };
    }
    for _ in 0..blocks {
        let mut w: [Pair; 16] = [[_mm256_setzero_si256(); 2]; 16];
        for (j, word) in w.iter_mut().enumerate() {
            for half in 0..2 {
                let at = _mm256_add_epi32(offs[half], _mm256_set1_epi32(4 * j as i32));
                let x = unsafe { _mm256_i32gather_epi32::<1>(base.cast(), at) };
                word[half] = _mm256_shuffle_epi8(x, bswap);
            }
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = v;
        macro_rules! round {
            ($a:ident, $b:ident, $c:ident, $d:ident, $e:ident, $f:ident, $g:ident,
             $h:ident, $j:expr, $k:expr) => {
                let s1 = xor3!(ror!(6, $e), ror!(11, $e), ror!(25, $e));
                // Ch = g ^ (e & (f ^ g)); Maj = b ^ ((a ^ b) & (b ^ c)).
                let ch = pair!(
                    _mm256_xor_si256,
                    $g,
                    pair!(_mm256_and_si256, $e, pair!(_mm256_xor_si256, $f, $g))
                );
                let k = _mm256_set1_epi32($k as i32);
                let kw = add!([k, k], w[$j]);
                let t1 = add!(add!($h, s1), add!(ch, kw));
                let s0 = xor3!(ror!(2, $a), ror!(13, $a), ror!(22, $a));
                let maj = pair!(
                    _mm256_xor_si256,
                    $b,
                    pair!(
                        _mm256_and_si256,
                        pair!(_mm256_xor_si256, $a, $b),
                        pair!(_mm256_xor_si256, $b, $c)
                    )
                );
                $d = add!($d, t1);
                $h = add!(t1, add!(s0, maj));
            };
        }
        macro_rules! schedule {
            ($j:expr) => {
                let w15 = w[($j + 1) % 16];
                let w2 = w[($j + 14) % 16];
                let s0 = xor3!(ror!(7, w15), ror!(18, w15), shr!(3, w15));
                let s1 = xor3!(ror!(17, w2), ror!(19, w2), shr!(10, w2));
                w[$j] = add!(add!(w[$j], s0), add!(w[($j + 9) % 16], s1));
            };
        }
        sha256_rounds!(round, schedule, a, b, c, d, e, f, g, h);
        for (acc, x) in v.iter_mut().zip([a, b, c, d, e, f, g, h]) {
            *acc = add!(*acc, x);
        }
        offs = add!(offs, [step, step]);
    }
    let store = |w: &mut [u32], x| unsafe { _mm256_storeu_si256(w.as_mut_ptr().cast(), x) };
    for (word, x) in state.iter_mut().zip(v) {
        store(&mut word[..HALF], x[0]);
        store(&mut word[HALF..], x[1]);
    }
}

/// SHA-256's round constants (FIPS 180-4, 4.2.2).
const K: [u32; 64] = [
    0x428a_2f98,
    0x7137_4491,
    0xb5c0_fbcf,
    0xe9b5_dba5,
    0x3956_c25b,
    0x59f1_11f1,
    0x923f_82a4,
    0xab1c_5ed5,
    0xd807_aa98,
    0x1283_5b01,
    0x2431_85be,
    0x550c_7dc3,
    0x72be_5d74,
    0x80de_b1fe,
    0x9bdc_06a7,
    0xc19b_f174,
    0xe49b_69c1,
    0xefbe_4786,
    0x0fc1_9dc6,
    0x240c_a1cc,
    0x2de9_2c6f,
    0x4a74_84aa,
    0x5cb0_a9dc,
    0x76f9_88da,
    0x983e_5152,
    0xa831_c66d,
    0xb003_27c8,
    0xbf59_7fc7,
    0xc6e0_0bf3,
    0xd5a7_9147,
    0x06ca_6351,
    0x1429_2967,
    0x27b7_0a85,
    0x2e1b_2138,
    0x4d2c_6dfc,
    0x5338_0d13,
    0x650a_7354,
    0x766a_0abb,
    0x81c2_c92e,
    0x9272_2c85,
    0xa2bf_e8a1,
    0xa81a_664b,
    0xc24b_8b70,
    0xc76c_51a3,
    0xd192_e819,
    0xd699_0624,
    0xf40e_3585,
    0x106a_a070,
    0x19a4_c116,
    0x1e37_6c08,
    0x2748_774c,
    0x34b0_bcb5,
    0x391c_0cb3,
    0x4ed8_aa4a,
    0x5b9c_ca4f,
    0x682e_6ff3,
    0x748f_82ee,
    0x78a5_636f,
    0x84c8_7814,
    0x8cc7_0208,
    0x90be_fffa,
    0xa450_6ceb,
    0xbef9_a3f7,
    0xc671_78f2,
];

/// The padded tail of a stream: its last partial block, `0x80`, zeros and the length in
/// bits (big-endian), as one or two blocks. It differs from MD5's padding only in the
/// byte order of the length.
pub fn pad_tail(tail: &[u8], total_len: u64, out: &mut [u8; 128]) -> usize {
    let blocks = crate::md5x16::pad_tail(tail, total_len, out);
    out[blocks * 64 - 8..blocks * 64].copy_from_slice(&(total_len.wrapping_mul(8)).to_be_bytes());
    blocks
}

/// The digest of lane `lane`, as SHA-256's 32 bytes.
pub fn digest(state: &State, lane: usize) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (w, chunk) in out.chunks_mut(4).enumerate() {
        chunk.copy_from_slice(&state[w][lane].to_be_bytes());
    }
    out
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use sha2::Digest as _;

    const SHA256: crate::kernel::checks::LaneHash<Sha256Kernel, 8> =
        crate::kernel::checks::LaneHash {
            init: INIT,
            compress: compress_with,
            compress_one,
            pad_tail,
            digest: |state, l| digest(state, l).to_vec(),
            reference: |m| sha2::Sha256::digest(m).to_vec(),
        };

    #[test]
    #[should_panic(expected = "lane outside the arena")]
    fn a_lane_outside_the_arena_is_refused() {
        let Some(kernel) = preferred() else {
            panic!("lane outside the arena (no kernel on this CPU: nothing to check)");
        };
        let arena = vec![0u8; LANES * 64];
        let mut offsets = [0i32; LANES];
        offsets[5] = (LANES * 64 - 8) as i32;
        compress_with(kernel, &mut INIT.clone(), &arena, &offsets, 1);
    }

    /// The fastest kernel wins only when it is clearly faster than those preferred to
    /// it; each kernel keeps its best round, so one slow round does not decide; a lone
    /// kernel is not timed.
    #[test]
    fn the_kernel_chosen_is_the_clearly_fastest_of_its_best_rounds() {
        use std::time::Duration;
        let (sha_ni, avx512, avx2) = (
            Sha256Kernel::ShaNi,
            Sha256Kernel::Vector(Kernel::Avx512),
            Sha256Kernel::Vector(Kernel::Avx2),
        );
        let kernels = [sha_ni, avx512, avx2];
        // Microseconds per kernel per round.
        let pick = |rounds: &[[u64; 3]]| {
            let mut calls = [0usize; 3];
            let chosen = fastest_by(&kernels, rounds.len(), |k| {
                let at = kernels.iter().position(|&x| x == k).unwrap_or(0);
                calls[at] += 1;
                Duration::from_micros(rounds[calls[at] - 1][at])
            });
            (chosen, calls)
        };
        // AVX-512 1.5x as fast, as on this session's Xeon: it wins.
        assert_eq!(pick(&[[60, 40, 90]; 3]), (Some(avx512), [3, 3, 3]));
        // 5 % faster is noise: the preferred order stands.
        assert_eq!(pick(&[[60, 57, 90]; 3]).0, Some(sha_ni));
        // A slow round (the host busy) is discarded: each keeps its best.
        assert_eq!(
            pick(&[[60, 400, 90], [60, 40, 90], [60, 41, 90]]).0,
            Some(avx512)
        );
        assert_eq!(
            pick(&[[900, 60, 90], [40, 60, 90], [41, 60, 90]]).0,
            Some(sha_ni)
        );
        // The last kernel must beat the one chosen so far, not only the first.
        assert_eq!(pick(&[[60, 40, 38]; 3]).0, Some(avx512));
        assert_eq!(pick(&[[60, 40, 30]; 3]).0, Some(avx2));
        let untimed = |_| -> Duration { panic!("a lone kernel is timed") };
        assert_eq!(fastest_by(&[avx2], 3, untimed), Some(avx2));
        assert_eq!(fastest_by(&[], 3, untimed), None);
        // On this CPU: one of its own kernels, or none where it has none.
        let all = Sha256Kernel::all_available();
        assert_eq!(preferred().is_some(), !all.is_empty());
        assert!(preferred().is_none_or(|k| all.contains(&k)));
    }

    #[test]
    fn sixteen_lanes_agree_with_sha256_on_every_tail_length() {
        SHA256.every_tail_length(&Sha256Kernel::all_available());
    }

    #[test]
    fn one_lane_alone_hashes_as_sha256_and_leaves_the_others() {
        SHA256.one_lane_alone();
    }

    /// A sparse set of lanes, an odd number of them (the SHA-NI kernel pairs them and
    /// runs the last alone): those hash right in every kernel, and the SHA-NI kernel
    /// leaves the others untouched.
    #[test]
    fn only_the_active_lanes_hash_as_sha256_in_every_kernel() {
        let arena: Vec<u8> = (0..LANES * 700).map(|i| (i * 37 % 251) as u8).collect();
        let offsets: [i32; LANES] = std::array::from_fn(|l| (l * 613 + l % 5) as i32);
        let mut pad = [0u8; 128];
        assert_eq!(pad_tail(&[], 192, &mut pad), 1);
        let active: u16 = 1 | 1 << 3 | 1 << 6 | 1 << 10 | 1 << 15;
        for kernel in Sha256Kernel::all_available() {
            let mut state = INIT;
            compress_some(kernel, &mut state, &arena, &offsets, 3, active);
            compress_some(kernel, &mut state, &pad[..64], &[0; LANES], 1, active);
            for (l, &o) in offsets.iter().enumerate() {
                if active & (1 << l) != 0 {
                    let message = &arena[o as usize..o as usize + 192];
                    assert_eq!(
                        hex::encode(digest(&state, l)),
                        hex::encode(sha2::Sha256::digest(message)),
                        "{kernel:?}, lane {l}"
                    );
                } else if kernel == Sha256Kernel::ShaNi {
                    assert!((0..8).all(|w| state[w][l] == INIT[w][l]), "lane {l}");
                }
            }
        }
    }

    #[test]
    fn several_blocks_in_one_call_hash_as_sha256_in_every_kernel() {
        SHA256.several_blocks_in_one_call(&Sha256Kernel::all_available());
    }
}
