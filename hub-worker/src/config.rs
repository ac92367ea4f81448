//! Worker configuration: one clap struct; every field has a flag, an environment
//! variable and a doc comment (`hub-worker --help` is the reference).

use crate::engine::{EngineConfig, EnginePreference};
use clap::Parser;
use std::path::PathBuf;

/// Paddock inference worker: registers with a hub, pulls assigned models through the
/// hub's HF-compatible API and serves them over HTTP.
#[derive(Clone, Parser)]
#[command(name = "hub-worker", version, about, long_about = None)]
pub struct WorkerConfig {
    /// Base URL of the hub (hub-api), e.g. http://127.0.0.1:8080.
    #[arg(long, env = "HUB_WORKER_HUB_URL")]
    pub hub_url: String,

    /// Hub API token with scope `worker`.
    #[arg(long, env = "HUB_WORKER_TOKEN", hide_env_values = true)]
    pub token: String,

    /// Address the inference API listens on (port 0 picks a free port).
    #[arg(long, env = "HUB_WORKER_BIND", default_value = "127.0.0.1:0")]
    pub bind: String,

    /// Directory of the content-addressed model cache (shared by all models).
    #[arg(
        long,
        env = "HUB_WORKER_CACHE_DIR",
        default_value = "paddock-worker-cache"
    )]
    pub cache_dir: PathBuf,

    /// Most GiB the cache directory may hold (weights, model directories, compiled
    /// models, the fetched runtime; fractions allowed). A pull that would pass it first
    /// evicts the least recently used content no loaded or loading model uses, and fails
    /// with the reason when even that is not enough. Default: no budget (the free-space
    /// floor below still holds).
    #[arg(long, env = "HUB_WORKER_CACHE_MAX_GIB")]
    pub cache_max_gib: Option<f64>,

    /// GiB a pull leaves free on the file system holding the cache directory, evicting
    /// as for --cache-max-gib. Default: 5 GiB or 10% of the file system, whichever is
    /// smaller. 0: no floor.
    #[arg(long, env = "HUB_WORKER_CACHE_MIN_FREE_GIB")]
    pub cache_min_free_gib: Option<f64>,

    /// Compute threads for inference (default: the cores this process may use).
    #[arg(long, env = "HUB_WORKER_THREADS")]
    pub threads: Option<usize>,

    /// Name reported to the hub (default: the host name).
    #[arg(long, env = "HUB_WORKER_NAME")]
    pub name: Option<String>,

    /// Base URL where the hub's gateway reaches this worker (default: http://<bound address>).
    #[arg(long, env = "HUB_WORKER_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// HTTP server threads.
    #[arg(long, env = "HUB_WORKER_HTTP_THREADS", default_value_t = 2)]
    pub http_threads: usize,

    /// Tokenizer threads per loaded model (default: cores, at most 4).
    #[arg(long, env = "HUB_WORKER_TOKENIZER_THREADS")]
    pub tokenizer_threads: Option<usize>,

    /// Token budget of one forward pass (padding counted) unless an assignment says otherwise.
    #[arg(long, env = "HUB_WORKER_MAX_BATCH_TOKENS", default_value_t = 16384)]
    pub max_batch_tokens: usize,

    /// Inputs taken from a model's queue at once; they are sorted by length and run in
    /// forward passes of `--forward-batch-size`.
    #[arg(long, env = "HUB_WORKER_MAX_BATCH_SIZE", default_value_t = 32)]
    pub max_batch_size: usize,

    /// Inputs per forward pass (0: the engine's preference, 4 for ort and 8 for candle).
    #[arg(long, env = "HUB_WORKER_FORWARD_BATCH_SIZE", default_value_t = 0)]
    pub forward_batch_size: usize,

    /// Engine instances per model, sharing the compute threads (0: automatic, one
    /// single-threaded ONNX Runtime session per thread for models under 512 MiB; candle: 1).
    #[arg(long, env = "HUB_WORKER_REPLICAS", default_value_t = 0)]
    pub replicas: usize,

    /// Inputs admitted per model at once (queued or running); beyond it requests get 429.
    #[arg(long, env = "HUB_WORKER_MAX_CONCURRENT", default_value_t = 512)]
    pub max_concurrent: usize,

    /// Longest an encoder's short batch waits for concurrent clients' inputs, in
    /// microseconds (0: never; a lone sequential client never waits).
    #[arg(long, env = "HUB_WORKER_FILL_WAIT_US", default_value_t = crate::engine::DEFAULT_FILL_WAIT_US)]
    pub fill_wait_us: u64,

    /// Engine: auto (the fastest available: OpenVINO, then ONNX Runtime, then candle),
    /// candle, ort or openvino.
    #[arg(long, env = "HUB_WORKER_ENGINE", value_enum, default_value_t = EnginePreference::Auto)]
    pub engine: EnginePreference,

    /// libopenvino_c.so, or the directory holding it, for the openvino engine (builds
    /// with the engine-openvino feature; scripts/worker/fetch-openvino.sh fetches one).
    #[arg(long, env = "PADDOCK_OPENVINO_LIB")]
    pub openvino_lib: Option<PathBuf>,

    /// libonnxruntime.so for the ort engine (builds with the engine-ort feature).
    #[arg(long, env = "ORT_DYLIB_PATH")]
    pub ort_dylib: Option<PathBuf>,

    /// Let ONNX Runtime's idle intra-op threads spin (faster on a dedicated, quiet machine;
    /// off by default so idle threads leave the cores to tokenizers and HTTP).
    #[arg(long, env = "HUB_WORKER_ORT_SPINNING", default_value_t = false)]
    pub ort_spinning: bool,

    /// Encoders: answer the first requests on candle (ready at once) while the faster graph
    /// engine (OpenVINO, ONNX Runtime) compiles, then switch to it without dropping a
    /// request. Only under --engine auto and f32. 0/false: wait for the graph engine.
    #[arg(long, env = "HUB_WORKER_FAST_START", default_value_t = true, action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub fast_start: bool,

    /// Fetch the OpenVINO runtime from its pinned PyPI wheel into `<cache-dir>/runtimes/` on
    /// first use, when --engine is auto or openvino and no --openvino-lib is set (linux
    /// x86_64; sha256 checked; falls back to the next engine when it fails). 0/false: off.
    #[arg(long, env = "HUB_WORKER_FETCH_RUNTIME", default_value_t = true, action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub fetch_runtime: bool,

    /// Base URL serving the pinned runtime wheel under its PyPI file name, used instead of
    /// PyPI (air-gapped sites).
    #[arg(long, env = "PADDOCK_RUNTIME_MIRROR")]
    pub runtime_mirror: Option<String>,

    /// Sequences a decoder (LLM) generates at once, each with its own KV cache slot.
    #[arg(long, env = "HUB_WORKER_GEN_SLOTS", default_value_t = hub_types::memory::DEFAULT_GEN_SLOTS as usize)]
    pub gen_slots: usize,

    /// Tokens one generated sequence may hold (prompt + completion); capped at the
    /// model's training context. The KV cache holds slots × this many tokens.
    #[arg(long, env = "HUB_WORKER_GEN_CONTEXT", default_value_t = hub_types::memory::DEFAULT_GEN_CONTEXT as usize)]
    pub gen_context: usize,

    /// Prompt tokens a decoder computes per prompt in a step where no stream generates (a
    /// burst of prompts is computed together; a longer prompt takes several steps).
    #[arg(long, env = "HUB_WORKER_GEN_PREFILL_CHUNK", default_value_t = crate::engine::options::DEFAULT_GEN_PREFILL_CHUNK)]
    pub gen_prefill_chunk: usize,

    /// Most prompt tokens a decoder computes in a step next to generating streams (they
    /// wait for that step's compute; at most --gen-prefill-chunk).
    #[arg(long, env = "HUB_WORKER_GEN_MIXED_CHUNK", default_value_t = crate::engine::options::DEFAULT_GEN_MIXED_CHUNK)]
    pub gen_mixed_chunk: usize,

    /// MiB of host memory per decoder for the prompt cache: a finished sequence whose slot
    /// is taken by another prompt is saved there (least recently used out first) and
    /// restored when its conversation comes back. 0: off.
    #[arg(long, env = "HUB_WORKER_GEN_PROMPT_CACHE_MIB", default_value_t = crate::engine::options::DEFAULT_GEN_PROMPT_CACHE_MIB)]
    pub gen_prompt_cache_mib: usize,

    /// Generation requests waiting for a free slot per model; beyond it requests get 429.
    #[arg(long, env = "HUB_WORKER_GEN_QUEUE", default_value_t = crate::engine::options::DEFAULT_GEN_QUEUE)]
    pub gen_queue: usize,

    /// llama.cpp compute threads per decoder (default: the physical cores this process may use).
    #[arg(long, env = "HUB_WORKER_GEN_THREADS")]
    pub gen_threads: Option<usize>,

    /// Longest a grammar (response_format json_object / json_schema, a forced tool call)
    /// may take to choose one token before its request fails as too costly to enforce (ms).
    #[arg(long, env = "HUB_WORKER_GEN_GRAMMAR_TOKEN_MS", default_value_t = crate::engine::options::DEFAULT_GEN_GRAMMAR_TOKEN_MS)]
    pub gen_grammar_token_ms: u64,

    /// Most time a grammar may take for all of one request's tokens before the request
    /// fails as too costly to enforce (ms).
    #[arg(long, env = "HUB_WORKER_GEN_GRAMMAR_REQUEST_MS", default_value_t = crate::engine::options::DEFAULT_GEN_GRAMMAR_REQUEST_MS)]
    pub gen_grammar_request_ms: u64,

    /// Long-poll wait asked of the hub, in seconds.
    #[arg(long, env = "HUB_WORKER_POLL_WAIT_S", default_value_t = 25)]
    pub poll_wait_s: u64,

    /// Run the fine-tuning jobs the hub queues (one at a time, on the compute
    /// threads; `false` leaves them to other workers).
    #[arg(long, env = "HUB_WORKER_JOBS", default_value_t = true, action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub jobs: bool,

    /// Log format of the `hub-worker` binary: text or json (`RUST_LOG` filters).
    #[arg(long, env = "HUB_WORKER_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,

    /// Milliseconds a log line below warning of the `hub-worker` binary may
    /// wait to be written with the lines after it, in one write; warnings and
    /// errors are written at once, and a clean exit writes everything. 0 writes
    /// each line as it is made (the default).
    #[arg(long, env = "HUB_WORKER_LOG_FLUSH_MS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub log_flush_ms: u64,

    /// Base URL of an OpenTelemetry collector's OTLP/HTTP receiver (such as
    /// http://otel-collector:4318): the `hub-worker` binary exports each
    /// request's span, with the gateway's request id, to its /v1/traces. Unset:
    /// no export. (A hub's in-process worker shares the hub's `--otlp-endpoint`.)
    #[arg(long, env = "HUB_WORKER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// Mints a fresh control-plane token when the hub rejects the current one
    /// (set by a hub running this worker in-process; not a flag).
    #[arg(skip)]
    pub token_refresh: Option<crate::control::TokenRefresh>,
}

