#!/usr/bin/env bash
# A production-like node in a VM: Debian trixie with systemd as PID 1, a pure cgroup v2
# hierarchy, containerd 2.1 as a systemd service with kubelet's systemd cgroup driver
# (SystemdCgroup = true) and a CRIU that passes `criu check`. This machine has none of
# that (cgroup v1 hybrid, no systemd), so the tests that need it run here.
#
#   hack/vm.sh                      # builds, then runs every tests/node_*.rs binary's
#                                   # ignored tests in the VM; last line `N passed, N failed`
#   hack/vm.sh --test node_dbus     # one test file (repeatable); more args after `--` go to
#   hack/vm.sh --test node_v2 -- stats   #   the test binary (a name filter, --nocapture …)
#   hack/vm.sh --sh 'criu check'    # a shell command in the guest (containerd running)
#   hack/vm.sh --no-build ...       # skips hack/prepare.sh (shim, images as they are in
#                                   #   target/); the test binaries are still brought up to date
#   hack/vm.sh --image              # only builds the VM image
#
# The guest is built once (debootstrap, ~2 min) and cached in $VM_CACHE (default
# /var/cache/youki-test/vm), named after a hash of its recipe (this file's guest part and
# hack/vm/*), so reruns are offline; the .deb files stay in $VM_CACHE/debs for rebuilds. Each run boots
# that image with -snapshot (nothing a run does persists), under TCG: this machine's
# /dev/kvm is paravirtualised and ~100x slower than emulation. Two 9p shares: the project
# at its own path, read-only (test binaries find what cargo compiled into them), and a
# per-run job folder carrying the job script in and its log and exit code out.
# Env: VM_MEM (MiB, default 3072), VM_CPUS (default 2), VM_TIMEOUT (s, the whole VM, default
# 1500), VM_TEST_TIMEOUT (s, each test binary, default 900), VM_SHIM_DIR (the shim and
# youki-shims the guest's containerd runs, relative to the project; default the static dist
# build; target/release, the dynamic build, runs there too and builds much faster). A failed run's job folder (its
# log, containerd's journal and the whole journal) is kept under $VM_CACHE/runs.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
cache=${VM_CACHE:-/var/cache/youki-test/vm}
suite=trixie
containerd_version=2.1

tests=()
test_args=()
sh_cmd=""
build=1
image_only=0
while [ $# -gt 0 ]; do
  case "$1" in
    --test) tests+=("$2"); shift 2 ;;
    --sh) sh_cmd=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    --image) image_only=1; shift ;;
    --) shift; test_args=("$@"); break ;;
    -h | --help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "hack/vm.sh: unknown argument '$1' (see hack/vm.sh --help)" >&2; exit 2 ;;
  esac
done

log() { echo "vm: $*" >&2; }

# The Debian archive the machine's apt sources use for bookworm: the guest and the backports
# suite come from the same mirror.
# shellcheck source=hack/lib/apt-archive.sh
. "$top/hack/lib/apt-archive.sh"

# qemu and debootstrap on the host. Debian 12's qemu-system-x86 conflicts with the qemu-utils
# backport such machines ship, so qemu comes from bookworm-backports (added from the same
# mirror as the machine's own sources).
host_deps() {
  command -v qemu-system-x86_64 >/dev/null && command -v debootstrap >/dev/null \
    && command -v mkfs.ext4 >/dev/null && return 0
  local src=/etc/apt/sources.list.d/youki-vm-backports.sources
  if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    log "adding bookworm-backports to $src"
    cat >"$src" <<EOF
# hack/vm.sh: bookworm-backports, for a qemu-system-x86 that matches the qemu-utils backport.
Types: deb
URIs: $(archive_uri)
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends -t bookworm-backports \
    qemu-system-x86 debootstrap >/dev/null
}

# Guest packages. linux-image-amd64 brings initramfs-tools; udev loads the virtio drivers;
# python3 is for hack/containerd.sh (tests that start a private containerd).
guest_pkgs=(systemd systemd-sysv udev dbus kmod linux-image-amd64 runc criu busybox-static
  containernetworking-plugins iproute2 procps libseccomp2 iptables util-linux python3)

