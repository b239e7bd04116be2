#!/usr/bin/env bash
# start DIR PORT: start a throwaway PostgreSQL in DIR on 127.0.0.1:PORT (prints its URL); stop DIR: stop it.
# initdb refuses to run as root, so as root the server runs as the postgres user.
set -euo pipefail
cmd=$1; dir=$2
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
case "$cmd" in
  start)
    port=$3
    mkdir -p "$dir"
    [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$dir"
    as_pg "$PGBIN/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --no-sync >/dev/null
    # PAYOUTDESK_PG_SHARED_BUFFERS (e.g. 2GB): a bench-only option, see docs/PERFORMANCE.md; unset: 128MB
    extra=""
    if [ -n "${PAYOUTDESK_PG_SHARED_BUFFERS:-}" ]; then extra=" -c shared_buffers=$PAYOUTDESK_PG_SHARED_BUFFERS"; fi
    as_pg "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/log" -w -o "-k $dir -h 127.0.0.1 -p $port -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200$extra" start >/dev/null
    echo "postgresql+psycopg://postgres@127.0.0.1:$port/postgres"
    ;;
  stop)
    as_pg "$PGBIN/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$dir"
    ;;
esac
