"""The client's default configuration (hf_xet installed, Xet not disabled):
the acceptance test of Xet storage (issue 12, reference §11.3).

Small text files still go inline. Every file the hub marks "lfs" goes through
the hub's Xet CAS (xorbs, then shards, then the NDJSON commit), and the hub
advertises Xet for it (`X-Xet-Hash`, the `xet-auth` link, tree `xetHash`),
so downloads reconstruct from xorbs. LFS-era clients (HF_HUB_DISABLE_XET=1,
curl, the hf-hub crate, the hub-worker) GET `/resolve` and get the bytes the
hub reassembles, with Range. Files uploaded through the LFS batch API stay
plain blobs and download over plain HTTP.

Proof that an upload went through Xet and not the LFS batch: the hub's
access log (PADDOCK_HUB_LOG, exported by run.sh) shows the CAS requests and
no batch request, and xorb objects appear in the object store under
`$PADDOCK_HUB_DATA/objects/xorbs/default/`. The growth of that directory is
also how the dedup tests measure the bytes the client sent (a xorb is stored
as uploaded plus a footer of a few hundred bytes; a xorb already stored is
not stored again).
"""

import hashlib
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from conftest import ENDPOINT, sha256_file, write_random
from huggingface_hub import HfApi, RepoFile, get_hf_file_metadata, hf_hub_download, hf_hub_url, snapshot_download
from huggingface_hub.utils._runtime import is_xet_available

HUB_DATA = Path(os.environ["PADDOCK_HUB_DATA"])
XORBS = HUB_DATA / "objects" / "xorbs" / "default"
# The hub's log, or (tests/fleet/run.sh) each replica's, separated by ":".
HUB_LOGS = [Path(p) for p in os.environ["PADDOCK_HUB_LOG"].split(":")]
HF = [sys.executable, "-m", "huggingface_hub.cli.hf"]
MB = 1_000_000


# --- observing the hub ------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_REQUEST = re.compile(r'http\.method="?([A-Z]+)"?\s+http\.path="?([^"\s]+)"?\s+http\.status=(\d+)')


class HubLog:
    """The access-log lines (method, path, status) the hub (every replica of
    a fleet) writes from now on."""

    # Lines are written at most this long after they are made when the hub
    # batches its log (HUB_LOG_FLUSH_MS): wait it out before each read.
    SETTLE_S = 0.2

    def __init__(self):
        time.sleep(self.SETTLE_S)
        self.start = {p: p.stat().st_size for p in HUB_LOGS}

    def requests(self):
        time.sleep(self.SETTLE_S)
        out = []
        for p, start in self.start.items():
            with open(p, "rb") as f:
                f.seek(start)
                text = _ANSI.sub("", f.read().decode("utf-8", "replace"))
            out += [(m[1], urllib.request.unquote(m[2]), int(m[3])) for m in _REQUEST.finditer(text)]
        return out


def xorb_store():
    """{xorb hash: stored bytes} of the hub's object store: its directory, or
    the S3 bucket when tests/s3/run.sh runs this file on a hub over Garage."""
    if "GARAGE_BUCKET" in os.environ:
        import boto3

        s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name=os.environ["AWS_REGION"])
        prefix = os.environ["PADDOCK_S3_PREFIX"].strip("/") + "/xorbs/default/"
        out = {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=os.environ["GARAGE_BUCKET"], Prefix=prefix):
            out.update({o["Key"].rsplit("/", 1)[1]: o["Size"] for o in page.get("Contents", [])})
        return out
    if not XORBS.is_dir():
        return {}
    return {p.name: p.stat().st_size for p in XORBS.iterdir()}


def new_xorb_bytes(before):
    after = xorb_store()
    new = set(after) - set(before)
    return sum(after[h] for h in new), len(new)


def assert_went_through_xet(log, repo):
    reqs = log.requests()
    xorb_posts = [r for r in reqs if r[0] == "POST" and r[1].startswith("/cas/v1/xorbs/default/")]
    shard_posts = [r for r in reqs if r[0] == "POST" and r[1] in ("/cas/v1/shards", "/cas/shards") and r[2] == 200]
    assert xorb_posts and all(s == 200 for _, _, s in xorb_posts), reqs
    assert shard_posts, reqs
    assert any(m == "GET" and f"/{repo}/xet-write-token/" in p and s == 200 for m, p, s in reqs), reqs
    assert not any("/info/lfs/objects/batch" in p for _, p, _ in reqs), "went through the LFS batch API"
    return reqs


