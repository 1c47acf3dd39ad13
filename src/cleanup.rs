//! `delete`: containerd runs this after a shim died (or could not be reached). Using only
//! what is on disk, remove the container: its processes, cgroup, libcontainer state and
//! rootfs mount; and the dead shim's socket. Then answer with a `DeleteResponse`
//! (exit status 137, as if SIGKILLed: whatever ran is gone).

use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use containerd_shim_protos::api::DeleteResponse;
use containerd_shim_protos::protobuf::Message;
use libcontainer::container::Container;

use crate::args::Args;
use crate::error::{Error, Result};
use crate::ids::{validate_id, validate_namespace};
use crate::pod::timestamp;
use crate::runtime::youki::{delete, state_root};

pub const KILLED_STATUS: u32 = 128 + libc::SIGKILL as u32;

pub fn run(args: &Args) -> Result<Vec<u8>> {
    validate_namespace(&args.namespace)?;
    validate_id(&args.id)?;
    let bundle = if args.bundle.is_empty() {
        std::env::current_dir().map_err(|e| Error::io("bundle (working directory)", e))?
    } else {
        PathBuf::from(&args.bundle)
    };
    let root = state_root(&args.namespace);
    let pid = Container::load(root.join(&args.id))
        .ok()
        .and_then(|c| c.pid())
        .map(|p| p.as_raw() as u32)
        .unwrap_or(0);
    // This process is single-threaded: libcontainer may fork here (poststop hooks).
    delete(&args.id, &root, &bundle)?;
    remove_dead_socket(&bundle);

    let mut resp = DeleteResponse::new();
    resp.pid = pid;
    resp.exit_status = KILLED_STATUS;
    resp.exited_at = Some(timestamp(std::time::SystemTime::now())).into();
    resp.write_to_bytes()
        .map_err(|e| Error::Internal(format!("encode DeleteResponse: {e}")))
}

/// The socket named in the bundle's `address` file, if nothing answers on it any more.
fn remove_dead_socket(bundle: &std::path::Path) {
    let Ok(addr) = std::fs::read_to_string(bundle.join("address")) else {
        return;
    };
    let Some(path) = addr.trim().strip_prefix("unix://") else {
        return;
    };
    if !path.starts_with(crate::bootstrap::SOCKET_DIR) {
        return;
    }
    if UnixStream::connect(path).is_err() {
        let _ = std::fs::remove_file(path);
    }
}