# The recipe's hash names the image: any change to the guest's packages, files or the
# containerd binaries makes a new one.
image_key() {
  {
    echo "$suite ${guest_pkgs[*]}"
    sed -n '/^# guest-recipe-begin/,/^# guest-recipe-end/p' "$0"
    cat hack/vm/containerd.toml hack/vm/containerd.service hack/vm/10-loopback.conflist \
      hack/vm/youki-vm-job.service hack/vm/youki-vm-job
    cat "$containerd_bin/../debian-version" 2>/dev/null || sha256sum "$containerd_bin/containerd"
  } | sha256sum | cut -c1-12
}

# guest-recipe-begin
build_image() {
  local dest=$1 work=$cache/build rootfs
  rootfs=$work/rootfs
  rm -rf "$work"
  mkdir -p "$rootfs" "$cache/debs"
  local t0=$SECONDS
  log "debootstrap $suite (minbase) into $rootfs"
  local inc
  inc=$(IFS=,; echo "${guest_pkgs[*]}")
  debootstrap --variant=minbase --cache-dir="$cache/debs" --include="$inc" \
    "$suite" "$rootfs" "$(archive_uri)" >"$work/debootstrap.log" 2>&1 \
    || { tail -30 "$work/debootstrap.log" >&2; log "debootstrap failed (log: $work/debootstrap.log)"; exit 1; }
  log "debootstrap: $((SECONDS - t0)) s"
  echo youki-vm >"$rootfs/etc/hostname"
  echo '/dev/vda / ext4 defaults 0 1' >"$rootfs/etc/fstab"
  # Nothing on the serial console but our job (and no login prompt waiting on it).
  ln -sf /dev/null "$rootfs/etc/systemd/system/serial-getty@ttyS0.service"
  for u in apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer fstrim.timer; do
    ln -sf /dev/null "$rootfs/etc/systemd/system/$u"
  done
  install -m 0755 "$containerd_bin/containerd" "$containerd_bin/ctr" \
    "$containerd_bin/containerd-shim-runc-v2" "$rootfs/usr/local/bin/"
  install -D -m 0644 hack/vm/containerd.toml "$rootfs/etc/containerd/config.toml"
  install -D -m 0644 hack/vm/10-loopback.conflist "$rootfs/etc/cni/net.d/10-loopback.conflist"
  install -m 0644 hack/vm/containerd.service hack/vm/youki-vm-job.service "$rootfs/etc/systemd/system/"
  install -m 0755 hack/vm/youki-vm-job "$rootfs/usr/local/sbin/youki-vm-job"
  mkdir -p "$rootfs/etc/systemd/system/multi-user.target.wants"
  ln -sf ../youki-vm-job.service "$rootfs/etc/systemd/system/multi-user.target.wants/youki-vm-job.service"
  # The kernel and initrd boot the image from outside (-kernel/-initrd).
  cp "$(ls "$rootfs"/boot/vmlinuz-* | sort -V | tail -1)" "$work/vmlinuz"
  cp "$(ls "$rootfs"/boot/initrd.img-* | sort -V | tail -1)" "$work/initrd.img"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  # What a first boot would do on every boot of a -snapshot image (ldconfig.service,
  # systemd-update-done): done once, here.
  chroot "$rootfs" ldconfig
  touch "$rootfs/etc/.updated" "$rootfs/var/.updated"
  # Room for containerd's content, snapshots and the tests (with -snapshot, writes go to a
  # temporary overlay on the host, the image file itself is never written).
  local size
  size=$(( $(du -sm "$rootfs" | cut -f1) + 2048 ))
  mkfs.ext4 -q -F -L youki-vm -d "$rootfs" "$work/root.img" "${size}M"
  rm -rf "$rootfs"
  mkdir -p "$(dirname "$dest")"
  rm -rf "$dest"
  mv "$work" "$dest"
  log "image $dest: $((SECONDS - t0)) s"
}
# guest-recipe-end

