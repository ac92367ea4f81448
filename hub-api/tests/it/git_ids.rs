//! Our object ids are git's: the same files, metadata and history produce the
//! same blob, tree and commit ids as the `git` CLI (`git hash-object`,
//! `git write-tree`/`mktree`, `git commit-tree`).

use actix_web::test::{call_service, read_body, TestRequest};
use hub_testkit::{app, file_op, ndjson, TestState};
use serde_json::{json, Value};
use sha2::Digest;
use std::path::Path;

/// (path, is LFS, sha256, size) of a file in a commit.
type ListedFile = (String, Option<bool>, Option<String>, Option<i64>);

const PATH_SET: percent_encoding::AsciiSet = percent_encoding::NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'.')
    .remove(b'-')
    .remove(b'_');
use std::process::Command;

fn git(dir: &Path, args: &[&str], envs: &[(&str, String)], stdin: Option<&[u8]>) -> String {
    use std::io::Write;
    let mut cmd = Command::new("git");
    cmd.current_dir(dir)
        .args(["-c", "core.autocrlf=false", "-c", "core.quotepath=false"])
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("git runs");
    if let Some(input) = stdin {
        child.stdin.as_mut().unwrap().write_all(input).unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "git {args:?} failed");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[actix_web::test]
async fn ids_match_the_git_cli() {
    let t = TestState::new().await;
    let (_, tok) = t.user("gitter", false, &["write"]).await;
    let app = app(&t.state).await;
    let req = TestRequest::post()
        .uri("/api/repos/create")
        .insert_header(("Authorization", format!("Bearer {tok}")))
        .set_json(json!({"name": "ids"}));
    assert!(call_service(&app, req.to_request())
        .await
        .status()
        .is_success());

    // An LFS object, uploaded through the batch API.
    let big: Vec<u8> = (0..50_000u32).map(|i| (i % 97) as u8).collect();
    let sha = hex::encode(sha2::Sha256::digest(&big));
    let batch = json!({"operation": "upload", "objects": [{"oid": sha, "size": big.len()}]});
    let resp = call_service(
        &app,
        TestRequest::post()
            .uri("/gitter/ids.git/info/lfs/objects/batch")
            .insert_header(("Authorization", format!("Bearer {tok}")))
            .set_payload(batch.to_string())
            .to_request(),
    )
    .await;
    let b: Value = serde_json::from_slice(&read_body(resp).await).unwrap();
    let href = b["objects"][0]["actions"]["upload"]["href"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://hub.test")
        .to_string();
    assert!(call_service(
        &app,
        TestRequest::put()
            .uri(&href)
            .set_payload(big.clone())
            .to_request()
    )
    .await
    .status()
    .is_success());

    let files: Vec<(&str, Vec<u8>)> = vec![
        ("README.md", b"# ids\n".to_vec()),
        ("a/b/c.txt", b"nested\n".to_vec()),
        ("a/b.txt", b"sibling\n".to_vec()),
        ("a-b.txt", b"dash sorts before slash\n".to_vec()),
        (
            "sp ace/\u{e9}t\u{e9}.txt",
            "unicode \u{2713}\n".as_bytes().to_vec(),
        ),
        ("bin/data.dat", vec![0, 1, 2, 3, 0, 255]),
    ];
    let mut ops: Vec<Value> = files.iter().map(|(p, c)| file_op(p, c)).collect();
    ops.push(json!({"key": "lfsFile", "value": {"path": "weights/model.safetensors.bin", "algo": "sha256", "oid": sha, "size": big.len()}}));
    let body = ndjson("Add files", None, &ops).replace(
        "\"description\":\"\"",
        "\"description\":\"With a body.\\nTwo lines.\"",
    );
    let resp = call_service(
        &app,
        TestRequest::post()
            .uri("/api/models/gitter/ids/commit/main")
            .insert_header(("Authorization", format!("Bearer {tok}")))
            .set_payload(body)
            .to_request(),
    )
    .await;
    assert!(resp.status().is_success());
    let second: Value = serde_json::from_slice(&read_body(resp).await).unwrap();
    let second = second["commitOid"].as_str().unwrap().to_string();

    // Rebuild the same history with git.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    git(d, &["init", "-q", "-b", "main"], &[], None);
    let commits: Vec<(String, String, Vec<String>, String, String, i64)> = sqlx::query_as(
        "SELECT oid, tree_oid, parent_oids, message, author_name, author_time FROM commits c
         JOIN repos r ON r.id = c.repo_id WHERE r.name = 'ids' ORDER BY depth",
    )
    .fetch_all(&t.state.db)
    .await
    .unwrap();
    assert_eq!(commits.len(), 2);
    assert_eq!(commits[1].0, second);

    let mut parent: Option<String> = None;
    for (i, (oid, tree, parents, message, author, time)) in commits.iter().enumerate() {
        // Working tree = every file of that commit, LFS files as their pointers.
        let listing: Vec<ListedFile> = sqlx::query_as(
            "WITH RECURSIVE t(path, mode, oid) AS (
                SELECT e.name, e.mode, e.oid FROM git_tree_entries e WHERE e.tree_oid = $1
                UNION ALL
                SELECT t.path || '/' || e.name, e.mode, e.oid FROM t JOIN git_tree_entries e ON e.tree_oid = t.oid WHERE t.mode = '40000')
             SELECT t.path, b.is_lfs, b.sha256, b.size FROM t JOIN git_blobs b ON b.oid = t.oid",
        )
        .bind(tree)
        .fetch_all(&t.state.db)
        .await
        .unwrap();
        let _ = std::fs::remove_dir_all(d.join("w"));
        git(
            d,
            &["rm", "-rq", "--cached", "--ignore-unmatch", "."],
            &[],
            None,
        );
        for entry in std::fs::read_dir(d).unwrap() {
            let p = entry.unwrap().path();
            if p.file_name().unwrap() != ".git" {
                if p.is_dir() {
                    std::fs::remove_dir_all(&p).unwrap();
                } else {
                    std::fs::remove_file(&p).unwrap();
                }
            }
        }
        for (path, is_lfs, sha, size) in &listing {
            let content = if is_lfs.unwrap() {
                hub_api::git::lfs_pointer(sha.as_ref().unwrap(), size.unwrap() as u64).into_bytes()
            } else {
                let resp = call_service(
                    &app,
                    TestRequest::get()
                        .uri(&format!(
                            "/gitter/ids/resolve/{oid}/{}",
                            percent_encoding::utf8_percent_encode(path, &PATH_SET)
                        ))
                        .to_request(),
                )
                .await;
                read_body(resp).await.to_vec()
            };
            let full = d.join(path);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(&full, &content).unwrap();
            // Blob ids agree with `git hash-object`.
            let blob = git(d, &["hash-object", "--stdin"], &[], Some(&content));
            assert_eq!(blob, hub_api::git::blob_oid(&content), "{path}");
        }
        git(d, &["add", "-A"], &[], None);
        let git_tree = git(d, &["write-tree"], &[], None);
        assert_eq!(&git_tree, tree, "tree of commit {i}");
        let (title, desc) = message
            .trim_end_matches('\n')
            .split_once("\n\n")
            .map(|(a, b)| (a.to_string(), Some(b.to_string())))
            .unwrap_or((message.trim_end_matches('\n').to_string(), None));
        let mut args = vec!["commit-tree".to_string(), git_tree.clone()];
        if let Some(p) = &parent {
            args.push("-p".into());
            args.push(p.clone());
        }
        args.push("-m".into());
        args.push(title);
        if let Some(d) = desc {
            args.push("-m".into());
            args.push(d);
        }
        let date = format!("@{time} +0000");
        let email = format!("{author}@users.noreply.paddock.local");
        let envs = [
            ("GIT_AUTHOR_NAME", author.clone()),
            ("GIT_AUTHOR_EMAIL", email.clone()),
            ("GIT_AUTHOR_DATE", date.clone()),
            ("GIT_COMMITTER_NAME", author.clone()),
            ("GIT_COMMITTER_EMAIL", email),
            ("GIT_COMMITTER_DATE", date),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let git_commit = git(d, &args, &envs, None);
        assert_eq!(&git_commit, oid, "commit {i}");
        assert_eq!(parents.first(), parent.as_ref());
        parent = Some(git_commit);
    }
}
