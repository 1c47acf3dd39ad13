//! `start`: the handshake with containerd. Find (or make) the shim that serves this
//! container's pod, and answer with its address in the format the caller speaks.
//!
//! - containerd 1.6/1.7 write the runtime options (a protobuf `Any`, possibly empty) on
//!   stdin and read a plain address from stdout.
//! - containerd 2.0–2.2 do the same; they would accept JSON `{"version":3,…}` but cannot be
//!   told apart from 1.7, which rejects it (see `reply_format`).
//! - containerd 2.3 writes `BootstrapParams` and reads a `BootstrapResult`.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use containerd_shim_protos::bootstrap_api::{BootstrapParams, BootstrapResult};
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::ids::{validate_id, validate_namespace};
use crate::shim::args::Args;
use crate::shim::daemon::LISTENER_FD;
use crate::shim::options::{self, RuntimeOptions};

/// Where containerd's shims put their sockets (containerd's own convention).
pub const SOCKET_DIR: &str = "/run/containerd/s";
/// The highest shim bootstrap version we speak: 3 = "dial me for the pod's siblings".
pub const SHIM_VERSION: i32 = 3;

const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
const GROUP: &str = "io.containerd.runc.v2.group";

/// What containerd wrote on our stdin.
#[derive(Debug, PartialEq)]
pub enum Input {
    /// containerd ≤ 2.2: runtime options (possibly none).
    Options(Option<Any>),
    /// containerd 2.3+.
    Bootstrap(Box<BootstrapParams>),
}

/// How to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// containerd 1.x: the bare address.
    Plain,
    /// containerd 2.3+: a protobuf `BootstrapResult`.
    Bootstrap,
}

/// Tells the two stdin formats apart. Both start with a length-delimited field 1 (an
/// `Any`'s type URL, `BootstrapParams`' instance ID), so look at the content: a
/// `BootstrapParams` names our own container ID there and carries a namespace (field 2
/// as a string), while an `Any`'s field 2 is the options' bytes behind a type URL
/// that is never our ID.
pub fn decode_input(stdin: &[u8], id: &str, namespace: &str) -> Result<Input> {
    if stdin.is_empty() {
        return Ok(Input::Options(None));
    }
    if let Ok(p) = BootstrapParams::parse_from_bytes(stdin)
        && p.instance_id == id
        && (p.namespace == namespace || namespace.is_empty())
        && !p.namespace.is_empty()
    {
        return Ok(Input::Bootstrap(Box::new(p)));
    }
    let any = Any::parse_from_bytes(stdin).map_err(|e| {
        Error::InvalidArgument(format!(
            "start: stdin is neither runtime options nor BootstrapParams: {e}"
        ))
    })?;
    Ok(Input::Options(Some(any)))
}

/// Chooses the answer format. containerd 2.3+ sent `BootstrapParams` and gets a
/// `BootstrapResult` (version 3: it dials the pod's shim for siblings itself). Everyone
/// else gets the bare address: containerd 1.6 dials the output as a path, 1.7 rejects any
/// JSON version above 2, and 2.0–2.2 set the same environment as 1.7 (MAX_SHIM_VERSION=2),
/// so they cannot be told apart; they call `start` per container and we group ourselves.
pub fn reply_format(input: &Input) -> Reply {
    if matches!(input, Input::Bootstrap(_)) {
        Reply::Bootstrap
    } else {
        Reply::Plain
    }
}

pub fn format_reply(reply: Reply, address: &str) -> Result<Vec<u8>> {
    match reply {
        Reply::Plain => Ok(address.as_bytes().to_vec()),
        Reply::Bootstrap => {
            let mut r = BootstrapResult::new();
            r.version = SHIM_VERSION;
            r.address = address.to_string();
            r.protocol = "ttrpc".to_string();
            r.write_to_bytes()
                .map_err(|e| Error::Internal(format!("encode BootstrapResult: {e}")))
        }
    }
}

#[derive(Deserialize, Default)]
struct SpecAnnotations {
    #[serde(default)]
    annotations: std::collections::HashMap<String, String>,
}

/// The pod this container belongs to: CRI's sandbox ID, or the runc-v2 group annotation,
/// or the container itself.
pub fn group_id(config_json: &[u8], id: &str) -> Result<String> {
    let spec: SpecAnnotations = serde_json::from_slice(config_json)
        .map_err(|e| Error::InvalidArgument(format!("bundle config.json: {e}")))?;
    let group = group_of(&spec.annotations, id);
    validate_id(&group)?;
    Ok(group)
}

