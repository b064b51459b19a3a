# syntax=docker/dockerfile:1
# Build stage: full install (tfjs-node's install script fetches libtensorflow, so this stage needs the
# network) and the TypeScript build; dev dependencies are pruned before the runtime stage copies node_modules.
FROM node:22-bookworm-slim AS build
WORKDIR /app
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json ./
# Fail the build, rather than silently fall back to wasm, when the native backend did not install.
RUN npm ci --include=optional --no-audit --no-fund \
 && node -e "require('@tensorflow/tfjs-node')"
COPY tsconfig.json tsconfig.client.json ./
COPY src ./src
COPY workers ./workers
# bench/ is left out: it imports test fixtures, and the image runs the service, not benchmarks.
RUN npm run build && npm prune --omit=dev --include=optional

FROM node:22-bookworm-slim
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=8080 \
    DATA_DIR=/data \
    QAAS_TF_BACKEND=tensorflow
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
# The dashboard's static files are served from the source tree (no build step copies them into dist/).
COPY --from=build /app/src/http/dashboard/public ./src/http/dashboard/public
COPY package.json openapi.yaml ./
RUN mkdir -p /data && chown node:node /data
USER node
EXPOSE 8080
# Healthy = ready: Redis answers and DATA_DIR is writable (/healthz only says the process is up).
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD node -e "fetch('http://127.0.0.1:'+(process.env.PORT||8080)+'/readyz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
# A 64 MiB young generation: under job-submission load GC took 12.5% of the API's CPU with the
# default and 7% with this (CPU profile of the bench:api load). npm start and bench:api use it too.
CMD ["node", "--max-semi-space-size=64", "dist/src/cli.js", "serve"]
