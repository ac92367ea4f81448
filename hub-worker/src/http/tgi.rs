//! The HF task API for text generation, as TGI answers it (what
//! `huggingface_hub.InferenceClient.text_generation` parses): `POST /models/{key}` with
//! `{"inputs": "...", "parameters": {...}, "stream": bool}`.
//!
//! * not streamed: `[{"generated_text", "details"?}]`;
//! * streamed: one SSE event per token, `{"index", "token": {"id", "text", "logprob",
//!   "special"}, "top_tokens"?, "generated_text": null, "details": null}`, the last one
//!   carrying `generated_text` and `details` `{finish_reason, generated_tokens,
//!   input_length, seed}`; then the metering comment and `data: [DONE]`. The last token
//!   is held until the sequence ends so that it can carry the end.
//!
//! TGI's finish reasons: `length`, `eos_token`, `stop_sequence`.

use super::choices::{self, Collected};
use super::error::ApiError;
use super::genparams::{self, TgiParams};
use super::openai::type_name;
use super::sse::{self, Encoder};
use super::Served;
use crate::engine::generate::{
    DecoderModel, Finish, FinishReason, GenEvent, GenToken, GenerateRequest, Prompt, TokenLogprob,
};
use actix_web::web::Bytes;
use actix_web::HttpResponse;
use serde_json::{json, Value};

/// TGI's finish reason.
fn finish_reason(f: &Finish) -> &'static str {
    match (f.reason, &f.stop_string) {
        (FinishReason::Length, _) => "length",
        (FinishReason::Stop, Some(_)) => "stop_sequence",
        (FinishReason::Stop, None) => "eos_token",
    }
}

/// Whether a token is one of the model's special tokens (by its text).
fn special(decoder: &DecoderModel, lp: Option<&TokenLogprob>) -> bool {
    let info = decoder.decoder_info();
    lp.is_some_and(|lp| {
        Some(lp.text.as_str()) == info.eos_token.as_deref()
            || Some(lp.text.as_str()) == info.bos_token.as_deref()
    })
}

/// One TGI token object; `text` is the text released with it.
fn token_json(decoder: &DecoderModel, t: &GenToken, text: &str) -> Value {
    json!({
        "id": t.id,
        "text": text,
        "logprob": t.logprob.as_ref().map(|l| l.logprob).unwrap_or(0.0),
        "special": special(decoder, t.logprob.as_ref()),
    })
}

fn top_json(decoder: &DecoderModel, t: &GenToken) -> Value {
    t.top_logprobs
        .iter()
        .map(|a| {
            json!({"id": a.id, "text": a.text, "logprob": a.logprob,
                   "special": special(decoder, Some(a))})
        })
        .collect()
}

/// `POST /models/{key}` on a decoder.
/// `raw` is the body's text, for the fields that keep their declared key order.
pub async fn generate(served: &Served, body: &Value, raw: &str) -> Result<HttpResponse, ApiError> {
    let obj = genparams::object(body)?;
    genparams::check_fields(obj, &[&["inputs", "parameters", "stream"]], false)?;
    let decoder = choices::decoder(&served.model, "text-generation")?.clone();
    let inputs = match obj.get("inputs") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => {
            return Err(ApiError::InvalidInput(
                "missing field \"inputs\"".to_string(),
            ))
        }
        Some(v) => {
            return Err(ApiError::InvalidInput(format!(
                "text-generation \"inputs\" must be a string, not {}",
                type_name(v)
            )))
        }
    };
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            return Err(ApiError::InvalidInput(format!(
                "\"stream\" must be a boolean, not {}",
                type_name(v)
            )))
        }
    };
    let params = genparams::tgi(
        obj.get("parameters"),
        genparams::raw_at(raw, &["parameters"]),
    )?;
    let req = GenerateRequest {
        prompt: Prompt::Text {
            text: inputs.clone(),
            add_special: true,
        },
        max_tokens: params.max_new_tokens,
        stop: params.stop.clone(),
        sampling: params.sampling.clone(),
        constraint: params.constraint.clone(),
        // TGI reports every token's log-probability in streams and details.
        logprobs: (stream || params.details).then_some(params.top_n_tokens),
        ignore_eos: false,
    };
    let s = choices::submit(&decoder, &req, 1)
        .await?
        .pop()
        .expect("one choice");
    let prompt_tokens = s.prompt_tokens;
    let prefix = if params.return_full_text {
        inputs
    } else {
        String::new()
    };
    if stream {
        let enc = TgiEncoder {
            decoder,
            params,
            prefix,
            prompt_tokens,
            text: String::new(),
            held: None,
            index: 0,
        };
        return Ok(sse::response(prompt_tokens, sse::body(vec![s], enc)));
    }
    let c = choices::collect(s).await?;
    let mut out = json!({"generated_text": format!("{prefix}{}", c.text)});
    if params.details {
        out["details"] = details(&decoder, &params, &c);
    }
    Ok(choices::metered_json(&c.finish.usage, &json!([out])))
}

