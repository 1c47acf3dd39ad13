//! containerd's Task API over ttrpc, served under both `containerd.task.v2.Task`
//! (containerd 1.x) and `containerd.task.v3.Task` (2.x): the messages are the same.
//! Handlers are thin: unpack the request, call the pod, pack the answer.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use containerd_shim_protos::api::{
    CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse,
    DeleteRequest, DeleteResponse, KillRequest, PidsRequest, PidsResponse, ShutdownRequest,
    StartRequest, StartResponse, StateRequest, StateResponse, WaitRequest, WaitResponse,
};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::empty::Empty;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::shim_async::{Task, create_task};
use containerd_shim_protos::types::mount::Mount as ProtoMount;
use containerd_shim_protos::types::task::{ProcessInfo, Status as ProtoStatus};
use tokio::sync::Notify;
use ttrpc::r#async::{Service, TtrpcContext};

use crate::cgroup::metrics;
use crate::error::{Error, Result};
use crate::ids::validate_id;
use crate::runtime::mount::Mount;
use crate::sandbox::files::PodSandbox;
use crate::shim::options::RuntimeOptions;
use crate::shim::socket::ServedSocket;
use crate::shim::{options, validate};
use crate::stdio::StdioPaths;
use crate::task::checkpoint;
use crate::task::pod::{CreateParams, ExecParams, Pod, ProcessEntry};
use crate::task::state::Status;

pub const TASK_V2: &str = "containerd.task.v2.Task";
pub const TASK_V3: &str = "containerd.task.v3.Task";

pub struct TaskService {
    pub pod: Arc<Pod>,
    /// The Root option the daemon was started with (its libcontainer state is below it).
    pub state_base: Option<PathBuf>,
    /// Each container's runtime options, for what they say beyond Create: the stdio owner
    /// of its execs and its checkpoint defaults.
    pub options: std::sync::Mutex<HashMap<String, RuntimeOptions>>,
    /// Notified when Shutdown finds the pod empty: the daemon then exits.
    pub shutdown: Arc<Notify>,
    /// Our socket file, removed before that Shutdown is answered.
    pub socket: Arc<ServedSocket>,
    /// The pod files of the sandbox this shim serves, if any (sandbox/files.rs).
    pub pod_files: crate::sandbox::files::Published,
}

/// The Task service under both names containerd may call it by.
pub fn services(task: Arc<TaskService>) -> HashMap<String, Service> {
    let mut all = create_task(task.clone());
    if let Some(v3) = create_task(task).remove(TASK_V3) {
        all.insert(TASK_V2.to_string(), v3);
    }
    all
}

/// Runs `work` to the end even when containerd goes away mid-call. ttrpc drops a handler's
/// future when its connection closes (containerd killed) or the request's deadline passes;
/// a Create dropped between libcontainer's create and the pod's bookkeeping would leave a
/// container nobody knows, a Delete dropped half-way a container half removed. A spawned
/// task is not cancelled by dropping its handle, so the pod always ends in a state that a
/// restarted containerd can read back through Connect/State.
pub(crate) async fn to_completion<T: Send + 'static>(
    what: &str,
    work: impl Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    // Boxed first: spawning a large future by value copies it through several stack
    // frames, and the stack pages that touches stay resident in every shim (+44 KiB).
    tokio::spawn(Box::pin(work))
        .await
        .map_err(|e| Error::Internal(format!("{what}: {e}")))?
}

pub fn timestamp(t: std::time::SystemTime) -> Timestamp {
    Timestamp::from(t)
}

pub fn to_proto_mount(m: &Mount) -> ProtoMount {
    let mut p = ProtoMount::new();
    p.type_ = m.kind.clone();
    p.source = m.source.clone();
    p.options = m.options.clone();
    p
}

pub fn from_proto_mount(p: &ProtoMount) -> Mount {
    Mount {
        kind: p.type_.clone(),
        source: p.source.clone(),
        options: p.options.clone(),
    }
}

/// containerd's type for what a Pids entry says about an exec process
/// (`containerd.runc.v1.ProcessDetails`, one field: `string exec_id = 1`). runc-v2 sends
/// it, and `ctr task ps` and CRI show the exec IDs from it.
const PROCESS_DETAILS: &str = "containerd.runc.v1.ProcessDetails";

fn process_info(p: ProcessEntry) -> Result<ProcessInfo> {
    let mut info = ProcessInfo::new();
    info.pid = p.pid;
    if let Some(exec_id) = p.exec_id {
        let mut value = Vec::with_capacity(exec_id.len() + 4);
        let mut out = containerd_shim_protos::protobuf::CodedOutputStream::vec(&mut value);
        out.write_string(1, &exec_id)
            .and_then(|_| out.flush())
            .map_err(|e| Error::Internal(format!("encode process details: {e}")))?;
        drop(out);
        let mut any = Any::new();
        any.type_url = PROCESS_DETAILS.to_string();
        any.value = value;
        info.info = Some(any).into();
    }
    Ok(info)
}

