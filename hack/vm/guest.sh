# Sourced by the job hack/vm.sh writes; runs in the guest as root, in the project's folder
# (mounted read-only at its host path). /job is the job share: `tests` lists the test
# binaries (target name, path), `test-args` the extra arguments for them.

# Our freshly built shim where containerd finds it (PATH of containerd.service), the
# system containerd started, the test images imported in both namespaces the tests use.
guest_setup() {
  local dist=${VM_SHIM_DIR:-target/x86_64-unknown-linux-gnu/dist}
  [ -x "$dist/containerd-shim-youki-v2" ] || { echo "guest: no $dist/containerd-shim-youki-v2 (hack/prepare.sh)"; return 1; }
  [ -x "$dist/youki-shims" ] || { echo "guest: no $dist/youki-shims"; return 1; }
  install -m 0755 "$dist/containerd-shim-youki-v2" "$dist/youki-shims" /usr/local/bin/
  systemctl start containerd || { journalctl -u containerd --no-pager | tail -30; return 1; }
  local ns img
  for ns in default k8s.io; do
    for img in busybox pause; do
      ctr -n "$ns" images import --no-unpack "target/images/$img.tar" >/dev/null || return 1
    done
  done
  export CONTAINERD_ADDRESS=/run/containerd/containerd.sock
  export YOUKI_TEST_RUN=/run/containerd YOUKI_TEST_DIR=/var/lib/containerd
  export CONTAINERD_BIN=/usr/local/bin/containerd
  export CONTAINERD_SUPPRESS_DEPRECATION_WARNINGS=1
  export YOUKI_VM=1
  export PATH=/usr/local/bin:$PATH
  # The test binaries write nothing into the read-only project; their temporary files go here.
  export TMPDIR=/tmp
  echo "guest: $(uname -r), systemd $(systemctl --version | awk 'NR==1{print $2}'), cgroup $(stat -fc %T /sys/fs/cgroup), containerd $(containerd --version | awk '{print $3}'), $(criu --version | head -1)"
}

# Every listed test binary's ignored tests (the ones that need systemd + cgroup v2), one
# binary after another; the summary line over all of them comes last.
guest_suite() {
  local name exe out status=0 p=0 f=0 args=()
  eval "args=($(cat /job/test-args 2>/dev/null))"
  while read -r name exe; do
    echo "=== $name ==="
    out=$(mktemp)
    # A binary that hangs is stopped (and counts as failed) so the rest still run and the
    # journal still reaches the host.
    timeout -k 10 "${VM_TEST_TIMEOUT:-900}" "$exe" --ignored --test-threads=2 "${args[@]}" 2>&1 | tee "$out"
    [ "${PIPESTATUS[0]}" = 0 ] || status=1
    p=$((p + $(awk '/^test result:/ { for (i = 1; i <= NF; i++) if ($i == "passed;") s += $(i-1) } END { print s + 0 }' "$out")))
    f=$((f + $(awk '/^test result:/ { for (i = 1; i <= NF; i++) if ($i == "failed;") s += $(i-1) } END { print s + 0 }' "$out")))
    # A binary that died before its summary counts as one failure.
    grep -q '^test result:' "$out" || f=$((f + 1))
    rm -f "$out"
  done </job/tests
  # What the host keeps when the suite failed (hack/vm.sh prints where).
  journalctl --no-pager -u containerd >/job/containerd.log 2>&1
  journalctl --no-pager >/job/journal.log 2>&1
  echo "$p passed, $f failed"
  return "$status"
}
