#!/usr/bin/env bash
# The demo: a private containerd with io.containerd.youki.v2 registered (CRI runtime
# handler `youki`) runs a Kubernetes-style pod through CRI, as kubelet would: our pause
# container plus a busybox sibling in ONE shim. It prints which namespaces each process
# shares with pause, then removes the pod and shows nothing is left.
# KEEP=1 leaves the private containerd running (hack/containerd.sh stop ends it).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
bash hack/prepare.sh
SHIM_DIR="$top/target/x86_64-unknown-linux-gnu/dist" bash hack/containerd.sh start
[ "${KEEP:-0}" = 1 ] || trap 'bash hack/containerd.sh stop' EXIT
echo
cargo run --release --quiet --example pod_demo
