//! Opening paths that containerd (or whoever can reach our socket) names, without hanging on
//! them or touching what they are not meant to be. A path is first opened with `O_PATH`,
//! which never blocks and has no side effect on a device (opening `/dev/watchdog` arms it,
//! a serial line waits for its carrier, a FIFO for its other end), its type is checked on
//! that handle, and only then is the same inode opened for I/O through
//! `/proc/self/fd/<n>`, so a rename in between cannot swap the checked file for another.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};

use crate::error::{Error, Result};

/// What a path must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Regular,
    Fifo,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Regular => "a regular file",
            Kind::Fifo => "a fifo",
        }
    }
}

fn describe(ft: std::fs::FileType) -> &'static str {
    if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a fifo"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_symlink() {
        "a symbolic link"
    } else if ft.is_file() {
        "a regular file"
    } else {
        "not a file"
    }
}

/// An open error as the caller should see it: a path that cannot be a file at all (too
/// long, a loop of links, a file used as a directory) is the caller's mistake and says so;
/// a missing one stays NotFound; anything else is an OS failure with the path named.
pub fn open_error(what: &str, path: &str, e: std::io::Error) -> Error {
    match e.raw_os_error() {
        // ENOENT too: a path containerd names (its fifos, a config file) must exist when it
        // names it; the request is what is wrong, and NotFound would say the task is.
        Some(
            libc::ENOENT
            | libc::ENAMETOOLONG
            | libc::ELOOP
            | libc::ENOTDIR
            | libc::EISDIR
            | libc::ENXIO,
        ) => Error::InvalidArgument(format!("{what} {path:?}: {e}")),
        _ => Error::io(format!("{what} {path:?}"), e),
    }
}

/// Opens `path`, which must be of `kind`, with `options` (their flags are used on the
/// re-open; `O_NONBLOCK` among them keeps a FIFO's open from waiting for its peer).
pub fn open_as(what: &str, path: &str, kind: Kind, options: &OpenOptions) -> Result<OwnedFd> {
    let handle = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| open_error(what, path, e))?;
    let ft = handle
        .metadata()
        .map_err(|e| Error::io(format!("{what} {path:?}: stat"), e))?
        .file_type();
    let ok = match kind {
        Kind::Regular => ft.is_file(),
        Kind::Fifo => ft.is_fifo(),
    };
    if !ok {
        return Err(Error::InvalidArgument(format!(
            "{what} {path:?} is {}, not {}",
            describe(ft),
            kind.name()
        )));
    }
    reopen(what, path, &handle, options)
}

fn reopen(what: &str, path: &str, handle: &File, options: &OpenOptions) -> Result<OwnedFd> {
    let proc_path = format!("/proc/self/fd/{}", handle.as_raw_fd());
    options
        .open(&proc_path)
        .map(OwnedFd::from)
        .map_err(|e| open_error(what, path, e))
}

/// Opens (or creates, mode 0644 as runc's shim does) the regular file at `path` for
/// appending. Never a FIFO, a device or a link to one, so it never waits for another
/// process (the daemon's one thread may call it).
pub fn append_regular(what: &str, path: &str) -> Result<OwnedFd> {
    let create = OpenOptions::new()
        .append(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path);
    match create {
        // Reopened, so the fd the process gets has no O_NOFOLLOW in its flags: CRIU reopens
        // a checkpointed stdio file with its recorded flags through /proc/<pid>/fd/N, a
        // link O_NOFOLLOW refuses (ELOOP), and the restore would fail.
        Ok(f) => reopen(
            what,
            path,
            &f,
            OpenOptions::new()
                .append(true)
                .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK),
        ),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => open_as(
            what,
            path,
            Kind::Regular,
            OpenOptions::new()
                .append(true)
                .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK),
        ),
        Err(e) => Err(open_error(what, path, e)),
    }
}

/// Reads the regular file at `path`, at most `limit` bytes (more is refused). Only a
/// regular file is read, so this never waits for another process.
pub fn read_regular(what: &str, path: &str, limit: u64) -> Result<Vec<u8>> {
    let fd = open_as(
        what,
        path,
        Kind::Regular,
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK),
    )?;
    let mut buf = Vec::new();
    File::from(fd)
        .take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io(format!("read {what} {path:?}"), e))?;
    if buf.len() as u64 > limit {
        return Err(Error::InvalidArgument(format!(
            "{what} {path:?} is larger than {limit} bytes"
        )));
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn tmpdir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("ysm-open-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn append_creates_then_appends() {
        let d = tmpdir("append");
        let p = d.join("log");
        let p = p.to_str().unwrap();
        File::from(append_regular("file", p).unwrap())
            .write_all(b"a")
            .unwrap();
        File::from(append_regular("file", p).unwrap())
            .write_all(b"b")
            .unwrap();
        assert_eq!(std::fs::read_to_string(p).unwrap(), "ab");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn fifos_devices_directories_and_links_to_them_are_refused_at_once() {
        let d = tmpdir("refuse");
        let fifo = d.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let link = d.join("link");
        std::os::unix::fs::symlink(&fifo, &link).unwrap();
        let dev_link = d.join("dev");
        std::os::unix::fs::symlink("/dev/null", &dev_link).unwrap();
        for p in [
            &fifo,
            &link,
            &dev_link,
            &d,
            &std::path::PathBuf::from("/dev/null"),
        ] {
            let p = p.to_str().unwrap();
            // A blocking open of the FIFO (no reader) would hang here.
            let e = append_regular("file", p).unwrap_err();
            assert_eq!(e.code(), ttrpc::Code::INVALID_ARGUMENT, "{p}: {e}");
            assert!(e.to_string().contains(p), "{e}");
            let e = read_regular("config", p, 10).unwrap_err();
            assert_eq!(e.code(), ttrpc::Code::INVALID_ARGUMENT, "{p}: {e}");
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn read_is_bounded() {
        let d = tmpdir("bounded");
        let p = d.join("big");
        std::fs::write(&p, vec![b'x'; 11]).unwrap();
        let p = p.to_str().unwrap();
        assert_eq!(read_regular("config", p, 11).unwrap().len(), 11);
        let e = read_regular("config", p, 10).unwrap_err();
        assert_eq!(e.code(), ttrpc::Code::INVALID_ARGUMENT);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_name_too_long_is_the_callers_mistake() {
        let long = format!("/tmp/{}", "x".repeat(300));
        let e = append_regular("file", &long).unwrap_err();
        assert_eq!(e.code(), ttrpc::Code::INVALID_ARGUMENT, "{e}");
        let e = open_as("fifo", &long, Kind::Fifo, OpenOptions::new().read(true)).unwrap_err();
        assert_eq!(e.code(), ttrpc::Code::INVALID_ARGUMENT, "{e}");
    }
}
