#!/usr/bin/env bash
# upload_folder of a folder of many small files, end to end (issue 17): the
# stock client (huggingface_hub 2.x with hf_xet: its streamed, resumable,
# multi-commit upload, which 1.x called upload_large_folder) against a fresh
# hub on loopback. Reports the wall time, the time per file and the commits
# it made, then a second run over the unchanged folder (the resume path:
# every file skipped, no commit) and a recursive listing of the result.
# Usage: scripts/bench/large_folder.sh [FILES]   (default 100000)
#   HUB_BIN=path/to/hub-api (else a release build); PY=python with
#   tests/conformance/requirements.txt (default .venv/test/bin/python).
# Prints a Markdown report.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
FILES=${1:-100000}
PY=${PY:-$ROOT/.venv/test/bin/python}

. scripts/lib/hub.sh
[[ -n "${HUB_BIN:-}" ]] || hub_build release
export HUB_RATE_LIMIT_TOKEN_RPS=0 HUB_RATE_LIMIT_ANON_RPS=0
hub_start --no-worker --http-workers 2
hub_admin create-user bench >/dev/null
TOKEN=$(hub_admin create-token bench --scopes read,write)
export HF_ENDPOINT="$HUB_URL" HF_TOKEN="$TOKEN" HF_HOME="$HUB_WORK/hf-home"
export HF_HUB_DISABLE_TELEMETRY=1 HF_HUB_DISABLE_PROGRESS_BARS=1
export BENCH_DIR="$HUB_WORK/folder" FILES

"$PY" - <<'PY'
import os, sys, time
from huggingface_hub import HfApi, RepoFile

n, root = int(os.environ["FILES"]), os.environ["BENCH_DIR"]
t0 = time.perf_counter()
for i in range(n):
    d = os.path.join(root, "data", f"{i // 1000:03d}")
    if i % 1000 == 0:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"{i}.txt"), "wb") as f:
        f.write(f"file {i}\n".encode())
made = time.perf_counter() - t0

api = HfApi()
api.create_repo("bench/large")
t0 = time.perf_counter()
done = api.upload_folder(repo_id="bench/large", folder_path=root, commit_message="large folder")
upload = time.perf_counter() - t0
commits = api.list_repo_commits("bench/large")
t0 = time.perf_counter()
again = api.upload_folder(repo_id="bench/large", folder_path=root, commit_message="again")
resume = time.perf_counter() - t0
assert again.oid == done.oid, "the second run committed"
t0 = time.perf_counter()
listed = sum(1 for e in api.list_repo_tree("bench/large", recursive=True) if isinstance(e, RepoFile))
listing = time.perf_counter() - t0
assert listed == n + 1, listed  # and .gitattributes

print(f"## upload_folder of {n:,} small files ({os.cpu_count()} cores, {time.strftime('%Y-%m-%d', time.gmtime())})\n")
print(f"(writing the folder took {made:.1f} s, not counted)\n")
print("| step | time | per file |")
print("|---|---|---|")
print(f"| upload_folder (huggingface_hub + hf_xet, {len(commits) - 1} commits) | {upload:.1f} s | {upload / n * 1000:.2f} ms |")
print(f"| the same again, unchanged (resume path, no commit) | {resume:.1f} s | {resume / n * 1000:.2f} ms |")
print(f"| list_repo_tree(recursive=True), {listed:,} files | {listing:.1f} s | {listing / n * 1000:.3f} ms |")
PY
