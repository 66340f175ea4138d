//! Riposte's sandbox: the service an agent sends a suspicious object to, and the glue
//! to external sandboxes.
//!
//! Why it exists: an endpoint sees a file it cannot judge locally (unknown hash, no
//! signature match). It uploads the object to a sandbox server, which answers either
//! with a verdict it already has (objects are keyed by SHA-256) or with a task id to
//! poll. Every verdict comes with a [`report::Report`] whose IOCs (hashes, dropped
//! files, started programs, network destinations, persistence changes) feed the
//! fleet-wide sweep, also as an OpenIOC 1.1 document.
//!
//! Pieces:
//! - [`static_analysis`]: hash lists (ClamAV `.hdb`/`.hsb`, CSV) and rule engines
//!   (built-in EICAR/script rules; YARA behind the [`static_analysis::RuleEngine`] trait).
//! - [`dynamic`]: runs ELF programs and scripts in a throw-away bubblewrap jail under
//!   `strace`, turns the trace into behaviour IOCs and a verdict.
//! - [`importers`]: CAPE, Cuckoo 2 and Cuckoo3 report JSON → [`report::Report`], with
//!   background noise filtered; [`cape`] drives a CAPEv2 server over its REST API.
//! - [`service`]: the HTTPS protocol (`/sandbox/v1/...`), bounded worker queue,
//!   persistence in a data directory, signed webhook; objects and verdicts only for
//!   clients presenting a device certificate of the administration server's CA
//!   ([`SandboxConfig::client_ca_pem`]), since the sandbox runs what it is given;
//!   [`client`] is the agent side with failover, certificate pinning and the device
//!   certificate.
//! - [`cli`]: `riposte sandbox --listen ADDR --data DIR --client-ca CA.PEM`.

pub mod cape;
pub mod cli;
pub mod client;
pub mod dynamic;
pub mod error;
pub mod importers;
pub mod openioc;
pub mod protocol;
pub mod report;
pub mod revocation;
pub mod service;
pub mod static_analysis;
pub mod store;
pub mod tls;
mod util;

pub use client::{ClientConfig, SandboxClient, Submitted, TaskStatus};
pub use error::SandboxError;
pub use report::{Evidence, FileIoc, Iocs, Report, Verdict};
pub use service::{serve, SandboxConfig, ServeHandle};
