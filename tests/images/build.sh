#!/usr/bin/env bash
# Builds offline stand-ins of the stack's four images from Debian packages, with
# the same contract as the real images (POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB and PGDATA;
# `redis-server ARGS`; a web UI on 8080; a web UI on 8081 with REDIS_HOSTS):
# qbctl-standin/{postgres,redis,adminer,redis-commander}:TAG, and qbctl-standin/postgres17:TAG (TAG is
# $QBCTL_STANDIN_TAG, else test), PostgreSQL 17
# from Debian 13 (trixie) with the same entrypoint contract and no TimescaleDB (none is built for it here),
# so that a move from PostgreSQL 15 to 17 (`qbctl upgrade`) can be tested.
# The Debian cluster that postgresql-15 creates is removed: like the official image, a bare
# `pg_isready` then asks the socket on port 5432.
# Where the host has TimescaleDB installed for PostgreSQL 15 (it is not packaged: a developer builds
# it), the postgres stand-in carries those files and preloads the extension, so that e2e tests
# exercise the extension the real image ships; its postgresql-15 is then pinned to the host's
# version (an extension built against other server headers fails every background job).
# Reuses them when the images built from this very recipe (and host files) already exist.
# Needs: a Docker engine, mmdebstrap and npm on the host (no registry is
# reachable from inside a container or chroot here).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tsdb_files=$(ls /usr/lib/postgresql/15/lib/timescaledb*.so /usr/share/postgresql/15/extension/timescaledb* 2>/dev/null || true)
pg_pkg=postgresql-15
if [ -n "$tsdb_files" ]; then
  pg_pkg="postgresql-15=$(dpkg-query -W -f='${Version}' postgresql-15)"
fi
recipe=$( (cat "$0" "$here"/*-entrypoint.sh; echo "$pg_pkg"; [ -z "$tsdb_files" ] || cat $tsdb_files) | sha256sum | cut -c1-12)
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
mirror=/etc/apt/sources.list.d/debian.sources
[ -f "$mirror" ] || mirror=http://deb.debian.org/debian
mmdebstrap --quiet --variant=apt --format=tar \
  --include=$pg_pkg,redis-server,php-cli,php-pgsql,adminer,nodejs,jq,ca-certificates \
  --customize-hook="copy-in $here/postgres-entrypoint.sh $here/redis-entrypoint.sh /usr/local/bin" \
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
mmdebstrap --quiet --variant=apt --format=tar --include=postgresql-17 \
  --customize-hook="copy-in $here/postgres-entrypoint.sh /usr/local/bin" \
  --customize-hook='rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*' \
  --customize-hook='rm -rf "$1"/etc/postgresql "$1"/var/lib/postgresql/17' \
  trixie "$work/rootfs17.tar" http://deb.debian.org/debian
base17=$(docker import "$work/rootfs17.tar" "$repo/base17:$recipe")

commit() {  # commit NAME CHANGE... (from $from, the bookworm base unless set)
  local name=$1; shift
  local cid; cid=$(docker create "${from:-$base}" /bin/true)
  local args=(--change "LABEL io.qbctl.standin=$recipe")
  for c in "$@"; do args+=(--change "$c"); done
  docker commit "${args[@]}" "$cid" "$repo/$name:$tag" >/dev/null
  docker rm -f "$cid" >/dev/null
}
commit postgres 'ENV PGDATA=/var/lib/postgresql/data' 'ENV LANG=C.UTF-8' 'ENV PG_MAJOR=15' \
  'ENTRYPOINT ["/usr/local/bin/postgres-entrypoint.sh"]' 'CMD ["postgres"]'  'EXPOSE 5432'
commit redis 'WORKDIR /data' 'ENTRYPOINT ["/usr/local/bin/redis-entrypoint.sh"]' 'CMD ["redis-server"]' \
  'EXPOSE 6379'
commit adminer 'WORKDIR /usr/share/adminer' 'ENTRYPOINT []' \
  'CMD ["php", "-S", "0.0.0.0:8080", "-t", "/usr/share/adminer/adminer"]' 'EXPOSE 8080'
rc=/opt/redis-commander/node_modules/redis-commander  # the package's own docker entrypoint reads REDIS_HOSTS
commit redis-commander 'ENTRYPOINT []' 'ENV NODE_ENV=production' "ENV HOME=$rc" "WORKDIR $rc" \
  "CMD [\"$rc/docker/entrypoint.sh\"]" 'EXPOSE 8081'
from=$base17 commit postgres17 'ENV PGDATA=/var/lib/postgresql/data' 'ENV LANG=C.UTF-8' 'ENV PG_MAJOR=17' \
  'ENTRYPOINT ["/usr/local/bin/postgres-entrypoint.sh"]' 'CMD ["postgres"]'  'EXPOSE 5432'
docker image ls "$repo"
# Drop base images of older recipes (ignored while a container still uses one).
for b in base base17; do
  docker image ls --format '{{.Repository}}:{{.Tag}}' "$repo/$b" | grep -v ":$recipe\$" | xargs -r docker rmi >/dev/null 2>&1 || true
done
