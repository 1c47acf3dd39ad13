//! What is left once containerd is done with a shim (issue 12): a pod whose shim was
//! SIGKILLed and which is then stopped and removed through CRI; the shim's socket right
//! after a task's Delete; and the bundle directory, which is containerd's (the same ID run
//! again and again with the runtime given as the shim's absolute path). Runs against the
//! shared private containerd of `hack/test.sh`, whatever its version (1.6, 1.7, 2.1).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::kubelet::*;
use common::{NS, ctr, ctr_ok, identity, proc_alive, shim_pids, unique, wait_until};
use containerd_shim_protos::api::{CreateTaskRequest, StartRequest};
use containerd_shim_protos::shim::shim_ttrpc::TaskClient;
use containerd_shim_protos::types::mount::Mount as ProtoMount;

const K8S_NS: &str = "k8s.io";
const SLEEP: &[&str] = &["sleep", "3600"];

/// containerd's bundle directory of task `id` in `namespace`.
fn bundle(namespace: &str, id: &str) -> PathBuf {
    common::containerd_state()
        .join("io.containerd.runtime.v2.task")
        .join(namespace)
        .join(id)
}

/// The socket the bundle's `address` file names (our `start` writes it, wherever the
/// socket dir is).
fn shim_socket(namespace: &str, id: &str) -> PathBuf {
    let addr = std::fs::read_to_string(bundle(namespace, id).join("address"))
        .unwrap_or_else(|e| panic!("address file of {id}: {e}"));
    PathBuf::from(addr.trim().trim_start_matches("unix://"))
}

/// Everything of a pod that could outlive it, recorded while it runs.
struct PodRecord {
    ids: Vec<String>,
    processes: Vec<(i32, String)>,
    cgroup_parent: String,
    socket: PathBuf,
}

impl PodRecord {
    fn take(cri: &mut Cri, spec: &PodSpec, pod: &str, containers: &[String]) -> PodRecord {
        let mut processes = vec![identity(cri.pod_pid(pod).expect("pause pid"))];
        for c in containers {
            processes.push(identity(cri.container_pid(c).expect("container pid")));
        }
        PodRecord {
            ids: std::iter::once(pod.to_string())
                .chain(containers.iter().cloned())
                .collect(),
            processes,
            cgroup_parent: spec.cgroup_parent.trim_start_matches('/').to_string(),
            socket: shim_socket(K8S_NS, pod),
        }
    }

    fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        for id in &self.ids {
            for p in shim_pids(id) {
                left.push(format!("shim process {p} (-id {id})"));
            }
        }
        for (pid, start) in &self.processes {
            if proc_alive(*pid) && identity(*pid).1 == *start {
                left.push(format!("process {pid}"));
            }
        }
        for ctrl in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            for id in &self.ids {
                let dir = ctrl.path().join(&self.cgroup_parent).join(id);
                if dir.exists() {
                    left.push(format!("cgroup {}", dir.display()));
                }
            }
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for line in mounts.lines() {
            if self.ids.iter().any(|id| line.contains(id.as_str())) {
                left.push(format!("mount {line}"));
            }
        }
        if self.socket.exists() {
            left.push(format!("socket {}", self.socket.display()));
        }
        for id in &self.ids {
            let state = Path::new("/run/containerd/youki").join(K8S_NS).join(id);
            if state.exists() {
                left.push(format!("state {}", state.display()));
            }
        }
        left
    }
}

/// Issue 12 (3): the pod's shim is SIGKILLed; after a few seconds kubelet stops and removes
/// the sandbox. containerd 1.6 runs `delete` for every task of the dead shim, 2.x only for
/// the one it started the shim for (the sandbox), whatever else that shim served: nothing
/// of the pod may be left either way — no process, cgroup, mount, socket or state dir.
#[test]
fn killed_shim_then_pod_removal_leaves_nothing() {
    let mut cri = Cri::connect(&cri_socket());
    let spec = PodSpec::new("cleanup-kill");
    let pod = cri.run_pod(&spec).expect("RunPodSandbox");
    let guard = PodGuard::new(&pod, &spec, &cri_socket());
    let app = cri
        .run_container(&pod, &spec, "app", SLEEP)
        .expect("app container");
    let record = PodRecord::take(&mut cri, &spec, &pod, std::slice::from_ref(&app));
    let daemons = shim_pids(&pod);
    assert!(!daemons.is_empty(), "no shim daemon for pod {pod}");
    for d in &daemons {
        // SAFETY: kill takes plain integers; these are the shim processes of the test's pod.
        unsafe { libc::kill(*d, libc::SIGKILL) };
    }
    std::thread::sleep(Duration::from_secs(5));
    cri.stop_pod(&pod).expect("StopPodSandbox");
    cri.remove_pod(&pod).expect("RemovePodSandbox");
    wait_until(Duration::from_secs(10), || record.leftovers().is_empty());
    let left = record.leftovers();
    // Clean up before asserting, so a failure leaves the machine as it found it.
    drop(guard);
    assert!(left.is_empty(), "left behind by pod {pod}: {left:#?}");
}

