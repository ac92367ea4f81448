//! The one error table of the API: every failure a handler can return, with its
//! stable snake_case code, HTTP status and (for the HF routes) `X-Error-Code`.
//!
//! Handlers return `Result<_, ApiError>`; nothing else decides a status code.
//! Internal failures log their full chain once and return a generic message.
//!
//! Bad input is typed where it is found: each domain has a `thiserror` enum
//! whose `Display` is the message ([`BodyError`], [`QueryError`],
//! [`LfsRequestError`], [`AccessRequestError`], [`RepoSettingsError`],
//! [`ParseError`] answer 400 `invalid_request`; [`TokenSpecError`],
//! [`EndpointSpecError`], [`FieldError`], [`WorkerReportError`] answer 400
//! `validation_failed`), and converts into `ApiError` with `?`. One message is
//! one variant. The free-text `InvalidRequest(String)` remains for one call
//! site (the gateway's forwarded method, which actix has already parsed).

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

pub use crate::domain::ParseError;
pub use crate::endpoints::EndpointSpecError;
pub use crate::gating::AccessRequestError;
pub use crate::jobs::JobSpecError;
pub use crate::routes::body::BodyError;
pub use crate::routes::git::GitError;
pub use crate::routes::hf::lfs::LfsRequestError;
pub use crate::routes::hf::repos::RepoSettingsError;
pub use crate::routes::hf::webhooks::WebhookError;
pub use crate::routes::inference::workers::WorkerReportError;
pub use crate::routes::query::QueryError;
pub use crate::routes::v1::tokens::TokenSpecError;
pub use crate::routes::v1::FieldError;
pub use crate::routes::xet::XetError;

