#!/usr/bin/env bash
# Dataset viewer: Parquet conversion (issue 16). Generates a CSV of SIZE_MB
# MiB (default 1024; id int, name string, score float, flag bool, text), then
# in one run:
#   1. Paddock: a fresh hub; the CSV is committed to a dataset as train.csv
#      (LFS, with huggingface_hub); the timer starts when the commit returns
#      and stops when `is-valid` says the viewer is ready (polled every
#      0.2 s); the hub's RSS (VmRSS) is sampled every 50 ms meanwhile.
#   2. pyarrow: `pyarrow.csv.open_csv` (streamed) -> `pq.ParquetWriter`
#      (snappy), the same file, the same machine.
# Prints a Markdown report: MB/s, peak RSS, the ratio Paddock / pyarrow
# throughput, the CPU model and the load average.
#
#   scripts/bench/viewer.sh            SIZE_MB=1024; PY=.venv/test/bin/python;
#                                      HUB_BIN=... (else target/release/examples/hub-serve,
#                                      built when missing; BUILD=debug for the debug one)
set -euo pipefail
cd "$(dirname "$0")/../.."
SIZE_MB=${SIZE_MB:-1024}
PY=${PY:-.venv/test/bin/python}
BUILD=${BUILD:-release}
. scripts/lib/hub.sh
if [[ -z "${HUB_BIN:-}" ]]; then
  HUB_BIN="$PADDOCK_TARGET/$BUILD/examples/hub-serve"
  [[ -x "$HUB_BIN" ]] || cargo build --quiet $([[ $BUILD == release ]] && echo --release) -p hub-api --example hub-serve
fi
export HUB_PG_UNSAFE_FAST=true HUB_RATE_LIMIT_TOKEN_RPS=0 HUB_RATE_LIMIT_ANON_RPS=0
hub_start --no-worker
hub_admin create-user bench >/dev/null
TOKEN=$(hub_admin create-token bench --scopes read,write --name bench)
CSV="$HUB_WORK/bench.csv"
echo "generating $SIZE_MB MiB of CSV" >&2
gen=$("$PY" scripts/bench/viewer_driver.py gen "$CSV" "$SIZE_MB")
bytes=$(echo "$gen" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["bytes"])')
echo "uploading" >&2
HF_HUB_DISABLE_XET=1 HF_HUB_DISABLE_PROGRESS_BARS=1 "$PY" scripts/bench/viewer_driver.py upload "$HUB_URL" "$TOKEN" bench/big "$CSV" >&2
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
paddock=$("$PY" scripts/bench/viewer_driver.py wait "$HUB_URL" "$TOKEN" bench/big "$HUB_PID")
load_mid=$(cut -d' ' -f1-3 /proc/loadavg)
pyarrow=$("$PY" scripts/bench/viewer_driver.py pyarrow "$CSV" "$HUB_WORK/pyarrow.parquet")
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')
"$PY" - "$bytes" "$paddock" "$pyarrow" <<PYEOF
import json, sys
size = int(sys.argv[1]); p = json.loads(sys.argv[2]); a = json.loads(sys.argv[3])
mb = size / 1e6
pm, am = mb / p["seconds"], mb / a["seconds"]
print(f"CSV: {size / 2**20:.0f} MiB, {p['rows']:,} rows; CPU: $cpu ($(nproc) cores); hub: $HUB_BIN")
print(f"load average (1/5/15 min) before / after Paddock / after pyarrow: $load_before / $load_mid / $load_after")
print()
print("| converter | seconds | MB/s | peak RSS | Parquet bytes |")
print("|---|---|---|---|---|")
print(f"| Paddock (hub, background job) | {p['seconds']} | {pm:.1f} | {p['rss_peak_mib']} MiB (hub; {p['rss_before_mib']} MiB before) | {p['parquet_bytes']:,} |")
print(f"| pyarrow open_csv -> ParquetWriter | {a['seconds']} | {am:.1f} | {a['rss_peak_mib']} MiB (python) | {a['parquet_bytes']:,} |")
print()
print(f"ratio Paddock / pyarrow throughput: {pm / am:.2f}x")
PYEOF
