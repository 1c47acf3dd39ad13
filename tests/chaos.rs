//! Chaos: cycles of containerd kill -9 and restart with pods running, on a private
//! containerd. In every cycle, while containerd is down: a container of every pod exits
//! with its own code, one pod's shim is killed, and one call is cut off in the middle (the
//! first Create of a new shim, a pod container's Create or Start, or its Delete: a hook
//! of the `youki-slow` handler holds the call open until containerd is gone). After the
//! restart the test does what kubelet would (remove NotReady pods and half-made
//! containers, recreate the lost pod), then compares containerd's view (CRI), the shims'
//! view (`youki-shims`) and the machine (processes, cgroups, mounts, sockets, state), and
//! prints the counts.
//!
//! containerd 1.6's CRI gives sandboxes no base spec (so no hooks): the Create of a new
//! shim is cut off through `ctr run` with the same hooks instead.
//!
//! On containerd 2.x every other pod runs under `youki-sandboxed` (sandboxer = "shim").
//!
//! CHAOS_CYCLES and CHAOS_PODS set the size: 20 cycles of 5 pods (plus the slow one) by
//! default, what CI runs; hack/chaos.sh runs it alone, with any size.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::kubelet::*;
use common::private::{Events, Private, process_gone, task_exits};
use common::wait_until;
use containerd_shim_youki_v2::ops::inventory;
use k8s_cri::v1::{ContainerState, PodSandboxState};

const TOOL: &str = env!("CARGO_BIN_EXE_youki-shims");
const SLOW_HANDLER: &str = "youki-slow";
/// How long containerd stays down: longer than the `short` containers live (2 s) and than
/// the slow hooks hold a call (3 s).
const DOWNTIME: Duration = Duration::from_secs(4);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Stage {
    /// `ctr run` of a container with its own new shim.
    NewShim,
    Create,
    Start,
    Delete,
    /// `ctr task rm -f` of a container alone in its shim: the shim must still go.
    LastDelete,
}

impl Stage {
    const ALL: [Stage; 5] = [
        Stage::NewShim,
        Stage::Create,
        Stage::Start,
        Stage::Delete,
        Stage::LastDelete,
    ];

    /// The marker the slow hooks look for (hack/containerd.sh).
    fn marker(self) -> &'static str {
        match self {
            Stage::NewShim | Stage::Create => "create",
            Stage::Start => "start",
            Stage::Delete | Stage::LastDelete => "delete",
        }
    }
}

struct Pod {
    id: String,
    spec: PodSpec,
    pause: i32,
    long: String,
    long_pid: i32,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    lost: usize,
    wrong_exit: usize,
    /// /tasks/exit events seen more than once for the same process.
    duplicate_exits: usize,
    processes: usize,
    cgroups: usize,
    mounts: usize,
    sockets: usize,
    state: usize,
    unknown: usize,
}

impl Counts {
    fn add(&mut self, o: Counts) {
        self.lost += o.lost;
        self.wrong_exit += o.wrong_exit;
        self.duplicate_exits += o.duplicate_exits;
        self.processes += o.processes;
        self.cgroups += o.cgroups;
        self.mounts += o.mounts;
        self.sockets += o.sockets;
        self.state += o.state;
        self.unknown += o.unknown;
    }

    fn leftovers(&self) -> usize {
        self.processes + self.cgroups + self.mounts + self.sockets + self.state + self.unknown
    }

    fn line(&self) -> String {
        format!(
            "lost {}, wrong exit codes or times {}, duplicate exit events {}, leftover processes {}, cgroups {}, mounts {}, sockets {}, state dirs {}, unknown (youki-shims) {}",
            self.lost,
            self.wrong_exit,
            self.duplicate_exits,
            self.processes,
            self.cgroups,
            self.mounts,
            self.sockets,
            self.state,
            self.unknown
        )
    }
}

