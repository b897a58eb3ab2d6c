#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for an MLflow backend store, on 127.0.0.1 only (tests, CI, a laptop).
#   mlflow/postgres-local.sh install            # Debian/Ubuntu: apt-get install postgresql (needs root)
#   mlflow/postgres-local.sh start DIR PORT     # initdb in DIR (if new), start on 127.0.0.1:PORT, create db `mlflow`
#   mlflow/postgres-local.sh stop DIR
# The database URI is then postgresql://mlflow@127.0.0.1:PORT/mlflow (trust auth on loopback: for tests only; a real
# server uses passwords or certificates, see mlflow/README.md). As root, the server runs as the `postgres` OS user.
set -euo pipefail

find_bin() {
  if [[ -n "${PG_BIN:-}" ]]; then echo "$PG_BIN"; return; fi
  if command -v initdb >/dev/null 2>&1; then dirname "$(readlink -f "$(command -v initdb)")"; return; fi
  local found; found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
  [[ -n "$found" ]] || { echo "PostgreSQL binaries not found: run '$0 install' (Debian) or set PG_BIN" >&2; exit 3; }
  echo "$found"
}

as_pg() {  # run a command as the postgres OS user when we are root (initdb refuses root)
  if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

cmd=${1:-}
case "$cmd" in
  install)
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    ;;
  start)
    dir=$(readlink -f "$2"); port=$3; bin=$(find_bin)
    mkdir -p "$dir"
    if [[ $(id -u) -eq 0 ]]; then chown postgres "$dir"; chmod 700 "$dir"; fi
    if [[ ! -f "$dir/data/PG_VERSION" ]]; then
      as_pg "$bin/initdb" -D "$dir/data" -U mlflow --auth=trust -E UTF8 >/dev/null
    fi
    as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1" start >/dev/null
    as_pg "$bin/psql" -h 127.0.0.1 -p "$port" -U mlflow -d postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname='mlflow'" | grep -q 1 \
      || as_pg "$bin/createdb" -h 127.0.0.1 -p "$port" -U mlflow mlflow
    echo "postgresql://mlflow@127.0.0.1:$port/mlflow"
    ;;
  stop)
    dir=$(readlink -f "$2"); bin=$(find_bin)
    as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    ;;
  *)
    sed -n '2,8p' "$0"; exit 2
    ;;
esac
