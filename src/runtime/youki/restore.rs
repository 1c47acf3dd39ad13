//! Checkpoint and restore through CRIU's RPC (`criu swrk`, with rust-criu's protobuf
//! messages). Runs in a forked worker, never in the daemon: CRIU is our child, and a
//! restored init is too (CRIU restores it as a sibling of itself), so when the worker exits
//! the init is re-parented to the daemon, the subreaper, which reaps it like a created one.
//!
//! libcontainer 0.7 has a dump but no restore, and its dump cannot be restored by anyone
//! for the shim's containers: our inits get the client's fifos (or files, or /dev/null)
//! as stdio directly, and those live on host mounts the container cannot see, so CRIU
//! refuses to dump them ("Can't lookup mount"). Both halves are here, and agree on one
//! rule for stdio: each of the init's fds 0-2 that lives outside the container's mounts is
//! dumped as an external file (`file[<mnt_id>:<inode>]`), recorded in `STDIO_KEYS`, and
//! on restore handed back as the new task's fd of the same number (CRIU's inherit_fd).
//! Pipes (a `binary://` logger's) are inherited by their `pipe:[inode]` name, which is also
//! what runc and libcontainer record in `descriptors.json`.
//!
//! The rest follows the same rules as Create: bind mounts and v1 cgroup mounts are
//! external mounts mapped to their sources, network and PID namespaces the spec joins by
//! path are external namespaces handed over by fd, other joined namespaces are joined, the
//! restored tasks go to the cgroup the spec asks for (CRIU runs in it, and its cgroup is
//! the new root of the dumped tree), the rootfs is the one containerd mounted at
//! `<bundle>/rootfs`. Afterwards libcontainer's state is written as Create writes it, so
//! every later call (State, Kill, Exec, Pause, Stats, Delete, Checkpoint) finds it.

use std::collections::HashSet;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use libcgroups::common::{CgroupManager, ControllerOpt};
use libcontainer::config::YoukiConfig;
use libcontainer::container::{Container, ContainerStatus};
use libcontainer::oci_spec::runtime::{LinuxNamespaceType, Mount as OciMount, Spec};
use protobuf::{Message, MessageField};
use rust_criu::rust_criu_protobuf::rpc;

use crate::error::{Error, Result};
use crate::runtime::mount::{Mount, mount_all, rootfs_path};
use crate::task::checkpoint::{CheckpointSpec, RestoreImage};

use super::worker::{delete, lc_error};

/// Where the dump records which external key each of the init's fds 0-2 has (JSON list
/// of three strings or nulls), next to libcontainer's and runc's `descriptors.json`.
const STDIO_KEYS: &str = "youki-shim-stdio.json";
/// The link targets of the init's fds 0-2 (the format runc and libcontainer write).
const DESCRIPTORS: &str = "descriptors.json";
const DUMP_LOG: &str = "dump.log";
const RESTORE_LOG: &str = "restore.log";
/// CRIU's most verbose log level but one: what runc uses.
const LOG_LEVEL: i32 = 4;
/// A restore needs the `inherit_fd`, `external` and `join_ns` RPC options: CRIU 3.15.
const CRIU_MINIMUM: u32 = 31500;

// ---------------------------------------------------------------------------------------
// The RPC: one request on a SOCK_SEQPACKET pair with `criu swrk 3`.
// ---------------------------------------------------------------------------------------

/// What CRIU answered, and the PID its post-restore notification named.
struct Answer {
    restored_pid: Option<i32>,
}

