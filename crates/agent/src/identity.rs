//! The device's identity: its id, its key and certificate, and the server CA it pinned at
//! enrollment. Stored in the agent's data directory; the key file is mode 0600.

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

/// Errors of enrollment and identity handling.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("this agent is not enrolled yet: run `riposte agent --server URL --ca FILE --enroll-token T --data DIR`")]
    NotEnrolled,
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("the identity in {0} is corrupt; enroll the agent again in a new data directory")]
    Corrupt(String),
    #[error("the server CA file is not a PEM certificate: {0}")]
    BadCa(String),
    #[error("cannot reach the server at {url}: {source}")]
    Unreachable { url: String, source: reqwest::Error },
    #[error("the server refused the enrollment: {0}")]
    Refused(String),
    #[error("key generation failed: {0}")]
    Key(#[from] rcgen::Error),
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
    #[error("the server URL must start with https:// (got {0:?}): secrets are never sent unencrypted, and the CA file pins the server's certificate")]
    NotHttps(String),
}

/// Refuses a server URL that is not `https://`, before anything is sent to it.
pub fn require_https(server_url: &str) -> Result<(), IdentityError> {
    if server_url
        .get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
    {
        Ok(())
    } else {
        Err(IdentityError::NotHttps(server_url.to_string()))
    }
}

/// What a device keeps after enrolling.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Identity {
    pub device_id: i64,
    /// The server's API URL (`https://host:port`).
    pub server_url: String,
    /// The agent channel's address (`host:port`).
    pub channel_addr: String,
    pub ca_pem: String,
    pub cert_pem: String,
    #[serde(skip)]
    pub key_pem: String,
}

const IDENTITY: &str = "identity.json";
const KEY: &str = "device.key";
/// A renewed key and certificate, written whole before they replace the current pair
/// (two files, which no single rename swaps). Finished by [`Identity::load`] when found.
const RENEWAL: &str = "renewal.json";

/// What [`RENEWAL`] holds.
#[derive(Serialize, Deserialize)]
struct Renewal {
    cert_pem: String,
    key_pem: String,
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), IdentityError> {
    let io = |source| IdentityError::Io {
        path: path.display().to_string(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    sync_parent(path).map_err(io)
}

/// Makes a rename or removal in `path`'s directory durable.
fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// A new key and a certificate request over it, as enrollment and renewal send it.
/// Returns (key PEM, request PEM).
pub fn key_and_request(hostname: &str) -> Result<(String, String), IdentityError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, hostname);
    params.distinguished_name = dn;
    let csr = params.serialize_request(&key)?.pem()?;
    Ok((key.serialize_pem(), csr))
}

