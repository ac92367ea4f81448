//! The llama.cpp prompt cache on the real Gemma-3-270M GGUF (`PADDOCK_GEMMA_GGUF`): with
//! more conversations than slots, a returning conversation's earlier tokens are restored
//! from host memory and decode exactly as a fresh computation; the byte budget evicts the
//! least recently used sequence; a budget of 0 turns it off; a sequence past the model's
//! sliding window (512) is restored only for a prompt that keeps all of it (but its last
//! 16 tokens, which are not saved); as many conversations as slots never leave their slots.

use super::generate::{cfg, gemma_dir, greedy, load, run, Out};
use hub_worker::engine::generate::{DecoderModel, GenerateRequest, Prompt, SamplingParams};
use hub_worker::engine::EngineConfig;

/// A prompt of `sentences` numbered notes on `topic` (about 16 tokens a sentence), starting
/// with its topic so two prompts share only the BOS token.
fn notes(topic: &str, sentences: usize) -> String {
    let mut s = format!("{topic} notes.");
    for i in 1..=sentences {
        s.push_str(&format!(
            " Note {i}: the {topic} register lists item {} as checked on day {}.",
            i * 7 + 3,
            i % 28 + 1
        ));
    }
    s
}

fn with_cache(mib: usize) -> EngineConfig {
    EngineConfig {
        gen_prompt_cache_mib: mib,
        ..cfg(2)
    }
}

const MAX_TOKENS: usize = 16;

fn ids(out: &Out) -> Vec<u32> {
    out.tokens.iter().map(|t| t.id).collect()
}

fn greedy_tokens(tokens: Vec<u32>, max_tokens: usize) -> GenerateRequest {
    GenerateRequest {
        max_tokens: Some(max_tokens),
        sampling: SamplingParams {
            temperature: 0.0,
            ..SamplingParams::default()
        },
        logprobs: Some(2),
        ..GenerateRequest::new(Prompt::Tokens(tokens))
    }
}

/// Runs the conversations one after another on a 2-slot model. They share only the BOS
/// token, so the first two take a slot each and every later one overwrites the slot used
/// longest ago: with four, A and then B leave the slots.
async fn conversations(model: &DecoderModel, prompts: &[String]) {
    for p in prompts {
        let out = run(model, greedy(p, MAX_TOKENS)).await;
        assert!(
            out.finish.usage.cached_tokens <= 1,
            "{:?}",
            out.finish.usage
        );
    }
}

fn prompts() -> [String; 4] {
    [
        notes("Astronomy", 18),
        notes("Botany", 18),
        notes("Chemistry", 18),
        notes("Dentistry", 18),
    ]
}

#[tokio::test]
async fn a_returning_conversation_is_restored_and_decodes_as_a_fresh_one() {
    let Some(dir) = gemma_dir("a_returning_conversation_is_restored_and_decodes_as_a_fresh_one")
    else {
        return;
    };
    let [a, b, c, d] = prompts();
    let back = format!("{a} Summarise the Astronomy notes in one sentence:");

    // The reference: the returning request computed from scratch, cache off.
    let fresh = load(&dir, with_cache(0)).await;
    let want = run(&fresh, greedy(&back, MAX_TOKENS)).await;
    assert_eq!(want.finish.usage.cached_tokens, 0);
    drop(fresh);

    let model = load(&dir, with_cache(256)).await;
    let a_tokens = model.tokenize(&a, true).unwrap().len();
    assert!(a_tokens >= 200, "{a_tokens}");
    conversations(&model, &[a.clone(), b, c, d]).await;
    let stats = model.stats();
    // A and B were saved when C and D took their slots.
    assert_eq!(stats.prompt_cache_entries, 2, "{stats:?}");
    assert!(stats.prompt_cache_bytes > 0);
    assert_eq!(stats.prompt_cache_hits_total, 0);

    let got = run(&model, greedy(&back, MAX_TOKENS)).await;
    let cached = got.finish.usage.cached_tokens;
    assert!(
        cached >= a_tokens - 2 && cached < got.finish.usage.prompt_tokens,
        "cached {cached} of {} (A alone is {a_tokens})",
        got.finish.usage.prompt_tokens
    );
    assert_eq!(
        ids(&got),
        ids(&want),
        "restored: {:?}, fresh: {:?}",
        got.text,
        want.text
    );
    assert_eq!(got.text, want.text);
    let stats = model.stats();
    assert_eq!(stats.prompt_cache_hits_total, 1, "{stats:?}");
    // A left the cache for C's slot (used longer ago than D's), and C took its place.
    assert_eq!(stats.prompt_cache_entries, 2, "{stats:?}");
    assert!(stats.cached_prompt_tokens_total >= cached as u64);
}

