#!/usr/bin/env bash
# Fetches libopenvino_c.so (with the OpenVINO runtime, its CPU plugin, ONNX frontend and
# TBB beside it) for hub-worker's `engine-openvino` feature from the pinned PyPI wheel of
# openvino (no pip install: the wheel is only unzipped). The version, wheel, sha256 and
# the files kept are pinned in hub-worker/runtime-pins.env, the file the worker reads when
# it fetches the same runtime on first use (hub-worker/src/runtime_fetch.rs). The wheel
# stays in CACHE_DIR/wheels (the runtime-fetch end-to-end test serves it as a mirror).
#
#   scripts/worker/fetch-openvino.sh [CACHE_DIR]      (default: target/fixtures)
#
# Prints `PADDOCK_OPENVINO_LIB=<dir>` on its last line.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${1:-${PADDOCK_FIXTURES_DIR:-$ROOT/target/fixtures}}"
PYTHON="${PYTHON:-python3}"
# shellcheck source=../../hub-worker/runtime-pins.env
source "$ROOT/hub-worker/runtime-pins.env"
VERSION="$OPENVINO_VERSION"
DEST="$CACHE/openvino-$VERSION"
LIBS="$DEST/openvino/libs"
WHEELS="$CACHE/wheels"
WHEEL="$WHEELS/$OPENVINO_WHEEL"

# The IR frontend imports compiled models from the worker's cache; an older extraction
# without it is redone.
have_lib() { compgen -G "$LIBS/libopenvino_c.so*" >/dev/null && [ -f "$LIBS/libopenvino_intel_cpu_plugin.so" ] && compgen -G "$LIBS/libopenvino_ir_frontend.so*" >/dev/null; }
have_wheel() { [ -f "$WHEEL" ] && [ "$(sha256sum "$WHEEL" | cut -d' ' -f1)" = "$OPENVINO_WHEEL_SHA256" ]; }

if ! have_wheel; then
    echo "fetch-openvino: downloading $OPENVINO_WHEEL from PyPI" >&2
    mkdir -p "$WHEELS"
    if command -v pip >/dev/null 2>&1; then PIP=(pip); else PIP=("$PYTHON" -m pip); fi
    # The pinned wheel whatever this Python is (its native libraries are all we use).
    "${PIP[@]}" download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
        --platform manylinux_2_28_x86_64 "openvino==$VERSION" -d "$WHEELS"
    have_wheel || { echo "fetch-openvino: $WHEEL is missing or its sha256 is not $OPENVINO_WHEEL_SHA256" >&2; exit 1; }
    rm -rf "$DEST"
fi
if ! have_lib; then
    rm -rf "$DEST.tmp"
    mkdir -p "$DEST.tmp"
    "$PYTHON" - "$WHEEL" "$DEST.tmp" "$OPENVINO_KEEP_DIR" "$OPENVINO_KEEP" <<'PY'
import sys, zipfile
wheel, out, keep_dir, prefixes = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split()
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        rest = name[len(keep_dir):] if name.startswith(keep_dir) else ""
        if rest and "/" not in rest and any(rest.startswith(p) for p in prefixes):
            z.extract(name, out)
PY
    rm -rf "$DEST"
    mv "$DEST.tmp" "$DEST"
fi
have_lib || { echo "fetch-openvino: libopenvino_c.so or the CPU plugin missing from the wheel in $LIBS" >&2; exit 1; }
echo "fetch-openvino: ok ($LIBS)" >&2
echo "PADDOCK_OPENVINO_LIB=$LIBS"
