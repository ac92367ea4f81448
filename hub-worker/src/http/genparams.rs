//! Generation parameters: OpenAI's (chat and completions) and TGI's (`parameters` of the
//! HF task API), read from the request JSON into a [`GenerateRequest`]'s parts, each
//! range-checked with a 400 that names the parameter.
//!
//! Unknown fields are refused (`unsupported_parameter`), never ignored. The only fields
//! accepted without effect are [`IGNORED_OPENAI_FIELDS`] (bookkeeping that does not change
//! the output), and a few fields only in their no-op form (`logit_bias: {}`,
//! `echo: false`, `best_of` = `n`, `suffix: null`, `store: false`,
//! `service_tier: "auto"|"default"`, `parallel_tool_calls` either way).

use super::error::ApiError;
use super::openai::type_name;
use crate::engine::generate::{Constraint, GenerateRequest, Prompt, SamplingParams};
use crate::engine::EngineError;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::collections::HashMap;

/// OpenAI fields accepted and ignored because they only label the request: `user`,
/// `safety_identifier` (end-user ids for abuse tracking), `metadata` (tags for OpenAI's
/// dashboard), `prompt_cache_key` (a cache-routing hint; prefix reuse here is automatic).
pub const IGNORED_OPENAI_FIELDS: &[&str] =
    &["user", "safety_identifier", "metadata", "prompt_cache_key"];

/// Fields every OpenAI generation route reads.
pub const COMMON_FIELDS: &[&str] = &[
    "model",
    "stream",
    "stream_options",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "n",
    "logprobs",
    "response_format",
    "ignore_eos",
    "logit_bias",
    "store",
    "service_tier",
];

/// Fields only `/v1/chat/completions` reads.
pub const CHAT_FIELDS: &[&str] = &[
    "messages",
    "max_completion_tokens",
    "top_logprobs",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "chat_template_kwargs",
];

/// Fields only `/v1/completions` reads.
pub const COMPLETION_FIELDS: &[&str] = &["prompt", "echo", "best_of", "suffix"];

/// Most choices one request may ask for (`n`).
pub const MAX_N: u64 = 16;
/// Most stop strings (OpenAI allows 4).
pub const MAX_STOP: usize = 16;
/// Most alternatives per token (`top_logprobs`, `logprobs`, `top_n_tokens`).
pub const MAX_TOP_LOGPROBS: u64 = 20;

fn invalid(name: &'static str, reason: impl Into<String>) -> ApiError {
    EngineError::InvalidParameter {
        name,
        reason: reason.into(),
    }
    .into()
}

fn unsupported(name: &str, reason: impl Into<String>) -> ApiError {
    ApiError::UnsupportedParameter {
        name: name.to_string(),
        reason: reason.into(),
    }
}

/// The body as an object, or a 400.
pub fn object(body: &Value) -> Result<&Map<String, Value>, ApiError> {
    body.as_object().ok_or_else(|| {
        ApiError::InvalidInput(format!(
            "the body must be a JSON object, not {}",
            type_name(body)
        ))
    })
}

/// Refuses any field not in `known` (nor [`IGNORED_OPENAI_FIELDS`] when `openai`).
pub fn check_fields(
    obj: &Map<String, Value>,
    known: &[&[&str]],
    openai: bool,
) -> Result<(), ApiError> {
    for key in obj.keys() {
        let k = key.as_str();
        let listed =
            known.iter().any(|l| l.contains(&k)) || (openai && IGNORED_OPENAI_FIELDS.contains(&k));
        if !listed {
            return Err(unsupported(k, "this server does not implement it"));
        }
    }
    Ok(())
}

/// A field; JSON `null` counts as absent.
fn get<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).filter(|v| !v.is_null())
}

fn number(
    obj: &Map<String, Value>,
    name: &'static str,
    lo: f64,
    hi: f64,
) -> Result<Option<f32>, ApiError> {
    match get(obj, name) {
        None => Ok(None),
        Some(v) => match v.as_f64() {
            Some(x) if (lo..=hi).contains(&x) => Ok(Some(x as f32)),
            Some(x) => Err(invalid(name, format!("must be in [{lo}, {hi}], got {x}"))),
            None => Err(invalid(
                name,
                format!("must be a number, not {}", type_name(v)),
            )),
        },
    }
}

