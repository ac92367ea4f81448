"""A folder of many small files through the client's resumable, multi-commit
upload (issue 17). In huggingface_hub 2.x, `upload_folder` with hf_xet
installed *is* that path (1.x called it `upload_large_folder`): it asks
`preupload` about 256 files at a time, commits in adaptive batches (250
files, then more after fast commits; later commits are titled "(part N)"),
and resumes an interrupted run by skipping files whose remote oid (from
`preupload`) matches the local one. Run by run.sh with Xet enabled (the
client's default); the 100,000-file run is scripts/bench/large_folder.sh.
"""

import hashlib
import os

from conftest import ENDPOINT
from huggingface_hub import HfApi, RepoFile, hf_hub_download
from huggingface_hub.utils._runtime import is_xet_available

N = 2_000


def make_folder(root, n):
    """{path in repo: bytes}: n small text files in folders of 100, and a README."""
    files = {"README.md": b"---\nlicense: mit\n---\n# Many small files\n"}
    for i in range(n - 1):
        files[f"data/{i // 100:03d}/row-{i:05d}.txt"] = f"row {i}\n".encode() * (1 + i % 7)
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return files


def git_blob_id(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def test_upload_folder_of_2000_files_commits_in_parts_and_resumes(alice, repo_name, tmp_path):
    assert is_xet_available(), "run with hf_xet installed and Xet enabled (run.sh's second pass)"
    api = HfApi(endpoint=ENDPOINT, token=alice)
    src = tmp_path / "src"
    files = make_folder(src, N)
    api.create_repo(repo_name)

    # An earlier run that stopped after two folders.
    first = api.upload_folder(repo_id=repo_name, folder_path=src, allow_patterns=["data/000/*", "data/001/*"])
    before = {c.commit_id for c in api.list_repo_commits(repo_name)}

    # The whole folder: what the earlier run committed is skipped, the rest
    # comes in several commits.
    done = api.upload_folder(repo_id=repo_name, folder_path=src, commit_message="many files")
    commits = [c for c in api.list_repo_commits(repo_name) if c.commit_id not in before]
    assert len(commits) >= 3, [c.title for c in commits]
    titles = sorted(c.title for c in commits)
    assert titles[0] == "many files" and all(t.startswith("many files (part ") for t in titles[1:]), titles
    assert commits[0].commit_id == done.oid  # newest first

    # Every file once, with its git blob id and size.
    listed = {}
    for e in api.list_repo_tree(repo_name, recursive=True):
        if isinstance(e, RepoFile):
            assert e.path not in listed, e.path
            listed[e.path] = e
    assert set(listed) == set(files) | {".gitattributes"}
    for path, data in files.items():
        assert listed[path].blob_id == git_blob_id(data), path
        assert listed[path].size == len(data), path
        assert listed[path].lfs is None, path

    # The files of the earlier run were not committed again.
    info = {p.path: p for p in api.get_paths_info(repo_name, ["data/000/row-00000.txt", "data/005/row-00500.txt"], expand=True)}
    assert info["data/000/row-00000.txt"].last_commit.oid == first.oid
    assert info["data/005/row-00500.txt"].last_commit.oid in {c.commit_id for c in commits}

    # Running it again finds nothing to do: no new commit.
    again = api.upload_folder(repo_id=repo_name, folder_path=src, commit_message="again")
    assert again.oid == done.oid
    assert api.list_repo_commits(repo_name)[0].commit_id == done.oid

    for path in ["README.md", "data/000/row-00000.txt", f"data/{(N - 2) // 100:03d}/row-{N - 2:05d}.txt"]:
        got = hf_hub_download(repo_name, path, cache_dir=str(tmp_path / "c"), token=alice)
        with open(got, "rb") as f:
            assert f.read() == files[path], path
    assert os.path.getsize(got) == len(files[path])
