//! Fuzz entry points for the worker's parsers of hostile text: chat templates (tenant
//! code from the repo) rendered over a request's messages and tools, and the tool-call
//! parsers that read model output. One plain function per target, each calling the real
//! code with the real limits; the coverage-guided harness in `fuzz/` (libFuzzer) drives
//! them, and `tests/fuzz_replay.rs` replays the checked-in corpora
//! (`fuzz/corpus/<target>/`) on every `cargo test`. An entry point must return for every
//! input: a panic, an abort, an out-of-memory or a hang is a finding.

use crate::engine::generate::template::ChatTemplate;
use crate::engine::generate::tools::{self, StreamItem, StreamParser, ToolFormat};

/// A fuzz entry point.
pub type Entry = fn(&[u8]);

/// Every worker target, by the name of its corpus folder and harness binary.
pub const TARGETS: &[(&str, Entry)] = &[
    ("chat_template", chat_template),
    ("tool_calls", tool_calls),
    ("forced_schema", forced_schema),
    ("schema_grammar", schema_grammar),
    ("finetune_data", finetune_data),
    ("tokenizer", tokenizer),
];

/// The messages a template is rendered over when the input carries none: a system
/// prompt, a tool call and its result, and a user turn.
const MESSAGES: &str = r#"[{"role": "system", "content": "Be brief."},
{"role": "user", "content": "Weather in Paris?"},
{"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
 "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}}]},
{"role": "tool", "tool_call_id": "call_1", "content": "18 C"},
{"role": "user", "content": "Thanks"}]"#;

const TOOLS: &str = r#"[{"type": "function", "function": {"name": "get_weather",
 "description": "Weather now", "parameters": {"type": "object",
 "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
 "required": ["city"]}}}]"#;

/// A chat template and what it renders: `template \0 messages \0 tools \0 kwargs`
/// (missing parts: a stock conversation with a tool call and one tool). Compiled and
/// rendered exactly as a chat request does (size bound, fuel), with and without the
/// generation prompt.
pub fn chat_template(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(4, '\0');
    let source = parts.next().unwrap_or_default();
    let messages = parts.next().unwrap_or(MESSAGES);
    let tools = parts.next().unwrap_or(TOOLS);
    let extra = parts.next();
    let Ok(t) = ChatTemplate::new(source, Some("<bos>"), Some("<eos>")) else {
        return;
    };
    let _ = t.render_here(messages, Some(tools), true, extra);
    let _ = t.render_here(messages, None, false, None);
    let _ = ToolFormat::detect(source);
}

fn format_of(b: u8) -> ToolFormat {
    match b % 5 {
        0 => ToolFormat::Hermes,
        1 => ToolFormat::Llama3Json,
        2 => ToolFormat::Mistral,
        3 => ToolFormat::Gemma,
        _ => ToolFormat::None,
    }
}

/// What a stream released, with the random call ids left out.
fn released(items: Vec<StreamItem>) -> (String, Vec<(String, String)>) {
    let mut content = String::new();
    let mut calls = Vec::new();
    for item in items {
        match item {
            StreamItem::Content(c) => content.push_str(&c),
            StreamItem::ToolCall(c) => calls.push((c.name, c.arguments)),
        }
    }
    (content, calls)
}

