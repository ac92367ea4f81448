//! Test kit: one throwaway PostgreSQL cluster per test process (started from
//! the machine's server binaries, fsync off, unix socket in a temp dir), a
//! migrated template database, and a fresh database per test cloned from it
//! (`CREATE DATABASE ... TEMPLATE`, ~0.1 s). A watcher process stops the
//! cluster and removes its files when the test process exits.
//!
//! Also: the real hub app in process ([`TestApp`]) and helpers to make users
//! and tokens.

use hub_api::pgcluster::PgCluster;
use hub_api::state::{AppState, Limits};
use hub_api::storage::Storage;
use sqlx::PgPool;
use std::path::PathBuf;
use std::sync::OnceLock;

struct Shared {
    admin_url: String,
    template: String,
    socket_url: Box<dyn Fn(&str) -> String + Send + Sync>,
}

static CLUSTER: OnceLock<Result<Shared, String>> = OnceLock::new();

fn start_cluster() -> Result<Shared, String> {
    let root = tempfile::Builder::new()
        .prefix("paddock-test-pg-")
        .tempdir()
        .map_err(|e| e.to_string())?
        .keep();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())?;
    let data = root.join("data");
    let mut cluster = PgCluster::start(&data, true).map_err(|e| format!("{e:#}"))?;
    // Stop the cluster and remove its files when this process is gone.
    let pid = std::process::id();
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop}; rm -rf '{root}' '{sock}'",
        stop = stop_command(&cluster),
        root = root.display(),
        sock = cluster.socket_dir.display(),
    );
    std::process::Command::new("sh")
        .args(["-c", &script])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let admin_url = cluster.url("postgres");
    let template = "paddock_template".to_string();
    // Migrate the template on a private runtime (tests each have their own).
    let (url, tmpl) = (admin_url.clone(), template.clone());
    let tmpl_url = cluster.url(&template);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async move {
            let admin = hub_api::db::connect(&url, 1)
                .await
                .map_err(|e| e.to_string())?;
            sqlx::query(&format!("CREATE DATABASE {tmpl}"))
                .execute(&admin)
                .await
                .map_err(|e| e.to_string())?;
            admin.close().await;
            let pool = hub_api::db::connect(&tmpl_url, 1)
                .await
                .map_err(|e| e.to_string())?;
            hub_api::db::migrate(&pool)
                .await
                .map_err(|e| e.to_string())?;
            pool.close().await;
            Ok::<_, String>(())
        })
    })
    .join()
    .map_err(|_| "template thread panicked".to_string())??;
    let sock = cluster.socket_dir.clone();
    let port = cluster.port;
    // The watcher owns the shutdown now.
    cluster.detach();
    drop(cluster);
    Ok(Shared {
        admin_url,
        template,
        socket_url: Box::new(move |db: &str| {
            let host: String = url_encode(&sock.display().to_string());
            format!("postgres://postgres@localhost:{port}/{db}?host={host}")
        }),
    })
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn stop_command(c: &PgCluster) -> String {
    c.stop_command_line()
}

/// A fresh, migrated database for one test.
pub struct TestDb {
    pub pool: PgPool,
    pub url: String,
    pub name: String,
}

/// Creates a database for this test from the migrated template.
pub async fn test_db() -> TestDb {
    let shared = CLUSTER
        .get_or_init(start_cluster)
        .as_ref()
        .unwrap_or_else(|e| panic!("test PostgreSQL cluster: {e}"));
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    let admin = hub_api::db::connect(&shared.admin_url, 1)
        .await
        .expect("admin connection");
    sqlx::query(&format!(
        "CREATE DATABASE {name} TEMPLATE {} STRATEGY FILE_COPY",
        shared.template
    ))
    .execute(&admin)
    .await
    .expect("create test database");
    admin.close().await;
    let url = (shared.socket_url)(&name);
    let pool = hub_api::db::connect(&url, 20)
        .await
        .expect("test database connection");
    TestDb { pool, url, name }
}

/// Shared state over a test database and a temp-dir (or memory) object store.
pub struct TestState {
    pub state: AppState,
    pub db: TestDb,
    pub storage_dir: Option<tempfile::TempDir>,
}