impl Identity {
    /// Loads the identity from the data directory, finishing a renewal that a crash
    /// interrupted ([`Identity::save_renewed`]).
    pub fn load(dir: &Path) -> Result<Identity, IdentityError> {
        let mut id = Identity::load_current(dir)?;
        let renewal_path = dir.join(RENEWAL);
        let io = |source| IdentityError::Io {
            path: renewal_path.display().to_string(),
            source,
        };
        match std::fs::read(&renewal_path) {
            Ok(bytes) => match serde_json::from_slice::<Renewal>(&bytes) {
                Ok(r) => {
                    id.cert_pem = r.cert_pem;
                    id.key_pem = r.key_pem;
                    id.save(dir)?;
                    tracing::info!("finished storing the renewed device certificate");
                }
                // Written whole or not at all; whatever this is, the server still takes
                // the current certificate and asks for a renewal again.
                Err(_) => tracing::warn!(
                    "{} is unreadable; keeping the current device certificate",
                    renewal_path.display()
                ),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(id),
            Err(source) => return Err(io(source)),
        }
        std::fs::remove_file(&renewal_path).map_err(io)?;
        sync_parent(&renewal_path).map_err(io)?;
        Ok(id)
    }

    /// The identity as its two files hold it.
    fn load_current(dir: &Path) -> Result<Identity, IdentityError> {
        let path = dir.join(IDENTITY);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(IdentityError::NotEnrolled)
            }
            Err(source) => {
                return Err(IdentityError::Io {
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        let mut id: Identity = serde_json::from_str(&text)
            .map_err(|_| IdentityError::Corrupt(path.display().to_string()))?;
        id.key_pem =
            std::fs::read_to_string(dir.join(KEY)).map_err(|source| IdentityError::Io {
                path: dir.join(KEY).display().to_string(),
                source,
            })?;
        Ok(id)
    }

    /// Saves the identity (key with mode 0600).
    pub fn save(&self, dir: &Path) -> Result<(), IdentityError> {
        std::fs::create_dir_all(dir).map_err(|source| IdentityError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        write_file(&dir.join(KEY), self.key_pem.as_bytes(), 0o600)?;
        let json = serde_json::to_vec_pretty(self)
            .map_err(|_| IdentityError::Corrupt("identity".into()))?;
        write_file(&dir.join(IDENTITY), &json, 0o600)?;
        Ok(())
    }

    /// This identity with a renewed key and certificate, once the certificate is shown to
    /// be this device's: signed by the pinned CA, valid now, for a client, and over the
    /// key. An agent that took a bad one would lock itself out.
    pub fn renewed(&self, key_pem: String, cert_pem: String) -> Result<Identity, IdentityError> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, UnixTime};
        let bad = |why: String| IdentityError::Refused(format!("the renewed certificate {why}"));
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|_| bad("is not a PEM certificate".into()))?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(root_store(&self.ca_pem)?),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .map_err(|e| bad(e.to_string()))?;
        verifier
            .verify_client_cert(&cert, &[], UnixTime::now())
            .map_err(|e| bad(format!("does not verify: {e}")))?;
        let renewed = Identity {
            cert_pem,
            key_pem,
            ..self.clone()
        };
        // Building the TLS configuration checks that the certificate is over the key.
        renewed
            .tls_config()
            .map_err(|e| bad(format!("does not match the new key: {e}")))?;
        Ok(renewed)
    }

    /// Saves a renewed identity so that a crash at any instant leaves either the old pair
    /// or the new one: the new pair is written whole to one file first, and
    /// [`Identity::load`] finishes the swap if this does not.
    pub fn save_renewed(&self, dir: &Path) -> Result<(), IdentityError> {
        let renewal = serde_json::to_vec(&Renewal {
            cert_pem: self.cert_pem.clone(),
            key_pem: self.key_pem.clone(),
        })
        .map_err(|_| IdentityError::Corrupt("renewal".into()))?;
        write_file(&dir.join(RENEWAL), &renewal, 0o600)?;
        self.save(dir)?;
        let path = dir.join(RENEWAL);
        let io = |source| IdentityError::Io {
            path: path.display().to_string(),
            source,
        };
        std::fs::remove_file(&path).map_err(io)?;
        sync_parent(&path).map_err(io)
    }

    /// When the device certificate stops being valid, in Unix milliseconds, if it parses.
    pub fn certificate_expires_ms(&self) -> Option<i64> {
        use rustls_pki_types::pem::PemObject;
        use x509_parser::prelude::FromDer;
        let der =
            rustls_pki_types::CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).ok()?;
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&der).ok()?;
        cert.validity().not_after.timestamp().checked_mul(1000)
    }

    /// TLS client config: trusts only the pinned CA and presents the device certificate.
    pub fn tls_config(&self) -> Result<Arc<rustls::ClientConfig>, IdentityError> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let roots = root_store(&self.ca_pem)?;
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|_| IdentityError::Corrupt("device certificate".into()))?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|_| IdentityError::Corrupt("device key".into()))?;
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)?;
        Ok(Arc::new(config))
    }
}

/// A root store holding only the given CA.
pub fn root_store(ca_pem: &str) -> Result<rustls::RootCertStore, IdentityError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    let mut n = 0;
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| IdentityError::BadCa(format!("{e:?}")))?;
        roots
            .add(cert)
            .map_err(|e| IdentityError::BadCa(e.to_string()))?;
        n += 1;
    }
    if n == 0 {
        return Err(IdentityError::BadCa("no certificate found".into()));
    }
    Ok(roots)
}

/// An HTTPS client that trusts only the pinned CA.
pub fn pinned_http_client(
    ca_pem: &str,
    timeout: std::time::Duration,
) -> Result<reqwest::Client, IdentityError> {
    pinned_http_client_builder(ca_pem, timeout)?
        .build()
        .map_err(|e| IdentityError::Refused(e.to_string()))
}

/// The builder of [`pinned_http_client`], for a caller that sets more (a test's source
/// address).
pub fn pinned_http_client_builder(
    ca_pem: &str,
    timeout: std::time::Duration,
) -> Result<reqwest::ClientBuilder, IdentityError> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(root_store(ca_pem)?)
    .with_no_client_auth();
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(config)
        // A password, token or key is never sent in clear, whatever URL is given.
        .https_only(true)
        .timeout(timeout))
}

#[derive(Deserialize)]
struct Enrolled {
    device_id: i64,
    cert_pem: String,
    agent_port: u16,
}

