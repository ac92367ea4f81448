//! In-process generation throughput of the llama.cpp engine (no HTTP).
//!
//! ```text
//! cargo run --release -p hub-worker --example bench-generate -- \
//!     --gguf /work/cache/gemma/gemma-3-270m-q4_k_m.gguf [--slots 8] [--tokens 128] \
//!     [--streams 1,4,8 | --closed 1:8,4:16,8:24] [--prefill 512] [--chunk 512] [--mixed-chunk 128]
//!     [--context 2048] [--threads N] [--jitter MS] [--chat C:T] [--prompt-cache-mib 256]
//! ```
//!
//! Prints one JSON object per line:
//! * `prefill`: one request of `--prefill` prompt tokens and one output token; prompt
//!   tokens per second (time to the first token).
//! * `decode` per stream count S: S concurrent requests of `--tokens` output tokens each
//!   (`ignore_eos`, distinct short prompts); aggregate output tokens per second over the
//!   wall time (prefill included), and per stream from its first token to its last.
//! * `closed` with `--closed C:N,...` (instead of the two above): the load of
//!   `scripts/bench/generation.sh` without HTTP: C clients each sending its next request as
//!   soon as the last one ends, N requests in all, each a distinct prompt of `--prefill`
//!   tokens and `--tokens` output tokens; output tokens per second, TTFT and inter-token
//!   latency p50/p99 (ms). For trying scheduler settings quickly. `--jitter MS`: each
//!   client waits a pseudo-random 0..MS ms before each request, as clients over HTTP
//!   arrive spread out rather than in the same microsecond.
//! * `chat` with `--chat C:T` (instead of the others): one client holding C conversations,
//!   T turns each, sent one after another round-robin; the first turn is a distinct
//!   prompt of `--prefill` tokens, each next turn that prompt, the answer (`--tokens`) and
//!   a short question. With more conversations than `--slots`, a conversation comes back
//!   after its slot was taken: the prompt cache (`--prompt-cache-mib`, 0: off) restores it.
//!   TTFT p50/p99 of the returning turns, their cached share of prompt tokens, and the
//!   cache's counters.

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

/// The p-quantile (0..1) of `v` (sorted here), nearest rank.
fn quantile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// Runs one request; (TTFT seconds, gaps between tokens in seconds, tokens).
async fn timed(model: &DecoderModel, req: GenerateRequest) -> (f64, Vec<f64>, usize) {
    let start = Instant::now();
    let mut s = model.submit(req).expect("submit");
    let mut last: Option<Instant> = None;
    let mut ttft = 0.0;
    let mut gaps = Vec::new();
    loop {
        match s.next().await.expect("done") {
            GenEvent::Token(_) => {
                let now = Instant::now();
                match last {
                    None => ttft = (now - start).as_secs_f64(),
                    Some(l) => gaps.push((now - l).as_secs_f64()),
                }
                last = Some(now);
            }
            GenEvent::Done(f) => return (ttft, gaps, f.usage.completion_tokens),
            GenEvent::Failed(e) => panic!("{e}"),
        }
    }
}

/// A prompt of about `tokens` tokens that shares no prefix with another request's.
fn distinct_prompt(model: &DecoderModel, i: usize, tokens: usize) -> anyhow::Result<String> {
    const WORDS: [&str; 16] = [
        "river", "stone", "lamp", "orbit", "maple", "copper", "violet", "harbor", "signal",
        "meadow", "falcon", "ember", "glacier", "lantern", "quartz", "willow",
    ];
    let mut text = format!("Request {i}.");
    let mut x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    while model.tokenize(&text, true)?.len() < tokens {
        for _ in 0..16 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            text.push(' ');
            text.push_str(WORDS[(x % 16) as usize]);
        }
    }
    Ok(text)
}

/// `clients` closed-loop clients sending `requests` requests in all.
async fn closed(
    model: &DecoderModel,
    clients: usize,
    requests: usize,
    prefill: usize,
    tokens: usize,
    jitter_ms: u64,
) -> anyhow::Result<serde_json::Value> {
    let prompts = (0..requests)
        .map(|i| distinct_prompt(model, i + clients * 1000, prefill))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let prompts = std::sync::Arc::new(prompts);
    let start = Instant::now();
    let runs = (0..clients).map(|c| {
        let (model, next, prompts) = (model.clone(), next.clone(), prompts.clone());
        async move {
            let mut out = Vec::new();
            let mut x = (c as u64 + 7).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(p) = prompts.get(i) else { break };
                if jitter_ms > 0 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let wait = std::time::Duration::from_micros(x % (jitter_ms * 1000));
                    tokio::time::sleep(wait).await;
                }
                out.push(timed(&model, request(p.clone(), tokens)).await);
            }
            out
        }
    });
    let results: Vec<_> = futures::future::join_all(runs)
        .await
        .into_iter()
        .flatten()
        .collect();
    let wall = start.elapsed().as_secs_f64();
    let total: usize = results.iter().map(|r| r.2).sum();
    let mut ttft: Vec<f64> = results.iter().map(|r| r.0 * 1e3).collect();
    let mut itl: Vec<f64> = results
        .iter()
        .flat_map(|r| r.1.iter().map(|g| g * 1e3))
        .collect();
    Ok(
        serde_json::json!({"mode": "closed", "concurrency": clients, "requests": requests,
        "jitter_ms": jitter_ms,
        "output_tokens_per_second": total as f64 / wall, "wall_seconds": wall,
        "ttft_ms_p50": quantile(&mut ttft, 0.5), "ttft_ms_p99": quantile(&mut ttft, 0.99),
        "itl_ms_p50": quantile(&mut itl, 0.5), "itl_ms_p99": quantile(&mut itl, 0.99)}),
    )
}

