"""transformers 5.24 (no PyTorch) loads configs and tokenizers from Paddock
with HF_ENDPOINT set, by repo id and by revision."""

import json

from conftest import ENDPOINT
from huggingface_hub import HfApi


def _tiny_bert(path):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "paddock", "##s", "!"]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (path / "config.json").write_text(json.dumps({
        "architectures": ["BertModel"], "model_type": "bert", "hidden_size": 8, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": 16, "vocab_size": len(vocab), "max_position_embeddings": 32,
    }))
    (path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "model_max_length": 32, "tokenizer_class": "BertTokenizer"}))
    (path / "special_tokens_map.json").write_text(json.dumps({"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]"}))


def test_auto_config_and_tokenizer(alice, tmp_path):
    from transformers import AutoConfig, AutoTokenizer

    api = HfApi(endpoint=ENDPOINT, token=alice)
    repo = api.create_repo("alice/tiny-bert", exist_ok=True).repo_id
    src = tmp_path / "src"
    src.mkdir()
    _tiny_bert(src)
    first = api.upload_folder(repo_id=repo, folder_path=src, commit_message="tiny bert").oid
    cfg = json.loads((src / "config.json").read_text())
    cfg["hidden_size"] = 16
    api.upload_file(path_or_fileobj=json.dumps(cfg).encode(), path_in_repo="config.json", repo_id=repo)

    cache = str(tmp_path / "cache")
    config = AutoConfig.from_pretrained(repo, token=alice, cache_dir=cache)
    assert config.model_type == "bert" and config.hidden_size == 16
    old = AutoConfig.from_pretrained(repo, revision=first, token=alice, cache_dir=cache)
    assert old.hidden_size == 8
    tok = AutoTokenizer.from_pretrained(repo, token=alice, cache_dir=cache)
    ids = tok("hello paddock world!")["input_ids"]
    assert ids == [2, 5, 7, 6, 9, 3]
    tok_old = AutoTokenizer.from_pretrained(repo, revision=first, token=alice, cache_dir=cache)
    assert tok_old("hello")["input_ids"] == [2, 5, 3]
