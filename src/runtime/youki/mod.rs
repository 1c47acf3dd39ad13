//! The real runtime: youki's libcontainer, in two halves. What runs in the daemon is here:
//! kill, pids and cgroup reads are plain syscalls and reads of in-memory files, through
//! libcgroups' filesystem managers only: never its systemd manager, which opens a D-Bus
//! connection it never closes (see `crate::cgroup::path`). Whatever forks or may block
//! (create, start, exec, delete with its hooks, checkpoint, and the freezer and cgroup
//! writes, which libcgroups retries with sleeps or sends over D-Bus to systemd) is sent over
//! `protocol` to a short-lived forked worker (`forker`) that runs `worker`, under a
//! deadline (`Deadlines`).

mod kill;
mod protocol;
mod restore;
mod worker;

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libcgroups::common::{AnyCgroupManager, CgroupManager};
use libcontainer::container::Container;
use libcontainer::oci_spec::runtime::LinuxResources;

use super::{CgroupStats, CreateSpec, ExecSpec, RestoreSpec, Runtime};
use crate::cgroup::oom::MemoryCgroup;
use crate::cgroup::path::{UNIFIED_MOUNT, resolve_systemd};
use crate::error::{Error, Result};
use crate::runtime::forker::Forker;
use crate::stdio::ChildIo;
use crate::task::checkpoint::CheckpointSpec;

use protocol::{Request, Response};
use worker::lc_error;
pub use worker::{delete, load_state, worker, worker_failed};

/// Where libcontainer keeps its state unless the Root option says otherwise.
pub const DEFAULT_STATE_BASE: &str = "/run/containerd/youki";

/// Where libcontainer keeps its state for a namespace: one directory per container.
pub fn state_root(namespace: &str) -> PathBuf {
    state_root_in(None, namespace)
}

/// The same below `base` (runc's Root option), as runc does: `<base>/<namespace>`.
pub fn state_root_in(base: Option<&Path>, namespace: &str) -> PathBuf {
    base.unwrap_or(Path::new(DEFAULT_STATE_BASE))
        .join(namespace)
}

/// Creates the state root and its parent (`/run/containerd/youki`) 0700, or tightens them
/// to 0700 when an older shim left them 0755: whoever gets there first (the daemon at
/// start, a worker's create, the console and idmap directories below it) must not leave a
/// world-traversable directory holding containers' state (CVE-2024-25621's lesson).
pub fn ensure_state_root(root: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)
        .map_err(|e| Error::io(format!("create state root {}", root.display()), e))?;
    for dir in [Some(root), root.parent()].into_iter().flatten() {
        let meta = std::fs::symlink_metadata(dir)
            .map_err(|e| Error::io(format!("stat {}", dir.display()), e))?;
        // Only our own directories: never chmod a directory someone else made or a link.
        // SAFETY: geteuid has no preconditions.
        let ours = meta.is_dir() && meta.uid() == unsafe { libc::geteuid() };
        if ours && meta.mode() & 0o077 != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| Error::io(format!("chmod {}", dir.display()), e))?;
        }
    }
    Ok(())
}

/// How long each kind of worker call may run before its worker, and whatever the worker
/// started (hooks, libcontainer's intermediate process, a half-made init), is killed.
///
/// containerd puts no deadline of its own on Create, Start, Exec, Pause or Delete (only
/// on its `shim delete` cleanup, 5 s, shim shutdown, 3 s, and State, 2 s): the caller's
/// context bounds them. For CRI that is kubelet's runtime-request-timeout, 2 minutes by
/// default, around StartContainer (containerd's task Create and Start). Create's deadline
/// stays under it, so kubelet gets our answer, naming the hook that hung, with the
/// container already cleaned up, rather than giving up on a create that then goes on.
/// Every deadline is far above what a healthy call takes (tens of milliseconds; seconds
/// for GPU or network hooks), so only a hang reaches it.
#[derive(Clone, Copy, Debug)]
pub struct Deadlines {
    /// Rootfs mounts, cgroup setup, prestart/createRuntime/createContainer hooks.
    pub create: Duration,
    /// The start signal and startContainer/poststart hooks.
    pub start: Duration,
    /// Joining the container's namespaces and cgroup; hangs for good in a frozen cgroup.
    pub exec: Duration,
    /// Killing the cgroup, removing it (libcgroups retries rmdir) and poststop hooks.
    pub delete: Duration,
    /// Freezing or thawing (libcgroups' v1 freezer retries up to about 10 s) and cgroup
    /// writes (over D-Bus with the systemd driver).
    pub cgroup: Duration,
    /// CRIU writes all of the container's memory to disk: minutes for a large one.
    pub checkpoint: Duration,
}

