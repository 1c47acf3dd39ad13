//! User namespaces with several uid or gid ranges. libcontainer writes a single range to
//! `/proc/<pid>/{uid,gid}_map` itself, but for more than one it always runs the setuid
//! helpers `newuidmap`/`newgidmap` found in PATH, even as root: containers fail with
//! "newuidmap/newgidmap binaries could not be found in path" where shadow's uidmap is not
//! installed, and where it is, root has no /etc/subuid ranges, so the helper refuses, and
//! libcontainer does not check its exit status. runc, as root, writes the maps itself.
//!
//! So do we, through the only door libcontainer leaves: the Create worker puts first in its
//! PATH a directory whose `newuidmap` and `newgidmap` are links to `/proc/self/exe`, which
//! is the shim binary for the worker that runs them, and the shim started under those
//! names (`run_if_called_as_helper`, first thing in `main`) writes the ranges it is given
//! in one write(2), as the kernel requires. The daemon runs as root, so no setgroups "deny"
//! is needed first (libcontainer writes it only for rootless, as runc does).

use std::ffi::OsStr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const UID_HELPER: &str = "newuidmap";
const GID_HELPER: &str = "newgidmap";

/// Where the helper links live under the runtime's state root.
pub fn helper_dir(root: &Path) -> PathBuf {
    root.join(".idmap")
}

/// Makes the helper links (once) and puts their directory first in this process's PATH.
/// Only for a forked, single-threaded worker: it changes the environment.
pub fn use_helpers(root: &Path) -> Result<()> {
    let dir = helper_dir(root);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    for name in [UID_HELPER, GID_HELPER] {
        let link = dir.join(name);
        if std::fs::read_link(&link).is_ok_and(|t| t == Path::new("/proc/self/exe")) {
            continue;
        }
        // A leftover of another kind, or a concurrent worker's link: replace it atomically.
        let tmp = dir.join(format!(".{name}.{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink("/proc/self/exe", &tmp)
            .and_then(|_| std::fs::rename(&tmp, &link))
            .map_err(|e| Error::io(format!("link {}", link.display()), e))?;
    }
    let path = match std::env::var_os("PATH") {
        Some(p) if !p.is_empty() => {
            let mut v = dir.into_os_string();
            v.push(":");
            v.push(p);
            v
        }
        _ => dir.into_os_string(),
    };
    // SAFETY: called in a forked worker, which has one thread (see forker.rs).
    unsafe { std::env::set_var("PATH", path) };
    Ok(())
}

/// When this binary was started as `newuidmap` or `newgidmap` (see the module comment):
/// writes the map and returns the exit status for `main` to exit with.
pub fn run_if_called_as_helper() -> Option<i32> {
    let mut args = std::env::args_os();
    let argv0 = args.next()?;
    let file = match Path::new(&argv0).file_name().and_then(OsStr::to_str)? {
        UID_HELPER => "uid_map",
        GID_HELPER => "gid_map",
        _ => return None,
    };
    let args: Vec<String> = args.map(|a| a.to_string_lossy().into_owned()).collect();
    Some(match write_map(file, &args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{}: {e}", argv0.to_string_lossy());
            1
        }
    })
}

/// The map text for `args` (newuidmap's: `pid` then `inside outside count` triples).
pub fn map_text(args: &[String]) -> Result<(u32, String)> {
    let bad = |why: String| Error::InvalidArgument(format!("{why} in {args:?}"));
    let (pid, ranges) = args.split_first().ok_or_else(|| bad("no pid".into()))?;
    let pid: u32 = pid
        .parse()
        .map_err(|_| bad(format!("pid {pid:?} is not a number")))?;
    if ranges.is_empty() || ranges.len() % 3 != 0 {
        return Err(bad("expected ranges of three numbers".into()));
    }
    let mut text = String::new();
    for r in ranges.chunks(3) {
        for n in r {
            n.parse::<u32>()
                .map_err(|_| bad(format!("{n:?} is not a number")))?;
        }
        text.push_str(&format!("{} {} {}\n", r[0], r[1], r[2]));
    }
    Ok((pid, text))
}

fn write_map(file: &str, args: &[String]) -> Result<()> {
    let (pid, text) = map_text(args)?;
    let path = format!("/proc/{pid}/{file}");
    // One write: the kernel takes a map only whole, in a single write.
    std::fs::write(&path, text.as_bytes()).map_err(|e| Error::io(format!("write {path}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn ranges_become_one_line_each() {
        let (pid, text) = map_text(&s(&["42", "0", "0", "10", "10", "1000", "65535"])).unwrap();
        assert_eq!(pid, 42);
        assert_eq!(text, "0 0 10\n10 1000 65535\n");
    }

    #[test]
    fn bad_arguments_are_refused_by_name() {
        for bad in [
            &[][..],
            &["x", "0", "0", "1"][..],
            &["1", "0", "0"][..],
            &["1"][..],
            &["1", "0", "a", "1"][..],
        ] {
            let e = map_text(&s(bad)).unwrap_err();
            assert_eq!(e.code(), ttrpc::Code::INVALID_ARGUMENT, "{bad:?}");
        }
    }
}
