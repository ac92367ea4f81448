//! The worker's HTTP errors: one table from error to (status, stable `error_type`), and
//! the JSON body `{"error": "...", "error_type": "..."}` every 4xx/5xx carries.

use crate::engine::EngineError;
use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use thiserror::Error;

/// Seconds a client should wait after 429 / 503.
pub const RETRY_AFTER_S: u32 = 1;

/// Every error an inference route can answer.
#[derive(Debug, Error)]
pub enum ApiError {
    #[error("request body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("{0}")]
    InvalidInput(String),
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("missing or invalid gateway credentials")]
    Unauthorized,
    #[error("no such route: inference routes are /models/{{key}}, /models/{{key}}/v1/embeddings, /models/{{key}}/v1/chat/completions, /models/{{key}}/v1/completions and /models/{{key}}/v1/models")]
    UnknownRoute,
    #[error("no model {0:?} on this worker")]
    ModelNotFound(String),
    #[error("model {key:?} is {status}{}", .message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    ModelNotReady {
        key: String,
        status: &'static str,
        message: Option<String>,
    },
    /// A request parameter this server does not implement (named, never ignored).
    #[error("unsupported parameter {name}: {reason}")]
    UnsupportedParameter { name: String, reason: String },
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl ApiError {
    /// The (status, error_type) table.
    pub fn code(&self) -> (StatusCode, &'static str) {
        use EngineError as E;
        match self {
            ApiError::InvalidJson(_) => (StatusCode::BAD_REQUEST, "invalid_json"),
            ApiError::InvalidInput(_) => (StatusCode::BAD_REQUEST, "invalid_input"),
            ApiError::PayloadTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
            }
            ApiError::UnsupportedParameter { .. } => {
                (StatusCode::BAD_REQUEST, "unsupported_parameter")
            }
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::UnknownRoute => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::ModelNotFound(_) => (StatusCode::NOT_FOUND, "model_not_found"),
            ApiError::ModelNotReady { .. } => (StatusCode::SERVICE_UNAVAILABLE, "model_not_ready"),
            ApiError::Engine(e) => match e {
                E::EmptyInput | E::EmptyString { .. } => (StatusCode::BAD_REQUEST, "empty_input"),
                E::TooManyInputs { .. } => (StatusCode::BAD_REQUEST, "too_many_inputs"),
                E::Overloaded { .. } => (StatusCode::TOO_MANY_REQUESTS, "overloaded"),
                E::WrongTask { .. } => (StatusCode::BAD_REQUEST, "wrong_task"),
                E::InvalidParameter { .. } => (StatusCode::BAD_REQUEST, "invalid_parameter"),
                E::InputTooLong { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "input_too_long"),
                E::Tokenization(_) => (StatusCode::UNPROCESSABLE_ENTITY, "tokenization_failed"),
                E::Backend(_) => (StatusCode::INTERNAL_SERVER_ERROR, "inference_failed"),
                E::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "model_unavailable"),
                E::ContextLengthExceeded { .. } => {
                    (StatusCode::BAD_REQUEST, "context_length_exceeded")
                }
                E::NoChatTemplate => (StatusCode::BAD_REQUEST, "no_chat_template"),
                E::Template(_) => (StatusCode::BAD_REQUEST, "chat_template_error"),
                E::Grammar(_) => (StatusCode::BAD_REQUEST, "invalid_response_format"),
                E::GrammarBusy { .. } => (StatusCode::TOO_MANY_REQUESTS, "grammar_busy"),
                E::Restarting(_) => (StatusCode::SERVICE_UNAVAILABLE, "model_restarting"),
                E::Failed(_) => (StatusCode::SERVICE_UNAVAILABLE, "model_failed"),
            },
        }
    }

    /// Whether the request was refused before this worker started it, so another
    /// replica may take it ([`hub_types::control::NOT_STARTED_HEADER`]).
    pub fn not_started(&self) -> bool {
        matches!(
            self,
            ApiError::ModelNotFound(_)
                | ApiError::ModelNotReady { .. }
                | ApiError::Engine(
                    EngineError::Restarting(_) | EngineError::Failed(_) | EngineError::Unavailable
                )
        )
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code().0
    }

    fn error_response(&self) -> HttpResponse {
        let (status, error_type) = self.code();
        let mut resp = HttpResponse::build(status);
        if matches!(
            status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        ) {
            resp.insert_header((header::RETRY_AFTER, RETRY_AFTER_S.to_string()));
        }
        if self.not_started() {
            resp.insert_header((hub_types::control::NOT_STARTED_HEADER, "1"));
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        if status.is_server_error() {
            tracing::warn!(error = %self, error_type, "request failed");
        }
        resp.json(serde_json::json!({"error": self.to_string(), "error_type": error_type}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::RunError;

    async fn body(e: ApiError) -> (StatusCode, Option<String>, serde_json::Value) {
        let resp = e.error_response();
        let retry = resp
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_string());
        let status = resp.status();
        let bytes = actix_web::body::to_bytes(resp.into_body()).await.unwrap();
        (status, retry, serde_json::from_slice(&bytes).unwrap())
    }

    /// Engine errors keep their status, `error_type` and message on the wire; a failed
    /// pass says why in the engine's words.
    #[actix_web::test]
    async fn engine_errors_map_to_status_type_and_reason() {
        let (status, retry, json) = body(
            EngineError::Overloaded {
                in_flight: 8,
                limit: 8,
            }
            .into(),
        )
        .await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(retry.as_deref(), Some("1"));
        assert_eq!(json["error_type"], "overloaded");

        for (err, message) in [
            (RunError::Panicked, "the engine panicked on this batch"),
            (
                RunError::OpenVino("infer failed".into()),
                "OpenVINO: infer failed",
            ),
            (RunError::Ort("bad shape".into()), "bad shape"),
            (
                RunError::RowCount { rows: 1, inputs: 2 },
                "engine returned 1 rows for 2 inputs",
            ),
        ] {
            let (status, retry, json) = body(EngineError::Backend(err).into()).await;
            assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
            assert_eq!(retry, None);
            assert_eq!(json["error_type"], "inference_failed");
            assert_eq!(json["error"], format!("inference failed: {message}"));
        }

        let (status, retry, json) = body(EngineError::Unavailable.into()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry.as_deref(), Some("1"));
        assert_eq!(json["error_type"], "model_unavailable");
        let (status, _, json) = body(
            EngineError::InputTooLong {
                index: 0,
                tokens: 300,
                max: 256,
            }
            .into(),
        )
        .await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(json["error_type"], "input_too_long");

        // Grammars: one too costly to enforce is the request's fault; while abandoned
        // grammar threads still compute, constrained requests are told to come back.
        let (status, retry, json) =
            body(EngineError::Grammar("the grammar took longer than 5000 ms".into()).into()).await;
        assert_eq!((status, retry), (StatusCode::BAD_REQUEST, None));
        assert_eq!(json["error_type"], "invalid_response_format");
        let (status, retry, json) = body(EngineError::GrammarBusy { abandoned: 3 }.into()).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(retry.as_deref(), Some("1"));
        assert_eq!(json["error_type"], "grammar_busy");
        assert!(
            json["error"].as_str().unwrap().contains("3 grammars"),
            "{json}"
        );
    }
}
