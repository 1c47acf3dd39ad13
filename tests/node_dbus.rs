//! The shim daemon talks to no D-Bus: with kubelet's systemd cgroup driver on a cgroup v2
//! node, what kubelet and containerd ask of a running pod again and again (Stats, Pids,
//! Pause/Resume, Kill with `all`) leaves the shim's fds and the system bus's connections
//! where they were. Before the fix every one of those built a libcgroups systemd manager
//! in the daemon, which connected to the bus and never disconnected: one fd and one bus
//! connection per kubelet stats poll, for as long as the pod lived.
//!
//! Needs systemd as PID 1, cgroup v2 and containerd with `SystemdCgroup = true`: it runs in
//! the VM (`hack/vm.sh --test node_dbus`), where containerd is the system's.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::kubelet::*;
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    KillRequest, ListPidsRequest, PauseTaskRequest, ResumeTaskRequest,
};
use containerd_client::tonic::Request;
use containerd_client::tonic::transport::Channel;

const STATS_CALLS: usize = 500;
const PAUSE_RESUME_CALLS: usize = 50;
const PIDS_CALLS: usize = 50;
const KILL_ALL_CALLS: usize = 50;
/// Growth allowed in the shim's fd count. Every call's own fds (a worker's reply pipe and
/// pidfd, containerd's request) are closed before it answers, and the counts are taken
/// with nothing in flight; 2 leaves room for containerd redialling the shim's ttrpc socket
/// or its event connection in between. The leak this guards against is one fd per call:
/// hundreds here.
const FD_SLACK: usize = 2;
/// Growth allowed in the bus's connection count: the minimal guest has next to nothing else
/// on the bus, but a unit starting (a timer, logind) may add a connection meanwhile. The
/// shim itself must own none at all.
const BUS_SLACK: usize = 2;

/// containerd's Task API in CRI's namespace: what `ctr -n k8s.io task pause` and kubelet's
/// runtime send, without a ctr process per call.
struct Tasks {
    rt: tokio::runtime::Runtime,
    client: TasksClient<Channel>,
}

fn k8s<T>(r: T) -> Request<T> {
    let mut r = Request::new(r);
    r.metadata_mut()
        .insert("containerd-namespace", "k8s.io".parse().expect("namespace"));
    r
}

impl Tasks {
    fn connect() -> Tasks {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let channel = rt
            .block_on(containerd_client::connect(common::address()))
            .expect("connect to containerd");
        Tasks {
            rt,
            client: TasksClient::new(channel),
        }
    }

    fn pause(&mut self, id: &str) -> Result<(), String> {
        let r = PauseTaskRequest {
            container_id: id.into(),
        };
        self.rt
            .block_on(self.client.pause(k8s(r)))
            .map(|_| ())
            .map_err(|s| format!("Pause: {:?}: {}", s.code(), s.message()))
    }

    fn resume(&mut self, id: &str) -> Result<(), String> {
        let r = ResumeTaskRequest {
            container_id: id.into(),
        };
        self.rt
            .block_on(self.client.resume(k8s(r)))
            .map(|_| ())
            .map_err(|s| format!("Resume: {:?}: {}", s.code(), s.message()))
    }

    fn pids(&mut self, id: &str) -> Result<Vec<u32>, String> {
        let r = ListPidsRequest {
            container_id: id.into(),
        };
        self.rt
            .block_on(self.client.list_pids(k8s(r)))
            .map(|r| r.into_inner().processes.iter().map(|p| p.pid).collect())
            .map_err(|s| format!("ListPids: {:?}: {}", s.code(), s.message()))
    }

    fn kill_all(&mut self, id: &str, signal: i32) -> Result<(), String> {
        let r = KillRequest {
            container_id: id.into(),
            exec_id: String::new(),
            signal: signal as u32,
            all: true,
        };
        self.rt
            .block_on(self.client.kill(k8s(r)))
            .map(|_| ())
            .map_err(|s| format!("Kill all: {:?}: {}", s.code(), s.message()))
    }
}

/// The parent of `pid` (/proc/PID/stat's 4th field, after the parenthesised name).
fn parent_of(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    after
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("ppid")
}

fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("shim fds")
        .count()
}

