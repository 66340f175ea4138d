//! Revoked device certificates: the sandbox keeps the administration server's
//! certificate revocation list (CRL) and refuses, in the TLS handshake, a device the
//! server has revoked.
//!
//! Why a CRL rather than asking the server per request: the sandbox may run where the
//! server is not reachable for a while, and a signed list needs no account on the server
//! (the server publishes it unauthenticated at `/api/v1/pki/crl`). The list is fetched
//! again every [`DEFAULT_REFRESH`]; a failed fetch keeps the last good list, and a list
//! past its `nextUpdate` (seven days after the server signed it) no longer admits anyone,
//! so a sandbox cut off from its server stops trusting stale revocation state.
//!
//! A list is taken only if the client CA signed it, it has not expired, and its CRL
//! number is not below the one in force ([`RevocationList::parse`],
//! [`RevocationList::may_follow`]): a wrong file must not lock every device out, nor an
//! old one undo a revocation. Each request is checked against the list in force, not only
//! the handshake: a revoked device must not keep a connection it opened before.
//!
//! Until a first list is loaded, enrolled clients are told to retry later
//! ([`crate::SandboxError::RevocationUnknown`]): the sandbox cannot tell whether they
//! are still enrolled.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateRevocationListDer;

use crate::SandboxError;

/// How often the list is fetched again.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(60);

/// Where the revocation list comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CrlSource {
    /// The administration server's list, `https://SERVER/api/v1/pki/crl`, fetched over
    /// TLS that trusts only the client CA (which signed the server's certificate).
    Url(String),
    /// A PEM file that something else keeps current.
    File(PathBuf),
}

impl CrlSource {
    /// `https://…` is a URL, anything else a file path. Plain `http://` is refused: the
    /// list is signed, but an attacker in the path could still withhold new revocations.
    /// So is a URL with a user name or password: the list needs none, and it would be
    /// written in logs.
    pub fn parse(text: &str) -> Result<CrlSource, String> {
        let scheme = text.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        if scheme.as_deref() == Some("https") {
            let authority = text["https://".len()..].split(['/', '?', '#']).next();
            if authority.is_some_and(|a| a.contains('@')) {
                return Err(
                    "the revocation list URL must not hold a user name or password: the server publishes the list to anyone".into(),
                );
            }
            Ok(CrlSource::Url(text.to_string()))
        } else if scheme.is_some_and(|s| s == "http") {
            Err(format!(
                "{text}: the revocation list must come over https:// (the server's own URL) or from a file"
            ))
        } else if text.is_empty() {
            Err("an empty revocation list source".into())
        } else {
            Ok(CrlSource::File(PathBuf::from(text)))
        }
    }
}

impl std::fmt::Display for CrlSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CrlSource::Url(u) => f.write_str(u),
            CrlSource::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Largest list accepted: a CRL entry is about 40 bytes, so this holds far more devices
/// than one server manages, and keeps a hostile source from filling memory.
const MAX_CRL_BYTES: usize = 16 << 20;

/// Reads every CRL in a PEM text; at least one is required.
pub fn parse_pem(pem: &[u8]) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let mut crls = Vec::new();
    for crl in CertificateRevocationListDer::pem_slice_iter(pem) {
        crls.push(crl.map_err(|e| format!("not a PEM revocation list: {e}"))?);
    }
    if crls.is_empty() {
        return Err("no revocation list (-----BEGIN X509 CRL-----) in it".into());
    }
    Ok(crls)
}

/// A revocation list checked against the client CA: the one the TLS layer and each
/// request are judged by.
#[derive(Debug, Clone)]
pub struct RevocationList {
    /// The list, DER, for the TLS layer.
    pub der: CertificateRevocationListDer<'static>,
    /// Serial numbers it revokes (big-endian, no leading zero bytes).
    revoked: HashSet<Vec<u8>>,
    /// Its CRL number (big-endian, no leading zero bytes), compared as a number.
    number: Vec<u8>,
    /// Its `nextUpdate`, Unix seconds.
    pub next_update: i64,
}

/// A serial or CRL number as compared here: no leading zero bytes (DER adds one where
/// the top bit is set).
fn unsigned(bytes: &[u8]) -> Vec<u8> {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    bytes[first..].to_vec()
}

