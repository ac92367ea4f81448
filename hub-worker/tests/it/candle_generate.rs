//! Generation on candle against PyTorch: tiny random decoders of each family (llama,
//! mistral, qwen2, qwen3, gemma3, gemma3_swa, a gemma3 with a 4-token sliding window, and
//! gemma3_qscale, whose query_pre_attn_scalar differs from its head_dim;
//! made by scripts/fixtures/make-tiny-decoders.py and
//! checked in under tests/fixtures/decoders) must continue three prompts with exactly
//! the greedy ids transformers' `generate` chose. Then the engine's rules on the llama
//! fixture: stop strings, max_tokens, cancellation, admission, context and constraint
//! refusals, log-probabilities, seeded sampling.

use hub_worker::engine::generate::candle;
use hub_worker::engine::generate::{
    Constraint, DecoderModel, Finish, FinishReason, GenEvent, GenStream, GenToken, GenerateRequest,
    Prompt, SamplingParams,
};
use hub_worker::engine::{EngineConfig, EngineError, LoadError, Task};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn fixture(family: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/decoders")
        .join(family)
}

fn expected(family: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixture(family).join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

async fn load_with(family: &str, cfg: EngineConfig) -> DecoderModel {
    let dir = fixture(family);
    tokio::task::spawn_blocking(move || candle::load(&dir, &cfg))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{family}: {e}"))
}

async fn load(family: &str) -> DecoderModel {
    load_with(family, EngineConfig::default()).await
}

fn greedy(prompt: &str) -> GenerateRequest {
    let mut req = GenerateRequest::new(Prompt::Text {
        text: prompt.to_string(),
        add_special: true,
    });
    req.sampling.temperature = 0.0;
    req
}

/// Every event of a stream, with a time limit.
async fn collect(mut stream: GenStream) -> (Vec<GenToken>, Finish) {
    let mut tokens = Vec::new();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(60), stream.next())
            .await
            .expect("the engine answers within 60 s")
            .expect("the stream ends with Done");
        match event {
            GenEvent::Token(t) => tokens.push(t),
            GenEvent::Done(finish) => return (tokens, finish),
            GenEvent::Failed(e) => panic!("generation failed: {e}"),
        }
    }
}

fn ids(tokens: &[GenToken]) -> Vec<u32> {
    tokens.iter().map(|t| t.id).collect()
}

fn text(tokens: &[GenToken], finish: &Finish) -> String {
    let mut s: String = tokens.iter().map(|t| t.text.as_str()).collect();
    s.push_str(&finish.tail);
    s
}

