#!/usr/bin/env bash
# Soak: one container with an exec probe every second (as kubelet's exec probes do), for
# DURATION seconds; prints every REPORT seconds what the shim keeps: entries in the
# container's libcontainer state directory, the shim daemon's open fds, and its heap
# (Anonymous and Pss_Anon from /proc/<pid>/smaps_rollup, kB). Every number must stay flat.
#
#   hack/soak.sh                                   # 10 minutes, report every minute
#   DURATION=120 REPORT=10 hack/soak.sh            # shorter
#   YOUKI_TEST_DIR=/var/lib/youki-x YOUKI_TEST_RUN=/run/youki-x hack/soak.sh  # own dirs
#   CONTAINERD=2.1 hack/soak.sh                    # another containerd (as hack/test.sh)
#
# Uses the private containerd of hack/containerd.sh (started if it is not running, and
# stopped again afterwards) and the shim in target/dist (hack/prepare.sh builds it).
# Not part of the test suite: it takes minutes by design.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
DURATION=${DURATION:-600}
REPORT=${REPORT:-60}
INTERVAL=${INTERVAL:-1}
if [ -z "${CONTAINERD_BIN:-}" ] && [ -n "${CONTAINERD:-}" ]; then
  CONTAINERD_BIN=$(bash hack/containerd-versions.sh "$CONTAINERD")/containerd
  export CONTAINERD_BIN
fi
eval "$(bash hack/containerd.sh env | sed 's/^/export /')"
started=0
if ! ctr --address "$CONTAINERD_ADDRESS" version >/dev/null 2>&1; then
  SHIM_DIR="$top/target/dist" bash hack/containerd.sh start
  started=1
fi
ctr_() { ctr --address "$CONTAINERD_ADDRESS" -n default "$@"; }

id=soak-$$
cleanup() {
  ctr_ task kill -s SIGKILL "$id" >/dev/null 2>&1 || true
  sleep 1
  ctr_ task rm -f "$id" >/dev/null 2>&1 || true
  ctr_ container rm "$id" >/dev/null 2>&1 || true
  if [ "$started" = 1 ]; then bash hack/containerd.sh stop; fi
}
trap cleanup EXIT
ctr_ run -d --runtime io.containerd.youki.v2 localhost/youki/busybox:latest "$id" sleep 100000 >/dev/null

# The shim daemon serving $id: a process with "-id $id" in its command line whose parent
# has not (its forked workers have the daemon for a parent).
serves() { tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline" | grep -q -- "-id $id "; }
shim=
for _ in $(seq 50); do
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    serves "$p" || continue
    serves "$(awk '{print $4}' "/proc/$p/stat")" && continue
    shim=$p
  done
  [ -n "$shim" ] && break
  sleep 0.1
done
[ -n "$shim" ] || { echo "no shim found for $id" >&2; exit 1; }
state=/run/containerd/youki/default/$id

rollup() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$shim/smaps_rollup"; }
measure() {
  printf '%5ss execs=%-4s failed=%-3s state_entries=%-3s shim_fds=%-3s anon_kB=%-5s pss_anon_kB=%-5s rss_kB=%s\n' \
    "$1" "$execs" "$failed" "$(ls -A "$state" | wc -l)" "$(ls "/proc/$shim/fd" | wc -l)" \
    "$(rollup Anonymous)" "$(rollup Pss_Anon)" "$(rollup Rss)"
}

echo "containerd $(ctr --address "$CONTAINERD_ADDRESS" version | awk '/Server/{s=1} s && /Version/{print $2; exit}'), shim pid $shim, container $id, an exec every ${INTERVAL}s for ${DURATION}s"
execs=0 failed=0
begin=$(date +%s)
next_report=0
while :; do
  t=$(( $(date +%s) - begin ))
  if [ "$t" -ge "$next_report" ]; then
    measure "$t"
    next_report=$(( next_report + REPORT ))
  fi
  [ "$t" -ge "$DURATION" ] && break
  execs=$((execs + 1))
  if ! ctr_ task exec --exec-id "probe-$execs" "$id" sh -c 'cat /proc/self/status >/dev/null' </dev/null >/dev/null 2>&1; then
    failed=$((failed + 1))
  fi
  sleep "$INTERVAL"
done
