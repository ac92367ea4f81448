//! Input tensors for the ONNX-graph engines (ONNX Runtime and OpenVINO run the same
//! graphs): which inputs a graph takes, padded and packed feeds, the packing cost model,
//! and the graph-input checks both engines share.

use super::backend::{Backend, Batch, HiddenStates};
use super::error::{LoadError, RunError};
use super::spec::ModelSpec;
use super::task::Task;
use std::path::PathBuf;

/// How a graph wants its inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// A repo's own ONNX file: padded rows with a 2-D `attention_mask`.
    Padded,
    /// The derived graph: `position_ids` and `attention_mask_3d` from the caller, so one
    /// row can carry several inputs back to back (see [`super::onnx_export`]).
    Packable {
        /// First position id (RoBERTa-style models start after the padding index).
        position_offset: usize,
        /// Hidden size, for the packing cost model.
        hidden: usize,
    },
}

impl Layout {
    /// The layout of a graph with inputs `inputs`; an input no engine can feed is an error
    /// naming every accepted one.
    pub fn of_inputs(inputs: &[String], spec: &ModelSpec) -> Result<Layout, LoadError> {
        for name in inputs {
            if !matches!(
                name.as_str(),
                "input_ids"
                    | "attention_mask"
                    | "token_type_ids"
                    | "position_ids"
                    | "attention_mask_3d"
            ) {
                return Err(LoadError::Onnx(format!(
                    "graph input {name:?} is not one of input_ids, attention_mask, token_type_ids, \
                     position_ids, attention_mask_3d"
                )));
            }
        }
        let has = |n: &str| inputs.iter().any(|i| i == n);
        match (has("position_ids"), has("attention_mask_3d")) {
            (true, true) => Ok(Layout::Packable {
                position_offset: spec.encoder.position_offset(),
                hidden: spec.encoder.hidden_size,
            }),
            (false, false) => Ok(Layout::Padded),
            _ => Err(LoadError::Onnx(
                "graph inputs position_ids and attention_mask_3d come together".to_string(),
            )),
        }
    }

    /// Whether an embedding pass of `lengths` runs cheaper as one packed row.
    pub fn packs(&self, lengths: &[usize]) -> bool {
        match self {
            Layout::Packable { hidden, .. } => packing_pays(lengths, *hidden),
            Layout::Padded => false,
        }
    }
}

/// The graph outputs an engine reads: `(hidden states, logits)`, checked against the task.
fn pick_outputs(
    outputs: &[String],
    task: Task,
) -> Result<(Option<String>, Option<String>), LoadError> {
    let hidden = outputs
        .iter()
        .find(|o| *o == "last_hidden_state" || *o == "token_embeddings")
        .cloned();
    let logits = outputs.iter().find(|o| *o == "logits").cloned();
    match task {
        Task::TextClassification if logits.is_none() => Err(LoadError::UnsupportedTask {
            task: task.to_string(),
            reason: format!("the ONNX graph has no \"logits\" output (outputs: {outputs:?})"),
        }),
        t if t.is_embedding() && hidden.is_none() => Err(LoadError::UnsupportedTask {
            task: task.to_string(),
            reason: format!(
                "the ONNX graph has no \"last_hidden_state\" output (outputs: {outputs:?})"
            ),
        }),
        _ => Ok((hidden, logits)),
    }
}

/// Whether running `lengths` as one packed row costs less than padding them to the
/// longest. Cost per token of a layer ≈ its dense layers (fixed) plus attention over the
/// row (∝ row length); padding wastes dense work on pad tokens, packing wastes attention
/// work across inputs (the 3-D mask only hides it). `hidden / 3.6` tokens of attention
/// cost as much as the dense layers of one token: measured with ONNX Runtime's profiler
/// for MiniLM (attention 27% of a 40-token pass, single thread).
pub fn packing_pays(lengths: &[usize], hidden: usize) -> bool {
    if lengths.len() < 2 {
        return false;
    }
    let att = (hidden as f64 / 3.6).max(1.0);
    let longest = lengths.iter().copied().max().unwrap_or(0) as f64;
    let total = lengths.iter().sum::<usize>() as f64;
    let padded = lengths.len() as f64 * longest * (1.0 + longest / att);
    let packed = total * (1.0 + total / att);
    packed < padded
}

