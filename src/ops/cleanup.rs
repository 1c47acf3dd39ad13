//! `delete`: containerd runs this after a shim died, or when it could not load a task from
//! a shim after its own restart. Remove the container: its processes, cgroup, libcontainer
//! state and rootfs mount; and the dead shim's socket. Then answer with a `DeleteResponse`
//! (exit status 137, as if SIGKILLed: whatever ran is gone).
//!
//! The shim may still be alive: containerd killed between `start` and Create, or before
//! Delete's reply reached it, finds no task there after its restart and runs `delete`.
//! That shim is asked to remove the container and to exit if its pod is empty; a shim
//! left serving nothing would be an "unknown" one. The rest works from disk only, so it
//! also cleans up after a shim that is gone.
//!
//! When the shim is dead, the whole pod goes: containerd 2.x runs `delete` once per dead
//! shim (for the task it started that shim for, the sandbox), not once per task as 1.6
//! does, so the pod's other containers would otherwise be left running with nobody to
//! serve them. Every container of the group that no live shim serves is removed too,
//! each under a lock on its state directory, since 1.6 runs one `delete` per task at once.
//!
//! The bundle is containerd's: it is used only when given as an absolute path, and
//! nothing in it but the container's own rootfs mount is touched.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use containerd_shim_protos::api::{
    DeleteRequest, DeleteResponse, KillRequest, ShutdownRequest, WaitRequest,
};
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim_async::{Client, TaskClient};

use crate::error::{Error, Result};
use crate::ids::{validate_id, validate_namespace};
use crate::ops::inventory::parse_shim_cmdline;
use crate::ops::roots;
use crate::runtime::youki::{delete, load_state};
use crate::shim::args::Args;
use crate::shim::bootstrap::{group_id, group_of};
use crate::shim::service::timestamp;

pub const KILLED_STATUS: u32 = 128 + libc::SIGKILL as u32;

pub fn run(args: &Args) -> Result<Vec<u8>> {
    validate_namespace(&args.namespace)?;
    validate_id(&args.id)?;
    // containerd always names the bundle, absolutely. Without one there is nothing of
    // the bundle to clean (its rootfs is found through the container's state); a relative
    // one would mean some directory we were merely run in.
    let bundle = match args.bundle.as_str() {
        "" => None,
        b if Path::new(b).is_absolute() => Some(PathBuf::from(b)),
        b => {
            return Err(Error::InvalidArgument(format!(
                "delete {}: -bundle {b:?} is not an absolute path",
                args.id
            )));
        }
    };
    let socket = bundle.as_deref().and_then(bundle_socket);
    // Where `start` recorded it (the Root option), else wherever the container is found.
    let root = bundle
        .as_deref()
        .and_then(|b| roots::of_bundle(b, &args.namespace))
        .unwrap_or_else(|| roots::find(&args.namespace, &args.id));
    // Before the container goes: its state says which pod it was in.
    let group = group_of_container(&root, &args.id, bundle.as_deref());
    let pid = remove_container_in(
        &root,
        &args.namespace,
        &args.id,
        bundle.as_deref().unwrap_or(Path::new("")),
        socket.as_deref(),
    )?;
    if let Some(s) = socket.as_deref().filter(|s| !answers(s)) {
        remove_unserved_siblings(&root, &group, &args.id);
        remove_dead_socket(s);
        // A shim-sandboxer pod's pause bundle (sandbox/spec.rs), which only its dead shim
        // would have removed.
        if let Some(base) = root.parent() {
            let bundle = crate::sandbox::spec::bundle_dir(base, &args.namespace, &args.id);
            // Its pod's /dev/shm too (sandbox/files.rs), unmounted first.
            if let Err(e) = crate::sandbox::files::remove(&bundle) {
                log::warn!("delete {}: remove {}: {e}", args.id, bundle.display());
            }
        }
    }

    let mut resp = DeleteResponse::new();
    resp.pid = pid;
    resp.exit_status = KILLED_STATUS;
    resp.exited_at = Some(timestamp(std::time::SystemTime::now())).into();
    resp.write_to_bytes()
        .map_err(|e| Error::Internal(format!("encode DeleteResponse: {e}")))
}

/// Removes container `id` of `namespace` the way `delete` does, and returns the PID its
/// init had (0 if none is recorded). `shim_socket` is the socket of the shim that ran it,
/// if known: a live shim is asked first; the from-disk removal follows either way (it
/// finds nothing left to do when the shim did it all). `bundle` is used only if absolute;
/// otherwise the rootfs of the bundle libcontainer recorded is unmounted.
pub fn remove_container(
    namespace: &str,
    id: &str,
    bundle: &Path,
    shim_socket: Option<&Path>,
) -> Result<u32> {
    validate_namespace(namespace)?;
    validate_id(id)?;
    remove_container_in(
        &roots::find(namespace, id),
        namespace,
        id,
        bundle,
        shim_socket,
    )
}

