//! Tool calls in generated text: how each model family writes them, and how to pull them
//! out of a finished completion ([`parse`]) or out of a stream as it comes
//! ([`StreamParser`]).
//!
//! The format is detected from the chat template text ([`ToolFormat::detect`]):
//!
//! * [`ToolFormat::Hermes`] (Qwen 2.5/3, Hermes, most ChatML tool templates):
//!   `<tool_call>{"name": .., "arguments": {..}}</tool_call>`, any number of them.
//! * [`ToolFormat::Llama3Json`] (Llama 3.1-3.3): the whole answer is
//!   `{"name": .., "parameters": {..}}` (several separated by `;` or newlines, or a JSON
//!   array of them), optionally after `<|python_tag|>`.
//! * [`ToolFormat::Mistral`]: `[TOOL_CALLS][{"name": .., "arguments": {..}}, ..]` (v3) or
//!   `[TOOL_CALLS]name[ARGS]{..}` repeated (v11; an optional `[CALL_ID]id` before
//!   `[ARGS]` is accepted).
//! * [`ToolFormat::Gemma`] (Gemma has no tool tokens; Google's function-calling guide has
//!   the model answer in a fenced block): a ` ```tool_code ` block of Python calls with
//!   keyword arguments, one per line (`get_weather(city="Paris", days=3)`), or a
//!   ` ```json ` block holding exactly `{"name": .., "parameters"|"arguments": {..}}` (or an
//!   array of such objects). A `json` block of any other shape is content.
//!
//! Arguments are re-serialized as compact JSON keeping the model's key order; ids are
//! `call_` + 24 random alphanumerics. A block that does not parse as calls (bad JSON, no
//! name, positional Python arguments, an unclosed block at the end) is left in the content
//! verbatim. When calls were found, the content around them is trimmed.

use super::template::{parse_json, parse_json_prefix, write_json, JsonStyle};
use minijinja::value::ValueKind;
use minijinja::Value;
use rand::distr::{Alphanumeric, SampleString};
use serde_json::value::RawValue;
use std::collections::HashMap;

/// How a model writes tool calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolFormat {
    Hermes,
    Llama3Json,
    Mistral,
    Gemma,
    /// The template shows no tool-call convention: output is all content.
    None,
}

impl ToolFormat {
    /// The convention a chat template teaches its model, from the template's text:
    /// `<tool_call>` → Hermes; `[TOOL_CALLS]`/`[AVAILABLE_TOOLS]` → Mistral;
    /// `<|python_tag|>`, or Llama 3 headers plus a use of `tools` → Llama3Json;
    /// `<start_of_turn>` (Gemma's turns) → Gemma; otherwise None.
    pub fn detect(template: &str) -> ToolFormat {
        if template.contains("<tool_call>") {
            ToolFormat::Hermes
        } else if template.contains("[TOOL_CALLS]") || template.contains("[AVAILABLE_TOOLS]") {
            ToolFormat::Mistral
        } else if template.contains("<|python_tag|>")
            || (template.contains("<|start_header_id|>") && template.contains("tools"))
        {
            ToolFormat::Llama3Json
        } else if template.contains("<start_of_turn>") {
            ToolFormat::Gemma
        } else {
            ToolFormat::None
        }
    }

    fn start_markers(self) -> &'static [&'static str] {
        match self {
            ToolFormat::Hermes => &["<tool_call>"],
            ToolFormat::Llama3Json => &["<|python_tag|>"],
            ToolFormat::Mistral => &["[TOOL_CALLS]"],
            ToolFormat::Gemma => &["```tool_code", "```json"],
            ToolFormat::None => &[],
        }
    }

    /// What closes a call block; `None`: the block runs to the end of the output.
    fn end_marker(self) -> Option<&'static str> {
        match self {
            ToolFormat::Hermes => Some("</tool_call>"),
            ToolFormat::Gemma => Some("```"),
            _ => None,
        }
    }
}

/// One function call the model made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    /// `call_` + 24 random alphanumerics.
    pub id: String,
    pub name: String,
    /// The arguments as compact JSON text (an object), in the model's key order.
    pub arguments: String,
}

/// A finished completion split into content and calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
}

/// What a [`StreamParser`] releases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamItem {
    Content(String),
    ToolCall(ToolCall),
}