def sha256_bytes(b):
    return hashlib.sha256(b).hexdigest()


def read_range(path, start, end_inclusive):
    with open(path, "rb") as f:
        f.seek(start)
        return f.read(end_inclusive - start + 1)


def raw_get(url, token, range_header=None):
    """A GET as an LFS-era client sends it (curl, the hf-hub crate, the hub-worker)."""
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    if range_header:
        req.add_header("Range", range_header)
    try:
        with urllib.request.urlopen(req, timeout=300) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def child(code, env_extra, timeout=900):
    """Runs Python in a child process (HF_HOME and HF_HUB_DISABLE_XET are read at import)."""
    env = dict(os.environ, **env_extra)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"child failed ({out.returncode}):\n{out.stderr[-4000:]}"
    return out


def assert_xet_metadata(repo, filename, token, sha256, size):
    """HEAD /resolve, parsed by the client's own code: it switches to Xet."""
    meta = get_hf_file_metadata(hf_hub_url(repo, filename), token=token)
    assert meta.etag == sha256 and meta.size == size
    assert meta.xet_file_data is not None, "no X-Xet-Hash / xet-auth link on /resolve"
    assert re.fullmatch(r"[0-9a-f]{64}", meta.xet_file_data.file_hash)
    assert meta.xet_file_data.refresh_route == f"{ENDPOINT}/api/models/{repo}/xet-read-token/{meta.commit_hash}"
    return meta


# --- the client's defaults --------------------------------------------------


def test_xet_is_really_enabled():
    assert os.environ.get("HF_HUB_DISABLE_XET") is None
    assert is_xet_available()
    from importlib.metadata import version

    assert version("hf_xet") == "1.8.0"


def test_small_uploads_and_downloads(alice, tmp_path):
    api = HfApi(endpoint=ENDPOINT, token=alice)
    repo = api.create_repo("alice/xet-default", exist_ok=True).repo_id
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text('{"a": 1}')
    (src / "notes.md").write_text("# small text files go inline\n")
    before = xorb_store()
    api.upload_folder(repo_id=repo, folder_path=src)
    assert xorb_store() == before, "small text files must go inline, not through Xet"
    out = snapshot_download(repo, cache_dir=str(tmp_path / "c"), token=alice)
    assert open(os.path.join(out, "notes.md")).read().startswith("# small")


def test_file_uploaded_through_lfs_downloads_over_plain_http(alice, tmp_path):
    # Upload a large file through the legacy path in a child process, then
    # download it here with Xet enabled: it is a plain blob, the hub does not
    # advertise Xet for it, and the client downloads it over plain HTTP.
    big = tmp_path / "big.bin"
    write_random(big, 12_000_000, seed=7)
    before = xorb_store()
    child(
        "from huggingface_hub import HfApi;"
        f"a=HfApi(endpoint={ENDPOINT!r}, token={alice!r});"
        "a.create_repo('alice/xet-large', exist_ok=True);"
        f"a.upload_file(path_or_fileobj={str(big)!r}, path_in_repo='big.bin', repo_id='alice/xet-large')",
        {"HF_HUB_DISABLE_XET": "1"},
    )
    assert xorb_store() == before
    meta = get_hf_file_metadata(hf_hub_url("alice/xet-large", "big.bin"), token=alice)
    assert meta.xet_file_data is None
    tree = {f.path: f for f in HfApi(endpoint=ENDPOINT, token=alice).list_repo_tree("alice/xet-large", expand=True)}
    assert tree["big.bin"].xet_hash is None and tree["big.bin"].lfs is not None
    path = hf_hub_download("alice/xet-large", "big.bin", cache_dir=str(tmp_path / "c"), token=alice)
    assert open(path, "rb").read() == big.read_bytes()

    # The same bytes again, now through Xet, to another repo: the commit
    # passes and both ways of downloading give the file back.
    api = HfApi(endpoint=ENDPOINT, token=alice)
    again = api.create_repo("alice/xet-large-again", exist_ok=True).repo_id
    api.upload_file(path_or_fileobj=str(big), path_in_repo="big.bin", repo_id=again)
    path = hf_hub_download(again, "big.bin", cache_dir=str(tmp_path / "c2"), token=alice)
    assert open(path, "rb").read() == big.read_bytes()
    assert raw_get(hf_hub_url(again, "big.bin"), alice)[2] == big.read_bytes()


