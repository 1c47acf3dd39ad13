//! runc-v2's `io.containerd.runc.v1.Options`, as operators set them: in CRI's runtime
//! `[options]` table, which reaches the shim as TOML (`ctr --runtime-config-path` sends the
//! same through a file). Each honoured field is checked for its effect on the node; a field
//! we cannot honour must fail the container, naming the field.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::{
    BUSYBOX, NS, RUNTIME, RemoveOnDrop, assert_nothing_left, ctr, remove, shim_pids, task_pid,
    unique, wait_until,
};

/// `ctr run -d` of busybox `cmd` as `id`, with `toml` as the runtime's options.
fn run_with_options(id: &str, toml: &str, cmd: &[&str]) -> Output {
    let file = std::env::temp_dir().join(format!("{id}.toml"));
    std::fs::write(&file, toml).unwrap();
    let path = file.to_str().unwrap();
    let mut args = vec![
        "run",
        "-d",
        "--runtime-config-path",
        path,
        "--runtime",
        RUNTIME,
        BUSYBOX,
        id,
    ];
    args.extend_from_slice(cmd);
    let o = ctr(&args);
    let _ = std::fs::remove_file(&file);
    o
}

fn ok(o: &Output) {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// A field runc-v2 honours and we cannot: refused by name, nothing left behind.
#[test]
fn binary_name_is_refused_by_name() {
    let id = unique("binname");
    let _guard = RemoveOnDrop(id.clone());
    let o = run_with_options(&id, "BinaryName = \"crun\"\n", &["sleep", "100"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "BinaryName was accepted");
    // ctr shows the message, not the code (unit tests check InvalidArgument).
    assert!(err.contains("BinaryName") && err.contains("crun"), "{err}");
    let _ = ctr(&["container", "rm", &id]);
    assert_nothing_left(&id);
}

fn parent_of(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

/// The long-lived shim processes serving `id`: the daemon (the shim process whose parent is
/// not one) and its fork helper (its child). Workers the helper forks come and go, and
/// join the container's cgroup when they make its init; the init itself (the daemon's
/// child too, as its subreaper) may not have exec'd its command yet when ctr returns.
fn shim_processes(id: &str) -> Vec<i32> {
    let init = task_pid(id);
    let pids: Vec<i32> = shim_pids(id).into_iter().filter(|p| *p != init).collect();
    let daemons: Vec<i32> = pids
        .iter()
        .copied()
        .filter(|p| !pids.contains(&parent_of(*p)))
        .collect();
    assert_eq!(daemons.len(), 1, "shim daemons of {id}: {daemons:?}");
    let mut long_lived = daemons.clone();
    long_lived.extend(pids.iter().copied().filter(|p| parent_of(*p) == daemons[0]));
    long_lived
}

fn cgroup_of(pid: i32, controller: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, names, path) = (f.next()?, f.next()?, f.next()?);
            let hit = if controller.is_empty() {
                names.is_empty()
            } else {
                names.split(',').any(|n| n == controller)
            };
            hit.then(|| path.to_string())
        })
        .unwrap_or_default()
}

/// The cgroup directories a test made for the shim, in each hierarchy that is there.
struct ShimCgroup {
    name: String,
    dirs: Vec<PathBuf>,
    unified: bool,
}

impl ShimCgroup {
    fn new(name: &str) -> ShimCgroup {
        let root = Path::new("/sys/fs/cgroup");
        let unified = root.join("cgroup.controllers").exists();
        let dirs: Vec<PathBuf> = if unified {
            vec![root.join(name)]
        } else {
            ["memory", "pids"]
                .iter()
                .map(|c| root.join(c).join(name))
                .collect()
        };
        for d in &dirs {
            std::fs::create_dir_all(d).unwrap();
        }
        ShimCgroup {
            name: name.to_string(),
            dirs,
            unified,
        }
    }
}

impl Drop for ShimCgroup {
    fn drop(&mut self) {
        for d in &self.dirs {
            // Empty once the shim has exited.
            wait_until(Duration::from_secs(10), || std::fs::remove_dir(d).is_ok());
        }
    }
}

