//! `riposte admin`: the server's API from the command line.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct AdminArgs {
    /// Server API URL, e.g. https://127.0.0.1:8443
    #[arg(long, env = "RIPOSTE_SERVER")]
    server: String,
    /// The server's CA certificate (DIR/ca.pem of the server), pinned.
    #[arg(long, env = "RIPOSTE_CA")]
    ca: PathBuf,
    /// Account name.
    #[arg(long, default_value = "admin")]
    user: String,
    /// File holding the account's password.
    #[arg(long)]
    password_file: PathBuf,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand, Debug)]
enum AdminCommand {
    /// Administration groups.
    #[command(subcommand)]
    Group(GroupCmd),
    /// Enrollment tokens.
    #[command(subcommand, name = "enroll-token")]
    EnrollToken(TokenCmd),
    /// Managed devices.
    #[command(subcommand)]
    Device(DeviceCmd),
    /// Policies.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// The special account for autonomous IOC scan tasks.
    #[command(subcommand, name = "special-account")]
    SpecialAccount(SpecialCmd),
    /// Administrator accounts.
    #[command(subcommand)]
    Account(AccountCmd),
    /// IOC scan tasks.
    #[command(subcommand)]
    Task(TaskCmd),
    /// Detections reported by devices.
    #[command(subcommand)]
    Detection(DetectionCmd),
    /// Quarantined objects across the fleet.
    #[command(subcommand)]
    Quarantine(QuarantineCmd),
    /// Alerts about devices: restores and deletions a device could not carry out, and
    /// what the server saw (an earlier certificate of the device presented).
    #[command(subcommand)]
    Alert(AlertCmd),
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCmd),
}

#[derive(Subcommand, Debug)]
enum GroupCmd {
    Create {
        name: String,
        #[arg(long)]
        parent: Option<String>,
    },
    List,
    /// Renames a group (not the root group).
    Rename {
        name: String,
        new_name: String,
    },
    /// Moves a group, with its subgroups and devices, under PARENT: they then inherit
    /// PARENT's policies.
    Move {
        name: String,
        #[arg(long)]
        parent: String,
    },
    /// Deletes a group that no device (revoked ones too), subgroup or task refers to.
    Delete {
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum TokenCmd {
    Create {
        #[arg(long)]
        group: String,
        /// How many devices may enroll with it.
        #[arg(long, default_value_t = 1)]
        uses: i64,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 7 * 86400)]
        ttl: i64,
    },
    List,
}

#[derive(Subcommand, Debug)]
enum DeviceCmd {
    List {
        #[arg(long)]
        group: Option<String>,
        #[arg(long)]
        search: Option<String>,
    },
    Show {
        device: String,
    },
    Move {
        device: String,
        #[arg(long)]
        group: String,
    },
    Revoke {
        device: String,
    },
    /// Effective settings with provenance.
    Settings {
        device: String,
    },
    /// Removes DEVICE's own Threat Response value: it follows its policies again.
    FollowPolicy {
        device: String,
    },
}

#[derive(Subcommand, Debug)]
enum PolicyCmd {
    Show { group: String },
    Set(PolicySet),
}

#[derive(Args, Debug)]
struct PolicySet {
    group: String,
    /// Take response actions on threats detected by the sandbox.
    #[arg(long, value_parser = ["on", "off"])]
    threat_response: Option<String>,
    /// Comma-separated actions, e.g. quarantine_and_delete,notify_user,group_ioc_scan
    #[arg(long)]
    actions: Option<String>,
    /// File holding the special account's password (needed for group actions).
    #[arg(long)]
    special_password_file: Option<PathBuf>,
    /// Enforce the settings (devices cannot override them).
    #[arg(long, conflicts_with = "undefined")]
    enforce: bool,
    /// Leave the settings undefined (devices may override them).
    #[arg(long)]
    undefined: bool,
    /// Comma-separated sandbox server URLs (Sandbox integration).
    #[arg(long)]
    sandbox: Option<String>,
    /// PEM certificate pinned for the sandbox servers.
    #[arg(long)]
    sandbox_ca: Option<PathBuf>,
    /// Comma-separated folders the agent watches.
    #[arg(long)]
    watch: Option<String>,
}

#[derive(Subcommand, Debug)]
enum SpecialCmd {
    Create {
        #[arg(long)]
        password_file: PathBuf,
    },
    Delete,
    Status,
}

