#!/usr/bin/env bash
# Builds the installer image of deploy/installer/ as an OCI archive, offline (no registry,
# no docker: hack/build-image.py):
#   hack/build-installer-image.sh BIN_DIR OUT.tar [NAME]
# BIN_DIR holds the static containerd-shim-youki-v2 and youki-shims (hack/release.sh's
# target/release-artifacts); NAME defaults to localhost/youki/installer:VERSION.
# The image: those binaries in /opt/youki/bin, Debian's static busybox for the entrypoint's
# sh, cp, nsenter and sleep, and deploy/installer/entrypoint.sh. Nothing links a libc.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:?usage: build-installer-image.sh BIN_DIR OUT.tar [NAME]}
out=${2:?usage: build-installer-image.sh BIN_DIR OUT.tar [NAME]}
version=$(awk -F'"' '/^version *=/ { print $2; exit }' "$top/Cargo.toml")
name=${3:-localhost/youki/installer:$version}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root"/{bin,opt/youki/bin,host,proc,sys,dev,tmp}
chmod 1777 "$root/tmp"
for b in containerd-shim-youki-v2 youki-shims; do
  if ldd "$bin/$b" 2>&1 | grep -q '=>'; then
    echo "build-installer-image: $bin/$b is not static (hack/build-static.sh builds it)" >&2
    exit 1
  fi
  install -m 0755 "$bin/$b" "$root/opt/youki/bin/$b"
done
cp /bin/busybox "$root/bin/busybox"
for applet in sh cp mv mkdir nsenter sleep cat ls; do
  ln -s busybox "$root/bin/$applet"
done
install -m 0755 "$top/deploy/installer/entrypoint.sh" "$root/installer"
python3 "$top/hack/build-image.py" "$name" "$root" "$out" --entrypoint /installer
echo "$out ($name)"
