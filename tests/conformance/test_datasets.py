"""Datasets as a new user of the `datasets` library reads them, with only
HF_ENDPOINT and a token set: CSV, JSON Lines and Parquet repos with splits by
file name, streamed and not; pandas through hf://; a README `configs:` block;
private and gated datasets; a 10,000-file dataset. Rows are compared with the
source."""

import csv
import io
import json

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


def test_private_and_gated(api, alice, bob, repo_name, cache):
    private = make(api, repo_name, {"data/train.jsonl": jsonl_bytes(ROWS["train"])}, private=True)
    assert rows_of(datasets.load_dataset(private, token=alice, cache_dir=cache)["train"]) == ROWS["train"]
    # (A cache of its own: given a cached copy, `datasets` falls back to it when
    # the hub says the repo is not there.)
    with pytest.raises(Exception) as e:
        datasets.load_dataset(private, token=bob, cache_dir=cache + "-bob")
    assert "doesn't exist" in str(e.value) or "not found" in str(e.value).lower(), e.value

    gated = make(api, repo_name + "-gated", {"data/train.jsonl": jsonl_bytes(ROWS["test"])})
    api.update_repo_settings(gated, repo_type="dataset", gated="manual")
    assert rows_of(datasets.load_dataset(gated, token=alice, cache_dir=cache)["train"]) == ROWS["test"]
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
