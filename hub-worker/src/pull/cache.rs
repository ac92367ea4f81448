//! The worker's content-addressed file cache, shared by every model on the worker:
//!
//! ```text
//! {root}/blobs/sha256/<hex>         verified file contents, read-only, never modified
//! {root}/blobs/git-sha1/<hex>       index: git blob id of a small file -> its sha256
//! {root}/blobs/verified/<hex>.json  marker: the blob's stat when it last hashed right
//! {root}/blobs/probed/<hex>.<tag>   marker: the GGUF blob passed llama.cpp's probe
//! {root}/tmp/dl-<pid>-<rand>/       one pull's downloads in progress (never loaded from;
//!                                   only a GGUF probe child reads one, `pull::Downloaded`)
//! {root}/models/<repo>--<commit>/   a model directory: relative symlinks into blobs/
//! {root}/pins/<id>.pin              what one pull, loaded model or job uses (below)
//! {root}/cache.lock                 the cache lock (below)
//! {root}/compiled/                  compiled models (`engine::openvino`)
//! {root}/runtimes/, {root}/jobs/    the fetched engine runtime, fine-tuning work
//! ```
//!
//! A blob enters `blobs/sha256` only by `insert_file`: hashed, compared with the digest the
//! hub reported, fsynced and renamed. A use re-hashes it (`verified_blob`) unless its
//! verified marker still describes it, so a file changed on disk after the fact is
//! detected, removed and fetched again, never loaded.
//!
//! **Verified markers** (unix). After a blob hashes right, `blobs/verified/<hex>.json` is
//! written (beside, then renamed) with the blob's path, digests and stat: size, device,
//! inode, mtime and ctime in nanoseconds. A later use whose stat is identical skips the
//! hash (re-hashing MiniLM took 247-558 ms per load on a debug build); any difference, a
//! marker of another file, or an unreadable one means a re-hash, and a mismatch still
//! removes the blob (and its marker) so it is fetched again. What a marker cannot see is a
//! change that leaves the stat as it was: bit rot under the file system, or a write in the
//! same clock tick as the recorded mtime (file systems stamp times from a coarse clock).
//! The second is ruled out as git rules out its "racy" index entries: a marker is written
//! only for a file whose mtime is at least [`RACY`] older than the hash that verified it,
//! so a later write carries a later mtime. `insert_file` back-dates the mtime of the file
//! it just hashed (its own download, in its private `tmp/` directory) by twice that, so a
//! freshly pulled blob is trusted on its next use too.
//!
//! **Limits** ([`CacheLimits`], `--cache-max-gib`, `--cache-min-free-gib`). A pull knows,
//! once it has listed the commit and verified what the cache holds, the bytes it will
//! download (the listed sizes of the files not in the store). Before it writes any, it
//! asks for room (`make_room`): the bytes under `{root}` (everything above, less the
//! download directories of pulls in progress) plus its bytes plus those of other pulls
//! already given room and not yet in the store (each blob once, at its full size, however
//! much of it is written) must stay within the budget, and the file system's free space
//! (statvfs `f_bavail`, plus what those downloads already wrote) less the same bytes must
//! stay above the floor. Pulls are given room first come, first served: a pull not yet
//! given room counts for nobody else, so two that cannot both fit do not both fail. When
//! they do not fit, eviction frees the shortfall in this order: blobs no model directory
//! links to (left by a failed pull or a replaced snapshot; oldest first), then model
//! directories (with the blobs no other directory and no pin uses) and compiled models,
//! least recently used first. Recency is the mtime: a model directory's is set when a pull
//! of it starts and when its last pin is released (a model unloaded), a compiled model's
//! when it is imported. The plan is made first: when everything evictable would not be
//! enough, nothing is evicted and the pull fails with [`NoRoom`], the endpoint's reason,
//! having written nothing. `runtimes/` and `jobs/` count but are never evicted. Not
//! counted ahead: a compiled model a load writes after its pull was given room (the next
//! pull sees it); a blob two pulls download at once is in `tmp/` twice until one renames
//! it (counted once). Sizes are file lengths.
//!
//! **Eviction and concurrency.** Several pulls (load slots, a fine-tuning job, another
//! worker process on the same directory) and an eviction may run at once. The rules:
//!
//! 1. *The cache lock.* Whatever an eviction must see whole happens under it: an exclusive
//!    `flock` on `{root}/cache.lock` (other processes), taken after a process-wide mutex
//!    (this process's threads: a `flock` is per open file, so threads sharing one would not
//!    exclude each other). Under it: creating and rewriting pins, a blob's rename into the
//!    store with its index entry and marker (`insert_file`; the hash and fsync come
//!    before, outside), `materialize`, and a whole eviction (reading the pins, measuring,
//!    deciding, removing). Downloads and verification run outside it.
//! 2. *Pins.* A pin is `pins/<id>.pin` (its model directory's name, its download
//!    directory, its files' hub digests and sizes, whether it was given room), kept open
//!    with a shared `flock` for as long as it lives and written only under the cache lock,
//!    so an eviction never reads half of one. Live means locked: an eviction tries each
//!    pin's lock exclusively without waiting; if it gets it, the owner is gone (a process
//!    that dies closes its files and so drops its locks) and the pin is removed; if not,
//!    the pin is live, whether another process's or one of this process's own (its own
//!    lock is on another open file, so they conflict). No guess by age or pid.
//! 3. *What a pin keeps.* Its model directory, its download directory, and every blob its
//!    files name: by sha256 for LFS files, through the git-sha1 index for small ones, and
//!    whatever its directory links to. A pull pins its files right after listing the
//!    commit and before verifying any cached blob, so a blob it found cached cannot vanish
//!    before it materializes. A blob it downloads enters the store with its index entry
//!    under the lock, so an eviction sees it as already named by the pin, or not at all.
//! 4. *Who holds pins.* A pull, from before it lists the commit (`begin_pull`); its
//!    [`super::Pulled`]; then the loaded model (`Model::keep_alive`) until its last clone
//!    is dropped, requests still running after an unload included; a fine-tuning job for
//!    its whole run. So "in use" is exact: a model loaded, loading or pulling, or a job's
//!    base model. A loaded model maps its weights: were they removed, the space would not
//!    come back until it unmapped them anyway.
//! 5. *Races.* Two pulls sharing a blob both pin it; either may download it, and a second
//!    rename replaces it with identical bytes (content-addressed). A pull racing an
//!    eviction: either its pin came first (the blob stays) or the eviction did (the pull's
//!    verification finds the blob gone and downloads it, counted in its bytes).
//! 6. *Removal order.* A model directory is renamed aside (`.old-<rand>`) and removed
//!    before its blobs, so no model directory links to a removed blob; a blob goes with
//!    its verified and probed markers and its index entries.
//! 7. *Crash leftovers.* Download directories and `models/.tmp-*`/`.old-*` are created
//!    under the lock (or named by a live pin), so under the lock any that no live pin
//!    names belong to a dead process: they are removed when the cache opens and by every
//!    `make_room`. A crash mid-eviction leaves `.old-` directories or blobs no directory
//!    uses, both removed later. Marker and index temporaries are written outside the
//!    lock, so only those over an hour old go; compiled-model temporaries (an export can
//!    take minutes) over a day old.

