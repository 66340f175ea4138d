//! The agent channel end to end over real mutual TLS: pushes within a second, delivery to
//! an agent that was offline, and nothing lost across a server restart — on both back ends.

mod common;
use common::*;
use riposte_proto::Delivery;
use riposte_store::Backend;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn offers(d: &[(u64, Delivery)]) -> Vec<i64> {
    d.iter()
        .filter_map(|(_, d)| match d {
            Delivery::TaskOffer(o) => Some(o.task_id),
            _ => None,
        })
        .collect()
}

fn tr_enabled(d: &[(u64, Delivery)]) -> Option<bool> {
    d.iter().rev().find_map(|(_, d)| match d {
        Delivery::Settings { settings, .. } => Some(settings.threat_response.value.enabled),
        _ => None,
    })
}

fn task_body(name: &str) -> serde_json::Value {
    json!({"name": name, "group": "A", "iocs": [{"format": "openioc", "name": "x.ioc", "content": "<OpenIOC xmlns=\"http://openioc.org/schemas/OpenIOC_1.1\" id=\"t\" last-modified=\"2020-01-01T00:00:00Z\" published-date=\"2020-01-01T00:00:00Z\"><metadata><short_description>t</short_description><authored_date>2020-01-01T00:00:00Z</authored_date></metadata><criteria><Indicator operator=\"OR\" id=\"o\"><IndicatorItem id=\"i\" condition=\"is\" preserve-case=\"false\" negate=\"false\"><Context document=\"FileItem\" search=\"FileItem/FileName\" type=\"mir\"/><Content type=\"string\">no-such-file.bin</Content></IndicatorItem></Indicator></criteria></OpenIOC>"}],
           "actions": ["quarantine_and_delete"]})
}

