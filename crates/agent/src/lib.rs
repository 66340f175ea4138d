//! The Riposte endpoint agent.
//!
//! [`identity`] enrolls the device and keeps its certificate and pinned CA; [`link`] keeps
//! the mutual-TLS channel to the server up and applies deliveries in order.

pub mod control;
pub mod daemon;
pub mod identity;
pub mod link;
pub mod response;
pub mod sandboxing;
pub mod scanner;
pub mod state;