/// Overrides every deadline with this many seconds. For tests only, which need a hang to
/// end in seconds rather than minutes; set in containerd's environment, which its shims
/// inherit.
pub const TEST_DEADLINE_ENV: &str = "YOUKI_SHIM_TEST_DEADLINE_SECS";

impl Default for Deadlines {
    fn default() -> Deadlines {
        Deadlines {
            create: Duration::from_secs(90),
            start: Duration::from_secs(60),
            exec: Duration::from_secs(60),
            delete: Duration::from_secs(60),
            cgroup: Duration::from_secs(30),
            checkpoint: Duration::from_secs(600),
        }
    }
}

impl Deadlines {
    /// The defaults, or every one set to `TEST_DEADLINE_ENV`'s seconds when it is set.
    pub fn from_env() -> Deadlines {
        match std::env::var(TEST_DEADLINE_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|&s| s > 0)
        {
            Some(secs) => {
                let d = Duration::from_secs(secs);
                log::warn!("{TEST_DEADLINE_ENV}: every worker deadline is {d:?} (tests only)");
                Deadlines {
                    create: d,
                    start: d,
                    exec: d,
                    delete: d,
                    cgroup: d,
                    checkpoint: d,
                }
            }
            None => Deadlines::default(),
        }
    }
}

pub struct YoukiRuntime {
    forker: Arc<Forker>,
    root: PathBuf,
    deadlines: Deadlines,
    /// Where the systemd driver put each container's cgroup on a v2 host (relative to
    /// the hierarchy's root), resolved on first use and kept until Delete: the unit's
    /// path does not change while it lives.
    systemd_dirs: Mutex<HashMap<String, PathBuf>>,
}

impl YoukiRuntime {
    pub fn new(forker: Arc<Forker>, root: PathBuf, deadlines: Deadlines) -> YoukiRuntime {
        YoukiRuntime {
            forker,
            root,
            deadlines,
            systemd_dirs: Mutex::new(HashMap::new()),
        }
    }

    /// Runs `req` in a worker, for at most `deadline`; `what` names it in errors.
    async fn call(
        &self,
        what: &str,
        deadline: Duration,
        req: &Request,
        fds: &[OwnedFd],
    ) -> Result<Option<i32>> {
        let bytes =
            serde_json::to_vec(req).map_err(|e| Error::Internal(format!("encode request: {e}")))?;
        let reply = self.forker.call(what, deadline, &bytes, fds).await?;
        let resp: Response = serde_json::from_slice(&reply)
            .map_err(|e| Error::Internal(format!("decode worker reply: {e}")))?;
        resp.into_result()
    }

    /// Loads container `id`, retrying (off the thread) a failure that a moment later is
    /// gone (see `worker::transient`).
    async fn load(&self, what: &str, id: &str) -> Result<Container> {
        let mut tries = 0;
        loop {
            match Container::load(self.root.join(id)) {
                Err(e) if worker::transient(&e) && tries < worker::TRANSIENT_RETRIES => {
                    tries += 1;
                    tokio::time::sleep(worker::TRANSIENT_PAUSE).await;
                }
                other => return other.map_err(|e| lc_error(what, id, e)),
            }
        }
    }

    /// The container's cgroup for reading and signalling from the daemon. The same
    /// hierarchy and directory libcgroups' `create_cgroup_manager` picks, but always through
    /// a filesystem manager: with the systemd driver on v2 the unit's directory
    /// (`systemd_dir`) instead of a systemd manager, which would connect to D-Bus.
    async fn cgroup(&self, what: &str, id: &str) -> Result<DaemonCgroup> {
        use libcgroups::common::CgroupSetup;
        let c = self.load(what, id).await?;
        let path = c.spec().map_err(|e| lc_error(what, id, e))?.cgroup_path;
        let failed =
            |e: &dyn std::fmt::Display| Error::Runtime(format!("{what} {id}: cgroup: {e}"));
        match libcgroups::common::get_cgroup_setup().map_err(|e| failed(&e))? {
            CgroupSetup::Legacy | CgroupSetup::Hybrid => Ok(DaemonCgroup {
                manager: AnyCgroupManager::V1(
                    libcgroups::v1::manager::Manager::new(&path).map_err(|e| failed(&e))?,
                ),
                unified: None,
                path,
            }),
            CgroupSetup::Unified => {
                // The OCI rule libcgroups follows: an absolute path is a cgroupfs path
                // even with the systemd driver.
                let dir = if c.systemd() && !path.is_absolute() {
                    self.systemd_dir(id, &path, c.pid().map(|p| p.as_raw()))
                        .map_err(|e| failed(&e))?
                } else {
                    path.clone()
                };
                let full = Path::new(UNIFIED_MOUNT).join(dir.strip_prefix("/").unwrap_or(&dir));
                let manager = libcgroups::v2::manager::Manager::new(UNIFIED_MOUNT.into(), dir)
                    .map_err(|e| failed(&e))?;
                Ok(DaemonCgroup {
                    unified: Some(full),
                    manager: AnyCgroupManager::V2(manager),
                    path,
                })
            }
        }
    }

