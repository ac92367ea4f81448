#!/usr/bin/env python3
"""Makes fixtures/worker/tiny-reference.json: PyTorch outputs of tiny deterministic
DistilBERT and XLM-RoBERTa classifiers (tokenizer: the MiniLM fixture's), so hub-worker's
engine is checked on architectures beyond BERT. The models are rebuilt bit for bit by
`fixtures::make_tiny` in Rust; the digests prove it.

    /tmp/st-venv/bin/python scripts/worker/make-tiny-references.py
"""
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
import transformers
from safetensors.numpy import save_file
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import detgen  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "fixtures" / "worker" / "tiny-reference.json"
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "ok",
    "Paddock serves models as per-tenant inference endpoints, quickly and cheaply.",
    "¿Dónde está la estación de tren?",
]
H, F, LAYERS = 32, 64, 2


def tiny_config(model_type: str, vocab: int) -> dict:
    id2label, label2id = detgen.label_maps(["no", "yes"])
    if model_type == "distilbert":
        return {"model_type": "distilbert", "architectures": ["DistilBertForSequenceClassification"],
                "vocab_size": vocab, "dim": 32, "n_layers": 2, "n_heads": 4, "hidden_dim": 64,
                "max_position_embeddings": 64, "activation": "gelu", "pad_token_id": 0,
                "sinusoidal_pos_embds": False, "dropout": 0.0, "attention_dropout": 0.0,
                "seq_classif_dropout": 0.0, "id2label": id2label, "label2id": label2id}
    return {"model_type": "xlm-roberta", "architectures": ["XLMRobertaForSequenceClassification"],
            "vocab_size": vocab, "hidden_size": 32, "num_hidden_layers": 2,
            "num_attention_heads": 4, "intermediate_size": 64, "max_position_embeddings": 66,
            "type_vocab_size": 1, "layer_norm_eps": 1e-5, "pad_token_id": 0, "bos_token_id": 101,
            "eos_token_id": 102, "hidden_act": "gelu", "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0, "id2label": id2label, "label2id": label2id}


def shapes(model_type: str, vocab: int):
    lin = lambda p, o, i: [(f"{p}.weight", [o, i]), (f"{p}.bias", [o])]  # noqa: E731
    ln = lambda p: [(f"{p}.weight", [H]), (f"{p}.bias", [H])]  # noqa: E731
    v = []
    if model_type == "distilbert":
        v += [("distilbert.embeddings.word_embeddings.weight", [vocab, H]),
              ("distilbert.embeddings.position_embeddings.weight", [64, H])]
        v += ln("distilbert.embeddings.LayerNorm")
        for i in range(LAYERS):
            p = f"distilbert.transformer.layer.{i}"
            for n in ["q_lin", "k_lin", "v_lin", "out_lin"]:
                v += lin(f"{p}.attention.{n}", H, H)
            v += ln(f"{p}.sa_layer_norm") + lin(f"{p}.ffn.lin1", F, H) + lin(f"{p}.ffn.lin2", H, F)
            v += ln(f"{p}.output_layer_norm")
        v += lin("pre_classifier", H, H) + lin("classifier", 2, H)
    else:
        v += [("roberta.embeddings.word_embeddings.weight", [vocab, H]),
              ("roberta.embeddings.position_embeddings.weight", [66, H]),
              ("roberta.embeddings.token_type_embeddings.weight", [1, H])]
        v += ln("roberta.embeddings.LayerNorm")
        for i in range(LAYERS):
            p = f"roberta.encoder.layer.{i}"
            for n in ["query", "key", "value"]:
                v += lin(f"{p}.attention.self.{n}", H, H)
            v += lin(f"{p}.attention.output.dense", H, H) + ln(f"{p}.attention.output.LayerNorm")
            v += lin(f"{p}.intermediate.dense", F, H) + lin(f"{p}.output.dense", H, F)
            v += ln(f"{p}.output.LayerNorm")
        v += lin("classifier.dense", H, H) + lin("classifier.out_proj", 2, H)
    return v


def main() -> int:
    detgen.self_test()
    minilm = os.environ.get("PADDOCK_MINILM_DIR")
    if not minilm:
        print("set PADDOCK_MINILM_DIR (scripts/worker/fetch-fixtures.sh prints it)", file=sys.stderr)
        return 2
    minilm = Path(minilm)
    vocab = len(json.loads((minilm / "tokenizer.json").read_text())["model"]["vocab"])
    torch.set_num_threads(2)
    result = {"made_by": "scripts/worker/make-tiny-references.py",
              "transformers": transformers.__version__, "torch": torch.__version__,
              "pooling": "mean over attention mask, not normalised", "models": {}}
    for model_type in ["distilbert", "xlm-roberta"]:
        out = ROOT / "target" / "fixtures" / f"tiny-{model_type}"
        out.mkdir(parents=True, exist_ok=True)
        tensors = {n: detgen.det_tensor(n, s) for n, s in shapes(model_type, vocab)}
        save_file(tensors, str(out / "model.safetensors"))
        detgen.write_config(out / "config.json", tiny_config(model_type, vocab))
        detgen.copy_tokenizer(minilm, out)
        tok = AutoTokenizer.from_pretrained(str(out))
        cls = AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
        base = AutoModel.from_pretrained(str(out)).eval()
        enc = tok(SENTENCES, padding=True, truncation=True, max_length=60, return_tensors="pt")
        with torch.no_grad():
            logits = cls(**enc).logits.tolist()
            hidden = base(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        pooled = ((hidden * mask).sum(1) / mask.sum(1)).tolist()
        result["models"][model_type] = {
            "weights_digest": detgen.weights_digest(tensors),
            "sentences": [{"text": s, "logits": [round(x, 7) for x in lg],
                           "mean_pooled": [round(x, 7) for x in pl]}
                          for s, lg, pl in zip(SENTENCES, logits, pooled)],
        }
    OUT.write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
