#!/usr/bin/env bash
# Builds the release artifacts into target/release-artifacts/ from a fresh checkout:
#   containerd-shim-youki-v2, youki-shims   one static file each (no libc, no libseccomp.so
#                                           needed on the node: any x86_64 Linux, any libc)
#   pause                                   our static pause (src/bin/pause.rs)
#   containerd-shim-youki-VERSION-x86_64-linux.tar.gz   bin/ (the three) + deploy/
#   youki-installer-VERSION.oci.tar         the DaemonSet's image (deploy/installer/)
#   SHA256SUMS                              `sha256sum -c SHA256SUMS` checks them all
#
# PROFILE picks the cargo profile (default dist: fat LTO, one codegen unit, stripped; see
# Cargo.toml). The build is static because RUSTFLAGS asks for +crt-static on the explicit
# --target (so build scripts and proc macros stay dynamic host code) and libseccomp-sys links
# Debian's libseccomp.a (LIBSECCOMP_LINK_TYPE=static). Why static glibc is safe for us (NSS):
# docs/design-notes.md, "One static binary".
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
profile=${PROFILE:-dist}
target=x86_64-unknown-linux-gnu
out=$top/target/release-artifacts
bash hack/install-deps.sh
bash hack/build-static.sh "$profile"
bin=$top/target/$target/$profile
version=$(awk -F'"' '/^version *=/ { print $2; exit }' Cargo.toml)

rm -rf "$out"
mkdir -p "$out"
for b in containerd-shim-youki-v2 youki-shims; do
  cp "$bin/$b" "$out/$b"
done
# Same flags as hack/build-images.sh: plain rustc, no dependencies, static.
rustc --edition 2024 -C opt-level=s -C panic=abort -C strip=symbols -C target-feature=+crt-static \
  -o "$out/pause" src/bin/pause.rs
for b in containerd-shim-youki-v2 youki-shims pause; do
  # Refuse to ship a binary that needs a loader (ldd says "not a dynamic executable" or
  # "statically linked" for static-pie).
  if ldd "$out/$b" 2>&1 | grep -q '=>'; then
    echo "release: $b is dynamically linked:" >&2; ldd "$out/$b" >&2; exit 1
  fi
done
# And prove it: both run in a chroot that holds nothing but them (no libc, no /proc).
empty=$(mktemp -d)
cp "$out/containerd-shim-youki-v2" "$out/youki-shims" "$empty/"
chroot "$empty" /containerd-shim-youki-v2 -v >/dev/null
chroot "$empty" /youki-shims install --help >/dev/null
rm -rf "$empty"

# The tarball: reproducible (sorted, owner root, mtime of the last commit).
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
name=containerd-shim-youki-$version-x86_64-linux
mkdir -p "$stage/$name/bin"
cp "$out/containerd-shim-youki-v2" "$out/youki-shims" "$out/pause" "$stage/$name/bin/"
cp -r deploy "$stage/$name/deploy"
mtime=$(git log -1 --format=%ct 2>/dev/null || echo 0)
tar --sort=name --mtime="@$mtime" --owner=0 --group=0 --numeric-owner -C "$stage" -cf - "$name" \
  | gzip -n >"$out/$name.tar.gz"

bash hack/build-installer-image.sh "$out" "$out/youki-installer-$version.oci.tar"

(cd "$out" && sha256sum -- * | grep -v ' SHA256SUMS$' >SHA256SUMS)
ls -l "$out"
