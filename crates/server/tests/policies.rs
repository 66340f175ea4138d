//! Concurrent changes of one policy, or of one device's own settings, on SQLite and on
//! PostgreSQL (two server processes): each change that is answered "saved" holds.

mod common;
use common::*;
use riposte_model::{Action, PolicyMode, Principal, Role};
use riposte_server::service::{Caller, ThreatResponsePatch};
use riposte_store::Backend;
use serde_json::json;

fn admin() -> Caller {
    Caller {
        principal: Principal::Account {
            name: "admin".into(),
            role: Role::Administrator,
        },
        source: "127.0.0.1".into(),
        request: None,
    }
}

/// One change gives the special password (checked with Argon2id, tens of milliseconds)
/// and the actions, another at the same time switches the policy to Enforce. Both are
/// answered "saved": both must be in the stored policy, on the first process and on a
/// second one sharing the database.
async fn concurrent_policy_changes_both_hold(backend: Backend) {
    let (ts, api) = TestServer::with_group_a(backend).await;
    api.ok(
        "POST",
        "/api/v1/special-account",
        Some(json!({"password": "Spec1alPw"})),
    )
    .await;
    let first = ts.running().core.clone();
    let second = ts.another_process().await;
    for round in 0..6 {
        let reset = ThreatResponsePatch {
            mode: Some(PolicyMode::Undefined),
            enabled: Some(false),
            actions: Some(vec![Action::NotifyUser]),
            special_password: None,
        };
        first
            .set_policy_threat_response(&admin(), "A", &reset)
            .await
            .unwrap();
        let with_password = ThreatResponsePatch {
            actions: Some(vec![Action::NotifyUser, Action::GroupIocScan]),
            special_password: Some("Spec1alPw".into()),
            ..Default::default()
        };
        let enforce = ThreatResponsePatch {
            mode: Some(PolicyMode::Enforce),
            enabled: Some(true),
            ..Default::default()
        };
        // Alternate which process takes which change.
        let (a, b) = if round % 2 == 0 {
            (&first, &second.core)
        } else {
            (&second.core, &first)
        };
        let caller = admin();
        let (x, y) = tokio::join!(
            a.set_policy_threat_response(&caller, "A", &with_password),
            b.set_policy_threat_response(&caller, "A", &enforce)
        );
        x.unwrap();
        y.unwrap();
        let view = first.policy(&admin(), "A").await.unwrap();
        let tr = view.threat_response.expect("a Threat Response section");
        assert_eq!(tr.mode, PolicyMode::Enforce, "round {round}: {tr:?}");
        assert!(tr.value.enabled, "round {round}: {tr:?}");
        assert!(
            tr.value.actions.contains(&Action::GroupIocScan),
            "round {round}: {tr:?}"
        );
        assert!(view.special_password_set, "round {round}");
    }
    second.shutdown().await;
    ts.stop().await;
}

#[tokio::test]
async fn concurrent_policy_changes_both_hold_sqlite() {
    concurrent_policy_changes_both_hold(Backend::Sqlite).await;
}

#[tokio::test]
async fn concurrent_policy_changes_both_hold_postgres() {
    concurrent_policy_changes_both_hold(Backend::Postgres).await;
}
