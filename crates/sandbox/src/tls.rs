//! TLS for the sandbox protocol: a self-signed server certificate created on first
//! start, and a client configuration that pins exactly that certificate.
//!
//! Why pinning instead of a CA: the sandbox is deployed inside the customer's network
//! without a public name; the agent is given `cert.pem` and trusts nothing else, so a
//! network attacker cannot impersonate the sandbox even with a publicly trusted cert.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::util::write_atomic;
use crate::SandboxError;

/// The ring crypto provider.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Load `DIR/cert.pem` and `DIR/key.pem`, creating a self-signed pair for `names`
/// (plus `localhost`, `127.0.0.1`, `::1`) on first start. Returns `(cert_pem, key_pem)`.
pub fn load_or_create(dir: &Path, names: &[String]) -> Result<(String, String), SandboxError> {
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    if cert_path.exists() && key_path.exists() {
        let cert = std::fs::read_to_string(&cert_path)
            .map_err(|e| SandboxError::io("read", &cert_path, e))?;
        let key = std::fs::read_to_string(&key_path)
            .map_err(|e| SandboxError::io("read", &key_path, e))?;
        return Ok((cert, key));
    }
    let mut sans: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    sans.extend(names.iter().cloned());
    let ck = rcgen::generate_simple_self_signed(sans).map_err(|e| {
        SandboxError::Tls(format!("cannot generate the self-signed certificate: {e}"))
    })?;
    let cert = ck.cert.pem();
    let key = ck.key_pair.serialize_pem();
    write_atomic(&key_path, key.as_bytes(), Some(0o600))?;
    write_atomic(&cert_path, cert.as_bytes(), Some(0o644))?;
    Ok((cert, key))
}

/// First certificate in a PEM string.
pub fn cert_der(cert_pem: &str) -> Result<CertificateDer<'static>, SandboxError> {
    CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| {
        SandboxError::Tls(format!(
            "no certificate in the PEM given ({e}); pass the server's cert.pem"
        ))
    })
}

/// Server configuration for `cert_pem`/`key_pem`. With `client_ca_pem`, a client may
/// present a certificate, and one that does not chain to that CA ends the handshake; one
/// that presents none gets through TLS (the webhook of an external sandbox signs its
/// messages instead) and the handlers decide ([`crate::service::SandboxConfig::client_ca_pem`]).
///
/// With `crls` as well, a client certificate they revoke ends the handshake; a list past
/// its `nextUpdate` is refused by each request instead ([`crate::revocation`]).
pub fn server_config(
    cert_pem: &str,
    key_pem: &str,
    client_ca_pem: Option<&str>,
    crls: Option<Vec<CertificateRevocationListDer<'static>>>,
) -> Result<rustls::ServerConfig, SandboxError> {
    let cert = cert_der(cert_pem)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| SandboxError::Tls(format!("cannot read key.pem: {e}")))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| SandboxError::Tls(e.to_string()))?;
    let builder = match client_ca_pem {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                let c = c.map_err(|e| {
                    SandboxError::Tls(format!("cannot read the client CA certificate: {e}"))
                })?;
                roots.add(c).map_err(|e| {
                    SandboxError::Tls(format!("unusable client CA certificate: {e}"))
                })?;
            }
            if roots.is_empty() {
                return Err(SandboxError::Tls(
                    "no certificate in the client CA file: give the administration server's ca.pem"
                        .into(),
                ));
            }
            let mut verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .allow_unauthenticated();
            if let Some(crls) = crls {
                // An expired list is refused by each request (`App::admit`), which can
                // answer 503 with Retry-After where a failed handshake says only
                // "unknown ca".
                verifier = verifier.with_crls(crls).only_check_end_entity_revocation();
            }
            let verifier = verifier
                .build()
                .map_err(|e| SandboxError::Tls(format!("client CA: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut cfg = builder
        .with_single_cert(vec![cert], key)
        .map_err(|e| SandboxError::Tls(format!("certificate and key do not match: {e}")))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Accepts exactly one server certificate (byte-for-byte), whatever the host name.
#[derive(Debug)]
struct PinnedCert {
    der: Vec<u8>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.der.as_slice() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "server certificate does not match the pinned sandbox certificate".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A client's certificate and key: an agent's device identity, issued by the
/// administration server's CA, which a sandbox started with that CA asks for.
#[derive(Clone)]
pub struct ClientIdentity {
    /// The certificate (PEM).
    pub cert_pem: String,
    /// Its private key (PEM).
    pub key_pem: String,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is a secret: never in a log line.
        f.debug_struct("ClientIdentity").finish_non_exhaustive()
    }
}

/// Client configuration trusting only the certificate in `cert_pem`, presenting
/// `identity` when the sandbox asks for a client certificate.
pub fn pinned_client_config(
    cert_pem: &str,
    identity: Option<&ClientIdentity>,
) -> Result<rustls::ClientConfig, SandboxError> {
    let der = cert_der(cert_pem)?.as_ref().to_vec();
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| SandboxError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCert { der, provider }));
    let cfg = match identity {
        None => builder.with_no_client_auth(),
        Some(id) => {
            let chain = CertificateDer::pem_slice_iter(id.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| {
                    SandboxError::Tls(format!("cannot read the device certificate: {e}"))
                })?;
            let key = PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes())
                .map_err(|e| SandboxError::Tls(format!("cannot read the device key: {e}")))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| SandboxError::Tls(format!("device certificate and key: {e}")))?
        }
    };
    Ok(cfg)
}
