//! The serving daemon that `start` spawned: subreaper, workers, log, ttrpc server, and
//! exit once containerd shuts down an empty pod.

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener as StdUnixListener;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::Notify;
use ttrpc::r#async::Server;
use ttrpc::r#async::transport::Listener;

use crate::error::{Error, Result};
use crate::runtime::forker::Forker;
use crate::runtime::youki::{
    DEFAULT_STATE_BASE, Deadlines, YoukiRuntime, ensure_state_root, state_root_in, worker,
    worker_failed,
};
use crate::sandbox::SandboxService;
use crate::shim::args::Args;
use crate::shim::events::{Publisher, TtrpcForwarder};
use crate::shim::logger;
use crate::shim::service::{TaskService, services};
use crate::shim::socket::ServedSocket;
use crate::task::pod::Pod;
use crate::task::reaper;

/// `start` hands the listening socket over as this fd.
pub const LISTENER_FD: i32 = 3;

pub fn run(args: Args) -> Result<()> {
    if args.socket.is_empty() {
        return Err(Error::InvalidArgument(
            "no action given: containerd runs this binary with `start` or `delete` (try -v)".into(),
        ));
    }
    // `start` made the bundle's log fifo our stderr and our working directory `/`: the
    // bundle is containerd's, which removes it after Delete and may make it again for the
    // same ID while this process is still exiting; nothing here may depend on it.
    logger::init(&args.id, args.debug);
    // SAFETY: fd 3 is the listener `start` passed us; nothing else owns it.
    let listener = unsafe { OwnedFd::from_raw_fd(LISTENER_FD) };
    nix::fcntl::fcntl(
        &listener,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(|e| Error::io("listener fd 3 (was the daemon started by `start`?)", e))?;
    reaper::become_subreaper()?;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("start async runtime", e))?;
    let socket = Arc::new(ServedSocket::new(PathBuf::from(&args.socket)));
    let result = rt.block_on(serve(args, listener, socket.clone()));
    // Normally gone already (Shutdown removed it); never a successor's.
    socket.remove();
    // The pod is empty and its last events are out: a blocking task still running (a
    // fifo open or copy whose peer is gone) must not keep an idle shim alive.
    rt.shutdown_timeout(EXIT_GRACE);
    result
}

/// How long an exiting shim waits for in-flight calls and blocking tasks.
const EXIT_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

async fn serve(args: Args, listener: OwnedFd, socket: Arc<ServedSocket>) -> Result<()> {
    let forker = Arc::new(Forker::new(worker, worker_failed));
    let ttrpc_address = std::env::var("TTRPC_ADDRESS").unwrap_or_default();
    let events = Publisher::spawn(args.namespace.clone(), TtrpcForwarder::new(&ttrpc_address));
    // The Root option `start` was given; a Create asking for another one is refused.
    let base = Some(PathBuf::from(&args.state_root)).filter(|r| r.is_absolute());
    let root = state_root_in(base.as_deref(), &args.namespace);
    ensure_state_root(&root)?;
    let runtime = Arc::new(YoukiRuntime::new(
        forker.clone(),
        root,
        Deadlines::from_env(),
    ));
    let pod = Arc::new(Pod::new(runtime, events.clone()));
    let shutdown = Arc::new(Notify::new());

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        if let Err(e) = reaper::run(tx).await {
            log::error!("reaper: {e}");
        }
    });
    let exits_pod = pod.clone();
    let workers = forker.clone();
    tokio::spawn(async move {
        while let Some((pid, status)) = rx.recv().await {
            if workers.reaped(pid) {
                continue;
            }
            let pod = exits_pod.clone();
            tokio::spawn(async move { pod.on_exit(pid, status).await });
        }
    });

    let std_listener = StdUnixListener::from(listener);
    std_listener
        .set_nonblocking(true)
        .map_err(|e| Error::io("listener nonblocking", e))?;
    let listener = tokio::net::UnixListener::from_std(std_listener)
        .map_err(|e| Error::io("register listener", e))?;
    // containerd 2.x's Sandbox API (sandboxer = "shim"): the same pod, the same exit.
    let pod_files = crate::sandbox::files::Published::default();
    let sandbox = Arc::new(SandboxService::new(
        pod.clone(),
        base.clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_BASE)),
        args.namespace.clone(),
        shutdown.clone(),
        socket.clone(),
        pod_files.clone(),
    ));
    let task = Arc::new(TaskService {
        pod,
        state_base: base,
        options: Default::default(),
        shutdown: shutdown.clone(),
        socket,
        pod_files,
    });
    let mut server = Server::new()
        .add_listener(Listener::from(listener))
        .register_service(services(task))
        .register_service(crate::sandbox::services(sandbox));
    server
        .start()
        .await
        .map_err(|e| Error::Runtime(format!("ttrpc server: {e}")))?;
    log::info!("serving on {}", args.socket);
    shutdown.notified().await;
    log::info!("pod is empty and containerd asked us to shut down");
    // The pod's last events (TaskExit, TaskDelete) go out before the process does; this
    // also gives the Shutdown reply time to leave before the connection goes.
    events.flush(std::time::Duration::from_secs(2)).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    // ttrpc's shutdown waits up to 10 s for every connection's handlers; a handler still
    // running now (a call from a containerd that was killed mid-call) answers nobody, and
    // waiting for it kept idle shims alive for those 10 s (seen in the chaos test).
    if tokio::time::timeout(EXIT_GRACE, server.shutdown())
        .await
        .is_err()
    {
        log::warn!("ttrpc connections still busy after {EXIT_GRACE:?}: exiting anyway");
    }
    Ok(())
}
