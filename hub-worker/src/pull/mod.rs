//! Pulling a model revision through the hub's own HF-compatible API with the `hf-hub`
//! crate: list the commit's files, fetch only those the engine reads, verify each against
//! the digest the hub reports, and materialise a model directory from the cache. A caller
//! may start work on a weight file as its download ends, beside its verification
//! ([`PullRequest::on_download`]: the worker starts the GGUF probe child there).

pub mod cache;
pub mod evict;

use crate::engine::spec::is_engine_file;
use cache::{BlobCache, CacheError, CachePin, Expected};
use hf_hub::api::tokio::{ApiBuilder, ApiError};
use hf_hub::{Repo, RepoType};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// Why a pull failed. The message is shown on the endpoint.
#[derive(Debug, Error)]
pub enum PullError {
    #[error("invalid repo id {0:?}")]
    BadRepoId(String),
    #[error("revision {0:?} is not a 40-hex commit id")]
    BadRevision(String),
    #[error("the hub refused the pull token for {repo} (HTTP {status})")]
    Unauthorized { repo: String, status: u16 },
    #[error("{what} not found on the hub (HTTP 404)")]
    NotFound { what: String },
    #[error("the hub answered HTTP {status} for {what}")]
    Http { status: u16, what: String },
    #[error("cannot reach the hub for {what}: {detail}")]
    Transport { what: String, detail: String },
    #[error("the hub's file listing is invalid: {0}")]
    BadListing(String),
    #[error("the hub listed commit {got}, not the requested {want}")]
    CommitMismatch { want: String, got: String },
    #[error(
        "model is too big for this worker: {needed_bytes} bytes of weights, \
         {available_bytes} bytes of memory available"
    )]
    TooBig {
        needed_bytes: u64,
        available_bytes: u64,
    },
    #[error("no weight files (*.safetensors, *.gguf) in the repo; {0}")]
    NothingToServe(String),
    #[error(
        "{path} is {bytes} bytes; files besides the weights (configs, tokenizers, \
         templates) may be at most {max} bytes, as the worker reads them whole"
    )]
    SideFileTooBig { path: String, bytes: u64, max: u64 },
    #[error(transparent)]
    Cache(#[from] CacheError),
}

/// Runs blocking cache work (file locks, directory walks, renames) off the executor.
async fn blocking<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> Result<T, CacheError> + Send + 'static,
) -> Result<T, CacheError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CacheError::Io {
            context: what.to_string(),
            source: std::io::Error::other(e),
        })?
}

impl PullError {
    /// Whether retrying could help (network trouble, 5xx, a corrupt transfer).
    pub fn is_transient(&self) -> bool {
        match self {
            PullError::Transport { .. } => true,
            PullError::Http { status, .. } => *status >= 500 || *status == 429,
            PullError::Cache(CacheError::DigestMismatch { .. }) => true,
            _ => false,
        }
    }
}

/// What to pull.
#[derive(Clone)]
pub struct PullRequest {
    /// `namespace/name`.
    pub repo_id: String,
    /// A 40-hex commit id.
    pub revision: String,
    /// Bearer token for the `/resolve` downloads (repo-scoped, short-lived).
    pub token: String,
    /// Called with each weight file (an LFS file, addressed by sha256) the moment its
    /// download ends, before its digest is checked: whatever the model's load would begin
    /// with on that file may start then, beside the hashing (the GGUF probe child:
    /// `engine::load::on_download`). What it returns is kept in [`Pulled::early`], and is
    /// dropped, so stopping the work, if the digest does not match or the pull fails.
    pub on_download: Option<DownloadHook>,
}

impl std::fmt::Debug for PullRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullRequest")
            .field("repo_id", &self.repo_id)
            .field("revision", &self.revision)
            .field("token", &"<redacted>")
            .field("on_download", &self.on_download.is_some())
            .finish()
    }
}

