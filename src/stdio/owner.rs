//! runc's IoUid/IoGid: the stdio a user-namespaced container gets must be reopenable by
//! its root, which is an unprivileged uid on the host (`/dev/stdout` is a reopen of
//! `/proc/self/fd/1`, checked against the fifo's owner and mode). runc-v2 chowns the pipes
//! it puts between the fifos and the container; the container gets containerd's fifos
//! themselves here, so those are what is chowned.

use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use crate::error::{Error, Result};
use crate::stdio::StdioPaths;

/// Gives the stdio fifos to `uid`:`gid`. Only plain fifo paths: `file://` and `binary://`
/// targets are the client's files and programs, never ours to chown. Nothing to do for the
/// default owner (0:0), which is what containerd made them with.
pub fn give_fifos(stdio: &StdioPaths, uid: u32, gid: u32) -> Result<()> {
    if uid == 0 && gid == 0 {
        return Ok(());
    }
    for path in [&stdio.stdin, &stdio.stdout, &stdio.stderr] {
        if path.is_empty() || path.contains("://") {
            continue;
        }
        let is_fifo = std::fs::symlink_metadata(path)
            .map(|m| m.file_type().is_fifo())
            .unwrap_or(false);
        if is_fifo {
            std::os::unix::fs::lchown(Path::new(path), Some(uid), Some(gid))
                .map_err(|e| Error::io(format!("IoUid/IoGid: chown {path} to {uid}:{gid}"), e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn fifos_get_the_owner_and_files_do_not() {
        let dir = std::env::temp_dir().join(format!("ysm-owner-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("out");
        let file = dir.join("file.log");
        let _ = std::fs::remove_file(&fifo);
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        std::fs::write(&file, "").unwrap();
        let stdio = StdioPaths {
            stdin: String::new(),
            stdout: fifo.to_str().unwrap().into(),
            stderr: format!("file://{}", file.display()),
            terminal: false,
        };
        give_fifos(&stdio, 0, 0).unwrap();
        assert_eq!(
            std::fs::metadata(&fifo).unwrap().uid(),
            nix::unistd::getuid().as_raw()
        );
        if nix::unistd::getuid().is_root() {
            give_fifos(&stdio, 1234, 5678).unwrap();
            let m = std::fs::metadata(&fifo).unwrap();
            assert_eq!((m.uid(), m.gid()), (1234, 5678));
            assert_eq!(std::fs::metadata(&file).unwrap().uid(), 0);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
