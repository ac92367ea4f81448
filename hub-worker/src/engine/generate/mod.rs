//! The generation family: decoder LLMs that continue a prompt token by token.
//!
//! One interface, several engines. A [`Generator`] is a loaded decoder with its own
//! scheduler (llama.cpp through `llama-cpp-2` with N sequence slots and continuous
//! batching; candle as the pure-Rust fallback); [`DecoderModel`] is the cheap-to-clone
//! handle the registry and the HTTP routes hold. A request is a [`GenerateRequest`]
//! (prompt, limits, sampling, constraint); its answer is a [`GenStream`] of
//! [`GenEvent`]s: one [`GenToken`] per sampled token, then exactly one
//! [`GenEvent::Done`] (or [`GenEvent::Failed`]).
//!
//! Rules every engine keeps:
//!
//! * [`Generator::submit`] tokenizes the prompt and refuses at once what can never run:
//!   a prompt that does not fit the context ([`EngineError::ContextLengthExceeded`],
//!   never a silent truncation) and a full queue ([`EngineError::Overloaded`], 429 with
//!   Retry-After).
//! * Stop strings and end-of-generation tokens end the sequence in the engine (the slot
//!   is freed in the same step); text that might be the start of a stop string is held
//!   back until it is known not to be ([`stop::StopScan`]).
//! * Dropping the [`GenStream`] cancels the request: the scheduler checks every step
//!   whether the receiver is gone and frees the slot.
//! * `usage` in [`Finish`] counts the prompt's tokens as the engine tokenized them and
//!   every sampled token (the stop string's tokens included, as OpenAI counts).

pub mod candle;
#[cfg(feature = "engine-llama")]
pub mod llama;
pub mod sandbox;
pub mod schema_grammar;
pub mod stop;
pub mod template;
pub mod tools;

use super::error::EngineError;
use super::model::ModelInfo;
use std::sync::{Arc, OnceLock};
use template::ChatTemplate;

/// What a loaded decoder is, for `/v1/models`, chat templates and limits.
#[derive(Debug, Clone)]
pub struct DecoderInfo {
    /// The architecture as the weights name it (`gemma3`, `llama`, `qwen3`, ...).
    pub architecture: String,
    /// `llama.cpp` or `candle`.
    pub engine: &'static str,
    /// Tokens one sequence may hold (prompt + completion): the per-slot context.
    pub context_length: usize,
    /// The context the model was trained with (GGUF `*.context_length`, config.json
    /// `max_position_embeddings`).
    pub train_context_length: usize,
    /// Sequences decoded together.
    pub slots: usize,
    pub vocab_size: usize,
    /// The chat template source (Jinja), resolved at load by
    /// [`template::repo_templates`] (`chat_template.jinja`, then `tokenizer_config.json`
    /// `chat_template`: a string, or the `default` of a list of named templates), then
    /// the GGUF metadata `tokenizer.chat_template`. `None`: chat requests answer 400
    /// `no_chat_template`.
    pub chat_template: Option<String>,
    /// The `tool_use` template of a list of named templates: used instead of
    /// `chat_template` for requests with tools, as transformers does.
    pub tool_use_template: Option<String>,
    /// Special-token strings templates use.
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
}

/// Point-in-time load of a decoder, for heartbeats and the worker's metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DecoderStats {
    /// Slots holding a running sequence.
    pub active_slots: u32,
    /// Requests accepted and waiting for a slot.
    pub queued: u32,
    /// Requests cancelled because the client went away (since load).
    pub cancelled_total: u64,
    pub prompt_tokens_total: u64,
    /// Prompt tokens served from a slot's cached prefix instead of computed.
    pub cached_prompt_tokens_total: u64,
    pub generated_tokens_total: u64,
    /// Sequences held by the host-memory prompt cache, and their bytes.
    pub prompt_cache_entries: u64,
    pub prompt_cache_bytes: u64,
    /// Sequences restored from the prompt cache (since load).
    pub prompt_cache_hits_total: u64,
    /// Requests failed because their grammar took longer than `--gen-grammar-token-ms`
    /// for one token (since load).
    pub grammar_timeouts_total: u64,
    /// Grammar threads, in this whole process, still computing for requests that went
    /// away (at most a few: beyond them constrained requests are refused).
    pub grammar_threads_abandoned: u32,
}

