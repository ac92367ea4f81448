//! The engine runtime fetched on first use (`hub_worker::runtime_fetch`) against a local
//! HTTP server that serves a small wheel built here, with the pinned wheel's layout, and
//! counts requests. A test binary of its own: its start-up tests check that OpenVINO is
//! *not* initialised after a failed fetch, which another test initialising it from
//! `PADDOCK_OPENVINO_LIB` in the same process would spoil.

use hub_worker::runtime_fetch::{ensure, FetchError, FetchSettings, Pin, RECORD};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Kept members (name → bytes) and members the worker must leave in the wheel.
fn members() -> (Vec<(&'static str, Vec<u8>)>, Vec<&'static str>) {
    let kept = vec![
        ("openvino/libs/libopenvino.so.2641", vec![1u8; 70_000]),
        (
            "openvino/libs/libopenvino_c.so.2641",
            b"not really a library".to_vec(),
        ),
        (
            "openvino/libs/libopenvino_intel_cpu_plugin.so",
            vec![7u8; 200_000],
        ),
        (
            "openvino/libs/libopenvino_onnx_frontend.so.2641",
            vec![3u8; 1000],
        ),
        ("openvino/libs/libtbb.so.12", vec![5u8; 300]),
        ("openvino/libs/libhwloc.so.15", vec![6u8; 300]),
    ];
    let dropped = vec![
        "openvino/libs/libopenvino_intel_gpu_plugin.so",
        "openvino/libs/libopenvino_tensorflow_frontend.so.2641",
        "openvino/__init__.py",
        "openvino-2026.4.1.dist-info/RECORD",
    ];
    (kept, dropped)
}

fn wheel_bytes() -> Vec<u8> {
    let (kept, dropped) = members();
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in &kept {
        w.start_file(*name, opts).unwrap();
        w.write_all(bytes).unwrap();
    }
    for name in &dropped {
        w.start_file(*name, opts).unwrap();
        w.write_all(b"left in the wheel").unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// A one-file HTTP server on 127.0.0.1:0: `GET /<name>` answers `body` (after `delay`),
/// anything else 404. Counts requests.
struct Server {
    base: String,
    requests: Arc<AtomicUsize>,
}

fn serve(name: &str, body: Vec<u8>, delay: Duration) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let count = requests.clone();
    let want = format!("/{name}");
    let body = Arc::new(body);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            count.fetch_add(1, Ordering::SeqCst);
            let (want, body) = (want.clone(), body.clone());
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head);
                let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                std::thread::sleep(delay);
                if path == want {
                    let _ = write!(
                        stream,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(&body);
                } else {
                    let _ = stream.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                }
            });
        }
    });
    Server { base, requests }
}

fn pin_for(wheel: &[u8]) -> Pin {
    let mut pin = Pin::openvino();
    pin.version = "test".to_string();
    pin.wheel = "openvino-test-py3-none-manylinux_2_28_x86_64.whl".to_string();
    pin.url = "http://127.0.0.1:9/unused".to_string();
    pin.sha256 = hex::encode(Sha256::digest(wheel));
    pin.bytes = wheel.len() as u64;
    pin
}

fn settings(cache: &Path, server: &Server) -> FetchSettings {
    FetchSettings {
        cache_dir: cache.to_path_buf(),
        mirror: Some(format!("{}/", server.base)),
        budget: Duration::from_secs(60),
    }
}

