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
