//! Log-probabilities in OpenAI's two shapes: chat (`{"content": [{token, logprob,
//! bytes, top_logprobs}]}`) and legacy completions (`{tokens, token_logprobs,
//! top_logprobs, text_offset}`).

use crate::engine::generate::{GenToken, TokenLogprob};
use serde_json::{json, Map, Value};

fn alt(lp: &TokenLogprob) -> Value {
    json!({"token": lp.text, "logprob": lp.logprob, "bytes": lp.bytes})
}

/// One chat `logprobs.content` entry (`None` when the engine reported none).
pub fn chat_entry(t: &GenToken) -> Option<Value> {
    let lp = t.logprob.as_ref()?;
    Some(json!({
        "token": lp.text,
        "logprob": lp.logprob,
        "bytes": lp.bytes,
        "top_logprobs": t.top_logprobs.iter().map(alt).collect::<Vec<_>>(),
    }))
}

/// Chat `logprobs` of `tokens`.
pub fn chat(tokens: &[GenToken]) -> Value {
    json!({"content": tokens.iter().filter_map(chat_entry).collect::<Vec<_>>()})
}

/// Completions `logprobs` of `tokens`, offsets counted (in characters) from `offset`;
/// returns the object and the offset after the last token.
pub fn completion(tokens: &[GenToken], mut offset: usize) -> (Value, usize) {
    let mut texts = Vec::new();
    let mut lps = Vec::new();
    let mut tops = Vec::new();
    let mut offsets = Vec::new();
    for t in tokens {
        let Some(lp) = t.logprob.as_ref() else {
            continue;
        };
        texts.push(json!(lp.text));
        lps.push(json!(lp.logprob));
        let top: Map<String, Value> = t
            .top_logprobs
            .iter()
            .map(|a| (a.text.clone(), json!(a.logprob)))
            .collect();
        tops.push(Value::Object(top));
        offsets.push(json!(offset));
        offset += lp.text.chars().count();
    }
    (
        json!({
            "tokens": texts,
            "token_logprobs": lps,
            "top_logprobs": tops,
            "text_offset": offsets,
        }),
        offset,
    )
}
