#!/usr/bin/env bash
# Fetches libopenvino_c.so (with the OpenVINO runtime, its CPU plugin, ONNX frontend and
# TBB beside it) for hub-worker's `engine-openvino` feature from the PyPI wheel of
# openvino 2026.4.1 (no pip install: the wheel is only unzipped).
#
#   scripts/worker/fetch-openvino.sh [CACHE_DIR]      (default: target/fixtures)
#
# Prints `PADDOCK_OPENVINO_LIB=<dir>` on its last line.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${1:-${PADDOCK_FIXTURES_DIR:-$ROOT/target/fixtures}}"
PYTHON="${PYTHON:-python3}"
VERSION="2026.4.1"
DEST="$CACHE/openvino-$VERSION"
LIBS="$DEST/openvino/libs"

have_lib() { compgen -G "$LIBS/libopenvino_c.so*" >/dev/null && [ -f "$LIBS/libopenvino_intel_cpu_plugin.so" ]; }

if ! have_lib; then
    echo "fetch-openvino: downloading openvino==$VERSION from PyPI" >&2
    WHEELS="$CACHE/wheels"
    mkdir -p "$WHEELS"
    if command -v pip >/dev/null 2>&1; then PIP=(pip); else PIP=("$PYTHON" -m pip); fi
    "${PIP[@]}" download --quiet --no-deps --only-binary=:all: "openvino==$VERSION" -d "$WHEELS"
    WHEEL="$(ls "$WHEELS"/openvino-"$VERSION"-*.whl | head -n1)"
    rm -rf "$DEST.tmp"
    mkdir -p "$DEST.tmp"
    # Only what the worker uses: the runtime, its C API, the CPU plugin, the ONNX frontend
    # and TBB (the Python half, the GPU/NPU plugins and other frontends stay out: 60 of
    # the wheel's 180 MB).
    "$PYTHON" - "$WHEEL" "$DEST.tmp" <<'PY'
import re, sys, zipfile
keep = re.compile(r"openvino/libs/(libopenvino(_c|_intel_cpu_plugin|_onnx_frontend)?\.so[.0-9]*|libtbb.*|libhwloc.*)$")
with zipfile.ZipFile(sys.argv[1]) as z:
    for name in z.namelist():
        if keep.match(name):
            z.extract(name, sys.argv[2])
PY
    rm -rf "$DEST"
    mv "$DEST.tmp" "$DEST"
fi
have_lib || { echo "fetch-openvino: libopenvino_c.so or the CPU plugin missing from the wheel in $LIBS" >&2; exit 1; }
echo "fetch-openvino: ok ($LIBS)" >&2
echo "PADDOCK_OPENVINO_LIB=$LIBS"
