//! The pause container the shim makes for a pod when containerd's sandboxer is "shim":
//! its root (no image, no snapshot: one read-only directory holding our static pause
//! binary, shared by every pod) and its OCI spec, made from the pod's CRI config the way
//! containerd's podsandbox controller makes the pause container's (sandbox_run_linux.go).

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::sandbox::config::{Mode, PodConfig};

/// Our pause binary (src/bin/pause.rs, built statically by build.rs), carried inside the
/// shim so that a node needs no pause image. Its pages are read only when the root is
/// first written.
static PAUSE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/pause"));

/// Below the state base (`/run/containerd/youki` or the Root option): a name no
/// containerd namespace can have, so the inventory and `delete` never take it for one.
const DIR: &str = ".sandbox";

/// upstream pause's user (registry.k8s.io/pause runs as 65535:65535): pause needs no
/// privilege at all.
const NOBODY: i64 = 65535;
/// containerd's defaultSandboxOOMAdj: the pause container is the last to be OOM-killed.
const SANDBOX_OOM_ADJ: i32 = -998;
/// containerd's WithDefaultSandboxShares.
const SANDBOX_CPU_SHARES: u64 = 2;

/// Where the shared root and each pod's bundle live.
pub fn sandbox_dir(base: &Path) -> PathBuf {
    base.join(DIR)
}

/// The pod's bundle (only its config.json: the root is shared).
pub fn bundle_dir(base: &Path, namespace: &str, id: &str) -> PathBuf {
    sandbox_dir(base).join(namespace).join(id)
}

/// The shared read-only root: `/pause` and the two mount points its spec uses. Written
/// once per binary (a new shim with another pause replaces it atomically; a running pause
/// keeps the file it was started from).
pub fn ensure_rootfs(base: &Path) -> Result<PathBuf> {
    let dir = sandbox_dir(base);
    // Named after the digest build.rs computed: hashing PAUSE here would page all of it
    // into every shim (+1.2 MiB RSS per pod, measured with hack/bench.sh).
    let root = dir.join(format!("rootfs-{}", env!("PAUSE_DIGEST")));
    let pause = root.join("pause");
    if std::fs::metadata(&pause).is_ok_and(|m| m.len() == PAUSE.len() as u64) {
        return Ok(root);
    }
    let mkdir = |d: &Path, mode: u32| {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(d)
            .map_err(|e| Error::io(format!("create {}", d.display()), e))
    };
    mkdir(&dir, 0o700)?;
    mkdir(&root, 0o755)?;
    for d in ["proc", "dev"] {
        mkdir(&root.join(d), 0o755)?;
    }
    // The directory may have been made by an older shim with a tighter umask.
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| Error::io(format!("chmod {}", root.display()), e))?;
    let tmp = root.join(format!(".pause.{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o755)
            .open(&tmp)?;
        f.write_all(PAUSE)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &pause)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(format!("write {}", pause.display()), e)
    })?;
    Ok(root)
}

/// What the pause container's spec is made from, beyond the pod's config.
pub struct SpecInput<'a> {
    pub id: &'a str,
    pub rootfs: &'a Path,
    /// The network namespace containerd made and set up (empty: none given).
    pub netns_path: &'a str,
    pub pod: &'a PodConfig,
    /// Whether cgroups are the unified hierarchy (the pod then gets a cgroup namespace,
    /// as containerd's default spec gives every container on cgroup v2).
    pub cgroup_v2: bool,
    /// The shim's own oom_score_adj: the pause may not go below it (containerd's
    /// restrict_oom_score_adj, which our tests and most nodes set).
    pub own_oom_score_adj: i32,
}

/// Whether the pod's cgroup parent is a systemd slice (kubelet's systemd driver), so the
/// pause container's cgroup is named the systemd way.
pub fn systemd_parent(parent: &str) -> bool {
    parent.ends_with(".slice")
}

