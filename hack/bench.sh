#!/usr/bin/env bash
# Side-by-side benchmark of io.containerd.youki.v2 (ours) against io.containerd.runc.v2,
# both driven through the same (private) containerd:
#
#   1. latency of `ctr run --rm --runtime RT busybox /bin/true`, N runs per runtime,
#      interleaved youki, runc, youki, runc... after a few uncounted warm-up runs;
#   2. memory of the shim serving one detached `sleep 3600` container per runtime:
#      RSS and PSS summed over its processes (smaps_rollup), threads per process.
#
# Environment:
#   CONTAINERD_ADDRESS  containerd socket (default /run/youki-test/containerd.sock); if it
#                       does not answer, hack/containerd.sh start is run for it (and stop at
#                       the end); SHIM_DIR and YOUKI_TEST_DIR are passed on to it (the latter
#                       is required for a non-default address)
#   BENCH_NS            containerd namespace (default default)
#   BENCH_N             counted runs per runtime (default 20)
#   BENCH_WARMUP        uncounted warm-up runs per runtime (default 2)
#   BENCH_SETTLE        seconds to let the detached containers settle before reading memory
#                       (default 1)
#   BENCH_IMAGE         image (default localhost/youki/busybox:latest)
#
# Prints a table, then one machine-readable line per metric:
#   BENCH <metric> youki=<v> runc=<v> ratio=<youki/runc>
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
addr=${CONTAINERD_ADDRESS:-/run/youki-test/containerd.sock}
ns=${BENCH_NS:-default}
n=${BENCH_N:-20}
warmup=${BENCH_WARMUP:-2}
settle=${BENCH_SETTLE:-1}
image=${BENCH_IMAGE:-localhost/youki/busybox:latest}
rt_youki=io.containerd.youki.v2
rt_runc=io.containerd.runc.v2
shim_youki=containerd-shim-youki-v2
shim_runc=containerd-shim-runc-v2

[[ $n =~ ^[1-9][0-9]*$ ]] || { echo "BENCH_N must be a positive integer (got '$n')" >&2; exit 2; }
[[ $warmup =~ ^[0-9]+$ ]] || { echo "BENCH_WARMUP must be a non-negative integer" >&2; exit 2; }

ctr_() { ctr --address "$addr" --namespace "$ns" "$@"; }

# ---------------------------------------------------------------- bookkeeping & cleanup
tmp=$(mktemp -d)
started_containerd=0
seq_no=0
settle_pid=""
created=()           # every container id this run asked for
new_id=""
# Sets new_id to a fresh container id and records it (no subshell: the state must stick).
next_id() { seq_no=$((seq_no + 1)); new_id="bench-$$-$seq_no"; created+=("$new_id"); }

task_status() { ctr_ task ls 2>/dev/null | awk -v id="$1" '$1 == id { print $3 }'; }
container_exists() { local all; all=$(ctr_ containers ls -q 2>/dev/null) || true; grep -qxF "$1" <<<"$all"; }

# Kill (SIGKILL), wait for, and delete the task and container $1 if they exist.
remove_container() {
  local id=$1 st
  st=$(task_status "$id")
  if [ -n "$st" ]; then
    if [ "$st" != STOPPED ]; then
      ctr_ task kill -s SIGKILL "$id" >/dev/null 2>&1 || true
      for _ in $(seq 100); do
        st=$(task_status "$id")
        if [ -z "$st" ] || [ "$st" = STOPPED ]; then break; fi
        sleep 0.05
      done
    fi
    ctr_ task rm "$id" >/dev/null 2>&1 || ctr_ task rm -f "$id" >/dev/null 2>&1 || true
  fi
  if container_exists "$id"; then
    ctr_ containers rm "$id" >/dev/null 2>&1 || true
  fi
}