/// `remove_container` with the namespace's state root known.
fn remove_container_in(
    root: &Path,
    namespace: &str,
    id: &str,
    bundle: &Path,
    shim_socket: Option<&Path>,
) -> Result<u32> {
    validate_namespace(namespace)?;
    validate_id(id)?;
    let state = load_state(root.join(id)).ok();
    let pid = state
        .as_ref()
        .and_then(|c| c.pid())
        .map(|p| p.as_raw() as u32)
        .unwrap_or(0);
    if let Some(socket) = shim_socket.filter(|s| answers(s))
        && let Err(e) = delete_through_shim(socket, id)
    {
        log::warn!("delete {id} through {}: {e}", socket.display());
    }
    let bundle = Some(bundle)
        .filter(|b| b.is_absolute())
        .map(Path::to_path_buf)
        .or_else(|| state.map(|c| c.bundle().clone()));
    remove_from_disk(root, id, bundle.as_deref())?;
    Ok(pid)
}

/// libcontainer's delete under the lock on the container's state directory. This process
/// is single-threaded here (any runtime used before had no worker threads): libcontainer
/// may fork (poststop hooks).
fn remove_from_disk(root: &Path, id: &str, bundle: Option<&Path>) -> Result<()> {
    let _lock = lock_state(&root.join(id))?;
    delete(id, root, bundle)
}

/// An exclusive `flock` on a container's state directory, held while it is removed: two
/// `delete`s of one pod (1.6 runs one per task, each sweeping the pod) must not remove the
/// same container at once. `None`: no state directory (any more).
struct StateLock(#[allow(dead_code)] File);

fn lock_state(dir: &Path) -> Result<Option<StateLock>> {
    let f = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("open {}", dir.display()), e)),
    };
    loop {
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0 {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(Error::io(format!("lock {}", dir.display()), e));
        }
    }
    // Removed (or replaced) while we waited: whoever held the lock did the work.
    let ours = f.metadata().map(|m| (m.dev(), m.ino())).ok();
    let now = std::fs::symlink_metadata(dir)
        .map(|m| (m.dev(), m.ino()))
        .ok();
    Ok((ours.is_some() && ours == now).then_some(StateLock(f)))
}

/// The group (pod) container `id` belongs to: from its libcontainer state, else from the
/// bundle's config.json, else the container alone.
fn group_of_container(root: &Path, id: &str, bundle: Option<&Path>) -> String {
    if let Ok(c) = load_state(root.join(id)) {
        return group_of(&c.state.annotations.clone().unwrap_or_default(), id);
    }
    bundle
        .and_then(|b| std::fs::read(b.join("config.json")).ok())
        .and_then(|cfg| group_id(&cfg, id).ok())
        .unwrap_or_else(|| id.to_string())
}

/// After a dead shim: removes every other container of `group` that no live shim serves.
/// Failures are logged, not returned: containerd asked about `id`, which is gone.
fn remove_unserved_siblings(root: &Path, group: &str, id: &str) {
    for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let sibling = e.file_name().to_string_lossy().into_owned();
        if sibling == id || validate_id(&sibling).is_err() || !e.path().is_dir() {
            continue;
        }
        let Ok(c) = load_state(e.path()) else {
            continue;
        };
        let ann = c.state.annotations.clone().unwrap_or_default();
        if group_of(&ann, &sibling) != group || served_by_live_shim(&c) {
            continue;
        }
        log::warn!("delete {id}: its shim is dead; removing {sibling} of pod {group} too");
        let bundle = Some(c.bundle().clone()).filter(|b| b.is_absolute());
        if let Err(e) = remove_from_disk(root, &sibling, bundle.as_deref()) {
            log::warn!("delete {id}: remove {sibling} of pod {group}: {e}");
        }
    }
}

