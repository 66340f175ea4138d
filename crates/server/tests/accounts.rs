//! The special account's rules and the rights of the three roles, over the real HTTPS API,
//! on SQLite and on PostgreSQL.

mod common;
use common::*;
use riposte_store::Backend;
use serde_json::json;

/// One representative request per operation, as (method, path, body).
fn every_operation() -> Vec<(
    &'static str,
    &'static str,
    Option<serde_json::Value>,
    &'static str,
)> {
    vec![
        ("GET", "/api/v1/groups", None, "ReadInventory"),
        ("GET", "/api/v1/devices", None, "ReadInventory"),
        ("GET", "/api/v1/tasks", None, "ReadInventory"),
        ("GET", "/api/v1/detections", None, "ReadInventory"),
        ("GET", "/api/v1/quarantine", None, "ReadInventory"),
        (
            "GET",
            "/api/v1/groups/Managed%20devices/policy",
            None,
            "ReadInventory",
        ),
        (
            "POST",
            "/api/v1/groups",
            Some(json!({"name": "new-group"})),
            "ChangeGroups",
        ),
        (
            "POST",
            "/api/v1/devices/999/move",
            Some(json!({"group": "A"})),
            "MoveDevice",
        ),
        ("POST", "/api/v1/devices/999/revoke", None, "RevokeDevice"),
        (
            "PUT",
            "/api/v1/groups/A/policy/threat-response",
            Some(json!({"enabled": true})),
            "ChangePolicy",
        ),
        (
            "PUT",
            "/api/v1/devices/999/settings/threat-response",
            Some(json!({"enabled": true})),
            "ChangeDeviceSettings",
        ),
        (
            "DELETE",
            "/api/v1/devices/999/settings/threat-response",
            None,
            "ChangeDeviceSettings",
        ),
        (
            "POST",
            "/api/v1/enroll-tokens",
            Some(json!({"group": "A"})),
            "ManageEnrollTokens",
        ),
        // Their list holds no token, only what each is for and how long it lasts.
        ("GET", "/api/v1/enroll-tokens", None, "ReadInventory"),
        (
            "POST",
            "/api/v1/tasks",
            Some(
                json!({"name": "t", "group": "A", "iocs": [{"format": "openioc", "name": "x", "content": "<x/>"}]}),
            ),
            "CreateTask",
        ),
        ("POST", "/api/v1/tasks/999/cancel", None, "CancelTask"),
        ("GET", "/api/v1/accounts", None, "ReadAccounts"),
        ("GET", "/api/v1/special-account", None, "ReadAccounts"),
        (
            "POST",
            "/api/v1/accounts",
            Some(json!({"name": "zed", "role": "auditor", "password": "long-enough-password"})),
            "ManageAccounts",
        ),
        // Refused for lack of the right before the role name is even looked at.
        (
            "POST",
            "/api/v1/accounts",
            Some(
                json!({"name": "zed", "role": "no-such-role", "password": "long-enough-password"}),
            ),
            "ManageAccounts",
        ),
        ("DELETE", "/api/v1/accounts/nobody", None, "ManageAccounts"),
        (
            "PUT",
            "/api/v1/accounts/nobody/password",
            Some(json!({"password": "long-enough-password"})),
            "ManageAccounts",
        ),
        // Too short a new password: refused before the current one is checked, so the
        // matrix counts no failed login.
        (
            "PUT",
            "/api/v1/password",
            Some(json!({"current_password": "wrong", "new_password": "short"})),
            "ChangeOwnPassword",
        ),
        (
            "POST",
            "/api/v1/special-account",
            Some(json!({"password": "12345678"})),
            "ManageSpecialAccount",
        ),
        (
            "DELETE",
            "/api/v1/special-account",
            None,
            "ManageSpecialAccount",
        ),
        (
            "PUT",
            "/api/v1/special-account/password",
            Some(json!({"password": "12345678"})),
            "ManageSpecialAccount",
        ),
        ("GET", "/api/v1/audit", None, "ReadAudit"),
    ]
}

