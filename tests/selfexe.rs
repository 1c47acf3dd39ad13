//! CVE-2019-5736 against our shim: container inits and execs are clones of the shim daemon
//! until they exec the user's program, so a program `#!/proc/self/exe` makes the kernel run
//! the shim's executable inside the container (with the container's loader and libraries).
//! What runs it is a dumpable process of the container: the container can open it through
//! `/proc/<pid>/exe`, keep the fd after every process of the shim's binary is gone, and
//! reopen it for writing (`/proc/self/fd/N`) once ETXTBSY no longer protects it — or write
//! the same inode after an in-place upgrade. The next shim started from that file would run
//! the container's code as root on the host.
//!
//! The test plays every step against a copy of the shim binary of its own (containerd runs
//! it by absolute path as the runtime), so the file it tries to overwrite is never one that
//! serves anybody else: the container's libraries are the host's (bind-mounted read-only,
//! an attacker's image brings its own), the entrypoint and an exec are `#!/proc/self/exe
//! -info` scripts (the shim's `-info` reads stdin, which the test holds open), another exec
//! grabs `/proc/1/exe`, and a second container (host PID namespace, another copy of the
//! shim, so it outlives the first one's) holds the executable's fd and tries to write it
//! while the first container's shim runs, after it has exited, and after an in-place
//! upgrade of the file. Every way found is reported at the end.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use common::client::Client;
use common::{BUSYBOX, ctr, ctr_cmd, ctr_ok, remove, task_pid, task_status, unique, wait_until};

const SHIM: &str = env!("CARGO_BIN_EXE_containerd-shim-youki-v2");
const ENTRY: &str = "#!/proc/self/exe -info\n";

/// (device, inode) of what `path` leads to (a /proc magic link is followed).
fn identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

fn copy_shim(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let to = dir.join("containerd-shim-youki-v2");
    std::fs::copy(SHIM, &to).expect("copy the shim binary");
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
    to
}

/// ctr's --mount for the host's libraries (the shim's loader and libc), read-only.
fn library_mounts() -> Vec<String> {
    ["/lib", "/lib64"]
        .iter()
        .filter_map(|d| {
            let src = std::fs::canonicalize(d).ok()?;
            Some(format!(
                "type=bind,src={},dst={d},options=rbind:ro",
                src.display()
            ))
        })
        .collect()
}

/// Every process in `pid`'s PID namespace (the container's).
fn processes_in_namespace_of(pid: i32) -> Vec<i32> {
    let Ok(ns) = std::fs::read_link(format!("/proc/{pid}/ns/pid")) else {
        return Vec::new();
    };
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            std::fs::read_link(format!("/proc/{p}/ns/pid"))
                .ok()
                .as_ref()
                == Some(&ns)
        })
        .collect()
}

