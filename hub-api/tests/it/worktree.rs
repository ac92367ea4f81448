//! The partial work tree of a commit (`registry::worktree`) against the
//! whole-listing algorithm it replaced, kept here as the model: random
//! operation sequences (add, overwrite, delete, rename, nested folders, folder
//! deletes, case and Unicode twins) over a chain of commits, comparing tree
//! and root ids, every error, the listing, `commit_changes` and the metadata
//! counts (`registry::path_stats`), and the root ids with the `git` CLI.
//! A failure prints its seed; `WORKTREE_SEED=n` replays one.

use hub_api::card::{self, PathFacts};
use hub_api::db;
use hub_api::domain::RepoPath;
use hub_api::git::object::Mode;
use hub_api::git::tree::{build_trees, clash};
use hub_api::git::{blob_oid, FlatFile};
use hub_api::registry::path_stats::{PathStats, Touched};
use hub_api::registry::worktree::{fold_segment, WorkFile, WorkTree};
use hub_testkit::TestState;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use sqlx::PgConnection;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::process::Command;

/// A file of the model: its content (the git blob is of these bytes).
type Model = BTreeMap<String, Vec<u8>>;

#[derive(Debug, Clone)]
enum TestOp {
    Add(String, Vec<u8>),
    Delete(String),
    DeleteFolder(String),
}

impl TestOp {
    fn path(&self) -> &str {
        match self {
            TestOp::Add(p, _) | TestOp::Delete(p) | TestOp::DeleteFolder(p) => p,
        }
    }
}

/// The outcome of a commit, as the API would tell it.
#[derive(Debug, PartialEq)]
enum Outcome {
    Clash(String),
    NoFile(String),
    NoFolder(String),
    Twin(String, String),
    Done {
        root: String,
        changes: Vec<(String, &'static str)>,
    },
}

fn sha_of(content: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(content))
}

fn work_file(content: &[u8]) -> WorkFile {
    WorkFile {
        flat: FlatFile {
            mode: Mode::File,
            oid: blob_oid(content),
        },
        sha256: sha_of(content),
        size: content.len() as i64,
    }
}

fn flat(model: &Model) -> BTreeMap<String, FlatFile> {
    model
        .iter()
        .map(|(p, c)| (p.clone(), work_file(c).flat))
        .collect()
}

/// The algorithm `registry/commit.rs` used before the work tree: the whole
/// listing, `git::tree::clash`, a fold-key map over every path, `build_trees`.
fn reference(model: &Model, ops: &[TestOp]) -> (Outcome, Model) {
    let mut files = model.clone();
    for op in ops {
        match op {
            TestOp::Add(p, c) => {
                if let Some(why) = clash(&files, p) {
                    return (Outcome::Clash(why), files);
                }
                files.insert(p.clone(), c.clone());
            }
            // `deletedFile` on a folder deletes the folder (as on the Hub).
            TestOp::Delete(p) => {
                if files.remove(p).is_none() && !delete_folder(&mut files, p) {
                    return (Outcome::NoFile(p.clone()), files);
                }
            }
            TestOp::DeleteFolder(p) => {
                if !delete_folder(&mut files, p) {
                    return (Outcome::NoFolder(p.clone()), files);
                }
            }
        }
    }
    let mut folded: HashMap<String, &str> = HashMap::new();
    for p in files.keys() {
        let key = RepoPath::parse(p)
            .map(|rp| rp.fold_key())
            .unwrap_or_else(|_| p.to_lowercase());
        if let Some(other) = folded.insert(key, p.as_str()) {
            return (Outcome::Twin(p.clone(), other.to_string()), files.clone());
        }
    }
    let (root, _) = build_trees(&flat(&files));
    let before = flat(model);
    let after = flat(&files);
    let mut changes = Vec::new();
    for (p, f) in &after {
        match before.get(p) {
            None => changes.push((p.clone(), "added")),
            Some(old) if old.oid != f.oid => changes.push((p.clone(), "modified")),
            _ => {}
        }
    }
    for p in before.keys() {
        if !after.contains_key(p) {
            changes.push((p.clone(), "deleted"));
        }
    }
    changes.sort();
    (Outcome::Done { root, changes }, files)
}

