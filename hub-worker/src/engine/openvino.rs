//! The OpenVINO backend (`engine-openvino` feature): the `openvino` crate with runtime
//! linking against `libopenvino_c.so` from the PyPI `openvino` wheel. It runs the very ONNX
//! graph [`super::ort`] runs (derived from the safetensors by [`super::onnx_export`], or
//! the repo's own `model.onnx`): OpenVINO's ONNX frontend reads the fused
//! `com.microsoft` ops, and its CPU plugin (oneDNN JIT kernels) ran MiniLM 1.4x faster
//! than ONNX Runtime per core on the benchmark machine at identical fp32 results
//! (`docs/BENCHMARKS.md`).
//!
//! Precision: fp32 by default. [`Precision::Bf16`] (an endpoint's `"precision": "bf16"`) lets the CPU plugin
//! compute in bfloat16 on CPUs with AMX/AVX512-BF16 (fp32 elsewhere): about 2.7x faster
//! again on such a CPU, at cosine ≥ 0.99995 to fp32 for MiniLM.

use super::error::{InitError, LoadError, RunError};
use super::feed::{Data, Feed, Graph, GraphBackend, GraphIo, GraphSession};
use super::options::Precision;
use super::spec::ModelSpec;
use super::task::Task;
use openvino::{
    CompiledModel, Core, DeviceType, ElementType, InferRequest, RwPropertyKey, Shape, Tensor,
};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

fn precision_hint(p: Precision) -> &'static str {
    match p {
        Precision::F32 => "f32",
        Precision::Bf16 => "bf16",
    }
}

struct Runtime {
    threads: usize,
}

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// Environment variable naming `libopenvino_c.so` or the directory holding it.
pub const LIB_ENV: &str = "PADDOCK_OPENVINO_LIB";