async fn matches_pytorch(family: &str) {
    let model = load(family).await;
    let info = model.decoder_info();
    assert_eq!(info.engine, "candle");
    assert_eq!(info.slots, 1);
    assert_eq!(info.context_length, 256);
    assert_eq!(model.info().task, Task::TextGeneration);
    let reference = expected(family);
    let cases = reference["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 3);
    for case in cases {
        let prompt = case["prompt"].as_str().unwrap();
        let want_prompt: Vec<u32> = serde_json::from_value(case["prompt_ids"].clone()).unwrap();
        let want: Vec<u32> = serde_json::from_value(case["greedy_ids"].clone()).unwrap();
        assert!(want.len() >= 32);
        assert_eq!(
            model.tokenize(prompt, true).unwrap(),
            want_prompt,
            "{family}: {prompt:?}"
        );
        let mut req = greedy(prompt);
        req.max_tokens = Some(want.len());
        // transformers ran without an end-of-sequence stop.
        req.ignore_eos = true;
        let stream = model.submit(req).unwrap();
        assert_eq!(stream.prompt_tokens, want_prompt.len());
        let (tokens, finish) = collect(stream).await;
        assert_eq!(ids(&tokens), want, "{family}: greedy ids of {prompt:?}");
        assert_eq!(finish.reason, FinishReason::Length);
        assert_eq!(finish.usage.completion_tokens, want.len());
        assert_eq!(finish.usage.prompt_tokens, want_prompt.len());
        // The streamed text is the detokenized ids, up to how many U+FFFD replace the
        // random model's invalid UTF-8 (StopScan replaces an invalid run as it streams,
        // the tokenizer's decoder over the whole text).
        let valid = |s: String| s.replace('\u{FFFD}', "");
        assert_eq!(
            valid(text(&tokens, &finish)),
            valid(model.detokenize(&want).unwrap())
        );
    }
}

#[tokio::test]
async fn candle_llama_matches_pytorch_greedy() {
    matches_pytorch("llama").await;
}

#[tokio::test]
async fn candle_mistral_matches_pytorch_greedy() {
    matches_pytorch("mistral").await;
}

#[tokio::test]
async fn candle_qwen2_matches_pytorch_greedy() {
    matches_pytorch("qwen2").await;
}

#[tokio::test]
async fn candle_qwen3_matches_pytorch_greedy() {
    matches_pytorch("qwen3").await;
}

#[tokio::test]
async fn candle_gemma3_matches_pytorch_greedy() {
    matches_pytorch("gemma3").await;
}

/// gemma3 with a sliding window of 4 tokens: the prefill of every prompt longer than that
/// (and every decode step) must keep exactly 4 positions, the query included, as
/// transformers does (candle-transformers' gemma3 kept 5 in the prefill).
#[tokio::test]
async fn candle_gemma3_sliding_window_matches_pytorch_greedy() {
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("gemma3_swa").join("config.json")).unwrap(),
    )
    .unwrap();
    let window = config["sliding_window"].as_u64().unwrap() as usize;
    let longer = expected("gemma3_swa")["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["prompt_ids"].as_array().unwrap().len() > window)
        .count();
    assert!(longer >= 2, "the prompts must outrun the window");
    matches_pytorch("gemma3_swa").await;
}

/// gemma3 whose attention is scaled by 1/sqrt(query_pre_attn_scalar) = 1/8, where its
/// head_dim (16) would give 1/4 (Gemma 3 27B: 168 vs 128). Scaled by head_dim,
/// transformers itself continues the three prompts with 40, 39 and 8 different ids.
#[tokio::test]
async fn candle_gemma3_query_pre_attn_scalar_matches_pytorch_greedy() {
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("gemma3_qscale").join("config.json")).unwrap(),
    )
    .unwrap();
    assert_ne!(config["query_pre_attn_scalar"], config["head_dim"]);
    matches_pytorch("gemma3_qscale").await;
}

#[tokio::test]
async fn candle_decoder_info_comes_from_the_repo_files() {
    let qwen3 = load("qwen3").await;
    let info = qwen3.decoder_info();
    assert_eq!(info.architecture, "qwen3");
    assert_eq!(info.train_context_length, 256);
    assert_eq!(info.vocab_size, 512);
    assert_eq!(info.bos_token.as_deref(), Some("<s>"));
    assert_eq!(info.eos_token.as_deref(), Some("</s>"));
    let template = info.chat_template.as_deref().expect("chat_template.jinja");
    assert!(template.contains("add_generation_prompt"), "{template}");
    let llama = load("llama").await;
    assert_eq!(llama.decoder_info().chat_template, None);
    // Special-token text is parsed as the special token.
    assert_eq!(llama.tokenize("</s>", false).unwrap(), vec![2]);
    assert_eq!(llama.detokenize(&[2]).unwrap(), "</s>");
}

