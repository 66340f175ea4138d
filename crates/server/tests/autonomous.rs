//! The special account's one right: autonomous IOC scan tasks, for the group of the policy
//! whose Threat Response settings carry its password; one task per group and object.

mod common;
use common::*;
use riposte_store::Backend;
use serde_json::{json, Value};

fn detection(id: &str, device_id: i64, sha: char) -> Value {
    json!({"device_id": device_id, "detection": {
        "detection_id": id, "path": "/tmp/evil", "size": 42,
        "md5": "a".repeat(32), "sha1": "b".repeat(40), "sha256": sha.to_string().repeat(64),
        "threat": "Test.Threat", "source": "builtin-sandbox", "user_name": "alice", "detected_at_ms": 1}})
}

/// A detection the device reported over its channel (stored as the channel stores it),
/// and the autonomous request that names it.
async fn reported(ts: &TestServer, id: &str, device_id: i64, sha: char) -> Value {
    let body = detection(id, device_id, sha);
    ts.running()
        .core
        .store
        .insert_detection(device_id, id, &body["detection"])
        .await
        .unwrap();
    body
}

async fn autonomous(
    http: &reqwest::Client,
    url: &str,
    password: &str,
    body: &Value,
) -> (u16, Value) {
    let resp = http
        .post(format!("{url}/api/v1/autonomous-tasks"))
        .basic_auth("riposte-autonomous", Some(password))
        .json(body)
        .send()
        .await
        .unwrap();
    let s = resp.status().as_u16();
    (s, resp.json().await.unwrap_or(Value::Null))
}

