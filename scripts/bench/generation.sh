#!/usr/bin/env bash
# Text-generation benchmark (issue 11, "Benchmark"): one run, same GGUF (Gemma-3-270M Q4_K_M
# from PyPI), same machine, side by side:
#   paddock            the release hub-api with its in-process worker, endpoint created through
#                      /api/v1, measured through the gateway /endpoints/{ns}/{name}/v1/completions;
#   llama-server       llama.cpp's own server, -np = Paddock's slots, same per-slot context;
#   llama-cpp-python   `python -m llama_cpp.server` (one request at a time by design; started
#                      with --interrupt_requests False, else a new request cuts the running
#                      stream short).
# All three stream OpenAI /v1/completions (SSE). Prompts of 512 tokens (distinct from their first
# words, and one per request of every level, so no server reuses a cached prefix: llama-server
# keeps finished prompts in host memory), 128 generated with end-of-sequence ignored
# (`ignore_eos` for Paddock and llama-server; an EOS logit bias for llama-cpp-python, which has
# no ignore_eos), concurrency 1, 4 and 8. Metrics as vLLM's `bench serve` defines them
# (scripts/bench/genload.py). Also: Paddock's cold start (POST /api/v1/endpoints -> first
# streamed token, empty worker cache) and each server's RSS (idle after load, and peak).
# All servers stay up for the whole run and every concurrency level runs its legs back to
# back (llama-server and Paddock adjacent, alternating which goes first), so the machine's
# speed drifting during the run does not turn into a ratio.
#
#   scripts/bench/generation.sh [--peers-only | --paddock-only] [--requests "8 16 24"] [--slots N]
#                               [--context N] [--threads N] [--prefill-chunk N]
#
# HUB_BIN=path/to/hub-api (or target/release/examples/hub-serve) uses a built hub instead of
# `cargo build --release --bin hub-api` (which, alone, resolves other dependency features than a
# build together with the examples, so it is a build of its own: many minutes on 2 cores).
#
# --peers-only skips Paddock (no cargo build), for when its engine is not there yet;
# --paddock-only skips the peers (to try Paddock's knobs, e.g. --prefill-chunk, against the
# peers' numbers of an earlier full run: ratios need both in one run).
# Every server inherits the environment: on a machine shared with other CPU-heavy work, set
# OMP_WAIT_POLICY=PASSIVE (all three use llama.cpp's OpenMP threads, which otherwise spin and
# stall when a core is taken away: measured here, ITL p50 128 -> 48 ms under a load of 5).
# llama-server and its shared libraries are built by scripts/fixtures/build-llama-server.sh
# (llama.cpp vendored by the llama-cpp-python sdist; GGML_NATIVE=OFF like Paddock's own
# llama-cpp-sys-2 build). llama-cpp-python is installed from the same sdist into a venv
# ($GENBENCH_VENV, default ~/.cache/paddock/genbench-venv) *without* building its own copy of
# llama.cpp: it loads the libraries llama-server uses (LLAMA_CPP_LIB_PATH), so both peers run the
# same llama.cpp code and differ only by their servers.
# Prints a Markdown report on stdout; raw JSON lines in target/bench/generation.jsonl.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

PEERS_ONLY=0
PADDOCK_ONLY=0
PREFILL_CHUNK=""       # default: the worker's own (--gen-prefill-chunk)
REQUESTS="8 16 24"     # requests at concurrency 1, 4, 8
CONCS="1 4 8"
SLOTS=4                # hub_types::memory::DEFAULT_GEN_SLOTS
CONTEXT=4096           # hub_types::memory::DEFAULT_GEN_CONTEXT (tokens per slot)
THREADS="$(nproc)"
PROMPT_TOKENS=512
MAX_TOKENS=128
while [ $# -gt 0 ]; do
  case "$1" in
    --peers-only) PEERS_ONLY=1 ;;
    --paddock-only) PADDOCK_ONLY=1 ;;
    --prefill-chunk) PREFILL_CHUNK="$2"; shift ;;
    --requests) REQUESTS="$2"; shift ;;
    --slots) SLOTS="$2"; shift ;;
    --context) CONTEXT="$2"; shift ;;
    --threads) THREADS="$2"; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
