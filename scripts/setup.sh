#!/usr/bin/env bash
# Prepares a Debian (bookworm) machine to build and test this project:
#   - the outside tools the e2e tests drive: docker-registry, skopeo, podman,
#     umoci, htpasswd (apache2-utils), runc, ip (iproute2), curl;
#   - a podman configuration that works without systemd or a docker engine
#     (vfs storage, runc, cgroupfs, no default ulimits);
#   - the npm dependencies and the compiled output (dist/).
#
# Idempotent: a re-run skips what is already in place. Run as root (apt and
# /etc/containers). It starts no service that outlives it.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf 'setup: %s\n' "$*" >&2; }

# --- Node.js -----------------------------------------------------------------
# Node 20 is not in Debian bookworm; the machine must already provide it.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  log "node and npm (Node.js >= 20) are required but not found on PATH"
  exit 1
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
  log "Node.js >= 20 is required, found $(node --version)"
  exit 1
fi

# --- Debian packages ---------------------------------------------------------
packages=(docker-registry skopeo podman umoci apache2-utils runc iproute2 curl)
missing=()
for p in "${packages[@]}"; do
  if [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" != "install ok installed" ]; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    log "missing packages (${missing[*]}) and not root: run this script as root"
    exit 1
  fi
  log "installing: ${missing[*]}"
  # Package scripts must not start services (docker-registry ships an init
  # script that would start a registry on :5000 and leave it running). A
  # policy-rc.d that answers 101 forbids it; only ours is removed afterwards.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q "${missing[@]}"
fi

# --- Podman / containers configuration --------------------------------------
# The tests pass these settings explicitly too (test/helpers/podman.ts); this
# makes plain `podman` and `skopeo` commands behave the same on this machine.
#   default_ulimits = []   as root podman otherwise raises RLIMIT_NOFILE, which
#                          runc may not be permitted to do in a container
#                          ("error setting rlimit type 7: operation not permitted")
#   cgroup_manager         no systemd here
marker='# Managed by scripts/setup.sh'
podman_conf="$marker
[containers]
default_ulimits = []

[engine]
cgroup_manager = \"cgroupfs\"
events_logger = \"file\"
runtime = \"runc\"
"

if [ "$(id -u)" -eq 0 ]; then
  mkdir -p /etc/containers
  conf=/etc/containers/containers.conf
  if [ ! -e "$conf" ] || grep -qF "$marker" "$conf"; then
    if [ ! -e "$conf" ] || [ "$(cat "$conf")" != "$(printf '%s' "$podman_conf")" ]; then
      log "writing $conf"
      printf '%s' "$podman_conf" >"$conf"
    fi
  elif ! grep -Eq '^[[:space:]]*default_ulimits[[:space:]]*=[[:space:]]*\[[[:space:]]*\]' "$conf" \
    || ! grep -Eq '^[[:space:]]*cgroup_manager[[:space:]]*=[[:space:]]*"cgroupfs"' "$conf"; then
    # Someone else's file: leave it alone and override with a drop-in, which
    # podman reads after the main file.
    dropin=/etc/containers/containers.conf.d/90-dragonfly-tests.conf
    mkdir -p "$(dirname "$dropin")"
    if [ ! -e "$dropin" ] || [ "$(cat "$dropin")" != "$(printf '%s' "$podman_conf")" ]; then
      log "writing $dropin (overrides $conf)"
      printf '%s' "$podman_conf" >"$dropin"
    fi
  fi

  storage=/etc/containers/storage.conf
  if [ ! -e "$storage" ]; then
    log "writing $storage (vfs driver)"
    cat >"$storage" <<EOF
$marker
[storage]
driver = "vfs"
runroot = "/run/containers/storage"
graphroot = "/var/lib/containers/storage"
EOF
  elif ! grep -Eq '^[[:space:]]*driver[[:space:]]*=[[:space:]]*"vfs"' "$storage"; then
    log "note: $storage does not use the vfs driver; the tests pass --storage-driver vfs themselves"
  fi

  policy_json=/etc/containers/policy.json
  if [ ! -e "$policy_json" ]; then
    log "writing $policy_json"
    printf '{ "default": [ { "type": "insecureAcceptAnything" } ] }\n' >"$policy_json"
  fi
else
  log "not root: leaving /etc/containers as it is (the tests bring their own podman configuration)"
fi

# --- npm dependencies and build ---------------------------------------------
# npm ci wipes node_modules, so skip it when the installed tree is newer than
# both manifests (npm writes node_modules/.package-lock.json on every install).
installed=node_modules/.package-lock.json
if [ -f package-lock.json ]; then
  if [ -f "$installed" ] && [ "$installed" -nt package-lock.json ] && [ "$installed" -nt package.json ]; then
    log "node_modules is up to date"
  else
    log "npm ci"
    npm ci --no-audit --no-fund
  fi
else
  log "npm install (no package-lock.json)"
  npm install --no-audit --no-fund
fi

log "npm run build"
npm run build
