#!/usr/bin/env python3
"""Makes the fixture text classifier and fixtures/worker/classifier-reference.json.

The classifier is all-MiniLM-L6-v2's BERT weights under a `bert.` prefix plus a
deterministic `bert.pooler.dense` and a 3-label `classifier` (BertForSequenceClassification,
id2label negative/neutral/positive). The weights are NOT checked in: hub-worker's
`fixtures::make_classifier` rebuilds them bit for bit from the MiniLM fixture (the
reference records a digest of the tensors so a test can prove that). The reference holds
PyTorch's logits for a few inputs.

Run once in the throwaway venv of make-reference.py:

    /tmp/st-venv/bin/python scripts/worker/make-classifier.py [OUT_DIR]
"""
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
import transformers
from safetensors.numpy import load_file, save_file
from transformers import AutoTokenizer, BertForSequenceClassification

sys.path.insert(0, str(Path(__file__).resolve().parent))
import detgen  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "fixtures" / "worker" / "classifier-reference.json"
LABELS = ["negative", "neutral", "positive"]

INPUTS = [
    "I love this movie!",
    "This was the worst customer service I have ever experienced.",
    "The package arrived on Tuesday.",
    "ok",
    "Paddock hosts models and serves them as per-tenant inference endpoints.",
    "¿Dónde está la estación de tren?",
    ["How do I reset my password?", "Click 'forgot password' on the login page."],
    ["A man is playing a guitar.", "Nobody is making any music."],
]


def build(minilm: Path, out: Path) -> str:
    out.mkdir(parents=True, exist_ok=True)
    src = load_file(str(minilm / "model.safetensors"))
    tensors = {f"bert.{k}": v for k, v in src.items() if k != "embeddings.position_ids"}
    cfg = json.loads((minilm / "config.json").read_text())
    h = cfg["hidden_size"]
    for name, shape in [("bert.pooler.dense.weight", [h, h]), ("bert.pooler.dense.bias", [h]),
                        ("classifier.weight", [3, h]), ("classifier.bias", [3])]:
        tensors[name] = detgen.det_tensor(name, shape)
    save_file(tensors, str(out / "model.safetensors"))
    id2label, label2id = detgen.label_maps(LABELS)
    cfg.update({"architectures": ["BertForSequenceClassification"], "id2label": id2label,
                "label2id": label2id})
    detgen.write_config(out / "config.json", cfg)
    detgen.copy_tokenizer(minilm, out)
    return detgen.weights_digest(tensors)


def main() -> int:
    detgen.self_test()
    minilm = os.environ.get("PADDOCK_MINILM_DIR")
    if not minilm:
        print("set PADDOCK_MINILM_DIR (scripts/worker/fetch-fixtures.sh prints it)", file=sys.stderr)
        return 2
    out_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "target" / "fixtures" / "minilm-classifier"
    digest = build(Path(minilm), out_dir)
    torch.set_num_threads(2)
    model = BertForSequenceClassification.from_pretrained(str(out_dir)).eval()
    tok = AutoTokenizer.from_pretrained(str(out_dir))
    rows = []
    for inp in INPUTS:
        if isinstance(inp, list):
            enc = tok(inp[0], inp[1], return_tensors="pt", truncation=True, max_length=512)
        else:
            enc = tok(inp, return_tensors="pt", truncation=True, max_length=512)
        with torch.no_grad():
            logits = model(**enc).logits[0].tolist()
        rows.append({"input": inp, "tokens": int(enc["input_ids"].shape[1]),
                     "logits": [round(x, 7) for x in logits]})
    OUT.write_text(json.dumps({
        "made_by": "scripts/worker/make-classifier.py",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "labels": LABELS,
        "weights_digest": digest,
        "head": "bert.pooler.dense + tanh + classifier on [CLS]; weights from detgen.det_tensor",
        "inputs": rows,
    }, ensure_ascii=False, indent=1) + "\n")
    print(f"wrote {OUT}; model in {out_dir}; digest {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
