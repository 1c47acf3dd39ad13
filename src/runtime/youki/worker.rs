//! What runs in a forked worker, never in the daemon: libcontainer's create, start, exec,
//! delete and checkpoint, with our executor. Each call is one request and one reply.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::{Container, ContainerStatus};
use libcontainer::error::LibcontainerError;
use libcontainer::oci_spec::runtime::{
    Capability, LinuxCapabilities, LinuxResources, LinuxSeccomp, Process, Spec,
};
use libcontainer::syscall::syscall::{SyscallType, create_syscall};
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};

use crate::error::{Error, Result};
use crate::runtime::mount::{Mount, mount_all, rootfs_path, unmount_all};
use crate::runtime::propagation;

use super::protocol::{Kind, Request, Response};

/// Execs the container's process like libcontainer's default executor, after restoring
/// SIGPIPE: Rust ignores it in the shim, an ignored signal survives exec, and the user's
/// process must get the default (as under runc). The shim's own workers keep ignoring it,
/// so a hook that does not read its state on stdin cannot kill them.
///
/// For an exec process it also applies the container's seccomp profile, which libcontainer's
/// tenant builder leaves out (it rebuilds the spec's `linux` section without it) but runc
/// applies to every exec. Loading a filter without no_new_privs needs CAP_SYS_ADMIN, which
/// the process may not have once libcontainer has dropped to its capabilities; so the exec
/// is given CAP_SYS_ADMIN and CAP_SETPCAP on top of its own (see `exec`), and here, after
/// the filter is loaded, drops to exactly the capabilities containerd asked for: the same
/// order runc uses (seccomp, then capset).
#[derive(Clone, Default)]
struct ShimExecutor {
    seccomp: Option<LinuxSeccomp>,
    capabilities: Option<LinuxCapabilities>,
}

impl Executor for ShimExecutor {
    fn exec(&self, spec: &Spec) -> std::result::Result<(), ExecutorError> {
        if let Some(seccomp) = &self.seccomp {
            libcontainer::seccomp::initialize_seccomp(seccomp)
                .map_err(|e| ExecutorError::Other(format!("exec: load seccomp profile: {e}")))?;
        }
        if let Some(caps) = &self.capabilities {
            libcontainer::capabilities::drop_privileges(caps, &*create_syscall())
                .map_err(|e| ExecutorError::Other(format!("exec: drop capabilities: {e}")))?;
        }
        // The size the client asked for from the first byte: an exec runs before the
        // client's first ResizePty can arrive.
        if let Some(p) = spec.process()
            && p.terminal() == Some(true)
            && let Some(size) = p.console_size()
        {
            let ws = libc::winsize {
                ws_row: size.height().try_into().unwrap_or(u16::MAX),
                ws_col: size.width().try_into().unwrap_or(u16::MAX),
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            // SAFETY: TIOCSWINSZ reads a winsize; fd 0 is the pty slave here.
            unsafe { libc::ioctl(0, libc::TIOCSWINSZ, &ws) };
        }
        // SAFETY: resetting a disposition to its default in the about-to-exec process.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> std::result::Result<(), ExecutorValidationError> {
        let program = spec
            .process()
            .as_ref()
            .and_then(|p| p.args().as_ref())
            .and_then(|a| a.first());
        match program {
            // A path (absolute, or relative to the cwd) is run as it is: no PATH needed.
            // libcontainer's check wants PATH in the environment even then, where runc
            // (and execvp) only search PATH for a bare name.
            Some(p) if p.contains('/') => check_executable(Path::new(p)),
            _ => DefaultExecutor {}.validate(spec),
        }
    }
}

/// What libcontainer checks of a program found in PATH, for a program given by its path:
/// a regular file with an execute bit. Runs in the container, after its chdir.
fn check_executable(path: &Path) -> std::result::Result<(), ExecutorValidationError> {
    use std::os::unix::fs::PermissionsExt;
    let invalid = |why: String| Err(ExecutorValidationError::ArgValidationError(why));
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(()),
        Ok(_) => invalid(format!(
            "executable {} is not a regular file with an execute bit",
            path.display()
        )),
        Err(e) => invalid(format!("executable {}: {e}", path.display())),
    }
}

