//! The Task API's rules, asked of a live shim directly over its ttrpc socket (what ctr
//! cannot express), and what happens when the shim is killed.

mod common;

use std::time::Duration;

use common::*;
use containerd_shim_protos::api::{
    ConnectRequest, CreateTaskRequest, DeleteRequest, KillRequest, PidsRequest, StartRequest,
    StateRequest, WaitRequest,
};
use containerd_shim_protos::shim::shim_ttrpc::TaskClient;
use containerd_shim_protos::types::task::Status;
use ttrpc::context;

fn client(id: &str) -> TaskClient {
    let c = ttrpc::Client::connect(&format!("unix://{}", socket_path(id).display()))
        .expect("connect shim");
    TaskClient::new(c)
}

fn ctx() -> context::Context {
    context::with_timeout(Duration::from_secs(10).as_nanos() as i64)
}

fn code<T: std::fmt::Debug>(r: ttrpc::Result<T>) -> (ttrpc::Code, String) {
    match r {
        Err(ttrpc::Error::RpcStatus(s)) => (s.code(), s.message),
        other => panic!("expected an RPC status, got {other:?}"),
    }
}

#[test]
fn task_rules_over_ttrpc() {
    let id = unique("rules");
    run_detached(&id, &["sleep", "1000"]);
    let guard = RemoveOnDrop(id.clone());
    let c = client(&id);

    let mut state = StateRequest::new();
    state.id = id.clone();
    let s = c.state(ctx(), &state).expect("state");
    assert_eq!(s.status.enum_value(), Ok(Status::RUNNING));
    assert!(s.pid > 0);
    assert!(proc_alive(s.pid as i32));

    let mut pids = PidsRequest::new();
    pids.id = id.clone();
    let p = c.pids(ctx(), &pids).expect("pids");
    assert!(
        p.processes.iter().any(|pi| pi.pid == s.pid),
        "{:?}",
        p.processes
    );

    let mut start = StartRequest::new();
    start.id = id.clone();
    assert_eq!(
        code(c.start(ctx(), &start)).0,
        ttrpc::Code::FAILED_PRECONDITION
    );

    let mut del = DeleteRequest::new();
    del.id = id.clone();
    let (k, msg) = code(c.delete(ctx(), &del));
    assert_eq!(k, ttrpc::Code::FAILED_PRECONDITION);
    assert!(msg.contains(&id), "{msg}");

    let mut unknown = StateRequest::new();
    unknown.id = "no-such-container".into();
    assert_eq!(code(c.state(ctx(), &unknown)).0, ttrpc::Code::NOT_FOUND);

    // What a restarted containerd asks of every bundle it finds: the task's PID, or
    // NotFound for one this shim does not have (then containerd runs `delete`).
    let mut connect = ConnectRequest::new();
    connect.id = id.clone();
    let r = c.connect(ctx(), &connect).expect("connect");
    assert_eq!(r.task_pid, s.pid);
    assert!(proc_alive(r.shim_pid as i32));
    connect.id = "no-such-container".into();
    assert_eq!(code(c.connect(ctx(), &connect)).0, ttrpc::Code::NOT_FOUND);

    let mut kill = KillRequest::new();
    kill.id = id.clone();
    kill.signal = 9;
    c.kill(ctx(), &kill).expect("kill");
    let mut wait = WaitRequest::new();
    wait.id = id.clone();
    let w = c.wait(ctx(), &wait).expect("wait");
    assert_eq!(w.exit_status, 137);
    // Once exited, Wait answers at once with the same status and time.
    let again = c
        .wait(
            context::with_timeout(Duration::from_secs(1).as_nanos() as i64),
            &wait,
        )
        .expect("wait again");
    assert_eq!(
        (again.exit_status, again.exited_at.clone()),
        (137, w.exited_at.clone())
    );
    assert_eq!(code(c.kill(ctx(), &kill)).0, ttrpc::Code::NOT_FOUND);
    let s = c.state(ctx(), &state).expect("state after exit");
    assert_eq!(s.status.enum_value(), Ok(Status::STOPPED));
    assert_eq!(s.exit_status, 137);

    drop(guard);
    assert_nothing_left(&id);
}