    /// The v2 directory of systemd-driver container `id` (`slice:prefix:name` in
    /// `cgroups_path`), resolved once: see `crate::cgroup::path::resolve_systemd`.
    fn systemd_dir(&self, id: &str, cgroups_path: &Path, pid: Option<i32>) -> Result<PathBuf> {
        let mut dirs = self
            .systemd_dirs
            .lock()
            .map_err(|_| Error::Internal("systemd cgroup cache poisoned".into()))?;
        if let Some(dir) = dirs.get(id) {
            return Ok(dir.clone());
        }
        let mount = Path::new(UNIFIED_MOUNT);
        let dir = resolve_systemd(
            mount,
            Path::new("/proc"),
            &cgroups_path.to_string_lossy(),
            pid,
        )?;
        // Kept only once seen: a unit found gone is asked about again next time.
        if mount.join(dir.strip_prefix("/").unwrap_or(&dir)).is_dir() {
            dirs.insert(id.to_string(), dir.clone());
        }
        Ok(dir)
    }

    fn forget_cgroup(&self, id: &str) {
        if let Ok(mut dirs) = self.systemd_dirs.lock() {
            dirs.remove(id);
        }
    }

    async fn cgroup_pids(&self, id: &str) -> Result<Vec<i32>> {
        let cg = self.cgroup("pids", id).await?;
        kill::all_pids(&cg.manager, cg.unified.as_deref(), id)
    }

    /// Signals every process of container `id` through its cgroup (see `kill`).
    async fn signal_all(&self, id: &str, signal: i32) -> Result<()> {
        let cg = self.cgroup("kill", id).await?;
        let freezer = match &cg.manager {
            AnyCgroupManager::V1(_) => Some(kill::v1_freezer_dir(&cg.path)?),
            _ => None,
        };
        kill::signal_cgroup(
            &cg.manager,
            cg.unified.as_deref(),
            freezer.as_deref(),
            id,
            signal,
        )
        .await
    }
}

/// A container's cgroup as the daemon reads it.
struct DaemonCgroup {
    /// A filesystem manager: v1, or v2 on the container's directory.
    manager: AnyCgroupManager,
    /// The container's directory on a v2 host.
    unified: Option<PathBuf>,
    /// `linux.cgroupsPath` as libcontainer recorded it at create.
    path: PathBuf,
}

/// Splits the process's stdio into what travels as fds and the console socket path.
fn split_io(io: ChildIo) -> (Vec<OwnedFd>, Option<PathBuf>) {
    match io {
        ChildIo::Fds(s) => (vec![s.stdin, s.stdout, s.stderr], None),
        ChildIo::Console(p) => (Vec::new(), Some(p)),
    }
}

#[async_trait::async_trait]
impl Runtime for YoukiRuntime {
    fn console_dir(&self) -> PathBuf {
        self.root.join(".consoles")
    }

    async fn create(&self, spec: CreateSpec) -> Result<i32> {
        let (fds, console_socket) = split_io(spec.stdio);
        let req = Request::Create {
            id: spec.id.clone(),
            bundle: spec.bundle.clone(),
            root: self.root.clone(),
            rootfs: spec.rootfs,
            systemd_cgroup: spec.systemd_cgroup,
            no_pivot_root: spec.no_pivot_root,
            no_new_keyring: spec.no_new_keyring,
            console_socket,
        };
        let what = format!("create {}", spec.id);
        match self.call(&what, self.deadlines.create, &req, &fds).await {
            Ok(pid) => {
                pid.ok_or_else(|| Error::Internal(format!("create {}: no pid in reply", spec.id)))
            }
            Err(Error::DeadlineExceeded(m)) => {
                // The worker died mid-way and could not undo its work: a killed create
                // leaves nothing behind either (state, cgroup, mounts, an init waiting
                // in it), so a retry with the same ID works.
                let cleanup = match self.delete(&spec.id, &spec.bundle).await {
                    Ok(()) => "; removed what it had made".to_string(),
                    Err(e) => {
                        log::warn!("cleanup after {what} timed out: {e}");
                        format!("; cleanup failed too: {e}")
                    }
                };
                Err(Error::DeadlineExceeded(format!("{m}{cleanup}")))
            }
            Err(e) => Err(e),
        }
    }