pub use super::evict::{CacheLimits, CacheMetrics, CachePin, Limit, MinFree, NoRoom};
use serde::{Deserialize, Serialize};
use sha1::Digest as _;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use thiserror::Error;

/// Errors of the cache.
#[derive(Debug, Error)]
pub enum CacheError {
    #[error("unsafe path in repo listing: {0:?}")]
    UnsafePath(String),
    #[error("invalid digest {0:?}")]
    BadDigest(String),
    #[error("{path}: content does not match the hub's digest (expected {expected}, got {actual})")]
    DigestMismatch {
        path: String,
        expected: String,
        actual: String,
    },
    #[error("{0} is not a regular file")]
    NotRegularFile(PathBuf),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    /// A pull's files do not fit the cache's budget even with everything evictable gone.
    #[error(transparent)]
    NoRoom(#[from] NoRoom),
}

pub(super) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> CacheError {
    let context = context.into();
    move |source| CacheError::Io { context, source }
}

/// Whether `p` is a plain relative repo path: `/`-separated, no empty, `.` or `..`
/// segments, no backslash, NUL or control characters, no `.git` segment.
pub fn is_safe_repo_path(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 1024
        && !p.starts_with('/')
        && !p.chars().any(|c| c == '\\' || c.is_control())
        && p.split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != ".." && seg != ".git")
}

pub(super) fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The digest the hub reports for a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// LFS files: sha256 of the content (the `/resolve` ETag).
    Sha256(String),
    /// Regular files: the git blob id, sha1 of `blob <len>\0<content>` (the `/resolve` ETag).
    GitSha1(String),
}

impl Expected {
    /// Validates and lower-cases a digest.
    pub fn parse_sha256(s: &str) -> Result<Expected, CacheError> {
        let s = s.to_ascii_lowercase();
        if is_hex(&s, 64) {
            Ok(Expected::Sha256(s))
        } else {
            Err(CacheError::BadDigest(s))
        }
    }

    /// Validates and lower-cases a git blob id.
    pub fn parse_git_sha1(s: &str) -> Result<Expected, CacheError> {
        let s = s.to_ascii_lowercase();
        if is_hex(&s, 40) {
            Ok(Expected::GitSha1(s))
        } else {
            Err(CacheError::BadDigest(s))
        }
    }

    /// The hex digest.
    pub fn hex(&self) -> &str {
        match self {
            Expected::Sha256(h) | Expected::GitSha1(h) => h,
        }
    }
}

/// Digests of a file's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDigests {
    pub sha256: String,
    pub git_sha1: String,
    pub size: u64,
}

impl FileDigests {
    /// Whether these digests satisfy `expected`.
    pub fn matches(&self, expected: &Expected) -> bool {
        match expected {
            Expected::Sha256(h) => &self.sha256 == h,
            Expected::GitSha1(h) => &self.git_sha1 == h,
        }
    }

    fn actual_for(&self, expected: &Expected) -> &str {
        match expected {
            Expected::Sha256(_) => &self.sha256,
            Expected::GitSha1(_) => &self.git_sha1,
        }
    }
}

/// Hashes a regular file (sha256 and git blob sha1 in one pass). Refuses symlinks.
/// [`BlobCache::insert_file`] computes only what the file is addressed by.
pub fn hash_file(path: &Path) -> Result<FileDigests, CacheError> {
    hash_file_as(path, true)
}

