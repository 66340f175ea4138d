//! The agent daemon: applies what the server delivers, keeps its state on disk, and reports
//! tasks and events back. Task execution and the local response actions plug in through
//! [`TaskRunner`].

use crate::identity::Identity;
use crate::link::{self, LinkHandler};
use crate::state::{AgentState, StateFile, TaskRecord};
use riposte_model::DeviceTaskState;
use riposte_proto::{
    AgentEvent, AgentToServer, Delivery, DetectionRecord, EventBody, TaskOffer, TaskUpdate,
};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};

/// Runs IOC scan tasks on this device.
pub trait TaskRunner: Send + Sync + 'static {
    /// Runs a task to the end (or until `cancel` turns true) and returns its final update.
    /// While it runs, `progress` may be called (from any thread) with what it has done so
    /// far; the agent sends that to the server as the results of a `running` update.
    fn run(
        &self,
        offer: TaskOffer,
        cancel: watch::Receiver<bool>,
        progress: &(dyn Fn(serde_json::Value) + Sync),
    ) -> TaskUpdate;
}

/// The agent's shared state.
pub struct Agent {
    pub data_dir: PathBuf,
    /// Read through [`Agent::identity`]: a renewal replaces the certificate and key.
    identity: std::sync::RwLock<Identity>,
    state: Mutex<AgentState>,
    file: StateFile,
    to_server: mpsc::UnboundedSender<AgentToServer>,
    runner: Arc<dyn TaskRunner>,
    /// The local response actions; `None` in tests of the channel alone, and where they
    /// could not be opened (`local_unavailable` says why).
    pub local: Option<Arc<crate::response::LocalActions>>,
    /// Why the local actions could not be opened (a lost quarantine key): said in every
    /// outcome that needs them, while the rest of the agent runs.
    local_unavailable: std::sync::OnceLock<String>,
    cancels: Mutex<std::collections::HashMap<i64, watch::Sender<bool>>>,
    /// Signalled whenever settings change (for tests and the response engine).
    pub settings_changed: tokio::sync::Notify,
    /// Content restored from quarantine, which the sandbox integration leaves alone.
    pub allowed: Arc<riposte_watch::AllowList>,
    /// Held from a restore's allowance to its outcome, and by a withdrawal: a failed
    /// restore takes back only what no concurrent restore of the same content relies on.
    pub allowance_changes: Mutex<()>,
    /// Signalled whenever the server acknowledges an event.
    event_acked: tokio::sync::Notify,
    /// Whether the allow list was reported to a server that takes allowance events, once
    /// per start: restores of earlier versions allowed content without saying so.
    allowances_reported: std::sync::atomic::AtomicBool,
    /// The identity in use is not the one `device.key` and `identity.json` hold (storing
    /// an accepted renewal failed; `renewal.json` still holds it): stored again before
    /// anything replaces `renewal.json`.
    identity_unsaved: std::sync::atomic::AtomicBool,
    /// Restores and deletions that a stop cut short and that were found done at start
    /// (entry id → action): the server delivers their command again, and running it on
    /// an entry no longer in quarantine would raise a failure for what succeeded.
    finished_at_start: Mutex<std::collections::HashMap<String, String>>,
    /// Quarantines a stop cut short that recovery finished without deleting the
    /// original (entry id → why): the response reports them failed, as it would have.
    originals_kept: Mutex<std::collections::HashMap<String, String>>,
}

/// The action a response's journal entry (`PendingResponse::done`) says was settled,
/// carried out or failed.
fn settled_as(done: &str) -> &str {
    done.strip_suffix(":failed").unwrap_or(done)
}

/// How long a detection's group action waits for the server to acknowledge the detection
/// before it is left pending (and requested when the acknowledgement comes).
pub const GROUP_ACTION_ACK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// How many times a group action is requested while the server refuses it for a passing
/// reason (about a day, the later ones an hour apart).
pub const GROUP_ACTION_ATTEMPTS: u32 = 30;

/// Why allowed content is left alone: an administrator restored it on this device.
/// Replaces results larger than `limit` bytes by a note of their size. An update that
/// could not cross the channel would be sent again after every reconnection and cut
/// the device off for good: its results give way, its state and hit count stay.
fn fit_results(update: &mut TaskUpdate, limit: usize) {
    let size = serde_json::to_vec(&update.results).map_or(0, |v| v.len());
    if size > limit {
        update.results = serde_json::json!({
            "error": format!("the results ({size} bytes) are over the {limit} bytes a device sends"),
            "hits_total": update.hits,
        });
    }
}

/// Largest task results a device sends: well under the channel's frame limit
/// ([`riposte_proto::MAX_FRAME`]), which the update's other fields and JSON share.
const MAX_RESULTS_BYTES: usize = riposte_proto::MAX_FRAME / 4;

const ALLOWED_HERE: &str = "an administrator restored this content on this device, which \
     allows it; withdraw that with `riposte agent ctl allowed withdraw SHA256`";

impl Agent {
    /// Loads the agent from its data directory; returns it and the link's receiving end.
    pub fn open(
        data_dir: PathBuf,
        runner: Arc<dyn TaskRunner>,
        local: Option<Arc<crate::response::LocalActions>>,
    ) -> anyhow::Result<(Arc<Agent>, mpsc::UnboundedReceiver<AgentToServer>)> {
        let identity = Identity::load(&data_dir)?;
        Identity::remove_leftovers(&data_dir);
        let file = StateFile::new(&data_dir);
        let mut state = file.load()?;
        state.connected = false;
        let allowed = Arc::new(riposte_watch::AllowList::open_in(
            &riposte_watch::WatchConfig::queue_dir(&data_dir),
        )?);
        let (tx, rx) = mpsc::unbounded_channel();
        let agent = Arc::new(Agent {
            data_dir,
            identity: std::sync::RwLock::new(identity),
            state: Mutex::new(state),
            file,
            to_server: tx,
            runner,
            local,
            local_unavailable: std::sync::OnceLock::new(),
            cancels: Mutex::new(Default::default()),
            settings_changed: tokio::sync::Notify::new(),
            allowed,
            allowance_changes: Mutex::new(()),
            event_acked: tokio::sync::Notify::new(),
            allowances_reported: std::sync::atomic::AtomicBool::new(false),
            identity_unsaved: std::sync::atomic::AtomicBool::new(false),
            finished_at_start: Mutex::new(std::collections::HashMap::new()),
            originals_kept: Mutex::new(std::collections::HashMap::new()),
        });
        Ok((agent, rx))
    }

    /// Stores the identity in use as the device's, if storing it failed before.
    fn store_identity_in_use(&self) -> Result<(), crate::identity::IdentityError> {
        use std::sync::atomic::Ordering;
        if self.identity_unsaved.load(Ordering::SeqCst) {
            self.identity().save(&self.data_dir)?;
            self.identity_unsaved.store(false, Ordering::SeqCst);
            tracing::info!("stored the device certificate in use");
        }
        Ok(())
    }

