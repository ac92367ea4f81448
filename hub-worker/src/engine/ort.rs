//! The ONNX Runtime backend (`engine-ort` feature): `ort` with `load-dynamic` against the
//! `libonnxruntime.so` of the PyPI `onnxruntime` wheel. It serves a graph derived from the
//! safetensors weights by [`super::onnx_export`] ("the hub can derive them"), or, for repos
//! without safetensors, the repo's own `model.onnx`.

use super::backend::{Backend, Batch, HiddenStates};
use super::error::LoadError;
use super::spec::ModelSpec;
use super::task::Task;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::Tensor;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

struct Runtime {
    env: ort::environment::Environment,
    threads: usize,
}

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// Whether ONNX Runtime's intra-op threads spin while idle. ONNX Runtime spins by default;
/// the worker does not: on a small box the cores are shared with tokenizer and HTTP threads
/// (and other processes), and idle spinning measurably cut throughput there.
static SPINNING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Sets intra-op spinning for sessions created from now on.
pub fn set_intra_op_spinning(on: bool) {
    SPINNING.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Loads `libonnxruntime.so` (from `dylib`, else `ORT_DYLIB_PATH`) and creates the
/// process-wide environment. Idempotent; the first call's thread count wins.
pub fn init(dylib: Option<&Path>, threads: usize) -> Result<(), String> {
    if RUNTIME.get().is_some() {
        return Ok(());
    }
    let path: PathBuf = dylib
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from))
        .ok_or_else(|| {
            "no libonnxruntime.so: pass --ort-dylib or set ORT_DYLIB_PATH \
             (scripts/worker/fetch-onnxruntime.sh fetches one)"
                .to_string()
        })?;
    if !path.is_file() {
        return Err(format!("{} does not exist", path.display()));
    }
    let env = ort::init_from(&path)
        .map_err(|e| format!("cannot load {}: {e}", path.display()))?
        .with_name("paddock-hub-worker")
        .build()
        .map_err(|e| format!("cannot create the ONNX Runtime environment: {e}"))?;
    let _ = RUNTIME.set(Runtime {
        env,
        threads: threads.max(1),
    });
    Ok(())
}

/// Compute threads given to [`init`] (1 before it).
pub fn threads() -> usize {
    RUNTIME.get().map_or(1, |rt| rt.threads)
}

/// Whether [`init`] succeeded.
pub fn is_available() -> bool {
    RUNTIME.get().is_some()
}

fn onnx_err(e: impl std::fmt::Display) -> LoadError {
    LoadError::Onnx(e.to_string())
}

/// Where a session's graph comes from.
enum Graph {
    Bytes(Vec<u8>),
    File(PathBuf),
}

impl Graph {
    fn session(&self, rt: &Runtime, threads: usize) -> Result<Session, LoadError> {
        let mut builder = Session::builder(&rt.env)
            .map_err(onnx_err)?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(onnx_err)?
            .with_intra_threads(threads)
            .map_err(onnx_err)?
            .with_inter_threads(1)
            .map_err(onnx_err)?
            .with_intra_op_spinning(SPINNING.load(std::sync::atomic::Ordering::Relaxed))
            .map_err(onnx_err)?;
        match self {
            Graph::Bytes(b) => builder.commit_from_memory(b).map_err(onnx_err),
            Graph::File(p) => builder.commit_from_file(p).map_err(onnx_err),
        }
    }
}

/// How the graph wants its inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
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

/// One session's input tensors for a batch, `rows × seq` row-major.
struct Feed {
    rows: usize,
    seq: usize,
    ids: Vec<i64>,
    types: Vec<i64>,
    positions: Vec<i64>,
    /// `rows × seq × seq` (packable graphs) or `rows × seq` (2-D mask).
    mask: Vec<i32>,
}

