//! Chat templates rendered the way Python `transformers` renders them.
//!
//! `apply_chat_template(tokenize=False)` compiles the template in a Jinja2
//! `ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)` with the
//! `loopcontrols` extension, its own `tojson` (`json.dumps(x, ensure_ascii=False, ...)`,
//! no HTML escaping), `raise_exception`, `strftime_now` and a `{% generation %}` block
//! tag, and renders it with `messages`, `tools`, `documents`, `add_generation_prompt`,
//! the tokenizer's special tokens and the caller's extra kwargs. [`ChatTemplate`] does the
//! same on minijinja:
//!
//! * whitespace: `trim_blocks` + `lstrip_blocks`, trailing newline dropped (Jinja2's
//!   default);
//! * Python string/dict methods (`.strip()`, `.startswith()`, `.items()`, `.split()`,
//!   ...) through `minijinja_contrib::pycompat`;
//! * printing like Python's `str()`: `None`, `True`, `False`, floats as `repr`, lists and
//!   dicts in Python syntax (a template printing a bool or a missing value renders what
//!   transformers renders);
//! * `tojson` writes what `json.dumps` writes: separators `", "`/`": "` (`","` with
//!   `indent`), non-ASCII kept, `indent`, `separators`, `sort_keys`, `ensure_ascii`;
//! * the request's JSON is turned into template values **keeping its key order** (a tool's
//!   parameter schema is printed in the order the client wrote it), without serde_json's
//!   `preserve_order` feature: the JSON text is deserialized straight into ordered
//!   minijinja maps;
//! * the messages are normalized as `apply_chat_template` does: keys whose value is `null`
//!   are dropped, and a message's reasoning (`reasoning_content`, `thinking` or
//!   `reasoning`) is given under both `thinking` and `reasoning_content`.

use super::tools::ToolFormat;
use crate::engine::error::EngineError;
use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Kwargs, ValueKind};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, State, Value};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use std::fmt::Write as _;

const TEMPLATE_NAME: &str = "chat_template";

/// Largest chat template accepted (the repo's bytes: tenant input). Real templates are
/// a few KiB; the largest known ones are under 64 KiB.
pub const MAX_TEMPLATE_BYTES: usize = 1 << 20;

/// Instructions one render may execute. A chat template is tenant code run on every
/// chat request: a loop that never ends (or runs 10^8 times) is stopped here instead of
/// holding a blocking thread. Llama 3.1's template with 100 messages and 20 tools runs
/// well under a hundredth of this.
pub const TEMPLATE_FUEL: u64 = 5_000_000;

/// Widest padding a template may ask for (`center`, `tojson(indent=..)`): fuel counts
/// instructions, not bytes, so one `"a".center(4000000000)` would allocate gigabytes in
/// a single step. Python has no such limit; no real template comes near it.
pub const MAX_TEMPLATE_PAD: usize = 1 << 16;

/// Deepest nesting `tojson` and Python-style printing walk: a template can nest a list
/// a hundred thousand deep in a loop, and the walk is recursive (the JSON a request
/// carries is far shallower: serde_json stops at 128).
pub const MAX_TEMPLATE_DEPTH: usize = 512;

fn too_wide(what: &str, width: usize) -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        format!("{what}: {width} is wider than the {MAX_TEMPLATE_PAD} allowed"),
    )
}

fn too_deep(what: &str) -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        format!("{what}: the value is nested deeper than {MAX_TEMPLATE_DEPTH} levels"),
    )
}

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    /// What `env` was compiled from: a helper process compiles it again (`sandbox`).
    source: String,
    bos_token: Option<String>,
    eos_token: Option<String>,
    tool_format: ToolFormat,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("tool_format", &self.tool_format)
            .finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// Compiles `source`. A syntax error is [`EngineError::Template`].
    pub fn new(
        source: &str,
        bos_token: Option<&str>,
        eos_token: Option<&str>,
    ) -> Result<ChatTemplate, EngineError> {
        if source.len() > MAX_TEMPLATE_BYTES {
            return Err(EngineError::Template(format!(
                "the chat template is {} bytes; at most {MAX_TEMPLATE_BYTES} are accepted",
                source.len()
            )));
        }
        let mut env = Environment::new();
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.set_syntax(
            SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .keep_trailing_newline(false)
                .build()
                .map_err(|e| EngineError::Template(e.to_string()))?,
        );
        env.set_auto_escape_callback(|_| AutoEscape::None);
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(python_methods);
        env.set_formatter(python_formatter);
        env.add_filter("tojson", tojson);
        env.add_filter("truncate", truncate);
        env.add_filter("wordcount", wordcount);
        env.add_filter("center", center);
        // Jinja2: anything with a length and indexing (strings and dicts too).
        env.add_test("sequence", |v: &Value| {
            matches!(
                v.kind(),
                ValueKind::Seq | ValueKind::String | ValueKind::Map | ValueKind::Bytes
            )
        });
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", |format: &str| strftime_now(format));
        env.add_template_owned(TEMPLATE_NAME, strip_generation_tags(source))
            .map_err(|e| EngineError::Template(error_message(&e)))?;
        Ok(ChatTemplate {
            env,
            source: source.to_owned(),
            bos_token: bos_token.map(str::to_owned),
            eos_token: eos_token.map(str::to_owned),
            tool_format: ToolFormat::detect(source),
        })
    }

    /// Renders a conversation. `messages`: the request's JSON array of messages; `tools`:
    /// its JSON array of tools, if any; `extra`: a JSON object of additional template
    /// variables (`chat_template_kwargs`), which override `bos_token`/`eos_token` as in
    /// transformers.
    ///
    /// The render runs in a helper process when this process has one (see
    /// [`sandbox`](super::sandbox): a template can build a value nested deeply enough to
    /// overflow any stack), else here.
    pub fn render(
        &self,
        messages: &str,
        tools: Option<&str>,
        add_generation_prompt: bool,
        extra: Option<&str>,
    ) -> Result<String, EngineError> {
        use std::borrow::Cow::Borrowed;
        let job = super::sandbox::Job {
            source: Borrowed(&self.source),
            bos: self.bos_token.as_deref().map(Borrowed),
            eos: self.eos_token.as_deref().map(Borrowed),
            messages: Borrowed(messages),
            tools: tools.map(Borrowed),
            add_generation_prompt,
            extra: extra.map(Borrowed),
        };
        match super::sandbox::render(&job) {
            Some(rendered) => rendered,
            None => self.render_here(messages, tools, add_generation_prompt, extra),
        }
    }

    /// [`render`](Self::render) in this process. A template that builds a value nested
    /// tens of thousands of levels deep overflows this thread's stack and aborts the
    /// process: only a helper process, or a process that may die, calls this.
    pub fn render_here(
        &self,
        messages: &str,
        tools: Option<&str>,
        add_generation_prompt: bool,
        extra: Option<&str>,
    ) -> Result<String, EngineError> {
        let messages = parse_json(messages).map_err(|e| bad_input("messages", e))?;
        let messages = normalize_messages(&messages)?;
        let tools = match tools {
            Some(t) => parse_json(t).map_err(|e| bad_input("tools", e))?,
            None => Value::from(()),
        };
        let mut ctx: Vec<(String, Value)> = vec![
            ("messages".into(), messages),
            ("tools".into(), tools),
            ("documents".into(), Value::from(())),
            (
                "add_generation_prompt".into(),
                Value::from(add_generation_prompt),
            ),
        ];
        if let Some(bos) = &self.bos_token {
            ctx.push(("bos_token".into(), Value::from(bos.as_str())));
        }
        if let Some(eos) = &self.eos_token {
            ctx.push(("eos_token".into(), Value::from(eos.as_str())));
        }
        if let Some(extra) = extra {
            let extra = parse_json(extra).map_err(|e| bad_input("chat_template_kwargs", e))?;
            if extra.kind() != ValueKind::Map {
                return Err(EngineError::Template(
                    "chat_template_kwargs must be a JSON object".into(),
                ));
            }
            for key in extra
                .try_iter()
                .map_err(|e| EngineError::Template(e.to_string()))?
            {
                let name = key.as_str().unwrap_or_default().to_owned();
                if matches!(
                    name.as_str(),
                    "messages" | "tools" | "documents" | "add_generation_prompt"
                ) {
                    return Err(EngineError::Template(format!(
                        "chat_template_kwargs may not set {name:?}: it is given by the request itself"
                    )));
                }
                let value = extra.get_item(&key).unwrap_or_default();
                match ctx.iter_mut().find(|(k, _)| *k == name) {
                    Some(slot) => slot.1 = value,
                    None => ctx.push((name, value)),
                }
            }
        }
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| EngineError::Template(error_message(&e)))?;
        template
            .render(Value::from_pairs(ctx))
            .map_err(|e| EngineError::Template(error_message(&e)))
    }

    /// How this template's model writes tool calls (detected from the template text).
    pub fn tool_format(&self) -> ToolFormat {
        self.tool_format
    }
}