host_deps
containerd_bin=$(bash hack/containerd-versions.sh "$containerd_version")
image=$cache/images/$(image_key)
if [ ! -f "$image/root.img" ]; then
  # One build at a time (helpers and CI may share the cache); whoever waited finds it built.
  mkdir -p "$cache"
  exec 9>"$cache/build.lock"
  flock 9
  if [ ! -f "$image/root.img" ]; then
    build_image "$image"
    # Older recipes' images go (a VM still booted from one keeps its open file).
    for old in "$cache"/images/*; do [ "$old" = "$image" ] || rm -rf "$old"; done
  fi
  flock -u 9
fi
[ "$image_only" = 1 ] && { echo "$image"; exit 0; }

# The binaries the guest runs come from this tree: the dist shim and youki-shims, the test
# images, the test binaries.
if [ "$build" = 1 ]; then
  bash hack/prepare.sh >&2
fi
job=$(mktemp -d "${TMPDIR:-/tmp}/youki-vm.XXXXXX")
trap 'rm -rf "$job"' EXIT
echo "$top" >"$job/top"
if [ -z "$sh_cmd" ]; then
  if [ "${#tests[@]}" -eq 0 ]; then
    for f in tests/node_*.rs; do [ -e "$f" ] && tests+=("$(basename "$f" .rs)"); done
  fi
  [ "${#tests[@]}" -gt 0 ] || { echo "hack/vm.sh: no tests/node_*.rs" >&2; exit 2; }
  targs=()
  for t in "${tests[@]}"; do targs+=(--test "$t"); done
  # The executables cargo builds for those test targets (built now unless --no-build).
  cargo_out=$(
    if [ "$build" = 1 ]; then
      cargo test --release --locked --no-run --message-format=json "${targs[@]}"
    else
      cargo test --release --locked --no-run --offline --message-format=json "${targs[@]}" 2>/dev/null
    fi | python3 -c '
import json, sys
for line in sys.stdin:
    try: m = json.loads(line)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and "test" in m["target"]["kind"]:
        print(m["target"]["name"], m["executable"])')
  [ -n "$cargo_out" ] || { echo "hack/vm.sh: no test executables for ${tests[*]}" >&2; exit 1; }
  echo "$cargo_out" >"$job/tests"
  printf '%q ' "${test_args[@]}" >"$job/test-args"
fi
{
  echo 'set -uo pipefail'
  echo "export VM_TEST_TIMEOUT=${VM_TEST_TIMEOUT:-900}"
  [ -z "${VM_SHIM_DIR:-}" ] || echo "export VM_SHIM_DIR=$(printf '%q' "$VM_SHIM_DIR")"
  echo "source $(printf '%q' "$top/hack/vm/guest.sh")"
  if [ -n "$sh_cmd" ]; then
    echo "guest_setup && { $sh_cmd; }"
  else
    echo 'guest_setup && guest_suite'
  fi
} >"$job/job.sh"

# Boot. The serial console is this terminal (kernel messages quiet); the job's output is
# also kept in $job/log; the VM powers itself off when the job ends.
mem=${VM_MEM:-3072}
cpus=${VM_CPUS:-2}
t0=$SECONDS
log "booting $image (TCG, $cpus cpus, $mem MiB)"
rc=0
timeout --foreground -k 10 "${VM_TIMEOUT:-1500}" \
  qemu-system-x86_64 -accel tcg,thread=multi -cpu max -smp "$cpus" -m "$mem" \
    -kernel "$image/vmlinuz" -initrd "$image/initrd.img" \
    -append "root=/dev/vda rw console=ttyS0 quiet loglevel=3 systemd.show_status=0 panic=1" \
    -drive "file=$image/root.img,format=raw,if=virtio" -snapshot \
    -virtfs "local,path=$job,mount_tag=job,security_model=none,id=job" \
    -virtfs "local,path=$top,mount_tag=top,security_model=none,readonly=on,id=top" \
    -nic none -no-reboot -nographic -serial mon:stdio </dev/null \
  | sed -u 's/\x1b\[[0-9;?!]*[a-zA-Z]//g; s/\x1bc//g; s/\x1b\][0-9;]*\x07//g; s/\r$//' || rc=$?
log "VM ran $((SECONDS - t0)) s"
if [ ! -f "$job/rc" ]; then
  log "the VM stopped before the job ended (qemu exit $rc; timeout ${VM_TIMEOUT:-1500} s)"
  [ -z "$sh_cmd" ] && echo "0 passed, 1 failed"
  exit 1
fi
rc=$(cat "$job/rc")
if [ "$rc" != 0 ]; then
  # Keep the failed run's job folder (log, containerd's and the whole journal).
  keep=$cache/runs/$(date +%Y%m%d-%H%M%S)-$$
  mkdir -p "$keep" && cp -a "$job"/. "$keep"/ && log "job exit $rc; its files: $keep"
  # The last ten are enough.
  ls -1d "$cache"/runs/*/ 2>/dev/null | sort | head -n -10 | xargs -r rm -rf
fi
exit "$rc"
