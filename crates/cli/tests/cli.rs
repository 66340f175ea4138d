//! The `riposte` binary end to end: a server process, an agent process, and `riposte admin`.

mod common;
use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn server_agent_and_admin_commands() {
    let tmp = tempfile::tempdir().unwrap();
    let sdir = tmp.path().join("server");
    let pwfile = tmp.path().join("admin.pw");
    std::fs::write(&pwfile, "cli-test-admin-password\n").unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let (server, url) = start_server(&sdir, &pwfile, &listen);
    let admin = Admin {
        url: url.clone(),
        ca: sdir.join("ca.pem"),
        pwfile: pwfile.clone(),
    };

    admin.ok(&["group", "create", "A"]);
    admin.ok(&["group", "create", "A1", "--parent", "A"]);
    let groups = admin.json(&["group", "list"]);
    assert_eq!(groups.as_array().unwrap().len(), 3, "{groups}");
    let (code, _, err) = admin.run(&["group", "create", "A"]);
    assert_ne!(code, 0);
    assert!(err.contains("already exists"), "{err}");
    // Groups are renamed, moved and deleted; a move into the group's own subtree is not.
    admin.ok(&["group", "create", "Tmp"]);
    admin.ok(&["group", "rename", "Tmp", "Tmp2"]);
    admin.ok(&["group", "move", "Tmp2", "--parent", "A1"]);
    let (code, _, err) = admin.run(&["group", "move", "A", "--parent", "Tmp2"]);
    assert_ne!(code, 0);
    assert!(err.contains("one of its subgroups"), "{err}");
    let listed = admin.json(&["group", "list"]);
    let tmp2 = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "Tmp2")
        .expect("renamed group");
    let a1 = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "A1")
        .unwrap();
    assert_eq!(tmp2["parent"], a1["id"]);
    admin.ok(&["group", "delete", "Tmp2"]);
    assert_eq!(admin.json(&["group", "list"]).as_array().unwrap().len(), 3);
    // A reader that goes away (`… | head`) ends the command quietly, not in a panic.
    let mut listing = Command::new(bin())
        .args(["admin", "--server", &url, "--ca"])
        .arg(&admin.ca)
        .args(["--user", "admin", "--password-file"])
        .arg(&admin.pwfile)
        .args(["group", "list"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(listing.stdout.take());
    let out = listing.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // A server URL in plain HTTP is refused before the password is sent anywhere.
    let plain = Command::new(bin())
        .args([
            "admin",
            "--server",
            &url.replacen("https://", "http://", 1),
            "--ca",
        ])
        .arg(&admin.ca)
        .args(["--user", "admin", "--password-file"])
        .arg(&admin.pwfile)
        .args(["group", "list"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&plain.stderr);
    assert_eq!(plain.status.code(), Some(2), "{err}");
    assert!(err.contains("must start with https://"), "{err}");

    let token = admin
        .ok(&["enroll-token", "create", "--group", "A1"])
        .trim()
        .to_string();
    let adir = tmp.path().join("agent");
    let _agent = Proc(
        Command::new(bin())
            .args(["agent", "--server", &url, "--ca"])
            .arg(sdir.join("ca.pem"))
            .args(["--enroll-token", &token, "--name", "dev-one", "--data"])
            .arg(&adir)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut devices = serde_json::Value::Null;
    while Instant::now() < deadline {
        devices = admin.json(&["device", "list"]);
        if devices[0]["connected"] == true {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(devices[0]["name"], "dev-one", "{devices}");
    assert_eq!(devices[0]["connected"], true, "{devices}");
    // Without --json, a device is shown as text, its times as dates.
    let text = admin.ok(&["device", "show", "dev-one"]);
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.trim_start().strip_prefix(&format!("{name}:")))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no {name} in {text}"))
            .to_string()
    };
    assert!(
        text.starts_with("Device ") && text.contains("'dev-one'"),
        "{text}"
    );
    assert_eq!(field("connected"), "yes", "{text}");
    assert_eq!(field("revoked"), "no", "{text}");
    assert!(field("last seen").ends_with(" UTC"), "{text}");
    assert!(field("enrolled").starts_with("20"), "{text}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(adir.join("device.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the device key is private");

    // Special account: the rule is stated; then created.
    let pw7 = tmp.path().join("pw7");
    std::fs::write(&pw7, "1234567").unwrap();
    let (code, _, err) = admin.run(&[
        "special-account",
        "create",
        "--password-file",
        pw7.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("8 to 16 characters"), "{err}");
    let pw = tmp.path().join("pw");
    std::fs::write(&pw, "s3cret-pass\n").unwrap();
    admin.ok(&[
        "special-account",
        "create",
        "--password-file",
        pw.to_str().unwrap(),
    ]);
    assert_eq!(admin.json(&["special-account", "status"])["exists"], true);

    // A mistyped or empty action list is refused before anything is sent.
    for (actions, says) in [
        (
            "quarantine_and_delete,bogus_action",
            "unknown action 'bogus_action'; valid actions:",
        ),
        ("", "names no action"),
    ] {
        let (code, _, err) = admin.run(&["policy", "set", "A", "--actions", actions]);
        assert_ne!(code, 0);
        assert!(err.contains(says), "{err}");
    }
    // Policy on A, enforced: the device in A1 inherits it, locked, with provenance.
    admin.ok(&[
        "policy",
        "set",
        "A",
        "--threat-response",
        "on",
        "--actions",
        "quarantine_and_delete,group_ioc_scan",
        "--special-password-file",
        pw.to_str().unwrap(),
        "--enforce",
    ]);
    let s = admin.json(&["device", "settings", "dev-one"]);
    let tr = &s["effective"]["threat_response"];
    assert_eq!(tr["value"]["enabled"], true, "{s}");
    assert_eq!(tr["provenance"]["source"], "policy");
    assert_eq!(tr["provenance"]["locked"], true);
    assert_eq!(tr["provenance"]["policy"], "Riposte policy (A)");
    let text = admin.ok(&["device", "settings", "dev-one"]);
    assert!(
        text.contains("Riposte policy (A) (enforced, locked)"),
        "{text}"
    );
    // The policy itself, as text without --json.
    let text = admin.ok(&["policy", "show", "A"]);
    assert!(text.starts_with("Riposte policy (A) (group A)"), "{text}");
    assert!(
        text.contains("Threat Response — Enforce: devices and child policies cannot change it"),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.trim_start().starts_with("actions:")
            && l.contains("quarantine_and_delete, group_ioc_scan")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("special password:") && l.ends_with("set")),
        "{text}"
    );
    assert!(!text.contains('{'), "no JSON: {text}");
    // The agent received the settings.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut st = serde_json::Value::Null;
    while Instant::now() < deadline {
        let out = Command::new(bin())
            .args(["agent", "--data"])
            .arg(&adir)
            .args(["status", "--json"])
            .output()
            .unwrap();
        st = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if st["settings"]["threat_response"]["value"]["enabled"] == true {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        st["settings"]["threat_response"]["value"]["enabled"], true,
        "{st}"
    );
    // The text says where each settings group comes from.
    let out = Command::new(bin())
        .args(["agent", "--data"])
        .arg(&adir)
        .arg("status")
        .output()
        .unwrap();
    assert!(out.status.success(), "a running agent's status exits 0");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("threat response: on [")
            && text.contains("from Riposte policy (A) (enforced, locked)"),
        "{text}"
    );
    assert!(text.contains("sandbox integration: "), "{text}");
    // When the device certificate must be renewed by: a year on, as enrollment issued it.
    let expires = st["certificate_expires_ms"].as_i64().expect("an expiry");
    assert!(
        text.contains(&format!(
            "certificate: valid until {}",
            riposte_model::time::utc(expires)
        )),
        "{text}"
    );
    assert!(!text.contains("renewed one waits"), "{text}");

    // Tasks: create, show, cancel.
    let ioc = tmp.path().join("x.ioc");
    std::fs::write(
        &ioc,
        "<OpenIOC xmlns=\"http://openioc.org/schemas/OpenIOC_1.1\" id=\"t\" last-modified=\"2020-01-01T00:00:00Z\" published-date=\"2020-01-01T00:00:00Z\"><metadata><short_description>t</short_description><authored_date>2020-01-01T00:00:00Z</authored_date></metadata><criteria><Indicator operator=\"OR\" id=\"o\"><IndicatorItem id=\"i\" condition=\"is\" preserve-case=\"false\" negate=\"false\"><Context document=\"FileItem\" search=\"FileItem/FileName\" type=\"mir\"/><Content type=\"string\">no-such-file.bin</Content></IndicatorItem></Indicator></criteria></OpenIOC>",
    )
    .unwrap();
    // Several files after one --ioc, as `riposte scan` takes them.
    let ioc2 = tmp.path().join("t2.ioc");
    std::fs::write(
        &ioc2,
        std::fs::read_to_string(&ioc)
            .unwrap()
            .replace("id=\"t\"", "id=\"t2\""),
    )
    .unwrap();
    let t = admin.json(&[
        "task",
        "create",
        "--group",
        "A",
        "--ioc",
        ioc.to_str().unwrap(),
        ioc2.to_str().unwrap(),
    ]);
    let id = t["id"].as_i64().unwrap().to_string();
    let show = admin.json(&["task", "show", &id]);
    assert_eq!(show["devices"].as_array().unwrap().len(), 1, "{show}");
    assert_eq!(admin.json(&["task", "list"]).as_array().unwrap().len(), 1);
    // The device may have finished the task already: then there is nothing to cancel.
    let (code, _, err) = admin.run(&["task", "cancel", &id]);
    let cancelled = code == 0;
    assert!(
        cancelled || err.contains("already finished on every device"),
        "{err}"
    );
    let (code, _, err) = admin.run(&["task", "cancel", &id]);
    assert_eq!(code, 2, "a second cancel is refused: {err}");
    assert!(err.contains("already"), "{err}");
    let (code, _, err) = admin.run(&["task", "show", "999999"]);
    assert_ne!(code, 0);
    assert!(err.contains("no task with id 999999"), "{err}");

    // Moving the device takes it out from under the policy.
    admin.ok(&["device", "move", "dev-one", "--group", "Managed devices"]);
    let s = admin.json(&["device", "settings", "dev-one"]);
    assert_eq!(
        s["effective"]["threat_response"]["provenance"]["source"], "default",
        "{s}"
    );

    let audit = admin.json(&["audit", "list", "--limit", "1000"]);
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["action"].as_str())
        .collect();
    for want in [
        "group_create",
        "special_account_create",
        "policy_set",
        "task_create",
        "device_move",
        "device_enroll",
    ] {
        assert!(actions.contains(&want), "audit lacks {want}: {actions:?}");
    }
    assert_eq!(actions.contains(&"task_cancel"), cancelled, "{actions:?}");
    assert!(!audit.to_string().contains("s3cret-pass"));

    // Wrong password: clear error, non-zero exit.
    let bad = tmp.path().join("bad.pw");
    std::fs::write(&bad, "nope").unwrap();
    let out = Command::new(bin())
        .args(["admin", "--server", &url, "--ca"])
        .arg(sdir.join("ca.pem"))
        .args(["--password-file"])
        .arg(&bad)
        .args(["group", "list"])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong user name or password"));

    // A command logs out after itself: no session is left behind in the database.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = rt
        .block_on(riposte_store::Store::open_sqlite_in(&sdir))
        .unwrap();
    let sessions = || {
        rt.block_on(store.delete_expired_sessions(i64::MAX))
            .unwrap()
    };
    sessions(); // the earlier ones, among them a listing cut off by its reader
    admin.ok(&["group", "list"]);
    assert_eq!(sessions(), 0, "a session left open by an admin command");

    // A restart of the server keeps everything.
    // The cancel stopped the device's sweep, unless the device (sweeping the names
    // of this machine's files, a fraction of a second) had already finished it.
    let shown = admin.json(&["task", "show", &id]);
    assert_eq!(shown["task"]["cancelled"], cancelled, "{shown}");
    let before = shown["devices"][0]["state"].clone();
    assert!(
        ["cancelled", "failed", "completed"].contains(&before.as_str().unwrap_or_default()),
        "{before}"
    );
    // It now issues device certificates for 30 days: the agent's year-long one is
    // renewed over the channel, stored with its new key, and the agent stays connected.
    let old_key = std::fs::read(adir.join("device.key")).unwrap();
    drop(server);
    let (_server, _) = start_server_args(&sdir, &pwfile, &listen, &["--device-cert-days", "30"]);
    assert_eq!(admin.json(&["group", "list"]).as_array().unwrap().len(), 3);
    assert_eq!(
        admin.json(&["task", "show", &id])["devices"][0]["state"],
        before
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let renewed = || {
        std::fs::read(adir.join("device.key")).unwrap() != old_key
            && admin.json(&["device", "list"])[0]["connected"] == true
            && admin
                .ok(&["audit", "list"])
                .contains("device_certificate_renewed")
    };
    while !renewed() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(renewed(), "{}", admin.ok(&["audit", "list"]));
    // The text table says when as people read it (`--json` keeps milliseconds).
    let text = admin.ok(&["audit", "list"]);
    assert!(text.contains(" UTC"), "{text}");
    assert!(!adir.join("renewal.json").exists());
    let mode = std::fs::metadata(adir.join("device.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the renewed key is private");
    // A second agent on the same data directory is refused, and the first one keeps
    // its control socket.
    let second = Command::new(bin())
        .args(["agent", "--data"])
        .arg(&adir)
        .output()
        .unwrap();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("another agent is running"), "{err}");
    let still = Command::new(bin())
        .args(["agent", "--data"])
        .arg(&adir)
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert_eq!(
        still.status.code(),
        Some(0),
        "the first agent still answers"
    );
    // A stopped agent is connected to nothing, whatever its state file last said.
    drop(_agent);
    let out = Command::new(bin())
        .args(["agent", "--data"])
        .arg(&adir)
        .args(["status", "--json"])
        .output()
        .unwrap();
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["connected"], false, "{st}");
    assert_eq!(st["running"], false, "{st}");
    assert!(st["link"].as_str().unwrap().contains("not running"), "{st}");
    assert_eq!(
        out.status.code(),
        Some(3),
        "status exits 3 for an agent not running"
    );
}

#[test]
fn every_subcommand_answers_help() {
    for sub in ["server", "agent", "sandbox", "scan", "admin", "up"] {
        let help = Command::new(bin()).args([sub, "--help"]).output().unwrap();
        assert!(help.status.success(), "{sub}");
        assert!(
            String::from_utf8_lossy(&help.stdout).contains("Usage: riposte"),
            "{sub}"
        );
    }
}

/// More sweep threads than the descriptor limit holds would make files unreadable
/// (`EMFILE`) instead of swept: the sweep runs only as many as fit.
#[test]
fn scan_under_a_low_descriptor_limit_still_reads_every_file() {
    use sha2::Digest;
    use std::os::unix::process::CommandExt;
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    for i in 0..2000 {
        let dir = tree.join(format!("d{}", i % 40));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("f{i}")), format!("file {i}")).unwrap();
    }
    let sha = hex::encode(sha2::Sha256::digest(b"file 123"));
    let ioc = tmp.path().join("one.ioc");
    std::fs::write(
        &ioc,
        format!(
            r#"<OpenIOC xmlns="http://openioc.org/schemas/OpenIOC_1.1" id="one" last-modified="2020-01-01T00:00:00Z" published-date="2020-01-01T00:00:00Z"><metadata><short_description>one</short_description><authored_date>2020-01-01T00:00:00Z</authored_date></metadata><criteria><Indicator operator="OR" id="o"><IndicatorItem id="i" condition="is" preserve-case="false" negate="false"><Context document="FileItem" search="FileItem/Sha256sum" type="mir"/><Content type="sha256">{sha}</Content></IndicatorItem></Indicator></criteria></OpenIOC>"#
        ),
    )
    .unwrap();
    let mut cmd = Command::new(bin());
    cmd.args(["scan", "--json", "--threads", "8", "--ioc"])
        .arg(&ioc)
        .arg("--")
        .arg(&tree);
    // SAFETY: only setrlimit, which is async-signal-safe, runs in the child before exec.
    unsafe {
        cmd.pre_exec(|| {
            let rl = libc::rlimit {
                rlim_cur: 64,
                rlim_max: 64,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert_eq!(report["unreadable"], serde_json::json!([]), "{report}");
    assert_eq!(report["stats"]["files_read"], 2000, "{report}");
    assert_eq!(report["hits"].as_array().unwrap().len(), 1, "{report}");
}

/// An error quoting a document (here an indicator id with a line break and a terminal
/// escape) is escaped on standard error: the document cannot fake a line there.
#[test]
fn scan_errors_escape_what_the_documents_say() {
    let tmp = tempfile::tempdir().unwrap();
    let doc = tmp.path().join("r1.json");
    std::fs::write(
        &doc,
        r#"{"type":"indicator","id":"indicator--x\nHIT fake [indicator--evil] (feed.json)\u001b[2J","pattern":"[file:name = 'a']","revoked":true}"#,
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["scan", "--stix"])
        .arg(&doc)
        .arg(tmp.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("is revoked by its producer"), "{err}");
    assert!(err.contains(r"indicator--x\x0aHIT fake"), "{err}");
    assert!(!err.contains('\u{1b}'), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

/// `riposte scan --yara rules/main.yar`, run from another folder, finds the files the
/// rule file includes beside it (as `yara` does), and their rules hit.
#[test]
fn scan_yara_includes_resolve_beside_the_rule_file() {
    let tmp = tempfile::tempdir().unwrap();
    let rules = tmp.path().join("rules");
    std::fs::create_dir_all(rules.join("families")).unwrap();
    std::fs::write(rules.join("main.yar"), "include \"families/dropper.yar\"\n").unwrap();
    std::fs::write(
        rules.join("families/dropper.yar"),
        "rule dropper { strings: $s = \"riposte-included-marker\" condition: $s }\n",
    )
    .unwrap();
    let tree = tmp.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("x.bin"), b"..riposte-included-marker..").unwrap();
    std::fs::write(tree.join("y.bin"), b"nothing").unwrap();
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let out = Command::new(bin())
        .current_dir(&elsewhere)
        .args(["scan", "--json", "--no-system-items", "--yara"])
        .arg(rules.join("main.yar"))
        .arg(&tree)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(out.status.code(), Some(1), "{report}");
    let hits = report["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 1, "{report}");
    assert!(hits[0].to_string().contains("x.bin"), "{report}");
}

/// A reader that goes away (`riposte scan --json … | head`) still gets the answer in
/// the exit code, with no error: as grep does.
#[test]
fn scan_into_a_closed_pipe_still_exits_with_its_answer() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("evil.exe"), b"x").unwrap();
    let ioc = tmp.path().join("name.ioc");
    std::fs::write(
        &ioc,
        r#"<OpenIOC xmlns="http://openioc.org/schemas/OpenIOC_1.1" id="n" last-modified="2020-01-01T00:00:00Z" published-date="2020-01-01T00:00:00Z"><metadata><short_description>n</short_description><authored_date>2020-01-01T00:00:00Z</authored_date></metadata><criteria><Indicator operator="OR" id="o"><IndicatorItem id="i" condition="is" preserve-case="false" negate="false"><Context document="FileItem" search="FileItem/FileName" type="mir"/><Content type="string">evil.exe</Content></IndicatorItem></Indicator></criteria></OpenIOC>"#,
    )
    .unwrap();
    for json in [true, false] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let mut cmd = Command::new(bin());
        cmd.args(["scan", "--no-system-items"]);
        if json {
            cmd.arg("--json");
        }
        let out = cmd
            .arg("--ioc")
            .arg(&ioc)
            .arg(tmp.path())
            .stdout(writer)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "json {json}: {err}");
        assert!(!err.contains("Broken pipe"), "json {json}: {err}");
    }
}

#[test]
fn a_task_sweeps_the_agent_host_root_and_reports_hits() {
    let tmp = tempfile::tempdir().unwrap();
    let (_server, admin) = server_and_admin(tmp.path());
    let sdir = tmp.path().join("server");
    let url = admin.url.clone();
    admin.ok(&["group", "create", "G"]);
    let token = admin
        .ok(&["enroll-token", "create", "--group", "G"])
        .trim()
        .to_string();

    // The device's file system: one planted threat among ordinary files.
    let root = tmp.path().join("root");
    std::fs::create_dir_all(root.join("home/u")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    let threat = b"riposte test threat: not really malicious".to_vec();
    std::fs::write(root.join("home/u/evil.bin"), &threat).unwrap();
    std::fs::write(root.join("home/u/ok.txt"), b"hello").unwrap();
    use sha2::Digest;
    let sha = hex::encode(sha2::Sha256::digest(&threat));
    let ioc = riposte_ioc::generate::ioc_from_detection(&riposte_ioc::generate::Detection {
        id: "t1".into(),
        name: "test threat".into(),
        description: "planted".into(),
        author: "test".into(),
        time: 0,
        objects: vec![riposte_ioc::generate::DetectedObject {
            size: Some(threat.len() as u64),
            md5: None,
            sha1: None,
            sha256: Some(sha),
            name: None,
        }],
    });
    let iocfile = tmp.path().join("threat.ioc");
    std::fs::write(&iocfile, ioc).unwrap();

    let _agent = Proc(
        Command::new(bin())
            .args(["agent", "--server", &url, "--ca"])
            .arg(sdir.join("ca.pem"))
            .args(["--enroll-token", &token, "--name", "swept", "--data"])
            .arg(tmp.path().join("agent"))
            .arg("--host-root")
            .arg(&root)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline && admin.json(&["device", "list"])[0]["connected"] != true {
        std::thread::sleep(Duration::from_millis(200));
    }
    let t = admin.json(&[
        "task",
        "create",
        "--group",
        "G",
        "--ioc",
        iocfile.to_str().unwrap(),
    ]);
    let id = t["id"].as_i64().unwrap().to_string();
    let mut show = serde_json::Value::Null;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        show = admin.json(&["task", "show", &id]);
        if show["devices"][0]["state"] == "completed" || show["devices"][0]["state"] == "failed" {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let dev = &show["devices"][0];
    assert_eq!(dev["state"], "completed", "{show}");
    assert_eq!(dev["hits"], 1, "{show}");
    assert_eq!(
        dev["results"]["hit_files"],
        serde_json::json!(["/home/u/evil.bin"]),
        "device paths, not host paths"
    );
}

/// `admin device list` pages through the API: a fleet has more devices than one answer
/// holds (it stopped at the first 1,000 without a word).
#[test]
fn device_list_shows_every_device_of_a_large_fleet() {
    let tmp = tempfile::tempdir().unwrap();
    let (_server, admin) = server_and_admin(tmp.path());
    let sdir = tmp.path().join("server");
    let token = admin
        .ok(&[
            "enroll-token",
            "create",
            "--group",
            "Managed devices",
            "--uses",
            "1005",
        ])
        .trim()
        .to_string();
    // 1,005 devices straight into the server's database (enrolling each through the
    // API would sign 1,005 certificates).
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = riposte_store::Store::open_sqlite_in(&sdir).await.unwrap();
        let hash = riposte_server::secrets::token_hash(&token);
        for i in 0..1005 {
            let name = format!("bulk-{i:04}");
            store
                .enroll_device(&hash, &name, &name, &format!("fp{i}"))
                .await
                .unwrap()
                .unwrap();
        }
        store.close().await;
    });
    let listed = admin.json(&["device", "list"]);
    let names: std::collections::BTreeSet<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["name"].as_str())
        .collect();
    assert_eq!(names.len(), 1005);
    assert!(names.contains("bulk-0000") && names.contains("bulk-1004"));
}

/// Writes `DIR/ID.ioc`, an OpenIOC 1.1 document whose one term is `SEARCH is VALUE`
/// (of content type `TYPE`), and returns its path.
fn one_term_ioc(
    dir: &std::path::Path,
    id: &str,
    search: &str,
    content_type: &str,
    value: &str,
) -> std::path::PathBuf {
    let document = search.split('/').next().unwrap_or(search);
    let path = dir.join(format!("{id}.ioc"));
    std::fs::write(
        &path,
        format!(
            r#"<OpenIOC xmlns="http://openioc.org/schemas/OpenIOC_1.1" id="{id}" last-modified="2020-01-01T00:00:00Z" published-date="2020-01-01T00:00:00Z"><metadata><short_description>{id}</short_description><authored_date>2020-01-01T00:00:00Z</authored_date></metadata><criteria><Indicator operator="OR" id="o"><IndicatorItem id="i" condition="is" preserve-case="false" negate="false"><Context document="{document}" search="{search}" type="mir"/><Content type="{content_type}">{value}</Content></IndicatorItem></Indicator></criteria></OpenIOC>"#
        ),
    )
    .unwrap();
    path
}

/// A folder `nobody` may enter, for a test that runs a scan as `nobody`; `None` (the test
/// skipped, and said so) where the tests do not run as root.
fn tempdir_for_nobody() -> Option<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to run the scan as another user");
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    Some(tmp)
}

/// The JSON report a `scan --json` printed (its error output in the panic otherwise).
fn json_report(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)))
}

