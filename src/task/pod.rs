//! The pod: every container this shim serves, and the Task API's rules for them (what may
//! happen in which state, which events go out and in what order). One shim serves one
//! pod; a plain `ctr run` container is a pod of one.
//!
//! The pieces: `registry` (containers by ID, the shutdown gate), `container` + `state`
//! (each init and exec as an explicit state machine behind a short lock), `exits` (which
//! PID is whose), `launch` (stdio and terminals), `publish` (the events). The flow is
//! service → pod → container → runtime; a runtime call never runs under a container's lock.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::cgroup::oom;
use crate::error::{Error, Result};
use crate::ids::validate_id;
use crate::runtime::mount::Mount;
use crate::runtime::{CgroupStats, CreateSpec, ExecSpec, RestoreSpec, Runtime};
use crate::shim::events::Publisher;
use crate::stdio::tty::Console;
use crate::stdio::{Keepalive, StdioPaths};
use crate::task::checkpoint::{self, CheckpointSpec};
use crate::task::container::{Container, Entry, Exec, PendingRestore, with_terminal};
use crate::task::exits::{ExitTable, Owner, Registered};
use crate::task::launch::launch;
use crate::task::process::{Exit, ExitCell};
use crate::task::publish;
use crate::task::registry::{Registry, lock};
use crate::task::state::{Phase, Status};

/// How long Delete of a never-started container waits for its killed init to be reaped.
const DELETE_REAP_WAIT: Duration = Duration::from_secs(2);
/// How long a container's TaskExit waits for its killed exec processes to be reaped (all
/// of them together).
const EXEC_DRAIN_WAIT: Duration = Duration::from_secs(5);
/// How long an exit waits for its terminal's output to reach the client's fifo.
const TTY_OUTPUT_WAIT: Duration = Duration::from_secs(5);
/// How long Delete waits for an exit that is still being handled (the two waits above).
const EXIT_HANDLING_WAIT: Duration = Duration::from_secs(11);

/// The exit status of a process that never ran (its Start failed): containerd's
/// "unknown exit status".
const NEVER_RAN: u32 = 255;

pub struct CreateParams {
    pub id: String,
    pub bundle: PathBuf,
    pub rootfs: Vec<Mount>,
    pub stdio: StdioPaths,
    pub systemd_cgroup: bool,
    pub no_pivot_root: bool,
    pub no_new_keyring: bool,
    /// A restore (runc-v2's "createdCheckpoint"): the checkpoint's directory, empty for a
    /// plain Create.
    pub checkpoint: String,
    pub parent_checkpoint: String,
    /// The runtime options' CriuWorkPath: where CRIU works and logs.
    pub criu_work_path: Option<PathBuf>,
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

/// One process of a container, for Pids: an exec's carries its exec ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessEntry {
    pub pid: u32,
    pub exec_id: Option<String>,
}

pub struct Pod {
    runtime: Arc<dyn Runtime>,
    events: Publisher,
    containers: Registry<Entry>,
    exits: Mutex<ExitTable<Entry>>,
}

/// The exit a never-started exec reports when deleted: status 0 and no time (runc-v2's
/// answer: it never exited because it never ran).
fn never_started() -> Exit {
    Exit {
        status: 0,
        at: SystemTime::UNIX_EPOCH,
    }
}

