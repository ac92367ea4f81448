//! `POST /models/{key}/v1/chat/completions`: OpenAI chat completions, streamed (SSE
//! `chat.completion.chunk`s) or not, on the model's chat template, with tools.
//!
//! Tools: `tool_choice` `none` renders no tools and parses nothing; `auto` (the default
//! when tools are sent) renders the tools through the template and parses the output in
//! the template's tool-call format (streamed: content as it comes, each call as one
//! `delta.tool_calls` entry once complete); `required` or a named function constrains
//! the output to `{"name", "arguments"}` of the tools (a JSON-schema grammar), which
//! becomes the call. A choice with calls ends with `finish_reason: "tool_calls"`.

use super::choices::{self, Collected};
use super::error::ApiError;
use super::genparams::{self, OpenAiParams, CHAT_FIELDS, COMMON_FIELDS};
use super::logprobs;
use super::openai::type_name;
use super::openai_error::OpenAiError;
use super::sse::{self, Encoder};
use super::{RawJsonBody, Served};
use crate::engine::generate::tools::{self, StreamItem, StreamParser, ToolCall, ToolFormat};
use crate::engine::generate::{Constraint, GenEvent, Prompt, Usage};
use crate::engine::EngineError;
use actix_web::web::{self, Bytes};
use actix_web::HttpResponse;
use serde_json::{json, Value};

/// How a request's output is read for tool calls.
#[derive(Debug, Clone, Copy, PartialEq)]
enum ToolMode {
    Off,
    /// Parsed in the template's format.
    Auto(ToolFormat),
    /// Constrained to one `{"name", "arguments"}` object.
    Forced,
}

/// The validated `tools` and `tool_choice`.
struct ToolSetup {
    /// Raw `tools` for the template (`None`: render none).
    raw: Option<String>,
    /// `Some(name)` for a named function, `Some("")` for `required`.
    forced: Option<String>,
    parallel: bool,
}

fn invalid(name: &'static str, reason: impl Into<String>) -> ApiError {
    EngineError::InvalidParameter {
        name,
        reason: reason.into(),
    }
    .into()
}

/// Validates `tools`/`tool_choice`/`parallel_tool_calls`.
fn tool_setup(
    body: &serde_json::Map<String, Value>,
    raw_tools: Option<&str>,
) -> Result<ToolSetup, ApiError> {
    let tools = body.get("tools").filter(|t| !t.is_null());
    let mut names = Vec::new();
    if let Some(t) = tools {
        let Value::Array(list) = t else {
            return Err(invalid(
                "tools",
                format!("must be an array, not {}", type_name(t)),
            ));
        };
        for (i, tool) in list.iter().enumerate() {
            if tool.get("type").and_then(Value::as_str) != Some("function") {
                return Err(invalid(
                    "tools",
                    format!("tools[{i}].type must be \"function\""),
                ));
            }
            let name = tool
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .ok_or_else(|| invalid("tools", format!("tools[{i}].function.name is missing")))?;
            if let Some(p) = tool["function"].get("parameters").filter(|p| !p.is_null()) {
                if !p.is_object() {
                    return Err(invalid(
                        "tools",
                        format!("tools[{i}].function.parameters must be a JSON schema object"),
                    ));
                }
            }
            names.push(name.to_string());
        }
    }
    let has_tools = !names.is_empty();
    let choice = body.get("tool_choice").filter(|c| !c.is_null());
    let forced = match choice {
        None => None,
        Some(Value::String(s)) => match s.as_str() {
            "none" | "auto" => None,
            "required" => Some(String::new()),
            other => {
                return Err(invalid(
                    "tool_choice",
                    format!("must be none, auto, required or a named function, got {other:?}"),
                ))
            }
        },
        Some(Value::Object(o)) => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    invalid(
                        "tool_choice",
                        "must be {\"type\": \"function\", \"function\": {\"name\": ...}}",
                    )
                })?;
            if !names.iter().any(|n| n == name) {
                return Err(invalid(
                    "tool_choice",
                    format!("names function {name:?}, which is not in tools"),
                ));
            }
            Some(name.to_string())
        }
        Some(v) => {
            return Err(invalid(
                "tool_choice",
                format!("must be a string or an object, not {}", type_name(v)),
            ))
        }
    };
    if choice.is_some_and(|c| c.as_str() != Some("none")) && !has_tools {
        return Err(invalid("tool_choice", "needs tools"));
    }
    let parallel = match body.get("parallel_tool_calls") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            return Err(invalid(
                "parallel_tool_calls",
                format!("must be a boolean, not {}", type_name(v)),
            ))
        }
    };
    let render = has_tools && choice.and_then(Value::as_str) != Some("none");
    Ok(ToolSetup {
        raw: render.then(|| raw_tools.unwrap_or("[]").to_string()),
        forced,
        parallel,
    })
}

