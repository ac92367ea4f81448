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

/// `n` incompressible bytes without a NUL (text to the API's binary test).
fn noise(n: u32) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..n)
        .map(|_| {
            // xorshift64
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 255) as u8 + 1
        })
        .collect()
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

    // A commit to main: a change, a new file in a new folder.
    std::fs::write(c.join("a.txt"), b"two\n").unwrap();
    std::fs::create_dir_all(c.join("d/e")).unwrap();
    std::fs::write(c.join("d/e/new.txt"), [b'n', 1, 2, 3, 255]).unwrap();
    std::fs::write(c.join("README.md"), b"---\nlicense: mit\n---\n# hi\n").unwrap();
    git(&c, &["add", "-A"]).await;
    git(&c, &["commit", "-q", "-m", "pushed with git", "-m", "body"]).await;
    git(&c, &["push", "-q", "origin", "main"]).await;
    let pushed = git(&c, &["rev-parse", "HEAD"]).await.trim().to_string();
    assert_eq!(head_of(&app, &tok, "acme/push", "main").await, pushed);
    let (st, _, b) = call(
        &app,
        TestRequest::get()
            .uri("/acme/push/resolve/main/d/e/new.txt")
            .insert_header(bearer(&tok)),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(b, [b'n', 1, 2, 3, 255]);
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
        std::fs::read(c2.join("d/e/new.txt")).unwrap(),
        [b'n', 1, 2, 3, 255]
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
    // Incompressible, so the pack holds it whole; no NUL byte, so the API's
    // rules would store it as a regular file.
    let big = noise(512 * 1024);
    std::fs::write(c.join("big.dat"), &big).unwrap();
    git(&c, &["add", "-A"]).await;
    git(&c, &["commit", "-q", "-m", "a big file without lfs"]).await;
    let (ok, _, err) = git_try(&c, &["push", "origin", "main"]).await;
    assert!(!ok, "the push was refused");
    assert!(err.contains("git-lfs"), "{err}");
    assert_eq!(head_of(&app, &tok, "acme/big", "main").await, first);

    // The same file under the limit goes through.
    std::fs::write(c.join("big.dat"), &big[..100 * 1024]).unwrap();
    git(&c, &["add", "-A"]).await;
    git(&c, &["commit", "-q", "--amend", "-m", "a smaller file"]).await;
    git(&c, &["push", "-q", "origin", "main"]).await;
    let pushed = git(&c, &["rev-parse", "HEAD"]).await.trim().to_string();
    assert_eq!(head_of(&app, &tok, "acme/big", "main").await, pushed);
    server.stop().await;
}

/// How many rows `sql` (a `SELECT count(*)` with `$1`) counts.
async fn count(t: &TestState, sql: &str, arg: &str) -> i64 {
    sqlx::query_as::<_, (i64,)>(sql)
        .bind(arg)
        .fetch_one(&t.state.db)
        .await
        .unwrap()
        .0
}

/// Whether the hub kept anything of a file (its blob row, its bytes, a
/// pending object): a refused push must leave nothing.
async fn kept(t: &TestState, content: &[u8]) -> bool {
    let oid = hub_api::git::blob_oid(content);
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(content));
    count(t, "SELECT count(*) FROM git_blobs WHERE oid = $1", &oid).await > 0
        || count(
            t,
            "SELECT count(*) FROM pending_objects WHERE sha256 = $1",
            &sha,
        )
        .await
            > 0
        || t.state
            .storage
            .blob_exists(&hub_api::domain::Sha256::parse(&sha).unwrap())
            .await
            .unwrap()
}

async fn status_of(app: &impl App, tok: &str, repo: &str, rev: &str) -> u16 {
    call(
        app,
        TestRequest::get()
            .uri(&format!("/api/models/{repo}/revision/{rev}"))
            .insert_header(bearer(tok)),
    )
    .await
    .0
}

