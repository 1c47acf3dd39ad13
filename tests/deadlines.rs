//! Deadlines on the shim's forked-worker calls, through a real containerd (a private one:
//! its shims inherit the environment variable that shortens every deadline to seconds).
//! A createRuntime hook that never returns must make that Create fail with
//! DeadlineExceeded naming the hook, leave nothing of the container behind, never hold up
//! the other containers of the pod meanwhile, and leave a shim that still exits once its
//! pod is empty.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::client::{Client, Fifos};
use common::private::{Private, process_gone};
use common::*;
use containerd_client::tonic::Code;
use containerd_shim_protos::api::StateRequest;
use containerd_shim_protos::shim::shim_ttrpc::TaskClient;
use containerd_shim_protos::types::task::Status;

/// What every worker deadline becomes in the shims of this test's containerd (the
/// shim's `TEST_DEADLINE_ENV`).
const DEADLINE: Duration = Duration::from_secs(6);
const DEADLINE_ENV: &str = "YOUKI_SHIM_TEST_DEADLINE_SECS";
/// Groups containers into one shim, as CRI's sandbox ID does.
const GROUP: &str = "io.containerd.runc.v2.group";

/// PIDs of the processes whose command line is exactly `args`.
fn pids_running(args: &[&str]) -> Vec<i32> {
    let want: Vec<u8> = args
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want))
        .filter(|&pid| !process_gone(pid))
        .collect()
}

/// The ttrpc socket path in a bundle's `address` file (`unix://…`).
fn socket_of(address: &str) -> PathBuf {
    PathBuf::from(address.trim().trim_start_matches("unix://"))
}

/// What could be left of container `id` in the shim's and libcontainer's hands.
fn leftovers_of(id: &str) -> Vec<String> {
    let mut left = Vec::new();
    let state = Path::new("/run/containerd/youki").join(NS).join(id);
    if state.exists() {
        left.push(format!("state {}", state.display()));
    }
    for c in cgroup_dirs(id) {
        left.push(format!("cgroup {}", c.display()));
    }
    for m in mounts_of(id) {
        left.push(format!("mount {m}"));
    }
    left
}