fn integer(
    obj: &Map<String, Value>,
    name: &'static str,
    lo: u64,
    hi: u64,
) -> Result<Option<u64>, ApiError> {
    match get(obj, name) {
        None => Ok(None),
        Some(v) => match v.as_u64() {
            Some(x) if (lo..=hi).contains(&x) => Ok(Some(x)),
            _ if v.as_i64().is_some() || v.as_u64().is_some() => Err(invalid(
                name,
                format!("must be an integer in [{lo}, {hi}], got {v}"),
            )),
            _ => Err(invalid(
                name,
                format!("must be an integer, not {}", type_name(v)),
            )),
        },
    }
}

fn boolean(obj: &Map<String, Value>, name: &'static str) -> Result<Option<bool>, ApiError> {
    match get(obj, name) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(invalid(
            name,
            format!("must be a boolean, not {}", type_name(v)),
        )),
    }
}

fn seed(obj: &Map<String, Value>, name: &'static str) -> Result<Option<u64>, ApiError> {
    match get(obj, name) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_i64().map(|s| s as u64))
            .map(Some)
            .ok_or_else(|| invalid(name, format!("must be an integer, got {v}"))),
    }
}

/// `stop`: a string or an array of non-empty strings (at most [`MAX_STOP`]).
fn stop(obj: &Map<String, Value>, name: &'static str) -> Result<Vec<String>, ApiError> {
    let list = match get(obj, name) {
        None => return Ok(Vec::new()),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|s| {
                s.as_str().map(str::to_string).ok_or_else(|| {
                    invalid(name, format!("must hold strings, not {}", type_name(s)))
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(v) => {
            return Err(invalid(
                name,
                format!(
                    "must be a string or an array of strings, not {}",
                    type_name(v)
                ),
            ))
        }
    };
    if list.len() > MAX_STOP {
        return Err(invalid(
            name,
            format!("at most {MAX_STOP} stop strings, got {}", list.len()),
        ));
    }
    if list.iter().any(String::is_empty) {
        return Err(invalid(name, "stop strings must not be empty"));
    }
    Ok(list)
}

/// `response_format` (OpenAI's `text` / `json_object` / `json_schema`, and TGI's
/// `{"type": "json_object"|"json", "value": schema}` that `huggingface_hub` sends).
///
/// `raw` is the request's text of the same value: the schema is taken from it as sent, so
/// its properties keep the client's order (a grammar generates them in schema order).
/// Without it the schema is re-serialized, keys sorted.
pub fn response_format(v: Option<&Value>, raw: Option<&str>) -> Result<Constraint, ApiError> {
    const NAME: &str = "response_format";
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(Constraint::None);
    };
    let ty = v.get("type").and_then(Value::as_str).ok_or_else(|| {
        invalid(
            NAME,
            "must be an object with \"type\": text, json_object or json_schema",
        )
    })?;
    let schema = |s: &Value, path: &[&str]| -> Result<Constraint, ApiError> {
        if s.is_object() || s.is_boolean() {
            let text = raw.and_then(|r| raw_at(r, path));
            Ok(Constraint::JsonSchema(
                text.map_or_else(|| s.to_string(), str::to_owned),
            ))
        } else {
            Err(invalid(
                NAME,
                format!("the schema must be a JSON object, not {}", type_name(s)),
            ))
        }
    };
    match ty {
        "text" => Ok(Constraint::None),
        "json_object" | "json" => match v.get("value").filter(|s| !s.is_null()) {
            Some(s) => schema(s, &["value"]),
            None if ty == "json_object" => Ok(Constraint::JsonObject),
            None => Err(invalid(NAME, "type \"json\" needs a \"value\" schema")),
        },
        "json_schema" => match v.get("json_schema").and_then(|j| j.get("schema")) {
            Some(s) => schema(s, &["json_schema", "schema"]),
            None => Err(invalid(
                NAME,
                "type \"json_schema\" needs \"json_schema\": {\"name\", \"schema\"}",
            )),
        },
        other => Err(invalid(
            NAME,
            format!("unknown type {other:?}: text, json_object or json_schema"),
        )),
    }
}

/// The parts of an OpenAI request shared by chat and completions.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenAiParams {
    pub n: usize,
    pub stream: bool,
    pub include_usage: bool,
    pub max_tokens: Option<usize>,
    pub stop: Vec<String>,
    pub sampling: SamplingParams,
    pub constraint: Constraint,
    /// `Some(k)`: log-probabilities with `k` alternatives.
    pub logprobs: Option<usize>,
    pub ignore_eos: bool,
}

impl OpenAiParams {
    /// The engine request for `prompt`.
    pub fn request(&self, prompt: Prompt) -> GenerateRequest {
        GenerateRequest {
            prompt,
            max_tokens: self.max_tokens,
            stop: self.stop.clone(),
            sampling: self.sampling.clone(),
            constraint: self.constraint.clone(),
            logprobs: self.logprobs,
            ignore_eos: self.ignore_eos,
        }
    }
}

/// Reads the OpenAI parameters of a chat (`chat = true`) or completions request; the
/// caller has already checked the field names. `raw`: the text of each field
/// ([`raw_fields`] of the body).
pub fn openai(
    obj: &Map<String, Value>,
    raw: &HashMap<String, &str>,
    chat: bool,
) -> Result<OpenAiParams, ApiError> {
    let stream = boolean(obj, "stream")?.unwrap_or(false);
    let include_usage = match get(obj, "stream_options") {
        None => false,
        Some(Value::Object(o)) => {
            if let Some(k) = o.keys().find(|k| *k != "include_usage") {
                return Err(unsupported(
                    &format!("stream_options.{k}"),
                    "only include_usage is implemented",
                ));
            }
            if !stream {
                return Err(invalid(
                    "stream_options",
                    "only allowed when stream is true",
                ));
            }
            boolean(o, "include_usage")?.unwrap_or(false)
        }
        Some(v) => {
            return Err(invalid(
                "stream_options",
                format!("must be an object, not {}", type_name(v)),
            ))
        }
    };
    let max_tokens = match integer(obj, "max_completion_tokens", 1, u32::MAX as u64)? {
        Some(m) => Some(m),
        None => integer(obj, "max_tokens", 1, u32::MAX as u64)?,
    }
    .map(|m| m as usize);
    let n = integer(obj, "n", 1, MAX_N)?.unwrap_or(1) as usize;
    let defaults = SamplingParams::default();
    let top_k = match get(obj, "top_k") {
        // vLLM spells "off" as -1.
        Some(v) if v.as_i64() == Some(-1) => 0,
        _ => integer(obj, "top_k", 0, u32::MAX as u64)?.unwrap_or(0) as u32,
    };
    let sampling = SamplingParams {
        temperature: number(obj, "temperature", 0.0, 2.0)?.unwrap_or(defaults.temperature),
        top_p: number(obj, "top_p", 0.0, 1.0)?.unwrap_or(defaults.top_p),
        top_k,
        min_p: number(obj, "min_p", 0.0, 1.0)?.unwrap_or(defaults.min_p),
        seed: seed(obj, "seed")?,
        presence_penalty: number(obj, "presence_penalty", -2.0, 2.0)?.unwrap_or(0.0),
        frequency_penalty: number(obj, "frequency_penalty", -2.0, 2.0)?.unwrap_or(0.0),
        repetition_penalty: number(obj, "repetition_penalty", 0.01, 10.0)?.unwrap_or(1.0),
    };
    if sampling.top_p <= 0.0 {
        return Err(invalid("top_p", "must be greater than 0"));
    }
    let logprobs = if chat {
        let want = boolean(obj, "logprobs")?.unwrap_or(false);
        let top = integer(obj, "top_logprobs", 0, MAX_TOP_LOGPROBS)?;
        match (want, top) {
            (true, top) => Some(top.unwrap_or(0) as usize),
            (false, Some(_)) => {
                return Err(invalid("top_logprobs", "needs \"logprobs\": true"));
            }
            (false, None) => None,
        }
    } else {
        integer(obj, "logprobs", 0, MAX_TOP_LOGPROBS)?.map(|k| k as usize)
    };
    // No-op forms of fields this server does not implement.
    if let Some(b) = get(obj, "logit_bias") {
        if !b.as_object().is_some_and(Map::is_empty) {
            return Err(unsupported(
                "logit_bias",
                "token biases are not implemented",
            ));
        }
    }
    if boolean(obj, "store")? == Some(true) {
        return Err(unsupported("store", "completions are never stored here"));
    }
    if let Some(t) = get(obj, "service_tier") {
        if !matches!(t.as_str(), Some("auto" | "default")) {
            return Err(unsupported("service_tier", "only \"auto\" or \"default\""));
        }
    }
    if !chat {
        if boolean(obj, "echo")? == Some(true) {
            return Err(unsupported("echo", "echoing the prompt is not implemented"));
        }
        if get(obj, "suffix").is_some() {
            return Err(unsupported(
                "suffix",
                "insertion (suffix) is not implemented",
            ));
        }
        if let Some(b) = integer(obj, "best_of", 1, MAX_N)? {
            if b as usize != n {
                return Err(unsupported("best_of", "only best_of equal to n"));
            }
        }
    }
    Ok(OpenAiParams {
        n,
        stream,
        include_usage,
        max_tokens,
        stop: stop(obj, "stop")?,
        sampling,
        constraint: response_format(
            obj.get("response_format"),
            raw.get("response_format").copied(),
        )?,
        logprobs,
        ignore_eos: boolean(obj, "ignore_eos")?.unwrap_or(false),
    })
}

/// TGI's `parameters` the HF task API reads.
const TGI_FIELDS: &[&str] = &[
    "max_new_tokens",
    "temperature",
    "top_k",
    "top_p",
    "repetition_penalty",
    "frequency_penalty",
    "stop",
    "seed",
    "do_sample",
    "return_full_text",
    "details",
    "decoder_input_details",
    "grammar",
    "top_n_tokens",
    "watermark",
    "best_of",
    "truncate",
    "typical_p",
    "adapter_id",
];

/// A TGI (`text-generation`) request's parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct TgiParams {
    pub max_new_tokens: Option<usize>,
    pub stop: Vec<String>,
    pub sampling: SamplingParams,
    pub constraint: Constraint,
    pub return_full_text: bool,
    pub details: bool,
    /// `top_n_tokens`: alternatives per token in `details`/the stream.
    pub top_n_tokens: usize,
}