fn details(decoder: &DecoderModel, params: &TgiParams, c: &Collected) -> Value {
    let tokens: Vec<Value> = c
        .tokens
        .iter()
        .map(|t| token_json(decoder, t, t.logprob.as_ref().map_or(&t.text, |l| &l.text)))
        .collect();
    let mut d = json!({
        "finish_reason": finish_reason(&c.finish),
        "generated_tokens": c.finish.usage.completion_tokens,
        "seed": params.sampling.seed,
        "prefill": [],
        "tokens": tokens,
    });
    if params.top_n_tokens > 0 {
        d["top_tokens"] = c.tokens.iter().map(|t| top_json(decoder, t)).collect();
    }
    d
}

/// The TGI SSE encoder (one choice).
struct TgiEncoder {
    decoder: DecoderModel,
    params: TgiParams,
    prefix: String,
    prompt_tokens: usize,
    /// The text so far (for the final `generated_text`).
    text: String,
    /// The last token, sent when the next one (or the end) arrives.
    held: Option<GenToken>,
    index: usize,
}

impl TgiEncoder {
    fn event_json(&mut self, t: &GenToken, text: &str) -> Value {
        self.index += 1;
        let mut e = json!({
            "index": self.index,
            "token": token_json(&self.decoder, t, text),
            "generated_text": null,
            "details": null,
        });
        if self.params.top_n_tokens > 0 {
            e["top_tokens"] = top_json(&self.decoder, t);
        }
        e
    }
}

impl Encoder for TgiEncoder {
    fn start(&mut self, _out: &mut Vec<Bytes>) {}

    fn event(&mut self, _index: usize, ev: GenEvent, out: &mut Vec<Bytes>) -> bool {
        match ev {
            GenEvent::Token(t) => {
                self.text.push_str(&t.text);
                if let Some(prev) = self.held.replace(t) {
                    let e = self.event_json(&prev, &prev.text);
                    out.push(sse::data(&e));
                }
                true
            }
            GenEvent::Done(f) => {
                self.text.push_str(&f.tail);
                let last = self.held.take().unwrap_or_else(|| GenToken {
                    id: 0,
                    text: String::new(),
                    logprob: None,
                    top_logprobs: Vec::new(),
                });
                let text = format!("{}{}", last.text, f.tail);
                let mut e = self.event_json(&last, &text);
                e["generated_text"] = json!(format!("{}{}", self.prefix, self.text));
                e["details"] = json!({
                    "finish_reason": finish_reason(&f),
                    "generated_tokens": f.usage.completion_tokens,
                    "input_length": f.usage.prompt_tokens,
                    "seed": self.params.sampling.seed,
                });
                out.push(sse::data(&e));
                out.push(sse::usage_comment(
                    f.usage.prompt_tokens,
                    f.usage.completion_tokens,
                ));
                out.push(Bytes::from_static(sse::DONE));
                true
            }
            GenEvent::Failed(e) => {
                let e = ApiError::from(e);
                out.push(sse::data(
                    &json!({"error": e.to_string(), "error_type": e.code().1}),
                ));
                out.push(sse::usage_comment(self.prompt_tokens, self.index));
                out.push(Bytes::from_static(sse::DONE));
                false
            }
        }
    }

    fn finish(&mut self, _out: &mut Vec<Bytes>) {}
}
