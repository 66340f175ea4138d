//! Hashing many files at once on one thread: sixteen MD5 lanes fed from sixteen files.
//!
//! A sweep thread hands files to [`Lanes::push`] instead of hashing them one by one.
//! Each lane owns a 64 KiB window of one arena; the lanes are refilled with `read` as
//! they drain, and [`md5x16::compress`] advances all of them by as many blocks as the
//! shortest one holds. A file's last partial block is padded in place, and when its
//! lane has consumed it, the file's digests go to the caller's `done` callback with the
//! job it was pushed with. SHA-1 and SHA-256, when also wanted, are updated from the
//! same reads, so a file is still read once; bytes YARA has already read are hashed from
//! memory.

use crate::items::{Algorithms, Digests};
use crate::md5x16::{self, LANES};
use std::fs::File;
use std::io::Read;

/// Bytes of file data a lane holds between refills.
const WINDOW: usize = 64 * 1024;
/// Distance between lanes in the arena: a window plus room for two padding blocks.
const STRIDE: usize = WINDOW + 128;

/// Where a lane's bytes come from.
pub enum Source {
    /// A file opened for reading (see [`crate::items::open_content`]).
    File(File),
    /// Bytes already in memory (read whole for YARA): hashed without a second read.
    Memory(Vec<u8>),
}

enum Reader {
    File(File),
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
    sha256: Option<sha2::Sha256>,
}

/// Sixteen files in flight on one thread; `J` is what the caller needs back per file.
pub struct Lanes<J> {
    arena: Vec<u8>,
    state: md5x16::State,
    lanes: Vec<Option<Lane<J>>>,
    algorithms: Algorithms,
}

impl<J> Lanes<J> {
    /// Lanes for `algorithms` (which must include MD5), or `None` where the CPU has
    /// neither the AVX-512 nor the AVX2 kernel.
    pub fn new(algorithms: Algorithms) -> Option<Self> {
        if !algorithms.md5 || !md5x16::available() {
            return None;
        }
        Some(Lanes {
            arena: vec![0u8; LANES * STRIDE],
            state: md5x16::INIT,
            lanes: (0..LANES).map(|_| None).collect(),
            algorithms,
        })
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
            Source::File(f) => Reader::File(f),
            Source::Memory(v) => Reader::Memory(std::io::Cursor::new(v)),
        };
        while !self.lanes.iter().any(Option::is_none) {
            self.pump(done);
        }
        let Some(l) = self.lanes.iter().position(Option::is_none) else {
            return;
        };
        for word in 0..4 {
            self.state[word][l] = md5x16::INIT[word][l];
        }
        let alg = self.algorithms;
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
            sha256: alg.sha256.then(<sha2::Sha256 as sha2::Digest>::new),
        });
    }

    /// Completes every file in flight.
    pub fn flush(&mut self, done: &mut dyn FnMut(J, std::io::Result<Digests>)) {
        while self.lanes.iter().any(Option::is_some) {
            self.pump(done);
        }
    }

    /// Refills the lanes that ran dry, then advances all of them together.
    fn pump(&mut self, done: &mut dyn FnMut(J, std::io::Result<Digests>)) {
        for l in 0..LANES {
            if let Err(e) = self.refill(l) {
                if let Some(lane) = self.lanes[l].take() {
                    done(lane.job, Err(e));
                }
            }
        }
        let blocks = self
            .lanes
            .iter()
            .flatten()
            .map(|lane| (lane.filled - lane.start) / 64)
            .min();
        let Some(blocks) = blocks else {
            return;
        };
        let offsets: [i32; LANES] = std::array::from_fn(|l| {
            let start = self.lanes[l].as_ref().map_or(0, |lane| lane.start);
            (l * STRIDE + start) as i32
        });
        // Every lane stays inside its stride: an active lane holds at least `blocks * 64`
        // unconsumed bytes there; an idle one reads from its stride's start, and a lane
        // never holds more than a stride.
        md5x16::compress(&mut self.state, &self.arena, &offsets, blocks);
        for l in 0..LANES {
            let finished = match &mut self.lanes[l] {
                Some(lane) => {
                    lane.start += blocks * 64;
                    lane.padded && lane.start == lane.filled
                }
                None => false,
            };
            if finished {
                if let Some(lane) = self.lanes[l].take() {
                    let md5 = md5x16::digest(&self.state, l);
                    done(
                        lane.job,
                        Ok(Digests::new(
                            Some(hex::encode(md5)),
                            lane.sha1.map(|h| hex::encode(sha1::Digest::finalize(h))),
                            lane.sha256.map(|h| hex::encode(sha2::Digest::finalize(h))),
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
                let room = WINDOW - lane.filled;
                lane.filled += n;
                lane.total += n as u64;
                lane.eof = n == 0 || (n < room && lane.total >= lane.expected);
            } else {
                let mut tail = [0u8; 128];
                let n = md5x16::pad_tail(&buf[..lane.filled], lane.total, &mut tail);
                buf[..n * 64].copy_from_slice(&tail[..n * 64]);
                lane.filled = n * 64;
                lane.padded = true;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use md5::Digest as _;

    #[test]
    fn many_files_of_every_size_hash_as_md5_sha1_and_sha256_do() {
        let alg = Algorithms {
            md5: true,
            sha1: true,
            sha256: true,
        };
        let Some(mut lanes) = Lanes::<usize>::new(alg) else {
            eprintln!("no AVX-512F or AVX2 on this CPU: multi-file hashing not tested here");
            return;
        };
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
            assert_eq!(
                (d.md5(), d.sha1(), d.sha256()),
                (Some(w.0.as_str()), Some(w.1.as_str()), Some(w.2.as_str())),
                "size {}",
                sizes[i]
            );
        }
    }
}
