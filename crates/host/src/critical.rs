//! Enumeration of a Linux device's critical areas.
//!
//! "Critical areas" are what a rootkit or persistent implant modifies to
//! survive a reboot or hide: the kernel (loaded modules and their files, the
//! kernel image and initramfs), startup objects (systemd units and the
//! programs they start, init scripts, `rc.local`, cron tables,
//! `/etc/ld.so.preload`, shell profiles, XDG autostart entries) and boot
//! sectors. This module only *enumerates* them (under a [`HostRoot`]); the
//! EPP crate scans what is listed. Anything that cannot be enumerated or read
//! is recorded in [`CriticalAreas::skipped`] with the reason — never dropped
//! silently.

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use riposte_model::path_text;

use crate::HostRoot;

/// Bytes read from the start of each disk and partition: the MBR/VBR, the
/// GPT header and the first partition entries (8 sectors of 512 bytes).
pub const BOOT_SECTOR_BYTES: usize = 4096;

/// Which critical area an object belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CriticalCategory {
    /// A loaded kernel module's file.
    KernelModule,
    /// Kernel image or initramfs in `/boot`.
    KernelImage,
    /// A startup object (unit, script, cron table, profile, preload…).
    Startup,
    /// A program started by a startup object.
    StartupProgram,
}

/// A file in a critical area, named by its device path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct CriticalObject {
    /// Category.
    pub category: CriticalCategory,
    /// Device path of the file.
    pub path: PathBuf,
    /// Why it is listed (e.g. `ExecStart= of /etc/systemd/system/x.service`).
    pub origin: String,
}

/// The first bytes of a disk or partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootSector {
    /// Block device name (`sda`, `sda1`, `nvme0n1p1`…).
    pub device: String,
    /// Device path of the node read (`/dev/sda`).
    pub path: PathBuf,
    /// The bytes read (up to [`BOOT_SECTOR_BYTES`]).
    pub data: Vec<u8>,
}

/// Something that could not be enumerated, read or scanned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// What (a path or a device name).
    pub what: String,
    /// Why.
    pub reason: String,
}

/// Everything found in the critical areas.
#[derive(Debug, Clone, Default)]
pub struct CriticalAreas {
    /// Files (deduplicated by path; the first origin wins).
    pub files: Vec<CriticalObject>,
    /// Boot sectors read.
    pub boot_sectors: Vec<BootSector>,
    /// What was skipped, with the reason.
    pub skipped: Vec<Skipped>,
}

struct Collector<'a> {
    root: &'a HostRoot,
    seen: BTreeSet<PathBuf>,
    out: CriticalAreas,
}