/// The verdict a scan report gives indicator `id`, if it lists it.
fn verdict_of(report: &serde_json::Value, id: &str) -> Option<serde_json::Value> {
    report["iocs"]
        .as_array()?
        .iter()
        .find(|i| i["id"] == id)
        .map(|i| i["verdict"].clone())
}

/// Runs `cmd` as `nobody` (uid and gid 65534, no supplementary groups): a sweep without
/// root, from a test that runs as root.
fn as_nobody(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: only async-signal-safe calls run in the child before exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setresgid(65534, 65534, 65534) != 0
                || libc::setresuid(65534, 65534, 65534) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A directory the sweep cannot list (run as `nobody`, here one of mode 0000) leaves
/// an indicator of files that found nothing undetermined, not "no match": what it
/// looks for may be in there. What could be read is still judged.
#[test]
fn scan_of_a_tree_with_an_unlistable_directory_is_undetermined() {
    use std::os::unix::fs::PermissionsExt;
    let Some(tmp) = tempdir_for_nobody() else {
        return;
    };
    let tree = tmp.path().join("tree");
    std::fs::create_dir_all(tree.join("closed")).unwrap();
    std::fs::write(tree.join("closed/inner.txt"), b"x").unwrap();
    std::fs::write(tree.join("open.txt"), b"o").unwrap();
    std::fs::set_permissions(tree.join("closed"), std::fs::Permissions::from_mode(0o000)).unwrap();
    let doc =
        |id: &str, name: &str| one_term_ioc(tmp.path(), id, "FileItem/FileName", "string", name);
    let (inner, open) = (doc("inner", "inner.txt"), doc("open", "open.txt"));
    let mut cmd = Command::new(bin());
    cmd.args(["scan", "--json", "--no-system-items", "--ioc"])
        .arg(&inner)
        .arg(&open)
        .arg("--")
        .arg(&tree);
    as_nobody(&mut cmd);
    let out = cmd.output().unwrap();
    std::fs::set_permissions(tree.join("closed"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let report = json_report(&out);
    let verdict = |id: &str| verdict_of(&report, id);
    assert_eq!(
        verdict("inner"),
        Some(serde_json::json!("undetermined")),
        "{report}"
    );
    assert_eq!(verdict("open"), Some(serde_json::json!("hit")), "{report}");
    assert!(
        report["unreadable"].to_string().contains("/closed"),
        "{report}"
    );
}

/// Service units in a folder the sweep cannot read (run as `nobody`: a user's home it
/// may not enter) are unknown, not absent: a service indicator that found nothing is
/// undetermined and a warning names the folder; one that found its unit still hits. A
/// unit whose drop-in folder cannot be read runs what that folder may say: its program
/// and mode are unknown. An enabling folder that cannot be read leaves unknown whether
/// a unit not found enabled is. As root, the same image is read whole.
#[test]
fn service_units_that_cannot_be_read_are_unknown_not_absent() {
    use std::os::unix::fs::PermissionsExt;
    let Some(tmp) = tempdir_for_nobody() else {
        return;
    };
    let image = tmp.path().join("image");
    let write = |path: &str, text: &str| {
        let path = image.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    // A home that is not there, and one that is a file, hide nothing.
    write(
        "etc/passwd",
        "u:x:1000:1000::/home/u:/bin/sh\n\
         nobody:x:65534:65534::/nonexistent:/bin/false\n\
         f:x:1001:1001::/etc/hosts:/bin/sh\n",
    );
    write("etc/hosts", "");
    write(
        "etc/systemd/system/good.service",
        "[Service]\nExecStart=/usr/bin/good\n",
    );
    write(
        "home/u/.config/systemd/user/evil.service",
        "[Service]\nExecStart=/home/u/.evil\n[Install]\nWantedBy=default.target\n",
    );
    let mode = |path: &str, mode: u32| {
        std::fs::set_permissions(image.join(path), std::fs::Permissions::from_mode(mode)).unwrap()
    };
    let doc =
        |id: &str, search: &str, value: &str| one_term_ioc(tmp.path(), id, search, "string", value);
    let docs = [
        doc("good", "ServiceItem/name", "good.service"),
        doc("evil", "ServiceItem/name", "evil.service"),
        doc("program", "ServiceItem/serviceDLL", "/usr/bin/other"),
        doc("static", "ServiceItem/mode", "static"),
    ];
    let scan = |nobody: bool| {
        let mut cmd = Command::new(bin());
        cmd.args(["scan", "--json", "--host-root"]).arg(&image);
        for d in &docs {
            cmd.arg("--ioc").arg(d);
        }
        cmd.arg("--").arg("/etc/hosts");
        if nobody {
            as_nobody(&mut cmd);
        }
        json_report(&cmd.output().unwrap())
    };
    let verdict = |report: &serde_json::Value, id: &str| {
        verdict_of(report, id)
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| panic!("no verdict for {id}: {report}"))
    };
    let verdicts = |report: &serde_json::Value| -> Vec<String> {
        ["good", "evil", "program", "static"]
            .iter()
            .map(|id| verdict(report, id))
            .collect()
    };

    let root = scan(false);
    assert_eq!(verdicts(&root), ["hit", "hit", "no_match", "hit"], "{root}");
    assert_eq!(root["warnings"], serde_json::json!([]), "{root}");

    // As `nobody`, with `path` closed to it (mode `closed`), then opened again.
    let scan_closed = |path: &str, closed: u32| {
        mode(path, closed);
        let report = scan(true);
        mode(path, 0o755);
        report
    };
    let report = scan_closed("home/u", 0o700);
    assert_eq!(
        verdicts(&report),
        ["hit", "undetermined", "undetermined", "hit"],
        "{report}"
    );
    let warnings = report["warnings"].to_string();
    assert!(
        warnings.contains("/home/u/.config/systemd/user") && warnings.contains("as root"),
        "{report}"
    );
    assert!(
        !warnings.contains("nonexistent") && !warnings.contains("hosts"),
        "{report}"
    );

    // A drop-in folder the sweep cannot read: what it may say is unknown for that unit
    // alone, and no place is said unread.
    write("etc/systemd/system/good.service.d/x.conf", "");
    let report = scan_closed("etc/systemd/system/good.service.d", 0o000);
    assert_eq!(
        verdicts(&report),
        ["hit", "hit", "undetermined", "undetermined"],
        "{report}"
    );
    assert_eq!(report["warnings"], serde_json::json!([]), "{report}");

    // An enabling folder the sweep cannot read: a unit not found enabled may be, and
    // its links may name template instances, which are services too.
    std::fs::create_dir_all(image.join("etc/systemd/system/multi-user.target.wants")).unwrap();
    let report = scan_closed("etc/systemd/system/multi-user.target.wants", 0o000);
    assert_eq!(
        verdicts(&report),
        ["hit", "hit", "undetermined", "undetermined"],
        "{report}"
    );

    // As root, a user's drop-in changes what a unit every user has runs for that user.
    write(
        "usr/lib/systemd/user/pw.service",
        "[Service]\nExecStart=/usr/bin/pw\n",
    );
    write(
        "home/u/.config/systemd/user/pw.service.d/x.conf",
        "[Service]\nExecStart=\nExecStart=/usr/bin/other\n",
    );
    assert_eq!(verdict(&scan(false), "program"), "hit");
    std::fs::remove_dir_all(image.join("home/u/.config/systemd/user/pw.service.d")).unwrap();

    // Accounts the sweep cannot read hide the users' own units.
    let report = scan_closed("etc/passwd", 0o600);
    assert_eq!(verdict(&report, "evil"), "undetermined", "{report}");
    assert!(
        report["warnings"].to_string().contains("/etc/passwd"),
        "{report}"
    );

    // A unit directory above the one a unit was found in, which the sweep cannot read,
    // may hold the file that wins or a drop-in: what the unit runs is unknown, even
    // where the file found would be a hit.
    write(
        "usr/lib/systemd/system/shadowed.service",
        "[Service]\nExecStart=/usr/bin/other\n",
    );
    let report = scan_closed("etc/systemd/system", 0o000);
    assert_eq!(verdict(&report, "program"), "undetermined", "{report}");
    assert_eq!(verdict(&scan(false), "program"), "hit");
}

/// `--host-root` naming an image (no `/proc` mounted in it): this machine's processes
/// are not the image's, so a process term is undetermined, not a hit on the scanning
/// machine's own processes; users still come from the image. A host root that is not
/// there is said to be so.
#[test]
fn scan_of_an_image_does_not_take_this_machines_processes_for_its_own() {
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("image");
    std::fs::create_dir_all(image.join("etc")).unwrap();
    std::fs::create_dir_all(image.join("home/eve")).unwrap();
    std::fs::write(
        image.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\neve:x:1000:1000:Eve,,,:/home/eve:/bin/sh\n",
    )
    .unwrap();
    let doc =
        |id: &str, search: &str, value: &str| one_term_ioc(tmp.path(), id, search, "string", value);
    // The test's own process runs on this machine, not in the image.
    let me = std::process::id().to_string();
    let process = doc("process", "ProcessItem/pid", &me);
    let user = doc("user", "UserItem/Username", "eve");
    // The full name is the comment field's first part (`Eve,,,` as adduser writes it).
    let full_name = doc("full-name", "UserItem/fullname", "Eve");
    // Nor are this machine's addresses the image's.
    let address = doc("address", "SystemInfoItem/ipAddress", "127.0.0.1");
    let out = Command::new(bin())
        .args(["scan", "--json", "--host-root"])
        .arg(&image)
        .arg("--ioc")
        .arg(&process)
        .arg(&user)
        .arg(&full_name)
        .arg(&address)
        .args(["--", "/home"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let ioc = |id: &str| {
        report["iocs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(ioc("process")["verdict"], "undetermined", "{report}");
    assert!(
        ioc("process")["undetermined_because"]
            .to_string()
            .contains("is not a live system"),
        "{report}"
    );
    assert_eq!(ioc("user")["verdict"], "hit", "{report}");
    assert_eq!(ioc("full-name")["verdict"], "hit", "{report}");
    assert_eq!(ioc("address")["verdict"], "undetermined", "{report}");

    // An image without etc/passwd: its accounts are unknown, not "none".
    let bare = tmp.path().join("bare");
    std::fs::create_dir_all(bare.join("home")).unwrap();
    let out = Command::new(bin())
        .args(["scan", "--json", "--host-root"])
        .arg(&bare)
        .arg("--ioc")
        .arg(&user)
        .args(["--", "/home"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(report["iocs"][0]["verdict"], "undetermined", "{report}");
    assert!(
        report["iocs"][0]["undetermined_because"]
            .to_string()
            .contains("has no etc/passwd"),
        "{report}"
    );

    let out = Command::new(bin())
        .args(["scan", "--host-root"])
        .arg(tmp.path().join("no-such-image"))
        .arg("--ioc")
        .arg(&user)
        .args(["--", "/home"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--host-root ") && err.contains("no-such-image: No such file"),
        "{err}"
    );
}

/// Ctrl-C (here `SIGINT`) stops a sweep with its report, marked cancelled, and exit 2
/// when it found nothing: an unfinished sweep is not "no hit".
#[test]
fn an_interrupted_scan_reports_what_it_looked_at() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    // Sparse files: seconds of hashing, no disk.
    for i in 0..400 {
        let f = std::fs::File::create(tree.join(format!("zeros{i}"))).unwrap();
        f.set_len(32 << 20).unwrap();
    }
    let ioc = one_term_ioc(
        tmp.path(),
        "h",
        "FileItem/Sha256sum",
        "sha256",
        &"0".repeat(64),
    );
    let child = Command::new(bin())
        .args([
            "scan",
            "--json",
            "--no-system-items",
            "--threads",
            "1",
            "--ioc",
        ])
        .arg(&ioc)
        .arg("--")
        .arg(&tree)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    // SAFETY: a signal to the child this test started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {err}"));
    assert_eq!(report["cancelled"], true, "{report}");
    assert!(
        report["stats"]["files_read"].as_u64().unwrap() < 400,
        "{report}"
    );
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    // The files being hashed when it stopped are not "unreadable": nothing is wrong
    // with them.
    assert_eq!(report["unreadable"], serde_json::json!([]), "{report}");
}

/// `admin account password` changes the caller's own password (the current one is
/// `--password-file`'s); `admin account set-password` sets another account's, and is
/// refused for one's own account and for the special account.
#[test]
fn account_passwords_are_changed_and_set_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let (_server, admin) = server_and_admin(tmp.path());
    let file = |name: &str, content: &str| {
        let p = tmp.path().join(name);
        std::fs::write(&p, format!("{content}\n")).unwrap();
        p
    };
    let first = file("oper-1.pw", "first-password-1");
    let second = file("oper-2.pw", "second-password-2");
    let third = file("oper-3.pw", "third-password-3");
    let as_oper = |pw: &std::path::Path, args: &[&str]| {
        let out = Command::new(bin())
            .args(["admin", "--server", &admin.url, "--ca"])
            .arg(&admin.ca)
            .args(["--user", "oper", "--password-file"])
            .arg(pw)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    admin.ok(&[
        "account",
        "create",
        "oper",
        "--role",
        "operator",
        "--password-file",
        first.to_str().unwrap(),
    ]);
    let (code, out, err) = as_oper(
        &first,
        &[
            "account",
            "password",
            "--new-password-file",
            second.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("password of 'oper' changed"), "{out}");
    let (code, _, err) = as_oper(&first, &["account", "list"]);
    assert_ne!(code, 0);
    assert!(err.contains("wrong user name or password"), "{err}");
    let (code, _, err) = as_oper(&second, &["account", "list"]);
    assert_eq!(code, 0, "{err}");
    // An operator may not set another's password.
    let (code, _, err) = as_oper(
        &second,
        &[
            "account",
            "set-password",
            "admin",
            "--password-file",
            third.to_str().unwrap(),
        ],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("may not create or delete accounts, or set"),
        "{err}"
    );

    let out = admin.ok(&[
        "account",
        "set-password",
        "oper",
        "--password-file",
        third.to_str().unwrap(),
    ]);
    assert!(out.contains("password of 'oper' set"), "{out}");
    let (code, _, err) = as_oper(&second, &["account", "list"]);
    assert_ne!(code, 0, "the old password no longer opens anything: {err}");
    let (code, _, err) = as_oper(&third, &["account", "list"]);
    assert_eq!(code, 0, "{err}");
    for (name, says) in [
        ("admin", "give the current one"),
        ("riposte-autonomous", "can never be changed"),
    ] {
        let (code, _, err) = admin.run(&[
            "account",
            "set-password",
            name,
            "--password-file",
            third.to_str().unwrap(),
        ]);
        assert_ne!(code, 0, "{name}");
        assert!(err.contains(says), "{name}: {err}");
    }
}

/// `riposte server --data DIR reset-password NAME` sets an administrator's password in
/// the database, the server running: the way back in when no one remembers one. A data
/// directory without a database is refused, and nothing is created there.
#[test]
fn a_forgotten_administrator_password_is_reset_on_the_server_machine() {
    let tmp = tempfile::tempdir().unwrap();
    let (_server, admin) = server_and_admin(tmp.path());
    let sdir = tmp.path().join("server");
    let new = tmp.path().join("new.pw");
    std::fs::write(&new, "a-password-set-offline\n").unwrap();
    let reset = |data: &std::path::Path, name: &str| {
        let out = Command::new(bin())
            .args(["server", "--data"])
            .arg(data)
            .args(["reset-password", name, "--password-file"])
            .arg(&new)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, out, err) = reset(&sdir, "admin");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("password of 'admin' reset"), "{out}");
    let (code, _, err) = admin.run(&["account", "list"]);
    assert_ne!(code, 0, "the old password opens nothing: {err}");
    let renewed = Admin {
        url: admin.url.clone(),
        ca: admin.ca.clone(),
        pwfile: new.clone(),
    };
    let audit = renewed.json(&["audit", "list"]);
    let row = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["action"] == "account_password_set")
        .expect("the reset is audited");
    assert_eq!(row["actor"], "server (offline reset)", "{row}");

    let (code, _, err) = reset(&sdir, "nobody");
    assert_ne!(code, 0);
    assert!(
        err.contains("no administrator account named 'nobody'"),
        "{err}"
    );
    let (code, _, err) = reset(&sdir, "riposte-autonomous");
    assert_ne!(code, 0);
    assert!(err.contains("can never be changed"), "{err}");
    let elsewhere = tmp.path().join("not-a-server");
    std::fs::create_dir(&elsewhere).unwrap();
    let (code, _, err) = reset(&elsewhere, "admin");
    assert_ne!(code, 0);
    assert!(err.contains("holds no server database"), "{err}");
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
}

/// `agent status` on a data directory that is not there says so, rather than calling
/// the agent not enrolled.
#[test]
fn agent_status_of_a_missing_data_directory_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .args(["agent", "--data"])
        .arg(tmp.path().join("no-such-agent"))
        .arg("status")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no agent data in") && err.contains("no-such-agent"),
        "{err}"
    );
}

/// A misspelt `--actions` is said before anything else is tried: here no CA file, no
/// password file and no server exist, and the answer is still about the action.
#[test]
fn a_misspelt_action_is_said_before_the_login() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .args(["admin", "--server", "https://127.0.0.1:9", "--ca"])
        .arg(tmp.path().join("no-ca.pem"))
        .args(["--user", "admin", "--password-file"])
        .arg(tmp.path().join("no-password"))
        .args([
            "policy",
            "set",
            "Finance",
            "--actions",
            "quarantine_and_delte",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--actions") && err.contains("quarantine_and_delte"),
        "{err}"
    );
}

/// Swept without root, the owner of another user's socket cannot be read: a term on it
/// is undetermined, negated or not, rather than a hit of `process isnot …` or a miss of
/// `process is …`. The port itself is still seen.
#[test]
fn a_port_whose_owner_cannot_be_read_is_undetermined() {
    let Some(tmp) = tempdir_for_nobody() else {
        return;
    };
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    // Held by this test process, which runs as root.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    // Root's process with a name longer than the kernel's 15-byte comm: its program is
    // closed to the sweep, so its name is not known either.
    let long_name = tmp.path().join("averyveryverylongname_sleeper");
    std::fs::copy("/bin/sleep", &long_name).unwrap();
    let mut long = Command::new(&long_name).arg("987.777").spawn().unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let ioc = |id: &str, second: &str| {
        let path = tmp.path().join(format!("{id}.ioc"));
        std::fs::write(
            &path,
            format!(
                r#"<OpenIOC xmlns="http://openioc.org/schemas/OpenIOC_1.1" id="{id}" last-modified="2020-01-01T00:00:00Z" published-date="2020-01-01T00:00:00Z"><metadata><short_description>{id}</short_description><authored_date>2020-01-01T00:00:00Z</authored_date></metadata><criteria><Indicator operator="AND" id="o"><IndicatorItem id="p" condition="is" preserve-case="false" negate="false"><Context document="PortItem" search="PortItem/localPort" type="mir"/><Content type="int">{port}</Content></IndicatorItem>{second}</Indicator></criteria></OpenIOC>"#
            ),
        )
        .unwrap();
        path
    };
    let item = |search: &str, negate: bool, ty: &str, value: &str| {
        format!(
            r#"<IndicatorItem id="x" condition="is" preserve-case="false" negate="{negate}"><Context document="PortItem" search="{search}" type="mir"/><Content type="{ty}">{value}</Content></IndicatorItem>"#
        )
    };
    let docs = [
        ioc(
            "not-named",
            &item("PortItem/process", true, "string", "no-such-program"),
        ),
        ioc(
            "named",
            &item("PortItem/process", false, "string", "no-such-program"),
        ),
        ioc(
            "pid",
            &item(
                "PortItem/pid",
                false,
                "int",
                &std::process::id().to_string(),
            ),
        ),
        ioc("port-alone", ""),
        {
            let path = tmp.path().join("long.ioc");
            std::fs::write(
                &path,
                format!(
                    r#"<OpenIOC xmlns="http://openioc.org/schemas/OpenIOC_1.1" id="long" last-modified="2020-01-01T00:00:00Z" published-date="2020-01-01T00:00:00Z"><metadata><short_description>long</short_description><authored_date>2020-01-01T00:00:00Z</authored_date></metadata><criteria><Indicator operator="AND" id="o"><IndicatorItem id="p" condition="is" preserve-case="false" negate="false"><Context document="ProcessItem" search="ProcessItem/pid" type="mir"/><Content type="int">{}</Content></IndicatorItem><IndicatorItem id="n" condition="is" preserve-case="false" negate="true"><Context document="ProcessItem" search="ProcessItem/name" type="mir"/><Content type="string">averyveryverylongname_sleeper</Content></IndicatorItem></Indicator></criteria></OpenIOC>"#,
                    long.id()
                ),
            )
            .unwrap();
            path
        },
    ];
    let mut cmd = Command::new(bin());
    cmd.args(["scan", "--json", "--ioc"])
        .args(&docs)
        .arg("--")
        .arg(&empty);
    as_nobody(&mut cmd);
    let out = cmd.output().unwrap();
    drop(listener);
    let _ = long.kill();
    let _ = long.wait();
    let report = json_report(&out);
    let verdict = |id: &str| verdict_of(&report, id);
    for id in ["not-named", "named", "pid", "long"] {
        assert_eq!(
            verdict(id),
            Some(serde_json::json!("undetermined")),
            "{id}: {report}"
        );
    }
    assert_eq!(
        verdict("port-alone"),
        Some(serde_json::json!("hit")),
        "{report}"
    );
}