/// Validates `messages` and returns them as the template gets them: the raw JSON when
/// it needs no change (key order kept), else rewritten: text-part arrays joined into a
/// string, `developer` read as `system`, tool-call `arguments` strings parsed into
/// objects (as templates expect).
fn messages(v: Option<&Value>, raw: Option<&str>) -> Result<String, ApiError> {
    let Some(Value::Array(list)) = v else {
        return Err(ApiError::InvalidInput(
            "missing field \"messages\": an array of {role, content}".to_string(),
        ));
    };
    if list.is_empty() {
        return Err(EngineError::EmptyInput.into());
    }
    let mut changed = false;
    let mut out = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let Value::Object(m) = m else {
            return Err(ApiError::InvalidInput(format!(
                "messages[{i}] must be an object, not {}",
                type_name(m)
            )));
        };
        let mut m = m.clone();
        match m.get("role").and_then(Value::as_str) {
            Some("developer") => {
                m.insert("role".into(), json!("system"));
                changed = true;
            }
            Some(_) => {}
            None => {
                return Err(ApiError::InvalidInput(format!(
                    "messages[{i}].role must be a string"
                )))
            }
        }
        match m.get("content") {
            None | Some(Value::Null) | Some(Value::String(_)) => {}
            Some(Value::Array(parts)) => {
                let mut text = String::new();
                for (j, p) in parts.iter().enumerate() {
                    match (p.get("type").and_then(Value::as_str), p.get("text")) {
                        (Some("text"), Some(Value::String(t))) => text.push_str(t),
                        (ty, _) => {
                            return Err(ApiError::InvalidInput(format!(
                                "messages[{i}].content[{j}]: only text parts are supported, got type {}",
                                ty.unwrap_or("(none)")
                            )))
                        }
                    }
                }
                m.insert("content".into(), json!(text));
                changed = true;
            }
            Some(other) => {
                return Err(ApiError::InvalidInput(format!(
                    "messages[{i}].content must be a string or an array of text parts, not {}",
                    type_name(other)
                )))
            }
        }
        if let Some(Value::Array(calls)) = m.get_mut("tool_calls") {
            for c in calls.iter_mut() {
                if let Some(f) = c.get_mut("function").and_then(Value::as_object_mut) {
                    if let Some(Value::String(a)) = f.get("arguments") {
                        if let Ok(parsed @ Value::Object(_)) = serde_json::from_str::<Value>(a) {
                            f.insert("arguments".into(), parsed);
                            changed = true;
                        }
                    }
                }
            }
        }
        out.push(Value::Object(m));
    }
    match raw {
        Some(raw) if !changed => Ok(raw.to_string()),
        _ => Ok(Value::Array(out).to_string()),
    }
}

/// OpenAI's tool-call object.
fn call_json(c: &ToolCall) -> Value {
    json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}})
}

/// A forced call's output: `{"name", "arguments"}` (arguments in the model's key order).
fn forced_call(text: &str) -> Option<ToolCall> {
    tools::parse_forced(text)
}

/// A whole choice's `(content, tool_calls, finish_reason)`.
fn read_choice(
    c: &Collected,
    mode: ToolMode,
    parallel: bool,
) -> (Option<String>, Vec<ToolCall>, &'static str) {
    let reason = c.finish.reason.as_str();
    let (content, mut calls) = match mode {
        ToolMode::Off => (Some(c.text.clone()), Vec::new()),
        ToolMode::Auto(format) => {
            let p = tools::parse(format, &c.text);
            if p.tool_calls.is_empty() {
                (Some(c.text.clone()), Vec::new())
            } else {
                let content = (!p.content.trim().is_empty()).then_some(p.content);
                (content, p.tool_calls)
            }
        }
        ToolMode::Forced => match forced_call(&c.text) {
            Some(call) => (None, vec![call]),
            None => (Some(c.text.clone()), Vec::new()),
        },
    };
    if !parallel {
        calls.truncate(1);
    }
    let reason = if calls.is_empty() {
        reason
    } else {
        "tool_calls"
    };
    (content, calls, reason)
}