/// [`hash_file`], computing the git blob sha1 only when `with_sha1` (re-verifying a
/// weight file addressed by sha256 needs only that: half the hashing on every load).
/// Without it `git_sha1` is empty.
fn hash_file_as(path: &Path, with_sha1: bool) -> Result<FileDigests, CacheError> {
    let meta = fs::symlink_metadata(path).map_err(io(format!("stat {}", path.display())))?;
    if !meta.file_type().is_file() {
        return Err(CacheError::NotRegularFile(path.to_path_buf()));
    }
    let mut f = fs::File::open(path).map_err(io(format!("open {}", path.display())))?;
    let size = meta.len();
    let mut sha256 = sha2::Sha256::new();
    let mut sha1 = sha1::Sha1::new();
    sha1.update(format!("blob {size}\0").as_bytes());
    let mut buf = vec![0u8; 1 << 20];
    let mut read = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(io(format!("read {}", path.display())))?;
        if n == 0 {
            break;
        }
        sha256.update(&buf[..n]);
        if with_sha1 {
            sha1.update(&buf[..n]);
        }
        read += n as u64;
    }
    if read != size {
        return Err(CacheError::Io {
            context: format!("read {}", path.display()),
            source: std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "file changed size"),
        });
    }
    Ok(FileDigests {
        sha256: hex::encode(sha256.finalize()),
        git_sha1: if with_sha1 {
            hex::encode(sha1.finalize())
        } else {
            String::new()
        },
        size,
    })
}

/// How much older than the hash that verified it a file's mtime must be for the
/// verification to be remembered (see the module docs).
pub const RACY: std::time::Duration = std::time::Duration::from_secs(1);

/// A blob's stat as a verified marker records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Stamp {
    size: u64,
    dev: u64,
    ino: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Stamp {
    #[cfg(unix)]
    fn of(meta: &fs::Metadata) -> Option<Stamp> {
        use std::os::unix::fs::MetadataExt;
        let ns = |s: i64, n: i64| s as i128 * 1_000_000_000 + n as i128;
        Some(Stamp {
            size: meta.size(),
            dev: meta.dev(),
            ino: meta.ino(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
        })
    }

    /// No inode or ctime to key on: every use re-hashes.
    #[cfg(not(unix))]
    fn of(_meta: &fs::Metadata) -> Option<Stamp> {
        None
    }
}

/// What `blobs/verified/<hex>.json` holds: this file, with this stat, hashed to these
/// digests (`git_sha1` when it was computed), at `verified_at_ns` (wall clock, taken
/// before the hash began).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Marker {
    path: PathBuf,
    sha256: String,
    git_sha1: Option<String>,
    stamp: Stamp,
    verified_at_ns: i128,
}

fn now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

/// A cached blob that satisfies what was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedBlob {
    pub sha256: String,
    /// Whether it was hashed for this use (false: its verified marker vouched for it).
    pub rehashed: bool,
}

/// The cache rooted at one directory. Clones share one lock, limits and metrics.
#[derive(Debug, Clone)]
pub struct BlobCache {
    root: PathBuf,
    shared: Arc<Shared>,
}

/// What the clones of one opened cache share.
#[derive(Debug)]
struct Shared {
    /// `{root}/cache.lock`, held exclusively (`flock`) by [`BlobCache::lock`].
    lock_file: fs::File,
    /// Serialises this process's threads before the file lock: a `flock` is per open
    /// file, so two threads on this one descriptor would not exclude each other.
    threads: Mutex<()>,
    limits: CacheLimits,
    metrics: Arc<CacheMetrics>,
}

/// The cache lock, held (module docs: "Eviction and concurrency"). Released on drop.
pub(super) struct Locked<'a> {
    file: &'a fs::File,
    _threads: MutexGuard<'a, ()>,
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        // Before the thread mutex (a field, dropped after this).
        let _ = self.file.unlock();
    }
}

impl BlobCache {
    /// Opens (creating) a cache at `root` with the default limits ([`CacheLimits`]: no
    /// budget, the default free-space floor).
    pub fn open(root: &Path) -> Result<BlobCache, CacheError> {
        BlobCache::open_with(root, CacheLimits::default())
    }

