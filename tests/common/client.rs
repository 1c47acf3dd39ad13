//! containerd's own Task API over gRPC, for requests ctr cannot make but containerd's Go
//! client does: a terminal with a stderr path (cio names one it never creates), an exec
//! whose process spec has no PATH, a container spec edited after `ctr container create`.
//! Synchronous, like the tests: each client owns a current-thread runtime.

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::Duration;

use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::snapshots::MountsRequest;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    Container, CreateTaskRequest, DeleteProcessRequest, DeleteTaskRequest, ExecProcessRequest,
    GetContainerRequest, StartRequest, UpdateContainerRequest, WaitRequest,
};
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::{Request, Status};

use super::{NS, address};

const PROCESS_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";

pub struct Client {
    rt: tokio::runtime::Runtime,
    channel: Channel,
}

fn req<T>(r: T) -> Request<T> {
    let mut r = Request::new(r);
    r.metadata_mut()
        .insert("containerd-namespace", NS.parse().expect("namespace"));
    r
}

/// The stdio of a task or exec as containerd's client names it: a fifo for stdout, and
/// for a terminal a stderr path where no fifo exists.
pub struct Fifos {
    pub dir: PathBuf,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl Fifos {
    pub fn new(id: &str) -> Fifos {
        let dir = std::env::temp_dir().join(format!("youki-fifos-{id}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("fifo dir");
        let stdout = dir.join(format!("{id}-stdout"));
        nix::unistd::mkfifo(&stdout, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        Fifos {
            stderr: dir.join(format!("{id}-stderr")),
            stdout,
            dir,
        }
    }

    /// The stderr URI the client sends: with a terminal the path cio names and never
    /// creates, without one none (/dev/null).
    pub fn stderr_uri(&self, terminal: bool) -> String {
        if terminal {
            self.stderr.to_string_lossy().into()
        } else {
            String::new()
        }
    }

    /// Reads stdout to its end (every writer closed) on a thread. `pace`: a pause after
    /// every 4 KiB, a client slower than the process, so output waits in the terminal.
    pub fn read_stdout(&self, pace: Option<Duration>) -> JoinHandle<Vec<u8>> {
        let path = self.stdout.clone();
        std::thread::spawn(move || {
            // Blocks until the shim opens its write end.
            let mut f = File::open(&path).expect("open stdout fifo");
            let mut out = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                match f.read(&mut buf) {
                    Ok(0) => return out,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                    Err(e) => panic!("read stdout fifo: {e}"),
                }
                if let Some(p) = pace {
                    std::thread::sleep(p);
                }
            }
        })
    }
}

impl Drop for Fifos {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Client {
    pub fn new() -> Client {
        Client::connect(&address())
    }

    /// A client of the containerd at `sock` (a `private::Private`'s, say).
    pub fn connect(sock: &str) -> Client {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let channel = rt
            .block_on(containerd_client::connect(sock))
            .expect("connect to containerd");
        Client { rt, channel }
    }

    fn tasks(&self) -> TasksClient<Channel> {
        TasksClient::new(self.channel.clone())
    }

    /// containerd's record of container `id`.
    fn container(&self, id: &str) -> Result<Container, Status> {
        Ok(self
            .rt
            .block_on(
                ContainersClient::new(self.channel.clone())
                    .get(req(GetContainerRequest { id: id.into() })),
            )?
            .into_inner()
            .container
            .expect("container"))
    }

    /// The container's OCI spec (JSON).
    pub fn spec(&self, id: &str) -> serde_json::Value {
        let c = self.container(id).expect("get container");
        serde_json::from_slice(&c.spec.expect("spec").value).expect("spec JSON")
    }

    /// Replaces the container's spec with `edit` applied to it.
    pub fn edit_spec(&self, id: &str, edit: impl FnOnce(&mut serde_json::Value)) {
        let mut containers = ContainersClient::new(self.channel.clone());
        let mut c = self.container(id).expect("get container");
        let any = c.spec.as_mut().expect("spec");
        let mut spec: serde_json::Value = serde_json::from_slice(&any.value).expect("spec JSON");
        edit(&mut spec);
        any.value = serde_json::to_vec(&spec).expect("encode spec");
        // No update mask: a full replace of what may change, the rest as it was.
        self.rt
            .block_on(containers.update(req(UpdateContainerRequest {
                container: Some(c),
                update_mask: None,
            })))
            .expect("update container");
    }

    /// Tasks.Create of container `id` (made by `ctr container create`) on its snapshot.
    pub fn create_task(&self, id: &str, f: &Fifos, terminal: bool) -> Result<u32, Status> {
        let c = self.container(id)?;
        let mounts = self
            .rt
            .block_on(
                SnapshotsClient::new(self.channel.clone()).mounts(req(MountsRequest {
                    snapshotter: c.snapshotter,
                    key: c.snapshot_key,
                })),
            )?
            .into_inner()
            .mounts;
        let r = CreateTaskRequest {
            container_id: id.into(),
            rootfs: mounts,
            stdout: f.stdout.to_string_lossy().into(),
            stderr: f.stderr_uri(terminal),
            terminal,
            ..Default::default()
        };
        Ok(self
            .rt
            .block_on(self.tasks().create(req(r)))?
            .into_inner()
            .pid)
    }

    /// Tasks.Exec of `process` (an OCI Process, JSON) in the running task `id`.
    pub fn exec(
        &self,
        id: &str,
        exec_id: &str,
        process: &serde_json::Value,
        f: &Fifos,
    ) -> Result<(), Status> {
        let terminal = process["terminal"].as_bool().unwrap_or(false);
        self.exec_with_terminal(id, exec_id, process, f, terminal)
    }

    /// As `exec`, with the request's terminal flag given apart from the process's own, as
    /// containerd's client sends it (`cio.WithTerminal` on a process with `terminal: false`).
    pub fn exec_with_terminal(
        &self,
        id: &str,
        exec_id: &str,
        process: &serde_json::Value,
        f: &Fifos,
        terminal: bool,
    ) -> Result<(), Status> {
        // An Any of the right type, without naming prost's type here.
        let mut spec = self.container(id)?.spec.expect("spec");
        spec.type_url = PROCESS_TYPE.into();
        spec.value = serde_json::to_vec(process).expect("encode process");
        let r = ExecProcessRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
            stdout: f.stdout.to_string_lossy().into(),
            stderr: f.stderr_uri(terminal),
            terminal,
            spec: Some(spec),
            ..Default::default()
        };
        self.rt.block_on(self.tasks().exec(req(r)))?;
        Ok(())
    }

    /// Tasks.Exec of `process` with stdout and stderr given as URIs (`binary://...`).
    pub fn exec_to(
        &self,
        id: &str,
        exec_id: &str,
        process: &serde_json::Value,
        stdout: &str,
        stderr: &str,
    ) -> Result<(), Status> {
        let mut spec = self.container(id)?.spec.expect("spec");
        spec.type_url = PROCESS_TYPE.into();
        spec.value = serde_json::to_vec(process).expect("encode process");
        let r = ExecProcessRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
            stdout: stdout.into(),
            stderr: stderr.into(),
            spec: Some(spec),
            ..Default::default()
        };
        self.rt.block_on(self.tasks().exec(req(r)))?;
        Ok(())
    }

    pub fn start(&self, id: &str, exec_id: &str) -> Result<u32, Status> {
        let r = StartRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
        };
        Ok(self
            .rt
            .block_on(self.tasks().start(req(r)))?
            .into_inner()
            .pid)
    }

    /// The exit status, once the process has exited.
    pub fn wait(&self, id: &str, exec_id: &str) -> u32 {
        let r = WaitRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
        };
        self.rt
            .block_on(self.tasks().wait(req(r)))
            .expect("wait")
            .into_inner()
            .exit_status
    }

    pub fn delete_process(&self, id: &str, exec_id: &str) {
        let r = DeleteProcessRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
        };
        self.rt
            .block_on(self.tasks().delete_process(req(r)))
            .expect("delete process");
    }

    pub fn delete_task(&self, id: &str) -> u32 {
        let r = DeleteTaskRequest {
            container_id: id.into(),
        };
        self.rt
            .block_on(self.tasks().delete(req(r)))
            .expect("delete task")
            .into_inner()
            .exit_status
    }
}

/// The container's process spec with other arguments (and a terminal or not).
pub fn process_of(spec: &serde_json::Value, args: &[&str], terminal: bool) -> serde_json::Value {
    let mut p = spec["process"].clone();
    p["args"] = serde_json::json!(args);
    p["terminal"] = serde_json::json!(terminal);
    p
}
