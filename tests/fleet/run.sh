#!/usr/bin/env bash
# The fleet: what an enterprise runs, on one machine. One external PostgreSQL
# (scripts/lib/pg.sh, over TCP), one S3 server (Garage, scripts/lib/garage.sh),
# three `hub-api serve --no-worker` replicas sharing both, nginx as the load
# balancer in front of them, and two `hub-worker`s that reach the hub through
# the balancer. Through nginx:
#   1. the client conformance suite's registry tests (huggingface_hub over LFS,
#      multipart parts landing on different replicas, then over Xet) and the
#      endpoint end-to-end tests (openai, InferenceClient) on the two workers;
#   2. tests/fleet/test_fleet.py: exactly one scheduler leads; a token revoked
#      on one replica is refused by all within the auth cache's bound; rate
#      limits hold fleet-wide; kill -9 of the leading replica while clients
#      commit and call an endpoint loses no acknowledged commit, the clients'
#      retries succeed on the others, and a survivor takes the lead.
# Usage: tests/fleet/run.sh PYTHON HUB_API_BIN
set -euo pipefail
PY=${1:?python}
HUB=${2:?hub-api binary}
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
. "$ROOT/scripts/lib/hub.sh"
. "$ROOT/scripts/lib/garage.sh"
. "$ROOT/scripts/lib/pg.sh"
. "$ROOT/scripts/lib/nginx.sh"
HUB_BIN="$HUB"
WORKER_BIN="${PADDOCK_WORKER_BIN:-$(dirname "$HUB")/hub-worker}"
REPLICAS=${FLEET_REPLICAS:-3}

start=$SECONDS
FLEET="$(mktemp -d /tmp/paddock-fleet-XXXXXX)"
chmod 755 "$FLEET"
PIDS=()
fleet_exit() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  [[ -n "${NGINX_PID:-}" ]] && { kill -TERM "$NGINX_PID" 2>/dev/null; wait "$NGINX_PID" 2>/dev/null; }
  pg_stop
  garage_stop
  if [[ -z "${FLEET_KEEP_WORK:-}" ]]; then rm -rf "$FLEET"; else echo "fleet: kept $FLEET" >&2; fi
}
hub_on_exit fleet_exit

garage_install
garage_start
pg_start "$FLEET/pg"
export DATABASE_URL="$PG_URL"

"$HUB" --data-dir "$FLEET/admin" migrate
admin() { "$HUB" --data-dir "$FLEET/admin" admin "$@" | tail -1; }
admin create-user alice >/dev/null
admin create-user bob >/dev/null
admin create-user root --admin >/dev/null
export PADDOCK_TOKEN_ALICE=$(admin create-token alice --scopes read,write --name fleet)
export PADDOCK_TOKEN_ALICE_RO=$(admin create-token alice --scopes read --name readonly)
export PADDOCK_TOKEN_BOB=$(admin create-token bob --scopes read,write --name fleet)
export PADDOCK_TOKEN_ROOT=$(admin create-token root --scopes read,write,admin --name fleet)
export PADDOCK_TOKEN_WORKER=$(admin create-token root --scopes worker --name workers)

# The balancer's port is picked first: it is every replica's public URL.
LB_PORT=$(_garage_free_port)
LB="http://127.0.0.1:$LB_PORT"
export HUB_STORAGE_URL="s3://$GARAGE_BUCKET/fleet"
export HUB_PUBLIC_URL="$LB"
export HUB_NO_WORKER=true HUB_SHARED_RATE_LIMITS=true HUB_TRUST_FORWARDED_FOR=true
export HUB_HTTP_WORKERS=2 HUB_DB_POOL=16 HUB_AUTH_CACHE_TTL_SECS=5
# The fleet-wide rate: high enough for the suites, low enough for test_fleet
# to exceed it from one client.
export HUB_RATE_LIMIT_TOKEN_RPS=100 HUB_RATE_LIMIT_TOKEN_BURST=400

