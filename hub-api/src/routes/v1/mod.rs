//! The management REST API under `/api/v1`: JSON, snake_case, stable error
//! codes (`crate::error`), cursor pagination on lists, and an OpenAPI document
//! generated from these handlers and DTOs (`GET /api/v1/openapi.json`).
//! DTOs are built from rows here; rows never go to the wire.

pub mod access_requests;
pub mod audit;
pub mod jobs;
pub mod keys;
pub mod openapi;
pub mod orgs;
pub mod quotas;
pub mod session;
pub mod tokens;
pub mod users;
pub mod webhooks;

use crate::error::{ApiError, ApiResult, QueryError};
use actix_web::{dev::Payload, web, FromRequest, HttpRequest};
use serde::{Deserialize, Serialize};
use std::future::{ready, Ready};
use utoipa::{IntoParams, ToSchema};

/// The largest page.
pub const MAX_LIMIT: i64 = 100;
/// The page size when none is asked for.
pub const DEFAULT_LIMIT: i64 = 50;

/// `?cursor=&limit=` of a list request.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// The `next_cursor` of the previous page (opaque).
    #[param(pattern = "^[0-9]{1,18}$")]
    pub cursor: Option<String>,
    /// Items per page, 1 to 100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
}

/// A field of a management API body outside what it allows (400
/// `validation_failed`). Token specs have their own enum
/// ([`tokens::TokenSpecError`]).
#[derive(Debug, thiserror::Error)]
pub enum FieldError {
    #[error("email must be an address like name@example.com")]
    Email,
    #[error("password must have 8 to 1024 characters")]
    Password,
    #[error("fullname must be at most 200 printable characters")]
    Fullname,
    #[error("role {0:?} is not one of admin, write, read")]
    Role(String),
    #[error("storage_bytes must be >= 0, rate_per_second 0 to 1000000, rate_burst 1 to 1000000")]
    QuotaLimits,
    #[error("daily_token_quota must be a whole number >= 0 (null: unlimited)")]
    DailyTokenQuota,
    #[error("daily_job_cpu_seconds must be a whole number >= 0 (null: unlimited)")]
    DailyJobCpuSeconds,
    #[error("fields must be at most 20 names of up to 100 characters with string, number or boolean values of up to 2000 characters, without NUL")]
    AccessRequestFields,
}

/// A parsed page request.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    /// Position after which (or, for newest-first lists, before which) to start.
    pub cursor: Option<i64>,
    pub limit: i64,
}

impl Page {
    /// Parses `cursor` and `limit` from a query string.
    pub fn parse(query: &str) -> ApiResult<Page> {
        let q = web::Query::<PageQuery>::from_query(query)
            .map_err(QueryError::malformed)?
            .into_inner();
        let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(QueryError::LimitOutOfRange {
                limit,
                max: MAX_LIMIT,
            }
            .into());
        }
        let cursor = match q.cursor.as_deref() {
            None => None,
            Some(c) => Some(
                Some(c)
                    .filter(|c| c.len() <= 18 && c.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|c| c.parse::<i64>().ok())
                    .ok_or(QueryError::Cursor)?,
            ),
        };
        Ok(Page { cursor, limit })
    }

    /// The rows to fetch: one more than the page, to know whether another follows.
    pub fn fetch(&self) -> i64 {
        self.limit + 1
    }

    /// Trims the extra row and returns the next cursor.
    pub fn finish<T>(&self, rows: &mut Vec<T>, key: impl Fn(&T) -> i64) -> Option<String> {
        if rows.len() as i64 > self.limit {
            rows.truncate(self.limit as usize);
            rows.last().map(|r| key(r).to_string())
        } else {
            None
        }
    }
}

impl FromRequest for Page {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Page::parse(req.query_string()))
    }
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDto {
    /// What was wrong, for people.
    pub error: String,
    /// The stable snake_case code (see docs/API-v1.md).
    pub code: String,
}

/// Formats a time for the management API (RFC 3339, UTC, `Z`).
pub fn time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A path segment that names a user or organization (parsed at the edge; a
/// name that cannot exist is simply not found).
pub fn namespace_param(req: &HttpRequest, name: &str, what: &'static str) -> ApiResult<String> {
    let raw = crate::registry::repo_ref::param(req, name).unwrap_or_default();
    crate::domain::NamespaceName::parse(&raw)
        .map(|n| n.to_string())
        .map_err(|_| ApiError::NotFound(what))
}

/// The pattern new user and organization names must match (documented in the
/// OpenAPI document): letters, digits and `_`, with single `-` or `.` between them.
pub const NEW_NAME_PATTERN: &str = "^[A-Za-z0-9_]([A-Za-z0-9_]|[-.][A-Za-z0-9_]){0,47}$";

/// Parses the name of a new user or organization: 400 when it breaks the
/// pattern, 409 when it is reserved (a top-level route of the hub).
pub fn new_name(s: &str) -> ApiResult<crate::domain::NamespaceName> {
    let re = regex::Regex::new(NEW_NAME_PATTERN).map_err(ApiError::internal)?;
    if !re.is_match(s) {
        return Err(ApiError::InvalidNamespaceName(format!(
            "{:?} must match {NEW_NAME_PATTERN}",
            s.chars().take(100).collect::<String>()
        )));
    }
    crate::domain::NamespaceName::parse(s)
        .map_err(|_| ApiError::Conflict(format!("the name {s:?} is reserved")))
}

/// Deserializes an optional integer that JSON may spell `896` or `896.0`
/// (JSON Schema counts both as integers).
pub fn opt_whole<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    use serde::de::Error;
    let v: Option<serde_json::Number> = Option::deserialize(d)?;
    match v {
        None => Ok(None),
        Some(n) => {
            if let Some(i) = n.as_i64() {
                return Ok(Some(i));
            }
            match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(Some(f as i64)),
                _ => Err(D::Error::custom(format!("{n} is not an integer in range"))),
            }
        }
    }
}

/// Defines a page-of-items DTO.
macro_rules! list_dto {
    ($name:ident, $item:ty) => {
        #[derive(Debug, serde::Serialize, utoipa::ToSchema)]
        pub struct $name {
            pub items: Vec<$item>,
            /// Pass as `cursor` for the next page; null on the last page.
            pub next_cursor: Option<String>,
        }
    };
}
pub(crate) use list_dto;
