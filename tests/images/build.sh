#!/usr/bin/env bash
# Builds offline stand-ins of the stack's four images from Debian packages, following the contracts of
# the images users pull (the scripts beside this file say what each reproduces, in their own code):
# - qbctl-standin/postgres:TAG as timescale/timescaledb:latest-pg15: docker-library/postgres's
#   entrypoint contract (postgres-entrypoint.sh: POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB,
#   POSTGRES_INITDB_ARGS, POSTGRES_HOST_AUTH_METHOD, PGDATA, /docker-entrypoint-initdb.d), the postgres
#   user as uid 70 with gosu (and su-exec pointing at it), `VOLUME /var/lib/postgresql/data`, `STOPSIGNAL
#   SIGINT`, listen_addresses = '*' and timescaledb preloaded in postgresql.conf.sample; and
#   timescaledb-docker's two first-start scripts in /docker-entrypoint-initdb.d
#   (timescaledb-install.sh: the extension in postgres, template1 and POSTGRES_DB, the telemetry line;
#   timescaledb-tune.sh: the tune step, skipped under NO_TS_TUNE);
# - qbctl-standin/redis:TAG as redis:7-alpine (redis-entrypoint.sh: the redis user as uid 999 through
#   gosu, /data chowned, umask, protected mode off; `VOLUME /data`);
# - qbctl-standin/adminer:TAG (a web UI on 8080), qbctl-standin/redis-commander:TAG (a web UI on 8081
#   reading REDIS_HOSTS; Redis Commander 0.9.0 from npm, the default image runs 0.9.1);
# - qbctl-standin/postgres17:TAG, PostgreSQL 17 from Debian 13 (trixie) with the same entrypoint
#   contract and no TimescaleDB (none is built for it here, so no TimescaleDB scripts either, as the
#   plain postgres image), so that a move from PostgreSQL 15 to 17 (`qbctl upgrade`) can be tested.
# TAG is $QBCTL_STANDIN_TAG, else test.
# The Debian cluster that postgresql-15 creates is removed: like the official image, a bare
# `pg_isready` then asks the socket on port 5432.
# Where the host has TimescaleDB installed for PostgreSQL 15 (it is not packaged: a developer builds
# it), the postgres stand-in carries those files, preloads the extension and runs the TimescaleDB
# first-start scripts, so that e2e tests exercise the extension as the real image ships it; its
# postgresql-15 is then pinned to the host's version (an extension built against other server headers
# fails every background job). Without it, the postgres stand-in is the plain postgres image.
# Reuses the images when ones built from this very recipe (and host files) already exist.
# Needs: a Docker engine, mmdebstrap and npm on the host (no registry is
# reachable from inside a container or chroot here).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tsdb_files=$(ls /usr/lib/postgresql/15/lib/timescaledb*.so /usr/share/postgresql/15/extension/timescaledb* 2>/dev/null || true)
pg_pkg=postgresql-15
if [ -n "$tsdb_files" ]; then
  pg_pkg="postgresql-15=$(dpkg-query -W -f='${Version}' postgresql-15)"
