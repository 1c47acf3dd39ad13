//! containerd restarts (kill -9) while a container runs (and, on a private containerd at
//! debug level, the shim's debug log stays out of container output): the container keeps running with the
//! same PID, and containerd reconnects to the shim and controls it afterwards. Uses its own
//! private containerd (not the shared one), since it kills it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const SHIM: &str = env!("CARGO_BIN_EXE_containerd-shim-youki-v2");

struct Private {
    run: PathBuf,
    dir: PathBuf,
    container: Option<String>,
    /// containerd's log level (its shims get -debug at "debug").
    log_level: &'static str,
}

impl Private {
    fn script(&self, action: &str) -> Output {
        let top = Path::new(env!("CARGO_MANIFEST_DIR"));
        Command::new("bash")
            .arg(top.join("hack/containerd.sh"))
            .arg(action)
            .env("YOUKI_TEST_RUN", &self.run)
            .env("YOUKI_TEST_DIR", &self.dir)
            .env("SHIM_DIR", Path::new(SHIM).parent().unwrap())
            .env("CONTAINERD_LOG_LEVEL", self.log_level)
            .stdin(Stdio::null())
            .output()
            .expect("hack/containerd.sh")
    }

    fn start(&self) {
        let o = self.script("start");
        assert!(
            o.status.success(),
            "start containerd: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    fn sock(&self) -> String {
        self.run
            .join("containerd.sock")
            .to_string_lossy()
            .into_owned()
    }

    fn ctr(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("--address")
            .arg(self.sock())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("ctr")
    }

    fn task(&self, id: &str) -> Option<(i32, String)> {
        let out = String::from_utf8_lossy(&self.ctr(&["task", "ls"]).stdout).into_owned();
        out.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&id)).then(|| (f[1].parse().unwrap_or(0), f[2].to_string()))
        })
    }

    fn kill9(&self) {
        let pid: i32 = std::fs::read_to_string(self.run.join("containerd.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // SAFETY: the containerd this test started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        while Path::new(&format!("/proc/{pid}/status")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/status"))
                .unwrap_or_default()
                .contains("zombie")
        {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Private {
    fn drop(&mut self) {
        // Even when an assertion failed: remove what the test made through containerd
        // first, so no shim, container or rootfs mount outlives it.
        if let Some(id) = &self.container {
            let _ = self.ctr(&["task", "kill", "-s", "SIGKILL", id]);
            wait_for(Duration::from_secs(10), || {
                self.task(id).map(|t| t.1) != Some("RUNNING".into())
            });
            let _ = self.ctr(&["task", "rm", "-f", id]);
            let _ = self.ctr(&["container", "rm", id]);
        }
        let _ = self.script("stop");
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(&self.run);
    }
}

/// Gone, or a zombie waiting for its parent (no longer running).
fn process_gone(pid: i32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
        || std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .contains("zombie")
}

fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn container_survives_containerd_kill_and_restart() {
    let id = format!("survivor-{}", std::process::id());
    let p = Private {
        run: PathBuf::from(format!("/run/youki-restart-{}", std::process::id())),
        dir: PathBuf::from(format!("/var/lib/youki-restart-{}", std::process::id())),
        container: Some(id.clone()),
        log_level: "info",
    };
    p.start();
    let id = id.as_str();
    let o = p.ctr(&[
        "run",
        "-d",
        "--runtime",
        "io.containerd.youki.v2",
        "localhost/youki/busybox:latest",
        id,
        "sleep",
        "1000",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (pid, status) = p.task(id).expect("task listed");
    assert_eq!(status, "RUNNING");

    p.kill9();
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "container died with containerd"
    );
    p.start();
    assert_eq!(
        p.task(id),
        Some((pid, "RUNNING".to_string())),
        "same task, same PID after restart"
    );

    let o = p.ctr(&["task", "kill", "-s", "SIGKILL", id]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        wait_for(Duration::from_secs(10), || p.task(id).map(|t| t.1)
            == Some("STOPPED".into())),
        "kill after restart did not stop the task"
    );
    assert!(p.ctr(&["task", "rm", id]).status.success());
    assert!(p.ctr(&["container", "rm", id]).status.success());
    assert!(
        wait_for(Duration::from_secs(10), || process_gone(pid)),
        "container process {pid} left"
    );
}

#[path = "common/kubelet.rs"]
mod kubelet;

/// A pod keeps running through containerd's kill -9 and restart; a container that exits
/// while containerd is down reports its true exit code afterwards; exec, stop and remove
/// work on the restarted containerd, and nothing of the pod remains.
#[test]
fn pod_survives_containerd_kill_and_reports_exits_from_the_downtime() {
    use k8s_cri::v1::ContainerState;
    use kubelet::{Cri, PodGuard, PodSpec};

    let n = std::process::id();
    let p = Private {
        run: PathBuf::from(format!("/run/youki-restart-pod-{n}")),
        dir: PathBuf::from(format!("/var/lib/youki-restart-pod-{n}")),
        container: None,
        log_level: "info",
    };
    p.start();
    let sock = PathBuf::from(p.sock());
    let mut cri = Cri::connect(&sock);
    let spec = PodSpec::new("restart");
    let pod = cri.run_pod(&spec).expect("RunPodSandbox");
    // Declared after `p`, so dropped before it: a failed assertion still tears the pod
    // down through the private containerd before that containerd stops.
    let guard = PodGuard {
        id: pod.clone(),
        log_directory: spec.log_directory.clone(),
        socket: sock.clone(),
    };
    let long = cri
        .run_container(&pod, &spec, "long", &["sleep", "3600"])
        .expect("long");
    let short = cri
        .run_container(&pod, &spec, "short", &["sh", "-c", "sleep 2; exit 7"])
        .expect("short");
    let pause_pid = cri.pod_pid(&pod).unwrap();
    let long_pid = cri.container_pid(&long).unwrap();

    p.kill9();
    drop(cri);
    // `short` exits while containerd is down.
    std::thread::sleep(Duration::from_secs(3));
    p.start();
    // The restarted containerd's CRI may need a moment to load its containers.
    let mut cri = Cri::connect(&sock);
    assert!(wait_for(Duration::from_secs(20), || {
        cri.container_state(&short).ok() == Some(ContainerState::ContainerExited)
    }));
    let st = cri.container_status(&short).unwrap().status.unwrap();
    assert_eq!(st.exit_code, 7, "the exit from the downtime");
    assert_eq!(
        cri.container_state(&long).unwrap(),
        ContainerState::ContainerRunning
    );
    assert_eq!(cri.container_pid(&long).unwrap(), long_pid, "same process");
    assert_eq!(cri.pod_pid(&pod).unwrap(), pause_pid);
    let (code, out, _) = cri
        .exec_sync(&long, &["sh", "-c", "echo alive"], Duration::from_secs(10))
        .expect("ExecSync after restart");
    assert_eq!((code, out.as_str()), (0, "alive\n"));

    cri.teardown(&pod).expect("teardown after restart");
    std::mem::forget(guard);
    for pid in [pause_pid, long_pid] {
        assert!(
            wait_for(Duration::from_secs(10), || process_gone(pid)),
            "process {pid} of the pod left"
        );
    }
    let shims = Command::new("pgrep")
        .args(["-f", &format!("containerd-shim-youki-v2 .*-id {pod}")])
        .output()
        .expect("pgrep");
    assert!(
        String::from_utf8_lossy(&shims.stdout).trim().is_empty(),
        "pod shim left: {}",
        String::from_utf8_lossy(&shims.stdout)
    );
    spec.remove_leftover_dirs();
}

/// With containerd at debug level the shim logs at debug too; none of it (libcontainer's
/// traces from the container's init included) may reach the container's own output.
#[test]
fn debug_logging_stays_out_of_container_output() {
    let n = std::process::id();
    let id = format!("quiet-{n}");
    let p = Private {
        run: PathBuf::from(format!("/run/youki-debug-{n}")),
        dir: PathBuf::from(format!("/var/lib/youki-debug-{n}")),
        container: Some(id.clone()),
        log_level: "debug",
    };
    p.start();
    let o = p.ctr(&[
        "run",
        "--rm",
        "--runtime",
        "io.containerd.youki.v2",
        "localhost/youki/busybox:latest",
        &id,
        "sh",
        "-c",
        "echo out; echo err >&2",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&o.stderr), "err\n");
    // Debug logging was on: the shim's own timings reached containerd's log.
    let log = std::fs::read_to_string(p.dir.join("containerd.log")).unwrap_or_default();
    assert!(
        log.lines()
            .any(|l| l.contains(&format!("create {id} took"))),
        "no debug lines from the shim in containerd's log"
    );
}
