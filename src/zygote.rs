//! The fork helper. libcontainer forks (clone3), chdir()s the calling process, writes its
//! oom_score_adj and waits on hook children: none of that may happen inside the
//! multi-threaded async daemon. So before any thread exists the daemon forks this helper,
//! which stays single-threaded and, for every request, forks a short-lived worker that runs
//! the request and exits.
//!
//! The worker being short-lived matters: a container init is created as the worker's child
//! (CLONE_PARENT from libcontainer's intermediate process); when the worker exits, the init
//! is re-parented to the nearest subreaper — the daemon — which then reaps it and learns its
//! exit status. The helper itself is not a subreaper.
//!
//! Transport: a SOCK_SEQPACKET pair (one message per request/response, fds by SCM_RIGHTS);
//! the payload is opaque bytes, the handler decides what they mean.

use std::io::{IoSlice, IoSliceMut, Read};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid, fork};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::Mutex;

use crate::error::{Error, Result};

/// Largest request or response.
const MAX_MESSAGE: usize = 64 << 10;
/// Most fds one request may carry.
pub const MAX_FDS: usize = 8;

/// Runs in the worker: request bytes and fds in, response bytes out.
pub type Handler = fn(&[u8], Vec<OwnedFd>) -> Vec<u8>;

pub struct Zygote {
    sock: Mutex<AsyncFd<OwnedFd>>,
}

/// Forks the helper. Call before any other thread exists (before the tokio runtime).
/// `failed` turns a worker that died without answering into a response.
pub fn spawn(handler: Handler, failed: fn(String) -> Vec<u8>) -> Result<(OwnedFd, Pid)> {
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    // SAFETY: the caller guarantees this process is single-threaded here, so the child
    // may run arbitrary code.
    match unsafe { fork() }? {
        ForkResult::Child => {
            drop(ours);
            // Die with the daemon: a helper without its daemon has nobody to serve.
            // SAFETY: plain integer arguments.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
            close_other_fds(theirs.as_raw_fd());
            serve(theirs, handler, failed);
            // SAFETY: _exit is always safe; we must not run the daemon's atexit handlers.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            drop(theirs);
            Ok((ours, child))
        }
    }
}

/// Keeps stdio and the helper's socket; closes everything else the daemon had open (its
/// listening socket in particular), so no container ever holds one of those.
fn close_other_fds(keep: RawFd) {
    // SAFETY: close_range on fd ranges we own; errors are harmless (older kernels).
    unsafe {
        if keep > 3 {
            libc::syscall(libc::SYS_close_range, 3u32, (keep - 1) as u32, 0u32);
        }
        libc::syscall(libc::SYS_close_range, (keep + 1) as u32, u32::MAX, 0u32);
    }
}

fn serve(sock: OwnedFd, handler: Handler, failed: fn(String) -> Vec<u8>) {
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let (len, fds) = match recv(sock.as_raw_fd(), &mut buf) {
            Ok((0, _)) => return,
            Ok(m) => m,
            Err(Errno::EINTR) => continue,
            Err(_) => return,
        };
        let reply = run_worker(&buf[..len], fds, handler, failed, sock.as_raw_fd());
        if send(sock.as_raw_fd(), &reply, &[]).is_err() {
            return;
        }
    }
}