/// See [`PullRequest::on_download`].
pub type DownloadHook = Arc<dyn Fn(&Downloaded<'_>) -> Option<Early> + Send + Sync>;

/// A weight file whose download just ended ([`PullRequest::on_download`]).
#[derive(Debug)]
pub struct Downloaded<'a> {
    /// Its path in the repo.
    pub repo_path: &'a str,
    /// The repo paths of every file this pull materialises, this one among them.
    pub files: &'a [String],
    /// The downloaded bytes, not verified yet. Open it during the call to read it later:
    /// the path is renamed (into `blob`) once the digest matches, or removed.
    pub file: &'a Path,
    /// Where the file will live once verified (`blobs/sha256/<hex>`).
    pub blob: &'a Path,
}

/// Work started by a [`DownloadHook`]; dropping the last clone stops it.
#[derive(Clone)]
pub struct Early(Arc<dyn std::any::Any + Send + Sync>);

impl Early {
    pub fn new(work: impl std::any::Any + Send + Sync) -> Early {
        Early(Arc::new(work))
    }

    /// The work, if it is a `T`.
    pub fn get<T: std::any::Any>(&self) -> Option<&T> {
        self.0.downcast_ref()
    }
}

impl std::fmt::Debug for Early {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Early(..)")
    }
}

/// A pulled model directory.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub dir: PathBuf,
    /// Keeps `dir` and its blobs from eviction while any clone lives: hold it for as long
    /// as the directory is read (a loaded model keeps it, `Model::keep_alive`).
    pub pin: CachePin,
    /// Files fetched from the hub (the rest came from the cache).
    pub downloaded: Vec<String>,
    /// Files that came from the cache and were re-hashed to verify them (the others
    /// were vouched for by their verified markers; see [`cache`]).
    pub rehashed: Vec<String>,
    /// Bytes of all materialised files.
    pub total_bytes: u64,
    /// What [`PullRequest::on_download`] started on the downloaded files: keep it until
    /// the model has loaded.
    pub early: Vec<Early>,
}

#[derive(Debug, Deserialize)]
struct RepoInfo {
    sha: Option<String>,
    #[serde(default)]
    siblings: Vec<Sibling>,
}

#[derive(Debug, Deserialize)]
struct Sibling {
    rfilename: String,
    size: Option<u64>,
    #[serde(rename = "blobId")]
    blob_id: Option<String>,
    lfs: Option<LfsInfo>,
}

#[derive(Debug, Deserialize)]
struct LfsInfo {
    sha256: String,
    size: Option<u64>,
}

/// Pulls models into a `BlobCache`.
#[derive(Debug, Clone)]
pub struct Puller {
    cache: BlobCache,
    hub_url: String,
    with_onnx: bool,
    attempts: u32,
}

fn valid_repo_id(id: &str) -> bool {
    let segs: Vec<&str> = id.split('/').collect();
    (1..=2).contains(&segs.len())
        && segs.iter().all(|s| {
            !s.is_empty()
                && s.len() <= 96
                && s != &"."
                && s != &".."
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        })
}

fn api_error(e: ApiError, repo: &str, what: &str) -> PullError {
    let status = match &e {
        ApiError::RequestError(r) => r.status(),
        ApiError::TooManyRetries(inner) => match inner.as_ref() {
            ApiError::RequestError(r) => r.status(),
            _ => None,
        },
        _ => None,
    };
    match status.map(|s| s.as_u16()) {
        Some(s @ (401 | 403)) => PullError::Unauthorized {
            repo: repo.to_string(),
            status: s,
        },
        Some(404) => PullError::NotFound {
            what: what.to_string(),
        },
        Some(s) => PullError::Http {
            status: s,
            what: what.to_string(),
        },
        None => PullError::Transport {
            what: what.to_string(),
            detail: e.to_string(),
        },
    }
}

/// Files whose bytes count as model weights (for the size check and "nothing to serve").
/// The largest file besides the weights the worker pulls (`config.json`,
/// `tokenizer.json`, `tokenizer_config.json`, `chat_template.jinja`, ...):
/// those are read whole and parsed in memory, where JSON grows several times,
/// so a tenant's 2 GB `config.json` would take the shared worker down before
/// any check on its content. The largest real tokenizer files are ~35 MB
/// (Gemma 3's `tokenizer.json`).
pub const MAX_SIDE_FILE_BYTES: u64 = 64 << 20;

