//! containerd 2.x's Sandbox API (`containerd.runtime.sandbox.v1.Sandbox`), served next to
//! the Task API when a CRI runtime handler says `sandboxer = "shim"`. containerd then
//! makes no pause container itself (no image, no snapshot): it starts this shim for the
//! pod (ID = sandbox ID, a bundle with no config.json), calls CreateSandbox with the pod's
//! `PodSandboxConfig` and the network namespace it set up, then StartSandbox. The shim
//! makes the pause container through libcontainer, as one more container of its pod:
//! the siblings' Tasks come to this same shim (`start` groups them by their sandbox-id
//! annotation) and join its namespaces through `/proc/<pid>/ns/*` exactly as with the
//! podsandbox sandboxer.
//!
//! After a containerd restart nothing is re-created: containerd's "shim" sandbox
//! controller reconnects to the shim through the bundle's bootstrap.json, asks the pause
//! container's task for its Pids (to tell a live shim from a leaked one), and CRI's
//! recovery asks SandboxStatus then WaitSandbox; all three are answered from the pod this
//! daemon still holds.

pub mod config;
pub mod files;
pub mod spec;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use containerd_shim_protos::sandbox_api::{
    CreateSandboxRequest, CreateSandboxResponse, PingRequest, PingResponse, PlatformRequest,
    PlatformResponse, SandboxMetricsRequest, SandboxMetricsResponse, SandboxStatusRequest,
    SandboxStatusResponse, ShutdownSandboxRequest, ShutdownSandboxResponse, StartSandboxRequest,
    StartSandboxResponse, StopSandboxRequest, StopSandboxResponse, WaitSandboxRequest,
    WaitSandboxResponse,
};
use containerd_shim_protos::sandbox_async::{Sandbox, create_sandbox};
use tokio::sync::Notify;
use ttrpc::r#async::{Service, TtrpcContext};

use crate::cgroup::metrics;
use crate::error::{Error, Result};
use crate::ids::validate_id;
use crate::shim::service::{timestamp, to_completion};
use crate::shim::socket::ServedSocket;
use crate::shim::validate;
use crate::stdio::StdioPaths;
use crate::task::pod::{CreateParams, Pod};
use crate::task::process::Exit;
use crate::task::state::Status;

/// CRI's names for a sandbox's state (`runtime.v1.PodSandboxState`), which containerd's
/// CRI maps SandboxStatus.state back through.
const READY: &str = "SANDBOX_READY";
const NOT_READY: &str = "SANDBOX_NOTREADY";
/// How long StopSandbox and ShutdownSandbox wait for the killed pause to be reaped.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// The pod's sandbox, once CreateSandbox made it.
struct State {
    id: String,
    bundle: PathBuf,
    cgroup_parent: String,
    created_at: SystemTime,
    /// The pause container's exit, kept after ShutdownSandbox deleted it.
    exit: Option<Exit>,
    shut_down: bool,
}

pub struct SandboxService {
    pub pod: Arc<Pod>,
    /// The state base (the Root option, or libcontainer's default): the pause root and
    /// bundles live below it.
    pub base: PathBuf,
    pub namespace: String,
    /// The daemon exits when notified (shared with the Task service's Shutdown).
    pub shutdown: Arc<Notify>,
    pub socket: Arc<ServedSocket>,
    /// The pod's hostname/hosts/resolv.conf/shm, for the Task service's Create of siblings.
    pub files: files::Published,
    state: Mutex<Option<State>>,
}

pub fn services(s: Arc<SandboxService>) -> std::collections::HashMap<String, Service> {
    create_sandbox(s)
}

/// containerd's (GOARCH) name for this machine's architecture.
fn goarch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "x86" => "386",
        "arm" => "arm",
        other => other,
    }
}