read -r -a CONC_ARR <<<"$CONCS"
read -r -a REQ_ARR <<<"$REQUESTS"
[ "${#REQ_ARR[@]}" = "${#CONC_ARR[@]}" ] || { echo "--requests needs ${#CONC_ARR[@]} numbers" >&2; exit 2; }

OUT="$ROOT/target/bench"
mkdir -p "$OUT"
RESULTS="$OUT/generation.jsonl"
: >"$RESULTS"

# --- the machine --------------------------------------------------------------------------
echo "## Text generation benchmark ($(date -u '+%Y-%m-%d %H:%M UTC'), $(git rev-parse --short HEAD))"
echo
echo "- CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores visible"
echo "- SIMD flags: $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(sse4_2|avx|avx2|fma|f16c|bmi2|avx512[a-z_0-9]*|avx_vnni|amx[a-z_0-9]*)$' | tr '\n' ' ')"
echo "- load average before: $(cut -d' ' -f1-3 /proc/loadavg); OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-(unset: libgomp spins)} for every server"

# --- model, servers, venv -----------------------------------------------------------------
PYTHON_SYS="${PYTHON:-python3}"
export "$(PYTHON="$PYTHON_SYS" scripts/worker/fetch-gemma.sh "$ROOT/target/fixtures" | tail -n1)"
eval "$(PYTHON="$PYTHON_SYS" scripts/fixtures/build-llama-server.sh | tail -n3 | sed 's/^/export /')"

VENV="${GENBENCH_VENV:-$HOME/.cache/paddock/genbench-venv}"
if [ ! -x "$VENV/bin/python" ]; then "$PYTHON_SYS" -m venv "$VENV"; fi
PY="$VENV/bin/python"
# llama_cpp loads its libraries at import: set where they are before the check below.
export LLAMA_CPP_LIB_PATH="$LLAMA_CPP_LIB_DIR" MTMD_CPP_LIB="$LLAMA_CPP_LIB_DIR" LLAVA_CPP_LIB="$LLAMA_CPP_LIB_DIR"
if ! "$PY" -c 'import httpx, huggingface_hub, llama_cpp.server' 2>/dev/null; then
  "$PY" -m pip install --quiet --disable-pip-version-check httpx huggingface_hub
  # LLAMA_BUILD=OFF: the Python package only; it loads $LLAMA_CPP_LIB_DIR's libraries.
  CMAKE_ARGS="-DLLAMA_BUILD=OFF -DLLAVA_BUILD=OFF" "$PY" -m pip install --quiet \
    --disable-pip-version-check "$LLAMA_CPP_PYTHON_SDIST[server]"
fi
GENLOAD=("$PY" "$ROOT/scripts/bench/genload.py")

PROMPTS="$OUT/generation-prompts.json"
# Every request of every level gets a prompt of its own (plus one for the warm-up), so no
# server answers from a prefix an earlier level left in its cache (llama-server keeps
# finished prompts in host memory and restores them: `--cache-ram`).
N_PROMPTS=1
for r in "${REQ_ARR[@]}"; do N_PROMPTS=$((N_PROMPTS + r)); done
"${GENLOAD[@]}" prompts --model "$PADDOCK_GEMMA_GGUF" --n "$N_PROMPTS" --tokens "$PROMPT_TOKENS" --out "$PROMPTS"