async fn flow(backend: Backend) {
    let ts = TestServer::start(backend).await;
    let api = ts.client().await;
    for (g, parent) in [("A", None), ("A1", Some("A")), ("B", None)] {
        api.ok(
            "POST",
            "/api/v1/groups",
            Some(json!({"name": g, "parent": parent})),
        )
        .await;
    }
    let d1 = enroll(&api, &ts.ca, "A1", "d1").await.device_id;
    let d2 = enroll(&api, &ts.ca, "A", "d2").await.device_id;
    let d3 = enroll(&api, &ts.ca, "B", "d3").await.device_id;
    enforce_group_actions(
        &api,
        "A",
        "autonomous-pw",
        &[
            "quarantine_and_delete",
            "group_ioc_scan",
            "group_ioc_quarantine_and_delete",
        ],
    )
    .await;
    let http =
        riposte_agent::identity::pinned_http_client(&ts.ca, std::time::Duration::from_secs(30))
            .unwrap();

    // d1 (in A1, under A's enforced policy) detects: the task covers A's subtree, not B.
    let (s, a) = autonomous(
        &http,
        &ts.url,
        "autonomous-pw",
        &reported(&ts, "det-1", d1, 'c').await,
    )
    .await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(a["deduplicated"], false);
    let task = a["task_id"].as_i64().unwrap();
    let groups = api.ok("GET", "/api/v1/groups", None).await;
    let a_id = groups
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "A")
        .unwrap()["id"]
        .clone();
    assert_eq!(a["group_id"], a_id);
    assert_eq!(a["group"], "A", "the group by name too: {a}");
    let t = api.ok("GET", &format!("/api/v1/tasks/{task}"), None).await;
    let mut devices: Vec<i64> = t["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device_id"].as_i64().unwrap())
        .collect();
    devices.sort();
    assert_eq!(devices, vec![d1, d2], "{t}");
    assert!(!devices.contains(&d3));
    assert_eq!(t["task"]["autonomous"], true);
    assert_eq!(t["task"]["actions"], json!(["quarantine_and_delete"]));
    let ioc = t["task"]["iocs"][0]["content"].as_str().unwrap();
    assert!(
        ioc.contains(&"c".repeat(64)) && ioc.contains(">42<"),
        "IOC carries hash and size: {ioc}"
    );

    // d2 detects the same object: the same task, not a second one.
    let (s, b) = autonomous(
        &http,
        &ts.url,
        "autonomous-pw",
        &reported(&ts, "det-2", d2, 'c').await,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["task_id"].as_i64(), Some(task));
    assert_eq!(b["deduplicated"], true);
    // Once every device has finished that sweep, a new detection of the object sweeps
    // again: a copy may have appeared since.
    let store = &ts.running().core.store;
    for d in [d1, d2] {
        store
            .update_task_device(
                task,
                d,
                riposte_model::DeviceTaskState::Completed,
                0,
                None,
                &json!({"hits": []}),
            )
            .await
            .unwrap();
    }
    let (s, b) = autonomous(
        &http,
        &ts.url,
        "autonomous-pw",
        &reported(&ts, "det-3", d1, 'c').await,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["deduplicated"], false, "{b}");
    assert_ne!(b["task_id"].as_i64(), Some(task));
    // The first detection asked again (a lost answer, or a replay): its own task
    // answers, finished as it is, and no sweep starts.
    let tasks_before = api
        .ok("GET", "/api/v1/tasks", None)
        .await
        .as_array()
        .unwrap()
        .len();
    let (s, again) = autonomous(
        &http,
        &ts.url,
        "autonomous-pw",
        &detection("det-1", d1, 'c'),
    )
    .await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["task_id"].as_i64(), Some(task), "{again}");
    assert_eq!(again["deduplicated"], true);
    assert_eq!(
        api.ok("GET", "/api/v1/tasks", None)
            .await
            .as_array()
            .unwrap()
            .len(),
        tasks_before
    );

    // Many simultaneous detections of a new object: exactly one task.
    let mut handles = Vec::new();
    for i in 0..6 {
        let http = http.clone();
        let url = ts.url.clone();
        let body = reported(
            &ts,
            &format!("burst-{i}"),
            if i % 2 == 0 { d1 } else { d2 },
            'd',
        )
        .await;
        handles.push(tokio::spawn(async move {
            autonomous(&http, &url, "autonomous-pw", &body).await
        }));
    }
    let mut ids = std::collections::BTreeSet::new();
    for h in handles {
        let (s, v) = h.await.unwrap();
        assert_eq!(s, 200, "{v}");
        ids.insert(v["task_id"].as_i64().unwrap());
    }
    assert_eq!(
        ids.len(),
        1,
        "one task for simultaneous detections: {ids:?}"
    );
    assert_eq!(
        api.ok("GET", "/api/v1/tasks", None)
            .await
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // d3's group has no policy enabling group actions: refused with the reason.
    let (s, v) = autonomous(
        &http,
        &ts.url,
        "autonomous-pw",
        &reported(&ts, "det-d3", d3, 'e').await,
    )
    .await;
    assert_eq!(s, 403, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("do not enable the group IOC scan"),
        "{v}"
    );

    // Wrong password, then a deleted account: clear errors, in the audit log. Not on the
    // detection's record, though the device reported it: whoever sends such a request
    // need not know the password, so the detection shows what its device reports over
    // its channel (`channel::group_action_failures_are_the_devices_word`).
    let (s, v) = autonomous(
        &http,
        &ts.url,
        "wrong-password",
        &reported(&ts, "det-4", d1, 'f').await,
    )
    .await;
    assert_eq!(s, 401, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("wrong user name or password"),
        "{v}"
    );
    let det = api.ok("GET", "/api/v1/detections/det-4", None).await;
    assert_eq!(det["group_action_error"], Value::Null, "{det}");
    api.ok("DELETE", "/api/v1/special-account", None).await;
    let (s, v) = autonomous(
        &http,
        &ts.url,
        "autonomous-pw",
        &reported(&ts, "det-5", d1, 'f').await,
    )
    .await;
    assert_eq!(s, 401, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("special account does not exist"),
        "{v}"
    );
    let det = api.ok("GET", "/api/v1/detections/det-5", None).await;
    assert_eq!(det["group_action_error"], Value::Null, "{det}");
    let audit = api.ok("GET", "/api/v1/audit?limit=1000", None).await;
    let refused = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "autonomous_task_refused")
        .count();
    assert!(refused >= 3, "{audit}");
    assert_eq!(
        api.ok("GET", "/api/v1/tasks", None)
            .await
            .as_array()
            .unwrap()
            .len(),
        3,
        "no task from refused requests"
    );
    ts.stop().await;
}

#[tokio::test]
async fn autonomous_tasks_sqlite() {
    flow(Backend::Sqlite).await;
}

#[tokio::test]
async fn autonomous_tasks_postgres() {
    flow(Backend::Postgres).await;
}