/// The prompt of a request.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Prompt {
    /// Text the engine tokenizes. `add_special`: prepend BOS (and whatever the model's
    /// tokenizer adds) — `true` for raw completions, `false` for rendered chat templates
    /// (which write their own BOS). Special-token text (`<start_of_turn>`) is always
    /// parsed as the special token.
    Text { text: String, add_special: bool },
    /// Token ids, as given.
    Tokens(Vec<u32>),
}

/// Sampling knobs, with OpenAI's defaults. `temperature == 0` is greedy (argmax), and
/// then the other knobs do not matter.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SamplingParams {
    pub temperature: f32,
    /// Nucleus sampling; 1.0 = off.
    pub top_p: f32,
    /// 0 = off.
    pub top_k: u32,
    /// 0.0 = off.
    pub min_p: f32,
    /// Seeds the request's RNG; `None`: a random seed.
    pub seed: Option<u64>,
    /// OpenAI's penalties, -2.0..=2.0.
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    /// HF/TGI's multiplicative penalty; 1.0 = off.
    pub repetition_penalty: f32,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            seed: None,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            repetition_penalty: 1.0,
        }
    }
}

impl SamplingParams {
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0
    }
}

/// What the sampled text must match, enforced by the engine (a grammar masks every
/// token that would leave the language), not checked afterwards.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub enum Constraint {
    #[default]
    None,
    /// Any JSON object (`response_format: {"type": "json_object"}`).
    JsonObject,
    /// JSON valid against this JSON Schema (`response_format: json_schema`, tools with
    /// `tool_choice: required` or a named function), as JSON text in the client's key
    /// order: the grammar generates an object's properties in the order the schema
    /// declares them, so the schema is never round-tripped through a key-sorting
    /// `serde_json::Value`.
    JsonSchema(String),
    /// A GBNF grammar with root rule `root`.
    Grammar(String),
}

/// One generation request.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GenerateRequest {
    pub prompt: Prompt,
    /// Most tokens to generate; `None`: until the context is full (finish `length`).
    pub max_tokens: Option<usize>,
    /// Strings that end the generation; the matched string is not part of the text.
    pub stop: Vec<String>,
    pub sampling: SamplingParams,
    pub constraint: Constraint,
    /// `Some(k)`: report each sampled token's log-probability and the `k` most likely
    /// alternatives (0..=20). `None`: no log-probabilities.
    pub logprobs: Option<usize>,
    /// Keep generating past end-of-generation tokens (HF `ignore_eos`-style benches).
    pub ignore_eos: bool,
}

impl GenerateRequest {
    /// A request with default sampling and no limits but the context.
    pub fn new(prompt: Prompt) -> GenerateRequest {
        GenerateRequest {
            prompt,
            max_tokens: None,
            stop: Vec::new(),
            sampling: SamplingParams::default(),
            constraint: Constraint::None,
            logprobs: None,
            ignore_eos: false,
        }
    }
}

/// A candidate token with its log-probability.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TokenLogprob {
    pub id: u32,
    /// The token's text (lossy if it is part of a multi-byte character).
    pub text: String,
    /// Its bytes, for OpenAI's `bytes` field.
    pub bytes: Vec<u8>,
    pub logprob: f32,
}

/// One sampled token.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GenToken {
    pub id: u32,
    /// The text this token releases to the client: may be empty (an incomplete UTF-8
    /// sequence, or text held back as a possible stop-string start) or longer than the
    /// token (held-back text released).
    pub text: String,
    /// This token's own log-probability and the top alternatives (when asked).
    pub logprob: Option<TokenLogprob>,
    pub top_logprobs: Vec<TokenLogprob>,
}

/// Why a sequence ended (OpenAI's `finish_reason`; `tool_calls` is decided by the API
/// layer from the text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum FinishReason {
    /// An end-of-generation token or a stop string.
    Stop,
    /// `max_tokens` reached, or the context is full.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// Tokens a request cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Prompt tokens reused from a slot's KV cache (OpenAI's `cached_tokens`).
    pub cached_tokens: usize,
}

/// How a sequence ended.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Finish {
    pub reason: FinishReason,
    pub usage: Usage,
    /// The stop string that ended it, if one did (TGI's `stop_sequence`).
    pub stop_string: Option<String>,
    /// Text still held back when the sequence ended (a stop-string prefix that never
    /// completed): the client gets it before the end.
    pub tail: String,
}

/// One event of a running request.
#[derive(Debug, Clone, PartialEq)]
pub enum GenEvent {
    Token(GenToken),
    Done(Finish),
    /// The engine failed mid-sequence (the stream ends here).
    Failed(EngineError),
}