impl Pod {
    pub fn new(runtime: Arc<dyn Runtime>, events: Publisher) -> Pod {
        Pod {
            runtime,
            events,
            containers: Registry::default(),
            exits: Mutex::new(ExitTable::default()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.containers.is_empty()
    }

    /// If the pod serves nothing, closes it for good (every later Create is refused) and
    /// says so; the daemon then exits.
    pub fn close_if_empty(&self) -> bool {
        self.containers.close_if_empty()
    }

    pub async fn create(&self, p: CreateParams) -> Result<i32> {
        validate_id(&p.id)?;
        if !p.checkpoint.is_empty() {
            return self.create_from_checkpoint(p).await;
        }
        let entry = Arc::new(Entry::new(&p.id, p.bundle.clone(), p.stdio.clone()));
        // Before anything is opened, mounted or cleaned up: a refused Create touches nothing.
        self.containers.reserve(&p.id, entry.clone())?;
        let order = entry.order.lock().await;
        let reaped = match self.build(&p, &entry).await {
            Ok(r) => r,
            Err(e) => {
                // A Wait that came in meanwhile answers; the ID is free again.
                entry.lock().exited.set(Exit::now(NEVER_RAN));
                self.containers.remove(&p.id, &entry);
                return Err(create_error(e));
            }
        };
        let pid = entry.lock().pid;
        publish::create(&self.events, &p.id, &p.bundle, &p.rootfs, &p.stdio, pid);
        drop(order);
        if let Some((owner, exit)) = reaped {
            self.exited(pid, owner, exit).await;
        }
        Ok(pid)
    }

    /// Create with a checkpoint, as runc-v2 does it: nothing runs yet. The container is
    /// recorded as Created (PID 0, TaskCreate says so) with what the restore needs, and
    /// its Start restores it (`start_restore`). A host whose CRIU cannot work is told now,
    /// with CRIU's own words, and nothing is recorded.
    async fn create_from_checkpoint(&self, p: CreateParams) -> Result<i32> {
        let what = format!("restoring {:?} from checkpoint {:?}", p.id, p.checkpoint);
        let image =
            checkpoint::restore_image(&p.checkpoint, &p.parent_checkpoint, p.criu_work_path)?;
        self.runtime.criu_ready(&what).await?;
        let entry = Arc::new(Entry::new(&p.id, p.bundle.clone(), p.stdio.clone()));
        self.containers.reserve(&p.id, entry.clone())?;
        let order = entry.order.lock().await;
        {
            let mut c = entry.lock();
            c.restore = Some(PendingRestore {
                rootfs: p.rootfs.clone(),
                systemd_cgroup: p.systemd_cgroup,
                image,
            });
            c.life.created()?;
        }
        publish::create(&self.events, &p.id, &p.bundle, &p.rootfs, &p.stdio, 0);
        drop(order);
        Ok(0)
    }

    /// Start of a container created from a checkpoint: CRIU restores it, with the stdio,
    /// rootfs and cgroup its Create asked for, and the restored init is ours from then
    /// on, like a started one. On failure the container stays Created, restorable again
    /// or deletable.
    async fn start_restore(&self, entry: &Arc<Entry>, pending: PendingRestore) -> Result<i32> {
        let id = entry.id.clone();
        let (bundle, stdio) = {
            let c = entry.lock();
            (c.bundle.clone(), c.stdio.clone())
        };
        let began = SystemTime::now();
        let launched = launch(
            &self.runtime.console_dir(),
            self.events.namespace(),
            &id,
            &stdio,
            |io| {
                self.runtime.restore(RestoreSpec {
                    id: id.clone(),
                    bundle: bundle.clone(),
                    rootfs: pending.rootfs.clone(),
                    stdio: io,
                    systemd_cgroup: pending.systemd_cgroup,
                    image: pending.image.clone(),
                })
            },
        )
        .await;
        let (pid, keep, tty) = match launched {
            Ok(l) => l,
            Err(e) => {
                let mut c = entry.lock();
                c.restore = Some(pending);
                c.life.start_failed(false);
                return Err(e);
            }
        };
        let tty = match tty {
            Ok(t) => t,
            Err(e) => {
                if let Err(d) = self.runtime.delete(&id, &bundle).await {
                    log::warn!("remove {id} after its terminal failed: {d}");
                }
                let mut c = entry.lock();
                c.restore = Some(pending);
                c.life.start_failed(false);
                return Err(e);
            }
        };
        let registered = self
            .adopt_init(&id, entry, (pid, keep, tty), began, |c| {
                c.life.started()?;
                publish::start(&self.events, &id, pid);
                Ok(())
            })
            .await?;
        if let Registered::Reaped(owner, exit) = registered {
            self.exited(pid, owner, exit).await;
        }
        Ok(pid)
    }

    /// Runs the runtime's create (unlocked: the container is Creating) and moves the
    /// container to Created. Returns the init's exit if it was reaped already.
    async fn build(
        &self,
        p: &CreateParams,
        entry: &Arc<Entry>,
    ) -> Result<Option<(Owner<Entry>, Exit)>> {
        // An orphan exit older than this create belongs to an earlier process that had
        // the same PID, not to ours.
        let began = SystemTime::now();
        let (pid, keep, tty) = launch(
            &self.runtime.console_dir(),
            self.events.namespace(),
            &p.id,
            &p.stdio,
            |stdio| {
                self.runtime.create(CreateSpec {
                    id: p.id.clone(),
                    bundle: p.bundle.clone(),
                    rootfs: p.rootfs.clone(),
                    stdio,
                    systemd_cgroup: p.systemd_cgroup,
                    no_pivot_root: p.no_pivot_root,
                    no_new_keyring: p.no_new_keyring,
                })
            },
        )
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
        let registered = self
            .adopt_init(&p.id, entry, (pid, keep, tty), began, |c| c.life.created())
            .await?;
        Ok(match registered {
            Registered::Live(_) => None,
            Registered::Reaped(owner, exit) => Some((owner, exit)),
        })
    }

    /// Takes a new init into the exit table (its exit may have been reaped already),
    /// watches its OOM kills, and records its PID, stdio and terminal and moves the
    /// container on (`transition`) under one lock: what Create and a restoring Start share.
    async fn adopt_init(
        &self,
        id: &str,
        entry: &Arc<Entry>,
        (pid, keep, tty): (i32, Keepalive, Option<Console>),
        began: SystemTime,
        transition: impl FnOnce(&mut Container) -> Result<()>,
    ) -> Result<Registered<Entry>> {
        let drain = tty.as_ref().map(Console::drain);
        let registered = lock(&self.exits).register(pid, entry.clone(), None, drain, began);
        let oom_watch = self.watch_oom(id, pid).await;
        let mut c = entry.lock();
        c.pid = pid;
        c.io = keep;
        c.tty = tty;
        c.oom_watch = oom_watch;
        transition(&mut c)?;
        Ok(registered)
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
        let publish = move || publish::oom(&events, &owner);
        oom::watch(cgroup.clone(), publish)
            .map_err(|e| log::warn!("no OOM events for {id} ({cgroup:?}): {e}"))
            .ok()
    }

    /// Exec: records a process to run in the running container `id`; Start runs it.
    pub async fn exec(&self, p: ExecParams) -> Result<()> {
        validate_id(&p.exec_id)?;
        let entry = self.containers.get(&p.id)?;
        let process = with_terminal(&p.process, p.stdio.terminal, &p.exec_id)?;
        let mut c = entry.lock();
        if c.life.phase() != Phase::Running {
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
            Exec::new(&p.id, &p.exec_id, p.stdio, process),
        );
        publish::exec_added(&self.events, &p.id, &p.exec_id);
        Ok(())
    }

    async fn start_exec(&self, id: &str, exec_id: &str) -> Result<i32> {
        let entry = self.containers.get(id)?;
        let order = entry.order.lock().await;
        let (bundle, process, stdio) = {
            let mut c = entry.lock();
            if c.life.phase() != Phase::Running {
                return Err(Error::FailedPrecondition(format!(
                    "exec {exec_id:?}: container {id:?} is not running"
                )));
            }
            let bundle = c.bundle.clone();
            let e = c.exec_mut(id, exec_id)?;
            e.life.begin_start()?;
            (bundle, e.process.take(), e.stdio.clone())
        };
        let began = SystemTime::now();
        let launched = match process {
            Some(process) => {
                // The exec's own ID names its stdio (a binary:// logger gets it, as with runc).
                launch(
                    &self.runtime.console_dir(),
                    self.events.namespace(),
                    exec_id,
                    &stdio,
                    |stdio| {
                        self.runtime.exec(ExecSpec {
                            id: id.to_string(),
                            exec_id: exec_id.to_string(),
                            bundle,
                            process,
                            stdio,
                        })
                    },
                )
                .await
            }
            None => Err(Error::Internal(format!(
                "exec {exec_id:?} in {id:?} has no process spec"
            ))),
        };
        let (pid, keep, tty) = match launched {
            Ok(l) => l,
            Err(err) => {
                // It never ran and never will: every Wait on it answers now.
                let mut c = entry.lock();
                if let Ok(e) = c.exec_mut(id, exec_id) {
                    e.life.start_failed(true);
                    let exit = Exit::now(NEVER_RAN);
                    e.exit = Some(exit);
                    e.exited.set(exit);
                }
                return Err(err);
            }
        };
        let drain = tty
            .as_ref()
            .ok()
            .and_then(|t| t.as_ref().map(Console::drain));
        let registered =
            lock(&self.exits).register(pid, entry.clone(), Some(exec_id.to_string()), drain, began);
        let reaped = match registered {
            Registered::Live(_) => None,
            Registered::Reaped(owner, exit) => Some((owner, exit)),
        };
        let (result, kill) = {
            let mut c = entry.lock();
            let init_gone = !c.life.is_live();
            let e = c.exec_mut(id, exec_id)?;
            e.pid = Some(pid);
            e.io = keep;
            e.life.started()?;
            let unreaped = e.exit.is_none() && reaped.is_none();
            match tty {
                Ok(t) => {
                    e.tty = t;
                    publish::exec_started(&self.events, id, exec_id, pid);
                    // Started while its container's init died: it goes the way of its
                    // siblings (and its exit is reaped as usual).
                    (Ok(pid), init_gone && unreaped)
                }
                // The exec runs but cannot be reached: end it; its exit is reaped as usual.
                Err(err) => (Err(err), unreaped),
            }
        };
        if kill {
            // No await since the check above: the reaper runs on this thread, so the PID
            // is still this exec's.
            let _ = self.runtime.kill(id, pid, libc::SIGKILL, false).await;
        }
        drop(order);
        if let Some((owner, exit)) = reaped {
            self.exited(pid, owner, exit).await;
        }
        result
    }

    /// Start of the container's init (`exec_id` empty) or of one of its execs.
    pub async fn start(&self, id: &str, exec_id: &str) -> Result<i32> {
        if !exec_id.is_empty() {
            return self.start_exec(id, exec_id).await;
        }
        let entry = self.containers.get(id)?;
        // Held until TaskStart is queued: the exit path takes it before TaskExit.
        let _order = entry.order.lock().await;
        let (pid, restore) = {
            let mut c = entry.lock();
            c.life.begin_start()?;
            (c.pid, c.restore.take())
        };
        if let Some(pending) = restore {
            return self.start_restore(&entry, pending).await;
        }
        let started = self.runtime.start(id).await;
        let mut c = entry.lock();
        match started {
            Ok(()) => {
                c.life.started()?;
                publish::start(&self.events, id, pid);
                Ok(pid)
            }
            Err(e) => {
                c.life.start_failed(false);
                Err(e)
            }
        }
    }

    /// The init's PID, for Connect. Unlike State it does not count as containerd seeing
    /// an exit: containerd's loader calls Connect right before the Pids that decides
    /// whether it keeps the task (see `pids`).
    pub async fn init_pid(&self, id: &str) -> Result<u32> {
        Ok(self.containers.get(id)?.lock().pid as u32)
    }

    pub async fn state(&self, id: &str, exec_id: &str) -> Result<StateInfo> {
        let entry = self.containers.get(id)?;
        let c = entry.lock();
        if !exec_id.is_empty() {
            let e = c.exec(id, exec_id)?;
            return Ok(StateInfo {
                id: e.id.clone(),
                bundle: c.bundle.clone(),
                pid: e.pid.unwrap_or(0),
                status: c.exec_status(e),
                stdio: e.stdio.clone(),
                exit: e.exit,
            });
        }
        if c.exit.is_some() {
            c.exit_seen.store(true, Ordering::SeqCst);
        }
        Ok(StateInfo {
            id: id.to_string(),
            bundle: c.bundle.clone(),
            pid: c.pid,
            status: c.status(),
            stdio: c.stdio.clone(),
            exit: c.exit,
        })
    }

    pub async fn wait(&self, id: &str, exec_id: &str) -> Result<Exit> {
        let (cell, seen) = {
            let entry = self.containers.get(id)?;
            let c = entry.lock();
            if exec_id.is_empty() {
                (c.exited.clone(), Some(c.exit_seen.clone()))
            } else {
                (c.exec(id, exec_id)?.exited.clone(), None)
            }
        };
        let exit = cell.wait().await;
        if let Some(seen) = seen {
            seen.store(true, Ordering::SeqCst);
        }
        Ok(exit)
    }

    pub async fn kill(&self, id: &str, exec_id: &str, signal: u32, all: bool) -> Result<()> {
        let sig = i32::try_from(signal)
            .ok()
            .filter(|s| (1..=64).contains(s))
            .ok_or_else(|| Error::InvalidArgument(format!("invalid signal {signal}")))?;
        let entry = self.containers.get(id)?;
        let (pid, paused) = {
            let c = entry.lock();
            if exec_id.is_empty() {
                // No process yet: created from a checkpoint, or its Start is restoring it
                // (the pending restore taken, no PID before CRIU returns). PID 0 would
                // signal our own process group.
                if c.restore.is_some() || (c.life.is_live() && c.pid <= 0) {
                    return Err(Error::FailedPrecondition(format!(
                        "container {id:?} is created from a checkpoint and not restored yet: \
                         start or delete it"
                    )));
                }
                match (c.life.phase(), c.life.is_live()) {
                    (_, true) => (c.pid, c.life.phase() == Phase::Paused),
                    (Phase::Creating, _) => {
                        return Err(Error::FailedPrecondition(format!(
                            "container {id:?} is being created"
                        )));
                    }
                    // Reaped: its PID may be someone else's now. With `all`, what is left in
                    // a stopped container's cgroup is still signalled (the cgroup, never the
                    // reaped init's PID), as runc-v2 does.
                    (Phase::Exited, _) if all => (c.pid, false),
                    _ => {
                        return Err(Error::NotFound(format!(
                            "container {id:?}: process already finished"
                        )));
                    }
                }
            } else {
                let e = c.exec(id, exec_id)?;
                match (e.life.phase(), e.pid) {
                    (Phase::Running, Some(pid)) => (pid, false),
                    (Phase::Exited | Phase::Deleting, _) => {
                        return Err(Error::NotFound(format!(
                            "exec {exec_id:?} in {id:?}: process already finished"
                        )));
                    }
                    _ => {
                        return Err(Error::FailedPrecondition(format!(
                            "exec {exec_id:?} in {id:?} has not been started"
                        )));
                    }
                }
            }
        };
        // No await between the check above and the signal: the reaper runs on this same
        // thread, so the PID cannot have been reaped (and reused) in between.
        self.runtime
            .kill(id, pid, sig, all && exec_id.is_empty())
            .await?;
        if exec_id.is_empty() && sig == libc::SIGKILL && paused {
            // A frozen process cannot die; thaw it so the kill takes effect (as runc does).
            self.runtime.resume(id).await?;
            let _ = entry.lock().life.resume();
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
        let entry = self.containers.get(id)?;
        entry.lock().life.may_freeze(freeze)?;
        if freeze {
            self.runtime.pause(id).await?;
        } else {
            self.runtime.resume(id).await?;
        }
        let mut c = entry.lock();
        if freeze {
            c.life.pause()?;
        } else {
            c.life.resume()?;
        }
        publish::frozen(&self.events, id, freeze);
        Ok(())
    }

    /// Checkpoint: CRIU dumps the running (or paused) container into `spec.image_path`;
    /// with `--exit` (`leave_running` false) the container then stops and exits as usual.
    pub async fn checkpoint(&self, id: &str, spec: &CheckpointSpec) -> Result<()> {
        let entry = self.containers.get(id)?;
        {
            let c = entry.lock();
            if !matches!(c.status(), Status::Running | Status::Paused) {
                return Err(Error::FailedPrecondition(format!(
                    "cannot checkpoint container {id:?}: it is {:?}, not running",
                    c.status()
                )));
            }
        }
        self.runtime
            .criu_ready(&format!("checkpoint of {id:?}"))
            .await?;
        self.runtime.checkpoint(id, spec).await?;
        publish::checkpointed(&self.events, id, &spec.image_path);
        Ok(())
    }

    /// Refuses `verb` on a container without a live cgroup (stopped, or not made yet).
    fn live(&self, id: &str, verb: &str) -> Result<()> {
        let entry = self.containers.get(id)?;
        let c = entry.lock();
        match c.life.phase() {
            Phase::Exited | Phase::Deleting => Err(Error::FailedPrecondition(format!(
                "{verb} container {id:?}: it has exited"
            ))),
            Phase::Creating => Err(Error::FailedPrecondition(format!(
                "{verb} container {id:?}: it is being created"
            ))),
            _ => Ok(()),
        }
    }

    /// Stats: the container's cgroup numbers (while it has a cgroup: not after it stopped).
    pub async fn stats(&self, id: &str) -> Result<CgroupStats> {
        self.live(id, "no stats for")?;
        self.runtime.stats(id).await
    }

    /// Update: new resource limits for the container's live cgroup.
    pub async fn update(&self, id: &str, resources: &[u8]) -> Result<()> {
        self.live(id, "cannot update")?;
        self.runtime.update(id, resources).await
    }

    /// Delete of an exec: forgets a finished (or never started) exec process.
    async fn delete_exec(&self, id: &str, exec_id: &str) -> Result<(i32, Exit)> {
        let entry = self.containers.get(id)?;
        // An exit still being handled (terminal output copying) finishes first.
        let handling = {
            let c = entry.lock();
            let e = c.exec(id, exec_id)?;
            (e.exit.is_some() && e.exited.get().is_none()).then(|| e.exited.clone())
        };
        if let Some(cell) = handling {
            let _ = tokio::time::timeout(EXIT_HANDLING_WAIT, cell.wait()).await;
        }
        let mut c = entry.lock();
        let e = c.exec(id, exec_id)?;
        match e.life.phase() {
            Phase::Created | Phase::Exited => {}
            Phase::Starting => {
                return Err(Error::FailedPrecondition(format!(
                    "exec {exec_id:?} in {id:?} is starting: delete it once started"
                )));
            }
            _ => {
                return Err(Error::FailedPrecondition(format!(
                    "exec {exec_id:?} in {id:?} is running: kill it before delete"
                )));
            }
        }
        let pid = e.pid.unwrap_or(0);
        let exit = e.exit.unwrap_or_else(never_started);
        // A Wait still pending (on an exec deleted before Start) answers with it.
        e.exited.set(exit);
        c.execs.remove(exec_id);
        Ok((pid, exit))
    }

    /// Delete of the container (`exec_id` empty: the TaskDelete event goes out) or of an exec.
    pub async fn delete(&self, id: &str, exec_id: &str) -> Result<(i32, Exit)> {
        if !exec_id.is_empty() {
            return self.delete_exec(id, exec_id).await;
        }
        let entry = self.containers.get(id)?;
        // An exit still being handled (exec processes draining, terminal output copying)
        // finishes first: TaskExit goes out before TaskDelete, and the console is dropped
        // only once its last output is in the client's fifo.
        let handling = {
            let c = entry.lock();
            (c.exit.is_some() && c.exited.get().is_none()).then(|| c.exited.clone())
        };
        if let Some(cell) = handling {
            let _ = tokio::time::timeout(EXIT_HANDLING_WAIT, cell.wait()).await;
        }
        let (was, bundle) = {
            let mut c = entry.lock();
            (c.life.begin_delete()?, c.bundle.clone())
        };
        if let Err(e) = self.runtime.delete(id, &bundle).await {
            let mut c = entry.lock();
            let reaped = c.exit.is_some();
            c.life.delete_failed(was, reaped);
            return Err(e);
        }
        let (cell, has_init) = {
            let c = entry.lock();
            (c.exited.clone(), c.pid > 0)
        };
        if was == Phase::Created && has_init {
            // The created init was just killed; its exit comes through the reaper.
            if tokio::time::timeout(DELETE_REAP_WAIT, cell.wait())
                .await
                .is_err()
            {
                log::warn!("delete {id}: its init was not reaped within {DELETE_REAP_WAIT:?}");
            }
        }
        let (pid, exit) = {
            let mut c = entry.lock();
            if let Some(w) = c.oom_watch.take() {
                w.abort();
            }
            let exit = c.exit.unwrap_or_else(|| Exit::now(137));
            // Record it, so a Wait still pending on this container answers too.
            cell.set(exit);
            let exit = cell.get().unwrap_or(exit);
            for e in c.execs.values() {
                e.exited.set(e.exit.unwrap_or_else(never_started));
            }
            c.execs.clear();
            c.tty = None;
            (c.pid, exit)
        };
        lock(&self.exits).forget_all(&entry);
        self.containers.remove(id, &entry);
        publish::delete(&self.events, id, pid, exit);
        Ok((pid, exit))
    }

    /// Pids: the container's processes; an exec's carries its exec ID.
    pub async fn pids(&self, id: &str) -> Result<Vec<ProcessEntry>> {
        let entry = self.containers.get(id)?;
        let (pid, execs) = {
            let c = entry.lock();
            if c.exit.is_some() {
                // containerd >= 1.7, loading its shims after a restart, asks each task's
                // shim for Pids and deletes a task whose list is empty, as a shim "leaked"
                // by a Create cut off half-way: an exit during its downtime would be lost
                // with it (the task gone, CRI left with 255). So the init stays listed,
                // like a zombie until it is reaped, only while containerd has not seen its
                // exit: TaskExit could not be delivered and nobody asked State or Wait
                // since. Any caller after that gets the honest empty list.
                if !c.exit_seen.load(Ordering::SeqCst) {
                    return Ok(vec![ProcessEntry {
                        pid: c.pid as u32,
                        exec_id: None,
                    }]);
                }
                return Ok(Vec::new());
            }
            let execs: Vec<(u32, String)> = c
                .execs
                .values()
                .filter(|e| e.life.is_live())
                .filter_map(|e| e.pid.map(|p| (p as u32, e.id.clone())))
                .collect();
            (c.pid, execs)
        };
        let pids = self.runtime.pids(id, pid).await?;
        Ok(pids
            .into_iter()
            .map(|pid| ProcessEntry {
                pid,
                exec_id: execs
                    .iter()
                    .find(|(p, _)| *p == pid)
                    .map(|(_, x)| x.clone()),
            })
            .collect())
    }

    pub async fn close_stdin(&self, id: &str, exec_id: &str) -> Result<()> {
        let entry = self.containers.get(id)?;
        let mut c = entry.lock();
        let (io, tty) = if exec_id.is_empty() {
            let c = &mut *c;
            (&mut c.io, &mut c.tty)
        } else {
            let e = c.exec_mut(id, exec_id)?;
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
        let entry = self.containers.get(id)?;
        let c = entry.lock();
        let tty = if exec_id.is_empty() {
            &c.tty
        } else {
            &c.exec(id, exec_id)?.tty
        };
        match tty {
            Some(t) => t.resize(width, height),
            None => Ok(()),
        }
    }

    /// A child was reaped: its PID leaves the exit table now, and its owner learns it.
    pub async fn on_exit(&self, pid: i32, status: u32) {
        let exit = Exit::now(status);
        let owner = lock(&self.exits).route(pid, exit);
        if let Some(owner) = owner {
            self.exited(pid, owner, exit).await;
        }
    }

    /// The exit path of one process. The exit is recorded at once (State says stopped,
    /// Kill no longer signals the PID, Exec is refused); then, for an init, its exec
    /// processes are ended and waited for; then its terminal output is copied out; only
    /// then do Wait and TaskExit answer, after any TaskCreate/TaskStart of the container.
    async fn exited(&self, pid: i32, owner: Owner<Entry>, exit: Exit) {
        let entry = owner.entry.clone();
        let id = entry.id.clone();
        let first = {
            let mut c = entry.lock();
            match &owner.exec {
                None => {
                    let first = c.exit.is_none();
                    if first {
                        c.exit = Some(exit);
                    }
                    c.life.exited();
                    first
                }
                Some(exec_id) => match c.execs.get_mut(exec_id) {
                    Some(e) if e.exit.is_none() => {
                        e.exit = Some(exit);
                        e.life.exited();
                        true
                    }
                    _ => false,
                },
            }
        };
        if !first {
            return;
        }
        if owner.exec.is_none() {
            // Without a PID namespace of its own the init's children outlive it: end them
            // before its exit is known, as runc-v2 does (the kernel does it otherwise).
            if let Err(e) = self.runtime.kill_orphans(&id).await {
                log::warn!("kill what the init of {id} left running: {e}");
            }
            self.drain_execs(&entry, pid).await;
        }
        // Wait answers once the exit is set, and the client deletes the process next:
        // its terminal output must be in the client's fifo by then.
        if let Some(t) = &owner.tty {
            t.finish(TTY_OUTPUT_WAIT).await;
        }
        let _order = entry.order.lock().await;
        let mut c = entry.lock();
        match &owner.exec {
            None => {
                // The client's ends stay theirs; ours only kept the fifos alive for the process.
                c.io.release_fifos();
                c.exited.set(exit);
                // A created container killed by its Delete has no TaskExit (TaskDelete
                // says it all), as with runc-v2.
                if c.life.phase() != Phase::Deleting {
                    let seen = Some(c.exit_seen.clone());
                    publish::exit(&self.events, &id, &id, pid, exit, seen);
                }
            }
            Some(exec_id) => {
                if let Some(e) = c.execs.get_mut(exec_id) {
                    e.io.release_fifos();
                    e.exited.set(exit);
                    publish::exit(&self.events, &id, exec_id, pid, exit, None);
                }
            }
        }
    }

    /// The init of `id` exited: its exec processes go with it (in a shared or the host's
    /// PID namespace the kernel would leave them running), and, as with runc-v2, the
    /// container's TaskExit comes only after theirs.
    async fn drain_execs(&self, entry: &Arc<Entry>, init_pid: i32) {
        let id = &entry.id;
        let running: Vec<Arc<ExitCell>> = entry
            .lock()
            .execs
            .values()
            .filter(|e| e.pid.is_some() && e.exit.is_none())
            .map(|e| e.exited.clone())
            .collect();
        if running.is_empty() {
            return;
        }
        if let Err(e) = self.runtime.kill(id, init_pid, libc::SIGKILL, true).await {
            log::warn!("kill exec processes of {id} after its init exited: {e}");
        }
        let all = async {
            for cell in running {
                cell.wait().await;
            }
        };
        if tokio::time::timeout(EXEC_DRAIN_WAIT, all).await.is_err() {
            log::warn!("an exec process of {id} outlived its init by {EXEC_DRAIN_WAIT:?}");
        }
    }
}

/// A Create's error as containerd should read it: NotFound would say the *task* is
/// unknown (containerd then forgets it), so a file missing along the way (a hook, a
/// mount source, a device) is the runtime's failure, with its message.
fn create_error(e: Error) -> Error {
    match e {
        Error::NotFound(m) => Error::Runtime(m),
        Error::Io(ctx, io) if io.kind() == std::io::ErrorKind::NotFound => {
            Error::Runtime(format!("{ctx}: {io}"))
        }
        other => other,
    }
}

#[cfg(test)]
#[path = "pod_tests.rs"]
mod tests;
