//! Asking the node's containerd: its version, whether a config loads (`config dump`),
//! what runs under our runtime, importing and pinning the pause image, a trial container,
//! and restarting it. Through containerd's own tools (containerd, ctr) so that we ask the
//! very binary that will read the file.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::InstallError;
use super::config::{PAUSE_IMAGE, RUNTIME_TYPE};

/// CRI's namespace: the pause image must be there for kubelet's pods.
pub const K8S_NS: &str = "k8s.io";
/// The label containerd's CRI puts on images its GC must keep.
pub const PINNED: &str = "io.cri-containerd.pinned=pinned";

pub struct Containerd {
    pub bin: PathBuf,
    pub ctr: PathBuf,
    pub address: String,
}

fn run(cmd: &mut Command, what: &str) -> Result<String, InstallError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| InstallError::Containerd(format!("{what}: cannot run {cmd:?}: {e}")))?;
    if !out.status.success() {
        return Err(InstallError::Containerd(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `containerd --version` prints e.g. `containerd github.com/containerd/containerd v1.7.24 …`
/// or Debian's `containerd github.com/containerd/containerd 1.6.20~ds1 …`: the third field.
pub fn parse_version(out: &str) -> Option<(u32, u32, String)> {
    let v = out.split_whitespace().nth(2)?;
    let v = v.strip_prefix('v').unwrap_or(v);
    let mut parts = v.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor, v.to_string()))
}

impl Containerd {
    /// `bin` is containerd; its ctr is the one next to it, else the one on PATH.
    pub fn new(bin: PathBuf, address: String) -> Self {
        let near = bin.parent().map(|d| d.join("ctr"));
        let ctr = near
            .filter(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from("ctr"));
        Containerd { bin, ctr, address }
    }

    pub fn version(&self) -> Result<(u32, u32, String), InstallError> {
        let out = run(
            Command::new(&self.bin).arg("--version"),
            "containerd --version",
        )?;
        parse_version(&out).ok_or_else(|| {
            InstallError::Containerd(format!(
                "cannot read a version in `{} --version`: {:?}",
                self.bin.display(),
                out.trim()
            ))
        })
    }

    /// Loads `config` the way containerd will (`containerd --config FILE config dump`).
    pub fn check_config(&self, config: &Path) -> Result<(), InstallError> {
        run(
            Command::new(&self.bin)
                .arg("--config")
                .arg(config)
                .args(["config", "dump"]),
            "containerd config dump of the merged file",
        )
        .map(|_| ())
    }

    fn ctr(&self, ns: &str) -> Command {
        let mut c = Command::new(&self.ctr);
        c.args(["--address", &self.address, "-n", ns]);
        c
    }

    /// An error naming the address unless containerd answers there.
    pub fn check_running(&self) -> Result<(), InstallError> {
        let path = self.address.strip_prefix("unix://").unwrap_or(&self.address);
        if std::os::unix::net::UnixStream::connect(path).is_err() {
            return Err(InstallError::Containerd(format!(
                "containerd is not running at {path} (nothing answers there): start it, or name \
                 its socket with --containerd-address"
            )));
        }
        run(self.ctr(K8S_NS).arg("version"), "ctr version").map(|_| ())
    }

    /// Waits for containerd to answer again after a restart.
    pub fn wait_running(&self, timeout: Duration) -> Result<(), InstallError> {
        let t = Instant::now();
        loop {
            match self.check_running() {
                Ok(()) => return Ok(()),
                Err(e) if t.elapsed() > timeout => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// Every (namespace, container) whose runtime is ours, whatever its handler name.
    pub fn containers_with_our_runtime(&self) -> Result<Vec<(String, String)>, InstallError> {
        Ok(self
            .containers()?
            .into_iter()
            .filter(|c| c.runtime == RUNTIME_TYPE)
            .map(|c| (c.namespace, c.id))
            .collect())
    }

    /// Every container of every namespace: `ctr containers ls` prints ID, IMAGE, RUNTIME.
    pub fn containers(&self) -> Result<Vec<Row>, InstallError> {
        let namespaces = run(self.ctr(K8S_NS).args(["namespaces", "ls", "-q"]), "ctr namespaces ls")?;
        let mut rows = Vec::new();
        for ns in namespaces.lines().map(str::trim).filter(|n| !n.is_empty()) {
            let out = run(self.ctr(ns).args(["containers", "ls"]), "ctr containers ls")?;
            for line in out.lines().skip(1) {
                let f: Vec<&str> = line.split_whitespace().collect();
                if let [id, image, runtime, ..] = f[..] {
                    rows.push(Row {
                        namespace: ns.to_string(),
                        id: id.to_string(),
                        image: image.to_string(),
                        runtime: runtime.to_string(),
                    });
                }
            }
        }
        Ok(rows)
    }

    /// The pause image's manifest digest and whether it is pinned, if it is there.
    pub fn pause_image(&self) -> Result<Option<(String, bool)>, InstallError> {
        let out = run(
            self.ctr(K8S_NS)
                .args(["images", "ls", &format!("name=={PAUSE_IMAGE}")]),
            "ctr images ls",
        )?;
        Ok(out.lines().skip(1).find_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.first() == Some(&PAUSE_IMAGE)).then(|| {
                let digest = f.get(2).map_or(String::new(), |d| d.to_string());
                (digest, line.contains(PINNED))
            })
        }))
    }

    /// Imports the archive at `path` into k8s.io and pins it.
    pub fn import_pause(&self, path: &Path) -> Result<(), InstallError> {
        run(
            self.ctr(K8S_NS).args(["images", "import"]).arg(path),
            "ctr images import (pause)",
        )?;
        run(
            self.ctr(K8S_NS)
                .args(["images", "label", PAUSE_IMAGE, PINNED]),
            "ctr images label (pin pause)",
        )
        .map(|_| ())
    }

    pub fn remove_pause(&self) -> Result<(), InstallError> {
        run(
            self.ctr(K8S_NS).args(["images", "rm", PAUSE_IMAGE]),
            "ctr images rm (pause)",
        )
        .map(|_| ())
    }

    /// A trial container through our runtime: the pause image, started, seen running,
    /// removed. Proves containerd finds the shim and the shim runs containers.
    pub fn trial_run(&self) -> Result<(), InstallError> {
        let id = format!("youki-install-check-{}", std::process::id());
        let started = run(
            self.ctr(K8S_NS)
                .args(["run", "-d", "--runtime", RUNTIME_TYPE, PAUSE_IMAGE, &id]),
            "trial container (ctr run --runtime io.containerd.youki.v2)",
        );
        let listed = started.and_then(|_| run(self.ctr(K8S_NS).args(["tasks", "ls"]), "ctr tasks ls"));
        // Removed whatever happened above.
        let _ = run(self.ctr(K8S_NS).args(["tasks", "rm", "-f", &id]), "ctr tasks rm");
        let _ = run(self.ctr(K8S_NS).args(["containers", "rm", &id]), "ctr containers rm");
        let listed = listed?;
        let running = listed.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.first() == Some(&id.as_str()) && f.last() == Some(&"RUNNING")
        });
        if !running {
            return Err(InstallError::Verify(format!(
                "trial container {id} did not reach RUNNING:\n{listed}"
            )));
        }
        Ok(())
    }
}