/// `POST /models/{key}/v1/chat/completions`.
pub async fn chat_completions(
    served: Result<Served, ApiError>,
    body: RawJsonBody,
) -> Result<HttpResponse, OpenAiError> {
    let served = served?;
    let obj = genparams::object(&body.value)?;
    genparams::check_fields(obj, &[COMMON_FIELDS, CHAT_FIELDS], true)?;
    let decoder = choices::decoder(&served.model, "text-generation")?.clone();
    let raw = genparams::raw_fields(&body.text);
    let params = genparams::openai(obj, &raw, true)?;
    let msgs = messages(obj.get("messages"), raw.get("messages").copied())?;
    let tools_setup = tool_setup(obj, raw.get("tools").copied())?;
    let extra = match obj.get("chat_template_kwargs").filter(|v| !v.is_null()) {
        None => None,
        Some(Value::Object(_)) => raw.get("chat_template_kwargs").map(|s| s.to_string()),
        Some(v) => {
            return Err(invalid(
                "chat_template_kwargs",
                format!("must be an object, not {}", type_name(v)),
            )
            .into())
        }
    };
    let mut params = params;
    if let Some(only) = &tools_setup.forced {
        if params.constraint != Constraint::None {
            return Err(invalid(
                "response_format",
                "cannot be combined with tool_choice required or a named function",
            )
            .into());
        }
        // The tools as sent: each tool's parameters keep the client's property order.
        let tools_raw = raw.get("tools").copied().unwrap_or("[]");
        let only = (!only.is_empty()).then_some(only.as_str());
        let schema = tools::forced_call_schema(tools_raw, only)
            .ok_or_else(|| invalid("tool_choice", "no tool in tools can be called"))?;
        params.constraint = Constraint::JsonSchema(schema);
    }
    let model = decoder.clone();
    let tools_raw = tools_setup.raw.clone();
    // Templates are tenant code: compile (once per model) and render off the async
    // workers, bounded by the template's fuel.
    let (prompt, format) = web::block(move || -> Result<(String, ToolFormat), EngineError> {
        let t = model.chat_template(tools_raw.is_some())?;
        let p = t.render(&msgs, tools_raw.as_deref(), true, extra.as_deref())?;
        Ok((p, t.tool_format()))
    })
    .await
    .map_err(|_| EngineError::Unavailable)??;
    let mode = match (&tools_setup.forced, &tools_setup.raw) {
        (Some(_), _) => ToolMode::Forced,
        (None, Some(_)) => ToolMode::Auto(format),
        (None, None) => ToolMode::Off,
    };
    let req = params.request(Prompt::Text {
        text: prompt,
        add_special: false,
    });
    let streams = choices::submit(&decoder, &req, params.n).await?;
    let prompt_tokens = streams.first().map(|s| s.prompt_tokens).unwrap_or(0);
    let id = choices::new_id("chatcmpl");
    let created = choices::now();
    let model = served.served_name.clone();
    if params.stream {
        let enc = ChatEncoder::new(
            id,
            created,
            model,
            &params,
            mode,
            tools_setup.parallel,
            prompt_tokens,
        );
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
            let (content, calls, reason) = read_choice(c, mode, tools_setup.parallel);
            let mut message = json!({"role": "assistant", "content": content});
            if !calls.is_empty() {
                message["tool_calls"] = calls.iter().map(call_json).collect();
            }
            json!({
                "index": i,
                "message": message,
                "logprobs": params.logprobs.map(|_| logprobs::chat(&c.tokens)),
                "finish_reason": reason,
            })
        })
        .collect();
    Ok(choices::metered_json(
        &usage,
        &json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "system_fingerprint": null,
            "choices": choices_json,
            "usage": choices::usage_json(&usage),
        }),
    ))
}

/// Per-choice state of a streamed chat answer.
struct ChoiceState {
    parser: Option<StreamParser>,
    /// A forced call's text, parsed when the choice ends.
    forced: String,
    calls: usize,
    /// Log-probabilities of tokens whose text is not released yet.
    pending_lp: Vec<Value>,
    usage: Option<Usage>,
    tokens: usize,
}

/// The chat SSE encoder.
pub struct ChatEncoder {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    logprobs: bool,
    mode: ToolMode,
    parallel: bool,
    prompt_tokens: usize,
    choices: Vec<ChoiceState>,
}

