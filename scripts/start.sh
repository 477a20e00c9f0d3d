#!/usr/bin/env bash
# Starts the system on its defaults on this host: a supernode (gRPC 8002,
# pieces 8001, cache in $SUPERNODE_HOME) and a dfdaemon registry mirror on
# 127.0.0.1:65001 that uses it. Ctrl-C stops both.
#
#   SUPERNODE_HOME  supernode cache   (default /home/admin/supernode)
#   REGISTRY        dfdaemon upstream (default https://index.docker.io)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

[ -f dist/src/cli/supernode.js ] || npm run build

SUPERNODE_HOME=${SUPERNODE_HOME:-/home/admin/supernode}
REGISTRY=${REGISTRY:-https://index.docker.io}

pids=()
stop() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap stop EXIT INT TERM

node dist/src/cli/supernode.js --home-dir "$SUPERNODE_HOME" "$@" &
pids+=($!)
node dist/src/cli/dfdaemon.js --registry "$REGISTRY" --node 127.0.0.1:8002 &
pids+=($!)
echo "supernode on :8002 (pieces :8001), dfdaemon on 127.0.0.1:65001 -> $REGISTRY; Ctrl-C stops both" >&2
wait -n
