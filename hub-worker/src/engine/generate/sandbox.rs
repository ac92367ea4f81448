//! Chat templates render in helper processes, so that one cannot take the worker down.
//!
//! A chat template is tenant code, run on every chat request and on every example of a
//! fine-tuning job. minijinja bounds a render's work (fuel) and the nesting of the
//! template's own syntax, but not the nesting of the values a template builds: a loop
//! that wraps a `namespace` value in a list (`{% set ns.x = [ns.x] %}`) makes a value
//! whose drop, comparison, hashing and printing recurse once per level. A stack overflow
//! cannot be caught: the process aborts, with every model on the worker. The fuel a
//! render has buys millions of levels; measured on a release build, dropping one level
//! takes ~84 bytes of stack and comparing one ~670, so no stack size is safe in-process.
//!
//! [`render`] sends the template, the request's JSON and the flags to an idle helper
//! (this executable run with [`SANDBOX_ARG`]; up to two per core, spawned on demand and
//! kept), which
//! compiles the template (kept for its next requests), renders it with
//! [`ChatTemplate::render_here`] and answers. A helper that dies (stack overflow, or an
//! allocation over its [`DATA_LIMIT`]) or takes longer than [`RENDER_DEADLINE`] is
//! killed and reaped (it leaves no core file); the request gets [`EngineError::Template`] naming what happened,
//! and the next render spawns a fresh helper.
//!
//! The helper executable is resolved like the GGUF probe's (`crate::child_exe`): the
//! `hub-worker` and `paddock` binaries serve it themselves; [`use_sandbox_exe`] or
//! [`SANDBOX_EXE_ENV`] name another (tests). A process with none (a library test, the
//! fuzzer) renders in-process.

use super::template::ChatTemplate;
use crate::engine::error::EngineError;
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The argument that makes a worker executable a template helper (`<exe>
/// --paddock-template-sandbox`; requests on stdin, answers on stdout).
pub const SANDBOX_ARG: &str = "--paddock-template-sandbox";
/// Names the helper executable when the running one does not serve [`SANDBOX_ARG`].
pub const SANDBOX_EXE_ENV: &str = "HUB_WORKER_TEMPLATE_SANDBOX_EXE";
/// Longest a render may take. Fuel stops a template long before this (a render that
/// uses all of it takes well under a second on a release build); this catches work
/// that fuel does not count.
pub const RENDER_DEADLINE: Duration = Duration::from_secs(20);
/// The helper's data limit (`RLIMIT_DATA`): heap beyond it fails, and the helper with it.
pub const DATA_LIMIT: u64 = 4 << 30;
/// Largest request or answer frame (a prompt far larger than any context).
const MAX_FRAME: usize = 256 << 20;
/// The stack a helper renders on.
const HELPER_STACK: usize = 8 << 20;
/// Compiled templates a helper keeps.
const CACHED_TEMPLATES: usize = 8;

static SELF_SANDBOX: AtomicBool = AtomicBool::new(false);
static CONFIGURED_EXE: OnceLock<PathBuf> = OnceLock::new();

/// Called by [`crate::serve_child_if_asked`]: with [`SANDBOX_ARG`] the process is a
/// helper, serves until its stdin closes and exits; otherwise it returns, and this
/// executable becomes the process's helper executable.
pub fn serve_if_asked() {
    if !crate::child_exe::asked_for(SANDBOX_ARG) {
        SELF_SANDBOX.store(true, Ordering::Release);
        return;
    }
    std::process::exit(helper_main());
}

/// Makes `exe` (a `hub-worker` binary) this process's helper executable, ahead of
/// [`SANDBOX_EXE_ENV`] and of this executable; the first call wins.
pub fn use_sandbox_exe(exe: impl Into<PathBuf>) {
    let _ = CONFIGURED_EXE.set(exe.into());
}

/// Set in a process that renders no templates (a decoder host, whose worker renders them).
static NO_PRESTART: AtomicBool = AtomicBool::new(false);

/// Makes [`prestart`] start nothing in this process.
pub(crate) fn no_prestart() {
    NO_PRESTART.store(true, Ordering::Release);
}

/// Starts a helper in the background if none exists yet: a spawn takes 10-40 ms (the
/// executable is large), which the first chat request of a new model need not pay.
pub fn prestart() {
    if NO_PRESTART.load(Ordering::Acquire) {
        return;
    }
    let Some(pool) = pool() else { return };
    {
        let mut state = pool.lock();
        if state.live > 0 {
            return;
        }
        state.live += 1;
    }
    std::thread::spawn(move || match pool.spawn_counted() {
        Ok(helper) => pool.give_back(helper),
        Err(e) => tracing::warn!(error = %e, "starting a chat-template helper failed"),
    });
}

/// Kills every idle helper and leaves it in the pool, as the kernel's OOM killer would:
/// the next render finds a dead helper and must get another. For tests.
#[doc(hidden)]
pub fn kill_idle_helpers() -> usize {
    let Some(pool) = pool() else { return 0 };
    let mut state = pool.lock();
    for helper in &mut state.idle {
        let _ = helper.child.kill();
        let _ = helper.child.wait();
    }
    state.idle.len()
}