/// A client-sent value cut to `max` characters, for an error message.
pub fn clip(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

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
    /// A path a client would read as leaving the repo's folder (a `..`
    /// segment, absolute, or `\\`/drive letter on Windows): 422, the Hub's
    /// status for it (huggingface_hub's `test_create_file_with_relative_path`).
    #[error("invalid path: {0}")]
    PathEscapes(String),
    #[error("invalid revision: {0}")]
    InvalidRevision(String),
    /// Free text: only for call sites not yet typed (prefer a typed enum).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("invalid request: {0}")]
    Body(#[from] BodyError),
    #[error("invalid request: {0}")]
    Query(#[from] QueryError),
    #[error("invalid request: {0}")]
    LfsRequest(#[from] LfsRequestError),
    #[error("invalid request: {0}")]
    AccessRequest(#[from] AccessRequestError),
    /// A Xet hash, xorb, shard or Range the CAS cannot take.
    #[error("{0}")]
    Xet(#[from] XetError),
    #[error("invalid request: {0}")]
    RepoSettings(#[from] RepoSettingsError),
    #[error("invalid request: {0}")]
    Parse(#[from] ParseError),
    #[error("invalid commit payload: {0}")]
    InvalidCommit(String),
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
    #[error(transparent)]
    TokenSpec(#[from] TokenSpecError),
    #[error(transparent)]
    EndpointSpec(#[from] EndpointSpecError),
    #[error(transparent)]
    Field(#[from] FieldError),
    #[error(transparent)]
    WorkerReport(#[from] WorkerReportError),
    /// A fine-tuning job request the hub cannot run (`jobs::JobSpecError`).
    #[error("invalid job: {0}")]
    JobSpec(#[from] JobSpecError),
    /// A webhook body out of bounds, or a target outside the allow-list.
    #[error(transparent)]
    Webhook(#[from] WebhookError),
    /// A git protocol request the hub cannot serve (`routes::git`).
    #[error("invalid request: {0}")]
    Git(#[from] GitError),

    // ---- 401 / 403 ----
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    /// The Hub's text; `{0}` is "model ns/name" or "dataset ns/name".
    #[error("Access to {0} is restricted and you are not in the authorized list. Ask for access on its page.")]
    GatedRepo(String),
    #[error("the upload link is invalid or has expired")]
    InvalidSignature,
    #[error("cross-site request rejected: missing or invalid CSRF token")]
    CsrfRejected,

    // ---- 404 ----
    #[error("repository not found")]
    RepoNotFound,
    /// The Hub's own text, which clients and users match on.
    #[error("Invalid rev id: {0}")]
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
    #[error("The branch was updated since you opened this page. Please refresh and try again.")]
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
    #[error("the daily token quota of {namespace} ({limit} prompt + completion tokens per UTC day) is spent ({used} used today); it resets at {resets_at}")]
    TokenQuotaExceeded {
        namespace: String,
        limit: i64,
        used: i64,
        /// RFC 3339, the next UTC midnight.
        resets_at: String,
        retry_after_s: u64,
    },

    #[error("the daily fine-tuning quota of {namespace} ({limit} CPU-seconds per UTC day) is spent ({used} used today); it resets at {resets_at}")]
    JobQuotaExceeded {
        namespace: String,
        limit: i64,
        used: i64,
        /// RFC 3339, the next UTC midnight.
        resets_at: String,
        retry_after_s: u64,
    },

    // ---- 5xx ----
    /// The dataset viewer has not converted the revision yet (the HF
    /// viewer's `ResponseNotReady`, 500).
    #[error("The response is not ready yet. Please retry later.")]
    ResponseNotReady,
    /// The dataset viewer cannot show the revision: the reason (which file,
    /// which line, why).
    #[error("The dataset viewer cannot show this dataset: {0}")]
    DatasetCannotShow(String),
    #[error("the object store is unavailable, retry later")]
    StorageUnavailable(#[source] object_store::Error),
    #[error("the database is unavailable, retry later")]
    DatabaseUnavailable(#[source] anyhow::Error),
    #[error("{0}")]
    InsufficientStorage(String),
    #[error("{0}")]
    Unavailable(String),
    /// A worker took the request and sent nothing for too long.
    #[error("{0}")]
    UpstreamTimeout(String),
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
            InvalidPath(_) | PathEscapes(_) => "invalid_path",
            InvalidRevision(_) => "invalid_revision",
            InvalidRequest(_) | Body(_) | Query(_) | LfsRequest(_) | AccessRequest(_)
            | RepoSettings(_) | Parse(_) | Git(_) => "invalid_request",
            InvalidCommit(_) => "invalid_commit",
            Xet(_) => "invalid_xet_data",
            InvalidGguf { .. } => "invalid_gguf",
            DigestMismatch(_) => "digest_mismatch",
            LfsObjectMissing(_) => "lfs_object_missing",
            InvalidRange(_) => "invalid_range",
            UploadPartMissing(_) => "upload_part_missing",
            TokenSpec(_) | EndpointSpec(_) | Field(_) | WorkerReport(_) => "validation_failed",
            JobSpec(_) => "invalid_job",
            Webhook(e) => e.code(),
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
            TokenQuotaExceeded { .. } => "token_quota_exceeded",
            JobQuotaExceeded { .. } => "job_quota_exceeded",
            StorageUnavailable(_) => "storage_unavailable",
            DatabaseUnavailable(_) => "database_unavailable",
            InsufficientStorage(_) => "insufficient_storage",
            Unavailable(_) => "unavailable",
            UpstreamTimeout(_) => "upstream_timeout",
            Internal(_) => "internal_error",
            ResponseNotReady => "response_not_ready",
            DatasetCannotShow(_) => "dataset_cannot_show",
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
            | Body(_)
            | Query(_)
            | LfsRequest(_)
            | AccessRequest(_)
            | RepoSettings(_)
            | Parse(_)
            | InvalidCommit(_)
            | Xet(_)
            | InvalidGguf { .. }
            | DigestMismatch(_)
            | LfsObjectMissing(_)
            | InvalidRange(_)
            | UploadPartMissing(_)
            | TokenSpec(_)
            | EndpointSpec(_)
            | Field(_)
            | WorkerReport(_)
            | JobSpec(_)
            | Webhook(_)
            | Git(_) => StatusCode::BAD_REQUEST,
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
            RateLimited { .. }
            | Overloaded(_)
            | TenantBusy { .. }
            | TokenQuotaExceeded { .. }
            | JobQuotaExceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
            StorageUnavailable(_) | DatabaseUnavailable(_) | Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
            UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            PathEscapes(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Internal(_) | ResponseNotReady => StatusCode::INTERNAL_SERVER_ERROR,
            DatasetCannotShow(_) => StatusCode::NOT_IMPLEMENTED,
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
            ResponseNotReady => Some("ResponseNotReady"),
            DatasetCannotShow(_) => Some("DatasetGenerationError"),
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

/// A database error shared by the requests one query answered (`repo_lookup`).
impl From<std::sync::Arc<sqlx::Error>> for ApiError {
    fn from(e: std::sync::Arc<sqlx::Error>) -> Self {
        let err = anyhow::anyhow!("{e}");
        if db_unavailable(&e) {
            ApiError::DatabaseUnavailable(err)
        } else {
            ApiError::Internal(err)
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
            ApiError::TenantBusy { retry_after_s, .. }
            | ApiError::TokenQuotaExceeded { retry_after_s, .. }
            | ApiError::JobQuotaExceeded { retry_after_s, .. } => {
                resp.insert_header(("Retry-After", retry_after_s.to_string()));
            }
            ApiError::Overloaded(_)
            | ApiError::StorageUnavailable(_)
            | ApiError::DatabaseUnavailable(_)
            | ApiError::Unavailable(_)
            | ApiError::ResponseNotReady => {
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
    "invalid_xet_data",
    "invalid_gguf",
    "digest_mismatch",
    "lfs_object_missing",
    "invalid_range",
    "upload_part_missing",
    "validation_failed",
    "invalid_job",
    "webhook_target_refused",
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
    "token_quota_exceeded",
    "job_quota_exceeded",
    "storage_unavailable",
    "database_unavailable",
    "insufficient_storage",
    "unavailable",
    "upstream_timeout",
    "internal_error",
    "response_not_ready",
    "dataset_cannot_show",
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

    /// The typed input errors answer exactly what the free-text variants
    /// they replaced answered: status, code and message.
    #[test]
    fn typed_input_errors_keep_their_answers() {
        use crate::routes::query::QueryError as Q;
        let bad = |e: ApiError| (e.status().as_u16(), e.code(), e.to_string());
        let invalid = |m: &str| (400, "invalid_request", format!("invalid request: {m}"));
        let validation = |m: &str| (400, "validation_failed", m.to_string());
        let json = serde_json::from_str::<serde_json::Value>("{").unwrap_err();
        let cases: Vec<(ApiError, (u16, &str, String))> = vec![
            (BodyError::Read("eof".into()).into(), invalid("reading the body: eof")),
            (BodyError::Stream("reset".into()).into(), invalid("request body: reset")),
            (
                BodyError::Encoded("gzip".into()).into(),
                invalid("Content-Encoding \"gzip\" is not accepted; send the body uncompressed"),
            ),
            (
                BodyError::Json(json).into(),
                invalid("invalid JSON body: EOF while parsing an object at line 1 column 1"),
            ),
            (BodyError::Missing.into(), invalid("a JSON body is required")),
            (BodyError::NotObject.into(), invalid("the body must be a JSON object")),
            (Q::malformed("x").into(), invalid("invalid query: x")),
            (Q::PathParams("x".into()).into(), invalid("invalid path: x")),
            (
                Q::bool("full", &"y".repeat(50)).into(),
                invalid(&format!(
                    "query parameter full must be true or false, not {:?}",
                    "y".repeat(40)
                )),
            ),
            (
                Q::LimitOutOfRange { limit: 0, max: 100 }.into(),
                invalid("limit 0 is outside 1..=100"),
            ),
            (
                Q::LimitNotPositive("-1".into()).into(),
                invalid("limit \"-1\" is not a positive integer"),
            ),
            (
                Q::LimitNotWhole("x".into()).into(),
                invalid("query parameter limit must be a positive whole number, not \"x\""),
            ),
            (Q::Cursor.into(), invalid("invalid cursor")),
            (Q::CursorNotValid.into(), invalid("cursor is not valid")),
            (
                Q::Sort("x".into()).into(),
                invalid("sort \"x\" is not one of lastModified, createdAt, downloads, likes"),
            ),
            (
                LfsRequestError::Operation("x".into()).into(),
                invalid("operation \"x\" is not upload or download"),
            ),
            (
                LfsRequestError::IsMultipart.into(),
                invalid("this upload is multipart: send its parts to the part links"),
            ),
            (LfsRequestError::NotMultipart.into(), invalid("this upload is not multipart")),
            (
                LfsRequestError::PartOutOfRange { part: 3, count: 2 }.into(),
                invalid("part 3 is outside 1..=2"),
            ),
            (
                LfsRequestError::PartCount {
                    needed: 2,
                    uploaded: 1,
                    listed: 0,
                }
                .into(),
                invalid("2 parts are needed; 1 were uploaded and 0 listed"),
            ),
            (
                LfsRequestError::PartEtag(2).into(),
                invalid("part 2 has a different ETag than uploaded"),
            ),
            (LfsRequestError::ContentLength.into(), invalid("Content-Length is not a number")),
            (
                LfsRequestError::SampleNotBase64("a.bin".into()).into(),
                invalid("sample of a.bin is not base64"),
            ),
            (
                AccessRequestError::Status("x".into()).into(),
                invalid("status \"x\" is not one of pending, accepted, rejected"),
            ),
            (
                AccessRequestError::NotGated("ns/r".into()).into(),
                invalid("ns/r is not gated; access requests apply only to gated repositories"),
            ),
            (
                AccessRequestError::Reason.into(),
                invalid("the rejection reason must be at most 1000 characters, without NUL"),
            ),
            (
                AccessRequestError::UserOrRequestId.into(),
                invalid("send exactly one of user and requestId"),
            ),
            (
                AccessRequestError::AlreadyGranted {
                    user: "bob".into(),
                    repo: "ns/r".into(),
                }
                .into(),
                invalid("bob already has access to ns/r"),
            ),
            (
                RepoSettingsError::Visibility("x".into()).into(),
                invalid("visibility \"x\" is not one of public, private"),
            ),
            (
                RepoSettingsError::Gated("1".into()).into(),
                invalid("gated must be \"auto\", \"manual\" or false, not 1"),
            ),
            (
                ParseError::NotSha256("x".into()).into(),
                invalid("\"x\" is not a sha256 digest (64 hex characters)"),
            ),
            (
                ParseError::RepoType("x".into()).into(),
                invalid("repo type \"x\" is not supported (use \"model\" or \"dataset\")"),
            ),
            (
                TokenSpecError::Name.into(),
                validation("name must have 1 to 100 printable characters"),
            ),
            (TokenSpecError::ScopeCount.into(), validation("scopes must list 1 to 5 scopes")),
            (
                TokenSpecError::Scope("x".into()).into(),
                validation("scope \"x\" is not one of read, write, inference, admin, worker"),
            ),
            (
                TokenSpecError::List("repos").into(),
                validation("repos must list 1 to 50 entries (omit it for no restriction)"),
            ),
            (
                TokenSpecError::Namespace("x".into()).into(),
                validation("\"x\" is not a namespace name"),
            ),
            (
                TokenSpecError::Repo("x".into()).into(),
                validation("\"x\" is not a repo id like ns/name or dataset:ns/name"),
            ),
            (TokenSpecError::Expiry.into(), validation("expires_in_days must be 1 to 3650")),
            (
                EndpointSpecError::NoTask.into(),
                validation("the repo declares no task (pipeline_tag) and none could be derived from its config; pass \"task\""),
            ),
            (
                EndpointSpecError::Task("x".into()).into(),
                validation("task \"x\" is not supported; supported tasks: feature-extraction, sentence-similarity, text-classification, text-generation"),
            ),
            (
                EndpointSpecError::MinReplicas.into(),
                validation("min_replicas must be between 0 and 8"),
            ),
            (
                EndpointSpecError::MaxReplicas.into(),
                validation("max_replicas must be between max(1, min_replicas) and 8"),
            ),
            (
                EndpointSpecError::ScaleToZero.into(),
                validation("scale_to_zero_after_s must be at least 10"),
            ),
            (
                FieldError::Email.into(),
                validation("email must be an address like name@example.com"),
            ),
            (FieldError::Password.into(), validation("password must have 8 to 1024 characters")),
            (
                FieldError::Fullname.into(),
                validation("fullname must be at most 200 printable characters"),
            ),
            (
                FieldError::Role("x".into()).into(),
                validation("role \"x\" is not one of admin, write, read"),
            ),
            (
                FieldError::QuotaLimits.into(),
                validation("storage_bytes must be >= 0, rate_per_second 0 to 1000000, rate_burst 1 to 1000000"),
            ),
            (
                EndpointSpecError::OutOfRange { field: "max_replicas", value: 1 << 40 }.into(),
                validation("max_replicas 1099511627776 is out of range"),
            ),
            (
                EndpointSpecError::Name("x".into()).into(),
                validation("endpoint name: x"),
            ),
            (
                EndpointSpecError::RepoDeleted.into(),
                validation("the endpoint's repository was deleted"),
            ),
            (WorkerReportError::Url("x".into()).into(), validation("url: x")),
            (
                WorkerReportError::UrlScheme.into(),
                validation("url must be an http(s) URL with a host, and no user, password, query or fragment"),
            ),
            (
                WorkerReportError::NameOrCores.into(),
                validation("name (1-200 chars) and capacity.cores > 0 are required"),
            ),
            (
                WorkerReportError::Status(hub_types::UnknownReplicaStatus("done".into())).into(),
                validation("status \"done\" is not pulling, loading, running or failed"),
            ),
            (
                BodyError::JsonField("models[0].assignment_id: x".into()).into(),
                invalid("invalid JSON body: models[0].assignment_id: x"),
            ),
            (
                Q::Time("from").into(),
                invalid("from must be a date (YYYY-MM-DD) or an RFC 3339 time"),
            ),
            (
                FieldError::AccessRequestFields.into(),
                validation("fields must be at most 20 names of up to 100 characters with string, number or boolean values of up to 2000 characters, without NUL"),
            ),
        ];
        for (err, want) in cases {
            assert_eq!(bad(err), want);
        }
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
            ApiError::TokenQuotaExceeded {
                namespace: "acme".into(),
                limit: 1,
                used: 2,
                resets_at: "2026-12-03T00:00:00Z".into(),
                retry_after_s: 3,
            },
            ApiError::JobQuotaExceeded {
                namespace: "acme".into(),
                limit: 1,
                used: 2,
                resets_at: "2026-12-03T00:00:00Z".into(),
                retry_after_s: 3,
            },
            ApiError::JobSpec(JobSpecError::WallTime),
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
