//! Extracting a repo and the revision/path parameters from HF-style URLs,
//! where revisions arrive `%2F`-encoded and paths may contain `%2F`, `+` and
//! Unicode. actix matches on a path that keeps `%25`, `%2F` and `%2B`
//! encoded; the values are decoded here, exactly once.

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