cleanup() {
  local rc=$? id
  trap - EXIT INT TERM
  set +e
  if [ -n "$settle_pid" ]; then kill "$settle_pid" 2>/dev/null; wait "$settle_pid" 2>/dev/null; fi
  if ctr --address "$addr" version >/dev/null 2>&1; then
    for id in "${created[@]}"; do remove_container "$id"; done
    # Anything else with our prefix (e.g. an id whose creation raced with an interrupt).
    for id in $(ctr_ containers ls -q 2>/dev/null | grep "^bench-$$-"); do remove_container "$id"; done
    left=$(ctr_ containers ls -q 2>/dev/null | grep "^bench-$$-")
    [ -z "$left" ] || echo "bench: WARNING: could not remove: $left" >&2
  fi
  if [ "$started_containerd" = 1 ]; then
    echo "bench: stopping the containerd this run started" >&2
    YOUKI_TEST_RUN=$(dirname "$addr") bash "$top/hack/containerd.sh" stop
  fi
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- containerd
if ! ctr --address "$addr" version >/dev/null 2>&1; then
  if [ "$(basename "$addr")" != containerd.sock ]; then
    echo "bench: containerd not reachable at $addr, and hack/containerd.sh can only start one at <dir>/containerd.sock" >&2
    exit 1
  fi
  if [ "$addr" != /run/youki-test/containerd.sock ] && [ -z "${YOUKI_TEST_DIR:-}" ]; then
    echo "bench: set YOUKI_TEST_DIR too when starting a containerd at a non-default address" \
      "(else it would share /var/lib/youki-test with the default one)" >&2
    exit 1
  fi
  echo "bench: containerd not reachable at $addr; starting one with hack/containerd.sh" >&2
  started_containerd=1
  YOUKI_TEST_RUN=$(dirname "$addr") bash "$top/hack/containerd.sh" start >&2
  ctr --address "$addr" version >/dev/null
fi
images_here=$(ctr_ images ls -q)
if ! grep -qxF "$image" <<<"$images_here"; then
  echo "bench: image $image not found in namespace $ns at $addr" >&2
  exit 1
fi

# Which shim binaries will containerd run? It looks them up on its own PATH, so read that
# PATH from the containerd that owns the socket (best effort: pidfile, else by the socket).
containerd_pid() {
  local pf pid
  pf=$(dirname "$addr")/containerd.pid
  if [ -f "$pf" ]; then
    pid=$(cat "$pf")
    if [ -r "/proc/$pid/environ" ]; then echo "$pid"; return; fi
  fi
  for pid in $(pgrep -x containerd 2>/dev/null); do
    local cfg
    cfg=$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | awk 'p { print; exit } $0 == "--config" || $0 == "-c" { p = 1 }')
    if [ -n "$cfg" ] && grep -qF "\"$addr\"" "$cfg" 2>/dev/null; then echo "$pid"; return; fi
  done
}
shim_on_containerd_path() {   # $1 = shim binary name
  local pid path d
  pid=$(containerd_pid)
  [ -n "$pid" ] || { echo "?"; return; }
  path=$(tr '\0' '\n' <"/proc/$pid/environ" | sed -n 's/^PATH=//p')
  IFS=: read -ra dirs <<<"$path"
  for d in "${dirs[@]}"; do if [ -x "$d/$1" ]; then echo "$d/$1"; return; fi; done
  echo "?"
}