/// One client's chat turns over `conversations` conversations, round-robin.
async fn chat(
    model: &DecoderModel,
    conversations: usize,
    turns: usize,
    prefill: usize,
    tokens: usize,
) -> anyhow::Result<serde_json::Value> {
    let mut texts = (0..conversations)
        .map(|i| distinct_prompt(model, i + 5000, prefill))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (mut ttft, mut first_ttft) = (Vec::new(), Vec::new());
    let (mut prompt_tokens, mut cached_tokens) = (0usize, 0usize);
    let start = Instant::now();
    for turn in 0..turns {
        for text in texts.iter_mut() {
            let begun = Instant::now();
            let mut s = model.submit(request(text.clone(), tokens)).expect("submit");
            let mut first = None;
            let mut answer = String::new();
            let usage = loop {
                match s.next().await.expect("done") {
                    GenEvent::Token(t) => {
                        first.get_or_insert_with(|| begun.elapsed().as_secs_f64() * 1e3);
                        answer.push_str(&t.text);
                    }
                    GenEvent::Done(f) => {
                        answer.push_str(&f.tail);
                        break f.usage;
                    }
                    GenEvent::Failed(e) => panic!("{e}"),
                }
            };
            let t = first.unwrap_or(f64::NAN);
            if turn == 0 {
                first_ttft.push(t);
            } else {
                ttft.push(t);
                prompt_tokens += usage.prompt_tokens;
                cached_tokens += usage.cached_tokens;
            }
            text.push_str(&answer);
            text.push_str(&format!(" Question {turn}: and what happened next?"));
        }
    }
    let stats = model.stats();
    Ok(
        serde_json::json!({"mode": "chat", "conversations": conversations, "turns": turns,
        "wall_seconds": start.elapsed().as_secs_f64(),
        "first_turn_ttft_ms_p50": quantile(&mut first_ttft, 0.5),
        "ttft_ms_p50": quantile(&mut ttft, 0.5), "ttft_ms_p99": quantile(&mut ttft, 0.99),
        "cached_share": cached_tokens as f64 / prompt_tokens.max(1) as f64,
        "prompt_cache_entries": stats.prompt_cache_entries,
        "prompt_cache_bytes": stats.prompt_cache_bytes,
        "prompt_cache_hits_total": stats.prompt_cache_hits_total}),
    )
}

/// Runs one request; (seconds to the first token, seconds from first to last, tokens).
async fn one(model: &DecoderModel, req: GenerateRequest) -> (f64, f64, usize) {
    let (ttft, gaps, n) = timed(model, req).await;
    (ttft, gaps.iter().sum(), n)
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
    let chunk: usize = arg(&args, "--chunk").map_or(Ok(512), |s| s.parse())?;
    let mixed: usize = arg(&args, "--mixed-chunk").map_or(Ok(128), |s| s.parse())?;
    let context: usize = arg(&args, "--context").map_or(Ok(2048), |s| s.parse())?;
    let threads: usize = arg(&args, "--threads").map_or(Ok(0), |s| s.parse())?;
    let jitter: u64 = arg(&args, "--jitter").map_or(Ok(0), |s| s.parse())?;
    let cache_mib: usize = arg(&args, "--prompt-cache-mib").map_or(
        Ok(hub_worker::engine::options::DEFAULT_GEN_PROMPT_CACHE_MIB),
        |s| s.parse(),
    )?;
    let streams: Vec<usize> = arg(&args, "--streams")
        .unwrap_or_else(|| "1,4,8".into())
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()?;

    let dir = tempfile::tempdir()?;
    std::os::unix::fs::symlink(&gguf, dir.path().join("model.gguf"))?;
    let cfg = EngineConfig {
        gen_slots: slots,
        gen_context: context,
        gen_prefill_chunk: chunk,
        gen_mixed_chunk: mixed,
        gen_threads: threads,
        gen_prompt_cache_mib: cache_mib,
        ..EngineConfig::default()
    };
    let path = dir.path().to_path_buf();
    let model = tokio::task::spawn_blocking(move || Model::load(&path, None, &cfg)).await??;
    let model = model.decoder().expect("a decoder").clone();

    // Warm-up.
    one(&model, request("Hello".into(), 8)).await;

    if let Some(spec) = arg(&args, "--chat") {
        let (c, t) = spec
            .split_once(':')
            .ok_or_else(|| anyhow::anyhow!("--chat C:T"))?;
        let v = chat(
            &model,
            c.trim().parse()?,
            t.trim().parse()?,
            prefill,
            tokens,
        )
        .await?;
        println!("{v}");
        return Ok(());
    }
    if let Some(spec) = arg(&args, "--closed") {
        for part in spec.split(',') {
            let (c, n) = part
                .split_once(':')
                .ok_or_else(|| anyhow::anyhow!("--closed C:N,..."))?;
            let v = closed(
                &model,
                c.trim().parse()?,
                n.trim().parse()?,
                prefill,
                tokens,
                jitter,
            )
            .await?;
            println!("{v}");
        }
        return Ok(());
    }

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
