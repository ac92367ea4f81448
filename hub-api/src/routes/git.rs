//! Git over smart HTTP at `{public_url}/{ns}/{name}` (and `/datasets/...`,
//! with or without `.git`): `GET info/refs?service=git-upload-pack` and
//! `POST git-upload-pack`, protocol v2 and v0, for `git clone` and
//! `git fetch` (shallow too). The same credentials as the API (HTTP Basic
//! with the token as password, or a bearer token); a caller without
//! credentials who may not read gets 401 with `WWW-Authenticate: Basic`, so
//! git asks for them. Reading is the download decision
//! (`gating::load_repo_for_download`): gated repos serve only callers who
//! passed the gate. The protocol is in `git::protocol`, what to send in
//! `registry::git_serve`.

use crate::auth::access::Access;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::gating::{self, Download};
use crate::git::protocol::{self, FetchRequest, Pkt, V2Command};
use crate::registry::git_serve::{self, Framing, Graph};
use crate::registry::repo_ref::param;
use crate::registry::{RepoRef, DEFAULT_BRANCH};
use crate::state::AppState;
use crate::{db, domain};
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use bytes::Bytes;
use futures::StreamExt;
use std::io::Read;

/// A git request the hub cannot serve (400, with git's reason).
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("{0}")]
    Protocol(String),
    #[error("only git's smart HTTP protocol is served (?service=git-upload-pack)")]
    DumbProtocol,
    #[error("unknown git service {0:?}")]
    UnknownService(String),
    #[error("a pushed request body must not be compressed")]
    CompressedPush,
    #[error("the request body is not valid gzip: {0}")]
    Gzip(String),
}

/// Request bodies (wants and haves) are small: at most this many bytes,
/// before and after gzip.
const MAX_REQUEST: usize = 32 << 20;

/// The repo of a git URL (`name` may end in `.git`).
fn repo_ref(req: &HttpRequest) -> ApiResult<RepoRef> {
    let kind = if req.path().starts_with("/datasets/") {
        domain::RepoType::Dataset
    } else {
        domain::RepoType::Model
    };
    let name = param(req, "name").ok_or(ApiError::RepoNotFound)?;
    let name = name.strip_suffix(".git").unwrap_or(&name);
    let ns = param(req, "ns");
    let id = domain::RepoId::from_parts(ns.as_deref(), name).map_err(|_| ApiError::RepoNotFound)?;
    Ok(RepoRef { kind, id })
}

/// An error as git understands it: 401 asks for credentials.
fn respond(r: ApiResult<HttpResponse>) -> HttpResponse {
    match r {
        Ok(r) => r,
        Err(e) => {
            let mut resp = e.error_response();
            if resp.status() == actix_web::http::StatusCode::UNAUTHORIZED {
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Basic realm=\"Paddock\""),
                );
            }
            resp
        }
    }
}

/// The read decision for a git request. A caller without credentials is
/// asked for them (401) rather than told the repo does not exist or is gated.
async fn load_for_read(state: &AppState, req: &HttpRequest) -> ApiResult<Download> {
    let auth = Auth(crate::auth::authenticate::caller(req).await?);
    let repo = repo_ref(req)?;
    match gating::load_repo_for_download(state, &auth, repo.kind, &repo.id).await {
        Err(ApiError::RepoNotFound | ApiError::GatedRepo(_)) if auth.principal().is_none() => {
            Err(ApiError::Unauthorized(
                "authentication required: use your access token as the password".into(),
            ))
        }
        r => r,
    }
}

/// The write decision for a push: the API's commit rule (write access to
/// the repo). A caller without credentials is asked for them (401); a
/// token that may read but not write gets 403.
async fn load_for_write(
    state: &AppState,
    req: &HttpRequest,
) -> ApiResult<crate::registry::RepoCtx> {
    let auth = Auth(crate::auth::authenticate::caller(req).await?);
    let repo = repo_ref(req)?;
    match crate::registry::load_repo(state, &auth, repo.kind, &repo.id, Access::Write).await {
        Err(_) if auth.principal().is_none() => Err(ApiError::Unauthorized(
            "authentication required: use your access token as the password".into(),
        )),
        r => r,
    }
}

