#!/usr/bin/env bash
# The gateway's added latency without a model (issue 19): the hub (no
# in-process worker) in front of a stand-in worker that answers a fixed body,
# direct vs through the gateway, alternated, at concurrency 1 and 16.
#
#   scripts/bench/gateway_overhead.sh [--debug] [--python] [--nginx] [--requests N] [--concurrency 1,16]
#
# --nginx (Rust client only) adds the peer in the same rotation: nginx as a plain
# reverse proxy to the same stand-in, so the report shows what one proxy hop
# costs on this machine beside what the gateway adds (installs nginx when missing).
# Builds what it needs: the release hub-api and the Rust load generator
# (hub-api/examples/gateway-overhead.rs: one tokio thread of clients, a one-thread
# actix stand-in); --debug builds and uses the debug profile instead (to check
# the script, not to measure). HUB_BIN (or a path ending in /hub-api as an
# argument) overrides the hub binary. --python uses
# gateway_overhead.py (standard library only) for client and stand-in instead,
# for comparison: at 16 its threads take the CPU the hub needs on 2 cores.
# Prints Markdown lines; one JSON line per level on stderr.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
PROFILE=release
CLIENT=rust
PASS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --debug) PROFILE=debug ;;
    --python) CLIENT=python ;;
    --nginx) PASS+=("$1") ;;
    --requests|--concurrency) PASS+=("$1" "$2"); shift ;;
    */hub-api) HUB_BIN="$1" ;; # the former positional HUB_API_BIN
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
. scripts/lib/hub.sh
if [[ " ${PASS[*]-} " == *" --nginx "* ]]; then
  [ "$CLIENT" = rust ] || { echo "--nginx needs the Rust client" >&2; exit 2; }
  command -v nginx >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null; }
fi
# Hub and load generator in one cargo call, with --python too: `--bin hub-api` alone
# resolves features without hub-api's dev-dependencies, so it would be another build
# (minutes) of another binary than the one the Rust client measures.
if [ -z "${HUB_BIN:-}" ]; then
  hub_build "$PROFILE" --example gateway-overhead
elif [ "$CLIENT" = rust ]; then
  build=(cargo build --quiet --example gateway-overhead)
  [ "$PROFILE" = release ] && build+=(--release)
  "${build[@]}"
fi
LOADGEN="$PADDOCK_TARGET/$PROFILE/examples/gateway-overhead"
echo "bench: hub $HUB_BIN, client $CLIENT" >&2
export HUB_RATE_LIMIT_TOKEN_RPS=0 HUB_RATE_LIMIT_ANON_RPS=0
hub_start --no-worker
hub_admin create-user bench >/dev/null
TOKEN="$(hub_admin create-token bench --scopes inference --name bench)"
PSQL_BIN="$(command -v psql || ls /usr/lib/postgresql/*/bin/psql | tail -1)"
PSQL="$PSQL_BIN -h $HUB_WORK/hub/pg-run -U postgres -d paddock"
if [ "$CLIENT" = python ]; then
  python3 scripts/bench/gateway_overhead.py --hub "$HUB_URL" --token "$TOKEN" --psql "$PSQL" ${PASS[@]+"${PASS[@]}"}
else
  "$LOADGEN" --hub "$HUB_URL" --hub-pid "$HUB_PID" --token "$TOKEN" --psql "$PSQL" ${PASS[@]+"${PASS[@]}"}
fi