    async fn start(&self, id: &str) -> Result<()> {
        // On expiry the container is left as it is (running if only a poststart hook
        // hung, as the OCI spec has it): containerd's Delete removes it.
        self.call(
            &format!("start {id}"),
            self.deadlines.start,
            &Request::Start {
                id: id.to_string(),
                root: self.root.clone(),
            },
            &[] as &[OwnedFd],
        )
        .await
        .map(|_| ())
    }

    async fn exec(&self, spec: ExecSpec) -> Result<i32> {
        let (fds, console_socket) = split_io(spec.stdio);
        let process = String::from_utf8(spec.process).map_err(|e| {
            Error::InvalidArgument(format!(
                "exec {}: process spec is not UTF-8: {e}",
                spec.exec_id
            ))
        })?;
        let req = Request::Exec {
            id: spec.id.clone(),
            exec_id: spec.exec_id.clone(),
            root: self.root.clone(),
            bundle: spec.bundle,
            process,
            console_socket,
        };
        // On expiry the group kill takes the half-made exec process with the worker.
        self.call(
            &format!("exec {} in {}", spec.exec_id, spec.id),
            self.deadlines.exec,
            &req,
            &fds,
        )
        .await?
        .ok_or_else(|| Error::Internal(format!("exec {}: no pid in reply", spec.exec_id)))
    }