fn service(req: &HttpRequest) -> Option<String> {
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "service")
        .map(|(_, v)| v.into_owned())
}

/// Whether the client asked for protocol v2 (`Git-Protocol: version=2`).
fn wants_v2(req: &HttpRequest) -> bool {
    req.headers()
        .get("git-protocol")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(':').any(|p| p.trim() == "version=2"))
}

fn git_response(kind: &str) -> actix_web::HttpResponseBuilder {
    let mut b = HttpResponse::Ok();
    b.content_type(format!("application/x-{kind}"))
        .insert_header((
            header::CACHE_CONTROL,
            "no-cache, max-age=0, must-revalidate",
        ));
    b
}

/// `GET {repo}/info/refs?service=...`: the ref advertisement (v0) or the
/// capability advertisement (v2).
pub async fn info_refs(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    respond(info_refs_inner(&state, &req).await)
}

async fn info_refs_inner(state: &AppState, req: &HttpRequest) -> ApiResult<HttpResponse> {
    let svc = service(req).ok_or(GitError::DumbProtocol)?;
    if svc == "git-receive-pack" {
        let ctx = load_for_write(state, req).await?;
        let refs = refs_of(state, ctx.repo.id).await?;
        let mut out = Vec::new();
        protocol::service_header(&mut out, &svc);
        protocol::receive_advertisement(&mut out, &refs);
        return Ok(git_response("git-receive-pack-advertisement").body(out));
    }
    if svc != "git-upload-pack" {
        return Err(GitError::UnknownService(svc).into());
    }
    let dl = load_for_read(state, req).await?;
    let mut out = Vec::new();
    protocol::service_header(&mut out, &svc);
    if wants_v2(req) {
        protocol::v2_capabilities(&mut out);
    } else {
        let refs = refs_of(state, dl.repo().id).await?;
        let head = head_target(&refs);
        protocol::v0_advertisement(&mut out, &refs, head.as_deref());
    }
    Ok(git_response("git-upload-pack-advertisement").body(out))
}

/// The repo's refs as (name, commit id), in byte order.
async fn refs_of(state: &AppState, repo_id: i64) -> ApiResult<Vec<(String, String)>> {
    Ok(db::refs::list(&state.db, repo_id)
        .await?
        .into_iter()
        .map(|r| (r.name, r.commit_oid))
        .collect())
}

/// What HEAD points at: the default branch, when it exists.
fn head_target(refs: &[(String, String)]) -> Option<String> {
    let main = format!("refs/heads/{DEFAULT_BRANCH}");
    refs.iter().any(|(n, _)| *n == main).then_some(main)
}

/// Reads a request body of at most [`MAX_REQUEST`] bytes, gunzipping it
/// when git sent it compressed (it does for requests over 1 KiB).
async fn read_body(req: &HttpRequest, mut payload: web::Payload) -> ApiResult<Vec<u8>> {
    let mut raw = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(crate::error::BodyError::read)?;
        if raw.len() + chunk.len() > MAX_REQUEST {
            return Err(ApiError::PayloadTooLarge(format!(
                "a git request is at most {MAX_REQUEST} bytes"
            )));
        }
        raw.extend_from_slice(&chunk);
    }
    let gzip = req
        .headers()
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip") || v.eq_ignore_ascii_case("x-gzip"));
    if !gzip {
        return Ok(raw);
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&raw[..])
        .take(MAX_REQUEST as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| GitError::Gzip(e.to_string()))?;
    if out.len() > MAX_REQUEST {
        return Err(ApiError::PayloadTooLarge(format!(
            "a git request is at most {MAX_REQUEST} bytes"
        )));
    }
    Ok(out)
}

/// `POST {repo}/git-upload-pack`: ls-refs and fetch (v2), or a v0 fetch.
pub async fn upload_pack(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    respond(upload_pack_inner(&state, &req, payload).await)
}

