#!/usr/bin/env bash
# The registry on a real S3 server: builds Garage once (scripts/lib/garage.sh;
# crates.io, ~265 CPU-seconds the first time, cached in target/tools), starts
# one node, then
#   1. the storage layer's unit tests with an S3 backend added (Range reads,
#      multipart parts, content addressing, failed writes leave nothing);
#   2. a hub with --storage-url s3://BUCKET/hub: the client conformance
#      suite's registry tests (huggingface_hub over LFS, then over Xet) and
#      tests/conformance/test_s3.py (1 GiB multipart upload and download with
#      flat RSS and no read-back, dedup, Range, quota).
# Usage: tests/s3/run.sh PYTHON HUB_API_BIN
set -euo pipefail
PY=${1:?python}
HUB=${2:?hub-api binary}
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
. "$ROOT/scripts/lib/garage.sh"

start=$SECONDS
garage_install
echo "s3: garage $("$GARAGE_BIN" --version | head -1) ready in $((SECONDS - start)) s"
garage_start
trap garage_stop EXIT

# `--workspace`, as scripts/test.sh builds: `-p hub-api` alone resolves other
# features for shared dependencies and rebuilt hub-api and part of its
# dependency tree (~5 minutes of a CI run) for five tests.
(cd "$ROOT" && PADDOCK_TEST_S3_URL="s3://$GARAGE_BUCKET" cargo test --quiet --workspace --lib -- storage::)

# The hub reaches Garage through a proxy that counts the bytes each way.
export GARAGE_ENDPOINT="$AWS_ENDPOINT_URL"
export PADDOCK_S3_PROXY_STATS="$GARAGE_WORK/proxy-stats.json"
proxy_port=$(_garage_free_port)
"$PY" "$ROOT/tests/s3/count_proxy.py" "$proxy_port" "${GARAGE_ENDPOINT#http://}" "$PADDOCK_S3_PROXY_STATS" &
proxy=$!
trap 'kill $proxy 2>/dev/null; garage_stop' EXIT
for _ in $(seq 1 50); do [[ -f "$PADDOCK_S3_PROXY_STATS" ]] && break; sleep 0.1; done
export AWS_ENDPOINT_URL="http://127.0.0.1:$proxy_port"

export PADDOCK_S3_PREFIX=hub
HUB_STORAGE_URL="s3://$GARAGE_BUCKET/$PADDOCK_S3_PREFIX" \
  CONFORMANCE_TESTS="test_hub.py test_s3.py" \
  "$ROOT/tests/conformance/run.sh" "$PY" "$HUB" -s
echo "s3: done in $((SECONDS - start)) s"
