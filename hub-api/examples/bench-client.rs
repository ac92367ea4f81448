//! A light load client for `scripts/bench/endpoints.sh`: sends the benchmark corpus to an
//! OpenAI-style `/v1/embeddings` URL and prints the wall time in seconds. It exists because
//! the benchmark runs client and hub on the same 2 cores: the Python client spends about
//! half a core on HTTP at 32 concurrent requests, which the hub then does not get, while
//! the PyTorch side it is compared with runs in-process with no client at all. One tokio
//! thread here costs a few percent of a core.
//!
//! ```text
//! bench-client --url URL --token TOKEN --corpus FILE --mode concurrent|batched|sorted --n N
//! ```
//! * `concurrent`: N requests in flight, one sentence each, corpus order;
//! * `batched`: one request at a time of N sentences, corpus order;
//! * `sorted`: like `batched` on the corpus in the order sentence-transformers' `encode`
//!   batches it (longest text first).
//!
//! Every answer is checked: status 200 and one embedding per sentence sent.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

struct Args {
    url: String,
    token: String,
    corpus: String,
    mode: String,
    n: usize,
}

fn args() -> anyhow::Result<Args> {
    let mut it = std::env::args().skip(1);
    let (mut url, mut token, mut corpus, mut mode, mut n) = (None, None, None, None, None);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--url" => url = Some(value),
            "--token" => token = Some(value),
            "--corpus" => corpus = Some(value),
            "--mode" => mode = Some(value),
            "--n" => n = Some(value.parse()?),
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    let missing = |f: &str| anyhow::anyhow!("missing {f}");
    Ok(Args {
        url: url.ok_or_else(|| missing("--url"))?,
        token: token.ok_or_else(|| missing("--token"))?,
        corpus: corpus.ok_or_else(|| missing("--corpus"))?,
        mode: mode.ok_or_else(|| missing("--mode"))?,
        n: n.filter(|n| *n > 0).ok_or_else(|| missing("--n (> 0)"))?,
    })
}

async fn embed(client: &reqwest::Client, args: &Args, sentences: &[String]) -> anyhow::Result<()> {
    let body = serde_json::json!({ "input": sentences });
    let resp = client
        .post(&args.url)
        .bearer_auth(&args.token)
        .json(&body)
        .send()
        .await?;
    let status = resp.status();
    let bytes = resp.bytes().await?;
    anyhow::ensure!(
        status == reqwest::StatusCode::OK,
        "{status}: {}",
        String::from_utf8_lossy(&bytes)
    );
    let v: serde_json::Value = serde_json::from_slice(&bytes)?;
    let got = v["data"].as_array().map_or(0, Vec::len);
    anyhow::ensure!(
        got == sentences.len(),
        "{got} embeddings for {} sentences",
        sentences.len()
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Arc::new(args()?);
    let mut corpus: Vec<String> = std::fs::read_to_string(&args.corpus)?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    if args.mode == "sorted" {
        corpus.sort_by_key(|s| std::cmp::Reverse(s.chars().count()));
    }
    let corpus = Arc::new(corpus);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.n.max(1))
        .build()?;
    let elapsed = rt.block_on(async move {
        let start = Instant::now();
        match args.mode.as_str() {
            "concurrent" => {
                let next = Arc::new(AtomicUsize::new(0));
                let mut tasks = Vec::with_capacity(args.n);
                for _ in 0..args.n {
                    let (client, args, corpus, next) =
                        (client.clone(), args.clone(), corpus.clone(), next.clone());
                    tasks.push(tokio::spawn(async move {
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some(s) = corpus.get(i) else {
                                return anyhow::Ok(());
                            };
                            embed(&client, &args, std::slice::from_ref(s)).await?;
                        }
                    }));
                }
                for t in tasks {
                    t.await??;
                }
            }
            "batched" | "sorted" => {
                for chunk in corpus.chunks(args.n) {
                    embed(&client, &args, chunk).await?;
                }
            }
            other => anyhow::bail!("unknown --mode {other} (concurrent, batched, sorted)"),
        }
        anyhow::Ok(start.elapsed())
    })?;
    println!("{:.6}", elapsed.as_secs_f64());
    Ok(())
}
