"""huggingface_hub 2.4.0 against Paddock, unchanged but for HF_ENDPOINT and a
token (legacy LFS upload path: HF_HUB_DISABLE_XET=1)."""

import filecmp
import os
import uuid

import pytest
from conftest import ENDPOINT, sha256_file, write_random
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)


def test_whoami(api):
    me = api.whoami()
    assert me["name"] == "alice"
    assert me["auth"]["accessToken"]["role"] == "write"


def test_create_repo_kinds(api, repo_name):
    url = api.create_repo(repo_name)
    assert url == f"{ENDPOINT}/{repo_name}"
    assert url.repo_id == repo_name
    # exist_ok swallows the 409; without it the client raises.
    api.create_repo(repo_name, exist_ok=True)
    with pytest.raises(HfHubHTTPError):
        api.create_repo(repo_name)
    private = api.create_repo(repo_name + "-p", private=True)
    assert api.model_info(private.repo_id).private is True
    ds = api.create_repo(repo_name + "-d", repo_type="dataset")
    assert ds == f"{ENDPOINT}/datasets/{repo_name}-d"
    info = api.dataset_info(ds.repo_id)
    assert info.id == ds.repo_id and len(info.sha) == 40


def test_upload_folder_small_large_and_multipart(api, repo_name, tmp_path):
    src = tmp_path / "src"
    (src / "nested" / "deeper").mkdir(parents=True)
    (src / "README.md").write_text("---\nlicense: mit\ntags:\n- conformance\npipeline_tag: feature-extraction\n---\n# Test\n")
    (src / "config.json").write_text('{"architectures": ["BertModel"], "model_type": "bert"}')
    (src / "nested" / "a b.txt").write_text("spaces")
    (src / "nested" / "deeper" / "\u00e9t\u00e9 \u6587.txt").write_text("unicode")
    (src / "tiny.bin").write_bytes(b"\x00\x01\x02")
    write_random(src / "eleven.bin", 11_000_000, seed=1)
    write_random(src / "nested" / "big.dat", 110_000_000, seed=2)  # > 100 MB: multipart
    api.create_repo(repo_name)
    info = api.upload_folder(repo_id=repo_name, folder_path=src, commit_message="upload folder")
    assert len(info.oid) == 40

    model = api.model_info(repo_name, files_metadata=True)
    assert model.sha == info.oid
    assert model.card_data["license"] == "mit"
    assert model.pipeline_tag == "feature-extraction"
    by_name = {s.rfilename: s for s in model.siblings}
    assert by_name["nested/big.dat"].lfs.sha256 == sha256_file(src / "nested" / "big.dat")
    assert by_name["nested/big.dat"].size == 110_000_000
    assert by_name["eleven.bin"].lfs is not None
    assert by_name["config.json"].lfs is None

    # snapshot_download gives back exactly the source.
    out = snapshot_download(repo_name, cache_dir=str(tmp_path / "cache"), token=api.token)
    for root, _, files in os.walk(src):
        for f in files:
            rel = os.path.relpath(os.path.join(root, f), src)
            assert filecmp.cmp(os.path.join(src, rel), os.path.join(out, rel), shallow=False), rel

    # Tree and files listings.
    files = api.list_repo_files(repo_name)
    assert "nested/deeper/\u00e9t\u00e9 \u6587.txt" in files and ".gitattributes" in files
    tree = list(api.list_repo_tree(repo_name, path_in_repo="nested"))
    assert {t.path for t in tree} == {"nested/a b.txt", "nested/big.dat", "nested/deeper"}
    recursive = list(api.list_repo_tree(repo_name, recursive=True, expand=True))
    big = next(t for t in recursive if t.path == "nested/big.dat")
    assert big.lfs.sha256 == by_name["nested/big.dat"].lfs.sha256
    assert big.last_commit.oid == info.oid
    # .gitattributes covers every LFS path.
    attrs = open(hf_hub_download(repo_name, ".gitattributes", cache_dir=str(tmp_path / "c2"))).read()
    assert "*.bin filter=lfs" in attrs and "nested/big.dat filter=lfs" in attrs
    paths = api.get_paths_info(repo_name, ["config.json", "nested", "missing.txt"])
    assert sorted(p.path for p in paths) == ["config.json", "nested"]


