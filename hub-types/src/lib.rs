//! What hub-api and hub-worker share, declared once: the control-plane wire contract
//! ([`control`]), the domain names both sides parse ([`Task`], [`Precision`],
//! [`ReplicaStatus`], each with its own error), and the memory a model needs
//! ([`memory`]). Deliberately small: serde, serde_json and thiserror only, so that
//! depending on it never pulls an inference engine or a web framework into the hub.

pub mod control;
pub mod memory;
pub mod number;
mod precision;
mod replica;
mod task;

pub use precision::{Precision, UnknownPrecision};
pub use replica::{ReplicaStatus, UnknownReplicaStatus};
pub use task::{Task, UnknownTask};
