//! The console over plain HTTPS (no browser): login, cookies, headers, CSRF, roles, escaping.

mod common;

use common::{admin, serve_console, Harness, Visitor, ADMIN_PASSWORD};
use riposte_model::{PolicyMode, Role};
use serde_json::json;

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_cookie_and_headers() {
    let h = Harness::start().await;
    let mut v = Visitor::new(&h);

    // Pages need a session: to the login page first.
    let p = v.get("/devices").await;
    assert_eq!(p.status, 303, "{}", p.body);
    assert_eq!(p.location(), "/login");

    let p = v.get("/login").await;
    assert_eq!(p.status, 200);
    assert_eq!(p.headers["content-security-policy"], CSP);
    assert_eq!(p.headers["x-frame-options"], "DENY");
    assert_eq!(p.headers["x-content-type-options"], "nosniff");
    assert!(!p.body.contains("<script>"), "no inline script");
    assert!(!p.body.contains("style="), "no inline style");

    // A wrong password: refused with the service's message, no cookie.
    let p = v.login("admin", "not-the-password").await;
    assert_eq!(p.status, 401);
    assert!(p.body.contains("wrong user name or password"), "{}", p.body);
    assert!(p.headers.get("set-cookie").is_none());
    assert!(v.cookie.is_none());

    // An oversized login form gets the login page with the reason, not plain text.
    let huge = "x".repeat(300 * 1024);
    let p = v
        .post("/login", &[("user", "admin"), ("password", huge.as_str())])
        .await;
    assert_eq!(p.status, 413, "{}", p.body);
    assert!(
        p.body.contains("larger than the console takes") && p.body.contains("<form"),
        "{}",
        p.body
    );
    assert!(p.headers.get("set-cookie").is_none());

    // The special account, with its right password: no session either.
    h.core()
        .create_special(&admin(), "special-pw-1")
        .await
        .unwrap();
    let p = v.login("riposte-autonomous", "special-pw-1").await;
    assert_ne!(p.status, 303, "{}", p.body);
    assert!(p.body.contains("cannot log in"), "{}", p.body);
    assert!(p.headers.get("set-cookie").is_none());

    let p = v.login("admin", ADMIN_PASSWORD).await;
    assert_eq!(p.status, 303);
    let cookie = p.headers["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.starts_with("riposte_session="), "{cookie}");
    for flag in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.split("; ").any(|f| f == flag), "{flag} in {cookie}");
    }
    let p = v.get("/devices").await;
    assert_eq!(p.status, 200);
    assert_eq!(p.headers["content-security-policy"], CSP);
    assert_eq!(p.headers["cache-control"], "no-store");
    assert!(p.body.contains("Managed devices"));

    // Static files come from the crate.
    let css = v.get("/static/console.css").await;
    assert_eq!(css.status, 200);
    assert!(css.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/css"));
    let js = v.get("/static/console.js").await;
    assert!(js.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));

    // Logging out ends the session in the server, not only in the browser.
    let csrf = p.csrf();
    let out = v.post("/logout", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, 303);
    assert!(out.headers["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    assert_eq!(v.get("/devices").await.status, 303);
    h.stop().await;
}

/// The console and the API count failed logins, and remember the addresses an account
/// has used, under one key per address: failures elsewhere that lock the account for new
/// addresses do not lock its administrator out of the console at their own address, and
/// a guesser gets no second count by switching from the API to the console form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_and_api_logins_share_one_count_per_address() {
    let h = Harness::start().await;
    let core = h.core();
    // The administrator has used the API from this machine.
    core.login("admin", ADMIN_PASSWORD, "127.0.0.1")
        .await
        .unwrap();
    for _ in 0..5 {
        assert!(core.login("admin", "guess", "198.51.100.9").await.is_err());
    }
    let mut v = Visitor::new(&h);
    let p = v.login("admin", ADMIN_PASSWORD).await;
    assert_eq!(p.status, 303, "a known address gets in: {}", p.body);

    // Five failures on the form lock the address for the API too.
    let mut guesser = Visitor::new(&h);
    for _ in 0..5 {
        assert_eq!(guesser.login("nobody", "guess").await.status, 401);
    }
    let e = core
        .login("admin", ADMIN_PASSWORD, "127.0.0.1")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("from this address"), "{e}");
    let p = guesser.login("admin", ADMIN_PASSWORD).await;
    assert_eq!(p.status, 429, "{}", p.body);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csrf_token_is_required() {
    let h = Harness::start().await;
    let gid = h.group("Finance").await;
    let mut v = Visitor::new(&h);
    v.login("admin", ADMIN_PASSWORD).await;
    let path = format!("/policies/{gid}/threat-response");
    let form = |csrf: &'static str| {
        vec![
            ("csrf", csrf),
            ("op", "save"),
            ("mode", "enforce"),
            ("enabled", "1"),
            ("action", "notify_user"),
        ]
    };
    // No token, then a wrong one: refused before anything runs.
    let mut no_token = form("");
    no_token.remove(0);
    let p = v.post(&path, &no_token).await;
    assert_eq!(p.status, 403);
    assert!(p.body.contains("CSRF"), "{}", p.body);
    let p = v.post(&path, &form("00112233")).await;
    assert_eq!(p.status, 403);
    // A token from another session does not work either.
    let mut other = Visitor::new(&h);
    other.login("admin", ADMIN_PASSWORD).await;
    let foreign = other.get("/devices").await.csrf();
    let mut f = form("");
    f[0].1 = &foreign;
    assert_eq!(v.post(&path, &f).await.status, 403);
    let pol = h.core().policy(&admin(), "Finance").await.unwrap();
    assert!(pol.threat_response.is_none(), "nothing stored");

    // A cross-site form is refused even with the right token.
    let own = v.get("/devices").await.csrf();
    let mut f = form("");
    f[0].1 = &own;
    let r = v
        .http
        .post(format!("{}{path}", v.url))
        .header("cookie", v.cookie.clone().unwrap())
        .header("origin", "https://evil.example")
        .form(&f)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);

    // The right token works.
    let p = v.post(&path, &f).await;
    assert_eq!(p.status, 303, "{}", p.body);
    let pol = h.core().policy(&admin(), "Finance").await.unwrap();
    let tr = pol.threat_response.unwrap();
    assert_eq!(tr.mode, PolicyMode::Enforce);
    assert!(tr.value.enabled);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auditor_cannot_change_anything() {
    let h = Harness::start().await;
    let gid = h.group("Finance").await;
    h.add_account("audrey", Role::Auditor, "auditor-password-1")
        .await;
    let mut v = Visitor::new(&h);
    assert_eq!(v.login("audrey", "auditor-password-1").await.status, 303);

    // The pages show no control that changes anything.
    let pages = [
        format!("/policies/{gid}?tab=settings&section=threat-response"),
        format!("/policies/{gid}?tab=settings&section=sandbox"),
        "/accounts".to_string(),
        "/quarantine".to_string(),
        "/devices".to_string(),
        "/tasks".to_string(),
    ];
    for path in &pages {
        let p = v.get(path).await;
        assert_eq!(p.status, 200, "{path}: {}", p.body);
        for control in [
            "id=\"ok\"",
            "id=\"save\"",
            "id=\"sandbox-save\"",
            "id=\"create-special\" href",
            "id=\"create-account\"",
            "id=\"delete-special\"",
            ">Delete<",
            ">Restore<",
            "id=\"create-group\"",
            "id=\"create-task\"",
        ] {
            assert!(!p.body.contains(control), "{path} shows {control}");
        }
    }
    let p = v
        .get(&format!(
            "/policies/{gid}?tab=settings&section=threat-response"
        ))
        .await;
    for id in [
        "tr-enabled",
        "action-group_ioc_scan",
        "special-password",
        "mode-enforce",
    ] {
        assert!(
            tag(&p.body, id).contains(" disabled"),
            "{id} read-only: {}",
            tag(&p.body, id)
        );
    }
    // An auditor reads the list of enrollment tokens (which holds no token), without
    // the form that creates one.
    let tokens = v.get("/enroll-tokens").await;
    assert_eq!(tokens.status, 200);
    assert!(tokens.body.contains("id=\"tokens\""), "{}", tokens.body);
    assert!(!tokens.body.contains("new-token-form"), "{}", tokens.body);

    // Forged requests with the auditor's own valid token: the service refuses them.
    let csrf = v.get("/devices").await.csrf();
    let forged: Vec<(String, Vec<(&str, &str)>)> = vec![
        (
            format!("/policies/{gid}/threat-response"),
            vec![("op", "save"), ("mode", "enforce"), ("enabled", "1")],
        ),
        (
            format!("/policies/{gid}/sandbox-integration"),
            vec![("mode", "enforce"), ("timeout", "30")],
        ),
        ("/special-account".into(), vec![("password", "abcdefghij")]),
        (
            "/accounts".into(),
            vec![
                ("name", "mallory"),
                ("role", "administrator"),
                ("password", "mallory-password-1"),
            ],
        ),
        ("/accounts/admin/delete".into(), vec![]),
        (
            "/enroll-tokens".into(),
            vec![("group", "Finance"), ("hours", "1"), ("uses", "5")],
        ),
        (
            "/groups".into(),
            vec![("name", "Shadow"), ("parent", "Finance")],
        ),
        ("/devices/1/move".into(), vec![("group", "Finance")]),
        ("/devices/1/revoke".into(), vec![("confirm", "yes")]),
        ("/devices/1/threat-response/follow-policy".into(), vec![]),
        // Saving with nothing kept: refused as such, not "nothing to save".
        (format!("/policies/{gid}/save"), vec![]),
        (
            "/groups/change".into(),
            vec![("group", "Finance"), ("action", "rename"), ("name", "Mine")],
        ),
        (
            "/tasks".into(),
            vec![
                ("name", "t"),
                ("group", "Finance"),
                ("format", "yara"),
                ("content", "rule r { condition: true }"),
            ],
        ),
    ];
    for (path, fields) in &forged {
        let mut f = vec![("csrf", csrf.as_str())];
        f.extend(fields.iter().copied());
        let p = v.post(path, &f).await;
        assert_eq!(p.status, 403, "{path}: {}", p.body);
        assert!(p.body.contains("auditor"), "{path}: {}", p.body);
    }
    // And without a token.
    let p = v
        .post(
            &format!("/policies/{gid}/threat-response"),
            &[("op", "save"), ("enabled", "1")],
        )
        .await;
    assert_eq!(p.status, 403);

    let core = h.core();
    assert!(core
        .policy(&admin(), "Finance")
        .await
        .unwrap()
        .threat_response
        .is_none());
    assert!(core
        .policy(&admin(), "Finance")
        .await
        .unwrap()
        .sandbox_integration
        .is_none());
    assert!(core.special_status(&admin()).await.unwrap().is_none());
    let names: Vec<String> = core
        .accounts(&admin())
        .await
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(core.enroll_tokens(&admin()).await.unwrap().is_empty());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn special_user_password_checked_on_the_server() {
    let h = Harness::start().await;
    let mut v = Visitor::new(&h);
    v.login("admin", ADMIN_PASSWORD).await;
    let csrf = v.get("/accounts").await.csrf();
    let p = v
        .post(
            "/special-account",
            &[
                ("csrf", &csrf),
                ("password", "1234567"),
                ("back", "/accounts"),
            ],
        )
        .await;
    assert_eq!(p.status, 303);
    assert_eq!(p.location(), "/accounts?dialog=special");
    let page = v.get(p.location()).await;
    assert!(
        page.body
            .contains("8 to 16 characters long; this one has 7"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("id=\"special-dialog\""),
        "the dialog is open again"
    );
    assert!(h.core().special_status(&admin()).await.unwrap().is_none());

    let p = v
        .post(
            "/special-account",
            &[
                ("csrf", &csrf),
                ("password", "12345678"),
                ("back", "//evil.example/"),
            ],
        )
        .await;
    assert_eq!(p.location(), "/accounts", "only local redirects");
    let page = v.get("/accounts").await;
    assert!(page.body.contains("special user was created"));
    assert!(page.body.contains("id=\"delete-special\""));
    // Deleting the special account from the accounts page.
    let p = v.post("/special-account/delete", &[("csrf", &csrf)]).await;
    assert_eq!(p.status, 303);
    assert!(h.core().special_status(&admin()).await.unwrap().is_none());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detection_file_names_are_escaped() {
    let h = Harness::start().await;
    let dev = h.enroll("Managed devices", "web-01").await;
    insert_hostile_detection(&h, dev).await;
    let mut v = Visitor::new(&h);
    v.login("admin", ADMIN_PASSWORD).await;
    for path in [
        "/detections".to_string(),
        format!("/devices/{dev}?tab=detections"),
    ] {
        let p = v.get(&path).await;
        assert_eq!(p.status, 200);
        assert!(
            p.body
                .contains("/tmp/&lt;img src=x onerror=alert(1)&gt;.sh"),
            "{path}: {}",
            p.body
        );
        assert!(!p.body.contains("<img"), "{path}");
    }
    h.stop().await;
}

/// The opening tag of the element with this id.
fn tag<'a>(body: &'a str, id: &str) -> &'a str {
    let at = body
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id}"));
    let start = body[..at].rfind('<').unwrap();
    let end = at + body[at..].find('>').unwrap();
    &body[start..=end]
}

