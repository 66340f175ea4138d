//! A real clamd for tests (feature `testing`): started with a private configuration
//! and signatures generated from the test's own samples, never the system's.

use md5::Digest as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::clamd::{ClamdAddr, ClamdClient, ClamdLimits};

/// A running clamd; killed when dropped, whatever the test did.
pub struct Clamd {
    child: Child,
    dir: PathBuf,
    /// Its unix socket.
    pub socket: PathBuf,
    /// Its TCP address (`127.0.0.1:PORT`).
    pub tcp: String,
    /// The text of its configuration file.
    pub conf: String,
    /// The configuration file.
    pub conf_path: PathBuf,
}

impl Drop for Clamd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The EICAR test string, assembled at run time so that no source file is itself
/// flagged by scanners.
pub fn eicar() -> Vec<u8> {
    [
        "X5O!P%@AP[4\\PZX54(P^)7CC)7}",
        "$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!",
        "$H+H*",
    ]
    .concat()
    .into_bytes()
}

/// Where Debian's `clamav-daemon` (or a local build) put clamd.
pub fn clamd_bin() -> Option<PathBuf> {
    ["/usr/sbin/clamd", "/usr/bin/clamd", "/usr/local/sbin/clamd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Starts clamd in `dir` with three signatures: `known_bad` by MD5 and size
/// (`Riposte.Test.KnownBad`), EICAR (`Riposte.Test.EICAR`), and the bytes `marker`
/// anywhere in a file or stream (`Riposte.Test.Marker`). File limits are 1 MB.
///
/// `None` when clamd is not installed and `RIPOSTE_SKIP_CLAMD=1`; otherwise a missing
/// clamd, or one that does not answer PING within 60 s, panics with what to do.
pub fn start_clamd(dir: &Path, known_bad: &[u8], marker: &[u8]) -> Option<Clamd> {
    let Some(bin) = clamd_bin() else {
        if std::env::var("RIPOSTE_SKIP_CLAMD").as_deref() == Ok("1") {
            eprintln!("clamd not installed; skipped because RIPOSTE_SKIP_CLAMD=1");
            return None;
        }
        panic!("clamd is not installed: run `apt-get install -y clamav-daemon` (or set RIPOSTE_SKIP_CLAMD=1 to skip)");
    };
    let db = dir.join("db");
    fs::create_dir_all(&db).expect("create the signature directory");
    let hdb = |name: &str, data: &[u8]| {
        format!(
            "{}:{}:{name}\n",
            hex::encode(md5::Md5::digest(data)),
            data.len()
        )
    };
    let write = |p: PathBuf, text: String| fs::write(&p, text).expect("write a test file");
    write(db.join("test.hdb"), hdb("Riposte.Test.KnownBad", known_bad));
    write(db.join("eicar.hdb"), hdb("Riposte.Test.EICAR", &eicar()));
    write(
        db.join("marker.ndb"),
        format!("Riposte.Test.Marker:0:*:{}\n", hex::encode(marker)),
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let socket = dir.join("clamd.sock");
    let conf = format!(
        "LocalSocket {}\nTCPSocket {port}\nTCPAddr 127.0.0.1\nForeground yes\nDatabaseDirectory {}\nLogFile {}\nPidFile {}\nTemporaryDirectory {}\n\
         MaxFileSize 1M\nMaxScanSize 4M\nStreamMaxLength 1M\nMaxThreads 2\nBytecode no\nOfficialDatabaseOnly no\n",
        socket.display(),
        db.display(),
        dir.join("clamd.log").display(),
        dir.join("clamd.pid").display(),
        dir.display(),
    );
    let conf_path = dir.join("clamd.conf");
    write(conf_path.clone(), conf.clone());
    let child = Command::new(bin)
        .arg("--config-file")
        .arg(&conf_path)
        .arg("--foreground")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start clamd");
    let mut c = Clamd {
        child,
        dir: dir.to_path_buf(),
        socket,
        tcp: format!("127.0.0.1:{port}"),
        conf,
        conf_path,
    };
    let client = ClamdClient::new(ClamdAddr::Unix(c.socket.clone()), ClamdLimits::default());
    let t0 = Instant::now();
    while client.ping().is_err() {
        if let Ok(Some(st)) = c.child.try_wait() {
            let log = fs::read_to_string(c.dir.join("clamd.log")).unwrap_or_default();
            panic!("clamd exited with {st}: {log}");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "clamd did not answer PING within 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(c)
}
