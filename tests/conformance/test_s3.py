"""The registry on a real S3 server (Garage), through the real clients: run
only by tests/s3/run.sh, which starts Garage and a hub with
`--storage-url s3://BUCKET/PREFIX` and exports the bucket's credentials.

What it proves beyond the conformance suite run on the same hub:
- a 1 GiB LFS multipart upload and its download stream: the hub's RSS
  stays flat, and the upload is completed by S3 joining the parts: each byte
  goes to S3 once and none comes back (counted by tests/s3/count_proxy.py,
  which stands between the hub and Garage);
- content addressing on S3: the same bytes in two repos are one object;
- Range reads, and no staging or part objects left behind;
- a quota refuses an upload before any byte reaches S3.
"""

import os

import boto3
import pytest
import json
import time
import urllib.error
import urllib.request
from conftest import ENDPOINT, sha256_file, token, write_random
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError

if "GARAGE_BUCKET" not in os.environ:
    pytest.skip("needs Garage: run tests/s3/run.sh", allow_module_level=True)

BUCKET = os.environ["GARAGE_BUCKET"]
PREFIX = os.environ["PADDOCK_S3_PREFIX"].strip("/") + "/"
HUB_PID = int(os.environ["PADDOCK_HUB_PID"])
GIB = 1 << 30


def http(method: str, url: str, headers: dict, body=None):
    """(status, body bytes) of one request (stdlib: no extra client to pin)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def s3():
    return boto3.client(
        "s3",
        endpoint_url=os.environ["GARAGE_ENDPOINT"],
        region_name=os.environ["AWS_REGION"],
    )


def keys(under: str) -> list[str]:
    out = []
    for page in s3().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=PREFIX + under):
        out += [o["Key"] for o in page.get("Contents", [])]
    return out


def proc_kib(field: str) -> int:
    with open(f"/proc/{HUB_PID}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def s3_traffic() -> dict:
    """Bytes between the hub and S3 so far, each way (tests/s3/count_proxy.py)."""
    time.sleep(0.2)  # the proxy rewrites its file every 50 ms
    with open(os.environ["PADDOCK_S3_PROXY_STATS"]) as f:
        return json.load(f)


class Rss:
    """Peak RSS of the hub while the block runs (VmHWM, reset at the start)."""

    def __enter__(self):
        with open(f"/proc/{HUB_PID}/clear_refs", "w") as f:
            f.write("5")
        self.start = proc_kib("VmRSS")
        return self

    def __exit__(self, *exc):
        self.peak = proc_kib("VmHWM")
        self.growth_mib = (self.peak - self.start) / 1024


@pytest.fixture(scope="module")
def one_gib(tmp_path_factory):
    path = tmp_path_factory.mktemp("big") / "weights.bin"
    write_random(path, GIB, seed=14)
    return path


def test_1gib_multipart_upload_and_download_stream_through_s3(api, repo_name, one_gib, tmp_path):
    api.create_repo(repo_name)
    before = s3_traffic()
    with Rss() as up:
        # HF_HUB_DISABLE_XET=1 (set by run.sh): the LFS multipart path.
        api.upload_file(path_or_fileobj=str(one_gib), path_in_repo="weights.bin", repo_id=repo_name)
    after = s3_traffic()
    sent, read = after["to_s3"] - before["to_s3"], after["from_s3"] - before["from_s3"]
    print(
        f"upload: hub RSS +{up.growth_mib:.0f} MiB (peak {up.peak / 1024:.0f} MiB); "
        f"hub to S3 {sent / GIB:.3f} GiB, S3 to hub {read / (1 << 20):.2f} MiB"
    )
    # Each byte went to S3 once (S3 joined the parts and copied the object to
    # its content address itself), and nothing came back.
    assert sent < 1.05 * GIB, f"the hub sent S3 {sent / GIB:.2f} GiB for a 1 GiB upload"
    assert read < 16 << 20, f"the hub read {read / (1 << 20):.0f} MiB back from S3"
    assert up.growth_mib < 200, f"RSS grew {up.growth_mib:.0f} MiB during a 1 GiB upload"
    assert not keys("staging/") and not keys("uploads/"), "leftovers in staging"

    with Rss() as down:
        out = hf_hub_download(repo_name, "weights.bin", cache_dir=str(tmp_path / "cache"), token=api.token)
    print(f"download: hub RSS +{down.growth_mib:.0f} MiB")
    assert down.growth_mib < 200, f"RSS grew {down.growth_mib:.0f} MiB during a 1 GiB download"
    assert sha256_file(out) == sha256_file(one_gib)
    os.remove(out)


def test_same_bytes_are_one_object_range_reads_and_no_leftovers(api, repo_name, tmp_path):
    src = tmp_path / "shared.bin"
    write_random(src, 11_000_000, seed=77)
    sha = sha256_file(src)
    other = repo_name + "-b"
    for r in (repo_name, other):
        api.create_repo(r)
        api.upload_file(path_or_fileobj=str(src), path_in_repo="shared.bin", repo_id=r)
    blobs = [k for k in keys("blobs/sha256/") if k.endswith(sha)]
    assert len(blobs) == 1, blobs

    url = f"{ENDPOINT}/{other}/resolve/main/shared.bin"
    auth = {"Authorization": f"Bearer {api.token}"}
    status, body = http("GET", url, {"Range": "bytes=1000000-1000099", **auth})
    assert status == 206
    with open(src, "rb") as f:
        f.seek(1_000_000)
        assert body == f.read(100)
    status, body = http("GET", url, {"Range": "bytes=10999990-", **auth})
    assert status == 206 and len(body) == 10
    assert not keys("staging/") and not keys("uploads/")


def test_a_quota_refuses_an_upload_before_any_byte_reaches_s3(tmp_path):
    bob = HfApi(endpoint=ENDPOINT, token=token("bob"))
    root = token("root")
    repo = "bob/quota-s3"
    bob.create_repo(repo)
    quota = f"{ENDPOINT}/api/v1/namespaces/bob/quota"
    status, body = http("PUT", quota, {"Authorization": f"Bearer {root}"}, {"storage_bytes": 5_000_000})
    assert status == 200, body
    try:
        src = tmp_path / "too-big.bin"
        write_random(src, 12_000_000, seed=5)
        before = set(keys(""))
        with pytest.raises(HfHubHTTPError) as e:
            bob.upload_file(path_or_fileobj=str(src), path_in_repo="too-big.bin", repo_id=repo)
        assert e.value.response.status_code in (403, 413, 507), e.value
        assert set(keys("")) == before, "a refused upload wrote to S3"
    finally:
        http("PUT", quota, {"Authorization": f"Bearer {root}"}, {})
