//! The HTTPS service end to end: submit → queued → found, already_scanned, restart,
//! hash-list and dynamic detections, bad input, webhook.

mod common;

use std::time::Duration;

use riposte_sandbox::protocol::{sign_webhook, SIGNATURE_HEADER};
use riposte_sandbox::report::{FileIoc, Verdict};
use riposte_sandbox::revocation::CrlSource;
use riposte_sandbox::static_analysis::EICAR;
use riposte_sandbox::store::Store;
use riposte_sandbox::{
    serve, ClientConfig, SandboxClient, SandboxConfig, ServeHandle, Submitted, TaskStatus,
};

async fn start(config: SandboxConfig) -> ServeHandle {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    serve(config, listener).await.unwrap()
}

fn client(h: &ServeHandle) -> SandboxClient {
    client_as(h, None)
}

/// A client of `h` presenting `identity` (a device certificate), or none.
fn client_as(
    h: &ServeHandle,
    identity: Option<riposte_sandbox::tls::ClientIdentity>,
) -> SandboxClient {
    let mut c = ClientConfig::new(vec![format!("https://{}", h.addr)], h.cert_pem.clone());
    c.timeout = Duration::from_secs(20);
    c.retries = 0;
    c.identity = identity;
    SandboxClient::new(c).unwrap()
}

async fn wait_done(c: &SandboxClient, id: &str) -> TaskStatus {
    let s = c
        .wait(id, Duration::from_millis(20), Duration::from_secs(30))
        .await
        .unwrap();
    assert_ne!(s, TaskStatus::Processing, "task {id} never finished");
    s
}

/// A handle dropped without `shutdown` stops its workers, and the data directory is
/// free once they have stopped: not before (they hold its lock), and not never.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_handle_frees_its_directory_once_its_workers_stop() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(static_only(dir.path())).await;
    drop(h);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        match serve(static_only(dir.path()), listener).await {
            Ok(h) => {
                h.shutdown().await;
                break;
            }
            Err(riposte_sandbox::SandboxError::DataDirInUse(_))
                if std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("the directory stayed taken: {e}"),
        }
    }
}

