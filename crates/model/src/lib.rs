//! Riposte's domain model, free of I/O.
//!
//! Everything the server and the agent must agree on lives here as plain data and pure
//! functions: the administration-group tree, policies and their settings groups, how a
//! device's effective settings are computed (with provenance), who may do what, the rules
//! of the special account, the per-device state machine of a task, and the lossless text
//! form of file paths ([`path_text`]) that every crate uses where a path becomes a string.
//! Keeping this crate free of I/O lets the rules be tested exhaustively with table-driven
//! tests, and lets the storage and transport layers change without touching them.

pub mod accounts;
pub mod groups;
pub mod path_text;
pub mod rights;
pub mod settings;
pub mod tasks;
pub mod time;

pub use accounts::{validate_special_password, AccountError, Role};
pub use groups::{GroupId, GroupNode, GroupTree, GroupTreeError};
pub use rights::{authorize, Denied, Operation, Principal};
pub use settings::{
    effective_settings, Action, EffectiveSettings, EffectiveValue, LocalSettings, PathPolicy,
    PolicyMode, PolicySection, PolicySettings, Provenance, SandboxIntegration, SettingsGroup,
    ThreatResponse,
};
pub use tasks::{DeviceTaskState, ScanScope, TaskAction, TransitionError};

/// Whether `text` is a SHA-256 digest in hex (64 hex digits, either case): what a device
/// must send where it names content.
pub fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}
