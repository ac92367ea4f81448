//! The engine runtime on first use: when the worker may use OpenVINO (`--engine auto` or
//! `openvino`) and no library is configured, it fetches the pinned OpenVINO wheel from
//! PyPI (or `PADDOCK_RUNTIME_MIRROR`) into `<cache-dir>/runtimes/openvino-<version>/`,
//! so a new user's first `hub-api` run serves on the fast engine with no extra step.
//!
//! Only OpenVINO is fetched: `--engine auto` prefers it and it measured 1.4x ONNX
//! Runtime per core (`docs/BENCHMARKS.md`), so an ONNX Runtime next to it would only be
//! used when OpenVINO fails to load, and both wheels need the same glibc (manylinux 2.28):
//! 28 MB more per install for a fallback that would almost never be chosen.
//!
//! How it is safe:
//! * The version, wheel, URL, sha256, size and kept files are pinned in
//!   `hub-worker/runtime-pins.env`, the file `scripts/worker/fetch-openvino.sh` reads too.
//! * The wheel is streamed to a temporary file while it is hashed (never held in memory),
//!   refused past its pinned size, and checked against the pinned sha256 before a byte of
//!   it is unzipped. Only the libraries the worker uses are extracted (89 of 180 MB).
//! * Extraction goes to a temporary directory beside the target, every file is fsynced, a
//!   `FETCHED.json` record is written last, and the directory is renamed into place: a
//!   crash never leaves a directory that is later used. A lock file serialises workers
//!   sharing a cache directory; the second one finds the first one's directory.
//! * One attempt per start. A failed attempt leaves `openvino-<version>.failed`, and starts
//!   within [`BACKOFF`] of it do not try again (a crash-looping worker does not download
//!   59 MB per restart); deleting that file retries at the next start.
//! * Every failure (offline, an HTTP error, a checksum mismatch, a library that does not
//!   load) is one warning with the reason; the worker then serves on the next engine
//!   (ONNX Runtime when it is initialised, else candle). Only an explicit
//!   `--engine openvino` makes it fatal, as a missing `--openvino-lib` always was.
//!
//! Start-up does not wait for the fetch with `--engine auto`: the worker registers and
//! heartbeats at once, and model loads wait on the [`Gate`] until the runtime is ready or
//! has failed (at most [`BUDGET`], after which the fetch is abandoned), so the first
//! endpoint loads on the engine it will keep. Its assignment reports `pulling` meanwhile.

use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};
use thiserror::Error;

/// The pins, shared with `scripts/worker/fetch-openvino.sh`.
const PINS: &str = include_str!("../runtime-pins.env");

/// Environment variable: `0`/`false` turns the fetch off (also `--fetch-runtime=false`).
pub const FETCH_ENV: &str = "HUB_WORKER_FETCH_RUNTIME";
/// Environment variable: a base URL serving the pinned wheel under its file name
/// (`<mirror>/<wheel file name>`), used instead of PyPI.
pub const MIRROR_ENV: &str = "PADDOCK_RUNTIME_MIRROR";
/// The longest a fetch (download, check, extraction) may take; model loads wait at most
/// this long for it.
pub const BUDGET: Duration = Duration::from_secs(300);
/// After a failed attempt, starts within this long skip the fetch.
pub const BACKOFF: Duration = Duration::from_secs(600);
/// The record written into a complete runtime directory.
pub const RECORD: &str = "FETCHED.json";

/// `HUB_WORKER_FETCH_RUNTIME` read as clap's `--fetch-runtime` reads it (`0`, `false`,
/// `no`, `off`, `n`, `f`: off); unset or unreadable: on.
pub fn enabled_in_env() -> bool {
    std::env::var(FETCH_ENV).map_or(true, |v| {
        !matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "0" | "false" | "no" | "off" | "n" | "f"
        )
    })
}

/// Whether this platform has a pinned wheel (linux x86_64).
pub const SUPPORTED_PLATFORM: bool = cfg!(all(target_os = "linux", target_arch = "x86_64"));

/// One pinned runtime wheel.
#[derive(Debug, Clone)]
pub struct Pin {
    /// `openvino`: the directory is `<cache>/runtimes/<name>-<version>`.
    pub name: String,
    pub version: String,
    /// The wheel's file name (what a mirror serves).
    pub wheel: String,
    /// Where PyPI serves it.
    pub url: String,
    /// Lowercase hex.
    pub sha256: String,
    pub bytes: u64,
    /// Members directly in this folder of the wheel are candidates ...
    pub keep_dir: String,
    /// ... and kept when their name starts with one of these.
    pub keep: Vec<String>,
    /// File name prefixes that must be among the kept files.
    pub required: Vec<String>,
}

