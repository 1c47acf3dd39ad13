//! The rootfs mounts of a Create request (overlay, bind, ...) mounted at `<bundle>/rootfs`
//! before the container is built, and unmounted when it is deleted.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One entry of the Create request's `rootfs` list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub kind: String,
    pub source: String,
    pub options: Vec<String>,
}

/// Splits mount(8)-style options into flags and the data string the filesystem gets.
pub fn parse_options(options: &[String]) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for o in options {
        let (set, clear) = match o.as_str() {
            "ro" => (MsFlags::MS_RDONLY, false),
            "rw" => (MsFlags::MS_RDONLY, true),
            "bind" => (MsFlags::MS_BIND, false),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, false),
            "nosuid" => (MsFlags::MS_NOSUID, false),
            "suid" => (MsFlags::MS_NOSUID, true),
            "nodev" => (MsFlags::MS_NODEV, false),
            "dev" => (MsFlags::MS_NODEV, true),
            "noexec" => (MsFlags::MS_NOEXEC, false),
            "exec" => (MsFlags::MS_NOEXEC, true),
            "noatime" => (MsFlags::MS_NOATIME, false),
            "relatime" => (MsFlags::MS_RELATIME, false),
            "strictatime" => (MsFlags::MS_STRICTATIME, false),
            "sync" => (MsFlags::MS_SYNCHRONOUS, false),
            "remount" => (MsFlags::MS_REMOUNT, false),
            "defaults" => (MsFlags::empty(), false),
            other => match crate::runtime::propagation::flag(other) {
                Some(propagation) => (propagation, false),
                None => {
                    data.push(other.to_string());
                    continue;
                }
            },
        };
        if clear {
            flags.remove(set);
        } else {
            flags.insert(set);
        }
    }
    (flags, data.join(","))
}

pub fn rootfs_path(bundle: &Path) -> PathBuf {
    bundle.join("rootfs")
}

/// Mounts every entry at `target`, in order. On failure, what was mounted is unmounted again.
pub fn mount_all(mounts: &[Mount], target: &Path) -> Result<()> {
    for (i, m) in mounts.iter().enumerate() {
        if let Err(e) = mount_one(m, target) {
            for _ in 0..i {
                let _ = umount2(target, MntFlags::MNT_DETACH);
            }
            return Err(e);
        }
    }
    Ok(())
}

fn mount_one(m: &Mount, target: &Path) -> Result<()> {
    let (flags, data) = parse_options(&m.options);
    let propagation = flags
        & (MsFlags::MS_PRIVATE | MsFlags::MS_SHARED | MsFlags::MS_SLAVE | MsFlags::MS_UNBINDABLE);
    let flags = flags - propagation;
    let kind = if m.kind == "bind" {
        None
    } else {
        Some(m.kind.as_str())
    };
    let data = (!data.is_empty()).then_some(data.as_str());
    mount(Some(m.source.as_str()), target, kind, flags, data).map_err(|e| {
        Error::io(
            format!(
                "mount {} {:?} at {} (options {:?})",
                m.kind,
                m.source,
                target.display(),
                m.options
            ),
            e,
        )
    })?;
    // The mount is made; if finishing it fails, it is undone here (mount_all undoes only
    // the entries before this one).
    let finished = finish_mount(flags, propagation, target);
    if finished.is_err() {
        let _ = umount2(target, MntFlags::MNT_DETACH);
    }
    finished
}

fn finish_mount(flags: MsFlags, propagation: MsFlags, target: &Path) -> Result<()> {
    // A read-only bind needs a remount: the first bind ignores MS_RDONLY.
    if flags.contains(MsFlags::MS_BIND) && flags.contains(MsFlags::MS_RDONLY) {
        mount(
            None::<&str>,
            target,
            None::<&str>,
            flags | MsFlags::MS_REMOUNT,
            None::<&str>,
        )
        .map_err(|e| Error::io(format!("remount {} read-only", target.display()), e))?;
    }
    if !propagation.is_empty() {
        mount(
            None::<&str>,
            target,
            None::<&str>,
            propagation,
            None::<&str>,
        )
        .map_err(|e| Error::io(format!("set propagation of {}", target.display()), e))?;
    }
    Ok(())
}

/// Unmounts everything stacked at `target` (lazily, so a busy mount does not block us).
/// Absent or unmounted targets are fine: delete may run twice.
pub fn unmount_all(target: &Path) -> Result<()> {
    for _ in 0..64 {
        match umount2(target, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(Error::io(format!("unmount {}", target.display()), e)),
        }
    }
    Err(Error::Internal(format!(
        "{} still mounted after 64 unmounts",
        target.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn overlay_options_become_data() {
        let (f, d) = parse_options(&opts(&[
            "index=off",
            "workdir=/w",
            "upperdir=/u",
            "lowerdir=/l1:/l2",
        ]));
        assert!(f.is_empty());
        assert_eq!(d, "index=off,workdir=/w,upperdir=/u,lowerdir=/l1:/l2");
    }

    #[test]
    fn bind_flags() {
        let (f, d) = parse_options(&opts(&["rbind", "ro", "nosuid"]));
        assert!(f.contains(
            MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID
        ));
        assert!(d.is_empty());
        let (f, _) = parse_options(&opts(&["ro", "rw"]));
        assert!(!f.contains(MsFlags::MS_RDONLY), "a later rw undoes ro");
    }

    #[test]
    fn unmount_of_nothing_is_ok() {
        let dir = std::env::temp_dir().join(format!("ysm-unmount-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(unmount_all(&dir).is_ok());
        assert!(unmount_all(&dir.join("absent")).is_ok());
        std::fs::remove_dir(&dir).unwrap();
    }
}
