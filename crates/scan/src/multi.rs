//! Hashing many files at once on one thread: sixteen lanes fed from sixteen files.
//!
//! A sweep thread hands files to [`Lanes::push`] instead of hashing them one by one.
//! Each lane owns a 64 KiB window of one arena; the lanes are refilled with `read` as
//! they drain, and the multi-lane kernels ([`md5x16`], [`sha256x16`]) advance all of
//! them by as many blocks as the shortest one holds. With one or two files left in
//! flight (at the end of a sweep, where the last file may be large) each is hashed as
//! one plain stream instead, and the SHA-NI kernel only ever hashes the lanes in use. A file's
//! last partial block is padded in place, once per algorithm (MD5 and SHA-256 write the
//! length in opposite byte orders), and when its lane has consumed it, the file's
//! digests go to the caller's `done` callback with the job it was pushed with. SHA-1,
//! and SHA-256 on a CPU without a SHA-256 kernel, are updated one stream at a time from
//! the same reads, so a file is still read once; bytes YARA has already read are hashed
//! from memory.

use crate::items::{hex_lower, Algorithms, Digests};
use crate::md5x16::{self, LANES};
use crate::sha256x16;
use std::fs::File;
use std::io::Read;
use std::sync::atomic::Ordering;

/// Bytes of file data a lane holds between refills.
const WINDOW: usize = 64 * 1024;
/// Distance between lanes in the arena: a window plus room for two padding blocks.
const STRIDE: usize = WINDOW + 128;
/// Where in its stride a lane's SHA-256 padding goes once its file has ended; the MD5
/// padding is at the stride's start, and each is at most two blocks.
const SHA256_PAD: usize = 128;

/// Would [`Lanes`] hash files of these algorithms faster than one at a time here?
/// (Answered from the CPU's features, without timing its kernels.)
pub fn worth_it(algorithms: Algorithms) -> bool {
    (algorithms.md5 && md5x16::Kernel::best().is_some())
        || (algorithms.sha256 && !sha256x16::Sha256Kernel::all_available().is_empty())
}

/// Where a lane's bytes come from.
pub enum Source {
    /// A file opened for reading (see [`crate::items::open_content`]).
    File(File),
    /// Bytes already in memory (read whole for YARA): hashed without a second read.
    Memory(Vec<u8>),
}

enum Reader {
    File(crate::items::Capped<File>),
    Memory(std::io::Cursor<Vec<u8>>),
}

impl Read for Reader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Reader::File(f) => f.read(buf),
            Reader::Memory(c) => c.read(buf),
        }
    }
}

struct Lane<J> {
    job: J,
    reader: Reader,
    /// The size at stat time: a short read at or past it is the end (see
    /// [`crate::items::digest_sized`]).
    expected: u64,
    total: u64,
    /// Unconsumed data is `arena[lane * STRIDE + start .. lane * STRIDE + filled]`.
    start: usize,
    filled: usize,
    eof: bool,
    padded: bool,
    sha1: Option<sha1::Sha1>,
    /// SHA-256 one stream at a time, where it is not in the lanes.
    sha256: Option<sha2::Sha256>,
}

/// Sixteen files in flight on one thread; `J` is what the caller needs back per file.
pub struct Lanes<J> {
    arena: Vec<u8>,
    md5: Option<(md5x16::Kernel, md5x16::State)>,
    sha256: Option<(sha256x16::Sha256Kernel, sha256x16::State)>,
    lanes: Vec<Option<Lane<J>>>,
    algorithms: Algorithms,
    /// Most bytes read of one file.
    limit: Option<u64>,
    /// Where the bytes hashed are counted as they come (see [`Lanes::counting_into`]).
    progress: Option<std::sync::Arc<crate::Progress>>,
    /// Set to stop: files in flight then fail rather than be read to their end.
    cancel: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

impl<J> Lanes<J> {
    /// Lanes for `algorithms`, or `None` where [`worth_it`] is false, or where MD5 is
    /// wanted and the CPU has no MD5 kernel.
    pub fn new(algorithms: Algorithms) -> Option<Self> {
        let md5 = md5x16::Kernel::best().filter(|_| algorithms.md5);
        let sha256 = sha256x16::preferred().filter(|_| algorithms.sha256);
        Self::with_kernels(algorithms, md5, sha256)
    }

