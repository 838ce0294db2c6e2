# syntax=docker/dockerfile:1
#
# unified-worker: delivers mail received by Amazon SES into docker-mailserver.
#
#   docker build --build-arg GIT_COMMIT=$(git rev-parse HEAD) -t unified-worker .
#   docker run --rm --env-file worker.env unified-worker --domains example.com
#
# Two stages: the build stage compiles TypeScript with the dev dependencies and then prunes them; the runtime stage
# gets dist/ and the production node_modules only, and runs as the unprivileged `node` user.

ARG NODE_IMAGE=node:22-bookworm-slim

# ---- build ------------------------------------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /app

# Dependencies first, so this layer is cached until package*.json change. --ignore-scripts: no dependency needs an
# install script for the build (the only ones with scripts, esbuild and classic-level, are test-only).
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund

COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
# The commit the image is built from, for the metric ses_worker_build_info{version,commit} (the image has no .git):
# src/daemon/build-info.ts reads dist/build-info.json and reports anything that is not a hex commit id as "unknown".
ARG GIT_COMMIT=unknown
RUN npm run build \
 && printf '{"commit":"%s"}\n' "$GIT_COMMIT" > dist/build-info.json \
 && npm prune --omit=dev --ignore-scripts --no-audit --no-fund

# ---- runtime ----------------------------------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS runtime

# tini as PID 1: forwards SIGTERM/SIGINT to node (which drains in-flight mail, see SHUTDOWN_GRACE_SECONDS) and
# reaps zombies. Without it, run the container with `--init` (compose: `init: true`).
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/*

ENV NODE_ENV=production
WORKDIR /app

# Owned by root and not writable by the process: the worker writes nothing to disk (logs go to stdout).
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist

USER node

# 8080: /health, /ready (HEALTH_PORT); 8000: /metrics (METRICS_PORT). Nothing else listens.
EXPOSE 8080 8000

# The slim image has no curl: ask node's fetch. Unhealthy = a poller thread is dead, restarting or stale.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.HEALTH_PORT||8080)+'/health').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]

ENTRYPOINT ["/usr/bin/tini", "--", "node", "dist/unified-worker.js"]
