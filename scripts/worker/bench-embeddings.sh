#!/usr/bin/env bash
# Embedding throughput of the hub-worker engine in-process vs sentence-transformers on
# PyTorch CPU, one run, side by side, on a generated 256-sentence corpus, batch 1/4/32.
#
#   scripts/worker/bench-embeddings.sh [--create-venv] [--rounds N] [--threads N]
#                                      [--batches 1,4,32] [--modes corpus,requests]
#                                      [--engines candle,ort,openvino,openvino-bf16]
#
# Engines (default: every one available): candle always; ONNX Runtime and OpenVINO (f32, and
# bf16 as `openvino-bf16`) on the graph derived from the safetensors when
# scripts/worker/fetch-onnxruntime.sh / fetch-openvino.sh can provide their libraries. Peer:
# sentence-transformers in $ST_VENV (default /tmp/st-venv; --create-venv makes it, ~6 GB).
# Engines run in interleaved rounds (scripts/worker/bench_driver.py): best and median of the
# rounds per engine, batch size and mode. Modes: `corpus` = the 256 sentences in one call
# with at most B per forward pass (like SentenceTransformer.encode(corpus, batch_size=B));
# `requests` = consecutive calls of B sentences (what HTTP clients send).
# Results: a table on stdout and target/bench/worker-embeddings.json.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
ROUNDS=5
THREADS="$(nproc)"
CREATE_VENV=0
BATCHES=1,4,32
MODES=corpus,requests
ONLY=""
while [ $# -gt 0 ]; do
    case "$1" in
        --create-venv) CREATE_VENV=1 ;;
        --rounds) ROUNDS="$2"; shift ;;
        --threads) THREADS="$2"; shift ;;
        --batches) BATCHES="$2"; shift ;;
        --modes) MODES="$2"; shift ;;
        --engines) ONLY="$2"; shift ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
ST_VENV="${ST_VENV:-/tmp/st-venv}"
OUT="$ROOT/target/bench"
mkdir -p "$OUT"

. scripts/lib/engines.sh
engine_env

# The corpus: 256 sentences of 5-60 words from a fixed vocabulary and seed.
python3 scripts/worker/make-corpus.py "$OUT/corpus.txt"

FEATURES=(--features engine-ort,engine-openvino)
ENGINES=(candle)
if [ -n "$ORT_DYLIB_PATH" ] && [ -f "$ORT_DYLIB_PATH" ]; then
    ENGINES+=(ort)
fi
if [ -n "$PADDOCK_OPENVINO_LIB" ] && [ -d "$PADDOCK_OPENVINO_LIB" ]; then
    ENGINES+=(openvino openvino-bf16)
fi
if [ -n "$ONLY" ]; then IFS=, read -r -a ENGINES <<<"$ONLY"; fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
cargo build --quiet --release -p hub-worker --example bench-embeddings "${FEATURES[@]}"
BIN="$CARGO_TARGET_DIR/release/examples/bench-embeddings"

if [ ! -x "$ST_VENV/bin/python" ] && [ "$CREATE_VENV" = 1 ]; then
    echo "bench: creating $ST_VENV with sentence-transformers + torch (large download)" >&2
    python3 -m venv "$ST_VENV"
    "$ST_VENV/bin/pip" install --quiet sentence-transformers torch
fi
PY=python3
if [ -x "$ST_VENV/bin/python" ]; then
    PY="$ST_VENV/bin/python"
else
    echo "bench: no sentence-transformers venv at $ST_VENV (pass --create-venv); peer skipped" >&2
fi
ENGINE_LIST="$(IFS=,; echo "${ENGINES[*]}")"
echo "bench: $ROUNDS interleaved rounds of: $ENGINE_LIST + sentence-transformers, threads=$THREADS" >&2
echo "bench: machine load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
"$PY" scripts/worker/bench_driver.py --model "$PADDOCK_MINILM_DIR" --corpus "$OUT/corpus.txt" \
    --bin "$BIN" --engines "$ENGINE_LIST" --rounds "$ROUNDS" --threads "$THREADS" \
    --batches "$BATCHES" --modes "$MODES" --out "$OUT/worker-embeddings.json"
echo "bench: machine load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
