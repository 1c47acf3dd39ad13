//! Terminals end to end: `ctr run -t` and `ctr task exec -t` driven through `script`
//! (util-linux) so ctr gets a real terminal, plus ResizePty over the shim's ttrpc socket.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use containerd_shim_protos::api::ResizePtyRequest;
use containerd_shim_protos::shim::shim_ttrpc::TaskClient;
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
    let left: Vec<_> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "console sockets left: {left:?}");
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
        // Retry until the exec exists (ctr starts it concurrently).
        for _ in 0..40 {
            std::thread::sleep(Duration::from_millis(100));
            if c.resize_pty(ctx(), &req).is_ok() {
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
