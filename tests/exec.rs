//! Exec through a real containerd and `ctr task exec`: output, exit code, stdin, the
//! container's namespaces, capabilities and seccomp profile, duplicate IDs, and exec
//! processes going away with their container.

mod common;

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use common::client::{Client, Fifos, process_of};
use common::*;

/// A detached container with the default seccomp profile, removed on drop.
fn running_with_seccomp(tag: &str) -> (String, RemoveOnDrop) {
    let id = unique(tag);
    ctr_ok(&[
        "run",
        "-d",
        "--seccomp",
        "--runtime",
        RUNTIME,
        BUSYBOX,
        &id,
        "sleep",
        "600",
    ]);
    let guard = RemoveOnDrop(id.clone());
    assert!(
        wait_until(Duration::from_secs(20), || task_status(&id) == "RUNNING"),
        "{id} never ran"
    );
    (id, guard)
}

fn exec(id: &str, exec_id: &str, cmd: &[&str]) -> std::process::Output {
    let mut args = vec!["task", "exec", "--exec-id", exec_id, id];
    args.extend_from_slice(cmd);
    ctr(&args)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn exec_output_exit_code_and_stdin() {
    let (id, _guard) = running_with_seccomp("exec-io");
    let o = exec(&id, "e1", &["sh", "-c", "echo out; echo err >&2; exit 5"]);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "out\n");
    assert!(text(&o.stderr).starts_with("err\n"), "{}", text(&o.stderr));

    // ctr 1.6 loses an EOF that comes before the exec runs: write, then close later.
    let mut child = ctr_cmd(&[
        "task",
        "exec",
        "--exec-id",
        "e2",
        &id,
        "sh",
        "-c",
        "read l; echo got:$l",
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .spawn()
    .expect("spawn ctr task exec");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"hello\n").expect("write");
    std::thread::sleep(Duration::from_millis(300));
    drop(stdin);
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "exit {:?}", out.status);
    assert_eq!(text(&out.stdout), "got:hello\n");
}