/// The answer to a submitted request. Dropping it cancels the request within a step.
pub struct GenStream {
    /// Prompt tokens, known at submit time (for metering headers before the stream).
    pub prompt_tokens: usize,
    pub rx: tokio::sync::mpsc::UnboundedReceiver<GenEvent>,
}

impl GenStream {
    /// The next event; `None` once the engine dropped its end (after `Done`/`Failed`,
    /// or because the model shut down).
    pub async fn next(&mut self) -> Option<GenEvent> {
        self.rx.recv().await
    }
}

/// A loaded decoder with its scheduler: what each generation engine implements.
pub trait Generator: Send + Sync {
    fn info(&self) -> &DecoderInfo;
    fn stats(&self) -> DecoderStats;
    /// Why the generator can no longer serve, once it cannot (a decoder host that
    /// could not be started again); `None` while it serves.
    fn failure(&self) -> Option<String> {
        None
    }
    /// Token ids of `text` as [`Prompt::Text`] would tokenize it.
    fn tokenize(&self, text: &str, add_special: bool) -> Result<Vec<u32>, EngineError>;
    /// Text of `ids` (special tokens rendered).
    fn detokenize(&self, ids: &[u32]) -> Result<String, EngineError>;
    /// Queues a request (see the module rules). Never blocks on the model.
    fn submit(&self, req: GenerateRequest) -> Result<GenStream, EngineError>;
}

/// A loaded decoder: the handle [`super::Model::Decoder`] holds. Cheap to clone; the
/// engine's threads stop when the last clone is dropped.
#[derive(Clone)]
pub struct DecoderModel {
    info: Arc<ModelInfo>,
    engine: Arc<dyn Generator>,
    /// The chat template and the `tool_use` one, each compiled on first use (once per
    /// loaded model).
    template: Arc<OnceLock<Result<Arc<ChatTemplate>, EngineError>>>,
    tool_use_template: Arc<OnceLock<Result<Arc<ChatTemplate>, EngineError>>>,
    /// Dropped with the last clone (`keep_alive`: the cache pin on its files).
    kept: Arc<std::sync::Mutex<Vec<Box<dyn Send + Sync>>>>,
}

impl DecoderModel {
    /// Wraps an engine; `info` is what the registry and heartbeats show.
    pub fn new(info: ModelInfo, engine: Arc<dyn Generator>) -> DecoderModel {
        if engine.info().chat_template.is_some() {
            sandbox::prestart();
        }
        DecoderModel {
            info: Arc::new(info),
            engine,
            template: Arc::default(),
            tool_use_template: Arc::default(),
            kept: Arc::default(),
        }
    }

    /// Keeps `item` until the last clone of this model is dropped.
    pub fn keep_alive(&self, item: Box<dyn Send + Sync>) {
        self.kept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(item);
    }

    /// The model's chat template for a request with (`with_tools`) or without tools,
    /// compiled once: the `tool_use` template when the repo names one and the request has
    /// tools, else the default ([`EngineError::NoChatTemplate`] when there is none,
    /// [`EngineError::Template`] when it does not compile). Blocking on first use: call
    /// it off the async workers.
    pub fn chat_template(&self, with_tools: bool) -> Result<Arc<ChatTemplate>, EngineError> {
        let info = self.engine.info();
        let (cell, source) = match (&info.tool_use_template, with_tools) {
            (Some(tool_use), true) => (&self.tool_use_template, Some(tool_use)),
            _ => (&self.template, info.chat_template.as_ref()),
        };
        cell.get_or_init(|| {
            let source = source.ok_or(EngineError::NoChatTemplate)?;
            ChatTemplate::new(source, info.bos_token.as_deref(), info.eos_token.as_deref())
                .map(Arc::new)
        })
        .clone()
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn decoder_info(&self) -> &DecoderInfo {
        self.engine.info()
    }

    pub fn stats(&self) -> DecoderStats {
        self.engine.stats()
    }

    /// Why the model can no longer serve ([`Generator::failure`]).
    pub fn failure(&self) -> Option<String> {
        self.engine.failure()
    }

    pub fn tokenize(&self, text: &str, add_special: bool) -> Result<Vec<u32>, EngineError> {
        self.engine.tokenize(text, add_special)
    }

    pub fn detokenize(&self, ids: &[u32]) -> Result<String, EngineError> {
        self.engine.detokenize(ids)
    }

    pub fn submit(&self, req: GenerateRequest) -> Result<GenStream, EngineError> {
        self.engine.submit(req)
    }
}
