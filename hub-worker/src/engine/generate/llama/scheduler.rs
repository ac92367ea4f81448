//! The continuous-batching scheduler of one loaded GGUF model: one OS thread owning the
//! `LlamaContext`, N sequence slots, each with its own KV stream, and a bounded queue of
//! requests waiting for a slot.
//!
//! Every step builds one batch: the next token of each generating slot, then prompt
//! tokens of slots still prefilling (admission order) up to the prefill chunk, so a long
//! prompt is computed over several steps and never stalls the running streams for more
//! than a chunk. A step with no generating slot takes a chunk of every waiting prompt.
//! After the decode, each slot whose logits are ready samples its next token and sends it.
//!
//! A free slot keeps its tokens in the KV cache; a new request takes the free slot whose
//! cached tokens share the longest prefix with its prompt, and only the rest of the
//! prompt is computed (at least its last token, for the logits). A slot's sequence that is
//! about to be overwritten is saved to the host-memory prompt cache ([`super::prompt_cache`]),
//! and a prompt that an entry serves better than any free slot has it restored.

use super::super::stop::{Scan, StopScan};
use super::super::{DecoderStats, Finish, FinishReason, GenEvent, GenToken, TokenLogprob, Usage};
use super::offthread::{OffThread, Sampled};
use super::prompt_cache::{
    self, Entry, PromptCache, RESTORE_MIN_GAIN, SAVE_MIN_TOKENS, WINDOW_SLACK,
};
use super::sampler::{self, Sampling};
use crate::engine::error::{EngineError, RunError};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::vocab::LlamaVocab;
use llama_cpp_2::{LlamaStateSeqFlags, SeqState};
use std::cmp::Reverse;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

/// When every slot is free and a request comes, the scheduler waits for the rest of its
/// burst so the burst is prefilled together and then decodes in lockstep; a request that
/// misses it is prefilled next to the others' decoding, which stalls them and leaves the
/// streams out of step. Over HTTP the requests of a burst reach the scheduler spread over
/// tens of milliseconds (4 requests sent together by one client arrived over 12 ms, the
/// gateway and the worker's handler taking 14-25 ms each), so the wait runs until no
/// request came for a quiet gap, within a cap.
const QUIET_GAP: Duration = Duration::from_millis(8);
const BURST_CAP: Duration = Duration::from_millis(40);
/// After a wave of streams ended together their clients' next requests are expected: the
/// wait ends when as many have come, or after a longer quiet gap and cap.
const WAVE_QUIET_GAP: Duration = Duration::from_millis(25);
const WAVE_CAP: Duration = Duration::from_millis(60);
/// A wave is "recent" for this long after its streams ended.
const WAVE_MEMORY: Duration = Duration::from_secs(1);
/// After this many idle periods in a row that each served a single request (one client
/// sending one request after another), a request is admitted at once: no burst is coming,
/// and the quiet gap would only add to its time to first token.
const SEQUENTIAL_WAKES: u32 = 2;

/// A free slot is chosen for the prefix it shares with a prompt only when that prefix is at
/// least this long (or all of a shorter prompt but its last token, a repeated request);
/// below it, the empty or least recently used free slot is taken, so a new conversation
/// does not overwrite another one for the sake of a BOS token. (A repeated short prompt
/// also keeps its slot for another reason: llama.cpp's greedy choice at a near tie can
/// differ between KV streams, so a request sent twice could otherwise change its answer.)
const MIN_SLOT_REUSE: usize = 16;

/// How long the scheduler holds the next step for a constrained slot's token (sampled on
/// its own thread, [`super::offthread`]) when that slot's previous token came back quicker
/// than this: a cheap grammar keeps its stream in step with the others, a slow one never
/// holds them up by more than this once.
const GRAMMAR_GRACE: Duration = Duration::from_millis(5);
/// How often the scheduler looks at its queue and cancellations while every active slot
/// waits for its grammar.
const GRAMMAR_POLL: Duration = Duration::from_millis(10);

/// How willingly a free slot is overwritten (greater first): an empty slot, then the one
/// given a request longest ago.
fn overwrite_rank(s: &Slot) -> (bool, Reverse<u64>) {
    (s.cached.is_empty(), Reverse(s.used))
}

/// A request accepted by `submit`, waiting for a slot.
pub(super) struct Pending {
    pub tokens: Vec<LlamaToken>,
    pub max_tokens: Option<usize>,
    pub stop: Vec<String>,
    pub sampling: Sampling,
    /// A constrained request's samplers, on their own thread (`sampling` is then plain).
    pub off: Option<OffThread>,
    pub logprobs: Option<usize>,
    pub ignore_eos: bool,
    pub tx: UnboundedSender<GenEvent>,
}

/// What the submitting side and the scheduler thread share.
#[derive(Default)]
pub(super) struct Shared {
    pub queue: Mutex<VecDeque<Pending>>,
    pub wake: Condvar,
    pub shutdown: AtomicBool,
    pub active: AtomicU32,
    pub queued: AtomicU32,
    pub cancelled: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub cached_tokens: AtomicU64,
    pub generated: AtomicU64,
    pub cache_entries: AtomicU64,
    pub cache_bytes: AtomicU64,
    pub cache_hits: AtomicU64,
    pub grammar_timeouts: AtomicU64,
}

