//! The HF task API on `POST /models/{key}`: `{"inputs": ..., "parameters": ...}` with the
//! response shapes `huggingface_hub.InferenceClient` parses:
//!
//! * feature-extraction: `[[f32; dim]; n]`, also for a single string (the client makes a
//!   float32 numpy array of it). Its parameters (`normalize`, `truncate`, `dimensions`...)
//!   arrive at the top level of the body, not under `parameters`; both are accepted.
//! * sentence-similarity: `inputs = {"source_sentence", "sentences"}` → `[f32; n]`.
//! * text-classification: `[[{"label", "score"}, ...]]`, one list per input, best first
//!   (the client takes element 0 of the outer list). `top_k`, `function_to_apply`.

use super::error::ApiError;
use super::openai::type_name;
use super::{metered, JsonBody, Served};
use crate::engine::{ClassifyOptions, EmbedOptions, EngineError, ScoreFn, Task, TextInput};
use actix_web::{HttpRequest, HttpResponse};
use serde_json::{json, Value};

/// A parameter from `parameters`, else from the top level; `null` counts as absent.
fn param<'a>(body: &'a Value, name: &str) -> Option<&'a Value> {
    body.get("parameters")
        .and_then(|p| p.get(name))
        .filter(|v| !v.is_null())
        .or_else(|| body.get(name).filter(|v| !v.is_null()))
}

fn bool_param(body: &Value, name: &'static str) -> Result<Option<bool>, ApiError> {
    match param(body, name) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(EngineError::InvalidParameter {
            name,
            reason: format!("must be a boolean, not {}", type_name(other)),
        }
        .into()),
    }
}

fn positive_param(body: &Value, name: &'static str) -> Result<Option<usize>, ApiError> {
    match param(body, name) {
        None => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => Ok(Some(n as usize)),
            _ => Err(EngineError::InvalidParameter {
                name,
                reason: format!("must be a positive integer, got {v}"),
            }
            .into()),
        },
    }
}

fn string_list(v: &Value, what: &str) -> Result<Vec<String>, ApiError> {
    let Value::Array(items) = v else {
        return Err(ApiError::InvalidInput(format!(
            "{what} must be an array of strings, not {}",
            type_name(v)
        )));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, s)| {
            s.as_str().map(str::to_string).ok_or_else(|| {
                ApiError::InvalidInput(format!(
                    "{what}[{i}] must be a string, not {}",
                    type_name(s)
                ))
            })
        })
        .collect()
}

/// `POST /models/{key}`, `/models/{key}/`, `/models/{key}/pipeline/{task}`.
pub async fn infer(
    req: HttpRequest,
    served: Served,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let JsonBody(body, text) = body;
    if served.model.decoder().is_some() {
        if let Some(t) = req.match_info().get("task") {
            if t != "text-generation" {
                return Err(ApiError::InvalidInput(format!(
                    "unknown pipeline {t:?} for this model: it serves text-generation"
                )));
            }
        }
        return super::tgi::generate(&served, &body, &text).await;
    }
    if !body.is_object() {
        return Err(ApiError::InvalidInput(format!(
            "the body must be a JSON object with \"inputs\", not {}",
            type_name(&body)
        )));
    }
    if let Some(p) = body.get("parameters") {
        if !p.is_object() && !p.is_null() {
            return Err(ApiError::InvalidInput(format!(
                "\"parameters\" must be an object, not {}",
                type_name(p)
            )));
        }
    }
    let inputs = match body.get("inputs") {
        None | Some(Value::Null) => {
            return Err(ApiError::InvalidInput(
                "missing field \"inputs\"".to_string(),
            ))
        }
        Some(v) => v,
    };
    let requested = match req.match_info().get("task") {
        None => None,
        Some(t) => Some(Task::parse(t).map_err(|_| {
            ApiError::InvalidInput(format!(
                "unknown pipeline {t:?}: feature-extraction, sentence-similarity or text-classification"
            ))
        })?),
    };
    let served_task = served.model.info().task;
    if served_task == Task::TextClassification {
        if let Some(t) = requested.filter(|t| t.is_embedding()) {
            return Err(EngineError::WrongTask {
                served: served_task.as_str(),
                requested: t.as_str(),
            }
            .into());
        }
        return classify(&served, &body, inputs).await;
    }
    if requested == Some(Task::TextClassification) {
        return Err(EngineError::WrongTask {
            served: served_task.as_str(),
            requested: "text-classification",
        }
        .into());
    }
    if inputs.is_object() || requested == Some(Task::SentenceSimilarity) {
        return similarity(&served, inputs).await;
    }
    feature_extraction(&served, &body, inputs).await
}