def test_cli_upload_and_download_of_200mb_through_xet(alice, repo_name, tmp_path):
    """`hf upload` / `hf download` of a 200 MB file with the CLI's defaults."""
    big = tmp_path / "weights.bin"
    write_random(big, 200 * MB, seed=12)
    sha = sha256_file(big)
    env = dict(os.environ, HF_TOKEN=alice)
    HfApi(endpoint=ENDPOINT, token=alice).create_repo(repo_name)

    before, log, t0 = xorb_store(), HubLog(), time.monotonic()
    subprocess.run(HF + ["upload", repo_name, str(big), "weights.bin"], check=True, env=env, capture_output=True)
    t_up = time.monotonic() - t0
    assert_went_through_xet(log, repo_name)
    stored, n = new_xorb_bytes(before)
    # Random bytes do not compress: every byte is stored once, in xorbs of at most 64 MiB.
    assert 200 * MB <= stored <= 200 * MB * 1.01 and n >= 3, (stored, n)

    assert_xet_metadata(repo_name, "weights.bin", alice, sha, 200 * MB)
    log, t0 = HubLog(), time.monotonic()
    out = subprocess.run(
        HF + ["download", repo_name, "weights.bin", "--cache-dir", str(tmp_path / "c")],
        check=True, env=env, capture_output=True, text=True,
    )
    t_down = time.monotonic() - t0
    path = out.stdout.strip().splitlines()[-1].split("path:", 1)[-1].strip()
    assert sha256_file(path) == sha
    reqs = log.requests()
    assert any(p.startswith("/cas/v2/reconstructions/") and s == 200 for _, p, s in reqs), reqs
    assert not any(m == "GET" and p.endswith("/resolve/main/weights.bin") for m, p, _ in reqs), "downloaded over /resolve"
    print(f"xet 200 MB: hf upload {t_up:.1f} s, hf download {t_down:.1f} s, {n} xorbs, {stored} B stored")


def _mixed_folder(src):
    (src / "weights").mkdir(parents=True)
    (src / "data").mkdir()
    (src / "README.md").write_text("---\nlicense: mit\n---\n# Mixed\n")
    (src / "config.json").write_text('{"model_type": "bert", "hidden_size": 8}')
    (src / "tokenizer_config.json").write_text('{"model_max_length": 32}')
    # A real checkpoint: the hub validates safetensors headers at commit, reading
    # the bytes it reassembles from xorbs.
    _checkpoint(src / "weights" / "model.safetensors", n=24)
    write_random(src / "weights" / "optimizer.bin", 9 * MB + 17, seed=22)
    write_random(src / "data" / "tiny.bin", 3000, seed=23)  # binary sample: Xet, one chunk
    # Compressible binary (LZ4 chunks in the xorb).
    (src / "data" / "pattern.bin").write_bytes(bytes(range(256)) * 20_000 + b"\x00" * 1_000_000)
    return {
        "inline": ["README.md", "config.json", "tokenizer_config.json"],
        "xet": [
            "weights/model.safetensors",
            "weights/optimizer.bin",
            "data/tiny.bin",
            "data/pattern.bin",
        ],
    }


