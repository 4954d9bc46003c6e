# syntax=docker/dockerfile:1.7
# One image for `kube-dvr controller`, `kube-dvr agent`, the chart's
# pre-delete hook (`kube-dvr uninstall`) and the CNI plugin `kube-dvr-cni`
# (crates/cni), which the agent DaemonSet's init container copies to the
# node. Build from the repository root:
#   docker build -t kube-dvr:$(git describe --tags --always) \
#     --build-arg VERSION=... --build-arg REVISION=$(git rev-parse HEAD) .

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS builder
WORKDIR /src
COPY . .
# The cargo registry and the target directory live in BuildKit cache mounts:
# a source change recompiles kube-dvr only, not its dependencies. The binary is
# copied out of the cache mount in the same step. `--no-default-features`
# leaves out the `lab` feature: no `kube-dvr lab`, no API stand-in in the image
# (tests/product.rs checks a binary built this way). The plugin is its own
# small crate (no kube client, no tokio multi-thread runtime).
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --no-default-features --bin kube-dvr \
    && cargo build --release --locked -p kube-dvr-cni --bin kube-dvr-cni \
    && install -D -m 0755 target/release/kube-dvr /out/kube-dvr \
    && install -D -m 0755 target/release/kube-dvr-cni /out/kube-dvr-cni

FROM debian:bookworm-slim
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="kube-dvr" \
      org.opencontainers.image.description="Distributed virtual routing for Kubernetes, after OpenStack Neutron's DVR" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="docker.io/library/debian:bookworm-slim"
# The agent programs the kernel in-process: netlink, and each nftables batch
# through libnftables (libnftables1, loaded at run time; `nftables` depends on
# it too, named here so that it stays). Without it the agent falls back to
# running `nft`. The tools are for operators debugging a node with
# `kubectl exec` (ip netns, nft list ruleset, conntrack -L) and for conntrack
# flushes.
# DL3008: the pin is the base image's Debian release (bookworm): point-release
# package versions leave the archive and would break rebuilds.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates \
        conntrack \
        iproute2 \
        libnftables1 \
        nftables \
    && rm -rf /var/lib/apt/lists/*
COPY --from=builder /out/kube-dvr /usr/local/bin/kube-dvr
COPY --from=builder /out/kube-dvr-cni /usr/local/bin/kube-dvr-cni
# No USER: the agent needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN for setns and
# namespace mounts, in a privileged pod). The controller and the uninstall
# hook run as UID 65532 through the chart's securityContext.
ENTRYPOINT ["/usr/local/bin/kube-dvr"]
