//! Unit tests of the pod rules, against the fake runtime.

use super::*;

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::Instant;

use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskOOM, TaskPaused,
    TaskStart,
};
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::topics;
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};
use tokio::time::timeout;
use ttrpc::Code;

use crate::runtime::fake::FakeRuntime;
use crate::shim::events::Forwarder;
use crate::shim::service::timestamp;

const NS: &str = "pod-tests";
/// Upper bound for anything asynchronous (event delivery, an exit reaching the pod).
const PATIENCE: Duration = Duration::from_secs(2);

type Recorded = Arc<Mutex<Vec<(String, Envelope)>>>;

/// Records every envelope it is handed, in order; refuses them all while `.1` (containerd
/// is down) is raised.
struct Recorder(Recorded, Arc<AtomicBool>);

#[async_trait::async_trait]
impl Forwarder for Recorder {
    async fn forward(&mut self, envelope: &Envelope) -> Result<()> {
        if self.1.load(Ordering::SeqCst) {
            return Err(Error::Runtime("containerd is down".into()));
        }
        self.0
            .lock()
            .unwrap()
            .push((envelope.topic.clone(), envelope.clone()));
        Ok(())
    }
}

struct Harness {
    pod: Arc<Pod>,
    rt: Arc<FakeRuntime>,
    events: Recorded,
    /// The reaper's channel: what the fake sends exits on.
    exits: UnboundedSender<(i32, u32)>,
    /// Raised: containerd refuses every event (it is down or restarting).
    containerd_down: Arc<AtomicBool>,
}

/// Must be called inside a tokio runtime (the publisher and the exit pump are tasks).
fn harness_with(setup: impl FnOnce(&mut FakeRuntime)) -> Harness {
    harness_opts(setup, true)
}

/// `pump: false` models a reaper that never reports exits (lost or very late).
fn harness_opts(setup: impl FnOnce(&mut FakeRuntime), pump: bool) -> Harness {
    let (tx, mut rx) = unbounded_channel::<(i32, u32)>();
    let mut rt = FakeRuntime::new(tx.clone());
    setup(&mut rt);
    let rt = Arc::new(rt);
    let events: Recorded = Arc::new(Mutex::new(Vec::new()));
    let down = Arc::new(AtomicBool::new(false));
    let publisher = Publisher::spawn(NS.to_string(), Recorder(events.clone(), down.clone()));
    let pod = Arc::new(Pod::new(rt.clone(), publisher));
    let p = pod.clone();
    tokio::spawn(async move {
        while let Some((pid, status)) = rx.recv().await {
            if pump {
                // As in the daemon: an init's exit may wait for its execs' exits, which
                // come through this same channel.
                let p = p.clone();
                tokio::spawn(async move { p.on_exit(pid, status).await });
            }
        }
    });
    Harness {
        pod,
        rt,
        events,
        exits: tx,
        containerd_down: down,
    }
}

fn harness() -> Harness {
    harness_with(|_| {})
}

fn params(id: &str) -> CreateParams {
    CreateParams {
        id: id.to_string(),
        bundle: std::env::temp_dir().join(format!("pod-tests-{}-{id}", std::process::id())),
        rootfs: Vec::new(),
        stdio: StdioPaths::default(),
        systemd_cgroup: false,
        no_pivot_root: false,
        no_new_keyring: false,
        checkpoint: String::new(),
        parent_checkpoint: String::new(),
        criu_work_path: None,
    }
}

impl Harness {
    fn calls(&self) -> Vec<String> {
        self.rt.calls.lock().unwrap().clone()
    }

    /// Waits (bounded) until at least `n` events were delivered, then returns them all.
    async fn events_at_least(&self, n: usize) -> Vec<(String, Envelope)> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let got = self.events.lock().unwrap().clone();
            if got.len() >= n || Instant::now() >= deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits for exactly `n` events and checks nothing more shows up shortly after.
    async fn events_exactly(&self, n: usize) -> Vec<(String, Envelope)> {
        let got = self.events_at_least(n).await;
        assert_eq!(
            got.len(),
            n,
            "expected {n} events, got {:?}",
            topics_of(&got)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        let later = self.events.lock().unwrap().clone();
        assert_eq!(
            later.len(),
            n,
            "unexpected extra events: {:?}",
            topics_of(&later)
        );
        later
    }

    async fn wait_exit(&self, id: &str) -> Exit {
        timeout(PATIENCE, self.pod.wait(id, ""))
            .await
            .unwrap_or_else(|_| panic!("wait({id}) did not answer within {PATIENCE:?}"))
            .unwrap_or_else(|e| panic!("wait({id}) failed: {e}"))
    }
}

async fn pids_of(h: &Harness, id: &str) -> Vec<u32> {
    h.pod
        .pids(id)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.pid)
        .collect()
}

fn topics_of(events: &[(String, Envelope)]) -> Vec<String> {
    events.iter().map(|(t, _)| t.clone()).collect()
}

fn decode<M: Message>(env: &Envelope) -> M {
    M::parse_from_bytes(&env.event.value).expect("event payload decodes")
}

fn assert_code<T: std::fmt::Debug>(r: Result<T>, code: Code) -> Error {
    match r {
        Ok(v) => panic!("expected {code:?}, got Ok({v:?})"),
        Err(e) => {
            assert_eq!(e.code(), code, "wrong code for error {e}");
            e
        }
    }
}

/// Polls every future on the same task until all are done (like `futures::join_all`).
async fn join_all<F: Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, o) in futs.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *o = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    out.into_iter()
        .map(|o| o.expect("every future finished"))
        .collect()
}

#[tokio::test]
async fn create_start_exit_wait_delete_publishes_in_order() {
    let h = harness();
    let pid = h.pod.create(params("c1")).await.unwrap();
    assert_eq!(pid, 1000, "the fake hands out pids from 1000");

    let st = h.pod.state("c1", "").await.unwrap();
    assert_eq!((st.status, st.pid, st.exit), (Status::Created, pid, None));
    assert_eq!(st.id, "c1");
    assert_eq!(st.bundle, params("c1").bundle);

    assert_eq!(h.pod.start("c1", "").await.unwrap(), pid);
    assert_eq!(h.pod.state("c1", "").await.unwrap().status, Status::Running);

    h.rt.exit("c1", 3);
    let exit = h.wait_exit("c1").await;
    assert_eq!(exit.status, 3);

    let st = h.pod.state("c1", "").await.unwrap();
    assert_eq!(st.status, Status::Stopped);
    assert_eq!(st.exit, Some(exit));

    let ev = h.events_exactly(3).await;
    assert_eq!(
        topics_of(&ev),
        [
            topics::TASK_CREATE_EVENT_TOPIC,
            topics::TASK_START_EVENT_TOPIC,
            topics::TASK_EXIT_EVENT_TOPIC
        ]
    );
    for (_, env) in &ev {
        assert_eq!(env.namespace, NS);
    }
    let created: TaskCreate = decode(&ev[0].1);
    assert_eq!(ev[0].1.event.type_url, "containerd.events.TaskCreate");
    assert_eq!(
        (created.container_id.as_str(), created.pid),
        ("c1", pid as u32)
    );
    assert_eq!(created.bundle, params("c1").bundle.to_string_lossy());
    let started: TaskStart = decode(&ev[1].1);
    assert_eq!(
        (started.container_id.as_str(), started.pid),
        ("c1", pid as u32)
    );
    assert_eq!(ev[2].1.event.type_url, "containerd.events.TaskExit");
    let exited: TaskExit = decode(&ev[2].1);
    assert_eq!(exited.container_id, "c1");
    assert_eq!(exited.id, "c1");
    assert_eq!(exited.pid, pid as u32);
    assert_eq!(exited.exit_status, 3);
    assert_eq!(exited.exited_at.as_ref(), Some(&timestamp(exit.at)));

    let (dpid, dexit) = h.pod.delete("c1", "").await.unwrap();
    assert_eq!((dpid, dexit), (pid, exit));

    let ev = h.events_exactly(4).await;
    assert_eq!(ev[3].0, topics::TASK_DELETE_EVENT_TOPIC);
    let deleted: TaskDelete = decode(&ev[3].1);
    assert_eq!(deleted.container_id, "c1");
    assert_eq!(deleted.pid, pid as u32);
    assert_eq!(deleted.exit_status, 3);
    assert_eq!(deleted.exited_at.as_ref(), Some(&timestamp(exit.at)));

    assert_eq!(h.calls(), ["create c1", "start c1", "delete c1"]);
    assert!(h.pod.is_empty());
}

