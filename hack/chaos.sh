#!/usr/bin/env bash
# The chaos test alone (tests/chaos.rs) on its own private containerd: cycles of containerd
# kill -9 / restart with pods running, containers exiting during the downtime, a pod's shim
# killed and a Create, Start or Delete cut off in every cycle. Prints the counts per cycle.
#
#   hack/chaos.sh                              # 20 cycles × 5 pods (what CI runs)
#   CHAOS_CYCLES=50 CHAOS_PODS=8 hack/chaos.sh
#
# CONTAINERD_BIN picks the containerd binary. Needs hack/prepare.sh (or hack/test.sh) once.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
[ -f target/images/busybox.tar ] || { echo "no test images: run hack/prepare.sh first" >&2; exit 1; }
exec cargo test --release --locked --test chaos -- --nocapture