impl TaskService {
    fn options_of(&self, id: &str) -> Option<RuntimeOptions> {
        self.options.lock().ok()?.get(id).cloned()
    }

    /// A container of the pod whose sandbox this shim serves gets the pod's files, as
    /// CRI mounts them for a podsandbox pod (sandbox/files.rs). Small files, on this
    /// thread like validate::bundle_config.
    /// A sibling of a pod whose sandbox this shim made (sandboxer = "shim"): adds the pod's
    /// files to its bundle and returns the sandbox. None for any other container.
    fn join_pod_sandbox(&self, req: &CreateTaskRequest) -> Result<Option<PodSandbox>> {
        let Some(sandbox) = crate::sandbox::files::published(&self.pod_files) else {
            return Ok(None);
        };
        if req.id == sandbox.id {
            return Ok(None);
        }
        crate::sandbox::files::add_to_bundle(Path::new(&req.bundle), &sandbox.id, &sandbox.dir)
            .map_err(|e| match e {
                Error::InvalidArgument(m) => {
                    Error::InvalidArgument(format!("create {}: {m}", req.id))
                }
                other => other,
            })?;
        Ok(Some(sandbox))
    }

    fn remember(&self, id: &str, options: Option<RuntimeOptions>) {
        if let Ok(mut map) = self.options.lock() {
            match options {
                Some(o) => map.insert(id.to_string(), o),
                None => map.remove(id),
            };
        }
    }
}

fn params_stdio(req: &CreateTaskRequest) -> StdioPaths {
    StdioPaths {
        stdin: req.stdin.clone(),
        stdout: req.stdout.clone(),
        stderr: req.stderr.clone(),
        terminal: req.terminal,
    }
}

fn proto_status(s: Status) -> ProtoStatus {
    match s {
        Status::Created => ProtoStatus::CREATED,
        Status::Running => ProtoStatus::RUNNING,
        Status::Paused => ProtoStatus::PAUSED,
        Status::Stopped => ProtoStatus::STOPPED,
    }
}

#[async_trait::async_trait]
impl Task for TaskService {
    async fn create(
        &self,
        _: &TtrpcContext,
        req: CreateTaskRequest,
    ) -> ttrpc::Result<CreateTaskResponse> {
        log::debug!(
            "create {}: runtime options {:?}",
            req.id,
            req.options.as_ref().map(|o| o.type_url.as_str())
        );
        validate::create(&req)?;
        // On this (the daemon's only) thread, but never waiting: both files are opened
        // O_PATH first and read only if they are regular files, and only so much.
        validate::bundle_config(&req.id, &req.bundle)?;
        let opts = options::decode(req.options.as_ref())?;
        if opts.root != self.state_base {
            // State under one root per shim: `delete` and youki-shims find it by start's record.
            return Err(Error::InvalidArgument(format!(
                "create {}: runtime option Root {:?} differs from {:?}, which this pod's shim \
                 was started with",
                req.id, opts.root, self.state_base
            ))
            .into());
        }
        if let Some(addr) = &opts.task_api_address {
            // containerd 2.x names the shim serving the pod's sandbox (sandboxer = "shim"):
            // a Create that reached us for another shim's pod is a mix-up, not ours to run.
            let ours = format!(
                "ttrpc+{}",
                crate::shim::bootstrap::address_of(self.socket.path())
            );
            if *addr != ours {
                return Err(Error::InvalidArgument(format!(
                    "create {}: runtime option TaskApiAddress {addr:?} names another shim \
                     (this one serves {ours:?})",
                    req.id
                ))
                .into());
            }
        }
        let sandbox = self.join_pod_sandbox(&req)?;
        crate::stdio::owner::give_fifos(&params_stdio(&req), opts.io_uid, opts.io_gid)?;
        let began = Instant::now();
        let pod = self.pod.clone();
        let params = CreateParams {
            id: req.id.clone(),
            bundle: PathBuf::from(&req.bundle),
            rootfs: req.rootfs.iter().map(from_proto_mount).collect(),
            stdio: params_stdio(&req),
            // containerd 2.1-2.3 give a shim sandbox's siblings empty runc options (see
            // hack/containerd.sh): they follow the pause's driver, as their cgroupsPath,
            // named from the same parent, does.
            systemd_cgroup: opts.systemd_cgroup || sandbox.is_some_and(|s| s.systemd_cgroup),
            no_pivot_root: opts.no_pivot_root,
            no_new_keyring: opts.no_new_keyring,
            checkpoint: req.checkpoint.clone(),
            parent_checkpoint: req.parent_checkpoint.clone(),
            criu_work_path: opts.criu_work_path.clone(),
        };
        let pid = to_completion("create", async move { pod.create(params).await }).await?;
        self.remember(&req.id, Some(opts));
        log::debug!("create {} took {:?}", req.id, began.elapsed());
        let mut resp = CreateTaskResponse::new();
        resp.pid = pid as u32;
        Ok(resp)
    }

