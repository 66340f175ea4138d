//! One simulated agent: a [`LinkHandler`] that records when a task offer arrives and at
//! once reports the task completed (no sweep). Everything shared lives in [`Shared`]; the
//! per-agent part is a handful of atomics and the outgoing sender.

use riposte_agent::link::LinkHandler;
use riposte_model::DeviceTaskState;
use riposte_proto::{AgentToServer, Delivery, TaskUpdate};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::mpsc;

/// What all simulated agents share: the clock origin and the fleet-wide counters.
pub(crate) struct Shared {
    /// Origin of every agent-side timestamp.
    pub epoch: Instant,
    /// Agents whose link is up now.
    pub connected: AtomicUsize,
    /// Agents whose link has come up at least once.
    pub ever_connected: AtomicUsize,
    /// Agents that applied at least one delivery (their settings, queued at enrollment).
    pub applied_any: AtomicUsize,
    /// Agents that received a task offer.
    pub offers: AtomicUsize,
    /// Links that dropped after being up.
    pub drops: AtomicUsize,
    /// Connection attempts that failed before the link came up.
    pub connect_failures: AtomicUsize,
    /// The most recent reason a link went down, for diagnostics.
    pub last_error: Mutex<Option<String>>,
    /// Progress reports each agent sends (`running`, as a sweeping agent does every 30 s)
    /// when the offer arrives; with any, the agent completes only when told
    /// ([`SimAgent::complete`]).
    pub progress_reports: u64,
}

impl Shared {
    pub fn new(progress_reports: u64) -> Arc<Shared> {
        Arc::new(Shared {
            progress_reports,
            epoch: Instant::now(),
            connected: AtomicUsize::new(0),
            ever_connected: AtomicUsize::new(0),
            applied_any: AtomicUsize::new(0),
            offers: AtomicUsize::new(0),
            drops: AtomicUsize::new(0),
            connect_failures: AtomicUsize::new(0),
            last_error: Mutex::new(None),
        })
    }

    /// Microseconds since [`Shared::epoch`], plus one so that 0 can mean "not yet".
    pub fn stamp(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64 + 1
    }
}

/// One simulated agent's state.
pub(crate) struct SimAgent {
    shared: Arc<Shared>,
    last: AtomicU64,
    /// When the first task offer arrived ([`Shared::stamp`]); 0 = none yet.
    pub offer_at: AtomicU64,
    /// The task this agent was offered (0 = none).
    task: AtomicI64,
    /// It reported the task completed (re-reported after a reconnect).
    done: AtomicBool,
    up: AtomicBool,
    ever_up: AtomicBool,
    tx: mpsc::UnboundedSender<AgentToServer>,
}

impl SimAgent {
    pub fn new(shared: Arc<Shared>, tx: mpsc::UnboundedSender<AgentToServer>) -> SimAgent {
        SimAgent {
            shared,
            last: AtomicU64::new(0),
            offer_at: AtomicU64::new(0),
            task: AtomicI64::new(0),
            done: AtomicBool::new(false),
            up: AtomicBool::new(false),
            ever_up: AtomicBool::new(false),
            tx,
        }
    }

    /// Reports a detection over this agent's link, as a real agent does before it asks
    /// for the group task (the server builds the task from what the device reported).
    pub fn report_detection(&self, record: riposte_proto::DetectionRecord) -> bool {
        let event = riposte_proto::AgentEvent {
            event_id: format!("detection-{}", record.detection_id),
            at_ms: record.detected_at_ms,
            body: riposte_proto::EventBody::Detection(record),
        };
        self.tx.send(AgentToServer::Event(event)).is_ok()
    }

    /// Reports the task it was offered completed (after its progress reports).
    pub fn complete(&self) -> bool {
        match self.task.load(Ordering::SeqCst) {
            0 => false,
            id => {
                self.done.store(true, Ordering::SeqCst);
                self.tx.send(Self::completed(id)).is_ok()
            }
        }
    }

    /// The `running` update a sweeping agent sends with its progress (the agent's
    /// `scanner` reports these fields).
    fn progress(task_id: i64, n: u64) -> AgentToServer {
        AgentToServer::TaskUpdate(TaskUpdate {
            task_id,
            state: DeviceTaskState::Running,
            hits: 0,
            reason: None,
            results: serde_json::json!({"progress": {
                "report": n, "files_seen": n * 1000, "bytes_seen": n * 50_000_000,
                "files_read": n * 10}}),
        })
    }

    fn completed(task_id: i64) -> AgentToServer {
        AgentToServer::TaskUpdate(TaskUpdate {
            task_id,
            state: DeviceTaskState::Completed,
            hits: 0,
            reason: None,
            results: serde_json::Value::Null,
        })
    }
}

impl LinkHandler for SimAgent {
    fn last_applied(&self) -> u64 {
        self.last.load(Ordering::SeqCst)
    }

    async fn apply(&self, seq: u64, delivery: Delivery) {
        if let Delivery::TaskOffer(offer) = &delivery {
            let now = self.shared.stamp();
            if self
                .offer_at
                .compare_exchange(0, now, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                self.shared.offers.fetch_add(1, Ordering::SeqCst);
            }
            self.task.store(offer.task_id, Ordering::SeqCst);
            // The link writes the Ack for this delivery first, then these updates.
            for n in 1..=self.shared.progress_reports {
                let _ = self.tx.send(Self::progress(offer.task_id, n));
            }
            if self.shared.progress_reports == 0 {
                self.done.store(true, Ordering::SeqCst);
                let _ = self.tx.send(Self::completed(offer.task_id));
            }
        }
        if self.last.swap(seq, Ordering::SeqCst) == 0 {
            self.shared.applied_any.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn resend_on_connect(&self) -> Vec<AgentToServer> {
        // An update written into a link that then broke is lost; say it again.
        match self.task.load(Ordering::SeqCst) {
            0 => Vec::new(),
            id if self.done.load(Ordering::SeqCst) => vec![Self::completed(id)],
            id => match self.shared.progress_reports {
                0 => Vec::new(),
                p => vec![Self::progress(id, p)],
            },
        }
    }

    fn event_acked(&self, _event_id: &str) {}

    fn link_state(&self, up: bool, note: &str) {
        if up {
            if !self.up.swap(true, Ordering::SeqCst) {
                self.shared.connected.fetch_add(1, Ordering::SeqCst);
            }
            if !self.ever_up.swap(true, Ordering::SeqCst) {
                self.shared.ever_connected.fetch_add(1, Ordering::SeqCst);
            }
            return;
        }
        if self.up.swap(false, Ordering::SeqCst) {
            self.shared.connected.fetch_sub(1, Ordering::SeqCst);
            self.shared.drops.fetch_add(1, Ordering::SeqCst);
        } else {
            self.shared.connect_failures.fetch_add(1, Ordering::SeqCst);
        }
        if let Ok(mut e) = self.shared.last_error.lock() {
            *e = Some(note.to_string());
        }
    }

    fn renewal(&self, _: riposte_agent::link::Renewal<'_>) -> Result<(), String> {
        // A simulated agent keeps its identity in memory only: nothing to store.
        Ok(())
    }
}
