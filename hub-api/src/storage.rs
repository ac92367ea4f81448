//! Object storage of file bytes, addressed by sha256. [`StorageKey`] is the only
//! place object paths are made. Writes go to a staging key while being hashed,
//! are verified (size and digest), and only then become visible at their final,
//! content-addressed key. Reads stream; nothing here holds a whole file in memory.
//!
//! Every public operation is written once, over [`Backend`], the one place where
//! the two kinds of store differ: the local backend writes and reads files
//! directly (fsync before the rename that makes a blob final, large read
//! chunks, the disk reserve); other backends go through `object_store`
//! (S3/MinIO, memory for tests). Every write, whole objects and multipart parts
//! alike, is the one streaming loop of [`Storage::write_stream`].

use crate::diskspace::{Guard, Reserve};
use crate::domain::Sha256;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as ObjPath;
use object_store::{GetOptions, GetRange, ObjectStore, PutPayload, WriteMultipart};
use sha2::Digest;
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use uuid::Uuid;

/// Chunk size for streaming reads from local files.
const READ_CHUNK: usize = 512 * 1024;

/// Every object path the hub writes.
#[derive(Debug, Clone)]
pub enum StorageKey {
    /// Verified content, by sha256: `blobs/sha256/ab/cd/<hex>`.
    Blob(Sha256),
    /// A write in progress, not yet verified.
    Staging(Uuid),
    /// One part of a multipart LFS upload.
    UploadPart { session: Uuid, part: u32 },
    /// A validated Xet xorb (§5.6 stored form), by its hash string:
    /// `xorbs/default/<hash>`. The caller parses the hash (`hub_xet::hash`).
    Xorb(String),
    /// How to reassemble a Xet-stored blob from xorbs (`hub_xet::recipe`),
    /// by the blob's sha256: `xet/recipes/ab/cd/<hex>`. Such a blob has no
    /// `Blob` object; reads fall back to the recipe.
    XetRecipe(Sha256),
    /// Data the hub derives from a repo's files and can make again: the
    /// dataset viewer's Parquet files (`viewer`), `viewer/<rest>`. The caller
    /// makes `rest` from ids only (never from names a tenant chose).
    Derived(String),
}

impl StorageKey {
    pub fn path(&self) -> ObjPath {
        match self {
            StorageKey::Blob(h) => {
                let s = h.as_str();
                ObjPath::from(format!("blobs/sha256/{}/{}/{}", &s[0..2], &s[2..4], s))
            }
            StorageKey::Staging(id) => ObjPath::from(format!("staging/{id}")),
            StorageKey::UploadPart { session, part } => {
                ObjPath::from(format!("uploads/{session}/{part:05}"))
            }
            StorageKey::Xorb(h) => ObjPath::from(format!("xorbs/default/{h}")),
            StorageKey::XetRecipe(h) => {
                let s = h.as_str();
                ObjPath::from(format!("xet/recipes/{}/{}/{}", &s[0..2], &s[2..4], s))
            }
            StorageKey::Derived(rest) => ObjPath::from(format!("viewer/{rest}")),
        }
    }
}

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    #[error("local storage: {0}")]
    Io(#[from] std::io::Error),
    #[error("size mismatch: expected {expected} bytes, received {actual}")]
    SizeMismatch { expected: u64, actual: u64 },
    #[error("sha256 mismatch: expected {expected}, received content hashes to {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("body exceeds the declared size of {0} bytes")]
    TooLong(u64),
    #[error("request body: {0}")]
    Body(String),
    #[error(
        "part {part} of the upload is missing from storage or has the wrong size; upload it again"
    )]
    PartMissing { part: u32 },
}

impl StorageError {
    /// A blocking task that panicked or was cancelled.
    fn join(e: tokio::task::JoinError) -> Self {
        StorageError::Io(std::io::Error::other(e))
    }
}

impl From<StorageError> for crate::error::ApiError {
    fn from(e: StorageError) -> Self {
        use crate::error::ApiError;
        match e {
            StorageError::Store(object_store::Error::NotFound { .. }) => {
                ApiError::NotFound("object")
            }
            StorageError::Store(e) => ApiError::StorageUnavailable(e),
            StorageError::Io(e) if e.kind() == std::io::ErrorKind::StorageFull => {
                ApiError::InsufficientStorage(format!("storage is full ({e}); retry later"))
            }
            StorageError::Io(e) => ApiError::internal(e),
            StorageError::SizeMismatch { .. }
            | StorageError::DigestMismatch { .. }
            | StorageError::TooLong(_) => ApiError::DigestMismatch(e.to_string()),
            StorageError::Body(m) => crate::routes::body::BodyError::Stream(m).into(),
            StorageError::PartMissing { part } => ApiError::UploadPartMissing(part),
        }
    }
}

/// What was written: digests and size of the bytes received.
#[derive(Debug, Clone)]
pub struct Written {
    pub sha256: Sha256,
    pub size: u64,
    /// The git blob id, when asked for (needs the size up front).
    pub git_oid: Option<String>,
}

/// Bytes verified in a staging object, not yet at their final key. Either
/// [`Storage::promote`] or [`Storage::discard`] it; a staged object that is
/// dropped is removed by the sweeper (`staging/` older than its grace).
#[derive(Debug)]
#[must_use = "promote or discard a staged object"]
pub struct Staged {
    key: StorageKey,
    pub written: Written,
}

/// The hub's object storage.
#[derive(Clone)]
pub struct Storage {
    backend: Backend,
    describe: String,
    /// The store's own multipart upload, where it has one (S3, memory).
    native: Option<Native>,
}

/// An object store's own multipart upload (S3's CreateMultipartUpload,
/// UploadPart, CompleteMultipartUpload), for multipart LFS uploads: each part
/// goes into the store once and the store joins them, so completing an upload
/// moves none of its bytes through the hub.
#[derive(Clone)]
struct Native {
    store: Arc<dyn MultipartStore>,
    /// The `s3://bucket/prefix` prefix: `PrefixStore` passes no multipart
    /// calls through, so these paths carry it themselves.
    prefix: Option<ObjPath>,
}

impl Native {
    fn path(&self, key: &StorageKey) -> ObjPath {
        match &self.prefix {
            None => key.path(),
            Some(p) => p.parts().chain(key.path().parts()).collect(),
        }
    }
}

/// A part read whole for a native multipart upload, with its digests.
pub struct NativePart {
    chunks: Vec<Bytes>,
    /// The md5 hex ETag the client echoes at completion.
    pub etag: String,
    /// The running SHA-256 after this part, when it was resumed from its
    /// predecessor's state.
    pub sha: Option<crate::sha256_state::Sha256State>,
}

