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
//! Until a first list is loaded, enrolled clients are told to retry later
//! ([`crate::SandboxError::RevocationUnknown`]): the sandbox cannot tell whether they
//! are still enrolled.

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
    pub fn parse(text: &str) -> Result<CrlSource, String> {
        if text.starts_with("https://") {
            Ok(CrlSource::Url(text.to_string()))
        } else if text.starts_with("http://") {
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

/// Fetches the list from `source` once.
pub async fn fetch(
    source: &CrlSource,
    http: &reqwest::Client,
) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let bytes = match source {
        CrlSource::File(path) => {
            let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
            if meta.len() > MAX_CRL_BYTES as u64 {
                return Err(format!("{}: larger than 16 MiB", path.display()));
            }
            std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?
        }
        CrlSource::Url(url) => {
            let resp = http
                .get(url)
                .send()
                .await
                .map_err(|e| format!("{url}: {e}"))?;
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
    parse_pem(&bytes).map_err(|e| format!("{source}: {e}"))
}

/// The TLS configuration connections are accepted with, swapped when a new list arrives.
#[derive(Clone)]
pub struct TlsState {
    current: Arc<RwLock<Accepting>>,
}

/// One TLS configuration and what it can tell about client certificates.
#[derive(Clone)]
pub struct Accepting {
    /// The configuration handshakes use.
    pub config: Arc<rustls::ServerConfig>,
    /// Whether a client certificate that passed this configuration's handshake is known
    /// not to be revoked (false while a required list is still missing).
    pub revocation_known: bool,
}

impl TlsState {
    /// Starts with `config`.
    pub fn new(config: Arc<rustls::ServerConfig>, revocation_known: bool) -> TlsState {
        TlsState {
            current: Arc::new(RwLock::new(Accepting {
                config,
                revocation_known,
            })),
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
