//! The daemon runs from a sealed in-memory copy of its binary, never from the file on disk
//! (CVE-2019-5736). Container inits and execs are clones of the daemon (a forked worker,
//! then libcontainer's clones) until they exec the user's program, so their
//! `/proc/<pid>/exe` is the daemon's executable. An entrypoint `#!/proc/self/exe` makes the
//! kernel run that executable inside the container, with the container's loader and
//! libraries, as a dumpable process of the container's user: any process of the container
//! may then open it through `/proc/<pid>/exe`, keep the fd, and reopen it for writing
//! (`/proc/self/fd/N`) once no shim of that binary runs (ETXTBSY ends), or write it after an
//! in-place upgrade. Run from a memfd with every write seal set, that executable is a copy
//! nothing can change, and no path leads from a container to the host's file.
//!
//! The daemon seals itself at start, before it has threads or containers: it copies
//! `/proc/self/exe` into a memfd, seals it and re-executes itself from it with the same
//! arguments, environment and fds (the listener on fd 3). The copy costs the binary's size
//! in memory per daemon (one daemon per pod) and a few milliseconds at its start.

use std::ffi::{CString, OsString};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStringExt;

use crate::error::{Error, Result};

/// memfd_create's flag for an executable memfd (Linux 6.3+; older kernels refuse it, and
/// their memfds are executable anyway).
const MFD_EXEC: libc::c_uint = 0x0010;
/// The seals that make the copy immutable: no write, no resize, no more seal changes.
const SEALS: libc::c_int =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
/// Its name in `/proc/<pid>/exe` ("/memfd:containerd-shim-youki-v2 (deleted)").
const NAME: &std::ffi::CStr = c"containerd-shim-youki-v2";

/// True if this process runs from a sealed copy already.
pub fn is_sealed() -> bool {
    File::open("/proc/self/exe").is_ok_and(|f| has_seals(&f))
}

fn has_seals(f: &File) -> bool {
    // SAFETY: F_GET_SEALS reads an int from an fd we own; EINVAL for a file that is not a
    // memfd (a regular file on disk).
    let seals = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GET_SEALS) };
    seals >= 0 && seals & SEALS == SEALS
}

/// Re-executes the daemon from a sealed copy of its binary, unless it runs from one
/// already. Returns only if it does, or on failure (the caller decides what failure means).
/// Must be called while the process has a single thread.
pub fn reexec_from_sealed_copy() -> Result<()> {
    let mut exe = File::open("/proc/self/exe").map_err(|e| Error::io("open /proc/self/exe", e))?;
    if has_seals(&exe) {
        return Ok(());
    }
    let mut copy = sealed_copy(&mut exe)?;
    drop(exe);
    exec_fd(&mut copy)
}

/// A memfd holding the binary, sealed against any change.
fn sealed_copy(exe: &mut File) -> Result<File> {
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // SAFETY: NAME is NUL-terminated; the flags are plain bits.
    let mut fd = unsafe { libc::memfd_create(NAME.as_ptr(), flags | MFD_EXEC) };
    if fd < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        // SAFETY: as above, without the flag a kernel before 6.3 does not know.
        fd = unsafe { libc::memfd_create(NAME.as_ptr(), flags) };
    }
    if fd < 0 {
        return Err(Error::io("memfd_create", std::io::Error::last_os_error()));
    }
    // SAFETY: the kernel just gave us this fd; the File owns it from here.
    let mut copy = unsafe { File::from_raw_fd(fd) };
    let len = exe
        .metadata()
        .map_err(|e| Error::io("stat /proc/self/exe", e))?
        .len();
    copy.set_len(len)
        .map_err(|e| Error::io("size the binary's copy", e))?;
    // std::io::copy uses copy_file_range/sendfile where the kernel allows.
    let n = std::io::copy(exe, &mut copy).map_err(|e| Error::io("copy the binary", e))?;
    if n != len {
        return Err(Error::Internal(format!(
            "copied {n} bytes of a {len}-byte binary"
        )));
    }
    // SAFETY: F_ADD_SEALS takes an int of seal bits on an fd we own.
    if unsafe { libc::fcntl(copy.as_raw_fd(), libc::F_ADD_SEALS, SEALS) } < 0 {
        return Err(Error::io(
            "seal the binary's copy",
            std::io::Error::last_os_error(),
        ));
    }
    // Linux 6.3+ also lets us forbid chmod of the exec bits; older kernels lack the seal.
    // SAFETY: as above.
    unsafe { libc::fcntl(copy.as_raw_fd(), libc::F_ADD_SEALS, libc::F_SEAL_EXEC) };
    Ok(copy)
}

/// execveat(fd, "", argv, environ, AT_EMPTY_PATH) with this process's own arguments and
/// environment. The memfd is close-on-exec: the kernel holds the file by then, and the new
/// image keeps no fd of it.
fn exec_fd(copy: &mut File) -> Result<()> {
    let cstrings = |v: Vec<OsString>| -> Result<Vec<CString>> {
        v.into_iter()
            .map(|s| {
                CString::new(s.into_vec())
                    .map_err(|e| Error::Internal(format!("argument with a NUL byte: {e}")))
            })
            .collect()
    };
    let argv = cstrings(std::env::args_os().collect())?;
    let envp = cstrings(
        std::env::vars_os()
            .map(|(k, v)| {
                let mut kv = k;
                kv.push("=");
                kv.push(v);
                kv
            })
            .collect(),
    )?;
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut envp_p: Vec<*const libc::c_char> = envp.iter().map(|e| e.as_ptr()).collect();
    envp_p.push(std::ptr::null());
    // SAFETY: NUL-terminated arrays of pointers into CStrings alive for the call; on
    // success the call does not return.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            copy.as_raw_fd(),
            c"".as_ptr(),
            argv_p.as_ptr(),
            envp_p.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    Err(Error::io(
        "execute the binary's sealed copy",
        std::io::Error::last_os_error(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn the_copy_is_the_binary_and_cannot_be_changed() {
        let mut exe = File::open("/proc/self/exe").unwrap();
        let mut original = Vec::new();
        exe.read_to_end(&mut original).unwrap();
        let mut exe = File::open("/proc/self/exe").unwrap();
        let mut copy = sealed_copy(&mut exe).unwrap();
        assert!(has_seals(&copy));
        assert!(!has_seals(&exe), "a file on disk carries no seals");
        let mut read = Vec::new();
        std::fs::File::open(format!("/proc/self/fd/{}", copy.as_raw_fd()))
            .unwrap()
            .read_to_end(&mut read)
            .unwrap();
        assert!(read == original, "the copy holds the binary");
        // Neither the fd we hold nor a reopening through /proc (what a container would
        // try) can write, grow or shrink it.
        assert!(copy.write_all(b"x").is_err());
        assert!(copy.set_len(1).is_err());
        assert!(copy.set_len(original.len() as u64 + 1).is_err());
        let reopened = std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/proc/self/fd/{}", copy.as_raw_fd()));
        if let Ok(mut w) = reopened {
            assert!(w.write_all(b"x").is_err());
        }
        // SAFETY: F_ADD_SEALS on an fd we own; F_SEAL_SEAL must refuse any change.
        let removed = unsafe { libc::fcntl(copy.as_raw_fd(), libc::F_ADD_SEALS, 0) };
        assert!(removed < 0, "F_SEAL_SEAL refuses further seals");
    }
}