/// Splits a finished completion into content and tool calls (the same rules as the
/// stream parser; content is trimmed when calls were found).
pub fn parse(format: ToolFormat, text: &str) -> Parsed {
    let mut parser = StreamParser::new(format);
    let mut items = parser.push(text);
    items.extend(parser.finish());
    let mut content = String::new();
    let mut tool_calls = Vec::new();
    for item in items {
        match item {
            StreamItem::Content(c) => content.push_str(&c),
            StreamItem::ToolCall(c) => tool_calls.push(c),
        }
    }
    if !tool_calls.is_empty() {
        content = content.trim().to_owned();
    }
    Parsed {
        content,
        tool_calls,
    }
}

/// Finds tool calls in streamed text. Content is released as it comes, except a tail
/// that may be the start of a call marker (held until it is known not to be); from a
/// marker on, the call is buffered and released whole when its block closes (or at
/// [`StreamParser::finish`] for formats whose calls run to the end). Trailing whitespace
/// is held until more content follows, dropped when a call follows or at the end when
/// calls were made (the stream's counterpart of [`parse`]'s trimming), so the released
/// text does not depend on how the tokens split it.
#[derive(Debug)]
pub struct StreamParser {
    format: ToolFormat,
    buf: String,
    in_call: bool,
    /// Non-whitespace content was seen (Llama3Json: a call must open the answer).
    seen_text: bool,
    pending_ws: String,
    calls: usize,
}

impl StreamParser {
    pub fn new(format: ToolFormat) -> Self {
        StreamParser {
            format,
            buf: String::new(),
            in_call: false,
            seen_text: false,
            pending_ws: String::new(),
            calls: 0,
        }
    }

    /// Feeds generated text; returns what can be released now.
    pub fn push(&mut self, text: &str) -> Vec<StreamItem> {
        let mut out = Vec::new();
        if self.format == ToolFormat::None {
            if !text.is_empty() {
                out.push(StreamItem::Content(text.to_owned()));
            }
            return out;
        }
        self.buf.push_str(text);
        self.drain(&mut out);
        out
    }

    /// The output ended: releases everything held (an unfinished or malformed call as
    /// content).
    pub fn finish(&mut self) -> Vec<StreamItem> {
        let mut out = Vec::new();
        self.drain(&mut out);
        let rest = std::mem::take(&mut self.buf);
        if self.in_call {
            self.in_call = false;
            self.block(&rest, &mut out);
        } else {
            self.content(&rest, &mut out);
        }
        let ws = std::mem::take(&mut self.pending_ws);
        if self.calls == 0 && !ws.is_empty() {
            out.push(StreamItem::Content(ws));
        }
        out
    }

    fn drain(&mut self, out: &mut Vec<StreamItem>) {
        loop {
            if !self.in_call {
                if self.format == ToolFormat::Llama3Json && !self.seen_text {
                    let trimmed = self.buf.trim_start();
                    if trimmed.is_empty() {
                        return;
                    }
                    if trimmed.starts_with('{') || trimmed.starts_with('[') {
                        self.in_call = true;
                        continue;
                    }
                    self.seen_text = true;
                }
                let markers = self.format.start_markers();
                let found = markers.iter().filter_map(|m| self.buf.find(m)).min();
                if let Some(at) = found {
                    let before = self.buf[..at].to_owned();
                    self.content(&before, out);
                    self.buf.drain(..at);
                    self.in_call = true;
                    continue;
                }
                let hold = held_prefix(&self.buf, markers);
                let release = self.buf[..self.buf.len() - hold].to_owned();
                self.buf.drain(..self.buf.len() - hold);
                self.content(&release, out);
                return;
            }
            let Some(end) = self.format.end_marker() else {
                return;
            };
            let start_len = self
                .format
                .start_markers()
                .iter()
                .find(|m| self.buf.starts_with(*m))
                .map_or(0, |m| m.len());
            let Some(at) = self.buf[start_len..].find(end) else {
                return;
            };
            let stop = start_len + at + end.len();
            let block = self.buf[..stop].to_owned();
            self.buf.drain(..stop);
            self.in_call = false;
            self.block(&block, out);
        }
    }

    fn block(&mut self, block: &str, out: &mut Vec<StreamItem>) {
        if block.is_empty() {
            return;
        }
        match parse_block(self.format, block) {
            Some(calls) if !calls.is_empty() => {
                self.pending_ws.clear();
                self.calls += calls.len();
                out.extend(calls.into_iter().map(StreamItem::ToolCall));
            }
            _ => {
                self.seen_text = true;
                self.content(block, out);
            }
        }
    }

