//! Git over smart HTTP against the `git` CLI and raw protocol requests: a
//! clone (v0 and v2) of files in git's tricky tree order, an empty file and
//! a file large enough to be streamed is byte-exact and `fsck`-clean; a fetch
//! with a have sends only what changed; `deepen 1` makes the head shallow;
//! gzip request bodies; malformed and unsupported requests are 400s.

use crate::common::{bearer, call, commit_files, create_repo};
use actix_web::test::TestRequest;
use hub_testkit::{app, Server, TestState};
use std::io::Write;
use std::path::Path;
use std::process::Command;

/// Runs git on a blocking thread: the test's runtime must keep running, as
/// the server's database connections may be registered with its reactor.
async fn git(dir: &Path, args: &[&str]) -> String {
    let dir = dir.to_path_buf();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    actix_web::rt::task::spawn_blocking(move || {
        let out = Command::new("git")
            .current_dir(&dir)
            .args(&args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("HOME", &dir)
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    })
    .await
    .unwrap()
}

fn pkt(s: &str) -> String {
    format!("{:04x}{s}", s.len() + 4)
}

/// The pack in a side-band response after `skip` leading text lines: the
/// bytes of channel 1, and the text lines before it.
fn split_response(body: &[u8]) -> (Vec<String>, Vec<u8>) {
    let mut lines = Vec::new();
    let mut pack = Vec::new();
    let mut pos = 0;
    while pos + 4 <= body.len() {
        let len =
            usize::from_str_radix(std::str::from_utf8(&body[pos..pos + 4]).unwrap(), 16).unwrap();
        if len < 4 {
            lines.push(format!("{len:04}"));
            pos += 4;
            continue;
        }
        let data = &body[pos + 4..pos + len];
        if data.first() == Some(&1) {
            pack.extend_from_slice(&data[1..]);
        } else if data.first() == Some(&3) {
            panic!("side-band error: {}", String::from_utf8_lossy(&data[1..]));
        } else {
            lines.push(String::from_utf8_lossy(data).trim_end().to_string());
        }
        pos += len;
    }
    (lines, pack)
}

fn pack_objects(pack: &[u8]) -> u32 {
    assert_eq!(&pack[..4], b"PACK");
    u32::from_be_bytes(pack[8..12].try_into().unwrap())
}

#[actix_web::test]
async fn clone_fetch_and_shallow_against_the_git_cli() {
    let t = TestState::new().await;
    let (uid, tok) = t.user("gitter", false, &["read", "write"]).await;
    t.org("acme", uid).await;
    let app = app(&t.state).await;
    create_repo(&app, &tok, "acme/clone", false).await;
    // Names in git's tree order traps ('a-b' < 'a.txt' < 'a/'), an empty
    // file, and a regular (text) file over the read-whole limit, which is
    // streamed and deflated in pieces.
    let big: Vec<u8> = (0..1_600_000u32)
        .map(|i| b"abcdefghij\n"[(i % 11) as usize])
        .collect();
    let first = commit_files(
        &app,
        &tok,
        "acme/clone",
        &[
            ("a-b", b"dash\n"),
            ("a.txt", b"dot\n"),
            ("a/inner.txt", b"folder\n"),
            ("a/deeper/x.txt", b"x\n"),
            ("empty.txt", b""),
            ("big.txt", &big),
        ],
    )
    .await;
    let server = Server::start(t.state.clone());
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "{}/acme/clone",
        server.url.replace("http://", &format!("http://git:{tok}@"))
    );
    for v in ["0", "2"] {
        let dest = format!("c{v}");
        git(
            dir.path(),
            &["-c", &format!("protocol.version={v}"), "clone", &url, &dest],
        )
        .await;
        let d = dir.path().join(&dest);
        git(&d, &["fsck", "--full", "--strict"]).await;
        assert_eq!(git(&d, &["rev-parse", "HEAD"]).await.trim(), first);
        assert_eq!(std::fs::read(d.join("big.txt")).unwrap(), big);
        assert_eq!(std::fs::read(d.join("empty.txt")).unwrap(), b"");
        assert_eq!(std::fs::read(d.join("a/deeper/x.txt")).unwrap(), b"x\n");
    }

    // A fetch that has the first commit gets only what the second changed:
    // the commit, the root tree, the tree of `a`, and one blob.
    let second = commit_files(&app, &tok, "acme/clone", &[("a/inner.txt", b"changed\n")]).await;
    let body = format!(
        "{}{}0001{}{}{}{}0000",
        pkt("command=fetch\n"),
        pkt("object-format=sha1\n"),
        pkt("no-progress\n"),
        pkt(&format!("want {second}\n")),
        pkt(&format!("have {first}\n")),
        pkt("done\n"),
    );
    let (st, _, resp) = call(
        &app,
        TestRequest::post()
            .uri("/acme/clone.git/git-upload-pack")
            .insert_header(bearer(&tok))
            .insert_header(("Git-Protocol", "version=2"))
            .set_payload(body),
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&resp));
    let (lines, pack) = split_response(&resp);
    assert_eq!(lines[0], "packfile", "{lines:?}");
    assert_eq!(pack_objects(&pack), 4);
    // The pack is complete and thin-free: git indexes it in the clone.
    let c0 = dir.path().join("c0");
    let mut idx = Command::new("git")
        .current_dir(&c0)
        .args(["index-pack", "--stdin", "--fix-thin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    idx.stdin.as_mut().unwrap().write_all(&pack).unwrap();
    assert!(idx.wait_with_output().unwrap().status.success());
    assert_eq!(
        git(&c0, &["cat-file", "-p", &format!("{second}:a/inner.txt")]).await,
        "changed\n"
    );

    // Negotiation without `done`: common haves are acknowledged, and the
    // pack follows `ready`; an unknown have alone is a NAK.
    let unknown = "1".repeat(40);
    for (have, want_lines) in [(first.as_str(), true), (unknown.as_str(), false)] {
        let body = format!(
            "{}0001{}{}0000",
            pkt("command=fetch\n"),
            pkt(&format!("want {second}\n")),
            pkt(&format!("have {have}\n")),
        );
        let (st, _, resp) = call(
            &app,
            TestRequest::post()
                .uri("/acme/clone/git-upload-pack")
                .insert_header(bearer(&tok))
                .insert_header(("Git-Protocol", "version=2"))
                .set_payload(body),
        )
        .await;
        assert_eq!(st, 200);
        let (lines, pack) = split_response(&resp);
        if want_lines {
            assert_eq!(
                lines[..4],
                [
                    "acknowledgments".to_string(),
                    format!("ACK {first}"),
                    "ready".into(),
                    "0001".into()
                ]
            );
            assert_eq!(pack_objects(&pack), 4);
        } else {
            assert_eq!(lines, ["acknowledgments", "NAK", "0000"]);
            assert!(pack.is_empty());
        }
    }

    // deepen 1: the head becomes shallow and only it is sent (with its trees
    // and blobs), in v2 and v0. v0's answer is gzip-compressed like git's.
    let body = format!(
        "{}0001{}{}{}0000",
        pkt("command=fetch\n"),
        pkt(&format!("want {second}\n")),
        pkt("deepen 1\n"),
        pkt("done\n"),
    );
    let (st, _, resp) = call(
        &app,
        TestRequest::post()
            .uri("/acme/clone/git-upload-pack")
            .insert_header(bearer(&tok))
            .insert_header(("Git-Protocol", "version=2"))
            .set_payload(body),
    )
    .await;
    assert_eq!(st, 200);
    let (lines, pack) = split_response(&resp);
    assert_eq!(
        lines[..3],
        [
            "shallow-info".to_string(),
            format!("shallow {second}"),
            "0001".into()
        ]
    );
    // 1 commit, root + a + a/deeper trees, 7 blobs (with .gitattributes).
    assert_eq!(pack_objects(&pack), 1 + 3 + 7);

    let v0 = format!(
        "{}{}0000{}",
        pkt(&format!(
            "want {second} multi_ack_detailed side-band-64k ofs-delta\n"
        )),
        pkt("deepen 1\n"),
        pkt("done\n"),
    );
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(v0.as_bytes()).unwrap();
    let (st, _, resp) = call(
        &app,
        TestRequest::post()
            .uri("/acme/clone/git-upload-pack")
            .insert_header(bearer(&tok))
            .insert_header(("Content-Encoding", "gzip"))
            .set_payload(gz.finish().unwrap()),
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&resp));
    let (lines, pack) = split_response(&resp);
    assert_eq!(
        lines,
        [
            format!("shallow {second}"),
            "0000".into(),
            "NAK".into(),
            "0000".into()
        ]
    );
    assert_eq!(pack_objects(&pack), 11);

    // Refusals, each a 400 with git's reason.
    for (body, needle) in [
        ("zzzz".to_string(), "malformed"),
        (
            format!("{}0000", pkt(&format!("want {unknown}\n"))),
            "not our ref",
        ),
        (
            format!(
                "{}0001{}0000",
                pkt("command=fetch\n"),
                pkt("deepen-since 1700000000\n")
            ),
            "deepen",
        ),
        (
            format!("{}0000", pkt("command=frobnicate\n")),
            "unknown command",
        ),
    ] {
        let (st, _, resp) = call(
            &app,
            TestRequest::post()
                .uri("/acme/clone/git-upload-pack")
                .insert_header(bearer(&tok))
                .set_payload(body.clone()),
        )
        .await;
        let text = String::from_utf8_lossy(&resp);
        assert_eq!(st, 400, "{body:?}: {text}");
        assert!(text.contains(needle), "{body:?}: {text}");
    }
    server.stop().await;
}
