# syntax=docker/dockerfile:1
# profiler-server image. Build from the repository root (BuildKit):
#   docker build -f deploy/docker/server.Dockerfile -t profiler-server:0.1.0 .
# Runs as the unprivileged user `profiler` (uid 10001); data lives in the volume
# /var/lib/profiler. The server needs no eBPF toolchain: the UI is embedded at compile time.

# --- build -------------------------------------------------------------------------------------
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p profiler-server \
 && mkdir -p /out \
 && cp target/release/profiler-server /out/ \
 && strip --strip-debug /out/profiler-server

# --- runtime -----------------------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 profiler \
 && useradd --system --uid 10001 --gid profiler --home-dir /var/lib/profiler \
      --shell /usr/sbin/nologin profiler \
 && install -d -o profiler -g profiler -m 0750 /var/lib/profiler
COPY --from=build /out/profiler-server /usr/local/bin/profiler-server
USER 10001:10001
VOLUME ["/var/lib/profiler"]
# 4040: UI, JSON API, pprof/Pyroscope ingest, /healthz, /readyz. 4317: OTLP/gRPC.
EXPOSE 4040 4317
ENTRYPOINT ["/usr/local/bin/profiler-server"]
CMD ["--data-dir", "/var/lib/profiler", "--listen", "0.0.0.0:4040", "--otlp-listen", "0.0.0.0:4317"]
