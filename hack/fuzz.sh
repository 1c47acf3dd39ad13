#!/usr/bin/env bash
# Fuzzes everything the shim parses from containerd (fuzz/: the start handshake, runtime
# options, stdio and log URIs, Task API requests, Update's resources → cgroup files) with
# cargo-fuzz (libFuzzer) for a bounded time.
#
#   hack/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]   # default 120 s each, every target
#
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`); installs neither.
# Corpora are kept in fuzz/corpus/<target> (not committed), crashes in
# fuzz/artifacts/<target>; the script fails if any target found one.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
secs=${1:-120}
shift || true
cd "$top/fuzz"
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "hack/fuzz.sh: needs a nightly toolchain and cargo-fuzz (cargo install cargo-fuzz)" >&2
  exit 2
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
cargo +nightly fuzz build -O
failed=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  log=$(mktemp)
  echo "== $t: ${secs}s"
  # -rss_limit_mb: a parser that buffers an attacker-sized input should show up.
  rc=0
  cargo +nightly fuzz run -O "$t" "corpus/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=1024 -timeout=10 -print_final_stats=1 >"$log" 2>&1 || rc=$?
  grep -E '^(stat::number_of_executed_units|stat::new_units_added|SUMMARY|thread .* panicked|artifact_prefix|Test unit written)' "$log" || true
  if [ "$rc" -ne 0 ]; then
    tail -40 "$log"
    failed+=("$t")
  fi
  rm -f "$log"
done
if [ ${#failed[@]} -ne 0 ]; then
  echo "hack/fuzz.sh: crashes in: ${failed[*]} (see fuzz/artifacts/)" >&2
  exit 1
fi
echo "hack/fuzz.sh: no crashes"