#[tokio::test]
async fn candle_stop_string_ends_the_sequence() {
    let model = load("llama").await;
    let reference = expected("llama");
    let case = &reference["cases"][0];
    let want: Vec<u32> = serde_json::from_value(case["greedy_ids"].clone()).unwrap();
    let full = model.detokenize(&want).unwrap();
    // A stop string from the middle of the greedy text: two characters (no replacement
    // character from the random bytes) at or after the 10th.
    let chars: Vec<char> = full.chars().collect();
    let at = (10..chars.len() - 1)
        .find(|&i| !chars[i..i + 2].contains(&'\u{FFFD}'))
        .expect("two clean characters");
    let stop: String = chars[at..at + 2].iter().collect();
    let cut = full.find(&stop).unwrap();
    let mut req = greedy(case["prompt"].as_str().unwrap());
    req.ignore_eos = true;
    req.max_tokens = Some(want.len());
    req.stop = vec!["never appears \u{1F600}".into(), stop.clone()];
    let (tokens, finish) = collect(model.submit(req).unwrap()).await;
    assert_eq!(finish.reason, FinishReason::Stop);
    assert_eq!(finish.stop_string.as_deref(), Some(stop.as_str()));
    assert_eq!(
        text(&tokens, &finish),
        full[..cut],
        "text before the stop string"
    );
    // The tokens are the greedy prefix up to the one completing the stop string.
    assert!(tokens.len() < want.len());
    assert_eq!(ids(&tokens), want[..tokens.len()]);
    assert_eq!(finish.usage.completion_tokens, tokens.len());
}

#[tokio::test]
async fn candle_max_tokens_finishes_with_length() {
    let model = load("llama").await;
    let mut req = greedy("Hello world");
    req.max_tokens = Some(5);
    req.ignore_eos = true;
    let (tokens, finish) = collect(model.submit(req).unwrap()).await;
    assert_eq!(tokens.len(), 5);
    assert_eq!(finish.reason, FinishReason::Length);
    assert_eq!(finish.usage.completion_tokens, 5);
    assert_eq!(finish.stop_string, None);

    // Without max_tokens the context is the limit.
    let mut req = greedy("Hello world");
    req.ignore_eos = true;
    let (tokens, finish) = collect(model.submit(req).unwrap()).await;
    assert_eq!(finish.reason, FinishReason::Length);
    assert_eq!(
        tokens.len() + 3,
        256,
        "prompt (3 tokens) + completion fill the context"
    );
    let stats = model.stats();
    assert_eq!(stats.prompt_tokens_total, 6);
    assert_eq!(stats.generated_tokens_total, 5 + 253);
}