impl SandboxService {
    pub fn new(
        pod: Arc<Pod>,
        base: PathBuf,
        namespace: String,
        shutdown: Arc<Notify>,
        socket: Arc<ServedSocket>,
        files: files::Published,
    ) -> SandboxService {
        SandboxService {
            pod,
            base,
            namespace,
            shutdown,
            socket,
            files,
            state: Mutex::new(None),
        }
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut Option<State>) -> T) -> T {
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    /// The sandbox `id` names, if it is this shim's.
    fn known(&self, id: &str, verb: &str) -> Result<()> {
        validate_id(id)?;
        self.with_state(|s| match s {
            Some(s) if s.id == id => Ok(()),
            _ => Err(Error::NotFound(format!(
                "{verb}: sandbox {id:?} is not served by this shim"
            ))),
        })
    }

    async fn create(&self, req: CreateSandboxRequest) -> Result<()> {
        let id = req.sandbox_id.clone();
        validate_id(&id)?;
        let pod_config = config::decode(req.options.as_ref())?;
        let bundle = spec::bundle_dir(&self.base, &self.namespace, &id);
        self.with_state(|s| match s {
            Some(s) => Err(Error::AlreadyExists(format!(
                "CreateSandbox {id:?}: this shim already serves sandbox {:?}",
                s.id
            ))),
            None => {
                *s = Some(State {
                    id: id.clone(),
                    bundle: bundle.clone(),
                    cgroup_parent: pod_config.cgroup_parent.clone(),
                    created_at: SystemTime::now(),
                    exit: None,
                    shut_down: false,
                });
                Ok(())
            }
        })?;
        // The pod's files first (CRI writes them before it starts the pause container).
        let made = match files::setup(&bundle, &pod_config) {
            Ok(()) => {
                self.make_pause(&id, &bundle, &req.netns_path, &pod_config)
                    .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = made {
            // Nothing left behind: the ID is free for a retry.
            if let Err(r) = files::remove(&bundle) {
                log::warn!("CreateSandbox {id}: remove {}: {r}", bundle.display());
            }
            self.with_state(|s| *s = None);
            return Err(e);
        }
        files::publish(
            &self.files,
            Some(files::PodSandbox {
                id,
                dir: bundle,
                systemd_cgroup: spec::systemd_parent(&pod_config.cgroup_parent),
            }),
        );
        Ok(())
    }

    async fn make_pause(
        &self,
        id: &str,
        bundle: &Path,
        netns_path: &str,
        pod_config: &config::PodConfig,
    ) -> Result<()> {
        if !netns_path.is_empty() {
            validate::absolute_path(&format!("CreateSandbox {id:?}: netns_path"), netns_path)?;
        }
        // On this thread (no blocking pool: the daemon forks its workers and must stay
        // single-threaded): after the first pod a stat and a statvfs.
        let rootfs = spec::ensure_rootfs(&self.base)?;
        let spec = spec::pause_spec(&spec::SpecInput {
            id,
            rootfs: &rootfs,
            netns_path,
            pod: pod_config,
            cgroup_v2: spec::cgroup_v2(),
            own_oom_score_adj: spec::own_oom_score_adj(),
        })?;
        spec::write_bundle(bundle, &spec)?;
        let pod = self.pod.clone();
        let params = CreateParams {
            id: id.to_string(),
            bundle: bundle.to_path_buf(),
            rootfs: Vec::new(),
            stdio: StdioPaths::default(),
            systemd_cgroup: spec::systemd_parent(&pod_config.cgroup_parent),
            no_pivot_root: false,
            no_new_keyring: false,
            checkpoint: String::new(),
            parent_checkpoint: String::new(),
            criu_work_path: None,
        };
        // Run to the end even if containerd goes away mid-call.
        to_completion("create the pause container", async move {
            pod.create(params).await
        })
        .await?;
        Ok(())
    }

    /// Kills the pause container (SIGKILL, as containerd's podsandbox controller stops it)
    /// and waits up to `wait` for its exit.
    async fn stop(&self, id: &str, wait: Duration) -> Result<()> {
        match self.pod.state(id, "").await {
            Ok(s) if s.exit.is_some() => return Ok(()),
            Ok(_) => {}
            Err(Error::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        }
        match self.pod.kill(id, "", libc::SIGKILL as u32, true).await {
            Ok(()) | Err(Error::NotFound(_)) => {}
            // Never started (Created): Delete kills it.
            Err(Error::FailedPrecondition(_)) => return Ok(()),
            Err(e) => return Err(e),
        }
        if tokio::time::timeout(wait, self.pod.wait(id, ""))
            .await
            .is_err()
        {
            return Err(Error::DeadlineExceeded(format!(
                "sandbox {id:?}: its pause container was not reaped within {wait:?} of SIGKILL"
            )));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Sandbox for SandboxService {
    async fn create_sandbox(
        &self,
        _: &TtrpcContext,
        req: CreateSandboxRequest,
    ) -> ttrpc::Result<CreateSandboxResponse> {
        log::info!(
            "CreateSandbox {} (netns {:?}, bundle {:?})",
            req.sandbox_id,
            req.netns_path,
            req.bundle_path
        );
        self.create(req).await?;
        Ok(CreateSandboxResponse::new())
    }

    async fn start_sandbox(
        &self,
        _: &TtrpcContext,
        req: StartSandboxRequest,
    ) -> ttrpc::Result<StartSandboxResponse> {
        self.known(&req.sandbox_id, "StartSandbox")?;
        let pod = self.pod.clone();
        let id = req.sandbox_id.clone();
        let pid = to_completion("start the pause container", async move {
            pod.start(&id, "").await
        })
        .await?;
        let created_at = self.with_state(|s| s.as_ref().map(|s| s.created_at));
        let mut resp = StartSandboxResponse::new();
        resp.pid = pid as u32;
        resp.created_at = created_at.map(timestamp).into();
        Ok(resp)
    }

    async fn platform(
        &self,
        _: &TtrpcContext,
        req: PlatformRequest,
    ) -> ttrpc::Result<PlatformResponse> {
        self.known(&req.sandbox_id, "Platform")?;
        let mut resp = PlatformResponse::new();
        let p = resp.platform.mut_or_insert_default();
        p.os = "linux".into();
        p.architecture = goarch().into();
        Ok(resp)
    }

    async fn stop_sandbox(
        &self,
        _: &TtrpcContext,
        req: StopSandboxRequest,
    ) -> ttrpc::Result<StopSandboxResponse> {
        self.known(&req.sandbox_id, "StopSandbox")?;
        let wait = match req.timeout_secs {
            0 => STOP_WAIT,
            s => Duration::from_secs(s.into()),
        };
        // CRI stops every container of the pod before it stops the sandbox; a sibling
        // still running keeps its own namespaces open, so it is not ours to stop here.
        self.stop(&req.sandbox_id, wait).await?;
        // As CRI's StopPodSandbox: the pod's /dev/shm goes with the pod's processes.
        if let Some(b) = self.with_state(|s| s.as_ref().map(|s| s.bundle.clone())) {
            files::teardown(&b);
        }
        Ok(StopSandboxResponse::new())
    }

    async fn wait_sandbox(
        &self,
        _: &TtrpcContext,
        req: WaitSandboxRequest,
    ) -> ttrpc::Result<WaitSandboxResponse> {
        self.known(&req.sandbox_id, "WaitSandbox")?;
        let exit = match self.pod.wait(&req.sandbox_id, "").await {
            Ok(e) => e,
            // Deleted by ShutdownSandbox: its exit was kept.
            Err(Error::NotFound(m)) => self
                .with_state(|s| s.as_ref().and_then(|s| s.exit))
                .ok_or(Error::NotFound(m))?,
            Err(e) => return Err(e.into()),
        };
        let mut resp = WaitSandboxResponse::new();
        resp.exit_status = exit.status;
        resp.exited_at = Some(timestamp(exit.at)).into();
        Ok(resp)
    }

    async fn sandbox_status(
        &self,
        _: &TtrpcContext,
        req: SandboxStatusRequest,
    ) -> ttrpc::Result<SandboxStatusResponse> {
        self.known(&req.sandbox_id, "SandboxStatus")?;
        let (created_at, kept, shut_down) = self.with_state(|s| {
            s.as_ref()
                .map(|s| (s.created_at, s.exit, s.shut_down))
                .unwrap_or((SystemTime::UNIX_EPOCH, None, true))
        });
        let mut resp = SandboxStatusResponse::new();
        resp.sandbox_id = req.sandbox_id.clone();
        resp.created_at = Some(timestamp(created_at)).into();
        match self.pod.state(&req.sandbox_id, "").await {
            Ok(s) => {
                resp.pid = s.pid as u32;
                resp.state = if s.status == Status::Running && !shut_down {
                    READY
                } else {
                    NOT_READY
                }
                .into();
                if let Some(e) = s.exit {
                    resp.exited_at = Some(timestamp(e.at)).into();
                }
            }
            Err(Error::NotFound(_)) => {
                resp.state = NOT_READY.into();
                if let Some(e) = kept {
                    resp.exited_at = Some(timestamp(e.at)).into();
                }
            }
            Err(e) => return Err(e.into()),
        }
        if req.verbose {
            // The shape containerd's CRI gives a pause container's verbose status
            // (critypes.SandboxInfo under "info"), so crictl inspectp reads the same.
            let status = match (resp.state.as_str(), resp.exited_at.is_some()) {
                (READY, _) => "running",
                (_, true) => "stopped",
                _ => "created",
            };
            let info = serde_json::json!({
                "pid": resp.pid,
                "processStatus": status,
                "runtimeType": "io.containerd.youki.v2",
                "image": "",
                "pause": "built into the shim (sandboxer = \"shim\")",
            });
            resp.info.insert("info".into(), info.to_string());
        }
        Ok(resp)
    }

    async fn ping_sandbox(
        &self,
        _: &TtrpcContext,
        req: PingRequest,
    ) -> ttrpc::Result<PingResponse> {
        self.known(&req.sandbox_id, "PingSandbox")?;
        Ok(PingResponse::new())
    }

    async fn shutdown_sandbox(
        &self,
        _: &TtrpcContext,
        req: ShutdownSandboxRequest,
    ) -> ttrpc::Result<ShutdownSandboxResponse> {
        let id = req.sandbox_id.clone();
        validate_id(&id)?;
        // Also after a CreateSandbox that failed (containerd then shuts the sandbox down
        // and forgets the shim): the shim must not stay behind.
        if self.known(&id, "ShutdownSandbox").is_err() {
            log::info!("ShutdownSandbox {id}: no such sandbox here");
            if self.pod.close_if_empty() {
                self.socket.remove();
                self.shutdown.notify_one();
            }
            return Ok(ShutdownSandboxResponse::new());
        }
        self.stop(&id, STOP_WAIT).await?;
        let pod = self.pod.clone();
        let deleted = {
            let id = id.clone();
            to_completion("delete the pause container", async move {
                pod.delete(&id, "").await
            })
            .await
        };
        let exit = match deleted {
            Ok((_, exit)) => Some(exit),
            Err(Error::NotFound(_)) => None,
            Err(e) => return Err(e.into()),
        };
        let bundle = self.with_state(|s| {
            s.as_mut().map(|s| {
                s.exit = s.exit.or(exit);
                s.shut_down = true;
                s.bundle.clone()
            })
        });
        files::publish(&self.files, None);
        if let Some(b) = bundle
            && let Err(e) = files::remove(&b)
        {
            log::warn!("ShutdownSandbox {id}: remove {}: {e}", b.display());
        }
        // The shim goes once nothing of the pod is left; a sibling not deleted yet keeps
        // it until the Task API's Shutdown after that sibling's Delete.
        if self.pod.close_if_empty() {
            log::info!("sandbox {id} is shut down and the pod is empty");
            self.socket.remove();
            self.shutdown.notify_one();
        }
        Ok(ShutdownSandboxResponse::new())
    }

    async fn sandbox_metrics(
        &self,
        _: &TtrpcContext,
        req: SandboxMetricsRequest,
    ) -> ttrpc::Result<SandboxMetricsResponse> {
        self.known(&req.sandbox_id, "SandboxMetrics")?;
        let parent = self.with_state(|s| s.as_ref().map(|s| s.cgroup_parent.clone()));
        let stats = match parent.filter(|p| !p.is_empty()) {
            // The pod's own cgroup: every container of the pod, the pause included.
            // cgroupfs reads, on this thread (see make_pause: no blocking pool).
            Some(parent) => pod_cgroup_stats(&parent)?,
            // No pod cgroup given: the pause container's.
            None => self.pod.stats(&req.sandbox_id).await?,
        };
        let mut resp = SandboxMetricsResponse::new();
        let m = resp.metrics.mut_or_insert_default();
        m.timestamp = Some(timestamp(SystemTime::now())).into();
        m.id = req.sandbox_id.clone();
        m.data = Some(metrics::to_any(&stats.stats, stats.unified)?).into();
        Ok(resp)
    }
}

/// The numbers of the pod's cgroup (kubelet's cgroup parent; a `.slice` one where systemd
/// puts it). On cgroup v2 read from the controllers the cgroup has, as a container's Stats
/// is (`cgroup::v2`: systemd enables no hugetlb, on which libcgroups' manager fails).
fn pod_cgroup_stats(parent: &str) -> Result<crate::runtime::CgroupStats> {
    use libcgroups::common::{CgroupConfig, CgroupManager, create_cgroup_manager};
    let path = match spec::slice_of(parent) {
        Some(slice) => crate::cgroup::path::expand_slice(slice).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "pod cgroup parent {parent:?}: {slice:?} is not a systemd slice name"
            ))
        })?,
        None => PathBuf::from(parent),
    };
    if spec::cgroup_v2() {
        let rel = path.strip_prefix("/").unwrap_or(&path);
        let dir = Path::new(crate::cgroup::path::UNIFIED_MOUNT).join(rel);
        let stats = crate::cgroup::v2::stats(&dir)
            .map_err(|e| Error::Runtime(format!("stats of pod cgroup {}: {e}", dir.display())))?;
        return Ok(crate::runtime::CgroupStats {
            stats,
            unified: true,
        });
    }
    let manager = create_cgroup_manager(CgroupConfig {
        cgroup_path: path.clone(),
        systemd_cgroup: false,
        container_name: String::new(),
    })
    .map_err(|e| Error::Runtime(format!("pod cgroup {}: {e}", path.display())))?;
    let stats = manager
        .stats()
        .map_err(|e| Error::Runtime(format!("stats of pod cgroup {}: {e}", path.display())))?;
    Ok(crate::runtime::CgroupStats {
        stats,
        unified: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn architectures_use_containerds_names() {
        assert!(!goarch().is_empty());
        if cfg!(target_arch = "x86_64") {
            assert_eq!(goarch(), "amd64");
        }
    }
}