#[test]
fn a_hung_create_hook_fails_at_its_deadline_leaves_nothing_and_blocks_no_one() {
    let mut p = Private::new("deadline");
    p.env.push((DEADLINE_ENV, DEADLINE.as_secs().to_string()));
    p.start();
    let sock = p.sock();
    let c = Client::connect(&sock);
    let group = unique("dl-pod");
    let (a, b, d) = (unique("dl-a"), unique("dl-b"), unique("dl-d"));
    p.containers.extend([a.clone(), b.clone(), d.clone()]);
    // A hook with arguments no other process has, to find it by.
    let hook_args = ["sleep", &format!("{}", 1_000_000 + std::process::id())];
    for id in [&a, &b, &d] {
        let o = p.ctr(&["container", "create", "--runtime", RUNTIME, BUSYBOX, id]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        c.edit_spec(id, |s| {
            s["annotations"][GROUP] = group.clone().into();
            s["process"]["args"] = serde_json::json!(["sleep", "600"]);
        });
    }
    c.edit_spec(&b, |s| {
        s["hooks"] = serde_json::json!({
            "createRuntime": [{"path": "/bin/sleep", "args": hook_args}]
        });
    });

    // A runs in the pod's shim.
    let fa = Fifos::new(&a);
    let _out_a = fa.read_stdout(None);
    c.create_task(&a, &fa, false).expect("create a");
    c.start(&a, "").expect("start a");
    let shim = TaskClient::new(
        ttrpc::Client::connect(&p.shim_address(&a)).expect("connect to the pod's shim"),
    );
    let state_of = |id: &str| {
        let mut r = StateRequest::new();
        r.id = id.to_string();
        let began = Instant::now();
        let s = shim.state(
            ttrpc::context::with_timeout(Duration::from_secs(3).as_nanos() as i64),
            &r,
        );
        (s, began.elapsed())
    };

    // B's create hangs in its hook, in the same shim.
    let began = Instant::now();
    let creating = {
        let (sock, b) = (sock.clone(), b.clone());
        std::thread::spawn(move || {
            let fb = Fifos::new(&b);
            let r = Client::connect(&sock).create_task(&b, &fb, false);
            (r, began.elapsed())
        })
    };
    assert!(
        wait_until(DEADLINE, || !pids_running(&hook_args).is_empty()),
        "the createRuntime hook never ran"
    );
    let hook = pids_running(&hook_args);

    // Meanwhile the pod's other containers answer at once, and a new one comes and goes.
    let (s, took) = state_of(&a);
    let s = s.expect("State of a while b's create hangs");
    assert_eq!(s.status.enum_value(), Ok(Status::RUNNING));
    assert!(took < Duration::from_secs(1), "State of a took {took:?}");
    let fd = Fifos::new(&d);
    let _out_d = fd.read_stdout(None);
    c.edit_spec(&d, |s| {
        s["process"]["args"] = serde_json::json!(["sh", "-c", "exit 3"]);
    });
    c.create_task(&d, &fd, false).expect("create d meanwhile");
    c.start(&d, "").expect("start d meanwhile");
    assert_eq!(c.wait(&d, ""), 3);
    assert_eq!(c.delete_task(&d), 3);
    assert!(
        !creating.is_finished(),
        "b's create ended before the others were done: the test proves nothing"
    );

    // B fails at its deadline, naming the hook.
    if !wait_until(DEADLINE + Duration::from_secs(20), || {
        creating.is_finished()
    }) {
        // No deadline: end the hook, so the create ends and cleans up, then fail.
        for pid in &hook {
            // SAFETY: kill takes plain integers; the hook this test configured.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
        let _ = creating.join();
        panic!(
            "the create of {b} was still hanging in its hook {:?} after {:?}: no deadline",
            hook,
            began.elapsed()
        );
    }
    let (r, took) = creating.join().expect("create thread");
    let e = r.expect_err("a create whose hook never returns succeeded");
    assert_eq!(e.code(), Code::DeadlineExceeded, "{}", e.message());
    assert!(
        e.message().contains(&format!("create {b}")),
        "{}",
        e.message()
    );
    assert!(
        e.message().contains(&hook_args.join(" ")),
        "the hook is not named: {}",
        e.message()
    );
    assert!(
        took >= DEADLINE && took < DEADLINE + Duration::from_secs(10),
        "answered after {took:?} for a deadline of {DEADLINE:?}"
    );

    // Nothing of B is left: no hook, no state, cgroup or mount; a retry with the same ID
    // (without the hook) works.
    for pid in &hook {
        assert!(
            wait_until(Duration::from_secs(5), || process_gone(*pid)),
            "hook {pid} outlived the deadline"
        );
    }
    assert!(
        wait_until(Duration::from_secs(5), || leftovers_of(&b).is_empty()),
        "left behind by the timed-out create: {:#?}",
        leftovers_of(&b)
    );
    c.edit_spec(&b, |s| {
        s["hooks"] = serde_json::json!({});
    });
    let fb = Fifos::new(&format!("{b}-again"));
    let _out_b = fb.read_stdout(None);
    c.create_task(&b, &fb, false)
        .unwrap_or_else(|e| panic!("create {b} again after the timeout: {}", e.message()));
    let (s, _) = state_of(&b);
    assert_eq!(
        s.expect("State of b").status.enum_value(),
        Ok(Status::CREATED)
    );
    c.delete_task(&b);

    // The pod empties: its shim exits and removes its socket.
    let shim_socket = socket_of(&p.shim_address(&a));
    let shim_pids_now = shim_pids(&a);
    assert!(!shim_pids_now.is_empty(), "no shim serving {a}");
    let _ = p.ctr(&["task", "kill", "-s", "SIGKILL", &a]);
    assert_eq!(c.wait(&a, ""), 137);
    c.delete_task(&a);
    assert!(
        wait_until(Duration::from_secs(10), || shim_pids_now
            .iter()
            .all(|&pid| process_gone(pid))),
        "the pod's shim {shim_pids_now:?} stayed after its pod emptied"
    );
    assert!(!shim_socket.exists(), "{} stayed", shim_socket.display());
    for id in [&a, &b, &d] {
        assert!(leftovers_of(id).is_empty(), "{id}: {:#?}", leftovers_of(id));
    }
}

/// Runs a command, panicking with its output if it fails.
fn sh(cmd: &str) {
    let o = std::process::Command::new("sh")
        .args(["-c", cmd])
        .output()
        .expect("sh");
    assert!(
        o.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A small ext4 filesystem on a loop device, unmounted and removed when dropped.
struct LoopFs(PathBuf);

impl Drop for LoopFs {
    fn drop(&mut self) {
        let d = self.0.display();
        let _ = std::process::Command::new("sh")
            .args(["-c", &format!("umount -l {d}/mnt; rm -rf {d}")])
            .status();
    }
}

/// Thaws a frozen filesystem when dropped (first, so nothing stays stuck on it).
struct Thaw(PathBuf);

impl Drop for Thaw {
    fn drop(&mut self) {
        let _ = std::process::Command::new("fsfreeze")
            .arg("-u")
            .arg(&self.0)
            .status();
    }
}

/// Terminal output to a regular file is written by a helper process, never by the shim's
/// one thread: with the file's filesystem frozen (every write to it waits for the thaw),
/// the shim still answers.
#[test]
fn terminal_output_to_a_stuck_file_does_not_stop_the_shim() {
    let id = unique("dl-frozen");
    let top = std::env::temp_dir().join(&id);
    std::fs::create_dir_all(top.join("mnt")).expect("mkdir");
    let fs = LoopFs(top.clone());
    let d = top.display();
    sh(&format!(
        "truncate -s 32M {d}/img && mkfs.ext4 -q -F {d}/img && mount -o loop {d}/img {d}/mnt"
    ));
    let mnt = top.join("mnt");
    let log = mnt.join("out.log");

    create_container(&id);
    let _guard = RemoveOnDrop(id.clone());
    let c = Client::new();
    c.edit_spec(&id, |s| {
        s["process"]["terminal"] = true.into();
        s["process"]["args"] = serde_json::json!([
            "sh",
            "-c",
            "i=0; while :; do echo line $i; i=$((i+1)); sleep 0.05; done"
        ]);
    });
    let f = Fifos {
        dir: top.join("fifos"),
        stdout: PathBuf::from(format!("file://{}", log.display())),
        stderr: top.join("fifos/stderr"),
    };
    c.create_task(&id, &f, true)
        .expect("create with a terminal");
    c.start(&id, "").expect("start");
    assert!(
        wait_until(Duration::from_secs(10), || std::fs::metadata(&log)
            .is_ok_and(|m| m.len() > 0)),
        "no terminal output reached {}",
        log.display()
    );

    sh(&format!("fsfreeze -f {}", mnt.display()));
    let thaw = Thaw(mnt.clone());
    // Output keeps coming: a shim that writes the file itself is stuck in write(2) now.
    std::thread::sleep(Duration::from_millis(500));
    let shim = TaskClient::new(
        ttrpc::Client::connect(&format!("unix://{}", socket_path(&id).display()))
            .expect("connect to the shim"),
    );
    let mut r = StateRequest::new();
    r.id = id.clone();
    let began = Instant::now();
    let s = shim.state(
        ttrpc::context::with_timeout(Duration::from_secs(3).as_nanos() as i64),
        &r,
    );
    let took = began.elapsed();
    drop(thaw);
    let s = s.unwrap_or_else(|e| {
        panic!("State while the terminal's file is frozen: {e:?} after {took:?}")
    });
    assert_eq!(s.status.enum_value(), Ok(Status::RUNNING));
    assert!(took < Duration::from_secs(1), "State took {took:?}");
    drop(_guard);
    assert_nothing_left(&id);
    drop(fs);
}