    fn content(&mut self, text: &str, out: &mut Vec<StreamItem>) {
        if text.is_empty() {
            return;
        }
        // Trailing whitespace is held whatever the piece size, so the text a stream
        // releases does not depend on where the tokens split it (`"Sure.\n"` then a call
        // releases `"Sure."`, in one piece or in many).
        let body = text.trim_end();
        if body.is_empty() {
            self.pending_ws.push_str(text);
            return;
        }
        let mut s = std::mem::take(&mut self.pending_ws);
        s.push_str(body);
        out.push(StreamItem::Content(s));
        self.pending_ws.push_str(&text[body.len()..]);
    }
}

/// The length of the longest tail of `buf` that is a proper prefix of a marker.
fn held_prefix(buf: &str, markers: &[&str]) -> usize {
    let longest = markers.iter().map(|m| m.len()).max().unwrap_or(0);
    for k in (1..longest.min(buf.len() + 1)).rev() {
        let start = buf.len() - k;
        if !buf.is_char_boundary(start) {
            continue;
        }
        let tail = &buf[start..];
        if markers.iter().any(|m| m.len() > k && m.starts_with(tail)) {
            return k;
        }
    }
    0
}

fn new_id() -> String {
    format!("call_{}", Alphanumeric.sample_string(&mut rand::rng(), 24))
}

fn compact(value: &Value) -> Option<String> {
    let mut s = String::new();
    write_json(value, &JsonStyle::compact(), 0, &mut s).ok()?;
    Some(s)
}

/// Arguments given as an object, or as a string holding a JSON object.
fn arguments_text(args: Option<Value>) -> Option<String> {
    match args {
        None => Some("{}".into()),
        Some(v) if v.kind() == ValueKind::Map => compact(&v),
        Some(v) if v.kind() == ValueKind::String => {
            let parsed = parse_json(v.as_str()?).ok()?;
            (parsed.kind() == ValueKind::Map).then(|| compact(&parsed))?
        }
        Some(_) => None,
    }
}

fn field(v: &Value, name: &str) -> Option<Value> {
    v.get_attr(name).ok().filter(|x| !x.is_undefined())
}

/// `{"name": .., "arguments"|"parameters": {..}}` (or the OpenAI-style
/// `{"function": {..}}` wrapper) as a call.
fn call_from_object(v: &Value) -> Option<ToolCall> {
    if v.kind() != ValueKind::Map {
        return None;
    }
    if let Some(inner) = field(v, "function") {
        if inner.kind() == ValueKind::Map && field(v, "name").is_none() {
            return call_from_object(&inner);
        }
    }
    let name = field(v, "name")?;
    let name = name.as_str()?.trim();
    if name.is_empty() {
        return None;
    }
    let args = field(v, "arguments").or_else(|| field(v, "parameters"));
    Some(ToolCall {
        id: new_id(),
        name: name.to_owned(),
        arguments: arguments_text(args)?,
    })
}

/// One object or an array of them, all calls.
fn calls_from_json(v: &Value) -> Option<Vec<ToolCall>> {
    match v.kind() {
        ValueKind::Map => Some(vec![call_from_object(v)?]),
        ValueKind::Seq => {
            let calls = v
                .try_iter()
                .ok()?
                .map(|item| call_from_object(&item))
                .collect::<Option<Vec<_>>>()?;
            (!calls.is_empty()).then_some(calls)
        }
        _ => None,
    }
}

/// Parses one call block as the stream parser cut it (markers included).
fn parse_block(format: ToolFormat, block: &str) -> Option<Vec<ToolCall>> {
    match format {
        ToolFormat::Hermes => {
            let body = block.strip_prefix("<tool_call>")?;
            let body = body.strip_suffix("</tool_call>").unwrap_or(body);
            let v = parse_json(body.trim()).ok()?;
            Some(vec![call_from_object(&v)?])
        }
        ToolFormat::Llama3Json => {
            let mut rest = block.trim_start();
            rest = rest.strip_prefix("<|python_tag|>").unwrap_or(rest);
            let mut calls = Vec::new();
            loop {
                rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ';');
                if rest.is_empty() {
                    break;
                }
                let (v, used) = parse_json_prefix(rest)?;
                calls.extend(calls_from_json(&v)?);
                rest = &rest[used..];
            }
            (!calls.is_empty()).then_some(calls)
        }
        ToolFormat::Mistral => parse_mistral(block.strip_prefix("[TOOL_CALLS]")?),
        ToolFormat::Gemma => {
            let body = block.strip_suffix("```")?;
            if let Some(code) = body.strip_prefix("```tool_code") {
                let calls = code
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(python_call)
                    .collect::<Option<Vec<_>>>()?;
                (!calls.is_empty()).then_some(calls)
            } else {
                let json = body.strip_prefix("```json")?;
                let v = parse_json(json.trim()).ok()?;
                // Only the exact call shape: other JSON the model shows is content.
                let exact = |o: &Value| {
                    o.kind() == ValueKind::Map
                        && o.len() == Some(2)
                        && field(o, "name").is_some()
                        && (field(o, "parameters").is_some() || field(o, "arguments").is_some())
                };
                let ok = match v.kind() {
                    ValueKind::Seq => v.try_iter().ok()?.all(|o| exact(&o)),
                    _ => exact(&v),
                };
                if !ok {
                    return None;
                }
                calls_from_json(&v)
            }
        }
        ToolFormat::None => None,
    }
}