fn static_only(dir: &std::path::Path) -> SandboxConfig {
    let mut c = SandboxConfig::new(dir);
    c.dynamic = false;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eicar_found_then_already_scanned_and_survives_restart() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    // As a directory made by hand (or by an older version) would be.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let h = start(static_only(dir.path())).await;
    // One sandbox per data directory: a second one is refused, saying why.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    match serve(static_only(dir.path()), listener).await {
        Err(e @ riposte_sandbox::SandboxError::DataDirInUse(_)) => {
            assert!(e.to_string().contains("sandbox.lock"), "{e}")
        }
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(_) => panic!("a second sandbox started on the same data directory"),
    }
    let c = client(&h);
    let Submitted::Queued(id) = c.submit("eicar.com", EICAR).await.unwrap() else {
        panic!("first submit must queue");
    };
    match wait_done(&c, &id).await {
        TaskStatus::Found {
            threat_name,
            report,
        } => {
            assert_eq!(threat_name, "EICAR-Test-File");
            assert_eq!(report.verdict, Verdict::Malicious);
            let sha = FileIoc::from_bytes(None, EICAR).sha256;
            assert_eq!(report.iocs.object.as_ref().unwrap().sha256, sha);
            assert!(report.openioc.contains(&sha));
        }
        other => panic!("expected found, got {other:?}"),
    }
    match c.submit("again.com", EICAR).await.unwrap() {
        Submitted::AlreadyScanned(r) => assert_eq!(r.verdict, Verdict::Malicious),
        other => panic!("expected already_scanned, got {other:?}"),
    }
    // Key file permissions: the private key is 0600.
    let mode = std::fs::metadata(dir.path().join("key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // The data directory, which holds what devices sent, is no one else's to read.
    let mode = std::fs::metadata(dir.path()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    let cert_before = h.cert_pem.clone();
    h.shutdown().await;

    // Restart on the same directory: same certificate, task and verdict kept.
    let h2 = start(static_only(dir.path())).await;
    assert_eq!(h2.cert_pem, cert_before);
    let c2 = client(&h2);
    assert!(matches!(
        c2.poll(&id).await.unwrap(),
        TaskStatus::Found { .. }
    ));
    assert!(matches!(
        c2.submit("x", EICAR).await.unwrap(),
        Submitted::AlreadyScanned(_)
    ));
    h2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_samples_hash_list_and_clean_object() {
    let dir = tempfile::tempdir().unwrap();
    let sample: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let f = FileIoc::from_bytes(None, &sample);
    std::fs::create_dir_all(dir.path().join("hashes")).unwrap();
    std::fs::write(
        dir.path().join("hashes/generated.hsb"),
        format!("{}:{}:Test.Generated.Sample\n", f.sha256, f.size),
    )
    .unwrap();
    let h = start(static_only(dir.path())).await;
    let c = client(&h);
    let Submitted::Queued(id) = c.submit("gen.bin", &sample).await.unwrap() else {
        panic!()
    };
    match wait_done(&c, &id).await {
        TaskStatus::Found { threat_name, .. } => assert_eq!(threat_name, "Test.Generated.Sample"),
        other => panic!("{other:?}"),
    }
    let Submitted::Queued(id) = c.submit("notes.txt", b"just some text").await.unwrap() else {
        panic!()
    };
    match wait_done(&c, &id).await {
        TaskStatus::NotFound(r) => assert_eq!(r.verdict, Verdict::Clean),
        other => panic!("{other:?}"),
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_script_found_by_dynamic_analysis() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(SandboxConfig::new(dir.path())).await;
    let c = client(&h);
    let script = b"#!/bin/sh\necho '@reboot root /tmp/.s' >> /etc/crontab 2>/dev/null\nexit 0\n";
    let Submitted::Queued(id) = c.submit("update.sh", script).await.unwrap() else {
        panic!()
    };
    match wait_done(&c, &id).await {
        TaskStatus::Found {
            threat_name,
            report,
        } => {
            assert_eq!(threat_name, "Linux.Persistence.cron");
            assert_eq!(report.iocs.persistence[0].location, "/etc/crontab");
            assert!(report.source.contains("dynamic"));
        }
        other => panic!("{other:?}"),
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jail_unavailable_falls_back_to_static_with_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = SandboxConfig::new(dir.path());
    cfg.jail.bwrap = "/nonexistent/bwrap".into();
    let h = start(cfg).await;
    let c = client(&h);
    let Submitted::Queued(id) = c.submit("a.sh", b"#!/bin/sh\ntrue\n").await.unwrap() else {
        panic!()
    };
    match wait_done(&c, &id).await {
        TaskStatus::NotFound(r) => {
            assert!(
                r.notes
                    .iter()
                    .any(|n| n.contains("dynamic analysis not run") && n.contains("bubblewrap")),
                "{:?}",
                r.notes
            );
        }
        other => panic!("{other:?}"),
    }
    h.shutdown().await;
}

fn count(dir: &std::path::Path, sub: &str) -> usize {
    std::fs::read_dir(dir.join(sub))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_nameless_uploads_are_refused_and_not_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = static_only(dir.path());
    cfg.max_object_size = 1024;
    let h = start(cfg).await;
    let c = client(&h);
    let e = c.submit("big.bin", &vec![0u8; 2048]).await.unwrap_err();
    assert!(e.to_string().contains("over the 1024-byte limit"), "{e}");
    assert!(e.to_string().contains("413"), "{e}");

    let http = reqwest::Client::builder()
        .use_preconfigured_tls(
            riposte_sandbox::tls::pinned_client_config(&h.cert_pem, None).unwrap(),
        )
        .build()
        .unwrap();
    let r = http
        .post(format!("https://{}/sandbox/v1/tasks", h.addr))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["status"], "error");
    assert!(v["error"].as_str().unwrap().contains("?name="));

    // The service says what its routes are, at `/` and for a path it does not have.
    for (path, status) in [("/", 200), ("/nothing/here", 404)] {
        let r = http
            .get(format!("https://{}{path}", h.addr))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{path}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert!(
            v["routes"]
                .as_object()
                .is_some_and(|r| r.keys().any(|k| k.starts_with("POST /sandbox/v1/tasks"))),
            "{path}: {v}"
        );
    }
    // Names that are paths, or would fake a line where they are shown.
    for name in [
        "../../etc/passwd",
        "..",
        "a%0Ab%1B%5B31m",
        "a%00b",
        "x%E2%80%AEexe.txt",
    ] {
        let r = http
            .post(format!("https://{}/sandbox/v1/tasks?name={name}", h.addr))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{name}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert!(
            v["error"].as_str().unwrap().contains("is not a file name"),
            "{name}: {v}"
        );
    }
    assert_eq!(count(dir.path(), "tasks"), 0);
    assert_eq!(count(dir.path(), "objects"), 0);
    assert_eq!(count(dir.path(), "verdicts"), 0);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_upload_is_refused_and_not_recorded() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let h = start(static_only(dir.path())).await;
    let tls = riposte_sandbox::tls::pinned_client_config(&h.cert_pem, None).unwrap();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls));
    let tcp = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut s = connector.connect(name, tcp).await.unwrap();
    s.write_all(
        b"POST /sandbox/v1/tasks?name=t.bin HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n0123456789",
    )
    .await
    .unwrap();
    s.flush().await.unwrap();
    // Half-close: the client stops sending after 10 of the 1000 announced bytes.
    s.get_mut().0.shutdown().await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("upload truncated"), "{text}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(count(dir.path(), "tasks"), 0);
    assert_eq!(count(dir.path(), "objects"), 0);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_signed_recorded_wrong_signature_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(static_only(dir.path())).await;
    let key = std::fs::read_to_string(dir.path().join("webhook.key")).unwrap();
    assert_eq!(key.trim().as_bytes(), h.webhook_key.as_slice());
    let object = b"object judged by CAPE";
    let sha = FileIoc::from_bytes(None, object).sha256;
    let body = serde_json::to_vec(&serde_json::json!({
        "device_id": "laptop-42", "sha256": sha, "verdict": "malicious",
        "threat_name": "AgentTesla", "source": "cape"
    }))
    .unwrap();
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(
            riposte_sandbox::tls::pinned_client_config(&h.cert_pem, None).unwrap(),
        )
        .build()
        .unwrap();
    let url = format!("https://{}/sandbox/v1/webhook", h.addr);

    // Wrong key, then tampered body: 401 and nothing recorded.
    let bad = sign_webhook(b"not the key", &body);
    let r = http
        .post(&url)
        .header(SIGNATURE_HEADER, bad)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    let sig = sign_webhook(&h.webhook_key, &body);
    let r = http
        .post(&url)
        .header(SIGNATURE_HEADER, &sig)
        .body(tampered)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http.post(&url).body(body.clone()).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("webhook.key"));
    let store = Store::open(dir.path()).unwrap();
    assert!(store.webhook_records().unwrap().is_empty());
    assert!(store.verdict(&sha).unwrap().is_none());

    // Right signature: recorded, and the verdict answers later submissions.
    let r = http
        .post(&url)
        .header(SIGNATURE_HEADER, &sig)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let recs = store.webhook_records().unwrap();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].device_id, "laptop-42");
    let c = client(&h);
    match c.submit("o.bin", object).await.unwrap() {
        Submitted::AlreadyScanned(r) => {
            assert_eq!(r.verdict, Verdict::Malicious);
            assert_eq!(r.source, "webhook:cape");
        }
        other => panic!("{other:?}"),
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_is_an_explicit_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = SandboxConfig::new(dir.path());
    cfg.workers = 1;
    cfg.queue_capacity = 1;
    let h = start(cfg).await;
    let c = client(&h);
    // The single worker is busy with a 2-second script; one task fits in the queue.
    assert!(matches!(
        c.submit("slow.sh", b"#!/bin/sh\nsleep 2\n").await.unwrap(),
        Submitted::Queued(_)
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(matches!(
        c.submit("b.txt", b"second").await.unwrap(),
        Submitted::Queued(_)
    ));
    let e = c.submit("c.txt", b"third").await.unwrap_err();
    assert!(e.to_string().contains("queue is full"), "{e}");
    // The same object again is not a new task: it answers the existing task id.
    let a = c.submit("b2.txt", b"second").await.unwrap();
    assert!(matches!(a, Submitted::Queued(_)));
    h.shutdown().await;
}

/// A CA and a client certificate it issued, as the administration server issues device
/// certificates.
fn ca_and_device() -> (String, riposte_sandbox::tls::ClientIdentity) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let mut device = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    device
        .distinguished_name
        .push(rcgen::DnType::CommonName, "device-7");
    device.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = device.signed_by(&key, &ca, &ca_key).unwrap();
    (
        ca.pem(),
        riposte_sandbox::tls::ClientIdentity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        },
    )
}

