//! The steps before a commit: `validate-yaml` and `preupload` (the server
//! decides regular or LFS for each file).

use crate::auth::access::Access;
use crate::auth::Auth;
use crate::card;
use crate::domain::RepoPath;
use crate::error::{ApiError, ApiResult};
use crate::git::attributes::{pattern_matches, LfsRules};
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

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct YamlBody {
    content: String,
    #[serde(default)]
    #[allow(dead_code)]
    repo_type: Option<String>,
}

/// `POST /api/validate-yaml`: always JSON (the client parses before checking the status).
pub async fn validate_yaml(JsonBody(body): JsonBody<YamlBody>) -> ApiResult<HttpResponse> {
    match card::parse_card(&body.content) {
        Ok(_) => Ok(HttpResponse::Ok().json(json!({"errors": [], "warnings": []}))),
        Err(msg) => Ok(HttpResponse::BadRequest().json(json!({
            "error": msg, "errors": [{"message": msg}], "warnings": []
        }))),
    }
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

/// Whether a `.gitignore` text ignores a path (basic patterns, `!` negation, `dir/`).
pub(crate) fn ignored(gitignore: &str, path: &str) -> bool {
    let mut result = false;
    for line in gitignore.lines() {
        let line = line.trim_end();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (neg, pat) = match line.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, line),
        };
        let matched = if let Some(dir) = pat.strip_suffix('/') {
            path.split('/')
                .collect::<Vec<_>>()
                .split_last()
                .is_some_and(|(_, parents)| {
                    parents.iter().enumerate().any(|(i, _)| {
                        pattern_matches(
                            dir,
                            &path.split('/').take(i + 1).collect::<Vec<_>>().join("/"),
                        )
                    })
                })
        } else {
            pattern_matches(pat, path)
        };
        if matched {
            result = !neg;
        }
    }
    result
}

pub async fn preupload(
    state: web::Data<AppState>,
    auth: Auth,
    repo: RepoRef,
    req: HttpRequest,
    JsonBody(body): JsonBody<PreuploadBody>,
) -> ApiResult<HttpResponse> {
    let ctx = registry::load_repo(&state, &auth, repo.kind, &repo.id, Access::Write).await?;
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
    let rules = LfsRules::parse(&attributes);
    let mut out = Vec::with_capacity(body.files.len());
    for f in &body.files {
        let path = RepoPath::parse(&f.path)?;
        let sample = match &f.sample {
            Some(s) => base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|_| {
                    ApiError::InvalidRequest(format!("sample of {} is not base64", f.path))
                })?,
            None => vec![],
        };
        let lfs = f.size > 0
            && wants_lfs(
                &rules,
                path.as_str(),
                f.size,
                looks_binary(&sample),
                state.limits.lfs_threshold,
            );
        let remote = files::entry_at(&state, tree, path.as_str()).await?;
        let oid = remote.and_then(|e| e.blob.map(|b| if b.is_lfs { b.sha256 } else { e.oid }));
        let should_ignore = body
            .git_ignore
            .as_deref()
            .is_some_and(|g| ignored(g, path.as_str()));
        out.push(json!({
            "path": f.path,
            "uploadMode": if lfs { "lfs" } else { "regular" },
            "shouldIgnore": should_ignore,
            "oid": oid,
        }));
    }
    Ok(HttpResponse::Ok().json(json!({"files": out})))
}

#[cfg(test)]
mod tests {
    use super::ignored;

    #[test]
    fn gitignore() {
        let g = "*.log\nbuild/\n!keep.log\n";
        assert!(ignored(g, "a.log"));
        assert!(ignored(g, "x/a.log"));
        assert!(!ignored(g, "keep.log"));
        assert!(ignored(g, "build/out.bin"));
        assert!(!ignored(g, "src/main.rs"));
    }
}
