//! OOM notifications for a container's memory cgroup, so the pod can publish TaskOOM (CRI
//! turns it into the `OOMKilled` reason).
//!
//! - cgroup v1: an eventfd registered through `cgroup.event_control` against
//!   `memory.oom_control`; the kernel signals it on every OOM in the cgroup, and once more
//!   when the cgroup is removed (then the directory is gone and the watch ends). One OOM
//!   signals it more than once: the kernel notifies every charge that meets the OOM, before
//!   and while its victim dies (a few ms apart). Signals within `OOM_EPISODE` of the last
//!   TaskOOM are that same OOM: one TaskOOM each, as on v2 (CRI wants the fact, not a count).
//! - cgroup v2: inotify on `memory.events`; an OOM kill raises its `oom_kill` counter.
//!
//! One watch is a tokio task on one fd: no thread, no polling.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::io::unix::AsyncFd;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};

/// The memory cgroup directory of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemoryCgroup {
    V1(PathBuf),
    V2(PathBuf),
}

/// Finds the memory cgroup of `pid` from /proc/PID/cgroup (whichever cgroup driver placed
/// it there). `None` when the host has no memory controller.
pub fn of_pid(pid: i32) -> Result<Option<MemoryCgroup>> {
    let path = format!("/proc/{pid}/cgroup");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(format!("read {path}"), e))?;
    Ok(parse_proc_cgroup(&text, Path::new("/sys/fs/cgroup")))
}

/// Prefers the v1 memory controller (a hybrid host keeps memory there); falls back to the
/// unified hierarchy when that has the memory controller.
fn parse_proc_cgroup(text: &str, root: &Path) -> Option<MemoryCgroup> {
    let mut unified = None;
    for line in text.lines() {
        let mut f = line.splitn(3, ':');
        let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
        let rel = path.trim_start_matches('/');
        if ctrls.split(',').any(|c| c == "memory") {
            return Some(MemoryCgroup::V1(root.join("memory").join(rel)));
        }
        if ctrls.is_empty() {
            unified = Some(rel.to_string());
        }
    }
    let rel = unified?;
    // On a hybrid host the unified hierarchy is mounted at /sys/fs/cgroup/unified and has
    // no memory controller; on a v2 host it is /sys/fs/cgroup itself.
    let dir = root.join(&rel);
    dir.join("memory.events")
        .exists()
        .then_some(MemoryCgroup::V2(dir))
}

/// An owned fd for tokio's reactor (nix's Inotify has AsFd but not AsRawFd).
struct Owned<T: AsFd>(T);