#[test]
fn bad_create_requests_leave_nothing() {
    let id = unique("bad");
    run_detached(&id, &["sleep", "1000"]);
    let guard = RemoveOnDrop(id.clone());
    let c = client(&id);
    for bad in ["../escape", "a/b", ""] {
        let mut req = CreateTaskRequest::new();
        req.id = bad.to_string();
        req.bundle = "/nonexistent".into();
        let (k, msg) = code(c.create(ctx(), &req));
        assert_eq!(k, ttrpc::Code::INVALID_ARGUMENT, "{bad}: {msg}");
        assert!(msg.contains(&format!("{bad:?}")), "{msg}");
    }
    // A valid ID with a bundle that does not exist fails cleanly, and leaves no state.
    let ghost = unique("ghost");
    let mut req = CreateTaskRequest::new();
    req.id = ghost.clone();
    req.bundle = format!("/nonexistent/{ghost}");
    let (_, msg) = code(c.create(ctx(), &req));
    assert!(msg.contains(&ghost), "{msg}");
    assert!(leftovers(&ghost).is_empty(), "{:?}", leftovers(&ghost));
    // The shim still serves its container.
    let mut state = StateRequest::new();
    state.id = id.clone();
    assert_eq!(
        c.state(ctx(), &state).expect("state").status.enum_value(),
        Ok(Status::RUNNING)
    );
    drop(guard);
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

#[test]
fn killed_shim_leaves_nothing_after_containerds_cleanup() {
    let id = unique("kill9");
    run_detached(&id, &["sleep", "1000"]);
    let pid = task_pid(&id);
    assert!(proc_alive(pid));
    let shims = shim_pids(&id);
    // Kill only the daemon, as an operator would: its fork helper must follow it.
    let daemon = shims
        .iter()
        .copied()
        .find(|p| !shims.contains(&parent_of(*p)))
        .unwrap_or_else(|| panic!("no shim daemon for {id} among {shims:?}"));
    // SAFETY: signalling the shim this test's container started.
    unsafe { libc::kill(daemon, libc::SIGKILL) };
    // containerd notices the dead shim and runs `containerd-shim-youki-v2 delete`.
    assert!(
        wait_until(Duration::from_secs(20), || !proc_alive(pid)),
        "container process {pid} survived its shim"
    );
    assert!(wait_until(Duration::from_secs(20), || task_status(&id) != "RUNNING"));
    assert!(
        wait_until(Duration::from_secs(5), || shim_pids(&id).is_empty()),
        "fork helper outlived its daemon"
    );
    let _ = ctr(&["task", "rm", "-f", &id]);
    let _ = ctr(&["container", "rm", &id]);
    assert_nothing_left(&id);
}

#[test]
fn real_time_signals_reach_the_container() {
    let id = unique("rtsig");
    // SIGRTMIN+3 (37) is how systemd in a container is asked to stop.
    run_detached(
        &id,
        &["sh", "-c", "trap 'exit 5' 37; while :; do sleep 0.2; done"],
    );
    let guard = RemoveOnDrop(id.clone());
    let c = client(&id);
    let mut kill = KillRequest::new();
    kill.id = id.clone();
    kill.signal = 37;
    let mut wait = WaitRequest::new();
    wait.id = id.clone();
    // The shell may not have set its trap yet when the task starts; until it has, PID 1
    // ignores the signal, so send it again until the trap answers.
    let mut status = None;
    for _ in 0..20 {
        c.kill(ctx(), &kill).expect("kill with SIGRTMIN+3");
        let short = context::with_timeout(Duration::from_millis(500).as_nanos() as i64);
        if let Ok(w) = c.wait(short, &wait) {
            status = Some(w.exit_status);
            break;
        }
    }
    assert_eq!(status, Some(5));
    drop(guard);
    assert_nothing_left(&id);
}

/// A file of the container's cgroup in controller `ctrl` (cgroup v1 hierarchy).
fn cgroup_file(id: &str, ctrl: &str, file: &str) -> String {
    let path = std::path::Path::new("/sys/fs/cgroup")
        .join(ctrl)
        .join(NS)
        .join(id)
        .join(file);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .to_string()
}

fn status_of(c: &TaskClient, id: &str) -> Status {
    let mut state = StateRequest::new();
    state.id = id.to_string();
    c.state(ctx(), &state)
        .expect("state")
        .status
        .enum_value()
        .expect("known status")
}

#[test]
fn pause_resume_and_update_reach_the_cgroup() {
    use containerd_shim_protos::api::{PauseRequest, ResumeRequest, UpdateTaskRequest};
    use containerd_shim_protos::protobuf::well_known_types::any::Any;

    let id = unique("freeze");
    run_detached(&id, &["sleep", "1000"]);
    let _guard = RemoveOnDrop(id.clone());
    let c = client(&id);

    let mut pause = PauseRequest::new();
    pause.id = id.clone();
    c.pause(ctx(), &pause).expect("pause");
    assert_eq!(status_of(&c, &id), Status::PAUSED);
    assert_eq!(cgroup_file(&id, "freezer", "freezer.state"), "FROZEN");
    assert_eq!(
        code(c.pause(ctx(), &pause)).0,
        ttrpc::Code::FAILED_PRECONDITION
    );
    let o = ctr(&["task", "exec", "--exec-id", "x", &id, "true"]);
    assert!(!o.status.success(), "exec ran in a paused container");

    let mut resume = ResumeRequest::new();
    resume.id = id.clone();
    c.resume(ctx(), &resume).expect("resume");
    assert_eq!(status_of(&c, &id), Status::RUNNING);
    assert_eq!(cgroup_file(&id, "freezer", "freezer.state"), "THAWED");
    assert_eq!(
        code(c.resume(ctx(), &resume)).0,
        ttrpc::Code::FAILED_PRECONDITION
    );

    // What CRI's UpdateContainerResources sends: an OCI LinuxResources as JSON.
    let mut update = UpdateTaskRequest::new();
    update.id = id.clone();
    let mut res = Any::new();
    res.type_url = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into();
    res.value = br#"{"memory":{"limit":33554432},"cpu":{"quota":20000,"period":100000},"pids":{"limit":42}}"#.to_vec();
    update.resources = Some(res).into();
    update
        .annotations
        .insert("io.example/note".into(), "accepted".into());
    c.update(ctx(), &update).expect("update");
    assert_eq!(
        cgroup_file(&id, "memory", "memory.limit_in_bytes"),
        "33554432"
    );
    assert_eq!(cgroup_file(&id, "cpu", "cpu.cfs_quota_us"), "20000");
    assert_eq!(cgroup_file(&id, "pids", "pids.max"), "42");

    let mut bad = update.clone();
    let mut junk = Any::new();
    junk.value = b"not json".to_vec();
    bad.resources = Some(junk).into();
    let (k, msg) = code(c.update(ctx(), &bad));
    assert_eq!(k, ttrpc::Code::INVALID_ARGUMENT);
    assert!(msg.contains("not json"), "{msg}");

    // A stopped container cannot be paused.
    ctr_ok(&["task", "kill", "-s", "SIGKILL", &id]);
    assert!(wait_until(Duration::from_secs(10), || status_of(&c, &id)
        == Status::STOPPED));
    assert_eq!(
        code(c.pause(ctx(), &pause)).0,
        ttrpc::Code::FAILED_PRECONDITION
    );
}

/// `criu check` on this host: `None` when CRIU works, else what it reported.
fn criu_problem() -> Option<String> {
    match std::process::Command::new("criu").arg("check").output() {
        Err(e) => Some(format!("criu cannot run: {e}")),
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "criu check: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )),
    }
}

#[test]
fn checkpoint_dumps_with_criu_or_names_criu_s_problem() {
    let id = unique("ckpt");
    run_detached(&id, &["sleep", "1000"]);
    let guard = RemoveOnDrop(id.clone());
    let image = std::env::temp_dir().join(format!("{id}-image"));
    let image_s = image.to_string_lossy().into_owned();
    let o = ctr(&["task", "checkpoint", "--image-path", &image_s, &id]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    match criu_problem() {
        Some(problem) => {
            assert!(
                !o.status.success(),
                "checkpoint succeeded without a working CRIU"
            );
            // ctr 1.x prints the gRPC code's name; 2.x's prints only the message.
            assert!(
                err.contains("criu")
                    && (err.contains("failed precondition") || containerd_major() >= 2),
                "the error must name CRIU's problem: {err}"
            );
            if problem.contains("vdso") {
                assert!(err.contains("vdso"), "CRIU's own words are missing: {err}");
            }
            // Nothing changed for the container.
            assert_eq!(task_status(&id), "RUNNING");
            eprintln!("SKIPPED (real CRIU dump and restore): {}", problem.trim());
        }
        None => {
            assert!(o.status.success(), "{err}");
            assert!(
                image.join("inventory.img").exists(),
                "no CRIU image in {image_s}"
            );
        }
    }

    // Restore (Create with a checkpoint) is gated the same way and leaves nothing behind.
    let c = client(&id);
    let ghost = unique("restore");
    let mut req = CreateTaskRequest::new();
    req.id = ghost.clone();
    req.bundle = format!("/nonexistent/{ghost}");
    req.checkpoint = image_s.clone();
    if criu_problem().is_some() {
        let (k, msg) = code(c.create(ctx(), &req));
        assert_eq!(k, ttrpc::Code::FAILED_PRECONDITION, "{msg}");
        assert!(msg.contains("criu"), "{msg}");
    } else {
        // As runc-v2: Create records the restore (PID 0) and Start would restore; Delete
        // drops it untouched.
        let created = c.create(ctx(), &req).expect("create with a checkpoint");
        assert_eq!(created.pid, 0);
        let mut del = DeleteRequest::new();
        del.id = ghost.clone();
        c.delete(ctx(), &del).expect("delete the unrestored task");
    }
    assert!(leftovers(&ghost).is_empty(), "{:?}", leftovers(&ghost));
    let _ = std::fs::remove_dir_all(&image);
    drop(guard);
    assert_nothing_left(&id);
}
