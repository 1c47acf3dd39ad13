//! Terminals end to end: `ctr run -t` and `ctr task exec -t` driven through `script`
//! (util-linux) so ctr gets a real terminal, plus ResizePty over the shim's ttrpc socket.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::client::{Client, Fifos, process_of};
use common::*;
use containerd_shim_protos::api::{ResizePtyRequest, StateRequest};
use containerd_shim_protos::shim::shim_ttrpc::TaskClient;
use containerd_shim_protos::types::task::Status;
use ttrpc::context;

/// Runs `shell` (a command line using ctr) under `script`, which gives it a pty of
/// `rows`×`cols`; `input` is typed into that pty, then end-of-file.
fn under_script(shell: &str, input: &str) -> (Option<i32>, String) {
    let ctr = format!("ctr --address {}", address());
    let line = format!("stty rows 40 cols 100; {}", shell.replace("CTR", &ctr));
    let mut child = Command::new("timeout")
        .args(["60", "script", "-qec", &line, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn script (util-linux)");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input.as_bytes()).expect("type input");
    drop(stdin);
    let out = child.wait_with_output().expect("wait for script");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).replace('\r', ""),
    )
}

fn no_console_sockets_left() {
    let dir = std::path::Path::new("/run/containerd/youki")
        .join(NS)
        .join(".consoles");
    let left = || -> Vec<_> {
        std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect()
    };
    // Other tests' terminals come and go meanwhile (the directory is the machine's): a
    // socket left behind stays.
    wait_until(Duration::from_secs(10), || left().is_empty());
    assert!(left().is_empty(), "console sockets left: {:?}", left());
}

#[test]
fn run_t_gives_the_container_a_terminal_of_the_clients_size() {
    let id = unique("tty-run");
    let _guard = RemoveOnDrop(id.clone());
    // The sleep lets ctr's first ResizePty (sent right after Start) land.
    let (code, out) = under_script(
        &format!(
            "CTR run -t --rm --runtime {RUNTIME} {BUSYBOX} {id} sh -c 'sleep 0.5; tty; stty size; [ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo all-tty'"
        ),
        "",
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("/dev/pts/0\n"), "{out}");
    assert!(out.contains("40 100\n"), "{out}");
    assert!(out.contains("all-tty\n"), "{out}");
    assert_nothing_left(&id);
    no_console_sockets_left();
}

#[test]
fn exec_t_is_interactive_and_follows_resize_pty() {
    let id = unique("tty-exec");
    run_detached(&id, &["sleep", "600"]);
    let _guard = RemoveOnDrop(id.clone());

    // Typed input reaches the shell; its end ends `cat` (CloseIO → end-of-file on the pty).
    let (code, out) = under_script(
        &format!("CTR task exec -t --exec-id cat {id} sh -c 'cat; echo cat-ended'"),
        "typed-line\n",
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("typed-line\n"), "{out}");
    assert!(out.contains("cat-ended\n"), "{out}");

    // ResizePty from the Task API while the exec waits; it then reports the new size.
    let sock = socket_path(&id);
    let resizer = std::thread::spawn(move || {
        let c = ttrpc::Client::connect(&format!("unix://{}", sock.display())).expect("connect");
        let c = TaskClient::new(c);
        let mut req = ResizePtyRequest::new();
        req.id = id.clone();
        req.exec_id = "sized".into();
        req.width = 132;
        req.height = 50;
        let ctx = || context::with_timeout(Duration::from_secs(5).as_nanos() as i64);
        let mut state = StateRequest::new();
        state.id = req.id.clone();
        state.exec_id = req.exec_id.clone();
        // Retry until the exec runs (ctr starts it concurrently): before Start it has no
        // terminal yet, and a resize then is a no-op that succeeds.
        for _ in 0..40 {
            std::thread::sleep(Duration::from_millis(100));
            let running = c
                .state(ctx(), &state)
                .is_ok_and(|s| s.status.enum_value() == Ok(Status::RUNNING));
            if running && c.resize_pty(ctx(), &req).is_ok() {
                return true;
            }
        }
        false
    });
    let (code, out) = under_script(
        &format!(
            "CTR task exec -t --exec-id sized {} sh -c 'sleep 2; stty size'",
            _guard.0
        ),
        "",
    );
    assert!(
        resizer.join().expect("resizer thread"),
        "ResizePty never succeeded"
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("50 132\n"), "{out}");
    no_console_sockets_left();
}

