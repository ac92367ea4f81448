//! Tokenization on dedicated OS threads (TEI's shape): each thread owns its own
//! `Tokenizer` clones and takes jobs from one bounded channel, so the async runtime
//! never tokenizes and a burst of requests waits for channel capacity.

use super::error::EngineError;
use std::sync::Arc;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};
use tokio::sync::oneshot;

/// One input to encode: a text, or a text pair (cross-encoder classification).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextInput {
    Single(String),
    Pair(String, String),
}

impl TextInput {
    fn is_empty(&self) -> bool {
        match self {
            TextInput::Single(s) => s.is_empty(),
            TextInput::Pair(a, b) => a.is_empty() && b.is_empty(),
        }
    }
}

/// Token ids of one input, special tokens included, after truncation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
}

struct Job {
    inputs: Vec<TextInput>,
    truncate: bool,
    reply: oneshot::Sender<Result<Vec<Encoded>, EngineError>>,
}

/// A pool of tokenizer threads for one model.
pub struct TokenizerPool {
    tx: async_channel::Sender<Job>,
}

impl TokenizerPool {
    /// Starts `threads` tokenizer threads. `max_tokens` is the truncation length.
    pub fn start(
        tokenizer: Tokenizer,
        threads: usize,
        max_tokens: usize,
        name: &str,
    ) -> std::io::Result<TokenizerPool> {
        let threads = threads.max(1);
        let (tx, rx) = async_channel::bounded::<Job>(4 * threads);
        let base = Arc::new(tokenizer);
        for i in 0..threads {
            let rx = rx.clone();
            let base = base.clone();
            std::thread::Builder::new()
                .name(format!("tok-{name}-{i}"))
                .spawn(move || tokenizer_thread(&base, max_tokens, rx))?;
        }
        Ok(TokenizerPool { tx })
    }

    /// Encodes `inputs` on a tokenizer thread. With `truncate`, long inputs are cut to the
    /// model's limit (like TEI with auto-truncate); without, they are an error.
    pub async fn encode(
        &self,
        inputs: Vec<TextInput>,
        truncate: bool,
    ) -> Result<Vec<Encoded>, EngineError> {
        if let Some(index) = inputs.iter().position(TextInput::is_empty) {
            return Err(EngineError::EmptyString { index });
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job {
                inputs,
                truncate,
                reply,
            })
            .await
            .map_err(|_| EngineError::Unavailable)?;
        rx.await.map_err(|_| EngineError::Unavailable)?
    }
}

fn tokenizer_thread(base: &Tokenizer, max_tokens: usize, rx: async_channel::Receiver<Job>) {
    // Clone on this thread (TEI measured ~0.2 s per clone for big vocabularies).
    let mut truncating = base.clone();
    let mut whole = base.clone();
    let params = TruncationParams {
        max_length: max_tokens,
        strategy: TruncationStrategy::LongestFirst,
        stride: 0,
        direction: TruncationDirection::Right,
    };
    let configured =
        truncating.with_truncation(Some(params)).is_ok() && whole.with_truncation(None).is_ok();
    truncating.with_padding(None);
    whole.with_padding(None);
    while let Ok(job) = rx.recv_blocking() {
        if job.reply.is_closed() {
            continue;
        }
        let result = if configured {
            encode_all(
                if job.truncate { &truncating } else { &whole },
                job.inputs,
                if job.truncate { None } else { Some(max_tokens) },
            )
        } else {
            Err(EngineError::Tokenization(
                "tokenizer rejected the truncation settings".to_string(),
            ))
        };
        let _ = job.reply.send(result);
    }
}

