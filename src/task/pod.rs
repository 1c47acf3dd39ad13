//! The pod: every container this shim serves, and the Task API's rules for them
//! (what may happen in which state, which events go out and in what order).
//! One shim serves one pod; a plain `ctr run` container is a pod of one.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use containerd_shim_protos::events::task::{
    TaskCheckpointed, TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO,
    TaskOOM, TaskPaused, TaskResumed, TaskStart,
};
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::topics;
use containerd_shim_protos::types::mount::Mount as ProtoMount;
use tokio::sync::Mutex as AsyncMutex;

use crate::cgroup::oom;
use crate::error::{Error, Result};
use crate::ids::validate_id;
use crate::runtime::mount::Mount;
use crate::runtime::{CgroupStats, CreateSpec, ExecSpec, Runtime};
use crate::shim::events::Publisher;
use crate::stdio::tty::{Console, ConsoleSocket, OutputDrain};
use crate::stdio::{ChildIo, Keepalive, StdioPaths, open_stdio, open_terminal_output};
use crate::task::checkpoint::{self, CheckpointSpec};
use crate::task::container::{Container, Exec, Status};
use crate::task::process::{Exit, ExitCell};

/// Exits of PIDs nobody has claimed yet are kept this many at most.
const MAX_ORPHAN_EXITS: usize = 1024;
/// How long Delete of a never-started container waits for its killed init to be reaped.
const DELETE_REAP_WAIT: Duration = Duration::from_secs(2);
/// How long a container's TaskExit waits for its killed exec processes to be reaped.
const EXEC_DRAIN_WAIT: Duration = Duration::from_secs(5);
/// How long an exit waits for its terminal's output to reach the client's fifo.
const TTY_OUTPUT_WAIT: Duration = Duration::from_secs(5);

pub struct CreateParams {
    pub id: String,
    pub bundle: PathBuf,
    pub rootfs: Vec<Mount>,
    pub stdio: StdioPaths,
    pub systemd_cgroup: bool,
    pub no_pivot_root: bool,
    pub no_new_keyring: bool,
    pub checkpoint: String,
}

pub struct ExecParams {
    pub id: String,
    pub exec_id: String,
    pub stdio: StdioPaths,
    /// The OCI `Process` JSON.
    pub process: Vec<u8>,
}

/// State of the container's init (`id` = container ID) or of one exec (`id` = exec ID).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateInfo {
    pub id: String,
    pub bundle: PathBuf,
    pub pid: i32,
    pub status: Status,
    pub stdio: StdioPaths,
    pub exit: Option<Exit>,
}

type Slot = Arc<AsyncMutex<Option<Container>>>;

/// Who a PID is: a container's init (`exec: None`) or one of its exec processes.
#[derive(Clone)]
struct Owner {
    container: String,
    exec: Option<String>,
    exit: Arc<ExitCell>,
    /// The process's terminal output, which must all be copied before its exit is known.
    tty: Option<OutputDrain>,
}

#[derive(Default)]
struct Exits {
    /// Live PIDs → their owner.
    by_pid: HashMap<i32, Owner>,
    /// Exits reaped before their PID was registered (an init killed during Create).
    orphans: HashMap<i32, Exit>,
}

pub struct Pod {
    runtime: Arc<dyn Runtime>,
    events: Publisher,
    containers: Mutex<HashMap<String, Slot>>,
    exits: Mutex<Exits>,
    /// Raised (under the `containers` lock) when Shutdown found the pod empty: the daemon
    /// is going away, so a Create that slipped in now would leave a container nobody
    /// serves.
    closing: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these short locks leaves consistent data; keep serving.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn timestamp(t: std::time::SystemTime) -> Timestamp {
    Timestamp::from(t)
}

impl Pod {
    pub fn new(runtime: Arc<dyn Runtime>, events: Publisher) -> Pod {
        Pod {
            runtime,
            events,
            containers: Mutex::new(HashMap::new()),
            exits: Mutex::new(Exits::default()),
            closing: AtomicBool::new(false),
        }
    }

    pub fn is_empty(&self) -> bool {
        lock(&self.containers).is_empty()
    }

