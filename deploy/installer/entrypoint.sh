#!/bin/sh
# The container of the youki installer DaemonSet (daemonset.yaml in this directory).
# Puts the static binaries on the node, runs `youki-shims install` inside the node's own
# namespaces (nsenter), so that containerd, ctr, systemctl, config.toml and the bin dir are
# the node's own and nothing of them has to be mounted or be runnable in this libc-less
# image, then sleeps until the pod goes away. Environment:
#   NODE_PID      a process of the node to nsenter (default 1, the node's init: hostPID)
#   STAGE_DIR     node directory for the binaries install copies from (default
#                 /opt/youki/bin); the pod mounts it at /host$STAGE_DIR
#   INSTALL_ARGS  arguments of `youki-shims install` (default: --restart)
#   ONESHOT=1     exit with install's status instead of sleeping (a Job, the tests)
set -eu
node_pid=${NODE_PID:-1}
stage=${STAGE_DIR:-/opt/youki/bin}
mkdir -p "/host$stage"
for b in containerd-shim-youki-v2 youki-shims; do
  # Atomically: a shim that containerd starts right now sees the old or the new file.
  cp "/opt/youki/bin/$b" "/host$stage/.$b.new"
  mv -f "/host$stage/.$b.new" "/host$stage/$b"
done
echo "youki-installer: running $stage/youki-shims install --from $stage ${INSTALL_ARGS:---restart}"
# shellcheck disable=SC2086 # INSTALL_ARGS is a list of words
nsenter -t "$node_pid" -m -u -i -n -p -- "$stage/youki-shims" install --from "$stage" ${INSTALL_ARGS:---restart}
[ "${ONESHOT:-}" != 1 ] || { echo "youki-installer: done"; exit 0; }
echo "youki-installer: done; sleeping"
# PID 1 of its namespace: exit on TERM at once instead of waiting out the grace period.
trap 'exit 0' TERM INT
while :; do
  sleep 3600 &
  wait $! || true
done
