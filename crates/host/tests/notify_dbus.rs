//! Notifications against a real D-Bus daemon (package `dbus-daemon`): the
//! test runs a private session bus, serves a recording
//! `org.freedesktop.Notifications`, and controls who is "logged on".

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use riposte_host::{HostRoot, Notifier, NotifyOutcome, StaticSessions, UserSession};

struct Bus {
    child: Child,
    address: String,
    _dir: tempfile::TempDir,
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_bus() -> Bus {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new("dbus-daemon")
        .args(["--session", "--print-address", "--nofork"])
        .arg(format!(
            "--address=unix:path={}",
            dir.path().join("bus").display()
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("dbus-daemon is needed: apt-get install -y dbus-daemon");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("unix:"), "dbus-daemon printed {line:?}");
    Bus {
        child,
        address: line.trim().to_string(),
        _dir: dir,
    }
}

type Calls = Arc<Mutex<Vec<(String, String, String)>>>;

struct Recorder {
    calls: Calls,
}

#[zbus::interface(name = "org.freedesktop.Notifications")]
impl Recorder {
    #[allow(clippy::too_many_arguments)]
    fn notify(
        &self,
        app_name: String,
        _replaces_id: u32,
        _app_icon: String,
        summary: String,
        body: String,
        _actions: Vec<String>,
        _hints: HashMap<String, zbus::zvariant::OwnedValue>,
        _expire_timeout: i32,
    ) -> u32 {
        let mut c = self.calls.lock().unwrap();
        c.push((app_name, summary, body));
        c.len() as u32
    }
}

async fn serve(bus: &Bus) -> (zbus::Connection, Calls) {
    let calls: Calls = Arc::default();
    let conn = zbus::connection::Builder::address(bus.address.as_str())
        .unwrap()
        .name("org.freedesktop.Notifications")
        .unwrap()
        .serve_at(
            "/org/freedesktop/Notifications",
            Recorder {
                calls: calls.clone(),
            },
        )
        .unwrap()
        .build()
        .await
        .unwrap();
    (conn, calls)
}

fn session(user: &str, bus: Option<&str>, tty: Option<&str>) -> UserSession {
    UserSession {
        user: user.into(),
        uid: Some(rustix::process::geteuid().as_raw()),
        tty: tty.map(str::to_string),
        session_type: if bus.is_some() {
            "wayland".into()
        } else {
            "tty".into()
        },
        dbus_address: bus.map(str::to_string),
    }
}

#[tokio::test]
async fn desktop_notification_only_when_the_user_has_a_session() {
    let bus = start_bus();
    let (_conn, calls) = serve(&bus).await;
    let sessions = Arc::new(StaticSessions(vec![session(
        "alice",
        Some(&bus.address),
        Some("pts/0"),
    )]));
    let n = Notifier::new(HostRoot::new("/nonexistent"), sessions);

    let out = n
        .notify("alice", "Threat removed", "evil.bin was quarantined")
        .await;
    match &out {
        NotifyOutcome::Shown { how } => assert!(how.contains("desktop notification"), "{how}"),
        o => panic!("expected Shown, got {o:?}"),
    }
    assert_eq!(
        calls.lock().unwrap().clone(),
        vec![(
            "Riposte".to_string(),
            "Threat removed".to_string(),
            "evil.bin was quarantined".to_string()
        )]
    );

    // bob has no session: nothing shown, nothing sent
    assert_eq!(n.notify("bob", "x", "y").await, NotifyOutcome::NotShown);
    assert_eq!(calls.lock().unwrap().len(), 1);
    // the uid as account name works too
    let uid = rustix::process::geteuid().as_raw().to_string();
    assert!(matches!(
        n.notify(&uid, "s", "b").await,
        NotifyOutcome::Shown { .. }
    ));
    assert_eq!(calls.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn terminal_message_without_desktop_and_failure_reported() {
    use std::io::Read;
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("dev/pts")).unwrap();
    // The user's terminal: a real pseudo-terminal (on this machine's /dev/pts); what
    // the agent writes there is read from its other side.
    let master =
        rustix::pty::openpt(rustix::pty::OpenptFlags::RDWR | rustix::pty::OpenptFlags::NOCTTY)
            .unwrap();
    rustix::pty::grantpt(&master).unwrap();
    rustix::pty::unlockpt(&master).unwrap();
    let pts = rustix::pty::ptsname(&master, Vec::new()).unwrap();
    let pts = pts
        .to_str()
        .unwrap()
        .strip_prefix("/dev/")
        .unwrap()
        .to_string();
    // A character device that is no terminal (as /dev/null): never written to.
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.path().join("dev/pts/9"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o620),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    std::fs::write(root.path().join("dev/pts/8"), b"").unwrap(); // not a terminal
    let on_this_machine = Notifier::new(
        HostRoot::new("/"),
        Arc::new(StaticSessions(vec![session("carol", None, Some(&pts))])),
    );
    let sessions = Arc::new(StaticSessions(vec![
        session("dave", Some("unix:path=/nonexistent/bus"), Some("pts/8")),
        session("erin", None, None),
        session("frank", None, Some("pts/9")),
    ]));
    let n = Notifier::new(HostRoot::new(root.path()), sessions);
    assert_eq!(
        on_this_machine
            .notify("carol", "Threat removed", "x was quarantined")
            .await,
        NotifyOutcome::Shown {
            how: format!("terminal {pts}")
        }
    );
    let mut seen = vec![0u8; 4096];
    let mut master = std::fs::File::from(master);
    let n_read = master.read(&mut seen).unwrap();
    let seen = String::from_utf8_lossy(&seen[..n_read]).to_string();
    assert!(seen.contains("Threat removed"), "{seen:?}");
    match n.notify("frank", "s", "b").await {
        NotifyOutcome::Failed { reason } => assert!(reason.contains("not a terminal"), "{reason}"),
        o => panic!("{o:?}"),
    }
    match n.notify("dave", "s", "b").await {
        NotifyOutcome::Failed { reason } => {
            assert!(
                reason.contains("desktop via unix:path=/nonexistent/bus"),
                "{reason}"
            );
            assert!(reason.contains("not a terminal"), "{reason}");
        }
        o => panic!("{o:?}"),
    }
    assert!(matches!(
        n.notify("erin", "s", "b").await,
        NotifyOutcome::Failed { .. }
    ));
}

/// The effective, real and saved uids of this process's threads whose effective uid is
/// `uid`, with their thread ids.
fn threads_acting_as(uid: u32) -> Vec<(String, [u32; 3])> {
    let mut out = Vec::new();
    for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let Ok(status) = std::fs::read_to_string(t.path().join("status")) else {
            continue;
        };
        let Some(line) = status.lines().find(|l| l.starts_with("Uid:")) else {
            continue;
        };
        let ids: Vec<u32> = line[4..]
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if ids.len() == 4 && ids[1] == uid {
            let tid = t.file_name().to_string_lossy().into_owned();
            out.push((tid, [ids[1], ids[0], ids[2]]));
        }
    }
    out
}

/// Notifying another user connects from a thread that acts as that user; the user owns
/// the bus, so can make the call hang, but can neither signal that thread (which would
/// stop the whole agent) nor keep it: it ends at the timeout.
#[tokio::test]
async fn a_notification_as_another_user_is_sent_from_a_thread_that_user_cannot_signal() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root, to act as another user");
        return;
    }
    const NOBODY: u32 = 65534;
    // A bus that takes connections and never answers.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join("bus");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
    let held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let address = format!("unix:path={}", path.display());
    let call = tokio::spawn(async move {
        riposte_host::notify::desktop_notify(
            &address,
            Some(NOBODY),
            "Riposte",
            "s",
            "b",
            std::time::Duration::from_secs(3),
        )
        .await
    });
    let mut acting = Vec::new();
    for _ in 0..100 {
        acting = threads_acting_as(NOBODY);
        if !acting.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The thread, and any its runtime started (they inherit its credentials).
    assert!(!acting.is_empty(), "a thread acts as the user");
    for (tid, ids) in &acting {
        assert_eq!(*ids, [NOBODY, 0, 0], "thread {tid}: effective, real, saved");
        let signalled = Command::new("/bin/kill")
            .args(["-0", tid])
            .uid(NOBODY)
            .gid(NOBODY)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(!signalled.success(), "the user could signal thread {tid}");
    }
    let r = call.await.unwrap();
    assert!(r.as_ref().is_err_and(|e| e.contains("timed out")), "{r:?}");
    let mut gone = false;
    for _ in 0..100 {
        if threads_acting_as(NOBODY).is_empty() {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(gone, "the thread ended after the timeout");
    held.abort();
}

#[test]
fn notification_bodies_show_markup_as_text() {
    assert_eq!(
        riposte_host::notify::markup_escaped("<b>Trojan</b> in /home/a/<a href=\"x\">'&'"),
        "&lt;b&gt;Trojan&lt;/b&gt; in /home/a/&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;"
    );
}