async fn special_account_rules(backend: Backend) {
    let ts = TestServer::start(backend).await;
    let api = ts.client().await;
    api.ok("POST", "/api/v1/groups", Some(json!({"name": "A"})))
        .await;

    let st = api.ok("GET", "/api/v1/special-account", None).await;
    assert_eq!(st["exists"], false);
    for (pw, want) in [("1234567", 400), ("12345678901234567", 400)] {
        let (s, v) = api
            .call(
                "POST",
                "/api/v1/special-account",
                Some(json!({"password": pw})),
            )
            .await;
        assert_eq!(s, want, "{pw}: {v}");
        assert!(
            v["error"].as_str().unwrap().contains("8 to 16 characters"),
            "{v}"
        );
    }
    assert_eq!(
        api.ok("GET", "/api/v1/special-account", None).await["exists"],
        false,
        "refused create changed nothing"
    );
    api.ok(
        "POST",
        "/api/v1/special-account",
        Some(json!({"password": "12345678"})),
    )
    .await;
    let (s, v) = api
        .call(
            "POST",
            "/api/v1/special-account",
            Some(json!({"password": "1234567890123456"})),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("only one"), "{v}");
    let (s, v) = api
        .call(
            "PUT",
            "/api/v1/special-account/password",
            Some(json!({"password": "abcdefgh"})),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("delete the account and create it again"),
        "{v}"
    );

    // The special account cannot log in (no session, no console), and with its password
    // on each request may do nothing but create autonomous tasks.
    let (s, v) = api
        .call(
            "POST",
            "/api/v1/login",
            Some(json!({"user": "riposte-autonomous", "password": "12345678"})),
        )
        .await;
    assert_eq!(s, 403, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("cannot log in"),
        "{v}"
    );
    // With its right password: whoever tried holds it, most likely from a device.
    let last = ts.running().core.store.audit_log(1).await.unwrap();
    assert_eq!(
        (
            last[0].actor.as_str(),
            last[0].action.as_str(),
            last[0].detail.as_str()
        ),
        ("riposte-autonomous", "refused", "login (a session)"),
        "{last:?}"
    );
    let special = Api::basic(&ts.url, &ts.ca, "riposte-autonomous", "12345678");
    let (s, v) = special.call("GET", "/api/v1/whoami", None).await;
    assert_eq!(s, 403, "whoami is not its right either: {v}");
    let (s, v) = special.call("POST", "/api/v1/logout", None).await;
    assert_eq!(s, 403, "nor is a logout: {v}");
    let mut empty_bodies_tried = std::collections::HashSet::new();
    for (method, path, body, op) in every_operation() {
        let (s, v) = special.call(method, path, body).await;
        assert_eq!(
            s, 403,
            "special account must get 403 for {op} ({method} {path}): {v}"
        );
        // Refused before its body is read: an empty one is not a malformed request. (Once
        // per method: each call costs an Argon2id verification.)
        if method != "GET" && empty_bodies_tried.insert(method) {
            let (s, v) = special.call(method, path, Some(json!({}))).await;
            assert_eq!(s, 403, "{op} with an empty body ({method} {path}): {v}");
        }
    }
    let (s, v) = special.call("POST", "/api/v1/tasks", Some(json!({}))).await;
    assert_eq!(s, 403, "a task with an empty body: {v}");
    // Each refusal is in the audit log, with the operation it was refused.
    let refused: std::collections::HashSet<String> = ts
        .running()
        .core
        .store
        .audit_log(10_000)
        .await
        .unwrap()
        .into_iter()
        // Only the special account has been refused anything so far.
        .filter(|r| r.action == "refused")
        .map(|r| r.detail)
        .collect();
    for (method, path, _, op) in every_operation() {
        assert!(
            refused.contains(&format!("{method} {path}")),
            "{op} ({method} {path}) refused without a trace: {refused:?}"
        );
    }
    // Its one right is allowed through authorisation (then finds no detection d1 that
    // the named device reported; whether device 999 exists is not told).
    let det = json!({"device_id": 999, "detection": {
        "detection_id": "d1", "path": "/x", "size": 1, "md5": "0".repeat(32), "sha1": "0".repeat(40),
        "sha256": "0".repeat(64), "threat": "T", "source": "test", "user_name": "u", "detected_at_ms": 0}});
    let det_body = det.clone();
    let (s, v) = special
        .call("POST", "/api/v1/autonomous-tasks", Some(det.clone()))
        .await;
    assert_eq!(s, 409, "{v}");
    // …and nobody else may create autonomous tasks.
    let (s, _) = api
        .call("POST", "/api/v1/autonomous-tasks", Some(det))
        .await;
    assert_eq!(s, 403);

    // The password is needed only with group actions, checked against the account when saved.
    api.ok(
        "PUT",
        "/api/v1/groups/A/policy/threat-response",
        Some(json!({"enabled": true, "actions": ["quarantine_and_delete"]})),
    )
    .await;
    let (s, v) = api
        .call(
            "PUT",
            "/api/v1/groups/A/policy/threat-response",
            Some(json!({"actions": ["group_ioc_scan"]})),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("need the special account's password"),
        "{v}"
    );
    let (s, v) = api
        .call(
            "PUT",
            "/api/v1/groups/A/policy/threat-response",
            Some(json!({"actions": ["group_ioc_scan"], "special_password": "wrongpass"})),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("does not match"),
        "{v}"
    );
    let p = api.ok("GET", "/api/v1/groups/A/policy", None).await;
    assert_eq!(
        p["threat_response"]["value"]["actions"],
        json!(["quarantine_and_delete"]),
        "refused save changed nothing"
    );
    let p = api.ok("PUT", "/api/v1/groups/A/policy/threat-response", Some(json!({"actions": ["group_ioc_scan"], "special_password": "12345678", "mode": "enforce"}))).await;
    assert_eq!(p["special_password_set"], true);
    assert_eq!(p["threat_response"]["mode"], "enforce");
    // The password is never returned, neither in clear nor sealed.
    let text = api
        .ok("GET", "/api/v1/groups/A/policy", None)
        .await
        .to_string();
    assert!(
        !text.contains("12345678") && !text.contains("special_password\":\""),
        "{text}"
    );
    let audit = api
        .ok("GET", "/api/v1/audit?limit=1000", None)
        .await
        .to_string();
    assert!(
        !audit.contains("12345678"),
        "a secret reached the audit log"
    );

    // A device's own value holds the password too (where nothing is enforced).
    api.ok("POST", "/api/v1/groups", Some(json!({"name": "B"})))
        .await;
    let own = common::enroll(&api, &ts.ca, "B", "own-value")
        .await
        .device_id;
    api.ok(
        "PUT",
        &format!("/api/v1/devices/{own}/settings/threat-response"),
        Some(
            json!({"enabled": true, "actions": ["group_ioc_scan"], "special_password": "12345678"}),
        ),
    )
    .await;
    let own_password = || async {
        ts.running()
            .core
            .store
            .device(own)
            .await
            .unwrap()
            .local_settings
            .threat_response
            .and_then(|tr| tr.special_password)
    };
    assert!(own_password().await.is_some());

    // Delete and create again with another password. The deletion takes the old
    // password out of the policy and the device's value too: devices would present
    // it, and fail, for ever.
    let v = api.ok("DELETE", "/api/v1/special-account", None).await;
    assert_eq!(v["policies_cleared"], 1, "{v}");
    assert_eq!(v["devices_cleared"], 1, "{v}");
    assert!(own_password().await.is_none());
    let p = api.ok("GET", "/api/v1/groups/A/policy", None).await;
    assert_eq!(p["special_password_set"], false, "{p}");
    assert_eq!(
        p["threat_response"]["value"]["actions"],
        json!(["group_ioc_scan"])
    );
    let (s, _) = api.call("GET", "/api/v1/whoami", None).await;
    assert_eq!(s, 200);
    let (s, _) = special
        .call("POST", "/api/v1/autonomous-tasks", Some(det_body.clone()))
        .await;
    assert_eq!(s, 401, "the deleted account's password no longer works");
    api.ok(
        "POST",
        "/api/v1/special-account",
        Some(json!({"password": "1234567890123456"})),
    )
    .await;
    assert_eq!(
        api.ok("GET", "/api/v1/special-account", None).await["exists"],
        true
    );
    ts.stop().await;
}