/// Whether a live shim serves container `c`: the socket in its bundle's `address` file
/// answers (containerd 1.x and 2.0–2.2 ran `start` for it), or its init is the child of a
/// serving shim daemon (a shim is the subreaper of its containers; containerd 2.3 runs no
/// `start` for a sandbox's siblings). Only a socket that answers counts.
fn served_by_live_shim(c: &libcontainer::container::Container) -> bool {
    if let Some(s) = bundle_socket(c.bundle())
        && answers(&s)
    {
        return true;
    }
    let parent = c.pid().and_then(|p| {
        let status = std::fs::read_to_string(format!("/proc/{}/status", p.as_raw())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .and_then(|v| v.trim().parse::<i32>().ok())
    });
    parent.is_some_and(|ppid| {
        std::fs::read(format!("/proc/{ppid}/cmdline"))
            .ok()
            .and_then(|raw| parse_shim_cmdline(ppid, &raw))
            .is_some_and(|shim| answers(&shim.socket))
    })
}

/// Something accepts connections on `socket`.
fn answers(socket: &Path) -> bool {
    UnixStream::connect(socket).is_ok()
}

/// How long each call to a live shim may take: one that hangs is left to the from-disk path.
const SHIM_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// SIGKILL everything in the container, wait for it, Delete it, then Shutdown (which the
/// shim honours only once its pod is empty). "Not found" at any step means already done.
fn delete_through_shim(socket: &Path, id: &str) -> Result<()> {
    with_shim(socket, |task| async move {
        let ctx = || ttrpc::context::with_timeout(SHIM_CALL_TIMEOUT.as_nanos() as i64);
        let mut kill = KillRequest::new();
        kill.id = id.to_string();
        kill.signal = libc::SIGKILL as u32;
        kill.all = true;
        let _ = task.kill(ctx(), &kill).await;
        let mut wait = WaitRequest::new();
        wait.id = id.to_string();
        let _ = task.wait(ctx(), &wait).await;
        let mut del = DeleteRequest::new();
        del.id = id.to_string();
        if let Err(e) = task.delete(ctx(), &del).await
            && !is_not_found(&e)
        {
            return Err(Error::Runtime(format!("delete {id}: {e}")));
        }
        task.shutdown(ctx(), &ShutdownRequest::new())
            .await
            .map_err(|e| Error::Runtime(format!("shutdown: {e}")))?;
        Ok(())
    })
}

/// Asks the shim at `socket` to exit; it does only if it serves no container.
pub fn shutdown_shim(socket: &Path) -> Result<()> {
    with_shim(socket, |task| async move {
        let ctx = ttrpc::context::with_timeout(SHIM_CALL_TIMEOUT.as_nanos() as i64);
        task.shutdown(ctx, &ShutdownRequest::new())
            .await
            .map_err(|e| Error::Runtime(format!("shutdown: {e}")))?;
        Ok(())
    })
}

/// Runs `f` with a Task client on the shim at `socket`, on a current-thread runtime that
/// is gone when this returns: callers fork afterwards (libcontainer's hooks), which needs
/// a single-threaded process.
fn with_shim<F, Fut>(socket: &Path, f: F) -> Result<()>
where
    F: FnOnce(TaskClient) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("start async runtime", e))?;
    rt.block_on(async {
        let address = format!("unix://{}", socket.display());
        let client = Client::connect(&address)
            .await
            .map_err(|e| Error::Runtime(format!("connect {address}: {e}")))?;
        f(TaskClient::new(client)).await
    })
}

fn is_not_found(e: &ttrpc::Error) -> bool {
    matches!(e, ttrpc::Error::RpcStatus(s) if s.code() == ttrpc::Code::NOT_FOUND)
}

/// The shim socket named in the bundle's `address` file: an absolute path without `..`
/// (its file may be gone with its shim). Not only under SOCKET_DIR: containerd 2.x may
/// name another socket dir in BootstrapParams, and the shim serving there must be reached
/// all the same. Only a socket is ever connected to or removed (`answers`,
/// `remove_dead_socket`).
fn bundle_socket(bundle: &Path) -> Option<PathBuf> {
    let addr = std::fs::read_to_string(bundle.join("address")).ok()?;
    socket_of_address(addr.trim())
}

fn socket_of_address(addr: &str) -> Option<PathBuf> {
    let path = Path::new(addr.strip_prefix("unix://")?);
    let plain = path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    plain.then(|| path.to_path_buf())
}

fn is_socket(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// Removes `socket` if it is a socket nothing answers on any more (never any other file).
pub fn remove_dead_socket(socket: &Path) {
    if is_socket(socket) && UnixStream::connect(socket).is_err() {
        let _ = std::fs::remove_file(socket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn only_plain_absolute_socket_paths_are_taken_from_an_address_file() {
        let dir = std::env::temp_dir().join(format!("cleanup-sock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("s");
        let _listener = UnixListener::bind(&sock).unwrap();
        let file = dir.join("f");
        std::fs::write(&file, "x").unwrap();
        let addr = |p: &Path| format!("unix://{}", p.display());

        assert_eq!(socket_of_address(&addr(&sock)), Some(sock.clone()));
        // A plain file is named, but nothing connects to it and it is never removed.
        assert_eq!(socket_of_address(&addr(&file)), Some(file.clone()));
        assert!(!answers(&file));
        let dotted = dir.join("..").join(dir.file_name().unwrap()).join("s");
        assert_eq!(socket_of_address(&addr(&dotted)), None, "`..` in the path");
        assert_eq!(socket_of_address("unix://s"), None, "relative");
        assert_eq!(
            socket_of_address(&sock.display().to_string()),
            None,
            "no unix://"
        );

        // A dead socket goes; a plain file under that name never does.
        drop(_listener);
        remove_dead_socket(&file);
        assert!(file.exists());
        remove_dead_socket(&sock);
        assert!(!sock.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
