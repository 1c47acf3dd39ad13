//! A process's exit, kept until Delete: status (128+signal for a signal) and time.

use std::time::SystemTime;

use nix::sys::wait::WaitStatus;
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub status: u32,
    pub at: SystemTime,
}

impl Exit {
    pub fn now(status: u32) -> Exit {
        Exit {
            status,
            at: SystemTime::now(),
        }
    }
}

/// containerd's convention for a wait status: the exit code, or 128+signal.
pub fn exit_code(ws: WaitStatus) -> Option<u32> {
    match ws {
        WaitStatus::Exited(_, code) => Some(code as u32),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as u32),
        _ => None,
    }
}

/// Set once, read by any number of waiters; a waiter that comes after the exit gets it at once.
#[derive(Debug)]
pub struct ExitCell {
    tx: watch::Sender<Option<Exit>>,
}

impl Default for ExitCell {
    fn default() -> Self {
        ExitCell {
            tx: watch::channel(None).0,
        }
    }
}

impl ExitCell {
    /// Records the exit; a second call keeps the first exit (the first one is the truth).
    pub fn set(&self, exit: Exit) -> bool {
        self.tx.send_if_modified(|cur| {
            if cur.is_none() {
                *cur = Some(exit);
                true
            } else {
                false
            }
        })
    }

    pub fn get(&self) -> Option<Exit> {
        *self.tx.borrow()
    }

    pub async fn wait(&self) -> Exit {
        let mut rx = self.tx.subscribe();
        loop {
            if let Some(e) = *rx.borrow_and_update() {
                return e;
            }
            // The sender lives as long as `self`, so changed() cannot fail while we borrow it.
            if rx.changed().await.is_err() {
                return Exit::now(255);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal;
    use nix::unistd::Pid;

    #[test]
    fn codes() {
        let p = Pid::from_raw(1);
        assert_eq!(exit_code(WaitStatus::Exited(p, 3)), Some(3));
        assert_eq!(
            exit_code(WaitStatus::Signaled(p, Signal::SIGKILL, false)),
            Some(137)
        );
        assert_eq!(
            exit_code(WaitStatus::Signaled(p, Signal::SIGTERM, true)),
            Some(143)
        );
        assert_eq!(exit_code(WaitStatus::StillAlive), None);
    }

    #[tokio::test]
    async fn first_exit_wins_and_late_waiters_get_it() {
        let cell = std::sync::Arc::new(ExitCell::default());
        let c2 = cell.clone();
        let waiter = tokio::spawn(async move { c2.wait().await.status });
        tokio::task::yield_now().await;
        assert!(cell.set(Exit::now(3)));
        assert!(!cell.set(Exit::now(9)));
        assert_eq!(waiter.await.unwrap(), 3);
        assert_eq!(cell.wait().await.status, 3);
        assert_eq!(cell.get().map(|e| e.status), Some(3));
    }
}
