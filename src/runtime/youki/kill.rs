//! Signalling every process of a container through its cgroup, so that none escapes by
//! forking between the listing and the signal: SIGKILL goes through `cgroup.kill` on
//! cgroup v2 (the kernel kills the whole subtree at once) and through freeze, signal,
//! thaw on cgroup v1 (and hybrid hosts). The freezer is polled with tokio's timer: the
//! daemon must stay single-threaded (it forks its workers), so nothing here may block it or
//! start a thread.

use std::path::{Path, PathBuf};
use std::time::Duration;

use libcgroups::common::{AnyCgroupManager, CgroupManager};
use serde::Deserialize;

use crate::error::{Error, Result};

/// How long a v1 cgroup may take to report FROZEN before it is signalled anyway.
const FREEZE_WAIT: Duration = Duration::from_secs(2);

/// Whether the spec (`config.json`) gives the container a PID namespace of its own: a
/// `pid` namespace without a path. Without one (it joined another container's, or the
/// host's), its processes outlive its init, which the kernel does for a namespace's init
/// only. A spec that cannot be read counts as "no": killing what is left is the safe side,
/// and runc-v2's shim decides the same way.
pub fn has_own_pid_namespace(config: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Spec {
        linux: Option<Linux>,
    }
    #[derive(Deserialize)]
    struct Linux {
        #[serde(default)]
        namespaces: Vec<Namespace>,
    }
    #[derive(Deserialize)]
    struct Namespace {
        #[serde(rename = "type")]
        kind: String,
        #[serde(default)]
        path: Option<String>,
    }
    serde_json::from_slice::<Spec>(config)
        .ok()
        .and_then(|s| s.linux)
        .is_some_and(|l| {
            l.namespaces
                .iter()
                .any(|n| n.kind == "pid" && n.path.as_deref().unwrap_or("").is_empty())
        })
}

/// Sends `signal` to every process in the container's cgroup (`id` names it in errors).
/// `unified`: the container's directory on a v2 host; `v1_freezer`: its freezer directory
/// on a v1 or hybrid host.
pub async fn signal_cgroup(
    cgroup: &AnyCgroupManager,
    unified: Option<&Path>,
    v1_freezer: Option<&Path>,
    id: &str,
    signal: i32,
) -> Result<()> {
    let pids = all_pids(cgroup, unified, id)?;
    if pids.is_empty() {
        return Ok(());
    }
    if signal != libc::SIGKILL {
        // A request (SIGTERM, say) is not worth freezing for: a process that forks now
        // is asked again by whoever follows up with SIGKILL. Freezing would also thaw a
        // container the user paused.
        return signal_each(&pids, id, signal);
    }
    if !matches!(cgroup, AnyCgroupManager::V1(_))
        && let Some(dir) = unified_dir_of(&pids, Path::new("/proc"), Path::new("/sys/fs/cgroup"))
        && cgroup_kill(&dir)?
    {
        return Ok(());
    }
    let Some(freezer) = v1_freezer else {
        // v2 before 5.14 (no cgroup.kill): one by one.
        return signal_each(&all_pids(cgroup, unified, id)?, id, signal);
    };
    // Frozen, nothing can fork between the listing and the signal; thawed after, so the
    // killed processes (and those of a paused container) can die.
    match freeze(freezer, FREEZE_WAIT).await {
        Ok(true) => {}
        Ok(false) => log::warn!("{id} not FROZEN after {FREEZE_WAIT:?}: killing it anyway"),
        Err(e) => log::warn!("freeze {id} to kill it: {e}; killing it unfrozen"),
    }
    let killed = all_pids(cgroup, unified, id).and_then(|pids| signal_each(&pids, id, signal));
    if let Err(e) = write_state(freezer, "THAWED") {
        log::warn!("thaw {id} after killing it: {e}");
    }
    killed
}

fn write_state(dir: &Path, state: &str) -> Result<()> {
    let file = dir.join("freezer.state");
    std::fs::write(&file, state)
        .map_err(|e| Error::io(format!("write {state} to {}", file.display()), e))
}

