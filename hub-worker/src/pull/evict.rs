//! The cache's limits and what keeps a pull within them: pins (what a loaded or loading
//! model uses), room for a pull's downloads, eviction of the least recently used content
//! nothing pins, and the removal of what crashed pulls left behind. The reasoning (what is
//! safe against what) is in the [`super::cache`] module docs, "Eviction and concurrency".

use super::cache::{io, is_hex, model_dir_name, remove_blob, BlobCache, CacheError, Expected};
use hub_telemetry::metrics::{Counter, Family, Gauge};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

const GIB: u64 = 1 << 30;

/// The free-space floor when none is configured: 5 GiB or [`DEFAULT_MIN_FREE_PERCENT`] of
/// the file system, whichever is smaller.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 5 * GIB;

/// See [`DEFAULT_MIN_FREE_BYTES`].
pub const DEFAULT_MIN_FREE_PERCENT: u64 = 10;

/// How old a marker's or index entry's temporary file (`*.tmp<hex>`, written and renamed
/// within milliseconds, outside the cache lock) must be before it counts as a crash's.
const STALE_SMALL_TMP: Duration = Duration::from_secs(3600);

/// How old a compiled model's temporary file (`compiled/**/*.tmp-<hex>`, written by an
/// export that takes seconds to minutes, outside the cache lock) must be before it counts
/// as a crash's.
const STALE_COMPILED_TMP: Duration = Duration::from_secs(24 * 3600);

/// The free space the cache leaves on its file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MinFree {
    /// [`DEFAULT_MIN_FREE_BYTES`] or [`DEFAULT_MIN_FREE_PERCENT`] of the file system,
    /// whichever is smaller.
    #[default]
    Auto,
    /// This many bytes (0: no floor).
    Bytes(u64),
}

impl MinFree {
    /// The floor in bytes on a file system of `fs_size` bytes.
    pub fn bytes(&self, fs_size: u64) -> u64 {
        match *self {
            MinFree::Auto => DEFAULT_MIN_FREE_BYTES
                .min((u128::from(fs_size) * u128::from(DEFAULT_MIN_FREE_PERCENT) / 100) as u64),
            MinFree::Bytes(b) => b,
        }
    }
}

/// What a pull must keep within (`--cache-max-gib`, `--cache-min-free-gib`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheLimits {
    /// Most bytes under the cache directory (`None`: no budget).
    pub max_bytes: Option<u64>,
    /// Free space left on the cache's file system.
    pub min_free: MinFree,
}

/// Which limit refused a pull, with its figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Limit {
    /// `--cache-max-gib`.
    Budget { max: u64 },
    /// `--cache-min-free-gib`: the file system had `free` bytes free and keeps `min_free`.
    MinFree { min_free: u64, free: u64 },
}

/// A pull that does not fit even with everything evictable evicted. Its message is the
/// failed endpoint's reason, so it names no other tenant's model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoRoom {
    /// Bytes the pull downloads.
    pub need: u64,
    /// Room there is without evicting anything (under the budget, or above the floor).
    pub headroom: u64,
    /// Bytes eviction could free: content no loaded or loading model uses.
    pub freeable: u64,
    /// Bytes of cached content in use by loaded or loading models (and pulls in progress).
    pub pinned: u64,
    /// Bytes other pulls in progress are downloading.
    pub reserved: u64,
    pub limit: Limit,
}

impl std::fmt::Display for NoRoom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the worker's model cache needs {} for this model but can make only {} of room: ",
            human(self.need),
            human(self.headroom.saturating_add(self.freeable)),
        )?;
        match &self.limit {
            Limit::Budget { max } => write!(
                f,
                "{} free under its budget of {} (--cache-max-gib)",
                human(self.headroom),
                human(*max)
            )?,
            Limit::MinFree { min_free, free } => write!(
                f,
                "{} free on its disk ({} free, of which it keeps {} free: --cache-min-free-gib)",
                human(self.headroom),
                human(*free),
                human(*min_free)
            )?,
        }
        write!(
            f,
            " and {} it can evict; {} are in use by models loaded or loading on this worker",
            human(self.freeable),
            human(self.pinned)
        )?;
        if self.reserved > 0 {
            write!(
                f,
                " and {} by other downloads in progress",
                human(self.reserved)
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for NoRoom {}

/// Bytes for messages: `12.3 GiB`, `4.0 MiB`, `812 bytes`.
pub fn human(b: u64) -> String {
    const MIB: u64 = 1 << 20;
    if b >= GIB {
        format!("{:.1} GiB", b as f64 / GIB as f64)
    } else if b >= MIB {
        format!("{:.1} MiB", b as f64 / MIB as f64)
    } else if b >= 1024 {
        format!("{:.1} KiB", b as f64 / 1024.0)
    } else {
        format!("{b} bytes")
    }
}

/// The cache's metric families (`GET /metrics` of the worker).
pub struct CacheMetrics {
    pub used_bytes: Gauge,
    pub limit_bytes: Gauge,
    pub evicted_bytes: Counter,
    pub evictions: Counter,
    pub refused: Counter,
}

impl std::fmt::Debug for CacheMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheMetrics").finish_non_exhaustive()
    }
}

impl Default for CacheMetrics {
    fn default() -> Self {
        CacheMetrics {
            used_bytes: Gauge::new(
                "paddock_worker_cache_bytes",
                "Bytes under the worker's cache directory (weights, model directories, compiled models, runtimes, downloads), as of its last pull, eviction or start.",
                &[],
            ),
            limit_bytes: Gauge::new(
                "paddock_worker_cache_limit_bytes",
                "The cache's limits: max (--cache-max-gib; absent without one) and min_free (free space kept on its file system).",
                &["limit"],
            ),
            evicted_bytes: Counter::new(
                "paddock_worker_cache_evicted_bytes_total",
                "Bytes the cache removed to make room, by kind (model: a model directory and the blobs only it used; blob: a blob no model directory used; compiled: a compiled model; leftover: what a crashed pull left).",
                &["kind"],
            ),
            evictions: Counter::new(
                "paddock_worker_cache_evictions_total",
                "Items the cache removed to make room, by kind (as paddock_worker_cache_evicted_bytes_total).",
                &["kind"],
            ),
            refused: Counter::new(
                "paddock_worker_cache_refused_pulls_total",
                "Pulls refused because their files did not fit the cache even after evicting everything no loaded or loading model uses.",
                &[],
            ),
        }
    }
}

impl CacheMetrics {
    /// The families, for `hub_telemetry::metrics::encode`.
    pub fn families(&self) -> [&dyn Family; 5] {
        [
            &self.used_bytes,
            &self.limit_bytes,
            &self.evicted_bytes,
            &self.evictions,
            &self.refused,
        ]
    }

    fn removed(&self, kind: &str, bytes: u64) {
        self.evictions.inc(&[kind]);
        self.evicted_bytes.add(&[kind], bytes);
    }
}

/// One file a pin keeps: its digest as the hub listed it, and its size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PinnedFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    git_sha1: Option<String>,
    size: u64,
}

/// What `pins/<id>.pin` holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct PinRecord {
    pid: u32,
    /// The model directory (`<ns>--<name>--<commit>`) it keeps.
    model: Option<String>,
    /// Its pull's download directory under `tmp/`.
    staging: Option<String>,
    /// The files its model is made of.
    files: Vec<PinnedFile>,
    /// Whether its pull was given room: the bytes of its files not yet in the store are
    /// counted against the limits of every later pull.
    claimed: bool,
}