#[derive(Subcommand, Debug)]
enum AccountCmd {
    List,
    Create {
        name: String,
        #[arg(long, value_parser = ["administrator", "operator", "auditor"])]
        role: String,
        #[arg(long)]
        password_file: PathBuf,
    },
    Delete {
        name: String,
    },
    /// Change your own password (the current one is --password-file's). Every session
    /// of the account ends.
    Password {
        /// File holding the new password (12 characters or more).
        #[arg(long)]
        new_password_file: PathBuf,
    },
    /// Set another account's password (administrators; a reset for whoever forgot
    /// theirs). Its sessions end and its failed logins are forgotten.
    SetPassword {
        name: String,
        /// File holding the new password (12 characters or more).
        #[arg(long)]
        password_file: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum TaskCmd {
    List,
    Show {
        id: i64,
    },
    Cancel {
        id: i64,
    },
    /// Create an IOC scan task for a group.
    Create {
        #[arg(long)]
        group: String,
        #[arg(long)]
        name: Option<String>,
        /// OpenIOC files (several after one --ioc, as `riposte scan` takes them).
        #[arg(long, num_args = 1..)]
        ioc: Vec<PathBuf>,
        /// STIX 2.1 files.
        #[arg(long, num_args = 1..)]
        stix: Vec<PathBuf>,
        /// YARA rule files.
        #[arg(long, num_args = 1..)]
        yara: Vec<PathBuf>,
        /// Actions on a hit: quarantine_and_delete, epp_critical_areas_scan (comma-separated).
        #[arg(long)]
        actions: Option<String>,
        /// system_drives (default) or critical_areas.
        #[arg(long, default_value = "system_drives")]
        scope: String,
    },
}

#[derive(Subcommand, Debug)]
enum DetectionCmd {
    List {
        #[arg(long)]
        device: Option<String>,
    },
    Show {
        id: String,
    },
}

#[derive(Subcommand, Debug)]
enum QuarantineCmd {
    List {
        #[arg(long)]
        device: Option<String>,
    },
    /// Asks DEVICE to put the object of quarantine entry ENTRY back (the device reports
    /// the outcome: the entry's state, or an alert).
    Restore {
        device: String,
        entry: String,
        /// Restore to this absolute path instead of the original one (administrators
        /// only: the device writes it as root). It loses group and other write there,
        /// and in a directory the object's owner does not own takes the directory's.
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        on_conflict: crate::conflict::OnConflict,
    },
    /// Asks DEVICE to delete quarantine entry ENTRY and its copy for good.
    Delete { device: String, entry: String },
    /// Asks DEVICE to withdraw the allowance its restore of ENTRY gave the object's
    /// content: the device acts on that content again when it finds it.
    WithdrawAllowance { device: String, entry: String },
}

#[derive(Subcommand, Debug)]
enum AlertCmd {
    List {
        #[arg(long)]
        device: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum AuditCmd {
    /// Newest entries first; `--before ID` (the last id a page showed) gives the next page.
    List {
        #[arg(long, default_value_t = 100, allow_negative_numbers = true)]
        limit: i64,
        /// Only entries older than this entry id.
        #[arg(long, value_name = "ID", allow_negative_numbers = true)]
        before: Option<i64>,
    },
}

struct Client {
    http: reqwest::Client,
    url: String,
    token: String,
}

/// An API error: the server's message and HTTP status.
#[derive(Debug)]
struct ApiError {
    status: u16,
    message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (HTTP {})", self.message, self.status)
    }
}
impl std::error::Error for ApiError {}

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Client {
    async fn connect(a: &AdminArgs) -> anyhow::Result<Client> {
        let ca = std::fs::read_to_string(&a.ca)
            .with_context(|| format!("cannot read the CA file {}", a.ca.display()))?;
        let http =
            riposte_agent::identity::pinned_http_client(&ca, std::time::Duration::from_secs(60))?;
        let url = a.server.trim_end_matches('/').to_string();
        riposte_agent::identity::require_https(&url)?;
        let password = crate::read_secret_file(&a.password_file)?;
        let mut c = Client {
            http,
            url,
            token: String::new(),
        };
        let v = c
            .call(
                "POST",
                "/api/v1/login",
                Some(json!({"user": a.user, "password": password})),
            )
            .await?;
        c.token = v["token"].as_str().unwrap_or_default().to_string();
        Ok(c)
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let m = reqwest::Method::from_bytes(method.as_bytes())?;
        let mut req = self.http.request(m, format!("{}{path}", self.url));
        if !self.token.is_empty() {
            req = req.bearer_auth(&self.token);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {}", self.url))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status != 200 {
            let message = v["error"]
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| v.to_string());
            return Err(ApiError { status, message }.into());
        }
        Ok(v)
    }
}

/// What a running device of a task has swept so far, as the console says it.
fn task_progress(device: &Value) -> String {
    match serde_json::from_value(device["state"].clone()) {
        Ok(state) => riposte_model::tasks::progress_text(state, &device["results"]),
        Err(_) => String::new(),
    }
}

/// `--actions` of Threat Response, checked before anything is sent: an unknown name is
/// said with the ones there are, and an empty list (which would leave Threat Response on
/// doing nothing) is refused.
fn threat_response_actions(list: &str) -> anyhow::Result<Vec<String>> {
    let actions = split_list(list);
    if actions.is_empty() {
        bail!("--actions names no action: give at least one, or --threat-response off to stop responding");
    }
    for a in &actions {
        riposte_model::Action::parse(a).map_err(|e| anyhow::anyhow!("--actions: {e}"))?;
    }
    Ok(actions)
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(|x| x.trim().to_string())
        .filter(|x| !x.is_empty())
        .collect()
}

/// Longest cell a table shows, in characters; `--json` gives whole values.
const MAX_CELL_CHARS: usize = 200;

/// A value as a table shows it: on one line, invisible and control characters written
/// `\xHH` (a name cannot fake a row or send terminal escapes), cut at
/// [`MAX_CELL_CHARS`].
fn cell_text(v: &Value) -> String {
    let s = match v {
        Value::String(s) => riposte_model::path_text::shown(s).into_owned(),
        Value::Null => "-".into(),
        v => v.to_string(),
    };
    riposte_model::path_text::shortened(&s, MAX_CELL_CHARS).into_owned()
}

fn print_table(rows: &[Value], cols: &[&str]) {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| cols.iter().map(|c| cell_text(&r[*c])).collect())
        .collect();
    let widths: Vec<usize> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
                .max(c.len())
        })
        .collect();
    let line = |vals: Vec<String>| {
        let parts: Vec<String> = vals
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect();
        outln!("{}", parts.join("  ").trim_end());
    };
    line(cols.iter().map(|c| c.to_uppercase()).collect());
    for r in cells {
        line(r);
    }
}

