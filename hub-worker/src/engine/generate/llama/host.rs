//! Each GGUF decoder runs in a process of its own, the decoder host.
//!
//! llama.cpp checks much of what it is given with `GGML_ASSERT`, which calls `abort()`.
//! The GGUF probe ([`super::probe`]) finds a file that aborts on loading or on a small
//! decode before the worker serves it, but not a check that only one particular request
//! trips (a prompt the crafted vocabulary mishandles, a context length the probe never
//! reached). In the worker's own process such an abort would end every model on the
//! worker, and on a single-node install the hub with them. So when a host executable is
//! known (the same one as the probe's: the `hub-worker` and `paddock` binaries serve
//! [`HOST_ARG`] themselves), [`super::load`] starts this executable as a child that loads
//! the model, creates its context and runs its scheduler, and the worker holds a
//! [`Hosted`] generator that talks to it over the child's stdin and stdout:
//!
//! * frames are a 4-byte little-endian length and a JSON message ([`ToHost`],
//!   [`FromHost`]); the child writes its logs to stderr, which the worker keeps the tail
//!   of (the failed check of an abort) and logs;
//! * `submit`, `tokenize` and `detokenize` are round trips (the refusals of `submit`
//!   come back at once, as in process); a request's events stream back as they come;
//! * a request whose [`GenStream`] the worker dropped is cancelled in the child within
//!   [`WATCH`] (the child then drops its stream, and the scheduler frees the slot in
//!   its next step); the child sends its [`DecoderStats`] whenever they change;
//! * when the child ends (an abort, a `kill -9`, out of memory), the requests it was
//!   running end with [`GenEvent::Failed`] naming how it ended, new requests are
//!   answered [`EngineError::Restarting`] (503 with Retry-After), and the child is
//!   started again, after [`RESTART_BACKOFF`] doubling up to [`RESTART_BACKOFF_MAX`] when
//!   it keeps ending;
//! * a host that cannot be started again [`START_ATTEMPTS`] times in a row (its file is
//!   gone, the machine is out of memory) is given up: requests are answered
//!   [`EngineError::Failed`], [`Generator::failure`] says why, and the worker reports the
//!   replica `failed` to the hub, whose gateway stops routing to it;
//! * the child exits when its stdin closes: the worker unloading the model, or the
//!   worker itself going away.
//!
//! The model's weights are mapped in the child only; the worker holds none of them.

use super::probe;
use crate::engine::error::{EngineError, LoadError, RunError};
use crate::engine::generate::{
    Constraint, DecoderInfo, DecoderModel, DecoderStats, GenEvent, GenStream, GenerateRequest,
    Generator,
};
use crate::engine::model::ModelInfo;
use crate::engine::options::EngineConfig;
use crate::engine::spec::ScoreFn;
use crate::engine::task::Task;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The argument that makes a worker executable a decoder host (`<exe>
/// --paddock-decoder-host <repo dir> <file.gguf> <config JSON>`).
pub const HOST_ARG: &str = "--paddock-decoder-host";
/// Names the host executable when the running one does not serve [`HOST_ARG`].
pub const HOST_EXE_ENV: &str = "HUB_WORKER_DECODER_HOST_EXE";
/// How often the worker looks for requests whose stream it dropped, and the child for
/// changed stats.
pub const WATCH: Duration = Duration::from_millis(20);
/// The first wait before a host that ended is started again; doubled each time it ends
/// again within [`STABLE`], up to [`RESTART_BACKOFF_MAX`].
pub const RESTART_BACKOFF: Duration = Duration::from_millis(500);
pub const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Starts in a row that fail (the child ends or errs before it is ready) before a host is
/// given up: with the backoff, about 3.5 s of tries after the first end.
pub const START_ATTEMPTS: u32 = 3;
/// A host that served this long resets the backoff.
const STABLE: Duration = Duration::from_secs(60);
/// Longest the ping that decides whether a host whose round trip timed out
/// ([`EngineConfig::gen_host_reply_ms`]) is hung waits for its answer.
const PING_WAIT: Duration = Duration::from_secs(5);
/// Ids of pings: apart from the requests' ids, which count up from 1.
const PING_IDS: u64 = 1 << 62;
/// Largest frame either side accepts (a prompt far larger than any context).
const MAX_FRAME: usize = 256 << 20;
/// What is kept of the child's stderr for the message of its end.
const STDERR_TAIL: usize = 16 << 10;

static SELF_HOST: AtomicBool = AtomicBool::new(false);
static CONFIGURED_EXE: OnceLock<PathBuf> = OnceLock::new();

/// Called by [`crate::serve_child_if_asked`]: with [`HOST_ARG`] this process is a
/// decoder host, serves until its stdin closes and exits; otherwise it returns, and this
/// executable becomes this process's host executable.
pub fn serve_host_if_asked() {
    if !crate::child_exe::asked_for(HOST_ARG) {
        SELF_HOST.store(true, Ordering::Release);
        return;
    }
    let args: Vec<String> = std::env::args_os()
        .skip(2)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    std::process::exit(child_main(&args));
}

/// Makes `exe` (a `hub-worker` binary) this process's decoder host executable, ahead of
/// [`HOST_EXE_ENV`] and of this executable; the first call wins (tests).
pub fn use_host_exe(exe: impl Into<PathBuf>) {
    let _ = CONFIGURED_EXE.set(exe.into());
}

/// The host executable, if any: decoders then run in a child each.
pub fn host_exe() -> Option<PathBuf> {
    crate::child_exe::resolve(
        &CONFIGURED_EXE,
        HOST_EXE_ENV,
        SELF_HOST.load(Ordering::Acquire),
    )
}

