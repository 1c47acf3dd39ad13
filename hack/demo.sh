#!/usr/bin/env bash
# The demo: a private containerd with io.containerd.youki.v2 registered (CRI runtime
# handler `youki`) runs a Kubernetes-style pod through CRI, as kubelet would: our pause
# container plus a busybox sibling in ONE shim. It prints which namespaces each process
# shares with pause, then removes the pod and shows nothing is left.
# KEEP=1 leaves the private containerd running (hack/containerd.sh stop ends it).
# SANDBOXER=shim (containerd 2.x, e.g. CONTAINERD=2.1): the pod runs under the handler
# `youki-sandboxed` on a containerd with NO pause image at all: containerd hands the sandbox
# to our shim's Sandbox API and the shim starts the pause it carries.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
bash hack/prepare.sh
handler=youki
if [ "${SANDBOXER:-podsandbox}" = shim ]; then
  handler=youki-sandboxed
  export NO_PAUSE=1
elif [ "${SANDBOXER:-podsandbox}" != podsandbox ]; then
  echo "SANDBOXER=$SANDBOXER: podsandbox (default) or shim" >&2; exit 2
fi
bash hack/containerd.sh stop
SHIM_DIR="$top/target/x86_64-unknown-linux-gnu/dist" bash hack/containerd.sh start
[ "${KEEP:-0}" = 1 ] || trap 'bash hack/containerd.sh stop' EXIT
if [ "$handler" = youki-sandboxed ]; then
  eval "$(bash hack/containerd.sh env | sed 's/^/export /')"
  if [ "$(ctr --address "$CONTAINERD_ADDRESS" version | awk '/Server:/ {s=1} s && /Version:/ {sub(/^v/, "", $2); print int($2); exit}')" -lt 2 ]; then
    echo "SANDBOXER=shim needs containerd 2.x (e.g. CONTAINERD=2.1)" >&2; exit 2
  fi
  echo "pause images in containerd's k8s.io namespace: $(ctr --address "$CONTAINERD_ADDRESS" -n k8s.io images ls -q | grep -c pause || true)"
fi
echo
DEMO_HANDLER=$handler cargo run --release --quiet --example pod_demo