    /// If the pod serves nothing, closes it for good (every later Create is refused) and
    /// says so; the daemon then exits. Checked and raised under one lock with Create's
    /// insertion, so a container is either in before it or refused.
    pub fn close_if_empty(&self) -> bool {
        let map = lock(&self.containers);
        if map.is_empty() {
            self.closing.store(true, Ordering::SeqCst);
        }
        self.closing.load(Ordering::SeqCst)
    }

    fn slot(&self, id: &str) -> Result<Slot> {
        lock(&self.containers)
            .get(id)
            .cloned()
            .ok_or_else(|| not_found(id))
    }

    pub async fn create(&self, p: CreateParams) -> Result<i32> {
        validate_id(&p.id)?;
        if !p.checkpoint.is_empty() {
            let what = format!("restoring {:?} from checkpoint {:?}", p.id, p.checkpoint);
            checkpoint::criu_ready(&what).await?;
            // A working CRIU gets this far; libcontainer 0.7 has checkpoint but no restore.
            return Err(Error::Unimplemented(format!(
                "{what}: libcontainer has no CRIU restore yet, so this shim cannot restore"
            )));
        }
        let slot: Slot = Arc::new(AsyncMutex::new(None));
        let mut guard = slot.clone().lock_owned().await;
        {
            let mut map = lock(&self.containers);
            if self.closing.load(Ordering::SeqCst) {
                return Err(Error::FailedPrecondition(format!(
                    "create {:?}: this shim is shutting down (its pod was empty and containerd \
                     asked it to exit); start a new one",
                    p.id
                )));
            }
            if map.contains_key(&p.id) {
                return Err(Error::AlreadyExists(format!(
                    "container {:?} already exists",
                    p.id
                )));
            }
            map.insert(p.id.clone(), slot);
        }
        let (container, early_exit) = match self.build(&p).await {
            Ok(c) => c,
            Err(e) => {
                lock(&self.containers).remove(&p.id);
                return Err(e);
            }
        };
        let pid = container.pid;
        let mut ev = TaskCreate::new();
        ev.container_id = p.id.clone();
        ev.bundle = p.bundle.to_string_lossy().into_owned();
        ev.rootfs = p.rootfs.iter().map(to_proto_mount).collect();
        let mut io = TaskIO::new();
        io.stdin = p.stdio.stdin.clone();
        io.stdout = p.stdio.stdout.clone();
        io.stderr = p.stdio.stderr.clone();
        io.terminal = p.stdio.terminal;
        ev.io = Some(io).into();
        ev.pid = pid as u32;
        self.events.publish(topics::TASK_CREATE_EVENT_TOPIC, &ev);
        if let Some(exit) = early_exit {
            container.exit.set(exit);
            let seen = Some(container.exit_seen.clone());
            self.publish_exit(&container.id, &container.id, pid, exit, seen);
        }
        *guard = Some(container);
        Ok(pid)
    }

    /// Runs `launch` (a create or an exec) with the process's stdio: fds opened here, or
    /// for a terminal a console socket on which the init sends its pty master. The
    /// process exists once this returns Ok, even when attaching its terminal failed (the
    /// inner Err): the caller removes it then.
    async fn launch<F>(
        &self,
        id: &str,
        stdio: &StdioPaths,
        launch: impl FnOnce(ChildIo) -> F,
    ) -> Result<(i32, Keepalive, Result<Option<Console>>)>
    where
        F: std::future::Future<Output = Result<i32>>,
    {
        let ns = self.events.namespace();
        if !stdio.terminal {
            let (child, keep) = open_stdio(stdio, id, ns).await?;
            let pid = launch(ChildIo::Fds(child)).await?;
            return Ok((pid, keep, Ok(None)));
        }
        let mut keep = Keepalive::default();
        let out = open_terminal_output(stdio, id, ns, &mut keep).await?;
        let sock = ConsoleSocket::bind(&self.runtime.console_dir())?;
        let path = sock.path().to_path_buf();
        let receiving = tokio::spawn(sock.receive());
        let pid = match launch(ChildIo::Console(path)).await {
            Ok(pid) => pid,
            Err(e) => {
                receiving.abort();
                return Err(e);
            }
        };
        let console = match receiving.await {
            Ok(Ok(master)) => Console::attach(master, &stdio.stdin, out, keep).map(Some),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(Error::Internal(format!("terminal receive task: {e}"))),
        };
        Ok((pid, Keepalive::default(), console))
    }