async fn push_offline_and_restart(backend: Backend) {
    let mut ts = TestServer::start(backend).await;
    let api = ts.client().await;
    api.ok("POST", "/api/v1/groups", Some(json!({"name": "A"})))
        .await;
    let identity = enroll(&api, &ts.ca, "A", "dev1").await;
    let agent = TestAgent::start(identity.clone(), Arc::new(Recorder::default()));

    // Initial settings arrive on connect.
    assert!(
        agent
            .recorder
            .wait_for(Duration::from_secs(5), |d| tr_enabled(d) == Some(false))
            .await
    );

    // A settings change reaches the connected agent within 1 s.
    let t0 = Instant::now();
    api.ok(
        "PUT",
        "/api/v1/groups/A/policy/threat-response",
        Some(json!({"enabled": true, "mode": "enforce"})),
    )
    .await;
    assert!(
        agent
            .recorder
            .wait_for(Duration::from_secs(1), |d| tr_enabled(d) == Some(true))
            .await,
        "settings not pushed within 1 s"
    );
    let settings_latency = t0.elapsed();

    // A task reaches it within 1 s, and is then `delivered` on the server.
    let t0 = Instant::now();
    let t1 = api.ok("POST", "/api/v1/tasks", Some(task_body("t1"))).await["id"]
        .as_i64()
        .unwrap();
    assert!(
        agent
            .recorder
            .wait_for(Duration::from_secs(1), |d| offers(d).contains(&t1))
            .await,
        "task not pushed within 1 s"
    );
    eprintln!(
        "settings pushed in {settings_latency:?}, task in {:?}",
        t0.elapsed()
    );
    let mut delivered = false;
    for _ in 0..50 {
        let t = api.ok("GET", &format!("/api/v1/tasks/{t1}"), None).await;
        if t["devices"][0]["state"] == "delivered" {
            delivered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(delivered, "the server did not record the acknowledgement");

    // The agent goes offline; a task and a settings change are queued for it.
    let recorder = agent.stop().await;
    let t2 = api.ok("POST", "/api/v1/tasks", Some(task_body("t2"))).await["id"]
        .as_i64()
        .unwrap();
    api.ok(
        "PUT",
        "/api/v1/groups/A/policy/threat-response",
        Some(json!({"enabled": false})),
    )
    .await;
    let t = api.ok("GET", &format!("/api/v1/tasks/{t2}"), None).await;
    assert_eq!(t["devices"][0]["state"], "pending");

    // The server restarts before the agent comes back: nothing is lost.
    ts.restart().await;
    let agent = TestAgent::start(identity.clone(), recorder);
    assert!(
        agent
            .recorder
            .wait_for(Duration::from_secs(10), |d| offers(d).contains(&t2)
                && tr_enabled(d) == Some(false))
            .await,
        "queued task and settings not delivered after reconnect"
    );
    // Nothing was delivered twice (the agent said what it had applied).
    let got = offers(&agent.recorder.got.lock().unwrap());
    assert_eq!(got, vec![t1, t2], "each task offered exactly once");
    let seqs: Vec<u64> = agent
        .recorder
        .got
        .lock()
        .unwrap()
        .iter()
        .map(|(s, _)| *s)
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "deliveries in order: {seqs:?}"
    );
    agent.stop().await;
    ts.stop().await;
}

#[tokio::test]
async fn push_offline_and_restart_sqlite() {
    push_offline_and_restart(Backend::Sqlite).await;
}

#[tokio::test]
async fn push_offline_and_restart_postgres() {
    push_offline_and_restart(Backend::Postgres).await;
}

#[tokio::test]
async fn revoked_device_is_refused_at_once() {
    let (ts, api) = TestServer::with_group_a(Backend::Sqlite).await;
    let identity = enroll(&api, &ts.ca, "A", "dev1").await;
    let agent = TestAgent::start(identity.clone(), Arc::new(Recorder::default()));
    assert!(
        agent
            .recorder
            .wait_for(Duration::from_secs(5), |d| !d.is_empty())
            .await
    );
    assert!(ts.running().core.hub.is_connected(identity.device_id));
    api.ok(
        "POST",
        &format!("/api/v1/devices/{}/revoke", identity.device_id),
        None,
    )
    .await;
    // Kicked at once, and refused on reconnect with the reason.
    let deadline = Instant::now() + Duration::from_secs(3);
    while ts.running().core.hub.is_connected(identity.device_id) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!ts.running().core.hub.is_connected(identity.device_id));
    let recorder = agent.stop().await;
    let agent = TestAgent::start(identity, recorder);
    let mut refused = false;
    for _ in 0..100 {
        if agent
            .recorder
            .notes
            .lock()
            .unwrap()
            .iter()
            .any(|n| n.contains("revoked"))
        {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused, "notes: {:?}", agent.recorder.notes.lock().unwrap());
    agent.stop().await;
    ts.stop().await;
}

#[tokio::test]
async fn a_certificate_of_another_device_is_refused() {
    let (ts, api) = TestServer::with_group_a(Backend::Sqlite).await;
    let a = enroll(&api, &ts.ca, "A", "a").await;
    let b = enroll(&api, &ts.ca, "A", "b").await;
    // Device b's certificate claiming to be device a.
    let mut forged = b.clone();
    forged.device_id = a.device_id;
    let agent = TestAgent::start(forged, Arc::new(Recorder::default()));
    let mut refused = false;
    for _ in 0..100 {
        if agent
            .recorder
            .notes
            .lock()
            .unwrap()
            .iter()
            .any(|n| n.contains("does not belong"))
        {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused);
    assert!(agent.recorder.got.lock().unwrap().is_empty());
    agent.stop().await;
    ts.stop().await;
}

/// Two server processes on one PostgreSQL database: a task created through one reaches an
/// agent connected to the other within a second (wake-ups travel by LISTEN/NOTIFY).
#[tokio::test]
async fn two_servers_share_one_postgres_database() {
    let (ts, api_a) = TestServer::with_group_a(Backend::Postgres).await;
    let identity = enroll(&api_a, &ts.ca, "A", "dev1").await;
    let agent = TestAgent::start(identity, Arc::new(Recorder::default()));
    assert!(
        agent
            .recorder
            .wait_for(Duration::from_secs(5), |d| !d.is_empty())
            .await
    );

    // The second process shares the data directory (CA and keys) and the database.
    let b = ts.another_process().await;
    let url_b = format!("https://127.0.0.1:{}", b.api_addr.port());
    let api_b = Api::login(&url_b, &ts.ca, "admin", ADMIN_PASSWORD).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // let B's listener subscribe

    let t0 = Instant::now();
    let task = api_b
        .ok("POST", "/api/v1/tasks", Some(task_body("via-b")))
        .await["id"]
        .as_i64()
        .unwrap();
    assert!(
        agent
            .recorder
            .wait_for(Duration::from_secs(1), |d| offers(d).contains(&task))
            .await,
        "a task created on server B did not reach the agent on server A within 1 s"
    );
    api_b
        .ok(
            "PUT",
            "/api/v1/groups/A/policy/threat-response",
            Some(json!({"enabled": true})),
        )
        .await;
    assert!(
        agent
            .recorder
            .wait_for(Duration::from_secs(1), |d| tr_enabled(d) == Some(true))
            .await
    );
    eprintln!("cross-process push in {:?}", t0.elapsed());
    agent.stop().await;
    b.shutdown().await;
    ts.stop().await;
}

/// A device recorded as held by another server process shows connected only while that
/// process beats: one that died (it stops beating, and leaves its rows behind) no longer
/// holds its devices for the minutes their "last seen" stays fresh.
#[tokio::test]
async fn a_device_held_by_a_dead_process_shows_disconnected() {
    let (ts, api) = TestServer::with_group_a(Backend::Sqlite).await;
    let dev = enroll(&api, &ts.ca, "A", "held").await;
    let core = ts.running().core.clone();
    let connected = || async {
        api.ok("GET", &format!("/api/v1/devices/{}", dev.device_id), None)
            .await["connected"]
            .clone()
    };
    // Another process took the device's channel a moment ago and never beat: dead.
    core.store
        .device_connected(dev.device_id, "held", "ghost:1:0")
        .await
        .unwrap();
    core.beat().await.unwrap();
    assert_eq!(connected().await, json!(false));

    let now = riposte_store::now_ms();
    core.store
        .beat_server_process("ghost:1:0", now, 0)
        .await
        .unwrap();
    core.beat().await.unwrap();
    assert_eq!(connected().await, json!(true), "held by a live process");

    let stale = now - 2 * riposte_server::service::PROCESS_LIVE_FOR.as_millis() as i64;
    core.store
        .beat_server_process("ghost:1:0", stale, 0)
        .await
        .unwrap();
    core.beat().await.unwrap();
    assert_eq!(
        connected().await,
        json!(false),
        "the process stopped beating"
    );
    ts.stop().await;
}

/// With several server processes on one PostgreSQL database, each shows a device as
/// connected whichever process holds its channel, and as disconnected once it left.
#[tokio::test]
async fn a_device_connected_to_another_process_is_shown_connected() {
    let (ts, api) = TestServer::with_group_a(Backend::Postgres).await;
    let mut identity = enroll(&api, &ts.ca, "A", "elsewhere").await;
    let b = ts.another_process().await;
    identity.channel_addr = format!("127.0.0.1:{}", b.agent_addr.port());
    let device = identity.device_id;
    let connected = || async {
        api.ok("GET", &format!("/api/v1/devices/{device}"), None)
            .await["connected"]
            .clone()
    };
    assert_eq!(connected().await, json!(false));
    let agent = TestAgent::start(identity, Arc::new(Recorder::default()));
    assert!(
        agent
            .recorder
            .wait_for(Duration::from_secs(5), |d| !d.is_empty())
            .await
    );
    assert!(b.core.hub.is_connected(device));
    assert!(!ts.running().core.hub.is_connected(device));
    assert_eq!(
        connected().await,
        json!(true),
        "connected through process B"
    );
    agent.stop().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while connected().await == json!(true) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(connected().await, json!(false), "gone from process B");
    b.shutdown().await;
    ts.stop().await;
}

/// A device connected to one server process is revoked through another (one PostgreSQL
/// database): its connection closes at once, what was queued for it is dropped, and
/// later settings are not queued for it.
#[tokio::test]
async fn revocation_through_another_server_process_closes_the_connection() {
    let (ts, api) = TestServer::with_group_a(Backend::Postgres).await;
    let mut identity = enroll(&api, &ts.ca, "A", "dev1").await;
    let b = ts.another_process().await;
    identity.channel_addr = format!("127.0.0.1:{}", b.agent_addr.port());
    let device = identity.device_id;
    let agent = TestAgent::start(identity.clone(), Arc::new(Recorder::default()));
    assert!(
        agent
            .recorder
            .wait_for(Duration::from_secs(5), |d| !d.is_empty())
            .await
    );
    assert!(b.core.hub.is_connected(device));
    assert!(!ts.running().core.hub.is_connected(device));
    // What was delivered (the settings) is acknowledged before the agent stops, so that
    // the outbox holds only what is queued next.
    let store = &ts.running().core.store;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !store.outbox_after(device, 0, 100).await.unwrap().is_empty() && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let agent = {
        // Queued while offline, then revoked through server A.
        let recorder = agent.stop().await;
        api.ok("POST", "/api/v1/tasks", Some(task_body("queued")))
            .await;
        let store = &ts.running().core.store;
        assert_eq!(store.outbox_after(device, 0, 100).await.unwrap().len(), 1);
        let agent = TestAgent::start(identity, recorder);
        assert!(
            agent
                .recorder
                .wait_for(Duration::from_secs(5), |d| !offers(d).is_empty())
                .await
        );
        agent
    };
    api.ok("POST", &format!("/api/v1/devices/{device}/revoke"), None)
        .await;
    let deadline = Instant::now() + Duration::from_secs(3);
    while b.core.hub.is_connected(device) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !b.core.hub.is_connected(device),
        "still connected to the other process after revocation"
    );
    let store = &ts.running().core.store;
    assert!(store.outbox_after(device, 0, 100).await.unwrap().is_empty());
    api.ok(
        "PUT",
        "/api/v1/groups/A/policy/threat-response",
        Some(json!({"enabled": true})),
    )
    .await;
    assert!(
        store.outbox_after(device, 0, 100).await.unwrap().is_empty(),
        "settings queued for a revoked device"
    );
    agent.stop().await;
    b.shutdown().await;
    ts.stop().await;
}

/// The outbox keeps the special password sealed; the agent receives it in clear.
#[tokio::test]
async fn queued_settings_keep_the_special_password_sealed() {
    let (ts, api) = TestServer::with_group_a(Backend::Sqlite).await;
    let identity = enroll(&api, &ts.ca, "A", "dev1").await;
    enforce_group_actions(&api, "A", "sealed-pw-123", &["group_ioc_scan"]).await;
    let rows = ts
        .running()
        .core
        .store
        .outbox_after(identity.device_id, 0, 100)
        .await
        .unwrap();
    assert!(rows.iter().any(|r| r.payload.contains("special_password")));
    for r in &rows {
        assert!(!r.payload.contains("sealed-pw-123"), "{}", r.payload);
    }
    let agent = TestAgent::start(identity, Arc::new(Recorder::default()));
    assert!(
        agent
            .recorder
            .wait_for(Duration::from_secs(5), |d| d.iter().any(|(_, d)| matches!(
                d,
                Delivery::Settings { special_password: Some(p), .. } if p == "sealed-pw-123"
            )))
            .await,
        "the agent did not receive the password in clear"
    );
    agent.stop().await;
    ts.stop().await;
}

/// A name of digits only would read as another device's id wherever devices are named,
/// so enrollment refuses it and spends nothing.
#[tokio::test]
async fn a_device_name_of_digits_is_refused_at_enrollment() {
    let (ts, api) = TestServer::with_group_a(Backend::Sqlite).await;
    let t = api
        .ok(
            "POST",
            "/api/v1/enroll-tokens",
            Some(json!({"group": "A", "max_uses": 1})),
        )
        .await;
    let token = t["token"].as_str().unwrap();
    let err = riposte_agent::identity::enroll(&api.url, &ts.ca, token, "1", "host-1")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("digits only"), "{err}");
    // The token's one use is still there.
    let ok = riposte_agent::identity::enroll(&api.url, &ts.ca, token, "web-1", "host-1").await;
    assert!(ok.is_ok(), "{:?}", ok.err().map(|e| e.to_string()));
    ts.stop().await;
}

