//! In-process generation throughput of the llama.cpp engine (no HTTP).
//!
//! ```text
//! cargo run --release -p hub-worker --example bench-generate -- \
//!     --gguf /work/cache/gemma/gemma-3-270m-q4_k_m.gguf [--slots 8] [--tokens 128] \
//!     [--streams 1,4,8] [--prefill 512] [--chunk 256] [--threads N]
//! ```
//!
//! Prints one JSON object per line:
//! * `prefill`: one request of `--prefill` prompt tokens and one output token; prompt
//!   tokens per second (time to the first token).
//! * `decode` per stream count S: S concurrent requests of `--tokens` output tokens each
//!   (`ignore_eos`, distinct short prompts); aggregate output tokens per second over the
//!   wall time (prefill included), and per stream from its first token to its last.

use hub_worker::engine::generate::{
    DecoderModel, GenEvent, GenerateRequest, Prompt, SamplingParams,
};
use hub_worker::engine::{EngineConfig, Model};
use std::time::Instant;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn request(text: String, max_tokens: usize) -> GenerateRequest {
    GenerateRequest {
        max_tokens: Some(max_tokens),
        ignore_eos: true,
        sampling: SamplingParams {
            temperature: 0.0,
            ..SamplingParams::default()
        },
        ..GenerateRequest::new(Prompt::Text {
            text,
            add_special: true,
        })
    }
}

/// Runs one request; (seconds to the first token, seconds from first to last, tokens).
async fn one(model: &DecoderModel, req: GenerateRequest) -> (f64, f64, usize) {
    let start = Instant::now();
    let mut s = model.submit(req).expect("submit");
    let mut first = None;
    loop {
        match s.next().await.expect("done") {
            GenEvent::Token(_) => {
                first.get_or_insert_with(Instant::now);
            }
            GenEvent::Done(f) => {
                let first = first.unwrap_or_else(Instant::now);
                return (
                    (first - start).as_secs_f64(),
                    first.elapsed().as_secs_f64(),
                    f.usage.completion_tokens,
                );
            }
            GenEvent::Failed(e) => panic!("{e}"),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let gguf = arg(&args, "--gguf")
        .or_else(|| std::env::var("PADDOCK_GEMMA_GGUF").ok())
        .ok_or_else(|| anyhow::anyhow!("--gguf FILE"))?;
    let slots: usize = arg(&args, "--slots").map_or(Ok(8), |s| s.parse())?;
    let tokens: usize = arg(&args, "--tokens").map_or(Ok(128), |s| s.parse())?;
    let prefill: usize = arg(&args, "--prefill").map_or(Ok(512), |s| s.parse())?;
    let chunk: usize = arg(&args, "--chunk").map_or(Ok(256), |s| s.parse())?;
    let threads: usize = arg(&args, "--threads").map_or(Ok(0), |s| s.parse())?;
    let streams: Vec<usize> = arg(&args, "--streams")
        .unwrap_or_else(|| "1,4,8".into())
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()?;

    let dir = tempfile::tempdir()?;
    std::os::unix::fs::symlink(&gguf, dir.path().join("model.gguf"))?;
    let cfg = EngineConfig {
        gen_slots: slots,
        gen_context: 2048,
        gen_prefill_chunk: chunk,
        gen_threads: threads,
        ..EngineConfig::default()
    };
    let path = dir.path().to_path_buf();
    let model = tokio::task::spawn_blocking(move || Model::load(&path, None, &cfg)).await??;
    let model = model.decoder().expect("a decoder").clone();

    // Warm-up.
    one(&model, request("Hello".into(), 8)).await;

    // Prefill: a long prompt nobody computed before.
    let words = "alpha beta gamma delta epsilon zeta eta theta iota kappa ";
    let mut text = String::from("Numbers: ");
    while model.tokenize(&text, true)?.len() < prefill {
        text.push_str(words);
    }
    let n = model.tokenize(&text, true)?.len();
    let (ttft, _, _) = one(&model, request(text, 1)).await;
    println!(
        "{}",
        serde_json::json!({"mode": "prefill", "prompt_tokens": n, "seconds": ttft,
            "tokens_per_second": n as f64 / ttft, "chunk": chunk})
    );

    for &s in &streams {
        let start = Instant::now();
        let runs = (0..s).map(|i| {
            let model = model.clone();
            async move {
                one(
                    &model,
                    request(format!("Story {i} ({s} streams): once upon a time"), tokens),
                )
                .await
            }
        });
        let results = futures::future::join_all(runs).await;
        let wall = start.elapsed().as_secs_f64();
        let total: usize = results.iter().map(|r| r.2).sum();
        let per_stream: Vec<f64> = results
            .iter()
            .map(|r| (r.2 - 1) as f64 / r.1.max(1e-9))
            .collect();
        println!(
            "{}",
            serde_json::json!({"mode": "decode", "streams": s, "tokens_each": tokens,
                "wall_seconds": wall, "aggregate_tokens_per_second": total as f64 / wall,
                "per_stream_tokens_per_second": per_stream.iter().sum::<f64>() / s as f64,
                "ttft_seconds_mean": results.iter().map(|r| r.0).sum::<f64>() / s as f64})
        );
    }
    Ok(())
}