    async fn start(&self, _: &TtrpcContext, req: StartRequest) -> ttrpc::Result<StartResponse> {
        validate::ids(&req.id, &req.exec_id)?;
        let began = Instant::now();
        let pod = self.pod.clone();
        let (id, exec_id) = (req.id.clone(), req.exec_id.clone());
        let pid = to_completion("start", async move { pod.start(&id, &exec_id).await }).await?;
        log::debug!(
            "start {} {} took {:?}",
            req.id,
            req.exec_id,
            began.elapsed()
        );
        let mut resp = StartResponse::new();
        resp.pid = pid as u32;
        Ok(resp)
    }

    async fn state(&self, _: &TtrpcContext, req: StateRequest) -> ttrpc::Result<StateResponse> {
        validate::ids(&req.id, &req.exec_id)?;
        let s = self.pod.state(&req.id, &req.exec_id).await?;
        let mut resp = StateResponse::new();
        resp.id = s.id;
        resp.bundle = s.bundle.to_string_lossy().into_owned();
        resp.pid = s.pid as u32;
        resp.status = proto_status(s.status).into();
        resp.stdin = s.stdio.stdin;
        resp.stdout = s.stdio.stdout;
        resp.stderr = s.stdio.stderr;
        resp.terminal = s.stdio.terminal;
        if let Some(e) = s.exit {
            resp.exit_status = e.status;
            resp.exited_at = Some(timestamp(e.at)).into();
        }
        Ok(resp)
    }

    async fn wait(&self, _: &TtrpcContext, req: WaitRequest) -> ttrpc::Result<WaitResponse> {
        validate::ids(&req.id, &req.exec_id)?;
        let e = self.pod.wait(&req.id, &req.exec_id).await?;
        let mut resp = WaitResponse::new();
        resp.exit_status = e.status;
        resp.exited_at = Some(timestamp(e.at)).into();
        Ok(resp)
    }

    async fn kill(&self, _: &TtrpcContext, req: KillRequest) -> ttrpc::Result<Empty> {
        validate::ids(&req.id, &req.exec_id)?;
        validate::signal(req.signal)?;
        self.pod
            .kill(&req.id, &req.exec_id, req.signal, req.all)
            .await?;
        Ok(Empty::new())
    }

    async fn delete(&self, _: &TtrpcContext, req: DeleteRequest) -> ttrpc::Result<DeleteResponse> {
        validate::ids(&req.id, &req.exec_id)?;
        let began = Instant::now();
        let pod = self.pod.clone();
        let (id, exec_id) = (req.id.clone(), req.exec_id.clone());
        let (pid, e) =
            to_completion("delete", async move { pod.delete(&id, &exec_id).await }).await?;
        if req.exec_id.is_empty() {
            self.remember(&req.id, None);
        }
        log::debug!(
            "delete {} {} took {:?}",
            req.id,
            req.exec_id,
            began.elapsed()
        );
        let mut resp = DeleteResponse::new();
        resp.pid = pid as u32;
        resp.exit_status = e.status;
        resp.exited_at = Some(timestamp(e.at)).into();
        Ok(resp)
    }

    async fn pids(&self, _: &TtrpcContext, req: PidsRequest) -> ttrpc::Result<PidsResponse> {
        validate_id(&req.id)?;
        let pids = self.pod.pids(&req.id).await;
        log::debug!("pids {}: {:?}", req.id, pids);
        let pids = pids?;
        let mut resp = PidsResponse::new();
        resp.processes = pids.into_iter().map(process_info).collect::<Result<_>>()?;
        Ok(resp)
    }

    async fn close_io(&self, _: &TtrpcContext, req: CloseIORequest) -> ttrpc::Result<Empty> {
        validate::ids(&req.id, &req.exec_id)?;
        if req.stdin {
            self.pod.close_stdin(&req.id, &req.exec_id).await?;
        }
        Ok(Empty::new())
    }

