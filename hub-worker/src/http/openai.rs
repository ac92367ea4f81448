//! OpenAI-compatible routes: `POST /v1/embeddings` and `GET /v1/models`.

use super::error::ApiError;
use super::{metered, JsonBody, Served};
use crate::engine::{EmbedOptions, EngineError};
use actix_web::HttpResponse;
use base64::Engine as _;
use serde_json::{json, Value};

/// Parses OpenAI's `input`: a string or an array of strings.
fn parse_input(v: Option<&Value>) -> Result<Vec<String>, ApiError> {
    match v {
        None | Some(Value::Null) => Err(ApiError::InvalidInput(
            "missing field \"input\": a string or an array of strings".to_string(),
        )),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => {
            if items.is_empty() {
                return Err(EngineError::EmptyInput.into());
            }
            items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::String(s) => Ok(s.clone()),
                    Value::Number(_) | Value::Array(_) => Err(ApiError::InvalidInput(format!(
                        "input[{i}]: token-id inputs are not supported; send strings"
                    ))),
                    other => Err(ApiError::InvalidInput(format!(
                        "input[{i}] must be a string, not {}",
                        type_name(other)
                    ))),
                })
                .collect()
        }
        Some(other) => Err(ApiError::InvalidInput(format!(
            "\"input\" must be a string or an array of strings, not {}",
            type_name(other)
        ))),
    }
}

/// JSON type names for error messages.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `POST /models/{key}/v1/embeddings`.
pub async fn embeddings(served: Served, body: JsonBody) -> Result<HttpResponse, ApiError> {
    let body = body.0;
    if !body.is_object() {
        return Err(ApiError::InvalidInput(format!(
            "the body must be a JSON object, not {}",
            type_name(&body)
        )));
    }
    let inputs = parse_input(body.get("input"))?;
    let base64 = match body.get("encoding_format") {
        None | Some(Value::Null) => false,
        Some(Value::String(f)) if f == "float" => false,
        Some(Value::String(f)) if f == "base64" => true,
        Some(other) => {
            return Err(EngineError::InvalidParameter {
                name: "encoding_format",
                reason: format!("must be \"float\" or \"base64\", got {other}"),
            }
            .into())
        }
    };
    let dimensions = match body.get("dimensions") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| EngineError::InvalidParameter {
            name: "dimensions",
            reason: "must be a positive integer".to_string(),
        })? as usize),
    };
    let model_name = match body.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        _ => served.served_name.clone(),
    };
    let out = served
        .model
        .embed(
            inputs,
            EmbedOptions {
                dimensions,
                ..EmbedOptions::default()
            },
        )
        .await?;
    let data: Vec<Value> = out
        .vectors
        .iter()
        .enumerate()
        .map(|(index, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    Ok(metered(
        out.prompt_tokens,
        &json!({
            "object": "list",
            "data": data,
            "model": model_name,
            "usage": {"prompt_tokens": out.prompt_tokens, "total_tokens": out.prompt_tokens},
        }),
    ))
}

/// `GET /models/{key}/v1/models`. A decoder also shows its context (`max_model_len`
/// as vLLM names it, and `context_length`).
pub async fn models(served: Served) -> Result<HttpResponse, ApiError> {
    let mut model = json!({
        "id": served.served_name,
        "object": "model",
        "created": 0,
        "owned_by": "paddock",
    });
    if let Some(d) = served.model.decoder() {
        let ctx = d.decoder_info().context_length;
        model["max_model_len"] = json!(ctx);
        model["context_length"] = json!(ctx);
    }
    Ok(HttpResponse::Ok().json(json!({"object": "list", "data": [model]})))
}
