//! Client for the ClamAV daemon (clamd) socket protocol.
//!
//! Uses the `z`-prefixed, NUL-terminated commands (`zPING`, `zVERSION`,
//! `zCONTSCAN`, `zMULTISCAN`, `zINSTREAM`), one connection per command; clamd
//! closes the connection after replying. Reply lines look like
//! `PATH: OK`, `PATH: NAME FOUND` or `PATH: MESSAGE ERROR`.
//!
//! clamd replies `OK` for objects over its `MaxFileSize`/`MaxScanSize`
//! limits without scanning them (unless `AlertExceedsMax` is on), and refuses
//! streams over `StreamMaxLength`. clamd has no command to query its
//! configuration, so the client is *configured* with the limits
//! ([`ClamdLimits`], e.g. parsed from the same `clamd.conf` with
//! [`ClamdLimits::from_conf`]) and reports larger objects as skipped.
//!
//! [`Epp::scan_file`] opens the file itself (without following links) and
//! streams that descriptor with `INSTREAM`, rather than handing clamd a path:
//! clamd then scans exactly the object that was checked, needs no read access
//! to the device's files, and scans names that are not UTF-8. Only a file over
//! `StreamMaxLength` but within `MaxFileSize` goes by path (`CONTSCAN`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use riposte_host::HostRoot;

use crate::{Epp, EppError, ScanOutcome};

/// Where clamd listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClamdAddr {
    /// `LocalSocket` path.
    Unix(PathBuf),
    /// `TCPAddr:TCPSocket`, e.g. `127.0.0.1:3310`.
    Tcp(String),
}

impl std::fmt::Display for ClamdAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClamdAddr::Unix(p) => write!(f, "unix:{}", p.display()),
            ClamdAddr::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

/// clamd's size limits, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClamdLimits {
    /// `StreamMaxLength` (INSTREAM).
    pub stream_max_length: u64,
    /// `MaxFileSize`.
    pub max_file_size: u64,
    /// `MaxScanSize`.
    pub max_scan_size: u64,
}

impl Default for ClamdLimits {
    /// clamd's built-in defaults (ClamAV 1.x).
    fn default() -> Self {
        ClamdLimits {
            stream_max_length: 100 << 20,
            max_file_size: 100 << 20,
            max_scan_size: 400 << 20,
        }
    }
}

fn parse_size(v: &str) -> Option<u64> {
    let v = v.trim();
    let (num, mul) = match v.chars().last()? {
        'k' | 'K' => (&v[..v.len() - 1], 1u64 << 10),
        'm' | 'M' => (&v[..v.len() - 1], 1 << 20),
        'g' | 'G' => (&v[..v.len() - 1], 1 << 30),
        _ => (v, 1),
    };
    num.trim().parse::<u64>().ok().map(|n| n * mul)
}

impl ClamdLimits {
    /// Reads the limits from `clamd.conf` text; absent options keep clamd's
    /// defaults. A value of 0 means "no limit" to clamd and is kept as
    /// `u64::MAX` here.
    pub fn from_conf(text: &str) -> Self {
        let mut l = ClamdLimits::default();
        for line in text.lines() {
            let line = line.trim();
            let mut it = line.splitn(2, char::is_whitespace);
            let (Some(k), Some(v)) = (it.next(), it.next()) else {
                continue;
            };
            let Some(n) = parse_size(v).map(|n| if n == 0 { u64::MAX } else { n }) else {
                continue;
            };
            match k {
                "StreamMaxLength" => l.stream_max_length = n,
                "MaxFileSize" => l.max_file_size = n,
                "MaxScanSize" => l.max_scan_size = n,
                _ => {}
            }
        }
        l
    }

    /// Largest file clamd really scans.
    pub fn file_limit(&self) -> u64 {
        self.max_file_size.min(self.max_scan_size)
    }

    /// Largest stream clamd really scans.
    pub fn stream_limit(&self) -> u64 {
        self.stream_max_length
            .min(self.max_file_size)
            .min(self.max_scan_size)
    }
}

