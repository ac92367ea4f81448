//! The OpenVINO backend (`engine-openvino` feature): the `openvino` crate with runtime
//! linking against `libopenvino_c.so` from the PyPI `openvino` wheel. It runs the very ONNX
//! graph [`super::ort`] runs (derived from the safetensors by [`super::onnx_export`], or
//! the repo's own `model.onnx`): OpenVINO's ONNX frontend reads the fused
//! `com.microsoft` ops, and its CPU plugin (oneDNN JIT kernels) ran MiniLM 1.4x faster
//! than ONNX Runtime per core on the benchmark machine at identical fp32 results
//! (`docs/BENCHMARKS.md`).
//!
//! Compiled models are cached under the worker cache ([`cache_dir`]), in a directory
//! named for the CPU class they were compiled for (its ISA flags, `ONEDNN_MAX_CPU_ISA`
//! and the OpenVINO build), one blob per graph and compile properties. The graph is named
//! by what it is made from (weights digests, config, exporter version:
//! [`onnx_export::source_key`]), so a wake or a second replica imports the blob without
//! deriving the graph or compiling (compiling was 1.9 s of a 3 s cold start on a 2-core
//! AVX2 machine); a changed model or CPU class compiles afresh.
//!
//! Precision: fp32 by default. [`Precision::Bf16`] (an endpoint's `"precision": "bf16"`) lets the CPU plugin
//! compute in bfloat16 on CPUs with AMX/AVX512-BF16 (fp32 elsewhere): about 2.7x faster
//! again on such a CPU, at cosine ≥ 0.99995 to fp32 for MiniLM.

use super::error::{InitError, LoadError, RunError};
use super::feed::{Data, Feed, Graph, GraphBackend, GraphIo, GraphSession};
use super::onnx_export;
use super::options::Precision;
use super::spec::ModelSpec;
use super::task::Task;
use openvino::{Core, DeviceType, ElementType, InferRequest, RwPropertyKey, Shape, Tensor};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Instant;

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
    // Two first calls at once (two models, two tests) would both load the library and
    // create cores before either is recorded: one at a time.
    static INIT: Mutex<()> = Mutex::new(());
    let _one = INIT.lock().unwrap_or_else(|e| e.into_inner());
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

/// OpenVINO's model building in this process: reading a graph, compiling, importing
/// and exporting, one at a time. These run once per load, never per request; what they
/// share process-wide (the ONNX frontend's node counter and registries, frontends and
/// plugins loaded on first use) is not documented as safe to use from two threads at
/// once, and two loads did overlap here (a fast-start switch while another model
/// loads). Inference is not serialised.
static BUILD: Mutex<()> = Mutex::new(());

fn build_lock() -> MutexGuard<'static, ()> {
    BUILD.lock().unwrap_or_else(|e| e.into_inner())
}

/// A compiled model and the request that runs it. Fields drop in declaration order: the
/// request before the model it was created from.
pub struct OvSession {
    request: InferRequest,
    compiled: blob::Compiled,
}

impl OvSession {
    /// The properties every compile and import uses: one stream on `threads` threads, not
    /// pinned (several replicas share the cores with tokenizer and HTTP threads, and
    /// pinning put two replicas on one core), computing in `precision`.
    fn configure(core: &mut Core, threads: usize, precision: Precision) -> Result<(), LoadError> {
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
        .map_err(ov_err)
    }

    /// The model stored at `blob` for `threads` threads, or `None` when there is none
    /// (or it does not import).
    fn import(
        core: &mut Core,
        threads: usize,
        precision: Precision,
        blob: &Path,
    ) -> Result<Option<OvSession>, LoadError> {
        if !blob.is_file() {
            return Ok(None);
        }
        Self::configure(core, threads, precision)?;
        let started = Instant::now();
        let imported = {
            let _one = build_lock();
            blob::import(core, blob)
        };
        match imported {
            Some(compiled) => Self::start(compiled, threads, started).map(Some),
            None => Ok(None),
        }
    }

    /// Compiles `model` for `threads` threads, and stores it at `blob` when given.
    fn compile(
        core: &mut Core,
        model: &openvino::Model,
        threads: usize,
        precision: Precision,
        blob: Option<&Path>,
    ) -> Result<OvSession, LoadError> {
        Self::configure(core, threads, precision)?;
        let started = Instant::now();
        let compiled = {
            let _one = build_lock();
            let c = core.compile_model(model, DeviceType::CPU).map_err(ov_err)?;
            let c = blob::Compiled::fresh(c);
            if let Some(p) = blob {
                blob::export(&c, p);
            }
            c
        };
        Self::start(compiled, threads, started)
    }

