//! A GGUF decoder served from a process of its own (`engine::generate::llama::host`):
//! requests, cancels and stats cross the pipe; when the process ends (here `kill -9`,
//! as an `abort()` a request tripped would end it) its requests fail with how it ended,
//! new ones are answered `Restarting`, this process lives on, and the model serves again
//! once the host is started again.

use hub_worker::engine::generate::llama::host;
use hub_worker::engine::generate::{Constraint, DecoderModel, GenEvent, GenerateRequest, Prompt};
use hub_worker::engine::{EngineConfig, EngineError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn gemma(test: &str) -> Option<PathBuf> {
    let Some(fixture) = std::env::var_os("PADDOCK_GEMMA_GGUF").map(PathBuf::from) else {
        eprintln!("\n*** SKIPPED {test}: PADDOCK_GEMMA_GGUF is not set ***\n");
        return None;
    };
    Some(std::fs::canonicalize(fixture).unwrap())
}

fn load(dir: &Path, file: &Path) -> DecoderModel {
    let cfg = EngineConfig {
        gen_slots: 2,
        gen_context: 256,
        gen_threads: 1,
        ..EngineConfig::default()
    };
    host::load(Path::new(env!("CARGO_BIN_EXE_hub-worker")), dir, file, &cfg)
        .expect("the fixture loads in a host")
}

/// The host processes this process started for `file`.
fn hosts_of(file: &Path) -> Vec<i32> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // `pid (comm) state ppid ...`: the comm may hold spaces, the rest does not.
        let ppid = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().nth(1));
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if ppid == Some(me.as_str())
            && args.iter().any(|a| a == host::HOST_ARG)
            && args.iter().any(|a| Path::new(a) == file)
        {
            found.push(pid);
        }
    }
    found
}

fn request(max_tokens: usize) -> GenerateRequest {
    let mut r = GenerateRequest::new(Prompt::Text {
        text: "The capital of France is".into(),
        add_special: true,
    });
    r.max_tokens = Some(max_tokens);
    r.ignore_eos = true;
    r.sampling.temperature = 0.0;
    r
}