    async fn build(&self, p: &CreateParams) -> Result<(Container, Option<Exit>)> {
        // An orphan exit older than this create belongs to an earlier process that had
        // the same PID, not to ours.
        let began = std::time::SystemTime::now();
        let (pid, keep, tty) = self
            .launch(&p.id, &p.stdio, |stdio| {
                self.runtime.create(CreateSpec {
                    id: p.id.clone(),
                    bundle: p.bundle.clone(),
                    rootfs: p.rootfs.clone(),
                    stdio,
                    systemd_cgroup: p.systemd_cgroup,
                    no_pivot_root: p.no_pivot_root,
                    no_new_keyring: p.no_new_keyring,
                })
            })
            .await?;
        let tty = match tty {
            Ok(t) => t,
            Err(e) => {
                // Leave nothing behind: the container exists but its terminal does not.
                if let Err(d) = self.runtime.delete(&p.id, &p.bundle).await {
                    log::warn!("remove {} after its terminal failed: {d}", p.id);
                }
                return Err(e);
            }
        };
        let exit = Arc::new(ExitCell::default());
        let early = self.register(
            pid,
            Owner {
                container: p.id.clone(),
                exec: None,
                exit: exit.clone(),
                tty: tty.as_ref().map(Console::drain),
            },
            began,
        );
        let c = Container {
            id: p.id.clone(),
            bundle: p.bundle.clone(),
            stdio: p.stdio.clone(),
            pid,
            started: false,
            paused: false,
            exit,
            exit_seen: Arc::new(AtomicBool::new(false)),
            io: keep,
            tty,
            execs: HashMap::new(),
            oom_watch: self.watch_oom(&p.id, pid).await,
        };
        Ok((c, early))
    }

    /// Publishes TaskOOM for every OOM kill in the container's memory cgroup. A container
    /// whose cgroup cannot be watched still runs; it just gets no OOM events (logged).
    async fn watch_oom(&self, id: &str, pid: i32) -> Option<tokio::task::JoinHandle<()>> {
        let cgroup = match self.runtime.memory_cgroup(id, pid).await {
            Ok(Some(c)) => c,
            Ok(None) => return None,
            Err(e) => {
                log::warn!("no OOM events for {id}: {e}");
                return None;
            }
        };
        let events = self.events.clone();
        let owner = id.to_string();
        let publish = move || {
            let mut ev = TaskOOM::new();
            ev.container_id = owner.clone();
            events.publish(topics::TASK_OOM_EVENT_TOPIC, &ev);
        };
        oom::watch(cgroup.clone(), publish)
            .map_err(|e| log::warn!("no OOM events for {id} ({cgroup:?}): {e}"))
            .ok()
    }

    /// Claims `pid`; returns its exit if the reaper already saw it (after `began`, so not
    /// an earlier process that had the same PID).
    fn register(&self, pid: i32, owner: Owner, began: std::time::SystemTime) -> Option<Exit> {
        let mut ex = lock(&self.exits);
        ex.by_pid.insert(pid, owner);
        ex.orphans.remove(&pid).filter(|e| e.at >= began)
    }

    /// Exec: records a process to run in the running container `id`; Start runs it.
    pub async fn exec(&self, p: ExecParams) -> Result<()> {
        validate_id(&p.exec_id)?;
        let slot = self.slot(&p.id)?;
        let mut g = slot.lock().await;
        let c = g.as_mut().ok_or_else(|| not_found(&p.id))?;
        if c.status() != Status::Running {
            return Err(Error::FailedPrecondition(format!(
                "exec {:?}: container {:?} is not running",
                p.exec_id, p.id
            )));
        }
        if c.execs.contains_key(&p.exec_id) {
            return Err(Error::AlreadyExists(format!(
                "exec {:?} already exists in container {:?}",
                p.exec_id, p.id
            )));
        }
        c.execs.insert(
            p.exec_id.clone(),
            Exec {
                id: p.exec_id.clone(),
                process: with_terminal(&p.process, p.stdio.terminal, &p.exec_id)?,
                stdio: p.stdio,
                pid: None,
                exit: Arc::new(ExitCell::default()),
                io: Default::default(),
                tty: None,
            },
        );
        let mut ev = TaskExecAdded::new();
        ev.container_id = p.id.clone();
        ev.exec_id = p.exec_id;
        self.events
            .publish(topics::TASK_EXEC_ADDED_EVENT_TOPIC, &ev);
        Ok(())
    }

