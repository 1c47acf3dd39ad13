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
    assert!(err.contains("BinaryName \\\"crun\\\"") || err.contains("BinaryName \"crun\""), "{err}");
    assert!(err.contains("InvalidArgument") || err.contains("invalid argument"), "{err}");
    let _ = ctr(&["container", "rm", &id]);
    assert_nothing_left(&id);
}

/// The daemon serving `id` (the shim process whose parent is not a shim).
fn shim_processes(id: &str) -> Vec<i32> {
    let pids = shim_pids(id);
    assert!(!pids.is_empty(), "no shim for {id}");
    pids
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
            ["memory", "pids"].iter().map(|c| root.join(c).join(name)).collect()
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
    ok(&run_with_options(&shared, "NoNewKeyring = true\n", &["sleep", "100"]));
    let keys = std::fs::read_to_string("/proc/keys").unwrap_or_default();
    assert!(keyring_of(&own), "no keyring _ses.{own}: {keys}");
    assert!(!keyring_of(&shared), "keyring _ses.{shared}: {keys}");
    remove(&own);
    remove(&shared);
    assert_nothing_left(&own);
    assert_nothing_left(&shared);
}
