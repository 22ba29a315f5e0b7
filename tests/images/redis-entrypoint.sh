#!/bin/sh
# Stand-in for the official redis image's entrypoint (docker-library/redis), written here from its
# contract (not copied):
# - an option or a *.conf file as the first argument means `redis-server` with them;
# - started as root, `redis-server` first makes everything in its working folder (/data, the volume)
#   the redis user's (uid 999, as on the Alpine image), then runs again as that user through gosu;
# - files are created private (umask 0077) unless the container was given another umask than 0022;
# - protected mode is off: the real image compiles that default into the server, so that other
#   containers (Redis Commander) reach it without a password; here it is the first option, which the
#   container's own later arguments can still turn on.
set -e
case "${1:-}" in
  -*|*.conf) set -- redis-server "$@" ;;
esac
if [ "${1:-}" = redis-server ] && [ "$(id -u)" = 0 ]; then
  find . \! -user redis -exec chown redis '{}' +
  exec gosu redis "$0" "$@"
fi
[ "$(umask)" != 0022 ] || umask 0077
if [ "${1:-}" = redis-server ]; then
  case "${2:-}" in
    *.conf) ;;  # a config file must come first and then decides (Debian's build defaults to protected mode on)
    *) shift; set -- redis-server --protected-mode no "$@" ;;
  esac
fi
exec "$@"