/// A JSON value as one cell of text: strings bare, `-` for none.
fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        Value::Bool(true) => "yes".into(),
        Value::Bool(false) => "no".into(),
        v => v.to_string(),
    }
}

/// A stored time (milliseconds since the epoch) as people read it.
fn when(v: &Value) -> String {
    v.as_i64()
        .map(riposte_model::time::utc)
        .unwrap_or_else(|| cell(v))
}

/// `label: value` lines, the values aligned.
fn print_fields(fields: &[(&str, String)]) {
    let width = fields.iter().map(|(l, _)| l.len()).max().unwrap_or(0) + 1;
    for (label, value) in fields {
        outln!("  {:<width$} {value}", format!("{label}:"));
    }
}

/// `admin device show` as text.
fn print_device(v: &Value) {
    outln!("Device {} '{}'", v["id"], cell(&v["name"]));
    print_fields(&[
        ("hostname", cell(&v["hostname"])),
        ("group", cell(&v["group_id"])),
        ("enrolled", when(&v["enrolled_at"])),
        ("last seen", when(&v["last_seen"])),
        ("certificate until", when(&v["certificate_expires_at"])),
        ("connected", cell(&v["connected"])),
        ("revoked", cell(&v["revoked"])),
    ]);
}

/// `admin policy show` as text: each settings group with its switch (a group the policy
/// leaves out is "Undefined", settings come from above).
fn print_policy(v: &Value) {
    outln!("{} (group {})", cell(&v["policy"]), cell(&v["group"]));
    let mode = |section: &Value| match section["mode"].as_str() {
        Some("enforce") => "Enforce: devices and child policies cannot change it",
        Some(_) => "Undefined: a device's own value wins",
        None => "not set by this policy",
    };
    // A section enforced above is what every device below gets, whatever this says.
    // And one enforced here makes the same section enforced below of no effect.
    let above = |key: &str, below: &str| {
        let mut said = match v[key].as_str() {
            Some(p) => format!(" (no effect: {} above enforces it)", cell(&json!(p))),
            None => String::new(),
        };
        let below: Vec<String> = v[below]
            .as_array()
            .into_iter()
            .flatten()
            .map(cell)
            .collect();
        if !below.is_empty() {
            said.push_str(&format!(
                " (overrides what {} below enforce{})",
                below.join(", "),
                if below.len() == 1 { "s" } else { "" }
            ));
        }
        said
    };
    let tr = &v["threat_response"];
    outln!(
        "Threat Response — {}{}",
        mode(tr),
        above(
            "threat_response_enforced_above",
            "threat_response_overrides_below"
        )
    );
    if !tr.is_null() {
        let actions: Vec<String> = tr["value"]["actions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(cell)
            .collect();
        print_fields(&[
            ("enabled", cell(&tr["value"]["enabled"])),
            ("actions", actions.join(", ")),
            (
                "special password",
                if v["special_password_set"] == true {
                    "set".into()
                } else {
                    "not set".into()
                },
            ),
        ]);
    }
    let sb = &v["sandbox_integration"];
    outln!(
        "Sandbox integration — {}{}",
        mode(sb),
        above(
            "sandbox_integration_enforced_above",
            "sandbox_integration_overrides_below"
        )
    );
    if !sb.is_null() {
        let list = |key: &str| {
            sb["value"][key]
                .as_array()
                .into_iter()
                .flatten()
                .map(cell)
                .collect::<Vec<_>>()
                .join(", ")
        };
        print_fields(&[
            ("sandboxes", list("sandboxes")),
            ("watched folders", list("watch")),
            (
                "request timeout",
                format!("{} s", cell(&sb["value"]["request_timeout_secs"])),
            ),
        ]);
    }
}

/// `admin detection show` as text: the object, who and what found it, and what was done.
fn print_detection(v: &Value) {
    let r = &v["record"];
    outln!("Detection {} on device {}", cell(&v["id"]), v["device_id"]);
    let user = match r["user_uid"].as_u64() {
        Some(uid) => format!("{} (uid {uid})", cell(&r["user_name"])),
        None => cell(&r["user_name"]),
    };
    let source = match r["source_ref"].as_str() {
        Some(reference) => format!("{} ({reference})", cell(&r["source"])),
        None => cell(&r["source"]),
    };
    print_fields(&[
        ("threat", cell(&r["threat"])),
        ("path", cell(&r["path"])),
        ("size", format!("{} bytes", cell(&r["size"]))),
        ("sha256", cell(&r["sha256"])),
        ("md5", cell(&r["md5"])),
        ("sha1", cell(&r["sha1"])),
        ("user", user),
        ("found by", source),
        ("detected", when(&r["detected_at_ms"])),
        ("received", when(&v["created_at"])),
        ("group task", cell(&v["task_id"])),
        ("group action error", cell(&v["group_action_error"])),
    ]);
    let dropped: Vec<String> = r["dropped_sha256"]
        .as_array()
        .into_iter()
        .flatten()
        .map(cell)
        .collect();
    if !dropped.is_empty() {
        outln!("Files the sample dropped (SHA-256):");
        for d in dropped {
            outln!("  {d}");
        }
    }
    let outcomes: Vec<Value> = v["outcomes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| {
            json!({"action": o["action"], "outcome": o["outcome"], "detail": o["detail"],
                   "at": when(&o["at"])})
        })
        .collect();
    if outcomes.is_empty() {
        outln!("No action reported yet.");
    } else {
        print_table(&outcomes, &["action", "outcome", "at", "detail"]);
    }
}

