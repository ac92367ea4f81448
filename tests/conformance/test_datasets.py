"""Datasets as a new user of the `datasets` library reads them, with only
HF_ENDPOINT and a token set: CSV, JSON Lines and Parquet repos with splits by
file name, streamed and not; pandas through hf://; a README `configs:` block;
private and gated datasets; a 10,000-file dataset. Rows are compared with the
source. The hub's dataset viewer (`/api/datasets-server/*`, issue 16) answers
for the same repos with the same rows, and its Parquet files read with
pyarrow hold them too."""

import csv
import io
import json
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from conftest import ENDPOINT
from huggingface_hub import CommitOperationAdd, HfApi

datasets = pytest.importorskip("datasets")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

ROWS = {
    "train": [{"text": f"review {i}: {'good' if i % 3 else 'bad'}", "label": i % 2} for i in range(40)],
    "test": [{"text": f"held out {i}", "label": (i + 1) % 2} for i in range(10)],
}


def csv_bytes(rows):
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=["text", "label"])
    w.writeheader()
    w.writerows(rows)
    return out.getvalue().encode()


def jsonl_bytes(rows):
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def parquet_bytes(rows):
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    return buf.getvalue()


def make(api, repo_id, files, **kw):
    api.create_repo(repo_id, repo_type="dataset", **kw)
    api.create_commit(repo_id, repo_type="dataset", commit_message="data",
                      operations=[CommitOperationAdd(p, b) for p, b in files.items()])
    return repo_id


def rows_of(ds):
    return [{"text": r["text"], "label": int(r["label"])} for r in ds]


def viewer(route, token, **params):
    """GETs a dataset viewer route, waiting while the hub converts (500
    ResponseNotReady); answers (status, JSON body)."""
    url = f"{ENDPOINT}/api/datasets-server/{route}?{urllib.parse.urlencode(params)}"
    deadline = time.time() + 120
    while True:
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
        try:
            with urllib.request.urlopen(req) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            body = json.loads(e.read() or b"null")
            if e.code == 500 and e.headers.get("X-Error-Code") == "ResponseNotReady" and time.time() < deadline:
                time.sleep(0.5)
                continue
            return e.code, body


def fetch(url, token):
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req) as r:
        return r.read()


def check_viewer(repo, token, splits, config="default"):
    """Every viewer route answers for `repo` with the rows of `splits`."""
    status, v = viewer("is-valid", token, dataset=repo)
    assert status == 200 and v["viewer"] is True and v["filter"] is True, v
    status, v = viewer("splits", token, dataset=repo, config=config)
    assert status == 200, v
    assert {s["split"] for s in v["splits"]} == set(splits), v
    status, info = viewer("info", token, dataset=repo, config=config)
    assert status == 200, info
    assert list(info["dataset_info"]["features"]) == ["text", "label"]
    assert info["dataset_info"]["features"]["text"] == {"dtype": "string", "_type": "Value"}
    for split, rows in splits.items():
        assert info["dataset_info"]["splits"][split]["num_examples"] == len(rows)
        status, v = viewer("first-rows", token, dataset=repo, config=config, split=split)
        assert status == 200, v
        assert [f["name"] for f in v["features"]] == ["text", "label"]
        assert [r["row"] for r in v["rows"]] == rows[:100]
        status, v = viewer("rows", token, dataset=repo, config=config, split=split, offset=1, length=3)
        assert status == 200, v
        assert [r["row"] for r in v["rows"]] == rows[1:4]
        assert [r["row_idx"] for r in v["rows"]] == list(range(1, 1 + len(rows[1:4])))
        assert v["num_rows_total"] == len(rows) and v["partial"] is False
        status, v = viewer("search", token, dataset=repo, config=config, split=split, query="GOOD")
        assert status == 200, v
        assert [r["row"] for r in v["rows"]] == [r for r in rows if "good" in r["text"]][:100]
        status, v = viewer("filter", token, dataset=repo, config=config, split=split,
                           where="label = 1 AND text != 'nothing'", orderby="text DESC")
        assert status == 200, v
        want = sorted((r for r in rows if r["label"] == 1), key=lambda r: r["text"], reverse=True)
        assert [r["row"] for r in v["rows"]] == want[:100]
        assert v["num_rows_total"] == len(want)
        status, v = viewer("parquet", token, dataset=repo, config=config, split=split)
        assert status == 200, v
        got = []
        for f in v["parquet_files"]:
            table = pq.read_table(io.BytesIO(fetch(f["url"], token)))
            got += [{"text": r["text"], "label": int(r["label"])} for r in table.to_pylist()]
        assert got == rows, f"{split}: the Parquet files hold the source rows"
    status, v = viewer("rows", token, dataset=repo, config=config, split="train", length=101)
    assert status == 400 and "length" in v["error"], v


@pytest.fixture
def cache(tmp_path):
    return str(tmp_path / "datasets-cache")