impl Pin {
    /// The pinned OpenVINO wheel (`runtime-pins.env`).
    pub fn openvino() -> Pin {
        let get = |key: &str| -> String {
            PINS.lines()
                .filter_map(|l| l.split_once('='))
                .find(|(k, _)| k.trim() == key)
                .map(|(_, v)| v.trim().trim_matches('"').to_string())
                .unwrap_or_else(|| panic!("runtime-pins.env has no {key}"))
        };
        Pin {
            name: "openvino".to_string(),
            version: get("OPENVINO_VERSION"),
            wheel: get("OPENVINO_WHEEL"),
            url: get("OPENVINO_WHEEL_URL"),
            sha256: get("OPENVINO_WHEEL_SHA256"),
            bytes: get("OPENVINO_WHEEL_BYTES")
                .parse()
                .expect("OPENVINO_WHEEL_BYTES is a number"),
            keep_dir: get("OPENVINO_KEEP_DIR"),
            keep: get("OPENVINO_KEEP")
                .split_whitespace()
                .map(str::to_string)
                .collect(),
            required: vec![
                "libopenvino_c.so".to_string(),
                "libopenvino_intel_cpu_plugin.so".to_string(),
            ],
        }
    }

    /// The file name a wheel member is extracted to, when it is kept.
    pub fn kept_name<'a>(&self, member: &'a str) -> Option<&'a str> {
        let name = member.strip_prefix(self.keep_dir.as_str())?;
        let ok = !name.is_empty()
            && !name.contains('/')
            && !name.contains('\\')
            && name != ".."
            && self.keep.iter().any(|p| name.starts_with(p.as_str()));
        ok.then_some(name)
    }

    /// Where to download from: `<mirror>/<wheel>`, else the pinned URL.
    pub fn url_from(&self, mirror: Option<&str>) -> String {
        match mirror
            .map(|m| m.trim_end_matches('/'))
            .filter(|m| !m.is_empty())
        {
            Some(m) => format!("{m}/{}", self.wheel),
            None => self.url.clone(),
        }
    }

    /// `<cache>/runtimes/<name>-<version>`.
    pub fn dir_in(&self, cache_dir: &Path) -> PathBuf {
        cache_dir
            .join("runtimes")
            .join(format!("{}-{}", self.name, self.version))
    }
}

