//! Shared by the process-level tests: start `riposte` processes and drive `riposte admin`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_riposte"))
}

pub struct Proc(pub Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `riposte server` and returns it with its API URL.
pub fn start_server(dir: &Path, pwfile: &Path, listen: &str) -> (Proc, String) {
    start_server_with(dir, pwfile, listen, None)
}

/// Starts `riposte server`, optionally on a database URL.
pub fn start_server_with(
    dir: &Path,
    pwfile: &Path,
    listen: &str,
    database: Option<&str>,
) -> (Proc, String) {
    match database {
        Some(db) => start_server_args(dir, pwfile, listen, &["--database", db]),
        None => start_server_args(dir, pwfile, listen, &[]),
    }
}

/// Starts `riposte server` with more arguments.
pub fn start_server_args(
    dir: &Path,
    pwfile: &Path,
    listen: &str,
    extra: &[&str],
) -> (Proc, String) {
    let mut cmd = Command::new(bin());
    cmd.arg("server").args(extra);
    let mut child = cmd
        .arg("--data")
        .arg(dir)
        .args(["--listen", listen, "--admin-password-file"])
        .arg(pwfile)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut url = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.trim().strip_prefix("API and console: ") {
            url = rest.trim_end_matches('/').to_string();
            break;
        }
    }
    assert!(!url.is_empty(), "server did not start");
    std::thread::spawn(move || for _ in lines {});
    (Proc(child), url)
}

pub struct Admin {
    pub url: String,
    pub ca: PathBuf,
    pub pwfile: PathBuf,
}

/// Starts `riposte server` in `dir/server` on a free port, and `riposte admin` for it.
pub fn server_and_admin(dir: &Path) -> (Proc, Admin) {
    let sdir = dir.join("server");
    let pwfile = dir.join("admin.pw");
    std::fs::write(&pwfile, "cli-test-admin-password\n").unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let (server, url) = start_server(&sdir, &pwfile, &listen);
    let admin = Admin {
        url,
        ca: sdir.join("ca.pem"),
        pwfile,
    };
    (server, admin)
}

impl Admin {
    pub fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(bin())
            .args(["admin", "--server", &self.url, "--ca"])
            .arg(&self.ca)
            .args(["--user", "admin", "--password-file"])
            .arg(&self.pwfile)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.run(args);
        assert_eq!(code, 0, "riposte admin {args:?} failed: {err}");
        out
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        serde_json::from_str(&self.ok(&a)).unwrap()
    }
}

pub fn free_port() -> u16 {
    // Two consecutive free ports: the API and the agent channel.
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        if p < 65000 && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
}
