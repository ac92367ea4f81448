//! Discussions and pull requests, as the Hub has them (`huggingface_hub`'s
//! `create_discussion`, `create_pull_request`, `create_commit(create_pr=True)`,
//! `comment_discussion`, `merge_pull_request`...).
//!
//! - Anyone who can read a repo can see its discussions. Opening one, or a
//!   pull request, and commenting need a credential that may write
//!   (a session, or a token with the write scope whose restriction covers
//!   the repo): on a public repo, anyone signed in.
//! - A pull request is the ref `refs/pr/<num>`, started at the head of its
//!   target branch (`base_oid`). Its author and the repo's writers commit to
//!   it. `create_pull_request` makes a draft (merged only once set open);
//!   `create_commit(create_pr=True)` an open one. Files stored through LFS
//!   or Xet need write access (an upload reserves the repo owner's quota), so
//!   others propose inline files only.
//! - Merging needs write access to the repo. It makes a merge commit on the
//!   target branch (parents: the branch head, the pull request's head) whose
//!   tree is the branch head's with the pull request's changes (against
//!   `base_oid`) applied; a path changed both ways differently is a conflict
//!   (409, listed as `filesWithConflicts`), and nothing is merged.
//! - Editing a comment: its author. Hiding one, renaming or closing a
//!   discussion: its author or the repo's writers.

use crate::auth::access::{self, Access};
use crate::auth::principal::Principal;
use crate::auth::{Auth, Scope};
use crate::db;
use crate::db::discussions::{DiscussionRow, EventRow, NewDiscussion};
use crate::db::git::Entry;
use crate::domain::{RepoPath, Sha256};
use crate::error::{ApiError, ApiResult};
use crate::registry::commit::{self, AddContent, CommitInput, Op};
use crate::registry::RepoCtx;
use crate::state::AppState;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Discussions per page of a listing (the Hub's page size).
pub const PAGE: i64 = 50;
/// The longest title and comment accepted.
pub const MAX_TITLE: usize = 200;
pub const MAX_COMMENT: usize = 65_536;
/// Files larger than this show as changed, not as lines, in a diff.
const MAX_DIFF_FILE: i64 = 1 << 20;

/// The caller, if their credential may post in this repo's discussions.
pub fn participant<'a>(auth: &'a Auth, ctx: &RepoCtx) -> ApiResult<&'a Principal> {
    let p = auth.require()?;
    let repo = &ctx.repo;
    if !p.has_scope(Scope::Write)
        || !p.may_touch_repo(&repo.namespace, &repo.full_id(), &repo.repo_type)
    {
        return Err(ApiError::Forbidden(
            "taking part in discussions needs a token with the write scope that covers this repository".into(),
        ));
    }
    Ok(p)
}

fn is_writer(ctx: &RepoCtx) -> bool {
    ctx.access >= Access::Write
}

pub fn check_title(title: &str) -> ApiResult<String> {
    let t = title.trim();
    if t.is_empty() || t.chars().count() > MAX_TITLE || t.chars().any(char::is_control) {
        return Err(ApiError::InvalidRequest(format!(
            "title must be 1 to {MAX_TITLE} characters, on one line"
        )));
    }
    Ok(t.to_string())
}

pub fn check_comment(text: &str, what: &str) -> ApiResult<()> {
    if text.trim().is_empty() {
        return Err(ApiError::InvalidRequest(format!(
            "{what} must not be empty"
        )));
    }
    if text.len() > MAX_COMMENT {
        return Err(ApiError::InvalidRequest(format!(
            "{what} is {} bytes; at most {MAX_COMMENT} are accepted",
            text.len()
        )));
    }
    Ok(())
}

fn not_found(_num: i32) -> ApiError {
    ApiError::NotFound("discussion")
}

