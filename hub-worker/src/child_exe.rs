//! The executable a worker runs its child processes with: the GGUF probe
//! (`engine::generate::llama::probe`) and the chat-template sandbox
//! (`engine::generate::sandbox`). Each role is served by the worker's own binary when
//! that binary answers the role's argument (its `main` calls
//! [`serve_child_if_asked`](crate::serve_child_if_asked)); a test harness or another
//! process names one explicitly, or through the role's environment variable.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Which executable serves a child role: `configured` (set by the role's `use_*_exe`)
/// first, then the environment variable `env`, then this very executable if it serves
/// the role itself (`serves_self`), else none.
pub(crate) fn resolve(
    configured: &OnceLock<PathBuf>,
    env: &str,
    serves_self: bool,
) -> Option<PathBuf> {
    if let Some(exe) = configured.get() {
        return Some(exe.clone());
    }
    if let Some(exe) = std::env::var_os(env).filter(|v| !v.is_empty()) {
        return Some(exe.into());
    }
    if serves_self {
        // This very executable even when its file was replaced or removed since the
        // process started (an upgrade in place): the kernel keeps the running image.
        let running = Path::new("/proc/self/exe");
        if running.exists() {
            return Some(running.to_path_buf());
        }
        return std::env::current_exe().ok();
    }
    None
}

/// Whether the first argument of this process is `arg` (a child role's marker).
pub(crate) fn asked_for(arg: &str) -> bool {
    std::env::args_os().nth(1).as_deref() == Some(std::ffi::OsStr::new(arg))
}
