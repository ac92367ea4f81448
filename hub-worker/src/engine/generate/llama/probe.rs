//! A GGUF file is loaded and run in a child process before the worker loads it.
//!
//! llama.cpp checks much of what a GGUF file says with `GGML_ASSERT`, which calls
//! `abort()`: a crafted file (a vocabulary with a repeated token, a tensor layout an
//! architecture's graph does not expect, ...) would kill the worker and every model on it,
//! and on a single-node install the hub with it. [`read_meta`](super::read_meta) refuses
//! the header values known to abort; everything else is found here: [`start`] runs this
//! very executable with [`PROBE_ARG`] in a child, which loads the file with the worker's
//! settings, detokenizes every token of its vocabulary, tokenizes sample texts, builds the
//! JSON grammar sampler, and decodes a small batch of two sequences. The worker loads the
//! file itself once the child reports that llama.cpp loaded it (the same load cannot
//! abort the worker then), and creates its context only after the child
//! has exited cleanly: the child's context, decode and sampler checks overlap the worker's
//! own load. An abort becomes a load error that names llama.cpp's failed check.
//!
//! On a cold start the child begins as the file's download ends ([`start_early`], from the
//! pull's `on_download` hook), so its load runs beside the hashing and fsync of the
//! download rather than after them. It reads the file through a descriptor it inherits
//! (the pull renames the file into the blob store once its digest matches), and the
//! worker's load of that blob takes the running child over; if the digest does not match
//! or the pull fails, the child is killed.
//!
//! The child's result is kept per file: in memory for the process, and for a blob of the
//! worker's content-addressed cache as a marker `blobs/probed/<sha256>.<engine tag>`
//! beside `blobs/sha256/`, so a wake from zero or a worker restart does not probe again.
//! The engine tag names the llama.cpp build: another version probes again.
//!
//! The child needs an executable that answers [`PROBE_ARG`]: the `hub-worker` and `paddock`
//! binaries call `hub_worker::serve_child_if_asked` (which calls [`serve_probe_if_asked`]) first thing in `main`, which also makes their own
//! executable the probe. [`use_probe_exe`] or `HUB_WORKER_GGUF_PROBE_EXE` name another one
//! (tests: the `hub-worker` binary). A process with neither (a library test, an in-process benchmark)
//! loads GGUF files without a probe.
//!
//! What a probe cannot cover: a check that only a particular request trips (a prompt the
//! tokenizer mishandles, a context length never reached in the probe). Those end the
//! decoder's own process ([`super::host`]), which serves the model wherever a host
//! executable is known, not the worker.

use super::{backend, read_meta};
use crate::engine::error::LoadError;
use crate::engine::generate::{Constraint, SamplingParams};
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use std::collections::HashSet;
use std::io::{Read, Write};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use std::time::{Duration, Instant};

/// The argument that makes a worker executable run the probe (`<exe> --paddock-probe-gguf
/// <file> <slots> <threads>`).
pub const PROBE_ARG: &str = "--paddock-probe-gguf";
/// Names the probe executable when the running one does not serve [`PROBE_ARG`].
pub const PROBE_EXE_ENV: &str = "HUB_WORKER_GGUF_PROBE_EXE";
/// The llama.cpp build a probe result holds for (the `llama-cpp-2` pin in Cargo.toml; a
/// unit test keeps the two equal).
const ENGINE_TAG: &str = "llama-cpp-2-0.1.160";
/// Exit code of a child that found a clean error (its message on stdout).
const EXIT_REFUSED: i32 = 2;
/// Exit code of a child whose parent went away.
const EXIT_ORPHANED: i32 = 3;
/// The line a child writes once llama.cpp has loaded the file.
const LOADED_LINE: &str = "loaded\n";
/// What is kept of the child's stdout and stderr.
const OUTPUT_LIMIT: usize = 16 << 10;

/// Whether this executable answers [`PROBE_ARG`] ([`serve_probe_if_asked`] was called).
static SELF_PROBE: AtomicBool = AtomicBool::new(false);

