//! Pulling through a fake hub that speaks hub-api's `/resolve` and revision routes, with
//! the real `hf-hub` client: only engine files are fetched, everything is verified, the
//! cache is shared, corruption (on the wire or on disk) is caught and re-fetched, and the
//! cache keeps within its limits by evicting what no loaded or loading model uses.

use crate::common::fake_hub::*;
use crate::common::*;
use hub_worker::engine::{ClassifyOptions, EmbedOptions, EngineConfig, Model, TextInput};
use hub_worker::pull::cache::{BlobCache, CacheError, CacheLimits, Limit, MinFree, NoRoom};
use hub_worker::pull::{PullError, PullRequest, Puller};
use std::collections::BTreeMap;
use std::sync::Arc;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

fn tiny_repo_files() -> BTreeMap<String, HubFile> {
    let (dir, _) = tiny_dir("distilbert", &small_tokenizer_dir());
    let mut files = files_from_dir(&dir);
    let extra = |s: &str, lfs| HubFile {
        content: Arc::new(s.as_bytes().to_vec()),
        lfs,
    };
    files.insert("README.md".into(), extra("# tiny\n", false));
    files.insert("pytorch_model.bin".into(), extra("pickle!", true));
    files.insert("onnx/model.onnx".into(), extra("onnx", true));
    files.insert("sub/model.safetensors".into(), extra("nested", true));
    files
}

