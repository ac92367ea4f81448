//! The dataset viewer (issue 16): commits to a dataset's default branch are
//! converted to Parquet off the request path (`viewer::jobs`, run here with
//! `run_pending`), and `/api/datasets-server/*` answers in the HF viewer's
//! shapes, with rows compared with the source files.

use crate::common::*;
use actix_web::test::TestRequest;
use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use hub_testkit::{app, TestState};
use serde_json::{json, Value};
use std::sync::Arc;

async fn create_ds(app: &impl App, tok: &str, id: &str, private: bool) {
    let (ns, name) = id.split_once('/').unwrap();
    let (st, _, b) = call(
        app,
        TestRequest::post()
            .uri("/api/repos/create")
            .insert_header(bearer(tok))
            .set_json(
                json!({"name": name, "organization": ns, "private": private, "type": "dataset"}),
            ),
    )
    .await;
    assert_eq!(st, 200, "create {id}: {}", String::from_utf8_lossy(&b));
}

async fn commit_ds(app: &impl App, tok: &str, id: &str, files: &[(&str, &[u8])]) -> String {
    commit_files_to(app, tok, "datasets", id, files).await
}

async fn get(
    app: &impl App,
    uri: &str,
    tok: Option<&str>,
) -> (u16, Value, actix_web::http::header::HeaderMap) {
    let mut req = TestRequest::get().uri(uri);
    if let Some(t) = tok {
        req = req.insert_header(bearer(t));
    }
    let (st, h, b) = call(app, req).await;
    let v = serde_json::from_slice(&b).unwrap_or(Value::Null);
    (st, v, h)
}

async fn ok(app: &impl App, uri: &str, tok: Option<&str>) -> Value {
    let (st, v, _) = get(app, uri, tok).await;
    assert_eq!(st, 200, "{uri}: {v}");
    v
}

async fn convert(t: &TestState) {
    hub_api::viewer::jobs::run_pending(&t.state).await.unwrap();
}

fn rows_of(v: &Value) -> Vec<Value> {
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["row"].clone())
        .collect()
}

fn idx_of(v: &Value) -> Vec<u64> {
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["row_idx"].as_u64().unwrap())
        .collect()
}

/// The source rows of the CSV fixtures: id, name, score.
fn source(n: usize, tag: &str) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"id": i as i64, "name": format!("{tag}-{i}"), "score": i as f64 * 1.5}))
        .collect()
}

fn csv(rows: &[Value]) -> Vec<u8> {
    let mut s = String::from("id,name,score\n");
    for r in rows {
        s.push_str(&format!(
            "{},{},{:?}\n",
            r["id"],
            r["name"].as_str().unwrap(),
            r["score"].as_f64().unwrap()
        ));
    }
    s.into_bytes()
}

fn jsonl(rows: &[Value]) -> Vec<u8> {
    let mut s = String::new();
    for r in rows {
        s.push_str(&format!(
            "{{\"id\":{},\"name\":{},\"score\":{:?}}}\n",
            r["id"],
            r["name"],
            r["score"].as_f64().unwrap()
        ));
    }
    s.into_bytes()
}

fn parquet(rows: &[Value], compression: parquet::basic::Compression) -> Vec<u8> {
    let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(
        rows.iter().map(|r| r["id"].as_i64().unwrap()),
    ));
    let names: ArrayRef = Arc::new(StringArray::from_iter_values(
        rows.iter().map(|r| r["name"].as_str().unwrap().to_string()),
    ));
    let scores: ArrayRef = Arc::new(Float64Array::from_iter_values(
        rows.iter().map(|r| r["score"].as_f64().unwrap()),
    ));
    let batch =
        RecordBatch::try_from_iter([("id", ids), ("name", names), ("score", scores)]).unwrap();
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(compression)
        .set_max_row_group_size(64)
        .build();
    let mut out = Vec::new();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(&mut out, batch.schema(), Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    out
}

