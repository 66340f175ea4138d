//! Threat response end to end with real processes: one server, three agents in two groups.
//! A verdict on agent 1 quarantines its copy and creates the autonomous IOC scan task; agent 2
//! (same group) finds its copy through the task and quarantines it; agent 3 (other group)
//! keeps its copy and gets no task. On SQLite and on PostgreSQL; and with the special account
//! deleted, the local action still runs and the group action fails with its reason.

mod common;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const THREAT: &[u8] =
    b"#!/bin/sh\n# riposte end-to-end test threat, harmless\necho pwned > /tmp/riposte-e2e\n";
const SPECIAL_PW: &str = "e2e-special-pw";

struct Device {
    data: PathBuf,
    root: PathBuf,
    _proc: Proc,
}

impl Device {
    /// `riposte agent status --json` (null while the agent cannot answer yet).
    fn status(&self) -> Value {
        let out = Command::new(bin())
            .args(["agent", "--data"])
            .arg(&self.data)
            .args(["status", "--json"])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    }

    fn ctl(&self, args: &[&str]) -> Value {
        self.ctl_exiting(args, 0)
    }
    /// `ctl`, expecting exit code `code`.
    fn ctl_exiting(&self, args: &[&str], code: i32) -> Value {
        let out = Command::new(bin())
            .args(["agent", "--data"])
            .arg(&self.data)
            .arg("ctl")
            .args(args)
            .arg("--json")
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(code),
            "ctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
    /// `ctl report-detection` of the planted invoice.sh (the threat every device has),
    /// expecting exit code `code` (1: an action failed).
    fn report_invoice(&self, code: i32) -> Value {
        self.ctl_exiting(
            &[
                "report-detection",
                "--path",
                "/home/alice/Downloads/invoice.sh",
                "--sha256",
                &sha256(THREAT),
                "--threat",
                "Test.Sh.Dropper",
                "--user",
                "alice",
            ],
            code,
        )
    }
    fn threat(&self) -> PathBuf {
        self.root.join("home/alice/Downloads/invoice.sh")
    }
}

fn sha256(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

fn start_agent(tmp: &Path, url: &str, ca: &Path, token: &str, name: &str) -> Device {
    start_agent_with(tmp, url, ca, token, name, &[])
}

/// As `start_agent`, with more `riposte agent` arguments (`--clamd SOCKET`…).
fn start_agent_with(
    tmp: &Path,
    url: &str,
    ca: &Path,
    token: &str,
    name: &str,
    extra: &[&std::ffi::OsStr],
) -> Device {
    let data = tmp.join(format!("{name}-data"));
    let root = tmp.join(format!("{name}-root"));
    std::fs::create_dir_all(root.join("home/alice/Downloads")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(root.join("home/alice/Downloads/invoice.sh"), THREAT).unwrap();
    std::fs::write(root.join("home/alice/notes.txt"), b"nothing to see").unwrap();
    // The token from a file, as the help advises (a command line is visible in `ps`).
    let token_file = tmp.join(format!("{name}.token"));
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let proc = Proc(
        Command::new(bin())
            .args(["agent", "--server", url, "--ca"])
            .arg(ca)
            .arg("--enroll-token-file")
            .arg(&token_file)
            .args(["--name", name, "--data"])
            .arg(&data)
            .arg("--host-root")
            .arg(&root)
            .args(extra)
            .stderr(std::fs::File::create(tmp.join(format!("{name}.log"))).unwrap())
            .spawn()
            .unwrap(),
    );
    // Wait until the control socket answers.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = Command::new(bin())
            .args(["agent", "--data"])
            .arg(&data)
            .args(["ctl", "quarantine", "list", "--json"])
            .output()
            .unwrap();
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "agent {name} did not start: {}\nagent log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(tmp.join(format!("{name}.log"))).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    Device {
        data,
        root,
        _proc: proc,
    }
}

fn wait_connected(admin: &Admin, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let list = admin.json(&["device", "list"]);
        let connected = list
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["connected"] == true)
            .count();
        if connected == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {connected} of {n} agents connected: {list}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until the agent has the settings with group actions (password included).
fn wait_settings(d: &Device) {
    wait_settings_with(d, "group_ioc_scan")
}

/// Waits until the agent's Threat Response settings are on and include `action`.
fn wait_settings_with(d: &Device, action: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let v = d.status();
        let actions = v["settings"]["threat_response"]["value"]["actions"].to_string();
        if v["settings"]["threat_response"]["value"]["enabled"] == true && actions.contains(action)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "settings never reached the agent: {v}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn outcome<'a>(report: &'a Value, action: &str) -> &'a Value {
    report["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["action"] == action)
        .unwrap_or_else(|| panic!("no {action} in {report}"))
}

fn scenario(database: Option<&str>, delete_special: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let sdir = tmp.path().join("server");
    let pwfile = tmp.path().join("admin.pw");
    std::fs::write(&pwfile, "e2e-admin-password\n").unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let (_server, url) = start_server_with(&sdir, &pwfile, &listen, database);
    let ca = sdir.join("ca.pem");
    let admin = Admin {
        url: url.clone(),
        ca: ca.clone(),
        pwfile,
    };
    admin.ok(&["group", "create", "A"]);
    admin.ok(&["group", "create", "B"]);
    let sp = tmp.path().join("special.pw");
    std::fs::write(&sp, SPECIAL_PW).unwrap();
    admin.ok(&[
        "special-account",
        "create",
        "--password-file",
        sp.to_str().unwrap(),
    ]);
    for g in ["A", "B"] {
        admin.ok(&[
            "policy",
            "set",
            g,
            "--threat-response",
            "on",
            "--enforce",
            "--actions",
            "quarantine_and_delete,notify_user,group_ioc_scan,group_ioc_quarantine_and_delete",
            "--special-password-file",
            sp.to_str().unwrap(),
        ]);
    }
    let ta = admin
        .ok(&["enroll-token", "create", "--group", "A", "--uses", "2"])
        .trim()
        .to_string();
    let tb = admin
        .ok(&["enroll-token", "create", "--group", "B"])
        .trim()
        .to_string();
    let d1 = start_agent(tmp.path(), &url, &ca, &ta, "agent1");
    let d2 = start_agent(tmp.path(), &url, &ca, &ta, "agent2");
    let d3 = start_agent(tmp.path(), &url, &ca, &tb, "agent3");
    wait_connected(&admin, 3);
    for d in [&d1, &d2, &d3] {
        wait_settings(d);
    }
    if delete_special {
        admin.ok(&["special-account", "delete"]);
    }

    // The sandbox's verdict on agent 1 (through the control socket, as the sandbox integration does).
    let hash = sha256(THREAT);
    // Without the special account the group action fails, and the command says so.
    let report = d1.ctl_exiting(
        &[
            "report-detection",
            "--path",
            "/home/alice/Downloads/invoice.sh",
            "--sha256",
            &hash,
            "--threat",
            "Test.Sh.Dropper",
            "--user",
            "alice",
            "--source",
            "riposte-sandbox",
        ],
        i32::from(delete_special),
    );
    let q = outcome(&report, "quarantine_and_delete");
    assert_eq!(q["outcome"], "done", "{report}");
    assert!(!d1.threat().exists(), "agent 1's copy is deleted");
    let list = d1.ctl(&["quarantine", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["sha256"], hash.as_str());
    assert_eq!(list[0]["original_path"], "/home/alice/Downloads/invoice.sh");
    let n = outcome(&report, "notify_user");
    assert_eq!(
        n["outcome"], "not_shown",
        "alice has no session on this device: {report}"
    );
    let g = outcome(&report, "group_ioc_scan");
    let detection_id = report["detection"]["detection_id"]
        .as_str()
        .unwrap()
        .to_string();

    if delete_special {
        assert_eq!(g["outcome"], "failed", "{report}");
        // The deletion took the password out of the policy: a device that has its new
        // settings does not try; one that has not yet is refused by the server.
        let detail = g["detail"].as_str().unwrap();
        assert!(
            detail.contains("no special account password in this device's settings")
                || detail.contains("special account does not exist"),
            "{report}"
        );
        // The failure is on the detection's record on the server, and in its audit log.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let det = Command::new(bin())
                .args(["admin", "--server", &url, "--ca"])
                .arg(&ca)
                .args(["--password-file"])
                .arg(&admin.pwfile)
                .args(["--json", "detection", "show", &detection_id])
                .output()
                .unwrap();
            if det.status.success() {
                let det: Value = serde_json::from_slice(&det.stdout).unwrap();
                if det["outcomes"].as_array().map(|a| a.len()) >= Some(3) {
                    // In the device's words, as it reported the outcome.
                    let failed = det["outcomes"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|o| o["action"] == "group_ioc_scan" && o["outcome"] == "failed");
                    let failed = failed.unwrap_or_else(|| panic!("{det}"));
                    assert_eq!(det["group_action_error"], failed["detail"], "{det}");
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "detection record never showed the failure"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        // Without --json, the detection is shown as text, with its actions' outcomes.
        let text = admin.ok(&["detection", "show", &detection_id]);
        assert!(
            text.starts_with(&format!("Detection {detection_id} on device ")),
            "{text}"
        );
        let path = text
            .lines()
            .find_map(|l| l.trim_start().strip_prefix("path:"))
            .map(str::trim);
        assert_eq!(path, Some("/home/alice/Downloads/invoice.sh"), "{text}");
        // Refused by the server (a device without its new settings yet), or not tried
        // (the deletion took the password out of the policy).
        let refused_by_server = text.lines().any(|l| {
            l.trim_start().starts_with("group action error:")
                && l.contains("special account does not exist")
        });
        assert!(
            refused_by_server
                || text.lines().any(|l| l.starts_with("group_ioc_scan")
                    && l.contains("no special account password")),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with("group_ioc_scan") && l.contains("failed")),
            "{text}"
        );
        let audit = admin.json(&["audit", "list", "--limit", "500"]);
        assert_eq!(
            audit
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["action"] == "autonomous_task_refused"),
            refused_by_server,
            "{audit}"
        );
        assert!(admin.json(&["task", "list"]).as_array().unwrap().is_empty());
        assert!(d2.threat().exists() && d3.threat().exists());
        return;
    }

    assert_eq!(g["outcome"], "done", "{report}");
    let tasks = admin.json(&["task", "list"]);
    assert_eq!(tasks.as_array().unwrap().len(), 1, "{tasks}");
    assert_eq!(tasks[0]["autonomous"], true);
    let task_id = tasks[0]["id"].as_i64().unwrap().to_string();

    // Agent 2 finds its copy through the task and quarantines it.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut show;
    loop {
        show = admin.json(&["task", "show", &task_id]);
        let done = show["devices"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["state"] == "completed" || d["state"] == "failed");
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "task did not finish: {show}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let devices = show["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 2, "agents 1 and 2 only: {show}");
    let by_name = |n: &str| {
        devices
            .iter()
            .find(|d| d["device_name"] == n)
            .unwrap_or_else(|| panic!("{n} missing: {show}"))
    };
    assert_eq!(by_name("agent2")["state"], "completed", "{show}");
    assert_eq!(by_name("agent2")["hits"], 1, "{show}");
    assert_eq!(
        by_name("agent2")["results"]["actions"][0]["outcome"],
        "done",
        "{show}"
    );
    assert_eq!(
        by_name("agent1")["hits"],
        0,
        "agent 1's copy was already quarantined: {show}"
    );
    assert!(!d2.threat().exists(), "agent 2's copy is deleted");
    assert_eq!(d2.ctl(&["quarantine", "list"]).as_array().unwrap().len(), 1);
    assert!(
        d2.root.join("home/alice/notes.txt").exists(),
        "nothing else touched"
    );
    // Agent 3 keeps its copy and got no task.
    assert!(d3.threat().exists());
    assert_eq!(std::fs::read(d3.threat()).unwrap(), THREAT);
    let st3 = d3.status();
    assert_eq!(st3["tasks"].as_array().unwrap().len(), 0, "{st3}");

    // Visible through riposte admin --json: the detection with its task and outcomes, and the quarantine.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let dets = admin.json(&["detection", "list"]);
        let det = dets
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == detection_id.as_str())
            .cloned();
        if let Some(det) = det {
            if det["task_id"].as_i64().map(|t| t.to_string()) == Some(task_id.clone())
                && det["outcomes"].as_array().map(|a| a.len()) >= Some(3)
            {
                assert_eq!(det["record"]["sha256"], hash.as_str());
                assert_eq!(det["record"]["user_name"], "alice");
                break;
            }
        }
        assert!(Instant::now() < deadline, "detection not visible: {dets}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while admin
        .json(&["quarantine", "list"])
        .as_array()
        .unwrap()
        .len()
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "the server does not know both quarantined copies"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Restore agent 1's copy from the device: owner and content back at the original path.
    let id = d1.ctl(&["quarantine", "list"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    d1.ctl(&["quarantine", "restore", &id]);
    assert_eq!(std::fs::read(d1.threat()).unwrap(), THREAT);
    // Done by root on the device, and still in the server's audit log.
    let restored = format!("quarantine entry {id} (/home/alice/Downloads/invoice.sh) restored");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !admin
        .json(&["audit", "list", "--limit", "500"])
        .to_string()
        .contains(&restored)
    {
        assert!(
            Instant::now() < deadline,
            "the local restore was never audited"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The restore allowed the content on agent 1: another report of it changes nothing
    // until the allowance is withdrawn.
    assert_eq!(
        d1.ctl(&["allowed", "list"])["allowed"],
        serde_json::json!([hash])
    );
    let again = |d: &Device| {
        Command::new(bin())
            .args(["agent", "--data"])
            .arg(&d.data)
            .args(["ctl", "report-detection", "--path"])
            .args(["/home/alice/Downloads/invoice.sh", "--sha256", &hash])
            .args(["--threat", "Test.Sh.Dropper", "--user", "alice"])
            .output()
            .unwrap()
    };
    let refused = again(&d1);
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("allowed withdraw"), "{why}");
    assert_eq!(std::fs::read(d1.threat()).unwrap(), THREAT);
    assert_eq!(
        d1.ctl(&["allowed", "withdraw", &hash.to_uppercase()])["withdrawn"],
        hash.as_str()
    );
    assert_eq!(
        d1.ctl(&["allowed", "list"])["allowed"],
        serde_json::json!([])
    );
    assert!(again(&d1).status.success());
    assert!(!d1.threat().exists(), "quarantined again once withdrawn");

    // From the administration side: a restore the device cannot carry out (into a
    // folder that does not exist) comes back as an alert of that device; an entry the
    // device has already restored is refused at once.
    let entries = admin.json(&["quarantine", "list"]);
    // As text: each entry with where it came from.
    let text = admin.ok(&["quarantine", "list"]);
    assert!(
        text.lines().next().unwrap().contains("ORIGINAL_PATH"),
        "{text}"
    );
    assert!(text.contains("/home/alice/Downloads/invoice.sh"), "{text}");
    let entries = entries.as_array().unwrap();
    let d1_entry = entries
        .iter()
        .find(|e| e["entry_id"] == id.as_str())
        .expect("agent 1's first entry");
    let d1_id = d1_entry["device_id"].to_string();
    let other = entries
        .iter()
        .find(|e| e["device_id"] != d1_entry["device_id"])
        .expect("agent 2's entry");
    let (d2_id, d2_entry) = (
        other["device_id"].to_string(),
        other["entry_id"].as_str().unwrap().to_string(),
    );
    admin.ok(&[
        "quarantine",
        "restore",
        &d2_id,
        &d2_entry,
        "--to",
        "/riposte-no-such-folder/invoice.sh",
    ]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let alerts = loop {
        let a = admin.json(&["alert", "list", "--device", &d2_id]);
        if !a.as_array().unwrap().is_empty() {
            break a;
        }
        assert!(Instant::now() < deadline, "no alert for the failed restore");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(alerts[0]["code"], "quarantine_command_failed", "{alerts}");
    assert!(
        alerts[0]["message"].as_str().unwrap().contains(&d2_entry),
        "{alerts}"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while admin
        .json(&["quarantine", "list", "--device", &d1_id])
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["entry_id"] != id.as_str() || e["state"] != "restored")
    {
        assert!(
            Instant::now() < deadline,
            "the server never saw the restore"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (code, _, err) = admin.run(&["quarantine", "restore", &d1_id, &id]);
    assert_ne!(code, 0);
    assert!(
        err.contains("only a quarantined entry can be restored or deleted"),
        "{err}"
    );

    // The administrator sees allowances: the device withdrew this one itself, so there
    // is none to withdraw.
    let allowed_on_server = |entry: &str| {
        admin
            .json(&["quarantine", "list", "--device", &d1_id])
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["entry_id"] == entry)
            .map(|e| e["record"]["allowed"].clone())
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while allowed_on_server(&id) != Some(serde_json::json!(false)) {
        assert!(
            Instant::now() < deadline,
            "the server never saw the withdrawal on the device: {:?}",
            allowed_on_server(&id)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (code, _, err) = admin.run(&["quarantine", "withdraw-allowance", &d1_id, &id]);
    assert_ne!(code, 0);
    assert!(err.contains("no allowance to withdraw"), "{err}");

    // A restore from the administration side allows the content on the device, which
    // the administrator sees and withdraws; the device then acts on it again.
    let requarantined = d1.ctl(&["quarantine", "list"]);
    let id2 = requarantined
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .find(|e| *e != id)
        .expect("the second quarantine of the threat on agent 1");
    let deadline = Instant::now() + Duration::from_secs(60);
    while allowed_on_server(&id2).is_none() {
        assert!(Instant::now() < deadline, "the server never saw {id2}");
        std::thread::sleep(Duration::from_millis(200));
    }
    admin.ok(&["quarantine", "restore", &d1_id, &id2]);
    // The allowance is the content's: the entry restored before shows it too.
    let deadline = Instant::now() + Duration::from_secs(60);
    while allowed_on_server(&id2) != Some(serde_json::json!(true))
        || allowed_on_server(&id) != Some(serde_json::json!(true))
    {
        assert!(
            Instant::now() < deadline,
            "the restore's allowance never showed on both entries"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(admin
        .ok(&["quarantine", "list", "--device", &d1_id])
        .contains("restored (allowed)"));
    assert_eq!(
        d1.ctl(&["allowed", "list"])["allowed"],
        serde_json::json!([hash])
    );
    // Withdrawing it on the entry restored before withdraws it for both.
    admin.ok(&["quarantine", "withdraw-allowance", &d1_id, &id]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while d1.ctl(&["allowed", "list"])["allowed"] != serde_json::json!([])
        || allowed_on_server(&id2) != Some(serde_json::json!(false))
    {
        assert!(
            Instant::now() < deadline,
            "the withdrawal never took effect: {:?}",
            allowed_on_server(&id2)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(allowed_on_server(&id), Some(serde_json::json!(false)));
    assert!(admin
        .ok(&["audit", "list"])
        .contains(&format!("withdraw the allowance of entry {id}")));
    assert!(again(&d1).status.success());
    assert!(!d1.threat().exists(), "quarantined again once withdrawn");
}

#[test]
fn threat_response_end_to_end_sqlite() {
    scenario(None, false);
}

#[test]
fn threat_response_end_to_end_postgres() {
    let db = format!("riposte_e2e_{}", std::process::id());
    let psql = |sql: &str| {
        let out = Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-c", sql])
            .output()
            .expect("psql is needed for this test");
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    psql(&format!("CREATE DATABASE {db}"));
    let url = format!("postgres://postgres@127.0.0.1:5432/{db}");
    let result = std::panic::catch_unwind(|| scenario(Some(&url), false));
    psql(&format!("DROP DATABASE {db} WITH (FORCE)"));
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

#[test]
fn group_action_fails_visibly_without_the_special_account() {
    scenario(None, true);
}

/// A server process with group A, whose enforced policy turns Threat Response on with
/// `actions`, and an enrollment token for A.
struct GroupA {
    server: Proc,
    url: String,
    ca: PathBuf,
    admin: Admin,
    token: String,
    /// To start the server again on the same data and address.
    sdir: PathBuf,
    pwfile: PathBuf,
    listen: String,
}

fn server_with_group_a(tmp: &Path, actions: &str) -> GroupA {
    let sdir = tmp.join("server");
    let pwfile = tmp.join("admin.pw");
    std::fs::write(&pwfile, "e2e-admin-password\n").unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let (server, url) = start_server_with(&sdir, &pwfile, &listen, None);
    let ca = sdir.join("ca.pem");
    let admin = Admin {
        url: url.clone(),
        ca: ca.clone(),
        pwfile: pwfile.clone(),
    };
    admin.ok(&["group", "create", "A"]);
    admin.ok(&[
        "policy",
        "set",
        "A",
        "--threat-response",
        "on",
        "--enforce",
        "--actions",
        actions,
    ]);
    let token = admin
        .ok(&["enroll-token", "create", "--group", "A"])
        .trim()
        .to_string();
    GroupA {
        server,
        url,
        ca,
        admin,
        token,
        sdir,
        pwfile,
        listen,
    }
}

#[test]
fn the_agent_refuses_bad_reports_and_queues_events_while_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let GroupA {
        server,
        url,
        ca,
        admin,
        token,
        sdir,
        pwfile,
        listen,
    } = server_with_group_a(tmp.path(), "quarantine_and_delete");
    let d = start_agent(tmp.path(), &url, &ca, &token, "solo");
    wait_connected(&admin, 1);
    wait_settings_with(&d, "quarantine_and_delete");
    let hash = sha256(THREAT);
    let ctl_err = |path: &str, h: &str| -> String {
        let out = Command::new(bin())
            .args(["agent", "--data"])
            .arg(&d.data)
            .args([
                "ctl",
                "report-detection",
                "--path",
                path,
                "--sha256",
                h,
                "--threat",
                "T",
                "--user",
                "alice",
            ])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{path} must be refused");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    // A wrong hash: the file is not the detected one.
    let e = ctl_err("/home/alice/Downloads/invoice.sh", &"0".repeat(64));
    assert!(e.contains("no longer has SHA-256"), "{e}");
    // Not a SHA-256 at all: said so, not taken for a changed file.
    let e = ctl_err("/home/alice/Downloads/invoice.sh", "xyz");
    assert!(e.contains("'xyz' is not a SHA-256"), "{e}");
    // A path with `..`, a directory, a missing file, a symlink.
    assert!(ctl_err("/home/alice/../alice/Downloads/invoice.sh", &hash).contains(".."));
    assert!(!ctl_err("/home/alice/Downloads", &hash).is_empty());
    assert!(!ctl_err("/home/alice/nope.sh", &hash).is_empty());
    std::os::unix::fs::symlink(d.threat(), d.root.join("home/alice/link.sh")).unwrap();
    assert!(!ctl_err("/home/alice/link.sh", &hash).is_empty());
    assert_eq!(
        std::fs::read(d.threat()).unwrap(),
        THREAT,
        "nothing was touched"
    );
    assert!(d
        .ctl(&["quarantine", "list"])
        .as_array()
        .unwrap()
        .is_empty());

    // The server goes away: the local action still runs, and the detection waits on disk.
    drop(server);
    let report = d.ctl(&[
        "report-detection",
        "--path",
        "/home/alice/Downloads/invoice.sh",
        "--sha256",
        &hash,
        "--threat",
        "T",
        "--user",
        "alice",
    ]);
    assert_eq!(
        outcome(&report, "quarantine_and_delete")["outcome"],
        "done",
        "{report}"
    );
    assert!(!d.threat().exists());
    let st = d.status();
    assert!(
        st["unsent_events"].as_u64().unwrap() >= 3,
        "detection, quarantine and outcome queued: {st}"
    );
    assert_eq!(st["quarantine"]["objects"], 1, "{st}");
    // Back online: everything reaches the server.
    let (_server, _) = start_server_with(&sdir, &pwfile, &listen, None);
    let id = report["detection"]["detection_id"]
        .as_str()
        .unwrap()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let dets = admin.json(&["detection", "list"]);
        let found = dets.as_array().unwrap().iter().any(|x| {
            x["id"] == id.as_str() && x["outcomes"].as_array().map(|a| a.len()) == Some(1)
        });
        if found
            && admin
                .json(&["quarantine", "list"])
                .as_array()
                .unwrap()
                .len()
                == 1
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "queued events never arrived: {dets}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// `riposte agent --clamd SOCKET --clamd-conf FILE` makes ClamAV's clamd the EPP: the
/// critical-areas scan of a detection goes through a real clamd and finds the startup
/// program planted on the device. An agent whose clamd does not answer starts anyway,
/// and its scans fail with the reason.
#[test]
fn the_agent_scans_critical_areas_through_clamd() {
    const KNOWN_BAD: &[u8] = b"riposte cli test: startup program known to clamd as bad";
    let tmp = tempfile::tempdir().unwrap();
    let clamd_dir = tmp.path().join("clamd");
    std::fs::create_dir_all(&clamd_dir).unwrap();
    let Some(clamd) =
        riposte_epp::testing::start_clamd(&clamd_dir, KNOWN_BAD, b"riposte-cli-marker")
    else {
        return;
    };
    let GroupA {
        server: _server,
        url,
        ca,
        admin,
        token,
        ..
    } = server_with_group_a(tmp.path(), "quarantine_and_delete,epp_critical_areas_scan");
    let d = start_agent_with(
        tmp.path(),
        &url,
        &ca,
        &token,
        "clamd-agent",
        &[
            "--clamd".as_ref(),
            clamd.socket.as_os_str(),
            "--clamd-conf".as_ref(),
            clamd.conf_path.as_os_str(),
        ],
    );
    wait_connected(&admin, 1);
    wait_settings_with(&d, "epp_critical_areas_scan");
    // A startup program (started by a systemd unit) that clamd knows as bad.
    let unit = d.root.join("etc/systemd/system/updater.service");
    std::fs::create_dir_all(unit.parent().unwrap()).unwrap();
    std::fs::write(
        &unit,
        "[Service]\nExecStart=/usr/local/bin/updater --daemon\n",
    )
    .unwrap();
    std::fs::create_dir_all(d.root.join("usr/local/bin")).unwrap();
    std::fs::write(d.root.join("usr/local/bin/updater"), KNOWN_BAD).unwrap();

    let report = d.report_invoice(0);
    assert_eq!(outcome(&report, "quarantine_and_delete")["outcome"], "done");
    let epp = outcome(&report, "epp_critical_areas_scan");
    assert_eq!(epp["outcome"], "done", "{report}");
    let detail = epp["detail"].as_str().unwrap();
    assert!(detail.starts_with("clamd (ClamAV"), "{detail}");
    assert!(
        detail.contains("Riposte.Test.KnownBad.UNOFFICIAL in /usr/local/bin/updater"),
        "{detail}"
    );
    assert!(detail.contains("1 threats"), "{detail}");

    // A clamd that does not answer (not up yet at boot, or gone): the agent starts
    // anyway and says so, and a scan it cannot do fails rather than pass for clean.
    let late_token = admin
        .ok(&["enroll-token", "create", "--group", "A"])
        .trim()
        .to_string();
    let late = start_agent_with(
        tmp.path(),
        &url,
        &ca,
        &late_token,
        "late-clamd",
        &[
            "--clamd".as_ref(),
            tmp.path().join("no-such-clamd.sock").as_os_str(),
        ],
    );
    let log = std::fs::read_to_string(tmp.path().join("late-clamd.log")).unwrap();
    assert!(
        log.contains("no-such-clamd.sock does not answer yet"),
        "{log}"
    );
    wait_connected(&admin, 2);
    wait_settings_with(&late, "epp_critical_areas_scan");
    // Exit 1: an action failed.
    let report = late.report_invoice(1);
    assert_eq!(outcome(&report, "quarantine_and_delete")["outcome"], "done");
    let epp = outcome(&report, "epp_critical_areas_scan");
    assert_eq!(epp["outcome"], "failed", "{report}");
    assert!(
        epp["detail"]
            .as_str()
            .unwrap()
            .contains("cannot reach clamd"),
        "{report}"
    );
}
