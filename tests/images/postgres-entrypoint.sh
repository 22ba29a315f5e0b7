#!/bin/sh
# Stand-in for the official postgres image's entrypoint: same contract
# (POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB, POSTGRES_INITDB_ARGS, PGDATA, initdb on an empty
# volume, a temporary socket-only server for the database creation, then the
# real server with the container's arguments).
set -eu
# The one PostgreSQL major the image installed (15 from bookworm, 17 from trixie).
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
export PATH=$bin:$PATH
: "${PGDATA:=/var/lib/postgresql/data}"
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA" /var/run/postgresql
  chown -R postgres:postgres "$PGDATA" /var/run/postgresql
  chmod 700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi
[ "${1:-}" = postgres ] && shift
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pw=$(mktemp); printf '%s' "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required}" > "$pw"
  # shellcheck disable=SC2086 # word splitting of POSTGRES_INITDB_ARGS is the official contract
  initdb -D "$PGDATA" --username="$POSTGRES_USER" --pwfile="$pw" --auth-local=trust --auth-host=scram-sha-256 \
    ${POSTGRES_INITDB_ARGS:-} >/dev/null
  rm -f "$pw"
  printf "host all all all scram-sha-256\n" >> "$PGDATA/pg_hba.conf"
  # As the real image: TimescaleDB preloaded when the image carries it.
  if [ -e "${bin%/bin}/lib/timescaledb.so" ]; then
    printf "shared_preload_libraries = 'timescaledb'\n" >> "$PGDATA/postgresql.conf"
  fi
  pg_ctl -D "$PGDATA" -w -o "-c listen_addresses=''" start >/dev/null
  if [ "$POSTGRES_DB" != postgres ]; then
    psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d postgres -q -c "CREATE DATABASE \"$POSTGRES_DB\""
  fi
  for f in /docker-entrypoint-initdb.d/*.sql; do
    [ -e "$f" ] && psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d "$POSTGRES_DB" -q -f "$f"
  done
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  echo "PostgreSQL init process complete; ready for start up."
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' "$@"
