# syntax=docker/dockerfile:1
# profiler-agent image. Build from the repository root (BuildKit; the build stage downloads
# crates and bpf-linker):
#   docker build -f deploy/docker/agent.Dockerfile -t profiler-agent:0.1.0 .
# The agent must run as root with hostPID and either privileged: true or the capabilities listed
# in deploy/README.md; see deploy/kubernetes/ and deploy/helm/profiler/.

# --- build: rustup's toolchain for the agent, Debian's rustc-web for the kernel programs ------
FROM rust:1.95-bookworm AS build
# rustc-web ships `core` for bpfel-unknown-none (libstd-rust-web-dev-bpf), and bpf-linker is
# built against the LLVM that rustc-web uses (llvm-22-dev); all from bookworm-security.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      rustc-web cargo-web libstd-rust-web-dev-bpf llvm-22-dev libzstd-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# `cargo xtask build-ebpf` installs bpf-linker into ~/.cache/profiler-tools and builds the eBPF
# object; the agent's build script embeds it. Caches keep crates, bpf-linker and the target
# directory across builds, so the binary is copied out of the cached target in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/root/.cache/profiler-tools \
    --mount=type=cache,target=/src/target \
    cargo xtask build-ebpf \
 && cargo build --release --locked -p profiler-agent \
 && mkdir -p /out \
 && cp target/release/profiler-agent /out/ \
 && strip --strip-debug /out/profiler-agent

# --- runtime: the binary and CA certificates, nothing else -------------------------------------
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/profiler-agent /usr/local/bin/profiler-agent
# Root on purpose: the kernel grants the container's capabilities to uid 0 only (a non-root
# user would need file capabilities, which no_new_privs and many runtimes drop).
USER 0:0
ENTRYPOINT ["/usr/local/bin/profiler-agent"]
CMD ["run", "--server", "http://profiler-server.profiler.svc:4040"]
