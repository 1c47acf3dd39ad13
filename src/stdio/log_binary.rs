//! `binary://` and `binary-v2://` log URIs: containerd's pluggable logging. The shim starts
//! the logger named by the URI's path with the query's keys and values as arguments and
//! only CONTAINER_ID and CONTAINER_NAMESPACE in its environment; fd 3 and fd 4 are the read
//! ends of the container's stdout and stderr pipes, fd 5 the write end of a readiness pipe.
//! The container starts once the logger is ready: it wrote a byte or closed fd 5
//! (`binary`); it wrote a byte (`binary-v2`, where a bare close means it died).
//! At Delete the logger gets SIGTERM to flush and exit, and SIGKILL if it has not exited
//! after a grace period.
//!
//! The URI only ever comes from containerd's Create/Exec request.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::unistd::pipe2;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::error::{Error, Result};

/// How long the logger has to signal readiness.
const READY_WAIT: Duration = Duration::from_secs(10);
/// How long it has to flush after SIGTERM (containerd gives 12 s).
const TERM_GRACE: Duration = Duration::from_secs(12);

/// A parsed `binary://` URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggerUri {
    pub path: String,
    pub args: Vec<String>,
    /// `binary-v2`: readiness needs a byte.
    pub strict: bool,
}

/// `Some` for a binary logger URI, `None` for anything else.
pub fn parse(uri: &str) -> Option<Result<LoggerUri>> {
    let (scheme, rest) = uri.split_once("://")?;
    let strict = match scheme {
        "binary" => false,
        "binary-v2" => true,
        _ => return None,
    };
    Some(parse_rest(uri, rest, strict))
}

fn parse_rest(uri: &str, rest: &str, strict: bool) -> Result<LoggerUri> {
    let (loc, query) = rest.split_once('?').unwrap_or((rest, ""));
    // binary:///path → empty host; a host part is not a path containerd would send.
    let path = loc
        .strip_prefix('/')
        .map(|p| format!("/{p}"))
        .filter(|_| loc.starts_with('/'))
        .ok_or_else(|| {
            Error::InvalidArgument(format!("log URI {uri:?}: the logger path must be absolute"))
        })?;
    let path = unescape(&path).ok_or_else(|| bad(uri))?;
    let mut args = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        args.push(unescape_query(k).ok_or_else(|| bad(uri))?);
        // Go's url.Values has a value for every key; containerd passes it even when empty.
        args.push(unescape_query(v).ok_or_else(|| bad(uri))?);
    }
    Ok(LoggerUri { path, args, strict })
}

fn bad(uri: &str) -> Error {
    Error::InvalidArgument(format!("log URI {uri:?}: bad percent-encoding"))
}

fn unescape_query(s: &str) -> Option<String> {
    unescape(&s.replace('+', " "))
}

fn unescape(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A running logger; stopped (SIGTERM, then SIGKILL) when dropped. Signalled through a
/// pidfd only: the daemon's reaper may reap the logger at any time, and its PID may be
/// another process's by the time the grace period ends (or even at Delete).
#[derive(Debug)]
pub struct Logger {
    pid: i32,
    /// `None` on a kernel without pidfd_open (before 5.3): then the logger is never
    /// signalled, and exits when its pipes close, as loggers do.
    pidfd: Option<OwnedFd>,
}

impl Logger {
    /// Takes hold of the just-spawned child `pid`: no await since spawn, so it cannot
    /// have been reaped (the reaper runs on this thread), and the PID is still its own.
    fn new(pid: i32) -> Logger {
        let pidfd = pidfd_open(pid)
            .map_err(|e| log::warn!("logger {pid}: pidfd_open: {e}; it will not be signalled"))
            .ok();
        Logger { pid, pidfd }
    }
}

fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: plain integer arguments; a non-negative result is a new fd we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0u32) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned to us and is open (pidfds are close-on-exec).
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Signals the process behind `pidfd`; ESRCH once it has exited, never another process.
fn pidfd_signal(pidfd: &OwnedFd, signal: i32) -> std::io::Result<()> {
    // SAFETY: a pidfd we own, a signal number, no siginfo, no flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0u32,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl Drop for Logger {
    fn drop(&mut self) {
        let pid = self.pid;
        let Some(pidfd) = self.pidfd.take() else {
            return;
        };
        if pidfd_signal(&pidfd, libc::SIGTERM).is_err() {
            // Exited already.
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                // A pidfd turns readable when its process exits (reaped or not).
                // SAFETY: the AsyncFd owns the pidfd until into_inner gives it back.
                let watched = unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) };
                let exited = match watched {
                    Ok(fd) => {
                        let exited = tokio::time::timeout(TERM_GRACE, fd.readable())
                            .await
                            .is_ok();
                        (exited, fd.into_inner())
                    }
                    Err(e) => {
                        let e = e.into_parts().1;
                        log::warn!("logger {pid}: watch its pidfd: {e}");
                        return;
                    }
                };
                if let (false, pidfd) = exited {
                    log::warn!("logger {pid} ignored SIGTERM for {TERM_GRACE:?}: killing it");
                    let _ = pidfd_signal(&pidfd, libc::SIGKILL);
                }
            });
        }
    }
}

