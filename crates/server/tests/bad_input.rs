//! Bad input gets a clear error and changes nothing.

mod common;
use common::*;
use riposte_store::Backend;
use serde_json::json;

#[tokio::test]
async fn bad_requests_change_nothing() {
    let (ts, api) = TestServer::with_group_a(Backend::Sqlite).await;
    let audit_before = api
        .ok("GET", "/api/v1/audit?limit=10000", None)
        .await
        .as_array()
        .unwrap()
        .len();

    // Wrong type.
    let (s, v) = api
        .call("POST", "/api/v1/groups", Some(json!({"name": 5})))
        .await;
    assert!(s == 400 || s == 422, "{s} {v}");
    // A struct written as an array of its fields, which serde would read by position.
    let (s, v) = api
        .call("POST", "/api/v1/groups", Some(json!(["B", null])))
        .await;
    assert_eq!(s, 422, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("must be a JSON object"),
        "{v}"
    );
    let (s, _) = api.call("GET", "/api/v1/groups/B/policy", None).await;
    assert_eq!(s, 404, "the array created the group");
    // Malformed JSON, not JSON at all, and JSON under another content type.
    for (content_type, body, status) in [
        ("application/json", "{\"name\": ", 400),
        ("application/json", "not json", 400),
        ("text/plain", "{\"name\": \"B\"}", 415),
    ] {
        let resp = api
            .http
            .post(format!("{}/api/v1/groups", ts.url))
            .bearer_auth(&api.token)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{content_type} {body}");
        let v: serde_json::Value = resp.json().await.unwrap();
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .starts_with("malformed request"),
            "{v}"
        );
    }
    // Over the size limit.
    let big = "x".repeat(riposte_server::api::BODY_LIMIT + 10);
    let (s, v) = api
        .call("POST", "/api/v1/groups", Some(json!({"name": big})))
        .await;
    assert_eq!(s, 413, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("larger than the limit"),
        "{v}"
    );
    // Unknown ids and names.
    for (m, p, b) in [
        ("GET", "/api/v1/tasks/424242", None),
        ("GET", "/api/v1/devices/424242", None),
        ("GET", "/api/v1/groups/nope/policy", None),
        ("POST", "/api/v1/tasks/424242/cancel", None),
        (
            "POST",
            "/api/v1/groups",
            Some(json!({"name": "B", "parent": "nope"})),
        ),
        ("GET", "/api/v1/detections/nope", None),
    ] {
        let (s, v) = api.call(m, p, b).await;
        assert_eq!(s, 404, "{m} {p}: {v}");
        assert!(v["error"].is_string());
    }
    let (s, v) = api.call("GET", "/api/v1/tasks/abc", None).await;
    assert_eq!(s, 400, "{v}");
    // Bad values.
    let (s, v) = api
        .call(
            "PUT",
            "/api/v1/groups/A/policy/threat-response",
            Some(json!({"actions": ["nuke"]})),
        )
        .await;
    assert!(s == 400 || s == 422, "{v}");
    let (s, v) = api
        .call(
            "PUT",
            "/api/v1/groups/A/policy/sandbox-integration",
            Some(json!({"watch": ["/tmp/../etc"]})),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    // A sandbox URL that does not parse, or names no host, is refused: devices would
    // keep their objects queued behind what looks like an outage.
    for (url, says) in [
        ("https://a b", "is not a URL"),
        ("https://", "is not a URL"),
        ("https://:0/", "is not a URL"),
        ("https://sandbox.example:0/", "names no host and port"),
    ] {
        let (s, v) = api
            .call(
                "PUT",
                "/api/v1/groups/A/policy/sandbox-integration",
                Some(json!({"sandboxes": [url]})),
            )
            .await;
        assert_eq!(s, 400, "{url}: {v}");
        assert!(v["error"].as_str().unwrap().contains(says), "{url}: {v}");
    }
    let (s, _) = api.call("POST", "/api/v1/tasks", Some(json!({"name": "t", "group": "A", "iocs": [{"format": "exe", "name": "x", "content": ""}]}))).await;
    assert_eq!(s, 400);
    // IOC documents the devices could not load are refused before any task exists.
    for (format, content, says) in [
        ("openioc", "<OpenIOC/>", "x.doc"),
        ("openioc", "not xml at all", "x.doc"),
        ("stix", "[file:name = ", "x.doc"),
        (
            "stix",
            r#"{"type":"indicator","id":"indicator--old","valid_until":"2001-01-01T00:00:00Z","pattern":"[file:name = 'a']"}"#,
            "no STIX indicator to evaluate (x.doc: indicator indicator--old expired at 2001-01-01T00:00:00Z",
        ),
        ("stix", r#"{"type":"bundle","id":"bundle--1","objects":[]}"#, "no STIX indicator to evaluate"),
        ("yara", "rule broken { condition: }", "x.doc"),
    ] {
        let (s, v) = api
            .call(
                "POST",
                "/api/v1/tasks",
                Some(json!({"name": "t", "group": "A", "iocs": [{"format": format, "name": "x.doc", "content": content}]})),
            )
            .await;
        assert_eq!(s, 400, "{format}: {v}");
        assert!(v.to_string().contains(says), "{format}: {v}");
    }
    let (s, v) = api
        .call("POST", "/api/v1/tasks", Some(json!({"name": " ", "group": "A", "iocs": [{"format": "yara", "name": "r", "content": "rule r { condition: true }"}]})))
        .await;
    assert_eq!(s, 400, "{v}");
    let (_, tasks) = api.call("GET", "/api/v1/tasks", None).await;
    assert_eq!(tasks.as_array().map(Vec::len), Some(0), "{tasks}");
    // STIX documents are read together: an update that revokes an indicator of the feed
    // is fine beside it, and refused only when nothing is left to evaluate.
    let (s, v) = api
        .call(
            "POST",
            "/api/v1/tasks",
            Some(stix_task(vec![
                ("feed.json", stix_feed(&["a"])),
                ("update.json", STIX_UPDATE_REVOKING_A.into()),
            ])),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v.to_string()
            .contains("update.json: indicator indicator--a is revoked"),
        "{v}"
    );
    // No credentials, a bad token.
    let (s, _) = send(
        &api.http,
        reqwest::Method::GET,
        &format!("{}/api/v1/groups", ts.url),
        "",
        None,
    )
    .await;
    assert_eq!(s, 401);
    let (s, _) = send(
        &api.http,
        reqwest::Method::GET,
        &format!("{}/api/v1/groups", ts.url),
        "forged",
        None,
    )
    .await;
    assert_eq!(s, 401);

    let groups = api.ok("GET", "/api/v1/groups", None).await;
    assert_eq!(
        groups.as_array().unwrap().len(),
        2,
        "nothing was created: {groups}"
    );
    assert!(api
        .ok("GET", "/api/v1/tasks", None)
        .await
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(
        api.ok("GET", "/api/v1/groups/A/policy", None).await["sandbox_integration"],
        serde_json::Value::Null
    );
    let audit_after = api
        .ok("GET", "/api/v1/audit?limit=10000", None)
        .await
        .as_array()
        .unwrap()
        .len();
    assert_eq!(
        audit_before, audit_after,
        "refused requests are not changes"
    );
    ts.stop().await;
}

#[tokio::test]
async fn bad_enrollment_tokens_create_no_device() {
    let (ts, api) = TestServer::with_group_a(Backend::Sqlite).await;
    let one = api
        .ok(
            "POST",
            "/api/v1/enroll-tokens",
            Some(json!({"group": "A", "max_uses": 1})),
        )
        .await;
    let token = one["token"].as_str().unwrap().to_string();
    riposte_agent::identity::enroll(&ts.url, &ts.ca, &token, "d1", "d1")
        .await
        .unwrap();
    // Used up.
    let e = riposte_agent::identity::enroll(&ts.url, &ts.ca, &token, "d2", "d2")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("used as many times"), "{e}");
    // Wrong.
    let e = riposte_agent::identity::enroll(&ts.url, &ts.ca, "not-a-token", "d3", "d3")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("unknown enrollment token"), "{e}");
    // Expired: make one, then age it in the store.
    let (s, v) = api
        .call(
            "POST",
            "/api/v1/enroll-tokens",
            Some(json!({"group": "A", "ttl_secs": 1})),
        )
        .await;
    assert_eq!(s, 400, "a 1-second token is refused: {v}");
    let hash = riposte_server::secrets::token_hash("expired-token");
    ts.running()
        .core
        .store
        .create_enroll_token(&hash, 1, riposte_store::now_ms() - 1, 5, "test")
        .await
        .unwrap();
    let e = riposte_agent::identity::enroll(&ts.url, &ts.ca, "expired-token", "d4", "d4")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("expired"), "{e}");
    // A malformed certificate request.
    let t2 = api
        .ok("POST", "/api/v1/enroll-tokens", Some(json!({"group": "A"})))
        .await;
    let (s, v) = send(
        &api.http,
        reqwest::Method::POST,
        &format!("{}/api/v1/enroll", ts.url),
        "",
        Some(json!({"token": t2["token"], "csr_pem": "garbage", "hostname": "h"})),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("certificate signing request"),
        "{v}"
    );
    // Without a valid token, nothing else of the request is judged: a wrong token
    // with a malformed request, or a name no device may have, hears only of its token.
    let e = riposte_agent::identity::enroll(&ts.url, &ts.ca, "not-a-token", "123", "h")
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("unknown enrollment token") && !e.to_string().contains("digits"),
        "{e}"
    );
    for body in [
        json!({"token": "not-a-token", "csr_pem": "garbage", "hostname": "h"}),
        json!({"token": "expired-token", "csr_pem": "garbage", "hostname": "h"}),
    ] {
        let (s, v) = send(
            &api.http,
            reqwest::Method::POST,
            &format!("{}/api/v1/enroll", ts.url),
            "",
            Some(body),
        )
        .await;
        assert_eq!(s, 401, "{v}");
        let error = v["error"].as_str().unwrap();
        assert!(
            error.contains("enrollment token") && !error.contains("certificate"),
            "{v}"
        );
    }
    // The CSR refusal did not use the token up.
    let tokens = api.ok("GET", "/api/v1/enroll-tokens", None).await;
    let last = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["uses_left"] == 1 && t["max_uses"] == 1)
        .cloned();
    assert!(last.is_some(), "{tokens}");
    let devices = api.ok("GET", "/api/v1/devices", None).await;
    assert_eq!(devices.as_array().unwrap().len(), 1, "{devices}");
    // A CA that is not the server's: the agent refuses to talk.
    let other = rcgen_ca();
    let e = riposte_agent::identity::enroll(&ts.url, &other, &token, "d5", "d5")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("cannot reach"), "{e}");
    ts.stop().await;
}