/// containerd's TestShimInCgroup: the shim runs in the cgroup ShimCgroup names (and so does
/// its fork helper, which forks every container init). A cgroup that does not exist fails
/// the start, naming it, and leaves nothing behind.
#[test]
fn shim_cgroup_holds_the_shim() {
    let cg = ShimCgroup::new(&format!("youki-shimcg-{}", std::process::id()));
    let id = unique("shimcg");
    {
        let _guard = RemoveOnDrop(id.clone());
        ok(&run_with_options(
            &id,
            &format!("ShimCgroup = \"/{}\"\n", cg.name),
            &["sleep", "100"],
        ));
        let want = format!("/{}", cg.name);
        let controller = if cg.unified { "" } else { "memory" };
        for pid in shim_processes(&id) {
            assert_eq!(cgroup_of(pid, controller), want, "shim process {pid}");
            if !cg.unified {
                assert_eq!(cgroup_of(pid, "pids"), want, "shim process {pid}");
            }
        }
        let procs = std::fs::read_to_string(cg.dirs[0].join("cgroup.procs")).unwrap();
        assert!(!procs.trim().is_empty(), "no process in {}", cg.name);
    }
    assert_nothing_left(&id);

    let missing = unique("shimcg-missing");
    let _guard = RemoveOnDrop(missing.clone());
    let o = run_with_options(
        &missing,
        "ShimCgroup = \"/youki-no-such-cgroup\"\n",
        &["sleep", "100"],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "a missing ShimCgroup was accepted");
    assert!(err.contains("youki-no-such-cgroup"), "{err}");
    let _ = ctr(&["container", "rm", &missing]);
    assert_nothing_left(&missing);
}

/// IoUid/IoGid: the container's stdio (containerd's fifos) belongs to that user, so a
/// user-namespaced container's root can reopen /dev/stdout.
#[test]
fn io_uid_and_gid_own_the_stdio_fifos() {
    let id = unique("iouid");
    let _guard = RemoveOnDrop(id.clone());
    ok(&run_with_options(
        &id,
        "IoUid = 4321\nIoGid = 8765\n",
        &["sleep", "100"],
    ));
    let pid = task_pid(&id);
    for fd in [1, 2] {
        let m = std::fs::metadata(format!("/proc/{pid}/fd/{fd}")).unwrap();
        assert!(
            std::os::unix::fs::FileTypeExt::is_fifo(&m.file_type()),
            "fd {fd} is no fifo"
        );
        assert_eq!((m.uid(), m.gid()), (4321, 8765), "owner of fd {fd}");
    }
    remove(&id);
    assert_nothing_left(&id);
}

/// Whether root sees a session keyring named as runc names container `id`'s, in
/// /proc/keys ("... keyring _ses.<id>: empty").
fn keyring_of(id: &str) -> bool {
    let name = format!("_ses.{id}:");
    std::fs::read_to_string("/proc/keys")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().any(|w| w == name))
}

/// Without NoNewKeyring a container gets a session keyring of its own, as with runc; with
/// it, none (it shares the shim's).
#[test]
fn no_new_keyring_decides_the_session_keyring() {
    let own = unique("keyring");
    let shared = unique("nokeyring");
    let _g1 = RemoveOnDrop(own.clone());
    let _g2 = RemoveOnDrop(shared.clone());
    ok(&run_with_options(&own, "", &["sleep", "100"]));
    ok(&run_with_options(
        &shared,
        "NoNewKeyring = true\n",
        &["sleep", "100"],
    ));
    let keys = std::fs::read_to_string("/proc/keys").unwrap_or_default();
    assert!(keyring_of(&own), "no keyring _ses.{own}: {keys}");
    assert!(!keyring_of(&shared), "keyring _ses.{shared}: {keys}");
    remove(&own);
    remove(&shared);
    assert_nothing_left(&own);
    assert_nothing_left(&shared);
}

/// How many mounts container init `pid`'s mount namespace holds in all, reachable from its
/// root or not (listmount(2) by namespace ID, Linux ≥ 6.11); `None` where the kernel
/// cannot say.
fn mounts_in_namespace(pid: i32) -> Option<usize> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/mnt")).ok()?;
    let mut ns_id: u64 = 0;
    const NS_GET_MNTNS_ID: libc::c_ulong = 0x8008_b705;
    // SAFETY: the ioctl writes one u64 into ns_id.
    let r = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&ns),
            NS_GET_MNTNS_ID,
            &mut ns_id,
        )
    };
    if r < 0 {
        return None;
    }
    #[repr(C)]
    struct MntIdReq {
        size: u32,
        spare: u32,
        mnt_id: u64,
        param: u64,
        mnt_ns_id: u64,
    }
    const LSMT_ROOT: u64 = u64::MAX;
    const SYS_LISTMOUNT: libc::c_long = 458;
    let req = MntIdReq {
        size: std::mem::size_of::<MntIdReq>() as u32,
        spare: 0,
        mnt_id: LSMT_ROOT,
        param: 0,
        mnt_ns_id: ns_id,
    };
    let mut ids = vec![0u64; 4096];
    // SAFETY: listmount fills at most ids.len() u64s.
    let n = unsafe { libc::syscall(SYS_LISTMOUNT, &req, ids.as_mut_ptr(), ids.len(), 0u32) };
    (n >= 0).then_some(n as usize)
}