#[tokio::test]
async fn local_settings_target_the_device_group() {
    let ts = TestServer::start(Backend::Sqlite).await;
    let api = ts.client().await;
    api.ok("POST", "/api/v1/groups", Some(json!({"name": "L"})))
        .await;
    api.ok(
        "POST",
        "/api/v1/groups",
        Some(json!({"name": "L2", "parent": "L"})),
    )
    .await;
    let d = enroll(&api, &ts.ca, "L2", "dl").await.device_id;
    enroll(&api, &ts.ca, "L", "other").await;
    api.ok(
        "POST",
        "/api/v1/special-account",
        Some(json!({"password": "autonomous-pw"})),
    )
    .await;
    api.ok(
        "PUT",
        &format!("/api/v1/devices/{d}/settings/threat-response"),
        Some(json!({
        "enabled": true, "special_password": "autonomous-pw", "actions": ["group_ioc_scan"]})),
    )
    .await;
    let http =
        riposte_agent::identity::pinned_http_client(&ts.ca, std::time::Duration::from_secs(30))
            .unwrap();
    let (s, a) = autonomous(
        &http,
        &ts.url,
        "autonomous-pw",
        &reported(&ts, "det-l", d, 'a').await,
    )
    .await;
    assert_eq!(s, 200, "{a}");
    let t = api
        .ok("GET", &format!("/api/v1/tasks/{}", a["task_id"]), None)
        .await;
    assert_eq!(
        t["devices"].as_array().unwrap().len(),
        1,
        "only the device's own group (L2): {t}"
    );
    // An enforced policy above locks the device's local settings.
    api.ok(
        "PUT",
        "/api/v1/groups/L/policy/threat-response",
        Some(json!({"enabled": false, "mode": "enforce"})),
    )
    .await;
    let (s, v) = api
        .call(
            "PUT",
            &format!("/api/v1/devices/{d}/settings/threat-response"),
            Some(json!({"enabled": true})),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("enforced by Riposte policy (L)"),
        "{v}"
    );
    ts.stop().await;
}

