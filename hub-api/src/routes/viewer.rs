//! The dataset viewer's API (`crate::viewer`), in the shape of the Hugging
//! Face dataset viewer's (<https://huggingface.co/docs/dataset-viewer>):
//! `/api/datasets-server/{is-valid,splits,info,first-rows,rows,search,
//! filter,parquet,size}?dataset=ns/name[&config&split&...]`, and the
//! Parquet files `/api/datasets/{ns}/{name}/parquet/{config}/{split}/{n}.parquet`.
//!
//! Every route decides access as a file download does
//! (`gating::load_repo_for_download`: a private dataset is 404 to whoever
//! cannot read it, a gated one 403 until access is granted), since rows are
//! file contents. Optional `revision` (a branch, tag or commit; default
//! `main`): a revision not converted yet is queued and answered 500
//! `ResponseNotReady` (`Retry-After: 1`), as the HF viewer does while it
//! works; one the viewer cannot read is 501 `DatasetGenerationError` with
//! the reason (file, line, why).

use crate::auth::Auth;
use crate::domain::{RepoId, RepoType};
use crate::error::{clip, ApiError, ApiResult, QueryError};
use crate::gating::{self, Download};
use crate::heavy::Tenant;
use crate::state::AppState;
use crate::viewer::filter::{self, Expr};
use crate::viewer::jobs::{self, Status};
use crate::viewer::read::{self, row_json};
use crate::viewer::{ConfigManifest, Manifest, SplitManifest};
use actix_web::{web, HttpRequest, HttpResponse};
use arrow_array::Array;
use arrow_schema::DataType;
use serde_json::{json, Value};
use std::collections::HashMap;

/// Most rows of one page (`length`), as on the HF viewer.
pub const MAX_LENGTH: usize = 100;
/// Rows `/search` and `/filter` look at, at most; past it the answer is
/// `partial` (counts cover the rows looked at).
pub const SCAN_MAX: u64 = 1_000_000;
/// Matching rows `orderby` sorts, at most.
pub const SORT_MAX: usize = 100_000;
/// Longest `query` of `/search`.
pub const MAX_QUERY: usize = 1000;

fn param_err(name: &'static str, reason: impl Into<String>) -> ApiError {
    QueryError::Param {
        name,
        reason: reason.into(),
    }
    .into()
}

struct Params(HashMap<String, String>);

impl Params {
    fn of(req: &HttpRequest) -> ApiResult<Self> {
        let mut m = HashMap::new();
        for (k, v) in url::form_urlencoded::parse(req.query_string().as_bytes()) {
            if m.insert(k.to_string(), v.to_string()).is_some() {
                return Err(
                    QueryError::Malformed(format!("{} is given twice", clip(&k, 40))).into(),
                );
            }
        }
        Ok(Params(m))
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }
    fn required(&self, k: &'static str) -> ApiResult<&str> {
        match self.get(k) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(param_err(k, "is required")),
        }
    }
    fn offset(&self) -> ApiResult<u64> {
        match self.get("offset") {
            None => Ok(0),
            Some(v) => v.parse::<u64>().map_err(|_| {
                param_err(
                    "offset",
                    format!("must be a whole number >= 0, not {:?}", clip(v, 40)),
                )
            }),
        }
    }
    fn length(&self) -> ApiResult<usize> {
        match self.get("length") {
            None => Ok(MAX_LENGTH),
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|l| *l <= MAX_LENGTH)
                .ok_or_else(|| {
                    param_err(
                        "length",
                        format!(
                            "must be a whole number from 0 to {MAX_LENGTH}, not {:?}",
                            clip(v, 40)
                        ),
                    )
                }),
        }
    }
}

/// A readable dataset and its converted revision.
struct Ready {
    dl: Download,
    dataset: String,
    manifest: Manifest,
}

/// Decides access (as a download), resolves the revision and finds its
/// conversion: `Ok(Err(status))` when it is pending or failed.
async fn open(state: &AppState, auth: &Auth, p: &Params) -> ApiResult<(Download, String, Status)> {
    let dataset = p.required("dataset")?.to_string();
    let id = RepoId::parse(&dataset).map_err(|e| param_err("dataset", e.to_string()))?;
    let dl = gating::load_repo_for_download(state, auth, RepoType::Dataset, &id).await?;
    let rev = p.get("revision").unwrap_or(crate::registry::DEFAULT_BRANCH);
    let resolved = crate::registry::resolve_str(state, dl.repo().id, rev).await?;
    let status = jobs::status(state, dl.repo().id, &resolved.commit.oid).await?;
    Ok((dl, dataset, status))
}