    async fn start_exec(&self, id: &str, exec_id: &str) -> Result<i32> {
        let slot = self.slot(id)?;
        let mut g = slot.lock().await;
        let c = g.as_mut().ok_or_else(|| not_found(id))?;
        if c.status() != Status::Running {
            return Err(Error::FailedPrecondition(format!(
                "exec {exec_id:?}: container {id:?} is not running"
            )));
        }
        let bundle = c.bundle.clone();
        let e = c
            .execs
            .get_mut(exec_id)
            .ok_or_else(|| exec_not_found(id, exec_id))?;
        if e.status() != Status::Created {
            return Err(Error::FailedPrecondition(format!(
                "exec {exec_id:?} in {id:?} was already started"
            )));
        }
        let began = std::time::SystemTime::now();
        let (pid, keep, tty) = self
            .launch(id, &e.stdio, |stdio| {
                self.runtime.exec(ExecSpec {
                    id: id.to_string(),
                    exec_id: exec_id.to_string(),
                    bundle,
                    process: e.process.clone(),
                    stdio,
                })
            })
            .await?;
        e.pid = Some(pid);
        e.io = keep;
        let early = self.register(
            pid,
            Owner {
                container: id.to_string(),
                exec: Some(exec_id.to_string()),
                exit: e.exit.clone(),
                tty: tty
                    .as_ref()
                    .ok()
                    .and_then(|t| t.as_ref().map(Console::drain)),
            },
            began,
        );
        match tty {
            Ok(t) => e.tty = t,
            Err(err) => {
                // The exec runs but cannot be reached: end it; its exit is reaped as usual.
                let _ = self.runtime.kill(id, pid, libc::SIGKILL, false).await;
                if let Some(exit) = early {
                    e.exit.set(exit);
                }
                return Err(err);
            }
        }
        let mut ev = TaskExecStarted::new();
        ev.container_id = id.to_string();
        ev.exec_id = exec_id.to_string();
        ev.pid = pid as u32;
        self.events
            .publish(topics::TASK_EXEC_STARTED_EVENT_TOPIC, &ev);
        if let Some(exit) = early {
            if let Some(t) = &e.tty {
                t.drain().finish(TTY_OUTPUT_WAIT).await;
            }
            if !e.exit.set(exit) {
                return Ok(pid);
            }
            e.io.release_fifos();
            self.publish_exit(id, exec_id, pid, exit, None);
        }
        Ok(pid)
    }

    /// Start of the container's init (`exec_id` empty) or of one of its execs.
    pub async fn start(&self, id: &str, exec_id: &str) -> Result<i32> {
        if !exec_id.is_empty() {
            return self.start_exec(id, exec_id).await;
        }
        let slot = self.slot(id)?;
        let mut g = slot.lock().await;
        let c = g.as_mut().ok_or_else(|| not_found(id))?;
        match c.status() {
            Status::Created => {}
            Status::Running | Status::Paused => {
                return Err(Error::FailedPrecondition(format!(
                    "container {id:?} is already started"
                )));
            }
            Status::Stopped => {
                return Err(Error::FailedPrecondition(format!(
                    "container {id:?} has already exited"
                )));
            }
        }
        self.runtime.start(id).await?;
        c.started = true;
        let mut ev = TaskStart::new();
        ev.container_id = id.to_string();
        ev.pid = c.pid as u32;
        // Published under the container's lock: the exit path takes the same lock before
        // publishing TaskExit, so TaskStart always goes first.
        self.events.publish(topics::TASK_START_EVENT_TOPIC, &ev);
        Ok(c.pid)
    }

