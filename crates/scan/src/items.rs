//! Collectors for the non-file items of a Linux host, and the lazily hashed file item.
//!
//! Every collector reads plain files (`/proc`, `/etc/passwd`, unit files…) below a
//! root directory, so tests point them at a fake device tree and agents at
//! `--host-root`. Processes and sockets come from `proc_root` (the live `/proc` unless
//! told otherwise).

use crate::walk::FileMeta;
use riposte_ioc::model::{Field, FieldValue, ItemType};
use riposte_ioc::Item;
use serde::Serialize;
use std::borrow::Cow;
use std::collections::HashMap;
use std::ffi::CStr;
use std::fs::Metadata;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// What a hit was found on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HitItem {
    /// A file (device path), with what identifies the object that hit, so that an
    /// action taken later acts on that object only and not on whatever is at the
    /// path by then.
    File {
        /// Path as seen on the device.
        path: String,
        /// Device id the sweep saw.
        dev: u64,
        /// Inode the sweep saw.
        ino: u64,
        /// SHA-256 (hex) of that inode's content; `None` when it could not be read.
        sha256: Option<String>,
    },
    /// A process.
    Process {
        /// Process id.
        pid: i64,
        /// Process name.
        name: String,
    },
    /// A socket.
    Port {
        /// tcp or udp.
        protocol: String,
        /// Local address:port.
        local: String,
        /// Remote address:port.
        remote: String,
        /// Owning process, when known.
        pid: Option<i64>,
    },
    /// A local account.
    User {
        /// Login.
        name: String,
        /// Uid.
        uid: i64,
    },
    /// A systemd unit.
    Service {
        /// Unit name.
        name: String,
    },
    /// The host.
    System {
        /// Host name.
        hostname: String,
    },
    /// A hosts-file entry.
    Dns {
        /// Name.
        host: String,
        /// Address.
        address: String,
    },
}

impl std::fmt::Display for HitItem {
    /// Names are shown escaped as paths are (`path_text::shown`): a process may name
    /// itself, and a unit file be named, with a newline, a terminal escape or a
    /// right-to-left override in it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use riposte_model::path_text::shown as printable;
        match self {
            HitItem::File { path, .. } => write!(f, "file {}", printable(path)),
            HitItem::Process { pid, name } => write!(f, "process {pid} ({})", printable(name)),
            HitItem::Port {
                protocol,
                local,
                remote,
                pid,
            } => {
                write!(f, "port {protocol} {local} -> {remote}")?;
                if let Some(p) = pid {
                    write!(f, " pid {p}")?;
                }
                Ok(())
            }
            HitItem::User { name, uid } => write!(f, "user {} (uid {uid})", printable(name)),
            HitItem::Service { name } => write!(f, "service {}", printable(name)),
            HitItem::System { hostname } => write!(f, "system {}", printable(hostname)),
            HitItem::Dns { host, address } => {
                write!(f, "hosts entry {} {}", printable(host), printable(address))
            }
        }
    }
}

/// A collected non-file item: all its values, computed up front (they are cheap).
#[derive(Debug, Clone)]
pub struct SimpleItem {
    /// Item type.
    pub ty: ItemType,
    /// Field values.
    pub values: HashMap<Field, FieldValue>,
    /// Description for reports.
    pub describe: HitItem,
    /// Fields the item has but that could not be read (a process's program, without the
    /// right to read its `exe` link): a term on them is unknown, not false.
    pub undetermined: Vec<Field>,
}

impl Item for SimpleItem {
    fn item_type(&self) -> ItemType {
        self.ty
    }
    fn value(&mut self, field: Field) -> Option<Cow<'_, FieldValue>> {
        self.values.get(&field).map(Cow::Borrowed)
    }
    fn undetermined(&mut self, field: Field) -> bool {
        self.undetermined.contains(&field)
    }
}

/// uid → login, from `etc/passwd` under the host root.
pub fn user_names(host_root: &Path) -> HashMap<u32, String> {
    let mut m = HashMap::new();
    if let Ok(t) = read_device_text(host_root, "etc/passwd") {
        for line in t.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() >= 3 {
                if let Ok(uid) = f[2].parse() {
                    m.entry(uid).or_insert_with(|| f[0].to_string());
                }
            }
        }
    }
    m
}

/// The device's file `device` as text, a byte that is not UTF-8 (in a comment field
/// of `etc/passwd`, say) read as U+FFFD rather than losing the whole file.
fn read_device_text(host_root: &Path, device: &str) -> std::io::Result<String> {
    crate::walk::read_device_bytes(host_root, device)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

fn s(v: impl Into<String>) -> FieldValue {
    FieldValue::Str(v.into())
}

/// A name or path as terms compare it: its characters, not the escaped form reports
/// show (`back\slp` is `back\slp`, a right-to-left override is that character), as
/// for files (see `path_text::matching_text`).
fn name_value(encoded: &str) -> FieldValue {
    FieldValue::Str(riposte_model::path_text::matching_text(encoded).into_owned())
}

/// Accounts from `etc/passwd`.
pub fn users(host_root: &Path) -> Vec<SimpleItem> {
    let Ok(t) = read_device_text(host_root, "etc/passwd") else {
        return Vec::new();
    };
    t.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 7 {
                return None;
            }
            let uid: i64 = f[2].parse().ok()?;
            let mut v = HashMap::new();
            v.insert(Field::UserName, s(f[0]));
            v.insert(Field::UserId, FieldValue::Int(uid));
            v.insert(
                Field::UserGroupId,
                FieldValue::Int(f[3].parse().unwrap_or(-1)),
            );
            // The comment field is `Name,room,work phone,home phone,other` (GECOS), as
            // `adduser` writes it (`Eve,,,`): the name is its first part. The whole
            // stays a value too, for a term on the other parts.
            let gecos = f[4];
            let name = gecos.split(',').next().unwrap_or(gecos);
            let full_name = if name == gecos {
                s(gecos)
            } else {
                FieldValue::List(vec![s(name), s(gecos)])
            };
            v.insert(Field::UserFullName, full_name);
            v.insert(Field::UserHome, s(f[5]));
            v.insert(Field::UserShell, s(f[6]));
            Some(SimpleItem {
                ty: ItemType::User,
                values: v,
                describe: HitItem::User {
                    name: f[0].to_string(),
                    uid,
                },
                undetermined: Vec::new(),
            })
        })
        .collect()
}

fn boot_time(proc_root: &Path) -> i64 {
    std::fs::read_to_string(proc_root.join("stat"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("btime ").and_then(|v| v.trim().parse().ok()))
        })
        .unwrap_or(0)
}

/// Linux reports process times in USER_HZ, which is 100 on every supported arch.
const USER_HZ: f64 = 100.0;

/// Processes from `proc_root`.
pub fn processes(proc_root: &Path, names: &HashMap<u32, String>) -> Vec<SimpleItem> {
    let btime = boot_time(proc_root);
    let Ok(rd) = std::fs::read_dir(proc_root) else {
        return Vec::new();
    };
    // Not the sweeping process itself: its command line names the indicator files, and
    // an indicator on process arguments (`arguments contains mimikatz`) would find it.
    let own = (proc_root == Path::new("/proc")).then(|| i64::from(std::process::id()));
    let mut out = Vec::new();
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i64>().ok()) else {
            continue;
        };
        if Some(pid) == own {
            continue;
        }
        let dir = e.path();
        // Bytes, not text: a process named with bytes that are not UTF-8 must not vanish
        // from the sweep because its stat line cannot be read as a string.
        let Ok(stat) = std::fs::read(dir.join("stat")) else {
            continue;
        };
        // comm is in parentheses and may contain spaces: split after the last ')'.
        let (comm, comm_len, rest) = match (
            stat.iter().position(|&b| b == b'('),
            stat.iter().rposition(|&b| b == b')'),
        ) {
            (Some(a), Some(b)) if b > a => (
                riposte_model::path_text::encode_bytes(&stat[a + 1..b]),
                b - a - 1,
                String::from_utf8_lossy(&stat[b + 1..]).into_owned(),
            ),
            _ => continue,
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
        // after ')': state(0) ppid(1) … utime(11) stime(12) … starttime(19)
        let ppid = num(1);
        let utime = num(11) as f64 / USER_HZ;
        let stime = num(12) as f64 / USER_HZ;
        let start = btime + (num(19) as f64 / USER_HZ) as i64;
        let exe = executable(&dir);
        // Without the right to read it (another user's process, swept without root), the
        // program is not known: a negated test on it must not hold. (A kernel thread has
        // none: not found.)
        let exe_hidden = exe
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied);
        let exe = exe.ok();
        let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        // The kernel keeps 15 bytes of a name (TASK_COMM_LEN): where the program cannot
        // be read, a comm of that length may be cut, and the name is not known.
        let name_cut = exe_hidden && comm_len >= 15;
        let name = exe
            .as_deref()
            .and_then(|p| p.rsplit('/').next())
            .map(str::to_string)
            .unwrap_or(comm);
        // Read lossily: its Name: line holds the raw name, the Uid: line is ASCII.
        let uid = std::fs::read(dir.join("status"))
            .ok()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .and_then(|t| {
                t.lines().find_map(|l| {
                    l.strip_prefix("Uid:")
                        .and_then(|v| v.split_whitespace().next())
                        .and_then(|v| v.parse::<u32>().ok())
                })
            });
        let mut v = HashMap::new();
        // A name that may be cut is left out: undetermined, below.
        if !name_cut {
            v.insert(Field::ProcName, name_value(&name));
        }
        if let Some(p) = &exe {
            v.insert(Field::ProcPath, name_value(p));
        }
        v.insert(Field::ProcPid, FieldValue::Int(pid));
        v.insert(Field::ProcParentPid, FieldValue::Int(ppid));
        v.insert(Field::ProcArguments, s(args.join(" ")));
        if let Some(uid) = uid {
            let user = names.get(&uid).cloned().unwrap_or_else(|| uid.to_string());
            v.insert(Field::ProcUser, s(user));
        }
        // Whole seconds: the boot time it counts from is given in whole seconds.
        v.insert(
            Field::ProcStartTime,
            FieldValue::Time(riposte_ioc::value::Timestamp::from_secs(start)),
        );
        v.insert(Field::ProcUserTime, FieldValue::Duration(utime));
        v.insert(Field::ProcKernelTime, FieldValue::Duration(stime));
        out.push(SimpleItem {
            ty: ItemType::Process,
            values: v,
            describe: HitItem::Process { pid, name },
            undetermined: match (exe_hidden, name_cut) {
                (true, true) => vec![Field::ProcPath, Field::ProcName],
                (true, false) => vec![Field::ProcPath],
                _ => Vec::new(),
            },
        });
    }
    out
}

fn tcp_state(code: &str) -> &'static str {
    match code {
        "01" => "ESTABLISHED",
        "02" => "SYN_SENT",
        "03" => "SYN_RECV",
        "04" => "FIN_WAIT1",
        "05" => "FIN_WAIT2",
        "06" => "TIME_WAIT",
        "07" => "CLOSE",
        "08" => "CLOSE_WAIT",
        "09" => "LAST_ACK",
        "0A" => "LISTEN",
        "0B" => "CLOSING",
        _ => "UNKNOWN",
    }
}

/// Decodes `0100007F:1F90` (v4) or the 32-hex-digit v6 form of `/proc/net/*`.
fn parse_addr(s: &str) -> Option<(std::net::IpAddr, i64)> {
    let (a, p) = s.split_once(':')?;
    let port = i64::from_str_radix(p, 16).ok()?;
    let ip = if a.len() == 8 {
        let n = u32::from_str_radix(a, 16).ok()?;
        std::net::IpAddr::from(n.to_le_bytes())
    } else if a.len() == 32 {
        let mut bytes = [0u8; 16];
        for w in 0..4 {
            let n = u32::from_str_radix(&a[w * 8..w * 8 + 8], 16).ok()?;
            bytes[w * 4..w * 4 + 4].copy_from_slice(&n.to_le_bytes());
        }
        let v6 = std::net::Ipv6Addr::from(bytes);
        match v6.to_ipv4_mapped() {
            Some(v4) => std::net::IpAddr::V4(v4),
            None => std::net::IpAddr::V6(v6),
        }
    } else {
        return None;
    };
    Some((ip, port))
}

/// The program a process runs (`/proc/<pid>/exe`), in path_text form like file paths,
/// so that an IOC names a process's file the way it names the file itself.
fn executable(proc_dir: &Path) -> std::io::Result<String> {
    std::fs::read_link(proc_dir.join("exe")).map(|p| {
        riposte_model::path_text::encode(p)
            .trim_end_matches(" (deleted)")
            .to_string()
    })
}

