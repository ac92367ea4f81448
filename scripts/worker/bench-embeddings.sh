#!/usr/bin/env bash
# Embedding throughput of the hub-worker engine in-process vs sentence-transformers on
# PyTorch CPU, one run, side by side, on a generated 256-sentence corpus, batch 1/4/32.
#
#   scripts/worker/bench-embeddings.sh [--create-venv] [--repeats N] [--threads N]
#
# Engines: candle always; ONNX Runtime (graph derived from the safetensors) when
# scripts/worker/fetch-onnxruntime.sh can provide libonnxruntime.so. Peer:
# sentence-transformers in $ST_VENV (default /tmp/st-venv; --create-venv makes it, ~6 GB).
# Results: a table on stdout and target/bench/worker-embeddings.json.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
REPEATS=3
THREADS="$(nproc)"
CREATE_VENV=0
while [ $# -gt 0 ]; do
    case "$1" in
        --create-venv) CREATE_VENV=1 ;;
        --repeats) REPEATS="$2"; shift ;;
        --threads) THREADS="$2"; shift ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
ST_VENV="${ST_VENV:-/tmp/st-venv}"
OUT="$ROOT/target/bench"
mkdir -p "$OUT"

eval "$(scripts/worker/fetch-fixtures.sh | tail -n1)"
export PADDOCK_MINILM_DIR
ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-}"
if [ -z "$ORT_DYLIB_PATH" ]; then
    if line="$(scripts/worker/fetch-onnxruntime.sh 2>/dev/null | tail -n1)"; then
        eval "$line"
    fi
fi
export ORT_DYLIB_PATH

# The corpus: 256 sentences of 5-60 words from a fixed vocabulary and seed.
python3 - "$OUT/corpus.txt" <<'PY'
import random, sys
rng = random.Random(20261128)
words = ("the of and to in a is that for it as was with be by on not he this are or his from at which "
         "but have an they you were her she there been one all we their has would when if so no will "
         "model endpoint tenant worker embedding vector inference latency throughput cache revision "
         "commit hub token request batch queue server client network storage memory thread engine "
         "sentence language question answer document search ranking similar meaning train data "
         "quickly slowly carefully really almost always never often new old large small fast good "
         "river mountain city market music history science garden kitchen winter summer morning").split()
lines = []
for _ in range(256):
    n = rng.randint(5, 60)
    s = " ".join(rng.choice(words) for _ in range(n))
    lines.append(s[0].upper() + s[1:] + rng.choice([".", "?", "!", "."]))
open(sys.argv[1], "w").write("\n".join(lines) + "\n")
PY

FEATURES=()
ENGINES=(candle)
if [ -n "$ORT_DYLIB_PATH" ] && [ -f "$ORT_DYLIB_PATH" ]; then
    FEATURES=(--features engine-ort)
    ENGINES+=(ort)
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
cargo build --quiet --release -p hub-worker --example bench-embeddings "${FEATURES[@]}"
BIN="$CARGO_TARGET_DIR/release/examples/bench-embeddings"

: > "$OUT/worker-embeddings.jsonl"
for engine in "${ENGINES[@]}"; do
    echo "bench: hub-worker engine=$engine" >&2
    "$BIN" --model "$PADDOCK_MINILM_DIR" --corpus "$OUT/corpus.txt" --batches 1,4,32 \
        --repeats "$REPEATS" --engine "$engine" --threads "$THREADS" >> "$OUT/worker-embeddings.jsonl"
done

if [ ! -x "$ST_VENV/bin/python" ] && [ "$CREATE_VENV" = 1 ]; then
    echo "bench: creating $ST_VENV with sentence-transformers + torch (large download)" >&2
    python3 -m venv "$ST_VENV"
    "$ST_VENV/bin/pip" install --quiet sentence-transformers torch
fi
if [ -x "$ST_VENV/bin/python" ]; then
    echo "bench: sentence-transformers in $ST_VENV" >&2
    "$ST_VENV/bin/python" - "$PADDOCK_MINILM_DIR" "$OUT/corpus.txt" "$REPEATS" "$THREADS" >> "$OUT/worker-embeddings.jsonl" <<'PY'
import json, sys, time
import torch
from sentence_transformers import SentenceTransformer
model_dir, corpus_path, repeats, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
corpus = [l for l in open(corpus_path).read().splitlines() if l.strip()]
model = SentenceTransformer(model_dir, device="cpu")
for b in (1, 4, 32):
    for mode in ("corpus", "requests"):
        times = []
        for rep in range(repeats + 1):
            t = time.perf_counter()
            with torch.inference_mode():
                if mode == "corpus":
                    model.encode(corpus, batch_size=b, normalize_embeddings=True)
                else:
                    for i in range(0, len(corpus), b):
                        model.encode(corpus[i:i + b], batch_size=b, normalize_embeddings=True)
            if rep > 0:
                times.append(time.perf_counter() - t)
        times.sort()
        print(json.dumps({"engine": "sentence-transformers", "mode": mode, "batch": b,
                          "sentences": len(corpus), "best_s": times[0],
                          "median_s": times[len(times) // 2],
                          "sent_per_s": len(corpus) / times[0], "threads": threads,
                          "torch": torch.__version__}))
PY
else
    echo "bench: no sentence-transformers venv at $ST_VENV (pass --create-venv); peer skipped" >&2
fi

python3 - "$OUT/worker-embeddings.jsonl" "$OUT/worker-embeddings.json" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
json.dump(rows, open(sys.argv[2], "w"), indent=1)
peer = {(r["mode"], r["batch"]): r["sent_per_s"] for r in rows if r["engine"] == "sentence-transformers"}
print(f"{'engine':<22} {'mode':<9} {'batch':>5} {'sent/s':>9} {'vs ST':>7}")
for r in rows:
    p = peer.get((r["mode"], r["batch"]))
    ratio = f"{r['sent_per_s'] / p:.2f}x" if p else "-"
    print(f"{r['engine']:<22} {r['mode']:<9} {r['batch']:>5} {r['sent_per_s']:>9.1f} {ratio:>7}")
PY
