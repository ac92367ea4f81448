//! Request body extractors with the hub's limits and error messages: JSON of any
//! content type (the HF clients send `application/vnd.git-lfs+json` and form
//! bodies too), refused with a 4xx that says what was wrong.

use crate::error::ApiError;
use crate::state::AppState;
use actix_web::{dev::Payload, web, FromRequest, HttpRequest};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use std::future::Future;
use std::pin::Pin;

/// A request body that cannot be read or parsed (400 `invalid_request`).
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("reading the body: {0}")]
    Read(String),
    /// A streamed body (an upload) that failed mid-way.
    #[error("request body: {0}")]
    Stream(String),
    #[error("Content-Encoding {0:?} is not accepted; send the body uncompressed")]
    Encoded(String),
    #[error("invalid JSON body: {0}")]
    Json(#[from] serde_json::Error),
    /// A field that parsed as JSON but not as its type (`models[0].assignment_id: ...`).
    #[error("invalid JSON body: {0}")]
    JsonField(String),
    #[error("a JSON body is required")]
    Missing,
    #[error("the body must be a JSON object")]
    NotObject,
}

impl BodyError {
    /// A chunk of the body that could not be read.
    pub fn read(e: impl std::fmt::Display) -> Self {
        BodyError::Read(e.to_string())
    }
}

/// The request's `Content-Length`, when it has a valid one.
pub fn content_length(req: &HttpRequest) -> Option<u64> {
    req.headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
}

/// Reads a whole small body, refusing more than `limit` bytes (413) and any
/// `Content-Encoding` (bodies are never decompressed).
pub async fn read_limited(
    req: &HttpRequest,
    payload: &mut Payload,
    limit: usize,
) -> Result<web::Bytes, ApiError> {
    reject_encoded(req)?;
    read_up_to(req, payload, limit).await
}

/// Reads a whole body as it came (any `Content-Encoding`), refusing more than `limit`
/// bytes (413): by its `Content-Length` before reading, else once it passes the limit.
pub async fn read_up_to(
    req: &HttpRequest,
    payload: &mut Payload,
    limit: usize,
) -> Result<web::Bytes, ApiError> {
    if let Some(len) = content_length(req) {
        if len > limit as u64 {
            return Err(ApiError::PayloadTooLarge(format!(
                "body of {len} bytes is over the limit of {limit} bytes"
            )));
        }
    }
    let mut buf = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(BodyError::read)?;
        if buf.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge(format!(
                "body is over the limit of {limit} bytes"
            )));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// Refuses bodies with a `Content-Encoding` other than identity.
pub fn reject_encoded(req: &HttpRequest) -> Result<(), ApiError> {
    if let Some(enc) = req.headers().get(actix_web::http::header::CONTENT_ENCODING) {
        let enc = enc.to_str().unwrap_or("?");
        if !enc.eq_ignore_ascii_case("identity") {
            return Err(BodyError::Encoded(enc.to_string()).into());
        }
    }
    Ok(())
}

/// Reads a JSON body within the configured limit (`limits.json_body`).
async fn read_json_bytes(req: &HttpRequest, payload: &mut Payload) -> Result<web::Bytes, ApiError> {
    let limit = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.limits.json_body)
        .unwrap_or(2 * 1024 * 1024);
    read_limited(req, payload, limit).await
}

/// A JSON body (any content type), parsed with serde's recursion limit.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let mut payload = payload.take();
        Box::pin(async move {
            let bytes = read_json_bytes(&req, &mut payload).await?;
            let text = if bytes.iter().all(|b| b.is_ascii_whitespace()) {
                &b"{}"[..]
            } else {
                &bytes[..]
            };
            serde_json::from_slice(text)
                .map(JsonBody)
                .map_err(|e| BodyError::Json(e).into())
        })
    }
}

/// A JSON object body that must be present (the management API: an empty
/// body is a 400, not `{}`).
#[derive(Debug)]
pub struct RequiredJson<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for RequiredJson<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let mut payload = payload.take();
        Box::pin(async move {
            let bytes = read_json_bytes(&req, &mut payload).await?;
            if bytes.iter().all(|b| b.is_ascii_whitespace()) {
                return Err(BodyError::Missing.into());
            }
            // An object, not serde's array form of a struct.
            let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(BodyError::Json)?;
            if !v.is_object() {
                return Err(BodyError::NotObject.into());
            }
            serde_json::from_value(v)
                .map(RequiredJson)
                .map_err(|e| BodyError::Json(e).into())
        })
    }
}
