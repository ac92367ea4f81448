//! Endpoint pages: the list with live status (`/inference`, `/inference/{ns}`;
//! `endpoints.js` polls `GET /api/v1/endpoints/{ns}`), the deploy form
//! (`/inference/new?repo=&task=`, posting to `POST /api/v1/endpoints/{ns}`), and an
//! endpoint's page (`/inference/{ns}/{name}`): status history, a playground
//! calling the gateway (a streaming chat for `text-generation`, `chat.js`),
//! client snippets and usage charts (inline SVG from the same data as
//! `GET /api/v1/usage`, prompt and completion tokens apart). Members of the
//! namespace only.

use super::charts;
use super::upload::writable_namespaces;
use super::{page, text, to_login, viewer, Layout, PageResult};
use crate::auth::access::{Action, Standing};
use crate::db;
use crate::db::endpoints::EndpointRow;
use crate::db::namespaces::{Namespace, Role};
use crate::endpoints::SUPPORTED_TASKS;
use crate::error::ApiError;
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;

/// An endpoint row of a list.
pub struct Item {
    pub namespace: String,
    pub name: String,
    pub repository: String,
    pub task: String,
    pub precision: String,
    pub status: String,
    pub replicas: String,
    pub url: String,
}

fn item(public_url: &str, e: &EndpointRow) -> Item {
    Item {
        url: format!("{public_url}/endpoints/{}/{}", e.namespace, e.name),
        namespace: e.namespace.clone(),
        name: e.name.clone(),
        repository: e.repository.clone(),
        task: e.task.clone(),
        precision: e.precision.clone(),
        status: e.status.clone(),
        replicas: format!("{} target", e.target_replicas),
    }
}

#[derive(Template)]
#[template(path = "endpoints.html")]
pub struct ListPage {
    pub l: Layout,
    pub namespaces: Vec<String>,
    pub items: Vec<Item>,
    pub only: String,
}

/// The namespaces whose endpoints the viewer sees: `only` (checked exactly as
/// `GET /api/v1/endpoints/{ns}` checks it), else their own and their orgs'
/// where `Action::ReadEndpoints` allows it (a token restricted to other
/// namespaces, or without the read or inference scope, sees none there).
pub(super) async fn member_namespaces(
    state: &AppState,
    auth: &crate::auth::Auth,
    p: &crate::auth::Principal,
    only: Option<&str>,
) -> PageResult<Vec<Namespace>> {
    let mut out = Vec::new();
    if let Some(name) = only {
        let (ns, _) =
            crate::routes::inference::member_namespace(state, auth, name, Action::ReadEndpoints)
                .await?;
        out.push(ns);
        return Ok(out);
    }
    let mut mine = Vec::new();
    if let Some(me) = db::namespaces::by_id(&state.db, p.user_id).await? {
        mine.push((me, Role::Admin));
    }
    mine.extend(db::namespaces::user_orgs(&state.db, p.user_id).await?);
    for (ns, role) in mine {
        let standing = Standing::namespace(&ns.name, Some(role), "namespace");
        if standing.allows(Some(p), Action::ReadEndpoints) {
            out.push(ns);
        }
    }
    Ok(out)
}

/// `GET /inference` and `GET /inference/{ns}`.
pub async fn list(state: web::Data<AppState>, req: HttpRequest) -> PageResult<HttpResponse> {
    let (auth, _) = viewer(&req).await?;
    let Some(p) = auth.principal() else {
        return Ok(to_login(&req));
    };
    let only = req.match_info().get("ns").map(str::to_string);
    let nss = member_namespaces(&state, &auth, p, only.as_deref()).await?;
    let mut items = Vec::new();
    for ns in &nss {
        for e in db::endpoints::list(&state.db, ns.id, None, 200).await? {
            items.push(item(&state.public_url, &e));
        }
    }
    page(&ListPage {
        l: Layout::new(&state, &req, Some(p)),
        namespaces: nss.into_iter().map(|n| n.name).collect(),
        items,
        only: only.unwrap_or_default(),
    })
}