fn run_worker(
    req: &[u8],
    fds: Vec<OwnedFd>,
    handler: Handler,
    failed: fn(String) -> Vec<u8>,
    sock: RawFd,
) -> Vec<u8> {
    let (rd, wr) =
        match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK) {
            Ok(p) => p,
            Err(e) => return failed(format!("fork helper: pipe: {e}")),
        };
    // SAFETY: the helper is single-threaded.
    match unsafe { fork() } {
        Err(e) => failed(format!("fork helper: fork: {e}")),
        Ok(ForkResult::Child) => {
            drop(rd);
            // SAFETY: the worker must not talk on the helper's socket.
            unsafe { libc::close(sock) };
            let reply = handler(req, fds);
            // The pipe holds 64 KiB; replies are small. Written before exit so the helper
            // finds it once waitpid returns.
            let mut w = std::fs::File::from(wr);
            let _ = std::io::Write::write_all(&mut w, &reply);
            // SAFETY: end the worker without unwinding into the helper's loop.
            unsafe { libc::_exit(0) }
        }
        Ok(ForkResult::Parent { child }) => {
            drop(fds);
            drop(wr);
            // Wait for the worker's exit, not for EOF: the container init it made inherited
            // the pipe's write end until it execs.
            let status = loop {
                match waitpid(child, None) {
                    Err(Errno::EINTR) => continue,
                    other => break other,
                }
            };
            let mut reply = Vec::new();
            let mut r = std::fs::File::from(rd);
            let mut chunk = [0u8; 8192];
            loop {
                match r.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => reply.extend_from_slice(&chunk[..n]),
                    Err(_) => break,
                }
            }
            if reply.is_empty() {
                failed(format!(
                    "fork helper: worker died without answering: {status:?}"
                ))
            } else {
                reply
            }
        }
    }
}

fn send(fd: RawFd, data: &[u8], fds: &[RawFd]) -> nix::Result<usize> {
    let iov = [IoSlice::new(data)];
    if fds.is_empty() {
        sendmsg::<()>(fd, &iov, &[], MsgFlags::MSG_NOSIGNAL, None)
    } else {
        sendmsg::<()>(
            fd,
            &iov,
            &[ControlMessage::ScmRights(fds)],
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
    }
}

fn recv(fd: RawFd, buf: &mut [u8]) -> nix::Result<(usize, Vec<OwnedFd>)> {
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(fd, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)?;
    let mut fds = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(rs) = c {
            // SAFETY: the kernel just installed these fds for us.
            fds.extend(rs.into_iter().map(|r| unsafe { OwnedFd::from_raw_fd(r) }));
        }
    }
    Ok((msg.bytes, fds))
}

impl Zygote {
    /// Wraps the daemon's end once the tokio runtime exists.
    pub fn new(sock: OwnedFd) -> Result<Zygote> {
        let flags = nix::fcntl::fcntl(&sock, nix::fcntl::FcntlArg::F_GETFL)?;
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(&sock, nix::fcntl::FcntlArg::F_SETFL(flags))?;
        // SAFETY: we own `sock` and nobody else touches it while the AsyncFd lives.
        let afd = unsafe { AsyncFd::register(sock) }
            .map_err(|e| Error::io("register fork helper socket", e.into_parts().1))?;
        Ok(Zygote {
            sock: Mutex::new(afd),
        })
    }

    /// Sends one request (with fds, which the helper passes to the worker) and waits for
    /// its answer. Requests are served one at a time, in order.
    pub async fn call(&self, req: &[u8], fds: &[impl AsFd]) -> Result<Vec<u8>> {
        if req.len() > MAX_MESSAGE || fds.len() > MAX_FDS {
            return Err(Error::Internal("fork helper request too large".into()));
        }
        let raw: Vec<RawFd> = fds.iter().map(|f| f.as_fd().as_raw_fd()).collect();
        let sock = self.sock.lock().await;
        sock.async_io(Interest::WRITABLE, |fd| {
            send(fd.as_raw_fd(), req, &raw).map_err(std::io::Error::from)
        })
        .await
        .map_err(|e| Error::io("send to fork helper", e))?;
        let mut buf = vec![0u8; MAX_MESSAGE];
        let (n, _) = sock
            .async_io(Interest::READABLE, |fd| {
                recv(fd.as_raw_fd(), &mut buf).map_err(std::io::Error::from)
            })
            .await
            .map_err(|e| Error::io("receive from fork helper", e))?;
        if n == 0 {
            return Err(Error::Runtime("fork helper is gone".into()));
        }
        buf.truncate(n);
        Ok(buf)
    }
}
