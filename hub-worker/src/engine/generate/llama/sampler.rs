//! Per-request sampling on llama.cpp's samplers: a chain built from the request's
//! [`SamplingParams`] and an optional grammar ([`Constraint`]), applied to one slot's
//! logits. Plain greedy decoding (temperature 0, no grammar) is an argmax over the logits
//! and needs no candidate array at all; everything else reuses the scheduler's candidate
//! buffer, so a step allocates nothing here.

use super::super::schema_grammar::json_schema_to_gbnf;
use super::super::{Constraint, SamplingParams};
use crate::engine::error::EngineError;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::token::LlamaToken;

/// llama.cpp's JSON grammar (`grammars/json.gbnf`): any JSON object.
const JSON_GBNF: &str = include_str!("json.gbnf");

/// The sampling state of one request.
pub(super) struct Sampling {
    /// `None`: plain greedy (argmax).
    chain: Option<LlamaSampler>,
    /// The constraint, kept apart from the chain: a sampled token is first checked against
    /// it alone, and the whole vocabulary is masked only when that token is refused
    /// (llama.cpp's server does the same; masking 256k candidates every token is slow).
    grammar: Option<LlamaSampler>,
}

impl Sampling {
    /// Builds the samplers of a request; a constraint that does not compile is an
    /// [`EngineError::Grammar`] (answered at submit, never mid-stream).
    pub fn build(
        model: &LlamaModel,
        params: &SamplingParams,
        constraint: &Constraint,
        penalty_last_n: i32,
    ) -> Result<Sampling, EngineError> {
        let grammar = match constraint {
            Constraint::None => None,
            Constraint::JsonObject => Some(grammar(model, JSON_GBNF)?),
            Constraint::JsonSchema(schema) => {
                let gbnf = json_schema_to_gbnf(schema).map_err(|e| {
                    EngineError::Grammar(format!(
                        "the JSON schema cannot be turned into a grammar: {e}"
                    ))
                })?;
                Some(grammar(model, &gbnf).map_err(|_| {
                    EngineError::Grammar(
                        "llama.cpp's grammar parser refused the grammar made from the JSON \
                         schema (it refuses, for one, repetition counts over 2000: minItems, \
                         maxItems, minLength, maxLength, quantifiers in a pattern)"
                            .to_string(),
                    )
                })?)
            }
            Constraint::Grammar(gbnf) => Some(grammar(model, gbnf)?),
        };
        let chain = if params.is_greedy() {
            grammar.is_some().then(LlamaSampler::greedy)
        } else {
            let mut samplers = Vec::with_capacity(6);
            if params.presence_penalty != 0.0
                || params.frequency_penalty != 0.0
                || params.repetition_penalty != 1.0
            {
                samplers.push(LlamaSampler::penalties(
                    model.n_vocab(),
                    penalty_last_n,
                    params.repetition_penalty,
                    params.frequency_penalty,
                    params.presence_penalty,
                ));
            }
            if params.top_k > 0 {
                samplers.push(LlamaSampler::top_k(params.top_k as i32));
            }
            if params.top_p < 1.0 {
                samplers.push(LlamaSampler::top_p(params.top_p, 1));
            }
            if params.min_p > 0.0 {
                samplers.push(LlamaSampler::min_p(params.min_p, 1));
            }
            samplers.push(LlamaSampler::temp(params.temperature));
            let seed = params.seed.unwrap_or_else(rand::random::<u64>);
            // llama.cpp seeds with 32 bits; fold the high half in.
            samplers.push(LlamaSampler::dist((seed ^ (seed >> 32)) as u32));
            Some(LlamaSampler::chain_simple(samplers))
        };
        Ok(Sampling { chain, grammar })
    }

    /// Plain greedy sampling (an argmax), holding no sampler: what a request's
    /// [`Pending::sampling`](super::scheduler::Pending) is left with once its constrained
    /// sampling moved to a thread of its own.
    pub fn plain() -> Sampling {
        Sampling {
            chain: None,
            grammar: None,
        }
    }

    /// Whether a grammar constrains the tokens: sampling may then cost far more than a
    /// decode step (see [`super::offthread`]).
    pub fn is_constrained(&self) -> bool {
        self.grammar.is_some()
    }

    /// Picks the next token from `logits` (one row of the vocabulary) and records it in
    /// the samplers' state. `buf` is the caller's reusable candidate buffer.
    pub fn sample(&mut self, logits: &[f32], buf: &mut Vec<LlamaTokenData>) -> LlamaToken {
        let never = std::sync::atomic::AtomicBool::new(false);
        self.sample_unless(logits, buf, &mut Vec::new(), &never)
            .expect("never cancelled")
    }

    /// [`Sampling::sample`], giving up (`None`) when `cancel` is set: a grammar masks the
    /// vocabulary [`MASK_CHUNK`] candidates at a time and `cancel` is read between chunks,
    /// so a cancelled request stops within one chunk's work even when its grammar needs
    /// seconds or minutes for the whole vocabulary. `chunk` is a reusable buffer.
    pub fn sample_unless(
        &mut self,
        logits: &[f32],
        buf: &mut Vec<LlamaTokenData>,
        chunk: &mut Vec<LlamaTokenData>,
        cancel: &std::sync::atomic::AtomicBool,
    ) -> Option<LlamaToken> {
        let Some(chain) = self.chain.as_mut() else {
            return Some(LlamaToken(argmax(logits) as i32));
        };
        let token = match self.grammar.as_mut() {
            None => apply(chain, logits, buf),
            Some(grammar) => {
                let first = apply(chain, logits, buf);
                if allowed(grammar, first) {
                    first
                } else {
                    fill(buf, logits);
                    mask(grammar, buf, chunk, cancel)?;
                    select(chain, buf)
                }
            }
        };
        chain.accept(token);
        if let Some(g) = self.grammar.as_mut() {
            g.accept(token);
        }
        Some(token)
    }
}