/// The system bus's connections (its unique names, `:1.N`) and how many of them belong to
/// `pid`, as `busctl` lists them.
fn bus_connections(pid: i32) -> (usize, usize) {
    let out = Command::new("busctl")
        .args(["--system", "list", "--unique", "--no-legend", "--no-pager"])
        .output()
        .expect("run busctl");
    assert!(
        out.status.success(),
        "busctl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.first().is_some_and(|n| n.starts_with(':')))
        .collect();
    let own = rows
        .iter()
        .filter(|f| f.get(1) == Some(&pid.to_string().as_str()))
        .count();
    (rows.len(), own)
}

struct Counts {
    fds: usize,
    bus: usize,
    shim_bus: usize,
}

fn counts(shim: i32) -> Counts {
    let (bus, shim_bus) = bus_connections(shim);
    Counts {
        fds: fd_count(shim),
        bus,
        shim_bus,
    }
}

/// One round of what kubelet and containerd ask of a running pod; errors are collected,
/// not fatal, so that a run on a leaking shim still reports what it leaked.
fn round(
    cri: &mut Cri,
    tasks: &mut Tasks,
    (id, shim): (&str, i32),
    stats: usize,
    pause: usize,
    other: usize,
) -> Vec<String> {
    let mut errors = Vec::new();
    for i in 1..=stats {
        if let Err(e) = cri.container_stats(id) {
            errors.push(e);
        }
        if i % 100 == 0 {
            // Progress, so that a run that times out still shows the trend.
            let c = counts(shim);
            eprintln!(
                "after {i} Stats: shim fds {}, bus connections {} (the shim's {}), {} errors",
                c.fds,
                c.bus,
                c.shim_bus,
                errors.len()
            );
        }
    }
    for _ in 0..pause {
        if let Err(e) = tasks.pause(id).and_then(|_| tasks.resume(id)) {
            errors.push(e);
        }
    }
    for _ in 0..other {
        if let Err(e) = tasks.pids(id) {
            errors.push(e);
        }
        // SIGCONT through the cgroup: Kill(all)'s path, harmless to a running container.
        if let Err(e) = tasks.kill_all(id, libc::SIGCONT) {
            errors.push(e);
        }
    }
    errors
}

#[test]
#[ignore = "needs systemd + cgroup v2: runs in hack/vm.sh"]
fn polling_a_pod_leaves_no_fd_and_no_bus_connection_behind() {
    let mut cri = Cri::connect(&cri_socket());
    // kubelet's systemd driver: the pod's slice below kubepods-besteffort.slice.
    let spec = PodSpec::systemd("dbus");
    let pod = cri.run_pod(&spec).expect("RunPodSandbox");
    let _guard = PodGuard::new(&pod, &spec, &cri_socket());
    let app = cri
        .run_container(&pod, &spec, "app", &["sleep", "3600"])
        .expect("container");
    let init = cri.container_pid(&app).expect("container pid");
    // The shim daemon is the subreaper its containers' inits are re-parented to.
    let shim = parent_of(init);
    let cmdline = std::fs::read(format!("/proc/{shim}/cmdline")).unwrap_or_default();
    assert!(
        String::from_utf8_lossy(&cmdline).contains("containerd-shim-youki-v2"),
        "parent {shim} of the container's init is not our shim"
    );

    // The reads come from the container's scope, where systemd put it.
    let scope = std::fs::read_to_string(format!("/proc/{init}/cgroup")).expect("cgroup");
    assert!(
        scope.contains(&format!(
            "/{}/cri-containerd-{app}.scope",
            spec.cgroup_parent
        )),
        "not in its systemd scope: {scope}"
    );
    let mut tasks = Tasks::connect();

    // Warm up (whatever the shim opens once and keeps, it opens now), then count. Errors
    // are kept for the end, so that a leaking shim still reports what it leaked.
    let start = counts(shim);
    let mut errors = round(&mut cri, &mut tasks, (&app, shim), 10, 2, 2);
    let before = counts(shim);
    let t0 = Instant::now();
    errors.extend(round(
        &mut cri,
        &mut tasks,
        (&app, shim),
        STATS_CALLS,
        PAUSE_RESUME_CALLS,
        PIDS_CALLS.max(KILL_ALL_CALLS),
    ));
    let took = t0.elapsed();
    // A worker still exiting would be counted by nothing here (it is another process),
    // but let containerd settle its own connections.
    std::thread::sleep(Duration::from_millis(500));
    let after = counts(shim);
    eprintln!(
        "{STATS_CALLS} Stats, {PAUSE_RESUME_CALLS} Pause/Resume, {PIDS_CALLS} Pids and \
         {KILL_ALL_CALLS} Kill(all) in {took:?}: shim fds {} -> {}, bus connections {} -> {} \
         (the shim's own: {} -> {}), {} errors; at the start (before any call): {} fds, {} bus \
         connections, the shim's {}",
        before.fds,
        after.fds,
        before.bus,
        after.bus,
        before.shim_bus,
        after.shim_bus,
        errors.len(),
        start.fds,
        start.bus,
        start.shim_bus,
    );
    assert_eq!(
        after.shim_bus, 0,
        "the shim holds {} system bus connections",
        after.shim_bus
    );
    assert!(
        after.fds <= before.fds + FD_SLACK,
        "shim fds grew from {} to {}",
        before.fds,
        after.fds
    );
    assert!(
        after.bus <= before.bus + BUS_SLACK,
        "bus connections grew from {} to {}",
        before.bus,
        after.bus
    );
    let first: Vec<&String> = errors.iter().take(5).collect();
    assert!(
        errors.is_empty(),
        "{} calls failed: {first:?}",
        errors.len()
    );

    // And the numbers come from the container's scope, where systemd put it.
    let scope_dir = spec.slice_dir().join(format!("cri-containerd-{app}.scope"));
    let s = cri.container_stats(&app).unwrap_or_else(|e| {
        let controllers = std::fs::read_to_string(scope_dir.join("cgroup.controllers"));
        panic!(
            "ContainerStats: {e} ({} cgroup.controllers: {controllers:?})",
            scope_dir.display()
        )
    });
    let mem = s.memory.expect("memory stats");
    assert!(
        mem.working_set_bytes.is_some_and(|v| v.value > 0),
        "no memory use from the scope: {mem:?}"
    );
    let pids = tasks.pids(&app).expect("ListPids");
    assert!(pids.contains(&(init as u32)), "{init} not in {pids:?}");
}
