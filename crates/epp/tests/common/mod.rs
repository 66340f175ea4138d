//! A fake device root with critical areas, shared by the tests.
#![allow(dead_code)]

use std::fs;
use std::path::Path;

/// Marker the test signatures detect in boot sectors and files.
pub const MARKER: &[u8] = b"RIPOSTE-TEST-MALWARE-MARKER-7f3a9c";

pub fn w(root: &Path, dev: &str, data: &[u8]) {
    let p = root.join(dev.trim_start_matches('/'));
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}

/// Builds a device under `root` whose startup program `/usr/local/bin/evil`
/// (started by a systemd unit) is `evil`, whose `sda` boot sector contains
/// MARKER, and with a kernel module `badmod` loaded.
pub fn fake_device(root: &Path, evil: &[u8]) {
    w(root, "/proc/sys/kernel/osrelease", b"6.1.0-test\n");
    w(
        root,
        "/proc/modules",
        b"badmod 16384 0 - Live 0x0\next4 1 0 - Live 0x0\nghost 1 0 - Live 0x0\n",
    );
    w(
        root,
        "/lib/modules/6.1.0-test/modules.dep",
        b"kernel/drivers/bad/badmod.ko.xz:\nkernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko\n",
    );
    w(
        root,
        "/lib/modules/6.1.0-test/kernel/drivers/bad/badmod.ko.xz",
        b"module bytes",
    );
    w(
        root,
        "/lib/modules/6.1.0-test/kernel/fs/ext4/ext4.ko",
        b"ext4 bytes",
    );
    w(root, "/boot/vmlinuz-6.1.0-test", b"kernel image");
    w(root, "/boot/initrd.img-6.1.0-test", b"initramfs");
    w(
        root,
        "/etc/systemd/system/evil.service",
        b"[Service]\nExecStart=-/usr/local/bin/evil --daemon\nExecStartPre=/bin/true\n",
    );
    w(root, "/usr/local/bin/evil", evil);
    w(root, "/etc/ld.so.preload", b"/usr/lib/libhide.so\n");
    w(root, "/usr/lib/libhide.so", b"preloaded");
    w(root, "/etc/crontab", b"* * * * * root /tmp/x\n");
    w(root, "/etc/rc.local", b"#!/bin/sh\n");
    w(
        root,
        "/etc/passwd",
        b"root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/sh\n",
    );
    w(root, "/home/alice/.bashrc", b"alias ls=ls\n");
    w(
        root,
        "/home/alice/.config/autostart/x.desktop",
        b"[Desktop Entry]\nExec=/opt/x/run %u\n",
    );
    w(root, "/sys/block/sda/size", b"1000\n");
    w(root, "/sys/block/sda/sda1/partition", b"1\n");
    w(root, "/sys/block/sda/sda1/size", b"900\n");
    w(root, "/sys/block/loop0/size", b"0\n");
    let mut mbr = vec![0u8; 8192];
    mbr[100..100 + MARKER.len()].copy_from_slice(MARKER);
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    w(root, "/dev/sda", &mbr);
    // /dev/sda1 is missing: must be recorded as skipped
}
