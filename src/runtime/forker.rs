//! Runs each libcontainer request in a short-lived worker forked from the daemon.
//! libcontainer forks (clone3), chdir()s the calling process, writes its oom_score_adj and
//! waits on hook children: none of that may happen in the daemon itself. Forking is safe
//! because the daemon is single-threaded (a current-thread tokio runtime and nothing that
//! starts threads: no spawn_blocking, no tokio fs or process) — `assert_single_threaded`
//! checks it on every call rather than trusting it.
//!
//! The worker being short-lived matters: a container init is created as the worker's child
//! (CLONE_PARENT from libcontainer's intermediate process); when the worker exits, the init
//! is re-parented to the daemon, a subreaper, which reaps it and learns its exit status.
//!
//! The worker keeps only stdio, its reply pipe and the request's fds: a container init
//! waiting for Start must not hold the daemon's sockets or other containers' fifos.
//! Its reply is length-prefixed on a pipe (EOF cannot mark the end: the init inherits the
//! write end until it execs); a pidfd tells the daemon if the worker died without one.
//! Workers run concurrently; each is reaped by the daemon's reaper like any child.
//!
//! Every call has a deadline. A worker can hang for reasons outside the shim (a hook that
//! never returns, a mount on a dead NFS server, an exec into a frozen cgroup); without a
//! deadline the caller's container would stay locked and its RPC unanswered forever. Each
//! worker leads a process group of its own, which its hooks, libcontainer's intermediate
//! process and a not-yet-started init inherit; on expiry the whole group is killed with
//! SIGKILL, and the call fails with `DeadlineExceeded`, naming what was still running.
//! Cleaning up what the worker left half-made is the caller's job (see `youki::create`).

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::unistd::{ForkResult, fork, pipe2};
use tokio::io::unix::AsyncFd;

use crate::error::{Error, Result};

/// Largest reply a worker may send (kept under a pipe's 64 KiB so it never blocks).
const MAX_REPLY: usize = 48 << 10;
/// How long to wait for a killed worker to be gone before answering anyway (SIGKILL is
/// immediate unless it sleeps uninterruptibly, say on a dead NFS server: then the answer
/// must not wait for it).
const KILL_WAIT: Duration = Duration::from_secs(2);
/// At most this many processes are named in a DeadlineExceeded message.
const MAX_NAMED: usize = 8;

/// Runs in the worker: request bytes and fds in, reply bytes out.
pub type Handler = fn(&[u8], Vec<OwnedFd>) -> Vec<u8>;

pub struct Forker {
    handler: Handler,
    /// Turns a worker that died without answering into a reply.
    failed: fn(String) -> Vec<u8>,
    /// Live workers: their exits are ours, not a container's.
    live: std::sync::Mutex<std::collections::HashSet<i32>>,
}

/// An fd for tokio's reactor.
struct Fd(OwnedFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

fn register(fd: OwnedFd, what: &str) -> Result<AsyncFd<Fd>> {
    // SAFETY: `Fd` owns the fd; it stays open and the same until the AsyncFd drops it.
    unsafe { AsyncFd::register(Fd(fd)) }
        .map_err(|e| Error::io(format!("register {what}"), e.into_parts().1))
}

/// Fails unless this process has exactly one thread (fork would copy only the caller).
fn assert_single_threaded() -> Result<()> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| Error::io("read /proc/self/status", e))?;
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse::<u32>().ok());
    match threads {
        Some(1) => Ok(()),
        other => Err(Error::Internal(format!(
            "refusing to fork a worker: the daemon has {other:?} threads"
        ))),
    }
}

/// Puts every signal the daemon handles (tokio's SIGCHLD handler above all) back to its
/// default in the worker. Left in place, the handler would run in the worker and in the
/// container init it clones, writing a wake-up byte to the daemon's signal pipe's fd
/// number: closed in the worker, or by then reused by libcontainer for its own channel,
/// which corrupts it (seen as "waiting for init ready: ECONNRESET"). Ignored signals stay
/// ignored (SIGPIPE: see `ShimExecutor`).
fn reset_signal_handlers() {
    for sig in 1..=libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: sigaction with a zeroed struct reads the current disposition; we only
        // write SIG_DFL back for signals that have a handler function.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) != 0 {
                continue;
            }
            if old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
    }
}

