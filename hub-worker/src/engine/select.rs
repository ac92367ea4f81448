//! Which engines this worker has and which one serves a model: the one place that reads
//! the engine cargo features (`engine-ort`, `engine-openvino`; candle is always built).
//! It starts the engine runtimes at worker start ([`init_engines`]), refuses a precision
//! no engine here computes ([`check_precision`]), sizes a model ([`estimate_memory`],
//! [`plan_replicas`]) and loads its engine instances ([`load_backends`]).

use super::backend::Backend;
use super::candle::CandleBackend;
use super::error::{InitError, LoadError};
use super::options::{EngineConfig, EnginePreference, Precision};
use super::spec::ModelSpec;
use super::task::Task;
use std::path::Path;

/// The ONNX-graph engines, fastest first (the order `auto` tries them in).
const GRAPH_ENGINES: [GraphEngine; 2] = [GraphEngine::OpenVino, GraphEngine::Ort];

/// An engine that runs the model's ONNX graph; each exists only in builds with its feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GraphEngine {
    OpenVino,
    Ort,
}

impl GraphEngine {
    /// The `--engine` choice that names it.
    fn preference(self) -> EnginePreference {
        match self {
            GraphEngine::OpenVino => EnginePreference::OpenVino,
            GraphEngine::Ort => EnginePreference::Ort,
        }
    }

    fn label(self) -> &'static str {
        match self {
            GraphEngine::OpenVino => "OpenVINO",
            GraphEngine::Ort => "ONNX Runtime",
        }
    }

    fn feature(self) -> &'static str {
        match self {
            GraphEngine::OpenVino => "engine-openvino",
            GraphEngine::Ort => "engine-ort",
        }
    }

    fn is_built(self) -> bool {
        match self {
            GraphEngine::OpenVino => cfg!(feature = "engine-openvino"),
            GraphEngine::Ort => cfg!(feature = "engine-ort"),
        }
    }

    /// Whether it computes in `precision` (only OpenVINO has bf16).
    fn computes(self, precision: Precision) -> bool {
        precision == Precision::F32 || self == GraphEngine::OpenVino
    }

    /// Whether its runtime was initialised ([`init_engines`]).
    fn is_available(self) -> bool {
        match self {
            #[cfg(feature = "engine-openvino")]
            GraphEngine::OpenVino => super::openvino::is_available(),
            #[cfg(feature = "engine-ort")]
            GraphEngine::Ort => super::ort::is_available(),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Compute threads its runtime was given (1 before it starts).
    fn threads(self) -> usize {
        match self {
            #[cfg(feature = "engine-openvino")]
            GraphEngine::OpenVino => super::openvino::threads(),
            #[cfg(feature = "engine-ort")]
            GraphEngine::Ort => super::ort::threads(),
            #[allow(unreachable_patterns)]
            _ => 1,
        }
    }

    /// Loads its runtime library (see [`EngineLibraries`]).
    fn init(self, libs: &EngineLibraries, threads: usize) -> Result<(), InitError> {
        let _ = (libs, threads);
        match self {
            #[cfg(feature = "engine-openvino")]
            GraphEngine::OpenVino => super::openvino::init(libs.openvino_lib, threads),
            #[cfg(feature = "engine-ort")]
            GraphEngine::Ort => {
                super::ort::set_intra_op_spinning(libs.ort_spinning);
                super::ort::init(libs.ort_dylib, threads)
            }
            #[allow(unreachable_patterns)]
            _ => Ok(()),
        }
    }

    /// `replicas` instances of the model's graph.
    fn load(
        self,
        spec: &ModelSpec,
        task: Task,
        replicas: usize,
        precision: Precision,
        compiled_cache: Option<&Path>,
    ) -> Result<Vec<Box<dyn Backend>>, LoadError> {
        let _ = (spec, task, replicas, precision, compiled_cache);
        match self {
            #[cfg(feature = "engine-openvino")]
            GraphEngine::OpenVino => {
                let cache = compiled_cache.map(super::openvino::cache_dir_here);
                Ok(boxed(super::openvino::OvBackend::load_cached(
                    spec,
                    task,
                    replicas,
                    precision,
                    cache.as_deref(),
                )?))
            }
            #[cfg(feature = "engine-ort")]
            GraphEngine::Ort => Ok(boxed(super::ort::OrtBackend::load(spec, task, replicas)?)),
            #[allow(unreachable_patterns)]
            _ => Err(LoadError::NotBuilt {
                feature: self.feature(),
            }),
        }
    }
}

/// Whether this build serves a repo's own `model.onnx` (ONNX Runtime builds; the pull
/// fetches such files only then).
pub fn serves_repo_onnx() -> bool {
    cfg!(feature = "engine-ort")
}

/// The engine named by an explicit `--engine`, when it is a graph engine.
fn graph_engine(pref: EnginePreference) -> Option<GraphEngine> {
    GRAPH_ENGINES.into_iter().find(|g| g.preference() == pref)
}

/// The cargo feature `pref` needs that this build lacks, if any (`auto` and `candle`
/// always work).
pub fn missing_feature(pref: EnginePreference) -> Option<&'static str> {
    graph_engine(pref)
        .filter(|g| !g.is_built())
        .map(GraphEngine::feature)
}