/// Call first thing in `main` of a binary that runs a worker: with [`PROBE_ARG`] the
/// process is a probe child, runs the probe and exits; otherwise it returns, and the
/// executable becomes this process's probe.
pub fn serve_probe_if_asked() {
    if !crate::child_exe::asked_for(PROBE_ARG) {
        SELF_PROBE.store(true, Ordering::Release);
        return;
    }
    let rest: Vec<String> = std::env::args_os()
        .skip(2)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    std::process::exit(child_main(&rest));
}

/// The probe executable set by [`use_probe_exe`].
static CONFIGURED_EXE: OnceLock<PathBuf> = OnceLock::new();

/// Makes `exe` (a `hub-worker` binary) this process's probe executable, ahead of
/// [`PROBE_EXE_ENV`] and of this executable; the first call wins. For processes that
/// cannot serve the probe themselves, such as test binaries.
pub fn use_probe_exe(exe: impl Into<PathBuf>) {
    let _ = CONFIGURED_EXE.set(exe.into());
}

/// The probe executable: [`use_probe_exe`]'s, [`PROBE_EXE_ENV`], else this one if it
/// serves the probe.
fn probe_exe() -> Option<PathBuf> {
    crate::child_exe::resolve(
        &CONFIGURED_EXE,
        PROBE_EXE_ENV,
        SELF_PROBE.load(Ordering::Acquire),
    )
}

/// Files that passed a probe in this process: canonical path, size and mtime.
fn passed() -> &'static Mutex<HashSet<(PathBuf, u64, i128)>> {
    static PASSED: OnceLock<Mutex<HashSet<(PathBuf, u64, i128)>>> = OnceLock::new();
    PASSED.get_or_init(Default::default)
}

/// A file's identity for [`passed`], and its cache marker if it is a cache blob.
struct Identity {
    key: (PathBuf, u64, i128),
    marker: Option<PathBuf>,
}

fn identity(file: &Path) -> Result<Identity, LoadError> {
    let io = |source| LoadError::Io {
        path: file.to_path_buf(),
        source,
    };
    let canonical = std::fs::canonicalize(file).map_err(io)?;
    let meta = std::fs::metadata(&canonical).map_err(io)?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i128);
    Ok(Identity {
        marker: marker_for(&canonical),
        key: (canonical, meta.len(), mtime),
    })
}

/// `<root>/blobs/probed/<hex>.<tag>` for `<root>/blobs/sha256/<hex>`; `None` for any
/// other file (its content is not known by its name).
fn marker_for(canonical: &Path) -> Option<PathBuf> {
    let hex = canonical.file_name()?.to_str()?;
    let algo_dir = canonical.parent()?;
    let blobs = algo_dir.parent()?;
    let is_blob = hex.len() == 64
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
        && algo_dir.file_name()? == "sha256"
        && blobs.file_name()? == "blobs";
    is_blob.then(|| blobs.join("probed").join(format!("{hex}.{ENGINE_TAG}")))
}

/// Starts the probe of `file` unless it passed before (`None`: nothing to wait for). The
/// worker then waits for [`Probe::loaded`] before it loads the file itself, and for
/// [`Probe::finish`] before it creates a context: the child's tokenizer, context, decode
/// and sampler checks run while the worker loads (on one thread). `slots` is the load's.
/// A probe [`start_early`] began on the same cache blob with the same slots is taken over
/// instead of starting another.
pub fn start(file: &Path, slots: usize) -> Result<Option<Probe>, LoadError> {
    let Some(exe) = probe_exe() else {
        tracing::debug!(file = %file.display(), "no GGUF probe executable: loading unprobed");
        return Ok(None);
    };
    let id = identity(file)?;
    if lock(passed()).contains(&id.key) || id.marker.as_deref().is_some_and(Path::exists) {
        return Ok(None);
    }
    let blob_hex = id.marker.as_ref().and(id.key.0.file_name());
    if let Some(mut probe) = blob_hex.and_then(|hex| take_early(&hex.to_string_lossy(), slots)) {
        tracing::debug!(
            file = %file.display(),
            since_ms = probe.started.elapsed().as_millis() as u64,
            "taking over the GGUF probe started on the download"
        );
        probe.file = file.to_path_buf();
        probe.id = id;
        return Ok(Some(probe));
    }
    let limit = deadline_for(id.key.1);
    spawn(&exe, file, None, slots, id, limit).map(Some)
}