impl<T: AsFd> AsRawFd for Owned<T> {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

fn register<T: AsFd>(fd: T, what: &str) -> Result<AsyncFd<Owned<T>>> {
    // SAFETY: `Owned` owns the fd; it stays open and the same until the AsyncFd drops it.
    unsafe { AsyncFd::register(Owned(fd)) }
        .map_err(|e| Error::io(format!("register {what}"), e.into_parts().1))
}

/// Reads `oom_kill` from a v2 `memory.events` file.
fn oom_kills(events: &Path) -> Option<u64> {
    let f = File::open(events).ok()?;
    BufReader::new(f)
        .lines()
        .map_while(|l| l.ok())
        .find_map(|l| {
            l.strip_prefix("oom_kill ")
                .and_then(|n| n.trim().parse().ok())
        })
}

/// Starts watching; `on_oom` runs once per OOM event. The task ends by itself when the
/// cgroup goes away; abort it to stop earlier.
pub fn watch(cgroup: MemoryCgroup, on_oom: impl Fn() + Send + 'static) -> Result<JoinHandle<()>> {
    match cgroup {
        MemoryCgroup::V1(dir) => watch_v1(dir, on_oom),
        MemoryCgroup::V2(dir) => watch_v2(dir, on_oom),
    }
}

/// How long after a v1 OOM signal further signals count as the same OOM.
const OOM_EPISODE: std::time::Duration = std::time::Duration::from_millis(250);

fn watch_v1(dir: PathBuf, on_oom: impl Fn() + Send + 'static) -> Result<JoinHandle<()>> {
    let efd = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
    let control_path = dir.join("memory.oom_control");
    let control = File::open(&control_path)
        .map_err(|e| Error::io(format!("open {}", control_path.display()), e))?;
    let event_control = dir.join("cgroup.event_control");
    std::fs::write(
        &event_control,
        format!("{} {}", efd.as_raw_fd(), control.as_raw_fd()),
    )
    .map_err(|e| Error::io(format!("write {}", event_control.display()), e))?;
    // The kernel holds its own references now; `control` may close.
    drop(control);
    let efd = register(efd, "OOM eventfd")?;
    let mut last: Option<std::time::Instant> = None;
    Ok(tokio::spawn(async move {
        loop {
            let Ok(mut ready) = efd.readable().await else {
                return;
            };
            match ready.get_inner().0.read() {
                Ok(_) => {
                    // The last signal comes from the cgroup's removal, not from an OOM.
                    if !dir.exists() {
                        return;
                    }
                    let now = std::time::Instant::now();
                    if last.is_some_and(|t| now.duration_since(t) < OOM_EPISODE) {
                        continue;
                    }
                    last = Some(now);
                    on_oom();
                }
                Err(Errno::EAGAIN) => ready.clear_ready(),
                Err(e) => {
                    log::warn!("OOM eventfd for {}: {e}", dir.display());
                    return;
                }
            }
        }
    }))
}

fn watch_v2(dir: PathBuf, on_oom: impl Fn() + Send + 'static) -> Result<JoinHandle<()>> {
    let events = dir.join("memory.events");
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
    inotify.add_watch(&events, AddWatchFlags::IN_MODIFY)?;
    let mut seen = oom_kills(&events).unwrap_or(0);
    let inotify = register(inotify, "OOM inotify")?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok(mut ready) = inotify.readable().await else {
                return;
            };
            match ready.get_inner().0.read_events() {
                Ok(evs) => {
                    if evs
                        .iter()
                        .any(|e| e.mask.contains(AddWatchFlags::IN_IGNORED))
                    {
                        return;
                    }
                    let Some(now) = oom_kills(&events) else {
                        return;
                    };
                    if now > seen {
                        seen = now;
                        on_oom();
                    }
                }
                Err(Errno::EAGAIN) => ready.clear_ready(),
                Err(e) => {
                    log::warn!("OOM inotify for {}: {e}", dir.display());
                    return;
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_memory_cgroup_on_v1_hybrid_and_v2_hosts() {
        let root = Path::new("/sys/fs/cgroup");
        let hybrid =
            "12:pids:/default/c1\n4:memory:/default/c1\n1:name=systemd:/x\n0::/default/c1\n";
        assert_eq!(
            parse_proc_cgroup(hybrid, root),
            Some(MemoryCgroup::V1(PathBuf::from(
                "/sys/fs/cgroup/memory/default/c1"
            )))
        );
        let combined = "5:cpu,memory:/k8s/pod1/c2\n";
        assert_eq!(
            parse_proc_cgroup(combined, root),
            Some(MemoryCgroup::V1(PathBuf::from(
                "/sys/fs/cgroup/memory/k8s/pod1/c2"
            )))
        );
        // v2: only "0::" and the directory must have memory.events.
        let dir = std::env::temp_dir().join(format!("oom-v2-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("pod/c3")).unwrap();
        assert_eq!(
            parse_proc_cgroup("0::/pod/c3\n", &dir),
            None,
            "no memory.events"
        );
        std::fs::write(
            dir.join("pod/c3/memory.events"),
            "low 0\noom 1\noom_kill 2\n",
        )
        .unwrap();
        assert_eq!(
            parse_proc_cgroup("0::/pod/c3\n", &dir),
            Some(MemoryCgroup::V2(dir.join("pod/c3")))
        );
        assert_eq!(oom_kills(&dir.join("pod/c3/memory.events")), Some(2));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn v2_watch_fires_when_oom_kill_rises_and_ends_with_the_file() {
        let dir = std::env::temp_dir().join(format!("oom-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let events = dir.join("memory.events");
        std::fs::write(&events, "oom 0\noom_kill 0\n").unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let task = watch(MemoryCgroup::V2(dir.clone()), move || {
            let _ = tx.send(());
        })
        .unwrap();
        // A change that is not an OOM kill: no event.
        std::fs::write(&events, "oom 1\noom_kill 0\n").unwrap();
        std::fs::write(&events, "oom 1\noom_kill 1\n").unwrap();
        let got = tokio::time::timeout(std::time::Duration::from_secs(2), rx.recv()).await;
        assert!(matches!(got, Ok(Some(()))), "no OOM reported");
        assert!(rx.try_recv().is_err(), "reported twice");
        std::fs::remove_dir_all(&dir).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(2), task)
            .await
            .expect("the watch ends when the cgroup goes")
            .unwrap();
    }
}
