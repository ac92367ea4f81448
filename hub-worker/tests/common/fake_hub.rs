//! A tiny in-test stand-in for hub-api: the HF routes a worker pulls through
//! (`/api/models/{repo}/revision/{rev}`, `/{repo}/resolve/{rev}/{path}` with ranges and
//! ETags like hub-api's) and the control-plane routes (`/api/v1/workers/...`).
#![allow(dead_code)]

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};
use sha1::Digest as _;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const WORKER_TOKEN: &str = "worker-token";
pub const PULL_TOKEN: &str = "pull-token";
pub const GATEWAY_SECRET: &str = "gateway-secret";

#[derive(Clone)]
pub struct HubFile {
    pub content: Arc<Vec<u8>>,
    pub lfs: bool,
}

impl HubFile {
    pub fn sha256(&self) -> String {
        hex::encode(sha2::Sha256::digest(self.content.as_slice()))
    }
    pub fn git_sha1(&self) -> String {
        let mut h = sha1::Sha1::new();
        h.update(format!("blob {}\0", self.content.len()).as_bytes());
        h.update(self.content.as_slice());
        hex::encode(h.finalize())
    }
    pub fn etag(&self) -> String {
        if self.lfs {
            self.sha256()
        } else {
            self.git_sha1()
        }
    }
}

#[derive(Default)]
pub struct Control {
    pub registrations: Vec<Value>,
    pub heartbeats: Vec<Value>,
    pub worker_id: Option<String>,
    pub version: u64,
    pub assignments: Vec<Value>,
    /// Answer 404 to the next heartbeat (the hub forgot the worker).
    pub forget: bool,
}

/// A repo at one commit: `(commit, path -> file)`.
pub type RepoAtCommit = (String, BTreeMap<String, HubFile>);

#[derive(Default)]
pub struct HubState {
    /// repo id -> its commit and files.
    pub repos: Mutex<HashMap<String, RepoAtCommit>>,
    /// Full-download requests per path (ranges starting at 0 longer than one byte).
    pub downloads: Mutex<HashMap<String, usize>>,
    /// Serve this many corrupted full downloads of a path before good ones.
    pub corrupt: Mutex<HashMap<String, usize>>,
    pub control: Mutex<Control>,
    pub changed: tokio::sync::Notify,
}

impl HubState {
    pub fn add_repo(&self, repo: &str, commit: &str, files: BTreeMap<String, HubFile>) {
        self.repos
            .lock()
            .unwrap()
            .insert(repo.to_string(), (commit.to_string(), files));
    }

    pub fn downloads_of(&self, path: &str) -> usize {
        *self.downloads.lock().unwrap().get(path).unwrap_or(&0)
    }

    pub fn set_assignments(&self, assignments: Vec<Value>) {
        let mut c = self.control.lock().unwrap();
        c.version += 1;
        c.assignments = assignments;
        drop(c);
        self.changed.notify_waiters();
    }

    pub fn last_heartbeat(&self) -> Option<Value> {
        self.control.lock().unwrap().heartbeats.last().cloned()
    }
}

/// Files of a model directory, big ones as LFS (like `.gitattributes` would make them).
pub fn files_from_dir(dir: &Path) -> BTreeMap<String, HubFile> {
    let mut out = BTreeMap::new();
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, HubFile>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
                continue;
            }
            let rel = p
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            let content = std::fs::read(&p).unwrap();
            let lfs =
                rel.ends_with(".safetensors") || rel.ends_with(".bin") || content.len() > 1_000_000;
            out.insert(
                rel,
                HubFile {
                    content: Arc::new(content),
                    lfs,
                },
            );
        }
    }
    walk(dir, dir, &mut out);
    out
}

fn bearer(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::to_string)
}

async fn revision(st: web::Data<HubState>, req: HttpRequest) -> HttpResponse {
    if bearer(&req).as_deref() != Some(PULL_TOKEN) {
        return HttpResponse::Unauthorized().json(json!({"error": "bad token"}));
    }
    let m = req.match_info();
    let repo = format!("{}/{}", m.get("ns").unwrap(), m.get("name").unwrap());
    let rev = m.get("rev").unwrap();
    let repos = st.repos.lock().unwrap();
    let Some((commit, files)) = repos.get(&repo) else {
        return HttpResponse::NotFound().json(json!({"error": "Repository not found"}));
    };
    if commit != rev {
        return HttpResponse::NotFound().json(json!({"error": "Revision not found"}));
    }
    let siblings: Vec<Value> = files
        .iter()
        .map(|(path, f)| {
            let mut v = json!({"rfilename": path, "size": f.content.len()});
            if f.lfs {
                v["blobId"] = json!("0".repeat(40));
                v["lfs"] =
                    json!({"size": f.content.len(), "sha256": f.sha256(), "pointerSize": 130});
            } else {
                v["blobId"] = json!(f.git_sha1());
            }
            v
        })
        .collect();
    HttpResponse::Ok().json(json!({"id": repo, "sha": commit, "siblings": siblings}))
}