fn rcgen_ca() -> String {
    let dir = tempfile::tempdir().unwrap();
    riposte_server::pki::Authority::load_or_create(dir.path())
        .unwrap()
        .ca_pem
}

#[tokio::test]
async fn openapi_lists_every_route() {
    let ts = TestServer::start(Backend::Sqlite).await;
    let api = ts.client().await;
    let doc = api.ok("GET", "/api/v1/openapi.json", None).await;
    let paths = doc["paths"].as_object().unwrap();
    let src = include_str!("../src/api.rs");
    let router = &src[src.find("pub fn router").unwrap()..];
    let router = &router[..router.find(".layer(").unwrap()];
    let mut n = 0;
    for piece in router.split(".route(").skip(1) {
        let path = piece
            .trim_start()
            .trim_start_matches('"')
            .split('"')
            .next()
            .unwrap();
        assert!(paths.contains_key(path), "{path} missing from openapi.json");
        n += 1;
    }
    assert!(n >= 25, "found {n} routes");
    // Every request body is described field by field, as login's is.
    for (path, ops) in paths {
        for (method, op) in op_list(ops) {
            if let Some(body) = op.get("requestBody") {
                let schema = &body["content"]["application/json"]["schema"];
                let fields = schema["properties"].as_object();
                assert!(
                    fields.is_some_and(|f| !f.is_empty()),
                    "{method} {path}: its body has no fields documented"
                );
            }
        }
    }
    let login =
        &paths["/api/v1/login"]["post"]["requestBody"]["content"]["application/json"]["schema"];
    assert_eq!(login["required"], json!(["user", "password"]));
    ts.stop().await;
}