    /// Opens (creating) a cache at `root` whose pulls keep within `limits`. Removes what
    /// crashed pulls left behind (module docs), under the cache lock.
    pub fn open_with(root: &Path, limits: CacheLimits) -> Result<BlobCache, CacheError> {
        for sub in [
            "blobs/sha256",
            "blobs/git-sha1",
            "blobs/verified",
            "tmp",
            "models",
            "pins",
        ] {
            fs::create_dir_all(root.join(sub))
                .map_err(io(format!("create {}", root.join(sub).display())))?;
        }
        let root = root
            .canonicalize()
            .map_err(io(format!("resolve {}", root.display())))?;
        let lock_path = root.join("cache.lock");
        let lock_file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(format!("open {}", lock_path.display())))?;
        let cache = BlobCache {
            root,
            shared: Arc::new(Shared {
                lock_file,
                threads: Mutex::new(()),
                limits,
                metrics: Arc::new(CacheMetrics::default()),
            }),
        };
        cache.start_up()?;
        Ok(cache)
    }

    /// The limits its pulls keep within.
    pub fn limits(&self) -> &CacheLimits {
        &self.shared.limits
    }

    /// Its metrics (bytes used, evictions), for the worker's `GET /metrics`.
    pub fn metrics(&self) -> Arc<CacheMetrics> {
        self.shared.metrics.clone()
    }

    /// Takes the cache lock (blocking: call it off the async executor).
    pub(super) fn lock(&self) -> Result<Locked<'_>, CacheError> {
        let threads = self
            .shared
            .threads
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        self.shared.lock_file.lock().map_err(io(format!(
            "lock {}",
            self.root.join("cache.lock").display()
        )))?;
        Ok(Locked {
            file: &self.shared.lock_file,
            _threads: threads,
        })
    }

    /// The cache's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob with this sha256 lives (whether or not it exists).
    pub fn blob_path(&self, sha256: &str) -> PathBuf {
        self.root.join("blobs/sha256").join(sha256)
    }

    /// A fresh directory under `tmp/` for one download. No pin keeps it: a pull takes its
    /// own from `begin_pull`, as `make_room` removes unpinned ones as crash leftovers.
    pub fn temp_dir(&self) -> Result<PathBuf, CacheError> {
        let name = format!("dl-{}-{:016x}", std::process::id(), rand::random::<u64>());
        let p = self.root.join("tmp").join(name);
        fs::create_dir_all(&p).map_err(io(format!("create {}", p.display())))?;
        Ok(p)
    }

    pub(super) fn sha1_index(&self, git_sha1: &str) -> PathBuf {
        self.root.join("blobs/git-sha1").join(git_sha1)
    }

    /// Where the verified marker of the blob with this sha256 lives.
    pub fn marker_path(&self, sha256: &str) -> PathBuf {
        self.root
            .join("blobs/verified")
            .join(format!("{sha256}.json"))
    }

    /// The sha256 of a cached blob that satisfies `expected` ([`BlobCache::cached_blob`]).
    pub fn verified_blob(&self, expected: &Expected) -> Result<Option<String>, CacheError> {
        Ok(self.cached_blob(expected)?.map(|c| c.sha256))
    }

    /// A cached blob that satisfies `expected`: vouched for by its verified marker when
    /// the blob's stat is the one the marker recorded, else re-hashed (and the marker
    /// written anew). A blob that fails verification is removed (with its marker and index
    /// entry) and `None` is returned, so the caller fetches it again.
    pub fn cached_blob(&self, expected: &Expected) -> Result<Option<CachedBlob>, CacheError> {
        let sha256 = match expected {
            Expected::Sha256(h) => h.clone(),
            Expected::GitSha1(h) => match fs::read_to_string(self.sha1_index(h)) {
                Ok(s) if is_hex(s.trim(), 64) => s.trim().to_string(),
                Ok(_) => {
                    let _ = fs::remove_file(self.sha1_index(h));
                    return Ok(None);
                }
                Err(_) => return Ok(None),
            },
        };
        let path = self.blob_path(&sha256);
        let Ok(meta) = fs::symlink_metadata(&path) else {
            return Ok(None);
        };
        let stamp = meta
            .file_type()
            .is_file()
            .then(|| Stamp::of(&meta))
            .flatten();
        if let Some(stamp) = &stamp {
            if self.marker_vouches(&path, &sha256, expected, stamp) {
                return Ok(Some(CachedBlob {
                    sha256,
                    rehashed: false,
                }));
            }
        }
        let with_sha1 = matches!(expected, Expected::GitSha1(_));
        let began = now_ns();
        let started = std::time::Instant::now();
        let ok = match hash_file_as(&path, with_sha1) {
            Ok(d) if d.sha256 == sha256 && d.matches(expected) => Some(d),
            _ => None,
        };
        if let Some(d) = ok {
            tracing::debug!(blob = %path.display(), bytes = d.size, duration_ms = started.elapsed().as_millis() as u64, "cached blob re-hashed");
            // Remembered only if the file did not change while it was hashed.
            let after = fs::symlink_metadata(&path).ok().and_then(|m| Stamp::of(&m));
            if let Some(stamp) = stamp.filter(|s| after.as_ref() == Some(s)) {
                self.write_marker(&path, &d, with_sha1, stamp, began);
            }
            return Ok(Some(CachedBlob {
                sha256,
                rehashed: true,
            }));
        }
        tracing::warn!(blob = %path.display(), "cached blob failed verification; removing it");
        remove_blob(&path)?;
        remove_blob(&self.marker_path(&sha256))?;
        if let Expected::GitSha1(h) = expected {
            let _ = fs::remove_file(self.sha1_index(h));
        }
        Ok(None)
    }

    /// Whether the marker of `sha256` describes the blob at `path` as it is now
    /// (`stamp`), verified against digests that satisfy `expected`.
    fn marker_vouches(
        &self,
        path: &Path,
        sha256: &str,
        expected: &Expected,
        stamp: &Stamp,
    ) -> bool {
        let Ok(text) = fs::read(self.marker_path(sha256)) else {
            return false;
        };
        let Ok(m) = serde_json::from_slice::<Marker>(&text) else {
            return false;
        };
        let digest_ok = match expected {
            Expected::Sha256(h) => h == sha256,
            Expected::GitSha1(h) => m.git_sha1.as_deref() == Some(h.as_str()),
        };
        m.path == path
            && m.sha256 == sha256
            && m.stamp == *stamp
            && m.stamp.mtime_ns + (RACY.as_nanos() as i128) <= m.verified_at_ns
            && digest_ok
    }

    /// Writes the verified marker of a blob that just hashed to `d` (beside, then
    /// renamed). Nothing is written for a file modified less than [`RACY`] before the
    /// hash began; a failure only costs a re-hash next time.
    fn write_marker(
        &self,
        path: &Path,
        d: &FileDigests,
        with_sha1: bool,
        stamp: Stamp,
        began: i128,
    ) {
        if stamp.mtime_ns + (RACY.as_nanos() as i128) > began {
            return;
        }
        let marker = Marker {
            path: path.to_path_buf(),
            sha256: d.sha256.clone(),
            git_sha1: with_sha1.then(|| d.git_sha1.clone()),
            stamp,
            verified_at_ns: began,
        };
        let dest = self.marker_path(&d.sha256);
        let tmp = dest.with_extension(format!("tmp{:08x}", rand::random::<u32>()));
        let written = serde_json::to_vec(&marker)
            .map_err(std::io::Error::other)
            .and_then(|bytes| fs::write(&tmp, bytes))
            .and_then(|()| fs::rename(&tmp, &dest));
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            tracing::debug!(marker = %dest.display(), error = %e, "writing a verified marker failed");
        }
    }

    /// Moves a downloaded file into the cache after checking it against `expected`.
    /// `name` is the repo path, for messages. Returns the blob's sha256.
    pub fn insert_file(
        &self,
        downloaded: &Path,
        expected: &Expected,
        name: &str,
    ) -> Result<String, CacheError> {
        let began_at = std::time::SystemTime::now();
        let began = now_ns();
        let f = fs::OpenOptions::new()
            .read(true)
            .open(downloaded)
            .map_err(io(format!("open {}", downloaded.display())))?;
        // The data goes to disk on a thread of its own while this one hashes: on a weight
        // file both take a fraction of a second (242 MiB: ~0.3 s each here), and the cold
        // start of an endpoint waits for both. Only the digest the file is addressed by is
        // computed (the git sha1 too for a file addressed by it): a weight file's sha1
        // would be one more pass that nothing reads.
        let with_sha1 = matches!(expected, Expected::GitSha1(_));
        let (hashed, synced) = std::thread::scope(|scope| {
            let sync = scope.spawn(|| f.sync_data());
            let hashed = hash_file_as(downloaded, with_sha1);
            (hashed, sync.join())
        });
        let digests = hashed?;
        if !digests.matches(expected) {
            let _ = fs::remove_file(downloaded);
            return Err(CacheError::DigestMismatch {
                path: name.to_string(),
                expected: expected.hex().to_string(),
                actual: digests.actual_for(expected).to_string(),
            });
        }
        synced
            .unwrap_or_else(|_| Err(std::io::Error::other("the fsync thread panicked")))
            .map_err(io(format!("fsync {}", downloaded.display())))?;
        // Back-dated (see the module docs): this is our own download, just hashed, so a
        // write after this carries a later mtime even on a coarse clock, and the marker
        // written below vouches for the blob on its next use. The data is on disk already;
        // this fsync writes the new mtime.
        let backdated = f.set_modified(began_at - 2 * RACY).is_ok();
        f.sync_all()
            .map_err(io(format!("fsync {}", downloaded.display())))?;
        drop(f);
        set_read_only(downloaded)?;
        // Into the store under the cache lock: an eviction sees the blob and its index
        // entry together, or neither (module docs).
        let _locked = self.lock()?;
        let dest = self.blob_path(&digests.sha256);
        fs::rename(downloaded, &dest).map_err(io(format!("rename into {}", dest.display())))?;
        sync_dir(&self.root.join("blobs/sha256"))?;
        if backdated {
            if let Some(stamp) = fs::symlink_metadata(&dest).ok().and_then(|m| Stamp::of(&m)) {
                self.write_marker(&dest, &digests, with_sha1, stamp, began);
            }
        }
        if let Expected::GitSha1(h) = expected {
            let idx = self.sha1_index(h);
            let tmp = idx.with_extension(format!("tmp{:08x}", rand::random::<u32>()));
            let mut f = fs::File::create(&tmp).map_err(io(format!("create {}", tmp.display())))?;
            f.write_all(digests.sha256.as_bytes())
                .and_then(|_| f.sync_all())
                .map_err(io(format!("write {}", tmp.display())))?;
            fs::rename(&tmp, &idx).map_err(io(format!("rename {}", idx.display())))?;
        }
        Ok(digests.sha256)
    }

    /// Builds `models/<repo>--<commit>/` as relative symlinks into `blobs/sha256`.
    /// `files` are `(repo path, sha256)`; every path is validated and every blob must
    /// exist. A copy that already links every file to its blob is kept as it is (another
    /// replica of the same commit may be loading from it right now); a different one is
    /// replaced atomically. Runs under the cache lock (blocking).
    pub fn materialize(
        &self,
        repo_id: &str,
        commit: &str,
        files: &[(String, String)],
    ) -> Result<PathBuf, CacheError> {
        let name = model_dir_name(repo_id, commit)?;
        let _locked = self.lock()?;
        let models = self.root.join("models");
        let tmp = models.join(format!(".tmp-{:016x}", rand::random::<u64>()));
        fs::create_dir_all(&tmp).map_err(io(format!("create {}", tmp.display())))?;
        let result = (|| {
            for (path, sha256) in files {
                if !is_safe_repo_path(path) {
                    return Err(CacheError::UnsafePath(path.clone()));
                }
                if !is_hex(sha256, 64) {
                    return Err(CacheError::BadDigest(sha256.clone()));
                }
                let blob = self.blob_path(sha256);
                let meta =
                    fs::symlink_metadata(&blob).map_err(io(format!("stat {}", blob.display())))?;
                if !meta.file_type().is_file() {
                    return Err(CacheError::NotRegularFile(blob));
                }
                let target = link_target(path, sha256);
                let link = tmp.join(path);
                if let Some(parent) = link.parent() {
                    fs::create_dir_all(parent)
                        .map_err(io(format!("create {}", parent.display())))?;
                }
                symlink(&target, &link)?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        let dest = models.join(&name);
        if links_all(&dest, files) {
            let _ = fs::remove_dir_all(&tmp);
            return Ok(dest);
        }
        if fs::symlink_metadata(&dest).is_ok() {
            let trash = models.join(format!(".old-{:016x}", rand::random::<u64>()));
            fs::rename(&dest, &trash).map_err(io(format!("move aside {}", dest.display())))?;
            let _ = fs::remove_dir_all(&trash);
        }
        if let Err(e) = fs::rename(&tmp, &dest) {
            let _ = fs::remove_dir_all(&tmp);
            // A concurrent pull of the same commit got there first: use its copy.
            if links_all(&dest, files) {
                return Ok(dest);
            }
            return Err(io(format!("rename into {}", dest.display()))(e));
        }
        sync_dir(&models)?;
        Ok(dest)
    }
}

/// The name of the model directory of `repo_id` at `commit` (`<ns>--<name>--<commit>`),
/// refused unless both are plain.
pub(super) fn model_dir_name(repo_id: &str, commit: &str) -> Result<String, CacheError> {
    if !is_safe_repo_path(repo_id) || repo_id.contains("--") || !is_hex(commit, 40) {
        return Err(CacheError::UnsafePath(format!("{repo_id}@{commit}")));
    }
    Ok(format!("{}--{commit}", repo_id.replace('/', "--")))
}

/// The relative symlink target of repo file `path` in a snapshot: the link sits in
/// `models/<name>/<dirs of path>/`, so it climbs back to the cache root.
fn link_target(path: &str, sha256: &str) -> PathBuf {
    let mut target = PathBuf::new();
    for _ in 0..path.matches('/').count() + 2 {
        target.push("..");
    }
    target.push("blobs/sha256");
    target.push(sha256);
    target
}

/// Whether snapshot `dir` links every one of `files` to its blob, and each blob is there.
fn links_all(dir: &Path, files: &[(String, String)]) -> bool {
    files.iter().all(|(path, sha256)| {
        let link = dir.join(path);
        fs::read_link(&link).is_ok_and(|t| t == link_target(path, sha256))
            && fs::metadata(&link).is_ok_and(|m| m.is_file())
    })
}

pub(super) fn remove_blob(path: &Path) -> Result<(), CacheError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CacheError::Io {
            context: format!("remove {}", path.display()),
            source: e,
        }),
    }
}

