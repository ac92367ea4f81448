//! Errors of the OpenAI generation routes in OpenAI's shape, so the `openai` package
//! shows the message and the code:
//! `{"error": {"message", "type", "param", "code"}, "error_type": <code>}`. Status,
//! code and `Retry-After` come from the one table in [`super::error`]; only the body
//! differs.

use super::error::ApiError;
use crate::engine::EngineError;
use actix_web::body::BoxBody;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::{json, Value};

/// An [`ApiError`] answered in OpenAI's error shape.
#[derive(Debug)]
pub struct OpenAiError(pub ApiError);

impl std::fmt::Display for OpenAiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<E: Into<ApiError>> From<E> for OpenAiError {
    fn from(e: E) -> Self {
        OpenAiError(e.into())
    }
}

/// OpenAI's error `type` for a status.
fn openai_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        s if s >= 500 => "server_error",
        _ => "invalid_request_error",
    }
}

/// The request parameter an error is about, for OpenAI's `param`.
fn param(e: &ApiError) -> Option<String> {
    match e {
        ApiError::UnsupportedParameter { name, .. } => Some(name.clone()),
        ApiError::Engine(EngineError::InvalidParameter { name, .. }) => Some(name.to_string()),
        ApiError::Engine(EngineError::ContextLengthExceeded { .. }) => Some("messages".into()),
        ApiError::Engine(EngineError::Grammar(_)) => Some("response_format".into()),
        _ => None,
    }
}

/// The error object OpenAI puts under `"error"` (also sent as an SSE event when a stream
/// fails after its headers).
pub fn error_object(e: &ApiError) -> Value {
    let (status, code) = e.code();
    json!({
        "message": e.to_string(),
        "type": openai_type(status),
        "param": param(e),
        "code": code,
    })
}

impl ResponseError for OpenAiError {
    fn status_code(&self) -> StatusCode {
        self.0.code().0
    }

    fn error_response(&self) -> HttpResponse {
        let (_, code) = self.0.code();
        let body = json!({"error": error_object(&self.0), "error_type": code});
        // Headers (Retry-After, WWW-Authenticate) and logging from the common table.
        self.0
            .error_response()
            .set_body(BoxBody::new(body.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_web::test]
    async fn context_errors_read_like_openai() {
        let e = OpenAiError(
            EngineError::ContextLengthExceeded {
                prompt_tokens: 40_000,
                max_tokens: Some(10),
                context: 32_768,
            }
            .into(),
        );
        let resp = e.error_response();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let ct = resp
            .headers()
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap();
        assert_eq!(ct, "application/json");
        let bytes = actix_web::body::to_bytes(resp.into_body()).await.unwrap();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["error"]["code"], "context_length_exceeded");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error_type"], "context_length_exceeded");
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("32768 tokens"));

        let e = OpenAiError(
            EngineError::Overloaded {
                in_flight: 9,
                limit: 8,
            }
            .into(),
        );
        let resp = e.error_response();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers().get("retry-after").unwrap(), "1");
        let bytes = actix_web::body::to_bytes(resp.into_body()).await.unwrap();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["error"]["type"], "rate_limit_error");
        assert_eq!(v["error"]["code"], "overloaded");

        let e = OpenAiError(ApiError::UnsupportedParameter {
            name: "audio".into(),
            reason: "not supported".into(),
        });
        let bytes = actix_web::body::to_bytes(e.error_response().into_body())
            .await
            .unwrap();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["error"]["param"], "audio");
        assert_eq!(v["error_type"], "unsupported_parameter");
    }
}
