//! The daemon's socket file. It is removed as soon as the daemon stops taking new work
//! (Shutdown found the pod empty), before that Shutdown is answered: containerd checks
//! right after a Delete that no shim socket is left (TestShimDoesNotLeakSockets), and a
//! `start` for the same group must not find a dying daemon still answering there and join
//! it. Once removed, the path may soon belong to the next daemon of that group, so it is
//! removed once, and only while it is still the file this daemon was given.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub struct ServedSocket {
    path: PathBuf,
    /// (device, inode) of the socket file when the daemon took it over; `None` once
    /// removed (or if it was never there).
    file: Mutex<Option<(u64, u64)>>,
}

impl ServedSocket {
    /// The socket file `start` bound at `path` for this daemon.
    pub fn new(path: PathBuf) -> ServedSocket {
        let file = identity(&path);
        ServedSocket {
            path,
            file: Mutex::new(file),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Unlinks the socket file if it is still ours; later calls do nothing. Connections
    /// already made keep working: only new ones find no file.
    pub fn remove(&self) {
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ours) = file.take()
            && identity(&self.path) == Some(ours)
            && let Err(e) = std::fs::remove_file(&self.path)
        {
            log::warn!("remove socket {}: {e}", self.path.display());
        }
    }
}

fn identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn removes_its_own_file_once_and_never_a_successor() {
        let dir = std::env::temp_dir().join(format!("served-sock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s");
        let _ = std::fs::remove_file(&path);
        let first = UnixListener::bind(&path).unwrap();
        let ours = ServedSocket::new(path.clone());
        ours.remove();
        assert!(!path.exists(), "our socket file is removed");
        // The next daemon of the group binds the same path: a second remove (the daemon's
        // exit path) must leave it alone.
        let _next = UnixListener::bind(&path).unwrap();
        ours.remove();
        assert!(path.exists(), "the successor's socket survives");
        // A file replaced before we ever removed it is not ours either.
        let other = ServedSocket::new(path.clone());
        std::fs::remove_file(&path).unwrap();
        let _third = UnixListener::bind(&path).unwrap();
        other.remove();
        assert!(path.exists());
        drop(first);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
