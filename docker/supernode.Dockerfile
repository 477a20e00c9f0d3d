# The supernode: schedules piece transfers and caches sources (ports 8001, 8002).
#
# Two ways to build the same image (see docker/README.md):
#
#   From source, npm runs inside the build (the usual way):
#     docker build -f docker/supernode.Dockerfile -t dragonfly-supernode .
#
#   From artifacts the host already built (no npm and no network in the build):
#     docker/build-context.sh /tmp/df-ctx
#     docker build -f docker/supernode.Dockerfile --target runtime-prebuilt \
#       -t dragonfly-supernode /tmp/df-ctx
#
# Run:
#   docker run -d --name supernode -p 8001:8001 -p 8002:8002 \
#     -v /data/dragonfly/supernode:/home/admin/supernode \
#     dragonfly-supernode --advertise-ip 172.60.20.44
#
# Stage order matters for builders that build every stage up to --target: the
# prebuilt runtime comes before the npm build stage, so building it never
# needs npm or BUILD_IMAGE.

# Image the program runs on; it must provide `node` (>= 20) on PATH.
ARG BASE_IMAGE=node:20-bookworm-slim
# Image with node and npm that compiles the project.
ARG BUILD_IMAGE=node:20-bookworm-slim

# --- runtime-base: everything but the application files ----------------------
FROM ${BASE_IMAGE} AS runtime-base
LABEL org.opencontainers.image.title="dragonfly-supernode" \
      org.opencontainers.image.description="Dragonfly-style P2P supernode: source cache and piece scheduler" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV NODE_ENV=production
# The cache directory must belong to the runtime user, so that a fresh named or
# anonymous volume (which docker seeds from the image) is writable. Exec form
# with node: the base image need not have a shell or coreutils.
RUN ["node", "-e", "const fs = require('fs'); for (const d of ['/app', '/home/admin/supernode']) fs.mkdirSync(d, { recursive: true }); fs.chownSync('/home/admin/supernode', 1000, 1000); fs.chmodSync('/home/admin/supernode', 0o750);"]
WORKDIR /app
# Numeric, so that Kubernetes' runAsNonRoot can verify it without /etc/passwd.
USER 1000:1000
# pieces (repo/) and task metadata (meta/); the CLI's default --home-dir.
VOLUME ["/home/admin/supernode"]
# 8001: HTTP piece server, /healthz, /metrics; 8002: gRPC for peers.
EXPOSE 8001 8002
ENTRYPOINT ["node", "/app/dist/src/cli/supernode.js"]
# Every flag has a default; arguments after the image name are flags, the
# Java-era -Dsupernode.advertiseIp=IP form included. The empty CMD drops the
# base image's CMD ["node"], which would otherwise become an argument.
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