fn encode_all(
    tok: &Tokenizer,
    inputs: Vec<TextInput>,
    reject_over: Option<usize>,
) -> Result<Vec<Encoded>, EngineError> {
    let mut out = Vec::with_capacity(inputs.len());
    for (index, input) in inputs.into_iter().enumerate() {
        let enc = match input {
            TextInput::Single(s) => tok.encode(s, true),
            TextInput::Pair(a, b) => tok.encode((a, b), true),
        }
        .map_err(|e| EngineError::Tokenization(e.to_string()))?;
        if let Some(max) = reject_over {
            if enc.len() > max {
                return Err(EngineError::InputTooLong {
                    index,
                    tokens: enc.len(),
                    max,
                });
            }
        }
        out.push(Encoded {
            ids: enc.get_ids().to_vec(),
            type_ids: enc.get_type_ids().to_vec(),
        });
    }
    Ok(out)
}

/// How many times longer a tokenizer's normalizers may make a text, at most.
/// Real tokenizers stay at 1 (`" "` → `"▁"`, lowercasing, NFKC whose worst
/// character grows 18-fold is bounded on its own); a tenant's chain of ten
/// `Replace("a", "aaaaaaaaaa")` would make a 2 MB request 10^16 bytes long
/// and abort the shared worker on the allocation.
pub const MAX_NORMALIZER_GROWTH: u64 = 64;

/// Refuses a tokenizer whose normalizers could grow a text more than
/// [`MAX_NORMALIZER_GROWTH`] times: the product, over every `Replace`, of
/// `len(content) / len(pattern)` (rounded up; `len(content) + 1` for a regex
/// pattern, which may match the empty string between every two characters).
pub fn check_normalizer_growth(t: &Tokenizer) -> Result<(), String> {
    fn growth(v: &serde_json::Value) -> u64 {
        use serde_json::Value;
        match v.get("type").and_then(Value::as_str) {
            Some("Sequence") => v
                .get("normalizers")
                .and_then(Value::as_array)
                .map(|n| n.iter().fold(1u64, |acc, x| acc.saturating_mul(growth(x))))
                .unwrap_or(1),
            Some("Replace") => {
                let content = v.get("content").and_then(Value::as_str).unwrap_or("");
                let content = content.chars().count() as u64;
                match v.get("pattern") {
                    Some(p) if p.get("String").is_some() => {
                        let pat = p["String"].as_str().unwrap_or("").chars().count() as u64;
                        if pat == 0 {
                            content + 1
                        } else {
                            content.div_ceil(pat).max(1)
                        }
                    }
                    _ => content + 1,
                }
            }
            _ => 1,
        }
    }
    let Some(n) = t.get_normalizer() else {
        return Ok(());
    };
    let v = serde_json::to_value(n).map_err(|e| e.to_string())?;
    let g = growth(&v);
    if g > MAX_NORMALIZER_GROWTH {
        return Err(format!(
            "the tokenizer's normalizers can make a text {g} times longer (at most {MAX_NORMALIZER_GROWTH})"
        ));
    }
    Ok(())
}

/// What a tenant's tokenizer must pass before it tokenizes anything:
/// [`check_normalizer_growth`] and [`check_regexes`].
pub fn check_tokenizer(t: &Tokenizer) -> Result<(), String> {
    check_normalizer_growth(t)?;
    check_regexes(t)
}

/// Lookahead alternatives allowed in a pattern that needs fancy-regex: the GPT-2 family's
/// whitespace rule (a run of whitespace not followed by a non-space).
const ALLOWED_LOOKAHEADS: &[&str] = &[r"\s+(?!\S)", r"\s*(?!\S)"];

