#!/usr/bin/env bash
# What both README commands need first: Debian packages, the release shim, the test images.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
bash hack/install-deps.sh
cargo build --release --locked
# The shim containerd runs and the operators' check: the dist profile (LTO), see Cargo.toml.
cargo build --profile dist --locked --bin containerd-shim-youki-v2 --bin youki-shims
bash hack/build-images.sh >/dev/null