#[tokio::test]
async fn special_account_rules_sqlite() {
    special_account_rules(Backend::Sqlite).await;
}

#[tokio::test]
async fn special_account_rules_postgres() {
    special_account_rules(Backend::Postgres).await;
}

/// Whether an account `who` of `role` may do the operation named `op` (as
/// [`every_operation`] names it).
fn may(who: &str, role: riposte_model::Role, op: &str) -> bool {
    let op: riposte_model::Operation = serde_json::from_value(json!(snake(op))).unwrap();
    riposte_model::authorize(
        &riposte_model::Principal::Account {
            name: who.into(),
            role,
        },
        op,
    )
    .is_ok()
}

/// A logout ends the session whose token it carries, and says so only then: without a
/// live session it is refused (401), and Basic credentials, which open none, get 400.
#[tokio::test]
async fn a_logout_ends_the_session_it_is_called_with() {
    let ts = TestServer::start(Backend::Sqlite).await;
    let (first, second) = (ts.client().await, ts.client().await);
    let anonymous = Api {
        token: String::new(),
        ..ts.client().await
    };
    anonymous
        .refused("POST", "/api/v1/logout", None, 401, "no credentials")
        .await;
    let basic = Api::basic(&ts.url, &ts.ca, "admin", ADMIN_PASSWORD);
    basic
        .refused("POST", "/api/v1/logout", None, 400, "no session to end")
        .await;
    let v = first.ok("POST", "/api/v1/logout", None).await;
    assert_eq!(v["logged_out"], true, "{v}");
    let (s, v) = first.call("GET", "/api/v1/whoami", None).await;
    assert_eq!(s, 401, "the session ended: {v}");
    let (s, v) = first.call("POST", "/api/v1/logout", None).await;
    assert_eq!(s, 401, "an ended session cannot be ended again: {v}");
    // The administrator's other session goes on.
    second.ok("GET", "/api/v1/whoami", None).await;
    ts.stop().await;
}

#[tokio::test]
async fn rights_matrix_of_the_three_roles() {
    let (ts, admin) = TestServer::with_group_a(Backend::Sqlite).await;
    for (name, role) in [("oper", "operator"), ("aud", "auditor")] {
        admin
            .ok(
                "POST",
                "/api/v1/accounts",
                Some(json!({"name": name, "role": role, "password": "a-long-password-1"})),
            )
            .await;
    }
    // A name that differs from another only in case is refused.
    let (s, v) = admin
        .call(
            "POST",
            "/api/v1/accounts",
            Some(json!({"name": "Oper", "role": "administrator", "password": "a-long-password-1"})),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("named 'oper' exists"),
        "{v}"
    );
    let oper = Api::login(&ts.url, &ts.ca, "oper", "a-long-password-1").await;
    let aud = Api::login(&ts.url, &ts.ca, "aud", "a-long-password-1").await;
    for (method, path, body, op) in every_operation() {
        for (who, role, api) in [
            ("operator", riposte_model::Role::Operator, &oper),
            ("auditor", riposte_model::Role::Auditor, &aud),
        ] {
            let allowed = may(who, role, op);
            let (s, v) = api.call(method, path, body.clone()).await;
            if allowed {
                assert_ne!(
                    s, 403,
                    "{who} should be allowed {op} ({method} {path}): {v}"
                );
            } else {
                assert_eq!(s, 403, "{who} must be refused {op} ({method} {path}): {v}");
            }
        }
    }
    // The administrator is refused nothing but the special account's right.
    for (method, path, body, op) in every_operation() {
        let (s, v) = admin.call(method, path, body).await;
        assert_ne!(s, 403, "administrator refused {op}: {v}");
    }
    // A malformed body tells a role that may not send it only that (403), not what the
    // body should have held (400 or 422); whoever may send it hears what is wrong.
    let mut malformed = 0;
    for (method, path, body, op) in every_operation() {
        // The special account's password reads no body: it is never changed (409).
        if body.is_none() || path == "/api/v1/special-account/password" {
            continue;
        }
        malformed += 1;
        let bad = Some(json!({"riposte_no_such_field": 1}));
        for (who, role, api) in [
            ("operator", riposte_model::Role::Operator, &oper),
            ("auditor", riposte_model::Role::Auditor, &aud),
            ("administrator", riposte_model::Role::Administrator, &admin),
        ] {
            let allowed = may(who, role, op);
            let (s, v) = api.call(method, path, bad.clone()).await;
            if allowed {
                assert!(
                    s == 400 || s == 422,
                    "{who}, allowed {op}, sent a malformed body ({method} {path}): {s} {v}"
                );
            } else {
                assert_eq!(
                    s, 403,
                    "{who} must be refused {op} before its body is read ({method} {path}): {v}"
                );
            }
        }
    }
    assert!(malformed >= 8, "{malformed}");
    // So is a path that names no task, on a route without a body.
    let (s, v) = aud.call("POST", "/api/v1/tasks/abc/cancel", None).await;
    assert_eq!(s, 403, "{v}");
    // The refusal says what was attempted, on what: the request and the operation.
    let last = ts.running().core.store.audit_log(1).await.unwrap();
    assert_eq!(
        (
            last[0].actor.as_str(),
            last[0].action.as_str(),
            last[0].detail.as_str()
        ),
        (
            "aud",
            "refused",
            "POST /api/v1/tasks/abc/cancel (CancelTask: cancel tasks)"
        ),
        "{last:?}"
    );
    let (s, v) = admin.call("POST", "/api/v1/tasks/abc/cancel", None).await;
    assert_eq!(s, 400, "{v}");
    ts.stop().await;
}