async fn ready(state: &AppState, auth: &Auth, p: &Params) -> ApiResult<Ready> {
    let (dl, dataset, status) = open(state, auth, p).await?;
    match status {
        Status::Pending => Err(ApiError::ResponseNotReady),
        Status::Failed(why) => Err(ApiError::DatasetCannotShow(why)),
        Status::Done(manifest) => Ok(Ready {
            dl,
            dataset,
            manifest,
        }),
    }
}

impl Ready {
    /// The config named `name` (404 `config` when there is none).
    fn config(&self, name: &str) -> ApiResult<&ConfigManifest> {
        self.manifest
            .configs
            .iter()
            .find(|c| c.name == name)
            .ok_or(ApiError::NotFound("config"))
    }

    fn split(&self, p: &Params) -> ApiResult<(&str, &SplitManifest)> {
        let config = p.required("config")?;
        let split = p.required("split")?;
        let c = self.config(config)?;
        let s = c
            .splits
            .iter()
            .find(|s| s.name == split)
            .ok_or(ApiError::NotFound("split"))?;
        Ok((&c.name, s))
    }
}

fn features(s: &SplitManifest) -> Value {
    Value::Array(
        s.features
            .iter()
            .enumerate()
            .map(|(i, f)| json!({"feature_idx": i, "name": f.name, "type": f.ty}))
            .collect(),
    )
}

fn row_item(idx: u64, row: Value, cut: Vec<String>) -> Value {
    json!({"row_idx": idx, "row": row, "truncated_cells": cut})
}

/// `GET /api/datasets-server/is-valid?dataset=`: which viewer features work.
pub async fn is_valid(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let p = Params::of(&req)?;
    let (_, _, status) = open(&state, &auth, &p).await?;
    let ok = matches!(status, Status::Done(_));
    Ok(HttpResponse::Ok().json(json!({
        "preview": ok, "viewer": ok, "search": ok, "filter": ok, "statistics": false
    })))
}

/// `GET /api/datasets-server/splits?dataset=[&config=]`.
pub async fn splits(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let p = Params::of(&req)?;
    let r = ready(&state, &auth, &p).await?;
    let want = p.get("config");
    let mut out = Vec::new();
    for c in &r.manifest.configs {
        if want.is_some_and(|w| w != c.name) {
            continue;
        }
        for s in &c.splits {
            out.push(json!({"dataset": r.dataset, "config": c.name, "split": s.name}));
        }
    }
    if want.is_some() && out.is_empty() {
        return Err(ApiError::NotFound("config"));
    }
    Ok(HttpResponse::Ok().json(json!({"splits": out, "pending": [], "failed": []})))
}

/// A JSON object whose keys keep their order (serde_json's `Map` sorts
/// them): `/info`'s features in column order, as the HF viewer lists them.
struct Ordered<T>(Vec<(String, T)>);

impl<T: serde::Serialize> serde::Serialize for Ordered<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

#[derive(serde::Serialize)]
struct ConfigInfo<'a> {
    dataset_name: &'a str,
    config_name: &'a str,
    features: Ordered<Value>,
    splits: Ordered<Value>,
    download_size: u64,
    dataset_size: u64,
}

fn config_info<'a>(dataset: &'a str, c: &'a crate::viewer::ConfigManifest) -> ConfigInfo<'a> {
    let features = c
        .splits
        .first()
        .map(|s| {
            s.features
                .iter()
                .map(|f| (f.name.clone(), f.ty.clone()))
                .collect()
        })
        .unwrap_or_default();
    let splits = c
        .splits
        .iter()
        .map(|s| {
            (
                s.name.clone(),
                json!({"name": s.name, "num_bytes": s.num_bytes_parquet, "num_examples": s.num_rows, "dataset_name": dataset}),
            )
        })
        .collect();
    ConfigInfo {
        dataset_name: dataset,
        config_name: &c.name,
        features: Ordered(features),
        splits: Ordered(splits),
        download_size: c.splits.iter().map(|s| s.num_bytes_original).sum(),
        dataset_size: c.splits.iter().map(|s| s.num_bytes_parquet).sum(),
    }
}

#[derive(serde::Serialize)]
struct InfoOne<'a> {
    dataset_info: ConfigInfo<'a>,
    partial: bool,
}

#[derive(serde::Serialize)]
struct InfoAll<'a> {
    dataset_info: Ordered<ConfigInfo<'a>>,
    pending: Vec<Value>,
    failed: Vec<Value>,
    partial: bool,
}