/// Issue 12 (3), as containerd 2.x drives a shim that answered bootstrap version 3: it
/// dials the pod's shim for the sandbox's siblings itself (no `start`, no `address` file),
/// and after the shim dies runs `delete` only for the task it started the shim for. The
/// sibling here is created straight over the shim's ttrpc socket, so containerd knows only
/// the first task, whatever its version: its one `delete` must take the whole pod.
#[test]
fn dead_shim_delete_for_the_sandbox_removes_its_siblings() {
    let pod = unique("v3pod");
    let sib = unique("v3sib");
    let _pod_guard = common::RemoveOnDrop(pod.clone());
    common::run_detached(&pod, &["sleep", "3600"]);
    let dir = std::env::temp_dir().join(&sib);
    let sibling = Sibling {
        id: sib.clone(),
        dir: dir.clone(),
    };
    std::fs::create_dir_all(dir.join("rootfs")).unwrap();
    let mut spec: serde_json::Value =
        serde_json::from_str(&ctr_ok(&["oci", "spec"])).expect("ctr oci spec");
    spec["process"]["args"] = serde_json::json!(["sleep", "3600"]);
    spec["process"]["env"] = serde_json::json!(["PATH=/bin:/sbin:/usr/bin:/usr/sbin"]);
    spec["root"] = serde_json::json!({"path": "rootfs"});
    spec["annotations"] = serde_json::json!({"io.containerd.runc.v2.group": pod});
    spec["linux"]["cgroupsPath"] = serde_json::json!(format!("/{NS}/{sib}"));
    std::fs::write(dir.join("config.json"), spec.to_string()).unwrap();

    // The sibling joins the pod's shim, with the sandbox's image as its rootfs (bound).
    let socket = shim_socket(NS, &pod);
    let client = TaskClient::new(
        ttrpc::Client::connect(&format!("unix://{}", socket.display())).expect("dial pod shim"),
    );
    let ctx = || ttrpc::context::with_timeout(Duration::from_secs(10).as_nanos() as i64);
    let mut rootfs = ProtoMount::new();
    rootfs.type_ = "bind".into();
    rootfs.source = bundle(NS, &pod)
        .join("rootfs")
        .to_string_lossy()
        .into_owned();
    rootfs.options = vec!["rbind".into(), "rw".into()];
    let mut create = CreateTaskRequest::new();
    create.id = sib.clone();
    create.bundle = dir.to_string_lossy().into_owned();
    create.rootfs = vec![rootfs];
    let pid = client.create(ctx(), &create).expect("create sibling").pid as i32;
    let mut start = StartRequest::new();
    start.id = sib.clone();
    client.start(ctx(), &start).expect("start sibling");
    drop(client);
    let sib_process = identity(pid);
    assert!(proc_alive(pid));

    for p in shim_pids(&pod) {
        // SAFETY: kill takes plain integers; these are the shim processes of the test's pod.
        unsafe { libc::kill(p, libc::SIGKILL) };
    }
    // containerd runs `delete` for the task it knows; the sibling must go with it.
    assert!(
        wait_until(Duration::from_secs(20), || common::task_status(&pod)
            != "RUNNING"),
        "containerd never noticed the dead shim of {pod}"
    );
    wait_until(Duration::from_secs(10), || {
        sibling.leftovers(&sib_process).is_empty()
    });
    let left = sibling.leftovers(&sib_process);
    assert!(
        left.is_empty(),
        "left of {sib} after its pod's shim died: {left:#?}"
    );
}

/// A container made behind containerd's back; removed by our `delete` if a test fails.
struct Sibling {
    id: String,
    dir: PathBuf,
}

