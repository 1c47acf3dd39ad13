//! What execs leave in libcontainer's state directory of their container: nothing. Every
//! exec used to leave a `tenant-notify-*.sock` (and a terminal exec a `tenant-tty-*.sock`
//! link) there for the container's whole life: a probe every second made 86400 a day.

mod common;

use std::path::Path;
use std::time::Duration;

use common::client::{Client, Fifos, process_of};
use common::*;

/// The entries of container `id`'s libcontainer state directory.
fn state_entries(id: &str) -> Vec<String> {
    let dir = Path::new("/run/containerd/youki").join(NS).join(id);
    let mut v: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn execs_leave_no_entries_in_the_container_state_dir() {
    let id = unique("exec-state");
    run_detached(&id, &["sleep", "600"]);
    let _guard = RemoveOnDrop(id.clone());
    assert!(
        wait_until(Duration::from_secs(20), || task_status(&id) == "RUNNING"),
        "{id} never ran"
    );
    let before = state_entries(&id);
    let c = Client::new();
    let spec = c.spec(&id);
    for i in 0..8 {
        // Plain, failing (no such program) and terminal execs each leave their own.
        let o = ctr(&["task", "exec", "--exec-id", &format!("ok{i}"), &id, "true"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let o = ctr(&[
            "task",
            "exec",
            "--exec-id",
            &format!("bad{i}"),
            &id,
            "/no/such",
        ]);
        assert!(!o.status.success(), "a missing program ran");
        let exec_id = format!("tty{i}");
        let f = Fifos::new(&format!("{id}-{exec_id}"));
        let out = f.read_stdout(None);
        let p = process_of(&spec, &["echo", "hi"], true);
        c.exec(&id, &exec_id, &p, &f).expect("exec with a terminal");
        c.start(&id, &exec_id).expect("start the terminal exec");
        assert_eq!(c.wait(&id, &exec_id), 0);
        c.delete_process(&id, &exec_id);
        let _ = out.join();
    }
    // The last exec's own socket may outlive its worker for a moment: the next sweeps it.
    let after = state_entries(&id);
    let new: Vec<&String> = after.iter().filter(|e| !before.contains(e)).collect();
    assert!(
        new.len() <= 1,
        "24 execs left {} entries in the state dir: {new:#?}",
        new.len()
    );
}