/// Starts the logger and waits until it is ready. Returns the write ends the container
/// gets as stdout and stderr.
pub async fn start(
    uri: &LoggerUri,
    container_id: &str,
    namespace: &str,
) -> Result<(OwnedFd, OwnedFd, Logger)> {
    let (out_r, out_w) = pipe2(OFlag::O_CLOEXEC)?;
    let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC)?;
    let (ready_r, ready_w) = pipe2(OFlag::O_CLOEXEC)?;
    let fds = [out_r.as_raw_fd(), err_r.as_raw_fd(), ready_w.as_raw_fd()];
    let mut cmd = Command::new(&uri.path);
    cmd.args(&uri.args)
        .env_clear()
        .env("CONTAINER_ID", container_id)
        .env("CONTAINER_NAMESPACE", namespace)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: between fork and exec only async-signal-safe calls (dup2, fcntl). dup2 to
    // 3, 4, 5 clears CLOEXEC on the copies; a source already at its target gets it cleared
    // by hand. Sources are first moved above 5 so no dup2 overwrites a later source.
    unsafe {
        cmd.pre_exec(move || {
            let mut high = [0; 3];
            for (i, fd) in fds.iter().enumerate() {
                let h = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 10);
                if h < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                high[i] = h;
            }
            for (i, h) in high.iter().enumerate() {
                if libc::dup2(*h, 3 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| Error::InvalidArgument(format!("start logger {:?}: {e}", uri.path)))?;
    // The daemon's reaper collects the logger's exit; nobody waits on `child`.
    let logger = Logger::new(child.id() as i32);
    drop(child);
    drop((out_r, err_r, ready_w));
    wait_ready(ready_r, uri).await?;
    Ok((out_w, err_w, logger))
}

async fn wait_ready(ready_r: OwnedFd, uri: &LoggerUri) -> Result<()> {
    let path = &uri.path;
    // Polled on the daemon's own thread: the daemon must stay single-threaded (forker).
    let flags = OFlag::from_bits_truncate(fcntl(&ready_r, FcntlArg::F_GETFL)?);
    fcntl(&ready_r, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    // SAFETY: the AsyncFd owns the fd until it is dropped.
    let fd = unsafe { AsyncFd::register(Owned(ready_r)) }
        .map_err(|e| Error::io("register logger readiness pipe", e.into_parts().1))?;
    let read = async {
        loop {
            let mut ready = fd.readable().await?;
            let mut b = [0u8; 1];
            match nix::unistd::read(&fd.get_ref().0, &mut b) {
                Ok(n) => return Ok::<usize, std::io::Error>(n),
                Err(Errno::EAGAIN) => ready.clear_ready(),
                Err(e) => return Err(e.into()),
            }
        }
    };
    let n = tokio::time::timeout(READY_WAIT, read)
        .await
        .map_err(|_| {
            Error::Runtime(format!(
                "logger {path:?} did not signal readiness within {READY_WAIT:?}"
            ))
        })?
        .map_err(|e| Error::io(format!("read readiness of logger {path:?}"), e))?;
    if uri.strict && n == 0 {
        return Err(Error::Runtime(format!(
            "logger {path:?} exited without signalling readiness (binary-v2 needs a byte on fd 5)"
        )));
    }
    Ok(())
}

struct Owned(OwnedFd);

impl std::os::fd::AsRawFd for Owned {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_parse_like_containerds_url_values() {
        assert!(parse("/run/fifo").is_none());
        assert!(parse("file:///var/log/x").is_none());
        let u = parse("binary:///usr/bin/my%20logger?-c=printf+x&--flag=&k=a%26b")
            .unwrap()
            .unwrap();
        assert_eq!(u.path, "/usr/bin/my logger");
        assert_eq!(u.args, ["-c", "printf x", "--flag", "", "k", "a&b"]);
        assert!(!u.strict);
        assert!(parse("binary-v2:///bin/logger").unwrap().unwrap().strict);
        let e = parse("binary://host/bin/logger").unwrap().unwrap_err();
        assert!(e.to_string().contains("absolute"), "{e}");
        assert!(parse("binary:///bin/x?a=%zz").unwrap().is_err());
    }

    async fn run(script: &str, scheme: &str) -> Result<(OwnedFd, OwnedFd, Logger)> {
        let uri = parse(&format!("{scheme}:///bin/sh?-c={script}"))
            .unwrap()
            .unwrap();
        start(&uri, "c1", "ns1").await
    }

    #[tokio::test]
    async fn logger_gets_both_streams_and_its_environment() {
        let dir = std::env::temp_dir().join(format!("log-binary-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("out");
        // Signal ready, then copy fd 3 and fd 4 and record the environment.
        let script = format!(
            "echo+-n+r+>%265;+exec+5>%26-;+env+|+sort+>{d}/env;+cat+<%263+>{o};+cat+<%264+>>{o}",
            d = dir.display(),
            o = out.display()
        );
        let (w_out, w_err, logger) = run(&script, "binary-v2").await.unwrap();
        nix::unistd::write(&w_out, b"to-stdout\n").unwrap();
        nix::unistd::write(&w_err, b"to-stderr\n").unwrap();
        drop((w_out, w_err));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .count()
            < 2
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "to-stdout\nto-stderr\n"
        );
        let env = std::fs::read_to_string(dir.join("env")).unwrap();
        assert!(env.contains("CONTAINER_ID=c1\n"), "{env}");
        assert!(env.contains("CONTAINER_NAMESPACE=ns1\n"), "{env}");
        assert!(
            !env.contains("HOME="),
            "the daemon's environment leaked: {env}"
        );
        drop(logger);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn readiness_rules_differ_between_binary_and_binary_v2() {
        // Closing fd 5 without a byte: ready for `binary`, a failure for `binary-v2`.
        assert!(run("exec+5>%26-;+sleep+1", "binary").await.is_ok());
        let e = run("exec+5>%26-;+sleep+1", "binary-v2").await.unwrap_err();
        assert!(e.to_string().contains("readiness"), "{e}");
        let e = parse("binary:///nonexistent/logger").unwrap().unwrap();
        let e = start(&e, "c1", "ns1").await.unwrap_err();
        assert!(e.to_string().contains("/nonexistent/logger"), "{e}");
    }

    /// Runs `f` in a forked copy of the test process and returns its exit code.
    fn in_child(f: impl FnOnce() -> i32) -> i32 {
        use nix::sys::wait::{WaitStatus, waitpid};
        // SAFETY: the child only runs `f` and _exits, never returning into the harness.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(99);
                // SAFETY: leave the forked test process without running the harness.
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => match waitpid(child, None).unwrap() {
                WaitStatus::Exited(_, code) => code,
                other => panic!("forked test process: {other:?}"),
            },
        }
    }

    #[test]
    fn a_reused_pid_is_never_signalled() {
        // The logger exits and is reaped (by the daemon's reaper, in the shim); its PID goes
        // to another process; then the container is deleted and the logger dropped. In a
        // PID namespace of its own, the test hands the PID out again on purpose.
        let code = in_child(|| {
            if nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWPID).is_err() {
                return 10;
            }
            // The first child is PID 1 of the new namespace; nothing else runs in it.
            in_child(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(reuse_the_pid_then_drop())
            })
        });
        assert_eq!(
            code, 0,
            "1: the process that got the logger's PID was killed; 10-13: setup failed"
        );
    }

    async fn reuse_the_pid_then_drop() -> i32 {
        use nix::sys::signal::{Signal, kill};
        use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
        use nix::unistd::Pid;
        let Ok((_out, _err, logger)) = run("echo+-n+r+>%265;+exec+sleep+100", "binary-v2").await
        else {
            return 11;
        };
        let pid = Pid::from_raw(logger.pid);
        let _ = kill(pid, Signal::SIGKILL);
        let _ = waitpid(pid, None);
        // The next PID this namespace gives out is the logger's.
        if std::fs::write(
            "/proc/sys/kernel/ns_last_pid",
            format!("{}", pid.as_raw() - 1),
        )
        .is_err()
        {
            return 12;
        }
        // SAFETY: the child only waits for a signal.
        let victim = match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => loop {
                // SAFETY: pause has no preconditions.
                unsafe { libc::pause() };
            },
            Ok(nix::unistd::ForkResult::Parent { child }) => child,
            Err(_) => return 13,
        };
        if victim != pid {
            let _ = kill(victim, Signal::SIGKILL);
            return 13;
        }
        drop(logger);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let alive = matches!(
            waitpid(victim, Some(WaitPidFlag::WNOHANG)),
            Ok(WaitStatus::StillAlive)
        );
        let _ = kill(victim, Signal::SIGKILL);
        if alive { 0 } else { 1 }
    }
}
