//! A container's stdio. containerd hands us fifo paths (or `file://` URIs); we open them here,
//! in the daemon, and the container gets the fds directly: no copy loop, no thread per stream.
//!
//! For each output fifo the daemon also holds a read end, so a container never dies of
//! SIGPIPE while containerd restarts and reopens the fifo. For stdin the daemon holds a write
//! end, so the container sees EOF only when containerd says so (CloseIO), not when the
//! client has not attached yet.

pub mod log_binary;
pub mod owner;
pub mod tty;

use std::fs::OpenOptions;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;

use nix::fcntl::{FcntlArg, OFlag, fcntl};

use crate::error::{Error, Result};
use crate::safe_open::{self, Kind};
use log_binary::Logger;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StdioPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// The three fds the container starts with.
pub struct ChildStdio {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// How the process gets its stdio: fds the daemon opened, or a terminal whose master the
/// init sends back over the console socket at this path.
pub enum ChildIo {
    Fds(ChildStdio),
    Console(std::path::PathBuf),
}

/// What the daemon keeps open for the container's lifetime (see the module comment).
#[derive(Default)]
pub struct Keepalive {
    stdin_writer: Option<OwnedFd>,
    _readers: Vec<OwnedFd>,
    /// A `binary://` logger: kept until Delete, so it can drain what the process wrote.
    logger: Option<Logger>,
}

impl Keepalive {
    /// CloseIO: the client is done writing; let the container see EOF.
    pub fn close_stdin(&mut self) {
        self.stdin_writer = None;
    }

    /// The process exited: our fifo ends have done their job. A logger stays until Delete.
    pub fn release_fifos(&mut self) {
        self.stdin_writer = None;
        self._readers.clear();
    }
}

/// The process's outputs: stdout and stderr fds, plus what keeps them working.
async fn open_outputs(
    paths: &StdioPaths,
    container_id: &str,
    namespace: &str,
    keep: &mut Keepalive,
) -> Result<(OwnedFd, OwnedFd)> {
    // containerd sends the same binary URI for both streams; one logger takes both.
    if let Some(uri) = log_binary::parse(&paths.stdout) {
        let (out, err, logger) = log_binary::start(&uri?, container_id, namespace).await?;
        keep.logger = Some(logger);
        return Ok((out, err));
    }
    if log_binary::parse(&paths.stderr).is_some() {
        return Err(Error::InvalidArgument(format!(
            "stderr {:?} is a logger URI but stdout {:?} is not",
            paths.stderr, paths.stdout
        )));
    }
    Ok((
        open_output(&paths.stdout, keep).await?,
        open_output(&paths.stderr, keep).await?,
    ))
}

/// A terminal's one output stream: stdout, or a logger's stdout for `binary://`. A
/// terminal has no stderr, and containerd's client names a stderr fifo it never creates
/// (`cio.NewFIFOSetInDir` sets the path, only a non-terminal opens it): never touch it.
pub async fn open_terminal_output(
    paths: &StdioPaths,
    container_id: &str,
    namespace: &str,
    keep: &mut Keepalive,
) -> Result<OwnedFd> {
    if let Some(uri) = log_binary::parse(&paths.stdout) {
        // The logger's stderr pipe is closed at once: it reads end-of-file there.
        let (out, _err, logger) = log_binary::start(&uri?, container_id, namespace).await?;
        keep.logger = Some(logger);
        return Ok(out);
    }
    open_output(&paths.stdout, keep).await
}

/// Where a stdio URI points (public for the fuzz targets).
#[derive(Debug)]
pub enum Target {
    Null,
    Fifo(String),
    File(String),
}

/// Longest stdio path we try to open: the kernel's PATH_MAX, NUL included.
const PATH_MAX: usize = 4096;

pub fn target(uri: &str) -> Result<Target> {
    if uri.is_empty() {
        return Ok(Target::Null);
    }
    if uri.len() >= PATH_MAX + "file://".len() || uri.contains('\0') {
        return Err(Error::InvalidArgument(format!(
            "stdio path {:?}: not a path (longer than {PATH_MAX} bytes or contains NUL)",
            crate::error::preview(uri)
        )));
    }
    if let Some(rest) = uri.strip_prefix("file://") {
        return Ok(Target::File(file_uri_path(uri, rest)?));
    }
    if let Some((scheme, _)) = uri.split_once("://") {
        return Err(Error::InvalidArgument(format!(
            "unknown stdio URI scheme {scheme:?} in {uri:?} (fifo paths, file://, binary:// and binary-v2:// are supported)"
        )));
    }
    if !uri.starts_with('/') {
        return Err(Error::InvalidArgument(format!(
            "stdio path {uri:?} is not absolute"
        )));
    }
    Ok(Target::Fifo(uri.to_string()))
}

/// The path of a `file://` URI as Go's url.Parse gives runc's shim its `Path`: no host,
/// query and fragment cut off, percent-escapes decoded.
fn file_uri_path(uri: &str, rest: &str) -> Result<String> {
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    let path = &rest[..end];
    if !path.starts_with('/') {
        return Err(Error::InvalidArgument(format!(
            "stdio URI {uri:?}: want file:///absolute/path"
        )));
    }
    let decoded = percent_decode(path)
        .filter(|p| !p.contains('\0'))
        .ok_or_else(|| {
            Error::InvalidArgument(format!("stdio URI {uri:?}: bad percent-encoding"))
        })?;
    Ok(decoded)
}

/// `%XX` escapes decoded; `None` for a malformed escape or bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            // Two hex digits exactly: from_str_radix alone would take "+f".
            let hex = b.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn open(path: &str, read: bool, write: bool, flags: i32) -> Result<OwnedFd> {
    OpenOptions::new()
        .read(read)
        .write(write)
        .custom_flags(flags)
        .open(path)
        .map(OwnedFd::from)
        .map_err(|e| Error::io(format!("open {path}"), e))
}

fn null(write: bool) -> Result<OwnedFd> {
    open("/dev/null", !write, write, 0)
}

fn clear_nonblock(fd: &OwnedFd) -> Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags - OFlag::O_NONBLOCK))?;
    Ok(())
}

