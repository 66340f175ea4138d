//! The agent's side of the sandbox integration: see new and executed objects, hash
//! them, and get a sandbox verdict for each, without blocking the object meanwhile.
//!
//! Why a crate of its own: the path from "a file appeared" to "the sandbox says it is
//! malicious" crosses the kernel (fanotify/inotify), the disk (a queue and a verdict
//! cache that survive restarts) and the network (sandbox servers with failover), and
//! each of those fails in its own way. Keeping it apart from the daemon lets it be
//! tested end to end against the real built-in sandbox, in a tempdir host root.
//!
//! Flow: [`monitor`] (fanotify, else inotify) → read, filter by type and size, hash
//! (MD5/SHA-1/SHA-256 in one read), find the account → verdict cache (hit: verdict at
//! once) → on-disk queue (copy, 0700, byte cap) → worker: [`riposte_sandbox::SandboxClient`]
//! submit/poll with failover, pinned certificate, timeout, backoff → [`WatchEvent::Verdict`]
//! for every sighting. Anything that goes wrong with an object is a [`WatchEvent::Alert`].
//!
//! ```no_run
//! # async fn f(settings: riposte_model::SandboxIntegration) -> Result<(), riposte_watch::WatchError> {
//! use riposte_watch::{WatchConfig, WatchEvent, Watcher};
//! let config = WatchConfig::from_settings(&settings, "/", std::path::Path::new("/var/lib/riposte"));
//! let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
//! let watcher = Watcher::start(config, tx)?;
//! while let Some(event) = rx.recv().await {
//!     if let WatchEvent::Verdict(v) = event {
//!         if v.malicious { /* record a detection */ }
//!     }
//! }
//! watcher.shutdown().await;
//! # Ok(()) }
//! ```

mod allow;
mod cache;
pub mod config;
pub mod error;
pub mod event;
mod fsutil;
pub mod monitor;
mod object;
mod queue;
pub mod watcher;
mod worker;

pub use allow::AllowList;
pub use config::{
    BackendChoice, ObjectFilter, WatchConfig, DEFAULT_MAX_OBJECT_SIZE, DEFAULT_MAX_QUEUE_BYTES,
};
pub use error::WatchError;
pub use event::{AlertCode, Verdict, WatchEvent};
pub use monitor::Backend;
/// The device identity presented to a sandbox that admits only enrolled agents.
pub use riposte_sandbox::tls::ClientIdentity;
pub use watcher::{WatchStatus, Watcher};