    /// The device's identity as it stands (its certificate is renewed now and then).
    pub fn identity(&self) -> Identity {
        self.identity
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A copy of the current state.
    pub fn snapshot(&self) -> AgentState {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reads the state without copying it.
    fn read<R>(&self, f: impl FnOnce(&AgentState) -> R) -> R {
        f(&self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn update<R>(&self, f: impl FnOnce(&mut AgentState) -> R) -> R {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let r = f(&mut s);
        if let Err(e) = self.file.save(&s) {
            tracing::error!("cannot save the agent state: {e}");
        }
        r
    }

    /// Queues an event for the server; it is kept until acknowledged.
    pub fn report(&self, body: EventBody) {
        self.report_with(body, |_, _| {});
    }

    /// [`Agent::report`], with `also` applied to the state in the same saved update;
    /// returns the event's id.
    fn report_with(&self, body: EventBody, also: impl FnOnce(&mut AgentState, &str)) -> String {
        let event = AgentEvent {
            event_id: format!("{:032x}", rand::random::<u128>()),
            at_ms: now_ms(),
            body,
        };
        self.update(|s| {
            s.outbox.push(event.clone());
            also(s, &event.event_id);
        });
        let id = event.event_id.clone();
        let _ = self.to_server.send(AgentToServer::Event(event));
        id
    }

    fn set_task(&self, mut update: TaskUpdate) {
        fit_results(&mut update, MAX_RESULTS_BYTES);
        self.update(|s| {
            if let Some(t) = s.tasks.get_mut(&update.task_id) {
                t.state = update.state;
                t.last_update = Some(update.clone());
            }
        });
        let _ = self.to_server.send(AgentToServer::TaskUpdate(update));
    }

    fn start_task(self: &Arc<Self>, offer: TaskOffer) {
        // A group's autonomous task reaches its whole subtree: each device runs it, and
        // acts on hits, only as far as its own effective settings select group actions
        // (a policy that enforces fewer below, or a device's own value where nothing is
        // enforced).
        let own = self.read(|s| s.settings.clone());
        let (actions, declined) = match (&own, offer.autonomous) {
            (Some(settings), true) => match group_actions_allowed(settings, &offer.actions) {
                Ok(split) => split,
                Err(reason) => {
                    self.set_task(TaskUpdate {
                        task_id: offer.task_id,
                        state: DeviceTaskState::Cancelled,
                        hits: 0,
                        reason: Some(reason),
                        results: serde_json::Value::Null,
                    });
                    return;
                }
            },
            _ => (offer.actions.clone(), Vec::new()),
        };
        let (cancel_tx, cancel_rx) = watch::channel(false);
        self.cancels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(offer.task_id, cancel_tx);
        let agent = self.clone();
        let (autonomous, asked) = (offer.autonomous, offer.actions.clone());
        tokio::spawn(async move {
            let id = offer.task_id;
            agent.set_task(TaskUpdate {
                task_id: id,
                state: DeviceTaskState::Running,
                hits: 0,
                reason: None,
                results: serde_json::Value::Null,
            });
            let runner = agent.runner.clone();
            let reporter = agent.clone();
            let update = tokio::task::spawn_blocking(move || {
                let progress = |results: serde_json::Value| {
                    reporter.set_task(TaskUpdate {
                        task_id: id,
                        state: DeviceTaskState::Running,
                        hits: 0,
                        reason: None,
                        results,
                    })
                };
                runner.run(offer, cancel_rx, &progress)
            })
            .await
            .unwrap_or_else(|e| TaskUpdate {
                task_id: id,
                state: DeviceTaskState::Failed,
                hits: 0,
                reason: Some(format!("the scan crashed: {e}")),
                results: serde_json::Value::Null,
            });
            agent
                .cancels
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            // Judged again before acting: settings sent after the task (queued behind it
            // while the device was away) have arrived by now, and they decide.
            let (actions, declined) = match agent.read(|s| s.settings.clone()) {
                Some(settings) if autonomous => match group_actions_allowed(&settings, &asked) {
                    Ok(split) => split,
                    Err(reason) => {
                        agent.set_task(TaskUpdate {
                            task_id: id,
                            state: DeviceTaskState::Cancelled,
                            hits: update.hits,
                            reason: Some(format!("{reason} (its settings changed while it ran)")),
                            results: update.results,
                        });
                        return;
                    }
                },
                _ => (actions, declined),
            };
            let mut update = agent.act_on_hits(&actions, update).await;
            if update.hits > 0 && !declined.is_empty() {
                let skipped = declined.iter().map(|(a, why)| {
                    serde_json::json!({"action": a, "outcome": "skipped", "detail": why})
                });
                match update.results["actions"].as_array_mut() {
                    Some(done) => done.extend(skipped),
                    None => update.results["actions"] = skipped.collect(),
                }
            }
            agent.set_task(update);
        });
    }

    /// Restores or deletes a quarantined object as the server asked (blocking: it
    /// decrypts and writes files), and queues the event that reports the outcome with
    /// the command counted as applied (`seq`) and the change's journal entry ended, in
    /// one save: a stop before it leaves the change to settle at start.
    fn run_quarantine_command(&self, cmd: &riposte_proto::QuarantineCommand, seq: u64) {
        let queue = |event: EventBody| {
            self.report_with(event, |s, _| {
                s.last_applied = seq;
                end_quarantine_change(s, &cmd.entry_id);
            });
        };
        let result = match cmd.action.as_str() {
            "restore" => self
                .restore_entry(
                    &cmd.entry_id,
                    cmd.restore_to.as_deref(),
                    cmd.on_conflict.as_deref(),
                    queue,
                )
                .map(|_| ()),
            "delete" => self.delete_entry(&cmd.entry_id).map(queue),
            other => Err(format!("unknown quarantine action '{other}'")),
        };
        if let Err(e) = result {
            queue(EventBody::Alert {
                code: "quarantine_command_failed".into(),
                message: format!(
                    "{} of quarantine entry {} failed: {e}",
                    cmd.action, cmd.entry_id
                ),
            });
        }
    }

    fn local(&self) -> Result<&Arc<crate::response::LocalActions>, String> {
        self.local
            .as_ref()
            .ok_or_else(|| match self.local_unavailable.get() {
                Some(why) => format!("local actions are not available: {why}"),
                None => "local actions are not available in this agent".to_string(),
            })
    }

    /// Runs without local actions, because `why`: every outcome that needs them says
    /// so, and the server is told at once (an alert).
    pub fn run_without_local_actions(&self, why: String) {
        self.report(EventBody::Alert {
            code: "local_actions_unavailable".into(),
            message: format!(
                "quarantine, notification and EPP scans are off on this device: {why}"
            ),
        });
        let _ = self.local_unavailable.set(why);
    }

    /// Restores a quarantined object and tells the server.
    pub fn quarantine_restore(
        &self,
        id: &str,
        to: Option<&str>,
        on_conflict: Option<&str>,
    ) -> Result<String, String> {
        self.restore_entry(id, to, on_conflict, |event| {
            self.report_with(event, |s, _| end_quarantine_change(s, id));
        })
    }

    /// Settles the restores and deletions a stop interrupted: those journaled in the
    /// agent's state (`AgentState::quarantine_changes`), and those the quarantine's own
    /// recovery finished or rolled back (`recovered`, from its report; an older agent
    /// journaled none). A restore allows its content before it begins (see
    /// `restore_entry`): where the entry is still in quarantine, nobody restored
    /// anything, so the allowance is withdrawn. Where the entry is gone, the change took
    /// place: the server is told, as it would have been. Either way an alert tells the
    /// administrator what happened.
    pub fn settle_interrupted_quarantine_changes(&self, recovered: &[String]) {
        let Ok(local) = self.local() else {
            return;
        };
        let mut changes = self.read(|s| s.quarantine_changes.clone());
        for id in recovered {
            changes
                .entry(id.clone())
                .or_insert_with(|| crate::state::QuarantineChange {
                    action: "restore".into(),
                    record: serde_json::Value::Null,
                });
        }
        for (id, change) in changes {
            // A damaged entry (its record unreadable) is still in quarantine too.
            let in_store = local.store_record_unless_damaged(&id);
            let still_quarantined = in_store.is_ok();
            let record = in_store.ok().flatten();
            let mut events = Vec::new();
            let message = match (change.action.as_str(), still_quarantined, record) {
                ("delete", true, _) => format!(
                    "the deletion of quarantine entry {id} was interrupted (the agent \
                     stopped): the object is still in quarantine; delete it again"
                ),
                ("delete", false, _) => {
                    self.note_finished_at_start(&id, "delete");
                    events.push(EventBody::Quarantine {
                        entry_id: id.clone(),
                        state: "deleted".into(),
                        record: change.record.clone(),
                    });
                    format!(
                        "the deletion of quarantine entry {id} was interrupted (the agent \
                         stopped) and finished when the agent started again"
                    )
                }
                (_, true, None) => format!(
                    "the restore of quarantine entry {id} was interrupted (the agent stopped): \
                     the entry is still in quarantine, and its record is damaged"
                ),
                (_, true, Some(record)) => {
                    // Allowed before this restore began (another restore of the same
                    // content): that allowance stands.
                    let allowed_before = self.read(|s| s.restores_of_allowed_content.contains(&id));
                    let withdrawn = !allowed_before
                        && match self.allowed.revoke(&record.sha256) {
                            Ok(w) => w,
                            Err(e) => {
                                tracing::warn!(
                                    "cannot withdraw the allowance of {}: {e}",
                                    record.sha256
                                );
                                false
                            }
                        };
                    if withdrawn {
                        events.push(EventBody::Allowance {
                            sha256: record.sha256.to_ascii_lowercase(),
                            allowed: false,
                        });
                    }
                    format!(
                        "the restore of quarantine entry {id} was interrupted (the agent stopped) \
                         and rolled back: the object is still in quarantine{}",
                        if withdrawn {
                            ", and its content is no longer allowed on this device"
                        } else {
                            ""
                        }
                    )
                }
                (_, false, _) => {
                    self.note_finished_at_start(&id, "restore");
                    if !change.record.is_null() {
                        events.push(EventBody::Quarantine {
                            entry_id: id.clone(),
                            state: "restored".into(),
                            record: change.record.clone(),
                        });
                    }
                    format!(
                        "the restore of quarantine entry {id} was interrupted (the agent stopped) \
                         and finished when the agent started again"
                    )
                }
            };
            let code = if change.action == "delete" {
                "delete_interrupted"
            } else {
                "restore_interrupted"
            };
            events.push(EventBody::Alert {
                code: code.into(),
                message,
            });
            let last = events.pop();
            for e in events {
                self.report(e);
            }
            if let Some(last) = last {
                self.report_with(last, |s, _| end_quarantine_change(s, &id));
            }
        }
    }

    /// Notes the quarantines that recovery finished at start without deleting their
    /// originals ([`riposte_quarantine::RecoveryReport::originals_kept`]), for the
    /// responses resumed after it to report them so.
    pub fn note_originals_kept(&self, kept: &[(String, String)]) {
        self.originals_kept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(kept.iter().cloned());
    }

    fn note_finished_at_start(&self, id: &str, action: &str) {
        self.finished_at_start
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string(), action.to_string());
    }

    /// Whether `cmd` is the command of a change found done at start, delivered again
    /// because the stop came before it counted as applied (its entry is gone).
    fn finished_before_this_start(&self, cmd: &riposte_proto::QuarantineCommand) -> bool {
        let finished = self
            .finished_at_start
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&cmd.entry_id)
            .is_some_and(|action| *action == cmd.action);
        finished
            && self
                .local()
                .is_ok_and(|l| l.store_record(&cmd.entry_id).is_err())
    }

    /// Restores entry `id`, journaled (`AgentState::quarantine_changes`) until `queue`
    /// queues the event that reports it (the journal entry is ended here on failure).
    /// Returns where the object went.
    ///
    /// `queue` runs under `allowance_changes`, like the allowance itself: the server
    /// then learns of allowances in the order they were given and withdrawn. Queued
    /// after the lock, a withdrawal at the same instant could reach the server first,
    /// and the restore's `allowed: true` would stand there although the device
    /// withdrew it.
    fn restore_entry(
        &self,
        id: &str,
        to: Option<&str>,
        on_conflict: Option<&str>,
        queue: impl FnOnce(EventBody),
    ) -> Result<String, String> {
        let local = self.local()?;
        let record = local.store_record(id)?;
        let _changing = self
            .allowance_changes
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Allowed before the restore, not after: the restored file's own close-write or
        // moved-to event may reach the watcher before the restore returns. An allowance
        // that predates this restore is noted first, for a stop that interrupts it: the
        // rollback then takes back only an allowance this restore gave.
        let allowed_before = self.allowed.contains(&record.sha256);
        let mut json = serde_json::to_value(&record).unwrap_or_default();
        // What the administrator sees of the allowance, until it is withdrawn
        // (`EventBody::Allowance`).
        json["allowed"] = serde_json::json!(true);
        // Where it is meant to go, for a restore a stop interrupts (settled from the
        // journal); replaced by where it went once it is done.
        json["restored_to"] = serde_json::json!(to
            .map(str::to_string)
            .unwrap_or_else(|| riposte_model::path_text::encode(&record.original_path)));
        // Journaled before the allowance, so that a stop at any instant from here is
        // settled at start (`settle_interrupted_quarantine_changes`).
        self.update(|s| {
            s.quarantine_changes.insert(
                id.to_string(),
                crate::state::QuarantineChange {
                    action: "restore".into(),
                    record: json.clone(),
                },
            );
            if allowed_before {
                s.restores_of_allowed_content.insert(id.to_string());
            }
        });
        let newly_allowed = self.allowed.allow(&record.sha256).map_err(|e| {
            format!("not restored: cannot record the content as allowed for the sandbox integration: {e}")
        });
        let restored = newly_allowed.and_then(|newly| {
            local
                .quarantine_restore(id, to, on_conflict)
                .inspect_err(|_| {
                    // Nothing was restored, so the administrator's decision has not taken
                    // effect either; a content allowed earlier stays allowed.
                    if newly {
                        if let Err(r) = self.allowed.revoke(&record.sha256) {
                            tracing::warn!(
                                "cannot withdraw the allowance of {}: {r}",
                                record.sha256
                            );
                        }
                    }
                })
        });
        let path = match restored {
            Ok(path) => path,
            Err(e) => {
                self.update(|s| end_quarantine_change(s, id));
                return Err(e);
            }
        };
        // As text that finds the restored file again, like the record's original path.
        let restored_to = riposte_model::path_text::encode(&path);
        json["restored_to"] = serde_json::json!(restored_to);
        queue(EventBody::Quarantine {
            entry_id: id.to_string(),
            state: "restored".into(),
            record: json,
        });
        Ok(restored_to)
    }

    /// Withdraws the allowance of content an administrator restored (`sha256`, hex): the
    /// sandbox integration and the response act on it again. Returns whether it was
    /// allowed. `queue` is given that, and the event that tells the server it is not
    /// (queued either way by a withdrawal the server asked for, so that its view comes
    /// right); it runs under `allowance_changes`, for the reason `restore_entry` gives.
    pub fn withdraw_allowance(
        &self,
        sha256: &str,
        queue: impl FnOnce(bool, EventBody),
    ) -> Result<bool, String> {
        let _changing = self
            .allowance_changes
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let was = self.allowed.revoke(sha256).map_err(|e| e.to_string())?;
        if was {
            tracing::info!(sha256 = %sha256, "allowance withdrawn");
        }
        queue(
            was,
            EventBody::Allowance {
                sha256: sha256.trim().to_ascii_lowercase(),
                allowed: false,
            },
        );
        Ok(was)
    }

    /// Deletes a quarantined object for good and tells the server.
    pub fn quarantine_delete(&self, id: &str) -> Result<(), String> {
        let event = self.delete_entry(id)?;
        self.report_with(event, |s, _| end_quarantine_change(s, id));
        Ok(())
    }

    /// Deletes entry `id`, journaled (`AgentState::quarantine_changes`) until the caller
    /// queues the returned event; a failure ends the journal entry here.
    fn delete_entry(&self, id: &str) -> Result<EventBody, String> {
        let local = self.local()?;
        // A damaged entry is deleted too (nothing else can be done with it), and said
        // without the record it lost.
        let record = local.store_record_unless_damaged(id)?;
        let record = serde_json::to_value(&record).unwrap_or_default();
        self.update(|s| {
            s.quarantine_changes.insert(
                id.to_string(),
                crate::state::QuarantineChange {
                    action: "delete".into(),
                    record: record.clone(),
                },
            );
        });
        if let Err(e) = local.quarantine_delete(id) {
            self.update(|s| end_quarantine_change(s, id));
            return Err(e);
        }
        Ok(EventBody::Quarantine {
            entry_id: id.to_string(),
            state: "deleted".into(),
            record,
        })
    }

    fn report_outcome(&self, detection_id: &str, o: &crate::response::Outcome) {
        // The device's own log says it too, not only the server's records.
        if o.outcome == "failed" {
            tracing::warn!(detection = detection_id, action = %o.action, "{}", o.detail);
        }
        self.report(EventBody::ActionOutcome {
            detection_id: detection_id.to_string(),
            action: o.action.clone(),
            outcome: o.outcome.clone(),
            detail: o.detail.clone(),
        });
    }

    /// Responds to a malicious verdict on an object of this device.
    pub async fn respond(
        self: &Arc<Self>,
        input: crate::response::DetectionInput,
    ) -> Result<serde_json::Value, String> {
        let local = self.local()?.clone();
        let l2 = local.clone();
        let inp = input.clone();
        let examined = tokio::task::spawn_blocking(move || l2.examine(&inp))
            .await
            .map_err(|e| e.to_string())?;
        // Renamed, moved, replaced or changed since the watcher judged it: nothing is
        // acted on at the path, but the detection is recorded with what the watcher read,
        // and the group sweep (this device's too) looks for the object by its hashes.
        let (record, identity, gone) = match examined {
            Ok((record, identity)) => (record, Some(identity), None),
            Err(e) => match input.record_without_object() {
                Some(record) => (record, None, Some(e)),
                None => return Err(e),
            },
        };
        if self.allowed.contains(&record.sha256) {
            return Err(format!("not acted on: {ALLOWED_HERE}"));
        }
        // Journaled with the detection, in one save, before the first action: a stop at
        // any instant after the detection is recorded is finished when the agent starts
        // again (`resume_responses`).
        let detection_event = self.report_with(EventBody::Detection(record.clone()), |s, id| {
            s.pending_responses.push(crate::state::PendingResponse {
                event_id: id.to_string(),
                detection: record.clone(),
                done: Vec::new(),
            })
        });
        let outcomes = self
            .run_actions(&detection_event, &record, identity, gone.as_deref(), &[])
            .await;
        self.update(|s| {
            s.pending_responses
                .retain(|p| p.detection.detection_id != record.detection_id)
        });
        Ok(serde_json::json!({ "detection": record, "outcomes": outcomes }))
    }

    /// Runs the selected actions of the response to `record` (reported as event
    /// `event_id`) but those in `done`, reporting each outcome as it comes and noting it
    /// in the response's journal entry. `identity` is the object's at the path, where it
    /// is still the one judged; else `gone` says why not.
    async fn run_actions(
        self: &Arc<Self>,
        event_id: &str,
        record: &riposte_proto::DetectionRecord,
        identity: Option<riposte_host::FileIdentity>,
        gone: Option<&str>,
        done: &[String],
    ) -> Vec<crate::response::Outcome> {
        let detection_event = event_id.to_string();
        let record = record.clone();
        let local = match self.local() {
            Ok(l) => l.clone(),
            Err(e) => {
                return vec![crate::response::Outcome {
                    action: "threat_response".into(),
                    outcome: "failed".into(),
                    detail: e,
                }]
            }
        };
        let gone = gone.map(str::to_string);
        let state = self.snapshot();
        let mut outcomes = Vec::new();
        match crate::response::selected(state.settings.as_ref()) {
            None => {
                let o = crate::response::Outcome {
                    action: "threat_response".into(),
                    outcome: "skipped".into(),
                    detail: "Threat Response is not enabled on this device".into(),
                };
                self.report_outcome(&record.detection_id, &o);
                outcomes.push(o);
            }
            Some(actions) => {
                use riposte_model::Action;
                let todo: Vec<Action> = actions
                    .into_iter()
                    .filter(|a| !done.iter().any(|d| settled_as(d) == a.as_str()))
                    .collect();
                let mut quarantined = done.iter().any(|d| d == "quarantine_and_delete");
                // The quarantine first: the notification says whether it was done.
                if todo.contains(&Action::QuarantineAndDelete) {
                    let o = match (identity, &gone) {
                        (_, Some(why)) => crate::response::Outcome {
                            action: Action::QuarantineAndDelete.as_str().into(),
                            outcome: "failed".into(),
                            detail: format!(
                                "{why}; the object was moved or changed after it was judged, \
                                     and the group sweep looks for it by its hashes"
                            ),
                        },
                        (Some(identity), None) => {
                            let l = local.clone();
                            let r = record.clone();
                            let res = tokio::task::spawn_blocking(move || {
                                // Other names of the file keep its content after this
                                // one goes: counted first, to be said.
                                let links = l.link_count(&r.path);
                                l.quarantine(
                                    &r.path,
                                    &r.detection_id,
                                    &r.threat,
                                    &r.user_name,
                                    Some(identity),
                                )
                                .map(|q| (q, links))
                            })
                            .await
                            .map_err(|e| e.to_string())
                            .and_then(|x| x);
                            match res {
                                Ok((q, links)) => {
                                    self.report(EventBody::Quarantine {
                                        entry_id: q.id.clone(),
                                        state: "quarantined".into(),
                                        record: serde_json::to_value(&q).unwrap_or_default(),
                                    });
                                    let mut detail = format!("quarantine entry {}", q.id);
                                    if let Some(others) = links.filter(|n| *n > 1).map(|n| n - 1) {
                                        detail.push_str(&format!(
                                            "; the file had {others} other name(s) (hard \
                                             links) on this device, which still hold its \
                                             content: an IOC scan for its hashes finds them"
                                        ));
                                    }
                                    crate::response::Outcome {
                                        action: Action::QuarantineAndDelete.as_str().into(),
                                        outcome: "done".into(),
                                        detail,
                                    }
                                }
                                Err(e) => crate::response::Outcome {
                                    action: Action::QuarantineAndDelete.as_str().into(),
                                    outcome: "failed".into(),
                                    detail: e,
                                },
                            }
                        }
                        (None, None) => crate::response::Outcome {
                            action: Action::QuarantineAndDelete.as_str().into(),
                            outcome: "failed".into(),
                            detail: "the object could not be identified".into(),
                        },
                    };
                    quarantined |= o.outcome == "done";
                    self.settle(&record.detection_id, Action::QuarantineAndDelete, &o);
                    outcomes.push(o);
                }
                // Then the group request beside the other local actions: it may wait
                // for the server to hold the detection (up to GROUP_ACTION_ACK_WAIT),
                // which the user's notification and the EPP scan have no reason to.
                let group = async {
                    if !todo.contains(&Action::GroupIocScan) {
                        return None;
                    }
                    let o = self.group_action(&detection_event, &record).await;
                    self.settle(&record.detection_id, Action::GroupIocScan, &o);
                    Some(o)
                };
                let rest = async {
                    let mut outcomes = Vec::new();
                    for action in [Action::NotifyUser, Action::EppCriticalAreasScan] {
                        if !todo.contains(&action) {
                            continue;
                        }
                        let o = if action == Action::NotifyUser {
                            local.notify(&record, quarantined).await
                        } else {
                            let l = local.clone();
                            tokio::task::spawn_blocking(move || l.critical_areas_scan())
                                .await
                                .unwrap_or_else(|e| crate::response::Outcome {
                                    action: "epp_critical_areas_scan".into(),
                                    outcome: "failed".into(),
                                    detail: e.to_string(),
                                })
                        };
                        self.settle(&record.detection_id, action, &o);
                        outcomes.push(o);
                    }
                    outcomes
                };
                // Every action has its place above: a new one must be given one (the
                // match is here so that the compiler says so).
                for action in &todo {
                    match action {
                        Action::QuarantineAndDelete
                        | Action::GroupIocScan
                        | Action::NotifyUser
                        | Action::EppCriticalAreasScan => {}
                        // What devices do on a hit: they travel inside the task.
                        Action::GroupIocQuarantineAndDelete
                        | Action::GroupIocEppCriticalAreasScan => {}
                    }
                }
                let (group, rest) = tokio::join!(group, rest);
                outcomes.extend(group);
                outcomes.extend(rest);
            }
        }
        outcomes
    }

    /// Reports an action's outcome and notes it in the response's journal entry, so
    /// that a restart does not run it again.
    fn settle(
        &self,
        detection_id: &str,
        action: riposte_model::Action,
        o: &crate::response::Outcome,
    ) {
        self.report_outcome(detection_id, o);
        self.update(|s| {
            for p in s.pending_responses.iter_mut() {
                if p.detection.detection_id == detection_id {
                    p.done.push(if o.outcome == "failed" {
                        format!("{}:failed", action.as_str())
                    } else {
                        action.as_str().to_string()
                    });
                }
            }
        });
    }

    /// Finishes the responses a stop interrupted (see [`crate::state::PendingResponse`]):
    /// an object quarantined before the stop is reported so; one still at its path with
    /// the content judged is acted on now; one gone is reported as such, and the group
    /// sweep, if selected, looks for it by its hashes.
    pub async fn resume_responses(self: &Arc<Self>) {
        let pending = self.read(|s| s.pending_responses.clone());
        let Ok(local) = self.local().cloned() else {
            return;
        };
        for p in pending {
            let (record, mut done) = (p.detection, p.done);
            if !done
                .iter()
                .any(|d| settled_as(d) == "quarantine_and_delete")
            {
                let entries = local
                    .quarantine_list()
                    .map(|l| l.entries)
                    .unwrap_or_default();
                if let Some(q) = entries
                    .iter()
                    .find(|e| e.detection_id == record.detection_id)
                {
                    self.report(EventBody::Quarantine {
                        entry_id: q.id.clone(),
                        state: "quarantined".into(),
                        record: serde_json::to_value(q).unwrap_or_default(),
                    });
                    let kept = self
                        .originals_kept
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get(&q.id)
                        .cloned();
                    // Said as the response would have said it without the stop.
                    let outcome = match &kept {
                        Some(why) => crate::response::Outcome {
                            action: "quarantine_and_delete".into(),
                            outcome: "failed".into(),
                            detail: format!(
                                "quarantined a copy as entry {} but did not delete: {why}",
                                q.id
                            ),
                        },
                        None => crate::response::Outcome {
                            action: "quarantine_and_delete".into(),
                            outcome: "done".into(),
                            detail: format!("quarantine entry {}", q.id),
                        },
                    };
                    self.report_outcome(&record.detection_id, &outcome);
                    done.push(if kept.is_some() {
                        "quarantine_and_delete:failed".into()
                    } else {
                        "quarantine_and_delete".into()
                    });
                }
            }
            let input = crate::response::DetectionInput {
                path: record.path.clone(),
                sha256: record.sha256.clone(),
                threat: record.threat.clone(),
                user: record.user_name.clone(),
                user_uid: record.user_uid,
                source: record.source.clone(),
                source_ref: record.source_ref.clone(),
                dropped_sha256: record.dropped_sha256.clone(),
                seen: None,
            };
            let l = local.clone();
            let examined = tokio::task::spawn_blocking(move || l.examine(&input))
                .await
                .map_err(|e| e.to_string())
                .and_then(|x| x);
            let (identity, gone) = match examined {
                Ok((_, identity)) => (Some(identity), None),
                Err(e) => (None, Some(e)),
            };
            tracing::info!(detection = %record.detection_id, "finishing a response the agent's stop interrupted");
            self.run_actions(&p.event_id, &record, identity, gone.as_deref(), &done)
                .await;
            self.update(|s| {
                s.pending_responses
                    .retain(|q| q.detection.detection_id != record.detection_id)
            });
        }
    }

    /// The group action of a detection reported as event `event_id`: requested at once
    /// when the server acknowledges the event within [`GROUP_ACTION_ACK_WAIT`], else kept
    /// (on disk) and requested when the acknowledgement comes, even after a restart.
    async fn group_action(
        self: &Arc<Self>,
        event_id: &str,
        record: &DetectionRecord,
    ) -> crate::response::Outcome {
        let deadline = tokio::time::Instant::now() + GROUP_ACTION_ACK_WAIT;
        loop {
            let acked = self.event_acked.notified();
            if !self.read(|s| s.outbox.iter().any(|e| e.event_id == event_id)) {
                let password = self.read(|s| s.special_password.clone());
                let (outcome, passing) = self.autonomous_task(record, password.as_deref()).await;
                return self.retry_if_passing(event_id, record, 0, outcome, passing);
            }
            if tokio::time::timeout_at(deadline, acked).await.is_err() {
                break;
            }
        }
        let pending = crate::state::PendingGroupAction {
            event_id: event_id.to_string(),
            detection: record.clone(),
            attempts: 0,
            retry_at_ms: 0,
        };
        self.update(|s| s.pending_group_actions.push(pending));
        // Acknowledged between the last check and the save: nobody else will run it.
        self.run_acknowledged_group_actions();
        crate::response::Outcome {
            action: "group_ioc_scan".into(),
            outcome: "pending".into(),
            detail: "the server has not yet received this detection (no connection); the \
                     group task is requested as soon as it has"
                .into(),
        }
    }

    /// An autonomous task request's `outcome`: as it is, unless it failed for a passing
    /// reason (`passing`) and has been tried fewer than [`GROUP_ACTION_ATTEMPTS`] times
    /// (`attempts` before this one); then it is kept on disk to be asked again later
    /// (`run_acknowledged_group_actions`), and the outcome says so.
    fn retry_if_passing(
        &self,
        event_id: &str,
        record: &DetectionRecord,
        attempts: u32,
        outcome: crate::response::Outcome,
        passing: bool,
    ) -> crate::response::Outcome {
        let attempts = attempts + 1;
        if !passing || attempts >= GROUP_ACTION_ATTEMPTS {
            return outcome;
        }
        // 30 s, 1, 2, 4… minutes, at most an hour apart.
        let wait_ms = (30_000i64 << (attempts - 1).min(7)).min(3_600_000);
        let retry_at_ms = now_ms() + wait_ms;
        self.update(|s| {
            s.pending_group_actions
                .push(crate::state::PendingGroupAction {
                    event_id: event_id.to_string(),
                    detection: record.clone(),
                    attempts,
                    retry_at_ms,
                })
        });
        tracing::warn!(
            detection = %record.detection_id,
            "the group action could not be requested ({}); asking again in {} s",
            outcome.detail,
            wait_ms / 1000
        );
        crate::response::Outcome {
            action: outcome.action,
            outcome: "pending".into(),
            detail: format!(
                "{}; asked again at {} (attempt {attempts} of {GROUP_ACTION_ATTEMPTS})",
                outcome.detail,
                riposte_model::time::utc(retry_at_ms)
            ),
        }
    }

    /// Requests the pending group actions whose detections the server has acknowledged
    /// and whose time to be asked (again) has come, and reports each outcome.
    fn run_acknowledged_group_actions(self: &Arc<Self>) {
        let now = now_ms();
        let ready: Vec<crate::state::PendingGroupAction> = self.update(|s| {
            let acked = |p: &crate::state::PendingGroupAction| {
                !s.outbox.iter().any(|e| e.event_id == p.event_id) && p.retry_at_ms <= now
            };
            let ready = s
                .pending_group_actions
                .iter()
                .filter(|p| acked(p))
                .cloned()
                .collect();
            s.pending_group_actions.retain(|p| !acked(p));
            ready
        });
        for p in ready {
            let agent = self.clone();
            tokio::spawn(async move {
                let password = agent.read(|s| s.special_password.clone());
                let (o, passing) = agent
                    .autonomous_task(&p.detection, password.as_deref())
                    .await;
                let o = agent.retry_if_passing(&p.event_id, &p.detection, p.attempts, o, passing);
                agent.report_outcome(&p.detection.detection_id, &o);
            });
        }
    }

    /// Creates (or joins) the autonomous IOC scan task on the server as the special
    /// account. Says too whether a failure may pass (the server unreachable or busy, or
    /// refusing this address for a while), so that asking again later can succeed.
    async fn autonomous_task(
        &self,
        record: &DetectionRecord,
        password: Option<&str>,
    ) -> (crate::response::Outcome, bool) {
        let failed = |detail: String| crate::response::Outcome {
            action: "group_ioc_scan".into(),
            outcome: "failed".into(),
            detail,
        };
        let fail = |detail: String| (failed(detail), false);
        let Some(password) = password else {
            return fail("no special account password in this device's settings".into());
        };
        let identity = self.identity();
        let client = match crate::identity::pinned_http_client(
            &identity.ca_pem,
            std::time::Duration::from_secs(30),
        ) {
            Ok(c) => c,
            Err(e) => return fail(e.to_string()),
        };
        let body = serde_json::json!({ "device_id": identity.device_id, "detection": record });
        let resp = client
            .post(format!("{}/api/v1/autonomous-tasks", identity.server_url))
            .basic_auth(
                riposte_model::accounts::SPECIAL_ACCOUNT_NAME,
                Some(password),
            )
            .json(&body)
            .send()
            .await;
        match resp {
            Err(e) => (
                failed(format!("cannot reach the administration server: {e}")),
                true,
            ),
            Ok(r) => {
                let status = r.status();
                let v: serde_json::Value = r.json().await.unwrap_or_default();
                if status.is_success() {
                    let done = crate::response::Outcome {
                        action: "group_ioc_scan".into(),
                        outcome: "done".into(),
                        detail: format!(
                            "autonomous IOC scan task {} for group {}{}",
                            v["task_id"],
                            // By name where the server says it (a group may be named
                            // with digits, which would read as another's id).
                            match v["group"].as_str().filter(|g| !g.is_empty()) {
                                Some(name) => format!("'{name}'"),
                                None => format!("id {}", v["group_id"]),
                            },
                            if v["deduplicated"] == true {
                                " (already created for this object)"
                            } else {
                                ""
                            }
                        ),
                    };
                    (done, false)
                } else {
                    let passing = status.as_u16() == 429 || status.is_server_error();
                    (
                        failed(format!(
                            "the server refused the autonomous task: {}",
                            v["error"].as_str().unwrap_or("no reason given")
                        )),
                        passing,
                    )
                }
            }
        }
    }

    /// Acts on a task's hits as the task says (quarantine and delete, EPP scan). Not on
    /// more hits than a device reports ([`crate::scanner::MAX_REPORTED_HITS`]): an
    /// indicator that broad is refused here rather than half-applied.
    async fn act_on_hits(
        &self,
        actions: &[riposte_model::TaskAction],
        mut update: TaskUpdate,
    ) -> TaskUpdate {
        let Ok(local) = self.local().cloned() else {
            return update;
        };
        if update.state != DeviceTaskState::Completed {
            return update;
        }
        // What this task quarantined before a stop of the agent: the sweep run again at
        // start no longer finds those objects, but the task did take them.
        let detection_id = format!("task-{}", update.task_id);
        let earlier: Vec<riposte_quarantine::QuarantineRecord> =
            if actions.contains(&riposte_model::TaskAction::QuarantineAndDelete) {
                local
                    .quarantine_list()
                    .map(|l| l.entries)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|e| e.detection_id == detection_id)
                    .collect()
            } else {
                Vec::new()
            };
        if update.hits == 0 && earlier.is_empty() {
            return update;
        }
        if update.results["hits_truncated"] == true {
            let detail = format!(
                "not done: the scan hit {} objects, more than the {} a task acts on; review the indicators",
                update.hits,
                crate::scanner::MAX_REPORTED_HITS
            );
            update.results["actions"] = serde_json::Value::Array(
                actions
                    .iter()
                    .map(|a| serde_json::json!({"action": a, "outcome": "skipped", "detail": detail}))
                    .collect(),
            );
            return update;
        }
        let files = crate::scanner::hit_file_identities(&update.results);
        let mut outcomes = Vec::new();
        for action in actions {
            match action {
                riposte_model::TaskAction::QuarantineAndDelete => {
                    for (f, identity) in &files {
                        // Only the object the sweep judged may go, not whatever is at
                        // the path by now.
                        let Some(identity) = *identity else {
                            outcomes.push(serde_json::json!({"action": "quarantine_and_delete", "path": f, "outcome": "failed", "detail": "not quarantined: the sweep could not read the file to identify it"}));
                            continue;
                        };
                        // An administrator restored this content here: their decision
                        // stands until they withdraw it.
                        if self.allowed.contains(&hex::encode(identity.sha256)) {
                            outcomes.push(serde_json::json!({"action": "quarantine_and_delete", "path": f, "outcome": "skipped", "detail": ALLOWED_HERE}));
                            continue;
                        }
                        let l = local.clone();
                        let path = f.clone();
                        let id = detection_id.clone();
                        let res = tokio::task::spawn_blocking(move || {
                            l.quarantine(&path, &id, "IOC scan hit", "", Some(identity))
                        })
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|x| x);
                        match res {
                            Ok(q) => {
                                self.report(EventBody::Quarantine {
                                    entry_id: q.id.clone(),
                                    state: "quarantined".into(),
                                    record: serde_json::to_value(&q).unwrap_or_default(),
                                });
                                outcomes.push(serde_json::json!({"action": "quarantine_and_delete", "path": f, "outcome": "done", "entry_id": q.id}));
                            }
                            Err(e) => outcomes.push(serde_json::json!({"action": "quarantine_and_delete", "path": f, "outcome": "failed", "detail": e})),
                        }
                    }
                    for q in &earlier {
                        outcomes.push(serde_json::json!({
                            "action": "quarantine_and_delete",
                            "path": riposte_model::path_text::encode(q.original_path.as_os_str()),
                            "outcome": "done",
                            "entry_id": q.id,
                            "detail": "quarantined before the agent restarted and ran the task again",
                        }));
                    }
                }
                riposte_model::TaskAction::EppCriticalAreasScan => {
                    let l = local.clone();
                    if let Ok(o) =
                        tokio::task::spawn_blocking(move || l.critical_areas_scan()).await
                    {
                        outcomes.push(serde_json::json!({"action": o.action, "outcome": o.outcome, "detail": o.detail}));
                    }
                }
            }
        }
        update.results["actions"] = serde_json::Value::Array(outcomes);
        update
    }