impl TestState {
    /// Local-directory storage (the single-node default).
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let storage = Storage::local(dir.path()).expect("local storage");
        Self::with_storage(storage, Some(dir)).await
    }

    /// In-memory object store.
    pub async fn in_memory() -> Self {
        Self::with_storage(Storage::from_url("memory://").expect("memory"), None).await
    }

    /// Over a given storage.
    pub async fn over(storage: Storage) -> Self {
        Self::with_storage(storage, None).await
    }

    async fn with_storage(storage: Storage, dir: Option<tempfile::TempDir>) -> Self {
        let db = test_db().await;
        let state = fresh_state(db.pool.clone(), storage).await;
        Self {
            state,
            db,
            storage_dir: dir,
        }
    }

    /// Another app over the same database and object store, with per-app
    /// state of its own (rate-limit buckets, token cache, gateway routes,
    /// scheduler doorbell, browse facets): a second hub-api replica.
    pub async fn replica(&self) -> AppState {
        let mut state = fresh_state(self.state.db.clone(), self.state.storage.clone()).await;
        state.public_url = self.state.public_url.clone();
        state
    }

    /// Creates a user and a token with `scopes`; returns (user id, secret).
    pub async fn user(&self, name: &str, admin: bool, scopes: &[&str]) -> (i64, String) {
        let mut conn = self.state.db.acquire().await.expect("conn");
        let id = hub_api::db::namespaces::create_user(&mut conn, name, None, None, admin)
            .await
            .expect("create user")
            .expect("name free");
        let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
        let (_, secret) = hub_api::admin::create_token(&self.state.db, id, "test", &scopes, None)
            .await
            .expect("token");
        (id, secret)
    }

    /// Creates an organization owned by `owner`.
    pub async fn org(&self, name: &str, owner: i64) -> i64 {
        let id = hub_api::db::namespaces::insert_namespace(&self.state.db, name, "org", name)
            .await
            .expect("org")
            .expect("name free");
        hub_api::db::namespaces::set_member(
            &self.state.db,
            id,
            owner,
            hub_api::db::namespaces::Role::Admin,
        )
        .await
        .expect("member");
        id
    }
}

/// New state (default settings, empty per-app state) over a database and storage.
async fn fresh_state(db: PgPool, storage: Storage) -> AppState {
    let keys = hub_api::auth::jwt::KeyRing::load(db.clone())
        .await
        .expect("keys");
    AppState {
        db,
        storage,
        public_url: "http://hub.test".into(),
        keys,
        limits: Limits::default(),
        live: Default::default(),
        tenancy: hub_api::state::Tenancy::default(),
        health: Default::default(),
        scheduler: Default::default(),
        facets: Default::default(),
        resolved: Default::default(),
        pack_entries: Default::default(),
        metrics: Default::default(),
    }
}

/// Where the workspace's build output is (for tests that run the binaries).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// The real app (`hub_api::app::build_app`: production's middleware stack,
/// rate limits included), in process, over a test state.
pub async fn app(
    state: &AppState,
) -> impl actix_web::dev::Service<
    actix_http::Request,
    Response = actix_web::dev::ServiceResponse,
    Error = actix_web::Error,
> {
    actix_web::test::init_service(hub_api::app::build_app(state.clone())).await
}

/// Builds an NDJSON commit body.
pub fn ndjson(summary: &str, parent: Option<&str>, ops: &[serde_json::Value]) -> String {
    let mut header = serde_json::json!({"summary": summary, "description": ""});
    if let Some(p) = parent {
        header["parentCommit"] = serde_json::json!(p);
    }
    let mut out = serde_json::json!({"key": "header", "value": header}).to_string();
    for op in ops {
        out.push('\n');
        out.push_str(&op.to_string());
    }
    out.push('\n');
    out
}

/// A `file` operation with inline content.
pub fn file_op(path: &str, content: &[u8]) -> serde_json::Value {
    use base64::Engine;
    serde_json::json!({"key": "file", "value": {
        "path": path,
        "content": base64::engine::general_purpose::STANDARD.encode(content),
        "encoding": "base64",
    }})
}

/// A real HTTP server of the hub on 127.0.0.1 (random port), running on its
/// own thread; `state.public_url` is set to its address. For clients that
/// need a socket (the `hf-hub` crate, load generators). It serves the
/// production app (`hub_api::app::build_app`), rate limits included: a test
/// that needs other limits sets them in the state, as a deployment would.
pub struct Server {
    pub url: String,
    pub state: AppState,
    handle: actix_web::dev::ServerHandle,
}

impl Server {
    pub fn start(mut state: AppState) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        state.public_url = url.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let st = state.clone();
        std::thread::spawn(move || {
            let sys = actix_web::rt::System::new();
            sys.block_on(async move {
                let server =
                    actix_web::HttpServer::new(move || hub_api::app::build_app(st.clone()))
                        .workers(2)
                        // As `hub_api::server` runs it: a closed client connection drops
                        // its streamed response at once.
                        .h1_allow_half_closed(false)
                        .tcp_nodelay(true)
                        .listen(listener)
                        .expect("listen")
                        .run();
                tx.send(server.handle()).expect("handle");
                let _ = server.await;
            });
        });
        let handle = rx.recv().expect("server started");
        Self { url, state, handle }
    }

    pub async fn stop(self) {
        self.handle.stop(true).await;
    }
}

/// A stand-in inference worker on 127.0.0.1 (random port, its own thread), for
/// gateway tests that need no engine: `POST /models/{key}/...` answers a small
/// embeddings body with `X-Input-Tokens: 5` when the gateway secret is right
/// (401 otherwise), and counts the calls it answered, keeping the
/// `X-Request-Id` each came with. Every request it receives, whatever its
/// method or path, is recorded as the request line's path (as sent, not decoded).
pub struct StandInWorker {
    pub url: String,
    pub secret: String,
    pub hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// The `X-Request-Id` of each call answered, in order.
    pub request_ids: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// The raw path of every request received (any route), in order.
    pub paths: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    handle: actix_web::dev::ServerHandle,
}

