//! The ONNX Runtime backend (`engine-ort` feature): `ort` with `load-dynamic` against the
//! `libonnxruntime.so` of the PyPI `onnxruntime` wheel. It serves a graph derived from the
//! safetensors weights by [`super::onnx_export`] ("the hub can derive them"), or, for repos
//! without safetensors, the repo's own `model.onnx`.

use super::backend::{Backend, Batch, HiddenStates};
use super::error::LoadError;
pub use super::feed::packing_pays;
use super::feed::{pick_outputs, Data, Feed, GraphEngine, Layout};
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
        let layout = Layout::of_inputs(&inputs, spec)?;
        let outputs: Vec<String> = session
            .outputs()
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        let (hidden_output, logits_output) = pick_outputs(&outputs, task)?;
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
}

impl GraphEngine for OrtBackend {
    fn layout(&self) -> Layout {
        self.layout
    }

    fn hidden_output(&self) -> Option<&str> {
        self.hidden_output.as_deref()
    }

    fn logits_output(&self) -> Option<&str> {
        self.logits_output.as_deref()
    }

    fn run_graph(
        &mut self,
        mut feed: Feed,
        output: &str,
    ) -> Result<(Vec<usize>, Vec<f32>), String> {
        let mut values = Vec::with_capacity(self.inputs.len());
        for name in &self.inputs {
            let value = match feed.take(name) {
                (shape, Data::I32(d)) => Tensor::from_array((shape, d)).map(Tensor::into_dyn),
                (shape, Data::I64(d)) => Tensor::from_array((shape, d)).map(Tensor::into_dyn),
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

    fn embed(&mut self, batch: &Batch) -> Result<HiddenStates, String> {
        self.embed_auto(batch)
    }

    fn packs(&self) -> bool {
        GraphEngine::can_pack(self)
    }

    /// Passes of 4: with one single-threaded session per core, sorted passes of 4 ran
    /// 234 sentences/s on the benchmark corpus against 218 for passes of 8.
    fn preferred_forward_batch(&self) -> usize {
        4
    }

    fn predict(&mut self, batch: &Batch) -> Result<Vec<Vec<f32>>, String> {
        self.logits(batch)
    }
}