    /// Restarts tasks that were running when the agent stopped.
    pub fn resume_tasks(self: &Arc<Self>) {
        let pending: Vec<TaskOffer> = self
            .snapshot()
            .tasks
            .values()
            .filter(|t| !t.state.is_final())
            .map(|t| t.offer.clone())
            .collect();
        for offer in pending {
            self.start_task(offer);
        }
    }
}

/// The current time in Unix milliseconds.
/// The actions on hits a device takes, and those it declines with why.
type GroupActionsAllowed = (
    Vec<riposte_model::TaskAction>,
    Vec<(riposte_model::TaskAction, String)>,
);

/// What this device does of an autonomous task asking for `asked` (actions on hits),
/// by its own effective `settings`: the actions it takes, and those it declines with
/// why; or why it does not run the task at all (its settings do not select the group
/// IOC scan).
fn group_actions_allowed(
    settings: &riposte_model::EffectiveSettings,
    asked: &[riposte_model::TaskAction],
) -> Result<GroupActionsAllowed, String> {
    use riposte_model::{Action, TaskAction};
    let tr = &settings.threat_response;
    let from = tr.provenance.describe();
    if !tr.value.enabled || !tr.value.actions.contains(&Action::GroupIocScan) {
        return Err(format!(
            "not run on this device: its Threat Response settings (from {from}) do not \
             select the group IOC scan"
        ));
    }
    let mut take = Vec::new();
    let mut decline = Vec::new();
    for a in asked {
        let needs = match a {
            TaskAction::QuarantineAndDelete => Action::GroupIocQuarantineAndDelete,
            TaskAction::EppCriticalAreasScan => Action::GroupIocEppCriticalAreasScan,
        };
        if tr.value.actions.contains(&needs) {
            take.push(*a);
        } else {
            decline.push((
                *a,
                format!(
                    "not done on this device: its Threat Response settings (from {from}) do \
                     not select {}",
                    needs.as_str()
                ),
            ));
        }
    }
    Ok((take, decline))
}