/// Commits `files` on `first` in the clone `c` and pushes main: refused with
/// `want`, main stays, and nothing of the files is kept.
async fn refused_push(
    t: &TestState,
    app: &impl App,
    tok: &str,
    c: &Path,
    first: &str,
    files: &[(&str, &[u8])],
    want: &str,
) {
    git(c, &["reset", "-q", "--hard", first]).await;
    git(c, &["clean", "-qfdx"]).await;
    for (p, b) in files {
        let path = c.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b).unwrap();
    }
    git(c, &["add", "-A"]).await;
    git(c, &["commit", "-q", "-m", want]).await;
    let (ok, _, err) = git_try(c, &["push", "origin", "main"]).await;
    assert!(!ok, "{want}: the push was refused");
    assert!(err.contains(want), "{want}: {err}");
    assert!(err.contains("[remote rejected]"), "{err}");
    assert_eq!(head_of(app, tok, "acme/rules", "main").await, first);
    for (_, b) in files {
        assert!(!kept(t, b).await, "{want}: nothing of the push is kept");
    }
}

/// A push gets the API commit's rules on paths and LFS (`push_rules`): a
/// path that differs from another only by case, a regular file the API would
/// store with LFS (binary, or covered by an LFS rule of `.gitattributes`),
/// and an LFS pointer no rule covers are refused with git's `ng` and a
/// reason git prints; nothing of a refused commit is kept. Without `atomic`,
/// the other refs of the push are made.
#[actix_web::test]
async fn pushes_follow_the_api_rules_on_paths_and_lfs() {
    let t = TestState::new().await;
    let (uid, tok) = t.user("pusher", false, &["read", "write"]).await;
    t.org("acme", uid).await;
    let app = app(&t.state).await;
    create_repo(&app, &tok, "acme/rules", false).await;
    // blob.dat is binary: the API stores it with LFS and adds a literal rule
    // for it to .gitattributes.
    let first = commit_files(
        &app,
        &tok,
        "acme/rules",
        &[
            ("a.txt", b"one\n"),
            ("Dir/b.txt", b"b\n"),
            ("blob.dat", b"\0bin"),
        ],
    )
    .await;
    let server = Server::start(t.state.clone());
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "{}/acme/rules",
        server.url.replace("http://", &format!("http://git:{tok}@"))
    );
    // No git-lfs filters in this home: files are committed as they are.
    git(dir.path(), &["clone", "-q", &url, "c"]).await;
    let c = dir.path().join("c");
    let twin = "differ only by case or Unicode form";
    let refused = |files: &'static [(&'static str, &'static [u8])], want: &'static str| {
        refused_push(&t, &app, &tok, &c, &first, files, want)
    };
    refused(&[("A.txt", b"twin of a\n")], twin).await;
    refused(&[("dir/b.txt", b"twin in a folder\n")], twin).await;
    refused(
        &[("caf\u{e9}.txt", b"nfc\n"), ("cafe\u{301}.txt", b"nfd\n")],
        twin,
    )
    .await;
    refused(&[("x.dat", b"bin\0ary")], "is a binary file").await;
    refused(
        &[("w.bin", b"not a pointer\n")],
        "matches an LFS rule of .gitattributes",
    )
    .await;
    // A pointer to an object this repo has, at a path no rule covers.
    let pointer = std::fs::read(c.join("blob.dat")).unwrap();
    assert!(pointer.starts_with(b"version https://git-lfs"));
    git(&c, &["reset", "-q", "--hard", &first]).await;
    std::fs::write(c.join("copy.dat"), &pointer).unwrap();
    git(&c, &["add", "-A"]).await;
    git(&c, &["commit", "-q", "-m", "a copy"]).await;
    let (ok, _, err) = git_try(&c, &["push", "origin", "main"]).await;
    assert!(!ok && err.contains("no LFS rule"), "{err}");
    assert_eq!(head_of(&app, &tok, "acme/rules", "main").await, first);
    // With a rule for it, the same pointer goes through.
    let mut attrs = std::fs::read_to_string(c.join(".gitattributes")).unwrap();
    attrs.push_str("/copy.dat filter=lfs diff=lfs merge=lfs -text\n");
    std::fs::write(c.join(".gitattributes"), attrs).unwrap();
    git(&c, &["add", "-A"]).await;
    // (The refused commit is amended away: every pushed commit is checked.)
    git(&c, &["commit", "-q", "--amend", "-m", "tracked"]).await;
    git(&c, &["push", "-q", "origin", "main"]).await;
    let tracked = git(&c, &["rev-parse", "HEAD"]).await.trim().to_string();
    assert_eq!(head_of(&app, &tok, "acme/rules", "main").await, tracked);
    let (st, _, b) = call(
        &app,
        TestRequest::get()
            .uri("/acme/rules/resolve/main/copy.dat")
            .insert_header(bearer(&tok)),
    )
    .await;
    assert_eq!((st, b.as_ref()), (200, b"\0bin".as_ref()));

    // Two refs, one refused: without --atomic the other is made, and nothing
    // of the refused commit is kept; with it, neither.
    git(&c, &["checkout", "-q", "-b", "twin"]).await;
    std::fs::write(c.join("A.TXT"), b"loud twin\n").unwrap();
    git(&c, &["add", "-A"]).await;
    git(&c, &["commit", "-q", "-m", "twin"]).await;
    git(&c, &["checkout", "-q", "main"]).await;
    std::fs::write(c.join("fine.txt"), b"fine\n").unwrap();
    git(&c, &["add", "-A"]).await;
    git(&c, &["commit", "-q", "-m", "fine"]).await;
    let fine = git(&c, &["rev-parse", "HEAD"]).await.trim().to_string();
    let (ok, _, err) = git_try(&c, &["push", "--atomic", "origin", "main", "twin"]).await;
    assert!(!ok && err.contains("differ only by case"), "{err}");
    assert_eq!(head_of(&app, &tok, "acme/rules", "main").await, tracked);
    let (ok, _, err) = git_try(&c, &["push", "origin", "main", "twin"]).await;
    assert!(!ok && err.contains("differ only by case"), "{err}");
    assert_eq!(head_of(&app, &tok, "acme/rules", "main").await, fine);
    assert_eq!(status_of(&app, &tok, "acme/rules", "twin").await, 404);
    assert!(kept(&t, b"fine\n").await);
    assert!(
        !kept(&t, b"loud twin\n").await,
        "the refused ref's blob is not kept"
    );
    server.stop().await;
}

