#!/usr/bin/env bash
# Measures the cost of authentication and authorization on `HEAD /resolve`:
# an authenticated request for a private repo's file vs an anonymous request
# for a public repo's file (same file, same size), with hey, the hub pinned to
# core 0 and hey to core 1. Prints p50/p99 and requests/s for each.
#
#   scripts/bench-auth.sh [SECONDS] [CONNECTIONS]     (default 15 s, 16 connections)
#   HUB_AUTH_CACHE_TTL_SECS=0 scripts/bench-auth.sh    (without the token cache)
#
# Needs: a built hub (target/release/hub-api if present, else target/debug),
# hey (apt-get install hey; wrk cannot do HEAD with a Content-Length), curl,
# PostgreSQL server binaries.
set -euo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/lib/hub.sh"
[ -x "$PADDOCK_TARGET/release/hub-api" ] && hub_need_bin release || hub_need_bin debug
SECS="${1:-15}"
CONNS="${2:-16}"
command -v hey >/dev/null || { echo "install hey: apt-get install hey" >&2; exit 1; }

export HUB_RATE_LIMIT_TOKEN_RPS=0 HUB_RATE_LIMIT_ANON_RPS=0 HUB_LOG=warn HUB_HTTP_WORKERS=1 HUB_PG_UNSAFE_FAST=true
HUB_PREFIX=(taskset -c 0)
hub_start --no-worker
URL="$HUB_URL"
DATA="$HUB_WORK"
hub_admin create-user bench >/dev/null
TOKEN="$(hub_admin create-token bench --scopes read,write --name bench)"

AUTH="Authorization: Bearer $TOKEN"
BODY="$(printf '{"key":"header","value":{"summary":"bench","description":""}}\n{"key":"file","value":{"path":"config.json","content":"%s","encoding":"base64"}}\n' "$(printf '{"model_type":"bert"}' | base64 -w0)")"
for repo in pub priv; do
  private=false; [ "$repo" = priv ] && private=true
  curl -fsS -X POST "$URL/api/repos/create" -H "$AUTH" -H 'Content-Type: application/json' \
    -d "{\"name\":\"$repo\",\"private\":$private}" >/dev/null
  curl -fsS -X POST "$URL/api/models/bench/$repo/commit/main" -H "$AUTH" \
    -H 'Content-Type: application/x-ndjson' --data-binary "$BODY" >/dev/null
done
# Sanity: anonymous private is 404, authenticated private is 200.
[ "$(curl -s -o /dev/null -w '%{http_code}' -I "$URL/bench/priv/resolve/main/config.json")" = 404 ]
[ "$(curl -s -o /dev/null -w '%{http_code}' -I -H "$AUTH" "$URL/bench/priv/resolve/main/config.json")" = 200 ]

run() { # name, path, extra hey args...
  local name="$1" path="$2"; shift 2
  taskset -c 1 hey -z "${SECS}s" -c "$CONNS" -m HEAD "$@" "$URL$path" >"$DATA/bench.txt"
  local p50 p99 rps codes
  p50="$(awk '$1=="50%%"||$1=="50%"{print $3*1000}' "$DATA/bench.txt")"
  p99="$(awk '$1=="99%%"||$1=="99%"{print $3*1000}' "$DATA/bench.txt")"
  rps="$(awk '/Requests\/sec/{print $2}' "$DATA/bench.txt")"
  codes="$(awk '/Status code distribution/{f=1;next} f&&/\[/{printf "%s%s", $1, $2} /^$/{f=0}' "$DATA/bench.txt")"
  printf '%-32s p50 %6.2f ms  p99 %6.2f ms  req/s %9s  status %s\n' "$name" "$p50" "$p99" "$rps" "$codes"
}
echo "hub: $HUB_BIN; token cache TTL: ${HUB_AUTH_CACHE_TTL_SECS:-5}s; hey: $CONNS connections, ${SECS}s each; hub (1 HTTP worker) on core 0, hey on core 1"
run "warmup" /bench/pub/resolve/main/config.json >/dev/null
run "anonymous, public repo" /bench/pub/resolve/main/config.json
run "token, private repo" /bench/priv/resolve/main/config.json -H "$AUTH"
run "token, public repo" /bench/pub/resolve/main/config.json -H "$AUTH"
run "anonymous, public repo (again)" /bench/pub/resolve/main/config.json
