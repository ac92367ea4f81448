//! Settings of mimalloc, the global allocator of the binaries that run
//! fine-tuning jobs (`hub-worker`, and `hub-api` with its in-process worker).
//!
//! A training step allocates and frees tensors of megabytes (activations,
//! gradients; the word-embedding gradient of MiniLM alone is 47 MB). mimalloc
//! keeps freed memory for its purge delay (1 s by default), then hands every
//! range freed since back to the kernel at once; the next step faults the same
//! memory back in, zeroing each page (transparent huge pages: 2 MiB at a time).
//! Measured on a MiniLM fine-tune step (`perf stat`, one thread): 63,600 page
//! faults and 1.3-2.2 s of kernel time in a 10 s run with the default, 700 and
//! 0.4-0.8 s with purging held off (`clear_page_erms` was a quarter of the
//! step's samples in `perf record`).

/// How long freed memory stays with the process before it is returned: longer
/// than a training step, so a step reuses the memory the previous one freed,
/// and still short enough that an idle worker gives a finished job's memory
/// back within a minute.
pub const PURGE_DELAY_MS: i64 = 30_000;

/// mimalloc's `mi_option_purge_delay` (`mimalloc.h`'s `mi_option_e`; the
/// bindings predate its name and call the option before it
/// `mi_option_eager_commit_delay`, 14).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Sets mimalloc's options for this process; call it first thing in `main`
/// of a binary whose `#[global_allocator]` is `mimalloc::MiMalloc`.
#[allow(unsafe_code)]
pub fn configure() {
    // SAFETY: stores one value in mimalloc's option table (an atomic write);
    // the option is read on each purge decision.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS as _);
    }
}

/// mimalloc's current purge delay, in milliseconds.
#[allow(unsafe_code)]
pub fn purge_delay_ms() -> i64 {
    // SAFETY: reads one value of mimalloc's option table.
    unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) as i64 }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_option_set_is_the_purge_delay() {
        // Option 15 is the purge delay if it holds mimalloc's documented default
        // (1000 ms in mimalloc 3) before it is set: no other option has that value.
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(super::purge_delay_ms(), 1000);
        }
        super::configure();
        assert_eq!(super::purge_delay_ms(), super::PURGE_DELAY_MS);
    }
}