// ---------------------------------------------------------------------------------------
// The wire.

/// What the worker sends its host.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ToHost {
    Submit {
        id: u64,
        req: GenerateRequest,
    },
    Cancel {
        id: u64,
    },
    Tokenize {
        id: u64,
        text: String,
        add_special: bool,
    },
    Detokenize {
        id: u64,
        ids: Vec<u32>,
    },
}

/// What the host sends the worker.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum FromHost {
    /// Loaded, with its context and scheduler running.
    Ready {
        info: WireInfo,
        dim: usize,
    },
    /// The load failed (the message of the [`LoadError`]).
    LoadFailed {
        message: String,
    },
    Reply {
        id: u64,
        reply: Result<Reply, WireError>,
    },
    Event {
        id: u64,
        event: WireEvent,
    },
    Stats(DecoderStats),
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Reply {
    Submitted { prompt_tokens: usize },
    Tokens(Vec<u32>),
    Text(String),
}

/// [`DecoderInfo`] without its `engine` (always llama.cpp here).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WireInfo {
    architecture: String,
    context_length: usize,
    train_context_length: usize,
    slots: usize,
    vocab_size: usize,
    chat_template: Option<String>,
    tool_use_template: Option<String>,
    bos_token: Option<String>,
    eos_token: Option<String>,
}

impl From<&DecoderInfo> for WireInfo {
    fn from(i: &DecoderInfo) -> Self {
        WireInfo {
            architecture: i.architecture.clone(),
            context_length: i.context_length,
            train_context_length: i.train_context_length,
            slots: i.slots,
            vocab_size: i.vocab_size,
            chat_template: i.chat_template.clone(),
            tool_use_template: i.tool_use_template.clone(),
            bos_token: i.bos_token.clone(),
            eos_token: i.eos_token.clone(),
        }
    }
}

impl From<WireInfo> for DecoderInfo {
    fn from(i: WireInfo) -> Self {
        DecoderInfo {
            architecture: i.architecture,
            engine: "llama.cpp",
            context_length: i.context_length,
            train_context_length: i.train_context_length,
            slots: i.slots,
            vocab_size: i.vocab_size,
            chat_template: i.chat_template,
            tool_use_template: i.tool_use_template,
            bos_token: i.bos_token,
            eos_token: i.eos_token,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum WireEvent {
    Token(crate::engine::generate::GenToken),
    Done(crate::engine::generate::Finish),
    Failed(WireError),
}

impl From<GenEvent> for WireEvent {
    fn from(e: GenEvent) -> Self {
        match e {
            GenEvent::Token(t) => WireEvent::Token(t),
            GenEvent::Done(f) => WireEvent::Done(f),
            GenEvent::Failed(e) => WireEvent::Failed(WireError::from(&e)),
        }
    }
}

impl From<WireEvent> for GenEvent {
    fn from(e: WireEvent) -> Self {
        match e {
            WireEvent::Token(t) => GenEvent::Token(t),
            WireEvent::Done(f) => GenEvent::Done(f),
            WireEvent::Failed(e) => GenEvent::Failed(e.into()),
        }
    }
}

/// An [`EngineError`] of a decoder on the wire: what the HTTP layer tells apart keeps
/// its variant and fields, the rest its message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum WireError {
    EmptyInput,
    Overloaded {
        in_flight: usize,
        limit: usize,
    },
    InvalidParameter {
        name: String,
        reason: String,
    },
    Tokenization(String),
    Llama(String),
    Backend(String),
    Unavailable,
    ContextLengthExceeded {
        prompt_tokens: usize,
        max_tokens: Option<usize>,
        context: usize,
    },
    NoChatTemplate,
    Template(String),
    Grammar(String),
    GrammarBusy {
        abandoned: usize,
    },
    Restarting(String),
}

impl From<&EngineError> for WireError {
    fn from(e: &EngineError) -> Self {
        use EngineError as E;
        match e {
            E::EmptyInput => WireError::EmptyInput,
            E::Overloaded { in_flight, limit } => WireError::Overloaded {
                in_flight: *in_flight,
                limit: *limit,
            },
            E::InvalidParameter { name, reason } => WireError::InvalidParameter {
                name: (*name).to_string(),
                reason: reason.clone(),
            },
            E::Tokenization(m) => WireError::Tokenization(m.clone()),
            E::Backend(RunError::Llama(m)) => WireError::Llama(m.clone()),
            E::Unavailable => WireError::Unavailable,
            E::ContextLengthExceeded {
                prompt_tokens,
                max_tokens,
                context,
            } => WireError::ContextLengthExceeded {
                prompt_tokens: *prompt_tokens,
                max_tokens: *max_tokens,
                context: *context,
            },
            E::NoChatTemplate => WireError::NoChatTemplate,
            E::Template(m) => WireError::Template(m.clone()),
            E::Grammar(m) => WireError::Grammar(m.clone()),
            E::GrammarBusy { abandoned } => WireError::GrammarBusy {
                abandoned: *abandoned,
            },
            E::Restarting(m) => WireError::Restarting(m.clone()),
            // Encoder errors and other backends: not raised by a decoder; the message.
            other => WireError::Backend(other.to_string()),
        }
    }
}

impl From<WireError> for EngineError {
    fn from(e: WireError) -> Self {
        match e {
            WireError::EmptyInput => EngineError::EmptyInput,
            WireError::Overloaded { in_flight, limit } => {
                EngineError::Overloaded { in_flight, limit }
            }
            WireError::InvalidParameter { name, reason } => EngineError::InvalidParameter {
                name: static_name(&name),
                reason,
            },
            WireError::Tokenization(m) => EngineError::Tokenization(m),
            WireError::Llama(m) => EngineError::Backend(RunError::Llama(m)),
            // `Candle` displays its message as is.
            WireError::Backend(m) => EngineError::Backend(RunError::Candle(m)),
            WireError::Unavailable => EngineError::Unavailable,
            WireError::ContextLengthExceeded {
                prompt_tokens,
                max_tokens,
                context,
            } => EngineError::ContextLengthExceeded {
                prompt_tokens,
                max_tokens,
                context,
            },
            WireError::NoChatTemplate => EngineError::NoChatTemplate,
            WireError::Template(m) => EngineError::Template(m),
            WireError::Grammar(m) => EngineError::Grammar(m),
            WireError::GrammarBusy { abandoned } => EngineError::GrammarBusy { abandoned },
            WireError::Restarting(m) => EngineError::Restarting(m),
        }
    }
}

/// A parameter name as the `&'static str` [`EngineError::InvalidParameter`] holds: the
/// names the engine uses are few and fixed, each leaked once.
fn static_name(name: &str) -> &'static str {
    static NAMES: OnceLock<Mutex<Vec<&'static str>>> = OnceLock::new();
    let mut names = lock(NAMES.get_or_init(Default::default));
    if let Some(n) = names.iter().find(|n| **n == name) {
        return n;
    }
    if names.len() >= 64 {
        return "parameter";
    }
    let leaked: &'static str = Box::leak(name.to_string().into_boxed_str());
    names.push(leaked);
    leaked
}

fn write_frame<T: Serialize>(out: &mut impl Write, msg: &T) -> io::Result<()> {
    let body = serde_json::to_vec(msg).map_err(io::Error::other)?;
    if body.len() > MAX_FRAME {
        return Err(io::Error::other(format!(
            "a frame of {} bytes, more than {MAX_FRAME}",
            body.len()
        )));
    }
    out.write_all(&(body.len() as u32).to_le_bytes())?;
    out.write_all(&body)
}

/// The next frame; `Ok(None)` at a clean end of the stream.
fn read_frame<T: for<'de> Deserialize<'de>>(input: &mut impl Read) -> io::Result<Option<T>> {
    let mut len = [0u8; 4];
    match input.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::other(format!("a frame of {len} bytes")));
    }
    let mut body = vec![0u8; len];
    input.read_exact(&mut body)?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(io::Error::other)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------