def test_upload_folder_of_mixed_files_and_snapshot_download(alice, repo_name, tmp_path):
    api = HfApi(endpoint=ENDPOINT, token=alice)
    src = tmp_path / "src"
    kinds = _mixed_folder(src)
    api.create_repo(repo_name)
    before, log = xorb_store(), HubLog()
    commit = api.upload_folder(repo_id=repo_name, folder_path=src, commit_message="mixed").oid
    assert_went_through_xet(log, repo_name)
    stored, _ = new_xorb_bytes(before)
    assert stored > 20 * MB, stored

    # Tree listing and paths-info carry xetHash for Xet files only (§2.6).
    tree = {f.path: f for f in api.list_repo_tree(repo_name, recursive=True, expand=True) if isinstance(f, RepoFile)}
    plain = {f.path: f for f in api.list_repo_tree(repo_name, recursive=True) if isinstance(f, RepoFile)}
    info = {p.path: p for p in api.get_paths_info(repo_name, kinds["xet"] + kinds["inline"])}
    for name in kinds["xet"]:
        sha, size = sha256_file(src / name), (src / name).stat().st_size
        for listing in (tree, plain, info):
            entry = listing[name]
            assert entry.lfs is not None and entry.lfs.sha256 == sha and entry.size == size, name
            assert entry.xet_hash and re.fullmatch(r"[0-9a-f]{64}", entry.xet_hash), (name, entry)
        meta = assert_xet_metadata(repo_name, name, alice, sha, size)
        assert meta.xet_file_data.file_hash == tree[name].xet_hash
    for name in kinds["inline"]:
        assert tree[name].lfs is None and tree[name].xet_hash is None, name

    # snapshot_download: Xet files come by reconstruction, and the tree's
    # xetHash lets the client skip their HEAD /resolve (inline files still HEAD).
    log = HubLog()
    out = snapshot_download(repo_name, cache_dir=str(tmp_path / "c"), token=alice)
    for name in kinds["xet"] + kinds["inline"]:
        assert sha256_file(os.path.join(out, name)) == sha256_file(src / name), name
    reqs = log.requests()
    heads = [p for m, p, _ in reqs if m == "HEAD" and f"/{repo_name}/resolve/" in p]
    for name in kinds["xet"]:
        assert not any(p.endswith("/" + name) for p in heads), f"HEAD for {name}: {heads}"
    assert any(p.endswith("/config.json") for p in heads), heads
    recon = [p for m, p, s in reqs if p.startswith("/cas/v") and "/reconstructions/" in p and s == 200]
    assert len(recon) >= len(kinds["xet"]), reqs
    assert any(m == "GET" and p == f"/api/models/{repo_name}/xet-read-token/{commit}" for m, p, _ in reqs), reqs

    # A second snapshot_download of the same cache asks the hub for nothing
    # but the revision and finds every file in place.
    log = HubLog()
    assert snapshot_download(repo_name, cache_dir=str(tmp_path / "c"), token=alice) == out
    reqs = log.requests()
    assert not any("/resolve/" in p or p.startswith("/cas/") for _, p, _ in reqs), reqs

    # hf_hub_download of one Xet file into a fresh cache.
    name = kinds["xet"][1]
    path = hf_hub_download(repo_name, name, cache_dir=str(tmp_path / "c2"), token=alice)
    assert sha256_file(path) == sha256_file(src / name)