/// Closes every fd except stdio and `keep` (the worker's pipe and the request's fds).
fn close_all_but(keep: &[RawFd]) {
    // close_range, or one by one where the kernel has none (see fds.rs).
    crate::runtime::fds::close_all_but(keep)
}

/// Live helpers (`spawn_helper`), daemon-wide: whoever forks one needs no `Forker`.
static HELPERS: std::sync::LazyLock<std::sync::Mutex<std::collections::HashSet<i32>>> =
    std::sync::LazyLock::new(Default::default);

/// Forks a long-lived helper child that runs `body` with only stdio and `keep` open, and
/// _exits when it returns; for work the daemon must not do on its thread (a blocking
/// write to a regular file: see `stdio::tty`). It dies with the daemon, and its exit is
/// not taken for a container's. Returns its PID.
pub fn spawn_helper(keep: &[RawFd], body: impl FnOnce()) -> Result<i32> {
    assert_single_threaded()?;
    // SAFETY: the daemon is single-threaded (checked above); the child runs `body` and
    // _exits, never returning into the async runtime.
    match unsafe { fork() }? {
        ForkResult::Child => {
            reset_signal_handlers();
            crate::shim::logger::adopt();
            // SAFETY: plain integer arguments: die with the daemon.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
            close_all_but(keep);
            // As in a worker: a panic must not unwind into the daemon's copied stack.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
            // SAFETY: end the helper without running the daemon's destructors.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            HELPERS
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(child.as_raw());
            Ok(child.as_raw())
        }
    }
}

impl Forker {
    pub fn new(handler: Handler, failed: fn(String) -> Vec<u8>) -> Forker {
        Forker {
            handler,
            failed,
            live: Default::default(),
        }
    }

