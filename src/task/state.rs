//! Where an init or an exec is in its life, as one explicit state machine per process.
//!
//! ```text
//!   Creating ──created──▶ Created ──begin_start──▶ Starting ──started──▶ Running ◀─resume─┐
//!      │                  │  ▲                        │                     │   └─pause──▶ Paused
//!      │                  │  └────start_failed (init)─┘                     │               │
//!      │                  │        start_failed (exec) ──▶ Exited ◀─reaped──┴───────────────┘
//!      └──reaped──────────┴────────reaped──────────────────▶ Exited
//!   Created, Exited ──begin_delete──▶ Deleting  (back to where it was if the runtime fails)
//! ```
//! `Creating`, `Starting` and `Deleting` are transient: the runtime call behind them runs
//! without the container's lock, so State, Wait, Kill and Delete keep answering. The exit
//! path may move any state but `Deleting` to `Exited` at any time, even a transient one:
//! the call in flight finds it there when it comes back and leaves it so.

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Creating,
    Created,
    Starting,
    Running,
    Paused,
    Exited,
    Deleting,
}

/// What the Task API reports (containerd's `Status` enum, without the ones we never use).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Paused,
    Stopped,
}

/// One process's state. `what` names it in errors ("container \"c1\"", "exec \"e1\" in \"c1\"").
#[derive(Debug)]
pub struct Lifecycle {
    phase: Phase,
    what: String,
}

impl Lifecycle {
    pub fn new(what: String) -> Lifecycle {
        Lifecycle {
            phase: Phase::Creating,
            what,
        }
    }