/// How long a reader waits out a state file that another process is rewriting, or a
/// dying init (see `transient` and `init_gone`).
pub(super) const TRANSIENT_RETRIES: u32 = 50;
pub(super) const TRANSIENT_PAUSE: std::time::Duration = std::time::Duration::from_millis(2);

/// Whether loading a container failed on something that a moment later is gone:
/// - a state.json caught mid-rewrite: libcontainer saves it in place (truncate, then
///   write), so a load that comes in between (the daemon's kill-on-init-exit or Stats
///   beside a Start worker, or two workers) reads an empty or cut file;
/// - the init reaped between libcontainer finding its /proc entry and reading its stat.
///
/// The next load reads the whole file, or finds no init (a stopped container).
pub(super) fn transient(e: &LibcontainerError) -> bool {
    use libcontainer::container::state::StateError;
    matches!(
        e,
        LibcontainerError::State(StateError::ParseStateFile { .. })
            | LibcontainerError::Procfs(procfs::ProcError::NotFound(_))
    )
}

/// Runs `op` again while it fails `transient`ly, up to `TRANSIENT_RETRIES` times.
fn retry<T>(
    mut op: impl FnMut() -> std::result::Result<T, LibcontainerError>,
) -> std::result::Result<T, LibcontainerError> {
    let mut tries = 0;
    loop {
        match op() {
            Err(e) if transient(&e) && tries < TRANSIENT_RETRIES => {
                tries += 1;
                std::thread::sleep(TRANSIENT_PAUSE);
            }
            other => return other,
        }
    }
}

/// `Container::load` in a worker, retrying a `transient` failure.
pub(super) fn load(what: &str, id: &str, root: &Path) -> Result<Container> {
    load_state(root.join(id)).map_err(|e| lc_error(what, id, e))
}

/// `Container::load` of the container in `dir`, retrying a `transient` failure: for
/// workers and the operator's commands (`delete`, `youki-shims`), which may sleep; the
/// daemon has its own that waits off its thread.
pub fn load_state(dir: PathBuf) -> std::result::Result<Container, LibcontainerError> {
    retry(|| Container::load(dir.clone()))
}

/// Whether `c`'s init is gone (a zombie or reaped), looking `tries` times: a
/// killed init closes its notify socket a moment before it turns into a zombie.
fn init_gone(c: &mut Container, tries: u32) -> bool {
    for i in 0..tries {
        if i > 0 {
            std::thread::sleep(TRANSIENT_PAUSE);
        }
        // A failing refresh is an init that went away while it looked.
        if c.refresh_status().is_err() || c.status() == ContainerStatus::Stopped {
            return true;
        }
    }
    false
}

/// Whether `c`'s init is gone or on its way out: a zombie, reaped, or past
/// giving up its namespaces (`/proc/<pid>/ns/*` no longer resolve once the kernel's exit
/// path has released them, and that is a point of no return). It is not waited for: the
/// init of a PID namespace stays in its exit until every process that joined the
/// namespace is reaped, and an exec's half-made process is this worker's child. A live
/// init answers at once, so a failing exec of a healthy container (a missing binary)
/// stays the failure it is.
fn init_exiting(c: &mut Container) -> bool {
    init_gone(c, 1)
        || c.pid()
            .is_some_and(|pid| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).is_err())
}

fn stopped_before_start(id: &str, e: LibcontainerError) -> Error {
    Error::FailedPrecondition(format!(
        "start {id}: its init exited before it could start ({e})"
    ))
}

pub(super) fn lc_error(what: &str, id: &str, e: LibcontainerError) -> Error {
    match e {
        LibcontainerError::Exist => {
            Error::AlreadyExists(format!("{what} {id}: container state already exists"))
        }
        LibcontainerError::NoDirectory => {
            Error::NotFound(format!("{what} {id}: no container state"))
        }
        LibcontainerError::IncorrectStatus(s) => {
            Error::FailedPrecondition(format!("{what} {id}: container is {s:?}"))
        }
        other => Error::Runtime(format!("{what} {id}: {other}")),
    }
}

/// Longest error message a worker sends back.
const MAX_MESSAGE: usize = 16 << 10;

