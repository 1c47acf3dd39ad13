//! The DaemonSet's image (deploy/installer/, built offline by hack/build-installer-image.sh
//! from the static binaries) installs youki onto a node: run here with `ctr run`, the way
//! the DaemonSet runs it (privileged, the node's PID namespace, the stage directory a host
//! mount), against a containerd of the test's own that stands for the node: its
//! config.toml and bin directory are plain host directories, its restart a script. Checks
//! the config merged (the operator's lines kept), the binaries installed byte for byte,
//! the pause image imported, a container running through the handler, and that a second
//! run changes nothing.
//!
//! Needs the static build (hack/build-static.sh, which hack/prepare.sh runs); skipped with a
//! message when it is absent.
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;

const TOP: &str = env!("CARGO_MANIFEST_DIR");

fn static_dir() -> PathBuf {
    std::env::var_os("STATIC_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(TOP).join("target/x86_64-unknown-linux-gnu/dist"))
}

fn containerd_bin() -> String {
    std::env::var("CONTAINERD_BIN").unwrap_or_else(|_| "/usr/bin/containerd".into())
}

fn major() -> u32 {
    let out = Command::new(containerd_bin())
        .arg("--version")
        .output()
        .unwrap();
    let v = String::from_utf8_lossy(&out.stdout).into_owned();
    let v = v
        .split_whitespace()
        .nth(2)
        .unwrap_or("v1")
        .trim_start_matches('v');
    v.split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(1)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The node: a containerd started by hack/containerd.sh with a config.toml of ours
/// (CONTAINERD_CONFIG) and `bin` first on its PATH (SHIM_DIR).
struct Node {
    dir: PathBuf,
    run: PathBuf,
}

impl Node {
    fn new() -> Node {
        let n = std::process::id();
        let node = Node {
            dir: PathBuf::from(format!("/var/lib/youki-installer-{n}")),
            run: PathBuf::from(format!("/run/youki-installer-{n}")),
        };
        for d in [
            node.bin(),
            node.stage(),
            node.dir.join("etc"),
            node.run.clone(),
        ] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(node.config(), node.original_config()).unwrap();
        // What `youki-shims install --restart-cmd` runs, on the node (sh -c).
        let env: String = node
            .env()
            .iter()
            .map(|(k, v)| format!("export {k}='{v}'\n"))
            .collect();
        // The script runs inside the installer container's cgroups (nsenter changes
        // namespaces, not cgroups), which are killed when that container goes: the
        // containerd it starts first moves to this test's cgroups, the way systemd starts
        // the node's containerd in its own.
        let script = format!(
            "#!/bin/sh\n{env}\
             while IFS=: read -r _ ctrl path; do\n\
               d=/sys/fs/cgroup/${{ctrl#name=}}\n\
               [ -n \"$ctrl\" ] || d=/sys/fs/cgroup/unified\n\
               [ -d \"$d\" ] || d=/sys/fs/cgroup\n\
               echo $$ >\"$d$path/cgroup.procs\" 2>/dev/null || true\n\
             done </proc/{}/cgroup\n\
             exec bash {TOP}/hack/containerd.sh restart >/dev/null\n",
            std::process::id()
        );
        std::fs::write(node.restart_script(), script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            node.restart_script(),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        node
    }

    fn bin(&self) -> PathBuf {
        self.dir.join("bin")
    }
    fn stage(&self) -> PathBuf {
        self.dir.join("stage")
    }
    fn config(&self) -> PathBuf {
        self.dir.join("etc/config.toml")
    }
    fn restart_script(&self) -> PathBuf {
        self.dir.join("restart.sh")
    }
    fn sock(&self) -> PathBuf {
        self.run.join("containerd.sock")
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![
            ("YOUKI_TEST_DIR".into(), self.dir.display().to_string()),
            ("YOUKI_TEST_RUN".into(), self.run.display().to_string()),
            ("SHIM_DIR".into(), self.bin().display().to_string()),
            (
                "CONTAINERD_CONFIG".into(),
                self.config().display().to_string(),
            ),
            ("CONTAINERD_BIN".into(), containerd_bin()),
            ("PRELOAD".into(), String::new()),
        ]
    }

    /// A node's config as an operator keeps it: a comment, runc, the CRI plugin.
    fn original_config(&self) -> String {
        let (root, state, sock) = (self.dir.join("root"), self.run.join("state"), self.sock());
        // A test's line, not a node's: NRI's socket of this containerd's own, so that two
        // of them can run at once (hack/containerd.sh says why).
        let nri = self.run.join("nri.sock");
        let (root, state, sock, nri) = (
            root.display(),
            state.display(),
            sock.display(),
            nri.display(),
        );
        let cri = if major() >= 2 {
            "plugins.\"io.containerd.cri.v1.runtime\""
        } else {
            "plugins.\"io.containerd.grpc.v1.cri\""
        };
        let version = if major() >= 2 { 3 } else { 2 };
        format!(
            "# the node team's containerd config: keep this line\nversion = {version}\nroot = \"{root}\"\nstate = \"{state}\"\n\n[grpc]\n  address = \"{sock}\"\n\n[plugins.\"io.containerd.nri.v1.nri\"]\n  socket_path = \"{nri}\"\n\n[{cri}]\n  enable_selinux = false\n  [{cri}.containerd]\n    default_runtime_name = \"runc\"\n    [{cri}.containerd.runtimes.runc]\n      runtime_type = \"io.containerd.runc.v2\"\n"
        )
    }

    fn script(&self, action: &str) -> Output {
        Command::new("bash")
            .arg(Path::new(TOP).join("hack/containerd.sh"))
            .arg(action)
            .envs(self.env())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn ctr(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("--address")
            .arg(self.sock())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.ctr(&["-n", "k8s.io", "tasks", "rm", "-f", "installer-check"]);
        let _ = self.ctr(&["-n", "k8s.io", "containers", "rm", "installer-check"]);
        let _ = self.script("stop");
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(&self.run);
    }
}

/// Runs the installer image the way the DaemonSet does, once (ONESHOT).
fn run_installer(image: &str, node: &Node) -> Output {
    let id = unique("installer");
    let stage = node.stage();
    let mount = format!(
        "type=bind,src={},dst=/host{},options=rbind:rw",
        stage.display(),
        stage.display()
    );
    let pidns = format!("pid:/proc/{}/ns/pid", std::process::id());
    let install_args = format!(
        "INSTALL_ARGS=--config {} --bin-dir {} --containerd-bin {} --containerd-address {} --restart-cmd {}",
        node.config().display(),
        node.bin().display(),
        containerd_bin(),
        node.sock().display(),
        node.restart_script().display()
    );
    let node_pid = format!("NODE_PID={}", std::process::id());
    let stage_env = format!("STAGE_DIR={}", stage.display());
    ctr(&[
        "run",
        "--rm",
        "--privileged",
        "--runtime",
        RUNTIME,
        "--with-ns",
        &pidns,
        "--mount",
        &mount,
        "--env",
        &node_pid,
        "--env",
        &stage_env,
        "--env",
        &install_args,
        "--env",
        "ONESHOT=1",
        image,
        &id,
    ])
}

#[test]
fn installer_image_installs_onto_a_node() {
    let bins = static_dir();
    if !bins.join("youki-shims").exists() {
        eprintln!(
            "skipped: no static build in {} (hack/build-static.sh)",
            bins.display()
        );
        return;
    }
    // The image, built offline from the static binaries, imported into our containerd.
    let work = std::env::temp_dir().join(unique("installer-image"));
    std::fs::create_dir_all(&work).unwrap();
    let tar = work.join("installer.tar");
    let image = format!("localhost/youki/installer:{}", unique("t"));
    let built = Command::new("bash")
        .arg(Path::new(TOP).join("hack/build-installer-image.sh"))
        .args([bins.as_os_str(), tar.as_os_str(), image.as_ref()])
        .output()
        .unwrap();
    assert!(built.status.success(), "build image: {}", text(&built));
    ctr_ok(&["images", "import", tar.to_str().unwrap()]);

    let node = Node::new();
    let started = node.script("start");
    assert!(
        started.status.success(),
        "start the node's containerd: {}",
        text(&started)
    );

    let out = run_installer(&image, &node);
    assert!(out.status.success(), "installer: {}", text(&out));
    assert!(
        text(&out).contains("youki-installer: done"),
        "{}",
        text(&out)
    );

    // config.toml: the handler merged, the operator's lines kept.
    let merged = std::fs::read_to_string(node.config()).unwrap();
    assert!(merged.contains("io.containerd.youki.v2"), "{merged}");
    assert!(merged.contains("runtimes.youki"), "{merged}");
    assert!(
        merged.starts_with("# the node team's containerd config: keep this line"),
        "{merged}"
    );
    assert!(merged.contains("runtimes.runc"), "{merged}");
    // The binaries: the image's, byte for byte, in the node's bin dir.
    for b in ["containerd-shim-youki-v2", "youki-shims"] {
        assert_eq!(
            std::fs::read(node.bin().join(b)).unwrap(),
            std::fs::read(bins.join(b)).unwrap(),
            "{b} installed"
        );
    }
    // The pause image, and a container through the handler on the (restarted) node.
    let images = text(&node.ctr(&["-n", "k8s.io", "images", "ls", "-q"]));
    assert!(images.contains("localhost/youki/pause"), "{images}");
    let run = node.ctr(&[
        "-n",
        "k8s.io",
        "run",
        "-d",
        "--runtime",
        "io.containerd.youki.v2",
        "localhost/youki/pause:latest",
        "installer-check",
    ]);
    assert!(run.status.success(), "ctr run on the node: {}", text(&run));
    let tasks = text(&node.ctr(&["-n", "k8s.io", "tasks", "ls"]));
    assert!(
        tasks
            .lines()
            .any(|l| l.starts_with("installer-check") && l.contains("RUNNING")),
        "{tasks}"
    );
    let _ = node.ctr(&[
        "-n",
        "k8s.io",
        "tasks",
        "kill",
        "-s",
        "SIGKILL",
        "installer-check",
    ]);
    let _ = node.ctr(&["-n", "k8s.io", "tasks", "rm", "-f", "installer-check"]);
    let _ = node.ctr(&["-n", "k8s.io", "containers", "rm", "installer-check"]);

    // A second run (a DaemonSet pod restarted) changes nothing.
    let again = run_installer(&image, &node);
    assert!(again.status.success(), "second run: {}", text(&again));
    assert_eq!(std::fs::read_to_string(node.config()).unwrap(), merged);

    drop(node);
    let _ = ctr(&["images", "rm", &image]);
    let _ = std::fs::remove_dir_all(&work);
}