/// `git push --delete` (and `:ref`): the API's branch and tag deletion
/// rules (write access, never the default branch) and compare-and-swap on
/// the id the pusher saw.
#[actix_web::test]
async fn pushes_delete_refs_as_the_api_does() {
    let t = TestState::new().await;
    let (uid, tok) = t.user("pusher", false, &["read", "write"]).await;
    t.org("acme", uid).await;
    let (_, read_tok) = token(&t, uid, &["read"], None, None).await;
    let app = app(&t.state).await;
    create_repo(&app, &tok, "acme/del", false).await;
    let first = commit_files(&app, &tok, "acme/del", &[("a.txt", b"one\n")]).await;
    let server = Server::start(t.state.clone());
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "{}/acme/del",
        server.url.replace("http://", &format!("http://git:{tok}@"))
    );
    git(dir.path(), &["clone", "-q", &url, "c"]).await;
    let c = dir.path().join("c");
    for b in ["feature", "other", "stale"] {
        git(
            &c,
            &["push", "-q", "origin", &format!("HEAD:refs/heads/{b}")],
        )
        .await;
    }
    git(&c, &["tag", "v1"]).await;
    git(&c, &["push", "-q", "origin", "v1"]).await;
    assert_eq!(head_of(&app, &tok, "acme/del", "feature").await, first);

    // A branch, by --delete and by an empty source; a tag.
    git(&c, &["push", "-q", "origin", "--delete", "feature"]).await;
    assert_eq!(status_of(&app, &tok, "acme/del", "feature").await, 404);
    git(&c, &["push", "-q", "origin", ":other"]).await;
    assert_eq!(status_of(&app, &tok, "acme/del", "other").await, 404);
    git(&c, &["push", "-q", "origin", ":refs/tags/v1"]).await;
    assert_eq!(status_of(&app, &tok, "acme/del", "v1").await, 404);
    // The ref log records who deleted.
    let logged = count(
        &t,
        "SELECT count(*) FROM ref_log WHERE name = $1 AND new_oid IS NULL AND actor_id IS NOT NULL",
        "refs/heads/feature",
    )
    .await;
    assert_eq!(logged, 1);

    // Never the default branch.
    let (ok, _, err) = git_try(&c, &["push", "origin", "--delete", "main"]).await;
    assert!(!ok && err.contains("default branch"), "{err}");
    assert_eq!(head_of(&app, &tok, "acme/del", "main").await, first);

    // Write access: a read-only token is refused before anything is read.
    let read_url = format!(
        "{}/acme/del",
        server
            .url
            .replace("http://", &format!("http://git:{read_tok}@"))
    );
    let (ok, _, err) = git_try(&c, &["push", &read_url, "--delete", "stale"]).await;
    assert!(!ok && err.contains("403"), "{err}");
    assert_eq!(head_of(&app, &tok, "acme/del", "stale").await, first);

    // Compare-and-swap: the ref moved since the pusher saw it.
    let second = commit_files(&app, &tok, "acme/del", &[("b.txt", b"two\n")]).await;
    let zero = "0".repeat(40);
    let cmd = |old: &str, name: &str| {
        format!(
            "{}0000",
            pkt(&format!("{old} {zero} {name}\0report-status\n"))
        )
    };
    let (st, _, b) = call(
        &app,
        TestRequest::post()
            .uri("/acme/del/git-receive-pack")
            .insert_header(bearer(&tok))
            .set_payload(cmd(&second, "refs/heads/stale")),
    )
    .await;
    let text = String::from_utf8_lossy(&b);
    assert_eq!(st, 200, "{text}");
    assert!(text.contains("unpack ok"), "{text}");
    assert!(text.contains("ng refs/heads/stale stale info"), "{text}");
    assert_eq!(head_of(&app, &tok, "acme/del", "stale").await, first);
    // A ref that does not exist.
    let (_, _, b) = call(
        &app,
        TestRequest::post()
            .uri("/acme/del/git-receive-pack")
            .insert_header(bearer(&tok))
            .set_payload(cmd(&first, "refs/heads/never")),
    )
    .await;
    let text = String::from_utf8_lossy(&b);
    assert!(text.contains("ng refs/heads/never stale info"), "{text}");
    // With the right old id, the protocol-level delete goes through.
    let (_, _, b) = call(
        &app,
        TestRequest::post()
            .uri("/acme/del/git-receive-pack")
            .insert_header(bearer(&tok))
            .set_payload(cmd(&first, "refs/heads/stale")),
    )
    .await;
    let text = String::from_utf8_lossy(&b);
    assert!(text.contains("ok refs/heads/stale"), "{text}");
    assert_eq!(status_of(&app, &tok, "acme/del", "stale").await, 404);
    assert_eq!(head_of(&app, &tok, "acme/del", "main").await, second);
    server.stop().await;
}