/// One pass's input tensors, `rows × seq` row-major.
pub struct Feed {
    pub rows: usize,
    pub seq: usize,
    pub ids: Vec<i64>,
    pub types: Vec<i64>,
    pub positions: Vec<i64>,
    /// `rows × seq × seq` (packable graphs) or `rows × seq` (2-D mask).
    pub mask: Vec<i32>,
}

impl Feed {
    /// `batch` as padded rows, one input per row.
    pub fn padded(batch: &Batch, layout: Layout) -> Feed {
        let (rows, seq) = (batch.size(), batch.max_len);
        let mut feed = Feed {
            rows,
            seq,
            ids: batch.input_ids.iter().map(|x| i64::from(*x)).collect(),
            types: batch.type_ids.iter().map(|x| i64::from(*x)).collect(),
            positions: Vec::new(),
            mask: Vec::new(),
        };
        match layout {
            Layout::Padded => {
                feed.mask = batch.attention_mask().iter().map(|x| *x as i32).collect();
            }
            Layout::Packable {
                position_offset, ..
            } => {
                feed.positions = (0..rows)
                    .flat_map(|_| (0..seq).map(|p| (p + position_offset) as i64))
                    .collect();
                feed.mask = vec![0; rows * seq * seq];
                for (r, len) in batch.lengths.iter().enumerate() {
                    for q in 0..seq {
                        let at = (r * seq + q) * seq;
                        feed.mask[at..at + len].fill(1);
                    }
                }
            }
        }
        feed
    }

    /// `batch` as one row holding every input back to back (packable graphs only):
    /// positions restart per input, the mask is block-diagonal.
    pub fn packed(batch: &Batch, position_offset: usize) -> Feed {
        let seq: usize = batch.lengths.iter().sum();
        let mut feed = Feed {
            rows: 1,
            seq,
            ids: Vec::with_capacity(seq),
            types: Vec::with_capacity(seq),
            positions: Vec::with_capacity(seq),
            mask: vec![0; seq * seq],
        };
        let mut start = 0;
        for (r, len) in batch.lengths.iter().enumerate() {
            let row = r * batch.max_len..r * batch.max_len + len;
            feed.ids
                .extend(batch.input_ids[row.clone()].iter().map(|x| i64::from(*x)));
            feed.types
                .extend(batch.type_ids[row].iter().map(|x| i64::from(*x)));
            feed.positions
                .extend((0..*len).map(|p| (p + position_offset) as i64));
            for q in start..start + len {
                feed.mask[q * seq + start..q * seq + start + len].fill(1);
            }
            start += len;
        }
        feed
    }

    /// The feed for an embedding pass of `batch`, packed or padded.
    pub fn for_embedding(batch: &Batch, layout: Layout, packed: bool) -> Result<Feed, RunError> {
        match (packed, layout) {
            (false, _) => Ok(Feed::padded(batch, layout)),
            (
                true,
                Layout::Packable {
                    position_offset, ..
                },
            ) => Ok(Feed::packed(batch, position_offset)),
            (true, Layout::Padded) => Err(RunError::CannotPack),
        }
    }

    /// Takes the tensor for graph input `name`: its shape and data (int32 for the 3-D
    /// mask, int64 otherwise). Each input can be taken once.
    pub fn take(&mut self, name: &str) -> (Vec<usize>, Data) {
        let (rows, seq) = (self.rows, self.seq);
        match name {
            "attention_mask_3d" => (
                vec![rows, seq, seq],
                Data::I32(std::mem::take(&mut self.mask)),
            ),
            "input_ids" => (vec![rows, seq], Data::I64(std::mem::take(&mut self.ids))),
            "token_type_ids" => (vec![rows, seq], Data::I64(std::mem::take(&mut self.types))),
            "position_ids" => (
                vec![rows, seq],
                Data::I64(std::mem::take(&mut self.positions)),
            ),
            _ => (
                vec![rows, seq],
                Data::I64(self.mask.iter().map(|x| i64::from(*x)).collect()),
            ),
        }
    }
}

