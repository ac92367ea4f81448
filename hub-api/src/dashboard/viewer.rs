//! The dataset viewer on a dataset's page (`repo::card`): a typed, paged
//! table of rows per config and split, from `crate::viewer`'s Parquet
//! files; "converting" while the job runs; the "cannot show" reason when
//! the files cannot be read. Rows are file contents: they are shown only
//! after the download decision (`gating::authorize`), so a gated dataset
//! shows the table only to those it lets through.

use crate::auth::Auth;
use crate::registry::RepoCtx;
use crate::state::AppState;
use crate::viewer::jobs::{self, Status};
use crate::viewer::read;
use actix_web::HttpRequest;
use serde_json::Value;

/// Rows per page of the dashboard's table.
pub const PAGE_ROWS: u64 = 25;

/// A config/split choice.
pub struct SplitChoice {
    pub label: String,
    pub href: String,
    pub selected: bool,
    pub num_rows: u64,
}

/// A column: its name and type (`int64`, `string`, `list<string>`...).
pub struct Column {
    pub name: String,
    pub ty: String,
}

/// A row of the table: its index and its cells as text.
pub struct RowView {
    pub idx: u64,
    pub cells: Vec<String>,
}

/// What the viewer section shows.
pub struct Section {
    /// `pending`, `error`, `gated` or `ready`.
    pub state: &'static str,
    pub reason: String,
    pub choices: Vec<SplitChoice>,
    pub columns: Vec<Column>,
    pub rows: Vec<RowView>,
    pub from: u64,
    pub to: u64,
    pub total: u64,
    pub prev: String,
    pub next: String,
}

/// A type as a short label: the dtype of a `Value`, `list<...>` of a
/// `Sequence`, `struct` of a dict.
fn type_label(t: &Value) -> String {
    match t.get("_type").and_then(|x| x.as_str()) {
        Some("Value") => t["dtype"].as_str().unwrap_or("?").to_string(),
        Some("Sequence") => format!("list<{}>", type_label(&t["feature"])),
        Some(other) => other.to_string(),
        None => "struct".to_string(),
    }
}

fn cell_text(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::String(s) => {
            if s.chars().count() > 300 {
                format!("{}…", s.chars().take(300).collect::<String>())
            } else {
                s.clone()
            }
        }
        other => {
            let s = other.to_string();
            if s.chars().count() > 300 {
                format!("{}…", s.chars().take(300).collect::<String>())
            } else {
                s
            }
        }
    }
}

fn href(url: &str, config: &str, split: &str, offset: u64) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    q.append_pair("config", config).append_pair("split", split);
    if offset > 0 {
        q.append_pair("offset", &offset.to_string());
    }
    format!("{url}?{}#viewer", q.finish())
}

/// The section of a dataset page (`url`: the page's own address).
pub async fn section(
    state: &AppState,
    auth: &Auth,
    ctx: &RepoCtx,
    commit: &str,
    url: &str,
    req: &HttpRequest,
) -> crate::error::ApiResult<Section> {
    let mut s = Section {
        state: "pending",
        reason: String::new(),
        choices: vec![],
        columns: vec![],
        rows: vec![],
        from: 0,
        to: 0,
        total: 0,
        prev: String::new(),
        next: String::new(),
    };
    let dl = match crate::gating::authorize(state, auth, ctx.clone()).await {
        Ok(dl) => dl,
        Err(crate::error::ApiError::GatedRepo(_)) => {
            s.state = "gated";
            return Ok(s);
        }
        Err(e) => return Err(e),
    };
    let manifest = match jobs::status(state, ctx.repo.id, commit).await? {
        Status::Pending => return Ok(s),
        Status::Failed(why) => {
            s.state = "error";
            s.reason = why;
            return Ok(s);
        }
        Status::Done(m) => m,
    };
    let q: Vec<(String, String)> = url::form_urlencoded::parse(req.query_string().as_bytes())
        .into_owned()
        .collect();
    let get = |k: &str| q.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str());
    let first = manifest
        .configs
        .iter()
        .find_map(|c| c.splits.first().map(|sp| (c.name.clone(), sp.name.clone())));
    let Some((c0, s0)) = first else {
        s.state = "error";
        s.reason = "no split".into();
        return Ok(s);
    };
    let (config, split) = match (get("config"), get("split")) {
        (Some(c), Some(sp)) if manifest.split(c, sp).is_some() => (c.to_string(), sp.to_string()),
        _ => (c0, s0),
    };
    let sp = manifest
        .split(&config, &split)
        .expect("chosen from the manifest");
    for c in &manifest.configs {
        for x in &c.splits {
            s.choices.push(SplitChoice {
                label: if manifest.configs.len() > 1 {
                    format!("{} / {}", c.name, x.name)
                } else {
                    x.name.clone()
                },
                href: href(url, &c.name, &x.name, 0),
                selected: c.name == config && x.name == split,
                num_rows: x.num_rows,
            });
        }
    }
    s.columns = sp
        .features
        .iter()
        .map(|f| Column {
            name: f.name.clone(),
            ty: type_label(&f.ty),
        })
        .collect();
    let offset = get("offset")
        .and_then(|o| o.parse::<u64>().ok())
        .unwrap_or(0)
        .min(sp.num_rows.saturating_sub(1));
    let offset = offset - offset % PAGE_ROWS;
    let batches = read::page(&dl, &state.storage, sp, offset, PAGE_ROWS as usize).await?;
    let mut idx = offset;
    for b in &batches {
        for r in 0..b.num_rows() {
            let (row, _) = read::row_json(b, r);
            let cells = sp
                .features
                .iter()
                .map(|f| cell_text(row.get(&f.name).unwrap_or(&Value::Null)))
                .collect();
            s.rows.push(RowView { idx, cells });
            idx += 1;
        }
    }
    s.state = "ready";
    s.total = sp.num_rows;
    s.from = if s.rows.is_empty() { 0 } else { offset + 1 };
    s.to = idx;
    if offset > 0 {
        s.prev = href(url, &config, &split, offset.saturating_sub(PAGE_ROWS));
    }
    if idx < sp.num_rows {
        s.next = href(url, &config, &split, idx);
    }
    Ok(s)
}