/// containerd's Go client (cio) with a terminal sends a stderr path but creates no fifo
/// there (TestContainerPTY, TestContainerExecLargeOutputWithTTY): a task and an exec
/// must start all the same, their output on stdout.
#[test]
fn a_terminal_ignores_the_stderr_path_cio_never_creates() {
    let c = Client::new();
    let id = unique("tty-cio");
    create_container(&id);
    let _guard = RemoveOnDrop(id.clone());
    c.edit_spec(&id, |s| {
        s["process"]["args"] = serde_json::json!(["sh", "-c", "echo task-hello"]);
        s["process"]["terminal"] = true.into();
    });
    let f = Fifos::new(&id);
    let out = f.read_stdout(None);
    c.create_task(&id, &f, true)
        .unwrap_or_else(|e| panic!("create with a terminal: {}", e.message()));
    c.start(&id, "").expect("start");
    assert_eq!(c.wait(&id, ""), 0);
    let out = String::from_utf8_lossy(&out.join().expect("reader")).into_owned();
    assert_eq!(out, "task-hello\r\n");
    assert!(!f.stderr.exists(), "a stderr fifo appeared");
    c.delete_task(&id);

    let id = unique("tty-cio-exec");
    run_detached(&id, &["sleep", "600"]);
    let _guard = RemoveOnDrop(id.clone());
    let f = Fifos::new(&id);
    let out = f.read_stdout(None);
    let p = process_of(&c.spec(&id), &["sh", "-c", "echo exec-hello"], true);
    c.exec(&id, "e1", &p, &f).expect("exec");
    c.start(&id, "e1")
        .unwrap_or_else(|e| panic!("start an exec with a terminal: {}", e.message()));
    assert_eq!(c.wait(&id, "e1"), 0);
    c.delete_process(&id, "e1");
    let out = String::from_utf8_lossy(&out.join().expect("reader")).into_owned();
    assert_eq!(out, "exec-hello\r\n");
    assert!(!f.stderr.exists(), "a stderr fifo appeared");
}

/// As containerd's client does: Wait for the exec's exit, Delete it, then read the rest of
/// its output. All of it must be there, though the client reads slower than the process
/// writes (so at its exit output still waits in the terminal).
#[test]
fn exec_terminal_output_arrives_whole_before_the_exit() {
    const LINES: u32 = 30_000;
    let c = Client::new();
    let id = unique("tty-large");
    run_detached(&id, &["sleep", "600"]);
    let _guard = RemoveOnDrop(id.clone());
    let want: String = (1..=LINES).map(|i| format!("{i}\n")).collect();
    for round in 0..3 {
        let exec_id = format!("seq{round}");
        let f = Fifos::new(&format!("{id}-{round}"));
        let out = f.read_stdout(Some(Duration::from_millis(10)));
        // The container's own process (no terminal) with a terminal on the request alone,
        // as containerd's TestContainerExecLargeOutputWithTTY sends it.
        let p = process_of(&c.spec(&id), &["seq", "1", &LINES.to_string()], false);
        c.exec_with_terminal(&id, &exec_id, &p, &f, true)
            .unwrap_or_else(|e| panic!("exec with a terminal on the request: {}", e.message()));
        c.start(&id, &exec_id).expect("start");
        assert_eq!(c.wait(&id, &exec_id), 0);
        c.delete_process(&id, &exec_id);
        let got = String::from_utf8_lossy(&out.join().expect("reader")).replace('\r', "");
        assert!(
            got == want,
            "round {round}: {} of {} bytes, ending {:?}",
            got.len(),
            want.len(),
            &got[got.len().saturating_sub(30)..]
        );
    }
}
