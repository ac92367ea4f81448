//! The steps before a commit: `validate-yaml` and `preupload` (the server
//! decides regular or LFS for each file).

use crate::auth::access::Access;
use crate::auth::Auth;
use crate::card;
use crate::domain::RepoPath;
use crate::error::{ApiError, ApiResult, LfsRequestError};
use crate::git::attributes::LfsRules;
use crate::git::ignore::IgnoreRules;
use crate::heavy::Tenant;
use crate::registry::commit::{looks_binary, wants_lfs};
use crate::registry::files;
use crate::registry::repo_ref::param;
use crate::registry::{self, RepoRef};
use crate::routes::body::JsonBody;
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine;
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct YamlBody {
    content: String,
    #[serde(default)]
    #[allow(dead_code)]
    repo_type: Option<String>,
}

/// `POST /api/validate-yaml`: always JSON (the client parses before checking the status).
/// Open to anyone (credentials are not checked), so its heavy work is charged
/// to the caller's address.
pub async fn validate_yaml(
    state: web::Data<AppState>,
    req: HttpRequest,
    JsonBody(body): JsonBody<YamlBody>,
) -> ApiResult<HttpResponse> {
    let tenant = Tenant::Anonymous(req.peer_addr().map(|a| a.ip()));
    let parsed = state
        .tenancy
        .heavy
        .run(tenant, move || card::parse_card(&body.content))
        .await?;
    let (errors, warnings) = match parsed {
        Ok(card) => card::check_metadata(&card),
        Err(msg) => (vec![msg], vec![]),
    };
    let list = |v: &[String]| v.iter().map(|m| json!({"message": m})).collect::<Vec<_>>();
    let body = json!({"errors": list(&errors), "warnings": list(&warnings)});
    if errors.is_empty() {
        return Ok(HttpResponse::Ok().json(body));
    }
    let mut body = body;
    body["error"] = json!(errors.join("; "));
    Ok(HttpResponse::BadRequest().json(body))
}