/// Why the runtime could not be provided.
#[derive(Debug, Error)]
pub enum FetchError {
    #[error("turned off (--fetch-runtime=false / {FETCH_ENV}=0)")]
    Disabled,
    #[error("no pinned runtime for this platform (only linux x86_64)")]
    UnsupportedPlatform,
    #[error(
        "an attempt {ago_s} s ago failed ({reason}); not retrying before {BACKOFF:?} have \
         passed (delete {marker} to retry at the next start)"
    )]
    BackingOff {
        ago_s: u64,
        reason: String,
        marker: PathBuf,
    },
    #[error("cannot download {url}: {reason}")]
    Download { url: String, reason: String },
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url} sent more than the pinned {pinned} bytes")]
    TooLarge { url: String, pinned: u64 },
    #[error("sha256 of {url} is {got}, the pinned wheel's is {want}")]
    Checksum {
        url: String,
        got: String,
        want: String,
    },
    #[error("the wheel has no {0}* in its kept files")]
    MissingFile(String),
    #[error("cannot read the wheel: {0}")]
    Zip(#[from] zip::result::ZipError),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("took longer than {BUDGET:?}")]
    TooSlow,
    #[error("the worker stopped")]
    Abandoned,
    #[error("the fetched library does not load: {0}")]
    Load(String),
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> FetchError + 'a {
    move |source| FetchError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// What one download moved.
#[derive(Debug, Clone)]
pub struct Download {
    pub url: String,
    pub bytes: u64,
    pub duration: Duration,
}

/// A complete runtime directory.
#[derive(Debug, Clone)]
pub struct Installed {
    /// Holds the libraries (give it to `openvino::init`).
    pub dir: PathBuf,
    /// `Some` when this call downloaded it, `None` when it was there already.
    pub downloaded: Option<Download>,
}

/// Where and whether to fetch.
#[derive(Debug, Clone)]
pub struct FetchSettings {
    pub cache_dir: PathBuf,
    /// `PADDOCK_RUNTIME_MIRROR`: base URL instead of PyPI.
    pub mirror: Option<String>,
    pub budget: Duration,
}

/// The record in a complete directory.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Record {
    package: String,
    version: String,
    wheel: String,
    url: String,
    sha256: String,
    bytes: u64,
    fetched_at_unix_s: u64,
    files: Vec<RecordFile>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct RecordFile {
    name: String,
    bytes: u64,
}

/// Whether `dir` holds a complete copy of `pin` (its record names the pinned sha256 and
/// every recorded file has its recorded size).
fn is_complete(pin: &Pin, dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(dir.join(RECORD)) else {
        return false;
    };
    let Ok(rec) = serde_json::from_str::<Record>(&text) else {
        return false;
    };
    rec.sha256 == pin.sha256
        && !rec.files.is_empty()
        && rec.files.iter().all(|f| {
            std::fs::metadata(dir.join(&f.name)).is_ok_and(|m| m.is_file() && m.len() == f.bytes)
        })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Makes sure the pinned runtime is in `settings.cache_dir`, downloading it when it is
/// not. Blocking (file locks, hashing, unzipping): call it from `spawn_blocking`; `stop`
/// is polled between chunks and abandons the download when it returns true.
pub fn ensure(
    pin: &Pin,
    settings: &FetchSettings,
    stop: &dyn Fn() -> bool,
) -> Result<Installed, FetchError> {
    let deadline = Instant::now() + settings.budget;
    let dest = pin.dir_in(&settings.cache_dir);
    let root = dest.parent().expect("dir_in has a parent").to_path_buf();
    if is_complete(pin, &dest) {
        return Ok(Installed {
            dir: dest,
            downloaded: None,
        });
    }
    std::fs::create_dir_all(&root).map_err(io("cannot create", &root))?;
    let base = format!("{}-{}", pin.name, pin.version);
    let lock_path = root.join(format!("{base}.lock"));
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io("cannot open", &lock_path))?;
    // Another worker on this cache directory may be fetching: wait for it, then use its
    // directory (or try ourselves if it failed).
    loop {
        match lock.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) => {
                if stop() {
                    return Err(FetchError::Abandoned);
                }
                if Instant::now() > deadline {
                    return Err(FetchError::TooSlow);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io("cannot lock", &lock_path)(e)),
        }
    }
    let result = ensure_locked(pin, settings, &dest, &root, &base, deadline, stop);
    let _ = lock.unlock();
    result
}

fn ensure_locked(
    pin: &Pin,
    settings: &FetchSettings,
    dest: &Path,
    root: &Path,
    base: &str,
    deadline: Instant,
    stop: &dyn Fn() -> bool,
) -> Result<Installed, FetchError> {
    if is_complete(pin, dest) {
        return Ok(Installed {
            dir: dest.to_path_buf(),
            downloaded: None,
        });
    }
    let marker = root.join(format!("{base}.failed"));
    if let Ok(text) = std::fs::read_to_string(&marker) {
        let (at, reason) = text.split_once('\n').unwrap_or((text.as_str(), ""));
        let ago_s = unix_now().saturating_sub(at.trim().parse().unwrap_or(0));
        if ago_s < BACKOFF.as_secs() {
            return Err(FetchError::BackingOff {
                ago_s,
                reason: reason.trim().to_string(),
                marker,
            });
        }
    }
    // Leftovers of a crashed attempt (we hold the lock: nobody else is writing them).
    if let Ok(entries) = std::fs::read_dir(root) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with(&format!(".{base}.")) {
                let p = e.path();
                let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
            }
        }
    }
    let url = pin.url_from(settings.mirror.as_deref());
    let tmp_id = format!("{}-{}", std::process::id(), rand::random::<u32>());
    let wheel_tmp = root.join(format!(".{base}.{tmp_id}.whl"));
    let dir_tmp = root.join(format!(".{base}.{tmp_id}"));
    let result = (|| -> Result<Download, FetchError> {
        let download = download(pin, &url, &wheel_tmp, deadline, stop)?;
        let files = extract(pin, &wheel_tmp, &dir_tmp)?;
        let record = Record {
            package: pin.name.clone(),
            version: pin.version.clone(),
            wheel: pin.wheel.clone(),
            url: url.clone(),
            sha256: pin.sha256.clone(),
            bytes: download.bytes,
            fetched_at_unix_s: unix_now(),
            files,
        };
        let rec_path = dir_tmp.join(RECORD);
        let mut f = File::create(&rec_path).map_err(io("cannot create", &rec_path))?;
        f.write_all(&serde_json::to_vec_pretty(&record).expect("record serializes"))
            .and_then(|()| f.sync_all())
            .map_err(io("cannot write", &rec_path))?;
        File::open(&dir_tmp)
            .and_then(|d| d.sync_all())
            .map_err(io("cannot sync", &dir_tmp))?;
        // A stale, incomplete copy (an old record, a deleted file) makes way.
        if dest.exists() {
            let trash = root.join(format!(".{base}.{tmp_id}.old"));
            std::fs::rename(dest, &trash).map_err(io("cannot move aside", dest))?;
            let _ = std::fs::remove_dir_all(&trash);
        }
        std::fs::rename(&dir_tmp, dest).map_err(io("cannot rename into", dest))?;
        File::open(root)
            .and_then(|d| d.sync_all())
            .map_err(io("cannot sync", root))?;
        Ok(download)
    })();
    let _ = std::fs::remove_file(&wheel_tmp);
    match result {
        Ok(download) => {
            let _ = std::fs::remove_file(&marker);
            Ok(Installed {
                dir: dest.to_path_buf(),
                downloaded: Some(download),
            })
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir_tmp);
            if !matches!(e, FetchError::Abandoned) {
                let _ = std::fs::write(&marker, format!("{}\n{e}\n", unix_now()));
            }
            Err(e)
        }
    }
}