/// Names in `<cache>/runtimes/`.
fn runtimes(cache: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(cache.join("runtimes"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn check_installed(dir: &Path) {
    let (kept, _) = members();
    let mut want: BTreeMap<String, Vec<u8>> = kept
        .iter()
        .map(|(n, b)| (n.rsplit('/').next().unwrap().to_string(), b.clone()))
        .collect();
    want.insert(RECORD.to_string(), Vec::new());
    let mut got: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    got.sort();
    assert_eq!(
        got,
        want.keys().cloned().collect::<Vec<_>>(),
        "only the kept files"
    );
    for (name, bytes) in want.iter().filter(|(n, _)| *n != RECORD) {
        assert_eq!(&std::fs::read(dir.join(name)).unwrap(), bytes, "{name}");
    }
}

#[test]
fn first_use_downloads_extracts_and_records_and_the_next_start_reuses_it() {
    let wheel = wheel_bytes();
    let pin = pin_for(&wheel);
    let server = serve(&pin.wheel, wheel.clone(), Duration::ZERO);
    let cache = tempfile::tempdir().unwrap();
    let s = settings(cache.path(), &server);

    let first = ensure(&pin, &s, &|| false).unwrap();
    assert_eq!(server.requests.load(Ordering::SeqCst), 1);
    let d = first.downloaded.expect("first use downloads");
    assert_eq!(d.bytes, wheel.len() as u64);
    assert_eq!(
        d.url,
        format!("{}/{}", server.base, pin.wheel),
        "the mirror, not PyPI"
    );
    assert_eq!(first.dir, cache.path().join("runtimes/openvino-test"));
    check_installed(&first.dir);
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(first.dir.join(RECORD)).unwrap()).unwrap();
    assert_eq!(record["sha256"], pin.sha256);
    assert_eq!(record["url"], d.url);
    assert_eq!(record["bytes"], wheel.len() as u64);
    assert_eq!(record["files"].as_array().unwrap().len(), members().0.len());
    // Nothing but the runtime and its lock file: no wheel, no temporary directory.
    assert_eq!(
        runtimes(cache.path()),
        ["openvino-test", "openvino-test.lock"]
    );

    // The next start (a fresh call, as a restarted worker makes) does not download.
    let second = ensure(&pin, &s, &|| false).unwrap();
    assert!(second.downloaded.is_none());
    assert_eq!(second.dir, first.dir);
    assert_eq!(
        server.requests.load(Ordering::SeqCst),
        1,
        "no second download"
    );

    // A damaged copy (a truncated library) is not used: it is fetched again.
    std::fs::write(first.dir.join("libtbb.so.12"), b"x").unwrap();
    let third = ensure(&pin, &s, &|| false).unwrap();
    assert!(third.downloaded.is_some());
    assert_eq!(server.requests.load(Ordering::SeqCst), 2);
    check_installed(&third.dir);
}

#[test]
fn a_checksum_mismatch_leaves_no_runtime_and_backs_off() {
    let wheel = wheel_bytes();
    let mut pin = pin_for(&wheel);
    pin.sha256 = "0".repeat(64);
    let server = serve(&pin.wheel, wheel, Duration::ZERO);
    let cache = tempfile::tempdir().unwrap();
    let s = settings(cache.path(), &server);

    let err = ensure(&pin, &s, &|| false).unwrap_err();
    assert!(matches!(err, FetchError::Checksum { .. }), "{err}");
    assert!(err.to_string().contains("sha256"), "{err}");
    assert_eq!(server.requests.load(Ordering::SeqCst), 1);
    assert!(!pin.dir_in(cache.path()).exists(), "no runtime directory");
    assert_eq!(
        runtimes(cache.path()),
        ["openvino-test.failed", "openvino-test.lock"],
        "no wheel or half directory left"
    );
    // One attempt per start, and the next starts within the backoff do not retry.
    let again = ensure(&pin, &s, &|| false).unwrap_err();
    assert!(matches!(again, FetchError::BackingOff { .. }), "{again}");
    assert!(again.to_string().contains("sha256"), "{again}");
    assert_eq!(server.requests.load(Ordering::SeqCst), 1, "no retry storm");
}

#[test]
fn http_errors_oversized_bodies_and_unreachable_mirrors_are_reasons() {
    let wheel = wheel_bytes();
    let pin = pin_for(&wheel);
    let server = serve("some-other-file.whl", wheel.clone(), Duration::ZERO);
    let cache = tempfile::tempdir().unwrap();
    let err = ensure(&pin, &settings(cache.path(), &server), &|| false).unwrap_err();
    assert!(
        matches!(err, FetchError::Status { status: 404, .. }),
        "{err}"
    );
    assert!(!pin.dir_in(cache.path()).exists());

    let mut small = pin.clone();
    small.bytes = 1000;
    let server = serve(&pin.wheel, wheel, Duration::ZERO);
    let cache = tempfile::tempdir().unwrap();
    let err = ensure(&small, &settings(cache.path(), &server), &|| false).unwrap_err();
    assert!(matches!(err, FetchError::TooLarge { .. }), "{err}");
    assert!(!small.dir_in(cache.path()).exists());

    // Offline: nothing listens there.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let cache = tempfile::tempdir().unwrap();
    let s = FetchSettings {
        cache_dir: cache.path().to_path_buf(),
        mirror: Some(format!("http://127.0.0.1:{port}")),
        budget: Duration::from_secs(30),
    };
    let err = ensure(&pin, &s, &|| false).unwrap_err();
    assert!(matches!(err, FetchError::Download { .. }), "{err}");
    assert!(!pin.dir_in(cache.path()).exists());
}

#[test]
fn concurrent_fetches_share_one_download_and_leftovers_of_a_crash_are_not_used() {
    let wheel = wheel_bytes();
    let pin = pin_for(&wheel);
    // Slow enough that the second caller arrives while the first is downloading.
    let server = serve(&pin.wheel, wheel, Duration::from_millis(500));
    let cache = tempfile::tempdir().unwrap();
    let s = settings(cache.path(), &server);
    // What a worker killed mid-fetch leaves: a partial wheel, a partial directory, and
    // a target directory without its record.
    let root = cache.path().join("runtimes");
    std::fs::create_dir_all(root.join(".openvino-test.999-1")).unwrap();
    std::fs::write(
        root.join(".openvino-test.999-1/libopenvino_c.so.2641"),
        b"half",
    )
    .unwrap();
    std::fs::write(root.join(".openvino-test.999-1.whl"), b"PK half").unwrap();
    std::fs::create_dir_all(root.join("openvino-test")).unwrap();
    std::fs::write(root.join("openvino-test/libopenvino_c.so.2641"), b"half").unwrap();

    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..2)
            .map(|_| scope.spawn(|| ensure(&pin, &s, &|| false)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let installed: Vec<_> = results.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        installed.iter().filter(|i| i.downloaded.is_some()).count(),
        1,
        "one of them downloads, the other uses its directory"
    );
    assert_eq!(server.requests.load(Ordering::SeqCst), 1);
    assert_eq!(installed[0].dir, installed[1].dir);
    check_installed(&installed[0].dir);
    assert_eq!(
        runtimes(cache.path()),
        ["openvino-test", "openvino-test.lock"]
    );
}

#[test]
fn the_fetch_flag_and_mirror_parse_from_flags() {
    use clap::Parser;
    let base = ["hub-worker", "--hub-url", "http://h", "--token", "t"];
    let off =
        hub_worker::WorkerConfig::try_parse_from(base.iter().chain(&["--fetch-runtime=false"]))
            .unwrap();
    assert!(!off.fetch_runtime);
    assert!(off.runtime_fetch().is_none());
    let zero =
        hub_worker::WorkerConfig::try_parse_from(base.iter().chain(&["--fetch-runtime", "0"]))
            .unwrap();
    assert!(!zero.fetch_runtime);
    let mirror = hub_worker::WorkerConfig::try_parse_from(base.iter().chain(&[
        "--runtime-mirror",
        "http://mirror.internal/wheels",
        "--cache-dir",
        "/c",
    ]))
    .unwrap();
    let s = mirror.runtime_fetch().expect("on unless turned off");
    assert_eq!(s.mirror.as_deref(), Some("http://mirror.internal/wheels"));
    assert_eq!(s.cache_dir, Path::new("/c"));
    let mut bad = hub_worker::WorkerConfig::new("http://h", "t");
    bad.runtime_mirror = Some("ftp://nope".into());
    assert!(bad.validate().is_err());
}

/// Start-up as `hub_worker::run` does it: the worker's engine choice after the fetch.
#[cfg(feature = "engine-openvino")]
mod start {
    use super::*;
    use hub_worker::engine::openvino;
    use hub_worker::runtime_fetch::{start_openvino, RuntimeState};

    #[tokio::test]
    async fn a_failed_fetch_falls_back_with_its_reason() {
        let wheel = wheel_bytes();
        let mut pin = pin_for(&wheel);
        pin.sha256 = "f".repeat(64);
        let server = serve(&pin.wheel, wheel, Duration::ZERO);
        let cache = tempfile::tempdir().unwrap();
        let gate = start_openvino(
            pin.clone(),
            None,
            false,
            Some(settings(cache.path(), &server)),
            1,
        )
        .await
        .expect("auto never fails start-up");
        match gate.wait().await {
            RuntimeState::Fallback(reason) => assert!(reason.contains("sha256"), "{reason}"),
            other => panic!("{other:?}"),
        }
        assert!(!openvino::is_available(), "auto serves on the next engine");
        assert!(!pin.dir_in(cache.path()).exists());
        assert_eq!(server.requests.load(Ordering::SeqCst), 1);

        // --engine openvino makes the same failure fatal, with the reason (after the
        // backoff marker of the attempt above: no second request).
        let err = start_openvino(pin, None, true, Some(settings(cache.path(), &server)), 1)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("--engine openvino"), "{err}");
        assert_eq!(server.requests.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_library_that_does_not_load_falls_back() {
        let wheel = wheel_bytes();
        let pin = pin_for(&wheel);
        let server = serve(&pin.wheel, wheel, Duration::ZERO);
        let cache = tempfile::tempdir().unwrap();
        let gate = start_openvino(
            pin.clone(),
            None,
            false,
            Some(settings(cache.path(), &server)),
            1,
        )
        .await
        .unwrap();
        match gate.wait().await {
            RuntimeState::Fallback(reason) => {
                assert!(reason.contains("does not load"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        assert!(!openvino::is_available());
        // The verified files stay: the next start tries to load them without a download.
        check_installed(&pin.dir_in(cache.path()));
    }

    #[tokio::test]
    async fn opting_out_makes_no_request() {
        let wheel = wheel_bytes();
        let pin = pin_for(&wheel);
        let server = serve(&pin.wheel, wheel, Duration::ZERO);
        let cache = tempfile::tempdir().unwrap();
        let mut cfg = hub_worker::WorkerConfig::new("http://h", "t");
        cfg.cache_dir = cache.path().to_path_buf();
        cfg.runtime_mirror = Some(server.base.clone());
        cfg.fetch_runtime = false;
        let gate = start_openvino(pin.clone(), None, false, cfg.runtime_fetch(), 1)
            .await
            .unwrap();
        assert_eq!(gate.wait().await, RuntimeState::NotFetched);
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            server.requests.load(Ordering::SeqCst),
            0,
            "opt-out: no request"
        );
        assert!(!cache.path().join("runtimes").exists());
    }
}