/// Enrolls with the server: makes a key, sends a certificate request with the token, and
/// returns the identity (not yet saved).
pub async fn enroll(
    server_url: &str,
    ca_pem: &str,
    token: &str,
    name: &str,
    hostname: &str,
) -> Result<Identity, IdentityError> {
    require_https(server_url)?;
    let (key_pem, csr) = key_and_request(hostname)?;
    let client = pinned_http_client(ca_pem, std::time::Duration::from_secs(30))?;
    let url = format!("{}/api/v1/enroll", server_url.trim_end_matches('/'));
    let resp = client
        .post(&url)
        .json(&serde_json::json!({ "token": token, "csr_pem": csr, "name": name, "hostname": hostname }))
        .send()
        .await
        .map_err(|source| IdentityError::Unreachable { url: server_url.to_string(), source })?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    if !status.is_success() {
        let msg = body["error"]
            .as_str()
            .unwrap_or("no reason given")
            .to_string();
        return Err(IdentityError::Refused(msg));
    }
    let e: Enrolled = serde_json::from_value(body)
        .map_err(|_| IdentityError::Refused("malformed answer".into()))?;
    let host = reqwest::Url::parse(server_url)
        .ok()
        .and_then(|u| u.host_str().map(String::from))
        .unwrap_or_else(|| "localhost".into());
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host
    };
    Ok(Identity {
        device_id: e.device_id,
        server_url: server_url.trim_end_matches('/').to_string(),
        channel_addr: format!("{host}:{}", e.agent_port),
        ca_pem: ca_pem.to_string(),
        cert_pem: e.cert_pem,
        key_pem,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CA, and a function signing a request with it for a client.
    fn authority() -> (String, impl Fn(&str) -> String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap();
        let pem = ca.pem();
        let sign = move |csr: &str| {
            let mut req = rcgen::CertificateSigningRequestParams::from_pem(csr).unwrap();
            req.params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
            req.signed_by(&ca, &key).unwrap().pem()
        };
        (pem, sign)
    }

    fn identity(ca_pem: &str, sign: &impl Fn(&str) -> String) -> Identity {
        let (key_pem, csr) = key_and_request("host").unwrap();
        Identity {
            device_id: 3,
            server_url: "https://server:8443".into(),
            channel_addr: "server:8444".into(),
            ca_pem: ca_pem.into(),
            cert_pem: sign(&csr),
            key_pem,
        }
    }

    #[test]
    fn a_renewed_certificate_must_be_the_pinned_cas_and_over_the_new_key() {
        let (ca, sign) = authority();
        let current = identity(&ca, &sign);
        let (key, csr) = key_and_request("host").unwrap();
        let renewed = current.renewed(key.clone(), sign(&csr)).unwrap();
        assert_eq!(renewed.device_id, 3);
        assert_eq!(renewed.key_pem, key);

        // Over another key.
        let (other_key, _) = key_and_request("host").unwrap();
        let err = current.renewed(other_key, sign(&csr)).unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
        // From another CA.
        let (_, foreign) = authority();
        let err = current.renewed(key.clone(), foreign(&csr)).unwrap_err();
        assert!(err.to_string().contains("does not verify"), "{err}");
        // Not a certificate.
        let err = current.renewed(key, "garbage".into()).unwrap_err();
        assert!(err.to_string().contains("not a PEM"), "{err}");
    }

    /// A crash after the renewal file was written, at any point of the swap, is finished
    /// on the next load; an unreadable renewal file leaves the current pair.
    #[test]
    fn a_renewal_interrupted_by_a_crash_is_finished_on_load() {
        let (ca, sign) = authority();
        let dir = tempfile::tempdir().unwrap();
        let current = identity(&ca, &sign);
        current.save(dir.path()).unwrap();
        let (key, csr) = key_and_request("host").unwrap();
        let renewed = current.renewed(key, sign(&csr)).unwrap();

        // Crash right after the renewal file, and after the key but before identity.json.
        for key_written in [false, true] {
            current.save(dir.path()).unwrap();
            let renewal = serde_json::to_vec(&Renewal {
                cert_pem: renewed.cert_pem.clone(),
                key_pem: renewed.key_pem.clone(),
            })
            .unwrap();
            write_file(&dir.path().join(RENEWAL), &renewal, 0o600).unwrap();
            if key_written {
                write_file(&dir.path().join(KEY), renewed.key_pem.as_bytes(), 0o600).unwrap();
            }
            let loaded = Identity::load(dir.path()).unwrap();
            assert_eq!(
                (&loaded.cert_pem, &loaded.key_pem),
                (&renewed.cert_pem, &renewed.key_pem)
            );
            assert!(!dir.path().join(RENEWAL).exists());
            loaded.tls_config().unwrap();
        }

        current.save(dir.path()).unwrap();
        std::fs::write(dir.path().join(RENEWAL), b"{\"cert_pem\": \"trunc").unwrap();
        let loaded = Identity::load(dir.path()).unwrap();
        assert_eq!(loaded.cert_pem, current.cert_pem);
        assert!(!dir.path().join(RENEWAL).exists());

        // The whole save: the new pair, the file gone, mode 0600.
        renewed.save_renewed(dir.path()).unwrap();
        let loaded = Identity::load(dir.path()).unwrap();
        assert_eq!(loaded.key_pem, renewed.key_pem);
        assert!(!dir.path().join(RENEWAL).exists());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(KEY))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
