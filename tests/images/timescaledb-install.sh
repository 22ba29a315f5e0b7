# Stand-in for timescaledb-docker's docker-entrypoint-initdb.d/000_install_timescaledb.sh, written here
# from what it does at a TimescaleDB image's first start (not copied). Installed as
# /docker-entrypoint-initdb.d/000_install_timescaledb.sh without the executable bit, as the real one,
# so the entrypoint sources it while its temporary server runs:
# - timescaledb.telemetry_level=basic appended to postgresql.conf (off with TIMESCALEDB_TELEMETRY=off,
#   which also unschedules the telemetry job, job 1);
# - the extension created in `postgres`, in `template1` (so every database created later has it) and
#   in POSTGRES_DB. TimescaleDB then runs a job scheduler for `postgres` and for POSTGRES_DB (none for
#   a template) from the first start on, before any migration: two schedulers, one already running.
ts_install() {
  local conf="${POSTGRESQL_CONF_DIR:-$PGDATA}/postgresql.conf" level=basic db
  local sql="CREATE EXTENSION IF NOT EXISTS timescaledb CASCADE;"
  if [ "${TIMESCALEDB_TELEMETRY:-}" = off ]; then
    level=off
    sql+=" SELECT alter_job(1, scheduled => false) FROM timescaledb_information.jobs WHERE job_id = 1;"
  fi
  echo "timescaledb.telemetry_level=$level" >> "$conf"
  local dbs=(postgres template1)
  [ "${POSTGRES_DB:-postgres}" = postgres ] || dbs+=("$POSTGRES_DB")
  for db in "${dbs[@]}"; do
    PGPASSWORD="${POSTGRESQL_PASSWORD:-${POSTGRES_PASSWORD:-}}" \
      psql -v ON_ERROR_STOP=1 --no-psqlrc -q -U "$POSTGRES_USER" -d "$db" -c "$sql"
  done
}
ts_install
unset -f ts_install