fn op_list(ops: &serde_json::Value) -> Vec<(&String, &serde_json::Value)> {
    ops.as_object()
        .map(|o| o.iter().collect())
        .unwrap_or_default()
}

/// A client that opens a connection and sends its request's headers slowly (or never)
/// is cut off after the header timeout, instead of holding the connection forever.
#[tokio::test]
async fn slow_headers_are_cut_off() {
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let db = riposte_store::testing::TestDb::new(Backend::Sqlite).await;
    let mut o = options(dir.path(), &db, Backend::Sqlite);
    o.header_timeout = std::time::Duration::from_secs(1);
    let server = riposte_server::start(o).await.unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(riposte_agent::identity::root_store(server.ca_pem()).unwrap())
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(server.api_addr)
        .await
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    tls.write_all(b"GET /api/v1/whoami HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tls.read_to_end(&mut buf),
    )
    .await;
    assert!(read.is_ok(), "the connection was still open after 10 s");
    let waited = started.elapsed();
    assert!(
        waited >= std::time::Duration::from_millis(900),
        "closed before the timeout: {waited:?}"
    );
    server.shutdown().await;
    db.cleanup().await;
}

/// A restore or deletion of an entry the device has already restored or deleted is
/// refused at once, instead of being sent to fail on the device; a failure the device
/// reports is listed among its alerts, on both back ends.
#[tokio::test]
async fn quarantine_actions_on_finished_entries_are_refused_and_alerts_are_listed() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let (ts, api) = TestServer::with_group_a(backend).await;
        let dev = enroll(&api, &ts.ca, "A", "q-01").await.device_id;
        let other = enroll(&api, &ts.ca, "A", "q-02").await.device_id;
        let store = &ts.running().core.store;
        let rec = json!({"id": "e1", "original_path": "/tmp/x", "threat_name": "T"});
        store
            .upsert_quarantine(dev, "e1", "restored", &rec)
            .await
            .unwrap();
        store
            .upsert_quarantine(dev, "e2", "quarantined", &rec)
            .await
            .unwrap();
        let queued = || async { store.outbox_after(dev, 0, 100).await.unwrap().len() };
        let before = queued().await;
        for action in ["restore", "delete"] {
            let (status, body) = api
                .call(
                    "POST",
                    &format!("/api/v1/quarantine/{dev}/e1/{action}"),
                    Some(json!({})),
                )
                .await;
            assert_eq!(status, 409, "{action}: {body}");
            assert!(
                body.to_string()
                    .contains("is restored: only a quarantined entry can be restored or deleted"),
                "{body}"
            );
        }
        assert_eq!(queued().await, before, "nothing is sent to the device");
        // A restore path no file system can hold is refused here, not sent to fail there.
        let (status, body) = api
            .call(
                "POST",
                &format!("/api/v1/quarantine/{dev}/e2/restore"),
                Some(json!({"restore_to": "/tmp/a\u{0}b"})),
            )
            .await;
        assert_eq!(status, 400, "{body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains(r"'/tmp/a\x00b' contains a NUL"),
            "{body}"
        );
        assert_eq!(queued().await, before, "nothing is sent to the device");
        // A deletion needs no body (the API description says it is optional).
        let (status, body) = api
            .call("POST", &format!("/api/v1/quarantine/{dev}/e2/delete"), None)
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(queued().await, before + 1);

        store
            .add_alert(
                dev,
                "quarantine_command_failed",
                "restore of quarantine entry e2 failed: x",
            )
            .await
            .unwrap();
        store
            .add_alert(other, "watch_failed", "elsewhere")
            .await
            .unwrap();
        let mine = api
            .ok("GET", &format!("/api/v1/alerts?device={dev}"), None)
            .await;
        let mine = mine.as_array().unwrap();
        assert_eq!(mine.len(), 1, "{mine:?}");
        assert_eq!(mine[0]["code"], "quarantine_command_failed");
        assert_eq!(mine[0]["device_id"], dev);
        let all = api.ok("GET", "/api/v1/alerts", None).await;
        assert_eq!(all.as_array().unwrap().len(), 2);
        let (status, _) = api.call("GET", "/api/v1/alerts?device=999999", None).await;
        assert_eq!(status, 404);
        // A revoked device never receives a command: refused, nothing queued.
        store
            .upsert_quarantine(other, "e3", "quarantined", &rec)
            .await
            .unwrap();
        api.ok("POST", &format!("/api/v1/devices/{other}/revoke"), None)
            .await;
        let before = store.outbox_after(other, 0, 100).await.unwrap().len();
        let (status, body) = api
            .call(
                "POST",
                &format!("/api/v1/quarantine/{other}/e3/delete"),
                None,
            )
            .await;
        assert_eq!(status, 409, "{body}");
        assert!(body.to_string().contains("is revoked"), "{body}");
        assert_eq!(
            store.outbox_after(other, 0, 100).await.unwrap().len(),
            before
        );
        ts.stop().await;
    }
}

