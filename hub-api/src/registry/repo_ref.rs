//! Extracting a repo and the revision/path parameters from HF-style URLs,
//! where revisions arrive `%2F`-encoded and paths may contain `%2F`, `+` and
//! Unicode. actix matches on a path that keeps `%25`, `%2F` and `%2B`
//! encoded; the values are decoded here, exactly once. Also the one parser of
//! boolean query parameters ([`query_bool`]).

use crate::domain::{RepoId, RepoType};
use crate::error::ApiError;
use actix_web::{dev::Payload, FromRequest, HttpRequest};
use std::future::{ready, Ready};

/// The repo named by a request path: its type and id.
#[derive(Debug, Clone)]
pub struct RepoRef {
    pub kind: RepoType,
    pub id: RepoId,
}

/// A match parameter, fully percent-decoded.
pub fn param(req: &HttpRequest, name: &str) -> Option<String> {
    req.match_info().get(name).map(|v| {
        percent_encoding::percent_decode_str(v)
            .decode_utf8_lossy()
            .into_owned()
    })
}

/// A boolean query parameter, strictly: `true`/`false` (what `httpx`-based
/// `huggingface_hub` sends), `True`/`False` (Python's `str(bool)`, what
/// `requests`-based versions send) or `1`/`0`. Anything else is a 400
/// `invalid_request` naming the parameter; `None` when it is absent.
pub fn query_bool(name: &str, value: Option<&str>) -> Result<Option<bool>, ApiError> {
    match value {
        None => Ok(None),
        Some("true" | "True" | "1") => Ok(Some(true)),
        Some("false" | "False" | "0") => Ok(Some(false)),
        Some(other) => Err(crate::routes::query::QueryError::bool(name, other).into()),
    }
}

impl RepoRef {
    pub fn from_request_parts(req: &HttpRequest) -> Result<Self, ApiError> {
        let kind = match req.match_info().get("kind") {
            Some(k) => RepoType::parse(k)?,
            None if req.path().starts_with("/datasets/") => RepoType::Dataset,
            None => RepoType::Model,
        };
        let name = param(req, "name").ok_or(ApiError::RepoNotFound)?;
        let ns = param(req, "ns");
        let id = RepoId::from_parts(ns.as_deref(), &name).map_err(|_| ApiError::RepoNotFound)?;
        Ok(Self { kind, id })
    }
}

impl FromRequest for RepoRef {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Self::from_request_parts(req))
    }
}

#[cfg(test)]
mod tests {
    use super::query_bool;

    #[test]
    fn booleans_are_strict() {
        for (v, want) in [("true", true), ("True", true), ("1", true)] {
            assert_eq!(query_bool("x", Some(v)).unwrap(), Some(want));
        }
        for v in ["false", "False", "0"] {
            assert_eq!(query_bool("x", Some(v)).unwrap(), Some(false));
        }
        assert_eq!(query_bool("x", None).unwrap(), None);
        for v in ["maybe", "", "yes", "TRUE", "2", "true "] {
            let e = query_bool("recursive", Some(v)).unwrap_err();
            assert_eq!(e.code(), "invalid_request");
            assert!(e.to_string().contains("recursive"), "{e}");
        }
    }
}