impl RevocationList {
    /// The newest of the lists in `pem` that the CA in `ca_pem` signed and that have not
    /// expired; the others are passed over (a file kept by appending each new list). An
    /// error, with the first list's reason, when no list is usable: one no certificate of
    /// `ca_pem` signed, one past its `nextUpdate`, one without a CRL number or
    /// `nextUpdate`.
    pub fn parse(pem: &[u8], ca_pem: &str, now_secs: i64) -> Result<RevocationList, String> {
        let mut cas = Vec::new();
        for c in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            cas.push(c.map_err(|e| format!("client CA: {e}"))?);
        }
        let mut newest: Option<RevocationList> = None;
        let mut first_refusal = None;
        for der in parse_pem(pem)? {
            match Self::check(der, &cas, now_secs) {
                Ok(list) => {
                    if newest.as_ref().is_none_or(|n| list.newer_than(n)) {
                        newest = Some(list);
                    }
                }
                Err(why) => {
                    first_refusal.get_or_insert(why);
                }
            }
        }
        newest.ok_or_else(|| first_refusal.unwrap_or_else(|| "no revocation list in it".into()))
    }

    /// One list, checked against the client CA's certificates `cas`.
    fn check(
        der: CertificateRevocationListDer<'static>,
        cas: &[rustls_pki_types::CertificateDer<'_>],
        now_secs: i64,
    ) -> Result<RevocationList, String> {
        use x509_parser::prelude::FromDer;
        let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(&der)
            .map_err(|e| format!("not a revocation list: {e}"))?;
        let signed = cas.iter().any(|ca| {
            x509_parser::certificate::X509Certificate::from_der(ca).is_ok_and(|(_, ca)| {
                crl.issuer() == ca.subject() && crl.verify_signature(ca.public_key()).is_ok()
            })
        });
        if !signed {
            return Err(format!(
                "a list issued by {} and not signed by the client CA: give the administration server's own list",
                crl.issuer()
            ));
        }
        let next_update = crl
            .next_update()
            .ok_or("a list without a nextUpdate: the server's lists have one")?
            .timestamp();
        if next_update <= now_secs {
            return Err(format!(
                "a list that expired {} s ago (nextUpdate passed): fetch a fresh one",
                now_secs - next_update
            ));
        }
        let number = unsigned(
            &crl.crl_number()
                .ok_or("a list without a CRL number: the server's lists have one")?
                .to_bytes_be(),
        );
        let revoked = crl
            .iter_revoked_certificates()
            .map(|r| unsigned(r.raw_serial()))
            .collect();
        Ok(RevocationList {
            revoked,
            der,
            number,
            next_update,
        })
    }

    fn newer_than(&self, other: &RevocationList) -> bool {
        (self.number.len(), &self.number) > (other.number.len(), &other.number)
    }

    /// Whether this list may replace `current`: not an older list (a lower CRL number),
    /// which would undo the revocations made since.
    pub fn may_follow(&self, current: &RevocationList) -> Result<(), String> {
        if current.newer_than(self) {
            return Err(format!(
                "an older list than the one in force (CRL number {} below {}): kept the newer one",
                decimal(&self.number),
                decimal(&current.number)
            ));
        }
        Ok(())
    }

    /// Whether the certificate with this serial (big-endian) is revoked.
    pub fn revokes(&self, serial: &[u8]) -> bool {
        self.revoked.contains(&unsigned(serial))
    }
}

/// A CRL number in decimal, as `openssl crl -text` shows it.
fn decimal(n: &[u8]) -> String {
    x509_parser::num_bigint::BigUint::from_bytes_be(n).to_string()
}

/// The serial number of a DER certificate (big-endian), if it parses.
pub fn certificate_serial(der: &[u8]) -> Option<Vec<u8>> {
    use x509_parser::prelude::FromDer;
    x509_parser::certificate::X509Certificate::from_der(der)
        .ok()
        .map(|(_, c)| unsigned(c.raw_serial()))
}

/// The text of an error and of its causes: reqwest's own says only "error sending
/// request", and the cause (refused, an untrusted certificate) is what helps.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Fetches the list from `source` once and checks it against the client CA.
pub async fn fetch(
    source: &CrlSource,
    http: &reqwest::Client,
    ca_pem: &str,
) -> Result<RevocationList, String> {
    let bytes = match source {
        CrlSource::File(path) => {
            // Read with the limit, not after a stat: the file may grow in between.
            use std::io::Read;
            let mut bytes = Vec::new();
            std::fs::File::open(path)
                .and_then(|f| f.take(MAX_CRL_BYTES as u64 + 1).read_to_end(&mut bytes))
                .map_err(|e| format!("{}: {e}", path.display()))?;
            if bytes.len() > MAX_CRL_BYTES {
                return Err(format!("{}: larger than 16 MiB", path.display()));
            }
            bytes
        }
        CrlSource::Url(url) => {
            let resp = http
                .get(url)
                .send()
                .await
                .map_err(|e| format!("{url}: {}", with_causes(&e)))?;
            if !resp.status().is_success() {
                return Err(format!("{url}: {}", resp.status()));
            }
            if resp.content_length().unwrap_or(0) > MAX_CRL_BYTES as u64 {
                return Err(format!("{url}: larger than 16 MiB"));
            }
            let body = resp.bytes().await.map_err(|e| format!("{url}: {e}"))?;
            if body.len() > MAX_CRL_BYTES {
                return Err(format!("{url}: larger than 16 MiB"));
            }
            body.to_vec()
        }
    };
    RevocationList::parse(&bytes, ca_pem, crate::util::now_secs() as i64)
        .map_err(|e| format!("{source}: {e}"))
}

/// The TLS configuration connections are accepted with, swapped when a new list arrives.
#[derive(Clone)]
pub struct TlsState {
    current: Arc<RwLock<Accepting>>,
}

