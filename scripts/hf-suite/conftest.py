"""Fixtures of huggingface_hub's test suite, for the run against Paddock.

The 2.4.0 sdist ships tests/test_*.py but not tests/conftest.py, so
scripts/hf-suite/run.sh puts this file in its place. It provides only what
the hub-facing test files use: a private cache per test, the `api`, `repo_factory`
and `new_repo_id` fixtures against the hub under test, and the `xet` /
`no_xet` markers. Tests marked `production` read huggingface.co and are on
out-of-scope.txt, so nothing here points at production.
"""

import uuid
from typing import Protocol

import pytest

from huggingface_hub import HfApi, RepoUrl, constants
from huggingface_hub.utils._runtime import is_package_available

from . import testing_utils
from .testing_constants import ENDPOINT_PRODUCTION, ENDPOINT_STAGING, TOKEN, USER

_upstream_repo_name = testing_utils.repo_name


def _repo_name(id=None, prefix="repo"):
    """Upstream's `repo_name`, with a random part even when the test names its own `id`.
    Upstream makes such a name unique by a timestamp in 0.1 ms units; run.sh's two passes
    call it at once against one hub, and on 7 Dec both created
    `repo-create_commit_delete_folder-<same tick>` (409 for the second). Test modules
    import `repo_name` after this conftest, so they get this one."""
    if id is None:
        return _upstream_repo_name(prefix=prefix)
    return _upstream_repo_name(id=f"{id}-{uuid.uuid4().hex[:6]}", prefix=prefix)


testing_utils.repo_name = _repo_name
repo_name = _repo_name


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test starts with empty caches and no stored token."""
    home = tmp_path / "hf-home"
    for name, sub in [
        ("HF_HOME", ""),
        ("HF_HUB_CACHE", "hub"),
        ("HUGGINGFACE_HUB_CACHE", "hub"),
        ("HF_XET_CACHE", "xet"),
        ("HF_ASSETS_CACHE", "assets"),
        ("HF_TOKEN_PATH", "token"),
        ("HF_STORED_TOKENS_PATH", "stored_tokens"),
    ]:
        monkeypatch.setattr(constants, name, str(home / sub) if sub else str(home))
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_EXPERIMENTAL_WARNING", True)


@pytest.fixture(autouse=True)
def reset_oauth_refresh_state():
    """`get_token()` caches its OAuth refresh decision process-wide."""
    from huggingface_hub.utils import _auth

    _auth._OAUTH_REFRESH_CACHE = None
    _auth._OAUTH_REFRESH_WARNED = False


@pytest.fixture(autouse=True)
def xet_mode(request, monkeypatch):
    """`xet` tests run with Xet enabled; `no_xet` tests only where it is off.

    run.sh selects them per pass (`-m`), so a mismatch here is a harness bug.
    """
    if request.node.get_closest_marker("xet") is not None:
        if not is_package_available("hf_xet"):
            pytest.fail("a `xet` test ran without hf_xet: run.sh should have deselected it")
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", False)
        monkeypatch.delenv("HF_HUB_DISABLE_XET", raising=False)
    elif request.node.get_closest_marker("no_xet") is not None:
        if is_package_available("hf_xet") and not constants.HF_HUB_DISABLE_XET:
            pytest.fail("a `no_xet` test ran with Xet on: run.sh should have deselected it")


@pytest.fixture(scope="session")
def api() -> HfApi:
    return HfApi(endpoint=ENDPOINT_STAGING, token=TOKEN)


@pytest.fixture(scope="session")
def api_prod() -> HfApi:
    return HfApi(endpoint=ENDPOINT_PRODUCTION)


class RepoFactory(Protocol):
    """Type of `repo_factory` (the tests import it for annotations)."""

    def __call__(self, repo_type: str = "model", **kwargs) -> RepoUrl: ...


@pytest.fixture
def new_repo_id(api):
    """A repo id of USER that does not exist yet; deleted after the test."""
    repo_id = f"{USER}/{repo_name()}"
    yield repo_id
    api.delete_repo(repo_id=repo_id, missing_ok=True)


@pytest.fixture
def repo_factory(api):
    """Create repos on the hub under test; delete them when the test ends."""
    created = []

    def make(repo_type: str = "model", **kwargs):
        if repo_type == "space":
            kwargs.setdefault("space_sdk", "gradio")
        kwargs.setdefault("repo_id", repo_name(prefix=repo_type))
        url = api.create_repo(repo_type=repo_type, **kwargs)
        created.append((url.repo_id, repo_type, kwargs.get("token")))
        return url

    yield make
    for repo_id, repo_type, token in created:
        try:
            api.delete_repo(repo_id=repo_id, repo_type=repo_type, token=token)
        except Exception:
            pass


def pytest_configure(config):
    # pytest-vcr registers this marker upstream; its cassettes are not in the
    # sdist, so the one test that uses it is on out-of-scope.txt.
    config.addinivalue_line("markers", "vcr: replays recorded HTTP (pytest-vcr)")