/// Runs `criu swrk` with `stdio` as its fds 0-2 (the restored tasks inherit them by
/// number), `extra` as its fds 4, 5, …, sends `req` and answers its notifications until
/// the final reply. `log` is CRIU's log file, quoted when it fails.
fn swrk(
    mut req: rpc::Criu_req,
    stdio: Option<[OwnedFd; 3]>,
    extra: &[OwnedFd],
    log: &Path,
) -> Result<Answer> {
    let (ours, theirs) = nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::SeqPacket,
        None,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| Error::io("criu: socketpair", std::io::Error::from(e)))?;
    // Every fd CRIU gets is first moved above the range it is given at (3, 4, …), so that
    // no dup2 below overwrites one still to be moved; the copies close at exec.
    let high = |fd: &OwnedFd| -> Result<OwnedFd> {
        nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(64))
            .map(|raw| unsafe { OwnedFd::from_raw_fd(raw) })
            .map_err(|e| Error::io("criu: dup fd", std::io::Error::from(e)))
    };
    let mut moved = vec![high(&theirs)?];
    for fd in extra {
        moved.push(high(fd)?);
    }
    drop(theirs);
    let sources: Vec<RawFd> = moved.iter().map(|f| f.as_raw_fd()).collect();
    let mut cmd = Command::new("criu");
    cmd.arg("swrk").arg("3");
    match stdio {
        Some([i, o, e]) => {
            cmd.stdin(Stdio::from(i))
                .stdout(Stdio::from(o))
                .stderr(Stdio::from(e));
        }
        None => {
            cmd.stdin(Stdio::null());
        }
    }
    // SAFETY: between fork and exec only dup2 and fcntl, which are async-signal-safe.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            for (i, &src) in sources.iter().enumerate() {
                let target = 3 + i as RawFd;
                if libc::dup2(src, target) < 0 || libc::fcntl(target, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::FailedPrecondition("no `criu` binary on the shim's PATH".into())
        } else {
            Error::io("start criu swrk", e)
        }
    })?;
    drop(moved);
    let kind = req.type_();
    let result = converse(&ours, &mut req, kind, log);
    drop(ours);
    // CRIU exits once the socket closes; a restored task is our child too, never waited here.
    if result.is_err() {
        let _ = child.kill();
    }
    let _ = child.wait();
    result
}

fn converse(
    sock: &OwnedFd,
    req: &mut rpc::Criu_req,
    kind: rpc::Criu_req_type,
    log: &Path,
) -> Result<Answer> {
    let send = |msg: &rpc::Criu_req| -> Result<()> {
        let bytes = msg
            .write_to_bytes()
            .map_err(|e| Error::Internal(format!("encode CRIU request: {e}")))?;
        nix::sys::socket::send(
            sock.as_raw_fd(),
            &bytes,
            nix::sys::socket::MsgFlags::empty(),
        )
        .map_err(|e| Error::io("criu: send request", std::io::Error::from(e)))?;
        Ok(())
    };
    send(req)?;
    let mut answer = Answer { restored_pid: None };
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = nix::sys::socket::recv(
            sock.as_raw_fd(),
            &mut buf,
            nix::sys::socket::MsgFlags::empty(),
        )
        .map_err(|e| Error::io("criu: read reply", std::io::Error::from(e)))?;
        if n == 0 {
            return Err(Error::Runtime(format!(
                "criu {kind:?} ended without a reply{}",
                quote_log(log)
            )));
        }
        let resp = rpc::Criu_resp::parse_from_bytes(&buf[..n])
            .map_err(|e| Error::Runtime(format!("criu {kind:?}: bad reply: {e}")))?;
        if !resp.success() {
            let msg = if resp.cr_errmsg().is_empty() {
                String::new()
            } else {
                format!(": {}", resp.cr_errmsg().trim())
            };
            return Err(Error::Runtime(format!(
                "criu {kind:?} failed (errno {}){msg}{}",
                resp.cr_errno(),
                quote_log(log)
            )));
        }
        match resp.type_() {
            rpc::Criu_req_type::NOTIFY => {
                let notify = resp.notify.get_or_default();
                if notify.script() == "post-restore" {
                    answer.restored_pid = Some(notify.pid());
                }
                let mut ack = rpc::Criu_req::new();
                ack.set_type(rpc::Criu_req_type::NOTIFY);
                ack.set_notify_success(true);
                send(&ack)?;
            }
            t if t == kind => {
                if answer.restored_pid.is_none() && resp.restore.pid() > 0 {
                    answer.restored_pid = Some(resp.restore.pid());
                }
                return Ok(answer);
            }
            other => {
                return Err(Error::Runtime(format!(
                    "criu {kind:?}: unexpected reply {other:?}"
                )));
            }
        }
    }
}

/// CRIU's own error lines from its log (the last few), for the error message.
fn quote_log(log: &Path) -> String {
    let Ok(text) = std::fs::read_to_string(log) else {
        return String::new();
    };
    let errors: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("Error") || l.contains("rror ("))
        .collect();
    let start = errors.len().saturating_sub(4);
    if errors.is_empty() {
        return format!(" (see {})", log.display());
    }
    format!("; {} (log: {})", errors[start..].join("; "), log.display())
}

/// CRIU's RPC as this shim speaks it needs 3.15 or later.
fn criu_new_enough(what: &str) -> Result<()> {
    let version = criu_version()?;
    if version < CRIU_MINIMUM {
        return Err(Error::FailedPrecondition(format!(
            "{what}: CRIU {version} is older than 3.15"
        )));
    }
    Ok(())
}

