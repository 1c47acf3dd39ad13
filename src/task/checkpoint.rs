//! Checkpoint through CRIU: what containerd asks for (runc's `CheckpointOptions`), and
//! whether this host's CRIU can do it at all. CRIU that fails its own `criu check` (as
//! Debian 12's 3.17 does on newer kernels: "Unexpected rt vDSO area bounds") would fail deep
//! inside a dump with a confusing message; we ask it first and pass its own words on.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use tokio::io::unix::AsyncFd;

use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::shim::oci::CheckpointOptions;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What one checkpoint should do, decoded from the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointSpec {
    pub image_path: PathBuf,
    pub work_path: Option<PathBuf>,
    /// `false` when the client asked for `--exit`.
    pub leave_running: bool,
    pub tcp_established: bool,
    pub ext_unix_sk: bool,
    pub file_locks: bool,
    pub shell_job: bool,
    /// runc's `--manage-cgroups-mode`: soft (default), full, strict or ignore.
    pub cgroups_mode: String,
}

/// Where a restore finds its checkpoint (CreateTaskRequest's `checkpoint` and
/// `parent_checkpoint`, the runtime options' CriuWorkPath), as runc-v2 passes them to
/// `runc restore`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreImage {
    pub image_path: PathBuf,
    pub work_path: Option<PathBuf>,
    pub parent_path: Option<PathBuf>,
}

/// Checks a Create's checkpoint fields: absolute paths (containerd unpacks the image into
/// a directory of its own, or CRI names one).
pub fn restore_image(
    checkpoint: &str,
    parent: &str,
    work_path: Option<PathBuf>,
) -> Result<RestoreImage> {
    for (what, p) in [("checkpoint", checkpoint), ("parent checkpoint", parent)] {
        if !p.is_empty() && !p.starts_with('/') {
            return Err(Error::InvalidArgument(format!(
                "{what} path {p:?} must be an absolute path"
            )));
        }
    }
    if checkpoint.is_empty() {
        return Err(Error::InvalidArgument("empty checkpoint path".into()));
    }
    Ok(RestoreImage {
        image_path: PathBuf::from(checkpoint),
        work_path,
        parent_path: (!parent.is_empty()).then(|| PathBuf::from(parent)),
    })
}

const RUNC_CHECKPOINT_OPTIONS: &str = "containerd.runc.v1.CheckpointOptions";

/// `path` is the request's image directory; `options` runc's CheckpointOptions, if any.
pub fn decode(path: &str, options: Option<&Any>) -> Result<CheckpointSpec> {
    decode_with(path, options, &CriuDefaults::default())
}

/// The runtime options' CriuImagePath and CriuWorkPath: where a checkpoint goes, and where
/// CRIU works and logs, when the request does not say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CriuDefaults {
    pub image_path: Option<PathBuf>,
    pub work_path: Option<PathBuf>,
}

/// `decode`, with the container's runtime options filling in what the request leaves out.
pub fn decode_with(
    path: &str,
    options: Option<&Any>,
    defaults: &CriuDefaults,
) -> Result<CheckpointSpec> {
    let opts = match options {
        Some(a) if !a.value.is_empty() || !a.type_url.is_empty() => {
            let name = a.type_url.rsplit('/').next().unwrap_or(&a.type_url);
            if name != RUNC_CHECKPOINT_OPTIONS {
                return Err(Error::InvalidArgument(format!(
                    "checkpoint options of type {:?}: only {RUNC_CHECKPOINT_OPTIONS} is understood",
                    a.type_url
                )));
            }
            CheckpointOptions::parse_from_bytes(&a.value).map_err(|e| {
                Error::InvalidArgument(format!("checkpoint options do not decode: {e}"))
            })?
        }
        _ => CheckpointOptions::new(),
    };
    let fallback = defaults
        .image_path
        .as_deref()
        .and_then(|p| p.to_str())
        .unwrap_or("");
    let image = [opts.image_path.as_str(), path, fallback]
        .into_iter()
        .find(|p| !p.is_empty())
        .unwrap_or("");
    if image.is_empty() || !image.starts_with('/') {
        return Err(Error::InvalidArgument(format!(
            "checkpoint image path {image:?} must be an absolute path"
        )));
    }
    Ok(CheckpointSpec {
        image_path: PathBuf::from(image),
        work_path: (!opts.work_path.is_empty())
            .then(|| PathBuf::from(&opts.work_path))
            .or_else(|| defaults.work_path.clone()),
        leave_running: !opts.exit,
        tcp_established: opts.open_tcp,
        ext_unix_sk: opts.external_unix_sockets,
        file_locks: opts.file_locks,
        shell_job: opts.terminal,
        cgroups_mode: match opts.cgroups_mode.as_str() {
            "" => "soft".to_string(),
            m @ ("soft" | "full" | "strict" | "ignore") => m.to_string(),
            other => {
                return Err(Error::InvalidArgument(format!(
                    "checkpoint cgroups mode {other:?}: use soft, full, strict or ignore"
                )));
            }
        },
    })
}

