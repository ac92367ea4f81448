#!/usr/bin/env bash
# HEAD /resolve against nginx's HEAD of a static file, side by side in one
# run (issue 14: "at least 0.5x nginx's HEAD req/s"): hey -m HEAD -c 64 for
# DURATION seconds against
#   1. nginx serving a file from disk (the peer),
#   2. /resolve/main of a regular (git-stored) file of a public repo,
#   3. /resolve/main of an LFS file of the same repo,
#   4. /resolve/main with a token (private repo).
# Each hub case is warmed first (the per-process /resolve cache); the report
# gives req/s, p50 and p99, and each hub case's ratio to nginx.
# Usage: scripts/bench/head.sh [DURATION_S]   (default 10)
#   HUB_BIN=target/release/examples/hub-serve (else a release build of hub-api)
# Installs nginx and hey (Debian) when missing. Prints a Markdown report.
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${1:-10}
CONNS=${CONNS:-64}
need() { command -v "$1" >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null; }; }
need nginx nginx
need hey hey
need curl curl

. scripts/lib/hub.sh
. scripts/lib/nginx.sh
[[ -n "${HUB_BIN:-}" ]] || hub_build release
hub_on_exit '[[ -n "${NGINX_PID:-}" ]] && kill "$NGINX_PID" 2>/dev/null'
export HUB_RATE_LIMIT_TOKEN_RPS=0 HUB_RATE_LIMIT_ANON_RPS=0
hub_start --no-worker
WORK="$HUB_WORK"; URL="$HUB_URL"
hub_admin create-user bench >/dev/null
TOKEN=$(hub_admin create-token bench --scopes read,write)
AUTH="Authorization: Bearer $TOKEN"
for repo in pub priv; do
  private=false; [[ $repo == priv ]] && private=true
  curl -sf -H "$AUTH" -H 'Content-Type: application/json' -d "{\"name\":\"$repo\",\"private\":$private}" "$URL/api/repos/create" >/dev/null
done

# A regular file (inline in the commit) and a 1 MiB LFS file.
head -c 1048576 /dev/urandom > "$WORK/w.bin"
SHA=$(sha256sum "$WORK/w.bin" | cut -d' ' -f1)
for repo in pub priv; do
  HREF=$(curl -sf -H "$AUTH" -H 'Content-Type: application/vnd.git-lfs+json' \
    -d "{\"operation\":\"upload\",\"transfers\":[\"basic\"],\"objects\":[{\"oid\":\"$SHA\",\"size\":1048576}]}" \
    "$URL/bench/$repo.git/info/lfs/objects/batch" | python3 -c 'import json,sys; a=json.load(sys.stdin)["objects"][0].get("actions"); print(a["upload"]["href"] if a else "")')
  [[ -z "$HREF" ]] || curl -sf -T "$WORK/w.bin" -H 'Expect:' "$HREF" >/dev/null
  CONFIG=$(printf '{"architectures": ["BertModel"], "hidden_size": 384}' | base64 -w0)
  printf '{"key":"header","value":{"summary":"bench"}}\n{"key":"file","value":{"path":"config.json","content":"%s","encoding":"base64"}}\n{"key":"lfsFile","value":{"path":"w.bin","algo":"sha256","oid":"%s","size":1048576}}\n' "$CONFIG" "$SHA" |
    curl -sf -H "$AUTH" --data-binary @- "$URL/api/models/bench/$repo/commit/main" >/dev/null
done

mkdir -p "$WORK/nginx/www"
printf '{"architectures": ["BertModel"], "hidden_size": 384}' > "$WORK/nginx/www/config.json"
nginx_static "$WORK/nginx/www" 18090

# run NAME URL [header]: hey's req/s, p50 and p99 (ms), after a 2 s warm-up;
# fails unless every answer is 200.
run() {
  local name=$1 url=$2 hdr=${3:-}
  local args=(-m HEAD -c "$CONNS")
  [[ -n "$hdr" ]] && args+=(-H "$hdr")
  [[ "$(curl -s -o /dev/null -w '%{http_code}' -I ${hdr:+-H "$hdr"} "$url")" == 200 ]] || { echo "$name: not 200" >&2; exit 1; }
  hey "${args[@]}" -z 2s "$url" >/dev/null
  local cpu0; cpu0=$(hub_cpu)
  hey "${args[@]}" -z "${DURATION}s" "$url" > "$WORK/$name.txt"
  python3 - "$WORK/$name.txt" "$name" "$cpu0" "$(hub_cpu)" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
total = int(re.search(r"\[200\]\s+(\d+) responses", t)[1])
cpu_us = (int(sys.argv[4]) - int(sys.argv[3])) * 1e6 / 100 / total  # clock ticks of 10 ms
codes = dict(re.findall(r"\[(\d+)\]\s+(\d+) responses", t))
assert set(codes) == {"200"}, f"{sys.argv[2]}: answers other than 200: {codes}"
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t)[1])
p = dict(re.findall(r"(\d+)%+ in ([\d.]+) secs", t))
print(f"{rps:.0f} {float(p['50'])*1000:.2f} {float(p['99'])*1000:.2f} {cpu_us:.1f}")
PY
}
# The hub's CPU time so far (user + system, all threads, clock ticks): its
# CPU per request is the column that contention from other processes on the
# machine moves least.
hub_cpu() { awk '{print $14 + $15}' "/proc/$HUB_PID/stat"; }
read -r NG_RPS NG_P50 NG_P99 _ <<<"$(run nginx http://127.0.0.1:18090/config.json)"
read -r PUB_RPS PUB_P50 PUB_P99 PUB_CPU <<<"$(run pub "$URL/bench/pub/resolve/main/config.json")"
read -r LFS_RPS LFS_P50 LFS_P99 LFS_CPU <<<"$(run lfs "$URL/bench/pub/resolve/main/w.bin")"
read -r PRIV_RPS PRIV_P50 PRIV_P99 PRIV_CPU <<<"$(run priv "$URL/bench/priv/resolve/main/config.json" "$AUTH")"
ratio() { python3 -c "import sys; print(f\"{float(sys.argv[1]) / float(sys.argv[2]):.2f}\")" "$1" "$2"; }
cat <<REPORT
## HEAD /resolve vs nginx ($(date -u +%Y-%m-%d), $CONNS connections, ${DURATION} s each, hey -m HEAD)
CPU: $(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores; $(grep -o -w -E 'avx2|avx512f|amx_tile' /proc/cpuinfo | sort -u | tr '\n' ' ')

| case | req/s | p50 | p99 | ratio to nginx | hub CPU per request |
|---|---|---|---|---|---|
| nginx, static file | $NG_RPS | ${NG_P50} ms | ${NG_P99} ms | 1.00x | |
| /resolve/main, regular file, public | $PUB_RPS | ${PUB_P50} ms | ${PUB_P99} ms | $(ratio "$PUB_RPS" "$NG_RPS")x | ${PUB_CPU} µs |
| /resolve/main, LFS file, public | $LFS_RPS | ${LFS_P50} ms | ${LFS_P99} ms | $(ratio "$LFS_RPS" "$NG_RPS")x | ${LFS_CPU} µs |
| /resolve/main, private, token | $PRIV_RPS | ${PRIV_P50} ms | ${PRIV_P99} ms | $(ratio "$PRIV_RPS" "$NG_RPS")x | ${PRIV_CPU} µs |
REPORT