/// Where an early probe's child finds the file: the descriptor it inherits.
const EARLY_FD: i32 = 3;

/// A probe child started on a download before it is verified ([`start_early`]); dropped
/// before [`start`] takes it over, it kills the child.
pub struct EarlyProbe(std::sync::Arc<Mutex<Option<Probe>>>);

impl EarlyProbe {
    /// Whether a load has taken the probe over.
    pub fn taken(&self) -> bool {
        lock(&self.0).is_none()
    }

    /// The child's process id while it is not taken over.
    pub fn pid(&self) -> Option<u32> {
        lock(&self.0).as_ref().map(|p| p.child.id())
    }
}

/// Early probes not taken over yet: the blob's sha256 hex, the slots, the probe.
type EarlyEntry = (String, usize, std::sync::Weak<Mutex<Option<Probe>>>);

fn early() -> &'static Mutex<Vec<EarlyEntry>> {
    static EARLY: OnceLock<Mutex<Vec<EarlyEntry>>> = OnceLock::new();
    EARLY.get_or_init(Default::default)
}

/// The early probe of the blob `hex` for `slots`, if one is running.
fn take_early(hex: &str, slots: usize) -> Option<Probe> {
    let mut early = lock(early());
    early.retain(|(_, _, probe)| probe.strong_count() > 0);
    early
        .iter()
        .filter(|(h, s, _)| h == hex && *s == slots)
        .find_map(|(_, _, probe)| probe.upgrade().and_then(|p| lock(&p).take()))
}

/// Starts the probe of a GGUF file the worker has just downloaded, while its digest is
/// still being checked: `file` holds the bytes now and is renamed to `blob`
/// (`<cache>/blobs/sha256/<hex>`) once they are verified. The child reads the file through
/// a descriptor it inherits, so the rename does not disturb it. The load of `blob` with
/// the same `slots` takes the probe over ([`start`]) and keeps its verdict, which then
/// holds for the verified bytes: the child read this very file, which nothing writes after
/// the download. `None` when the blob passed a probe before, or no probe executable is
/// known (the load decides then).
pub fn start_early(
    file: &Path,
    blob: &Path,
    slots: usize,
) -> Result<Option<EarlyProbe>, LoadError> {
    match probe_exe() {
        Some(exe) => start_early_with(&exe, file, blob, slots),
        None => Ok(None),
    }
}

fn start_early_with(
    exe: &Path,
    file: &Path,
    blob: &Path,
    slots: usize,
) -> Result<Option<EarlyProbe>, LoadError> {
    let Some(marker) = marker_for(blob).filter(|m| !m.exists()) else {
        return Ok(None);
    };
    let hex = blob
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let io = |source| LoadError::Io {
        path: file.to_path_buf(),
        source,
    };
    let input = std::fs::File::open(file).map_err(io)?;
    let len = input.metadata().map_err(io)?.len();
    let id = Identity {
        key: (blob.to_path_buf(), len, 0),
        marker: Some(marker),
    };
    let probe = spawn(exe, file, Some(input), slots, id, deadline_for(len))?;
    let probe = std::sync::Arc::new(Mutex::new(Some(probe)));
    let mut registry = lock(early());
    registry.retain(|(_, _, probe)| probe.strong_count() > 0);
    registry.push((hex, slots, std::sync::Arc::downgrade(&probe)));
    drop(registry);
    Ok(Some(EarlyProbe(probe)))
}