#[tokio::test]
async fn wait_blocks_until_exit_then_answers_at_once() {
    let h = harness();
    h.pod.create(params("c1")).await.unwrap();
    h.pod.start("c1", "").await.unwrap();

    // Still running: Wait must not answer.
    assert!(
        timeout(Duration::from_millis(100), h.pod.wait("c1", ""))
            .await
            .is_err(),
        "wait answered for a running container"
    );

    h.rt.exit("c1", 5);
    let first = h.wait_exit("c1").await;
    assert_eq!(first.status, 5);
    assert_eq!(h.pod.state("c1", "").await.unwrap().status, Status::Stopped);

    // Already exited: answers immediately, with the very same exit (status and time).
    let again = timeout(Duration::from_secs(1), h.pod.wait("c1", ""))
        .await
        .expect("wait on an exited container answers at once")
        .unwrap();
    assert_eq!(again, first);

    // Wait on an unknown container is NOT_FOUND, not a hang.
    let r = timeout(Duration::from_secs(1), h.pod.wait("nope", ""))
        .await
        .expect("no hang");
    assert_code(r, Code::NOT_FOUND);
}

#[tokio::test]
async fn delete_running_is_refused_until_killed() {
    let h = harness();
    let pid = h.pod.create(params("web")).await.unwrap();
    h.pod.start("web", "").await.unwrap();

    let e = assert_code(h.pod.delete("web", "").await, Code::FAILED_PRECONDITION);
    assert!(
        e.to_string().contains("web"),
        "message should name the container: {e}"
    );
    assert!(
        !h.calls().iter().any(|c| c.starts_with("delete")),
        "a refused delete must not reach the runtime: {:?}",
        h.calls()
    );
    assert_eq!(
        h.pod.state("web", "").await.unwrap().status,
        Status::Running
    );

    h.pod
        .kill("web", "", libc::SIGKILL as u32, false)
        .await
        .unwrap();
    assert!(
        h.calls()
            .contains(&format!("kill web {} false", libc::SIGKILL))
    );
    let exit = h.wait_exit("web").await;
    assert_eq!(exit.status, 137);

    let (dpid, dexit) = h.pod.delete("web", "").await.unwrap();
    assert_eq!(dpid, pid);
    assert_eq!(dexit.status, 137);
    assert_eq!(dexit, exit);

    assert_code(h.pod.state("web", "").await, Code::NOT_FOUND);
    assert_code(h.pod.delete("web", "").await, Code::NOT_FOUND);
    assert!(h.pod.is_empty());

    let ev = h.events_exactly(4).await;
    assert_eq!(
        topics_of(&ev),
        [
            topics::TASK_CREATE_EVENT_TOPIC,
            topics::TASK_START_EVENT_TOPIC,
            topics::TASK_EXIT_EVENT_TOPIC,
            topics::TASK_DELETE_EVENT_TOPIC
        ]
    );
    let deleted: TaskDelete = decode(&ev[3].1);
    assert_eq!((deleted.pid, deleted.exit_status), (pid as u32, 137));
}

#[tokio::test]
async fn kill_and_start_respect_the_state() {
    let h = harness();
    h.pod.create(params("c1")).await.unwrap();
    h.pod.start("c1", "").await.unwrap();

    // Start twice.
    let e = assert_code(h.pod.start("c1", "").await, Code::FAILED_PRECONDITION);
    assert!(e.to_string().contains("c1"), "{e}");
    assert_eq!(
        h.calls().iter().filter(|c| *c == "start c1").count(),
        1,
        "{:?}",
        h.calls()
    );
    assert_eq!(h.pod.state("c1", "").await.unwrap().status, Status::Running);

    h.rt.exit("c1", 0);
    assert_eq!(h.wait_exit("c1").await.status, 0);

    // Kill of a finished process.
    let kills_before = h.calls().iter().filter(|c| c.starts_with("kill")).count();
    assert_code(
        h.pod.kill("c1", "", libc::SIGKILL as u32, false).await,
        Code::NOT_FOUND,
    );
    let kills_after = h.calls().iter().filter(|c| c.starts_with("kill")).count();
    assert_eq!(
        kills_before, kills_after,
        "kill of a finished process reached the runtime"
    );
    // With `all` what is left in the stopped container's cgroup is still signalled, as
    // with runc-v2 (the runtime signals the cgroup, not the reaped init's PID).
    h.pod
        .kill("c1", "", libc::SIGTERM as u32, true)
        .await
        .unwrap();

    // Start after exit.
    assert_code(h.pod.start("c1", "").await, Code::FAILED_PRECONDITION);
    // The exit is unchanged by the refused calls.
    assert_eq!(
        h.pod.state("c1", "").await.unwrap().exit.map(|e| e.status),
        Some(0)
    );

    // Start/kill of a container that never existed.
    assert_code(h.pod.start("ghost", "").await, Code::NOT_FOUND);
    assert_code(h.pod.kill("ghost", "", 9, false).await, Code::NOT_FOUND);

    // A created (never started) container that exits cannot be started either.
    h.pod.create(params("c2")).await.unwrap();
    h.pod
        .kill("c2", "", libc::SIGKILL as u32, false)
        .await
        .unwrap();
    assert_eq!(h.wait_exit("c2").await.status, 137);
    assert_code(h.pod.start("c2", "").await, Code::FAILED_PRECONDITION);
    assert!(!h.calls().contains(&"start c2".to_string()));
}

#[tokio::test]
async fn duplicate_and_invalid_ids_are_refused() {
    let h = harness();
    let pid = h.pod.create(params("dup")).await.unwrap();

    let e = assert_code(h.pod.create(params("dup")).await, Code::ALREADY_EXISTS);
    assert!(e.to_string().contains("dup"), "{e}");
    assert_eq!(
        h.calls(),
        ["create dup"],
        "the duplicate must not reach the runtime"
    );

    // The first container is unaffected: same pid, same state, still usable.
    let st = h.pod.state("dup", "").await.unwrap();
    assert_eq!((st.pid, st.status, st.exit), (pid, Status::Created, None));
    assert_eq!(h.pod.start("dup", "").await.unwrap(), pid);
    assert_eq!(
        h.pod.state("dup", "").await.unwrap().status,
        Status::Running
    );

    // Invalid IDs: refused before anything happens.
    let h2 = harness();
    for bad in ["../x", "a/b", "", ".", "-x"] {
        assert_code(h2.pod.create(params(bad)).await, Code::INVALID_ARGUMENT);
        assert_code(h2.pod.state(bad, "").await, Code::NOT_FOUND);
    }
    assert!(
        h2.calls().is_empty(),
        "invalid IDs reached the runtime: {:?}",
        h2.calls()
    );
    assert!(h2.pod.is_empty());
    h2.events_exactly(0).await;

    // Only the first create and the start of `dup` were published.
    let ev = h.events_exactly(2).await;
    assert_eq!(
        topics_of(&ev),
        [
            topics::TASK_CREATE_EVENT_TOPIC,
            topics::TASK_START_EVENT_TOPIC
        ]
    );
}