/// clamd's `ExcludePath` options: regular expressions of paths clamd must not scan.
///
/// clamd applies them only to what it reads by path. [`Epp::scan_file`] streams the
/// file it opened instead (see the module's documentation), so the client applies them
/// itself: a path an administrator excluded from clamd is not sent to it either, and is
/// reported skipped, with the expression that excluded it.
#[derive(Debug, Clone, Default)]
pub struct ClamdExclusions {
    patterns: Vec<regex::bytes::Regex>,
    ignored: Vec<String>,
}

impl ClamdExclusions {
    /// Reads every `ExcludePath` of `clamd.conf` text (clamd takes the option many
    /// times), as clamd reads them: a value in double quotes is what is between them.
    ///
    /// clamd compiles them as POSIX extended expressions, and ignores one that does not
    /// compile (it excludes nothing). They are compiled here with the `regex` crate,
    /// whose syntax agrees on what such expressions are written with (anchors, bracket
    /// expressions, alternation, repetition). One it cannot take, or one POSIX refuses
    /// but it would take (an empty alternative, which would match every path, or a `(?`
    /// group), is ignored too, and said in [`ClamdExclusions::ignored`].
    pub fn from_conf(text: &str) -> Self {
        let mut out = ClamdExclusions::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            let Some(value) = line.strip_prefix("ExcludePath") else {
                continue;
            };
            if !value.starts_with(char::is_whitespace) {
                continue; // another option whose name begins so
            }
            let mut value = value.trim();
            if let Some(quoted) = value.strip_prefix('"') {
                value = quoted.rsplit_once('"').map_or(quoted, |(inside, _)| inside);
            }
            let compiled = posix_refuses(value).map_or_else(
                || {
                    regex::bytes::RegexBuilder::new(value)
                        .unicode(false)
                        .build()
                        .map_err(|e| e.to_string())
                },
                |why| Err(why.to_string()),
            );
            match compiled {
                Ok(regex) if !value.is_empty() => out.patterns.push(regex),
                Ok(_) => {}
                Err(e) => out.ignored.push(format!(
                    "line {} of clamd.conf: ExcludePath {value:?} is ignored, as clamd \
                     ignores an expression it cannot compile: {e}",
                    n + 1
                )),
            }
        }
        out
    }

    /// The expressions left out, each with its line and why.
    pub fn ignored(&self) -> &[String] {
        &self.ignored
    }

    /// The expression that excludes `device_path`, if one does: one that matches the
    /// path or a directory above it (clamd does not enter an excluded directory). As
    /// clamd matches, an expression that ends in `/` is matched against the path with a
    /// `/` after it, so that `^/srv/cache/` excludes the directory itself too.
    pub fn excluding(&self, device_path: &Path) -> Option<&str> {
        use std::os::unix::ffi::OsStrExt;
        for path in device_path.ancestors() {
            let bytes = path.as_os_str().as_bytes();
            if bytes.is_empty() {
                continue;
            }
            let with_slash = [bytes, b"/"].concat();
            let found = self.patterns.iter().find(|r| {
                if r.as_str().ends_with('/') {
                    r.is_match(&with_slash)
                } else {
                    r.is_match(bytes)
                }
            });
            if let Some(r) = found {
                return Some(r.as_str());
            }
        }
        None
    }

    /// Whether none are in force.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