/// Starts `exe` as the probe child of `file`, or of `input` (an open `file`) when given:
/// the child gets it as descriptor [`EARLY_FD`] and opens `/proc/self/fd/3`.
fn spawn(
    exe: &Path,
    file: &Path,
    input: Option<std::fs::File>,
    slots: usize,
    id: Identity,
    limit: Duration,
) -> Result<Probe, LoadError> {
    let started = Instant::now();
    let mut command = Command::new(exe);
    match &input {
        Some(input) => {
            pass_as_early_fd(&mut command, input);
            command
                .arg(PROBE_ARG)
                .arg(format!("/proc/self/fd/{EARLY_FD}"))
        }
        None => command.arg(PROBE_ARG).arg(file),
    };
    let spawned = command
        .arg(slots.to_string())
        // One compute thread: the worker loads the file beside the child's decode.
        .arg("1")
        // No gdb attach on abort: the failed check's line is all the report needs.
        .env("GGML_NO_BACKTRACE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    // The child holds its own copy of the descriptor now.
    drop(input);
    let mut child = spawned.map_err(|e| {
        LoadError::Decoder(format!(
            "cannot start the GGUF probe {}: {e}",
            exe.display()
        ))
    })?;
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, events) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut stdout = std::io::BufReader::new(stdout);
        let mut first = Vec::new();
        let _ = std::io::BufRead::read_until(
            &mut (&mut stdout).take(OUTPUT_LIMIT as u64),
            b'\n',
            &mut first,
        );
        if first == LOADED_LINE.as_bytes() {
            let _ = tx.send(Event::Loaded);
            first.clear();
        }
        first.extend(read_tail(stdout));
        let _ = tx.send(Event::Exited(first));
    });
    Ok(Probe {
        stdin: child.stdin.take(),
        child,
        events,
        stderr: {
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            std::thread::spawn(move || tx.send(read_tail(stderr)));
            rx
        },
        deadline: started + limit,
        started,
        file: file.to_path_buf(),
        id,
        done: false,
    })
}