#[cfg(unix)]
fn symlink(target: &Path, link: &Path) -> Result<(), CacheError> {
    std::os::unix::fs::symlink(target, link).map_err(io(format!("symlink {}", link.display())))
}

#[cfg(not(unix))]
fn symlink(target: &Path, link: &Path) -> Result<(), CacheError> {
    // Without symlinks, copy: the blob is verified, the copy is made from it.
    let src = link.parent().unwrap_or(Path::new(".")).join(target);
    fs::copy(&src, link)
        .map(|_| ())
        .map_err(io(format!("copy {}", link.display())))
}

#[cfg(unix)]
fn set_read_only(p: &Path) -> Result<(), CacheError> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(0o444))
        .map_err(io(format!("chmod {}", p.display())))
}

#[cfg(not(unix))]
fn set_read_only(p: &Path) -> Result<(), CacheError> {
    let mut perm = fs::metadata(p)
        .map_err(io(format!("stat {}", p.display())))?
        .permissions();
    perm.set_readonly(true);
    fs::set_permissions(p, perm).map_err(io(format!("chmod {}", p.display())))
}

fn sync_dir(p: &Path) -> Result<(), CacheError> {
    #[cfg(unix)]
    {
        fs::File::open(p)
            .and_then(|d| d.sync_all())
            .map_err(io(format!("fsync {}", p.display())))?;
    }
    #[cfg(not(unix))]
    let _ = p;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha256_hex(b: &[u8]) -> String {
        hex::encode(sha2::Sha256::digest(b))
    }

    #[test]
    fn repo_paths() {
        for ok in [
            "config.json",
            "1_Pooling/config.json",
            "a/b/c.safetensors",
            "x..y",
        ] {
            assert!(is_safe_repo_path(ok), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a//b",
            "./a",
            "a/.",
            "a\\b",
            ".git/config",
            "a/.git/x",
            "a\0b",
            "a\nb",
        ] {
            assert!(!is_safe_repo_path(bad), "{bad:?}");
        }
    }

    #[test]
    fn git_blob_ids() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        fs::write(&p, b"hello\n").unwrap();
        // `printf 'hello\n' | git hash-object --stdin`
        let dg = hash_file(&p).unwrap();
        assert_eq!(dg.git_sha1, "ce013625030ba8dba906f756967f9e9ca394464a");
        assert_eq!(dg.sha256, sha256_hex(b"hello\n"));
        // Symlinks are refused.
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(&p, d.path().join("l")).unwrap();
            assert!(matches!(
                hash_file(&d.path().join("l")),
                Err(CacheError::NotRegularFile(_))
            ));
        }
    }

    #[test]
    fn insert_verify_and_detect_corruption() {
        let d = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(d.path()).unwrap();
        let content = b"weights".to_vec();
        let want = Expected::parse_sha256(&sha256_hex(&content)).unwrap();
        assert_eq!(cache.verified_blob(&want).unwrap(), None);

        // A download that does not match is refused and removed.
        let tmp = cache.temp_dir().unwrap().join("x");
        fs::write(&tmp, b"weightz").unwrap();
        let e = cache
            .insert_file(&tmp, &want, "model.safetensors")
            .unwrap_err();
        assert!(matches!(e, CacheError::DigestMismatch { .. }), "{e}");
        assert!(!tmp.exists());
        assert_eq!(cache.verified_blob(&want).unwrap(), None);

        fs::write(&tmp, &content).unwrap();
        let sha = cache.insert_file(&tmp, &want, "model.safetensors").unwrap();
        assert_eq!(cache.verified_blob(&want).unwrap(), Some(sha.clone()));

        // Corrupt it on disk: detected, removed, reported missing.
        let blob = cache.blob_path(&sha);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&blob, fs::Permissions::from_mode(0o644)).unwrap();
        }
        fs::write(&blob, b"wEights").unwrap();
        assert_eq!(cache.verified_blob(&want).unwrap(), None);
        assert!(!blob.exists());

        // Small files are addressed by git blob id through the index.
        let cfg = b"{\"a\":1}".to_vec();
        let tmp = cache.temp_dir().unwrap().join("c");
        fs::write(&tmp, &cfg).unwrap();
        let git = Expected::parse_git_sha1(&hash_file(&tmp).unwrap().git_sha1).unwrap();
        let sha = cache.insert_file(&tmp, &git, "config.json").unwrap();
        assert_eq!(sha, sha256_hex(&cfg));
        assert_eq!(cache.verified_blob(&git).unwrap(), Some(sha));
    }

    #[test]
    fn materialize_links_stay_inside() {
        let d = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(d.path()).unwrap();
        let tmp = cache.temp_dir().unwrap().join("c");
        fs::write(&tmp, b"{}").unwrap();
        let want = Expected::parse_sha256(&sha256_hex(b"{}")).unwrap();
        let sha = cache.insert_file(&tmp, &want, "config.json").unwrap();
        let commit = "a".repeat(40);
        let files = vec![
            ("config.json".to_string(), sha.clone()),
            ("1_Pooling/config.json".to_string(), sha.clone()),
        ];
        let dir = cache.materialize("ns/m", &commit, &files).unwrap();
        assert_eq!(fs::read(dir.join("1_Pooling/config.json")).unwrap(), b"{}");
        let root = cache.root().to_path_buf();
        for p in ["config.json", "1_Pooling/config.json"] {
            let real = dir.join(p).canonicalize().unwrap();
            assert!(
                real.starts_with(root.join("blobs/sha256")),
                "{}",
                real.display()
            );
        }
        // Again: the complete copy is kept as it is (same directory, not replaced), so a
        // replica loading from it never sees a file vanish, even with pulls racing.
        use std::os::unix::fs::MetadataExt;
        let ino = fs::metadata(&dir).unwrap().ino();
        let dir2 = cache.materialize("ns/m", &commit, &files).unwrap();
        assert_eq!(dir, dir2);
        assert_eq!(fs::metadata(&dir2).unwrap().ino(), ino, "replaced");
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            let reader = s.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    assert_eq!(fs::read(dir.join("1_Pooling/config.json")).unwrap(), b"{}");
                }
            });
            let pulls: Vec<_> = (0..4)
                .map(|_| s.spawn(|| cache.materialize("ns/m", &commit, &files).unwrap()))
                .collect();
            for p in pulls {
                assert_eq!(p.join().unwrap(), dir);
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            reader.join().unwrap();
        });
        // An incomplete copy is replaced.
        fs::remove_file(dir.join("config.json")).unwrap();
        let dir3 = cache.materialize("ns/m", &commit, &files).unwrap();
        assert_eq!(fs::read(dir3.join("config.json")).unwrap(), b"{}");
        for bad in ["../escape", "/abs", "a/../../b", ".git/x"] {
            let e = cache
                .materialize("ns/m", &commit, &[(bad.to_string(), sha.clone())])
                .unwrap_err();
            assert!(matches!(e, CacheError::UnsafePath(_)), "{bad}: {e}");
        }
        assert!(cache.materialize("../x", &commit, &files).is_err());
        assert!(cache.materialize("ns/m", "main", &files).is_err());
        // No stray temp dirs are left behind.
        let leftovers: Vec<_> = fs::read_dir(root.join("models"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .collect();
        assert!(leftovers.is_empty());
    }

    /// Inserts `content` through a download in `tmp/`, as a pull does.
    fn insert(cache: &BlobCache, content: &[u8]) -> (Expected, String) {
        let want = Expected::parse_sha256(&sha256_hex(content)).unwrap();
        let tmp = cache.temp_dir().unwrap().join("x");
        fs::write(&tmp, content).unwrap();
        let sha = cache.insert_file(&tmp, &want, "model.safetensors").unwrap();
        (want, sha)
    }

    fn rehashed(cache: &BlobCache, want: &Expected) -> Option<bool> {
        cache.cached_blob(want).unwrap().map(|c| c.rehashed)
    }

    /// A file addressed by sha256 (a weight file) is hashed by that alone: its marker
    /// records no git sha1. The same bytes addressed by their git blob id later (a small
    /// file of another repo) are hashed for it then, and both addresses keep working. (A
    /// download that does not match: `insert_verify_and_detect_corruption`.)
    #[test]
    fn a_sha256_address_is_hashed_alone_and_a_git_address_of_the_same_bytes_still_works() {
        let d = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(d.path()).unwrap();
        let bytes = b"the same bytes under two addresses";
        let (want, sha) = insert(&cache, bytes);
        let marker = |c: &BlobCache| -> Marker {
            serde_json::from_slice(&fs::read(c.marker_path(&sha)).unwrap()).unwrap()
        };
        assert_eq!(marker(&cache).git_sha1, None);
        assert_eq!(rehashed(&cache, &want), Some(false));

        let probe = d.path().join("copy");
        fs::write(&probe, bytes).unwrap();
        let git = Expected::parse_git_sha1(&hash_file(&probe).unwrap().git_sha1).unwrap();
        // Not indexed by its git id yet: a pull would download it.
        assert_eq!(cache.verified_blob(&git).unwrap(), None);
        let tmp = cache.temp_dir().unwrap().join("g");
        fs::write(&tmp, bytes).unwrap();
        assert_eq!(cache.insert_file(&tmp, &git, "notes.txt").unwrap(), sha);
        assert_eq!(marker(&cache).git_sha1.as_deref(), Some(git.hex()));
        assert_eq!(cache.verified_blob(&git).unwrap(), Some(sha.clone()));
        assert_eq!(rehashed(&cache, &want), Some(false));
        assert_eq!(fs::read(cache.blob_path(&sha)).unwrap(), bytes);
    }

    #[cfg(unix)]
    fn writable(p: &Path) {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(p, fs::Permissions::from_mode(0o644)).unwrap();
    }

    /// An unchanged blob is vouched for by its marker (no hash, however often it is
    /// used); a blob modified in place, same size, new mtime, is hashed, found corrupt,
    /// and removed with its marker.
    #[cfg(unix)]
    #[test]
    fn a_verified_marker_spares_the_hash_until_the_file_changes() {
        let d = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(d.path()).unwrap();
        let (want, sha) = insert(&cache, b"weights of a model");
        // Inserting verified it, and its marker says so.
        assert!(cache.marker_path(&sha).exists());
        for _ in 0..3 {
            assert_eq!(rehashed(&cache, &want), Some(false));
        }
        // Without the marker: hashed once, remembered again.
        fs::remove_file(cache.marker_path(&sha)).unwrap();
        assert_eq!(rehashed(&cache, &want), Some(true));
        assert!(cache.marker_path(&sha).exists());
        assert_eq!(rehashed(&cache, &want), Some(false));

        // Modified in place: same size, one byte changed, written through the same inode.
        let blob = cache.blob_path(&sha);
        writable(&blob);
        let ino = |p: &Path| {
            use std::os::unix::fs::MetadataExt;
            fs::metadata(p).unwrap().ino()
        };
        let before = ino(&blob);
        {
            use std::io::{Seek, SeekFrom};
            let mut f = fs::OpenOptions::new().write(true).open(&blob).unwrap();
            f.seek(SeekFrom::Start(0)).unwrap();
            f.write_all(b"W").unwrap();
        }
        assert_eq!(ino(&blob), before);
        assert_eq!(fs::metadata(&blob).unwrap().len(), 18);
        assert_eq!(cache.cached_blob(&want).unwrap(), None);
        assert!(!blob.exists());
        assert!(!cache.marker_path(&sha).exists());
    }

    /// A marker vouches only for the file it was written for: another blob's marker
    /// (copied in place of this one's) or an unreadable one means a hash.
    #[cfg(unix)]
    #[test]
    fn a_marker_of_another_file_is_ignored() {
        let d = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(d.path()).unwrap();
        let (_, a) = insert(&cache, b"aaaa");
        let (want_b, b) = insert(&cache, b"bbbb");
        fs::copy(cache.marker_path(&a), cache.marker_path(&b)).unwrap();
        assert_eq!(rehashed(&cache, &want_b), Some(true));
        // The hash rewrote B's own marker.
        assert_eq!(rehashed(&cache, &want_b), Some(false));
        fs::write(cache.marker_path(&b), b"{not json").unwrap();
        assert_eq!(rehashed(&cache, &want_b), Some(true));

        // B replaced by another file with A's marker stamped on: still hashed, and
        // corrupt (A's bytes under B's name) it goes.
        let blob_b = cache.blob_path(&b);
        writable(&blob_b);
        fs::remove_file(&blob_b).unwrap();
        fs::copy(cache.blob_path(&a), &blob_b).unwrap();
        fs::copy(cache.marker_path(&a), cache.marker_path(&b)).unwrap();
        assert_eq!(cache.cached_blob(&want_b).unwrap(), None);
    }

    /// A file written within `RACY` of its hash is verified but not remembered: a write
    /// in the same tick of a coarse file-system clock would leave its stat as it was.
    #[cfg(unix)]
    #[test]
    fn a_freshly_written_file_is_hashed_every_time() {
        let d = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(d.path()).unwrap();
        let content = b"dropped straight into the store";
        let want = Expected::parse_sha256(&sha256_hex(content)).unwrap();
        let sha = want.hex().to_string();
        fs::write(cache.blob_path(&sha), content).unwrap();
        assert_eq!(rehashed(&cache, &want), Some(true));
        assert!(!cache.marker_path(&sha).exists());
        assert_eq!(rehashed(&cache, &want), Some(true));
    }
}
