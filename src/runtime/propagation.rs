//! Mount propagation from the OCI spec, which libcontainer 0.7 handles only in part:
//!
//! - `linux.rootfsPropagation`: libcontainer knows only `shared`, `slave`, `private` and
//!   `unbindable` (each applied recursively to the container's `/` before its mounts are made)
//!   and fails "failed to prepare rootfs" on the `rshared`/`rslave` that containerd's CRI
//!   sets for Bidirectional and HostToContainer volumes. The shim rewrites the value in the
//!   bundle's config.json to libcontainer's name for the same flags before it reads the spec.
//! - per-mount `rshared`/`rslave`/`rprivate`/...: libcontainer parses them but never applies
//!   them (its open_tree/move_mount path sets no propagation), so a CRI Private volume stays
//!   whatever the clone of the host mount was (with the default `rslave` root, a slave: host
//!   mounts leak in). The shim applies them, in the container's mount namespace, once
//!   libcontainer has built the container and before its process starts, in spec order and
//!   in option order (what runc does right after each mount).

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork, pipe2};
use serde_json::Value;

use crate::error::{Error, Result};

/// The propagation flags a mount option stands for, as mount(8) spells them.
pub fn flag(option: &str) -> Option<MsFlags> {
    Some(match option {
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => return None,
    })
}

/// libcontainer's name for a `linux.rootfsPropagation` value. It applies every name
/// recursively, so `rshared` is its `shared`, and so on; `None` means "leave the field out"
/// (libcontainer's default, `rslave`, like runc's).
fn libcontainer_root_propagation(value: &str) -> Result<Option<&'static str>> {
    Ok(Some(match value {
        "" => return Ok(None),
        "shared" | "rshared" => "shared",
        "slave" | "rslave" => "slave",
        "private" | "rprivate" => "private",
        "unbindable" | "runbindable" => "unbindable",
        other => {
            return Err(Error::InvalidArgument(format!(
                "linux.rootfsPropagation {other:?} is not one of shared, rshared, slave, rslave, \
                 private, rprivate, unbindable, runbindable"
            )));
        }
    }))
}

/// One mount's propagation changes, applied at its destination inside the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountPropagation {
    pub destination: PathBuf,
    /// In option order, one mount(2) call each.
    pub options: Vec<(String, MsFlags)>,
}

/// Reads the bundle's config.json, rewrites `linux.rootfsPropagation` into the name
/// libcontainer understands (only when it differs: the file is containerd's), and returns
/// the per-mount propagation to apply with [`apply`] once the container is built.
/// A value nobody knows is InvalidArgument, before anything was mounted or created.
pub fn prepare(bundle: &Path) -> Result<Vec<MountPropagation>> {
    let path = bundle.join("config.json");
    let raw = std::fs::read(&path).map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    let mut spec: Value = serde_json::from_slice(&raw)
        .map_err(|e| Error::InvalidArgument(format!("{}: {e}", path.display())))?;
    let mounts = per_mount(&spec)?;
    if rewrite_root_propagation(&mut spec)? {
        let json = serde_json::to_vec(&spec)
            .map_err(|e| Error::Internal(format!("encode {}: {e}", path.display())))?;
        // A reader never sees half a file: write aside, then rename over it.
        let tmp = bundle.join(".config.json.youki");
        std::fs::write(&tmp, json).map_err(|e| Error::io(format!("write {}", tmp.display()), e))?;
        std::fs::rename(&tmp, &path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::io(format!("replace {}", path.display()), e)
        })?;
    }
    Ok(mounts)
}

/// Translates `linux.rootfsPropagation` in place; true if the spec changed.
fn rewrite_root_propagation(spec: &mut Value) -> Result<bool> {
    let Some(linux) = spec.get_mut("linux").and_then(Value::as_object_mut) else {
        return Ok(false);
    };
    let value = match linux.get("rootfsPropagation") {
        None | Some(Value::Null) => return Ok(false),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(Error::InvalidArgument(format!(
                "linux.rootfsPropagation {other} is not a string"
            )));
        }
    };
    match libcontainer_root_propagation(&value)? {
        Some(name) if name == value => Ok(false),
        Some(name) => {
            linux.insert("rootfsPropagation".into(), Value::String(name.into()));
            Ok(true)
        }
        None => {
            linux.remove("rootfsPropagation");
            Ok(true)
        }
    }
}

