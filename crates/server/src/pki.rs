//! The server's own certificate authority: created on first start, it signs the server's
//! TLS certificate and every enrolled device's client certificate. Agents pin its
//! certificate (`DIR/ca.pem`) at enrollment; the private key never leaves `DIR` (mode 0600).

use crate::files::{read_or_create_secret_file, write_private_file};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams,
    CertificateSigningRequestParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SerialNumber,
};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;
use time::{Duration, OffsetDateTime};

/// How long a revocation list from [`Authority::revocation_list`] stays valid.
pub const CRL_VALIDITY: Duration = Duration::days(7);

/// Errors of the certificate authority.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate error: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("TLS configuration error: {0}")]
    Tls(#[from] rustls::Error),
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("the certificate signing request is not valid: {0}")]
    BadCsr(String),
    #[error("bad PEM in {0}")]
    Pem(String),
    #[error(
        "{key} is not the key of the certificate in {cert}: copy both from the same server \
         (a server on a shared database needs the first one's ca.pem, ca.key and secret.key)"
    )]
    KeyMismatch { key: String, cert: String },
}

/// The CA: its certificate (PEM) and what is needed to sign with it.
pub struct Authority {
    pub ca_pem: String,
    ca_cert: rcgen::Certificate,
    ca_key: KeyPair,
}