echo "- model: gemma-3-270m-q4_k_m.gguf ($(du -m "$PADDOCK_GEMMA_GGUF" | cut -f1) MiB), prompts $PROMPT_TOKENS tokens, max_tokens $MAX_TOKENS, temperature 0"
echo "- slots $SLOTS, context $CONTEXT tokens per slot, $THREADS threads; requests per concurrency ($CONCS): $REQUESTS"
echo "- llama.cpp for the peers: $(sed -n 's/^LLAMA_CPP_COMMIT="\(.*\)"/\1/p' scripts/fixtures/build-llama-server.sh | cut -c1-10) (llama-cpp-python $(sed -n 's/^LCP_VERSION="\(.*\)"/\1/p' scripts/fixtures/build-llama-server.sh) sdist), GGML_NATIVE=OFF; Paddock: llama-cpp-sys-2 $(awk '/^name = "llama-cpp-sys-2"$/ {getline; gsub(/version = |"/, ""); print}' Cargo.lock)"

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# tree_pids PID: PID and every process under it.
tree_pids() {
  local c
  echo "$1"
  for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do tree_pids "$c"; done
}
# rss_mib PID: the VmRSS (MiB) of PID and its descendants (Paddock's worker runs each
# decoder in a process of its own, and chat templates in helpers).
rss_mib() {
  local kb=0 p v
  for p in $(tree_pids "$1"); do
    v="$(awk '/^VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null)"
    kb=$((kb + ${v:-0}))
  done
  echo $((kb / 1024))
}
# rss_sampler PID FILE: the peak VmRSS (MiB) of PID's tree, rewritten into FILE every 0.2 s.
rss_sampler() {
  local pid="$1" file="$2" peak=0 now
  while kill -0 "$pid" 2>/dev/null; do
    now="$(rss_mib "$pid")"; [ "$now" -gt "$peak" ] && { peak="$now"; echo "$peak" >"$file"; }
    sleep 0.2
  done
}
wait_http() {  # wait_http URL PID LOG
  local _
  for _ in $(seq 1 600); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || { tail -30 "$3" >&2; echo "bench: server exited" >&2; return 1; }
    sleep 0.2
  done
  tail -30 "$3" >&2; echo "bench: $1 not up" >&2; return 1
}
# kv_mib LOG: the KV cache llama.cpp says it allocated (sum of its "llama_kv_cache: size =" lines:
# Gemma 3 has a full-attention and a sliding-window cache), or "not logged".
kv_mib() {
  awk '/llama_kv_cache: size =/ {for (i = 1; i <= NF; i++) if ($i == "MiB") {s += $(i - 1); n++; break}}
       END {if (n) printf "%.0f MiB", s; else printf "not logged"}' "$1"
}
MEM_LINES=()
# The servers under test are all started first and stay up; then each concurrency level runs
# its legs back to back: llama-server and Paddock adjacent (their order alternating from level
# to level), then llama-cpp-python. On these machines the speed drifts by 10-15% between legs
# run minutes apart, so running one server's three levels and then the next's (as this script
# did until 3 Dec) turned drift into a ratio.
LABELS=(); URLS=(); PIDS=(); EXTRAS=(); TOKENS=(); IDLE=(); KVLOGS=()
add_server() {  # add_server LABEL URL PID EXTRA_JSON TOKEN KV_LOG
  LABELS+=("$1"); URLS+=("$2"); PIDS+=("$3"); EXTRAS+=("$4"); TOKENS+=("$5"); KVLOGS+=("$6")
  IDLE+=("$(rss_mib "$3")")
}
TO_KILL=()
cleanup() {
  local p
  for p in "${TO_KILL[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -z "${HUB_PID:-}" ] || hub_stop || true
}
trap cleanup EXIT

LS_COLD="(skipped)"
if [ "$PADDOCK_ONLY" = 0 ]; then
# --- llama-server -------------------------------------------------------------------------
PORT="$(free_port)"
LS_LOG="$OUT/llama-server.log"
ls_since="$(date +%s.%N)"
"$LLAMA_SERVER" -m "$PADDOCK_GEMMA_GGUF" --host 127.0.0.1 --port "$PORT" -np "$SLOTS" \
  -c "$((SLOTS * CONTEXT))" -t "$THREADS" -tb "$THREADS" >"$LS_LOG" 2>&1 &