fn parse_mistral(after_marker: &str) -> Option<Vec<ToolCall>> {
    let text = after_marker.trim_start();
    if text.starts_with('[') || text.starts_with('{') {
        let (v, used) = parse_json_prefix(text)?;
        if !text[used..].trim().is_empty() {
            return None;
        }
        return calls_from_json(&v);
    }
    // v11: name[ARGS]{..} ([TOOL_CALLS]name[ARGS]{..})*
    let mut calls = Vec::new();
    let mut rest = text;
    loop {
        let args_at = rest.find("[ARGS]")?;
        let head = &rest[..args_at];
        let name = head.split("[CALL_ID]").next().unwrap_or(head).trim();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_alphanumeric() || "_-.".contains(c))
        {
            return None;
        }
        let after = &rest[args_at + "[ARGS]".len()..];
        let (args, used) = parse_json_prefix(after)?;
        if args.kind() != ValueKind::Map {
            return None;
        }
        calls.push(ToolCall {
            id: new_id(),
            name: name.to_owned(),
            arguments: compact(&args)?,
        });
        let tail = after[used..].trim_start();
        if tail.is_empty() {
            return Some(calls);
        }
        rest = tail.strip_prefix("[TOOL_CALLS]")?;
    }
}

// ---------------------------------------------------------------------------------------
// Gemma tool_code: `name(key=literal, ...)` with Python literals.

fn python_call(line: &str) -> Option<ToolCall> {
    let mut p = PyParser { s: line, i: 0 };
    p.ws();
    let name = p.ident()?;
    p.ws();
    p.eat('(')?;
    let mut pairs: Vec<(String, Value)> = Vec::new();
    loop {
        p.ws();
        if p.eat(')').is_some() {
            break;
        }
        let key = p.ident()?;
        p.ws();
        p.eat('=')?;
        let value = p.literal()?;
        pairs.push((key.to_owned(), value));
        p.ws();
        if p.eat(',').is_none() {
            p.ws();
            p.eat(')')?;
            break;
        }
    }
    p.ws();
    if p.i != p.s.len() {
        return None;
    }
    Some(ToolCall {
        id: new_id(),
        name: name.to_owned(),
        arguments: compact(&Value::from_pairs(pairs))?,
    })
}

struct PyParser<'a> {
    s: &'a str,
    i: usize,
}

