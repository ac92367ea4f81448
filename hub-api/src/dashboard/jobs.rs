//! Fine-tuning job pages: the list of a namespace's jobs (`/jobs`, `/jobs/{ns}`),
//! the form that queues one (`/jobs/new`, posting to `POST /api/v1/jobs/{ns}`),
//! and a job's page (`/jobs/{ns}/{id}`): state and progress (`jobs.js` polls
//! `GET /api/v1/jobs/{ns}/{id}` and its logs while it runs), metrics, the
//! hyperparameters, log lines, a link to the output repo's commit, the cancel
//! button for the write role, and once it succeeded a link to the deploy form
//! with the output repo and the endpoint task. Members of the namespace only,
//! decided like the jobs API (`Action::ReadEndpoints`); a base model or
//! dataset the viewer may not read is not named (`crate::jobs::Shown`), as in
//! the API.

use super::endpoints::member_namespaces;
use super::upload::writable_namespaces;
use super::{page, text, to_login, viewer, Layout, PageResult};
use crate::auth::access::{Action, Standing};
use crate::db;
use crate::error::ApiError;
use crate::jobs::{Shown, Viewer};
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use hub_types::jobs::JobTask;
use serde_json::Value;

/// Log lines a job's page shows (the first ones; `jobs.js` appends newer ones).
const LOG_LINES: i64 = 1000;

/// A job row of a list, and the head of a job's page.
pub struct Item {
    pub id: String,
    pub short_id: String,
    pub namespace: String,
    pub task: String,
    pub state: String,
    /// Empty (with the revision) when the viewer may not see it.
    pub base_model: String,
    pub base_revision: String,
    /// Empty (with the revision) when the viewer may not see it.
    pub dataset: String,
    pub dataset_revision: String,
    pub output_repo: String,
    pub output_commit: String,
    pub output_commit_short: String,
    pub step: i64,
    pub total_steps: i64,
    /// Whole percent of the steps done.
    pub percent: i64,
    pub cpu_seconds: String,
    pub created: String,
    pub created_iso: String,
    pub error: String,
    /// Queued or running: it can still be cancelled, and the page polls.
    pub active: bool,
}

fn item(j: &db::jobs::JobRow, shown: &Shown) -> Item {
    let or_hidden = |ok: bool, v: String| if ok { v } else { String::new() };
    Item {
        id: j.id.to_string(),
        short_id: j.id.to_string()[..8].to_string(),
        namespace: j.namespace.clone(),
        task: j.task.clone(),
        state: j.state.clone(),
        base_model: or_hidden(shown.base, j.base_model.clone()),
        base_revision: or_hidden(shown.base, text::short(&j.base_revision)),
        dataset: or_hidden(shown.dataset, j.dataset.clone()),
        dataset_revision: or_hidden(shown.dataset, text::short(&j.dataset_revision)),
        output_repo: j.output_repo.clone(),
        output_commit: j.output_commit.clone().unwrap_or_default(),
        output_commit_short: j
            .output_commit
            .as_deref()
            .map(text::short)
            .unwrap_or_default(),
        step: j.step,
        total_steps: j.total_steps,
        percent: (j.step * 100)
            .checked_div(j.total_steps)
            .unwrap_or(0)
            .clamp(0, 100),
        cpu_seconds: format!("{:.1}", j.cpu_seconds),
        created: text::ago(j.created_at),
        created_iso: text::iso(j.created_at),
        error: shown.redact(j.error.as_deref().unwrap_or_default()),
        active: matches!(j.state.as_str(), "queued" | "running"),
    }
}

#[derive(Template)]
#[template(path = "jobs.html")]
pub struct ListPage {
    pub l: Layout,
    pub items: Vec<Item>,
    pub only: String,
}

/// `GET /jobs` and `GET /jobs/{ns}`: the newest 200 jobs of each namespace.
pub async fn list(state: web::Data<AppState>, req: HttpRequest) -> PageResult<HttpResponse> {
    let (auth, _) = viewer(&req).await?;
    let Some(p) = auth.principal() else {
        return Ok(to_login(&req));
    };
    let only = req.match_info().get("ns").map(str::to_string);
    let nss = member_namespaces(&state, &auth, p, only.as_deref()).await?;
    let mut viewer = Viewer::new(&state, Some(p));
    let mut items = Vec::new();
    for ns in &nss {
        for j in db::jobs::list(&state.db, ns.id, None, 200).await? {
            items.push(item(&j, &viewer.shown(&j).await?));
        }
    }
    page(&ListPage {
        l: Layout::new(&state, &req, Some(p)),
        items,
        only: only.unwrap_or_default(),
    })
}

#[derive(Template)]
#[template(path = "new_job.html")]
pub struct NewPage {
    pub l: Layout,
    pub owners: Vec<(String, bool)>,
    pub base_model: String,
    pub dataset: String,
    pub tasks: Vec<&'static str>,
}

