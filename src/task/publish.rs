//! The Task events the pod publishes, built from its own types. Which event goes out when
//! (and in what order) is the pod's business; how each is filled in is here.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use containerd_shim_protos::events::task::{
    TaskCheckpointed, TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO,
    TaskOOM, TaskPaused, TaskResumed, TaskStart,
};
use containerd_shim_protos::topics;

use crate::runtime::mount::Mount;
use crate::shim::events::Publisher;
use crate::shim::service::{timestamp, to_proto_mount};
use crate::stdio::StdioPaths;
use crate::task::process::Exit;

pub fn create(
    events: &Publisher,
    id: &str,
    bundle: &std::path::Path,
    rootfs: &[Mount],
    stdio: &StdioPaths,
    pid: i32,
) {
    let mut ev = TaskCreate::new();
    ev.container_id = id.to_string();
    ev.bundle = bundle.to_string_lossy().into_owned();
    ev.rootfs = rootfs.iter().map(to_proto_mount).collect();
    let mut io = TaskIO::new();
    io.stdin = stdio.stdin.clone();
    io.stdout = stdio.stdout.clone();
    io.stderr = stdio.stderr.clone();
    io.terminal = stdio.terminal;
    ev.io = Some(io).into();
    ev.pid = pid as u32;
    events.publish(topics::TASK_CREATE_EVENT_TOPIC, &ev);
}

pub fn start(events: &Publisher, id: &str, pid: i32) {
    let mut ev = TaskStart::new();
    ev.container_id = id.to_string();
    ev.pid = pid as u32;
    events.publish(topics::TASK_START_EVENT_TOPIC, &ev);
}

pub fn exec_added(events: &Publisher, id: &str, exec_id: &str) {
    let mut ev = TaskExecAdded::new();
    ev.container_id = id.to_string();
    ev.exec_id = exec_id.to_string();
    events.publish(topics::TASK_EXEC_ADDED_EVENT_TOPIC, &ev);
}

pub fn exec_started(events: &Publisher, id: &str, exec_id: &str, pid: i32) {
    let mut ev = TaskExecStarted::new();
    ev.container_id = id.to_string();
    ev.exec_id = exec_id.to_string();
    ev.pid = pid as u32;
    events.publish(topics::TASK_EXEC_STARTED_EVENT_TOPIC, &ev);
}

/// TaskExit of the init (`process_id` = container ID) or of an exec (the exec ID).
/// `delivered`, for an init: raised once containerd accepted the event.
pub fn exit(
    events: &Publisher,
    id: &str,
    process_id: &str,
    pid: i32,
    exit: Exit,
    delivered: Option<Arc<AtomicBool>>,
) {
    let mut ev = TaskExit::new();
    ev.container_id = id.to_string();
    ev.id = process_id.to_string();
    ev.pid = pid as u32;
    ev.exit_status = exit.status;
    ev.exited_at = Some(timestamp(exit.at)).into();
    match delivered {
        Some(flag) => events.publish_tracked(topics::TASK_EXIT_EVENT_TOPIC, &ev, flag),
        None => events.publish(topics::TASK_EXIT_EVENT_TOPIC, &ev),
    }
}

pub fn delete(events: &Publisher, id: &str, pid: i32, exit: Exit) {
    let mut ev = TaskDelete::new();
    ev.container_id = id.to_string();
    ev.id = id.to_string();
    ev.pid = pid as u32;
    ev.exit_status = exit.status;
    ev.exited_at = Some(timestamp(exit.at)).into();
    events.publish(topics::TASK_DELETE_EVENT_TOPIC, &ev);
}

pub fn frozen(events: &Publisher, id: &str, paused: bool) {
    if paused {
        let mut ev = TaskPaused::new();
        ev.container_id = id.to_string();
        events.publish(topics::TASK_PAUSED_EVENT_TOPIC, &ev);
    } else {
        let mut ev = TaskResumed::new();
        ev.container_id = id.to_string();
        events.publish(topics::TASK_RESUMED_EVENT_TOPIC, &ev);
    }
}

pub fn checkpointed(events: &Publisher, id: &str, image_path: &std::path::Path) {
    let mut ev = TaskCheckpointed::new();
    ev.container_id = id.to_string();
    ev.checkpoint = image_path.to_string_lossy().into_owned();
    events.publish(topics::TASK_CHECKPOINTED_EVENT_TOPIC, &ev);
}

pub fn oom(events: &Publisher, id: &str) {
    let mut ev = TaskOOM::new();
    ev.container_id = id.to_string();
    events.publish(topics::TASK_OOM_EVENT_TOPIC, &ev);
}
