//! One container of the pod: its init process, its exec processes, their stdio, and where
//! each is in its life (`state::Lifecycle`). An `Entry` is what the registry and the exit
//! table hold: the container behind a short lock that is never held across a runtime call.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::{Error, Result};
use crate::stdio::tty::Console;
use crate::stdio::{Keepalive, StdioPaths};
use crate::task::process::{Exit, ExitCell};
use crate::task::registry::{exec_not_found, lock};
use crate::task::state::{Lifecycle, Phase, Status};

pub struct Entry {
    pub id: String,
    state: Mutex<Container>,
    /// Taken by Create, Start (init and exec) for their whole run and by the exit path
    /// before it publishes TaskExit, so TaskCreate / TaskStart / TaskExecStarted always go
    /// out before the TaskExit of the same process. Nothing else takes it: State, Wait,
    /// Kill and Delete answer while a Start runs.
    pub order: tokio::sync::Mutex<()>,
}

impl Entry {
    pub fn new(id: &str, bundle: PathBuf, stdio: StdioPaths) -> Entry {
        Entry {
            id: id.to_string(),
            state: Mutex::new(Container {
                bundle,
                stdio,
                pid: 0,
                life: Lifecycle::new(format!("container {id:?}")),
                exit: None,
                exited: Arc::new(ExitCell::default()),
                exit_seen: Arc::new(AtomicBool::new(false)),
                io: Keepalive::default(),
                tty: None,
                execs: HashMap::new(),
                oom_watch: None,
                restore: None,
            }),
            order: tokio::sync::Mutex::new(()),
        }
    }

    /// The container, for a short look or change. Never held across an `.await`.
    pub fn lock(&self) -> MutexGuard<'_, Container> {
        lock(&self.state)
    }
}

pub struct Container {
    pub bundle: PathBuf,
    pub stdio: StdioPaths,
    /// The init's PID (0 while Creating).
    pub pid: i32,
    pub life: Lifecycle,
    /// The init's exit, recorded the moment it is reaped.
    pub exit: Option<Exit>,
    /// Set once the exit is fully handled (exec processes gone, terminal output copied,
    /// TaskExit queued): Wait answers from this.
    pub exited: Arc<ExitCell>,
    /// containerd has the init's exit: its TaskExit was accepted, or State, Wait or Delete
    /// answered it. Until then Pids keeps listing the exited init (see `Pod::pids`).
    pub exit_seen: Arc<AtomicBool>,
    pub io: Keepalive,
    /// The terminal, for `-t` containers.
    pub tty: Option<Console>,
    pub execs: HashMap<String, Exec>,
    /// The OOM watch on the container's memory cgroup, stopped at Delete.
    pub oom_watch: Option<tokio::task::JoinHandle<()>>,
    /// Created from a checkpoint and not restored yet: what its Start restores from.
    pub restore: Option<PendingRestore>,
}

/// What a Create with a checkpoint leaves for its Start (runc-v2 restores at Start).
pub struct PendingRestore {
    pub rootfs: Vec<crate::runtime::mount::Mount>,
    pub systemd_cgroup: bool,
    pub image: crate::task::checkpoint::RestoreImage,
}

impl Container {
    pub fn status(&self) -> Status {
        self.life.status()
    }

    pub fn exec(&self, id: &str, exec_id: &str) -> Result<&Exec> {
        self.execs
            .get(exec_id)
            .ok_or_else(|| exec_not_found(id, exec_id))
    }

    pub fn exec_mut(&mut self, id: &str, exec_id: &str) -> Result<&mut Exec> {
        self.execs
            .get_mut(exec_id)
            .ok_or_else(|| exec_not_found(id, exec_id))
    }

    /// An exec's status as containerd expects it: a running exec of a paused container
    /// is paused too (it is frozen with it).
    pub fn exec_status(&self, e: &Exec) -> Status {
        match (e.life.status(), self.life.phase()) {
            (Status::Running, Phase::Paused) => Status::Paused,
            (s, _) => s,
        }
    }
}

/// A process added by Exec: Created until Start runs it, then Running until it exits.
pub struct Exec {
    pub id: String,
    /// The OCI `Process` JSON containerd sent; taken by Start (a started exec keeps no
    /// spec: it may carry secrets in its environment, and it is never used again).
    pub process: Option<Vec<u8>>,
    pub stdio: StdioPaths,
    /// Set by Start.
    pub pid: Option<i32>,
    pub life: Lifecycle,
    /// Recorded the moment it is reaped (or when Start failed: 255).
    pub exit: Option<Exit>,
    /// Wait answers from this, once the exit is fully handled (see `Container::exited`).
    pub exited: Arc<ExitCell>,
    pub io: Keepalive,
    pub tty: Option<Console>,
}

impl Exec {
    pub fn new(id: &str, exec_id: &str, stdio: StdioPaths, process: Vec<u8>) -> Exec {
        Exec {
            id: exec_id.to_string(),
            process: Some(process),
            stdio,
            pid: None,
            life: Lifecycle::added(format!("exec {exec_id:?} in {id:?}")),
            exit: None,
            exited: Arc::new(ExitCell::default()),
            io: Keepalive::default(),
            tty: None,
        }
    }
}

/// An exec's process JSON with `terminal` set as the request says. containerd's client
/// passes the container's own process (often `terminal: false`) with a terminal requested
/// on the request alone (`cio.WithTerminal`); runc's shim lets the request decide too, and
/// libcontainer refuses a console socket for a process without a terminal.
pub fn with_terminal(process: &[u8], terminal: bool, exec_id: &str) -> Result<Vec<u8>> {
    let mut v: serde_json::Value = serde_json::from_slice(process)
        .map_err(|e| Error::InvalidArgument(format!("exec {exec_id:?}: process spec: {e}")))?;
    let Some(obj) = v.as_object_mut() else {
        return Err(Error::InvalidArgument(format!(
            "exec {exec_id:?}: process spec is not an object"
        )));
    };
    if obj
        .get("terminal")
        .and_then(|t| t.as_bool())
        .unwrap_or(false)
        == terminal
    {
        return Ok(process.to_vec());
    }
    obj.insert("terminal".into(), serde_json::Value::Bool(terminal));
    serde_json::to_vec(&v)
        .map_err(|e| Error::Internal(format!("exec {exec_id:?}: process spec: {e}")))
}