/// A device names itself at enrollment: a name with a newline or a direction override
/// would fake lines of the audit log and device listings, or read as another device's.
/// Such names are refused, the token's use unspent; and the agent never enrolls over
/// plain HTTP, where its token would travel in clear.
#[tokio::test]
async fn device_names_with_invisible_characters_are_refused_at_enrollment() {
    let (ts, api) = TestServer::with_group_a(Backend::Sqlite).await;
    let t = api
        .ok(
            "POST",
            "/api/v1/enroll-tokens",
            Some(json!({"group": "A", "max_uses": 1})),
        )
        .await;
    let token = t["token"].as_str().unwrap();
    for (name, host) in [
        (
            "laptop)\n1795953147000  admin  127.0.0.1  account_delete  admin (x",
            "h",
        ),
        ("invoice\u{202e}fdp", "h"),
        ("web\u{0}1", "h"),
        ("web-1", "host\u{200b}1"),
    ] {
        let err = riposte_agent::identity::enroll(&api.url, &ts.ca, token, name, host)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("printable characters") || err.contains("invisible characters"),
            "{name:?}/{host:?}: {err}"
        );
    }
    let plain = api.url.replacen("https://", "http://", 1);
    let err = riposte_agent::identity::enroll(&plain, &ts.ca, token, "web-1", "host-1")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("must start with https://"), "{err}");
    let ok = riposte_agent::identity::enroll(&api.url, &ts.ca, token, "web-1", "host-1").await;
    assert!(ok.is_ok(), "{:?}", ok.err().map(|e| e.to_string()));
    ts.stop().await;
}

/// Agent connections take their store operations from a share of the pool's connections
/// (`Core::agent_store_slots`), so that requests never queue behind them: with every
/// agent slot taken, a device cannot even finish its hello, while an API request is
/// answered at once; the device connects when a slot frees.
async fn agents_queue_for_their_share_and_requests_do_not(backend: Backend) {
    let (ts, api) = TestServer::with_group_a(backend).await;
    let identity = enroll(&api, &ts.ca, "A", "dev1").await;
    let core = ts.running().core.clone();
    let slots = core.agent_store_slots.available_permits() as u32;
    let expected = match backend {
        Backend::Sqlite => 1,
        Backend::Postgres => {
            core.store.pool_size() - riposte_server::service::RESERVED_FOR_REQUESTS
        }
    };
    assert_eq!(slots, expected);
    let held = core.agent_store_slots.acquire_many(slots).await.unwrap();
    let agent = TestAgent::start(identity.clone(), Arc::new(Recorder::default()));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        !core.hub.is_connected(identity.device_id),
        "the device's hello waits for a slot"
    );
    let t = Instant::now();
    let devices = api.ok("GET", "/api/v1/devices", None).await;
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(devices.to_string().contains("dev1"), "{devices}");
    drop(held);
    assert!(
        agent
            .recorder
            .wait_for(Duration::from_secs(10), |d| !d.is_empty())
            .await,
        "connected once a slot is free"
    );
    assert!(core.hub.is_connected(identity.device_id));
    agent.stop().await;
    ts.stop().await;
}