/// Removes every file under folder `path`; false when there was none.
fn delete_folder(files: &mut Model, path: &str) -> bool {
    let prefix = format!("{path}/");
    let doomed: Vec<String> = files
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .map(|(k, _)| k.clone())
        .collect();
    for k in &doomed {
        files.remove(k);
    }
    !doomed.is_empty()
}

/// The same commit through the partial work tree.
async fn partial(
    conn: &mut PgConnection,
    root: &str,
    ops: &[TestOp],
) -> sqlx::Result<(Outcome, WorkTree)> {
    let paths: Vec<&str> = ops.iter().map(TestOp::path).collect();
    let mut w = WorkTree::load(conn, root, &paths).await?;
    for op in ops {
        match op {
            TestOp::Add(p, c) => {
                if let Some(why) = w.clash(conn, p).await? {
                    return Ok((Outcome::Clash(why), w));
                }
                w.insert(conn, p, work_file(c)).await?;
            }
            TestOp::Delete(p) => {
                if !w.remove(conn, p).await? && !w.remove_folder(conn, p).await? {
                    return Ok((Outcome::NoFile(p.clone()), w));
                }
            }
            TestOp::DeleteFolder(p) => {
                if !w.remove_folder(conn, p).await? {
                    return Ok((Outcome::NoFolder(p.clone()), w));
                }
            }
        }
    }
    if let Some((p, other)) = w.find_twin(conn).await? {
        return Ok((Outcome::Twin(p, other), w));
    }
    w.resolve_touched(conn).await?;
    let (root, trees) = w.build();
    let mut changes = w.changes();
    changes.sort();
    db::git::insert_trees(conn, &trees).await?;
    Ok((Outcome::Done { root, changes }, w))
}

/// Stores the blobs of `model` and all its trees (the starting head).
async fn store_all(conn: &mut PgConnection, model: &Model) -> String {
    let (root, trees) = build_trees(&flat(model));
    db::git::insert_trees(conn, &trees).await.unwrap();
    store_blobs(conn, model.values()).await;
    root
}

async fn store_blobs<'a>(conn: &mut PgConnection, contents: impl Iterator<Item = &'a Vec<u8>>) {
    let blobs: Vec<db::git::NewBlob> = contents
        .map(|c| db::git::NewBlob {
            oid: blob_oid(c),
            is_lfs: false,
            sha256: sha_of(c),
            size: c.len() as i64,
            pointer_size: None,
        })
        .collect();
    db::git::insert_blobs(conn, &blobs).await.unwrap();
}

/// Folder and file names: case twins, an NFC/NFD twin, and weight extensions.
const DIRS: &[&str] = &["a", "A", "b", "sub", "Sub", "caf\u{e9}", "cafe\u{301}"];
const NAMES: &[&str] = &[
    "x.txt",
    "X.txt",
    "y",
    "a",
    "b",
    "model.safetensors",
    "Model.SafeTensors",
    "w.gguf",
    "m.onnx",
    "config.json",
    "modules.json",
    "caf\u{e9}.md",
];

fn random_path(rng: &mut StdRng) -> String {
    let depth = rng.random_range(0..4);
    let mut segs: Vec<&str> = (0..depth)
        .map(|_| DIRS[rng.random_range(0..DIRS.len())])
        .collect();
    segs.push(NAMES[rng.random_range(0..NAMES.len())]);
    segs.join("/")
}

/// A folder of the model, or a random path (likely missing).
fn random_folder(rng: &mut StdRng, model: &Model) -> String {
    let dirs: Vec<String> = model
        .keys()
        .flat_map(|p| {
            let segs: Vec<&str> = p.split('/').collect();
            (1..segs.len())
                .map(|n| segs[..n].join("/"))
                .collect::<Vec<_>>()
        })
        .collect();
    if !dirs.is_empty() && rng.random_bool(0.8) {
        dirs[rng.random_range(0..dirs.len())].clone()
    } else {
        let p = random_path(rng);
        p.rsplit_once('/').map_or(p.clone(), |(d, _)| d.to_string())
    }
}

