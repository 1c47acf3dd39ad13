//! The exit table: which live PID belongs to which init or exec. The reaper hands every
//! (pid, status) here once; the entry is removed the moment the exit is routed, so a PID
//! reused by the kernel never reaches the process that had it before. Each registration
//! carries a token: a Delete removes an entry only while it still owns it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use crate::stdio::tty::OutputDrain;
use crate::task::process::Exit;

/// Exits of PIDs nobody has claimed yet are kept this many at most.
const MAX_ORPHAN_EXITS: usize = 1024;

/// Who a PID is: a container's init (`exec: None`) or one of its exec processes.
#[derive(Clone)]
pub struct Owner<E> {
    pub entry: Arc<E>,
    pub exec: Option<String>,
    /// The process's terminal output, which must all be copied before its exit is known.
    pub tty: Option<OutputDrain>,
    token: u64,
}

pub struct ExitTable<E> {
    by_pid: HashMap<i32, Owner<E>>,
    /// Exits reaped before their PID was registered (a process that died while its Create
    /// or Start was still being answered).
    orphans: HashMap<i32, Exit>,
    next_token: AtomicU64,
}

impl<E> Default for ExitTable<E> {
    fn default() -> Self {
        ExitTable {
            by_pid: HashMap::new(),
            orphans: HashMap::new(),
            next_token: AtomicU64::new(1),
        }
    }
}

/// What `register` did: the PID is now owned (`Live`, with the token `forget` needs), or
/// it had already been reaped (`Reaped`: route the exit now, nothing was registered).
pub enum Registered<E> {
    Live(u64),
    Reaped(Owner<E>, Exit),
}

impl<E> ExitTable<E> {
    /// Claims `pid` for `entry`/`exec`. An orphan exit older than `began` belonged to an
    /// earlier process with the same PID and is dropped.
    pub fn register(
        &mut self,
        pid: i32,
        entry: Arc<E>,
        exec: Option<String>,
        tty: Option<OutputDrain>,
        began: SystemTime,
    ) -> Registered<E> {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let owner = Owner {
            entry,
            exec,
            tty,
            token,
        };
        match self.orphans.remove(&pid).filter(|e| e.at >= began) {
            Some(exit) => Registered::Reaped(owner, exit),
            None => {
                self.by_pid.insert(pid, owner);
                Registered::Live(token)
            }
        }
    }

    /// A child was reaped: hands back its owner and forgets the PID at once. An exit
    /// nobody owns yet is kept for a `register` that comes late.
    pub fn route(&mut self, pid: i32, exit: Exit) -> Option<Owner<E>> {
        let owner = self.by_pid.remove(&pid);
        if owner.is_none() {
            if self.orphans.len() >= MAX_ORPHAN_EXITS {
                self.orphans.clear();
            }
            self.orphans.insert(pid, exit);
        }
        owner
    }

    /// Forgets `pid` only while the registration `token` still owns it.
    pub fn forget(&mut self, pid: i32, token: u64) {
        if self.by_pid.get(&pid).is_some_and(|o| o.token == token) {
            self.by_pid.remove(&pid);
        }
    }

    /// Forgets every PID `entry` still owns (its Delete: processes that outlived it).
    pub fn forget_all(&mut self, entry: &Arc<E>) {
        self.by_pid.retain(|_, o| !Arc::ptr_eq(&o.entry, entry));
    }

    /// How many PIDs are registered (live processes).
    #[cfg(test)]
    pub fn live(&self) -> usize {
        self.by_pid.len()
    }

    #[cfg(test)]
    pub fn has_orphan(&self, pid: i32) -> bool {
        self.orphans.contains_key(&pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exit_is_routed_once_and_a_reused_pid_is_a_new_owner() {
        let mut t: ExitTable<&str> = ExitTable::default();
        let began = SystemTime::now();
        let a = Arc::new("a");
        let Registered::Live(tok) = t.register(7, a.clone(), None, None, began) else {
            panic!("not reaped yet");
        };
        assert!(t.route(7, Exit::now(0)).is_some());
        assert!(t.route(7, Exit::now(0)).is_none(), "routed once");
        // The kernel reuses 7 for b; a's late forget must not take b's entry.
        let b = Arc::new("b");
        let Registered::Live(_) = t.register(7, b.clone(), None, None, SystemTime::now()) else {
            panic!("the orphan of a is older than b");
        };
        t.forget(7, tok);
        assert_eq!(t.live(), 1, "a delete removes only what it still owns");
        t.forget_all(&a);
        assert_eq!(t.live(), 1);
        t.forget_all(&b);
        assert_eq!(t.live(), 0);
    }

    #[test]
    fn an_exit_before_registration_is_handed_back() {
        let mut t: ExitTable<&str> = ExitTable::default();
        let began = SystemTime::now();
        assert!(t.route(9, Exit::now(3)).is_none());
        match t.register(9, Arc::new("x"), None, None, began) {
            Registered::Reaped(_, e) => assert_eq!(e.status, 3),
            Registered::Live(_) => panic!("the exit was already reaped"),
        }
        assert_eq!(t.live(), 0, "nothing left to route");
    }
}