/// A sandbox started with the administration server's CA takes objects only from
/// clients presenting a certificate that CA issued: no certificate is refused with a
/// reason and nothing is queued; a certificate of another CA does not get through TLS;
/// an enrolled device's is served. The webhook, signed with its key, needs none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_enrolled_agents_may_submit_when_the_sandbox_knows_their_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (ca_pem, device) = ca_and_device();
    let (_, stranger) = ca_and_device();
    let mut config = static_only(dir.path());
    config.client_ca_pem = Some(ca_pem);
    let h = start(config).await;
    let with = |identity| client_as(&h, identity);

    let anonymous = with(None).submit("eicar.com", EICAR).await.unwrap_err();
    assert!(
        anonymous.to_string().contains("only from agents enrolled"),
        "{anonymous}"
    );
    let foreign = with(Some(stranger))
        .submit("eicar.com", EICAR)
        .await
        .unwrap_err();
    // Said as a refusal where the client reads the server's TLS alert (see the revoked
    // device's test for why it may read as a lost connection instead).
    assert!(
        matches!(
            foreign,
            riposte_sandbox::SandboxError::CertificateRefused(_)
                | riposte_sandbox::SandboxError::Unreachable(_)
        ),
        "refused by TLS, before any handler: {foreign}"
    );
    assert!(
        Store::open(dir.path()).unwrap().tasks().unwrap().is_empty(),
        "nothing was queued for the refused clients"
    );

    let enrolled = with(Some(device));
    let Submitted::Queued(id) = enrolled.submit("eicar.com", EICAR).await.unwrap() else {
        panic!("an enrolled device's submission is queued");
    };
    assert!(matches!(
        wait_done(&enrolled, &id).await,
        TaskStatus::Found { .. }
    ));
    // Polling is the enrolled agents' too: a task id alone does not show a verdict.
    let poll = with(None).poll(&id).await.unwrap_err();
    assert!(
        poll.to_string().contains("only from agents enrolled"),
        "{poll}"
    );

    // The webhook answers on its signature alone.
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(
            riposte_sandbox::tls::pinned_client_config(&h.cert_pem, None).unwrap(),
        )
        .build()
        .unwrap();
    let resp = http
        .post(format!("https://{}/sandbox/v1/webhook", h.addr))
        .header(SIGNATURE_HEADER, "sha256=00")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "a bad signature, judged by the handler");
    let body = resp.text().await.unwrap();
    assert!(!body.contains("only from agents enrolled"), "{body}");
    h.shutdown().await;
}