/// A push that would take the namespace over its storage quota is refused
/// with the API's reason, and leaves the ref, the usage and the object store
/// as they were.
#[actix_web::test]
async fn a_push_over_the_storage_quota_changes_nothing() {
    let mut t = TestState::new().await;
    t.state.tenancy.default_storage_quota = Some(64 * 1024);
    let (uid, tok) = t.user("pusher", false, &["read", "write"]).await;
    t.org("acme", uid).await;
    let app = app(&t.state).await;
    create_repo(&app, &tok, "acme/quota", false).await;
    let first = commit_files(&app, &tok, "acme/quota", &[("a.txt", b"one\n")]).await;
    let used = || async {
        let (st, _, b) = call(
            &app,
            TestRequest::get()
                .uri("/api/v1/namespaces/acme/quota")
                .insert_header(bearer(&tok)),
        )
        .await;
        assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
        json_of(&b)["storage_used_bytes"].as_i64().unwrap()
    };
    let before = used().await;
    let server = Server::start(t.state.clone());
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "{}/acme/quota",
        server.url.replace("http://", &format!("http://git:{tok}@"))
    );
    git(dir.path(), &["clone", "-q", &url, "c"]).await;
    let c = dir.path().join("c");
    let big = noise(100 * 1024);
    std::fs::write(c.join("big.dat"), &big).unwrap();
    git(&c, &["add", "-A"]).await;
    git(&c, &["commit", "-q", "-m", "over quota"]).await;
    let (ok, _, err) = git_try(&c, &["push", "origin", "main"]).await;
    assert!(!ok);
    assert!(err.contains("storage quota exceeded"), "{err}");
    assert_eq!(head_of(&app, &tok, "acme/quota", "main").await, first);
    assert_eq!(used().await, before);
    assert!(!kept(&t, &big).await, "the pushed bytes are not kept");

    // Within the quota, the same push goes through.
    std::fs::write(c.join("big.dat"), &big[..16 * 1024]).unwrap();
    git(&c, &["add", "-A"]).await;
    git(&c, &["commit", "-q", "--amend", "-m", "within quota"]).await;
    git(&c, &["push", "-q", "origin", "main"]).await;
    assert_eq!(
        head_of(&app, &tok, "acme/quota", "main").await,
        git(&c, &["rev-parse", "HEAD"]).await.trim()
    );
    assert!(used().await > before);
    server.stop().await;
}

