//! A container's init and its execs hold their stdio (or the console) and nothing of the
//! shim's: no listening socket, no other container's fifo, no worker pipe — at create
//! (while the init waits for Start), after Start and after Exec. Read from the host in
//! /proc/<pid>/fd (runc's CVE-2024-21626 was such an fd).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::client::{Client, Fifos, process_of};
use common::{create_container, remove, shim_pids, unique, wait_until};

struct RemoveOnDrop(String);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        remove(&self.0);
    }
}

/// fd number → what it refers to, for process `pid`.
fn fds_of(pid: i32) -> BTreeMap<i32, String> {
    let dir = format!("/proc/{pid}/fd");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {dir}: {e}"))
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            Some((n, target.to_string_lossy().into_owned()))
        })
        .collect()
}

/// What the shim's processes serving `id` hold (the daemon; a worker while one runs). A
/// created init is a clone of a worker and runs the shim's binary until Start: not the shim.
fn shim_targets(id: &str, init: i32) -> BTreeSet<String> {
    let pids: Vec<i32> = shim_pids(id).into_iter().filter(|&p| p != init).collect();
    assert!(!pids.is_empty(), "no shim serves {id}");
    pids.into_iter()
        .flat_map(|p| fds_of(p).into_values())
        .collect()
}

/// The process holds fds 0, 1 and 2 and nothing else; with a console, all three are it.
fn assert_only_stdio(what: &str, pid: i32, console: bool) {
    let fds = fds_of(pid);
    let numbers: Vec<i32> = fds.keys().copied().collect();
    assert_eq!(
        numbers,
        [0, 1, 2],
        "{what} (pid {pid}) holds more than its stdio: {fds:#?}"
    );
    if console {
        assert!(
            fds.values().all(|t| t.starts_with("/dev/pts/")),
            "{what} (pid {pid}): stdio is not the console: {fds:#?}"
        );
    }
}

/// At create the init waits for Start inside libcontainer. Besides its stdio it may hold
/// libcontainer's sockets to the processes it came from and the write end of the worker's
/// reply pipe (both close-on-exec, and their other ends gone with the worker): nothing the
/// shim daemon holds, and no file or directory (a handle on the host's /proc was one).
fn assert_nothing_of_the_shims(what: &str, pid: i32, id: &str) {
    let shim = shim_targets(id, pid);
    let fds = fds_of(pid);
    let foreign: Vec<(&i32, &String)> = fds
        .iter()
        .filter(|(n, t)| {
            **n > 2
                && (shim.contains(*t) || !(t.starts_with("socket:[") || t.starts_with("pipe:[")))
        })
        .collect();
    assert!(
        foreign.is_empty(),
        "{what} (pid {pid}) holds fds of the shim's or of the host's: {foreign:?}\nall: {fds:#?}\nshim: {shim:#?}"
    );
}

fn run(console: bool) {
    let c = Client::new();
    let id = unique(if console { "fds-tty" } else { "fds" });
    create_container(&id);
    let _guard = RemoveOnDrop(id.clone());
    c.edit_spec(&id, |s| {
        s["process"]["args"] = serde_json::json!(["sleep", "1000"]);
        s["process"]["terminal"] = console.into();
    });
    let f = Fifos::new(&id);
    let _out = f.read_stdout(None);
    let pid = c.create_task(&id, &f, console).expect("create") as i32;
    assert_nothing_of_the_shims("the created init", pid, &id);
    c.start(&id, "").expect("start");
    // Start returns once libcontainer has let the init go; it then execs.
    assert!(
        wait_until(Duration::from_secs(5), || std::fs::read_link(format!(
            "/proc/{pid}/exe"
        ))
        .is_ok_and(|e| e.ends_with("sleep") || e.ends_with("busybox"))),
        "the init never exec'd"
    );
    assert_only_stdio("the started init", pid, console);

    let spec = c.spec(&id);
    let fe = Fifos::new(&format!("{id}-e"));
    let _eout = fe.read_stdout(None);
    c.exec(
        &id,
        "e1",
        &process_of(&spec, &["sleep", "500"], console),
        &fe,
    )
    .expect("exec");
    let epid = c.start(&id, "e1").expect("start exec") as i32;
    assert!(
        wait_until(Duration::from_secs(5), || std::fs::read_link(format!(
            "/proc/{epid}/exe"
        ))
        .is_ok_and(|e| e.ends_with("sleep") || e.ends_with("busybox"))),
        "the exec never exec'd"
    );
    assert_only_stdio("the exec", epid, console);
    // And the init still: the exec's worker and stdio never reached it.
    assert_only_stdio("the init after an exec", pid, console);
}

#[test]
fn init_and_exec_hold_only_their_stdio() {
    run(false);
}

#[test]
fn with_a_console_init_and_exec_hold_only_the_console() {
    run(true);
}