/// The pause container's cgroupsPath, as containerd's getCgroupsPath makes it.
pub fn cgroups_path(parent: &str, id: &str) -> Option<String> {
    if parent.is_empty() {
        None
    } else if systemd_parent(parent) {
        Some(format!("{parent}:cri-containerd:{id}"))
    } else {
        Some(format!("{}/{id}", parent.trim_end_matches('/')))
    }
}

pub fn pause_spec(i: &SpecInput) -> Result<Value> {
    let pod = i.pod;
    if pod.userns == Some(Mode::Pod) {
        return Err(Error::Unimplemented(format!(
            "sandbox {}: a user namespace for the pod (hostUsers: false) is not supported by \
             this shim's sandboxer yet; use the podsandbox sandboxer for this pod",
            i.id
        )));
    }
    let host_net = pod.network == Mode::Node;
    let mut namespaces = vec![json!({"type": "mount"})];
    if !host_net {
        namespaces.push(if i.netns_path.is_empty() {
            json!({"type": "network"})
        } else {
            json!({"type": "network", "path": i.netns_path})
        });
        // containerd drops the UTS namespace with the network one: a host-network pod has
        // the node's hostname.
        namespaces.push(json!({"type": "uts"}));
    }
    if pod.pid != Mode::Node {
        namespaces.push(json!({"type": "pid"}));
    }
    if pod.ipc != Mode::Node {
        namespaces.push(json!({"type": "ipc"}));
    }
    if i.cgroup_v2 {
        namespaces.push(json!({"type": "cgroup"}));
    }
    let uid = pod.run_as_user.unwrap_or(NOBODY);
    let gid = pod
        .run_as_group
        .unwrap_or(if pod.run_as_user.is_some() { 0 } else { NOBODY });
    let mut annotations = BTreeMap::new();
    for (k, v) in [
        ("io.kubernetes.cri.container-type", "sandbox"),
        ("io.kubernetes.cri.sandbox-id", i.id),
        ("io.kubernetes.cri.sandbox-name", &pod.name),
        ("io.kubernetes.cri.sandbox-namespace", &pod.namespace),
        ("io.kubernetes.cri.sandbox-uid", &pod.uid),
        (
            "io.kubernetes.cri.sandbox-log-directory",
            &pod.log_directory,
        ),
    ] {
        annotations.insert(k.to_string(), v.to_string());
    }
    let mut linux = json!({
        "namespaces": namespaces,
        "resources": {
            "devices": [{"allow": false, "access": "rwm"}],
            "cpu": {"shares": SANDBOX_CPU_SHARES},
        },
        "sysctl": pod.sysctls,
        "maskedPaths": [
            "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
            "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
            "/sys/firmware", "/sys/devices/virtual/powercap",
        ],
        "readonlyPaths": [
            "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
        ],
    });
    if let Some(path) = cgroups_path(&pod.cgroup_parent, i.id) {
        linux["cgroupsPath"] = json!(path);
    }
    let mut spec = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {
                "uid": id_u32(uid, "run_as_user")?,
                "gid": id_u32(gid, "run_as_group")?,
                "additionalGids": pod.supplemental_groups.iter()
                    .map(|g| id_u32(*g, "supplemental_groups"))
                    .collect::<Result<Vec<_>>>()?,
            },
            "args": ["/pause"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "cwd": "/",
            // pause needs no capability: it only sleeps and reaps.
            "capabilities": {"bounding": [], "effective": [], "permitted": []},
            "noNewPrivileges": true,
            "oomScoreAdj": SANDBOX_OOM_ADJ.max(i.own_oom_score_adj),
        },
        "root": {"path": i.rootfs, "readonly": true},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        ],
        "annotations": annotations,
        "linux": linux,
    });
    if !host_net && !pod.hostname.is_empty() {
        spec["hostname"] = json!(pod.hostname);
    }
    Ok(spec)
}

fn id_u32(v: i64, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| {
        Error::InvalidArgument(format!(
            "PodSandboxConfig security_context.{what}: {v} is not a valid ID"
        ))
    })
}