// The worker's side.

/// How to start a host of one model.
struct Spec {
    exe: PathBuf,
    dir: PathBuf,
    file: PathBuf,
    config: String,
    /// Longest a start may take (the probe's bound for the file's size).
    deadline: Duration,
    /// Longest a round trip waits ([`EngineConfig::gen_host_reply_ms`]).
    reply_wait: Duration,
}

/// A running host: its pipes, the requests in flight and its last stats.
struct Link {
    child: Mutex<Child>,
    pid: u32,
    stdin: Mutex<Option<BufWriter<ChildStdin>>>,
    streams: Mutex<HashMap<u64, tokio::sync::mpsc::UnboundedSender<GenEvent>>>,
    replies: Mutex<HashMap<u64, mpsc::SyncSender<Result<Reply, EngineError>>>>,
    stats: Mutex<DecoderStats>,
    /// Cleared when the child's stdout ends.
    alive: AtomicBool,
    started: Instant,
    /// [`Spec::reply_wait`].
    reply_wait: Duration,
    next_ping: AtomicU64,
}

impl Link {
    fn send(&self, msg: &ToHost) -> Result<(), EngineError> {
        let mut stdin = lock(&self.stdin);
        let Some(out) = stdin.as_mut() else {
            return Err(EngineError::Restarting("it is not running".into()));
        };
        write_frame(out, msg)
            .and_then(|()| out.flush())
            .map_err(|e| EngineError::Restarting(format!("cannot write to it: {e}")))
    }

    /// Sends `msg` (built with a fresh id) and waits up to `wait` for its reply.
    fn round_trip(
        &self,
        id: u64,
        msg: &ToHost,
        wait: Duration,
    ) -> Result<Result<Reply, EngineError>, mpsc::RecvTimeoutError> {
        let (tx, rx) = mpsc::sync_channel(1);
        lock(&self.replies).insert(id, tx);
        if !self.alive.load(Ordering::Acquire) {
            lock(&self.replies).remove(&id);
            return Ok(Err(EngineError::Restarting("it is not running".into())));
        }
        if let Err(e) = self.send(msg) {
            lock(&self.replies).remove(&id);
            return Ok(Err(e));
        }
        let got = rx.recv_timeout(wait);
        if got.is_err() {
            lock(&self.replies).remove(&id);
        }
        got
    }

