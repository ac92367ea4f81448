#!/usr/bin/env bash
# Registry benchmarks, side by side in one run on loopback (issue: registry core §7):
#   1. download of a 1 GiB file through /resolve vs nginx serving the same file
#   2. LFS upload of the same file (including verification) vs sha256sum of it
#   3. HEAD /resolve requests per second at 64 connections, p50/p99 (oha)
#   4. peak RSS of hub-api during the upload and the downloads
# Usage: scripts/bench/registry.sh [SIZE_MIB]   (default 1024)
# Installs nginx with apt and oha with cargo when missing. Prints a Markdown report.
#   HUB_BIN=path/to/hub-api to skip the release build.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
SIZE_MIB=${1:-1024}
RUNS=${RUNS:-3}

need() { command -v "$1" >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null; }; }
need nginx nginx
need curl curl
command -v oha >/dev/null || cargo install oha --locked --quiet

. scripts/lib/hub.sh
[[ -n "${HUB_BIN:-}" ]] || hub_build release
hub_on_exit '[[ -n "${NGINX_PID:-}" ]] && kill "$NGINX_PID" 2>/dev/null'

# --- the hub -------------------------------------------------------------
# The benchmark is one client: lift the per-IP/token rate limits (else HEAD measures 429s).
export HUB_RATE_LIMIT_TOKEN_RPS=0 HUB_RATE_LIMIT_ANON_RPS=0
hub_start --no-worker --http-workers 2
WORK="$HUB_WORK"
URL="$HUB_URL"
hub_admin create-user bench >/dev/null
TOKEN=$(hub_admin create-token bench --scopes read,write)

FILE="$WORK/weights.bin"
head -c $((SIZE_MIB * 1024 * 1024)) /dev/urandom > "$FILE"
BYTES=$(stat -c %s "$FILE")
AUTH="Authorization: Bearer $TOKEN"
curl -sf -H "$AUTH" -H 'Content-Type: application/json' -d '{"name":"bench"}' "$URL/api/repos/create" >/dev/null

peak_rss() { grep VmHWM "/proc/$HUB_PID/status" | awk '{print $2}'; }
rss() { grep VmRSS "/proc/$HUB_PID/status" | awk '{print $2}'; }
RSS_IDLE=$(rss)

now() { date +%s.%N; }
elapsed() { echo "$2 - $1" | bc -l; }
min() { printf '%s\n' "$@" | sort -g | head -1; }

# --- 2. upload vs sha256sum -------------------------------------------------
SHA_TIMES=()
for _ in $(seq "$RUNS"); do
  t0=$(now); SHA=$(sha256sum "$FILE" | cut -d' ' -f1); t1=$(now)
  SHA_TIMES+=("$(elapsed "$t0" "$t1")")
done
UP_TIMES=()
for i in $(seq "$RUNS"); do
  # A fresh repo each run so the object is uploaded (and verified) again.
  curl -sf -H "$AUTH" -H 'Content-Type: application/json' -d "{\"name\":\"up$i\"}" "$URL/api/repos/create" >/dev/null
  HREF=$(curl -sf -H "$AUTH" -H 'Content-Type: application/vnd.git-lfs+json' \
    -d "{\"operation\":\"upload\",\"transfers\":[\"basic\"],\"objects\":[{\"oid\":\"$SHA\",\"size\":$BYTES}]}" \
    "$URL/bench/up$i.git/info/lfs/objects/batch" | python3 -c 'import json,sys; print(json.load(sys.stdin)["objects"][0]["actions"]["upload"]["href"])')
  t0=$(now); curl -sf -T "$FILE" -H 'Expect:' "$HREF" >/dev/null; t1=$(now)
  UP_TIMES+=("$(elapsed "$t0" "$t1")")
done
RSS_UPLOAD=$(peak_rss)
printf '{"key":"header","value":{"summary":"bench"}}\n{"key":"lfsFile","value":{"path":"weights.bin","algo":"sha256","oid":"%s","size":%s}}\n' "$SHA" "$BYTES" |
  curl -sf -H "$AUTH" --data-binary @- "$URL/api/models/bench/up1/commit/main" >/dev/null