/// What of `pids` reaches the file `target`: its executable or any fd.
fn handles_on(pids: &[i32], target: (u64, u64)) -> Vec<String> {
    let mut found = Vec::new();
    for p in pids {
        let cmd = std::fs::read(format!("/proc/{p}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .unwrap_or_default();
        if identity(Path::new(&format!("/proc/{p}/exe"))) == Some(target) {
            found.push(format!("process {p} ({}) runs it", cmd.trim()));
        }
        for fd in std::fs::read_dir(format!("/proc/{p}/fd"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if identity(&fd.path()) == Some(target) {
                found.push(format!(
                    "process {p} ({}) holds fd {}",
                    cmd.trim(),
                    fd.file_name().to_string_lossy()
                ));
            }
        }
    }
    found
}

/// Any process on the machine running `target`.
fn running(target: (u64, u64)) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| identity(Path::new(&format!("/proc/{p}/exe"))) == Some(target))
        .collect()
}

/// A ctr command left running with its stdin a pipe we hold (the process's stdin stays
/// open until it is dropped).
fn spawn_holding_stdin(args: &[&str]) -> Child {
    ctr_cmd(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ctr")
}

fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .unwrap_or_default()
}

struct Cleanup {
    dir: PathBuf,
    ids: Vec<String>,
    children: Vec<Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for id in &self.ids {
            remove(id);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_container_can_neither_write_the_shim_binary_nor_keep_a_handle_on_it() {
    let a = unique("selfexe-a");
    let b = unique("selfexe-b");
    let dir = std::env::temp_dir().join(format!("youki-{a}"));
    let mut cleanup = Cleanup {
        dir: dir.clone(),
        ids: vec![a.clone(), b.clone()],
        children: Vec::new(),
    };
    let victim = copy_shim(&dir.join("victim"));
    let other = copy_shim(&dir.join("other"));
    let original = std::fs::read(&victim).unwrap();
    let target = identity(&victim).unwrap();
    let atk = dir.join("atk");
    let xfer = dir.join("xfer");
    std::fs::create_dir_all(&atk).unwrap();
    std::fs::create_dir_all(&xfer).unwrap();
    std::fs::write(atk.join("entry"), ENTRY).unwrap();
    std::fs::set_permissions(atk.join("entry"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut ways_in: Vec<String> = Vec::new();

    // A: its entrypoint is `#!/proc/self/exe -info`; its stdin stays open, so what the
    // kernel runs for it stays running.
    let victim_s = victim.to_string_lossy().into_owned();
    let atk_mount = format!("type=bind,src={},dst=/atk,options=rbind:ro", atk.display());
    let libs = library_mounts();
    let mut run = vec!["run", "--runtime", &victim_s];
    for m in libs.iter().chain([&atk_mount]) {
        run.extend(["--mount", m]);
    }
    run.extend([BUSYBOX, &a, "/atk/entry"]);
    cleanup.children.push(spawn_holding_stdin(&run));
    assert!(
        wait_until(Duration::from_secs(20), || task_status(&a) == "RUNNING"),
        "container {a} never ran"
    );
    let init = task_pid(&a);
    // The entrypoint ran: what runs now is what `#!/proc/self/exe` named.
    assert!(
        wait_until(Duration::from_secs(10), || cmdline(init).contains("-info")),
        "the entrypoint did not run: {}",
        cmdline(init)
    );

    // An exec of the same script (the exec shape: an exec process is a clone of the shim
    // too until it execs), and an exec that opens what PID 1 runs, O_RDONLY.
    cleanup.children.push(spawn_holding_stdin(&[
        "task",
        "exec",
        "--exec-id",
        "shebang",
        &a,
        "/atk/entry",
    ]));
    let marker = format!("{}", 100_000 + std::process::id() % 100_000);
    ctr_ok(&[
        "task",
        "exec",
        "-d",
        "--exec-id",
        "grab",
        &a,
        "sh",
        "-c",
        &format!("exec 7</proc/1/exe; while sleep 1; do :; done # {marker}"),
    ]);
    assert!(
        wait_until(Duration::from_secs(10), || {
            let ps = processes_in_namespace_of(init);
            ps.iter().filter(|p| cmdline(**p).contains("-info")).count() >= 2
                && ps.iter().any(|p| cmdline(*p).contains(&marker))
        }),
        "the execs did not run: {:?}",
        processes_in_namespace_of(init)
            .iter()
            .map(|p| cmdline(*p))
            .collect::<Vec<_>>()
    );
    ways_in.extend(handles_on(&processes_in_namespace_of(init), target));

    // B: another container, started by another copy of the shim (so it outlives A's), in
    // the host PID namespace. It opens what A's init runs and keeps the fd, then tries to
    // reopen it for writing until it can.
    let other_s = other.to_string_lossy().into_owned();
    let xfer_mount = format!("type=bind,src={},dst=/x,options=rbind", xfer.display());
    ctr_ok(&[
        "container",
        "create",
        "--runtime",
        &other_s,
        "--mount",
        &xfer_mount,
        BUSYBOX,
        &b,
    ]);
    let script = format!(
        "exec 7</proc/{init}/exe || {{ echo nofd > /x/state; exit 0; }}
         echo held > /x/state
         while :; do
           if {{ echo PWNED >> /proc/self/fd/7; }} 2>/dev/null; then echo wrote > /x/state; fi
           sleep 0.2
         done"
    );
    Client::new().edit_spec(&b, |spec| {
        spec["process"]["args"] = serde_json::json!(["sh", "-c", script]);
        if let Some(ns) = spec["linux"]["namespaces"].as_array_mut() {
            ns.retain(|n| n["type"] != "pid");
        }
    });
    ctr_ok(&["task", "start", "-d", &b]);
    let state = || {
        std::fs::read_to_string(xfer.join("state"))
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    assert!(
        wait_until(Duration::from_secs(20), || !state().is_empty()),
        "container {b} never reported"
    );
    let holder = task_pid(&b);
    ways_in.extend(handles_on(&[holder], target));
    // From here on, a state of "wrote" is news: B writes it after each write it made.
    let wrote = || {
        let w = state() == "wrote";
        let _ = std::fs::remove_file(xfer.join("state"));
        w
    };

    // While A's shim runs, ETXTBSY stops the write. Then A goes: its programs' stdin
    // closes, its task and container are removed, and its shim exits. No process runs the
    // binary any more, and B still holds its fd.
    std::thread::sleep(Duration::from_secs(1));
    if wrote() {
        ways_in.push("the shim binary was written while its shim ran".into());
    }
    for c in &mut cleanup.children {
        drop(c.stdin.take());
    }
    remove(&a);
    let gone = wait_until(Duration::from_secs(20), || running(target).is_empty());
    assert!(
        gone,
        "processes still run the binary: {:?}",
        running(target)
    );
    std::thread::sleep(Duration::from_secs(2));
    if wrote() {
        ways_in.push("the shim binary was written once no shim of it ran".into());
    }
    // An upgrade in place (as `cp new old` does: same inode, truncated and rewritten):
    // what B holds is the new binary too.
    std::fs::write(&victim, &original).expect("upgrade in place");
    std::thread::sleep(Duration::from_secs(2));
    if wrote() {
        ways_in.push("the shim binary was written after an in-place upgrade".into());
    }
    if std::fs::read(&victim).unwrap() != original {
        ways_in.push("the shim binary on disk changed".into());
    }

    // The binary still serves: a container runs with it.
    let c = unique("selfexe-c");
    let o = ctr(&["run", "--rm", "--runtime", &victim_s, BUSYBOX, &c, "true"]);
    assert!(
        o.status.success(),
        "the shim binary no longer runs a container: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    remove(&b);
    assert!(
        ways_in.is_empty(),
        "a container reached the shim's binary:\n  {}",
        ways_in.join("\n  ")
    );
    drop(cleanup);
}
