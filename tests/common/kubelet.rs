//! Drives containerd's CRI (runtime.v1) the way kubelet's SyncPod does: RunPodSandbox, then
//! CreateContainer + StartContainer for each container, status, ExecSync, and the teardown
//! StopContainer → RemoveContainer → StopPodSandbox → RemovePodSandbox. Synchronous on
//! purpose (the tests are plain `#[test]`s): each client owns a current-thread runtime.
//!
//! Shared by `tests/` and `examples/pod_demo.rs`, so there is one copy of the CRI code.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

pub const YOUKI_HANDLER: &str = "youki";
pub const RUNC_HANDLER: &str = "runc";
/// Our shim with containerd 2.x's sandboxer = "shim" (hack/containerd.sh, deploy/).
pub const SANDBOXED_HANDLER: &str = "youki-sandboxed";
pub const BUSYBOX_IMAGE: &str = "localhost/youki/busybox:latest";

/// CRI's namespace modes, named as in a pod spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Share {
    /// Shared by the pod (the pause container holds it).
    Pod,
    /// The container's own.
    Container,
    /// The node's (hostNetwork, hostPID, hostIPC).
    Node,
}

impl Share {
    fn mode(self) -> i32 {
        match self {
            Share::Pod => NamespaceMode::Pod as i32,
            Share::Container => NamespaceMode::Container as i32,
            Share::Node => NamespaceMode::Node as i32,
        }
    }
}

/// The parts of a pod spec the tests vary.
#[derive(Debug, Clone)]
pub struct PodSpec {
    pub name: String,
    pub uid: String,
    pub namespace: String,
    pub handler: String,
    /// cgroupfs parent, e.g. /youki-test/pod-<uid>.
    pub cgroup_parent: String,
    pub network: Share,
    /// Share::Pod is shareProcessNamespace; Share::Container the default.
    pub pid: Share,
    pub ipc: Share,
    pub log_directory: PathBuf,
    /// Privileged pod and containers (kubelet requires it for Bidirectional mounts).
    pub privileged: bool,
    /// The pod's DNSConfig (kubelet's dnsPolicy result); None sends none.
    pub dns: Option<DnsConfig>,
    /// The pod's seccomp profile (securityContext.seccompProfile); None sends none.
    pub seccomp: Option<SecurityProfile>,
}

impl PodSpec {
    /// A pod as kubelet would make it by default: pod network and IPC, own PID namespaces.
    pub fn new(name: &str) -> PodSpec {
        let uid = format!("{name}-{}", std::process::id());
        PodSpec {
            name: name.to_string(),
            uid: uid.clone(),
            namespace: "youki-test".into(),
            handler: YOUKI_HANDLER.into(),
            cgroup_parent: format!("/youki-test/pod-{uid}"),
            network: Share::Pod,
            pid: Share::Container,
            ipc: Share::Pod,
            log_directory: std::env::temp_dir().join(format!("youki-pod-logs-{uid}")),
            privileged: false,
            dns: None,
            seccomp: None,
        }
    }

    /// A pod as kubelet makes it with the systemd cgroup driver (cgroupDriver: systemd, the
    /// runtime's `SystemdCgroup = true`): a best-effort pod's parent is the slice
    /// `kubepods-besteffort-pod<uid>.slice` (the UID's dashes made underscores, as systemd
    /// reads a dash in a slice name as a level), so its containers are scopes below
    /// kubepods.slice/kubepods-besteffort.slice.
    pub fn systemd(name: &str) -> PodSpec {
        let mut spec = PodSpec::new(name);
        spec.cgroup_parent = format!(
            "kubepods-besteffort-pod{}.slice",
            spec.uid.replace('-', "_")
        );
        spec
    }

    /// The pod slice's cgroup directory on a cgroup v2 host (systemd driver pods only).
    pub fn slice_dir(&self) -> PathBuf {
        let mut dir = PathBuf::from("/sys/fs/cgroup");
        let name = self.cgroup_parent.trim_end_matches(".slice");
        // systemd nests a slice in each of its dash-separated prefixes.
        let parts: Vec<&str> = name.split('-').collect();
        for i in 1..=parts.len() {
            dir.push(format!("{}.slice", parts[..i].join("-")));
        }
        dir
    }

