//! `riposte bench fleet`: N lightweight simulated agents in one process against a real
//! `riposte server` child process, over the real agent protocol and mutual TLS, each with
//! its own enrolled identity.
//!
//! One run:
//! 1. starts the server (SQLite in a temporary directory, or a fresh PostgreSQL database
//!    created for the run and dropped after it), with `RLIMIT_NOFILE` raised for both;
//! 2. creates a group whose enforced policy enables Threat Response with `group_ioc_scan`,
//!    the special account, and one enrollment token for N uses;
//! 3. enrolls N agents (key + CSR + `POST /api/v1/enroll` each, several in flight) and
//!    measures the rate;
//! 4. reads the server's `VmRSS`, connects all N links, waits until they are idle, reads it
//!    again: (after − before) / N is the server memory per connected agent;
//! 5. creates an autonomous IOC scan task as the special account and measures, from just
//!    before that request, when each agent got the offer (agent clock) and when each
//!    agent's `completed` result was stored (the server's `updated_at` of each row).
//!
//! Simulated agents do not sweep: they answer every offer with `completed, 0 hits` at once,
//! so the numbers are the server's and the protocol's, not a scanner's.

#![warn(missing_docs)]

mod sim;
mod system;

use anyhow::{bail, Context};
use riposte_agent::identity::Identity;
use serde_json::{json, Value};
use sim::{Shared, SimAgent};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Options of `riposte bench fleet`.
#[derive(clap::Args, Debug, Clone)]
pub struct FleetArgs {
    /// Number of simulated agents.
    #[arg(long, default_value_t = 1000)]
    pub agents: usize,
    /// Server database: `postgres://…` creates a fresh database on that PostgreSQL server
    /// for the run and drops it after; default: SQLite in a temporary directory.
    #[arg(long)]
    pub database: Option<String>,
    /// The `riposte` executable that runs the server (default: this executable).
    #[arg(long)]
    pub riposte_bin: Option<PathBuf>,
    /// Append the results as a markdown table row to this file (header added if new).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Enrollments in flight at once.
    #[arg(long, default_value_t = 32)]
    pub enroll_concurrency: usize,
    /// Agent connections being set up at once while the fleet comes online.
    #[arg(long, default_value_t = 128)]
    pub connect_concurrency: usize,
    /// Seconds to let the server settle before each memory reading.
    #[arg(long, default_value_t = 5)]
    pub settle_secs: u64,
    /// Give up waiting for a phase (enrollment, connection, offers, results) after this
    /// many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
    /// Keep the server's data directory and log (printed at the end) instead of deleting it.
    #[arg(long)]
    pub keep: bool,
    /// Progress reports (`running` updates) each agent sends on receiving the task before
    /// it completes: measures how fast the server stores them, against the rate a fleet
    /// of this size needs (one per device every 30 s).
    #[arg(long, default_value_t = 0)]
    pub progress_reports: u64,
}

impl FleetArgs {
    /// Arguments for `agents` agents with every other option at its default.
    pub fn new(agents: usize) -> FleetArgs {
        FleetArgs {
            agents,
            database: None,
            riposte_bin: None,
            output: None,
            enroll_concurrency: 32,
            connect_concurrency: 128,
            settle_secs: 5,
            timeout_secs: 600,
            keep: false,
            progress_reports: 0,
        }
    }
}

/// Nearest-rank percentiles of a latency distribution, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest sample.
    pub max_ms: f64,
}

impl Latency {
    /// Percentiles of `samples` (ms); all zero when there are none.
    pub fn of(samples: &mut [f64]) -> Latency {
        if samples.is_empty() {
            return Latency::default();
        }
        samples.sort_by(f64::total_cmp);
        let rank = |q: f64| {
            let i = (q * samples.len() as f64).ceil() as usize;
            samples[i.clamp(1, samples.len()) - 1]
        };
        Latency {
            p50_ms: rank(0.50),
            p99_ms: rank(0.99),
            max_ms: samples[samples.len() - 1],
        }
    }

