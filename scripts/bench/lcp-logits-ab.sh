#!/usr/bin/env bash
# llama-cpp-python's server with its default `logits_all=True` against `--logits_all False`,
# concurrency 1, alternating (docs/BENCHMARKS.md, "Why 3x llama-cpp-python ... is out of reach").
# Uses the peers generation.sh builds: run generation.sh once first (it builds llama.cpp's
# libraries, the venv and the prompts).
#
#   PADDOCK_LLAMA_CACHE=... GENBENCH_VENV=... scripts/bench/lcp-logits-ab.sh [ROUNDS] [REQUESTS]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
ROUNDS="${1:-2}"
REQUESTS="${2:-4}"
export "$(PYTHON=python3 scripts/worker/fetch-gemma.sh "$ROOT/target/fixtures" | tail -n1)"
eval "$(PYTHON=python3 scripts/fixtures/build-llama-server.sh | tail -n3 | sed 's/^/export /')"
PY="${GENBENCH_VENV:-$HOME/.cache/paddock/genbench-venv}/bin/python"
export LLAMA_CPP_LIB_PATH="$LLAMA_CPP_LIB_DIR" MTMD_CPP_LIB="$LLAMA_CPP_LIB_DIR" LLAVA_CPP_LIB="$LLAMA_CPP_LIB_DIR"
PROMPTS="$ROOT/target/bench/generation-prompts.json"
[ -f "$PROMPTS" ] || { echo "run scripts/bench/generation.sh once first ($PROMPTS)" >&2; exit 2; }
PORT="${PORT:-8799}"
off=0
for _ in $(seq "$ROUNDS"); do
  for la in True False; do
    "$PY" -m llama_cpp.server --model "$PADDOCK_GEMMA_GGUF" --host 127.0.0.1 --port "$PORT" \
      --n_ctx 4096 --n_threads 2 --n_threads_batch 2 --interrupt_requests False \
      --logits_all "$la" >"$ROOT/target/bench/lcp-logits-$la.log" 2>&1 &
    pid=$!
    for _ in $(seq 120); do curl -sf "http://127.0.0.1:$PORT/v1/models" >/dev/null && break; sleep 1; done
    "$PY" scripts/bench/genload.py run --url "http://127.0.0.1:$PORT" --label "logits_all=$la" \
      --prompts "$PROMPTS" --concurrency 1 --requests "$REQUESTS" --offset "$off" --warmup 1 \
      --extra '{"logit_bias": {"1": -100, "106": -100}}' 2>&1 | tail -n1
    off=$((off + REQUESTS + 1))
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
done
