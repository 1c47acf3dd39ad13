//! A runtime that runs nothing: PIDs are made up and exits are reported through the same
//! channel the real reaper uses, so the pod's rules can be tested without containers.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc::UnboundedSender;

use super::{CgroupStats, CreateSpec, ExecSpec, RestoreSpec, Runtime};
use crate::cgroup::oom::MemoryCgroup;
use crate::error::{Error, Result};
use crate::task::checkpoint::CheckpointSpec;

pub struct FakeRuntime {
    next_pid: AtomicI32,
    exits: UnboundedSender<(i32, u32)>,
    pub calls: Mutex<Vec<String>>,
    live: Mutex<HashMap<String, i32>>,
    /// Create fails for this ID (to test cleanup after a runtime error).
    pub fail_create: Option<String>,
    /// The next created init "dies" with this status before Create returns.
    pub exit_during_create: Mutex<Option<u32>>,
    /// Memory cgroups (v2 layout) are `<this>/<id>`, for OOM tests; none by default.
    pub memory_cgroups: Option<std::path::PathBuf>,
    /// Containers without a PID namespace of their own: their processes outlive the init.
    pub shared_pid_ns: Mutex<HashSet<String>>,
    /// The next Create fails with this error (after nothing was made).
    pub create_error: Mutex<Option<Error>>,
    /// Exec of this exec ID fails (a missing binary, a bad user).
    pub fail_exec: Option<String>,
    /// While set, Start waits until it is notified (a slow worker).
    pub hold_start: Option<Arc<tokio::sync::Notify>>,
    /// While set, Delete waits until it is notified (a slow worker).
    pub hold_delete: Option<Arc<tokio::sync::Notify>>,
    /// Processes (`id` or `id/exec_id`) that survive every signal.
    pub immortal: Mutex<HashSet<String>>,
    /// Every PID signalled one by one (not through `all`).
    pub signalled: Mutex<Vec<i32>>,
    /// What `criu check` says on this "host" when it fails (None: CRIU works).
    pub criu_problem: Option<String>,
}

impl FakeRuntime {
    pub fn new(exits: UnboundedSender<(i32, u32)>) -> FakeRuntime {
        FakeRuntime {
            next_pid: AtomicI32::new(1000),
            exits,
            calls: Mutex::new(Vec::new()),
            live: Mutex::new(HashMap::new()),
            fail_create: None,
            exit_during_create: Mutex::new(None),
            memory_cgroups: None,
            shared_pid_ns: Mutex::new(HashSet::new()),
            create_error: Mutex::new(None),
            fail_exec: None,
            hold_start: None,
            hold_delete: None,
            immortal: Mutex::new(HashSet::new()),
            signalled: Mutex::new(Vec::new()),
            criu_problem: None,
        }
    }

    /// A process the container's init started and left behind (`id/name`): only a kill
    /// of the whole container ends it. Returns its PID.
    pub fn leave_behind(&self, id: &str, name: &str) -> i32 {
        let pid = self.next_pid.fetch_add(1, Ordering::SeqCst);
        self.live
            .lock()
            .unwrap()
            .insert(format!("{id}/{name}"), pid);
        pid
    }

    /// Whether the process `id` (or `id/name`) still runs.
    pub fn is_live(&self, key: &str) -> bool {
        self.live.lock().unwrap().contains_key(key)
    }

    /// Makes the container's init (`id`) or an exec (`id/exec_id`) exit with `status`, as if
    /// it ended by itself.
    pub fn exit(&self, id: &str, status: u32) {
        if let Some(pid) = self.live.lock().unwrap().remove(id) {
            let _ = self.exits.send((pid, status));
        }
    }

    fn record(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }
}