    fn cell(&self) -> String {
        format!(
            "{} / {} / {}",
            ms(self.p50_ms),
            ms(self.p99_ms),
            ms(self.max_ms)
        )
    }
}

fn ms(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.1} s", v / 1000.0)
    } else if v >= 100.0 {
        format!("{v:.0} ms")
    } else {
        format!("{v:.1} ms")
    }
}

/// What one run measured.
#[derive(Debug, Clone, Default)]
pub struct FleetReport {
    /// Simulated agents.
    pub agents: usize,
    /// `SQLite` or `PostgreSQL`.
    pub backend: String,
    /// Date of the run (UTC).
    pub date: String,
    /// Cores and CPU model.
    pub machine: String,
    /// Wall time to enroll all agents.
    pub enroll_secs: f64,
    /// Agents enrolled per second.
    pub enroll_per_sec: f64,
    /// Enrollment requests that failed and were retried.
    pub enroll_retries: usize,
    /// Wall time until every link was up.
    pub connect_secs: f64,
    /// Server `VmRSS` after setup, before any enrollment (kB).
    pub rss_idle_kb: u64,
    /// Server `VmRSS` after enrollment and settling, before the links connect (kB).
    pub rss_before_kb: u64,
    /// Server `VmRSS` with all links connected and idle (kB).
    pub rss_after_kb: u64,
    /// (after − before) / agents, in KB.
    pub kb_per_agent: f64,
    /// The server's "Max open files".
    pub server_nofile: Option<u64>,
    /// Duration of `POST /api/v1/autonomous-tasks` (fan-out is inside it).
    pub create_ms: f64,
    /// Agents that got the task offer.
    pub offers: usize,
    /// From just before the request to each agent holding the offer.
    pub offer_latency: Latency,
    /// Progress reports per agent (`--progress-reports`).
    pub progress_reports: u64,
    /// From just before the request until every device's last progress report was stored.
    pub progress_secs: f64,
    /// Progress reports stored per second over that time (all agents).
    pub progress_per_sec: f64,
    /// That rate over the rate this fleet needs (agents / 30 s): above 1, the server
    /// keeps up with every device reporting every 30 s.
    pub progress_headroom: f64,
    /// Devices whose result is `completed` on the server.
    pub completed: usize,
    /// From just before the agents report completion (with progress reports: after they
    /// are all stored, when the benchmark tells the agents to complete; else: just before
    /// the request) to each device's result being stored.
    pub result_latency: Latency,
    /// Links that dropped after being up (the agent then reconnects).
    pub link_drops: usize,
    /// Connection attempts that failed before the link came up.
    pub connect_failures: usize,
    /// The last reason a link went down, if any did.
    pub last_link_error: Option<String>,
}

