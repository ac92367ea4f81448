//! The compute thread pool every backend thread runs its forward passes in, sized by the
//! worker's `--threads` (default: the cores this process may use). candle's matmul (gemm)
//! and its parallel ops run on the rayon pool they are called from.

use std::sync::OnceLock;

static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();

/// Sets the process-wide thread count for candle/rayon through their environment
/// variables (`RAYON_NUM_THREADS`, `CANDLE_NUM_THREADS`) unless already set. Call it at
/// the very start of `main`, before any other thread exists: changing the environment of
/// a running multi-threaded process is not safe.
pub fn set_env_threads(n: usize) {
    for var in ["RAYON_NUM_THREADS", "CANDLE_NUM_THREADS"] {
        if std::env::var_os(var).is_none() {
            std::env::set_var(var, n.max(1).to_string());
        }
    }
}

/// Builds the compute pool with `n` threads if it does not exist yet; returns its size.
pub fn init_compute_threads(n: usize) -> usize {
    compute_pool_with(n).current_num_threads()
}

fn compute_pool_with(n: usize) -> &'static rayon::ThreadPool {
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n.max(1))
            .thread_name(|i| format!("compute-{i}"))
            .build()
            .expect("build the compute thread pool")
    })
}

/// The compute pool (created with one thread per core on first use).
pub fn compute_pool() -> &'static rayon::ThreadPool {
    compute_pool_with(crate::host::cores())
}
