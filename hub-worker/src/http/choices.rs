//! The `n` choices of one generation request: submitting them, collecting a choice's
//! whole answer (non-streamed responses), and the pieces every response shape shares
//! (ids, `created`, `usage`, the metering headers).

use super::error::ApiError;
use super::{INPUT_TOKENS_HEADER, OUTPUT_TOKENS_HEADER};
use crate::engine::generate::{
    DecoderModel, Finish, GenEvent, GenStream, GenToken, GenerateRequest, Usage,
};
use crate::engine::EngineError;
use actix_web::HttpResponse;
use serde_json::{json, Value};

/// Submits `n` copies of `req` (choice `i` gets seed `seed + i` so seeded choices
/// differ but repeat). A refusal of any cancels the ones already queued (dropped).
/// Submitting tokenizes the prompt and compiles a `response_format` grammar (a third of a
/// second for a 1.4 MB schema, per choice), so it runs off the async workers.
pub async fn submit(
    decoder: &DecoderModel,
    req: &GenerateRequest,
    n: usize,
) -> Result<Vec<GenStream>, EngineError> {
    let (decoder, req) = (decoder.clone(), req.clone());
    actix_web::web::block(move || submit_now(&decoder, &req, n))
        .await
        .map_err(|_| EngineError::Unavailable)?
}

fn submit_now(
    decoder: &DecoderModel,
    req: &GenerateRequest,
    n: usize,
) -> Result<Vec<GenStream>, EngineError> {
    (0..n)
        .map(|i| {
            let mut r = req.clone();
            r.sampling.seed = r.sampling.seed.map(|s| s.wrapping_add(i as u64));
            decoder.submit(r)
        })
        .collect()
}

/// A choice's whole answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Collected {
    pub text: String,
    /// Every sampled token (with log-probabilities when asked).
    pub tokens: Vec<GenToken>,
    pub finish: Finish,
}

/// Waits for a choice to end.
pub async fn collect(mut s: GenStream) -> Result<Collected, EngineError> {
    let mut text = String::new();
    let mut tokens = Vec::new();
    loop {
        match s.next().await {
            Some(GenEvent::Token(t)) => {
                text.push_str(&t.text);
                tokens.push(t);
            }
            Some(GenEvent::Done(f)) => {
                text.push_str(&f.tail);
                return Ok(Collected {
                    text,
                    tokens,
                    finish: f,
                });
            }
            Some(GenEvent::Failed(e)) => return Err(e),
            None => return Err(EngineError::Unavailable),
        }
    }
}

/// Collects every choice (they run concurrently in the engine either way).
pub async fn collect_all(streams: Vec<GenStream>) -> Result<Vec<Collected>, EngineError> {
    futures::future::try_join_all(streams.into_iter().map(collect)).await
}

/// A response id: `prefix` and 24 random hex digits.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}-{:024x}", rand::random::<u128>() >> 32)
}

/// Unix seconds, for `created`.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The request's usage over its choices: the prompt once (as OpenAI counts it), the
/// completions summed.
pub fn total_usage(prompt_tokens: usize, finishes: &[Usage]) -> Usage {
    Usage {
        prompt_tokens,
        completion_tokens: finishes.iter().map(|u| u.completion_tokens).sum(),
        cached_tokens: finishes.first().map(|u| u.cached_tokens).unwrap_or(0),
    }
}

/// OpenAI's `usage` object.
pub fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
    })
}

/// A non-streamed JSON answer with both metering headers.
pub fn metered_json(u: &Usage, body: &Value) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((INPUT_TOKENS_HEADER, u.prompt_tokens.to_string()))
        .insert_header((OUTPUT_TOKENS_HEADER, u.completion_tokens.to_string()))
        .json(body)
}

/// The decoder a generation route needs, or `wrong_task`.
pub fn decoder<'a>(
    model: &'a crate::engine::Model,
    requested: &'static str,
) -> Result<&'a DecoderModel, ApiError> {
    model.decoder().ok_or_else(|| {
        EngineError::WrongTask {
            served: model.info().task.as_str(),
            requested,
        }
        .into()
    })
}