/// `GET /jobs/new?ns=&base_model=&dataset=`: the form; the API decides.
pub async fn new_job(state: web::Data<AppState>, req: HttpRequest) -> PageResult<HttpResponse> {
    let (auth, _) = viewer(&req).await?;
    let Some(p) = auth.principal() else {
        return Ok(to_login(&req));
    };
    let q: Vec<(String, String)> = url::form_urlencoded::parse(req.query_string().as_bytes())
        .into_owned()
        .collect();
    let arg = |k: &str| {
        q.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.chars().take(200).collect::<String>())
            .unwrap_or_default()
    };
    let ns = arg("ns");
    page(&NewPage {
        l: Layout::new(&state, &req, Some(p)),
        owners: writable_namespaces(&state, p)
            .await?
            .into_iter()
            .map(|(n, _)| {
                let selected = n == ns;
                (n, selected)
            })
            .collect(),
        base_model: arg("base_model"),
        dataset: arg("dataset"),
        tasks: vec![
            JobTask::TextClassification.as_str(),
            JobTask::SentenceEmbedding.as_str(),
            JobTask::CausalLmLora.as_str(),
        ],
    })
}

/// A log line as shown.
pub struct Line {
    pub seq: i64,
    pub when_iso: String,
    pub line: String,
}

#[derive(Template)]
#[template(path = "job.html")]
pub struct JobPage {
    pub l: Layout,
    pub j: Item,
    pub train_files: String,
    pub test_files: String,
    pub hyperparameters: Vec<(String, String)>,
    pub metrics: Vec<(String, String)>,
    pub logs: Vec<Line>,
    pub last_seq: i64,
    /// The deploy form's URL once the job succeeded (empty before).
    pub deploy_url: String,
    pub can_write: bool,
}

/// An object's members as sorted (name, value) text, numbers rounded.
fn rows(v: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = v
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            let shown = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) if n.is_f64() => {
                    let f = n.as_f64().unwrap_or_default();
                    if f != 0.0 && f.abs() < 1e-3 {
                        format!("{f:e}")
                    } else {
                        format!("{:.4}", f)
                            .trim_end_matches('0')
                            .trim_end_matches('.')
                            .to_string()
                    }
                }
                other => other.to_string(),
            };
            (k.clone(), shown)
        })
        .collect();
    out.sort();
    out
}

/// The column hyperparameters a job of `task` does not read.
fn other_task_columns(task: &str) -> &'static [&'static str] {
    match JobTask::parse(task) {
        Ok(JobTask::SentenceEmbedding) => &["text_column", "label_column"],
        Ok(JobTask::TextClassification) => &["anchor_column", "positive_column"],
        Ok(JobTask::CausalLmLora) => &["label_column", "anchor_column", "positive_column"],
        Err(_) => &[],
    }
}

/// `GET /jobs/{ns}/{id}`.
pub async fn job(state: web::Data<AppState>, req: HttpRequest) -> PageResult<HttpResponse> {
    let (auth, _) = viewer(&req).await?;
    let Some(p) = auth.principal() else {
        return Ok(to_login(&req));
    };
    let ns_name = req.match_info().get("ns").unwrap_or_default().to_string();
    let id = req.match_info().get("id").unwrap_or_default();
    let ns = member_namespaces(&state, &auth, p, Some(&ns_name))
        .await?
        .remove(0);
    let id = uuid::Uuid::parse_str(id).map_err(|_| ApiError::NotFound("job"))?;
    let j = db::jobs::by_id(&state.db, id)
        .await?
        .filter(|j| j.namespace_id == ns.id)
        .ok_or(ApiError::NotFound("job"))?;
    let standing = Standing::load_namespace(&state.db, Some(p), &ns, "namespace").await?;
    let shown = Viewer::new(&state, Some(p)).shown(&j).await?;
    let logs = db::jobs::logs(&state.db, j.id, 0, LOG_LINES).await?;
    let deploy_url = match (&j.output_commit, j.state.as_str()) {
        (Some(_), "succeeded") => {
            let task = JobTask::parse(&j.task)
                .map(|t| t.endpoint_task().as_str())
                .unwrap_or_default();
            format!(
                "/inference/new?repo={}&task={}",
                text::query_escape(&j.output_repo),
                text::query_escape(task)
            )
        }
        _ => String::new(),
    };
    page(&JobPage {
        l: Layout::new(&state, &req, Some(p)),
        train_files: if shown.dataset {
            j.train_files.join(", ")
        } else {
            String::new()
        },
        test_files: if shown.dataset {
            j.test_files.join(", ")
        } else {
            String::new()
        },
        hyperparameters: rows(&j.hyperparameters)
            .into_iter()
            .filter(|(k, _)| !other_task_columns(&j.task).contains(&k.as_str()))
            .collect(),
        metrics: rows(&j.metrics),
        last_seq: logs.last().map(|l| l.0).unwrap_or(0),
        logs: logs
            .into_iter()
            .map(|(seq, at, line)| Line {
                seq,
                when_iso: text::iso(at),
                line: shown.redact(&line),
            })
            .collect(),
        deploy_url,
        can_write: standing.allows(Some(p), Action::ManageEndpoints),
        j: item(&j, &shown),
    })
}