/// Why POSIX's extended syntax refuses `pattern` where the `regex` crate would take it,
/// if it does: an empty alternative or group (`a|`, `(|a)`, `()`), which would match
/// every path here, and the crate's own `(?` groups and flags.
fn posix_refuses(pattern: &str) -> Option<&'static str> {
    let bytes = pattern.as_bytes();
    let mut i = 0;
    // What came before, outside brackets: `None` at the start of the pattern.
    let mut previous: Option<u8> = None;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => {
                previous = Some(b'a'); // an escaped character is an atom
                i += 2;
                continue;
            }
            b'[' => {
                // A bracket expression: `]` first (after an optional `^`) is a member,
                // and `[:...:]` classes hold no `]` that ends it.
                let mut j = i + 1;
                if bytes.get(j) == Some(&b'^') {
                    j += 1;
                }
                if bytes.get(j) == Some(&b']') {
                    j += 1;
                }
                while j < bytes.len() && bytes[j] != b']' {
                    if bytes[j] == b'[' && matches!(bytes.get(j + 1), Some(b':' | b'.' | b'=')) {
                        let close = bytes[j + 1];
                        j += 2;
                        while j + 1 < bytes.len() && !(bytes[j] == close && bytes[j + 1] == b']') {
                            j += 1;
                        }
                        j += 2;
                        continue;
                    }
                    j += 1;
                }
                previous = Some(b'a');
                i = j + 1;
                continue;
            }
            b'(' if bytes.get(i + 1) == Some(&b'?') => return Some("`(?` is not POSIX syntax"),
            b'|' if matches!(previous, None | Some(b'(' | b'|')) => {
                return Some("an empty alternative")
            }
            b')' if matches!(previous, Some(b'(' | b'|')) => {
                return Some("an empty alternative or group")
            }
            _ => {}
        }
        previous = Some(bytes[i]);
        i += 1;
    }
    matches!(previous, Some(b'|')).then_some("an empty alternative")
}

/// One clamd reply line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClamdReply {
    /// Path (or `stream`) the line is about.
    pub path: String,
    /// Outcome; `Skipped` carries clamd's ERROR message.
    pub outcome: Result<ScanOutcome, String>,
}

/// Parses one reply line (without its terminating NUL).
pub fn parse_reply(line: &str) -> ClamdReply {
    let line = line.trim_end_matches(['\0', '\n']);
    if let Some(rest) = line.strip_suffix(" FOUND") {
        if let Some((p, name)) = rest.rsplit_once(": ") {
            return ClamdReply {
                path: p.to_string(),
                outcome: Ok(ScanOutcome::Infected {
                    threat: name.to_string(),
                }),
            };
        }
    }
    if let Some(p) = line.strip_suffix(": OK") {
        return ClamdReply {
            path: p.to_string(),
            outcome: Ok(ScanOutcome::Clean),
        };
    }
    let msg = line.strip_suffix(" ERROR").unwrap_or(line);
    match msg.split_once(": ") {
        Some((p, m)) => ClamdReply {
            path: p.to_string(),
            outcome: Err(m.to_string()),
        },
        None => ClamdReply {
            path: String::new(),
            outcome: Err(msg.to_string()),
        },
    }
}

trait Conn: Read + Write {}
impl<T: Read + Write> Conn for T {}

/// How long [`Epp::check`] waits for clamd's answer to `PING`.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// A clamd client.
#[derive(Debug, Clone)]
pub struct ClamdClient {
    addr: ClamdAddr,
    limits: ClamdLimits,
    exclusions: ClamdExclusions,
    timeout: Duration,
}

impl ClamdClient {
    /// A client for clamd at `addr` with its `limits`.
    pub fn new(addr: ClamdAddr, limits: ClamdLimits) -> Self {
        ClamdClient {
            addr,
            limits,
            exclusions: ClamdExclusions::default(),
            timeout: Duration::from_secs(120),
        }
    }

    /// Sets the paths clamd is configured not to scan ([`ClamdExclusions`]).
    pub fn with_exclusions(mut self, exclusions: ClamdExclusions) -> Self {
        self.exclusions = exclusions;
        self
    }

    /// Sets the I/O timeout of each command.
    pub fn with_timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// The configured limits.
    pub fn limits(&self) -> ClamdLimits {
        self.limits
    }