fn request(repo: &str) -> PullRequest {
    PullRequest {
        repo_id: repo.to_string(),
        revision: COMMIT.to_string(),
        token: PULL_TOKEN.to_string(),
        on_download: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_only_engine_files_verifies_and_caches() {
    let hub = FakeHub::start().await;
    hub.state.add_repo("acme/tiny", COMMIT, tiny_repo_files());
    let cache_dir = tempfile::tempdir().unwrap();
    let puller = puller_with(&hub, cache_dir.path(), None);

    let pulled = puller.pull(&request("acme/tiny"), None).await.unwrap();
    let mut got = pulled.downloaded.clone();
    got.sort();
    assert_eq!(
        got,
        vec!["config.json", "model.safetensors", "tokenizer.json"]
    );
    for never in [
        "README.md",
        "pytorch_model.bin",
        "onnx/model.onnx",
        "sub/model.safetensors",
    ] {
        assert_eq!(hub.state.downloads_of(never), 0, "{never} was fetched");
        assert!(!pulled.dir.join(never).exists());
    }
    // Files are links into the verified blob store.
    let blobs = puller.cache().root().join("blobs/sha256");
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        let real = pulled.dir.join(f).canonicalize().unwrap();
        assert!(real.starts_with(&blobs), "{}", real.display());
    }
    // Nothing is left in tmp/.
    assert_eq!(
        std::fs::read_dir(puller.cache().root().join("tmp"))
            .unwrap()
            .count(),
        0
    );
    // The pulled directory loads and classifies.
    let dir = pulled.dir.clone();
    let model =
        tokio::task::spawn_blocking(move || Model::load(&dir, None, &EngineConfig::default()))
            .await
            .unwrap()
            .unwrap();
    let out = model
        .classify(
            vec![TextInput::Single("hello".into())],
            ClassifyOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(out.labels[0].len(), 2);

    // Second pull of the same revision: all from cache, nothing downloaded, and
    // nothing re-hashed (the blobs are as they were verified: their markers say so).
    assert!(pulled.rehashed.is_empty(), "{:?}", pulled.rehashed);
    let again = puller.pull(&request("acme/tiny"), None).await.unwrap();
    assert!(again.downloaded.is_empty(), "{:?}", again.downloaded);
    assert!(again.rehashed.is_empty(), "{:?}", again.rehashed);
    assert_eq!(hub.state.downloads_of("model.safetensors"), 1);

    // Another repo with the same weights shares the blobs.
    hub.state.add_repo("other/copy", COMMIT, tiny_repo_files());
    let copy = puller.pull(&request("other/copy"), None).await.unwrap();
    assert!(copy.downloaded.is_empty(), "{:?}", copy.downloaded);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corruption_is_detected_and_refetched() {
    let hub = FakeHub::start().await;
    hub.state.add_repo("acme/tiny", COMMIT, tiny_repo_files());
    let cache_dir = tempfile::tempdir().unwrap();
    let puller = puller_with(&hub, cache_dir.path(), None);

    // On the wire, once: the first transfer fails verification and is retried.
    corrupt(&hub, "model.safetensors", 1);
    corrupt(&hub, "config.json", 1);
    let pulled = puller.pull(&request("acme/tiny"), None).await.unwrap();
    assert_eq!(hub.state.downloads_of("model.safetensors"), 2);
    assert_eq!(hub.state.downloads_of("config.json"), 2);
    let want = tiny_repo_files();
    assert_eq!(
        std::fs::read(pulled.dir.join("model.safetensors")).unwrap(),
        *want["model.safetensors"].content
    );

    // On disk, after the fact: the next pull notices, re-fetches, never serves it.
    let blob = pulled.dir.join("model.safetensors").canonicalize().unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&blob, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut bytes = std::fs::read(&blob).unwrap();
        let n = bytes.len();
        bytes[n - 1] ^= 0x55;
        std::fs::write(&blob, bytes).unwrap();
    }
    // (Same size, new mtime: the verified marker no longer vouches for it, so it is
    // re-hashed and found corrupt.)
    let again = puller.pull(&request("acme/tiny"), None).await.unwrap();
    assert_eq!(again.downloaded, vec!["model.safetensors"]);
    assert_eq!(hub.state.downloads_of("model.safetensors"), 3);
    assert_eq!(
        std::fs::read(again.dir.join("model.safetensors")).unwrap(),
        *want["model.safetensors"].content
    );

    // Always corrupt: the pull fails, and the bad bytes never enter the blob store.
    corrupt(&hub, "tokenizer.json", 100);
    let cache2 = tempfile::tempdir().unwrap();
    let puller2 = puller_with(&hub, cache2.path(), None);
    let err = puller2.pull(&request("acme/tiny"), None).await.unwrap_err();
    assert!(
        matches!(
            err,
            PullError::Cache(hub_worker::pull::cache::CacheError::DigestMismatch { .. })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
    let blob_names: Vec<String> = std::fs::read_dir(puller2.cache().root().join("blobs/sha256"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let tok_sha = want["tokenizer.json"].sha256();
    assert!(!blob_names.contains(&tok_sha));
    assert_eq!(
        std::fs::read_dir(puller2.cache().root().join("models"))
            .unwrap()
            .count(),
        0,
        "a model directory was materialised from a failed pull"
    );
    hub.stop().await;
}

/// What a test's download hook saw of one call.
#[derive(Debug)]
struct SeenDownload {
    repo_path: String,
    files: Vec<String>,
    bytes: Vec<u8>,
    blob: std::path::PathBuf,
    blob_existed: bool,
}

/// Work a test's download hook "starts": counts its drops.
struct CountedWork(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for CountedWork {
    fn drop(&mut self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_download_hook_sees_each_weight_file_before_its_check() {
    use hub_worker::pull::{Downloaded, Early};
    use std::sync::atomic::Ordering::SeqCst;
    let hub = FakeHub::start().await;
    hub.state.add_repo("acme/tiny", COMMIT, tiny_repo_files());
    let cache_dir = tempfile::tempdir().unwrap();
    let puller = puller_with(&hub, cache_dir.path(), None);
    // The weights' first transfer fails its check: the work started on it is dropped.
    corrupt(&hub, "model.safetensors", 1);
    let seen = Arc::new(std::sync::Mutex::new(Vec::<SeenDownload>::new()));
    let dropped = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut req = request("acme/tiny");
    req.on_download = Some({
        let (seen, dropped) = (seen.clone(), dropped.clone());
        Arc::new(move |d: &Downloaded<'_>| {
            seen.lock().unwrap().push(SeenDownload {
                repo_path: d.repo_path.to_string(),
                files: d.files.to_vec(),
                bytes: std::fs::read(d.file).unwrap(),
                blob: d.blob.to_path_buf(),
                blob_existed: d.blob.exists(),
            });
            Some(Early::new(CountedWork(dropped.clone())))
        })
    });
    let pulled = puller.pull(&req, None).await.unwrap();

    let want = tiny_repo_files();
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    // Only the weights (config.json and tokenizer.json are not), once per transfer.
    assert_eq!(seen.len(), 2, "{seen:?}");
    let blob = puller
        .cache()
        .root()
        .join("blobs/sha256")
        .join(want["model.safetensors"].sha256());
    for call in &seen {
        assert_eq!(call.repo_path, "model.safetensors");
        let mut files = call.files.clone();
        files.sort();
        assert_eq!(
            files,
            ["config.json", "model.safetensors", "tokenizer.json"]
        );
        assert_eq!(call.blob, blob);
        assert!(!call.blob_existed, "called before the file is verified");
    }
    assert_ne!(seen[0].bytes, *want["model.safetensors"].content);
    assert_eq!(seen[1].bytes, *want["model.safetensors"].content);
    assert_eq!(
        dropped.load(SeqCst),
        1,
        "the corrupt transfer's work was stopped"
    );
    assert_eq!(pulled.early.len(), 1);
    assert!(pulled.early[0].get::<CountedWork>().is_some());
    drop(pulled);
    assert_eq!(dropped.load(SeqCst), 2);

    // From the cache: nothing is downloaded, so nothing is started.
    let again = puller.pull(&req, None).await.unwrap();
    assert!(again.downloaded.is_empty() && again.early.is_empty());

    // A pull that fails after a weight file arrived stops what was started on it.
    corrupt(&hub, "tokenizer.json", 100);
    let cache2 = tempfile::tempdir().unwrap();
    let puller2 = puller_with(&hub, cache2.path(), None);
    puller2.pull(&req, None).await.unwrap_err();
    assert_eq!(dropped.load(SeqCst), 3);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_errors_say_why() {
    let hub = FakeHub::start().await;
    hub.state.add_repo("acme/tiny", COMMIT, tiny_repo_files());
    let mut pickles = BTreeMap::new();
    for (p, f) in tiny_repo_files() {
        if !p.ends_with(".safetensors") && !p.ends_with(".onnx") {
            pickles.insert(p, f);
        }
    }
    hub.state.add_repo("acme/pickle", COMMIT, pickles);
    let mut evil = tiny_repo_files();
    evil.insert(
        "..\\evil.safetensors".into(),
        HubFile {
            content: Arc::new(b"x".to_vec()),
            lfs: true,
        },
    );
    hub.state.add_repo("acme/evil", COMMIT, evil);
    // A tokenizer bigger than any real one: refused from the listing, before
    // anything is downloaded (the worker would read it whole).
    let mut huge = tiny_repo_files();
    huge.insert(
        "tokenizer.json".into(),
        HubFile {
            content: Arc::new(vec![
                b' ';
                (hub_worker::pull::MAX_SIDE_FILE_BYTES + 1) as usize
            ]),
            lfs: true,
        },
    );
    hub.state.add_repo("acme/huge", COMMIT, huge);
    let cache_dir = tempfile::tempdir().unwrap();
    let puller = puller_with(&hub, cache_dir.path(), None);

    let mut bad_token = request("acme/tiny");
    bad_token.token = "nope".into();
    let err = puller.pull(&bad_token, None).await.unwrap_err();
    assert!(
        matches!(err, PullError::Unauthorized { status: 401, .. }),
        "{err}"
    );

    let err = puller
        .pull(&request("acme/missing"), None)
        .await
        .unwrap_err();
    assert!(matches!(err, PullError::NotFound { .. }), "{err}");

    let err = puller
        .pull(&request("acme/pickle"), None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("pytorch_model.bin"), "{err}");
    assert!(err.to_string().contains("never unpickles"), "{err}");

    let err = puller.pull(&request("acme/evil"), None).await.unwrap_err();
    assert!(err.to_string().contains("unsafe path"), "{err}");

    let err = puller.pull(&request("acme/huge"), None).await.unwrap_err();
    assert!(matches!(err, PullError::SideFileTooBig { .. }), "{err}");
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
    assert_eq!(hub.state.downloads_of("model.safetensors"), 0);

    let err = puller
        .pull(&request("acme/tiny"), Some(10))
        .await
        .unwrap_err();
    assert!(matches!(err, PullError::TooBig { .. }), "{err}");
    assert_eq!(hub.state.downloads_of("model.safetensors"), 0);

    let mut branch = request("acme/tiny");
    branch.revision = "main".into();
    assert!(matches!(
        puller.pull(&branch, None).await.unwrap_err(),
        PullError::BadRevision(_)
    ));
    let err = puller.pull(&request("../etc"), None).await.unwrap_err();
    assert!(matches!(err, PullError::BadRepoId(_)), "{err}");
    hub.stop().await;
}

/// The real MiniLM through the fake hub (90 MB over local HTTP), then embeddings that match
/// sentence-transformers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minilm_pulled_through_the_hub_matches_reference() {
    let Some(minilm) = minilm_dir("minilm_pulled_through_the_hub_matches_reference") else {
        return;
    };
    let hub = FakeHub::start().await;
    hub.state.add_repo(
        "sentence-transformers/all-MiniLM-L6-v2",
        COMMIT,
        files_from_dir(&minilm),
    );
    let cache_dir = tempfile::tempdir().unwrap();
    let puller = puller_with(&hub, cache_dir.path(), None);
    let pulled = puller
        .pull(&request("sentence-transformers/all-MiniLM-L6-v2"), None)
        .await
        .unwrap();
    let mut got = pulled.downloaded.clone();
    got.sort();
    assert_eq!(
        got,
        vec![
            "1_Pooling/config.json",
            "config.json",
            "model.safetensors",
            "modules.json",
            "sentence_bert_config.json",
            "special_tokens_map.json",
            "tokenizer.json",
            "tokenizer_config.json",
        ]
    );
    let model = load(&pulled.dir, None, EngineConfig::default()).await;
    let reference = fixture_json("minilm-reference.json");
    let first = &reference["sentences"][0];
    let out = model
        .embed(
            vec![first["text"].as_str().unwrap().to_string()],
            EmbedOptions::default(),
        )
        .await
        .unwrap();
    assert!(cosine(&out.vectors[0], &f32s(&first["embedding"])) >= 0.9999);

    // A later load of the same revision (a wake): nothing downloaded, nothing re-hashed;
    // without the markers every file is hashed again.
    drop(model);
    let req = request("sentence-transformers/all-MiniLM-L6-v2");
    let (mut vouched, mut rehashing) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let again = puller.pull(&req, None).await.unwrap();
        vouched.push(t.elapsed());
        assert!(again.downloaded.is_empty(), "{:?}", again.downloaded);
        assert!(again.rehashed.is_empty(), "{:?}", again.rehashed);
        for e in std::fs::read_dir(puller.cache().root().join("blobs/verified")).unwrap() {
            std::fs::remove_file(e.unwrap().path()).unwrap();
        }
        let t = std::time::Instant::now();
        let hashed = puller.pull(&req, None).await.unwrap();
        rehashing.push(t.elapsed());
        assert_eq!(hashed.rehashed.len(), 8, "{:?}", hashed.rehashed);
    }
    eprintln!("MiniLM pull from the cache: {vouched:?} with markers, {rehashing:?} re-hashing");
    hub.stop().await;
}

/// A repo whose files pull but are no model: `config.json` naming `tag`, and `weights`
/// (an LFS file, `size` bytes of `fill`).
fn synthetic_repo(tag: &str, weights: &str, size: usize, fill: u8) -> BTreeMap<String, HubFile> {
    let mut files = BTreeMap::new();
    files.insert(
        "config.json".to_string(),
        HubFile {
            content: Arc::new(format!("{{\"tag\": \"{tag}\"}}").into_bytes()),
            lfs: false,
        },
    );
    files.insert(
        weights.to_string(),
        HubFile {
            content: Arc::new(vec![fill; size]),
            lfs: true,
        },
    );
    files
}

/// The hub sends `file` corrupted on its next `times` transfers.
fn corrupt(hub: &FakeHub, file: &str, times: usize) {
    hub.state
        .corrupt
        .lock()
        .unwrap()
        .insert(file.to_string(), times);
}

/// A puller whose cache keeps within `max` bytes (no free-space floor: the tests must not
/// depend on the disk they run on).
fn puller_with(hub: &FakeHub, dir: &std::path::Path, max: Option<u64>) -> Puller {
    let limits = CacheLimits {
        max_bytes: max,
        min_free: MinFree::Bytes(0),
    };
    Puller::new(BlobCache::open_with(dir, limits).unwrap(), &hub.url)
}

/// Bytes under the cache directory now.
fn cache_bytes(puller: &Puller) -> u64 {
    puller.cache().refresh_metrics().unwrap();
    puller.cache().metrics().used_bytes.get(&[]) as u64
}

fn entries(dir: std::path::PathBuf) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn no_room(err: &PullError) -> &NoRoom {
    match err {
        PullError::Cache(CacheError::NoRoom(n)) => n,
        other => panic!("not a NoRoom: {other}"),
    }
}

/// Every blob in the store is what its name says (nothing partial entered it).
fn store_is_sound(puller: &Puller) {
    use sha2::Digest as _;
    for name in entries(puller.cache().root().join("blobs/sha256")) {
        let bytes = std::fs::read(puller.cache().root().join("blobs/sha256").join(&name)).unwrap();
        assert_eq!(hex::encode(sha2::Sha256::digest(&bytes)), name);
    }
}

/// A budget smaller than two models: pulling the second evicts the first, which no model
/// uses any more, and pulling the first again evicts the second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_smaller_than_two_models_evicts_the_one_not_in_use() {
    let hub = FakeHub::start().await;
    hub.state.add_repo(
        "acme/a",
        COMMIT,
        synthetic_repo("a", "a.safetensors", 200_000, 1),
    );
    hub.state.add_repo(
        "acme/b",
        COMMIT,
        synthetic_repo("b", "b.safetensors", 200_000, 2),
    );
    let cache_dir = tempfile::tempdir().unwrap();
    let puller = puller_with(&hub, cache_dir.path(), Some(300_000));

    let a = puller.pull(&request("acme/a"), None).await.unwrap();
    let a_dir = a.dir.clone();
    let a_blob = a_dir.join("a.safetensors").canonicalize().unwrap();
    drop(a); // no model uses it any more
    let b = puller.pull(&request("acme/b"), None).await.unwrap();
    assert!(!a_dir.exists(), "the unused model was kept");
    assert!(!a_blob.exists(), "its weights were kept");
    assert_eq!(
        std::fs::read(b.dir.join("b.safetensors")).unwrap(),
        vec![2u8; 200_000]
    );
    assert!(cache_bytes(&puller) <= 300_000, "{}", cache_bytes(&puller));
    assert_eq!(entries(puller.cache().root().join("models")).len(), 1);
    let b_dir = b.dir.clone();
    drop(b);

    // Back to A: downloaded again, B makes room.
    let again = puller.pull(&request("acme/a"), None).await.unwrap();
    assert_eq!(hub.state.downloads_of("a.safetensors"), 2);
    assert!(!b_dir.exists());
    assert_eq!(
        std::fs::read(again.dir.join("a.safetensors")).unwrap(),
        vec![1u8; 200_000]
    );
    let m = puller.cache().metrics();
    assert_eq!(m.evictions.get(&["model"]), 2);
    assert!(m.evicted_bytes.get(&["model"]) >= 400_000);
    assert!(entries(puller.cache().root().join("tmp")).is_empty());
    store_is_sound(&puller);
    hub.stop().await;
}

/// A loaded model is never evicted: a pull that only fits without it fails with a clear
/// reason, downloading and leaving nothing, while the model keeps serving; once it is
/// unloaded the same pull evicts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loaded_model_is_never_evicted() {
    let hub = FakeHub::start().await;
    hub.state.add_repo("acme/tiny", COMMIT, tiny_repo_files());
    let cache_dir = tempfile::tempdir().unwrap();
    // The tiny model's size in the cache decides the budget: it, or the other, not both.
    let tiny_bytes = {
        let probe_dir = tempfile::tempdir().unwrap();
        let probe = puller_with(&hub, probe_dir.path(), None);
        probe.pull(&request("acme/tiny"), None).await.unwrap();
        cache_bytes(&probe)
    };
    let big = tiny_bytes as usize;
    hub.state.add_repo(
        "acme/big",
        COMMIT,
        synthetic_repo("big", "big.safetensors", big, 9),
    );
    let budget = tiny_bytes + tiny_bytes / 2;
    let puller = puller_with(&hub, cache_dir.path(), Some(budget));

    let pulled = puller.pull(&request("acme/tiny"), None).await.unwrap();
    let model = load(&pulled.dir, None, EngineConfig::default()).await;
    model.keep_alive(Box::new(pulled.pin.clone()));
    let tiny_dir = pulled.dir.clone();
    drop(pulled); // the model alone keeps it now

    let err = puller.pull(&request("acme/big"), None).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("the worker's model cache needs "), "{msg}");
    assert!(msg.contains("--cache-max-gib"), "{msg}");
    assert!(
        msg.contains("in use by models loaded or loading on this worker"),
        "{msg}"
    );
    assert!(
        !msg.contains("acme/tiny"),
        "names another tenant's model: {msg}"
    );
    assert!(!err.is_transient());
    let n = no_room(&err);
    assert_eq!(n.need, big as u64 + "{\"tag\": \"big\"}".len() as u64);
    assert!(n.pinned >= tiny_bytes / 2, "{n:?}");
    // Nothing was downloaded, evicted or left behind.
    assert_eq!(hub.state.downloads_of("big.safetensors"), 0);
    assert!(tiny_dir.join("model.safetensors").exists());
    assert_eq!(
        entries(puller.cache().root().join("models")),
        vec![tiny_dir.file_name().unwrap().to_string_lossy().into_owned()]
    );
    assert!(entries(puller.cache().root().join("tmp")).is_empty());
    assert_eq!(entries(puller.cache().root().join("pins")).len(), 1);
    // The model still serves (and re-reading its files works).
    let out = model
        .classify(
            vec![TextInput::Single("hello".into())],
            ClassifyOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(out.labels[0].len(), 2);
    let again = puller.pull(&request("acme/tiny"), None).await.unwrap();
    assert!(again.downloaded.is_empty());
    drop(again);

    // Unloaded: the same pull now fits, and the tiny model makes room.
    drop(model);
    let big_pulled = puller.pull(&request("acme/big"), None).await.unwrap();
    assert!(!tiny_dir.exists());
    assert_eq!(
        std::fs::read(big_pulled.dir.join("big.safetensors"))
            .unwrap()
            .len(),
        big
    );
    assert_eq!(puller.cache().metrics().refused.get(&[]), 1);
    store_is_sound(&puller);
    hub.stop().await;
}

/// Pulls of models that share their weights, racing a pull of another model that can only
/// fit by evicting them: every pull either gets a whole, correct model directory or fails
/// with the reason; the two groups never hold the cache at once; nothing partial is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_sharing_blobs_stay_correct() {
    let hub = FakeHub::start().await;
    let shared = |tag: &str| synthetic_repo(tag, "w.safetensors", 150_000, 7);
    hub.state.add_repo("acme/s1", COMMIT, shared("s1"));
    hub.state.add_repo("acme/s2", COMMIT, shared("s2"));
    hub.state.add_repo(
        "acme/t",
        COMMIT,
        synthetic_repo("t", "t.safetensors", 150_000, 8),
    );
    let cache_dir = tempfile::tempdir().unwrap();
    let puller = puller_with(&hub, cache_dir.path(), Some(250_000));
    let check = |r: &Result<hub_worker::pull::Pulled, PullError>, weights: &str, fill: u8| match r {
        Ok(p) => {
            assert_eq!(
                std::fs::read(p.dir.join(weights)).unwrap(),
                vec![fill; 150_000]
            );
            assert!(std::fs::read(p.dir.join("config.json")).is_ok());
            true
        }
        Err(e) => {
            no_room(e);
            false
        }
    };
    let mut outcomes = Vec::new();
    for round in 0..8u64 {
        let spawn = |repo: &str, delay_ms: u64| {
            let (puller, req) = (puller.clone(), request(repo));
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
                puller.pull(&req, None).await
            })
        };
        // Each group starts first in turn, so the other's directories (unused since the
        // last round) are evicted while it pulls; the lag varies the interleavings.
        let lag = round % 4;
        let (s_delay, t_delay) = if round % 2 == 0 { (lag, 0) } else { (0, lag) };
        let (s1, s2, t) = (
            spawn("acme/s1", s_delay),
            spawn("acme/s2", s_delay),
            spawn("acme/t", t_delay),
        );
        let (s1, s2, t) = (s1.await.unwrap(), s2.await.unwrap(), t.await.unwrap());
        // All held at once: each directory is whole while the others pulled.
        let ok = (
            check(&s1, "w.safetensors", 7),
            check(&s2, "w.safetensors", 7),
            check(&t, "t.safetensors", 8),
        );
        assert!(ok.0 || ok.1 || ok.2, "no pull got room");
        assert!(!(ok.2 && (ok.0 || ok.1)), "over the budget: {ok:?}");
        outcomes.push(ok);
        drop((s1, s2, t));
        assert!(cache_bytes(&puller) <= 250_000);
    }
    eprintln!("outcomes (s1, s2, t): {outcomes:?}");
    let m = puller.cache().metrics();
    eprintln!(
        "evicted: {} models, {} blobs",
        m.evictions.get(&["model"]),
        m.evictions.get(&["blob"])
    );
    assert!(entries(puller.cache().root().join("tmp")).is_empty());
    assert!(entries(puller.cache().root().join("pins")).is_empty());
    store_is_sound(&puller);
    hub.stop().await;
}

/// What a crashed pull left in `tmp/` (and a half-built model directory) is removed when
/// the cache opens and when a later pull makes room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_leftovers_in_tmp_are_cleaned() {
    let hub = FakeHub::start().await;
    hub.state.add_repo(
        "acme/a",
        COMMIT,
        synthetic_repo("a", "a.safetensors", 1000, 1),
    );
    let cache_dir = tempfile::tempdir().unwrap();
    let crash = |root: &std::path::Path| {
        let dl = root.join("tmp/dl-4242-00000000000000aa/models--acme--a/blobs");
        std::fs::create_dir_all(&dl).unwrap();
        std::fs::write(dl.join("0123.sync.part"), vec![0u8; 1 << 20]).unwrap();
        std::fs::create_dir_all(root.join("models/.tmp-00000000000000bb/x")).unwrap();
    };
    std::fs::create_dir_all(cache_dir.path()).unwrap();
    crash(cache_dir.path());
    let puller = puller_with(&hub, cache_dir.path(), Some(100 << 20));
    assert!(entries(puller.cache().root().join("tmp")).is_empty());
    assert!(entries(puller.cache().root().join("models")).is_empty());
    // A crash of another process on the same directory, while this one runs.
    crash(puller.cache().root());
    puller.pull(&request("acme/a"), None).await.unwrap();
    assert!(entries(puller.cache().root().join("tmp")).is_empty());
    assert_eq!(
        entries(puller.cache().root().join("models")),
        vec![format!("acme--a--{COMMIT}")]
    );
    assert!(puller.cache().metrics().evicted_bytes.get(&["leftover"]) >= 2 << 20);
    hub.stop().await;
}

/// The free-space floor: a pull that would leave less free than it keeps fails with the
/// reason and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_below_the_free_space_floor_fails_and_writes_nothing() {
    let hub = FakeHub::start().await;
    hub.state.add_repo("acme/tiny", COMMIT, tiny_repo_files());
    let cache_dir = tempfile::tempdir().unwrap();
    let limits = CacheLimits {
        max_bytes: None,
        // More than any disk here has.
        min_free: MinFree::Bytes(1 << 60),
    };
    let puller = Puller::new(
        BlobCache::open_with(cache_dir.path(), limits).unwrap(),
        &hub.url,
    );
    let err = puller.pull(&request("acme/tiny"), None).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("--cache-min-free-gib"), "{msg}");
    assert!(msg.contains("free on its disk"), "{msg}");
    assert!(matches!(no_room(&err).limit, Limit::MinFree { .. }));
    assert_eq!(hub.state.downloads_of("model.safetensors"), 0);
    let root = puller.cache().root();
    for sub in ["tmp", "models", "pins", "blobs/sha256"] {
        assert!(entries(root.join(sub)).is_empty(), "{sub}");
    }
    hub.stop().await;
}
