//! Where a container's cgroup is in the unified (v2) hierarchy when the systemd cgroup
//! driver made it, found without asking systemd.
//!
//! libcgroups' systemd manager learns the path over D-Bus, and building one opens a
//! connection to the system bus that is never closed (nor close-on-exec) and blocks while
//! it connects. The daemon only reads a container's cgroup (Stats, Pids) and signals
//! through it (Kill all, kill-on-init-exit), which need the directory and nothing of
//! systemd: so it resolves the directory here, from libcontainer's `slice:prefix:name`
//! the way systemd names a unit's cgroup, or from where the kernel says the container's
//! init is (`/proc/<pid>/cgroup`), and reads it with the filesystem managers. Writes with
//! the systemd driver (Update; Create and Delete start and stop the unit) go over D-Bus in a
//! forked worker, whose connection dies with it.

use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};

/// Where the unified hierarchy is mounted on a v2 host.
pub const UNIFIED_MOUNT: &str = "/sys/fs/cgroup";

/// The cgroup, relative to the hierarchy's root (`/a.slice/b.scope`), of the unit the
/// systemd driver makes for `cgroups_path` (`slice:prefix:name`, or `prefix:name` under
/// `system.slice`), as systemd names it under its root: the slice expanded one level per
/// `-` (`a-b.slice` is `/a.slice/a-b.slice`), then `prefix-name.scope` (or `name` itself
/// when it is a slice). The same rules as runc's and libcgroups', which ask systemd for
/// its root; for the system instance that is the hierarchy's root, so the caller checks the
/// directory exists and otherwise asks the kernel (`unified_of_pid`).
pub fn systemd_unit_path(cgroups_path: &str) -> Result<PathBuf> {
    let bad = |why: &str| {
        Error::Runtime(format!(
            "systemd cgroupsPath {cgroups_path:?}: {why} (expected slice:prefix:name)"
        ))
    };
    let parts: Vec<&str> = cgroups_path.split(':').collect();
    let (slice, prefix, name) = match parts[..] {
        [prefix, name] => ("", prefix, name),
        [slice, prefix, name] => (slice, prefix, name),
        _ => return Err(bad("not two or three fields")),
    };
    let slice = if slice.is_empty() {
        "system.slice"
    } else {
        slice
    };
    let unit = if name.ends_with(".slice") {
        name.to_string()
    } else {
        format!("{prefix}-{name}.scope")
    };
    if name.is_empty() || !single_component(&unit) {
        return Err(bad("the unit name is not one path component"));
    }
    let mut path = expand_slice(slice).ok_or_else(|| bad("the slice is not a valid slice name"))?;
    path.push(unit);
    Ok(path)
}

/// `a-b-c.slice` → `/a.slice/a-b.slice/a-b-c.slice` (systemd nests a slice in the one its
/// name extends); `-.slice` is the root. None for a name that is not a slice.
pub fn expand_slice(slice: &str) -> Option<PathBuf> {
    let stem = slice.strip_suffix(".slice").filter(|s| !s.is_empty())?;
    let mut path = PathBuf::from("/");
    if stem == "-" {
        return Some(path);
    }
    let mut prefix = String::new();
    for part in stem.split('-') {
        if part.is_empty() {
            return None;
        }
        prefix.push_str(part);
        let level = format!("{prefix}.slice");
        if !single_component(&level) {
            return None;
        }
        path.push(level);
        prefix.push('-');
    }
    Some(path)
}

/// A plain file name: no `/`, not `.` or `..`.
fn single_component(name: &str) -> bool {
    let mut c = Path::new(name).components();
    matches!((c.next(), c.next()), (Some(Component::Normal(n)), None) if n == name)
}

/// The unified hierarchy's path in a `/proc/<pid>/cgroup` text: its `0::/path` line.
pub fn unified_line(text: &str) -> Option<&str> {
    text.lines().find_map(|l| l.strip_prefix("0::"))
}

/// The unified cgroup (relative to the hierarchy's root) that `pid` is in, from
/// `<proc>/<pid>/cgroup`. None if the process is gone, is in the root, or the path is odd.
pub fn unified_of_pid(proc: &Path, pid: i32) -> Option<PathBuf> {
    let text = std::fs::read_to_string(proc.join(pid.to_string()).join("cgroup")).ok()?;
    let path = Path::new(unified_line(&text)?.trim_end());
    let normal = path
        .components()
        .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    (path.is_absolute() && normal && path != Path::new("/")).then(|| path.to_path_buf())
}