# --- 1. download through /resolve vs nginx -------------------------------
mkdir -p "$WORK/nginx/www"
ln "$FILE" "$WORK/nginx/www/weights.bin" 2>/dev/null || cp "$FILE" "$WORK/nginx/www/weights.bin"
cat > "$WORK/nginx/nginx.conf" <<CONF
worker_processes 2;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on; tcp_nopush on;
  client_body_temp_path $WORK/nginx; proxy_temp_path $WORK/nginx; fastcgi_temp_path $WORK/nginx; uwsgi_temp_path $WORK/nginx; scgi_temp_path $WORK/nginx;
  server { listen 127.0.0.1:18089; root $WORK/nginx/www; }
}
CONF
nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" &
NGINX_PID=$!
sleep 1
NGINX_TIMES=(); HUB_TIMES=()
for _ in $(seq "$RUNS"); do
  t0=$(now); curl -sf -o /dev/null http://127.0.0.1:18089/weights.bin; t1=$(now); NGINX_TIMES+=("$(elapsed "$t0" "$t1")")
  t0=$(now); curl -sf -o /dev/null "$URL/bench/up1/resolve/main/weights.bin"; t1=$(now); HUB_TIMES+=("$(elapsed "$t0" "$t1")")
done
RSS_DOWNLOAD=$(peak_rss)
# Correctness of what was timed.
GOT=$(curl -sf "$URL/bench/up1/resolve/main/weights.bin" | sha256sum | cut -d' ' -f1)
[[ "$GOT" == "$SHA" ]] || { echo "download does not match the upload"; exit 1; }

# --- 3. HEAD /resolve at 64 connections (oha; wrk cannot do HEAD) -----------
oha -z 10s -c 64 -m HEAD --no-tui --output-format json "$URL/bench/up1/resolve/main/weights.bin" > "$WORK/head.json"

# --- report ---------------------------------------------------------------
SHA_T=$(min "${SHA_TIMES[@]}"); UP_T=$(min "${UP_TIMES[@]}")
NG_T=$(min "${NGINX_TIMES[@]}"); HUB_T=$(min "${HUB_TIMES[@]}")
mbps() { echo "scale=1; $BYTES / 1048576 / $1" | bc -l; }
ratio() { echo "scale=2; $1 / $2" | bc -l; }
read -r rps p50 p99 ok <<<"$(python3 -c '
import json,sys; d=json.load(open(sys.argv[1])); s=d["summary"]; p=d["latencyPercentiles"]
codes=d["statusCodeDistribution"]
assert set(codes) == {"200"}, f"HEAD answered other than 200: {codes}"
print(round(s["requestsPerSec"]), "%.2fms" % (p["p50"]*1000), "%.2fms" % (p["p99"]*1000), "%.4f" % s["successRate"])' "$WORK/head.json")"
cat <<REPORT
## Registry ($SIZE_MIB MiB file, best of $RUNS, $(nproc) cores, $(date -u +%Y-%m-%d))

| measurement | Paddock | peer | ratio (Paddock/peer) | goal |
|---|---|---|---|---|
| download via /resolve vs nginx (sendfile) | $(mbps "$HUB_T") MiB/s | $(mbps "$NG_T") MiB/s | $(ratio "$NG_T" "$HUB_T")x | >= 0.9x |
| LFS upload incl. verification vs sha256sum | $(mbps "$UP_T") MiB/s | $(mbps "$SHA_T") MiB/s | $(ratio "$SHA_T" "$UP_T")x | >= 0.8x |

HEAD /resolve, 64 connections, 10 s (oha -c 64 -m HEAD): **$rps req/s**, p50 $p50, p99 $p99, success rate $ok.

Peak RSS of hub-api (VmHWM): idle $((RSS_IDLE / 1024)) MiB, after the uploads $((RSS_UPLOAD / 1024)) MiB, after the downloads $((RSS_DOWNLOAD / 1024)) MiB (goal: flat, under 200 MiB).
REPORT