fn criu_version() -> Result<u32> {
    let mut c = rust_criu::Criu::new().map_err(|e| Error::Runtime(format!("criu: {e}")))?;
    c.get_criu_version()
        .map_err(|e| Error::FailedPrecondition(format!("criu version: {e}")))
}

fn new_request(kind: rpc::Criu_req_type) -> (rpc::Criu_req, rpc::Criu_opts) {
    let mut req = rpc::Criu_req::new();
    req.set_type(kind);
    let mut opts = rpc::Criu_opts::new();
    opts.set_log_level(LOG_LEVEL);
    opts.set_manage_cgroups(true);
    opts.set_notify_scripts(true);
    (req, opts)
}

fn cg_mode(mode: &str) -> rpc::Criu_cg_mode {
    match mode {
        "full" => rpc::Criu_cg_mode::FULL,
        "strict" => rpc::Criu_cg_mode::STRICT,
        "ignore" => rpc::Criu_cg_mode::IGNORE,
        _ => rpc::Criu_cg_mode::SOFT,
    }
}

/// Creates `dir` 0700 if it is not there and opens it (CRIU reads it by our fd's number).
fn open_dir(dir: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(dir)
    {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io(format!("create {}", dir.display()), e)),
    }
    std::fs::File::open(dir).map_err(|e| Error::io(format!("open {}", dir.display()), e))
}

// ---------------------------------------------------------------------------------------
// What dump and restore share: the spec's external mounts and namespaces.
// ---------------------------------------------------------------------------------------

fn is_bind(m: &OciMount) -> bool {
    m.typ().as_deref() == Some("bind")
        || m.options()
            .as_ref()
            .is_some_and(|o| o.iter().any(|o| o == "bind" || o == "rbind"))
}

/// The spec's external mounts: (key, where it comes from). The key is the mount's place
/// in the container; on dump its value is the key again, on restore the host source.
fn external_mounts(spec: &Spec) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mounts = spec.mounts().clone().unwrap_or_default();
    let own_cgroupns = has_namespace(spec, LinuxNamespaceType::Cgroup);
    for m in &mounts {
        let dest = m.destination().to_string_lossy().into_owned();
        if is_bind(m) {
            let source = m
                .source()
                .as_ref()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| dest.clone());
            out.push((dest, source));
        } else if m.typ().as_deref() == Some("cgroup") && !own_cgroupns {
            // On v1 a cgroup mount is a set of bind mounts of the host's hierarchies.
            if !matches!(
                libcgroups::common::get_cgroup_setup(),
                Ok(libcgroups::common::CgroupSetup::Unified)
            ) {
                let points = libcgroups::v1::util::list_subsystem_mount_points()
                    .map_err(|e| Error::Runtime(format!("cgroup v1 mount points: {e}")))?;
                for p in points {
                    let p = p.to_string_lossy().into_owned();
                    if p.starts_with("/sys/fs/cgroup") {
                        out.push((p.clone(), p));
                    }
                }
            }
        }
    }
    Ok(out)
}

fn has_namespace(spec: &Spec, t: LinuxNamespaceType) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| ns.iter().any(|n| n.typ() == t))
}

/// The namespaces the spec joins by path: (type, path).
fn joined_namespaces(spec: &Spec) -> Vec<(LinuxNamespaceType, PathBuf)> {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .map(|ns| {
            ns.iter()
                .filter_map(|n| n.path().as_ref().map(|p| (n.typ(), p.clone())))
                .collect()
        })
        .unwrap_or_default()
}

fn ns_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Time => "time",
    }
}

fn load_spec(bundle: &Path, what: &str) -> Result<Spec> {
    let config = bundle.join("config.json");
    Spec::load(&config).map_err(|e| Error::Runtime(format!("{what}: {}: {e}", config.display())))
}

/// The container's root filesystem as the spec names it (relative to the bundle).
fn spec_rootfs(spec: &Spec, bundle: &Path) -> PathBuf {
    match spec.root().as_ref().map(|r| r.path().clone()) {
        Some(p) if p.is_absolute() => p,
        Some(p) => bundle.join(p),
        None => rootfs_path(bundle),
    }
}

// ---------------------------------------------------------------------------------------
// Dump.
// ---------------------------------------------------------------------------------------