fn mountinfo_lines(pid: i32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .unwrap_or_default()
        .lines()
        .count()
}

/// NoPivotRoot: libcontainer moves the rootfs over `/` and chroots instead of pivot_root,
/// so the host's mounts stay in the container's mount namespace, out of its sight. With
/// pivot_root they are gone: every mount of the namespace is one the container sees.
#[test]
fn no_pivot_root_moves_the_root_instead() {
    let pivot = unique("pivot");
    let moved = unique("nopivot");
    // `ctr run --no-pivot`: the client's WithNoPivotRoot (1.x: v1 CreateOptions as the
    // task's options; 2.x: runc's Options).
    let flag = unique("noflag");
    let _g1 = RemoveOnDrop(pivot.clone());
    let _g2 = RemoveOnDrop(moved.clone());
    let _g3 = RemoveOnDrop(flag.clone());
    ok(&run_with_options(&pivot, "", &["sleep", "100"]));
    ok(&run_with_options(
        &moved,
        "NoPivotRoot = true\n",
        &["sleep", "100"],
    ));
    ok(&ctr(&[
        "run",
        "-d",
        "--no-pivot",
        "--runtime",
        RUNTIME,
        BUSYBOX,
        &flag,
        "sleep",
        "100",
    ]));
    let p = task_pid(&pivot);
    for id in [&moved, &flag] {
        let m = task_pid(id);
        // The container runs either way, and sees the same.
        assert_eq!(mountinfo_lines(p), mountinfo_lines(m), "{id}");
        match (mounts_in_namespace(p), mounts_in_namespace(m)) {
            (Some(all_p), Some(all_m)) => {
                assert_eq!(all_p, mountinfo_lines(p), "pivot_root left hidden mounts");
                assert!(
                    all_m > mountinfo_lines(m),
                    "{id}: no hidden mounts ({all_m}), so pivot_root was used"
                );
            }
            _ => eprintln!("listmount(2) unavailable: only checked that the container runs"),
        }
    }
    for id in [&pivot, &moved, &flag] {
        remove(id);
        assert_nothing_left(id);
    }
}

/// The youki-shims binary, read-only here (no --kill: other containers share the node).
const TOOL: &str = env!("CARGO_BIN_EXE_youki-shims");

/// Root: libcontainer's state lives in `<Root>/<namespace>/<id>`, not in
/// /run/containerd/youki; youki-shims finds the container there; and when the shim dies,
/// containerd's `delete` still finds and removes it.
#[test]
fn root_moves_the_state_and_cleanup_finds_it() {
    let base = PathBuf::from(format!("/run/youki-options-root-{}", std::process::id()));
    let id = unique("root");
    let _guard = RemoveOnDrop(id.clone());
    ok(&run_with_options(
        &id,
        &format!("Root = \"{}\"\n", base.display()),
        &["sleep", "100"],
    ));
    let state = base.join(NS).join(&id);
    assert!(
        state.join("state.json").exists(),
        "no state in {}",
        state.display()
    );
    assert!(
        !Path::new("/run/containerd/youki")
            .join(NS)
            .join(&id)
            .exists(),
        "state in the default root too"
    );
    let pid = task_pid(&id);

    let o = Command::new(TOOL)
        .args(["--address", &common::address(), "--grace", "0"])
        .output()
        .expect("youki-shims");
    let out = String::from_utf8_lossy(&o.stdout);
    let row = out.lines().find(|l| l.contains(&id[..13]));
    assert!(
        row.is_some_and(|r| r.contains(&pid.to_string()) && r.ends_with("known")),
        "youki-shims does not list {id}: {out}"
    );

    // The shim dies; containerd runs `delete`, which must find the state under Root.
    for p in shim_pids(&id) {
        // SAFETY: kill takes plain integers; these are this test's shim processes.
        unsafe { libc::kill(p, libc::SIGKILL) };
    }
    assert!(
        wait_until(Duration::from_secs(20), || common::task_status(&id)
            != "RUNNING"),
        "containerd never noticed the dead shim of {id}"
    );
    assert!(
        wait_until(Duration::from_secs(10), || !state.exists()),
        "state left in {}",
        state.display()
    );
    remove(&id);
    assert_nothing_left(&id);
    // The namespace's directory keeps the daemon's console-socket directory; the base
    // and its registration are this test's own.
    let _ = std::fs::remove_dir_all(&base);
    let key = <sha2::Sha256 as sha2::Digest>::digest(base.as_os_str().as_encoded_bytes());
    let _ = std::fs::remove_file(Path::new("/run/containerd/youki/.roots").join(hex::encode(key)));
}