    /// The init's PID, for Connect. Unlike State it does not count as containerd seeing
    /// an exit: containerd's loader calls Connect right before the Pids that decides
    /// whether it keeps the task (see `pids`).
    pub async fn init_pid(&self, id: &str) -> Result<u32> {
        let slot = self.slot(id)?;
        let g = slot.lock().await;
        let c = g.as_ref().ok_or_else(|| not_found(id))?;
        Ok(c.pid as u32)
    }

    pub async fn state(&self, id: &str, exec_id: &str) -> Result<StateInfo> {
        let slot = self.slot(id)?;
        let g = slot.lock().await;
        let c = g.as_ref().ok_or_else(|| not_found(id))?;
        if !exec_id.is_empty() {
            let e = c
                .execs
                .get(exec_id)
                .ok_or_else(|| exec_not_found(id, exec_id))?;
            return Ok(StateInfo {
                id: e.id.clone(),
                bundle: c.bundle.clone(),
                pid: e.pid.unwrap_or(0),
                status: e.status(),
                stdio: e.stdio.clone(),
                exit: e.exit.get(),
            });
        }
        let exit = c.exited();
        if exit.is_some() {
            c.exit_seen.store(true, Ordering::SeqCst);
        }
        Ok(StateInfo {
            id: c.id.clone(),
            bundle: c.bundle.clone(),
            pid: c.pid,
            status: c.status(),
            stdio: c.stdio.clone(),
            exit,
        })
    }

    pub async fn wait(&self, id: &str, exec_id: &str) -> Result<Exit> {
        let (cell, seen) = {
            let slot = self.slot(id)?;
            let g = slot.lock().await;
            let c = g.as_ref().ok_or_else(|| not_found(id))?;
            if exec_id.is_empty() {
                (c.exit.clone(), Some(c.exit_seen.clone()))
            } else {
                let e = c
                    .execs
                    .get(exec_id)
                    .ok_or_else(|| exec_not_found(id, exec_id))?;
                (e.exit.clone(), None)
            }
        };
        let exit = cell.wait().await;
        if let Some(seen) = seen {
            seen.store(true, Ordering::SeqCst);
        }
        Ok(exit)
    }

    pub async fn kill(&self, id: &str, exec_id: &str, signal: u32, all: bool) -> Result<()> {
        let slot = self.slot(id)?;
        let mut g = slot.lock().await;
        let c = g.as_mut().ok_or_else(|| not_found(id))?;
        let sig = i32::try_from(signal)
            .ok()
            .filter(|s| (1..=64).contains(s))
            .ok_or_else(|| Error::InvalidArgument(format!("invalid signal {signal}")))?;
        if !exec_id.is_empty() {
            let e = c
                .execs
                .get(exec_id)
                .ok_or_else(|| exec_not_found(id, exec_id))?;
            return match (e.status(), e.pid) {
                (Status::Running, Some(pid)) => self.runtime.kill(id, pid, sig, false).await,
                (Status::Created, _) => Err(Error::FailedPrecondition(format!(
                    "exec {exec_id:?} in {id:?} has not been started"
                ))),
                _ => Err(Error::NotFound(format!(
                    "exec {exec_id:?} in {id:?}: process already finished"
                ))),
            };
        }
        if c.exited().is_some() {
            return Err(Error::NotFound(format!(
                "container {id:?}: process already finished"
            )));
        }
        self.runtime.kill(id, c.pid, sig, all).await?;
        if sig == libc::SIGKILL && c.paused {
            // A frozen process cannot die; thaw it so the kill takes effect (as runc does).
            self.runtime.resume(id).await?;
            c.paused = false;
        }
        Ok(())
    }

    /// Pause: freezes a running container.
    pub async fn pause(&self, id: &str) -> Result<()> {
        self.set_frozen(id, true).await
    }

    /// Resume: thaws a paused container.
    pub async fn resume(&self, id: &str) -> Result<()> {
        self.set_frozen(id, false).await
    }