async fn upload_pack_inner(
    state: &AppState,
    req: &HttpRequest,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    let dl = load_for_read(state, req).await?;
    let body = read_body(req, payload).await?;
    let pkts = protocol::read_all(&body).map_err(GitError::Protocol)?;
    let v2 =
        wants_v2(req) || matches!(pkts.first(), Some(Pkt::Data(d)) if d.starts_with(b"command="));
    if v2 {
        match protocol::parse_v2(&pkts).map_err(GitError::Protocol)? {
            V2Command::LsRefs {
                symrefs,
                peel: _,
                unborn,
                prefixes,
            } => ls_refs(state, &dl, symrefs, unborn, &prefixes).await,
            V2Command::Fetch(r) => fetch_v2(state, dl, r).await,
        }
    } else {
        let r = protocol::parse_v0(&pkts).map_err(GitError::Protocol)?;
        fetch_v0(state, dl, r).await
    }
}

async fn ls_refs(
    state: &AppState,
    dl: &Download,
    symrefs: bool,
    unborn: bool,
    prefixes: &[String],
) -> ApiResult<HttpResponse> {
    let refs = refs_of(state, dl.repo().id).await?;
    let head = head_target(&refs);
    let wanted = |name: &str| prefixes.is_empty() || prefixes.iter().any(|p| name.starts_with(p));
    let mut out = Vec::new();
    if wanted("HEAD") {
        let target = format!("refs/heads/{DEFAULT_BRANCH}");
        match refs.iter().find(|(n, _)| *n == target) {
            Some((_, id)) => {
                let sym = if symrefs {
                    format!(" symref-target:{target}")
                } else {
                    String::new()
                };
                protocol::data(&mut out, format!("{id} HEAD{sym}\n").as_bytes());
            }
            None if unborn && head.is_none() => {
                protocol::data(
                    &mut out,
                    format!("unborn HEAD symref-target:{target}\n").as_bytes(),
                );
            }
            None => {}
        }
    }
    for (name, id) in &refs {
        if wanted(name) {
            protocol::data(&mut out, format!("{id} {name}\n").as_bytes());
        }
    }
    protocol::flush(&mut out);
    Ok(git_response("git-upload-pack-result").body(out))
}

/// Streams `preamble` then the pack of `plan`.
async fn send_pack(
    state: &AppState,
    dl: Download,
    plan: git_serve::Plan,
    preamble: Vec<u8>,
    framing: Framing,
) -> ApiResult<HttpResponse> {
    tracing::info!(
        repo.id = dl.repo().id,
        objects = plan.objects(),
        "git fetch"
    );
    let pack = git_serve::pack_stream(state.clone(), dl, plan, framing).await?;
    let body =
        futures::stream::once(async move { Ok::<_, actix_web::Error>(Bytes::from(preamble)) })
            .chain(pack);
    Ok(git_response("git-upload-pack-result").streaming(body))
}

fn shallow_lines(out: &mut Vec<u8>, plan: &git_serve::Plan) {
    for s in &plan.shallow {
        protocol::data(out, format!("shallow {s}\n").as_bytes());
    }
    for u in &plan.unshallow {
        protocol::data(out, format!("unshallow {u}\n").as_bytes());
    }
}

async fn fetch_v2(state: &AppState, dl: Download, r: FetchRequest) -> ApiResult<HttpResponse> {
    let graph = Graph::load(state, dl.repo().id).await?;
    let mut out = Vec::new();
    if !r.done && !r.haves.is_empty() {
        let common = git_serve::common(&graph, &r);
        protocol::data(&mut out, b"acknowledgments\n");
        if common.is_empty() {
            protocol::data(&mut out, b"NAK\n");
            protocol::flush(&mut out);
            return Ok(git_response("git-upload-pack-result").body(out));
        }
        for c in &common {
            protocol::data(&mut out, format!("ACK {c}\n").as_bytes());
        }
        protocol::data(&mut out, b"ready\n");
        protocol::delim(&mut out);
    }
    let plan = git_serve::plan(state, &graph, &r, true).await?;
    if r.deepen.is_some() {
        protocol::data(&mut out, b"shallow-info\n");
        shallow_lines(&mut out, &plan);
        protocol::delim(&mut out);
    }
    protocol::data(&mut out, b"packfile\n");
    send_pack(state, dl, plan, out, Framing::Band).await
}