/// The chat templates a repo declares, and the special-token strings they use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepoTemplates {
    /// The template for a conversation.
    pub default: Option<String>,
    /// The template for a conversation with tools, when the repo names one `tool_use`.
    pub tool_use: Option<String>,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
}

/// Reads a repo's chat templates the way `transformers` resolves them, for every engine:
///
/// * `chat_template.jinja` (not empty) is the template;
/// * else `tokenizer_config.json`'s `chat_template`: a string is the template; a list of
///   `{name, template}` is a set of named templates, of which `default` is the template
///   and `tool_use` the one for requests with tools. A list without `default` has no
///   template for a request without tools (transformers raises "multiple chat templates
///   with no default"; here such a request answers `no_chat_template`): no entry is
///   picked by position.
/// * `bos_token` / `eos_token`: a string or `{"content": ..}` in `tokenizer_config`.
///
/// `tokenizer_config` is the parsed `tokenizer_config.json` (`Null` when absent). A
/// `chat_template.jinja` that exists but cannot be read fails the load.
pub fn repo_templates(
    dir: &std::path::Path,
    tokenizer_config: &serde_json::Value,
) -> Result<RepoTemplates, crate::engine::error::LoadError> {
    use serde_json::Value as Json;
    let path = dir.join("chat_template.jinja");
    let jinja = match std::fs::read_to_string(&path) {
        Ok(s) => Some(s).filter(|t| !t.trim().is_empty()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => return Err(crate::engine::error::LoadError::Io { path, source }),
    };
    let (default, tool_use) = match tokenizer_config.get("chat_template") {
        Some(Json::String(s)) => (Some(s.clone()), None),
        Some(Json::Array(list)) => {
            let named = |name: &str| {
                list.iter().find_map(|t| {
                    (t.get("name")?.as_str()? == name)
                        .then(|| t.get("template")?.as_str().map(str::to_string))
                        .flatten()
                })
            };
            (named("default"), named("tool_use"))
        }
        _ => (None, None),
    };
    Ok(RepoTemplates {
        // A chat_template.jinja replaces the config's templates, the named ones too.
        tool_use: if jinja.is_some() { None } else { tool_use },
        default: jinja.or(default),
        bos_token: special_token(tokenizer_config, "bos_token"),
        eos_token: special_token(tokenizer_config, "eos_token"),
    })
}

/// A special token's text in tokenizer_config.json: a string or `{"content": ..}`.
pub fn special_token(tokenizer_config: &serde_json::Value, key: &str) -> Option<String> {
    match tokenizer_config.get(key)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

/// Python methods on template values: pycompat's, with `str.title()` as Python has it.
fn python_methods(
    state: &mut State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, Error> {
    if let Some(s) = value.as_str() {
        match (method, args) {
            ("title", []) => return Ok(Value::from(py_title(s))),
            ("rsplit", _) if args.len() <= 2 => {
                let sep = args.first().filter(|v| !v.is_none());
                let sep = match sep {
                    Some(v) => Some(v.as_str().ok_or_else(|| {
                        Error::new(ErrorKind::InvalidOperation, "rsplit: sep must be a string")
                    })?),
                    None => None,
                };
                let maxsplit = match args.get(1) {
                    Some(v) => v.as_i64().ok_or_else(|| {
                        Error::new(
                            ErrorKind::InvalidOperation,
                            "rsplit: maxsplit must be an int",
                        )
                    })?,
                    None => -1,
                };
                return Ok(Value::from(py_rsplit(s, sep, maxsplit)?));
            }
            ("center", [width]) => {
                let width = width.as_usize().unwrap_or(0);
                return Ok(Value::from(py_center(s, width)?));
            }
            _ => {}
        }
    }
    minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
}

/// `str.rsplit(sep, maxsplit)`.
fn py_rsplit(s: &str, sep: Option<&str>, maxsplit: i64) -> Result<Vec<String>, Error> {
    let limit = usize::try_from(maxsplit).ok();
    let mut parts: Vec<String> = match sep {
        Some("") => return Err(Error::new(ErrorKind::InvalidOperation, "empty separator")),
        Some(sep) => match limit {
            Some(n) => s.rsplitn(n + 1, sep).map(str::to_owned).collect(),
            None => s.rsplit(sep).map(str::to_owned).collect(),
        },
        None => {
            // Runs of whitespace separate; leading/trailing whitespace yields no empty
            // parts; once `maxsplit` splits are made, the rest (left-trimmed of nothing but
            // its trailing run) is kept whole.
            let mut parts = Vec::new();
            let mut rest = s.trim_end();
            while !rest.is_empty() {
                if limit.is_some_and(|n| parts.len() == n) {
                    parts.push(rest.to_owned());
                    break;
                }
                match rest.rfind(char::is_whitespace) {
                    Some(at) => {
                        let ws_len = rest[at..].chars().next().map_or(1, char::len_utf8);
                        parts.push(rest[at + ws_len..].to_owned());
                        rest = rest[..at].trim_end();
                    }
                    None => {
                        parts.push(rest.to_owned());
                        break;
                    }
                }
            }
            parts
        }
    };
    parts.reverse();
    Ok(parts)
}

/// `str.center(width)`.
fn py_center(s: &str, width: usize) -> Result<String, Error> {
    let len = s.chars().count();
    if len >= width {
        return Ok(s.to_owned());
    }
    if width > MAX_TEMPLATE_PAD {
        return Err(too_wide("center", width));
    }
    let pad = width - len;
    let left = pad / 2 + (pad & width & 1);
    Ok(format!("{}{s}{}", " ".repeat(left), " ".repeat(pad - left)))
}

/// Jinja2's `truncate(s, length=255, killwords=False, end='...', leeway=5)`: the first three
/// positional or keyword, `leeway` keyword only (minijinja-contrib's takes keywords only).
fn truncate(
    value: &Value,
    length: Option<usize>,
    killwords: Option<bool>,
    end: Option<String>,
    kwargs: Kwargs,
) -> Result<Value, Error> {
    let length = match length {
        Some(l) => l,
        None => kwargs.get::<Option<usize>>("length")?.unwrap_or(255),
    };
    let killwords = match killwords {
        Some(k) => k,
        None => kwargs.get::<Option<bool>>("killwords")?.unwrap_or(false),
    };
    let end = match end {
        Some(e) => e,
        None => kwargs
            .get::<Option<String>>("end")?
            .unwrap_or_else(|| "...".into()),
    };
    let leeway = kwargs.get::<Option<usize>>("leeway")?.unwrap_or(5);
    kwargs.assert_all_used()?;
    let s = py_str(value);
    let end_len = end.chars().count();
    if length < end_len {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("truncate: length {length} is shorter than the end marker"),
        ));
    }
    if s.chars().count() <= length.saturating_add(leeway) {
        return Ok(Value::from(s));
    }
    let head: String = s.chars().take(length - end_len).collect();
    let head = if killwords {
        head.as_str()
    } else {
        head.rsplit_once(' ').map_or(head.as_str(), |(a, _)| a)
    };
    Ok(Value::from(format!("{head}{end}")))
}

/// Jinja2's `wordcount`: runs of word characters (`\w+`).
fn wordcount(value: &Value) -> usize {
    let s = py_str(value);
    let mut count = 0;
    let mut in_word = false;
    for c in s.chars() {
        let word = c.is_alphanumeric() || c == '_';
        if word && !in_word {
            count += 1;
        }
        in_word = word;
    }
    count
}

/// Jinja2's `center(width=80)`.
fn center(value: &Value, width: Option<usize>) -> Result<String, Error> {
    py_center(&py_str(value), width.unwrap_or(80))
}

/// `str.title()`: a cased character after an uncased one starts a word (`"what's"` →
/// `"What'S"`, `"<b>"` → `"<B>"`).
fn py_title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev_cased = false;
    for c in s.chars() {
        if prev_cased {
            out.extend(c.to_lowercase());
        } else {
            out.extend(c.to_uppercase());
        }
        prev_cased = c.is_lowercase() || c.is_uppercase();
    }
    out
}

