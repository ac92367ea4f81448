//! `git push` over smart HTTP against the `git` CLI: a commit to main, a new
//! branch and a tag land with git's ids and the API serves what was pushed;
//! a non-fast-forward (even forced) is refused and the ref stays; anonymous
//! pushes get 401 with `WWW-Authenticate: Basic`, read-only tokens 403; a
//! corrupt pack is refused cleanly; a push racing an API commit on the same
//! head: exactly one wins, nothing is lost.

use crate::common::{bearer, call, commit_files, create_repo, json_of, token, App};
use actix_web::test::TestRequest;
use hub_testkit::{app, Server, TestState};
use std::path::Path;
use std::process::Command;

/// Runs git on a blocking thread; answers (success, stdout, stderr).
async fn git_try(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let dir = dir.to_path_buf();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    actix_web::rt::task::spawn_blocking(move || {
        let out = Command::new("git")
            .current_dir(&dir)
            .args(&args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("HOME", &dir)
            .env("GIT_AUTHOR_NAME", "Pat Pusher")
            .env("GIT_AUTHOR_EMAIL", "pat@example.com")
            .env("GIT_COMMITTER_NAME", "Cy Committer")
            .env("GIT_COMMITTER_EMAIL", "cy@example.com")
            // A timezone the hub never writes: the pushed bytes must be kept.
            .env("TZ", "Asia/Kolkata")
            .output()
            .expect("git runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

async fn git(dir: &Path, args: &[&str]) -> String {
    let (ok, out, err) = git_try(dir, args).await;
    assert!(ok, "git {args:?}: {err}");
    out
}

fn pkt(s: &str) -> String {
    format!("{:04x}{s}", s.len() + 4)
}

async fn head_of(app: &impl App, tok: &str, repo: &str, rev: &str) -> String {
    let (st, _, b) = call(
        app,
        TestRequest::get()
            .uri(&format!("/api/models/{repo}/revision/{rev}"))
            .insert_header(bearer(tok)),
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    json_of(&b)["sha"].as_str().unwrap().to_string()
}

#[actix_web::test]
async fn push_commits_branches_and_tags_and_refuses_what_it_must() {
    let t = TestState::new().await;
    let (uid, tok) = t.user("pusher", false, &["read", "write"]).await;
    t.org("acme", uid).await;
    let (_, read_tok) = token(&t, uid, &["read"], None, None).await;
    let app = app(&t.state).await;
    create_repo(&app, &tok, "acme/push", false).await;
    let first = commit_files(&app, &tok, "acme/push", &[("a.txt", b"one\n")]).await;
    let server = Server::start(t.state.clone());
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "{}/acme/push",
        server.url.replace("http://", &format!("http://git:{tok}@"))
    );
    git(dir.path(), &["clone", &url, "c"]).await;
    let c = dir.path().join("c");

    // A commit to main: a change, a new file in a new folder, an executable.
    std::fs::write(c.join("a.txt"), b"two\n").unwrap();
    std::fs::create_dir_all(c.join("d/e")).unwrap();
    std::fs::write(c.join("d/e/new.bin"), [0u8, 1, 2, 3, 255]).unwrap();
    std::fs::write(c.join("README.md"), b"---\nlicense: mit\n---\n# hi\n").unwrap();
    git(&c, &["add", "-A"]).await;
    git(&c, &["commit", "-q", "-m", "pushed with git", "-m", "body"]).await;
    git(&c, &["push", "-q", "origin", "main"]).await;
    let pushed = git(&c, &["rev-parse", "HEAD"]).await.trim().to_string();
    assert_eq!(head_of(&app, &tok, "acme/push", "main").await, pushed);
    let (st, _, b) = call(
        &app,
        TestRequest::get()
            .uri("/acme/push/resolve/main/d/e/new.bin")
            .insert_header(bearer(&tok)),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(b, [0u8, 1, 2, 3, 255]);
    let (st, _, b) = call(
        &app,
        TestRequest::get()
            .uri("/api/models/acme/push")
            .insert_header(bearer(&tok)),
    )
    .await;
    assert_eq!(st, 200);
    let info = json_of(&b);
    assert_eq!(info["sha"], pushed.as_str());
    assert_eq!(info["cardData"]["license"], "mit", "{info}");
    // The history the API lists is git's, ids and parents.
    let (st, _, b) = call(
        &app,
        TestRequest::get()
            .uri("/api/models/acme/push/commits/main")
            .insert_header(bearer(&tok)),
    )
    .await;
    assert_eq!(st, 200);
    let ids: Vec<String> = json_of(&b)
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect();
    let log: Vec<String> = git(&c, &["log", "--format=%H"])
        .await
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(ids, log);
    assert_eq!(ids[1], first);

    // A fresh clone gets the very same objects, fsck-clean.
    git(dir.path(), &["clone", &url, "c2"]).await;
    let c2 = dir.path().join("c2");
    git(&c2, &["fsck", "--full", "--strict"]).await;
    assert_eq!(git(&c2, &["rev-parse", "HEAD"]).await.trim(), pushed);
    assert_eq!(
        std::fs::read(c2.join("d/e/new.bin")).unwrap(),
        [0u8, 1, 2, 3, 255]
    );

    // A new branch and a tag.
    git(&c, &["checkout", "-q", "-b", "feature"]).await;
    std::fs::write(c.join("f.txt"), b"feature\n").unwrap();
    git(&c, &["add", "-A"]).await;
    git(&c, &["commit", "-q", "-m", "feature"]).await;
    git(&c, &["push", "-q", "origin", "feature"]).await;
    git(&c, &["tag", "v1"]).await;
    git(&c, &["push", "-q", "origin", "v1"]).await;
    let feature = git(&c, &["rev-parse", "HEAD"]).await.trim().to_string();
    assert_eq!(head_of(&app, &tok, "acme/push", "feature").await, feature);
    assert_eq!(head_of(&app, &tok, "acme/push", "v1").await, feature);
    assert_eq!(head_of(&app, &tok, "acme/push", "main").await, pushed);
    // An annotated tag is refused with its reason.
    git(&c, &["tag", "-a", "v2", "-m", "annotated"]).await;
    let (ok, _, err) = git_try(&c, &["push", "origin", "v2"]).await;
    assert!(!ok && err.contains("annotated tags"), "{err}");
    // Deleting a ref is refused by git itself (not advertised).
    let (ok, _, _) = git_try(&c, &["push", "origin", "--delete", "feature"]).await;
    assert!(!ok);
    assert_eq!(head_of(&app, &tok, "acme/push", "feature").await, feature);

    // A non-fast-forward, even forced, is refused; main stays.
    git(&c, &["checkout", "-q", "main"]).await;
    git(&c, &["reset", "-q", "--hard", &first]).await;
    std::fs::write(c.join("other.txt"), b"diverged\n").unwrap();
    git(&c, &["add", "-A"]).await;
    git(&c, &["commit", "-q", "-m", "diverged"]).await;
    let (ok, _, err) = git_try(&c, &["push", "--force", "origin", "main"]).await;
    assert!(!ok);
    assert!(err.contains("non-fast-forward"), "{err}");
    assert_eq!(head_of(&app, &tok, "acme/push", "main").await, pushed);

    // Credentials: anonymous is asked for them, read-only is forbidden.
    for uri in [
        "/acme/push/info/refs?service=git-receive-pack",
        "/acme/push.git/info/refs?service=git-receive-pack",
    ] {
        let (st, h, _) = call(&app, TestRequest::get().uri(uri)).await;
        assert_eq!(st, 401);
        assert!(h
            .get("www-authenticate")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("Basic"));
        let (st, _, _) = call(
            &app,
            TestRequest::get().uri(uri).insert_header(bearer(&read_tok)),
        )
        .await;
        assert_eq!(st, 403);
    }
    let zero = "0".repeat(40);
    let cmd = format!(
        "{}0000",
        pkt(&format!("{pushed} {zero} refs/heads/x\0report-status\n"))
    );
    let (st, h, _) = call(
        &app,
        TestRequest::post()
            .uri("/acme/push/git-receive-pack")
            .set_payload(cmd.clone()),
    )
    .await;
    assert_eq!(st, 401);
    assert!(h.contains_key("www-authenticate"));
    let (st, _, _) = call(
        &app,
        TestRequest::post()
            .uri("/acme/push/git-receive-pack")
            .insert_header(bearer(&read_tok))
            .set_payload(cmd),
    )
    .await;
    assert_eq!(st, 403);
    let read_url = format!(
        "{}/acme/push",
        server
            .url
            .replace("http://", &format!("http://git:{read_tok}@"))
    );
    let (ok, _, err) = git_try(&c, &["push", &read_url, "HEAD:refs/heads/ro"]).await;
    assert!(!ok && err.contains("403"), "{err}");

    // A corrupt pack: refused with an unpack error, nothing moves.
    let new = "1".repeat(40);
    for pack in [
        b"PACK\0\0\0\x02\0\0\0\x01garbage-garbage-garbage".to_vec(),
        b"not a pack".to_vec(),
    ] {
        let mut body = format!(
            "{}0000",
            pkt(&format!("{pushed} {new} refs/heads/main\0report-status\n"))
        )
        .into_bytes();
        body.extend(pack);
        let (st, _, b) = call(
            &app,
            TestRequest::post()
                .uri("/acme/push/git-receive-pack")
                .insert_header(bearer(&tok))
                .set_payload(body),
        )
        .await;
        assert_eq!(st, 200);
        let text = String::from_utf8_lossy(&b);
        assert!(
            text.contains("unpack ") && !text.contains("unpack ok"),
            "{text}"
        );
        assert!(text.contains("ng refs/heads/main"), "{text}");
    }
    assert_eq!(head_of(&app, &tok, "acme/push", "main").await, pushed);
    server.stop().await;
}

#[actix_web::test]
async fn a_push_racing_an_api_commit_loses_nothing() {
    let t = TestState::new().await;
    let (uid, tok) = t.user("racer", false, &["read", "write"]).await;
    t.org("acme", uid).await;
    let app = app(&t.state).await;
    create_repo(&app, &tok, "acme/race", false).await;
    commit_files(&app, &tok, "acme/race", &[("a.txt", b"0\n")]).await;
    let server = Server::start(t.state.clone());
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "{}/acme/race",
        server.url.replace("http://", &format!("http://git:{tok}@"))
    );
    git(dir.path(), &["clone", "-q", &url, "c"]).await;
    let c = dir.path().join("c");
    for round in 0..4 {
        git(&c, &["fetch", "-q", "origin"]).await;
        git(&c, &["reset", "-q", "--hard", "origin/main"]).await;
        let base = git(&c, &["rev-parse", "HEAD"]).await.trim().to_string();
        std::fs::write(c.join(format!("git{round}.txt")), b"git\n").unwrap();
        git(&c, &["add", "-A"]).await;
        git(&c, &["commit", "-q", "-m", "from git"]).await;
        let local = git(&c, &["rev-parse", "HEAD"]).await.trim().to_string();
        let ops = vec![hub_testkit::file_op(&format!("api{round}.txt"), b"api\n")];
        let body = hub_testkit::ndjson("from the API", Some(&base), &ops);
        let api = call(
            &app,
            TestRequest::post()
                .uri("/api/models/acme/race/commit/main")
                .insert_header(bearer(&tok))
                .set_payload(body),
        );
        let push = git_try(&c, &["push", "origin", "main"]);
        let ((st, _, b), (pushed, _, err)) = futures::join!(api, push);
        let api_ok = st == 200;
        assert!(
            api_ok != pushed,
            "round {round}: exactly one must win (api {st} {}, push {pushed} {err})",
            String::from_utf8_lossy(&b)
        );
        let head = head_of(&app, &tok, "acme/race", "main").await;
        if pushed {
            assert_eq!(head, local);
            assert_eq!(st, 412, "{}", String::from_utf8_lossy(&b));
        } else {
            assert_eq!(head, json_of(&b)["commitOid"].as_str().unwrap());
        }
        let (st, _, _) = call(
            &app,
            TestRequest::get()
                .uri(&format!(
                    "/acme/race/resolve/main/{}{round}.txt",
                    if pushed { "git" } else { "api" }
                ))
                .insert_header(bearer(&tok)),
        )
        .await;
        assert_eq!(st, 200);
    }
    server.stop().await;
}

/// A file pushed without git-lfs is decoded in memory on the hub, so no pushed
/// object may be larger than an inline file of an API commit
/// (`limits.commit_line`): such a push is refused with a hint to use git-lfs,
/// and the ref stays where it was.
#[actix_web::test]
async fn a_pushed_object_over_the_inline_limit_is_refused() {
    let mut t = TestState::new().await;
    t.state.limits.commit_line = 256 * 1024;
    let (uid, tok) = t.user("pusher", false, &["read", "write"]).await;
    t.org("acme", uid).await;
    let app = app(&t.state).await;
    create_repo(&app, &tok, "acme/big", false).await;
    let first = commit_files(&app, &tok, "acme/big", &[("a.txt", b"one\n")]).await;
    let server = Server::start(t.state.clone());
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "{}/acme/big",
        server.url.replace("http://", &format!("http://git:{tok}@"))
    );
    git(dir.path(), &["clone", &url, "c"]).await;
    let c = dir.path().join("c");
    // Incompressible, so the pack holds it whole.
    let big: Vec<u8> = (0..512 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(c.join("big.bin"), &big).unwrap();
    git(&c, &["add", "-A"]).await;
    git(&c, &["commit", "-q", "-m", "a big file without lfs"]).await;
    let (ok, _, err) = git_try(&c, &["push", "origin", "main"]).await;
    assert!(!ok, "the push was refused");
    assert!(err.contains("git-lfs"), "{err}");
    assert_eq!(head_of(&app, &tok, "acme/big", "main").await, first);

    // The same file under the limit goes through.
    std::fs::write(c.join("big.bin"), &big[..100 * 1024]).unwrap();
    git(&c, &["add", "-A"]).await;
    git(&c, &["commit", "-q", "--amend", "-m", "a smaller file"]).await;
    git(&c, &["push", "-q", "origin", "main"]).await;
    let pushed = git(&c, &["rev-parse", "HEAD"]).await.trim().to_string();
    assert_eq!(head_of(&app, &tok, "acme/big", "main").await, pushed);
    server.stop().await;
}