/// Checkpoints container `id` (running or paused) into `spec.image_path`.
pub fn checkpoint(id: &str, root: &Path, spec: &CheckpointSpec) -> Result<()> {
    let what = format!("checkpoint {id}");
    let mut c = super::worker::load("checkpoint", id, root)?;
    if !matches!(
        c.status(),
        ContainerStatus::Running | ContainerStatus::Paused
    ) {
        return Err(Error::FailedPrecondition(format!(
            "{what}: container is {:?}",
            c.status()
        )));
    }
    let pid = c
        .pid()
        .map(|p| p.as_raw())
        .ok_or_else(|| Error::Runtime(format!("{what}: no init pid in its state")))?;
    criu_new_enough(&what)?;
    let bundle = c.bundle().clone();
    let oci = load_spec(&bundle, &what)?;
    let images = open_dir(&spec.image_path)?;
    let work = spec.work_path.as_deref().map(open_dir).transpose()?;
    let log_dir = spec.work_path.as_deref().unwrap_or(&spec.image_path);

    let (mut req, mut opts) = new_request(rpc::Criu_req_type::DUMP);
    opts.set_images_dir_fd(images.as_raw_fd());
    if let Some(w) = &work {
        opts.set_work_dir_fd(w.as_raw_fd());
    }
    opts.set_log_file(DUMP_LOG.into());
    opts.set_pid(pid);
    opts.set_root(spec_rootfs(&oci, &bundle).to_string_lossy().into_owned());
    opts.set_leave_running(spec.leave_running);
    opts.set_tcp_established(spec.tcp_established);
    opts.set_ext_unix_sk(spec.ext_unix_sk);
    opts.set_file_locks(spec.file_locks);
    opts.set_shell_job(spec.shell_job);
    opts.set_orphan_pts_master(true);
    opts.manage_cgroups_mode = Some(cg_mode(&spec.cgroups_mode).into());
    // containerd's client pauses a task before it checkpoints it: CRIU must freeze (or
    // find frozen) the container's cgroup rather than seize frozen tasks one by one.
    if let Some(freezer) = freezer_dir(pid) {
        opts.set_freeze_cgroup(freezer.to_string_lossy().into_owned());
    }
    for (key, _) in external_mounts(&oci)? {
        let mut m = rpc::Ext_mount_map::new();
        m.set_key(key.clone());
        m.set_val(key);
        opts.ext_mnt.push(m);
    }
    for (t, path) in joined_namespaces(&oci) {
        if matches!(t, LinuxNamespaceType::Network | LinuxNamespaceType::Pid) {
            let ino = std::fs::metadata(&path)
                .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
                .map_err(|e| Error::io(format!("{what}: namespace {}", path.display()), e))?;
            let name = ns_name(t);
            opts.external
                .push(format!("{name}[{ino}]:{}", rust_criu::criu_ns_to_key(name)));
        }
    }
    let (keys, descriptors) = stdio_keys(pid)?;
    for key in keys.iter().flatten() {
        opts.external.push(key.clone());
    }
    write_json(&spec.image_path.join(DESCRIPTORS), &descriptors)?;
    write_json(&spec.image_path.join(STDIO_KEYS), &keys)?;
    req.opts = MessageField::some(opts);
    swrk(req, None, &[], &log_dir.join(DUMP_LOG)).map_err(|e| prefix(&what, e))?;

    if !spec.leave_running {
        // Dumped and killed: the container is gone, as with runc's checkpoint --exit.
        c.set_status(ContainerStatus::Stopped)
            .save()
            .map_err(|e| lc_error("checkpoint", id, e))?;
        c.delete(false).map_err(|e| lc_error("checkpoint", id, e))?;
    }
    Ok(())
}

fn prefix(what: &str, e: Error) -> Error {
    match e {
        Error::Runtime(m) => Error::Runtime(format!("{what}: {m}")),
        Error::FailedPrecondition(m) => Error::FailedPrecondition(format!("{what}: {m}")),
        other => other,
    }
}

fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec(value)
        .map_err(|e| Error::Internal(format!("encode {}: {e}", path.display())))?;
    std::fs::write(path, bytes).map_err(|e| Error::io(format!("write {}", path.display()), e))
}

/// For each of the init's fds 0-2: the external key CRIU should dump it under (a file or
/// fifo on a mount outside the container), and its link target (`descriptors.json`).
fn stdio_keys(pid: i32) -> Result<(Vec<Option<String>>, Vec<String>)> {
    let inside = mount_ids(pid)?;
    let mut keys = Vec::new();
    let mut targets = Vec::new();
    for fd in 0..3 {
        let link = format!("/proc/{pid}/fd/{fd}");
        let target = std::fs::read_link(&link)
            .map(|t| t.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "/dev/null".into());
        let key = if target.starts_with('/') {
            let mnt_id = fd_mount_id(pid, fd)?;
            match mnt_id {
                Some(m) if !inside.contains(&m) => {
                    let ino = std::fs::metadata(&link)
                        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
                        .map_err(|e| Error::io(format!("stat {link}"), e))?;
                    Some(format!("file[{m:x}:{ino:x}]"))
                }
                _ => None,
            }
        } else {
            None
        };
        keys.push(key);
        targets.push(target);
    }
    Ok((keys, targets))
}