async fn wait_for(model: &DecoderModel, what: &str, cond: impl Fn(&DecoderModel) -> bool) {
    let start = Instant::now();
    while !cond(model) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn candle_dropping_the_stream_cancels() {
    let model = load("llama").await;
    let mut req = greedy("Once upon a time there was");
    req.ignore_eos = true;
    let mut stream = model.submit(req).unwrap();
    for _ in 0..2 {
        match stream.next().await.unwrap() {
            GenEvent::Token(_) => {}
            other => panic!("expected a token, got {other:?}"),
        }
    }
    drop(stream);
    wait_for(&model, "the cancellation", |m| {
        let s = m.stats();
        s.cancelled_total == 1 && s.active_slots == 0
    })
    .await;
    // Cancelled, so it did not run to the context's end (3 prompt tokens + 253).
    let generated = model.stats().generated_tokens_total;
    assert!(
        generated < 253,
        "stopped early: {generated} tokens generated"
    );
    // The slot serves the next request.
    let mut req = greedy("Hello world");
    req.max_tokens = Some(3);
    let (tokens, _) = collect(model.submit(req).unwrap()).await;
    assert_eq!(tokens.len(), 3);
}

#[tokio::test]
async fn candle_full_queue_is_overloaded() {
    let cfg = EngineConfig {
        max_concurrent: 2,
        ..EngineConfig::default()
    };
    let model = load_with("llama", cfg).await;
    let long = || {
        let mut req = greedy("Hello world");
        req.ignore_eos = true;
        req
    };
    let running = model.submit(long()).unwrap();
    let queued = model.submit(long()).unwrap();
    match model.submit(long()) {
        Err(EngineError::Overloaded { in_flight, limit }) => {
            assert_eq!((in_flight, limit), (2, 2));
        }
        Err(e) => panic!("expected Overloaded, got {e}"),
        Ok(_) => panic!("expected Overloaded, got a stream"),
    }
    // Admission frees up as requests finish.
    let (a, finish) = collect(running).await;
    assert_eq!((a.len(), finish.reason), (253, FinishReason::Length));
    let (b, _) = collect(queued).await;
    assert_eq!(ids(&a), ids(&b));
    let mut req = greedy("Hello world");
    req.max_tokens = Some(2);
    let (tokens, _) = collect(model.submit(req).unwrap()).await;
    assert_eq!(tokens.len(), 2);
}

#[tokio::test]
async fn candle_refuses_what_cannot_fit_the_context() {
    let model = load("llama").await;
    let req = GenerateRequest::new(Prompt::Tokens(vec![5; 256]));
    match model.submit(req) {
        Err(EngineError::ContextLengthExceeded {
            prompt_tokens,
            max_tokens,
            context,
        }) => assert_eq!((prompt_tokens, max_tokens, context), (256, None, 256)),
        Err(e) => panic!("expected ContextLengthExceeded, got {e}"),
        Ok(_) => panic!("expected ContextLengthExceeded"),
    }
    let mut req = GenerateRequest::new(Prompt::Tokens(vec![5; 10]));
    req.max_tokens = Some(247);
    let err = model.submit(req).err().expect("refused");
    assert_eq!(
        err,
        EngineError::ContextLengthExceeded {
            prompt_tokens: 10,
            max_tokens: Some(247),
            context: 256
        }
    );
    // Exactly full is fine.
    let mut req = GenerateRequest::new(Prompt::Tokens(vec![5; 10]));
    req.max_tokens = Some(246);
    assert!(model.submit(req).is_ok());
    let bad = GenerateRequest::new(Prompt::Tokens(vec![512]));
    assert!(matches!(
        model.submit(bad),
        Err(EngineError::InvalidParameter { name: "prompt", .. })
    ));
}

#[tokio::test]
async fn candle_refuses_constraints() {
    let model = load("llama").await;
    for constraint in [
        Constraint::JsonObject,
        Constraint::JsonSchema(r#"{"type": "object"}"#.into()),
        Constraint::Grammar("root ::= \"a\"".into()),
    ] {
        let mut req = greedy("Hello world");
        req.constraint = constraint;
        match model.submit(req) {
            Err(EngineError::Grammar(msg)) => {
                assert!(msg.contains("GGUF") && msg.contains("candle"), "{msg}")
            }
            Err(e) => panic!("expected Grammar, got {e}"),
            Ok(_) => panic!("expected Grammar"),
        }
    }
}

#[tokio::test]
async fn candle_logprobs_and_seeded_sampling() {
    let model = load("qwen3").await;
    let mut req = greedy("Hello world");
    req.max_tokens = Some(4);
    req.ignore_eos = true;
    req.logprobs = Some(3);
    let (tokens, _) = collect(model.submit(req).unwrap()).await;
    for t in &tokens {
        let lp = t.logprob.as_ref().unwrap();
        assert_eq!(lp.id, t.id);
        assert!(lp.logprob <= 0.0);
        assert_eq!(t.top_logprobs.len(), 3);
        // Greedy: the sampled token is the most likely one.
        assert_eq!(t.top_logprobs[0].id, t.id);
        assert!(t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob);
        assert!(t.top_logprobs[1].logprob >= t.top_logprobs[2].logprob);
    }
    let sampled = |seed| {
        let mut req = greedy("Hello world");
        req.max_tokens = Some(16);
        req.ignore_eos = true;
        req.sampling = SamplingParams {
            temperature: 1.5,
            top_p: 0.95,
            top_k: 50,
            seed: Some(seed),
            ..SamplingParams::default()
        };
        model.submit(req).unwrap()
    };
    let (a, _) = collect(sampled(7)).await;
    let (b, _) = collect(sampled(7)).await;
    let (c, _) = collect(sampled(8)).await;
    assert_eq!(ids(&a), ids(&b), "same seed, same tokens");
    assert_ne!(ids(&a), ids(&c), "another seed, other tokens");
}

#[tokio::test]
async fn candle_refuses_pickle_only_and_non_decoders() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("llama").join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    std::fs::write(dir.path().join("pytorch_model.bin"), b"not unpickled").unwrap();
    let err = candle::load(dir.path(), &EngineConfig::default())
        .err()
        .unwrap();
    assert!(matches!(err, LoadError::PickleOnly { .. }), "{err}");

    let bert = serde_json::json!({"model_type": "bert", "architectures": ["BertModel"]});
    assert!(!candle::is_causal_lm(&bert));
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("gemma3").join("config.json")).unwrap(),
    )
    .unwrap();
    assert!(candle::is_causal_lm(&config));
}