LS_PID=$!
TO_KILL+=("$LS_PID")
wait_http "http://127.0.0.1:$PORT/health" "$LS_PID" "$LS_LOG"
# The peer's cold start: process start (GGUF already in the page cache) -> first streamed token.
LS_COLD="$("${GENLOAD[@]}" first --url "http://127.0.0.1:$PORT" --since "$ls_since" --timeout 120)"
add_server llama-server "http://127.0.0.1:$PORT" "$LS_PID" '{"ignore_eos": true}' "" "$LS_LOG"

# --- llama-cpp-python ---------------------------------------------------------------------
PORT="$(free_port)"
LCP_LOG="$OUT/llama-cpp-python.log"
"$PY" -m llama_cpp.server --model "$PADDOCK_GEMMA_GGUF" --host 127.0.0.1 --port "$PORT" \
  --n_ctx "$CONTEXT" --n_threads "$THREADS" --n_threads_batch "$THREADS" \
  --interrupt_requests False >"$LCP_LOG" 2>&1 &
LCP_PID=$!
TO_KILL+=("$LCP_PID")
wait_http "http://127.0.0.1:$PORT/v1/models" "$LCP_PID" "$LCP_LOG"
# Gemma's end-of-sequence ids: <eos> 1 and <end_of_turn> 106.
add_server llama-cpp-python "http://127.0.0.1:$PORT" "$LCP_PID" \
  '{"logit_bias": {"1": -100, "106": -100}}' "" "$LCP_LOG"
fi

# --- Paddock ------------------------------------------------------------------------------
COLD=""
if [ "$PEERS_ONLY" = 0 ]; then
  . scripts/lib/hub.sh
  [[ -n "${HUB_BIN:-}" ]] || { echo "bench: cargo build --release --bin hub-api" >&2; hub_build release; }
  echo "bench: hub $HUB_BIN" >&2
  export HUB_RATE_LIMIT_TOKEN_RPS=0 HUB_RATE_LIMIT_ANON_RPS=0
  export HUB_WORKER_GEN_SLOTS="$SLOTS" HUB_WORKER_GEN_CONTEXT="$CONTEXT" HUB_WORKER_GEN_THREADS="$THREADS"
  [ -z "$PREFILL_CHUNK" ] || export HUB_WORKER_GEN_PREFILL_CHUNK="$PREFILL_CHUNK"
  echo "- paddock: prefill chunk ${PREFILL_CHUNK:-(worker default)}"
  hub_start
  base_rss="$(rss_mib "$HUB_PID")"
  hub_admin create-user bench >/dev/null
  TOKEN="$(hub_admin create-token bench --scopes read,write --name bench)"
  HF_HUB_DISABLE_PROGRESS_BARS=1 HF_HUB_DISABLE_TELEMETRY=1 HF_HUB_DISABLE_XET=1 HF_HOME="$HUB_WORK/hf-home" \
    "$PY" - "$HUB_URL" "$TOKEN" "$PADDOCK_GEMMA_GGUF" <<'EOF'
import sys, time
from huggingface_hub import HfApi
url, token, gguf = sys.argv[1:4]
api = HfApi(endpoint=url, token=token)
t = time.time()
api.create_repo("bench/gemma-3-270m-gguf", exist_ok=True)
api.upload_file(path_or_fileobj=gguf, path_in_repo="gemma-3-270m-q4_k_m.gguf",
                repo_id="bench/gemma-3-270m-gguf", commit_message="bench: upload")
print(f"bench: pushed the GGUF with huggingface_hub in {time.time() - t:.1f}s", file=sys.stderr)
EOF
  since="$(date +%s.%N)"
  code="$(curl -sS -o "$OUT/endpoint.json" -w '%{http_code}' -X POST "$HUB_URL/api/v1/endpoints/bench" \
    -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    -d '{"name": "gemma", "repository": "bench/gemma-3-270m-gguf", "task": "text-generation",
         "min_replicas": 1, "max_replicas": 1, "access": "protected"}')"
  [ "$code" = 201 ] || { cat "$OUT/endpoint.json" >&2; echo "bench: create endpoint: HTTP $code" >&2; exit 1; }
  COLD="$("${GENLOAD[@]}" first --url "$HUB_URL" --path /endpoints/bench/gemma/v1/completions \
    --token "$TOKEN" --since "$since" --timeout 300)"
  add_server "paddock (hub, its in-process worker and the decoder process; hub alone before the endpoint: $base_rss MiB)" \
    "$HUB_URL/endpoints/bench/gemma" "$HUB_PID" '{"ignore_eos": true}' "$TOKEN" ""