/// Encodes a failure for the helper to send when a worker died without answering.
pub fn worker_failed(message: String) -> Vec<u8> {
    serde_json::to_vec(&Response::Failed(Kind::Runtime, message)).unwrap_or_default()
}

/// Runs one request inside a fork-helper worker.
pub fn worker(req: &[u8], fds: Vec<OwnedFd>) -> Vec<u8> {
    no_cached_procfs();
    let mut resp = match serde_json::from_slice::<Request>(req) {
        Ok(r) => handle(r, fds).unwrap_or_else(Response::from),
        Err(e) => Response::Failed(Kind::Runtime, format!("bad worker request: {e}")),
    };
    // The reply travels through a pipe the helper drains only after the worker exits:
    // keep it well under the pipe's 64 KiB so the worker can never block on it.
    if let Response::Failed(_, m) = &mut resp
        && m.len() > MAX_MESSAGE
    {
        let mut end = MAX_MESSAGE;
        while !m.is_char_boundary(end) {
            end -= 1;
        }
        m.truncate(end);
        m.push_str(" …(truncated)");
    }
    serde_json::to_vec(&resp).unwrap_or_else(|e| worker_failed(format!("encode response: {e}")))
}

/// pathrs (libcontainer's safe /proc access) caches, for the life of the process, one
/// handle on a procfs of the caller's PID namespace: made in this worker, the host's. Every
/// process libcontainer clones from here inherits it, so a created container's init would
/// hold an O_PATH fd to the host's /proc (every host PID, and through /proc/<pid>/root the
/// host's files) until it execs at Start: the kind of leak runc's CVE-2024-21626 was.
/// Closing the cached fd makes pathrs mark its cache bad (it checks the fd at every use,
/// for runtimes that close fds it did not open) and open a fresh handle for each use, which
/// the caller drops right after.
fn no_cached_procfs() {
    use pathrs::procfs::ProcfsHandle;
    use std::os::fd::AsFd;
    let (Ok(a), Ok(b)) = (ProcfsHandle::new(), ProcfsHandle::new()) else {
        return;
    };
    // Two live handles share an fd only when both are the cached one.
    let fd = a.as_fd().as_raw_fd();
    let cached = fd == b.as_fd().as_raw_fd();
    drop((a, b));
    if cached {
        // SAFETY: the cached handle's fd, which pathrs validates before any further use;
        // nothing can reuse the number before the call below (the worker has one thread).
        unsafe { libc::close(fd) };
        // Finds the cached fd bad and locks the cache out for good.
        drop(ProcfsHandle::new());
    }
}

fn handle(req: Request, fds: Vec<OwnedFd>) -> Result<Response> {
    match req {
        Request::Create {
            id,
            bundle,
            root,
            rootfs,
            systemd_cgroup,
            no_pivot_root,
            no_new_keyring,
            console_socket,
        } => {
            let stdio = WorkerIo::new(fds, console_socket)?;
            let how = How {
                systemd_cgroup,
                no_pivot_root,
                no_new_keyring,
            };
            create(&id, &bundle, &root, &rootfs, how, stdio).map(Response::Pid)
        }
        Request::Start { id, root } => {
            let mut c = load("start", &id, &root)?;
            match c.start() {
                Ok(()) => Ok(Response::Done),
                // The init was alive when start looked and gone when it knocked on the
                // notify socket (or while start read its /proc entry): a Kill or an OOM
                // got there first. That is a stopped container, as if the Kill had come
                // a moment sooner, not a runtime failure.
                Err(e @ LibcontainerError::NotifyListener(_))
                    if init_gone(&mut c, TRANSIENT_RETRIES) =>
                {
                    Err(stopped_before_start(&id, e))
                }
                Err(e) if transient(&e) && init_gone(&mut c, 1) => {
                    Err(stopped_before_start(&id, e))
                }
                Err(e) => Err(lc_error("start", &id, e)),
            }
        }
        Request::Exec {
            id,
            exec_id,
            root,
            bundle,
            process,
            console_socket,
        } => {
            let stdio = WorkerIo::new(fds, console_socket)?;
            exec(&id, &exec_id, &root, &bundle, &process, stdio).map(Response::Pid)
        }
        Request::Checkpoint { id, root, spec } => {
            super::restore::checkpoint(&id, &root, &spec)?;
            Ok(Response::Done)
        }
        Request::Restore {
            id,
            bundle,
            root,
            rootfs,
            systemd_cgroup,
            image,
        } => {
            let stdio: [OwnedFd; 3] = fds
                .try_into()
                .map_err(|_| Error::Internal(format!("restore {id}: expected three stdio fds")))?;
            let setup = super::restore::Setup {
                id: &id,
                bundle: &bundle,
                root: &root,
                rootfs: &rootfs,
                systemd_cgroup,
            };
            super::restore::restore(&setup, &image, stdio).map(Response::Pid)
        }
        Request::Delete { id, root, bundle } => {
            delete(&id, &root, Some(&bundle))?;
            Ok(Response::Done)
        }
        Request::Pause { id, root } => {
            let mut c = load("pause", &id, &root)?;
            c.pause().map_err(|e| lc_error("pause", &id, e))?;
            Ok(Response::Done)
        }
        Request::Resume { id, root } => {
            let mut c = load("resume", &id, &root)?;
            c.resume().map_err(|e| lc_error("resume", &id, e))?;
            Ok(Response::Done)
        }
        Request::Update {
            id,
            root,
            resources,
        } => {
            update(&id, &root, &resources)?;
            Ok(Response::Done)
        }
    }
}