/// Decode speed on a realistic model: set PADDOCK_CANDLE_BENCH_DIR to a directory made by
/// `make-tiny-decoders.py --bench DIR` (a random ~100M llama in bfloat16) and run with
/// `--ignored --nocapture`. Prints numbers; asserts only that generation ran.
#[tokio::test]
#[ignore = "benchmark: needs PADDOCK_CANDLE_BENCH_DIR"]
async fn candle_decode_speed() {
    let Ok(dir) = std::env::var("PADDOCK_CANDLE_BENCH_DIR") else {
        panic!("set PADDOCK_CANDLE_BENCH_DIR");
    };
    let start = Instant::now();
    let model = tokio::task::spawn_blocking(move || {
        candle::load(std::path::Path::new(&dir), &EngineConfig::default())
    })
    .await
    .unwrap()
    .unwrap();
    eprintln!("load: {:.2} s", start.elapsed().as_secs_f64());
    let prompt: Vec<u32> = (0..128).map(|i| 3 + (i * 7) % 500).collect();
    let mut req = GenerateRequest::new(Prompt::Tokens(prompt));
    req.sampling.temperature = 0.0;
    req.max_tokens = Some(128);
    req.ignore_eos = true;
    let start = Instant::now();
    let mut stream = model.submit(req).unwrap();
    let mut first = None;
    let mut n = 0;
    while let Some(ev) = stream.next().await {
        match ev {
            GenEvent::Token(_) => {
                n += 1;
                first.get_or_insert_with(|| start.elapsed());
            }
            GenEvent::Done(_) => break,
            GenEvent::Failed(e) => panic!("{e}"),
        }
    }
    let first = first.unwrap();
    let decode = start.elapsed() - first;
    eprintln!(
        "prompt 128 tokens: first token after {:.3} s; decode {} tokens at {:.1} tok/s",
        first.as_secs_f64(),
        n - 1,
        (n - 1) as f64 / decode.as_secs_f64()
    );
    assert_eq!(n, 128);
}

#[tokio::test]
async fn candle_end_of_sequence_token_stops() {
    // The mistral fixture's greedy continuation of "Hello world" samples </s> second.
    let model = load("mistral").await;
    let reference = expected("mistral");
    let want: Vec<u32> =
        serde_json::from_value(reference["cases"][0]["greedy_ids"].clone()).unwrap();
    assert_eq!(want[1], 2, "</s> is the second greedy token");
    let (tokens, finish) = collect(model.submit(greedy("Hello world")).unwrap()).await;
    assert_eq!(ids(&tokens), want[..1]);
    assert_eq!(finish.reason, FinishReason::Stop);
    assert_eq!(finish.stop_string, None);
    // The end-of-sequence token is sampled, so it is counted, but not streamed.
    assert_eq!(finish.usage.completion_tokens, 2);
}