def test_branches_tags_and_downloads_by_revision(api, repo_name, tmp_path):
    api.create_repo(repo_name)
    first = api.upload_file(path_or_fileobj=b"v1", path_in_repo="f.txt", repo_id=repo_name).oid
    api.create_branch(repo_name, branch="dev")
    api.create_branch(repo_name, branch="dev", exist_ok=True)
    dev = api.upload_file(path_or_fileobj=b"dev", path_in_repo="f.txt", repo_id=repo_name, revision="dev").oid
    api.create_tag(repo_name, tag="v1.0", revision=first)
    api.create_tag(repo_name, tag="v1.0", exist_ok=True)
    refs = api.list_repo_refs(repo_name)
    assert {b.name for b in refs.branches} == {"main", "dev"}
    assert [(t.name, t.target_commit) for t in refs.tags] == [("v1.0", first)]
    cache = str(tmp_path / "cache")
    assert open(hf_hub_download(repo_name, "f.txt", revision="dev", cache_dir=cache)).read() == "dev"
    assert open(hf_hub_download(repo_name, "f.txt", revision="v1.0", cache_dir=cache)).read() == "v1"
    assert open(hf_hub_download(repo_name, "f.txt", revision=dev, cache_dir=cache)).read() == "dev"
    assert open(hf_hub_download(repo_name, "f.txt", revision="main", cache_dir=cache)).read() == "v1"
    commits = api.list_repo_commits(repo_name, revision="dev")
    assert [c.commit_id for c in commits][:2] == [dev, first]
    assert commits[-1].title == "initial commit"
    assert api.model_info(repo_name, revision="dev").sha == dev
    api.delete_tag(repo_name, tag="v1.0")
    api.delete_branch(repo_name, branch="dev")
    assert {b.name for b in api.list_repo_refs(repo_name).branches} == {"main"}
    # A branch name with a slash travels %2F-encoded.
    api.create_branch(repo_name, branch="feature/x")
    api.upload_file(path_or_fileobj=b"fx", path_in_repo="g.txt", repo_id=repo_name, revision="feature/x")
    assert open(hf_hub_download(repo_name, "g.txt", revision="feature/x", cache_dir=cache)).read() == "fx"


def test_delete_file_keeps_old_revisions(api, repo_name, tmp_path):
    api.create_repo(repo_name)
    before = api.upload_file(path_or_fileobj=b"keep me", path_in_repo="gone.txt", repo_id=repo_name).oid
    api.delete_file("gone.txt", repo_name)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(repo_name, "gone.txt", cache_dir=str(tmp_path / "a"))
    old = hf_hub_download(repo_name, "gone.txt", revision=before, cache_dir=str(tmp_path / "b"))
    assert open(old).read() == "keep me"
    api.upload_folder(repo_id=repo_name, folder_path=_folder(tmp_path, {"d/x.txt": "x", "d/y.txt": "y"}))
    api.delete_folder("d", repo_name)
    assert not [f for f in api.list_repo_files(repo_name) if f.startswith("d/")]


def _folder(tmp_path, files):
    root = tmp_path / uuid.uuid4().hex
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


def test_create_commit_operations_and_stale_parent(api, repo_name):
    api.create_repo(repo_name)
    head = api.model_info(repo_name).sha
    c1 = api.create_commit(
        repo_name,
        operations=[CommitOperationAdd("a.txt", b"a"), CommitOperationAdd("b.txt", b"b")],
        commit_message="two files",
        parent_commit=head,
    )
    # A commit based on the old head is refused.
    with pytest.raises(HfHubHTTPError) as e:
        api.create_commit(repo_name, operations=[CommitOperationAdd("c.txt", b"c")], commit_message="stale", parent_commit=head)
    assert e.value.response.status_code == 412
    api.create_commit(repo_name, operations=[CommitOperationDelete("a.txt")], commit_message="rm", parent_commit=c1.oid)
    assert sorted(api.list_repo_files(repo_name)) == [".gitattributes", "b.txt"]


