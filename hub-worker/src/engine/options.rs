//! The knobs of the engine: which engine to prefer ([`EnginePreference`], also the worker's
//! `--engine`), the arithmetic ([`Precision`]), the per-model limits ([`EngineConfig`]) and
//! the options of one request ([`EmbedOptions`], [`ClassifyOptions`]).

use super::error::UnknownEngine;
use super::spec::ScoreFn;
use clap::ValueEnum;

/// Which engine to use when several could serve a model: the worker's `--engine` /
/// `HUB_WORKER_ENGINE` (`auto`, `candle`, `ort`, `openvino`). Parse a string with
/// [`str::parse`] (or clap's [`ValueEnum::from_str`]); an unknown value is an
/// [`UnknownEngine`] naming the valid ones.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, serde::Serialize, serde::Deserialize,
)]
pub enum EnginePreference {
    /// The fastest engine this worker has: OpenVINO (`engine-openvino`, initialised), then
    /// ONNX Runtime (`engine-ort`, initialised), on the repo's `model.onnx` or a graph
    /// derived from its safetensors; candle when neither is there or both fail.
    #[default]
    Auto,
    /// candle (pure Rust; every build has it).
    Candle,
    /// ONNX Runtime (`engine-ort` builds, `--ort-dylib`).
    Ort,
    /// OpenVINO (`engine-openvino` builds, `--openvino-lib`).
    #[value(name = "openvino")]
    OpenVino,
}

impl EnginePreference {
    /// The spelling `--engine` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            EnginePreference::Auto => "auto",
            EnginePreference::Candle => "candle",
            EnginePreference::Ort => "ort",
            EnginePreference::OpenVino => "openvino",
        }
    }
}

impl std::fmt::Display for EnginePreference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for EnginePreference {
    type Err = UnknownEngine;