/// A pushed pack over `limits.commit_body`: git gets a push status it prints
/// (`unpack` with the limit and a git-lfs hint, every ref `ng`); a body
/// declared far over it is cut with 413 before it is read. Nothing is kept.
#[actix_web::test]
async fn a_push_over_the_body_cap_is_refused_with_a_reason() {
    let mut t = TestState::new().await;
    t.state.limits.commit_body = 64 * 1024;
    let (uid, tok) = t.user("pusher", false, &["read", "write"]).await;
    t.org("acme", uid).await;
    let app = app(&t.state).await;
    create_repo(&app, &tok, "acme/cap", false).await;
    let first = commit_files(&app, &tok, "acme/cap", &[("a.txt", b"one\n")]).await;
    let server = Server::start(t.state.clone());
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "{}/acme/cap",
        server.url.replace("http://", &format!("http://git:{tok}@"))
    );
    git(dir.path(), &["clone", "-q", &url, "c"]).await;
    let c = dir.path().join("c");
    // Incompressible: the pack is about 200 KiB.
    let big = noise(200 * 1024);
    std::fs::write(c.join("big.dat"), &big).unwrap();
    git(&c, &["add", "-A"]).await;
    git(&c, &["commit", "-q", "-m", "a big pack"]).await;
    // Sent with a Content-Length (under git's postBuffer), and chunked.
    for post_buffer in ["1048576", "65536"] {
        let (ok, _, err) = git_try(
            &c,
            &[
                "-c",
                &format!("http.postBuffer={post_buffer}"),
                "push",
                "origin",
                "main",
            ],
        )
        .await;
        assert!(!ok);
        assert!(
            err.contains("over the hub's limit of 65536 bytes") && err.contains("git-lfs"),
            "{err}"
        );
        assert!(
            err.contains("[remote rejected] main -> main (pack too large)"),
            "{err}"
        );
        assert_eq!(head_of(&app, &tok, "acme/cap", "main").await, first);
        assert!(!kept(&t, &big).await);
    }

    // A body declared far over the cap: 413 with the reason, unread.
    let addr = server.url.trim_start_matches("http://").to_string();
    let tok2 = tok.clone();
    let answer = actix_web::rt::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            s,
            "POST /acme/cap/git-receive-pack HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {tok2}\r\n\
             Content-Type: application/x-git-receive-pack-request\r\nContent-Length: 999999999999\r\n\r\n"
        )
        .unwrap();
        s.write_all(b"0000").unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        while !String::from_utf8_lossy(&got).contains("limit") {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&got).into_owned()
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("over the hub's limit"), "{answer}");
    assert_eq!(head_of(&app, &tok, "acme/cap", "main").await, first);
    server.stop().await;
}