impl<'a> PyParser<'a> {
    fn rest(&self) -> &'a str {
        &self.s[self.i..]
    }
    fn ws(&mut self) {
        let r = self.rest();
        self.i += r.len() - r.trim_start().len();
    }
    fn eat(&mut self, c: char) -> Option<()> {
        if self.rest().starts_with(c) {
            self.i += c.len_utf8();
            Some(())
        } else {
            None
        }
    }
    fn ident(&mut self) -> Option<&'a str> {
        let r = self.rest();
        let len = r
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.'))
            .unwrap_or(r.len());
        if len == 0 || r.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
            return None;
        }
        self.i += len;
        Some(&r[..len])
    }
    fn literal(&mut self) -> Option<Value> {
        self.ws();
        let r = self.rest();
        let c = r.chars().next()?;
        match c {
            '\'' | '"' => self.string(c),
            '[' | '(' => {
                let close = if c == '[' { ']' } else { ')' };
                self.i += 1;
                let mut items = Vec::new();
                loop {
                    self.ws();
                    if self.eat(close).is_some() {
                        break;
                    }
                    items.push(self.literal()?);
                    self.ws();
                    if self.eat(',').is_none() {
                        self.ws();
                        self.eat(close)?;
                        break;
                    }
                }
                Some(Value::from(items))
            }
            '{' => {
                self.i += 1;
                let mut pairs: Vec<(String, Value)> = Vec::new();
                loop {
                    self.ws();
                    if self.eat('}').is_some() {
                        break;
                    }
                    let key = self.literal()?;
                    let key = key.as_str()?.to_owned();
                    self.ws();
                    self.eat(':')?;
                    pairs.push((key, self.literal()?));
                    self.ws();
                    if self.eat(',').is_none() {
                        self.ws();
                        self.eat('}')?;
                        break;
                    }
                }
                Some(Value::from_pairs(pairs))
            }
            _ => {
                let len = r
                    .find(|c: char| !(c.is_alphanumeric() || "+-._".contains(c)))
                    .unwrap_or(r.len());
                let word = &r[..len];
                self.i += len;
                match word {
                    "True" | "true" => Some(Value::from(true)),
                    "False" | "false" => Some(Value::from(false)),
                    "None" | "null" => Some(Value::from(())),
                    _ => {
                        let word = word.replace('_', "");
                        if let Ok(n) = word.parse::<i64>() {
                            Some(Value::from(n))
                        } else {
                            word.parse::<f64>()
                                .ok()
                                .filter(|f| f.is_finite())
                                .map(Value::from)
                        }
                    }
                }
            }
        }
    }
    fn string(&mut self, quote: char) -> Option<Value> {
        self.i += 1;
        let mut out = String::new();
        let mut chars = self.rest().char_indices();
        while let Some((at, c)) = chars.next() {
            match c {
                c if c == quote => {
                    self.i += at + 1;
                    return Some(Value::from(out));
                }
                '\\' => {
                    let (_, e) = chars.next()?;
                    match e {
                        'n' => out.push('\n'),
                        't' => out.push('\t'),
                        'r' => out.push('\r'),
                        '0' => out.push('\0'),
                        other => out.push(other),
                    }
                }
                c => out.push(c),
            }
        }
        None
    }
}

// ---------------------------------------------------------------------------------------
// Forced calls (tool_choice "required" or a named function)

