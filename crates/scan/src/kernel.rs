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

    /// Is this kernel usable on this CPU? (Asked before every call: no allocation.)
    pub fn is_available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            match self {
                Kernel::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
                Kernel::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }
}

/// Up to this many lanes in use, a vector kernel hashes them one plain stream each
/// instead ([`lane_by_lane`]): a lane costs 1/16 of a vector kernel's work, so one
/// stream wins below 16 × (one stream's speed / the kernel's), about 3 for MD5 and
/// SHA-256 on the machines in BENCH.md. It happens at the end of a sweep, where the
/// last file may be a large one.
pub(crate) const FEW_LANES: u32 = 2;

/// Calls `one` with each lane set in `active` (bit `l` for lane `l`) and its `blocks`
/// blocks from the arena.
pub(crate) fn lane_by_lane(
    active: u16,
    arena: &[u8],
    offsets: &[i32; LANES],
    blocks: usize,
    mut one: impl FnMut(usize, &[u8]),
) {
    for l in (0..LANES).filter(|l| active & (1 << l) != 0) {
        let at = offsets[l] as usize;
        one(l, &arena[at..at + blocks * 64]);
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

/// The test checks both lane hashes share, over one description of each.
#[cfg(test)]
pub(crate) mod checks {
    use super::LANES;

    /// A hash state of every lane, word-major (`md5x16::State`, `sha256x16::State`).
    pub type LaneWords<const WORDS: usize> = [[u32; LANES]; WORDS];

    /// A multi-lane hash as its module implements it, with the one-stream crate it must
    /// agree with; `K` is the module's kernel type.
    pub struct LaneHash<K, const WORDS: usize> {
        pub init: LaneWords<WORDS>,
        /// `compress_with`: `blocks` blocks of every lane, lane `l` at `offsets[l]`.
        pub compress: fn(K, &mut LaneWords<WORDS>, &[u8], &[i32; LANES], usize),
        /// `compress_one`: whole blocks of one lane, one plain stream.
        pub compress_one: fn(&mut LaneWords<WORDS>, usize, &[u8]),
        pub pad_tail: fn(&[u8], u64, &mut [u8; 128]) -> usize,
        pub digest: fn(&LaneWords<WORDS>, usize) -> Vec<u8>,
        /// The digest of a whole message by the crate the sweep otherwise uses.
        pub reference: fn(&[u8]) -> Vec<u8>,
    }

    /// A message of `n` bytes that differs from lane to lane and length to length.
    fn message(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + n) as u8).collect()
    }

    impl<K: Copy + std::fmt::Debug, const WORDS: usize> LaneHash<K, WORDS> {
        /// `message` with its padding, as whole blocks.
        fn padded(&self, message: &[u8]) -> Vec<u8> {
            let full = message.len() / 64 * 64;
            let mut v = message[..full].to_vec();
            let mut tail = [0u8; 128];
            let n = (self.pad_tail)(&message[full..], message.len() as u64, &mut tail);
            v.extend_from_slice(&tail[..n * 64]);
            v
        }

        /// Hashes whole messages (one per lane) through `kernel` the slow simple way,
        /// one block row at a time, which checks the kernel, its padding and its digest
        /// layout.
        fn through_lanes(&self, kernel: K, messages: &[Vec<u8>]) -> Vec<Vec<u8>> {
            let padded: Vec<Vec<u8>> = messages.iter().map(|m| self.padded(m)).collect();
            let max_blocks = padded.iter().map(|p| p.len() / 64).max().unwrap_or(0);
            let mut state = self.init;
            let mut done = vec![Vec::new(); messages.len()];
            let offsets: [i32; LANES] = std::array::from_fn(|l| (l * 64) as i32);
            for blk in 0..max_blocks {
                let mut arena = vec![0u8; LANES * 64];
                for (l, p) in padded.iter().enumerate() {
                    if blk * 64 < p.len() {
                        arena[l * 64..l * 64 + 64].copy_from_slice(&p[blk * 64..blk * 64 + 64]);
                    }
                }
                (self.compress)(kernel, &mut state, &arena, &offsets, 1);
                for (l, p) in padded.iter().enumerate() {
                    if blk + 1 == p.len() / 64 {
                        done[l] = (self.digest)(&state, l);
                    }
                }
            }
            done
        }

        /// Every kernel agrees with the reference on messages of every tail length
        /// around the padding boundaries, and on longer ones.
        pub fn every_tail_length(&self, kernels: &[K]) {
            if kernels.is_empty() {
                eprintln!("no vector kernel on this CPU: kernels not tested here");
                return;
            }
            let lens: Vec<usize> = (0..130).chain([1000, 4096, 65_537]).collect();
            for &kernel in kernels {
                for group in lens.chunks(LANES) {
                    let msgs: Vec<Vec<u8>> = group.iter().map(|&n| message(n)).collect();
                    let got = self.through_lanes(kernel, &msgs);
                    for (m, g) in msgs.iter().zip(&got) {
                        assert_eq!(
                            hex::encode(g),
                            hex::encode((self.reference)(m)),
                            "{kernel:?}, len {}",
                            m.len()
                        );
                    }
                }
            }
        }

        /// Several blocks in one call, lanes at unaligned and interleaved offsets as
        /// the sweep's arena holds them, hash as the reference in every kernel.
        pub fn several_blocks_in_one_call(&self, kernels: &[K]) {
            let arena: Vec<u8> = (0..LANES * 700).map(|i| (i * 31 % 251) as u8).collect();
            let offsets: [i32; LANES] = std::array::from_fn(|l| (l * 613 + l % 3) as i32);
            // Every lane's message is its 5 blocks; the padding of a 320-byte message
            // is one block, the same for every lane.
            let mut pad = [0u8; 128];
            assert_eq!((self.pad_tail)(&[], 320, &mut pad), 1);
            for &kernel in kernels {
                let mut state = self.init;
                (self.compress)(kernel, &mut state, &arena, &offsets, 5);
                (self.compress)(kernel, &mut state, &pad[..64], &[0; LANES], 1);
                for (l, &o) in offsets.iter().enumerate() {
                    let message = &arena[o as usize..o as usize + 320];
                    assert_eq!(
                        hex::encode((self.digest)(&state, l)),
                        hex::encode((self.reference)(message)),
                        "{kernel:?}, lane {l}"
                    );
                }
            }
        }

        /// `compress_one` on messages of every padding case: lane 9's digest is the
        /// reference's, and no other lane changes.
        pub fn one_lane_alone(&self) {
            const LANE: usize = 9;
            for n in [0, 1, 55, 56, 63, 64, 65, 1000, 65_537] {
                let m = message(n);
                let mut state = self.init;
                (self.compress_one)(&mut state, LANE, &self.padded(&m));
                assert_eq!((self.digest)(&state, LANE), (self.reference)(&m), "len {n}");
                assert!((0..LANES)
                    .filter(|&l| l != LANE)
                    .all(|l| (0..WORDS).all(|w| state[w][l] == self.init[w][l])));
            }
        }
    }
}
