//! Pulling through a fake hub that speaks hub-api's `/resolve` and revision routes, with
//! the real `hf-hub` client: only engine files are fetched, everything is verified, the
//! cache is shared, corruption (on the wire or on disk) is caught and re-fetched.

use crate::common::fake_hub::*;
use crate::common::*;
use hub_worker::engine::{ClassifyOptions, EmbedOptions, EngineConfig, Model, TextInput};
use hub_worker::pull::cache::BlobCache;
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
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_only_engine_files_verifies_and_caches() {
    let hub = FakeHub::start().await;
    hub.state.add_repo("acme/tiny", COMMIT, tiny_repo_files());
    let cache_dir = tempfile::tempdir().unwrap();
    let puller = Puller::new(BlobCache::open(cache_dir.path()).unwrap(), &hub.url);

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
    let puller = Puller::new(BlobCache::open(cache_dir.path()).unwrap(), &hub.url);

    // On the wire, once: the first transfer fails verification and is retried.
    hub.state
        .corrupt
        .lock()
        .unwrap()
        .insert("model.safetensors".into(), 1);
    hub.state
        .corrupt
        .lock()
        .unwrap()
        .insert("config.json".into(), 1);
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
    hub.state
        .corrupt
        .lock()
        .unwrap()
        .insert("tokenizer.json".into(), 100);
    let cache2 = tempfile::tempdir().unwrap();
    let puller2 = Puller::new(BlobCache::open(cache2.path()).unwrap(), &hub.url);
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
    let puller = Puller::new(BlobCache::open(cache_dir.path()).unwrap(), &hub.url);

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
    let puller = Puller::new(BlobCache::open(cache_dir.path()).unwrap(), &hub.url);
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