/// Applies `resources` (an OCI LinuxResources as JSON) to container `id`'s cgroup.
fn update(id: &str, root: &Path, resources: &str) -> Result<()> {
    use libcgroups::common::{CgroupManager, ControllerOpt};
    let resources: LinuxResources = serde_json::from_str(resources).map_err(|e| {
        Error::InvalidArgument(format!(
            "update {id}: resources are not an OCI LinuxResources: {e}"
        ))
    })?;
    let c = load("update", id, root)?;
    let cfg = c.spec().map_err(|e| lc_error("update", id, e))?;
    libcgroups::common::create_cgroup_manager(libcgroups::common::CgroupConfig {
        cgroup_path: cfg.cgroup_path.clone(),
        systemd_cgroup: c.systemd(),
        container_name: id.to_string(),
    })
    .map_err(|e| Error::Runtime(format!("update {id}: cgroup: {e}")))?
    .apply(&ControllerOpt {
        resources: &resources,
        disable_oom_killer: false,
        oom_score_adj: None,
        freezer_state: None,
    })
    .map_err(|e| Error::Runtime(format!("update {id}: {e}")))
}

/// A worker's side of the process's stdio.
enum WorkerIo {
    Fds([OwnedFd; 3]),
    Console(PathBuf),
}

impl WorkerIo {
    fn new(fds: Vec<OwnedFd>, console_socket: Option<PathBuf>) -> Result<WorkerIo> {
        match console_socket {
            Some(p) if fds.is_empty() => Ok(WorkerIo::Console(p)),
            Some(_) => Err(Error::Internal("a terminal takes no stdio fds".into())),
            None => fds
                .try_into()
                .map(WorkerIo::Fds)
                .map_err(|_| Error::Internal("expected exactly three stdio fds".into())),
        }
    }

    fn apply(self, b: ContainerBuilder) -> ContainerBuilder {
        match self {
            WorkerIo::Fds([stdin, stdout, stderr]) => {
                b.with_stdin(stdin).with_stdout(stdout).with_stderr(stderr)
            }
            WorkerIo::Console(path) => b.with_console_socket(Some(path)),
        }
    }
}

/// runc's options that shape a container's creation.
struct How {
    systemd_cgroup: bool,
    no_pivot_root: bool,
    no_new_keyring: bool,
}

/// Gives this worker, and so the container it forks, a session keyring of its own, named
/// as runc names it: keys a container adds are then not in the shim's (root's) session
/// keyring, shared with every other container. libcontainer has no such step.
fn join_new_session_keyring(id: &str) -> Result<()> {
    let name = std::ffi::CString::new(format!("_ses.{id}"))
        .map_err(|_| Error::InvalidArgument(format!("create {id}: NUL in container ID")))?;
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    // SAFETY: keyctl(JOIN_SESSION_KEYRING, name) reads a NUL-terminated string we own.
    let r = unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, name.as_ptr()) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        // As runc: a kernel without keyrings has nothing to separate.
        if e.raw_os_error() != Some(libc::ENOSYS) {
            return Err(Error::io(format!("create {id}: new session keyring"), e));
        }
    }
    Ok(())
}