/// Opens a discussion or pull request (with its description as the first
/// comment); a pull request's ref starts at `base` (default: the target
/// branch's head). `announce`: queue its webhook event now; a pull request
/// opened for a commit (`create_pr`) is announced by [`record_commit`] once
/// the commit is made, so a commit that fails (and takes the pull request
/// back, [`undo_create`]) never announces one.
pub async fn create(
    state: &AppState,
    ctx: &RepoCtx,
    author: &Principal,
    title: &str,
    description: &str,
    pull: Option<(&str, Option<&str>, &str)>,
    announce: bool,
) -> ApiResult<DiscussionRow> {
    let title = check_title(title)?;
    if description.len() > MAX_COMMENT {
        check_comment(description, "description")?;
    }
    let repo_id = ctx.repo.id;
    let mut tx = state.db.begin().await?;
    let num = db::discussions::next_num(&mut tx, repo_id).await?;
    let mut pr: Option<(String, String, String)> = None;
    if let Some((target, base, status)) = pull {
        let branch = format!("refs/heads/{target}");
        let head = db::refs::get_for_update(&mut tx, repo_id, &branch)
            .await?
            .ok_or_else(|| ApiError::RevisionNotFound(target.to_string()))?;
        let base = match base {
            Some(b) => {
                let b = b.to_ascii_lowercase();
                db::git::commit(&mut *tx, repo_id, &b)
                    .await?
                    .ok_or_else(|| {
                        ApiError::InvalidRequest(format!(
                            "parent commit {b} is not a commit of this repository"
                        ))
                    })?
                    .oid
            }
            None => head.commit_oid,
        };
        let pr_ref = format!("refs/pr/{num}");
        if !db::refs::create(&mut tx, repo_id, &pr_ref, &base, None, Some(author.user_id)).await? {
            return Err(ApiError::Conflict(format!("{pr_ref} exists already")));
        }
        pr = Some((target.to_string(), base, status.to_string()));
    }
    let status = pr.as_ref().map_or("open", |p| p.2.as_str());
    let id = db::discussions::insert(
        &mut tx,
        &NewDiscussion {
            repo_id,
            num,
            title: &title,
            author_id: author.user_id,
            status,
            pull: pr.as_ref().map(|p| (p.0.as_str(), p.1.as_str())),
        },
    )
    .await?;
    let text = if description.trim().is_empty() {
        ""
    } else {
        description.trim()
    };
    db::discussions::add_event(
        &mut tx,
        id,
        "comment",
        author.user_id,
        &comment_data(text, author, None),
    )
    .await?;
    if announce {
        webhook(state, &mut tx, ctx, num, "create", None).await?;
    }
    tx.commit().await?;
    db::discussions::get(&state.db, repo_id, num)
        .await?
        .ok_or_else(|| not_found(num))
}