fn bad_input(what: &str, e: serde_json::Error) -> EngineError {
    EngineError::Template(format!("{what} is not valid JSON: {e}"))
}

/// `apply_chat_template`'s normalization: drop `null` keys of each message, alias the
/// reasoning fields.
fn normalize_messages(messages: &Value) -> Result<Value, EngineError> {
    if messages.kind() != ValueKind::Seq {
        return Err(EngineError::Template(
            "messages must be a JSON array".into(),
        ));
    }
    let mut out = Vec::new();
    for message in messages
        .try_iter()
        .map_err(|e| EngineError::Template(e.to_string()))?
    {
        if message.kind() != ValueKind::Map {
            return Err(EngineError::Template(format!(
                "each message must be a JSON object, got {message}"
            )));
        }
        let mut pairs: Vec<(Value, Value)> = Vec::new();
        let keys: Vec<Value> = message.try_iter().map(|i| i.collect()).unwrap_or_default();
        for key in keys {
            let value = message.get_item(&key).unwrap_or_default();
            if !value.is_none() {
                pairs.push((key, value));
            }
        }
        let get = |pairs: &[(Value, Value)], name: &str| {
            pairs
                .iter()
                .find(|(k, _)| k.as_str() == Some(name))
                .map(|(_, v)| v.clone())
        };
        let reasoning = ["reasoning_content", "thinking", "reasoning"]
            .iter()
            .find_map(|name| get(&pairs, name));
        let pairs = match reasoning {
            Some(r) => {
                let mut aliased: Vec<(Value, Value)> = vec![(Value::from("thinking"), r.clone())];
                for (k, v) in pairs
                    .into_iter()
                    .chain([(Value::from("reasoning_content"), r)])
                {
                    match aliased.iter_mut().find(|(ak, _)| *ak == k) {
                        Some(slot) => slot.1 = v,
                        None => aliased.push((k, v)),
                    }
                }
                aliased
            }
            None => pairs,
        };
        out.push(Value::from_pairs(pairs));
    }
    Ok(Value::from(out))
}