    /// What kubelet removes after a pod is gone: the pod cgroup it made (empty by now, as
    /// the runtime removed the containers' cgroups) and the pod's log directory.
    /// A pod cgroup that still has children (a leaked container cgroup) stays, after a
    /// few seconds' grace for the runtime's own removal.
    pub fn remove_leftover_dirs(&self) {
        if self.cgroup_parent.ends_with(".slice") {
            // The systemd driver's pod slice: kubelet asks systemd to stop it.
            let _ = std::process::Command::new("systemctl")
                .args(["stop", &self.cgroup_parent])
                .output();
            let _ = std::fs::remove_dir_all(&self.log_directory);
            return;
        }
        let rel = self.cgroup_parent.trim_start_matches('/');
        let dirs: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
            .map(|ctrl| ctrl.path().join(rel))
            .collect();
        // (Not common::wait_until: examples/bench.rs includes this file alone.)
        for _ in 0..50 {
            if dirs
                .iter()
                .all(|d| std::fs::remove_dir(d).is_ok() || !d.exists())
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = std::fs::remove_dir_all(&self.log_directory);
    }

    fn namespaces(&self) -> NamespaceOption {
        NamespaceOption {
            network: self.network.mode(),
            pid: self.pid.mode(),
            ipc: self.ipc.mode(),
            ..Default::default()
        }
    }

    pub fn config(&self) -> PodSandboxConfig {
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: self.name.clone(),
                uid: self.uid.clone(),
                namespace: self.namespace.clone(),
                attempt: 0,
            }),
            hostname: if self.network == Share::Node {
                String::new()
            } else {
                self.name.clone()
            },
            log_directory: self.log_directory.to_string_lossy().into_owned(),
            dns_config: self.dns.clone(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: self.cgroup_parent.clone(),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(self.namespaces()),
                    privileged: self.privileged,
                    seccomp: self.seccomp.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// A container of this pod running `command`, with the pod's namespace choices (as
    /// kubelet copies them into every container's security context).
    pub fn container(&self, name: &str, command: &[&str]) -> ContainerConfig {
        ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.to_string(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: BUSYBOX_IMAGE.into(),
                ..Default::default()
            }),
            command: command.iter().map(|s| s.to_string()).collect(),
            log_path: format!("{name}/0.log"),
            linux: Some(LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    namespace_options: Some(self.namespaces()),
                    privileged: self.privileged,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// A hostPath volume with its mount propagation, as kubelet passes it in a container's
/// `mounts`.
pub fn host_path(
    host: &Path,
    container: &str,
    propagation: MountPropagation,
) -> k8s_cri::v1::Mount {
    k8s_cri::v1::Mount {
        container_path: container.to_string(),
        host_path: host.to_string_lossy().into_owned(),
        propagation: propagation as i32,
        ..Default::default()
    }
}

/// A synchronous CRI client.
pub struct Cri {
    rt: tokio::runtime::Runtime,
    client: RuntimeServiceClient<Channel>,
}

pub fn cri_socket() -> PathBuf {
    PathBuf::from(
        std::env::var("CONTAINERD_ADDRESS")
            .unwrap_or_else(|_| "/run/youki-test/containerd.sock".into()),
    )
}

fn status<T>(what: &str, r: Result<tonic::Response<T>, tonic::Status>) -> Result<T, String> {
    r.map(|r| r.into_inner())
        .map_err(|s| format!("{what}: {:?}: {}", s.code(), s.message()))
}

impl Cri {
    pub fn connect(socket: &Path) -> Cri {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let path = socket.to_path_buf();
        let channel = rt
            .block_on(async move {
                Endpoint::try_from("http://[::]:0")
                    .expect("endpoint")
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let path = path.clone();
                        async move {
                            Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?))
                        }
                    }))
                    .await
            })
            .unwrap_or_else(|e| panic!("connect to CRI at {}: {e}", socket.display()));
        Cri {
            rt,
            client: RuntimeServiceClient::new(channel),
        }
    }

    /// The runtime handlers CRI lists in Status, with the features it found for each (the
    /// default handler is listed a second time with an empty name).
    pub fn runtime_handlers(&mut self) -> Result<Vec<RuntimeHandler>, String> {
        let r = self
            .rt
            .block_on(self.client.status(StatusRequest { verbose: false }));
        status("Status", r).map(|r| r.runtime_handlers)
    }

    pub fn run_pod(&mut self, spec: &PodSpec) -> Result<String, String> {
        std::fs::create_dir_all(&spec.log_directory).map_err(|e| e.to_string())?;
        let req = RunPodSandboxRequest {
            config: Some(spec.config()),
            runtime_handler: spec.handler.clone(),
        };
        let r = self.rt.block_on(self.client.run_pod_sandbox(req));
        status("RunPodSandbox", r).map(|r| r.pod_sandbox_id)
    }

    pub fn create_container(
        &mut self,
        pod_id: &str,
        spec: &PodSpec,
        config: ContainerConfig,
    ) -> Result<String, String> {
        let req = CreateContainerRequest {
            pod_sandbox_id: pod_id.to_string(),
            config: Some(config),
            sandbox_config: Some(spec.config()),
        };
        let r = self.rt.block_on(self.client.create_container(req));
        status("CreateContainer", r).map(|r| r.container_id)
    }

    pub fn start_container(&mut self, id: &str) -> Result<(), String> {
        let req = StartContainerRequest {
            container_id: id.to_string(),
        };
        let r = self.rt.block_on(self.client.start_container(req));
        status("StartContainer", r).map(|_| ())
    }

    /// CreateContainer + StartContainer, as SyncPod does for each container.
    pub fn run_container(
        &mut self,
        pod_id: &str,
        spec: &PodSpec,
        name: &str,
        command: &[&str],
    ) -> Result<String, String> {
        let id = self.create_container(pod_id, spec, spec.container(name, command))?;
        self.start_container(&id)?;
        Ok(id)
    }

    pub fn container_status(&mut self, id: &str) -> Result<ContainerStatusResponse, String> {
        let req = ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: true,
        };
        let r = self.rt.block_on(self.client.container_status(req));
        status("ContainerStatus", r)
    }

    pub fn container_state(&mut self, id: &str) -> Result<ContainerState, String> {
        let s = self.container_status(id)?;
        let st = s.status.ok_or("ContainerStatus: no status")?;
        ContainerState::try_from(st.state).map_err(|e| e.to_string())
    }

    pub fn pod_status(&mut self, id: &str) -> Result<PodSandboxStatusResponse, String> {
        let req = PodSandboxStatusRequest {
            pod_sandbox_id: id.to_string(),
            verbose: true,
        };
        let r = self.rt.block_on(self.client.pod_sandbox_status(req));
        status("PodSandboxStatus", r)
    }

    /// The host PID containerd reports for a container (verbose status `info`).
    pub fn container_pid(&mut self, id: &str) -> Result<i32, String> {
        let s = self.container_status(id)?;
        pid_from_info(&s.info)
    }

    /// The host PID of the pod's pause process.
    pub fn pod_pid(&mut self, id: &str) -> Result<i32, String> {
        let s = self.pod_status(id)?;
        pid_from_info(&s.info)
    }

    /// ExecSync: (exit code, stdout, stderr).
    pub fn exec_sync(
        &mut self,
        id: &str,
        cmd: &[&str],
        timeout: Duration,
    ) -> Result<(i32, String, String), String> {
        let req = ExecSyncRequest {
            container_id: id.to_string(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: timeout.as_secs() as i64,
        };
        let r = self.rt.block_on(self.client.exec_sync(req));
        status("ExecSync", r).map(|r| {
            (
                r.exit_code,
                String::from_utf8_lossy(&r.stdout).into_owned(),
                String::from_utf8_lossy(&r.stderr).into_owned(),
            )
        })
    }

    pub fn container_stats(&mut self, id: &str) -> Result<ContainerStats, String> {
        let req = ContainerStatsRequest {
            container_id: id.to_string(),
        };
        let r = self.rt.block_on(self.client.container_stats(req));
        status("ContainerStats", r).and_then(|r| r.stats.ok_or("no stats".into()))
    }

    pub fn pod_stats(&mut self, pod_id: &str) -> Result<PodSandboxStats, String> {
        let req = PodSandboxStatsRequest {
            pod_sandbox_id: pod_id.to_string(),
        };
        let r = self.rt.block_on(self.client.pod_sandbox_stats(req));
        status("PodSandboxStats", r).and_then(|r| r.stats.ok_or("no stats".into()))
    }

    pub fn update_resources(
        &mut self,
        id: &str,
        res: LinuxContainerResources,
    ) -> Result<(), String> {
        let req = UpdateContainerResourcesRequest {
            container_id: id.to_string(),
            linux: Some(res),
            ..Default::default()
        };
        let r = self
            .rt
            .block_on(self.client.update_container_resources(req));
        status("UpdateContainerResources", r).map(|_| ())
    }

    pub fn stop_container(&mut self, id: &str, timeout: Duration) -> Result<(), String> {
        let req = StopContainerRequest {
            container_id: id.to_string(),
            timeout: timeout.as_secs() as i64,
        };
        let r = self.rt.block_on(self.client.stop_container(req));
        status("StopContainer", r).map(|_| ())
    }

    pub fn remove_container(&mut self, id: &str) -> Result<(), String> {
        let req = RemoveContainerRequest {
            container_id: id.to_string(),
        };
        let r = self.rt.block_on(self.client.remove_container(req));
        status("RemoveContainer", r).map(|_| ())
    }

    pub fn stop_pod(&mut self, id: &str) -> Result<(), String> {
        let req = StopPodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        };
        let r = self.rt.block_on(self.client.stop_pod_sandbox(req));
        status("StopPodSandbox", r).map(|_| ())
    }

    pub fn remove_pod(&mut self, id: &str) -> Result<(), String> {
        let req = RemovePodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        };
        let r = self.rt.block_on(self.client.remove_pod_sandbox(req));
        status("RemovePodSandbox", r).map(|_| ())
    }

    pub fn list_containers_of(&mut self, pod_id: &str) -> Result<Vec<Container>, String> {
        let req = ListContainersRequest {
            filter: Some(ContainerFilter {
                pod_sandbox_id: pod_id.to_string(),
                ..Default::default()
            }),
        };
        let r = self.rt.block_on(self.client.list_containers(req));
        status("ListContainers", r).map(|r| r.containers)
    }

    /// Every pod sandbox containerd's CRI knows, whatever its state.
    pub fn list_pods(&mut self) -> Result<Vec<PodSandbox>, String> {
        let req = ListPodSandboxRequest { filter: None };
        let r = self.rt.block_on(self.client.list_pod_sandbox(req));
        status("ListPodSandbox", r).map(|r| r.items)
    }

    /// kubelet's teardown: stop and remove every container, then the sandbox.
    pub fn teardown(&mut self, pod_id: &str) -> Result<(), String> {
        for c in self.list_containers_of(pod_id)? {
            self.stop_container(&c.id, Duration::from_secs(2))?;
            self.remove_container(&c.id)?;
        }
        self.stop_pod(pod_id)?;
        self.remove_pod(pod_id)
    }
}

