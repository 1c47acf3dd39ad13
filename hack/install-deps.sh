#!/usr/bin/env bash
# Installs what building and testing the shim needs on a fresh Debian 12 machine.
# Idempotent: packages already present are left alone.
set -euo pipefail
pkgs=(containerd runc busybox-static containernetworking-plugins libseccomp-dev libseccomp2
      libnss-systemd pkg-config iproute2 util-linux procps python3 criu protobuf-compiler)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# Debian's containerd package may start a system containerd when systemd exists; we never
# rely on it: hack/containerd.sh starts a private one.
command -v cargo >/dev/null || { echo "cargo not found: install a Rust toolchain (rustup)" >&2; exit 1; }
