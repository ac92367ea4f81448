//! The inference tasks a worker serves, as named by the hub and the HF task API: the
//! hub and the worker share one declaration, in `hub-types`.

pub use hub_types::{Task, UnknownTask};