/// A model running in ONNX Runtime.
pub struct OrtBackend {
    session: Session,
    /// The same graph on every compute thread, for lone passes (see `queue::Pass::wide`).
    wide: Option<Session>,
    use_wide: bool,
    /// Names of the graph inputs we feed, in the session's order.
    inputs: Vec<String>,
    layout: Layout,
    hidden_output: Option<String>,
    logits_output: Option<String>,
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

impl OrtBackend {
    /// Loads the repo's ONNX file, or derives a graph from its safetensors, once, and makes
    /// `replicas` backends of it (each session holds its own weights: sharing ONNX Runtime's
    /// prepacked weights measured no smaller RSS for MiniLM). The compute threads are
    /// divided among the replicas; with more than one, replica 0 also gets a session on
    /// every thread for lone passes (see `queue::Pass::wide`).
    pub fn load(
        spec: &ModelSpec,
        task: Task,
        replicas: usize,
    ) -> Result<Vec<OrtBackend>, LoadError> {
        let rt = RUNTIME
            .get()
            .ok_or_else(|| LoadError::Onnx("ONNX Runtime is not initialised".to_string()))?;
        // Prefer the graph derived from safetensors (fused, checked against references);
        // the repo's own ONNX file serves repos without safetensors.
        let graph = match (&spec.onnx, spec.safetensors.is_empty()) {
            (_, false) => Graph::Bytes(super::onnx_export::export(spec, task)?),
            (Some(path), true) => Graph::File(path.clone()),
            (None, true) => {
                return Err(LoadError::NoWeights {
                    onnx_hint: " or model.onnx",
                })
            }
        };
        let replicas = replicas.max(1);
        let intra = (rt.threads / replicas).max(1);
        let mut out = Vec::with_capacity(replicas);
        for i in 0..replicas {
            let session = graph.session(rt, intra)?;
            let wide = match i == 0 && replicas > 1 && rt.threads > intra {
                true => Some(graph.session(rt, rt.threads)?),
                false => None,
            };
            out.push(OrtBackend::with_sessions(session, wide, spec, task)?);
        }
        Ok(out)
    }