/// Every /tasks/exit event seen over the run, by (container, exec ID, PID).
#[derive(Default)]
struct Exits(HashMap<(String, String, u64), usize>);

impl Exits {
    /// Takes in one containerd lifetime's events; returns how many repeated an exit
    /// already seen (in this lifetime or an earlier one).
    fn record(&mut self, events: Events) -> usize {
        let mut repeats = 0;
        for exit in task_exits(&events.finish()) {
            let n = self.0.entry(exit.clone()).or_default();
            *n += 1;
            if *n > 1 {
                eprintln!("exit event of {exit:?} published {n} times");
                repeats += 1;
            }
        }
        repeats
    }
}

/// Wall-clock nanoseconds, as CRI reports times.
fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The cgroupfs parents of this test's pods carry this, and the test's PID.
const POD_PREFIX: &str = "chaos";

fn new_pod(cri: &mut Cri, name: &str, handler: &str) -> Pod {
    let mut spec = PodSpec::new(name);
    spec.handler = handler.to_string();
    let id = cri.run_pod(&spec).expect("RunPodSandbox");
    let long = cri
        .run_container(&id, &spec, "long", &["sleep", "3600"])
        .expect("long container");
    Pod {
        pause: cri.pod_pid(&id).expect("pause pid"),
        long_pid: cri.container_pid(&long).expect("long pid"),
        id,
        spec,
        long,
    }
}

/// Connects once the restarted containerd's CRI answers.
fn cri_when_ready(sock: &Path) -> Cri {
    let mut cri = Cri::connect(sock);
    let ready = wait_until(Duration::from_secs(30), || cri.list_pods().is_ok());
    assert!(ready, "CRI did not come back after the restart");
    cri
}

/// The serving shims this containerd started.
fn our_shims(sock: &str) -> Vec<inventory::Shim> {
    inventory::scan_shims(Path::new("/proc"))
        .into_iter()
        .filter(|s| s.address == sock)
        .collect()
}