/// Writes the pod's bundle (config.json only), 0700.
pub fn write_bundle(bundle: &Path, spec: &Value) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(bundle)
        .map_err(|e| Error::io(format!("create {}", bundle.display()), e))?;
    let bytes = serde_json::to_vec(spec)
        .map_err(|e| Error::Internal(format!("encode the pause container's spec: {e}")))?;
    let path = bundle.join("config.json");
    std::fs::write(&path, bytes).map_err(|e| Error::io(format!("write {}", path.display()), e))
}

/// The shim's own oom_score_adj (0 when unreadable).
pub fn own_oom_score_adj() -> i32 {
    std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

pub fn cgroup_v2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(pod: &'a PodConfig) -> SpecInput<'a> {
        SpecInput {
            id: "sb1",
            rootfs: Path::new("/run/containerd/youki/.sandbox/rootfs-x"),
            netns_path: "/var/run/netns/cni-1",
            pod,
            cgroup_v2: true,
            own_oom_score_adj: -999,
        }
    }

    fn ns_types(spec: &Value) -> Vec<String> {
        spec["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn a_default_pod_gets_its_own_ipc_uts_pid_and_containerds_netns() {
        let pod = PodConfig {
            hostname: "web-0".into(),
            cgroup_parent: "/kubepods/pod1".into(),
            ..Default::default()
        };
        let spec = pause_spec(&input(&pod)).unwrap();
        assert_eq!(
            ns_types(&spec),
            ["mount", "network", "uts", "pid", "ipc", "cgroup"]
        );
        assert_eq!(
            spec["linux"]["namespaces"][1]["path"],
            "/var/run/netns/cni-1"
        );
        assert_eq!(spec["hostname"], "web-0");
        assert_eq!(spec["linux"]["cgroupsPath"], "/kubepods/pod1/sb1");
        assert_eq!(spec["root"]["readonly"], true);
        assert_eq!(spec["process"]["user"]["uid"], 65535);
        assert_eq!(spec["process"]["oomScoreAdj"], -998);
        assert_eq!(spec["annotations"]["io.kubernetes.cri.sandbox-id"], "sb1");
    }

    #[test]
    fn host_namespaces_are_left_out() {
        let pod = PodConfig {
            hostname: "ignored".into(),
            network: Mode::Node,
            pid: Mode::Node,
            ipc: Mode::Node,
            cgroup_parent: "kubepods-pod1.slice".into(),
            run_as_user: Some(0),
            ..Default::default()
        };
        let spec = pause_spec(&input(&pod)).unwrap();
        assert_eq!(ns_types(&spec), ["mount", "cgroup"]);
        assert!(spec.get("hostname").is_none());
        assert_eq!(
            spec["linux"]["cgroupsPath"],
            "kubepods-pod1.slice:cri-containerd:sb1"
        );
        assert_eq!(spec["process"]["user"]["gid"], 0);
    }

    #[test]
    fn a_pod_user_namespace_is_refused_clearly() {
        let pod = PodConfig {
            userns: Some(Mode::Pod),
            ..Default::default()
        };
        let e = pause_spec(&input(&pod)).unwrap_err();
        assert!(matches!(e, Error::Unimplemented(_)), "{e}");
        assert!(e.to_string().contains("sb1"));
    }

    #[test]
    fn the_root_is_written_once_and_read_only_to_everyone_else() {
        let dir = std::env::temp_dir().join(format!("youki-sandbox-root-{}", std::process::id()));
        let root = ensure_rootfs(&dir).unwrap();
        let meta = std::fs::metadata(root.join("pause")).unwrap();
        assert_eq!(meta.len(), PAUSE.len() as u64);
        assert_eq!(meta.permissions().mode() & 0o777, 0o755);
        assert!(root.join("proc").is_dir() && root.join("dev").is_dir());
        assert_eq!(ensure_rootfs(&dir).unwrap(), root);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
