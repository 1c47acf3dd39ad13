#!/usr/bin/env bash
# Side-by-side benchmark of io.containerd.youki.v2 (ours) against io.containerd.runc.v2
# through the same private containerd (examples/bench.rs does the measuring):
# ctr run latency, CRI pod start/teardown, 50 pods at concurrency 10, shim memory with 1
# and 50 pods, threads per shim. Prints the machine, a markdown table, and BENCH lines.
# On containerd 2.x a second table compares our shim under sandboxer = "shim" (handler
# youki-sandboxed, no pause image) with sandboxer = "podsandbox" (handler youki).
#
#   BENCH_N=20 BENCH_PODS=50 BENCH_CONCURRENCY=10 hack/bench.sh
#   CONTAINERD=2.1 hack/bench.sh      # against another containerd (as hack/test.sh)
#   YOUKI_TEST_DIR=/var/lib/youki-x YOUKI_TEST_RUN=/run/youki-x hack/bench.sh  # own dirs
#   CONTAINERD_LOG_LEVEL=debug ...    # per-phase timings in $YOUKI_TEST_DIR/containerd.log
#   hack/bench.sh --compare [DIR_B [DIR_A]]  # two builds of our shim instead of youki vs runc:
#       A = DIR_A/containerd-shim-youki-v2 as handler youki (default target/dist: the
#       dynamically linked dist build, made here), B = DIR_B/containerd-shim-youki-v2 as
#       handler youki-b (default target/x86_64-unknown-linux-gnu/dist: the static build
#       hack/prepare.sh makes); the private containerd must not be running
#
# Each pod's container is stopped only after it printed "ready" (its SIGTERM trap is set):
# see examples/bench.rs. Ratios (same run, alternating) are what compare; the
# "runc − youki" column is what our shim saves, which containerd's own share does not move.
#
# The private containerd is started if it is not running (and stopped again afterwards).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
if [ "${1:-}" = --compare ]; then
  if [ -z "${3:-}" ]; then
    cargo build --profile dist --locked --bin containerd-shim-youki-v2
  fi
  SHIM_B=$(cd "${2:-$top/target/x86_64-unknown-linux-gnu/dist}" && pwd)/containerd-shim-youki-v2
  SHIM_DIR=$(cd "${3:-$top/target/dist}" && pwd)
  SHIM_A=$SHIM_DIR/containerd-shim-youki-v2
  [ -x "$SHIM_B" ] && [ -x "$SHIM_A" ] || { echo "no shim at $SHIM_A or $SHIM_B" >&2; exit 1; }
  export SHIM_A SHIM_B SHIM_DIR
fi
bash hack/prepare.sh
if [ -z "${CONTAINERD_BIN:-}" ] && [ -n "${CONTAINERD:-}" ]; then
  CONTAINERD_BIN=$(bash hack/containerd-versions.sh "$CONTAINERD")/containerd
  export CONTAINERD_BIN
fi
eval "$(bash hack/containerd.sh env | sed 's/^/export /')"
started=0
if ! ctr --address "$CONTAINERD_ADDRESS" version >/dev/null 2>&1; then
  SHIM_DIR="${SHIM_DIR:-$top/target/x86_64-unknown-linux-gnu/dist}" bash hack/containerd.sh start
  started=1
elif [ -n "${SHIM_B:-}" ]; then
  echo "--compare registers handler youki-b at start: hack/containerd.sh stop the running containerd first" >&2
  exit 1
elif ! ctr --address "$CONTAINERD_ADDRESS" version | grep -q "$("$CONTAINERD_BIN" --version | awk '{print $3}')"; then
  echo "a containerd of another version is running at $CONTAINERD_ADDRESS: hack/containerd.sh stop it first" >&2
  exit 1
fi
[ "$started" = 0 ] || trap 'bash hack/containerd.sh stop' EXIT
cargo build --release --quiet --example bench
echo "machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo) RAM, kernel $(uname -r)"
echo "containerd $("$CONTAINERD_BIN" --version | awk '{print $3}'), runc $(runc --version | awk 'NR==1{print $3}'), shim $(ls -l --time-style=+ "${SHIM_A:-$top/target/dist/containerd-shim-youki-v2}" | awk '{print $5}') bytes"
[ -z "${SHIM_B:-}" ] || echo "A: $SHIM_A ($(stat -c %s "$SHIM_A") bytes, $(ldd "$SHIM_A" 2>&1 | grep -c '=>') shared libraries); B: $SHIM_B ($(stat -c %s "$SHIM_B") bytes, $(ldd "$SHIM_B" 2>&1 | grep -c '=>') shared libraries)"
echo
"$top/target/release/examples/bench"
# containerd 2.x: our shim under both sandboxers, side by side (sandboxer = "shim": the
# shim starts the pause it carries; podsandbox: containerd's pause container from the image).
if [ -z "${SHIM_B:-}" ] && [ "$("$CONTAINERD_BIN" --version | awk '{ v = $3; sub(/^v/, "", v); print int(v) }')" -ge 2 ]; then
  echo
  echo "sandboxer = \"shim\" (handler youki-sandboxed) vs \"podsandbox\" (handler youki):"
  BENCH_VS=sandboxer env ${BENCH_OUT:+BENCH_OUT="$BENCH_OUT.sandboxer"} "$top/target/release/examples/bench"
fi