/// One input tensor's elements.
pub enum Data {
    I64(Vec<i64>),
    I32(Vec<i32>),
}

/// Where a graph comes from: derived from the safetensors when the repo has them (fused,
/// checked against references), else the repo's own `model.onnx`.
pub enum Graph {
    Bytes(Vec<u8>),
    File(PathBuf),
}

impl Graph {
    pub fn of(spec: &ModelSpec, task: Task) -> Result<Graph, LoadError> {
        match (&spec.onnx, spec.safetensors.is_empty()) {
            (_, false) => Ok(Graph::Bytes(super::onnx_export::export(spec, task)?)),
            (Some(path), true) => Ok(Graph::File(path.clone())),
            (None, true) => Err(LoadError::NoWeights {
                onnx_hint: " or model.onnx",
            }),
        }
    }
}

/// The inputs a graph takes and the outputs the engines read.
#[derive(Debug, Clone)]
pub struct GraphIo {
    /// Names of the graph inputs we feed, in the graph's order.
    pub inputs: Vec<String>,
    pub layout: Layout,
    pub hidden_output: Option<String>,
    pub logits_output: Option<String>,
}

impl GraphIo {
    /// Checks a graph's input and output names against what `task` needs.
    pub fn new(
        inputs: Vec<String>,
        outputs: &[String],
        spec: &ModelSpec,
        task: Task,
    ) -> Result<GraphIo, LoadError> {
        let layout = Layout::of_inputs(&inputs, spec)?;
        let (hidden_output, logits_output) = pick_outputs(outputs, task)?;
        Ok(GraphIo {
            inputs,
            layout,
            hidden_output,
            logits_output,
        })
    }
}

/// One engine's compiled graph (an ONNX Runtime session, an OpenVINO infer request).
pub trait GraphSession: Send {
    /// Engine name for logs and `/info`.
    const ENGINE: &'static str;
    /// [`Backend::wide_window`] of this engine.
    const WIDE_WINDOW: usize;
    /// Whether this session was imported from a compiled-model cache (`None`: the
    /// engine keeps none).
    fn loaded_from_cache(&self) -> Option<bool> {
        None
    }
    /// Runs the graph on `feed` (tensors taken by the names in `inputs`); returns
    /// `output`'s shape and elements.
    fn run(
        &mut self,
        feed: Feed,
        inputs: &[String],
        output: &str,
    ) -> Result<(Vec<usize>, Vec<f32>), RunError>;
}

/// A model replica on an ONNX-graph engine: its session on its share of the compute
/// threads and, for replica 0 of several, one on every thread for lone passes (see
/// `queue::Pass::wide`).
pub struct GraphBackend<S> {
    session: S,
    wide: Option<S>,
    use_wide: bool,
    io: GraphIo,
}

impl<S: GraphSession> GraphBackend<S> {
    /// `replicas` backends of one graph: the `threads` compute threads are divided among
    /// them, and with more than one, replica 0 also gets a session on every thread.
    /// `session(n)` compiles the graph for `n` threads.
    pub fn replicas(
        io: GraphIo,
        threads: usize,
        replicas: usize,
        mut session: impl FnMut(usize) -> Result<S, LoadError>,
    ) -> Result<Vec<Self>, LoadError> {
        let replicas = replicas.max(1);
        let intra = Self::share(threads, replicas);
        let mut out = Vec::with_capacity(replicas);
        for i in 0..replicas {
            let own = session(intra)?;
            let wide = match i == 0 && replicas > 1 && threads > intra {
                true => Some(session(threads)?),
                false => None,
            };
            out.push(GraphBackend {
                session: own,
                wide,
                use_wide: false,
                io: io.clone(),
            });
        }
        Ok(out)
    }

