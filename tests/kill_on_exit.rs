//! When a container's init exits and the container has no PID namespace of its own (it
//! joined another container's, or the host's), the kernel leaves the rest of its processes
//! running; runc-v2's shim kills them (SIGKILL to the whole cgroup) before it reports the
//! exit, and so must this one.

mod common;

use std::time::Duration;

use common::*;

/// Processes in the container's cgroup, by host PID (any controller's list will do on a
/// v1 or hybrid host; the unified one otherwise).
fn cgroup_procs(id: &str) -> Vec<i32> {
    let mut dirs = cgroup_dirs(id);
    dirs.push(std::path::Path::new("/sys/fs/cgroup").join(NS).join(id));
    dirs.iter()
        .find_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Runs container `b` in the PID namespace at `pid_ns` with an init that starts a
/// background `sleep 1000` and exits; returns what it left behind (identities, so a
/// reused PID is not mistaken for it) once `b`'s exit is known.
fn leftovers_after_init_exit(b: &str, pid_ns: &str) -> Vec<(i32, String)> {
    ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        RUNTIME,
        "--with-ns",
        &format!("pid:{pid_ns}"),
        BUSYBOX,
        b,
        "sh",
        "-c",
        "sleep 1000 & sleep 2",
    ]);
    let init = task_pid(b);
    assert!(
        wait_until(Duration::from_secs(5), || cgroup_procs(b).len() >= 2),
        "the background sleep of {b} never showed up in its cgroup: {:?}",
        cgroup_procs(b)
    );
    let left: Vec<(i32, String)> = cgroup_procs(b)
        .into_iter()
        .filter(|p| *p != init)
        .map(identity)
        .collect();
    assert!(!left.is_empty());
    assert!(
        wait_until(Duration::from_secs(20), || task_status(b) == "STOPPED"),
        "{b} did not stop: {}",
        task_status(b)
    );
    left
}

fn still_running(left: &[(i32, String)]) -> Vec<i32> {
    left.iter()
        .filter(|(pid, start)| proc_alive(*pid) && identity(*pid).1 == *start)
        .map(|(pid, _)| *pid)
        .collect()
}

#[test]
fn init_exit_in_another_containers_pid_namespace_kills_what_it_left() {
    let a = unique("pidns-a");
    run_detached(&a, &["sleep", "1000"]);
    let _ga = RemoveOnDrop(a.clone());
    let pid_a = task_pid(&a);
    let b = unique("pidns-b");
    let gb = RemoveOnDrop(b.clone());
    let left = leftovers_after_init_exit(&b, &format!("/proc/{pid_a}/ns/pid"));
    // SIGKILL went out before the exit was reported; dying takes a moment.
    wait_until(Duration::from_secs(5), || still_running(&left).is_empty());
    assert!(
        still_running(&left).is_empty(),
        "left running after {b}'s init exited (runc-v2 kills them): {:?}",
        still_running(&left)
    );
    // The namespace's owner is untouched.
    assert_eq!(task_status(&a), "RUNNING");
    assert!(proc_alive(pid_a));
    drop(gb);
    assert_nothing_left(&b);
}

#[test]
fn init_exit_in_the_hosts_pid_namespace_kills_what_it_left() {
    let b = unique("hostpid");
    let gb = RemoveOnDrop(b.clone());
    // This test runs in the host's PID namespace.
    let host = format!("/proc/{}/ns/pid", std::process::id());
    let left = leftovers_after_init_exit(&b, &host);
    wait_until(Duration::from_secs(5), || still_running(&left).is_empty());
    assert!(
        still_running(&left).is_empty(),
        "left running after {b}'s init exited (runc-v2 kills them): {:?}",
        still_running(&left)
    );
    drop(gb);
    assert_nothing_left(&b);
}

#[test]
fn init_exit_in_its_own_pid_namespace_is_the_kernels_business() {
    // The usual case, for contrast: the kernel kills the namespace with its init.
    let b = unique("ownpid");
    let gb = RemoveOnDrop(b.clone());
    ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        RUNTIME,
        BUSYBOX,
        &b,
        "sh",
        "-c",
        "sleep 1000 & sleep 1",
    ]);
    assert!(wait_until(Duration::from_secs(20), || task_status(&b) == "STOPPED"));
    assert!(
        wait_until(Duration::from_secs(5), || cgroup_procs(&b).is_empty()),
        "{:?}",
        cgroup_procs(&b)
    );
    drop(gb);
    assert_nothing_left(&b);
}
