#!/usr/bin/env bash
# Builds containerd-shim-youki-v2 and youki-shims statically linked (glibc's libc.a and
# Debian's libseccomp.a) into target/x86_64-unknown-linux-gnu/PROFILE/ (PROFILE: $1, default
# dist). hack/release.sh ships these; hack/prepare.sh builds them for the tests.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
profile=${1:-dist}
# --target makes RUSTFLAGS apply to the shim only, not to build scripts and proc macros
# (which must stay dynamic to be loaded by rustc).
RUSTFLAGS="-C target-feature=+crt-static" \
LIBSECCOMP_LINK_TYPE=static \
LIBSECCOMP_LIB_PATH=$(dirname "$(find /usr/lib -name libseccomp.a -print -quit)") \
  cargo build --profile "$profile" --locked --target x86_64-unknown-linux-gnu \
    --bin containerd-shim-youki-v2 --bin youki-shims