/// Candidates a grammar masks per call of llama.cpp (see [`Sampling::sample_unless`]).
/// Masking is per candidate, so the result is the same as one call over all of them.
pub(super) const MASK_CHUNK: usize = 8192;

/// `buf` := every token of the vocabulary with its logit.
fn fill(buf: &mut Vec<LlamaTokenData>, logits: &[f32]) {
    buf.clear();
    buf.extend(
        logits
            .iter()
            .enumerate()
            .map(|(i, &l)| LlamaTokenData::new(LlamaToken(i as i32), l, 0.0)),
    );
}

/// Sets the logit of every candidate in `buf` that `grammar` refuses to -inf, a chunk at a
/// time; `None` when `cancel` was set between two chunks.
fn mask(
    grammar: &mut LlamaSampler,
    buf: &mut [LlamaTokenData],
    chunk: &mut Vec<LlamaTokenData>,
    cancel: &std::sync::atomic::AtomicBool,
) -> Option<()> {
    for part in buf.chunks_mut(MASK_CHUNK) {
        if cancel.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        chunk.clear();
        chunk.extend_from_slice(part);
        let mut arr = LlamaTokenDataArray::new(std::mem::take(chunk), false);
        arr.apply_sampler(grammar);
        debug_assert_eq!(arr.data.len(), part.len(), "a grammar only masks");
        for (d, m) in part.iter_mut().zip(&arr.data) {
            d.set_logit(m.logit());
        }
        *chunk = arr.data;
    }
    Some(())
}

/// Runs `chain` over the candidates in `buf` (left in `buf`); the selected token.
fn select(chain: &mut LlamaSampler, buf: &mut Vec<LlamaTokenData>) -> LlamaToken {
    let mut arr = LlamaTokenDataArray::new(std::mem::take(buf), false);
    arr.apply_sampler(chain);
    let token = arr
        .selected_token()
        .unwrap_or_else(|| arr.data.first().map_or(LlamaToken(0), |d| d.id()));
    *buf = arr.data;
    token
}

fn grammar(model: &LlamaModel, gbnf: &str) -> Result<LlamaSampler, EngineError> {
    LlamaSampler::grammar(model, gbnf, "root").map_err(|e| {
        EngineError::Grammar(format!(
            "the grammar does not parse (root rule `root`): {e}"
        ))
    })
}

/// Runs `chain` over all of `logits`; the selected token.
fn apply(chain: &mut LlamaSampler, logits: &[f32], buf: &mut Vec<LlamaTokenData>) -> LlamaToken {
    fill(buf, logits);
    select(chain, buf)
}

/// Whether the grammar lets `token` come next.
fn allowed(grammar: &mut LlamaSampler, token: LlamaToken) -> bool {
    let mut one = LlamaTokenDataArray::new(vec![LlamaTokenData::new(token, 1.0, 0.0)], false);
    one.apply_sampler(grammar);
    one.data.first().is_some_and(|d| d.logit().is_finite())
}

/// Index of the largest value (the first one on ties, as llama.cpp's greedy sampler).
pub(super) fn argmax(xs: &[f32]) -> usize {
    let mut best = 0;
    let mut max = f32::NEG_INFINITY;
    for (i, &x) in xs.iter().enumerate() {
        if x > max {
            max = x;
            best = i;
        }
    }
    best
}

/// Log-probabilities under the model's distribution (log-softmax of the raw logits, as
/// OpenAI reports them): `chosen`'s, and the `k` most likely tokens, best first, into
/// `top` (cleared first).
pub(super) fn logprobs(
    logits: &[f32],
    chosen: usize,
    k: usize,
    top: &mut Vec<(usize, f32)>,
) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = logits.iter().map(|&l| (l - max).exp()).sum();
    let lse = max + sum.ln();
    top.clear();
    if k > 0 {
        // A small sorted list (k <= 20): one pass over the vocabulary.
        for (i, &l) in logits.iter().enumerate() {
            if top.len() == k && l <= top[k - 1].1 {
                continue;
            }
            let at = top.partition_point(|&(_, v)| v >= l);
            if top.len() == k {
                top.pop();
            }
            top.insert(at, (i, l));
        }
        for t in top.iter_mut() {
            t.1 -= lse;
        }
    }
    logits[chosen] - lse
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_softmax_and_top_k() {
        let logits = [1.0f32, 3.0, 2.0, 3.0, -1.0];
        let mut top = Vec::new();
        let lp = logprobs(&logits, 2, 3, &mut top);
        let z: f32 = logits.iter().map(|l| l.exp()).sum();
        assert!((lp - (2.0f32.exp() / z).ln()).abs() < 1e-5);
        assert_eq!(top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 3, 2]);
        assert!(top.iter().all(|t| t.1 <= 0.0));
        let total: f32 = logits.iter().map(|&l| (l - z.ln()).exp()).sum();
        assert!((total - 1.0).abs() < 1e-5);
        assert_eq!(argmax(&logits), 1, "first of equal maxima");
    }
}