fn random_content(rng: &mut StdRng) -> Vec<u8> {
    // Few distinct contents, so identical blobs and subtrees recur.
    format!("content {}\n", rng.random_range(0..12)).into_bytes()
}

fn random_ops(rng: &mut StdRng, model: &Model) -> Vec<TestOp> {
    let existing: Vec<&String> = model.keys().collect();
    let pick = |rng: &mut StdRng| -> String {
        if !existing.is_empty() && rng.random_bool(0.85) {
            existing[rng.random_range(0..existing.len())].clone()
        } else {
            random_path(rng)
        }
    };
    let n = rng.random_range(1..7);
    let mut ops = Vec::new();
    for _ in 0..n {
        match rng.random_range(0..11) {
            0..=3 => ops.push(TestOp::Add(random_path(rng), random_content(rng))),
            4 => {
                // Overwrite.
                let p = pick(rng);
                ops.push(TestOp::Add(p, random_content(rng)));
            }
            5 | 6 => ops.push(TestOp::Delete(pick(rng))),
            7 => {
                // Rename: delete, then add the same bytes elsewhere.
                let from = pick(rng);
                let bytes = model
                    .get(&from)
                    .cloned()
                    .unwrap_or_else(|| random_content(rng));
                ops.push(TestOp::Delete(from));
                ops.push(TestOp::Add(random_path(rng), bytes));
            }
            8 => ops.push(TestOp::DeleteFolder(random_folder(rng, model))),
            _ => {
                // A case or Unicode twin of an existing path (or its folder).
                let p = pick(rng);
                let twin = match rng.random_range(0..3) {
                    0 => p.to_uppercase(),
                    1 => p.replace('\u{e9}', "e\u{301}"),
                    _ => p.replacen('a', "A", 1).replacen('s', "S", 1),
                };
                ops.push(TestOp::Add(twin, random_content(rng)));
            }
        }
    }
    ops
}

/// A starting repo without twins.
fn random_model(rng: &mut StdRng) -> Model {
    let mut m = Model::new();
    let mut keys = HashSet::new();
    for _ in 0..rng.random_range(0..40) {
        let p = random_path(rng);
        let key: String = p.split('/').map(fold_segment).collect::<Vec<_>>().join("/");
        if clash(&m, &p).is_none() && keys.insert(key) {
            m.insert(p, random_content(rng));
        }
    }
    m
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "core.autocrlf=false",
            "-c",
            "core.precomposeunicode=false",
        ])
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The root tree id `git add -A && git write-tree` gives for `model`.
fn git_root(model: &Model) -> String {
    let dir = tempfile::tempdir().unwrap();
    git(dir.path(), &["init", "-q"]);
    for (p, c) in model {
        let f = dir.path().join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, c).unwrap();
    }
    git(dir.path(), &["add", "-A"]);
    git(dir.path(), &["write-tree"])
}

/// The safetensors meta of a content, for some contents (others stay unmetered).
fn meta_of(content: &[u8]) -> Option<Value> {
    let n = content.iter().map(|b| *b as i64).sum::<i64>();
    match n % 3 {
        0 => None,
        1 => Some(json!({"F32": n})),
        _ => Some(json!({"F32": 1, "BF16": n * 7})),
    }
}

/// What `registry/commit.rs` derived from the full listing.
fn reference_meta(model: &Model) -> (PathFacts, Option<Value>) {
    let paths: Vec<&str> = model.keys().map(String::as_str).collect();
    let per_file: Vec<Value> = model
        .iter()
        .filter(|(p, _)| p.to_ascii_lowercase().ends_with(".safetensors"))
        .filter_map(|(_, c)| metered(c))
        .collect();
    (
        PathFacts::of_paths(&paths),
        card::sum_safetensors(&per_file),
    )
}

/// Meta rows exist for the contents whose meta is Some, once `metered_now`.
fn metered(c: &[u8]) -> Option<Value> {
    meta_of(c)
}

async fn store_metas(conn: &mut PgConnection, contents: &[Vec<u8>]) {
    for c in contents {
        if let Some(m) = meta_of(c) {
            db::git::insert_safetensors_meta(&mut *conn, &sha_of(c), &m, 0)
                .await
                .unwrap();
        }
    }
}