    fn unreachable(&self, e: std::io::Error) -> EppError {
        // A socket timeout reads as "Resource temporarily unavailable": say what it is.
        let source = match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {} s", self.timeout.as_secs()),
            ),
            _ => e,
        };
        EppError::Unreachable {
            engine: "clamd",
            addr: self.addr.to_string(),
            source,
        }
    }

    fn connect(&self) -> Result<Box<dyn Conn>, EppError> {
        match &self.addr {
            ClamdAddr::Unix(p) => {
                let s = UnixStream::connect(p).map_err(|e| self.unreachable(e))?;
                s.set_read_timeout(Some(self.timeout))
                    .map_err(|e| self.unreachable(e))?;
                s.set_write_timeout(Some(self.timeout))
                    .map_err(|e| self.unreachable(e))?;
                Ok(Box::new(s))
            }
            ClamdAddr::Tcp(a) => {
                let s = TcpStream::connect(a).map_err(|e| self.unreachable(e))?;
                s.set_read_timeout(Some(self.timeout))
                    .map_err(|e| self.unreachable(e))?;
                s.set_write_timeout(Some(self.timeout))
                    .map_err(|e| self.unreachable(e))?;
                Ok(Box::new(s))
            }
        }
    }

    fn read_lines(&self, c: &mut dyn Conn) -> Result<Vec<String>, EppError> {
        let mut buf = Vec::new();
        if let Err(e) = c.read_to_end(&mut buf) {
            // A clamd that closes while data it did not read is still queued to it (a
            // stream it refused midway) resets the connection: the reply it sent first
            // is read, then the reset comes as an error. That reply, whole (it ends
            // with the NUL of a `z` command's reply), is the answer.
            if buf.last() != Some(&0) {
                return Err(self.unreachable(e));
            }
        }
        Ok(buf
            .split(|&b| b == 0)
            .map(|l| String::from_utf8_lossy(l).trim().to_string())
            .filter(|l| !l.is_empty())
            .collect())
    }

    /// After a failed write of a stream: clamd stops reading and closes the connection
    /// when a stream passes its own `StreamMaxLength` (a limit the client was not told
    /// of), after saying why. That reply, if it came, is the outcome; otherwise clamd is
    /// unreachable.
    fn refusal_or(
        &self,
        c: &mut dyn Conn,
        write_error: std::io::Error,
    ) -> Result<Result<ScanOutcome, String>, EppError> {
        match self.read_lines(c).ok().as_deref() {
            Some([line, ..]) => Ok(parse_reply(line).outcome),
            _ => Err(self.unreachable(write_error)),
        }
    }

    fn command(&self, cmd: &[u8]) -> Result<Vec<String>, EppError> {
        let mut c = self.connect()?;
        c.write_all(cmd).map_err(|e| self.unreachable(e))?;
        self.read_lines(&mut *c)
    }

    /// `PING`: succeeds if clamd answers `PONG`.
    pub fn ping(&self) -> Result<(), EppError> {
        let l = self.command(b"zPING\0")?;
        if l.first().map(String::as_str) == Some("PONG") {
            Ok(())
        } else {
            Err(EppError::Engine {
                engine: "clamd",
                message: format!("unexpected PING reply {l:?}"),
            })
        }
    }

    /// `VERSION`, e.g. `ClamAV 1.0.7/27000/...`.
    pub fn version(&self) -> Result<String, EppError> {
        self.command(b"zVERSION\0")?
            .into_iter()
            .next()
            .ok_or_else(|| EppError::Engine {
                engine: "clamd",
                message: "empty VERSION reply".into(),
            })
    }

    fn path_command(&self, verb: &str, host_path: &Path) -> Result<Vec<ClamdReply>, EppError> {
        let p = host_path.to_str().ok_or_else(|| EppError::Engine {
            engine: "clamd",
            message: format!("{host_path:?} is not UTF-8; clamd cannot be given this path"),
        })?;
        if p.contains(['\0', '\n']) {
            return Err(EppError::Engine {
                engine: "clamd",
                message: format!("{host_path:?} contains a NUL or newline"),
            });
        }
        let mut cmd = format!("z{verb} {p}").into_bytes();
        cmd.push(0);
        Ok(self.command(&cmd)?.iter().map(|l| parse_reply(l)).collect())
    }

    /// `CONTSCAN` of a host path (file or directory, scanned sequentially;
    /// clamd reports `FOUND`/`ERROR` lines, and `OK` for a clean file).
    /// Note: this does not apply the size limits; use [`Epp::scan_file`].
    pub fn contscan(&self, host_path: &Path) -> Result<Vec<ClamdReply>, EppError> {
        self.path_command("CONTSCAN", host_path)
    }

    /// `MULTISCAN` of a host path (directory scanned by clamd's thread pool).
    pub fn multiscan(&self, host_path: &Path) -> Result<Vec<ClamdReply>, EppError> {
        self.path_command("MULTISCAN", host_path)
    }

    /// `INSTREAM`: sends `data` in length-prefixed chunks. Data over the
    /// stream limit is not sent and gives [`ScanOutcome::Skipped`].
    pub fn instream(&self, data: &[u8]) -> Result<ScanOutcome, EppError> {
        self.instream_from(&mut &data[..], data.len() as u64)?
            .map_err(|message| EppError::Engine {
                engine: "clamd",
                message,
            })
    }

    /// `INSTREAM` of what `reader` gives, `size` bytes expected. Over the stream
    /// limit nothing is sent (or, if the source grows past it while being sent,
    /// the stream is abandoned) and the outcome is [`ScanOutcome::Skipped`]. The inner
    /// error is clamd's own `ERROR` reply.
    fn instream_from(
        &self,
        reader: &mut dyn Read,
        size: u64,
    ) -> Result<Result<ScanOutcome, String>, EppError> {
        let limit = self.limits.stream_limit();
        let too_large = |size: u64| ScanOutcome::Skipped {
            reason: format!("skipped: larger than clamd's limit ({size} bytes > {limit} bytes)"),
        };
        if size > limit {
            return Ok(Ok(too_large(size)));
        }
        let mut c = self.connect()?;
        c.write_all(b"zINSTREAM\0")
            .map_err(|e| self.unreachable(e))?;
        let mut chunk = vec![0u8; 64 * 1024];
        let mut sent = 0u64;
        loop {
            let n = match reader.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(EppError::Io {
                        path: PathBuf::from("stream"),
                        source: e,
                    })
                }
            };
            sent += n as u64;
            if sent > limit {
                // Grown since it was measured: clamd would refuse the stream.
                return Ok(Ok(too_large(sent)));
            }
            let written = c
                .write_all(&(n as u32).to_be_bytes())
                .and_then(|()| c.write_all(&chunk[..n]));
            if let Err(e) = written {
                return self.refusal_or(&mut *c, e);
            }
        }
        if let Err(e) = c.write_all(&0u32.to_be_bytes()) {
            return self.refusal_or(&mut *c, e);
        }
        let lines = self.read_lines(&mut *c)?;
        let line = lines.first().ok_or_else(|| EppError::Engine {
            engine: "clamd",
            message: "empty INSTREAM reply".into(),
        })?;
        Ok(parse_reply(line).outcome)
    }
}

