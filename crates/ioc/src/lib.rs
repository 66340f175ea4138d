//! Indicators of compromise for Riposte.
//!
//! This crate is pure logic: it reads indicator documents (OpenIOC 1.0/1.1, STIX 2.1
//! patterns, YARA rules) into one model and evaluates them against items that a caller
//! collects. It does no file-system walking itself (the sweep engine in `riposte-scan`
//! does), so that every language can be tested on planted items and fuzzed.
//!
//! * [`openioc`] — OpenIOC reader with schema checks.
//! * [`stix`] — STIX 2.1 pattern parser (recursive descent, positions in errors).
//! * [`model`] / [`eval`] — the shared indicator tree and its three-valued evaluation.
//! * [`yara`] — the stable YARA interface other crates use (backed by `boreal`).
//! * [`generate`] — builds an OpenIOC 1.1 document from detection data.

pub mod eval;
pub mod generate;
pub mod model;
pub mod openioc;
pub mod pcre;
pub mod stix;
pub mod value;
pub mod yara;

pub use eval::{evaluate, join_observations, Item, ObservationOutcome, Truth};
pub use generate::{ioc_from_detection, DetectedObject, Detection};
pub use model::{
    Field, FieldValue, Ioc, IocFormat, ItemType, Observations, UnsupportedTerm, ValueKind,
};

/// Errors reading indicator documents. Every variant names the document (`origin`)
/// and, where the format allows it, the position of the problem.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The document exceeds the size limit.
    #[error("{origin}: document is {size} bytes, larger than the limit of {limit} bytes")]
    TooLarge {
        /// Document name.
        origin: String,
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not well-formed XML.
    #[error("{origin}:{line}:{col}: XML error: {msg}")]
    Xml {
        /// Document name.
        origin: String,
        /// 1-based line.
        line: u32,
        /// 1-based column.
        col: u32,
        /// Parser message.
        msg: String,
    },
    /// Well-formed but breaks a rule of the OpenIOC schema (or has an unparsable operand).
    #[error("{origin}:{line}:{col}: {msg}")]
    Invalid {
        /// Document name.
        origin: String,
        /// 1-based line (0 when unknown).
        line: u32,
        /// 1-based column (0 when unknown).
        col: u32,
        /// What is wrong.
        msg: String,
    },
    /// A STIX pattern does not parse.
    #[error("{origin}: STIX pattern error at offset {offset}: {msg}")]
    Stix {
        /// Document name (and indicator id).
        origin: String,
        /// Byte offset in the pattern.
        offset: usize,
        /// What is wrong.
        msg: String,
    },
    /// A STIX bundle is not valid JSON or lacks required members.
    #[error("{origin}: {msg}")]
    Json {
        /// Document name.
        origin: String,
        /// What is wrong (serde_json reports line and column).
        msg: String,
    },
    /// YARA rules failed to compile.
    #[error("{origin}: YARA: {msg}")]
    Yara {
        /// Document name.
        origin: String,
        /// Compiler message.
        msg: String,
    },
}

/// The first `n` of `lines`, joined with `; `, and how many more there are: for
/// messages that list what a document set aside, which a feed can make endless.
pub fn first_of(lines: &[String], n: usize) -> String {
    let mut text = lines[..lines.len().min(n)].join("; ");
    if lines.len() > n {
        text.push_str(&format!("; and {} more", lines.len() - n));
    }
    text
}