def test_error_classes(api, repo_name, tmp_path):
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("alice/does-not-exist")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("alice/does-not-exist", "x", cache_dir=str(tmp_path))
    api.create_repo(repo_name)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(repo_name, ".gitattributes", revision="nope", cache_dir=str(tmp_path))
    with pytest.raises(RevisionNotFoundError):
        api.model_info(repo_name, revision="nope")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(repo_name, "missing.bin", cache_dir=str(tmp_path))
    assert api.repo_exists(repo_name) and not api.repo_exists("alice/nope-nope")
    assert api.file_exists(repo_name, ".gitattributes") and not api.file_exists(repo_name, "x")
    assert api.revision_exists(repo_name, "main") and not api.revision_exists(repo_name, "nope")


def test_privacy_across_users(api, bob, alice_ro, repo_name, tmp_path):
    api.create_repo(repo_name, private=True)
    api.upload_file(path_or_fileobj=b"secret", path_in_repo="s.txt", repo_id=repo_name)
    other = HfApi(endpoint=ENDPOINT, token=bob)
    with pytest.raises(RepositoryNotFoundError):
        other.model_info(repo_name)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(repo_name, "s.txt", token=bob, cache_dir=str(tmp_path / "b"))
    with pytest.raises(RepositoryNotFoundError):
        other.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_name)
    assert repo_name not in [m.id for m in other.list_models(author="alice")]
    anon = HfApi(endpoint=ENDPOINT, token=False)
    with pytest.raises(RepositoryNotFoundError):
        anon.model_info(repo_name)
    # A read-only token reads but cannot write.
    ro = HfApi(endpoint=ENDPOINT, token=alice_ro)
    assert ro.model_info(repo_name).private
    with pytest.raises(HfHubHTTPError) as e:
        ro.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_name)
    assert e.value.response.status_code == 403
    # Making it public shows it to everyone.
    api.update_repo_settings(repo_name, private=False)
    assert anon.model_info(repo_name).private is False


def test_list_models_and_datasets(api, tmp_path):
    tag = uuid.uuid4().hex[:8]
    for i in range(3):
        api.create_repo(f"alice/search-{tag}-{i}")
    api.create_repo(f"alice/ds-{tag}", repo_type="dataset")
    found = [m.id for m in api.list_models(search=f"search-{tag}")]
    assert sorted(found) == [f"alice/search-{tag}-{i}" for i in range(3)]
    assert len(list(api.list_models(search=f"search-{tag}", limit=2))) == 2
    assert [d.id for d in api.list_datasets(search=f"ds-{tag}")] == [f"alice/ds-{tag}"]
    assert all(m.author == "alice" for m in api.list_models(author="alice", limit=50))
    full = list(api.list_models(search=f"search-{tag}-0", full=True))
    assert full[0].sha and [s.rfilename for s in full[0].siblings] == [".gitattributes"]


def test_delete_and_move_repo(api, repo_name):
    api.create_repo(repo_name)
    api.move_repo(repo_name, repo_name + "-moved")
    assert api.model_info(repo_name + "-moved").id == repo_name + "-moved"
    # As on the Hub, the old name redirects to the new one (the client follows it).
    assert api.model_info(repo_name).id == repo_name + "-moved"
    api.delete_repo(repo_name + "-moved")
    with pytest.raises(RepositoryNotFoundError):
        api.model_info(repo_name + "-moved")
    with pytest.raises(RepositoryNotFoundError):
        api.model_info(repo_name)
    api.delete_repo(repo_name + "-moved", missing_ok=True)


def test_hf_cli(alice, repo_name, tmp_path):
    import subprocess
    import sys

    src = tmp_path / "cli.txt"
    src.write_text("from the cli")
    env = dict(os.environ, HF_TOKEN=alice)
    hf = [sys.executable, "-m", "huggingface_hub.cli.hf"]
    HfApi(endpoint=ENDPOINT, token=alice).create_repo(repo_name)
    subprocess.run(hf + ["upload", repo_name, str(src), "cli.txt"], check=True, env=env, capture_output=True)
    out = subprocess.run(hf + ["download", repo_name, "cli.txt", "--cache-dir", str(tmp_path / "c")], check=True, env=env, capture_output=True, text=True)
    last = out.stdout.strip().splitlines()[-1].strip()
    path = last.split("path:", 1)[-1].strip()
    assert open(path).read() == "from the cli"


