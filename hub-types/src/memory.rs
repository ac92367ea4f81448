//! The memory a loaded model needs, estimated from the size of its weight files. One
//! estimate for both uses: the hub's scheduler places a replica on a worker only if the
//! worker reports this much free, and the worker refuses to load (and plans its engine
//! replicas) against the same figure, so a replica the scheduler places is one the worker
//! accepts (as long as its free memory has not moved in between).

/// Fixed bytes per loaded model on top of its weights: the tokenizer, the engine's
/// arena, and activations of a full forward pass (for a base-size encoder at the default
/// batch budget one intermediate tensor alone is about 256 MiB).
///
/// 256 MiB, not the 64 MiB that a MiniLM-size model needs: a load that does not fit is a
/// clean failure with a message, whereas a worker that overcommits is OOM-killed with
/// every model it serves, and the single-node hub runs its worker in its own process, so
/// there the hub would go down too. The larger margin costs little: it only lowers the
/// replica count on workers with less than about 2 GiB available.
pub const MODEL_OVERHEAD_BYTES: u64 = 256 << 20;

/// Bytes a model with `weight_bytes` of weights needs once loaded: the weights, half as
/// much again, and [`MODEL_OVERHEAD_BYTES`] (saturating).
///
/// The half: engines hold a converted or fused copy next to the mapped file (candle
/// converts to f32 and fuses QKV; an ONNX Runtime session holds about 1.1x the weights).
pub fn model_bytes(weight_bytes: u64) -> u64 {
    weight_bytes
        .saturating_add(weight_bytes / 2)
        .saturating_add(MODEL_OVERHEAD_BYTES)
}

/// Sequence slots a decoder serves at once unless the worker is told otherwise
/// (`--gen-slots`).
pub const DEFAULT_GEN_SLOTS: u64 = 4;
/// Tokens each slot may hold (prompt + completion) unless the worker is told otherwise
/// (`--gen-context`); capped at the model's training context.
pub const DEFAULT_GEN_CONTEXT: u64 = 4096;
/// Host memory a GGUF decoder's prompt cache (finished sequences' KV state) may fill
/// unless the worker is told otherwise (`--gen-prompt-cache-mib`): llama-server's
/// `--cache-ram` holds 8 GiB by default; 256 MiB holds about 45 conversations of 300
/// tokens of Gemma-3-270M. Part of a GGUF decoder's memory need: the cache fills up under
/// chat traffic, so a placement that left it out would overcommit the worker.
pub const DEFAULT_GEN_PROMPT_CACHE_BYTES: u64 = 256 << 20;

/// The attention shape that sizes a decoder's KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecoderShape {
    pub layers: u64,
    /// Key/value heads (fewer than query heads under grouped-query attention).
    pub kv_heads: u64,
    pub head_dim: u64,
}

/// Bytes of an f16 KV cache holding `tokens` tokens (over all slots): a key and a value
/// vector per layer, head and token.
pub fn kv_cache_bytes(shape: DecoderShape, tokens: u64) -> u64 {
    4u64.saturating_mul(shape.layers)
        .saturating_mul(shape.kv_heads)
        .saturating_mul(shape.head_dim)
        .saturating_mul(tokens)
}

/// Bytes a decoder needs once loaded: its weights (GGUF is mapped and used in place; no
/// converted copy), its KV cache, and [`MODEL_OVERHEAD_BYTES`] for compute buffers,
/// vocabulary and sampling state.
pub fn decoder_bytes(weight_bytes: u64, kv_bytes: u64) -> u64 {
    weight_bytes
        .saturating_add(kv_bytes)
        .saturating_add(MODEL_OVERHEAD_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoders_need_weights_kv_cache_and_the_overhead() {
        // Gemma-3-270M: 18 layers, 1 KV head of 256 dims; 4 slots x 4096 tokens.
        let shape = DecoderShape {
            layers: 18,
            kv_heads: 1,
            head_dim: 256,
        };
        let kv = kv_cache_bytes(shape, DEFAULT_GEN_SLOTS * DEFAULT_GEN_CONTEXT);
        assert_eq!(kv, 18 * 256 * 4 * 16_384);
        assert_eq!(decoder_bytes(253_113_024, kv), 253_113_024 + kv + 256 * MIB);
    }

    const MIB: u64 = 1 << 20;

    #[test]
    fn weights_and_a_half_plus_the_fixed_overhead() {
        assert_eq!(model_bytes(0), 256 * MIB);
        // all-MiniLM-L6-v2: 90.9 MB of safetensors.
        assert_eq!(model_bytes(90_868_376), 90_868_376 + 45_434_188 + 256 * MIB);
        assert_eq!(model_bytes(1 << 30), (1 << 30) + (512 * MIB) + 256 * MIB);
    }

    #[test]
    fn never_overflows() {
        assert_eq!(model_bytes(u64::MAX), u64::MAX);
        assert_eq!(model_bytes(u64::MAX - 1), u64::MAX);
    }

    #[test]
    fn grows_with_the_weights() {
        let mut last = 0;
        for w in [0, 1, 2, 3, 1 << 20, 1 << 30, 1 << 40] {
            let m = model_bytes(w);
            assert!(m >= last && m >= w + MODEL_OVERHEAD_BYTES);
            last = m;
        }
    }
}
