//! containerd restarts (kill -9) while a container runs (and, on a private containerd at
//! debug level, the shim's debug log stays out of container output): the container keeps running with the
//! same PID, and containerd reconnects to the shim and controls it afterwards. Uses its own
//! private containerd (not the shared one), since it kills it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use containerd_shim_protos::api::WaitRequest;
use containerd_shim_protos::shim::shim_ttrpc::TaskClient;

use common::kubelet;
use common::private::{Events, Private, process_gone, task_exits};
use common::wait_until as wait_for;

/// `ctr run -d` of a busybox `sleep 1000` with our runtime.
fn run_sleeper(p: &Private, id: &str) -> std::process::Output {
    p.ctr(&[
        "run",
        "-d",
        "--runtime",
        "io.containerd.youki.v2",
        "localhost/youki/busybox:latest",
        id,
        "sleep",
        "1000",
    ])
}

#[test]
fn container_survives_containerd_kill_and_restart() {
    let id = format!("survivor-{}", std::process::id());
    let mut p = Private::new("restart");
    p.containers.push(id.clone());
    p.start();
    let id = id.as_str();
    let o = run_sleeper(&p, id);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (pid, status) = p.task(id).expect("task listed");
    assert_eq!(status, "RUNNING");
    // A second container exits during the downtime.
    let brief = format!("brief-{}", std::process::id());
    p.containers.push(brief.clone());
    let brief_started = SystemTime::now();
    let o = p.ctr(&[
        "run",
        "-d",
        "--runtime",
        "io.containerd.youki.v2",
        "localhost/youki/busybox:latest",
        &brief,
        "sh",
        "-c",
        "sleep 1; exit 5",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    p.kill9();
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "container died with containerd"
    );
    // Long enough for the shim to give up on publishing `brief`'s TaskExit (8 attempts over
    // about 5 s): containerd >= 1.7 then deletes a task whose Pids is empty when it loads it.
    std::thread::sleep(Duration::from_secs(7));
    let restarted = SystemTime::now();
    p.start();
    // containerd kept the task (its loader did not take it for a leaked shim).
    assert_eq!(
        p.task(&brief).map(|t| t.1),
        Some("STOPPED".to_string()),
        "task exited during the downtime is listed after the restart"
    );

    // What containerd asks the shim after its restart: Wait on the exited task answers at
    // once, with the true exit code and time.
    let shim =
        TaskClient::new(ttrpc::Client::connect(&p.shim_address(&brief)).expect("dial the shim"));
    let mut req = WaitRequest::new();
    req.id = brief.clone();
    let ctx = ttrpc::context::with_timeout(Duration::from_secs(2).as_nanos() as i64);
    let waited = shim.wait(ctx, &req).expect("Wait answers at once");
    assert_eq!(waited.exit_status, 5, "exit from the downtime");
    let at = waited.exited_at.seconds as f64 + waited.exited_at.nanos as f64 / 1e9;
    let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    assert!(
        at >= secs(brief_started) + 0.9 && at < secs(restarted),
        "exited_at {at} not in [{}, {})",
        secs(brief_started) + 0.9,
        secs(restarted)
    );
    assert_eq!(p.task(&brief).map(|t| t.1), Some("STOPPED".to_string()));
    assert!(p.ctr(&["task", "rm", &brief]).status.success());
    assert!(p.ctr(&["container", "rm", &brief]).status.success());
    assert_eq!(
        p.task(id),
        Some((pid, "RUNNING".to_string())),
        "same task, same PID after restart"
    );
    // Pids, through the reloaded shim.
    let ps = p.ctr(&["task", "ps", id]);
    assert!(
        String::from_utf8_lossy(&ps.stdout)
            .lines()
            .any(|l| l.split_whitespace().next() == Some(&pid.to_string())),
        "task ps after restart: {}",
        String::from_utf8_lossy(&ps.stdout)
    );

    let o = p.ctr(&["task", "kill", "-s", "SIGKILL", id]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        wait_for(Duration::from_secs(10), || p.task(id).map(|t| t.1)
            == Some("STOPPED".into())),
        "kill after restart did not stop the task"
    );
    assert!(p.ctr(&["task", "rm", id]).status.success());
    assert!(p.ctr(&["container", "rm", id]).status.success());
    assert!(
        wait_for(Duration::from_secs(10), || process_gone(pid)),
        "container process {pid} left"
    );
}

/// A pod keeps running through containerd's kill -9 and restart; a container that exits
/// while containerd is down reports its true exit code afterwards; exec, stop and remove
/// work on the restarted containerd, and nothing of the pod remains.
/// Once per handler of ours: with `youki-sandboxed` (containerd 2.x's shim sandboxer) the
/// restarted containerd recovers the sandbox through our Sandbox API (SandboxStatus, then
/// WaitSandbox) from a containerd that has no pause image at all.
#[test]
fn pod_survives_containerd_kill_and_reports_exits_from_the_downtime() {
    for handler in common::youki_handlers() {
        pod_survives_containerd_kill_with(handler);
    }
}

fn pod_survives_containerd_kill_with(handler: &str) {
    use k8s_cri::v1::ContainerState;
    use kubelet::{Cri, PodGuard, PodSpec};

    let sandboxed = handler == kubelet::SANDBOXED_HANDLER;
    let mut p = Private::new(if sandboxed {
        "restart-sbx"
    } else {
        "restart-pod"
    });
    if sandboxed {
        p.env.push(("NO_PAUSE", "1".into()));
    }
    p.start();
    let sock = PathBuf::from(p.sock());
    let mut cri = Cri::connect(&sock);
    let mut spec = PodSpec::new(if sandboxed { "restart-sbx" } else { "restart" });
    spec.handler = handler.to_string();
    let pod = cri.run_pod(&spec).expect("RunPodSandbox");
    // Declared after `p`, so dropped before it: a failed assertion still tears the pod
    // down through the private containerd before that containerd stops.
    let guard = PodGuard::new(&pod, &spec, &sock);
    let long = cri
        .run_container(&pod, &spec, "long", &["sleep", "3600"])
        .expect("long");
    let short_started = std::time::SystemTime::now();
    let short = cri
        .run_container(&pod, &spec, "short", &["sh", "-c", "sleep 2; exit 7"])
        .expect("short");
    let victim = cri
        .run_container(&pod, &spec, "victim", &["sleep", "3600"])
        .expect("victim");
    let pause_pid = cri.pod_pid(&pod).unwrap();
    let long_pid = cri.container_pid(&long).unwrap();
    let victim_pid = cri.container_pid(&victim).unwrap();

    p.kill9();
    drop(cri);
    // `short` exits while containerd is down and `victim` is SIGKILLed. The downtime
    // outlasts the shim's TaskExit retries (about 5 s), so only the restarted containerd's
    // loader can learn these exits from the shim: it must not take the exited tasks for
    // leaked shims (containerd >= 1.7 asks Pids; CRI then reports 255).
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: kill(2) on a PID this test just read from CRI; no memory is involved.
    assert_eq!(unsafe { libc::kill(victim_pid, libc::SIGKILL) }, 0);
    std::thread::sleep(Duration::from_secs(7));
    let restarted = std::time::SystemTime::now();
    p.start();
    // The restarted containerd's CRI may need a moment to load its containers.
    let events = Events::subscribe(&p);
    let mut cri = Cri::connect(&sock);
    assert!(wait_for(Duration::from_secs(20), || {
        cri.container_state(&short).ok() == Some(ContainerState::ContainerExited)
    }));
    let st = cri.container_status(&short).unwrap().status.unwrap();
    assert_eq!(st.exit_code, 7, "the exit from the downtime");
    // ... at its true time: after its 2 s of sleep, before containerd was back.
    let ns = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i64
    };
    let earliest = ns(short_started) + 1_900_000_000;
    assert!(
        st.finished_at >= earliest && st.finished_at < ns(restarted),
        "finished_at {} not in [{earliest}, {})",
        st.finished_at,
        ns(restarted)
    );
    assert!(wait_for(Duration::from_secs(20), || {
        cri.container_state(&victim).ok() == Some(ContainerState::ContainerExited)
    }));
    let st = cri.container_status(&victim).unwrap().status.unwrap();
    assert_eq!(st.exit_code, 137, "SIGKILL during the downtime");
    assert!(
        st.finished_at < ns(restarted),
        "victim's finished_at {} is after the restart",
        st.finished_at
    );
    assert_eq!(
        cri.container_state(&long).unwrap(),
        ContainerState::ContainerRunning
    );
    assert_eq!(cri.container_pid(&long).unwrap(), long_pid, "same process");
    assert_eq!(cri.pod_pid(&pod).unwrap(), pause_pid);
    let (code, out, _) = cri
        .exec_sync(&long, &["sh", "-c", "echo alive"], Duration::from_secs(10))
        .expect("ExecSync after restart");
    assert_eq!((code, out.as_str()), (0, "alive\n"));

    cri.teardown(&pod).expect("teardown after restart");
    std::mem::forget(guard);
    // One exit event per process: the teardown's from the restarted shim connection, and
    // never a second one for the exit from the downtime (whose retries may have reached
    // containerd before the subscription, so at most one of it).
    let text = events.finish();
    let exits = task_exits(&text);
    // An init process's exit carries the container's ID twice; an exec's, its exec ID.
    let of = |id: &str| exits.iter().filter(|e| e.0 == id && e.1 == id).count();
    assert_eq!(of(&long), 1, "exit events of {long}: {text}");
    assert_eq!(of(&pod), 1, "exit events of the sandbox {pod}: {text}");
    assert!(of(&short) <= 1, "exit of {short} published twice: {text}");
    for pid in [pause_pid, long_pid] {
        assert!(
            wait_for(Duration::from_secs(10), || process_gone(pid)),
            "process {pid} of the pod left"
        );
    }
    // The shim exits once its last call is answered (ShutdownSandbox for a shim-sandboxer
    // pod, which containerd follows by closing the connection): give it that moment.
    let shims = || {
        let o = Command::new("pgrep")
            .args(["-f", &format!("containerd-shim-youki-v2 .*-id {pod}")])
            .output()
            .expect("pgrep");
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    wait_for(Duration::from_secs(5), || shims().is_empty());
    assert!(shims().is_empty(), "pod shim left ({handler}): {}", shims());
    spec.remove_leftover_dirs();
}

/// With containerd at debug level the shim logs at debug too; none of it (libcontainer's
/// traces from the container's init included) may reach the container's own output.
#[test]
fn debug_logging_stays_out_of_container_output() {
    let n = std::process::id();
    let id = format!("quiet-{n}");
    let mut p = Private::new("debug");
    p.containers.push(id.clone());
    p.log_level = "debug";
    p.start();
    let o = p.ctr(&[
        "run",
        "--rm",
        "--runtime",
        "io.containerd.youki.v2",
        "localhost/youki/busybox:latest",
        &id,
        "sh",
        "-c",
        "echo out; echo err >&2",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&o.stderr), "err\n");
    // Debug logging was on: the shim's own timings reached containerd's log.
    let log = std::fs::read_to_string(p.dir.join("containerd.log")).unwrap_or_default();
    assert!(
        log.lines()
            .any(|l| l.contains(&format!("create {id} took"))),
        "no debug lines from the shim in containerd's log"
    );
}

const TOOL: &str = env!("CARGO_BIN_EXE_youki-shims");

struct Sweep(String);

impl Drop for Sweep {
    fn drop(&mut self) {
        let _ = Command::new(TOOL)
            .args(["--kill", "--grace", "0", "--address", &self.0])
            .output();
    }
}

fn tool(p: &Private, extra: &[&str]) -> (i32, String) {
    let sock = p.sock();
    let mut args = vec!["--address", sock.as_str(), "--grace", "0"];
    args.extend_from_slice(extra);
    let o = Command::new(TOOL)
        .args(&args)
        .output()
        .expect("youki-shims");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

/// What `youki-shims --kill` (`out`, its output) must have removed of ctr container `id`:
/// the processes `pids`, the shim's `socket`, the cgroup, mounts and libcontainer state.
fn assert_removed(id: &str, pids: &[i32], socket: &Path, out: &str) {
    for &gone in pids {
        assert!(
            wait_for(Duration::from_secs(10), || process_gone(gone)),
            "process {gone} left: {out}"
        );
    }
    assert!(!socket.exists(), "socket {} left", socket.display());
    assert!(common::cgroup_dirs(id).is_empty(), "cgroup left");
    assert!(common::mounts_of(id).is_empty(), "mount left");
    assert!(
        !Path::new("/run/containerd/youki/default").join(id).exists(),
        "libcontainer state left"
    );
}

/// The classic "unknown container": containerd loses its records (here: restarted on an
/// empty root) while a shim and its container run on. youki-shims reports it, exits 1,
/// and --kill removes shim, process, cgroup, mounts, state and socket; on a healthy node
/// it reports nothing and exits 0.
#[test]
fn youki_shims_finds_and_removes_a_shim_whose_records_were_deleted() {
    let id = format!("forgotten-{}", std::process::id());
    let p = Private::new("forgotten");
    p.start();
    let o = run_sleeper(&p, &id);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (pid, _) = p.task(&id).expect("task listed");
    // Declared after `p`, so it runs while that containerd still does: whatever an
    // assertion left unknown goes.
    let _sweep = Sweep(p.sock());

    let (code, out) = tool(&p, &[]);
    // Stale sockets in the machine-wide socket dir (another run's killed shims) make the
    // tool exit 1 too; this node's shims and containers must all be known.
    assert!(
        out.contains("unknown: 0 shims, 0 containers")
            && (code == 0 || out.contains("stale socket")),
        "healthy node (exit {code}): {out}"
    );
    // The table shows IDs cut to 13 characters, as crictl does.
    let row = out
        .lines()
        .find(|l| l.contains(&id[..13]))
        .expect("container listed");
    assert!(
        row.contains(&pid.to_string()) && row.ends_with("known"),
        "{row}"
    );

    // containerd forgets: killed, and back on an empty root (its metadata gone).
    p.kill9();
    std::fs::rename(p.dir.join("root"), p.dir.join("root.lost")).unwrap();
    p.start();
    let (code, out) = tool(&p, &["--json"]);
    assert_eq!(code, 1, "unknown ones found: {out}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let shim = &report["shims"][0];
    assert_eq!(shim["verdict"], "unknown", "{out}");
    assert_eq!(shim["containers"][0]["id"], id.as_str());
    assert_eq!(
        shim["containers"][0]["reason"], "containerd has no container record",
        "{out}"
    );
    let shim_pid = shim["pid"].as_i64().unwrap() as i32;
    let socket = PathBuf::from(shim["socket"].as_str().unwrap());

    let (code, out) = tool(&p, &["--kill"]);
    assert_eq!(code, 1, "found (and removed): {out}");
    assert!(out.contains(&format!("removed container {id}")), "{out}");
    assert_removed(&id, &[pid, shim_pid], &socket, &out);
    let (code, out) = tool(&p, &[]);
    assert_eq!(code, 0, "nothing unknown after --kill: {out}");
}

/// A containerd gone for good (killed, never restarted) leaves its shims "unverified": the
/// tool cannot tell it from one that is restarting. The operator says so with
/// --containerd-gone, which is refused while that containerd answers; then the shim and its
/// container are unknown and --kill removes them, leaving nothing.
#[test]
fn youki_shims_removes_the_shims_of_a_containerd_gone_for_good() {
    let id = format!("abandoned-{}", std::process::id());
    let p = Private::new("gone");
    p.start();
    let o = run_sleeper(&p, &id);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (pid, _) = p.task(&id).expect("task listed");
    let sock = p.sock();
    // Whatever an assertion leaves: removed as if that containerd were gone.
    struct GoneSweep(String);
    impl Drop for GoneSweep {
        fn drop(&mut self) {
            let _ = Command::new(TOOL)
                .args(["--kill", "--grace", "0", "--address", &self.0])
                .args(["--containerd-gone", &self.0])
                .output();
        }
    }

    // Refused while containerd answers; nothing is touched.
    let (code, _) = tool(&p, &["--kill", "--containerd-gone", &sock]);
    assert_eq!(
        code, 2,
        "--containerd-gone on a live containerd must be refused"
    );
    assert!(
        !process_gone(pid),
        "container killed while containerd was alive"
    );

    p.kill9();
    let _sweep = GoneSweep(sock.clone());
    let (code, out) = tool(&p, &["--json"]);
    assert_eq!(code, 2, "containerd down: unverified, exit 2: {out}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["shims"][0]["verdict"], "unverified", "{out}");

    // As a URL too: the same containerd as the shims' plain -address.
    let url = format!("unix://{sock}");
    let (code, out) = tool(&p, &["--json", "--containerd-gone", &url]);
    assert_eq!(code, 1, "unknown once the operator says it is gone: {out}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let shim = &report["shims"][0];
    assert_eq!(shim["verdict"], "unknown", "{out}");
    assert_eq!(shim["containers"][0]["id"], id.as_str());
    assert_eq!(
        shim["containers"][0]["reason"],
        containerd_shim_youki_v2::ops::inventory::GONE_REASON
    );
    let shim_pid = shim["pid"].as_i64().unwrap() as i32;
    let socket = PathBuf::from(shim["socket"].as_str().unwrap());

    let (code, out) = tool(&p, &["--kill", "--containerd-gone", &sock]);
    assert_eq!(code, 1, "found (and removed): {out}");
    assert_removed(&id, &[pid, shim_pid], &socket, &out);
    let (code, out) = tool(&p, &["--containerd-gone", &sock]);
    assert_eq!(code, 0, "nothing left of it: {out}");
}
