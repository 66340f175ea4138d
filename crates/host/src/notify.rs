//! Telling the logged-on user what the agent did.
//!
//! The agent only notifies a user when the account under which the threat
//! was detected has a session ([`NotifyOutcome::NotShown`] otherwise): a
//! message about alice's file must not pop up on bob's screen.
//!
//! Desktop sessions get a freedesktop notification
//! (`org.freedesktop.Notifications.Notify`) on the user's session bus.
//! Sessions without a bus get a short message written to their terminals.
//!
//! A session bus only accepts connections from its owner (SASL `EXTERNAL`
//! checks the peer's effective uid), so when the agent runs as root and the
//! user is not root, the connection is made from a dedicated thread whose
//! *thread* credentials (Linux `setresuid` is per-thread at the syscall level)
//! take the user's uid as the effective one only: its real and saved uids
//! stay root, so that the user, who controls the bus and can make the call
//! hang, cannot signal or trace that thread (which would reach the whole
//! agent). The thread gives up after the notifier's timeout and ends; the rest
//! of the process keeps root throughout.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustix::fs::{FileType, Mode, OFlags};

use crate::users::{SessionSource, UserSession};
use crate::HostRoot;

/// Result of a notification attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyOutcome {
    /// The user was shown the message; `how` says where.
    Shown {
        /// E.g. `desktop notification (id 3) via unix:path=/run/user/1000/bus`
        /// or `terminal pts/2`.
        how: String,
    },
    /// The account has no session: nothing was shown (by design).
    NotShown,
    /// The account has a session but every way of reaching it failed.
    Failed {
        /// What went wrong, for each attempt.
        reason: String,
    },
}

/// Sends notifications to logged-on users.
#[derive(Clone)]
pub struct Notifier {
    root: HostRoot,
    sessions: Arc<dyn SessionSource>,
    app_name: String,
    timeout: Duration,
}

impl Notifier {
    /// A notifier for the device at `root`, using `sessions` to learn who is
    /// logged on.
    pub fn new(root: HostRoot, sessions: Arc<dyn SessionSource>) -> Self {
        Notifier {
            root,
            sessions,
            app_name: "Riposte".into(),
            timeout: Duration::from_secs(5),
        }
    }

    /// Sets the application name shown in desktop notifications.
    pub fn with_app_name(mut self, name: impl Into<String>) -> Self {
        self.app_name = name.into();
        self
    }

    /// Notifies `account` (user name, or numeric uid as text) — only if it has
    /// a session.
    pub async fn notify(&self, account: &str, summary: &str, body: &str) -> NotifyOutcome {
        let sessions = match self.sessions.sessions() {
            Ok(s) => s,
            Err(e) => {
                return NotifyOutcome::Failed {
                    reason: format!("could not list sessions: {e}"),
                }
            }
        };
        let mine: Vec<UserSession> = sessions
            .into_iter()
            .filter(|s| {
                s.user == account || s.uid.map(|u| u.to_string()).as_deref() == Some(account)
            })
            .collect();
        if mine.is_empty() {
            return NotifyOutcome::NotShown;
        }
        let mut errors = Vec::new();
        // Desktop first: one notification per distinct bus.
        let mut buses: Vec<(String, Option<u32>)> = Vec::new();
        for s in &mine {
            if let Some(a) = &s.dbus_address {
                if !buses.iter().any(|(b, _)| b == a) {
                    buses.push((a.clone(), s.uid));
                }
            }
        }
        for (addr, uid) in &buses {
            match tokio::time::timeout(
                self.timeout,
                desktop_notify(addr, *uid, &self.app_name, summary, body, self.timeout),
            )
            .await
            {
                Ok(Ok(id)) => {
                    return NotifyOutcome::Shown {
                        how: format!("desktop notification (id {id}) via {addr}"),
                    }
                }
                Ok(Err(e)) => errors.push(format!("desktop via {addr}: {e}")),
                Err(_) => errors.push(format!("desktop via {addr}: timed out")),
            }
        }
        let mut shown = Vec::new();
        for s in &mine {
            let Some(tty) = &s.tty else { continue };
            match self.write_tty(tty, summary, body) {
                Ok(()) => shown.push(format!("terminal {tty}")),
                Err(e) => errors.push(format!("terminal {tty}: {e}")),
            }
        }
        if !shown.is_empty() {
            return NotifyOutcome::Shown {
                how: shown.join(", "),
            };
        }
        if errors.is_empty() {
            errors.push("the session has neither a session bus nor a terminal".into());
        }
        NotifyOutcome::Failed {
            reason: errors.join("; "),
        }
    }

