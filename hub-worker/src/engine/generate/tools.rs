//! STAND-IN (branch `genapi` only): the minimal surface of the `templates` branch's
//! tool-call parsing, so the HTTP layer compiles before that branch lands. Drop this file
//! at merge and take the `templates` branch's version. Only Hermes (`<tool_call>{json}
//! </tool_call>`) is parsed here.

use serde_json::{json, Value};

/// How a model writes tool calls, detected from its template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolFormat {
    Hermes,
    Llama3Json,
    Mistral,
    Gemma,
    None,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
}

fn call_from(v: &Value, n: usize) -> Option<ToolCall> {
    let name = v.get("name")?.as_str()?.to_string();
    let arguments = match v.get("arguments") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => "{}".to_string(),
    };
    Some(ToolCall {
        id: format!("call_{n}"),
        name,
        arguments,
    })
}

pub fn parse(format: ToolFormat, text: &str) -> Parsed {
    let mut content = String::new();
    let mut tool_calls = Vec::new();
    if format != ToolFormat::Hermes {
        return Parsed {
            content: text.to_string(),
            tool_calls,
        };
    }
    let mut rest = text;
    while let Some(start) = rest.find("<tool_call>") {
        content.push_str(&rest[..start]);
        let after = &rest[start + "<tool_call>".len()..];
        let Some(end) = after.find("</tool_call>") else {
            content.push_str(&rest[start..]);
            rest = "";
            break;
        };
        match serde_json::from_str::<Value>(after[..end].trim())
            .ok()
            .and_then(|v| call_from(&v, tool_calls.len()))
        {
            Some(c) => tool_calls.push(c),
            None => content.push_str(&rest[start..start + "<tool_call>".len() + end + 12]),
        }
        rest = &after[end + "</tool_call>".len()..];
    }
    content.push_str(rest);
    Parsed {
        content,
        tool_calls,
    }
}

pub enum StreamItem {
    Content(String),
    ToolCall(ToolCall),
}

pub struct StreamParser {
    format: ToolFormat,
    buf: String,
}

impl StreamParser {
    pub fn new(format: ToolFormat) -> Self {
        StreamParser {
            format,
            buf: String::new(),
        }
    }

    pub fn push(&mut self, text: &str) -> Vec<StreamItem> {
        if self.format != ToolFormat::Hermes {
            return if text.is_empty() {
                vec![]
            } else {
                vec![StreamItem::Content(text.to_string())]
            };
        }
        self.buf.push_str(text);
        if self.buf.contains("<tool_call>") || "<tool_call>".starts_with(self.buf.trim_start()) {
            return vec![];
        }
        vec![StreamItem::Content(std::mem::take(&mut self.buf))]
    }

    pub fn finish(&mut self) -> Vec<StreamItem> {
        let p = parse(self.format, &std::mem::take(&mut self.buf));
        let mut out = Vec::new();
        if !p.content.is_empty() {
            out.push(StreamItem::Content(p.content));
        }
        out.extend(p.tool_calls.into_iter().map(StreamItem::ToolCall));
        out
    }
}

pub fn forced_call_schema(tools_json: &Value, only: Option<&str>) -> Value {
    let any_of: Vec<Value> = tools_json
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| {
            let f = t.get("function")?;
            let name = f.get("name")?.as_str()?;
            if only.is_some_and(|o| o != name) {
                return None;
            }
            let params = f.get("parameters").cloned().unwrap_or(json!({"type": "object"}));
            Some(json!({
                "type": "object",
                "properties": {"name": {"const": name}, "arguments": params},
                "required": ["name", "arguments"],
            }))
        })
        .collect();
    json!({"anyOf": any_of})
}
