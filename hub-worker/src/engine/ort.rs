//! The ONNX Runtime backend (`engine-ort` feature): `ort` with `load-dynamic` against the
//! `libonnxruntime.so` of the PyPI `onnxruntime` wheel. It serves a graph derived from the
//! safetensors weights by [`super::onnx_export`] ("the hub can derive them"), or, for repos
//! without safetensors, the repo's own `model.onnx`.

use super::error::{InitError, LoadError, RunError};
pub use super::feed::packing_pays;
use super::feed::{Data, Feed, Graph, GraphBackend, GraphIo, GraphSession};
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
pub fn init(dylib: Option<&Path>, threads: usize) -> Result<(), InitError> {
    if RUNTIME.get().is_some() {
        return Ok(());
    }
    let path: PathBuf = dylib
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from))
        .ok_or(InitError::NoLibrary {
            library: "libonnxruntime.so",
            flag: "ort-dylib",
            env: "ORT_DYLIB_PATH",
            script: "scripts/worker/fetch-onnxruntime.sh",
        })?;
    if !path.is_file() {
        return Err(InitError::Missing(path));
    }
    let env = ort::init_from(&path)
        .map_err(|e| InitError::Library {
            path: path.clone(),
            message: e.to_string(),
        })?
        .with_name("paddock-hub-worker")
        .build()
        .map_err(|e| InitError::Runtime {
            what: "the ONNX Runtime environment",
            message: e.to_string(),
        })?;
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

fn session(graph: &Graph, rt: &Runtime, threads: usize) -> Result<Session, LoadError> {
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
    match graph {
        Graph::Bytes(b) => builder.commit_from_memory(b).map_err(onnx_err),
        Graph::File(p) => builder.commit_from_file(p).map_err(onnx_err),
    }
}

/// An ONNX Runtime session of the graph.
pub struct OrtSession(Session);

impl GraphSession for OrtSession {
    const ENGINE: &'static str = "ort";
    /// Requests of 2 with both replicas idle: 195-199 sentences/s as one pass on both
    /// threads against 167-168 split; requests of 4: 186-188 against 203-205, so 2.
    const WIDE_WINDOW: usize = 2;

    fn run(
        &mut self,
        mut feed: Feed,
        inputs: &[String],
        output: &str,
    ) -> Result<(Vec<usize>, Vec<f32>), RunError> {
        let e = |e: ort::Error| RunError::Ort(e.to_string());
        let mut values = Vec::with_capacity(inputs.len());
        for name in inputs {
            let value = match feed.take(name) {
                (shape, Data::I32(d)) => Tensor::from_array((shape, d)).map(Tensor::into_dyn),
                (shape, Data::I64(d)) => Tensor::from_array((shape, d)).map(Tensor::into_dyn),
            }
            .map_err(e)?;
            values.push((name.clone(), value));
        }
        let outputs = self.0.run(values).map_err(e)?;
        let (shape, data) = outputs[output].try_extract_tensor::<f32>().map_err(e)?;
        Ok((shape.iter().map(|d| *d as usize).collect(), data.to_vec()))
    }
}

/// A model replica running in ONNX Runtime.
pub type OrtBackend = GraphBackend<OrtSession>;

impl GraphBackend<OrtSession> {
    /// Loads the repo's ONNX file, or derives a graph from its safetensors, once, and makes
    /// `replicas` backends of it (each session holds its own weights: sharing ONNX Runtime's
    /// prepacked weights measured no smaller RSS for MiniLM).
    pub fn load(
        spec: &ModelSpec,
        task: Task,
        replicas: usize,
    ) -> Result<Vec<OrtBackend>, LoadError> {
        let rt = RUNTIME.get().ok_or(LoadError::NotInitialised {
            engine: "ONNX Runtime",
        })?;
        let graph = Graph::of(spec, task)?;
        // The first replica's session tells the graph's names.
        let intra = GraphBackend::<OrtSession>::share(rt.threads, replicas);
        let first = session(&graph, rt, intra)?;
        let inputs = first
            .inputs()
            .iter()
            .map(|i| i.name().to_string())
            .collect();
        let outputs: Vec<String> = first
            .outputs()
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        let io = GraphIo::new(inputs, &outputs, spec, task)?;
        let mut first = Some(first);
        GraphBackend::replicas(io, rt.threads, replicas, |threads| match first.take() {
            Some(s) if threads == intra => Ok(OrtSession(s)),
            kept => {
                first = kept;
                session(&graph, rt, threads).map(OrtSession)
            }
        })
    }
}