/// Makes `input` the child's descriptor [`EARLY_FD`], inheritable across its `exec`.
#[allow(unsafe_code)]
fn pass_as_early_fd(command: &mut Command, input: &std::fs::File) {
    use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
    use std::os::unix::process::CommandExt;
    let source = input.as_raw_fd();
    // SAFETY: the closure runs in the forked child before `exec`; it only makes the
    // async-signal-safe `dup2`/`fcntl` system calls on descriptors, allocates nothing, and
    // `forget`s the `OwnedFd` it builds so that nothing closes the target. `source` is
    // open in the child (`input` outlives the spawn), and `dup2` leaves the copy without
    // close-on-exec.
    unsafe {
        command.pre_exec(move || {
            let source = BorrowedFd::borrow_raw(source);
            if source.as_raw_fd() == EARLY_FD {
                return rustix::io::fcntl_setfd(source, rustix::io::FdFlags::empty())
                    .map_err(std::io::Error::from);
            }
            let mut target = OwnedFd::from_raw_fd(EARLY_FD);
            let result = rustix::io::dup2(source, &mut target);
            std::mem::forget(target);
            result.map_err(std::io::Error::from)
        });
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the child's stdout reader reports.
enum Event {
    /// The child has loaded the file.
    Loaded,
    /// The child's stdout closed (it exited): what it wrote after [`LOADED_LINE`].
    Exited(Vec<u8>),
}

/// A running probe child ([`start`]). Dropped before [`Probe::finish`], it kills the child.
pub struct Probe {
    child: std::process::Child,
    /// Held open: the child exits when it closes, so it never outlives the worker.
    stdin: Option<std::process::ChildStdin>,
    events: std::sync::mpsc::Receiver<Event>,
    /// The child's stderr once it closes.
    stderr: std::sync::mpsc::Receiver<Vec<u8>>,
    deadline: Instant,
    started: Instant,
    file: PathBuf,
    id: Identity,
    done: bool,
}

impl Probe {
    /// Waits until llama.cpp has loaded the file in the child, so
    /// the same load cannot abort the worker: `Err` with the child's failure otherwise.
    pub fn loaded(&mut self) -> Result<(), LoadError> {
        match self.next_event() {
            Some(Event::Loaded) => Ok(()),
            Some(Event::Exited(out)) => Err(self
                .conclude(false, out)
                .err()
                .unwrap_or_else(|| self.failure("the probe ended before loading the file"))),
            None => Err(self.conclude(true, Vec::new()).unwrap_err()),
        }
    }

    /// Waits for the child's verdict on the rest (a context with the worker's slots, a
    /// decoded batch, the grammar sampler), and records a pass.
    pub fn finish(mut self) -> Result<(), LoadError> {
        let (timed_out, out) = match self.next_event() {
            Some(Event::Exited(out)) => (false, out),
            Some(Event::Loaded) => (false, Vec::new()),
            None => (true, Vec::new()),
        };
        self.conclude(timed_out, out)?;
        tracing::info!(
            file = %self.file.display(),
            elapsed_ms = self.started.elapsed().as_millis() as u64,
            "GGUF probe passed"
        );
        if let Some(marker) = &self.id.marker {
            // A lost marker only means probing again.
            let written = marker
                .parent()
                .map(std::fs::create_dir_all)
                .unwrap_or(Ok(()))
                .and_then(|()| std::fs::write(marker, b""));
            if let Err(e) = written {
                tracing::warn!(marker = %marker.display(), error = %e, "cannot record a GGUF probe");
            }
        }
        lock(passed()).insert(self.id.key.clone());
        Ok(())
    }

    fn next_event(&self) -> Option<Event> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        self.events.recv_timeout(left).ok()
    }

    fn name(&self) -> String {
        self.file.file_name().map_or_else(
            || self.file.display().to_string(),
            |n| n.to_string_lossy().into(),
        )
    }

    fn failure(&self, what: &str) -> LoadError {
        LoadError::Weights(format!("{}: {what}", self.name()))
    }

    /// Waits for the child (killing it first when `timed_out`) and turns how it ended into
    /// the load's result; `out` is its stdout after the loaded line.
    fn conclude(&mut self, timed_out: bool, out: Vec<u8>) -> Result<(), LoadError> {
        self.done = true;
        if timed_out {
            let _ = self.child.kill();
        }
        let status = self.child.wait();
        self.stdin = None;
        // Closed when the child exits, unless something it started holds it open.
        let err = self
            .stderr
            .recv_timeout(Duration::from_secs(2))
            .unwrap_or_default();
        let status = status.map_err(|e| LoadError::Decoder(format!("the GGUF probe: {e}")))?;
        let name = self.name();
        if timed_out {
            return Err(LoadError::Weights(format!(
                "llama.cpp did not finish loading and running {name} within {} s",
                self.deadline.duration_since(self.started).as_secs()
            )));
        }
        if status.success() {
            return Ok(());
        }
        let out = String::from_utf8_lossy(&out).trim().to_string();
        if status.code() == Some(EXIT_REFUSED) && !out.is_empty() {
            return Err(LoadError::Weights(out));
        }
        let err = String::from_utf8_lossy(&err);
        tracing::warn!(file = %self.file.display(), %status, stderr = %err, "GGUF probe failed");
        Err(LoadError::Weights(format!(
            "llama.cpp stopped while loading and running {name} ({}): {}",
            describe(status),
            failed_check(&err)
        )))
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// How long a probe of a file of `len` bytes may take: a minute, plus the time to read it
/// at 50 MB/s (the child is the first to touch the weights).
pub(super) fn deadline_for(len: u64) -> Duration {
    Duration::from_secs(60) + Duration::from_millis(len / 50_000)
}

/// Reads a pipe to its end, keeping the last [`OUTPUT_LIMIT`] bytes.
pub(super) fn read_tail(mut r: impl Read) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = r.read(&mut buf) {
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > 2 * OUTPUT_LIMIT {
            kept.drain(..kept.len() - OUTPUT_LIMIT);
        }
    }
    if kept.len() > OUTPUT_LIMIT {
        kept.drain(..kept.len() - OUTPUT_LIMIT);
    }
    kept
}

/// "aborted", "killed by signal 9", "exit code 101".
pub(super) fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (_, Some(6)) => "aborted".to_string(),
        (_, Some(sig)) => format!("killed by signal {sig}"),
        (Some(code), None) => format!("exit code {code}"),
        (None, None) => status.to_string(),
    }
}

/// The line of the child's stderr that says what failed: ggml's `GGML_ASSERT(...) failed`
/// or a panic message, else its last line.
pub(super) fn failed_check(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let pick = lines
        .iter()
        .rev()
        .find(|l| {
            l.contains("GGML_ASSERT")
                || l.contains("GGML_ABORT")
                || l.contains("error")
                || l.contains("panicked")
        })
        .or(lines.last())
        .copied()
        .unwrap_or("no message");
    pick.chars().take(400).collect()
}

