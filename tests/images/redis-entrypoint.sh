#!/bin/sh
# Stand-in for the official redis image's entrypoint: with no config file,
# redis-server accepts connections from other hosts (protected mode off).
set -eu
if [ "${1:-}" = redis-server ]; then
  shift
  exec redis-server --protected-mode no "$@"
fi
exec "$@"
