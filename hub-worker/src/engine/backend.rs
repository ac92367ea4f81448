//! The `Backend` trait every engine implements (candle, ort, openvino), and the padded
//! batch it receives. A backend runs on its own thread and owns its weights; it never sees
//! HTTP. Its passes fail with a typed [`RunError`].

use super::error::RunError;

/// A padded batch of tokenized inputs, row-major `(size, max_len)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub input_ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    /// Real tokens per row; positions at `len..max_len` are padding.
    pub lengths: Vec<usize>,
    pub max_len: usize,
}

impl Batch {
    /// Pads `(ids, type_ids)` rows to the longest with `pad_id` (type id 0).
    pub fn pad(rows: &[(&[u32], &[u32])], pad_id: u32) -> Batch {
        let max_len = rows.iter().map(|(ids, _)| ids.len()).max().unwrap_or(0);
        let mut input_ids = Vec::with_capacity(rows.len() * max_len);
        let mut type_ids = Vec::with_capacity(rows.len() * max_len);
        let mut lengths = Vec::with_capacity(rows.len());
        for (ids, types) in rows {
            input_ids.extend_from_slice(ids);
            input_ids.extend(std::iter::repeat_n(pad_id, max_len - ids.len()));
            type_ids.extend_from_slice(types);
            type_ids.extend(std::iter::repeat_n(0, max_len - types.len()));
            lengths.push(ids.len());
        }
        Batch {
            input_ids,
            type_ids,
            lengths,
            max_len,
        }
    }

    /// Number of sequences.
    pub fn size(&self) -> usize {
        self.lengths.len()
    }

    /// Whether any row is shorter than the longest (so attention needs a mask).
    pub fn has_padding(&self) -> bool {
        self.lengths.iter().any(|l| *l != self.max_len)
    }

    /// The 0/1 attention mask, row-major.
    pub fn attention_mask(&self) -> Vec<u32> {
        let mut m = Vec::with_capacity(self.size() * self.max_len);
        for len in &self.lengths {
            m.extend(std::iter::repeat_n(1, *len));
            m.extend(std::iter::repeat_n(0, self.max_len - len));
        }
        m
    }
}

/// Last hidden states of a batch, row-major `(size, max_len, dim)`.
#[derive(Debug, Clone)]
pub struct HiddenStates {
    pub data: Vec<f32>,
    pub dim: usize,
}

impl HiddenStates {
    /// The `(max_len, dim)` block of row `i`.
    pub fn row(&self, i: usize, max_len: usize) -> &[f32] {
        let n = max_len * self.dim;
        &self.data[i * n..(i + 1) * n]
    }
}

/// An inference engine for one loaded model. Runs on the model's backend thread only.
pub trait Backend: Send {
    /// Engine name for logs and `/info` (`candle`, `ort`, `openvino`).
    fn name(&self) -> &'static str;
    /// Whether the engine imported its compiled model from the worker's compiled-model
    /// cache (`None`: it keeps no such cache).
    fn compiled_from_cache(&self) -> Option<bool> {
        None
    }
    /// Encoder output: the last hidden state of every token.
    fn embed(&mut self, batch: &Batch) -> Result<HiddenStates, RunError>;
    /// Classification logits, one row per sequence.
    fn predict(&mut self, batch: &Batch) -> Result<Vec<Vec<f32>>, RunError>;
    /// Whether padding costs compute (CPU engines): the queue then budgets
    /// `max_len × size` tokens per batch instead of the sum of lengths.
    fn is_padded(&self) -> bool {
        true
    }
    /// Inputs per forward pass this engine is fastest at on this machine. A batch taken
    /// from the queue is sorted by length and run in passes of at most this many inputs:
    /// on CPU, large padded passes cost more per input than several small ones (measured
    /// in `docs/BENCHMARKS.md`; TEI caps CPU batches at 4 for the same reason).
    fn preferred_forward_batch(&self) -> usize {
        8
    }
    /// Whether the engine can run an embedding pass as one unpadded row holding every
    /// input back to back (and does so when that is cheaper). The queue then hands a
    /// short window out as one token-balanced pass per replica instead of sorted passes.
    fn packs(&self) -> bool {
        false
    }
    /// Whether this instance also holds a session on every compute thread for lone passes.
    fn can_run_wide(&self) -> bool {
        false
    }
    /// Most inputs a window may hold to run as one pass on every thread when all
    /// replicas idle, rather than split across them (1: single inputs only).
    fn wide_window(&self) -> usize {
        1
    }
    /// Runs the next passes on every compute thread (`true`) or on this replica's share.
    fn set_wide(&mut self, _wide: bool) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding() {
        let b = Batch::pad(&[(&[1, 2, 3], &[0, 0, 1]), (&[4], &[0])], 0);
        assert_eq!(b.input_ids, vec![1, 2, 3, 4, 0, 0]);
        assert_eq!(b.type_ids, vec![0, 0, 1, 0, 0, 0]);
        assert_eq!(b.attention_mask(), vec![1, 1, 1, 1, 0, 0]);
        assert!(b.has_padding());
        assert_eq!(b.size(), 2);
    }
}
