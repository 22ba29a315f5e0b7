#!/usr/bin/env bash
# Stand-in for the entrypoint of the official postgres image (docker-library/postgres), which the
# timescale/timescaledb images keep. Written here from its documented contract, not copied:
# - `postgres ARGS` (or just `-c ...`: the server is implied); any other command runs as given;
# - POSTGRES_USER (default postgres), POSTGRES_PASSWORD (required unless POSTGRES_HOST_AUTH_METHOD=trust),
#   POSTGRES_DB (default: the user), each also as *_FILE; POSTGRES_INITDB_ARGS (split as a shell would);
#   POSTGRES_HOST_AUTH_METHOD (default: the server's password_encryption), PGDATA;
# - started as root: the data and socket folders are made the postgres user's (uid 70, as on the Alpine
#   images), and the script runs again as that user through gosu;
# - on an empty PGDATA: initdb (local connections trusted, as initdb does by default), one pg_hba line for
#   every other host with the auth method, a temporary server on the socket only, started with the
#   container's own arguments, the database created, then every file of /docker-entrypoint-initdb.d in
#   name order (*.sh run when executable, else sourced into this shell; *.sql, *.sql.gz through psql;
#   anything else skipped), the temporary server stopped;
# - then `exec` of the command: PostgreSQL listens on every address (the image's postgresql.conf.sample
#   says listen_addresses = '*', see build.sh).
set -Eeo pipefail

# NAME from NAME, or from the file NAME_FILE names (Docker secrets); both at once is an error.
from_env_or_file() {
  local name=$1 fallback=${2:-} file_var="${1}_FILE"
  if [ -n "${!name:-}" ] && [ -n "${!file_var:-}" ]; then
    echo "error: $name and $file_var are both set; set one of them" >&2
    exit 1
  fi
  local value=$fallback
  if [ -n "${!name:-}" ]; then
    value=${!name}
  elif [ -n "${!file_var:-}" ]; then
    value=$(<"${!file_var}")
  fi
  export "$name=$value"
  unset "$file_var"
}

wants_help() {  # options after which postgres prints and exits: no setup for those
  local a
  for a; do
    case "$a" in -'?'|--help|--describe-config|-V|--version) return 0 ;; esac
  done
  return 1
}

# psql as the setup user over the socket, stopping at the first error; the database is POSTGRES_DB
# unless the caller names another.
run_sql() {
  PGHOST= PGHOSTADDR= psql -v ON_ERROR_STOP=1 --no-psqlrc --no-password --username "$POSTGRES_USER" \
    --dbname "${sql_db:-$POSTGRES_DB}" "$@"
}

prepare_folders() {
  mkdir -p "$PGDATA"
  chmod 700 "$PGDATA" || :
  mkdir -p /var/run/postgresql || :
  chmod 3775 /var/run/postgresql || :
  if [ "$(id -u)" = 0 ]; then  # only what is not the postgres user's yet: a large volume is not walked twice
    find "$PGDATA" /var/run/postgresql \! -user postgres -exec chown postgres '{}' +
  fi
}

check_password() {
  if [ -z "$POSTGRES_PASSWORD" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != trust ]; then
    cat >&2 <<'EOF'
error: the database is not initialised and no superuser password was given: set POSTGRES_PASSWORD
       (or POSTGRES_HOST_AUTH_METHOD=trust to let anyone in without one, which is not recommended)
EOF
    exit 1
  fi
  if [ "$POSTGRES_HOST_AUTH_METHOD" = trust ]; then
    echo "warning: POSTGRES_HOST_AUTH_METHOD=trust lets every host that reaches the port in without a password" >&2
  fi
}

initialise() {  # initialise ARGS...: the container's arguments (given to the temporary server too)
  [ "${1:-}" = postgres ] && shift
  # POSTGRES_INITDB_ARGS is split as a shell splits words (quotes kept together).
  local extra pwfile
  eval "extra=($POSTGRES_INITDB_ARGS)"
  # initdb reads the password from a file; a trailing newline keeps an empty one valid.
  pwfile=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
  initdb --username="$POSTGRES_USER" --pwfile="$pwfile" "${extra[@]}"
  rm -f "$pwfile"
  local method=$POSTGRES_HOST_AUTH_METHOD
  [ -n "$method" ] || method=$(postgres -C password_encryption "$@")
  printf '\nhost all all all %s\n' "$method" >> "$PGDATA/pg_hba.conf"

  export PGPASSWORD="${PGPASSWORD:-$POSTGRES_PASSWORD}"
  # pg_ctl hands its -o string to /bin/sh: each argument single-quoted.
  local opts="" a
  for a; do opts+=" '${a//\'/\'\\\'\'}'"; done
  opts+=" -c listen_addresses='' -p ${PGPORT:-5432}"
  NOTIFY_SOCKET= PGUSER="${PGUSER:-$POSTGRES_USER}" pg_ctl -D "$PGDATA" -o "$opts" -w start
  if [ -z "$(sql_db=postgres run_sql --tuples-only --set db="$POSTGRES_DB" \
               <<<"SELECT 1 FROM pg_database WHERE datname = :'db'")" ]; then
    sql_db=postgres run_sql --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db"'
  fi
  local f
  for f in /docker-entrypoint-initdb.d/*; do
    [ -e "$f" ] || continue
    case "$f" in
      *.sh)
        if [ -x "$f" ]; then echo "$0: running $f"; "$f"
        else echo "$0: sourcing $f"; . "$f"
        fi ;;
      *.sql) echo "$0: running $f"; run_sql -f "$f" ;;
      *.sql.gz) echo "$0: running $f"; gunzip -c "$f" | run_sql ;;
      *) echo "$0: ignoring $f" ;;
    esac
  done
  PGUSER="${PGUSER:-postgres}" pg_ctl -D "$PGDATA" -m fast -w stop
  unset PGPASSWORD
  echo
  echo "PostgreSQL init process complete; ready for start up."
  echo
}

main() {
  if [ "${1:0:1}" = - ]; then
    set -- postgres "$@"
  fi
  if [ "$1" = postgres ] && ! wants_help "$@"; then
    from_env_or_file POSTGRES_PASSWORD
    from_env_or_file POSTGRES_USER postgres
    from_env_or_file POSTGRES_DB "$POSTGRES_USER"
    from_env_or_file POSTGRES_INITDB_ARGS
    : "${POSTGRES_HOST_AUTH_METHOD:=}"
    prepare_folders
    if [ "$(id -u)" = 0 ]; then
      exec gosu postgres "$BASH_SOURCE" "$@"
    fi
    if [ -s "$PGDATA/PG_VERSION" ]; then
      echo "$PGDATA holds a database already: no initialisation"
    else
      check_password
      ls /docker-entrypoint-initdb.d/ >/dev/null  # unreadable: fail now, not half-way through
      initialise "$@"
    fi
  fi
  exec "$@"
}

main "$@"
