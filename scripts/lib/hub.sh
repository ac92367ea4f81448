# shellcheck shell=bash
# Starting a hub in scripts: the one way. Source it, then
#
#   hub_build [release|debug] [cargo args...]   build hub-api (sets HUB_BIN)
#   hub_start [hub-api flags...]                start `hub-api serve` (sets HUB_URL, HUB_PID)
#   hub_admin ARGS...                           run `hub-api admin ARGS`, print its last line
#   hub_stop                                    SIGTERM, wait; returns the hub's exit status
#   hub_on_exit 'COMMAND'                       more cleanup, run (before the hub's) on exit
#   server_url LOG PID                          wait until a server (hub, worker) logs
#                                               "listening on URL"; print URL
#
# hub_start makes a temp dir HUB_WORK (the hub's data dir is $HUB_WORK/hub,
# its log $HUB_LOG_FILE), binds 127.0.0.1:0 and reads the URL the hub prints
# (the kernel picks the port, so there is no race for it), waits for /readyz,
# prints "hub: URL (pid PID)" on stderr, and stops the hub and removes HUB_WORK
# when the script exits. Settings go in as flags or HUB_* environment variables
# (see `hub-api --help`; e.g. HUB_PG_UNSAFE_FAST=true for no fsync).
# HUB_PREFIX (an array, e.g. (taskset -c 0)) prefixes the command.
# HUB_KEEP_WORK=1 keeps HUB_WORK for a look at the logs.

PADDOCK_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PADDOCK_TARGET="${CARGO_TARGET_DIR:-$PADDOCK_ROOT/target}"

# The one place that says how the hub binary is built.
HUB_CARGO_BUILD=(cargo build --quiet --bin hub-api)

# hub_build [release|debug] [extra cargo args, e.g. --example bench-client]
hub_build() {
  local profile="${1:-debug}"
  local args=("${HUB_CARGO_BUILD[@]}")
  [ "$profile" = release ] && args+=(--release)
  (cd "$PADDOCK_ROOT" && "${args[@]}" "${@:2}")
  HUB_BIN="$PADDOCK_TARGET/$profile/hub-api"
}

# hub_need_bin [release|debug]: HUB_BIN from the environment, else the built
# binary of that profile; fails with the build command when there is none.
hub_need_bin() {
  HUB_BIN="${HUB_BIN:-$PADDOCK_TARGET/${1:-debug}/hub-api}"
  if [ ! -x "$HUB_BIN" ]; then
    echo "no hub binary at $HUB_BIN; build it first: ${HUB_CARGO_BUILD[*]}" >&2
    return 1
  fi
}

_HUB_EXIT_HOOKS=()
hub_on_exit() { _HUB_EXIT_HOOKS+=("$1"); }

_hub_exit() {
  local status=$? hook
  # A failed script shows why from the hub's side too (CI keeps no files).
  if [ "$status" -ne 0 ] && [ -s "${HUB_LOG_FILE:-}" ]; then
    echo "--- the hub's last warnings and errors ($HUB_LOG_FILE):" >&2
    grep -aE " (WARN|ERROR) |panicked|http.status=5[0-9][0-9]|^hub-api: " "$HUB_LOG_FILE" | tail -40 >&2 || true
    echo "--- the hub log's last lines:" >&2
    tail -5 "$HUB_LOG_FILE" >&2
  fi
  for hook in "${_HUB_EXIT_HOOKS[@]}"; do eval "$hook" || true; done
  hub_stop >/dev/null 2>&1 || true
  if [ -n "${HUB_WORK:-}" ] && [ -z "${HUB_KEEP_WORK:-}" ]; then rm -rf "$HUB_WORK"; fi
}
trap _hub_exit EXIT

# hub_start [hub-api global flags...]: the hub serving from a fresh temp data dir.
hub_start() {
  hub_need_bin debug || return 1
  HUB_WORK="$(mktemp -d /tmp/paddock-hub-XXXXXX)"
  # PostgreSQL runs as another user when we are root: it must reach the dir.
  chmod 755 "$HUB_WORK"
  HUB_LOG_FILE="$HUB_WORK/hub.log"
  HUB_URL=""
  ${HUB_PREFIX[@]+"${HUB_PREFIX[@]}"} "$HUB_BIN" --data-dir "$HUB_WORK/hub" --bind 127.0.0.1:0 "$@" serve \
    >"$HUB_LOG_FILE" 2>&1 &
  HUB_PID=$!
  HUB_URL="$(server_url "$HUB_LOG_FILE" "$HUB_PID")" || { HUB_PID=""; return 1; }
  local _
  for _ in $(seq 1 300); do
    curl -fsS -o /dev/null "$HUB_URL/readyz" 2>/dev/null && break
    sleep 0.2
  done
  curl -fsS -o /dev/null "$HUB_URL/readyz" || { tail -50 "$HUB_LOG_FILE" >&2; echo "hub: not ready" >&2; return 1; }
  echo "hub: $HUB_URL (pid $HUB_PID)" >&2
}

# server_url LOG PID [SECONDS]: the URL a server prints as "listening on URL"
# once it listens (it bound port 0: the kernel picked the port). Fails with
# the log's tail when PID exits first or after SECONDS (default 120).
server_url() {
  local log="$1" pid="$2" tries=$(( ${3:-120} * 5 )) url="" _
  for _ in $(seq 1 "$tries"); do
    url="$(grep -o 'listening on http://[0-9.:]*' "$log" 2>/dev/null | head -1 | cut -d' ' -f3)"
    [ -n "$url" ] && { echo "$url"; return 0; }
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -50 "$log" >&2; echo "server: exited before listening" >&2; return 1
    fi
    sleep 0.2
  done
  tail -50 "$log" >&2; echo "server: not listening after ${3:-120} s" >&2; return 1
}

# hub_admin ARGS...: `hub-api admin ARGS` on the running hub's data dir (the
# last line of its output: a token, an id).
hub_admin() {
  "$HUB_BIN" --data-dir "$HUB_WORK/hub" admin "$@" | tail -1
}

# hub_stop: SIGTERM (the hub drains and stops its PostgreSQL), then wait.
hub_stop() {
  [ -n "${HUB_PID:-}" ] || return 0
  local pid="$HUB_PID" status=0
  HUB_PID=""
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" || status=$?
  [ "$status" -eq 0 ] || echo "hub: exited with status $status after SIGTERM" >&2
  return "$status"
}
