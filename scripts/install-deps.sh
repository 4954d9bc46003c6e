#!/usr/bin/env bash
# System packages kube-dvr's dataplane, lab and tests use: nft (nftables)
# and libnftables.so.1 (libnftables1, which the agent loads at run time),
# ip/bridge (iproute2), nsenter/unshare (util-linux), ping, conntrack.
# Idempotent; installs only what is missing. Needs root (or sudo).
set -euo pipefail
need=()
command -v nft >/dev/null 2>&1 || need+=(nftables)
/sbin/ldconfig -p 2>/dev/null | grep 'libnftables\.so\.1 ' >/dev/null || need+=(libnftables1)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v bridge >/dev/null 2>&1 || need+=(iproute2)
command -v nsenter >/dev/null 2>&1 || need+=(util-linux)
command -v ping >/dev/null 2>&1 || need+=(iputils-ping)
command -v conntrack >/dev/null 2>&1 || need+=(conntrack)
# The reference CNI plugins: crates/cni/tests compare results with them.
[ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/static ] || need+=(containernetworking-plugins)
if ((${#need[@]} == 0)); then
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
echo "installed: ${need[*]}"