impl Shared {
    pub fn stats(&self) -> DecoderStats {
        DecoderStats {
            active_slots: self.active.load(Ordering::Relaxed),
            queued: self.queued.load(Ordering::Relaxed),
            cancelled_total: self.cancelled.load(Ordering::Relaxed),
            prompt_tokens_total: self.prompt_tokens.load(Ordering::Relaxed),
            cached_prompt_tokens_total: self.cached_tokens.load(Ordering::Relaxed),
            generated_tokens_total: self.generated.load(Ordering::Relaxed),
            prompt_cache_entries: self.cache_entries.load(Ordering::Relaxed),
            prompt_cache_bytes: self.cache_bytes.load(Ordering::Relaxed),
            prompt_cache_hits_total: self.cache_hits.load(Ordering::Relaxed),
            grammar_timeouts_total: self.grammar_timeouts.load(Ordering::Relaxed),
            grammar_threads_abandoned: super::offthread::abandoned() as u32,
        }
    }
}

/// The fixed shape of a scheduler.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub slots: usize,
    /// Tokens per slot (prompt + completion).
    pub context: usize,
    /// Prompt tokens per prompt in a step without decoding streams (when every waiting
    /// prompt is computed at once).
    pub prefill_chunk: usize,
    /// Prompt tokens per step next to decoding streams.
    pub mixed_chunk: usize,
    /// Bytes of saved sequence state the prompt cache may hold (0: no cache).
    pub prompt_cache_bytes: usize,
    /// The model's sliding window (`<arch>.attention.sliding_window`), if it declares one.
    pub sliding_window: Option<usize>,
    /// Longest a constrained request's grammar may take to choose one token.
    pub grammar_token_limit: Duration,
    /// Most time a constrained request's grammar may take in all.
    pub grammar_request_limit: Duration,
}

/// A running request.
struct Active {
    req: Pending,
    /// Prompt tokens reused from the slot's cache.
    reused: usize,
    /// Admission order: prompts are prefilled first come, first served.
    order: u64,
    /// The sampled token to decode in the next step.
    next: Option<LlamaToken>,
    /// Batch index of this slot's logits after the current decode (-1: none).
    logits_at: i32,
    /// Prompt tokens put into the current batch.
    feeding: usize,
    generated: usize,
    scan: StopScan,
    /// Since when its token is being sampled on its grammar thread.
    waiting: Option<Instant>,
    /// Its grammar thread's last token came back within [`GRAMMAR_GRACE`] (or none came
    /// yet): the next step waits that long for it.
    quick: bool,
    /// Time its grammar thread has spent on its tokens so far.
    grammar_spent: Duration,
}

impl Active {
    /// Whether it can go into the next batch (not waiting for its grammar).
    fn ready(&self) -> bool {
        self.waiting.is_none()
    }
}

struct Slot {
    seq: i32,
    /// Tokens whose keys and values are in the cache for this sequence (positions
    /// 0..len).
    cached: Vec<LlamaToken>,
    /// The shortest prefix of `cached` this sequence may be cut to and still decode as a
    /// fresh computation would: 0, except after restoring a state saved past a sliding
    /// window (see [`Entry::whole_from`]).
    whole_from: usize,
    /// When the slot was last given a request (the scheduler's admission count): the free
    /// slot used longest ago is the one overwritten first.
    used: u64,
    active: Option<Active>,
}

pub(super) struct Scheduler<'m> {
    ctx: LlamaContext<'m>,
    vocab: LlamaVocab<'m>,
    batch: LlamaBatch<'static>,
    slots: Vec<Slot>,
    limits: Limits,
    shared: std::sync::Arc<Shared>,
    admitted: u64,
    /// Streams that ended in the current step, and the last step where any ended: when
    /// and how big the last wave was.
    ended_in_step: usize,
    last_wave: Option<(Instant, usize)>,
    /// Idle periods in a row that served one request each, and `admitted` when the last
    /// one began.
    lone_streak: u32,
    admitted_at_wake: u64,
    /// Finished sequences kept in host memory.
    cache: PromptCache<SeqState>,
    /// Saved states of sequences longer than this lose their early sliding-window cells
    /// (`None`: no window known; set to 0 once a restore shows an unknown window).
    trims_above: Option<usize>,
    /// Reused buffers: candidates, a token's bytes, top log-probabilities, prefill order.
    candidates: Vec<LlamaTokenData>,
    piece: Vec<u8>,
    top: Vec<(usize, f32)>,
    order: Vec<usize>,
    /// Tokens of constrained requests, from their grammar threads.
    sampled: Receiver<Sampled>,
    /// Logits buffers back from grammar threads, for the next copy.
    spare: Vec<Vec<f32>>,
}

