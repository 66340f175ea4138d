//! Objects to the sandbox, verdicts back: runs the watcher (`riposte-watch`) with the
//! device's effective *Sandbox integration* settings, restarts it when they change, and
//! turns malicious verdicts into the response ([`Agent::respond`]).

use crate::daemon::Agent;
use crate::response::DetectionInput;
use riposte_model::SandboxIntegration;
use riposte_proto::EventBody;
use riposte_watch::{WatchConfig, WatchEvent, Watcher};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

/// What the watcher runs with: the settings, and the device certificate it presents to
/// a sandbox (which changes when it is renewed).
#[derive(PartialEq)]
struct Wanted {
    settings: SandboxIntegration,
    cert_pem: String,
    key_pem: String,
}

fn current(agent: &Agent) -> Option<Wanted> {
    let s = agent.snapshot().settings?.sandbox_integration.value;
    let identity = agent.identity();
    (!s.sandboxes.is_empty() && !s.watch.is_empty()).then_some(Wanted {
        settings: s,
        cert_pem: identity.cert_pem,
        key_pem: identity.key_pem,
    })
}

/// How often watched folders that are missing are looked for again.
const MISSING_RECHECK: std::time::Duration =
    std::time::Duration::from_secs(if cfg!(test) { 1 } else { 15 });

/// Whether the watched folder `folder` (a device path) is a directory now.
fn is_dir(host: &riposte_host::HostRoot, folder: &str) -> bool {
    host.host_path(std::path::Path::new(folder))
        .is_ok_and(|p| p.is_dir())
}

/// Runs until `stop` turns true.
pub async fn run(agent: Arc<Agent>, mut stop: watch::Receiver<bool>) {
    let Some(local) = agent.local.clone() else {
        return;
    };
    let host_root = local.host.path().to_path_buf();
    let (tx, mut events) = mpsc::unbounded_channel();
    let mut watcher: Option<Watcher> = None;
    let mut applied: Option<Wanted> = None;
    // Watched folders that did not exist when the settings were applied: looked for
    // every `MISSING_RECHECK`, and watched once they appear (a user's folder created
    // later, a mount that comes up after the agent).
    let mut missing: Vec<String> = Vec::new();
    // A fixed beat, not a sleep begun afresh at each pass: verdicts on other objects
    // come more often than that and would put the look off for ever.
    let mut recheck = tokio::time::interval(MISSING_RECHECK);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Registered before reading the settings, so a change in between is not missed.
        let changed = agent.settings_changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let wanted = current(&agent);
        if wanted != applied {
            match &wanted {
                None => {
                    if let Some(w) = watcher.take() {
                        w.shutdown().await;
                    }
                }
                Some(Wanted {
                    settings: s,
                    cert_pem,
                    key_pem,
                }) => {
                    let mut config =
                        WatchConfig::from_settings(s, host_root.clone(), &agent.data_dir);
                    config.allowed = Some(agent.allowed.clone());
                    // A sandbox that admits only enrolled agents asks for this.
                    config.client_identity = Some(riposte_watch::ClientIdentity {
                        cert_pem: cert_pem.clone(),
                        key_pem: key_pem.clone(),
                    });
                    let result = match watcher.as_mut() {
                        Some(w) => w.reconfigure(config).await,
                        None => Watcher::start(config, tx.clone()).map(|w| {
                            watcher = Some(w);
                        }),
                    };
                    missing = s
                        .watch
                        .iter()
                        .filter(|f| !is_dir(&local.host, f))
                        .cloned()
                        .collect();
                    match result {
                        Err(e) => agent.report(EventBody::Alert {
                            code: "watch_failed".into(),
                            message: e.to_string(),
                        }),
                        Ok(()) => {
                            if let Some(b) = watcher.as_ref().and_then(|w| w.backend()) {
                                let watched: Vec<&String> =
                                    s.watch.iter().filter(|f| !missing.contains(f)).collect();
                                tracing::info!("watching {watched:?} with {b}");
                            }
                        }
                    }
                }
            }
            if wanted.is_none() {
                missing.clear();
            }
            applied = wanted;
        }
        tokio::select! {
            _ = changed => {}
            Some(ev) = events.recv() => handle(&agent, ev).await,
            _ = recheck.tick(), if !missing.is_empty() => {
                if missing.iter().any(|f| is_dir(&local.host, f)) {
                    tracing::info!("a watched folder that was missing exists now: watching it");
                    // Applied afresh at the top of the loop.
                    applied = None;
                    if let Some(w) = watcher.take() {
                        w.shutdown().await;
                    }
                }
            }
            _ = stop.changed() => break,
        }
    }
    if let Some(w) = watcher.take() {
        w.shutdown().await;
    }
}

async fn handle(agent: &Arc<Agent>, ev: WatchEvent) {
    match ev {
        // The watcher filters allowed content too, but a verdict may have been on its way
        // here when an administrator restored the object.
        WatchEvent::Verdict(v) if v.malicious && !agent.allowed.contains(&v.sha256) => {
            let input = DetectionInput {
                path: v.device_path.clone(),
                sha256: v.sha256.clone(),
                threat: v
                    .threat
                    .clone()
                    .unwrap_or_else(|| "malicious object".into()),
                user: v
                    .user_name
                    .clone()
                    .unwrap_or_else(|| v.user_uid.map(|u| u.to_string()).unwrap_or_default()),
                user_uid: v.user_uid,
                source: v.source.clone(),
                source_ref: v.source_ref.clone(),
                dropped_sha256: v.dropped_sha256.clone(),
                seen: Some(crate::response::SeenObject {
                    size: v.size,
                    md5: v.md5.clone(),
                    sha1: v.sha1.clone(),
                }),
            };
            if let Err(e) = agent.respond(input).await {
                // Allowed between the check above and the response: the administrator's
                // decision was respected, which is nothing to alert about.
                if agent.allowed.contains(&v.sha256) {
                    tracing::debug!(sha256 = %v.sha256, "verdict on content allowed meanwhile: left alone");
                    return;
                }
                agent.report(EventBody::Alert {
                    code: "response_refused".into(),
                    message: e,
                });
            }
        }
        WatchEvent::Verdict(_) => {}
        WatchEvent::Alert { code, message, .. } => {
            agent.report(EventBody::Alert {
                code: code.as_str().to_string(),
                message,
            });
        }
    }
}