/// An administrator cannot delete the last administrator; a database left without one
/// (by an older version) gets one at the next start, under a free name, and an operator
/// named `admin` keeps its name and role.
#[tokio::test]
async fn the_last_administrator_stays_and_a_start_without_one_creates_one() {
    let (mut ts, admin) = TestServer::with_group_a(Backend::Sqlite).await;
    admin
        .ok(
            "POST",
            "/api/v1/accounts",
            Some(
                json!({"name": "second", "role": "administrator", "password": "a-long-password-1"}),
            ),
        )
        .await;
    let second = Api::login(&ts.url, &ts.ca, "second", "a-long-password-1").await;
    second.ok("DELETE", "/api/v1/accounts/admin", None).await;
    // Alone now: it cannot delete itself, and nobody else can delete it.
    let (s, v) = second.call("DELETE", "/api/v1/accounts/second", None).await;
    assert_eq!(s, 409, "{v}");
    // The special account is not deleted here, and the answer says where it is.
    let (s, v) = second
        .call("DELETE", "/api/v1/accounts/riposte-autonomous", None)
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("special-account delete"),
        "{v}"
    );
    let store = ts.running().core.store.clone();
    let e = store
        .delete_account(store.account_by_name("second").await.unwrap().unwrap().id)
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("last account with the Administrator role"),
        "{e}"
    );

    second
        .ok(
            "POST",
            "/api/v1/accounts",
            Some(json!({"name": "admin", "role": "operator", "password": "a-long-password-1"})),
        )
        .await;
    riposte_store::testing::delete_account_anyway(&store, "second").await;
    assert_eq!(store.count_admins().await.unwrap(), 0);
    ts.restart_with(|_| {}).await;
    let created = ts
        .running()
        .created_admin
        .clone()
        .expect("an administrator is created");
    assert_eq!(created.name, "admin-2");
    assert!(!created.first_start);
    // The tests' servers are given the administrator's password.
    assert!(created.generated_password.is_none());
    let recovered = Api::login(&ts.url, &ts.ca, "admin-2", ADMIN_PASSWORD).await;
    let accounts = recovered.ok("GET", "/api/v1/accounts", None).await;
    let role_of = |name: &str| {
        accounts
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name)
            .map(|a| a["role"].clone())
    };
    assert_eq!(
        role_of("admin-2"),
        Some(json!("administrator")),
        "{accounts}"
    );
    assert_eq!(role_of("admin"), Some(json!("operator")), "{accounts}");
    // With one there again, a start creates none.
    ts.restart_with(|_| {}).await;
    assert!(ts.running().created_admin.is_none());
    ts.stop().await;
}

