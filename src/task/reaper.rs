//! Collects every child's exit. The daemon is a subreaper: container inits (orphaned by the
//! short-lived workers that ran libcontainer) and anything they leave behind end up as our children,
//! so we reap them all and hand each (pid, status) to whoever owns that pid.

use nix::errno::Errno;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc::UnboundedSender;

use crate::error::{Error, Result};
use crate::task::process::exit_code;

/// Makes this process the reaper of its orphaned descendants. Must run before any container
/// is created, or an init orphaned earlier would go to PID 1 and its exit would be lost.
pub fn become_subreaper() -> Result<()> {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes a plain integer argument.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(Error::io(
            "prctl(PR_SET_CHILD_SUBREAPER)",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Reaps every exited child now, without blocking.
pub fn reap_all(out: &UnboundedSender<(i32, u32)>) {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
            Ok(ws) => {
                if let (Some(pid), Some(code)) = (ws.pid(), exit_code(ws)) {
                    // The receiver only goes away when the daemon is exiting.
                    let _ = out.send((pid.as_raw(), code));
                }
            }
            Err(Errno::EINTR) => continue,
            Err(e) => {
                log::warn!("waitpid: {e}");
                return;
            }
        }
    }
}

/// Runs until the process exits: on every SIGCHLD, reap everything that exited.
pub async fn run(out: UnboundedSender<(i32, u32)>) -> Result<()> {
    let mut sigchld =
        signal(SignalKind::child()).map_err(|e| Error::io("listen for SIGCHLD", e))?;
    // A child may have exited before the handler was installed.
    reap_all(&out);
    while sigchld.recv().await.is_some() {
        reap_all(&out);
    }
    Ok(())
}