    /// Compute threads of each of `replicas` replicas' own session.
    pub fn share(threads: usize, replicas: usize) -> usize {
        (threads / replicas.max(1)).max(1)
    }

    fn run(&mut self, feed: Feed, output: &str) -> Result<(Vec<usize>, Vec<f32>), RunError> {
        let session = match (&mut self.wide, self.use_wide) {
            (Some(wide), true) => wide,
            _ => &mut self.session,
        };
        session.run(feed, &self.io.inputs, output)
    }
}

/// Embedding passes of a graph engine, padded or packed (the tests drive them directly).
pub trait GraphEngine {
    /// Last hidden states of `batch` in its padded layout, computed as padded rows or as
    /// one packed row (`packed`, packable graphs only; positions past each input's length
    /// are zero then).
    fn embed_as(&mut self, batch: &Batch, packed: bool) -> Result<HiddenStates, RunError>;
    /// Whether this graph can run several inputs as one packed row.
    fn can_pack(&self) -> bool;
}

impl<S: GraphSession> GraphEngine for GraphBackend<S> {
    fn embed_as(&mut self, batch: &Batch, packed: bool) -> Result<HiddenStates, RunError> {
        let out = self
            .io
            .hidden_output
            .clone()
            .ok_or(RunError::MissingOutput("hidden-state"))?;
        let feed = Feed::for_embedding(batch, self.io.layout, packed)?;
        let (shape, data) = self.run(feed, &out)?;
        let dim = *shape.last().ok_or(RunError::ScalarOutput)?;
        Ok(hidden_states(batch, packed, data, dim))
    }

    fn can_pack(&self) -> bool {
        matches!(self.io.layout, Layout::Packable { .. })
    }
}

impl<S: GraphSession> Backend for GraphBackend<S> {
    fn name(&self) -> &'static str {
        S::ENGINE
    }

    fn compiled_from_cache(&self) -> Option<bool> {
        self.session.loaded_from_cache()
    }

    fn can_run_wide(&self) -> bool {
        self.wide.is_some()
    }

    fn set_wide(&mut self, wide: bool) {
        self.use_wide = wide && self.wide.is_some();
    }

    fn wide_window(&self) -> usize {
        S::WIDE_WINDOW
    }

    /// Packs the pass into one row when that costs less than padding it
    /// ([`packing_pays`]).
    fn embed(&mut self, batch: &Batch) -> Result<HiddenStates, RunError> {
        let packed = self.io.layout.packs(&batch.lengths);
        self.embed_as(batch, packed)
    }

    fn packs(&self) -> bool {
        self.can_pack()
    }

    /// Passes of 4: with one single-threaded session per core, sorted passes of 4 ran
    /// 234 sentences/s on the benchmark corpus against 218 for passes of 8 (ONNX Runtime).
    fn preferred_forward_batch(&self) -> usize {
        4
    }

    /// Classification logits, one row per input (always padded: the head reads each
    /// row's first token).
    fn predict(&mut self, batch: &Batch) -> Result<Vec<Vec<f32>>, RunError> {
        let out = self
            .io
            .logits_output
            .clone()
            .ok_or(RunError::MissingOutput("logits"))?;
        let (shape, data) = self.run(Feed::padded(batch, self.io.layout), &out)?;
        let n = *shape.last().ok_or(RunError::ScalarOutput)?;
        Ok(data.chunks(n.max(1)).map(<[f32]>::to_vec).collect())
    }
}