#[tokio::test]
async fn agents_queue_for_their_share_and_requests_do_not_sqlite() {
    agents_queue_for_their_share_and_requests_do_not(Backend::Sqlite).await;
}

#[tokio::test]
async fn agents_queue_for_their_share_and_requests_do_not_postgres() {
    agents_queue_for_their_share_and_requests_do_not(Backend::Postgres).await;
}

/// A connected device's "last seen" moves with the frames it sends, stored at most once
/// per `seen_refresh_ms`: before, it stayed at the time of its hello for as long as the
/// connection lasted.
#[tokio::test]
async fn last_seen_moves_while_the_device_is_connected_at_most_once_per_refresh() {
    use riposte_proto::AgentToServer;
    for refresh_ms in [50, 60 * 60 * 1000] {
        let dir = tempfile::tempdir().unwrap();
        let db = riposte_store::testing::TestDb::new(Backend::Sqlite).await;
        let mut o = options(dir.path(), &db, Backend::Sqlite);
        o.core.seen_refresh_ms = refresh_ms;
        let server = riposte_server::start(o).await.unwrap();
        let url = format!("https://127.0.0.1:{}", server.api_addr.port());
        let ca = server.ca_pem().to_string();
        let api = Api::login(&url, &ca, "admin", ADMIN_PASSWORD).await;
        api.ok("POST", "/api/v1/groups", Some(json!({"name": "A"})))
            .await;
        let identity = enroll(&api, &ca, "A", "seen-01").await;
        let id = identity.device_id;
        let agent = TestAgent::start(identity, Arc::new(Recorder::default()));
        let deadline = Instant::now() + Duration::from_secs(5);
        while !server.core.hub.is_connected(id) {
            assert!(Instant::now() < deadline, "never connected");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let at_hello = server.core.store.device(id).await.unwrap().last_seen;
        tokio::time::sleep(Duration::from_millis(120)).await;
        agent.tx.send(AgentToServer::Ping).unwrap();
        // Long enough for the ping to be handled; the second round waits it out.
        let deadline = Instant::now() + Duration::from_secs(if refresh_ms == 50 { 5 } else { 1 });
        let mut last_seen = at_hello;
        while last_seen == at_hello && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            last_seen = server.core.store.device(id).await.unwrap().last_seen;
        }
        if refresh_ms == 50 {
            assert!(last_seen > at_hello, "last seen stayed at the hello");
        } else {
            assert_eq!(last_seen, at_hello, "stored again within the refresh");
        }
        agent.stop().await;
        server.shutdown().await;
        db.cleanup().await;
    }
}

/// Whether `cert_pem` passes a client-certificate check against `ca_pem` with the CA's
/// revocation list `crl_pem`, as a sandbox checks a device (the list's signature too).
fn passes_with_list(ca_pem: &str, crl_pem: &str, cert_pem: &str) -> Result<(), rustls::Error> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let crls: Vec<_> = CertificateRevocationListDer::pem_slice_iter(crl_pem.as_bytes())
        .map(Result::unwrap)
        .collect();
    assert_eq!(crls.len(), 1, "one list: {crl_pem}");
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .with_crls(crls)
    .enforce_revocation_expiration()
    .build()
    .unwrap();
    let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
    verifier
        .verify_client_cert(&cert, &[], UnixTime::now())
        .map(|_| ())
}

/// The CA's revocation list is public and signed; it names a device's certificate once
/// the device is revoked, through any server process of the database, and no other.
async fn revocation_list_names_revoked_devices(backend: Backend) {
    let (ts, api) = TestServer::with_group_a(backend).await;
    let dev1 = enroll(&api, &ts.ca, "A", "dev1").await;
    let dev2 = enroll(&api, &ts.ca, "A", "dev2").await;
    let fetch = || async {
        // No session: a sandbox reads the list without an account.
        let resp = api
            .http
            .get(format!("{}/api/v1/pki/crl", api.url))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["content-type"].to_str().unwrap(),
            "application/x-pem-file"
        );
        resp.text().await.unwrap()
    };
    let before = fetch().await;
    assert!(before.contains("BEGIN X509 CRL"), "{before}");
    // Nothing changed: the same signed list, not a new signature per fetch.
    assert_eq!(fetch().await, before);
    for dev in [&dev1, &dev2] {
        passes_with_list(&ts.ca, &before, &dev.cert_pem).unwrap();
    }

    api.ok(
        "POST",
        &format!("/api/v1/devices/{}/revoke", dev1.device_id),
        None,
    )
    .await;
    let after = fetch().await;
    assert_ne!(after, before, "a revocation is a new list at once");
    let refused = passes_with_list(&ts.ca, &after, &dev1.cert_pem).unwrap_err();
    assert!(
        matches!(
            refused,
            rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked)
        ),
        "{refused:?}"
    );
    passes_with_list(&ts.ca, &after, &dev2.cert_pem).unwrap();
    ts.stop().await;
}

