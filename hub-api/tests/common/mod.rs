//! Helpers shared by the tenancy test binaries.
#![allow(dead_code)]

use actix_web::test::{call_service, read_body, TestRequest};
use hub_testkit::TestState;
use serde_json::{json, Value};

pub fn bearer(t: &str) -> (&'static str, String) {
    ("Authorization", format!("Bearer {t}"))
}

#[macro_export]
macro_rules! send {
    ($app:expr, $req:expr) => {{
        let resp = actix_web::test::call_service(&$app, $req.to_request()).await;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = actix_web::test::read_body(resp).await;
        (status, headers, body)
    }};
}

pub fn json_of(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(b)))
}

pub trait App:
    actix_web::dev::Service<
    actix_http::Request,
    Response = actix_web::dev::ServiceResponse,
    Error = actix_web::Error,
>
{
}
impl<T> App for T where
    T: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
    >
{
}

/// Sends a request; returns status, headers and body.
pub async fn call(
    app: &impl App,
    req: TestRequest,
) -> (u16, actix_web::http::header::HeaderMap, Vec<u8>) {
    let resp = call_service(app, req.to_request()).await;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = read_body(resp).await.to_vec();
    (status, headers, body)
}

pub async fn create_repo(app: &impl App, tok: &str, id: &str, private: bool) {
    let (ns, name) = id.split_once('/').unwrap();
    let (st, _, b) = call(
        app,
        TestRequest::post()
            .uri("/api/repos/create")
            .insert_header(bearer(tok))
            .set_json(json!({"name": name, "organization": ns, "private": private})),
    )
    .await;
    assert_eq!(st, 200, "create {id}: {}", String::from_utf8_lossy(&b));
}

/// The paths a tree listing (`GET {uri}`, answered 200) holds, sorted.
pub async fn tree_paths(app: &impl App, uri: &str) -> Vec<String> {
    let (st, _, b) = call(app, TestRequest::get().uri(uri)).await;
    assert_eq!(st, 200, "{uri}: {}", String::from_utf8_lossy(&b));
    let mut paths: Vec<String> = json_of(&b)
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect();
    paths.sort();
    paths
}

/// Commits inline files to a model repo; returns the commit id.
pub async fn commit_files(app: &impl App, tok: &str, id: &str, files: &[(&str, &[u8])]) -> String {
    commit_files_to(app, tok, "models", id, files).await
}

/// Commits inline files to a repo of `kind` (`models`, `datasets`); returns the commit id.
pub async fn commit_files_to(
    app: &impl App,
    tok: &str,
    kind: &str,
    id: &str,
    files: &[(&str, &[u8])],
) -> String {
    let ops: Vec<Value> = files
        .iter()
        .map(|(p, c)| hub_testkit::file_op(p, c))
        .collect();
    let (st, _, b) = call(
        app,
        TestRequest::post()
            .uri(&format!("/api/{kind}/{id}/commit/main"))
            .insert_header(bearer(tok))
            .set_payload(hub_testkit::ndjson("files", None, &ops)),
    )
    .await;
    assert_eq!(st, 200, "commit to {id}: {}", String::from_utf8_lossy(&b));
    json_of(&b)["commitOid"].as_str().unwrap().to_string()
}

/// A token for an existing user, with options; returns (id, secret).
pub async fn token(
    t: &TestState,
    user_id: i64,
    scopes: &[&str],
    repos: Option<&[&str]>,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
) -> (i64, String) {
    let secret = hub_api::auth::secrets::new_secret();
    let hash = hub_api::auth::secrets::hash(&secret);
    let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
    let repos: Option<Vec<String>> = repos.map(|r| r.iter().map(|s| s.to_string()).collect());
    let row = hub_api::db::tokens::insert(
        &t.state.db,
        &hub_api::db::tokens::NewToken {
            user_id,
            name: "t",
            secret_hash: &hash,
            display_prefix: &hub_api::auth::secrets::display_prefix(&secret),
            scopes: &scopes,
            restrict_namespaces: None,
            restrict_repos: repos.as_deref(),
            expires_at,
        },
    )
    .await
    .unwrap();
    (row.id, secret)
}

/// A user with a password (for dashboard sign-in).
pub async fn user_with_password(t: &TestState, name: &str, password: &str, admin: bool) -> i64 {
    let (id, _) = t.user(name, admin, &["read"]).await;
    let hash = hub_api::admin::hash_password(password.to_string())
        .await
        .unwrap();
    sqlx::query("UPDATE users SET password_hash = $2 WHERE namespace_id = $1")
        .bind(id)
        .bind(hash)
        .execute(&t.state.db)
        .await
        .unwrap();
    id
}

/// Every text in the database, one string (for secret scans).
pub async fn dump_database(pool: &sqlx::PgPool) -> String {
    let tables: Vec<(String,)> = sqlx::query_as(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut out = String::new();
    for (t,) in tables {
        let rows: Vec<(String,)> = sqlx::query_as(&format!("SELECT x::text FROM \"{t}\" x"))
            .fetch_all(pool)
            .await
            .unwrap();
        for (r,) in rows {
            out.push_str(&r);
            out.push('\n');
        }
    }
    out
}