#[tokio::test]
async fn failed_create_leaves_nothing_behind() {
    let h = harness_with(|rt| rt.fail_create = Some("c1".into()));

    let e = assert_code(h.pod.create(params("c1")).await, Code::UNKNOWN);
    assert!(matches!(e, Error::Runtime(_)), "{e:?}");
    assert!(h.pod.is_empty());
    assert_code(h.pod.state("c1", "").await, Code::NOT_FOUND);
    assert_code(h.pod.wait("c1", "").await, Code::NOT_FOUND);
    assert_code(h.pod.delete("c1", "").await, Code::NOT_FOUND);

    // The ID is free again: a retry reaches the runtime (and fails there, as this fake is
    // set up to), instead of being refused as a duplicate.
    let e = assert_code(h.pod.create(params("c1")).await, Code::UNKNOWN);
    assert!(matches!(e, Error::Runtime(_)), "{e:?}");
    assert_eq!(h.calls(), ["create c1", "create c1"]);
    assert!(h.pod.is_empty());

    // Other containers of the same pod are fine.
    h.pod.create(params("c2")).await.unwrap();
    assert_eq!(h.pod.state("c2", "").await.unwrap().status, Status::Created);

    // Nothing was published for the failures.
    let ev = h.events_exactly(1).await;
    let created: TaskCreate = decode(&ev[0].1);
    assert_eq!(created.container_id, "c2");

    // With a runtime that works, the same ID is created.
    let ok = harness();
    ok.pod.create(params("c1")).await.unwrap();
    assert_eq!(
        ok.pod.state("c1", "").await.unwrap().status,
        Status::Created
    );

    // A failure before the runtime (stdio, checkpoint) leaves nothing either.
    let mut bad_stdio = params("c3");
    bad_stdio.stdio.stdout = "relative/path".into();
    assert_code(h.pod.create(bad_stdio).await, Code::INVALID_ARGUMENT);
    let mut ckpt = params("c3");
    ckpt.checkpoint = "some/checkpoint".into();
    let e = assert_code(h.pod.create(ckpt).await, Code::INVALID_ARGUMENT);
    assert!(e.to_string().contains("some/checkpoint"), "{e}");
    assert_code(h.pod.state("c3", "").await, Code::NOT_FOUND);
    assert!(!h.calls().contains(&"create c3".to_string()));
    h.pod.create(params("c3")).await.unwrap();
}

#[tokio::test]
async fn delete_of_created_container_uses_the_reaped_exit() {
    let h = harness();
    let pid = h.pod.create(params("c1")).await.unwrap();

    let t0 = Instant::now();
    let (dpid, exit) = h.pod.delete("c1", "").await.unwrap();
    let took = t0.elapsed();
    assert_eq!((dpid, exit.status), (pid, 137));
    // The exit came from the reaper, not from the DELETE_REAP_WAIT fallback (also 137).
    assert!(
        took < DELETE_REAP_WAIT / 2,
        "delete waited {took:?}: the reaped exit was not used"
    );

    assert_eq!(h.calls(), ["create c1", "delete c1"]);
    assert_code(h.pod.state("c1", "").await, Code::NOT_FOUND);
    assert!(h.pod.is_empty());

    let ev = h.events_at_least(2).await;
    assert_eq!(ev[0].0, topics::TASK_CREATE_EVENT_TOPIC);
    let del = ev
        .iter()
        .find(|(t, _)| t == topics::TASK_DELETE_EVENT_TOPIC)
        .unwrap_or_else(|| panic!("no /tasks/delete in {:?}", topics_of(&ev)));
    let deleted: TaskDelete = decode(&del.1);
    assert_eq!(deleted.container_id, "c1");
    assert_eq!((deleted.pid, deleted.exit_status), (pid as u32, 137));
    assert_eq!(deleted.exited_at.as_ref(), Some(&timestamp(exit.at)));
}