/// Reads TGI's `parameters` (absent: all defaults).
/// `raw` is the request's text of `params` (see [`response_format`]): a grammar's schema
/// keeps its declared property order.
pub fn tgi(params: Option<&Value>, raw: Option<&str>) -> Result<TgiParams, ApiError> {
    let empty = Map::new();
    let obj = match params.filter(|p| !p.is_null()) {
        None => &empty,
        Some(Value::Object(o)) => o,
        Some(v) => {
            return Err(ApiError::InvalidInput(format!(
                "\"parameters\" must be an object, not {}",
                type_name(v)
            )))
        }
    };
    check_fields(obj, &[TGI_FIELDS], false)?;
    // Accepted only in their no-op form.
    if boolean(obj, "watermark")? == Some(true) {
        return Err(unsupported("watermark", "watermarking is not implemented"));
    }
    if boolean(obj, "decoder_input_details")? == Some(true) {
        return Err(unsupported(
            "decoder_input_details",
            "prompt log-probabilities are not implemented",
        ));
    }
    if integer(obj, "best_of", 1, MAX_N)?.is_some_and(|b| b > 1) {
        return Err(unsupported("best_of", "only best_of 1"));
    }
    for name in ["truncate", "adapter_id"] {
        if get(obj, name).is_some() {
            return Err(unsupported(name, "not implemented"));
        }
    }
    if number(obj, "typical_p", 0.0, 1.0)?.is_some_and(|p| p < 1.0) {
        return Err(unsupported(
            "typical_p",
            "typical sampling is not implemented",
        ));
    }
    let temperature = number(obj, "temperature", 0.0, 100.0)?;
    if temperature == Some(0.0) {
        return Err(invalid("temperature", "must be strictly positive"));
    }
    let top_k = integer(obj, "top_k", 1, u32::MAX as u64)?;
    let top_p = number(obj, "top_p", 0.0, 1.0)?;
    if top_p.is_some_and(|p| p <= 0.0 || p >= 1.0) {
        return Err(invalid("top_p", "must be > 0.0 and < 1.0"));
    }
    // TGI samples when asked to, or when any sampling knob is set; else greedy.
    let sample = boolean(obj, "do_sample")?.unwrap_or(false)
        || temperature.is_some_and(|t| t != 1.0)
        || top_k.is_some()
        || top_p.is_some();
    let repetition_penalty = number(obj, "repetition_penalty", 0.0, 100.0)?;
    if repetition_penalty == Some(0.0) {
        return Err(invalid("repetition_penalty", "must be strictly positive"));
    }
    let sampling = SamplingParams {
        temperature: if sample {
            temperature.unwrap_or(1.0)
        } else {
            0.0
        },
        top_p: top_p.unwrap_or(1.0),
        top_k: top_k.unwrap_or(0) as u32,
        min_p: 0.0,
        seed: seed(obj, "seed")?,
        presence_penalty: 0.0,
        frequency_penalty: number(obj, "frequency_penalty", -2.0, 2.0)?.unwrap_or(0.0),
        repetition_penalty: repetition_penalty.unwrap_or(1.0),
    };
    let constraint = match get(obj, "grammar") {
        None => Constraint::None,
        Some(g) => match g.get("type").and_then(Value::as_str) {
            Some("json" | "json_object") => {
                response_format(Some(g), raw.and_then(|r| raw_at(r, &["grammar"]))).map_err(
                    |_| {
                        invalid(
                            "grammar",
                            "type \"json\" needs a \"value\" JSON schema object",
                        )
                    },
                )?
            }
            Some("regex") => {
                return Err(unsupported("grammar", "regex grammars are not implemented"))
            }
            _ => {
                return Err(invalid(
                    "grammar",
                    "must be {\"type\": \"json\", \"value\": schema}",
                ))
            }
        },
    };
    Ok(TgiParams {
        max_new_tokens: integer(obj, "max_new_tokens", 1, u32::MAX as u64)?.map(|m| m as usize),
        stop: stop(obj, "stop")?,
        sampling,
        constraint,
        return_full_text: boolean(obj, "return_full_text")?.unwrap_or(false),
        details: boolean(obj, "details")?.unwrap_or(false),
        top_n_tokens: integer(obj, "top_n_tokens", 0, MAX_TOP_LOGPROBS)?.unwrap_or(0) as usize,
    })
}

/// The raw text of each top-level field of a JSON object (`body` must be valid JSON, as
/// the parsed body proves; a repeated key keeps its last value, as the parsed `Value`
/// does). Chat templates get `messages` and `tools` as sent, and grammars get schemas as
/// sent: the parsed `Value` sorts object keys, which would reorder a tool's parameters in
/// the prompt and a schema's properties in the output.
pub fn raw_fields(body: &str) -> HashMap<String, &str> {
    serde_json::from_str::<HashMap<String, &RawValue>>(body)
        .map(|m| m.into_iter().map(|(k, v)| (k, v.get())).collect())
        .unwrap_or_default()
}

/// The raw text of the value at `path` (object keys) inside the JSON text `raw`.
pub fn raw_at<'a>(raw: &'a str, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(raw, |text, key| raw_fields(text).get(*key).copied())
}