fn is_weight_file(path: &str) -> bool {
    path.ends_with(".safetensors") || path.ends_with(".onnx") || path.ends_with(".gguf")
}

impl Puller {
    /// A puller for the hub at `hub_url` (no trailing slash needed).
    pub fn new(cache: BlobCache, hub_url: &str) -> Puller {
        Puller {
            cache,
            hub_url: hub_url.trim_end_matches('/').to_string(),
            with_onnx: crate::engine::select::serves_repo_onnx(),
            attempts: 3,
        }
    }

    /// The cache this puller fills.
    pub fn cache(&self) -> &BlobCache {
        &self.cache
    }

    /// Pulls `req`. `max_weight_bytes` refuses repos whose weights could not fit before
    /// anything is downloaded.
    pub async fn pull(
        &self,
        req: &PullRequest,
        max_weight_bytes: Option<u64>,
    ) -> Result<Pulled, PullError> {
        if !valid_repo_id(&req.repo_id) {
            return Err(PullError::BadRepoId(req.repo_id.clone()));
        }
        let rev = req.revision.to_ascii_lowercase();
        if rev.len() != 40 || !rev.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(PullError::BadRevision(req.revision.clone()));
        }
        // Pinned before anything is listed or verified: no eviction removes a blob this
        // pull counts on, nor its download directory.
        let (cache, repo_id, commit) = (self.cache.clone(), req.repo_id.clone(), rev.clone());
        let (pin, staging) =
            blocking("start a pull", move || cache.begin_pull(&repo_id, &commit)).await?;
        let result = self
            .pull_into(req, &rev, &staging, &pin, max_weight_bytes)
            .await;
        let _ = tokio::fs::remove_dir_all(&staging).await;
        result
    }

    async fn pull_into(
        &self,
        req: &PullRequest,
        rev: &str,
        staging: &std::path::Path,
        pin: &CachePin,
        max_weight_bytes: Option<u64>,
    ) -> Result<Pulled, PullError> {
        let api = ApiBuilder::new()
            .with_endpoint(self.hub_url.clone())
            .with_token(Some(req.token.clone()))
            .with_cache_dir(staging.to_path_buf())
            .with_progress(false)
            .build()
            .map_err(|e| api_error(e, &req.repo_id, "client setup"))?;
        let repo = api.repo(Repo::with_revision(
            req.repo_id.clone(),
            RepoType::Model,
            rev.to_string(),
        ));
        let what = format!("{}@{rev}", req.repo_id);
        let info: RepoInfo = {
            let resp = repo
                .info_request()
                .query(&[("blobs", "true")])
                .send()
                .await
                .map_err(|e| api_error(ApiError::RequestError(e), &req.repo_id, &what))?;
            let resp = resp
                .error_for_status()
                .map_err(|e| api_error(ApiError::RequestError(e), &req.repo_id, &what))?;
            resp.json()
                .await
                .map_err(|e| PullError::BadListing(e.to_string()))?
        };
        if let Some(sha) = &info.sha {
            if !sha.eq_ignore_ascii_case(rev) {
                return Err(PullError::CommitMismatch {
                    want: rev.to_string(),
                    got: sha.clone(),
                });
            }
        }

        // Choose and check the files before downloading anything. ONNX graphs are fetched
        // only for repos without safetensors: the ort engine derives its own (fused,
        // verified) graph from safetensors.
        let has_safetensors = info
            .siblings
            .iter()
            .any(|s| !s.rfilename.contains('/') && s.rfilename.ends_with(".safetensors"));
        let with_onnx = self.with_onnx && !has_safetensors;
        let mut wanted: Vec<(String, Expected, u64)> = Vec::new();
        for s in &info.siblings {
            if !is_engine_file(&s.rfilename, with_onnx) {
                continue;
            }
            if !cache::is_safe_repo_path(&s.rfilename) {
                return Err(CacheError::UnsafePath(s.rfilename.clone()).into());
            }
            let (expected, size) = match (&s.lfs, &s.blob_id) {
                (Some(lfs), _) => (
                    Expected::parse_sha256(&lfs.sha256)?,
                    lfs.size.or(s.size).unwrap_or(0),
                ),
                (None, Some(oid)) => (Expected::parse_git_sha1(oid)?, s.size.unwrap_or(0)),
                (None, None) => {
                    return Err(PullError::BadListing(format!(
                        "{} has neither an lfs sha256 nor a blobId",
                        s.rfilename
                    )))
                }
            };
            if !is_weight_file(&s.rfilename) && size > MAX_SIDE_FILE_BYTES {
                return Err(PullError::SideFileTooBig {
                    path: s.rfilename.clone(),
                    bytes: size,
                    max: MAX_SIDE_FILE_BYTES,
                });
            }
            wanted.push((s.rfilename.clone(), expected, size));
        }
        let weight_bytes: u64 = wanted
            .iter()
            .filter(|(p, _, _)| is_weight_file(p))
            .map(|(_, _, s)| *s)
            .sum();
        if !wanted.iter().any(|(p, _, _)| is_weight_file(p)) {
            let listed: Vec<&str> = info
                .siblings
                .iter()
                .map(|s| s.rfilename.as_str())
                .filter(|p| !p.contains('/'))
                .take(20)
                .collect();
            let pickle = listed
                .iter()
                .find(|p| p.ends_with(".bin") || p.ends_with(".pt") || p.ends_with(".pth"));
            return Err(PullError::NothingToServe(match pickle {
                Some(p) => format!(
                    "only pickle weights ({p}): the worker never unpickles; upload model.safetensors"
                ),
                None => format!("files at the top level: {listed:?}"),
            }));
        }
        if let Some(max) = max_weight_bytes {
            if weight_bytes > max {
                return Err(PullError::TooBig {
                    needed_bytes: weight_bytes,
                    available_bytes: max,
                });
            }
        }

        // From here on no eviction removes these files' blobs (cached or inserted later).
        let (cache, pin2) = (self.cache.clone(), pin.clone());
        let digests: Vec<(Expected, u64)> =
            wanted.iter().map(|(_, e, s)| (e.clone(), *s)).collect();
        blocking("pin the files", move || cache.pin_files(&pin2, &digests)).await?;

        // What the cache holds (verified), and what must be downloaded.
        let mut files: Vec<(String, Option<String>)> = Vec::with_capacity(wanted.len());
        let mut missing = Vec::new();
        let mut rehashed = Vec::new();
        let mut total_bytes = 0;
        let mut need = 0u64;
        for (path, expected, size) in wanted {
            // Re-hashing a cached blob is heavy: off the async executor.
            let (cache, want) = (self.cache.clone(), expected.clone());
            let cached = blocking(&format!("verify the cached {path}"), move || {
                cache.cached_blob(&want)
            })
            .await?;
            total_bytes += size;
            match cached {
                Some(c) => {
                    if c.rehashed {
                        rehashed.push(path.clone());
                    }
                    files.push((path, Some(c.sha256)));
                }
                None => {
                    need += size;
                    missing.push((files.len(), expected));
                    files.push((path, None));
                }
            }
        }

        // Room for the downloads before the first byte is written: evicting what no
        // loaded or loading model uses, or failing with the reason.
        let what = format!("{}@{rev}", req.repo_id);
        if !missing.is_empty() {
            let (cache, pin2, what2) = (self.cache.clone(), pin.clone(), what.clone());
            blocking("make room in the cache", move || {
                cache.make_room(&pin2, &what2)
            })
            .await?;
        }

        let mut downloaded = Vec::new();
        let mut early = Vec::new();
        let hook = req.on_download.as_ref().map(|hook| {
            let paths: Vec<String> = files.iter().map(|(p, _)| p.clone()).collect();
            (hook.clone(), Arc::new(paths))
        });
        for (i, expected) in missing {
            let path = files[i].0.clone();
            let (sha, started) = self
                .fetch(&repo, &req.repo_id, &path, &expected, hook.clone())
                .await?;
            downloaded.push(path);
            files[i].1 = Some(sha);
            early.extend(started);
        }
        let files: Vec<(String, String)> = files
            .into_iter()
            .map(|(p, sha)| (p, sha.expect("cached or fetched above")))
            .collect();
        let (cache, repo_id, commit) = (self.cache.clone(), req.repo_id.clone(), rev.to_string());
        let n_files = files.len();
        let dir = blocking("materialize the model directory", move || {
            cache.materialize(&repo_id, &commit, &files)
        })
        .await?;
        if !downloaded.is_empty() {
            let cache = self.cache.clone();
            if let Err(e) = blocking("measure the cache", move || cache.refresh_metrics()).await {
                tracing::debug!(error = %e, "cache: measuring after a pull failed");
            }
        }
        tracing::info!(
            repo.id = %req.repo_id,
            revision = %rev,
            files = n_files,
            downloaded = downloaded.len(),
            downloaded_bytes = need,
            rehashed = rehashed.len(),
            bytes = total_bytes,
            "model pulled"
        );
        Ok(Pulled {
            dir,
            pin: pin.clone(),
            downloaded,
            rehashed,
            total_bytes,
            early,
        })
    }

    /// Downloads one file with `hf-hub` and moves it into the cache, retrying transient
    /// failures (including a transfer that does not match its digest). A weight file is
    /// shown to `hook` (with the repo's file list) between its download and its check.
    async fn fetch(
        &self,
        repo: &hf_hub::api::tokio::ApiRepo,
        repo_id: &str,
        path: &str,
        expected: &Expected,
        hook: Option<(DownloadHook, Arc<Vec<String>>)>,
    ) -> Result<(String, Option<Early>), PullError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = async {
                let local = repo
                    .download(path)
                    .await
                    .map_err(|e| api_error(e, repo_id, path))?;
                // hf-hub leaves a snapshot symlink pointing at its blob (named by ETag).
                let blob = tokio::fs::canonicalize(&local).await.map_err(|e| {
                    PullError::Cache(CacheError::Io {
                        context: format!("resolve download of {path}"),
                        source: e,
                    })
                })?;
                if !blob.starts_with(self.cache.root().join("tmp")) {
                    return Err(CacheError::UnsafePath(blob.display().to_string()).into());
                }
                // hf-hub names the blob by the `/resolve` ETag: it must be the digest the
                // listing promised (sha256 for LFS files, git blob id otherwise).
                let etag = blob
                    .file_name()
                    .map(|n| n.to_string_lossy().to_ascii_lowercase())
                    .unwrap_or_default();
                if etag != expected.hex() {
                    let _ = tokio::fs::remove_file(&blob).await;
                    return Err(PullError::BadListing(format!(
                        "{path}: /resolve ETag {etag:?} does not match the listed digest {}",
                        expected.hex()
                    )));
                }
                let cache = self.cache.clone();
                let expected = expected.clone();
                let name = path.to_string();
                let hook = hook.clone().filter(|_| is_weight_file(path));
                let inserted = tokio::task::spawn_blocking(move || {
                    // Started before the hashing, so beside it; dropped with the error
                    // if the bytes are not the file's.
                    let early = match (&hook, &expected) {
                        (Some((hook, files)), Expected::Sha256(hex)) => hook(&Downloaded {
                            repo_path: &name,
                            files,
                            file: &blob,
                            blob: &cache.blob_path(hex),
                        }),
                        _ => None,
                    };
                    cache
                        .insert_file(&blob, &expected, &name)
                        .map(|sha| (sha, early))
                })
                .await
                .map_err(|e| PullError::Transport {
                    what: path.to_string(),
                    detail: e.to_string(),
                })??;
                let _ = tokio::fs::remove_file(&local).await;
                Ok::<_, PullError>(inserted)
            }
            .await;
            match result {
                Ok(done) => return Ok(done),
                Err(e) if e.is_transient() && attempt < self.attempts => {
                    tracing::warn!(repo.id = %repo_id, file = %path, attempt, error = %e, "download failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * (1 << attempt))).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids() {
        for ok in ["ns/name", "name", "a-b/c_d.e"] {
            assert!(valid_repo_id(ok), "{ok}");
        }
        for bad in ["", "a/b/c", "../x", "ns/..", "a b/c", "ns/", "/x"] {
            assert!(!valid_repo_id(bad), "{bad}");
        }
    }
}