/// One TLS configuration and the revocation list in force with it.
#[derive(Clone)]
pub struct Accepting {
    /// The configuration handshakes use.
    pub config: Arc<rustls::ServerConfig>,
    /// The list each request is checked against; `None` while a required list is still
    /// missing (or where none is required).
    pub list: Option<Arc<RevocationList>>,
}

impl TlsState {
    /// Starts with `config`.
    pub fn new(config: Arc<rustls::ServerConfig>, list: Option<Arc<RevocationList>>) -> TlsState {
        TlsState {
            current: Arc::new(RwLock::new(Accepting { config, list })),
        }
    }

    /// What the next handshake uses.
    pub fn current(&self) -> Accepting {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the configuration for handshakes from now on.
    pub fn replace(&self, accepting: Accepting) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = accepting;
    }
}

/// An HTTPS client that trusts only `ca_pem` (the administration server's CA, which
/// signed the server's certificate) for fetching the list.
pub fn ca_client(ca_pem: &str) -> Result<reqwest::Client, SandboxError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let c = c.map_err(|e| SandboxError::Tls(format!("client CA: {e}")))?;
        roots
            .add(c)
            .map_err(|e| SandboxError::Tls(format!("client CA: {e}")))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| SandboxError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .timeout(Duration::from_secs(20))
        .build()
        .map_err(|e| SandboxError::Tls(format!("cannot build the HTTPS client: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_urls_or_files_never_plain_http() {
        assert_eq!(
            CrlSource::parse("https://srv:8443/api/v1/pki/crl").unwrap(),
            CrlSource::Url("https://srv:8443/api/v1/pki/crl".into())
        );
        assert_eq!(
            CrlSource::parse("/etc/riposte/crl.pem").unwrap(),
            CrlSource::File("/etc/riposte/crl.pem".into())
        );
        assert!(CrlSource::parse("http://srv/api/v1/pki/crl")
            .unwrap_err()
            .contains("https://"));
        assert!(CrlSource::parse("").is_err());
        assert!(CrlSource::parse("HTTP://srv/api/v1/pki/crl")
            .unwrap_err()
            .contains("https://"));
        assert!(matches!(
            CrlSource::parse("HTTPS://srv/api/v1/pki/crl"),
            Ok(CrlSource::Url(_))
        ));
        assert!(CrlSource::parse("https://user:pw@srv/api/v1/pki/crl")
            .unwrap_err()
            .contains("user name or password"));
        assert!(matches!(
            CrlSource::parse("https://srv/api/v1/pki/crl?at=x@y"),
            Ok(CrlSource::Url(_))
        ));
    }

    /// Signs a list numbered `number`, issued `age_days` ago and valid for `valid_days`.
    fn crl(
        ca: &(rcgen::Certificate, rcgen::KeyPair),
        number: u64,
        age_days: i64,
        valid_days: i64,
    ) -> String {
        let this_update = time::OffsetDateTime::now_utc() - time::Duration::days(age_days);
        rcgen::CertificateRevocationListParams {
            this_update,
            next_update: this_update + time::Duration::days(valid_days),
            crl_number: rcgen::SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: Vec::new(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&ca.0, &ca.1)
        .unwrap()
        .pem()
        .unwrap()
    }

    fn ca() -> (rcgen::Certificate, rcgen::KeyPair) {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        (params.self_signed(&key).unwrap(), key)
    }

    /// Of several lists in one text, the newest usable one is taken; an expired list or
    /// one of another CA is passed over, and refused only when nothing else is there.
    #[test]
    fn the_newest_usable_list_of_a_file_is_taken() {
        let (ours, theirs) = (ca(), ca());
        let now = crate::util::now_secs() as i64;
        let ca_pem = ours.0.pem();
        let mixed = [
            crl(&ours, 1, 10, 7),
            crl(&theirs, 9, 0, 7),
            crl(&ours, 3, 0, 7),
            crl(&ours, 2, 0, 7),
        ]
        .concat();
        let list = RevocationList::parse(mixed.as_bytes(), &ca_pem, now).unwrap();
        assert_eq!(decimal(&list.number), "3");
        let e = RevocationList::parse(crl(&ours, 1, 10, 7).as_bytes(), &ca_pem, now).unwrap_err();
        assert!(e.contains("expired"), "{e}");
        let e = RevocationList::parse(crl(&theirs, 1, 0, 7).as_bytes(), &ca_pem, now).unwrap_err();
        assert!(e.contains("not signed by the client CA"), "{e}");
        let older = RevocationList::parse(crl(&ours, 2, 0, 7).as_bytes(), &ca_pem, now).unwrap();
        let e = older.may_follow(&list).unwrap_err();
        assert!(e.contains("CRL number 2 below 3"), "{e}");
        assert!(list.may_follow(&older).is_ok());
    }

    #[test]
    fn a_text_without_a_list_is_refused() {
        assert!(parse_pem(b"").unwrap_err().contains("no revocation list"));
        let cert = rcgen::generate_simple_self_signed(vec!["x".into()]).unwrap();
        assert!(parse_pem(cert.cert.pem().as_bytes())
            .unwrap_err()
            .contains("no revocation list"));
    }
}