    fn start(
        mut compiled: blob::Compiled,
        threads: usize,
        started: Instant,
    ) -> Result<OvSession, LoadError> {
        let request = compiled
            .model_mut()
            .create_infer_request()
            .map_err(ov_err)?;
        tracing::info!(
            engine = "openvino",
            threads,
            cache.hit = compiled.is_imported(),
            duration_ms = started.elapsed().as_millis() as u64,
            "compiled"
        );
        Ok(OvSession { request, compiled })
    }

    /// The names of the compiled model's inputs (in order) and outputs. An output may
    /// carry several names (the graph's, and one OpenVINO gave the node computing it),
    /// and a port reports only one of them: the names [`GraphIo`] looks for are asked
    /// for by name, then every port's reported name follows (for error messages).
    fn io_names(&self) -> Result<(Vec<String>, Vec<String>), LoadError> {
        const WANTED_OUTPUTS: [&str; 3] = ["last_hidden_state", "token_embeddings", "logits"];
        let m = self.compiled.model();
        let name = |n: openvino::Node| n.get_name().map_err(ov_err);
        let mut inputs = Vec::new();
        for i in 0..m.get_input_size().map_err(ov_err)? {
            inputs.push(name(m.get_input_by_index(i).map_err(ov_err)?)?);
        }
        let mut outputs: Vec<String> = WANTED_OUTPUTS
            .iter()
            .filter(|n| m.get_output_by_name(n).is_ok())
            .map(|n| n.to_string())
            .collect();
        for i in 0..m.get_output_size().map_err(ov_err)? {
            let n = name(m.get_output_by_index(i).map_err(ov_err)?)?;
            if !outputs.contains(&n) {
                outputs.push(n);
            }
        }
        Ok((inputs, outputs))
    }
}

/// Compiled models on disk: OpenVINO's export and import, which the `openvino` crate
/// does not wrap. Its own `CACHE_DIR` cannot serve here: it keys an in-memory model by a
/// hash of its serialised form, node names included, and the ONNX frontend names the
/// nodes it creates from a process-wide counter, so a second read of the same graph never
/// hit. The workspace denies unsafe code; this module is allowed it for those two FFI
/// calls, the handle conversions they need and the buffer an import reads.
#[allow(unsafe_code)]
mod blob {
    use openvino::{CompiledModel, Core};
    use openvino_sys::{ov_compiled_model_t, ov_core_t, ov_status_e};
    use std::alloc::Layout;
    use std::io::Read;
    use std::path::Path;
    use std::ptr::NonNull;

    // `Core` and `CompiledModel` (openvino =0.11.1, pinned) are structs holding only the
    // raw handle; a lone field sits at offset 0.
    const _: () = assert!(size_of::<Core>() == size_of::<*mut ov_core_t>());
    const _: () = assert!(size_of::<CompiledModel>() == size_of::<*mut ov_compiled_model_t>());

    fn core_handle(core: &Core) -> *const ov_core_t {
        // SAFETY: see the layout note above; the handle stays owned by `core`.
        unsafe { *(core as *const Core).cast::<*const ov_core_t>() }
    }

    fn compiled_handle(c: &CompiledModel) -> *const ov_compiled_model_t {
        // SAFETY: as for `core_handle`.
        unsafe { *(c as *const CompiledModel).cast::<*const ov_compiled_model_t>() }
    }

    /// A compiled model and, when it was imported, the bytes it was imported from, which
    /// OpenVINO may read in place (the weights) for as long as the model lives: they are
    /// owned together, and the model is freed first (fields drop in declaration order).
    /// The model is only lent out, never handed over by value.
    pub(super) struct Compiled {
        model: CompiledModel,
        imported: Option<Bytes>,
    }

    impl Compiled {
        /// A model compiled in this process.
        pub(super) fn fresh(model: CompiledModel) -> Compiled {
            Compiled {
                model,
                imported: None,
            }
        }

        pub(super) fn model(&self) -> &CompiledModel {
            &self.model
        }

        pub(super) fn model_mut(&mut self) -> &mut CompiledModel {
            &mut self.model
        }

        pub(super) fn is_imported(&self) -> bool {
            self.imported.is_some()
        }
    }