/// The group named by a container's annotations (not validated).
pub fn group_of(annotations: &std::collections::HashMap<String, String>, id: &str) -> String {
    annotations
        .get(SANDBOX_ID)
        .or_else(|| annotations.get(GROUP))
        .cloned()
        .unwrap_or_else(|| id.to_string())
}

/// containerd's socket naming: sha256 of `<containerd address>/<namespace>/<group>`.
pub fn socket_path(dir: &Path, containerd_address: &str, namespace: &str, group: &str) -> PathBuf {
    let key = format!("{containerd_address}/{namespace}/{group}");
    dir.join(hex::encode(Sha256::digest(key.as_bytes())))
}

pub fn address_of(socket: &Path) -> String {
    format!("unix://{}", socket.display())
}

/// Binds the pod's socket, or finds it served already. `Ok(None)`: a live shim owns it.
fn bind_or_join(socket: &Path) -> Result<Option<UnixListener>> {
    let dir = socket.parent().unwrap_or(Path::new(SOCKET_DIR));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io(format!("chmod {}", dir.display()), e))?;
    for _ in 0..2 {
        match UnixListener::bind(socket) {
            Ok(l) => {
                std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| Error::io(format!("chmod {}", socket.display()), e))?;
                return Ok(Some(l));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                if UnixStream::connect(socket).is_ok() {
                    return Ok(None);
                }
                // A socket file whose shim is dead: take it over.
                let _ = std::fs::remove_file(socket);
            }
            Err(e) => return Err(Error::io(format!("bind {}", socket.display()), e)),
        }
    }
    Err(Error::Runtime(format!(
        "could not bind {}",
        socket.display()
    )))
}

/// Where the runtime options put the daemon: its state root (`Root`) and its cgroup
/// (`ShimCgroup`, with the `cgroup.procs` files to join between fork and exec).
struct Placement {
    state_root: Option<PathBuf>,
    shim_cgroup: Option<String>,
    cgroup_procs: Vec<std::ffi::CString>,
}