#[derive(Debug, Deserialize)]
pub struct PreuploadFile {
    path: String,
    #[serde(default)]
    sample: Option<String>,
    size: u64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PreuploadBody {
    files: Vec<PreuploadFile>,
    #[serde(default)]
    git_ignore: Option<String>,
    #[serde(default)]
    git_attributes: Option<String>,
}

pub async fn preupload(
    state: web::Data<AppState>,
    auth: Auth,
    repo: RepoRef,
    req: HttpRequest,
    JsonBody(body): JsonBody<PreuploadBody>,
) -> ApiResult<HttpResponse> {
    let ctx = registry::load_repo(&state, &auth, repo.kind, &repo.id, Access::Read).await?;
    // Write access, or (a pull request: `create_pr`, or its ref) what a
    // commit to it needs (`routes::hf::commit`).
    let rev_param = param(&req, "rev").unwrap_or_default();
    let for_pr = url::form_urlencoded::parse(req.query_string().as_bytes())
        .any(|(k, v)| k == "create_pr" && (v == "1" || v == "true"));
    if let Some(n) = rev_param.strip_prefix("refs/pr/") {
        let p = crate::registry::discussions::participant(&auth, &ctx)?;
        let n = n.parse::<i32>().map_err(|_| {
            ApiError::InvalidRevision(format!("{n:?}: refs/pr/ takes a pull request number"))
        })?;
        crate::gating::require_gate(&state, &auth, &ctx).await?;
        crate::registry::discussions::pr_for_commit(&state, &ctx, p, n).await?;
    } else if for_pr {
        crate::registry::discussions::participant(&auth, &ctx)?;
        crate::gating::require_gate(&state, &auth, &ctx).await?;
    } else {
        crate::auth::access::require(ctx.access, Access::Write)?;
    }
    if body.files.len() > 10_000 {
        return Err(ApiError::PayloadTooLarge(
            "at most 10000 files per preupload call".into(),
        ));
    }
    let rev = param(&req, "rev").unwrap_or_else(|| registry::DEFAULT_BRANCH.to_string());
    let resolved = registry::resolve_str(&state, ctx.repo.id, &rev).await?;
    let tree = &resolved.commit.tree_oid;
    let attributes = match &body.git_attributes {
        Some(t) => t.clone(),
        None => files::read_path(&state, tree, ".gitattributes")
            .await?
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default(),
    };
    // The repo's own `.gitignore` applies unless the commit brings a new one.
    let git_ignore = match &body.git_ignore {
        Some(t) => Some(t.clone()),
        None => files::read_path(&state, tree, ".gitignore")
            .await?
            .map(|b| String::from_utf8_lossy(&b).into_owned()),
    };
    let mut paths = Vec::with_capacity(body.files.len());
    for f in &body.files {
        paths.push(RepoPath::parse(&f.path)?);
    }
    // Compiling and matching tenant patterns is CPU work: off the async workers.
    let names: Vec<String> = paths.iter().map(|p| p.as_str().to_string()).collect();
    let verdicts = state
        .tenancy
        .heavy
        .run(Tenant::of(&auth, &req), move || {
            match_paths(&attributes, git_ignore.as_deref(), &names)
        })
        .await??;
    // What is at each path now: one lookup for all of them.
    let wanted: Vec<&str> = paths.iter().map(RepoPath::as_str).collect();
    let remote: HashMap<String, crate::db::git::Entry> = files::entries_at(&state, tree, &wanted)
        .await?
        .into_iter()
        .map(|e| (e.path.clone(), e))
        .collect();
    let mut out = Vec::with_capacity(body.files.len());
    for ((f, path), (rule_lfs, should_ignore)) in body.files.iter().zip(&paths).zip(verdicts) {
        let sample = match &f.sample {
            Some(s) => base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|_| LfsRequestError::SampleNotBase64(f.path.clone()))?,
            None => vec![],
        };
        let lfs = wants_lfs(
            rule_lfs,
            f.size,
            looks_binary(&sample),
            state.limits.lfs_threshold,
        );
        let oid = remote.get(path.as_str()).and_then(|e| {
            e.blob.as_ref().map(|b| {
                if b.is_lfs {
                    b.sha256.clone()
                } else {
                    e.oid.clone()
                }
            })
        });
        out.push(json!({
            "path": f.path,
            "uploadMode": if lfs { "lfs" } else { "regular" },
            "shouldIgnore": should_ignore,
            "oid": oid,
        }));
    }
    Ok(HttpResponse::Ok().json(json!({"files": out})))
}

/// For each path: (an LFS rule of `.gitattributes` covers it, `gitIgnore` ignores it).
fn match_paths(
    attributes: &str,
    git_ignore: Option<&str>,
    paths: &[String],
) -> ApiResult<Vec<(bool, bool)>> {
    let rules = LfsRules::parse(attributes)?;
    rules.check_budget(paths.len())?;
    let ignore = git_ignore.map(IgnoreRules::parse).transpose()?;
    if let Some(g) = &ignore {
        g.check_budget(paths.iter().map(String::as_str))?;
    }
    let mut folders = HashMap::new();
    Ok(paths
        .iter()
        .map(|p| {
            let ignored = ignore
                .as_ref()
                .is_some_and(|g| g.is_ignored(p, &mut folders));
            (rules.is_lfs(p), ignored)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::match_paths;

    #[test]
    fn verdicts() {
        let paths = [
            "a.log".to_string(),
            "w.bin".to_string(),
            "build/x".to_string(),
        ];
        let v = match_paths("*.bin filter=lfs\n", Some("*.log\nbuild/\n"), &paths).unwrap();
        assert_eq!(v, vec![(false, true), (true, false), (false, true)]);
        let evil: String = (0..3000)
            .map(|i| format!("{}{i}\n", "*a".repeat(20)))
            .collect();
        let e = match_paths("", Some(&evil), &paths).unwrap_err();
        assert_eq!(e.code(), "payload_too_large");
    }
}