def test_dataset_upload_and_download(api, repo_name, tmp_path):
    repo = api.create_repo(repo_name + "-data", repo_type="dataset").repo_id
    api.upload_file(path_or_fileobj=b"a,b\n1,2\n", path_in_repo="train.csv", repo_id=repo, repo_type="dataset")
    write_random(tmp_path / "shard.parquet", 1_000_000, seed=3)
    api.upload_file(path_or_fileobj=str(tmp_path / "shard.parquet"), path_in_repo="data/shard.parquet", repo_id=repo, repo_type="dataset")
    info = api.dataset_info(repo, files_metadata=True)
    lfs = {s.rfilename: s.lfs for s in info.siblings}
    assert lfs["data/shard.parquet"] is not None and lfs["train.csv"] is None
    out = snapshot_download(repo, repo_type="dataset", cache_dir=str(tmp_path / "c"))
    assert open(os.path.join(out, "train.csv")).read() == "a,b\n1,2\n"
    assert filecmp.cmp(os.path.join(out, "data/shard.parquet"), tmp_path / "shard.parquet", shallow=False)
    # A model with the same name is a different repo.
    with pytest.raises(RepositoryNotFoundError):
        api.model_info(repo)


def test_single_segment_repo_ids(tmp_path):
    from conftest import token

    root = HfApi(endpoint=ENDPOINT, token=token("root"))
    name = f"canon{uuid.uuid4().hex[:6]}"
    # create_repo has no way to ask for a canonical repo: use the raw route (site admins only).
    import httpx2 as httpx

    resp = httpx.post(f"{ENDPOINT}/api/repos/create", json={"name": name, "canonical": True}, headers={"authorization": f"Bearer {token('root')}"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["url"] == f"{ENDPOINT}/{name}"
    # huggingface_hub 2.4 cannot parse a single-segment commitUrl (HfUriError on any
    # commit to a canonical repo, against any hub), so the commit goes in raw.
    import base64
    import json as _json

    body = "\n".join(_json.dumps(x) for x in [
        {"key": "header", "value": {"summary": "canonical"}},
        {"key": "file", "value": {"path": "weights.txt", "content": base64.b64encode(b"canonical").decode(), "encoding": "base64"}},
    ])
    resp = httpx.post(f"{ENDPOINT}/api/models/{name}/commit/main", content=body, headers={"authorization": f"Bearer {token('root')}"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["commitUrl"].startswith(f"{ENDPOINT}/{name}/commit/")
    assert root.model_info(name).id == name
    assert open(hf_hub_download(name, "weights.txt", cache_dir=str(tmp_path))).read() == "canonical"
    assert [f for f in root.list_repo_files(name)] == [".gitattributes", "weights.txt"]


def test_idle_keep_alive_connection_is_still_served_after_the_clients_expiry():
    """httpx (huggingface_hub's client) reuses a pooled connection idle for up
    to 5 s. A hub that closes idle connections at 5 s (actix's default, cut
    short by its 0.5 s clock) races that reuse, and the client then sees
    "Server disconnected without sending a response"."""
    import socket
    import time
    from urllib.parse import urlsplit

    url = urlsplit(ENDPOINT)
    with socket.create_connection((url.hostname, url.port), timeout=10) as s:
        f = s.makefile("rb")

        def get():
            s.sendall(f"GET /api/whoami-v2 HTTP/1.1\r\nhost: {url.netloc}\r\n\r\n".encode())
            status = f.readline()
            length = 0
            while (line := f.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            f.read(length)
            return status

        assert get().startswith(b"HTTP/1.1 401"), "an anonymous whoami is refused"
        time.sleep(6)
        assert get().startswith(b"HTTP/1.1 401"), "the idle connection was closed before 6 s"
