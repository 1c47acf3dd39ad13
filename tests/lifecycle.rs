//! Issue 13 through a real containerd: what the pod's state machines and exit table
//! promise, where it needs the kernel or containerd's own decoding.

mod common;

use std::time::Duration;

use common::client::{Client, process_of};
use common::*;

fn running(tag: &str) -> (String, RemoveOnDrop) {
    let id = unique(tag);
    run_detached(&id, &["sleep", "600"]);
    let guard = RemoveOnDrop(id.clone());
    assert!(
        wait_until(Duration::from_secs(20), || task_status(&id) == "RUNNING"),
        "{id} never ran"
    );
    (id, guard)
}

/// Behaviour 8: Pids says which process is which exec, in runc-v2's ProcessDetails,
/// which containerd's own client decodes (`ctr task ps` shows it).
#[test]
fn pids_name_exec_processes() {
    let (id, _guard) = running("ps-execs");
    ctr_ok(&[
        "task",
        "exec",
        "-d",
        "--exec-id",
        "probe-1",
        &id,
        "sleep",
        "600",
    ]);
    let mut out = String::new();
    let named = wait_until(Duration::from_secs(10), || {
        out = ctr_ok(&["task", "ps", &id]);
        out.contains("probe-1")
    });
    assert!(named, "`ctr task ps` does not name the exec:\n{out}");
    // The init has no details; exactly one line names the exec.
    assert_eq!(out.matches("probe-1").count(), 1, "{out}");
}

/// Behaviour 8: a `binary://` logger of an exec gets the exec's ID (as with runc-v2), not
/// the container's.
#[test]
fn an_exec_logger_gets_the_exec_id() {
    let (id, _guard) = running("exec-logger");
    let dir = std::env::temp_dir().join(format!("{id}-logger"));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let out = dir.join("out");
    let logger = dir.join("logger.sh");
    std::fs::write(
        &logger,
        format!(
            "#!/bin/sh\nprintf r >&5; exec 5>&-\n\
             echo \"id=$CONTAINER_ID\" > {o}\n\
             cat <&3 >> {o} & cat <&4 >> {o}; wait\n\
             echo flushed >> {o}\n",
            o = out.display()
        ),
    )
    .expect("write logger");
    std::fs::set_permissions(&logger, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let uri = format!("binary://{}", logger.display());
    let client = Client::new();
    let process = process_of(&client.spec(&id), &["echo", "hello"], false);
    client
        .exec_to(&id, "logged-1", &process, &uri, &uri)
        .expect("exec");
    client.start(&id, "logged-1").expect("start");
    assert_eq!(client.wait(&id, "logged-1"), 0);
    client.delete_process(&id, "logged-1");
    let mut text = String::new();
    let flushed = wait_until(Duration::from_secs(10), || {
        text = std::fs::read_to_string(&out).unwrap_or_default();
        text.contains("flushed")
    });
    assert!(flushed, "the logger never finished: {text:?}");
    assert_eq!(text, "id=logged-1\nhello\nflushed\n");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Behaviour 1 end to end: `ctr task exec` of a missing binary (ctr waits before it
/// starts, as CRI does) fails cleanly, many times over, and the container keeps serving.
#[test]
fn failing_execs_leave_the_container_serving() {
    let (id, _guard) = running("exec-fails");
    for i in 0..20 {
        let o = ctr(&[
            "task",
            "exec",
            "--exec-id",
            &format!("missing-{i}"),
            &id,
            "/no/such/binary",
        ]);
        assert!(!o.status.success(), "exec of a missing binary succeeded");
    }
    let o = ctr_ok(&["task", "exec", "--exec-id", "ok", &id, "echo", "alive"]);
    assert_eq!(o.trim(), "alive");
    assert_eq!(task_status(&id), "RUNNING");
}

/// Behaviour 6: `ctr run -t --rm` gets the last lines of a terminal's output: the exit is
/// answered (and Delete drops the console) only once the output is drained.
#[test]
fn run_t_keeps_the_last_lines() {
    for round in 0..3 {
        let id = unique(&format!("tty-last-{round}"));
        let _guard = RemoveOnDrop(id.clone());
        let ctr = format!("ctr --address {}", address());
        let line = format!(
            "{ctr} run -t --rm --runtime {RUNTIME} {BUSYBOX} {id} sh -c 'seq 1 20000; echo LAST-LINE'"
        );
        let out = std::process::Command::new("timeout")
            .args(["60", "script", "-qec", &line, "/dev/null"])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("spawn script (util-linux)");
        let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
        assert!(
            text.trim_end().ends_with("LAST-LINE") && text.contains("\n19999\n20000\n"),
            "round {round}: output ends {:?}",
            &text[text.len().saturating_sub(60)..]
        );
    }
}