/// `GET /api/datasets-server/info?dataset=[&config=]`.
pub async fn info(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let p = Params::of(&req)?;
    let r = ready(&state, &auth, &p).await?;
    Ok(match p.get("config") {
        Some(want) => {
            let c = r.config(want)?;
            HttpResponse::Ok().json(InfoOne {
                dataset_info: config_info(&r.dataset, c),
                partial: false,
            })
        }
        None => HttpResponse::Ok().json(InfoAll {
            dataset_info: Ordered(
                r.manifest
                    .configs
                    .iter()
                    .map(|c| (c.name.clone(), config_info(&r.dataset, c)))
                    .collect(),
            ),
            pending: vec![],
            failed: vec![],
            partial: false,
        }),
    })
}

async fn page_rows(
    state: &AppState,
    dl: &Download,
    s: &SplitManifest,
    offset: u64,
    length: usize,
) -> ApiResult<Vec<Value>> {
    let batches = read::page(dl, &state.storage, s, offset, length).await?;
    let mut rows = Vec::new();
    let mut idx = offset;
    for b in &batches {
        for r in 0..b.num_rows() {
            let (row, cut) = row_json(b, r);
            rows.push(row_item(idx, row, cut));
            idx += 1;
        }
    }
    Ok(rows)
}

/// `GET /api/datasets-server/first-rows?dataset&config&split`: the first 100 rows.
pub async fn first_rows(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let p = Params::of(&req)?;
    let r = ready(&state, &auth, &p).await?;
    let (config, s) = r.split(&p)?;
    let rows = page_rows(&state, &r.dl, s, 0, MAX_LENGTH).await?;
    let truncated = s.num_rows > rows.len() as u64;
    Ok(HttpResponse::Ok().json(json!({
        "dataset": r.dataset, "config": config, "split": s.name,
        "features": features(s), "rows": rows, "truncated": truncated,
    })))
}

/// `GET /api/datasets-server/rows?dataset&config&split[&offset=0][&length=100]`.
pub async fn rows(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let p = Params::of(&req)?;
    let (offset, length) = (p.offset()?, p.length()?);
    let r = ready(&state, &auth, &p).await?;
    let (_, s) = r.split(&p)?;
    let rows = page_rows(&state, &r.dl, s, offset, length).await?;
    Ok(HttpResponse::Ok().json(json!({
        "features": features(s), "rows": rows,
        "num_rows_total": s.num_rows, "num_rows_per_page": MAX_LENGTH, "partial": false,
    })))
}

/// The sort key of `orderby`: nulls last, then booleans, numbers, strings.
fn sort_key(a: &Value, b: &Value) -> std::cmp::Ordering {
    use std::cmp::Ordering::*;
    match (a, b) {
        (Value::Null, Value::Null) => Equal,
        (Value::Null, _) => Greater,
        (_, Value::Null) => Less,
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .unwrap_or(0.0)
            .partial_cmp(&y.as_f64().unwrap_or(0.0))
            .unwrap_or(Equal),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        _ => a.to_string().cmp(&b.to_string()),
    }
}

/// Scans a split for the rows `keep` accepts: the page, the match count,
/// whether the scan stopped early. A scan decodes up to `SCAN_MAX` rows, so
/// it is heavy work of the caller (`heavy`): it holds one of their slots and
/// runs on a blocking thread, never on the async workers that answer
/// everyone's requests (its object-store reads still go through the runtime).
#[allow(clippy::too_many_arguments)]
async fn matching(
    state: &AppState,
    tenant: Tenant,
    dl: &Download,
    s: &SplitManifest,
    offset: u64,
    length: usize,
    order: Option<(usize, bool)>,
    keep: impl Fn(&arrow_array::RecordBatch, usize) -> bool + Send + 'static,
) -> ApiResult<(Vec<Value>, u64, bool)> {
    let slot = state.tenancy.heavy.slot(tenant).await?;
    let (dl, s, storage) = (dl.clone(), s.clone(), state.storage.clone());
    let rt = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        rt.block_on(scan_matching(
            &storage, &dl, &s, offset, length, order, keep,
        ))
    })
    .await
    .map_err(ApiError::internal)?
}

