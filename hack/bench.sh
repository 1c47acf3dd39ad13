#!/usr/bin/env bash
# Side-by-side benchmark of io.containerd.youki.v2 (ours) against io.containerd.runc.v2
# through the same private containerd (examples/bench.rs does the measuring):
# ctr run latency, CRI pod start/teardown, 50 pods at concurrency 10, shim memory with 1
# and 50 pods, threads per shim. Prints the machine, a markdown table, and BENCH lines.
#
#   BENCH_N=20 BENCH_PODS=50 BENCH_CONCURRENCY=10 hack/bench.sh
#
# The private containerd is started if it is not running (and stopped again afterwards).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
bash hack/prepare.sh
started=0
if ! ctr --address /run/youki-test/containerd.sock version >/dev/null 2>&1; then
  SHIM_DIR="$top/target/dist" bash hack/containerd.sh start
  started=1
fi
[ "$started" = 0 ] || trap 'bash hack/containerd.sh stop' EXIT
cargo build --release --quiet --example bench
echo "machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo) RAM, kernel $(uname -r)"
echo "containerd $(containerd --version | awk '{print $3}'), runc $(runc --version | awk 'NR==1{print $3}'), shim $(ls -l --time-style=+ "$top/target/dist/containerd-shim-youki-v2" | awk '{print $5}') bytes"
echo
"$top/target/release/examples/bench"