# ---------------------------------------------------------------- machine description
server_version=$(ctr --address "$addr" version | awk '/^Server:/ { s = 1 } s && /Version:/ { print $2; exit }')
youki_bin=$(shim_on_containerd_path "$shim_youki")
runc_bin=$(shim_on_containerd_path "$shim_runc")
echo "== machine"
echo "cpus:        $(nproc) ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo))"
echo "memory:      $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
echo "kernel:      $(uname -sr)"
echo "containerd:  $server_version at $addr (namespace $ns)"
echo "runc:        $(runc --version 2>/dev/null | head -1 || echo '?')"
echo "youki shim:  $youki_bin"
echo "runc shim:   $runc_bin"
case $youki_bin in
  */target/debug/*) echo "WARNING: containerd runs the DEBUG build of $shim_youki; numbers are not representative (restart it with SHIM_DIR=target/release)";;
esac
echo "runs:        $n per runtime, interleaved, after $warmup warm-up run(s) each; image $image"
echo

# ---------------------------------------------------------------- 1. ctr run latency
# run_once RUNTIME -> sets ms to the elapsed time; on failure prints ctr's output and fails.
ms=""
run_once() {
  local rt=$1 id t0 t1 rc=0
  next_id; id=$new_id
  t0=$(date +%s%N)
  ctr_ run --rm --runtime "$rt" "$image" "$id" /bin/true >"$tmp/out" 2>"$tmp/err" || rc=$?
  t1=$(date +%s%N)
  if [ "$rc" != 0 ]; then
    {
      echo "bench: FAILED: ctr run --rm --runtime $rt $image $id /bin/true (exit $rc)"
      echo "---- stderr"; cat "$tmp/err"
      echo "---- stdout"; cat "$tmp/out"
      echo "----"
    } >&2
    return 1
  fi
  ms=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e6 }')
}

# stats FILE -> "median min max" of one value per line
stats() {
  sort -g "$1" | awk '{ v[NR] = $1 } END {
    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "%.1f %.1f %.1f\n", m, v[1], v[NR] }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "nan"; else printf "%.2f\n", a / b }'; }

echo "== ctr run --rm ... /bin/true"
for ((i = 1; i <= warmup; i++)); do
  run_once "$rt_youki"
  run_once "$rt_runc"
done
: >"$tmp/youki.ms"; : >"$tmp/runc.ms"
for ((i = 1; i <= n; i++)); do
  run_once "$rt_youki"; y=$ms
  run_once "$rt_runc"; r=$ms
  echo "$y" >>"$tmp/youki.ms"; echo "$r" >>"$tmp/runc.ms"
  printf '  run %2d/%d  youki %8.1f ms   runc %8.1f ms\n' "$i" "$n" "$y" "$r"
done
read -r y_med y_min y_max < <(stats "$tmp/youki.ms")
read -r r_med r_min r_max < <(stats "$tmp/runc.ms")
echo

# ---------------------------------------------------------------- 2. shim memory
# argv of PID, one argument a line
argv() { tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null || true; }
exe_name() { basename "$(readlink "/proc/$1/exe" 2>/dev/null)" 2>/dev/null || true; }
# Is PID a shim serving container $2 in our namespace (its argv has -namespace NS and -id ID)?
serves() {
  argv "$1" | awk -v ns="$ns" -v id="$2" '
    prev == "-namespace" && $0 == ns { n = 1 }
    prev == "-id" && $0 == id { i = 1 }
    { prev = $0 } END { exit !(n && i) }'
}
children() { cat /proc/"$1"/task/*/children 2>/dev/null | tr ' ' '\n' | grep . || true; }

