//! The Rust `hf-hub` crate downloads from a real hub server: the 0.4 API
//! (`api.model(..).get(..)`, sync and tokio, which probe with
//! `Range: bytes=0-0` and fetch ranged chunks) and the 1.0 API (`HFClient`).

use hub_testkit::{Server, TestState};
use serde_json::json;
use sha2::Digest;

struct Fixture {
    server: Server,
    token: String,
    small: Vec<u8>,
    big: Vec<u8>,
    commit: String,
}

/// A hub with a private repo holding a small file and a 25 MB LFS file
/// (more than two of hf-hub 0.4's 10 MB chunks).
async fn fixture() -> Fixture {
    let t = TestState::new().await;
    let (_, token) = t.user("rusty", false, &["read", "write"]).await;
    let server = Server::start(t.state.clone());
    std::mem::forget(t); // keep the database and storage dir for the server's lifetime
    let http = reqwest::Client::new();
    let auth = format!("Bearer {token}");
    let r = http
        .post(format!("{}/api/repos/create", server.url))
        .header("Authorization", &auth)
        .json(&json!({"name": "crate", "private": true}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let small = b"{\"hidden_size\": 4}".to_vec();
    let big: Vec<u8> = (0..25_000_003u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let sha = hex::encode(sha2::Sha256::digest(&big));
    let batch: serde_json::Value = http
        .post(format!("{}/rusty/crate.git/info/lfs/objects/batch", server.url))
        .header("Authorization", &auth)
        .json(&json!({"operation": "upload", "transfers": ["basic"], "objects": [{"oid": sha, "size": big.len()}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let href = batch["objects"][0]["actions"]["upload"]["href"]
        .as_str()
        .unwrap();
    assert!(http
        .put(href)
        .body(big.clone())
        .send()
        .await
        .unwrap()
        .status()
        .is_success());
    let body = hub_testkit::ndjson(
        "add",
        None,
        &[
            hub_testkit::file_op("config.json", &small),
            json!({"key": "lfsFile", "value": {"path": "weights/model.bin", "algo": "sha256", "oid": sha, "size": big.len()}}),
        ],
    );
    let r: serde_json::Value = http
        .post(format!("{}/api/models/rusty/crate/commit/main", server.url))
        .header("Authorization", &auth)
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let commit = r["commitOid"].as_str().unwrap().to_string();
    Fixture {
        server,
        token,
        small,
        big,
        commit,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hf_hub_04_tokio_and_sync() {
    let f = fixture().await;
    let cache = tempfile::tempdir().unwrap();

    // tokio API: 0-0 probe, then 10 MB ranged chunks whose last one asks one byte past the end.
    let api = hf_hub_04::api::tokio::ApiBuilder::new()
        .with_endpoint(f.server.url.clone())
        .with_token(Some(f.token.clone()))
        .with_cache_dir(cache.path().join("tokio"))
        .with_progress(false)
        .build()
        .unwrap();
    let repo = api.model("rusty/crate".to_string());
    let p = repo.get("weights/model.bin").await.unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), f.big);
    let p = repo.get("config.json").await.unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), f.small);
    assert!(p.to_string_lossy().contains(&f.commit));
    let info = repo.info().await.unwrap();
    assert_eq!(info.sha, f.commit);
    assert_eq!(info.siblings.len(), 3);
    let pinned = api.repo(hf_hub_04::Repo::with_revision(
        "rusty/crate".into(),
        hf_hub_04::RepoType::Model,
        f.commit.clone(),
    ));
    assert_eq!(
        std::fs::read(pinned.get("config.json").await.unwrap()).unwrap(),
        f.small
    );
    assert!(repo.get("missing.txt").await.is_err());

    // sync API (ureq, sends Accept-Encoding: gzip and resumes with bytes=N-).
    let url = f.server.url.clone();
    let token = f.token.clone();
    let dir = cache.path().join("sync");
    let (big, small) = (f.big.clone(), f.small.clone());
    tokio::task::spawn_blocking(move || {
        let api = hf_hub_04::api::sync::ApiBuilder::new()
            .with_endpoint(url)
            .with_token(Some(token))
            .with_cache_dir(dir)
            .with_progress(false)
            .build()
            .unwrap();
        let repo = api.model("rusty/crate".to_string());
        assert_eq!(
            std::fs::read(repo.get("weights/model.bin").unwrap()).unwrap(),
            big
        );
        assert_eq!(
            std::fs::read(repo.get("config.json").unwrap()).unwrap(),
            small
        );
        assert_eq!(repo.info().unwrap().siblings.len(), 3);
    })
    .await
    .unwrap();

    // Without the token, the private repo does not exist.
    let anon = hf_hub_04::api::tokio::ApiBuilder::new()
        .with_endpoint(f.server.url.clone())
        .with_token(None)
        .with_cache_dir(cache.path().join("anon"))
        .with_progress(false)
        .build()
        .unwrap();
    assert!(anon
        .model("rusty/crate".into())
        .get("config.json")
        .await
        .is_err());
    f.server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hf_hub_1_client() {
    let f = fixture().await;
    let cache = tempfile::tempdir().unwrap();
    let client = hf_hub_1::HFClient::builder()
        .endpoint(f.server.url.clone())
        .token(f.token.clone())
        .cache_dir(cache.path().join("c1"))
        .build()
        .unwrap();
    let repo = client.model("rusty", "crate");
    let p = repo
        .download_file()
        .filename("weights/model.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), f.big);
    let p = repo
        .download_file()
        .filename("config.json")
        .revision(f.commit.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), f.small);
    let bytes = repo
        .download_file_to_bytes()
        .filename("weights/model.bin")
        .range(100..200)
        .send()
        .await
        .unwrap();
    assert_eq!(&bytes[..], &f.big[100..200]);
    let snap = repo.snapshot_download().send().await.unwrap();
    assert_eq!(
        std::fs::read(snap.join("weights/model.bin")).unwrap(),
        f.big
    );
    assert_eq!(std::fs::read(snap.join("config.json")).unwrap(), f.small);
    assert!(repo
        .download_file()
        .filename("nope.txt")
        .send()
        .await
        .is_err());

    // The blocking client too.
    let url = f.server.url.clone();
    let token = f.token.clone();
    let dir = cache.path().join("c2");
    let small = f.small.clone();
    tokio::task::spawn_blocking(move || {
        let client = hf_hub_1::HFClient::builder()
            .endpoint(url)
            .token(token)
            .cache_dir(dir)
            .build_sync()
            .unwrap();
        let p = client
            .model("rusty", "crate")
            .download_file()
            .filename("config.json")
            .send()
            .unwrap();
        assert_eq!(std::fs::read(p).unwrap(), small);
    })
    .await
    .unwrap();
    f.server.stop().await;
}