async fn resolve(st: web::Data<HubState>, req: HttpRequest) -> HttpResponse {
    if bearer(&req).as_deref() != Some(PULL_TOKEN) {
        return HttpResponse::Unauthorized().json(json!({"error": "bad token"}));
    }
    let m = req.match_info();
    let repo = format!("{}/{}", m.get("ns").unwrap(), m.get("name").unwrap());
    let rev = m.get("rev").unwrap().to_string();
    let path = m.get("path").unwrap().to_string();
    let (commit, file) = {
        let repos = st.repos.lock().unwrap();
        let Some((commit, files)) = repos.get(&repo) else {
            return HttpResponse::NotFound().finish();
        };
        if *commit != rev {
            return HttpResponse::NotFound().finish();
        }
        let Some(f) = files.get(&path) else {
            return HttpResponse::NotFound()
                .insert_header(("X-Error-Code", "EntryNotFound"))
                .finish();
        };
        (commit.clone(), f.clone())
    };
    let size = file.content.len();
    let (start, end) = match req
        .headers()
        .get("range")
        .and_then(|v| v.to_str().ok())
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split_once('-'))
    {
        Some((a, b)) => {
            let a: usize = a.parse().unwrap_or(0);
            let b: usize = b.parse().unwrap_or(size - 1).min(size - 1);
            (a, b)
        }
        None => (0, size - 1),
    };
    let mut body = file.content[start..=end].to_vec();
    if start == 0 && end > 0 {
        *st.downloads
            .lock()
            .unwrap()
            .entry(path.clone())
            .or_default() += 1;
        let mut corrupt = st.corrupt.lock().unwrap();
        if let Some(n) = corrupt.get_mut(&path) {
            if *n > 0 {
                *n -= 1;
                body[0] ^= 0xff;
            }
        }
    }
    let etag = format!("\"{}\"", file.etag());
    HttpResponse::PartialContent()
        .insert_header(("X-Repo-Commit", commit))
        .insert_header(("ETag", etag.clone()))
        .insert_header(("X-Linked-Etag", etag))
        .insert_header(("X-Linked-Size", size.to_string()))
        .insert_header(("Accept-Ranges", "bytes"))
        .insert_header(("Content-Range", format!("bytes {start}-{end}/{size}")))
        .body(body)
}

fn worker_auth(req: &HttpRequest) -> bool {
    bearer(req).as_deref() == Some(WORKER_TOKEN)
}

async fn register(
    st: web::Data<HubState>,
    req: HttpRequest,
    body: web::Json<Value>,
) -> HttpResponse {
    if !worker_auth(&req) {
        return HttpResponse::Unauthorized().json(json!({"error": "token lacks scope worker"}));
    }
    let mut c = st.control.lock().unwrap();
    c.registrations.push(body.into_inner());
    let id = format!("w{}", c.registrations.len());
    c.worker_id = Some(id.clone());
    HttpResponse::Ok()
        .json(json!({"worker_id": id, "heartbeat_interval_s": 1, "gateway_secret": GATEWAY_SECRET}))
}

async fn heartbeat(
    st: web::Data<HubState>,
    req: HttpRequest,
    body: web::Json<Value>,
) -> HttpResponse {
    if !worker_auth(&req) {
        return HttpResponse::Unauthorized().finish();
    }
    let id = req.match_info().get("id").unwrap().to_string();
    let mut c = st.control.lock().unwrap();
    if c.forget {
        c.forget = false;
        c.worker_id = None;
    }
    if c.worker_id.as_deref() != Some(id.as_str()) {
        return HttpResponse::NotFound().json(json!({"error": "unknown worker"}));
    }
    c.heartbeats.push(body.into_inner());
    HttpResponse::Ok().json(json!({"ok": true}))
}

async fn assignments(st: web::Data<HubState>, req: HttpRequest) -> HttpResponse {
    if !worker_auth(&req) {
        return HttpResponse::Unauthorized().finish();
    }
    let id = req.match_info().get("id").unwrap().to_string();
    let q: HashMap<String, String> =
        web::Query::<HashMap<String, String>>::from_query(req.query_string())
            .map(|q| q.into_inner())
            .unwrap_or_default();
    let since: u64 = q.get("version").and_then(|v| v.parse().ok()).unwrap_or(0);
    let wait: u64 = q
        .get("wait_s")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
        .min(2);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    loop {
        let notified = st.changed.notified();
        {
            let c = st.control.lock().unwrap();
            if c.worker_id.as_deref() != Some(id.as_str()) {
                return HttpResponse::NotFound().finish();
            }
            if c.version != since || tokio::time::Instant::now() >= deadline {
                return HttpResponse::Ok()
                    .json(json!({"version": c.version, "assignments": c.assignments}));
            }
        }
        let _ = tokio::time::timeout_at(deadline, notified).await;
    }
}

/// A running fake hub.
pub struct FakeHub {
    pub url: String,
    pub state: web::Data<HubState>,
    handle: actix_web::dev::ServerHandle,
}

impl FakeHub {
    pub async fn start() -> FakeHub {
        let state = web::Data::new(HubState::default());
        let s = state.clone();
        let server = actix_web::HttpServer::new(move || {
            actix_web::App::new()
                .app_data(s.clone())
                .route("/api/v1/workers/register", web::post().to(register))
                .route("/api/v1/workers/{id}/heartbeat", web::post().to(heartbeat))
                .route(
                    "/api/v1/workers/{id}/assignments",
                    web::get().to(assignments),
                )
                .route(
                    "/api/models/{ns}/{name}/revision/{rev}",
                    web::get().to(revision),
                )
                .route(
                    "/{ns}/{name}/resolve/{rev}/{path:.*}",
                    web::get().to(resolve),
                )
        })
        .workers(2)
        .disable_signals()
        .bind("127.0.0.1:0")
        .unwrap();
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        FakeHub {
            url: format!("http://{addr}"),
            state,
            handle,
        }
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}
