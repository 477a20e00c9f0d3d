#!/bin/sh
# Entrypoint of the dfdaemon image, installed as /usr/local/bin/dfdaemon.
#
# dfdaemon's own default working directory is ~/.small-dragonfly/dfdaemon;
# in the image it belongs on the volume /home/admin/dfdaemon instead. Users
# replace the image's arguments with their own (--node, --registry ...), so a
# default in CMD would be lost: add --home here unless the arguments choose a
# directory themselves (--home, or a --config file that may set `home`).
set -e
app=/app/dist/src/cli/dfdaemon.js
for arg in "$@"; do
  case "$arg" in
    --home|--home=*|--config|--config=*) exec node "$app" "$@" ;;
  esac
done
exec node "$app" --home /home/admin/dfdaemon "$@"