async fn feature_extraction(
    served: &Served,
    body: &Value,
    inputs: &Value,
) -> Result<HttpResponse, ApiError> {
    let texts = match inputs {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) if items.is_empty() => return Err(EngineError::EmptyInput.into()),
        Value::Array(_) => string_list(inputs, "inputs")?,
        other => {
            return Err(ApiError::InvalidInput(format!(
                "\"inputs\" must be a string or an array of strings, not {}",
                type_name(other)
            )))
        }
    };
    if param(body, "prompt_name").is_some() {
        return Err(EngineError::InvalidParameter {
            name: "prompt_name",
            reason: "prompts are not supported by this model".to_string(),
        }
        .into());
    }
    if let Some(dir) = param(body, "truncation_direction") {
        if !dir
            .as_str()
            .is_some_and(|d| d.eq_ignore_ascii_case("right"))
        {
            return Err(EngineError::InvalidParameter {
                name: "truncation_direction",
                reason: format!("only \"right\" is supported, got {dir}"),
            }
            .into());
        }
    }
    if let Some(f) = param(body, "encoding_format") {
        if f.as_str() != Some("float") {
            return Err(EngineError::InvalidParameter {
                name: "encoding_format",
                reason: format!("only \"float\" is supported on this route, got {f}"),
            }
            .into());
        }
    }
    let opts = EmbedOptions {
        normalize: bool_param(body, "normalize")?,
        truncate: bool_param(body, "truncate")?.unwrap_or(true),
        dimensions: positive_param(body, "dimensions")?,
    };
    let out = served.model.embed(texts, opts).await?;
    Ok(metered(out.prompt_tokens, &out.vectors))
}

async fn similarity(served: &Served, inputs: &Value) -> Result<HttpResponse, ApiError> {
    let Value::Object(obj) = inputs else {
        return Err(ApiError::InvalidInput(format!(
            "sentence-similarity \"inputs\" must be an object with \"source_sentence\" and \"sentences\", not {}",
            type_name(inputs)
        )));
    };
    let source = match obj.get("source_sentence") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(ApiError::InvalidInput(format!(
                "inputs.source_sentence must be a string, not {}",
                type_name(other)
            )))
        }
        None => {
            return Err(ApiError::InvalidInput(
                "missing field inputs.source_sentence".to_string(),
            ))
        }
    };
    let sentences = match obj.get("sentences") {
        Some(v) => string_list(v, "inputs.sentences")?,
        None => {
            return Err(ApiError::InvalidInput(
                "missing field inputs.sentences".to_string(),
            ))
        }
    };
    let (scores, tokens) = served.model.similarity(source, sentences).await?;
    Ok(metered(tokens, &scores))
}

fn classification_input(v: &Value, at: &str) -> Result<TextInput, ApiError> {
    match v {
        Value::String(s) => Ok(TextInput::Single(s.clone())),
        Value::Object(o) => {
            let text = o
                .get("text")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::InvalidInput(format!("{at}.text must be a string")))?;
            match o.get("text_pair") {
                None | Some(Value::Null) => Ok(TextInput::Single(text.to_string())),
                Some(Value::String(p)) => Ok(TextInput::Pair(text.to_string(), p.clone())),
                Some(other) => Err(ApiError::InvalidInput(format!(
                    "{at}.text_pair must be a string, not {}",
                    type_name(other)
                ))),
            }
        }
        other => Err(ApiError::InvalidInput(format!(
            "{at} must be a string or {{\"text\", \"text_pair\"}}, not {}",
            type_name(other)
        ))),
    }
}