/// `libopenvino_c.so*` in `path` when it is a directory, else `path`.
fn library_file(path: &Path) -> Result<PathBuf, InitError> {
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    if !path.is_dir() {
        return Err(InitError::Missing(path.to_path_buf()));
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|source| InitError::ListDir {
            path: path.to_path_buf(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libopenvino_c.so"))
        })
        .collect();
    found.sort();
    found.pop().ok_or_else(|| InitError::NotInDir {
        library: "libopenvino_c.so",
        dir: path.to_path_buf(),
    })
}

/// Loads `libopenvino_c.so` (from `lib`, else `$PADDOCK_OPENVINO_LIB`; a file or the
/// directory holding it) and checks that the CPU device is there. Idempotent; the first
/// call's thread count wins.
pub fn init(lib: Option<&Path>, threads: usize) -> Result<(), InitError> {
    if RUNTIME.get().is_some() {
        return Ok(());
    }
    let path: PathBuf = lib
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os(LIB_ENV).map(PathBuf::from))
        .ok_or(InitError::NoLibrary {
            library: "libopenvino_c.so",
            flag: "openvino-lib",
            env: LIB_ENV,
            script: "scripts/worker/fetch-openvino.sh",
        })?;
    let file = library_file(&path)?;
    openvino_sys::library::load_from(&file).map_err(|e| InitError::Library {
        path: file.clone(),
        message: e.to_string(),
    })?;
    let core = Core::new().map_err(|e| InitError::Runtime {
        what: "an OpenVINO core",
        message: e.to_string(),
    })?;
    let devices = core
        .available_devices()
        .map_err(|e| InitError::Devices(e.to_string()))?;
    if !devices.iter().any(|d| d.as_ref() == "CPU") {
        return Err(InitError::NoCpuDevice(file));
    }
    let _ = RUNTIME.set(Runtime {
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

fn ov_err(e: impl std::fmt::Display) -> LoadError {
    LoadError::Onnx(format!("OpenVINO: {e}"))
}

/// A compiled model and the request that runs it (the compiled model must outlive the
/// request).
pub struct OvSession {
    request: InferRequest,
    _compiled: CompiledModel,
}

impl OvSession {
    fn compile(
        core: &mut Core,
        model: &openvino::Model,
        threads: usize,
        precision: Precision,
    ) -> Result<OvSession, LoadError> {
        // One stream on `threads` threads, not pinned: several replicas share the cores
        // with tokenizer and HTTP threads, and pinning put two replicas on one core.
        let threads = threads.to_string();
        core.set_properties(
            &DeviceType::CPU,
            [
                (RwPropertyKey::HintPerformanceMode, "LATENCY"),
                (RwPropertyKey::NumStreams, "1"),
                (RwPropertyKey::InferenceNumThreads, threads.as_str()),
                (RwPropertyKey::HintEnableCpuPinning, "NO"),
                (
                    RwPropertyKey::HintInferencePrecision,
                    precision_hint(precision),
                ),
            ],
        )
        .map_err(ov_err)?;
        let mut compiled = core.compile_model(model, DeviceType::CPU).map_err(ov_err)?;
        let request = compiled.create_infer_request().map_err(ov_err)?;
        Ok(OvSession {
            request,
            _compiled: compiled,
        })
    }
}

impl GraphSession for OvSession {
    const ENGINE: &'static str = "openvino";
    /// Requests of 2 with both replicas idle: 243 sentences/s as one pass on both threads
    /// against 176-192 split; requests of 4: level in fp32 (227-231 vs 230-233), 582
    /// against 486 in bf16 (`scripts/worker/bench-embeddings.sh --modes requests`).
    const WIDE_WINDOW: usize = 4;

    fn run(
        &mut self,
        mut feed: Feed,
        inputs: &[String],
        output: &str,
    ) -> Result<(Vec<usize>, Vec<f32>), RunError> {
        let e = |e: openvino::InferenceError| RunError::OpenVino(e.to_string());
        for name in inputs {
            let (shape, data) = feed.take(name);
            let dims: Vec<i64> = shape.iter().map(|d| *d as i64).collect();
            let shape = Shape::new(&dims).map_err(e)?;
            let tensor = match data {
                Data::I64(d) => {
                    let mut t = Tensor::new(ElementType::I64, &shape).map_err(e)?;
                    t.get_data_mut::<i64>().map_err(e)?.copy_from_slice(&d);
                    t
                }
                Data::I32(d) => {
                    let mut t = Tensor::new(ElementType::I32, &shape).map_err(e)?;
                    t.get_data_mut::<i32>().map_err(e)?.copy_from_slice(&d);
                    t
                }
            };
            self.request.set_tensor(name, &tensor).map_err(e)?;
        }
        self.request.infer().map_err(e)?;
        let out = self.request.get_tensor(output).map_err(e)?;
        let shape = out.get_shape().map_err(e)?;
        let dims = shape.get_dimensions().iter().map(|d| *d as usize).collect();
        let data = out.get_data::<f32>().map_err(e)?.to_vec();
        Ok((dims, data))
    }
}

/// A model replica running in OpenVINO.
pub type OvBackend = GraphBackend<OvSession>;

impl GraphBackend<OvSession> {
    /// Reads the graph once (derived from safetensors when the repo has them, else its
    /// `model.onnx`) and compiles `replicas` single-stream copies of it. `precision` is
    /// the arithmetic the CPU plugin may use.
    pub fn load(
        spec: &ModelSpec,
        task: Task,
        replicas: usize,
        precision: Precision,
    ) -> Result<Vec<OvBackend>, LoadError> {
        let rt = RUNTIME
            .get()
            .ok_or(LoadError::NotInitialised { engine: "OpenVINO" })?;
        let mut core = Core::new().map_err(ov_err)?;
        let model = match Graph::of(spec, task)? {
            Graph::Bytes(b) => core.read_model_from_buffer(&b, None),
            Graph::File(p) => core.read_model_from_file(&p.to_string_lossy(), ""),
        }
        .map_err(ov_err)?;
        let mut inputs = Vec::new();
        for i in 0..model.get_inputs_len().map_err(ov_err)? {
            let node = model.get_input_by_index(i).map_err(ov_err)?;
            inputs.push(node.get_name().map_err(ov_err)?);
        }
        let mut outputs = Vec::new();
        for i in 0..model.get_outputs_len().map_err(ov_err)? {
            let node = model.get_output_by_index(i).map_err(ov_err)?;
            outputs.push(node.get_name().map_err(ov_err)?);
        }
        let io = GraphIo::new(inputs, &outputs, spec, task)?;
        GraphBackend::replicas(io, rt.threads, replicas, |threads| {
            OvSession::compile(&mut core, &model, threads, precision)
        })
    }
}
