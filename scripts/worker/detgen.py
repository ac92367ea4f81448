"""Deterministic fixture weights, bit-identical to hub-worker's `src/fixtures.rs`.

Element k of tensor `name` is offset + scale * u, u in [-1, 1) from the top 24 bits of
splitmix64(fnv1a64(name) + k); (offset, scale) follow init_rule. Everything is integer
arithmetic or a single IEEE double operation, so numpy and Rust agree exactly.
"""
import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np

M64 = (1 << 64) - 1


def fnv1a64(s: str) -> int:
    h = 0xCBF29CE484222325
    for b in s.encode():
        h ^= b
        h = (h * 0x100000001B3) & M64
    return h


def splitmix64_np(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def init_rule(name: str, shape) -> tuple:
    if name.endswith("LayerNorm.weight") or name.endswith("layer_norm.weight"):
        return 1.0, 0.1
    if name.endswith(".bias"):
        return 0.0, 0.02
    if "embeddings" in name:
        return 0.0, 0.1
    fan_in = max(shape[1] if len(shape) > 1 else 1, 1)
    return 0.0, 1.0 / math.sqrt(fan_in)


def det_tensor(name: str, shape) -> np.ndarray:
    offset, scale = init_rule(name, shape)
    n = int(np.prod(shape)) if len(shape) else 1
    seed = np.uint64(fnv1a64(name))
    with np.errstate(over="ignore"):
        k = np.arange(n, dtype=np.uint64) + seed
    u = (splitmix64_np(k) >> np.uint64(40)).astype(np.float64) / float(1 << 24) * 2.0 - 1.0
    return (offset + scale * u).astype(np.float32).reshape(shape)


def weights_digest(tensors: dict) -> str:
    """sha256 over name, NUL, Rust-Debug shape, little-endian bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name])
        h.update(name.encode())
        h.update(b"\0")
        h.update(("[" + ", ".join(str(d) for d in arr.shape) + "]").encode())
        h.update(arr.astype(arr.dtype.newbyteorder("<")).tobytes())
    return h.hexdigest()


def copy_tokenizer(src: Path, dst: Path) -> None:
    for f in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"]:
        if (src / f).is_file():
            shutil.copy(src / f, dst / f)


def label_maps(labels):
    return ({str(i): l for i, l in enumerate(labels)}, {l: i for i, l in enumerate(labels)})


def self_test() -> None:
    # Same pins as src/fixtures.rs.
    assert int(splitmix64_np(np.array([0], dtype=np.uint64))[0]) == 0xE220A8397B1DCDAF
    assert fnv1a64("a") == 0xAF63DC4C8601EC8C


def write_config(path: Path, cfg: dict) -> None:
    path.write_text(json.dumps(cfg, indent=2))