/// Ends the journal entry of a restore or deletion of quarantine entry `id`
/// (`AgentState::quarantine_changes`), once its outcome's event is queued or it failed.
fn end_quarantine_change(s: &mut AgentState, id: &str) {
    s.quarantine_changes.remove(id);
    s.restores_of_allowed_content.remove(id);
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Adapts the agent to the link.
struct Handler(Arc<Agent>);

impl LinkHandler for Handler {
    fn last_applied(&self) -> u64 {
        self.0.snapshot().last_applied
    }

    async fn apply(&self, seq: u64, delivery: Delivery) {
        let agent = &self.0;
        match delivery {
            Delivery::Settings {
                settings,
                response_group,
                special_password,
            } => {
                agent.update(|s| {
                    s.settings = Some(settings);
                    s.response_group = Some(response_group);
                    s.special_password = special_password;
                    s.last_applied = seq;
                });
                agent.settings_changed.notify_waiters();
            }
            Delivery::TaskOffer(offer) => {
                let is_new = agent.update(|s| {
                    s.last_applied = seq;
                    if s.tasks.contains_key(&offer.task_id) {
                        return false;
                    }
                    s.tasks.insert(
                        offer.task_id,
                        TaskRecord {
                            offer: offer.clone(),
                            state: DeviceTaskState::Delivered,
                            last_update: None,
                        },
                    );
                    true
                });
                if is_new {
                    agent.start_task(offer);
                }
            }
            // A command counts as applied only once it has run, in the same saved
            // update as its outcome: a crash before that has the server deliver it
            // again, and running it twice is harmless (an entry already restored or
            // deleted is reported as missing).
            Delivery::Quarantine(cmd) => {
                if agent.finished_before_this_start(&cmd) {
                    // Its outcome was reported when the change was settled at start.
                    tracing::info!(
                        "the {} of quarantine entry {} finished before this start; \
                         nothing to do again",
                        cmd.action,
                        cmd.entry_id
                    );
                    agent.update(|s| {
                        s.last_applied = seq;
                        end_quarantine_change(s, &cmd.entry_id);
                    });
                    return;
                }
                let runner = agent.clone();
                let (action, entry) = (cmd.action.clone(), cmd.entry_id.clone());
                let ran =
                    tokio::task::spawn_blocking(move || runner.run_quarantine_command(&cmd, seq))
                        .await;
                if let Err(e) = ran {
                    agent.report_with(
                        EventBody::Alert {
                            code: "quarantine_command_failed".into(),
                            message: format!("{action} of quarantine entry {entry} crashed: {e}"),
                        },
                        |s, _| {
                            s.last_applied = seq;
                            end_quarantine_change(s, &entry);
                        },
                    );
                }
            }
            Delivery::WithdrawAllowance { sha256 } => {
                let runner = agent.clone();
                let hash = sha256.clone();
                let withdrawn = tokio::task::spawn_blocking(move || {
                    runner.withdraw_allowance(&hash, |_, event| {
                        runner.report_with(event, |s, _| s.last_applied = seq);
                    })
                })
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r);
                if let Err(e) = withdrawn {
                    agent.report_with(
                        EventBody::Alert {
                            code: "withdraw_allowance_failed".into(),
                            message: format!(
                                "the allowance of {sha256} could not be withdrawn: {e}"
                            ),
                        },
                        |s, _| s.last_applied = seq,
                    );
                }
            }
            Delivery::TaskCancel { task_id } => {
                if let Some(c) = agent
                    .cancels
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&task_id)
                {
                    let _ = c.send(true);
                }
                agent.update(|s| {
                    if let Some(t) = s.tasks.get_mut(&task_id) {
                        if !t.state.is_final() {
                            t.state = DeviceTaskState::Cancelled;
                        }
                    }
                    s.last_applied = seq;
                });
            }
        }
    }

    fn resend_on_connect(&self) -> Vec<AgentToServer> {
        let s = self.0.snapshot();
        let mut out: Vec<AgentToServer> = s.outbox.into_iter().map(AgentToServer::Event).collect();
        out.extend(
            s.tasks
                .values()
                .filter_map(|t| t.last_update.clone())
                .map(AgentToServer::TaskUpdate),
        );
        out
    }

    fn event_acked(&self, event_id: &str) {
        let group_action_waits = self.0.update(|s| {
            s.outbox.retain(|e| e.event_id != event_id);
            s.pending_group_actions
                .iter()
                .any(|p| p.event_id == event_id)
        });
        self.0.event_acked.notify_waiters();
        if group_action_waits {
            self.0.run_acknowledged_group_actions();
        }
    }

    fn link_state(&self, up: bool, note: &str) {
        self.0.update(|s| {
            s.connected = up;
            s.last_link_note = note.to_string();
        });
    }

    fn welcomed(&self, features: &[String]) {
        let agent = &self.0;
        if let Err(e) = agent.store_identity_in_use() {
            tracing::warn!("cannot store the device certificate in use yet: {e}");
        }
        let takes_allowances = features
            .iter()
            .any(|f| f == riposte_proto::FEATURE_ALLOWANCE_EVENTS);
        if !takes_allowances {
            // An older server cannot read these frames: they would break the link at
            // every reconnection.
            agent.update(|s| {
                s.outbox
                    .retain(|e| !matches!(e.body, EventBody::Allowance { .. }))
            });
            return;
        }
        if !agent
            .allowances_reported
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            // Listed and queued under the allowance lock: a withdrawal meanwhile queues
            // its event after these, not before one that would undo it on the server.
            let _changing = agent
                .allowance_changes
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for sha256 in agent.allowed.list() {
                agent.report(EventBody::Allowance {
                    sha256,
                    allowed: true,
                });
            }
        }
    }

    fn renewal(&self, step: crate::link::Renewal<'_>) -> Result<(), String> {
        use crate::link::Renewal;
        use std::sync::atomic::Ordering;
        let agent = &self.0;
        match step {
            // `renewal.json` may hold the pair in use: not replaced before that pair is
            // stored as the device's.
            Renewal::Issued(renewed) => agent
                .store_identity_in_use()
                .and_then(|()| renewed.save_pending_renewal(&agent.data_dir)),
            Renewal::Accepted(renewed) => {
                // In use from now on, whether or not it can be stored yet (the pending
                // file stays until it is).
                *agent.identity.write().unwrap_or_else(|e| e.into_inner()) = renewed.clone();
                // The sandbox integration presents the device certificate too.
                agent.settings_changed.notify_waiters();
                let stored = renewed.commit_renewal(&agent.data_dir);
                agent
                    .identity_unsaved
                    .store(stored.is_err(), Ordering::SeqCst);
                stored
            }
            Renewal::Discarded => agent
                .store_identity_in_use()
                .and_then(|()| Identity::discard_pending_renewal(&agent.data_dir)),
        }
        .map_err(|e| e.to_string())
    }
}