    fn with_sessions(
        session: Session,
        wide: Option<Session>,
        spec: &ModelSpec,
        task: Task,
    ) -> Result<OrtBackend, LoadError> {
        let inputs: Vec<String> = session
            .inputs()
            .iter()
            .map(|i| i.name().to_string())
            .collect();
        for name in &inputs {
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
        let layout = match (has("position_ids"), has("attention_mask_3d")) {
            (true, true) => Layout::Packable {
                position_offset: spec.encoder.position_offset(),
                hidden: spec.encoder.hidden_size,
            },
            (false, false) => Layout::Padded,
            _ => {
                return Err(LoadError::Onnx(
                    "graph inputs position_ids and attention_mask_3d come together".to_string(),
                ))
            }
        };
        let outputs: Vec<String> = session
            .outputs()
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        let hidden_output = outputs
            .iter()
            .find(|o| *o == "last_hidden_state" || *o == "token_embeddings")
            .cloned();
        let logits_output = outputs.iter().find(|o| *o == "logits").cloned();
        match task {
            Task::TextClassification if logits_output.is_none() => {
                return Err(LoadError::UnsupportedTask {
                    task: task.to_string(),
                    reason: format!(
                        "the ONNX graph has no \"logits\" output (outputs: {outputs:?})"
                    ),
                })
            }
            t if t.is_embedding() && hidden_output.is_none() => {
                return Err(LoadError::UnsupportedTask {
                    task: task.to_string(),
                    reason: format!(
                        "the ONNX graph has no \"last_hidden_state\" output (outputs: {outputs:?})"
                    ),
                })
            }
            _ => {}
        }
        Ok(OrtBackend {
            session,
            wide,
            use_wide: false,
            inputs,
            layout,
            hidden_output,
            logits_output,
        })
    }

    /// Input tensors for `batch` as padded rows, one input per row.
    fn padded_feed(&self, batch: &Batch) -> Feed {
        let (rows, seq) = (batch.size(), batch.max_len);
        let mut feed = Feed {
            rows,
            seq,
            ids: batch.input_ids.iter().map(|x| i64::from(*x)).collect(),
            types: batch.type_ids.iter().map(|x| i64::from(*x)).collect(),
            positions: Vec::new(),
            mask: Vec::new(),
        };
        match self.layout {
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

    /// Input tensors for `batch` as one row holding every input back to back (packable
    /// graphs only): positions restart per input, the mask is block-diagonal.
    fn packed_feed(&self, batch: &Batch, position_offset: usize) -> Feed {
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

    fn run(&mut self, mut feed: Feed, output: &str) -> Result<(Vec<usize>, Vec<f32>), String> {
        let (rows, seq) = (feed.rows, feed.seq);
        let mut values = Vec::with_capacity(self.inputs.len());
        for name in &self.inputs {
            let value = match name.as_str() {
                "attention_mask_3d" => {
                    Tensor::from_array(([rows, seq, seq], std::mem::take(&mut feed.mask)))
                        .map(Tensor::into_dyn)
                }
                other => {
                    let data = match other {
                        "input_ids" => std::mem::take(&mut feed.ids),
                        "token_type_ids" => std::mem::take(&mut feed.types),
                        "position_ids" => std::mem::take(&mut feed.positions),
                        _ => feed.mask.iter().map(|x| i64::from(*x)).collect(),
                    };
                    Tensor::from_array(([rows, seq], data)).map(Tensor::into_dyn)
                }
            }
            .map_err(|e| e.to_string())?;
            values.push((name.clone(), value));
        }
        let session = match (&mut self.wide, self.use_wide) {
            (Some(wide), true) => wide,
            _ => &mut self.session,
        };
        let outputs = session.run(values).map_err(|e| e.to_string())?;
        let (shape, data) = outputs[output]
            .try_extract_tensor::<f32>()
            .map_err(|e| e.to_string())?;
        Ok((shape.iter().map(|d| *d as usize).collect(), data.to_vec()))
    }

    /// Last hidden states of `batch` in its padded layout, computed either as padded rows
    /// or as one packed row (`packed`, packable graphs only; positions past each input's
    /// length are zero then).
    pub fn embed_as(&mut self, batch: &Batch, packed: bool) -> Result<HiddenStates, String> {
        let out = self
            .hidden_output
            .clone()
            .ok_or("the graph has no hidden-state output")?;
        let feed = match (packed, self.layout) {
            (false, _) => self.padded_feed(batch),
            (
                true,
                Layout::Packable {
                    position_offset, ..
                },
            ) => self.packed_feed(batch, position_offset),
            (true, Layout::Padded) => return Err("this graph cannot run packed inputs".into()),
        };
        let (shape, data) = self.run(feed, &out)?;
        let dim = *shape.last().ok_or("scalar output")?;
        if !packed {
            return Ok(HiddenStates { data, dim });
        }
        let mut padded = vec![0.0; batch.size() * batch.max_len * dim];
        let mut start = 0;
        for (r, len) in batch.lengths.iter().enumerate() {
            let to = r * batch.max_len * dim;
            padded[to..to + len * dim].copy_from_slice(&data[start * dim..(start + len) * dim]);
            start += len;
        }
        Ok(HiddenStates { data: padded, dim })
    }

    /// Whether this graph can run several inputs as one packed row.
    pub fn can_pack(&self) -> bool {
        matches!(self.layout, Layout::Packable { .. })
    }
}

impl Backend for OrtBackend {
    fn name(&self) -> &'static str {
        "ort"
    }

    fn can_run_wide(&self) -> bool {
        self.wide.is_some()
    }

    fn set_wide(&mut self, wide: bool) {
        self.use_wide = wide && self.wide.is_some();
    }

    /// Packs the pass into one row when that costs less than padding it
    /// ([`packing_pays`]).
    fn embed(&mut self, batch: &Batch) -> Result<HiddenStates, String> {
        let packed = match self.layout {
            Layout::Packable { hidden, .. } => packing_pays(&batch.lengths, hidden),
            Layout::Padded => false,
        };
        self.embed_as(batch, packed)
    }

    fn packs(&self) -> bool {
        self.can_pack()
    }

    /// Passes of 4: with one single-threaded session per core, sorted passes of 4 ran
    /// 234 sentences/s on the benchmark corpus against 218 for passes of 8.
    fn preferred_forward_batch(&self) -> usize {
        4
    }

    fn predict(&mut self, batch: &Batch) -> Result<Vec<Vec<f32>>, String> {
        let out = self
            .logits_output
            .clone()
            .ok_or("the graph has no logits output")?;
        let (shape, data) = self.run(self.padded_feed(batch), &out)?;
        let n = *shape.last().ok_or("scalar output")?;
        Ok(data.chunks(n.max(1)).map(<[f32]>::to_vec).collect())
    }
}