impl Storage {
    /// Opens storage from a URL: a directory path or `file://`, `s3://bucket/prefix`, `memory://`.
    pub fn from_url(url: &str) -> anyhow::Result<Self> {
        if url == "memory://" || url == "memory:" {
            // Not its multipart upload: object_store's in-memory one
            // cannot take parts out of order.
            return Ok(Self::object_store(
                Arc::new(object_store::memory::InMemory::new()),
                "memory://",
            ));
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let mut b = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
            if let Ok(ep) =
                std::env::var("AWS_ENDPOINT_URL").or_else(|_| std::env::var("HUB_S3_ENDPOINT"))
            {
                b = b
                    .with_endpoint(ep.clone())
                    .with_allow_http(ep.starts_with("http://"));
                b = b.with_virtual_hosted_style_request(false);
            }
            let s3 = Arc::new(b.build()?);
            let prefix = prefix.trim_matches('/');
            let whole: Arc<dyn ObjectStore> = s3.clone();
            let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
                whole
            } else {
                Arc::new(object_store::prefix::PrefixStore::new(
                    whole,
                    prefix.to_string(),
                ))
            };
            let mut s = Self::object_store(store, &format!("s3://{bucket}/{prefix}"));
            s.native = Some(Native {
                store: s3,
                prefix: (!prefix.is_empty()).then(|| ObjPath::from(prefix)),
            });
            return Ok(s);
        }
        let path = url.strip_prefix("file://").unwrap_or(url);
        if url.contains("://") && !url.starts_with("file://") {
            anyhow::bail!(
                "HUB_STORAGE_URL {url:?}: use a directory path, file://, s3:// or memory://"
            );
        }
        Self::local(Path::new(path))
    }

    /// A local-directory store rooted at `root` (created if missing).
    pub fn local(root: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(root)?;
        let root = root.canonicalize()?;
        Ok(Self {
            backend: Backend::Local {
                store: Arc::new(object_store::local::LocalFileSystem::new_with_prefix(
                    &root,
                )?),
                root: root.clone(),
                reserve: None,
            },
            describe: format!("file://{}", root.display()),
            native: None,
        })
    }

    /// Storage over any `object_store` (S3, memory, or a local filesystem
    /// reached through `object_store` rather than directly).
    pub fn object_store(store: Arc<dyn ObjectStore>, describe: &str) -> Self {
        Self {
            backend: Backend::Store(store),
            describe: describe.to_string(),
            native: None,
        }
    }

    /// Storage over an object store whose own multipart upload is `native`
    /// (the same store: S3, or a wrapper around one in tests).
    pub fn object_store_with_native(
        store: Arc<dyn ObjectStore>,
        native: Arc<dyn MultipartStore>,
        describe: &str,
    ) -> Self {
        let mut s = Self::object_store(store, describe);
        s.native = Some(Native {
            store: native,
            prefix: None,
        });
        s
    }

    /// Keeps `reserve` free: local writes that would eat into it fail with
    /// `StorageFull` (507 `insufficient_storage`). Other backends have no disk
    /// of ours to keep.
    pub fn with_reserve(mut self, reserve: Reserve) -> Self {
        if let Backend::Local { reserve: r, .. } = &mut self.backend {
            *r = Some(reserve);
        }
        self
    }

    /// The local store's root directory (None for S3 and memory).
    pub fn local_root(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Local { root, .. } => Some(root),
            Backend::Store(_) => None,
        }
    }

    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// Listing, `head` and raw puts: the same `object_store` calls on every backend.
    fn store(&self) -> &Arc<dyn ObjectStore> {
        self.backend.store()
    }

    /// Checks the store answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), StorageError> {
        let probe = ObjPath::from("blobs");
        match self.store().list_with_delimiter(Some(&probe)).await {
            Ok(_) => Ok(()),
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether verified content with this digest is stored (whole, or as a
    /// Xet file's recipe).
    pub async fn blob_exists(&self, sha: &Sha256) -> Result<bool, StorageError> {
        for key in [
            StorageKey::Blob(sha.clone()),
            StorageKey::XetRecipe(sha.clone()),
        ] {
            match self.store().head(&key.path()).await {
                Ok(_) => return Ok(true),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(false)
    }

    /// Streams `body` into a staging key while hashing it and verifies it
    /// against `expected_sha`/`expected_size` when given. Nothing is visible at
    /// a final key yet; a body that does not verify leaves nothing behind.
    pub async fn stage<S, E>(
        &self,
        body: S,
        expected_size: Option<u64>,
        expected_sha: Option<&Sha256>,
        want_git_oid: bool,
    ) -> Result<Staged, StorageError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let key = StorageKey::Staging(Uuid::new_v4());
        let digests = ContentDigests::new(want_git_oid.then_some(()).and(expected_size));
        let ((sha256, git_oid), size) = self
            .write_stream(&key, body, expected_size, digests)
            .await?;
        if let Some(exp) = expected_sha {
            if exp != &sha256 {
                self.delete(&key).await;
                return Err(StorageError::DigestMismatch {
                    expected: exp.to_string(),
                    actual: sha256.to_string(),
                });
            }
        }
        Ok(Staged {
            key,
            written: Written {
                sha256,
                size,
                git_oid,
            },
        })
    }

    /// Makes staged bytes final at their content address. Callers that track
    /// unreferenced objects record the object first (`sweeper::store`).
    pub async fn promote(&self, staged: Staged) -> Result<Written, StorageError> {
        let final_key = StorageKey::Blob(staged.written.sha256.clone());
        match self.backend.promote(&staged.key, &final_key).await {
            Ok(()) => Ok(staged.written),
            Err(e) => {
                self.delete(&staged.key).await;
                Err(e)
            }
        }
    }

    /// Drops staged bytes.
    pub async fn discard(&self, staged: Staged) {
        self.delete(&staged.key).await;
    }

    /// Stages and promotes in one step, for objects nothing needs to track
    /// (tests, tools). Request paths go through `sweeper::store`.
    pub async fn write_blob<S, E>(
        &self,
        body: S,
        expected_size: Option<u64>,
        expected_sha: Option<&Sha256>,
        want_git_oid: bool,
    ) -> Result<Written, StorageError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let staged = self
            .stage(body, expected_size, expected_sha, want_git_oid)
            .await?;
        self.promote(staged).await
    }

    /// Writes in-memory bytes as a verified blob (with its git blob id).
    pub async fn write_bytes(&self, bytes: Bytes) -> Result<Written, StorageError> {
        let staged = self.stage_bytes(bytes).await?;
        self.promote(staged).await
    }

    /// Stages in-memory bytes (small files of a commit), with their git blob id.
    pub async fn stage_bytes(&self, bytes: Bytes) -> Result<Staged, StorageError> {
        let size = bytes.len() as u64;
        let stream = futures::stream::once(async move { Ok::<_, std::io::Error>(bytes) });
        self.stage(Box::pin(stream), Some(size), None, true).await
    }

    /// The digests of in-memory bytes (sha256 and git blob id), computed on
    /// a blocking thread: what [`Storage::stage_bytes`] would record.
    pub async fn digest_bytes(items: Vec<Bytes>) -> Result<Vec<Written>, StorageError> {
        tokio::task::spawn_blocking(move || {
            items
                .iter()
                .map(|b| {
                    let mut d = ContentDigests::new(Some(b.len() as u64));
                    d.update(b);
                    let (sha256, git_oid) = d.finish();
                    Written {
                        sha256,
                        size: b.len() as u64,
                        git_oid,
                    }
                })
                .collect()
        })
        .await
        .map_err(StorageError::join)
    }

    /// Writes many small in-memory objects (`(digest, bytes)`, digests from
    /// [`Storage::digest_bytes`]) where [`Storage::promote_blobs`] can make
    /// them final. Nothing is visible at a final key yet, so this may run
    /// while the caller records the objects (`sweeper::store_many`). Locally
    /// each object is written to a staging file. A batch of at least
    /// [`SYNCFS_FROM`] objects is written by a few threads without an fsync
    /// each, then made durable by one `syncfs` of the store's file system
    /// (Linux); a smaller one fsyncs each file, up to [`PUT_CONCURRENCY`] at
    /// once (concurrent fsyncs share the file system's journal commits).
    /// Other stores keep the bytes for the puts. On failure every write has
    /// finished and no staging file is left.
    pub async fn stage_blobs(
        &self,
        objects: Vec<(Sha256, Bytes)>,
    ) -> Result<StagedBlobs, StorageError> {
        let Backend::Local { root, reserve, .. } = &self.backend else {
            return Ok(StagedBlobs(
                objects
                    .into_iter()
                    .map(|(sha, bytes)| StagedBlob::Bytes(sha, bytes))
                    .collect(),
                false,
            ));
        };
        if let Some(r) = reserve {
            r.check(objects.iter().map(|(_, b)| b.len() as u64).sum())?;
        }
        std::fs::create_dir_all(root.join("staging"))?;
        if bulk_sync(objects.len()) {
            return stage_bulk(root, objects).await;
        }
        let staged = futures::stream::iter(objects)
            .map(|(sha, bytes)| {
                let root = root.clone();
                blocking(move || stage_small_blob(&root, &sha, &bytes))
            })
            .buffer_unordered(PUT_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        let mut out = Vec::with_capacity(staged.len());
        let mut failure = None;
        for s in staged {
            match s {
                Ok(s) => out.push(s),
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        let staged = StagedBlobs(out, false);
        match failure {
            Some(e) => {
                self.discard_blobs(staged).await;
                Err(e)
            }
            None => Ok(staged),
        }
    }

    /// Makes staged objects final at their keys: locally renamed (up to
    /// [`PUT_CONCURRENCY`] at once), then each folder that got a new name
    /// fsynced once, or for a batch staged with one `syncfs`, renamed by a
    /// few threads and made durable by one more; other stores put each
    /// object (a put is atomic). No key ever holds part of an object. On
    /// failure every write has finished and no staging file is left, so the
    /// caller can release what it recorded.
    pub async fn promote_blobs(&self, staged: StagedBlobs) -> Result<(), StorageError> {
        if staged.1 {
            if let Backend::Local { root, .. } = &self.backend {
                return promote_bulk(root, staged.0).await;
            }
        }
        let done = futures::stream::iter(staged.0)
            .map(|s| async move {
                match s {
                    StagedBlob::File { temp, dest } => {
                        blocking(move || {
                            let dir = dest
                                .parent()
                                .expect("blob keys have a parent")
                                .to_path_buf();
                            // Identical content may already be there: rename
                            // replaces it atomically.
                            let renamed = std::fs::create_dir_all(&dir)
                                .and_then(|()| std::fs::rename(&temp, &dest));
                            if let Err(e) = renamed {
                                let _ = std::fs::remove_file(&temp);
                                return Err(e);
                            }
                            Ok(Some(dir))
                        })
                        .await
                    }
                    StagedBlob::Bytes(sha, bytes) => {
                        self.store()
                            .put(&StorageKey::Blob(sha).path(), PutPayload::from_bytes(bytes))
                            .await?;
                        Ok(None)
                    }
                }
            })
            .buffer_unordered(PUT_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        let mut renamed = std::collections::BTreeSet::new();
        let mut failure = None;
        for d in done {
            match d {
                Ok(Some(dir)) => {
                    renamed.insert(dir);
                }
                Ok(None) => {}
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        let synced = futures::stream::iter(renamed)
            .map(|dir| blocking(move || std::fs::File::open(dir)?.sync_all()))
            .buffer_unordered(PUT_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        match failure.or_else(|| synced.into_iter().find_map(Result::err)) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Drops staged objects (their staging files).
    pub async fn discard_blobs(&self, staged: StagedBlobs) {
        discard_staged(staged).await
    }

    /// Stores one multipart part under its session (not content-addressed: parts
    /// are only verified as a whole at completion). The body must be exactly
    /// `size` bytes: a longer body is cut off as soon as it passes `size`, and
    /// a wrong-sized body leaves nothing behind. A part replaces the earlier
    /// upload of the same number atomically. Returns the md5 hex ETag.
    pub async fn write_part<S, E>(
        &self,
        session: Uuid,
        part: u32,
        body: S,
        size: u64,
    ) -> Result<String, StorageError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let key = StorageKey::UploadPart { session, part };
        let (etag, _) = self
            .write_stream(&key, body, Some(size), PartEtag::default())
            .await?;
        Ok(etag)
    }

    /// The one streaming write: `body` goes to `key` while a blocking thread
    /// computes `digests` over it (and, for local storage, writes and fsyncs
    /// the file, checking the disk reserve as it grows). With `size`, a body
    /// is cut off as soon as it passes `size` ([`StorageError::TooLong`]) and a
    /// shorter one is refused ([`StorageError::SizeMismatch`]); the reserve is
    /// checked for `size` up front. Nothing appears at `key` unless the whole
    /// write is accepted, and an earlier object at `key` is replaced
    /// atomically (local: a temporary name renamed; object stores: a
    /// multipart upload completed or aborted).
    async fn write_stream<S, E, D>(
        &self,
        key: &StorageKey,
        mut body: S,
        size: Option<u64>,
        digests: D,
    ) -> Result<(D::Output, u64), StorageError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
        D: Digests,
    {
        let mut sink = self.backend.open(key, size).await?;
        // One blocking thread hashes (and writes local files); the async side
        // only moves chunks.
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(32);
        let file = sink.take_file();
        let worker = tokio::task::spawn_blocking(move || digest_and_write(rx, digests, file));
        let mut received = 0u64;
        let mut failure: Option<StorageError> = None;
        while let Some(next) = body.next().await {
            let chunk = match next {
                Ok(c) => c,
                Err(e) => {
                    failure = Some(StorageError::Body(e.to_string()));
                    break;
                }
            };
            received += chunk.len() as u64;
            if let Some(max) = size {
                if received > max {
                    failure = Some(StorageError::TooLong(max));
                    break;
                }
            }
            if let Err(e) = sink.upload(&chunk).await {
                failure = Some(e);
                break;
            }
            if tx.send(chunk).await.is_err() {
                break; // the thread failed: its error follows
            }
        }
        drop(tx);
        let hashed = worker.await.map_err(StorageError::join).and_then(|r| r);
        let outcome = match (failure, hashed) {
            (Some(f), _) => Err(f),
            (None, Err(e)) => Err(e),
            (None, Ok((_, got))) if size.is_some_and(|want| want != got) => {
                Err(StorageError::SizeMismatch {
                    expected: size.unwrap_or_default(),
                    actual: got,
                })
            }
            (None, Ok(done)) => Ok(done),
        };
        match outcome {
            Ok(done) => {
                sink.commit().await?;
                Ok(done)
            }
            Err(e) => {
                sink.abort().await;
                Err(e)
            }
        }
    }

    /// Best-effort delete (staging and part cleanup).
    pub async fn delete(&self, key: &StorageKey) {
        if let Err(e) = self.backend.remove(key).await {
            tracing::warn!(key = %key.path(), error = %e, "storage delete failed");
        }
    }

    /// Joins parts `1..=sizes.len()` of a session (with the sizes they were
    /// recorded with) into a staged, verified object. The parts stay where they
    /// are: a completion that does not verify leaves the upload as it was, so
    /// a re-uploaded part and a second completion can succeed. A part missing
    /// from storage (or of the wrong size) is named in the error.
    pub async fn stage_parts(
        &self,
        session: Uuid,
        sizes: &[u64],
        expected_size: u64,
        expected_sha: &Sha256,
    ) -> Result<Staged, StorageError> {
        for (i, want) in sizes.iter().enumerate() {
            let part = i as u32 + 1;
            let have = self
                .backend
                .size(&StorageKey::UploadPart { session, part })
                .await?;
            if have != Some(*want) {
                return Err(StorageError::PartMissing { part });
            }
        }
        let backend = self.backend.clone();
        let stream = futures::stream::iter(1..=sizes.len() as u32)
            .then(move |part| {
                let backend = backend.clone();
                async move {
                    backend
                        .read(&StorageKey::UploadPart { session, part }, None)
                        .await
                }
            })
            .try_flatten();
        self.stage(
            Box::pin(stream),
            Some(expected_size),
            Some(expected_sha),
            false,
        )
        .await
    }

    /// Whether multipart LFS uploads go into the store's own multipart
    /// upload ([`Storage::begin_parts`]) rather than one object per part.
    pub fn native_multipart(&self) -> bool {
        self.native.is_some()
    }

    fn native(&self) -> Result<&Native, StorageError> {
        self.native
            .as_ref()
            .ok_or(StorageError::Store(object_store::Error::NotImplemented))
    }

    /// Starts the store's multipart upload of a session's joined object (at
    /// the staging key named by the session); returns the upload's id.
    pub async fn begin_parts(&self, session: Uuid) -> Result<String, StorageError> {
        let n = self.native()?;
        Ok(n.store
            .create_multipart(&n.path(&StorageKey::Staging(session)))
            .await?)
    }

    /// Reads one part of a native multipart upload whole (it is sent with its
    /// length: the caller reserves `size` bytes of upload memory first) and
    /// computes its md5 ETag and, from `resume`, the running SHA-256, on a
    /// blocking thread. The body must be exactly `size` bytes, as for
    /// [`Storage::write_part`].
    pub async fn read_native_part<S, E>(
        mut body: S,
        size: u64,
        resume: Option<crate::sha256_state::Sha256State>,
    ) -> Result<NativePart, StorageError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let mut chunks = Vec::new();
        let mut received = 0u64;
        while let Some(next) = body.next().await {
            let chunk = next.map_err(|e| StorageError::Body(e.to_string()))?;
            received += chunk.len() as u64;
            if received > size {
                return Err(StorageError::TooLong(size));
            }
            chunks.push(chunk);
        }
        if received != size {
            return Err(StorageError::SizeMismatch {
                expected: size,
                actual: received,
            });
        }
        blocking(move || {
            let mut md5 = <md5::Md5 as md5::Digest>::new();
            let mut sha = resume;
            for c in &chunks {
                md5::Digest::update(&mut md5, c);
                if let Some(h) = sha.as_mut() {
                    h.update(c);
                }
            }
            Ok(NativePart {
                etag: hex::encode(md5::Digest::finalize(md5)),
                chunks,
                sha,
            })
        })
        .await
    }

    /// Sends a part read by [`Storage::read_native_part`] as part `part`
    /// (from 1) of the session's upload; returns the store's ETag for it.
    pub async fn send_native_part(
        &self,
        session: Uuid,
        upload: &str,
        part: u32,
        read: &NativePart,
    ) -> Result<String, StorageError> {
        let n = self.native()?;
        let payload: PutPayload = read.chunks.iter().cloned().collect();
        let id = n
            .store
            .put_part(
                &n.path(&StorageKey::Staging(session)),
                &upload.to_string(),
                part as usize - 1,
                payload,
            )
            .await?;
        Ok(id.content_id)
    }

    /// Has the store join a session's parts (their store ETags, in order)
    /// into its staging object. Nothing is read or copied through the hub.
    pub async fn complete_parts(
        &self,
        session: Uuid,
        upload: &str,
        store_etags: Vec<String>,
    ) -> Result<(), StorageError> {
        let n = self.native()?;
        let parts = store_etags
            .into_iter()
            .map(|content_id| PartId { content_id })
            .collect();
        n.store
            .complete_multipart(
                &n.path(&StorageKey::Staging(session)),
                &upload.to_string(),
                parts,
            )
            .await?;
        Ok(())
    }

    /// Abandons a session's native upload (its parts are dropped by the store).
    pub async fn abort_parts(&self, session: Uuid, upload: &str) {
        let Ok(n) = self.native() else { return };
        if let Err(e) = n
            .store
            .abort_multipart(&n.path(&StorageKey::Staging(session)), &upload.to_string())
            .await
        {
            tracing::warn!(upload.session = %session, error = %e, "aborting a multipart upload failed");
        }
    }

    /// The joined object of a completed native upload, verified as `size`
    /// bytes hashing to `sha`. With `digest_known` (every part was hashed in
    /// order as it came, and nothing can have replaced one since), only its
    /// size is checked: nothing is read. Otherwise it is read and hashed, and
    /// removed if it does not verify.
    pub async fn staged_parts(
        &self,
        session: Uuid,
        size: u64,
        sha: &Sha256,
        digest_known: bool,
    ) -> Result<Staged, StorageError> {
        let key = StorageKey::Staging(session);
        let have = self.backend.size(&key).await?;
        if have != Some(size) {
            if have.is_some() {
                self.delete(&key).await;
            }
            return Err(StorageError::SizeMismatch {
                expected: size,
                actual: have.unwrap_or(0),
            });
        }
        if !digest_known {
            // Hashed on a blocking thread, as every write is (`write_stream`).
            let mut stream = self.backend.read(&key, None).await?;
            let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(32);
            let hasher = tokio::task::spawn_blocking(move || {
                digest_and_write(rx, ContentDigests::new(None), None)
            });
            let mut failure = None;
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(c) => {
                        if tx.send(c).await.is_err() {
                            break; // the thread failed: its error follows
                        }
                    }
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            drop(tx);
            let hashed = hasher.await.map_err(StorageError::join)?;
            if let Some(e) = failure {
                return Err(e);
            }
            let ((actual, _), _) = hashed?;
            if &actual != sha {
                self.delete(&key).await;
                return Err(StorageError::DigestMismatch {
                    expected: sha.to_string(),
                    actual: actual.to_string(),
                });
            }
        }
        Ok(Staged {
            key,
            written: Written {
                sha256: sha.clone(),
                size,
                git_oid: None,
            },
        })
    }

    /// The size of a session's joined object (None: not joined).
    pub async fn parts_object_size(&self, session: Uuid) -> Result<Option<u64>, StorageError> {
        self.backend.size(&StorageKey::Staging(session)).await
    }

    /// Removes a session's joined object, if any (a reset or an expired session).
    pub async fn discard_parts_object(&self, session: Uuid) {
        self.delete(&StorageKey::Staging(session)).await;
    }

    /// Deletes one part of a session.
    pub async fn delete_part(&self, session: Uuid, part: u32) {
        self.delete(&StorageKey::UploadPart { session, part }).await;
    }

    /// Deletes every object stored under a session's parts prefix (parts and
    /// any temporary part files).
    pub async fn delete_parts(&self, session: Uuid) {
        let prefix = format!("uploads/{session}");
        let found: Vec<_> = match self
            .store()
            .list(Some(&ObjPath::from(prefix.as_str())))
            .try_collect()
            .await
        {
            Ok(v) => v,
            Err(object_store::Error::NotFound { .. }) => vec![],
            Err(e) => {
                tracing::warn!(upload.session = %session, error = %e, "listing parts failed");
                vec![]
            }
        };
        for m in found {
            if let Err(e) = self.delete_path(&m.location).await {
                tracing::warn!(key = %m.location, error = %e, "storage delete failed");
            }
        }
        self.backend.remove_empty_dir(&prefix).await;
    }

    /// Streams a stored blob, or a byte range of it. A Xet-stored blob (no
    /// object of its own) is reassembled from its xorbs as it streams.
    pub async fn read_blob(
        &self,
        sha: &Sha256,
        range: Option<Range<u64>>,
    ) -> Result<BoxStream<'static, Result<Bytes, StorageError>>, StorageError> {
        match self
            .backend
            .read(&StorageKey::Blob(sha.clone()), range.clone())
            .await
        {
            Err(StorageError::Store(object_store::Error::NotFound { path, source })) => {
                match self.xet_recipe(sha).await? {
                    Some(recipe) => Ok(self.reassemble(recipe, range)),
                    None => Err(StorageError::Store(object_store::Error::NotFound {
                        path,
                        source,
                    })),
                }
            }
            other => other,
        }
    }

    /// Stores the recipe of a Xet-stored blob, write-if-absent (a blob's
    /// bytes never change; any valid recipe of them serves).
    pub async fn put_xet_recipe(&self, sha: &Sha256, bytes: Bytes) -> Result<(), StorageError> {
        self.put_if_absent(StorageKey::XetRecipe(sha.clone()), bytes)
            .await
            .map(|_| ())
    }

    /// Writes `bytes` at `key` unless an object is there already (content
    /// addressed: what is there holds the same content). Staged and promoted,
    /// so the key never holds half an object. True when this call wrote it.
    async fn put_if_absent(&self, key: StorageKey, bytes: Bytes) -> Result<bool, StorageError> {
        if self.backend.size(&key).await?.is_some() {
            return Ok(false);
        }
        let staging = StorageKey::Staging(Uuid::new_v4());
        self.store()
            .put(&staging.path(), PutPayload::from_bytes(bytes))
            .await?;
        if let Err(e) = self.backend.promote(&staging, &key).await {
            self.delete(&staging).await;
            return Err(e);
        }
        Ok(true)
    }

    /// The recipe of a Xet-stored blob, None when it has none.
    pub async fn xet_recipe(
        &self,
        sha: &Sha256,
    ) -> Result<Option<hub_xet::recipe::Recipe>, StorageError> {
        let key = StorageKey::XetRecipe(sha.clone());
        let stream = match self.backend.read(&key, None).await {
            Ok(s) => s,
            Err(StorageError::Store(object_store::Error::NotFound { .. })) => return Ok(None),
            Err(e) => return Err(e),
        };
        hub_xet::recipe::Recipe::decode(&collect(stream).await?)
            .map(Some)
            .map_err(|e| StorageError::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
    }

    /// Streams bytes `range` of a Xet-stored blob: each xorb range its
    /// recipe names is read as a stream and decoded one chunk at a time
    /// ([`reassemble_into`]); in memory: a read buffer and a chunk.
    fn reassemble(
        &self,
        recipe: hub_xet::recipe::Recipe,
        range: Option<Range<u64>>,
    ) -> BoxStream<'static, Result<Bytes, StorageError>> {
        let reads = recipe.reads(range.unwrap_or(0..recipe.size));
        let storage = self.clone();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, StorageError>>(4);
        tokio::spawn(async move {
            if let Err(e) = reassemble_into(&storage, reads, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        tokio_stream_from(rx)
    }

    /// Reads a small blob (or a prefix of it) fully into memory, at most `max` bytes.
    pub async fn read_prefix(&self, sha: &Sha256, max: u64) -> Result<Bytes, StorageError> {
        self.read_range(sha, 0..max).await
    }

    /// Reads `range` of a blob into memory (callers bound the range).
    pub async fn read_range(&self, sha: &Sha256, range: Range<u64>) -> Result<Bytes, StorageError> {
        collect(self.read_blob(sha, Some(range)).await?).await
    }

    /// Stores a validated xorb write-if-absent (content-addressed: identical
    /// bytes may already be there, and a concurrent identical upload is
    /// harmless). Staged and promoted, so the final key never holds half an
    /// object. True when this call wrote it.
    pub async fn put_xorb(&self, hash: &str, bytes: Bytes) -> Result<bool, StorageError> {
        self.put_if_absent(StorageKey::Xorb(hash.to_string()), bytes)
            .await
    }

    /// Size of a stored xorb, None when it is not stored.
    pub async fn xorb_size(&self, hash: &str) -> Result<Option<u64>, StorageError> {
        self.backend.size(&StorageKey::Xorb(hash.to_string())).await
    }

    /// Streams a byte range of a stored xorb (a data URL's answer).
    pub async fn read_xorb(
        &self,
        hash: &str,
        range: Range<u64>,
    ) -> Result<BoxStream<'static, Result<Bytes, StorageError>>, StorageError> {
        self.backend
            .read(&StorageKey::Xorb(hash.to_string()), Some(range))
            .await
    }

    /// Stream a payload to a key (used by tests to plant objects).
    pub async fn put_raw(&self, key: &StorageKey, bytes: Bytes) -> Result<(), StorageError> {
        self.store()
            .put(&key.path(), PutPayload::from_bytes(bytes))
            .await?;
        Ok(())
    }

    /// Lists staging objects and upload parts older than `age` (for the sweeper).
    pub async fn list_stale(
        &self,
        prefix: &str,
        older_than: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<ObjPath>, StorageError> {
        let p = ObjPath::from(prefix);
        let items: Vec<_> =
            self.store()
                .list(Some(&p))
                .try_collect()
                .await
                .or_else(|e| match e {
                    object_store::Error::NotFound { .. } => Ok(vec![]),
                    e => Err(e),
                })?;
        Ok(items
            .into_iter()
            .filter(|m| m.last_modified < older_than)
            .map(|m| m.location)
            .collect())
    }

    /// Every verified object at its final key, with its last modification
    /// time (for the collector's scan of objects no database row knows).
    pub fn list_blobs(
        &self,
    ) -> BoxStream<'static, Result<(Sha256, chrono::DateTime<chrono::Utc>), StorageError>> {
        let prefix = ObjPath::from("blobs/sha256");
        self.store()
            .list(Some(&prefix))
            .filter_map(|item| async move {
                match item {
                    Ok(m) => {
                        let name = m.location.filename()?;
                        let sha = Sha256::parse(name).ok()?;
                        // Only names at their own content address count.
                        (StorageKey::Blob(sha.clone()).path() == m.location)
                            .then_some(Ok((sha, m.last_modified)))
                    }
                    Err(object_store::Error::NotFound { .. }) => None,
                    Err(e) => Some(Err(e.into())),
                }
            })
            .boxed()
    }

    /// Deletes a verified object (the collector, under the blob's lock).
    pub async fn delete_blob(&self, sha: &Sha256) -> Result<(), StorageError> {
        self.backend.remove(&StorageKey::Blob(sha.clone())).await?;
        self.backend
            .remove(&StorageKey::XetRecipe(sha.clone()))
            .await
    }

    /// Reads `range` of a blob or a derived object into memory (the caller
    /// bounds the range): what the dataset viewer's Parquet reader fetches.
    pub async fn object_range(
        &self,
        key: &StorageKey,
        range: Range<u64>,
    ) -> Result<Bytes, StorageError> {
        match key {
            StorageKey::Blob(sha) => collect(self.read_blob(sha, Some(range)).await?).await,
            other => collect(self.backend.read(other, Some(range)).await?).await,
        }
    }

    /// Streams a derived object whole (the dataset viewer's Parquet downloads).
    pub async fn derived_stream(
        &self,
        key: &StorageKey,
    ) -> Result<BoxStream<'static, Result<Bytes, StorageError>>, StorageError> {
        self.backend.read(key, None).await
    }

    /// A directory for scratch files that [`Storage::put_file`] can move in
    /// without copying (the local store's own staging folder; the system's
    /// temporary folder otherwise).
    pub fn scratch_dir(&self) -> PathBuf {
        match &self.backend {
            Backend::Local { root, .. } => root.join("staging"),
            Backend::Store(_) => std::env::temp_dir(),
        }
    }

    /// Stores a finished local file at `key` (derived data, replaced whole),
    /// streamed: the local store renames it into place (copying when the
    /// rename crosses file systems), other stores upload it in parts.
    /// The file is gone afterwards.
    pub async fn put_file(&self, key: &StorageKey, file: &Path) -> Result<u64, StorageError> {
        let size = tokio::fs::metadata(file).await?.len();
        match &self.backend {
            Backend::Local { root, .. } => {
                let dest = root.join(key.path().as_ref());
                let src = file.to_path_buf();
                tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                    std::fs::create_dir_all(dest.parent().expect("derived keys have a parent"))?;
                    if std::fs::rename(&src, &dest).is_err() {
                        let temp = dest.with_extension(format!("{}.tmp", Uuid::new_v4().simple()));
                        std::fs::copy(&src, &temp)?;
                        std::fs::rename(&temp, &dest)?;
                        let _ = std::fs::remove_file(&src);
                    }
                    Ok(())
                })
                .await
                .map_err(StorageError::join)??;
            }
            Backend::Store(store) => {
                use tokio::io::AsyncReadExt;
                let mut w = WriteMultipart::new(store.put_multipart(&key.path()).await?);
                let mut f = tokio::fs::File::open(file).await?;
                let mut buf = vec![0u8; 8 << 20];
                loop {
                    let n = f.read(&mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    w.wait_for_capacity(4).await?;
                    w.write(&buf[..n]);
                }
                w.finish().await?;
                let _ = tokio::fs::remove_file(file).await;
            }
        }
        Ok(size)
    }

    /// Deletes every derived object under `viewer/<prefix>`.
    pub async fn delete_derived(&self, prefix: &str) {
        let p = ObjPath::from(format!("viewer/{prefix}"));
        let found: Vec<_> = match self.store().list(Some(&p)).try_collect().await {
            Ok(v) => v,
            Err(_) => return,
        };
        for m in found {
            let _ = self.delete_path(&m.location).await;
        }
    }

    pub async fn delete_path(&self, path: &ObjPath) -> Result<(), StorageError> {
        match self.store().delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Where the bytes live: the one seam between the local-directory backend and
/// every other object store. Everything that differs between them is a method
/// here; everything else goes through [`Backend::store`].
#[derive(Clone)]
enum Backend {
    /// A directory: files written, renamed and read directly, within the
    /// disk reserve. `store` is the same directory through `object_store`,
    /// for listing.
    Local {
        root: PathBuf,
        store: Arc<dyn ObjectStore>,
        reserve: Option<Reserve>,
    },
    /// Any other `object_store` (S3/MinIO, memory): multipart uploads,
    /// server-side copies.
    Store(Arc<dyn ObjectStore>),
}

impl Backend {
    fn store(&self) -> &Arc<dyn ObjectStore> {
        match self {
            Backend::Local { store, .. } | Backend::Store(store) => store,
        }
    }

    /// Opens a write to `key` of `declared` bytes when known (checked against
    /// the disk reserve before anything is written).
    async fn open(&self, key: &StorageKey, declared: Option<u64>) -> Result<Sink, StorageError> {
        match self {
            Backend::Local { root, reserve, .. } => {
                let guard = Guard::start(reserve.as_ref(), declared)?;
                let dest = root.join(key.path().as_ref());
                // Written under a temporary name beside `dest` and renamed, so
                // `dest` never holds half-written bytes.
                let temp = dest.with_extension(format!("{}.tmp", Uuid::new_v4().simple()));
                Ok(Sink::File {
                    temp,
                    dest,
                    guard: Some(guard),
                })
            }
            Backend::Store(store) => Ok(Sink::Upload(WriteMultipart::new(
                store.put_multipart(&key.path()).await?,
            ))),
        }
    }

    /// Makes the verified object at `from` final at `to` (content-addressed:
    /// identical bytes may already be there).
    async fn promote(&self, from: &StorageKey, to: &StorageKey) -> Result<(), StorageError> {
        match self {
            Backend::Local { root, .. } => {
                let (from, to) = (
                    root.join(from.path().as_ref()),
                    root.join(to.path().as_ref()),
                );
                tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                    let dir = to.parent().expect("blob keys have a parent");
                    std::fs::create_dir_all(dir)?;
                    // Identical content may already be there: rename replaces it atomically.
                    std::fs::rename(&from, &to)?;
                    std::fs::File::open(dir)?.sync_all()?;
                    Ok(())
                })
                .await
                .map_err(StorageError::join)??;
            }
            Backend::Store(store) => {
                match store.copy_if_not_exists(&from.path(), &to.path()).await {
                    Ok(()) | Err(object_store::Error::AlreadyExists { .. }) => {}
                    Err(object_store::Error::NotImplemented)
                    | Err(object_store::Error::NotSupported { .. }) => {
                        // Content-addressed: overwriting with identical bytes is harmless.
                        store.copy(&from.path(), &to.path()).await?;
                    }
                    Err(e) => return Err(e.into()),
                }
                if let Err(e) = self.remove(from).await {
                    tracing::warn!(key = %from.path(), error = %e, "storage delete failed");
                }
            }
        }
        Ok(())
    }

    /// Removes the object at `key`; a missing object is not an error.
    async fn remove(&self, key: &StorageKey) -> Result<(), StorageError> {
        let result = match self {
            Backend::Local { root, .. } => tokio::fs::remove_file(root.join(key.path().as_ref()))
                .await
                .map_err(StorageError::from),
            Backend::Store(store) => store.delete(&key.path()).await.map_err(StorageError::from),
        };
        match result {
            Err(StorageError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(StorageError::Store(object_store::Error::NotFound { .. })) => Ok(()),
            other => other,
        }
    }

    /// Size of a stored object (None: missing).
    async fn size(&self, key: &StorageKey) -> Result<Option<u64>, StorageError> {
        match self {
            Backend::Local { root, .. } => {
                match tokio::fs::metadata(root.join(key.path().as_ref())).await {
                    Ok(m) => Ok(Some(m.len())),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(e.into()),
                }
            }
            Backend::Store(store) => match store.head(&key.path()).await {
                Ok(m) => Ok(Some(m.size)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e.into()),
            },
        }
    }

    /// Streams an object, or a byte range of it.
    async fn read(
        &self,
        key: &StorageKey,
        range: Option<Range<u64>>,
    ) -> Result<BoxStream<'static, Result<Bytes, StorageError>>, StorageError> {
        match self {
            Backend::Local { root, .. } => {
                local_stream(root.join(key.path().as_ref()), range).await
            }
            Backend::Store(store) => {
                let opts = GetOptions {
                    range: range.map(GetRange::Bounded),
                    ..Default::default()
                };
                let res = store.get_opts(&key.path(), opts).await?;
                Ok(res.into_stream().map_err(StorageError::from).boxed())
            }
        }
    }

    /// Removes the directory of an emptied prefix (object stores have none).
    async fn remove_empty_dir(&self, prefix: &str) {
        if let Backend::Local { root, .. } = self {
            let _ = tokio::fs::remove_dir(root.join(prefix)).await;
        }
    }
}

/// An open write. Local files are written by the hashing thread (which takes
/// the temp path and the reserve guard); object-store writes are uploaded
/// from the async side.
enum Sink {
    File {
        temp: PathBuf,
        dest: PathBuf,
        guard: Option<Guard>,
    },
    Upload(WriteMultipart),
}

impl Sink {
    /// What the hashing thread writes to: the temp file and the reserve guard.
    fn take_file(&mut self) -> Option<(PathBuf, Guard)> {
        match self {
            Sink::File { temp, guard, .. } => guard.take().map(|g| (temp.clone(), g)),
            Sink::Upload(_) => None,
        }
    }

    /// Sends a chunk to the object store (local files: the thread writes it).
    async fn upload(&mut self, chunk: &Bytes) -> Result<(), StorageError> {
        if let Sink::Upload(w) = self {
            w.wait_for_capacity(8).await?;
            w.write(chunk);
        }
        Ok(())
    }

    /// Makes the written bytes visible at the key.
    async fn commit(self) -> Result<(), StorageError> {
        match self {
            Sink::File { temp, dest, .. } => {
                let renamed = tokio::task::spawn_blocking({
                    let temp = temp.clone();
                    move || std::fs::rename(temp, dest)
                })
                .await
                .map_err(StorageError::join)
                .and_then(|r| r.map_err(StorageError::from));
                if renamed.is_err() {
                    let _ = tokio::fs::remove_file(&temp).await;
                }
                renamed
            }
            Sink::Upload(w) => {
                w.finish().await?;
                Ok(())
            }
        }
    }

    /// Leaves nothing behind.
    async fn abort(self) {
        match self {
            Sink::File { temp, .. } => {
                let _ = tokio::fs::remove_file(&temp).await;
            }
            Sink::Upload(w) => {
                let _ = w.abort().await;
            }
        }
    }
}

/// What a write computes over its bytes, on the blocking thread.
trait Digests: Send + 'static {
    type Output: Send + 'static;
    fn update(&mut self, chunk: &[u8]);
    fn finish(self) -> Self::Output;
}

/// The content address (sha256) and, when the size is known up front, the
/// git blob id.
struct ContentDigests {
    sha: sha2::Sha256,
    git: Option<crate::git::BlobHasher>,
}

impl ContentDigests {
    fn new(git_oid_of_size: Option<u64>) -> Self {
        Self {
            sha: sha2::Sha256::new(),
            git: git_oid_of_size.map(crate::git::BlobHasher::new),
        }
    }
}

impl Digests for ContentDigests {
    type Output = (Sha256, Option<String>);
    fn update(&mut self, chunk: &[u8]) {
        self.sha.update(chunk);
        if let Some(g) = self.git.as_mut() {
            g.update(chunk);
        }
    }
    fn finish(self) -> Self::Output {
        (
            Sha256::from_digest(&self.sha.finalize()),
            self.git.map(|g| g.finish()),
        )
    }
}

/// A multipart part's ETag: the md5 hex of its bytes.
#[derive(Default)]
struct PartEtag(md5::Md5);

impl Digests for PartEtag {
    type Output = String;
    fn update(&mut self, chunk: &[u8]) {
        md5::Digest::update(&mut self.0, chunk);
    }
    fn finish(self) -> String {
        hex::encode(md5::Digest::finalize(self.0))
    }
}

/// The blocking half of [`Storage::write_stream`]: digests every chunk and,
/// for local storage, writes it to `file` (checking the reserve as it grows),
/// then fsyncs. Returns the digests and the byte count.
fn digest_and_write<D: Digests>(
    mut rx: tokio::sync::mpsc::Receiver<Bytes>,
    mut digests: D,
    file: Option<(PathBuf, Guard)>,
) -> Result<(D::Output, u64), StorageError> {
    let mut out = match file {
        Some((path, guard)) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let f = std::fs::File::create(&path)?;
            Some((std::io::BufWriter::with_capacity(1 << 20, f), guard))
        }
        None => None,
    };
    let mut size = 0u64;
    while let Some(chunk) = rx.blocking_recv() {
        digests.update(&chunk);
        if let Some((f, guard)) = out.as_mut() {
            guard.wrote(chunk.len() as u64)?;
            f.write_all(&chunk)?;
        }
        size += chunk.len() as u64;
    }
    if let Some((f, _)) = out {
        f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    }
    Ok((digests.finish(), size))
}

/// How many small objects [`Storage::stage_blobs`] and
/// [`Storage::promote_blobs`] write at once (blocking threads, mostly waiting
/// in fsync: the more at once, the fewer journal commits per batch; 256
/// staged 1,000 files in 50-70 ms against 55-300 ms for 64 on the 2-core
/// development VM, and leaves half of tokio's default pool of 512 free).
const PUT_CONCURRENCY: usize = 256;

/// Small objects written by [`Storage::stage_blobs`]: promote or discard them
/// (a dropped one leaves staging files to the sweeper).
#[must_use = "promote or discard staged objects"]
pub struct StagedBlobs(Vec<StagedBlob>, bool);

/// From how many objects [`Storage::stage_blobs`] makes a batch durable with
/// one `syncfs` instead of an fsync per file (and [`Storage::promote_blobs`]
/// one more instead of an fsync per folder). On the 2-core development VM a
/// thousand small files took 55-70 ms to stage and 55-90 ms to promote with
/// fsyncs, and a `syncfs` 6-14 ms. A `syncfs` also writes out whatever else
/// is dirty on that file system (a large upload's staging file, say), which
/// the small batches this threshold leaves alone would wait for in vain.
const SYNCFS_FROM: usize = 64;

/// Threads a `syncfs` batch is written and renamed by (creating files in one
/// folder serialises on its lock, so more threads only contend).
const BULK_THREADS: usize = 4;

/// Whether a batch of `n` small objects is made durable by `syncfs`.
fn bulk_sync(n: usize) -> bool {
    cfg!(target_os = "linux") && n >= SYNCFS_FROM
}

/// Flushes everything written to the file system that holds `root`: data,
/// new names and folders (Linux `syncfs`, which reports writeback errors
/// since 5.8).
fn sync_file_system(root: &Path) -> std::io::Result<()> {
    let dir = std::fs::File::open(root)?;
    #[cfg(target_os = "linux")]
    rustix::fs::syncfs(&dir)?;
    #[cfg(not(target_os = "linux"))]
    dir.sync_all()?;
    Ok(())
}

/// Removes staged objects' staging files.
async fn discard_staged(staged: StagedBlobs) {
    for s in staged.0 {
        if let StagedBlob::File { temp, .. } = s {
            let _ = tokio::fs::remove_file(&temp).await;
        }
    }
}

/// `items` cut into at most [`BULK_THREADS`] runs of about equal length, one
/// per thread of a `syncfs` batch.
fn bulk_shares<T>(items: Vec<T>) -> Vec<Vec<T>> {
    let per = items.len().div_ceil(BULK_THREADS).max(1);
    let mut items = items.into_iter().peekable();
    let mut out = Vec::new();
    while items.peek().is_some() {
        out.push(items.by_ref().take(per).collect());
    }
    out
}

/// The `syncfs` path of [`Storage::stage_blobs`]: [`BULK_THREADS`] threads
/// each write a share of the objects to staging files, then one `syncfs`.
async fn stage_bulk(
    root: &Path,
    objects: Vec<(Sha256, Bytes)>,
) -> Result<StagedBlobs, StorageError> {
    let mut shares = Vec::new();
    for share in bulk_shares(objects) {
        let root = root.to_path_buf();
        shares.push(blocking(move || {
            let mut out = Vec::with_capacity(share.len());
            for (sha, bytes) in &share {
                match write_staging(&root, sha, bytes, false) {
                    Ok(s) => out.push(s),
                    Err(e) => return Ok((out, Some(e))),
                }
            }
            Ok((out, None))
        }));
    }
    let mut staged = Vec::new();
    let mut failure = None;
    for share in futures::future::join_all(shares).await {
        match share {
            Ok((out, err)) => {
                staged.extend(out);
                if let Some(e) = err {
                    failure = failure.or(Some(StorageError::from(e)));
                }
            }
            Err(e) => failure = failure.or(Some(e)),
        }
    }
    if failure.is_none() {
        let root = root.to_path_buf();
        if let Err(e) = blocking(move || sync_file_system(&root)).await {
            failure = Some(e);
        }
    }
    let staged = StagedBlobs(staged, true);
    match failure {
        Some(e) => {
            discard_staged(staged).await;
            Err(e)
        }
        None => Ok(staged),
    }
}

/// The `syncfs` path of [`Storage::promote_blobs`]: [`BULK_THREADS`] threads
/// rename a share each, then one `syncfs` makes the names durable. A failed
/// rename's staging file is removed; the others' are already gone.
async fn promote_bulk(root: &Path, staged: Vec<StagedBlob>) -> Result<(), StorageError> {
    let mut shares = Vec::new();
    for share in bulk_shares(staged) {
        shares.push(blocking(move || {
            let mut failure = None;
            for s in share {
                let StagedBlob::File { temp, dest } = s else {
                    continue;
                };
                let dir = dest.parent().expect("blob keys have a parent");
                // Identical content may already be there: rename replaces it
                // atomically.
                let renamed = std::fs::rename(&temp, &dest).or_else(|_| {
                    std::fs::create_dir_all(dir).and_then(|()| std::fs::rename(&temp, &dest))
                });
                if let Err(e) = renamed {
                    let _ = std::fs::remove_file(&temp);
                    failure = failure.or(Some(e));
                }
            }
            failure.map_or(Ok(()), Err)
        }));
    }
    let mut failure = None;
    for r in futures::future::join_all(shares).await {
        if let Err(e) = r {
            failure = failure.or(Some(e));
        }
    }
    let root = root.to_path_buf();
    let synced = blocking(move || sync_file_system(&root)).await;
    match failure.or(synced.err()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

enum StagedBlob {
    /// A local staging file (durable: fsynced, or its batch `syncfs`ed) for `dest`.
    File { temp: PathBuf, dest: PathBuf },
    /// Bytes to put (other stores).
    Bytes(Sha256, Bytes),
}

/// Runs blocking file work on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(StorageError::join)?
        .map_err(StorageError::from)
}

/// One object of [`Storage::stage_blobs`] on local storage.
fn stage_small_blob(root: &Path, sha: &Sha256, bytes: &[u8]) -> std::io::Result<StagedBlob> {
    write_staging(root, sha, bytes, true)
}

/// Writes `bytes` to a new staging file for the blob `sha`, fsynced if `sync`.
fn write_staging(
    root: &Path,
    sha: &Sha256,
    bytes: &[u8],
    sync: bool,
) -> std::io::Result<StagedBlob> {
    // Written even when the object is already at its key: whether it is
    // still there only counts once the caller's pending row is committed
    // (the collector may be deleting it now), and promoting replaces it.
    let dest = root.join(StorageKey::Blob(sha.clone()).path().as_ref());
    let temp = root.join(StorageKey::Staging(Uuid::new_v4()).path().as_ref());
    let written = std::fs::File::create(&temp).and_then(|mut f| {
        f.write_all(bytes)?;
        if sync {
            f.sync_all()?;
        }
        Ok(())
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    Ok(StagedBlob::File { temp, dest })
}

/// Reads a local file in large chunks on a blocking thread, feeding a bounded channel.
async fn local_stream(
    path: PathBuf,
    range: Option<Range<u64>>,
) -> Result<BoxStream<'static, Result<Bytes, StorageError>>, StorageError> {
    let opened = tokio::task::spawn_blocking(move || -> std::io::Result<(std::fs::File, u64)> {
        let mut f = std::fs::File::open(&path)?;
        let len = f.metadata()?.len();
        let (start, end) = match &range {
            Some(r) => (r.start.min(len), r.end.min(len)),
            None => (0, len),
        };
        f.seek(SeekFrom::Start(start))?;
        Ok((f, end.saturating_sub(start)))
    })
    .await
    .map_err(StorageError::join)?;
    let (file, mut remaining) = match opened {
        Ok(x) => x,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StorageError::Store(object_store::Error::NotFound {
                path: String::new(),
                source: Box::new(e),
            }))
        }
        Err(e) => return Err(e.into()),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, StorageError>>(4);
    tokio::task::spawn_blocking(move || {
        let mut file = file;
        while remaining > 0 {
            let n = remaining.min(READ_CHUNK as u64) as usize;
            let mut buf = vec![0u8; n];
            match file.read_exact(&mut buf) {
                Ok(()) => {
                    remaining -= n as u64;
                    if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                        return; // client went away
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e.into()));
                    return;
                }
            }
        }
    });
    Ok(tokio_stream_from(rx))
}

/// The body of [`Storage::reassemble`]: sends the bytes of `reads` in order; an error ends
/// it (the caller sends it on). Returns early when the reader went away.
///
/// Uncompressed chunks (most of a weights file) go out as slices of the bytes read, uncopied;
/// only a chunk split across two reads is copied, and compressed chunks are decoded.
async fn reassemble_into(
    storage: &Storage,
    reads: Vec<hub_xet::recipe::XorbRead>,
    tx: &tokio::sync::mpsc::Sender<Result<Bytes, StorageError>>,
) -> Result<(), StorageError> {
    use hub_xet::xorb::NextChunk;
    let corrupt =
        |m: String| StorageError::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, m));
    for read in reads {
        let name = hub_xet::hash::hash_string(&read.xorb);
        let mut input = storage.read_xorb(&name, read.stored.clone()).await?;
        let (mut skip, mut take) = (read.skip, read.take);
        // Bytes read and not yet decoded, and their offset in the stream read; bytes read
        // past a chunk that straddled two reads wait in `queued`.
        let mut cur = Bytes::new();
        let mut queued: Option<Bytes> = None;
        let mut offset = 0usize;
        while take > 0 {
            let (data, consumed) = match hub_xet::xorb::next_chunk(&cur, offset) {
                Ok(NextChunk::Stored { payload, consumed }) => (cur.slice(payload), consumed),
                Ok(NextChunk::Decoded { data, consumed }) => (Bytes::from(data), consumed),
                Ok(NextChunk::Incomplete) => {
                    let b = match queued.take() {
                        Some(b) => b,
                        None => match input.next().await {
                            Some(b) => b?,
                            None => {
                                return Err(corrupt(format!(
                                    "xorb {name} ended {take} bytes early"
                                )))
                            }
                        },
                    };
                    if cur.is_empty() {
                        cur = b;
                        continue;
                    }
                    // Complete the straddling chunk with just the bytes it lacks.
                    let n = straddle_need(&cur, &b).min(b.len());
                    let mut joined = bytes::BytesMut::with_capacity(cur.len() + n);
                    joined.extend_from_slice(&cur);
                    joined.extend_from_slice(&b[..n]);
                    cur = joined.freeze();
                    if n < b.len() {
                        queued = Some(b.slice(n..));
                    }
                    continue;
                }
                Err(e) => return Err(corrupt(format!("xorb {name}: {e}"))),
            };
            cur = cur.slice(consumed..);
            offset += consumed;
            let len = data.len() as u64;
            if skip >= len {
                skip -= len;
                continue;
            }
            let n = (len - skip).min(take);
            let out = data.slice(skip as usize..(skip + n) as usize);
            skip = 0;
            take -= n;
            if tx.send(Ok(out)).await.is_err() {
                return Ok(()); // the reader went away
            }
        }
    }
    Ok(())
}

/// Bytes of `next` that the chunk begun in `cur` still lacks (its header first if `cur`
/// does not hold all of it; a bogus length is left to the decoder to refuse).
fn straddle_need(cur: &[u8], next: &[u8]) -> usize {
    const HEADER: usize = hub_xet::xorb::CHUNK_HEADER_LEN;
    if cur.len() < HEADER {
        let mut h = [0u8; HEADER];
        let have = cur.len();
        h[..have].copy_from_slice(cur);
        let more = (HEADER - have).min(next.len());
        h[have..have + more].copy_from_slice(&next[..more]);
        if have + more < HEADER {
            return more;
        }
        let len = u32::from_le_bytes([h[1], h[2], h[3], 0]) as usize;
        return (HEADER + len.min(hub_xet::xorb::MAX_COMPRESSED_CHUNK)) - have;
    }
    let len = u32::from_le_bytes([cur[1], cur[2], cur[3], 0]) as usize;
    (HEADER + len.min(hub_xet::xorb::MAX_COMPRESSED_CHUNK)).saturating_sub(cur.len())
}

/// Reads a (bounded) stream into memory.
async fn collect(
    mut stream: BoxStream<'static, Result<Bytes, StorageError>>,
) -> Result<Bytes, StorageError> {
    let mut buf = bytes::BytesMut::new();
    while let Some(c) = stream.next().await {
        buf.extend_from_slice(&c?);
    }
    Ok(buf.freeze())
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> BoxStream<'static, T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::local::LocalFileSystem;

    fn body(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
        futures::stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p)))
                .collect::<Vec<_>>(),
        )
    }

    /// `parts`, then a failure of the request body.
    fn broken(
        parts: &[&'static [u8]],
    ) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
        let mut items: Vec<_> = parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        items.push(Err(std::io::Error::other("connection reset")));
        futures::stream::iter(items)
    }

    fn sha_of(b: &[u8]) -> Sha256 {
        Sha256::from_digest(&sha2::Sha256::digest(b))
    }

    /// Every kind of backend: the local directory, and the object-store path
    /// over an in-memory store and over a real directory (`LocalFileSystem`).
    /// The temp dirs live as long as the storage.
    fn backends() -> Vec<(&'static str, Storage, Option<tempfile::TempDir>)> {
        let local = tempfile::tempdir().unwrap();
        let fs = tempfile::tempdir().unwrap();
        let over_fs = Storage::object_store(
            Arc::new(LocalFileSystem::new_with_prefix(fs.path()).unwrap()),
            "object_store LocalFileSystem",
        );
        let mut all = vec![
            ("local", Storage::local(local.path()).unwrap(), Some(local)),
            ("memory", Storage::from_url("memory://").unwrap(), None),
            ("object_store over a directory", over_fs, Some(fs)),
        ];
        // A real S3 server (tests/s3/run.sh starts Garage and sets this to
        // its bucket): each test gets a prefix of its own.
        if let Ok(url) = std::env::var("PADDOCK_TEST_S3_URL") {
            let url = format!("{}/unit-{}", url.trim_end_matches('/'), Uuid::new_v4());
            all.push(("s3", Storage::from_url(&url).unwrap(), None));
        }
        all
    }

    async fn nothing_in_flight(storage: &Storage, what: &str) {
        let later = chrono::Utc::now() + chrono::Duration::hours(1);
        let staging = storage.list_stale("staging", later).await.unwrap();
        assert!(
            staging.is_empty(),
            "{what}: staging left behind: {staging:?}"
        );
    }

    async fn roundtrip(storage: Storage) {
        let w = storage
            .write_blob(body(&[b"hello ", b"world"]), Some(11), None, true)
            .await
            .unwrap();
        assert_eq!(
            w.sha256.as_str(),
            "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
        assert_eq!(
            w.git_oid.as_deref(),
            Some(crate::git::blob_oid(b"hello world").as_str())
        );
        assert!(storage.blob_exists(&w.sha256).await.unwrap());
        let got = storage.read_range(&w.sha256, 6..11).await.unwrap();
        assert_eq!(&got[..], b"world");
        nothing_in_flight(&storage, "after a write").await;

        // A lying body leaves nothing behind.
        let bad = Sha256::parse(&"0".repeat(64)).unwrap();
        let err = storage
            .write_blob(body(&[b"abc"]), Some(3), Some(&bad), false)
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::DigestMismatch { .. }));
        assert!(!storage.blob_exists(&bad).await.unwrap());
        let err = storage
            .write_blob(body(&[b"abcd"]), Some(3), None, false)
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::TooLong(3)));
        let err = storage
            .write_blob(body(&[b"ab"]), Some(3), None, false)
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::SizeMismatch { .. }));
        nothing_in_flight(&storage, "after refused writes").await;

        // Multipart assembly: a wrong-sized part leaves nothing; a completion
        // that does not verify keeps the parts, so fixing one part works.
        let session = Uuid::new_v4();
        let err = storage
            .write_part(session, 1, body(&[b"hell"]), 6)
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::SizeMismatch { .. }), "{err}");
        let err = storage
            .write_part(session, 1, body(&[b"hello !!"]), 6)
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::TooLong(6)), "{err}");
        let err = storage
            .stage_parts(session, &[6, 5], 11, &w.sha256)
            .await
            .unwrap_err();
        assert!(
            matches!(err, StorageError::PartMissing { part: 1 }),
            "{err}"
        );
        storage
            .write_part(session, 1, body(&[b"hello "]), 6)
            .await
            .unwrap();
        storage
            .write_part(session, 2, body(&[b"World"]), 5)
            .await
            .unwrap();
        let err = storage
            .stage_parts(session, &[6, 5], 11, &w.sha256)
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::DigestMismatch { .. }), "{err}");
        storage
            .write_part(session, 2, body(&[b"world"]), 5)
            .await
            .unwrap();
        let staged = storage
            .stage_parts(session, &[6, 5], 11, &w.sha256)
            .await
            .unwrap();
        let w2 = storage.promote(staged).await.unwrap();
        assert_eq!(w2.sha256, w.sha256);
        storage.delete_parts(session).await;
        let left = storage
            .list_stale("uploads", chrono::Utc::now() + chrono::Duration::hours(1))
            .await
            .unwrap();
        assert!(left.is_empty(), "parts left behind: {left:?}");

        // The collector's view of final objects.
        let listed: Vec<Sha256> = storage.list_blobs().map(|r| r.unwrap().0).collect().await;
        assert_eq!(listed, vec![w.sha256.clone()]);
        storage.delete_blob(&w.sha256).await.unwrap();
        assert!(!storage.blob_exists(&w.sha256).await.unwrap());
        storage.delete_blob(&w.sha256).await.unwrap();
    }

    #[tokio::test]
    async fn roundtrip_on_every_backend() {
        for (name, storage, _dir) in backends() {
            eprintln!("backend: {name}");
            roundtrip(storage).await;
        }
    }

    /// A part re-uploaded with a bad body (too long, too short, cut off)
    /// leaves the earlier upload of that part as it was; a good one replaces it.
    #[tokio::test]
    async fn parts_are_replaced_only_by_a_whole_part() {
        for (name, storage, _dir) in backends() {
            let session = Uuid::new_v4();
            storage
                .write_part(session, 1, body(&[b"hel", b"lo "]), 6)
                .await
                .unwrap();
            for bad in [
                storage.write_part(session, 1, body(&[b"HELLO !"]), 6).await,
                storage.write_part(session, 1, body(&[b"HEL"]), 6).await,
                storage.write_part(session, 1, broken(&[b"HEL"]), 6).await,
            ] {
                assert!(bad.is_err(), "{name}: a bad part was accepted");
            }
            let staged = storage
                .stage_parts(session, &[6], 6, &sha_of(b"hello "))
                .await
                .unwrap_or_else(|e| panic!("{name}: the earlier part is gone: {e}"));
            storage.discard(staged).await;
            let etag = storage
                .write_part(session, 1, body(&[b"HELLO "]), 6)
                .await
                .unwrap();
            assert_eq!(etag, hex::encode(md5::Md5::digest(b"HELLO ")), "{name}");
            let staged = storage
                .stage_parts(session, &[6], 6, &sha_of(b"HELLO "))
                .await
                .unwrap_or_else(|e| panic!("{name}: the new part is not there: {e}"));
            storage.discard(staged).await;
            storage.delete_parts(session).await;
            nothing_in_flight(&storage, name).await;
        }
    }

    /// A request body that fails mid-stream is a 400 `invalid_request` and
    /// leaves nothing behind, for whole objects and parts alike.
    #[tokio::test]
    async fn a_broken_body_leaves_nothing() {
        for (name, storage, _dir) in backends() {
            let err = storage
                .write_blob(broken(&[b"abc"]), None, None, false)
                .await
                .unwrap_err();
            assert!(matches!(err, StorageError::Body(_)), "{name}: {err}");
            let api = crate::error::ApiError::from(err);
            assert_eq!(api.code(), "invalid_request", "{name}");
            assert_eq!(
                api.to_string(),
                "invalid request: request body: connection reset",
                "{name}"
            );
            let session = Uuid::new_v4();
            let err = storage
                .write_part(session, 1, broken(&[b"abc"]), 6)
                .await
                .unwrap_err();
            assert!(matches!(err, StorageError::Body(_)), "{name}: {err}");
            nothing_in_flight(&storage, name).await;
            let parts = storage
                .list_stale("uploads", chrono::Utc::now() + chrono::Duration::hours(1))
                .await
                .unwrap();
            assert!(parts.is_empty(), "{name}: part left behind: {parts:?}");
            let blobs: Vec<_> = storage.list_blobs().collect().await;
            assert!(blobs.is_empty(), "{name}");
        }
    }

    /// Identical content written twice is one object; a missing one is a 404.
    #[tokio::test]
    async fn content_addressing_and_missing_objects() {
        for (name, storage, _dir) in backends() {
            let a = storage
                .write_bytes(Bytes::from_static(b"same"))
                .await
                .unwrap();
            let b = storage
                .write_bytes(Bytes::from_static(b"same"))
                .await
                .unwrap();
            assert_eq!(a.sha256, b.sha256, "{name}");
            let listed: Vec<_> = storage.list_blobs().collect().await;
            assert_eq!(listed.len(), 1, "{name}");
            nothing_in_flight(&storage, name).await;

            let missing = sha_of(b"never written");
            let err = match storage.read_blob(&missing, None).await {
                Ok(mut s) => s.next().await.expect("an error").unwrap_err(),
                Err(e) => e,
            };
            assert_eq!(
                crate::error::ApiError::from(err).code(),
                "not_found",
                "{name}"
            );
            storage.delete_blob(&missing).await.unwrap();
        }
    }

    /// The disk reserve is checked for the declared size before a byte is
    /// written, for whole objects and parts alike (local storage only: an
    /// object store has no disk of ours).
    #[tokio::test]
    async fn the_reserve_refuses_declared_sizes_up_front() {
        let dir = tempfile::tempdir().unwrap();
        let free = crate::diskspace::free_bytes(dir.path()).unwrap();
        // 1 GiB of headroom above the reserve; the declared size is 2 GiB.
        let reserve = Reserve::new(vec![dir.path().to_path_buf()], free.saturating_sub(1 << 30));
        let big = 2u64 << 30;
        let full = |e: &StorageError| matches!(e, StorageError::Io(io) if io.kind() == std::io::ErrorKind::StorageFull);

        let local = Storage::local(dir.path())
            .unwrap()
            .with_reserve(reserve.clone());
        let err = local
            .stage(body(&[b"x"]), Some(big), None, false)
            .await
            .unwrap_err();
        assert!(full(&err), "{err}");
        assert_eq!(
            crate::error::ApiError::from(err).code(),
            "insufficient_storage"
        );
        let err = local
            .write_part(Uuid::new_v4(), 1, body(&[b"x"]), big)
            .await
            .unwrap_err();
        assert!(full(&err), "{err}");
        // Small writes still fit.
        local
            .write_bytes(Bytes::from_static(b"small"))
            .await
            .unwrap();
        local
            .write_part(Uuid::new_v4(), 1, body(&[b"x"]), 1)
            .await
            .unwrap();
        nothing_in_flight(&local, "local").await;

        // An object store has no disk of ours: the reserve does not apply.
        let memory = Storage::from_url("memory://")
            .unwrap()
            .with_reserve(reserve);
        let err = memory
            .stage(body(&[b"x"]), Some(big), None, false)
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::SizeMismatch { .. }), "{err}");
    }
}