/// Socket inode → (pid, process name), from `proc_root/*/fd`; and whether some
/// process's descriptors could not be read (another user's, swept without root), so that
/// a socket found in none may still have an owner.
fn socket_owners(proc_root: &Path) -> (HashMap<u64, (i64, String)>, bool) {
    let mut m = HashMap::new();
    let mut hidden = false;
    let Ok(rd) = std::fs::read_dir(proc_root) else {
        return (m, hidden);
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i64>().ok()) else {
            continue;
        };
        let fds = match std::fs::read_dir(e.path().join("fd")) {
            Ok(fds) => fds,
            Err(err) => {
                hidden |= err.kind() == std::io::ErrorKind::PermissionDenied;
                continue;
            }
        };
        // The name ProcessItem/name gives the same process (its program's file name,
        // else its comm), so that PortItem/process and it agree.
        let name = executable(&e.path())
            .ok()
            .and_then(|p| p.rsplit('/').next().map(str::to_string))
            .or_else(|| {
                std::fs::read(e.path().join("comm"))
                    .ok()
                    .map(|c| riposte_model::path_text::encode_bytes(c.trim_ascii()))
            })
            .unwrap_or_default();
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                let t = target.to_string_lossy();
                if let Some(inode) = t
                    .strip_prefix("socket:[")
                    .and_then(|r| r.strip_suffix(']'))
                    .and_then(|r| r.parse().ok())
                {
                    m.entry(inode).or_insert((pid, name.clone()));
                }
            }
        }
    }
    (m, hidden)
}

/// Sockets from `proc_root/net/{tcp,tcp6,udp,udp6}` with their owning processes.
pub fn ports(proc_root: &Path) -> Vec<SimpleItem> {
    let (owners, owners_hidden) = socket_owners(proc_root);
    let mut out = Vec::new();
    for (file, proto) in [
        ("tcp", "tcp"),
        ("tcp6", "tcp"),
        ("udp", "udp"),
        ("udp6", "udp"),
    ] {
        let Ok(t) = std::fs::read_to_string(proc_root.join("net").join(file)) else {
            continue;
        };
        for line in t.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 {
                continue;
            }
            let (Some((lip, lport)), Some((rip, rport))) = (parse_addr(f[1]), parse_addr(f[2]))
            else {
                continue;
            };
            let state = if proto == "tcp" {
                tcp_state(f[3])
            } else if f[3] == "07" {
                "LISTEN"
            } else {
                "ESTABLISHED"
            };
            let inode: u64 = f[9].parse().unwrap_or(0);
            let owner = owners.get(&inode);
            // Its owner, where it has one, may be a process whose descriptors could not be
            // read: then who owns it is not known, and a term on it (negated too) must not
            // hold. (A socket no process holds, such as one in TIME_WAIT, has inode 0.)
            let mut undetermined = Vec::new();
            if owner.is_none() && owners_hidden && inode != 0 {
                undetermined = vec![Field::PortPid, Field::PortProcess, Field::PortPath];
            }
            let mut v = HashMap::new();
            v.insert(Field::PortLocalIp, FieldValue::Ip(lip));
            v.insert(Field::PortLocalPort, FieldValue::Int(lport));
            v.insert(Field::PortRemoteIp, FieldValue::Ip(rip));
            v.insert(Field::PortRemotePort, FieldValue::Int(rport));
            v.insert(Field::PortProtocol, s(proto));
            v.insert(Field::PortState, s(state));
            if let Some((pid, name)) = owner {
                v.insert(Field::PortPid, FieldValue::Int(*pid));
                v.insert(Field::PortProcess, name_value(name));
                match executable(&proc_root.join(pid.to_string())) {
                    Ok(p) => {
                        v.insert(Field::PortPath, name_value(&p));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                        undetermined.push(Field::PortPath)
                    }
                    Err(_) => {}
                }
            }
            let fmt = |ip: std::net::IpAddr, port: i64| match ip {
                std::net::IpAddr::V6(_) => format!("[{ip}]:{port}"),
                _ => format!("{ip}:{port}"),
            };
            out.push(SimpleItem {
                ty: ItemType::Port,
                values: v,
                describe: HitItem::Port {
                    protocol: proto.to_string(),
                    local: fmt(lip, lport),
                    remote: fmt(rip, rport),
                    pid: owner.map(|o| o.0),
                },
                undetermined,
            });
        }
    }
    out
}

/// Where systemd loads system units from, the first place a name is found winning
/// (systemd.unit(5)): control and transient units, generators' output, the
/// administrator's, then the packages'.
const SYSTEM_UNIT_DIRS: &[&str] = &[
    "etc/systemd/system.control",
    "run/systemd/system.control",
    "run/systemd/transient",
    "run/systemd/generator.early",
    "etc/systemd/system",
    "run/systemd/system",
    "run/systemd/generator",
    "usr/local/lib/systemd/system",
    "usr/lib/systemd/system",
    "lib/systemd/system",
    "run/systemd/generator.late",
];

/// Where every user's systemd loads user units from, after each user's own
/// (`~/.config/systemd/user`, `~/.local/share/systemd/user`: [`USER_HOME_UNIT_DIRS`]).
const USER_UNIT_DIRS: &[&str] = &[
    "etc/xdg/systemd/user",
    "etc/systemd/user",
    "run/systemd/user",
    "usr/local/share/systemd/user",
    "usr/share/systemd/user",
    "usr/local/lib/systemd/user",
    "usr/lib/systemd/user",
    "lib/systemd/user",
];

/// A user's own unit directories, under the home directory.
const USER_HOME_UNIT_DIRS: &[&str] = &[".config/systemd/user", ".local/share/systemd/user"];

/// One service manager's units: the system's, every user's, or one user's own.
struct UnitSet {
    /// Unit directories (device paths without the leading `/`), first winning.
    dirs: Vec<String>,
    /// How many of `dirs`, from the first, hold the units listed as this set's (a
    /// user's own set lists them all: a user's drop-ins and `*.wants` links apply to the
    /// units every user has too).
    listed: usize,
    /// Where the `*.wants` links that enable a unit are.
    config_dirs: Vec<String>,
    /// Whether a unit's state can be read from its cgroup (system units, on a live
    /// systemd host).
    status: bool,
}

/// The device's directory `device` (with or without its leading `/`), its links
/// followed inside the device's tree (an image's absolute links name its own files),
/// and read through its descriptor from then on.
fn device_dir(host_root: &Path, device: &str) -> Option<crate::walk::DeviceDir> {
    crate::walk::DeviceDir::open(host_root, device).ok()
}

/// What a collector found, and the places it could not look at: where there are any, an
/// item it did not find may be just there, so a term no found item satisfies is unknown
/// rather than false.
#[derive(Debug, Default)]
pub struct Collected {
    pub items: Vec<SimpleItem>,
    /// Each place that could not be read, as its device path and why.
    pub unread: Vec<String>,
}

impl From<Vec<SimpleItem>> for Collected {
    fn from(items: Vec<SimpleItem>) -> Self {
        Collected {
            items,
            unread: Vec::new(),
        }
    }
}

/// The entries of the device's unit directory (or enabling folder) `device`: `None`
/// where it is not there, or is no directory, or a loop of links, as systemd finds
/// nothing there; and `None` where it cannot be opened or listed, with why in `unread`
/// (what it holds is unknown, not nothing).
fn unit_dir_entries(
    host_root: &Path,
    device: &str,
    unread: &mut Vec<String>,
) -> Option<Vec<(std::ffi::OsString, bool)>> {
    let listed = crate::walk::DeviceDir::open(host_root, device).and_then(|d| d.entries());
    match listed {
        Ok(entries) => Some(entries),
        Err(e) if nothing_there(&e) => None,
        Err(e) => {
            unread.push(format!("/{}: {e}", device.trim_start_matches('/')));
            None
        }
    }
}

/// Whether opening a directory failed because there is none to look at (not there, not a
/// directory, a loop of links), rather than because it could not be looked at.
fn nothing_there(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound
        || matches!(e.raw_os_error(), Some(libc::ENOTDIR | libc::ELOOP))
}

/// Where systemd keeps the cgroups of system services, each named after its unit.
const SYSTEM_SERVICE_CGROUPS: &str = "sys/fs/cgroup/system.slice";

/// systemd service units under the host root: the system's and the users' (a user unit
/// started at login is persistence as much as a system one), each with what its drop-ins
/// (`NAME.service.d/*.conf`, `service.d/*.conf`) change, as systemd would run it. A unit
/// directory that could not be read (a user's home the sweep may not enter) is listed in
/// `unread`: its units are unknown.
pub fn services(host_root: &Path) -> Collected {
    // Whether a unit runs is read from systemd's cgroups: only where systemd manages the
    // system (`/run/systemd/system`, as `sd_booted` tells) and its cgroups are there. On
    // a host without it, or an image under `--host-root`, a status term is unknown.
    let is_dir = |d: &str| device_dir(host_root, d).is_some();
    let status_known = is_dir("run/systemd/system") && is_dir(SYSTEM_SERVICE_CGROUPS);
    let strings = |dirs: &[&str]| dirs.iter().map(|d| d.to_string()).collect::<Vec<_>>();
    let mut sets = vec![
        UnitSet {
            dirs: strings(SYSTEM_UNIT_DIRS),
            listed: SYSTEM_UNIT_DIRS.len(),
            config_dirs: strings(&["etc/systemd/system"]),
            status: status_known,
        },
        UnitSet {
            dirs: strings(USER_UNIT_DIRS),
            listed: USER_UNIT_DIRS.len(),
            config_dirs: strings(&["etc/systemd/user"]),
            status: false,
        },
    ];
    // Each user's own units, with every user's drop-ins and `*.wants` too.
    let mut homes: Vec<String> = users(host_root)
        .iter()
        .filter_map(|u| match u.values.get(&Field::UserHome) {
            Some(FieldValue::Str(h)) if h.starts_with('/') && h != "/" => {
                Some(h.trim_matches('/').to_string())
            }
            _ => None,
        })
        .collect();
    homes.sort();
    homes.dedup();
    let mut unread = Vec::new();
    // Without the accounts, the users' own units are not known.
    if let Err(e) = crate::walk::read_device_bytes(host_root, "etc/passwd") {
        if !nothing_there(&e) {
            unread.push(format!("/etc/passwd: {e}"));
        }
    }
    for home in homes {
        // The user's folders that are there, or that are there but cannot be read (what
        // they hold is unknown, which the set then says).
        let mut dirs = Vec::new();
        for d in USER_HOME_UNIT_DIRS {
            let dir = format!("{home}/{d}");
            let before = unread.len();
            if unit_dir_entries(host_root, &dir, &mut unread).is_some() || unread.len() > before {
                dirs.push(dir);
            }
        }
        if dirs.is_empty() {
            continue;
        }
        dirs.extend(strings(USER_UNIT_DIRS));
        sets.push(UnitSet {
            config_dirs: vec![
                format!("{home}/{}", USER_HOME_UNIT_DIRS[0]),
                "etc/systemd/user".into(),
            ],
            listed: dirs.len(),
            dirs,
            status: false,
        });
    }
    let mut out = Vec::new();
    for set in &sets {
        unit_items(host_root, set, &mut out, &mut unread);
    }
    // Every user's directories are in each user's set too: said once.
    unread.sort();
    unread.dedup();
    Collected { items: out, unread }
}

/// The service units `set` lists, as items; the directories that could not be read go
/// to `unread`.
fn unit_items(
    host_root: &Path,
    set: &UnitSet,
    out: &mut Vec<SimpleItem>,
    unread: &mut Vec<String>,
) {
    // Each directory listed once for the whole set: units, drop-in folders and
    // templates are looked up in these (a missing folder costs no system call).
    let mut listing_unread = Vec::with_capacity(set.dirs.len());
    let listings: Vec<Listing> = set
        .dirs
        .iter()
        .map(|d| {
            let before = unread.len();
            let listing = unit_dir_entries(host_root, d, unread)
                .map(|entries| {
                    entries
                        .into_iter()
                        .filter_map(|(name, _)| name.into_string().ok())
                        .collect()
                })
                .unwrap_or_default();
            listing_unread.push(unread.len() > before);
            listing
        })
        .collect();
    // What the links of each directory's `*.wants` (`*.requires`, `*.upholds`) folders
    // name, for the directories the set lists units of and its configuration ones.
    // Where a configuration directory, or one of its enabling folders, could not be
    // read, a unit not found enabled may be.
    let mut wanted_known = true;
    let links: Vec<Vec<String>> = set
        .dirs
        .iter()
        .zip(&listings)
        .enumerate()
        .map(|(i, (d, listing))| {
            if i < set.listed || set.config_dirs.contains(d) {
                let before = unread.len();
                let names = enabling_links(host_root, d, listing, unread);
                if set.config_dirs.contains(d) && (listing_unread[i] || unread.len() > before) {
                    wanted_known = false;
                }
                names
            } else {
                Vec::new()
            }
        })
        .collect();
    // Those in its configuration directories are the units they enable (read once,
    // not per unit). Every configuration directory is one of the set's directories.
    let wanted: std::collections::HashSet<String> = set
        .dirs
        .iter()
        .zip(&links)
        .filter(|(d, _)| set.config_dirs.contains(d))
        .flat_map(|(_, names)| names.iter().cloned())
        .collect();
    let view = SetView {
        set,
        listings,
        listing_unread,
        wanted,
        wanted_known,
        read_budget: std::cell::Cell::new(SET_READ_BUDGET),
        keep_budget: std::cell::Cell::new(SET_KEEP_BUDGET),
    };
    let listings = &view.listings;
    // Names already given by a more important directory of the set (which wins).
    let mut seen = std::collections::HashSet::new();
    for (i, d) in set.dirs.iter().enumerate() {
        let names = listings[i]
            .iter()
            .filter(|n| n.ends_with(".service") && !n.ends_with("@.service"));
        for name in names {
            if !seen.insert(name.clone()) || i >= set.listed {
                continue;
            }
            out.push(unit_item(host_root, &view, d, name, name));
        }
    }
    // An instance of a template (`getty@tty1.service`, from `getty@.service`) has no
    // file of its own: it exists where a `*.wants` or `*.requires` link of the set
    // names it, and runs the template's text with its instance name filled in.
    let mut instances: Vec<&String> = links
        .iter()
        .take(set.listed)
        .flatten()
        .filter(|n| template_of(n).is_some())
        .collect();
    instances.sort();
    for instance in instances {
        let Some(template) = template_of(instance) else {
            continue;
        };
        if !seen.insert(instance.clone()) {
            continue;
        }
        let template_dir = set
            .dirs
            .iter()
            .zip(listings)
            .find(|(_, listing)| listing.contains(&template));
        // No template, nothing systemd could start.
        if let Some((dir, _)) = template_dir {
            out.push(unit_item(host_root, &view, dir, &template, instance));
        }
    }
}