/// The freezer of `pid`'s cgroup: its v2 cgroup directory, or its v1 freezer cgroup.
fn freezer_dir(pid: i32) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let lines: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            parts.next()?;
            Some((parts.next()?, parts.next()?))
        })
        .collect();
    if let Some((_, path)) = lines
        .iter()
        .find(|(c, _)| c.split(',').any(|c| c == "freezer"))
    {
        return Some(Path::new("/sys/fs/cgroup/freezer").join(path.trim_start_matches('/')));
    }
    match lines.as_slice() {
        [("", path)] => Some(Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'))),
        _ => None,
    }
}

/// The mount IDs of `pid`'s mount namespace.
fn mount_ids(pid: i32) -> Result<HashSet<u64>> {
    let path = format!("/proc/{pid}/mountinfo");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(format!("read {path}"), e))?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect())
}

fn fd_mount_id(pid: i32, fd: i32) -> Result<Option<u64>> {
    let path = format!("/proc/{pid}/fdinfo/{fd}");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(format!("read {path}"), e))?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("mnt_id:"))
        .and_then(|v| v.trim().parse().ok()))
}

// ---------------------------------------------------------------------------------------
// Restore.
// ---------------------------------------------------------------------------------------

/// How the restored container is set up: Create's options.
pub struct Setup<'a> {
    pub id: &'a str,
    pub bundle: &'a Path,
    pub root: &'a Path,
    pub rootfs: &'a [Mount],
    pub systemd_cgroup: bool,
}

/// Restores container `setup.id` from `spec.image_path` with `stdio` as its init's fds
/// 0-2. Returns the restored init's PID (in the daemon's PID namespace). On failure it
/// leaves nothing behind: no state, cgroup or mounts.
pub fn restore(setup: &Setup, spec: &RestoreImage, stdio: [OwnedFd; 3]) -> Result<i32> {
    let what = format!("restore {}", setup.id);
    super::worker::already_exists("restore", setup.id, setup.root)?;
    super::ensure_state_root(setup.root)?;
    let oci = load_spec(setup.bundle, &what)?;
    if oci.process().as_ref().and_then(|p| p.terminal()) == Some(true) {
        return Err(Error::FailedPrecondition(format!(
            "{what}: restoring a container with a terminal is not supported by this shim"
        )));
    }
    criu_new_enough(&what)?;
    let target = rootfs_path(setup.bundle);
    if !setup.rootfs.is_empty() {
        mount_all(setup.rootfs, &target)?;
    }
    let home = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let restored = restore_in(setup, spec, stdio, &oci, &what);
    match restored {
        Ok(pid) => Ok(pid),
        Err(e) => {
            // Leave nothing behind: state, rootfs mounts, and the cgroup made for it (once
            // this worker has left it; CRIU killed what it had restored).
            leave_cgroup(&home);
            if let Err(cleanup) = delete(setup.id, setup.root, Some(setup.bundle)) {
                log::warn!("cleanup after failed {what}: {cleanup}");
            }
            if let Ok(cg) = cgroup_manager(setup, &oci) {
                let _ = cg.remove();
            }
            Err(e)
        }
    }
}

/// Moves this process back to the cgroups `home` (its /proc/self/cgroup from before).
/// Best effort: it only matters for removing the container's cgroup after a failure.
fn leave_cgroup(home: &str) {
    for line in home.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(ctrl), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let base = if ctrl.is_empty() {
            if home.lines().count() > 1 {
                // v1 hybrid's unified hierarchy.
                PathBuf::from("/sys/fs/cgroup/unified")
            } else {
                PathBuf::from("/sys/fs/cgroup")
            }
        } else {
            Path::new("/sys/fs/cgroup").join(ctrl.trim_start_matches("name="))
        };
        let procs = base.join(path.trim_start_matches('/')).join("cgroup.procs");
        let _ = std::fs::write(&procs, std::process::id().to_string());
    }
}

