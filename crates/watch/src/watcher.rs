//! The [`Watcher`]: starts the monitor, the processing task and the submission worker,
//! and stops or restarts them when the settings change.
//!
//! Why restart on reconfigure: every piece depends on the settings (folders → monitor,
//! servers and certificate → client, limits → queue), and everything worth keeping is on
//! disk (queue, task ids, verdict cache), so stopping and starting again is both the
//! simplest and the safest way to apply new settings.

use std::sync::Arc;

use riposte_sandbox::{ClientConfig, SandboxClient};
use tokio::sync::mpsc::{self, UnboundedSender};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::allow::AllowList;
use crate::cache::VerdictCache;
use crate::config::WatchConfig;
use crate::event::{AlertCode, WatchEvent};
use crate::monitor::{Backend, Monitor, MonitorMsg};
use crate::object::Trigger;
use crate::queue::Queue;
use crate::worker::{run_processor, run_worker, Shared};
use crate::WatchError;

/// A snapshot of the watcher's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchStatus {
    /// Kernel interface in use.
    pub backend: Backend,
    /// Objects waiting in the submission queue.
    pub queued_objects: usize,
    /// Bytes of object copies in the queue.
    pub queued_bytes: u64,
}

struct Running {
    monitor: Monitor,
    tx: UnboundedSender<MonitorMsg>,
    stop: watch::Sender<bool>,
    processor: JoinHandle<()>,
    worker: JoinHandle<()>,
    shared: Arc<Shared>,
}

/// The running sandbox integration. Create it with [`Watcher::start`] inside a Tokio
/// runtime; stop it with [`Watcher::shutdown`] (dropping it also stops it, abruptly).
pub struct Watcher {
    sink: UnboundedSender<WatchEvent>,
    running: Option<Running>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl Watcher {
    /// Start watching `config.folders`, and submitting queued objects (also those left
    /// from a previous run in `config.queue_dir`). Verdicts and alerts go to `sink`.
    ///
    /// Fails if the configuration is invalid, the queue directory cannot be used, the
    /// pinned certificate is unusable, or no monitor back end can start.
    pub fn start(
        config: WatchConfig,
        sink: UnboundedSender<WatchEvent>,
    ) -> Result<Watcher, WatchError> {
        let running = Self::launch(config, sink.clone())?;
        Ok(Watcher {
            sink,
            running: Some(running),
        })
    }

    fn launch(
        mut config: WatchConfig,
        sink: UnboundedSender<WatchEvent>,
    ) -> Result<Running, WatchError> {
        config.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            WatchError::Config("Watcher::start must be called inside a Tokio runtime".into())
        })?;
        config.host_root = std::fs::canonicalize(&config.host_root)
            .map_err(|e| WatchError::io("open the host root", &config.host_root, e))?;
        let client = match (&config.pinned_cert_pem, config.sandboxes.is_empty()) {
            (Some(pem), false) => {
                let mut c = ClientConfig::new(config.sandboxes.clone(), pem.clone());
                c.timeout = config.request_timeout;
                c.retries = 1;
                c.backoff = config.retry_backoff.min(std::time::Duration::from_secs(2));
                c.identity = config.client_identity.clone();
                Some(SandboxClient::new(c)?)
            }
            _ => None,
        };
        let (queue, damaged) = Queue::open(&config.queue_dir, config.max_queue_bytes)?;
        let cache = VerdictCache::open(config.queue_dir.join("verdicts.json"), config.cache_ttl);
        let allowed = match &config.allowed {
            Some(a) => a.clone(),
            None => Arc::new(AllowList::open_in(&config.queue_dir)?),
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let monitor = Monitor::start(&config, tx.clone())?;
        let shared = Arc::new(Shared {
            config,
            queue,
            cache,
            allowed,
            sink,
            wake: Notify::new(),
        });
        for d in damaged {
            shared.alert(AlertCode::StateFailed, d, None);
        }
        let (stop, stop_rx) = watch::channel(false);
        let processor = runtime.spawn(run_processor(shared.clone(), rx));
        let worker = runtime.spawn(run_worker(shared.clone(), client, stop_rx));
        Ok(Running {
            monitor,
            tx,
            stop,
            processor,
            worker,
            shared,
        })
    }

    /// Which kernel interface reports objects (`None` once shut down).
    pub fn backend(&self) -> Option<Backend> {
        self.running.as_ref().map(|r| r.monitor.backend)
    }

    /// Backend and queue usage (`None` once shut down).
    pub fn status(&self) -> Option<WatchStatus> {
        let r = self.running.as_ref()?;
        let (queued_objects, queued_bytes) = r.shared.queue.usage();
        Some(WatchStatus {
            backend: r.monitor.backend,
            queued_objects,
            queued_bytes,
        })
    }

    /// Look at the object at `device_path` now (manual or external submission): hashed,
    /// checked against the cache, queued. The type filter does not apply; problems come
    /// back as alerts on the sink, the verdict as a verdict. The path is read in its
    /// [`riposte_model::path_text`] form (`\xHH` for a byte that is not UTF-8).
    pub fn submit_path(&self, device_path: &str) -> Result<(), WatchError> {
        if !device_path.starts_with('/') {
            return Err(WatchError::Config(format!(
                "{device_path:?} is not an absolute device path; give it as /dir/file"
            )));
        }
        let r = self.running.as_ref().ok_or_else(|| {
            WatchError::Config("the watcher is shut down; start it again first".into())
        })?;
        let host_path = r.shared.config.host_path(device_path)?;
        let trigger = Trigger {
            // Spelt as the watcher spells the paths it sees, so that a verdict names the
            // object the same way however the path was typed.
            device_path: riposte_model::path_text::canonical(device_path).into_owned(),
            host_path,
            fd: None,
            writer_uid: None,
            manual: true,
        };
        r.tx.send(MonitorMsg::Object(trigger)).map_err(|_| {
            WatchError::Config(
                "the watcher's processing task has stopped; restart the watcher".into(),
            )
        })
    }

    /// Apply new settings: stop everything and start again with `config`. Queued
    /// objects, pending tasks and cached verdicts are kept (they live in `queue_dir`).
    /// On error the watcher stays stopped; call it again with working settings.
    pub async fn reconfigure(&mut self, config: WatchConfig) -> Result<(), WatchError> {
        if let Some(r) = self.running.take() {
            stop(r).await;
        }
        self.running = Some(Self::launch(config, self.sink.clone())?);
        Ok(())
    }

    /// Stop watching; objects already seen are hashed and queued first, an in-flight
    /// request is abandoned (its object stays queued for the next start).
    pub async fn shutdown(mut self) {
        if let Some(r) = self.running.take() {
            stop(r).await;
        }
    }
}

async fn stop(mut r: Running) {
    // The monitor thread ends and drops its sender; dropping ours lets the processing
    // task drain what was already seen, then end.
    let mut monitor = r.monitor;
    let _ = tokio::task::spawn_blocking(move || monitor.stop()).await;
    drop(r.tx);
    let _ = (&mut r.processor).await;
    let _ = r.stop.send(true);
    let _ = (&mut r.worker).await;
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            let _ = r.stop.send(true);
            r.processor.abort();
            r.worker.abort();
            drop(r.monitor);
        }
    }
}
