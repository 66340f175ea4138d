//! Password hashing (Argon2id) and sealing of the special account's password in settings.
//!
//! Account passwords are only ever stored as Argon2id hashes. The special account's password
//! must also be kept recoverable, because agents need it to authenticate; in policies and
//! device settings it is sealed with ChaCha20-Poly1305 under a server key in `DIR/secret.key`.

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use std::path::Path;

/// Hashes a password with Argon2id (the crate's default algorithm and parameters).
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .unwrap_or_default()
}

/// Checks a password against an Argon2 PHC string; a malformed hash never matches.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A hash to verify against when the account does not exist, so that timing does not
/// reveal which account names exist.
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password("not a real password"))
}

/// Seals and opens secrets stored in settings.
#[derive(Clone)]
pub struct Sealer {
    cipher: ChaCha20Poly1305,
    key: [u8; 32],
}

impl Sealer {
    /// Loads the key from `DIR/secret.key`, creating it on first start.
    pub fn load_or_create(dir: &Path) -> std::io::Result<Sealer> {
        let key = crate::files::read_or_create_secret_file(&dir.join("secret.key"), || {
            Ok(rand::random::<[u8; 32]>().to_vec())
        })?;
        if key.len() != 32 {
            return Err(std::io::Error::other(format!(
                "{} must hold 32 bytes; restore it from a backup",
                dir.join("secret.key").display()
            )));
        }
        let mut raw = [0u8; 32];
        raw.copy_from_slice(&key);
        Ok(Sealer {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
            key: raw,
        })
    }

    /// A value that tells sealing keys apart without revealing them (a key derived for
    /// nothing else), for processes on one database to check they share one.
    pub fn check_value(&self) -> String {
        hex::encode(self.derive_key("key check"))
    }

    /// A key for another purpose, derived from the sealing key: the same in every server
    /// process that shares `secret.key` (as processes on one database must), and after a
    /// restart. The console signs its CSRF tokens with one, so a form rendered by one
    /// process is accepted by another.
    pub fn derive_key(&self, purpose: &str) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"riposte derived key\0");
        h.update(purpose.as_bytes());
        h.update(b"\0");
        h.update(self.key);
        h.finalize().into()
    }

    /// Encrypts `secret`; the result is base64 text.
    pub fn seal(&self, secret: &str) -> String {
        let nonce: [u8; 12] = rand::random();
        let ct = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), secret.as_bytes())
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend(ct);
        base64::engine::general_purpose::STANDARD.encode(out)
    }

    /// Decrypts what [`Sealer::seal`] produced; `None` if it was tampered with or another key.
    pub fn open(&self, sealed: &str) -> Option<String> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .ok()?;
        if raw.len() < 12 {
            return None;
        }
        let pt = self
            .cipher
            .decrypt(Nonce::from_slice(&raw[..12]), &raw[12..])
            .ok()?;
        String::from_utf8(pt).ok()
    }
}

/// Compares two secrets in time independent of where they differ.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A random token for sessions and enrollment: 43 letters and digits (256 bits).
///
/// Letters and digits only, not base64url: a token that began with `-` was taken for an
/// option by command lines (`riposte agent --enroll-token -K…`), one token in 64.
pub fn random_token() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(43);
    while out.len() < 43 {
        // Rejection sampling: 248 = 4 × 62, so every character is equally likely.
        let b: u8 = rand::random();
        if b < 248 {
            out.push(ALPHABET[usize::from(b % 62)] as char);
        }
    }
    out
}

/// How tokens are stored: their SHA-256, so a database leak gives no usable token.
pub fn token_hash(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_letters_and_digits_and_distinct() {
        let tokens: std::collections::HashSet<String> = (0..2000).map(|_| random_token()).collect();
        assert_eq!(tokens.len(), 2000);
        for t in &tokens {
            assert_eq!(t.len(), 43, "{t}");
            assert!(t.bytes().all(|b| b.is_ascii_alphanumeric()), "{t}");
        }
        // Every character of the alphabet turns up (no bias to a subset).
        let seen: std::collections::HashSet<char> = tokens.iter().flat_map(|t| t.chars()).collect();
        assert_eq!(seen.len(), 62);
    }

    #[test]
    fn hashing_and_sealing() {
        let h = hash_password("correct horse");
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong", &h));
        assert!(!verify_password("x", "not a hash"));
        let dir = tempfile::tempdir().unwrap();
        let s = Sealer::load_or_create(dir.path()).unwrap();
        let sealed = s.seal("p4ssword");
        assert!(!sealed.contains("p4ssword"));
        assert_eq!(s.open(&sealed).as_deref(), Some("p4ssword"));
        // The key persists: a second load opens the same secret.
        let s2 = Sealer::load_or_create(dir.path()).unwrap();
        assert_eq!(s2.open(&sealed).as_deref(), Some("p4ssword"));
        assert_eq!(s.open("AAAA"), None);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("secret.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(
            constant_time_eq("abc", "abc")
                && !constant_time_eq("abc", "abd")
                && !constant_time_eq("a", "ab")
        );
    }
}
