//! Changing files on the node, each step undoable: atomic writes (a temporary file in the
//! same directory, then rename), the config backup that `uninstall` restores byte for
//! byte, the binaries, and the record of what `install` did.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::InstallError;

fn io(what: &str, path: &Path, e: std::io::Error) -> InstallError {
    InstallError::Io(format!("{what} {}: {e}", path.display()))
}

/// `path` with `suffix` appended to its file name.
pub fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// The original config, kept from the first install on.
pub fn backup_path(config: &Path) -> PathBuf {
    sibling(config, ".youki-backup")
}

/// What install did, for uninstall.
pub fn record_path(config: &Path) -> PathBuf {
    sibling(config, ".youki-install.json")
}

/// A file written next to its final place, renamed over it by `commit` or removed when
/// dropped uncommitted.
pub struct Staged {
    pub tmp: PathBuf,
    target: PathBuf,
    done: bool,
}

impl Staged {
    /// Writes `data` to a temporary file beside `target`, with `mode`.
    pub fn new(target: &Path, data: &[u8], mode: u32) -> Result<Self, InstallError> {
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = target.with_file_name(format!(".{name}.youki-tmp-{}", std::process::id()));
        let staged = Staged {
            tmp: tmp.clone(),
            target: target.to_path_buf(),
            done: false,
        };
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| io("cannot write in the directory of", target, e))?;
        f.write_all(data)
            .and_then(|_| f.sync_all())
            .map_err(|e| io("write", &tmp, e))?;
        // create_new's mode is masked by the umask: set it exactly.
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))
            .map_err(|e| io("chmod", &tmp, e))?;
        Ok(staged)
    }

    pub fn commit(mut self) -> Result<(), InstallError> {
        fs::rename(&self.tmp, &self.target).map_err(|e| io("rename over", &self.target, e))?;
        self.done = true;
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Replaces `path` atomically with `data`, keeping its mode.
pub fn replace(path: &Path, data: &[u8], mode: u32) -> Result<(), InstallError> {
    Staged::new(path, data, mode)?.commit()
}

/// A binary put in place, and what was there before (to put back on failure).
pub struct Placed {
    pub path: PathBuf,
    pub before: Option<Vec<u8>>,
}

/// Copies each of `names` from `from` into `to` unless an identical file is there.
/// Returns what it placed; on error, puts back what it had placed.
pub fn copy_binaries(from: &Path, to: &Path, names: &[&str]) -> Result<Vec<Placed>, InstallError> {
    let mut placed = Vec::new();
    for name in names {
        let src = from.join(name);
        let dst = to.join(name);
        let step = (|| {
            let data = fs::read(&src).map_err(|e| io("read", &src, e))?;
            let before = fs::read(&dst).ok();
            if before.as_deref() == Some(&data[..]) {
                return Ok(None);
            }
            replace(&dst, &data, 0o755)?;
            Ok(Some(Placed { path: dst, before }))
        })();
        match step {
            Ok(Some(p)) => placed.push(p),
            Ok(None) => {}
            Err(e) => {
                undo_binaries(&placed);
                return Err(e);
            }
        }
    }
    Ok(placed)
}

/// Puts back what `copy_binaries` replaced; removes what it created.
pub fn undo_binaries(placed: &[Placed]) {
    for p in placed.iter().rev() {
        let _ = match &p.before {
            Some(old) => replace(&p.path, old, 0o755),
            None => fs::remove_file(&p.path).map_err(|e| io("remove", &p.path, e)),
        };
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Record {
    pub handler: String,
    /// Binaries install placed (removed by uninstall).
    pub binaries: Vec<PathBuf>,
    /// Whether install imported the pause image (it was not there before).
    pub imported_pause: bool,
    /// sha256 of the config as install left it: uninstall will not put the backup over
    /// a file someone changed since (unless --force).
    pub config_sha256: String,
}

pub fn load_record(config: &Path) -> Result<Option<Record>, InstallError> {
    let path = record_path(config);
    match fs::read(&path) {
        Ok(data) => serde_json::from_slice(&data)
            .map(Some)
            .map_err(|e| InstallError::Io(format!("{}: not our record: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("read", &path, e)),
    }
}

pub fn save_record(config: &Path, r: &Record) -> Result<(), InstallError> {
    let data = serde_json::to_vec_pretty(r)
        .map_err(|e| InstallError::Io(format!("encode install record: {e}")))?;
    replace(&record_path(config), &data, 0o600)
}

pub fn sha256(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_files_vanish_unless_committed_and_copies_undo() {
        let d = std::env::temp_dir().join(format!("youki-apply-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(d.join("from")).unwrap();
        fs::create_dir_all(d.join("to")).unwrap();
        let target = d.join("to/f");
        drop(Staged::new(&target, b"x", 0o644).unwrap());
        assert_eq!(fs::read_dir(d.join("to")).unwrap().count(), 0);
        fs::write(d.join("from/a"), b"new a").unwrap();
        fs::write(d.join("from/b"), b"b").unwrap();
        fs::write(d.join("to/a"), b"old a").unwrap();
        // c is missing: the copy fails and a is put back, b removed.
        let e = copy_binaries(&d.join("from"), &d.join("to"), &["a", "b", "c"]);
        assert!(e.err().unwrap().to_string().contains("from/c"));
        assert_eq!(fs::read(d.join("to/a")).unwrap(), b"old a");
        assert!(!d.join("to/b").exists());
        let placed = copy_binaries(&d.join("from"), &d.join("to"), &["a", "b"]).unwrap();
        assert_eq!(placed.len(), 2);
        // Identical files are left alone.
        let again = copy_binaries(&d.join("from"), &d.join("to"), &["a", "b"]).unwrap();
        assert!(again.is_empty());
        fs::remove_dir_all(&d).unwrap();
    }
}