# shim_pids SHIMNAME ID -> pids: processes running SHIMNAME for ID, plus their descendants
# that are also SHIMNAME (the youki fork helper), deduplicated.
shim_pids() {
  local name=$1 id=$2 p c
  local -a queue=() found=()
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    if [ "$(exe_name "$p")" = "$name" ] && serves "$p" "$id"; then queue+=("$p"); fi
  done
  while [ ${#queue[@]} -gt 0 ]; do
    p=${queue[0]}; queue=("${queue[@]:1}")
    if [[ " ${found[*]} " == *" $p "* ]]; then continue; fi
    found+=("$p")
    for c in $(children "$p"); do
      if [ "$(exe_name "$c")" = "$name" ]; then queue+=("$c"); fi
    done
  done
  echo "${found[*]}"
}
rollup() { awk -v k="$2:" '$1 == k { print $2; exit }' "/proc/$1/smaps_rollup"; }
threads() { awk '$1 == "Threads:" { print $2 }' "/proc/$1/status"; }

start_detached() {   # RUNTIME ID (already recorded by next_id)
  local rt=$1 id=$2 st
  if ! ctr_ run -d --runtime "$rt" "$image" "$id" sleep 3600 >"$tmp/out" 2>"$tmp/err"; then
    { echo "bench: FAILED: ctr run -d --runtime $rt $image $id sleep 3600"
      echo "---- stderr"; cat "$tmp/err"; echo "---- stdout"; cat "$tmp/out"; echo "----"; } >&2
    return 1
  fi
  st=$(task_status "$id")
  [ "$st" = RUNNING ] || { echo "bench: task $id ($rt) is '$st', not RUNNING" >&2; return 1; }
}

# measure LABEL SHIMNAME ID -> sets <label>_rss <label>_pss <label>_thr <label>_procs
# <label>_exe <label>_pids
measure() {
  local label=$1 name=$2 id=$3 pids p rss=0 pss=0 thr=() exe=""
  pids=$(shim_pids "$name" "$id")
  printf -v "${label}_pids" %s "$pids"
  [ -n "$pids" ] || { echo "bench: no $name process found for $id" >&2; return 1; }
  for p in $pids; do
    rss=$((rss + $(rollup "$p" Rss)))
    pss=$((pss + $(rollup "$p" Pss)))
    thr+=("$p:$(threads "$p")")
    exe=$(readlink "/proc/$p/exe")
  done
  printf -v "${label}_rss" %s "$rss"
  printf -v "${label}_pss" %s "$pss"
  printf -v "${label}_thr" %s "${thr[*]}"
  printf -v "${label}_procs" %s "$(wc -w <<<"$pids")"
  printf -v "${label}_exe" %s "$exe"
}

echo "== shim memory (one detached 'sleep 3600' container each)"
next_id; id_y=$new_id
next_id; id_r=$new_id
start_detached "$rt_youki" "$id_y"
start_detached "$rt_runc" "$id_r"
# In the background and waited for, so that a signal runs the cleanup at once.
sleep "$settle" & settle_pid=$!
wait "$settle_pid"; settle_pid=""
measure youki "$shim_youki" "$id_y"
measure runc "$shim_runc" "$id_r"
printf '  youki  %-14s %d process(es)  pid:threads %s  (%s)\n' "$id_y" "$youki_procs" "$youki_thr" "$youki_exe"
printf '  runc   %-14s %d process(es)  pid:threads %s  (%s)\n' "$id_r" "$runc_procs" "$runc_thr" "$runc_exe"
case $youki_exe in
  */target/debug/*) echo "  WARNING: the youki shim measured is a DEBUG build";;
esac
remove_container "$id_y"
remove_container "$id_r"
# Their shims exit once the tasks are deleted; give them a moment, and report stragglers
# (a live process still running the shim binary for that id; an exited one has no exe).
alive_shims() {
  local p
  for p in $youki_pids; do
    if [ "$(exe_name "$p")" = "$shim_youki" ] && serves "$p" "$id_y"; then echo -n "$p "; fi
  done
  for p in $runc_pids; do
    if [ "$(exe_name "$p")" = "$shim_runc" ] && serves "$p" "$id_r"; then echo -n "$p "; fi
  done
  return 0
}
for _ in $(seq 50); do if [ -z "$(alive_shims)" ]; then break; fi; sleep 0.1; done
left=$(alive_shims)
[ -z "$left" ] || echo "  WARNING: shim process(es) still alive after delete: $left" >&2
echo

# ---------------------------------------------------------------- 3. report
sum_threads() { tr ' ' '\n' <<<"$1" | awk -F: '{ s += $2 } END { print s + 0 }'; }
youki_threads=$(sum_threads "$youki_thr"); runc_threads=$(sum_threads "$runc_thr")

echo "== results ($n runs each; ratio = youki / runc)"
printf '%-26s %12s %12s %8s\n' metric youki runc ratio
row() { printf '%-26s %12s %12s %8s\n' "$1" "$2" "$3" "$(ratio "$2" "$3")"; }
row "ctr run median (ms)" "$y_med" "$r_med"
row "ctr run min (ms)" "$y_min" "$r_min"
row "ctr run max (ms)" "$y_max" "$r_max"
row "shim RSS (KiB)" "$youki_rss" "$runc_rss"
row "shim PSS (KiB)" "$youki_pss" "$runc_pss"
row "shim processes" "$youki_procs" "$runc_procs"
row "shim threads (total)" "$youki_threads" "$runc_threads"
echo
bench() { echo "BENCH $1 youki=$2 runc=$3 ratio=$(ratio "$2" "$3")"; }
bench ctr_run_median_ms "$y_med" "$r_med"
bench ctr_run_min_ms "$y_min" "$r_min"
bench ctr_run_max_ms "$y_max" "$r_max"
bench shim_rss_kib "$youki_rss" "$runc_rss"
bench shim_pss_kib "$youki_pss" "$runc_pss"
bench shim_processes "$youki_procs" "$runc_procs"
bench shim_threads "$youki_threads" "$runc_threads"
