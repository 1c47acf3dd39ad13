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
//! The daemon seals itself at start, before it has threads or containers, and re-executes
//! itself with the same arguments, environment and fds (the listener on fd 3) from either:
//! - the binary seen through a private, detached, read-only overlayfs whose only layers are
//!   the binary's directory and an empty one (no upper layer: nothing in it can be written,
//!   and unlike a read-only bind mount it cannot be remounted writable). No copy: the pages
//!   are the file's, shared by every shim. Needs Linux 5.2 (fsopen) and overlayfs.
//! - else a memfd copy of the binary with every write seal set. It costs the binary's size
//!   in memory per daemon (one daemon per pod) and about ten milliseconds at its start.
//!
//! The re-executed daemon finds `SEALED_ENV` set (and drops it): it re-executes once only.

use std::convert::Infallible;
use std::ffi::{CString, OsString};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use crate::error::{Error, Result};

/// memfd_create's flag for an executable memfd (Linux 6.3+; older kernels refuse it, and
/// their memfds are executable anyway).
const MFD_EXEC: libc::c_uint = 0x0010;
/// The seals that make the copy immutable: no write, no resize, no more seal changes.
const SEALS: libc::c_int =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
/// Its name in `/proc/<pid>/exe` ("/memfd:containerd-shim-youki-v2 (deleted)").
const NAME: &std::ffi::CStr = c"containerd-shim-youki-v2";
/// Set for the re-executed daemon: it runs from a sealed view already (`start` removes it
/// from the daemon's environment, so only our own re-exec sets it).
pub const SEALED_ENV: &str = "YOUKI_SHIM_EXE_SEALED";

// The new mount API (linux/mount.h), which libc does not name.
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOUNT_ATTR_RDONLY: libc::c_uint = 1;
const MOUNT_ATTR_NOSUID: libc::c_uint = 2;
const MOUNT_ATTR_NODEV: libc::c_uint = 4;
const OVERLAYFS_SUPER_MAGIC: i64 = 0x794c7630;

/// True if this process runs from a sealed copy or a read-only overlay view.
pub fn is_sealed() -> bool {
    File::open("/proc/self/exe").is_ok_and(|f| has_seals(&f) || is_read_only_overlay(&f))
}

fn is_read_only_overlay(f: &File) -> bool {
    // SAFETY: fstatfs and fstatvfs fill zeroed structs for an fd we own.
    unsafe {
        let mut fs: libc::statfs = std::mem::zeroed();
        let mut vfs: libc::statvfs = std::mem::zeroed();
        libc::fstatfs(f.as_raw_fd(), &mut fs) == 0
            && fs.f_type as i64 == OVERLAYFS_SUPER_MAGIC
            && libc::fstatvfs(f.as_raw_fd(), &mut vfs) == 0
            && vfs.f_flag & libc::ST_RDONLY != 0
    }
}

fn has_seals(f: &File) -> bool {
    // SAFETY: F_GET_SEALS reads an int from an fd we own; EINVAL for a file that is not a
    // memfd (a regular file on disk).
    let seals = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GET_SEALS) };
    seals >= 0 && seals & SEALS == SEALS
}

/// Re-executes the daemon from a sealed view of its binary, unless it runs from one
/// already. Returns only if it does, or on failure (the caller decides what failure means).
/// Must be called while the process has a single thread.
pub fn reexec_from_sealed_copy() -> Result<()> {
    if std::env::var_os(SEALED_ENV).is_some() {
        // SAFETY: the daemon has a single thread here (the caller's contract).
        unsafe { std::env::remove_var(SEALED_ENV) };
        // Re-executed once already: never again (no loop), but say if it did not work.
        return if is_sealed() {
            Ok(())
        } else {
            Err(Error::Internal(
                "re-executed, yet /proc/self/exe is neither a sealed memfd nor read-only".into(),
            ))
        };
    }
    let mut exe = File::open("/proc/self/exe").map_err(|e| Error::io("open /proc/self/exe", e))?;
    if has_seals(&exe) {
        return Ok(());
    }
    // Each returns only if its view could not be made or executed.
    let why = |r: Result<Infallible>| match r {
        Ok(never) => match never {},
        Err(e) => e.to_string(),
    };
    let overlay = why(overlay_view().and_then(|view| exec_fd(&view)));
    let memfd = why(sealed_copy(&mut exe).and_then(|copy| exec_fd(&copy.into())));
    Err(Error::Internal(format!(
        "no read-only overlay ({overlay}), no sealed memfd ({memfd})"
    )))
}