async fn fetch_v0(state: &AppState, dl: Download, r: FetchRequest) -> ApiResult<HttpResponse> {
    let graph = Graph::load(state, dl.repo().id).await?;
    let plan = git_serve::plan(state, &graph, &r, r.done).await?;
    let mut out = Vec::new();
    if r.deepen.is_some() {
        shallow_lines(&mut out, &plan);
        protocol::flush(&mut out);
    }
    if !r.done {
        // A negotiation round: what is common, then NAK (the client sends
        // more haves, or `done`).
        if r.haves.is_empty() && r.deepen.is_some() {
            // The first round of a shallow fetch only learns the shallow list.
            return Ok(git_response("git-upload-pack-result").body(out));
        }
        for c in &plan.common {
            protocol::data(&mut out, format!("ACK {c} common\n").as_bytes());
        }
        protocol::data(&mut out, b"NAK\n");
        return Ok(git_response("git-upload-pack-result").body(out));
    }
    match plan.common.last() {
        Some(c) => protocol::data(&mut out, format!("ACK {c}\n").as_bytes()),
        None => protocol::data(&mut out, b"NAK\n"),
    }
    let framing = if r.has_cap("side-band-64k") {
        Framing::Band
    } else {
        Framing::Raw
    };
    send_pack(state, dl, plan, out, framing).await
}

/// The command section of a push is small: at most this many bytes.
const MAX_COMMANDS: usize = 1 << 20;

/// How far past `limits.commit_body` a push body is read (and dropped) to
/// answer with a push status rather than a 413.
const MAX_DRAIN: u64 = 64 << 20;

/// `POST {repo}/git-receive-pack`: ref updates and their pack (protocol
/// v0, `report-status`). See `registry::git_push`.
pub async fn receive_pack(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    respond(receive_pack_inner(&state, &req, payload).await)
}

