//! In-process embedding throughput of the hub-worker engine (no HTTP), for
//! `scripts/worker/bench-embeddings.sh`.
//!
//! ```text
//! cargo run --release -p hub-worker --example bench-embeddings -- \
//!     --model DIR --corpus corpus.txt [--batches 1,4,32] [--repeats 3] [--engine candle|ort|openvino|openvino-bf16]
//! ```
//!
//! Two modes per batch size B, best of `--repeats` after one warm-up:
//! * `corpus`: the whole corpus in one call with at most B inputs per forward pass; the
//!   engine length-sorts, like `SentenceTransformer.encode(corpus, batch_size=B)`.
//! * `requests`: consecutive requests of B sentences in corpus order (what HTTP clients do).
//!
//! Prints one JSON object per line.
//!
//! With `--stdin`, loads one model per batch size and then runs one pass per input line
//! `MODE BATCH` (e.g. `corpus 32`), answering `{"seconds": s}` per line: the bench script
//! drives several engines this way in interleaved rounds, so a busy machine slows all of
//! them alike.

use hub_worker::engine::{EmbedOptions, EngineConfig, EnginePreference, Model, Precision};
use std::time::Instant;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let model_dir = arg(&args, "--model").ok_or_else(|| anyhow::anyhow!("--model DIR"))?;
    let corpus_path = arg(&args, "--corpus").ok_or_else(|| anyhow::anyhow!("--corpus FILE"))?;
    let batches: Vec<usize> = arg(&args, "--batches")
        .unwrap_or_else(|| "1,4,32".into())
        .split(',')
        .map(|b| b.trim().parse())
        .collect::<Result<_, _>>()?;
    let repeats: usize = arg(&args, "--repeats")
        .unwrap_or_else(|| "3".into())
        .parse()?;
    let (engine, precision) = match arg(&args, "--engine").as_deref() {
        Some("ort") => (EnginePreference::Ort, Precision::F32),
        Some("candle") => (EnginePreference::Candle, Precision::F32),
        Some("openvino") => (EnginePreference::OpenVino, Precision::F32),
        Some("openvino-bf16") => (EnginePreference::OpenVino, Precision::Bf16),
        _ => (EnginePreference::Auto, Precision::F32),
    };
    let choice = Choice { engine, precision };
    let threads = arg(&args, "--threads")
        .map(|t| t.parse::<usize>())
        .transpose()?
        .unwrap_or_else(hub_worker::host::cores);
    hub_worker::engine::threads::set_env_threads(threads);
    hub_worker::engine::threads::init_compute_threads(threads);
    #[cfg(feature = "engine-ort")]
    if engine != EnginePreference::Candle {
        let dylib = std::env::var_os("ORT_DYLIB_PATH").map(std::path::PathBuf::from);
        if std::env::var("HUB_WORKER_ORT_SPINNING").as_deref() == Ok("1") {
            hub_worker::engine::ort::set_intra_op_spinning(true);
        }
        hub_worker::engine::ort::init(dylib.as_deref(), threads).map_err(anyhow::Error::msg)?;
    }
    #[cfg(feature = "engine-openvino")]
    if matches!(engine, EnginePreference::OpenVino | EnginePreference::Auto) {
        let lib =
            std::env::var_os(hub_worker::engine::openvino::LIB_ENV).map(std::path::PathBuf::from);
        if lib.is_some() || engine == EnginePreference::OpenVino {
            hub_worker::engine::openvino::init(lib.as_deref(), threads)
                .map_err(anyhow::Error::msg)?;
        }
    }
    let corpus: Vec<String> = std::fs::read_to_string(&corpus_path)?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    if args.iter().any(|a| a == "--stdin") {
        return serve_stdin(&runtime, &model_dir, choice, &batches, &corpus);
    }
    for &b in &batches {
        let t0 = Instant::now();
        let model = load(&model_dir, choice, b)?;
        let load_s = t0.elapsed().as_secs_f64();
        for mode in ["corpus", "requests"] {
            let mut best = f64::INFINITY;
            let mut times = Vec::new();
            for rep in 0..=repeats {
                let t = Instant::now();
                runtime.block_on(async {
                    if mode == "corpus" {
                        model
                            .embed(corpus.clone(), EmbedOptions::default())
                            .await
                            .map(|_| ())
                    } else {
                        for chunk in corpus.chunks(b) {
                            model.embed(chunk.to_vec(), EmbedOptions::default()).await?;
                        }
                        Ok(())
                    }
                })?;
                let s = t.elapsed().as_secs_f64();
                if rep > 0 {
                    times.push(s);
                    best = best.min(s);
                }
            }
            times.sort_by(f64::total_cmp);
            println!(
                "{}",
                serde_json::json!({
                    "engine": choice.label(&model),
                    "mode": mode,
                    "batch": b,
                    "sentences": corpus.len(),
                    "best_s": best,
                    "median_s": times[times.len() / 2],
                    "sent_per_s": corpus.len() as f64 / best,
                    "load_s": load_s,
                    "threads": threads,
                })
            );
        }
    }
    Ok(())
}

/// The engine asked for, and its precision.
#[derive(Clone, Copy)]
struct Choice {
    engine: EnginePreference,
    precision: Precision,
}

impl Choice {
    /// The loaded engine's name, with the precision when not f32.
    fn label(&self, model: &Model) -> String {
        match self.precision {
            Precision::F32 => model.info().engine.to_string(),
            p => format!("{}-{p}", model.info().engine),
        }
    }
}

fn load(dir: &str, choice: Choice, batch: usize) -> anyhow::Result<Model> {
    let cfg = EngineConfig {
        max_batch_size: batch,
        forward_batch_size: batch,
        tokenizer_threads: 1,
        engine: choice.engine,
        precision: choice.precision,
        ..EngineConfig::default()
    };
    Ok(Model::load(std::path::Path::new(dir), None, &cfg)?)
}

async fn pass(model: &Model, mode: &str, batch: usize, corpus: &[String]) -> anyhow::Result<()> {
    if mode == "corpus" {
        model
            .embed(corpus.to_vec(), EmbedOptions::default())
            .await?;
    } else {
        for chunk in corpus.chunks(batch) {
            model.embed(chunk.to_vec(), EmbedOptions::default()).await?;
        }
    }
    Ok(())
}

fn serve_stdin(
    runtime: &tokio::runtime::Runtime,
    dir: &str,
    choice: Choice,
    batches: &[usize],
    corpus: &[String],
) -> anyhow::Result<()> {
    use std::io::{BufRead, Write};
    let mut models = std::collections::HashMap::new();
    for &b in batches {
        let m = load(dir, choice, b)?;
        // Warm-up pass.
        runtime.block_on(pass(&m, "corpus", b, corpus))?;
        models.insert(b, m);
    }
    let engine_name = models
        .values()
        .next()
        .map(|m| choice.label(m))
        .unwrap_or_else(|| "?".to_string());
    println!("{}", serde_json::json!({"ready": engine_name}));
    std::io::stdout().flush()?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let mut parts = line.split_whitespace();
        let (Some(mode), Some(b)) = (parts.next(), parts.next()) else {
            break;
        };
        let b: usize = b.parse()?;
        let model = models
            .get(&b)
            .ok_or_else(|| anyhow::anyhow!("batch {b} not loaded"))?;
        let t = Instant::now();
        runtime.block_on(pass(model, mode, b, corpus))?;
        println!(
            "{}",
            serde_json::json!({"seconds": t.elapsed().as_secs_f64()})
        );
        std::io::stdout().flush()?;
    }
    Ok(())
}
