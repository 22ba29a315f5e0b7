#!/usr/bin/env bash
# Runs the tests as on a new machine, where TimescaleDB is absent (it is not packaged, so no install step
# provides it): in a mount namespace of its own, the host's TimescaleDB files are hidden behind copies of
# their folders without them. The real files are not touched, and nothing outside this command sees the
# difference. Nothing here builds or fetches TimescaleDB.
#
#   tests/newmachine.sh [PYTEST_ARGS...]   build the stand-ins as a new machine would (no TimescaleDB in
#                                          them) under the tag QBCTL_STANDIN_TAG (default newmachine), then
#                                          CI=true python -m pytest PYTEST_ARGS
#   tests/newmachine.sh -- COMMAND...      run COMMAND there instead (e.g. `-- bash .ci/run`)
#
# Needs root (a mount namespace) and unshare (util-linux). The Docker engine runs outside the namespace:
# images built here carry only the files build.sh sees here, which is the point.
set -euo pipefail
cd "$(dirname "$0")/.."
hidden=(/usr/lib/postgresql/15/lib /usr/share/postgresql/15/extension)

if [ "${QBCTL_NEWMACHINE:-}" != inside ]; then
  [ "$(id -u)" = 0 ] || { echo "newmachine: needs root to make a mount namespace" >&2; exit 2; }
  exec unshare --mount --propagation private env QBCTL_NEWMACHINE=inside "$0" "$@"
fi

scratch=$(mktemp -d /tmp/qbctl-newmachine.XXXXXX)
cleanup() {
  for dir in "${hidden[@]}"; do umount "$dir" 2>/dev/null || true; done
  rm -rf "$scratch"
}
trap cleanup EXIT
for dir in "${hidden[@]}"; do
  [ -d "$dir" ] || continue
  copy=$scratch/${dir//\//_}
  mkdir -p "$copy"
  cp -a "$dir/." "$copy/"
  rm -f "$copy"/timescaledb*
  mount --bind "$copy" "$dir"
done
if ls /usr/lib/postgresql/15/lib/timescaledb* /usr/share/postgresql/15/extension/timescaledb* >/dev/null 2>&1; then
  echo "newmachine: TimescaleDB is still visible" >&2
  exit 1
fi
echo "newmachine: TimescaleDB hidden (${hidden[*]} without timescaledb*)" >&2

export QBCTL_STANDIN_TAG=${QBCTL_STANDIN_TAG:-newmachine}
if [ "${1:-}" = -- ]; then
  shift
  "$@"
else
  tests/images/build.sh
  CI=true python -m pytest "$@"
fi