/// Reads a Parquet file's rows as the viewer's JSON.
fn parquet_rows(bytes: Vec<u8>) -> Vec<Value> {
    let r = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        bytes::Bytes::from(bytes),
    )
    .unwrap()
    .build()
    .unwrap();
    let mut out = Vec::new();
    for b in r {
        let b = b.unwrap();
        for i in 0..b.num_rows() {
            out.push(hub_api::viewer::read::row_json(&b, i).0);
        }
    }
    out
}

/// Every route of a converted dataset answers with the source rows.
async fn check_dataset(app: &impl App, ds: &str, train: &[Value], test: &[Value]) {
    let q = format!("dataset={ds}");
    let v = ok(app, &format!("/api/datasets-server/is-valid?{q}"), None).await;
    assert_eq!(
        v,
        json!({"preview": true, "viewer": true, "search": true, "filter": true, "statistics": false})
    );
    let v = ok(app, &format!("/api/datasets-server/splits?{q}"), None).await;
    assert_eq!(
        v["splits"],
        json!([{"dataset": ds, "config": "default", "split": "train"}, {"dataset": ds, "config": "default", "split": "test"}])
    );
    let v = ok(
        app,
        &format!("/api/datasets-server/info?{q}&config=default"),
        None,
    )
    .await;
    let info = &v["dataset_info"];
    assert_eq!(info["splits"]["train"]["num_examples"], train.len());
    assert_eq!(info["splits"]["test"]["num_examples"], test.len());
    assert_eq!(
        info["features"],
        json!({"id": {"dtype": "int64", "_type": "Value"}, "name": {"dtype": "string", "_type": "Value"}, "score": {"dtype": "float64", "_type": "Value"}})
    );
    let tr = format!("{q}&config=default&split=train");
    let v = ok(app, &format!("/api/datasets-server/first-rows?{tr}"), None).await;
    let names: Vec<&str> = v["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["id", "name", "score"], "source column order");
    assert_eq!(
        v["features"][1],
        json!({"feature_idx": 1, "name": "name", "type": {"dtype": "string", "_type": "Value"}})
    );
    assert_eq!(rows_of(&v), train[..100.min(train.len())]);
    assert_eq!(v["rows"][0]["truncated_cells"], json!([]));
    // Pages by offset and length, across row groups and to the end.
    for (offset, length) in [
        (0usize, 10usize),
        (60, 17),
        (120, 100),
        (train.len() - 3, 10),
    ] {
        let v = ok(
            app,
            &format!("/api/datasets-server/rows?{tr}&offset={offset}&length={length}"),
            None,
        )
        .await;
        let end = (offset + length).min(train.len());
        assert_eq!(
            rows_of(&v),
            train[offset..end],
            "offset {offset} length {length}"
        );
        assert_eq!(idx_of(&v), (offset as u64..end as u64).collect::<Vec<_>>());
        assert_eq!(v["num_rows_total"], train.len());
        assert_eq!(v["num_rows_per_page"], 100);
        assert_eq!(v["partial"], false);
    }
    let v = ok(
        app,
        &format!("/api/datasets-server/rows?{q}&config=default&split=test"),
        None,
    )
    .await;
    assert_eq!(rows_of(&v), test);
    // Search: case-insensitive substring of string cells.
    let v = ok(
        app,
        &format!("/api/datasets-server/search?{tr}&query=ME-1"),
        None,
    )
    .await;
    let want: Vec<Value> = train
        .iter()
        .filter(|r| r["name"].as_str().unwrap().to_lowercase().contains("me-1"))
        .cloned()
        .collect();
    assert_eq!(v["num_rows_total"], want.len());
    assert_eq!(rows_of(&v), want[..want.len().min(100)]);
    // Filter: a parsed WHERE, and orderby.
    let w = percent_encoding::utf8_percent_encode(
        "score >= 30 AND (id < 40 OR name = 'x') AND name != 'never'",
        percent_encoding::NON_ALPHANUMERIC,
    )
    .to_string();
    let v = ok(
        app,
        &format!("/api/datasets-server/filter?{tr}&where={w}&offset=2&length=5"),
        None,
    )
    .await;
    let want: Vec<Value> = train
        .iter()
        .filter(|r| r["score"].as_f64().unwrap() >= 30.0 && r["id"].as_i64().unwrap() < 40)
        .cloned()
        .collect();
    assert_eq!(v["num_rows_total"], want.len());
    assert_eq!(rows_of(&v), want[2..7]);
    let v = ok(
        app,
        &format!("/api/datasets-server/filter?{tr}&where=id%20%3C%205&orderby=score%20DESC"),
        None,
    )
    .await;
    let mut want: Vec<Value> = train[..5].to_vec();
    want.reverse();
    assert_eq!(rows_of(&v), want);
    assert_eq!(idx_of(&v), [4, 3, 2, 1, 0]);
    // The Parquet files: listed, downloadable, and holding the rows.
    let v = ok(app, &format!("/api/datasets-server/parquet?{q}"), None).await;
    let files = v["parquet_files"].as_array().unwrap();
    assert_eq!(files.len(), 2, "{v}");
    let mut seen = Vec::new();
    for f in files {
        let url = f["url"]
            .as_str()
            .unwrap()
            .strip_prefix("http://hub.test")
            .unwrap()
            .to_string();
        let (st, h, body) = call(app, TestRequest::get().uri(&url)).await;
        assert_eq!(st, 200, "{url}");
        let _ = h;
        assert_eq!(body.len() as u64, f["size"].as_u64().unwrap());
        seen.push((f["split"].as_str().unwrap().to_string(), parquet_rows(body)));
    }
    assert_eq!(
        seen,
        vec![
            ("train".to_string(), train.to_vec()),
            ("test".to_string(), test.to_vec())
        ]
    );
    let v = ok(app, &format!("/api/datasets-server/size?{q}"), None).await;
    assert_eq!(v["size"]["dataset"]["num_rows"], train.len() + test.len());
}

#[actix_web::test]
async fn csv_jsonl_and_parquet_datasets_answer_with_their_rows() {
    let t = TestState::new().await;
    let (_, alice) = t.user("alice", false, &["read", "write"]).await;
    let app = app(&t.state).await;
    let (train, test) = (source(250, "name"), source(3, "test"));

    create_ds(&app, &alice, "alice/csv", false).await;
    let first = commit_ds(
        &app,
        &alice,
        "alice/csv",
        &[
            ("train.csv", &csv(&train)),
            ("test.csv", &csv(&test)),
            ("README.md", b"# csv\n"),
        ],
    )
    .await;
    // Not converted yet: the HF viewer's "not ready" answer.
    let (st, v, h) = get(
        &app,
        "/api/datasets-server/rows?dataset=alice/csv&config=default&split=train",
        None,
    )
    .await;
    assert_eq!(st, 500, "{v}");
    assert_eq!(h.get("x-error-code").unwrap(), "ResponseNotReady");
    assert!(v["error"].as_str().unwrap().contains("not ready"));
    let v = ok(
        &app,
        "/api/datasets-server/is-valid?dataset=alice/csv",
        None,
    )
    .await;
    assert_eq!(v["viewer"], false);
    convert(&t).await;
    check_dataset(&app, "alice/csv", &train, &test).await;

    create_ds(&app, &alice, "alice/jsonl", false).await;
    commit_ds(
        &app,
        &alice,
        "alice/jsonl",
        &[
            ("data/train.jsonl", &jsonl(&train)),
            ("data/test.jsonl", &jsonl(&test)),
        ],
    )
    .await;
    convert(&t).await;
    check_dataset(&app, "alice/jsonl", &train, &test).await;

    create_ds(&app, &alice, "alice/pq", false).await;
    let train_pq = parquet(
        &train,
        parquet::basic::Compression::ZSTD(Default::default()),
    );
    let test_pq = parquet(&test, parquet::basic::Compression::GZIP(Default::default()));
    commit_ds(
        &app,
        &alice,
        "alice/pq",
        &[
            ("data/train-00000-of-00001.parquet", &train_pq),
            ("data/test-00000-of-00001.parquet", &test_pq),
        ],
    )
    .await;
    convert(&t).await;
    check_dataset(&app, "alice/pq", &train, &test).await;
    // Read in place: the listed file is the repo's own bytes.
    let v = ok(
        &app,
        "/api/datasets-server/parquet?dataset=alice/pq&split=train",
        None,
    )
    .await;
    let url = v["parquet_files"][0]["url"]
        .as_str()
        .unwrap()
        .strip_prefix("http://hub.test")
        .unwrap()
        .to_string();
    let (_, _, body) = call(&app, TestRequest::get().uri(&url)).await;
    assert_eq!(body, train_pq);

    // A new commit converts again: the rows change.
    let train2 = source(5, "again");
    commit_ds(&app, &alice, "alice/csv", &[("train.csv", &csv(&train2))]).await;
    let (st, _, _) = get(
        &app,
        "/api/datasets-server/rows?dataset=alice/csv&config=default&split=train",
        None,
    )
    .await;
    assert_eq!(st, 500, "the new commit is not converted yet");
    convert(&t).await;
    let v = ok(
        &app,
        "/api/datasets-server/rows?dataset=alice/csv&config=default&split=train",
        None,
    )
    .await;
    assert_eq!(rows_of(&v), train2);
    assert_eq!(v["num_rows_total"], 5);
    // The earlier commit stays readable by revision.
    let v = ok(&app, &format!("/api/datasets-server/rows?dataset=alice/csv&config=default&split=train&length=2&revision={first}"), None).await;
    assert_eq!(v["num_rows_total"], 250);
    assert_eq!(rows_of(&v), train[..2]);
}

#[actix_web::test]
async fn a_configs_block_and_a_malformed_file() {
    let t = TestState::new().await;
    let (_, alice) = t.user("alice", false, &["read", "write"]).await;
    let app = app(&t.state).await;
    create_ds(&app, &alice, "alice/cfg", false).await;
    let (a, b, c) = (source(4, "a"), source(2, "b"), source(3, "c"));
    let readme = "---\nconfigs:\n- config_name: first\n  data_files:\n  - split: train\n    path: first/*.csv\n  - split: test\n    path: [\"first/held_out.jsonl\"]\n- config_name: second\n  default: true\n  data_files: second/**/*.csv\n---\n# cfg\n";
    commit_ds(
        &app,
        &alice,
        "alice/cfg",
        &[
            ("README.md", readme.as_bytes()),
            ("first/x.csv", &csv(&a)),
            ("first/held_out.jsonl", &jsonl(&b)),
            ("second/deep/y.csv", &csv(&c)),
        ],
    )
    .await;
    convert(&t).await;
    let v = ok(&app, "/api/datasets-server/splits?dataset=alice/cfg", None).await;
    assert_eq!(
        v["splits"],
        json!([
            {"dataset": "alice/cfg", "config": "second", "split": "train"},
            {"dataset": "alice/cfg", "config": "first", "split": "train"},
            {"dataset": "alice/cfg", "config": "first", "split": "test"},
        ])
    );
    let v = ok(
        &app,
        "/api/datasets-server/rows?dataset=alice/cfg&config=first&split=test",
        None,
    )
    .await;
    assert_eq!(rows_of(&v), b);
    let v = ok(
        &app,
        "/api/datasets-server/rows?dataset=alice/cfg&config=second&split=train",
        None,
    )
    .await;
    assert_eq!(rows_of(&v), c);
    let v = ok(&app, "/api/datasets-server/info?dataset=alice/cfg", None).await;
    assert_eq!(
        v["dataset_info"]["first"]["splits"]["train"]["num_examples"],
        4
    );

    // A malformed CSV: the commit succeeds, the viewer says why it cannot show it.
    create_ds(&app, &alice, "alice/bad", false).await;
    commit_ds(
        &app,
        &alice,
        "alice/bad",
        &[("train.csv", b"a,b\n1,2\n3,4\n5,6,7\n")],
    )
    .await;
    convert(&t).await;
    let v = ok(
        &app,
        "/api/datasets-server/is-valid?dataset=alice/bad",
        None,
    )
    .await;
    assert_eq!(v["viewer"], false);
    let (st, v, h) = get(
        &app,
        "/api/datasets-server/first-rows?dataset=alice/bad&config=default&split=train",
        None,
    )
    .await;
    assert_eq!(st, 501, "{v}");
    assert_eq!(h.get("x-error-code").unwrap(), "DatasetGenerationError");
    let why = v["error"].as_str().unwrap();
    assert!(
        why.contains("train.csv") && why.contains("line") && why.contains('4'),
        "{why}"
    );
    assert_eq!(v["code"], "dataset_cannot_show");
    // Fixing the file makes it viewable.
    commit_ds(&app, &alice, "alice/bad", &[("train.csv", b"a,b\n1,2\n")]).await;
    convert(&t).await;
    let v = ok(
        &app,
        "/api/datasets-server/rows?dataset=alice/bad&config=default&split=train",
        None,
    )
    .await;
    assert_eq!(rows_of(&v), vec![json!({"a": 1, "b": 2})]);
}

#[actix_web::test]
async fn private_and_gated_datasets_and_parameters() {
    let t = TestState::new().await;
    let (_, alice) = t.user("alice", false, &["read", "write"]).await;
    let (_, bob) = t.user("bob", false, &["read", "write"]).await;
    let app = app(&t.state).await;
    let rows = source(3, "p");
    create_ds(&app, &alice, "alice/secret", true).await;
    commit_ds(&app, &alice, "alice/secret", &[("train.csv", &csv(&rows))]).await;
    create_ds(&app, &alice, "alice/gated", false).await;
    commit_ds(&app, &alice, "alice/gated", &[("train.csv", &csv(&rows))]).await;
    let (st, _, _) = call(
        &app,
        TestRequest::put()
            .uri("/api/datasets/alice/gated/settings")
            .insert_header(bearer(&alice))
            .set_json(json!({"gated": "manual"})),
    )
    .await;
    assert_eq!(st, 200);
    convert(&t).await;
    for route in [
        "is-valid",
        "splits",
        "info",
        "first-rows",
        "rows",
        "search",
        "filter",
        "parquet",
        "size",
    ] {
        let uri = format!("/api/datasets-server/{route}?dataset=alice/secret&config=default&split=train&query=p&where=id%3D1");
        assert_eq!(get(&app, &uri, Some(&alice)).await.0, 200, "{uri}");
        let (st, v, _) = get(&app, &uri, None).await;
        assert!(st == 401 || st == 404, "{uri} anonymous: {st}");
        assert!(!v.to_string().contains("secret"), "{v}");
        assert_eq!(
            get(&app, &uri, Some(&bob)).await.0,
            404,
            "{uri} other tenant"
        );
        let gated = uri.replace("secret", "gated");
        assert_eq!(get(&app, &gated, Some(&alice)).await.0, 200, "{gated}");
        let (st, _, h) = get(&app, &gated, Some(&bob)).await;
        assert_eq!(st, 403, "{gated}");
        assert_eq!(h.get("x-error-code").unwrap(), "GatedRepo");
    }
    let (st, _, _) = call(
        &app,
        TestRequest::get()
            .uri("/api/datasets/alice/secret/parquet/default/train/0000.parquet")
            .insert_header(bearer(&bob)),
    )
    .await;
    assert_eq!(st, 404);
    let (st, _, _) = call(
        &app,
        TestRequest::get()
            .uri("/api/datasets/alice/gated/parquet/default/train/0000.parquet")
            .insert_header(bearer(&bob)),
    )
    .await;
    assert_eq!(st, 403);
    // Bob is let in.
    let (st, _, _) = call(
        &app,
        TestRequest::post()
            .uri("/api/v1/repos/datasets/alice/gated/access-requests")
            .insert_header(bearer(&bob))
            .set_json(json!({})),
    )
    .await;
    assert_eq!(st, 201);
    let (st, _, _) = call(
        &app,
        TestRequest::put()
            .uri("/api/v1/repos/datasets/alice/gated/access-requests/bob")
            .insert_header(bearer(&alice))
            .set_json(json!({"status": "accepted"})),
    )
    .await;
    assert_eq!(st, 200);
    let v = ok(
        &app,
        "/api/datasets-server/rows?dataset=alice/gated&config=default&split=train",
        Some(&bob),
    )
    .await;
    assert_eq!(rows_of(&v), rows);

    // Parameters: every bad one is a 4xx naming it.
    let base = "/api/datasets-server/rows?dataset=alice/gated&config=default&split=train";
    for (uri, status, name) in [
        (
            "/api/datasets-server/rows?config=default&split=train".to_string(),
            400,
            "dataset",
        ),
        (format!("{base}&length=101"), 400, "length"),
        (format!("{base}&length=ten"), 400, "length"),
        (format!("{base}&offset=-1"), 400, "offset"),
        (
            "/api/datasets-server/rows?dataset=alice/gated&split=train".to_string(),
            400,
            "config",
        ),
        (
            "/api/datasets-server/rows?dataset=alice/gated&config=default".to_string(),
            400,
            "split",
        ),
        (base.replace("/rows", "/search"), 400, "query"),
        (base.replace("/rows", "/filter"), 400, "where"),
        (
            format!("{}&where=id%20%3D", base.replace("/rows", "/filter")),
            400,
            "where",
        ),
        (
            format!("{}&where=nope%20%3D%201", base.replace("/rows", "/filter")),
            400,
            "where",
        ),
        (
            format!(
                "{}&where=id%3D1%3B%20DROP%20TABLE%20x",
                base.replace("/rows", "/filter")
            ),
            400,
            "where",
        ),
        (
            format!("{}&orderby=id%20sideways", base.replace("/rows", "/filter")),
            400,
            "orderby",
        ),
        (
            format!("{}&orderby=nope", base.replace("/rows", "/filter")),
            400,
            "orderby",
        ),
        (
            "/api/datasets-server/rows?dataset=alice/gated&config=nope&split=train".to_string(),
            404,
            "config",
        ),
        (
            "/api/datasets-server/rows?dataset=alice/gated&config=default&split=nope".to_string(),
            404,
            "split",
        ),
        (
            "/api/datasets-server/rows?dataset=alice/missing&config=default&split=train"
                .to_string(),
            404,
            "repository",
        ),
        (format!("{base}&revision=nope"), 404, "nope"),
    ] {
        let (st, v, _) = get(&app, &uri, Some(&alice)).await;
        assert_eq!(st, status, "{uri}: {v}");
        assert!(v["error"].as_str().unwrap().contains(name), "{uri}: {v}");
    }
    // A model is no dataset.
    let (st, _, _) = get(
        &app,
        "/api/datasets-server/splits?dataset=alice/model",
        Some(&alice),
    )
    .await;
    assert_eq!(st, 404);
}

/// The dataset page: "converting" first, then a typed table of rows with
/// split choices and a next page; the "cannot show" reason for a bad file.
#[actix_web::test]
async fn the_dataset_page_shows_the_rows() {
    let t = TestState::new().await;
    let (_, alice) = t.user("alice", false, &["read", "write"]).await;
    let app = app(&t.state).await;
    let page = |uri: &str| {
        let uri = uri.to_string();
        let app = &app;
        async move {
            let (st, _, b) = call(
                app,
                TestRequest::get()
                    .uri(&uri)
                    .insert_header(("Accept", "text/html")),
            )
            .await;
            assert_eq!(st, 200, "{uri}");
            String::from_utf8(b).unwrap()
        }
    };
    create_ds(&app, &alice, "alice/page", false).await;
    commit_ds(
        &app,
        &alice,
        "alice/page",
        &[
            ("train.csv", &csv(&source(30, "row"))),
            ("test.csv", &csv(&source(2, "held"))),
        ],
    )
    .await;
    let html = page("/datasets/alice/page").await;
    assert!(
        html.contains("data-state=\"pending\"") && html.contains("Converting"),
        "{html}"
    );
    convert(&t).await;
    let html = page("/datasets/alice/page").await;
    assert!(html.contains("data-state=\"ready\""), "{html}");
    assert!(
        html.contains(
            "<span class=\"col-name\">score</span> <span class=\"col-type\">float64</span>"
        ),
        "{html}"
    );
    assert!(
        html.contains("<td>row-24</td>") && !html.contains("<td>row-25</td>"),
        "25 rows a page"
    );
    assert!(html.contains("Rows 1–25 of 30"), "{html}");
    assert!(html.contains("rel=\"next\" href=\"/datasets/alice/page?config=default&#38;split=train&#38;offset=25#viewer\""), "{html}");
    let html = page("/datasets/alice/page?config=default&split=train&offset=25").await;
    assert!(
        html.contains("<td>row-29</td>") && html.contains("rel=\"prev\""),
        "{html}"
    );
    let html = page("/datasets/alice/page?config=default&split=test").await;
    assert!(
        html.contains("<td>held-1</td>") && !html.contains("<td>row-0</td>"),
        "{html}"
    );
    create_ds(&app, &alice, "alice/badpage", false).await;
    commit_ds(
        &app,
        &alice,
        "alice/badpage",
        &[("train.jsonl", b"{\"a\": 1}\n{\"a\": \n")],
    )
    .await;
    convert(&t).await;
    let html = page("/datasets/alice/badpage").await;
    assert!(
        html.contains("data-state=\"error\"")
            && html.contains("cannot show")
            && html.contains("train.jsonl"),
        "{html}"
    );
}

/// `/search` and `/filter` decode up to a million rows per call: heavy work of the
/// caller (`heavy`), so each holds one of the caller's slots while it scans (429
/// `tenant_busy` when they are all taken, while another tenant is served) and runs
/// off the async workers.
#[actix_web::test]
async fn search_and_filter_take_a_heavy_slot_of_the_caller() {
    use hub_api::heavy::{Heavy, HeavyLimits, Tenant};
    use std::time::Duration;
    let mut t = TestState::new().await;
    t.state.tenancy.heavy = Arc::new(Heavy::new(HeavyLimits {
        global: 4,
        per_tenant: 1,
        tenant_wait: Duration::from_millis(100),
        global_wait: Duration::from_secs(5),
    }));
    let (alice_id, alice) = t.user("alice", false, &["read", "write"]).await;
    let (_, bob) = t.user("bob", false, &["read"]).await;
    let app = app(&t.state).await;
    let rows = source(40, "busy");
    create_ds(&app, &alice, "alice/scan", false).await;
    commit_ds(&app, &alice, "alice/scan", &[("train.csv", &csv(&rows))]).await;
    convert(&t).await;
    let base = "/api/datasets-server/{route}?dataset=alice/scan&config=default&split=train";
    let scans = [
        base.replace("{route}", "search") + "&query=busy",
        base.replace("{route}", "filter") + "&where=id%20%3C%2010",
    ];
    let held = t
        .state
        .tenancy
        .heavy
        .slot(Tenant::User(alice_id))
        .await
        .unwrap();
    for uri in &scans {
        let (st, v, h) = get(&app, uri, Some(&alice)).await;
        assert_eq!(st, 429, "{uri}: {v}");
        assert_eq!(v["code"], "tenant_busy", "{uri}: {v}");
        assert!(h.get("retry-after").is_some());
        // Another tenant's scan is not held up by alice's.
        let v = ok(&app, uri, Some(&bob)).await;
        assert!(!rows_of(&v).is_empty(), "{uri}: {v}");
    }
    drop(held);
    let v = ok(&app, &scans[0], Some(&alice)).await;
    assert_eq!(v["num_rows_total"], 40);
    let v = ok(&app, &scans[1], Some(&alice)).await;
    assert_eq!(v["num_rows_total"], 10);
}
