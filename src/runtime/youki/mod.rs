//! The real runtime: youki's libcontainer, in two halves. What runs in the daemon is here:
//! kill, pids, cgroup reads and writes are plain syscalls and file I/O. Whatever forks or may
//! block (create, start, exec, delete with its hooks, checkpoint) is sent over `protocol` to
//! a short-lived forked worker (`forker`) that runs `worker`.

mod protocol;
mod worker;

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use libcgroups::common::{AnyCgroupManager, CgroupManager, ControllerOpt};
use libcontainer::container::Container;
use libcontainer::oci_spec::runtime::LinuxResources;

use super::{CgroupStats, CreateSpec, ExecSpec, Runtime};
use crate::cgroup::oom::MemoryCgroup;
use crate::error::{Error, Result};
use crate::runtime::forker::Forker;
use crate::stdio::ChildIo;
use crate::task::checkpoint::CheckpointSpec;

use protocol::{Request, Response};
use worker::lc_error;
pub use worker::{delete, worker, worker_failed};

/// Where libcontainer keeps its state unless the Root option says otherwise.
pub const DEFAULT_STATE_BASE: &str = "/run/containerd/youki";

/// Where libcontainer keeps its state for a namespace: one directory per container.
pub fn state_root(namespace: &str) -> PathBuf {
    state_root_in(None, namespace)
}

/// The same below `base` (runc's Root option), as runc does: `<base>/<namespace>`.
pub fn state_root_in(base: Option<&Path>, namespace: &str) -> PathBuf {
    base.unwrap_or(Path::new(DEFAULT_STATE_BASE)).join(namespace)
}

pub struct YoukiRuntime {
    forker: Arc<Forker>,
    root: PathBuf,
}

impl YoukiRuntime {
    pub fn new(forker: Arc<Forker>, root: PathBuf) -> YoukiRuntime {
        YoukiRuntime { forker, root }
    }

    async fn call(&self, req: &Request, fds: &[OwnedFd]) -> Result<Option<i32>> {
        let bytes =
            serde_json::to_vec(req).map_err(|e| Error::Internal(format!("encode request: {e}")))?;
        let reply = self.forker.call(&bytes, fds).await?;
        let resp: Response = serde_json::from_slice(&reply)
            .map_err(|e| Error::Internal(format!("decode worker reply: {e}")))?;
        resp.into_result()
    }

    fn load(&self, what: &str, id: &str) -> Result<Container> {
        Container::load(self.root.join(id)).map_err(|e| lc_error(what, id, e))
    }

    /// The container's cgroup, as libcontainer recorded it at create.
    fn cgroup(&self, what: &str, id: &str) -> Result<AnyCgroupManager> {
        let c = self.load(what, id)?;
        let cfg = c.spec().map_err(|e| lc_error(what, id, e))?;
        libcgroups::common::create_cgroup_manager(libcgroups::common::CgroupConfig {
            cgroup_path: cfg.cgroup_path.clone(),
            systemd_cgroup: c.systemd(),
            container_name: id.to_string(),
        })
        .map_err(|e| Error::Runtime(format!("{what} {id}: cgroup: {e}")))
    }

    fn cgroup_pids(&self, id: &str) -> Result<Vec<i32>> {
        self.cgroup("pids", id)?
            .get_all_pids()
            .map(|v| v.into_iter().map(|p| p.as_raw()).collect())
            .map_err(|e| Error::Runtime(format!("pids of {id}: {e}")))
    }
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
            bundle: spec.bundle,
            root: self.root.clone(),
            rootfs: spec.rootfs,
            systemd_cgroup: spec.systemd_cgroup,
            no_pivot_root: spec.no_pivot_root,
            no_new_keyring: spec.no_new_keyring,
            console_socket,
        };
        self.call(&req, &fds)
            .await?
            .ok_or_else(|| Error::Internal(format!("create {}: no pid in reply", spec.id)))
    }

    async fn start(&self, id: &str) -> Result<()> {
        self.call(
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
        self.call(&req, &fds)
            .await?
            .ok_or_else(|| Error::Internal(format!("exec {}: no pid in reply", spec.exec_id)))
    }

    async fn kill(&self, id: &str, pid: i32, signal: i32, all: bool) -> Result<()> {
        let targets = if all {
            self.cgroup_pids(id)?
        } else {
            vec![pid]
        };
        for p in targets {
            // Raw kill(2): nix's Signal has no real-time signals (SIGRTMIN+3 stops systemd
            // in a container); the pod already checked the number is 1..=64.
            // SAFETY: kill takes plain integers.
            if unsafe { libc::kill(p, signal) } != 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::ESRCH) {
                    return Err(Error::io(
                        format!("kill {p} in {id} with signal {signal}"),
                        e,
                    ));
                }
            }
        }
        Ok(())
    }

    // Freezer, update and stats are cgroup file writes and reads: no fork, so they run
    // here in the daemon rather than in a fork-helper worker.
    async fn pause(&self, id: &str) -> Result<()> {
        self.load("pause", id)?
            .pause()
            .map_err(|e| lc_error("pause", id, e))
    }

    async fn resume(&self, id: &str) -> Result<()> {
        self.load("resume", id)?
            .resume()
            .map_err(|e| lc_error("resume", id, e))
    }

    async fn update(&self, id: &str, resources: &[u8]) -> Result<()> {
        let resources: LinuxResources = serde_json::from_slice(resources).map_err(|e| {
            Error::InvalidArgument(format!(
                "update {id}: resources are not an OCI LinuxResources: {e}: {}",
                String::from_utf8_lossy(resources)
            ))
        })?;
        self.cgroup("update", id)?
            .apply(&ControllerOpt {
                resources: &resources,
                disable_oom_killer: false,
                oom_score_adj: None,
                freezer_state: None,
            })
            .map_err(|e| Error::Runtime(format!("update {id}: {e}")))
    }

    async fn memory_cgroup(&self, _id: &str, pid: i32) -> Result<Option<MemoryCgroup>> {
        // From the init's /proc entry: right for cgroupfs and systemd drivers, v1 and v2.
        crate::cgroup::oom::of_pid(pid)
    }

    async fn stats(&self, id: &str) -> Result<CgroupStats> {
        let cgroup = self.cgroup("stats", id)?;
        let unified = !matches!(cgroup, AnyCgroupManager::V1(_));
        let stats = cgroup
            .stats()
            .map_err(|e| Error::Runtime(format!("stats of {id}: {e}")))?;
        Ok(CgroupStats { stats, unified })
    }

    async fn checkpoint(&self, id: &str, spec: &CheckpointSpec) -> Result<()> {
        // CRIU runs as a child of the caller (rust-criu's swrk): a worker, not the daemon.
        let req = Request::Checkpoint {
            id: id.to_string(),
            root: self.root.clone(),
            spec: spec.clone(),
        };
        self.call(&req, &[] as &[OwnedFd]).await.map(|_| ())
    }

    async fn delete(&self, id: &str, bundle: &Path) -> Result<()> {
        let req = Request::Delete {
            id: id.to_string(),
            root: self.root.clone(),
            bundle: bundle.to_path_buf(),
        };
        self.call(&req, &[] as &[OwnedFd]).await.map(|_| ())
    }

    async fn pids(&self, id: &str, _pid: i32) -> Result<Vec<u32>> {
        Ok(self
            .cgroup_pids(id)?
            .into_iter()
            .map(|p| p as u32)
            .collect())
    }
}