fn create(
    id: &str,
    bundle: &Path,
    root: &Path,
    rootfs: &[Mount],
    how: How,
    stdio: WorkerIo,
) -> Result<i32> {
    super::ensure_state_root(root)?;
    // Before anything is mounted: a container of this ID already has state here (left by
    // another shim, or one being created right now). Not ours: mounting over its bundle's
    // rootfs, or the cleanup below (which deletes by ID), would harm it.
    already_exists("create", id, root)?;
    // First, so a spec libcontainer would choke on fails before anything is mounted.
    let propagation = propagation::prepare(bundle).map_err(|e| match e {
        Error::InvalidArgument(m) => Error::InvalidArgument(format!("create {id}: {m}")),
        other => other,
    })?;
    // Several uid or gid ranges: libcontainer runs newuidmap/newgidmap, ours (idmap.rs).
    crate::runtime::idmap::use_helpers(root)?;
    if !how.no_new_keyring {
        join_new_session_keyring(id)?;
    }
    let target = rootfs_path(bundle);
    if !rootfs.is_empty() {
        mount_all(rootfs, &target)?;
    }
    let built = ContainerBuilder::new(id.to_string(), SyscallType::default())
        .with_root_path(root)
        .map(|b| stdio.apply(b.with_executor(ShimExecutor::default())))
        .and_then(|b| b.validate_id())
        .and_then(|b| {
            b.as_init(bundle)
                .with_systemd(how.systemd_cgroup)
                .with_no_pivot(how.no_pivot_root)
                .with_detach(true)
                .build()
        });
    let created = built.map_err(|e| lc_error("create", id, e)).and_then(|c| {
        let pid = c
            .pid()
            .map(|p| p.as_raw())
            .ok_or_else(|| Error::Runtime(format!("create {id}: libcontainer returned no pid")))?;
        propagation::apply(pid, &propagation)
            .map_err(|e| Error::Runtime(format!("create {id}: {e}")))?;
        Ok(pid)
    });
    if created.is_err() {
        // Leave nothing behind: a half-made container's state, cgroup and mounts.
        if let Err(cleanup) = delete(id, root, Some(bundle)) {
            log::warn!("cleanup after failed create of {id}: {cleanup}");
        }
    }
    created
}

/// Refuses `what` (create, restore) of a container whose state is already there.
pub(super) fn already_exists(what: &str, id: &str, root: &Path) -> Result<()> {
    let state = root.join(id);
    if std::fs::symlink_metadata(&state).is_ok() {
        return Err(Error::AlreadyExists(format!(
            "{what} {id}: container {id:?} already exists ({} is there)",
            state.display()
        )));
    }
    Ok(())
}

/// Capabilities an exec needs until its seccomp filter is loaded (see `ShimExecutor`).
const SECCOMP_LOADING_CAPS: [Capability; 2] = [Capability::SysAdmin, Capability::Setpcap];

fn with_seccomp_loading_caps(caps: &LinuxCapabilities) -> LinuxCapabilities {
    let add = |set: &Option<std::collections::HashSet<Capability>>| {
        let mut set = set.clone().unwrap_or_default();
        set.extend(SECCOMP_LOADING_CAPS);
        Some(set)
    };
    let mut out = caps.clone();
    out.set_bounding(add(caps.bounding()));
    out.set_effective(add(caps.effective()));
    out.set_permitted(add(caps.permitted()));
    out
}