def test_lfs_era_clients_read_xet_files_with_ranges(alice, repo_name, tmp_path):
    """What the hf-hub crate 0.4, transformers without hf_xet, curl and the
    hub-worker do: GET /resolve, whole or with Range. The hub reassembles the
    bytes from xorbs; they must be exact."""
    api = HfApi(endpoint=ENDPOINT, token=alice)
    src = tmp_path / "w.bin"
    size = 7 * MB + 12345
    write_random(src, size, seed=31)
    sha = sha256_file(src)
    api.create_repo(repo_name)
    before, log = xorb_store(), HubLog()
    api.upload_file(path_or_fileobj=str(src), path_in_repo="w.bin", repo_id=repo_name)
    assert_went_through_xet(log, repo_name)
    assert new_xorb_bytes(before)[0] >= size
    assert_xet_metadata(repo_name, "w.bin", alice, sha, size)
    url = hf_hub_url(repo_name, "w.bin")

    # Whole file.
    status, headers, body = raw_get(url, alice)
    assert status == 200 and len(body) == size and sha256_bytes(body) == sha
    # Ranges: first byte, inside a chunk, across many chunks (chunks are 8-128 KiB),
    # open-ended, suffix, clamped past the end.
    for rng, (a, b) in {
        "bytes=0-0": (0, 0),
        "bytes=100-70000": (100, 70000),
        "bytes=1000000-3999999": (1000000, 3999999),
        f"bytes={size - 5000}-": (size - 5000, size - 1),
        "bytes=-777": (size - 777, size - 1),
        f"bytes={size - 10}-{size + 1000}": (size - 10, size - 1),
    }.items():
        status, headers, body = raw_get(url, alice, rng)
        assert status == 206, (rng, status, body[:200])
        assert headers["Content-Range"] == f"bytes {a}-{b}/{size}", (rng, headers)
        assert body == read_range(src, a, b), rng
    status, headers, _ = raw_get(url, alice, f"bytes={size}-")
    assert status == 416, status

    # The client's own resume path (http_get with resume_size sends Range and
    # appends), as after an interrupted download.
    from huggingface_hub.file_download import http_get

    half = size // 2 + 3
    part = tmp_path / "w.part"
    part.write_bytes(read_range(src, 0, half - 1))
    log = HubLog()
    with open(part, "ab") as f:
        http_get(url, f, resume_size=half, headers={"authorization": f"Bearer {alice}"}, expected_size=size)
    assert sha256_file(part) == sha
    assert ("GET", f"/{repo_name}/resolve/main/w.bin", 206) in log.requests()

    # hf_hub_download with Xet disabled (the LFS-era client) in a child process.
    log = HubLog()
    got = child(
        "from huggingface_hub import hf_hub_download;"
        f"print(hf_hub_download({repo_name!r}, 'w.bin', cache_dir={str(tmp_path / 'c')!r}, token={alice!r}))",
        {"HF_HUB_DISABLE_XET": "1"},
    ).stdout.strip().splitlines()[-1]
    assert sha256_file(got) == sha
    reqs = log.requests()
    assert any(m == "GET" and "/resolve/" in p and p.endswith("/w.bin") and s == 200 for m, p, s in reqs), reqs
    assert not any(p.startswith("/cas/") for _, p, _ in reqs), reqs


def test_transformers_without_hf_xet_loads_files_stored_through_xet(alice, repo_name, tmp_path):
    # .gitattributes makes the hub mark even small text files "lfs": the stock
    # client then uploads config, vocab and tokenizer config through Xet.
    from test_transformers import _tiny_bert

    api = HfApi(endpoint=ENDPOINT, token=alice)
    api.create_repo(repo_name)
    attrs = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in ("*.json", "*.txt"))
    api.upload_file(path_or_fileobj=attrs.encode(), path_in_repo=".gitattributes", repo_id=repo_name)
    src = tmp_path / "src"
    src.mkdir()
    _tiny_bert(src)
    # Bytes of its own: content the hub already stores whole (test_transformers
    # uploads the same tiny BERT in the LFS run) stays a plain blob, without xetHash.
    tag = repo_name.rsplit("-", 1)[-1]
    cfg = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps(dict(cfg, paddock_test=tag)))
    with open(src / "vocab.txt", "a") as f:
        f.write(f"[unused-{tag}]\n")  # appended: the ids of the other tokens stay
    before, log = xorb_store(), HubLog()
    api.upload_folder(repo_id=repo_name, folder_path=src)
    assert_went_through_xet(log, repo_name)
    assert new_xorb_bytes(before)[1] >= 1
    tree = {f.path: f for f in api.list_repo_tree(repo_name, expand=True)}
    assert tree["config.json"].xet_hash and tree["vocab.txt"].xet_hash

    for mode, env in (("lfs-era", {"HF_HUB_DISABLE_XET": "1"}), ("xet", {})):
        cache = str(tmp_path / f"c-{mode}")
        log = HubLog()
        out = child(
            "from transformers import AutoConfig, AutoTokenizer;"
            f"c=AutoConfig.from_pretrained({repo_name!r}, token={alice!r}, cache_dir={cache!r});"
            f"t=AutoTokenizer.from_pretrained({repo_name!r}, token={alice!r}, cache_dir={cache!r});"
            "print(c.model_type, c.hidden_size, t('hello paddock world!')['input_ids'])",
            env,
        ).stdout.strip().splitlines()[-1]
        assert out == "bert 8 [2, 5, 7, 6, 9, 3]", (mode, out)
        used_cas = any(p.startswith("/cas/") for _, p, _ in log.requests())
        assert used_cas == (mode == "xet"), (mode, log.requests())


# --- dedup --------------------------------------------------------------------