/// The message of a failed compile or render: `raise_exception`'s own text as is, any
/// other error with its location.
fn error_message(e: &Error) -> String {
    if e.kind() == ErrorKind::OutOfFuel {
        return format!(
            "the chat template ran too long (over {TEMPLATE_FUEL} steps for one render)"
        );
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(raised) = err.downcast_ref::<Raised>() {
            return raised.0.clone();
        }
        source = err.source();
    }
    e.to_string()
}

#[derive(Debug)]
struct Raised(String);
impl std::fmt::Display for Raised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Raised {}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message.clone()).with_source(Raised(message)))
}

/// `{% generation %}` / `{% endgeneration %}` (transformers' assistant-mask tag) become a
/// block that renders its body unchanged, keeping the tags' whitespace control.
fn strip_generation_tags(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(at) = rest.find("{%") {
        out.push_str(&rest[..at]);
        let tag = &rest[at..];
        // The closing `%}` comes after the opening `{%` (in `{%}` they overlap).
        let Some(end) = tag[2..].find("%}").map(|e| e + 2) else {
            out.push_str(tag);
            return out;
        };
        let inner = &tag[2..end];
        let (open, body) = match inner.strip_prefix(['-', '+']) {
            Some(b) => (&inner[..1], b),
            None => ("", inner),
        };
        let (body, close) = match body.strip_suffix(['-', '+']) {
            Some(b) => (b, &body[b.len()..]),
            None => (body, ""),
        };
        let replacement = match body.trim() {
            "generation" => Some("if true"),
            "endgeneration" => Some("endif"),
            _ => None,
        };
        match replacement {
            Some(r) => {
                let _ = write!(out, "{{%{open} {r} {close}%}}");
            }
            None => out.push_str(&tag[..end + 2]),
        }
        rest = &tag[end + 2..];
    }
    out.push_str(rest);
    out
}

// ---------------------------------------------------------------------------------------
// JSON text -> ordered template values

/// Parses JSON text into a template value whose maps keep the text's key order.
pub(crate) fn parse_json(text: &str) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let v = OrderedJson::deserialize_value(&mut de)?;
    de.end()?;
    Ok(v)
}

/// Parses one JSON value at the start of `text` (leading whitespace allowed); returns it
/// with the number of bytes it took.
pub(crate) fn parse_json_prefix(text: &str) -> Option<(Value, usize)> {
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<OrderedJson>();
    match stream.next() {
        Some(Ok(OrderedJson(v))) => Some((v, stream.byte_offset())),
        _ => None,
    }
}

struct OrderedJson(Value);

impl OrderedJson {
    fn deserialize_value<'de, D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        d.deserialize_any(OrderedVisitor)
    }
}

impl<'de> serde::Deserialize<'de> for OrderedJson {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(OrderedJson(d.deserialize_any(OrderedVisitor)?))
    }
}

struct OrderedVisitor;

impl<'de> Visitor<'de> for OrderedVisitor {
    type Value = Value;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::from(()))
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::from(()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(OrderedJson(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::from(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        // Value::from_pairs collects into an insertion-ordered map (minijinja's
        // `preserve_order`); a repeated key keeps its first position and its last value,
        // as Python's json does.
        let mut pairs: Vec<(String, Value)> = Vec::new();
        while let Some((k, OrderedJson(v))) = map.next_entry::<String, OrderedJson>()? {
            pairs.push((k, v));
        }
        Ok(Value::from_pairs(pairs))
    }
}

// ---------------------------------------------------------------------------------------
// Python-style printing

/// Jinja2 prints with Python's `str()`.
fn python_formatter(
    out: &mut minijinja::Output,
    _: &mut State,
    value: &Value,
) -> Result<(), Error> {
    let text = match value.kind() {
        ValueKind::Undefined => return Ok(()),
        ValueKind::String => {
            return out
                .write_str(value.as_str().unwrap_or_default())
                .map_err(|_| Error::from(ErrorKind::WriteFailure));
        }
        _ => py_str(value),
    };
    out.write_str(&text)
        .map_err(|_| Error::from(ErrorKind::WriteFailure))
}

fn py_str(value: &Value) -> String {
    let mut s = String::new();
    match value.kind() {
        ValueKind::String => s.push_str(value.as_str().unwrap_or_default()),
        _ => py_repr(value, 0, &mut s),
    }
    s
}

/// Python's `repr`; containers nested deeper than [`MAX_TEMPLATE_DEPTH`] print as `...`
/// (as Python prints a container that holds itself).
fn py_repr(value: &Value, depth: usize, out: &mut String) {
    if depth > MAX_TEMPLATE_DEPTH && matches!(value.kind(), ValueKind::Seq | ValueKind::Map) {
        out.push_str("...");
        return;
    }
    match value.kind() {
        ValueKind::Undefined => {}
        ValueKind::None => out.push_str("None"),
        ValueKind::Bool => out.push_str(if value.is_true() { "True" } else { "False" }),
        ValueKind::Number => out.push_str(&py_number(value, false)),
        ValueKind::String => py_repr_str(value.as_str().unwrap_or_default(), out),
        ValueKind::Seq => {
            out.push('[');
            for (i, item) in value.try_iter().into_iter().flatten().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                py_repr(&item, depth + 1, out);
            }
            out.push(']');
        }
        ValueKind::Map => {
            out.push('{');
            for (i, key) in value.try_iter().into_iter().flatten().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                py_repr(&key, depth + 1, out);
                out.push_str(": ");
                py_repr(&value.get_item(&key).unwrap_or_default(), depth + 1, out);
            }
            out.push('}');
        }
        _ => {
            let _ = write!(out, "{value}");
        }
    }
}

