//! The prompt cache of one loaded GGUF model: finished sequences' KV state kept in host
//! memory after their slot was taken by another prompt, so a conversation that comes back
//! (more conversations than slots) restores its earlier turns instead of recomputing them
//! (llama-server's `--cache-ram`). Owned by the scheduler thread; least recently used
//! entries go first when the byte budget is full.
//!
//! The cache is generic over the saved state (`S`, llama.cpp's `SeqState` in the
//! scheduler) so its bookkeeping is tested without a model.

use llama_cpp_2::token::LlamaToken;

/// A slot's sequence is saved when at least this many of its tokens would be lost to the
/// next prompt: a shorter tail is cheaper to recompute than to copy and keep around.
pub(super) const SAVE_MIN_TOKENS: usize = 64;
/// An entry is restored only when it reuses at least this many more tokens than the best
/// free slot would: restoring copies the whole sequence's KV (a few MiB for a few hundred
/// tokens of Gemma-3-270M), a small gain is cheaper computed.
pub(super) const RESTORE_MIN_GAIN: usize = 32;

/// A sequence past the model's sliding window is saved without its last this many tokens
/// (see [`Entry::whole_from`]): such a state serves only a prompt that keeps all of it, and
/// the next turn of a chat re-renders the previous answer, whose end may tokenize otherwise.
pub(super) const WINDOW_SLACK: usize = 16;

/// One saved sequence.
pub(super) struct Entry<S> {
    /// The tokens whose keys and values the state holds (positions 0..len).
    pub tokens: Vec<LlamaToken>,
    pub state: S,
    pub bytes: usize,
    /// The smallest prefix that may be kept after a restore. llama.cpp saves only the cells
    /// of a sliding-window layer that a query at the sequence's last position can see, so
    /// a state of a sequence longer than the window restores exactly only for a prompt
    /// that keeps (almost) all of it: 0 when every position is saved, else `len - 1`.
    pub whole_from: usize,
    used: u64,
}

/// The entries and their budget.
pub(super) struct PromptCache<S> {
    budget: usize,
    bytes: usize,
    clock: u64,
    entries: Vec<Entry<S>>,
    hits: u64,
}

/// Tokens `a` and `b` share from their start.
pub(super) fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Tokens of `prompt` a sequence holding `cached` serves, given the smallest prefix it may
/// be cut to (`whole_from`): never the whole prompt (its last token is decoded for the
/// logits), and nothing when the shared part is shorter than `whole_from`.
pub(super) fn usable(cached: &[LlamaToken], whole_from: usize, prompt: &[LlamaToken]) -> usize {
    let keep = common_prefix(cached, prompt).min(prompt.len().saturating_sub(1));
    if keep < whole_from {
        0
    } else {
        keep
    }
}

impl<S> PromptCache<S> {
    /// A cache holding at most `budget` bytes of state (0: disabled).
    pub fn new(budget: usize) -> PromptCache<S> {
        PromptCache {
            budget,
            bytes: 0,
            clock: 0,
            entries: Vec::new(),
            hits: 0,
        }
    }

    pub fn enabled(&self) -> bool {
        self.budget > 0
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Restores so far.
    pub fn hits(&self) -> u64 {
        self.hits
    }

    /// Whether saving `tokens` would add anything: false when an entry already holds them
    /// (or a longer sequence starting with them).
    pub fn wants(&self, tokens: &[LlamaToken]) -> bool {
        self.enabled()
            && !self
                .entries
                .iter()
                .any(|e| e.tokens.len() >= tokens.len() && e.tokens.starts_with(tokens))
    }

    /// Stores a saved sequence as the most recent entry, dropping entries it extends and
    /// then the least recently used ones until it fits. An entry larger than the whole
    /// budget is not stored. Returns whether it was stored.
    pub fn insert(
        &mut self,
        tokens: Vec<LlamaToken>,
        state: S,
        bytes: usize,
        whole_from: usize,
    ) -> bool {
        if bytes > self.budget || !self.wants(&tokens) {
            return false;
        }
        // An entry this one extends serves nothing this one cannot (but a prompt that keeps
        // it whole past a sliding window, which is rare: the conversation went on).
        let mut i = 0;
        while i < self.entries.len() {
            if tokens.starts_with(&self.entries[i].tokens) {
                self.remove(i);
            } else {
                i += 1;
            }
        }
        while self.bytes + bytes > self.budget {
            let lru = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.used)
                .map(|(i, _)| i)
                .expect("entries hold the bytes over budget");
            self.remove(lru);
        }
        self.clock += 1;
        self.bytes += bytes;
        self.entries.push(Entry {
            tokens,
            state,
            bytes,
            whole_from,
            used: self.clock,
        });
        true
    }

