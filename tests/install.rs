//! `youki-shims install` / `uninstall` against a real containerd (the one hack/containerd.sh
//! runs, with a node's config.toml of ours instead of its own): the merge keeps the
//! operator's file, the handler runs containers after the installer's restart, a second
//! install changes nothing, uninstall puts the file back byte for byte, pods survive the
//! restart, and bad input leaves the node exactly as it was. Runs with whatever containerd
//! CONTAINERD_BIN names (config version 2 for 1.6/1.7, 3 for 2.x).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::kubelet::{Cri, PodSpec};
use common::private::Private;

const YOUKI_SHIMS: &str = env!("CARGO_BIN_EXE_youki-shims");
const PAUSE: &str = "localhost/youki/pause:latest";

fn containerd_bin() -> String {
    std::env::var("CONTAINERD_BIN").unwrap_or_else(|_| "containerd".into())
}

fn major() -> u32 {
    let out = Command::new(containerd_bin())
        .arg("--version")
        .output()
        .expect("containerd --version");
    let v = String::from_utf8_lossy(&out.stdout);
    let v = v.split_whitespace().nth(2).expect("a version field");
    v.trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .expect("a major version")
}

/// A node's config as operators write them: comments, their own order, runc with
/// SystemdCgroup (kubelet's systemd driver), another runtime, a sandbox image of theirs.
fn realistic_config(p: &Private) -> String {
    let (root, state, sock) = (p.dir.join("root"), p.state(), p.sock());
    let cni = p.dir.join("cni/conf");
    // Not a node's line but a test's: NRI's socket of this containerd's own, so that two
    // of them can run at once (hack/containerd.sh says why).
    let nri = p.run.join("nri.sock");
    let (root, state, cni, nri) = (
        root.display(),
        state.display(),
        cni.display(),
        nri.display(),
    );
    if major() >= 2 {
        format!(
            r#"# /etc/containerd/config.toml: managed by the node team, ask before editing.
version = 3
root = "{root}"
state = "{state}"

[grpc]
  address = "{sock}"

[plugins."io.containerd.nri.v1.nri"]
  socket_path = "{nri}"

# Images come through our mirror; the sandbox image is pinned by policy.
[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = 'registry.k8s.io/pause:3.10'

[plugins.'io.containerd.cri.v1.runtime']
  enable_selinux = false
  # This node is a VM without CAP_SYS_RESOURCE.
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = 'runc'
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = 'io.containerd.runc.v2'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        SystemdCgroup = true   # kubelet --cgroup-driver=systemd
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.gvisor]
      runtime_type = 'io.containerd.runsc.v1'
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ['/usr/lib/cni']
    conf_dir = '{cni}'
"#
        )
    } else {
        format!(
            r#"# /etc/containerd/config.toml: managed by the node team, ask before editing.
version = 2
root = "{root}"
state = "{state}"
oom_score = 0

[grpc]
  address = "{sock}"

[plugins."io.containerd.nri.v1.nri"]
  socket_path = "{nri}"

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    # pulled through our mirror
    sandbox_image = "registry.k8s.io/pause:3.9"
    enable_selinux = false
    # This node is a VM without CAP_SYS_RESOURCE.
    restrict_oom_score_adj = true
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes]
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
          runtime_type = "io.containerd.runc.v2"
          [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
            SystemdCgroup = true   # kubelet --cgroup-driver=systemd
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.gvisor]
          runtime_type = "io.containerd.runsc.v1"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "{cni}"
"#
        )
    }
}

/// A private containerd run with `config` (a copy of a node's config.toml) and a bin
/// directory of its own on its PATH, where install puts the shim.
struct Node {
    p: Private,
    config: PathBuf,
    bin_dir: PathBuf,
    original: String,
}

impl Node {
    fn new(tag: &str) -> Node {
        let mut p = Private::new(tag);
        let etc = p.dir.join("etc");
        let bin_dir = p.dir.join("bin");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::create_dir_all(&bin_dir).unwrap();
        let config = etc.join("config.toml");
        let original = realistic_config(&p);
        std::fs::write(&config, &original).unwrap();
        p.env = vec![
            ("CONTAINERD_CONFIG", config.display().to_string()),
            ("SHIM_DIR", bin_dir.display().to_string()),
            ("PRELOAD", "busybox".into()),
        ];
        p.start();
        Node {
            p,
            config,
            bin_dir,
            original,
        }
    }

