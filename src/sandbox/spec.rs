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
use crate::sandbox::config::{Mode, PodConfig, Seccomp};

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
/// keeps the file it was started from), and made executable where its filesystem is not
/// (see `ensure_exec`).
pub fn ensure_rootfs(base: &Path) -> Result<PathBuf> {
    let dir = sandbox_dir(base);
    // Named after the digest build.rs computed: hashing PAUSE here would page all of it
    // into every shim (+1.2 MiB RSS per pod, measured with hack/bench.sh).
    let root = dir.join(format!("rootfs-{}", env!("PAUSE_DIGEST")));
    let pause = root.join("pause");
    if !std::fs::metadata(&pause).is_ok_and(|m| m.len() == PAUSE.len() as u64) {
        write_rootfs(&dir, &root, &pause)?;
    }
    ensure_exec(&dir, &root)?;
    Ok(root)
}

/// systemd (from v256) mounts /run `noexec`, and the root is under the state base
/// (/run/containerd/youki): libcontainer keeps a root's mount flags when it makes it
/// read-only, so the pause could not be executed ("exit 255" right after StartSandbox,
/// found on the VM's Debian trixie). Where the root's filesystem is noexec, the root
/// becomes a read-only bind mount of itself that allows exec (nosuid, nodev): one mount
/// per pause binary, shared by every pod and gone with /run at reboot. Nothing is mounted
/// where exec is allowed. Under a lock, so that two shims starting their first pods at
/// once do not stack two mounts.
fn ensure_exec(dir: &Path, root: &Path) -> Result<()> {
    use nix::mount::{MsFlags, mount};
    use nix::sys::statvfs::{FsFlags, statvfs};
    let noexec = |p: &Path| {
        statvfs(p)
            .map(|s| s.flags().contains(FsFlags::ST_NOEXEC))
            .map_err(|e| Error::io(format!("statvfs {}", p.display()), e))
    };
    if !noexec(root)? {
        return Ok(());
    }
    let lock_path = dir.join(".lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|e| Error::io(format!("open {}", lock_path.display()), e))?;
    // Held for a statvfs and two mount calls by whichever shim has it.
    // SAFETY: flock on an fd this function owns; released when `lock` is closed.
    if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(Error::io(format!("lock {}", lock_path.display()), e));
    }
    if !noexec(root)? {
        return Ok(());
    }
    let mounted = |e: nix::Error| Error::io(format!("bind-mount {} exec", root.display()), e);
    mount(
        Some(root),
        root,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(mounted)?;
    // A bind remount sets exactly these flags: noexec is not among them.
    let flags = MsFlags::MS_BIND
        | MsFlags::MS_REMOUNT
        | MsFlags::MS_RDONLY
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV;
    if let Err(e) = mount(None::<&str>, root, None::<&str>, flags, None::<&str>) {
        let _ = nix::mount::umount2(root, nix::mount::MntFlags::MNT_DETACH);
        return Err(mounted(e));
    }
    Ok(())
}

/// Removes every shared pause root under `base`, its exec bind mount first: for
/// `youki-shims uninstall`, once no container of ours is left (a pause that still runs
/// keeps its own copy of the mount and the file). Returns the roots it removed.
pub fn remove_roots(base: &Path) -> Result<Vec<PathBuf>> {
    use nix::mount::{MntFlags, umount2};
    let Ok(entries) = std::fs::read_dir(sandbox_dir(base)) else {
        return Ok(Vec::new());
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with("rootfs-") {
            continue;
        }
        let root = entry.path();
        // Until EINVAL (not a mount point): none where exec was allowed, else one.
        for _ in 0..8 {
            match umount2(&root, MntFlags::MNT_DETACH) {
                Ok(()) => continue,
                Err(nix::Error::EINVAL) => break,
                Err(e) => return Err(Error::io(format!("unmount {}", root.display()), e)),
            }
        }
        std::fs::remove_dir_all(&root)
            .map_err(|e| Error::io(format!("remove {}", root.display()), e))?;
        removed.push(root);
    }
    Ok(removed)
}

fn write_rootfs(dir: &Path, root: &Path, pause: &Path) -> Result<()> {
    let mkdir = |d: &Path, mode: u32| {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(d)
            .map_err(|e| Error::io(format!("create {}", d.display()), e))
    };
    mkdir(dir, 0o700)?;
    mkdir(root, 0o755)?;
    for d in ["proc", "dev"] {
        mkdir(&root.join(d), 0o755)?;
    }
    // The directory may have been made by an older shim with a tighter umask.
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755))
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
        std::fs::rename(&tmp, pause)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(format!("write {}", pause.display()), e)
    })
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
    slice_of(parent).is_some()
}

