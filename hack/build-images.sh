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

# pause: a static binary so the image needs nothing else.
RUSTFLAGS="-C target-feature=+crt-static" cargo build --quiet --release --bin pause \
  --target x86_64-unknown-linux-gnu --manifest-path "$top/Cargo.toml"
pz=$work/pause
mkdir -p "$pz"
cp "$top/target/x86_64-unknown-linux-gnu/release/pause" "$pz/pause"
strip "$pz/pause" 2>/dev/null || true
python3 "$top/hack/build-image.py" localhost/youki/pause:latest "$pz" "$out/pause.tar" --entrypoint /pause
echo "$out/busybox.tar $out/pause.tar"
