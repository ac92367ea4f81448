//! Query strings and path parameters: what a request can get wrong in them
//! (400 `invalid_request`), one variant per message.

use crate::error::clip;

/// A query string or path parameter the hub cannot use.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("invalid query: {0}")]
    Malformed(String),
    #[error("invalid path: {0}")]
    PathParams(String),
    #[error("query parameter {name} must be true or false, not {value:?}")]
    Bool { name: String, value: String },
    #[error("limit {limit} is outside 1..={max}")]
    LimitOutOfRange { limit: i64, max: i64 },
    /// The model and dataset lists' wording.
    #[error("limit {0:?} is not a positive integer")]
    LimitNotPositive(String),
    /// The tree listing's wording.
    #[error("query parameter limit must be a positive whole number, not {0:?}")]
    LimitNotWhole(String),
    /// A cursor of the management API or the access-request list.
    #[error("invalid cursor")]
    Cursor,
    /// A cursor of the model, dataset and tree lists.
    #[error("cursor is not valid")]
    CursorNotValid,
    #[error("sort {0:?} is not one of lastModified, createdAt, downloads, likes")]
    Sort(String),
    #[error("{0} must be a date (YYYY-MM-DD) or an RFC 3339 time")]
    Time(&'static str),
    /// A dataset viewer parameter: which one, and why.
    #[error("query parameter {name}: {reason}")]
    Param { name: &'static str, reason: String },
}

impl QueryError {
    /// A query string that does not deserialize.
    pub fn malformed(e: impl std::fmt::Display) -> Self {
        QueryError::Malformed(e.to_string())
    }

    /// A boolean parameter with another value (cut to 40 characters).
    pub fn bool(name: &str, value: &str) -> Self {
        QueryError::Bool {
            name: name.to_string(),
            value: clip(value, 40),
        }
    }
}
