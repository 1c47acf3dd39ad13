//! The VM suite: a node as most Kubernetes nodes are (systemd as PID 1, a pure cgroup v2
//! hierarchy, containerd 2.x with `SystemdCgroup = true`). This machine is none of that, so
//! every test here is ignored on the host and `hack/vm.sh` runs them (`--ignored`) in a VM.

mod common;

use std::time::Duration;

use common::*;

/// The runtime options file that puts a ctr container under the systemd driver (ctr's own
/// `--runc-systemd-cgroup` is for io.containerd.runc.v2 only): ctr hands its path to the
/// shim, as CRI does with a handler's `ConfigPath`.
fn systemd_options() -> String {
    let path = std::env::temp_dir().join("youki-systemd-cgroup.toml");
    std::fs::write(&path, "SystemdCgroup = true\n").expect("write runtime options");
    path.to_string_lossy().into_owned()
}

/// A ctr container under the systemd driver lives in a transient scope of the slice its
/// cgroupsPath names (`slice:prefix:name` → `/slice/prefix-name.scope`).
#[test]
#[ignore = "needs systemd + cgroup v2: runs in hack/vm.sh"]
fn ctr_container_runs_in_a_systemd_scope() {
    let id = unique("scope");
    let cgroup = format!("system.slice:youki:{id}");
    let options = systemd_options();
    ctr_ok(&[
        "run", "-d", "--runtime", RUNTIME, "--runtime-config-path", &options, "--cgroup",
        &cgroup, BUSYBOX, &id, "sleep", "600",
    ]);
    let pid = task_pid(&id);
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let state = std::process::Command::new("systemctl")
        .args(["show", "-P", "ActiveState", &format!("youki-{id}.scope")])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    remove(&id);
    assert_eq!(own.trim(), format!("0::/system.slice/youki-{id}.scope"));
    assert_eq!(state, "active");
    assert!(
        wait_until(Duration::from_secs(10), || {
            !std::path::Path::new(&format!("/sys/fs/cgroup/system.slice/youki-{id}.scope")).exists()
        }),
        "the scope outlived its container"
    );
}