impl<'m> Scheduler<'m> {
    pub fn new(
        model: &'m LlamaModel,
        ctx: LlamaContext<'m>,
        limits: Limits,
        shared: std::sync::Arc<Shared>,
        sampled: Receiver<Sampled>,
    ) -> Scheduler<'m> {
        let slots = (0..limits.slots)
            .map(|i| Slot {
                seq: i as i32,
                cached: Vec::with_capacity(limits.context),
                whole_from: 0,
                used: 0,
                active: None,
            })
            .collect();
        Scheduler {
            ctx,
            vocab: model.vocab(),
            batch: LlamaBatch::new(limits.prefill_chunk * limits.slots + limits.slots, 1),
            slots,
            limits,
            shared,
            admitted: 0,
            ended_in_step: 0,
            last_wave: None,
            lone_streak: 0,
            admitted_at_wake: 0,
            cache: PromptCache::new(limits.prompt_cache_bytes),
            trims_above: limits.sliding_window,
            candidates: Vec::new(),
            piece: Vec::with_capacity(64),
            top: Vec::with_capacity(21),
            order: Vec::with_capacity(limits.slots),
            sampled,
            spare: Vec::new(),
        }
    }

    /// The thread's loop: until the model is dropped.
    pub fn run(mut self) {
        loop {
            if self.shared.shutdown.load(Ordering::Acquire) {
                break;
            }
            self.admit();
            self.reap_cancelled();
            if self.slots.iter().all(|s| s.active.is_none()) {
                self.idle();
                continue;
            }
            self.take_sampled();
            if self
                .slots
                .iter()
                .filter_map(|s| s.active.as_ref())
                .all(|a| !a.ready())
            {
                continue;
            }
            self.step();
        }
        // Shut down: whoever still listens learns the model is gone.
        for slot in &mut self.slots {
            if let Some(a) = slot.active.take() {
                let _ = a.req.tx.send(GenEvent::Failed(EngineError::Unavailable));
            }
        }
        let mut q = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
        for p in q.drain(..) {
            let _ = p.tx.send(GenEvent::Failed(EngineError::Unavailable));
        }
        self.shared.active.store(0, Ordering::Relaxed);
        self.shared.queued.store(0, Ordering::Relaxed);
    }

    /// Every slot is free: sleeps until a request comes, then waits a moment for the rest
    /// of its burst, so the burst is prefilled together and decodes in lockstep instead of
    /// being computed chunk by chunk next to the first one's decoding.
    fn idle(&mut self) {
        let shared = &*self.shared;
        let mut q = shared.queue.lock().unwrap_or_else(|e| e.into_inner());
        if !q.is_empty() || shared.shutdown.load(Ordering::Acquire) {
            return;
        }
        q = shared.wake.wait(q).unwrap_or_else(|e| e.into_inner());
        let woke = Instant::now();
        self.lone_streak = next_streak(self.lone_streak, self.admitted - self.admitted_at_wake);
        self.admitted_at_wake = self.admitted;
        let (expect, gap, cap) =
            burst_plan(self.last_wave, woke, self.limits.slots, self.lone_streak);
        let mut seen = q.len();
        let mut last_arrival = woke;
        while !shared.shutdown.load(Ordering::Acquire) {
            let Some(wait) = burst_wait(
                Instant::now(),
                woke,
                last_arrival,
                q.len(),
                expect,
                gap,
                cap,
            ) else {
                break;
            };
            q = shared
                .wake
                .wait_timeout(q, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            if q.len() > seen {
                seen = q.len();
                last_arrival = Instant::now();
            }
        }
        tracing::debug!(
            expect,
            arrived = q.len(),
            waited_us = woke.elapsed().as_micros() as u64,
            "generation: admitting a burst"
        );
        self.last_wave = None;
    }

    /// Moves queued requests into free slots.
    fn admit(&mut self) {
        if self.shared.queued.load(Ordering::Acquire) == 0 {
            return;
        }
        loop {
            if self.slots.iter().all(|s| s.active.is_some()) {
                return;
            }
            let next = {
                let mut q = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
                let p = q.pop_front();
                if p.is_some() {
                    self.shared.queued.fetch_sub(1, Ordering::AcqRel);
                }
                p
            };
            let Some(req) = next else { return };
            if req.tx.is_closed() {
                self.shared.cancelled.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            self.assign(req);
        }
    }

    /// Puts `req` into the free slot sharing the longest cached prefix with its prompt, or
    /// restores the prompt cache's entry that serves it better into a free slot.
    fn assign(&mut self, req: Pending) {
        let prompt = &req.tokens;
        let (mut best, slot_keep) = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.active.is_none())
            .map(|(i, s)| {
                let keep = prompt_cache::usable(&s.cached, s.whole_from, prompt);
                // Longest prefix first, when it saves more than a few tokens (a prefix of a
                // BOS and a template's first tokens is cheaper recomputed than another
                // conversation is lost); then the slot that overwrites least (empty, else
                // the one used longest ago); then the lowest slot, so a batch's sequences
                // are consecutive streams (a ubatch's attention spans the streams from its
                // lowest to highest id).
                let worth =
                    if keep >= 2 && keep >= MIN_SLOT_REUSE.min(prompt.len().saturating_sub(1)) {
                        keep
                    } else {
                        0
                    };
                (i, (worth, overwrite_rank(s), Reverse(i)), keep)
            })
            .max_by_key(|&(_, key, _)| key)
            .map(|(i, _, keep)| (i, keep))
            .expect("a free slot");
        if let Some((e, n)) = self.cache.best(prompt) {
            if n >= slot_keep + RESTORE_MIN_GAIN {
                // Into the free slot that overwrites least (empty, else used longest ago),
                // after saving it.
                let (target, _) = self
                    .slots
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.active.is_none())
                    .max_by_key(|&(i, s)| (overwrite_rank(s), Reverse(i)))
                    .expect("a free slot");
                let entry = self.cache.take(e);
                self.save(target);
                if self.restore(target, entry) {
                    best = target;
                }
            }
        }
        let prompt = &req.tokens;
        let slot = &self.slots[best];
        let mut keep = prompt_cache::usable(&slot.cached, slot.whole_from, prompt);
        if slot.cached.len() >= keep + SAVE_MIN_TOKENS {
            // What this prompt overwrites may come back (a conversation's next turn).
            self.save(best);
        }
        let slot = &mut self.slots[best];
        if keep < slot.cached.len() {
            let removed = self
                .ctx
                .clear_kv_cache_seq(Some(slot.seq as u32), Some(keep as u32), None)
                .unwrap_or(false);
            if !removed {
                let _ = self
                    .ctx
                    .clear_kv_cache_seq(Some(slot.seq as u32), None, None);
                keep = 0;
            }
            slot.cached.truncate(keep);
        }
        if keep > 0 && slot.whole_from == 0 && self.ctx.kv_cache_seq_pos_min(slot.seq) > 0 {
            // The cache no longer holds the start of this sequence (sliding window).
            let _ = self
                .ctx
                .clear_kv_cache_seq(Some(slot.seq as u32), None, None);
            slot.cached.clear();
            keep = 0;
        }
        if keep == 0 {
            slot.whole_from = 0;
        }
        self.shared
            .prompt_tokens
            .fetch_add(prompt.len() as u64, Ordering::Relaxed);
        self.shared
            .cached_tokens
            .fetch_add(keep as u64, Ordering::Relaxed);
        let decoding = self
            .slots
            .iter()
            .filter(|s| s.active.as_ref().is_some_and(|a| a.next.is_some()))
            .count();
        if decoding > 0 {
            tracing::debug!(
                slot = best,
                decoding,
                "generation: admitted next to decoding streams"
            );
        }
        let slot = &mut self.slots[best];
        self.shared.active.fetch_add(1, Ordering::Relaxed);
        self.admitted += 1;
        slot.used = self.admitted;
        let scan = StopScan::new(&req.stop);
        slot.active = Some(Active {
            req,
            reused: keep,
            order: self.admitted,
            next: None,
            logits_at: -1,
            feeding: 0,
            generated: 0,
            scan,
            waiting: None,
            quick: true,
            grammar_spent: Duration::ZERO,
        });
    }

    /// Saves slot `i`'s sequence to the prompt cache, when it is long enough and the cache
    /// does not hold it yet.
    ///
    /// The KV cache has a stream per slot (not unified): llama.cpp writes the cells of the
    /// sequence's own stream and reads them into the stream of the sequence restored to,
    /// so a state saved from one slot restores into any other. A sliding-window layer's
    /// cells are saved only as far as its last position can see them (whatever
    /// `swa_full`), which [`Entry::whole_from`] records.
    fn save(&mut self, i: usize) {
        let slot = &self.slots[i];
        let mut len = slot.cached.len();
        if len < SAVE_MIN_TOKENS || !self.cache.wants(&slot.cached) {
            return;
        }
        let windowed = slot.whole_from > 0 || self.trims_above.is_some_and(|w| len > w);
        if windowed && len >= SAVE_MIN_TOKENS + WINDOW_SLACK {
            // A state past the window serves only a prompt keeping all of it, and a chat
            // client's next turn re-renders the answer, whose last tokens may differ (trimmed
            // whitespace, the end-of-turn token): saved without them, it serves that turn.
            // The slot is being overwritten past this point anyway.
            let cut = len - WINDOW_SLACK;
            let seq = slot.seq;
            if self
                .ctx
                .clear_kv_cache_seq(Some(seq as u32), Some(cut as u32), None)
                .unwrap_or(false)
            {
                self.slots[i].cached.truncate(cut);
                len = cut;
            }
        }
        let slot = &self.slots[i];
        let size = self
            .ctx
            .state_seq_get_size_ext(slot.seq, LlamaStateSeqFlags::empty());
        if size > self.limits.prompt_cache_bytes {
            return;
        }
        let state = match self
            .ctx
            .state_seq_get(slot.seq, LlamaStateSeqFlags::empty())
        {
            Ok(state) => state,
            Err(e) => {
                tracing::warn!(slot = i, error = %e, "generation: cannot save a sequence");
                return;
            }
        };
        let whole_from = if windowed { len - 1 } else { 0 };
        let bytes = state.byte_len();
        self.cache
            .insert(slot.cached.clone(), state, bytes, whole_from);
        tracing::debug!(
            slot = i,
            tokens = len,
            bytes,
            entries = self.cache.len(),
            cache_bytes = self.cache.bytes(),
            "generation: sequence saved to the prompt cache"
        );
        self.publish_cache();
    }

    /// Restores `entry` into slot `i` (whose own sequence is dropped). On failure the slot
    /// is left empty and the prompt is computed from scratch.
    fn restore(&mut self, i: usize, entry: Entry<SeqState>) -> bool {
        let seq = self.slots[i].seq;
        let _ = self.ctx.clear_kv_cache_seq(Some(seq as u32), None, None);
        self.slots[i].cached.clear();
        self.slots[i].whole_from = 0;
        let restored = self.ctx.state_seq_set(&entry.state, seq);
        let (min, max) = (
            self.ctx.kv_cache_seq_pos_min(seq),
            self.ctx.kv_cache_seq_pos_max(seq),
        );
        let len = entry.tokens.len();
        if restored.is_err() || max + 1 != len as i32 || min < 0 {
            tracing::warn!(
                slot = i,
                tokens = len,
                pos_min = min,
                pos_max = max,
                error = ?restored.err(),
                "generation: cannot restore a saved sequence"
            );
            let _ = self.ctx.clear_kv_cache_seq(Some(seq as u32), None, None);
            self.publish_cache();
            return false;
        }
        // What the cells say wins over what was expected: a state that lost early cells
        // serves only a prompt keeping it (almost) whole.
        let whole_from = if min > 0 { len - 1 } else { 0 };
        if whole_from > entry.whole_from {
            tracing::warn!(
                tokens = len,
                pos_min = min,
                "generation: a saved sequence lost cells to a sliding window the model \
                 does not declare; saved states are restored whole only from now on"
            );
            self.trims_above = Some(0);
        }
        let slot = &mut self.slots[i];
        slot.cached = entry.tokens;
        slot.whole_from = whole_from;
        self.cache.hit();
        self.publish_cache();
        true
    }

    fn publish_cache(&self) {
        let s = &self.shared;
        s.cache_entries
            .store(self.cache.len() as u64, Ordering::Relaxed);
        s.cache_bytes
            .store(self.cache.bytes() as u64, Ordering::Relaxed);
        s.cache_hits.store(self.cache.hits(), Ordering::Relaxed);
    }

    /// Frees the slots whose client went away.
    fn reap_cancelled(&mut self) {
        for i in 0..self.slots.len() {
            let gone = self.slots[i]
                .active
                .as_ref()
                .is_some_and(|a| a.req.tx.is_closed());
            if gone {
                self.free(i);
                self.shared.cancelled.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn free(&mut self, i: usize) {
        if self.slots[i].active.take().is_some() {
            self.shared.active.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// One batch: decode tokens of the generating slots, then prompt chunks; decode;
    /// sample where logits are ready.
    fn step(&mut self) {
        self.batch.clear();
        for slot in &mut self.slots {
            let Some(a) = slot.active.as_mut() else {
                continue;
            };
            a.logits_at = -1;
            a.feeding = 0;
            if let Some(t) = a.next {
                a.logits_at = self.batch.n_tokens();
                self.batch
                    .add(t, slot.cached.len() as i32, &[slot.seq], true)
                    .expect("the batch holds a token per slot");
            }
        }
        // Prompt tokens, first admitted first, up to the chunk.
        self.order.clear();
        self.order.extend(
            self.slots
                .iter()
                .enumerate()
                .filter(|(_, s)| {
                    s.active.as_ref().is_some_and(|a| {
                        a.ready() && a.next.is_none() && s.cached.len() < a.req.tokens.len()
                    })
                })
                .map(|(i, _)| i),
        );
        let slots = &self.slots;
        self.order
            .sort_by_key(|&i| slots[i].active.as_ref().map_or(0, |a| a.order));
        // Next to decoding streams, one chunk in all, so no stream waits longer than one
        // chunk's compute for its next token. With no stream decoding, a chunk of every
        // waiting prompt: a burst of requests is computed together and then decodes in
        // lockstep, so later steps carry no prefill at all (llama-server batches a burst
        // the same way). Measured with `examples/bench-generate.rs --closed` (4 slots,
        // 512-token prompts): inter-token p99 at 8 clients 1.72 s -> 0.08 s, output
        // 31 -> 35 tok/s.
        let decoding = self.batch.n_tokens() > 0;
        let mut budget = if decoding {
            self.limits.mixed_chunk
        } else {
            self.limits.prefill_chunk * self.limits.slots
        };
        for k in 0..self.order.len() {
            if budget == 0 {
                break;
            }
            let slot = &mut self.slots[self.order[k]];
            let a = slot.active.as_mut().expect("prefilling slot");
            let from = slot.cached.len();
            let n = a.req.tokens.len();
            let take = budget.min(n - from).min(self.limits.prefill_chunk);
            for (pos, &t) in (from..from + take).zip(&a.req.tokens[from..from + take]) {
                self.batch
                    .add(t, pos as i32, &[slot.seq], pos == n - 1)
                    .expect("the batch holds the prefill chunk");
            }
            if from + take == n {
                a.logits_at = self.batch.n_tokens() - 1;
            }
            a.feeding = take;
            budget -= take;
        }
        if self.batch.n_tokens() == 0 {
            return;
        }
        self.ended_in_step = 0;
        if let Err(e) = self.ctx.decode(&mut self.batch) {
            self.fail_batch(&e.to_string());
            return;
        }
        // The batch is in the cache now.
        for slot in &mut self.slots {
            let Some(a) = slot.active.as_mut() else {
                continue;
            };
            if let Some(t) = a.next.take() {
                slot.cached.push(t);
            } else if a.feeding > 0 {
                let from = slot.cached.len();
                slot.cached
                    .extend_from_slice(&a.req.tokens[from..from + a.feeding]);
            }
        }
        for i in 0..self.slots.len() {
            if self.slots[i]
                .active
                .as_ref()
                .is_some_and(|a| a.logits_at >= 0)
            {
                self.sample(i);
            }
        }
        if self.ended_in_step > 0 {
            self.last_wave = Some((Instant::now(), self.ended_in_step));
        }
    }

    /// A failed decode: the requests in the batch fail, and their slots start clean.
    fn fail_batch(&mut self, message: &str) {
        tracing::error!(error = message, "llama.cpp decode failed");
        for i in 0..self.slots.len() {
            let in_batch = self.slots[i]
                .active
                .as_ref()
                .is_some_and(|a| a.next.is_some() || a.feeding > 0);
            if in_batch {
                if let Some(a) = self.slots[i].active.as_ref() {
                    let _ = a
                        .req
                        .tx
                        .send(GenEvent::Failed(EngineError::Backend(RunError::Llama(
                            message.to_string(),
                        ))));
                }
                let seq = self.slots[i].seq;
                let _ = self.ctx.clear_kv_cache_seq(Some(seq as u32), None, None);
                self.slots[i].cached.clear();
                self.slots[i].whole_from = 0;
                self.free(i);
            }
        }
    }

    /// Samples slot `i`'s next token from the logits of this step and sends it; ends the
    /// sequence when it is done. A constrained request's logits go to its grammar thread
    /// instead, and the slot waits for the token ([`Scheduler::take_sampled`]).
    fn sample(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        let a = slot.active.as_mut().expect("sampled slot is active");
        let logits = self.ctx.get_logits_ith(a.logits_at);
        if let Some(off) = a.req.off.as_ref() {
            let mut copy = self.spare.pop().unwrap_or_default();
            copy.clear();
            copy.extend_from_slice(logits);
            if off.send(copy) {
                a.waiting = Some(Instant::now());
            } else {
                let _ = a
                    .req
                    .tx
                    .send(GenEvent::Failed(EngineError::Backend(RunError::Llama(
                        "the request's sampling thread stopped".to_string(),
                    ))));
                self.free(i);
            }
            return;
        }
        let token = a.req.sampling.sample(logits, &mut self.candidates);
        let chosen_lp = a
            .req
            .logprobs
            .map(|k| sampler::logprobs(logits, token.0 as usize, k, &mut self.top));
        self.emit(i, token, chosen_lp);
    }

    /// Takes the tokens grammar threads sampled, waiting a moment for those that have been
    /// quick (or, when every active slot waits for one, up to [`GRAMMAR_POLL`]); then fails
    /// the requests whose token took longer than the limit.
    fn take_sampled(&mut self) {
        loop {
            let now = Instant::now();
            let mut waiting = false;
            let mut all_waiting = true;
            let mut until: Option<Instant> = None;
            for a in self.slots.iter().filter_map(|s| s.active.as_ref()) {
                match a.waiting {
                    Some(since) => {
                        waiting = true;
                        if a.quick {
                            // Until the last of the quick ones is back or out of grace.
                            let t = since + GRAMMAR_GRACE;
                            until = Some(until.map_or(t, |u| u.max(t)));
                        }
                    }
                    None => all_waiting = false,
                }
            }
            if !waiting {
                break;
            }
            if all_waiting {
                until = Some(now + GRAMMAR_POLL);
            }
            let got = match until {
                Some(t) if t > now => self.sampled.recv_timeout(t - now).ok(),
                _ => self.sampled.try_recv().ok(),
            };
            match got {
                Some(r) => self.deliver(r),
                None => break,
            }
        }
        for i in 0..self.slots.len() {
            let Some(a) = self.slots[i].active.as_ref() else {
                continue;
            };
            let Some(waited) = a.waiting.map(|t| t.elapsed()) else {
                continue;
            };
            if let Some(why) = self.grammar_over(a.generated, a.grammar_spent + waited, waited) {
                self.fail_grammar(i, why);
            }
        }
    }

    /// Why a constrained request must stop, if it must: its grammar took longer than the
    /// limit for one token (`token`: the time on the token now being chosen), or longer
    /// than the request's limit in all (`spent`).
    fn grammar_over(&self, generated: usize, spent: Duration, token: Duration) -> Option<String> {
        let (per_token, per_request) = (
            self.limits.grammar_token_limit,
            self.limits.grammar_request_limit,
        );
        let what = if token > per_token {
            format!(
                "took longer than {} ms (--gen-grammar-token-ms) to choose token {}",
                per_token.as_millis(),
                generated + 1
            )
        } else if spent > per_request {
            format!(
                "took longer than {} ms in all (--gen-grammar-request-ms), {} tokens in",
                per_request.as_millis(),
                generated
            )
        } else {
            return None;
        };
        Some(format!(
            "the grammar {what}: it is too costly to enforce. Alternatives that start alike \
             (anyOf, oneOf, type lists, enums), nested in each other, keep many grammar states \
             alive at once; make them distinguishable from their first characters or flatten them"
        ))
    }

    /// Fails constrained request `i` (its grammar thread is told to stop).
    fn fail_grammar(&mut self, i: usize, why: String) {
        if let Some(a) = self.slots[i].active.as_ref() {
            tracing::warn!(
                slot = i,
                generated = a.generated,
                grammar_ms = (a.grammar_spent.as_millis()) as u64,
                reason = %why,
                "generation: a grammar was too costly; its request failed"
            );
            let _ = a.req.tx.send(GenEvent::Failed(EngineError::Grammar(why)));
        }
        self.free(i);
        self.shared.grammar_timeouts.fetch_add(1, Ordering::Relaxed);
    }

    /// A token from a grammar thread: sent on, if its request still waits for it.
    fn deliver(&mut self, r: Sampled) {
        let found = self.slots.iter().position(|s| {
            s.active.as_ref().is_some_and(|a| {
                a.waiting.is_some() && a.req.off.as_ref().is_some_and(|o| o.ticket == r.ticket)
            })
        });
        let mut over = None;
        let chosen_lp = match found {
            Some(i) => {
                let a = self.slots[i].active.as_mut().expect("found active");
                a.waiting = None;
                a.quick = r.took < GRAMMAR_GRACE;
                a.grammar_spent += r.took;
                let (generated, spent) = (a.generated, a.grammar_spent);
                let lp = a
                    .req
                    .logprobs
                    .map(|k| sampler::logprobs(&r.logits, r.token.0 as usize, k, &mut self.top));
                over = self.grammar_over(generated, spent, r.took);
                lp
            }
            None => None,
        };
        if self.spare.len() < self.limits.slots {
            self.spare.push(r.logits);
        }
        match (found, over) {
            (Some(i), Some(why)) => self.fail_grammar(i, why),
            (Some(i), None) => self.emit(i, r.token, chosen_lp),
            (None, _) => {}
        }
    }

    /// Sends slot `i`'s sampled `token` (with its log-probability when asked); ends the
    /// sequence when it is done.
    fn emit(&mut self, i: usize, token: LlamaToken, chosen_lp: Option<f32>) {
        let slot = &mut self.slots[i];
        let a = slot.active.as_mut().expect("sampled slot is active");
        a.generated += 1;
        self.shared.generated.fetch_add(1, Ordering::Relaxed);

        if !a.req.ignore_eos && self.vocab.is_eog(token) {
            self.finish(i, FinishReason::Stop, None);
            return;
        }
        self.piece.clear();
        self.vocab
            .token_to_piece_into(token, &mut self.piece, true, None);
        let (text, stopped) = match a.scan.push(&self.piece) {
            Scan::Text(t) => (t, None),
            Scan::Stopped { before, stop } => (before, Some(stop)),
        };
        let (logprob, top_logprobs) = match chosen_lp {
            Some(lp) => {
                let own = token_logprob(&self.vocab, token.0, lp, Some(&self.piece));
                let top = self
                    .top
                    .iter()
                    .map(|&(id, lp)| token_logprob(&self.vocab, id as i32, lp, None))
                    .collect();
                (Some(own), top)
            }
            None => (None, Vec::new()),
        };
        let event = GenEvent::Token(GenToken {
            id: token.0 as u32,
            text,
            logprob,
            top_logprobs,
        });
        if a.req.tx.send(event).is_err() {
            self.free(i);
            self.shared.cancelled.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let Some(stop) = stopped {
            self.finish(i, FinishReason::Stop, Some(stop));
        } else if a.req.max_tokens.is_some_and(|m| a.generated >= m)
            || a.req.tokens.len() + a.generated >= self.limits.context
        {
            self.finish(i, FinishReason::Length, None);
        } else {
            a.next = Some(token);
        }
    }

    fn finish(&mut self, i: usize, reason: FinishReason, stop_string: Option<String>) {
        let Some(mut a) = self.slots[i].active.take() else {
            return;
        };
        self.shared.active.fetch_sub(1, Ordering::Relaxed);
        self.ended_in_step += 1;
        let tail = if stop_string.is_some() {
            String::new()
        } else {
            a.scan.finish()
        };
        let done = Finish {
            reason,
            usage: Usage {
                prompt_tokens: a.req.tokens.len(),
                completion_tokens: a.generated,
                cached_tokens: a.reused,
            },
            stop_string,
            tail,
        };
        if a.req.tx.send(GenEvent::Done(done)).is_err() {
            self.shared.cancelled.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// How the idle scheduler waits for a burst, woken at `now` by its first request: how
/// many requests to expect, the quiet gap that ends the wait, and its cap. A wave of N > 1
/// streams that ended together within `WAVE_MEMORY` brings back N requests; after
/// `SEQUENTIAL_WAKES` idle periods of one request each (`lone_streak`) the request is alone
/// and starts at once; otherwise up to every slot may be coming.
fn burst_plan(
    last_wave: Option<(Instant, usize)>,
    now: Instant,
    slots: usize,
    lone_streak: u32,
) -> (usize, Duration, Duration) {
    match last_wave {
        Some((at, n)) if n > 1 && now.saturating_duration_since(at) < WAVE_MEMORY => {
            (n.min(slots), WAVE_QUIET_GAP, WAVE_CAP)
        }
        _ if lone_streak >= SEQUENTIAL_WAKES => (1, Duration::ZERO, Duration::ZERO),
        _ => (slots, QUIET_GAP, BURST_CAP),
    }
}

/// The run of idle periods serving one request each, given the previous run and the
/// requests admitted since the last wake (the idle period that just ended, including any
/// that joined while it was busy). A burst that came unawaited after a run (its first
/// request started at once, the rest joined it) ends the run, so the next one is awaited.
fn next_streak(streak: u32, admitted_since_wake: u64) -> u32 {
    if admitted_since_wake == 1 {
        streak.saturating_add(1)
    } else {
        0
    }
}

/// How much longer to wait for the rest of a burst (`None`: start now): until `expect`
/// requests are queued, `gap` passed since the last arrival, or `cap` since waking.
fn burst_wait(
    now: Instant,
    woke: Instant,
    last_arrival: Instant,
    queued: usize,
    expect: usize,
    gap: Duration,
    cap: Duration,
) -> Option<Duration> {
    if queued >= expect {
        return None;
    }
    let until = (last_arrival + gap).min(woke + cap);
    until.checked_duration_since(now).filter(|d| !d.is_zero())
}

fn token_logprob(
    vocab: &LlamaVocab<'_>,
    id: i32,
    logprob: f32,
    bytes: Option<&[u8]>,
) -> TokenLogprob {
    let bytes = match bytes {
        Some(b) => b.to_vec(),
        None => vocab.token_to_piece(LlamaToken(id), true, None),
    };
    TokenLogprob {
        id: id as u32,
        text: String::from_utf8_lossy(&bytes).into_owned(),
        bytes,
        logprob,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_burst_is_awaited_until_a_quiet_gap_and_never_past_the_cap() {
        let t0 = Instant::now();
        let (expect, gap, cap) = burst_plan(None, t0, 4, 0);
        assert_eq!((expect, gap, cap), (4, QUIET_GAP, BURST_CAP));
        // One request so far: wait a whole gap.
        assert_eq!(burst_wait(t0, t0, t0, 1, expect, gap, cap), Some(QUIET_GAP));
        // A second one came 5 ms later: the gap restarts from it.
        let t5 = t0 + 5 * MS;
        assert_eq!(burst_wait(t5, t0, t5, 2, expect, gap, cap), Some(QUIET_GAP));
        // Nothing more within the gap: start.
        assert_eq!(
            burst_wait(t5 + QUIET_GAP, t0, t5, 2, expect, gap, cap),
            None
        );
        // Requests trickling in every 5 ms keep it waiting, but only up to the cap.
        let late = t0 + BURST_CAP - 2 * MS;
        assert_eq!(
            burst_wait(late, t0, late, 3, expect, gap, cap),
            Some(2 * MS)
        );
        assert_eq!(
            burst_wait(t0 + BURST_CAP, t0, t0 + BURST_CAP, 3, expect, gap, cap),
            None
        );
        // Every slot has a request: start at once.
        assert_eq!(burst_wait(t0, t0, t0, 4, expect, gap, cap), None);
    }

    #[test]
    fn after_a_wave_its_size_is_awaited() {
        let ended = Instant::now();
        let woke = ended + 3 * MS;
        let (expect, gap, cap) = burst_plan(Some((ended, 3)), woke, 4, 0);
        assert_eq!((expect, gap, cap), (3, WAVE_QUIET_GAP, WAVE_CAP));
        // 12 ms between arrivals is within the wave's gap (over HTTP they come spread out).
        let t = woke + 12 * MS;
        assert_eq!(
            burst_wait(t, woke, t, 2, expect, gap, cap),
            Some(WAVE_QUIET_GAP)
        );
        // The third of three: start without waiting for a fourth.
        assert_eq!(burst_wait(t, woke, t, 3, expect, gap, cap), None);
        // Capped by the slots.
        assert_eq!(burst_plan(Some((ended, 9)), woke, 4, 0).0, 4);
    }

    #[test]
    fn a_lone_stream_or_an_old_wave_says_nothing_about_the_next_burst() {
        let ended = Instant::now();
        let plan = (4, QUIET_GAP, BURST_CAP);
        assert_eq!(burst_plan(Some((ended, 1)), ended + MS, 4, 0), plan);
        assert_eq!(
            burst_plan(Some((ended, 3)), ended + WAVE_MEMORY, 4, 0),
            plan
        );
    }

    #[test]
    fn sequential_traffic_starts_at_once_and_a_burst_is_awaited_again() {
        let t0 = Instant::now();
        let burst = (4, QUIET_GAP, BURST_CAP);
        // One client, one request after another: the first wakes still wait.
        let mut streak = next_streak(0, 0);
        assert_eq!(burst_plan(None, t0, 4, streak), burst);
        streak = next_streak(streak, 1);
        assert_eq!(burst_plan(None, t0, 4, streak), burst);
        streak = next_streak(streak, 1);
        assert_eq!(streak, SEQUENTIAL_WAKES);
        let (expect, gap, cap) = burst_plan(None, t0, 4, streak);
        assert_eq!((expect, gap, cap), (1, Duration::ZERO, Duration::ZERO));
        // The lone request starts without waiting.
        assert_eq!(burst_wait(t0, t0, t0, 1, expect, gap, cap), None);
        streak = next_streak(streak, 1);
        assert_eq!(burst_plan(None, t0, 4, streak).0, 1);
        // A burst came (its first request started at once, three joined it): the next
        // wake waits for the rest of a burst again.
        streak = next_streak(streak, 4);
        assert_eq!(streak, 0);
        assert_eq!(burst_plan(None, t0, 4, streak), burst);
        // A wave that just ended still brings back its size, whatever the streak.
        let plan = burst_plan(Some((t0, 3)), t0 + MS, 4, 5);
        assert_eq!(plan, (3, WAVE_QUIET_GAP, WAVE_CAP));
    }
}