impl FleetReport {
    /// A human-readable table.
    pub fn table(&self) -> String {
        let rows: Vec<(&str, String)> = vec![
            (
                "date / machine",
                format!("{} / {}", self.date, self.machine),
            ),
            ("backend", self.backend.clone()),
            ("agents", self.agents.to_string()),
            (
                "enrollment",
                format!(
                    "{:.1} agents/s ({:.1} s total, {} retries)",
                    self.enroll_per_sec, self.enroll_secs, self.enroll_retries
                ),
            ),
            ("all links up", format!("{:.1} s", self.connect_secs)),
            (
                "server RSS idle / enrolled / connected",
                format!(
                    "{} / {} / {} kB",
                    self.rss_idle_kb, self.rss_before_kb, self.rss_after_kb
                ),
            ),
            (
                "server memory per connected agent",
                format!("{:.1} KB", self.kb_per_agent),
            ),
            (
                "server open-files limit",
                self.server_nofile
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "?".into()),
            ),
            ("create autonomous task (request)", ms(self.create_ms)),
            (
                "offer received p50 / p99 / max",
                format!(
                    "{}  ({}/{} agents)",
                    self.offer_latency.cell(),
                    self.offers,
                    self.agents
                ),
            ),
            (
                "progress reports stored",
                if self.progress_reports == 0 {
                    "not measured (--progress-reports)".to_string()
                } else {
                    format!(
                        "{} per agent in {:.1} s: {:.0}/s, {:.1}x the {:.0}/s this fleet needs",
                        self.progress_reports,
                        self.progress_secs,
                        self.progress_per_sec,
                        self.progress_headroom,
                        self.agents as f64 / PROGRESS_INTERVAL_SECS,
                    )
                },
            ),
            (
                "result stored p50 / p99 / max",
                format!(
                    "{}  ({}/{} completed)",
                    self.result_latency.cell(),
                    self.completed,
                    self.agents
                ),
            ),
            (
                "link drops / failed connects",
                format!("{} / {}", self.link_drops, self.connect_failures),
            ),
        ];
        let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        let mut out = String::new();
        for (k, v) in rows {
            out.push_str(&format!("{k:<width$}  {v}\n"));
        }
        if let Some(e) = &self.last_link_error {
            out.push_str(&format!("{:<width$}  {e}\n", "last link error"));
        }
        out
    }

    /// The markdown table header matching [`FleetReport::markdown_row`].
    pub fn markdown_header() -> &'static str {
        "| date | backend | agents | enroll (agents/s) | all links up | server RSS before → after | per agent | task request | offer p50 / p99 / max | progress stored (× needed) | result stored p50 / p99 / max | offers / results |\n\
         | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
    }

    /// One markdown table row.
    pub fn markdown_row(&self) -> String {
        format!(
            "| {} | {} | {} | {:.0} | {:.1} s | {:.1} → {:.1} MB | {:.1} KB | {} | {} | {} | {} | {} / {} |\n",
            self.date,
            self.backend,
            self.agents,
            self.enroll_per_sec,
            self.connect_secs,
            self.rss_before_kb as f64 / 1024.0,
            self.rss_after_kb as f64 / 1024.0,
            self.kb_per_agent,
            ms(self.create_ms),
            self.offer_latency.cell(),
            if self.progress_reports == 0 {
                "–".to_string()
            } else {
                format!(
                    "{:.0}/s ({:.1}×)",
                    self.progress_per_sec, self.progress_headroom
                )
            },
            self.result_latency.cell(),
            self.offers,
            self.completed,
        )
    }
}

/// How often a sweeping agent reports progress (the agent's `scanner`).
pub const PROGRESS_INTERVAL_SECS: f64 = 30.0;

/// Runs the benchmark, prints the table, and appends it to `--output` if given.
pub async fn run(args: FleetArgs) -> anyhow::Result<()> {
    let output = args.output.clone();
    let report = measure(args).await?;
    println!("{}", report.table());
    if let Some(path) = output {
        let mut text = if path.exists() {
            std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?
        } else {
            FleetReport::markdown_header().to_string()
        };
        text.push_str(&report.markdown_row());
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("appended to {}", path.display());
    }
    Ok(())
}