/// Everything on the machine that the given live pods and containers do not account for.
fn leftovers(p: &Private, live: &HashSet<String>, sockets_before: &HashSet<PathBuf>) -> Counts {
    let mut c = Counts::default();
    let sock = p.sock();
    let shims = our_shims(&sock);
    // A shim per live pod, no other.
    c.processes += shims.iter().filter(|s| !live.contains(&s.id)).count();
    // libcontainer state of this containerd's bundles; a live init with no live owner.
    let state = p.state();
    for f in inventory::scan_containers(Path::new(inventory::STATE_ROOT), Path::new("/proc")) {
        if !f.bundle.starts_with(&state) || live.contains(&f.id) {
            continue;
        }
        c.state += 1;
        if f.pid.is_some_and(|pid| !process_gone(pid)) {
            c.processes += 1;
        }
    }
    // cgroups under this test's pod parents: a dead pod's parent, or a container's cgroup
    // inside a live pod that is not a live container (and what still runs in it).
    let parent_dir = Path::new("/sys/fs/cgroup/memory/youki-test");
    let mine = format!("-{}", std::process::id());
    for pod in std::fs::read_dir(parent_dir)
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = pod.file_name().to_string_lossy().into_owned();
        if !name.starts_with(&format!("pod-{POD_PREFIX}")) || !name.ends_with(&mine) {
            continue;
        }
        let pod_live = std::fs::read_dir(pod.path())
            .into_iter()
            .flatten()
            .flatten()
            .any(|d| d.path().is_dir() && live.contains(&*d.file_name().to_string_lossy()));
        for d in std::fs::read_dir(pod.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let id = d.file_name().to_string_lossy().into_owned();
            if d.path().is_dir() && !live.contains(&id) {
                c.cgroups += 1;
                c.processes += procs_in(&d.path());
            }
        }
        if !pod_live {
            c.cgroups += 1;
        }
    }
    // Rootfs and sandbox shm mounts of this containerd, by the ID in their path.
    let root = p.dir.join("root");
    for line in std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
    {
        let Some(mp) = line.split_whitespace().nth(4) else {
            continue;
        };
        let mp = Path::new(mp);
        if !(mp.starts_with(&state) || mp.starts_with(&root)) {
            continue;
        }
        let owner = mount_owner(mp);
        if owner.is_none_or(|id| !live.contains(&id)) {
            c.mounts += 1;
        }
    }
    // Sockets: every file in /run/containerd/s that appeared during the test must be a
    // live shim's.
    let live_sockets: HashSet<PathBuf> = shims.iter().map(|s| s.socket.clone()).collect();
    for e in std::fs::read_dir("/run/containerd/s")
        .into_iter()
        .flatten()
        .flatten()
    {
        let path = e.path();
        if sockets_before.contains(&path) || live_sockets.contains(&path) {
            continue;
        }
        if UnixStream::connect(&path).is_err() {
            c.sockets += 1;
        }
    }
    // The operator tool must agree that nothing is unknown.
    let out = Command::new(TOOL)
        .args(["--json", "--grace", "0", "--address", &sock])
        .output()
        .expect("youki-shims");
    match serde_json::from_slice::<serde_json::Value>(&out.stdout) {
        Ok(report) => {
            let text = report.to_string();
            c.unknown += text.matches("\"verdict\":\"unknown\"").count();
            // Stale sockets from before the test are not this test's doing.
            c.unknown += report["stale_sockets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str())
                .filter(|s| !sockets_before.contains(Path::new(s)))
                .count();
        }
        Err(e) => {
            eprintln!(
                "youki-shims exited {:?} without a report ({e}): {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            );
            c.unknown += 1;
        }
    }
    c
}

/// Prints what youki-shims calls unknown, for a failing run's log.
fn show_unknown(p: &Private) {
    let out = Command::new(TOOL)
        .args(["--grace", "0", "--address", &p.sock()])
        .output()
        .expect("youki-shims");
    let _ = writeln!(
        std::io::stderr(),
        "youki-shims found something unknown:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The container or sandbox a mount under containerd's state or root belongs to.
fn mount_owner(mp: &Path) -> Option<String> {
    let parts: Vec<_> = mp
        .iter()
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    parts.iter().enumerate().find_map(|(i, part)| {
        let after = |key: &str| (part == key).then(|| parts.get(i + 1).cloned()).flatten();
        after("io.containerd.runtime.v2.task")
            .and_then(|_| parts.get(i + 2).cloned())
            .or_else(|| after("sandboxes"))
    })
}

fn procs_in(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// Tears every pod of the private containerd down when dropped (after a failed assertion
/// too), before the containerd itself stops.
struct Sweep(PathBuf);

impl Drop for Sweep {
    fn drop(&mut self) {
        let mut cri = Cri::connect(&self.0);
        for pod in cri.list_pods().unwrap_or_default() {
            let _ = cri.teardown(&pod.id);
        }
        remove_pod_cgroups();
        let ctr = |args: &[&str]| {
            Command::new("ctr")
                .arg("--address")
                .arg(&self.0)
                .args(args)
                .output()
        };
        if let Ok(o) = ctr(&["c", "ls", "-q"]) {
            for id in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                let _ = ctr(&["task", "rm", "-f", id]);
                let _ = ctr(&["c", "rm", id]);
            }
        }
    }
}

/// What kubelet removes after a pod: its cgroup parents (this test's only).
fn remove_pod_cgroups() {
    let mine = format!("-{}", std::process::id());
    for ctrl in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        for pod in std::fs::read_dir(ctrl.path().join("youki-test"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = pod.file_name().to_string_lossy().into_owned();
            if name.starts_with(&format!("pod-{POD_PREFIX}")) && name.ends_with(&mine) {
                let _ = std::fs::remove_dir(pod.path());
            }
        }
    }
}

fn teardown(cri: &mut Cri, pod: &str, spec: Option<&PodSpec>) {
    cri.teardown(pod)
        .unwrap_or_else(|e| panic!("teardown of pod {pod}: {e}"));
    if let Some(s) = spec {
        let _ = std::fs::remove_dir_all(&s.log_directory);
    }
    remove_pod_cgroups();
}

/// The handler of pod slot `i`: on containerd 2.x every other pod is a shim-sandboxer pod
/// (`youki-sandboxed`: its pause made by our shim through the Sandbox API), so kills and
/// restarts hit both kinds; the slow victim stays on the podsandbox handler (its hooks).
fn pod_handler(i: usize) -> &'static str {
    let handlers = common::youki_handlers();
    handlers[i % handlers.len()]
}

#[test]
fn chaos_containerd_and_shim_kills_lose_nothing_and_leak_nothing() {
    let cycles = env_num("CHAOS_CYCLES", 20);
    let npods = env_num("CHAOS_PODS", 5).max(1);
    let p = Private::new("chaos");
    p.start();
    // Each containerd lifetime's events; ctr events ends by itself when containerd dies.
    let mut events = Events::subscribe(&p);
    let mut exits = Exits::default();
    let sock_path = PathBuf::from(p.sock());
    let sockets_before: HashSet<PathBuf> = std::fs::read_dir("/run/containerd/s")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    let _sweep = Sweep(sock_path.clone());
    let slow = p.dir.join("slow");

    let ctr_spec = ctr_spec(&p);
    let mut cri = Cri::connect(&sock_path);
    let mut pods: Vec<Pod> = (0..npods)
        .map(|i| new_pod(&mut cri, &format!("{POD_PREFIX}-{i}-0"), pod_handler(i)))
        .collect();
    let mut victim = new_pod(&mut cri, &format!("{POD_PREFIX}-victim-0"), SLOW_HANDLER);
    let mut total = Counts::default();
    let began = Instant::now();

    for cycle in 0..cycles {
        let t = Instant::now();
        let stage = Stage::ALL[cycle % Stage::ALL.len()];
        let mut counts = Counts::default();

        // Before the kill: a Delete-stage victim, then one short-lived container a pod.
        let doomed = (stage == Stage::Delete).then(|| {
            cri.run_container(
                &victim.id,
                &victim.spec,
                &format!("doomed-{cycle}"),
                &["sleep", "3600"],
            )
            .expect("doomed container")
        });
        let ctr_id = format!("{POD_PREFIX}-ctr-{cycle}");
        if stage == Stage::LastDelete {
            let o = ctr_run(&p.sock(), &ctr_spec, &ctr_id);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
        let mut shorts = Vec::new();
        for (i, pod) in pods.iter().enumerate() {
            let code = 10 + ((cycle * 7 + i) % 50) as i32;
            let script = format!("sleep 2; exit {code}");
            let started = now_ns();
            let id = cri
                .run_container(
                    &pod.id,
                    &pod.spec,
                    &format!("short-{cycle}"),
                    &["sh", "-c", &script],
                )
                .expect("short container");
            shorts.push((i, id, code, started));
        }

        // The call containerd dies in.
        std::fs::write(slow.join(stage.marker()), "").unwrap();
        let entered = slow.join(format!("in-{}", stage.marker()));
        let _ = std::fs::remove_file(&entered);
        let call = {
            let (sock, victim_id, victim_spec, ctr_id) = (
                sock_path.clone(),
                victim.id.clone(),
                victim.spec.clone(),
                ctr_id.clone(),
            );
            let (doomed, ctr_spec) = (doomed.clone(), ctr_spec.clone());
            std::thread::spawn(move || {
                let mut cri = Cri::connect(&sock);
                match stage {
                    Stage::NewShim => {
                        ctr_run(&sock.to_string_lossy(), &ctr_spec, &ctr_id);
                        Ok(())
                    }
                    Stage::LastDelete => Command::new("ctr")
                        .arg("--address")
                        .arg(&sock)
                        .args(["task", "rm", "-f", &ctr_id])
                        .output()
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                    Stage::Create | Stage::Start => cri
                        .run_container(
                            &victim_id,
                            &victim_spec,
                            &format!("victim-{cycle}"),
                            &["sleep", "3600"],
                        )
                        .map(|_| ()),
                    Stage::Delete => {
                        cri.stop_container(&doomed.unwrap_or_default(), Duration::ZERO)
                    }
                }
            })
        };
        assert!(
            wait_until(Duration::from_secs(15), || entered.exists()),
            "cycle {cycle}: the {stage:?} call never reached the shim"
        );

        // Down: containerd, and one pod's shim.
        p.kill9();
        let killed_at = Instant::now();
        counts.duplicate_exits += exits.record(events);
        let j = cycle % pods.len();
        let sock = p.sock();
        for s in our_shims(&sock).iter().filter(|s| s.id == pods[j].id) {
            // SAFETY: kill(2) of the shim our containerd started for pod j.
            unsafe { libc::kill(s.pid, libc::SIGKILL) };
        }
        let _ = std::fs::remove_file(slow.join(stage.marker()));
        drop(cri);
        let _ = call.join();
        std::thread::sleep(DOWNTIME.saturating_sub(killed_at.elapsed()));

        // Up again; kubelet's part.
        let restarted = now_ns();
        p.start();
        events = Events::subscribe(&p);
        cri = cri_when_ready(&sock_path);

        // The pod whose shim died: containerd's cleanup stopped it; kubelet recreates it.
        let lost_pod = &pods[j];
        let cleaned = wait_until(Duration::from_secs(20), || {
            cri.pod_status(&lost_pod.id)
                .ok()
                .and_then(|s| s.status)
                .is_some_and(|s| s.state == PodSandboxState::SandboxNotready as i32)
        });
        if !cleaned {
            eprintln!(
                "cycle {cycle}: pod {} still ready after its shim died",
                lost_pod.id
            );
            counts.processes += 1;
        }
        let old_spec = lost_pod.spec.clone();
        let old_id = lost_pod.id.clone();
        teardown(&mut cri, &old_id, Some(&old_spec));
        pods[j] = new_pod(
            &mut cri,
            &format!("{POD_PREFIX}-{j}-{}", cycle + 1),
            pod_handler(j),
        );

        // Every other pod: same processes, true exit codes, still controllable.
        for (i, pod) in pods.iter().enumerate() {
            if i == j {
                continue;
            }
            check_survivor(&mut cri, pod, &mut counts);
        }
        check_survivor(&mut cri, &victim, &mut counts);
        for (i, id, code, started) in &shorts {
            if *i == j {
                continue;
            }
            wait_until(Duration::from_secs(10), || {
                cri.container_state(id).ok() == Some(ContainerState::ContainerExited)
            });
            let got = cri
                .container_status(id)
                .ok()
                .and_then(|s| s.status)
                .map(|s| (s.state, s.exit_code, s.finished_at));
            // The true exit time: after its 2 s of sleep, and not the restart's time.
            let in_time = |at: i64| at >= started + 1_900_000_000 && at < restarted;
            let right = got.is_some_and(|(state, exit, at)| {
                state == ContainerState::ContainerExited as i32 && exit == *code && in_time(at)
            });
            if !right {
                eprintln!(
                    "cycle {cycle}: container {id}: want exit {code} in [{}, {restarted}), got {got:?}",
                    started + 1_900_000_000
                );
                counts.wrong_exit += 1;
            }
            cri.remove_container(id)
                .unwrap_or_else(|e| panic!("remove {id}: {e}"));
        }

        // Whatever the cut-off call left: known and controllable, or gone.
        for c in cri
            .list_containers_of(&victim.id)
            .expect("victim's containers")
        {
            if c.id != victim.long {
                cri.stop_container(&c.id, Duration::ZERO)
                    .unwrap_or_else(|e| panic!("stop {} after {stage:?}: {e}", c.id));
                cri.remove_container(&c.id)
                    .unwrap_or_else(|e| panic!("remove {} after {stage:?}: {e}", c.id));
            }
        }
        if matches!(stage, Stage::NewShim | Stage::LastDelete) {
            remove_ctr_container(&p, &ctr_id, &mut counts);
        }
        // The victim pod itself must still be whole; start over if a check failed.
        if cri.pod_pid(&victim.id).ok() != Some(victim.pause) {
            let old = victim.id.clone();
            teardown(&mut cri, &old, Some(&victim.spec));
            victim = new_pod(
                &mut cri,
                &format!("{POD_PREFIX}-victim-{}", cycle + 1),
                SLOW_HANDLER,
            );
        }

        // containerd's view against the machine's.
        let live = live_ids(&mut cri);
        wait_until(Duration::from_secs(10), || {
            leftovers(&p, &live, &sockets_before).leftovers() == 0
        });
        let left = leftovers(&p, &live, &sockets_before);
        if left.unknown > 0 {
            show_unknown(&p);
        }
        counts.add(Counts {
            lost: 0,
            wrong_exit: 0,
            ..left
        });
        println!(
            "cycle {}/{cycles} [{stage:?}, shim of pod {j} killed]: {} pods, {} live containers; {} ({:.1} s)",
            cycle + 1,
            pods.len() + 1,
            live.len(),
            counts.line(),
            t.elapsed().as_secs_f64()
        );
        total.add(counts);
    }

    // The end: every pod down, nothing of any left.
    for pod in pods.iter().chain([&victim]) {
        teardown(&mut cri, &pod.id, Some(&pod.spec));
    }
    let none = HashSet::new();
    wait_until(Duration::from_secs(10), || {
        leftovers(&p, &none, &sockets_before).leftovers() == 0
    });
    let mut end = leftovers(&p, &none, &sockets_before);
    if end.unknown > 0 {
        show_unknown(&p);
    }
    end.duplicate_exits = exits.record(events);
    total.add(end);
    // Straight to stderr, past the harness's capture: CI's log shows the counts of a passing run.
    let _ = writeln!(
        std::io::stderr(),
        "chaos: {cycles} cycles × {npods} pods (+1 slow) in {:.0} s ({} exit events checked): {}",
        began.elapsed().as_secs_f64(),
        exits.0.len(),
        total.line()
    );
    assert_eq!(total.lost, 0, "lost containers: {}", total.line());
    assert_eq!(total.wrong_exit, 0, "wrong exit codes: {}", total.line());
    assert_eq!(
        total.duplicate_exits,
        0,
        "exits published twice: {}",
        total.line()
    );
    assert_eq!(total.leftovers(), 0, "leftovers: {}", total.line());
}

/// An OCI spec for `ctr run --config`: the youki-slow handler's spec (so the same hooks)
/// with a busybox rootfs of its own, as ctr with a spec file makes no snapshot.
fn ctr_spec(p: &Private) -> PathBuf {
    let rootfs = p.dir.join("ctr-rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("busybox-static");
    let base = std::fs::read(p.dir.join("slow-spec.json")).expect("youki-slow spec");
    let mut spec: serde_json::Value = serde_json::from_slice(&base).unwrap();
    spec["root"] = serde_json::json!({"path": rootfs, "readonly": true});
    spec["process"]["args"] = serde_json::json!(["/bin/busybox", "sleep", "3600"]);
    spec["process"]["env"] = serde_json::json!(["PATH=/bin"]);
    spec["process"]["terminal"] = serde_json::json!(false);
    let path = p.dir.join("ctr-spec.json");
    std::fs::write(&path, serde_json::to_vec(&spec).unwrap()).unwrap();
    path
}

/// `ctr run -d` of `id` from the spec file `spec`, in its own shim. ctr takes a spec file
/// as it is, and `ctr oci spec`'s cgroupsPath is the namespace's own `/default`: each
/// container gets `/default/<id>` here, as ctr gives it without `--config`, or every chaos
/// container would share (and on cgroup v1 set the device rules of) the parent of all.
fn ctr_run(sock: &str, spec: &Path, id: &str) -> std::process::Output {
    let mut own: serde_json::Value =
        serde_json::from_slice(&std::fs::read(spec).expect("ctr spec")).expect("ctr spec json");
    own["linux"]["cgroupsPath"] = serde_json::json!(format!("/default/{id}"));
    let path = spec.with_file_name(format!("ctr-spec-{id}.json"));
    std::fs::write(&path, serde_json::to_vec(&own).expect("ctr spec")).expect("ctr spec");
    let out = Command::new("ctr")
        .arg("--address")
        .arg(sock)
        .args(["run", "-d", "--runtime", common::RUNTIME, "--config"])
        .arg(&path)
        .arg(id)
        .output()
        .expect("ctr run");
    let _ = std::fs::remove_file(&path);
    out
}

/// After a cut-off `ctr run` or `ctr task rm`: the container is known to containerd with a task that can be
/// killed and deleted, or it never got a task and nothing of it runs (the leftover scan
/// checks the rest). Either way it is removed.
fn remove_ctr_container(p: &Private, id: &str, counts: &mut Counts) {
    let ctr = |args: &[&str]| {
        let mut all = vec!["-n", "default"];
        all.extend_from_slice(args);
        p.ctr(&all)
    };
    let task = String::from_utf8_lossy(&ctr(&["task", "ls"]).stdout)
        .lines()
        .any(|l| l.split_whitespace().next() == Some(id));
    if task {
        let _ = ctr(&["task", "kill", "-s", "SIGKILL", id]);
        let o = ctr(&["task", "rm", "-f", id]);
        if !o.status.success() {
            eprintln!("task rm {id}: {}", String::from_utf8_lossy(&o.stderr));
            counts.processes += 1;
        }
    }
    let _ = ctr(&["container", "rm", id]);
}

/// A pod that should have come through untouched: its pause and long container run with
/// the PIDs they had, and it still takes an exec.
fn check_survivor(cri: &mut Cri, pod: &Pod, counts: &mut Counts) {
    let ready = cri
        .pod_status(&pod.id)
        .ok()
        .and_then(|s| s.status)
        .is_some_and(|s| s.state == PodSandboxState::SandboxReady as i32);
    if !ready || cri.pod_pid(&pod.id).ok() != Some(pod.pause) {
        eprintln!("pod {} lost its sandbox", pod.id);
        counts.lost += 1;
    }
    let running = cri.container_state(&pod.long).ok() == Some(ContainerState::ContainerRunning);
    if !running || cri.container_pid(&pod.long).ok() != Some(pod.long_pid) {
        eprintln!("pod {}: container {} lost", pod.id, pod.long);
        counts.lost += 1;
    } else if cri
        .exec_sync(&pod.long, &["true"], Duration::from_secs(10))
        .map(|r| r.0)
        != Ok(0)
    {
        eprintln!("pod {}: exec in {} failed", pod.id, pod.long);
        counts.lost += 1;
    }
}

/// The pods and containers containerd's CRI reports alive: ready sandboxes and running
/// containers.
fn live_ids(cri: &mut Cri) -> HashSet<String> {
    let mut live = HashSet::new();
    for pod in cri.list_pods().expect("ListPodSandbox") {
        if pod.state == PodSandboxState::SandboxReady as i32 {
            for c in cri.list_containers_of(&pod.id).expect("ListContainers") {
                if c.state == ContainerState::ContainerRunning as i32 {
                    live.insert(c.id);
                }
            }
            live.insert(pod.id);
        }
    }
    live
}