    /// An exec added by Exec: it exists (Created) but has no process until Start.
    pub fn added(what: String) -> Lifecycle {
        Lifecycle {
            phase: Phase::Created,
            what,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn status(&self) -> Status {
        match self.phase {
            Phase::Creating | Phase::Created | Phase::Starting => Status::Created,
            Phase::Running => Status::Running,
            Phase::Paused => Status::Paused,
            Phase::Exited | Phase::Deleting => Status::Stopped,
        }
    }

    /// Has a process that may still run (and may be signalled): not before Create has a
    /// PID, not after its exit was reaped.
    pub fn is_live(&self) -> bool {
        matches!(
            self.phase,
            Phase::Created | Phase::Starting | Phase::Running | Phase::Paused
        )
    }

    fn refuse(&self, verb: &str) -> Error {
        let now = match self.phase {
            Phase::Creating => "is being created",
            Phase::Created => "is created, not started",
            Phase::Starting => "is starting",
            Phase::Running => "is running",
            Phase::Paused => "is paused",
            Phase::Exited => "has exited",
            Phase::Deleting => "is being deleted",
        };
        Error::FailedPrecondition(format!("cannot {verb} {}: it {now}", self.what))
    }

    fn go(&mut self, verb: &str, from: &[Phase], to: Phase) -> Result<()> {
        if from.contains(&self.phase) {
            self.phase = to;
            Ok(())
        } else {
            Err(self.refuse(verb))
        }
    }

    /// Creating → Created; an init reaped during Create stays Exited.
    pub fn created(&mut self) -> Result<()> {
        if self.phase == Phase::Exited {
            return Ok(());
        }
        self.go("finish creating", &[Phase::Creating], Phase::Created)
    }

    /// Created → Starting, before the runtime's start (or exec) runs unlocked.
    pub fn begin_start(&mut self) -> Result<()> {
        self.go("start", &[Phase::Created], Phase::Starting)
    }

    /// Starting → Running; a process reaped meanwhile stays Exited.
    pub fn started(&mut self) -> Result<()> {
        if self.phase == Phase::Exited {
            return Ok(());
        }
        self.go("finish starting", &[Phase::Starting], Phase::Running)
    }

    /// The runtime's start failed: an init is still Created (it may be started again or
    /// deleted); an exec never ran and never will, so it is Exited (its Waits answer).
    pub fn start_failed(&mut self, exec: bool) {
        if self.phase == Phase::Starting {
            self.phase = if exec { Phase::Exited } else { Phase::Created };
        }
    }

    pub fn pause(&mut self) -> Result<()> {
        self.go("pause", &[Phase::Running], Phase::Paused)
    }

    pub fn resume(&mut self) -> Result<()> {
        self.go("resume", &[Phase::Paused], Phase::Running)
    }

    /// Checks that a pause (`freeze`) or resume may begin, without moving yet.
    pub fn may_freeze(&self, freeze: bool) -> Result<()> {
        match (freeze, self.phase) {
            (true, Phase::Running) | (false, Phase::Paused) => Ok(()),
            (true, _) => Err(self.refuse("pause")),
            (false, _) => Err(self.refuse("resume")),
        }
    }

    /// The process was reaped. Returns false if it already counted as exited (or is being
    /// deleted: a created init killed by Delete).
    pub fn exited(&mut self) -> bool {
        match self.phase {
            Phase::Exited | Phase::Deleting => false,
            _ => {
                self.phase = Phase::Exited;
                true
            }
        }
    }

    /// Created or Exited → Deleting; returns the phase to go back to if the runtime fails.
    pub fn begin_delete(&mut self) -> Result<Phase> {
        let was = self.phase;
        match was {
            Phase::Running | Phase::Paused => Err(Error::FailedPrecondition(format!(
                "{} is running: kill it before delete",
                self.what
            ))),
            _ => self
                .go("delete", &[Phase::Created, Phase::Exited], Phase::Deleting)
                .map(|_| was),
        }
    }

    /// The runtime's delete failed: back to `was`, or Exited if reaped meanwhile.
    pub fn delete_failed(&mut self, was: Phase, reaped: bool) {
        if self.phase == Phase::Deleting {
            self.phase = if reaped { Phase::Exited } else { was };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn life() -> Lifecycle {
        Lifecycle::new("container \"c\"".into())
    }

    #[test]
    fn the_normal_path() {
        let mut l = life();
        assert_eq!(l.status(), Status::Created);
        l.created().unwrap();
        l.begin_start().unwrap();
        assert_eq!(l.status(), Status::Created);
        l.started().unwrap();
        assert_eq!(l.status(), Status::Running);
        l.pause().unwrap();
        assert_eq!(l.status(), Status::Paused);
        l.resume().unwrap();
        assert!(l.exited());
        assert!(!l.exited(), "an exit counts once");
        assert_eq!(l.begin_delete().unwrap(), Phase::Exited);
        assert_eq!(l.status(), Status::Stopped);
    }

    #[test]
    fn invalid_moves_are_failed_preconditions() {
        let mut l = life();
        for r in [l.begin_start(), l.pause(), l.resume()] {
            let e = r.unwrap_err();
            assert!(matches!(e, Error::FailedPrecondition(_)), "{e}");
            assert!(e.to_string().contains("being created"), "{e}");
        }
        assert!(l.begin_delete().is_err(), "no delete while Creating");
        l.created().unwrap();
        assert!(l.created().is_err());
        l.begin_start().unwrap();
        assert!(l.begin_start().is_err(), "no second start while Starting");
        assert!(l.begin_delete().is_err(), "no delete while Starting");
        l.started().unwrap();
        let e = l.begin_delete().unwrap_err();
        assert!(e.to_string().contains("kill it before delete"), "{e}");
    }

    #[test]
    fn an_exit_during_a_transient_state_wins() {
        let mut l = life();
        assert!(l.exited(), "reaped while Creating");
        l.created().unwrap();
        assert_eq!(l.phase(), Phase::Exited);

        let mut l = life();
        l.created().unwrap();
        l.begin_start().unwrap();
        assert!(l.exited(), "reaped while Starting");
        l.started().unwrap();
        assert_eq!(l.phase(), Phase::Exited);
    }

    #[test]
    fn failed_starts_and_deletes_go_back() {
        let mut init = life();
        init.created().unwrap();
        init.begin_start().unwrap();
        init.start_failed(false);
        assert_eq!(init.phase(), Phase::Created);
        let was = init.begin_delete().unwrap();
        init.delete_failed(was, false);
        assert_eq!(init.phase(), Phase::Created);

        let mut exec = Lifecycle::added("exec \"e\" in \"c\"".into());
        exec.begin_start().unwrap();
        exec.start_failed(true);
        assert_eq!(exec.phase(), Phase::Exited);
        assert!(!exec.is_live());
    }
}