/// Runs `process` (containerd's OCI Process JSON) inside the running container `id`.
fn exec(
    id: &str,
    exec_id: &str,
    root: &Path,
    bundle: &Path,
    process: &str,
    stdio: WorkerIo,
) -> Result<i32> {
    let mut proc: Process = serde_json::from_str(process).map_err(|e| {
        Error::InvalidArgument(format!("exec {exec_id} in {id}: bad process spec: {e}"))
    })?;
    let config = bundle.join("config.json");
    let spec = Spec::load(&config).map_err(|e| {
        Error::Runtime(format!("exec {exec_id} in {id}: {}: {e}", config.display()))
    })?;
    let mut executor = ShimExecutor::default();
    if let Some(seccomp) = spec.linux().as_ref().and_then(|l| l.seccomp().clone()) {
        if libcontainer::seccomp::is_notify(&seccomp) {
            return Err(Error::FailedPrecondition(format!(
                "exec {exec_id} in {id}: the container's seccomp profile uses a notify listener, which exec does not support"
            )));
        }
        if let Some(caps) = proc.capabilities().clone() {
            proc.set_capabilities(Some(with_seccomp_loading_caps(&caps)));
            executor.capabilities = Some(caps);
        }
        executor.seccomp = Some(seccomp);
    }
    // libcontainer's tenant builder reads the process from a path. The process carries the
    // environment (Kubernetes Secrets among it), so it never touches a filesystem: it is
    // handed over as an anonymous memfd of this worker, named by /proc/self/fd.
    let json = serde_json::to_vec(&proc)
        .map_err(|e| Error::Internal(format!("encode process of exec {exec_id}: {e}")))?;
    let process_fd = process_memfd(&json)
        .map_err(|e| Error::io(format!("exec {exec_id} in {id}: hand over the process"), e))?;
    let process_path = PathBuf::from(format!("/proc/self/fd/{}", process_fd.as_raw_fd()));
    let console = match &stdio {
        WorkerIo::Console(p) => Some(p.clone()),
        WorkerIo::Fds(_) => None,
    };
    let built = ContainerBuilder::new(id.to_string(), SyscallType::default())
        .with_root_path(root)
        .map(|b| stdio.apply(b.with_executor(executor)))
        .and_then(|b| {
            b.as_tenant()
                .with_process(Some(&process_path))
                .with_detach(true)
                .build()
        });
    drop(process_fd);
    remove_tenant_leftovers(&root.join(id), console.as_deref());
    built.map(|p| p.as_raw()).map_err(|e| {
        // The init was running when the pod let the exec through and died while the
        // tenant builder read its /proc entry or joined its namespaces: a stopped
        // container, not a runtime failure (a failing exec of a live one stays as it is).
        let what = format!("exec {exec_id} in");
        let gone = !matches!(e, LibcontainerError::IncorrectStatus(_))
            && load(&what, id, root).is_ok_and(|mut c| init_exiting(&mut c));
        if gone {
            Error::FailedPrecondition(format!(
                "exec {exec_id} in {id}: the container's init exited meanwhile ({e})"
            ))
        } else {
            lc_error(&what, id, e)
        }
    })
}

/// An anonymous, close-on-exec memory file holding `bytes`, sealed against change: no
/// name in any directory, so no mode to get wrong, no name to collide, nothing to remove.
/// Only this worker (and the processes libcontainer clones from it, until they exec and
/// close it) holds it.
fn process_memfd(bytes: &[u8]) -> std::io::Result<OwnedFd> {
    use nix::sys::memfd::{MFdFlags, memfd_create};
    let fd = memfd_create(
        "youki-exec-process",
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )?;
    let mut file = std::fs::File::from(fd);
    std::io::Write::write_all(&mut file, bytes)?;
    let fd = OwnedFd::from(file);
    nix::fcntl::fcntl(
        &fd,
        nix::fcntl::FcntlArg::F_ADD_SEALS(
            nix::fcntl::SealFlag::F_SEAL_SEAL
                | nix::fcntl::SealFlag::F_SEAL_SHRINK
                | nix::fcntl::SealFlag::F_SEAL_GROW
                | nix::fcntl::SealFlag::F_SEAL_WRITE,
        ),
    )?;
    Ok(fd)
}