fi
recipe=$( (cat "$0" "$here"/*.sh; echo "$pg_pkg"; [ -z "$tsdb_files" ] || cat $tsdb_files) | sha256sum | cut -c1-12)
repo=qbctl-standin
tag=${QBCTL_STANDIN_TAG:-test}  # tests/helpers.py reads the same variable
services=(postgres redis adminer redis-commander postgres17)

have_all=1
for s in "${services[@]}"; do
  got=$(docker image inspect -f '{{index .Config.Labels "io.qbctl.standin"}}' "$repo/$s:$tag" 2>/dev/null || true)
  [ "$got" = "$recipe" ] || have_all=0
done
if [ "$have_all" = 1 ]; then echo "stand-in images up to date ($recipe)"; exit 0; fi

work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
echo "building stand-in images ($recipe) in $work"
# redis-commander comes from npm, installed on the host (its CA is trusted only here).
(cd "$work" && npm install --silent --no-audit --no-fund --prefix "$work/rc" redis-commander@0.9.0 >/dev/null)

# The users of the official Alpine images, made before the packages' own scripts would create them
# with other ids (postgresql-common and redis-server keep a user that exists). shadow entries follow
# from pwconv/grpconv when the passwd package sets itself up.
users_hook='printf "postgres:x:70:70:PostgreSQL administrator:/var/lib/postgresql:/bin/bash\nredis:x:999:1000:Redis:/var/lib/redis:/usr/sbin/nologin\n" >> "$1/etc/passwd"
printf "postgres:x:70:\nredis:x:1000:\n" >> "$1/etc/group"
if [ -e "$1/etc/shadow" ]; then printf "postgres:*:19000:0:99999:7:::\nredis:*:19000:0:99999:7:::\n" >> "$1/etc/shadow"; fi
if [ -e "$1/etc/gshadow" ]; then printf "postgres:!::\nredis:!::\n" >> "$1/etc/gshadow"; fi'
# What the official postgres image does to its sample configuration (initdb copies it into PGDATA):
# listen on every address; and what the TimescaleDB image adds: the library preloaded.
listen="sed -ri \"s!^#?(listen_addresses)\\s*=\\s*\\S+.*!\\1 = '*'!\" \"\$1\"/usr/share/postgresql/*/postgresql.conf.sample"
preload="sed -ri \"s!^#?(shared_preload_libraries)\\s*=\\s*'[^']*'.*!\\1 = 'timescaledb'!\" \"\$1\"/usr/share/postgresql/*/postgresql.conf.sample"
# Inside the chroot (its /var/run is a link to /run, which outside it is the host's). /var/run/postgresql
# is made by the entrypoint at each start: the image's /run is not kept.
folders='chroot "$1" sh -c "install -d -o 70 -g 70 -m 1777 /var/lib/postgresql/data
install -d -m 755 /docker-entrypoint-initdb.d && install -d -o 999 -g 1000 -m 755 /data
ln -s \"\$(command -v gosu)\" /usr/local/bin/su-exec"'
initdb_d=()
if [ -n "$tsdb_files" ]; then  # timescaledb-docker's first-start scripts, under their names and modes
  initdb_d=(--customize-hook="$preload"
            --customize-hook="install -m 644 $here/timescaledb-install.sh \"\$1\"/docker-entrypoint-initdb.d/000_install_timescaledb.sh"
            --customize-hook="install -m 755 $here/timescaledb-tune.sh \"\$1\"/docker-entrypoint-initdb.d/001_timescaledb_tune.sh")
fi
mirror=/etc/apt/sources.list.d/debian.sources
[ -f "$mirror" ] || mirror=http://deb.debian.org/debian
mmdebstrap --quiet --variant=apt --format=tar \
  --include=$pg_pkg,redis-server,php-cli,php-pgsql,adminer,nodejs,jq,ca-certificates,gosu \
  --essential-hook="$users_hook" \
  --customize-hook="copy-in $here/postgres-entrypoint.sh $here/redis-entrypoint.sh /usr/local/bin" \
  --customize-hook="$folders" --customize-hook="$listen" "${initdb_d[@]}" \
  --customize-hook='mkdir -p "$1"/opt/redis-commander' \
  --customize-hook="copy-in $work/rc/node_modules /opt/redis-commander" \
  --customize-hook='rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*' \
  --customize-hook='rm -rf "$1"/etc/postgresql "$1"/var/lib/postgresql/15' \
  bookworm "$work/rootfs.tar" "$mirror"
if [ -n "$tsdb_files" ]; then  # append the host's TimescaleDB files to the root filesystem
  # shellcheck disable=SC2086
  tar --append -f "$work/rootfs.tar" -P --transform 's,^/,,' $tsdb_files
fi
base=$(docker import "$work/rootfs.tar" "$repo/base:$recipe")
# PostgreSQL 17: Debian 13 (trixie) ships it; the host's keyring already trusts trixie's archive key.
mmdebstrap --quiet --variant=apt --format=tar --include=postgresql-17,gosu \
  --essential-hook="$users_hook" \
  --customize-hook="copy-in $here/postgres-entrypoint.sh /usr/local/bin" \
  --customize-hook="$folders" --customize-hook="$listen" \
  --customize-hook='rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*' \
  --customize-hook='rm -rf "$1"/etc/postgresql "$1"/var/lib/postgresql/17' \
  trixie "$work/rootfs17.tar" http://deb.debian.org/debian
base17=$(docker import "$work/rootfs17.tar" "$repo/base17:$recipe")

image() {  # image NAME INSTRUCTION...: a Dockerfile on the base image (the bookworm one unless $from is
  # set), built by the engine's classic builder, which needs no registry for a local base (and, unlike
  # `docker commit --change`, knows STOPSIGNAL).
  local name=$1; shift
  mkdir -p "$work/context"  # holds the Dockerfile only: nothing else is sent to the engine
  { echo "FROM ${from:-$base}"; echo "LABEL io.qbctl.standin=$recipe"; printf '%s\n' "$@"; } > "$work/context/Dockerfile"
  DOCKER_BUILDKIT=0 docker build --quiet --tag "$repo/$name:$tag" "$work/context" >/dev/null 2>"$work/build.log" \
    || { cat "$work/build.log"; exit 1; }
}
postgres_image=('ENV PGDATA=/var/lib/postgresql/data' 'ENV LANG=C.UTF-8' 'VOLUME /var/lib/postgresql/data'
                'ENTRYPOINT ["/usr/local/bin/postgres-entrypoint.sh"]' 'STOPSIGNAL SIGINT' 'EXPOSE 5432'
                'CMD ["postgres"]')
image postgres 'ENV PG_MAJOR=15' 'ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  "${postgres_image[@]}"
image redis 'VOLUME /data' 'WORKDIR /data' 'ENTRYPOINT ["/usr/local/bin/redis-entrypoint.sh"]' 'EXPOSE 6379' \
  'CMD ["redis-server"]'
image adminer 'WORKDIR /usr/share/adminer' 'ENTRYPOINT []' 'EXPOSE 8080' \
  'CMD ["php", "-S", "0.0.0.0:8080", "-t", "/usr/share/adminer/adminer"]'
rc=/opt/redis-commander/node_modules/redis-commander  # the package's own docker entrypoint reads REDIS_HOSTS
image redis-commander 'ENTRYPOINT []' 'ENV NODE_ENV=production' "ENV HOME=$rc" "WORKDIR $rc" 'EXPOSE 8081' \
  "CMD [\"$rc/docker/entrypoint.sh\"]"
from=$base17 image postgres17 'ENV PG_MAJOR=17' \
  'ENV PATH=/usr/lib/postgresql/17/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  "${postgres_image[@]}"
docker image ls "$repo"
# Drop base images of older recipes (ignored while a container or another tag's image still uses one).
for b in base base17; do
  docker image ls --format '{{.Repository}}:{{.Tag}}' "$repo/$b" | grep -v ":$recipe\$" | xargs -r docker rmi >/dev/null 2>&1 || true
done