/// A device enrolled before serials were kept: revoking it says it is not listed yet,
/// and the certificate it shows when it next connects (refused) puts it on the list.
#[tokio::test]
async fn a_device_enrolled_before_serials_were_kept_is_listed_when_it_shows_its_certificate() {
    let (ts, api) = TestServer::with_group_a(Backend::Sqlite).await;
    let dev = enroll(&api, &ts.ca, "A", "old").await;
    riposte_store::testing::forget_cert_serial(&ts.running().core.store, dev.device_id).await;
    let shown = api
        .ok("GET", &format!("/api/v1/devices/{}", dev.device_id), None)
        .await;
    assert_eq!(shown["certificate_expires_at"], json!(null), "{shown}");
    let answer = api
        .ok(
            "POST",
            &format!("/api/v1/devices/{}/revoke", dev.device_id),
            None,
        )
        .await;
    assert_eq!(answer["on_revocation_list"], json!(false), "{answer}");
    let crl = |api: &Api| {
        let url = format!("{}/api/v1/pki/crl", api.url);
        let http = api.http.clone();
        async move { http.get(url).send().await.unwrap().text().await.unwrap() }
    };
    passes_with_list(&ts.ca, &crl(&api).await, &dev.cert_pem).unwrap();

    let agent = TestAgent::start(dev.clone(), Arc::new(Recorder::default()));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut listed = false;
    while Instant::now() < deadline && !listed {
        tokio::time::sleep(Duration::from_millis(100)).await;
        listed = passes_with_list(&ts.ca, &crl(&api).await, &dev.cert_pem).is_err();
    }
    assert!(
        listed,
        "the refused connection put the certificate on the list"
    );
    // ...and its expiry on the device's record.
    let expires = ts
        .running()
        .core
        .store
        .device(dev.device_id)
        .await
        .unwrap()
        .cert_expires_ms;
    assert_eq!(
        expires,
        riposte_server::pki::pem_expires_ms(&dev.cert_pem),
        "read from the certificate shown"
    );
    agent.stop().await;
    ts.stop().await;
}

#[tokio::test]
async fn revocation_list_names_revoked_devices_sqlite() {
    revocation_list_names_revoked_devices(Backend::Sqlite).await;
}

#[tokio::test]
async fn revocation_list_names_revoked_devices_postgres() {
    revocation_list_names_revoked_devices(Backend::Postgres).await;
}

fn facts(cert_pem: &str) -> riposte_server::pki::CertificateFacts {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
    riposte_server::pki::certificate_facts(&der).unwrap()
}