impl std::fmt::Debug for WorkerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerConfig")
            .field("hub_url", &self.hub_url)
            .field("token", &"<redacted>")
            .field("bind", &self.bind)
            .field("cache_dir", &self.cache_dir)
            .field("cache_max_gib", &self.cache_max_gib)
            .field("cache_min_free_gib", &self.cache_min_free_gib)
            .field("threads", &self.threads)
            .field("name", &self.name)
            .field("public_url", &self.public_url)
            .field("http_threads", &self.http_threads)
            .field("tokenizer_threads", &self.tokenizer_threads)
            .field("max_batch_tokens", &self.max_batch_tokens)
            .field("max_batch_size", &self.max_batch_size)
            .field("forward_batch_size", &self.forward_batch_size)
            .field("replicas", &self.replicas)
            .field("max_concurrent", &self.max_concurrent)
            .field("fill_wait_us", &self.fill_wait_us)
            .field("engine", &self.engine)
            .field("ort_dylib", &self.ort_dylib)
            .field("ort_spinning", &self.ort_spinning)
            .field("openvino_lib", &self.openvino_lib)
            .field("fast_start", &self.fast_start)
            .field("fetch_runtime", &self.fetch_runtime)
            .field("runtime_mirror", &self.runtime_mirror)
            .field("gen_slots", &self.gen_slots)
            .field("gen_context", &self.gen_context)
            .field("gen_prefill_chunk", &self.gen_prefill_chunk)
            .field("gen_mixed_chunk", &self.gen_mixed_chunk)
            .field("gen_prompt_cache_mib", &self.gen_prompt_cache_mib)
            .field("gen_queue", &self.gen_queue)
            .field("gen_threads", &self.gen_threads)
            .field("gen_grammar_token_ms", &self.gen_grammar_token_ms)
            .field("gen_grammar_request_ms", &self.gen_grammar_request_ms)
            .field("poll_wait_s", &self.poll_wait_s)
            .field("jobs", &self.jobs)
            .field("token_refresh", &self.token_refresh.is_some())
            .field("log_format", &self.log_format)
            .field("log_flush_ms", &self.log_flush_ms)
            .finish()
    }
}

