//! One container of the pod: its init process, its exec processes, their stdio, and where
//! each is in its life. Statuses are derived (never stored twice): exited → Stopped,
//! started → Running, otherwise Created.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::stdio::tty::Console;
use crate::stdio::{Keepalive, StdioPaths};
use crate::task::process::{Exit, ExitCell};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Paused,
    Stopped,
}

pub struct Container {
    pub id: String,
    pub bundle: PathBuf,
    pub stdio: StdioPaths,
    pub pid: i32,
    pub started: bool,
    pub paused: bool,
    pub exit: Arc<ExitCell>,
    /// containerd has the init's exit: its TaskExit was accepted, or State, Wait or Delete
    /// answered it. Until then Pids keeps listing the exited init (see `Pod::pids`).
    pub exit_seen: Arc<AtomicBool>,
    pub io: Keepalive,
    pub execs: HashMap<String, Exec>,
    /// The terminal, for `-t` containers.
    pub tty: Option<Console>,
    /// The OOM watch on the container's memory cgroup, stopped at Delete.
    pub oom_watch: Option<tokio::task::JoinHandle<()>>,
}

impl Container {
    pub fn status(&self) -> Status {
        if self.exit.get().is_some() {
            Status::Stopped
        } else if self.paused {
            Status::Paused
        } else if self.started {
            Status::Running
        } else {
            Status::Created
        }
    }

    pub fn exited(&self) -> Option<Exit> {
        self.exit.get()
    }
}

/// A process added by Exec: Created until Start runs it, then Running until it exits.
pub struct Exec {
    pub id: String,
    /// The OCI `Process` JSON containerd sent.
    pub process: Vec<u8>,
    pub stdio: StdioPaths,
    /// Set by Start.
    pub pid: Option<i32>,
    pub exit: Arc<ExitCell>,
    pub io: Keepalive,
    pub tty: Option<Console>,
}

impl Exec {
    pub fn status(&self) -> Status {
        if self.exit.get().is_some() {
            Status::Stopped
        } else if self.pid.is_some() {
            Status::Running
        } else {
            Status::Created
        }
    }
}
