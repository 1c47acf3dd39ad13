//! One container of the pod: its init process, its stdio, and where it is in its life.
//! The status is derived (never stored twice): exited → Stopped, started → Running,
//! otherwise Created.

use std::path::PathBuf;
use std::sync::Arc;

use crate::io::{Keepalive, StdioPaths};
use crate::process::{Exit, ExitCell};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Stopped,
}

pub struct Container {
    pub id: String,
    pub bundle: PathBuf,
    pub stdio: StdioPaths,
    pub pid: i32,
    pub started: bool,
    pub exit: Arc<ExitCell>,
    pub io: Keepalive,
}

impl Container {
    pub fn status(&self) -> Status {
        if self.exit.get().is_some() {
            Status::Stopped
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