/// Runs the agent daemon (link and control socket) until `stop` turns true.
pub async fn run(
    agent: Arc<Agent>,
    rx: mpsc::UnboundedReceiver<AgentToServer>,
    stop: watch::Receiver<bool>,
) {
    agent.resume_tasks();
    // Group actions whose detections were acknowledged just before a stop.
    agent.run_acknowledged_group_actions();
    // Responses a stop interrupted.
    tokio::spawn({
        let agent = agent.clone();
        async move { agent.resume_responses().await }
    });
    // Group actions asked again after a passing refusal, when their time comes.
    tokio::spawn({
        let (agent, mut stop) = (agent.clone(), stop.clone());
        async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_secs(15)) => {}
                    _ = stop.changed() => {}
                }
                if *stop.borrow() {
                    return;
                }
                agent.run_acknowledged_group_actions();
            }
        }
    });
    let control = tokio::spawn(crate::control::serve(agent.clone(), stop.clone()));
    let sandboxing = tokio::spawn(crate::sandboxing::run(agent.clone(), stop.clone()));
    let h = Arc::new(Handler(agent.clone()));
    let hostname = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let identity = agent.identity();
    let pending = identity.pending_renewal(&agent.data_dir);
    link::run(identity, pending, hostname, h, rx, stop).await;
    let _ = sandboxing.await;
    match control.await {
        Ok(Err(e)) => tracing::error!("control socket: {e}"),
        Err(e) => tracing::error!("control socket task: {e}"),
        Ok(Ok(())) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_too_large_for_the_channel_give_way_to_a_note() {
        let mut update = TaskUpdate {
            task_id: 3,
            state: DeviceTaskState::Completed,
            hits: 9,
            reason: None,
            results: serde_json::json!({"hits": vec!["x".repeat(100); 50]}),
        };
        let small = update.clone();
        fit_results(&mut update, 100_000);
        assert_eq!(update.results, small.results, "under the limit: unchanged");
        fit_results(&mut update, 1000);
        assert_eq!(update.state, DeviceTaskState::Completed);
        assert_eq!(update.hits, 9);
        assert_eq!(update.results["hits_total"], 9);
        let note = update.results["error"].as_str().unwrap();
        assert!(
            note.contains("over the 1000 bytes a device sends"),
            "{note}"
        );
    }
    use crate::scanner::SweepRunner;
    use std::path::{Path, PathBuf};

    /// An agent over `data` whose local actions work on the device under `root`.
    /// An enrolled-looking identity in `data`, for a server nobody listens on.
    fn save_test_identity(data: &Path) {
        Identity {
            device_id: 1,
            server_url: "https://127.0.0.1:9".into(),
            channel_addr: "127.0.0.1:10".into(),
            ca_pem: String::new(),
            cert_pem: String::new(),
            key_pem: "not a key".into(),
        }
        .save(data)
        .unwrap();
    }

    fn open_agent(root: &Path, data: &Path) -> Arc<Agent> {
        save_test_identity(data);
        let (local, _) = crate::response::LocalActions::open(data, root, None).unwrap();
        let runner = Arc::new(SweepRunner::new(root.to_path_buf()));
        Agent::open(data.to_path_buf(), runner, Some(Arc::new(local)))
            .unwrap()
            .0
    }

    fn name_ioc(contains: &str) -> riposte_proto::IocDocument {
        riposte_proto::IocDocument {
            format: "openioc".into(),
            name: "n.ioc".into(),
            content: format!(
                r#"<OpenIOC xmlns="http://openioc.org/schemas/OpenIOC_1.1" id="n" last-modified="2020-01-01T00:00:00Z" published-date="2020-01-01T00:00:00Z"><metadata><short_description>n</short_description><authored_date>2020-01-01T00:00:00Z</authored_date></metadata><criteria><Indicator operator="OR" id="o"><IndicatorItem id="i" condition="contains" preserve-case="false" negate="false"><Context document="FileItem" search="FileItem/FileName" type="mir"/><Content type="string">{contains}</Content></IndicatorItem></Indicator></criteria></OpenIOC>"#
            ),
        }
    }

    /// Sweeps the agent's host for `ioc` as task `task_id`, whose action is quarantine
    /// and delete (acted on by the caller, with `act_on_hits`).
    async fn sweep_to_quarantine(
        agent: &Agent,
        task_id: i64,
        ioc: riposte_proto::IocDocument,
    ) -> TaskUpdate {
        let runner = agent.runner.clone();
        let offer = TaskOffer {
            task_id,
            autonomous: false,
            iocs: vec![ioc],
            scope: riposte_model::ScanScope::SystemDrives,
            actions: vec![riposte_model::TaskAction::QuarantineAndDelete],
        };
        let (_cancel, rx) = watch::channel(false);
        tokio::task::spawn_blocking(move || runner.run(offer, rx, &|_| {}))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_hit_replaced_after_the_sweep_is_not_deleted() {
        let t = tempfile::tempdir().unwrap();
        let (root, data) = (t.path().join("root"), t.path().join("data"));
        let dir = root.join("home/u");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("evil-kept"), b"payload one").unwrap();
        std::fs::write(dir.join("evil-swapped"), b"payload two").unwrap();
        let agent = open_agent(&root, &data);
        let swept = sweep_to_quarantine(&agent, 9, name_ioc("evil-")).await;
        assert_eq!(swept.hits, 2, "{swept:?}");
        // Between the sweep and the action the path gets another inode and content.
        std::fs::write(dir.join("tmp"), b"an innocent file").unwrap();
        std::fs::rename(dir.join("tmp"), dir.join("evil-swapped")).unwrap();

        let done = agent
            .act_on_hits(&[riposte_model::TaskAction::QuarantineAndDelete], swept)
            .await;
        assert!(
            !dir.join("evil-kept").exists(),
            "the unchanged hit is removed"
        );
        assert_eq!(
            std::fs::read(dir.join("evil-swapped")).unwrap(),
            b"an innocent file",
            "the replacement is not deleted"
        );
        let outcome = |path: &str| {
            done.results["actions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|o| o["path"] == path)
                .map(|o| o["outcome"].clone())
        };
        assert_eq!(outcome("/home/u/evil-kept"), Some("done".into()));
        assert_eq!(outcome("/home/u/evil-swapped"), Some("failed".into()));
        let entries = agent.local().unwrap().quarantine_list().unwrap().entries;
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].original_path, Path::new("/home/u/evil-kept"));
    }

    /// A task the agent's stop interrupted after it had quarantined an object runs again
    /// at start; that sweep no longer finds the object, but the task's outcome still
    /// lists it (it listed nothing before).
    #[tokio::test]
    async fn a_task_run_again_after_a_stop_reports_what_it_quarantined_before() {
        let t = tempfile::tempdir().unwrap();
        let (root, data) = (t.path().join("root"), t.path().join("data"));
        let dir = root.join("home/u");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("evil-one"), b"payload").unwrap();
        let agent = open_agent(&root, &data);
        let action = [riposte_model::TaskAction::QuarantineAndDelete];
        // The first run: its sweep, its quarantine, then the stop.
        assert_eq!(
            sweep_to_quarantine(&agent, 12, name_ioc("evil-"))
                .await
                .hits,
            1
        );
        let entry = agent
            .local()
            .unwrap()
            .quarantine("/home/u/evil-one", "task-12", "IOC scan hit", "", None)
            .unwrap();
        // The run at start.
        let again = sweep_to_quarantine(&agent, 12, name_ioc("evil-")).await;
        assert_eq!(again.hits, 0);
        let done = agent.act_on_hits(&action, again).await;
        let actions = done.results["actions"].as_array().unwrap();
        assert_eq!(actions.len(), 1, "{actions:?}");
        assert_eq!(actions[0]["outcome"], "done");
        assert_eq!(actions[0]["entry_id"], entry.id.as_str());
        assert_eq!(actions[0]["path"], "/home/u/evil-one");
        // Another task takes no credit for it.
        let other = sweep_to_quarantine(&agent, 13, name_ioc("evil-")).await;
        let done = agent.act_on_hits(&action, other).await;
        assert!(done.results["actions"].is_null(), "{:?}", done.results);
    }

    /// Content an administrator restored is allowed on this device: an IOC task's hit on
    /// it and a reported detection of it leave it in place until the allowance is
    /// withdrawn.
    #[tokio::test]
    async fn allowed_content_is_left_alone_until_the_allowance_is_withdrawn() {
        let t = tempfile::tempdir().unwrap();
        let (root, data) = (t.path().join("root"), t.path().join("data"));
        let dir = root.join("home/u");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("evil-tool"), b"a false positive").unwrap();
        let agent = open_agent(&root, &data);
        let entry = agent
            .local()
            .unwrap()
            .quarantine("/home/u/evil-tool", "det", "T", "u", None)
            .unwrap();
        agent.quarantine_restore(&entry.id, None, None).unwrap();
        assert_eq!(agent.allowed.list(), vec![entry.sha256.clone()]);

        let sweep = || sweep_to_quarantine(&agent, 11, name_ioc("evil-"));
        let action = [riposte_model::TaskAction::QuarantineAndDelete];
        let done = agent.act_on_hits(&action, sweep().await).await;
        assert_eq!(done.hits, 1);
        assert_eq!(done.results["actions"][0]["outcome"], "skipped");
        assert!(done.results["actions"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("allowed withdraw"));
        assert!(dir.join("evil-tool").exists(), "left in place");
        let report = external_report("/home/u/evil-tool", &entry.sha256);
        let err = agent.respond(report.clone()).await.unwrap_err();
        assert!(err.contains("allows it"), "{err}");
        assert!(dir.join("evil-tool").exists(), "left in place");

        assert!(agent.allowed.revoke(&entry.sha256).unwrap());
        let done = agent.act_on_hits(&action, sweep().await).await;
        assert_eq!(done.results["actions"][0]["outcome"], "done");
        assert!(
            !dir.join("evil-tool").exists(),
            "quarantined once withdrawn"
        );
    }

    /// The user's notification does not wait for the group request, which waits up to
    /// GROUP_ACTION_ACK_WAIT for a server that has not yet acknowledged the detection
    /// (here none ever does).
    #[tokio::test(start_paused = true)]
    async fn the_notification_does_not_wait_for_the_group_request() {
        let t = tempfile::tempdir().unwrap();
        let (root, data) = (t.path().join("root"), t.path().join("data"));
        std::fs::create_dir_all(root.join("home/u")).unwrap();
        std::fs::write(root.join("home/u/evil"), b"evil payload").unwrap();
        let agent = open_agent(&root, &data);
        let mut settings = watching_settings();
        settings.threat_response.value.actions = [
            riposte_model::Action::QuarantineAndDelete,
            riposte_model::Action::NotifyUser,
            riposte_model::Action::GroupIocScan,
        ]
        .into_iter()
        .collect();
        agent.update(|s| s.settings = Some(settings));
        let started = tokio::time::Instant::now();
        let v = agent
            .respond(external_report(
                "/home/u/evil",
                &sha256_hex(b"evil payload"),
            ))
            .await
            .unwrap();
        let outcomes: Vec<(&str, &str)> = v["outcomes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                (
                    o["action"].as_str().unwrap(),
                    o["outcome"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            outcomes,
            [
                ("quarantine_and_delete", "done"),
                ("group_ioc_scan", "pending"),
                ("notify_user", "not_shown"),
            ],
            "{v}"
        );
        assert!(
            started.elapsed() >= GROUP_ACTION_ACK_WAIT,
            "the group request waited"
        );
        // Reported as they came: the notification's outcome before the group request's.
        let reported: Vec<String> = agent
            .snapshot()
            .outbox
            .iter()
            .filter_map(|e| match &e.body {
                EventBody::ActionOutcome { action, .. } => Some(action.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(
            reported,
            ["quarantine_and_delete", "notify_user", "group_ioc_scan"],
            "{reported:?}"
        );
    }

    /// A quarantined file with other names (hard links): the outcome says that they
    /// still hold its content.
    #[tokio::test]
    async fn a_quarantine_says_when_other_names_still_hold_the_content() {
        let t = tempfile::tempdir().unwrap();
        let (root, data) = (t.path().join("root"), t.path().join("data"));
        std::fs::create_dir_all(root.join("home/u")).unwrap();
        std::fs::write(root.join("home/u/linked"), b"linked payload").unwrap();
        std::fs::hard_link(root.join("home/u/linked"), root.join("home/u/other-name")).unwrap();
        std::fs::write(root.join("home/u/single"), b"single payload").unwrap();
        let agent = open_agent(&root, &data);
        agent.update(|s| s.settings = Some(watching_settings()));
        let report = |name: &str, content: &[u8]| {
            external_report(&format!("/home//u/{name}"), &sha256_hex(content))
        };
        let v = agent
            .respond(report("linked", b"linked payload"))
            .await
            .unwrap();
        assert_eq!(v["outcomes"][0]["outcome"], "done", "{v}");
        assert!(
            v["outcomes"][0]["detail"]
                .as_str()
                .unwrap()
                .contains("1 other name(s) (hard links)"),
            "{v}"
        );
        assert!(root.join("home/u/other-name").exists());
        let v = agent
            .respond(report("./single", b"single payload"))
            .await
            .unwrap();
        // A path typed with `.` and doubled `/` is recorded as the sweep names it.
        assert_eq!(v["detection"]["path"], "/home/u/single", "{v}");
        assert_eq!(v["outcomes"][0]["outcome"], "done", "{v}");
        assert!(
            !v["outcomes"][0]["detail"]
                .as_str()
                .unwrap()
                .contains("other name"),
            "{v}"
        );
    }

    /// An object the sandbox judged malicious but which was renamed (or moved, or
    /// changed) before the response: nothing is done at its old path, but the detection
    /// is recorded with what the watcher read of it, so that the server knows the threat
    /// and the group sweep (this device's too) finds the object by its hashes. Reported by
    /// hand (no watcher's reading), such a path is still only an error.
    #[tokio::test]
    async fn an_object_moved_after_its_verdict_is_still_recorded() {
        let t = tempfile::tempdir().unwrap();
        let (root, data) = (t.path().join("root"), t.path().join("data"));
        std::fs::create_dir_all(root.join("watched")).unwrap();
        let agent = open_agent(&root, &data);
        agent.update(|s| s.settings = Some(watching_settings()));
        let mut input = crate::response::DetectionInput {
            path: "/watched/setup.exe.crdownload".into(),
            sha256: "ab".repeat(32),
            threat: "Trojan.X\r\x1b]0;pwned\x07".into(),
            user: "u".into(),
            user_uid: Some(1000),
            source: "riposte-sandbox".into(),
            source_ref: None,
            dropped_sha256: Vec::new(),
            seen: None,
        };
        let err = agent.respond(input.clone()).await.unwrap_err();
        assert!(err.contains("does not exist"), "{err}");
        assert!(
            agent.read(|s| s.outbox.is_empty()),
            "nothing recorded by hand"
        );

        input.seen = Some(crate::response::SeenObject {
            size: 68,
            md5: "CD".repeat(16),
            sha1: "ef".repeat(20),
        });
        let v = agent.respond(input).await.unwrap();
        assert_eq!(v["detection"]["sha256"], "ab".repeat(32), "{v}");
        assert_eq!(v["detection"]["size"], 68, "{v}");
        assert_eq!(v["detection"]["md5"], "cd".repeat(16), "{v}");
        // A name from a sandbox's report is escaped as paths are: no terminal escapes.
        assert_eq!(
            v["detection"]["threat"], "Trojan.X\\x0d\\x1b]0;pwned\\x07",
            "{v}"
        );
        assert_eq!(v["outcomes"][0]["action"], "quarantine_and_delete", "{v}");
        assert_eq!(v["outcomes"][0]["outcome"], "failed", "{v}");
        assert!(
            v["outcomes"][0]["detail"]
                .as_str()
                .unwrap()
                .contains("moved or changed after it was judged"),
            "{v}"
        );
        let recorded = agent.read(|s| {
            s.outbox
                .iter()
                .filter(|e| matches!(e.body, EventBody::Detection(_)))
                .count()
        });
        assert_eq!(recorded, 1, "the detection is on its way to the server");
        assert!(
            agent.read(|s| s.pending_responses.is_empty()),
            "journal emptied"
        );
    }

    /// An agent under `dir` (device at `dir/root`) with `/home/u/evil` in quarantine.
    fn agent_with_evil_quarantined(
        dir: &Path,
    ) -> (
        std::path::PathBuf,
        Arc<Agent>,
        riposte_quarantine::QuarantineRecord,
    ) {
        let (root, data) = (dir.join("root"), dir.join("data"));
        std::fs::create_dir_all(root.join("home/u")).unwrap();
        std::fs::write(root.join("home/u/evil"), b"payload").unwrap();
        let agent = open_agent(&root, &data);
        let entry = agent
            .local()
            .unwrap()
            .quarantine("/home/u/evil", "det", "T", "u", None)
            .unwrap();
        (root, agent, entry)
    }

    /// [`agent_with_evil_quarantined`], with the entry then restored (its content
    /// allowed) and the restore's event queued.
    fn agent_with_evil_restored(dir: &Path) -> (Arc<Agent>, riposte_quarantine::QuarantineRecord) {
        let (_, agent, entry) = agent_with_evil_quarantined(dir);
        agent
            .restore_entry(&entry.id, None, None, |event| {
                agent.report(event);
            })
            .unwrap();
        (agent, entry)
    }

    /// Without local actions (a lost quarantine key), the server is told at once and a
    /// response says why it could not act.
    #[tokio::test]
    async fn without_local_actions_the_server_is_told_and_responses_say_why() {
        let t = tempfile::tempdir().unwrap();
        let data = t.path().join("data");
        save_test_identity(&data);
        let runner = Arc::new(SweepRunner::new(t.path().to_path_buf()));
        let (agent, _rx) = Agent::open(data.clone(), runner, None).unwrap();
        agent.run_without_local_actions("quarantine key missing".into());
        let alerted = agent.read(|s| {
            s.outbox.iter().any(|e| {
                matches!(&e.body, EventBody::Alert { code, message }
                    if code == "local_actions_unavailable" && message.contains("quarantine key missing"))
            })
        });
        assert!(alerted);
        let e = agent
            .respond(external_report("/home/u/evil", &"0".repeat(64)))
            .await
            .unwrap_err();
        assert!(e.contains("not available: quarantine key missing"), "{e}");
    }

    /// An entry whose record is damaged can be deleted (nothing else can be done with
    /// it), and the deletion is reported without the record it lost.
    #[tokio::test]
    async fn a_damaged_entry_can_be_deleted() {
        let t = tempfile::tempdir().unwrap();
        let (_, agent, entry) = agent_with_evil_quarantined(t.path());
        let data = t.path().join("data");
        let record = data
            .join("quarantine/records")
            .join(format!("{}.json", entry.id));
        std::fs::write(&record, b"{\"format\": 1, \"id\": ").unwrap();
        // A deletion of it cut short by a stop is not taken for done: it is still there.
        agent.update(|s| {
            s.quarantine_changes.insert(
                entry.id.clone(),
                crate::state::QuarantineChange {
                    action: "delete".into(),
                    record: serde_json::Value::Null,
                },
            );
        });
        agent.settle_interrupted_quarantine_changes(&[]);
        let said = agent.read(|s| {
            s.outbox
                .iter()
                .filter_map(|e| match &e.body {
                    EventBody::Alert { message, .. } => Some(message.clone()),
                    EventBody::Quarantine { state, .. } => Some(format!("quarantine {state}")),
                    _ => None,
                })
                .collect::<Vec<_>>()
        });
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(said[0].contains("still in quarantine"), "{said:?}");
        agent.quarantine_delete(&entry.id).unwrap();
        assert!(!record.exists());
        assert!(!data
            .join("quarantine/objects")
            .join(format!("{}.obj", entry.id))
            .exists());
        let reported = agent.read(|s| {
            s.outbox.iter().any(|e| {
                matches!(&e.body, EventBody::Quarantine { entry_id, state, record }
                    if *entry_id == entry.id && state == "deleted" && record.is_null())
            })
        });
        assert!(reported);
        assert!(agent.quarantine_delete(&entry.id).is_err(), "gone");
    }

    /// A response cut short by a crash is finished when the agent starts again: before
    /// the quarantine (the object is still in place: it is quarantined now), and after it
    /// but before its outcome was reported (the entry is found and reported, not made
    /// twice). Nothing is left in the journal.
    #[tokio::test]
    async fn a_response_cut_short_by_a_crash_is_finished_at_start() {
        let t = tempfile::tempdir().unwrap();
        let (root, data) = (t.path().join("root"), t.path().join("data"));
        std::fs::create_dir_all(root.join("home/u")).unwrap();
        std::fs::write(root.join("home/u/before"), b"payload one").unwrap();
        std::fs::write(root.join("home/u/after"), b"payload two").unwrap();
        let agent = open_agent(&root, &data);
        agent.update(|s| s.settings = Some(watching_settings()));
        let local = agent.local().unwrap().clone();
        let journal = |name: &str| {
            let input = external_report(
                &format!("/home/u/{name}"),
                &sha256_hex(&std::fs::read(root.join("home/u").join(name)).unwrap()),
            );
            let (record, _) = local.examine(&input).unwrap();
            agent.update(|s| {
                s.pending_responses.push(crate::state::PendingResponse {
                    event_id: format!("event-{name}"),
                    detection: record.clone(),
                    done: Vec::new(),
                })
            });
            record
        };
        let before = journal("before");
        let after = journal("after");
        // `after` was quarantined before the crash; its outcome was never reported.
        local
            .quarantine("/home/u/after", &after.detection_id, "T", "u", None)
            .unwrap();

        agent.resume_responses().await;
        assert!(!root.join("home/u/before").exists(), "quarantined at start");
        let entries = local.quarantine_list().unwrap().entries;
        assert_eq!(entries.len(), 2, "one entry each, none made twice");
        for r in [&before, &after] {
            assert!(entries.iter().any(|e| e.detection_id == r.detection_id));
        }
        let done: Vec<String> = agent.read(|s| {
            s.outbox
                .iter()
                .filter_map(|e| match &e.body {
                    EventBody::ActionOutcome {
                        detection_id,
                        action,
                        outcome,
                        ..
                    } if action == "quarantine_and_delete" && outcome == "done" => {
                        Some(detection_id.clone())
                    }
                    _ => None,
                })
                .collect()
        });
        assert_eq!(done.len(), 2, "{done:?}");
        assert!(agent.read(|s| s.pending_responses.is_empty()));

        // A quarantine that recovery finished without deleting the original (another
        // file is at the path now) is reported failed, as it would have been.
        std::fs::write(root.join("home/u/kept"), b"payload three").unwrap();
        let kept = journal("kept");
        let entry = local
            .quarantine("/home/u/kept", &kept.detection_id, "T", "u", None)
            .unwrap();
        agent.note_originals_kept(&[(
            entry.id.clone(),
            "\"/home/u/kept\" changed since it was inspected".into(),
        )]);
        agent.resume_responses().await;
        let outcome = agent.read(|s| {
            s.outbox.iter().rev().find_map(|e| match &e.body {
                EventBody::ActionOutcome {
                    detection_id,
                    action,
                    outcome,
                    detail,
                } if *detection_id == kept.detection_id && action == "quarantine_and_delete" => {
                    Some((outcome.clone(), detail.clone()))
                }
                _ => None,
            })
        });
        let (outcome, detail) = outcome.expect("reported");
        assert_eq!(outcome, "failed", "{detail}");
        assert!(
            detail.contains(&format!(
                "quarantined a copy as entry {} but did not delete",
                entry.id
            )),
            "{detail}"
        );
    }

    /// A restore's event and a withdrawal's are queued under the allowance lock, as the
    /// allowance is changed: the server learns of them in the order they happened, and
    /// a withdrawal at the instant a restore ends cannot overtake the restore's
    /// `allowed: true`.
    #[tokio::test]
    async fn allowance_events_are_queued_as_the_allowance_changes() {
        let t = tempfile::tempdir().unwrap();
        let (_, agent, entry) = agent_with_evil_quarantined(t.path());
        let lock_held = || agent.allowance_changes.try_lock().is_err();
        let mut restore_queued_under_lock = None;
        agent
            .restore_entry(&entry.id, None, None, |event| {
                restore_queued_under_lock = Some(lock_held());
                agent.report(event);
            })
            .unwrap();
        assert_eq!(restore_queued_under_lock, Some(true));
        let mut withdrawal_queued_under_lock = None;
        let was = agent
            .withdraw_allowance(&entry.sha256, |was, event| {
                withdrawal_queued_under_lock = Some((was, lock_held()));
                agent.report(event);
            })
            .unwrap();
        assert!(was);
        assert_eq!(withdrawal_queued_under_lock, Some((true, true)));
        let told = agent.read(|s| {
            s.outbox
                .iter()
                .filter_map(|e| match &e.body {
                    EventBody::Quarantine { state, record, .. } if state == "restored" => {
                        Some(record["allowed"] == true)
                    }
                    EventBody::Allowance { allowed, .. } => Some(*allowed),
                    _ => None,
                })
                .collect::<Vec<_>>()
        });
        assert_eq!(told, [true, false]);
        assert!(agent.allowed.list().is_empty());
    }

    /// A withdrawal the server delivers counts as applied in the same save as the event
    /// that tells the server it was done: a crash can leave neither or both, so the
    /// server never hears of a withdrawal the device would be sent again, nor has a
    /// delivery skipped whose withdrawal it never heard of. One that fails is applied
    /// with an alert saying why.
    #[tokio::test]
    async fn a_delivered_withdrawal_is_applied_with_its_event() {
        use crate::link::LinkHandler;
        let t = tempfile::tempdir().unwrap();
        let (agent, entry) = agent_with_evil_restored(t.path());
        assert_eq!(agent.allowed.list(), std::slice::from_ref(&entry.sha256));
        let handler = Handler(agent.clone());
        handler
            .apply(
                41,
                Delivery::WithdrawAllowance {
                    sha256: entry.sha256.to_ascii_uppercase(),
                },
            )
            .await;
        assert!(agent.allowed.list().is_empty());
        let on_disk = StateFile::new(&t.path().join("data")).load().unwrap();
        assert_eq!(on_disk.last_applied, 41);
        assert!(
            on_disk.outbox.iter().any(|e| matches!(
                &e.body,
                EventBody::Allowance { sha256, allowed: false } if *sha256 == entry.sha256
            )),
            "{:?}",
            on_disk.outbox
        );

        // A hash the allow list refuses: applied, with an alert instead of the event.
        handler
            .apply(
                42,
                Delivery::WithdrawAllowance {
                    sha256: "not a hash".into(),
                },
            )
            .await;
        let on_disk = StateFile::new(&t.path().join("data")).load().unwrap();
        assert_eq!(on_disk.last_applied, 42);
        assert!(on_disk.outbox.iter().any(|e| matches!(
            &e.body,
            EventBody::Alert { code, .. } if code == "withdraw_allowance_failed"
        )));
    }

    /// The allow list reported when a server first welcomes the agent is listed and
    /// queued under the allowance lock: a withdrawal at that instant queues its event
    /// after the list, not before an `allowed: true` that would undo it on the server.
    #[tokio::test]
    async fn the_allow_list_reported_on_welcome_waits_for_an_allowance_change() {
        use crate::link::LinkHandler;
        let t = tempfile::tempdir().unwrap();
        let (agent, _) = agent_with_evil_restored(t.path());
        let allowances = || {
            agent.read(|s| {
                s.outbox
                    .iter()
                    .filter(|e| matches!(e.body, EventBody::Allowance { allowed: true, .. }))
                    .count()
            })
        };
        assert_eq!(allowances(), 0);
        let handler = Handler(agent.clone());
        let changing = agent.allowance_changes.lock().unwrap();
        let welcome = std::thread::spawn(move || {
            handler.welcomed(&[riposte_proto::FEATURE_ALLOWANCE_EVENTS.to_string()]);
        });
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert_eq!(
            allowances(),
            0,
            "the list was queued while an allowance changed"
        );
        drop(changing);
        welcome.join().unwrap();
        assert_eq!(allowances(), 1);
    }

    /// A restore the agent's stop interrupted and the quarantine's recovery rolled back
    /// leaves no allowance behind (it was recorded before the restore began), and an
    /// alert says so.
    #[tokio::test]
    async fn a_restore_rolled_back_after_a_crash_leaves_no_allowance() {
        let t = tempfile::tempdir().unwrap();
        let (_, agent, entry) = agent_with_evil_quarantined(t.path());
        // The state a crash leaves between the allowance and the restore.
        assert!(agent.allowed.allow(&entry.sha256).unwrap());
        agent.settle_interrupted_quarantine_changes(std::slice::from_ref(&entry.id));
        assert!(agent.allowed.list().is_empty(), "allowance withdrawn");
        let alert = agent.read(|s| {
            s.outbox.iter().find_map(|e| match &e.body {
                EventBody::Alert { code, message } if code == "restore_interrupted" => {
                    Some(message.clone())
                }
                _ => None,
            })
        });
        let alert = alert.expect("an alert about the interrupted restore");
        assert!(
            alert.contains(&entry.id) && alert.contains("no longer allowed"),
            "{alert}"
        );
        // The administrator sees it withdrawn.
        assert!(agent.read(|s| s.outbox.iter().any(|e| matches!(
            &e.body,
            EventBody::Allowance { sha256, allowed: false } if *sha256 == entry.sha256
        ))));

        // Allowed already by an earlier restore of the same content when this restore
        // began (as the agent notes before it allows): that allowance stands.
        assert!(agent.allowed.allow(&entry.sha256).unwrap());
        agent.update(|s| {
            s.restores_of_allowed_content.insert(entry.id.clone());
        });
        agent.settle_interrupted_quarantine_changes(std::slice::from_ref(&entry.id));
        assert_eq!(agent.allowed.list(), std::slice::from_ref(&entry.sha256));
        assert!(agent.read(|s| s.restores_of_allowed_content.is_empty()));
    }

    /// An autonomous task runs on a device, and acts on its hits, only as far as the
    /// device's own effective settings select group actions.
    #[test]
    fn a_device_takes_only_the_group_actions_its_own_settings_select() {
        use riposte_model::{
            Action, EffectiveSettings, EffectiveValue, Provenance, SandboxIntegration, TaskAction,
            ThreatResponse,
        };
        let settings = |enabled: bool, actions: &[Action]| EffectiveSettings {
            threat_response: EffectiveValue {
                value: ThreatResponse {
                    enabled,
                    actions: actions.iter().copied().collect(),
                    special_password: None,
                },
                provenance: Provenance::Policy {
                    group_id: 2,
                    policy: "Riposte policy (Corp)".into(),
                    locked: true,
                },
            },
            sandbox_integration: EffectiveValue {
                value: SandboxIntegration::default(),
                provenance: Provenance::Default,
            },
        };
        let asked = [
            TaskAction::QuarantineAndDelete,
            TaskAction::EppCriticalAreasScan,
        ];
        for off in [
            settings(false, &[Action::GroupIocScan]),
            settings(true, &[Action::QuarantineAndDelete]),
        ] {
            let why = group_actions_allowed(&off, &asked).unwrap_err();
            assert!(
                why.contains("Riposte policy (Corp)") && why.contains("group IOC scan"),
                "{why}"
            );
        }
        let (take, decline) = group_actions_allowed(
            &settings(
                true,
                &[Action::GroupIocScan, Action::GroupIocEppCriticalAreasScan],
            ),
            &asked,
        )
        .unwrap();
        assert_eq!(take, [TaskAction::EppCriticalAreasScan]);
        assert_eq!(decline.len(), 1);
        assert_eq!(decline[0].0, TaskAction::QuarantineAndDelete);
        assert!(
            decline[0].1.contains("group_ioc_quarantine_and_delete"),
            "{}",
            decline[0].1
        );
        let (take, decline) = group_actions_allowed(
            &settings(
                true,
                &[
                    Action::GroupIocScan,
                    Action::GroupIocQuarantineAndDelete,
                    Action::GroupIocEppCriticalAreasScan,
                ],
            ),
            &asked,
        )
        .unwrap();
        assert_eq!(take, asked);
        assert!(decline.is_empty());
    }

    /// Restores and deletions journaled when a stop cut them short are settled at start
    /// from the journal alone (the quarantine's recovery may know nothing of them): a
    /// restore stopped before its intent was written is rolled back with its allowance;
    /// one that took place, and a deletion that did, are reported to the server as if
    /// they had finished; a deletion that did not is left to do again. Each clears its
    /// journal entry.
    #[tokio::test]
    async fn quarantine_changes_a_stop_cut_short_are_settled_and_reported_at_start() {
        use crate::state::QuarantineChange;
        let t = tempfile::tempdir().unwrap();
        let (root, agent, entry) = agent_with_evil_quarantined(t.path());
        let local = agent.local().unwrap().clone();
        let journal = |action: &str, id: &str| {
            agent.update(|s| {
                s.quarantine_changes.insert(
                    id.to_string(),
                    QuarantineChange {
                        action: action.into(),
                        record: serde_json::json!({"id": id, "original_path": "/home/u/evil"}),
                    },
                );
            })
        };
        let events = |agent: &Agent| agent.read(|s| s.outbox.clone());
        // A restore stopped between its allowance and the quarantine's intent.
        journal("restore", &entry.id);
        assert!(agent.allowed.allow(&entry.sha256).unwrap());
        agent.settle_interrupted_quarantine_changes(&[]);
        assert!(agent.allowed.list().is_empty(), "allowance withdrawn");
        assert_eq!(local.quarantine_list().unwrap().entries.len(), 1);
        assert!(events(&agent).iter().any(|e| matches!(&e.body,
            EventBody::Alert { code, message } if code == "restore_interrupted" && message.contains("rolled back"))));
        assert!(agent.read(|s| s.quarantine_changes.is_empty()));

        // A restore that took place (the entry is gone) before its event was queued.
        journal("restore", &entry.id);
        agent.allowed.allow(&entry.sha256).unwrap();
        local.quarantine_restore(&entry.id, None, None).unwrap();
        assert!(root.join("home/u/evil").exists());
        let before = events(&agent).len();
        agent.settle_interrupted_quarantine_changes(&[]);
        let new = events(&agent)[before..].to_vec();
        assert!(new.iter().any(|e| matches!(&e.body,
            EventBody::Quarantine { entry_id, state, .. } if *entry_id == entry.id && state == "restored")), "{new:?}");
        assert!(new.iter().any(|e| matches!(&e.body,
            EventBody::Alert { code, message } if code == "restore_interrupted" && message.contains("finished"))));
        assert_eq!(
            agent.allowed.list(),
            std::slice::from_ref(&entry.sha256),
            "it stays allowed"
        );

        // A restore elsewhere that took place, its event lost with the stop: the server
        // is told where the object went.
        let moved = local
            .quarantine("/home/u/evil", "det3", "T", "u", None)
            .unwrap();
        let path = agent
            .restore_entry(&moved.id, Some("/home/u/evil-elsewhere"), None, |_lost| {})
            .unwrap();
        assert_eq!(path, "/home/u/evil-elsewhere");
        assert!(agent.read(|s| s.quarantine_changes.contains_key(&moved.id)));
        let before = events(&agent).len();
        agent.settle_interrupted_quarantine_changes(&[]);
        let new = events(&agent)[before..].to_vec();
        assert!(
            new.iter().any(|e| matches!(&e.body,
            EventBody::Quarantine { entry_id, state, record }
                if *entry_id == moved.id && state == "restored"
                    && record["restored_to"] == "/home/u/evil-elsewhere")),
            "{new:?}"
        );
        std::fs::rename(root.join("home/u/evil-elsewhere"), root.join("home/u/evil")).unwrap();

        // A deletion that did not happen, then one that did.
        let again = local
            .quarantine("/home/u/evil", "det2", "T", "u", None)
            .unwrap();
        journal("delete", &again.id);
        let before = events(&agent).len();
        agent.settle_interrupted_quarantine_changes(&[]);
        let new = events(&agent)[before..].to_vec();
        assert_eq!(new.len(), 1, "{new:?}");
        assert!(matches!(&new[0].body,
            EventBody::Alert { code, message } if code == "delete_interrupted" && message.contains("delete it again")));
        assert_eq!(local.quarantine_list().unwrap().entries.len(), 1);
        journal("delete", &again.id);
        local.quarantine_delete(&again.id).unwrap();
        let before = events(&agent).len();
        agent.settle_interrupted_quarantine_changes(&[]);
        let new = events(&agent)[before..].to_vec();
        assert!(new.iter().any(|e| matches!(&e.body,
            EventBody::Quarantine { entry_id, state, .. } if *entry_id == again.id && state == "deleted")), "{new:?}");
        assert!(agent.read(|s| s.quarantine_changes.is_empty()));

        // The server delivers the command again (the stop came before it counted as
        // applied): it counts as applied now, with no failure raised for what was done.
        let before = events(&agent).len();
        let cmd = riposte_proto::QuarantineCommand {
            request_id: "r9".into(),
            entry_id: again.id.clone(),
            action: "delete".into(),
            restore_to: None,
            on_conflict: None,
        };
        Handler(agent.clone())
            .apply(9, Delivery::Quarantine(cmd.clone()))
            .await;
        assert_eq!(agent.snapshot().last_applied, 9);
        let new = events(&agent)[before..].to_vec();
        assert!(new.is_empty(), "{new:?}");
        // Another action on that entry is still run (and fails: the entry is gone).
        let restore = riposte_proto::QuarantineCommand {
            action: "restore".into(),
            ..cmd
        };
        Handler(agent.clone())
            .apply(10, Delivery::Quarantine(restore))
            .await;
        let new = events(&agent)[before..].to_vec();
        assert!(
            matches!(&new[..], [e] if matches!(&e.body,
                EventBody::Alert { code, .. } if code == "quarantine_command_failed")),
            "{new:?}"
        );
    }

    /// The allow list is reported once to a server that takes allowance events (restores
    /// of earlier versions allowed content without saying so); for an older server,
    /// allowance events leave the outbox, since it could not read them.
    #[tokio::test]
    async fn allowances_are_reported_only_to_a_server_that_takes_them() {
        let t = tempfile::tempdir().unwrap();
        let (_, agent, entry) = agent_with_evil_quarantined(t.path());
        assert!(agent.allowed.allow(&entry.sha256).unwrap());
        agent.report(EventBody::Allowance {
            sha256: "00".repeat(32),
            allowed: false,
        });
        let allowance_events = |agent: &Agent| {
            agent.read(|s| {
                s.outbox
                    .iter()
                    .filter_map(|e| match &e.body {
                        EventBody::Allowance { sha256, allowed } => {
                            Some((sha256.clone(), *allowed))
                        }
                        _ => None,
                    })
                    .collect::<Vec<_>>()
            })
        };
        let handler = Handler(agent.clone());
        handler.welcomed(&[]);
        assert!(allowance_events(&agent).is_empty());
        let features = [riposte_proto::FEATURE_ALLOWANCE_EVENTS.to_string()];
        handler.welcomed(&features);
        handler.welcomed(&features);
        assert_eq!(allowance_events(&agent), [(entry.sha256.clone(), true)]);
    }

    /// A task whose hits were too many to report acts on none of them: a broad
    /// indicator is refused rather than half-applied.
    #[tokio::test]
    async fn hits_too_many_to_report_are_not_acted_on() {
        let t = tempfile::tempdir().unwrap();
        let (root, data) = (t.path().join("root"), t.path().join("data"));
        let dir = root.join("home/u");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("evil-tool"), b"x").unwrap();
        let agent = open_agent(&root, &data);
        let mut update = sweep_to_quarantine(&agent, 12, name_ioc("evil-")).await;
        assert_eq!(update.hits, 1);
        // As a sweep with more hits than it reports would have said.
        update.results["hits_truncated"] = serde_json::json!(true);
        update.hits = 9_999;
        let action = [riposte_model::TaskAction::QuarantineAndDelete];
        let done = agent.act_on_hits(&action, update).await;
        assert_eq!(done.results["actions"][0]["outcome"], "skipped");
        let detail = done.results["actions"][0]["detail"].as_str().unwrap();
        assert!(
            detail.contains("hit 9999 objects, more than the 5000"),
            "{detail}"
        );
        assert!(dir.join("evil-tool").exists(), "left in place");
    }

    fn md5_ioc(data: &[u8]) -> riposte_proto::IocDocument {
        use md5::Digest;
        let md5 = hex::encode(md5::Md5::digest(data));
        riposte_proto::IocDocument {
            format: "openioc".into(),
            name: "h.ioc".into(),
            content: format!(
                r#"<OpenIOC xmlns="http://openioc.org/schemas/OpenIOC_1.1" id="h" last-modified="2020-01-01T00:00:00Z" published-date="2020-01-01T00:00:00Z"><metadata><short_description>h</short_description><authored_date>2020-01-01T00:00:00Z</authored_date></metadata><criteria><Indicator operator="OR" id="o"><IndicatorItem id="i" condition="is" preserve-case="false" negate="false"><Context document="FileItem" search="FileItem/Md5sum" type="mir"/><Content type="md5">{md5}</Content></IndicatorItem></Indicator></criteria></OpenIOC>"#
            ),
        }
    }

    /// A device path whose last component is `name`'s bytes.
    fn odd_path(dir: &str, name: &[u8]) -> PathBuf {
        use std::os::unix::ffi::OsStrExt;
        Path::new(dir).join(std::ffi::OsStr::from_bytes(name))
    }

    /// An IOC hit on a file whose name is not UTF-8 names it with `\xHH`, and the
    /// quarantine-on-hit action removes that very file, not the file a lossy copy of the
    /// name would point at.
    #[tokio::test]
    async fn an_ioc_hit_on_a_name_that_is_not_utf8_quarantines_that_file() {
        let t = tempfile::tempdir().unwrap();
        let (root, data) = (t.path().join("root"), t.path().join("data"));
        let dir = root.join("home/u");
        std::fs::create_dir_all(&dir).unwrap();
        let payload: &[u8] = b"payload under an odd name";
        let original = dir.join(odd_path("", b"evil\xff\xfe.bin"));
        std::fs::write(&original, payload).unwrap();
        let lookalike = dir.join("evil\u{fffd}\u{fffd}.bin");
        std::fs::write(&lookalike, b"an innocent file").unwrap();
        let agent = open_agent(&root, &data);
        let swept = sweep_to_quarantine(&agent, 11, md5_ioc(payload)).await;
        assert_eq!(swept.hits, 1, "{swept:?}");
        assert_eq!(
            swept.results["hit_files"],
            serde_json::json!(["/home/u/evil\\xff\\xfe.bin"])
        );

        let done = agent
            .act_on_hits(&[riposte_model::TaskAction::QuarantineAndDelete], swept)
            .await;
        let actions = done.results["actions"].as_array().unwrap();
        assert_eq!(actions.len(), 1, "{actions:?}");
        assert_eq!(actions[0]["path"], "/home/u/evil\\xff\\xfe.bin");
        assert_eq!(actions[0]["outcome"], "done", "{actions:?}");
        assert!(!original.exists(), "the hit is removed");
        assert_eq!(std::fs::read(&lookalike).unwrap(), b"an innocent file");
        let entries = agent.local().unwrap().quarantine_list().unwrap().entries;
        assert_eq!(entries.len(), 1);
        assert_eq!(
            entries[0].original_path,
            odd_path("/home/u", b"evil\xff\xfe.bin")
        );
    }

    /// Settings that quarantine what the sandbox calls malicious in `/watched`.
    fn watching_settings() -> riposte_model::EffectiveSettings {
        use riposte_model::{EffectiveValue, Provenance, SandboxIntegration, ThreatResponse};
        riposte_model::EffectiveSettings {
            threat_response: EffectiveValue {
                value: ThreatResponse {
                    enabled: true,
                    actions: [riposte_model::Action::QuarantineAndDelete]
                        .into_iter()
                        .collect(),
                    special_password: None,
                },
                provenance: Provenance::Local,
            },
            sandbox_integration: EffectiveValue {
                value: SandboxIntegration {
                    // Never reached: every verdict in these tests comes from the cache.
                    sandboxes: vec!["https://127.0.0.1:9".into()],
                    sandbox_ca_pem: None,
                    watch: vec!["/watched".into()],
                    request_timeout_secs: 5,
                },
                provenance: Provenance::Local,
            },
        }
    }

    /// What an external tool reports through `ctl report-detection`: `path` malicious,
    /// with SHA-256 `sha256`, found under account `u`.
    fn external_report(path: &str, sha256: &str) -> crate::response::DetectionInput {
        crate::response::DetectionInput {
            path: path.into(),
            sha256: sha256.into(),
            threat: "T".into(),
            user: "u".into(),
            user_uid: None,
            source: "external".into(),
            source_ref: None,
            dropped_sha256: Vec::new(),
            seen: None,
        }
    }

    fn sha256_hex(data: &[u8]) -> String {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(data))
    }

    /// Puts "malicious" verdicts for `contents` in the watcher's verdict cache, as a
    /// sandbox would have left them.
    fn cache_malicious(data: &Path, contents: &[&[u8]]) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut cache = serde_json::Map::new();
        for c in contents {
            cache.insert(
                sha256_hex(c),
                serde_json::json!({"malicious": true, "threat": "Test.Threat", "source": "riposte-sandbox", "source_ref": null, "at": now}),
            );
        }
        let dir = riposte_watch::WatchConfig::queue_dir(data);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("verdicts.json"),
            serde_json::to_vec(&cache).unwrap(),
        )
        .unwrap();
    }

    /// Writes `content` to fresh `/watched/TAG-N.sh` files until one is quarantined, and
    /// returns its entry. Objects are handled one after another, in the order they were
    /// seen, so everything seen before that file has been handled too.
    async fn settle(agent: &Agent, root: &Path, tag: &str, content: &[u8]) -> String {
        for n in 0..40 {
            let device = format!("/watched/{tag}-{n}.sh");
            std::fs::write(root.join(&device[1..]), content).unwrap();
            for _ in 0..25 {
                let list = agent.local().unwrap().quarantine_list().unwrap().entries;
                if let Some(e) = list.iter().find(|e| e.original_path == Path::new(&device)) {
                    return e.id.clone();
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
        panic!("the watcher never quarantined /watched/{tag}-*.sh");
    }

    /// A file the test verdict cache calls malicious; `settle` uses it to know the
    /// watcher has handled everything written before it.
    const MARKER: &[u8] = b"#!/bin/sh\necho 'really flagged'\n";

    /// An agent over `root` whose verdict cache calls `flagged` and [`MARKER`] malicious
    /// (kept in `data`), with Threat Response and the watcher's settings applied.
    fn flagging_agent(root: &Path, data: &Path, flagged: &[u8]) -> Arc<Agent> {
        std::fs::create_dir_all(root.join("watched")).unwrap();
        cache_malicious(data, &[flagged, MARKER]);
        let agent = open_agent(root, data);
        agent.update(|s| s.settings = Some(watching_settings()));
        agent
    }

    /// Starts the agent's watcher and waits until it handles files (`tag` names the
    /// marker files of the wait); send `true` to stop it.
    async fn start_watcher(
        agent: &Arc<Agent>,
        root: &Path,
        tag: &str,
    ) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(crate::sandboxing::run(agent.clone(), stop_rx));
        settle(agent, root, tag, MARKER).await;
        (stop, task)
    }

    fn detections_of(agent: &Agent, sha256: &str) -> usize {
        agent
            .snapshot()
            .outbox
            .iter()
            .filter(|e| matches!(&e.body, EventBody::Detection(d) if d.sha256 == sha256))
            .count()
    }

    /// A watched folder that does not exist when the settings arrive is watched once it
    /// is created, without new settings or a restart.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_watched_folder_created_later_is_watched() {
        let t = tempfile::tempdir().unwrap();
        let (root, data) = (t.path().join("root"), t.path().join("data"));
        cache_malicious(&data, &[MARKER]);
        let agent = open_agent(&root, &data);
        agent.update(|s| s.settings = Some(watching_settings()));
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(crate::sandboxing::run(agent.clone(), stop_rx));
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(!root.join("watched").exists());
        std::fs::create_dir_all(root.join("watched")).unwrap();
        settle(&agent, &root, "created-later", MARKER).await;
        stop.send(true).unwrap();
        task.await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restored_false_positive_is_not_quarantined_again_even_after_a_restart() {
        let t = tempfile::tempdir().unwrap();
        let (root, data) = (t.path().join("root"), t.path().join("data"));
        let flagged: &[u8] = b"#!/bin/sh\necho 'wrongly flagged'\n";
        let agent = flagging_agent(&root, &data, flagged);
        let (stop, task) = start_watcher(&agent, &root, "ready").await;

        std::fs::write(root.join("watched/tool.sh"), flagged).unwrap();
        settle(&agent, &root, "before", MARKER).await;
        let list = agent.local().unwrap().quarantine_list().unwrap().entries;
        let entry = list
            .iter()
            .find(|e| e.original_path == Path::new("/watched/tool.sh"))
            .expect("the cached verdict quarantines the object")
            .id
            .clone();

        let a = agent.clone();
        tokio::task::spawn_blocking(move || a.quarantine_restore(&entry, None, None))
            .await
            .unwrap()
            .unwrap();
        settle(&agent, &root, "after", MARKER).await;
        assert_eq!(
            std::fs::read(root.join("watched/tool.sh")).ok().as_deref(),
            Some(flagged),
            "the restored object stays"
        );
        assert_eq!(detections_of(&agent, &sha256_hex(flagged)), 1);

        // The decision survives a restart of the agent.
        stop.send(true).unwrap();
        task.await.unwrap();
        drop(agent);
        let agent = open_agent(&root, &data);
        let (stop, task) = start_watcher(&agent, &root, "ready-again").await;
        std::fs::write(root.join("watched/copy.sh"), flagged).unwrap();
        settle(&agent, &root, "after-restart", MARKER).await;
        assert_eq!(
            std::fs::read(root.join("watched/copy.sh")).ok().as_deref(),
            Some(flagged)
        );
        assert_eq!(detections_of(&agent, &sha256_hex(flagged)), 1);
        stop.send(true).unwrap();
        task.await.unwrap();
    }

    /// The local pipeline on a file named with bytes that are not UTF-8: the watcher sees
    /// it, the cached verdict is malicious, and the object is quarantined and its original
    /// removed; the detection names it with `\xHH`, and a restore brings it back under its
    /// own bytes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_malicious_file_named_with_bytes_that_are_not_utf8_is_quarantined_and_restored() {
        let t = tempfile::tempdir().unwrap();
        let (root, data) = (t.path().join("root"), t.path().join("data"));
        let flagged: &[u8] = b"#!/bin/sh\necho 'named to slip through'\n";
        let agent = flagging_agent(&root, &data, flagged);
        let (stop, task) = start_watcher(&agent, &root, "ready").await;

        let device = odd_path("/watched", b"evil\xff\xfe.bin");
        let original = root.join(device.strip_prefix("/").unwrap());
        // Where a lossy copy of the name leads: another file, which must stay.
        let lookalike = root.join("watched/evil\u{fffd}\u{fffd}.bin");
        std::fs::write(&lookalike, b"#!/bin/sh\necho 'innocent'\n").unwrap();
        std::fs::write(&original, flagged).unwrap();
        settle(&agent, &root, "after", MARKER).await;

        assert!(!original.exists(), "the malicious original is removed");
        assert!(lookalike.exists(), "the look-alike is left alone");
        let entries = agent.local().unwrap().quarantine_list().unwrap().entries;
        let entry = entries
            .iter()
            .find(|e| e.original_path == device)
            .unwrap_or_else(|| panic!("quarantined under its own bytes: {entries:?}"))
            .clone();
        let outbox = agent.snapshot().outbox;
        let detection = outbox
            .iter()
            .find_map(|e| match &e.body {
                EventBody::Detection(d) if d.sha256 == sha256_hex(flagged) => Some(d.clone()),
                _ => None,
            })
            .expect("the detection is reported");
        assert_eq!(detection.path, "/watched/evil\\xff\\xfe.bin");
        assert!(
            outbox.iter().any(|e| matches!(&e.body,
                EventBody::ActionOutcome { detection_id, action, outcome, .. }
                    if *detection_id == detection.detection_id
                        && action == "quarantine_and_delete" && outcome == "done")),
            "{outbox:?}"
        );
        stop.send(true).unwrap();
        task.await.unwrap();

        let a = agent.clone();
        let id = entry.id.clone();
        let restored_to =
            tokio::task::spawn_blocking(move || a.quarantine_restore(&id, None, None))
                .await
                .unwrap()
                .unwrap();
        assert_eq!(restored_to, "/watched/evil\\xff\\xfe.bin");
        assert_eq!(std::fs::read(&original).unwrap(), flagged);
    }

    #[test]
    fn a_failed_restore_allows_nothing() {
        let t = tempfile::tempdir().unwrap();
        let (root, agent, entry) = agent_with_evil_quarantined(t.path());
        std::fs::write(root.join("home/u/evil"), b"a new file in its place").unwrap();
        let err = agent.quarantine_restore(&entry.id, None, None).unwrap_err();
        assert!(err.contains("already exists"), "{err}");
        assert!(!agent.allowed.contains(&entry.sha256));
    }

    #[test]
    fn a_restore_into_the_agents_own_data_is_refused_and_writes_nothing() {
        let t = tempfile::tempdir().unwrap();
        // The data directory on the device, as in production (host root `/`).
        let root = t.path().join("root");
        let data = root.join("var/lib/riposte");
        std::fs::create_dir_all(root.join("home/u")).unwrap();
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(root.join("home/u/evil"), b"payload").unwrap();
        let agent = open_agent(&root, &data);
        let entry = agent
            .local()
            .unwrap()
            .quarantine("/home/u/evil", "det", "T", "u", None)
            .unwrap();
        let state_file = crate::state::StateFile::new(&data);
        let outbox_before = state_file.load().unwrap().outbox;
        for (to, policy) in [
            ("/var/lib/riposte/agent.db", "replace"),
            ("/var/lib/riposte/new-file", "refuse"),
            ("/var/lib/riposte/quarantine/records/x.json", "refuse"),
        ] {
            let err = agent
                .quarantine_restore(&entry.id, Some(to), Some(policy))
                .unwrap_err();
            assert!(err.contains("refusing to restore"), "{to}: {err}");
        }
        // Still the agent's own database (each attempt was journaled, then ended).
        let state = state_file.load().unwrap();
        assert_eq!(state.outbox, outbox_before);
        assert!(state.quarantine_changes.is_empty());
        assert!(!data.join("new-file").exists());
        assert!(!data.join("quarantine/records/x.json").exists());
        assert!(!agent.allowed.contains(&entry.sha256));
        assert_eq!(
            agent
                .local()
                .unwrap()
                .quarantine_list()
                .unwrap()
                .entries
                .len(),
            1
        );
    }

    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                copy_dir(&e.path(), &to.join(e.file_name()));
            } else {
                std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_command_cut_short_by_a_crash_is_applied_again_on_redelivery() {
        let t = tempfile::tempdir().unwrap();
        let (root, data) = (t.path().join("root"), t.path().join("data"));
        std::fs::create_dir_all(root.join("home/u")).unwrap();
        std::fs::write(root.join("home/u/evil"), b"payload").unwrap();
        let agent = open_agent(&root, &data);
        let local = agent.local().unwrap().clone();
        let entry = local
            .quarantine("/home/u/evil", "det", "T", "u", None)
            .unwrap();
        let cmd = riposte_proto::QuarantineCommand {
            request_id: "r1".into(),
            entry_id: entry.id.clone(),
            action: "delete".into(),
            restore_to: None,
            on_conflict: None,
        };

        // Hold the store while the command runs, and take an image of the data
        // directory then: what a crash at that instant leaves on disk.
        let crashed = t.path().join("crashed");
        let (locked_tx, locked_rx) = std::sync::mpsc::channel();
        let (store, from, to) = (local.clone(), data.clone(), crashed.clone());
        let image = std::thread::spawn(move || {
            let guard = store.quarantine.lock().unwrap_or_else(|e| e.into_inner());
            locked_tx.send(()).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(300));
            copy_dir(&from, &to);
            drop(guard);
        });
        locked_rx.recv().unwrap();
        Handler(agent.clone())
            .apply(5, Delivery::Quarantine(cmd.clone()))
            .await;
        image.join().unwrap();
        assert_eq!(agent.snapshot().last_applied, 5);
        assert!(local.quarantine_list().unwrap().entries.is_empty());

        // The agent restarted from the image names an older sequence number, so the
        // server delivers the command again, and it runs.
        let restarted = Handler(open_agent(&root, &crashed));
        assert_eq!(restarted.last_applied(), 0);
        let store = restarted.0.local().unwrap().clone();
        assert_eq!(store.quarantine_list().unwrap().entries.len(), 1);
        restarted.apply(5, Delivery::Quarantine(cmd)).await;
        assert!(store.quarantine_list().unwrap().entries.is_empty());
        let on_disk = StateFile::new(&crashed).load().unwrap();
        assert_eq!(on_disk.last_applied, 5);
        assert!(
            on_disk.outbox.iter().any(|e| matches!(
                &e.body,
                EventBody::Quarantine { state, entry_id, .. } if state == "deleted" && *entry_id == entry.id
            )),
            "{:?}",
            on_disk.outbox
        );
    }

    fn detection(id: &str) -> DetectionRecord {
        DetectionRecord {
            detection_id: id.into(),
            path: "/home/u/evil".into(),
            size: 7,
            md5: "0".repeat(32),
            sha1: "0".repeat(40),
            sha256: "0".repeat(64),
            threat: "T".into(),
            source: "test".into(),
            source_ref: None,
            user_name: "u".into(),
            user_uid: None,
            detected_at_ms: 1,
            dropped_sha256: Vec::new(),
        }
    }

    fn group_outcomes(agent: &Agent, detection_id: &str) -> Vec<String> {
        agent
            .snapshot()
            .outbox
            .iter()
            .filter_map(|e| match &e.body {
                EventBody::ActionOutcome {
                    detection_id: d,
                    action,
                    outcome,
                    ..
                } if d == detection_id && action == "group_ioc_scan" => Some(outcome.clone()),
                _ => None,
            })
            .collect()
    }

    /// The server acknowledges the detection while the agent waits: the group task is
    /// requested at once (here it fails: this agent's CA is empty, so no request leaves).
    #[tokio::test(start_paused = true)]
    async fn a_group_action_is_requested_once_the_server_has_the_detection() {
        let t = tempfile::tempdir().unwrap();
        let agent = open_agent(&t.path().join("root"), &t.path().join("data"));
        let record = detection("d1");
        let event = agent.report_with(EventBody::Detection(record.clone()), |_, _| {});
        let handler = Handler(agent.clone());
        let acked = event.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            handler.event_acked(&acked);
        });
        let o = agent.group_action(&event, &record).await;
        assert_eq!(o.outcome, "failed", "{}", o.detail);
        assert!(agent.snapshot().pending_group_actions.is_empty());
    }

    /// A request the server could not take for a passing reason (here it cannot be
    /// reached) is kept and asked again later, up to a limit; a refusal that cannot pass
    /// (no password) is final at once.
    #[tokio::test]
    async fn a_group_action_refused_for_a_passing_reason_is_asked_again() {
        let t = tempfile::tempdir().unwrap();
        let agent = open_agent(&t.path().join("root"), &t.path().join("data"));
        // A CA the client can pin, and a server address where nothing listens.
        let ca = rcgen::generate_simple_self_signed(vec!["ca".into()]).unwrap();
        {
            let mut id = agent.identity.write().unwrap();
            id.ca_pem = ca.cert.pem();
            id.server_url = "https://127.0.0.1:9".into();
        }
        agent.update(|s| s.special_password = Some("special-pw".into()));
        let record = detection("d3");
        let event = agent.report_with(EventBody::Detection(record.clone()), |_, _| {});
        Handler(agent.clone()).event_acked(&event);
        let before = now_ms();
        let o = agent.group_action(&event, &record).await;
        assert_eq!(o.outcome, "pending", "{}", o.detail);
        assert!(
            o.detail.contains("cannot reach") && o.detail.contains("attempt 1 of"),
            "{}",
            o.detail
        );
        let waiting = agent.snapshot().pending_group_actions;
        assert_eq!(waiting.len(), 1);
        assert_eq!(waiting[0].attempts, 1);
        assert!(waiting[0].retry_at_ms >= before + 30_000, "{waiting:?}");
        // Not before its time.
        agent.run_acknowledged_group_actions();
        assert_eq!(agent.snapshot().pending_group_actions, waiting);
        // Its time come, asked again: still unreachable, kept with a longer wait; on the
        // last attempt, it fails for good.
        agent.update(|s| s.pending_group_actions[0].retry_at_ms = 0);
        agent.run_acknowledged_group_actions();
        let mut again = Vec::new();
        for _ in 0..200 {
            again = agent.snapshot().pending_group_actions;
            if again.first().is_some_and(|p| p.attempts == 2) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(again[0].attempts, 2, "{again:?}");
        assert!(again[0].retry_at_ms >= now_ms() + 50_000, "{again:?}");
        agent.update(|s| {
            s.pending_group_actions[0].retry_at_ms = 0;
            s.pending_group_actions[0].attempts = GROUP_ACTION_ATTEMPTS - 1;
        });
        agent.run_acknowledged_group_actions();
        for _ in 0..200 {
            if group_outcomes(&agent, "d3")
                .last()
                .is_some_and(|o| o == "failed")
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(
            group_outcomes(&agent, "d3").last().map(String::as_str),
            Some("failed")
        );
        assert!(agent.snapshot().pending_group_actions.is_empty());

        // Without a password nothing can pass.
        agent.update(|s| s.special_password = None);
        let record = detection("d4");
        let event = agent.report_with(EventBody::Detection(record.clone()), |_, _| {});
        Handler(agent.clone()).event_acked(&event);
        let o = agent.group_action(&event, &record).await;
        assert_eq!(o.outcome, "failed", "{}", o.detail);
        assert!(agent.snapshot().pending_group_actions.is_empty());
    }

    /// No acknowledgement in time (no connection): the group action waits on disk and is
    /// requested, with its outcome reported, when the acknowledgement comes, also after
    /// a restart.
    #[tokio::test(start_paused = true)]
    async fn a_group_action_waits_for_the_acknowledgement_across_a_restart() {
        let t = tempfile::tempdir().unwrap();
        let (root, data) = (t.path().join("root"), t.path().join("data"));
        let agent = open_agent(&root, &data);
        let record = detection("d2");
        let event = agent.report_with(EventBody::Detection(record.clone()), |_, _| {});
        let o = agent.group_action(&event, &record).await;
        assert_eq!(o.outcome, "pending", "{}", o.detail);
        assert!(
            group_outcomes(&agent, "d2").is_empty(),
            "nothing requested yet"
        );
        drop(agent);

        let agent = open_agent(&root, &data);
        let on_disk = agent.snapshot().pending_group_actions;
        assert_eq!(on_disk.len(), 1);
        assert_eq!(on_disk[0].event_id, event);
        assert_eq!(on_disk[0].detection, record);
        Handler(agent.clone()).event_acked(&event);
        for _ in 0..100 {
            if !group_outcomes(&agent, "d2").is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(group_outcomes(&agent, "d2"), ["failed"]);
        assert!(agent.snapshot().pending_group_actions.is_empty());
        assert!(StateFile::new(&data)
            .load()
            .unwrap()
            .pending_group_actions
            .is_empty());
    }
}