impl Authority {
    /// Loads the CA from `dir`, creating it on first start.
    pub fn load_or_create(dir: &Path) -> Result<Authority, PkiError> {
        let cert_path = dir.join("ca.pem");
        let key_path = dir.join("ca.key");
        let key_pem = read_or_create_secret_file(&key_path, || {
            Ok(KeyPair::generate()
                .map_err(std::io::Error::other)?
                .serialize_pem()
                .into_bytes())
        })
        .map_err(|source| PkiError::Io {
            path: key_path.display().to_string(),
            source,
        })?;
        let key_pem = String::from_utf8(key_pem)
            .map_err(|_| PkiError::Pem(key_path.display().to_string()))?;
        let ca_key = KeyPair::from_pem(&key_pem)?;
        let params = match std::fs::read_to_string(&cert_path) {
            Ok(pem) => CertificateParams::from_ca_cert_pem(&pem)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut params = CertificateParams::new(Vec::<String>::new())?;
                let mut dn = DistinguishedName::new();
                dn.push(DnType::CommonName, "Riposte administration server CA");
                dn.push(DnType::OrganizationName, "Riposte");
                params.distinguished_name = dn;
                params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
                params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
                params
            }
            Err(source) => {
                return Err(PkiError::Io {
                    path: cert_path.display().to_string(),
                    source,
                })
            }
        };
        // Re-signing with the same key and subject gives an issuer identical to ca.pem for
        // the purpose of chaining; ca.pem itself is written only once.
        let ca_cert = params.self_signed(&ca_key)?;
        let ca_pem = match std::fs::read_to_string(&cert_path) {
            // The key must be the certificate's: with another (a ca.key not copied with
            // ca.pem) everything it signs fails to verify against the pinned ca.pem.
            Ok(pem) => {
                use rcgen::PublicKeyData;
                let der = CertificateDer::from_pem_slice(pem.as_bytes())
                    .map_err(|_| PkiError::Pem(cert_path.display().to_string()))?;
                let facts = certificate_facts(&der)
                    .ok_or_else(|| PkiError::Pem(cert_path.display().to_string()))?;
                if ca_key.der_bytes() != facts.public_key.as_slice() {
                    return Err(PkiError::KeyMismatch {
                        key: key_path.display().to_string(),
                        cert: cert_path.display().to_string(),
                    });
                }
                pem
            }
            Err(_) => {
                let pem = ca_cert.pem();
                crate::files::write_public_file(&cert_path, pem.as_bytes()).map_err(|source| {
                    PkiError::Io {
                        path: cert_path.display().to_string(),
                        source,
                    }
                })?;
                pem
            }
        };
        Ok(Authority {
            ca_pem,
            ca_cert,
            ca_key,
        })
    }

    /// Issues the server's TLS certificate for these names (DNS names or IP addresses),
    /// writing it and its key to `dir`; returns (chain, key).
    pub fn server_identity(
        &self,
        dir: &Path,
        names: &[String],
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.to_vec())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "Riposte administration server");
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.ca_cert, &self.ca_key)?;
        write_private_file(&dir.join("server.key"), key.serialize_pem().as_bytes()).map_err(
            |source| PkiError::Io {
                path: "server.key".into(),
                source,
            },
        )?;
        crate::files::write_public_file(&dir.join("server.pem"), cert.pem().as_bytes()).map_err(
            |source| PkiError::Io {
                path: "server.pem".into(),
                source,
            },
        )?;
        let key_der = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes())
            .map_err(|_| PkiError::Pem("server key".into()))?;
        Ok((vec![cert.der().clone(), self.ca_der()?], key_der))
    }

    /// The CA certificate in DER.
    pub fn ca_der(&self) -> Result<CertificateDer<'static>, PkiError> {
        CertificateDer::from_pem_slice(self.ca_pem.as_bytes())
            .map_err(|_| PkiError::Pem("ca.pem".into()))
    }

    /// Signs a device's certificate request, valid for `lifetime` from now; the subject is
    /// set by the server, not the agent. Returns the certificate (PEM) and its serial
    /// number (hex), which a revocation list names once the device is revoked.
    pub fn sign_device_csr(
        &self,
        csr_pem: &str,
        device_id: i64,
        lifetime: Duration,
    ) -> Result<(String, String), PkiError> {
        let mut csr = parse_csr(csr_pem)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("riposte-device-{device_id}"));
        csr.params.distinguished_name = dn;
        csr.params.subject_alt_names = Vec::new();
        csr.params.is_ca = IsCa::ExplicitNoCa;
        csr.params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        // Random rather than rcgen's default (a digest of the public key): an agent that
        // enrolls again with the same key must not be revoked by its old certificate's
        // entry.
        let mut serial: [u8; 16] = rand::random();
        serial[0] &= 0x7f;
        serial[0] |= 0x01;
        csr.params.serial_number = Some(SerialNumber::from_slice(&serial));
        // A bounded life, renewed over the channel (`renewal_due`): a key that leaked
        // stops working on its own, and every device moves to a fresh key regularly.
        // The hour before now absorbs a device clock a little behind the server's.
        let now = OffsetDateTime::now_utc();
        csr.params.not_before = now - Duration::hours(1);
        csr.params.not_after = now + lifetime;
        let cert = csr.signed_by(&self.ca_cert, &self.ca_key)?;
        Ok((cert.pem(), hex::encode(serial)))
    }

    /// A certificate revocation list, signed by this CA, naming `revoked` (serials in hex,
    /// revocation times in Unix milliseconds). It is valid for [`CRL_VALIDITY`]; readers
    /// fetch a fresh one well before that.
    pub fn revocation_list(&self, revoked: &[(String, i64)]) -> Result<String, PkiError> {
        let now = OffsetDateTime::now_utc();
        let revoked_certs = revoked
            .iter()
            .map(|(serial, at_ms)| {
                let serial = hex::decode(serial)
                    .map_err(|_| PkiError::Pem(format!("revoked serial {serial}")))?;
                let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(*at_ms) * 1_000_000)
                    .unwrap_or(now);
                Ok(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&serial),
                    revocation_time: at,
                    reason_code: None,
                    invalidity_date: None,
                })
            })
            .collect::<Result<Vec<_>, PkiError>>()?;
        // CRL numbers must grow: the issue time in milliseconds does, across processes.
        let number = u64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
        let params = CertificateRevocationListParams {
            this_update: now,
            next_update: now + CRL_VALIDITY,
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.ca_cert, &self.ca_key)?.pem()?)
    }

    /// Checks that a PEM certificate request parses, without signing it.
    pub fn check_csr(csr_pem: &str) -> Result<(), PkiError> {
        CertificateSigningRequestParams::from_pem(csr_pem)
            .map(|_| ())
            .map_err(|e| PkiError::BadCsr(e.to_string()))
    }

    /// TLS config for the agent channel: client certificates signed by this CA are required.
    pub fn agent_tls_config(
        &self,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Arc<rustls::ServerConfig>, PkiError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der()?)?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .map_err(|e| PkiError::Tls(rustls::Error::General(e.to_string())))?;
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)?;
        Ok(Arc::new(config))
    }
}

/// TLS config for the HTTPS API and console (no client certificates).
pub fn api_tls_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, PkiError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// What the server reads off a device's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFacts {
    /// The serial number, hex without leading zero bytes (as
    /// [`Authority::sign_device_csr`] returns it).
    pub serial: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// The subject's public key (the bits of its `subjectPublicKey`).
    pub public_key: Vec<u8>,
}