/// Runs the benchmark and returns what it measured (nothing printed but progress on
/// stderr).
pub async fn measure(args: FleetArgs) -> anyhow::Result<FleetReport> {
    let n = args.agents;
    if n == 0 {
        bail!("--agents must be at least 1");
    }
    // Each process (this one and the server) holds one socket per link, plus enrollment
    // connections, database files and slack. Ask for 4×N; N + 512 per process is the floor.
    let want = (4 * n as u64).max(1024) + 1024;
    let floor = n as u64 + 512;
    let nofile = system::raise_nofile(want)?;
    if nofile < floor {
        bail!(
            "the open-files limit is {nofile} and cannot be raised to {want} (raising the hard \
             limit needs CAP_SYS_RESOURCE; see `ulimit -Hn`); {n} agents need at least {floor} \
             in this process and in the server"
        );
    }
    if nofile < want {
        progress(&format!(
            "open-files limit {nofile} (hard limit; wanted {want}), enough for {n} agents"
        ));
    }
    let bin = match &args.riposte_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe().context("cannot find this executable")?,
    };
    let fresh = match args.database.as_deref() {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Some(system::FreshDatabase::create(url).await?)
        }
        Some(other) => bail!("--database must be a postgres:// URL (default: SQLite), not {other}"),
        None => None,
    };
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let result = measure_in(
        &args,
        &bin,
        dir.path(),
        fresh.as_ref().map(|f| f.url.as_str()),
    )
    .await;
    if args.keep {
        progress(&format!("kept {}", dir.keep().display()));
    }
    if let Some(db) = fresh {
        if let Err(e) = db.drop_now().await {
            eprintln!("warning: {e:#}");
        }
    }
    result
}

const ADMIN_PASSWORD: &str = "fleet-bench-admin-password";
const SPECIAL_PASSWORD: &str = "fleet-bench-pw";
const GROUP: &str = "fleet";

fn progress(msg: &str) {
    eprintln!("[fleet] {msg}");
}

async fn measure_in(
    args: &FleetArgs,
    bin: &std::path::Path,
    dir: &std::path::Path,
    database: Option<&str>,
) -> anyhow::Result<FleetReport> {
    let n = args.agents;
    let timeout = Duration::from_secs(args.timeout_secs.max(1));
    let settle = Duration::from_secs(args.settle_secs);
    let pw_file = dir.join("admin-password");
    std::fs::write(&pw_file, ADMIN_PASSWORD).context("cannot write the password file")?;
    let data = dir.join("server");
    let server = system::ServerProcess::start(bin, &data, database, &pw_file).await?;
    let mut report = FleetReport {
        agents: n,
        backend: if database.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        }
        .into(),
        date: system::today_utc(),
        machine: system::machine(),
        server_nofile: system::open_files_limit(server.pid),
        ..FleetReport::default()
    };
    progress(&format!(
        "server pid {} at {} ({}; log {})",
        server.pid,
        server.url,
        report.backend,
        server.log.display()
    ));
    let outcome = drive(args, &server, &mut report, timeout, settle).await;
    server.stop().await;
    outcome.map(|()| report)
}

/// The admin API, logged in.
struct Admin {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Admin {
    async fn login(url: &str, ca_pem: &str) -> anyhow::Result<Admin> {
        let http = riposte_agent::identity::pinned_http_client(ca_pem, Duration::from_secs(300))?;
        let mut a = Admin {
            http,
            url: url.to_string(),
            token: String::new(),
        };
        let v = a
            .call(
                reqwest::Method::POST,
                "/api/v1/login",
                Some(json!({"user": "admin", "password": ADMIN_PASSWORD})),
            )
            .await?;
        a.token = v["token"]
            .as_str()
            .context("login answer without a token")?
            .to_string();
        Ok(a)
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.url));
        if !self.token.is_empty() {
            req = req.bearer_auth(&self.token);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{method} {path}: {status}: {v}");
        }
        Ok(v)
    }
}

