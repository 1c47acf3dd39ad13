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

use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use containerd_shim_protos::api::{
    DeleteRequest, DeleteResponse, KillRequest, ShutdownRequest, WaitRequest,
};
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim_async::{Client, TaskClient};
use libcontainer::container::Container;

use crate::args::Args;
use crate::error::{Error, Result};
use crate::ids::{validate_id, validate_namespace};
use crate::pod::timestamp;
use crate::runtime::youki::{delete, state_root};

pub const KILLED_STATUS: u32 = 128 + libc::SIGKILL as u32;

pub fn run(args: &Args) -> Result<Vec<u8>> {
    let bundle = if args.bundle.is_empty() {
        std::env::current_dir().map_err(|e| Error::io("bundle (working directory)", e))?
    } else {
        PathBuf::from(&args.bundle)
    };
    let socket = bundle_socket(&bundle);
    let pid = remove_container(&args.namespace, &args.id, &bundle, socket.as_deref())?;
    if let Some(s) = &socket {
        remove_dead_socket(s);
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
/// finds nothing left to do when the shim did it all).
pub fn remove_container(
    namespace: &str,
    id: &str,
    bundle: &Path,
    shim_socket: Option<&Path>,
) -> Result<u32> {
    validate_namespace(namespace)?;
    validate_id(id)?;
    let root = state_root(namespace);
    let pid = Container::load(root.join(id))
        .ok()
        .and_then(|c| c.pid())
        .map(|p| p.as_raw() as u32)
        .unwrap_or(0);
    if let Some(socket) = shim_socket.filter(|s| UnixStream::connect(s).is_ok())
        && let Err(e) = delete_through_shim(socket, id)
    {
        log::warn!("delete {id} through {}: {e}", socket.display());
    }
    // This process is single-threaded again (the runtime above had no worker threads):
    // libcontainer may fork here (poststop hooks).
    delete(id, &root, bundle)?;
    Ok(pid)
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
/// to a unix socket. Not only under SOCKET_DIR: containerd 2.x may name another socket
/// dir in BootstrapParams, and the shim serving there must be reached all the same.
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
    (plain && is_socket(path)).then(|| path.to_path_buf())
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
        assert_eq!(socket_of_address(&addr(&file)), None, "not a socket");
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
