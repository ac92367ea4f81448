//! The repo page (`/{ns}/{name}`, `/datasets/{ns}/{name}`, `/{name}`): the
//! model card rendered from README.md with its front matter as badges, facts,
//! "use this model" snippets; and the branches and tags page.

use super::repo_view::{self, RepoHead};
use super::snippets::{self, Snippet};
use super::{markdown, page, text, Layout, PageResult};
use crate::auth::access::Access;
use crate::db;
use crate::registry::files;
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;

#[derive(Template)]
#[template(path = "repo/card.html")]
pub struct CardPage {
    pub l: Layout,
    pub h: RepoHead,
    pub card_html: String,
    pub has_readme: bool,
    pub license: String,
    pub task: String,
    pub library: String,
    pub tags: Vec<String>,
    pub params: String,
    pub files: usize,
    pub total_size: String,
    pub updated: String,
    pub snippets: Vec<Snippet>,
    pub can_deploy: bool,
    /// The dataset viewer (datasets only).
    pub viewer: Option<super::viewer::Section>,
}

/// `GET /{ns}/{name}`.
pub async fn card(state: web::Data<AppState>, req: HttpRequest) -> PageResult<HttpResponse> {
    let p = repo_view::load(&state, &req, Access::Read).await?;
    let rev = crate::registry::DEFAULT_BRANCH;
    let resolved = repo_view::resolve(&state, &p, rev).await?;
    let c = &resolved.commit;
    let h = repo_view::head(&state, &p, "card", rev, c).await?;
    let all = files::all_files(&state, &c.tree_oid).await?;
    let readme = match all.iter().find(|e| e.path == "README.md") {
        Some(e) => match &e.blob {
            Some(b) => files::read_small(&state, &b.sha256, b.size).await?,
            None => None,
        },
        None => None,
    };
    let has_readme = readme.is_some();
    // Rendering a README of up to 4 MiB is heavy work: off the async workers.
    let card_html = match readme {
        Some(b) => {
            let (url, rev) = (h.url.clone(), h.rev_seg.clone());
            let tenant = crate::heavy::Tenant::of(&p.auth, &req);
            state
                .tenancy
                .heavy
                .run(tenant, move || {
                    let md = String::from_utf8_lossy(&b);
                    let (_, body) = crate::card::split_front_matter(&md);
                    markdown::render(
                        body,
                        &markdown::Base {
                            repo_url: &url,
                            rev: &rev,
                        },
                    )
                })
                .await?
        }
        None => String::new(),
    };
    let total: i64 = all
        .iter()
        .filter_map(|e| e.blob.as_ref())
        .map(|b| b.size)
        .sum();
    let sample = ["config.json", "README.md"]
        .into_iter()
        .find(|f| all.iter().any(|e| e.path == *f))
        .or_else(|| all.first().map(|e| e.path.as_str()))
        .unwrap_or("README.md")
        .to_string();
    let r = &p.ctx.repo;
    let snippets = snippets::for_repo(
        &state.public_url,
        &h.id,
        h.is_model,
        c.pipeline_tag.as_deref(),
        r.private || r.gated.is_some(),
        &sample,
    );
    let can_deploy = h.is_model && p.auth.principal().is_some();
    let viewer = if h.is_model {
        None
    } else {
        Some(super::viewer::section(&state, &p.auth, &p.ctx, &c.oid, &h.url, &req).await?)
    };
    page(&CardPage {
        license: c.license.clone().unwrap_or_default(),
        task: c.pipeline_tag.clone().unwrap_or_default(),
        library: c.library_name.clone().unwrap_or_default(),
        tags: c
            .tags
            .iter()
            .filter(|t| {
                !t.starts_with("license:")
                    && Some(t.as_str()) != c.pipeline_tag.as_deref()
                    && Some(t.as_str()) != c.library_name.as_deref()
            })
            .cloned()
            .collect(),
        params: c
            .safetensors
            .as_ref()
            .and_then(|s| s.0.get("total").and_then(|t| t.as_i64()))
            .map(text::params)
            .unwrap_or_default(),
        files: all.len(),
        total_size: text::size(total),
        updated: text::ago(c.time()),
        l: p.layout,
        h,
        card_html,
        has_readme,
        snippets,
        can_deploy,
        viewer,
    })
}

/// A branch or tag row.
pub struct RefItem {
    pub name: String,
    pub seg: String,
    pub commit: String,
    pub short: String,
    pub updated: String,
}

#[derive(Template)]
#[template(path = "repo/refs.html")]
pub struct RefsPage {
    pub l: Layout,
    pub h: RepoHead,
    pub branch_items: Vec<RefItem>,
    pub tag_items: Vec<RefItem>,
}

/// `GET /{ns}/{name}/refs`: branches and tags.
pub async fn refs(state: web::Data<AppState>, req: HttpRequest) -> PageResult<HttpResponse> {
    let p = repo_view::load(&state, &req, Access::Read).await?;
    let rev = crate::registry::DEFAULT_BRANCH;
    let resolved = repo_view::resolve(&state, &p, rev).await?;
    let h = repo_view::head(&state, &p, "refs", rev, &resolved.commit).await?;
    let mut branch_items = Vec::new();
    let mut tag_items = Vec::new();
    for rf in db::refs::list(&state.db, p.ctx.repo.id).await? {
        let (name, list) = if let Some(b) = rf.name.strip_prefix("refs/heads/") {
            (b, &mut branch_items)
        } else if let Some(t) = rf.name.strip_prefix("refs/tags/") {
            (t, &mut tag_items)
        } else {
            continue;
        };
        list.push(RefItem {
            name: name.to_string(),
            seg: text::segment(name),
            short: text::short(&rf.commit_oid),
            commit: rf.commit_oid,
            updated: text::ago(rf.updated_at),
        });
    }
    page(&RefsPage {
        l: p.layout,
        h,
        branch_items,
        tag_items,
    })
}
