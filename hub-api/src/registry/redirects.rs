//! Old names of moved repos answer with a redirect, as on the Hub
//! (`HfApi.move_repo`, then `hf_hub_download(old_id, ...)`: the client
//! follows same-origin redirects, HEAD included).
//!
//! A middleware, innermost: a response that is 404 `RepoNotFound` for a
//! path that names a repo (the route's `ns`/`name` parameters) is replaced by
//! a `307 Temporary Redirect` (method and body kept) to the same path under
//! the repo's current name, when `repo_redirects` holds the old name and the
//! caller can read the repo. Otherwise the 404 stands, so a redirect never
//! reveals a private repo's new name. Only RepoNotFound answers pay the
//! lookup. The `Location` is the path alone (the client resolves it against
//! the URL it asked, so no public URL is assumed).

use crate::auth::access::Access;
use crate::auth::Auth;
use crate::db;
use crate::domain::RepoId;
use crate::registry::{self, RepoRef};
use crate::state::AppState;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::Next;
use actix_web::{HttpRequest, HttpResponse};

pub async fn middleware<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let res = next.call(req).await?;
    let repo_not_found = res.status() == StatusCode::NOT_FOUND
        && res
            .headers()
            .get("x-error-code")
            .is_some_and(|v| v.as_bytes() == b"RepoNotFound");
    if !repo_not_found {
        return Ok(res.map_into_left_body());
    }
    match moved_location(res.request()).await {
        Some(location) => {
            let req = res.request().clone();
            let resp = HttpResponse::TemporaryRedirect()
                .insert_header((header::LOCATION, location))
                .finish();
            Ok(ServiceResponse::new(req, resp).map_into_right_body())
        }
        None => Ok(res.map_into_left_body()),
    }
}

/// Where the request's repo lives now, as this request's path under the new
/// name; `None` when there is no redirect the caller may follow.
async fn moved_location(req: &HttpRequest) -> Option<String> {
    let repo = RepoRef::from_request_parts(req).ok()?;
    let state = req.app_data::<actix_web::web::Data<AppState>>()?;
    let target = db::redirects::target(
        &state.db,
        repo.kind.as_str(),
        repo.id.namespace_key(),
        repo.id.name.as_str(),
    )
    .await
    .ok()??;
    let row = db::repos::by_id(&state.db, target).await.ok()??;
    let new_id = RepoId::parse(&row.full_id()).ok()?;
    let auth = Auth(crate::auth::authenticate::caller(req).await.ok()?);
    registry::load_repo(state, &auth, repo.kind, &new_id, Access::Read)
        .await
        .ok()?;
    let mut location = renamed_path(
        req.path(),
        req.match_info().get("ns"),
        req.match_info().get("name")?,
        &row.full_id(),
    )?;
    if !req.query_string().is_empty() {
        location.push('?');
        location.push_str(req.query_string());
    }
    Some(location)
}

/// `path` with the repo id segments (`ns/name`, or `name`; the last one may
/// carry `.git`) replaced by `new_id`. The first match is the repo: the
/// segments before it (`api`, `models`, `datasets`) are reserved names that
/// no namespace or single-segment repo can take.
fn renamed_path(path: &str, ns: Option<&str>, name: &str, new_id: &str) -> Option<String> {
    let segs: Vec<&str> = path.split('/').collect();
    let is_name = |s: &str| s == name || s.strip_prefix(name) == Some(".git");
    let width = if ns.is_some() { 2 } else { 1 };
    let at = (1..segs.len() + 1 - width).find(|&i| match ns {
        Some(ns) => segs[i] == ns && is_name(segs[i + 1]),
        None => is_name(segs[i]),
    })?;
    let last = segs[at + width - 1];
    let mut out = segs[..at].join("/");
    out.push('/');
    out.push_str(new_id);
    out.push_str(&last[name.len()..]);
    for s in &segs[at + width..] {
        out.push('/');
        out.push_str(s);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::renamed_path;

    #[test]
    fn paths_move_to_the_new_name() {
        let p = |path, ns, name| renamed_path(path, ns, name, "c/d").unwrap();
        assert_eq!(
            p("/a/b/resolve/main/x.txt", Some("a"), "b"),
            "/c/d/resolve/main/x.txt"
        );
        assert_eq!(p("/api/models/a/b", Some("a"), "b"), "/api/models/c/d");
        assert_eq!(
            p("/api/datasets/a/b/tree/main/a/b", Some("a"), "b"),
            "/api/datasets/c/d/tree/main/a/b"
        );
        assert_eq!(
            p("/datasets/a/b/resolve/main/f", Some("a"), "b"),
            "/datasets/c/d/resolve/main/f"
        );
        assert_eq!(
            p("/a/b.git/info/lfs/objects/batch", Some("a"), "b"),
            "/c/d.git/info/lfs/objects/batch"
        );
        assert_eq!(
            p("/api/models/gpt2/refs", None, "gpt2"),
            "/api/models/c/d/refs"
        );
        assert_eq!(renamed_path("/x/y", Some("a"), "b", "c/d"), None);
    }
}