    /// `youki-shims CMD --config … --bin-dir … ARGS`, with the environment the restart
    /// command needs.
    fn run(&self, cmd: &str, args: &[&str]) -> Output {
        self.run_with(cmd, &self.config, &self.bin_dir, args)
    }

    fn run_with(&self, cmd: &str, config: &Path, bin_dir: &Path, args: &[&str]) -> Output {
        let o = Command::new(YOUKI_SHIMS)
            .arg(cmd)
            .arg("--config")
            .arg(config)
            .arg("--bin-dir")
            .arg(bin_dir)
            .args(["--containerd-bin", &containerd_bin()])
            .args(args)
            .envs(self.p.script_env())
            .stdin(Stdio::null())
            .output()
            .expect("youki-shims");
        eprintln!(
            "youki-shims {cmd} {args:?}: {}\n{}{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        o
    }

    fn config_text(&self) -> String {
        std::fs::read_to_string(&self.config).unwrap()
    }

    fn pause_image(&self) -> String {
        let o = self
            .p
            .ctr(&["-n", "k8s.io", "images", "ls", &format!("name=={PAUSE}")]);
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

/// The lines of `merged` that are not `original`'s, which must all be in it, in order.
fn added_lines(original: &str, merged: &str) -> String {
    let mut want = original.lines().peekable();
    let mut added = String::new();
    for line in merged.lines() {
        if want.peek() == Some(&line) {
            want.next();
        } else {
            added.push_str(line);
            added.push('\n');
        }
    }
    assert_eq!(
        want.next(),
        None,
        "an original line is missing in:\n{merged}"
    );
    added
}

fn restart_cmd() -> String {
    Private::script_cmd("restart")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn install_restart_run_install_again_uninstall() {
    let n = Node::new("inst");
    let pid = n.p.pid();
    let o = n.run("install", &["--restart-cmd", &restart_cmd()]);
    assert!(o.status.success(), "install failed: {}", stderr(&o));

    // The operator's file is all there, unchanged, in its order: ours is only added lines.
    let merged = n.config_text();
    let added = added_lines(&n.original, &merged);
    assert!(
        added.contains(".containerd.runtimes.youki]") && added.contains("io.containerd.youki.v2"),
        "{added}"
    );
    // SystemdCgroup follows runc's.
    assert!(added.contains("SystemdCgroup = true"), "{added}");
    assert!(stdout(&o).contains("SystemdCgroup = true"));
    // The sandbox image stays the operator's without --pause.
    assert!(merged.contains("registry.k8s.io/pause:3."));

    // Restarted by the installer's restart path, and runs containers through the handler.
    assert_ne!(n.p.pid(), pid, "containerd was not restarted");
    for b in ["containerd-shim-youki-v2", "youki-shims"] {
        assert!(n.bin_dir.join(b).is_file(), "{b} not installed");
    }
    let id = format!("inst-run-{}", std::process::id());
    let run = n.p.ctr(&[
        "run",
        "--rm",
        "--runtime",
        "io.containerd.youki.v2",
        common::BUSYBOX,
        &id,
        "echo",
        "through-youki",
    ]);
    assert_eq!(stdout(&run).trim(), "through-youki", "{}", stderr(&run));
    let image = n.pause_image();
    assert!(image.contains("io.cri-containerd.pinned=pinned"), "{image}");

    // Twice: nothing changes, containerd is not restarted.
    let pid = n.p.pid();
    let o = n.run("install", &["--restart-cmd", &restart_cmd()]);
    assert!(o.status.success(), "second install failed: {}", stderr(&o));
    assert!(stdout(&o).contains("already installed"), "{}", stdout(&o));
    assert_eq!(n.config_text(), merged);
    assert_eq!(n.p.pid(), pid, "containerd restarted for nothing");

    // A config someone changed since install is not overwritten by the backup.
    std::fs::write(&n.config, format!("{merged}# edited after install\n")).unwrap();
    let o = n.run("uninstall", &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("changed since install"),
        "{}",
        stderr(&o)
    );
    assert!(n.bin_dir.join("containerd-shim-youki-v2").exists());
    std::fs::write(&n.config, &merged).unwrap();

    // Uninstall: the original byte for byte, and nothing of ours left.
    let o = n.run("uninstall", &["--restart-cmd", &restart_cmd()]);
    assert!(o.status.success(), "uninstall failed: {}", stderr(&o));
    assert_eq!(n.config_text(), n.original);
    let left: Vec<_> = std::fs::read_dir(&n.bin_dir).unwrap().flatten().collect();
    assert!(left.is_empty(), "left in bin dir: {left:?}");
    let etc: Vec<_> = std::fs::read_dir(n.config.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(etc, vec![std::ffi::OsString::from("config.toml")]);
    assert!(!n.pause_image().contains(PAUSE), "{}", n.pause_image());
}

#[test]
fn pods_survive_the_installers_restart() {
    let n = Node::new("instpod");
    // Our pause as the sandbox image (this config's own is not reachable from here); the
    // test's cgroups are cgroupfs.
    let o = n.run(
        "install",
        &[
            "--pause",
            "--systemd-cgroup=false",
            "--restart-cmd",
            &restart_cmd(),
        ],
    );
    assert!(o.status.success(), "install failed: {}", stderr(&o));
    let sock = PathBuf::from(n.p.sock());
    let mut cri = Cri::connect(&sock);
    let spec = PodSpec::new("inst-pod");
    let pod = cri.run_pod(&spec).expect("pod");
    let app = cri
        .run_container(&pod, &spec, "app", &["sleep", "1000"])
        .expect("container");
    let app_pid = cri.container_pid(&app).expect("pid");

    // uninstall refuses while the pod uses the runtime, and changes nothing.
    let merged = n.config_text();
    let o = n.run("uninstall", &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("use io.containerd.youki.v2"),
        "{}",
        stderr(&o)
    );
    assert_eq!(n.config_text(), merged);
    assert!(n.bin_dir.join("containerd-shim-youki-v2").exists());

    // A change that needs a restart, through the installer's restart path.
    let pid = n.p.pid();
    let o = n.run(
        "install",
        &["--set-default", "--restart-cmd", &restart_cmd()],
    );
    assert!(
        o.status.success(),
        "install --set-default failed: {}",
        stderr(&o)
    );
    assert_ne!(n.p.pid(), pid, "containerd was not restarted");
    let mut cri = Cri::connect(&sock);
    assert_eq!(
        cri.container_state(&app),
        Ok(k8s_cri::v1::ContainerState::ContainerRunning)
    );
    assert_eq!(cri.container_pid(&app), Ok(app_pid));
    let (code, out, _) = cri
        .exec_sync(&app, &["echo", "served"], Duration::from_secs(10))
        .expect("exec after restart");
    assert_eq!((code, out.trim()), (0, "served"));

    cri.stop_container(&app, Duration::from_secs(2)).unwrap();
    cri.remove_container(&app).unwrap();
    cri.stop_pod(&pod).unwrap();
    cri.remove_pod(&pod).unwrap();
    spec.remove_leftover_dirs();
    let o = n.run("uninstall", &["--restart-cmd", &restart_cmd()]);
    assert!(o.status.success(), "uninstall failed: {}", stderr(&o));
    assert_eq!(n.config_text(), n.original);
}

/// Every file (name and bytes) under `dir`.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.insert(p.clone(), std::fs::read(&p).unwrap_or_default());
        }
    }
    out
}

/// A read-only tmpfs at `dir` holding `content` (as root, permissions stop nothing).
struct ReadOnly(PathBuf);

impl ReadOnly {
    fn new(dir: &Path, content: &[(&str, &str)]) -> ReadOnly {
        std::fs::create_dir_all(dir).unwrap();
        let mount = |args: &[&str]| {
            let o = Command::new("mount").args(args).arg(dir).output().unwrap();
            assert!(o.status.success(), "mount {args:?}: {}", stderr(&o));
        };
        mount(&["-t", "tmpfs", "tmpfs"]);
        for (name, text) in content {
            std::fs::write(dir.join(name), text).unwrap();
        }
        mount(&["-o", "remount,ro"]);
        ReadOnly(dir.to_path_buf())
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn bad_input_leaves_the_node_as_it_was() {
    let n = Node::new("instbad");
    let etc = n.config.parent().unwrap().to_path_buf();
    let node = || {
        (
            files(&n.p.dir.join("etc")),
            files(&n.bin_dir),
            n.pause_image(),
        )
    };
    let bad = etc.join("bad.toml");
    let version_key = if major() >= 2 {
        "version = 3"
    } else {
        "version = 2"
    };
    let mut cases: Vec<(String, Vec<String>, &str)> = vec![
        ("version = = 2\n".into(), vec![], "is not valid TOML"),
        ("version = 9\n".into(), vec![], "unknown config version 9"),
        ("[plugins.cri]\n".into(), vec![], "version 1 config"),
        // Valid TOML our merge takes, but containerd cannot load: caught before replacing.
        (
            n.original.replace(
                version_key,
                &format!("{version_key}\ndisabled_plugins = \"cri\""),
            ),
            vec![],
            "config dump",
        ),
        (
            n.original.clone(),
            vec![
                "--containerd-address".into(),
                "/run/youki-nowhere.sock".into(),
            ],
            "containerd is not running at /run/youki-nowhere.sock",
        ),
    ];
    if major() < 2 {
        cases.push(("version = 3\n".into(), vec![], "cannot read"));
    }
    for (text, extra, want) in &cases {
        std::fs::write(&bad, text).unwrap();
        let before = node();
        let mut args: Vec<&str> = extra.iter().map(String::as_str).collect();
        args.extend(["--restart-cmd", "false"]);
        let o = n.run_with("install", &bad, &n.bin_dir, &args);
        assert_eq!(o.status.code(), Some(1), "{text}");
        let err = stderr(&o);
        assert!(err.contains(want), "want {want:?} in {err}");
        if !want.contains("nowhere") {
            assert!(err.contains(&bad.display().to_string()) || want == &"config dump");
        }
        assert!(node() == before, "the node changed after: {err}");
    }
    std::fs::remove_file(&bad).unwrap();

    // A config that is not there.
    let missing = etc.join("missing.toml");
    let before = node();
    let o = n.run_with("install", &missing, &n.bin_dir, &[]);
    assert_eq!(o.status.code(), Some(1));
    let want = format!("cannot read containerd config {}", missing.display());
    assert!(stderr(&o).contains(&want), "{}", stderr(&o));
    assert!(node() == before, "the node changed");

    // No write access to the config's directory, then to the bin directory.
    let before = node();
    let ro = n.p.dir.join("ro-etc");
    let guard = ReadOnly::new(&ro, &[("config.toml", &n.original)]);
    let o = n.run_with("install", &ro.join("config.toml"), &n.bin_dir, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(&format!("{}", ro.join("config.toml").display()))
            && stderr(&o).contains("Read-only file system"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        std::fs::read_to_string(ro.join("config.toml")).unwrap(),
        n.original
    );
    drop(guard);
    let ro_bin = n.p.dir.join("ro-bin");
    let guard = ReadOnly::new(&ro_bin, &[]);
    let o = n.run_with("install", &n.config, &ro_bin, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(&format!("{}", ro_bin.display()))
            && stderr(&o).contains("Read-only file system"),
        "{}",
        stderr(&o)
    );
    drop(guard);
    assert!(node() == before, "the node changed");
    assert_eq!(n.config_text(), n.original);
}

/// Two containerds of a node's config at once, as these tests run them: each listens only
/// on sockets of its own. containerd 2.x's NRI listens on /var/run/nri/nri.sock unless
/// its config says otherwise, so the second of two such containerds failed to start.
#[test]
fn two_private_containerds_run_side_by_side() {
    let a = Node::new("side-a");
    let b = Node::new("side-b");
    for n in [&a, &b] {
        let ls = n.p.ctr(&["namespaces", "ls"]);
        assert!(
            ls.status.success(),
            "{}",
            String::from_utf8_lossy(&ls.stderr)
        );
        if major() >= 2 {
            // NRI is on (2.x's default) and listens in this containerd's own directory.
            let nri = n.p.run.join("nri.sock");
            assert!(nri.exists(), "no NRI socket at {}", nri.display());
        }
    }
}