/// The names the links in the enabling folders of unit directory `dir` give (`dir`
/// listed as `listing`); a folder that is itself a link is followed in the device's
/// tree. One that cannot be read goes to `unread`.
fn enabling_links(
    host_root: &Path,
    dir: &str,
    listing: &Listing,
    unread: &mut Vec<String>,
) -> Vec<String> {
    let mut names = Vec::new();
    for folder in listing.iter().filter(|f| enabling_folder(f)) {
        if let Some(links) = unit_dir_entries(host_root, &format!("{dir}/{folder}"), unread) {
            names.extend(links.into_iter().filter_map(|(n, _)| n.into_string().ok()));
        }
    }
    names
}

/// Whether a folder of a unit directory holds links that enable the units they name
/// (`multi-user.target.wants`, `*.requires`, `*.upholds`).
fn enabling_folder(folder: &str) -> bool {
    [".wants", ".requires", ".upholds"]
        .iter()
        .any(|suffix| folder.ends_with(suffix))
}

/// The names in one unit directory.
type Listing = std::collections::BTreeSet<String>;

/// One unit set as its units are looked up in it: each directory listed once.
struct SetView<'a> {
    set: &'a UnitSet,
    /// The names in each of `set.dirs`, in their order.
    listings: Vec<Listing>,
    /// Which of `set.dirs` could not be read: any of them may hold a unit of the same
    /// name that wins, or drop-ins for any unit.
    listing_unread: Vec<bool>,
    /// The unit names that the set's `*.wants` and `*.requires` links name.
    wanted: std::collections::HashSet<String>,
    /// Whether `wanted` is all of them (every enabling folder could be read).
    wanted_known: bool,
    /// Bytes of unit files the set may still read, and of values its items may still
    /// keep: a user's own units (thousands of instance links to a 16 MiB template)
    /// must not exhaust the root sweep. Past either, what is left is unknown.
    read_budget: std::cell::Cell<u64>,
    keep_budget: std::cell::Cell<usize>,
}

/// What a unit set may read of unit files, and keep of their values ([`SetView`]).
const SET_READ_BUDGET: u64 = 256 << 20;
const SET_KEEP_BUDGET: usize = 64 << 20;

/// The template an instance's name comes from (`getty@.service` for
/// `getty@tty1.service`); `None` for a name that is no instance.
fn template_of(name: &str) -> Option<String> {
    let stem = name.strip_suffix(".service")?;
    let (prefix, instance) = stem.split_once('@')?;
    (!prefix.is_empty() && !instance.is_empty()).then(|| format!("{prefix}@.service"))
}

/// The most a value with its specifiers filled in may grow to.
const EXPANDED_MAX: usize = 1 << 20;

/// What systemd strips around lines, keys and values (`WHITESPACE`): not every
/// Unicode space.
const UNIT_BLANKS: &[char] = &[' ', '\t', '\n', '\r'];

/// The longest line systemd reads in a unit file (`LONG_LINE_MAX`): a longer one fails
/// the unit.
const UNIT_LINE_MAX: usize = 1 << 20;

/// `text` with the unit specifiers of systemd.unit(5) that name the unit itself
/// replaced, for unit `name`: `%n %N %p %P %i %I %j %J` and `%%`. `None` where the
/// text holds another (the runtime's: `%h`, `%t`…) or the result would pass
/// [`EXPANDED_MAX`].
fn expand_specifiers(text: &str, name: &str) -> Option<String> {
    let stem = name.strip_suffix(".service").unwrap_or(name);
    let (prefix, instance) = stem.split_once('@').unwrap_or((stem, ""));
    let last_dash = prefix.rsplit('-').next().unwrap_or(prefix);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        // A user's own template must not make the root sweep's memory explode by
        // repeating `%n`.
        if out.len() > EXPANDED_MAX {
            return None;
        }
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some('n') => out.push_str(name),
            Some('N') => out.push_str(stem),
            Some('p') => out.push_str(prefix),
            Some('P') => out.push_str(&unescape_unit_name(prefix)),
            Some('i') => out.push_str(instance),
            Some('I') => out.push_str(&unescape_unit_name(instance)),
            Some('j') => out.push_str(last_dash),
            Some('J') => out.push_str(&unescape_unit_name(last_dash)),
            // Another specifier is the runtime's (`%h` a home, `%t` a runtime
            // directory), or no specifier, which fails the unit: either way this sweep
            // cannot say what the value is.
            Some(_) | None => return None,
        }
    }
    (out.len() <= EXPANDED_MAX).then_some(out)
}

/// A part of a unit name as systemd-escape(1) writes it, unescaped: `-` is `/`, and
/// `\xNN` is the byte NN.
fn unescape_unit_name(part: &str) -> String {
    let bytes = part.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'\\' && bytes.get(i + 1) == Some(&b'x'))
            .then(|| bytes.get(i + 2..i + 4))
            .flatten()
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (escaped, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 4;
            }
            (None, b'-') => {
                out.push(b'/');
                i += 1;
            }
            (None, b) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What a unit's files say, as systemd reads them (systemd.syntax(7)).
#[derive(Default)]
struct UnitSettings {
    /// `ExecStart=` lines of `[Service]`, prefixes such as `-` removed; an empty
    /// assignment empties the list, as a drop-in overriding the program writes first.
    exec: Vec<String>,
    description: String,
    install: bool,
    slice: Option<String>,
    /// A line longer than systemd reads: the unit does not load as written.
    too_long: bool,
}

impl UnitSettings {
    /// Reads one unit file or drop-in into these settings, a later one overriding.
    /// Lines end at `\n`, `\r` or NUL, as `read_line_full` ends them; comment lines
    /// are dropped before anything else; a line ending in an odd number of `\` goes on
    /// on the next (an escaped backslash does not).
    fn read(&mut self, text: &str) {
        let mut section = String::new();
        let mut pending = String::new();
        let mut mark_seen = false;
        for raw in text.split(['\n', '\r', '\0']) {
            // The byte-order mark, wherever it first appears at a line's start.
            let raw = match raw.strip_prefix('\u{feff}') {
                Some(rest) if !mark_seen => {
                    mark_seen = true;
                    rest
                }
                _ => raw,
            };
            let trimmed = raw.trim_start_matches(UNIT_BLANKS);
            if trimmed.starts_with(['#', ';']) {
                continue;
            }
            let trailing = raw.len() - raw.trim_end_matches('\\').len();
            if trailing % 2 == 1 {
                pending.push_str(&raw[..raw.len() - 1]);
                pending.push(' ');
                self.too_long |= pending.len() > UNIT_LINE_MAX;
                if self.too_long {
                    return;
                }
                continue;
            }
            pending.push_str(raw);
            let line = std::mem::take(&mut pending);
            self.too_long |= line.len() > UNIT_LINE_MAX;
            self.line(&mut section, line.trim_matches(UNIT_BLANKS));
        }
        if !pending.is_empty() {
            self.line(&mut section, pending.trim_matches(UNIT_BLANKS));
        }
    }

    /// One logical line, `key = value` counting only in its own section.
    fn line(&mut self, section: &mut String, l: &str) {
        if l.starts_with('#') || l.starts_with(';') {
            return;
        }
        if l.starts_with('[') && l.ends_with(']') {
            *section = l.to_string();
            self.install |= l == "[Install]";
            return;
        }
        let Some((key, value)) = l.split_once('=') else {
            return;
        };
        let value = value.trim_matches(UNIT_BLANKS);
        match (section.as_str(), key.trim_matches(UNIT_BLANKS)) {
            ("[Service]", "ExecStart") => match value {
                "" => self.exec.clear(),
                v => self.exec.push(v.to_string()),
            },
            ("[Service]", "Slice") => self.slice = Some(value.to_string()),
            ("[Unit]", "Description") => self.description = value.to_string(),
            _ => {}
        }
    }
}

/// The commands of one `ExecStart=` line of unit `name`, each as its program and its
/// arguments: the line cut into words as systemd's `extract_first_word` cuts them
/// (quotes anywhere in a word, C escapes decoded), commands separated by a lone `;`,
/// the program's prefixes (`-@+!:`) taken off the word itself, its path simplified,
/// and the unit's specifiers filled in in each word once cut (an instance name that
/// unescapes to a space does not split the program). `None` where a word holds a
/// specifier this sweep cannot fill in (`%h`: the service's runtime decides it) or
/// grows past [`EXPANDED_MAX`].
fn commands_of(line: &str, name: &str) -> Option<Vec<(String, String)>> {
    let mut commands = Vec::new();
    for command in split_words(line).split(|(_, separator)| *separator) {
        let Some(((first, _), rest)) = command.split_first() else {
            continue;
        };
        let program = first.trim_start_matches(['-', '@', '+', '!', ':']);
        let program = simplify_path(&expand_specifiers(program, name)?);
        let mut args = String::new();
        for (word, _) in rest {
            if !args.is_empty() {
                args.push(' ');
            }
            args.push_str(&expand_specifiers(word, name)?);
            if args.len() > EXPANDED_MAX {
                return None;
            }
        }
        commands.push((program, args));
    }
    Some(commands)
}

/// `line` cut into words as `extract_first_word` with `EXTRACT_UNQUOTE |
/// EXTRACT_CUNESCAPE` cuts it: blanks separate words, quotes (anywhere in a word)
/// group, and C escapes are decoded. Each word comes with whether it separates
/// commands: a lone `;` written as it is (not quoted, not escaped).
fn split_words(line: &str) -> Vec<(String, bool)> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    // Whether the word so far is only characters written as they are.
    let mut plain = true;
    let mut quote: Option<char> = None;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, ' ' | '\t' | '\n' | '\r') => {
                if in_word {
                    let separator = plain && word == ";";
                    words.push((std::mem::take(&mut word), separator));
                    in_word = false;
                    plain = true;
                }
            }
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
                plain = false;
            }
            (Some(q), c) if c == q => quote = None,
            (_, '\\') => {
                in_word = true;
                plain = false;
                // One escape, decoded as `c_unescape` decodes it.
                let mut escape = String::from('\\');
                if let Some(next) = chars.next() {
                    escape.push(next);
                    let (more, digit): (usize, fn(&char) -> bool) = match next {
                        'x' => (2, char::is_ascii_hexdigit),
                        'u' => (4, char::is_ascii_hexdigit),
                        'U' => (8, char::is_ascii_hexdigit),
                        '0'..='7' => (2, |d: &char| ('0'..='7').contains(d)),
                        _ => (0, char::is_ascii_hexdigit),
                    };
                    for _ in 0..more {
                        match chars.peek() {
                            Some(d) if digit(d) => {
                                escape.push(*d);
                                chars.next();
                            }
                            _ => break,
                        }
                    }
                }
                if escape == "\\;" {
                    // An escaped `;` is that character, never a separator.
                    word.push(';');
                } else {
                    word.push_str(&c_unescape(&escape));
                }
            }
            (_, c) => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        let separator = plain && word == ";";
        words.push((word, separator));
    }
    words
}

