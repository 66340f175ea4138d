//! Streamed authenticated encryption of quarantined objects.
//!
//! Objects are encrypted so that a quarantined sample cannot be executed or
//! picked up by another scanner from the store, and authenticated so that
//! tampering or truncation is detected at restore. The stream format (in the
//! spirit of the STREAM construction) lets a 50 MB object be processed in
//! 64 KiB chunks:
//!
//! ```text
//! header  = MAGIC (8) | nonce prefix (15, random per object) | chunk size (u32 LE)
//! chunk i = XChaCha20-Poly1305(key, nonce = prefix | i (u64 BE) | last (1 byte),
//!                              aad = header | object id, plaintext_i)
//! ```
//!
//! Every chunk but the last carries exactly `chunk size` plaintext bytes; the
//! last one carries fewer (possibly zero) and has the `last` flag set, so
//! truncation, reordering and appending are all detected.

use std::io::{self, Read, Write};

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use rand::RngCore;

/// Magic bytes at the start of every stored object.
pub const MAGIC: &[u8; 8] = b"RPQOBJ01";
/// Plaintext bytes per chunk.
pub const CHUNK: usize = 64 * 1024;
const PREFIX: usize = 15;
const TAG: usize = 16;
/// Header length in bytes.
pub const HEADER_LEN: usize = 8 + PREFIX + 4;

fn nonce(prefix: &[u8], counter: u64, last: bool) -> XNonce {
    let mut n = [0u8; 24];
    n[..PREFIX].copy_from_slice(prefix);
    n[PREFIX..PREFIX + 8].copy_from_slice(&counter.to_be_bytes());
    n[23] = last as u8;
    *XNonce::from_slice(&n)
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Error while encrypting.
#[derive(Debug)]
pub(crate) enum EncryptError {
    /// Reading the source failed.
    Read(io::Error),
    /// Writing the destination failed.
    Write(io::Error),
    /// The source grew beyond the given limit while being read.
    TooLarge(u64),
}

/// Encrypts `src` into `dst`; `observe` sees every plaintext chunk (for
/// hashing). Stops with [`EncryptError::TooLarge`] once more than `limit`
/// plaintext bytes were read. Returns the plaintext length.
pub(crate) fn encrypt_stream(
    key: &[u8; 32],
    id: &str,
    src: &mut impl Read,
    dst: &mut impl Write,
    limit: u64,
    mut observe: impl FnMut(&[u8]),
) -> Result<u64, EncryptError> {
    let cipher = XChaCha20Poly1305::new(Key::from_slice(key));
    let mut prefix = [0u8; PREFIX];
    rand::thread_rng().fill_bytes(&mut prefix);
    let mut header = Vec::with_capacity(HEADER_LEN + id.len());
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&prefix);
    header.extend_from_slice(&(CHUNK as u32).to_le_bytes());
    dst.write_all(&header).map_err(EncryptError::Write)?;
    header.extend_from_slice(id.as_bytes()); // aad
    let mut buf = vec![0u8; CHUNK + TAG];
    let mut total = 0u64;
    let mut counter = 0u64;
    loop {
        buf.resize(CHUNK, 0);
        let n = read_full(src, &mut buf).map_err(EncryptError::Read)?;
        total += n as u64;
        if total > limit {
            return Err(EncryptError::TooLarge(total));
        }
        buf.truncate(n);
        observe(&buf);
        let last = n < CHUNK;
        cipher
            .encrypt_in_place(&nonce(&prefix, counter, last), &header, &mut buf)
            .map_err(|_| EncryptError::Write(io::Error::other("encryption failed")))?;
        dst.write_all(&buf).map_err(EncryptError::Write)?;
        counter += 1;
        if last {
            return Ok(total);
        }
    }
}

/// Error while decrypting.
#[derive(Debug, thiserror::Error)]
pub enum DecryptError {
    /// Reading the stored object or writing the plaintext failed.
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
    /// The object is not in the expected format, was modified, truncated or
    /// belongs to another id / key.
    #[error("stored object failed authentication: {0}")]
    Corrupt(&'static str),
}

/// Decrypts an object written by [`encrypt_stream`] into `dst`, returning the
/// plaintext length. Plaintext of a chunk is written only after that chunk
/// authenticated, so `dst` never receives unauthenticated bytes (a later
/// chunk can still fail: callers write to a temporary and discard it then).
pub fn decrypt_stream(
    key: &[u8; 32],
    id: &str,
    src: &mut impl Read,
    dst: &mut impl Write,
) -> Result<u64, DecryptError> {
    let cipher = XChaCha20Poly1305::new(Key::from_slice(key));
    let mut header = vec![0u8; HEADER_LEN];
    if read_full(src, &mut header)? != HEADER_LEN || &header[..8] != MAGIC {
        return Err(DecryptError::Corrupt("bad header"));
    }
    let prefix = header[8..8 + PREFIX].to_vec();
    let chunk =
        u32::from_le_bytes(header[8 + PREFIX..HEADER_LEN].try_into().unwrap_or([0; 4])) as usize;
    if chunk == 0 || chunk > 16 << 20 {
        return Err(DecryptError::Corrupt("bad chunk size"));
    }
    header.extend_from_slice(id.as_bytes());
    let mut buf = vec![0u8; chunk + TAG];
    let mut total = 0u64;
    let mut counter = 0u64;
    loop {
        buf.resize(chunk + TAG, 0);
        let n = read_full(src, &mut buf)?;
        let last = n < chunk + TAG;
        if n < TAG {
            return Err(DecryptError::Corrupt("truncated"));
        }
        buf.truncate(n);
        cipher
            .decrypt_in_place(&nonce(&prefix, counter, last), &header, &mut buf)
            .map_err(|_| DecryptError::Corrupt("authentication tag mismatch"))?;
        dst.write_all(&buf)?;
        total += buf.len() as u64;
        counter += 1;
        if last {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(len: usize) {
        let key = [7u8; 32];
        let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        let mut enc = Vec::new();
        let n = encrypt_stream(&key, "abc", &mut &data[..], &mut enc, u64::MAX, |_| {}).unwrap();
        assert_eq!(n as usize, len);
        let mut dec = Vec::new();
        decrypt_stream(&key, "abc", &mut &enc[..], &mut dec).unwrap();
        assert_eq!(dec, data);
        // wrong id, truncation and bit flips are detected
        assert!(decrypt_stream(&key, "abd", &mut &enc[..], &mut Vec::new()).is_err());
        assert!(decrypt_stream(&key, "abc", &mut &enc[..enc.len() - 1], &mut Vec::new()).is_err());
        if len >= CHUNK {
            let cut = HEADER_LEN + CHUNK + TAG;
            assert!(decrypt_stream(&key, "abc", &mut &enc[..cut], &mut Vec::new()).is_err());
        }
        let mut bad = enc.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(decrypt_stream(&key, "abc", &mut &bad[..], &mut Vec::new()).is_err());
    }

    #[test]
    fn roundtrips() {
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK] {
            roundtrip(len);
        }
    }

    #[test]
    fn limit_enforced() {
        let data = vec![0u8; 1000];
        let r = encrypt_stream(&[0; 32], "x", &mut &data[..], &mut Vec::new(), 999, |_| {});
        assert!(matches!(r, Err(EncryptError::TooLarge(_))));
    }
}
