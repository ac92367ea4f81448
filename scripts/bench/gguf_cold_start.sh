#!/usr/bin/env bash
# Cold start of a GGUF text-generation endpoint, POST /api/v1/endpoints -> first streamed
# token with an empty worker cache, with and without the GGUF probe child
# (hub-worker engine::generate::llama::probe), alternated round by round on one release hub.
#
#   scripts/bench/gguf_cold_start.sh [--rounds N]      (HUB_BIN=path/to/hub-api: no build)
#
# Each round deletes the endpoint, empties the in-process worker's cache (blobs, model
# directories, markers) and creates the endpoint again, so the weights are pulled, probed
# and loaded from scratch (the GGUF stays in the page cache: both legs pay the same I/O).
# The "no probe" leg writes the probe's pass marker for the GGUF's sha256 into the emptied
# cache first, as a worker that probed the file before would have it: the worker then
# skips the child and nothing else changes. Phase times come from the hub log (pull, then
# probe + load; the probe child's own time). Needs the Gemma-3-270M fixture (scripts/worker/fetch-gemma.sh) and a venv with
# httpx and huggingface_hub ($GENBENCH_VENV, made when missing).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

ROUNDS=3
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS="$2"; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

PYTHON_SYS="${PYTHON:-python3}"
export "$(PYTHON="$PYTHON_SYS" scripts/worker/fetch-gemma.sh "$ROOT/target/fixtures" | tail -n1)"
VENV="${GENBENCH_VENV:-$HOME/.cache/paddock/genbench-venv}"
if [ ! -x "$VENV/bin/python" ]; then "$PYTHON_SYS" -m venv "$VENV"; fi
PY="$VENV/bin/python"
if ! "$PY" -c 'import httpx, huggingface_hub' 2>/dev/null; then
  "$PY" -m pip install --quiet --disable-pip-version-check httpx huggingface_hub
fi
GENLOAD=("$PY" "$ROOT/scripts/bench/genload.py")

. scripts/lib/hub.sh
[[ -n "${HUB_BIN:-}" ]] || { echo "bench: cargo build --release --bin hub-api" >&2; hub_build release; }
echo "bench: hub $HUB_BIN" >&2
export HUB_RATE_LIMIT_TOKEN_RPS=0 HUB_RATE_LIMIT_ANON_RPS=0
hub_start
CACHE="$HUB_WORK/hub/worker-cache"
hub_admin create-user bench >/dev/null
TOKEN="$(hub_admin create-token bench --scopes read,write --name bench)"
HF_HUB_DISABLE_PROGRESS_BARS=1 HF_HUB_DISABLE_TELEMETRY=1 HF_HUB_DISABLE_XET=1 HF_HOME="$HUB_WORK/hf-home" \
  "$PY" - "$HUB_URL" "$TOKEN" "$PADDOCK_GEMMA_GGUF" <<'EOF'
import sys
from huggingface_hub import HfApi
url, token, gguf = sys.argv[1:4]
api = HfApi(endpoint=url, token=token)
api.create_repo("bench/gemma-3-270m-gguf", exist_ok=True)
api.upload_file(path_or_fileobj=gguf, path_in_repo="gemma-3-270m-q4_k_m.gguf",
                repo_id="bench/gemma-3-270m-gguf", commit_message="bench: upload")
EOF
SHA="$(sha256sum "$PADDOCK_GEMMA_GGUF" | cut -d' ' -f1)"
TAG="$(grep -o 'const ENGINE_TAG: &str = "[^"]*"' hub-worker/src/engine/generate/llama/probe.rs | cut -d'"' -f2)"
API="$HUB_URL/api/v1/endpoints/bench"
AUTH=(-H "Authorization: Bearer $TOKEN")

# ms between the last two log lines matching $1 and $2 after line $3 (empty if absent).
phase_ms() {
  tail -n +"$3" "$HUB_LOG_FILE" | "$PY" -c '
import re, sys, datetime
a, b = sys.argv[1], sys.argv[2]
ta = tb = None
for line in sys.stdin:
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z", line)
    if not m:
        continue
    t = datetime.datetime.fromisoformat(m.group(1)[:26])
    if a in line: ta = t
    if b in line and ta is not None: tb = t
print(f"{(tb - ta).total_seconds() * 1000:.0f}" if ta and tb else "")
' "$1" "$2"
}

echo
echo "- CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores visible"
echo "- SIMD flags: $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|fma|avx512f|avx512_vnni|amx_tile)$' | tr '\n' ' ')"
echo "- main $(git rev-parse --short HEAD), load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| round | probe | POST -> first token s | pull ms | pulled -> decoder loaded ms | probe child ms |"
echo "|---:|---|---:|---:|---:|---:|"
for r in $(seq 1 "$ROUNDS"); do
  order=(probe skip)
  [ $((r % 2)) = 0 ] && order=(skip probe)
  for mode in "${order[@]}"; do
    curl -fsS -o /dev/null -X DELETE "$API/gemma" "${AUTH[@]}" 2>/dev/null || true
    # Wait for the replica to unload before emptying the cache under it.
    for _ in $(seq 1 100); do
      curl -fsS -o /dev/null "$API/gemma" "${AUTH[@]}" 2>/dev/null || break
      sleep 0.1
    done
    sleep 1
    # The cache's directories stay (the worker made them at start); their contents go.
    find "$CACHE/blobs" "$CACHE/models" "$CACHE/tmp" -mindepth 1 -maxdepth 2 \
      \( -type f -o -type l -o -path "$CACHE/models/*" \) -exec rm -rf {} + 2>/dev/null || true
    if [ "$mode" = skip ]; then
      mkdir -p "$CACHE/blobs/probed" && : >"$CACHE/blobs/probed/$SHA.$TAG"
    fi
    from="$(($(wc -l <"$HUB_LOG_FILE") + 1))"
    since="$(date +%s.%N)"
    code="$(curl -sS -o /dev/null -w '%{http_code}' -X POST "$API" "${AUTH[@]}" \
      -H 'Content-Type: application/json' \
      -d '{"name": "gemma", "repository": "bench/gemma-3-270m-gguf", "task": "text-generation",
           "min_replicas": 1, "max_replicas": 1, "access": "protected"}')"
    [ "$code" = 201 ] || { echo "bench: create endpoint: HTTP $code" >&2; exit 1; }
    cold="$("${GENLOAD[@]}" first --url "$HUB_URL" --path /endpoints/bench/gemma/v1/completions \
      --token "$TOKEN" --since "$since" --timeout 300)"
    probe_ms="$(tail -n +"$from" "$HUB_LOG_FILE" | grep -o 'GGUF probe passed.*elapsed_ms=[0-9]*' | grep -o '[0-9]*$' | tail -1 || true)"
    pull_ms="$(phase_ms 'assignment noticed' 'pulled' "$from")"
    load_ms="$(phase_ms 'pulled' 'decoder loaded' "$from")"
    echo "| $r | ${mode/skip/no (marker)} | $cold | ${pull_ms:--} | ${load_ms:--} | ${probe_ms:--} |"
  done
done
echo
echo "- load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