    /// The reaper reaped `pid`: true (and forgotten) if it was one of our workers or
    /// helpers (`spawn_helper`).
    pub fn reaped(&self, pid: i32) -> bool {
        let worker = self
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&pid);
        worker
            || HELPERS
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&pid)
    }

    /// Forks a worker for one request (the fds are passed to it as they are) and waits
    /// for its reply, at most `deadline`: then the worker's process group is killed and
    /// the call fails with DeadlineExceeded, naming `what` and the processes that ran.
    pub async fn call(
        &self,
        what: &str,
        deadline: Duration,
        req: &[u8],
        fds: &[impl AsFd],
    ) -> Result<Vec<u8>> {
        assert_single_threaded()?;
        let (rd, wr) = pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        let raw: Vec<RawFd> = fds.iter().map(|f| f.as_fd().as_raw_fd()).collect();
        // SAFETY: the daemon is single-threaded (checked above); the child only runs the
        // handler and _exits, never returning into the async runtime.
        match unsafe { fork() }? {
            ForkResult::Child => {
                drop(rd);
                // A group of its own, before anything else can fork: the daemon sets it too
                // (whichever runs first), so the group exists when a deadline kills it.
                // SAFETY: setpgid takes plain integers.
                unsafe { libc::setpgid(0, 0) };
                reset_signal_handlers();
                crate::shim::logger::adopt();
                // SAFETY: plain integer arguments: die with the daemon.
                unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
                let mut keep = raw.clone();
                keep.push(wr.as_raw_fd());
                close_all_but(&keep);
                // The request's fds, owned by the worker now (the daemon keeps its own).
                // SAFETY: these fd numbers are open in this process (inherited).
                let owned = raw
                    .iter()
                    .map(|&f| unsafe { OwnedFd::from_raw_fd(f) })
                    .collect();
                // A panic must not unwind out of the worker into the daemon's copied stack
                // (it would go on running the daemon's code in this process).
                let handler = self.handler;
                let mut reply =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(req, owned)))
                        .unwrap_or_else(|_| (self.failed)("the worker panicked".into()));
                reply.truncate(MAX_REPLY);
                let mut framed = (reply.len() as u32).to_le_bytes().to_vec();
                framed.extend_from_slice(&reply);
                let _ = nix::fcntl::fcntl(&wr, nix::fcntl::FcntlArg::F_SETFL(OFlag::empty()));
                let _ = nix::unistd::write(&wr, &framed);
                // SAFETY: end the worker without running the daemon's destructors.
                unsafe { libc::_exit(0) }
            }
            ForkResult::Parent { child } => {
                drop(wr);
                let child = child.as_raw();
                // EACCES or ESRCH: the child already set it or is gone; both are fine.
                // SAFETY: setpgid takes plain integers.
                unsafe { libc::setpgid(child, child) };
                self.live
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(child);
                self.reply(rd, child, what, deadline).await
            }
        }
    }

    async fn reply(
        &self,
        rd: OwnedFd,
        child: i32,
        what: &str,
        deadline: Duration,
    ) -> Result<Vec<u8>> {
        // SAFETY: pidfd_open takes a pid and flags; the child is ours and not yet reaped
        // by anyone but our own reaper, which runs on this same thread later.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, child, 0) };
        let exited = if pidfd >= 0 {
            // SAFETY: the kernel just gave us this fd.
            Some(register(
                unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) },
                "worker pidfd",
            )?)
        } else {
            None
        };
        let pipe = register(rd, "worker reply pipe")?;
        match tokio::time::timeout(deadline, self.read_reply(&pipe, exited.as_ref(), child)).await {
            Ok(r) => r,
            Err(_) => {
                let running = group_members(child);
                // SAFETY: kill takes plain integers; -child is the worker's own group.
                if unsafe { libc::kill(-child, libc::SIGKILL) } != 0 {
                    // No group (setpgid failed on both sides): the worker alone.
                    // SAFETY: as above; the worker is ours and not reaped while in `live`.
                    unsafe { libc::kill(child, libc::SIGKILL) };
                }
                if let Some(p) = &exited {
                    let _ = tokio::time::timeout(KILL_WAIT, p.readable()).await;
                }
                Err(Error::DeadlineExceeded(format!(
                    "{what}: no answer within {deadline:?}; killed worker {child} and its \
                     process group, which was running: {}",
                    if running.is_empty() {
                        "(nothing found)".to_string()
                    } else {
                        running.join("; ")
                    }
                )))
            }
        }
    }

    async fn read_reply(
        &self,
        pipe: &AsyncFd<Fd>,
        exited: Option<&AsyncFd<Fd>>,
        child: i32,
    ) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        loop {
            if let Some(reply) = framed(&buf) {
                return Ok(reply.to_vec());
            }
            tokio::select! {
                r = pipe.readable() => {
                    let mut ready = r.map_err(|e| Error::io("worker reply pipe", e))?;
                    match read_some(&pipe.get_ref().0, &mut buf) {
                        Ok(0) => return Ok(self.died(child, &buf)),
                        Ok(_) => {}
                        Err(Errno::EAGAIN) => ready.clear_ready(),
                        Err(e) => return Err(Error::io("read worker reply", e)),
                    }
                }
                r = async { match exited { Some(p) => p.readable().await.map(|_| ()), None => std::future::pending().await } } => {
                    r.map_err(|e| Error::io("worker pidfd", e))?;
                    // It wrote (if it did) before exiting: drain what is there.
                    while let Ok(n) = read_some(&pipe.get_ref().0, &mut buf) {
                        if n == 0 {
                            break;
                        }
                    }
                    return Ok(framed(&buf).map(<[u8]>::to_vec).unwrap_or_else(|| self.died(child, &buf)));
                }
            }
        }
    }

    fn died(&self, child: i32, partial: &[u8]) -> Vec<u8> {
        (self.failed)(format!(
            "worker {child} ended without a complete reply ({} bytes)",
            partial.len()
        ))
    }
}