/// One render, as sent to a helper.
#[derive(Serialize, Deserialize)]
pub(crate) struct Job<'a> {
    #[serde(borrow)]
    pub source: Cow<'a, str>,
    #[serde(borrow)]
    pub bos: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub eos: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub messages: Cow<'a, str>,
    #[serde(borrow)]
    pub tools: Option<Cow<'a, str>>,
    pub add_generation_prompt: bool,
    #[serde(borrow)]
    pub extra: Option<Cow<'a, str>>,
}

/// Renders `job` in a helper; `None` when this process has no helper executable (the
/// caller renders in-process).
pub(crate) fn render(job: &Job<'_>) -> Option<Result<String, EngineError>> {
    let pool = pool()?;
    Some(pool.render(job))
}

/// The helpers: at most `max` at once (renders are CPU-bound and short, so a request
/// waits for a helper rather than spawning without bound when the blocking pool is
/// full of chat requests); idle ones are kept.
struct Pool {
    exe: PathBuf,
    state: Mutex<PoolState>,
    freed: Condvar,
    max: usize,
}

#[derive(Default)]
struct PoolState {
    idle: Vec<Helper>,
    /// Helpers in existence: idle, rendering, or being spawned.
    live: usize,
}

/// The pool, once this process has a helper executable. Not having one is not kept: a
/// test names the executable after other tests have rendered in-process.
fn pool() -> Option<&'static Pool> {
    static POOL: OnceLock<Pool> = OnceLock::new();
    if let Some(pool) = POOL.get() {
        return Some(pool);
    }
    let Some(exe) = crate::child_exe::resolve(
        &CONFIGURED_EXE,
        SANDBOX_EXE_ENV,
        SELF_SANDBOX.load(Ordering::Acquire),
    ) else {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            tracing::warn!(
                "no template helper executable (`{SANDBOX_ARG}`): chat templates render \
                 in this process"
            )
        });
        return None;
    };
    Some(POOL.get_or_init(|| Pool {
        exe,
        state: Mutex::default(),
        freed: Condvar::new(),
        max: 2 * crate::host::cores().max(1),
    }))
}

