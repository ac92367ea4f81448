//! Domain newtypes that parse at the edge: repo ids, names, paths, revisions, digests.

pub mod names;
pub mod path;
pub mod revision;

pub use names::{NamespaceName, RepoId, RepoName, RepoType};
pub use path::RepoPath;
pub use revision::{is_commit_oid, RefName, Revision};

use crate::error::ApiError;

/// A value that is not what it should be (400 `invalid_request`). The names
/// have their own codes (`invalid_repo_name`, ...).
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("{0:?} is not a sha256 digest (64 hex characters)")]
    NotSha256(String),
    #[error("repo type {0:?} is not supported (use \"model\" or \"dataset\")")]
    RepoType(String),
}

/// A lowercase hex sha256 digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct Sha256(String);

impl Sha256 {
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let lower = s.to_ascii_lowercase();
        if lower.len() == 64 && lower.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(lower))
        } else {
            Err(ParseError::NotSha256(crate::error::clip(s, 80)).into())
        }
    }
    /// From a digest computed here.
    pub fn from_digest(bytes: &[u8]) -> Self {
        Self(hex::encode(bytes))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Sha256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