async fn text_of(model: &DecoderModel, max_tokens: usize) -> Result<(String, usize), String> {
    let mut s = model
        .submit(request(max_tokens))
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    loop {
        match s.next().await {
            Some(GenEvent::Token(t)) => text.push_str(&t.text),
            Some(GenEvent::Done(f)) => return Ok((text, f.usage.completion_tokens)),
            Some(GenEvent::Failed(e)) => return Err(e.to_string()),
            None => return Err("the stream ended without Done".into()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hosted_decoder_serves_cancels_and_comes_back_after_its_process_dies() {
    let Some(file) = gemma("a_hosted_decoder_serves_cancels_and_comes_back") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let model = tokio::task::spawn_blocking({
        let (dir, file) = (dir.path().to_path_buf(), file.clone());
        move || load(&dir, &file)
    })
    .await
    .unwrap();
    let hosts = hosts_of(&file);
    assert_eq!(hosts.len(), 1, "one host process: {hosts:?}");
    assert_eq!(model.decoder_info().engine, "llama.cpp");
    assert_eq!(model.decoder_info().context_length, 256);

    // Served through the pipe: the text, the usage, the tokenizer both ways.
    let (text, n) = text_of(&model, 8).await.unwrap();
    assert_eq!(n, 8);
    assert!(!text.is_empty());
    let ids = model.tokenize("The capital of France is", false).unwrap();
    assert!(!ids.is_empty());
    assert_eq!(model.detokenize(&ids).unwrap(), "The capital of France is");
    // Refusals come back as the same errors, at once.
    let err = model
        .submit(request(10_000))
        .err()
        .expect("over the context");
    assert!(
        matches!(err, EngineError::ContextLengthExceeded { context: 256, .. }),
        "{err:?}"
    );

    // A dropped stream frees its slot in the host.
    let mut long = model.submit(request(200)).unwrap();
    assert!(matches!(long.next().await, Some(GenEvent::Token(_))));
    assert_eq!(model.stats().active_slots, 1);
    drop(long);
    let deadline = Instant::now() + Duration::from_secs(5);
    while model.stats().active_slots != 0 {
        assert!(
            Instant::now() < deadline,
            "the slot was not freed: {:?}",
            model.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(model.stats().cancelled_total >= 1, "{:?}", model.stats());

    // The host dies mid-stream: the stream fails saying how; this process lives on.
    let mut running = model.submit(request(200)).unwrap();
    assert!(matches!(running.next().await, Some(GenEvent::Token(_))));
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(hosts[0]).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    let failed = loop {
        match tokio::time::timeout(Duration::from_secs(10), running.next()).await {
            Ok(Some(GenEvent::Token(_))) => continue,
            Ok(Some(GenEvent::Failed(e))) => break e.to_string(),
            other => panic!("expected a failure, got {other:?}"),
        }
    };
    assert!(failed.contains("decoder process stopped"), "{failed}");
    assert!(failed.contains("signal 9"), "{failed}");
    // New requests are told to retry while it starts again...
    match model.submit(request(4)) {
        Err(EngineError::Restarting(why)) => assert!(why.contains("signal 9"), "{why}"),
        Err(e) => panic!("expected Restarting, got {e:?}"),
        Ok(_) => panic!("a request was taken while the host was down"),
    }
    // ...and are served again by a new host.
    let deadline = Instant::now() + Duration::from_secs(30);
    let again = loop {
        match text_of(&model, 8).await {
            Ok(r) => break r,
            Err(e) => {
                assert!(e.contains("started again"), "{e}");
                assert!(Instant::now() < deadline, "the host did not come back: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(again, (text, 8), "the same greedy text from the new host");
    let now = hosts_of(&file);
    assert_eq!(now.len(), 1, "{now:?}");
    assert_ne!(now[0], hosts[0]);

    // Unloading the model ends its host.
    drop(model);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !hosts_of(&file).is_empty() {
        assert!(Instant::now() < deadline, "the host outlived its model");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A host that cannot be started again (here its file is gone) is given up after
/// `host::START_ATTEMPTS` tries: the model says why ([`DecoderModel::failure`], which the
/// worker reports to the hub as a failed replica) and answers `Failed`, not
/// `Restarting`, from then on; no host is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_cannot_start_again_is_given_up_with_its_reason() {
    let Some(fixture) = gemma("a_host_that_cannot_start_again_is_given_up") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("model.gguf");
    if std::fs::hard_link(&fixture, &file).is_err() {
        std::fs::copy(&fixture, &file).unwrap();
    }
    let model = tokio::task::spawn_blocking({
        let (dir, file) = (dir.path().to_path_buf(), file.clone());
        move || load(&dir, &file)
    })
    .await
    .unwrap();
    assert_eq!(model.failure(), None);
    assert_eq!(text_of(&model, 4).await.unwrap().1, 4);
    let hosts = hosts_of(&file);
    assert_eq!(hosts.len(), 1, "{hosts:?}");

    // The file goes away (an evicted cache entry, a disk swapped), then the host dies.
    std::fs::remove_file(&file).unwrap();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(hosts[0]).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    let began = Instant::now();
    let why = loop {
        if let Some(why) = model.failure() {
            break why;
        }
        // Until it is given up, callers are told it is restarting.
        match model.submit(request(4)) {
            Err(EngineError::Restarting(_)) => {}
            Err(EngineError::Failed(why)) => break why,
            other => panic!("expected Restarting, got {:?}", other.map(|_| "a stream")),
        }
        assert!(began.elapsed() < Duration::from_secs(30), "never given up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        why.contains(&format!(
            "{} attempts in a row failed",
            host::START_ATTEMPTS
        )),
        "{why}"
    );
    match model.submit(request(4)) {
        Err(EngineError::Failed(m)) => assert_eq!(m, why),
        other => panic!("expected Failed, got {:?}", other.map(|_| "a stream")),
    }
    assert!(model.tokenize("x", false).is_err());
    // Given up for good: no host is started any more.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(hosts_of(&file), Vec::<i32>::new());
    assert!(model.failure().is_some());
}

/// The schema of the conformance suite's costly-grammar test (`costly_schema`): arrays of
/// anyOfs of `width` identical alternatives, `depth` deep.
fn costly_schema(width: usize, depth: usize) -> String {
    let mut item = serde_json::json!({"type": "string"});
    for _ in 0..depth {
        item = serde_json::json!({"type": "array", "minItems": 1, "items": {"anyOf": vec![item; width]}});
    }
    item.to_string()
}

/// A submit that takes longer than the host's reply wait while the host still answers (a
/// large grammar compiling) fails alone, as `Grammar`: the host is not killed and serves
/// on. (Before, any round trip past the wait killed the host and every stream on it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submit_slower_than_the_reply_wait_fails_alone() {
    let Some(file) = gemma("a_submit_slower_than_the_reply_wait_fails_alone") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let wait_ms = 20;
    let model = tokio::task::spawn_blocking({
        let (dir, file) = (dir.path().to_path_buf(), file.clone());
        move || {
            let cfg = EngineConfig {
                gen_slots: 2,
                gen_context: 256,
                gen_threads: 1,
                gen_host_reply_ms: wait_ms,
                ..EngineConfig::default()
            };
            host::load(
                Path::new(env!("CARGO_BIN_EXE_hub-worker")),
                &dir,
                &file,
                &cfg,
            )
            .expect("the fixture loads in a host")
        }
    })
    .await
    .unwrap();
    let hosts = hosts_of(&file);
    assert_eq!(hosts.len(), 1, "{hosts:?}");
    // A running stream that must live through the slow submit.
    let mut running = loop {
        match model.submit(request(200)) {
            Ok(s) => break s,
            // On a busy machine a plain submit can itself miss a 20 ms wait.
            Err(EngineError::Backend(e)) if e.to_string().contains("took over") => continue,
            Err(e) => panic!("{e:?}"),
        }
    };
    assert!(matches!(running.next().await, Some(GenEvent::Token(_))));

    let mut costly = request(16);
    costly.constraint = Constraint::JsonSchema(costly_schema(16, 4));
    let began = Instant::now();
    let err = model
        .submit(costly)
        .err()
        .expect("the costly submit is refused");
    let took = began.elapsed();
    match &err {
        EngineError::Grammar(m) => assert!(m.contains("took over 0.02 s"), "{m}"),
        other => panic!("expected Grammar, got {other:?} after {took:?}"),
    }
    // The host lives, and so does the stream that was running.
    assert_eq!(hosts_of(&file), hosts, "the host was not restarted");
    let mut tokens = 1;
    loop {
        match tokio::time::timeout(Duration::from_secs(30), running.next()).await {
            Ok(Some(GenEvent::Token(_))) => tokens += 1,
            Ok(Some(GenEvent::Done(f))) => {
                assert_eq!(f.usage.completion_tokens, 200);
                break;
            }
            other => panic!("the running stream broke after {tokens} tokens: {other:?}"),
        }
    }
    // The dropped submit holds no slot once its compile is over (it may have started
    // before its cancel arrived; then its stream is dropped and its slot freed).
    let deadline = Instant::now() + Duration::from_secs(30);
    while model.stats().active_slots != 0 {
        assert!(Instant::now() < deadline, "{:?}", model.stats());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(model.stats().cancelled_total >= 1, "{:?}", model.stats());
}