async fn scan_matching(
    storage: &crate::storage::Storage,
    dl: &Download,
    s: &SplitManifest,
    offset: u64,
    length: usize,
    order: Option<(usize, bool)>,
    keep: impl Fn(&arrow_array::RecordBatch, usize) -> bool,
) -> ApiResult<(Vec<Value>, u64, bool)> {
    let mut total = 0u64;
    let mut page = Vec::new();
    let mut sorted: Vec<(Value, u64, Value, Vec<String>)> = Vec::new();
    let mut too_many = false;
    let partial = read::scan(dl, storage, s, SCAN_MAX, |idx, b, r| {
        if !keep(b, r) {
            return;
        }
        total += 1;
        match order {
            Some((col, _)) => {
                if sorted.len() >= SORT_MAX {
                    too_many = true;
                    return;
                }
                let (row, cut) = row_json(b, r);
                sorted.push((read::cell(b.column(col).as_ref(), r), idx, row, cut));
            }
            None => {
                if total > offset && page.len() < length {
                    let (row, cut) = row_json(b, r);
                    page.push(row_item(idx, row, cut));
                }
            }
        }
    })
    .await?;
    if too_many {
        return Err(param_err(
            "orderby",
            format!("sorts at most {SORT_MAX} matching rows; narrow the where"),
        ));
    }
    if let Some((_, desc)) = order {
        sorted.sort_by(|a, b| {
            let o = sort_key(&a.0, &b.0);
            let o = if desc { o.reverse() } else { o };
            o.then(a.1.cmp(&b.1))
        });
        page = sorted
            .into_iter()
            .skip(offset.min(usize::MAX as u64) as usize)
            .take(length)
            .map(|(_, idx, row, cut)| row_item(idx, row, cut))
            .collect();
    }
    Ok((page, total, partial))
}

/// `GET /api/datasets-server/search?dataset&config&split&query[&offset][&length]`:
/// rows whose string cells contain `query` (case-insensitive).
pub async fn search(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let p = Params::of(&req)?;
    let (offset, length) = (p.offset()?, p.length()?);
    let query = p.required("query")?.to_lowercase();
    if query.chars().count() > MAX_QUERY {
        return Err(param_err(
            "query",
            format!("is longer than {MAX_QUERY} characters"),
        ));
    }
    let r = ready(&state, &auth, &p).await?;
    let (_, s) = r.split(&p)?;
    let tenant = Tenant::of(&auth, &req);
    let (rows, total, partial) = matching(&state, tenant, &r.dl, s, offset, length, None, move |b, i| {
        b.columns().iter().any(|c| {
            matches!(
                c.data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            ) && !c.is_null(i)
                && matches!(read::cell(c.as_ref(), i), Value::String(v) if v.to_lowercase().contains(&query))
        })
    })
    .await?;
    Ok(HttpResponse::Ok().json(json!({
        "features": features(s), "rows": rows,
        "num_rows_total": total, "num_rows_per_page": MAX_LENGTH, "partial": partial,
    })))
}