impl Pool {
    fn render(&self, job: &Job<'_>) -> Result<String, EngineError> {
        let request = serde_json::to_vec(job).expect("a job serializes");
        if request.len() > MAX_FRAME {
            return Err(EngineError::Template(format!(
                "the conversation is {} bytes; at most {MAX_FRAME} can be rendered",
                request.len()
            )));
        }
        let mut retried = false;
        loop {
            let mut helper = self.acquire()?;
            let e = match helper.call(&request) {
                Ok(answer) => {
                    self.give_back(helper);
                    return answer.map_err(EngineError::Template);
                }
                Err(e) => e,
            };
            let status = helper.kill();
            self.release_slot();
            tracing::warn!(error = %e, status = ?status, "a chat-template helper failed");
            // A helper reads the whole job before it renders: one that could not take
            // it had died idle (killed from outside), not on this template. Once more.
            if e.kind() == io::ErrorKind::BrokenPipe && !retried {
                retried = true;
                continue;
            }
            return Err(EngineError::Template(failure_message(&e, status)));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Spawns a helper into a slot already counted in `live`; a failed spawn frees it.
    fn spawn_counted(&self) -> io::Result<Helper> {
        Helper::spawn(&self.exe).inspect_err(|_| self.release_slot())
    }

    /// Returns a working helper to the idle ones.
    fn give_back(&self, helper: Helper) {
        self.lock().idle.push(helper);
        self.freed.notify_one();
    }

    /// Frees a helper's slot (it failed, or could not be spawned).
    fn release_slot(&self) {
        self.lock().live -= 1;
        self.freed.notify_one();
    }

    /// An idle helper, a new one if fewer than `max` exist, else the next one freed.
    fn acquire(&self) -> Result<Helper, EngineError> {
        let mut state = self.lock();
        loop {
            if let Some(helper) = state.idle.pop() {
                return Ok(helper);
            }
            if state.live < self.max {
                state.live += 1;
                drop(state);
                return self.spawn_counted().map_err(|e| {
                    EngineError::Template(format!(
                        "the chat template could not be rendered: starting its helper \
                         process ({}) failed: {e}",
                        self.exe.display()
                    ))
                });
            }
            state = self.freed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// What a tenant is told when the helper rendering their template failed.
fn failure_message(e: &io::Error, status: Option<ExitStatus>) -> String {
    if e.kind() == io::ErrorKind::TimedOut {
        return format!(
            "the chat template ran too long (over {} s for one render)",
            RENDER_DEADLINE.as_secs()
        );
    }
    let how = status.map_or_else(|| "it stopped answering".to_string(), describe);
    format!(
        "the chat template crashed its renderer ({how}): a value nested thousands of \
         levels deep, or more than {} GiB of memory, does that",
        DATA_LIMIT >> 30
    )
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (_, Some(6)) => "aborted, SIGABRT: a stack overflow or a failed allocation".into(),
        (_, Some(11)) => "SIGSEGV".into(),
        (_, Some(9)) => "SIGKILL".into(),
        (_, Some(sig)) => format!("signal {sig}"),
        (Some(code), _) => format!("exit code {code}"),
        (None, None) => "it exited".into(),
    }
}

/// A helper process and its pipes.
struct Helper {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
}

impl Helper {
    fn spawn(exe: &std::path::Path) -> io::Result<Helper> {
        let mut child = Command::new(exe)
            .arg(SANDBOX_ARG)
            // Tenant code runs here: it gets none of the worker's environment (tokens).
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        Ok(Helper {
            child,
            stdin,
            stdout,
        })
    }

    /// One request and its answer; an I/O error means the helper is unusable.
    fn call(&mut self, request: &[u8]) -> io::Result<Result<String, String>> {
        let deadline = Instant::now() + RENDER_DEADLINE;
        write_frame(&mut self.stdin, request)?;
        let mut len = [0u8; 4];
        read_by(&mut self.stdout, &mut len, deadline)?;
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("an answer of {len} bytes"),
            ));
        }
        let mut answer = vec![0u8; len];
        read_by(&mut self.stdout, &mut answer, deadline)?;
        serde_json::from_slice(&answer).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Kills and reaps the helper; its exit status if it ended by itself (a crash
    /// still writing its message is given a moment), `None` if it had to be killed.
    fn kill(mut self) -> Option<ExitStatus> {
        let until = Instant::now() + Duration::from_millis(200);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= until {
                return None; // killed and reaped by drop
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        // No zombie is left behind: an idle helper let go, a stuck or a crashed one.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_frame(out: &mut impl Write, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(payload)?;
    out.flush()
}

/// `read_exact` from the helper's stdout, failing with `TimedOut` at `deadline`.
fn read_by(from: &mut ChildStdout, buf: &mut [u8], deadline: Instant) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        let timeout = Timespec::try_from(left).map_err(|_| io::ErrorKind::InvalidInput)?;
        let mut fds = [PollFd::new(&*from, PollFlags::IN)];
        match poll(&mut fds, Some(&timeout)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
        match from.read(&mut buf[filled..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn read_frame(from: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match from.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::ErrorKind::InvalidData.into());
    }
    let mut payload = vec![0u8; len];
    from.read_exact(&mut payload)?;
    Ok(Some(payload))
}

/// The helper: answers frames until stdin closes (the worker ended or let it go).
fn helper_main() -> i32 {
    // The renders run on a thread of a known stack, whatever `ulimit -s` says, so the
    // depth at which a template's value overflows it does not depend on the host.
    std::thread::Builder::new()
        .name("template-helper".into())
        .stack_size(HELPER_STACK)
        .spawn(serve)
        .map_or(2, |t| t.join().unwrap_or(2))
}

fn serve() -> i32 {
    use rustix::process::{setrlimit, Resource, Rlimit};
    let limit = |n| Rlimit {
        current: Some(n),
        maximum: Some(n),
    };
    let _ = setrlimit(Resource::Data, limit(DATA_LIMIT));
    // A helper that a template crashes leaves no core file behind.
    let _ = setrlimit(Resource::Core, limit(0));
    let mut input = io::stdin().lock();
    let mut output = io::stdout().lock();
    let mut compiled: Vec<Compiled> = Vec::new();
    loop {
        let frame = match read_frame(&mut input) {
            Ok(Some(frame)) => frame,
            Ok(None) => return 0,
            Err(_) => return 2,
        };
        let answer: Result<String, String> = match serde_json::from_slice::<Job<'_>>(&frame) {
            Ok(job) => render_job(&mut compiled, &job).map_err(|e| match e {
                EngineError::Template(m) => m,
                other => other.to_string(),
            }),
            Err(e) => Err(format!("the template helper got a bad request: {e}")),
        };
        let bytes = serde_json::to_vec(&answer).expect("an answer serializes");
        if write_frame(&mut output, &bytes).is_err() {
            return 0;
        }
    }
}

/// A compiled template and what it was compiled from (source, BOS, EOS).
type Compiled = (String, Option<String>, Option<String>, ChatTemplate);

fn render_job(compiled: &mut Vec<Compiled>, job: &Job<'_>) -> Result<String, EngineError> {
    let (bos, eos) = (job.bos.as_deref(), job.eos.as_deref());
    let at = compiled
        .iter()
        .position(|(s, b, e, _)| *s == job.source && b.as_deref() == bos && e.as_deref() == eos);
    let at = match at {
        Some(at) => at,
        None => {
            let t = ChatTemplate::new(&job.source, bos, eos)?;
            if compiled.len() == CACHED_TEMPLATES {
                compiled.remove(0);
            }
            compiled.push((
                job.source.to_string(),
                bos.map(str::to_owned),
                eos.map(str::to_owned),
                t,
            ));
            compiled.len() - 1
        }
    };
    compiled[at].3.render_here(
        &job.messages,
        job.tools.as_deref(),
        job.add_generation_prompt,
        job.extra.as_deref(),
    )
}