    /// Sends `msg` (built with a fresh id) and waits for its reply. When none comes in
    /// [`Spec::reply_wait`], a host that answers a ping is busy with this one call only:
    /// the call is cancelled there and answered `slow(seconds waited)`, when given (a
    /// submit); otherwise the host is hung and is killed, so that it is started again.
    fn call(
        &self,
        id: u64,
        msg: ToHost,
        slow: Option<fn(f64) -> EngineError>,
    ) -> Result<Reply, EngineError> {
        match self.round_trip(id, &msg, self.reply_wait) {
            Ok(reply) => reply,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Err(EngineError::Restarting("it ended".into()))
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let waited = self.reply_wait.as_secs_f64();
                if let Some(slow) = slow {
                    if self.answers_ping() {
                        tracing::warn!(
                            waited_s = waited,
                            "a submit took longer than the decoder process's reply wait: that request alone is dropped"
                        );
                        let _ = self.send(&ToHost::Cancel { id });
                        return Err(slow(waited));
                    }
                }
                // Hung (stopped, deadlocked): ended, so that it is started again.
                tracing::error!(
                    waited_s = waited,
                    "the decoder process did not answer: killing it"
                );
                let _ = lock(&self.child).kill();
                Err(EngineError::Backend(RunError::Llama(format!(
                    "the decoder process did not answer within {waited} s"
                ))))
            }
        }
    }

    /// Whether the host answers a cheap round trip (the tokens of "") within
    /// [`PING_WAIT`]: its command loop runs.
    fn answers_ping(&self) -> bool {
        let id = self.next_ping.fetch_add(1, Ordering::Relaxed);
        let ping = ToHost::Tokenize {
            id,
            text: String::new(),
            add_special: false,
        };
        matches!(self.round_trip(id, &ping, PING_WAIT), Ok(Ok(_)))
    }

    /// Ends the child: closes its stdin (it exits), then kills it if it has not.
    fn stop(&self) {
        *lock(&self.stdin) = None;
        let mut child = lock(&self.child);
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        kill_and_reap(&mut child);
    }
}

/// The state a [`Hosted`] generator shares with its threads.
struct Inner {
    spec: Spec,
    link: Mutex<Option<Arc<Link>>>,
    /// Why the last host ended, while a new one starts.
    down: Mutex<Option<String>>,
    next_id: AtomicU64,
    shutdown: AtomicBool,
    restarts: AtomicU64,
    /// Set when the host could not be started again [`START_ATTEMPTS`] times in a row:
    /// why. Nothing restarts it from then on.
    gave_up: Mutex<Option<String>>,
}

/// A GGUF decoder running in a host process: the [`Generator`] the worker serves.
pub struct Hosted {
    info: DecoderInfo,
    inner: Arc<Inner>,
}

impl Drop for Hosted {
    fn drop(&mut self) {
        self.inner.shutdown.store(true, Ordering::Release);
        if let Some(link) = lock(&self.inner.link).take() {
            link.stop();
        }
    }
}

/// Loads `file` (a GGUF of the repo `dir`) in a host child started with `exe` (what
/// [`super::load`] does when [`host_exe`] names one). The probe ([`super::probe`]) runs
/// beside it as for a load in process: its verdict (and its message, naming llama.cpp's
/// failed check) comes first.
pub fn load(
    exe: &Path,
    dir: &Path,
    file: &Path,
    cfg: &EngineConfig,
) -> Result<DecoderModel, LoadError> {
    let meta = super::read_meta(file)?;
    let need = super::memory_needed(file, &meta, cfg)?;
    let spec = Spec {
        exe: exe.to_path_buf(),
        dir: dir.to_path_buf(),
        file: file.to_path_buf(),
        config: serde_json::to_string(cfg)
            .map_err(|e| LoadError::Decoder(format!("decoder host config: {e}")))?,
        deadline: probe::deadline_for(need.weight_bytes),
        reply_wait: Duration::from_millis(cfg.gen_host_reply_ms.max(1)),
    };
    let began = Instant::now();
    // The host loads beside the probe (an abort there ends only the host); the probe's
    // verdict is the one reported.
    let mut starting = start(&spec)?;
    let verdict = probe::start(file, cfg.gen_slots.max(1)).and_then(|probe| match probe {
        Some(mut p) => p.loaded().and_then(|()| p.finish()),
        None => Ok(()),
    });
    if let Err(e) = verdict {
        starting.kill();
        return Err(e);
    }
    let (ready, info, dim) = starting.wait_ready(&spec)?;
    let pid = ready.link.pid;
    let info: DecoderInfo = info.into();
    let inner = Arc::new(Inner {
        spec,
        link: Mutex::new(None),
        down: Mutex::new(None),
        next_id: AtomicU64::new(1),
        shutdown: AtomicBool::new(false),
        restarts: AtomicU64::new(0),
        gave_up: Mutex::new(None),
    });
    run_link(&inner, ready);
    tracing::info!(
        model.dir = %dir.display(),
        model.engine = "llama.cpp",
        model.architecture = %meta.architecture,
        gen.host_pid = pid,
        elapsed_ms = began.elapsed().as_millis() as u64,
        "decoder loaded"
    );
    let model_info = ModelInfo {
        task: Task::TextGeneration,
        model_type: meta.architecture,
        engine: "llama.cpp",
        replicas: 1,
        dim,
        labels: Vec::new(),
        max_input_tokens: info.context_length,
        normalize: false,
        pooling: Vec::new(),
        score_fn: ScoreFn::None,
    };
    Ok(DecoderModel::new(
        model_info,
        Arc::new(Hosted { info, inner }),
    ))
}

/// A host child that has been started and has not said it is ready.
struct Starting {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<std::process::ChildStdout>,
    stderr: Arc<Mutex<Vec<u8>>>,
    started: Instant,
}

fn start(spec: &Spec) -> Result<Starting, LoadError> {
    let mut child = Command::new(&spec.exe)
        .arg(HOST_ARG)
        .arg(&spec.dir)
        .arg(&spec.file)
        .arg(&spec.config)
        // No gdb attach on abort: the failed check's line is all the report needs.
        .env("GGML_NO_BACKTRACE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            LoadError::Decoder(format!(
                "cannot start the decoder host {}: {e}",
                spec.exe.display()
            ))
        })?;
    let stdin = child.stdin.take().expect("piped stdin");
    let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let stderr = child.stderr.take().expect("piped stderr");
    let tail = Arc::new(Mutex::new(Vec::new()));
    {
        let tail = tail.clone();
        let pid = child.id();
        let _ = std::thread::Builder::new()
            .name("decoder-host-log".into())
            .spawn(move || relay_stderr(stderr, &tail, pid));
    }
    Ok(Starting {
        child,
        stdin,
        stdout,
        stderr: tail,
        started: Instant::now(),
    })
}

