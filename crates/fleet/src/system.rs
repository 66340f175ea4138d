//! The pieces outside the protocol: the server as a child process, its memory, file
//! descriptor limits, and a fresh PostgreSQL database per run.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;

/// Raises this process's `RLIMIT_NOFILE` (soft, and hard when privileged) to at least
/// `want`. Children spawned afterwards inherit it. Returns the soft limit now in force.
pub(crate) fn raise_nofile(want: u64) -> anyhow::Result<u64> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read or write the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getrlimit(RLIMIT_NOFILE)");
    }
    if rl.rlim_cur >= want {
        return Ok(rl.rlim_cur);
    }
    let wanted = libc::rlimit {
        rlim_cur: want,
        rlim_max: rl.rlim_max.max(want),
    };
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) } == 0 {
        return Ok(want);
    }
    // Not allowed to raise the hard limit: go as far as it allows.
    let capped = libc::rlimit {
        rlim_cur: want.min(rl.rlim_max),
        rlim_max: rl.rlim_max,
    };
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &capped) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setrlimit(RLIMIT_NOFILE)");
    }
    Ok(capped.rlim_cur)
}

/// A `/proc/PID/status` field in kB (`VmRSS`, `VmHWM`, …).
pub(crate) fn status_kb(pid: u32, field: &str) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix(field)
                .and_then(|r| r.strip_prefix(':'))
                .and_then(|r| r.trim().strip_suffix("kB"))
                .and_then(|n| n.trim().parse().ok())
        })
        .with_context(|| format!("no {field} in {path}"))
}

/// The soft "Max open files" of a process.
pub(crate) fn open_files_limit(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// `riposte server` running as a child process.
pub(crate) struct ServerProcess {
    child: tokio::process::Child,
    pub pid: u32,
    /// `https://127.0.0.1:PORT`
    pub url: String,
    pub ca_pem: String,
    pub log: PathBuf,
}

impl ServerProcess {
    /// Starts `bin server` on loopback with ports chosen by the system, and waits until it
    /// prints its addresses.
    pub async fn start(
        bin: &Path,
        data: &Path,
        database: Option<&str>,
        admin_password_file: &Path,
    ) -> anyhow::Result<ServerProcess> {
        let log = data.with_extension("log");
        let log_file = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let mut cmd = tokio::process::Command::new(bin);
        cmd.arg("server")
            .arg("--data")
            .arg(data)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--admin-password-file")
            .arg(admin_password_file);
        if let Some(db) = database {
            cmd.arg("--database").arg(db);
        }
        if std::env::var_os("RIPOSTE_LOG").is_none() {
            cmd.env("RIPOSTE_LOG", "warn");
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot run {} server", bin.display()))?;
        let pid = child.id().context("the server exited at once")?;
        let stdout = child.stdout.take().context("no stdout from the server")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let mut url = None;
        let mut agent = None;
        let read = async {
            while let Some(line) = lines.next_line().await? {
                if let Some(rest) = line.split("API and console:").nth(1) {
                    url = Some(rest.trim().trim_end_matches('/').to_string());
                }
                if let Some(rest) = line.split("agent channel:").nth(1) {
                    agent = Some(rest.trim().to_string());
                }
                if url.is_some() && agent.is_some() {
                    return Ok::<bool, std::io::Error>(true);
                }
            }
            Ok(false)
        };
        let found = tokio::time::timeout(Duration::from_secs(120), read).await;
        let tail = || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(20)..].join("\n")
        };
        match found {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => bail!("the server exited before it was ready:\n{}", tail()),
            Ok(Err(e)) => bail!("cannot read the server's output: {e}\n{}", tail()),
            Err(_) => bail!("the server did not start within 120 s:\n{}", tail()),
        }
        // Keep draining stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let url = url.context("no API address")?;
        let ca_path = data.join("ca.pem");
        let ca_pem = std::fs::read_to_string(&ca_path)
            .with_context(|| format!("cannot read {}", ca_path.display()))?;
        Ok(ServerProcess {
            child,
            pid,
            url,
            ca_pem,
            log,
        })
    }

    /// The server's resident memory in kB.
    pub fn rss_kb(&self) -> anyhow::Result<u64> {
        status_kb(self.pid, "VmRSS")
    }

    /// Asks the server to stop (SIGTERM), and kills it if it has not within 15 s.
    pub async fn stop(mut self) {
        if let Ok(pid) = libc::pid_t::try_from(self.pid) {
            // SAFETY: signals our own child, which we have not reaped yet.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        if tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// A PostgreSQL database created for one run and dropped after it.
pub(crate) struct FreshDatabase {
    admin_url: String,
    name: String,
    /// The URL of the new database.
    pub url: String,
}

impl FreshDatabase {
    /// Creates `fleet_<pid>_<ms>` on the server of `admin_url`.
    pub async fn create(admin_url: &str) -> anyhow::Result<FreshDatabase> {
        use sqlx::{Connection, Executor};
        let mut url = reqwest::Url::parse(admin_url).context("the database URL is not a URL")?;
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        let name = format!("fleet_{}_{ms}", std::process::id());
        let mut conn = sqlx::PgConnection::connect(admin_url)
            .await
            .with_context(|| format!("cannot connect to {admin_url}"))?;
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .with_context(|| format!("cannot create database {name}"))?;
        let _ = conn.close().await;
        url.set_path(&format!("/{name}"));
        Ok(FreshDatabase {
            admin_url: admin_url.to_string(),
            name,
            url: url.to_string(),
        })
    }

    /// Drops the database (disconnecting whatever is still connected).
    pub async fn drop_now(self) -> anyhow::Result<()> {
        use sqlx::{Connection, Executor};
        let mut conn = sqlx::PgConnection::connect(&self.admin_url).await?;
        conn.execute(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name).as_str())
            .await
            .with_context(|| format!("cannot drop database {}", self.name))?;
        let _ = conn.close().await;
        Ok(())
    }
}

/// Today's date (UTC) as `YYYY-MM-DD`.
pub(crate) fn today_utc() -> String {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() / 86_400)
        .unwrap_or_default() as i64;
    let (y, m, d) = riposte_model::time::civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// "N × CPU model" of this machine.
pub(crate) fn machine() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cores} cores, {model}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_own_rss_and_limits() {
        let pid = std::process::id();
        assert!(super::status_kb(pid, "VmRSS").unwrap() > 0);
        assert!(super::open_files_limit(pid).unwrap() > 0);
        let d = super::today_utc();
        assert_eq!(d.len(), 10, "{d}");
        assert!(d.starts_with("20"), "{d}");
    }
}