    async fn connect(
        &self,
        _: &TtrpcContext,
        req: ConnectRequest,
    ) -> ttrpc::Result<ConnectResponse> {
        // An unknown ID is NotFound (runc-v2 answers pid 0): containerd then treats the
        // task as gone and runs `delete`, instead of loading a task this shim never
        // created (containerd killed between `start` and Create) or already deleted
        // (killed before it saw Delete's reply).
        // An empty ID asks only after the shim itself.
        let mut resp = ConnectResponse::new();
        resp.shim_pid = std::process::id();
        resp.version = env!("CARGO_PKG_VERSION").to_string();
        if !req.id.is_empty() {
            validate_id(&req.id)?;
            resp.task_pid = self.pod.init_pid(&req.id).await?;
        }
        Ok(resp)
    }

    async fn shutdown(&self, _: &TtrpcContext, _: ShutdownRequest) -> ttrpc::Result<Empty> {
        // containerd calls Shutdown after every Delete; a pod's shim stays while any
        // container of the pod remains. Once empty, the pod is closed (Create refused) and
        // the socket file removed before we answer: containerd looks for leaked sockets
        // right after Delete returns, and a `start` for this group must bind a new shim
        // rather than join this one on its way out.
        if self.pod.close_if_empty() {
            self.socket.remove();
            self.shutdown.notify_one();
        }
        Ok(Empty::new())
    }

    async fn pause(
        &self,
        _: &TtrpcContext,
        req: containerd_shim_protos::api::PauseRequest,
    ) -> ttrpc::Result<Empty> {
        validate_id(&req.id)?;
        let pod = self.pod.clone();
        to_completion("pause", async move { pod.pause(&req.id).await }).await?;
        Ok(Empty::new())
    }

    async fn resume(
        &self,
        _: &TtrpcContext,
        req: containerd_shim_protos::api::ResumeRequest,
    ) -> ttrpc::Result<Empty> {
        validate_id(&req.id)?;
        let pod = self.pod.clone();
        to_completion("resume", async move { pod.resume(&req.id).await }).await?;
        Ok(Empty::new())
    }

    async fn checkpoint(
        &self,
        _: &TtrpcContext,
        req: containerd_shim_protos::api::CheckpointTaskRequest,
    ) -> ttrpc::Result<Empty> {
        validate_id(&req.id)?;
        let defaults = self
            .options_of(&req.id)
            .map(|o| checkpoint::CriuDefaults {
                image_path: o.criu_image_path,
                work_path: o.criu_work_path,
            })
            .unwrap_or_default();
        let spec = checkpoint::decode_with(&req.path, req.options.as_ref(), &defaults)?;
        validate::checkpoint(&spec)?;
        self.pod.checkpoint(&req.id, &spec).await?;
        Ok(Empty::new())
    }

    async fn exec(
        &self,
        _: &TtrpcContext,
        req: containerd_shim_protos::api::ExecProcessRequest,
    ) -> ttrpc::Result<Empty> {
        let process = validate::exec(&req)?;
        let pod = self.pod.clone();
        let params = ExecParams {
            id: req.id.clone(),
            exec_id: req.exec_id.clone(),
            stdio: StdioPaths {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
            },
            process,
        };
        if let Some(o) = self.options_of(&req.id) {
            crate::stdio::owner::give_fifos(&params.stdio, o.io_uid, o.io_gid)?;
        }
        to_completion("exec", async move { pod.exec(params).await }).await?;
        Ok(Empty::new())
    }

    async fn resize_pty(
        &self,
        _: &TtrpcContext,
        req: containerd_shim_protos::api::ResizePtyRequest,
    ) -> ttrpc::Result<Empty> {
        validate::ids(&req.id, &req.exec_id)?;
        self.pod
            .resize(&req.id, &req.exec_id, req.width, req.height)
            .await?;
        Ok(Empty::new())
    }

    async fn update(
        &self,
        _: &TtrpcContext,
        req: containerd_shim_protos::api::UpdateTaskRequest,
    ) -> ttrpc::Result<Empty> {
        // Annotations are accepted and need nothing from us (runc-v2 ignores them too).
        validate_id(&req.id)?;
        let resources = req
            .resources
            .as_ref()
            .map(|a| a.value.as_slice())
            .ok_or_else(|| {
                Error::InvalidArgument(format!("update of {:?}: no resources", req.id))
            })?;
        validate::resources(&req.id, resources)?;
        self.pod.update(&req.id, resources).await?;
        Ok(Empty::new())
    }

    async fn stats(
        &self,
        _: &TtrpcContext,
        req: containerd_shim_protos::api::StatsRequest,
    ) -> ttrpc::Result<containerd_shim_protos::api::StatsResponse> {
        validate_id(&req.id)?;
        let s = self.pod.stats(&req.id).await?;
        let mut resp = containerd_shim_protos::api::StatsResponse::new();
        resp.stats = Some(metrics::to_any(&s.stats, s.unified)?).into();
        Ok(resp)
    }
}