/// Where the engine runtime libraries are (the worker's `--ort-dylib`, `--openvino-lib`;
/// `None` falls back to each engine's environment variable) and how they run.
#[derive(Debug, Clone, Copy, Default)]
pub struct EngineLibraries<'a> {
    /// `libonnxruntime.so` for the ort engine.
    pub ort_dylib: Option<&'a Path>,
    /// `libopenvino_c.so`, or the directory holding it, for the openvino engine.
    pub openvino_lib: Option<&'a Path>,
    /// Let ONNX Runtime's idle intra-op threads spin.
    pub ort_spinning: bool,
    /// OpenVINO is started by the worker's runtime provision (`runtime_fetch`: the
    /// configured library, else one fetched on first use), not by [`init_engines`].
    pub openvino_started_elsewhere: bool,
}

/// Starts the graph engines `pref` may use, built into this worker, on `threads` compute
/// threads. An engine named explicitly must start (its error is returned); under `auto`
/// one that cannot is logged and left out.
pub fn init_engines(
    pref: EnginePreference,
    libs: &EngineLibraries,
    threads: usize,
) -> Result<(), InitError> {
    for engine in GRAPH_ENGINES {
        let wanted = pref == EnginePreference::Auto || pref == engine.preference();
        if !wanted || !engine.is_built() {
            continue;
        }
        if libs.openvino_started_elsewhere && engine.preference() == EnginePreference::OpenVino {
            continue;
        }
        match engine.init(libs, threads) {
            Ok(()) => tracing::info!("{} initialised", engine.label()),
            Err(e) if pref != EnginePreference::Auto => return Err(e),
            Err(e) => tracing::info!(reason = %e, "{} not available", engine.label()),
        }
    }
    Ok(())
}

/// Whether this worker can serve `cfg.precision` with `cfg.engine` (checked before any
/// weights are pulled): bf16 needs OpenVINO, built in and loaded.
pub fn check_precision(cfg: &EngineConfig) -> Result<(), LoadError> {
    if cfg.precision == Precision::F32 {
        return Ok(());
    }
    let ov = GraphEngine::OpenVino;
    let why = match cfg.engine {
        EnginePreference::Candle | EnginePreference::Ort => {
            "this worker's engine setting (--engine) excludes"
        }
        _ if !ov.is_built() => "this worker was built without",
        _ if ov.is_available() => return Ok(()),
        _ => {
            "this worker has not loaded (its libopenvino_c.so: --openvino-lib or \
             PADDOCK_OPENVINO_LIB, scripts/worker/fetch-openvino.sh)"
        }
    };
    Err(LoadError::Precision {
        precision: cfg.precision,
        why,
    })
}

/// Rough resident size of a loaded model: the estimate the hub's scheduler places by.
pub(super) fn estimate_memory(spec: &ModelSpec) -> u64 {
    hub_types::memory::model_bytes(spec.weight_bytes)
}

/// How many engine instances to load: `cfg.replicas`, or automatically one per compute
/// thread for ONNX Runtime (measured: two single-threaded sessions on two cores run
/// 1.1-1.2x the sentences per second of one two-threaded session, see
/// `docs/BENCHMARKS.md`), as long as the weights are under 512 MiB and the copies (one per
/// replica, plus replica 0's session on every thread; each session holds about 1.1x the
/// weights) fit in half the available memory. candle always gets one ([`load_backends`]).
pub(super) fn plan_replicas(
    cfg: &EngineConfig,
    spec: &ModelSpec,
    needed: u64,
    available: Option<u64>,
) -> usize {
    if cfg.replicas > 0 {
        return cfg.replicas;
    }
    let threads = graph_engine_threads();
    if spec.weight_bytes > 512 << 20 {
        return 1;
    }
    let mut replicas = threads.max(1);
    if let Some(available) = available {
        while replicas > 1 && needed.saturating_mul(replicas as u64 + 1) > available / 2 {
            replicas -= 1;
        }
    }
    replicas
}

/// Compute threads of the ONNX-graph engines (the most any initialised one was given; 1
/// without them).
fn graph_engine_threads() -> usize {
    GRAPH_ENGINES
        .into_iter()
        .filter(|g| g.is_available())
        .map(GraphEngine::threads)
        .fold(1, usize::max)
}

#[cfg(any(feature = "engine-ort", feature = "engine-openvino"))]
fn boxed<B: Backend + 'static>(v: Vec<B>) -> Vec<Box<dyn Backend>> {
    v.into_iter()
        .map(|b| Box::new(b) as Box<dyn Backend>)
        .collect()
}