impl WorkerConfig {
    /// A configuration with every default (as `--help` lists them), for running a worker
    /// in-process: `WorkerConfig::new(hub_url, token)` then adjust fields. The runtime
    /// fetch and fast start settings follow their environment variables
    /// (`HUB_WORKER_FETCH_RUNTIME`, `PADDOCK_RUNTIME_MIRROR`, `HUB_WORKER_FAST_START`), so an
    /// in-process worker honours them as `hub-worker` does.
    pub fn new(hub_url: &str, token: &str) -> WorkerConfig {
        WorkerConfig {
            hub_url: hub_url.to_string(),
            token: token.to_string(),
            bind: "127.0.0.1:0".to_string(),
            cache_dir: PathBuf::from("paddock-worker-cache"),
            cache_max_gib: None,
            cache_min_free_gib: None,
            threads: None,
            name: None,
            public_url: None,
            http_threads: 2,
            tokenizer_threads: None,
            max_batch_tokens: 16384,
            max_batch_size: 32,
            forward_batch_size: 0,
            replicas: 0,
            max_concurrent: 512,
            fill_wait_us: crate::engine::DEFAULT_FILL_WAIT_US,
            engine: EnginePreference::Auto,
            ort_dylib: None,
            ort_spinning: false,
            openvino_lib: None,
            fast_start: std::env::var("HUB_WORKER_FAST_START").map_or(true, |v| {
                !matches!(
                    v.trim().to_ascii_lowercase().as_str(),
                    "0" | "false" | "no" | "off" | "n" | "f"
                )
            }),
            fetch_runtime: crate::runtime_fetch::enabled_in_env(),
            runtime_mirror: std::env::var(crate::runtime_fetch::MIRROR_ENV)
                .ok()
                .filter(|v| !v.is_empty()),
            gen_slots: hub_types::memory::DEFAULT_GEN_SLOTS as usize,
            gen_context: hub_types::memory::DEFAULT_GEN_CONTEXT as usize,
            gen_prefill_chunk: crate::engine::options::DEFAULT_GEN_PREFILL_CHUNK,
            gen_mixed_chunk: crate::engine::options::DEFAULT_GEN_MIXED_CHUNK,
            gen_prompt_cache_mib: crate::engine::options::DEFAULT_GEN_PROMPT_CACHE_MIB,
            gen_queue: crate::engine::options::DEFAULT_GEN_QUEUE,
            gen_threads: None,
            gen_grammar_token_ms: crate::engine::options::DEFAULT_GEN_GRAMMAR_TOKEN_MS,
            gen_grammar_request_ms: crate::engine::options::DEFAULT_GEN_GRAMMAR_REQUEST_MS,
            log_format: "text".to_string(),
            log_flush_ms: 0,
            otlp_endpoint: None,
            poll_wait_s: 25,
            jobs: true,
            token_refresh: None,
        }
    }

