#!/usr/bin/env bash
# A private containerd with io.containerd.youki.v2 registered: own root, state, socket and
# config under $YOUKI_TEST_DIR (default /var/lib/youki-test); never touches a system one.
#
#   hack/containerd.sh start   # starts it (if not running), imports the test images
#   hack/containerd.sh stop    # stops it (the PID it recorded, nothing else)
#   hack/containerd.sh restart # stop, then start (the installer's tests restart with it)
#   hack/containerd.sh env     # prints the variables the tests and ctr use
#
# CONTAINERD_CONFIG names a config.toml of the caller's to run containerd with instead of the
# one written here (tests/install.rs: a node's config that `youki-shims install` edits); it
# must use this script's root, state and socket. PRELOAD lists the test images imported at
# start (default "busybox pause"; NO_PAUSE=1: see below).
# CONTAINERD picks a containerd release by name (1.6, 1.7, 2.1: hack/containerd-versions.sh
# provides it); CONTAINERD_BIN a binary by path (default: containerd on PATH). The ctr and
# containerd-shim-runc-v2 next to that binary are used with it;
# SHIM_DIR is where containerd-shim-youki-v2 is found (default target/x86_64-unknown-linux-gnu/dist: the static dist build
# hack/prepare.sh makes, see hack/build-static.sh).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
dir=${YOUKI_TEST_DIR:-/var/lib/youki-test}
run=${YOUKI_TEST_RUN:-/run/youki-test}
sock=$run/containerd.sock
if [ -z "${CONTAINERD_BIN:-}" ] && [ -n "${CONTAINERD:-}" ]; then
  CONTAINERD_BIN=$(bash "$top/hack/containerd-versions.sh" "$CONTAINERD")/containerd
fi
containerd_bin=${CONTAINERD_BIN:-$(command -v containerd || echo /usr/bin/containerd)}
bin_dir=$(dirname "$containerd_bin")
# Its own ctr and runc shim first on PATH (containerd finds shims on PATH too).
PATH="$bin_dir:$PATH"
shim_dir=${SHIM_DIR:-$top/target/x86_64-unknown-linux-gnu/dist}
images=${IMAGES_DIR:-$top/target/images}
pidfile=$run/containerd.pid
config=${CONTAINERD_CONFIG:-$dir/config.toml}
# NO_PAUSE=1: no pause image at all (the shim-sandboxer handler youki-sandboxed needs none):
# it is not imported, and CRI's sandbox image names one that exists nowhere, so any pause
# lookup or pull (the podsandbox handlers') fails loudly.
if [ "${NO_PAUSE:-0}" = 1 ]; then
  preload=${PRELOAD-busybox}
  sandbox_image=localhost/youki/no-pause-image:absent
else
  preload=${PRELOAD-busybox pause}
  sandbox_image=localhost/youki/pause:latest
fi

ctr_() { ctr --address "$sock" "$@"; }  # the ctr next to containerd_bin: see PATH below