/// Loads the engine instances of a model: `replicas` OpenVINO or ONNX Runtime backends of
/// one graph, or one candle backend, whose kernels already use every compute thread.
/// `Auto` tries the engines fastest first (see [`EnginePreference::Auto`]); a graph engine
/// that cannot serve a model with safetensors (an op it lacks, say) falls through to the
/// next, with a warning.
pub(super) fn load_backends(
    spec: &ModelSpec,
    task: Task,
    cfg: &EngineConfig,
    replicas: usize,
) -> Result<Vec<Box<dyn Backend>>, LoadError> {
    let precision = cfg.precision;
    let cache = cfg.compiled_cache.as_deref();
    match (cfg.engine, graph_engine(cfg.engine)) {
        (_, Some(engine)) if engine.computes(precision) => {
            return engine.load(spec, task, replicas, precision, cache)
        }
        (EnginePreference::Auto, _) => {
            if let Some(b) = load_auto_graph(spec, task, cfg, replicas)? {
                return Ok(b);
            }
        }
        _ => {}
    }
    load_candle(spec, task, cfg)
}

/// The fastest graph engine that loads the model under `auto`, fastest first; `None`
/// when none is available or none can serve a model candle can.
fn load_auto_graph(
    spec: &ModelSpec,
    task: Task,
    cfg: &EngineConfig,
    replicas: usize,
) -> Result<Option<Vec<Box<dyn Backend>>>, LoadError> {
    let precision = cfg.precision;
    for engine in GRAPH_ENGINES {
        if !engine.is_available() || !engine.computes(precision) {
            continue;
        }
        match engine.load(
            spec,
            task,
            replicas,
            precision,
            cfg.compiled_cache.as_deref(),
        ) {
            Ok(b) => return Ok(Some(b)),
            // Only OpenVINO computes in bf16: its reason is the endpoint's.
            Err(e) if precision != Precision::F32 => return Err(e),
            Err(e) if !spec.safetensors.is_empty() => tracing::warn!(
                error = %e,
                "{} cannot serve this model; trying the next engine",
                engine.label()
            ),
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Whether a model starts on candle and moves to a graph engine once that has compiled
/// (`cfg.fast_start`): under `auto`, in f32, for a repo with safetensors (candle's
/// weights), when a graph engine is there to move to.
pub(super) fn starts_fast(spec: &ModelSpec, cfg: &EngineConfig) -> bool {
    cfg.fast_start
        && cfg.engine == EnginePreference::Auto
        && cfg.precision == Precision::F32
        && !spec.safetensors.is_empty()
        && GRAPH_ENGINES.into_iter().any(GraphEngine::is_available)
}

/// The graph-engine instances a fast-started model moves to (see [`starts_fast`]);
/// `None` when no graph engine can serve it (it stays on candle).
pub(super) fn load_graph_backends(
    spec: &ModelSpec,
    task: Task,
    cfg: &EngineConfig,
    replicas: usize,
) -> Result<Option<Vec<Box<dyn Backend>>>, LoadError> {
    load_auto_graph(spec, task, cfg, replicas)
}

/// One candle instance (its kernels use every compute thread).
pub(super) fn load_candle(
    spec: &ModelSpec,
    task: Task,
    cfg: &EngineConfig,
) -> Result<Vec<Box<dyn Backend>>, LoadError> {
    check_precision(cfg)?;
    if spec.safetensors.is_empty() {
        return Err(LoadError::NoWeights {
            onnx_hint: " (this repo has only ONNX weights and no ONNX engine is available)",
        });
    }
    Ok(vec![Box::new(CandleBackend::load(spec, task)?)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_engines_need_their_feature() {
        assert_eq!(missing_feature(EnginePreference::Auto), None);
        assert_eq!(missing_feature(EnginePreference::Candle), None);
        assert_eq!(
            missing_feature(EnginePreference::Ort),
            (!cfg!(feature = "engine-ort")).then_some("engine-ort")
        );
        assert_eq!(
            missing_feature(EnginePreference::OpenVino),
            (!cfg!(feature = "engine-openvino")).then_some("engine-openvino")
        );
    }

    #[test]
    fn bf16_is_refused_with_a_reason_unless_openvino_runs() {
        let cfg = |engine| EngineConfig {
            engine,
            precision: Precision::Bf16,
            ..EngineConfig::default()
        };
        let err = check_precision(&cfg(EnginePreference::Candle)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "precision bf16 needs the OpenVINO engine, which this worker's engine setting \
             (--engine) excludes"
        );
        assert!(
            check_precision(&EngineConfig::default()).is_ok(),
            "f32 always"
        );
        if !GraphEngine::OpenVino.is_available() {
            let err = check_precision(&cfg(EnginePreference::Auto)).unwrap_err();
            assert!(matches!(err, LoadError::Precision { .. }), "{err}");
        }
    }
}