    /// A file's bytes in a buffer aligned to 64 (a cache line, the widest vector load),
    /// so weights that OpenVINO uses in place from an imported blob sit as aligned as the
    /// blob laid them out. Never moved or resized while a model reads it.
    pub(super) struct Bytes {
        ptr: NonNull<u8>,
        len: usize,
    }

    // SAFETY: an owned heap buffer, like a `Box<[u8]>`.
    unsafe impl Send for Bytes {}

    const ALIGN: usize = 64;

    impl Bytes {
        /// The whole of `path`, streamed into the buffer.
        fn read(path: &Path) -> std::io::Result<Bytes> {
            let mut f = std::fs::File::open(path)?;
            let len = usize::try_from(f.metadata()?.len()).map_err(std::io::Error::other)?;
            if len == 0 {
                return Err(std::io::Error::other("empty blob"));
            }
            let layout = Layout::from_size_align(len, ALIGN).map_err(std::io::Error::other)?;
            // SAFETY: `layout` has a non-zero size; zeroed, so the slice below is
            // initialised memory.
            let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
            let Some(ptr) = NonNull::new(ptr) else {
                std::alloc::handle_alloc_error(layout)
            };
            let bytes = Bytes { ptr, len };
            // SAFETY: `len` initialised bytes owned by `bytes`, borrowed mutably once.
            let buf = unsafe { std::slice::from_raw_parts_mut(bytes.ptr.as_ptr(), len) };
            f.read_exact(buf)?;
            // A blob is renamed into place whole, never rewritten; a longer file would be
            // another one, so refuse it rather than import a prefix.
            if f.read(&mut [0u8; 1])? != 0 {
                return Err(std::io::Error::other("blob grew while read"));
            }
            Ok(bytes)
        }
    }

    impl Drop for Bytes {
        fn drop(&mut self) {
            // SAFETY: allocated in `read` with this very layout.
            unsafe {
                std::alloc::dealloc(
                    self.ptr.as_ptr(),
                    Layout::from_size_align_unchecked(self.len, ALIGN),
                )
            }
        }
    }

    /// The compiled model stored at `path`, imported with `core`'s CPU properties; `None`
    /// when it cannot be read or does not import (then it is removed, to be rewritten).
    pub(super) fn import(core: &Core, path: &Path) -> Option<Compiled> {
        let bytes = match Bytes::read(path) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "compiled model unreadable; compiling again");
                return None;
            }
        };
        let device = c"CPU";
        let mut handle: *mut ov_compiled_model_t = std::ptr::null_mut();
        // SAFETY: valid core handle, buffer and C string for the call's duration; the
        // buffer is kept with the model, as long as it (see `Compiled`).
        let status = unsafe {
            openvino_sys::ov_core_import_model(
                core_handle(core),
                bytes.ptr.as_ptr().cast_const().cast(),
                bytes.len,
                device.as_ptr(),
                &mut handle,
            )
        };
        if status != ov_status_e::OK || handle.is_null() {
            tracing::warn!(path = %path.display(), status = ?status, error = last_error(), "compiled model does not import; compiling again");
            let _ = std::fs::remove_file(path);
            return None;
        }
        // SAFETY: a fresh handle we own; `CompiledModel` frees it on drop.
        let model =
            unsafe { std::mem::transmute::<*mut ov_compiled_model_t, CompiledModel>(handle) };
        // A use: its mtime is its recency for the cache's eviction (`pull::evict`).
        let _ =
            std::fs::File::open(path).and_then(|f| f.set_modified(std::time::SystemTime::now()));
        Some(Compiled {
            model,
            imported: Some(bytes),
        })
    }

    /// OpenVINO's message for the last failed call.
    fn last_error() -> String {
        // SAFETY: a NUL-terminated copy owned by us (or null), read at once and freed.
        unsafe {
            let p = openvino_sys::ov_get_last_err_msg();
            if p.is_null() {
                String::new()
            } else {
                let s = std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned();
                openvino_sys::ov_free(p);
                s
            }
        }
    }

    /// Stores `compiled` at `path`: written beside it, then renamed, so a reader never
    /// sees a partial blob. A failure only costs the next load a compile.
    pub(super) fn export(compiled: &Compiled, path: &Path) {
        let tmp = path.with_extension(format!("tmp-{:016x}", rand::random::<u64>()));
        let Ok(c_tmp) = std::ffi::CString::new(tmp.to_string_lossy().as_bytes()) else {
            return;
        };
        // SAFETY: valid handle and C string for the call's duration.
        let status = unsafe {
            openvino_sys::ov_compiled_model_export_model(
                compiled_handle(&compiled.model),
                c_tmp.as_ptr(),
            )
        };
        let stored = status == ov_status_e::OK && std::fs::rename(&tmp, path).is_ok();
        if !stored {
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!(path = %path.display(), status = ?status, error = last_error(), "could not store the compiled model");
        }
    }
}

