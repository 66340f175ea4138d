//! `riposte up --demo` on a fresh data folder: the whole flow in one command; Ctrl-C stops
//! it cleanly, and starting again keeps the data.

mod common;
use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn run_up(data: &std::path::Path, listen: &str, demo: bool, until: &str) -> (Proc, Vec<String>) {
    let mut cmd = Command::new(bin());
    cmd.args(["up", "--data"])
        .arg(data)
        .args(["--listen", listen]);
    if demo {
        cmd.arg("--demo");
    }
    let mut child = Proc(
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(l) => {
                let done = l.contains(until);
                lines.push(l);
                if done {
                    return (child, lines);
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(_) => break,
        }
    }
    panic!("`riposte up` never printed '{until}': {lines:#?}");
}

fn interrupt(mut p: Proc) -> std::process::ExitStatus {
    let pid = p.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(s) = p.0.try_wait().unwrap() {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "`riposte up` did not stop on Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn up_demo_shows_the_whole_flow_and_keeps_its_data() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("riposte-data");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let (p, lines) = run_up(&data, &listen, true, "Press Ctrl-C");
    let text = lines.join("\n");
    assert!(
        text.contains(&format!("console and API: https://127.0.0.1:{port}/")),
        "{text}"
    );
    assert!(
        text.contains("admin user:      admin, password: "),
        "{text}"
    );
    assert!(text.contains("watched folder:"), "{text}");
    assert!(
        text.contains("demo: verdict from riposte-sandbox: malicious, EICAR"),
        "{text}"
    );
    assert!(text.contains("demo: quarantine_and_delete: done"), "{text}");
    assert!(text.contains("demo: notify_user: "), "{text}");
    assert!(
        text.contains("demo: group_ioc_scan: done — autonomous IOC scan task"),
        "{text}"
    );
    assert!(
        text.contains("demo: task 1 on local-agent: completed"),
        "{text}"
    );
    assert!(text.contains("demo: complete"), "{text}");
    let dropped: Vec<_> = std::fs::read_dir(data.join("watched")).unwrap().collect();
    assert!(
        dropped.is_empty(),
        "the test object was removed from the watched folder"
    );
    let first_password = text
        .lines()
        .find_map(|l| l.split("admin, password: ").nth(1))
        .and_then(|r| r.split(' ').next())
        .unwrap()
        .to_string();
    // Kept in a private file too, until the administrator deletes it: a first start
    // that dies after creating the account does not lose the password.
    let kept = data.join("server/initial-admin-password");
    assert_eq!(
        std::fs::read_to_string(&kept).unwrap().trim(),
        first_password
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&kept).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(interrupt(p).success(), "clean exit on Ctrl-C");

    // Again: same data, no new admin password, the detection is still there; the file
    // is named while it is there.
    let (p, lines) = run_up(&data, &listen, false, "Press Ctrl-C");
    let text = lines.join("\n");
    assert!(
        text.contains("its first password is in") && text.contains("initial-admin-password"),
        "{text}"
    );
    // A second `up` on the same data is refused before it starts anything.
    let second = Command::new(bin())
        .args(["up", "--data"])
        .arg(&data)
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "{err}");
    assert!(err.contains("another `riposte up` is running"), "{err}");
    assert!(
        !String::from_utf8_lossy(&second.stdout).contains("Riposte is up"),
        "{err}"
    );
    // The first run's one-time password still works, and the detection is still there.
    let pwfile = tmp.path().join("admin.pw");
    std::fs::write(&pwfile, &first_password).unwrap();
    let admin = Admin {
        url: format!("https://127.0.0.1:{port}"),
        ca: data.join("server/ca.pem"),
        pwfile,
    };
    let dets = admin.json(&["detection", "list"]);
    assert_eq!(dets.as_array().unwrap().len(), 1, "{dets}");
    assert_eq!(dets[0]["record"]["threat"], "EICAR-Test-File");
    let out = Command::new(bin())
        .args(["agent", "--data"])
        .arg(data.join("agent"))
        .args(["ctl", "quarantine", "list", "--json"])
        .output()
        .unwrap();
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The group's IOC scan sweeps the whole machine, but by default only reports what
    // it finds there: nothing outside the watched folder (another test's EICAR, a
    // user's) is taken.
    let watched = data.join("watched").display().to_string();
    let entries = list.as_array().unwrap();
    assert!(
        entries.iter().all(|e| e["original_path"]
            .as_str()
            .is_some_and(|p| p.starts_with(&watched))),
        "only the watched folder's object is quarantined: {list}"
    );
    assert_eq!(
        entries.len(),
        1,
        "the quarantined test object is kept: {list}"
    );
    // The server's keys are out of the agent's reach, as its own data is.
    let ca_key = data.join("server/ca.key");
    let sha = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(std::fs::read(&ca_key).unwrap()))
    };
    let out = Command::new(bin())
        .args(["agent", "--data"])
        .arg(data.join("agent"))
        .args(["ctl", "report-detection", "--path"])
        .arg(&ca_key)
        .args(["--sha256", &sha, "--threat", "T", "--user", "root"])
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(ca_key.exists(), "the CA key stays: {said}");
    assert!(said.contains("protected"), "{said}");
    assert!(interrupt(p).success());

    // Started again with another --listen: its agent and its group's sandbox follow,
    // and the whole flow works at the new addresses.
    let moved = free_port();
    let (p, lines) = run_up(&data, &format!("127.0.0.1:{moved}"), true, "demo: complete");
    let text = lines.join("\n");
    assert!(
        text.contains("demo: verdict from riposte-sandbox: malicious"),
        "{text}"
    );
    assert!(
        text.contains("autonomous IOC scan task") && text.contains("for group 'Local'"),
        "{text}"
    );
    assert!(interrupt(p).success());
}