async fn classify(served: &Served, body: &Value, inputs: &Value) -> Result<HttpResponse, ApiError> {
    let texts = match inputs {
        Value::Array(items) if items.is_empty() => return Err(EngineError::EmptyInput.into()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| classification_input(v, &format!("inputs[{i}]")))
            .collect::<Result<Vec<_>, _>>()?,
        other => vec![classification_input(other, "inputs")?],
    };
    let score_fn = match param(body, "function_to_apply") {
        None => None,
        Some(v) => Some(v.as_str().and_then(ScoreFn::parse).ok_or_else(|| {
            EngineError::InvalidParameter {
                name: "function_to_apply",
                reason: format!("must be \"softmax\", \"sigmoid\" or \"none\", got {v}"),
            }
        })?),
    };
    let opts = ClassifyOptions {
        score_fn,
        top_k: positive_param(body, "top_k")?,
        truncate: bool_param(body, "truncate")?.unwrap_or(true),
    };
    let out = served.model.classify(texts, opts).await?;
    let lists: Vec<Vec<Value>> = out
        .labels
        .iter()
        .map(|row| {
            row.iter()
                .map(|ls| json!({"label": ls.label, "score": ls.score}))
                .collect()
        })
        .collect();
    Ok(metered(out.prompt_tokens, &lists))
}

/// `GET /models/{key}/info`: what the model serves.
pub async fn info(served: Served) -> Result<HttpResponse, ApiError> {
    let info = served.model.info();
    let stats = served.model.stats();
    let mut out = json!({
        "model_key": served.key,
        "model_id": served.served_name,
        "task": info.task,
        "model_type": info.model_type,
        "engine": info.engine,
        "replicas": info.replicas,
        "dim": info.dim,
        "labels": info.labels,
        "max_input_tokens": info.max_input_tokens,
        "max_inputs_per_request": served.model.max_inputs(),
        "normalize": info.normalize,
        "in_flight": stats.in_flight,
        "queue_depth": stats.queue_depth,
    });
    if let Some(b) = served.model.batch_stats() {
        out["batching"] = json!({
            "passes_total": b.passes,
            "inputs_total": b.inputs,
            "fill_waits_total": b.fill_waits,
        });
    }
    if let Some(d) = served.model.decoder() {
        let di = d.decoder_info();
        let ds = d.stats();
        out["decoder"] = json!({
            "architecture": di.architecture,
            "engine": di.engine,
            "context_length": di.context_length,
            "train_context_length": di.train_context_length,
            "slots": di.slots,
            "vocab_size": di.vocab_size,
            "has_chat_template": di.chat_template.is_some(),
            "bos_token": di.bos_token,
            "eos_token": di.eos_token,
        });
        out["stats"] = json!({
            "active_slots": ds.active_slots,
            "queued": ds.queued,
            "cancelled_total": ds.cancelled_total,
            "prompt_tokens_total": ds.prompt_tokens_total,
            "cached_prompt_tokens_total": ds.cached_prompt_tokens_total,
            "generated_tokens_total": ds.generated_tokens_total,
            "prompt_cache_entries": ds.prompt_cache_entries,
            "prompt_cache_bytes": ds.prompt_cache_bytes,
            "prompt_cache_hits_total": ds.prompt_cache_hits_total,
            "grammar_timeouts_total": ds.grammar_timeouts_total,
            "grammar_threads_abandoned": ds.grammar_threads_abandoned,
        });
    }
    Ok(HttpResponse::Ok().json(out))
}