    /// [`Lanes::new`] with chosen kernels (`None`: that algorithm one stream at a
    /// time), so that tests can check every combination the CPU runs.
    pub fn with_kernels(
        algorithms: Algorithms,
        md5: Option<md5x16::Kernel>,
        sha256: Option<sha256x16::Sha256Kernel>,
    ) -> Option<Self> {
        if md5.is_none() && sha256.is_none() || algorithms.md5 && md5.is_none() {
            return None;
        }
        Some(Lanes {
            arena: vec![0u8; LANES * STRIDE],
            md5: md5.map(|k| (k, md5x16::INIT)),
            sha256: sha256.map(|k| (k, sha256x16::INIT)),
            lanes: (0..LANES).map(|_| None).collect(),
            algorithms,
            limit: None,
            progress: None,
            cancel: None,
        })
    }

    /// Counts the bytes of each file in `progress` as they are read (from memory: when
    /// the file is pushed), so that a sweep's progress moves through a large file.
    pub fn counting_into(mut self, progress: Option<std::sync::Arc<crate::Progress>>) -> Self {
        self.progress = progress;
        self
    }

    /// Stops reading when `cancel` is set: each file in flight fails (`Interrupted`) at
    /// its next read, so that a cancelled sweep ends in moments, not after sixteen large
    /// files have been hashed to their end.
    pub fn cancelled_by(mut self, cancel: std::sync::Arc<std::sync::atomic::AtomicBool>) -> Self {
        self.cancel = Some(cancel);
        self
    }

    /// Fails a file (its `done` gets the error) once more than `limit` bytes of it are
    /// read: see [`crate::items::Capped`].
    pub fn capped_at(mut self, limit: Option<u64>) -> Self {
        self.limit = limit;
        self
    }

    /// Adds a file whose size was `expected` at its stat; calls `done` for any files
    /// that complete meanwhile.
    pub fn push(
        &mut self,
        job: J,
        source: Source,
        expected: u64,
        done: &mut dyn FnMut(J, std::io::Result<Digests>),
    ) {
        let reader = match source {
            Source::File(f) => Reader::File(crate::items::Capped::new(f, self.limit)),
            Source::Memory(v) => {
                if let Some(p) = &self.progress {
                    p.bytes.fetch_add(v.len() as u64, Ordering::Relaxed);
                }
                Reader::Memory(std::io::Cursor::new(v))
            }
        };
        while !self.lanes.iter().any(Option::is_none) {
            self.pump(done);
        }
        let Some(l) = self.lanes.iter().position(Option::is_none) else {
            return;
        };
        if let Some((_, state)) = self.md5.as_mut() {
            for (word, init) in state.iter_mut().zip(md5x16::INIT) {
                word[l] = init[l];
            }
        }
        if let Some((_, state)) = self.sha256.as_mut() {
            for (word, init) in state.iter_mut().zip(sha256x16::INIT) {
                word[l] = init[l];
            }
        }
        let alg = self.algorithms;
        let scalar_sha256 = alg.sha256 && self.sha256.is_none();
        self.lanes[l] = Some(Lane {
            job,
            reader,
            expected,
            total: 0,
            start: 0,
            filled: 0,
            eof: false,
            padded: false,
            sha1: alg.sha1.then(<sha1::Sha1 as sha1::Digest>::new),
            sha256: scalar_sha256.then(<sha2::Sha256 as sha2::Digest>::new),
        });
    }