def _checkpoint(path, changed=(), seed=0, n=48, base=0):
    """A safetensors checkpoint of n float32 tensors of 1 MiB each, written
    with safetensors' numpy API. Tensors listed in `changed` get fresh values
    (a fine-tune); the header (names, shapes, offsets) stays the same. `base`
    picks the base model (checkpoints of different bases share no tensor)."""
    import numpy as np
    from safetensors.numpy import save_file

    tensors = {}
    for i in range(n):
        rng = np.random.default_rng([base, i, seed if i in changed else 0])
        tensors[f"layers.{i:02d}.weight"] = rng.standard_normal((512, 512), dtype=np.float32)
    save_file(tensors, str(path), metadata={"format": "np"})
    return path.stat().st_size


def _upload_in_fresh_home(token, repo, path, home):
    """`upload_file` in a child with a fresh HF_HOME: no local chunk or shard
    cache, so only the hub's global dedup query can avoid sending bytes."""
    child(
        "from huggingface_hub import HfApi;"
        f"a=HfApi(endpoint={ENDPOINT!r}, token={token!r});"
        f"a.create_repo({repo!r}, exist_ok=True);"
        f"a.upload_file(path_or_fileobj={str(path)!r}, path_in_repo='model.safetensors', repo_id={repo!r})",
        {"HF_HOME": str(home)},
    )


def test_dedup_of_a_fine_tuned_checkpoint_within_a_tenant_only(alice, bob, tmp_path):
    import uuid

    tag = uuid.uuid4().hex[:8]
    model = int(tag, 16)  # a base model no other test (or earlier run) uploaded
    base, tuned, other = tmp_path / "base.safetensors", tmp_path / "tuned.safetensors", tmp_path / "other.safetensors"
    size = _checkpoint(base, base=model)
    # 5 of 48 tensors (10.4 %) changed: alice's fine-tune, and bob's own one.
    assert _checkpoint(tuned, changed=(5, 15, 25, 35, 45), seed=1, base=model) == size
    assert _checkpoint(other, changed=(2, 12, 22, 32, 42), seed=2, base=model) == size

    # float32 weights compress a little (BG4 + LZ4): compare with what the
    # first upload stored as well as with the file size.
    before = xorb_store()
    _upload_in_fresh_home(alice, f"alice/base-{tag}", base, tmp_path / "h1")
    first, _ = new_xorb_bytes(before)
    assert 0.5 * size <= first <= 1.01 * size, (first, size)

    before, log = xorb_store(), HubLog()
    _upload_in_fresh_home(alice, f"alice/tuned-{tag}", tuned, tmp_path / "h2")
    sent, n = new_xorb_bytes(before)
    reqs = assert_went_through_xet(log, f"alice/tuned-{tag}")
    assert any(p.startswith("/cas/v1/chunks/") and s == 200 for _, p, s in reqs), "no global dedup hit"
    # The changed tensors must be sent; the rest must not (goal <= 20 %).
    assert 0.08 * first <= sent <= 0.20 * size, (sent, first, size)
    print(f"xet dedup: checkpoint {size} B, first upload stored {first} B; the fine-tune sent/stored {sent} B in {n} xorbs ({sent / size:.1%} of the file)")

    # Another tenant gets no dedup against alice's xorbs: the store grows by
    # about the whole file.
    before, log = xorb_store(), HubLog()
    _upload_in_fresh_home(bob, f"bob/tuned-{tag}", other, tmp_path / "h3")
    cross, _ = new_xorb_bytes(before)
    reqs = assert_went_through_xet(log, f"bob/tuned-{tag}")
    assert not any(p.startswith("/cas/v1/chunks/") and s == 200 for _, p, s in reqs), "cross-tenant dedup hit"
    assert cross >= 0.9 * first, (cross, first)
    print(f"xet dedup: other tenant's upload stored {cross} B ({cross / size:.1%})")

    for repo, token, path in ((f"alice/tuned-{tag}", alice, tuned), (f"bob/tuned-{tag}", bob, other)):
        got = hf_hub_download(repo, "model.safetensors", cache_dir=str(tmp_path / "c"), token=token)
        assert sha256_file(got) == sha256_file(path), repo
    # And the reassembled file is still a valid checkpoint.
    from safetensors.numpy import load_file

    assert len(load_file(got)) == 48
