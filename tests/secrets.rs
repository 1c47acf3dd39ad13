//! An exec's process spec carries the container's environment, Kubernetes Secrets
//! included: it never lands in a file (not in the state root, not under any name two
//! execs could share) and never in containerd's log, even at debug level. The state root
//! is private (0700) whichever path made it.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::client::{Client, Fifos, process_of};
use common::private::Private;
use common::{BUSYBOX, NS, RUNTIME, remove, run_detached, unique};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

/// The shim's state root for the tests' namespace (see runtime::youki::state_root).
fn state_root() -> std::path::PathBuf {
    Path::new("/run/containerd/youki").join(NS)
}

struct RemoveOnDrop(Vec<String>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for id in &self.0 {
            remove(id);
        }
    }
}

/// Runs `args` as exec `exec_id` in `id` with `env` added, and returns its stdout.
fn exec_output(c: &Client, id: &str, exec_id: &str, args: &[&str], env: &[String]) -> String {
    let mut p = process_of(&c.spec(id), args, false);
    let list = p["env"].as_array_mut().expect("env");
    list.extend(env.iter().map(|e| serde_json::json!(e)));
    // Named apart from the IDs: `{id}-{exec_id}` is the very collision tested below.
    let f = Fifos::new(&unique("fifo"));
    let out = f.read_stdout(None);
    c.exec(id, exec_id, &p, &f).expect("exec");
    c.start(id, exec_id).expect("start exec");
    assert_eq!(c.wait(id, exec_id), 0, "exec {exec_id} in {id} failed");
    c.delete_process(id, exec_id);
    String::from_utf8_lossy(&out.join().expect("stdout reader")).into_owned()
}

#[test]
fn an_exec_spec_never_lands_in_the_state_root() {
    let id = unique("spec-file");
    let marker = format!("secret-{id}");
    run_detached(&id, &["sleep", "1000"]);
    let _guard = RemoveOnDrop(vec![id.clone()]);
    // Everything made in the state root while the execs run (other tests' containers
    // come and go there too: only names of this container's count).
    let watch = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).expect("inotify");
    watch
        .add_watch(
            &state_root(),
            AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO,
        )
        .expect("watch the state root");
    let c = Client::new();
    for n in 0..3 {
        let out = exec_output(
            &c,
            &id,
            &format!("e{n}"),
            &["sh", "-c", "echo $TOKEN"],
            &[format!("TOKEN={marker}")],
        );
        assert_eq!(out, format!("{marker}\n"));
    }
    let made: Vec<String> = std::iter::from_fn(|| watch.read_events().ok())
        .flatten()
        .filter_map(|e| Some(e.name?.to_string_lossy().into_owned()))
        .filter(|name| name.contains(&id))
        .collect();
    assert!(
        made.is_empty(),
        "the execs made files in {}: {made:?}",
        state_root().display()
    );
    // Nor is the environment in any file there now.
    for e in std::fs::read_dir(state_root())
        .expect("state root")
        .flatten()
    {
        if e.file_type().is_ok_and(|t| t.is_file()) {
            let text = std::fs::read(e.path()).unwrap_or_default();
            assert!(
                !String::from_utf8_lossy(&text).contains(&marker),
                "{} holds the exec's environment",
                e.path().display()
            );
        }
    }
}

#[test]
fn the_state_root_is_private() {
    // As an older shim left it: 0755. Starting a shim must tighten it.
    let root = state_root();
    for dir in [root.as_path(), root.parent().expect("parent")] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let id = unique("root-mode");
    run_detached(&id, &["sleep", "1000"]);
    let _guard = RemoveOnDrop(vec![id.clone()]);
    for dir in [root.as_path(), root.parent().expect("parent")] {
        let mode = std::fs::metadata(dir).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{} is {mode:o}", dir.display());
    }
}

/// `a-b` + `c` and `a` + `b-c` named the same file: two execs at once could run each
/// other's process (or fail on a file the other removed).
#[test]
fn execs_whose_ids_join_alike_keep_their_own_process() {
    let base = unique("join");
    let (c1, c2) = (format!("{base}-a"), base.clone());
    for id in [&c1, &c2] {
        run_detached(id, &["sleep", "1000"]);
    }
    let _guard = RemoveOnDrop(vec![c1.clone(), c2.clone()]);
    for round in 0..8 {
        let barrier = Arc::new(Barrier::new(2));
        let threads: Vec<_> = [
            (c1.clone(), format!("b{round}")),
            (c2.clone(), format!("a-b{round}")),
        ]
        .into_iter()
        .map(|(id, exec_id)| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let c = Client::new();
                let me = format!("{id}/{exec_id}");
                barrier.wait();
                let out = exec_output(&c, &id, &exec_id, &["echo", &me], &[]);
                (me, out)
            })
        })
        .collect();
        for t in threads {
            let (me, out) = t.join().expect("exec thread");
            assert_eq!(
                out,
                format!("{me}\n"),
                "round {round}: another exec's process ran"
            );
        }
    }
}

/// containerd at debug level starts its shims with -debug; libcontainer then dumps each
/// exec's whole spec. No environment value may reach containerd's log.
#[test]
fn debug_logs_never_show_an_environment_value() {
    let n = std::process::id();
    let id = format!("envlog-{n}");
    let marker = format!("secret-marker-{n}");
    let mut p = Private::new("envlog");
    p.containers.push(id.clone());
    p.log_level = "debug";
    p.start();
    let env = format!("TOKEN={marker}");
    let o = p.ctr(&[
        "run",
        "-d",
        "--runtime",
        RUNTIME,
        "--env",
        &env,
        BUSYBOX,
        &id,
        "sleep",
        "1000",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // ctr's exec copies the container's process, environment included.
    let o = p.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        &id,
        "sh",
        "-c",
        "test -n \"$TOKEN\"",
    ]);
    assert!(
        o.status.success(),
        "exec: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let log_path = p.dir.join("containerd.log");
    // The exec's spec went through the shim's debug log (redacted).
    let logged = common::wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&log_path)
            .is_ok_and(|l| l.contains("<redacted>") || l.contains(&marker))
    });
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let leaks: Vec<&str> = log.lines().filter(|l| l.contains(&marker)).collect();
    assert!(
        leaks.is_empty(),
        "containerd's log shows an environment value:\n{}",
        leaks.join("\n")
    );
    assert!(
        logged,
        "no exec spec in the debug log: was the shim at debug level?"
    );
}