/// The processes of group `pgid`, each as "pid command line" (for the DeadlineExceeded
/// message: which hook or helper hung). Reads /proc, which is memory, not a disk.
fn group_members(pgid: i32) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found: Vec<(i32, String)> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|st| {
                // After the command's closing parenthesis: state, ppid, pgrp.
                st.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(2)?.parse::<i32>().ok())
                    == Some(pgid)
            })
        })
        .map(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|b| {
                    let mut s = String::from_utf8_lossy(&b).replace('\0', " ");
                    s.truncate(s.trim_end().len());
                    if s.len() > 160 {
                        let mut end = 160;
                        while !s.is_char_boundary(end) {
                            end -= 1;
                        }
                        s.truncate(end);
                        s.push('…');
                    }
                    s
                })
                .unwrap_or_default();
            (pid, cmd)
        })
        .collect();
    found.sort();
    let more = found.len().saturating_sub(MAX_NAMED);
    let mut out: Vec<String> = found
        .into_iter()
        .take(MAX_NAMED)
        .map(|(pid, cmd)| {
            if pid == pgid {
                format!("{pid} (the worker)")
            } else if cmd.is_empty() {
                format!("{pid}")
            } else {
                format!("{pid} {cmd}")
            }
        })
        .collect();
    if more > 0 {
        out.push(format!("and {more} more"));
    }
    out
}

