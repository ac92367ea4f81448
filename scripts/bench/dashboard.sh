#!/usr/bin/env bash
# Dashboard render time with 10,000 repos in the database (issue 5, Proof):
# server-side time of the repo page and the model list, p50/p95/p99 over
# many sequential keep-alive requests on loopback (a small Python client; the
# network part of a loopback request is well under a millisecond), plus wrk
# throughput at 4 connections. Goal: p95 under 50 ms. The JSON API routes
# that serve the same data (`/api/models`, repo info) are measured in the
# same run as the peer.
# Usage: scripts/bench/dashboard.sh [REQUESTS]   (default 400 per page)
#   HUB_BIN=path/to/hub-api to skip the release build.
# Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
N=${1:-400}
REPOS=${REPOS:-10000}

need() { command -v "$1" >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null; }; }
need wrk wrk
need curl curl
need psql postgresql-client

. scripts/lib/hub.sh
[[ -n "${HUB_BIN:-}" ]] || hub_build release

# The benchmark is one client (wrk): lift the per-IP/token rate limits (else it measures 429s).
export HUB_PG_UNSAFE_FAST=true HUB_LOG=warn HUB_RATE_LIMIT_TOKEN_RPS=0 HUB_RATE_LIMIT_ANON_RPS=0
hub_start --no-worker --http-workers 2
WORK="$HUB_WORK"
URL="$HUB_URL"
hub_admin create-user bench >/dev/null
hub_admin create-user other >/dev/null
TOKEN=$(hub_admin create-token bench --scopes read,write)
AUTH="Authorization: Bearer $TOKEN"

# The repo whose page is measured: a realistic card, config, weights header, a few files.
curl -sf -H "$AUTH" -H 'Content-Type: application/json' -d '{"name":"page-model"}' "$URL/api/repos/create" >/dev/null
python3 - "$URL" "$TOKEN" <<'PY'
import base64, json, struct, sys, urllib.request
url, token = sys.argv[1], sys.argv[2]
card = "---\nlicense: apache-2.0\npipeline_tag: sentence-similarity\nlibrary_name: sentence-transformers\ntags:\n- bert\n- embeddings\n---\n# page-model\n\n"
card += "\n".join(f"## Section {i}\n\nSome **text** with a [link](https://example.com/{i}) and `code`.\n\n| metric | value |\n|---|---|\n| a | {i} |\n" for i in range(40))
header = {f"encoder.layer.{i}.weight": {"dtype": "F32", "shape": [4, 4], "data_offsets": [i * 64, i * 64 + 64]} for i in range(200)}
h = json.dumps(header).encode()
h += b" " * ((8 - len(h) % 8) % 8)
st = struct.pack("<Q", len(h)) + h + bytes(200 * 64)
files = {"README.md": card.encode(), "config.json": b'{"architectures":["BertModel"],"model_type":"bert"}', "model.safetensors": st}
files.update({f"extra/file_{i}.txt": f"file {i}\n".encode() for i in range(30)})
lines = [json.dumps({"key": "header", "value": {"summary": "seed", "description": ""}})]
lines += [json.dumps({"key": "file", "value": {"path": p, "content": base64.b64encode(b).decode(), "encoding": "base64"}}) for p, b in files.items()]
req = urllib.request.Request(f"{url}/api/models/bench/page-model/commit/main", data=("\n".join(lines) + "\n").encode(),
                             headers={"Authorization": f"Bearer {token}", "Content-Type": "application/x-ndjson"}, method="POST")
urllib.request.urlopen(req).read()
PY

# 10,000 repos straight into the database (listing metadata only), 10% private to another user.
PSQL=(psql -q -h "$WORK/hub/pg-run" -U postgres -d paddock -v ON_ERROR_STOP=1)
"${PSQL[@]}" <<SQL
INSERT INTO repos (namespace_id, name, repo_type, private, downloads, likes, pipeline_tag, library_name, license, tags, last_modified, created_at)
SELECT CASE WHEN g % 10 = 0 THEN (SELECT id FROM namespaces WHERE name = 'other') ELSE (SELECT id FROM namespaces WHERE name = 'bench') END,
       'model-' || g, 'model', g % 10 = 0, (g * 7919) % 100000, (g * 104729) % 5000,
       (ARRAY['feature-extraction','text-classification','sentence-similarity','fill-mask','text-generation'])[1 + g % 5],
       (ARRAY['transformers','sentence-transformers','gguf'])[1 + g % 3],
       (ARRAY['apache-2.0','mit','cc-by-4.0','llama3'])[1 + g % 4],
       ARRAY['safetensors', 'tag-' || (g % 50)],
       now() - (g || ' minutes')::interval, now() - (g || ' minutes')::interval
FROM generate_series(1, $REPOS) g;
ANALYZE;
SQL
COUNT=$("${PSQL[@]}" -tA -c "SELECT count(*) FROM repos")

# Sequential keep-alive requests; p50/p95/p99 of wall time per response.
measure() {
  python3 - "$URL" "$1" "$N" <<'PY'
import http.client, sys, time, urllib.parse
url, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
u = urllib.parse.urlparse(url)
c = http.client.HTTPConnection(u.hostname, u.port)
lat = []
for i in range(n + 20):
    t = time.perf_counter()
    c.request("GET", path, headers={"Accept": "text/html"})
    r = c.getresponse(); body = r.read()
    if r.status != 200: raise SystemExit(f"{path}: HTTP {r.status}")
    if i >= 20: lat.append((time.perf_counter() - t) * 1000)
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
print(f"{q(0.5):.1f} {q(0.95):.1f} {q(0.99):.1f} {len(body)}")
PY
}
rps() { wrk -t2 -c4 -d5s "$URL$1" 2>/dev/null | awk '/Requests\/sec/ {printf "%.0f", $2}'; }

echo "## Dashboard render time ($COUNT repos, $N sequential requests per page after 20 warm-up)"
echo
echo "| page | p50 ms | p95 ms | p99 ms | bytes | req/s (wrk, 4 conns) |"
echo "|---|---|---|---|---|---|"
for p in "/api/models?limit=30" "/api/models/bench/page-model" "/bench/page-model" "/models" "/models?sort=downloads" "/models?task=text-classification&license=mit" "/models?q=model-123" "/bench/page-model/tree/main" "/bench/page-model/blob/main/model.safetensors" "/bench/page-model/commits/main"; do
  read -r p50 p95 p99 bytes < <(measure "$p")
  echo "| \`$p\` | $p50 | $p95 | $p99 | $bytes | $(rps "$p") |"
done