/// `word` with the C escapes systemd decodes in a command line: `\\ \" \' \s \t \n \r
/// \a \b \f \v`, `\xNN`, `\NNN` (octal), `\uNNNN` and `\UNNNNNNNN`. An escape that is
/// none of these is kept as written.
fn c_unescape(word: &str) -> String {
    let mut out = Vec::with_capacity(word.len());
    let b = word.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' || i + 1 == b.len() {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let hex = |from: usize, n: usize| {
            b.get(from..from + n)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                .and_then(|h| u32::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok())
        };
        let simple = match b[i + 1] {
            b'\\' => Some(b'\\'),
            b'"' => Some(b'"'),
            b'\'' => Some(b'\''),
            b's' => Some(b' '),
            b't' => Some(b'\t'),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b'a' => Some(0x07),
            b'b' => Some(0x08),
            b'f' => Some(0x0c),
            b'v' => Some(0x0b),
            _ => None,
        };
        if let Some(c) = simple {
            out.push(c);
            i += 2;
        } else if let (b'x', Some(v)) = (b[i + 1], hex(i + 2, 2)) {
            out.push(v as u8);
            i += 4;
        } else if let Some(v) = b
            .get(i + 1..i + 4)
            .filter(|o| o.iter().all(|c| (b'0'..=b'7').contains(c)) && o[0] <= b'3')
            .map(|o| o.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0')))
        {
            out.push(v as u8);
            i += 4;
        } else if let Some(c) = match b[i + 1] {
            b'u' => hex(i + 2, 4).map(|v| (v, 6)),
            b'U' => hex(i + 2, 8).map(|v| (v, 10)),
            _ => None,
        }
        .and_then(|(v, len)| char::from_u32(v).map(|c| (c, len)))
        {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.0.encode_utf8(&mut buf).as_bytes());
            i += c.1;
        } else {
            out.push(b'\\');
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `path` as systemd simplifies a program's path: repeated `/` as one, `.` segments
/// and a trailing `/` dropped (`..` kept: it names another file once links count).
fn simplify_path(path: &str) -> String {
    if !path.starts_with('/') {
        return path.to_string();
    }
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

/// Where systemd puts the cgroup of unit `name` under `system.slice`, escaped as
/// `cg_escape` escapes cgroup names (first), then as it is (systemd versions escape
/// different controller names): its own folder, or, for an instance, its folder
/// inside its template's slice (`getty@tty1.service` in `system-getty.slice`,
/// `serial-getty@ttyS0.service` in `system-serial\x2dgetty.slice`).
fn cgroup_names(name: &str) -> Vec<String> {
    let slice = match name
        .strip_suffix(".service")
        .and_then(|n| n.split_once('@'))
    {
        Some((prefix, _)) if template_of(name).is_some() => {
            Some(format!("system-{}.slice", unit_name_escape(prefix)))
        }
        _ => None,
    };
    let place = |escape: fn(&str) -> String| match &slice {
        Some(slice) => format!("{}/{}", escape(slice), escape(name)),
        None => escape(name),
    };
    let mut names = vec![place(cgroup_escape), place(str::to_string)];
    names.dedup();
    names
}

/// A name as a cgroup folder: with a `_` before it where it could be taken for one of
/// the kernel's own files (a controller's name before its first `.`, `cgroup.*`) or
/// starts with `_` or `.`.
fn cgroup_escape(name: &str) -> String {
    // systemd's own controllers (`cgroup_controller_table`), which differ between its
    // versions: `unit_item` looks under both spellings.
    const CONTROLLERS: &[&str] = &[
        "cpu",
        "cpuacct",
        "cpuset",
        "io",
        "blkio",
        "memory",
        "devices",
        "pids",
        "bpf-firewall",
        "bpf-devices",
        "bpf-foreign",
        "bpf-socket-bind",
        "bpf-restrict-network-interfaces",
        "cgroup",
    ];
    let head = name.split('.').next().unwrap_or(name);
    if name.starts_with(['_', '.']) || CONTROLLERS.contains(&head) {
        format!("_{name}")
    } else {
        name.to_string()
    }
}

/// A unit-name part escaped as `unit_name_escape` writes it: letters, digits, `:`,
/// `_` and `.` (not first) as they are, every other byte as `\xNN`.
fn unit_name_escape(part: &str) -> String {
    let mut out = String::with_capacity(part.len());
    for (i, b) in part.bytes().enumerate() {
        if b.is_ascii_alphanumeric() || b == b':' || b == b'_' || (b == b'.' && i > 0) {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// The drop-in folders of unit `name`, most specific first (systemd.unit(5)): its own,
/// its template's, then each shorter prefix ending in `-` (`foo-bar-.service.d`,
/// `foo-.service.d`). `service.d` comes after these in every directory.
fn dropin_folders(name: &str) -> Vec<String> {
    let mut folders = vec![format!("{name}.d")];
    let mut stem = name.strip_suffix(".service").unwrap_or(name).to_string();
    if let Some(template) = template_of(name) {
        folders.push(format!("{template}.d"));
        stem = template.trim_end_matches(".service").to_string();
    }
    let stem = stem.trim_end_matches('@');
    for (i, c) in stem.char_indices().rev() {
        if c == '-' && i > 0 {
            folders.push(format!("{}-.service.d", &stem[..i]));
        }
    }
    folders.dedup();
    folders
}

/// The unit `name`, whose file `file` (its own name, or its template's) is in directory
/// `dir` of the set `view` shows, with its drop-ins applied.
fn unit_item(host_root: &Path, view: &SetView, dir: &str, file: &str, name: &str) -> SimpleItem {
    use std::os::unix::fs::FileTypeExt;
    let set = view.set;
    let device_unit = Path::new("/").join(dir).join(file);
    let device_unit_text = device_unit.to_string_lossy().into_owned();
    // Masked: a link to `/dev/null` (as written, or followed to a character device in
    // the device's tree), or an empty file, as systemd masks.
    let status = crate::walk::device_file_status(host_root, &device_unit_text);
    let masked = device_dir(host_root, dir).is_some_and(|d| {
        d.read_link(file.as_ref())
            .is_ok_and(|t| t == Path::new("/dev/null"))
    }) || status
        .as_ref()
        .is_ok_and(|m| m.file_type().is_char_device() || (m.is_file() && m.len() == 0));
    // Read through the device's links, without waiting on a FIFO, within a size, and
    // a byte that is not UTF-8 does not lose the rest: a user's own unit is the user's
    // to make anything. A file that is there but cannot be read whole leaves what it
    // may say unknown. One systemd would not load (not there, a loop, not a regular
    // file) says nothing, and one that is a character device (`/dev/null`) says
    // nothing but still hides a drop-in of its name.
    let mut unreadable = false;
    let mut read = |device: &str| -> Option<String> {
        let not_there = |e: &std::io::Error| {
            e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ELOOP)
        };
        match crate::walk::device_file_status(host_root, device) {
            Err(e) if not_there(&e) => return None,
            Err(_) => {
                unreadable = true;
                return None;
            }
            Ok(m) if m.file_type().is_char_device() => return Some(String::new()),
            Ok(m) if !m.is_file() => return None,
            Ok(m) if m.len() > view.read_budget.get() => {
                unreadable = true;
                return None;
            }
            Ok(_) => {}
        }
        match crate::walk::read_device_bytes(host_root, device) {
            Ok(bytes) => {
                let left = view.read_budget.get().saturating_sub(bytes.len() as u64);
                view.read_budget.set(left);
                Some(String::from_utf8_lossy(&bytes).into_owned())
            }
            Err(e) if not_there(&e) => None,
            Err(_) => {
                unreadable = true;
                None
            }
        }
    };
    let mut settings = UnitSettings::default();
    if !masked {
        if let Some(text) = read(&device_unit_text) {
            settings.read(&text);
        }
    }
    // Drop-ins, in file-name order, the first folder holding a name hiding the same
    // name in later ones: every directory's specific folders (the unit's own, its
    // template's, its prefixes'), then every directory's `service.d`, as systemd
    // orders them. Names starting with `.` are hidden from systemd too.
    let mut dropins: std::collections::BTreeMap<String, String> = Default::default();
    let specific = dropin_folders(name);
    let general = ["service.d".to_string()];
    // A drop-in folder that cannot be read may change anything: what the unit runs is
    // then unknown.
    let mut dropins_unread = Vec::new();
    for folders in [&specific[..], &general[..]] {
        for (d, listing) in set.dirs.iter().zip(&view.listings) {
            for folder in folders.iter().filter(|f| listing.contains(*f)) {
                let folder_path = format!("{d}/{folder}");
                let Some(entries) = unit_dir_entries(host_root, &folder_path, &mut dropins_unread)
                else {
                    continue;
                };
                for (file, _) in entries {
                    let Some(file) = file
                        .to_str()
                        .filter(|f| f.ends_with(".conf") && !f.starts_with('.'))
                    else {
                        continue;
                    };
                    dropins
                        .entry(file.to_string())
                        .or_insert_with(|| format!("/{d}/{folder}/{file}"));
                }
            }
        }
    }
    if !masked {
        for device in dropins.values() {
            if let Some(text) = read(device) {
                settings.read(&text);
            }
        }
    }
    // The link in `*.wants` (or `*.requires`, `*.upholds`) is what enables a unit;
    // where it points is the device's business.
    let enabled = view.wanted.contains(name);
    // What the unit's file or a drop-in folder that could not be read would say
    // (`[Install]`, `Slice=`, `ExecStart=`) is unknown.
    let set_unread = view.listing_unread.iter().any(|unread| *unread);
    let settings_unknown = unreadable || !dropins_unread.is_empty() || set_unread;
    let mode = if masked {
        Some("masked")
    } else if enabled {
        Some("enabled")
    } else if !view.wanted_known || settings_unknown {
        None
    } else if settings.install {
        Some("disabled")
    } else {
        Some("static")
    };
    let stem = name.trim_end_matches(".service").to_string();
    let mut v = HashMap::new();
    let mut undetermined = Vec::new();
    v.insert(
        Field::ServiceName,
        FieldValue::List(vec![s(name.to_string()), s(stem)]),
    );
    // A directory before this one that could not be read may hold the file that wins.
    let overridable = set
        .dirs
        .iter()
        .zip(&view.listing_unread)
        .take_while(|(d, _)| d.as_str() != dir)
        .any(|(_, unread)| *unread);
    if overridable {
        undetermined.push(Field::ServicePath);
    } else {
        v.insert(Field::ServicePath, s(device_unit_text));
    }
    // Running: a process in its cgroup or below it (`cgroup.events` says `populated`,
    // which counts a delegated subtree). A unit placed in a slice of its own choosing,
    // or a cgroup that cannot be read, leaves it unknown; so does one found under
    // neither of the names systemd versions give it.
    let running = match (set.status, &settings.slice) {
        (true, None) => {
            let mut answer = Some(false);
            for cgroup in cgroup_names(name) {
                let events = format!("{SYSTEM_SERVICE_CGROUPS}/{cgroup}/cgroup.events");
                match crate::walk::read_device_file(host_root, &events) {
                    Ok(t) => {
                        answer = t
                            .lines()
                            .find_map(|l| l.strip_prefix("populated "))
                            .map(|p| p.trim() == "1");
                        break;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(_) => {
                        answer = None;
                        break;
                    }
                }
            }
            // Not running here, but maybe in a slice an unread setting names.
            answer.filter(|running| *running || !settings_unknown)
        }
        _ => None,
    };
    match running {
        Some(running) => {
            v.insert(
                Field::ServiceStatus,
                s(if running { "running" } else { "stopped" }),
            );
        }
        None => undetermined.push(Field::ServiceStatus),
    }
    match mode {
        Some(mode) => {
            v.insert(Field::ServiceMode, s(mode));
        }
        None => undetermined.push(Field::ServiceMode),
    }
    let unknown_command = [
        Field::ServiceProgram,
        Field::ServiceArguments,
        Field::ServiceDescription,
    ];
    if masked {
        // A masked unit never runs: it has no program, whatever its file said.
    } else if settings_unknown || settings.too_long {
        undetermined.extend(unknown_command);
    } else {
        let description = expand_specifiers(&settings.description, name);
        // Each `ExecStart=` runs (a `oneshot` may have several), each line maybe
        // several commands: a term on the program holds if it holds for any.
        let commands: Option<Vec<(String, String)>> = settings
            .exec
            .iter()
            .map(|line| commands_of(line, name))
            .collect::<Option<Vec<_>>>()
            .map(|c| c.into_iter().flatten().collect());
        let size = description.as_ref().map_or(0, String::len)
            + commands
                .iter()
                .flatten()
                .map(|(p, a)| p.len() + a.len())
                .sum::<usize>();
        let affordable = size <= view.keep_budget.get();
        view.keep_budget
            .set(view.keep_budget.get().saturating_sub(size));
        match description.filter(|_| affordable) {
            Some(d) => {
                v.insert(Field::ServiceDescription, s(d));
            }
            None => undetermined.push(Field::ServiceDescription),
        }
        match commands.filter(|_| affordable) {
            None => undetermined.extend([Field::ServiceProgram, Field::ServiceArguments]),
            Some(commands) if commands.len() == 1 => {
                let (program, args) = commands.into_iter().next().unwrap_or_default();
                v.insert(Field::ServiceProgram, s(program));
                v.insert(Field::ServiceArguments, s(args));
            }
            Some(commands) if !commands.is_empty() => {
                let (programs, args): (Vec<_>, Vec<_>) =
                    commands.into_iter().map(|(p, a)| (s(p), s(a))).unzip();
                v.insert(Field::ServiceProgram, FieldValue::List(programs));
                v.insert(Field::ServiceArguments, FieldValue::List(args));
            }
            Some(_) => {}
        }
    }
    SimpleItem {
        ty: ItemType::Service,
        values: v,
        describe: HitItem::Service {
            name: name.to_string(),
        },
        undetermined,
    }
}

/// The host as one item: hostname, OS, local addresses. `proc_root`: a live system's
/// (`None` for an image, whose `proc` is no live system's and may link to this
/// machine's).
pub fn system_info(host_root: &Path, proc_root: Option<&Path>) -> Vec<SimpleItem> {
    // Read in the device's tree (an image's links name its own files). What it does
    // not say is not known, and a term on it, negated too, must not hold.
    let hostname = crate::walk::read_device_file(host_root, "etc/hostname")
        .ok()
        .or_else(|| {
            proc_root.and_then(|p| std::fs::read_to_string(p.join("sys/kernel/hostname")).ok())
        })
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty());
    // os-release(5): `/etc/os-release`, else `/usr/lib/os-release`.
    let os = ["etc/os-release", "usr/lib/os-release"]
        .into_iter()
        .find_map(|f| crate::walk::read_device_file(host_root, f).ok())
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("PRETTY_NAME=")
                    .map(|v| v.trim().trim_matches(['"', '\''].as_slice()).to_string())
            })
        });
    let mut ips = Vec::new();
    let read_proc = |f: &str| proc_root.and_then(|p| std::fs::read_to_string(p.join(f)).ok());
    if let Some(t) = read_proc("net/fib_trie") {
        let mut last = None;
        for l in t.lines() {
            let l = l.trim();
            if let Some(a) = l.strip_prefix("|-- ") {
                last = a.parse::<std::net::IpAddr>().ok();
            } else if l.contains("/32 host LOCAL") {
                if let Some(ip) = last {
                    if !ips.contains(&FieldValue::Ip(ip)) {
                        ips.push(FieldValue::Ip(ip));
                    }
                }
            }
        }
    }
    // IPv6: one address per line, 32 hex digits first.
    if let Some(t) = read_proc("net/if_inet6") {
        for l in t.lines() {
            let Some(hex) = l.split_whitespace().next() else {
                continue;
            };
            if let Ok(n) = u128::from_str_radix(hex, 16) {
                let ip = FieldValue::Ip(std::net::IpAddr::V6(std::net::Ipv6Addr::from(n)));
                if hex.len() == 32 && !ips.contains(&ip) {
                    ips.push(ip);
                }
            }
        }
    }
    let mut v = HashMap::new();
    let mut undetermined = Vec::new();
    match &hostname {
        Some(h) => {
            v.insert(Field::SysHostname, s(h.clone()));
        }
        None => undetermined.push(Field::SysHostname),
    }
    match os {
        Some(os) => {
            v.insert(Field::SysOs, s(os));
        }
        None => undetermined.push(Field::SysOs),
    }
    v.insert(Field::SysIpAddress, FieldValue::List(ips));
    vec![SimpleItem {
        ty: ItemType::SystemInfo,
        values: v,
        describe: HitItem::System {
            hostname: hostname.unwrap_or_default(),
        },
        undetermined,
    }]
}