#[derive(Template)]
#[template(path = "deploy.html")]
pub struct DeployPage {
    pub l: Layout,
    pub owners: Vec<String>,
    pub repository: String,
    pub name: String,
    pub tasks: Vec<(&'static str, bool)>,
    pub branches: Vec<String>,
}

/// `GET /inference/new?repo=ns/name`.
pub async fn deploy(state: web::Data<AppState>, req: HttpRequest) -> PageResult<HttpResponse> {
    let (auth, _) = viewer(&req).await?;
    let Some(p) = auth.principal() else {
        return Ok(to_login(&req));
    };
    let arg = |name: &str| {
        url::form_urlencoded::parse(req.query_string().as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    let repository = arg("repo").unwrap_or_default();
    // A task the link asks for (a fine-tuning job's deploy link) wins over the guess.
    let asked = arg("task").filter(|t| SUPPORTED_TASKS.contains(&t.as_str()));
    let mut task = None;
    let mut branches = vec![crate::registry::DEFAULT_BRANCH.to_string()];
    let mut name = String::new();
    if let Ok(id) = crate::domain::RepoId::parse(&repository) {
        let ctx = crate::registry::load_repo(
            &state,
            &auth,
            crate::domain::RepoType::Model,
            &id,
            crate::auth::access::Access::Read,
        )
        .await?;
        let archs: Vec<String> = Vec::new();
        task = asked.clone().or_else(|| {
            crate::endpoints::choose_task(None, ctx.repo.pipeline_tag.as_deref(), &archs).ok()
        });
        branches = db::refs::list(&state.db, ctx.repo.id)
            .await?
            .into_iter()
            .filter_map(|r| r.name.strip_prefix("refs/heads/").map(str::to_string))
            .collect();
        name = id.name.as_str().to_string();
    }
    page(&DeployPage {
        l: Layout::new(&state, &req, Some(p)),
        owners: writable_namespaces(&state, p)
            .await?
            .into_iter()
            .map(|(n, _)| n)
            .collect(),
        tasks: SUPPORTED_TASKS
            .iter()
            .map(|t| (*t, task.as_deref() == Some(*t)))
            .collect(),
        repository,
        name,
        branches,
    })
}

/// A status change.
pub struct Event {
    pub when: String,
    pub when_iso: String,
    pub status: String,
    pub message: String,
}

#[derive(Template)]
#[template(path = "endpoint.html")]
pub struct EndpointPage {
    pub l: Layout,
    pub e: Item,
    pub revision: String,
    pub commit: String,
    pub scaling: String,
    pub access: String,
    pub message: String,
    pub replicas: Vec<(String, String)>,
    pub events: Vec<Event>,
    pub snippets: Vec<super::snippets::Snippet>,
    pub requests_chart: String,
    pub tokens_chart: String,
    pub latency_chart: String,
    /// Prompt tokens, completion tokens and their sum over the charted days.
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    pub has_usage: bool,
    /// A generation endpoint: the playground is a chat.
    pub is_generation: bool,
    pub can_write: bool,
}

/// Days of usage charted.
pub const CHART_DAYS: i64 = 30;

/// `GET /inference/{ns}/{name}`.
pub async fn endpoint(state: web::Data<AppState>, req: HttpRequest) -> PageResult<HttpResponse> {
    let (auth, _) = viewer(&req).await?;
    let Some(p) = auth.principal() else {
        return Ok(to_login(&req));
    };
    let ns_name = req.match_info().get("ns").unwrap_or_default().to_string();
    let name = req.match_info().get("name").unwrap_or_default().to_string();
    let ns = member_namespaces(&state, &auth, p, Some(&ns_name))
        .await?
        .remove(0);
    let standing = Standing::load_namespace(&state.db, Some(p), &ns, "namespace").await?;
    let e = db::endpoints::get(&state.db, &ns.name, &name)
        .await?
        .ok_or(ApiError::NotFound("endpoint"))?;
    let replicas = db::endpoints::replicas_of(&state.db, e.id).await?;
    // The 20 newest, as in the API's JSON, from which `endpoints.js` redraws
    // the history while the page is open.
    let events = db::endpoints::events(&state.db, e.id, 20).await?;
    let now = chrono::Utc::now();
    let from = now - chrono::Duration::days(CHART_DAYS - 1);
    let from_day = from.date_naive();
    let usage = db::endpoints::usage(
        &state.db,
        ns.id,
        from_day.and_hms_opt(0, 0, 0).expect("midnight").and_utc(),
        now + chrono::Duration::seconds(1),
    )
    .await?;
    let usage: Vec<_> = usage.into_iter().filter(|u| u.endpoint == e.name).collect();
    let has_usage = !usage.is_empty();
    let drawn = charts::usage_charts(&usage, from_day, CHART_DAYS);
    let it = item(&state.public_url, &e);
    page(&EndpointPage {
        snippets: super::snippets::for_endpoint(&it.url, &e.task, &e.repository),
        revision: e.revision.clone(),
        commit: text::short(&e.commit_oid),
        scaling: format!(
            "{}–{} replicas{}",
            e.min_replicas,
            e.max_replicas,
            e.scale_to_zero_after_s
                .filter(|_| e.min_replicas == 0)
                .map(|s| format!(", scales to zero after {s} s idle"))
                .unwrap_or_default()
        ),
        access: e.access.clone(),
        message: e.message.clone().unwrap_or_default(),
        replicas: replicas
            .iter()
            .map(|r| (r.status.clone(), r.message.clone().unwrap_or_default()))
            .collect(),
        events: events
            .into_iter()
            .map(|ev| Event {
                when: text::ago(ev.at),
                when_iso: text::iso(ev.at),
                status: ev.status,
                message: ev.message.unwrap_or_default(),
            })
            .collect(),
        l: Layout::new(&state, &req, Some(p)),
        e: it,
        is_generation: e
            .task
            .parse::<hub_types::Task>()
            .is_ok_and(hub_types::Task::is_generation),
        requests_chart: drawn.requests,
        tokens_chart: drawn.tokens,
        latency_chart: drawn.latency,
        prompt_tokens: drawn.prompt_tokens,
        completion_tokens: drawn.completion_tokens,
        total_tokens: drawn.prompt_tokens + drawn.completion_tokens,
        has_usage,
        can_write: standing.allows(Some(p), Action::ManageEndpoints),
    })
}
