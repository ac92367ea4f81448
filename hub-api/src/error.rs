//! The one error table of the API: every failure a handler can return, with its
//! stable snake_case code, HTTP status and (for the HF routes) `X-Error-Code`.
//!
//! Handlers return `Result<_, ApiError>`; nothing else decides a status code.
//! Internal failures log their full chain once and return a generic message.

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

/// Every error the API can answer with. Variants carry what the message needs;
/// [`ApiError::code`] and [`ApiError::status`] are the single table.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    // ---- 400: the request itself is wrong ----
    #[error("invalid repository name: {0}")]
    InvalidRepoName(String),
    #[error("invalid namespace name: {0}")]
    InvalidNamespaceName(String),
    #[error("invalid path: {0}")]
    InvalidPath(String),
    #[error("invalid revision: {0}")]
    InvalidRevision(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("invalid commit payload: {0}")]
    InvalidCommit(String),
    #[error("invalid safetensors file {path}: {reason}")]
    InvalidSafetensors { path: String, reason: String },
    #[error("invalid GGUF file {path}: {reason}")]
    InvalidGguf { path: String, reason: String },
    #[error("uploaded bytes do not match: {0}")]
    DigestMismatch(String),
    #[error("LFS object {0} was never uploaded to this repository")]
    LfsObjectMissing(String),
    #[error("invalid range: {0}")]
    InvalidRange(String),
    #[error("part {0} of the upload is missing from storage or has the wrong size; upload it again, then complete")]
    UploadPartMissing(u32),
    #[error("{0}")]
    Validation(String),

    // ---- 401 / 403 ----
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("access to {0} is restricted: you must be granted access to download its files")]
    GatedRepo(String),
    #[error("the upload link is invalid or has expired")]
    InvalidSignature,
    #[error("cross-site request rejected: missing or invalid CSRF token")]
    CsrfRejected,

    // ---- 404 ----
    #[error("repository not found")]
    RepoNotFound,
    #[error("revision not found: {0}")]
    RevisionNotFound(String),
    #[error("entry not found: {path}")]
    EntryNotFound {
        path: String,
        commit: Option<String>,
    },
    #[error("{0} not found")]
    NotFound(&'static str),

    // ---- 405 ----
    #[error("method {method} is not allowed here; allowed: {allow}")]
    MethodNotAllowed { method: String, allow: String },

    // ---- 409 / 412 / 413 / 416 / 429 ----
    #[error("{0}")]
    Conflict(String),
    #[error("{0}: an organization must keep at least one admin")]
    LastAdmin(String),
    #[error("this upload is already complete; nothing more can be sent to it")]
    UploadCompleted,
    #[error("this upload has expired; ask the LFS batch API for a new one")]
    UploadExpired,
    #[error("A commit has happened since. Please refresh and try again.")]
    ParentCommitMismatch,
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("storage quota exceeded: {0}")]
    QuotaExceeded(String),
    #[error("range not satisfiable (size {size})")]
    RangeNotSatisfiable { size: u64 },
    #[error("rate limit exceeded; retry in {retry_after_s} s")]
    RateLimited { retry_after_s: u64, limit: u64 },
    #[error("{0}")]
    Overloaded(String),
    #[error(
        "too many heavy requests of yours at once (at most {running}); retry in {retry_after_s} s"
    )]
    TenantBusy { retry_after_s: u64, running: usize },

    // ---- 5xx ----
    #[error("the object store is unavailable, retry later")]
    StorageUnavailable(#[source] object_store::Error),
    #[error("the database is unavailable, retry later")]
    DatabaseUnavailable(#[source] anyhow::Error),
    #[error("{0}")]
    InsufficientStorage(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: String,
    code: &'a str,
}

impl ApiError {
    /// The stable, documented snake_case code (see docs/API.md).
    pub fn code(&self) -> &'static str {
        use ApiError::*;
        match self {
            InvalidRepoName(_) => "invalid_repo_name",
            InvalidNamespaceName(_) => "invalid_namespace_name",
            InvalidPath(_) => "invalid_path",
            InvalidRevision(_) => "invalid_revision",
            InvalidRequest(_) => "invalid_request",
            InvalidCommit(_) => "invalid_commit",
            InvalidSafetensors { .. } => "invalid_safetensors",
            InvalidGguf { .. } => "invalid_gguf",
            DigestMismatch(_) => "digest_mismatch",
            LfsObjectMissing(_) => "lfs_object_missing",
            InvalidRange(_) => "invalid_range",
            UploadPartMissing(_) => "upload_part_missing",
            Validation(_) => "validation_failed",
            Unauthorized(_) => "unauthorized",
            Forbidden(_) => "forbidden",
            GatedRepo(_) => "gated_repo",
            InvalidSignature => "invalid_signature",
            CsrfRejected => "csrf_rejected",
            RepoNotFound => "repo_not_found",
            RevisionNotFound(_) => "revision_not_found",
            EntryNotFound { .. } => "entry_not_found",
            NotFound(_) => "not_found",
            MethodNotAllowed { .. } => "method_not_allowed",
            Conflict(_) => "conflict",
            LastAdmin(_) => "last_admin",
            UploadCompleted => "upload_completed",
            UploadExpired => "upload_expired",
            ParentCommitMismatch => "parent_commit_mismatch",
            PayloadTooLarge(_) => "payload_too_large",
            QuotaExceeded(_) => "quota_exceeded",
            RangeNotSatisfiable { .. } => "range_not_satisfiable",
            RateLimited { .. } => "rate_limited",
            Overloaded(_) => "overloaded",
            TenantBusy { .. } => "tenant_busy",
            StorageUnavailable(_) => "storage_unavailable",
            DatabaseUnavailable(_) => "database_unavailable",
            InsufficientStorage(_) => "insufficient_storage",
            Unavailable(_) => "unavailable",
            Internal(_) => "internal_error",
        }
    }

    /// The HTTP status of each error.
    pub fn status(&self) -> StatusCode {
        use ApiError::*;
        match self {
            InvalidRepoName(_)
            | InvalidNamespaceName(_)
            | InvalidPath(_)
            | InvalidRevision(_)
            | InvalidRequest(_)
            | InvalidCommit(_)
            | InvalidSafetensors { .. }
            | InvalidGguf { .. }
            | DigestMismatch(_)
            | LfsObjectMissing(_)
            | InvalidRange(_)
            | UploadPartMissing(_)
            | Validation(_) => StatusCode::BAD_REQUEST,
            Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Forbidden(_) | GatedRepo(_) | InvalidSignature | CsrfRejected => StatusCode::FORBIDDEN,
            RepoNotFound | RevisionNotFound(_) | EntryNotFound { .. } | NotFound(_) => {
                StatusCode::NOT_FOUND
            }
            MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Conflict(_) | LastAdmin(_) | UploadCompleted => StatusCode::CONFLICT,
            UploadExpired => StatusCode::GONE,
            ParentCommitMismatch => StatusCode::PRECONDITION_FAILED,
            PayloadTooLarge(_) | QuotaExceeded(_) => StatusCode::PAYLOAD_TOO_LARGE,
            RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            RateLimited { .. } | Overloaded(_) | TenantBusy { .. } => StatusCode::TOO_MANY_REQUESTS,
            StorageUnavailable(_) | DatabaseUnavailable(_) | Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
            Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `X-Error-Code` the Hugging Face clients classify errors by.
    pub fn hf_code(&self) -> Option<&'static str> {
        use ApiError::*;
        match self {
            RepoNotFound => Some("RepoNotFound"),
            RevisionNotFound(_) => Some("RevisionNotFound"),
            EntryNotFound { .. } => Some("EntryNotFound"),
            GatedRepo(_) => Some("GatedRepo"),
            _ => None,
        }
    }

    /// Wraps an internal failure (logged once, answered generically). A
    /// failure caused by the database being unreachable (anywhere in its
    /// chain) is a 503 `database_unavailable` instead: the client can retry.
    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        let e = e.into();
        let unavailable = e
            .chain()
            .filter_map(|c| c.downcast_ref::<sqlx::Error>())
            .any(db_unavailable);
        if unavailable {
            ApiError::DatabaseUnavailable(e)
        } else {
            ApiError::Internal(e)
        }
    }

    /// Whether this error says the database is down (what the readiness probe
    /// and the circuit breaker of `health` react to).
    pub fn is_database_unavailable(&self) -> bool {
        matches!(self, ApiError::DatabaseUnavailable(_))
    }
}

/// Whether a database error means "the database cannot serve right now" (503,
/// retry) rather than a bug (500): the connection was refused, lost or timed
/// out (also mid-transaction), the pool is exhausted or closed, or the server
/// reports a SQLSTATE of class 08 (connection exception), 53 (insufficient
/// resources: disk full, out of memory, too many connections), 57P01-57P03
/// (shutdown, crash, starting up) or 58 (system/I/O error).
pub fn db_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|c| sqlstate_unavailable(&c)),
        _ => false,
    }
}