    /// The spellings `--engine` takes, exactly (as clap parses them).
    fn from_str(s: &str) -> Result<Self, UnknownEngine> {
        <EnginePreference as ValueEnum>::from_str(s, false).map_err(|_| UnknownEngine {
            given: s.to_string(),
            expected: EnginePreference::value_variants()
                .iter()
                .map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }
}

/// Arithmetic an engine may use for a model: the endpoint's precision, as the hub sends
/// it in the assignment (one type for hub and worker).
pub use hub_types::Precision;

/// Prompt tokens computed per prompt in a step where no stream is generating (and
/// llama.cpp's ubatch), unless told otherwise. 512, llama.cpp's own default ubatch: with
/// 256, a lone 512-token prompt on Gemma-3-270M took 2.43 s to its first token against
/// llama-server's 1.64 s, with 512 1.86 s (`scripts/bench/generation.sh`,
/// docs/BENCHMARKS.md, 2 Dec).
pub const DEFAULT_GEN_PREFILL_CHUNK: usize = 512;
/// Prompt tokens computed per step next to generating streams, unless told otherwise.
/// Such a step stalls those streams for the chunk's compute: with 512 a stream waited
/// ~2 s for its next token when a prompt arrived beside it (Gemma-3-270M, 2 cores), with
/// 128 ~0.6 s at the same output rate (`generation.sh`, docs/BENCHMARKS.md, 3 Dec).
pub const DEFAULT_GEN_MIXED_CHUNK: usize = 128;
/// Host memory per decoder for the prompt cache (finished sequences' KV state), in MiB,
/// unless told otherwise ([`hub_types::memory::DEFAULT_GEN_PROMPT_CACHE_BYTES`], which
/// the hub's placement counts too).
pub const DEFAULT_GEN_PROMPT_CACHE_MIB: usize =
    (hub_types::memory::DEFAULT_GEN_PROMPT_CACHE_BYTES >> 20) as usize;
/// Generation requests waiting for a slot, unless told otherwise.
pub const DEFAULT_GEN_QUEUE: usize = 32;
/// Longest a grammar (`response_format`, a forced tool call) may take to choose one token
/// before its request fails as too costly to enforce, in milliseconds.
pub const DEFAULT_GEN_GRAMMAR_TOKEN_MS: u64 = 5000;
/// Most time a grammar may take for all of one request's tokens before the request fails
/// as too costly to enforce, in milliseconds.
pub const DEFAULT_GEN_GRAMMAR_REQUEST_MS: u64 = 60_000;

/// Longest fill wait unless told otherwise: below one MiniLM pass on 2 cores (about 4 ms
/// for one input), so a window that waits in vain costs less than the pass it delays.
pub const DEFAULT_FILL_WAIT_US: u64 = 2000;

/// Knobs of one loaded model (serialized for a decoder host process).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct EngineConfig {
    /// Token budget per forward pass (padding counted on CPU).
    pub max_batch_tokens: usize,
    /// Inputs taken from the queue at once; they are sorted by length and run in
    /// forward passes of at most `forward_batch_size`, spread over the replicas.
    pub max_batch_size: usize,
    /// Inputs per forward pass; 0 takes the engine's preference.
    pub forward_batch_size: usize,
    /// Engine instances of the model, each with its own backend thread taking passes from
    /// the model's queue; the compute threads are divided among them. 0: automatic (ONNX
    /// Runtime: one single-threaded replica per compute thread while the weights are small
    /// enough to hold that many copies; candle: 1).
    pub replicas: usize,
    /// Inputs admitted at once (queued or running); more is answered `Overloaded`.
    pub max_concurrent: usize,
    /// Longest a short window waits, in microseconds, for the inputs of concurrent
    /// clients before its forward pass starts (`queue::fill_wait`; 0: never). A lone
    /// sequential client never waits.
    pub fill_wait_us: u64,
    /// Tokenizer threads for this model.
    pub tokenizer_threads: usize,
    pub engine: EnginePreference,
    /// Arithmetic (`Bf16` needs the OpenVINO engine).
    pub precision: Precision,
    /// Memory the model may use; `None` reads `MemAvailable` from the host.
    pub memory_available_bytes: Option<u64>,
    /// Decoders: sequences decoded together (`--gen-slots`).
    pub gen_slots: usize,
    /// Decoders: tokens one sequence may hold, prompt + completion (`--gen-context`);
    /// capped at the model's training context.
    pub gen_context: usize,
    /// Decoders: prompt tokens computed per prompt in a step where no stream generates
    /// (`--gen-prefill-chunk`; a burst of prompts is computed together, and a longer
    /// prompt over several steps).
    pub gen_prefill_chunk: usize,
    /// Decoders: most prompt tokens computed in a step next to generating streams
    /// (`--gen-mixed-chunk`; at most `gen_prefill_chunk`).
    pub gen_mixed_chunk: usize,
    /// Decoders: MiB of host memory for saved sequences, restored when a conversation
    /// comes back after its slot was taken (`--gen-prompt-cache-mib`; 0: off).
    pub gen_prompt_cache_mib: usize,
    /// Decoders: requests waiting for a slot; more is answered `Overloaded` (`--gen-queue`).
    pub gen_queue: usize,
    /// Decoders: llama.cpp compute threads; 0: the physical cores this process may use
    /// (`--gen-threads`).
    pub gen_threads: usize,
    /// Decoders: longest a grammar may take to choose one token, in milliseconds, before
    /// its request fails with `EngineError::Grammar` (`--gen-grammar-token-ms`).
    pub gen_grammar_token_ms: u64,
    /// Decoders: most time a grammar may take for all of one request's tokens, in
    /// milliseconds (`--gen-grammar-request-ms`).
    pub gen_grammar_request_ms: u64,
    /// Decoders in a host process: longest a round trip to it (submit, tokenize) waits,
    /// in milliseconds. A host that does not answer in this time and then not a ping is
    /// hung and is killed (and started again); a submit alone that takes longer (a grammar
    /// compiling) fails alone. Not a flag: tests shorten it.
    pub gen_host_reply_ms: u64,
    /// Root of the compiled-model cache (the worker's `<cache-dir>/compiled`): OpenVINO
    /// stores the blobs it compiles there, per CPU class, and imports them on the next load
    /// of the same graph. `None`: every load compiles.
    pub compiled_cache: Option<std::path::PathBuf>,
    /// Encoders under `auto` in f32: serve on candle (ready in milliseconds) while the
    /// graph engine compiles, then move to it without dropping a request (`--fast-start`).
    pub fast_start: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_batch_tokens: 16384,
            max_batch_size: 32,
            forward_batch_size: 0,
            replicas: 0,
            max_concurrent: 512,
            fill_wait_us: DEFAULT_FILL_WAIT_US,
            tokenizer_threads: std::thread::available_parallelism()
                .map(|n| n.get().min(4))
                .unwrap_or(1),
            engine: EnginePreference::Auto,
            precision: Precision::F32,
            memory_available_bytes: None,
            gen_slots: hub_types::memory::DEFAULT_GEN_SLOTS as usize,
            gen_context: hub_types::memory::DEFAULT_GEN_CONTEXT as usize,
            gen_prefill_chunk: DEFAULT_GEN_PREFILL_CHUNK,
            gen_mixed_chunk: DEFAULT_GEN_MIXED_CHUNK,
            gen_prompt_cache_mib: DEFAULT_GEN_PROMPT_CACHE_MIB,
            gen_queue: DEFAULT_GEN_QUEUE,
            gen_threads: 0,
            gen_grammar_token_ms: DEFAULT_GEN_GRAMMAR_TOKEN_MS,
            gen_grammar_request_ms: DEFAULT_GEN_GRAMMAR_REQUEST_MS,
            gen_host_reply_ms: 60_000,
            compiled_cache: None,
            fast_start: false,
        }
    }
}

/// Options of an embedding request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbedOptions {
    /// L2-normalise; `None` follows the model (sentence-transformers `Normalize`).
    pub normalize: Option<bool>,
    /// Cut inputs over the model's limit (default) instead of failing.
    pub truncate: bool,
    /// Keep only the first N dimensions (Matryoshka), re-normalised when normalising.
    pub dimensions: Option<usize>,
}

impl Default for EmbedOptions {
    fn default() -> Self {
        EmbedOptions {
            normalize: None,
            truncate: true,
            dimensions: None,
        }
    }
}

/// Options of a classification request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassifyOptions {
    /// `softmax`, `sigmoid` or `none`; `None` follows the config's `problem_type`.
    pub score_fn: Option<ScoreFn>,
    /// Keep the best N labels; `None` keeps all.
    pub top_k: Option<usize>,
    pub truncate: bool,
}

impl Default for ClassifyOptions {
    fn default() -> Self {
        ClassifyOptions {
            score_fn: None,
            top_k: None,
            truncate: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_preference_parses_the_cli_spellings_only() {
        for (s, want) in [
            ("auto", EnginePreference::Auto),
            ("candle", EnginePreference::Candle),
            ("ort", EnginePreference::Ort),
            ("openvino", EnginePreference::OpenVino),
        ] {
            assert_eq!(s.parse::<EnginePreference>(), Ok(want));
            assert_eq!(want.to_string(), s, "Display round-trips");
        }
        let err = "open-vino".parse::<EnginePreference>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown engine \"open-vino\": expected one of auto, candle, ort, openvino"
        );
        assert!(
            "Candle".parse::<EnginePreference>().is_err(),
            "exact spelling"
        );
    }
}