    async fn set_frozen(&self, id: &str, freeze: bool) -> Result<()> {
        let (from, verb) = if freeze {
            (Status::Running, "pause")
        } else {
            (Status::Paused, "resume")
        };
        let slot = self.slot(id)?;
        let mut g = slot.lock().await;
        let c = g.as_mut().ok_or_else(|| not_found(id))?;
        if c.status() != from {
            return Err(Error::FailedPrecondition(format!(
                "cannot {verb} container {id:?}: it is {:?}, not {from:?}",
                c.status()
            )));
        }
        if freeze {
            self.runtime.pause(id).await?;
            let mut ev = TaskPaused::new();
            ev.container_id = id.to_string();
            self.events.publish(topics::TASK_PAUSED_EVENT_TOPIC, &ev);
        } else {
            self.runtime.resume(id).await?;
            let mut ev = TaskResumed::new();
            ev.container_id = id.to_string();
            self.events.publish(topics::TASK_RESUMED_EVENT_TOPIC, &ev);
        }
        c.paused = freeze;
        Ok(())
    }

    /// Checkpoint: CRIU dumps the running (or paused) container into `spec.image_path`;
    /// with `--exit` (`leave_running` false) the container then stops and exits as usual.
    pub async fn checkpoint(&self, id: &str, spec: &CheckpointSpec) -> Result<()> {
        let slot = self.slot(id)?;
        let g = slot.lock().await;
        let c = g.as_ref().ok_or_else(|| not_found(id))?;
        if !matches!(c.status(), Status::Running | Status::Paused) {
            return Err(Error::FailedPrecondition(format!(
                "cannot checkpoint container {id:?}: it is {:?}, not running",
                c.status()
            )));
        }
        checkpoint::criu_ready(&format!("checkpoint of {id:?}")).await?;
        self.runtime.checkpoint(id, spec).await?;
        let mut ev = TaskCheckpointed::new();
        ev.container_id = id.to_string();
        ev.checkpoint = spec.image_path.to_string_lossy().into_owned();
        self.events
            .publish(topics::TASK_CHECKPOINTED_EVENT_TOPIC, &ev);
        Ok(())
    }

    /// Stats: the container's cgroup numbers (while it has a cgroup: not after it stopped).
    pub async fn stats(&self, id: &str) -> Result<CgroupStats> {
        let slot = self.slot(id)?;
        let g = slot.lock().await;
        let c = g.as_ref().ok_or_else(|| not_found(id))?;
        if c.status() == Status::Stopped {
            return Err(Error::FailedPrecondition(format!(
                "no stats for container {id:?}: it has exited"
            )));
        }
        self.runtime.stats(id).await
    }

    /// Update: new resource limits for the container's live cgroup.
    pub async fn update(&self, id: &str, resources: &[u8]) -> Result<()> {
        let slot = self.slot(id)?;
        let g = slot.lock().await;
        let c = g.as_ref().ok_or_else(|| not_found(id))?;
        if c.status() == Status::Stopped {
            return Err(Error::FailedPrecondition(format!(
                "cannot update container {id:?}: it has exited"
            )));
        }
        self.runtime.update(id, resources).await
    }

    /// Delete of an exec: forgets a finished (or never started) exec process.
    async fn delete_exec(&self, id: &str, exec_id: &str) -> Result<(i32, Exit)> {
        let slot = self.slot(id)?;
        let mut g = slot.lock().await;
        let c = g.as_mut().ok_or_else(|| not_found(id))?;
        let e = c
            .execs
            .get(exec_id)
            .ok_or_else(|| exec_not_found(id, exec_id))?;
        if e.status() == Status::Running {
            return Err(Error::FailedPrecondition(format!(
                "exec {exec_id:?} in {id:?} is running: kill it before delete"
            )));
        }
        let pid = e.pid.unwrap_or(0);
        let exit = e.exit.get().unwrap_or_else(|| Exit::now(0));
        c.execs.remove(exec_id);
        if pid != 0 {
            lock(&self.exits).by_pid.remove(&pid);
        }
        Ok((pid, exit))
    }

