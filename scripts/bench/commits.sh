#!/usr/bin/env bash
# Commit cost against repo size (issue 17), in one run on loopback:
#   1. latency of a 1-file commit with 1k, 10k and 100k files already in the
#      repo (files in folders of 1,000: data/NNN/i.txt), p50 and p90 of RUNS
#   2. the same at the largest size once the namespace has a storage quota
#      (a commit then checks the namespace's usage; QUOTA=0 skips it)
#   3. one commit of 10,000 small inline files vs `git add -A` + `git commit`
#      of the same files in a local repository
# Usage: scripts/bench/commits.sh [SIZES...]   (default 1000 10000 100000)
#   HUB_BIN=path/to/hub-api to use a built binary (else a release build).
# Prints a Markdown report.
set -euo pipefail
cd "$(dirname "$0")/../.."
SIZES=("$@"); [[ ${#SIZES[@]} -gt 0 ]] || SIZES=(1000 10000 100000)
export RUNS=${RUNS:-15}

. scripts/lib/hub.sh
[[ -n "${HUB_BIN:-}" ]] || hub_build release
export HUB_RATE_LIMIT_TOKEN_RPS=0 HUB_RATE_LIMIT_ANON_RPS=0
hub_start --no-worker --http-workers 2
hub_admin create-user bench >/dev/null
hub_admin create-user root --admin >/dev/null
export HUB_URL TOKEN ROOT_TOKEN
TOKEN=$(hub_admin create-token bench --scopes read,write)
ROOT_TOKEN=$(hub_admin create-token root --scopes read,write,admin)
export BENCH_WORK="$HUB_WORK"
python3 - "${SIZES[@]}" <<'PY'
import base64, json, os, statistics, subprocess, sys, tempfile, time, urllib.request

URL, TOKEN, RUNS = os.environ["HUB_URL"], os.environ["TOKEN"], int(os.environ["RUNS"])
sizes = [int(s) for s in sys.argv[1:]]

def call(path, body, ctype, method="POST", token=TOKEN):
    req = urllib.request.Request(URL + path, data=body, method=method, headers={
        "Authorization": "Bearer " + token, "Content-Type": ctype})
    with urllib.request.urlopen(req, timeout=3600) as r:
        return json.load(r)

def create(name):
    call("/api/repos/create", json.dumps({"name": name}).encode(), "application/json")

def body(files):
    lines = [json.dumps({"key": "header", "value": {"summary": "bench", "description": ""}})]
    for p, c in files:
        lines.append(json.dumps({"key": "file", "value": {
            "path": p, "content": base64.b64encode(c).decode(), "encoding": "base64"}}))
    return ("\n".join(lines) + "\n").encode()

def commit(repo, files):
    b = body(files)
    t0 = time.perf_counter()
    call(f"/api/models/bench/{repo}/commit/main", b, "application/x-ndjson")
    return time.perf_counter() - t0

def path(i):
    return f"data/{i // 1000:03d}/{i}.txt"

def one_file_p50(n, tag):
    """p50 and p90 (ms) of RUNS 1-file commits into the folders of a repo of n files."""
    times = []
    for k in range(RUNS):
        i = (k * 7919) % n
        times.append(commit("grow", [(f"data/{i // 1000:03d}/{tag}-{n}-{k}.txt", f"{tag} {n} {k}\n".encode())]))
    times.sort()
    return statistics.median(times) * 1000, times[int(len(times) * 0.9) - 1] * 1000

# 1. 1-file commits against repo size.
create("grow")
have, rows = 0, []
for n in sizes:
    while have < n:
        step = min(10_000, n - have)
        commit("grow", [(path(i), f"file {i}\n".encode()) for i in range(have, have + step)])
        have += step
    # Warm-up commits (not timed): the first ones after a bulk insert meet
    # autovacuum and cold caches.
    for k in range(3):
        commit("grow", [(f"warm/{n}-{k}.txt", b"w\n")])
        have += 1
    rows.append((n, *one_file_p50(n, "new")))
    have += RUNS
    print(f"# {n} files: p50 {rows[-1][1]:.1f} ms, p90 {rows[-1][2]:.1f} ms", file=sys.stderr, flush=True)

# 2. The largest size again, with a storage quota on the namespace.
quota_row = None
if os.environ.get("QUOTA", "1") != "0":
    call("/api/v1/namespaces/bench/quota", json.dumps({"storage_bytes": 10**12}).encode(),
         "application/json", method="PUT", token=os.environ["ROOT_TOKEN"])
    commit("grow", [("warm/quota.txt", b"q\n")])
    quota_row = one_file_p50(sizes[-1], "quota")
    call("/api/v1/namespaces/bench/quota", json.dumps({"storage_bytes": None}).encode(),
         "application/json", method="PUT", token=os.environ["ROOT_TOKEN"])
    print(f"# {sizes[-1]} files with a quota: p50 {quota_row[0]:.1f} ms, p90 {quota_row[1]:.1f} ms", file=sys.stderr, flush=True)

# 3. A bulk commit of 10,000 files vs git (BULK=0 skips it).
def bulk(n):
    files = [(path(i), f"file {i}\n".encode()) for i in range(n)]
    create("bulk")
    hub_s = commit("bulk", files)
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_WORK")) as d:
        for p, c in files:
            os.makedirs(os.path.join(d, os.path.dirname(p)), exist_ok=True)
            with open(os.path.join(d, p), "wb") as f:
                f.write(c)
        env = dict(os.environ, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@b", GIT_COMMITTER_NAME="b",
                   GIT_COMMITTER_EMAIL="b@b", HOME=d)
        subprocess.run(["git", "init", "-q"], cwd=d, check=True, env=env)
        t0 = time.perf_counter()
        subprocess.run(["git", "add", "-A"], cwd=d, check=True, env=env)
        subprocess.run(["git", "commit", "-q", "-m", "bench"], cwd=d, check=True, env=env)
        return hub_s, time.perf_counter() - t0

print(f"## Commits against repo size ({os.cpu_count()} cores, {time.strftime('%Y-%m-%d', time.gmtime())}, {RUNS} runs each)\n")
print("| files in the repo | 1-file commit p50 | p90 |")
print("|---|---|---|")
for n, p50, p90 in rows:
    print(f"| {n:,} | {p50:.1f} ms | {p90:.1f} ms |")
if quota_row:
    print(f"| {sizes[-1]:,}, namespace with a storage quota | {quota_row[0]:.1f} ms | {quota_row[1]:.1f} ms |")
print(f"\n1-file commit p50, {rows[-1][0]:,} vs {rows[0][0]:,} files: **{rows[-1][1] / rows[0][1]:.2f}x** (goal <= 1.2x, p50 < 20 ms)\n")
if os.environ.get("BULK", "1") != "0":
    N = 10_000
    hub_s, git_s = bulk(N)
    print(f"Bulk commit of {N:,} inline files: Paddock {hub_s:.2f} s ({hub_s / N * 1000:.2f} ms/file), "
          f"git add + commit {git_s:.2f} s: **{git_s / hub_s:.2f}x git** (goal >= 0.5x)")
PY