/// Keeps a model directory, its files' blobs and its pull's download directory from
/// eviction for as long as any clone lives: held by a pull from before it lists the
/// commit, then by the loaded model (or fine-tuning job) until it is dropped. On drop the
/// model directory's mtime is set to now: recency for the least-recently-used order.
#[derive(Clone)]
pub struct CachePin {
    inner: Arc<PinInner>,
}

struct PinInner {
    /// `pins/<id>.pin`, open with a shared `flock` for the pin's life.
    file: fs::File,
    path: PathBuf,
    model_dir: Option<PathBuf>,
    record: Mutex<PinRecord>,
}

impl std::fmt::Debug for CachePin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachePin")
            .field("path", &self.inner.path)
            .field("model_dir", &self.inner.model_dir)
            .finish()
    }
}

impl Drop for PinInner {
    fn drop(&mut self) {
        if let Some(dir) = &self.model_dir {
            touch(dir);
        }
        // Gone from pins/ before its lock is (the file closes after this).
        let _ = fs::remove_file(&self.path);
    }
}

/// Sets a file's or directory's mtime to now (recency); a failure only ages it.
fn touch(p: &Path) {
    let _ = fs::File::open(p).and_then(|f| f.set_modified(SystemTime::now()));
}

fn mtime(meta: &fs::Metadata) -> SystemTime {
    meta.modified().unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Bytes of the regular files under `p` (symlinks not followed, not counted).
fn du(p: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(p) else {
        return 0;
    };
    if meta.file_type().is_file() {
        return meta.len();
    }
    if !meta.file_type().is_dir() {
        return 0;
    }
    let Ok(entries) = fs::read_dir(p) else {
        return 0;
    };
    entries.flatten().map(|e| du(&e.path())).sum()
}

/// Removes a file or a directory tree; not there counts as removed.
fn remove_any(p: &Path) -> Result<(), CacheError> {
    let r = match fs::symlink_metadata(p) {
        Ok(m) if m.file_type().is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) => Err(e),
    };
    match r {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CacheError::Io {
            context: format!("remove {}", p.display()),
            source: e,
        }),
    }
}

/// Free and total bytes of the file system holding `p`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FsSpace {
    free: u64,
    size: u64,
}

fn fs_space(p: &Path) -> Option<FsSpace> {
    let s = rustix::fs::statvfs(p).ok()?;
    Some(FsSpace {
        free: s.f_bavail.saturating_mul(s.f_frsize),
        size: s.f_blocks.saturating_mul(s.f_frsize),
    })
}

/// How much must be freed before `demand` more bytes fit, and the limit that says so
/// (`None`: they fit). `used` excludes the download directories of pulls in progress
/// (`staging` bytes), whose files `demand` counts in full.
fn shortfall(
    limits: &CacheLimits,
    used: u64,
    staging: u64,
    demand: u64,
    fs: Option<FsSpace>,
) -> Option<(u64, u64, Limit)> {
    let mut worst: Option<(u64, u64, Limit)> = None;
    if let Some(max) = limits.max_bytes {
        let after = used.saturating_add(demand);
        if after > max {
            let headroom = max.saturating_sub(used);
            worst = Some((after - max, headroom, Limit::Budget { max }));
        }
    }
    if let Some(fs) = fs {
        let min_free = limits.min_free.bytes(fs.size);
        // Downloads in progress are in `free` already and in `demand` again.
        let avail = fs.free.saturating_add(staging);
        let wanted = demand.saturating_add(min_free);
        if wanted > avail && worst.as_ref().is_none_or(|(s, _, _)| wanted - avail > *s) {
            let headroom = avail.saturating_sub(min_free);
            worst = Some((
                wanted - avail,
                headroom,
                Limit::MinFree {
                    min_free,
                    free: fs.free,
                },
            ));
        }
    }
    worst
}

/// [`BlobCache::room`] from a scan: the most `demand` for which [`shortfall`] finds a
/// deficit that eviction covers.
fn room_of(limits: &CacheLimits, scan: &Scan, others: u64, fs: Option<FsSpace>) -> Option<u64> {
    let budget = limits.max_bytes.map(|max| max.saturating_sub(scan.used));
    let disk = fs.map(|fs| {
        fs.free
            .saturating_add(scan.staging)
            .saturating_sub(limits.min_free.bytes(fs.size))
    });
    let headroom = match (budget, disk) {
        (Some(b), Some(d)) => b.min(d),
        (b, d) => b.or(d)?,
    };
    let (_, freeable) = plan(scan, u64::MAX);
    Some(headroom.saturating_sub(others).saturating_add(freeable))
}

/// A live pin as read from `pins/` (another process's, or one of this process's).
struct LivePin {
    record: PinRecord,
    own: bool,
}

/// A model directory as found in `models/`.
struct ModelDir {
    name: String,
    mtime: SystemTime,
    /// The blobs it links to.
    links: HashSet<String>,
    /// Bytes of regular files in it (none where symlinks work).
    own_bytes: u64,
    pinned: bool,
}

/// A blob in the store with what goes with it.
struct BlobInfo {
    /// The blob, its verified marker and its probed markers.
    bytes: u64,
    mtime: SystemTime,
}

/// What an eviction decides on, read under the cache lock.
struct Scan {
    /// Bytes under the root, less the live pulls' download directories.
    used: u64,
    /// Bytes in the live pulls' download directories.
    staging: u64,
    blobs: HashMap<String, BlobInfo>,
    dirs: Vec<ModelDir>,
    /// Compiled models: path, bytes, mtime.
    compiled: Vec<(PathBuf, u64, SystemTime)>,
    /// Blobs no eviction may remove: a live pin's files, a pinned directory's links.
    protected: HashSet<String>,
}

/// One thing an eviction removes.
enum Victim {
    /// A blob no model directory links to.
    Orphan(String),
    /// A model directory (index into `Scan::dirs`) and the blobs only it used.
    Model(usize, Vec<String>),
    Compiled(usize),
}

impl BlobCache {
    /// Called once by `open_with`: removes crash leftovers and measures the cache.
    pub(super) fn start_up(&self) -> Result<(), CacheError> {
        let _locked = self.lock()?;
        let pins = self.live_pins(None)?;
        self.clean_leftovers(&pins, "start-up")?;
        let scan = self.scan(&pins)?;
        self.publish(&scan, 0);
        self.publish_limits(fs_space(self.root()));
        Ok(())
    }

    /// Starts a pull of `repo_id` at `commit`: a pin on its model directory and a fresh
    /// download directory under `tmp/` that the pin keeps (blocking).
    pub fn begin_pull(
        &self,
        repo_id: &str,
        commit: &str,
    ) -> Result<(CachePin, PathBuf), CacheError> {
        let name = model_dir_name(repo_id, commit)?;
        let _locked = self.lock()?;
        let staging = self.temp_dir()?;
        let record = PinRecord {
            pid: std::process::id(),
            model: Some(name.clone()),
            staging: staging
                .file_name()
                .map(|n| n.to_string_lossy().into_owned()),
            files: Vec::new(),
            claimed: false,
        };
        let model_dir = self.root().join("models").join(&name);
        let pin = match self.new_pin(record, Some(model_dir.clone())) {
            Ok(p) => p,
            Err(e) => {
                let _ = fs::remove_dir_all(&staging);
                return Err(e);
            }
        };
        // A use: the directory (if there) is the most recent now.
        touch(&model_dir);
        Ok((pin, staging))
    }