/// Streams `url` into `to`, hashing as it goes; checks the pinned size and sha256.
fn download(
    pin: &Pin,
    url: &str,
    to: &Path,
    deadline: Instant,
    stop: &dyn Fn() -> bool,
) -> Result<Download, FetchError> {
    let started = Instant::now();
    let fail = |reason: String| FetchError::Download {
        url: url.to_string(),
        reason,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(format!("no runtime: {e}")))?;
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(15))
        .read_timeout(Duration::from_secs(30))
        .user_agent(concat!("paddock-hub-worker/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| fail(format!("{e:#}")))?;
    let mut resp = rt
        .block_on(async { client.get(url).send().await })
        .map_err(|e| fail(error_chain(&e)))?;
    if !resp.status().is_success() {
        return Err(FetchError::Status {
            url: url.to_string(),
            status: resp.status().as_u16(),
        });
    }
    let mut file = File::create(to).map_err(io("cannot create", to))?;
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    loop {
        if stop() {
            return Err(FetchError::Abandoned);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        // Futures that own timers are made inside the runtime.
        let chunk = match rt.block_on(async { tokio::time::timeout(left, resp.chunk()).await }) {
            Err(_) => return Err(FetchError::TooSlow),
            Ok(Err(e)) => return Err(fail(error_chain(&e))),
            Ok(Ok(None)) => break,
            Ok(Ok(Some(c))) => c,
        };
        bytes += chunk.len() as u64;
        if bytes > pin.bytes {
            return Err(FetchError::TooLarge {
                url: url.to_string(),
                pinned: pin.bytes,
            });
        }
        hasher.update(&chunk);
        file.write_all(&chunk).map_err(io("cannot write", to))?;
    }
    file.sync_all().map_err(io("cannot sync", to))?;
    let got = hex::encode(hasher.finalize());
    if got != pin.sha256 {
        return Err(FetchError::Checksum {
            url: url.to_string(),
            got,
            want: pin.sha256.clone(),
        });
    }
    Ok(Download {
        url: url.to_string(),
        bytes,
        duration: started.elapsed(),
    })
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Unzips the kept members of the (verified) wheel into `dir`, fsyncing each file.
fn extract(pin: &Pin, wheel: &Path, dir: &Path) -> Result<Vec<RecordFile>, FetchError> {
    std::fs::create_dir_all(dir).map_err(io("cannot create", dir))?;
    let mut zip = zip::ZipArchive::new(File::open(wheel).map_err(io("cannot open", wheel))?)?;
    let mut files = Vec::new();
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i)?;
        let member = entry.name()?.to_string();
        let Some(name) = pin.kept_name(&member).map(str::to_string) else {
            continue;
        };
        if !entry.is_file() {
            continue;
        }
        let path = dir.join(&name);
        let mut out = File::create(&path).map_err(io("cannot create", &path))?;
        // The zip reader checks each member's CRC-32 at its end.
        let mut buf = vec![0u8; 1 << 16];
        let mut bytes = 0u64;
        loop {
            let n = entry.read(&mut buf).map_err(io("cannot unzip", &path))?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n])
                .map_err(io("cannot write", &path))?;
            bytes += n as u64;
        }
        out.sync_all().map_err(io("cannot sync", &path))?;
        files.push(RecordFile { name, bytes });
    }
    for want in &pin.required {
        if !files.iter().any(|f| f.name.starts_with(want.as_str())) {
            return Err(FetchError::MissingFile(want.clone()));
        }
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

/// What start-up decided about the fetched runtime: open once the runtime is ready or has
/// failed. Model loads wait on it so the first load picks the engine the worker keeps.
#[derive(Clone, Debug)]
pub struct Gate(tokio::sync::watch::Receiver<Option<RuntimeState>>);

/// The outcome behind a [`Gate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuntimeState {
    /// Nothing was fetched (a library was configured, the engine does not use one, or
    /// the fetch is off); the engines are as start-up initialised them.
    NotFetched,
    /// The fetched OpenVINO runtime in this directory is loaded.
    Ready(PathBuf),
    /// The fetch or its load failed, for this reason; the worker serves on the next engine.
    Fallback(String),
}

impl Gate {
    /// A gate that is open from the start.
    pub fn open(state: RuntimeState) -> Gate {
        let (_tx, rx) = tokio::sync::watch::channel(Some(state));
        Gate(rx)
    }

    /// A closed gate and the sender that opens it. The sender sees
    /// `is_closed()` once every gate is dropped (the worker stopped).
    pub fn closed() -> (tokio::sync::watch::Sender<Option<RuntimeState>>, Gate) {
        let (tx, rx) = tokio::sync::watch::channel(None);
        (tx, Gate(rx))
    }

    /// Waits until the gate opens (also when its sender is gone).
    pub async fn wait(&self) -> RuntimeState {
        let mut rx = self.0.clone();
        let seen = rx.wait_for(Option::is_some).await.map(|v| (*v).clone());
        match seen {
            Ok(Some(state)) => state,
            _ => rx
                .borrow()
                .clone()
                .unwrap_or_else(|| RuntimeState::Fallback("the fetch stopped".to_string())),
        }
    }
}

/// Fetches (when needed) and loads the pinned OpenVINO runtime; `load` is given the
/// runtime directory (`openvino::init` in the worker). Logs one line for a download
/// (from where, bytes, duration) and one warning for a failure.
pub async fn provide(
    pin: Pin,
    settings: FetchSettings,
    load: impl FnOnce(&Path) -> Result<(), String> + Send + 'static,
    stop: impl Fn() -> bool + Send + 'static,
) -> Result<PathBuf, FetchError> {
    let joined = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let installed = ensure(&pin, &settings, &stop)?;
        if let Some(d) = &installed.downloaded {
            tracing::info!(
                runtime = %format!("{}-{}", pin.name, pin.version),
                url = %d.url,
                bytes = d.bytes,
                download_ms = d.duration.as_millis() as u64,
                duration_ms = started.elapsed().as_millis() as u64,
                dir = %installed.dir.display(),
                "fetched the engine runtime (sha256 verified)"
            );
        }
        load(&installed.dir).map_err(FetchError::Load)?;
        Ok(installed.dir)
    })
    .await;
    joined.unwrap_or_else(|e| Err(FetchError::Load(format!("the fetch panicked: {e}"))))
}

