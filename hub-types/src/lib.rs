//! What hub-api and hub-worker share, declared once: the control-plane wire contract
//! ([`control`]), the domain names both sides parse ([`Task`], [`Precision`],
//! [`ReplicaStatus`], each with its own error), and the memory a model needs
//! ([`memory`], [`decoder`] for decoders), the token-metering contract
//! ([`metering`]), and the fine-tuning job contract ([`jobs`]). Deliberately small:
//! serde, serde_json and thiserror only, so that depending on it never pulls an
//! inference engine or a web framework into the hub.

/// The string conversions of a wire name (`FromStr`, serde's `TryFrom<String>`,
/// `Display`), all through the type's own `parse` and `as_str`.
macro_rules! wire_name {
    ($ty:ty, $err:ty) => {
        impl std::str::FromStr for $ty {
            type Err = $err;
            fn from_str(s: &str) -> Result<$ty, $err> {
                <$ty>::parse(s)
            }
        }

        impl TryFrom<String> for $ty {
            type Error = $err;
            fn try_from(s: String) -> Result<$ty, $err> {
                <$ty>::parse(&s)
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use wire_name;

pub mod control;
pub mod decoder;
pub mod jobs;
pub mod memory;
pub mod metering;
pub mod number;
mod precision;
mod replica;
mod task;

pub use precision::{Precision, UnknownPrecision};
pub use replica::{ReplicaStatus, UnknownReplicaStatus};
pub use task::{Task, UnknownTask};