    /// Records the files `pin`'s model is made of (the hub's digests and sizes), so no
    /// eviction removes their blobs from now on, including blobs inserted later
    /// (blocking).
    pub fn pin_files(&self, pin: &CachePin, files: &[(Expected, u64)]) -> Result<(), CacheError> {
        let _locked = self.lock()?;
        let mut record = pin.inner.record.lock().unwrap_or_else(|e| e.into_inner());
        record.files = files
            .iter()
            .map(|(e, size)| match e {
                Expected::Sha256(h) => PinnedFile {
                    sha256: Some(h.clone()),
                    git_sha1: None,
                    size: *size,
                },
                Expected::GitSha1(h) => PinnedFile {
                    sha256: None,
                    git_sha1: Some(h.clone()),
                    size: *size,
                },
            })
            .collect();
        write_record(&pin.inner.file, &record, &pin.inner.path)
    }

    /// Makes room for the files of `pin` not yet in the store (blocking). When they do
    /// not fit the limits (with what other pulls given room are still downloading),
    /// evicts, least recently used first, what no live pin keeps: first blobs no model
    /// directory links to, then model directories (with the blobs only they use) and
    /// compiled models by age. Evicts nothing when even all of that would not be enough,
    /// and says why ([`NoRoom`]). `what` names the pull in the logs. Returns the bytes
    /// evicted.
    pub fn make_room(&self, pin: &CachePin, what: &str) -> Result<u64, CacheError> {
        let _locked = self.lock()?;
        let pins = self.live_pins(Some(pin))?;
        self.clean_leftovers(&pins, what)?;
        let scan = self.scan(&pins)?;
        let (mine, others) = self.demand(&pins, &scan);
        let fs = fs_space(self.root());
        self.publish_limits(fs);
        let Some((deficit, headroom, limit)) = shortfall(
            &self.shared_limits(),
            scan.used,
            scan.staging,
            mine.saturating_add(others),
            fs,
        ) else {
            self.claim(pin)?;
            self.publish(&scan, 0);
            return Ok(0);
        };
        let (victims, freeable) = plan(&scan, deficit);
        if freeable < deficit {
            self.metrics().refused.inc(&[]);
            let pinned = scan
                .protected
                .iter()
                .filter_map(|s| scan.blobs.get(s))
                .map(|b| b.bytes)
                .sum::<u64>()
                + scan
                    .dirs
                    .iter()
                    .filter(|d| d.pinned)
                    .map(|d| d.own_bytes)
                    .sum::<u64>();
            self.publish(&scan, 0);
            return Err(NoRoom {
                need: mine,
                headroom: headroom.saturating_sub(others),
                freeable,
                pinned,
                reserved: others,
                limit,
            }
            .into());
        }
        let why = match limit {
            Limit::Budget { .. } => "cache budget (--cache-max-gib)",
            Limit::MinFree { .. } => "free space floor (--cache-min-free-gib)",
        };
        let freed = self.evict(&scan, &victims, why, what)?;
        tracing::info!(
            pull = %what,
            needed = mine,
            evicted_bytes = freed,
            items = victims.len(),
            reason = why,
            "cache: made room for a pull"
        );
        self.claim(pin)?;
        self.publish(&scan, freed);
        Ok(freed)
    }

    /// Bytes a new pull could be given now (blocking; a scan of the cache under its lock):
    /// the room under the limits without evicting, less what pulls given room are still
    /// to download, plus everything eviction could free. What the worker reports in its
    /// heartbeats for the hub's placement. `None` when no limit applies (no budget and the
    /// file system's free space unknown).
    pub fn room(&self) -> Result<Option<u64>, CacheError> {
        let _locked = self.lock()?;
        let pins = self.live_pins(None)?;
        let scan = self.scan(&pins)?;
        let (_, others) = self.demand(&pins, &scan);
        Ok(room_of(
            &self.shared_limits(),
            &scan,
            others,
            fs_space(self.root()),
        ))
    }

    /// Measures the cache again for its metrics (blocking; after a pull that downloaded).
    pub fn refresh_metrics(&self) -> Result<(), CacheError> {
        let _locked = self.lock()?;
        let pins = self.live_pins(None)?;
        let scan = self.scan(&pins)?;
        self.publish(&scan, 0);
        self.publish_limits(fs_space(self.root()));
        Ok(())
    }

    fn shared_limits(&self) -> CacheLimits {
        *self.limits()
    }

    fn publish(&self, scan: &Scan, freed: u64) {
        let used = (scan.used + scan.staging).saturating_sub(freed);
        self.metrics()
            .used_bytes
            .set(&[], i64::try_from(used).unwrap_or(i64::MAX));
    }

    fn publish_limits(&self, fs: Option<FsSpace>) {
        let m = self.metrics();
        if let Some(max) = self.limits().max_bytes {
            m.limit_bytes
                .set(&["max"], i64::try_from(max).unwrap_or(i64::MAX));
        }
        if let Some(fs) = fs {
            let min = self.limits().min_free.bytes(fs.size);
            m.limit_bytes
                .set(&["min_free"], i64::try_from(min).unwrap_or(i64::MAX));
        }
    }

    /// Marks `pin` as given room (under the lock).
    fn claim(&self, pin: &CachePin) -> Result<(), CacheError> {
        let mut record = pin.inner.record.lock().unwrap_or_else(|e| e.into_inner());
        if record.claimed {
            return Ok(());
        }
        record.claimed = true;
        write_record(&pin.inner.file, &record, &pin.inner.path)
    }

    /// Creates `pins/<id>.pin` holding `record`, with a shared lock (under the cache lock).
    fn new_pin(
        &self,
        record: PinRecord,
        model_dir: Option<PathBuf>,
    ) -> Result<CachePin, CacheError> {
        let path = self
            .root()
            .join("pins")
            .join(format!("{:016x}.pin", rand::random::<u64>()));
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io(format!("create {}", path.display())))?;
        let written = file
            .lock_shared()
            .map_err(io(format!("lock {}", path.display())))
            .and_then(|()| write_record(&file, &record, &path));
        if let Err(e) = written {
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        Ok(CachePin {
            inner: Arc::new(PinInner {
                file,
                path,
                model_dir,
                record: Mutex::new(record),
            }),
        })
    }