fn cgroup_manager(setup: &Setup, oci: &Spec) -> Result<libcgroups::common::AnyCgroupManager> {
    let cgroup_path = libcontainer::utils::get_cgroup_path(
        &oci.linux().as_ref().and_then(|l| l.cgroups_path().clone()),
        setup.id,
    );
    libcgroups::common::create_cgroup_manager(libcgroups::common::CgroupConfig {
        cgroup_path,
        systemd_cgroup: setup.systemd_cgroup,
        container_name: setup.id.to_string(),
    })
    .map_err(|e| Error::Runtime(format!("restore {}: cgroup: {e}", setup.id)))
}

fn restore_in(
    setup: &Setup,
    spec: &RestoreImage,
    stdio: [OwnedFd; 3],
    oci: &Spec,
    what: &str,
) -> Result<i32> {
    let state = setup.root.join(setup.id);
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&state)
            .map_err(|e| Error::io(format!("{what}: create {}", state.display()), e))?;
    }
    // The cgroup first, with this worker in it: CRIU, its child, starts there, and its
    // cgroup becomes the root of the restored tree (cg_root below), so the restored tasks
    // land in the cgroup this spec asks for, whatever the checkpointed container's was.
    let cg = cgroup_manager(setup, oci)?;
    cg.add_task(nix_cg::unistd::Pid::this())
        .map_err(|e| Error::Runtime(format!("{what}: join cgroup: {e}")))?;
    if let Some(resources) = oci.linux().as_ref().and_then(|l| l.resources().as_ref()) {
        cg.apply(&ControllerOpt {
            resources,
            disable_oom_killer: false,
            oom_score_adj: None,
            freezer_state: None,
        })
        .map_err(|e| Error::Runtime(format!("{what}: cgroup limits: {e}")))?;
    }

    let images = std::fs::File::open(&spec.image_path).map_err(|e| {
        Error::InvalidArgument(format!(
            "{what}: checkpoint {}: {e}",
            spec.image_path.display()
        ))
    })?;
    let work = spec.work_path.as_deref().map(open_dir).transpose()?;
    let log_dir = spec.work_path.as_deref().unwrap_or(&spec.image_path);

    let rootfs = spec_rootfs(oci, setup.bundle);
    prepare_mountpoints(oci, &rootfs)?;
    // CRIU wants a root that is a mount point whose parent is not overmounted: a bind of
    // the rootfs in the state directory, gone once CRIU is done.
    let criu_root = state.join("criu-root");
    std::fs::create_dir(&criu_root)
        .map_err(|e| Error::io(format!("{what}: create {}", criu_root.display()), e))?;
    nix::mount::mount(
        Some(&rootfs),
        &criu_root,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND | nix::mount::MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| {
        Error::io(
            format!("{what}: bind {}", rootfs.display()),
            std::io::Error::from(e),
        )
    })?;
    let result = run_restore(
        spec,
        stdio,
        oci,
        &images,
        work.as_ref(),
        &criu_root,
        log_dir,
    );
    let _ = nix::mount::umount2(&criu_root, nix::mount::MntFlags::MNT_DETACH);
    let _ = std::fs::remove_dir(&criu_root);
    let pid = result.map_err(|e| prefix(what, e))?;
    record_state(setup, oci, pid).map_err(|e| prefix(what, e))?;
    Ok(pid)
}