pub struct Row {
    pub namespace: String,
    pub id: String,
    pub image: String,
    pub runtime: String,
}

/// Restarts containerd: `cmd` (sh -c) when given, `systemctl restart containerd` when
/// systemd runs the node; otherwise says what to do and returns Ok(false).
pub fn restart(cmd: Option<&str>) -> Result<bool, InstallError> {
    let mut c = match cmd {
        Some(cmd) => {
            let mut c = Command::new("/bin/sh");
            c.args(["-c", cmd]);
            c
        }
        None if Path::new("/run/systemd/system").exists() => {
            let mut c = Command::new("systemctl");
            c.args(["restart", "containerd"]);
            c
        }
        None => {
            println!(
                "not restarting containerd: systemd does not run this node, so restart \
                 containerd yourself for it to read the new config (running pods keep \
                 running), or pass --restart-cmd CMD"
            );
            return Ok(false);
        }
    };
    run(&mut c, "restarting containerd").map(|_| true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_as_releases_and_distributions_print_them() {
        let v = |s| parse_version(s).map(|(a, b, _)| (a, b));
        assert_eq!(
            v("containerd github.com/containerd/containerd v1.7.24 88bf19b"),
            Some((1, 7))
        );
        assert_eq!(
            v("containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+b1"),
            Some((1, 6))
        );
        assert_eq!(v("containerd containerd.io 2.1.4 abc"), Some((2, 1)));
        assert_eq!(v("garbage"), None);
    }
}