    /// Completes every file in flight.
    pub fn flush(&mut self, done: &mut dyn FnMut(J, std::io::Result<Digests>)) {
        while self.lanes.iter().any(Option::is_some) {
            self.pump(done);
        }
    }

    /// Refills the lanes that ran dry and advances them: all sixteen together, or, where
    /// SHA-NI alone hashes them, two by two.
    fn pump(&mut self, done: &mut dyn FnMut(J, std::io::Result<Digests>)) {
        // SHA-NI hashes the lanes two at a time anyway (`kernel_sha_ni`), so a pair
        // needs no other: it is refilled and hashed at once, its fresh bytes still in
        // the cache rather than behind fifteen other windows, and it advances by the
        // shorter of its own two rather than by the shortest of sixteen.
        let pairwise =
            self.md5.is_none() && matches!(self.sha256, Some((sha256x16::Sha256Kernel::ShaNi, _)));
        if pairwise {
            for first in (0..LANES).step_by(2) {
                self.pump_lanes(first..first + 2, done);
            }
        } else {
            self.pump_lanes(0..LANES, done);
        }
    }

    /// [`Lanes::pump`] over the lanes of `range`; the others are left as they are.
    fn pump_lanes(
        &mut self,
        range: std::ops::Range<usize>,
        done: &mut dyn FnMut(J, std::io::Result<Digests>),
    ) {
        for l in range.clone() {
            if let Err(e) = self.refill(l) {
                if let Some(lane) = self.lanes[l].take() {
                    done(lane.job, Err(e));
                }
            }
        }
        let blocks = self.lanes[range.clone()]
            .iter()
            .flatten()
            .map(|lane| (lane.filled - lane.start) / 64)
            .min();
        let Some(blocks) = blocks else {
            return;
        };
        let offsets = |pad_at: usize| -> [i32; LANES] {
            std::array::from_fn(|l| {
                let at = self.lanes[l]
                    .as_ref()
                    .filter(|_| range.contains(&l))
                    .map_or(0, |lane| lane.start + if lane.padded { pad_at } else { 0 });
                (l * STRIDE + at) as i32
            })
        };
        // Every lane stays inside its stride: an active lane holds at least `blocks * 64`
        // unconsumed bytes there (its padding too: `filled` counts the blocks from
        // either pad's start); an idle one, or one outside `range`, reads from its
        // stride's start, and a lane never holds more than a stride.
        let active = range
            .clone()
            .filter(|&l| self.lanes[l].is_some())
            .fold(0u16, |mask, l| mask | 1 << l);
        if let Some((kernel, state)) = self.md5.as_mut() {
            md5x16::compress_some(*kernel, state, &self.arena, &offsets(0), blocks, active);
        }
        if let Some((kernel, state)) = self.sha256.as_mut() {
            let offsets = offsets(SHA256_PAD);
            sha256x16::compress_some(*kernel, state, &self.arena, &offsets, blocks, active);
        }
        for l in range {
            let finished = match &mut self.lanes[l] {
                Some(lane) => {
                    lane.start += blocks * 64;
                    lane.padded && lane.start == lane.filled
                }
                None => false,
            };
            if finished {
                if let Some(lane) = self.lanes[l].take() {
                    let md5 = self
                        .md5
                        .as_ref()
                        .map(|(_, state)| hex_lower(&md5x16::digest(state, l)));
                    let sha256 = match &self.sha256 {
                        Some((_, state)) => Some(hex_lower(&sha256x16::digest(state, l))),
                        None => lane.sha256.map(|h| hex_lower(&sha2::Digest::finalize(h))),
                    };
                    done(
                        lane.job,
                        Ok(Digests::new(
                            md5,
                            lane.sha1.map(|h| hex_lower(&sha1::Digest::finalize(h))),
                            sha256,
                        )),
                    );
                }
            }
        }
    }

