//! Shared application state handed to every handler.

use crate::auth::jwt::KeyRing;
use crate::storage::Storage;
use sqlx::PgPool;

/// Everything a request handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    pub storage: Storage,
    /// Absolute base URL without a trailing slash.
    pub public_url: String,
    pub keys: KeyRing,
    pub limits: Limits,
    /// Per-process routing state of the endpoint gateway.
    pub live: std::sync::Arc<crate::gateway::Live>,
}

/// Request limits (documented in docs/API.md).
#[derive(Debug, Clone)]
pub struct Limits {
    /// JSON bodies.
    pub json_body: usize,
    /// The NDJSON commit body.
    pub commit_body: u64,
    /// One NDJSON line (an inline file is base64 in one line).
    pub commit_line: usize,
    /// Operations in one commit.
    pub commit_ops: usize,
    /// Largest LFS object.
    pub lfs_object: u64,
    /// Files over this many bytes are stored with LFS.
    pub lfs_threshold: u64,
    /// Multipart chunk size offered to clients.
    pub multipart_chunk: u64,
    /// Objects above this size are offered multipart uploads.
    pub multipart_threshold: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            json_body: 2 * 1024 * 1024,
            commit_body: 2 * 1024 * 1024 * 1024,
            commit_line: 128 * 1024 * 1024,
            commit_ops: 25_000,
            lfs_object: 500 * 1024 * 1024 * 1024,
            lfs_threshold: 10_000_000,
            multipart_chunk: 16 * 1024 * 1024,
            multipart_threshold: 50 * 1024 * 1024,
        }
    }
}