/// Start-up for the OpenVINO engine. `lib` is the configured library (`--openvino-lib`,
/// else `PADDOCK_OPENVINO_LIB`): when it is set nothing is fetched. `explicit` is
/// `--engine openvino` (a failure is fatal then, and the fetch is awaited before the
/// worker registers); `fetch` is `None` when the fetch is off. With `--engine auto` the
/// fetch runs in the background and the returned [`Gate`] opens when it is done.
#[cfg(feature = "engine-openvino")]
pub async fn start_openvino(
    pin: Pin,
    lib: Option<&Path>,
    explicit: bool,
    fetch: Option<FetchSettings>,
    threads: usize,
) -> anyhow::Result<Gate> {
    use crate::engine::openvino;
    let not_fetched = |reason: String| -> anyhow::Result<Gate> {
        if explicit {
            anyhow::bail!("--engine openvino: {reason}");
        }
        tracing::info!(reason = %reason, "OpenVINO not available");
        Ok(Gate::open(RuntimeState::NotFetched))
    };
    if let Some(lib) = lib {
        return match openvino::init(Some(lib), threads) {
            Ok(()) => {
                tracing::info!("OpenVINO initialised");
                Ok(Gate::open(RuntimeState::NotFetched))
            }
            Err(e) => not_fetched(e.to_string()),
        };
    }
    let Some(settings) = fetch else {
        return not_fetched(format!(
            "no --openvino-lib / {} and the runtime fetch is {}",
            openvino::LIB_ENV,
            FetchError::Disabled
        ));
    };
    if !SUPPORTED_PLATFORM {
        return not_fetched(FetchError::UnsupportedPlatform.to_string());
    }
    let load = move |dir: &Path| openvino::init(Some(dir), threads).map_err(|e| e.to_string());
    if explicit {
        let dir = provide(pin, settings, load, || false)
            .await
            .map_err(|e| anyhow::anyhow!("--engine openvino: {e}"))?;
        tracing::info!(dir = %dir.display(), "OpenVINO initialised");
        return Ok(Gate::open(RuntimeState::Ready(dir)));
    }
    let (tx, gate) = Gate::closed();
    let tx = std::sync::Arc::new(tx);
    let watcher = tx.clone();
    tokio::spawn(async move {
        let state = match provide(pin, settings, load, move || watcher.is_closed()).await {
            Ok(dir) => {
                tracing::info!(dir = %dir.display(), "OpenVINO initialised");
                RuntimeState::Ready(dir)
            }
            Err(e) => {
                tracing::warn!(
                    reason = %e,
                    "OpenVINO runtime not fetched; serving on the next engine (ONNX Runtime when initialised, else candle)"
                );
                RuntimeState::Fallback(e.to_string())
            }
        };
        let _ = tx.send(Some(state));
    });
    Ok(gate)
}