/// Odd requests get a JSON error like any other, on both back ends: a NUL in a login
/// name or a search (PostgreSQL refuses it in text: it was a 500), and a known path
/// asked with a method it does not take (an empty body before).
#[tokio::test]
async fn nul_characters_and_wrong_methods_get_clear_answers() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let (ts, api) = TestServer::with_group_a(backend).await;
        let (s, v) = api
            .call(
                "POST",
                "/api/v1/login",
                Some(json!({"user": "a\u{0}b", "password": "x"})),
            )
            .await;
        assert_eq!(s, 401, "{v}");
        let (s, v) = api.call("GET", "/api/v1/devices?search=a%00b", None).await;
        assert_eq!((s, v.clone()), (200, json!([])), "{v}");
        // A NUL in any name or reference: a clear refusal, never a 500 (PostgreSQL says
        // 400 as it cannot hold one, SQLite that no such thing exists), and no change.
        let groups_before = api.ok("GET", "/api/v1/groups", None).await;
        for (method, path, body) in [
            ("GET", "/api/v1/devices/a%00b", None),
            ("GET", "/api/v1/devices/a%00b/settings", None),
            ("POST", "/api/v1/devices/a%00b/revoke", None),
            ("GET", "/api/v1/groups/a%00b/policy", None),
            ("DELETE", "/api/v1/groups/a%00b", None),
            ("DELETE", "/api/v1/accounts/a%00b", None),
            ("GET", "/api/v1/detections/a%00b", None),
            ("GET", "/api/v1/alerts?device=a%00b", None),
            (
                "POST",
                "/api/v1/groups",
                Some(json!({"name": "x", "parent": "a\u{0}b"})),
            ),
            (
                "POST",
                "/api/v1/enroll-tokens",
                Some(json!({"group": "a\u{0}b"})),
            ),
        ] {
            let (s, v) = api.call(method, path, body).await;
            assert!(s == 400 || s == 404, "{backend:?} {method} {path}: {s} {v}");
            assert!(v["error"].is_string(), "{v}");
        }
        assert_eq!(api.ok("GET", "/api/v1/groups", None).await, groups_before);
        // A page of no rows, or of a negative number of them, is a mistake: said so.
        for path in [
            "/api/v1/devices?limit=-1",
            "/api/v1/devices?limit=0",
            "/api/v1/devices?offset=-5",
            "/api/v1/audit?limit=-1",
            "/api/v1/audit?before=0",
            "/api/v1/audit?before=abc",
            "/api/v1/devices?limit=2.5",
        ] {
            let (s, v) = api.call("GET", path, None).await;
            assert_eq!(s, 400, "{path}: {v}");
            let error = v["error"].as_str().unwrap_or_else(|| panic!("{path}: {v}"));
            assert!(
                error.contains("must be") || error.contains("malformed query"),
                "{v}"
            );
        }
        let (s, v) = api.call("GET", "/api/v1/audit?limit=1", None).await;
        assert_eq!((s, v.as_array().map(Vec::len)), (200, Some(1)), "{v}");
        let (s, v) = api.call("PUT", "/api/v1/groups", Some(json!({}))).await;
        assert_eq!(s, 405, "{v}");
        assert!(
            v["error"].as_str().unwrap().contains("does not take PUT"),
            "{v}"
        );
        ts.stop().await;
    }
}

