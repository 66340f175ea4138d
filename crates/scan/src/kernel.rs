//! What the multi-lane hash kernels ([`crate::md5x16`], [`crate::sha256x16`]) share: the
//! number of lanes, which vector instruction set the CPU runs them with, and the bounds
//! every call is checked against before any `unsafe` gather reads the arena.

/// Number of streams hashed together.
pub const LANES: usize = 16;

/// A vector implementation of a compression function over [`LANES`] streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// Sixteen lanes in one 512-bit register (AVX-512F).
    Avx512,
    /// Sixteen lanes as two 256-bit registers of eight (AVX2).
    Avx2,
}

impl Kernel {
    /// The fastest kernel this CPU runs, if any.
    pub fn best() -> Option<Kernel> {
        Kernel::all_available().into_iter().next()
    }

    /// Every kernel this CPU runs, fastest first (tests check each of them).
    pub fn all_available() -> Vec<Kernel> {
        let mut out = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                out.push(Kernel::Avx512);
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                out.push(Kernel::Avx2);
            }
        }
        out
    }

    /// Is this kernel usable on this CPU?
    pub fn is_available(self) -> bool {
        Kernel::all_available().contains(&self)
    }
}

/// Checks a kernel call: every lane's `blocks * 64` bytes from its offset lie inside the
/// arena, and the CPU runs `kernel` (`available`).
///
/// # Panics
/// Where either does not hold (the caller's bug, not an input error).
pub(crate) fn check_call(
    kernel: impl std::fmt::Debug,
    available: bool,
    arena: &[u8],
    offsets: &[i32; LANES],
    blocks: usize,
) {
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
    assert!(available, "{kernel:?} kernel not available on this CPU");
}

/// `message` with its padding (by `pad_tail`), as whole blocks.
#[cfg(test)]
pub(crate) fn padded(message: &[u8], pad_tail: fn(&[u8], u64, &mut [u8; 128]) -> usize) -> Vec<u8> {
    let full = message.len() / 64 * 64;
    let mut v = message[..full].to_vec();
    let mut tail = [0u8; 128];
    let n = pad_tail(&message[full..], message.len() as u64, &mut tail);
    v.extend_from_slice(&tail[..n * 64]);
    v
}

/// A hash state of every lane, word-major (`md5x16::State`, `sha256x16::State`).
#[cfg(test)]
pub(crate) type LaneWords<const WORDS: usize> = [[u32; LANES]; WORDS];

/// Checks a module's one-stream `compress_one` on messages of every padding case: lane
/// 9's digest is `reference`'s, and no other lane changes.
#[cfg(test)]
pub(crate) fn check_one_lane<const WORDS: usize>(
    init: LaneWords<WORDS>,
    compress_one: fn(&mut LaneWords<WORDS>, usize, &[u8]),
    pad_tail: fn(&[u8], u64, &mut [u8; 128]) -> usize,
    digest: &dyn Fn(&LaneWords<WORDS>, usize) -> Vec<u8>,
    reference: &dyn Fn(&[u8]) -> Vec<u8>,
) {
    const LANE: usize = 9;
    for n in [0, 1, 55, 56, 63, 64, 65, 1000, 65_537] {
        let m: Vec<u8> = (0..n).map(|i| (i * 7 + n) as u8).collect();
        let mut state = init;
        compress_one(&mut state, LANE, &padded(&m, pad_tail));
        assert_eq!(digest(&state, LANE), reference(&m), "len {n}");
        assert!((0..LANES)
            .filter(|&l| l != LANE)
            .all(|l| (0..WORDS).all(|w| state[w][l] == init[w][l])));
    }
}

/// Hashes whole messages through a kernel the slow simple way, one block row at a time,
/// to check the kernel, its padding and its digest layout: `pad_tail` pads a message's
/// last partial block, `compress` runs one block of every lane (lane `l` at `l * 64` of
/// the arena it is given), and `digest` reads lane `l`'s digest.
#[cfg(test)]
pub(crate) fn through_lanes(
    messages: &[Vec<u8>],
    pad_tail: fn(&[u8], u64, &mut [u8; 128]) -> usize,
    compress: &mut dyn FnMut(&[u8], &[i32; LANES]),
    digest: &dyn Fn(usize) -> Vec<u8>,
) -> Vec<Vec<u8>> {
    let padded: Vec<Vec<u8>> = messages.iter().map(|m| padded(m, pad_tail)).collect();
    let max_blocks = padded.iter().map(|p| p.len() / 64).max().unwrap_or(0);
    let mut done = vec![Vec::new(); messages.len()];
    let offsets: [i32; LANES] = std::array::from_fn(|l| (l * 64) as i32);
    for blk in 0..max_blocks {
        let mut arena = vec![0u8; LANES * 64];
        for (l, p) in padded.iter().enumerate() {
            if blk * 64 < p.len() {
                arena[l * 64..l * 64 + 64].copy_from_slice(&p[blk * 64..blk * 64 + 64]);
            }
        }
        compress(&arena, &offsets);
        for (l, p) in padded.iter().enumerate() {
            if blk + 1 == p.len() / 64 {
                done[l] = digest(l);
            }
        }
    }
    done
}