@pytest.mark.parametrize("fmt,ext,to_bytes", [
    ("csv", "csv", csv_bytes), ("json", "jsonl", jsonl_bytes), ("parquet", "parquet", parquet_bytes),
])
def test_splits_by_file_name_streamed_and_not(api, alice, repo_name, cache, fmt, ext, to_bytes):
    repo = make(api, repo_name, {f"data/{s}.{ext}": to_bytes(r) for s, r in ROWS.items()})
    ds = datasets.load_dataset(repo, token=alice, cache_dir=cache)
    assert set(ds) == {"train", "test"}
    for split, rows in ROWS.items():
        assert rows_of(ds[split]) == rows, f"{fmt} {split}"
    streamed = datasets.load_dataset(repo, token=alice, streaming=True)
    assert rows_of(streamed["train"]) == ROWS["train"]
    assert rows_of(streamed["test"].take(3)) == ROWS["test"][:3]
    check_viewer(repo, alice, ROWS)


def test_pandas_reads_hf_urls(api, alice, repo_name, monkeypatch):
    import pandas as pd

    monkeypatch.setenv("HF_TOKEN", alice)
    repo = make(api, repo_name, {"train.csv": csv_bytes(ROWS["train"])})
    df = pd.read_csv(f"hf://datasets/{repo}/train.csv", storage_options={"token": alice})
    assert df.to_dict("records") == ROWS["train"]


def test_readme_configs(api, alice, repo_name, cache):
    readme = """---
configs:
- config_name: en
  data_files:
  - split: train
    path: en/*.csv
- config_name: fr
  data_files:
  - split: train
    path: fr/*.csv
  default: true
---
# Reviews in two languages
"""
    en = [{"text": "good", "label": 1}, {"text": "bad", "label": 0}]
    fr = [{"text": "bon", "label": 1}, {"text": "mauvais", "label": 0}, {"text": "moyen", "label": 1}]
    repo = make(api, repo_name, {"README.md": readme.encode(), "en/a.csv": csv_bytes(en), "fr/a.csv": csv_bytes(fr)})
    assert rows_of(datasets.load_dataset(repo, "en", token=alice, cache_dir=cache)["train"]) == en
    assert rows_of(datasets.load_dataset(repo, "fr", token=alice, cache_dir=cache)["train"]) == fr
    # The default config is the one marked default.
    assert rows_of(datasets.load_dataset(repo, token=alice, cache_dir=cache)["train"]) == fr
    assert sorted(datasets.get_dataset_config_names(repo, token=alice)) == ["en", "fr"]
    check_viewer(repo, alice, {"train": en}, config="en")
    check_viewer(repo, alice, {"train": fr}, config="fr")
    status, v = viewer("splits", alice, dataset=repo)
    assert [s["config"] for s in v["splits"]] == ["fr", "en"], v


def test_private_and_gated(api, alice, bob, repo_name, cache):
    private = make(api, repo_name, {"data/train.jsonl": jsonl_bytes(ROWS["train"])}, private=True)
    assert rows_of(datasets.load_dataset(private, token=alice, cache_dir=cache)["train"]) == ROWS["train"]
    # (A cache of its own: given a cached copy, `datasets` falls back to it when
    # the hub says the repo is not there.)
    assert viewer("rows", alice, dataset=private, config="default", split="train", length=5)[1]["rows"][0]["row"] == ROWS["train"][0]
    assert viewer("rows", bob, dataset=private, config="default", split="train")[0] == 404
    assert viewer("rows", None, dataset=private, config="default", split="train")[0] in (401, 404)
    with pytest.raises(Exception) as e:
        datasets.load_dataset(private, token=bob, cache_dir=cache + "-bob")
    assert "doesn't exist" in str(e.value) or "not found" in str(e.value).lower(), e.value

    gated = make(api, repo_name + "-gated", {"data/train.jsonl": jsonl_bytes(ROWS["test"])})
    api.update_repo_settings(gated, repo_type="dataset", gated="manual")
    assert rows_of(datasets.load_dataset(gated, token=alice, cache_dir=cache)["train"]) == ROWS["test"]
    assert viewer("rows", bob, dataset=gated, config="default", split="train")[0] == 403
    with pytest.raises(Exception) as e:
        datasets.load_dataset(gated, token=bob, cache_dir=cache + "-bob2")
    assert "gated" in str(e.value).lower(), e.value


def test_ten_thousand_files(api, alice, repo_name, tmp_path, cache):
    folder = tmp_path / "many"
    (folder / "data").mkdir(parents=True)
    for i in range(10_000):
        (folder / "data" / f"part-{i:05d}.jsonl").write_bytes(jsonl_bytes([{"text": f"row {i}", "label": i % 2}]))
    api.create_repo(repo_name, repo_type="dataset")
    api.upload_folder(repo_id=repo_name, repo_type="dataset", folder_path=folder)
    streamed = datasets.load_dataset(repo_name, token=alice, streaming=True)
    first = rows_of(streamed["train"].take(5))
    assert first == [{"text": f"row {i}", "label": i % 2} for i in range(5)]
    # Every file is listed: the builder resolved all 10,000 data files.
    builder = datasets.load_dataset_builder(repo_name, token=alice, cache_dir=cache)
    files = builder.config.data_files["train"]
    assert len(files) == 10_000