/// Spawns the daemon in a new session with the listener as fd 3 and returns its PID.
/// Its parent (us) exits right after, so it is re-parented away from containerd.
fn spawn_daemon(
    args: &Args,
    bundle: &Path,
    socket: &Path,
    group: &str,
    listener: OwnedFd,
    input: &Input,
    placement: Placement,
) -> Result<u32> {
    let exe = std::env::current_exe().map_err(|e| Error::io("find own executable", e))?;
    let mut cmd = Command::new(exe);
    cmd.arg("-namespace")
        .arg(&args.namespace)
        .arg("-id")
        .arg(&args.id)
        .arg("-address")
        .arg(&args.address)
        .arg("-socket")
        .arg(socket)
        .arg("-group")
        .arg(group);
    if !args.publish_binary.is_empty() {
        cmd.arg("-publish-binary").arg(&args.publish_binary);
    }
    if let Some(root) = &placement.state_root {
        cmd.arg("-state-root").arg(root);
    }
    let (ttrpc_address, bootstrap_debug) = match input {
        Input::Bootstrap(p) => (
            Some(p.containerd_ttrpc_address.as_str()).filter(|a| !a.is_empty()),
            // DEBUG = -4, TRACE = -8: the open enum's more verbose levels are negative.
            p.log_level.value() <= -4,
        ),
        Input::Options(_) => (None, false),
    };
    if args.debug || bootstrap_debug {
        cmd.arg("-debug");
    }
    if let Some(t) = ttrpc_address {
        cmd.env("TTRPC_ADDRESS", t);
    }
    // The daemon re-executes itself from a sealed view of this binary; only that re-exec
    // may tell it it has (see shim/sealed.rs).
    cmd.env_remove(crate::shim::sealed::SEALED_ENV);
    // The bundle's `log` fifo (containerd reads it) is the daemon's stderr. O_RDWR never
    // blocks on a fifo and keeps it writable while containerd restarts; O_NONBLOCK drops
    // lines rather than stalling when nobody reads. The daemon's working directory is `/`:
    // the bundle is containerd's, removed after Delete and perhaps made again for the same
    // ID while an old daemon is still exiting (libcontainer asks for the cwd in Create).
    let log = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(bundle.join("log"))
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null());
    cmd.current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    let fd = listener.as_raw_fd();
    let cgroup_procs = placement.cgroup_procs;
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            crate::cgroup::shim::join_self(&cgroup_procs)?;
            if fd == LISTENER_FD {
                // dup2 onto itself would keep FD_CLOEXEC set: clear it instead.
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(fd, LISTENER_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let what = match &placement.shim_cgroup {
        Some(cg) => format!("spawn shim daemon in ShimCgroup {cg:?}"),
        None => "spawn shim daemon".to_string(),
    };
    let child = cmd.spawn().map_err(|e| Error::io(what, e))?;
    Ok(child.id())
}

/// The runtime options containerd gave `start`: on stdin (≤ 2.2) or as an extension of
/// `BootstrapParams` (2.3+). Options that do not decode are not `start`'s to refuse: the
/// same options come again with Create, which answers InvalidArgument naming the field.
pub fn runtime_options(input: &Input) -> RuntimeOptions {
    match input {
        Input::Options(any) => options::decode(any.as_ref()).unwrap_or_default(),
        Input::Bootstrap(p) => p
            .extensions
            .iter()
            .filter_map(|x| x.value.as_ref())
            .find_map(|any| options::decode(Some(any)).ok())
            .unwrap_or_default(),
    }
}

/// The whole `start` subcommand. Returns the bytes to print on stdout.
pub fn start(args: &Args, stdin: &mut dyn Read) -> Result<Vec<u8>> {
    validate_namespace(&args.namespace)?;
    validate_id(&args.id)?;
    let mut input = Vec::new();
    stdin
        .read_to_end(&mut input)
        .map_err(|e| Error::io("read stdin", e))?;
    let input = decode_input(&input, &args.id, &args.namespace)?;
    let reply = reply_format(&input);
    let (address, socket_dir) = match &input {
        Input::Bootstrap(p) => (
            if p.containerd_grpc_address.is_empty() {
                args.address.clone()
            } else {
                p.containerd_grpc_address.clone()
            },
            p.socket_dir
                .clone()
                .filter(|d| !d.is_empty())
                .unwrap_or_else(|| SOCKET_DIR.to_string()),
        ),
        Input::Options(_) => (args.address.clone(), SOCKET_DIR.to_string()),
    };
    let bundle = std::env::current_dir().map_err(|e| Error::io("bundle (working directory)", e))?;
    let group = match std::fs::read(bundle.join("config.json")) {
        Ok(config) => group_id(&config, &args.id)?,
        // containerd 2.x's "shim" sandboxer starts us for a pod with no spec at all: the
        // sandbox ID names the group, and the siblings' sandbox-id annotation finds it.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => args.id.clone(),
        Err(e) => {
            return Err(Error::io(
                format!("read {}/config.json", bundle.display()),
                e,
            ));
        }
    };
    let socket = socket_path(Path::new(&socket_dir), &address, &args.namespace, &group);
    let addr = address_of(&socket);
    let options = runtime_options(&input);
    // Before the daemon exists: `delete` after a failed start must find the state too.
    crate::ops::roots::record(&bundle, options.root.as_deref(), &args.namespace)?;
    // Found before anything is bound or spawned, so a missing cgroup leaves nothing behind.
    let placement = Placement {
        cgroup_procs: match options.shim_cgroup.as_deref() {
            Some(cg) => crate::cgroup::shim::procs_files_here(cg)?,
            None => Vec::new(),
        },
        shim_cgroup: options.shim_cgroup,
        state_root: options.root,
    };
    if let Some(listener) = bind_or_join(&socket)?
        && let Err(e) = spawn_daemon(
            args,
            &bundle,
            &socket,
            &group,
            listener.into(),
            &input,
            placement,
        )
    {
        let _ = std::fs::remove_file(&socket);
        return Err(e);
    }
    // Recorded for `delete`, which must find the socket of a dead shim to remove it.
    let _ = std::fs::write(bundle.join("address"), &addr);
    format_reply(reply, &addr)
}

pub fn write_stdout(bytes: &[u8]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|_| out.flush())
        .map_err(|e| Error::io("write stdout", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(id: &str, ns: &str) -> BootstrapParams {
        let mut p = BootstrapParams::new();
        p.instance_id = id.into();
        p.namespace = ns.into();
        p.containerd_grpc_address = "/run/containerd/containerd.sock".into();
        p.containerd_ttrpc_address = "/run/containerd/containerd.sock.ttrpc".into();
        p.containerd_version = "v2.3.0".into();
        p
    }

    #[test]
    fn empty_stdin_is_no_options() {
        assert_eq!(
            decode_input(b"", "c1", "default").unwrap(),
            Input::Options(None)
        );
    }

    #[test]
    fn runc_options_any_is_options() {
        let mut o = containerd_shim_protos::shim::oci::Options::new();
        o.systemd_cgroup = true;
        let mut any = Any::new();
        any.type_url = "containerd.runc.v1.Options".into();
        any.value = o.write_to_bytes().unwrap();
        let bytes = any.write_to_bytes().unwrap();
        match decode_input(&bytes, "c1", "default").unwrap() {
            Input::Options(Some(a)) => assert_eq!(a.type_url, "containerd.runc.v1.Options"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn start_finds_the_shim_cgroup_in_either_input() {
        let mut o = containerd_shim_protos::shim::oci::Options::new();
        o.shim_cgroup = "/containerd/shim".into();
        let mut any = Any::new();
        any.type_url = "containerd.runc.v1.Options".into();
        any.value = o.write_to_bytes().unwrap();
        let legacy = Input::Options(Some(any.clone()));
        assert_eq!(
            runtime_options(&legacy).shim_cgroup.as_deref(),
            Some("/containerd/shim")
        );
        let mut p = params("c1", "default");
        let mut x = containerd_shim_protos::bootstrap_api::Extension::new();
        x.value = Some(any).into();
        p.extensions.push(x);
        let boot = Input::Bootstrap(Box::new(p));
        assert_eq!(
            runtime_options(&boot).shim_cgroup.as_deref(),
            Some("/containerd/shim")
        );
        assert_eq!(
            runtime_options(&Input::Options(None)),
            RuntimeOptions::default()
        );
    }

    #[test]
    fn bootstrap_params_are_recognised() {
        let bytes = params("c1", "k8s.io").write_to_bytes().unwrap();
        match decode_input(&bytes, "c1", "k8s.io").unwrap() {
            Input::Bootstrap(p) => {
                assert_eq!(p.containerd_version, "v2.3.0");
                assert_eq!(
                    p.containerd_ttrpc_address,
                    "/run/containerd/containerd.sock.ttrpc"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bootstrap_reply_is_protobuf_result_version_3() {
        let input = Input::Bootstrap(Box::new(params("c1", "default")));
        let f = reply_format(&input);
        assert_eq!(f, Reply::Bootstrap);
        let bytes = format_reply(f, "unix:///run/containerd/s/abc").unwrap();
        let r = BootstrapResult::parse_from_bytes(&bytes).unwrap();
        assert_eq!(r.version, 3);
        assert_eq!(r.address, "unix:///run/containerd/s/abc");
        assert_eq!(r.protocol, "ttrpc");
    }

    #[test]
    fn legacy_callers_get_the_plain_address() {
        let opts = Input::Options(None);
        assert_eq!(reply_format(&opts), Reply::Plain);
        assert_eq!(
            format_reply(Reply::Plain, "unix:///x").unwrap(),
            b"unix:///x"
        );
    }

    #[test]
    fn grouping_by_annotation() {
        let cfg = br#"{"annotations":{"io.kubernetes.cri.sandbox-id":"pod1"}}"#;
        assert_eq!(group_id(cfg, "c1").unwrap(), "pod1");
        let cfg = br#"{"annotations":{"io.containerd.runc.v2.group":"g"}}"#;
        assert_eq!(group_id(cfg, "c1").unwrap(), "g");
        assert_eq!(group_id(b"{}", "c1").unwrap(), "c1");
        let bad = br#"{"annotations":{"io.kubernetes.cri.sandbox-id":"../etc"}}"#;
        assert!(
            group_id(bad, "c1")
                .unwrap_err()
                .to_string()
                .contains("../etc")
        );
    }

    #[test]
    fn socket_name_matches_containerd() {
        // sha256("/run/containerd/containerd.sock/default/c1"), as containerd's
        // shim.SocketAddress computes it.
        let p = socket_path(
            Path::new(SOCKET_DIR),
            "/run/containerd/containerd.sock",
            "default",
            "c1",
        );
        let expect = hex::encode(Sha256::digest(
            b"/run/containerd/containerd.sock/default/c1",
        ));
        assert_eq!(p, Path::new(SOCKET_DIR).join(expect));
    }
}
