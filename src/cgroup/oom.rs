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

/// The v2 watch. With the systemd driver a container's cgroup is a scope that systemd
/// removes the moment its last process exits, and an OOM kill makes exactly that happen:
/// by the time the watch reads `memory.events` after the kernel's IN_MODIFY, the file
/// can be gone (runc-v2 loses these OOMs the same way). So the watch also follows the
/// parent's `memory.events`, whose `oom_kill` counts the children's kills too (v2 events
/// are hierarchical), and keeps both counts as of its last look at a live cgroup. When
/// the cgroup is gone, a rise in the parent's count since then that the watch could not
/// see in its own file is this cgroup's kill. A sibling's kill in that same instant is
/// the only confusion left; siblings' kills at other times are absorbed, because every
/// change of the parent's file makes the watch look at both again.
fn watch_v2(dir: PathBuf, on_oom: impl Fn() + Send + 'static) -> Result<JoinHandle<()>> {
    let events = dir.join("memory.events");
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
    let own = inotify.add_watch(&events, AddWatchFlags::IN_MODIFY)?;
    // No parent file (the root, or a parent without the memory controller): no fallback.
    let parent_events = dir.parent().map(|p| p.join("memory.events")).filter(|p| {
        inotify
            .add_watch(p.as_path(), AddWatchFlags::IN_MODIFY)
            .is_ok()
    });
    let mut seen = Seen {
        own: oom_kills(&events).unwrap_or(0),
        parent: parent_events.as_deref().and_then(oom_kills),
    };
    let inotify = register(inotify, "OOM inotify")?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok(mut ready) = inotify.readable().await else {
                return;
            };
            match ready.get_inner().0.read_events() {
                Ok(evs) => {
                    let gone = evs
                        .iter()
                        .any(|e| e.wd == own && e.mask.contains(AddWatchFlags::IN_IGNORED));
                    let now = if gone { None } else { oom_kills(&events) };
                    match now {
                        Some(now) => {
                            if now > seen.own {
                                on_oom();
                            }
                            seen.own = now;
                            seen.parent = parent_events.as_deref().and_then(oom_kills);
                        }
                        None => {
                            // The cgroup is gone: a kill its own file no longer shows.
                            let parent = parent_events.as_deref().and_then(oom_kills);
                            if seen.missed_kill(parent) {
                                on_oom();
                            }
                            return;
                        }
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

/// The `oom_kill` counts as of the watch's last look at a live cgroup.
struct Seen {
    own: u64,
    parent: Option<u64>,
}

impl Seen {
    /// Whether the parent counted a kill after that look. Only meaningful once the
    /// cgroup is gone: while it lives, its own count says it.
    fn missed_kill(&self, parent_now: Option<u64>) -> bool {
        matches!((self.parent, parent_now), (Some(then), Some(now)) if now > then)
    }
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

    /// A pod slice with one container scope in it, as the systemd driver lays them out.
    fn slice(name: &str) -> (PathBuf, PathBuf) {
        let pod = std::env::temp_dir().join(format!("oom-{name}-{}", std::process::id()));
        let scope = pod.join("cri-containerd-c1.scope");
        std::fs::create_dir_all(&scope).unwrap();
        std::fs::write(pod.join("memory.events"), "oom 0\noom_kill 0\n").unwrap();
        std::fs::write(scope.join("memory.events"), "oom 0\noom_kill 0\n").unwrap();
        (pod, scope)
    }

    #[tokio::test]
    async fn v2_kill_is_reported_when_systemd_removes_the_scope_before_the_watch_looks() {
        let (pod, scope) = slice("gone");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let task = watch(MemoryCgroup::V2(scope.clone()), move || {
            let _ = tx.send(());
        })
        .unwrap();
        // The kernel's kill raises both counts, then systemd removes the emptied scope, all
        // before the watch runs (this test's runtime has one thread: it runs at the await).
        std::fs::write(scope.join("memory.events"), "oom 1\noom_kill 1\n").unwrap();
        std::fs::write(pod.join("memory.events"), "oom 1\noom_kill 1\n").unwrap();
        std::fs::remove_dir_all(&scope).unwrap();
        let got = tokio::time::timeout(std::time::Duration::from_secs(2), rx.recv()).await;
        assert!(
            matches!(got, Ok(Some(()))),
            "the OOM kill was lost with the scope"
        );
        tokio::time::timeout(std::time::Duration::from_secs(2), task)
            .await
            .expect("the watch ends when the cgroup goes")
            .unwrap();
        assert!(rx.try_recv().is_err(), "reported twice");
        std::fs::remove_dir_all(&pod).unwrap();
    }

    #[tokio::test]
    async fn v2_a_siblings_kill_is_not_this_containers() {
        let (pod, scope) = slice("sibling");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let task = watch(MemoryCgroup::V2(scope.clone()), move || {
            let _ = tx.send(());
        })
        .unwrap();
        // A sibling's kill shows in the pod's count only; the watch looks at both.
        std::fs::write(pod.join("memory.events"), "oom 1\noom_kill 1\n").unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        // Later this container exits normally and its scope goes.
        std::fs::remove_dir_all(&scope).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(2), task)
            .await
            .expect("the watch ends when the cgroup goes")
            .unwrap();
        assert!(
            rx.try_recv().is_err(),
            "a sibling's OOM kill was reported as this one's"
        );
        std::fs::remove_dir_all(&pod).unwrap();
    }
}
