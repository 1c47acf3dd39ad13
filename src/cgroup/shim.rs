//! runc-v2's `ShimCgroup`: the shim daemon is placed in a cgroup the operator made (so its
//! memory and CPU are charged there rather than to containerd's own cgroup). As for runc-v2,
//! `start` places the daemon it spawns; a shim that already serves the pod stays where it
//! is. Unlike runc-v2 it does so between fork and exec: the daemon forks its helper at
//! once, and a move after the spawn would leave that helper (and every container init it
//! forks) behind in containerd's cgroup.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The `cgroup.procs` files to write the PID into: on cgroup v2 the one unified hierarchy;
/// on v1 (or hybrid) every mounted hierarchy in which the named cgroup exists, as
/// containerd's cgroup1 `StaticPath` does. None found is an error naming the cgroup.
pub fn procs_files(root: &Path, cgroup: &str) -> Result<Vec<PathBuf>> {
    let rel = cgroup.trim_start_matches('/');
    if root.join("cgroup.controllers").exists() {
        let dir = root.join(rel);
        if !dir.is_dir() {
            return Err(Error::InvalidArgument(format!(
                "ShimCgroup {cgroup:?}: no such cgroup ({} does not exist)",
                dir.display()
            )));
        }
        return Ok(vec![dir.join("cgroup.procs")]);
    }
    let mut files = Vec::new();
    let entries =
        std::fs::read_dir(root).map_err(|e| Error::io(format!("read {}", root.display()), e))?;
    for entry in entries.flatten() {
        // cpu and cpuacct are symlinks to cpu,cpuacct: one write per hierarchy is enough.
        if entry.file_type().map(|t| !t.is_dir()).unwrap_or(true) {
            continue;
        }
        let dir = entry.path().join(rel);
        if dir.is_dir() && dir.join("cgroup.procs").exists() {
            files.push(dir.join("cgroup.procs"));
        }
    }
    if files.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "ShimCgroup {cgroup:?}: no such cgroup in any hierarchy under {}",
            root.display()
        )));
    }
    files.sort();
    Ok(files)
}

/// The `cgroup.procs` files of `cgroup` (a path below the hierarchies' root) on this host,
/// ready for a `pre_exec` hook to write "0" (= the writing process) into.
pub fn procs_files_here(cgroup: &str) -> Result<Vec<std::ffi::CString>> {
    procs_files(Path::new(CGROUP_ROOT), cgroup)?
        .into_iter()
        .map(|p| {
            std::ffi::CString::new(p.into_os_string().into_encoded_bytes())
                .map_err(|_| Error::InvalidArgument(format!("ShimCgroup {cgroup:?}: NUL in path")))
        })
        .collect()
}

/// Joins the calling process to each cgroup. Only async-signal-safe calls: it runs in the
/// child between fork and exec.
pub fn join_self(procs: &[std::ffi::CString]) -> std::io::Result<()> {
    for p in procs {
        // SAFETY: open/write/close on a NUL-terminated path we own.
        unsafe {
            let fd = libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let n = libc::write(fd, b"0".as_ptr().cast(), 1);
            let err = std::io::Error::last_os_error();
            libc::close(fd);
            if n != 1 {
                return Err(err);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ysm-shimcg-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn cgroup(dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("cgroup.procs"), "").unwrap();
    }

    #[test]
    fn v2_is_the_one_hierarchy() {
        let root = tmp("v2");
        std::fs::write(root.join("cgroup.controllers"), "cpu memory").unwrap();
        cgroup(&root.join("containerd/shim"));
        assert_eq!(
            procs_files(&root, "/containerd/shim").unwrap(),
            [root.join("containerd/shim/cgroup.procs")]
        );
        let e = procs_files(&root, "/nope").unwrap_err().to_string();
        assert!(e.contains("\"/nope\""), "{e}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn v1_is_every_hierarchy_holding_the_cgroup() {
        let root = tmp("v1");
        cgroup(&root.join("memory/containerd/shim"));
        cgroup(&root.join("pids/containerd/shim"));
        std::fs::create_dir_all(root.join("cpu")).unwrap();
        std::os::unix::fs::symlink(root.join("memory"), root.join("memory-link")).unwrap();
        assert_eq!(
            procs_files(&root, "containerd/shim").unwrap(),
            [
                root.join("memory/containerd/shim/cgroup.procs"),
                root.join("pids/containerd/shim/cgroup.procs")
            ]
        );
        assert!(procs_files(&root, "/other").is_err());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
