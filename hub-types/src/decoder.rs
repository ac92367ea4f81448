//! A decoder's attention shape and training context, read from where weights declare
//! them (GGUF metadata or `config.json`), and the memory a decoder endpoint needs at the
//! default slot settings: the one estimate the hub's scheduler places by and the worker
//! checks against.

use crate::memory::{
    decoder_bytes, kv_cache_bytes, DecoderShape, DEFAULT_GEN_CONTEXT,
    DEFAULT_GEN_PROMPT_CACHE_BYTES, DEFAULT_GEN_SLOTS,
};
use serde_json::Value;

/// What sizes a decoder's KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecoderDims {
    pub shape: DecoderShape,
    /// The context the model was trained with, when the weights say.
    pub train_context: Option<u64>,
}

/// From GGUF metadata: `<arch>.block_count`, `<arch>.attention.head_count_kv` (else
/// `head_count`), `<arch>.attention.key_length` (else `embedding_length / head_count`),
/// `<arch>.context_length`. `get` answers a key's unsigned integer value.
pub fn from_gguf(arch: &str, get: impl Fn(&str) -> Option<u64>) -> Option<DecoderDims> {
    let key = |k: &str| get(&format!("{arch}.{k}"));
    let layers = key("block_count").filter(|n| *n > 0)?;
    let heads = key("attention.head_count").filter(|n| *n > 0);
    let kv_heads = key("attention.head_count_kv").or(heads)?;
    let head_dim = key("attention.key_length")
        .or_else(|| Some(key("embedding_length")? / heads?))
        .filter(|n| *n > 0)?;
    Some(DecoderDims {
        shape: DecoderShape {
            layers,
            kv_heads,
            head_dim,
        },
        train_context: key("context_length").filter(|n| *n > 0),
    })
}

/// From a transformers `config.json` (its `text_config` for multimodal wrappers):
/// `num_hidden_layers`, `num_key_value_heads` (else `num_attention_heads`), `head_dim`
/// (else `hidden_size / num_attention_heads`), `max_position_embeddings`.
pub fn from_config(config: &Value) -> Option<DecoderDims> {
    let c = if config.get("num_hidden_layers").is_some() {
        config
    } else {
        config.get("text_config")?
    };
    let int = |k: &str| c.get(k).and_then(Value::as_u64).filter(|n| *n > 0);
    let layers = int("num_hidden_layers").or_else(|| int("n_layer"))?;
    let heads = int("num_attention_heads").or_else(|| int("n_head"));
    let kv_heads = int("num_key_value_heads").or(heads)?;
    let head_dim = int("head_dim")
        .or_else(|| Some(int("hidden_size").or_else(|| int("n_embd"))? / heads?))
        .filter(|n| *n > 0)?;
    Some(DecoderDims {
        shape: DecoderShape {
            layers,
            kv_heads,
            head_dim,
        },
        train_context: int("max_position_embeddings").or_else(|| int("n_positions")),
    })
}

/// Tokens the KV cache holds over all slots: `slots` times the per-slot context, capped
/// at the training context.
pub fn kv_tokens(slots: u64, context: u64, train_context: Option<u64>) -> u64 {
    slots.saturating_mul(context.min(train_context.unwrap_or(context)))
}

/// Bytes a decoder with `weight_bytes` of weights needs at the default slot settings
/// ([`DEFAULT_GEN_SLOTS`] x [`DEFAULT_GEN_CONTEXT`], capped at the training context).
pub fn default_decoder_bytes(weight_bytes: u64, dims: DecoderDims) -> u64 {
    let tokens = kv_tokens(DEFAULT_GEN_SLOTS, DEFAULT_GEN_CONTEXT, dims.train_context);
    decoder_bytes(weight_bytes, kv_cache_bytes(dims.shape, tokens))
}

/// [`default_decoder_bytes`] for a GGUF decoder (served by llama.cpp), which also keeps a
/// prompt cache of [`DEFAULT_GEN_PROMPT_CACHE_BYTES`] by default. Safetensors decoders
/// (candle) have none.
pub fn default_gguf_decoder_bytes(weight_bytes: u64, dims: DecoderDims) -> u64 {
    default_decoder_bytes(weight_bytes, dims).saturating_add(DEFAULT_GEN_PROMPT_CACHE_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn gguf_metadata_of_gemma3() {
        let meta = |k: &str| match k {
            "gemma3.block_count" => Some(18),
            "gemma3.attention.head_count" => Some(4),
            "gemma3.attention.head_count_kv" => Some(1),
            "gemma3.attention.key_length" => Some(256),
            "gemma3.embedding_length" => Some(640),
            "gemma3.context_length" => Some(32768),
            _ => None,
        };
        let d = from_gguf("gemma3", meta).unwrap();
        assert_eq!(
            d.shape,
            DecoderShape {
                layers: 18,
                kv_heads: 1,
                head_dim: 256
            }
        );
        assert_eq!(d.train_context, Some(32768));
        assert_eq!(
            default_decoder_bytes(100, d),
            100 + 18 * 256 * 4 * 4 * 4096 + crate::memory::MODEL_OVERHEAD_BYTES
        );
        // Served by llama.cpp, it also keeps a prompt cache.
        assert_eq!(
            default_gguf_decoder_bytes(100, d),
            default_decoder_bytes(100, d) + (256 << 20)
        );
        // Without key_length: embedding_length / head_count; without head_count_kv: heads.
        let meta = |k: &str| match k {
            "llama.block_count" => Some(2),
            "llama.attention.head_count" => Some(4),
            "llama.embedding_length" => Some(64),
            _ => None,
        };
        let d = from_gguf("llama", meta).unwrap();
        assert_eq!((d.shape.kv_heads, d.shape.head_dim), (4, 16));
        assert_eq!(d.train_context, None);
        assert!(from_gguf("bert", |_| None).is_none());
    }

    #[test]
    fn config_json() {
        let d = from_config(&json!({"num_hidden_layers": 28, "num_attention_heads": 16,
            "num_key_value_heads": 8, "hidden_size": 1024, "head_dim": 128,
            "max_position_embeddings": 1024}))
        .unwrap();
        assert_eq!(
            (d.shape.layers, d.shape.kv_heads, d.shape.head_dim),
            (28, 8, 128)
        );
        // The training context caps each slot's context.
        assert_eq!(kv_tokens(4, 4096, d.train_context), 4096);
        let d = from_config(&json!({"text_config": {"num_hidden_layers": 2,
            "num_attention_heads": 4, "hidden_size": 64}}))
        .unwrap();
        assert_eq!((d.shape.kv_heads, d.shape.head_dim), (4, 16));
        assert!(from_config(&json!({"architectures": ["BertModel"]})).is_none());
    }
}