/// The device writes a restored object as root: an operator may put it back where it
/// was, and only an administrator anywhere else.
#[tokio::test]
async fn only_an_administrator_restores_an_object_to_another_path() {
    let (ts, admin) = TestServer::with_group_a(Backend::Sqlite).await;
    admin
        .ok(
            "POST",
            "/api/v1/accounts",
            Some(json!({"name": "oper", "role": "operator", "password": "a-long-password-1"})),
        )
        .await;
    let oper = Api::login(&ts.url, &ts.ca, "oper", "a-long-password-1").await;
    let dev = common::enroll(&admin, &ts.ca, "A", "q-01").await.device_id;
    let store = &ts.running().core.store;
    let rec = json!({"id": "e1", "original_path": "/home/u/payload", "threat_name": "T"});
    store
        .upsert_quarantine(dev, "e1", "quarantined", &rec)
        .await
        .unwrap();
    // What the device is sent from here on (enrollment queued its settings).
    let base = store.outbox_after(dev, 0, 100).await.unwrap().len();
    let queued = || async { store.outbox_after(dev, 0, 100).await.unwrap()[base..].to_vec() };
    let restore = format!("/api/v1/quarantine/{dev}/e1/restore");
    for body in [
        json!({"restore_to": "/etc/cron.d/job"}),
        json!({"restore_to": "/etc/cron.d/job", "on_conflict": "replace"}),
    ] {
        let (s, v) = oper.call("POST", &restore, Some(body)).await;
        assert_eq!(s, 403, "{v}");
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains("may not restore quarantined objects to another path"),
            "{v}"
        );
    }
    assert!(queued().await.is_empty(), "nothing sent");
    // Its own path, named or not, and over what is there now: the operator's to do.
    for body in [
        json!({}),
        json!({"restore_to": "/home/u/payload", "on_conflict": "replace"}),
    ] {
        let (s, v) = oper.call("POST", &restore, Some(body)).await;
        assert_eq!(s, 200, "{v}");
    }
    let sent = queued().await;
    assert_eq!(sent.len(), 2);
    let cmd: serde_json::Value = serde_json::from_str(&sent[1].payload).unwrap();
    assert_eq!(cmd["restore_to"], serde_json::Value::Null, "{cmd}");
    let (s, v) = admin
        .call(
            "POST",
            &restore,
            Some(json!({"restore_to": "/srv/evidence/payload"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let sent = queued().await;
    let cmd: serde_json::Value = serde_json::from_str(&sent[2].payload).unwrap();
    assert_eq!(cmd["restore_to"], "/srv/evidence/payload", "{cmd}");
    // The audit log says where each restore writes.
    let audit = admin.ok("GET", "/api/v1/audit", None).await.to_string();
    assert!(
        audit.contains("restore entry e1 on device")
            && audit.contains("to /srv/evidence/payload, on conflict refuse")
            && audit.contains("to its original path, on conflict replace"),
        "{audit}"
    );
    ts.stop().await;
}

fn snake(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

#[tokio::test]
async fn failed_logins_are_throttled_and_audited() {
    let ts = TestServer::start(Backend::Sqlite).await;
    let http =
        riposte_agent::identity::pinned_http_client(&ts.ca, std::time::Duration::from_secs(30))
            .unwrap();
    let login = |pw: &'static str| {
        let http = http.clone();
        let url = format!("{}/api/v1/login", ts.url);
        async move {
            send(
                &http,
                reqwest::Method::POST,
                &url,
                "",
                Some(json!({"user": "admin", "password": pw})),
            )
            .await
        }
    };
    for _ in 0..5 {
        assert_eq!(login("wrong").await.0, 401);
    }
    let (s, v) = login(ADMIN_PASSWORD).await;
    assert_eq!(s, 429, "locked out even with the right password: {v}");
    assert!(v["error"].as_str().unwrap().contains("try again"), "{v}");
    let rows = ts.running().core.store.audit_log(100).await.unwrap();
    assert_eq!(
        rows.iter().filter(|r| r.action == "login_failed").count(),
        5
    );
    ts.stop().await;
}

/// A login with a name no account can have (70,000 characters, a newline) is refused
/// and recorded cut to 64 characters and escaped: an anonymous caller can neither fill
/// the audit log nor forge a line of it; and such names count for their source only,
/// so they do not create a throttle record per name.
#[tokio::test]
async fn failed_logins_with_impossible_names_are_recorded_cut_and_escaped() {
    let ts = TestServer::start(Backend::Sqlite).await;
    let http =
        riposte_agent::identity::pinned_http_client(&ts.ca, std::time::Duration::from_secs(30))
            .unwrap();
    let url = format!("{}/api/v1/login", ts.url);
    let long = "y".repeat(70_000);
    for user in [
        long.as_str(),
        "x\n1795953147000  admin  127.0.0.1  account_delete",
    ] {
        let (s, _) = send(
            &http,
            reqwest::Method::POST,
            &url,
            "",
            Some(json!({"user": user, "password": "x"})),
        )
        .await;
        assert_eq!(s, 401);
    }
    let rows = ts.running().core.store.audit_log(100).await.unwrap();
    let failed: Vec<&str> = rows
        .iter()
        .filter(|r| r.action == "login_failed")
        .map(|r| r.actor.as_str())
        .collect();
    // Without credentials the autonomous-task route answers 401 whatever the body, as
    // every route does: it tells an anonymous caller nothing of a valid request.
    let auto = format!("{}/api/v1/autonomous-tasks", ts.url);
    for body in [json!({}), json!("garbage")] {
        let (s, v) = send(&http, reqwest::Method::POST, &auto, "", Some(body)).await;
        assert_eq!(s, 401, "{v}");
    }
    assert_eq!(failed.len(), 2, "{failed:?}");
    // A session token is a credential: its answer may not be cached along the way.
    let resp = http
        .post(&url)
        .json(&json!({"user": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()
            .get(reqwest::header::CACHE_CONTROL)
            .map(|v| v.to_str().unwrap().to_string()),
        Some("no-store".to_string())
    );
    assert!(
        failed.contains(&format!("{}…", "y".repeat(64)).as_str()),
        "{failed:?}"
    );
    assert!(
        failed.contains(&"x\\x0a1795953147000  admin  127.0.0.1  account_delete"),
        "{failed:?}"
    );
    ts.stop().await;
}

/// The failures are in the database: a second server process on the same PostgreSQL
/// refuses the locked-out account, and so does the first after a restart.
#[tokio::test]
async fn failed_logins_count_across_server_processes_and_restarts() {
    let mut ts = TestServer::start(Backend::Postgres).await;
    let b = ts.another_process().await;
    let url_b = format!("https://127.0.0.1:{}", b.api_addr.port());
    let http =
        riposte_agent::identity::pinned_http_client(&ts.ca, std::time::Duration::from_secs(30))
            .unwrap();
    let login = |url: String, pw: &'static str| {
        let http = http.clone();
        async move {
            send(
                &http,
                reqwest::Method::POST,
                &format!("{url}/api/v1/login"),
                "",
                Some(json!({"user": "admin", "password": pw})),
            )
            .await
        }
    };
    // Spread over both processes: 3 on A, 2 on B.
    for url in [&ts.url, &ts.url, &ts.url, &url_b, &url_b] {
        assert_eq!(login(url.clone(), "wrong").await.0, 401);
    }
    for url in [&ts.url, &url_b] {
        let (s, v) = login(url.clone(), ADMIN_PASSWORD).await;
        assert_eq!(s, 429, "{url}: {v}");
    }
    b.shutdown().await;
    ts.restart().await;
    let (s, v) = login(ts.url.clone(), ADMIN_PASSWORD).await;
    assert_eq!(s, 429, "still locked after a restart: {v}");
    ts.stop().await;
}

/// Failures for one account from many addresses lock it only for addresses it has not
/// logged in from: an outsider with many addresses cannot shut the administrator out.
/// And an administrator's failed logins at an address do not stop the special account's
/// requests from it (a device's group actions), which are counted apart.
#[tokio::test]
async fn failures_from_many_addresses_spare_the_addresses_an_account_has_used() {
    let ts = TestServer::start(Backend::Sqlite).await;
    let from = |last: u8| {
        riposte_agent::identity::pinned_http_client_builder(
            &ts.ca,
            std::time::Duration::from_secs(30),
        )
        .unwrap()
        .local_address(std::net::IpAddr::from([127, 0, 0, last]))
        .build()
        .unwrap()
    };
    let url = format!("{}/api/v1/login", ts.url);
    let login = |http: reqwest::Client, pw: &'static str| {
        let url = url.clone();
        async move {
            send(
                &http,
                reqwest::Method::POST,
                &url,
                "",
                Some(json!({"user": "admin", "password": pw})),
            )
            .await
        }
    };
    // The administrator's workstation.
    assert_eq!(login(from(1), ADMIN_PASSWORD).await.0, 200);
    // One guess from each of five other addresses.
    for last in 2..7 {
        assert_eq!(login(from(last), "wrong").await.0, 401);
    }
    let (s, v) = login(from(9), ADMIN_PASSWORD).await;
    assert_eq!(
        s, 429,
        "a new address is refused, even with the password: {v}"
    );
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("addresses it has not logged in from"),
        "{v}"
    );
    let (s, v) = login(from(1), ADMIN_PASSWORD).await;
    assert_eq!(s, 200, "the workstation still gets in: {v}");

    // Five failures at one address lock it for administrators ...
    let api = Api::login(&ts.url, &ts.ca, "admin", ADMIN_PASSWORD).await;
    api.ok(
        "POST",
        "/api/v1/special-account",
        Some(json!({"password": "Sp3cial-pass"})),
    )
    .await;
    // (guesses at another name: the administrator's account is already locked for
    // addresses it has not used, and this is one)
    for _ in 0..5 {
        let (s, v) = send(
            &from(20),
            reqwest::Method::POST,
            &url,
            "",
            Some(json!({"user": "carol", "password": "wrong"})),
        )
        .await;
        assert_eq!(s, 401, "{v}");
    }
    let (s, v) = login(from(20), ADMIN_PASSWORD).await;
    assert_eq!(s, 429, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("from this address"),
        "{v}"
    );
    // ... not for the special account: its request is authenticated and goes on to the
    // operation (which finds no detection d1 reported by device 999).
    use base64::Engine;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("riposte-autonomous:Sp3cial-pass")
    );
    let det = json!({"device_id": 999, "detection": {
        "detection_id": "d1", "path": "/x", "size": 1, "md5": "0".repeat(32), "sha1": "0".repeat(40),
        "sha256": "0".repeat(64), "threat": "T", "source": "test", "user_name": "u", "detected_at_ms": 0}});
    let (s, v) = send(
        &from(20),
        reqwest::Method::POST,
        &format!("{}/api/v1/autonomous-tasks", ts.url),
        &basic,
        Some(det),
    )
    .await;
    assert_eq!(s, 409, "{v}");
    ts.stop().await;
}

/// A burst of parallel guesses from one source is counted like the same guesses one
/// after another: only as many are checked as the lockout allows.
#[tokio::test]
async fn parallel_guesses_do_not_outrun_the_throttle() {
    let ts = TestServer::start(Backend::Sqlite).await;
    let http =
        riposte_agent::identity::pinned_http_client(&ts.ca, std::time::Duration::from_secs(30))
            .unwrap();
    let mut guesses = Vec::new();
    for i in 0..20 {
        let http = http.clone();
        let url = format!("{}/api/v1/login", ts.url);
        guesses.push(tokio::spawn(async move {
            send(
                &http,
                reqwest::Method::POST,
                &url,
                "",
                Some(json!({"user": format!("user{i}"), "password": "guess"})),
            )
            .await
            .0
        }));
    }
    let mut statuses = Vec::new();
    for g in guesses {
        statuses.push(g.await.unwrap());
    }
    let checked = statuses.iter().filter(|s| **s == 401).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(
        (checked, refused),
        (riposte_server::throttle::MAX_FAILURES as usize, 20 - 5),
        "{statuses:?}"
    );
    ts.stop().await;
}

/// A second server process on the same database with keys of its own (a fresh data
/// directory) refuses to start, saying what to copy: it could not open the special
/// password the others sealed, nor would their agents trust its CA. With the first
/// one's keys it starts.
#[tokio::test]
async fn a_server_with_other_keys_refuses_a_database_in_use() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let ts = TestServer::start(backend).await;
        let fresh = tempfile::tempdir().unwrap();
        let e = match riposte_server::start(options(fresh.path(), ts.db.as_ref().unwrap(), backend))
            .await
        {
            Ok(_) => panic!("{backend:?}: a server with other keys started"),
            Err(e) => e.to_string(),
        };
        assert!(
            e.contains("another certificate authority") && e.contains("ca.key and secret.key"),
            "{e}"
        );
        // The CA copied, the sealing key not: refused for that.
        for f in ["ca.pem", "ca.key"] {
            std::fs::copy(ts.dir.path().join(f), fresh.path().join(f)).unwrap();
        }
        std::fs::remove_file(fresh.path().join("secret.key")).ok();
        let e = match riposte_server::start(options(fresh.path(), ts.db.as_ref().unwrap(), backend))
            .await
        {
            Ok(_) => panic!("{backend:?}: a server with another sealing key started"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains("another sealing key (secret.key)"), "{e}");
        std::fs::copy(
            ts.dir.path().join("secret.key"),
            fresh.path().join("secret.key"),
        )
        .unwrap();
        let second = riposte_server::start(options(fresh.path(), ts.db.as_ref().unwrap(), backend))
            .await
            .expect("with the first one's keys");
        second.shutdown().await;
        ts.stop().await;
    }
}