/// Removes a pull request made for a commit that then failed (its ref and row).
pub async fn undo_create(state: &AppState, repo_id: i64, num: i32) -> ApiResult<()> {
    let mut tx = state.db.begin().await?;
    db::refs::delete(&mut tx, repo_id, &format!("refs/pr/{num}"), None).await?;
    sqlx::query("DELETE FROM discussions WHERE repo_id = $1 AND num = $2")
        .bind(repo_id)
        .bind(num)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

pub async fn get(state: &AppState, ctx: &RepoCtx, num: i32) -> ApiResult<DiscussionRow> {
    db::discussions::get(&state.db, ctx.repo.id, num)
        .await?
        .ok_or_else(|| not_found(num))
}

/// The pull request a commit to `refs/pr/<num>` goes to, if the caller may
/// commit to it (its author, or a writer) and it is open or a draft.
pub async fn pr_for_commit(
    state: &AppState,
    ctx: &RepoCtx,
    author: &Principal,
    num: i32,
) -> ApiResult<DiscussionRow> {
    let d = get(state, ctx, num).await?;
    if !d.is_pull_request {
        return Err(ApiError::InvalidRevision(format!(
            "refs/pr/{num}: #{num} is a discussion, not a pull request"
        )));
    }
    if !(is_writer(ctx) || d.author_id == Some(author.user_id)) {
        return Err(ApiError::Forbidden(format!(
            "only the author of pull request #{num} and the repository's writers can commit to it"
        )));
    }
    if !matches!(d.status.as_str(), "open" | "draft") {
        return Err(ApiError::Conflict(format!(
            "pull request #{num} is {}; commits can no longer be added",
            d.status
        )));
    }
    Ok(d)
}

/// Records a commit made to a pull request (a draft stays a draft until
/// its status is set to open, as on the Hub).
pub async fn record_commit(
    state: &AppState,
    ctx: &RepoCtx,
    d: &DiscussionRow,
    author: &Principal,
    oid: &str,
    subject: &str,
    created: bool,
) -> ApiResult<()> {
    let mut tx = state.db.begin().await?;
    if created {
        webhook(state, &mut tx, ctx, d.num, "create", None).await?;
    }
    db::discussions::add_event(
        &mut tx,
        d.id,
        "commit",
        author.user_id,
        &json!({"oid": oid, "subject": subject}),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

pub async fn comment(
    state: &AppState,
    ctx: &RepoCtx,
    author: &Principal,
    num: i32,
    text: &str,
) -> ApiResult<EventRow> {
    check_comment(text, "comment")?;
    let (mut tx, d) = locked(state, ctx, num).await?;
    let e = db::discussions::add_event(
        &mut tx,
        d.id,
        "comment",
        author.user_id,
        &comment_data(text.trim(), author, None),
    )
    .await?;
    webhook(state, &mut tx, ctx, num, "create", Some(&e)).await?;
    tx.commit().await?;
    Ok(e)
}

/// A transaction holding discussion `num`'s row lock, and the row.
async fn locked(
    state: &AppState,
    ctx: &RepoCtx,
    num: i32,
) -> ApiResult<(sqlx::Transaction<'static, sqlx::Postgres>, DiscussionRow)> {
    let mut tx = state.db.begin().await?;
    let d = db::discussions::get_for_update(&mut tx, ctx.repo.id, num)
        .await?
        .ok_or_else(|| not_found(num))?;
    Ok((tx, d))
}

/// The discussion's author or a writer: may rename, close, reopen, hide.
fn may_moderate(ctx: &RepoCtx, d: &DiscussionRow, p: &Principal) -> bool {
    is_writer(ctx) || d.author_id == Some(p.user_id)
}

pub async fn rename(
    state: &AppState,
    ctx: &RepoCtx,
    p: &Principal,
    num: i32,
    title: &str,
) -> ApiResult<EventRow> {
    let title = check_title(title)?;
    let (mut tx, d) = locked(state, ctx, num).await?;
    if !may_moderate(ctx, &d, p) {
        return Err(ApiError::Forbidden(
            "only the author and the repository's writers can rename a discussion".into(),
        ));
    }
    db::discussions::set_title(&mut tx, d.id, &title).await?;
    let e = db::discussions::add_event(
        &mut tx,
        d.id,
        "title-change",
        p.user_id,
        &json!({"from": d.title, "to": title}),
    )
    .await?;
    webhook(state, &mut tx, ctx, num, "update", None).await?;
    tx.commit().await?;
    Ok(e)
}

/// Opens or closes (merging is [`merge`]), with an optional comment first.
pub async fn set_status(
    state: &AppState,
    ctx: &RepoCtx,
    p: &Principal,
    num: i32,
    status: &str,
    text: Option<&str>,
) -> ApiResult<EventRow> {
    if !matches!(status, "open" | "closed") {
        return Err(ApiError::InvalidRequest(format!(
            "status must be \"open\" or \"closed\", not {status:?} (merge a pull request with .../merge)"
        )));
    }
    let text = text.map(str::trim).filter(|t| !t.is_empty());
    if let Some(t) = text {
        check_comment(t, "comment")?;
    }
    let (mut tx, d) = locked(state, ctx, num).await?;
    if !may_moderate(ctx, &d, p) {
        return Err(ApiError::Forbidden(
            "only the author and the repository's writers can change a discussion's status".into(),
        ));
    }
    if d.status == "merged" {
        return Err(ApiError::Conflict(format!(
            "#{num} is merged; its status cannot change"
        )));
    }
    if d.status == status {
        return Err(ApiError::Conflict(format!("#{num} is already {status}")));
    }
    if let Some(t) = text {
        db::discussions::add_event(
            &mut tx,
            d.id,
            "comment",
            p.user_id,
            &comment_data(t, p, None),
        )
        .await?;
    }
    db::discussions::set_status(&mut tx, d.id, status, None).await?;
    let e = db::discussions::add_event(
        &mut tx,
        d.id,
        "status-change",
        p.user_id,
        &json!({"status": status}),
    )
    .await?;
    webhook(state, &mut tx, ctx, num, "update", None).await?;
    tx.commit().await?;
    Ok(e)
}

/// Edits a comment (its author only); the previous text stays in its history.
pub async fn edit_comment(
    state: &AppState,
    ctx: &RepoCtx,
    p: &Principal,
    num: i32,
    event_id: &str,
    text: &str,
) -> ApiResult<EventRow> {
    check_comment(text, "content")?;
    let (mut tx, d) = locked(state, ctx, num).await?;
    let e = comment_event(&mut tx, &d, event_id).await?;
    if e.author_id != Some(p.user_id) {
        return Err(ApiError::Forbidden(
            "only its author can edit a comment".into(),
        ));
    }
    let data = comment_data(text.trim(), p, Some(&e.data.0));
    db::discussions::set_event_data(&mut tx, e.id, &data).await?;
    let e = EventRow {
        data: sqlx::types::Json(data),
        ..e
    };
    webhook(state, &mut tx, ctx, num, "update", Some(&e)).await?;
    tx.commit().await?;
    Ok(e)
}

/// Hides a comment (its author or a writer); its text is no longer shown.
pub async fn hide_comment(
    state: &AppState,
    ctx: &RepoCtx,
    p: &Principal,
    num: i32,
    event_id: &str,
) -> ApiResult<EventRow> {
    let (mut tx, d) = locked(state, ctx, num).await?;
    let e = comment_event(&mut tx, &d, event_id).await?;
    if !(is_writer(ctx) || e.author_id == Some(p.user_id)) {
        return Err(ApiError::Forbidden(
            "only its author and the repository's writers can hide a comment".into(),
        ));
    }
    let mut data = e.data.0.clone();
    data["hidden"] = json!(true);
    data["hiddenBy"] = json!(p.name);
    db::discussions::set_event_data(&mut tx, e.id, &data).await?;
    let e = EventRow {
        data: sqlx::types::Json(data),
        ..e
    };
    webhook(state, &mut tx, ctx, num, "update", Some(&e)).await?;
    tx.commit().await?;
    Ok(e)
}

async fn comment_event(
    tx: &mut sqlx::PgConnection,
    d: &DiscussionRow,
    event_id: &str,
) -> ApiResult<EventRow> {
    let id = event_id.to_ascii_lowercase();
    let e = db::discussions::event(tx, d.id, &id)
        .await?
        .ok_or(ApiError::NotFound("comment"))?;
    if e.kind != "comment" {
        return Err(ApiError::InvalidRequest(format!(
            "event {id} is a {}, not a comment",
            e.kind
        )));
    }
    Ok(e)
}

/// A comment's stored data: the text, with the earlier versions when edited.
/// The webhook event of a change to discussion `num` (domain `discussion`),
/// inside the change's transaction (`webhooks::enqueue`): the discussion as
/// it is now, in the Hub's payload shape, and the comment added or changed.
async fn webhook(
    state: &AppState,
    tx: &mut sqlx::PgConnection,
    ctx: &RepoCtx,
    num: i32,
    action: &'static str,
    comment: Option<&EventRow>,
) -> ApiResult<()> {
    let d = db::discussions::get(&mut *tx, ctx.repo.id, num)
        .await?
        .ok_or_else(|| not_found(num))?;
    let repo = ctx.repo.full_id();
    let web = if ctx.repo.repo_type == "dataset" {
        format!("{}/datasets/{repo}/discussions/{}", state.public_url, d.num)
    } else {
        format!("{}/{repo}/discussions/{}", state.public_url, d.num)
    };
    let api = format!(
        "{}/api/{}s/{repo}/discussions/{}",
        state.public_url, ctx.repo.repo_type, d.num
    );
    let discussion = json!({
        "id": d.id.to_string(),
        "num": d.num,
        "title": d.title,
        "status": d.status,
        "isPullRequest": d.is_pull_request,
        "author": {"id": d.author_id.map(|i| i.to_string()), "name": d.author},
        "url": {"web": web, "api": api},
        "changes": d.target_branch.as_ref().map(|b| json!({"base": format!("refs/heads/{b}")})),
    });
    let comment = comment.map(|e| {
        let hidden = e.data.0["hidden"].as_bool() == Some(true);
        json!({
            "id": e.event_id,
            "author": {"id": e.author_id.map(|i| i.to_string()), "name": e.author},
            "content": if hidden { Value::Null } else { e.data.0["raw"].clone() },
            "hidden": hidden,
            "url": {"web": format!("{web}#{}", e.event_id)},
        })
    });
    crate::webhooks::enqueue(
        tx,
        crate::webhooks::Event::Discussion {
            repo_id: ctx.repo.id,
            action,
            discussion,
            comment,
        },
    )
    .await?;
    Ok(())
}

fn comment_data(text: &str, author: &Principal, before: Option<&Value>) -> Value {
    let now = crate::registry::hf_date(chrono::Utc::now());
    let version = json!({"raw": text, "updatedAt": now, "author": author.name});
    let mut history: Vec<Value> = before
        .and_then(|b| b["history"].as_array().cloned())
        .unwrap_or_default();
    history.insert(0, version);
    json!({
        "raw": text,
        "hidden": before.is_some_and(|b| b["hidden"].as_bool() == Some(true)),
        "edited": before.is_some(),
        "history": history,
    })
}

/// The files of a commit's tree: path -> entry (folders left out).
async fn files_of(
    state: &AppState,
    repo_id: i64,
    commit_oid: &str,
) -> ApiResult<BTreeMap<String, Entry>> {
    let c = db::git::commit(&state.db, repo_id, commit_oid)
        .await?
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("commit {commit_oid} is missing")))?;
    Ok(db::git::list_recursive(&state.db, &c.tree_oid, "")
        .await?
        .into_iter()
        .filter(|e| !e.is_dir())
        .map(|e| (e.path.clone(), e))
        .collect())
}

/// Paths whose entry differs between two trees.
fn changed(a: &BTreeMap<String, Entry>, b: &BTreeMap<String, Entry>) -> Vec<String> {
    let mut out: Vec<String> = a
        .iter()
        .filter(|(p, e)| b.get(*p).is_none_or(|f| f.oid != e.oid))
        .map(|(p, _)| p.clone())
        .collect();
    out.extend(b.keys().filter(|p| !a.contains_key(*p)).cloned());
    out.sort();
    out
}

/// What merging a pull request would do now: its head, the target branch's
/// head, the files at its base and at its head, the paths it changes, and
/// those the branch changed differently since.
pub struct MergePlan {
    pub pr_head: String,
    pub base_head: String,
    pub merge_base: BTreeMap<String, Entry>,
    pub pr_files: BTreeMap<String, Entry>,
    pub changes: Vec<String>,
    pub conflicts: Vec<String>,
}

pub async fn plan(state: &AppState, ctx: &RepoCtx, d: &DiscussionRow) -> ApiResult<MergePlan> {
    let repo_id = ctx.repo.id;
    let (Some(target), Some(base)) = (&d.target_branch, &d.base_oid) else {
        return Err(ApiError::InvalidRequest(format!(
            "#{} is not a pull request",
            d.num
        )));
    };
    let pr_head = db::refs::get(&state.db, repo_id, &format!("refs/pr/{}", d.num))
        .await?
        .map(|r| r.commit_oid)
        .or_else(|| d.merge_commit_oid.clone())
        .unwrap_or_else(|| base.clone());
    let base_head = db::refs::get(&state.db, repo_id, &format!("refs/heads/{target}"))
        .await?
        .ok_or_else(|| ApiError::RevisionNotFound(target.clone()))?
        .commit_oid;
    let merge_base = files_of(state, repo_id, base).await?;
    let pr_files = files_of(state, repo_id, &pr_head).await?;
    // The branch head's files: read only when the branch moved since the base.
    let moved = if base_head == *base {
        None
    } else {
        Some(files_of(state, repo_id, &base_head).await?)
    };
    let base_files = moved.as_ref().unwrap_or(&merge_base);
    let changes = changed(&merge_base, &pr_files);
    let since = changed(&merge_base, base_files);
    let conflicts = changes
        .iter()
        .filter(|p| since.binary_search(p).is_ok())
        .filter(|p| pr_files.get(*p).map(|e| &e.oid) != base_files.get(*p).map(|e| &e.oid))
        .cloned()
        .collect();
    Ok(MergePlan {
        pr_head,
        base_head,
        merge_base,
        pr_files,
        changes,
        conflicts,
    })
}

/// Merges an open pull request into its target branch (see the module docs).
pub async fn merge(
    state: &AppState,
    ctx: &RepoCtx,
    p: &Principal,
    num: i32,
    text: Option<&str>,
) -> ApiResult<String> {
    access::require(ctx.access, Access::Write)?;
    let text = text.map(str::trim).filter(|t| !t.is_empty());
    if let Some(t) = text {
        check_comment(t, "comment")?;
    }
    let d = get(state, ctx, num).await?;
    if !d.is_pull_request {
        return Err(ApiError::InvalidRequest(format!(
            "#{num} is a discussion, not a pull request"
        )));
    }
    match d.status.as_str() {
        "open" => {}
        "draft" => {
            return Err(ApiError::Conflict(format!(
                "pull request #{num} is a draft; set its status to open first"
            )))
        }
        s => return Err(ApiError::Conflict(format!("pull request #{num} is {s}"))),
    }
    let plan = plan(state, ctx, &d).await?;
    if plan.changes.is_empty() {
        return Err(ApiError::Conflict(format!(
            "pull request #{num} changes nothing; nothing to merge"
        )));
    }
    if !plan.conflicts.is_empty() {
        return Err(ApiError::Conflict(format!(
            "pull request #{num} conflicts with {}: the branch changed {} since; update the pull request",
            d.target_branch.as_deref().unwrap_or_default(),
            plan.conflicts.join(", ")
        )));
    }
    let mut ops = Vec::with_capacity(plan.changes.len());
    for path in &plan.changes {
        let rp = RepoPath::parse(path)
            .map_err(|_| ApiError::internal(anyhow::anyhow!("stored path {path:?} is invalid")))?;
        let Some(e) = plan.pr_files.get(path) else {
            ops.push(Op::Delete(rp));
            continue;
        };
        let blob = e
            .blob
            .clone()
            .ok_or_else(|| ApiError::internal(anyhow::anyhow!("{path} has no blob")))?;
        let content = if blob.is_lfs {
            AddContent::Lfs {
                sha256: blob.sha256,
                size: Some(blob.size as u64),
            }
        } else {
            let bytes = if matches!(
                path.as_str(),
                "README.md" | "config.json" | ".gitattributes"
            ) {
                Some(
                    state
                        .storage
                        .read_range(&Sha256::parse(&blob.sha256)?, 0..blob.size as u64)
                        .await?,
                )
            } else {
                None
            };
            AddContent::Stored {
                sha256: blob.sha256,
                size: blob.size as u64,
                git_oid: e.oid.clone(),
                bytes,
            }
        };
        ops.push(Op::Add { path: rp, content });
    }
    let target = d.target_branch.clone().unwrap_or_default();
    let done = commit::commit(
        state,
        &ctx.repo,
        &format!("refs/heads/{target}"),
        p,
        CommitInput {
            summary: format!("Merge pull request #{num}: {}", d.title),
            description: text.unwrap_or_default().to_string(),
            parent: Some(plan.base_head.clone()),
            ops,
            idempotency_key: None,
            merge_parent: Some(plan.pr_head.clone()),
        },
    )
    .await?;
    let mut tx = state.db.begin().await?;
    if let Some(t) = text {
        db::discussions::add_event(
            &mut tx,
            d.id,
            "comment",
            p.user_id,
            &comment_data(t, p, None),
        )
        .await?;
    }
    db::discussions::set_status(&mut tx, d.id, "merged", Some(&done.oid)).await?;
    db::discussions::add_event(
        &mut tx,
        d.id,
        "status-change",
        p.user_id,
        &json!({"status": "merged"}),
    )
    .await?;
    webhook(state, &mut tx, ctx, num, "update", None).await?;
    tx.commit().await?;
    Ok(done.oid)
}

/// A unified diff of a pull request's text files against its base; binary,
/// LFS and large files as one "Binary files differ" line, as git prints them.
pub async fn diff(state: &AppState, plan: &MergePlan) -> ApiResult<String> {
    let mut out = String::new();
    for path in &plan.changes {
        let (a, b) = (plan.merge_base.get(path), plan.pr_files.get(path));
        let (old_name, new_name) = (
            if a.is_some() {
                format!("a/{path}")
            } else {
                "/dev/null".into()
            },
            if b.is_some() {
                format!("b/{path}")
            } else {
                "/dev/null".into()
            },
        );
        out.push_str(&format!("diff --git a/{path} b/{path}\n"));
        match (diff_text(state, a).await?, diff_text(state, b).await?) {
            (Some(x), Some(y)) => {
                let d = similar::TextDiff::from_lines(&x, &y);
                out.push_str(
                    &d.unified_diff()
                        .context_radius(3)
                        .header(&old_name, &new_name)
                        .to_string(),
                );
            }
            _ => out.push_str(&format!("Binary files {old_name} and {new_name} differ\n")),
        }
    }
    Ok(out)
}

/// A file's text for a diff: "" when absent, None when binary, LFS or large.
async fn diff_text(state: &AppState, e: Option<&Entry>) -> ApiResult<Option<String>> {
    let Some(blob) = e.and_then(|e| e.blob.as_ref()) else {
        return Ok(Some(String::new()));
    };
    if blob.is_lfs || blob.size > MAX_DIFF_FILE {
        return Ok(None);
    }
    let bytes = state
        .storage
        .read_range(&Sha256::parse(&blob.sha256)?, 0..blob.size as u64)
        .await?;
    if bytes.iter().take(8000).any(|&c| c == 0) {
        return Ok(None);
    }
    Ok(String::from_utf8(bytes.to_vec()).ok())
}