    fn write_tty(&self, tty: &str, summary: &str, body: &str) -> Result<(), String> {
        let dev = Path::new("/dev").join(tty);
        let (parent, name) = self.root.open_parent(&dev).map_err(|e| e.to_string())?;
        // Looked at before it is opened: opening some devices acts (a watchdog arms).
        // Terminals are the virtual consoles (major 4) and pseudo-terminals (136–143).
        let st = rustix::fs::statat(
            &parent,
            name.as_os_str(),
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| format!("looking at {}: {e}", dev.display()))?;
        let major = rustix::fs::major(st.st_rdev);
        if FileType::from_raw_mode(st.st_mode) != FileType::CharacterDevice
            || !(major == 4 || (136..=143).contains(&major))
        {
            return Err(format!("{} is not a terminal device", dev.display()));
        }
        let fd = rustix::fs::openat(
            &parent,
            name.as_os_str(),
            OFlags::WRONLY | OFlags::NOCTTY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| format!("opening {}: {e}", dev.display()))?;
        let st = rustix::fs::fstat(&fd).map_err(|e| e.to_string())?;
        // A character device is not enough: a session's line could name `mem` or a
        // watchdog, which must never be written to.
        if FileType::from_raw_mode(st.st_mode) != FileType::CharacterDevice
            || !rustix::termios::isatty(&fd)
        {
            return Err(format!("{} is not a terminal device", dev.display()));
        }
        let clean = |s: &str| {
            s.chars()
                .filter(|c| !c.is_control() || *c == '\n')
                .collect::<String>()
        };
        let msg = format!(
            "\r\n*** {}: {} ***\r\n{}\r\n",
            self.app_name,
            clean(summary),
            clean(body).replace('\n', "\r\n")
        );
        let mut f = std::fs::File::from(fd);
        f.write_all(msg.as_bytes()).map_err(|e| e.to_string())
    }
}

/// Sends one `org.freedesktop.Notifications.Notify` call on the bus at
/// `address` and returns the notification id, giving up after `timeout`.
/// When running as root and `uid` is another user, connects from a thread
/// whose effective uid (and gid) are that user's, its real and saved ones
/// root's (see the module's documentation).
pub async fn desktop_notify(
    address: &str,
    uid: Option<u32>,
    app_name: &str,
    summary: &str,
    body: &str,
    timeout: Duration,
) -> Result<u32, String> {
    let body = markup_escaped(body);
    let body = body.as_str();
    let euid = rustix::process::geteuid().as_raw();
    match uid {
        Some(u) if u != euid && euid == 0 => {
            let (address, app, summary, body) = (
                address.to_string(),
                app_name.to_string(),
                summary.to_string(),
                body.to_string(),
            );
            let (tx, rx) = tokio::sync::oneshot::channel();
            std::thread::spawn(move || {
                let r = (|| {
                    use rustix::process::{Gid, Uid};
                    let gid = primary_gid(u);
                    rustix::thread::set_thread_res_gid(Gid::ROOT, gid, Gid::ROOT)
                        .map_err(|e| format!("setresgid: {e}"))?;
                    rustix::thread::set_thread_groups(&[gid])
                        .map_err(|e| format!("setgroups: {e}"))?;
                    rustix::thread::set_thread_res_uid(Uid::ROOT, Uid::from_raw(u), Uid::ROOT)
                        .map_err(|e| format!("setresuid: {e}"))?;
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| e.to_string())?;
                    rt.block_on(async {
                        tokio::time::timeout(
                            timeout,
                            notify_on_bus(&address, &app, &summary, &body),
                        )
                        .await
                        .map_err(|_| "timed out".to_string())?
                    })
                })();
                let _ = tx.send(r);
            });
            rx.await
                .map_err(|_| "notification thread died".to_string())?
        }
        _ => notify_on_bus(address, app_name, summary, body).await,
    }
}

/// `text` with the characters of the notification body's markup (a subset of
/// HTML that many notification servers render: `<b>`, `<a href>`…) escaped, so
/// that a file or threat name shows as written and cannot become a link.
pub fn markup_escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn primary_gid(uid: u32) -> rustix::process::Gid {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let gid = passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 3 && f[2] == uid.to_string())
                .then(|| f[3].parse().ok())
                .flatten()
        })
        .unwrap_or(uid);
    rustix::process::Gid::from_raw(gid)
}

async fn notify_on_bus(
    address: &str,
    app_name: &str,
    summary: &str,
    body: &str,
) -> Result<u32, String> {
    let conn = zbus::connection::Builder::address(address)
        .map_err(|e| format!("bad bus address: {e}"))?
        .build()
        .await
        .map_err(|e| format!("connecting: {e}"))?;
    let hints: HashMap<&str, zbus::zvariant::Value<'_>> =
        HashMap::from([("urgency", zbus::zvariant::Value::U8(2))]);
    let reply = conn
        .call_method(
            Some("org.freedesktop.Notifications"),
            "/org/freedesktop/Notifications",
            Some("org.freedesktop.Notifications"),
            "Notify",
            &(
                app_name,
                0u32,
                "dialog-warning",
                summary,
                body,
                Vec::<&str>::new(),
                hints,
                -1i32,
            ),
        )
        .await
        .map_err(|e| format!("Notify call: {e}"))?;
    reply
        .body()
        .deserialize::<u32>()
        .map_err(|e| format!("Notify reply: {e}"))
}
