"""The client's default configuration (hf_xet installed, Xet not disabled):
small-file uploads go inline and every download works over plain HTTP,
because the hub never advertises Xet."""

import os

from conftest import ENDPOINT, write_random
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.utils._runtime import is_xet_available


def test_xet_is_really_enabled():
    assert os.environ.get("HF_HUB_DISABLE_XET") is None
    assert is_xet_available()


def test_small_uploads_and_downloads(alice, tmp_path):
    api = HfApi(endpoint=ENDPOINT, token=alice)
    repo = api.create_repo("alice/xet-default", exist_ok=True).repo_id
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text('{"a": 1}')
    (src / "notes.md").write_text("# small text files go inline\n")
    api.upload_folder(repo_id=repo, folder_path=src)
    out = snapshot_download(repo, cache_dir=str(tmp_path / "c"), token=alice)
    assert open(os.path.join(out, "notes.md")).read().startswith("# small")


def test_large_file_downloads_without_xet(alice, tmp_path):
    # Upload a large file through the legacy path in a child process, then
    # download it here with Xet enabled: the hub serves it over plain HTTP.
    import subprocess
    import sys

    big = tmp_path / "big.bin"
    write_random(big, 12_000_000, seed=7)
    code = (
        "from huggingface_hub import HfApi;"
        f"a=HfApi(endpoint={ENDPOINT!r}, token={alice!r});"
        "a.create_repo('alice/xet-large', exist_ok=True);"
        f"a.upload_file(path_or_fileobj={str(big)!r}, path_in_repo='big.bin', repo_id='alice/xet-large')"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ, HF_HUB_DISABLE_XET="1"))
    path = hf_hub_download("alice/xet-large", "big.bin", cache_dir=str(tmp_path / "c"), token=alice)
    assert open(path, "rb").read() == big.read_bytes()