/// The last element of a cgroup parent that names a systemd slice (`a.slice/b.slice` →
/// `b.slice`), as containerd's getCgroupsPath takes `path.Base`.
pub fn slice_of(parent: &str) -> Option<&str> {
    let base = parent.trim_end_matches('/').rsplit('/').next()?;
    base.ends_with(".slice").then_some(base)
}

/// The pause container's cgroupsPath, as containerd's getCgroupsPath makes it.
pub fn cgroups_path(parent: &str, id: &str) -> Option<String> {
    if parent.is_empty() {
        None
    } else if let Some(slice) = slice_of(parent) {
        Some(format!("{slice}:cri-containerd:{id}"))
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
        "sysctl": sysctls(pod),
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
    if let Some(profile) = seccomp(pod, i.id)? {
        linux["seccomp"] = profile;
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

/// Largest Localhost seccomp profile read (containerd's default profile is ~25 KiB).
const MAX_SECCOMP_PROFILE: u64 = 1 << 20;

/// The pause container's seccomp, chosen as containerd's GenerateSeccompSpecOpts chooses
/// it for its own pause: none for a privileged pod or an unconfined (or absent) profile,
/// the runtime's default for RuntimeDefault, the node's file for Localhost.
fn seccomp(pod: &PodConfig, id: &str) -> Result<Option<Value>> {
    if pod.privileged {
        return Ok(None);
    }
    match &pod.seccomp {
        None | Some(Seccomp::Unconfined) => Ok(None),
        Some(Seccomp::RuntimeDefault) => Ok(Some(pause_default_seccomp())),
        Some(Seccomp::Localhost(path)) => {
            let what = format!("sandbox {id}: seccomp profile");
            crate::shim::validate::absolute_path(&what, path)?;
            // A regular file only, bounded: a FIFO there must not hold the shim.
            let bytes = crate::safe_open::read_regular(&what, path, MAX_SECCOMP_PROFILE)?;
            let profile: Value = serde_json::from_slice(&bytes)
                .map_err(|e| Error::InvalidArgument(format!("{what} {path:?} is not JSON: {e}")))?;
            if !profile.is_object() || profile.get("defaultAction").is_none() {
                return Err(Error::InvalidArgument(format!(
                    "{what} {path:?} is not an OCI LinuxSeccomp (no defaultAction)"
                )));
            }
            Ok(Some(profile))
        }
    }
}

/// What the pause container (and libcontainer's last steps before it execs pause) may
/// call under RuntimeDefault: process start-up, memory, signals, waiting and reaping, the
/// sync with the shim over its sockets, and exec. containerd's default profile allows
/// ~350 calls for any workload; pause only sleeps and reaps, so its default allows only
/// these and every other call fails with EPERM.
const PAUSE_SYSCALLS: &[&str] = &[
    // exec and start-up of a static binary
    "execve",
    "execveat",
    "arch_prctl",
    "set_tid_address",
    "set_robust_list",
    "rseq",
    "prlimit64",
    "getrandom",
    "uname",
    "readlink",
    "readlinkat",
    "getcwd",
    "access",
    "faccessat",
    "faccessat2",
    "prctl",
    "capget",
    "sysinfo",
    // memory
    "brk",
    "mmap",
    "munmap",
    "mremap",
    "mprotect",
    "madvise",
    // files and fds (libcontainer closes the fds the payload must not inherit)
    "openat",
    "open",
    "close",
    "close_range",
    "read",
    "write",
    "readv",
    "writev",
    "pread64",
    "lseek",
    "fstat",
    "newfstatat",
    "stat",
    "lstat",
    "statx",
    "fcntl",
    "dup",
    "dup2",
    "dup3",
    "getdents64",
    "ioctl",
    "pipe2",
    // sockets: libcontainer's channels and notify socket until exec
    "accept",
    "accept4",
    "recvfrom",
    "recvmsg",
    "sendto",
    "sendmsg",
    "shutdown",
    "getsockopt",
    "getsockname",
    "poll",
    "ppoll",
    "epoll_create1",
    "epoll_ctl",
    "epoll_wait",
    "epoll_pwait",
    // signals, sleeping, reaping
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "sigaltstack",
    "pause",
    "nanosleep",
    "clock_nanosleep",
    "clock_gettime",
    "gettimeofday",
    "restart_syscall",
    "wait4",
    "waitid",
    "kill",
    "tgkill",
    "futex",
    "sched_yield",
    "sched_getaffinity",
    // identity
    "getpid",
    "getppid",
    "gettid",
    "getuid",
    "geteuid",
    "getgid",
    "getegid",
    "getresuid",
    "getresgid",
    "getgroups",
    "exit",
    "exit_group",
];

/// The ABIs the profile covers, as containerd's default profile lists them per machine
/// (a call through another ABI fails: the default action).
#[cfg(target_arch = "x86_64")]
const ARCHITECTURES: &[&str] = &["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"];
#[cfg(target_arch = "aarch64")]
const ARCHITECTURES: &[&str] = &["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"];
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const ARCHITECTURES: &[&str] = &[];

/// The RuntimeDefault profile of the pause container (see PAUSE_SYSCALLS).
fn pause_default_seccomp() -> Value {
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": libc::EPERM,
        "architectures": ARCHITECTURES,
        "syscalls": [{"names": PAUSE_SYSCALLS, "action": "SCMP_ACT_ALLOW"}],
    })
}

/// The pod's sysctls, plus the two containerd 2.x's CRI adds to its own pause container's
/// unless the pod sets them (podsandbox sandbox_run_linux.go; `enable_unprivileged_ports`
/// and `enable_unprivileged_icmp`, on by default from 2.0, where the shim sandboxer is):
/// any user of a pod with its own network may bind ports below 1024 and ping. Both are
/// per network namespace, so the pod's containers see them. A containerd configured with
/// them off is not visible from here; a pod that sets them keeps its values.
fn sysctls(pod: &PodConfig) -> BTreeMap<String, String> {
    let mut all = pod.sysctls.clone();
    if pod.network != Mode::Node {
        all.entry("net.ipv4.ip_unprivileged_port_start".into())
            .or_insert_with(|| "0".into());
        // Not in a user namespace, where the kernel refuses the full range (containerd:
        // !userns.RunningInUserNS()).
        if !in_user_namespace() {
            all.entry("net.ipv4.ping_group_range".into())
                .or_insert_with(|| "0 2147483647".into());
        }
    }
    all
}

/// Whether this process runs in a user namespace other than the initial one.
fn in_user_namespace() -> bool {
    std::fs::read_to_string("/proc/self/uid_map")
        .is_ok_and(|m| m.split_whitespace().collect::<Vec<_>>() != ["0", "0", "4294967295"])
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
    fn a_slice_parent_is_named_by_its_last_element_as_containerd_does() {
        let id = "sb1";
        for (parent, want) in [
            (
                "kubepods-besteffort-pod1.slice",
                Some("kubepods-besteffort-pod1.slice:cri-containerd:sb1"),
            ),
            (
                "kubepods.slice/kubepods-pod1.slice/",
                Some("kubepods-pod1.slice:cri-containerd:sb1"),
            ),
            ("/kubepods/pod1", Some("/kubepods/pod1/sb1")),
            ("/kubepods/pod1/", Some("/kubepods/pod1/sb1")),
            ("", None),
        ] {
            assert_eq!(cgroups_path(parent, id).as_deref(), want, "{parent:?}");
            assert_eq!(
                systemd_parent(parent),
                parent.contains(".slice"),
                "{parent:?}"
            );
        }
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
    fn unprivileged_ports_and_ping_as_containerd_2_gives_its_pause() {
        let mut pod = PodConfig::default();
        pod.sysctls
            .insert("net.core.somaxconn".into(), "1024".into());
        let spec = pause_spec(&input(&pod)).unwrap();
        let sysctl = &spec["linux"]["sysctl"];
        assert_eq!(sysctl["net.core.somaxconn"], "1024");
        assert_eq!(sysctl["net.ipv4.ip_unprivileged_port_start"], "0");
        if !in_user_namespace() {
            assert_eq!(sysctl["net.ipv4.ping_group_range"], "0 2147483647");
        }
        // The pod's own values win.
        pod.sysctls
            .insert("net.ipv4.ip_unprivileged_port_start".into(), "80".into());
        let spec = pause_spec(&input(&pod)).unwrap();
        assert_eq!(
            spec["linux"]["sysctl"]["net.ipv4.ip_unprivileged_port_start"],
            "80"
        );
        // A host-network pod must not change the node's.
        pod.network = Mode::Node;
        pod.sysctls.clear();
        let spec = pause_spec(&input(&pod)).unwrap();
        assert_eq!(spec["linux"]["sysctl"], json!({}));
    }

    #[test]
    fn seccomp_as_containerd_chooses_it_for_its_pause() {
        let with = |seccomp: Option<Seccomp>, privileged: bool| {
            let pod = PodConfig {
                seccomp,
                privileged,
                ..Default::default()
            };
            pause_spec(&input(&pod)).map(|s| s["linux"].get("seccomp").cloned())
        };
        assert_eq!(with(None, false).unwrap(), None);
        assert_eq!(with(Some(Seccomp::Unconfined), false).unwrap(), None);
        assert_eq!(with(Some(Seccomp::RuntimeDefault), true).unwrap(), None);
        let default = with(Some(Seccomp::RuntimeDefault), false).unwrap().unwrap();
        assert_eq!(default["defaultAction"], "SCMP_ACT_ERRNO");
        let allowed = default["syscalls"][0]["names"].as_array().unwrap();
        for needed in ["execve", "pause", "rt_sigsuspend", "wait4", "exit_group"] {
            assert!(allowed.contains(&json!(needed)), "{needed}");
        }

        let dir = std::env::temp_dir().join(format!("youki-seccomp-spec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("p.json");
        let path = |p: &Path| Some(Seccomp::Localhost(p.display().to_string()));
        std::fs::write(&file, r#"{"defaultAction": "SCMP_ACT_LOG"}"#).unwrap();
        assert_eq!(
            with(path(&file), false).unwrap().unwrap()["defaultAction"],
            "SCMP_ACT_LOG"
        );
        std::fs::write(&file, "[1, 2]").unwrap();
        let not_profile = with(path(&file), false).unwrap_err();
        // A FIFO is refused at once (nothing would ever write it).
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let from_fifo = with(path(&fifo), false).unwrap_err();
        let missing = with(path(&dir.join("missing.json")), false).unwrap_err();
        let relative = with(Some(Seccomp::Localhost("p.json".into())), false).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        for (e, names) in [
            (not_profile, "p.json"),
            (from_fifo, "fifo"),
            (missing, "missing.json"),
            (relative, "p.json"),
        ] {
            assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
            assert!(e.to_string().contains(names), "{e}");
        }
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

    /// The state base on a noexec filesystem (systemd's /run): the pause can still be run,
    /// through one read-only bind mount, made once however often the root is ensured.
    #[test]
    fn a_root_on_a_noexec_filesystem_is_made_executable_once() {
        use nix::mount::{MntFlags, MsFlags, mount, umount2};
        let base = std::env::temp_dir().join(format!("youki-noexec-{}", std::process::id()));
        std::fs::create_dir_all(&base).unwrap();
        mount(
            Some("tmpfs"),
            &base,
            Some("tmpfs"),
            MsFlags::MS_NOEXEC | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("size=8m"),
        )
        .expect("mount a noexec tmpfs (needs root)");
        let run = |root: &Path| {
            std::process::Command::new(root.join("pause"))
                .arg("-v")
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        };
        let root = ensure_rootfs(&base);
        let again = ensure_rootfs(&base);
        let ran = root.as_ref().map(|r| run(r)).map_err(|e| e.to_string());
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mounts_on_root = root
            .as_ref()
            .map(|r| {
                let r = r.display().to_string();
                mountinfo
                    .lines()
                    .filter(|l| l.split(' ').nth(4) == Some(r.as_str()))
                    .count()
            })
            .unwrap_or(0);
        let removed = remove_roots(&base);
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let left = mountinfo.contains(&format!(" {}/", sandbox_dir(&base).display()));
        if let Ok(r) = &root {
            let _ = umount2(r, MntFlags::MNT_DETACH);
        }
        umount2(&base, MntFlags::MNT_DETACH).unwrap();
        std::fs::remove_dir_all(&base).unwrap();
        let root = root.unwrap();
        assert_eq!(again.unwrap(), root);
        assert_eq!(ran.unwrap().unwrap(), "pause (containerd-shim-youki)\n");
        assert_eq!(mounts_on_root, 1, "one bind mount on {}", root.display());
        // Uninstall: the mount and the root are gone.
        assert_eq!(removed.unwrap(), vec![root]);
        assert!(
            !left,
            "a mount is left under {}",
            sandbox_dir(&base).display()
        );
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
