#!/usr/bin/env bash
# Builds the test images as OCI archives in $OUT (default target/images):
#   localhost/youki/busybox:latest  Debian's busybox-static with its applet links
#   localhost/youki/pause:latest    our own static pause binary (src/bin/pause.rs)
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-$top/target/images}
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# busybox
bb=$work/busybox
mkdir -p "$bb"/{bin,etc,tmp,proc,sys,dev,root,var,usr/bin}
cp /bin/busybox "$bb/bin/busybox"
for applet in $("$bb/bin/busybox" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$bb/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$bb/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$bb/etc/group"
chmod 1777 "$bb/tmp"
python3 "$top/hack/build-image.py" localhost/youki/busybox:latest "$bb" "$out/busybox.tar" --cmd sh

# pause: one static file, so the image needs nothing else. It has no dependencies, so plain
# rustc builds it in seconds (cargo would build the shim's whole dependency tree again for
# a static target).
pz=$work/pause
mkdir -p "$pz"
rustc --edition 2024 -C opt-level=s -C panic=abort -C strip=symbols -C target-feature=+crt-static \
  -o "$pz/pause" "$top/src/bin/pause.rs"
python3 "$top/hack/build-image.py" localhost/youki/pause:latest "$pz" "$out/pause.tar" --entrypoint /pause
echo "$out/busybox.tar $out/pause.tar"
