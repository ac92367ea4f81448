//! `POST /models/{key}/v1/completions`: OpenAI (legacy) text completions of a raw
//! prompt, streamed (SSE `text_completion` chunks) or not. The prompt is tokenized with
//! the model's special tokens (`add_special: true`: BOS first), or given as token ids.

use super::choices;
use super::error::ApiError;
use super::genparams::{self, OpenAiParams, COMMON_FIELDS, COMPLETION_FIELDS};
use super::logprobs;
use super::openai::type_name;
use super::openai_error::OpenAiError;
use super::sse::{self, Encoder};
use super::{RawJsonBody, Served};
use crate::engine::generate::{GenEvent, Prompt, Usage};
use crate::engine::EngineError;
use actix_web::web::Bytes;
use actix_web::HttpResponse;
use serde_json::{json, Value};

/// A token id of a prompt.
fn token_id(v: &Value, at: &str) -> Result<u32, ApiError> {
    v.as_u64()
        .and_then(|id| u32::try_from(id).ok())
        .ok_or_else(|| ApiError::InvalidInput(format!("{at} must be a token id, got {v}")))
}

/// OpenAI's `prompt`: a string, an array of one string, an array of token ids, or an
/// array of one array of token ids. Several prompts per request are refused (send `n`
/// or several requests).
pub fn prompt(v: Option<&Value>) -> Result<Prompt, ApiError> {
    let text = |s: &str| Prompt::Text {
        text: s.to_string(),
        add_special: true,
    };
    let ids = |items: &[Value]| -> Result<Prompt, ApiError> {
        if items.is_empty() {
            return Err(EngineError::EmptyInput.into());
        }
        items
            .iter()
            .enumerate()
            .map(|(i, v)| token_id(v, &format!("prompt[{i}]")))
            .collect::<Result<Vec<_>, _>>()
            .map(Prompt::Tokens)
    };
    match v {
        None | Some(Value::Null) => Err(ApiError::InvalidInput(
            "missing field \"prompt\": a string or an array of token ids".to_string(),
        )),
        Some(Value::String(s)) => Ok(text(s)),
        Some(Value::Array(items)) => match items.first() {
            None => Err(EngineError::EmptyInput.into()),
            Some(Value::Number(_)) => ids(items),
            Some(first) if items.len() > 1 => Err(ApiError::InvalidInput(format!(
                "one prompt per request, got {} (of {}): send n for several completions of one prompt",
                items.len(),
                type_name(first)
            ))),
            Some(Value::String(s)) => Ok(text(s)),
            Some(Value::Array(inner)) => ids(inner),
            Some(other) => Err(ApiError::InvalidInput(format!(
                "prompt[0] must be a string or token ids, not {}",
                type_name(other)
            ))),
        },
        Some(other) => Err(ApiError::InvalidInput(format!(
            "\"prompt\" must be a string or an array of token ids, not {}",
            type_name(other)
        ))),
    }
}

/// `POST /models/{key}/v1/completions`.
pub async fn completions(
    served: Result<Served, ApiError>,
    body: RawJsonBody,
) -> Result<HttpResponse, OpenAiError> {
    let served = served?;
    let obj = genparams::object(&body.value)?;
    genparams::check_fields(obj, &[COMMON_FIELDS, COMPLETION_FIELDS], true)?;
    let decoder = choices::decoder(&served.model, "text-generation")?.clone();
    let params = genparams::openai(obj, &genparams::raw_fields(&body.text), false)?;
    let req = params.request(prompt(obj.get("prompt"))?);
    let streams = choices::submit(&decoder, &req, params.n).await?;
    let prompt_tokens = streams.first().map(|s| s.prompt_tokens).unwrap_or(0);
    let id = choices::new_id("cmpl");
    let created = choices::now();
    let model = served.served_name.clone();
    if params.stream {
        let enc = CompletionEncoder::new(id, created, model, &params, prompt_tokens);
        return Ok(sse::response(prompt_tokens, sse::body(streams, enc)));
    }
    let done = choices::collect_all(streams).await?;
    let usage = choices::total_usage(
        prompt_tokens,
        &done.iter().map(|c| c.finish.usage).collect::<Vec<_>>(),
    );
    let choices_json: Vec<Value> = done
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({
                "index": i,
                "text": c.text,
                "logprobs": params.logprobs.map(|_| logprobs::completion(&c.tokens, 0).0),
                "finish_reason": c.finish.reason.as_str(),
            })
        })
        .collect();
    Ok(choices::metered_json(
        &usage,
        &json!({
            "id": id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "system_fingerprint": null,
            "choices": choices_json,
            "usage": choices::usage_json(&usage),
        }),
    ))
}

struct ChoiceState {
    /// Text offset of the next token (for `text_offset`).
    offset: usize,
    tokens: usize,
    usage: Option<Usage>,
}

/// The completions SSE encoder.
pub struct CompletionEncoder {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    logprobs: bool,
    prompt_tokens: usize,
    choices: Vec<ChoiceState>,
}

impl CompletionEncoder {
    fn new(
        id: String,
        created: u64,
        model: String,
        params: &OpenAiParams,
        prompt_tokens: usize,
    ) -> CompletionEncoder {
        CompletionEncoder {
            id,
            created,
            model,
            include_usage: params.include_usage,
            logprobs: params.logprobs.is_some(),
            prompt_tokens,
            choices: (0..params.n)
                .map(|_| ChoiceState {
                    offset: 0,
                    tokens: 0,
                    usage: None,
                })
                .collect(),
        }
    }

    fn chunk(&self, index: usize, text: &str, logprobs: Value, finish: Option<&str>) -> Bytes {
        let mut c = json!({
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": null,
            "choices": [{"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}],
        });
        if self.include_usage {
            c["usage"] = Value::Null;
        }
        sse::data(&c)
    }

    fn usage(&self) -> Usage {
        let per: Vec<Usage> = self
            .choices
            .iter()
            .map(|c| {
                c.usage.unwrap_or(Usage {
                    prompt_tokens: self.prompt_tokens,
                    completion_tokens: c.tokens,
                    cached_tokens: 0,
                })
            })
            .collect();
        choices::total_usage(self.prompt_tokens, &per)
    }
}

impl Encoder for CompletionEncoder {
    fn start(&mut self, _out: &mut Vec<Bytes>) {}

    fn event(&mut self, index: usize, ev: GenEvent, out: &mut Vec<Bytes>) -> bool {
        match ev {
            GenEvent::Token(t) => {
                let st = &mut self.choices[index];
                st.tokens += 1;
                let lp = if self.logprobs {
                    let (lp, next) = logprobs::completion(std::slice::from_ref(&t), st.offset);
                    st.offset = next;
                    lp
                } else {
                    Value::Null
                };
                // A token whose text is held back still reports its log-probability.
                if !t.text.is_empty() || self.logprobs {
                    out.push(self.chunk(index, &t.text, lp, None));
                }
                true
            }
            GenEvent::Done(f) => {
                if !f.tail.is_empty() {
                    out.push(self.chunk(index, &f.tail, Value::Null, None));
                }
                self.choices[index].usage = Some(f.usage);
                out.push(self.chunk(index, "", Value::Null, Some(f.reason.as_str())));
                true
            }
            GenEvent::Failed(e) => {
                sse::openai_failed(e, &self.usage(), out);
                false
            }
        }
    }

    fn finish(&mut self, out: &mut Vec<Bytes>) {
        let head = sse::OpenAiHead {
            id: &self.id,
            object: "text_completion",
            created: self.created,
            model: &self.model,
        };
        sse::openai_finish(head, self.include_usage, &self.usage(), out);
    }
}
