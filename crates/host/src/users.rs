//! Who is logged on.
//!
//! The agent notifies a user only when the account under which a threat was
//! detected has a session, so it needs the list of sessions with, for each,
//! where a message can reach the user: the session D-Bus (desktop) or the
//! terminal. Sources:
//!
//! * systemd-logind (through `loginctl`, which talks to logind over the
//!   system bus) when the device runs systemd — it knows session types and
//!   the per-user bus at `/run/user/UID/bus`;
//! * otherwise the utmp file (`/var/run/utmp`), parsed by hand (glibc
//!   x86_64/aarch64 layout, 384-byte records).
//!
//! [`SessionSource`] is a trait so that tests (and the agent's tests) can
//! decide who is "logged on".

use std::path::Path;
use std::process::Command;

use crate::{HostError, HostRoot};

/// One logged-on session.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserSession {
    /// Account name.
    pub user: String,
    /// Numeric uid, when known.
    pub uid: Option<u32>,
    /// Terminal (e.g. `pts/3`, `tty2`), relative to `/dev`, when known.
    pub tty: Option<String>,
    /// Session type: `x11`, `wayland`, `tty`, `mir`, `unspecified`, `utmp`…
    pub session_type: String,
    /// Address of the user's session bus (`unix:path=/run/user/1000/bus`), when known.
    pub dbus_address: Option<String>,
}

/// A provider of the current sessions.
pub trait SessionSource: Send + Sync {
    /// Lists the current sessions.
    fn sessions(&self) -> Result<Vec<UserSession>, HostError>;
}

/// A fixed list of sessions (tests, or a caller that already knows).
#[derive(Debug, Clone, Default)]
pub struct StaticSessions(pub Vec<UserSession>);

impl SessionSource for StaticSessions {
    fn sessions(&self) -> Result<Vec<UserSession>, HostError> {
        Ok(self.0.clone())
    }
}

/// The device's real sessions: logind when systemd is running (detected by
/// `/run/systemd/system` under the root, like `sd_booted()`), else utmp.
#[derive(Debug, Clone, Default)]
pub struct SystemSessions {
    /// The device root.
    pub root: HostRoot,
}

impl SessionSource for SystemSessions {
    fn sessions(&self) -> Result<Vec<UserSession>, HostError> {
        if self.root.path() == Path::new("/") && Path::new("/run/systemd/system").is_dir() {
            if let Ok(s) = logind_sessions(&self.root) {
                return Ok(s);
            }
        }
        utmp_sessions(&self.root)
    }
}

/// Sessions from systemd-logind, via `loginctl`.
pub fn logind_sessions(root: &HostRoot) -> Result<Vec<UserSession>, HostError> {
    let out = Command::new("loginctl")
        .args(["list-sessions", "--no-legend", "--no-pager"])
        .output()
        .map_err(|e| HostError::io("running", "loginctl", e))?;
    if !out.status.success() {
        return Err(HostError::io(
            "running",
            "loginctl list-sessions",
            std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        ));
    }
    let mut sessions = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(id) = line.split_whitespace().next() else {
            continue;
        };
        let show = Command::new("loginctl")
            .args([
                "show-session",
                id,
                "--no-pager",
                "-p",
                "Name",
                "-p",
                "User",
                "-p",
                "TTY",
                "-p",
                "Type",
                "-p",
                "State",
            ])
            .output()
            .map_err(|e| HostError::io("running", "loginctl", e))?;
        if !show.status.success() {
            continue; // session ended in between
        }
        let text = String::from_utf8_lossy(&show.stdout);
        let mut s = parse_show_session(&text);
        if s.user.is_empty() {
            continue;
        }
        if let Some(uid) = s.uid {
            s.dbus_address = user_bus_address(root, uid);
        }
        sessions.push(s);
    }
    Ok(sessions)
}

fn parse_show_session(text: &str) -> UserSession {
    let mut s = UserSession::default();
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        match k {
            "Name" => s.user = v.to_string(),
            "User" => s.uid = v.parse().ok(),
            "TTY" if !v.is_empty() => s.tty = Some(v.trim_start_matches("/dev/").to_string()),
            "Type" => s.session_type = v.to_string(),
            _ => {}
        }
    }
    s
}

/// `unix:path=/run/user/UID/bus` if that socket exists under the root.
pub fn user_bus_address(root: &HostRoot, uid: u32) -> Option<String> {
    let dev = format!("/run/user/{uid}/bus");
    let host = root.host_path(Path::new(&dev)).ok()?;
    use std::os::unix::fs::FileTypeExt;
    let md = std::fs::symlink_metadata(&host).ok()?;
    md.file_type()
        .is_socket()
        .then(|| format!("unix:path={}", host.display()))
}

/// Size of one glibc utmp record on Linux x86_64/aarch64.
pub const UTMP_RECORD_SIZE: usize = 384;
const USER_PROCESS: i16 = 7;

