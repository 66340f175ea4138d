//! The agent daemon: applies what the server delivers, keeps its state on disk, and reports
//! tasks and events back. Task execution and the local response actions plug in through
//! [`TaskRunner`].

use crate::identity::Identity;
use crate::link::{self, LinkHandler};
use crate::state::{AgentState, StateFile, TaskRecord};
use riposte_model::DeviceTaskState;
use riposte_proto::{AgentEvent, AgentToServer, Delivery, EventBody, TaskOffer, TaskUpdate};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};

/// Runs IOC scan tasks on this device.
pub trait TaskRunner: Send + Sync + 'static {
    /// Runs a task to the end (or until `cancel` turns true) and returns its final update.
    fn run(&self, offer: TaskOffer, cancel: watch::Receiver<bool>) -> TaskUpdate;
}

/// A runner for builds without a scan engine: every task fails with the reason.
pub struct NoScanner;

impl TaskRunner for NoScanner {
    fn run(&self, offer: TaskOffer, _: watch::Receiver<bool>) -> TaskUpdate {
        TaskUpdate {
            task_id: offer.task_id,
            state: DeviceTaskState::Failed,
            hits: 0,
            reason: Some("this agent has no IOC scan engine".into()),
            results: serde_json::Value::Null,
        }
    }
}

/// The agent's shared state.
pub struct Agent {
    pub data_dir: PathBuf,
    pub identity: Identity,
    state: Mutex<AgentState>,
    file: StateFile,
    to_server: mpsc::UnboundedSender<AgentToServer>,
    runner: Arc<dyn TaskRunner>,
    cancels: Mutex<std::collections::HashMap<i64, watch::Sender<bool>>>,
    /// Signalled whenever settings change (for tests and the response engine).
    pub settings_changed: tokio::sync::Notify,
}

impl Agent {
    /// Loads the agent from its data directory; returns it and the link's receiving end.
    pub fn open(
        data_dir: PathBuf,
        runner: Arc<dyn TaskRunner>,
    ) -> anyhow::Result<(Arc<Agent>, mpsc::UnboundedReceiver<AgentToServer>)> {
        let identity = Identity::load(&data_dir)?;
        let file = StateFile::new(&data_dir);
        let mut state = file.load()?;
        state.connected = false;
        let (tx, rx) = mpsc::unbounded_channel();
        let agent = Arc::new(Agent {
            data_dir,
            identity,
            state: Mutex::new(state),
            file,
            to_server: tx,
            runner,
            cancels: Mutex::new(Default::default()),
            settings_changed: tokio::sync::Notify::new(),
        });
        Ok((agent, rx))
    }

    /// A copy of the current state.
    pub fn snapshot(&self) -> AgentState {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
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
        let event = AgentEvent {
            event_id: format!("{:032x}", rand::random::<u128>()),
            at_ms: now_ms(),
            body,
        };
        self.update(|s| s.outbox.push(event.clone()));
        let _ = self.to_server.send(AgentToServer::Event(event));
    }

    fn set_task(&self, update: TaskUpdate) {
        self.update(|s| {
            if let Some(t) = s.tasks.get_mut(&update.task_id) {
                t.state = update.state;
                t.last_update = Some(update.clone());
            }
        });
        let _ = self.to_server.send(AgentToServer::TaskUpdate(update));
    }

    fn start_task(self: &Arc<Self>, offer: TaskOffer) {
        let (cancel_tx, cancel_rx) = watch::channel(false);
        self.cancels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(offer.task_id, cancel_tx);
        let agent = self.clone();
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
            let update = tokio::task::spawn_blocking(move || runner.run(offer, cancel_rx))
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
            agent.set_task(update);
        });
    }

    /// Restores or deletes a quarantined object as the server asked.
    fn handle_quarantine_command(&self, cmd: riposte_proto::QuarantineCommand) {
        self.report(EventBody::Alert {
            code: "quarantine_command_unsupported".into(),
            message: format!("this agent cannot {} quarantine entry {} yet", cmd.action, cmd.entry_id),
        });
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

fn now_ms() -> i64 {
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
            Delivery::Quarantine(cmd) => {
                agent.update(|s| s.last_applied = seq);
                agent.handle_quarantine_command(cmd);
            }
            Delivery::TaskCancel { task_id } => {
                agent.update(|s| s.last_applied = seq);
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
        self.0
            .update(|s| s.outbox.retain(|e| e.event_id != event_id));
    }

    fn link_state(&self, up: bool, note: &str) {
        self.0.update(|s| {
            s.connected = up;
            s.last_link_note = note.to_string();
        });
    }
}

/// Runs the agent daemon until `stop` turns true.
pub async fn run(
    agent: Arc<Agent>,
    rx: mpsc::UnboundedReceiver<AgentToServer>,
    stop: watch::Receiver<bool>,
) {
    agent.resume_tasks();
    let h = Arc::new(Handler(agent.clone()));
    let hostname = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    link::run(agent.identity.clone(), hostname, h, rx, stop).await;
}