/// An account changes its own password knowing the current one; an administrator sets
/// another's. Either ends every session of the account, the old password opens nothing
/// afterwards, and neither works on the special account or (for a reset) on oneself.
async fn passwords_are_changed_and_set(backend: Backend) {
    let ts = TestServer::start(backend).await;
    let admin = ts.client().await;
    admin
        .ok(
            "POST",
            "/api/v1/accounts",
            Some(json!({"name": "oper", "role": "operator", "password": "first-password-1"})),
        )
        .await;
    admin
        .ok(
            "POST",
            "/api/v1/special-account",
            Some(json!({"password": "special-pw"})),
        )
        .await;
    let first = Api::login(&ts.url, &ts.ca, "oper", "first-password-1").await;
    let second = Api::login(&ts.url, &ts.ca, "oper", "first-password-1").await;
    let change =
        |current: &str, new: &str| json!({"current_password": current, "new_password": new});
    // Refused, and nothing changes: a wrong current password, a short or unchanged one.
    for (body, says) in [
        (
            change("not-the-password", "second-password-2"),
            "current password is wrong",
        ),
        (change("first-password-1", "short"), "at least 12"),
        (
            change("first-password-1", "first-password-1"),
            "is the current one",
        ),
    ] {
        let (s, v) = first.call("PUT", "/api/v1/password", Some(body)).await;
        assert_eq!(s, 400, "{v}");
        assert!(v["error"].as_str().unwrap().contains(says), "{v}");
    }
    first.ok("GET", "/api/v1/whoami", None).await;
    let (s, v) = first
        .call(
            "PUT",
            "/api/v1/password",
            Some(change("first-password-1", "second-password-2")),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    // Both sessions ended, the changing one too; the old password opens nothing.
    for api in [&first, &second] {
        let (s, v) = api.call("GET", "/api/v1/whoami", None).await;
        assert_eq!(s, 401, "{v}");
    }
    let (s, _) = Api::basic(&ts.url, &ts.ca, "oper", "first-password-1")
        .call("GET", "/api/v1/whoami", None)
        .await;
    assert_eq!(s, 401);
    let oper = Api::login(&ts.url, &ts.ca, "oper", "second-password-2").await;

    // What an operator may not do, and what no one may.
    let (s, v) = oper
        .call(
            "PUT",
            "/api/v1/accounts/admin/password",
            Some(json!({"password": "taken-over-password"})),
        )
        .await;
    assert_eq!(s, 403, "{v}");
    let (s, v) = admin
        .call(
            "PUT",
            "/api/v1/accounts/admin/password",
            Some(json!({"password": "without-the-current"})),
        )
        .await;
    assert_eq!(s, 400, "one's own only with the current password: {v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("give the current one"),
        "{v}"
    );
    let (s, v) = admin
        .call(
            "PUT",
            "/api/v1/accounts/riposte-autonomous/password",
            Some(json!({"password": "new-special-pw"})),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("can never be changed"),
        "{v}"
    );
    let (s, v) = admin
        .call(
            "PUT",
            "/api/v1/accounts/nobody/password",
            Some(json!({"password": "long-enough-password"})),
        )
        .await;
    assert_eq!(s, 404, "{v}");
    let (s, v) = admin
        .call(
            "PUT",
            "/api/v1/accounts/oper/password",
            Some(json!({"password": "short"})),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    oper.ok("GET", "/api/v1/whoami", None).await;
    // The special account can change nothing, its own password included.
    let (s, v) = Api::basic(&ts.url, &ts.ca, "riposte-autonomous", "special-pw")
        .call(
            "PUT",
            "/api/v1/password",
            Some(change("special-pw", "other-special")),
        )
        .await;
    assert_eq!(s, 403, "{v}");

    // The reset.
    admin
        .ok(
            "PUT",
            "/api/v1/accounts/oper/password",
            Some(json!({"password": "third-password-3"})),
        )
        .await;
    let (s, _) = oper.call("GET", "/api/v1/whoami", None).await;
    assert_eq!(s, 401, "the reset ends the account's sessions");
    admin.ok("GET", "/api/v1/whoami", None).await;
    let (s, _) = Api::basic(&ts.url, &ts.ca, "oper", "second-password-2")
        .call("GET", "/api/v1/whoami", None)
        .await;
    assert_eq!(s, 401);
    let v = Api::basic(&ts.url, &ts.ca, "oper", "third-password-3")
        .ok("GET", "/api/v1/whoami", None)
        .await;
    assert_eq!(v["principal"]["name"], "oper");

    // Audited, without a password in sight.
    let rows = ts.running().core.store.audit_log(200).await.unwrap();
    let change = rows
        .iter()
        .find(|r| r.action == "account_password_change")
        .expect("the change is audited");
    assert_eq!(change.actor, "oper");
    assert!(
        change.detail.contains("2 session(s) ended"),
        "{}",
        change.detail
    );
    let set = rows
        .iter()
        .find(|r| r.action == "account_password_set")
        .expect("the reset is audited");
    assert_eq!(set.actor, "admin");
    assert!(set.detail.starts_with("oper;"), "{}", set.detail);
    for r in &rows {
        for secret in ["first-password-1", "second-password-2", "third-password-3"] {
            assert!(!r.detail.contains(secret), "{} {}", r.action, r.detail);
        }
    }
    ts.stop().await;
}

#[tokio::test]
async fn passwords_are_changed_and_set_sqlite() {
    passwords_are_changed_and_set(Backend::Sqlite).await;
}

#[tokio::test]
async fn passwords_are_changed_and_set_postgres() {
    passwords_are_changed_and_set(Backend::Postgres).await;
}

/// Five wrong guesses at `oper`'s password from new addresses (198.51.100.FIRST and
/// the four after it) leave the right `password`, from `address`, refused as too many
/// attempts.
async fn assert_locked_out_after_guesses(
    core: &riposte_server::service::Core,
    first: u8,
    password: &str,
    address: &str,
) {
    for n in first..first + 5 {
        let source = format!("198.51.100.{n}");
        assert!(core.login("oper", "guess", &source).await.is_err());
    }
    let locked = core
        .login("oper", password, address)
        .await
        .expect_err("locked out");
    assert!(
        matches!(
            locked,
            riposte_server::error::ServiceError::TooManyAttempts(_)
        ),
        "{locked:?}"
    );
}

/// An administrator's reset lifts the lockout that guesses from many addresses put on
/// the account: its owner, at an address it has never used, can log in with the new one.
#[tokio::test]
async fn a_reset_lifts_the_accounts_lockout() {
    let ts = TestServer::start(Backend::Sqlite).await;
    let admin = ts.client().await;
    admin
        .ok(
            "POST",
            "/api/v1/accounts",
            Some(json!({"name": "oper", "role": "operator", "password": "first-password-1"})),
        )
        .await;
    let core = &ts.running().core;
    assert_locked_out_after_guesses(core, 1, "first-password-1", "203.0.113.7").await;
    admin
        .ok(
            "PUT",
            "/api/v1/accounts/oper/password",
            Some(json!({"password": "second-password-2"})),
        )
        .await;
    let (_, _, principal) = core
        .login("oper", "second-password-2", "203.0.113.7")
        .await
        .expect("the reset lifted the lockout");
    assert_eq!(principal.display_name(), "oper");

    // The addresses the account used before a reset are forgotten with it (after a
    // compromise, the intruder's among them): a lockout spares them no longer.
    core.login("oper", "second-password-2", "192.0.2.50")
        .await
        .expect("a first login from 192.0.2.50");
    admin
        .ok(
            "PUT",
            "/api/v1/accounts/oper/password",
            Some(json!({"password": "third-password-3"})),
        )
        .await;
    // The addresses it used before the reset are no longer known ones.
    assert_locked_out_after_guesses(core, 11, "third-password-3", "192.0.2.50").await;
    ts.stop().await;
}

/// The offline reset works only on a server's own data: a `--database` that holds no
/// Riposte store (a mistyped URL) is refused and left as it was, and one that cannot be
/// opened is said as such, not as an internal error.
#[tokio::test]
async fn an_offline_reset_on_a_database_without_a_store_changes_nothing() {
    use riposte_server::ServiceError;
    let url = riposte_store::testing::postgres_url();
    let schema = format!("e_{}", hex::encode(rand::random::<[u8; 8]>()));
    let dir = tempfile::tempdir().unwrap();
    let e = riposte_server::reset_password_offline(
        dir.path(),
        Some(&url),
        Some(&schema),
        "admin",
        "long-enough-password",
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&e, ServiceError::NotFound(m) if m.contains("holds no Riposte server data")),
        "{e:?}"
    );
    assert!(!riposte_store::Store::holds_store(&url, Some(&schema))
        .await
        .unwrap());
    // The test database's name with a suffix: a database that does not exist.
    let missing = format!("{url}_no_such_database");
    let e = riposte_server::reset_password_offline(
        dir.path(),
        Some(&missing),
        None,
        "admin",
        "long-enough-password",
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&e, ServiceError::BadRequest(m) if m.contains("cannot read the database of --database")),
        "{e:?}"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// With PostgreSQL, the database is given apart from `--data`: the reset checks that the
/// two are one server's (its CA), so that a mistyped `--database` of another deployment
/// resets nothing there.
#[tokio::test]
async fn an_offline_reset_on_postgres_needs_that_servers_data() {
    use riposte_server::ServiceError;
    let ts = TestServer::start(Backend::Postgres).await;
    let db = ts.db.as_ref().unwrap();
    let (url, schema) = (db.url.clone(), db.schema.clone());
    let reset = |dir: std::path::PathBuf| {
        let (url, schema) = (url.clone(), schema.clone());
        async move {
            riposte_server::reset_password_offline(
                &dir,
                Some(&url),
                schema.as_deref(),
                "admin",
                "a-password-reset-offline",
            )
            .await
        }
    };
    let empty = tempfile::tempdir().unwrap();
    let e = reset(empty.path().to_path_buf()).await.unwrap_err();
    assert!(
        matches!(&e, ServiceError::NotFound(m) if m.contains("ca.pem")),
        "{e:?}"
    );
    // Another server's data: its own CA.
    let other = tempfile::tempdir().unwrap();
    riposte_server::pki::Authority::load_or_create(other.path()).unwrap();
    let e = reset(other.path().to_path_buf()).await.unwrap_err();
    assert!(
        matches!(&e, ServiceError::Conflict(m) if m.contains("is not the one of the server")),
        "{e:?}"
    );
    let client = ts.client().await;
    client.ok("GET", "/api/v1/accounts", None).await;
    // The server's own data: reset.
    reset(ts.dir.path().to_path_buf()).await.unwrap();
    let (status, _) = client.call("GET", "/api/v1/accounts", None).await;
    assert_eq!(status, 401, "the reset ended the session");
    ts.stop().await;
}