fn pid_from_info(info: &HashMap<String, String>) -> Result<i32, String> {
    let raw = info.get("info").ok_or("verbose status has no info")?;
    let v: serde_json::Value = serde_json::from_str(raw).map_err(|e| e.to_string())?;
    v.get("pid")
        .and_then(|p| p.as_i64())
        .map(|p| p as i32)
        .ok_or_else(|| format!("no pid in status info: {raw}"))
}

/// Tears the pod down when dropped, so a failed assertion does not leave it running.
pub struct PodGuard {
    pub id: String,
    spec: PodSpec,
    /// The CRI socket of the containerd that runs the pod.
    socket: PathBuf,
}

impl PodGuard {
    pub fn new(id: &str, spec: &PodSpec, socket: &Path) -> PodGuard {
        PodGuard {
            id: id.to_string(),
            spec: spec.clone(),
            socket: socket.to_path_buf(),
        }
    }
}

impl Drop for PodGuard {
    /// What kubelet does for a pod that goes: tear it down through CRI, then remove the pod
    /// cgroup and log directory it made (also when an assertion failed half-way).
    fn drop(&mut self) {
        let mut cri = Cri::connect(&self.socket);
        if let Err(e) = cri.teardown(&self.id) {
            eprintln!("teardown of pod {}: {e}", self.id);
        }
        self.spec.remove_leftover_dirs();
    }
}

impl Cri {
    /// Exec (streaming): the URL of containerd's streaming server for this exec, which a
    /// client then dials (kubectl exec does it with SPDY or WebSocket).
    pub fn exec_url(&mut self, id: &str, cmd: &[&str], stdin: bool) -> Result<String, String> {
        let req = ExecRequest {
            container_id: id.to_string(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            tty: false,
            stdin,
            stdout: true,
            stderr: true,
        };
        let r = self.rt.block_on(self.client.exec(req));
        status("Exec", r).map(|r| r.url)
    }
}
