#!/usr/bin/env bash
# Same-minute A/B of the two llama.cpp engines without HTTP in the measurement: llama-server's
# own timings (`prompt eval time` and ms per generated token, from /completion's `timings`)
# against Paddock's engine in process (`hub-worker/examples/bench-generate.rs`: prefill of a
# 512-token prompt, then one stream), alternating, ROUNDS times three requests each. Tells an
# engine difference from the machine's speed drifting between the legs of generation.sh.
#
#   scripts/bench/llama-engine-ab.sh [ROUNDS]
#
# Needs what generation.sh built: llama-server (scripts/fixtures/build-llama-server.sh, its
# build directory in $LLAMA_SERVER_DIR), the prompts file target/bench/generation-prompts.json,
# the GGUF in $PADDOCK_GEMMA_GGUF, and `cargo build --release -p hub-worker --example bench-generate`.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS="${1:-2}"
P=target/bench/generation-prompts.json
G="${PADDOCK_GEMMA_GGUF:?the Gemma GGUF}"
LS="${LLAMA_SERVER_DIR:?llama-server build dir}/llama-server"
BG=target/release/examples/bench-generate
PORT=38111
for f in "$P" "$G" "$LS" "$BG"; do [ -e "$f" ] || { echo "ab: missing $f" >&2; exit 2; }; done
for round in $(seq 1 "$ROUNDS"); do
  LD_LIBRARY_PATH="$(dirname "$LS")" "$LS" -m "$G" --host 127.0.0.1 --port "$PORT" -np 4 -c 16384 -t 2 -tb 2 \
    >target/bench/llama-engine-ab.log 2>&1 &
  pid=$!
  for _ in $(seq 1 60); do curl -fs "localhost:$PORT/health" >/dev/null 2>&1 && break; sleep 0.5; done
  for k in 10 11 12; do
    python3 -c 'import json,sys; p=json.load(open(sys.argv[1]))[int(sys.argv[2])]["prompt"]
print(json.dumps({"prompt": p, "n_predict": 64, "temperature": 0, "ignore_eos": True, "cache_prompt": False}))' "$P" "$k" |
      curl -fsS "localhost:$PORT/completion" -d @- |
      python3 -c 'import json,sys; t=json.load(sys.stdin)["timings"]
print("llama-server: prefill %.0f ms (%d tokens, %.0f tok/s), decode %.1f ms/token" % (t["prompt_ms"], t["prompt_n"], t["prompt_per_second"], t["predicted_per_token_ms"]))'
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true
  for _ in 1 2 3; do
    "$BG" --gguf "$G" --slots 4 --context 4096 --threads 2 --streams 1 --tokens 64 --prefill 512 2>/dev/null |
      python3 -c 'import sys,json
out = []
for l in sys.stdin:
    d = json.loads(l)
    if d["mode"] == "prefill":
        out.append("prefill %.0f ms (%d tokens, %.0f tok/s)" % (d["seconds"] * 1000, d["prompt_tokens"], d["tokens_per_second"]))
    else:
        out.append("decode %.1f ms/token" % (1000 / d["per_stream_tokens_per_second"]))
print("paddock:      " + ", ".join(out))'
  done
done