/// The child: runs the probe and returns its exit code, with any error on stdout.
fn child_main(args: &[String]) -> i32 {
    // The parent keeps our stdin open while it waits: at EOF it has gone.
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        while matches!(std::io::stdin().read(&mut sink), Ok(n) if n > 0) {}
        std::process::exit(EXIT_ORPHANED);
    });
    let parsed = match args {
        [file, slots, threads] => slots
            .parse::<usize>()
            .ok()
            .zip(threads.parse::<usize>().ok())
            .map(|(s, t)| (PathBuf::from(file), s, t)),
        _ => None,
    };
    let result = match parsed {
        Some((file, slots, threads)) => probe_here(&file, slots.max(1), threads.max(1)),
        None => Err(format!("usage: {PROBE_ARG} <file.gguf> <slots> <threads>")),
    };
    let mut out = std::io::stdout().lock();
    match result {
        Ok(()) => 0,
        Err(message) => {
            let _ = writeln!(out, "{message}");
            let _ = out.flush();
            EXIT_REFUSED
        }
    }
}

/// Texts the tokenizer must get through: ASCII, whitespace runs, other scripts, emoji,
/// digits, a NUL, and spellings of special tokens of common families.
const SAMPLE_TEXTS: &[&str] = &[
    "",
    "The capital of France is",
    "Hello, world!\n\n  two  spaces\tand a tab\r\n",
    "Ünïcödé, 日本語, русский, العربية, 🙂👍🏽",
    "1234567890 3.14159 -0.5e-10",
    "\u{0}\u{1}\u{7f}",
    "<s></s><unk><pad><bos><eos><|im_start|>user\nhi<|im_end|><start_of_turn>model<end_of_turn>",
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|><|eot_id|>[INST] x [/INST]",
];