#[tokio::test]
async fn exit_reaped_before_registration_is_applied_on_create() {
    let h = harness();
    // The fake hands out 1000 next; its init "dies" while Create is still running.
    *h.rt.exit_during_create.lock().unwrap() = Some(7);
    assert!(h.pod.is_empty());

    let pid = h.pod.create(params("early")).await.unwrap();
    assert_eq!(pid, 1000);
    assert!(
        !lock(&h.pod.exits).has_orphan(1000),
        "orphan exit not consumed"
    );

    let st = h.pod.state("early", "").await.unwrap();
    assert_eq!(st.status, Status::Stopped);
    assert_eq!(st.exit.map(|e| e.status), Some(7));

    let exit = timeout(Duration::from_secs(1), h.pod.wait("early", ""))
        .await
        .expect("wait answers at once")
        .unwrap();
    assert_eq!(exit.status, 7);

    assert_code(h.pod.start("early", "").await, Code::FAILED_PRECONDITION);

    let ev = h.events_exactly(2).await;
    assert_eq!(
        topics_of(&ev),
        [
            topics::TASK_CREATE_EVENT_TOPIC,
            topics::TASK_EXIT_EVENT_TOPIC
        ]
    );
    let exited: TaskExit = decode(&ev[1].1);
    assert_eq!(
        (exited.container_id.as_str(), exited.pid, exited.exit_status),
        ("early", 1000, 7)
    );

    // A stale orphan (an earlier process that had the next PID) does not touch the
    // next container.
    h.exits.send((1001, 1)).unwrap();
    let deadline = Instant::now() + PATIENCE;
    while !lock(&h.pod.exits).has_orphan(1001) {
        assert!(
            Instant::now() < deadline,
            "the orphan exit was never recorded"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let pid2 = h.pod.create(params("late")).await.unwrap();
    assert_eq!(pid2, 1001);
    assert_eq!(
        h.pod.state("late", "").await.unwrap().status,
        Status::Created
    );
}

#[tokio::test]
async fn concurrent_creates_all_succeed_with_distinct_pids() {
    let h = harness();
    let ids: Vec<String> = (0..10).map(|i| format!("c{i}")).collect();
    let results = join_all(ids.iter().map(|id| h.pod.create(params(id))).collect()).await;

    let mut pids = HashSet::new();
    for (id, r) in ids.iter().zip(results) {
        let pid = r.unwrap_or_else(|e| panic!("create {id}: {e}"));
        assert!(pids.insert(pid), "pid {pid} handed out twice");
        let st = h.pod.state(id, "").await.unwrap();
        assert_eq!((st.pid, st.status), (pid, Status::Created));
    }
    assert_eq!(pids.len(), 10);
    assert_eq!(h.pod.containers.len(), 10);

    let ev = h.events_exactly(10).await;
    assert!(ev.iter().all(|(t, _)| t == topics::TASK_CREATE_EVENT_TOPIC));
    let published: HashSet<u32> = ev
        .iter()
        .map(|(_, e)| decode::<TaskCreate>(e).pid)
        .collect();
    assert_eq!(published, pids.iter().map(|p| *p as u32).collect());
}

#[tokio::test]
async fn invalid_signals_are_refused() {
    let h = harness();
    h.pod.create(params("c1")).await.unwrap();
    h.pod.start("c1", "").await.unwrap();

    for sig in [0u32, 65, 1000, u32::MAX] {
        let e = assert_code(
            h.pod.kill("c1", "", sig, false).await,
            Code::INVALID_ARGUMENT,
        );
        assert!(e.to_string().contains(&sig.to_string()), "{e}");
    }
    assert!(
        !h.calls().iter().any(|c| c.starts_with("kill")),
        "an invalid signal reached the runtime: {:?}",
        h.calls()
    );
    assert_eq!(h.pod.state("c1", "").await.unwrap().status, Status::Running);

    // The boundaries are valid.
    h.pod.kill("c1", "", 1, false).await.unwrap();
    h.pod.kill("c1", "", 64, true).await.unwrap();
    assert_eq!(h.calls()[2..], ["kill c1 1 false", "kill c1 64 true"]);
}

#[tokio::test]
async fn wait_on_created_container_returns_when_delete_gives_up_on_the_reaper() {
    // The killed init's exit never reaches the pod, so Delete falls back to 137 after
    // DELETE_REAP_WAIT. A Wait that was already pending (containerd waits before it
    // starts a task) must then answer too, not hang forever.
    let h = harness_opts(|_| {}, false);
    let pid = h.pod.create(params("c1")).await.unwrap();
    let pod = h.pod.clone();
    let waiter = tokio::spawn(async move { pod.wait("c1", "").await });
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished(), "wait answered before any exit");

    let (dpid, exit) = h.pod.delete("c1", "").await.unwrap();
    assert_eq!((dpid, exit.status), (pid, 137));
    assert!(h.pod.is_empty());

    let waited = timeout(PATIENCE, waiter)
        .await
        .expect("a pending Wait hangs after its container was deleted")
        .unwrap()
        .unwrap();
    assert_eq!(waited, exit);
}

fn exec_params(id: &str, exec_id: &str) -> ExecParams {
    ExecParams {
        id: id.to_string(),
        exec_id: exec_id.to_string(),
        stdio: StdioPaths::default(),
        process: br#"{"args":["true"],"cwd":"/"}"#.to_vec(),
    }
}

async fn running(h: &Harness, id: &str) -> i32 {
    h.pod.create(params(id)).await.unwrap();
    h.pod.start(id, "").await.unwrap()
}

#[tokio::test]
async fn exec_lifecycle_follows_runc_v2() {
    let h = harness();
    let init = running(&h, "c1").await;

    h.pod.exec(exec_params("c1", "e1")).await.unwrap();
    let e = assert_code(
        h.pod.exec(exec_params("c1", "e1")).await,
        Code::ALREADY_EXISTS,
    );
    assert!(e.to_string().contains("e1"), "{e}");
    assert_code(
        h.pod.exec(exec_params("c1", "../e")).await,
        Code::INVALID_ARGUMENT,
    );
    let st = h.pod.state("c1", "e1").await.unwrap();
    assert_eq!(
        (st.id.as_str(), st.status, st.pid),
        ("e1", Status::Created, 0)
    );
    assert_code(
        h.pod.kill("c1", "e1", 9, false).await,
        Code::FAILED_PRECONDITION,
    );

    let pid = h.pod.start("c1", "e1").await.unwrap();
    assert_ne!(pid, init);
    assert_eq!(
        h.pod.state("c1", "e1").await.unwrap().status,
        Status::Running
    );
    assert_code(h.pod.start("c1", "e1").await, Code::FAILED_PRECONDITION);
    assert_code(h.pod.delete("c1", "e1").await, Code::FAILED_PRECONDITION);
    assert_code(h.pod.state("c1", "e2").await, Code::NOT_FOUND);
    assert_code(h.pod.wait("c1", "e2").await, Code::NOT_FOUND);

    h.rt.exit("c1/e1", 7);
    let exit = timeout(PATIENCE, h.pod.wait("c1", "e1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit.status, 7);
    assert_code(h.pod.kill("c1", "e1", 9, false).await, Code::NOT_FOUND);
    // The exec's end leaves the container running.
    assert_eq!(h.pod.state("c1", "").await.unwrap().status, Status::Running);

    let (dpid, dexit) = h.pod.delete("c1", "e1").await.unwrap();
    assert_eq!((dpid, dexit), (pid, exit));
    assert_code(h.pod.state("c1", "e1").await, Code::NOT_FOUND);

    let ev = h.events_exactly(5).await;
    assert_eq!(
        topics_of(&ev),
        [
            topics::TASK_CREATE_EVENT_TOPIC,
            topics::TASK_START_EVENT_TOPIC,
            topics::TASK_EXEC_ADDED_EVENT_TOPIC,
            topics::TASK_EXEC_STARTED_EVENT_TOPIC,
            topics::TASK_EXIT_EVENT_TOPIC,
        ],
        "an exec's Delete publishes no TaskDelete"
    );
    let added: TaskExecAdded = decode(&ev[2].1);
    assert_eq!(
        (added.container_id.as_str(), added.exec_id.as_str()),
        ("c1", "e1")
    );
    let started: TaskExecStarted = decode(&ev[3].1);
    assert_eq!(
        (
            started.container_id.as_str(),
            started.exec_id.as_str(),
            started.pid
        ),
        ("c1", "e1", pid as u32)
    );
    let exited: TaskExit = decode(&ev[4].1);
    assert_eq!(
        (
            exited.container_id.as_str(),
            exited.id.as_str(),
            exited.pid,
            exited.exit_status
        ),
        ("c1", "e1", pid as u32, 7)
    );
    assert_eq!(h.calls(), ["create c1", "start c1", "exec c1 e1"]);
}

#[tokio::test]
async fn exec_needs_a_running_container() {
    let h = harness();
    h.pod.create(params("c1")).await.unwrap();
    let e = assert_code(
        h.pod.exec(exec_params("c1", "e1")).await,
        Code::FAILED_PRECONDITION,
    );
    assert!(e.to_string().contains("not running"), "{e}");
    assert_code(h.pod.exec(exec_params("nope", "e1")).await, Code::NOT_FOUND);

    h.pod.start("c1", "").await.unwrap();
    h.pod.exec(exec_params("c1", "late")).await.unwrap();
    h.rt.exit("c1", 0);
    h.wait_exit("c1").await;
    assert_code(
        h.pod.exec(exec_params("c1", "e2")).await,
        Code::FAILED_PRECONDITION,
    );
    // Added before the container stopped, started after: refused, nothing run.
    assert_code(h.pod.start("c1", "late").await, Code::FAILED_PRECONDITION);
    assert!(
        !h.calls().iter().any(|c| c.starts_with("exec")),
        "{:?}",
        h.calls()
    );
}

#[tokio::test]
async fn init_exit_kills_execs_and_is_published_after_theirs() {
    let h = harness();
    let init = running(&h, "c1").await;
    h.pod.exec(exec_params("c1", "e1")).await.unwrap();
    let epid = h.pod.start("c1", "e1").await.unwrap();

    h.rt.exit("c1", 0);
    let exit = h.wait_exit("c1").await;
    assert_eq!(exit.status, 0);
    let e = h.pod.state("c1", "e1").await.unwrap();
    assert_eq!(
        (e.status, e.exit.map(|x| x.status)),
        (Status::Stopped, Some(137))
    );
    assert!(
        h.calls().contains(&"kill c1 9 true".to_string()),
        "the init's exit kills what is left: {:?}",
        h.calls()
    );

    let ev = h.events_exactly(6).await;
    let exits: Vec<TaskExit> = ev
        .iter()
        .filter(|(t, _)| t == topics::TASK_EXIT_EVENT_TOPIC)
        .map(|(_, env)| decode(env))
        .collect();
    let order: Vec<(&str, u32)> = exits.iter().map(|x| (x.id.as_str(), x.pid)).collect();
    assert_eq!(order, [("e1", epid as u32), ("c1", init as u32)]);

    // Delete of the container forgets its execs too.
    h.pod.delete("c1", "").await.unwrap();
    assert_code(h.pod.state("c1", "e1").await, Code::NOT_FOUND);
}

#[tokio::test]
async fn pause_and_resume_follow_the_state() {
    let h = harness();
    h.pod.create(params("c1")).await.unwrap();
    let e = assert_code(h.pod.pause("c1").await, Code::FAILED_PRECONDITION);
    assert!(e.to_string().contains("created, not started"), "{e}");
    assert_code(h.pod.resume("c1").await, Code::FAILED_PRECONDITION);
    h.pod.start("c1", "").await.unwrap();
    assert_code(h.pod.resume("c1").await, Code::FAILED_PRECONDITION);

    h.pod.pause("c1").await.unwrap();
    assert_eq!(h.pod.state("c1", "").await.unwrap().status, Status::Paused);
    assert_code(h.pod.pause("c1").await, Code::FAILED_PRECONDITION);
    assert_code(h.pod.start("c1", "").await, Code::FAILED_PRECONDITION);
    assert_code(h.pod.delete("c1", "").await, Code::FAILED_PRECONDITION);
    assert_code(
        h.pod.exec(exec_params("c1", "e1")).await,
        Code::FAILED_PRECONDITION,
    );
    h.pod.resume("c1").await.unwrap();
    assert_eq!(h.pod.state("c1", "").await.unwrap().status, Status::Running);

    // SIGKILL to a paused container thaws it, or the kill could never take effect.
    h.pod.pause("c1").await.unwrap();
    h.pod
        .kill("c1", "", libc::SIGKILL as u32, false)
        .await
        .unwrap();
    assert_eq!(h.wait_exit("c1").await.status, 137);
    assert_eq!(h.pod.state("c1", "").await.unwrap().status, Status::Stopped);
    assert_code(h.pod.pause("c1").await, Code::FAILED_PRECONDITION);
    assert_code(h.pod.update("c1", b"{}").await, Code::FAILED_PRECONDITION);

    let ev = h.events_exactly(6).await;
    assert_eq!(
        topics_of(&ev)[2..],
        [
            topics::TASK_PAUSED_EVENT_TOPIC,
            topics::TASK_RESUMED_EVENT_TOPIC,
            topics::TASK_PAUSED_EVENT_TOPIC,
            topics::TASK_EXIT_EVENT_TOPIC,
        ]
    );
    let paused: TaskPaused = decode(&ev[2].1);
    assert_eq!(paused.container_id, "c1");
    assert_eq!(
        h.calls(),
        [
            "create c1",
            "start c1",
            "pause c1",
            "resume c1",
            "pause c1",
            "kill c1 9 false",
            "resume c1"
        ]
    );
}

#[tokio::test]
async fn update_reaches_the_runtime_while_the_container_lives() {
    let h = harness();
    h.pod.create(params("c1")).await.unwrap();
    h.pod
        .update("c1", br#"{"pids":{"limit":5}}"#)
        .await
        .unwrap();
    h.pod.start("c1", "").await.unwrap();
    h.pod
        .update("c1", br#"{"pids":{"limit":7}}"#)
        .await
        .unwrap();
    assert_code(h.pod.update("nope", b"{}").await, Code::NOT_FOUND);
    assert_eq!(
        h.calls()[1..],
        [
            r#"update c1 {"pids":{"limit":5}}"#,
            "start c1",
            r#"update c1 {"pids":{"limit":7}}"#
        ]
    );
}

#[tokio::test]
async fn oom_kills_in_the_memory_cgroup_become_task_oom_events() {
    let root = std::env::temp_dir().join(format!("pod-oom-{}", std::process::id()));
    std::fs::create_dir_all(root.join("c1")).unwrap();
    let events_file = root.join("c1/memory.events");
    std::fs::write(&events_file, "oom 0\noom_kill 0\n").unwrap();
    let r = root.clone();
    let h = harness_with(move |rt| rt.memory_cgroups = Some(r));
    running(&h, "c1").await;
    std::fs::write(&events_file, "oom 1\noom_kill 1\n").unwrap();
    let ev = h.events_exactly(3).await;
    assert_eq!(ev[2].0, topics::TASK_OOM_EVENT_TOPIC);
    let oom: TaskOOM = decode(&ev[2].1);
    assert_eq!(oom.container_id, "c1");
    h.rt.exit("c1", 137);
    h.wait_exit("c1").await;
    h.pod.delete("c1", "").await.unwrap();
    // The watch stopped with Delete: a later change publishes nothing.
    std::fs::write(&events_file, "oom 2\noom_kill 2\n").unwrap();
    h.events_exactly(5).await;
    std::fs::remove_dir_all(&root).unwrap();
}

/// Issue 16 (4): Create with a checkpoint records the container (PID 0, as runc-v2's
/// createdCheckpoint state) and its Start restores it; from then on it is an ordinary
/// running container whose exit is reaped and published as usual.
#[tokio::test]
async fn create_with_a_checkpoint_restores_at_start() {
    let h = harness();
    let mut p = params("r1");
    p.checkpoint = "/var/lib/ckpt/r1".into();
    p.parent_checkpoint = "/var/lib/ckpt/r0".into();
    assert_eq!(h.pod.create(p).await.unwrap(), 0);
    assert!(h.calls().is_empty(), "{:?}", h.calls());
    let st = h.pod.state("r1", "").await.unwrap();
    assert_eq!((st.status, st.pid), (Status::Created, 0));
    // Nothing to signal yet: never a kill(0, ...) of our own process group.
    assert_code(
        h.pod.kill("r1", "", 9, false).await,
        Code::FAILED_PRECONDITION,
    );
    assert!(h.rt.signalled.lock().unwrap().is_empty());

    let pid = h.pod.start("r1", "").await.unwrap();
    assert!(pid > 0);
    assert_eq!(h.calls(), vec!["restore r1 /var/lib/ckpt/r1".to_string()]);
    let st = h.pod.state("r1", "").await.unwrap();
    assert_eq!((st.status, st.pid), (Status::Running, pid));
    let ev = h.events_exactly(2).await;
    assert_eq!(decode::<TaskCreate>(&ev[0].1).pid, 0);
    assert_eq!(decode::<TaskStart>(&ev[1].1).pid, pid as u32);
    // A second Start is refused; the restored init's exit is reaped and published.
    assert_code(h.pod.start("r1", "").await, Code::FAILED_PRECONDITION);
    h.rt.exit("r1", 3);
    assert_eq!(h.wait_exit("r1").await.status, 3);
    h.pod.delete("r1", "").await.unwrap();
}

/// While CRIU restores (Start running, the pending restore taken, no PID yet), a Kill of
/// the init is refused: it must never become kill(0, ...) of the shim's process group.
#[tokio::test]
async fn kill_during_a_restore_signals_nothing() {
    let hold = Arc::new(tokio::sync::Notify::new());
    let h = harness_with(|rt| rt.hold_start = Some(hold.clone()));
    let mut p = params("r2");
    p.checkpoint = "/var/lib/ckpt/r2".into();
    h.pod.create(p).await.unwrap();
    let pod = h.pod.clone();
    let starting = tokio::spawn(async move { pod.start("r2", "").await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_code(
        h.pod.kill("r2", "", 9, false).await,
        Code::FAILED_PRECONDITION,
    );
    assert!(h.rt.signalled.lock().unwrap().is_empty());
    hold.notify_one();
    let pid = starting.await.unwrap().unwrap();
    h.pod.kill("r2", "", 9, false).await.unwrap();
    assert_eq!(*h.rt.signalled.lock().unwrap(), vec![pid]);
}

#[tokio::test]
async fn a_failed_restore_can_be_retried_or_deleted() {
    let h = harness();
    let mut p = params("r2");
    p.checkpoint = "/var/lib/ckpt/r2".into();
    h.pod.create(p).await.unwrap();
    *h.rt.create_error.lock().unwrap() = Some(Error::Runtime("criu restore failed".into()));
    let e = assert_code(h.pod.start("r2", "").await, Code::UNKNOWN);
    assert!(e.to_string().contains("criu restore failed"), "{e}");
    assert_eq!(h.pod.state("r2", "").await.unwrap().status, Status::Created);
    // Delete of a container with no init does not wait for one to be reaped.
    let began = Instant::now();
    h.pod.delete("r2", "").await.unwrap();
    assert!(began.elapsed() < DELETE_REAP_WAIT, "{:?}", began.elapsed());
    assert_code(h.pod.state("r2", "").await, Code::NOT_FOUND);

    // A retried Start after a failure restores.
    let mut p = params("r3");
    p.checkpoint = "/var/lib/ckpt/r3".into();
    h.pod.create(p).await.unwrap();
    *h.rt.create_error.lock().unwrap() = Some(Error::Runtime("once".into()));
    assert!(h.pod.start("r3", "").await.is_err());
    assert!(h.pod.start("r3", "").await.unwrap() > 0);
}

/// Where `criu check` fails, a Create with a checkpoint says so in CRIU's words and
/// leaves nothing: the ID is free.
#[tokio::test]
async fn restore_on_a_host_without_working_criu_is_a_failed_precondition() {
    let h = harness_with(|rt| rt.criu_problem = Some("Unexpected rt vDSO area bounds".into()));
    let mut p = params("r4");
    p.checkpoint = "/var/lib/ckpt/r4".into();
    let e = assert_code(h.pod.create(p).await, Code::FAILED_PRECONDITION);
    assert!(e.to_string().contains("vDSO"), "{e}");
    assert!(e.to_string().contains("/var/lib/ckpt/r4"), "{e}");
    assert_code(h.pod.state("r4", "").await, Code::NOT_FOUND);
    h.pod.create(params("r4")).await.unwrap();
}

#[tokio::test]
async fn checkpoint_needs_a_running_container() {
    let h = harness();
    h.pod.create(params("c1")).await.unwrap();
    let spec = crate::task::checkpoint::decode("/tmp/cp", None).unwrap();
    let e = assert_code(
        h.pod.checkpoint("c1", &spec).await,
        Code::FAILED_PRECONDITION,
    );
    assert!(e.to_string().contains("not running"), "{e}");
    assert_code(h.pod.checkpoint("nope", &spec).await, Code::NOT_FOUND);
    assert!(!h.calls().iter().any(|c| c.starts_with("checkpoint")));
}

/// containerd >= 1.7 deletes, on its restart, every task whose Pids is empty: an init that
/// exited while containerd was down stays listed until containerd has seen the exit; for
/// everyone after that, Pids is honest again.
#[tokio::test]
async fn pids_keep_an_exit_containerd_has_not_seen() {
    let h = harness();
    h.containerd_down.store(true, Ordering::SeqCst);
    let pid = h.pod.create(params("c1")).await.unwrap();
    h.pod.start("c1", "").await.unwrap();
    h.rt.exit("c1", 7);
    // The exit is recorded (through the reaper) but its TaskExit is not delivered.
    let deadline = Instant::now() + PATIENCE;
    while h.pod.containers.get("c1").unwrap().lock().exit.is_none() {
        assert!(Instant::now() < deadline, "the exit never reached the pod");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // What containerd's loader asks after its restart: Connect (init_pid), then Pids.
    assert_eq!(h.pod.init_pid("c1").await.unwrap(), pid as u32);
    assert_eq!(pids_of(&h, "c1").await, vec![pid as u32]);
    assert_eq!(
        pids_of(&h, "c1").await,
        vec![pid as u32],
        "Pids alone sees nothing"
    );
    // containerd is back and asks for the state: from then on the list is empty.
    h.containerd_down.store(false, Ordering::SeqCst);
    let st = h.pod.state("c1", "").await.unwrap();
    assert_eq!(st.status, Status::Stopped);
    assert_eq!(st.exit.map(|e| e.status), Some(7));
    assert!(h.pod.pids("c1").await.unwrap().is_empty());

    // A delivered TaskExit is seen too, without any State or Wait.
    let pid2 = h.pod.create(params("c2")).await.unwrap();
    h.pod.start("c2", "").await.unwrap();
    h.rt.exit("c2", 3);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let delivered = h.events.lock().unwrap().iter().any(|(t, e)| {
            t == topics::TASK_EXIT_EVENT_TOPIC && decode::<TaskExit>(e).pid == pid2 as u32
        });
        if delivered {
            break;
        }
        assert!(Instant::now() < deadline, "TaskExit of c2 never delivered");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(h.pod.pids("c2").await.unwrap().is_empty());
}

/// Shutdown closes an empty pod for good: a Create that comes after (a `start` that found
/// the dying daemon's socket) is refused, and nothing reaches the runtime.
#[tokio::test]
async fn a_closed_pod_refuses_create() {
    let h = harness();
    h.pod.create(params("c1")).await.unwrap();
    assert!(!h.pod.close_if_empty(), "a pod with a container stays open");
    h.pod.create(params("c2")).await.unwrap();
    h.rt.exit("c1", 0);
    h.rt.exit("c2", 0);
    h.wait_exit("c1").await;
    h.wait_exit("c2").await;
    h.pod.delete("c1", "").await.unwrap();
    h.pod.delete("c2", "").await.unwrap();
    assert!(h.pod.close_if_empty());
    let e = h.pod.create(params("c3")).await.unwrap_err();
    assert_eq!(e.code(), Code::FAILED_PRECONDITION, "{e}");
    assert!(e.to_string().contains("c3"), "{e}");
    assert!(h.pod.close_if_empty(), "closed stays closed");
    assert!(
        !h.calls().contains(&"create c3".to_string()),
        "{:?}",
        h.calls()
    );
}

#[test]
fn the_exec_request_decides_the_terminal() {
    let spec = br#"{"args":["sh"],"terminal":false}"#;
    let on: serde_json::Value =
        serde_json::from_slice(&super::with_terminal(spec, true, "e1").unwrap()).unwrap();
    assert_eq!(on["terminal"], true);
    assert_eq!(on["args"][0], "sh");
    // Already as asked: the bytes go through untouched.
    assert_eq!(
        super::with_terminal(spec, false, "e1").unwrap(),
        spec.to_vec()
    );
    let e = super::with_terminal(b"[]", true, "e1")
        .unwrap_err()
        .to_string();
    assert!(e.contains("e1"), "{e}");
}

// Kill on init exit (issue 13, behaviour 2): a container without a PID namespace of its
// own keeps its other processes when its init exits; they must go before the exit is known.
#[tokio::test]
async fn init_exit_without_own_pid_namespace_kills_what_it_left() {
    let h = harness_with(|rt| {
        rt.shared_pid_ns.lock().unwrap().insert("c1".into());
    });
    running(&h, "c1").await;
    running(&h, "c2").await;
    h.rt.leave_behind("c1", "sleep");
    h.rt.leave_behind("c2", "sleep");
    h.rt.exit("c1", 0);
    assert_eq!(h.wait_exit("c1").await.status, 0);
    assert!(
        !h.rt.is_live("c1/sleep"),
        "left running after its init's exit was known: {:?}",
        h.calls()
    );
    // A container with its own PID namespace: the kernel's job, nothing killed here.
    h.rt.exit("c2", 0);
    h.wait_exit("c2").await;
    assert!(h.rt.is_live("c2/sleep"));
}

#[tokio::test]
async fn kill_all_still_reaches_a_stopped_containers_cgroup() {
    let h = harness();
    running(&h, "c1").await;
    h.rt.leave_behind("c1", "sleep");
    h.rt.exit("c1", 0);
    h.wait_exit("c1").await;
    // The init is reaped: its PID is never signalled again...
    assert_code(h.pod.kill("c1", "", 9, false).await, Code::NOT_FOUND);
    // ...but what is left in its cgroup still is, as with runc-v2.
    h.pod.kill("c1", "", 9, true).await.unwrap();
    assert!(!h.rt.is_live("c1/sleep"), "{:?}", h.calls());
}

// ---- issue 13: lifecycle without races ----

/// Waits (bounded) for `fut`, failing the test with `what` if it is still pending.
async fn answers<T>(what: &str, fut: impl Future<Output = T>) -> T {
    timeout(Duration::from_millis(500), fut)
        .await
        .unwrap_or_else(|_| panic!("{what} did not answer (still pending)"))
}

/// Behaviour 1: CRI calls Wait before Start; a failing Start (missing binary, bad user)
/// or a Delete before Start must answer that Wait, or its handler leaks.
#[tokio::test]
async fn every_pending_exec_wait_answers_when_start_fails_or_delete_comes_first() {
    let h = harness_with(|rt| rt.fail_exec = Some("broken".into()));
    running(&h, "c1").await;
    h.pod.exec(exec_params("c1", "broken")).await.unwrap();
    let pod = h.pod.clone();
    let waiting = tokio::spawn(async move { pod.wait("c1", "broken").await });
    tokio::task::yield_now().await;
    let e = h.pod.start("c1", "broken").await.unwrap_err();
    assert!(e.to_string().contains("not found"), "{e}");
    let exit = answers("Wait on an exec whose Start failed", waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit.status, 255, "it never ran");
    let st = h.pod.state("c1", "broken").await.unwrap();
    assert_eq!((st.status, st.pid), (Status::Stopped, 0));
    assert_code(h.pod.start("c1", "broken").await, Code::FAILED_PRECONDITION);
    h.pod.delete("c1", "broken").await.unwrap();

    // Deleted before Start: the pending Wait answers; Delete reports no exit time.
    h.pod.exec(exec_params("c1", "never")).await.unwrap();
    let pod = h.pod.clone();
    let waiting = tokio::spawn(async move { pod.wait("c1", "never").await });
    tokio::task::yield_now().await;
    let (pid, exit) = h.pod.delete("c1", "never").await.unwrap();
    assert_eq!((pid, exit.status), (0, 0));
    assert_eq!(
        exit.at,
        std::time::SystemTime::UNIX_EPOCH,
        "a never-started exec has no exited_at"
    );
    answers("Wait on an exec deleted before Start", waiting)
        .await
        .unwrap()
        .unwrap();
}

/// Behaviour 3: the init's exit counts from the moment it is reaped, not after its exec
/// processes are drained (up to 5 s): State says stopped, Kill does not signal the reaped
/// PID, Exec is refused. TaskExit (and Wait) still come after the execs'.
#[tokio::test]
async fn a_reaped_init_is_exited_at_once_while_its_execs_drain() {
    let h = harness();
    let init = running(&h, "c1").await;
    h.pod.exec(exec_params("c1", "stuck")).await.unwrap();
    h.pod.start("c1", "stuck").await.unwrap();
    // The exec survives the drain's SIGKILL for now (stuck in the kernel, say).
    h.rt.immortal.lock().unwrap().insert("c1/stuck".into());
    h.rt.exit("c1", 3);
    let deadline = Instant::now() + Duration::from_millis(300);
    loop {
        let st = h.pod.state("c1", "").await.unwrap();
        if st.status == Status::Stopped {
            assert_eq!(st.exit.map(|e| e.status), Some(3));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "State still says {:?} after the init was reaped",
            st.status
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_code(h.pod.kill("c1", "", 15, false).await, Code::NOT_FOUND);
    assert!(
        !h.rt.signalled.lock().unwrap().contains(&init),
        "the reaped init's PID was signalled: {:?}",
        h.calls()
    );
    assert_code(
        h.pod.exec(exec_params("c1", "late")).await,
        Code::FAILED_PRECONDITION,
    );
    // Wait and TaskExit wait for the exec: not yet.
    assert!(
        timeout(Duration::from_millis(50), h.pod.wait("c1", ""))
            .await
            .is_err(),
        "Wait answered before the exec was gone"
    );
    h.rt.immortal.lock().unwrap().clear();
    h.rt.exit("c1/stuck", 137);
    assert_eq!(h.wait_exit("c1").await.status, 3);
    let ev = h.events_exactly(6).await;
    let exits: Vec<String> = ev
        .iter()
        .filter(|(t, _)| t == topics::TASK_EXIT_EVENT_TOPIC)
        .map(|(_, e)| decode::<TaskExit>(e).id)
        .collect();
    assert_eq!(exits, ["stuck", "c1"]);
}

/// A Start running in the runtime (a slow worker) holds no lock: State, Wait, Kill and
/// Delete of the same container, and every call on another one, keep answering.
#[tokio::test]
async fn calls_keep_answering_while_a_start_runs() {
    let hold = Arc::new(tokio::sync::Notify::new());
    let h = harness_with(|rt| rt.hold_start = Some(hold.clone()));
    h.pod.create(params("slow")).await.unwrap();
    h.pod.create(params("other")).await.unwrap();
    let pod = h.pod.clone();
    let starting = tokio::spawn(async move { pod.start("slow", "").await });
    tokio::time::sleep(Duration::from_millis(20)).await;

    let st = answers("State of a starting container", h.pod.state("slow", "")).await;
    assert_eq!(st.unwrap().status, Status::Created);
    answers("State of another container", h.pod.state("other", ""))
        .await
        .unwrap();
    let e = assert_code(
        answers("Delete of a starting container", h.pod.delete("slow", "")).await,
        Code::FAILED_PRECONDITION,
    );
    assert!(e.to_string().contains("starting"), "{e}");
    answers(
        "Kill of another container",
        h.pod.kill("other", "", 9, false),
    )
    .await
    .unwrap();
    answers("Wait of another container", h.pod.wait("other", ""))
        .await
        .unwrap();
    let pod = h.pod.clone();
    let waiting = tokio::spawn(async move { pod.wait("slow", "").await });
    // Killed while starting: the exit is recorded at once, and TaskExit waits for TaskStart.
    answers(
        "Kill of a starting container",
        h.pod.kill("slow", "", 9, false),
    )
    .await
    .unwrap();
    hold.notify_one();
    starting.await.unwrap().unwrap();
    assert_eq!(answers("Wait", waiting).await.unwrap().unwrap().status, 137);
    let ev = h.events.lock().unwrap().clone();
    let slow: Vec<&str> = ev
        .iter()
        .filter(|(t, e)| {
            (t == topics::TASK_START_EVENT_TOPIC && decode::<TaskStart>(e).container_id == "slow")
                || (t == topics::TASK_EXIT_EVENT_TOPIC
                    && decode::<TaskExit>(e).container_id == "slow")
        })
        .map(|(t, _)| t.as_str())
        .collect();
    assert_eq!(
        slow,
        [
            topics::TASK_START_EVENT_TOPIC,
            topics::TASK_EXIT_EVENT_TOPIC
        ]
    );
}

/// Behaviour 8: an exec of a paused container is paused too.
#[tokio::test]
async fn exec_state_follows_its_paused_container() {
    let h = harness();
    running(&h, "c1").await;
    h.pod.exec(exec_params("c1", "e1")).await.unwrap();
    h.pod.start("c1", "e1").await.unwrap();
    h.pod.pause("c1").await.unwrap();
    assert_eq!(
        h.pod.state("c1", "e1").await.unwrap().status,
        Status::Paused
    );
    h.pod.resume("c1").await.unwrap();
    assert_eq!(
        h.pod.state("c1", "e1").await.unwrap().status,
        Status::Running
    );
}

/// Behaviour 8: Pids says which process is which exec (runc-v2's ProcessDetails).
#[tokio::test]
async fn pids_carry_exec_ids() {
    let h = harness();
    let init = running(&h, "c1").await;
    h.pod.exec(exec_params("c1", "e1")).await.unwrap();
    let epid = h.pod.start("c1", "e1").await.unwrap();
    let pids = h.pod.pids("c1").await.unwrap();
    assert_eq!(
        pids,
        [
            ProcessEntry {
                pid: init as u32,
                exec_id: None
            },
            ProcessEntry {
                pid: epid as u32,
                exec_id: Some("e1".into())
            }
        ]
    );
}

/// Behaviour 8: a file missing during Create (a hook, a device) is the runtime's failure,
/// not "no such task" (containerd would forget the task).
#[tokio::test]
async fn a_missing_file_during_create_is_not_not_found() {
    let h = harness();
    *h.rt.create_error.lock().unwrap() = Some(Error::io(
        "run hook /usr/bin/missing",
        std::io::Error::from_raw_os_error(libc::ENOENT),
    ));
    let e = h.pod.create(params("c1")).await.unwrap_err();
    assert_ne!(e.code(), Code::NOT_FOUND, "{e}");
    assert!(e.to_string().contains("/usr/bin/missing"), "{e}");
    assert!(h.pod.is_empty());
}

/// Behaviour 9 (part): a started exec keeps no process spec (it may hold secrets).
#[tokio::test]
async fn a_started_exec_keeps_no_spec() {
    let h = harness();
    running(&h, "c1").await;
    h.pod.exec(exec_params("c1", "e1")).await.unwrap();
    let entry = h.pod.containers.get("c1").unwrap();
    assert!(entry.lock().execs["e1"].process.is_some());
    h.pod.start("c1", "e1").await.unwrap();
    assert!(entry.lock().execs["e1"].process.is_none());
}

/// The exit table: a routed PID is gone at once, and Delete leaves nothing behind.
#[tokio::test]
async fn routed_exits_leave_the_table_at_once() {
    let h = harness();
    running(&h, "c1").await;
    h.pod.exec(exec_params("c1", "e1")).await.unwrap();
    h.pod.start("c1", "e1").await.unwrap();
    assert_eq!(lock(&h.pod.exits).live(), 2);
    h.rt.exit("c1/e1", 0);
    h.pod.wait("c1", "e1").await.unwrap();
    assert_eq!(lock(&h.pod.exits).live(), 1, "the exec's PID is gone");
    h.pod.kill("c1", "", 9, false).await.unwrap();
    h.wait_exit("c1").await;
    assert_eq!(lock(&h.pod.exits).live(), 0);
    h.pod.delete("c1", "").await.unwrap();
    assert!(h.pod.is_empty());
}

/// Delete that comes while the exit is still being handled (execs draining) waits for it
/// instead of refusing: TaskExit goes out first, then TaskDelete.
#[tokio::test]
async fn delete_during_exit_handling_waits_and_keeps_the_order() {
    let h = harness();
    running(&h, "c1").await;
    h.pod.exec(exec_params("c1", "stuck")).await.unwrap();
    h.pod.start("c1", "stuck").await.unwrap();
    h.rt.immortal.lock().unwrap().insert("c1/stuck".into());
    h.rt.exit("c1", 0);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let pod = h.pod.clone();
    let deleting = tokio::spawn(async move { pod.delete("c1", "").await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    h.rt.immortal.lock().unwrap().clear();
    h.rt.exit("c1/stuck", 137);
    answers("Delete", deleting).await.unwrap().unwrap();
    let ev = h.events_exactly(7).await;
    let t = topics_of(&ev);
    assert_eq!(
        &t[t.len() - 2..],
        [
            topics::TASK_EXIT_EVENT_TOPIC,
            topics::TASK_DELETE_EVENT_TOPIC
        ]
    );
}

/// Behaviour 11: while Delete runs in the runtime (a forked worker, slow under load), State
/// answers "stopped" at once. On main it waited behind Delete's lock and then answered
/// NotFound, and CRI's StopContainer, getting NotFound from containerd's Task(), returned
/// without waiting for the exit to be recorded: RemoveContainer then found the container
/// "still running".
#[tokio::test]
async fn state_answers_stopped_while_delete_runs() {
    let hold = Arc::new(tokio::sync::Notify::new());
    let h = harness_with(|rt| rt.hold_delete = Some(hold.clone()));
    running(&h, "c1").await;
    h.pod.kill("c1", "", 9, false).await.unwrap();
    h.wait_exit("c1").await;
    let pod = h.pod.clone();
    let deleting = tokio::spawn(async move { pod.delete("c1", "").await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let st = answers("State while Delete runs", h.pod.state("c1", ""))
        .await
        .unwrap();
    assert_eq!(
        (st.status, st.exit.map(|e| e.status)),
        (Status::Stopped, Some(137))
    );
    assert_code(
        answers("Kill while Delete runs", h.pod.kill("c1", "", 9, true)).await,
        Code::NOT_FOUND,
    );
    hold.notify_one();
    answers("Delete", deleting).await.unwrap().unwrap();
    assert_code(h.pod.state("c1", "").await, Code::NOT_FOUND);
}