/// Every mount with propagation options, in spec order.
fn per_mount(spec: &Value) -> Result<Vec<MountPropagation>> {
    let Some(mounts) = spec.get("mounts").and_then(Value::as_array) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for m in mounts {
        let options: Vec<(String, MsFlags)> = m
            .get("options")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter_map(|o| flag(o).map(|f| (o.to_string(), f)))
            .collect();
        if options.is_empty() {
            continue;
        }
        let destination = m
            .get("destination")
            .and_then(Value::as_str)
            .filter(|d| d.starts_with('/'))
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "mount {m} has propagation options but no absolute destination"
                ))
            })?;
        out.push(MountPropagation {
            destination: destination.into(),
            options,
        });
    }
    Ok(out)
}

/// Applies `mounts` inside the mount namespace of `pid` (the container's init, waiting for
/// Start), where the destinations are paths under the container's root.
///
/// A forked child does it: setns into a mount namespace also moves the caller's root and
/// working directory there, and the worker must stay on the host's (a failed create is
/// cleaned up from there). The child makes syscalls only and reports a failure as
/// (mount index, errno) through a pipe.
pub fn apply(pid: i32, mounts: &[MountPropagation]) -> Result<()> {
    if mounts.is_empty() {
        return Ok(());
    }
    let own = open_mnt_ns("self")?;
    let theirs = open_mnt_ns(&pid.to_string())?;
    if same_file(&own, &theirs)? {
        // No mount namespace of its own: its mounts are the host's, and a propagation
        // change on them would be a change to the host. Nothing to do for the container.
        log::warn!(
            "container init {pid} shares the shim's mount namespace: mount propagation options ignored"
        );
        return Ok(());
    }
    let targets: Vec<(std::ffi::CString, libc::c_ulong)> = mounts
        .iter()
        .flat_map(|m| {
            m.options
                .iter()
                .map(move |(_, f)| (m.destination.as_os_str(), f.bits() as libc::c_ulong))
        })
        .map(|(d, f)| {
            std::ffi::CString::new(d.as_bytes())
                .map(|c| (c, f))
                .map_err(|_| Error::InvalidArgument(format!("mount destination {d:?} has a NUL")))
        })
        .collect::<Result<_>>()?;
    let (rd, wr) = pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::io("pipe for mount propagation", e))?;
    // SAFETY: the child makes only async-signal-safe calls (setns, mount, write, _exit)
    // on data prepared before the fork.
    match unsafe { fork() }.map_err(|e| Error::io("fork for mount propagation", e))? {
        ForkResult::Child => {
            drop(rd);
            // SAFETY: plain syscalls on valid fds and NUL-terminated strings.
            unsafe {
                if libc::setns(theirs.as_raw_fd(), libc::CLONE_NEWNS) != 0 {
                    report(&wr, u32::MAX);
                }
                for (i, (dest, flags)) in targets.iter().enumerate() {
                    if libc::mount(
                        std::ptr::null(),
                        dest.as_ptr(),
                        std::ptr::null(),
                        *flags,
                        std::ptr::null(),
                    ) != 0
                    {
                        report(&wr, i as u32);
                    }
                }
                libc::_exit(0)
            }
        }
        ForkResult::Parent { child } => {
            drop(wr);
            let mut buf = [0u8; 8];
            let n = read_full(&rd, &mut buf);
            let status = waitpid(child, None);
            if n == buf.len() {
                let index = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
                let errno = i32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
                let err = std::io::Error::from_raw_os_error(errno);
                if index == u32::MAX {
                    return Err(Error::io(
                        format!("enter the mount namespace of container init {pid}"),
                        err,
                    ));
                }
                let what = mounts
                    .iter()
                    .flat_map(|m| m.options.iter().map(move |(o, _)| (&m.destination, o)))
                    .nth(index as usize)
                    .map(|(d, o)| format!("set propagation {o} on mount {}", d.display()))
                    .unwrap_or_else(|| "set mount propagation".into());
                return Err(Error::io(what, err));
            }
            match status {
                Ok(WaitStatus::Exited(_, 0)) => Ok(()),
                other => Err(Error::Internal(format!(
                    "mount propagation child of container init {pid} ended with {other:?}"
                ))),
            }
        }
    }
}