impl Epp for ClamdClient {
    fn check(&self) -> Result<(), EppError> {
        // A live clamd answers PING at once; one that holds the connection without a
        // word should not hold the caller for the scan timeout.
        self.clone().with_timeout(CHECK_TIMEOUT).ping()
    }

    fn name(&self) -> String {
        match self.version() {
            Ok(v) => format!("clamd ({v})"),
            Err(_) => format!("clamd at {}", self.addr),
        }
    }

    fn scan_file(&self, host: &HostRoot, path: &Path) -> Result<ScanOutcome, EppError> {
        // Matched on the device's path, as clamd on the device would match it.
        if let Some(pattern) = self.exclusions.excluding(path) {
            return Ok(ScanOutcome::Skipped {
                reason: format!("excluded by clamd.conf (ExcludePath {pattern})"),
            });
        }
        let opened = match host.open_regular(path) {
            Ok(o) => o,
            Err(e) => match crate::skip_reason(&e) {
                Some(r) => return Ok(ScanOutcome::Skipped { reason: r }),
                None => {
                    return Err(EppError::Io {
                        path: path.to_path_buf(),
                        source: std::io::Error::other(e.to_string()),
                    })
                }
            },
        };
        // The descriptor just opened is streamed, not the path handed to clamd:
        // clamd then scans exactly the object that was checked (a path can be
        // swapped in between), needs no read access to the device's files, and
        // takes names that are not UTF-8, which its path commands cannot carry.
        let size = opened.meta.size;
        if size <= self.limits.stream_limit() {
            let mut file = &opened.file;
            return match self.instream_from(&mut file, size) {
                Ok(Ok(outcome)) => Ok(outcome),
                // As for a file clamd reads itself: what it could not scan is skipped,
                // with its reason.
                Ok(Err(m)) => Ok(ScanOutcome::Skipped {
                    reason: format!("clamd could not scan it: {m}"),
                }),
                Err(EppError::Io { source, .. }) => Err(EppError::Io {
                    path: path.to_path_buf(),
                    source,
                }),
                Err(e) => Err(e),
            };
        }
        // Over `StreamMaxLength` but within what clamd scans by path: by path.
        let limit = self.limits.file_limit();
        if size > limit {
            return Ok(ScanOutcome::Skipped {
                reason: format!(
                    "skipped: larger than clamd's limit ({size} bytes > {limit} bytes)"
                ),
            });
        }
        let hp = host.host_path(path).map_err(|e| EppError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let replies = self.contscan(&hp)?;
        if let Some(r) = replies
            .iter()
            .find(|r| matches!(r.outcome, Ok(ScanOutcome::Infected { .. })))
        {
            return Ok(r.outcome.clone().unwrap_or(ScanOutcome::Clean));
        }
        if let Some(Err(m)) = replies.iter().map(|r| &r.outcome).find(|o| o.is_err()) {
            return Ok(ScanOutcome::Skipped {
                reason: format!("clamd could not scan it: {m}"),
            });
        }
        if replies.is_empty() {
            return Err(EppError::Engine {
                engine: "clamd",
                message: "empty CONTSCAN reply".into(),
            });
        }
        Ok(ScanOutcome::Clean)
    }

    fn scan_bytes(&self, _label: &str, data: &[u8]) -> Result<ScanOutcome, EppError> {
        self.instream(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies() {
        assert_eq!(parse_reply("/a b: OK").outcome, Ok(ScanOutcome::Clean));
        let r = parse_reply("/x: y/z: Eicar-Sig FOUND");
        assert_eq!(r.path, "/x: y/z");
        assert_eq!(
            r.outcome,
            Ok(ScanOutcome::Infected {
                threat: "Eicar-Sig".into()
            })
        );
        assert_eq!(
            parse_reply("/n: lstat() failed: No such file. ERROR").outcome,
            Err("lstat() failed: No such file.".into())
        );
        assert!(parse_reply("INSTREAM size limit exceeded. ERROR")
            .outcome
            .is_err());
    }

    /// clamd refuses a stream over its `StreamMaxLength` midway: it says why, then
    /// closes with the client's later chunks unread, which resets the connection. The
    /// client's write fails; its read gets the reply, then the reset as an error (which
    /// chunk the reset meets depends on timing, so the connection is played here). The
    /// reply is the outcome, not "clamd unreachable"; a reply cut short is not.
    #[test]
    fn a_stream_refused_midway_gives_clamds_reason() {
        struct Refused(std::io::Cursor<&'static [u8]>);
        impl Read for Refused {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                match self.0.read(buf)? {
                    0 => Err(std::io::ErrorKind::ConnectionReset.into()),
                    n => Ok(n),
                }
            }
        }
        impl Write for Refused {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let client = ClamdClient::new(ClamdAddr::Tcp("127.0.0.1:1".into()), ClamdLimits::default());
        let pipe = || std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        let whole = Refused(std::io::Cursor::new(
            b"INSTREAM size limit exceeded. ERROR\0",
        ));
        match client.refusal_or(&mut { whole }, pipe()) {
            Ok(Err(reason)) => assert!(reason.contains("size limit exceeded"), "{reason}"),
            other => panic!("expected clamd's refusal, got {other:?}"),
        }
        let cut = Refused(std::io::Cursor::new(b"INSTREAM size li"));
        assert!(matches!(
            client.refusal_or(&mut { cut }, pipe()),
            Err(EppError::Unreachable { .. })
        ));
    }

    #[test]
    fn conf_exclusions() {
        use std::os::unix::ffi::OsStrExt;
        let conf = "# ExcludePath ^/commented/\n\
                    ExcludePath ^/proc/\n\
                    \x20 ExcludePath   \\.cache(/|$)\n\
                    ExcludePath \"^/srv/quoted \"\n\
                    ExcludePath ^/mnt/backup$\n\
                    ExcludePathX ^/x\nExcludePUA x\n";
        let ex = ClamdExclusions::from_conf(conf);
        assert!(ex.ignored().is_empty(), "{:?}", ex.ignored());
        assert_eq!(ex.excluding(Path::new("/proc/1/mem")), Some("^/proc/"));
        assert_eq!(
            ex.excluding(Path::new("/home/a/.cache/x")),
            Some("\\.cache(/|$)")
        );
        assert_eq!(ex.excluding(Path::new("/home/a/proc/x")), None);
        assert_eq!(ex.excluding(Path::new("/commented/x")), None);
        assert_eq!(ex.excluding(Path::new("/x")), None);
        // Quoted, as clamd reads it: what is between the quotes.
        assert_eq!(
            ex.excluding(Path::new("/srv/quoted /f")),
            Some("^/srv/quoted ")
        );
        // A directory excluded by an anchored name: what is under it too, as clamd does
        // not enter it.
        assert_eq!(
            ex.excluding(Path::new("/mnt/backup/etc/x")),
            Some("^/mnt/backup$")
        );
        assert_eq!(ex.excluding(Path::new("/mnt/backups")), None);
        // A name that is not UTF-8 is matched on its bytes, as clamd matches it.
        let odd = std::ffi::OsStr::from_bytes(b"/proc/\xff");
        assert!(ex.excluding(Path::new(odd)).is_some());
        assert!(ClamdExclusions::from_conf("MaxFileSize 1M\n").is_empty());

        // What clamd could not compile excludes nothing there, nor here; what POSIX
        // refuses but the `regex` crate would take (an empty alternative, which would
        // match every path) too.
        let ex = ClamdExclusions::from_conf(
            "LogTime yes\nExcludePath ^/(tmp\nExcludePath ^/tmp/|\nExcludePath (|a)\n\
             ExcludePath (?i)^/TMP\nExcludePath ^/ok[|]x\n",
        );
        assert_eq!(ex.ignored().len(), 4, "{:?}", ex.ignored());
        assert!(ex.ignored()[0].contains("line 2") && ex.ignored()[0].contains("^/(tmp"));
        assert_eq!(ex.excluding(Path::new("/home/u/x")), None);
        assert_eq!(ex.excluding(Path::new("/tmp/x")), None);
        assert_eq!(ex.excluding(Path::new("/ok|x")), Some("^/ok[|]x"));
    }

    #[test]
    fn conf_limits() {
        let l =
            ClamdLimits::from_conf("# c\nStreamMaxLength 10M\nMaxFileSize 2048K\nMaxScanSize 0\n");
        assert_eq!(l.stream_max_length, 10 << 20);
        assert_eq!(l.max_file_size, 2 << 20);
        assert_eq!(l.max_scan_size, u64::MAX);
        assert_eq!(l.file_limit(), 2 << 20);
    }
}
