//! Terminals (`ctr run -t`, `ctr task exec -t`, CRI `tty: true`). libcontainer's init opens
//! the pty inside the container and sends the master over a console socket; the daemon
//! receives it and copies between it and containerd's fifos: stdin fifo → master,
//! master → stdout fifo (a terminal has no separate stderr). Two small tasks per terminal,
//! no thread. ResizePty sets the master's window size.
//!
//! A process's output must all reach the client before its exit is known: containerd's
//! client reads the exit from Wait, then deletes the process, which ends the copy. So the
//! exit path first asks the copy to finish (`OutputDrain::finish`): it copies what the
//! process left in the pty, up to the end of the terminal (EIO: every slave fd is closed) or
//! what is there now when a background process still holds the slave, and closes the
//! client's fifo, which then reads end-of-file.

use std::fs::File;
use std::io::{IoSliceMut, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use tokio::io::unix::AsyncFd;
use tokio::net::UnixListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::stdio::{Keepalive, open_input};

/// How long to wait for the container's init to send its pty master.
const RECEIVE_WAIT: Duration = Duration::from_secs(10);
/// The byte a terminal in canonical mode reads as end-of-file (^D): what stdin's end
/// becomes for the process on the other side of the pty.
const VEOF: u8 = 0x04;

/// A listening filesystem socket (0600 in a 0700 directory) for one pty master.
pub struct ConsoleSocket {
    path: PathBuf,
    listener: UnixListener,
}

impl ConsoleSocket {
    /// The name is short and unique in this daemon (never an ID: a socket path must fit
    /// in 108 bytes, and container and exec IDs can be 64 characters each).
    pub fn bind(dir: &Path) -> Result<ConsoleSocket> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        let path = dir.join(format!("c-{}.sock", unique()));
        let listener = UnixListener::bind(&path)
            .map_err(|e| Error::io(format!("bind console socket {}", path.display()), e))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io(format!("chmod {}", path.display()), e))?;
        Ok(ConsoleSocket { path, listener })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts the init's connection and takes the pty master it sends.
    pub async fn receive(self) -> Result<OwnedFd> {
        tokio::time::timeout(RECEIVE_WAIT, self.accept_master())
            .await
            .map_err(|_| {
                Error::Runtime(format!(
                    "no pty master arrived on {} within {RECEIVE_WAIT:?}",
                    self.path.display()
                ))
            })?
    }

    async fn accept_master(&self) -> Result<OwnedFd> {
        let (stream, _) = self
            .listener
            .accept()
            .await
            .map_err(|e| Error::io("accept on console socket", e))?;
        loop {
            stream
                .readable()
                .await
                .map_err(|e| Error::io("console socket", e))?;
            match stream.try_io(tokio::io::Interest::READABLE, || {
                recv_fd(stream.as_raw_fd())
            }) {
                Ok(Some(fd)) => return Ok(fd),
                Ok(None) => {
                    return Err(Error::Runtime(
                        "the console socket message carried no pty master".into(),
                    ));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(Error::io("receive pty master", e)),
            }
        }
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// One message from the console socket; the first fd it carries.
fn recv_fd(sock: RawFd) -> std::io::Result<Option<OwnedFd>> {
    let mut buf = [0u8; 64];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(sock, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)?;
    let mut first = None;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for fd in fds {
                // SAFETY: the kernel just installed these fds for us; nobody else owns them.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                if first.is_none() {
                    first = Some(owned);
                }
            }
        }
    }
    Ok(first)
}

/// A pty master owned by the daemon, with its copy tasks.
pub struct Console {
    master: Arc<AsyncFd<OwnedFd>>,
    keep: Keepalive,
    copies: Vec<JoinHandle<()>>,
    drain: OutputDrain,
}

/// Tells a terminal's output copy that its process exited, and waits for the copy to end.
/// Cloned into the exit path, which must not take the container's lock to reach it.
#[derive(Clone)]
pub struct OutputDrain {
    exited: Arc<watch::Sender<bool>>,
    done: watch::Receiver<bool>,
}

impl OutputDrain {
    /// The process exited: returns once everything it wrote to the terminal is in the
    /// client's fifo and that fifo is closed, or after `limit` (a client that stopped
    /// reading must not hold the exit back forever).
    pub async fn finish(&self, limit: Duration) {
        self.exited.send_replace(true);
        let mut done = self.done.clone();
        match tokio::time::timeout(limit, done.wait_for(|d| *d)).await {
            // Err inside: the copy task is gone (aborted), so it is done too.
            Ok(_) => {}
            Err(_) => log::warn!("terminal output still not copied {limit:?} after the exit"),
        }
    }
}

/// Raises `done` when the copy task ends, however it ends (abort included).
struct DoneOnDrop(watch::Sender<bool>);

impl Drop for DoneOnDrop {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
}