impl StandInWorker {
    pub fn start() -> Self {
        use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let secret = format!("standin-{}", uuid::Uuid::new_v4().simple());
        let hits = std::sync::Arc::new(AtomicUsize::new(0));
        let request_ids = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let paths = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let (want, counter, ids, seen) = (
            format!("Bearer {secret}"),
            hits.clone(),
            request_ids.clone(),
            paths.clone(),
        );
        std::thread::spawn(move || {
            let sys = actix_web::rt::System::new();
            sys.block_on(async move {
                let server = HttpServer::new(move || {
                    let (want, counter, ids) = (want.clone(), counter.clone(), ids.clone());
                    let seen = seen.clone();
                    App::new()
                        .wrap_fn(move |req, srv| {
                            let raw = req.uri().path_and_query().map(|p| p.path());
                            seen.lock()
                                .expect("paths")
                                .push(raw.unwrap_or_default().to_string());
                            actix_web::dev::Service::call(srv, req)
                        })
                        .route(
                            "/models/{key}/{tail:.*}",
                            web::post().to(move |req: HttpRequest| {
                                let (want, counter, ids) =
                                    (want.clone(), counter.clone(), ids.clone());
                                async move {
                                    let auth = req.headers().get("authorization");
                                    if auth.and_then(|v| v.to_str().ok()) != Some(want.as_str()) {
                                        return HttpResponse::Unauthorized().finish();
                                    }
                                    counter.fetch_add(1, Ordering::SeqCst);
                                    let id = req.headers().get("x-request-id");
                                    let id = id.and_then(|v| v.to_str().ok()).unwrap_or_default();
                                    ids.lock().expect("ids").push(id.to_string());
                                    HttpResponse::Ok()
                                        .insert_header(("X-Input-Tokens", "5"))
                                        .json(serde_json::json!({"object": "list", "data": [
                                        {"object": "embedding", "index": 0, "embedding": [0.6, 0.8]}
                                    ], "usage": {"prompt_tokens": 5, "total_tokens": 5}}))
                                }
                            }),
                        )
                })
                .workers(1)
                .listen(listener)
                .expect("listen")
                .run();
                tx.send(server.handle()).expect("handle");
                let _ = server.await;
            });
        });
        let handle = rx.recv().expect("stand-in worker started");
        Self {
            url,
            secret,
            hits,
            request_ids,
            paths,
            handle,
        }
    }

    /// Calls answered so far.
    pub fn calls(&self) -> usize {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

/// Makes `namespace_id`'s endpoint `name` (`access`: "public" or "protected")
/// routable by the gateway without a scheduler: a worker row for `worker` whose
/// heartbeat is an hour ahead (never lost), the endpoint, and one running
/// replica on it. Returns (endpoint id, replica id).
pub async fn ready_endpoint(
    db: &PgPool,
    namespace_id: i64,
    name: &str,
    access: &str,
    worker: &StandInWorker,
) -> (i64, uuid::Uuid) {
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO endpoints (namespace_id, name, repo_type, repository, revision, commit_oid, task,
            min_replicas, max_replicas, access, status)
         VALUES ($1, $2, 'model', 'standin/model', 'main', repeat('0', 40), 'feature-extraction', 1, 4, $3, 'running')
         RETURNING id",
    )
    .bind(namespace_id)
    .bind(name)
    .bind(access)
    .fetch_one(db)
    .await
    .expect("endpoint");
    let replica = add_replica(db, id, worker).await;
    (id, replica)
}

/// Adds a running replica of an endpoint on `worker` (registering the worker
/// once, by URL). Returns the replica id.
pub async fn add_replica(db: &PgPool, endpoint_id: i64, worker: &StandInWorker) -> uuid::Uuid {
    let worker_id: (uuid::Uuid,) = sqlx::query_as(
        "WITH found AS (SELECT id FROM workers WHERE url = $1),
              made AS (INSERT INTO workers (id, name, url, gateway_secret, memory_bytes, free_memory_bytes, cores, last_heartbeat)
                       SELECT $2, 'standin', $1, $3, 8589934592, 8589934592, 2, now() + interval '1 hour'
                       WHERE NOT EXISTS (SELECT 1 FROM found) RETURNING id)
         SELECT id FROM found UNION ALL SELECT id FROM made",
    )
    .bind(&worker.url)
    .bind(uuid::Uuid::new_v4())
    .bind(&worker.secret)
    .fetch_one(db)
    .await
    .expect("worker");
    let replica = uuid::Uuid::new_v4();
    sqlx::query(
        "INSERT INTO replicas (id, endpoint_id, worker_id, status) VALUES ($1, $2, $3, 'running')",
    )
    .bind(replica)
    .bind(endpoint_id)
    .bind(worker_id.0)
    .execute(db)
    .await
    .expect("replica");
    replica
}