    /// Checks values that clap cannot; the message says what to change.
    pub fn validate(&self) -> anyhow::Result<()> {
        let url = url::Url::parse(&self.hub_url).map_err(|e| {
            anyhow::anyhow!(
                "--hub-url {:?} is not a URL ({e}); e.g. http://127.0.0.1:8080",
                self.hub_url
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            anyhow::bail!(
                "--hub-url must be http:// or https://, got {:?}",
                self.hub_url
            );
        }
        if self.token.trim().is_empty() {
            anyhow::bail!("--token / HUB_WORKER_TOKEN is empty: create a token with scope `worker` on the hub");
        }
        if let Some(p) = &self.public_url {
            url::Url::parse(p)
                .map_err(|e| anyhow::anyhow!("--public-url {p:?} is not a URL ({e})"))?;
        }
        if let Some(feature) = crate::engine::select::missing_feature(self.engine) {
            anyhow::bail!(
                "--engine {}: this worker was built without the {feature} feature",
                self.engine
            );
        }
        if let Some(m) = &self.runtime_mirror {
            let ok = url::Url::parse(m).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
            if !ok {
                anyhow::bail!(
                    "--runtime-mirror / PADDOCK_RUNTIME_MIRROR {m:?} is not an http(s) base URL"
                );
            }
        }
        if let Some(g) = self.cache_max_gib {
            if !(g.is_finite() && g > 0.0) {
                anyhow::bail!(
                    "--cache-max-gib / HUB_WORKER_CACHE_MAX_GIB must be a positive number of GiB \
                     (leave it unset for no budget), got {g}"
                );
            }
        }
        if let Some(g) = self.cache_min_free_gib {
            if !(g.is_finite() && g >= 0.0) {
                anyhow::bail!(
                    "--cache-min-free-gib / HUB_WORKER_CACHE_MIN_FREE_GIB must be 0 or more GiB, got {g}"
                );
            }
        }
        if self.threads == Some(0) {
            anyhow::bail!("--threads must be at least 1");
        }
        if self.gen_slots == 0
            || self.gen_context < 16
            || self.gen_prefill_chunk == 0
            || self.gen_mixed_chunk == 0
            || self.gen_queue == 0
            || self.gen_threads == Some(0)
            || self.gen_grammar_token_ms == 0
            || self.gen_grammar_request_ms == 0
        {
            anyhow::bail!(
                "--gen-slots, --gen-prefill-chunk, --gen-mixed-chunk, --gen-queue, \
                 --gen-threads, --gen-grammar-token-ms and --gen-grammar-request-ms must be at \
                 least 1, --gen-context at least 16"
            );
        }
        if self.max_batch_size == 0 || self.max_concurrent == 0 || self.max_batch_tokens == 0 {
            anyhow::bail!(
                "--max-batch-size, --max-concurrent and --max-batch-tokens must be at least 1"
            );
        }
        Ok(())
    }

    /// `HUB_WORKER_CACHE_MAX_GIB` and `HUB_WORKER_CACHE_MIN_FREE_GIB` into this
    /// configuration, for a host that reads the variables itself (hub-api's in-process
    /// worker); a value that is not a number is an error naming the variable.
    pub fn cache_limits_from_env(&mut self) -> anyhow::Result<()> {
        let gib = |name: &str| -> anyhow::Result<Option<f64>> {
            match std::env::var(name) {
                Ok(v) if !v.trim().is_empty() => v
                    .trim()
                    .parse::<f64>()
                    .map(Some)
                    .map_err(|e| anyhow::anyhow!("{name}={v:?}: not a number of GiB ({e})")),
                _ => Ok(None),
            }
        };
        if let Some(g) = gib("HUB_WORKER_CACHE_MAX_GIB")? {
            self.cache_max_gib = Some(g);
        }
        if let Some(g) = gib("HUB_WORKER_CACHE_MIN_FREE_GIB")? {
            self.cache_min_free_gib = Some(g);
        }
        Ok(())
    }

    /// The model cache's limits from `--cache-max-gib` and `--cache-min-free-gib`.
    pub fn cache_limits(&self) -> crate::pull::cache::CacheLimits {
        let bytes = |gib: f64| (gib * (1u64 << 30) as f64) as u64;
        crate::pull::cache::CacheLimits {
            max_bytes: self.cache_max_gib.map(bytes),
            min_free: match self.cache_min_free_gib {
                None => crate::pull::cache::MinFree::Auto,
                Some(g) => crate::pull::cache::MinFree::Bytes(bytes(g)),
            },
        }
    }

    /// Compute threads to use.
    pub fn compute_threads(&self) -> usize {
        self.threads.unwrap_or_else(crate::host::cores)
    }

    /// Where the worker fetches its engine runtime (`None`: the fetch is off).
    pub fn runtime_fetch(&self) -> Option<crate::runtime_fetch::FetchSettings> {
        self.fetch_runtime
            .then(|| crate::runtime_fetch::FetchSettings {
                cache_dir: self.cache_dir.clone(),
                mirror: self.runtime_mirror.clone(),
                budget: crate::runtime_fetch::BUDGET,
            })
    }

    /// Engine defaults derived from the flags.
    pub fn engine_config(&self) -> EngineConfig {
        let mut e = EngineConfig {
            max_batch_tokens: self.max_batch_tokens,
            max_batch_size: self.max_batch_size,
            forward_batch_size: self.forward_batch_size,
            replicas: self.replicas,
            max_concurrent: self.max_concurrent,
            fill_wait_us: self.fill_wait_us,
            engine: self.engine,
            gen_slots: self.gen_slots,
            gen_context: self.gen_context,
            gen_prefill_chunk: self.gen_prefill_chunk,
            gen_mixed_chunk: self.gen_mixed_chunk,
            gen_prompt_cache_mib: self.gen_prompt_cache_mib,
            gen_queue: self.gen_queue,
            gen_threads: self.gen_threads.unwrap_or(0),
            gen_grammar_token_ms: self.gen_grammar_token_ms,
            gen_grammar_request_ms: self.gen_grammar_request_ms,
            compiled_cache: Some(self.cache_dir.join("compiled")),
            fast_start: self.fast_start,
            ..EngineConfig::default()
        };
        if let Some(t) = self.tokenizer_threads {
            e.tokenizer_threads = t.max(1);
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_redacted_and_defaults_match_clap() {
        let c = WorkerConfig::new("http://h", "secret-token");
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("secret-token"), "{dbg}");
        assert!(dbg.contains("<redacted>"));
        let parsed =
            WorkerConfig::try_parse_from(["hub-worker", "--hub-url", "http://h", "--token", "t"])
                .unwrap();
        // Environment variables could override defaults; compare only when none of the
        // variables clap reads is set (read from the command, so a new `env = ...` counts).
        use clap::CommandFactory;
        let cmd = WorkerConfig::command();
        let set: Vec<String> = cmd
            .get_arguments()
            .filter_map(|a| a.get_env())
            .map(|e| e.to_string_lossy().into_owned())
            .filter(|e| std::env::var_os(e).is_some())
            .collect();
        if set.is_empty() {
            let mut expect = WorkerConfig::new("http://h", "t");
            expect.token = parsed.token.clone();
            assert_eq!(format!("{parsed:?}"), format!("{expect:?}"));
        }
        assert!(WorkerConfig::new("nope", "t").validate().is_err());
        assert!(WorkerConfig::new("http://h", " ").validate().is_err());
        assert!(WorkerConfig::new("http://h", "t").validate().is_ok());
    }

    #[test]
    fn cache_limits_from_flags() {
        use crate::pull::cache::{CacheLimits, MinFree};
        let parse = |args: &[&str]| {
            let mut all = vec!["hub-worker", "--hub-url", "http://h", "--token", "t"];
            all.extend_from_slice(args);
            WorkerConfig::try_parse_from(all).unwrap()
        };
        let c = parse(&["--cache-max-gib", "1.5", "--cache-min-free-gib", "0"]);
        assert_eq!(
            c.cache_limits(),
            CacheLimits {
                max_bytes: Some(3 << 29),
                min_free: MinFree::Bytes(0),
            }
        );
        assert!(c.validate().is_ok());
        let mut c = WorkerConfig::new("http://h", "t");
        assert_eq!(c.cache_limits(), CacheLimits::default());
        assert_eq!(c.cache_limits().min_free, MinFree::Auto);
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            c.cache_max_gib = Some(bad);
            assert!(c.validate().is_err(), "{bad}");
        }
        c.cache_max_gib = None;
        c.cache_min_free_gib = Some(-0.5);
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("--cache-min-free-gib"), "{e}");
    }

    #[test]
    fn engine_is_a_value_enum_read_from_flag_or_env() {
        use clap::CommandFactory;
        let parse = |v: &str| {
            WorkerConfig::try_parse_from([
                "hub-worker",
                "--hub-url",
                "http://h",
                "--token",
                "t",
                "--engine",
                v,
            ])
        };
        assert_eq!(
            parse("openvino").unwrap().engine,
            EnginePreference::OpenVino
        );
        assert_eq!(parse("ort").unwrap().engine, EnginePreference::Ort);
        let err = parse("tensorrt").unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::InvalidValue);
        let msg = err.to_string();
        assert!(
            msg.contains("[possible values: auto, candle, ort, openvino]"),
            "{msg}"
        );
        let cmd = WorkerConfig::command();
        let arg = cmd.get_arguments().find(|a| a.get_id() == "engine");
        assert_eq!(
            arg.and_then(|a| a.get_env()),
            Some(std::ffi::OsStr::new("HUB_WORKER_ENGINE"))
        );
        // What an embedding host (hub-api's in-process worker) calls on the variable.
        assert_eq!("candle".parse(), Ok(EnginePreference::Candle));
    }

    #[test]
    fn an_engine_this_build_lacks_is_refused_at_start() {
        for engine in [EnginePreference::Ort, EnginePreference::OpenVino] {
            let mut c = WorkerConfig::new("http://h", "t");
            c.engine = engine;
            let feature = crate::engine::select::missing_feature(engine);
            match (c.validate(), feature) {
                (Ok(()), None) => {}
                (Err(e), Some(f)) => assert_eq!(
                    e.to_string(),
                    format!("--engine {engine}: this worker was built without the {f} feature")
                ),
                (r, f) => panic!("{engine}: {r:?} with missing feature {f:?}"),
            }
        }
    }
}