/// How many commits ended each way (the test asserts all kinds occur).
#[derive(Debug, Default)]
struct Tally {
    done: usize,
    changes: usize,
    clash: usize,
    no_file: usize,
    no_folder: usize,
    twin: usize,
}

impl Tally {
    fn record(&mut self, o: &Outcome) {
        match o {
            Outcome::Done { changes, .. } => {
                self.done += 1;
                self.changes += changes.len();
            }
            Outcome::Clash(_) => self.clash += 1,
            Outcome::NoFile(_) => self.no_file += 1,
            Outcome::NoFolder(_) => self.no_folder += 1,
            Outcome::Twin(..) => self.twin += 1,
        }
    }
}

async fn run_seed(conn: &mut PgConnection, seed: u64, tally: &mut Tally) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut model = random_model(&mut rng);
    let all_contents: Vec<Vec<u8>> = (0..12)
        .map(|i| format!("content {i}\n").into_bytes())
        .collect();
    store_blobs(conn, all_contents.iter()).await;
    store_metas(conn, &all_contents).await;
    let mut root = store_all(conn, &model).await;
    let mut stats = PathStats::recount(conn, &root).await.unwrap();
    for round in 0..12 {
        let ops = random_ops(&mut rng, &model);
        let (want, next) = reference(&model, &ops);
        let (got, work) = partial(conn, &root, &ops).await.unwrap();
        assert_eq!(
            got,
            want,
            "seed {seed} round {round}: ops {ops:?} on {:?}",
            model.keys().collect::<Vec<_>>()
        );
        tally.record(&got);
        let Outcome::Done { root: new_root, .. } = got else {
            continue;
        };
        // The stored trees list exactly the model's files.
        let listed: Vec<(String, String)> = db::git::list_recursive(&mut *conn, &new_root, "")
            .await
            .unwrap()
            .into_iter()
            .filter(|e| !e.is_dir())
            .map(|e| (e.path, e.oid))
            .collect();
        let expect: Vec<(String, String)> =
            next.iter().map(|(p, c)| (p.clone(), blob_oid(c))).collect();
        assert_eq!(listed, expect, "seed {seed} round {round}: listing");
        // The metadata counts, moved by the change, equal the full listing's.
        let touched: Vec<Touched> = work
            .touched()
            .map(|(p, b, a)| (p.to_string(), b.cloned(), a.cloned()))
            .collect();
        assert!(stats.apply(conn, &touched).await.unwrap(), "seed {seed}");
        let (facts, st) = reference_meta(&next);
        let root_names: Vec<&str> = next
            .keys()
            .filter(|p| !p.contains('/'))
            .map(String::as_str)
            .collect();
        assert_eq!(
            stats.facts(root_names.into_iter()),
            facts,
            "seed {seed} round {round}"
        );
        assert_eq!(
            stats.safetensors(),
            st,
            "seed {seed} round {round}: safetensors"
        );
        let mut recount = PathStats::recount(conn, &new_root).await.unwrap();
        let mut mine = stats.clone();
        normalize(&mut recount);
        normalize(&mut mine);
        assert_eq!(mine, recount, "seed {seed} round {round}: counts");
        // And derive gives the same metadata from either.
        let paths: Vec<&str> = next.keys().map(String::as_str).collect();
        assert_eq!(
            card::derive(true, json!({}), json!({}), &paths, st.clone()),
            card::derive_from_facts(
                true,
                json!({}),
                json!({}),
                &stats.facts(next.keys().filter(|p| !p.contains('/')).map(String::as_str)),
                stats.safetensors()
            ),
        );
        model = next;
        root = new_root;
    }
    assert_eq!(root, git_root(&model), "seed {seed}: git CLI");
}

/// Unmetered paths are kept as a list whose order depends on history.
fn normalize(s: &mut PathStats) {
    let mut v = s.to_json();
    if let Some(Value::Array(a)) = v.get_mut("unmetered") {
        a.sort_by_key(|x| x.to_string());
    }
    *s = serde_json::from_value(v).unwrap();
}

