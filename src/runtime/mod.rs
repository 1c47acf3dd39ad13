//! The seam between the pod (Task API semantics) and whatever really runs containers:
//! `youki` drives libcontainer in forked workers; `fake` serves unit tests.

use std::path::PathBuf;

use crate::cgroup::oom::MemoryCgroup;
use crate::error::Result;
use crate::runtime::mount::Mount;
use crate::stdio::ChildIo;
use crate::task::checkpoint::{CheckpointSpec, RestoreImage};

pub mod fds;
pub mod forker;
pub mod idmap;
pub mod mount;
pub mod nss;
pub mod propagation;
pub mod youki;

#[cfg(test)]
pub mod fake;

pub struct CreateSpec {
    pub id: String,
    pub bundle: PathBuf,
    pub rootfs: Vec<Mount>,
    pub stdio: ChildIo,
    pub systemd_cgroup: bool,
    /// runc's NoPivotRoot: libcontainer's `no_pivot`.
    pub no_pivot_root: bool,
    /// runc's NoNewKeyring: the container keeps the shim's session keyring.
    pub no_new_keyring: bool,
}

/// A container to bring back from a checkpoint (runc-v2's restore at Start): Create's
/// bundle, rootfs, stdio and cgroup driver, and where the checkpoint is.
pub struct RestoreSpec {
    pub id: String,
    pub bundle: PathBuf,
    pub rootfs: Vec<Mount>,
    pub stdio: ChildIo,
    pub systemd_cgroup: bool,
    pub image: RestoreImage,
}

/// What Stats reports: libcgroups' numbers and which hierarchy they come from (containerd
/// expects its v1 `Metrics` message on a v1 or hybrid host, v2 `Metrics` on a unified one).
pub struct CgroupStats {
    pub stats: libcgroups::stats::Stats,
    pub unified: bool,
}

/// A process to run inside a running container (Task API Exec + Start).
pub struct ExecSpec {
    pub id: String,
    pub exec_id: String,
    pub bundle: PathBuf,
    /// The OCI runtime-spec `Process` as JSON, exactly as containerd sent it.
    pub process: Vec<u8>,
    pub stdio: ChildIo,
}

/// Every call names the container by ID. Exits are not returned here: the runtime's
/// processes are reaped by the daemon and reported to the pod as (pid, status).
#[async_trait::async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// Where console sockets for terminals are bound (a directory only the daemon uses).
    fn console_dir(&self) -> PathBuf;
    /// Creates the container, stopped before the user process runs. Returns the init's PID.
    async fn create(&self, spec: CreateSpec) -> Result<i32>;
    /// Lets the created init run the user process.
    async fn start(&self, id: &str) -> Result<()>;
    /// Runs a process inside the running container, in its namespaces, cgroup and seccomp
    /// profile. Returns its PID once it has exec'd.
    async fn exec(&self, spec: ExecSpec) -> Result<i32>;
    /// Sends `signal` to the init (`pid`), or with `all` to every process of the container
    /// (also once its init has exited): for SIGKILL through the cgroup, so that no
    /// process escapes by forking meanwhile.
    async fn kill(&self, id: &str, pid: i32, signal: i32, all: bool) -> Result<()>;
    /// The init of `id` has exited. A container without a PID namespace of its own (it
    /// joined another's, or the host's) keeps its other processes then, where the kernel
    /// would have killed them with a namespace's init: kill them all, as runc-v2 does.
    /// Returns whether the container was such a one.
    async fn kill_orphans(&self, id: &str) -> Result<bool>;
    /// Freezes every process of the container (cgroup freezer).
    async fn pause(&self, id: &str) -> Result<()>;
    /// Thaws a paused container.
    async fn resume(&self, id: &str) -> Result<()>;
    /// Applies new resource limits (an OCI `LinuxResources` as JSON) to the live cgroup.
    async fn update(&self, id: &str, resources: &[u8]) -> Result<()>;
    /// The container's memory cgroup, to watch for OOM kills (`None`: nothing to watch).
    async fn memory_cgroup(&self, id: &str, pid: i32) -> Result<Option<MemoryCgroup>>;
    /// The container's cgroup statistics, and whether they come from cgroup v2.
    async fn stats(&self, id: &str) -> Result<CgroupStats>;
    /// Whether this host's CRIU can checkpoint and restore; the error says why not, in
    /// CRIU's own words (FailedPrecondition). `what` names the operation.
    async fn criu_ready(&self, what: &str) -> Result<()>;
    /// Checkpoints the running container with CRIU into `spec.image_path`.
    async fn checkpoint(&self, id: &str, spec: &CheckpointSpec) -> Result<()>;
    /// Restores a container from a CRIU checkpoint, running. Returns the restored init's
    /// PID. On failure nothing of it is left.
    async fn restore(&self, spec: RestoreSpec) -> Result<i32>;
    /// Removes everything of the container: processes, cgroup, state, rootfs mounts.
    async fn delete(&self, id: &str, bundle: &std::path::Path) -> Result<()>;
    /// PIDs of every process in the container.
    async fn pids(&self, id: &str, pid: i32) -> Result<Vec<u32>>;
}
