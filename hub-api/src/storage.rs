//! Object storage of file bytes, addressed by sha256. [`StorageKey`] is the only
//! place object paths are made. Writes go to a staging key while being hashed,
//! are verified (size and digest), and only then become visible at their final,
//! content-addressed key. Reads stream; nothing here holds a whole file in memory.
//!
//! The local backend writes and reads files directly (fsync before the rename
//! that makes a blob final, large read chunks); other backends go through
//! `object_store` (S3/MinIO, memory for tests).

use crate::domain::Sha256;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
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
            StorageError::Body(m) => ApiError::InvalidRequest(format!("request body: {m}")),
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
    store: Arc<dyn ObjectStore>,
    /// Set for the local-directory backend: files are written and read directly.
    local_root: Option<PathBuf>,
    describe: String,
    /// Free space kept on the local store's disk (see `diskspace`).
    reserve: Option<crate::diskspace::Reserve>,
}

impl Storage {
    /// Opens storage from a URL: a directory path or `file://`, `s3://bucket/prefix`, `memory://`.
    pub fn from_url(url: &str) -> anyhow::Result<Self> {
        if url == "memory://" || url == "memory:" {
            return Ok(Self {
                store: Arc::new(object_store::memory::InMemory::new()),
                local_root: None,
                describe: "memory://".into(),
                reserve: None,
            });
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
            let s3: Arc<dyn ObjectStore> = Arc::new(b.build()?);
            let store: Arc<dyn ObjectStore> = if prefix.trim_matches('/').is_empty() {
                s3
            } else {
                Arc::new(object_store::prefix::PrefixStore::new(
                    s3,
                    prefix.trim_matches('/').to_string(),
                ))
            };
            return Ok(Self {
                store,
                local_root: None,
                describe: format!("s3://{bucket}/{prefix}"),
                reserve: None,
            });
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
            store: Arc::new(object_store::local::LocalFileSystem::new_with_prefix(
                &root,
            )?),
            describe: format!("file://{}", root.display()),
            local_root: Some(root),
            reserve: None,
        })
    }

    /// Keeps `reserve` free: local writes that would eat into it fail with
    /// `StorageFull` (507 `insufficient_storage`).
    pub fn with_reserve(mut self, reserve: crate::diskspace::Reserve) -> Self {
        self.reserve = Some(reserve);
        self
    }

    /// The local store's root directory (None for S3 and memory).
    pub fn local_root(&self) -> Option<&Path> {
        self.local_root.as_deref()
    }

    pub fn describe(&self) -> &str {
        &self.describe
    }

    fn local_path(&self, key: &StorageKey) -> Option<PathBuf> {
        self.local_root
            .as_ref()
            .map(|r| r.join(key.path().as_ref()))
    }

    /// Checks the store answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), StorageError> {
        let probe = ObjPath::from("blobs");
        match self.store.list_with_delimiter(Some(&probe)).await {
            Ok(_) => Ok(()),
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether verified content with this digest is stored.
    pub async fn blob_exists(&self, sha: &Sha256) -> Result<bool, StorageError> {
        match self.store.head(&StorageKey::Blob(sha.clone()).path()).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
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
        let staging = StorageKey::Staging(Uuid::new_v4());
        let result = self
            .write_staging(&staging, body, expected_size, want_git_oid)
            .await;
        let written = match result {
            Ok(w) => w,
            Err(e) => {
                self.delete(&staging).await;
                return Err(e);
            }
        };
        if let Some(exp) = expected_size {
            if exp != written.size {
                self.delete(&staging).await;
                return Err(StorageError::SizeMismatch {
                    expected: exp,
                    actual: written.size,
                });
            }
        }
        if let Some(exp) = expected_sha {
            if exp != &written.sha256 {
                self.delete(&staging).await;
                return Err(StorageError::DigestMismatch {
                    expected: exp.to_string(),
                    actual: written.sha256.to_string(),
                });
            }
        }
        Ok(Staged {
            key: staging,
            written,
        })
    }

    /// Makes staged bytes final at their content address. Callers that track
    /// unreferenced objects record the object first (`sweeper::store`).
    pub async fn promote(&self, staged: Staged) -> Result<Written, StorageError> {
        match self.promote_key(&staged.key, &staged.written.sha256).await {
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

    async fn write_staging<S, E>(
        &self,
        key: &StorageKey,
        mut body: S,
        expected_size: Option<u64>,
        want_git_oid: bool,
    ) -> Result<Written, StorageError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        // One blocking thread hashes (and, for local storage, writes and fsyncs);
        // the async side only moves chunks.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(32);
        let local = self.local_path(key);
        let git = want_git_oid.then_some(()).and(expected_size);
        let mut guard = crate::diskspace::Guard::start(
            local.as_ref().and(self.reserve.as_ref()),
            expected_size,
        )?;
        let worker = tokio::task::spawn_blocking(move || -> Result<_, std::io::Error> {
            let mut sha = sha2::Sha256::new();
            let mut blob = git.map(crate::git::BlobHasher::new);
            let mut file = match &local {
                Some(p) => {
                    if let Some(dir) = p.parent() {
                        std::fs::create_dir_all(dir)?;
                    }
                    Some(std::io::BufWriter::with_capacity(
                        1 << 20,
                        std::fs::File::create(p)?,
                    ))
                }
                None => None,
            };
            let mut size = 0u64;
            while let Some(chunk) = rx.blocking_recv() {
                sha.update(&chunk);
                if let Some(b) = blob.as_mut() {
                    b.update(&chunk);
                }
                if let Some(f) = file.as_mut() {
                    guard.wrote(chunk.len() as u64)?;
                    f.write_all(&chunk)?;
                }
                size += chunk.len() as u64;
            }
            if let Some(f) = file {
                let f = f.into_inner().map_err(|e| e.into_error())?;
                f.sync_all()?;
            }
            Ok((sha.finalize(), blob.map(|b| b.finish()), size))
        });

        let mut remote = if self.local_root.is_none() {
            Some(WriteMultipart::new(
                self.store.put_multipart(&key.path()).await?,
            ))
        } else {
            None
        };
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
            if let Some(max) = expected_size {
                if received > max {
                    failure = Some(StorageError::TooLong(max));
                    break;
                }
            }
            if let Some(w) = remote.as_mut() {
                if let Err(e) = w.wait_for_capacity(8).await {
                    failure = Some(e.into());
                    break;
                }
                w.write(&chunk);
            }
            if tx.send(chunk).await.is_err() {
                break;
            }
        }
        drop(tx);
        let hashed = worker
            .await
            .map_err(|e| StorageError::Io(std::io::Error::other(e)))?;
        if let Some(f) = failure {
            if let Some(w) = remote {
                let _ = w.abort().await;
            }
            return Err(f);
        }
        let (digest, git_oid, size) = hashed?;
        if let Some(w) = remote {
            w.finish().await?;
        }
        Ok(Written {
            sha256: Sha256::from_digest(&digest),
            size,
            git_oid,
        })
    }

    /// Makes a verified staging object final at its content address.
    async fn promote_key(&self, staging: &StorageKey, sha: &Sha256) -> Result<(), StorageError> {
        let final_key = StorageKey::Blob(sha.clone());
        if let (Some(from), Some(to)) = (self.local_path(staging), self.local_path(&final_key)) {
            tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                let dir = to.parent().expect("blob keys have a parent");
                std::fs::create_dir_all(dir)?;
                // Identical content may already be there: rename replaces it atomically.
                std::fs::rename(&from, &to)?;
                std::fs::File::open(dir)?.sync_all()?;
                Ok(())
            })
            .await
            .map_err(|e| StorageError::Io(std::io::Error::other(e)))??;
            return Ok(());
        }
        match self
            .store
            .copy_if_not_exists(&staging.path(), &final_key.path())
            .await
        {
            Ok(()) | Err(object_store::Error::AlreadyExists { .. }) => {}
            Err(object_store::Error::NotImplemented)
            | Err(object_store::Error::NotSupported { .. }) => {
                // Content-addressed: overwriting with identical bytes is harmless.
                self.store.copy(&staging.path(), &final_key.path()).await?;
            }
            Err(e) => return Err(e.into()),
        }
        self.delete(staging).await;
        Ok(())
    }

    /// Best-effort delete (staging and part cleanup).
    pub async fn delete(&self, key: &StorageKey) {
        if let Some(p) = self.local_path(key) {
            let _ = tokio::fs::remove_file(p).await;
            return;
        }
        if let Err(e) = self.store.delete(&key.path()).await {
            if !matches!(e, object_store::Error::NotFound { .. }) {
                tracing::warn!(key = %key.path(), error = %e, "storage delete failed");
            }
        }
    }

    /// Stores one multipart part under its session (not content-addressed: parts
    /// are only verified as a whole at completion). The body must be exactly
    /// `size` bytes: a longer body is cut off as soon as it passes `size`, and
    /// a wrong-sized body leaves nothing behind. A part replaces the earlier
    /// upload of the same number atomically (local: written beside it, then
    /// renamed). Returns the md5 hex ETag.
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
        let mut body = body;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(32);
        let local = self.local_path(&key);
        let mut guard =
            crate::diskspace::Guard::start(local.as_ref().and(self.reserve.as_ref()), None)?;
        // Local parts are written to a temporary name first so a re-upload
        // never leaves a half-written part under the real name.
        let temp = local
            .as_ref()
            .map(|p| p.with_extension(format!("{}.tmp", Uuid::new_v4().simple())));
        let temp_w = temp.clone();
        let worker = tokio::task::spawn_blocking(move || -> std::io::Result<(String, u64)> {
            use md5::Digest as _;
            let mut md5 = md5::Md5::new();
            let mut file = match &temp_w {
                Some(p) => {
                    std::fs::create_dir_all(p.parent().expect("part keys have a parent"))?;
                    Some(std::io::BufWriter::with_capacity(
                        1 << 20,
                        std::fs::File::create(p)?,
                    ))
                }
                None => None,
            };
            let mut size = 0;
            while let Some(c) = rx.blocking_recv() {
                md5.update(&c);
                if let Some(f) = file.as_mut() {
                    guard.wrote(c.len() as u64)?;
                    f.write_all(&c)?;
                }
                size += c.len() as u64;
            }
            if let Some(f) = file {
                f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            }
            Ok((hex::encode(md5.finalize()), size))
        });
        let mut remote = if self.local_root.is_none() {
            Some(WriteMultipart::new(
                self.store.put_multipart(&key.path()).await?,
            ))
        } else {
            None
        };
        let mut failure = None;
        let mut received = 0u64;
        while let Some(next) = body.next().await {
            match next {
                Ok(chunk) => {
                    received += chunk.len() as u64;
                    if received > size {
                        failure = Some(StorageError::TooLong(size));
                        break;
                    }
                    if let Some(w) = remote.as_mut() {
                        if let Err(e) = w.wait_for_capacity(8).await {
                            failure = Some(e.into());
                            break;
                        }
                        w.write(&chunk);
                    }
                    if tx.send(chunk).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    failure = Some(StorageError::Body(e.to_string()));
                    break;
                }
            }
        }
        drop(tx);
        let res = worker
            .await
            .map_err(|e| StorageError::Io(std::io::Error::other(e)))
            .and_then(|r| r.map_err(StorageError::from));
        let failure = match (failure, &res) {
            (Some(f), _) => Some(f),
            (None, Err(_)) => None,
            (None, Ok((_, got))) if *got != size => Some(StorageError::SizeMismatch {
                expected: size,
                actual: *got,
            }),
            (None, Ok(_)) => None,
        };
        if let Some(f) = failure {
            match remote {
                Some(w) => {
                    let _ = w.abort().await;
                }
                None => {
                    if let Some(t) = &temp {
                        let _ = tokio::fs::remove_file(t).await;
                    }
                }
            }
            return Err(f);
        }
        let (etag, _) = match res {
            Ok(r) => r,
            Err(e) => {
                if let Some(t) = &temp {
                    let _ = tokio::fs::remove_file(t).await;
                }
                return Err(e);
            }
        };
        match remote {
            Some(w) => {
                w.finish().await?;
            }
            None => {
                let (from, to) = (temp.expect("local"), local.expect("local"));
                tokio::task::spawn_blocking(move || std::fs::rename(from, to))
                    .await
                    .map_err(|e| StorageError::Io(std::io::Error::other(e)))??;
            }
        }
        Ok(etag)
    }

    /// Size of a stored object (None: missing).
    async fn object_size(&self, key: &StorageKey) -> Result<Option<u64>, StorageError> {
        if let Some(p) = self.local_path(key) {
            return match tokio::fs::metadata(&p).await {
                Ok(m) => Ok(Some(m.len())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e.into()),
            };
        }
        match self.store.head(&key.path()).await {
            Ok(m) => Ok(Some(m.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
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
                .object_size(&StorageKey::UploadPart { session, part })
                .await?;
            if have != Some(*want) {
                return Err(StorageError::PartMissing { part });
            }
        }
        let this = self.clone();
        let stream = futures::stream::iter(1..=sizes.len() as u32)
            .then(move |part| {
                let this = this.clone();
                async move {
                    this.read_key(&StorageKey::UploadPart { session, part }, None)
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

    /// Deletes one part of a session.
    pub async fn delete_part(&self, session: Uuid, part: u32) {
        self.delete(&StorageKey::UploadPart { session, part }).await;
    }

    /// Deletes every object stored under a session's parts prefix (parts and
    /// any temporary part files).
    pub async fn delete_parts(&self, session: Uuid) {
        let prefix = ObjPath::from(format!("uploads/{session}"));
        let found: Vec<_> = match self.store.list(Some(&prefix)).try_collect().await {
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
        if let Some(root) = &self.local_root {
            let _ = tokio::fs::remove_dir(root.join(format!("uploads/{session}"))).await;
        }
    }

    /// Streams a stored blob, or a byte range of it.
    pub async fn read_blob(
        &self,
        sha: &Sha256,
        range: Option<Range<u64>>,
    ) -> Result<BoxStream<'static, Result<Bytes, StorageError>>, StorageError> {
        self.read_key(&StorageKey::Blob(sha.clone()), range).await
    }

    async fn read_key(
        &self,
        key: &StorageKey,
        range: Option<Range<u64>>,
    ) -> Result<BoxStream<'static, Result<Bytes, StorageError>>, StorageError> {
        if let Some(path) = self.local_path(key) {
            return local_stream(path, range).await;
        }
        let opts = GetOptions {
            range: range.map(GetRange::Bounded),
            ..Default::default()
        };
        let res = self.store.get_opts(&key.path(), opts).await?;
        Ok(res.into_stream().map_err(StorageError::from).boxed())
    }

    /// Reads a small blob (or a prefix of it) fully into memory, at most `max` bytes.
    pub async fn read_prefix(&self, sha: &Sha256, max: u64) -> Result<Bytes, StorageError> {
        self.read_range(sha, 0..max).await
    }

    /// Reads `range` of a blob into memory (callers bound the range).
    pub async fn read_range(&self, sha: &Sha256, range: Range<u64>) -> Result<Bytes, StorageError> {
        let mut stream = self.read_blob(sha, Some(range)).await?;
        let mut buf = bytes::BytesMut::new();
        while let Some(c) = stream.next().await {
            buf.extend_from_slice(&c?);
        }
        Ok(buf.freeze())
    }

    /// Stream a payload to a key (used by tests to plant objects).
    pub async fn put_raw(&self, key: &StorageKey, bytes: Bytes) -> Result<(), StorageError> {
        self.store
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
        let items: Vec<_> = self
            .store
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
        self.store
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
        if let Some(p) = self.local_path(&StorageKey::Blob(sha.clone())) {
            return match tokio::fs::remove_file(p).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e.into()),
            };
        }
        self.delete_path(&StorageKey::Blob(sha.clone()).path())
            .await
    }

    pub async fn delete_path(&self, path: &ObjPath) -> Result<(), StorageError> {
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
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
    .map_err(|e| StorageError::Io(std::io::Error::other(e)))?;
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

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> BoxStream<'static, T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
        futures::stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p)))
                .collect::<Vec<_>>(),
        )
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
        let stale = storage
            .list_stale("staging", chrono::Utc::now() + chrono::Duration::hours(1))
            .await
            .unwrap();
        assert!(stale.is_empty(), "staging left behind: {stale:?}");

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
    async fn local_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        roundtrip(Storage::local(dir.path()).unwrap()).await;
    }

    #[tokio::test]
    async fn memory_roundtrip() {
        roundtrip(Storage::from_url("memory://").unwrap()).await;
    }
}