/// Python's `repr()` of a string.
fn py_repr_str(s: &str, out: &mut String) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

/// A number as Python prints it (`repr` of an int or a float); `json`: `json.dumps`'s
/// spelling of non-finite floats.
fn py_number(value: &Value, json: bool) -> String {
    if value.is_integer() {
        return value.to_string();
    }
    match f64::try_from(value.clone()) {
        Ok(f) => py_float(f, json),
        Err(_) => value.to_string(),
    }
}

/// Python's `repr(float)`: shortest round-trip digits, exponent form below 1e-4 and from
/// 1e16 (`1e-05`, `1e+16`), always a `.0` on integral values.
pub(crate) fn py_float(f: f64, json: bool) -> String {
    if f.is_nan() {
        return if json { "NaN" } else { "nan" }.into();
    }
    if f.is_infinite() {
        let s = if json { "Infinity" } else { "inf" };
        return if f < 0.0 { format!("-{s}") } else { s.into() };
    }
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..16).contains(&exp) {
        let s = format!("{f}");
        if s.contains('.') {
            s
        } else {
            format!("{s}.0")
        }
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    }
}

// ---------------------------------------------------------------------------------------
// tojson = json.dumps

pub(crate) struct JsonStyle {
    pub indent: Option<String>,
    pub item_sep: String,
    pub key_sep: String,
    pub sort_keys: bool,
    pub ensure_ascii: bool,
}

impl JsonStyle {
    /// `json.dumps(x, separators=(",", ":"))`: one line, no spaces.
    pub(crate) fn compact() -> JsonStyle {
        JsonStyle {
            indent: None,
            item_sep: ",".into(),
            key_sep: ":".into(),
            sort_keys: false,
            ensure_ascii: false,
        }
    }
}

fn tojson(value: &Value, indent: Option<Value>, kwargs: Kwargs) -> Result<Value, Error> {
    let indent = match indent {
        Some(i) => Some(i),
        None => kwargs.get::<Option<Value>>("indent")?,
    };
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) if v.kind() == ValueKind::String => {
            let s = v.as_str().unwrap_or_default();
            if s.len() > MAX_TEMPLATE_PAD {
                return Err(too_wide("tojson: indent", s.len()));
            }
            Some(s.to_owned())
        }
        Some(v) => {
            let n = v.as_i64().ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidOperation,
                    "tojson: indent must be an int or a string",
                )
            })?;
            let n = usize::try_from(n.max(0)).unwrap_or(usize::MAX);
            if n > MAX_TEMPLATE_PAD {
                return Err(too_wide("tojson: indent", n));
            }
            Some(" ".repeat(n))
        }
    };
    let separators: Option<Value> = kwargs.get("separators")?;
    let (item_sep, key_sep) = match separators {
        Some(seps) if !seps.is_none() => {
            let parts: Vec<Value> = seps.try_iter()?.collect();
            match parts.as_slice() {
                [a, b] if a.as_str().is_some() && b.as_str().is_some() => (
                    a.as_str().unwrap_or_default().to_owned(),
                    b.as_str().unwrap_or_default().to_owned(),
                ),
                _ => {
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson: separators must be two strings",
                    ))
                }
            }
        }
        _ => (
            if indent.is_some() { "," } else { ", " }.to_owned(),
            ": ".to_owned(),
        ),
    };
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    kwargs.assert_all_used()?;
    let style = JsonStyle {
        indent,
        item_sep,
        key_sep,
        sort_keys: sort_keys.unwrap_or(false),
        ensure_ascii: ensure_ascii.unwrap_or(false),
    };
    let mut out = String::new();
    write_json(value, &style, 0, &mut out)?;
    Ok(Value::from_safe_string(out))
}

/// Writes `value` as `json.dumps` would with `style`.
pub(crate) fn write_json(
    value: &Value,
    style: &JsonStyle,
    depth: usize,
    out: &mut String,
) -> Result<(), Error> {
    if depth > MAX_TEMPLATE_DEPTH {
        return Err(too_deep("tojson"));
    }
    let newline = |out: &mut String, depth: usize| {
        if let Some(indent) = &style.indent {
            out.push('\n');
            for _ in 0..depth {
                out.push_str(indent);
            }
        }
    };
    match value.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => out.push_str(&py_number(value, true)),
        ValueKind::String => json_str(value.as_str().unwrap_or_default(), style.ensure_ascii, out),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&style.item_sep);
                }
                newline(out, depth + 1);
                write_json(item, style, depth + 1, out)?;
            }
            newline(out, depth);
            out.push(']');
        }
        ValueKind::Map => {
            let mut keys: Vec<Value> = value.try_iter()?.collect();
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            if style.sort_keys {
                keys.sort();
            }
            out.push('{');
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(&style.item_sep);
                }
                newline(out, depth + 1);
                let key_text = match key.kind() {
                    ValueKind::String => key.as_str().unwrap_or_default().to_owned(),
                    ValueKind::None => "null".into(),
                    ValueKind::Bool => if key.is_true() { "true" } else { "false" }.into(),
                    ValueKind::Number => py_number(key, true),
                    _ => {
                        return Err(Error::new(
                            ErrorKind::InvalidOperation,
                            format!(
                                "tojson: keys must be str, int, float, bool or None, not {}",
                                key.kind()
                            ),
                        ))
                    }
                };
                json_str(&key_text, style.ensure_ascii, out);
                out.push_str(&style.key_sep);
                write_json(&value.get_item(key)?, style, depth + 1, out)?;
            }
            newline(out, depth);
            out.push('}');
        }
        kind => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: a value of type {kind} is not JSON serializable"),
            ))
        }
    }
    Ok(())
}

fn json_str(s: &str, ensure_ascii: bool, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if ensure_ascii && (c as u32) > 0x7e => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

// ---------------------------------------------------------------------------------------
// strftime_now

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// `datetime.now().strftime(format)`, in UTC (the worker's clock; transformers uses the
/// local time zone, which is UTC in the worker's container). Supports the C89
/// conversions templates use (`%d %m %Y %y %b %B %a %A %H %I %M %S %p %j %%`) and glibc's
/// `%-d` no-padding flag; anything else is copied as written.
pub(crate) fn strftime_now(format: &str) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    strftime(secs, format)
}