/// One end of the FIFO at `path`, which must be a FIFO (as containerd's fifo package
/// insists): anything else, a device above all, is never opened for I/O.
fn open_fifo(path: &str, read: bool, write: bool, flags: i32) -> Result<OwnedFd> {
    safe_open::open_as(
        "stdio fifo",
        path,
        Kind::Fifo,
        OpenOptions::new()
            .read(read)
            .write(write)
            .custom_flags(flags | libc::O_CLOEXEC),
    )
}

/// Opens an output stream. Nothing here waits for another process: the daemon has one
/// thread (see `runtime::forker`), so a FIFO or device named as a `file://` target, or a
/// FIFO whose reader never comes, must be refused or opened without blocking.
pub async fn open_output(uri: &str, keep: &mut Keepalive) -> Result<OwnedFd> {
    match target(uri)? {
        Target::Null => null(true),
        Target::File(path) => {
            if let Some(dir) = std::path::Path::new(&path).parent() {
                std::fs::create_dir_all(dir).map_err(|e| {
                    safe_open::open_error("stdio file directory", &dir.to_string_lossy(), e)
                })?;
            }
            let fd = safe_open::append_regular("stdio file", &path)?;
            clear_nonblock(&fd)?;
            Ok(fd)
        }
        Target::Fifo(path) => {
            // Our reader first: a non-blocking read open never waits, and with a reader
            // present the write open below returns at once.
            let reader = open_fifo(&path, true, false, libc::O_NONBLOCK)?;
            let writer = open_fifo(&path, false, true, libc::O_NONBLOCK)?;
            clear_nonblock(&writer)?;
            keep._readers.push(reader);
            Ok(writer)
        }
    }
}

