# dfdaemon: a registry mirror on port 65001 that pulls image blobs through the
# P2P network.
#
# Two ways to build the same image (see docker/README.md):
#
#   From source, npm runs inside the build (the usual way):
#     docker build -f docker/dfdaemon.Dockerfile -t dragonfly-dfdaemon .
#
#   From artifacts the host already built (no npm and no network in the build):
#     docker/build-context.sh /tmp/df-ctx
#     docker build -f docker/dfdaemon.Dockerfile --target runtime-prebuilt \
#       -t dragonfly-dfdaemon /tmp/df-ctx
#
# Run (host network: docker's daemon reaches the mirror at 127.0.0.1:65001,
# the address dfdaemon listens on by default):
#   docker run -d --name dfdaemon --network host \
#     -v /data/dragonfly/dfdaemon:/home/admin/dfdaemon \
#     dragonfly-dfdaemon --node 172.60.20.44:8002 --registry https://index.docker.io
#
# Stage order matters for builders that build every stage up to --target: the
# prebuilt runtime comes before the npm build stage, so building it never
# needs npm or BUILD_IMAGE.

# Image the program runs on; it must provide `node` (>= 20) and /bin/sh.
ARG BASE_IMAGE=node:20-bookworm-slim
# Image with node and npm that compiles the project.
ARG BUILD_IMAGE=node:20-bookworm-slim

# --- runtime-base: everything but the application files ----------------------
FROM ${BASE_IMAGE} AS runtime-base
LABEL org.opencontainers.image.title="dragonfly-dfdaemon" \
      org.opencontainers.image.description="Dragonfly-style registry mirror that fetches image blobs over P2P" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV NODE_ENV=production
# The peer's working directory (pieces it serves, uploader state) must belong
# to the runtime user, so that a fresh named or anonymous volume is writable.
# Exec form with node: the base image need not have coreutils.
RUN ["node", "-e", "const fs = require('fs'); for (const d of ['/app', '/home/admin/dfdaemon']) fs.mkdirSync(d, { recursive: true }); fs.chownSync('/home/admin/dfdaemon', 1000, 1000); fs.chmodSync('/home/admin/dfdaemon', 0o750);"]
# Adds --home /home/admin/dfdaemon unless the arguments pick a directory.
COPY --chmod=755 docker/dfdaemon-entrypoint.sh /usr/local/bin/dfdaemon
WORKDIR /app
# Numeric, so that Kubernetes' runAsNonRoot can verify it without /etc/passwd.
USER 1000:1000
VOLUME ["/home/admin/dfdaemon"]
# The registry mirror (and /healthz, /metrics).
EXPOSE 65001
ENTRYPOINT ["dfdaemon"]
# The empty CMD drops the base image's CMD ["node"], which would otherwise
# become an argument.
CMD []

# --- runtime-prebuilt: the files docker/build-context.sh assembled -----------
FROM runtime-base AS runtime-prebuilt
COPY package.json /app/
COPY node_modules /app/node_modules
COPY proto /app/proto
COPY bin /app/bin
COPY dist/src /app/dist/src

# --- build: compile and keep only production dependencies --------------------
FROM ${BUILD_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY proto ./proto
COPY bin ./bin
COPY src ./src
COPY scripts/bundle.js ./scripts/
RUN npm run build && npm prune --omit=dev --no-audit --no-fund

# --- runtime (default target): compiled here, in the build stage ------------
FROM runtime-base AS runtime
COPY --from=build /src/package.json /app/
COPY --from=build /src/node_modules /app/node_modules
COPY --from=build /src/proto /app/proto
COPY --from=build /src/bin /app/bin
COPY --from=build /src/dist/src /app/dist/src