/// Sessions from `/var/run/utmp` (or `/run/utmp`) under the root. Users are
/// resolved to uids with `/etc/passwd` under the root.
pub fn utmp_sessions(root: &HostRoot) -> Result<Vec<UserSession>, HostError> {
    let mut data = None;
    for p in ["/var/run/utmp", "/run/utmp"] {
        let hp = root.host_path(Path::new(p))?;
        match std::fs::read(&hp) {
            Ok(d) => {
                data = Some(d);
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(HostError::io("reading", p, e)),
        }
    }
    let Some(data) = data else {
        return Ok(Vec::new());
    };
    let passwd =
        std::fs::read_to_string(root.host_path(Path::new("/etc/passwd"))?).unwrap_or_default();
    let mut out = Vec::new();
    for rec in parse_utmp(&data) {
        let uid = passwd_uid(&passwd, &rec.user);
        out.push(UserSession {
            dbus_address: uid.and_then(|u| user_bus_address(root, u)),
            user: rec.user,
            uid,
            tty: (!rec.line.is_empty()).then_some(rec.line),
            session_type: "utmp".into(),
        });
    }
    Ok(out)
}

/// A USER_PROCESS utmp entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UtmpEntry {
    /// Login name.
    pub user: String,
    /// Terminal line, relative to `/dev`.
    pub line: String,
    /// Remote host, if any.
    pub host: String,
    /// Login process id.
    pub pid: i32,
}

fn cstr_field(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Parses utmp records, keeping USER_PROCESS entries. A trailing partial
/// record is ignored.
pub fn parse_utmp(data: &[u8]) -> Vec<UtmpEntry> {
    data.chunks_exact(UTMP_RECORD_SIZE)
        .filter_map(|r| {
            let ty = i16::from_ne_bytes([r[0], r[1]]);
            if ty != USER_PROCESS {
                return None;
            }
            let user = cstr_field(&r[44..76]);
            if user.is_empty() {
                return None;
            }
            Some(UtmpEntry {
                pid: i32::from_ne_bytes([r[4], r[5], r[6], r[7]]),
                line: cstr_field(&r[8..40]),
                user,
                host: cstr_field(&r[76..332]),
            })
        })
        .collect()
}

/// Builds a utmp USER_PROCESS record (for tests and tools).
pub fn encode_utmp_user(user: &str, line: &str, pid: i32) -> Vec<u8> {
    let mut r = vec![0u8; UTMP_RECORD_SIZE];
    r[0..2].copy_from_slice(&USER_PROCESS.to_ne_bytes());
    r[4..8].copy_from_slice(&pid.to_ne_bytes());
    let l = line.as_bytes();
    r[8..8 + l.len().min(32)].copy_from_slice(&l[..l.len().min(32)]);
    let u = user.as_bytes();
    r[44..44 + u.len().min(32)].copy_from_slice(&u[..u.len().min(32)]);
    r
}

/// Looks a user's uid up in passwd-format text.
pub fn passwd_uid(passwd: &str, user: &str) -> Option<u32> {
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == user).then_some(())?;
        f.next()?;
        f.next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utmp_roundtrip_and_passwd() {
        let mut data = encode_utmp_user("alice", "pts/3", 42);
        let mut dead = vec![0u8; UTMP_RECORD_SIZE];
        dead[0..2].copy_from_slice(&8i16.to_ne_bytes()); // DEAD_PROCESS
        data.extend(dead);
        data.extend(encode_utmp_user("bob", "tty2", 7));
        data.extend([1, 2, 3]); // partial record
        let e = parse_utmp(&data);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].user, "alice");
        assert_eq!(e[0].line, "pts/3");
        assert_eq!(e[0].pid, 42);
        assert_eq!(e[1].user, "bob");
        let pw = "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/sh\n";
        assert_eq!(passwd_uid(pw, "alice"), Some(1000));
        assert_eq!(passwd_uid(pw, "bob"), None);
    }

    #[test]
    fn utmp_source_under_root() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("var/run")).unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "carol:x:1001:1001::/home/carol:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("var/run/utmp"),
            encode_utmp_user("carol", "pts/1", 5),
        )
        .unwrap();
        let s = SystemSessions {
            root: HostRoot::new(d.path()),
        }
        .sessions()
        .unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].uid, Some(1001));
        assert_eq!(s[0].tty.as_deref(), Some("pts/1"));
        assert_eq!(s[0].dbus_address, None);
    }

    #[test]
    fn show_session_parse() {
        let s =
            parse_show_session("Name=dave\nUser=1002\nTTY=/dev/tty2\nType=wayland\nState=active\n");
        assert_eq!(s.user, "dave");
        assert_eq!(s.uid, Some(1002));
        assert_eq!(s.tty.as_deref(), Some("tty2"));
        assert_eq!(s.session_type, "wayland");
    }
}