#[tokio::test]
async fn the_byte_budget_evicts_the_least_recently_used_sequence() {
    let Some(dir) = gemma_dir("the_byte_budget_evicts_the_least_recently_used_sequence") else {
        return;
    };
    // About 290 tokens of Gemma-3-270M's KV (18 KiB a token) take some 5 MiB: 8 MiB holds
    // one such sequence, not two.
    const BUDGET: u64 = 8 << 20;
    let model = load(&dir, with_cache(8)).await;
    let [a, b, c, d] = prompts();
    conversations(&model, &[a.clone(), b.clone(), c, d]).await;
    let stats = model.stats();
    assert_eq!(stats.prompt_cache_entries, 1, "{stats:?}");
    assert!(
        stats.prompt_cache_bytes > BUDGET / 2 && stats.prompt_cache_bytes <= BUDGET,
        "one entry must take more than half the budget for this test: {stats:?}"
    );

    // B, the most recent, is restored.
    let b_back = run(&model, greedy(&format!("{b} And then"), MAX_TOKENS)).await;
    let b_tokens = model.tokenize(&b, true).unwrap().len();
    assert!(
        b_back.finish.usage.cached_tokens >= b_tokens - 2,
        "{:?}",
        b_back.finish.usage
    );
    assert_eq!(model.stats().prompt_cache_hits_total, 1);
    // A was evicted to make room for B: computed again.
    let a_back = run(&model, greedy(&format!("{a} And then"), MAX_TOKENS)).await;
    assert!(
        a_back.finish.usage.cached_tokens <= 1,
        "{:?}",
        a_back.finish.usage
    );
    assert_eq!(model.stats().prompt_cache_hits_total, 1);
}

/// Two conversations on two slots, cache off: the second takes the empty slot rather than
/// the first one's (with which it shares the BOS token), so the first comes back to all of
/// its tokens.
#[tokio::test]
async fn as_many_conversations_as_slots_keep_their_slots() {
    let Some(dir) = gemma_dir("as_many_conversations_as_slots_keep_their_slots") else {
        return;
    };
    let model = load(&dir, with_cache(0)).await;
    let [a, b, _, _] = prompts();
    conversations(&model, &[a.clone(), b.clone()]).await;
    for (p, name) in [(&a, "A"), (&b, "B"), (&a, "A again")] {
        let tokens = model.tokenize(p, true).unwrap().len();
        let back = run(&model, greedy(&format!("{p} And then"), MAX_TOKENS)).await;
        assert!(
            back.finish.usage.cached_tokens >= tokens - 2,
            "{name}: {:?}",
            back.finish.usage
        );
    }
}

#[tokio::test]
async fn a_zero_budget_turns_the_prompt_cache_off() {
    let Some(dir) = gemma_dir("a_zero_budget_turns_the_prompt_cache_off") else {
        return;
    };
    let model = load(&dir, with_cache(0)).await;
    let [a, b, c, d] = prompts();
    conversations(&model, &[a.clone(), b, c, d]).await;
    let back = run(&model, greedy(&format!("{a} And then"), MAX_TOKENS)).await;
    assert!(
        back.finish.usage.cached_tokens <= 1,
        "{:?}",
        back.finish.usage
    );
    let stats = model.stats();
    assert_eq!(
        (
            stats.prompt_cache_entries,
            stats.prompt_cache_bytes,
            stats.prompt_cache_hits_total
        ),
        (0, 0, 0),
        "{stats:?}"
    );
}

