#!/usr/bin/env bash
# The test command: installs what is missing, builds the shim and the test images, starts
# a private containerd, runs every unit and integration test, and stops that containerd
# again. CONTAINERD picks the containerd release by name (1.6 — Debian 12's, the default —
# 1.7 or 2.1; hack/containerd-versions.sh provides it), CONTAINERD_BIN a binary by path.
# Extra arguments go to the test binaries (a name filter, e.g. `hack/test.sh sigkill`).
# The last line is a summary: `containerd VERSION: N passed, N failed`.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
bash hack/prepare.sh
if [ -z "${CONTAINERD_BIN:-}" ] && [ -n "${CONTAINERD:-}" ]; then
  CONTAINERD_BIN=$(bash hack/containerd-versions.sh "$CONTAINERD")/containerd
  export CONTAINERD_BIN
fi
bash hack/containerd.sh stop
SHIM_DIR="${SHIM_DIR:-$top/target/x86_64-unknown-linux-gnu/dist}" bash hack/containerd.sh start
trap 'bash hack/containerd.sh stop' EXIT
eval "$(bash hack/containerd.sh env | sed 's/^/export /')"
version=$("$CONTAINERD_BIN" --version | awk '{print $3}')
log=$(mktemp)
status=0
cargo test --release --locked --no-fail-fast -- --test-threads=2 "$@" 2>&1 | tee "$log" || status=$?
awk -v v="$version" '
  /^test result:/ { for (i = 1; i <= NF; i++) { if ($i == "passed;") p += $(i-1); if ($i == "failed;") f += $(i-1); if ($i == "ignored;") s += $(i-1) } }
  END { printf "containerd %s: %d passed, %d failed, %d skipped\n", v, p, f, s }' "$log"
rm -f "$log"
exit "$status"