impl CertificateFacts {
    /// When the certificate stops being valid, in Unix milliseconds (as the store keeps
    /// times).
    pub fn not_after_ms(&self) -> i64 {
        i64::try_from(self.not_after.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
    }
}

/// Reads a DER certificate's serial number and validity, if it parses.
pub fn certificate_facts(der: &[u8]) -> Option<CertificateFacts> {
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
    let raw = cert.raw_serial();
    let first = raw.iter().position(|&b| b != 0).unwrap_or(raw.len());
    Some(CertificateFacts {
        serial: hex::encode(&raw[first..]),
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
        public_key: cert.public_key().subject_public_key.data.to_vec(),
    })
}

/// A certificate request, its signature checked. Where it fails on the key rather than
/// the encoding, the error names the key and the keys that are taken: the signature
/// library alone says only "Unspecified" for, say, an RSA key of 1024 bits.
fn parse_csr(csr_pem: &str) -> Result<CertificateSigningRequestParams, PkiError> {
    CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| {
        let key = unusable_csr_key(csr_pem);
        PkiError::BadCsr(match key {
            Some(key) => format!(
                "its key is {key}; a device key must be ECDSA P-256 or P-384, Ed25519, \
                 or RSA of 2048 to 8192 bits"
            ),
            None => e.to_string(),
        })
    })
}

/// The kind of key a certificate request carries, when it is one that is not taken.
fn unusable_csr_key(csr_pem: &str) -> Option<String> {
    use x509_parser::prelude::FromDer;
    use x509_parser::public_key::PublicKey;
    let der =
        rustls_pki_types::CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes()).ok()?;
    let (_, csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(der.as_ref())
            .ok()?;
    let spki = &csr.certification_request_info.subject_pki;
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) if !(2048..=8192).contains(&rsa.key_size()) => {
            Some(format!("RSA of {} bits", rsa.key_size()))
        }
        Ok(PublicKey::EC(_)) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string())
                .unwrap_or_default();
            // P-256 and P-384.
            (!matches!(curve.as_str(), "1.2.840.10045.3.1.7" | "1.3.132.0.34"))
                .then(|| format!("ECDSA on the curve {curve}"))
        }
        Ok(PublicKey::DSA(_)) => Some("DSA".into()),
        Ok(PublicKey::GostR3410(_) | PublicKey::GostR3410_2012(_)) => Some("GOST".into()),
        Ok(PublicKey::Unknown(_)) | Err(_) => {
            let oid = spki.algorithm.algorithm.to_id_string();
            // Ed25519 (1.3.101.112) is taken; x509-parser does not parse it.
            (oid != "1.3.101.112").then(|| format!("of the algorithm {oid}"))
        }
        _ => None,
    }
}

/// The public key (the bits of its `subjectPublicKey`) a certificate request is over.
pub fn csr_public_key(csr_pem: &str) -> Result<Vec<u8>, PkiError> {
    use rcgen::PublicKeyData;
    let csr = parse_csr(csr_pem)?;
    Ok(csr.public_key.der_bytes().to_vec())
}

/// Whether a device certificate valid from `not_before` to `not_after` should be replaced
/// at `now`, when the server issues certificates for `lifetime`: once less than a third
/// of its own life is left, or when it outlives what the server issues now by more than
/// a day (certificates from before lifetimes were bounded, or from a longer setting).
pub fn renewal_due(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    now: OffsetDateTime,
    lifetime: Duration,
) -> bool {
    let left = not_after - now;
    left < (not_after - not_before) / 3 || left > lifetime + Duration::days(1)
}

/// SHA-256 of a certificate's DER, hex: how the store recognises a device's certificate.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// When the first certificate in a PEM text stops being valid (Unix milliseconds).
pub fn pem_expires_ms(pem: &str) -> Option<i64> {
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).ok()?;
    Some(certificate_facts(&der)?.not_after_ms())
}