    /// Delete of the container (`exec_id` empty: the TaskDelete event goes out) or of an exec.
    pub async fn delete(&self, id: &str, exec_id: &str) -> Result<(i32, Exit)> {
        if !exec_id.is_empty() {
            return self.delete_exec(id, exec_id).await;
        }
        let slot = self.slot(id)?;
        let mut g = slot.lock().await;
        let c = g.as_ref().ok_or_else(|| not_found(id))?;
        if matches!(c.status(), Status::Running | Status::Paused) {
            return Err(Error::FailedPrecondition(format!(
                "container {id:?} is running: kill it before delete"
            )));
        }
        self.runtime.delete(id, &c.bundle).await?;
        let exit = match c.exited() {
            Some(e) => e,
            // A created container's init was just killed; its exit comes through the reaper.
            None => {
                let e = tokio::time::timeout(DELETE_REAP_WAIT, c.exit.wait())
                    .await
                    .unwrap_or_else(|_| Exit::now(137));
                // Record it, so a Wait already pending on this container answers too.
                c.exit.set(e);
                c.exit.get().unwrap_or(e)
            }
        };
        let pid = c.pid;
        if let Some(w) = &c.oom_watch {
            w.abort();
        }
        lock(&self.exits).by_pid.retain(|_, o| o.container != id);
        *g = None;
        lock(&self.containers).remove(id);
        let mut ev = TaskDelete::new();
        ev.container_id = id.to_string();
        ev.id = id.to_string();
        ev.pid = pid as u32;
        ev.exit_status = exit.status;
        ev.exited_at = Some(timestamp(exit.at)).into();
        self.events.publish(topics::TASK_DELETE_EVENT_TOPIC, &ev);
        Ok((pid, exit))
    }

    pub async fn pids(&self, id: &str) -> Result<Vec<u32>> {
        let slot = self.slot(id)?;
        let g = slot.lock().await;
        let c = g.as_ref().ok_or_else(|| not_found(id))?;
        if c.exited().is_some() {
            // containerd >= 1.7, loading its shims after a restart, asks each task's shim
            // for Pids and deletes a task whose list is empty, as a shim "leaked" by a
            // Create cut off half-way: an exit during its downtime would be lost with it
            // (the task gone, CRI left with 255). So the init stays listed, like a zombie
            // until it is reaped, only while containerd has not seen its exit: TaskExit
            // could not be delivered and nobody asked State or Wait since. Any caller
            // after that gets the honest empty list.
            if !c.exit_seen.load(Ordering::SeqCst) {
                return Ok(vec![c.pid as u32]);
            }
            return Ok(Vec::new());
        }
        self.runtime.pids(id, c.pid).await
    }

    pub async fn close_stdin(&self, id: &str, exec_id: &str) -> Result<()> {
        let slot = self.slot(id)?;
        let mut g = slot.lock().await;
        let c = g.as_mut().ok_or_else(|| not_found(id))?;
        let (io, tty) = if exec_id.is_empty() {
            (&mut c.io, &mut c.tty)
        } else {
            let e = c
                .execs
                .get_mut(exec_id)
                .ok_or_else(|| exec_not_found(id, exec_id))?;
            (&mut e.io, &mut e.tty)
        };
        io.close_stdin();
        if let Some(t) = tty {
            t.close_stdin();
        }
        Ok(())
    }

    /// ResizePty: the terminal's new window size. A process without a terminal has
    /// nothing to resize (as with runc-v2, that is not an error).
    pub async fn resize(&self, id: &str, exec_id: &str, width: u32, height: u32) -> Result<()> {
        let slot = self.slot(id)?;
        let g = slot.lock().await;
        let c = g.as_ref().ok_or_else(|| not_found(id))?;
        let tty = if exec_id.is_empty() {
            &c.tty
        } else {
            &c.execs
                .get(exec_id)
                .ok_or_else(|| exec_not_found(id, exec_id))?
                .tty
        };
        match tty {
            Some(t) => t.resize(width, height),
            None => Ok(()),
        }
    }