/// Waits until `pred` holds on the recorder's link notes.
async fn wait_for_note(recorder: &Recorder, pred: impl Fn(&str) -> bool) -> bool {
    for _ in 0..200 {
        if recorder.notes.lock().unwrap().iter().any(|n| pred(n)) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Device certificates have a bounded life. A certificate that outlives the server's
/// setting (or has a third of its life left) is renewed over the channel: the agent gets
/// a certificate over a new key, reconnects with it, and the old one is revoked then —
/// refused on the channel and named on the revocation list.
async fn device_certificates_are_renewed_over_the_channel(backend: Backend) {
    let (mut ts, api) = TestServer::with_group_a(backend).await;
    let old = enroll(&api, &ts.ca, "A", "dev1").await;
    let id = old.device_id;
    let year = time::Duration::days(365);
    let issued = facts(&old.cert_pem);
    assert!((issued.not_after - issued.not_before - year).abs() < time::Duration::hours(2));
    let shown = api.ok("GET", &format!("/api/v1/devices/{id}"), None).await;
    assert_eq!(
        shown["certificate_expires_at"].as_i64(),
        riposte_server::pki::pem_expires_ms(&old.cert_pem),
        "{shown}"
    );

    // Fresh: the agent is not asked to renew.
    let agent = TestAgent::start(old.clone(), Arc::new(Recorder::default()));
    assert!(
        agent
            .recorder
            .wait_for(Duration::from_secs(5), |d| !d.is_empty())
            .await
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(agent.recorder.renewed.lock().unwrap().is_empty());
    agent.stop().await;

    // The server now issues certificates for 30 days: the year-long one is renewed.
    ts.restart_with(|o| o.core.device_cert_lifetime_ms = 30 * 24 * 3600 * 1000)
        .await;
    let agent = TestAgent::start(old.clone(), Arc::new(Recorder::default()));
    let store = ts.running().core.store.clone();
    let mut renewed = None;
    for _ in 0..200 {
        let got = agent.recorder.renewed.lock().unwrap().first().cloned();
        if let Some(new) = got {
            let fingerprint = riposte_server::pki::pem_fingerprint(&new.cert_pem).unwrap();
            if store.device(id).await.unwrap().cert_fingerprint == fingerprint {
                renewed = Some(new);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let new = renewed.expect("the certificate was renewed and the device connected with it");
    assert_ne!(new.key_pem, old.key_pem, "a new key");
    assert_eq!(new.device_id, id);
    let now = time::OffsetDateTime::now_utc();
    let life = facts(&new.cert_pem).not_after - now;
    assert!(
        life > time::Duration::days(29) && life <= time::Duration::days(30),
        "{life}"
    );
    assert!(wait_for_note(&agent.recorder, |n| n.contains("renewed")).await);
    // The server registers the connection just after it sends the welcome, which the
    // agent may read first.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ts.running().core.hub.is_connected(id) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ts.running().core.hub.is_connected(id));
    assert_eq!(
        store.device(id).await.unwrap().cert_expires_ms,
        riposte_server::pki::pem_expires_ms(&new.cert_pem),
        "the device's record follows the renewed certificate"
    );
    assert!(store
        .device(id)
        .await
        .unwrap()
        .next_cert_fingerprint
        .is_none());
    let audit = api.ok("GET", "/api/v1/audit", None).await;
    assert!(
        audit.to_string().contains("device_certificate_renewed"),
        "{audit}"
    );

    // The old certificate is revoked: named on the list, and refused on the channel.
    let crl = api
        .http
        .get(format!("{}/api/v1/pki/crl", api.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(passes_with_list(&ts.ca, &crl, &old.cert_pem).is_err());
    passes_with_list(&ts.ca, &crl, &new.cert_pem).unwrap();
    let stolen = TestAgent::start(old.clone(), Arc::new(Recorder::default()));
    assert!(wait_for_note(&stolen.recorder, |n| n.contains("does not belong")).await);
    stolen.stop().await;
    // So soon after the renewal it may be the device itself, whose connection with the
    // new certificate dropped: no alert.
    let reused = |alerts: Vec<riposte_store::AlertRow>| {
        alerts
            .into_iter()
            .filter(|a| a.code == "device_certificate_reused")
            .collect::<Vec<_>>()
    };
    assert!(reused(store.alerts(Some(id), 100).await.unwrap()).is_empty());

    // The renewed certificate is not renewed again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(agent.recorder.renewed.lock().unwrap().len(), 1);
    agent.stop().await;

    // A request the server did not ask for is refused and signs nothing.
    let agent = TestAgent::start(new.clone(), Arc::new(Recorder::default()));
    assert!(wait_for_note(&agent.recorder, |n| n == "connected").await);
    let (_, csr_pem) = riposte_agent::identity::key_and_request("dev1").unwrap();
    agent
        .tx
        .send(riposte_proto::AgentToServer::CertificateRequest { csr_pem })
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while ts.running().core.hub.is_connected(id) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let notes = agent.recorder.notes.lock().unwrap().clone();
    assert!(notes.iter().any(|n| n != "connected"), "{notes:?}");
    assert!(store
        .device(id)
        .await
        .unwrap()
        .next_cert_fingerprint
        .is_none());
    assert!(agent.recorder.renewed.lock().unwrap().is_empty());
    agent.stop().await;

    // Later, the old key is someone else's: an alert names the certificate, once
    // however often it is tried.
    ts.restart_with(|o| o.core.replaced_certificate_grace_ms = 0)
        .await;
    let store = ts.running().core.store.clone();
    for _ in 0..2 {
        let stolen = TestAgent::start(old.clone(), Arc::new(Recorder::default()));
        assert!(wait_for_note(&stolen.recorder, |n| n.contains("does not belong")).await);
        stolen.stop().await;
    }
    let alerts = reused(store.alerts(Some(id), 100).await.unwrap());
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let old_serial = facts(&old.cert_pem).serial;
    assert!(
        alerts[0].message.contains(&old_serial) && alerts[0].message.contains("replaced on"),
        "{}",
        alerts[0].message
    );
    // The device on its renewed certificate raises none.
    let agent = TestAgent::start(new.clone(), Arc::new(Recorder::default()));
    assert!(wait_for_note(&agent.recorder, |n| n == "connected").await);
    agent.stop().await;
    assert_eq!(reused(store.alerts(Some(id), 100).await.unwrap()).len(), 1);
    ts.stop().await;
}

#[tokio::test]
async fn device_certificates_are_renewed_over_the_channel_sqlite() {
    device_certificates_are_renewed_over_the_channel(Backend::Sqlite).await;
}

#[tokio::test]
async fn device_certificates_are_renewed_over_the_channel_postgres() {
    device_certificates_are_renewed_over_the_channel(Backend::Postgres).await;
}

/// A connection that outlives the point where renewal is due is asked then, not only
/// when it opens. Once a renewed certificate is issued, the old key gets no other for
/// an hour (whoever holds it: a stolen copy, or the agent that could not store it), and
/// a request over the current key is refused.
#[tokio::test]
async fn a_connected_agent_is_asked_to_renew_once_due_and_the_old_key_gets_one_certificate() {
    let (mut ts, api) = TestServer::with_group_a(Backend::Sqlite).await;
    ts.restart_with(|o| o.core.certificate_check_ms = 50).await;
    let old = enroll(&api, &ts.ca, "A", "dev1").await;
    let id = old.device_id;
    let store = ts.running().core.store.clone();
    let recorder = Arc::new(Recorder::default());
    recorder
        .fail_renewal
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let agent = TestAgent::start(old.clone(), recorder.clone());
    assert!(wait_for_note(&recorder, |n| n == "connected").await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    agent.tx.send(riposte_proto::AgentToServer::Ping).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(store
        .device(id)
        .await
        .unwrap()
        .next_cert_fingerprint
        .is_none());

    // The setting falls to 30 days while the agent is connected: at its next frame it
    // is asked, gets a certificate, and (here) cannot store it.
    ts.running()
        .core
        .set_device_cert_lifetime(30 * 24 * 3600 * 1000);
    agent.tx.send(riposte_proto::AgentToServer::Ping).unwrap();
    assert!(wait_for_note(&recorder, |n| n == "renewal not stored").await);
    let pending = store.device(id).await.unwrap().next_cert_fingerprint;
    assert!(pending.is_some());
    assert!(
        ts.running().core.hub.is_connected(id),
        "still on the old certificate"
    );

    // The old key again, elsewhere: not asked, nothing new issued.
    let copy = TestAgent::start(old.clone(), Arc::new(Recorder::default()));
    assert!(wait_for_note(&copy.recorder, |n| n == "connected").await);
    copy.tx.send(riposte_proto::AgentToServer::Ping).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(copy.recorder.renewed.lock().unwrap().is_empty());
    assert_eq!(
        store.device(id).await.unwrap().next_cert_fingerprint,
        pending
    );
    copy.stop().await;
    agent.stop().await;

    // Asked directly, the server refuses within the hour, and a request over the
    // current key at any time.
    let core = &ts.running().core;
    let facts = facts(&old.cert_pem);
    let current = riposte_server::pki::pem_fingerprint(&old.cert_pem).unwrap();
    let (_, fresh) = riposte_agent::identity::key_and_request("dev1").unwrap();
    let e = core
        .renew_device_certificate(id, &current, &facts, &fresh)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("within the hour"), "{e}");
    let same_key = {
        let key = rcgen::KeyPair::from_pem(&old.key_pem).unwrap();
        rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap()
    };
    let e = core
        .renew_device_certificate(id, &current, &facts, &same_key)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("over a new key"), "{e}");
    let audit = api.ok("GET", "/api/v1/audit", None).await.to_string();
    assert!(audit.contains("device_certificate_issued"), "{audit}");
    assert!(audit.contains(&facts.serial), "{audit}");
    ts.stop().await;
}

/// A renewed identity the server never accepted (here another device's certificate) is
/// tried first, refused, and dropped once the current one connects; one it issued is
/// accepted on first use, which the link reports.
#[tokio::test]
async fn a_pending_renewal_the_server_refuses_falls_back_to_the_current_certificate() {
    let (mut ts, api) = TestServer::with_group_a(Backend::Sqlite).await;
    let dev = enroll(&api, &ts.ca, "A", "dev1").await;
    let other = enroll(&api, &ts.ca, "A", "dev2").await;
    let mut wrong = other.clone();
    wrong.device_id = dev.device_id;
    let agent =
        TestAgent::start_with_pending(dev.clone(), Some(wrong), Arc::new(Recorder::default()));
    assert!(wait_for_note(&agent.recorder, |n| n == "connected").await);
    assert!(wait_for_note(&agent.recorder, |n| n.contains("does not belong")).await);
    assert_eq!(*agent.recorder.renewal_steps.lock().unwrap(), ["discarded"]);
    agent.stop().await;

    // A real renewal: issued, then accepted on the next connection.
    ts.restart_with(|o| o.core.device_cert_lifetime_ms = 30 * 24 * 3600 * 1000)
        .await;
    let agent = TestAgent::start(dev.clone(), Arc::new(Recorder::default()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while agent.recorder.renewal_steps.lock().unwrap().len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        *agent.recorder.renewal_steps.lock().unwrap(),
        ["issued", "accepted"]
    );
    agent.stop().await;
    ts.stop().await;
}

/// A connection still open with a certificate that is no longer the device's (renewed
/// through another server process, whose kick does not cross processes) is not sent
/// the special password, and is ended.
#[tokio::test]
async fn a_connection_on_a_replaced_certificate_gets_nothing_and_is_ended() {
    let (mut ts, api) = TestServer::with_group_a(Backend::Sqlite).await;
    ts.restart_with(|o| o.core.certificate_check_ms = 50).await;
    let old = enroll(&api, &ts.ca, "A", "dev1").await;
    let id = old.device_id;
    let copy = TestAgent::start(old.clone(), Arc::new(Recorder::default()));
    assert!(
        copy.recorder
            .wait_for(Duration::from_secs(5), |d| !d.is_empty())
            .await
    );
    let delivered = copy.recorder.got.lock().unwrap().len();
    // The renewal another process carried out, as the store records it.
    let store = ts.running().core.store.clone();
    let current = riposte_server::pki::pem_fingerprint(&old.cert_pem).unwrap();
    let issued = riposte_store::IssuedCertificate {
        fingerprint: "f".repeat(64),
        serial: Some("5e0001".into()),
        expires_ms: None,
    };
    assert!(store
        .offer_renewed_certificate(id, &current, &issued)
        .await
        .unwrap());
    assert!(store
        .promote_renewed_certificate(id, &issued.fingerprint)
        .await
        .unwrap()
        .is_some());
    // Settings that carry the special password: not delivered to the old certificate,
    // which is ended.
    enforce_group_actions(&api, "A", "special-pw-12", &["group_ioc_scan"]).await;
    assert!(
        wait_for_note(&copy.recorder, |n| n.contains("no longer this device's")).await,
        "{:?}",
        copy.recorder.notes.lock().unwrap()
    );
    assert_eq!(copy.recorder.got.lock().unwrap().len(), delivered);
    copy.stop().await;
    ts.stop().await;
}

/// An agent that could not store its renewed certificate, and stays connected, is asked
/// again on the same connection once that certificate has waited unused for the reissue
/// window; before that it is not.
#[tokio::test]
async fn a_connected_agent_that_could_not_store_its_renewal_is_asked_again_later() {
    let (mut ts, api) = TestServer::with_group_a(Backend::Sqlite).await;
    ts.restart_with(|o| {
        o.core.certificate_check_ms = 50;
        o.core.renewal_reissue_ms = 3_000;
        o.core.device_cert_lifetime_ms = 30 * 24 * 3600 * 1000;
    })
    .await;
    // Enrolled under 30 days, so the certificate is not due: made due below.
    let old = enroll(&api, &ts.ca, "A", "dev1").await;
    let recorder = Arc::new(Recorder::default());
    recorder
        .fail_renewal
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let agent = TestAgent::start(old.clone(), recorder.clone());
    assert!(wait_for_note(&recorder, |n| n == "connected").await);
    ts.running().core.set_device_cert_lifetime(24 * 3600 * 1000);
    let failures = || {
        recorder
            .notes
            .lock()
            .unwrap()
            .iter()
            .filter(|n| *n == "renewal not stored")
            .count()
    };
    let ping_until = |want: usize, within: Duration| {
        let (agent, failures) = (&agent, &failures);
        async move {
            let deadline = Instant::now() + within;
            while failures() < want && Instant::now() < deadline {
                agent.tx.send(riposte_proto::AgentToServer::Ping).unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            failures()
        }
    };
    assert_eq!(ping_until(1, Duration::from_secs(5)).await, 1);
    // Within the window: not asked again.
    assert_eq!(ping_until(2, Duration::from_millis(1_000)).await, 1);
    // After it: asked again, on the same connection.
    assert_eq!(ping_until(2, Duration::from_secs(8)).await, 2);
    assert!(ts.running().core.hub.is_connected(old.device_id));
    agent.stop().await;
    ts.stop().await;
}

/// A server on SQLite with group `A`, and a device enrolled in it as `name` whose agent
/// is connected: the device, and its id.
async fn sqlite_server_with_connected_device(name: &str) -> (TestServer, TestAgent, i64) {
    let (ts, api) = TestServer::with_group_a(Backend::Sqlite).await;
    let identity = enroll(&api, &ts.ca, "A", name).await;
    let id = identity.device_id;
    let agent = TestAgent::start(identity, Arc::new(Recorder::default()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ts.running().core.hub.is_connected(id) {
        assert!(Instant::now() < deadline, "never connected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (ts, agent, id)
}

/// A detection a device reports, of a made-up object.
fn detection_record(id: &str) -> riposte_proto::DetectionRecord {
    riposte_proto::DetectionRecord {
        detection_id: id.into(),
        path: "/tmp/x".into(),
        size: 1,
        md5: "0".repeat(32),
        sha1: "0".repeat(40),
        sha256: "0".repeat(64),
        threat: "Test.Threat".into(),
        source: "test".into(),
        source_ref: None,
        user_name: "u".into(),
        user_uid: Some(1000),
        detected_at_ms: riposte_store::now_ms(),
        dropped_sha256: Vec::new(),
    }
}

/// An event the server could not store is not taken as processed: the device sends it
/// again, and it is stored then. (Before, its id was recorded first, so a failure or a
/// stop between the two lost it for good.)
#[tokio::test]
async fn an_event_that_could_not_be_stored_is_stored_when_sent_again() {
    use riposte_proto::{AgentEvent, AgentToServer, EventBody};
    let (ts, agent, id) = sqlite_server_with_connected_device("retry-01").await;
    let store = &ts.running().core.store;
    riposte_store::testing::execute(
        store,
        "CREATE TRIGGER refuse_detections BEFORE INSERT ON detections
         BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
    )
    .await;
    let event = AgentToServer::Event(AgentEvent {
        event_id: "ev-retry-1".into(),
        at_ms: riposte_store::now_ms(),
        body: EventBody::Detection(detection_record("det-retry-1")),
    });
    agent.tx.send(event.clone()).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(store.detection("det-retry-1").await.is_err());
    assert!(!store.event_processed(id, "ev-retry-1").await.unwrap());
    riposte_store::testing::execute(store, "DROP TRIGGER refuse_detections").await;
    // The device sends what was not acknowledged again (here by hand, on whichever
    // connection the link has by then).
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.detection("det-retry-1").await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the detection was never stored: its first, failed, delivery was taken as done"
        );
        agent.tx.send(event.clone()).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(store.event_processed(id, "ev-retry-1").await.unwrap());
    agent.stop().await;
    ts.stop().await;
}

/// A group action's failure shows on the detection as its device reports it over its
/// channel: a failed `group_ioc_scan` outcome, not a pending one nor another action's.
/// (The server's own refusals are not written there: `autonomous::flow`.)
#[tokio::test]
async fn group_action_failures_are_the_devices_word() {
    use riposte_proto::{AgentEvent, AgentToServer, EventBody};
    let (ts, agent, _) = sqlite_server_with_connected_device("ga-fail-01").await;
    let store = &ts.running().core.store;
    let event = |n: u32, body: EventBody| {
        AgentToServer::Event(AgentEvent {
            event_id: format!("ev-ga-{n}"),
            at_ms: riposte_store::now_ms(),
            body,
        })
    };
    let outcome = |action: &str, outcome: &str, detail: &str| EventBody::ActionOutcome {
        detection_id: "det-ga".into(),
        action: action.into(),
        outcome: outcome.into(),
        detail: detail.into(),
    };
    let detection = EventBody::Detection(detection_record("det-ga"));
    // The failure first: each later outcome would overwrite it if it counted.
    let sent = [
        detection,
        outcome(
            "group_ioc_scan",
            "failed",
            "the server refused the autonomous task: wrong user name or password",
        ),
        outcome("group_ioc_scan", "pending", "no connection; asked again"),
        outcome("quarantine_and_delete", "failed", "cannot read"),
    ];
    let n = sent.len();
    for (i, body) in sent.into_iter().enumerate() {
        agent.tx.send(event(i as u32, body)).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let det = loop {
        if let Ok(det) = store.detection("det-ga").await {
            if det.outcomes.len() == n - 1 {
                break det;
            }
        }
        assert!(Instant::now() < deadline, "the events were never stored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        det.group_action_error.as_deref(),
        Some("the server refused the autonomous task: wrong user name or password")
    );
    agent.stop().await;
    ts.stop().await;
}

/// An event's writes are stored in one transaction with its mark: one that fails midway
/// leaves nothing of it behind, and sent again it is stored whole. Here a restore
/// reported with its allowance, whose second write (the allowance on a restored entry
/// of the same content) fails once.
#[tokio::test]
async fn an_event_that_fails_midway_leaves_nothing_behind() {
    use riposte_proto::{AgentEvent, AgentToServer, EventBody};
    let (ts, agent, id) = sqlite_server_with_connected_device("midway-01").await;
    let store = &ts.running().core.store;
    let sha256 = "ab".repeat(32);
    let quarantine_event = |event_id: &str, entry_id: &str, state: &str, allowed: bool| {
        AgentToServer::Event(AgentEvent {
            event_id: event_id.into(),
            at_ms: riposte_store::now_ms(),
            body: EventBody::Quarantine {
                entry_id: entry_id.into(),
                state: state.into(),
                record: serde_json::json!({
                    "sha256": sha256, "original_path": "/home/u/x", "allowed": allowed,
                }),
            },
        })
    };
    let entry = |entry_id: &'static str| async move {
        store
            .quarantine(Some(id))
            .await
            .unwrap()
            .into_iter()
            .find(|q| q.entry_id == entry_id)
            .map(|q| (q.state, q.record["allowed"] == true))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    // An entry restored earlier without its allowance (an older agent), and one in
    // quarantine.
    agent
        .tx
        .send(quarantine_event("ev-m1", "q0", "restored", false))
        .unwrap();
    agent
        .tx
        .send(quarantine_event("ev-m2", "q1", "quarantined", false))
        .unwrap();
    while entry("q1").await.is_none() || entry("q0").await.is_none() {
        assert!(Instant::now() < deadline, "the entries were never stored");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    riposte_store::testing::execute(
        store,
        "CREATE TRIGGER refuse_allowance BEFORE UPDATE ON quarantine WHEN OLD.state = 'restored'
         BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
    )
    .await;
    let restored = quarantine_event("ev-m3", "q1", "restored", true);
    let notes_before = agent.recorder.notes.lock().unwrap().len();
    agent.tx.send(restored.clone()).unwrap();
    // The failure ends the connection, the event unacknowledged: seen as the link's
    // state changing.
    let deadline = Instant::now() + Duration::from_secs(10);
    while agent.recorder.notes.lock().unwrap().len() == notes_before {
        assert!(
            Instant::now() < deadline,
            "the failed event left the link up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The entry's own change, written before the failure, was rolled back with it.
    assert_eq!(entry("q1").await, Some(("quarantined".to_string(), false)));
    assert_eq!(entry("q0").await, Some(("restored".to_string(), false)));
    assert!(!store.event_processed(id, "ev-m3").await.unwrap());
    riposte_store::testing::execute(store, "DROP TRIGGER refuse_allowance").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !store.event_processed(id, "ev-m3").await.unwrap() {
        assert!(Instant::now() < deadline, "the event was never stored");
        agent.tx.send(restored.clone()).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(entry("q1").await, Some(("restored".to_string(), true)));
    assert_eq!(entry("q0").await, Some(("restored".to_string(), true)));
    let audited = store.audit_log(100).await.unwrap();
    let restores = audited
        .iter()
        .filter(|a| a.action == "quarantine_entry_restored" && a.detail.contains("q1"))
        .count();
    assert_eq!(restores, 1, "{audited:?}");
    agent.stop().await;
    ts.stop().await;
}
