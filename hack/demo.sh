#!/usr/bin/env bash
# The demo: a private containerd with io.containerd.youki.v2 registered runs a busybox
# container through our shim and shows what it sees; then everything is torn down.
# KEEP=1 leaves the private containerd running (hack/containerd.sh stop ends it).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
bash hack/prepare.sh
SHIM_DIR="$top/target/release" bash hack/containerd.sh start
[ "${KEEP:-0}" = 1 ] || trap 'bash hack/containerd.sh stop' EXIT
sock=/run/youki-test/containerd.sock
id=demo-$$
echo
echo "\$ ctr run --rm --seccomp --runtime io.containerd.youki.v2 localhost/youki/busybox:latest $id sh -c '…'"
ctr --address "$sock" run --rm --seccomp --runtime io.containerd.youki.v2 localhost/youki/busybox:latest "$id" \
  sh -c 'echo "hello from a youki container"; echo "pid in container: $$"; echo "hostname: $(hostname)"; echo "cgroup: $(grep memory /proc/self/cgroup)"; echo "seccomp: $(grep ^Seccomp: /proc/self/status)"; exit 3' \
  && rc=0 || rc=$?
echo "exit status seen by ctr: $rc (the container ran 'exit 3')"
echo
sleep 0.2
echo "shim processes left for $id after removal: $(pgrep -fc -- "containerd-shim-youki-v2 .*-id $id( |\$)" || true)"