/// Starts OpenVINO the way `config` asks (`--engine auto|openvino`): its configured
/// library (`--openvino-lib`, else `PADDOCK_OPENVINO_LIB`), else the pinned runtime
/// fetched on first use ([`start_openvino`]). The returned [`Gate`] opens when model loads
/// may start. Builds without `engine-openvino`, and other engine choices, start nothing.
pub async fn start(config: &crate::WorkerConfig, threads: usize) -> anyhow::Result<Gate> {
    #[cfg(feature = "engine-openvino")]
    {
        use crate::engine::EnginePreference;
        if matches!(
            config.engine,
            EnginePreference::Auto | EnginePreference::OpenVino
        ) {
            let lib = config
                .openvino_lib
                .clone()
                .or_else(|| std::env::var_os(crate::engine::openvino::LIB_ENV).map(Into::into));
            return start_openvino(
                Pin::openvino(),
                lib.as_deref(),
                config.engine == EnginePreference::OpenVino,
                config.runtime_fetch(),
                threads,
            )
            .await;
        }
    }
    let _ = (config, threads);
    Ok(Gate::open(RuntimeState::NotFetched))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_parse_and_keep_the_scripts_files() {
        let pin = Pin::openvino();
        assert_eq!(pin.sha256.len(), 64);
        assert!(pin.wheel.starts_with(&format!("openvino-{}-", pin.version)));
        assert!(pin.url.ends_with(&format!("/{}", pin.wheel)));
        assert!(pin.bytes > 1 << 20);
        for kept in [
            "openvino/libs/libopenvino.so.2641",
            "openvino/libs/libopenvino_c.so.2641",
            "openvino/libs/libopenvino_intel_cpu_plugin.so",
            "openvino/libs/libopenvino_onnx_frontend.so.2641",
            // Imports compiled models from the worker's cache (engine::openvino).
            "openvino/libs/libopenvino_ir_frontend.so.2641",
            "openvino/libs/libtbb.so.12",
            "openvino/libs/libtbbmalloc.so.2",
            "openvino/libs/libhwloc.so.15",
        ] {
            assert!(pin.kept_name(kept).is_some(), "{kept}");
        }
        for dropped in [
            "openvino/libs/libopenvino_intel_gpu_plugin.so",
            "openvino/libs/libopenvino_tensorflow_frontend.so.2641",
            "openvino/libs/sub/libopenvino.so",
            "openvino/__init__.py",
            "libopenvino.so",
        ] {
            assert!(pin.kept_name(dropped).is_none(), "{dropped}");
        }
        assert_eq!(
            pin.url_from(Some("http://m.example/w/")),
            format!("http://m.example/w/{}", pin.wheel)
        );
        assert_eq!(pin.url_from(None), pin.url);
    }
}
