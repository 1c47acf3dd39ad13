//! Shared helpers for the integration tests: they drive the private containerd that
//! `hack/containerd.sh start` runs (CONTAINERD_ADDRESS), through `ctr` and, where ctr
//! cannot express a request, straight through the shim's ttrpc socket.
#![allow(dead_code)]

pub mod client;
pub mod kubelet;
pub mod private;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

pub const RUNTIME: &str = "io.containerd.youki.v2";
pub const BUSYBOX: &str = "localhost/youki/busybox:latest";
pub const NS: &str = "default";

pub fn address() -> String {
    std::env::var("CONTAINERD_ADDRESS").unwrap_or_else(|_| "/run/youki-test/containerd.sock".into())
}

/// containerd's state dir (config `state`), where bundles live.
pub fn containerd_state() -> PathBuf {
    PathBuf::from(std::env::var("YOUKI_TEST_RUN").unwrap_or_else(|_| "/run/youki-test".into()))
        .join("state")
}

pub fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "it-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

pub fn ctr_cmd(args: &[&str]) -> Command {
    let mut c = Command::new("ctr");
    c.arg("--address")
        .arg(address())
        .arg("-n")
        .arg(NS)
        .args(args);
    c
}

/// Runs ctr with stdin from /dev/null, waits, returns its output (never panics on failure).
pub fn ctr(args: &[&str]) -> Output {
    ctr_cmd(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run ctr {args:?}: {e}"))
}

pub fn ctr_ok(args: &[&str]) -> String {
    let o = ctr(args);
    assert!(
        o.status.success(),
        "ctr {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `ctr run --rm --runtime youki busybox <id> <cmd…>`.
pub fn run_rm(id: &str, cmd: &[&str]) -> Output {
    let mut args = vec!["run", "--rm", "--runtime", RUNTIME, BUSYBOX, id];
    args.extend_from_slice(cmd);
    ctr(&args)
}

/// Starts a detached container running `cmd`.
pub fn run_detached(id: &str, cmd: &[&str]) {
    let mut args = vec!["run", "-d", "--runtime", RUNTIME, BUSYBOX, id];
    args.extend_from_slice(cmd);
    ctr_ok(&args);
}

/// `ctr container create`: a container with its snapshot and no task, running the image's
/// command; tests set the process through `client::Client::edit_spec` (ctr versions parse
/// a command with flags of its own differently).
pub fn create_container(id: &str) {
    ctr_ok(&["container", "create", "--runtime", RUNTIME, BUSYBOX, id]);
}

/// Kills (SIGKILL), then removes task and container; ignores what is already gone.
pub fn remove(id: &str) {
    let _ = ctr(&["task", "kill", "-s", "SIGKILL", id]);
    wait_until(Duration::from_secs(10), || {
        !task_status(id).contains("RUNNING")
    });
    let _ = ctr(&["task", "rm", "-f", id]);
    let _ = ctr(&["container", "rm", id]);
}

/// The task's STATUS column from `ctr task ls`, or "" if it has no task.
pub fn task_status(id: &str) -> String {
    let out = ctr_ok(&["task", "ls"]);
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&id)).then(|| f.get(2).unwrap_or(&"").to_string())
        })
        .next()
        .unwrap_or_default()
}

pub fn task_pid(id: &str) -> i32 {
    let out = ctr_ok(&["task", "ls"]);
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&id)).then(|| f.get(1).and_then(|p| p.parse().ok()).unwrap_or(0))
        })
        .next()
        .unwrap_or(0)
}

pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// PIDs of shim processes (daemon or fork helper) serving a container with this id.
pub fn shim_pids(id: &str) -> Vec<i32> {
    let needle = format!("\0-id\0{id}\0");
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd);
        let is_shim = cmd.starts_with("containerd-shim-youki-v2")
            || cmd.contains("/containerd-shim-youki-v2\0");
        if is_shim && format!("\0{cmd}").contains(&needle) {
            pids.push(pid);
        }
    }
    pids
}

