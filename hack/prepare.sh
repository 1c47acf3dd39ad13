#!/usr/bin/env bash
# What both README commands need first: Debian packages, the release shim, the test images.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
bash hack/install-deps.sh
cargo build --release --locked
# The shim containerd runs and the operators' check: what we ship, the static build of the
# dist profile (LTO, see Cargo.toml; hack/build-static.sh) in
# target/x86_64-unknown-linux-gnu/dist. docs/design-notes.md, "One static binary", says why.
bash hack/build-static.sh dist
bash hack/build-images.sh >/dev/null