/// Refuses a tokenizer with a regex (a `Split` pre-tokenizer's or a `Replace`
/// normalizer's or decoder's pattern) that fancy-regex would run on its backtracking
/// engine, beyond [`ALLOWED_LOOKAHEADS`]. fancy-regex hands a pattern with no lookaround
/// or backreference to the linear-time `regex` crate; anything else backtracks, up to a
/// million steps per match attempt, and a crafted pattern (nested repetition before a
/// lookahead) spends them at every position of every request: seconds to hours of a
/// shared core per call. Real tokenizers' patterns compile with `regex`, or are a
/// top-level alternation whose only fancy alternative is `\s+(?!\S)` (GPT-2, Llama 3,
/// Qwen 2): each other alternative then runs as a linear-time delegate.
pub fn check_regexes(t: &Tokenizer) -> Result<(), String> {
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    match (k.as_str(), x.as_str()) {
                        ("Regex", Some(p)) => out.push(p.to_string()),
                        _ => walk(x, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut patterns = Vec::new();
    let parts = [
        t.get_normalizer().map(serde_json::to_value),
        t.get_pre_tokenizer().map(serde_json::to_value),
        t.get_decoder().map(serde_json::to_value),
    ];
    for part in parts.into_iter().flatten() {
        walk(&part.map_err(|e| e.to_string())?, &mut patterns);
    }
    for p in &patterns {
        if !runs_in_linear_time(p) {
            let shown: String = p.chars().take(200).collect();
            return Err(format!(
                "the tokenizer's regex {shown:?} needs a backtracking engine (lookaround or \
                 backreference beyond the GPT-2 family's `\\s+(?!\\S)`), which a crafted \
                 pattern turns into minutes of CPU per request; use patterns without them"
            ));
        }
    }
    Ok(())
}

/// Whether fancy-regex runs `pattern` without unbounded backtracking: it compiles with
/// the `regex` crate, or its top-level alternatives each do or are in
/// [`ALLOWED_LOOKAHEADS`].
fn runs_in_linear_time(pattern: &str) -> bool {
    let linear = |p: &str| regex::Regex::new(p).is_ok();
    linear(pattern)
        || top_level_alternatives(pattern).is_some_and(|alts| {
            alts.iter()
                .all(|a| ALLOWED_LOOKAHEADS.contains(a) || linear(a))
        })
}

/// `a|b(c|d)|[|]` -> `["a", "b(c|d)", "[|]"]`: the pattern split at the `|`s outside
/// groups, classes and escapes; `None` when the brackets do not balance.
fn top_level_alternatives(pattern: &str) -> Option<Vec<&str>> {
    let mut alts = Vec::new();
    let (mut depth, mut class, mut start) = (0usize, 0usize, 0usize);
    let mut chars = pattern.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '[' => {
                class += 1;
                // `[]...]` and `[^]...]`: a leading `]` is a literal.
                if let Some(&(_, '^')) = chars.peek() {
                    chars.next();
                }
                if let Some(&(_, ']')) = chars.peek() {
                    chars.next();
                }
            }
            ']' if class > 0 => class -= 1,
            _ if class > 0 => {}
            '(' => depth += 1,
            ')' => depth = depth.checked_sub(1)?,
            '|' if depth == 0 => {
                alts.push(&pattern[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    (depth == 0 && class == 0).then(|| {
        alts.push(&pattern[start..]);
        alts
    })
}

#[cfg(test)]
mod regex_tests {
    use super::{check_regexes, top_level_alternatives};

    fn tok(pre_tokenizer: serde_json::Value) -> tokenizers::Tokenizer {
        let json = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
            "normalizer": null, "pre_tokenizer": pre_tokenizer, "post_processor": null, "decoder": null,
            "model": {"type": "WordLevel", "vocab": {"a": 0, "[UNK]": 1}, "unk_token": "[UNK]"}
        });
        tokenizers::Tokenizer::from_bytes(serde_json::to_vec(&json).unwrap()).unwrap()
    }

    fn split(pattern: &str) -> serde_json::Value {
        serde_json::json!({"type": "Sequence", "pretokenizers": [
            {"type": "WhitespaceSplit"},
            {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false}
        ]})
    }

    /// The patterns of GPT-2, Llama 3 and Qwen 2 pass; so do tokenizers with no regex.
    #[test]
    fn real_tokenizers_patterns_pass() {
        for ok in [
            r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+",
            r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
            r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
            r"\p{N}{1,3}",
            r"[\]|]+|x",
        ] {
            check_regexes(&tok(split(ok))).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        check_regexes(&tok(serde_json::json!({"type": "BertPreTokenizer"}))).unwrap();
        check_regexes(&tok(serde_json::Value::Null)).unwrap();
    }

    /// Nested repetition before a lookahead backtracks exponentially: refused, wherever
    /// the pattern sits (pre-tokenizer, normalizer).
    #[test]
    fn backtracking_patterns_are_refused() {
        for bad in [
            r"(a|aa)+(?=b)",
            r"(\s+(?!\S))+x",
            r"(?:'s|\s+(?!\S))",
            r"(\w+)\1",
            r"x|(?<=a)b",
        ] {
            let e = check_regexes(&tok(split(bad))).unwrap_err();
            assert!(e.contains("backtracking"), "{bad}: {e}");
        }
        let json = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
            "normalizer": {"type": "Replace", "pattern": {"Regex": "(a+)+(?=c)"}, "content": ""},
            "pre_tokenizer": null, "post_processor": null, "decoder": null,
            "model": {"type": "WordLevel", "vocab": {"a": 0, "[UNK]": 1}, "unk_token": "[UNK]"}
        });
        let t = tokenizers::Tokenizer::from_bytes(serde_json::to_vec(&json).unwrap()).unwrap();
        assert!(check_regexes(&t).is_err());
    }

    #[test]
    fn alternatives_split_outside_groups_classes_and_escapes() {
        assert_eq!(
            top_level_alternatives(r"a|b(c|d)|[|]|\||[]|]"),
            Some(vec!["a", "b(c|d)", "[|]", r"\|", "[]|]"])
        );
        assert_eq!(top_level_alternatives("(a|b"), None);
        assert_eq!(top_level_alternatives("a)|b"), None);
    }
}

#[cfg(test)]
mod growth_tests {
    use super::check_normalizer_growth;

    fn tok(normalizer: serde_json::Value) -> tokenizers::Tokenizer {
        let json = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
            "normalizer": normalizer, "pre_tokenizer": null, "post_processor": null, "decoder": null,
            "model": {"type": "WordLevel", "vocab": {"a": 0, "[UNK]": 1}, "unk_token": "[UNK]"}
        });
        tokenizers::Tokenizer::from_bytes(serde_json::to_vec(&json).unwrap()).unwrap()
    }

    #[test]
    fn a_normalizer_chain_that_explodes_is_refused() {
        let replace = |p: &str, c: &str| serde_json::json!({"type": "Replace", "pattern": {"String": p}, "content": c});
        let regex = |p: &str, c: &str| serde_json::json!({"type": "Replace", "pattern": {"Regex": p}, "content": c});
        // What real tokenizers do passes.
        for ok in [
            serde_json::Value::Null,
            serde_json::json!({"type": "Sequence", "normalizers": [
                {"type": "Prepend", "prepend": "\u{2581}"}, replace(" ", "\u{2581}")]}),
            serde_json::json!({"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Lowercase"}]}),
            replace("\n", "  "),
        ] {
            check_normalizer_growth(&tok(ok.clone())).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        // Ten tenfold replaces; one regex that matches everywhere with a long content.
        let chain: Vec<_> = (0..10).map(|_| replace("a", "aaaaaaaaaa")).collect();
        for bad in [
            serde_json::json!({"type": "Sequence", "normalizers": chain}),
            regex("", &"x".repeat(100)),
            serde_json::json!({"type": "Sequence", "normalizers": [replace("a", &"b".repeat(9)), replace("b", &"c".repeat(9))]}),
        ] {
            let e = check_normalizer_growth(&tok(bad.clone())).unwrap_err();
            assert!(e.contains("times longer"), "{bad}: {e}");
        }
    }
}