fi

# --- the legs -----------------------------------------------------------------------------
PEAKS=(); SAMPLERS=()
for k in "${!LABELS[@]}"; do
  PEAKS+=("$(mktemp)"); echo 0 >"${PEAKS[$k]}"
  rss_sampler "${PIDS[$k]}" "${PEAKS[$k]}" &
  SAMPLERS+=($!)
done
# run_leg K LEVEL OFFSET: one concurrency level against server K.
run_leg() {
  local k="$1" i="$2" label="${LABELS[$1]%% (*}" args=(--extra "${EXTRAS[$1]}")
  [ -z "${TOKENS[$k]}" ] || args+=(--token "${TOKENS[$k]}")
  "${GENLOAD[@]}" run --label "$label" --url "${URLS[$k]}" --path /v1/completions \
    --prompts "$PROMPTS" --concurrency "${CONC_ARR[$i]}" --requests "${REQ_ARR[$i]}" \
    --max-tokens "$MAX_TOKENS" --offset "$3" --include-usage --append "$RESULTS" "${args[@]}" >/dev/null
}
offset=0
for i in "${!CONC_ARR[@]}"; do
  pair=(); rest=()
  for k in "${!LABELS[@]}"; do
    case "${LABELS[$k]}" in
      llama-server|paddock*) pair+=("$k") ;;
      *) rest+=("$k") ;;
    esac
  done
  if [ $((i % 2)) = 1 ] && [ "${#pair[@]}" = 2 ]; then pair=("${pair[1]}" "${pair[0]}"); fi
  for k in "${pair[@]}" "${rest[@]}"; do run_leg "$k" "$i" "$offset"; done
  offset=$((offset + REQ_ARR[i]))
done
for k in "${!LABELS[@]}"; do
  kill "${SAMPLERS[$k]}" 2>/dev/null || true; wait "${SAMPLERS[$k]}" 2>/dev/null || true
  kv="see endpoint memory estimate"
  [ -z "${KVLOGS[$k]}" ] || kv="$(kv_mib "${KVLOGS[$k]}")"
  MEM_LINES+=("| ${LABELS[$k]} | ${IDLE[$k]} | $(cat "${PEAKS[$k]}") | $kv |")
  rm -f "${PEAKS[$k]}"
done
if [ "$PEERS_ONLY" = 0 ]; then
  curl -fsS "$HUB_URL/api/v1/endpoints/bench/gemma" -H "Authorization: Bearer $TOKEN" >"$OUT/endpoint.json" || true
fi
cleanup
trap - EXIT

# --- report -------------------------------------------------------------------------------
echo "- load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
if [ "$PEERS_ONLY" = 0 ]; then
  echo "### Throughput and latency (ratios are Paddock / peer)"
  echo
  "${GENLOAD[@]}" table --results "$RESULTS" --base paddock
  echo
  echo "Cold start, POST /api/v1/endpoints -> first streamed token (empty worker cache): ${COLD} s"
  echo "(llama-server, process start -> first streamed token, GGUF in the page cache: ${LS_COLD} s)"
else
  echo "### Throughput and latency (peers only; the Paddock leg was skipped)"
  echo
  "${GENLOAD[@]}" table --results "$RESULTS" --base llama-server
  echo
  echo "llama-server, process start -> first streamed token (GGUF in the page cache): ${LS_COLD} s"
fi
echo
echo "### Memory (RSS of each server with its child processes, MiB; weights file $(du -m "$PADDOCK_GEMMA_GGUF" | cut -f1) MiB, mmapped)"
echo
echo "| server | idle after load | peak during the run | KV cache |"
echo "|---|---:|---:|---|"
printf '%s\n' "${MEM_LINES[@]}"