fn run_restore(
    spec: &RestoreImage,
    stdio: [OwnedFd; 3],
    oci: &Spec,
    images: &std::fs::File,
    work: Option<&std::fs::File>,
    criu_root: &Path,
    log_dir: &Path,
) -> Result<i32> {
    let (mut req, mut opts) = new_request(rpc::Criu_req_type::RESTORE);
    opts.set_images_dir_fd(images.as_raw_fd());
    if let Some(w) = work {
        opts.set_work_dir_fd(w.as_raw_fd());
    }
    opts.set_log_file(RESTORE_LOG.into());
    opts.set_root(criu_root.to_string_lossy().into_owned());
    // The init becomes this worker's child (not CRIU's), then the daemon's when we exit.
    opts.set_rst_sibling(true);
    opts.set_evasive_devices(true);
    opts.manage_cgroups_mode = Some(rpc::Criu_cg_mode::SOFT.into());
    if let Some(parent) = &spec.parent_path {
        opts.set_parent_img(parent.to_string_lossy().into_owned());
    }
    for (key, source) in external_mounts(oci)? {
        let mut m = rpc::Ext_mount_map::new();
        m.set_key(key);
        m.set_val(source);
        opts.ext_mnt.push(m);
    }
    // Namespaces the spec joins: network and PID ones were dumped as external and are
    // handed over by fd (CRIU's fds 4, 5, …); the others CRIU joins itself.
    let mut extra = Vec::new();
    for (t, path) in joined_namespaces(oci) {
        let name = ns_name(t);
        match t {
            LinuxNamespaceType::Network | LinuxNamespaceType::Pid => {
                let f = std::fs::File::open(&path).map_err(|e| {
                    Error::InvalidArgument(format!("{name} namespace {}: {e}", path.display()))
                })?;
                let mut inherit = rpc::Inherit_fd::new();
                inherit.set_key(rust_criu::criu_ns_to_key(name));
                inherit.set_fd(4 + extra.len() as i32);
                opts.inherit_fd.push(inherit);
                extra.push(OwnedFd::from(f));
            }
            LinuxNamespaceType::Cgroup => {
                return Err(Error::FailedPrecondition(format!(
                    "joining cgroup namespace {} on restore: CRIU cannot",
                    path.display()
                )));
            }
            _ => {
                let mut j = rpc::Join_namespace::new();
                j.set_ns(name.into());
                j.set_ns_file(path.to_string_lossy().into_owned());
                opts.join_ns.push(j);
            }
        }
    }
    // The tree's cgroup root is ours (see restore_in).
    for (ctrl, path) in own_cgroups()? {
        let mut r = rpc::Cgroup_root::new();
        if let Some(c) = ctrl {
            r.set_ctrl(c);
        }
        r.set_path(path);
        opts.cg_root.push(r);
    }
    // The init's stdio: fd N of CRIU is the new task's fd N.
    for (fd, key) in stdio_inherit_keys(&spec.image_path)?
        .into_iter()
        .enumerate()
    {
        if let Some(key) = key {
            let mut inherit = rpc::Inherit_fd::new();
            inherit.set_key(key);
            inherit.set_fd(fd as i32);
            opts.inherit_fd.push(inherit);
        }
    }
    req.opts = MessageField::some(opts);
    let answer = swrk(req, Some(stdio), &extra, &log_dir.join(RESTORE_LOG))?;
    answer
        .restored_pid
        .filter(|&p| p > 0)
        .ok_or_else(|| Error::Runtime("criu restored nothing (no init pid)".into()))
}

/// Creates in `rootfs` the mountpoints the spec's mounts need, as Create does: a restore
/// usually gets a fresh snapshot of the image (`ctr container restore`, CRI), without
/// the directories the checkpointed container's runtime made (busybox has no /run), and
/// CRIU mounts onto what is there. Mountpoints inside a tmpfs are skipped (CRIU restores
/// a tmpfs with its content), cgroup ones too (they appear with /sys). Resolved inside
/// the rootfs (pathrs), so an image's symlink cannot send a mkdir outside it.
fn prepare_mountpoints(oci: &Spec, rootfs: &Path) -> Result<()> {
    use pathrs::flags::OpenFlags;
    use std::os::unix::fs::PermissionsExt;
    let root = pathrs::Root::open(rootfs)
        .map_err(|e| Error::Runtime(format!("open rootfs {}: {e}", rootfs.display())))?;
    let mounts = oci.mounts().clone().unwrap_or_default();
    let tmpfs: Vec<PathBuf> = mounts
        .iter()
        .filter(|m| m.typ().as_deref() == Some("tmpfs"))
        .map(|m| m.destination().clone())
        .collect();
    let dir_mode = std::fs::Permissions::from_mode(0o755);
    for m in &mounts {
        let dest = m.destination();
        if matches!(m.typ().as_deref(), Some("cgroup" | "cgroup2"))
            || tmpfs.iter().any(|t| dest != t && dest.starts_with(t))
        {
            continue;
        }
        let fail =
            |e: pathrs::error::Error| Error::Runtime(format!("mountpoint {}: {e}", dest.display()));
        let file_source = is_bind(m)
            && m.source()
                .as_ref()
                .and_then(|s| std::fs::metadata(s).ok())
                .is_some_and(|md| !md.is_dir());
        if file_source {
            if let Some(parent) = dest.parent() {
                root.mkdir_all(parent, &dir_mode).map_err(fail)?;
            }
            root.create_file(
                dest,
                OpenFlags::O_RDONLY | OpenFlags::O_CLOEXEC,
                &std::fs::Permissions::from_mode(0o644),
            )
            .map_err(fail)?;
        } else {
            root.mkdir_all(dest, &dir_mode).map_err(fail)?;
        }
    }
    Ok(())
}

