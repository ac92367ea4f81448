//! Multipart LFS uploads into an object store's own multipart upload (S3's,
//! here `object_store`'s in-memory store behind a wrapper that counts what is
//! read back): parts hashed in order complete without reading a byte; parts
//! out of order, or attempts that overlapped, are verified by reading the
//! joined object once; a joined object that does not verify starts over.
//! The same routes run against a real S3 server (Garage) in `tests/s3/`.

use actix_web::http::StatusCode;
use actix_web::test::{call_service, read_body, TestRequest};
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use hub_api::storage::Storage;
use hub_testkit::{app, ndjson, TestState};
use object_store::memory::InMemory;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{
    GetOptions, GetResult, ListResult, MultipartId, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use serde_json::{json, Value};
use sha2::Digest;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The in-memory store, counting the bytes read back from `staging/`.
#[derive(Debug, Default)]
struct Counting {
    inner: InMemory,
    staging_read: AtomicU64,
    uploads: std::sync::Mutex<std::collections::HashMap<String, Parts>>,
}

/// An upload's parts by index: (md5 ETag, bytes).
type Parts = Vec<Option<(String, Bytes)>>;

impl std::fmt::Display for Counting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Counting({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for Counting {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let head = options.head;
        let r = self.inner.get_opts(location, options).await?;
        if !head && location.as_ref().starts_with("staging/") {
            self.staging_read
                .fetch_add(r.range.end - r.range.start, Ordering::SeqCst);
        }
        Ok(r)
    }
    async fn delete(&self, location: &Path) -> object_store::Result<()> {
        self.inner.delete(location).await
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.inner.copy(from, to).await
    }
    async fn copy_if_not_exists(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.inner.copy_if_not_exists(from, to).await
    }
}

/// S3's multipart upload as the hub relies on it: parts in any order, a
/// re-sent part replaces the earlier one, each part's ETag is its md5, and
/// completion refuses a part whose ETag is not the one listed.
#[async_trait]
impl MultipartStore for Counting {
    async fn create_multipart(&self, _path: &Path) -> object_store::Result<MultipartId> {
        let id = uuid::Uuid::new_v4().to_string();
        self.uploads.lock().unwrap().insert(id.clone(), vec![]);
        Ok(id)
    }
    async fn put_part(
        &self,
        _path: &Path,
        id: &MultipartId,
        part_idx: usize,
        data: PutPayload,
    ) -> object_store::Result<PartId> {
        let bytes: Bytes = data.into();
        let etag = hex::encode(md5::Md5::digest(&bytes));
        let mut uploads = self.uploads.lock().unwrap();
        let parts = uploads.get_mut(id).ok_or(object_store::Error::NotFound {
            path: id.clone(),
            source: "no such upload".into(),
        })?;
        if parts.len() <= part_idx {
            parts.resize(part_idx + 1, None);
        }
        parts[part_idx] = Some((etag.clone(), bytes));
        Ok(PartId { content_id: etag })
    }
    async fn complete_multipart(
        &self,
        path: &Path,
        id: &MultipartId,
        listed: Vec<PartId>,
    ) -> object_store::Result<PutResult> {
        let parts =
            self.uploads
                .lock()
                .unwrap()
                .remove(id)
                .ok_or(object_store::Error::NotFound {
                    path: id.clone(),
                    source: "no such upload".into(),
                })?;
        let mut joined = Vec::new();
        for (i, want) in listed.iter().enumerate() {
            match parts.get(i).cloned().flatten() {
                Some((etag, bytes)) if etag == want.content_id => joined.extend_from_slice(&bytes),
                _ => {
                    return Err(object_store::Error::Generic {
                        store: "counting",
                        source: format!("InvalidPart {}", i + 1).into(),
                    })
                }
            }
        }
        self.inner.put(path, joined.into()).await
    }
    async fn abort_multipart(&self, _path: &Path, id: &MultipartId) -> object_store::Result<()> {
        self.uploads.lock().unwrap().remove(id);
        Ok(())
    }
}

fn bearer(t: &str) -> (&'static str, String) {
    ("Authorization", format!("Bearer {t}"))
}

macro_rules! send {
    ($app:expr, $req:expr) => {{
        let resp = call_service(&$app, $req.to_request()).await;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = read_body(resp).await;
        (status, headers, body)
    }};
}

const CHUNK: usize = 4096;

async fn setup() -> (TestState, Arc<Counting>, String) {
    let store = Arc::new(Counting::default());
    let storage = Storage::object_store_with_native(store.clone(), store.clone(), "counting://");
    let mut t = TestState::over(storage).await;
    t.state.limits.multipart_threshold = 1000;
    t.state.limits.multipart_chunk = CHUNK as u64;
    let (_, tok) = t.user("nina", false, &["write"]).await;
    (t, store, tok)
}

fn content(n: usize, seed: u32) -> Vec<u8> {
    (0..n as u32)
        .map(|i| (i.wrapping_mul(seed) >> 3) as u8)
        .collect()
}

fn local(url: &Value) -> String {
    url.as_str()
        .unwrap()
        .trim_start_matches("http://hub.test")
        .to_string()
}

/// The batch's upload action for `bytes` (a new session each call).
async fn batch<S>(app: &S, tok: &str, repo: &str, bytes: &[u8]) -> Value
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
    >,
{
    let sha = hex::encode(sha2::Sha256::digest(bytes));
    let body = json!({"operation": "upload", "transfers": ["basic", "multipart"],
                      "objects": [{"oid": sha, "size": bytes.len()}]});
    let (st, _, b) = send!(
        app,
        TestRequest::post()
            .uri(&format!("/nina/{repo}.git/info/lfs/objects/batch"))
            .insert_header(bearer(tok))
            .set_payload(body.to_string())
    );
    assert_eq!(st, StatusCode::OK);
    let resp: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(resp["transfer"], "multipart");
    resp["objects"][0]["actions"]["upload"].clone()
}

async fn put_part<S>(app: &S, upload: &Value, n: usize, bytes: &[u8]) -> (StatusCode, String)
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
    >,
{
    let url = local(&upload["header"][n.to_string()]);
    let (st, h, _) = send!(
        app,
        TestRequest::put().uri(&url).set_payload(bytes.to_vec())
    );
    let etag = h
        .get("etag")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (st, etag)
}

async fn complete<S>(app: &S, upload: &Value, sha: &str, etags: &[String]) -> (StatusCode, Value)
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
    >,
{
    let parts: Vec<Value> = etags
        .iter()
        .enumerate()
        .map(|(i, e)| json!({"partNumber": i + 1, "etag": e}))
        .collect();
    let (st, _, b) = send!(
        app,
        TestRequest::post()
            .uri(&local(&upload["href"]))
            .set_json(json!({"oid": sha, "parts": parts}))
    );
    (st, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

/// Commits the uploaded object and reads it back through `/resolve`.
async fn commit_and_read<S>(app: &S, tok: &str, repo: &str, bytes: &[u8]) -> Vec<u8>
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
    >,
{
    let sha = hex::encode(sha2::Sha256::digest(bytes));
    let line = json!({"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256", "oid": sha, "size": bytes.len()}});
    let (st, _, b) = send!(
        app,
        TestRequest::post()
            .uri(&format!("/api/models/nina/{repo}/commit/main"))
            .insert_header(bearer(tok))
            .set_payload(ndjson("up", None, &[line]))
    );
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    let (st, _, b) = send!(
        app,
        TestRequest::get().uri(&format!("/nina/{repo}/resolve/main/w.bin"))
    );
    assert_eq!(st, StatusCode::OK);
    b.to_vec()
}

async fn new_repo<S>(app: &S, tok: &str, name: &str)
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
    >,
{
    let (st, _, _) = send!(
        app,
        TestRequest::post()
            .uri("/api/repos/create")
            .insert_header(bearer(tok))
            .set_json(json!({"name": name}))
    );
    assert_eq!(st, StatusCode::OK);
}

#[actix_web::test]
async fn parts_in_order_complete_without_reading_back_a_byte() {
    let (t, store, tok) = setup().await;
    let app = app(&t.state).await;
    new_repo(&app, &tok, "seq").await;
    // 3.5 parts: the last one ends mid-block.
    let bytes = content(CHUNK * 3 + 1000, 2654435761);
    let sha = hex::encode(sha2::Sha256::digest(&bytes));
    let upload = batch(&app, &tok, "seq", &bytes).await;
    let mut etags = vec![];
    for (i, c) in bytes.chunks(CHUNK).enumerate() {
        // A retried part (same bytes, after the first attempt ended) keeps
        // the chain: it ran alone.
        if i == 1 {
            let (st, _) = put_part(&app, &upload, i + 1, c).await;
            assert_eq!(st, StatusCode::OK);
        }
        // A body cut short is refused before anything is sent to the store.
        if i == 2 {
            let (st, _) = put_part(&app, &upload, i + 1, &c[..100]).await;
            assert_eq!(st, StatusCode::BAD_REQUEST);
        }
        let (st, etag) = put_part(&app, &upload, i + 1, c).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(
            etag.trim_matches('"'),
            hex::encode(md5::Md5::digest(c)),
            "the ETag is the part's md5"
        );
        etags.push(etag);
    }
    let (st, b) = complete(&app, &upload, &sha, &etags).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(
        store.staging_read.load(Ordering::SeqCst),
        0,
        "completing read nothing back"
    );
    assert_eq!(commit_and_read(&app, &tok, "seq", &bytes).await, bytes);
    // Nothing is left in staging.
    let left: Vec<_> =
        futures::TryStreamExt::try_collect::<Vec<_>>(store.list(Some(&Path::from("staging"))))
            .await
            .unwrap();
    assert!(left.is_empty(), "{left:?}");
}

#[actix_web::test]
async fn parts_out_of_order_are_verified_by_one_read() {
    let (t, store, tok) = setup().await;
    let app = app(&t.state).await;
    new_repo(&app, &tok, "ooo").await;
    let bytes = content(CHUNK * 3 + 10, 40503);
    let sha = hex::encode(sha2::Sha256::digest(&bytes));
    let upload = batch(&app, &tok, "ooo", &bytes).await;
    let chunks: Vec<&[u8]> = bytes.chunks(CHUNK).collect();
    let mut etags = vec![String::new(); chunks.len()];
    for i in [3, 0, 2, 1] {
        let (st, etag) = put_part(&app, &upload, i + 1, chunks[i]).await;
        assert_eq!(st, StatusCode::OK);
        etags[i] = etag;
    }
    let (st, b) = complete(&app, &upload, &sha, &etags).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(
        store.staging_read.load(Ordering::SeqCst),
        bytes.len() as u64,
        "the joined object was read once"
    );
    assert_eq!(commit_and_read(&app, &tok, "ooo", &bytes).await, bytes);
}

#[actix_web::test]
async fn a_wrong_part_is_refused_and_the_parts_start_over() {
    let (t, _store, tok) = setup().await;
    let app = app(&t.state).await;
    new_repo(&app, &tok, "bad").await;
    let bytes = content(CHUNK * 2 + 77, 97);
    let sha = hex::encode(sha2::Sha256::digest(&bytes));
    let upload = batch(&app, &tok, "bad", &bytes).await;
    let chunks: Vec<&[u8]> = bytes.chunks(CHUNK).collect();
    // Part 2 holds other bytes of the right size.
    let mut wrong = chunks[1].to_vec();
    wrong[17] ^= 0xff;
    let mut etags = vec![];
    for (i, c) in [chunks[0], &wrong, chunks[2]].into_iter().enumerate() {
        let (st, etag) = put_part(&app, &upload, i + 1, c).await;
        assert_eq!(st, StatusCode::OK);
        etags.push(etag);
    }
    let (st, b) = complete(&app, &upload, &sha, &etags).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{b}");
    assert!(
        b["error"]
            .as_str()
            .unwrap_or_default()
            .contains("upload every part again"),
        "{b}"
    );
    // Nothing was linked: a commit naming the object is refused.
    let line = json!({"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256", "oid": sha, "size": bytes.len()}});
    let (st, _, _) = send!(
        app,
        TestRequest::post()
            .uri("/api/models/nina/bad/commit/main")
            .insert_header(bearer(&tok))
            .set_payload(ndjson("up", None, &[line]))
    );
    assert_eq!(st, StatusCode::BAD_REQUEST);
    // The same session takes the right parts and completes.
    let mut etags = vec![];
    for (i, c) in chunks.iter().enumerate() {
        let (st, etag) = put_part(&app, &upload, i + 1, c).await;
        assert_eq!(st, StatusCode::OK);
        etags.push(etag);
    }
    let (st, b) = complete(&app, &upload, &sha, &etags).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(commit_and_read(&app, &tok, "bad", &bytes).await, bytes);
}

#[actix_web::test]
async fn an_attempt_that_never_ended_forces_a_read_back() {
    let (t, store, tok) = setup().await;
    let app = app(&t.state).await;
    new_repo(&app, &tok, "cut").await;
    let bytes = content(CHUNK * 2 + 5, 7919);
    let sha = hex::encode(sha2::Sha256::digest(&bytes));
    let upload = batch(&app, &tok, "cut", &bytes).await;
    let mut etags = vec![];
    for (i, c) in bytes.chunks(CHUNK).enumerate() {
        let (st, etag) = put_part(&app, &upload, i + 1, c).await;
        assert_eq!(st, StatusCode::OK);
        etags.push(etag);
    }
    // An attempt at part 1 that reached the store and never ended (its
    // replica died mid-send): the store may hold its bytes.
    sqlx::query(
        "UPDATE upload_part_attempts SET started = started + 1, in_flight = in_flight + 1
         WHERE part_number = 1",
    )
    .execute(&t.state.db)
    .await
    .unwrap();
    let (st, b) = complete(&app, &upload, &sha, &etags).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(
        store.staging_read.load(Ordering::SeqCst),
        bytes.len() as u64
    );
    assert_eq!(commit_and_read(&app, &tok, "cut", &bytes).await, bytes);
}
