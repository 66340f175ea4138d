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
    // `error`, not `source`: said once in the message, not again as its cause.
    #[error("cannot read or write {path}: {error}{}", if error.kind() == std::io::ErrorKind::PermissionDenied { " (the agent's data is root's: is this run as root?)" } else { "" })]
    Io { path: String, error: std::io::Error },
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
    #[error("the renewed certificate is not usable: {0}")]
    BadRenewal(String),
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
/// A renewed key and certificate the server issued, kept whole in one file beside the
/// current pair until the server has accepted them on a connection; only then do they
/// replace it ([`Identity::commit_renewal`]). Until then the current pair stays as it
/// is, so nothing the server still takes is ever thrown away.
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
        error: source,
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
    /// The renewed identity waiting in the data directory to be accepted by the server
    /// ([`Identity::save_pending_renewal`]), if there is one. An unreadable one (it is
    /// written whole, so this is damage) is passed over: the current pair still works.
    pub fn pending_renewal(&self, dir: &Path) -> Option<Identity> {
        let path = dir.join(RENEWAL);
        let bytes = std::fs::read(&path).ok()?;
        match serde_json::from_slice::<Renewal>(&bytes) {
            Ok(r) => Some(Identity {
                cert_pem: r.cert_pem,
                key_pem: r.key_pem,
                ..self.clone()
            }),
            Err(_) => {
                tracing::warn!(
                    "{} is unreadable; keeping the current device certificate",
                    path.display()
                );
                None
            }
        }
    }

    /// Removes what an interrupted write left behind (`*.tmp` beside the identity's
    /// files: one may hold a private key). For the agent's own start only, while no
    /// other process writes the directory.
    pub fn remove_leftovers(dir: &Path) {
        for name in [KEY, IDENTITY, RENEWAL] {
            let tmp = dir.join(name).with_extension("tmp");
            if std::fs::remove_file(&tmp).is_ok() {
                tracing::info!("removed {}, left by an interrupted write", tmp.display());
            }
        }
    }

    /// Loads the identity from the data directory, as its two files hold it (reading
    /// only: a pending renewal is [`Identity::pending_renewal`]).
    pub fn load(dir: &Path) -> Result<Identity, IdentityError> {
        let path = dir.join(IDENTITY);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(IdentityError::NotEnrolled)
            }
            Err(source) => {
                return Err(IdentityError::Io {
                    path: path.display().to_string(),
                    error: source,
                })
            }
        };
        let mut id: Identity = serde_json::from_str(&text)
            .map_err(|_| IdentityError::Corrupt(path.display().to_string()))?;
        id.key_pem =
            std::fs::read_to_string(dir.join(KEY)).map_err(|source| IdentityError::Io {
                path: dir.join(KEY).display().to_string(),
                error: source,
            })?;
        Ok(id)
    }

    /// Saves the identity (key with mode 0600).
    pub fn save(&self, dir: &Path) -> Result<(), IdentityError> {
        std::fs::create_dir_all(dir).map_err(|source| IdentityError::Io {
            path: dir.display().to_string(),
            error: source,
        })?;
        write_file(&dir.join(KEY), self.key_pem.as_bytes(), 0o600)?;
        let json = serde_json::to_vec_pretty(self)
            .map_err(|_| IdentityError::Corrupt("identity".into()))?;
        write_file(&dir.join(IDENTITY), &json, 0o600)?;
        Ok(())
    }

    /// This identity with a renewed key and certificate, once the certificate is shown to
    /// be this device's: signed by the pinned CA, for a client, and over the key. Its
    /// dates are the server's to judge, by the server's clock: checked here at the start
    /// of its own validity, a device whose clock is behind still takes it.
    pub fn renewed(&self, key_pem: String, cert_pem: String) -> Result<Identity, IdentityError> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, UnixTime};
        use x509_parser::prelude::FromDer;
        let bad = |why: String| IdentityError::BadRenewal(format!("it {why}"));
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|_| bad("is not a PEM certificate".into()))?;
        let starts = x509_parser::certificate::X509Certificate::from_der(&cert)
            .map_err(|_| bad("does not parse".into()))?
            .1
            .validity()
            .not_before
            .timestamp();
        let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            u64::try_from(starts).unwrap_or(0) + 60,
        ));
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(root_store(&self.ca_pem)?),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .map_err(|e| bad(e.to_string()))?;
        verifier
            .verify_client_cert(&cert, &[], at)
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

    /// Keeps this renewed identity beside the current one, whole in one file, until the
    /// server accepts it ([`Identity::commit_renewal`]).
    pub fn save_pending_renewal(&self, dir: &Path) -> Result<(), IdentityError> {
        let renewal = serde_json::to_vec(&Renewal {
            cert_pem: self.cert_pem.clone(),
            key_pem: self.key_pem.clone(),
        })
        .map_err(|_| IdentityError::Corrupt("renewal".into()))?;
        write_file(&dir.join(RENEWAL), &renewal, 0o600)
    }

    /// The server accepted this renewed identity: it becomes the current pair, and the
    /// pending file goes. A crash or failure on the way leaves the pending file, which
    /// the agent uses (and commits) again on its next connection.
    pub fn commit_renewal(&self, dir: &Path) -> Result<(), IdentityError> {
        self.save(dir)?;
        Identity::discard_pending_renewal(dir)
    }

    /// Forgets a pending renewed identity (the server refused it).
    pub fn discard_pending_renewal(dir: &Path) -> Result<(), IdentityError> {
        let path = dir.join(RENEWAL);
        let io = |source| IdentityError::Io {
            path: path.display().to_string(),
            error: source,
        };
        match std::fs::remove_file(&path) {
            Ok(()) => sync_parent(&path).map_err(io),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(e)),
        }
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
        authority_dated(None)
    }

    /// A day: year, month, day.
    type Day = (i32, u8, u8);

    /// [`authority`], its certificates valid between these days.
    fn authority_dated(dates: Option<(Day, Day)>) -> (String, impl Fn(&str) -> String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap();
        let pem = ca.pem();
        let sign = move |csr: &str| {
            let mut req = rcgen::CertificateSigningRequestParams::from_pem(csr).unwrap();
            req.params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
            if let Some(((y0, m0, d0), (y1, m1, d1))) = dates {
                req.params.not_before = rcgen::date_time_ymd(y0, m0, d0);
                req.params.not_after = rcgen::date_time_ymd(y1, m1, d1);
            }
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

    /// A renewed pair waits beside the current one, which stays as it is, until the
    /// server accepts it; a commit interrupted at any point still finds it; a refusal or
    /// damage leaves the current pair; leftovers of interrupted writes go at start.
    #[test]
    fn a_renewal_replaces_the_current_pair_only_once_accepted() {
        let (ca, sign) = authority();
        let dir = tempfile::tempdir().unwrap();
        let current = identity(&ca, &sign);
        current.save(dir.path()).unwrap();
        let (key, csr) = key_and_request("host").unwrap();
        let renewed = current.renewed(key, sign(&csr)).unwrap();

        renewed.save_pending_renewal(dir.path()).unwrap();
        let loaded = Identity::load(dir.path()).unwrap();
        assert_eq!(
            loaded.key_pem, current.key_pem,
            "the current pair is untouched"
        );
        let pending = loaded.pending_renewal(dir.path()).unwrap();
        assert_eq!(
            (&pending.cert_pem, &pending.key_pem),
            (&renewed.cert_pem, &renewed.key_pem)
        );
        assert_eq!(pending.device_id, current.device_id);

        // A commit cut short after the key: the pending pair is still there to use.
        write_file(&dir.path().join(KEY), renewed.key_pem.as_bytes(), 0o600).unwrap();
        let loaded = Identity::load(dir.path()).unwrap();
        let pending = loaded.pending_renewal(dir.path()).unwrap();
        pending.tls_config().unwrap();
        pending.commit_renewal(dir.path()).unwrap();
        let loaded = Identity::load(dir.path()).unwrap();
        assert_eq!(
            (&loaded.cert_pem, &loaded.key_pem),
            (&renewed.cert_pem, &renewed.key_pem)
        );
        loaded.tls_config().unwrap();
        assert!(loaded.pending_renewal(dir.path()).is_none());

        // Refused or damaged: the current pair is what remains.
        let (key, csr) = key_and_request("host").unwrap();
        let another = loaded.renewed(key, sign(&csr)).unwrap();
        another.save_pending_renewal(dir.path()).unwrap();
        Identity::discard_pending_renewal(dir.path()).unwrap();
        assert!(Identity::load(dir.path())
            .unwrap()
            .pending_renewal(dir.path())
            .is_none());
        std::fs::write(dir.path().join(RENEWAL), b"{\"cert_pem\": \"trunc").unwrap();
        let loaded = Identity::load(dir.path()).unwrap();
        assert!(loaded.pending_renewal(dir.path()).is_none());
        assert_eq!(loaded.key_pem, renewed.key_pem);

        std::fs::write(dir.path().join("renewal.tmp"), b"half a private key").unwrap();
        Identity::remove_leftovers(dir.path());
        assert!(!dir.path().join("renewal.tmp").exists());
        use std::os::unix::fs::PermissionsExt;
        for file in [KEY, IDENTITY] {
            let mode = std::fs::metadata(dir.path().join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
    }

    /// A device whose clock is behind the server's takes a certificate that starts
    /// "in the future" by its own clock: the server judges the dates.
    #[test]
    fn a_renewed_certificate_starting_after_the_device_clock_is_taken() {
        let (ca, sign_later) = authority_dated(Some(((2099, 1, 1), (2100, 1, 1))));
        let current = identity(&ca, &sign_later);
        let (key, csr) = key_and_request("host").unwrap();
        let renewed = current.renewed(key, sign_later(&csr)).unwrap();
        assert_eq!(renewed.device_id, current.device_id);
        // Another CA's is still refused, dates or not.
        let (_, foreign) = authority_dated(Some(((2099, 1, 1), (2100, 1, 1))));
        let (key, csr) = key_and_request("host").unwrap();
        let e = current.renewed(key, foreign(&csr)).unwrap_err();
        assert!(e.to_string().contains("not usable"), "{e}");
    }
}