/// Asks the v1 freezer in `dir` to freeze and waits (on the timer, at most `limit`) until
/// it says FROZEN: true if it did. A cgroup goes through FREEZING while its tasks stop.
async fn freeze(dir: &Path, limit: Duration) -> Result<bool> {
    let file = dir.join("freezer.state");
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        write_state(dir, "FROZEN")?;
        let now = std::fs::read_to_string(&file)
            .map_err(|e| Error::io(format!("read {}", file.display()), e))?;
        if now.trim() == "FROZEN" {
            return Ok(true);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The container's v1 freezer directory: the freezer hierarchy's mount point and the
/// cgroup path libcontainer recorded (cgroupfs, which libcontainer uses on v1 even with
/// the systemd driver).
pub fn v1_freezer_dir(cgroup_path: &Path) -> Result<PathBuf> {
    let mount =
        libcgroups::v1::util::get_subsystem_mount_point(&libcgroups::v1::ControllerType::Freezer)
            .map_err(|e| Error::Runtime(format!("freezer mount point: {e}")))?;
    let rel = cgroup_path.strip_prefix("/").unwrap_or(cgroup_path);
    if rel
        .components()
        .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(Error::Runtime(format!(
            "cgroup path {} leaves the freezer hierarchy",
            cgroup_path.display()
        )));
    }
    Ok(mount.join(rel))
}

/// Every process in the container's cgroup. A v2 cgroup (`unified`) that no longer exists
/// has none: systemd removes a unit's cgroup as soon as it is empty, i.e. right after the
/// init exits, before containerd's Delete sends its Kill(all) (which must then succeed:
/// containerd retries any other answer for ever, and StopContainer never returns).
pub fn all_pids(cgroup: &AnyCgroupManager, unified: Option<&Path>, id: &str) -> Result<Vec<i32>> {
    match cgroup.get_all_pids() {
        Ok(v) => Ok(v.into_iter().map(|p| p.as_raw()).collect()),
        Err(_) if unified.is_some_and(|d| !d.exists()) => Ok(Vec::new()),
        Err(e) => Err(Error::Runtime(format!("pids of {id}: {e}"))),
    }
}

fn signal_each(pids: &[i32], id: &str, signal: i32) -> Result<()> {
    for &p in pids {
        // Raw kill(2): nix's Signal has no real-time signals (SIGRTMIN+3 stops systemd
        // in a container); the pod already checked the number is 1..=64.
        // SAFETY: kill takes plain integers.
        if unsafe { libc::kill(p, signal) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ESRCH) {
                return Err(Error::io(
                    format!("kill {p} in {id} with signal {signal}"),
                    e,
                ));
            }
        }
    }
    Ok(())
}

/// Writes `cgroup.kill` in `dir`: true once written, false if the kernel has none.
fn cgroup_kill(dir: &Path) -> Result<bool> {
    let file = dir.join("cgroup.kill");
    match std::fs::OpenOptions::new().write(true).open(&file) {
        Ok(mut f) => {
            use std::io::Write;
            f.write_all(b"1")
                .map_err(|e| Error::io(format!("write {}", file.display()), e))?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(format!("open {}", file.display()), e)),
    }
}