write_config() {
  mkdir -p "$dir/root" "$dir/cni/conf" "$run/state"
  cat >"$dir/cni/conf/10-loopback.conflist" <<JSON
{
  "cniVersion": "0.4.0",
  "name": "youki-test",
  "plugins": [
    {"type": "static", "ipam": {"addresses": [{"address": "127.0.0.1/8"}]}},
    {"type": "loopback"}
  ]
}
JSON
  # Handler youki-slow: containerd's default spec plus hooks that, while a marker file
  # $dir/slow/{create,start,delete} exists, touch $dir/slow/in-<stage> and sleep 3 s in the
  # middle of the shim's Create (createRuntime), Start (poststart) or Delete (poststop).
  # Only the tests use it: it lets them kill containerd during a given call, every time.
  mkdir -p "$dir/slow"
  ctr oci spec | python3 -c '
import json, sys
spec, slow = json.load(sys.stdin), sys.argv[1]
def hook(stage):
    script = f"[ -e {slow}/{stage} ] && {{ touch {slow}/in-{stage}; sleep 3; }}; exit 0"
    return [{"path": "/bin/sh", "args": ["sh", "-c", script]}]
spec["hooks"] = {"createRuntime": hook("create"), "poststart": hook("start"), "poststop": hook("delete")}
json.dump(spec, sys.stdout, indent=1)
' "$dir/slow" >"$dir/slow-spec.json"
  # A caller's config: the directories above are all it needs from us.
  [ -z "${CONTAINERD_CONFIG:-}" ] || return 0
  local cri_images cri_runtime cni_bin shim_path
  shim_path=$(cd "$shim_dir" && pwd)/containerd-shim-youki-v2
  if [ "$(major)" -ge 2 ]; then
    # containerd 2.x: config version 3, CRI split into an images and a runtime plugin.
    cri_images='plugins."io.containerd.cri.v1.images"'
    cri_runtime='plugins."io.containerd.cri.v1.runtime"'
    cni_bin='bin_dirs = ["/usr/lib/cni"]'
  else
    cri_images=""
    cri_runtime='plugins."io.containerd.grpc.v1.cri"'
    cni_bin='bin_dir = "/usr/lib/cni"'
  fi
  {
    cat <<TOML
version = $([ "$(major)" -ge 2 ] && echo 3 || echo 2)
root = "$dir/root"
state = "$run/state"
oom_score = 0

[grpc]
  address = "$sock"

[debug]
  level = "${CONTAINERD_LOG_LEVEL:-info}"

# NRI (on by default from 2.0, off in 1.7, absent in 1.6, which ignores the table) listens
# on /var/run/nri/nri.sock unless told otherwise: a second private containerd would then
# fail to start ("bind: address already in use"), and the socket outlives containerd.
[plugins."io.containerd.nri.v1.nri"]
  socket_path = "$run/nri.sock"

TOML
    # 1.x has one CRI plugin table: the image settings go into the runtime's below.
    local top_extra="" containerd_extra=""
    if [ "$(major)" -ge 2 ]; then
      cat <<TOML
[$cri_images]
  snapshotter = "overlayfs"
  [$cri_images.pinned_images]
    sandbox = "$sandbox_image"

TOML
    else
      top_extra="  sandbox_image = \"$sandbox_image\""
      containerd_extra='    snapshotter = "overlayfs"'
    fi
    cat <<TOML
[$cri_runtime]
$top_extra
  restrict_oom_score_adj = true
  enable_selinux = false
  [$cri_runtime.containerd]
$containerd_extra
    default_runtime_name = "runc"
    [$cri_runtime.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
    [$cri_runtime.containerd.runtimes.youki]
      runtime_type = "io.containerd.youki.v2"
      [$cri_runtime.containerd.runtimes.youki.options]
        SystemdCgroup = false
    [$cri_runtime.containerd.runtimes.youki-slow]
      runtime_type = "io.containerd.youki.v2"
      base_runtime_spec = "$dir/slow-spec.json"
      [$cri_runtime.containerd.runtimes.youki-slow.options]
        SystemdCgroup = false
    # Handler youki-by-path: our shim under runc's runtime type. containerd 2.1's CRI asks
    # only io.containerd.runc.v2 handlers for their features (\`-info\`), so this is how
    # it learns that our shim does recursive read-only mounts (later releases ask every
    # handler). containerd runs runtime_path as the shim and hands it runc's options.
    [$cri_runtime.containerd.runtimes.youki-by-path]
      runtime_type = "io.containerd.runc.v2"
      runtime_path = "$shim_path"
      [$cri_runtime.containerd.runtimes.youki-by-path.options]
        SystemdCgroup = false
$(if [ "$(major)" -ge 2 ]; then cat <<S
    # Handler youki-sandboxed (containerd 2.x): sandboxer = "shim" hands the pod's whole
    # sandbox to our shim's Sandbox API. containerd makes no pause container and looks up
    # no pause image for it: the shim starts the pause it carries. No options table:
    # containerd 2.1-2.3's StartContainer reads a shim sandbox's task address into runc's
    # options type and fails on any other (client/task.go getRuncOptions; fixed in 2.4 by
    # b88ab5af4), and without options it makes empty runc ones (docs/design-notes.md).
    [$cri_runtime.containerd.runtimes.youki-sandboxed]
      runtime_type = "io.containerd.youki.v2"
      sandboxer = "shim"
S
fi)
$(if [ -n "${SHIM_B:-}" ]; then cat <<B
    # hack/bench.sh --compare: a second build of our shim, by path. As runtime_type (which
    # containerd resolves like \`ctr run --runtime /path\`): 1.6's CRI ignores runtime_path.
    [$cri_runtime.containerd.runtimes.youki-b]
      runtime_type = "$SHIM_B"
      [$cri_runtime.containerd.runtimes.youki-b.options]
        SystemdCgroup = false
B
fi)
  [$cri_runtime.cni]
    $cni_bin
    conf_dir = "$dir/cni/conf"
TOML
  } >"$dir/config.toml"
}

# The containerd binary's major version (1 or 2).
major() {
  "$containerd_bin" --version | awk '{ v = $3; sub(/^v/, "", v); split(v, a, "."); print a[1] + 0 }'
}

# Alive and not a zombie (a killed containerd may wait a while for its reaper).
running() {
  [ -f "$pidfile" ] || return 1
  local state
  state=$(awk '{print $3}' "/proc/$(cat "$pidfile")/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

start() {
  if running; then echo "containerd already running (pid $(cat "$pidfile"), $sock)"; return; fi
  [ -n "${CONTAINERD_CONFIG:-}" ] || [ -x "$shim_dir/containerd-shim-youki-v2" ] || { echo "no shim at $shim_dir: run hack/prepare.sh first" >&2; exit 1; }
  write_config
  PATH="$shim_dir:$bin_dir:$PATH" setsid "$containerd_bin" --config "$config" \
    >"$dir/containerd.log" 2>&1 </dev/null &
  echo $! >"$pidfile"
  for _ in $(seq 100); do
    ctr_ version >/dev/null 2>&1 && break
    running || { tail -20 "$dir/containerd.log" >&2; exit 1; }
    sleep 0.1
  done
  ctr_ version >/dev/null
  for ns in default k8s.io; do
    for img in $preload; do
      ctr_ -n "$ns" images import --no-unpack "$images/$img.tar" >/dev/null
    done
    # One imported by an earlier start with the same root.
    [ "${NO_PAUSE:-0}" != 1 ] || ctr_ -n "$ns" images rm localhost/youki/pause:latest >/dev/null 2>&1 || true
  done
  echo "containerd $("$containerd_bin" --version | awk '{print $3}') running: pid $(cat "$pidfile"), socket $sock"
}

stop() {
  if running; then
    pid=$(cat "$pidfile")
    kill "$pid"
    for _ in $(seq 50); do running || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  env) printf '%s=%q\n' CONTAINERD_ADDRESS "$sock" YOUKI_TEST_DIR "$dir" YOUKI_TEST_RUN "$run" \
         CONTAINERD_BIN "$containerd_bin" PATH "$PATH" \
         CONTAINERD_SUPPRESS_DEPRECATION_WARNINGS 1 YOUKI_NO_PAUSE "${NO_PAUSE:-0}" ;;
  *) echo "usage: $0 start|stop|env" >&2; exit 2 ;;
esac
