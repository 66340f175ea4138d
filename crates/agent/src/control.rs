//! The agent's local control socket (`DIR/control.sock`, mode 0600, root or the agent's own
//! user only): `riposte agent ctl …`, and what the sandbox integration and external tools
//! use to report a detection. One JSON request per line, one JSON answer per line.

use crate::daemon::Agent;
use crate::response::DetectionInput;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

/// The largest request accepted.
const MAX_REQUEST: u64 = 1 << 20;

/// A control request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    QuarantineList,
    QuarantineRestore {
        id: String,
        #[serde(default)]
        to: Option<String>,
        #[serde(default)]
        on_conflict: Option<String>,
    },
    QuarantineDelete {
        id: String,
    },
    ReportDetection(DetectionInput),
    /// The SHA-256s an administrator's restores allowed on this device.
    AllowedList,
    /// Withdraws an allowance: the content is acted on again when it is found.
    AllowedWithdraw {
        sha256: String,
    },
}

/// The socket's path in a data directory.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("control.sock")
}

/// Serves the control socket until `stop` turns true.
pub async fn serve(agent: Arc<Agent>, mut stop: watch::Receiver<bool>) -> std::io::Result<()> {
    let path = socket_path(&agent.data_dir);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    let own_uid = effective_uid();
    loop {
        let (stream, _) = tokio::select! {
            a = listener.accept() => match a { Ok(x) => x, Err(_) => continue },
            _ = stop.changed() => break,
        };
        let allowed = stream
            .peer_cred()
            .map(|c| c.uid() == 0 || c.uid() == own_uid)
            .unwrap_or(false);
        let agent = agent.clone();
        tokio::spawn(async move {
            let _ = handle(agent, stream, allowed).await;
        });
    }
    let _ = std::fs::remove_file(&path);
    Ok(())
}

/// The agent's effective uid (the owner of its /proc entry).
fn effective_uid() -> u32 {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap_or(0)
}

async fn handle(agent: Arc<Agent>, stream: UnixStream, allowed: bool) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    BufReader::new(r.take(MAX_REQUEST))
        .read_line(&mut line)
        .await?;
    let answer = if !allowed {
        serde_json::json!({"ok": false, "error": "only root or the agent's own user may use the control socket"})
    } else {
        match serde_json::from_str::<Request>(&line) {
            Err(e) => serde_json::json!({"ok": false, "error": format!("malformed request: {e}")}),
            Ok(req) => match execute(&agent, req).await {
                Ok(v) => serde_json::json!({"ok": true, "result": v}),
                Err(e) => serde_json::json!({"ok": false, "error": e}),
            },
        }
    };
    let mut out = serde_json::to_vec(&answer).unwrap_or_default();
    out.push(b'\n');
    w.write_all(&out).await?;
    w.shutdown().await
}

async fn execute(agent: &Arc<Agent>, req: Request) -> Result<serde_json::Value, String> {
    match req {
        Request::QuarantineList => {
            let local = agent
                .local
                .clone()
                .ok_or("local actions are not available")?;
            let list = tokio::task::spawn_blocking(move || local.quarantine_list())
                .await
                .map_err(|e| e.to_string())??;
            Ok(serde_json::to_value(list).unwrap_or_default())
        }
        Request::QuarantineRestore {
            id,
            to,
            on_conflict,
        } => {
            let a = agent.clone();
            let path = tokio::task::spawn_blocking(move || {
                a.quarantine_restore(&id, to.as_deref(), on_conflict.as_deref())
            })
            .await
            .map_err(|e| e.to_string())??;
            Ok(serde_json::json!({ "restored_to": path }))
        }
        Request::QuarantineDelete { id } => {
            let a = agent.clone();
            let i2 = id.clone();
            tokio::task::spawn_blocking(move || a.quarantine_delete(&i2))
                .await
                .map_err(|e| e.to_string())??;
            Ok(serde_json::json!({ "deleted": id }))
        }
        Request::ReportDetection(input) => agent.respond(input).await,
        Request::AllowedList => Ok(serde_json::json!({ "allowed": agent.allowed.list() })),
        Request::AllowedWithdraw { sha256 } => {
            let a = agent.clone();
            let h = sha256.clone();
            let was = tokio::task::spawn_blocking(move || {
                a.withdraw_allowance(&h, |was, event| {
                    // The administrator sees it withdrawn too.
                    if was {
                        a.report(event);
                    }
                })
            })
            .await
            .map_err(|e| e.to_string())??;
            if !was {
                return Err(format!("{sha256} is not allowed on this device"));
            }
            Ok(serde_json::json!({ "withdrawn": sha256.trim().to_ascii_lowercase() }))
        }
    }
}

/// Sends one request to a running agent and returns its result.
pub async fn call(data_dir: &Path, req: &Request) -> anyhow::Result<serde_json::Value> {
    let path = socket_path(data_dir);
    let mut stream = UnixStream::connect(&path).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            // The socket is root's (mode 0600): it controls a root process.
            anyhow::anyhow!(
                "cannot reach the agent at {}: only root may control the agent; run this as root",
                path.display()
            )
        } else {
            anyhow::anyhow!(
                "cannot reach the agent at {}: {e} (is `riposte agent --data {}` running?)",
                path.display(),
                data_dir.display()
            )
        }
    })?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    stream.write_all(&line).await?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).await?;
    if answer.trim().is_empty() {
        anyhow::bail!(
            "the agent closed the connection without answering (it stopped, or was stopped, \
             while it worked on the request): see its log, and `riposte agent --data {} \
             status`; what it had begun is finished or rolled back when it starts again",
            data_dir.display()
        );
    }
    let v: serde_json::Value = serde_json::from_str(&answer)?;
    if v["ok"] == true {
        Ok(v["result"].clone())
    } else {
        anyhow::bail!(
            "{}",
            v["error"].as_str().unwrap_or("the agent gave no reason")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An agent that stops while it works on a request closes the connection without
    /// an answer: the caller is told that, not that the answer was malformed.
    #[tokio::test]
    async fn an_agent_gone_mid_request_is_said_so() {
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::UnixListener::bind(socket_path(dir.path())).unwrap();
        let gone = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut request = String::new();
            let mut reader = BufReader::new(&mut conn);
            reader.read_line(&mut request).await.unwrap();
            // Dropped without a word.
        });
        let e = call(dir.path(), &Request::QuarantineList)
            .await
            .unwrap_err()
            .to_string();
        gone.await.unwrap();
        assert!(e.contains("closed the connection without answering"), "{e}");
    }
}