async fn receive_pack_inner(
    state: &AppState,
    req: &HttpRequest,
    mut payload: web::Payload,
) -> ApiResult<HttpResponse> {
    let ctx = load_for_write(state, req).await?;
    let pusher = crate::auth::authenticate::caller(req)
        .await?
        .ok_or_else(|| ApiError::Unauthorized("authentication required".into()))?;
    if req.headers().contains_key(header::CONTENT_ENCODING) {
        return Err(GitError::CompressedPush.into());
    }
    let limit = state.limits.commit_body;
    let too_large = || {
        format!("the pushed pack is over the hub's limit of {limit} bytes: track large files with git-lfs, or push fewer commits at a time")
    };
    // Past the limit the rest of the body is read and dropped, up to this
    // much more, so that the refusal reaches git as a push status it prints
    // (git shows no body of an HTTP error); beyond, 413.
    let drain = limit.saturating_add(MAX_DRAIN);
    let declared = crate::routes::body::content_length(req);
    if declared.is_some_and(|n| n > drain.saturating_add(MAX_COMMANDS as u64)) {
        return Err(ApiError::PayloadTooLarge(too_large()));
    }
    // The commands, then the pack streamed to a temporary file.
    let mut head = Vec::new();
    let mut parsed = None;
    while parsed.is_none() {
        let Some(chunk) = payload.next().await else {
            break;
        };
        head.extend_from_slice(&chunk.map_err(crate::error::BodyError::read)?);
        parsed = protocol::parse_push_commands(&head).map_err(GitError::Protocol)?;
        if parsed.is_none() && head.len() > MAX_COMMANDS {
            return Err(GitError::Protocol("the push's commands are too long".into()).into());
        }
    }
    let Some((cmds, used)) = parsed else {
        if head.is_empty() {
            // git's probe of a large push (or nothing to do).
            return Ok(git_response("git-receive-pack-result").finish());
        }
        return Err(GitError::Protocol("the push ends inside its commands".into()).into());
    };
    let dir = tempfile::tempdir().map_err(ApiError::internal)?;
    let pack_path = dir.path().join("push.pack");
    let mut file = tokio::fs::File::create(&pack_path)
        .await
        .map_err(ApiError::internal)?;
    let mut size = (head.len() - used) as u64;
    {
        use tokio::io::AsyncWriteExt;
        if size <= limit {
            file.write_all(&head[used..])
                .await
                .map_err(ApiError::internal)?;
        }
        drop(head);
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(crate::error::BodyError::read)?;
            size += chunk.len() as u64;
            if size > drain {
                return Err(ApiError::PayloadTooLarge(too_large()));
            }
            if size <= limit {
                file.write_all(&chunk).await.map_err(ApiError::internal)?;
            }
        }
        file.flush().await.map_err(ApiError::internal)?;
    }
    drop(file);
    let band = cmds.has_cap("side-band-64k");
    if cmds.updates.is_empty() {
        let mut report = Vec::new();
        protocol::flush(&mut report);
        return Ok(git_response("git-receive-pack-result").body(report));
    }
    if size > limit {
        tracing::info!(
            repo.id = ctx.repo.id,
            bytes = size,
            "git push refused: pack over the limit"
        );
        let mut lines = vec![format!("unpack {}", too_large())];
        for u in &cmds.updates {
            lines.push(format!("ng {} pack too large", u.name));
        }
        return Ok(git_response("git-receive-pack-result").body(report_status(band, &lines)));
    }
    // Read the pack on a blocking thread (it may look up thin-pack bases).
    let mut ingested = crate::registry::git_push::Ingested::default();
    let unpack = if size == 0 {
        Ok(())
    } else {
        let st = state.clone();
        let repo = ctx.repo.clone();
        let index_dir = dir.path().join("index");
        let (r, ing) = tokio::task::spawn_blocking(move || {
            let mut ing = crate::registry::git_push::Ingested::default();
            let r = crate::registry::git_push::ingest(&st, &repo, &pack_path, &index_dir, &mut ing);
            (r, ing)
        })
        .await
        .map_err(ApiError::internal)?;
        ingested = ing;
        r
    };
    let mut lines: Vec<String> = Vec::new();
    let mut committed = false;
    match unpack {
        Err(reason) => {
            tracing::info!(repo.id = ctx.repo.id, %reason, "git push refused: bad pack");
            lines.push(format!("unpack {}", reason.replace('\n', " ")));
            for u in &cmds.updates {
                lines.push(format!("ng {} unpacker error", u.name));
            }
        }
        Ok(()) => {
            let result = crate::registry::git_push::apply(
                state,
                &ctx.repo,
                &pusher,
                &ingested,
                &cmds.updates,
                cmds.has_cap("atomic"),
            )
            .await;
            let (status, done) = match result {
                Ok(r) => r,
                Err(e) => {
                    crate::sweeper::release(state, &ingested.pending).await;
                    return Err(e);
                }
            };
            committed = done;
            lines.push("unpack ok".into());
            for (u, s) in cmds.updates.iter().zip(&status) {
                match s {
                    None => lines.push(format!("ok {}", u.name)),
                    Some(reason) => {
                        lines.push(format!("ng {} {}", u.name, reason.replace('\n', " ")))
                    }
                }
            }
        }
    }
    let outcome: Result<((), bool), ApiError> = if committed {
        Ok(((), true))
    } else {
        Err(ApiError::ParentCommitMismatch)
    };
    state.metrics.commit(&outcome);
    // Bytes no written commit claimed (all of them when nothing was
    // written; a refused ref's otherwise). Releasing a claimed one is a
    // no-op: its row is gone and a blob row needs its bytes.
    crate::sweeper::release(state, &ingested.pending).await;
    drop(dir);
    Ok(git_response("git-receive-pack-result").body(report_status(band, &lines)))
}

/// The `report-status` section (in side-band channel 1 when asked for).
fn report_status(band: bool, lines: &[String]) -> Vec<u8> {
    let mut status = Vec::new();
    for l in lines {
        protocol::data(&mut status, format!("{l}\n").as_bytes());
    }
    protocol::flush(&mut status);
    if !band {
        return status;
    }
    let mut report = Vec::new();
    protocol::band(&mut report, gix_packetline::Channel::Data, &status);
    protocol::flush(&mut report);
    report
}