/// Logs the child's stderr lines and keeps their tail.
fn relay_stderr(stderr: std::process::ChildStderr, tail: &Mutex<Vec<u8>>, pid: u32) {
    let mut lines = io::BufRead::split(BufReader::new(stderr), b'\n');
    while let Some(Ok(line)) = lines.next() {
        let text = String::from_utf8_lossy(&line);
        if !text.trim().is_empty() {
            tracing::debug!(decoder_host = pid, "{}", text.trim_end());
        }
        let mut t = lock(tail);
        t.extend_from_slice(&line);
        t.push(b'\n');
        if t.len() > 2 * STDERR_TAIL {
            let cut = t.len() - STDERR_TAIL;
            t.drain(..cut);
        }
    }
}

fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// How a child that closed its stdout ended: waits for it, then its exit status and the
/// failed check in its stderr's tail.
fn how_it_ended(child: &mut Child, stderr_tail: &Mutex<Vec<u8>>) -> String {
    let status = child.wait();
    // The stderr relay ends with the child; give it a moment to read the rest.
    std::thread::sleep(Duration::from_millis(50));
    let err = String::from_utf8_lossy(&lock(stderr_tail)).into_owned();
    match status {
        Ok(s) => format!("{}: {}", probe::describe(s), probe::failed_check(&err)),
        Err(e) => e.to_string(),
    }
}

impl Starting {
    /// Ends a host that will not be used.
    fn kill(&mut self) {
        kill_and_reap(&mut self.child);
    }

    /// Waits for the child's first frame: ready, or the reason it is not.
    fn wait_ready(mut self, spec: &Spec) -> Result<(Ready, WireInfo, usize), LoadError> {
        let (tx, rx) = mpsc::channel();
        let mut stdout = self.stdout;
        let reader = std::thread::Builder::new()
            .name("decoder-host-start".into())
            .spawn(move || {
                let first = read_frame::<FromHost>(&mut stdout);
                let _ = tx.send(first);
                stdout
            })
            .map_err(LoadError::Spawn)?;
        let left = spec.deadline.saturating_sub(self.started.elapsed());
        let first = rx.recv_timeout(left);
        let name = spec.file.file_name().map_or_else(
            || spec.file.display().to_string(),
            |n| n.to_string_lossy().into(),
        );
        match first {
            Ok(Ok(Some(FromHost::Ready { info, dim }))) => {
                let stdout = reader
                    .join()
                    .map_err(|_| LoadError::Decoder("the decoder host reader died".into()))?;
                let link = Arc::new(Link {
                    pid: self.child.id(),
                    child: Mutex::new(self.child),
                    stdin: Mutex::new(Some(BufWriter::new(self.stdin))),
                    streams: Mutex::default(),
                    replies: Mutex::default(),
                    stats: Mutex::default(),
                    alive: AtomicBool::new(true),
                    started: Instant::now(),
                    reply_wait: spec.reply_wait,
                    next_ping: AtomicU64::new(PING_IDS),
                });
                let ready = Ready {
                    link,
                    stdout,
                    stderr: self.stderr,
                };
                Ok((ready, info, dim))
            }
            Ok(Ok(Some(FromHost::LoadFailed { message }))) => {
                let _ = self.child.wait();
                Err(LoadError::Weights(message))
            }
            Ok(Ok(Some(other))) => {
                kill_and_reap(&mut self.child);
                Err(LoadError::Decoder(format!(
                    "the decoder host said {other:?} before it was ready"
                )))
            }
            Ok(Ok(None)) | Ok(Err(_)) => {
                drop(self.stdin);
                Err(LoadError::Weights(format!(
                    "llama.cpp stopped while loading {name} ({})",
                    how_it_ended(&mut self.child, &self.stderr)
                )))
            }
            Err(_) => {
                kill_and_reap(&mut self.child);
                Err(LoadError::Weights(format!(
                    "llama.cpp did not finish loading {name} within {} s",
                    spec.deadline.as_secs()
                )))
            }
        }
    }
}

/// A started host that said it is ready: its link, and the pipes the link's threads read.
struct Ready {
    link: Arc<Link>,
    stdout: BufReader<std::process::ChildStdout>,
    stderr: Arc<Mutex<Vec<u8>>>,
}

fn route(link: &Link, frame: FromHost) {
    match frame {
        FromHost::Event { id, event } => {
            let event = GenEvent::from(event);
            let last = matches!(event, GenEvent::Done(_) | GenEvent::Failed(_));
            let mut streams = lock(&link.streams);
            let gone = match streams.get(&id) {
                Some(tx) => tx.send(event).is_err(),
                None => false,
            };
            if last || gone {
                streams.remove(&id);
            }
            drop(streams);
            if gone && !last {
                let _ = link.send(&ToHost::Cancel { id });
            }
        }
        FromHost::Reply { id, reply } => {
            if let Some(tx) = lock(&link.replies).remove(&id) {
                let _ = tx.send(reply.map_err(EngineError::from));
            }
        }
        FromHost::Stats(s) => *lock(&link.stats) = s,
        FromHost::Ready { .. } | FromHost::LoadFailed { .. } => {
            tracing::warn!("the decoder host said it was ready twice");
        }
    }
}