/// The SQLSTATE half of [`db_unavailable`].
pub fn sqlstate_unavailable(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("58")
        || matches!(code, "57P01" | "57P02" | "57P03")
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if db_unavailable(&e) {
            ApiError::DatabaseUnavailable(e.into())
        } else {
            ApiError::Internal(e.into())
        }
    }
}

impl From<object_store::Error> for ApiError {
    fn from(e: object_store::Error) -> Self {
        ApiError::StorageUnavailable(e)
    }
}

fn header_safe(s: &str) -> String {
    // Header values must be visible ASCII; keep the message readable.
    s.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(512)
        .collect()
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status();
        let message = match self {
            ApiError::Internal(e) => {
                tracing::error!(error = format!("{e:#}"), "internal error");
                self.to_string()
            }
            ApiError::StorageUnavailable(e) => {
                tracing::warn!(error = %e, "object store unavailable");
                self.to_string()
            }
            ApiError::DatabaseUnavailable(e) => {
                tracing::warn!(error = format!("{e:#}"), "database unavailable");
                self.to_string()
            }
            _ => self.to_string(),
        };
        let mut resp = HttpResponse::build(status);
        if let Some(code) = self.hf_code() {
            resp.insert_header(("X-Error-Code", code));
        }
        if let Ok(v) = HeaderValue::from_str(&header_safe(&message)) {
            resp.insert_header((HeaderName::from_static("x-error-message"), v));
        }
        match self {
            ApiError::EntryNotFound {
                commit: Some(commit),
                ..
            } => {
                resp.insert_header(("X-Repo-Commit", commit.as_str()));
            }
            ApiError::RangeNotSatisfiable { size } => {
                resp.insert_header(("Content-Range", format!("bytes */{size}")));
            }
            ApiError::MethodNotAllowed { allow, .. } => {
                if let Ok(v) = HeaderValue::from_str(allow) {
                    resp.insert_header((actix_web::http::header::ALLOW, v));
                }
            }
            ApiError::RateLimited {
                retry_after_s,
                limit,
            } => {
                resp.insert_header(("Retry-After", retry_after_s.to_string()));
                resp.insert_header(("RateLimit", format!("\"default\";r=0;t={retry_after_s}")));
                resp.insert_header(("RateLimit-Policy", format!("\"default\";q={limit};w=1")));
            }
            ApiError::TenantBusy { retry_after_s, .. } => {
                resp.insert_header(("Retry-After", retry_after_s.to_string()));
            }
            ApiError::Overloaded(_)
            | ApiError::StorageUnavailable(_)
            | ApiError::DatabaseUnavailable(_)
            | ApiError::Unavailable(_) => {
                resp.insert_header(("Retry-After", "1"));
            }
            ApiError::InsufficientStorage(_) => {
                resp.insert_header(("Retry-After", "30"));
            }
            _ => {}
        }
        resp.json(ErrorBody {
            error: message,
            code: self.code(),
        })
    }
}