/// An `O_PATH` fd of the binary as a private, read-only overlayfs shows it: lower layers
/// the binary's directory and an empty directory (overlayfs wants two to mount without an
/// upper layer), mounted nowhere, so the fd is the only way in. The empty directory is
/// removed at once: the overlay keeps what it needs of it.
fn overlay_view() -> Result<OwnedFd> {
    let real = std::fs::read_link("/proc/self/exe")
        .map_err(|e| Error::io("readlink /proc/self/exe", e))?;
    let (Some(dir), Some(name)) = (real.parent(), real.file_name()) else {
        return Err(Error::Internal(format!(
            "odd executable path {}",
            real.display()
        )));
    };
    if !real.is_absolute() || real.to_string_lossy().ends_with(" (deleted)") {
        return Err(Error::Internal(format!(
            "executable {} is not on disk",
            real.display()
        )));
    }
    let empty = tempdir()?;
    let result = mount_lower_only(dir, &empty).and_then(|mnt| {
        let name = CString::new(name.as_bytes())
            .map_err(|e| Error::Internal(format!("executable name: {e}")))?;
        // SAFETY: openat on the detached mount's fd with a NUL-terminated name.
        let fd = unsafe {
            libc::openat(
                mnt.as_raw_fd(),
                name.as_ptr(),
                libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(Error::io(
                "open the binary in the overlay",
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: the kernel just gave us this fd.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    });
    let _ = std::fs::remove_dir(&empty);
    result
}

/// A fresh empty directory (0700) for the overlay's second layer.
fn tempdir() -> Result<std::path::PathBuf> {
    let mut template = std::env::temp_dir()
        .join(".youki-shim-exe-XXXXXX")
        .into_os_string()
        .into_vec();
    template.push(0);
    // SAFETY: mkdtemp rewrites the NUL-terminated template in place.
    let p = unsafe { libc::mkdtemp(template.as_mut_ptr().cast()) };
    if p.is_null() {
        return Err(Error::io("mkdtemp", std::io::Error::last_os_error()));
    }
    template.pop();
    Ok(std::path::PathBuf::from(OsString::from_vec(template)))
}

/// overlayfs's lowerdir syntax: `:` separates layers, `\` escapes.
fn escape_layer(p: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in p.as_os_str().as_bytes() {
        if b == b':' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

/// fsopen/fsconfig/fsmount: a detached, read-only, nosuid, nodev overlay of two lower
/// layers, `top` above `empty`.
fn mount_lower_only(top: &Path, empty: &Path) -> Result<OwnedFd> {
    let sys = |what: &str, r: libc::c_long| -> Result<libc::c_long> {
        if r < 0 {
            Err(Error::io(what.to_string(), std::io::Error::last_os_error()))
        } else {
            Ok(r)
        }
    };
    // SAFETY: fsopen takes a NUL-terminated filesystem name and flags.
    let ctx = sys("fsopen overlay", unsafe {
        libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), FSOPEN_CLOEXEC)
    })?;
    // SAFETY: the kernel just gave us this fd.
    let ctx = unsafe { OwnedFd::from_raw_fd(ctx as RawFd) };
    let mut lower = escape_layer(top);
    lower.push(b':');
    lower.extend(escape_layer(empty));
    let lower = CString::new(lower).map_err(|e| Error::Internal(format!("lowerdir: {e}")))?;
    let set = |key: &std::ffi::CStr, value: &std::ffi::CStr| {
        // SAFETY: fsconfig with NUL-terminated key and value on our context fd.
        unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                ctx.as_raw_fd(),
                FSCONFIG_SET_STRING,
                key.as_ptr(),
                value.as_ptr(),
                0,
            )
        }
    };
    sys("fsconfig lowerdir", set(c"lowerdir", &lower))?;
    // Only to keep dmesg quiet when the layers are on different filesystems.
    let _ = set(c"xino", c"off");
    // SAFETY: fsconfig's create command takes no key or value.
    sys("fsconfig create overlay", unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            ctx.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_char>(),
            0,
        )
    })?;
    // SAFETY: fsmount on our context fd with plain flag bits.
    let mnt = sys("fsmount overlay", unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            ctx.as_raw_fd(),
            FSMOUNT_CLOEXEC,
            MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        )
    })?;
    // SAFETY: the kernel just gave us this fd.
    Ok(unsafe { OwnedFd::from_raw_fd(mnt as RawFd) })
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
/// environment, plus `SEALED_ENV`. The fd is close-on-exec: the kernel holds the file by
/// then, and the new image keeps no fd of it.
fn exec_fd(view: &OwnedFd) -> Result<Infallible> {
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
            .chain([OsString::from(format!("{SEALED_ENV}=1"))])
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
            view.as_raw_fd(),
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

    #[test]
    fn the_overlay_view_is_the_binary_and_read_only() {
        let original = std::fs::read("/proc/self/exe").unwrap();
        let host = std::fs::metadata("/proc/self/exe").unwrap();
        let view = match overlay_view() {
            Ok(v) => v,
            // Not root, or no overlayfs: the memfd copy stands in (tested above).
            Err(e) => return eprintln!("no overlay view here: {e}"),
        };
        let through = format!("/proc/self/fd/{}", view.as_raw_fd());
        assert!(
            std::fs::read(&through).unwrap() == original,
            "the view shows the binary"
        );
        let seen = std::fs::metadata(&through).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_ne!(
            (seen.dev(), seen.ino()),
            (host.dev(), host.ino()),
            "not the host's inode"
        );
        let w = std::fs::OpenOptions::new().write(true).open(&through);
        assert_eq!(
            w.err().and_then(|e| e.raw_os_error()),
            Some(libc::EROFS),
            "a reopening for writing is refused"
        );
        assert!(is_read_only_overlay(&File::open(&through).unwrap()));
        assert!(!is_read_only_overlay(
            &File::open("/proc/self/exe").unwrap()
        ));
    }
}