/// Fingerprint of the first certificate in a PEM text.
pub fn pem_fingerprint(pem: &str) -> Result<String, PkiError> {
    let der = CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|_| PkiError::Pem("certificate".into()))?;
    Ok(fingerprint(&der))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr() -> String {
        let key = KeyPair::generate().unwrap();
        CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap()
    }

    #[test]
    fn a_ca_key_that_is_not_the_certificates_is_refused_at_load() {
        let first = tempfile::tempdir().unwrap();
        let ca = Authority::load_or_create(first.path()).unwrap();
        // Loads again as it is.
        Authority::load_or_create(first.path()).unwrap();
        // ca.pem copied, ca.key not: another key is made, and refused.
        let other = tempfile::tempdir().unwrap();
        std::fs::write(other.path().join("ca.pem"), &ca.ca_pem).unwrap();
        let e = Authority::load_or_create(other.path())
            .err()
            .expect("refused");
        assert!(
            matches!(e, PkiError::KeyMismatch { .. }) && e.to_string().contains("ca.pem"),
            "{e}"
        );
        std::fs::copy(first.path().join("ca.key"), other.path().join("ca.key")).unwrap();
        Authority::load_or_create(other.path()).unwrap();
    }

    #[test]
    fn a_request_over_a_key_that_is_not_taken_says_which_key_and_which_are() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::load_or_create(dir.path()).unwrap();
        // Made with `openssl req -new -newkey rsa:1024` (and `ec … P-521`, `rsa:2048`).
        for (csr, key) in [
            (
                include_str!("testdata/rsa-1024.csr"),
                "its key is RSA of 1024 bits",
            ),
            (
                include_str!("testdata/ecdsa-p521.csr"),
                "its key is ECDSA on the curve 1.3.132.0.35",
            ),
        ] {
            let e = ca.sign_device_csr(csr, 1, Duration::days(1)).unwrap_err();
            let e = e.to_string();
            assert!(e.contains(key), "{e}");
            assert!(e.contains("ECDSA P-256 or P-384, Ed25519"), "{e}");
            assert!(Authority::check_csr(csr).is_err());
        }
        let rsa = include_str!("testdata/rsa-2048.csr");
        ca.sign_device_csr(rsa, 1, Duration::days(1)).unwrap();
        // A broken signature over a key that is taken is not blamed on the key.
        let good = csr();
        let mut der =
            rustls_pki_types::CertificateSigningRequestDer::from_pem_slice(good.as_bytes())
                .unwrap()
                .as_ref()
                .to_vec();
        let last = der.len() - 1;
        der[last] ^= 1;
        let broken = pem_of("CERTIFICATE REQUEST", &der);
        let e = ca
            .sign_device_csr(&broken, 1, Duration::days(1))
            .unwrap_err();
        assert!(!e.to_string().contains("its key is"), "{e}");
    }

    fn pem_of(label: &str, der: &[u8]) -> String {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    }

    #[test]
    fn a_device_certificate_lives_as_long_as_the_server_says() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::load_or_create(dir.path()).unwrap();
        let before = OffsetDateTime::now_utc();
        let (pem, serial) = ca.sign_device_csr(&csr(), 7, Duration::days(30)).unwrap();
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        let facts = certificate_facts(&der).unwrap();
        assert_eq!(facts.serial, serial.trim_start_matches("00"));
        // The certificate is over the request's key.
        let request = csr();
        let (pem2, _) = ca.sign_device_csr(&request, 7, Duration::days(30)).unwrap();
        let der2 = CertificateDer::from_pem_slice(pem2.as_bytes()).unwrap();
        assert_eq!(
            certificate_facts(&der2).unwrap().public_key,
            csr_public_key(&request).unwrap()
        );
        assert_ne!(facts.public_key, csr_public_key(&request).unwrap());
        let life = facts.not_after - before;
        assert!(
            life > Duration::days(30) - Duration::minutes(1) && life <= Duration::days(30),
            "{life}"
        );
        assert!(facts.not_before < before && facts.not_before > before - Duration::hours(2));
        // Fresh from the server: nothing to renew.
        assert!(!renewal_due(
            facts.not_before,
            facts.not_after,
            OffsetDateTime::now_utc(),
            Duration::days(30)
        ));
    }

    #[test]
    fn renewal_is_due_late_in_life_or_when_a_certificate_outlives_the_setting() {
        let start = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let year = Duration::days(365);
        let end = start + year;
        // Two thirds of its life gone, less a day: not yet; a day later: due.
        assert!(!renewal_due(
            start,
            end,
            start + year * 2 / 3 - Duration::days(1),
            year
        ));
        assert!(renewal_due(
            start,
            end,
            start + year * 2 / 3 + Duration::days(1),
            year
        ));
        // Expired: due (the server never sees one, TLS refuses it first, but the rule holds).
        assert!(renewal_due(start, end, end + Duration::days(1), year));
        // A certificate of the unbounded days (valid until 4096) is replaced at once...
        let forever = OffsetDateTime::from_unix_timestamp(67_000_000_000).unwrap();
        assert!(renewal_due(start, forever, start + Duration::days(1), year));
        // ...and so is a year-long one when the setting falls to 30 days.
        assert!(renewal_due(start, end, start, Duration::days(30)));
        assert!(!renewal_due(start, end, start, year));
    }
}
