#!/usr/bin/env bash
# Assembles a build context of prebuilt artifacts for the Dockerfiles'
# `runtime-prebuilt` target, for machines whose builds cannot run npm (no npm
# in the base image, no registry access during the build):
#
#   docker/build-context.sh [--no-build] OUT_DIR
#   docker build -f docker/supernode.Dockerfile --target runtime-prebuilt -t dragonfly-supernode OUT_DIR
#
# OUT_DIR gets the layout of the repository, reduced to what runs:
#   package.json, package-lock.json, bin/, proto/, dist/src/ (compiled here
#   unless --no-build), node_modules/ (production dependencies only: a copy of
#   the repository's, pruned offline), docker/dfdaemon-entrypoint.sh.
#
# node_modules is copied from this host, so its native addons must suit the
# image: build on the platform (OS, CPU, libc) the image runs on.
set -euo pipefail

usage() { echo "usage: $0 [--no-build] OUT_DIR" >&2; exit 2; }

build=1
out=
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) build=0 ;;
    -h|--help) usage ;;
    -*) echo "$0: unknown option $1" >&2; usage ;;
    *) [ -z "$out" ] || usage; out=$1 ;;
  esac
  shift
done
[ -n "$out" ] || usage

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

if [ -e "$out" ] && [ -n "$(ls -A "$out")" ]; then
  echo "$0: $out exists and is not empty" >&2
  exit 1
fi
if [ ! -d "$repo/node_modules" ]; then
  echo "$0: $repo/node_modules is missing; run npm ci first" >&2
  exit 1
fi

if [ "$build" = 1 ]; then
  (cd "$repo" && npm run --silent build)
fi
if [ ! -f "$repo/dist/src/cli/supernode.js" ]; then
  echo "$0: $repo/dist/src is not built; run npm run build (or drop --no-build)" >&2
  exit 1
fi

mkdir -p "$out/dist" "$out/docker"
cp -p "$repo/package.json" "$repo/package-lock.json" "$out/"
cp -pR "$repo/bin" "$repo/proto" "$out/"
cp -pR "$repo/dist/src" "$out/dist/src"
cp -p "$repo/docker/dfdaemon-entrypoint.sh" "$out/docker/"
cp -pR "$repo/node_modules" "$out/node_modules"
# Drops dev dependencies (typescript, @types/*) and anything extraneous; works
# from the lockfile alone, without the registry.
(cd "$out" && npm prune --omit=dev --offline --no-audit --no-fund --loglevel=error >/dev/null)
find "$out/node_modules" -mindepth 1 -type d -empty -delete

echo "$out"
