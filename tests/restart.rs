//! containerd restarts (kill -9) while a container runs: the container keeps running with the
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
        wait_for(Duration::from_secs(10), || !Path::new(&format!(
            "/proc/{pid}"
        ))
        .exists()
            || std::fs::read_to_string(format!("/proc/{pid}/status"))
                .unwrap_or_default()
                .contains("zombie")),
        "container process {pid} left"
    );
}