/// Static name entries from `etc/hosts`.
pub fn dns_entries(host_root: &Path) -> Vec<SimpleItem> {
    let Ok(t) = crate::walk::read_device_file(host_root, "etc/hosts") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for line in t.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut f = line.split_whitespace();
        let Some(addr) = f.next() else { continue };
        let Ok(ip) = addr.parse::<std::net::IpAddr>() else {
            continue;
        };
        for host in f {
            let mut v = HashMap::new();
            v.insert(Field::DnsHost, s(host));
            v.insert(Field::DnsAddress, FieldValue::Ip(ip));
            v.insert(
                Field::DnsRecordType,
                s(if ip.is_ipv4() { "A" } else { "AAAA" }),
            );
            out.push(SimpleItem {
                ty: ItemType::DnsEntry,
                values: v,
                describe: HitItem::Dns {
                    host: host.to_string(),
                    address: addr.to_string(),
                },
                undetermined: Vec::new(),
            });
        }
    }
    out
}

/// Which hash algorithms the loaded indicators need.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Algorithms {
    /// MD5.
    pub md5: bool,
    /// SHA-1.
    pub sha1: bool,
    /// SHA-256.
    pub sha256: bool,
}

/// Hex digests of one file.
#[derive(Debug, Clone, Default)]
pub struct Digests {
    md5: Option<String>,
    sha1: Option<String>,
    sha256: Option<String>,
}

impl Digests {
    /// Digests computed elsewhere (the multi-file lanes), hex.
    pub fn new(md5: Option<String>, sha1: Option<String>, sha256: Option<String>) -> Self {
        Digests { md5, sha1, sha256 }
    }
    /// MD5, hex, when computed.
    pub fn md5(&self) -> Option<&str> {
        self.md5.as_deref()
    }
    /// SHA-1, hex, when computed.
    pub fn sha1(&self) -> Option<&str> {
        self.sha1.as_deref()
    }
    /// SHA-256, hex, when computed.
    pub fn sha256(&self) -> Option<&str> {
        self.sha256.as_deref()
    }
}

/// Lower-case hex of a digest, as indicators write it. (`hex::encode` goes through an
/// iterator of `char`s: about one per cent of a sweep that hashes every file.)
pub fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

/// Why a file's content could not be examined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentError {
    /// Larger than the scope's maximum file size.
    TooLarge,
    /// Gone since the walk listed it (removed or renamed): there was nothing to read,
    /// which the report counts apart from what could not be read.
    Gone,
    /// Read failed.
    Unreadable(String),
    /// The sweep was cancelled while the file was read (the lanes stop their files at
    /// the next read): nothing wrong with the file, so not listed as unreadable.
    Cancelled,
}

/// The error a read ends with when the sweep is cancelled (the lanes stop their files
/// at the next read): told apart from an interrupted system call by its type.
#[derive(Debug)]
pub struct SweepCancelled;

impl std::fmt::Display for SweepCancelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the sweep was cancelled")
    }
}

impl std::error::Error for SweepCancelled {}

impl From<std::io::Error> for ContentError {
    fn from(e: std::io::Error) -> Self {
        if gone(&e) {
            ContentError::Gone
        } else if cancelled(&e) {
            ContentError::Cancelled
        } else {
            ContentError::Unreadable(e.to_string())
        }
    }
}

/// Did a read end with `e` because the sweep was cancelled ([`SweepCancelled`])?
pub fn cancelled(e: &std::io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.is::<SweepCancelled>())
}

/// Does `e`, from opening or stating something the walk listed, say that it is gone
/// (removed or renamed since)? The sweep then could look, and found nothing there: not
/// "unreadable", and no reason to think the walk missed anything (ARCHITECTURE.md,
/// invariant 5).
pub fn gone(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound
}

/// Computes the requested digests over `reader` in one pass.
pub fn digest_reader(r: impl Read, alg: Algorithms) -> std::io::Result<Digests> {
    digest_sized(r, alg, u64::MAX)
}

/// As [`digest_reader`], for a regular file whose size was `expected` when it was
/// stat'ed: a short read at or past that size is its end, which saves the final
/// zero-length read (a system call per file, 100,000 of them in a large sweep). A
/// file that grew since is still read to its end at the time of reading.
pub fn digest_sized(r: impl Read, alg: Algorithms, expected: u64) -> std::io::Result<Digests> {
    // One buffer per sweep thread: allocating (and faulting in) 256 KiB for each of
    // 100,000 files cost more than the hashing of small files.
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; 256 * 1024]);
    }
    BUF.with(|b| match b.try_borrow_mut() {
        Ok(mut buf) => digest_with(r, alg, &mut buf, expected),
        Err(_) => digest_with(r, alg, &mut vec![0u8; 256 * 1024], expected),
    })
}

fn digest_with(
    mut r: impl Read,
    alg: Algorithms,
    buf: &mut [u8],
    expected: u64,
) -> std::io::Result<Digests> {
    let mut total = 0u64;
    use md5::Digest as _;
    let mut m = alg.md5.then(md5::Md5::new);
    let mut s1 = alg.sha1.then(sha1::Sha1::new);
    let mut s2 = alg.sha256.then(sha2::Sha256::new);
    loop {
        let n = match r.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        total += n as u64;
        let chunk = &buf[..n];
        if let Some(h) = m.as_mut() {
            h.update(chunk);
        }
        if let Some(h) = s1.as_mut() {
            h.update(chunk);
        }
        if let Some(h) = s2.as_mut() {
            h.update(chunk);
        }
        if n < buf.len() && total >= expected {
            break;
        }
    }
    // (`u64::MAX`: a size not known, as for `digest_reader`.)
    if expected != u64::MAX && total < expected {
        return Err(crate::multi::shrunk(total, expected));
    }
    Ok(Digests {
        md5: m.map(|h| hex_lower(&h.finalize())),
        sha1: s1.map(|h| hex_lower(&h.finalize())),
        sha256: s2.map(|h| hex_lower(&h.finalize())),
    })
}

/// Opens a file the walk found to be regular, to read its content.
///
/// * Without updating its access time (`O_NOATIME`): a sweep must not change what
///   `FileItem/Accessed` indicators and investigators later look at. The kernel refuses
///   it (EPERM) on files the caller does not own unless it has CAP_FOWNER; those are
///   opened normally.
/// * Without following a symbolic link, and without blocking, then checked to be a
///   regular file: between the walk's stat and this open the path may have been
///   replaced, and a link to `/dev/zero` or a FIFO must not hang or flood the sweep.
pub fn open_content(path: &Path) -> std::io::Result<std::fs::File> {
    open_regular(path).map(|(file, _)| file)
}

/// [`open_content`] of entry `name` of the open directory `dir` (or of a path, with
/// `libc::AT_FDCWD`): what the walk uses, so that the open does not look the path up
/// from `/` again.
pub fn open_content_at(dir: RawFd, name: &CStr) -> std::io::Result<std::fs::File> {
    checked_regular(|extra| open_flags_at(dir, name, extra)).map(|(file, _)| file)
}

/// Opens entry `name` of directory `dir` with [`open_content`]'s flags, without the
/// check that it is a regular file: for a caller that stats the open file itself and
/// so makes that check (the walk's [`crate::walk::FileStatus::Opened`]). A symbolic
/// link in its place fails with `ELOOP`.
pub fn open_unchecked_at(dir: RawFd, name: &CStr) -> std::io::Result<std::fs::File> {
    without_atime(|extra| open_flags_at(dir, name, extra))
}

fn open_flags_at(dir: RawFd, name: &CStr, extra: libc::c_int) -> std::io::Result<std::fs::File> {
    // SAFETY: `name` is NUL-terminated; the result is checked before it is owned.
    let fd = unsafe {
        libc::openat(
            dir,
            name.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NONBLOCK | extra,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    Ok(std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// `open(O_NOATIME)`, or `open(0)` where the kernel refuses `O_NOATIME` (a file the
/// caller does not own, without CAP_FOWNER).
fn without_atime(
    open: impl Fn(libc::c_int) -> std::io::Result<std::fs::File>,
) -> std::io::Result<std::fs::File> {
    match open(libc::O_NOATIME) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => open(0),
        other => other,
    }
}

/// Why a file the walk listed as regular is not read: what is at its name now is not.
pub const REPLACED_BY_NON_REGULAR: &str = "no longer a regular file (replaced during the sweep)";

/// [`open_content`], with the metadata of what was opened.
fn open_regular(path: &Path) -> std::io::Result<(std::fs::File, Metadata)> {
    use std::os::unix::fs::OpenOptionsExt;
    if path.as_os_str().len() >= libc::PATH_MAX as usize {
        // The kernel refuses a path that long whole (ENAMETOOLONG), yet the walk finds
        // files there: open it relative to its directory, reached as the walk reaches it.
        let (dir, name) = crate::walk::open_parent(path)?;
        return checked_regular(|extra| open_flags_at(dir.as_raw_fd(), &name, extra));
    }
    checked_regular(|extra: libc::c_int| {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | extra)
            .open(path)
    })
}

/// Opens with `open(extra_flags)` as [`open_content`] says: `O_NOATIME` where the
/// kernel allows it, and a regular file or an error.
fn checked_regular(
    open: impl Fn(libc::c_int) -> std::io::Result<std::fs::File>,
) -> std::io::Result<(std::fs::File, Metadata)> {
    let file = without_atime(open).map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) {
            std::io::Error::other("replaced by a symbolic link during the sweep (not followed)")
        } else {
            e
        }
    })?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other(REPLACED_BY_NON_REGULAR));
    }
    Ok((file, meta))
}

/// SHA-256 (hex) of the file at `path` and its size, read as [`open_content`] opens it
/// (past `PATH_MAX` too), provided the opened object still is inode `ino` on device
/// `dev` (the one the walk saw) and is not larger than `max_size`.
pub fn sha256_of_inode(
    path: &Path,
    dev: u64,
    ino: u64,
    max_size: Option<u64>,
) -> Result<(String, u64), ContentError> {
    let (f, meta) = open_regular(path)?;
    if meta.dev() != dev || meta.ino() != ino {
        return Err(ContentError::Unreadable("replaced during the sweep".into()));
    }
    if max_size.is_some_and(|max| meta.len() > max) {
        return Err(ContentError::TooLarge);
    }
    let alg = Algorithms {
        sha256: true,
        ..Algorithms::default()
    };
    let sha256 = digest_sized(Capped::new(f, max_size), alg, meta.len())?
        .sha256
        .ok_or_else(|| ContentError::Unreadable("SHA-256 not computed".into()))?;
    Ok((sha256, meta.len()))
}