fn read_some(fd: &OwnedFd, buf: &mut Vec<u8>) -> nix::Result<usize> {
    let mut chunk = [0u8; 8192];
    let n = nix::unistd::read(fd, &mut chunk)?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

/// The reply once `buf` holds all of it.
fn framed(buf: &[u8]) -> Option<&[u8]> {
    let len = u32::from_le_bytes(buf.get(..4)?.try_into().ok()?) as usize;
    buf.get(4..4 + len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo(req: &[u8], fds: Vec<OwnedFd>) -> Vec<u8> {
        let mut out = req.to_vec();
        out.extend_from_slice(format!(":{}", fds.len()).as_bytes());
        out
    }

    fn crash(_: &[u8], _: Vec<OwnedFd>) -> Vec<u8> {
        // SAFETY: ending the forked test worker abruptly, as a crash would.
        unsafe { libc::_exit(3) }
    }

    /// Reports how the worker sees SIGCHLD and SIGPIPE.
    fn dispositions(_: &[u8], _: Vec<OwnedFd>) -> Vec<u8> {
        let of = |sig| {
            // SAFETY: reading a disposition into a zeroed struct.
            unsafe {
                let mut old: libc::sigaction = std::mem::zeroed();
                libc::sigaction(sig, std::ptr::null(), &mut old);
                match old.sa_sigaction {
                    libc::SIG_DFL => "dfl",
                    libc::SIG_IGN => "ign",
                    _ => "handler",
                }
            }
        };
        format!("{} {}", of(libc::SIGCHLD), of(libc::SIGPIPE)).into_bytes()
    }

    fn boom(_: &[u8], _: Vec<OwnedFd>) -> Vec<u8> {
        panic!("a bug in a handler")
    }

    fn failed(m: String) -> Vec<u8> {
        format!("FAILED {m}").into_bytes()
    }

    const LONG: Duration = Duration::from_secs(10);

    /// Starts a "hook" that sleeps for good, sends its PID on the fd it was given, and
    /// hangs itself: a worker stuck in a createRuntime hook.
    fn hang(_: &[u8], fds: Vec<OwnedFd>) -> Vec<u8> {
        let mut hook = std::process::Command::new("sleep")
            .arg("100000")
            .spawn()
            .expect("spawn sleep");
        let _ = nix::unistd::write(&fds[0], &hook.id().to_le_bytes());
        // As libcontainer waits for a hook: until the group kill ends both.
        let _ = hook.wait();
        loop {
            std::thread::sleep(Duration::from_secs(1000));
        }
    }

    /// Runs `f` in a forked, single-threaded copy of this test process (the harness runs
    /// tests on threads and forking needs a single-threaded caller); true if it returned
    /// true within `limit`.
    fn in_single_threaded_child(limit: Duration, f: impl FnOnce() -> bool) -> bool {
        // SAFETY: the child only runs `f`, then _exits.
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(false);
                // SAFETY: leave the forked test process without running the harness.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) }
            }
            ForkResult::Parent { child } => {
                use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
                let deadline = std::time::Instant::now() + limit;
                let status = loop {
                    match waitpid(child, Some(WaitPidFlag::WNOHANG)).unwrap() {
                        WaitStatus::StillAlive if std::time::Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(20))
                        }
                        WaitStatus::StillAlive => {
                            let _ = nix::sys::signal::kill(child, nix::sys::signal::SIGKILL);
                            panic!("the forked test process hung");
                        }
                        s => break s,
                    }
                };
                status == WaitStatus::Exited(child, 0)
            }
        }
    }

    /// Gone or a zombie: nothing runs any more.
    fn dead(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |st| {
            st.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
    }

    #[test]
    fn a_hung_worker_and_its_hook_are_killed_at_the_deadline() {
        let ok = in_single_threaded_child(Duration::from_secs(20), || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let f = Forker::new(hang, failed);
                let (rd, wr) = pipe2(OFlag::O_CLOEXEC).unwrap();
                let began = std::time::Instant::now();
                let r = f
                    .call("create c1", Duration::from_millis(500), b"", &[&wr])
                    .await;
                let took = began.elapsed();
                let mut pid = [0u8; 4];
                assert_eq!(nix::unistd::read(&rd, &mut pid).unwrap(), 4);
                let hook = i32::from_le_bytes(pid);
                let msg = match r {
                    Err(Error::DeadlineExceeded(m)) => m,
                    other => panic!("{other:?}"),
                };
                // Named: the call, the deadline and the hook that hung.
                assert!(
                    msg.starts_with("create c1: no answer within 500ms"),
                    "{msg}"
                );
                assert!(msg.contains(&format!("{hook} sleep 100000")), "{msg}");
                assert!(took < Duration::from_secs(3), "{took:?}");
                // The hook went with the worker: no need to know it was there.
                let gone = (0..100).any(|_| {
                    std::thread::sleep(Duration::from_millis(20));
                    dead(hook)
                });
                assert!(gone, "hook {hook} survived its worker's deadline");
                true
            })
        });
        assert!(ok);
    }

    #[test]
    fn frames_need_their_whole_length() {
        assert_eq!(framed(&[3, 0, 0, 0, b'a', b'b']), None);
        assert_eq!(framed(&[2, 0, 0, 0, b'a', b'b']), Some(&b"ab"[..]));
        assert_eq!(framed(&[0, 0]), None);
    }

    #[test]
    fn a_worker_answers_and_a_crashed_worker_is_a_clear_failure() {
        // The harness runs tests on threads and forking needs a single-threaded caller:
        // run the real logic in a forked, single-threaded copy of this test process.
        // SAFETY: the child only builds a runtime and calls the forker, then _exits.
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let ok = rt.block_on(async {
                    let f = Forker::new(echo, failed);
                    let (a, _b) = pipe2(OFlag::O_CLOEXEC).unwrap();
                    let r1 = f.call("echo", LONG, b"hi", &[&a]).await.unwrap();
                    let f2 = Forker::new(crash, failed);
                    let r2 = f2
                        .call("crash", LONG, b"x", &[] as &[OwnedFd])
                        .await
                        .unwrap();
                    // The daemon's SIGCHLD handler (tokio's) must not run in a worker.
                    let _sigchld =
                        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())
                            .unwrap();
                    let f3 = Forker::new(dispositions, failed);
                    let r3 = f3
                        .call("dispositions", LONG, b"", &[] as &[OwnedFd])
                        .await
                        .unwrap();
                    let f4 = Forker::new(boom, failed);
                    let r4 = f4.call("boom", LONG, b"", &[] as &[OwnedFd]).await.unwrap();
                    r4 == b"FAILED the worker panicked"
                        && r1 == b"hi:1"
                        && String::from_utf8_lossy(&r2).starts_with("FAILED worker")
                        && r3 == b"dfl ign"
                });
                // SAFETY: leave the forked test process without running the harness.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) }
            }
            ForkResult::Parent { child } => {
                use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
                let status = loop {
                    match waitpid(child, Some(WaitPidFlag::WNOHANG)).unwrap() {
                        WaitStatus::StillAlive if std::time::Instant::now() < deadline => {
                            std::thread::sleep(std::time::Duration::from_millis(20))
                        }
                        WaitStatus::StillAlive => {
                            let _ = nix::sys::signal::kill(child, nix::sys::signal::SIGKILL);
                            panic!("the forked test process hung");
                        }
                        s => break s,
                    }
                };
                assert_eq!(status, WaitStatus::Exited(child, 0));
            }
        }
    }
}