/// The audit log pages by entry id: `before` the last id of a page gives the next page,
/// older entries only, and entries written meanwhile do not shift it. Every entry can be
/// reached, past the newest 10,000 too.
#[tokio::test]
async fn the_audit_log_pages_by_entry_id() {
    let (ts, api) = TestServer::with_group_a(Backend::Sqlite).await;
    for i in 0..5 {
        api.ok(
            "POST",
            "/api/v1/groups",
            Some(json!({"name": format!("g{i}")})),
        )
        .await;
    }
    let ids = |v: &serde_json::Value| -> Vec<i64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_i64().unwrap())
            .collect()
    };
    let all = ids(&api.ok("GET", "/api/v1/audit?limit=10000", None).await);
    assert!(all.len() >= 6, "{all:?}");
    assert!(all.windows(2).all(|w| w[0] > w[1]), "newest first: {all:?}");

    let first = ids(&api.ok("GET", "/api/v1/audit?limit=2", None).await);
    assert_eq!(first, all[..2]);
    // A new entry between the pages does not shift the next one.
    api.ok("POST", "/api/v1/groups", Some(json!({"name": "between"})))
        .await;
    let next = ids(&api
        .ok(
            "GET",
            &format!("/api/v1/audit?limit=2&before={}", first[1]),
            None,
        )
        .await);
    assert_eq!(next, all[2..4]);
    let rest = ids(&api
        .ok("GET", &format!("/api/v1/audit?before={}", next[1]), None)
        .await);
    assert_eq!(rest, all[4..]);
    ts.stop().await;
}

/// A policy change gives what it changes and keeps the rest: an empty change or a
/// misspelt field is refused (they said "saved" and, for a group whose policy had no
/// section yet, turned Threat Response off for its whole subtree with the product's
/// defaults); fields left out keep what the group inherits; and a section an ancestor
/// enforces cannot be enforced again below, where it would have no effect.
#[tokio::test]
async fn policy_changes_keep_what_they_do_not_name() {
    let (ts, api) = TestServer::with_group_a(Backend::Sqlite).await;
    api.ok(
        "POST",
        "/api/v1/groups",
        Some(json!({"name": "A2", "parent": "A"})),
    )
    .await;
    api.ok(
        "PUT",
        "/api/v1/groups/A/policy/threat-response",
        Some(json!({"enabled": true, "actions": ["quarantine_and_delete"]})),
    )
    .await;
    api.ok(
        "PUT",
        "/api/v1/groups/A/policy/sandbox-integration",
        Some(json!({"watch": ["/srv"]})),
    )
    .await;
    let before = api.ok("GET", "/api/v1/groups/A2/policy", None).await;
    for (path, body) in [
        ("threat-response", json!({})),
        ("threat-response", json!({"enable": false})),
        (
            "threat-response",
            json!({"enabled": false, "Mode": "enforce"}),
        ),
        ("sandbox-integration", json!({})),
        ("sandbox-integration", json!({"watched": ["/tmp"]})),
    ] {
        let (s, v) = api
            .call(
                "PUT",
                &format!("/api/v1/groups/A2/policy/{path}"),
                Some(body.clone()),
            )
            .await;
        assert!(s == 400 || s == 422, "{path} {body}: {s} {v}");
    }
    assert_eq!(
        api.ok("GET", "/api/v1/groups/A2/policy", None).await,
        before
    );
    // Only the actions change; Threat Response stays on, as A2 inherits it.
    let p = api
        .ok(
            "PUT",
            "/api/v1/groups/A2/policy/threat-response",
            Some(json!({"actions": ["notify_user"]})),
        )
        .await;
    assert_eq!(p["threat_response"]["value"]["enabled"], true, "{p}");
    assert_eq!(
        p["threat_response"]["value"]["actions"],
        json!(["notify_user"]),
        "{p}"
    );
    let p = api
        .ok(
            "PUT",
            "/api/v1/groups/A2/policy/sandbox-integration",
            Some(json!({"request_timeout_secs": 30})),
        )
        .await;
    assert_eq!(
        p["sandbox_integration"]["value"]["watch"],
        json!(["/srv"]),
        "{p}"
    );
    // Enforced above: not again below.
    api.ok(
        "PUT",
        "/api/v1/groups/A/policy/threat-response",
        Some(json!({"mode": "enforce"})),
    )
    .await;
    let (s, v) = api
        .call(
            "PUT",
            "/api/v1/groups/A2/policy/threat-response",
            Some(json!({"enabled": false, "mode": "enforce"})),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("enforces this section"),
        "{v}"
    );
    ts.stop().await;
}