/// Loads and runs `file` the way the worker would (see the module docs).
fn probe_here(file: &Path, slots: usize, threads: usize) -> Result<(), String> {
    read_meta(file).map_err(|e| e.to_string())?;
    let backend = backend().map_err(|e| e.to_string())?;
    let model = LlamaModel::load_from_file(backend, file, &LlamaModelParams::default())
        .map_err(|e| format!("llama.cpp cannot load the GGUF file: {e}"))?;
    // The same load cannot abort the worker now: it may load the file while this child
    // goes on with what the worker does only after [`Probe::finish`].
    let mut out = std::io::stdout().lock();
    out.write_all(LOADED_LINE.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| format!("the probe cannot report: {e}"))?;
    drop(out);
    let vocab = model.vocab();
    let n_vocab = model.n_vocab();
    if n_vocab <= 0 {
        return Err("the GGUF file's vocabulary is empty".to_string());
    }
    let mut piece = Vec::new();
    for id in 0..n_vocab {
        for special in [true, false] {
            piece.clear();
            vocab.token_to_piece_into(LlamaToken(id), &mut piece, special, None);
        }
    }
    for text in SAMPLE_TEXTS {
        for add_special in [true, false] {
            let ids = vocab.tokenize(text.as_bytes(), add_special, true);
            if let Some(bad) = ids.iter().find(|t| t.0 < 0 || t.0 >= n_vocab) {
                return Err(format!(
                    "the GGUF tokenizer produced token {} outside its vocabulary of {n_vocab}",
                    bad.0
                ));
            }
        }
    }

    // A context shaped like the worker's (one KV stream per slot), with little room.
    let per_slot = 32;
    let prompt: Vec<LlamaToken> = vocab
        .tokenize(SAMPLE_TEXTS[1].as_bytes(), true, true)
        .into_iter()
        .take(8)
        .collect();
    let prompt = if prompt.is_empty() {
        vec![LlamaToken(0)]
    } else {
        prompt
    };
    let seqs = slots.min(2);
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new((slots * per_slot) as u32))
        .with_n_batch((per_slot * seqs) as u32)
        .with_n_ubatch((per_slot * seqs) as u32)
        .with_n_seq_max(slots as u32)
        .with_n_threads(threads as i32)
        .with_n_threads_batch(threads as i32)
        .with_kv_unified(false)
        .with_swa_full(true);
    let mut ctx = model
        .new_context(backend, params)
        .map_err(|e| format!("llama.cpp cannot create a context for the model: {e}"))?;
    let mut batch = LlamaBatch::new(per_slot * seqs, 1);
    let mut last = Vec::with_capacity(seqs);
    for seq in 0..seqs {
        for (pos, &t) in prompt.iter().enumerate() {
            batch
                .add(t, pos as i32, &[seq as i32], pos == prompt.len() - 1)
                .map_err(|e| e.to_string())?;
        }
        last.push(batch.n_tokens() - 1);
    }
    ctx.decode(&mut batch)
        .map_err(|e| format!("llama.cpp cannot run the model: {e}"))?;
    let logits = ctx.get_logits_ith(last[0]).to_vec();
    let next = super::sampler::argmax(&logits) as i32;
    // A decode step after the prompt, and a grammar-constrained sample.
    batch.clear();
    batch
        .add(LlamaToken(next), prompt.len() as i32, &[0], true)
        .map_err(|e| e.to_string())?;
    ctx.decode(&mut batch)
        .map_err(|e| format!("llama.cpp cannot run the model: {e}"))?;
    let sampling = SamplingParams {
        temperature: 0.7,
        top_k: 40,
        presence_penalty: 0.5,
        ..SamplingParams::default()
    };
    let mut sampler =
        super::sampler::Sampling::build(&model, &sampling, &Constraint::JsonObject, 64)
            .map_err(|e| e.to_string())?;
    let mut candidates = Vec::new();
    sampler.sample(ctx.get_logits_ith(0), &mut candidates);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engine_tag_names_the_pinned_llama_cpp_2() {
        let manifest = include_str!("../../../../Cargo.toml");
        let version = ENGINE_TAG.strip_prefix("llama-cpp-2-").unwrap();
        assert!(
            manifest.contains(&format!("llama-cpp-2 = {{ version = \"={version}\"")),
            "bump ENGINE_TAG with the llama-cpp-2 pin"
        );
    }

    #[test]
    fn only_cache_blobs_get_a_marker() {
        let hex = "ab".repeat(32);
        let blob = PathBuf::from(format!("/c/blobs/sha256/{hex}"));
        assert_eq!(
            marker_for(&blob),
            Some(PathBuf::from(format!("/c/blobs/probed/{hex}.{ENGINE_TAG}")))
        );
        for other in [
            format!("/c/blobs/sha256/{}", "ab".repeat(31)),
            format!("/c/blobs/git-sha1/{hex}"),
            format!("/c/models/sha256/{hex}"),
            "/tmp/model.gguf".to_string(),
        ] {
            assert_eq!(marker_for(Path::new(&other)), None, "{other}");
        }
    }

    /// A stand-in probe executable: a shell script with `body`.
    fn script(dir: &Path, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("probe.sh");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn spawn_script(body: &str, limit: Duration) -> (tempfile::TempDir, Probe) {
        let dir = tempfile::tempdir().unwrap();
        let exe = script(dir.path(), body);
        let file = dir.path().join("model.gguf");
        std::fs::write(&file, b"GGUF").unwrap();
        let id = identity(&file).unwrap();
        let probe = spawn(&exe, &file, None, 1, id, limit).unwrap();
        (dir, probe)
    }

    #[test]
    fn an_abort_after_the_load_fails_the_finish() {
        let (_dir, mut probe) = spawn_script(
            "echo loaded; echo 'x.cpp:1: GGML_ASSERT(n > 0) failed' >&2; kill -ABRT $$",
            Duration::from_secs(30),
        );
        probe.loaded().expect("the child reported its load");
        let msg = probe.finish().unwrap_err().to_string();
        assert!(
            msg.contains("(aborted): x.cpp:1: GGML_ASSERT(n > 0) failed"),
            "{msg}"
        );
    }

    #[test]
    fn a_clean_refusal_before_the_load_is_the_childs_message() {
        let (_dir, mut probe) = spawn_script(
            "echo 'llama.cpp cannot load the GGUF file: no tensors'; exit 2",
            Duration::from_secs(30),
        );
        let msg = probe.loaded().unwrap_err().to_string();
        assert!(
            msg.ends_with("llama.cpp cannot load the GGUF file: no tensors"),
            "{msg}"
        );
    }

    #[test]
    fn a_child_that_exits_without_loading_fails() {
        let (_dir, mut probe) = spawn_script("exit 0", Duration::from_secs(30));
        let msg = probe.loaded().unwrap_err().to_string();
        assert!(msg.contains("ended before loading"), "{msg}");
    }

    #[test]
    fn a_hung_child_is_killed_at_the_deadline() {
        let (_dir, mut probe) = spawn_script("echo loaded; exec sleep 60", Duration::from_secs(1));
        probe.loaded().unwrap();
        let started = Instant::now();
        let msg = probe.finish().unwrap_err().to_string();
        assert!(msg.contains("did not finish loading and running"), "{msg}");
        assert!(started.elapsed() < Duration::from_secs(30));
    }

    /// A downloaded file and the cache blob path it will be renamed to, `blobs/sha256/<hex>`
    /// (the early probes of this process are found by `hex`: each test has its own).
    fn download(dir: &Path, hex: &str) -> (PathBuf, PathBuf) {
        let file = dir.join("tmp/dl-1/abc");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, b"GGUF and the rest").unwrap();
        let blob = dir.join("blobs/sha256").join(hex);
        std::fs::create_dir_all(blob.parent().unwrap()).unwrap();
        (file, blob)
    }

    #[test]
    fn an_early_child_reads_the_download_after_it_is_renamed() {
        let dir = tempfile::tempdir().unwrap();
        // The child waits until the file is gone from its path, then reads what it was
        // given and reports the load only if the bytes are the download's.
        let exe = script(
            dir.path(),
            r#"while [ -e "$SEEN" ]; do sleep 0.01; done
               [ "$(head -c 8 "$2")" = "GGUF and" ] || { echo "read $(head -c 8 "$2")"; exit 2; }
               echo loaded"#,
        );
        let hex = "c1".repeat(32);
        let (file, blob) = download(dir.path(), &hex);
        let exe_env = script(
            &{
                let d = dir.path().join("wrap");
                std::fs::create_dir_all(&d).unwrap();
                d
            },
            &format!("SEEN={} exec {} \"$@\"", file.display(), exe.display()),
        );
        let early = start_early_with(&exe_env, &file, &blob, 2)
            .unwrap()
            .expect("a probe starts");
        std::fs::rename(&file, &blob).unwrap();
        assert!(!early.taken());
        // Another slot count does not take it; the load's does, once.
        assert!(take_early(&hex, 3).is_none());
        let mut probe = take_early(&hex, 2).expect("the load takes the probe over");
        assert!(early.taken());
        assert!(take_early(&hex, 2).is_none());
        probe.loaded().expect("the child read the renamed download");
        probe.finish().unwrap();
    }

    #[test]
    fn an_early_child_not_taken_over_dies_with_its_handle() {
        let dir = tempfile::tempdir().unwrap();
        let exe = script(dir.path(), "echo loaded; exec sleep 60");
        let hex = "c2".repeat(32);
        let (file, blob) = download(dir.path(), &hex);
        let early = start_early_with(&exe, &file, &blob, 2).unwrap().unwrap();
        let pid = early.pid().expect("running");
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        drop(early);
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "the child was killed and reaped"
        );
        assert!(take_early(&hex, 2).is_none());
    }

    #[test]
    fn no_early_probe_for_a_probed_blob_or_a_file_outside_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let exe = script(dir.path(), "echo loaded");
        let (file, blob) = download(dir.path(), &"c3".repeat(32));
        assert!(start_early_with(&exe, &file, &dir.path().join("x.gguf"), 2)
            .unwrap()
            .is_none());
        let marker = marker_for(&blob).unwrap();
        std::fs::create_dir_all(marker.parent().unwrap()).unwrap();
        std::fs::write(&marker, b"").unwrap();
        assert!(start_early_with(&exe, &file, &blob, 2).unwrap().is_none());
    }

    #[test]
    fn the_failed_check_is_the_reported_line() {
        let stderr = "llama_model_loader: loaded meta data\n\
             /src/llama-vocab.cpp:2578: GGML_ASSERT(id_to_token.size() == token_to_id.size()) failed\n\n";
        assert_eq!(
            failed_check(stderr),
            "/src/llama-vocab.cpp:2578: GGML_ASSERT(id_to_token.size() == token_to_id.size()) failed"
        );
        assert_eq!(failed_check("a\nlast line\n"), "last line");
        assert_eq!(failed_check(""), "no message");
    }
}