/// Two server processes on one PostgreSQL database receive the same object at once from
/// several devices: still one task (the check and the creation hold an advisory lock).
#[tokio::test]
async fn simultaneous_detections_on_two_servers_yield_one_task() {
    let (ts, api) = TestServer::with_group_a(Backend::Postgres).await;
    let mut devices = Vec::new();
    for i in 0..4 {
        devices.push(enroll(&api, &ts.ca, "A", &format!("d{i}")).await.device_id);
    }
    enforce_group_actions(&api, "A", "autonomous-pw", &["group_ioc_scan"]).await;
    let b = ts.another_process().await;
    let urls = [
        ts.url.clone(),
        format!("https://127.0.0.1:{}", b.api_addr.port()),
    ];
    let http =
        riposte_agent::identity::pinned_http_client(&ts.ca, std::time::Duration::from_secs(30))
            .unwrap();
    let mut handles = Vec::new();
    for (i, d) in devices.iter().enumerate() {
        for url in &urls {
            let http = http.clone();
            let url = url.clone();
            let body = reported(&ts, &format!("x-{i}-{}", url.len()), *d, '9').await;
            handles.push(tokio::spawn(async move {
                autonomous(&http, &url, "autonomous-pw", &body).await
            }));
        }
    }
    let mut ids = std::collections::BTreeSet::new();
    for h in handles {
        let (s, v) = h.await.unwrap();
        assert_eq!(s, 200, "{v}");
        ids.insert(v["task_id"].as_i64().unwrap());
    }
    assert_eq!(ids.len(), 1, "one task across both servers: {ids:?}");
    assert_eq!(
        api.ok("GET", "/api/v1/tasks", None)
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
    b.shutdown().await;
    ts.stop().await;
}

/// The special password is on every device of the group, so a request's device id and
/// hashes are only claims: a task starts only from a detection that device reported over
/// its own channel, and is built from what it reported. Refused requests by other callers
/// leave detections and the audit log alone.
#[tokio::test]
async fn group_actions_start_only_from_detections_the_device_reported() {
    let (ts, api) = TestServer::with_group_a(Backend::Sqlite).await;
    let d1 = enroll(&api, &ts.ca, "A", "d1").await.device_id;
    let d2 = enroll(&api, &ts.ca, "A", "d2").await.device_id;
    enforce_group_actions(
        &api,
        "A",
        "autonomous-pw",
        &["group_ioc_scan", "group_ioc_quarantine_and_delete"],
    )
    .await;
    let http =
        riposte_agent::identity::pinned_http_client(&ts.ca, std::time::Duration::from_secs(30))
            .unwrap();
    let error = |v: &Value| v["error"].as_str().unwrap_or_default().to_string();

    // Never reported: refused after the short wait, with the reason.
    let (s, v) = autonomous(
        &http,
        &ts.url,
        "autonomous-pw",
        &detection("ghost", d1, '1'),
    )
    .await;
    assert_eq!(s, 409, "{v}");
    assert!(
        error(&v).contains("has not reported detection ghost"),
        "{v}"
    );

    // The holder of the special password learns nothing of which device ids exist: an
    // unknown device is answered as a known one is, for a detection nobody reported…
    let unknown = 987_654;
    let (s, u) = autonomous(
        &http,
        &ts.url,
        "autonomous-pw",
        &detection("ghost", unknown, '1'),
    )
    .await;
    assert_eq!(s, 409, "{u}");
    assert_eq!(
        error(&u),
        error(&v).replace(&format!("device {d1} "), &format!("device {unknown} ")),
        "{u} {v}"
    );

    // Reported by d2, claimed by d1.
    let mut body = reported(&ts, "by-d2", d2, '2').await;
    body["device_id"] = json!(d1);
    let (s, v) = autonomous(&http, &ts.url, "autonomous-pw", &body).await;
    assert_eq!(s, 403, "{v}");
    assert!(error(&v).contains("was not reported by device"), "{v}");
    // …and for one another device reported.
    body["device_id"] = json!(unknown);
    let (s, u) = autonomous(&http, &ts.url, "autonomous-pw", &body).await;
    assert_eq!(s, 403, "{u}");
    assert_eq!(
        error(&u),
        error(&v).replace(&format!("device {d1}"), &format!("device {unknown}")),
        "{u} {v}"
    );

    // Another object than the one reported (say, a business binary's hash).
    let mut body = reported(&ts, "swapped", d1, '3').await;
    body["detection"]["sha256"] = json!("4".repeat(64));
    let (s, v) = autonomous(&http, &ts.url, "autonomous-pw", &body).await;
    assert_eq!(s, 400, "{v}");
    assert!(error(&v).contains("differs from detection swapped"), "{v}");
    assert_eq!(
        api.ok("GET", "/api/v1/tasks", None)
            .await
            .as_array()
            .unwrap()
            .len(),
        0,
        "no task from refused requests"
    );

    // The task carries what the device reported, not what the request says.
    let mut body = reported(&ts, "real", d1, '5').await;
    body["detection"]["threat"] = json!("Forged.Name");
    let (s, a) = autonomous(&http, &ts.url, "autonomous-pw", &body).await;
    assert_eq!(s, 200, "{a}");
    let t = api
        .ok("GET", &format!("/api/v1/tasks/{}", a["task_id"]), None)
        .await;
    let ioc = t["task"]["iocs"][0]["content"].as_str().unwrap();
    assert!(
        ioc.contains("Test.Threat") && !ioc.contains("Forged.Name"),
        "{ioc}"
    );

    // An auditor who read a detection id cannot mark it, and a request without any
    // credentials writes no audit entry.
    api.ok(
        "POST",
        "/api/v1/accounts",
        Some(json!({"name": "aud", "role": "auditor", "password": "a-long-password-1"})),
    )
    .await;
    let aud = Api::login(&ts.url, &ts.ca, "aud", "a-long-password-1").await;
    let body = reported(&ts, "victim", d2, '6').await;
    let (s, _) = aud
        .call("POST", "/api/v1/autonomous-tasks", Some(body.clone()))
        .await;
    assert_eq!(s, 403);
    // A malformed body tells the auditor the same, not what the body lacks.
    let (s, v) = aud
        .call(
            "POST",
            "/api/v1/autonomous-tasks",
            Some(json!({"riposte_no_such_field": 1})),
        )
        .await;
    assert_eq!(s, 403, "{v}");
    let det = api.ok("GET", "/api/v1/detections/victim", None).await;
    assert_eq!(det["group_action_error"], Value::Null, "{det}");
    let refused = |audit: &Value| {
        audit
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["action"] == "autonomous_task_refused")
            .count()
    };
    let before = refused(&api.ok("GET", "/api/v1/audit?limit=1000", None).await);
    for _ in 0..3 {
        let r = http
            .post(format!("{}/api/v1/autonomous-tasks", ts.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
    }
    let after = refused(&api.ok("GET", "/api/v1/audit?limit=1000", None).await);
    assert_eq!(before, after, "anonymous requests wrote to the audit log");
    let det = api.ok("GET", "/api/v1/detections/victim", None).await;
    assert_eq!(det["group_action_error"], Value::Null, "{det}");

    // Wrong special passwords are recorded while the throttle admits them, and not once
    // it refuses them unchecked: anyone could otherwise grow the audit log at the rate
    // of their requests.
    let before = refused(&api.ok("GET", "/api/v1/audit?limit=1000", None).await);
    let mut throttled = 0;
    for _ in 0..12 {
        let (s, v) = autonomous(&http, &ts.url, "wrong-password", &body).await;
        match s {
            429 => throttled += 1,
            401 => {}
            other => panic!("{other}: {v}"),
        }
    }
    assert!(throttled >= 6, "the throttle refused {throttled} of 12");
    let after = refused(&api.ok("GET", "/api/v1/audit?limit=1000", None).await);
    assert_eq!(
        after - before,
        12 - throttled,
        "one entry per checked request"
    );
    ts.stop().await;
}