impl Console {
    /// Starts copying between `master` and the client's stdin URI and the opened output
    /// (`keep` holds what keeps that output working).
    pub fn attach(
        master: OwnedFd,
        stdin: &str,
        out: OwnedFd,
        mut keep: Keepalive,
    ) -> Result<Console> {
        set_nonblocking(&master)?;
        let master =
            Arc::new(pollable(master).map_err(|(_, e)| Error::io("register pty master", e))?);
        let (exited, exited_rx) = watch::channel(false);
        let (done, done_rx) = watch::channel(false);
        let drain = OutputDrain {
            exited: Arc::new(exited),
            done: done_rx,
        };
        let mut copies = Vec::new();
        copies.push(tokio::spawn(copy_out(
            master.clone(),
            Sink::new(out),
            exited_rx,
            DoneOnDrop(done),
        )));
        if !stdin.is_empty() {
            let input = open_input(stdin, &mut keep)?;
            set_nonblocking(&input)?;
            let input =
                pollable(input).map_err(|(_, e)| Error::io("register terminal stdin", e))?;
            copies.push(tokio::spawn(copy_in(input, master.clone())));
        }
        Ok(Console {
            master,
            keep,
            copies,
            drain,
        })
    }

    /// What the exit path uses to let the output finish (see the module comment).
    pub fn drain(&self) -> OutputDrain {
        self.drain.clone()
    }