/// In the forked child: sends (index, errno) and exits.
///
/// # Safety
/// Only async-signal-safe calls; never returns.
unsafe fn report(wr: &OwnedFd, index: u32) -> ! {
    // SAFETY: errno location is thread-local and valid; write and _exit are plain syscalls.
    unsafe {
        let errno = *libc::__errno_location();
        let mut buf = [0u8; 8];
        buf[..4].copy_from_slice(&index.to_ne_bytes());
        buf[4..].copy_from_slice(&errno.to_ne_bytes());
        libc::write(wr.as_raw_fd(), buf.as_ptr().cast(), buf.len());
        libc::_exit(1)
    }
}

fn read_full(fd: &OwnedFd, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match nix::unistd::read(fd, &mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break,
        }
    }
    n
}

fn open_mnt_ns(pid: &str) -> Result<OwnedFd> {
    let path = format!("/proc/{pid}/ns/mnt");
    std::fs::File::open(&path)
        .map(OwnedFd::from)
        .map_err(|e| Error::io(format!("open {path}"), e))
}

fn same_file(a: &OwnedFd, b: &OwnedFd) -> Result<bool> {
    let sa = nix::sys::stat::fstat(a).map_err(|e| Error::io("stat mount namespace", e))?;
    let sb = nix::sys::stat::fstat(b).map_err(|e| Error::io("stat mount namespace", e))?;
    Ok(sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cri_root_propagation_names_become_libcontainers() {
        for (cri, lc) in [
            ("rshared", Some("shared")),
            ("shared", Some("shared")),
            ("rslave", Some("slave")),
            ("slave", Some("slave")),
            ("rprivate", Some("private")),
            ("private", Some("private")),
            ("runbindable", Some("unbindable")),
            ("", None),
        ] {
            assert_eq!(libcontainer_root_propagation(cri).unwrap(), lc, "{cri}");
        }
    }

    #[test]
    fn unknown_root_propagation_is_invalid_and_named() {
        let mut spec = json!({"linux": {"rootfsPropagation": "sideways"}});
        match rewrite_root_propagation(&mut spec) {
            Err(Error::InvalidArgument(m)) => assert!(m.contains("\"sideways\""), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rewrite_only_when_needed() {
        let mut spec = json!({"linux": {"rootfsPropagation": "rshared", "other": 1}});
        assert!(rewrite_root_propagation(&mut spec).unwrap());
        assert_eq!(
            spec,
            json!({"linux": {"rootfsPropagation": "shared", "other": 1}})
        );
        assert!(!rewrite_root_propagation(&mut spec).unwrap());
        let mut none = json!({"linux": {}});
        assert!(!rewrite_root_propagation(&mut none).unwrap());
        let mut empty = json!({"linux": {"rootfsPropagation": ""}});
        assert!(rewrite_root_propagation(&mut empty).unwrap());
        assert_eq!(empty, json!({"linux": {}}));
    }

    #[test]
    fn per_mount_options_in_order() {
        let spec = json!({"mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/a", "type": "bind", "source": "/x", "options": ["rbind", "rprivate"]},
            {"destination": "/b", "type": "bind", "source": "/y", "options": ["rbind", "rslave", "shared", "ro"]},
        ]});
        let got = per_mount(&spec).unwrap();
        assert_eq!(
            got,
            vec![
                MountPropagation {
                    destination: "/a".into(),
                    options: vec![("rprivate".into(), MsFlags::MS_PRIVATE | MsFlags::MS_REC)],
                },
                MountPropagation {
                    destination: "/b".into(),
                    options: vec![
                        ("rslave".into(), MsFlags::MS_SLAVE | MsFlags::MS_REC),
                        ("shared".into(), MsFlags::MS_SHARED),
                    ],
                },
            ]
        );
    }

    #[test]
    fn propagation_without_destination_is_invalid() {
        let spec = json!({"mounts": [{"type": "tmpfs", "options": ["rshared"]}]});
        assert!(matches!(per_mount(&spec), Err(Error::InvalidArgument(_))));
    }
}
