#!/usr/bin/env python3
"""Real clients against a hub-worker HTTP API: huggingface_hub.InferenceClient
(feature_extraction, sentence_similarity, text_classification) and the openai package
(embeddings, float and base64), compared with the checked-in references.

    python scripts/worker/check-clients.py BASE_URL EMBED_KEY CLASSIFY_KEY [SECRET]

BASE_URL is the worker (or a gateway endpoint prefix) such that BASE_URL/models/KEY serves.
"""
import json
import sys
from pathlib import Path

import numpy as np
from huggingface_hub import InferenceClient
from openai import OpenAI

ROOT = Path(__file__).resolve().parents[2]


def cos(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def main() -> int:
    base, ekey, ckey = sys.argv[1], sys.argv[2], sys.argv[3]
    secret = sys.argv[4] if len(sys.argv) > 4 else "unused"
    ref = json.loads((ROOT / "fixtures/worker/minilm-reference.json").read_text())
    sents = [s["text"] for s in ref["sentences"]]
    want = [s["embedding"] for s in ref["sentences"]]

    hf = InferenceClient(base_url=f"{base}/models/{ekey}", token=secret)
    one = hf.feature_extraction(sents[0])
    assert one.shape == (1, 384), one.shape
    assert cos(one[0], want[0]) >= 0.9999
    many = hf.feature_extraction(sents)
    assert many.shape == (len(sents), 384), many.shape
    worst = min(cos(g, w) for g, w in zip(many, want))
    assert worst >= 0.9999, worst
    sims = hf.sentence_similarity(sents[0], other_sentences=[sents[0], sents[1]])
    assert len(sims) == 2 and abs(sims[0] - 1.0) < 1e-4, sims
    print(f"InferenceClient feature_extraction/sentence_similarity ok (min cosine {worst:.6f})")

    oa = OpenAI(base_url=f"{base}/models/{ekey}/v1", api_key=secret)
    r = oa.embeddings.create(model="minilm", input=sents)  # the client asks for base64
    assert len(r.data) == len(sents) and r.usage.prompt_tokens > 0
    worst = min(cos(d.embedding, w) for d, w in zip(r.data, want))
    assert worst >= 0.9999, worst
    r = oa.embeddings.create(model="minilm", input=sents[0], encoding_format="float")
    assert cos(r.data[0].embedding, want[0]) >= 0.9999
    assert oa.models.list().data[0].object == "model"
    print(f"openai embeddings ok (min cosine {worst:.6f}, usage {r.usage.prompt_tokens})")

    cref = json.loads((ROOT / "fixtures/worker/classifier-reference.json").read_text())
    hc = InferenceClient(base_url=f"{base}/models/{ckey}", token=secret)
    row = cref["inputs"][0]
    out = hc.text_classification(row["input"])
    logits = np.asarray(row["logits"], dtype=np.float64)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    best = int(probs.argmax())
    assert out[0].label == cref["labels"][best], out
    assert abs(out[0].score - probs[best]) < 1e-4, (out, probs)
    assert len(hc.text_classification(row["input"], top_k=1)) == 1
    print(f"InferenceClient text_classification ok ({out[0].label} {out[0].score:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