async fn drive(
    args: &FleetArgs,
    server: &system::ServerProcess,
    report: &mut FleetReport,
    timeout: Duration,
    settle: Duration,
) -> anyhow::Result<()> {
    use reqwest::Method;
    let n = args.agents;
    let admin = Admin::login(&server.url, &server.ca_pem).await?;
    admin
        .call(Method::POST, "/api/v1/groups", Some(json!({"name": GROUP})))
        .await?;
    admin
        .call(
            Method::POST,
            "/api/v1/special-account",
            Some(json!({"password": SPECIAL_PASSWORD})),
        )
        .await?;
    admin
        .call(
            Method::PUT,
            &format!("/api/v1/groups/{GROUP}/policy/threat-response"),
            Some(
                json!({"enabled": true, "mode": "enforce", "actions": ["group_ioc_scan"],
                        "special_password": SPECIAL_PASSWORD}),
            ),
        )
        .await?;
    let token = admin
        .call(
            Method::POST,
            "/api/v1/enroll-tokens",
            Some(json!({"group": GROUP, "max_uses": n, "ttl_secs": 86_400})),
        )
        .await?["token"]
        .as_str()
        .context("enroll-token answer without a token")?
        .to_string();
    tokio::time::sleep(Duration::from_secs(1)).await;
    report.rss_idle_kb = server.rss_kb()?;

    // Enrollment.
    progress(&format!(
        "enrolling {n} agents, {} in flight",
        args.enroll_concurrency
    ));
    let started = Instant::now();
    let (identities, retries) = enroll_all(
        &server.url,
        &server.ca_pem,
        &token,
        n,
        args.enroll_concurrency.max(1),
        timeout,
    )
    .await?;
    report.enroll_secs = started.elapsed().as_secs_f64();
    report.enroll_per_sec = n as f64 / report.enroll_secs.max(1e-9);
    report.enroll_retries = retries;
    progress(&format!(
        "enrolled in {:.1} s ({:.1}/s)",
        report.enroll_secs, report.enroll_per_sec
    ));

    tokio::time::sleep(settle).await;
    report.rss_before_kb = server.rss_kb()?;

    // The device that "detects" the object and asks for the group task.
    let device_id = identities[0].device_id;

    // Connect every link.
    let shared = Shared::new(args.progress_reports);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut agents = Vec::with_capacity(n);
    let mut links = tokio::task::JoinSet::new();
    let started = Instant::now();
    let deadline = started + timeout;
    for (i, identity) in identities.into_iter().enumerate() {
        while i.saturating_sub(shared.ever_connected.load(Ordering::SeqCst))
            >= args.connect_concurrency.max(1)
        {
            if Instant::now() > deadline {
                bail!(
                    "only {} of {n} links came up within {} s; last error: {:?}",
                    shared.ever_connected.load(Ordering::SeqCst),
                    timeout.as_secs(),
                    shared.last_error.lock().ok().and_then(|e| e.clone())
                );
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let agent = Arc::new(SimAgent::new(shared.clone(), tx));
        agents.push(agent.clone());
        links.spawn(riposte_agent::link::run(
            identity,
            None,
            format!("fleet-{i:05}"),
            agent,
            rx,
            stop_rx.clone(),
        ));
    }
    // All links up and every agent has applied its settings (queued at enrollment), so
    // nothing is in flight.
    wait_for(deadline, "links up and settings applied", || {
        let up = shared.connected.load(Ordering::SeqCst);
        let applied = shared.applied_any.load(Ordering::SeqCst);
        (
            up >= n && applied >= n,
            format!("{up} up, {applied} applied"),
        )
    })
    .await?;
    report.connect_secs = started.elapsed().as_secs_f64();
    progress(&format!("{n} links up in {:.1} s", report.connect_secs));
    tokio::time::sleep(settle).await;
    report.rss_after_kb = server.rss_kb()?;
    report.kb_per_agent = (report.rss_after_kb as f64 - report.rss_before_kb as f64) / n as f64;

    // The detection, reported by the first agent over its link as a real agent does;
    // the timed part starts once the server has it.
    let http = riposte_agent::identity::pinned_http_client(&server.ca_pem, timeout)?;
    let detected_ms = wall_ms();
    let detection: Value = json!({
        "detection_id": format!("fleet-{}-{detected_ms}", std::process::id()),
        "path": "/tmp/fleet-bench-object", "size": 4242,
        "md5": "0".repeat(32), "sha1": "1".repeat(40),
        "sha256": format!("{:064x}", detected_ms),
        "threat": "Fleet.Bench", "source": "riposte-bench-fleet",
        "user_name": "bench", "detected_at_ms": detected_ms});
    let detection_id = detection["detection_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if !agents[0].report_detection(serde_json::from_value(detection.clone())?) {
        bail!("the detecting agent's link is gone");
    }
    let reported_by = Instant::now() + Duration::from_secs(30);
    while admin
        .call(
            Method::GET,
            &format!("/api/v1/detections/{detection_id}"),
            None,
        )
        .await
        .is_err()
    {
        if Instant::now() > reported_by {
            bail!("the server did not store the detection within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The autonomous task.
    let t0_wall_ms = wall_ms();
    let t0 = shared.stamp();
    let req_started = Instant::now();
    let resp = http
        .post(format!("{}/api/v1/autonomous-tasks", server.url))
        .basic_auth("riposte-autonomous", Some(SPECIAL_PASSWORD))
        .json(&json!({"device_id": device_id, "detection": detection}))
        .send()
        .await
        .context("POST /api/v1/autonomous-tasks")?;
    report.create_ms = req_started.elapsed().as_secs_f64() * 1000.0;
    let status = resp.status();
    let answer: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("creating the autonomous task failed: {status}: {answer}");
    }
    let task_id = answer["task_id"]
        .as_i64()
        .context("autonomous-task answer without task_id")?;
    progress(&format!(
        "task {task_id} created in {}",
        ms(report.create_ms)
    ));
    let deadline = Instant::now() + timeout;
    let offers_done = wait_for(deadline, "task offers", || {
        let got = shared.offers.load(Ordering::SeqCst);
        (got >= n, format!("{got}/{n} offers"))
    })
    .await;
    let mut offer_ms: Vec<f64> = agents
        .iter()
        .filter_map(|a| match a.offer_at.load(Ordering::SeqCst) {
            0 => None,
            at => Some(at.saturating_sub(t0) as f64 / 1000.0),
        })
        .collect();
    report.offers = offer_ms.len();
    report.offer_latency = Latency::of(&mut offer_ms);
    if let Err(e) = offers_done {
        progress(&format!("{e:#}"));
    }

    // Progress reports: poll until every device's last one is stored, then tell the
    // agents to complete.
    let every = Duration::from_millis((n as u64 / 10).clamp(200, 1000));
    let mut t_complete_ms = t0_wall_ms;
    if args.progress_reports > 0 {
        let want = args.progress_reports;
        loop {
            let v = admin
                .call(Method::GET, &format!("/api/v1/tasks/{task_id}"), None)
                .await?;
            let rows = v["devices"].as_array().cloned().unwrap_or_default();
            let stored = rows
                .iter()
                .filter(|r| r["results"]["progress"]["report"].as_u64() == Some(want))
                .count();
            if stored >= n {
                // The last report's stored time, as the results below are timed.
                let last = rows
                    .iter()
                    .filter_map(|r| r["updated_at"].as_i64())
                    .max()
                    .unwrap_or(t0_wall_ms);
                report.progress_reports = want;
                report.progress_secs = ((last - t0_wall_ms).max(1)) as f64 / 1000.0;
                report.progress_per_sec = (n as u64 * want) as f64 / report.progress_secs;
                report.progress_headroom =
                    report.progress_per_sec / (n as f64 / PROGRESS_INTERVAL_SECS);
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "only {stored}/{n} devices' progress reports were stored within {} s",
                    timeout.as_secs()
                );
            }
            tokio::time::sleep(every).await;
        }
        progress(&format!(
            "{} progress reports stored in {:.1} s",
            n as u64 * want,
            report.progress_secs
        ));
        t_complete_ms = wall_ms();
        for a in &agents {
            a.complete();
        }
    }

    // Results: poll the task until every device is completed (sparingly: the answer
    // holds one row per device), then take each row's stored time.
    let rows = loop {
        let v = admin
            .call(Method::GET, &format!("/api/v1/tasks/{task_id}"), None)
            .await?;
        let rows = v["devices"].as_array().cloned().unwrap_or_default();
        let done = rows.iter().filter(|r| r["state"] == "completed").count();
        if done >= n {
            break rows;
        }
        if Instant::now() > deadline {
            progress(&format!(
                "only {done}/{n} results completed within {} s",
                timeout.as_secs()
            ));
            break rows;
        }
        tokio::time::sleep(every).await;
    };
    let mut result_ms: Vec<f64> = rows
        .iter()
        .filter(|r| r["state"] == "completed")
        .filter_map(|r| r["updated_at"].as_i64())
        .map(|at| (at - t_complete_ms).max(0) as f64)
        .collect();
    report.completed = result_ms.len();
    report.result_latency = Latency::of(&mut result_ms);
    report.link_drops = shared.drops.load(Ordering::SeqCst);
    report.connect_failures = shared.connect_failures.load(Ordering::SeqCst);
    report.last_link_error = shared.last_error.lock().ok().and_then(|e| e.clone());

    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        while links.join_next().await.is_some() {}
    })
    .await;
    links.abort_all();
    Ok(())
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Polls `check` (→ done, status) every 20 ms until it is done or `deadline` passes.
async fn wait_for(
    deadline: Instant,
    what: &str,
    check: impl Fn() -> (bool, String),
) -> anyhow::Result<()> {
    loop {
        let (done, status) = check();
        if done {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}: {status}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Enrolls `n` identities with at most `concurrency` in flight; retries each up to 3 times.
async fn enroll_all(
    url: &str,
    ca_pem: &str,
    token: &str,
    n: usize,
    concurrency: usize,
    timeout: Duration,
) -> anyhow::Result<(Vec<Identity>, usize)> {
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let url: Arc<str> = url.into();
    let ca: Arc<str> = ca_pem.into();
    let token: Arc<str> = token.into();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let permit = sem.clone().acquire_owned().await?;
        let (url, ca, token) = (url.clone(), ca.clone(), token.clone());
        set.spawn(async move {
            let _permit = permit;
            let name = format!("fleet-{i:05}");
            let mut retries = 0;
            loop {
                match riposte_agent::identity::enroll(&url, &ca, &token, &name, &name).await {
                    Ok(id) => return (i, Ok(id), retries),
                    Err(_) if retries < 3 => {
                        retries += 1;
                        tokio::time::sleep(Duration::from_millis(200 * retries as u64)).await;
                    }
                    Err(e) => return (i, Err(e), retries),
                }
            }
        });
    }
    let mut out: Vec<Option<Identity>> = vec![None; n];
    let mut retries = 0;
    let collect = async {
        while let Some(joined) = set.join_next().await {
            let (i, r, tries) = joined.context("an enrollment task panicked")?;
            retries += tries;
            let id = r.with_context(|| format!("enrolling agent {i}"))?;
            out[i] = Some(id);
        }
        Ok::<(), anyhow::Error>(())
    };
    tokio::time::timeout(timeout, collect).await.map_err(|_| {
        anyhow::anyhow!("enrollment did not finish within {} s", timeout.as_secs())
    })??;
    let ids = out.into_iter().flatten().collect::<Vec<_>>();
    if ids.len() != n {
        bail!("only {} of {n} agents enrolled", ids.len());
    }
    Ok((ids, retries))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        let l = Latency::of(&mut v);
        assert_eq!((l.p50_ms, l.p99_ms, l.max_ms), (50.0, 99.0, 100.0));
        let mut one = vec![7.0];
        let l = Latency::of(&mut one);
        assert_eq!((l.p50_ms, l.p99_ms, l.max_ms), (7.0, 7.0, 7.0));
        assert_eq!(Latency::of(&mut []), Latency::default());
    }

    #[test]
    fn markdown_row_matches_header() {
        let cols = |s: &str| s.lines().next().unwrap_or_default().matches('|').count();
        let r = FleetReport::default();
        assert_eq!(
            cols(FleetReport::markdown_header()),
            cols(&r.markdown_row())
        );
    }
}