/// libcontainer's tenant builder leaves two entries per exec in the container's state
/// directory and never removes them: `tenant-notify-<random>.sock`, the socket its exec
/// process waits on for the go, and, for a terminal, `tenant-tty-<random>.sock`, a symlink
/// to our console socket. Both are dead once the exec has run (or failed), so without this
/// the directory grows by one entry per exec, for the container's whole life (a probe
/// every second is 86400 a day). The names are random and other execs of the container may
/// be under way in other workers, so only what is certainly dead goes:
/// - a notify socket that no open socket is bound to any more (checked in /proc/net/unix,
///   which lists bound sockets of this network namespace: the worker binds them before it
///   joins the container's namespaces; an exec under way keeps its socket bound until it
///   has exec'd, and this exec's own socket was closed when its process exec'd);
/// - a terminal link to this exec's console socket, or to a console socket that is gone
///   (the daemon removes each once it has the pty master).
///
/// Best effort: what cannot be read or removed now is left for the next exec's sweep.
fn remove_tenant_leftovers(dir: &Path, console: Option<&Path>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut bound: Option<Option<std::collections::HashSet<String>>> = None;
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let path = e.path();
        let dead = if name.starts_with("tenant-notify-") {
            let bound = bound.get_or_insert_with(bound_unix_socket_names);
            bound.as_ref().is_some_and(|b| !b.contains(name))
        } else if name.starts_with("tenant-tty-") {
            match std::fs::read_link(&path) {
                Ok(target) => console == Some(target.as_path()) || !target.exists(),
                Err(_) => false,
            }
        } else {
            false
        };
        if dead && let Err(err) = std::fs::remove_file(&path) {
            log::debug!("remove {}: {err}", path.display());
        }
    }
}

/// The last path component of every bound unix socket in this network namespace. The
/// tenant notify sockets are bound by a relative name (libcontainer chdirs to the state
/// directory first), so that name is what /proc/net/unix shows. None if the table cannot
/// be read: then no socket is removed on a guess.
fn bound_unix_socket_names() -> Option<std::collections::HashSet<String>> {
    let table = std::fs::read_to_string("/proc/net/unix").ok()?;
    let names = table
        .lines()
        .skip(1)
        // Num RefCount Protocol Flags Type St Inode [Path]
        .filter_map(|l| l.split_whitespace().nth(7))
        .filter_map(|p| p.rsplit('/').next())
        .map(str::to_string)
        .collect();
    Some(names)
}