/// A CA that issues device certificates with chosen serials and signs revocation lists,
/// as the administration server does.
struct TestCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl TestCa {
    fn new() -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TestCa { cert, key }
    }

    fn device(&self, serial: u64) -> riposte_sandbox::tls::ClientIdentity {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("riposte-device-{serial}"),
        );
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        params.serial_number = Some(rcgen::SerialNumber::from(serial));
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        riposte_sandbox::tls::ClientIdentity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// List number `number`, revoking `serials`, issued `age` ago and valid for `valid`
    /// from then.
    fn crl(
        &self,
        number: u64,
        serials: &[u64],
        age: time::Duration,
        valid: time::Duration,
    ) -> String {
        let this_update = time::OffsetDateTime::now_utc() - age;
        rcgen::CertificateRevocationListParams {
            this_update,
            next_update: this_update + valid,
            crl_number: rcgen::SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from(*s),
                    revocation_time: this_update,
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&self.cert, &self.key)
        .unwrap()
        .pem()
        .unwrap()
    }
}

/// Polls `f` every 50 ms for up to 5 s, until it holds.
async fn eventually<F: std::future::Future<Output = bool>>(mut f: impl FnMut() -> F) -> bool {
    for _ in 0..100 {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// With a revocation list, a device the list names is refused in the handshake while
/// other enrolled devices are served; a new list is picked up while the sandbox runs, and
/// refuses a device revoked since on the connection it already holds. A list of another
/// CA or an older list (a lower number) is not taken; a list that expires admits no one
/// until a fresh one comes. Without a usable list file the sandbox does not start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_device_is_refused_and_new_lists_take_effect() {
    use riposte_sandbox::SandboxError;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let stranger = TestCa::new();
    let (kept, revoked) = (ca.device(11), ca.device(12));
    let crl_path = dir.path().join("crl.pem");
    let week = time::Duration::days(7);
    let now = time::Duration::ZERO;

    // No list, a list of another CA, an expired list: no start.
    for (file, text, why) in [
        ("no-such-crl.pem", None, "no-such-crl.pem"),
        (
            "foreign.pem",
            Some(stranger.crl(1, &[], now, week)),
            "not signed by the client CA",
        ),
        (
            "expired.pem",
            Some(ca.crl(1, &[], time::Duration::days(8), week)),
            "expired",
        ),
    ] {
        if let Some(text) = text {
            std::fs::write(dir.path().join(file), text).unwrap();
        }
        let mut config = static_only(&dir.path().join("never"));
        config.client_ca_pem = Some(ca.cert.pem());
        config.client_crl = Some(CrlSource::File(dir.path().join(file)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let Err(err) = serve(config, listener).await else {
            panic!("{file}: no usable list, no start");
        };
        assert!(err.to_string().contains(why), "{file}: {err}");
    }

    std::fs::write(&crl_path, ca.crl(1, &[12], now, week)).unwrap();
    let mut config = static_only(&dir.path().join("sb"));
    config.client_ca_pem = Some(ca.cert.pem());
    config.client_crl = Some(CrlSource::File(crl_path.clone()));
    config.crl_refresh = Duration::from_millis(100);
    let h = start(config).await;
    let with = |identity| client_as(&h, Some(identity));

    let refused = with(revoked.clone())
        .submit("a.txt", b"from a revoked device")
        .await
        .unwrap_err();
    // Said as a refusal, from the server's TLS alert: under TLS 1.3 the request is
    // already on its way when the alert comes, and the server reads it rather than
    // resetting the connection, which would discard the alert and read as an outage.
    assert!(
        matches!(&refused, SandboxError::CertificateRefused(alert) if alert == "CertificateRevoked"),
        "refused in the handshake, before any handler: {refused}"
    );
    // Also with an object too large to be on its way whole when the alert comes.
    let large = vec![b'x'; 2 << 20];
    for round in 0..20 {
        let object: &[u8] = if round % 2 == 0 {
            b"from a revoked device"
        } else {
            &large
        };
        let again = with(revoked.clone())
            .submit("a.txt", object)
            .await
            .unwrap_err();
        assert!(
            matches!(&again, SandboxError::CertificateRefused(_)),
            "round {round}: {again}"
        );
    }
    // One client: its connection stays open between requests.
    let kept_client = with(kept.clone());
    assert!(matches!(
        kept_client
            .submit("b.txt", b"from a device in good standing")
            .await,
        Ok(Submitted::Queued(_))
    ));

    // A list of another CA, then an older list, are not taken: 12 stays revoked, 11 in.
    std::fs::write(&crl_path, stranger.crl(5, &[], now, week)).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    std::fs::write(&crl_path, ca.crl(0, &[], now, week)).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(with(revoked.clone()).submit("a2.txt", b"x").await.is_err());
    assert!(with(kept.clone()).submit("b2.txt", b"y").await.is_ok());

    // The server revokes the other device too: refused on its open connection as well.
    std::fs::write(&crl_path, ca.crl(2, &[11, 12], now, week)).unwrap();
    assert!(
        eventually(|| async {
            matches!(
                kept_client.submit("c.txt", b"again").await,
                Err(SandboxError::Revoked)
            )
        })
        .await,
        "the new list was never applied to the open connection"
    );

    // A list that expires: even a device it does not name is refused, until a fresh one.
    let fresh = with(ca.device(13));
    std::fs::write(&crl_path, ca.crl(3, &[], now, time::Duration::seconds(2))).unwrap();
    assert!(eventually(|| async { fresh.submit("d.txt", b"listed").await.is_ok() }).await);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let stale = fresh.submit("d2.txt", b"stale list").await.unwrap_err();
    assert!(
        matches!(&stale, SandboxError::Unreachable(m) if m.contains("expired")),
        "{stale}"
    );
    std::fs::write(&crl_path, ca.crl(4, &[], now, week)).unwrap();
    assert!(
        eventually(|| async { fresh.submit("d3.txt", b"fresh list").await.is_ok() }).await,
        "a fresh list admits the device again"
    );
    h.shutdown().await;
}

/// A task queued by enrolled devices before a restart waits while no revocation list
/// is in force (its server not up yet): it may be a revoked device's. An anonymous one
/// goes ahead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_objects_of_enrolled_devices_wait_for_a_revocation_list() {
    use riposte_sandbox::store::TaskState;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let sb = dir.path().join("sb");
    queued_before_start(
        &sb,
        &[
            ("t-enrolled", b"queued by a device".as_slice(), &["0c"]),
            (
                "t-anonymous",
                b"queued by no one in particular".as_slice(),
                &[],
            ),
        ],
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}/api/v1/pki/crl", closed.local_addr().unwrap());
    drop(closed);
    let mut config = static_only(&sb);
    config.client_ca_pem = Some(ca.cert.pem());
    config.client_crl = Some(CrlSource::Url(url));
    let h = start(config).await;
    let state = |id: &str| Store::open(&sb).unwrap().task(id).unwrap().unwrap().state;
    assert!(
        eventually(|| async { state("t-anonymous") == TaskState::Done }).await,
        "the anonymous task is analysed"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(state("t-enrolled"), TaskState::Queued, "still waiting");
    assert!(Store::open(&sb)
        .unwrap()
        .object("t-enrolled")
        .unwrap()
        .is_some());
    h.shutdown().await;
}

/// An object still queued when every device that submitted it is revoked is not
/// analysed (the device's key may be in other hands); one that a device in good standing
/// asked for too, or that came anonymously, is. A submission records its device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_queued_by_devices_revoked_since_are_not_analysed() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let sb = dir.path().join("sb");
    // Queued when the sandbox stopped: serial 0x0c alone, 0x0c and 0x0b, anonymously.
    queued_before_start(
        &sb,
        &[
            ("t-revoked", b"queued by twelve".as_slice(), &["0c"]),
            ("t-shared", EICAR, &["0c", "0b"]),
            (
                "t-anonymous",
                b"queued by no one in particular".as_slice(),
                &[],
            ),
        ],
    );
    let crl_path = dir.path().join("crl.pem");
    let week = time::Duration::days(7);
    std::fs::write(&crl_path, ca.crl(1, &[12], time::Duration::ZERO, week)).unwrap();
    let mut config = static_only(&sb);
    config.client_ca_pem = Some(ca.cert.pem());
    config.client_crl = Some(CrlSource::File(crl_path));
    let h = start(config).await;
    let c = client_as(&h, Some(ca.device(11)));

    match wait_done(&c, "t-revoked").await {
        TaskStatus::Failed(why) => assert!(why.contains("revoked before its turn"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(Store::open(&sb)
        .unwrap()
        .object("t-revoked")
        .unwrap()
        .is_none());
    assert!(matches!(
        wait_done(&c, "t-shared").await,
        TaskStatus::Found { .. }
    ));
    assert!(matches!(
        wait_done(&c, "t-anonymous").await,
        TaskStatus::NotFound(_)
    ));

    let Submitted::Queued(id) = c.submit("new.txt", b"from eleven").await.unwrap() else {
        panic!("a new object is queued");
    };
    wait_done(&c, &id).await;
    let task = Store::open(&sb).unwrap().task(&id).unwrap().unwrap();
    let shown: Vec<&str> = task
        .submitters
        .iter()
        .map(|s| s.trim_start_matches("00"))
        .collect();
    assert_eq!(shown, ["0b"]);
    h.shutdown().await;
}

/// While objects wait behind a slow one, their device is revoked: what it alone asked
/// for is dropped, what another device in good standing asked for too is analysed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_in_good_standing_keeps_a_shared_object_queued_for_analysis() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let crl_path = dir.path().join("crl.pem");
    let week = time::Duration::days(7);
    std::fs::write(&crl_path, ca.crl(1, &[], time::Duration::ZERO, week)).unwrap();
    let mut config = SandboxConfig::new(dir.path().join("sb"));
    config.workers = 1;
    config.client_ca_pem = Some(ca.cert.pem());
    config.client_crl = Some(CrlSource::File(crl_path.clone()));
    config.crl_refresh = Duration::from_millis(100);
    let h = start(config).await;
    let (twelve, eleven) = (
        client_as(&h, Some(ca.device(12))),
        client_as(&h, Some(ca.device(11))),
    );
    let queued = |s: Submitted| match s {
        Submitted::Queued(id) => id,
        other => panic!("{other:?}"),
    };
    // The single worker runs a 2-second script in the jail; the rest waits.
    twelve
        .submit("slow.sh", b"#!/bin/sh\nsleep 2\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let alone = queued(twelve.submit("alone.txt", b"twelve alone").await.unwrap());
    let shared = queued(twelve.submit("shared.txt", b"both asked").await.unwrap());
    assert_eq!(
        queued(eleven.submit("shared2.txt", b"both asked").await.unwrap()),
        shared
    );
    std::fs::write(&crl_path, ca.crl(2, &[12], time::Duration::ZERO, week)).unwrap();
    assert!(
        eventually(|| async {
            matches!(
                twelve.submit("probe.txt", b"probe").await,
                Err(riposte_sandbox::SandboxError::Revoked)
            )
        })
        .await
    );
    match wait_done(&eleven, &alone).await {
        TaskStatus::Failed(why) => assert!(why.contains("revoked before its turn"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        wait_done(&eleven, &shared).await,
        TaskStatus::NotFound(_)
    ));
    h.shutdown().await;
}

/// A sandbox whose revocation list comes from a server that does not answer yet starts,
/// and tells enrolled devices to retry (a server error, which the agent's client retries)
/// rather than serving a device that may have been revoked; an anonymous client is still
/// told it is not admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn until_a_first_list_arrives_enrolled_devices_are_asked_to_retry() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}/api/v1/pki/crl", closed.local_addr().unwrap());
    drop(closed);
    let mut config = static_only(dir.path());
    config.client_ca_pem = Some(ca.cert.pem());
    config.client_crl = Some(CrlSource::Url(url.clone()));
    let h = start(config).await;
    let with = |identity| client_as(&h, identity);
    let err = with(Some(ca.device(5)))
        .submit("a.txt", b"x")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, riposte_sandbox::SandboxError::Unreachable(m)
            if m.contains("revocation list has not been loaded yet") && !m.contains(&url)),
        "{err}"
    );
    let anonymous = with(None).submit("a.txt", b"x").await.unwrap_err();
    assert!(
        matches!(anonymous, riposte_sandbox::SandboxError::NotAdmitted),
        "{anonymous}"
    );
    assert!(Store::open(dir.path()).unwrap().tasks().unwrap().is_empty());
    // Submissions and polls alike say when to come back.
    let device = ca.device(6);
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(
            riposte_sandbox::tls::pinned_client_config(&h.cert_pem, Some(&device)).unwrap(),
        )
        .build()
        .unwrap();
    for req in [
        http.post(format!("https://{}/sandbox/v1/tasks?name=a.txt", h.addr))
            .body("x"),
        http.get(format!("https://{}/sandbox/v1/tasks/some-task", h.addr)),
    ] {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 503);
        assert_eq!(resp.headers()["retry-after"], "10");
    }
    h.shutdown().await;
}

/// Tasks left queued in the sandbox's data directory `sb` when it stopped: (id, object,
/// the submitters' certificate serials in hex).
fn queued_before_start(sb: &std::path::Path, tasks: &[(&str, &[u8], &[&str])]) {
    use riposte_sandbox::store::{TaskRecord, TaskState};
    let store = Store::open(sb).unwrap();
    for (id, data, submitters) in tasks {
        store.put_object(id, data).unwrap();
        store
            .put_task(&TaskRecord {
                id: id.to_string(),
                name: format!("{id}.txt"),
                sha256: FileIoc::from_bytes(None, data).sha256,
                size: data.len() as u64,
                state: TaskState::Queued,
                submitted_at: 1,
                finished_at: None,
                report: None,
                error: None,
                submitters: submitters.iter().map(|s| s.to_string()).collect(),
            })
            .unwrap();
    }
}