#[actix_web::test]
async fn partial_work_tree_matches_the_full_rebuild() {
    let t = TestState::new().await;
    let mut conn = t.state.db.acquire().await.unwrap();
    let seeds: Vec<u64> = match std::env::var("WORKTREE_SEED") {
        Ok(s) => vec![s.parse().unwrap()],
        Err(_) => (0..60).collect(),
    };
    let mut tally = Tally::default();
    for seed in seeds {
        run_seed(&mut conn, seed, &mut tally).await;
    }
    eprintln!("{tally:?}");
    if std::env::var("WORKTREE_SEED").is_err() {
        let t = &tally;
        assert!(
            t.done > 200 && t.clash > 20 && t.no_file > 20 && t.no_folder > 20 && t.twin > 20,
            "the random operations reach every outcome: {t:?}"
        );
    }
}

/// Sends a commit to `main` of `user/m`; answers the status and the body.
async fn send_commit<S>(app: &S, tok: &str, ops: &[Value]) -> (u16, Value)
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
    >,
{
    use actix_web::test::{call_service, read_body, TestRequest};
    let resp = call_service(
        app,
        TestRequest::post()
            .uri("/api/models/walker/m/commit/main")
            .insert_header(("Authorization", format!("Bearer {tok}")))
            .insert_header(("Content-Type", "application/x-ndjson"))
            .set_payload(hub_testkit::ndjson("c", None, ops))
            .to_request(),
    )
    .await;
    let status = resp.status().as_u16();
    let body = read_body(resp).await;
    (
        status,
        serde_json::from_slice(&body).unwrap_or_else(|_| json!(String::from_utf8_lossy(&body))),
    )
}

fn deleted_file(p: &str) -> Value {
    json!({"key": "deletedFile", "value": {"path": p}})
}

fn deleted_folder(p: &str) -> Value {
    json!({"key": "deletedFolder", "value": {"path": p}})
}