/// containerd's socket name for a shim serving group `id`.
pub fn socket_path(id: &str) -> PathBuf {
    let key = format!("{}/{NS}/{id}", address());
    Path::new("/run/containerd/s").join(hex::encode(Sha256::digest(key.as_bytes())))
}

pub fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        let p = e.path().join(NS).join(id);
        if p.exists() {
            found.push(p);
        }
    }
    found
}

pub fn mounts_of(id: &str) -> Vec<String> {
    let needle = format!("/{NS}/{id}/");
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_string)
        .collect()
}

pub fn proc_alive(pid: i32) -> bool {
    pid > 0 && Path::new(&format!("/proc/{pid}")).exists() && {
        // A zombie is not alive for our purposes (its parent will reap it).
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    }
}

/// Everything that could be left of a container: must all be empty once it is removed.
pub fn leftovers(id: &str) -> Vec<String> {
    let mut left = Vec::new();
    for p in shim_pids(id) {
        left.push(format!("shim process {p}"));
    }
    for c in cgroup_dirs(id) {
        left.push(format!("cgroup {}", c.display()));
    }
    for m in mounts_of(id) {
        left.push(format!("mount {m}"));
    }
    let sock = socket_path(id);
    if sock.exists() {
        left.push(format!("socket {}", sock.display()));
    }
    let state = Path::new("/run/containerd/youki").join(NS).join(id);
    if state.exists() {
        left.push(format!("state {}", state.display()));
    }
    let bundle = containerd_state()
        .join("io.containerd.runtime.v2.task")
        .join(NS)
        .join(id);
    if bundle.exists() {
        left.push(format!("bundle {}", bundle.display()));
    }
    left
}

/// Waits (containerd cleans up asynchronously after `ctr` returns) and asserts that
/// nothing of the container is left.
pub fn assert_nothing_left(id: &str) {
    wait_until(Duration::from_secs(10), || leftovers(id).is_empty());
    let left = leftovers(id);
    assert!(left.is_empty(), "left behind by {id}: {left:#?}");
}

/// Removes the container when dropped, so a failed assertion does not leave a running
/// shim and container behind (they outlive containerd by design).
pub struct RemoveOnDrop(pub String);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        remove(&self.0);
    }
}

/// The major version of the containerd the tests drive (`ctr version`'s server part):
/// tests that differ by version branch on it.
pub fn containerd_major() -> u32 {
    containerd_version().0
}

/// containerd's (major, minor) version, for behaviour that changed within a major.
pub fn containerd_version() -> (u32, u32) {
    let out = ctr_ok(&["version"]);
    let server = out.split("Server:").nth(1).unwrap_or_default();
    let version = server
        .lines()
        .find_map(|l| l.trim().strip_prefix("Version:"))
        .unwrap_or_else(|| panic!("no server version in `ctr version`: {out}"));
    let mut parts = version
        .trim()
        .trim_start_matches('v')
        .split(['.', '+', '-'])
        .map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor),
        _ => panic!("containerd version {version:?}"),
    }
}

/// The CRI runtime handlers of our shim the pod tests run under: `youki` (containerd's
/// podsandbox sandboxer: a pause image) and, on containerd 2.x, `youki-sandboxed`
/// (sandboxer = "shim": the shim makes the pause container itself). A containerd started
/// with NO_PAUSE=1 has no pause image at all, so only the latter.
pub fn youki_handlers() -> Vec<&'static str> {
    if std::env::var("YOUKI_NO_PAUSE").is_ok_and(|v| v == "1") {
        return vec![kubelet::SANDBOXED_HANDLER];
    }
    let mut h = vec![kubelet::YOUKI_HANDLER];
    if containerd_major() >= 2 {
        h.push(kubelet::SANDBOXED_HANDLER);
    }
    h
}

/// A process's identity that survives PID reuse: (pid, start time in ticks).
pub fn identity(pid: i32) -> (i32, String) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let start = stat
        .rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().nth(19))
        .unwrap_or("")
        .to_string();
    (pid, start)
}