    /// Makes lane `l` hold at least one block: reads more of its file, or pads its tail
    /// once the file has ended.
    fn refill(&mut self, l: usize) -> std::io::Result<()> {
        let Some(lane) = self.lanes[l].as_mut() else {
            return Ok(());
        };
        if self
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                crate::items::SweepCancelled,
            ));
        }
        let buf = &mut self.arena[l * STRIDE..(l + 1) * STRIDE];
        while lane.filled - lane.start < 64 && !lane.padded {
            if lane.start > 0 {
                buf.copy_within(lane.start..lane.filled, 0);
                lane.filled -= lane.start;
                lane.start = 0;
            }
            if !lane.eof {
                let n = match lane.reader.read(&mut buf[lane.filled..WINDOW]) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                let fresh = &buf[lane.filled..lane.filled + n];
                if let Some(h) = lane.sha1.as_mut() {
                    sha1::Digest::update(h, fresh);
                }
                if let Some(h) = lane.sha256.as_mut() {
                    sha2::Digest::update(h, fresh);
                }
                if let (Some(p), Reader::File(_)) = (&self.progress, &lane.reader) {
                    p.bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
                let room = WINDOW - lane.filled;
                lane.filled += n;
                lane.total += n as u64;
                if n == 0 && lane.expected != u64::MAX && lane.total < lane.expected {
                    return Err(shrunk(lane.total, lane.expected));
                }
                lane.eof = n == 0 || (n < room && lane.total >= lane.expected);
            } else {
                // Both paddings, whichever kernels run: the one not hashed is never read.
                let mut md5_tail = [0u8; 128];
                let mut sha256_tail = [0u8; 128];
                let n = md5x16::pad_tail(&buf[..lane.filled], lane.total, &mut md5_tail);
                sha256x16::pad_tail(&buf[..lane.filled], lane.total, &mut sha256_tail);
                buf[..128].copy_from_slice(&md5_tail);
                buf[SHA256_PAD..SHA256_PAD + 128].copy_from_slice(&sha256_tail);
                lane.filled = n * 64;
                lane.padded = true;
            }
        }
        Ok(())
    }
}