/// The JSON Schema a forced call must match: `{"name": <const>, "arguments": <that tool's
/// parameters>}`, one branch per tool under `anyOf` (just the branch when `only` names one
/// tool, or when there is one tool). `tools` is the request's `tools` array as the client
/// sent it (OpenAI shape `{"type": "function", "function": {"name", "parameters"}}`; a
/// bare `{"name", "parameters"}` is accepted too). A tool without `parameters` takes any
/// object.
///
/// The schema is built as text around each tool's `parameters` text, untouched: the
/// grammar generates properties in schema order, so the arguments come out in the order
/// the client declared them (and `name` before `arguments`). `None`: `tools` is not an
/// array, or no tool matches.
pub fn forced_call_schema(tools: &str, only: Option<&str>) -> Option<String> {
    fn object(raw: &RawValue) -> Option<HashMap<String, &RawValue>> {
        serde_json::from_str(raw.get()).ok()
    }
    let list: Vec<&RawValue> = serde_json::from_str(tools).ok()?;
    let mut branches = Vec::new();
    for tool in list {
        let Some(tool) = object(tool) else {
            continue;
        };
        let function = match tool.get("function") {
            Some(f) => match object(f) {
                Some(f) => f,
                None => continue,
            },
            None => tool,
        };
        let Some(name) = function
            .get("name")
            .and_then(|n| serde_json::from_str::<String>(n.get()).ok())
        else {
            continue;
        };
        if only.is_some_and(|o| o != name) {
            continue;
        }
        let parameters = function
            .get("parameters")
            .map(|p| p.get())
            .filter(|p| p.starts_with('{'))
            .unwrap_or(r#"{"type": "object"}"#);
        let name = serde_json::to_string(&name).ok()?;
        branches.push(format!(
            r#"{{"type": "object", "properties": {{"name": {{"const": {name}}}, "arguments": {parameters}}}, "required": ["name", "arguments"], "additionalProperties": false}}"#
        ));
    }
    match branches.len() {
        0 => None,
        1 => branches.pop(),
        _ => Some(format!(r#"{{"anyOf": [{}]}}"#, branches.join(", "))),
    }
}

/// The call in output generated under [`forced_call_schema`]: `{"name": .., "arguments":
/// {..}}` (whitespace around it allowed). `None` if it is not such an object.
pub fn parse_forced(text: &str) -> Option<ToolCall> {
    let v = parse_json(text.trim()).ok()?;
    call_from_object(&v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calls(p: &Parsed) -> Vec<(&str, &str)> {
        p.tool_calls
            .iter()
            .map(|c| (c.name.as_str(), c.arguments.as_str()))
            .collect()
    }

    /// Feeds `text` in pieces of `n` bytes (on char boundaries) and collects the items.
    fn stream(format: ToolFormat, text: &str, n: usize) -> Vec<StreamItem> {
        let mut p = StreamParser::new(format);
        let mut out = Vec::new();
        let mut start = 0;
        while start < text.len() {
            let mut end = (start + n).min(text.len());
            while !text.is_char_boundary(end) {
                end += 1;
            }
            out.extend(p.push(&text[start..end]));
            start = end;
        }
        out.extend(p.finish());
        out
    }

    fn joined(items: &[StreamItem]) -> (String, Vec<(String, String)>) {
        let mut content = String::new();
        let mut calls = Vec::new();
        for item in items {
            match item {
                StreamItem::Content(c) => content.push_str(c),
                StreamItem::ToolCall(c) => calls.push((c.name.clone(), c.arguments.clone())),
            }
        }
        (content, calls)
    }

    #[test]
    fn detects_formats_from_templates() {
        assert_eq!(
            ToolFormat::detect("{{ '<tool_call>' }}"),
            ToolFormat::Hermes
        );
        assert_eq!(ToolFormat::detect("[AVAILABLE_TOOLS]"), ToolFormat::Mistral);
        assert_eq!(
            ToolFormat::detect("<|start_header_id|>{% if tools %}"),
            ToolFormat::Llama3Json
        );
        assert_eq!(ToolFormat::detect("<|start_header_id|>"), ToolFormat::None);
        assert_eq!(ToolFormat::detect("<start_of_turn>"), ToolFormat::Gemma);
        assert_eq!(ToolFormat::detect("<|im_start|>"), ToolFormat::None);
    }

    #[test]
    fn hermes_several_calls_and_content() {
        let text = "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"c\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"tz\": \"CET\", \"a\": [1, 2.5]}}\n</tool_call>";
        let p = parse(ToolFormat::Hermes, text);
        assert_eq!(p.content, "Let me check.");
        assert_eq!(
            calls(&p),
            [
                ("get_weather", r#"{"city":"Paris","unit":"c"}"#),
                ("get_time", r#"{"tz":"CET","a":[1,2.5]}"#)
            ]
        );
        assert!(p.tool_calls[0].id.starts_with("call_") && p.tool_calls[0].id.len() == 29);
        assert_ne!(p.tool_calls[0].id, p.tool_calls[1].id);
        for n in [1, 2, 3, 7, 1000] {
            let (content, c) = joined(&stream(ToolFormat::Hermes, text, n));
            // The same text whatever the piece size: trailing whitespace before a call
            // is held, then dropped.
            assert_eq!(content, "Let me check.", "chunk {n}");
            assert_eq!(c.len(), 2, "chunk {n}");
        }
    }

    #[test]
    fn hermes_stream_releases_content_before_the_marker() {
        let mut p = StreamParser::new(ToolFormat::Hermes);
        assert_eq!(p.push("Hello <tool"), [StreamItem::Content("Hello".into())]);
        assert_eq!(p.push("_call>{\"name\": \"f\", "), []);
        let items = p.push("\"arguments\": {}}</tool_call> after <");
        assert!(
            matches!(&items[..], [StreamItem::ToolCall(c), StreamItem::Content(after)]
                if c.name == "f" && c.arguments == "{}" && after == " after")
        );
        assert_eq!(p.finish(), [StreamItem::Content(" <".into())]);
        // A `<` that turns out not to be a marker is released as soon as it is known.
        let mut p = StreamParser::new(ToolFormat::Hermes);
        assert_eq!(p.push("a <"), [StreamItem::Content("a".into())]);
        assert_eq!(p.push("b"), [StreamItem::Content(" <b".into())]);
    }

    #[test]
    fn hermes_malformed_calls_stay_content() {
        for text in [
            "<tool_call>{\"name\": \"f\", \"arguments\": {</tool_call>",
            "<tool_call>{\"arguments\": {}}</tool_call>",
            "<tool_call>{\"name\": \"f\", \"arguments\": 3}</tool_call>",
            "x <tool_call>{\"name\": \"f\"",
        ] {
            let p = parse(ToolFormat::Hermes, text);
            assert_eq!(p.content, text);
            assert!(p.tool_calls.is_empty());
            let (content, c) = joined(&stream(ToolFormat::Hermes, text, 3));
            assert_eq!(content, text);
            assert!(c.is_empty());
        }
        // A string holding JSON is accepted as arguments.
        let p = parse(
            ToolFormat::Hermes,
            r#"<tool_call>{"name": "f", "arguments": "{\"b\": 1, \"a\": 2}"}</tool_call>"#,
        );
        assert_eq!(calls(&p), [("f", r#"{"b":1,"a":2}"#)]);
    }

    #[test]
    fn llama3_json_calls() {
        let p = parse(
            ToolFormat::Llama3Json,
            "{\"name\": \"get_weather\", \"parameters\": {\"location\": \"Oslo\", \"days\": 2}}",
        );
        assert_eq!(p.content, "");
        assert_eq!(
            calls(&p),
            [("get_weather", r#"{"location":"Oslo","days":2}"#)]
        );
        let p = parse(
            ToolFormat::Llama3Json,
            "<|python_tag|>{\"name\": \"a\", \"parameters\": {}}; {\"name\": \"b\", \"parameters\": {\"x\": null}}",
        );
        assert_eq!(calls(&p), [("a", "{}"), ("b", r#"{"x":null}"#)]);
        let p = parse(ToolFormat::Llama3Json, "The answer is 4.");
        assert_eq!(p.content, "The answer is 4.");
        assert!(p.tool_calls.is_empty());
        // JSON that is not a call is content, in full.
        let text = "{\"answer\": 4}";
        assert_eq!(parse(ToolFormat::Llama3Json, text).content, text);
        let (content, c) = joined(&stream(ToolFormat::Llama3Json, text, 2));
        assert_eq!((content.as_str(), c.len()), (text, 0));
        // Text, then a python_tag call.
        let (content, c) = joined(&stream(
            ToolFormat::Llama3Json,
            "Checking.<|python_tag|>{\"name\": \"a\", \"parameters\": {\"q\": 1}}",
            4,
        ));
        assert_eq!(content, "Checking.");
        assert_eq!(c, [("a".to_string(), r#"{"q":1}"#.to_string())]);
        // Builtin python calls are not JSON: content.
        let text = "<|python_tag|>brave_search.call(query=\"x\")";
        assert_eq!(parse(ToolFormat::Llama3Json, text).content, text);
    }

    #[test]
    fn mistral_v3_and_v11() {
        let p = parse(
            ToolFormat::Mistral,
            "[TOOL_CALLS] [{\"name\": \"f\", \"arguments\": {\"z\": 1, \"a\": \"é\"}}, {\"name\": \"g\", \"arguments\": {}}]",
        );
        assert_eq!(calls(&p), [("f", r#"{"z":1,"a":"é"}"#), ("g", "{}")]);
        let p = parse(
            ToolFormat::Mistral,
            "Sure.[TOOL_CALLS]f[ARGS]{\"q\": \"x\"}[TOOL_CALLS]g[CALL_ID]abc123XYZ[ARGS]{}",
        );
        assert_eq!(p.content, "Sure.");
        assert_eq!(calls(&p), [("f", r#"{"q":"x"}"#), ("g", "{}")]);
        for bad in [
            "[TOOL_CALLS][{\"name\": \"f\", \"arguments\": {}}] trailing",
            "[TOOL_CALLS]f[ARGS]{\"q\": ",
            "[TOOL_CALLS]not a call",
        ] {
            let p = parse(ToolFormat::Mistral, bad);
            assert_eq!((p.content.as_str(), p.tool_calls.len()), (bad, 0));
        }
        let (content, c) = joined(&stream(
            ToolFormat::Mistral,
            "ok [TOOL_CALLS][{\"name\": \"f\", \"arguments\": {\"a\": [1, {\"b\": true}]}}]",
            5,
        ));
        assert_eq!(content, "ok");
        assert_eq!(
            c,
            [("f".to_string(), r#"{"a":[1,{"b":true}]}"#.to_string())]
        );
    }

    #[test]
    fn gemma_tool_code_and_json_blocks() {
        let text = "I'll look it up.\n```tool_code\nget_weather(city=\"Paris\", days=3, metric=True, hours=[1, 2.5], opts={'x': None})\n```\n";
        let p = parse(ToolFormat::Gemma, text);
        assert_eq!(p.content, "I'll look it up.");
        assert_eq!(
            calls(&p),
            [(
                "get_weather",
                r#"{"city":"Paris","days":3,"metric":true,"hours":[1,2.5],"opts":{"x":null}}"#
            )]
        );
        let (content, c) = joined(&stream(ToolFormat::Gemma, text, 3));
        assert_eq!(content.trim_end(), "I'll look it up.");
        assert_eq!(c.len(), 1);
        let p = parse(
            ToolFormat::Gemma,
            "```json\n{\"name\": \"f\", \"parameters\": {\"a\": 1}}\n```",
        );
        assert_eq!(calls(&p), [("f", r#"{"a":1}"#)]);
        // Other code blocks, other JSON and positional arguments are content.
        for text in [
            "```python\nprint(1)\n```",
            "```json\n{\"name\": \"Bob\", \"age\": 3}\n```",
            "```tool_code\nf(1, 2)\n```",
            "```tool_code\nf(x=1)",
        ] {
            let p = parse(ToolFormat::Gemma, text);
            assert_eq!((p.content.as_str(), p.tool_calls.len()), (text, 0));
            let (content, c) = joined(&stream(ToolFormat::Gemma, text, 2));
            assert_eq!((content.as_str(), c.len()), (text, 0));
        }
    }

    #[test]
    fn no_format_is_all_content() {
        let text = "<tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call>";
        let p = parse(ToolFormat::None, text);
        assert_eq!((p.content.as_str(), p.tool_calls.len()), (text, 0));
    }

    #[test]
    fn forced_schema_and_parse() {
        let tools = r#"[
            {"type": "function", "function": {"name": "a", "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}}},
            {"type": "function", "function": {"name": "b"}}
        ]"#;
        let all: serde_json::Value =
            serde_json::from_str(&forced_call_schema(tools, None).unwrap()).unwrap();
        let branches = all["anyOf"].as_array().unwrap();
        assert_eq!(branches.len(), 2);
        assert_eq!(branches[0]["properties"]["name"]["const"], "a");
        assert_eq!(branches[0]["properties"]["arguments"]["required"][0], "x");
        assert_eq!(
            branches[1]["properties"]["arguments"],
            serde_json::json!({"type": "object"})
        );
        let one: serde_json::Value =
            serde_json::from_str(&forced_call_schema(tools, Some("b")).unwrap()).unwrap();
        assert_eq!(one["properties"]["name"]["const"], "b");
        assert_eq!(one["required"], serde_json::json!(["name", "arguments"]));
        assert_eq!(forced_call_schema(tools, Some("c")), None);
        assert_eq!(forced_call_schema("{}", None), None);

        let call = parse_forced(" {\"name\": \"a\", \"arguments\": {\"x\": 3, \"w\": [\"é\"]}}\n")
            .unwrap();
        assert_eq!(
            (call.name.as_str(), call.arguments.as_str()),
            ("a", r#"{"x":3,"w":["é"]}"#)
        );
        let call = parse_forced("{\"arguments\": {}, \"name\": \"b\"}").unwrap();
        assert_eq!((call.name.as_str(), call.arguments.as_str()), ("b", "{}"));
        assert!(parse_forced("{\"name\": \"a\", \"arguments\": [").is_none());
        assert!(parse_forced("{\"arguments\": {}}").is_none());
    }

    /// The schema embeds each tool's parameters as the client wrote them: declared
    /// property order (not alphabetical), `name` before `arguments`, and a name that
    /// needs escaping escaped.
    #[test]
    fn forced_schema_keeps_declared_order() {
        let tools = r#"[{"type": "function", "function": {"name": "add\"person",
            "parameters": {"type": "object", "properties": {"name": {"type": "string"},
            "age": {"type": "integer"}, "city": {"type": "string"}},
            "required": ["name", "age", "city"]}}}]"#;
        let schema = forced_call_schema(tools, None).unwrap();
        let at = |needle: &str| {
            schema
                .find(needle)
                .unwrap_or_else(|| panic!("{needle} in {schema}"))
        };
        assert!(at(r#""name": {"const""#) < at(r#""arguments""#), "{schema}");
        assert!(at(r#""name": {"type""#) < at(r#""age""#), "{schema}");
        assert!(at(r#""age""#) < at(r#""city""#), "{schema}");
        let v: serde_json::Value = serde_json::from_str(&schema).unwrap();
        assert_eq!(v["properties"]["name"]["const"], "add\"person");
        // A bare {name, parameters} tool is read too.
        let bare = forced_call_schema(r#"[{"name": "f", "parameters": {"type": "object"}}]"#, None);
        assert!(bare.unwrap().contains(r#""const": "f""#));
    }
}