/// Reads the rest of `file` (for YARA), whose size was `size_hint` at its stat.
pub fn read_all(
    file: std::fs::File,
    size_hint: u64,
    limit: Option<u64>,
    cancel: &std::sync::atomic::AtomicBool,
) -> std::io::Result<Vec<u8>> {
    let mut data = Vec::with_capacity(usize::try_from(size_hint).unwrap_or(0));
    Cancellable {
        inner: Capped::new(file, limit),
        cancel,
    }
    .read_to_end(&mut data)?;
    // Ended before the size it had at its stat: the bytes are of no version of the file
    // the sweep judged (or it is a pseudo file that lies about its size). Unreadable,
    // as in the hashing lanes, not a silent "no match" on a part.
    if (data.len() as u64) < size_hint {
        return Err(crate::multi::shrunk(data.len() as u64, size_hint));
    }
    Ok(data)
}

/// A reader that stops with [`SweepCancelled`] once `cancel` is set, reading at most
/// [`Cancellable::PIECE`] bytes at a time: a cancelled sweep does not wait for the end
/// of a large file.
struct Cancellable<'a, R> {
    inner: R,
    cancel: &'a std::sync::atomic::AtomicBool,
}

impl<R> Cancellable<'_, R> {
    const PIECE: usize = 4 << 20;
}

impl<R: Read> Read for Cancellable<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.cancel.load(std::sync::atomic::Ordering::Relaxed) {
            // Not `Interrupted`, which `read_to_end` would retry for ever.
            return Err(std::io::Error::other(SweepCancelled));
        }
        let want = buf.len().min(Self::PIECE);
        self.inner.read(&mut buf[..want])
    }
}

/// A reader that fails once `inner` gives more than `limit` bytes: the sweep checks a
/// file's size at its stat, but a file can grow while it is read (a log written to), and
/// one on a pseudo file system may say 0 bytes and never end.
pub struct Capped<R> {
    inner: R,
    left: u64,
}

impl<R> Capped<R> {
    /// `inner`, read up to `limit` bytes (`None`: no limit).
    pub fn new(inner: R, limit: Option<u64>) -> Self {
        Capped {
            inner,
            left: limit.unwrap_or(u64::MAX),
        }
    }
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // Asks for one byte past the limit, so that a file of exactly the limit is told
        // from a longer one, and never answers short because of the limit (a short read
        // is how the lanes see a file end).
        let want = buf
            .len()
            .min(usize::try_from(self.left.saturating_add(1)).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n as u64 > self.left {
            return Err(std::io::Error::other(
                "larger than the maximum file size once read (it grew after its status was \
                 taken)",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// A file under evaluation: metadata up front, digests on first request.
pub struct FileItem<'a> {
    /// Host path.
    pub host_path: &'a Path,
    /// Device path.
    pub device_path: String,
    /// Status from the walk (not following symlinks).
    pub meta: &'a FileMeta,
    /// The walk's entry, while its directory is open: content is then opened relative
    /// to it rather than by `host_path`.
    pub entry: Option<&'a crate::walk::FileEntry<'a>>,
    /// uid → login.
    pub names: &'a HashMap<u32, String>,
    /// Algorithms to compute when content is needed.
    pub algorithms: Algorithms,
    /// Content limit.
    pub max_size: Option<u64>,
    /// Content already read (when YARA needed it), reused for hashing.
    pub content: Option<&'a [u8]>,
    /// Digests once computed (or why not).
    pub digests: Option<Result<Digests, ContentError>>,
    /// Text values computed so far: an indicator set asks for the same path or digest
    /// once per term, and each answer is lent, not copied.
    pub texts: Vec<(Field, FieldValue)>,
}

impl FileItem<'_> {
    fn digests(&mut self) -> &Result<Digests, ContentError> {
        if self.digests.is_none() {
            let r = if let Some(c) = self.content {
                digest_reader(c, self.algorithms).map_err(ContentError::from)
            } else if self.max_size.is_some_and(|m| self.meta.size() > m) {
                Err(ContentError::TooLarge)
            } else {
                self.entry
                    .map_or_else(|| open_content(self.host_path), |e| e.open())
                    .and_then(|f| {
                        let f = Capped::new(f, self.max_size);
                        digest_sized(f, self.algorithms, self.meta.size())
                    })
                    .map_err(ContentError::from)
            };
            self.digests = Some(r);
        }
        self.digests
            .as_ref()
            .unwrap_or(&Err(ContentError::TooLarge))
    }
}

/// The text fields of a file, cut from its device path: what `FileItem/FullPath`,
/// `FilePath`, `FileName` and `FileExtension` terms compare (the sweep's path index cuts
/// them the same way).
pub struct PathFields<'a> {
    /// The whole path.
    pub full: &'a str,
    /// Its directory (`/` for a file at the root).
    pub dir: &'a str,
    /// Its last component.
    pub name: &'a str,
    /// What follows the name's last dot, if the name has a dot after its first byte.
    pub extension: Option<&'a str>,
}

impl<'a> PathFields<'a> {
    /// Cuts `device_path` into its fields.
    pub fn of(device_path: &'a str) -> Self {
        let p = device_path;
        let name = p.rsplit('/').next().unwrap_or(p);
        PathFields {
            full: p,
            dir: match p.rfind('/') {
                Some(0) => "/",
                Some(i) => &p[..i],
                None => "",
            },
            name,
            extension: match name.rfind('.') {
                Some(i) if i > 0 => Some(&name[i + 1..]),
                _ => None,
            },
        }
    }
}

impl FileItem<'_> {
    /// A text field's value, computed on first use.
    fn text_value(&mut self, field: Field) -> Option<String> {
        // Terms compare the name's characters, not its escaped form (see `matching_text`).
        let text = riposte_model::path_text::matching_text(&self.device_path);
        let fields = PathFields::of(&text);
        Some(match field {
            Field::FileFullPath => fields.full.to_string(),
            Field::FilePath => fields.dir.to_string(),
            Field::FileName => fields.name.to_string(),
            Field::FileExtension => fields.extension?.to_string(),
            Field::FileOwner => {
                let uid = self.meta.uid();
                self.names
                    .get(&uid)
                    .cloned()
                    .unwrap_or_else(|| uid.to_string())
            }
            Field::FileMd5 | Field::FileSha1 | Field::FileSha256 => {
                let d = self.digests().as_ref().ok()?;
                match field {
                    Field::FileMd5 => d.md5.clone(),
                    Field::FileSha1 => d.sha1.clone(),
                    _ => d.sha256.clone(),
                }?
            }
            _ => return None,
        })
    }
}

impl Item for FileItem<'_> {
    fn item_type(&self) -> ItemType {
        ItemType::File
    }

