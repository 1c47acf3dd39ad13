//! What the daemon asks a forked worker to do, and what the worker answers, as JSON over a
//! pipe (the worker is a fork of the daemon, so both sides are this very code).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::runtime::mount::Mount;
use crate::task::checkpoint::{CheckpointSpec, RestoreImage};

#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    /// Carries stdin, stdout and stderr as fds.
    Create {
        id: String,
        bundle: PathBuf,
        root: PathBuf,
        rootfs: Vec<Mount>,
        systemd_cgroup: bool,
        no_pivot_root: bool,
        no_new_keyring: bool,
        console_socket: Option<PathBuf>,
    },
    Start {
        id: String,
        root: PathBuf,
    },
    /// Carries the exec's stdin, stdout and stderr as fds.
    Exec {
        id: String,
        exec_id: String,
        root: PathBuf,
        bundle: PathBuf,
        process: String,
        console_socket: Option<PathBuf>,
    },
    Delete {
        id: String,
        root: PathBuf,
        bundle: PathBuf,
    },
    Checkpoint {
        id: String,
        root: PathBuf,
        spec: CheckpointSpec,
    },
    /// Carries stdin, stdout and stderr as fds, which the restored init gets.
    Restore {
        id: String,
        bundle: PathBuf,
        root: PathBuf,
        rootfs: Vec<Mount>,
        systemd_cgroup: bool,
        image: RestoreImage,
    },
    /// Freezes the container's cgroup.
    Pause {
        id: String,
        root: PathBuf,
    },
    /// Thaws it.
    Resume {
        id: String,
        root: PathBuf,
    },
    /// Applies an OCI `LinuxResources` (JSON, checked by the daemon) to the live cgroup.
    Update {
        id: String,
        root: PathBuf,
        resources: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Kind {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    Runtime,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    Pid(i32),
    Done,
    Failed(Kind, String),
}

impl From<Error> for Response {
    fn from(e: Error) -> Response {
        let kind = match &e {
            Error::InvalidArgument(_) => Kind::InvalidArgument,
            Error::NotFound(_) => Kind::NotFound,
            Error::AlreadyExists(_) => Kind::AlreadyExists,
            Error::FailedPrecondition(_) => Kind::FailedPrecondition,
            _ => Kind::Runtime,
        };
        Response::Failed(kind, e.to_string())
    }
}

impl Response {
    pub(super) fn into_result(self) -> Result<Option<i32>> {
        match self {
            Response::Pid(p) => Ok(Some(p)),
            Response::Done => Ok(None),
            Response::Failed(k, m) => Err(match k {
                Kind::InvalidArgument => Error::InvalidArgument(m),
                Kind::NotFound => Error::NotFound(m),
                Kind::AlreadyExists => Error::AlreadyExists(m),
                Kind::FailedPrecondition => Error::FailedPrecondition(m),
                Kind::Runtime => Error::Runtime(m),
            }),
        }
    }
}