# start_replica N: hub replica N on a free port; its URL and pid in
# $FLEET/replica-N.{url,pid}.
start_replica() {
  local n=$1 log="$FLEET/replica-$1.log" pid url
  "$HUB" --data-dir "$FLEET/replica-$n" --bind 127.0.0.1:0 serve >"$log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  url="$(server_url "$log" "$pid")"
  for _ in $(seq 1 150); do curl -fsS -o /dev/null "$url/readyz" 2>/dev/null && break; sleep 0.2; done
  curl -fsS -o /dev/null "$url/readyz" || { tail -30 "$log" >&2; return 1; }
  echo "$url" >"$FLEET/replica-$n.url"
  echo "$pid" >"$FLEET/replica-$n.pid"
  echo "fleet: replica $n at $url (pid $pid)" >&2
}
upstreams=()
for n in $(seq 1 "$REPLICAS"); do
  start_replica "$n"
  upstreams+=("$(sed 's|^http://||' "$FLEET/replica-$n.url")")
done
nginx_balance "$FLEET/nginx" "$LB_PORT" "${upstreams[@]}"
echo "fleet: nginx $(nginx -v 2>&1 | cut -d/ -f2) balancing $LB over ${upstreams[*]}" >&2

# Two workers, registered through the balancer.
for w in a b; do
  HUB_WORKER_HUB_URL="$LB" HUB_WORKER_TOKEN="$PADDOCK_TOKEN_WORKER" HUB_WORKER_NAME="fleet-$w" \
    HUB_WORKER_CACHE_DIR="$FLEET/worker-$w-cache" HUB_WORKER_THREADS=1 \
    "$WORKER_BIN" >"$FLEET/worker-$w.log" 2>&1 &
  PIDS+=("$!")
done
for w in a b; do
  for _ in $(seq 1 300); do grep -q "registered with the hub" "$FLEET/worker-$w.log" && break; sleep 0.2; done
  grep -q "registered with the hub" "$FLEET/worker-$w.log" || { tail -30 "$FLEET/worker-$w.log" >&2; exit 1; }
done
echo "fleet: up in $((SECONDS - start)) s" >&2

export HF_ENDPOINT="$LB"
export HF_HUB_DISABLE_TELEMETRY=1 DISABLE_SAFETENSORS_CONVERSION=1 HF_HUB_DISABLE_PROGRESS_BARS=1
export HF_HOME="$FLEET/hf-home"
export PADDOCK_FLEET_DIR="$FLEET" PADDOCK_FLEET_REPLICAS="$REPLICAS" PADDOCK_HUB_BIN="$HUB"
C="$ROOT/tests/conformance"
if [[ -n "${PADDOCK_MINILM_DIR:-}" && -z "${PADDOCK_CLASSIFIER_DIR:-}" && -x "$(dirname "$HUB")/examples/make-classifier" ]]; then
  export PADDOCK_CLASSIFIER_DIR="$FLEET/classifier"
  "$(dirname "$HUB")/examples/make-classifier" "$PADDOCK_MINILM_DIR" "$PADDOCK_CLASSIFIER_DIR" >/dev/null
fi
logs=(); for n in $(seq 1 "$REPLICAS"); do logs+=("$FLEET/replica-$n.log"); done
export PADDOCK_HUB_LOG="$(IFS=:; echo "${logs[*]}")" PADDOCK_HUB_DATA="$FLEET/replica-1"
export PADDOCK_WORKER_LOGS="$FLEET/worker-a.log:$FLEET/worker-b.log" PADDOCK_S3_PREFIX=fleet
HF_HUB_DISABLE_XET=1 "$PY" -m pytest -q -p no:cacheprovider "$C/test_hub.py" "$C/test_endpoints.py"
"$PY" -m pytest -q -p no:cacheprovider "$C/test_xet_default.py"
"$PY" -m pytest -q -p no:cacheprovider -s "$ROOT/tests/fleet/test_fleet.py"
echo "fleet: done in $((SECONDS - start)) s"