    pub fn resize(&self, width: u32, height: u32) -> Result<()> {
        let ws = libc::winsize {
            ws_row: u16::try_from(height)
                .map_err(|_| Error::InvalidArgument(format!("terminal height {height}")))?,
            ws_col: u16::try_from(width)
                .map_err(|_| Error::InvalidArgument(format!("terminal width {width}")))?,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize from a valid pointer; the fd is our pty master.
        let rc = unsafe { libc::ioctl(self.master.get_ref().as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        if rc != 0 {
            return Err(Error::io("resize pty", std::io::Error::last_os_error()));
        }
        Ok(())
    }

    /// CloseIO: once the client has closed its end too, the process reads end-of-file.
    pub fn close_stdin(&mut self) {
        self.keep.close_stdin();
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        for c in &self.copies {
            c.abort();
        }
    }
}

fn set_nonblocking(fd: &OwnedFd) -> Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// Where terminal output goes: a fifo or a pipe (async), or a device written directly
/// (/dev/null: a write there never waits).
///
/// A regular file (`file://`) is never written by the daemon: a write to a file can block
/// for as long as its filesystem likes (a full or hung network mount, a slow disk), and
/// the daemon's one thread serves every container of the pod. The output goes into a
/// pipe instead, which a forked helper copies into the file with blocking writes.
enum Sink {
    Fifo(AsyncFd<OwnedFd>),
    File(File),
}

impl Sink {
    fn new(fd: OwnedFd) -> Sink {
        // A fifo registers with epoll; a regular file or /dev/null does not (EPERM).
        if let Err(e) = set_nonblocking(&fd) {
            log::debug!("terminal output: {e}");
        }
        let fd = match pollable(fd) {
            Ok(a) => return Sink::Fifo(a),
            Err((fd, _)) => fd,
        };
        let fd = if is_regular_file(&fd) {
            match file_writer(fd) {
                Ok(pipe) => return Sink::Fifo(pipe),
                Err((fd, e)) => {
                    // The daemon writes the file itself then, as it once always did.
                    log::warn!("terminal output to a file, written by the daemon: {e}");
                    fd
                }
            }
        } else {
            fd
        };
        let f = File::from(fd);
        // Direct writes must not fail with EAGAIN.
        let _ = clear_nonblocking(f.as_fd());
        Sink::File(f)
    }

    async fn write_all(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::File(f) => f.write_all(data),
            Sink::Fifo(a) => {
                while !data.is_empty() {
                    let mut ready = a.writable().await?;
                    match ready.try_io(|fd| {
                        nix::unistd::write(fd.get_ref(), data).map_err(std::io::Error::from)
                    }) {
                        Ok(Ok(n)) => data = &data[n..],
                        Ok(Err(e)) => return Err(e),
                        Err(_would_block) => continue,
                    }
                }
                Ok(())
            }
        }
    }
}

fn is_regular_file(fd: &OwnedFd) -> bool {
    nix::sys::stat::fstat(fd).is_ok_and(|st| {
        nix::sys::stat::SFlag::from_bits_truncate(st.st_mode)
            .contains(nix::sys::stat::SFlag::S_IFREG)
    })
}

/// A non-blocking pipe whose other end a forked helper copies into `file` (see `Sink`).
/// The helper ends at the pipe's end-of-file, once the daemon drops this end; output it
/// cannot write (a full disk) it reads and drops, so the process behind the terminal is
/// never blocked by a file it cannot see.
fn file_writer(file: OwnedFd) -> std::result::Result<AsyncFd<OwnedFd>, (OwnedFd, Error)> {
    let (rd, wr) = match nix::unistd::pipe2(OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => return Err((file, Error::io("pipe for terminal output", e))),
    };
    if let Err(e) = clear_nonblocking(file.as_fd()) {
        return Err((file, e));
    }
    let (from, to) = (rd.as_raw_fd(), file.as_raw_fd());
    let spawned = crate::runtime::forker::spawn_helper(&[from, to], move || {
        // SAFETY: both fds are open in the helper (kept by `spawn_helper`) and its own.
        let (from, mut to) = unsafe { (OwnedFd::from_raw_fd(from), File::from_raw_fd(to)) };
        let mut buf = vec![0u8; 32 << 10];
        let mut writable = true;
        loop {
            match nix::unistd::read(&from, &mut buf) {
                Ok(0) => return,
                Ok(n) if writable => writable = to.write_all(&buf[..n]).is_ok(),
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return,
            }
        }
    });
    if let Err(e) = spawned {
        return Err((file, e));
    }
    drop(rd);
    drop(file);
    if let Err(e) = set_nonblocking(&wr) {
        log::debug!("terminal output pipe: {e}");
    }
    pollable(wr).map_err(|(fd, e)| (fd, Error::io("register terminal output pipe", e)))
}

/// Registers `fd` with tokio's reactor, or gives it back with the reason it cannot be.
fn pollable(fd: OwnedFd) -> std::result::Result<AsyncFd<OwnedFd>, (OwnedFd, std::io::Error)> {
    // SAFETY: AsyncFd owns `fd` from here; it stays open and the same until dropped.
    unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts())
}

fn clear_nonblocking(fd: std::os::fd::BorrowedFd<'_>) -> Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags - OFlag::O_NONBLOCK))?;
    Ok(())
}

/// Copies the master's output to the sink until the terminal ends, or, once told the
/// process exited, until what is left in the terminal is copied. Dropping the sink when it
/// returns closes the client's fifo (its end-of-file).
async fn copy_out(
    master: Arc<AsyncFd<OwnedFd>>,
    mut sink: Sink,
    mut exited: watch::Receiver<bool>,
    _done: DoneOnDrop,
) {
    let mut buf = vec![0u8; 32 << 10];
    loop {
        let n = tokio::select! {
            r = read_async(&master, &mut buf) => match r {
                Ok(0) => return,
                Ok(n) => Some(n),
                // EIO: every slave fd is closed, the process is gone.
                Err(_) => return,
            },
            // Err: the drain handle is gone with the console; finish all the same.
            _ = exited.wait_for(|e| *e) => None,
        };
        let Some(n) = n else {
            copy_rest(&master, &mut sink, &mut buf).await;
            return;
        };
        if let Err(e) = sink.write_all(&buf[..n]).await {
            log::debug!("terminal output: {e}");
            return;
        }
    }
}

/// The process exited: copies what the terminal holds now. The kernel flushes pending
/// input before a master read reports EIO (slave closed) or EAGAIN (nothing more now, a
/// background process still holds the slave), so nothing the process wrote is left out.
async fn copy_rest(master: &AsyncFd<OwnedFd>, sink: &mut Sink, buf: &mut [u8]) {
    loop {
        let n = match nix::unistd::read(master.get_ref(), buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            // EAGAIN: all there is; EIO: the terminal's end.
            Err(_) => return,
        };
        if let Err(e) = sink.write_all(&buf[..n]).await {
            log::debug!("terminal output: {e}");
            return;
        }
    }
}

async fn copy_in(input: AsyncFd<OwnedFd>, master: Arc<AsyncFd<OwnedFd>>) {
    let mut buf = vec![0u8; 8 << 10];
    loop {
        let n = match read_async(&input, &mut buf).await {
            Ok(0) => {
                // Every writer is gone (the client's, and ours after CloseIO).
                let _ = write_async(&master, &[VEOF]).await;
                return;
            }
            Ok(n) => n,
            Err(_) => return,
        };
        if write_async(&master, &buf[..n]).await.is_err() {
            return;
        }
    }
}

async fn read_async(fd: &AsyncFd<OwnedFd>, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        let mut ready = fd.readable().await?;
        match ready.try_io(|f| nix::unistd::read(f.get_ref(), buf).map_err(std::io::Error::from)) {
            Ok(r) => return r,
            Err(_would_block) => continue,
        }
    }
}

async fn write_async(fd: &AsyncFd<OwnedFd>, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        let mut ready = fd.writable().await?;
        match ready.try_io(|f| nix::unistd::write(f.get_ref(), data).map_err(std::io::Error::from))
        {
            Ok(Ok(n)) => data = &data[n..],
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
    Ok(())
}