/// Through the API: the errors of the whole-listing algorithm, word for word
/// (clashes, missing files and folders, twins found in folders the commit
/// does not otherwise read), empty folders disappearing, and the metadata
/// the full listing gave, also for a head whose counts predate the column.
#[actix_web::test]
async fn commits_through_the_api_keep_errors_and_metadata() {
    use hub_testkit::file_op;
    let t = TestState::new().await;
    let (_, tok) = t.user("walker", false, &["write"]).await;
    let app = hub_testkit::app(&t.state).await;
    let req = actix_web::test::TestRequest::post()
        .uri("/api/repos/create")
        .insert_header(("Authorization", format!("Bearer {tok}")))
        .set_json(json!({"name": "m"}));
    assert!(actix_web::test::call_service(&app, req.to_request())
        .await
        .status()
        .is_success());
    let (st, b) = send_commit(
        &app,
        &tok,
        &[
            file_op("a/b.txt", b"1"),
            file_op("a/deep/er/c.txt", b"2"),
            file_op("d/e.txt", b"3"),
            file_op(
                "config.json",
                br#"{"architectures":["BertModel"],"model_type":"bert"}"#,
            ),
        ],
    )
    .await;
    assert_eq!(st, 200, "{b}");

    let err = |b: &Value| b["error"].as_str().unwrap_or_default().to_string();
    let (st, b) = send_commit(&app, &tok, &[file_op("a/b.txt/x", b"9")]).await;
    assert_eq!(st, 400);
    assert!(
        err(&b)
            .contains(r#"cannot add "a/b.txt/x": "a/b.txt" is a file, so it cannot be a folder"#),
        "{b}"
    );
    let (st, b) = send_commit(&app, &tok, &[file_op("a/deep", b"9")]).await;
    assert_eq!(st, 400);
    assert!(
        err(&b).contains(r#"cannot add "a/deep": "a/deep" is a folder, so it cannot be a file"#),
        "{b}"
    );
    let (st, b) = send_commit(&app, &tok, &[deleted_file("a/nope.txt")]).await;
    assert_eq!(st, 404);
    assert!(
        err(&b).contains("A file with this name doesn't exist: a/nope.txt"),
        "{b}"
    );
    let (st, b) = send_commit(&app, &tok, &[deleted_file("a/deep/nope")]).await;
    assert_eq!(st, 404);
    assert!(
        err(&b).contains("A file with this name doesn't exist: a/deep/nope"),
        "{b}"
    );
    let (st, b) = send_commit(&app, &tok, &[deleted_folder("a/b.txt")]).await;
    assert_eq!(st, 404);
    assert!(
        err(&b).contains("A folder with this name doesn't exist: a/b.txt"),
        "{b}"
    );
    let (st, b) = send_commit(&app, &tok, &[deleted_folder("zz/top")]).await;
    assert_eq!(st, 404);
    assert!(
        err(&b).contains("A folder with this name doesn't exist: zz/top"),
        "{b}"
    );
    // A twin in another folder than the one the commit names.
    let (st, b) = send_commit(&app, &tok, &[file_op("A/Deep/er/C.txt", b"9")]).await;
    assert_eq!(st, 400);
    assert!(
        err(&b).contains(
            r#""a/deep/er/c.txt" and "A/Deep/er/C.txt" differ only by case or Unicode form"#
        ),
        "{b}"
    );
    // A rename away from the twin in the same commit is fine.
    let (st, b) = send_commit(
        &app,
        &tok,
        &[deleted_folder("a/deep"), file_op("A/Deep/er/C.txt", b"2")],
    )
    .await;
    assert_eq!(st, 200, "{b}");

    // Empty folders disappear; metadata as the full listing gives it.
    let (st, b) = send_commit(
        &app,
        &tok,
        &[
            deleted_file("d/e.txt"),
            file_op("w/x/model.onnx", b"onnx"),
            file_op("w/x/model.safetensors", &safetensors_bytes()),
        ],
    )
    .await;
    assert_eq!(st, 200, "{b}");
    let info = repo_info(&app).await;
    let tags: Vec<&str> = info["tags"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        tags.contains(&"onnx") && tags.contains(&"safetensors") && tags.contains(&"transformers"),
        "{info}"
    );
    assert_eq!(info["safetensors"]["total"], 9, "{info}");
    let names: Vec<String> = info["siblings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["rfilename"].as_str().unwrap().to_string())
        .collect();
    assert!(!names.iter().any(|n| n.starts_with("d/")), "{names:?}");

    // A head whose counts predate the column: the next commit counts the
    // listing once and derives the same.
    sqlx::query("UPDATE commits SET path_stats = NULL")
        .execute(&t.state.db)
        .await
        .unwrap();
    let (st, b) = send_commit(&app, &tok, &[file_op("notes.txt", b"n")]).await;
    assert_eq!(st, 200, "{b}");
    let again = repo_info(&app).await;
    assert_eq!(again["tags"], info["tags"]);
    let (st, b) = send_commit(&app, &tok, &[deleted_folder("w")]).await;
    assert_eq!(st, 200, "{b}");
    let info = repo_info(&app).await;
    let tags: Vec<&str> = info["tags"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        !tags.contains(&"onnx") && !tags.contains(&"safetensors"),
        "{info}"
    );
    assert!(info.get("safetensors").is_none_or(Value::is_null), "{info}");
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM commits WHERE path_stats IS NOT NULL")
        .fetch_one(&t.state.db)
        .await
        .unwrap();
    assert_eq!(
        n, 2,
        "the two commits made after the counts were cleared keep theirs"
    );
}

async fn repo_info<S>(app: &S) -> Value
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
    >,
{
    use actix_web::test::{call_service, read_body, TestRequest};
    let resp = call_service(
        app,
        TestRequest::get().uri("/api/models/walker/m").to_request(),
    )
    .await;
    serde_json::from_slice(&read_body(resp).await).unwrap()
}

fn safetensors_bytes() -> Vec<u8> {
    use safetensors::tensor::{serialize, Dtype, TensorView};
    let w = vec![0u8; 4 * 6];
    let b = vec![0u8; 4 * 3];
    let tensors = vec![
        ("w", TensorView::new(Dtype::F32, vec![2, 3], &w).unwrap()),
        ("b", TensorView::new(Dtype::F32, vec![3], &b).unwrap()),
    ];
    serialize(tensors, None).unwrap()
}