    /// The live pins in `pins/` (under the cache lock). A pin file whose lock can be
    /// taken has no owner (its process died): it is removed. `own` is read from memory.
    fn live_pins(&self, own: Option<&CachePin>) -> Result<Vec<LivePin>, CacheError> {
        let dir = self.root().join("pins");
        let entries = fs::read_dir(&dir).map_err(io(format!("list {}", dir.display())))?;
        let mut out = Vec::new();
        for e in entries.flatten() {
            let path = e.path();
            if let Some(pin) = own.filter(|p| p.inner.path == path) {
                out.push(LivePin {
                    record: pin
                        .inner
                        .record
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .clone(),
                    own: true,
                });
                continue;
            }
            let Ok(mut f) = fs::OpenOptions::new().read(true).open(&path) else {
                continue; // released meanwhile
            };
            match f.try_lock() {
                Ok(()) => {
                    tracing::info!(pin = %path.display(), "cache: removing the pin of a process that is gone");
                    let _ = fs::remove_file(&path);
                    let _ = f.unlock();
                }
                Err(fs::TryLockError::WouldBlock) => {
                    let mut text = Vec::new();
                    let _ = f.read_to_end(&mut text);
                    // Written under the cache lock, so whole; an unreadable one keeps
                    // nothing it names, but is still a live pull's.
                    let record = serde_json::from_slice(&text).unwrap_or_default();
                    out.push(LivePin { record, own: false });
                }
                Err(fs::TryLockError::Error(e)) => {
                    tracing::warn!(pin = %path.display(), error = %e, "cache: cannot test a pin; keeping what it names");
                    let mut text = Vec::new();
                    let _ = f.read_to_end(&mut text);
                    out.push(LivePin {
                        record: serde_json::from_slice(&text).unwrap_or_default(),
                        own: false,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Removes what crashed pulls and loads left (under the cache lock): download
    /// directories no live pin names, half-built or half-removed model directories, old
    /// temporary files of markers, index entries and compiled models.
    fn clean_leftovers(&self, pins: &[LivePin], what: &str) -> Result<(), CacheError> {
        let live_staging: HashSet<&str> = pins
            .iter()
            .filter_map(|p| p.record.staging.as_deref())
            .collect();
        let now = SystemTime::now();
        let older = |meta: &fs::Metadata, age: Duration| {
            now.duration_since(mtime(meta)).is_ok_and(|d| d > age)
        };
        let mut doomed: Vec<PathBuf> = Vec::new();
        let root = self.root();
        for e in fs::read_dir(root.join("tmp"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if !live_staging.contains(e.file_name().to_string_lossy().as_ref()) {
                doomed.push(e.path());
            }
        }
        for e in fs::read_dir(root.join("models"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(".tmp-") || name.starts_with(".old-") {
                doomed.push(e.path());
            }
        }
        for sub in ["blobs/verified", "blobs/git-sha1"] {
            for e in fs::read_dir(root.join(sub)).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.contains(".tmp") && e.metadata().is_ok_and(|m| older(&m, STALE_SMALL_TMP)) {
                    doomed.push(e.path());
                }
            }
        }
        walk_files(&root.join("compiled"), &mut |p, meta| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            if name.is_some_and(|n| n.contains(".tmp-")) && older(meta, STALE_COMPILED_TMP) {
                doomed.push(p.to_path_buf());
            }
        });
        for p in doomed {
            let bytes = du(&p);
            remove_any(&p)?;
            self.metrics().removed("leftover", bytes);
            tracing::info!(path = %p.display(), bytes, during = %what, "cache: removed a crash leftover");
        }
        Ok(())
    }

    /// Reads what an eviction decides on (under the cache lock).
    fn scan(&self, pins: &[LivePin]) -> Result<Scan, CacheError> {
        let root = self.root();
        let live_staging: HashSet<&str> = pins
            .iter()
            .filter_map(|p| p.record.staging.as_deref())
            .collect();
        let (mut used, mut staging) = (0u64, 0u64);
        for e in fs::read_dir(root)
            .map_err(io(format!("list {}", root.display())))?
            .flatten()
        {
            if e.file_name() == "tmp" {
                for t in fs::read_dir(e.path()).into_iter().flatten().flatten() {
                    let bytes = du(&t.path());
                    if live_staging.contains(t.file_name().to_string_lossy().as_ref()) {
                        staging += bytes;
                    } else {
                        used += bytes;
                    }
                }
            } else {
                used += du(&e.path());
            }
        }

        // Blobs, with their verified and probed markers.
        let mut probed: HashMap<String, u64> = HashMap::new();
        for e in fs::read_dir(root.join("blobs/probed"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some((hex, _)) = name.split_once('.') {
                *probed.entry(hex.to_string()).or_default() +=
                    e.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
        let mut blobs = HashMap::new();
        let store = root.join("blobs/sha256");
        for e in fs::read_dir(&store)
            .map_err(io(format!("list {}", store.display())))?
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if !is_hex(&name, 64) {
                continue;
            }
            let Ok(meta) = fs::symlink_metadata(e.path()) else {
                continue;
            };
            let marker = fs::metadata(self.marker_path(&name))
                .map(|m| m.len())
                .unwrap_or(0);
            let bytes = meta.len() + marker + probed.get(&name).copied().unwrap_or(0);
            blobs.insert(
                name,
                BlobInfo {
                    bytes,
                    mtime: mtime(&meta),
                },
            );
        }

        // Model directories and what they link to.
        let pinned_dirs: HashSet<&str> = pins
            .iter()
            .filter_map(|p| p.record.model.as_deref())
            .collect();
        let mut dirs = Vec::new();
        for e in fs::read_dir(root.join("models"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let Ok(meta) = fs::symlink_metadata(e.path()) else {
                continue;
            };
            if !meta.is_dir() {
                continue;
            }
            let mut links = HashSet::new();
            let mut own_bytes = 0;
            read_links(&e.path(), &mut links, &mut own_bytes);
            dirs.push(ModelDir {
                pinned: pinned_dirs.contains(name.as_str()),
                name,
                mtime: mtime(&meta),
                links,
                own_bytes,
            });
        }

        let mut compiled = Vec::new();
        walk_files(&root.join("compiled"), &mut |p, meta| {
            if p.extension().is_some_and(|x| x == "blob") {
                compiled.push((p.to_path_buf(), meta.len(), mtime(meta)));
            }
        });

        let mut protected = HashSet::new();
        for p in pins {
            for f in &p.record.files {
                if let Some(sha) = self.resolve(f) {
                    protected.insert(sha);
                }
            }
        }
        for d in dirs.iter().filter(|d| d.pinned) {
            protected.extend(d.links.iter().cloned());
        }
        Ok(Scan {
            used,
            staging,
            blobs,
            dirs,
            compiled,
            protected,
        })
    }

    /// The sha256 of a pinned file, when the store can say (an LFS file's is its own; a
    /// small file's comes from the git-sha1 index once it was inserted).
    fn resolve(&self, f: &PinnedFile) -> Option<String> {
        if let Some(s) = &f.sha256 {
            return Some(s.clone());
        }
        let git = f.git_sha1.as_deref()?;
        let s = fs::read_to_string(self.sha1_index(git)).ok()?;
        let s = s.trim();
        is_hex(s, 64).then(|| s.to_string())
    }

    /// Bytes of `own`'s files not in the store, and of the files of other pulls given room
    /// that are not in the store (each counted once, and not when `own` counts it).
    fn demand(&self, pins: &[LivePin], scan: &Scan) -> (u64, u64) {
        let key = |f: &PinnedFile| -> Option<String> {
            match self.resolve(f) {
                Some(sha) if scan.blobs.contains_key(&sha) => None,
                Some(sha) => Some(sha),
                None => f.git_sha1.as_ref().map(|g| format!("git-sha1:{g}")),
            }
        };
        let mut seen = HashSet::new();
        let mut mine = 0u64;
        for p in pins.iter().filter(|p| p.own) {
            for f in &p.record.files {
                if let Some(k) = key(f) {
                    if seen.insert(k) {
                        mine = mine.saturating_add(f.size);
                    }
                }
            }
        }
        let mut others = 0u64;
        for p in pins.iter().filter(|p| !p.own && p.record.claimed) {
            for f in &p.record.files {
                if let Some(k) = key(f) {
                    if seen.insert(k) {
                        others = others.saturating_add(f.size);
                    }
                }
            }
        }
        (mine, others)
    }

    /// Removes `victims` (under the cache lock), logging each. Returns the bytes freed.
    fn evict(
        &self,
        scan: &Scan,
        victims: &[Victim],
        why: &str,
        what: &str,
    ) -> Result<u64, CacheError> {
        // Index entries by the blob they point at, to drop them with it.
        let mut index: HashMap<String, Vec<PathBuf>> = HashMap::new();
        for e in fs::read_dir(self.root().join("blobs/git-sha1"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Ok(s) = fs::read_to_string(e.path()) {
                index
                    .entry(s.trim().to_string())
                    .or_default()
                    .push(e.path());
            }
        }
        let mut freed = 0u64;
        for v in victims {
            match v {
                Victim::Orphan(sha) => {
                    let bytes = self.remove_blob_entirely(sha, scan, &index)?;
                    freed += bytes;
                    self.metrics().removed("blob", bytes);
                    tracing::info!(blob = %sha, bytes, reason = why, pull = %what, "cache: evicted a blob no model directory uses");
                }
                Victim::Model(i, shas) => {
                    let d = &scan.dirs[*i];
                    let path = self.root().join("models").join(&d.name);
                    // Aside first: a crash mid-removal leaves a `.old-` leftover, never a
                    // model directory with links missing.
                    let aside = self
                        .root()
                        .join("models")
                        .join(format!(".old-{:016x}", rand::random::<u64>()));
                    fs::rename(&path, &aside)
                        .map_err(io(format!("move aside {}", path.display())))?;
                    remove_any(&aside)?;
                    let mut bytes = d.own_bytes;
                    for sha in shas {
                        bytes += self.remove_blob_entirely(sha, scan, &index)?;
                    }
                    freed += bytes;
                    self.metrics().removed("model", bytes);
                    let idle = SystemTime::now()
                        .duration_since(d.mtime)
                        .map_or(0, |d| d.as_secs());
                    tracing::info!(model = %d.name, bytes, blobs = shas.len(), unused_for_s = idle, reason = why, pull = %what, "cache: evicted a model");
                }
                Victim::Compiled(i) => {
                    let (path, bytes, _) = &scan.compiled[*i];
                    remove_any(path)?;
                    freed += bytes;
                    self.metrics().removed("compiled", *bytes);
                    tracing::info!(path = %path.display(), bytes, reason = why, pull = %what, "cache: evicted a compiled model");
                }
            }
        }
        Ok(freed)
    }

    /// Removes a blob with its markers and the index entries naming it; its bytes.
    fn remove_blob_entirely(
        &self,
        sha: &str,
        scan: &Scan,
        index: &HashMap<String, Vec<PathBuf>>,
    ) -> Result<u64, CacheError> {
        remove_blob(&self.blob_path(sha))?;
        remove_blob(&self.marker_path(sha))?;
        let probed = self.root().join("blobs/probed");
        for e in fs::read_dir(&probed).into_iter().flatten().flatten() {
            if e.file_name()
                .to_string_lossy()
                .split_once('.')
                .is_some_and(|(h, _)| h == sha)
            {
                remove_blob(&e.path())?;
            }
        }
        for p in index.get(sha).into_iter().flatten() {
            remove_blob(p)?;
        }
        Ok(scan.blobs.get(sha).map_or(0, |b| b.bytes))
    }
}

/// Rewrites a pin file in place (its lock is on the open file; a rename would lose it).
fn write_record(file: &fs::File, record: &PinRecord, path: &Path) -> Result<(), CacheError> {
    let bytes = serde_json::to_vec(record).map_err(std::io::Error::other);
    let mut f = file;
    bytes
        .and_then(|b| {
            f.set_len(0)?;
            f.seek(SeekFrom::Start(0))?;
            f.write_all(&b)
        })
        .map_err(io(format!("write {}", path.display())))
}

/// Calls `f` on every regular file under `dir` (symlinks not followed).
fn walk_files(dir: &Path, f: &mut dyn FnMut(&Path, &fs::Metadata)) {
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(meta) = fs::symlink_metadata(e.path()) else {
            continue;
        };
        if meta.is_dir() {
            walk_files(&e.path(), f);
        } else if meta.is_file() {
            f(&e.path(), &meta);
        }
    }
}

/// The blobs a model directory links to, and the bytes of regular files in it.
fn read_links(dir: &Path, links: &mut HashSet<String>, own_bytes: &mut u64) {
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(meta) = fs::symlink_metadata(e.path()) else {
            continue;
        };
        if meta.is_dir() {
            read_links(&e.path(), links, own_bytes);
        } else if meta.is_symlink() {
            let Ok(target) = fs::read_link(e.path()) else {
                continue;
            };
            let mut parts = target.components().rev();
            let hex = parts
                .next()
                .map(|c| c.as_os_str().to_string_lossy().into_owned());
            let algo = parts.next().map(|c| c.as_os_str().to_owned());
            let blobs = parts.next().map(|c| c.as_os_str().to_owned());
            if let (Some(hex), Some(algo), Some(blobs)) = (hex, algo, blobs) {
                if algo == "sha256" && blobs == "blobs" && is_hex(&hex, 64) {
                    links.insert(hex);
                }
            }
        } else {
            *own_bytes += meta.len();
        }
    }
}

/// What to evict to free `deficit` bytes, in order: blobs no model directory links to
/// (oldest first), then model directories and compiled models, least recently used
/// first. A directory frees the blobs no other remaining directory links to. Returns the
/// victims (a prefix that frees at least `deficit`) and the bytes they free; when even all
/// of them free less, the victims are all and the bytes are what could be freed.
fn plan(scan: &Scan, deficit: u64) -> (Vec<Victim>, u64) {
    let mut refs: HashMap<&str, usize> = HashMap::new();
    for d in &scan.dirs {
        for l in &d.links {
            *refs.entry(l.as_str()).or_default() += 1;
        }
    }
    let mut freed = 0u64;
    let mut victims = Vec::new();
    let mut orphans: Vec<(&String, &BlobInfo)> = scan
        .blobs
        .iter()
        .filter(|(sha, _)| !refs.contains_key(sha.as_str()) && !scan.protected.contains(*sha))
        .collect();
    orphans.sort_by_key(|(sha, b)| (b.mtime, sha.as_str()));
    for (sha, b) in orphans {
        if freed >= deficit {
            return (victims, freed);
        }
        freed += b.bytes;
        victims.push(Victim::Orphan(sha.clone()));
    }
    enum Lru {
        Dir(usize),
        Compiled(usize),
    }
    let mut lru: Vec<(SystemTime, Lru)> = scan
        .dirs
        .iter()
        .enumerate()
        .filter(|(_, d)| !d.pinned)
        .map(|(i, d)| (d.mtime, Lru::Dir(i)))
        .chain(
            scan.compiled
                .iter()
                .enumerate()
                .map(|(i, c)| (c.2, Lru::Compiled(i))),
        )
        .collect();
    lru.sort_by_key(|(t, _)| *t);
    for (_, item) in lru {
        if freed >= deficit {
            break;
        }
        match item {
            Lru::Dir(i) => {
                let d = &scan.dirs[i];
                let mut shas = Vec::new();
                freed += d.own_bytes;
                for l in &d.links {
                    let n = refs.get_mut(l.as_str()).expect("counted above");
                    *n -= 1;
                    if *n == 0 && !scan.protected.contains(l) {
                        if let Some(b) = scan.blobs.get(l) {
                            freed += b.bytes;
                            shas.push(l.clone());
                        }
                    }
                }
                victims.push(Victim::Model(i, shas));
            }
            Lru::Compiled(i) => {
                freed += scan.compiled[i].1;
                victims.push(Victim::Compiled(i));
            }
        }
    }
    (victims, freed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest as _;

    fn sha256_hex(b: &[u8]) -> String {
        hex::encode(sha2::Sha256::digest(b))
    }

    fn git_sha1_hex(b: &[u8]) -> String {
        use sha1::Digest as _;
        let mut h = sha1::Sha1::new();
        h.update(format!("blob {}\0", b.len()).as_bytes());
        h.update(b);
        hex::encode(h.finalize())
    }

    /// A cache with a budget of `max` bytes and no free-space floor.
    fn cache_with(root: &Path, max: Option<u64>) -> BlobCache {
        BlobCache::open_with(
            root,
            CacheLimits {
                max_bytes: max,
                min_free: MinFree::Bytes(0),
            },
        )
        .unwrap()
    }

    /// Inserts `content` as a pull does (download in `tmp/`, then `insert_file`).
    fn insert(cache: &BlobCache, content: &[u8]) -> String {
        let want = Expected::parse_sha256(&sha256_hex(content)).unwrap();
        let tmp = cache.temp_dir().unwrap().join("x");
        fs::write(&tmp, content).unwrap();
        let sha = cache.insert_file(&tmp, &want, "f").unwrap();
        fs::remove_dir_all(tmp.parent().unwrap()).unwrap();
        sha
    }

    const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

    /// A model directory of `repo` linking `files` (path, content), inserted as needed.
    fn model(cache: &BlobCache, repo: &str, files: &[(&str, &[u8])]) -> PathBuf {
        let linked: Vec<(String, String)> = files
            .iter()
            .map(|(p, c)| (p.to_string(), insert(cache, c)))
            .collect();
        cache.materialize(repo, COMMIT, &linked).unwrap()
    }

    /// A pull of `repo` with `files` (content, as LFS) pinned, as `Puller::pull` pins it.
    fn pull_pin(cache: &BlobCache, repo: &str, files: &[&[u8]]) -> CachePin {
        pull_pin_staging(cache, repo, files).0
    }

    /// [`pull_pin`] and the pull's download directory.
    fn pull_pin_staging(cache: &BlobCache, repo: &str, files: &[&[u8]]) -> (CachePin, PathBuf) {
        let (pin, staging) = cache.begin_pull(repo, COMMIT).unwrap();
        let digests: Vec<(Expected, u64)> = files
            .iter()
            .map(|c| {
                (
                    Expected::parse_sha256(&sha256_hex(c)).unwrap(),
                    c.len() as u64,
                )
            })
            .collect();
        cache.pin_files(&pin, &digests).unwrap();
        (pin, staging)
    }

    /// Inserts `content` downloaded into a pull's `staging` directory.
    fn insert_in(cache: &BlobCache, staging: &Path, content: &[u8]) -> String {
        let want = Expected::parse_sha256(&sha256_hex(content)).unwrap();
        let tmp = staging.join(format!("x{:08x}", rand::random::<u32>()));
        fs::write(&tmp, content).unwrap();
        cache.insert_file(&tmp, &want, "f").unwrap()
    }

    fn used(cache: &BlobCache) -> u64 {
        cache.refresh_metrics().unwrap();
        cache.metrics().used_bytes.get(&[]) as u64
    }

    fn age(p: &Path, secs: u64) {
        let f = fs::File::open(p).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(secs))
            .unwrap();
    }

    /// A budget too small for a third model: the least recently used directory goes, with
    /// the blobs only it used (and their markers); a blob another directory links to stays.
    #[test]
    fn room_is_made_by_evicting_the_least_recently_used_model() {
        let d = tempfile::tempdir().unwrap();
        let cache = cache_with(d.path(), None);
        let shared = b"{\"shared\": true}".as_slice();
        let (wa, wb, wc) = (vec![1u8; 10_000], vec![2u8; 10_000], vec![3u8; 10_000]);
        let a = model(&cache, "ns/a", &[("config.json", shared), ("w", &wa)]);
        let b = model(&cache, "ns/b", &[("config.json", shared), ("w", &wb)]);
        age(&a, 300);
        age(&b, 100);
        let (sa, sb, sh) = (sha256_hex(&wa), sha256_hex(&wb), sha256_hex(shared));
        assert!(cache.marker_path(&sa).exists());
        // Room for C only if 5,000 bytes go.
        let max = used(&cache) + 10_000 - 5_000;
        let cache = cache_with(d.path(), Some(max));
        assert_eq!(cache.metrics().limit_bytes.get(&["max"]), max as i64);
        assert_eq!(cache.metrics().limit_bytes.get(&["min_free"]), 0);
        let pin = pull_pin(&cache, "ns/c", &[&wc]);
        let freed = cache.make_room(&pin, "ns/c@test").unwrap();
        assert!(freed >= 10_000, "{freed}");
        assert!(!a.exists(), "the older model stays");
        assert!(b.exists());
        assert!(!cache.blob_path(&sa).exists());
        assert!(!cache.marker_path(&sa).exists());
        assert!(cache.blob_path(&sb).exists());
        assert!(cache.blob_path(&sh).exists(), "a blob B links to went");
        assert_eq!(fs::read(b.join("config.json")).unwrap(), shared);
        let m = cache.metrics();
        assert_eq!(m.evictions.get(&["model"]), 1);
        assert!(m.evicted_bytes.get(&["model"]) >= 10_000);
        // The pull was given room: a second pull now counts C's bytes as taken (and does
        // not fit even with B gone, so B stays).
        let pin2 = pull_pin(&cache, "ns/d", &[&vec![4u8; 30_000]]);
        let e = cache.make_room(&pin2, "ns/d@test").unwrap_err();
        let CacheError::NoRoom(no) = e else {
            panic!("{e}")
        };
        assert_eq!(no.reserved, 10_000);
        assert!(b.exists(), "evicted for a pull that cannot fit anyway");
        drop(pin);
    }

    /// A model a pin keeps is never evicted: a pull that only fits without it fails with
    /// the reason, evicting nothing (not even the unpinned model that alone is not enough);
    /// once the pin is dropped the same pull fits.
    #[test]
    fn a_pinned_model_is_never_evicted() {
        let d = tempfile::tempdir().unwrap();
        let cache = cache_with(d.path(), None);
        let (wa, wb, wc) = (vec![1u8; 20_000], vec![2u8; 5_000], vec![3u8; 20_000]);
        let a = model(&cache, "ns/a", &[("w", &wa)]);
        let b = model(&cache, "ns/b", &[("w", &wb)]);
        age(&a, 300); // the oldest, but in use
        let max = used(&cache) + 20_000 - 10_000;
        let cache = cache_with(d.path(), Some(max));
        let loaded = pull_pin(&cache, "ns/a", &[&wa]);
        let pin = pull_pin(&cache, "ns/c", &[&wc]);
        let e = cache.make_room(&pin, "ns/c@test").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("the worker's model cache needs 19.5 KiB for this model"),
            "{msg}"
        );
        assert!(msg.contains("(--cache-max-gib)"), "{msg}");
        assert!(
            msg.contains("are in use by models loaded or loading on this worker"),
            "{msg}"
        );
        let CacheError::NoRoom(no) = e else {
            panic!("{msg}")
        };
        assert!(no.pinned >= 20_000, "{no:?}");
        assert!(no.freeable >= 5_000 && no.freeable < 10_000, "{no:?}");
        assert!(
            a.exists() && b.exists(),
            "evicted for a pull that cannot fit"
        );
        assert_eq!(fs::read(a.join("w")).unwrap(), wa);
        assert_eq!(cache.metrics().refused.get(&[]), 1);

        // Unloaded: its directory is the most recent now, so B goes first, then A.
        drop(loaded);
        let freed = cache.make_room(&pin, "ns/c@test").unwrap();
        assert!(freed >= 10_000, "{freed}");
        assert!(!b.exists());
        assert!(!a.exists());
    }

    /// The room the heartbeats report is what a pull can be given: a pull a little smaller
    /// fits (evicting what it must), a little larger does not (the pin file a pull writes
    /// moves the line by its few hundred bytes). A loaded model's bytes are not counted, a
    /// pull given room and still downloading is subtracted, and with no budget the file
    /// system's free space is the limit.
    #[test]
    fn room_is_what_a_pull_can_be_given() {
        let d = tempfile::tempdir().unwrap();
        let cache = cache_with(d.path(), None);
        let unlimited = cache.room().unwrap().expect("the file system's free space");
        let (wa, wb) = (vec![1u8; 20_000], vec![2u8; 8_000]);
        let a = model(&cache, "ns/a", &[("w", &wa)]);
        let b = model(&cache, "ns/b", &[("w", &wb)]);
        let cache = cache_with(d.path(), Some(used(&cache) + 3_000));
        let all = cache.room().unwrap().unwrap();
        assert!(
            (31_000..32_000).contains(&all),
            "{all} (unlimited: {unlimited})"
        );
        let loaded = pull_pin(&cache, "ns/a", &[&wa]);
        let room = cache.room().unwrap().unwrap();
        assert!(all - room >= 20_000, "{all} {room}");

        let too_big = pull_pin(&cache, "ns/c", &[&vec![3u8; room as usize + 1_024]]);
        assert!(matches!(
            cache.make_room(&too_big, "ns/c@test"),
            Err(CacheError::NoRoom(_))
        ));
        assert!(a.exists() && b.exists());
        drop(too_big);
        let fits = pull_pin(&cache, "ns/d", &[&vec![4u8; room as usize - 1_024]]);
        cache.make_room(&fits, "ns/d@test").unwrap();
        assert!(!b.exists(), "evicted for the pull");
        assert!(a.exists(), "loaded");
        // Given room, not downloaded yet: what is left is about the margin.
        let left = cache.room().unwrap().unwrap();
        assert!(left < 2_048, "{left}");
        drop((loaded, fits));
    }

    /// Blobs no directory links to (a failed pull's) go before any model directory.
    #[test]
    fn blobs_no_model_uses_go_first() {
        let d = tempfile::tempdir().unwrap();
        let cache = cache_with(d.path(), None);
        let a = model(&cache, "ns/a", &[("w", &[1u8; 8_000])]);
        age(&a, 1000);
        let orphan = insert(&cache, &[9u8; 8_000]);
        let max = used(&cache) + 6_000;
        let cache = cache_with(d.path(), Some(max));
        let pin = pull_pin(&cache, "ns/c", &[&[3u8; 10_000]]);
        cache.make_room(&pin, "ns/c@test").unwrap();
        assert!(!cache.blob_path(&orphan).exists());
        assert!(a.exists());
        assert_eq!(cache.metrics().evictions.get(&["blob"]), 1);
    }

    /// A small file is pinned by its git blob id before it is in the store; once a pull
    /// inserts it (index and blob together, under the lock), no eviction removes it, even
    /// though no model directory links to it yet.
    #[test]
    fn a_blob_inserted_after_its_pin_is_kept() {
        let d = tempfile::tempdir().unwrap();
        let cache = cache_with(d.path(), None);
        let cfg = b"{\"a\": 1}".to_vec();
        let git = Expected::parse_git_sha1(&git_sha1_hex(&cfg)).unwrap();
        let (pin, staging) = cache.begin_pull("ns/a", COMMIT).unwrap();
        cache
            .pin_files(&pin, &[(git.clone(), cfg.len() as u64)])
            .unwrap();
        let tmp = staging.join("c");
        fs::write(&tmp, &cfg).unwrap();
        let sha = cache.insert_file(&tmp, &git, "config.json").unwrap();
        // Another pull that would fit if that blob (which no model directory links to
        // yet) went.
        let other = pull_pin(&cache, "ns/b", &[&[5u8; 100]]);
        let max = used(&cache) + 100 - 1;
        let cache2 = cache_with(d.path(), Some(max));
        let e = cache2.make_room(&other, "ns/b@test").unwrap_err();
        assert!(matches!(e, CacheError::NoRoom(_)), "{e}");
        assert!(cache.blob_path(&sha).exists());
        assert!(staging.exists(), "a live pull's downloads were removed");
        assert_eq!(cache.verified_blob(&git).unwrap(), Some(sha.clone()));
        // Released (and its downloads removed, as `Puller::pull` does): now it can go.
        drop(pin);
        fs::remove_dir_all(&staging).unwrap();
        let max = used(&cache) + 100 - 1;
        let cache3 = cache_with(d.path(), Some(max));
        cache3.make_room(&other, "ns/b@test").unwrap();
        assert!(!cache.blob_path(&sha).exists());
        assert!(
            fs::read_dir(d.path().join("blobs/git-sha1"))
                .unwrap()
                .next()
                .is_none(),
            "an index entry outlived its blob"
        );
    }

    /// What a crashed pull leaves (its downloads, a half-built or half-removed model
    /// directory, its pin) is removed when the cache opens and when room is made; a live
    /// pull's downloads and pin are not.
    #[test]
    fn crash_leftovers_are_removed() {
        let d = tempfile::tempdir().unwrap();
        let cache = cache_with(d.path(), None);
        let root = cache.root().to_path_buf();
        let leftovers = |root: &Path| {
            let dead = root.join("tmp/dl-999999-00000000deadbeef");
            fs::create_dir_all(dead.join("models--ns--m/blobs")).unwrap();
            fs::write(dead.join("models--ns--m/blobs/part"), vec![0u8; 50_000]).unwrap();
            fs::create_dir_all(root.join("models/.tmp-0000000000000001")).unwrap();
            fs::create_dir_all(root.join("models/.old-0000000000000002/x")).unwrap();
            // A pin whose process is gone: nobody holds its lock.
            fs::write(
                root.join("pins/00000000000000ff.pin"),
                br#"{"pid":999999,"model":"ns--m--x","staging":"dl-999999-00000000deadbeef","files":[],"claimed":true}"#,
            )
            .unwrap();
            vec![
                dead,
                root.join("models/.tmp-0000000000000001"),
                root.join("models/.old-0000000000000002"),
                root.join("pins/00000000000000ff.pin"),
            ]
        };
        let (live, live_staging) = cache.begin_pull("ns/live", COMMIT).unwrap();
        fs::write(live_staging.join("part"), b"downloading").unwrap();

        let gone = leftovers(&root);
        let cache = cache_with(d.path(), None);
        for p in &gone {
            assert!(!p.exists(), "{} left", p.display());
        }
        assert!(live_staging.join("part").exists());
        assert!(live.inner.path.exists());
        assert!(cache.metrics().evicted_bytes.get(&["leftover"]) >= 50_000);

        let gone = leftovers(&root);
        let pin = pull_pin(&cache, "ns/c", &[&[1u8; 10]]);
        cache.make_room(&pin, "ns/c@test").unwrap();
        for p in &gone {
            assert!(!p.exists(), "{} left", p.display());
        }
        assert!(live_staging.join("part").exists());
        drop(live);
        assert_eq!(fs::read_dir(root.join("pins")).unwrap().count(), 1);
    }

    /// Threads pulling models that share blobs while others evict: every directory a pin
    /// keeps stays whole, and whatever a pull was given room for is there when it looks.
    #[test]
    fn concurrent_pulls_and_evictions_keep_pinned_models_whole() {
        let d = tempfile::tempdir().unwrap();
        let shared = vec![7u8; 30_000];
        let cache = cache_with(d.path(), Some(100_000));
        let (made, refused) = (
            std::sync::atomic::AtomicUsize::new(0),
            std::sync::atomic::AtomicUsize::new(0),
        );
        std::thread::scope(|s| {
            for t in 0..4u8 {
                let cache = cache.clone();
                let (shared, made, refused) = (&shared, &made, &refused);
                s.spawn(move || {
                    for round in 0..25u8 {
                        let own = vec![t.wrapping_mul(31).wrapping_add(round); 20_000];
                        let repo = format!("ns/m{t}-{round}");
                        let files: [&[u8]; 2] = [shared, &own];
                        let (pin, staging) = pull_pin_staging(&cache, &repo, &files);
                        let fits = cache.make_room(&pin, &repo);
                        if let Err(e) = fits {
                            // The others' pins hold too much right now.
                            assert!(matches!(e, CacheError::NoRoom(_)), "{e}");
                            refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let _ = fs::remove_dir_all(&staging);
                            continue;
                        }
                        made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let linked = vec![
                            ("shared".to_string(), insert_in(&cache, &staging, shared)),
                            ("own".to_string(), insert_in(&cache, &staging, &own)),
                        ];
                        let dir = cache.materialize(&repo, COMMIT, &linked).unwrap();
                        for _ in 0..3 {
                            assert_eq!(fs::read(dir.join("shared")).unwrap(), *shared);
                            assert_eq!(fs::read(dir.join("own")).unwrap(), own);
                        }
                        let _ = fs::remove_dir_all(&staging);
                        drop(pin);
                    }
                });
            }
        });
        let made = made.into_inner();
        eprintln!("{made} pulls given room, {} refused", refused.into_inner());
        assert!(made >= 25, "{made}");
        // Nothing half-made is left, and every blob is what its name says.
        for e in fs::read_dir(cache.root().join("blobs/sha256")).unwrap() {
            let e = e.unwrap();
            assert_eq!(
                sha256_hex(&fs::read(e.path()).unwrap()),
                e.file_name().to_string_lossy()
            );
        }
        assert!(used(&cache) <= 100_000 + 4 * 1_000, "{}", used(&cache));
    }

    #[test]
    fn messages_and_sizes() {
        assert_eq!(human(812), "812 bytes");
        assert_eq!(human(4 << 20), "4.0 MiB");
        assert_eq!(human(12 * GIB + 3 * GIB / 10), "12.3 GiB");
        let e = NoRoom {
            need: 12 * GIB + 3 * GIB / 10,
            headroom: 2 * GIB,
            freeable: GIB,
            pinned: 15 * GIB,
            reserved: 0,
            limit: Limit::Budget { max: 20 * GIB },
        };
        assert_eq!(
            e.to_string(),
            "the worker's model cache needs 12.3 GiB for this model but can make only \
             3.0 GiB of room: 2.0 GiB free under its budget of 20.0 GiB (--cache-max-gib) \
             and 1.0 GiB it can evict; 15.0 GiB are in use by models loaded or loading on \
             this worker"
        );
    }

    #[test]
    fn the_floor_is_the_smaller_of_5_gib_and_a_tenth() {
        assert_eq!(MinFree::Auto.bytes(20 * GIB), 2 * GIB);
        assert_eq!(MinFree::Auto.bytes(1000 * GIB), 5 * GIB);
        assert_eq!(MinFree::Bytes(0).bytes(1000 * GIB), 0);
    }

    #[test]
    fn shortfall_takes_the_tighter_limit() {
        let fs = |free| {
            Some(FsSpace {
                free,
                size: 100 * GIB,
            })
        };
        let budget = CacheLimits {
            max_bytes: Some(10 * GIB),
            min_free: MinFree::Bytes(0),
        };
        // Fits.
        assert_eq!(shortfall(&budget, 4 * GIB, 0, 6 * GIB, fs(50 * GIB)), None);
        // 1 GiB over the budget.
        assert_eq!(
            shortfall(&budget, 5 * GIB, 0, 6 * GIB, fs(50 * GIB)),
            Some((GIB, 5 * GIB, Limit::Budget { max: 10 * GIB }))
        );
        // The floor: 8 GiB free, 5 kept, 6 wanted: 3 short, 3 of headroom.
        let floor = CacheLimits {
            max_bytes: None,
            min_free: MinFree::Auto,
        };
        assert_eq!(
            shortfall(&floor, 0, 0, 6 * GIB, fs(8 * GIB)),
            Some((
                3 * GIB,
                3 * GIB,
                Limit::MinFree {
                    min_free: 5 * GIB,
                    free: 8 * GIB
                }
            ))
        );
        // What a pull in progress has written is in its demand, not taken twice.
        assert_eq!(shortfall(&floor, 0, 2 * GIB, 6 * GIB, fs(9 * GIB)), None);
        // Both limits short: the larger shortfall wins.
        let both = CacheLimits {
            max_bytes: Some(10 * GIB),
            min_free: MinFree::Bytes(GIB),
        };
        assert!(matches!(
            shortfall(&both, 9 * GIB, 0, 2 * GIB, fs(GIB)),
            Some((_, _, Limit::MinFree { .. }))
        ));
        assert!(matches!(
            shortfall(&both, 9 * GIB, 0, 2 * GIB, fs(50 * GIB)),
            Some((GIB, _, Limit::Budget { .. }))
        ));
        // No file system figures: only the budget.
        assert_eq!(shortfall(&floor, 0, 0, u64::MAX / 2, None), None);
    }
}
