"""The stock-client side of the Xet legs of scripts/bench/registry.sh.

Each command runs in its own process: huggingface_hub reads HF_ENDPOINT,
HF_HOME and HF_HUB_DISABLE_XET at import, and the caller sets them per leg
(a fresh HF_HOME defeats hf_xet's local caches). Prints one JSON line.

  checkpoint OUT --tensors N [--changed I,J,..] [--seed S]   safetensors of N x 1 MiB float32
  upload REPO FILE                                          HfApi.upload_file, timed
  download REPO FILENAME CACHE                              hf_hub_download, timed
  xorbs-sent LOG OFFSET XORB_DIR                            bytes of the xorbs POSTed since OFFSET
"""

import argparse
import json
import os
import re
import sys
import time


def checkpoint(a):
    import numpy as np
    from safetensors.numpy import save_file

    changed = {int(i) for i in a.changed.split(",") if i}
    tensors = {}
    for i in range(a.tensors):
        rng = np.random.default_rng(1_000_000 * a.seed + i if i in changed else i)
        tensors[f"layers.{i:04d}.weight"] = rng.standard_normal((512, 512), dtype=np.float32)
    save_file(tensors, a.out, metadata={"format": "np"})
    return {"bytes": os.path.getsize(a.out)}


def upload(a):
    from huggingface_hub import HfApi

    api = HfApi(token=os.environ["HF_TOKEN"])
    api.create_repo(a.repo, exist_ok=True)
    t0 = time.monotonic()
    api.upload_file(path_or_fileobj=a.file, path_in_repo=os.path.basename(a.file), repo_id=a.repo)
    return {"seconds": time.monotonic() - t0}


def download(a):
    from huggingface_hub import hf_hub_download

    t0 = time.monotonic()
    path = hf_hub_download(a.repo, a.filename, cache_dir=a.cache, token=os.environ["HF_TOKEN"])
    return {"seconds": time.monotonic() - t0, "path": path}


def xorbs_sent(a):
    ansi = re.compile(r"\x1b\[[0-9;]*m")
    post = re.compile(r'http\.method="?POST"?\s+http\.path="?/cas/v1/xorbs/default/([0-9a-f]{64})"?\s+http\.status=200')
    with open(a.log, "rb") as f:
        f.seek(a.offset)
        text = ansi.sub("", f.read().decode("utf-8", "replace"))
    hashes = post.findall(text)
    return {"xorbs": len(hashes), "bytes": sum(os.path.getsize(os.path.join(a.xorb_dir, h)) for h in hashes)}


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("checkpoint")
    c.add_argument("out")
    c.add_argument("--tensors", type=int, required=True)
    c.add_argument("--changed", default="")
    c.add_argument("--seed", type=int, default=0)
    u = sub.add_parser("upload")
    u.add_argument("repo")
    u.add_argument("file")
    d = sub.add_parser("download")
    d.add_argument("repo")
    d.add_argument("filename")
    d.add_argument("cache")
    x = sub.add_parser("xorbs-sent")
    x.add_argument("log")
    x.add_argument("offset", type=int)
    x.add_argument("xorb_dir")
    a = p.parse_args()
    out = {"checkpoint": checkpoint, "upload": upload, "download": download, "xorbs-sent": xorbs_sent}[a.cmd](a)
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()
