//! hub-xet: placeholder docs (rewritten below).
pub mod chunker;
pub mod hash;
pub mod reconstruct;
pub mod shard;
pub mod xorb;