#[test]
fn exec_joins_the_container_with_its_privileges_and_seccomp() {
    let (id, _guard) = running_with_seccomp("exec-sec");
    // In the container's PID namespace the init is PID 1: compare the exec with it.
    let script = "for f in mnt pid net ipc uts cgroup; do \
                    [ $(readlink /proc/self/ns/$f) = $(readlink /proc/1/ns/$f) ] || echo ns $f differs; \
                  done; \
                  grep -E '^(Cap(Prm|Eff|Bnd|Inh|Amb)|Seccomp|NoNewPrivs):' /proc/self/status > /tmp/self; \
                  grep -E '^(Cap(Prm|Eff|Bnd|Inh|Amb)|Seccomp|NoNewPrivs):' /proc/1/status > /tmp/init; \
                  diff /tmp/init /tmp/self && grep -E '^(Seccomp|CapEff):' /tmp/self";
    let o = exec(&id, "sec", &["sh", "-c", script]);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    let out = text(&o.stdout);
    let fields: Vec<&str> = out.split_whitespace().collect();
    // Seccomp 2 = filter mode; the exec kept no capability beyond the container's
    // (CAP_SYS_ADMIN, bit 21, only served to load the filter).
    assert_eq!(fields.len(), 4, "{out}");
    assert_eq!(fields[0..2], ["CapEff:", "00000000a80425fb"], "{out}");
    assert_eq!(fields[2..4], ["Seccomp:", "2"], "{out}");

    // A non-root user drops every capability, as under runc.
    let o = ctr(&[
        "task",
        "exec",
        "--exec-id",
        "user",
        "--user",
        "1000",
        &id,
        "sh",
        "-c",
        "id -u; grep -E '^(CapEff|Seccomp):' /proc/self/status",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["1000", "CapEff:", "0000000000000000", "Seccomp:", "2"],
        "{out}"
    );
}

#[test]
fn duplicate_exec_id_is_refused_and_execs_die_with_the_container() {
    let (id, guard) = running_with_seccomp("exec-dup");
    let mut long = ctr_cmd(&["task", "exec", "--exec-id", "long", &id, "sleep", "600"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ctr task exec");
    let pids = || {
        let out = ctr_ok(&["task", "ps", &id]);
        out.lines().skip(1).filter(|l| !l.trim().is_empty()).count()
    };
    assert!(
        wait_until(Duration::from_secs(10), || pids() == 2),
        "the exec never ran: {}",
        ctr_ok(&["task", "ps", &id])
    );
    let o = exec(&id, "long", &["true"]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("already exists"),
        "{}",
        text(&o.stderr)
    );

    // The container's end ends its exec too, and ctr sees the exec killed.
    ctr_ok(&["task", "kill", "-s", "SIGKILL", &id]);
    let status = long.wait().expect("wait for the exec's ctr");
    assert_eq!(status.code(), Some(137));
    assert!(wait_until(Duration::from_secs(10), || task_status(&id) == "STOPPED"));

    let o = exec(&id, "late", &["true"]);
    assert!(!o.status.success(), "exec into a stopped container ran");
    assert!(
        text(&o.stderr).contains("not running"),
        "{}",
        text(&o.stderr)
    );

    drop(guard);
    assert_nothing_left(&id);
}

/// Without PATH in its environment a program given by its path still runs, in a task and
/// in an exec, as under runc; a bare name then has nowhere to be found (as under runc).
#[test]
fn a_program_given_by_path_runs_without_path() {
    let c = Client::new();
    // The environment without PATH, with a mark to recognise it by.
    let no_path = |env: &serde_json::Value| -> serde_json::Value {
        let mut v: Vec<serde_json::Value> = env
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| !e.as_str().unwrap_or("").starts_with("PATH="))
            .cloned()
            .collect();
        v.push("MARK=no-path".into());
        v.into()
    };
    // What `env` printed: the mark, and no PATH (a shell would set a default one).
    let check = |out: &[u8], what: &str| {
        let out = text(out);
        assert!(out.lines().any(|l| l == "MARK=no-path"), "{what}: {out}");
        assert!(
            !out.lines().any(|l| l.starts_with("PATH=")),
            "{what}: {out}"
        );
    };

    let id = unique("nopath-task");
    create_container(&id);
    let _guard = RemoveOnDrop(id.clone());
    c.edit_spec(&id, |s| {
        s["process"]["args"] = serde_json::json!(["/bin/env"]);
        s["process"]["env"] = no_path(&s["process"]["env"]);
    });
    let f = Fifos::new(&id);
    let out = f.read_stdout(None);
    c.create_task(&id, &f, false).expect("create");
    c.start(&id, "")
        .unwrap_or_else(|e| panic!("start a task without PATH: {}", e.message()));
    assert_eq!(c.wait(&id, ""), 0);
    check(&out.join().expect("reader"), "task");
    c.delete_task(&id);

    let id = unique("nopath-exec");
    run_detached(&id, &["sleep", "600"]);
    let _guard = RemoveOnDrop(id.clone());
    let spec = c.spec(&id);
    for (exec_id, cwd, program) in [("abs", "/", "/bin/env"), ("rel", "/bin", "./env")] {
        let mut p = process_of(&spec, &[program], false);
        p["env"] = no_path(&p["env"]);
        p["cwd"] = cwd.into();
        let f = Fifos::new(&format!("{id}-{exec_id}"));
        let out = f.read_stdout(None);
        c.exec(&id, exec_id, &p, &f).expect("exec");
        c.start(&id, exec_id)
            .unwrap_or_else(|e| panic!("start {program} without PATH: {}", e.message()));
        assert_eq!(c.wait(&id, exec_id), 0, "{program}");
        c.delete_process(&id, exec_id);
        check(&out.join().expect("reader"), program);
    }
    // A bare name needs PATH: a clear failure naming it.
    let mut p = process_of(&spec, &["env"], false);
    p["env"] = no_path(&p["env"]);
    let f = Fifos::new(&format!("{id}-bare"));
    c.exec(&id, "bare", &p, &f).expect("exec");
    let e = c
        .start(&id, "bare")
        .expect_err("a bare name ran without PATH");
    assert!(e.message().contains("PATH"), "{}", e.message());
}
