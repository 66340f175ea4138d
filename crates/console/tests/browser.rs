//! The console in headless Chromium, driven over WebDriver: the Threat Response
//! walk-through as a new administrator does it, escaping, and screenshots for the docs.

mod common;

use common::{admin, Browser, Harness, ADMIN_PASSWORD};
use riposte_model::{Action, PolicyMode};

const SPECIAL_PASSWORD: &str = "Sp3cial-pass";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threat_response_walk_through() {
    let h = Harness::start().await;
    h.group("Finance").await;
    let device = h.enroll("Finance", "fin-ws-01").await;
    let b = Browser::start().await;
    let base = h.url.clone();

    b.login(&base, "admin", ADMIN_PASSWORD).await;
    b.wait_text("#whoami", "admin").await;
    b.screenshot("managed-devices").await;

    // Devices → Policies and profiles → the policy → Application settings →
    // Sandbox integration → Threat Response.
    b.click_link("Policies and profiles").await;
    b.click_link("Riposte policy (Finance)").await;
    b.wait_text("#policy-name", "Riposte policy (Finance)")
        .await;
    b.click_link("Application settings").await;
    b.click("#section-sandbox").await;
    b.wait_text("#sandbox-integration", "Sandbox integration")
        .await;
    b.click("#section-threat-response").await;
    let section = b
        .wait_text(
            "#threat-response",
            "Take response actions on threats detected by the sandbox",
        )
        .await;
    for label in [
        "Selected actions",
        "Move the object to quarantine and delete it",
        "Notify the device user",
        "Run a critical areas scan with the EPP application",
        "Run an IOC scan for the threat on all devices of the administration group",
        "Authentication on administration server",
        "Administration server password",
        "Undefined",
        "Enforce",
    ] {
        assert!(
            section.contains(label),
            "the section shows {label:?}: {section}"
        );
    }
    assert!(b
        .text("#delete-warning")
        .await
        .contains("delete the object from the device"));
    assert!(
        b.selected("#mode-undefined").await,
        "a new policy leaves the section undefined"
    );

    // Create the special user: a 7-character password is refused as you type.
    b.click("#create-special").await;
    b.wait_text(
        "#special-dialog",
        "Create the administration server special user",
    )
    .await;
    b.type_in("#special-new-password", "1234567").await;
    let hint = b.wait_text("#special-password-hint", "Too short").await;
    assert!(hint.contains("8 to 16"), "{hint}");
    assert!(
        !b.enabled("#create-user").await,
        "Create the user is unavailable"
    );
    b.screenshot("special-user-dialog").await;
    b.clear("#special-new-password").await;
    b.type_in("#special-new-password", SPECIAL_PASSWORD).await;
    b.wait_text("#special-password-hint", "Length OK").await;
    assert!(b.enabled("#create-user").await);
    b.click("#create-user").await;
    b.wait_text(".flash.ok", "special user was created").await;
    assert!(
        !b.enabled("#create-special").await,
        "shown unavailable once it exists"
    );
    assert!(b.text("#special-exists").await.contains("already exists"));
    assert!(h.core().special_status(&admin()).await.unwrap().is_some());

    // Enable Threat Response, select actions, enter the password, Enforce, Save.
    b.click("#tr-enabled").await;
    for a in ["group_ioc_scan", "group_ioc_quarantine_and_delete"] {
        b.click(&format!("#action-{a}")).await;
    }
    b.type_in("#special-password", SPECIAL_PASSWORD).await;
    b.click("#mode-enforce").await;
    b.screenshot("policy-threat-response").await;
    b.click("#save").await;
    b.wait_text(".flash.ok", "Riposte policy (Finance) saved")
        .await;
    assert!(b.selected("#tr-enabled").await);
    assert!(b.selected("#action-group_ioc_scan").await);
    assert!(
        b.selected("#action-quarantine_and_delete").await,
        "default action kept"
    );
    assert!(b.selected("#mode-enforce").await);
    assert!(
        b.find_all("#special-password[placeholder^='••••']")
            .await
            .len()
            == 1,
        "password stored"
    );
    let pol = h.core().policy(&admin(), "Finance").await.unwrap();
    let tr = pol.threat_response.clone().unwrap();
    assert_eq!(tr.mode, PolicyMode::Enforce);
    assert!(tr.value.enabled && tr.value.actions.contains(&Action::GroupIocScan));
    assert!(pol.special_password_set);

    // Devices → Managed devices → the device → Applications → Riposte agent →
    // Application settings → Sandbox integration → Threat Response: locked, policy named.
    b.click_link("Managed devices").await;
    b.click("#group-tree a[data-group='Finance']").await;
    b.wait_text("#list-title", "Finance").await;
    b.click_link("fin-ws-01").await;
    b.wait_text("#device-name", "fin-ws-01").await;
    b.screenshot("device-details").await;
    b.click_link("Applications").await;
    b.click("#app-riposte").await;
    b.click_link("Application settings").await;
    b.click("#section-sandbox").await;
    b.click("#section-threat-response").await;
    let lock = b.wait_text("#lock", "Enforced by policy").await;
    assert!(lock.contains("Riposte policy (Finance)"), "{lock}");
    assert!(b.selected("#tr-enabled").await);
    assert!(!b.enabled("#tr-enabled").await, "read-only");
    assert!(!b.enabled("#action-group_ioc_scan").await);
    assert!(b.selected("#action-group_ioc_scan").await);
    assert!(!b.enabled("#special-password").await);
    assert!(
        b.find_all("#ok").await.is_empty(),
        "no OK on enforced values"
    );
    b.screenshot("device-threat-response-locked").await;
    let (_, eff) = h
        .core()
        .device_settings(&admin(), &device.to_string())
        .await
        .unwrap();
    assert!(eff.threat_response.provenance.is_locked());

    // A wrong administration server password is refused.
    b.goto(&format!(
        "{base}/policies/{}?tab=settings&section=threat-response",
        pol.group_id
    ))
    .await;
    b.type_in("#special-password", "wrong-pass-1").await;
    b.click("#save").await;
    let err = b.wait_text(".flash.error", "does not match").await;
    assert!(err.contains("administration server password"), "{err}");
    b.screenshot("policy-wrong-password").await;

    // OK keeps the section; Save on the policy stores it.
    b.click("#action-notify_user").await;
    b.click("#ok").await;
    b.wait_text("#policy-unsaved", "not saved").await;
    assert!(h
        .core()
        .policy(&admin(), "Finance")
        .await
        .unwrap()
        .threat_response
        .unwrap()
        .value
        .actions
        .contains(&Action::NotifyUser));
    b.click("#policy-save").await;
    b.wait_text(".flash.ok", "saved").await;
    assert!(!h
        .core()
        .policy(&admin(), "Finance")
        .await
        .unwrap()
        .threat_response
        .unwrap()
        .value
        .actions
        .contains(&Action::NotifyUser));

    // The other main pages, for the docs.
    for (path, name, heading) in [
        ("/policies", "policies", "Policies and profiles"),
        ("/tasks", "tasks", "Tasks"),
        ("/accounts", "accounts", "Accounts"),
        ("/enroll-tokens", "enrollment-tokens", "Enrollment tokens"),
        ("/audit", "audit-log", "Audit log"),
    ] {
        b.goto(&format!("{base}{path}")).await;
        b.wait_text("main h1", heading).await;
        b.screenshot(name).await;
    }
    let audit = b.text("#audit").await;
    assert!(audit.contains("policy_set") && audit.contains("special_account_create"));
    drop(b);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_file_name_renders_as_text() {
    let h = Harness::start().await;
    let dev = h.enroll("Managed devices", "web-01").await;
    let rec = serde_json::json!({
        "detection_id": "det-xss-1",
        "path": "/tmp/<img src=x onerror=alert(1)>.sh",
        "size": 42,
        "md5": "0".repeat(32),
        "sha1": "0".repeat(40),
        "sha256": "a".repeat(64),
        "threat": "Trojan.Linux.Agent",
        "source": "riposte-sandbox",
        "user_name": "alice",
        "detected_at_ms": 1_700_000_000_000i64,
    });
    h.core()
        .store
        .insert_detection(dev, "det-xss-1", &rec)
        .await
        .unwrap();
    let b = Browser::start().await;
    b.login(&h.url, "admin", ADMIN_PASSWORD).await;
    b.wait_text("#whoami", "admin").await;
    b.click_link("Detections").await;
    let text = b.wait_text("#detections", "Trojan.Linux.Agent").await;
    assert!(
        text.contains("/tmp/<img src=x onerror=alert(1)>.sh"),
        "{text}"
    );
    assert!(
        b.find_all("img").await.is_empty(),
        "no img element was created"
    );
    b.screenshot("detections").await;
    drop(b);
    h.stop().await;
}

/// A new group and a new IOC scan task, made through the forms in a real browser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_and_task_created_through_the_forms() {
    let h = Harness::start().await;
    h.group("Finance").await;
    let device = h.enroll("Finance", "fin-ws-02").await;
    let b = Browser::start().await;
    b.login(&h.url, "admin", ADMIN_PASSWORD).await;
    b.wait_text("#whoami", "admin").await;

    // Devices: New group inside Finance.
    b.type_in("#new-group-name", "Branch office").await;
    b.click("#new-group-parent option[value='Finance']").await;
    b.click("#create-group").await;
    b.wait_text("#list-title", "Branch office").await;
    let g = h
        .core()
        .group_by_name(&admin(), "Branch office")
        .await
        .unwrap();
    let finance = h.core().group_by_name(&admin(), "Finance").await.unwrap();
    assert_eq!(g.parent, Some(finance.id));
    assert!(b.text("#group-tree").await.contains("Branch office"));

    // Tasks: New IOC scan task, a YARA rule pasted in, both actions.
    b.click_link("Tasks").await;
    b.click("#new-task-panel summary").await;
    b.type_in("#new-task-name", "Hunt for the dropper").await;
    b.click("#new-task-group option[value='Finance']").await;
    b.click("#new-task-format option[value='yara']").await;
    b.type_in(
        "#new-task-ioc",
        "rule dropper { strings: $a = \"pwned\" condition: $a }",
    )
    .await;
    b.click("#new-task-quarantine").await;
    b.screenshot("new-task").await;
    b.click("#create-task").await;
    b.wait_text("#task-name", "Hunt for the dropper").await;
    let devices = b.wait_text("#task-devices", "fin-ws-02").await;
    assert!(devices.contains("pending"), "{devices}");
    let tasks = h.core().tasks(&admin()).await.unwrap();
    assert_eq!(tasks.len(), 1);
    let (t, rows) = h.core().task(&admin(), tasks[0].id).await.unwrap();
    assert_eq!(t.actions, serde_json::json!(["quarantine_and_delete"]));
    assert_eq!(rows[0].device_id, device);

    // The administrator's own password, changed from the header's link: the session
    // ends, the login page says why, and the new password opens a new one.
    b.click("#change-password").await;
    b.type_in("#current-password", ADMIN_PASSWORD).await;
    b.type_in("#new-password", "a-brand-new-password").await;
    b.type_in("#confirm-password", "a-brand-new-password").await;
    b.click("#change-password-submit").await;
    b.wait_text("#login-notice", "password is changed").await;
    b.login(&h.url, "admin", "a-brand-new-password").await;
    b.wait_text("#whoami", "admin").await;
    drop(b);
    h.stop().await;
}
