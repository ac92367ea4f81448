#!/usr/bin/env bash
# Registry benchmarks, side by side in one run on loopback (issue: registry core §7):
#   1. download of a 1 GiB file through /resolve vs nginx serving the same file
#   2. LFS upload of the same file (including verification) vs sha256sum of it
#   3. HEAD /resolve requests per second at 64 connections, p50/p99 (oha)
#   4. peak RSS of hub-api during the upload and the downloads
#   5. Xet (issue 12), with the stock client (huggingface_hub + hf_xet) on both
#      sides: upload of the file through Xet vs through LFS (HF_HUB_DISABLE_XET=1),
#      download by Xet reconstruction vs of a plain blob, /resolve of a
#      Xet-stored file (reassembled by the hub) vs of a plain blob, and the
#      second upload of a checkpoint with 10 % of its tensors changed: bytes
#      sent and bytes the store grew, Xet vs LFS.
# Commits and listings at repo scale (issue 17) have their own scripts:
#   scripts/bench/commits.sh (1-file commits at 1k/10k/100k files, a 10,000-file
#   commit against git), listing.sh (tree pages, paths-info, resolve at 120k
#   files) and large_folder.sh (upload_folder of 100,000 files).
# Usage: scripts/bench/registry.sh [SIZE_MIB]   (default 1024)
# Installs nginx with apt and oha with cargo when missing. Prints a Markdown report.
#   HUB_BIN=path/to/hub-api to skip the release build.
#   PY=python with tests/conformance/requirements.txt (default .venv/test/bin/python,
#   which scripts/test.sh makes). SKIP_XET=1 skips part 5; ONLY_XET=1 runs only part 5.
#   CKPT_TENSORS=N: the checkpoint of part 5 has N tensors of 1 MiB (default SIZE_MIB/4).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
SIZE_MIB=${1:-1024}
RUNS=${RUNS:-3}

need() { command -v "$1" >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null; }; }
need curl curl
if [[ -z "${ONLY_XET:-}" ]]; then
  need nginx nginx
  command -v oha >/dev/null || cargo install oha --locked --quiet
fi

. scripts/lib/hub.sh
. scripts/lib/nginx.sh
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
BYTES=$((SIZE_MIB * 1024 * 1024))
[[ -n "${ONLY_XET:-}" ]] || head -c "$BYTES" /dev/urandom > "$FILE"
AUTH="Authorization: Bearer $TOKEN"
curl -sf -H "$AUTH" -H 'Content-Type: application/json' -d '{"name":"bench"}' "$URL/api/repos/create" >/dev/null

peak_rss() { grep VmHWM "/proc/$HUB_PID/status" | awk '{print $2}'; }
rss() { grep VmRSS "/proc/$HUB_PID/status" | awk '{print $2}'; }
RSS_IDLE=$(rss)

now() { date +%s.%N; }
elapsed() { echo "$2 - $1" | bc -l; }
min() { printf '%s\n' "$@" | sort -g | head -1; }
mbps() { echo "scale=1; $BYTES / 1048576 / $1" | bc -l; }
ratio() { echo "scale=2; $1 / $2" | bc -l; }

if [[ -z "${ONLY_XET:-}" ]]; then
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
nginx_static "$WORK/nginx/www" 18089
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

fi # ONLY_XET