/// Hidden states of a pass in `batch`'s padded layout: as they come for padded rows;
/// unpacked (zeros past each input's length) for a packed row.
fn hidden_states(batch: &Batch, packed: bool, data: Vec<f32>, dim: usize) -> HiddenStates {
    if !packed {
        return HiddenStates { data, dim };
    }
    let mut padded = vec![0.0; batch.size() * batch.max_len * dim];
    let mut start = 0;
    for (r, len) in batch.lengths.iter().enumerate() {
        let to = r * batch.max_len * dim;
        padded[to..to + len * dim].copy_from_slice(&data[start * dim..(start + len) * dim]);
        start += len;
    }
    HiddenStates { data: padded, dim }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch() -> Batch {
        Batch::pad(&[(&[5, 6, 7], &[0, 0, 1]), (&[8], &[0])], 0)
    }

    #[test]
    fn padded_feed_for_a_repo_graph_has_a_2d_mask() {
        let mut f = Feed::padded(&batch(), Layout::Padded);
        assert_eq!((f.rows, f.seq), (2, 3));
        assert_eq!(f.take("input_ids").1.i64(), vec![5, 6, 7, 8, 0, 0]);
        assert_eq!(f.take("token_type_ids").1.i64(), vec![0, 0, 1, 0, 0, 0]);
        let (shape, mask) = f.take("attention_mask");
        assert_eq!(shape, vec![2, 3]);
        assert_eq!(mask.i64(), vec![1, 1, 1, 1, 0, 0]);
    }

    #[test]
    fn padded_feed_for_the_derived_graph_has_positions_and_a_3d_mask() {
        let layout = Layout::Packable {
            position_offset: 2,
            hidden: 384,
        };
        let mut f = Feed::padded(&batch(), layout);
        assert_eq!(f.take("position_ids").1.i64(), vec![2, 3, 4, 2, 3, 4]);
        let (shape, mask) = f.take("attention_mask_3d");
        assert_eq!(shape, vec![2, 3, 3]);
        // Every query of row 0 sees its 3 tokens; of row 1, only its first.
        assert_eq!(
            mask.i32(),
            vec![1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 0, 0, 1, 0, 0]
        );
    }

    #[test]
    fn packed_feed_is_one_row_with_block_diagonal_attention() {
        assert!(
            Feed::for_embedding(&batch(), Layout::Padded, true).is_err(),
            "a repo's own graph cannot pack"
        );
        let layout = Layout::Packable {
            position_offset: 0,
            hidden: 384,
        };
        let mut f = Feed::for_embedding(&batch(), layout, true).unwrap();
        assert_eq!((f.rows, f.seq), (1, 4));
        assert_eq!(f.take("input_ids").1.i64(), vec![5, 6, 7, 8]);
        assert_eq!(f.take("position_ids").1.i64(), vec![0, 1, 2, 0]);
        let (shape, mask) = f.take("attention_mask_3d");
        assert_eq!(shape, vec![1, 4, 4]);
        #[rustfmt::skip]
        assert_eq!(mask.i32(), vec![
            1, 1, 1, 0,
            1, 1, 1, 0,
            1, 1, 1, 0,
            0, 0, 0, 1,
        ]);
        // Back to the padded layout: row 1's padding positions are zero.
        let hidden = hidden_states(&batch(), true, (1..=8).map(|x| x as f32).collect(), 2);
        assert_eq!(
            hidden.data,
            vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 0.0, 0.0, 0.0, 0.0]
        );
    }

    #[test]
    fn packing_pays_for_unequal_inputs_only() {
        assert!(!packing_pays(&[30], 384), "one input");
        assert!(packing_pays(&[5, 40], 384));
        assert!(!packing_pays(&[40, 40, 41, 40], 384));
    }

    trait Elements {
        fn i64(self) -> Vec<i64>;
        fn i32(self) -> Vec<i32>;
    }

    impl Elements for Data {
        fn i64(self) -> Vec<i64> {
            match self {
                Data::I64(v) => v,
                Data::I32(_) => panic!("int32 where int64 was expected"),
            }
        }
        fn i32(self) -> Vec<i32> {
            match self {
                Data::I32(v) => v,
                Data::I64(_) => panic!("int64 where int32 was expected"),
            }
        }
    }
}
