#!/usr/bin/env bash
# Listings and lookups at 120,000 files (issue 17): a repo of 100,000 files in
# folders of 1,000 (data/NNN/i.txt) and one flat folder of 20,000, then the
# median time of: a recursive tree page (the first, the last, and all 121
# followed through the Link header), the first page of the flat folder,
# paths-info of 1,000 paths, HEAD /resolve, and the dashboard's folder pages.
# Usage: scripts/bench/listing.sh   HUB_BIN=path/to/hub-api (else a release build).
# Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib/hub.sh
[[ -n "${HUB_BIN:-}" ]] || hub_build release
export HUB_RATE_LIMIT_TOKEN_RPS=0 HUB_RATE_LIMIT_ANON_RPS=0
hub_start --no-worker --http-workers 2
hub_admin create-user bench >/dev/null
export HUB_URL TOKEN=$(hub_admin create-token bench --scopes read,write)
python3 - <<'PY'
import base64, json, os, time, urllib.request, statistics
URL, TOKEN = os.environ["HUB_URL"], os.environ["TOKEN"]
def req(path, body=None, ctype=None, method=None, accept=None):
    h = {"Authorization": "Bearer " + TOKEN}
    if ctype: h["Content-Type"] = ctype
    if accept: h["Accept"] = accept
    r = urllib.request.Request(URL + path, data=body, method=method or ("POST" if body else "GET"), headers=h)
    t0 = time.perf_counter()
    with urllib.request.urlopen(r, timeout=600) as resp:
        data = resp.read(); link = resp.headers.get("Link")
    return time.perf_counter() - t0, data, link
req("/api/repos/create", json.dumps({"name": "s"}).encode(), "application/json")
for start in range(0, 100_000, 10_000):
    lines = [json.dumps({"key": "header", "value": {"summary": "grow"}})]
    for i in range(start, start + 10_000):
        lines.append(json.dumps({"key": "file", "value": {"path": f"data/{i // 1000:03d}/{i}.txt", "content": base64.b64encode(f"file {i}\n".encode()).decode()}}))
    req("/api/models/bench/s/commit/main", ("\n".join(lines) + "\n").encode(), "application/x-ndjson")
# one flat folder of 20,000 too
lines = [json.dumps({"key": "header", "value": {"summary": "flat"}})]
for i in range(20_000):
    lines.append(json.dumps({"key": "file", "value": {"path": f"flat/{i:05d}.txt", "content": base64.b64encode(b"f").decode()}}))
req("/api/models/bench/s/commit/main", ("\n".join(lines) + "\n").encode(), "application/x-ndjson")
def med(f, n=5):
    ts = sorted(f() for _ in range(n)); return statistics.median(ts) * 1000
out = []
out.append(("tree, first page (recursive, 1,000 entries)", med(lambda: req("/api/models/bench/s/tree/main?recursive=true")[0])))
# walk all pages, time the last
t0 = time.perf_counter(); uri = "/api/models/bench/s/tree/main?recursive=true"; pages = 0; last = None
while uri:
    dt, data, link = req(uri); pages += 1; last = uri
    uri = link.split("<")[1].split(">")[0][len(URL):] if link else None
walk = time.perf_counter() - t0
out.append((f"tree, last page (page {pages})", med(lambda: req(last)[0])))
out.append((f"tree, all {pages} pages (120,001 entries)", walk * 1000))
out.append(("tree of flat/ (20,000 files), first page", med(lambda: req("/api/models/bench/s/tree/main/flat")[0])))
form = "&".join(f"paths=data/{i // 100:03d}/{i * 97 % 1000 + (i // 100) * 1000}.txt" for i in range(1000)).encode()
dt, data, _ = req("/api/models/bench/s/paths-info/main", form, "application/x-www-form-urlencoded")
assert len(json.loads(data)) == 1000, len(json.loads(data))
out.append(("paths-info, 1,000 paths", med(lambda: req("/api/models/bench/s/paths-info/main", form, "application/x-www-form-urlencoded")[0])))
out.append(("HEAD /resolve of data/099/99999.txt", med(lambda: req("/bench/s/resolve/main/data/099/99999.txt", method="HEAD")[0], 9)))
out.append(("dashboard folder page data/050 (1,000 files)", med(lambda: req("/bench/s/tree/main/data/050", accept="text/html")[0], 3)))
out.append(("dashboard folder page flat/ (20,000 files, first 500)", med(lambda: req("/bench/s/tree/main/flat", accept="text/html")[0], 3)))
print("| request (120,001 files in the repo) | median |")
print("|---|---|")
for k, v in out:
    print(f"| {k} | {v:.1f} ms |")
PY
