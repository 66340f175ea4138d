//! # riposte-host: the endpoint's OS boundary (Linux)
//!
//! Everything the Riposte agent does to the device it protects goes through
//! this crate, so that the dangerous parts are written once and reviewed once:
//!
//! * [`HostRoot`] maps *device paths* (as they appear in detections, e.g.
//!   `/home/alice/evil.bin`) under a directory that is treated as the device's
//!   `/`. Production uses `/`; tests use a temporary directory. Paths with `..`
//!   or relative paths are refused.
//! * [`safefs`] opens files without following symlinks anywhere in the path
//!   (`openat` step by step with `O_NOFOLLOW`), checks that the object is a
//!   regular file, and deletes it only if it is still the very object that was
//!   inspected (device, inode and SHA-256 re-checked just before `unlinkat`).
//!   A malicious process swapping the detected file for a symlink to
//!   `/etc/passwd` therefore cannot make the agent delete something else.
//! * [`users`] finds who is logged on (systemd-logind, else utmp).
//! * [`notify`] tells a logged-on user that something was done (desktop
//!   notification over D-Bus, else a message on their terminals).
//! * [`critical`] enumerates the "critical areas" of a Linux device: kernel
//!   modules and images, startup objects and boot sectors.

pub mod critical;
mod error;
pub mod notify;
mod root;
pub mod safefs;
pub mod users;

pub use critical::{BootSector, CriticalAreas, CriticalCategory, CriticalObject, Skipped};
pub use error::HostError;
pub use notify::{Notifier, NotifyOutcome};
pub use root::HostRoot;
pub use safefs::{FileIdentity, FileMeta, FileStamp, OpenedFile};
pub use users::{SessionSource, StaticSessions, SystemSessions, UserSession};