pub fn open_input(uri: &str, keep: &mut Keepalive) -> Result<OwnedFd> {
    match target(uri)? {
        Target::Null => null(false),
        // A regular file's open and reads never wait; anything else is refused unopened.
        Target::File(path) => {
            let fd = safe_open::open_as(
                "stdio file",
                &path,
                Kind::Regular,
                OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK),
            )?;
            clear_nonblock(&fd)?;
            Ok(fd)
        }
        Target::Fifo(path) => {
            let reader = open_fifo(&path, true, false, libc::O_NONBLOCK)?;
            clear_nonblock(&reader)?;
            keep.stdin_writer = Some(open_fifo(&path, false, true, libc::O_NONBLOCK)?);
            Ok(reader)
        }
    }
}

/// Opens the container's stdio (not a terminal's: that goes through a console socket).
pub async fn open_stdio(
    paths: &StdioPaths,
    container_id: &str,
    namespace: &str,
) -> Result<(ChildStdio, Keepalive)> {
    let mut keep = Keepalive::default();
    let stdin = open_input(&paths.stdin, &mut keep)?;
    let (stdout, stderr) = open_outputs(paths, container_id, namespace, &mut keep).await?;
    Ok((
        ChildStdio {
            stdin,
            stdout,
            stderr,
        },
        keep,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::io::{Read, Write};

    fn tmpdir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("ysm-io-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[tokio::test]
    async fn stdout_fifo_reaches_a_late_reader_and_never_sigpipes() {
        let d = tmpdir("out");
        let p = d.join("stdout");
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let paths = StdioPaths {
            stdout: p.to_string_lossy().into(),
            ..Default::default()
        };
        let (child, keep) = open_stdio(&paths, "c1", "ns").await.unwrap();
        // No client reader yet: the write still succeeds because the daemon holds a reader.
        let mut w = File::from(child.stdout);
        w.write_all(b"hello\n").unwrap();
        // The client attaches late (non-blocking, as containerd's fifo package does).
        let mut r = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&p)
            .unwrap();
        drop(w);
        drop(keep);
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello\n");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[tokio::test]
    async fn stdin_eof_only_after_close() {
        let d = tmpdir("in");
        let p = d.join("stdin");
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let paths = StdioPaths {
            stdin: p.to_string_lossy().into(),
            ..Default::default()
        };
        let (child, mut keep) = open_stdio(&paths, "c1", "ns").await.unwrap();
        let mut client = OpenOptions::new().write(true).open(&p).unwrap();
        client.write_all(b"x").unwrap();
        drop(client);
        keep.close_stdin();
        let mut s = String::new();
        File::from(child.stdin).read_to_string(&mut s).unwrap();
        assert_eq!(s, "x");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[tokio::test]
    async fn a_terminal_never_opens_stderr() {
        let d = tmpdir("tty");
        let out = d.join("stdout");
        nix::unistd::mkfifo(&out, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // As containerd's client sends it with a terminal: a stderr path, no fifo there.
        let paths = StdioPaths {
            stdout: out.to_string_lossy().into(),
            stderr: d.join("stderr").to_string_lossy().into(),
            terminal: true,
            ..Default::default()
        };
        let mut keep = Keepalive::default();
        let w = open_terminal_output(&paths, "c1", "ns", &mut keep)
            .await
            .unwrap();
        File::from(w).write_all(b"x").unwrap();
        assert!(!d.join("stderr").exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[tokio::test]
    async fn unknown_scheme_and_relative_paths_are_refused() {
        let bad = StdioPaths {
            stdout: "syslog://host/x".into(),
            ..Default::default()
        };
        let e = open_stdio(&bad, "c1", "ns").await.err().unwrap();
        assert_eq!(e.code(), ttrpc::Code::INVALID_ARGUMENT);
        assert!(e.to_string().contains("syslog://host/x"), "{e}");
        let rel = StdioPaths {
            stdout: "relative/fifo".into(),
            ..Default::default()
        };
        let e = open_stdio(&rel, "c1", "ns").await.err().unwrap();
        assert!(e.to_string().contains("relative/fifo"));
    }
}
