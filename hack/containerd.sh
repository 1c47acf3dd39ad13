#!/usr/bin/env bash
# A private containerd with io.containerd.youki.v2 registered: own root, state, socket and
# config under $YOUKI_TEST_DIR (default /var/lib/youki-test); never touches a system one.
#
#   hack/containerd.sh start   # starts it (if not running), imports the test images
#   hack/containerd.sh stop    # stops it (the PID it recorded, nothing else)
#   hack/containerd.sh env     # prints the variables the tests and ctr use
#
# CONTAINERD_BIN picks the containerd binary (default: containerd on PATH);
# SHIM_DIR is where containerd-shim-youki-v2 is found (default target/dist, see Cargo.toml).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
dir=${YOUKI_TEST_DIR:-/var/lib/youki-test}
run=${YOUKI_TEST_RUN:-/run/youki-test}
sock=$run/containerd.sock
containerd_bin=${CONTAINERD_BIN:-$(command -v containerd || echo /usr/bin/containerd)}
shim_dir=${SHIM_DIR:-$top/target/dist}
images=${IMAGES_DIR:-$top/target/images}
pidfile=$run/containerd.pid

ctr_() { ctr --address "$sock" "$@"; }

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
  cat >"$dir/config.toml" <<TOML
version = 2
root = "$dir/root"
state = "$run/state"
oom_score = 0

[grpc]
  address = "$sock"

[debug]
  level = "${CONTAINERD_LOG_LEVEL:-info}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/youki/pause:latest"
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.youki]
      runtime_type = "io.containerd.youki.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.youki.options]
        SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.youki-slow]
      runtime_type = "io.containerd.youki.v2"
      base_runtime_spec = "$dir/slow-spec.json"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.youki-slow.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$dir/cni/conf"
TOML
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
  [ -x "$shim_dir/containerd-shim-youki-v2" ] || { echo "no shim at $shim_dir: run hack/prepare.sh first" >&2; exit 1; }
  write_config
  PATH="$shim_dir:$PATH" setsid "$containerd_bin" --config "$dir/config.toml" \
    >"$dir/containerd.log" 2>&1 </dev/null &
  echo $! >"$pidfile"
  for _ in $(seq 100); do
    ctr_ version >/dev/null 2>&1 && break
    running || { tail -20 "$dir/containerd.log" >&2; exit 1; }
    sleep 0.1
  done
  ctr_ version >/dev/null
  for ns in default k8s.io; do
    for img in busybox pause; do
      ctr_ -n "$ns" images import --no-unpack "$images/$img.tar" >/dev/null
    done
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
  env) echo "CONTAINERD_ADDRESS=$sock"; echo "YOUKI_TEST_DIR=$dir"; echo "CONTAINERD_BIN=$containerd_bin" ;;
  *) echo "usage: $0 start|stop|env" >&2; exit 2 ;;
esac