# --- 5. Xet vs LFS, both with the stock client ----------------------------------
xet_legs() {
  PY=${PY:-$ROOT/.venv/test/bin/python}
  "$PY" -c 'import huggingface_hub, hf_xet, safetensors, numpy' ||
    { echo "part 5 needs PY with tests/conformance/requirements.txt installed (or SKIP_XET=1)" >&2; return 1; }
  local driver="$ROOT/scripts/bench/xet_driver.py" objects="$WORK/hub/objects" i h
  XORB_DIR="$objects/xorbs/default"
  export HF_ENDPOINT="$URL" HF_TOKEN="$TOKEN" HF_HUB_DISABLE_TELEMETRY=1 HF_HUB_DISABLE_PROGRESS_BARS=1
  unset HF_HUB_DISABLE_XET
  drive() { "$PY" "$driver" "$@"; }
  field() { "$PY" -c 'import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])[sys.argv[1]])' "$1"; }
  fresh() { mktemp -d "$WORK/hf-home-XXXXXX"; }   # a fresh HF_HOME: no local Xet caches
  store_bytes() { find "$objects" -type f -not -path '*/staging/*' -printf '%s\n' | awk '{s+=$1} END {printf "%.0f\n", s}'; }
  local free
  free=$(df -B1 --output=avail "$WORK" | tail -1)
  (( free > (2 * RUNS + 2) * BYTES + 1073741824 )) || { echo "part 5 needs about (2 RUNS + 2) x SIZE + 1 GiB free in $WORK (has $free B)" >&2; return 1; }
  XET_UP=(); LFS_UP=(); XET_DOWN=(); LFS_DOWN=(); XET_CURL=(); BLOB_CURL=()
  for i in $(seq "$RUNS"); do
    # New random files each run: identical content would be deduplicated. One
    # file on disk at a time (plus the hub's copy): the hub keeps 2 files a run.
    head -c "$BYTES" /dev/urandom > "$WORK/xet-$i.bin"
    XET_UP+=("$(HF_HOME=$(fresh) drive upload "bench/xet$i" "$WORK/xet-$i.bin" | field seconds)")
    # What was timed went where it should: the hub advertises Xet for it.
    curl -sfI -H "$AUTH" "$URL/bench/xet$i/resolve/main/xet-$i.bin" | grep -qi '^x-xet-hash:' ||
      { echo "xet$i: no X-Xet-Hash on /resolve: the upload did not go through Xet" >&2; return 1; }
    h=$(fresh)
    XET_DOWN+=("$(HF_HOME=$h drive download "bench/xet$i" "xet-$i.bin" "$h/c" | field seconds)")
    if [[ $i == 1 ]]; then cmp "$WORK/xet-$i.bin" "$h"/c/models--bench--xet1/snapshots/*/xet-1.bin; fi
    rm -rf "$h"
    t0=$(now); curl -sf -H "$AUTH" -o /dev/null "$URL/bench/xet$i/resolve/main/xet-$i.bin"; t1=$(now); XET_CURL+=("$(elapsed "$t0" "$t1")")
    if [[ $i == 1 ]]; then
      [[ "$(curl -sf -H "$AUTH" "$URL/bench/xet1/resolve/main/xet-1.bin" | sha256sum | cut -d' ' -f1)" == "$(sha256sum < "$WORK/xet-1.bin" | cut -d' ' -f1)" ]] ||
        { echo "/resolve of the Xet-stored file does not match the upload" >&2; return 1; }
    fi
    rm -f "$WORK/xet-$i.bin"

    head -c "$BYTES" /dev/urandom > "$WORK/lfs-$i.bin"
    LFS_UP+=("$(HF_HOME=$(fresh) HF_HUB_DISABLE_XET=1 drive upload "bench/lfs$i" "$WORK/lfs-$i.bin" | field seconds)")
    if curl -sfI -H "$AUTH" "$URL/bench/lfs$i/resolve/main/lfs-$i.bin" | grep -qi '^x-xet-hash:'; then
      echo "lfs$i: X-Xet-Hash on a plain blob" >&2; return 1
    fi
    h=$(fresh)
    LFS_DOWN+=("$(HF_HOME=$h drive download "bench/lfs$i" "lfs-$i.bin" "$h/c" | field seconds)")
    rm -rf "$h"
    t0=$(now); curl -sf -H "$AUTH" -o /dev/null "$URL/bench/lfs$i/resolve/main/lfs-$i.bin"; t1=$(now); BLOB_CURL+=("$(elapsed "$t0" "$t1")")
    rm -f "$WORK/lfs-$i.bin"
  done
  RSS_XET=$(peak_rss)

  # The second upload of a fine-tune: every 10th tensor changed, to a new repo,
  # with a fresh HF_HOME (only the hub's global dedup query can help).
  CKPT_TENSORS=${CKPT_TENSORS:-$((SIZE_MIB / 4))}
  local changed s0 off
  changed=$(seq -s, 3 10 $((CKPT_TENSORS - 1)))
  CKPT_CHANGED=$(tr ',' '\n' <<<"$changed" | wc -l)
  drive checkpoint "$WORK/base.safetensors" --tensors "$CKPT_TENSORS" >/dev/null
  drive checkpoint "$WORK/model.safetensors" --tensors "$CKPT_TENSORS" --changed "$changed" --seed 1 >/dev/null
  CKPT_BYTES=$(stat -c %s "$WORK/model.safetensors")
  s0=$(store_bytes)
  HF_HOME=$(fresh) drive upload bench/base "$WORK/base.safetensors" >/dev/null
  CKPT_BASE_STORED=$(( $(store_bytes) - s0 ))
  s0=$(store_bytes); off=$(stat -c %s "$HUB_LOG_FILE")
  CKPT_XET_T=$(HF_HOME=$(fresh) drive upload bench/tuned "$WORK/model.safetensors" | field seconds)
  CKPT_XET_STORED=$(( $(store_bytes) - s0 ))
  CKPT_XET_SENT=$(drive xorbs-sent "$HUB_LOG_FILE" "$off" "$XORB_DIR" | field bytes)
  # LFS has no dedup: another fine-tune (different tensors changed) to a new repo.
  drive checkpoint "$WORK/model.safetensors" --tensors "$CKPT_TENSORS" --changed "$changed" --seed 2 >/dev/null
  s0=$(store_bytes)
  CKPT_LFS_T=$(HF_HOME=$(fresh) HF_HUB_DISABLE_XET=1 drive upload bench/tuned-lfs "$WORK/model.safetensors" | field seconds)
  CKPT_LFS_STORED=$(( $(store_bytes) - s0 ))
  rm -rf "$WORK"/hf-home-* "$WORK/base.safetensors" "$WORK/model.safetensors"
}
XET_REPORT=""
if [[ -z "${SKIP_XET:-}" ]]; then
  xet_legs
  pct() { echo "scale=1; 100 * $1 / $2" | bc -l; }
  XET_REPORT=$(cat <<XREPORT

### Xet (issue 12): stock client, huggingface_hub $("$PY" -c 'import huggingface_hub; print(huggingface_hub.__version__)') + hf_xet $("$PY" -c 'from importlib.metadata import version; print(version("hf_xet"))')

| measurement | Xet | peer | ratio (Xet/peer) | goal |
|---|---|---|---|---|
| upload, upload_file (Xet vs HF_HUB_DISABLE_XET=1, LFS) | $(mbps "$(min "${XET_UP[@]}")") MiB/s | $(mbps "$(min "${LFS_UP[@]}")") MiB/s | $(ratio "$(min "${LFS_UP[@]}")" "$(min "${XET_UP[@]}")")x | >= 1.0x |
| download, hf_hub_download (Xet reconstruction vs a plain blob) | $(mbps "$(min "${XET_DOWN[@]}")") MiB/s | $(mbps "$(min "${LFS_DOWN[@]}")") MiB/s | $(ratio "$(min "${LFS_DOWN[@]}")" "$(min "${XET_DOWN[@]}")")x | >= 0.9x |
| download, curl /resolve (Xet-stored, reassembled by the hub, vs a plain blob) | $(mbps "$(min "${XET_CURL[@]}")") MiB/s | $(mbps "$(min "${BLOB_CURL[@]}")") MiB/s | $(ratio "$(min "${BLOB_CURL[@]}")" "$(min "${XET_CURL[@]}")")x | >= 0.9x |

Second upload of a checkpoint ($CKPT_TENSORS float32 tensors of 1 MiB, $CKPT_BYTES B; $CKPT_CHANGED tensors changed) to a new repo of the same user, fresh HF_HOME:
Xet sent $CKPT_XET_SENT B of xorbs ($(pct "$CKPT_XET_SENT" "$CKPT_BYTES") % of the file) and the store grew by $CKPT_XET_STORED B ($(pct "$CKPT_XET_STORED" "$CKPT_BYTES") %; goal <= 20 %) in $(printf '%.1f' "$CKPT_XET_T") s;
LFS stored $CKPT_LFS_STORED B ($(pct "$CKPT_LFS_STORED" "$CKPT_BYTES") %) in $(printf '%.1f' "$CKPT_LFS_T") s. (The first upload stored $CKPT_BASE_STORED B: float32 compresses a little.)
Peak RSS of hub-api after the Xet legs: $((RSS_XET / 1024)) MiB.
XREPORT
)
fi

# --- report ---------------------------------------------------------------
if [[ -n "${ONLY_XET:-}" ]]; then
  echo "## Registry, Xet only ($SIZE_MIB MiB file, best of $RUNS, $(nproc) cores, $(date -u +%Y-%m-%d))"
  echo "$XET_REPORT"
  exit 0
fi
SHA_T=$(min "${SHA_TIMES[@]}"); UP_T=$(min "${UP_TIMES[@]}")
NG_T=$(min "${NGINX_TIMES[@]}"); HUB_T=$(min "${HUB_TIMES[@]}")
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
$XET_REPORT
REPORT