/// llama.cpp saves a sliding-window layer's cells only as far as the sequence's last
/// position sees them: past the window (512 tokens here) the state is saved without its
/// last `WINDOW_SLACK` (16) tokens and serves only a prompt that keeps all of that; a
/// prompt that keeps less is computed afresh.
#[tokio::test]
async fn a_sequence_past_the_sliding_window_is_restored_only_whole() {
    let Some(dir) = gemma_dir("a_sequence_past_the_sliding_window_is_restored_only_whole") else {
        return;
    };
    const ANSWER: usize = 32;
    const SLACK: usize = 16;
    let long = notes("Geology", 40);
    let model = load(&dir, with_cache(256)).await;
    let prompt = model.tokenize(&long, true).unwrap();
    assert!(
        prompt.len() > 600 && prompt.len() + ANSWER + 2 * MAX_TOKENS + 8 < 1024,
        "{}",
        prompt.len()
    );
    let first = run(&model, greedy_tokens(prompt.clone(), ANSWER)).await;
    assert_eq!(first.tokens.len(), ANSWER);
    // B takes the other slot, C overwrites the Geology one.
    let [_, b, c, _] = prompts();
    conversations(&model, &[b, c]).await;
    assert_eq!(model.stats().prompt_cache_entries, 1);
    // The slot held the prompt and all but the last generated token; the cache keeps that
    // without its last 16.
    let saved = prompt.len() + ANSWER - 1 - SLACK;

    // The conversation goes on after its answer.
    let extra = model
        .tokenize(" Next, the Geology summary:", false)
        .unwrap();
    let mut whole = prompt.clone();
    whole.extend(ids(&first));
    whole.extend(&extra);
    let got = run(&model, greedy_tokens(whole.clone(), MAX_TOKENS)).await;
    assert_eq!(
        got.finish.usage.cached_tokens, saved,
        "{:?}",
        got.finish.usage
    );
    assert_eq!(model.stats().prompt_cache_hits_total, 1);

    // The prompt cut 40 tokens short, other words after it: the restored slot holds it, but
    // cut there its sliding-window layers would miss cells, so it is computed afresh.
    let mut partial = prompt[..prompt.len() - 40].to_vec();
    partial.extend(&extra);
    let cut = run(&model, greedy_tokens(partial.clone(), MAX_TOKENS)).await;
    assert!(
        cut.finish.usage.cached_tokens <= 1,
        "{:?}",
        cut.finish.usage
    );

    // Reference, cache off: the same conversation never evicted, its slot cut to the same
    // `saved` tokens by a request that diverges there; then the returning request keeps
    // them. The restored sequence decodes exactly as the one that never left.
    let kept = load(&dir, with_cache(0)).await;
    let again = run(&kept, greedy_tokens(prompt.clone(), ANSWER)).await;
    assert_eq!(ids(&again), ids(&first));
    let mut diverging = whole[..saved].to_vec();
    diverging.extend(model.tokenize(" Unrelated words instead", false).unwrap());
    let d = run(&kept, greedy_tokens(diverging, 1)).await;
    assert_eq!(d.finish.usage.cached_tokens, saved);
    let want_kept = run(&kept, greedy_tokens(whole.clone(), MAX_TOKENS)).await;
    assert_eq!(want_kept.finish.usage.cached_tokens, saved);
    assert_eq!(ids(&got), ids(&want_kept), "restored vs never evicted");
    drop(kept);
    // Computed from scratch: the generated tokens' keys and values come from one-token
    // decodes in the cached run and from a prompt batch here (other matmul rounding), so
    // a greedy choice may differ at a near tie, as for any cached prefix (a slot's own).
    let fresh = load(&dir, with_cache(0)).await;
    let want_whole = run(&fresh, greedy_tokens(whole, MAX_TOKENS)).await;
    assert_eq!(want_whole.finish.usage.cached_tokens, 0);
    same_or_near_tie(&got, &want_whole);
    // The cut prompt was computed afresh in both.
    let fresh = load(&dir, with_cache(0)).await;
    let want_partial = run(&fresh, greedy_tokens(partial, MAX_TOKENS)).await;
    assert_eq!(ids(&cut), ids(&want_partial));
}

/// Log-probability gap between the two best tokens under which a greedy choice may differ
/// between a prefix computed by one-token decodes and the same prefix computed as a prompt
/// (as `generate.rs`'s `NEAR_TIE` for batched against alone).
const NEAR_TIE: f32 = 0.3;

/// `a` and `b` are the same tokens, or the first token where they differ was a near tie.
fn same_or_near_tie(a: &Out, b: &Out) {
    let Some(at) = ids(a).iter().zip(ids(b)).position(|(x, y)| *x != y) else {
        return;
    };
    let gap = |o: &Out| {
        let top = &o.tokens[at].top_logprobs;
        top[0].logprob - top[1].logprob
    };
    eprintln!(
        "greedy choices differ at token {at}: gaps {} and {}",
        gap(a),
        gap(b)
    );
    assert!(
        gap(a).min(gap(b)) < NEAR_TIE,
        "tokens differ at {at} where the choice was no near tie: {:?} vs {:?}",
        a.text,
        b.text
    );
}

/// The prompt cache's budget is part of the memory a GGUF decoder needs (the hub's
/// placement counts it too, `hub_types::decoder::default_gguf_decoder_bytes`): with room
/// for the weights, the slots' KV cache and the overhead but not the cache, the load is
/// refused; without a cache it fits.
#[tokio::test]
async fn the_prompt_cache_budget_counts_in_the_memory_check() {
    use hub_types::memory::{decoder_bytes, kv_cache_bytes, DecoderShape};
    let Some(dir) = gemma_dir("the_prompt_cache_budget_counts_in_the_memory_check") else {
        return;
    };
    let weights = std::fs::metadata(dir.join("gemma-3-270m-q4_k_m.gguf"))
        .unwrap()
        .len();
    let shape = DecoderShape {
        layers: 18,
        kv_heads: 1,
        head_dim: 256,
    };
    // cfg(2): 2 slots of 1024 tokens.
    let without_cache = decoder_bytes(weights, kv_cache_bytes(shape, 2 * 1024));
    let available = without_cache + (64 << 20);
    let try_load = |mib: usize| {
        let dir = dir.clone();
        let cfg = EngineConfig {
            memory_available_bytes: Some(available),
            ..with_cache(mib)
        };
        tokio::task::spawn_blocking(move || hub_worker::engine::Model::load(&dir, None, &cfg))
    };
    match try_load(256).await.unwrap() {
        Err(hub_worker::engine::LoadError::TooBig {
            needed_bytes,
            available_bytes,
        }) => {
            assert_eq!(needed_bytes, without_cache + (256 << 20));
            assert_eq!(available_bytes, available);
        }
        Err(e) => panic!("expected TooBig, got {e}"),
        Ok(_) => panic!("a 256 MiB prompt cache does not fit in {available} bytes"),
    }
    assert!(
        try_load(0).await.unwrap().is_ok(),
        "without the cache it fits"
    );
}