    async fn kill(&self, id: &str, pid: i32, signal: i32, all: bool) -> Result<()> {
        if all {
            return self.signal_all(id, signal).await;
        }
        // Raw kill(2): nix's Signal has no real-time signals (SIGRTMIN+3 stops systemd
        // in a container); the pod already checked the number is 1..=64.
        // SAFETY: kill takes plain integers.
        if unsafe { libc::kill(pid, signal) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ESRCH) {
                return Err(Error::io(
                    format!("kill {pid} in {id} with signal {signal}"),
                    e,
                ));
            }
        }
        Ok(())
    }

    async fn kill_orphans(&self, id: &str) -> Result<bool> {
        if !self.root.join(id).exists() {
            // Deleted already (the init of a created container dies in Delete), and its
            // cgroup with it.
            return Ok(false);
        }
        let c = self.load("kill", id).await?;
        let config = std::fs::read(c.bundle().join("config.json"));
        if config.as_deref().is_ok_and(kill::has_own_pid_namespace) {
            return Ok(false);
        }
        self.signal_all(id, libc::SIGKILL).await?;
        Ok(true)
    }

    // The freezer polls with sleeps until the cgroup is frozen (v1 retries for seconds;
    // a process stuck in the kernel can keep it FREEZING), and cgroup writes with the
    // systemd driver are D-Bus calls: a worker runs them, off the daemon's thread.
    async fn pause(&self, id: &str) -> Result<()> {
        let req = Request::Pause {
            id: id.to_string(),
            root: self.root.clone(),
        };
        self.call(
            &format!("pause {id}"),
            self.deadlines.cgroup,
            &req,
            &[] as &[OwnedFd],
        )
        .await
        .map(|_| ())
    }

    async fn resume(&self, id: &str) -> Result<()> {
        let req = Request::Resume {
            id: id.to_string(),
            root: self.root.clone(),
        };
        self.call(
            &format!("resume {id}"),
            self.deadlines.cgroup,
            &req,
            &[] as &[OwnedFd],
        )
        .await
        .map(|_| ())
    }

    async fn update(&self, id: &str, resources: &[u8]) -> Result<()> {
        // Checked here, so a bad request is InvalidArgument naming the value.
        let _: LinuxResources = serde_json::from_slice(resources).map_err(|e| {
            Error::InvalidArgument(format!(
                "update {id}: resources are not an OCI LinuxResources: {e}: {}",
                String::from_utf8_lossy(resources)
            ))
        })?;
        let req = Request::Update {
            id: id.to_string(),
            root: self.root.clone(),
            resources: String::from_utf8_lossy(resources).into_owned(),
        };
        self.call(
            &format!("update {id}"),
            self.deadlines.cgroup,
            &req,
            &[] as &[OwnedFd],
        )
        .await
        .map(|_| ())
    }

    async fn memory_cgroup(&self, _id: &str, pid: i32) -> Result<Option<MemoryCgroup>> {
        // From the init's /proc entry: right for cgroupfs and systemd drivers, v1 and v2.
        crate::cgroup::oom::of_pid(pid)
    }

    async fn stats(&self, id: &str) -> Result<CgroupStats> {
        let cg = self.cgroup("stats", id).await?;
        let stats = match &cg.unified {
            // From the controllers the cgroup has (systemd never enables hugetlb).
            Some(dir) => crate::cgroup::v2::stats(dir)
                .map_err(|e| Error::Runtime(format!("stats of {id}: {e}")))?,
            None => cg
                .manager
                .stats()
                .map_err(|e| Error::Runtime(format!("stats of {id}: {e}")))?,
        };
        Ok(CgroupStats {
            stats,
            unified: cg.unified.is_some(),
        })
    }

    async fn criu_ready(&self, what: &str) -> Result<()> {
        crate::task::checkpoint::criu_ready(what).await
    }

    async fn checkpoint(&self, id: &str, spec: &CheckpointSpec) -> Result<()> {
        // CRIU runs as a child of the caller (rust-criu's swrk): a worker, not the daemon.
        let req = Request::Checkpoint {
            id: id.to_string(),
            root: self.root.clone(),
            spec: spec.clone(),
        };
        self.call(
            &format!("checkpoint {id}"),
            self.deadlines.checkpoint,
            &req,
            &[] as &[OwnedFd],
        )
        .await
        .map(|_| ())
    }

    async fn restore(&self, spec: RestoreSpec) -> Result<i32> {
        let ChildIo::Fds(s) = spec.stdio else {
            return Err(Error::FailedPrecondition(format!(
                "restore {}: restoring a container with a terminal is not supported by this shim",
                spec.id
            )));
        };
        let fds = vec![s.stdin, s.stdout, s.stderr];
        // CRIU runs as the worker's child and restores the init as the worker's child too
        // (see `restore`): the daemon adopts it when the worker exits.
        let req = Request::Restore {
            id: spec.id.clone(),
            bundle: spec.bundle.clone(),
            root: self.root.clone(),
            rootfs: spec.rootfs,
            systemd_cgroup: spec.systemd_cgroup,
            image: spec.image,
        };
        let what = format!("restore {}", spec.id);
        match self
            .call(&what, self.deadlines.checkpoint, &req, &fds)
            .await
        {
            Ok(pid) => {
                pid.ok_or_else(|| Error::Internal(format!("restore {}: no pid in reply", spec.id)))
            }
            Err(Error::DeadlineExceeded(m)) => {
                // As for Create: whatever the killed worker made goes.
                let cleanup = match self.delete(&spec.id, &spec.bundle).await {
                    Ok(()) => "; removed what it had made".to_string(),
                    Err(e) => format!("; cleanup failed too: {e}"),
                };
                Err(Error::DeadlineExceeded(format!("{m}{cleanup}")))
            }
            Err(e) => Err(e),
        }
    }

    async fn delete(&self, id: &str, bundle: &Path) -> Result<()> {
        let req = Request::Delete {
            id: id.to_string(),
            root: self.root.clone(),
            bundle: bundle.to_path_buf(),
        };
        self.call(
            &format!("delete {id}"),
            self.deadlines.delete,
            &req,
            &[] as &[OwnedFd],
        )
        .await?;
        // Gone with its unit: a new container may reuse the ID in another slice.
        self.forget_cgroup(id);
        Ok(())
    }

    async fn pids(&self, id: &str, _pid: i32) -> Result<Vec<u32>> {
        Ok(self
            .cgroup_pids(id)
            .await?
            .into_iter()
            .map(|p| p as u32)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_state_root_is_made_and_kept_private() {
        let top = std::env::temp_dir().join(format!("state-root-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&top);
        // New: the root and its parent are made 0700.
        let root = top.join("youki/default");
        ensure_state_root(&root).unwrap();
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(root.parent().unwrap()), 0o700);
        // Left 0755 by an older shim: tightened.
        let old = top.join("old/k8s.io");
        std::fs::create_dir_all(&old).unwrap();
        for d in [&old, &top.join("old")] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        ensure_state_root(&old).unwrap();
        assert_eq!(mode(&old), 0o700);
        assert_eq!(mode(&top.join("old")), 0o700);
        std::fs::remove_dir_all(&top).unwrap();
    }
}
