# shellcheck shell=bash
# An external PostgreSQL for scripts that run several hub processes against
# one database (the fleet test): a throwaway cluster made with the machine's
# server binaries (Debian's postgresql package), listening on 127.0.0.1 over
# TCP like a database server on another host would. Source it, then
#
#   pg_start DIR       initdb DIR/data, start it on a free port; sets
#                      PG_URL (postgres://postgres@127.0.0.1:PORT/paddock)
#   pg_stop            fast shutdown
#
# As root the server runs as the `postgres` user (PostgreSQL refuses root).

_pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }

_pg_as() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_start() {
  local dir=$1 bin port
  bin="$(_pg_bin)"
  [ -x "$bin/initdb" ] || { echo "pg: no PostgreSQL server binaries (apt-get install -y postgresql)" >&2; return 1; }
  mkdir -p "$dir"
  chmod 755 "$dir"
  [ "$(id -u)" = 0 ] && chown postgres: "$dir"
  PG_DIR="$dir"
  PG_BIN="$bin"
  _pg_as "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; return 1; }
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  _pg_as "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=300 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
    start >/dev/null || { tail -30 "$dir/server.log" >&2; return 1; }
  _pg_as "$bin/psql" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -c "CREATE DATABASE paddock" >/dev/null
  PG_URL="postgres://postgres@127.0.0.1:$port/paddock"
  echo "pg: $PG_URL ($(_pg_as "$bin/postgres" --version))" >&2
}

# pg_psql SQL: one query on the paddock database, unaligned tuples only.
pg_psql() {
  _pg_as "$PG_BIN/psql" -qAt "$PG_URL" -c "$1"
}

pg_stop() {
  [ -n "${PG_DIR:-}" ] || return 0
  _pg_as "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
  PG_DIR=""
}