#[async_trait::async_trait]
impl Runtime for FakeRuntime {
    fn console_dir(&self) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("fake-consoles-{}", std::process::id()))
    }

    async fn create(&self, spec: CreateSpec) -> Result<i32> {
        self.record(format!("create {}", spec.id));
        if let Some(e) = self.create_error.lock().unwrap().take() {
            return Err(e);
        }
        if self.fail_create.as_deref() == Some(spec.id.as_str()) {
            return Err(Error::Runtime(format!("fake create of {} failed", spec.id)));
        }
        let pid = self.next_pid.fetch_add(1, Ordering::SeqCst);
        let early = self.exit_during_create.lock().unwrap().take();
        if let Some(status) = early {
            let _ = self.exits.send((pid, status));
            // Let the reaper's consumer record it as an orphan before we return the PID.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        } else {
            self.live.lock().unwrap().insert(spec.id, pid);
        }
        Ok(pid)
    }

    async fn start(&self, id: &str) -> Result<()> {
        self.record(format!("start {id}"));
        if let Some(hold) = &self.hold_start {
            hold.notified().await;
        }
        Ok(())
    }

    async fn exec(&self, spec: ExecSpec) -> Result<i32> {
        self.record(format!("exec {} {}", spec.id, spec.exec_id));
        if self.fail_exec.as_deref() == Some(spec.exec_id.as_str()) {
            return Err(Error::Runtime(format!(
                "exec {}: executable file not found in $PATH",
                spec.exec_id
            )));
        }
        let pid = self.next_pid.fetch_add(1, Ordering::SeqCst);
        self.live
            .lock()
            .unwrap()
            .insert(format!("{}/{}", spec.id, spec.exec_id), pid);
        Ok(pid)
    }

    async fn kill(&self, id: &str, pid: i32, signal: i32, all: bool) -> Result<()> {
        self.record(format!("kill {id} {signal} {all}"));
        if !all {
            self.signalled.lock().unwrap().push(pid);
        }
        if signal == libc::SIGKILL || signal == libc::SIGTERM {
            // The process signalled (an init or an exec), or with `all` every one left.
            let immortal = self.immortal.lock().unwrap().clone();
            let mut live = self.live.lock().unwrap();
            let hit: Vec<String> = live
                .iter()
                .filter(|(k, p)| {
                    **p == pid || (all && (k.as_str() == id || k.starts_with(&format!("{id}/"))))
                })
                .map(|(k, _)| k.clone())
                .filter(|k| !immortal.contains(k))
                .collect();
            for k in hit {
                if let Some(p) = live.remove(&k) {
                    let _ = self.exits.send((p, 128 + signal as u32));
                }
            }
        }
        Ok(())
    }

    async fn kill_orphans(&self, id: &str) -> Result<bool> {
        if !self.shared_pid_ns.lock().unwrap().contains(id) {
            return Ok(false);
        }
        self.record(format!("kill_orphans {id}"));
        // What the cgroup still holds: everything of the container but its (gone) init.
        let mut live = self.live.lock().unwrap();
        let left: Vec<String> = live
            .keys()
            .filter(|k| k.starts_with(&format!("{id}/")))
            .cloned()
            .collect();
        for k in left {
            if let Some(p) = live.remove(&k) {
                let _ = self.exits.send((p, 128 + libc::SIGKILL as u32));
            }
        }
        Ok(true)
    }

    async fn pause(&self, id: &str) -> Result<()> {
        self.record(format!("pause {id}"));
        Ok(())
    }

    async fn resume(&self, id: &str) -> Result<()> {
        self.record(format!("resume {id}"));
        Ok(())
    }

    async fn update(&self, id: &str, resources: &[u8]) -> Result<()> {
        self.record(format!(
            "update {id} {}",
            String::from_utf8_lossy(resources)
        ));
        Ok(())
    }

    async fn memory_cgroup(&self, id: &str, _pid: i32) -> Result<Option<MemoryCgroup>> {
        Ok(self
            .memory_cgroups
            .as_ref()
            .map(|root| MemoryCgroup::V2(root.join(id))))
    }

    async fn stats(&self, id: &str) -> Result<CgroupStats> {
        self.record(format!("stats {id}"));
        let mut stats = libcgroups::stats::Stats::default();
        stats.pids.current = 1;
        Ok(CgroupStats {
            stats,
            unified: false,
        })
    }

    async fn criu_ready(&self, what: &str) -> Result<()> {
        match &self.criu_problem {
            Some(p) => Err(Error::FailedPrecondition(format!("{what} needs CRIU: {p}"))),
            None => Ok(()),
        }
    }

    async fn checkpoint(&self, id: &str, spec: &CheckpointSpec) -> Result<()> {
        self.record(format!("checkpoint {id} {}", spec.image_path.display()));
        Ok(())
    }

    async fn restore(&self, spec: RestoreSpec) -> Result<i32> {
        self.record(format!(
            "restore {} {}",
            spec.id,
            spec.image.image_path.display()
        ));
        // A restore is the Start of a checkpointed container: held like one.
        if let Some(hold) = &self.hold_start {
            hold.notified().await;
        }
        if let Some(e) = self.create_error.lock().unwrap().take() {
            return Err(e);
        }
        let pid = self.next_pid.fetch_add(1, Ordering::SeqCst);
        self.live.lock().unwrap().insert(spec.id, pid);
        Ok(pid)
    }

    async fn delete(&self, id: &str, _bundle: &Path) -> Result<()> {
        self.record(format!("delete {id}"));
        if let Some(hold) = &self.hold_delete {
            hold.notified().await;
        }
        self.exit(id, 137);
        Ok(())
    }

    async fn pids(&self, id: &str, pid: i32) -> Result<Vec<u32>> {
        self.record(format!("pids {id}"));
        let mut all = vec![pid as u32];
        let live = self.live.lock().unwrap();
        let mut execs: Vec<u32> = live
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{id}/")))
            .map(|(_, p)| *p as u32)
            .collect();
        execs.sort();
        all.extend(execs);
        Ok(all)
    }
}