    /// The entry serving the most tokens of `prompt` and how many (most recent first on a
    /// tie), if any serves one.
    pub fn best(&self, prompt: &[LlamaToken]) -> Option<(usize, usize)> {
        self.entries
            .iter()
            .enumerate()
            .map(|(i, e)| (i, usable(&e.tokens, e.whole_from, prompt), e.used))
            .filter(|&(_, n, _)| n > 0)
            .max_by_key(|&(_, n, used)| (n, used))
            .map(|(i, n, _)| (i, n))
    }

    /// Takes entry `i` out to restore it (the slot holds it from now on, and saves it
    /// again when it is evicted).
    pub fn take(&mut self, i: usize) -> Entry<S> {
        self.remove(i)
    }

    /// Counts a restore that served its prompt.
    pub fn hit(&mut self) {
        self.hits += 1;
    }

    fn remove(&mut self, i: usize) -> Entry<S> {
        let e = self.entries.swap_remove(i);
        self.bytes -= e.bytes;
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(ids: &[i32]) -> Vec<LlamaToken> {
        ids.iter().map(|&i| LlamaToken(i)).collect()
    }

    fn seq(start: i32, n: i32) -> Vec<LlamaToken> {
        toks(&(start..start + n).collect::<Vec<_>>())
    }

    #[test]
    fn the_least_recently_used_entry_goes_when_the_budget_is_full() {
        let mut c = PromptCache::new(250);
        assert!(c.insert(seq(0, 10), "a", 100, 0));
        assert!(c.insert(seq(100, 10), "b", 100, 0));
        // Restoring "a" and saving it again makes it the most recent.
        let a = c.take(c.best(&seq(0, 12)).unwrap().0);
        c.hit();
        assert_eq!(a.state, "a");
        assert!(c.insert(a.tokens, a.state, a.bytes, 0));
        assert!(c.insert(seq(200, 10), "c", 100, 0));
        assert_eq!((c.len(), c.bytes(), c.hits()), (2, 200, 1));
        assert!(c.best(&seq(100, 12)).is_none(), "b was the least recent");
        assert!(c.best(&seq(0, 12)).is_some());
        assert!(c.best(&seq(200, 12)).is_some());
    }

    #[test]
    fn an_entry_over_the_budget_or_a_zero_budget_stores_nothing() {
        let mut c = PromptCache::new(250);
        assert!(c.insert(seq(0, 10), "a", 100, 0));
        assert!(!c.insert(seq(100, 10), "huge", 251, 0));
        assert_eq!((c.len(), c.bytes()), (1, 100), "nothing evicted for it");
        let mut off = PromptCache::new(0);
        assert!(!off.enabled());
        assert!(!off.insert(seq(0, 10), "a", 1, 0));
        assert_eq!(off.len(), 0);
    }

    #[test]
    fn an_extended_sequence_replaces_its_prefix_and_a_prefix_is_not_stored() {
        let mut c = PromptCache::new(1000);
        assert!(c.insert(seq(0, 10), "short", 100, 0));
        assert!(c.insert(seq(0, 20), "long", 200, 0));
        assert_eq!((c.len(), c.bytes()), (1, 200));
        assert!(!c.wants(&seq(0, 15)));
        assert!(!c.insert(seq(0, 15), "mid", 150, 0));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn the_longest_usable_prefix_wins_and_a_windowed_state_serves_only_whole() {
        let mut c = PromptCache::new(1000);
        assert!(c.insert(seq(0, 10), "ten", 100, 0));
        // Thirty tokens of which the state holds only a window: usable from 29 kept tokens.
        assert!(c.insert(
            seq(0, 5).into_iter().chain(seq(50, 25)).collect(),
            "w",
            300,
            29
        ));
        // Shares 5 with "w" (under its 29), 10 with "ten".
        let p: Vec<_> = seq(0, 12);
        assert_eq!(c.best(&p).map(|(_, n)| n), Some(10));
        // Shares all 30 of "w" and goes on.
        let mut q: Vec<_> = seq(0, 5).into_iter().chain(seq(50, 25)).collect();
        q.extend(seq(900, 3));
        let (i, n) = c.best(&q).unwrap();
        assert_eq!((c.entries[i].state, n), ("w", 30));
        // Shares 28 of "w": below its window, so "ten" (5 shared) serves it.
        let r: Vec<_> = seq(0, 5)
            .into_iter()
            .chain(seq(50, 23))
            .chain(seq(7, 4))
            .collect();
        assert_eq!(c.best(&r).map(|(_, n)| n), Some(5));
        // Never the prompt's last token.
        assert_eq!(usable(&seq(0, 10), 0, &seq(0, 10)), 9);
        assert_eq!(usable(&seq(0, 10), 9, &seq(0, 10)), 9);
        assert_eq!(usable(&seq(0, 10), 10, &seq(0, 10)), 0);
        assert!(c.best(&seq(500, 4)).is_none());
    }
}