/// Stores a detection whose file name is HTML.
pub async fn insert_hostile_detection(h: &Harness, device: i64) {
    let rec = json!({
        "detection_id": "det-xss-1",
        "path": "/tmp/<img src=x onerror=alert(1)>.sh",
        "size": 42,
        "md5": "0".repeat(32),
        "sha1": "0".repeat(40),
        "sha256": "a".repeat(64),
        "threat": "Trojan.<b>Shell</b>",
        "source": "riposte-sandbox",
        "user_name": "alice",
        "detected_at_ms": 1_700_000_000_000i64,
    });
    assert!(h
        .core()
        .store
        .insert_detection(device, "det-xss-1", &rec)
        .await
        .unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_list_pages_and_search() {
    let h = Harness::start().await;
    h.group("Finance").await;
    let core = h.core();
    // 120 devices straight into the store (enrollment without certificates).
    let token = "t".repeat(40);
    let hash = riposte_server::secrets::token_hash(&token);
    let g = core.store.group_by_name("Finance").await.unwrap();
    core.store
        .create_enroll_token(
            &hash,
            g.id,
            riposte_store::now_ms() + 3_600_000,
            1000,
            "test",
        )
        .await
        .unwrap();
    for i in 0..120 {
        let name = format!("pc-{i:03}");
        core.store
            .enroll_device(&hash, &name, &name, "")
            .await
            .unwrap()
            .unwrap();
    }
    let mut v = Visitor::new(&h);
    v.login("admin", ADMIN_PASSWORD).await;
    let p = v.get(&format!("/devices?group={}", g.id)).await;
    assert_eq!(p.status, 200);
    assert_eq!(p.body.matches("class=\"device\"").count(), 50);
    assert!(p.body.contains("Devices 1–50"));
    assert!(p.body.contains("id=\"next\""));
    let p = v.get(&format!("/devices?group={}&page=2", g.id)).await;
    assert_eq!(p.body.matches("class=\"device\"").count(), 20);
    assert!(!p.body.contains("id=\"next\""));
    let p = v.get("/devices?q=pc-11").await;
    assert_eq!(
        p.body.matches("class=\"device\"").count(),
        10,
        "pc-110..pc-119"
    );
    // The root group's own devices only: none.
    let root = core.store.group_by_name("Managed devices").await.unwrap();
    let p = v
        .get(&format!("/devices?group={}&scope=group", root.id))
        .await;
    assert_eq!(p.body.matches("class=\"device\"").count(), 0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_progress_streams_and_cancel() {
    let h = Harness::start().await;
    h.group("Finance").await;
    let dev = h.enroll("Finance", "fin-01").await;
    let id = yara_task(&h, "Sweep <for> Emotet").await;
    let mut v = Visitor::new(&h);
    v.login("admin", ADMIN_PASSWORD).await;
    let p = v.get(&format!("/tasks/{id}")).await;
    assert_eq!(p.status, 200);
    assert!(p.body.contains("Sweep &lt;for&gt; Emotet"));
    assert!(p.body.contains(&format!("id=\"dev-{dev}\"")));
    assert!(p.body.contains("id=\"cancel-task\""));

    // The live stream names each device's state.
    let mut resp = open_stream(&v, id).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let text = next_event(&mut resp, "an event")
        .await
        .expect("the stream ended");
    assert!(text.contains("event: progress"), "{text}");
    assert!(text.contains(&format!("\"device_id\":{dev}")), "{text}");
    assert!(text.contains("\"state\":\"pending\""), "{text}");

    // Cancel: the next event says so.
    let p = v
        .post(&format!("/tasks/{id}/cancel"), &[("csrf", &p.csrf())])
        .await;
    assert_eq!(p.status, 303);
    let text = next_event(&mut resp, "an event")
        .await
        .expect("the stream ended");
    assert!(text.contains("\"state\":\"cancelled\""), "{text}");
    // Every device is final: the stream ends rather than polling forever.
    let end = next_event(&mut resp, "the stream of a finished task did not end").await;
    assert!(end.is_none(), "{end:?}");
    let p = v.get(&format!("/tasks/{id}")).await;
    assert!(!p.body.contains("id=\"cancel-task\""));
    // Nor is a task finished on every device offered for cancelling.
    let done = yara_task(&h, "Finished sweep").await;
    h.core()
        .store
        .update_task_device(
            done,
            dev,
            riposte_model::DeviceTaskState::Completed,
            0,
            None,
            &serde_json::json!({}),
        )
        .await
        .unwrap();
    let p = v.get(&format!("/tasks/{done}")).await;
    assert!(
        p.body.contains("Finished on every device") && !p.body.contains("id=\"cancel-task\""),
        "{}",
        p.body
    );

    // A stream ends with its session.
    let id = yara_task(&h, "Second sweep").await;
    let mut resp = open_stream(&v, id).await;
    let first = next_event(&mut resp, "an event")
        .await
        .expect("the stream ended");
    assert!(first.contains("\"state\":\"pending\""));
    let page = v.get("/devices").await;
    let p = v.post("/logout", &[("csrf", &page.csrf())]).await;
    assert_eq!(p.status, 303);
    let end = next_event(&mut resp, "the stream outlived its session").await;
    assert!(end.is_none(), "{end:?}");

    // A task is active until every device it was given has finished it.
    v.login("admin", ADMIN_PASSWORD).await;
    let id = yara_task(&h, "Third sweep").await;
    let state = |body: &str| {
        let at = body.find("id=\"task-state\">").expect("the task's state") + 16;
        body[at..at + body[at..].find('<').unwrap()].to_string()
    };
    assert_eq!(state(&v.get(&format!("/tasks/{id}")).await.body), "Active");
    h.core()
        .store
        .update_task_device(
            id,
            dev,
            riposte_model::DeviceTaskState::Completed,
            0,
            None,
            &serde_json::json!({}),
        )
        .await
        .unwrap();
    assert_eq!(
        state(&v.get(&format!("/tasks/{id}")).await.body),
        "Finished on every device"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_holds_a_bounded_number_of_live_streams() {
    let h = Harness::start().await;
    h.group("Finance").await;
    h.enroll("Finance", "fin-01").await;
    let id = yara_task(&h, "Bounded").await;
    let mut v = Visitor::new(&h);
    v.login("admin", ADMIN_PASSWORD).await;
    let max = riposte_console::MAX_STREAMS_PER_SESSION;
    let mut open = Vec::new();
    for _ in 0..max {
        let mut resp = open_stream(&v, id).await;
        assert_eq!(resp.status().as_u16(), 200);
        next_event(&mut resp, "an event")
            .await
            .expect("the stream ended");
        open.push(resp);
    }
    // One more from the same session is refused, with a reason.
    let refused = open_stream(&v, id).await;
    assert_eq!(refused.status().as_u16(), 429);
    assert!(refused
        .text()
        .await
        .unwrap()
        .contains("live task views open"));
    // The limit is the session's, not the server's.
    let mut other = Visitor::new(&h);
    other.login("admin", ADMIN_PASSWORD).await;
    let resp = open_stream(&other, id).await;
    assert_eq!(resp.status().as_u16(), 200);
    drop(resp);
    // Streams that end give their slots back: once the task is cancelled, every
    // stream sends the final states and ends, and the session may open a new one.
    h.core().cancel_task(&admin(), id).await.unwrap();
    for resp in &mut open {
        while next_event(resp, "the stream of a cancelled task did not end")
            .await
            .is_some()
        {}
    }
    drop(open);
    let resp = open_stream(&v, id).await;
    assert_eq!(resp.status().as_u16(), 200);
    h.stop().await;
}

#[tokio::test]
async fn quarantine_page_sends_restore_and_delete_to_the_device() {
    let h = Harness::start().await;
    let dev = h.enroll("Managed devices", "q-01").await;
    let core = h.core();
    let sha = "ab".repeat(32);
    let rec = json!({"id": "e1", "original_path": "/home/u/evil.sh", "size": 12, "threat_name": "T", "sha256": sha});
    core.store
        .upsert_quarantine(dev, "e1", "quarantined", &rec)
        .await
        .unwrap();
    let mut v = Visitor::new(&h);
    v.login("admin", ADMIN_PASSWORD).await;
    let page = v.get("/quarantine").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("/home/u/evil.sh"), "{}", page.body);
    // The threat's name, from the record's `threat_name`.
    assert!(page.body.contains("<td>T</td>"), "{}", page.body);
    let csrf = page.csrf();
    let dev_s = dev.to_string();
    let act = |entry: &'static str, action: &'static str| {
        let (v, csrf, dev_s) = (&v, &csrf, &dev_s);
        async move {
            let form = [
                ("csrf", csrf.as_str()),
                ("back", "/quarantine"),
                ("device", dev_s.as_str()),
                ("entry", entry),
                ("action", action),
            ];
            v.post("/quarantine/action", &form).await
        }
    };
    let before = core.store.outbox_after(dev, 0, 100).await.unwrap().len();
    for action in ["restore", "delete"] {
        let p = act("e1", action).await;
        assert!(
            p.status == 200 || p.status == 303,
            "{action}: {} {}",
            p.status,
            p.body
        );
    }
    // Both requests are queued for the device, in order, as quarantine commands.
    let rows = core.store.outbox_after(dev, 0, 100).await.unwrap();
    let cmds: Vec<serde_json::Value> = rows[before..]
        .iter()
        .map(|r| serde_json::from_str::<serde_json::Value>(&r.payload).unwrap())
        .collect();
    assert_eq!(cmds.len(), 2, "{cmds:?}");
    assert_eq!(cmds[0]["kind"], "quarantine");
    assert_eq!(cmds[0]["action"], "restore");
    assert_eq!(cmds[1]["action"], "delete");
    assert_eq!(cmds[1]["entry_id"], "e1");
    // An unknown entry changes nothing.
    act("nope", "delete").await;
    assert_eq!(
        core.store.outbox_after(dev, 0, 100).await.unwrap().len(),
        rows.len()
    );
    // Once the device has restored it, the entry is not sent again: the console says
    // why, and the device's Alerts tab lists what the device could not do.
    core.store
        .upsert_quarantine(dev, "e1", "restored", &rec)
        .await
        .unwrap();
    let p = act("e1", "restore").await;
    assert_eq!(p.status, 303, "{}", p.body);
    let shown = v.get("/quarantine").await;
    assert!(
        shown
            .body
            .contains("is restored: only a quarantined entry can be restored or deleted"),
        "{}",
        shown.body
    );
    assert_eq!(
        core.store.outbox_after(dev, 0, 100).await.unwrap().len(),
        rows.len()
    );
    // A restore allowed the content on the device: shown, and withdrawn from here.
    assert!(!shown.body.contains("Withdraw allowance"), "{}", shown.body);
    let mut allowed = rec.clone();
    allowed["allowed"] = json!(true);
    core.store
        .upsert_quarantine(dev, "e1", "restored", &allowed)
        .await
        .unwrap();
    let shown = v.get("/quarantine").await;
    assert!(
        shown
            .body
            .contains("restored, content allowed on the device")
            && shown.body.contains("Withdraw allowance"),
        "{}",
        shown.body
    );
    let p = act("e1", "withdraw_allowance").await;
    assert_eq!(p.status, 303, "{}", p.body);
    let queued = core.store.outbox_after(dev, 0, 100).await.unwrap();
    assert_eq!(queued.len(), rows.len() + 1);
    let cmd: serde_json::Value = serde_json::from_str(&queued[rows.len()].payload).unwrap();
    assert_eq!(cmd, json!({"kind": "withdraw_allowance", "sha256": sha}));
    // The device reports it withdrawn (its hash in capitals is the same content).
    assert_eq!(
        core.store
            .set_quarantine_allowance(dev, &sha.to_uppercase(), false)
            .await
            .unwrap(),
        1
    );
    let shown = v.get("/quarantine").await;
    assert!(!shown.body.contains("Withdraw allowance"), "{}", shown.body);
    let p = act("e1", "withdraw_allowance").await;
    assert_eq!(p.status, 303, "{}", p.body);
    assert!(v
        .get("/quarantine")
        .await
        .body
        .contains("there is no allowance to withdraw"));
    assert_eq!(
        core.store.outbox_after(dev, 0, 100).await.unwrap().len(),
        queued.len(),
        "nothing queued for an allowance already withdrawn"
    );
    let alerts = v.get(&format!("/devices/{dev}?tab=alerts")).await;
    assert!(
        alerts.body.contains("No alerts from this device."),
        "{}",
        alerts.body
    );
    core.store
        .add_alert(
            dev,
            "quarantine_command_failed",
            "delete of quarantine entry e9 failed: gone",
        )
        .await
        .unwrap();
    let alerts = v.get(&format!("/devices/{dev}?tab=alerts")).await;
    assert!(
        alerts
            .body
            .contains("<code>quarantine_command_failed</code>"),
        "{}",
        alerts.body
    );
    assert!(alerts
        .body
        .contains("delete of quarantine entry e9 failed: gone"));
    // A revoked device never receives a command: its entries offer none, on the
    // fleet's page and on the device's own tab.
    core.store
        .upsert_quarantine(dev, "e2", "quarantined", &rec)
        .await
        .unwrap();
    let offered = |body: &str| body.contains("name=\"entry\" value=\"e2\"");
    assert!(offered(&v.get("/quarantine").await.body));
    core.store.revoke_device(dev).await.unwrap();
    for page in [
        "/quarantine".to_string(),
        format!("/devices/{dev}?tab=quarantine"),
    ] {
        let shown = v.get(&page).await;
        assert!(shown.body.contains("/home/u/evil.sh"), "{}", shown.body);
        assert!(!offered(&shown.body), "{page}: {}", shown.body);
        assert!(
            shown.body.contains("device revoked"),
            "{page}: {}",
            shown.body
        );
    }
    h.stop().await;
}

/// The management forms: a new group, moving and revoking a device, a new IOC scan
/// task; each goes through the service, and bad input changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_devices_and_tasks_are_managed_from_the_console() {
    let h = Harness::start().await;
    let finance = h.group("Finance").await;
    let dev = h.enroll("Finance", "fin-01").await;
    let mut v = Visitor::new(&h);
    v.login("admin", ADMIN_PASSWORD).await;
    let core = h.core();
    let group_names = || async {
        let mut n: Vec<(String, Option<i64>)> = core
            .groups(&admin())
            .await
            .unwrap()
            .into_iter()
            .map(|g| (g.name, g.parent))
            .collect();
        n.sort();
        n
    };

    // New group inside Finance.
    let p = v.get("/devices").await;
    assert!(p.body.contains("id=\"create-group\""));
    let csrf = p.csrf();
    let p = v
        .post(
            "/groups",
            &[
                ("csrf", &csrf),
                ("name", "Branch <A>"),
                ("parent", "Finance"),
            ],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    let branch = core.group_by_name(&admin(), "Branch <A>").await.unwrap();
    assert_eq!(branch.parent, Some(finance));
    assert_eq!(p.location(), format!("/devices?group={}", branch.id));
    let page = v.get(p.location()).await;
    assert!(
        page.body
            .contains("Group &#39;Branch &lt;A&gt;&#39; created.")
            || page.body.contains("Group 'Branch &lt;A&gt;' created."),
        "{}",
        page.body
    );
    // A bad name: refused, said, nothing created.
    let before = group_names().await;
    let p = v
        .post(
            "/groups",
            &[("csrf", &csrf), ("name", "  "), ("parent", "Finance")],
        )
        .await;
    assert_eq!(p.location(), "/devices");
    assert!(v
        .get("/devices")
        .await
        .body
        .contains("a group name must be 1 to 128 printable characters"));
    assert_eq!(group_names().await, before);

    // The selected group can be renamed, moved and deleted; the root group offers none
    // of it; a move into its own subgroup and the deletion of a group with a device are
    // refused and change nothing.
    let root = core
        .group_by_name(&admin(), "Managed devices")
        .await
        .unwrap();
    assert!(!v
        .get(&format!("/devices?group={}", root.id))
        .await
        .body
        .contains("id=\"change-group\""));
    let page = v.get(&format!("/devices?group={finance}")).await;
    assert!(page.body.contains("id=\"change-group\""), "{}", page.body);
    let change = |fields: Vec<(&'static str, String)>| {
        let mut form = vec![("csrf", csrf.clone())];
        form.extend(fields);
        let v = &v;
        async move {
            let form: Vec<(&str, &str)> = form.iter().map(|(k, x)| (*k, x.as_str())).collect();
            v.post("/groups/change", &form).await
        }
    };
    let p = change(vec![
        ("group", "Branch <A>".into()),
        ("action", "rename".into()),
        ("name", "Branch B".into()),
    ])
    .await;
    assert_eq!(p.status, 303, "{}", p.body);
    assert_eq!(p.location(), format!("/devices?group={}", branch.id));
    assert_eq!(core.store.group(branch.id).await.unwrap().name, "Branch B");
    // A rename refused because the name is another group's stays on this group's page.
    let p = change(vec![
        ("group", "Branch B".into()),
        ("action", "rename".into()),
        ("name", "Finance".into()),
    ])
    .await;
    assert_eq!(p.location(), format!("/devices?group={}", branch.id));
    assert!(v.get(p.location()).await.body.contains("already exists"));
    // Finance cannot move into its own subgroup: the list does not offer it.
    let page = v.get(&format!("/devices?group={finance}")).await.body;
    let at = page.find("id=\"move-group-parent\"").unwrap();
    let offered = &page[at..at + page[at..].find("</select>").unwrap()];
    assert!(offered.contains(">Managed devices<"), "{offered}");
    assert!(
        !offered.contains(">Branch B<") && !offered.contains(">Finance<"),
        "{offered}"
    );
    let before = group_names().await;
    let p = change(vec![
        ("group", "Finance".into()),
        ("action", "move".into()),
        ("parent", "Branch B".into()),
    ])
    .await;
    assert_eq!(p.location(), format!("/devices?group={finance}"));
    assert!(v
        .get(p.location())
        .await
        .body
        .contains("one of its subgroups"));
    let p = change(vec![
        ("group", "Finance".into()),
        ("action", "delete".into()),
        ("confirm", "yes".into()),
    ])
    .await;
    assert!(v.get(p.location()).await.body.contains("1 device(s)"));
    assert_eq!(group_names().await, before);
    let p = change(vec![
        ("group", "Branch B".into()),
        ("action", "move".into()),
        ("parent", "Managed devices".into()),
    ])
    .await;
    assert_eq!(p.status, 303);
    assert_eq!(
        core.store.group(branch.id).await.unwrap().parent,
        Some(root.id)
    );
    let spare = core
        .create_group(&admin(), "Spare", Some("Branch B"))
        .await
        .unwrap();
    let p = change(vec![("group", "Spare".into()), ("action", "delete".into())]).await;
    assert!(v.get(p.location()).await.body.contains("tick the box"));
    let p = change(vec![
        ("group", "Spare".into()),
        ("action", "delete".into()),
        ("confirm", "yes".into()),
    ])
    .await;
    assert_eq!(p.location(), "/devices");
    assert!(core.store.group(spare).await.is_err());
    let p = change(vec![
        ("group", "Managed devices".into()),
        ("action", "rename".into()),
        ("name", "Everything".into()),
    ])
    .await;
    assert!(v
        .get(p.location())
        .await
        .body
        .contains("cannot be renamed, moved or deleted"));
    // Back as it was, for the rest of the test.
    core.move_group(&admin(), "Branch B", "Finance")
        .await
        .unwrap();
    core.rename_group(&admin(), "Branch B", "Branch <A>")
        .await
        .unwrap();
    let back = core.store.group(branch.id).await.unwrap();
    assert_eq!(
        (back.name.as_str(), back.parent),
        ("Branch <A>", Some(finance))
    );

    // A task from the form: a broken document is refused before any task exists.
    let p = v.get("/tasks").await;
    assert!(p.body.contains("id=\"create-task\""));
    let p = v
        .post(
            "/tasks",
            &[
                ("csrf", &csrf),
                ("name", "Hunt"),
                ("group", "Finance"),
                ("format", "openioc"),
                ("content", "<OpenIOC/>"),
                ("action", "quarantine_and_delete"),
            ],
        )
        .await;
    assert_eq!(p.location(), "/tasks");
    assert!(v.get("/tasks").await.body.contains("cannot be used"));
    assert!(core.tasks(&admin()).await.unwrap().is_empty());
    // A document too large for a form: the console says where it goes instead.
    let big = "a".repeat(300 * 1024);
    let p = v
        .post(
            "/tasks",
            &[
                ("csrf", &csrf),
                ("name", "Big"),
                ("group", "Finance"),
                ("format", "yara"),
                ("content", &big),
            ],
        )
        .await;
    assert_eq!(p.status, 400);
    assert!(
        p.body.contains("larger than the console takes (256 KiB)")
            && p.body.contains("through the API"),
        "{}",
        p.body
    );
    assert!(core.tasks(&admin()).await.unwrap().is_empty());
    let p = v
        .post(
            "/tasks",
            &[
                ("csrf", &csrf),
                ("name", "Hunt"),
                ("group", "Finance"),
                ("format", "yara"),
                (
                    "content",
                    "rule hunt { strings: $a = \"evil\" condition: $a }",
                ),
                ("scope", "critical_areas"),
                ("action", "quarantine_and_delete"),
                ("action", "epp_critical_areas_scan"),
            ],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    let tasks = core.tasks(&admin()).await.unwrap();
    assert_eq!(tasks.len(), 1);
    assert_eq!(p.location(), format!("/tasks/{}", tasks[0].id));
    let (t, rows) = core.task(&admin(), tasks[0].id).await.unwrap();
    assert_eq!(t.name, "Hunt");
    assert_eq!(t.scope, "critical_areas");
    assert_eq!(
        t.actions,
        json!(["quarantine_and_delete", "epp_critical_areas_scan"])
    );
    assert_eq!(rows.iter().map(|r| r.device_id).collect::<Vec<_>>(), [dev]);

    // Move the device into the new group; an unknown group changes nothing.
    let p = v.get(&format!("/devices/{dev}")).await;
    assert!(p.body.contains("id=\"move-device\"") && p.body.contains("id=\"revoke-device\""));
    // When its certificate must be renewed by, as enrollment issued it: a year on.
    let expires = core
        .store
        .device(dev)
        .await
        .unwrap()
        .cert_expires_ms
        .unwrap();
    let year_ms = 365 * 24 * 3600 * 1000;
    assert!((expires - riposte_store::now_ms() - year_ms).abs() < 3_600_000);
    assert!(
        p.body.contains("Certificate valid until")
            && p.body.contains(&riposte_model::time::utc(expires)),
        "{}",
        p.body
    );
    let p = v
        .post(
            &format!("/devices/{dev}/move"),
            &[("csrf", &csrf), ("group", "Branch <A>")],
        )
        .await;
    assert_eq!(p.status, 303);
    assert_eq!(
        core.device(&admin(), &dev.to_string())
            .await
            .unwrap()
            .group_id,
        branch.id
    );
    v.post(
        &format!("/devices/{dev}/move"),
        &[("csrf", &csrf), ("group", "Nowhere")],
    )
    .await;
    assert_eq!(
        core.device(&admin(), &dev.to_string())
            .await
            .unwrap()
            .group_id,
        branch.id
    );

    // Revoke: not without the confirmation box; then for good.
    v.post(&format!("/devices/{dev}/revoke"), &[("csrf", &csrf)])
        .await;
    assert!(v
        .get(&format!("/devices/{dev}"))
        .await
        .body
        .contains("tick the box to confirm"));
    assert!(
        !core
            .device(&admin(), &dev.to_string())
            .await
            .unwrap()
            .revoked
    );
    let p = v
        .post(
            &format!("/devices/{dev}/revoke"),
            &[("csrf", &csrf), ("confirm", "yes")],
        )
        .await;
    assert_eq!(p.status, 303);
    assert!(
        core.device(&admin(), &dev.to_string())
            .await
            .unwrap()
            .revoked
    );
    let p = v.get(&format!("/devices/{dev}")).await;
    assert!(p.body.contains("Revoked"));
    assert!(!p.body.contains("id=\"revoke-device\"") && !p.body.contains("id=\"move-device\""));
    h.stop().await;
}

/// A form rendered by one console (server process) is accepted by another on the same
/// database and secret key: the CSRF key is derived from the server's secret, not drawn
/// per process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_from_one_server_process_is_accepted_by_another() {
    let h = Harness::start().await;
    h.group("Finance").await;
    let mut v = Visitor::new(&h);
    v.login("admin", ADMIN_PASSWORD).await;
    let csrf = v.get("/devices").await.csrf();
    let (other, stop) = serve_console(h.core(), h.dir.path()).await;
    let mut w = Visitor::new(&h);
    w.url = other;
    w.cookie = v.cookie.clone();
    let p = w
        .post(
            "/groups",
            &[
                ("csrf", &csrf),
                ("name", "Made elsewhere"),
                ("parent", "Finance"),
            ],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    assert!(h
        .core()
        .group_by_name(&admin(), "Made elsewhere")
        .await
        .is_ok());
    // A Threat Response edit kept with OK on one process is saved from the other; the
    // kept edit is stored sealed (it holds the special password).
    let gid = h
        .core()
        .group_by_name(&admin(), "Finance")
        .await
        .unwrap()
        .id;
    h.core()
        .create_special(&admin(), "Sp3cial-pass")
        .await
        .unwrap();
    let p = v
        .post(
            &format!("/policies/{gid}/threat-response"),
            &[
                ("csrf", &csrf),
                ("op", "ok"),
                ("mode", "enforce"),
                ("enabled", "1"),
                ("action", "group_ioc_scan"),
                ("special_password", "Sp3cial-pass"),
            ],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    let token = v.cookie.as_deref().unwrap().split_once('=').unwrap().1;
    let session_hash = riposte_server::secrets::token_hash(token);
    let sealed = h
        .core()
        .store
        .console_draft(&session_hash, gid)
        .await
        .unwrap()
        .expect("the kept edit is in the database");
    assert!(!sealed.contains("Sp3cial-pass"));
    assert!(h
        .core()
        .policy(&admin(), "Finance")
        .await
        .unwrap()
        .threat_response
        .is_none());
    let p = w
        .post(&format!("/policies/{gid}/save"), &[("csrf", &csrf)])
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    let tr = h
        .core()
        .policy(&admin(), "Finance")
        .await
        .unwrap()
        .threat_response
        .expect("saved by the other process");
    assert!(tr.value.enabled, "{tr:?}");
    assert_eq!(
        h.core()
            .store
            .console_draft(&session_hash, gid)
            .await
            .unwrap(),
        None
    );

    // A token that is not the session's is still refused there.
    let p = w
        .post(
            "/groups",
            &[("csrf", "00ff"), ("name", "Forged"), ("parent", "Finance")],
        )
        .await;
    assert_eq!(p.status, 403);
    let _ = stop.send(true);
    h.stop().await;
}

/// A running device's progress (files and bytes examined so far) shows on the task page
/// and in its live stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_devices_progress_is_shown() {
    let h = Harness::start().await;
    h.group("Finance").await;
    let dev = h.enroll("Finance", "fin-01").await;
    let id = yara_task(&h, "Sweep").await;
    // What the device reports of the task: its state and results.
    let harness = &h;
    let report = |state, results: serde_json::Value| async move {
        harness
            .core()
            .store
            .update_task_device(id, dev, state, 0, None, &results)
            .await
            .unwrap();
    };
    use riposte_model::DeviceTaskState::{Completed, Running};
    report(
        Running,
        json!({"progress": {"files": 1234, "bytes": 5_000_000, "read": 10}}),
    )
    .await;
    let mut v = Visitor::new(&h);
    v.login("admin", ADMIN_PASSWORD).await;
    let want = "1234 files (5.0 MB) examined, 10 read";
    let p = v.get(&format!("/tasks/{id}")).await;
    assert!(p.body.contains(want), "{}", p.body);
    let mut resp = open_stream(&v, id).await;
    let text = next_event(&mut resp, "an event")
        .await
        .expect("the stream ended");
    assert!(text.contains(&format!("\"progress\":\"{want}\"")), "{text}");
    // A sweep that does not stat every file (names and paths only) reports no bytes.
    report(Running, json!({"progress": {"files": 2000, "read": 3}})).await;
    let body = v.get(&format!("/tasks/{id}")).await.body;
    assert!(body.contains("2000 files examined, 3 read"), "{body}");
    // Once finished, the progress column is empty again: the results are the report.
    report(Completed, json!({"stats": {"files_seen": 1300}})).await;
    assert!(!v.get(&format!("/tasks/{id}")).await.body.contains(want));
    drop(resp);
    h.stop().await;
}

/// A task for the Finance group with a one-rule YARA document.
async fn yara_task(h: &Harness, name: &str) -> i64 {
    let req: riposte_server::service::TaskRequest = serde_json::from_value(json!({
        "name": name,
        "group": "Finance",
        "iocs": [{"format": "yara", "name": "r", "content": "rule r { strings: $a = \"x\" condition: $a }"}],
    }))
    .unwrap();
    h.core().create_task(&admin(), &req).await.unwrap()
}

/// Opens a task's live stream with the visitor's session.
async fn open_stream(v: &Visitor, id: i64) -> reqwest::Response {
    v.http
        .get(format!("{}/tasks/{id}/events", v.url))
        .header("cookie", v.cookie.clone().unwrap())
        .send()
        .await
        .unwrap()
}

/// The stream's next chunk as text, or `None` when it ended; panics with `waiting_for`
/// when nothing comes within 5 s.
async fn next_event(resp: &mut reqwest::Response, waiting_for: &str) -> Option<String> {
    tokio::time::timeout(std::time::Duration::from_secs(5), resp.chunk())
        .await
        .unwrap_or_else(|_| panic!("{waiting_for}: nothing within 5 s"))
        .unwrap()
        .map(|b| String::from_utf8_lossy(&b).to_string())
}

/// A device's own Threat Response value (the **OK** of its settings page) can be given
/// back to its policies from the same page.
#[tokio::test]
async fn a_devices_own_value_can_be_given_back_to_its_policies() {
    let h = Harness::start().await;
    let dev = h.enroll("Managed devices", "own-01").await;
    let mut v = Visitor::new(&h);
    v.login("admin", ADMIN_PASSWORD).await;
    let page = format!("/devices/{dev}/apps/riposte?tab=settings&section=threat-response");
    assert!(!v.get(&page).await.body.contains("id=\"follow-policy\""));
    let own = || async {
        h.core()
            .store
            .device(dev)
            .await
            .unwrap()
            .local_settings
            .threat_response
            .is_some()
    };
    // OK on the form as it was shown changes nothing: the device keeps following its
    // policies (the form carries every value, so saving it would pin them all).
    let shown = v.get(&page).await;
    for checked in [
        "id=\"action-quarantine_and_delete\" checked",
        "id=\"action-notify_user\" checked",
    ] {
        assert!(shown.body.contains(checked), "{checked}: {}", shown.body);
    }
    let csrf = shown.csrf();
    let p = v
        .post(
            &format!("/devices/{dev}/threat-response"),
            &[
                ("csrf", csrf.as_str()),
                ("action", "quarantine_and_delete"),
                ("action", "notify_user"),
            ],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    assert!(!own().await);
    let shown = v.get(&page).await;
    assert!(
        shown
            .body
            .contains("Nothing changed: the device still follows its policies"),
        "{}",
        shown.body
    );
    let csrf = shown.csrf();
    let p = v
        .post(
            &format!("/devices/{dev}/threat-response"),
            &[("csrf", csrf.as_str()), ("enabled", "1")],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    assert!(own().await);
    let shown = v.get(&page).await;
    assert!(
        shown.body.contains("id=\"follow-policy\""),
        "{}",
        shown.body
    );
    let p = v
        .post(
            &format!("/devices/{dev}/threat-response/follow-policy"),
            &[("csrf", shown.csrf().as_str())],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    assert!(!own().await);
    let shown = v.get(&page).await;
    assert!(
        shown
            .body
            .contains("follows its policies for Threat Response again"),
        "{}",
        shown.body
    );
    assert!(!shown.body.contains("id=\"follow-policy\""));

    // A form for a device that does not exist answers the not-found page; its message
    // is not left behind to show on some later page.
    let p = v
        .post(
            "/devices/987654/threat-response",
            &[("csrf", shown.csrf().as_str()), ("enabled", "1")],
        )
        .await;
    assert_eq!(p.status, 404, "{}", p.body);
    assert!(p.body.contains("987654"), "{}", p.body);
    let next = v.get("/devices").await;
    assert_eq!(next.status, 200);
    assert!(!next.body.contains("987654"), "{}", next.body);
    h.stop().await;
}

/// The Password page changes the signed-in account's own password: a confirmation that
/// differs or a wrong current password changes nothing; a change ends the session and
/// says so on the login page. An administrator sets another account's password from the
/// Accounts page (not their own there, nor the special user's); an operator may not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_are_changed_on_the_password_page_and_set_on_accounts() {
    let h = Harness::start().await;
    h.add_account("oper", Role::Operator, "first-password-1")
        .await;
    h.core()
        .create_special(&admin(), "special-pw-1")
        .await
        .unwrap();
    let mut oper = Visitor::new(&h);
    assert_eq!(oper.login("oper", "first-password-1").await.status, 303);
    let page = oper.get("/password").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("id=\"password-form\""), "{}", page.body);
    let csrf = page.csrf();
    let change = |current: &'static str, new: &'static str, again: &'static str| {
        [
            ("csrf", csrf.clone()),
            ("current_password", current.to_string()),
            ("new_password", new.to_string()),
            ("confirm_password", again.to_string()),
        ]
    };
    for (form, says) in [
        (
            change("first-password-1", "second-password-2", "second-password-3"),
            "the two new passwords differ",
        ),
        (
            change("not-the-password", "second-password-2", "second-password-2"),
            "the current password is wrong",
        ),
        (change("first-password-1", "short", "short"), "at least 12"),
    ] {
        let fields: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let p = oper.post("/password", &fields).await;
        assert_eq!(p.status, 303, "{}", p.body);
        assert_eq!(p.location(), "/password");
        let shown = oper.get("/password").await;
        assert!(shown.body.contains(says), "{says}: {}", shown.body);
    }
    let form = change("first-password-1", "second-password-2", "second-password-2");
    let fields: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let p = oper.post("/password", &fields).await;
    assert_eq!(p.status, 303, "{}", p.body);
    assert_eq!(p.location(), "/login?changed=1");
    assert!(p.headers["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    assert_eq!(
        oper.get("/devices").await.status,
        303,
        "the session has ended"
    );
    let notice = oper.get("/login?changed=1").await;
    assert!(
        notice.body.contains("log in with the new one"),
        "{}",
        notice.body
    );
    assert_eq!(oper.login("oper", "first-password-1").await.status, 401);
    assert_eq!(oper.login("oper", "second-password-2").await.status, 303);

    // An operator cannot set the administrator's.
    let accounts = oper.get("/accounts").await;
    assert!(!accounts.body.contains("Set password"), "{}", accounts.body);
    let csrf = accounts.csrf();
    let p = oper
        .post(
            "/accounts/admin/password",
            &[("csrf", &csrf), ("password", "taken-over-password")],
        )
        .await;
    assert_eq!(p.status, 403, "{}", p.body);

    // The administrator sets the operator's, from the Accounts page.
    let mut adm = Visitor::new(&h);
    assert_eq!(adm.login("admin", ADMIN_PASSWORD).await.status, 303);
    let accounts = adm.get("/accounts").await;
    assert!(
        accounts.body.contains("action=\"/accounts/oper/password\""),
        "{}",
        accounts.body
    );
    for other in ["admin", "riposte-autonomous"] {
        assert!(
            !accounts
                .body
                .contains(&format!("action=\"/accounts/{other}/password\"")),
            "no form for {other}"
        );
    }
    let csrf = accounts.csrf();
    let p = adm
        .post(
            "/accounts/oper/password",
            &[("csrf", &csrf), ("password", "third-password-3")],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    assert!(adm
        .get("/accounts")
        .await
        .body
        .contains("Password of oper set"));
    assert_eq!(
        oper.get("/devices").await.status,
        303,
        "oper's session ended"
    );
    assert_eq!(oper.login("oper", "third-password-3").await.status, 303);
    // Posted by hand for the administrator's own account: refused, said on the page.
    let p = adm
        .post(
            "/accounts/admin/password",
            &[("csrf", &csrf), ("password", "without-the-current")],
        )
        .await;
    assert_eq!(p.status, 303);
    assert!(adm
        .get("/accounts")
        .await
        .body
        .contains("give the current one"));
    h.stop().await;
}

/// A policy that enforces a settings group says which policies below it overrides (they
/// enforced it first), and each of those says it has no effect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_enforced_over_one_below_says_so_on_both() {
    use riposte_server::service::ThreatResponsePatch;
    let h = Harness::start().await;
    let core = h.core();
    let parent = core.create_group(&admin(), "Parent", None).await.unwrap();
    let child = core
        .create_group(&admin(), "Child", Some("Parent"))
        .await
        .unwrap();
    let enforce = ThreatResponsePatch {
        mode: Some(PolicyMode::Enforce),
        enabled: Some(true),
        ..Default::default()
    };
    core.set_policy_threat_response(&admin(), "Child", &enforce)
        .await
        .unwrap();
    core.set_policy_threat_response(&admin(), "Parent", &enforce)
        .await
        .unwrap();
    let mut v = Visitor::new(&h);
    v.login("admin", ADMIN_PASSWORD).await;
    let above = v
        .get(&format!(
            "/policies/{parent}?tab=settings&section=threat-response"
        ))
        .await;
    assert!(
        tag(&above.body, "overrides-below").contains("hint"),
        "{}",
        above.body
    );
    assert!(
        above
            .body
            .contains("over what Riposte policy (Child) below enforces"),
        "{}",
        above.body
    );
    let general = v.get(&format!("/policies/{parent}")).await;
    assert!(
        general
            .body
            .contains("(overrides what Riposte policy (Child) below enforces)"),
        "{}",
        general.body
    );
    let below = v
        .get(&format!(
            "/policies/{child}?tab=settings&section=threat-response"
        ))
        .await;
    assert!(
        below
            .body
            .contains("Riposte policy (Parent) above enforces"),
        "{}",
        below.body
    );
    assert!(!below.body.contains("overrides-below"), "{}", below.body);
    h.stop().await;
}