/// Removes container `id`'s processes, cgroup and state (running poststop hooks), and
/// unmounts the rootfs in `bundle` when one is given (an absolute path: the bundle is
/// containerd's, and a `delete` without one must not touch whatever directory it runs in).
/// Absent pieces are fine: delete may run after a partial create or a second time. Runs in
/// a worker, or in the `delete` command (never in the daemon).
pub fn delete(id: &str, root: &Path, bundle: Option<&Path>) -> Result<()> {
    let dir = root.join(id);
    let result = if dir.exists() {
        match load_state(dir.clone()) {
            // Delete looks at the init's /proc entry first, which the daemon may reap
            // under it: a retry then finds it stopped.
            Ok(mut c) => retry(|| c.delete(true)).map_err(|e| lc_error("delete", id, e)),
            Err(e) => {
                // No readable state (a create that failed early): remove what is there.
                log::warn!("delete {id}: {e}; removing {}", dir.display());
                std::fs::remove_dir_all(&dir)
                    .map_err(|e| Error::io(format!("remove {}", dir.display()), e))
            }
        }
    } else {
        Ok(())
    };
    let unmounted = match bundle.filter(|b| b.is_absolute()) {
        Some(b) => unmount_all(&rootfs_path(b)),
        None => Ok(()),
    };
    result.and(unmounted)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state.json caught between libcontainer's truncate and its write (what the daemon's
    /// kill-on-init-exit met beside a Start worker) is waited out, not reported; a state
    /// that stays unreadable is still an error, once the retries are spent.
    #[test]
    fn a_state_file_being_rewritten_is_read_once_whole() {
        use libcontainer::container::State;
        let root = std::env::temp_dir().join(format!("youki-torn-{}", std::process::id()));
        let dir = root.join("c1");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("state.json"), b"").unwrap();
        let e = Container::load(dir.clone()).unwrap_err();
        assert!(transient(&e), "{e:?}");

        let writer = {
            let dir = dir.clone();
            std::thread::spawn(move || {
                std::thread::sleep(TRANSIENT_PAUSE * 5);
                State::new("c1", ContainerStatus::Stopped, None, "/nonexistent".into())
                    .save(&dir)
                    .unwrap();
            })
        };
        let c = load("kill", "c1", &root).expect("the whole file, once written");
        writer.join().unwrap();
        assert_eq!(c.id(), "c1");

        std::fs::write(dir.join("state.json"), b"{\"id\":").unwrap();
        let e = load("kill", "c1", &root).unwrap_err();
        assert!(e.to_string().contains("kill c1"), "{e}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// Issue 13 (7): a Create whose ID already has state is refused before anything is
    /// mounted or cleaned up, and the existing state is left alone.
    #[test]
    fn create_of_an_existing_id_touches_nothing() {
        // The state root's parent is ours too: create() tightens both (never /tmp).
        let top = std::env::temp_dir().join(format!("worker-exists-{}", std::process::id()));
        let root = top.join("root");
        let state = root.join("c1");
        std::fs::create_dir_all(&state).unwrap();
        std::fs::write(state.join("state.json"), "{}").unwrap();
        let bundle = root.join("bundle");
        std::fs::create_dir_all(bundle.join("rootfs")).unwrap();
        std::fs::write(
            bundle.join("config.json"),
            r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"terminal":true,"user":{"uid":0,"gid":0},"args":["true"],"cwd":"/"},"linux":{"namespaces":[{"type":"mount"}]}}"#,
        )
        .unwrap();
        let e = create(
            "c1",
            &bundle,
            &root,
            &[],
            How {
                systemd_cgroup: false,
                no_pivot_root: false,
                // Not this test process's session keyring to replace.
                no_new_keyring: true,
            },
            WorkerIo::Console(root.join("console.sock")),
        )
        .unwrap_err();
        assert!(matches!(e, Error::AlreadyExists(_)), "{e}");
        assert!(
            state.join("state.json").exists(),
            "the existing state was removed"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn long_failures_are_cut_to_fit_the_reply_pipe() {
        let req = serde_json::to_vec(&Request::Start {
            id: "é".repeat(40 << 10),
            root: "/nonexistent".into(),
        })
        .unwrap();
        let reply = worker(&req, Vec::new());
        assert!(reply.len() < 32 << 10, "{} bytes", reply.len());
        match serde_json::from_slice::<Response>(&reply).unwrap() {
            Response::Failed(_, m) => assert!(m.ends_with("(truncated)"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn no_procfs_handle_outlives_its_use() {
        use pathrs::procfs::ProcfsHandle;
        use std::os::fd::AsFd;
        // Open fds that are the root of a procfs mount (what the cache holds).
        let procfs_roots = || {
            let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
                .unwrap()
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect();
            fds.into_iter()
                .filter(|&fd| {
                    // SAFETY: fstat and fstatfs write the structs we pass; a closed fd fails.
                    unsafe {
                        let mut st: libc::stat = std::mem::zeroed();
                        let mut fs: libc::statfs = std::mem::zeroed();
                        libc::fstat(fd, &mut st) == 0
                            && libc::fstatfs(fd, &mut fs) == 0
                            && st.st_ino == 1
                            && fs.f_type == libc::PROC_SUPER_MAGIC
                    }
                })
                .count()
        };
        // In a forked copy of the test process: pathrs's cache is per process.
        // SAFETY: the child only opens and closes fds, then _exits.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                // The cache filled, as libcontainer's first use in a worker fills it.
                let _ = ProcfsHandle::new().map(drop);
                no_cached_procfs();
                let (a, b) = (ProcfsHandle::new().unwrap(), ProcfsHandle::new().unwrap());
                let distinct = a.as_fd().as_raw_fd() != b.as_fd().as_raw_fd();
                drop((a, b));
                let left = procfs_roots();
                let code = if distinct && left == 0 { 0 } else { 1 };
                // SAFETY: leave the forked test process without running the harness.
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(
                    status,
                    nix::sys::wait::WaitStatus::Exited(child, 0),
                    "a procfs handle stays open (1)"
                );
            }
        }
    }

    #[test]
    fn garbage_request_is_a_clear_failure() {
        let reply = worker(b"not json", Vec::new());
        match serde_json::from_slice::<Response>(&reply).unwrap() {
            Response::Failed(Kind::Runtime, m) => {
                assert!(m.contains("bad worker request"), "{m}")
            }
            other => panic!("{other:?}"),
        }
    }
}