impl ChatEncoder {
    fn new(
        id: String,
        created: u64,
        model: String,
        params: &OpenAiParams,
        mode: ToolMode,
        parallel: bool,
        prompt_tokens: usize,
    ) -> ChatEncoder {
        let choices = (0..params.n)
            .map(|_| ChoiceState {
                parser: match mode {
                    ToolMode::Auto(f) => Some(StreamParser::new(f)),
                    _ => None,
                },
                forced: String::new(),
                calls: 0,
                pending_lp: Vec::new(),
                usage: None,
                tokens: 0,
            })
            .collect();
        ChatEncoder {
            id,
            created,
            model,
            include_usage: params.include_usage,
            logprobs: params.logprobs.is_some(),
            mode,
            parallel,
            prompt_tokens,
            choices,
        }
    }

    fn chunk(&self, index: usize, delta: Value, logprobs: Value, finish: Option<&str>) -> Bytes {
        let mut c = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": null,
            "choices": [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}],
        });
        if self.include_usage {
            c["usage"] = Value::Null;
        }
        sse::data(&c)
    }

    fn take_lp(&mut self, index: usize) -> Value {
        if !self.logprobs {
            return Value::Null;
        }
        json!({"content": std::mem::take(&mut self.choices[index].pending_lp)})
    }

    fn emit_items(&mut self, index: usize, items: Vec<StreamItem>, out: &mut Vec<Bytes>) {
        for item in items {
            match item {
                StreamItem::Content(text) if !text.is_empty() => {
                    let lp = self.take_lp(index);
                    out.push(self.chunk(index, json!({"content": text}), lp, None));
                }
                StreamItem::Content(_) => {}
                StreamItem::ToolCall(call) => self.emit_call(index, &call, out),
            }
        }
    }

    fn emit_call(&mut self, index: usize, call: &ToolCall, out: &mut Vec<Bytes>) {
        let st = &mut self.choices[index];
        if !self.parallel && st.calls >= 1 {
            return;
        }
        let k = st.calls;
        st.calls += 1;
        let mut c = call_json(call);
        c["index"] = json!(k);
        let lp = self.take_lp(index);
        out.push(self.chunk(index, json!({"tool_calls": [c]}), lp, None));
    }

    /// Text released by the engine for choice `index`.
    fn text(&mut self, index: usize, text: &str, out: &mut Vec<Bytes>) {
        match self.mode {
            ToolMode::Off => {
                self.emit_items(index, vec![StreamItem::Content(text.to_string())], out)
            }
            ToolMode::Auto(_) => {
                let items = self.choices[index]
                    .parser
                    .as_mut()
                    .map(|p| p.push(text))
                    .unwrap_or_default();
                self.emit_items(index, items, out);
            }
            ToolMode::Forced => self.choices[index].forced.push_str(text),
        }
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

impl Encoder for ChatEncoder {
    fn start(&mut self, out: &mut Vec<Bytes>) {
        for i in 0..self.choices.len() {
            out.push(self.chunk(
                i,
                json!({"role": "assistant", "content": ""}),
                Value::Null,
                None,
            ));
        }
    }

    fn event(&mut self, index: usize, ev: GenEvent, out: &mut Vec<Bytes>) -> bool {
        match ev {
            GenEvent::Token(t) => {
                self.choices[index].tokens += 1;
                if self.logprobs {
                    if let Some(e) = logprobs::chat_entry(&t) {
                        self.choices[index].pending_lp.push(e);
                    }
                }
                self.text(index, &t.text, out);
                true
            }
            GenEvent::Done(f) => {
                self.text(index, &f.tail, out);
                match self.mode {
                    ToolMode::Off => {}
                    ToolMode::Auto(_) => {
                        let items = self.choices[index]
                            .parser
                            .as_mut()
                            .map(StreamParser::finish)
                            .unwrap_or_default();
                        self.emit_items(index, items, out);
                    }
                    ToolMode::Forced => {
                        let text = std::mem::take(&mut self.choices[index].forced);
                        match forced_call(&text) {
                            Some(call) => self.emit_call(index, &call, out),
                            None => self.emit_items(index, vec![StreamItem::Content(text)], out),
                        }
                    }
                }
                let reason = if self.choices[index].calls > 0 {
                    "tool_calls"
                } else {
                    f.reason.as_str()
                };
                self.choices[index].usage = Some(f.usage);
                let lp = if self.choices[index].pending_lp.is_empty() {
                    Value::Null
                } else {
                    self.take_lp(index)
                };
                out.push(self.chunk(index, json!({}), lp, Some(reason)));
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
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
        };
        sse::openai_finish(head, self.include_usage, &self.usage(), out);
    }
}