/// `GET /api/datasets-server/filter?dataset&config&split&where[&orderby][&offset][&length]`.
pub async fn filter(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let p = Params::of(&req)?;
    let (offset, length) = (p.offset()?, p.length()?);
    let expr: Option<Expr> = match p.get("where") {
        Some(w) if !w.trim().is_empty() => {
            Some(filter::parse(w).map_err(|e| param_err("where", e))?)
        }
        _ => None,
    };
    let orderby = match p.get("orderby") {
        Some(o) if !o.trim().is_empty() => {
            let parts: Vec<&str> = o.split_whitespace().collect();
            let (col, desc) = match parts[..] {
                [c] => (c, false),
                [c, d] if d.eq_ignore_ascii_case("asc") => (c, false),
                [c, d] if d.eq_ignore_ascii_case("desc") => (c, true),
                _ => {
                    return Err(param_err(
                        "orderby",
                        "must be a column name, then ASC or DESC",
                    ))
                }
            };
            Some((col.trim_matches('"').to_string(), desc))
        }
        _ => None,
    };
    if expr.is_none() && orderby.is_none() {
        return Err(param_err("where", "is required"));
    }
    let r = ready(&state, &auth, &p).await?;
    let (_, s) = r.split(&p)?;
    let names: Vec<&str> = s.features.iter().map(|f| f.name.as_str()).collect();
    let mut cols = Vec::new();
    if let Some(e) = &expr {
        e.columns(&mut cols);
    }
    for c in &cols {
        if !names.contains(&c.as_str()) {
            return Err(param_err("where", format!("no column {:?}", clip(c, 80))));
        }
    }
    let order = match &orderby {
        Some((c, desc)) => Some((
            names
                .iter()
                .position(|n| n == c)
                .ok_or_else(|| param_err("orderby", format!("no column {:?}", clip(c, 80))))?,
            *desc,
        )),
        None => None,
    };
    let tenant = Tenant::of(&auth, &req);
    let (rows, total, partial) = matching(
        &state,
        tenant,
        &r.dl,
        s,
        offset,
        length,
        order,
        move |b, i| match &expr {
            None => true,
            Some(e) => e.eval(&|c: &str| {
                b.schema()
                    .index_of(c)
                    .map(|k| read::cell(b.column(k).as_ref(), i))
                    .unwrap_or(Value::Null)
            }),
        },
    )
    .await?;
    Ok(HttpResponse::Ok().json(json!({
        "features": features(s), "rows": rows,
        "num_rows_total": total, "num_rows_per_page": MAX_LENGTH, "partial": partial,
    })))
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// `GET /api/datasets-server/parquet?dataset=[&config=][&split=]`: the Parquet files.
pub async fn parquet(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let p = Params::of(&req)?;
    let r = ready(&state, &auth, &p).await?;
    let (wc, ws) = (p.get("config"), p.get("split"));
    let mut files = Vec::new();
    for c in &r.manifest.configs {
        if wc.is_some_and(|w| w != c.name) {
            continue;
        }
        for s in &c.splits {
            if ws.is_some_and(|w| w != s.name) {
                continue;
            }
            for (n, sh) in s.shards.iter().enumerate() {
                let filename = format!("{n:04}.parquet");
                files.push(json!({
                    "dataset": r.dataset, "config": c.name, "split": s.name,
                    "url": format!("{}/api/datasets/{}/parquet/{}/{}/{}", state.public_url, r.dataset, enc(&c.name), enc(&s.name), filename),
                    "filename": filename, "size": sh.size, "num_rows": sh.num_rows, "source": sh.source,
                }));
            }
        }
    }
    if files.is_empty() && (wc.is_some() || ws.is_some()) {
        return Err(ApiError::NotFound("split"));
    }
    Ok(HttpResponse::Ok()
        .json(json!({"parquet_files": files, "pending": [], "failed": [], "partial": false})))
}

/// `GET /api/datasets-server/size?dataset=`.
pub async fn size(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let p = Params::of(&req)?;
    let r = ready(&state, &auth, &p).await?;
    let (mut configs, mut splits) = (Vec::new(), Vec::new());
    let (mut orig, mut pq, mut rows) = (0u64, 0u64, 0u64);
    for c in &r.manifest.configs {
        let (mut co, mut cp, mut cr) = (0u64, 0u64, 0u64);
        for s in &c.splits {
            splits.push(json!({"dataset": r.dataset, "config": c.name, "split": s.name,
                "num_bytes_original_files": s.num_bytes_original, "num_bytes_parquet_files": s.num_bytes_parquet,
                "num_rows": s.num_rows, "num_columns": s.features.len()}));
            co += s.num_bytes_original;
            cp += s.num_bytes_parquet;
            cr += s.num_rows;
        }
        configs.push(
            json!({"dataset": r.dataset, "config": c.name, "num_bytes_original_files": co,
            "num_bytes_parquet_files": cp, "num_rows": cr}),
        );
        orig += co;
        pq += cp;
        rows += cr;
    }
    Ok(HttpResponse::Ok().json(json!({
        "size": {"dataset": {"dataset": r.dataset, "num_bytes_original_files": orig, "num_bytes_parquet_files": pq, "num_rows": rows},
                 "configs": configs, "splits": splits},
        "pending": [], "failed": [], "partial": false,
    })))
}

/// `GET /api/datasets/{ns}/{name}/parquet/{config}/{split}/{n}.parquet`: one
/// Parquet file of a split (converted, or the repo's own).
pub async fn parquet_file(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let m = req.match_info();
    let (ns, name) = (m.get("ns").unwrap_or(""), m.get("name").unwrap_or(""));
    let (config, split, file) = (
        m.get("config").unwrap_or(""),
        m.get("split").unwrap_or(""),
        m.get("file").unwrap_or(""),
    );
    let mut q = Params::of(&req)?;
    q.0.insert("dataset".into(), format!("{ns}/{name}"));
    let r = ready(&state, &auth, &q).await?;
    let s = r
        .manifest
        .split(config, split)
        .ok_or(ApiError::NotFound("split"))?;
    let n: usize = file
        .strip_suffix(".parquet")
        .and_then(|n| n.parse().ok())
        .ok_or(ApiError::NotFound("Parquet file"))?;
    let shard = s.shards.get(n).ok_or(ApiError::NotFound("Parquet file"))?;
    let body = read::stream_shard(&r.dl, &state, shard).await?;
    Ok(
        crate::routes::hf::resolve::untrusted_bytes(&mut HttpResponse::Ok())
            .content_type("application/vnd.apache.parquet")
            .no_chunking(shard.size)
            .streaming(body),
    )
}