    /// A child was reaped. Records the exit at once (so Wait and Delete see it) and then
    /// publishes TaskExit under the container's lock, after any TaskStart.
    pub async fn on_exit(&self, pid: i32, status: u32) {
        let exit = Exit::now(status);
        let owner = {
            let mut ex = lock(&self.exits);
            match ex.by_pid.get(&pid).cloned() {
                Some(o) => Some(o),
                None => {
                    if ex.orphans.len() >= MAX_ORPHAN_EXITS {
                        ex.orphans.clear();
                    }
                    ex.orphans.insert(pid, exit);
                    None
                }
            }
        };
        let Some(owner) = owner else { return };
        let id = owner.container;
        if owner.exec.is_none() {
            self.drain_execs(&id, pid).await;
        }
        // Wait answers once the exit is set, and the client deletes the process next:
        // its terminal output must be in the client's fifo by then.
        if let Some(t) = &owner.tty {
            t.finish(TTY_OUTPUT_WAIT).await;
        }
        if !owner.exit.set(exit) {
            return;
        }
        let Ok(slot) = self.slot(&id) else { return };
        let mut g = slot.lock().await;
        let Some(c) = g.as_mut() else { return };
        // The client's ends stay theirs; ours only kept the fifos alive for the process.
        match &owner.exec {
            None => {
                c.io.release_fifos();
                self.publish_exit(&id, &id, pid, exit, Some(c.exit_seen.clone()));
            }
            Some(exec_id) => {
                if let Some(e) = c.execs.get_mut(exec_id) {
                    e.io.release_fifos();
                }
                self.publish_exit(&id, exec_id, pid, exit, None);
            }
        }
    }

    /// The init of `id` exited: its exec processes go with it (in a shared or the host's
    /// PID namespace the kernel would leave them running), and, as with runc-v2, the
    /// container's TaskExit comes only after theirs.
    async fn drain_execs(&self, id: &str, init_pid: i32) {
        let running: Vec<Arc<ExitCell>> = lock(&self.exits)
            .by_pid
            .values()
            .filter(|o| o.container == id && o.exec.is_some() && o.exit.get().is_none())
            .map(|o| o.exit.clone())
            .collect();
        if running.is_empty() {
            return;
        }
        if let Err(e) = self.runtime.kill(id, init_pid, libc::SIGKILL, true).await {
            log::warn!("kill exec processes of {id} after its init exited: {e}");
        }
        for cell in running {
            if tokio::time::timeout(EXEC_DRAIN_WAIT, cell.wait())
                .await
                .is_err()
            {
                log::warn!("an exec process of {id} outlived its init by {EXEC_DRAIN_WAIT:?}");
            }
        }
    }

    /// TaskExit of the init (`process_id` = container ID) or of an exec (the exec ID).
    /// `delivered`, for an init: raised once containerd accepted the event.
    fn publish_exit(
        &self,
        id: &str,
        process_id: &str,
        pid: i32,
        exit: Exit,
        delivered: Option<Arc<AtomicBool>>,
    ) {
        let mut ev = TaskExit::new();
        ev.container_id = id.to_string();
        ev.id = process_id.to_string();
        ev.pid = pid as u32;
        ev.exit_status = exit.status;
        ev.exited_at = Some(timestamp(exit.at)).into();
        match delivered {
            Some(flag) => self
                .events
                .publish_tracked(topics::TASK_EXIT_EVENT_TOPIC, &ev, flag),
            None => self.events.publish(topics::TASK_EXIT_EVENT_TOPIC, &ev),
        }
    }
}

fn not_found(id: &str) -> Error {
    Error::NotFound(format!("container {id:?} not found"))
}

fn exec_not_found(id: &str, exec_id: &str) -> Error {
    Error::NotFound(format!("exec {exec_id:?} not found in container {id:?}"))
}

fn to_proto_mount(m: &Mount) -> ProtoMount {
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

/// An exec's process JSON with `terminal` set as the request says. containerd's client
/// passes the container's own process (often `terminal: false`) with a terminal requested
/// on the request alone (`cio.WithTerminal`); runc's shim lets the request decide too, and
/// libcontainer refuses a console socket for a process without a terminal.
fn with_terminal(process: &[u8], terminal: bool, exec_id: &str) -> Result<Vec<u8>> {
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

#[cfg(test)]
#[path = "pod_tests.rs"]
mod tests;
