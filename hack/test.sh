#!/usr/bin/env bash
# The test command: installs what is missing, builds the shim and the test images, starts
# a private containerd (CONTAINERD_BIN picks the binary; Debian's 1.6.20 by default),
# runs every unit and integration test, and stops that containerd again.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
bash hack/prepare.sh
bash hack/containerd.sh stop
SHIM_DIR="$top/target/dist" bash hack/containerd.sh start
trap 'bash hack/containerd.sh stop' EXIT
eval "$(bash hack/containerd.sh env | sed 's/^/export /')"
cargo test --release --locked -- --test-threads=2 "$@"