impl Sibling {
    fn leftovers(&self, init: &(i32, String)) -> Vec<String> {
        let mut left = Vec::new();
        if proc_alive(init.0) && identity(init.0).1 == init.1 {
            left.push(format!("process {}", init.0));
        }
        for c in common::cgroup_dirs(&self.id) {
            left.push(format!("cgroup {}", c.display()));
        }
        let state = Path::new("/run/containerd/youki").join(NS).join(&self.id);
        if state.exists() {
            left.push(format!("state {}", state.display()));
        }
        let rootfs = self.dir.join("rootfs").to_string_lossy().into_owned();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for line in mounts.lines().filter(|l| l.contains(&rootfs)) {
            left.push(format!("mount {line}"));
        }
        left
    }
}

impl Drop for Sibling {
    fn drop(&mut self) {
        let bundle = self.dir.to_string_lossy().into_owned();
        let _ = std::process::Command::new(common::private::SHIM)
            .args([
                "-namespace",
                NS,
                "-id",
                &self.id,
                "-bundle",
                &bundle,
                "delete",
            ])
            .stdin(std::process::Stdio::null())
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Issue 12 (6a), containerd's TestShimDoesNotLeakSockets: once a task's Delete has
/// returned, the shim's socket is gone (the shim unlinks it before answering Shutdown).
#[test]
fn no_shim_socket_right_after_delete() {
    for round in 0..5 {
        let id = unique("sock");
        let _guard = common::RemoveOnDrop(id.clone());
        common::run_detached(&id, &["sleep", "30"]);
        let socket = shim_socket(NS, &id);
        assert!(
            socket.exists(),
            "{} not there while {id} runs",
            socket.display()
        );
        ctr_ok(&["task", "kill", "-s", "SIGKILL", &id]);
        assert!(
            wait_until(Duration::from_secs(10), || common::task_status(&id)
                == "STOPPED"),
            "{id} not stopped"
        );
        ctr_ok(&["task", "rm", &id]);
        let left = socket.exists();
        ctr_ok(&["container", "rm", &id]);
        assert!(
            !left,
            "round {round}: shim socket {} still there after `ctr task rm {id}` returned",
            socket.display()
        );
    }
}

/// Issue 12 (6b): the bundle directory is containerd's. The same ID run ten times in a
/// row, with the runtime given as the shim's absolute path, must start every time: an
/// exiting shim whose cwd was the bundle, or a `delete` that removes things in it, must
/// not break the bundle containerd re-creates for the next run.
#[test]
fn same_id_by_absolute_runtime_path_ten_times() {
    // The binary cargo built for this test run: an absolute path.
    let shim = common::private::SHIM;
    let id = unique("abs");
    let _guard = common::RemoveOnDrop(id.clone());
    let mut failures = Vec::new();
    for round in 0..10 {
        let o = ctr(&[
            "run",
            "--rm",
            "--runtime",
            shim,
            common::BUSYBOX,
            &id,
            "echo",
            "hello",
        ]);
        let out = String::from_utf8_lossy(&o.stdout);
        if !o.status.success() || out.trim() != "hello" {
            failures.push(format!(
                "round {round}: {} stdout {out:?} stderr {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            ));
            // Whatever a failed run left, the next one starts clean.
            common::remove(&id);
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Issue 12 (6b): a shim daemon does not keep containerd's bundle as its working directory
/// (containerd removes the bundle after Delete, and may make it again for the same ID while
/// the old daemon is still on its way out; libcontainer asks for the cwd in Create).
#[test]
fn shim_daemon_does_not_live_in_the_bundle() {
    let id = unique("cwd");
    let _guard = common::RemoveOnDrop(id.clone());
    common::run_detached(&id, &["sleep", "30"]);
    let shims = shim_pids(&id);
    assert!(!shims.is_empty(), "no shim for {id}");
    for p in shims {
        let cwd = std::fs::read_link(format!("/proc/{p}/cwd")).unwrap_or_default();
        assert_eq!(
            cwd,
            Path::new("/"),
            "shim {p} of {id} works in {}",
            cwd.display()
        );
    }
}

/// Issue 12 (6b): `delete` without a bundle, or with a relative one, touches nothing in the
/// directory it runs in (the bundle is containerd's: a rootfs mounted there is not ours).
#[test]
fn delete_without_an_absolute_bundle_leaves_the_cwd_alone() {
    let id = unique("nobundle");
    let dir = std::env::temp_dir().join(&id);
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    let mounted = || {
        let line = format!(" {} ", rootfs.display());
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains(&line))
    };
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(&rootfs)
        .status()
        .expect("mount");
    assert!(status.success());
    let delete = |extra: &[&str]| {
        std::process::Command::new(common::private::SHIM)
            .args(["-namespace", NS, "-id", &id])
            .args(extra)
            .arg("delete")
            .current_dir(&dir)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run delete")
    };
    let no_bundle = delete(&[]);
    let relative = delete(&["-bundle", "."]);
    let was_mounted = mounted();
    let _ = std::process::Command::new("umount").arg(&rootfs).status();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        no_bundle.status.success(),
        "delete without -bundle: {}",
        String::from_utf8_lossy(&no_bundle.stderr)
    );
    let err = String::from_utf8_lossy(&relative.stderr);
    assert!(
        !relative.status.success() && err.contains("\".\""),
        "delete -bundle . must be refused, naming it: {err}"
    );
    assert!(
        was_mounted,
        "delete unmounted {} in its cwd",
        rootfs.display()
    );
}

/// Issue 12 (6a/6b), without containerd: once Shutdown has answered, the daemon's socket is
/// gone, so a `start` for the same group right after spawns a new daemon instead of
/// joining the one on its way out (whose connection would drop under containerd's feet:
/// "failed to write bootstrap.json", "failed to get cwd").
#[test]
fn start_right_after_shutdown_gets_a_new_daemon() {
    use containerd_shim_protos::api::{ConnectRequest, ShutdownRequest};
    const HS_NS: &str = "cleanup-hs";
    let id = unique("again");
    let dir = std::env::temp_dir().join(&id);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), r#"{"ociVersion":"1.0.2"}"#).unwrap();
    let _daemons = HsDaemons(HS_NS, id.clone(), dir.clone());
    let address = format!("/run/cleanup-hs-{}/containerd.sock", std::process::id());
    let start = || {
        let o = std::process::Command::new(common::private::SHIM)
            .args([
                "-namespace",
                HS_NS,
                "-address",
                &address,
                "-id",
                &id,
                "start",
            ])
            .current_dir(&dir)
            .env_remove("TTRPC_ADDRESS")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run start");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    let ctx = || ttrpc::context::with_timeout(Duration::from_secs(5).as_nanos() as i64);
    let connect = |addr: &str| -> Result<u32, String> {
        let c = ttrpc::Client::connect(addr).map_err(|e| e.to_string())?;
        TaskClient::new(c)
            .connect(ctx(), &ConnectRequest::new())
            .map(|r| r.shim_pid)
            .map_err(|e| e.to_string())
    };
    let addr = start();
    let socket = PathBuf::from(addr.trim_start_matches("unix://"));
    let first = connect(&addr).expect("first daemon answers");
    let client = TaskClient::new(ttrpc::Client::connect(&addr).unwrap());
    client
        .shutdown(ctx(), &ShutdownRequest::new())
        .expect("shutdown");
    let socket_left = socket.exists();
    let again = start();
    assert_eq!(again, addr, "same group, same socket name");
    let second = connect(&again);
    let new_daemon = matches!(second, Ok(p) if p != first);
    assert!(
        !socket_left && new_daemon,
        "socket {} still there when Shutdown answered: {socket_left}; after the second \
         start its address answered {second:?} (the exiting daemon was {first})",
        socket.display()
    );
    let c = TaskClient::new(ttrpc::Client::connect(&again).unwrap());
    c.shutdown(ctx(), &ShutdownRequest::new())
        .expect("shutdown");
}

/// Kills, when dropped, any serving daemon of (namespace, id) a test started without
/// containerd, and removes its socket and the test's bundle directory.
struct HsDaemons(&'static str, String, PathBuf);

impl Drop for HsDaemons {
    fn drop(&mut self) {
        // Give a daemon that was shut down its moment to exit.
        std::thread::sleep(Duration::from_millis(300));
        let ours = containerd_shim_youki_v2::ops::inventory::scan_shims(Path::new("/proc"))
            .into_iter()
            .filter(|s| s.namespace == self.0 && s.id == self.1);
        for s in ours {
            // SAFETY: kill(2) of a daemon this test started (its namespace and ID).
            unsafe { libc::kill(s.pid, libc::SIGKILL) };
            let _ = std::fs::remove_file(&s.socket);
        }
        let _ = std::fs::remove_dir_all(&self.2);
    }
}