/// The cgroup (relative to `mount`) of a container the systemd driver placed with
/// `cgroups_path`: its unit's expected path if that directory exists below `mount`, else
/// where the kernel says its init (`pid`) is, else the unit's path all the same: with no
/// directory and no init the unit is gone (systemd removes a scope once it is empty), and
/// reading a directory that is not there says so (no processes, no stats).
pub fn resolve_systemd(
    mount: &Path,
    proc: &Path,
    cgroups_path: &str,
    pid: Option<i32>,
) -> Result<PathBuf> {
    let expected = systemd_unit_path(cgroups_path)?;
    let rel = expected.strip_prefix("/").unwrap_or(&expected);
    if mount.join(rel).is_dir() {
        return Ok(expected);
    }
    // A systemd whose root is not the hierarchy's (a user instance, a systemd in a
    // container without its own cgroup namespace): the kernel knows.
    if let Some(found) = pid.and_then(|p| unified_of_pid(proc, p)) {
        return Ok(found);
    }
    Ok(expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_slices_nest_one_level_per_dash() {
        assert_eq!(
            systemd_unit_path("kubepods-besteffort-pod123.slice:cri-containerd:ID").unwrap(),
            PathBuf::from(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod123.slice/cri-containerd-ID.scope"
            )
        );
        assert_eq!(
            systemd_unit_path("kubepods-burstable-pod1_2.slice:cri-containerd:abc").unwrap(),
            PathBuf::from(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1_2.slice/cri-containerd-abc.scope"
            )
        );
        // Guaranteed pods sit right below kubepods.slice.
        assert_eq!(
            systemd_unit_path("kubepods-pod9.slice:cri-containerd:x").unwrap(),
            PathBuf::from("/kubepods.slice/kubepods-pod9.slice/cri-containerd-x.scope")
        );
    }

    #[test]
    fn a_missing_slice_is_system_slice_and_the_root_slice_is_the_root() {
        assert_eq!(
            systemd_unit_path(":youki:c1").unwrap(),
            PathBuf::from("/system.slice/youki-c1.scope")
        );
        assert_eq!(
            systemd_unit_path("youki:c1").unwrap(),
            PathBuf::from("/system.slice/youki-c1.scope")
        );
        assert_eq!(
            systemd_unit_path("-.slice:youki:c1").unwrap(),
            PathBuf::from("/youki-c1.scope")
        );
        assert_eq!(
            systemd_unit_path("machine.slice:libpod:foo").unwrap(),
            PathBuf::from("/machine.slice/libpod-foo.scope")
        );
    }

    #[test]
    fn a_slice_as_the_name_is_the_unit_itself() {
        assert_eq!(
            systemd_unit_path("a-b.slice:ignored:a-b-c.slice").unwrap(),
            PathBuf::from("/a.slice/a-b.slice/a-b-c.slice")
        );
    }

    #[test]
    fn malformed_paths_are_errors_naming_the_value() {
        for bad in [
            "",
            "/kubepods/pod1/c1",
            "a:b:c:d",
            "notaslice:p:n",
            "a--b.slice:p:n",
            "-a.slice:p:n",
            ".slice:p:n",
            "a/b.slice:p:n",
            "system.slice:p:",
            "system.slice:p/q:n",
            "system.slice:p:n/../../etc",
        ] {
            let e = systemd_unit_path(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("{bad:?}")), "{bad}: {e}");
        }
    }

    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let p = std::env::temp_dir().join(format!("cg-path-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Scratch(p)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn write_proc(proc: &Path, pid: i32, text: &str) {
        std::fs::create_dir_all(proc.join(pid.to_string())).unwrap();
        std::fs::write(proc.join(pid.to_string()).join("cgroup"), text).unwrap();
    }

    #[test]
    fn the_unified_line_of_proc_cgroup() {
        let s = Scratch::new("proc");
        write_proc(&s.0, 7, "0::/kubepods.slice/x.scope\n");
        write_proc(&s.0, 8, "12:memory:/a\n1:name=systemd:/a\n0::/a/b\n");
        write_proc(&s.0, 9, "0::/\n");
        write_proc(&s.0, 10, "4:memory:/only/v1\n");
        write_proc(&s.0, 11, "0::/a/../../etc\n");
        assert_eq!(
            unified_of_pid(&s.0, 7),
            Some(PathBuf::from("/kubepods.slice/x.scope"))
        );
        assert_eq!(unified_of_pid(&s.0, 8), Some(PathBuf::from("/a/b")));
        assert_eq!(unified_of_pid(&s.0, 9), None, "never the root");
        assert_eq!(unified_of_pid(&s.0, 10), None, "no unified line");
        assert_eq!(unified_of_pid(&s.0, 11), None, "no way out");
        assert_eq!(unified_of_pid(&s.0, 12), None, "gone");
    }

    #[test]
    fn resolve_prefers_the_units_directory_then_asks_the_kernel() {
        let s = Scratch::new("resolve");
        let (mount, proc) = (s.0.join("cgroup"), s.0.join("proc"));
        let cp = "kubepods-besteffort-pod1.slice:cri-containerd:c1";
        let unit = "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/cri-containerd-c1.scope";
        // Nowhere to be found: the unit is gone, and its path says so when read.
        assert_eq!(
            resolve_systemd(&mount, &proc, cp, Some(5)).unwrap(),
            Path::new("/").join(unit)
        );
        // A malformed path is an error naming it.
        let e = resolve_systemd(&mount, &proc, "nope", Some(5))
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"nope\""), "{e}");
        // systemd's root is elsewhere (its user instance, say): the init's cgroup.
        write_proc(
            &proc,
            5,
            "0::/user.slice/user@1000.service/cri-containerd-c1.scope\n",
        );
        assert_eq!(
            resolve_systemd(&mount, &proc, cp, Some(5)).unwrap(),
            PathBuf::from("/user.slice/user@1000.service/cri-containerd-c1.scope")
        );
        // The unit's directory: no need for a live init.
        std::fs::create_dir_all(mount.join(unit)).unwrap();
        assert_eq!(
            resolve_systemd(&mount, &proc, cp, None).unwrap(),
            Path::new("/").join(unit)
        );
        assert_eq!(
            resolve_systemd(&mount, &proc, cp, Some(5)).unwrap(),
            Path::new("/").join(unit)
        );
    }
}