fn strftime(unix_secs: i64, format: &str) -> String {
    let days = unix_secs.div_euclid(86_400);
    let secs = unix_secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let weekday = (days + 4).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    let (hour, minute, second) = (secs / 3600, secs / 60 % 60, secs % 60);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let cumulative = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = cumulative[month as usize - 1] + day + i64::from(leap && month > 2);
    let hour12 = if hour % 12 == 0 { 12 } else { hour % 12 };

    let mut out = String::new();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let unpadded = chars.peek() == Some(&'-');
        if unpadded {
            chars.next();
        }
        let num = |out: &mut String, n: i64, width: usize| {
            if unpadded {
                let _ = write!(out, "{n}");
            } else {
                let _ = write!(out, "{n:0width$}");
            }
        };
        match chars.next() {
            Some('Y') => {
                let _ = write!(out, "{year}");
            }
            Some('y') => num(&mut out, year.rem_euclid(100), 2),
            Some('m') => num(&mut out, month, 2),
            Some('d') => num(&mut out, day, 2),
            Some('e') => {
                let _ = write!(out, "{day:2}");
            }
            Some('H') => num(&mut out, hour, 2),
            Some('I') => num(&mut out, hour12, 2),
            Some('M') => num(&mut out, minute, 2),
            Some('S') => num(&mut out, second, 2),
            Some('j') => num(&mut out, yday, 3),
            Some('p') => out.push_str(if hour < 12 { "AM" } else { "PM" }),
            Some('B') => out.push_str(MONTHS[month as usize - 1]),
            Some('b') | Some('h') => out.push_str(&MONTHS[month as usize - 1][..3]),
            Some('A') => out.push_str(WEEKDAYS[weekday]),
            Some('a') => out.push_str(&WEEKDAYS[weekday][..3]),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                if unpadded {
                    out.push('-');
                }
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The goldens: every fixture template rendered with every fixture conversation must be
/// byte-identical to what Python transformers rendered
/// (`scripts/fixtures/chat-template-goldens.py`), errors included.
#[cfg(test)]
mod golden {
    use super::*;
    use std::path::PathBuf;

    fn root() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    fn fixtures() -> PathBuf {
        root().join("hub-worker/tests/fixtures/chat_templates")
    }

    fn read(path: PathBuf) -> String {
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn json_text(v: &Value) -> String {
        let mut s = String::new();
        write_json(v, &JsonStyle::compact(), 0, &mut s).unwrap();
        s
    }

    #[test]
    fn renders_like_transformers() {
        let templates = parse_json(&read(fixtures().join("templates.json"))).unwrap();
        let cases = parse_json(&read(fixtures().join("conversations.json"))).unwrap();
        let mut failures = Vec::new();
        let mut checked = 0;
        for spec in templates.try_iter().unwrap() {
            let name = spec.get_attr("name").unwrap().to_string();
            let source = read(root().join(spec.get_attr("path").unwrap().as_str().unwrap()));
            let bos = spec.get_attr("bos_token").unwrap();
            let eos = spec.get_attr("eos_token").unwrap();
            let template = ChatTemplate::new(&source, bos.as_str(), eos.as_str())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let expected: serde_json::Value = serde_json::from_str(&read(
                fixtures().join("expected").join(format!("{name}.json")),
            ))
            .unwrap();
            for case in cases.try_iter().unwrap() {
                let case_name = case.get_attr("name").unwrap().to_string();
                let messages = json_text(&case.get_attr("messages").unwrap());
                let tools = case.get_attr("tools").unwrap();
                let tools = (!tools.is_undefined()).then(|| json_text(&tools));
                let mut extra = vec![("date_string".to_string(), Value::from("26 Jul 2024"))];
                if let Ok(given) = case.get_attr("extra") {
                    for key in given.try_iter().into_iter().flatten() {
                        let value = given.get_item(&key).unwrap();
                        let key = key.to_string();
                        match extra.iter_mut().find(|(k, _)| *k == key) {
                            Some(slot) => slot.1 = value,
                            None => extra.push((key, value)),
                        }
                    }
                }
                let extra = json_text(&Value::from_pairs(extra));
                let gen = case.get_attr("add_generation_prompt").unwrap().is_true();
                let got = template.render(&messages, tools.as_deref(), gen, Some(&extra));
                let want = &expected[&case_name];
                checked += 1;
                match (got, want["output"].as_str(), want["error"].as_str()) {
                    (Ok(text), Some(w), _) if text == w => {}
                    (Err(EngineError::Template(m)), _, Some(w))
                        if m == w || want["error_type"] != "TemplateError" => {}
                    (got, w_out, w_err) => {
                        let at = match (&got, w_out) {
                            (Ok(t), Some(w)) => t
                                .char_indices()
                                .zip(w.chars())
                                .find(|((_, a), b)| a != b)
                                .map(|((i, _), _)| i)
                                .unwrap_or(t.len().min(w.len())),
                            _ => 0,
                        };
                        failures.push(format!(
                            "{name}/{case_name}: first difference at byte {at}\n got: {got:?}\nwant: {:?}",
                            w_out.or(w_err)
                        ));
                    }
                }
            }
        }
        assert!(checked >= 50, "only {checked} renders checked");
        assert!(
            failures.is_empty(),
            "{} of {checked} renders differ:\n{}",
            failures.len(),
            failures.join("\n\n")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(source: &str, messages: &str) -> Result<String, EngineError> {
        ChatTemplate::new(source, Some("<s>"), Some("</s>"))?.render(messages, None, false, None)
    }

    #[test]
    fn hostile_templates_are_bounded() {
        // A render that would run 10^8 loop steps stops on fuel, quickly, with a reason.
        let t = ChatTemplate::new(
            "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}",
            None,
            None,
        )
        .unwrap();
        let started = std::time::Instant::now();
        let err = t.render("[]", None, true, None).unwrap_err();
        assert_eq!(
            err,
            EngineError::Template(format!(
                "the chat template ran too long (over {TEMPLATE_FUEL} steps for one render)"
            ))
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        // The same template renders again (fuel is per render).
        assert!(t.render("[]", None, true, None).is_err());

        let huge = "x".repeat(MAX_TEMPLATE_BYTES + 1);
        let err = ChatTemplate::new(&huge, None, None).unwrap_err();
        assert!(
            matches!(&err, EngineError::Template(m) if m.contains("at most 1048576")),
            "{err:?}"
        );
        // Legitimate templates are far inside the budget: the Llama 3.1 golden set renders.

        // Fuel counts steps, not bytes: one step asking for gigabytes of padding, or a
        // walk down a list nested 20000 deep (a stack overflow), is refused instead.
        let fails = |source: &str, needle: &str| {
            let t = ChatTemplate::new(source, None, None).unwrap();
            let err = t.render(r#"[{"role": "user", "content": "hi"}]"#, None, true, None);
            assert!(
                matches!(&err, Err(EngineError::Template(m)) if m.contains(needle)),
                "{source}: {err:?}"
            );
        };
        fails(r#"{{ "a" | center(4000000000) }}"#, "wider than");
        fails(r#"{{ "a".center(4000000000) }}"#, "wider than");
        fails("{{ messages | tojson(indent=2000000000) }}", "wider than");
        let deep = "{% set ns = namespace(x=[]) %}{% for i in range(20000) %}\
                    {% set ns.x = [ns.x] %}{% endfor %}";
        fails(
            &format!("{deep}{{{{ ns.x | tojson }}}}"),
            "nested deeper than 512",
        );
        let t = ChatTemplate::new(&format!("{deep}{{{{ ns.x }}}}"), None, None).unwrap();
        let printed = t.render("[]", None, true, None).unwrap();
        assert!(printed.starts_with("[[[[") && printed.contains("..."));
        // Jinja2's truncate with a length near usize::MAX: no overflow.
        let t = ChatTemplate::new(
            r#"{{ "a b c" | truncate(18446744073709551615) }}"#,
            None,
            None,
        )
        .unwrap();
        assert_eq!(t.render("[]", None, true, None).unwrap(), "a b c");
    }

    #[test]
    fn shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<ChatTemplate>();
    }

    #[test]
    fn shipped_gemma3_template() {
        let source = include_str!("../../../../fixtures/generation/gemma3-chat_template.jinja");
        let t = ChatTemplate::new(source, Some("<bos>"), Some("<eos>")).unwrap();
        assert_eq!(t.tool_format(), ToolFormat::Gemma);
        assert_eq!(
            t.render(
                r#"[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]"#,
                None,
                true,
                None
            )
            .unwrap(),
            "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
        );
    }

    #[test]
    fn tojson_prints_like_json_dumps() {
        let t = ChatTemplate::new("{{ messages[0] | tojson }}", None, None).unwrap();
        let out = t
            .render(
                r#"[{"z": 1, "a": [true, null, 1.5, 1e-7, 2e20], "é": "<b>&'\"\n"}]"#,
                None,
                false,
                None,
            )
            .unwrap();
        assert_eq!(
            out,
            r#"{"z": 1, "a": [true, null, 1.5, 1e-07, 2e+20], "é": "<b>&'\"\n"}"#
        );
        let t = ChatTemplate::new(
            "{{ messages[0] | tojson(indent=2) }}|{{ messages[0] | tojson(sort_keys=true, separators=(',', ':'), ensure_ascii=true) }}",
            None,
            None,
        )
        .unwrap();
        let out = t
            .render(
                r#"[{"b": {"y": [], "x": {}}, "a": "é😀"}]"#,
                None,
                false,
                None,
            )
            .unwrap();
        assert_eq!(
            out,
            "{\n  \"b\": {\n    \"y\": [],\n    \"x\": {}\n  },\n  \"a\": \"é😀\"\n}|{\"a\":\"\\u00e9\\ud83d\\ude00\",\"b\":{\"x\":{},\"y\":[]}}"
        );
    }

    #[test]
    fn prints_like_python_str() {
        let out = render(
            "{{ messages[0].a }} {{ messages[0].b }} {{ messages[0].c }} {{ messages[0].d }} {{ messages[0].missing }}|{{ 1.0 }} {{ 3 }}",
            r#"[{"a": true, "b": false, "c": [1, "it's", {"k": 2.5}], "d": 0.0001}]"#,
        )
        .unwrap();
        assert_eq!(out, r#"True False [1, "it's", {'k': 2.5}] 0.0001 |1.0 3"#);
    }

    #[test]
    fn null_keys_dropped_and_reasoning_aliased() {
        let out = render(
            "{% for m in messages %}{{ m.keys() | list | tojson }}{{ m.thinking }}{% endfor %}",
            r#"[{"role": "assistant", "content": null, "reasoning": "hmm", "tool_calls": []}]"#,
        )
        .unwrap();
        assert_eq!(
            out,
            r#"["thinking", "role", "reasoning", "tool_calls", "reasoning_content"]hmm"#
        );
    }

    #[test]
    fn raise_exception_message_is_the_error() {
        let err = render(
            "{% if messages[0].role != 'user' %}{{ raise_exception('Conversation roles must alternate') }}{% endif %}",
            r#"[{"role": "assistant", "content": "x"}]"#,
        )
        .unwrap_err();
        match err {
            EngineError::Template(m) => assert_eq!(m, "Conversation roles must alternate"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn syntax_error_is_a_template_error() {
        let err = ChatTemplate::new("{% for m in messages %}", None, None).unwrap_err();
        assert!(matches!(err, EngineError::Template(_)), "{err:?}");
    }

    #[test]
    fn pycompat_methods_slicing_and_generation_tags() {
        let out = render(
            "{{ bos_token }}{% for m in messages[::-1] %}{%- generation -%}[{{ m.content.strip().upper() }}|{{ m.content.startswith('  a') }}|{{ m.content.split() | join(',') }}]{%- endgeneration -%}{% endfor %}{% for k, v in messages[0].items() %}{{ k }}={{ v | trim }};{% endfor %}{{ messages[-1:] | length }}{{ eos_token }}",
            r#"[{"role": "user", "content": "  a b "}, {"role": "assistant", "content": "c"}]"#,
        )
        .unwrap();
        assert_eq!(
            out,
            "<s>[C|False|c][A B|True|a,b]role=user;content=a b;1</s>"
        );
        // Fuzz finding: `{%}` (the tag's `%}` overlapping its `{%`) panicked while the
        // generation tags were rewritten; it is a syntax error like any other.
        let err = render("{%}{{ m %}}{% generation %}", "[]").unwrap_err();
        assert!(matches!(err, EngineError::Template(_)), "{err:?}");
        assert_eq!(strip_generation_tags("{%}x"), "{%}x");
    }

    #[test]
    fn trim_and_lstrip_blocks() {
        let source = "{% for m in messages %}\n    {% if m.role == 'user' %}\nU:{{ m.content }}\n    {% endif %}\n{% endfor %}\n";
        let out = render(source, r#"[{"role": "user", "content": "hi"}]"#).unwrap();
        assert_eq!(out, "U:hi\n");
    }

    #[test]
    fn extra_kwargs_and_tools() {
        let t = ChatTemplate::new(
            "{{ enable_thinking }} {{ bos_token }} {{ tools is none }} {{ tools[0].function.parameters | tojson if tools }}",
            Some("<s>"),
            None,
        )
        .unwrap();
        assert_eq!(
            t.render(
                "[]",
                None,
                true,
                Some(r#"{"enable_thinking": false, "bos_token": "B"}"#)
            )
            .unwrap(),
            "False B True "
        );
        assert_eq!(
            t.render(
                "[]",
                Some(r#"[{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"zeta": {"type": "string"}, "alpha": {"type": "integer"}}}}}]"#),
                true,
                None
            )
            .unwrap(),
            r#" <s> False {"type": "object", "properties": {"zeta": {"type": "string"}, "alpha": {"type": "integer"}}}"#
        );
        assert!(t
            .render("[]", None, true, Some(r#"{"messages": []}"#))
            .is_err());
        assert!(t.render("[", None, true, None).is_err());
    }

    #[test]
    fn python_string_helpers() {
        let rs = |s: &str, sep: Option<&str>, n: i64| py_rsplit(s, sep, n).unwrap();
        assert_eq!(rs(" a b  c ", None, 1), [" a b", "c"]);
        assert_eq!(rs("x  y ", None, 0), ["x  y"]);
        assert_eq!(rs("a,b,c", Some(","), 1), ["a,b", "c"]);
        assert_eq!(rs("é ü", None, -1), ["é", "ü"]);
        assert!(py_rsplit("a", Some(""), -1).is_err());
        assert_eq!(py_center("ab", 7).unwrap(), "   ab  ");
        assert_eq!(py_center("abc", 8).unwrap(), "  abc   ");
        assert!(py_center("ab", MAX_TEMPLATE_PAD + 1).is_err());
        assert_eq!(py_title("it's <b>x2y"), "It'S <B>X2Y");
    }

    #[test]
    fn python_float_repr() {
        for (f, want) in [
            (1.0, "1.0"),
            (-0.0, "-0.0"),
            (0.1, "0.1"),
            (1e-5, "1e-05"),
            (1.5e-4, "0.00015"),
            (1e16, "1e+16"),
            (123456789012345.0, "123456789012345.0"),
            (2.5e300, "2.5e+300"),
        ] {
            assert_eq!(py_float(f, false), want);
        }
    }

    #[test]
    fn strftime_formats() {
        // 2024-07-26 13:05:09 UTC, a Friday.
        let t = 1_721_999_109;
        assert_eq!(strftime(t, "%d %b %Y"), "26 Jul 2024");
        assert_eq!(
            strftime(t, "%A %B %-d, %y %H:%M:%S %I%p day %j %%"),
            "Friday July 26, 24 13:05:09 01PM day 208 %"
        );
        assert_eq!(strftime(0, "%Y-%m-%d %a"), "1970-01-01 Thu");
        assert_eq!(strftime(951_782_400, "%Y-%m-%d"), "2000-02-29");
    }

    #[test]
    fn repo_templates_resolve_like_transformers() {
        let dir = tempfile::tempdir().unwrap();
        let none = serde_json::Value::Null;
        assert_eq!(
            repo_templates(dir.path(), &none).unwrap(),
            RepoTemplates::default()
        );
        let named = serde_json::json!({
            "chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}],
            "bos_token": {"content": "<s>"}, "eos_token": "</s>"});
        assert_eq!(
            repo_templates(dir.path(), &named).unwrap(),
            RepoTemplates {
                default: Some("D".into()),
                tool_use: Some("T".into()),
                bos_token: Some("<s>".into()),
                eos_token: Some("</s>".into()),
            }
        );
        // No "default": no template for plain requests (never the first by position).
        let no_default = serde_json::json!({"chat_template": [
            {"name": "rag", "template": "R"}, {"name": "tool_use", "template": "T"}]});
        let t = repo_templates(dir.path(), &no_default).unwrap();
        assert_eq!((t.default, t.tool_use.as_deref()), (None, Some("T")));
        let plain = serde_json::json!({"chat_template": "P"});
        assert_eq!(
            repo_templates(dir.path(), &plain)
                .unwrap()
                .default
                .as_deref(),
            Some("P")
        );
        // chat_template.jinja wins over the config's templates; an empty one is absent.
        std::fs::write(dir.path().join("chat_template.jinja"), "  \n").unwrap();
        assert_eq!(
            repo_templates(dir.path(), &named)
                .unwrap()
                .default
                .as_deref(),
            Some("D")
        );
        std::fs::write(dir.path().join("chat_template.jinja"), "J").unwrap();
        let t = repo_templates(dir.path(), &named).unwrap();
        assert_eq!((t.default.as_deref(), t.tool_use), (Some("J"), None));
        // A chat_template.jinja that cannot be read fails the load.
        std::fs::remove_file(dir.path().join("chat_template.jinja")).unwrap();
        std::fs::create_dir(dir.path().join("chat_template.jinja")).unwrap();
        assert!(repo_templates(dir.path(), &named).is_err());
    }
}