impl GraphSession for OvSession {
    const ENGINE: &'static str = "openvino";
    /// Requests of 2 with both replicas idle: 243 sentences/s as one pass on both threads
    /// against 176-192 split; requests of 4: level in fp32 (227-231 vs 230-233), 582
    /// against 486 in bf16 (`scripts/worker/bench-embeddings.sh --modes requests`).
    const WIDE_WINDOW: usize = 4;

    fn loaded_from_cache(&self) -> Option<bool> {
        Some(self.compiled.is_imported())
    }

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
        Self::load_cached(spec, task, replicas, precision, None)
    }

    /// [`Self::load`], importing compiled models from `cache` (a [`cache_dir`]) when they
    /// are there and storing them there when not. The blobs are keyed by what the graph
    /// is made from ([`onnx_export::source_key`]), so a load whose blobs are all there
    /// neither derives the graph nor has OpenVINO read it; the inputs and outputs are
    /// then the compiled model's.
    pub fn load_cached(
        spec: &ModelSpec,
        task: Task,
        replicas: usize,
        precision: Precision,
        cache: Option<&Path>,
    ) -> Result<Vec<OvBackend>, LoadError> {
        let rt = RUNTIME
            .get()
            .ok_or(LoadError::NotInitialised { engine: "OpenVINO" })?;
        let key = match cache {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|source| LoadError::Io {
                    path: dir.to_path_buf(),
                    source,
                })?;
                let started = Instant::now();
                let key = onnx_export::source_key(spec, task)?;
                tracing::info!(
                    engine = "openvino",
                    duration_ms = started.elapsed().as_millis() as u64,
                    "compiled-model key"
                );
                Some((dir, key))
            }
            None => None,
        };
        let mut sessions = Sessions {
            core: Core::new().map_err(ov_err)?,
            graph: None,
            spec,
            task,
            precision,
            key,
        };
        // The first replica's own session is made first: its inputs and outputs are
        // every session's.
        let first = sessions.make(GraphBackend::<OvSession>::share(rt.threads, replicas))?;
        let (inputs, outputs) = first.io_names()?;
        let io = GraphIo::new(inputs, &outputs, spec, task)?;
        let mut first = Some(first);
        GraphBackend::replicas(io, rt.threads, replicas, |threads| match first.take() {
            Some(s) => Ok(s),
            None => sessions.make(threads),
        })
    }
}

/// Makes the sessions of one load: imported from the cache when the blob for their
/// thread count is there, else compiled from the graph, which is derived and read at most
/// once, and only then.
struct Sessions<'a> {
    core: Core,
    graph: Option<openvino::Model>,
    spec: &'a ModelSpec,
    task: Task,
    precision: Precision,
    /// The cache directory and the graph's key in it.
    key: Option<(&'a Path, String)>,
}

impl Sessions<'_> {
    fn make(&mut self, threads: usize) -> Result<OvSession, LoadError> {
        let blob = self
            .key
            .as_ref()
            .map(|(dir, key)| blob_path(dir, key, threads, self.precision));
        if let Some(p) = &blob {
            if let Some(s) = OvSession::import(&mut self.core, threads, self.precision, p)? {
                return Ok(s);
            }
        }
        if self.graph.is_none() {
            self.graph = Some(self.read_graph()?);
        }
        let graph = self.graph.as_ref().expect("read above");
        OvSession::compile(
            &mut self.core,
            graph,
            threads,
            self.precision,
            blob.as_deref(),
        )
    }

    /// Derives the graph (or takes the repo's `model.onnx`) and has OpenVINO read it.
    fn read_graph(&mut self) -> Result<openvino::Model, LoadError> {
        let started = Instant::now();
        let graph = Graph::of(self.spec, self.task)?;
        let graph_ms = started.elapsed().as_millis() as u64;
        let model = {
            let _one = build_lock();
            match graph {
                Graph::Bytes(b) => self.core.read_model_from_buffer(&b, None),
                Graph::File(p) => self.core.read_model_from_file(&p.to_string_lossy(), ""),
            }
            .map_err(ov_err)?
        };
        tracing::info!(
            engine = "openvino",
            graph_ms,
            read_ms = started.elapsed().as_millis() as u64 - graph_ms,
            "graph read"
        );
        Ok(model)
    }
}