    fn value(&mut self, field: Field) -> Option<Cow<'_, FieldValue>> {
        let number = match field {
            Field::FileSize => Some(FieldValue::Int(self.meta.size() as i64)),
            Field::FileModified => Some(FieldValue::Time(self.meta.mtime())),
            Field::FileAccessed => Some(FieldValue::Time(self.meta.atime())),
            Field::FileChanged => Some(FieldValue::Time(self.meta.ctime())),
            Field::FileCreated => Some(FieldValue::Time(self.meta.created()?)),
            _ => None,
        };
        if let Some(n) = number {
            return Some(Cow::Owned(n));
        }
        let at = match self.texts.iter().position(|(f, _)| *f == field) {
            Some(at) => at,
            None => {
                let text = self.text_value(field)?;
                self.texts.push((field, FieldValue::Str(text)));
                self.texts.len() - 1
            }
        };
        Some(Cow::Borrowed(&self.texts[at].1))
    }

    fn undetermined(&mut self, field: Field) -> bool {
        match field {
            // Every file was created some time: where its file system does not record
            // when (ext4 with small inodes, older XFS, NFS), the time is not known, and a
            // term on it, negated too, must not hold.
            Field::FileCreated => self.meta.created().is_none(),
            _ => field.needs_content() && matches!(self.digests, Some(Err(_))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// os-release's value may be quoted either way (os-release(5)).
    #[test]
    fn the_os_name_is_read_without_its_quotes() {
        for written in ["'Foo Linux 9'", "\"Foo Linux 9\"", "Foo Linux 9"] {
            let root = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(root.path().join("etc")).unwrap();
            std::fs::write(
                root.path().join("etc/os-release"),
                format!("NAME=Foo\nPRETTY_NAME={written}\n"),
            )
            .unwrap();
            let items = system_info(root.path(), None);
            assert_eq!(
                items[0].values[&Field::SysOs],
                s("Foo Linux 9"),
                "{written}"
            );
        }
    }

    /// Where the file system does not record when a file was created, a term on its
    /// creation time is unknown, negated or not: it was created some time.
    #[test]
    fn a_creation_time_not_recorded_is_unknown() {
        use riposte_ioc::eval::Truth;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.txt");
        std::fs::write(&path, b"x").unwrap();
        let recorded = FileMeta::of_path(&path).unwrap();
        let names = HashMap::new();
        fn item<'a>(
            path: &'a Path,
            meta: &'a FileMeta,
            names: &'a HashMap<u32, String>,
        ) -> FileItem<'a> {
            FileItem {
                host_path: path,
                device_path: path.to_string_lossy().into_owned(),
                meta,
                entry: None,
                names,
                algorithms: Algorithms::default(),
                max_size: None,
                content: None,
                digests: None,
                texts: Vec::new(),
            }
        }
        let ioc = |negate: bool| {
            riposte_ioc::openioc::parse(
                &format!(
                    r#"<OpenIOC xmlns="http://openioc.org/schemas/OpenIOC_1.1" id="c" last-modified="2020-01-01T00:00:00Z" published-date="2020-01-01T00:00:00Z"><metadata><short_description>c</short_description><authored_date>2020-01-01T00:00:00Z</authored_date></metadata><criteria><Indicator operator="OR" id="o"><IndicatorItem id="i" condition="less-than" preserve-case="false" negate="{negate}"><Context document="FileItem" search="FileItem/Created" type="mir"/><Content type="date">2100-01-01T00:00:00Z</Content></IndicatorItem></Indicator></criteria></OpenIOC>"#
                ),
                "c.ioc",
            )
            .unwrap()
        };
        let truth = |meta: &FileMeta, negate: bool| {
            riposte_ioc::eval::evaluate(&ioc(negate), &mut item(&path, meta, &names), &|_| {
                Truth::False
            })
            .truth
        };
        if recorded.created().is_some() {
            assert_eq!(truth(&recorded, false), Truth::True);
            assert_eq!(truth(&recorded, true), Truth::False);
        }
        let unrecorded = recorded.without_birth_time();
        assert_eq!(truth(&unrecorded, false), Truth::Unknown);
        assert_eq!(truth(&unrecorded, true), Truth::Unknown);
    }

    /// Under a host root, unit files and `.wants` links with absolute targets are read
    /// in the device's tree, not on this machine (where they do not exist).
    #[test]
    fn services_under_a_host_root_follow_links_inside_it() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        for d in [
            "lib/systemd/system",
            "etc/systemd/system/multi-user.target.wants",
        ] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        let unit = "riposte-test-only-unit.service";
        std::fs::write(
            r.join("lib/systemd/system").join(unit),
            "[Service]\nExecStart=/opt/evil/run --quiet\n[Install]\nWantedBy=multi-user.target\n",
        )
        .unwrap();
        let absolute = Path::new("/lib/systemd/system").join(unit);
        assert!(
            !absolute.exists(),
            "the test needs a unit this machine lacks"
        );
        std::os::unix::fs::symlink(&absolute, r.join("etc/systemd/system").join(unit)).unwrap();
        std::os::unix::fs::symlink(
            &absolute,
            r.join("etc/systemd/system/multi-user.target.wants")
                .join(unit),
        )
        .unwrap();
        // A link loop is not followed forever.
        std::os::unix::fs::symlink("loop.service", r.join("lib/systemd/system/loop.service"))
            .unwrap();

        let items = services(r).items;
        let item = items
            .iter()
            .find(|i| matches!(&i.describe, HitItem::Service { name } if name == unit))
            .unwrap();
        assert_eq!(item.values[&Field::ServiceProgram], s("/opt/evil/run"));
        assert_eq!(item.values[&Field::ServiceMode], s("enabled"));
        let looping = items
            .iter()
            .find(|i| matches!(&i.describe, HitItem::Service { name } if name == "loop.service"))
            .unwrap();
        assert!(!looping.values.contains_key(&Field::ServiceProgram));
        assert_eq!(
            crate::walk::resolve_in_root(r, Path::new("/etc/../../lib/systemd/system")).unwrap(),
            Path::new("/lib/systemd/system"),
            "`..` stops at the root"
        );
    }

    /// A template's instances that something wants are services, each running the
    /// template's program with its own name filled in; a template alone, or an
    /// instance of a template that is not there, is none.
    #[test]
    fn wanted_instances_of_templates_are_services() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        for d in [
            "lib/systemd/system",
            "etc/systemd/system/multi-user.target.wants",
            "etc/systemd/system/evil@other.service.d",
            "etc/systemd/system/sp@.service.d",
            "run/systemd/system",
            "sys/fs/cgroup/system.slice/system-evil.slice/evil@other.service",
        ] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        let write = |path: &str, text: &str| std::fs::write(r.join(path), text).unwrap();
        write(
            "lib/systemd/system/evil@.service",
            "[Service]\nExecStart=/opt/%p/run-%i --path=%I --unit=%n 100%%\n",
        );
        write(
            "etc/systemd/system/evil@other.service.d/x.conf",
            "[Service]\nExecStart=\nExecStart=/opt/drop/%i\n",
        );
        write(
            "sys/fs/cgroup/system.slice/system-evil.slice/evil@other.service/cgroup.events",
            "populated 1\nfrozen 0\n",
        );
        // An instance name that unescapes to a space stays one program.
        write(
            "lib/systemd/system/sp@.service",
            "[Service]\nExecStart=/opt/%I --x\n",
        );
        // A template's drop-in holds for an instance with a file of its own too, and a
        // unit in a slice of its own has no known status.
        write(
            "etc/systemd/system/sp@.service.d/slice.conf",
            "[Service]\nSlice=custom.slice\n",
        );
        std::os::unix::fs::symlink(
            "/lib/systemd/system/sp@.service",
            r.join("etc/systemd/system/sp@own.service"),
        )
        .unwrap();
        let wants = r.join("etc/systemd/system/multi-user.target.wants");
        for (instance, template) in [
            ("evil@web-x\\x2d1.service", "evil@.service"),
            ("evil@other.service", "evil@.service"),
            ("ghost@1.service", "ghost@.service"),
            ("sp@a\\x20b.service", "sp@.service"),
        ] {
            let target = Path::new("/lib/systemd/system").join(template);
            std::os::unix::fs::symlink(target, wants.join(instance)).unwrap();
        }

        let items = services(r).items;
        let names: Vec<&str> = items
            .iter()
            .filter_map(|i| match &i.describe {
                HitItem::Service { name } => Some(name.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(
            names,
            [
                "sp@own.service",
                "evil@other.service",
                "evil@web-x\\x2d1.service",
                "sp@a\\x20b.service"
            ]
        );
        let web = &items[2];
        assert_eq!(
            web.values[&Field::ServiceProgram],
            s("/opt/evil/run-web-x\\x2d1")
        );
        assert_eq!(
            web.values[&Field::ServiceArguments],
            s("--path=web/x-1 --unit=evil@web-x\\x2d1.service 100%")
        );
        assert_eq!(
            web.values[&Field::ServicePath],
            s("/lib/systemd/system/evil@.service")
        );
        assert_eq!(web.values[&Field::ServiceMode], s("enabled"));
        // The instance's own drop-in replaces the program for it alone.
        let other = &items[1];
        assert_eq!(other.values[&Field::ServiceProgram], s("/opt/drop/other"));
        // Status from the template's slice: running where its cgroup holds a process,
        // stopped where it has none, unknown in a slice of the unit's own.
        assert_eq!(other.values[&Field::ServiceStatus], s("running"));
        assert_eq!(web.values[&Field::ServiceStatus], s("stopped"));
        assert!(web.undetermined.is_empty());
        let space = &items[3];
        assert_eq!(space.values[&Field::ServiceProgram], s("/opt/a b"));
        assert_eq!(space.values[&Field::ServiceArguments], s("--x"));
        assert!(!space.values.contains_key(&Field::ServiceStatus));
        assert_eq!(space.undetermined, [Field::ServiceStatus]);
        let own = &items[0];
        assert_eq!(own.undetermined, [Field::ServiceStatus]);
        assert_eq!(own.values[&Field::ServiceMode], s("static"));
    }

    /// Unit files are read as systemd reads them: a stray byte, a byte-order mark, a
    /// tab, C escapes, several `ExecStart=`, prefix drop-ins and `*.upholds` do not
    /// hide a program; hidden drop-ins are not applied; what cannot be read whole is
    /// unknown, not "no program".
    #[test]
    fn unit_files_are_read_as_systemd_reads_them() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        for d in [
            "lib/systemd/system",
            "etc/systemd/system/multi-user.target.upholds",
            "etc/systemd/system/hid.service.d",
            "etc/systemd/system/pre-.service.d",
            "run/systemd/system",
            "sys/fs/cgroup/system.slice/__under.service",
            "sys/fs/cgroup/system.slice/_pids.service",
        ] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        let write = |path: &str, text: &[u8]| std::fs::write(r.join(path), text).unwrap();
        let unit =
            |name: &str, text: &str| write(&format!("lib/systemd/system/{name}"), text.as_bytes());
        write(
            "lib/systemd/system/latin1.service",
            b"[Service]\n# caf\xe9\nExecStart=/opt/evil/latin1\n",
        );
        unit(
            "bom.service",
            "\u{feff}[Service]\nExecStart=/opt/evil/bom\n",
        );
        unit("hid.service", "[Service]\nExecStart=/opt/evil/hidden\n");
        write(
            "etc/systemd/system/hid.service.d/.x.conf",
            b"[Service]\nExecStart=\nExecStart=/usr/bin/benign\n",
        );
        unit("pre-bar.service", "[Service]\nExecStart=/usr/bin/benign\n");
        write(
            "etc/systemd/system/pre-.service.d/x.conf",
            b"[Service]\nExecStart=\nExecStart=/opt/evil/prefix\n",
        );
        unit("uph@.service", "[Service]\nExecStart=/opt/evil/uph-%i\n");
        std::os::unix::fs::symlink(
            "/lib/systemd/system/uph@.service",
            r.join("etc/systemd/system/multi-user.target.upholds/uph@a.service"),
        )
        .unwrap();
        unit("tab.service", "[Service]\nExecStart=/opt/evil/tab\t-x\n");
        unit(
            "esc.service",
            "[Service]\nExecStart=/opt//./\\x65vil/esc --a\n",
        );
        unit(
            "two.service",
            "[Service]\nType=oneshot\nExecStart=/usr/bin/first\nExecStart=/opt/evil/second\n",
        );
        unit(
            "bs.service",
            "[Service]\nEnvironment=A=\\\\\nExecStart=/opt/evil/bs\n",
        );
        let mut big = "# padding\n".repeat((16 << 20) / 10 + 1);
        big.push_str("[Service]\nExecStart=/opt/evil/padded\n");
        unit("big.service", &big);
        let long_name = format!("b@{}.service", "x".repeat(200));
        unit(
            "b@.service",
            &format!("[Service]\nExecStart=/opt/b {}\n", "%n".repeat(8000)),
        );
        std::os::unix::fs::symlink(
            "/lib/systemd/system/b@.service",
            r.join("etc/systemd/system/multi-user.target.upholds")
                .join(&long_name),
        )
        .unwrap();
        unit("empty.service", "");
        // Comment lines go before continuations; `\r` ends a line; a byte-order mark
        // on a later line; a continued ExecStart; quotes inside a word and around a
        // prefix; a lone `;` between commands; a specifier of the runtime's.
        unit(
            "comment.service",
            "[Service]\n# note \\\nExecStart=/opt/evil/comment\n",
        );
        unit("cr.service", "[Service]\rExecStart=/opt/evil/cr\r");
        unit(
            "midbom.service",
            "[Service]\n\u{feff}ExecStart=/opt/evil/midbom\n",
        );
        unit(
            "cont.service",
            "[Service]\nExecStart=/opt/evil/cont \\\n  --flag\n",
        );
        unit(
            "words.service",
            "[Service]\nType=oneshot\nExecStart=\"-/opt/ev\"il/q --a ; /opt/evil/after \\; x\n",
        );
        unit("home.service", "[Service]\nExecStart=%h/.local/bin/x\n");
        let long_line = format!(
            "[Service]\nExecStart=/opt/l {}\n",
            "a".repeat(UNIT_LINE_MAX)
        );
        unit("longline.service", &long_line);
        // A general drop-in does not hide a specific one of the same name, wherever
        // each is; a drop-in that is no regular file is none.
        unit("prec.service", "[Service]\nExecStart=/usr/bin/vendor\n");
        for d in [
            "lib/systemd/system/prec.service.d",
            "etc/systemd/system/service.d",
        ] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        write(
            "lib/systemd/system/prec.service.d/10.conf",
            b"[Service]\nExecStart=\nExecStart=/opt/evil/specific\n",
        );
        write(
            "etc/systemd/system/service.d/10.conf",
            b"[Unit]\nDescription=%N general\n",
        );
        crate::walk::make_fifo(&r.join("etc/systemd/system/service.d/20.conf"));
        unit("misc.service", "[Service]\nExecStart=/opt/m\n");
        std::fs::create_dir_all(r.join("sys/fs/cgroup/system.slice/misc.service")).unwrap();
        write(
            "sys/fs/cgroup/system.slice/misc.service/cgroup.events",
            b"populated 1\n",
        );
        unit("noevents.service", "[Service]\nExecStart=/opt/n\n");
        std::fs::create_dir_all(r.join("sys/fs/cgroup/system.slice/noevents.service")).unwrap();
        write(
            "sys/fs/cgroup/system.slice/noevents.service/cgroup.events",
            b"frozen 0\n",
        );
        unit(
            "_under.service",
            "[Unit]\nDescription=Under %n\n[Service]\nExecStart=/opt/u\n",
        );
        unit("pids.service", "[Service]\nExecStart=/opt/p\n");
        write(
            "sys/fs/cgroup/system.slice/__under.service/cgroup.events",
            b"populated 1\n",
        );
        write(
            "sys/fs/cgroup/system.slice/_pids.service/cgroup.events",
            b"populated 1\n",
        );

        let items = services(r).items;
        let item = |name: &str| {
            items
                .iter()
                .find(|i| matches!(&i.describe, HitItem::Service { name: n } if n == name))
                .unwrap_or_else(|| panic!("no service {name}"))
        };
        let program = |name: &str| item(name).values.get(&Field::ServiceProgram).cloned();
        assert_eq!(program("latin1.service"), Some(s("/opt/evil/latin1")));
        assert_eq!(program("bom.service"), Some(s("/opt/evil/bom")));
        assert_eq!(program("hid.service"), Some(s("/opt/evil/hidden")));
        assert_eq!(program("pre-bar.service"), Some(s("/opt/evil/prefix")));
        assert_eq!(program("uph@a.service"), Some(s("/opt/evil/uph-a")));
        assert_eq!(
            item("uph@a.service").values[&Field::ServiceMode],
            s("enabled")
        );
        assert_eq!(program("tab.service"), Some(s("/opt/evil/tab")));
        assert_eq!(program("esc.service"), Some(s("/opt/evil/esc")));
        assert_eq!(
            program("two.service"),
            Some(FieldValue::List(vec![
                s("/usr/bin/first"),
                s("/opt/evil/second")
            ]))
        );
        assert_eq!(program("bs.service"), Some(s("/opt/evil/bs")));
        // Too large, grown too large, a specifier of the runtime's, a line too long.
        let unknowns = [
            "big.service",
            long_name.as_str(),
            "home.service",
            "longline.service",
        ];
        for unknown in unknowns {
            assert_eq!(program(unknown), None, "{unknown}");
            assert!(
                item(unknown).undetermined.contains(&Field::ServiceProgram),
                "{unknown}"
            );
        }
        assert_eq!(
            item("empty.service").values[&Field::ServiceMode],
            s("masked")
        );
        let under = item("_under.service");
        assert_eq!(under.values[&Field::ServiceStatus], s("running"));
        assert_eq!(
            under.values[&Field::ServiceDescription],
            s("_under general")
        );
        assert_eq!(
            item("pids.service").values[&Field::ServiceStatus],
            s("running")
        );
        assert_eq!(
            item("misc.service").values[&Field::ServiceStatus],
            s("running")
        );
        assert!(item("noevents.service")
            .undetermined
            .contains(&Field::ServiceStatus));
        assert_eq!(program("comment.service"), Some(s("/opt/evil/comment")));
        assert_eq!(program("cr.service"), Some(s("/opt/evil/cr")));
        assert_eq!(program("midbom.service"), Some(s("/opt/evil/midbom")));
        assert_eq!(program("cont.service"), Some(s("/opt/evil/cont")));
        assert_eq!(
            item("cont.service").values[&Field::ServiceArguments],
            s("--flag")
        );
        assert_eq!(
            program("words.service"),
            Some(FieldValue::List(vec![
                s("/opt/evil/q"),
                s("/opt/evil/after")
            ]))
        );
        assert_eq!(
            item("words.service").values[&Field::ServiceArguments],
            FieldValue::List(vec![s("--a"), s("; x")])
        );
        // The specific `10.conf` applies and hides the general one, which every other
        // service takes.
        assert_eq!(program("prec.service"), Some(s("/opt/evil/specific")));
        assert_eq!(
            item("prec.service").values[&Field::ServiceDescription],
            s("")
        );
        assert_eq!(
            item("latin1.service").values[&Field::ServiceDescription],
            s("latin1 general")
        );
        assert_eq!(
            item("bom.service").values[&Field::ServiceStatus],
            s("stopped")
        );
    }

    /// A unit set reads and keeps at most so much: past its budgets, a unit's program
    /// is unknown rather than read (a user's thousands of instance links to one large
    /// template must not exhaust the sweep).
    #[test]
    fn a_unit_set_reads_and_keeps_within_its_budgets() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("lib/systemd/system")).unwrap();
        let text = format!("[Service]\nExecStart=/opt/x {}\n", "a".repeat(1000));
        std::fs::write(r.join("lib/systemd/system/x.service"), &text).unwrap();
        let set = UnitSet {
            dirs: vec!["lib/systemd/system".into()],
            listed: 1,
            config_dirs: Vec::new(),
            status: false,
        };
        let view = |read: u64, keep: usize| SetView {
            set: &set,
            listings: vec![["x.service".to_string()].into_iter().collect()],
            listing_unread: vec![false],
            wanted: Default::default(),
            wanted_known: true,
            read_budget: std::cell::Cell::new(read),
            keep_budget: std::cell::Cell::new(keep),
        };
        let known = |item: &SimpleItem| item.values.contains_key(&Field::ServiceProgram);
        let unknown = |item: &SimpleItem| item.undetermined.contains(&Field::ServiceProgram);
        let tight_read = view(text.len() as u64 + 10, usize::MAX);
        let first = unit_item(
            r,
            &tight_read,
            "lib/systemd/system",
            "x.service",
            "x.service",
        );
        let second = unit_item(
            r,
            &tight_read,
            "lib/systemd/system",
            "x.service",
            "x.service",
        );
        assert!(known(&first) && !unknown(&first));
        assert!(!known(&second) && unknown(&second));
        let tight_keep = view(u64::MAX, 1500);
        let first = unit_item(
            r,
            &tight_keep,
            "lib/systemd/system",
            "x.service",
            "x.service",
        );
        let second = unit_item(
            r,
            &tight_keep,
            "lib/systemd/system",
            "x.service",
            "x.service",
        );
        assert!(known(&first) && !unknown(&first));
        assert!(!known(&second) && unknown(&second));
    }

    /// Returns at most `step` bytes per read, as a pipe or a slow device may.
    struct Trickle<'a>(&'a [u8], usize);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.1.min(buf.len()).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn a_capped_read_fails_past_its_limit_and_only_then() {
        let data = [1u8; 10];
        let read = |limit| {
            let mut out = Vec::new();
            Capped::new(&data[..], limit)
                .read_to_end(&mut out)
                .map(|_| out.len())
                .map_err(|e| e.to_string())
        };
        assert_eq!(read(None), Ok(10));
        assert_eq!(read(Some(10)), Ok(10));
        assert!(read(Some(9))
            .unwrap_err()
            .contains("larger than the maximum file size"));
        assert!(read(Some(0)).is_err());
        // Through a reader that answers a byte at a time, as a pipe may.
        let mut out = Vec::new();
        assert!(Capped::new(Trickle(&data, 1), Some(9))
            .read_to_end(&mut out)
            .is_err());
    }

    #[test]
    fn digests_are_written_in_lower_case_hex_as_indicators_write_them() {
        let every_byte: Vec<u8> = (0..=255).collect();
        assert_eq!(hex_lower(&every_byte), hex::encode(&every_byte));
        assert_eq!(hex_lower(&[0x0f, 0xa0]), "0fa0");
        assert_eq!(hex_lower(&[]), "");
    }

    #[test]
    fn content_is_opened_only_from_regular_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"data").unwrap();
        assert!(open_content(&file).is_ok());
        // A path swapped for a link to a device, or for a FIFO with no writer (which a
        // plain open would wait on forever), is refused at once.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        let e = open_content(&link).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        let fifo = dir.path().join("fifo");
        crate::walk::make_fifo(&fifo);
        let e = open_content(&fifo).unwrap_err();
        assert!(e.to_string().contains("regular file"), "{e}");
        assert!(open_content(dir.path()).is_err());
    }

    /// Only a name that no longer leads anywhere is "gone"; a file there that could not
    /// be opened, or a directory replaced by a file, is unreadable.
    #[test]
    fn only_what_is_no_longer_there_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let e = open_content(&dir.path().join("removed")).unwrap_err();
        assert!(gone(&e), "{e}");
        assert_eq!(ContentError::from(e), ContentError::Gone);
        std::fs::write(dir.path().join("file"), b"f").unwrap();
        let e = open_content(&dir.path().join("file/below")).unwrap_err();
        assert!(!gone(&e), "{e}");
        for errno in [libc::EACCES, libc::EIO, libc::ENOTDIR, libc::ELOOP] {
            let e = std::io::Error::from_raw_os_error(errno);
            assert!(!gone(&e), "{e}");
            assert!(
                matches!(ContentError::from(e), ContentError::Unreadable(_)),
                "{errno}"
            );
        }
    }

    #[test]
    fn a_hits_sha256_is_read_only_from_the_object_the_walk_saw_and_says_why_not() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"data").unwrap();
        let meta = std::fs::metadata(&file).unwrap();
        let want = digest_reader(
            &b"data"[..],
            Algorithms {
                sha256: true,
                ..Default::default()
            },
        )
        .unwrap()
        .sha256;
        let (sha256, size) = sha256_of_inode(&file, meta.dev(), meta.ino(), Some(4)).unwrap();
        assert_eq!((Some(sha256), size), (want, 4));
        assert_eq!(
            sha256_of_inode(&file, meta.dev(), meta.ino(), Some(3)),
            Err(ContentError::TooLarge)
        );
        assert_eq!(
            sha256_of_inode(&file, meta.dev(), meta.ino() + 1, None),
            Err(ContentError::Unreadable("replaced during the sweep".into()))
        );
        assert_eq!(
            sha256_of_inode(&dir.path().join("missing"), meta.dev(), meta.ino(), None),
            Err(ContentError::Gone)
        );
    }

    #[test]
    fn sized_digest_reads_to_the_end_whatever_the_read_sizes() {
        use md5::Digest as _;
        let data: Vec<u8> = (0..700_000u32).map(|i| (i * 31 % 251) as u8).collect();
        let want = hex::encode(md5::Md5::digest(&data));
        let alg = Algorithms {
            md5: true,
            ..Default::default()
        };
        let len = data.len() as u64;
        // Short reads before the stat'ed size are not the end.
        for (step, expected) in [(7, len), (100_000, len), (1 << 20, len), (7, u64::MAX)] {
            let d = digest_sized(Trickle(&data, step), alg, expected).unwrap();
            assert_eq!(d.md5.as_deref(), Some(want.as_str()), "step {step}");
        }
        // A file that grew since its stat is read to its end.
        let d = digest_sized(&data[..], alg, 10).unwrap();
        assert_eq!(d.md5.as_deref(), Some(want.as_str()));
        // One that shrank is not the file judged: an error, not the digest of a part.
        let e = digest_sized(&data[..100], alg, len).unwrap_err();
        assert!(e.to_string().contains("changed while it was read"), "{e}");
    }

    #[test]
    fn system_addresses_include_ipv6() {
        let d = tempfile::tempdir().unwrap();
        let proc_root = d.path().join("proc");
        std::fs::create_dir_all(proc_root.join("net")).unwrap();
        std::fs::write(
            proc_root.join("net/if_inet6"),
            "00000000000000000000000000000001 01 80 10 80       lo\n\
             fd000000000000000000000000000002 02 40 00 80     eth0\n",
        )
        .unwrap();
        let items = system_info(d.path(), Some(&proc_root));
        let Some(FieldValue::List(ips)) = items[0].values.get(&Field::SysIpAddress) else {
            panic!("{:?}", items[0].values)
        };
        for want in ["::1", "fd00::2"] {
            let ip = FieldValue::Ip(want.parse().unwrap());
            assert!(ips.contains(&ip), "{want} in {ips:?}");
        }
    }

    /// A process whose program could not be read (another user's, swept without root)
    /// leaves a negated test on its path unknown: it held there, a false hit.
    #[test]
    fn a_program_that_cannot_be_read_leaves_a_negated_term_unknown() {
        let doc = r#"<OpenIOC xmlns="http://openioc.org/schemas/OpenIOC_1.1" id="p" last-modified="2020-01-01T00:00:00Z" published-date="2020-01-01T00:00:00Z"><metadata><short_description>p</short_description><authored_date>2020-01-01T00:00:00Z</authored_date></metadata><criteria><Indicator operator="AND" id="a"><IndicatorItem id="n" condition="is" preserve-case="false" negate="false"><Context document="ProcessItem" search="ProcessItem/name" type="mir"/><Content type="string">mariadbd</Content></IndicatorItem><IndicatorItem id="p" condition="is" preserve-case="false" negate="true"><Context document="ProcessItem" search="ProcessItem/path" type="mir"/><Content type="string">/usr/sbin/mariadbd</Content></IndicatorItem></Indicator></criteria></OpenIOC>"#;
        let ioc = riposte_ioc::openioc::parse(doc, "p.ioc").unwrap();
        let item = |undetermined: Vec<Field>| SimpleItem {
            ty: ItemType::Process,
            values: HashMap::from([(Field::ProcName, FieldValue::Str("mariadbd".into()))]),
            describe: HitItem::Process {
                pid: 7,
                name: "mariadbd".into(),
            },
            undetermined,
        };
        let truth = |mut it: SimpleItem| {
            riposte_ioc::eval::evaluate(&ioc, &mut it, &|_| riposte_ioc::Truth::False).truth
        };
        assert_eq!(
            truth(item(vec![Field::ProcPath])),
            riposte_ioc::Truth::Unknown
        );
        // A process with no program at all (a kernel thread) is another matter.
        assert_eq!(truth(item(Vec::new())), riposte_ioc::Truth::True);
        // Nor does it count as "some process satisfies the negated term".
        let path_term = ioc.terms.iter().position(|t| t.negate).unwrap();
        let exists = |mut it: SimpleItem| riposte_ioc::eval::eval_term(&ioc, path_term, &mut it);
        assert!(!exists(item(vec![Field::ProcPath])));
        assert!(exists(item(Vec::new())));
    }

    #[test]
    fn the_sweeping_process_is_not_an_item() {
        let names = HashMap::new();
        let pids: Vec<i64> = processes(Path::new("/proc"), &names)
            .iter()
            .filter_map(|p| match &p.describe {
                HitItem::Process { pid, .. } => Some(*pid),
                _ => None,
            })
            .collect();
        assert!(pids.len() > 1, "{pids:?}");
        assert!(!pids.contains(&i64::from(std::process::id())), "{pids:?}");
    }

    /// The whole-file read of YARA's content says so too: it served rules, and digests
    /// of files over the lanes' buffer, with the bytes of a part.
    #[test]
    fn a_whole_read_shorter_than_the_stat_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"twelve bytes").unwrap();
        let open = || std::fs::File::open(&p).unwrap();
        let no_cancel = std::sync::atomic::AtomicBool::new(false);
        assert_eq!(
            read_all(open(), 12, None, &no_cancel).unwrap(),
            b"twelve bytes"
        );
        assert_eq!(
            read_all(open(), 5, None, &no_cancel).unwrap().len(),
            12,
            "grown: to its end"
        );
        let e = read_all(open(), 4096, None, &no_cancel).unwrap_err();
        assert!(
            e.to_string()
                .contains("changed while it was read: it ended after 12 of its 4096 bytes"),
            "{e}"
        );
    }

    /// A whole-file read stops once the sweep is cancelled, with the error that tells
    /// it from an unreadable file, and reads a piece at a time until then.
    #[test]
    fn a_whole_read_stops_when_the_sweep_is_cancelled() {
        struct Pieces<'a> {
            left: usize,
            reads: usize,
            cancel_after: usize,
            cancel: &'a std::sync::atomic::AtomicBool,
        }
        impl Read for Pieces<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                assert!(buf.len() <= Cancellable::<()>::PIECE);
                self.reads += 1;
                if self.reads == self.cancel_after {
                    self.cancel
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
                let n = buf.len().min(self.left);
                self.left -= n;
                Ok(n)
            }
        }
        let cancel = std::sync::atomic::AtomicBool::new(false);
        let mut data = Vec::with_capacity(64 << 20);
        let mut reader = Pieces {
            left: 64 << 20,
            reads: 0,
            cancel_after: 2,
            cancel: &cancel,
        };
        let e = Cancellable {
            inner: &mut reader,
            cancel: &cancel,
        }
        .read_to_end(&mut data)
        .unwrap_err();
        assert_eq!(reader.reads, 2, "no read after the cancellation");
        assert!(reader.left > 0);
        assert!(matches!(ContentError::from(e), ContentError::Cancelled));
    }
}