/// Every code in the table, for docs and the test that keeps docs/API.md true.
pub const ALL_CODES: &[&str] = &[
    "invalid_repo_name",
    "invalid_namespace_name",
    "invalid_path",
    "invalid_revision",
    "invalid_request",
    "invalid_commit",
    "invalid_safetensors",
    "invalid_gguf",
    "digest_mismatch",
    "lfs_object_missing",
    "invalid_range",
    "upload_part_missing",
    "validation_failed",
    "unauthorized",
    "forbidden",
    "gated_repo",
    "invalid_signature",
    "csrf_rejected",
    "repo_not_found",
    "revision_not_found",
    "entry_not_found",
    "not_found",
    "method_not_allowed",
    "conflict",
    "last_admin",
    "upload_completed",
    "upload_expired",
    "parent_commit_mismatch",
    "payload_too_large",
    "quota_exceeded",
    "range_not_satisfiable",
    "rate_limited",
    "overloaded",
    "tenant_busy",
    "storage_unavailable",
    "database_unavailable",
    "insufficient_storage",
    "unavailable",
    "internal_error",
];

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/API.md lists exactly the codes of this table.
    #[test]
    fn docs_list_every_code() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/API.md"))
            .unwrap();
        let section = doc
            .split("## Error codes")
            .nth(1)
            .expect("an Error codes section");
        let documented: std::collections::BTreeSet<&str> = section
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split('`').next())
            .collect();
        let table: std::collections::BTreeSet<&str> = ALL_CODES.iter().copied().collect();
        assert_eq!(documented, table);
    }

    /// Each variant's code is in ALL_CODES.
    #[test]
    fn codes_are_listed() {
        let samples = [
            ApiError::RepoNotFound,
            ApiError::ParentCommitMismatch,
            ApiError::InvalidSignature,
            ApiError::CsrfRejected,
            ApiError::RangeNotSatisfiable { size: 1 },
            ApiError::MethodNotAllowed {
                method: "PUT".into(),
                allow: "GET".into(),
            },
            ApiError::RateLimited {
                retry_after_s: 1,
                limit: 1,
            },
            ApiError::QuotaExceeded(String::new()),
            ApiError::UploadCompleted,
            ApiError::UploadExpired,
            ApiError::UploadPartMissing(1),
            ApiError::Internal(anyhow::anyhow!("x")),
        ];
        for s in samples {
            assert!(ALL_CODES.contains(&s.code()), "{}", s.code());
        }
    }
}