/// Group names a listing or a URL cannot show as they are: `.` and `..` (clients resolve
/// them away, so the group could not be managed), and names with a direction override,
/// a zero-width character or a newline.
#[tokio::test]
async fn group_names_that_cannot_be_shown_are_refused() {
    let (ts, api) = TestServer::with_group_a(Backend::Sqlite).await;
    for name in [
        ".",
        "..",
        "pay\u{202e}fdp",
        "zero\u{200b}width",
        "two\nlines",
    ] {
        let (s, v) = api
            .call("POST", "/api/v1/groups", Some(json!({ "name": name })))
            .await;
        assert_eq!(s, 400, "{name:?}: {v}");
        let (s, v) = api
            .call(
                "POST",
                "/api/v1/groups/A/rename",
                Some(json!({ "name": name })),
            )
            .await;
        assert_eq!(s, 400, "{name:?}: {v}");
    }
    let groups = api.ok("GET", "/api/v1/groups", None).await;
    assert_eq!(groups.as_array().unwrap().len(), 2, "{groups}");
    ts.stop().await;
}

/// STIX documents of a task are read together, as the devices read them: an update
/// that revokes one indicator of the feed leaves the others, and the task stands.
#[tokio::test]
async fn a_stix_update_beside_its_feed_is_read_as_one_feed() {
    let (ts, api) = TestServer::with_group_a(Backend::Sqlite).await;
    let (s, v) = api
        .call(
            "POST",
            "/api/v1/tasks",
            Some(stix_task(vec![
                ("feed.json", stix_feed(&["a", "b"])),
                ("update.json", STIX_UPDATE_REVOKING_A.into()),
            ])),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    ts.stop().await;
}

/// A STIX feed of one indicator per id, each naming the file of its id.
fn stix_feed(ids: &[&str]) -> String {
    let objects: Vec<String> = ids
        .iter()
        .map(|id| format!(r#"{{"type":"indicator","id":"indicator--{id}","modified":"2020-01-01T00:00:00Z","pattern":"[file:name = '{id}']"}}"#))
        .collect();
    format!("[{}]", objects.join(","))
}

/// An update to [`stix_feed`]: a newer version of indicator `a`, revoked.
const STIX_UPDATE_REVOKING_A: &str = r#"[{"type":"indicator","id":"indicator--a","modified":"2021-01-01T00:00:00Z","revoked":true,"pattern":"[file:name = 'a']"}]"#;

/// A task on group A with these STIX documents (name, content).
fn stix_task(docs: Vec<(&str, String)>) -> serde_json::Value {
    let iocs: Vec<serde_json::Value> = docs
        .into_iter()
        .map(|(name, content)| json!({"format": "stix", "name": name, "content": content}))
        .collect();
    json!({"name": "feed", "group": "A", "iocs": iocs})
}

/// A device's own Threat Response value: an empty change and a policy's switch are
/// refused and change nothing; deleting the value returns the device to its policies.
#[tokio::test]
async fn a_device_value_is_changed_only_by_what_it_can_hold_and_can_be_removed() {
    let (ts, api) = TestServer::with_group_a(Backend::Sqlite).await;
    let dev = enroll(&api, &ts.ca, "A", "v-01").await.device_id;
    api.ok(
        "PUT",
        "/api/v1/groups/A/policy/threat-response",
        Some(json!({"enabled": true, "actions": ["quarantine_and_delete"]})),
    )
    .await;
    let source = || async {
        let s = api
            .ok("GET", &format!("/api/v1/devices/{dev}/settings"), None)
            .await;
        s["effective"]["threat_response"]["provenance"]["source"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(source().await, "policy");
    let path = format!("/api/v1/devices/{dev}/settings/threat-response");
    for (body, says) in [
        (json!({}), "nothing to change"),
        (json!({"mode": "enforce"}), "mode is a policy's switch"),
        (
            json!({"mode": "undefined", "enabled": false}),
            "mode is a policy's switch",
        ),
    ] {
        api.refused("PUT", &path, Some(body.clone()), 400, says)
            .await;
        assert_eq!(source().await, "policy", "{body} changed nothing");
    }
    api.ok("PUT", &path, Some(json!({"enabled": false}))).await;
    assert_eq!(source().await, "local");
    let cleared = api.ok("DELETE", &path, None).await;
    assert_eq!(cleared["had_own_value"], true, "{cleared}");
    assert_eq!(source().await, "policy");
    let again = api.ok("DELETE", &path, None).await;
    assert_eq!(again["had_own_value"], false, "{again}");
    ts.stop().await;
}

/// Group names that differ only in case are refused, on creation and on renaming, as
/// account names are; a group may change the case of its own name.
#[tokio::test]
async fn group_names_may_not_differ_only_in_case() {
    let (ts, api) = TestServer::with_group_a(Backend::Sqlite).await;
    api.ok("POST", "/api/v1/groups", Some(json!({"name": "Finance"})))
        .await;
    api.refused(
        "POST",
        "/api/v1/groups",
        Some(json!({"name": "FINANCE"})),
        409,
        "'Finance' exists; names may not differ only in case",
    )
    .await;
    api.refused(
        "POST",
        "/api/v1/groups/A/rename",
        Some(json!({"name": "finance"})),
        409,
        "names may not differ only in case",
    )
    .await;
    api.ok(
        "POST",
        "/api/v1/groups/Finance/rename",
        Some(json!({"name": "FINANCE"})),
    )
    .await;
    let groups = api.ok("GET", "/api/v1/groups", None).await;
    let names: Vec<&str> = groups
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|g| g["name"].as_str())
        .collect();
    assert!(
        names.contains(&"FINANCE") && names.contains(&"A") && !names.contains(&"finance"),
        "{names:?}"
    );
    ts.stop().await;
}

/// What the devices will leave out of a task's indicators (a YARA `include`, which a
/// task's rules may not use) is told to whoever creates it, not only logged by each
/// device.
#[tokio::test]
async fn a_task_says_what_its_devices_will_leave_out() {
    let (ts, api) = TestServer::with_group_a(Backend::Sqlite).await;
    let rules = "include \"/etc/passwd\"\nrule kept { strings: $a = \"evil\" condition: $a }\n";
    let v = api
        .ok(
            "POST",
            "/api/v1/tasks",
            Some(json!({"name": "t", "group": "A",
                "iocs": [{"format": "yara", "name": "r.yar", "content": rules}]})),
        )
        .await;
    assert!(v["id"].as_i64().is_some(), "{v}");
    let warnings = v["warnings"].as_array().expect("warnings");
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().starts_with("r.yar: ")
                && w.as_str().unwrap().contains("include")),
        "{v}"
    );
    let clean = api
        .ok(
            "POST",
            "/api/v1/tasks",
            Some(json!({"name": "t2", "group": "A",
                "iocs": [{"format": "yara", "name": "ok.yar", "content": "rule kept { strings: $a = \"evil\" condition: $a }"}]})),
        )
        .await;
    assert_eq!(clean["warnings"], json!([]), "{clean}");

    // Terms no device can evaluate are told too, per indicator, in both languages: an
    // event context, and an expression this engine does not run (possessive).
    let openioc = r#"<?xml version="1.0"?><OpenIOC xmlns="http://openioc.org/schemas/OpenIOC_1.1" id="ev-1" last-modified="2020-01-01T00:00:00Z" published-date="2020-01-01T00:00:00Z"><metadata><short_description>ev</short_description><authored_date>2020-01-01T00:00:00Z</authored_date></metadata><criteria><Indicator operator="OR" id="o"><IndicatorItem id="w" condition="is" preserve-case="false" negate="false"><Context document="fileWriteEvent" search="fileWriteEvent/md5" type="event"/><Content type="md5">0123456789abcdef0123456789abcdef</Content></IndicatorItem><IndicatorItem id="n" condition="is" preserve-case="false" negate="false"><Context document="FileItem" search="FileItem/FileName" type="mir"/><Content type="string">evil.exe</Content></IndicatorItem></Indicator></criteria></OpenIOC>"#;
    let stix = "[file:name MATCHES '^a++b' OR file:name = 'x']";
    let v = api
        .ok(
            "POST",
            "/api/v1/tasks",
            Some(json!({"name": "t3", "group": "A", "iocs": [
                {"format": "openioc", "name": "ev.ioc", "content": openioc},
                {"format": "stix", "name": "p.stix", "content": stix}]})),
        )
        .await;
    let warnings: Vec<&str> = v["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .filter_map(|w| w.as_str())
        .collect();
    assert_eq!(warnings.len(), 2, "{v}");
    assert!(
        warnings[0].starts_with("ev.ioc: indicator 'ev-1' has 1 term ")
            && warnings[0].contains("fileWriteEvent/md5 (event context"),
        "{v}"
    );
    assert!(
        warnings[1].starts_with("p.stix: indicator ") && warnings[1].contains("possessive"),
        "{v}"
    );
    ts.stop().await;
}

/// A policy whose settings group a policy above enforces says so: its own section has
/// no effect on any device while that lasts.
#[tokio::test]
async fn a_policy_says_when_a_policy_above_enforces_its_section() {
    let (ts, api) = TestServer::with_group_a(Backend::Sqlite).await;
    api.ok(
        "POST",
        "/api/v1/groups",
        Some(json!({"name": "A1", "parent": "A"})),
    )
    .await;
    api.ok(
        "PUT",
        "/api/v1/groups/A1/policy/threat-response",
        Some(json!({"mode": "enforce", "enabled": true, "actions": ["quarantine_and_delete"]})),
    )
    .await;
    let p = api.ok("GET", "/api/v1/groups/A1/policy", None).await;
    assert_eq!(
        p["threat_response_enforced_above"],
        serde_json::Value::Null,
        "{p}"
    );
    api.ok(
        "PUT",
        "/api/v1/groups/A/policy/threat-response",
        Some(json!({"mode": "enforce", "enabled": false})),
    )
    .await;
    let p = api.ok("GET", "/api/v1/groups/A1/policy", None).await;
    assert_eq!(
        p["threat_response_enforced_above"], "Riposte policy (A)",
        "{p}"
    );
    assert_eq!(
        p["sandbox_integration_enforced_above"],
        serde_json::Value::Null,
        "{p}"
    );
    let a = api.ok("GET", "/api/v1/groups/A/policy", None).await;
    assert_eq!(
        a["threat_response_enforced_above"],
        serde_json::Value::Null,
        "{a}"
    );
    // The policy above says which policies below it overrides, where they enforce the
    // same section: A1 enforced it before A did.
    assert_eq!(
        a["threat_response_overrides_below"],
        json!(["Riposte policy (A1)"]),
        "{a}"
    );
    assert_eq!(a["sandbox_integration_overrides_below"], json!([]), "{a}");
    // Undefined above: nothing overridden.
    let a = api
        .ok(
            "PUT",
            "/api/v1/groups/A/policy/threat-response",
            Some(json!({"mode": "undefined"})),
        )
        .await;
    assert_eq!(a["threat_response_overrides_below"], json!([]), "{a}");
    ts.stop().await;
}

/// A misspelt field is refused, not dropped: `parnet` would have made the group under
/// the root, `max_use` a one-use token. Names are counted in characters, as their
/// errors say, and an IOC document's name is held to the rules of a task's.
#[tokio::test]
async fn misspelt_fields_are_refused_and_names_counted_in_characters() {
    let (ts, api) = TestServer::with_group_a(Backend::Sqlite).await;
    let groups_before = api.ok("GET", "/api/v1/groups", None).await;
    for (method, path, body) in [
        (
            "POST",
            "/api/v1/groups",
            json!({"name": "Typo", "parnet": "A"}),
        ),
        (
            "POST",
            "/api/v1/enroll-tokens",
            json!({"group": "A", "max_use": 100}),
        ),
        ("POST", "/api/v1/groups/A/rename", json!({"nmae": "B"})),
        (
            "POST",
            "/api/v1/accounts",
            json!({"name": "x", "role": "auditor", "password": "long-enough-pw", "rol": "administrator"}),
        ),
        (
            "POST",
            "/api/v1/tasks",
            json!({"name": "t", "group": "A", "iocs": [{"format": "yara", "name": "r", "content": "rule r { condition: true }"}], "action": ["quarantine_and_delete"]}),
        ),
    ] {
        let (s, v) = api.call(method, path, Some(body)).await;
        assert_eq!(s, 422, "{method} {path}: {v}");
        assert!(
            v["error"].as_str().unwrap().contains("unknown field"),
            "{v}"
        );
    }
    assert_eq!(api.ok("GET", "/api/v1/groups", None).await, groups_before);
    assert_eq!(
        api.ok("GET", "/api/v1/enroll-tokens", None).await,
        json!([])
    );
    assert_eq!(api.ok("GET", "/api/v1/tasks", None).await, json!([]));

    // 128 characters of two bytes each are a name; 129 are not.
    let long = "é".repeat(128);
    api.ok("POST", "/api/v1/groups", Some(json!({"name": long})))
        .await;
    let (s, v) = api
        .call(
            "POST",
            "/api/v1/groups",
            Some(json!({"name": "é".repeat(129)})),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("1 to 128"), "{v}");

    for name in ["a\u{1b}[31mb", "", "   "] {
        let (s, v) = api
            .call(
                "POST",
                "/api/v1/tasks",
                Some(json!({"name": "t", "group": "A", "iocs": [{"format": "yara", "name": name, "content": "rule r { condition: true }"}]})),
            )
            .await;
        assert_eq!(s, 400, "{name:?}: {v}");
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains("an IOC document's name"),
            "{v}"
        );
    }
    assert_eq!(api.ok("GET", "/api/v1/tasks", None).await, json!([]));
    ts.stop().await;
}