/// The key each of fds 0-2 was dumped under: ours (external files), else a pipe's name
/// from `descriptors.json` (a checkpoint by runc or libcontainer has only that).
fn stdio_inherit_keys(images: &Path) -> Result<Vec<Option<String>>> {
    let read = |name: &str| std::fs::read(images.join(name)).ok();
    let ours: Vec<Option<String>> = match read(STDIO_KEYS) {
        Some(b) => serde_json::from_slice(&b)
            .map_err(|e| Error::InvalidArgument(format!("checkpoint {STDIO_KEYS}: {e}")))?,
        None => vec![None; 3],
    };
    let descriptors: Vec<String> = match read(DESCRIPTORS) {
        Some(b) => serde_json::from_slice(&b)
            .map_err(|e| Error::InvalidArgument(format!("checkpoint {DESCRIPTORS}: {e}")))?,
        None => Vec::new(),
    };
    Ok((0..3)
        .map(|i| {
            ours.get(i).cloned().flatten().or_else(|| {
                descriptors
                    .get(i)
                    .filter(|d| d.starts_with("pipe:"))
                    .cloned()
            })
        })
        .collect())
}

/// This process's cgroups, as CRIU's cg_root wants them: one global root on cgroup v2,
/// one per controller set on v1.
fn own_cgroups() -> Result<Vec<(Option<String>, String)>> {
    let text = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| Error::io("read /proc/self/cgroup", e))?;
    let lines: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let _id = parts.next()?;
            let ctrl = parts.next()?.to_string();
            let path = parts.next()?.to_string();
            Some((ctrl, path))
        })
        .collect();
    if lines.len() == 1 && lines[0].0.is_empty() {
        return Ok(vec![(None, lines[0].1.clone())]);
    }
    Ok(lines
        .into_iter()
        .filter(|(c, _)| !c.is_empty())
        .map(|(c, p)| (Some(c), p))
        .collect())
}

/// libcontainer's state for the restored container, as Create leaves it for a running
/// one, and runc-v2's pid file (`<bundle>/init.pid`, which runc restore writes).
fn record_state(setup: &Setup, oci: &Spec, pid: i32) -> Result<()> {
    let dir = setup.root.join(setup.id);
    let mut c = Container::new(
        setup.id,
        ContainerStatus::Running,
        Some(pid),
        setup.bundle,
        &dir,
    )
    .map_err(|e| lc_error("restore", setup.id, e))?;
    // SAFETY: geteuid has no preconditions.
    c.set_systemd(setup.systemd_cgroup)
        .set_creator(unsafe { libc::geteuid() });
    c.save().map_err(|e| lc_error("restore", setup.id, e))?;
    YoukiConfig::from_spec(oci, setup.id)
        .and_then(|cfg| cfg.save(&dir))
        .map_err(|e| Error::Runtime(format!("save config: {e}")))?;
    let pidfile = setup.bundle.join("init.pid");
    std::fs::write(&pidfile, pid.to_string())
        .map_err(|e| Error::io(format!("write {}", pidfile.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdio_keys_prefer_ours_then_pipes() {
        let dir = std::env::temp_dir().join(format!("restore-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(DESCRIPTORS),
            r#"["/dev/null","pipe:[42]","/run/fifo/x-stderr"]"#,
        )
        .unwrap();
        // A checkpoint by runc or libcontainer: only pipes can be handed back.
        assert_eq!(
            stdio_inherit_keys(&dir).unwrap(),
            vec![None, Some("pipe:[42]".into()), None]
        );
        // Ours: external files by key.
        std::fs::write(
            dir.join(STDIO_KEYS),
            r#"["file[1a:2b]",null,"file[1a:3c]"]"#,
        )
        .unwrap();
        assert_eq!(
            stdio_inherit_keys(&dir).unwrap(),
            vec![
                Some("file[1a:2b]".into()),
                Some("pipe:[42]".into()),
                Some("file[1a:3c]".into())
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn this_process_stdio_outside_its_mounts_is_none() {
        // Our own fds: every mount is ours, so nothing is external.
        let (keys, targets) = stdio_keys(std::process::id() as i32).unwrap();
        assert_eq!(keys, vec![None, None, None]);
        assert_eq!(targets.len(), 3);
    }

    #[test]
    fn cgroup_roots_come_from_proc_self() {
        let roots = own_cgroups().unwrap();
        assert!(!roots.is_empty());
        assert!(roots.iter().all(|(_, p)| p.starts_with('/')), "{roots:?}");
    }
}