/// The error of a file that ended before the size it had at its stat: what was read is
/// not the file that was judged, so its digests would be those of no version of it.
pub fn shrunk(read: u64, expected: u64) -> std::io::Error {
    std::io::Error::other(format!(
        "changed while it was read: it ended after {read} of its {expected} bytes"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use md5::Digest as _;

    /// Every way the lanes can be set up on this CPU: MD5 in lanes or not wanted,
    /// SHA-256 in lanes (each kernel) or one stream at a time.
    fn setups() -> Vec<(
        Algorithms,
        Option<md5x16::Kernel>,
        Option<sha256x16::Sha256Kernel>,
    )> {
        const ALL: Algorithms = Algorithms {
            md5: true,
            sha1: true,
            sha256: true,
        };
        let mut out = Vec::new();
        for md5 in md5x16::Kernel::all_available() {
            for sha in sha256x16::Sha256Kernel::all_available() {
                out.push((ALL, Some(md5), Some(sha)));
            }
            out.push((ALL, Some(md5), None));
        }
        for sha in sha256x16::Sha256Kernel::all_available() {
            out.push((
                Algorithms {
                    md5: false,
                    sha1: false,
                    sha256: true,
                },
                None,
                Some(sha),
            ));
        }
        out
    }

    /// Lanes with the first kernels this CPU runs, or `None` (said) where it runs none.
    fn first_lanes<J>() -> Option<Lanes<J>> {
        let lanes = setups()
            .into_iter()
            .next()
            .and_then(|(alg, md5, sha)| Lanes::with_kernels(alg, md5, sha));
        if lanes.is_none() {
            eprintln!("no lane kernel on this CPU: not tested here");
        }
        lanes
    }

    #[test]
    fn the_lanes_count_the_bytes_they_read_as_they_read_them() {
        let Some(lanes) = first_lanes() else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big");
        std::fs::write(&big, vec![3u8; 300_000]).unwrap();
        let progress = std::sync::Arc::new(crate::Progress::default());
        let bytes = || progress.bytes.load(Ordering::Relaxed);
        let mut lanes = lanes.counting_into(Some(progress.clone()));
        let mut done = |_: u8, d: std::io::Result<Digests>| assert!(d.is_ok());
        // Bytes already in memory (read for YARA) count when they are handed over.
        lanes.push(0, Source::Memory(vec![1u8; 1000]), 1000, &mut done);
        assert_eq!(bytes(), 1000);
        let file = Source::File(crate::items::open_content(&big).unwrap());
        lanes.push(1, file, 300_000, &mut done);
        // Nothing of the file is read until the lanes are pumped.
        assert_eq!(bytes(), 1000);
        lanes.flush(&mut done);
        assert_eq!(bytes(), 301_000);
    }

    /// Cancelled, the files in flight fail at their next read rather than being read to
    /// their end.
    #[test]
    fn a_cancelled_sweeps_files_in_flight_fail_at_once() {
        let Some(lanes) = first_lanes() else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big");
        std::fs::write(&big, vec![3u8; 4 << 20]).unwrap();
        let cancel = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let progress = std::sync::Arc::new(crate::Progress::default());
        let mut lanes = lanes
            .cancelled_by(cancel.clone())
            .counting_into(Some(progress.clone()));
        let mut outcomes = Vec::new();
        let mut done = |_: u8, d: std::io::Result<Digests>| outcomes.push(d.map(|_| ()));
        let file = Source::File(crate::items::open_content(&big).unwrap());
        lanes.push(0, file, 4 << 20, &mut done);
        cancel.store(true, Ordering::Relaxed);
        lanes.flush(&mut done);
        assert!(
            matches!(&outcomes[..], [Err(e)] if e.kind() == std::io::ErrorKind::Interrupted),
            "{outcomes:?}"
        );
        assert!(progress.bytes.load(Ordering::Relaxed) < 4 << 20);
    }

    #[test]
    fn a_file_read_past_the_size_limit_fails_in_its_lane() {
        let Some(lanes) = first_lanes() else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let (grown, at_limit) = (dir.path().join("grown"), dir.path().join("at-limit"));
        std::fs::write(&grown, vec![7u8; 300_000]).unwrap();
        std::fs::write(&at_limit, vec![7u8; 100_000]).unwrap();
        let mut lanes: Lanes<&str> = lanes.capped_at(Some(100_000));
        let mut got = Vec::new();
        let mut done = |name: &str, d: std::io::Result<Digests>| {
            got.push((name.to_string(), d.map_err(|e| e.to_string())))
        };
        let open = |p: &std::path::Path| Source::File(crate::items::open_content(p).unwrap());
        // Stated at 1,000 bytes, then grown: read past the limit, it is refused.
        lanes.push("grown", open(&grown), 1_000, &mut done);
        lanes.push("at-limit", open(&at_limit), 100_000, &mut done);
        lanes.flush(&mut done);
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0].1.as_ref().map(|d| d.sha256().map(str::to_string)),
            Ok(Some(hex::encode(sha2::Sha256::digest(vec![7u8; 100_000]))))
        );
        let e = got[1].1.as_ref().unwrap_err();
        assert!(e.contains("larger than the maximum file size"), "{e}");
    }

    #[test]
    fn many_files_of_every_size_hash_as_md5_sha1_and_sha256_do() {
        let setups = setups();
        if setups.is_empty() {
            eprintln!("no AVX-512F or AVX2 on this CPU: multi-file hashing not tested here");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        // Sizes around block and window edges, with a few large files among them so
        // that lanes finish at different times and are refilled with new files.
        let mut sizes: Vec<usize> = (0..70).collect();
        sizes.extend([
            119,
            120,
            121,
            4096,
            WINDOW - 1,
            WINDOW,
            WINDOW + 1,
            3 * WINDOW + 57,
        ]);
        sizes.extend((0..40).map(|i| i * 9973 % 200_000));
        let mut want = Vec::new();
        for (i, &n) in sizes.iter().enumerate() {
            let data: Vec<u8> = (0..n).map(|j| (j * 131 + i * 7) as u8).collect();
            std::fs::write(dir.path().join(i.to_string()), &data).unwrap();
            want.push((
                hex::encode(md5::Md5::digest(&data)),
                hex::encode(sha1::Sha1::digest(&data)),
                hex::encode(sha2::Sha256::digest(&data)),
            ));
        }
        for (alg, md5_kernel, sha_kernel) in setups {
            let mut lanes = Lanes::<usize>::with_kernels(alg, md5_kernel, sha_kernel).unwrap();
            let mut got: Vec<Option<Digests>> = vec![None; sizes.len()];
            let mut done = |i: usize, d: std::io::Result<Digests>| got[i] = Some(d.unwrap());
            for (i, &n) in sizes.iter().enumerate() {
                let path = dir.path().join(i.to_string());
                // Every third file comes from memory (as after a YARA read).
                let source = if i % 3 == 0 {
                    Source::Memory(std::fs::read(&path).unwrap())
                } else {
                    Source::File(crate::items::open_content(&path).unwrap())
                };
                lanes.push(i, source, n as u64, &mut done);
            }
            lanes.flush(&mut done);
            for (i, w) in want.iter().enumerate() {
                let d = got[i]
                    .as_ref()
                    .unwrap_or_else(|| panic!("file {i} not done"));
                let expected = (
                    alg.md5.then_some(w.0.as_str()),
                    alg.sha1.then_some(w.1.as_str()),
                    Some(w.2.as_str()),
                );
                assert_eq!(
                    (d.md5(), d.sha1(), d.sha256()),
                    expected,
                    "size {}, md5 {md5_kernel:?}, sha256 {sha_kernel:?}",
                    sizes[i]
                );
            }
        }
    }

    /// A file that ends before the size it had at its stat (truncated and rewritten
    /// while the sweep read it) gives an error, not the digests of a part of it; the
    /// files hashed beside it are not disturbed.
    #[test]
    fn a_file_shorter_than_its_stat_is_an_error_in_lanes_and_alone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("short"), vec![7u8; 1000]).unwrap();
        std::fs::write(dir.path().join("whole"), vec![8u8; 3000]).unwrap();
        let open = |name: &str| crate::items::open_content(&dir.path().join(name)).unwrap();
        let alg = Algorithms {
            md5: true,
            sha1: false,
            sha256: true,
        };
        let alone = crate::items::digest_sized(open("short"), alg, 5000).unwrap_err();
        assert!(
            alone.to_string().contains("changed while it was read"),
            "{alone}"
        );
        assert!(
            alone.to_string().contains("1000 of its 5000 bytes"),
            "{alone}"
        );
        for (alg, md5_kernel, sha_kernel) in setups() {
            let mut lanes = Lanes::<usize>::with_kernels(alg, md5_kernel, sha_kernel).unwrap();
            let mut got: Vec<Option<Result<Digests, String>>> = vec![None, None];
            let mut done = |i: usize, d: std::io::Result<Digests>| {
                got[i] = Some(d.map_err(|e| e.to_string()));
            };
            lanes.push(0, Source::File(open("short")), 5000, &mut done);
            lanes.push(1, Source::File(open("whole")), 3000, &mut done);
            lanes.flush(&mut done);
            let short = got[0].as_ref().unwrap().as_ref().unwrap_err();
            assert!(short.contains("changed while it was read"), "{short}");
            let whole = got[1].as_ref().unwrap().as_ref().unwrap();
            assert_eq!(
                whole.sha256(),
                Some(hex::encode(sha2::Sha256::digest(vec![8u8; 3000])).as_str())
            );
        }
    }
}