/// Runs `criu check`; an error says what CRIU itself reported. CRIU's output is read on the
/// daemon's own thread (it must stay single-threaded, see `forker`); its exit is collected
/// by the daemon's reaper, so the verdict is CRIU's own success line.
pub async fn criu_ready(what: &str) -> Result<()> {
    let child = Command::new("criu")
        .arg("check")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::FailedPrecondition(format!(
                "{what} needs CRIU, and no `criu` binary is on the shim's PATH"
            )));
        }
        Err(e) => return Err(Error::io("run criu check", e)),
    };
    let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(Error::Internal("criu check: no output pipes".into()));
    };
    let read = async { tokio::try_join!(read_all(out.into()), read_all(err.into())) };
    let (stdout, stderr) = tokio::time::timeout(CRIU_CHECK_WAIT, read)
        .await
        .map_err(|_| {
            Error::FailedPrecondition(format!(
                "{what} needs CRIU, and `criu check` did not finish within {CRIU_CHECK_WAIT:?}"
            ))
        })??;
    if String::from_utf8_lossy(&stdout).contains(CRIU_OK) {
        return Ok(());
    }
    Err(Error::FailedPrecondition(format!(
        "{what} needs CRIU, and `criu check` fails on this host: {}",
        criu_problem(&stdout, &stderr)
    )))
}

/// What `criu check` prints when the host supports checkpointing.
const CRIU_OK: &str = "Looks good";
const CRIU_CHECK_WAIT: Duration = Duration::from_secs(30);

struct Owned(OwnedFd);

impl AsRawFd for Owned {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

async fn read_all(fd: OwnedFd) -> Result<Vec<u8>> {
    let flags = OFlag::from_bits_truncate(fcntl(&fd, FcntlArg::F_GETFL)?);
    fcntl(&fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    // SAFETY: the AsyncFd owns the fd until it is dropped.
    let afd = unsafe { AsyncFd::register(Owned(fd)) }
        .map_err(|e| Error::io("register criu output", e.into_parts().1))?;
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let mut ready = afd
            .readable()
            .await
            .map_err(|e| Error::io("criu output", e))?;
        match nix::unistd::read(&afd.get_ref().0, &mut chunk) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(Errno::EAGAIN) => ready.clear_ready(),
            Err(e) => return Err(Error::io("read criu output", e)),
        }
    }
}

/// CRIU's own error lines, most specific first, bounded.
fn criu_problem(stdout: &[u8], stderr: &[u8]) -> String {
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(stderr),
        String::from_utf8_lossy(stdout)
    );
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let errors: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("Error") || l.contains("rror"))
        .collect();
    let chosen = if errors.is_empty() { lines } else { errors };
    let mut s = chosen.into_iter().take(6).collect::<Vec<_>>().join("; ");
    if s.is_empty() {
        s = "no output".into();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(o: &CheckpointOptions) -> Any {
        let mut a = Any::new();
        a.type_url = format!("type.googleapis.com/{RUNC_CHECKPOINT_OPTIONS}");
        a.value = o.write_to_bytes().unwrap();
        a
    }

    #[test]
    fn options_map_onto_criu_settings() {
        let plain = decode("/var/lib/cp/1", None).unwrap();
        assert_eq!(plain.image_path, PathBuf::from("/var/lib/cp/1"));
        assert!(plain.leave_running && !plain.tcp_established && plain.work_path.is_none());

        let mut o = CheckpointOptions::new();
        o.exit = true;
        o.open_tcp = true;
        o.external_unix_sockets = true;
        o.file_locks = true;
        o.terminal = true;
        o.work_path = "/tmp/work".into();
        let s = decode("/var/lib/cp/2", Some(&any(&o))).unwrap();
        assert_eq!(
            s,
            CheckpointSpec {
                image_path: "/var/lib/cp/2".into(),
                work_path: Some("/tmp/work".into()),
                leave_running: false,
                tcp_established: true,
                ext_unix_sk: true,
                file_locks: true,
                shell_job: true,
                cgroups_mode: "soft".into(),
            }
        );
        o.image_path = "/elsewhere".into();
        assert_eq!(
            decode("/var/lib/cp/2", Some(&any(&o))).unwrap().image_path,
            PathBuf::from("/elsewhere")
        );
    }

    #[test]
    fn bad_paths_and_option_types_are_refused() {
        assert_eq!(
            decode("relative", None).unwrap_err().code(),
            ttrpc::Code::INVALID_ARGUMENT
        );
        assert_eq!(
            decode("", None).unwrap_err().code(),
            ttrpc::Code::INVALID_ARGUMENT
        );
        let mut a = Any::new();
        a.type_url = "example.com/Other".into();
        a.value = vec![1];
        let e = decode("/cp", Some(&a)).unwrap_err();
        assert!(e.to_string().contains("example.com/Other"), "{e}");
    }

    #[test]
    fn criu_errors_are_picked_out() {
        let out = b"Warn (criu/kerndat.c:1): something\n\
                    Error (criu/vdso.c:381): vdso: Unexpected rt vDSO area bounds\n\
                    Error (criu/crtools.c:260): Could not initialize kernel features detection.\n";
        let p = criu_problem(b"", out);
        assert!(p.starts_with("Error (criu/vdso.c:381)"), "{p}");
        assert!(p.contains("Could not initialize"), "{p}");
        assert!(!p.contains("Warn"), "{p}");
        assert_eq!(criu_problem(b"", b""), "no output");
    }

    #[test]
    fn runtime_options_fill_in_what_the_request_leaves_out() {
        let defaults = CriuDefaults {
            image_path: Some("/var/ckpt".into()),
            work_path: Some("/var/ckpt-work".into()),
        };
        let s = decode_with("", None, &defaults).unwrap();
        assert_eq!(s.image_path, PathBuf::from("/var/ckpt"));
        assert_eq!(s.work_path, Some(PathBuf::from("/var/ckpt-work")));
        // The request's own paths win.
        let mut o = CheckpointOptions::new();
        o.work_path = "/w".into();
        let s = decode_with("/var/lib/cp/3", Some(&any(&o)), &defaults).unwrap();
        assert_eq!(s.image_path, PathBuf::from("/var/lib/cp/3"));
        assert_eq!(s.work_path, Some(PathBuf::from("/w")));
    }
}