/// Ends every request of a link whose child ended.
fn fail_all(link: &Link, how: &str) {
    let streams = std::mem::take(&mut *lock(&link.streams));
    let running = streams.len();
    for (_, tx) in streams {
        let _ = tx.send(GenEvent::Failed(EngineError::Backend(RunError::Llama(
            format!("the decoder process stopped ({how})"),
        ))));
    }
    // Dropping the reply senders answers their waiters `Restarting`.
    lock(&link.replies).clear();
    tracing::error!(requests = running, "decoder process stopped: {how}");
}

/// Starts the threads of a ready host: the reader, which routes the child's frames
/// until its stdout ends and then fails what was running and starts the restart, and
/// the watcher, which cancels the requests whose stream the worker dropped.
fn run_link(inner: &Arc<Inner>, ready: Ready) {
    let Ready {
        link,
        mut stdout,
        stderr,
    } = ready;
    *lock(&inner.link) = Some(link.clone());
    *lock(&inner.down) = None;
    let weak_inner = Arc::downgrade(inner);
    let reader_link = link.clone();
    let spawned = std::thread::Builder::new()
        .name("decoder-host-read".into())
        .spawn(move || {
            let link = reader_link;
            let reason = loop {
                match read_frame::<FromHost>(&mut stdout) {
                    Ok(Some(frame)) => route(&link, frame),
                    Ok(None) => break None,
                    Err(e) => break Some(format!("unreadable answer: {e}")),
                }
            };
            link.alive.store(false, Ordering::Release);
            let ended = how_it_ended(&mut lock(&link.child), &stderr);
            let how = reason.unwrap_or(ended);
            let inner = weak_inner.upgrade();
            // Said to new requests from now on, before the running ones hear it.
            if let Some(inner) = &inner {
                *lock(&inner.down) = Some(how.clone());
            }
            fail_all(&link, &how);
            if let Some(inner) = inner {
                restart(&inner, &link, how);
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the decoder host's reader");
        link.stop();
        return;
    }
    let weak_link = Arc::downgrade(&link);
    let _ = std::thread::Builder::new()
        .name("decoder-host-watch".into())
        .spawn(move || loop {
            std::thread::sleep(WATCH);
            let Some(link) = weak_link.upgrade() else {
                return;
            };
            if !link.alive.load(Ordering::Acquire) {
                return;
            }
            let dropped: Vec<u64> = {
                let mut streams = lock(&link.streams);
                let ids: Vec<u64> = streams
                    .iter()
                    .filter(|(_, tx)| tx.is_closed())
                    .map(|(id, _)| *id)
                    .collect();
                for id in &ids {
                    streams.remove(id);
                }
                ids
            };
            for id in dropped {
                let _ = link.send(&ToHost::Cancel { id });
            }
        });
}

/// Replaces a host that ended, after a backoff, until one starts or the model is
/// unloaded.
fn restart(inner: &Arc<Inner>, ended: &Arc<Link>, how: String) {
    if inner.shutdown.load(Ordering::Acquire) {
        return;
    }
    {
        let mut current = lock(&inner.link);
        if current.as_ref().is_some_and(|l| Arc::ptr_eq(l, ended)) {
            *current = None;
        }
    }
    let served = ended.started.elapsed();
    *lock(&inner.down) = Some(how);
    if served >= STABLE {
        inner.restarts.store(0, Ordering::Relaxed);
    }
    let inner = inner.clone();
    let mut failed_starts = 0u32;
    let _ = std::thread::Builder::new()
        .name("decoder-host-restart".into())
        .spawn(move || loop {
            let n = inner.restarts.fetch_add(1, Ordering::Relaxed).min(16) as u32;
            let wait = RESTART_BACKOFF
                .saturating_mul(1 << n.min(10))
                .min(RESTART_BACKOFF_MAX);
            std::thread::sleep(wait);
            if inner.shutdown.load(Ordering::Acquire) {
                return;
            }
            match start(&inner.spec).and_then(|s| s.wait_ready(&inner.spec)) {
                Ok((ready, _, _)) => {
                    tracing::info!(
                        file = %inner.spec.file.display(),
                        "decoder process started again"
                    );
                    if inner.shutdown.load(Ordering::Acquire) {
                        ready.link.stop();
                        return;
                    }
                    run_link(&inner, ready);
                    return;
                }
                Err(e) => {
                    failed_starts += 1;
                    tracing::error!(file = %inner.spec.file.display(), error = %e, attempt = failed_starts, "the decoder process cannot start again");
                    if failed_starts >= START_ATTEMPTS {
                        let why = format!("{failed_starts} attempts in a row failed; the last: {e}");
                        tracing::error!(file = %inner.spec.file.display(), "{why}; the model is given up");
                        *lock(&inner.gave_up) = Some(why);
                        return;
                    }
                    *lock(&inner.down) = Some(e.to_string());
                }
            }
        });
}

impl Hosted {
    fn link(&self) -> Result<Arc<Link>, EngineError> {
        if let Some(why) = lock(&self.inner.gave_up).as_ref() {
            return Err(EngineError::Failed(why.clone()));
        }
        match lock(&self.inner.link).as_ref() {
            Some(l) if l.alive.load(Ordering::Acquire) => Ok(l.clone()),
            _ => Err(EngineError::Restarting(
                lock(&self.inner.down)
                    .clone()
                    .unwrap_or_else(|| "it is starting".into()),
            )),
        }
    }

    fn id(&self) -> u64 {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

impl Generator for Hosted {
    fn info(&self) -> &DecoderInfo {
        &self.info
    }

    fn failure(&self) -> Option<String> {
        lock(&self.inner.gave_up).clone()
    }

    fn stats(&self) -> DecoderStats {
        lock(&self.inner.link)
            .as_ref()
            .map(|l| *lock(&l.stats))
            .unwrap_or_default()
    }

    fn tokenize(&self, text: &str, add_special: bool) -> Result<Vec<u32>, EngineError> {
        let id = self.id();
        let msg = ToHost::Tokenize {
            id,
            text: text.to_string(),
            add_special,
        };
        match self.link()?.call(id, msg, None)? {
            Reply::Tokens(t) => Ok(t),
            other => Err(unexpected(&other)),
        }
    }

    fn detokenize(&self, ids: &[u32]) -> Result<String, EngineError> {
        let id = self.id();
        let msg = ToHost::Detokenize {
            id,
            ids: ids.to_vec(),
        };
        match self.link()?.call(id, msg, None)? {
            Reply::Text(t) => Ok(t),
            other => Err(unexpected(&other)),
        }
    }

    fn submit(&self, req: GenerateRequest) -> Result<GenStream, EngineError> {
        let link = self.link()?;
        let id = self.id();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        lock(&link.streams).insert(id, tx);
        let slow: fn(f64) -> EngineError = if req.constraint != Constraint::None {
            |waited| {
                EngineError::Grammar(format!(
                    "preparing this request's grammar took over {waited} s; simplify the schema"
                ))
            }
        } else {
            |waited| {
                EngineError::Backend(RunError::Llama(format!(
                    "the decoder process took over {waited} s to take this request"
                )))
            }
        };
        match link.call(id, ToHost::Submit { id, req }, Some(slow)) {
            Ok(Reply::Submitted { prompt_tokens }) => Ok(GenStream { prompt_tokens, rx }),
            Ok(other) => {
                lock(&link.streams).remove(&id);
                Err(unexpected(&other))
            }
            Err(e) => {
                lock(&link.streams).remove(&id);
                Err(e)
            }
        }
    }
}

fn unexpected(r: &Reply) -> EngineError {
    EngineError::Backend(RunError::Llama(format!(
        "the decoder process answered {r:?}"
    )))
}

// ---------------------------------------------------------------------------------------
// The child's side.

fn child_main(args: &[String]) -> i32 {
    let [dir, file, config] = args else {
        eprintln!("usage: {HOST_ARG} <repo dir> <file.gguf> <config JSON>");
        return 2;
    };
    let _ = tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .try_init();
    let (out_tx, out_rx) = mpsc::channel::<FromHost>();
    let writer = std::thread::spawn(move || {
        let mut out = BufWriter::new(io::stdout().lock());
        while let Ok(msg) = out_rx.recv() {
            if write_frame(&mut out, &msg).is_err() {
                std::process::exit(0);
            }
            // Everything queued goes out in one flush.
            while let Ok(msg) = out_rx.try_recv() {
                if write_frame(&mut out, &msg).is_err() {
                    std::process::exit(0);
                }
            }
            if out.flush().is_err() {
                std::process::exit(0);
            }
        }
        let _ = out.flush();
    });
    let config: EngineConfig = match serde_json::from_str(config) {
        Ok(c) => c,
        Err(e) => {
            let _ = out_tx.send(FromHost::LoadFailed {
                message: format!("decoder host config: {e}"),
            });
            drop(out_tx);
            let _ = writer.join();
            return 2;
        }
    };
    // The worker renders the chat templates; this process starts no helper for them.
    crate::engine::generate::sandbox::no_prestart();
    let loaded = super::load_here(Path::new(dir), Path::new(file), &config, false);
    let model = match loaded {
        Ok(m) => m,
        Err(e) => {
            let _ = out_tx.send(FromHost::LoadFailed {
                message: e.to_string(),
            });
            drop(out_tx);
            let _ = writer.join();
            return 2;
        }
    };
    let _ = out_tx.send(FromHost::Ready {
        info: WireInfo::from(model.decoder_info()),
        dim: model.info().dim,
    });
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("decoder host: cannot start a runtime: {e}");
            return 1;
        }
    };
    let (cmd_tx, cmd_rx) = tokio::sync::mpsc::unbounded_channel::<ToHost>();
    std::thread::spawn(move || {
        let mut input = BufReader::new(io::stdin().lock());
        loop {
            match read_frame::<ToHost>(&mut input) {
                Ok(Some(cmd)) => {
                    if cmd_tx.send(cmd).is_err() {
                        return;
                    }
                }
                // The worker closed our stdin (or went away): stop.
                Ok(None) | Err(_) => return,
            }
        }
    });
    runtime.block_on(serve(model, cmd_rx, out_tx));
    // The scheduler threads are not joined: the process ends here.
    0
}

async fn serve(
    model: DecoderModel,
    mut commands: tokio::sync::mpsc::UnboundedReceiver<ToHost>,
    out: mpsc::Sender<FromHost>,
) {
    let mut running: HashMap<u64, tokio::task::JoinHandle<()>> = HashMap::new();
    let mut tick = tokio::time::interval(WATCH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last_stats = DecoderStats::default();
    loop {
        tokio::select! {
            cmd = commands.recv() => {
                let Some(cmd) = cmd else { return };
                match cmd {
                    ToHost::Submit { id, req } => {
                        // Tokenizing and compiling a grammar take time: off this loop, so
                        // that other submits, cancels and stats are not held up.
                        let (model, out) = (model.clone(), out.clone());
                        running.insert(id, tokio::spawn(async move {
                            let submitted = tokio::task::spawn_blocking(move || model.submit(req)).await;
                            let mut stream = match submitted {
                                Ok(Ok(stream)) => stream,
                                Ok(Err(e)) => {
                                    let _ = out.send(FromHost::Reply { id, reply: Err(WireError::from(&e)) });
                                    return;
                                }
                                Err(_) => {
                                    let e = EngineError::Backend(RunError::Llama("the submit panicked".into()));
                                    let _ = out.send(FromHost::Reply { id, reply: Err(WireError::from(&e)) });
                                    return;
                                }
                            };
                            let _ = out.send(FromHost::Reply {
                                id,
                                reply: Ok(Reply::Submitted { prompt_tokens: stream.prompt_tokens }),
                            });
                            loop {
                                let event = stream.next().await.unwrap_or(GenEvent::Failed(EngineError::Unavailable));
                                let last = matches!(event, GenEvent::Done(_) | GenEvent::Failed(_));
                                if out.send(FromHost::Event { id, event: event.into() }).is_err() || last {
                                    return;
                                }
                            }
                        }));
                    }
                    ToHost::Cancel { id } => {
                        if let Some(task) = running.remove(&id) {
                            task.abort();
                        }
                    }
                    ToHost::Tokenize { id, text, add_special } => {
                        let reply = model.tokenize(&text, add_special).map(Reply::Tokens);
                        let _ = out.send(FromHost::Reply { id, reply: reply.map_err(|e| WireError::from(&e)) });
                    }
                    ToHost::Detokenize { id, ids } => {
                        let reply = model.detokenize(&ids).map(Reply::Text);
                        let _ = out.send(FromHost::Reply { id, reply: reply.map_err(|e| WireError::from(&e)) });
                    }
                }
            }
            _ = tick.tick() => {
                running.retain(|_, t| !t.is_finished());
                let stats = model.stats();
                if stats != last_stats {
                    last_stats = stats;
                    let _ = out.send(FromHost::Stats(stats));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::generate::{Constraint, Finish, FinishReason, GenToken, Prompt, Usage};

    fn roundtrip<T: Serialize + for<'de> Deserialize<'de>>(v: &T) -> T {
        let mut buf = Vec::new();
        write_frame(&mut buf, v).unwrap();
        read_frame(&mut buf.as_slice()).unwrap().unwrap()
    }

    #[test]
    fn requests_and_events_cross_the_wire_unchanged() {
        let mut req = GenerateRequest::new(Prompt::Text {
            text: "caf\u{e9} <start_of_turn>".into(),
            add_special: true,
        });
        req.max_tokens = Some(7);
        req.stop = vec!["\n\n".into()];
        req.constraint = Constraint::JsonSchema(r#"{"b":1,"a":2}"#.into());
        req.logprobs = Some(3);
        match roundtrip(&ToHost::Submit {
            id: 9,
            req: req.clone(),
        }) {
            ToHost::Submit { id: 9, req: back } => assert_eq!(back, req),
            other => panic!("{other:?}"),
        }
        let token = GenEvent::Token(GenToken {
            id: 5,
            text: "\u{1f642}".into(),
            logprob: None,
            top_logprobs: Vec::new(),
        });
        let done = GenEvent::Done(Finish {
            reason: FinishReason::Length,
            usage: Usage {
                prompt_tokens: 3,
                completion_tokens: 7,
                cached_tokens: 1,
            },
            stop_string: Some("\n\n".into()),
            tail: "x".into(),
        });
        for e in [token, done] {
            let wire = roundtrip(&WireEvent::from(e.clone()));
            assert_eq!(GenEvent::from(wire), e);
        }
    }

    #[test]
    fn the_errors_the_http_layer_tells_apart_keep_their_kind_and_message() {
        let errors = [
            EngineError::EmptyInput,
            EngineError::Overloaded {
                in_flight: 40,
                limit: 36,
            },
            EngineError::InvalidParameter {
                name: "top_logprobs",
                reason: "21 alternatives asked, at most 20".into(),
            },
            EngineError::ContextLengthExceeded {
                prompt_tokens: 5000,
                max_tokens: Some(10),
                context: 4096,
            },
            EngineError::NoChatTemplate,
            EngineError::Template("Conversation roles must alternate".into()),
            EngineError::Grammar("bad schema".into()),
            EngineError::GrammarBusy { abandoned: 3 },
            EngineError::Backend(RunError::Llama("decode failed".into())),
            EngineError::Restarting("aborted".into()),
            EngineError::Unavailable,
        ];
        for e in errors {
            let back = EngineError::from(roundtrip(&WireError::from(&e)));
            assert_eq!(back.to_string(), e.to_string());
            assert_eq!(
                std::mem::discriminant(&back),
                std::mem::discriminant(&e),
                "{e:?}"
            );
        }
        // Not a decoder's error: its message survives.
        let e = EngineError::TooManyInputs { count: 3, max: 2 };
        assert_eq!(
            EngineError::from(roundtrip(&WireError::from(&e))).to_string(),
            format!("inference failed: {e}")
        );
    }

    #[test]
    fn a_frame_too_large_or_cut_short_is_an_error() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &ToHost::Cancel { id: 1 }).unwrap();
        let cut = &buf[..buf.len() - 1];
        assert!(read_frame::<ToHost>(&mut &cut[..]).is_err());
        assert!(read_frame::<ToHost>(&mut &[][..]).unwrap().is_none());
        let huge = ((MAX_FRAME + 1) as u32).to_le_bytes();
        assert!(read_frame::<ToHost>(&mut &huge[..]).is_err());
    }
}