/// Model output read for tool calls: `format_byte chunk_byte text...`. The text is
/// parsed whole ([`tools::parse`]) and streamed in pieces of 1..=16 bytes (on char
/// boundaries); both must release the same calls, streaming must release the same text
/// whatever the piece size, and every call's arguments must be a JSON object. Also read
/// as the output of a forced call.
pub fn tool_calls(data: &[u8]) {
    let [f, chunk, rest @ ..] = data else {
        return;
    };
    let format = format_of(*f);
    let text = String::from_utf8_lossy(rest);
    let whole = tools::parse(format, &text);
    let mut p = StreamParser::new(format);
    let mut items = p.push(&text);
    items.extend(p.finish());
    let (content, calls) = released(items);

    let n = (*chunk as usize % 16) + 1;
    let mut p = StreamParser::new(format);
    let mut items = Vec::new();
    let mut start = 0;
    while start < text.len() {
        let mut end = (start + n).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        items.extend(p.push(&text[start..end]));
        start = end;
    }
    items.extend(p.finish());
    let (chunked_content, chunked_calls) = released(items);

    let whole_calls: Vec<(String, String)> = whole
        .tool_calls
        .iter()
        .map(|c| (c.name.clone(), c.arguments.clone()))
        .collect();
    assert_eq!(whole_calls, calls, "parse and stream disagree on the calls");
    assert_eq!(calls, chunked_calls, "chunked stream releases other calls");
    assert_eq!(
        content, chunked_content,
        "chunked stream releases other text"
    );
    for (_, args) in &calls {
        let v: serde_json::Value = serde_json::from_str(args).expect("arguments are JSON");
        assert!(v.is_object(), "arguments are not an object: {args}");
    }
    if let Some(call) = tools::parse_forced(&text) {
        let v: serde_json::Value = serde_json::from_str(&call.arguments).expect("JSON");
        assert!(v.is_object());
    }
}

/// A request's `tools` (raw JSON text, as the client sent it) turned into the schema of a
/// forced call: for valid JSON the schema is valid JSON; the first byte picks whether
/// one tool is named.
pub fn forced_schema(data: &[u8]) {
    let [pick, rest @ ..] = data else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    if serde_json::from_str::<serde_json::Value>(&text).is_err() {
        return;
    }
    let only = (*pick % 2 == 1).then_some("get_weather");
    if let Some(schema) = tools::forced_call_schema(&text, only) {
        serde_json::from_str::<serde_json::Value>(&schema).expect("the schema is JSON");
    }
}

/// A `response_format` JSON schema (tenant input) through the JSON-Schema-to-grammar
/// converter: a grammar or a clean refusal, never a panic, for any text.
pub fn schema_grammar(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = crate::engine::generate::schema_grammar::json_schema_to_gbnf(&text);
}

/// A fine-tuning job's split file (tenant data from a dataset repo) through the
/// worker's reader with its size bound, then the label set and class ids: the first
/// byte picks `.csv`, `.jsonl` or `.json` (its value mod 3), the rest is the file,
/// read with the columns `text` and `label`, and read again as the sentence pairs of
/// a sentence-embedding job (the same two columns as anchor and positive).
pub fn finetune_data(data: &[u8]) {
    use crate::finetune::data;
    let Some((pick, file)) = data.split_first() else {
        return;
    };
    let name = ["train.csv", "train.jsonl", "train.json"][usize::from(*pick) % 3];
    if let Ok(pairs) = data::parse_pairs(name, file, "text", "label") {
        assert!(pairs
            .iter()
            .all(|p| !p.anchor.trim().is_empty() && !p.positive.trim().is_empty()));
    }
    // The LoRA rows (prompt/completion, messages or text).
    let _ = data::parse_sft(name, file, "text");
    let Ok(examples) = data::parse(name, file, "text", "label") else {
        return;
    };
    if let Ok(labels) = data::label_names(&examples) {
        let _ = data::class_ids(&examples, &labels);
    }
}

/// A tenant's `tokenizer.json`: parsed, then checked as every load checks it
/// (`engine::tokenize::check_tokenizer`: normalizer growth, regexes that need a
/// backtracking engine); one that passes encodes a mixed text of 4 KiB, which must end
/// quickly whatever its patterns (the check's promise).
pub fn tokenizer(data: &[u8]) {
    let Ok(t) = tokenizers::Tokenizer::from_bytes(data) else {
        return;
    };
    if crate::engine::tokenize::check_tokenizer(&t).is_err() {
        return;
    }
    let text = "Hello,  world!\n\tÜnïcödé 日本語 🙂 12345 aaaa bbbb    ".repeat(64);
    let _ = t.encode(text.as_str(), true);
}
