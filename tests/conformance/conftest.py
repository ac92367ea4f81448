"""Shared fixtures: the hub under test is started by tests/conformance/run.sh,
which exports HF_ENDPOINT and tokens before Python (and so huggingface_hub,
which reads HF_ENDPOINT at import time) starts."""

import hashlib
import os
import uuid

import pytest

ENDPOINT = os.environ["HF_ENDPOINT"]


def token(name: str) -> str:
    return os.environ[f"PADDOCK_TOKEN_{name.upper()}"]


@pytest.fixture(scope="session")
def alice():
    return token("alice")


@pytest.fixture(scope="session")
def bob():
    return token("bob")


@pytest.fixture(scope="session")
def alice_ro():
    return token("alice_ro")


@pytest.fixture(scope="session")
def api(alice):
    from huggingface_hub import HfApi

    return HfApi(endpoint=ENDPOINT, token=alice)


@pytest.fixture
def repo_name():
    return f"alice/t-{uuid.uuid4().hex[:10]}"


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_random(path, size: int, seed: int):
    """Deterministic pseudo-random bytes, written in chunks (never all in memory)."""
    import random

    rng = random.Random(seed)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 4 << 20)
            f.write(rng.randbytes(n))
            left -= n