/// Where the model compiled from the graph named `key` ([`onnx_export::source_key`]) for
/// `threads` threads in `precision` is stored under a [`cache_dir`]. The other compile
/// properties are fixed in [`OvSession::configure`]; `v2` changes when they do (`v1`
/// blobs were keyed by the derived graph's own sha256).
fn blob_path(dir: &Path, key: &str, threads: usize, precision: Precision) -> PathBuf {
    dir.join(format!(
        "{key}-t{threads}-{}-v2.blob",
        precision_hint(precision)
    ))
}

/// The directory under `root` (the worker's compiled-model cache) for blobs compiled on
/// this CPU class: `openvino-<isa>-<hash>`, where `<isa>` is the widest vector ISA oneDNN
/// will use (capped by `max_isa`, the value of `ONEDNN_MAX_CPU_ISA`) and `<hash>` covers
/// the CPU model, its flags, that cap and the OpenVINO build. A blob compiled for AVX-512
/// is never imported where oneDNN is held to AVX2, nor on another CPU or runtime version.
pub fn cache_dir(root: &Path, max_isa: Option<&str>) -> PathBuf {
    use sha2::{Digest, Sha256};
    let cpu = crate::host::cpu_identity();
    let max_isa = max_isa.map(|v| v.trim().to_ascii_lowercase());
    let class = isa_class(&cpu.flags, max_isa.as_deref());
    let mut h = Sha256::new();
    h.update(cpu.model.as_bytes());
    h.update([0]);
    h.update(cpu.flags.join(" ").as_bytes());
    h.update([0]);
    h.update(max_isa.unwrap_or_default().as_bytes());
    h.update([0]);
    h.update(runtime_version().as_bytes());
    let hex: String = h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    root.join(format!("openvino-{class}-{hex}"))
}

/// `cache_dir` with the cap this process runs under (`ONEDNN_MAX_CPU_ISA`).
pub fn cache_dir_here(root: &Path) -> PathBuf {
    cache_dir(root, std::env::var("ONEDNN_MAX_CPU_ISA").ok().as_deref())
}

/// The widest vector ISA class of `flags`, capped by a `ONEDNN_MAX_CPU_ISA` value.
fn isa_class(flags: &[String], max_isa: Option<&str>) -> &'static str {
    let has = |f: &str| flags.iter().any(|x| x == f);
    let native = if has("amx_tile") {
        "amx"
    } else if has("avx512f") {
        "avx512"
    } else if has("avx2") {
        "avx2"
    } else {
        "sse41"
    };
    let rank = |c: &str| match c {
        "amx" => 3,
        "avx512" => 2,
        "avx2" => 1,
        _ => 0,
    };
    let cap = match max_isa {
        Some(v) if v.contains("amx") => "amx",
        Some(v) if v.contains("avx512") => "avx512",
        Some(v) if v.contains("avx2") => "avx2",
        Some(v) if v.contains("avx") || v.contains("sse") => "sse41",
        _ => native,
    };
    if rank(cap) < rank(native) {
        cap
    } else {
        native
    }
}

/// The OpenVINO build string ("" before [`init`]).
fn runtime_version() -> String {
    if !is_available() {
        return String::new();
    }
    Core::new()
        .ok()
        .and_then(|core| {
            core.versions("CPU").ok().map(|v| {
                v.iter()
                    .map(|(_, ver)| ver.build_number.clone())
                    .collect::<Vec<_>>()
                    .join(",")
            })
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isa_class_is_capped_by_onednn_max_cpu_isa() {
        let flags: Vec<String> = ["sse4_1", "avx2", "avx512f", "amx_tile"]
            .map(String::from)
            .to_vec();
        assert_eq!(isa_class(&flags, None), "amx");
        assert_eq!(isa_class(&flags, Some("avx2")), "avx2");
        assert_eq!(isa_class(&flags, Some("avx512_core_bf16")), "avx512");
        let avx2 = vec!["avx2".to_string()];
        assert_eq!(
            isa_class(&avx2, Some("avx512_core")),
            "avx2",
            "a cap above is no cap"
        );
        let root = Path::new("/c");
        assert_ne!(cache_dir(root, None), cache_dir(root, Some("AVX2")));
        assert_eq!(cache_dir(root, Some("AVX2")), cache_dir(root, Some("avx2")));
    }
}