/// The unified (v2) cgroup holding every one of `pids`: their deepest common ancestor,
/// read from each one's `/proc/<pid>/cgroup` (`0::/path`). That is the container's cgroup
/// or, when the container made sub-cgroups, one inside it that holds all that is left:
/// killing its subtree kills exactly those. The container's own path is not needed, which
/// spares resolving the systemd driver's `slice:prefix:name` form. None if a process
/// is gone or not in a unified hierarchy.
fn unified_dir_of(pids: &[i32], proc: &Path, mount: &Path) -> Option<PathBuf> {
    let mut common: Option<Vec<String>> = None;
    for pid in pids {
        let text = std::fs::read_to_string(proc.join(pid.to_string()).join("cgroup")).ok()?;
        let path = crate::cgroup::path::unified_line(&text)?;
        let parts: Vec<String> = path
            .split('/')
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect();
        common = Some(match common {
            None => parts,
            Some(c) => c
                .into_iter()
                .zip(parts)
                .take_while(|(a, b)| a == b)
                .map(|(a, _)| a)
                .collect(),
        });
    }
    let common = common?;
    // Never the root cgroup: that would be every process of the machine.
    if common.is_empty() || common.iter().any(|c| c == "..") {
        return None;
    }
    Some(common.iter().fold(mount.to_path_buf(), |p, c| p.join(c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_pid_namespace_is_a_pid_namespace_without_a_path() {
        let own = br#"{"linux":{"namespaces":[{"type":"mount"},{"type":"pid"}]}}"#;
        assert!(has_own_pid_namespace(own));
        let empty_path = br#"{"linux":{"namespaces":[{"type":"pid","path":""}]}}"#;
        assert!(has_own_pid_namespace(empty_path));
        // Joined another container's (ctr --with-ns, CRI shareProcessNamespace).
        let joined = br#"{"linux":{"namespaces":[{"type":"pid","path":"/proc/42/ns/pid"}]}}"#;
        assert!(!has_own_pid_namespace(joined));
        // The host's (CRI hostPID: no pid entry at all).
        let host = br#"{"linux":{"namespaces":[{"type":"mount"},{"type":"network"}]}}"#;
        assert!(!has_own_pid_namespace(host));
        assert!(!has_own_pid_namespace(br#"{"ociVersion":"1.0.2"}"#));
        // Unreadable: kill what is left rather than leave it running.
        assert!(!has_own_pid_namespace(b"not json"));
    }

    fn fake_proc(entries: &[(i32, &str)]) -> tempfile_dir::Dir {
        let d = tempfile_dir::Dir::new("proc");
        for (pid, cgroup) in entries {
            std::fs::create_dir_all(d.0.join(pid.to_string())).unwrap();
            std::fs::write(d.0.join(pid.to_string()).join("cgroup"), cgroup).unwrap();
        }
        d
    }

    #[test]
    fn unified_dir_is_the_deepest_cgroup_holding_every_pid() {
        let proc = fake_proc(&[
            (10, "0::/k8s.slice/pod1/ctr\n"),
            (11, "0::/k8s.slice/pod1/ctr/sub\n"),
            (12, "0::/k8s.slice/pod1/ctr/sub/deeper\n"),
        ]);
        let mount = Path::new("/sys/fs/cgroup");
        assert_eq!(
            unified_dir_of(&[10, 11, 12], &proc.0, mount),
            Some(PathBuf::from("/sys/fs/cgroup/k8s.slice/pod1/ctr"))
        );
        assert_eq!(
            unified_dir_of(&[11, 12], &proc.0, mount),
            Some(PathBuf::from("/sys/fs/cgroup/k8s.slice/pod1/ctr/sub"))
        );
    }

    #[test]
    fn unified_dir_is_never_the_root_nor_a_v1_only_process() {
        let proc = fake_proc(&[
            (20, "0::/a/b\n"),
            (21, "0::/c\n"),
            (22, "12:freezer:/default/x\n"),
            (23, "0::/\n"),
        ]);
        let mount = Path::new("/sys/fs/cgroup");
        assert_eq!(unified_dir_of(&[20, 21], &proc.0, mount), None);
        assert_eq!(unified_dir_of(&[22], &proc.0, mount), None);
        assert_eq!(unified_dir_of(&[23], &proc.0, mount), None);
        // A process that is gone: no answer rather than a guess.
        assert_eq!(unified_dir_of(&[20, 99], &proc.0, mount), None);
    }

    #[tokio::test]
    async fn v1_freeze_writes_frozen_and_waits_until_the_kernel_says_so() {
        let dir = tempfile_dir::Dir::new("freezer");
        std::fs::write(dir.0.join("freezer.state"), "THAWED\n").unwrap();
        // A plain file reads back what was written: FROZEN at once.
        assert!(freeze(&dir.0, Duration::from_millis(100)).await.unwrap());
        assert_eq!(
            std::fs::read_to_string(dir.0.join("freezer.state")).unwrap(),
            "FROZEN"
        );
        write_state(&dir.0, "THAWED").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.0.join("freezer.state")).unwrap(),
            "THAWED"
        );
        // No freezer there: an error naming the file, not a hang.
        let gone = dir.0.join("gone");
        let e = freeze(&gone, Duration::from_millis(100)).await.unwrap_err();
        assert!(e.to_string().contains("freezer.state"), "{e}");
    }

    #[test]
    fn v1_freezer_dir_stays_in_the_hierarchy() {
        if let Ok(d) = v1_freezer_dir(Path::new("/default/c1")) {
            assert!(d.ends_with("default/c1"), "{}", d.display());
        }
        assert!(v1_freezer_dir(Path::new("/../../etc")).is_err());
    }

    #[test]
    fn cgroup_kill_writes_1_or_says_the_kernel_has_none() {
        let dir = tempfile_dir::Dir::new("cg");
        assert!(!cgroup_kill(&dir.0).unwrap(), "no cgroup.kill: fall back");
        std::fs::write(dir.0.join("cgroup.kill"), "").unwrap();
        assert!(cgroup_kill(&dir.0).unwrap());
        assert_eq!(
            std::fs::read_to_string(dir.0.join("cgroup.kill")).unwrap(),
            "1"
        );
    }

    #[test]
    fn a_vanished_v2_cgroup_has_no_processes() {
        let dir = tempfile_dir::Dir::new("v2");
        let manager = |rel: &str| {
            AnyCgroupManager::V2(
                libcgroups::v2::manager::Manager::new(dir.0.clone(), PathBuf::from(rel)).unwrap(),
            )
        };
        // systemd removed the scope once it was empty: nothing to list or kill.
        let gone = dir.0.join("gone.scope");
        assert_eq!(
            all_pids(&manager("gone.scope"), Some(&gone), "c1").unwrap(),
            Vec::<i32>::new()
        );
        // One that is there but cannot be listed is still an error naming the container.
        let odd = dir.0.join("odd.scope");
        std::fs::write(&odd, "").unwrap();
        let e = all_pids(&manager("odd.scope"), Some(&odd), "c1").unwrap_err();
        assert!(e.to_string().contains("pids of c1"), "{e}");
        // The listing itself.
        let live = dir.0.join("live.scope");
        std::fs::create_dir_all(&live).unwrap();
        std::fs::write(live.join("cgroup.procs"), "12\n34\n").unwrap();
        assert_eq!(
            all_pids(&manager("live.scope"), Some(&live), "c1").unwrap(),
            vec![12, 34]
        );
    }

    /// A scratch directory removed on drop (no tempfile crate in this project).
    mod tempfile_dir {
        use std::path::PathBuf;
        use std::sync::atomic::{AtomicU32, Ordering};

        pub struct Dir(pub PathBuf);

        impl Dir {
            pub fn new(tag: &str) -> Dir {
                static N: AtomicU32 = AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "youki-kill-{tag}-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::SeqCst)
                ));
                let _ = std::fs::remove_dir_all(&p);
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }

        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }
}
