//! A private containerd of a test's own (own root, state and socket under `run`/`dir`),
//! for tests that kill it: started and stopped through hack/containerd.sh.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use super::wait_until;

pub const SHIM: &str = env!("CARGO_BIN_EXE_containerd-shim-youki-v2");

pub struct Private {
    pub run: PathBuf,
    pub dir: PathBuf,
    /// ctr containers to remove when dropped.
    pub containers: Vec<String>,
    /// containerd's log level (its shims get -debug at "debug").
    pub log_level: &'static str,
    /// More variables for hack/containerd.sh (e.g. CONTAINERD_CONFIG, SHIM_DIR, PRELOAD).
    pub env: Vec<(String, String)>,
}

impl Private {
    /// Paths named after `tag` and this test process.
    pub fn new(tag: &str) -> Private {
        let n = std::process::id();
        Private {
            run: PathBuf::from(format!("/run/youki-{tag}-{n}")),
            dir: PathBuf::from(format!("/var/lib/youki-{tag}-{n}")),
            containers: Vec::new(),
            log_level: "info",
            env: Vec::new(),
        }
    }

    /// hack/containerd.sh ACTION for this containerd: `bash <path> ACTION`.
    pub fn script_cmd(action: &str) -> String {
        let top = Path::new(env!("CARGO_MANIFEST_DIR"));
        format!("bash {} {action}", top.join("hack/containerd.sh").display())
    }

    /// The environment hack/containerd.sh needs to act on this containerd.
    pub fn script_env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("YOUKI_TEST_RUN".into(), self.run.display().to_string()),
            ("YOUKI_TEST_DIR".into(), self.dir.display().to_string()),
            (
                "SHIM_DIR".into(),
                Path::new(SHIM).parent().unwrap().display().to_string(),
            ),
            ("CONTAINERD_LOG_LEVEL".into(), self.log_level.into()),
        ];
        env.extend(self.env.iter().cloned());
        env
    }

    fn script(&self, action: &str) -> Output {
        Command::new("sh")
            .args(["-c", &Self::script_cmd(action)])
            .envs(self.script_env())
            .stdin(Stdio::null())
            .output()
            .expect("hack/containerd.sh")
    }

    pub fn start(&self) {
        let o = self.script("start");
        assert!(
            o.status.success(),
            "start containerd: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    pub fn sock(&self) -> String {
        self.run
            .join("containerd.sock")
            .to_string_lossy()
            .into_owned()
    }

    /// containerd's state dir (bundles live under it).
    pub fn state(&self) -> PathBuf {
        self.run.join("state")
    }

    pub fn ctr(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("--address")
            .arg(self.sock())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("ctr")
    }

    pub fn task(&self, id: &str) -> Option<(i32, String)> {
        let out = String::from_utf8_lossy(&self.ctr(&["task", "ls"]).stdout).into_owned();
        out.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&id)).then(|| (f[1].parse().unwrap_or(0), f[2].to_string()))
        })
    }

    pub fn pid(&self) -> i32 {
        std::fs::read_to_string(self.run.join("containerd.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// The ttrpc address of the shim serving ctr container `id` (its bundle's `address`).
    pub fn shim_address(&self, id: &str) -> String {
        let bundle = self
            .state()
            .join("io.containerd.runtime.v2.task/default")
            .join(id);
        std::fs::read_to_string(bundle.join("address")).expect("bundle address file")
    }

    pub fn kill9(&self) {
        let pid = self.pid();
        // SAFETY: the containerd this test started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        wait_until(Duration::from_secs(10), || process_gone(pid));
    }
}

impl Drop for Private {
    fn drop(&mut self) {
        // Even when an assertion failed: remove what the test made through containerd
        // first, so no shim, container or rootfs mount outlives it.
        for id in &self.containers {
            let _ = self.ctr(&["task", "kill", "-s", "SIGKILL", id]);
            wait_until(Duration::from_secs(10), || {
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
pub fn process_gone(pid: i32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
        || std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .contains("zombie")
}

/// `ctr events` on a private containerd, collected from the moment it is subscribed.
pub struct Events {
    child: std::process::Child,
    text: std::sync::Arc<std::sync::Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Events {
    /// Subscribes, and returns once the subscription is live: a namespace created as a probe
    /// shows up in the stream (so no event after this call can be missed).
    pub fn subscribe(p: &Private) -> Events {
        use std::io::BufRead;
        let mut child = Command::new("ctr")
            .arg("--address")
            .arg(p.sock())
            .arg("events")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("ctr events");
        let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let stdout = child.stdout.take().expect("piped stdout");
        let sink = text.clone();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let mut t = sink.lock().unwrap();
                t.push_str(&line);
                t.push('\n');
            }
        });
        let events = Events {
            child,
            text,
            reader: Some(reader),
        };
        let probe = format!("events-probe-{}", std::process::id());
        let live = wait_until(Duration::from_secs(10), || {
            let _ = p.ctr(&["namespaces", "create", &probe]);
            let _ = p.ctr(&["namespaces", "rm", &probe]);
            events.text().contains(&probe)
        });
        assert!(live, "ctr events never saw the probe namespace {probe}");
        events
    }

    pub fn text(&self) -> String {
        self.text.lock().unwrap().clone()
    }

    /// Stops listening; returns everything seen.
    pub fn finish(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        self.text()
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The /tasks/exit events in `ctr events` output, as (container_id, exec id, pid).
pub fn task_exits(text: &str) -> Vec<(String, String, u64)> {
    text.lines()
        .filter(|l| l.split_whitespace().any(|w| w == "/tasks/exit"))
        .filter_map(|l| {
            let json = &l[l.find('{')?..];
            let v: serde_json::Value = serde_json::from_str(json).ok()?;
            Some((
                v["container_id"].as_str()?.to_string(),
                v["id"].as_str()?.to_string(),
                v["pid"].as_u64()?,
            ))
        })
        .collect()
}