impl Collector<'_> {
    /// The host path of device path `dev`, built from its bytes: a name that is not
    /// UTF-8 must lead to the very file that was listed.
    fn host(&self, dev: impl AsRef<Path>) -> PathBuf {
        let dev = dev.as_ref();
        self.root.path().join(dev.strip_prefix("/").unwrap_or(dev))
    }

    fn skip(&mut self, what: impl Into<String>, reason: impl Into<String>) {
        self.out.skipped.push(Skipped {
            what: what.into(),
            reason: reason.into(),
        });
    }

    /// Adds a device path if it exists as something; regular-file checks are
    /// left to the scanner, which opens safely and reports what it skips.
    fn add(&mut self, category: CriticalCategory, dev: &Path, origin: impl Into<String>) {
        if HostRoot::components(dev).is_err() {
            self.skip(path_text::encode(dev), "not an absolute path without `..`");
            return;
        }
        if self.seen.insert(dev.to_path_buf()) {
            self.out.files.push(CriticalObject {
                category,
                path: dev.to_path_buf(),
                origin: origin.into(),
            });
        }
    }

    /// Regular files (not symlinks) directly in a directory, sorted, with their names as
    /// text for matching. The device path keeps the name's bytes: a startup file named
    /// with bytes that are not UTF-8 must still be found, opened and scanned.
    fn list_dir(&mut self, dev_dir: &str) -> Vec<(String, PathBuf)> {
        let host = self.host(dev_dir);
        let rd = match fs::read_dir(&host) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
            Err(e) => {
                self.skip(dev_dir, format!("cannot list directory: {e}"));
                return Vec::new();
            }
        };
        let mut v: Vec<(String, PathBuf)> = rd
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
            .map(|e| {
                let dev = Path::new(dev_dir).join(e.file_name());
                (path_text::encode(e.file_name()), dev)
            })
            .collect();
        v.sort();
        v
    }

    fn exists(&self, dev: &str) -> bool {
        fs::symlink_metadata(self.host(dev)).is_ok()
    }

    fn kernel(&mut self) {
        // Loaded modules and their files.
        match fs::read_to_string(self.host("/proc/modules")) {
            Ok(mods) => {
                let release = self.root.kernel_release();
                let dep = release.as_ref().and_then(|r| {
                    fs::read_to_string(self.host(format!("/lib/modules/{r}/modules.dep"))).ok()
                });
                for line in mods.lines() {
                    let Some(name) = line.split_whitespace().next() else {
                        continue;
                    };
                    let (Some(r), Some(dep)) = (&release, &dep) else {
                        self.skip(
                            format!("module {name}"),
                            "modules.dep of the running kernel not found",
                        );
                        continue;
                    };
                    match module_file(dep, name) {
                        Some(rel) => {
                            let p = PathBuf::from(format!("/lib/modules/{r}/{rel}"));
                            self.add(
                                CriticalCategory::KernelModule,
                                &p,
                                format!("loaded module {name}"),
                            );
                        }
                        None => self.skip(
                            format!("module {name}"),
                            "no file for this module in modules.dep",
                        ),
                    }
                }
            }
            Err(e) => self.skip("/proc/modules", format!("cannot read loaded modules: {e}")),
        }
        // Kernel images and initramfs.
        for (name, dev) in self.list_dir("/boot") {
            if ["vmlinuz", "vmlinux", "initrd", "initramfs", "bzImage"]
                .iter()
                .any(|p| name.starts_with(p))
            {
                self.add(
                    CriticalCategory::KernelImage,
                    &dev,
                    "kernel image or initramfs",
                );
            }
        }
    }

    fn startup(&mut self) {
        use CriticalCategory::*;
        for dir in [
            "/etc/systemd/system",
            "/run/systemd/system",
            "/usr/lib/systemd/system",
            "/lib/systemd/system",
            "/etc/systemd/user",
            "/usr/lib/systemd/user",
        ] {
            for (name, unit) in self.list_dir(dir) {
                if !name.contains('.') {
                    continue;
                }
                self.add(Startup, &unit, "systemd unit");
                if let Ok(text) = fs::read_to_string(self.host(&unit)) {
                    for (key, prog) in unit_exec_programs(&text) {
                        self.add(
                            StartupProgram,
                            Path::new(&prog),
                            format!("{key}= of {}", path_text::encode(&unit)),
                        );
                    }
                }
            }
        }
        for (_, s) in self.list_dir("/etc/init.d") {
            self.add(Startup, &s, "init script");
        }
        for f in [
            "/etc/rc.local",
            "/etc/crontab",
            "/etc/profile",
            "/etc/bash.bashrc",
            "/etc/environment",
            "/etc/zsh/zshrc",
            "/etc/zsh/zprofile",
        ] {
            if self.exists(f) {
                self.add(Startup, Path::new(f), "startup file");
            }
        }
        for dir in [
            "/etc/cron.d",
            "/etc/cron.hourly",
            "/etc/cron.daily",
            "/etc/cron.weekly",
            "/etc/cron.monthly",
            "/var/spool/cron/crontabs",
            "/var/spool/cron",
        ] {
            for (_, f) in self.list_dir(dir) {
                self.add(Startup, &f, "cron");
            }
        }
        for (_, f) in self.list_dir("/etc/profile.d") {
            self.add(Startup, &f, "shell profile");
        }
        // ld.so.preload: the file and every library it names.
        if self.exists("/etc/ld.so.preload") {
            self.add(
                Startup,
                Path::new("/etc/ld.so.preload"),
                "dynamic loader preload list",
            );
            match fs::read_to_string(self.host("/etc/ld.so.preload")) {
                Ok(t) => {
                    for lib in t
                        .split(|c: char| c.is_whitespace() || c == ':')
                        .filter(|s| s.starts_with('/'))
                    {
                        self.add(
                            StartupProgram,
                            Path::new(lib),
                            "listed in /etc/ld.so.preload",
                        );
                    }
                }
                Err(e) => self.skip("/etc/ld.so.preload", format!("cannot read: {e}")),
            }
        }
        // XDG autostart (system-wide and per user) and per-user profiles.
        let mut autostart_dirs = vec!["/etc/xdg/autostart".to_string()];
        let passwd = fs::read_to_string(self.host("/etc/passwd")).unwrap_or_default();
        let homes: BTreeSet<String> = passwd
            .lines()
            .filter_map(|l| l.split(':').nth(5))
            .filter(|h| h.starts_with('/') && *h != "/" && !h.starts_with("/nonexistent"))
            .map(str::to_string)
            .collect();
        for home in &homes {
            for f in [
                ".profile",
                ".bashrc",
                ".bash_profile",
                ".bash_login",
                ".bash_logout",
                ".zshrc",
                ".zprofile",
                ".xprofile",
                ".xinitrc",
            ] {
                let p = format!("{home}/{f}");
                if self.exists(&p) {
                    self.add(Startup, Path::new(&p), "user shell profile");
                }
            }
            autostart_dirs.push(format!("{home}/.config/autostart"));
        }
        for dir in autostart_dirs {
            for (name, f) in self.list_dir(&dir) {
                if !name.ends_with(".desktop") {
                    continue;
                }
                self.add(Startup, &f, "XDG autostart entry");
                if let Ok(t) = fs::read_to_string(self.host(&f)) {
                    for l in t.lines() {
                        if let Some(cmd) = l.strip_prefix("Exec=") {
                            if let Some(p) =
                                cmd.split_whitespace().next().filter(|p| p.starts_with('/'))
                            {
                                self.add(
                                    StartupProgram,
                                    Path::new(p),
                                    format!("Exec= of {}", path_text::encode(&f)),
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    fn boot_sectors(&mut self) {
        let sys_block = self.host("/sys/block");
        let rd = match fs::read_dir(&sys_block) {
            Ok(rd) => rd,
            Err(e) => {
                self.skip("/sys/block", format!("cannot list block devices: {e}"));
                return;
            }
        };
        let mut devices = Vec::new();
        for disk in rd.filter_map(|e| e.ok()) {
            devices.push((disk.file_name(), disk.path()));
            if let Ok(parts) = fs::read_dir(disk.path()) {
                for p in parts.filter_map(|e| e.ok()) {
                    if p.path().join("partition").exists() {
                        devices.push((p.file_name(), p.path()));
                    }
                }
            }
        }
        devices.sort();
        for (name, sys) in devices {
            let size = fs::read_to_string(sys.join("size"))
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok());
            // The node is named by the name's bytes, the report by its text.
            let dev = Path::new("/dev").join(&name);
            let name = path_text::encode(&name);
            if size == Some(0) {
                self.skip(format!("/dev/{name}"), "empty device (size 0)");
                continue;
            }
            let mut buf = vec![0u8; BOOT_SECTOR_BYTES];
            let r = fs::File::open(self.host(&dev)).and_then(|mut f| {
                let mut n = 0;
                while n < buf.len() {
                    let k = f.read(&mut buf[n..])?;
                    if k == 0 {
                        break;
                    }
                    n += k;
                }
                Ok(n)
            });
            match r {
                Ok(0) => self.skip(path_text::encode(&dev), "read 0 bytes"),
                Ok(n) => {
                    buf.truncate(n);
                    self.out.boot_sectors.push(BootSector {
                        device: name,
                        path: dev,
                        data: buf,
                    })
                }
                Err(e) => self.skip(
                    path_text::encode(&dev),
                    format!("cannot read raw device: {e}"),
                ),
            }
        }
    }
}

/// Finds a module's file (relative to `/lib/modules/RELEASE`) in
/// `modules.dep` text; `-` and `_` are equivalent in module names.
pub fn module_file(modules_dep: &str, module: &str) -> Option<String> {
    let want = module.replace('-', "_");
    modules_dep.lines().find_map(|l| {
        let file = l.split(':').next()?;
        let base = file.rsplit('/').next()?;
        let stem = base.split(".ko").next()?;
        (stem.replace('-', "_") == want).then(|| file.to_string())
    })
}

/// Programs started by a systemd unit: absolute first words of `Exec*=`
/// lines, with the `@-:+!` prefixes removed.
pub fn unit_exec_programs(unit: &str) -> Vec<(String, String)> {
    let mut v = Vec::new();
    for l in unit.lines() {
        let l = l.trim();
        let Some((k, val)) = l.split_once('=') else {
            continue;
        };
        let k = k.trim();
        if !matches!(
            k,
            "ExecStart"
                | "ExecStartPre"
                | "ExecStartPost"
                | "ExecReload"
                | "ExecStop"
                | "ExecStopPost"
                | "ExecCondition"
        ) {
            continue;
        }
        let val = val.trim().trim_start_matches(['@', '-', ':', '+', '!']);
        if let Some(p) = val.split_whitespace().next().filter(|p| p.starts_with('/')) {
            v.push((k.to_string(), p.to_string()));
        }
    }
    v
}

impl HostRoot {
    /// Enumerates the critical areas of the device under this root.
    pub fn critical_areas(&self) -> CriticalAreas {
        let mut c = Collector {
            root: self,
            seen: BTreeSet::new(),
            out: CriticalAreas::default(),
        };
        c.kernel();
        c.startup();
        c.boot_sectors();
        c.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    /// A startup file named with bytes that are not UTF-8 is listed under its own name,
    /// so that the scanner opens that file and not a look-alike that does not exist.
    #[test]
    fn a_startup_file_with_a_non_utf8_name_is_listed_under_its_own_bytes() {
        let d = tempfile::tempdir().unwrap();
        let name = OsStr::from_bytes(b"evil\xff\xfe");
        std::fs::create_dir_all(d.path().join("etc/cron.d")).unwrap();
        std::fs::write(
            d.path().join("etc/cron.d").join(name),
            b"* * * * * root /x\n",
        )
        .unwrap();
        let root = HostRoot::new(d.path());
        let areas = root.critical_areas();
        let cron = areas
            .files
            .iter()
            .find(|f| f.origin == "cron")
            .expect("the cron file is listed");
        assert_eq!(cron.path, Path::new("/etc/cron.d").join(name));
        assert!(root.host_path(&cron.path).unwrap().is_file());
    }
}