fn provenance(v: &Value) -> String {
    serde_json::from_value::<riposte_model::Provenance>(v.clone())
        .map(|p| p.describe())
        .unwrap_or_else(|_| format!("unknown ({v})"))
}

pub async fn run(a: AdminArgs) -> anyhow::Result<ExitCode> {
    // What can be checked here is checked before the login: a typo is said as such,
    // not after a round trip (or as a login failure when the server is down).
    if let AdminCommand::Policy(PolicyCmd::Set(p)) = &a.command {
        if let Some(actions) = &p.actions {
            threat_response_actions(actions)?;
        }
    }
    let c = Client::connect(&a).await?;
    let result = run_logged_in(&c, a).await;
    // Each command logs in for itself: it logs out too, so that no session it opened
    // stays valid (for eight hours) after it.
    if let Err(e) = c.call("POST", "/api/v1/logout", None).await {
        tracing::debug!("logout failed: {e:#}");
    }
    result
}

async fn run_logged_in(c: &Client, a: AdminArgs) -> anyhow::Result<ExitCode> {
    let json_out = a.json;
    let out = |v: &Value| {
        outln!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    };
    // Every command prints the server's JSON with --json, else a line or a table.
    let done = |v: &Value, text: String| {
        if json_out {
            out(v)
        } else {
            outln!("{text}")
        }
    };
    let table = |v: &Value, cols: &[&str]| {
        if json_out {
            out(v)
        } else {
            // Times as people read them; `--json` keeps the milliseconds.
            let rows: Vec<Value> = v
                .as_array()
                .map(|x| x.as_slice())
                .unwrap_or(&[])
                .iter()
                .map(|r| {
                    let mut r = r.clone();
                    if r["at"].is_i64() {
                        r["at"] = json!(when(&r["at"]));
                    }
                    r
                })
                .collect();
            print_table(&rows, cols)
        }
    };
    match a.command {
        AdminCommand::Group(GroupCmd::Create { name, parent }) => {
            let v = c
                .call(
                    "POST",
                    "/api/v1/groups",
                    Some(json!({"name": name, "parent": parent})),
                )
                .await?;
            done(&v, format!("group '{}' created (id {})", name, v["id"]))
        }
        AdminCommand::Group(GroupCmd::List) => {
            let v = c.call("GET", "/api/v1/groups", None).await?;
            table(&v, &["id", "name", "parent"])
        }
        AdminCommand::Group(GroupCmd::Rename { name, new_name }) => {
            let path = format!("/api/v1/groups/{}/rename", enc(&name));
            let v = c
                .call("POST", &path, Some(json!({"name": new_name})))
                .await?;
            done(&v, format!("group '{name}' renamed to '{new_name}'"))
        }
        AdminCommand::Group(GroupCmd::Move { name, parent }) => {
            let path = format!("/api/v1/groups/{}/move", enc(&name));
            let v = c
                .call("POST", &path, Some(json!({"parent": parent})))
                .await?;
            done(&v, format!("group '{name}' moved under '{parent}'"))
        }
        AdminCommand::Group(GroupCmd::Delete { name }) => {
            let path = format!("/api/v1/groups/{}", enc(&name));
            let v = c.call("DELETE", &path, None).await?;
            done(&v, format!("group '{name}' deleted"))
        }
        AdminCommand::EnrollToken(TokenCmd::Create { group, uses, ttl }) => {
            let v = c
                .call(
                    "POST",
                    "/api/v1/enroll-tokens",
                    Some(json!({"group": group, "max_uses": uses, "ttl_secs": ttl})),
                )
                .await?;
            done(&v, v["token"].as_str().unwrap_or_default().to_string())
        }
        AdminCommand::EnrollToken(TokenCmd::List) => {
            let mut v = c.call("GET", "/api/v1/enroll-tokens", None).await?;
            if !json_out {
                for t in v.as_array_mut().into_iter().flatten() {
                    t["expires_at"] = json!(when(&t["expires_at"]));
                }
            }
            table(
                &v,
                &[
                    "id",
                    "group_id",
                    "uses_left",
                    "max_uses",
                    "expires_at",
                    "created_by",
                ],
            )
        }
        AdminCommand::Device(DeviceCmd::List { group, search }) => {
            let mut q = vec![];
            if let Some(g) = group {
                q.push(format!("group={}", enc(&g)));
            }
            if let Some(s) = search {
                q.push(format!("search={}", enc(&s)));
            }
            // Page by page: a fleet has more devices than one answer holds.
            const PAGE: usize = 1000;
            let mut all = Vec::new();
            loop {
                let v = c
                    .call(
                        "GET",
                        &format!(
                            "/api/v1/devices?{}{}limit={PAGE}&offset={}",
                            q.join("&"),
                            if q.is_empty() { "" } else { "&" },
                            all.len()
                        ),
                        None,
                    )
                    .await?;
                let page = v.as_array().cloned().unwrap_or_default();
                let last = page.len() < PAGE;
                all.extend(page);
                if last {
                    break;
                }
            }
            if json_out {
                out(&Value::Array(all));
                return Ok(ExitCode::SUCCESS);
            }
            // The day each device certificate expires: one the device has not renewed
            // (away too long) shows here before the device is locked out.
            let rows: Vec<Value> = all
                .into_iter()
                .map(|mut d| {
                    let day = d["certificate_expires_at"]
                        .as_i64()
                        .map(|ms| riposte_model::time::utc(ms)[..10].to_string());
                    d["certificate_expires"] = json!(day);
                    d
                })
                .collect();
            print_table(
                &rows,
                &[
                    "id",
                    "name",
                    "hostname",
                    "group_id",
                    "connected",
                    "revoked",
                    "certificate_expires",
                ],
            )
        }
        AdminCommand::Device(DeviceCmd::FollowPolicy { device }) => {
            let v = c
                .call(
                    "DELETE",
                    &format!("/api/v1/devices/{}/settings/threat-response", enc(&device)),
                    None,
                )
                .await?;
            let text = if v["had_own_value"] == true {
                format!("device '{device}' now follows its policies for Threat Response")
            } else {
                format!("device '{device}' had no Threat Response value of its own")
            };
            done(&v, text)
        }
        AdminCommand::Device(DeviceCmd::Show { device }) => {
            let v = c
                .call("GET", &format!("/api/v1/devices/{}", enc(&device)), None)
                .await?;
            if json_out {
                out(&v)
            } else {
                print_device(&v)
            }
        }
        AdminCommand::Device(DeviceCmd::Move { device, group }) => {
            let v = c
                .call(
                    "POST",
                    &format!("/api/v1/devices/{}/move", enc(&device)),
                    Some(json!({"group": group})),
                )
                .await?;
            done(&v, format!("device {device} moved to {group}"))
        }
        AdminCommand::Device(DeviceCmd::Revoke { device }) => {
            let v = c
                .call(
                    "POST",
                    &format!("/api/v1/devices/{}/revoke", enc(&device)),
                    None,
                )
                .await?;
            if v["on_revocation_list"] == json!(false) {
                eprintln!(
                    "note: device {device} was enrolled by an older server and its certificate's serial is not known yet, \
                     so sandboxes cannot refuse it: it is put on the revocation list when it next connects"
                );
            }
            done(&v, format!("device {device} revoked"))
        }
        AdminCommand::Device(DeviceCmd::Settings { device }) => {
            let v = c
                .call(
                    "GET",
                    &format!("/api/v1/devices/{}/settings", enc(&device)),
                    None,
                )
                .await?;
            if json_out {
                out(&v)
            } else {
                let tr = &v["effective"]["threat_response"];
                outln!(
                    "Device {} ({})",
                    v["device"].as_str().unwrap_or("?"),
                    v["device_id"]
                );
                outln!("Threat Response — from {}", provenance(&tr["provenance"]));
                outln!("  enabled: {}", tr["value"]["enabled"]);
                outln!("  actions: {}", tr["value"]["actions"]);
                let sb = &v["effective"]["sandbox_integration"];
                outln!(
                    "Sandbox integration — from {}",
                    provenance(&sb["provenance"])
                );
                outln!("  sandboxes: {}", sb["value"]["sandboxes"]);
                outln!("  watch: {}", sb["value"]["watch"]);
            }
        }
        AdminCommand::Policy(PolicyCmd::Show { group }) => {
            let v = c
                .call(
                    "GET",
                    &format!("/api/v1/groups/{}/policy", enc(&group)),
                    None,
                )
                .await?;
            if json_out {
                out(&v)
            } else {
                print_policy(&v)
            }
        }
        AdminCommand::Policy(PolicyCmd::Set(p)) => {
            let mode = if p.enforce {
                Some("enforce")
            } else if p.undefined {
                Some("undefined")
            } else {
                None
            };
            let mut tr = serde_json::Map::new();
            if let Some(m) = mode {
                tr.insert("mode".into(), json!(m));
            }
            if let Some(on) = &p.threat_response {
                tr.insert("enabled".into(), json!(on == "on"));
            }
            if let Some(acts) = &p.actions {
                tr.insert("actions".into(), json!(threat_response_actions(acts)?));
            }
            if let Some(f) = &p.special_password_file {
                tr.insert(
                    "special_password".into(),
                    json!(crate::read_secret_file(f)?),
                );
            }
            let mut sb = serde_json::Map::new();
            if let Some(s) = &p.sandbox {
                sb.insert("sandboxes".into(), json!(split_list(s)));
            }
            if let Some(f) = &p.sandbox_ca {
                sb.insert(
                    "sandbox_ca_pem".into(),
                    json!(std::fs::read_to_string(f)
                        .with_context(|| format!("cannot read {}", f.display()))?),
                );
            }
            if let Some(w) = &p.watch {
                sb.insert("watch".into(), json!(split_list(w)));
            }
            let sandbox_touched = !sb.is_empty();
            if sandbox_touched {
                if let Some(m) = mode {
                    sb.insert("mode".into(), json!(m));
                }
            }
            // `--enforce`/`--undefined` alone set Threat Response's switch.
            let tr_touched = !tr.is_empty() && (tr.keys().any(|k| k != "mode") || !sandbox_touched);
            if !tr_touched && !sandbox_touched {
                bail!("nothing to change: give --threat-response, --actions, --special-password-file, --enforce/--undefined, --sandbox, --sandbox-ca or --watch");
            }
            let mut v = Value::Null;
            if tr_touched {
                v = c
                    .call(
                        "PUT",
                        &format!("/api/v1/groups/{}/policy/threat-response", enc(&p.group)),
                        Some(Value::Object(tr)),
                    )
                    .await?;
            }
            if sandbox_touched {
                v = c
                    .call(
                        "PUT",
                        &format!(
                            "/api/v1/groups/{}/policy/sandbox-integration",
                            enc(&p.group)
                        ),
                        Some(Value::Object(sb)),
                    )
                    .await?;
            }
            done(&v, format!("policy of group {} saved", p.group))
        }
        AdminCommand::SpecialAccount(SpecialCmd::Create { password_file }) => {
            let pw = crate::read_secret_file(&password_file)?;
            let v = c
                .call(
                    "POST",
                    "/api/v1/special-account",
                    Some(json!({"password": pw})),
                )
                .await?;
            done(
                &v,
                format!(
                    "special account '{}' created",
                    v["name"].as_str().unwrap_or("?")
                ),
            )
        }
        AdminCommand::SpecialAccount(SpecialCmd::Delete) => {
            let v = c.call("DELETE", "/api/v1/special-account", None).await?;
            done(
                &v,
                format!(
                    "special account deleted; its password was removed from {} policies and \
                     {} devices' own settings (after creating it again, give the new one with \
                     `policy set GROUP --special-password-file F`)",
                    v["policies_cleared"], v["devices_cleared"]
                ),
            )
        }
        AdminCommand::SpecialAccount(SpecialCmd::Status) => {
            let v = c.call("GET", "/api/v1/special-account", None).await?;
            if json_out {
                out(&v)
            } else if v["exists"] == true {
                outln!(
                    "special account '{}' exists",
                    v["name"].as_str().unwrap_or("?")
                )
            } else {
                outln!("no special account")
            }
        }
        AdminCommand::Account(AccountCmd::List) => {
            let v = c.call("GET", "/api/v1/accounts", None).await?;
            table(&v, &["id", "name", "kind", "role"])
        }
        AdminCommand::Account(AccountCmd::Create {
            name,
            role,
            password_file,
        }) => {
            let pw = crate::read_secret_file(&password_file)?;
            let v = c
                .call(
                    "POST",
                    "/api/v1/accounts",
                    Some(json!({"name": name, "role": role, "password": pw})),
                )
                .await?;
            done(&v, format!("account '{name}' created"))
        }
        AdminCommand::Account(AccountCmd::Delete { name }) => {
            let v = c
                .call("DELETE", &format!("/api/v1/accounts/{}", enc(&name)), None)
                .await?;
            done(&v, format!("account '{name}' deleted"))
        }
        AdminCommand::Account(AccountCmd::Password { new_password_file }) => {
            let current = crate::read_secret_file(&a.password_file)?;
            let new = crate::read_secret_file(&new_password_file)?;
            let v = c
                .call(
                    "PUT",
                    "/api/v1/password",
                    Some(json!({"current_password": current, "new_password": new})),
                )
                .await?;
            done(
                &v,
                format!(
                    "password of '{}' changed; its sessions have ended (use the new password \
                     from now on)",
                    a.user
                ),
            )
        }
        AdminCommand::Account(AccountCmd::SetPassword {
            name,
            password_file,
        }) => {
            let pw = crate::read_secret_file(&password_file)?;
            let v = c
                .call(
                    "PUT",
                    &format!("/api/v1/accounts/{}/password", enc(&name)),
                    Some(json!({"password": pw})),
                )
                .await?;
            done(
                &v,
                format!("password of '{name}' set; its sessions have ended"),
            )
        }
        AdminCommand::Task(TaskCmd::List) => {
            let v = c.call("GET", "/api/v1/tasks", None).await?;
            table(
                &v,
                &[
                    "id",
                    "name",
                    "autonomous",
                    "group_id",
                    "created_by",
                    "cancelled",
                ],
            )
        }
        AdminCommand::Task(TaskCmd::Show { id }) => {
            let v = c.call("GET", &format!("/api/v1/tasks/{id}"), None).await?;
            if json_out {
                out(&v)
            } else {
                outln!(
                    "task {} '{}' (group {}, by {})",
                    v["task"]["id"],
                    v["task"]["name"].as_str().unwrap_or(""),
                    v["task"]["group_id"],
                    v["task"]["created_by"].as_str().unwrap_or("")
                );
                // A running device's sweep so far, from its last progress report.
                let rows: Vec<Value> = v["devices"]
                    .as_array()
                    .map(|x| x.as_slice())
                    .unwrap_or(&[])
                    .iter()
                    .map(|d| {
                        let mut d = d.clone();
                        d["progress"] = json!(task_progress(&d));
                        d
                    })
                    .collect();
                print_table(
                    &rows,
                    &[
                        "device_id",
                        "device_name",
                        "state",
                        "hits",
                        "progress",
                        "reason",
                    ],
                );
            }
        }
        AdminCommand::Task(TaskCmd::Cancel { id }) => {
            let v = c
                .call("POST", &format!("/api/v1/tasks/{id}/cancel"), None)
                .await?;
            done(&v, format!("task {id} cancelled"))
        }
        AdminCommand::Task(TaskCmd::Create {
            group,
            name,
            ioc,
            stix,
            yara,
            actions,
            scope,
        }) => {
            let mut docs = Vec::new();
            for (format, files) in [("openioc", &ioc), ("stix", &stix), ("yara", &yara)] {
                for f in files {
                    let content = std::fs::read_to_string(f)
                        .with_context(|| format!("cannot read {}", f.display()))?;
                    let fname = f
                        .file_name()
                        .map(|n| n.to_string_lossy().to_string())
                        .unwrap_or_default();
                    docs.push(json!({"format": format, "name": fname, "content": content}));
                }
            }
            let acts = actions.as_deref().map(split_list).unwrap_or_default();
            let body = json!({"name": name.unwrap_or_else(|| "IOC scan".into()), "group": group, "iocs": docs, "actions": acts, "scope": scope});
            let v = c.call("POST", "/api/v1/tasks", Some(body)).await?;
            for w in v["warnings"].as_array().into_iter().flatten() {
                eprintln!(
                    "warning: left out of the task's indicators: {}",
                    cell_text(w)
                );
            }
            done(&v, format!("task {} created", v["id"]))
        }
        AdminCommand::Detection(DetectionCmd::List { device }) => {
            let q = device
                .map(|d| format!("?device={}", enc(&d)))
                .unwrap_or_default();
            let v = c
                .call("GET", &format!("/api/v1/detections{q}"), None)
                .await?;
            if json_out {
                out(&v)
            } else {
                let rows: Vec<Value> = v.as_array().cloned().unwrap_or_default().into_iter().map(|d| json!({
                    "id": d["id"], "device_id": d["device_id"], "threat": d["record"]["threat"], "path": d["record"]["path"],
                    "task_id": d["task_id"], "group_action_error": d["group_action_error"]})).collect();
                print_table(
                    &rows,
                    &[
                        "id",
                        "device_id",
                        "threat",
                        "path",
                        "task_id",
                        "group_action_error",
                    ],
                );
            }
        }
        AdminCommand::Detection(DetectionCmd::Show { id }) => {
            let v = c
                .call("GET", &format!("/api/v1/detections/{}", enc(&id)), None)
                .await?;
            if json_out {
                out(&v)
            } else {
                print_detection(&v)
            }
        }
        AdminCommand::Quarantine(QuarantineCmd::List { device }) => {
            let q = device
                .map(|d| format!("?device={}", enc(&d)))
                .unwrap_or_default();
            let v = c
                .call("GET", &format!("/api/v1/quarantine{q}"), None)
                .await?;
            // Each entry's original path and threat, from the record the device sent.
            let rows: Vec<Value> = v
                .as_array()
                .into_iter()
                .flatten()
                .map(|q| {
                    let state = match (q["state"].as_str(), &q["record"]["allowed"]) {
                        (Some("restored"), Value::Bool(true)) => json!("restored (allowed)"),
                        _ => q["state"].clone(),
                    };
                    json!({"device_id": q["device_id"], "entry_id": q["entry_id"], "state": state,
                           "threat": q["record"]["threat_name"], "original_path": q["record"]["original_path"]})
                })
                .collect();
            if json_out {
                out(&v)
            } else {
                print_table(
                    &rows,
                    &["device_id", "entry_id", "state", "threat", "original_path"],
                );
            }
        }
        AdminCommand::Quarantine(QuarantineCmd::Restore {
            device,
            entry,
            to,
            on_conflict,
        }) => {
            let body = json!({"restore_to": to, "on_conflict": on_conflict.policy()});
            let path = format!(
                "/api/v1/quarantine/{}/{}/restore",
                enc(&device),
                enc(&entry)
            );
            let v = c.call("POST", &path, Some(body)).await?;
            done(&v, format!("restore of {entry} sent to device {device}"))
        }
        AdminCommand::Quarantine(QuarantineCmd::Delete { device, entry }) => {
            let path = format!("/api/v1/quarantine/{}/{}/delete", enc(&device), enc(&entry));
            let v = c.call("POST", &path, Some(json!({}))).await?;
            done(&v, format!("deletion of {entry} sent to device {device}"))
        }
        AdminCommand::Quarantine(QuarantineCmd::WithdrawAllowance { device, entry }) => {
            let path = format!(
                "/api/v1/quarantine/{}/{}/withdraw_allowance",
                enc(&device),
                enc(&entry)
            );
            let v = c.call("POST", &path, Some(json!({}))).await?;
            done(
                &v,
                format!("withdrawal of the allowance of {entry} sent to device {device}"),
            )
        }
        AdminCommand::Alert(AlertCmd::List { device }) => {
            let q = device
                .map(|d| format!("?device={}", enc(&d)))
                .unwrap_or_default();
            let v = c.call("GET", &format!("/api/v1/alerts{q}"), None).await?;
            table(&v, &["at", "device_id", "code", "message"])
        }
        AdminCommand::Audit(AuditCmd::List { limit, before }) => {
            let before = before.map(|b| format!("&before={b}")).unwrap_or_default();
            let v = c
                .call("GET", &format!("/api/v1/audit?limit={limit}{before}"), None)
                .await?;
            table(&v, &["id", "at", "actor", "source", "action", "detail"])
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_devices_progress_is_shown() {
        let running = json!({"state": "running", "results": {"progress": {"files": 157897, "bytes": 18366200000u64, "read": 12}}});
        assert_eq!(
            task_progress(&running),
            "157897 files (18366.2 MB) examined, 12 read"
        );
        let names_only =
            json!({"state": "running", "results": {"progress": {"files": 40, "read": 0}}});
        assert_eq!(task_progress(&names_only), "40 files examined, 0 read");
        let done = json!({"state": "completed", "results": {"progress": {"files": 40}}});
        assert_eq!(task_progress(&done), "");
    }

    /// A table cell stays on one line and within bounds whatever a value holds: a
    /// 70,000-character name once made the audit table's width overflow `format!`
    /// (a panic), and a newline in a device's name faked a row.
    #[test]
    fn table_cells_are_cut_and_escaped() {
        let long = cell_text(&json!("y".repeat(70_000)));
        assert_eq!(long.chars().count(), MAX_CELL_CHARS);
        assert!(long.ends_with('…'));
        assert_eq!(
            cell_text(&json!("laptop)\n1795953147000  admin")),
            "laptop)\\x0a1795953147000  admin"
        );
        assert_eq!(cell_text(&json!("a\u{202e}b")), "a\\xe2\\x80\\xaeb");
        assert_eq!(cell_text(&Value::Null), "-");
        assert_eq!(cell_text(&json!(42)), "42");
    }
}
