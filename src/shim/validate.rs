//! Checks on every request before it reaches the pod: whoever can reach the shim's socket
//! is not necessarily containerd, and what containerd passes on comes from its own clients.
//! A request that fails here gets InvalidArgument naming the bad value (shortened when long,
//! so a 4 MiB field does not come back as a 4 MiB error) and changes nothing.
//!
//! What is checked where: IDs here (before any lookup, so an ID that could never exist is
//! told apart from one that does not), paths that must be absolute, JSON that must parse
//! (process specs, resources) and resource keys that become file names under the
//! container's cgroup. Stdio paths are checked where they are opened (`stdio`), config
//! files where they are read (`options`).

use containerd_shim_protos::api::{CreateTaskRequest, ExecProcessRequest};
use libcontainer::oci_spec::runtime::{LinuxResources, Process};

use crate::error::{Error, Result, preview, redact_quoted};
use crate::ids::validate_id;
use crate::task::checkpoint::CheckpointSpec;

/// Longest path we accept: the kernel's PATH_MAX, NUL included.
const PATH_MAX: usize = 4096;

/// An absolute path without NUL bytes that fits in PATH_MAX.
pub fn absolute_path(what: &str, p: &str) -> Result<()> {
    if p.starts_with('/') && !p.contains('\0') && p.len() < PATH_MAX {
        return Ok(());
    }
    Err(Error::InvalidArgument(format!(
        "{what} {:?} must be an absolute path (no NUL, shorter than {PATH_MAX} bytes)",
        preview(p)
    )))
}

/// An exec ID where one may be given: empty (the init) or a valid ID.
pub fn optional_id(exec_id: &str) -> Result<()> {
    if exec_id.is_empty() {
        Ok(())
    } else {
        validate_id(exec_id)
    }
}

/// The container ID and, if any, exec ID of a request that names an existing process.
pub fn ids(id: &str, exec_id: &str) -> Result<()> {
    validate_id(id)?;
    optional_id(exec_id)
}

fn no_nul(what: &str, s: &str) -> Result<()> {
    if s.contains('\0') {
        return Err(Error::InvalidArgument(format!(
            "{what} {:?} contains a NUL byte",
            preview(s)
        )));
    }
    Ok(())
}

/// The three stdio URIs: no NUL, no longer than a path can be. What each must name is
/// checked when it is opened (`stdio`): there a FIFO must be a FIFO and a file a file.
pub fn stdio(stdin: &str, stdout: &str, stderr: &str) -> Result<()> {
    for (which, uri) in [("stdin", stdin), ("stdout", stdout), ("stderr", stderr)] {
        if uri.len() >= PATH_MAX || uri.contains('\0') {
            return Err(Error::InvalidArgument(format!(
                "{which} {:?}: not a stdio path or URI (NUL byte, or {} bytes: at most {})",
                preview(uri),
                uri.len(),
                PATH_MAX - 1
            )));
        }
    }
    Ok(())
}

/// Create: the ID, an absolute bundle, mounts the kernel can take, an absolute checkpoint.
pub fn create(req: &CreateTaskRequest) -> Result<()> {
    validate_id(&req.id)?;
    stdio(&req.stdin, &req.stdout, &req.stderr)?;
    // The shim's own working directory is the bundle when containerd starts it; a
    // relative bundle would silently mean something else in the daemon.
    absolute_path("bundle", &req.bundle)?;
    if !req.checkpoint.is_empty() {
        absolute_path("checkpoint", &req.checkpoint)?;
    }
    if !req.parent_checkpoint.is_empty() {
        absolute_path("parent checkpoint", &req.parent_checkpoint)?;
    }
    for m in &req.rootfs {
        no_nul("rootfs mount type", &m.type_)?;
        no_nul("rootfs mount source", &m.source)?;
        no_nul("rootfs mount target", &m.target)?;
        for o in &m.options {
            no_nul("rootfs mount option", o)?;
        }
    }
    Ok(())
}

/// Exec: the IDs, and a process spec that parses as the OCI Process libcontainer will
/// run (parsing the same type the worker does, so nothing fails later at Start that could
/// have been refused now). The spec is never quoted: its environment may hold secrets.
pub fn exec(req: &ExecProcessRequest) -> Result<Vec<u8>> {
    validate_id(&req.id)?;
    validate_id(&req.exec_id)?;
    stdio(&req.stdin, &req.stdout, &req.stderr)?;
    let spec = req.spec.as_ref().ok_or_else(|| {
        Error::InvalidArgument(format!("exec {:?}: no process spec", req.exec_id))
    })?;
    serde_json::from_slice::<Process>(&spec.value).map_err(|e| {
        Error::InvalidArgument(format!(
            "exec {:?}: process spec ({} bytes) is not an OCI Process: {}",
            req.exec_id,
            spec.value.len(),
            redact_quoted(&e.to_string())
        ))
    })?;
    Ok(spec.value.clone())
}

/// Kill: a signal the kernel knows (1–64; 0 only probes and is refused, as by runc).
pub fn signal(signal: u32) -> Result<()> {
    if (1..=64).contains(&signal) {
        return Ok(());
    }
    Err(Error::InvalidArgument(format!(
        "invalid signal {signal} (want 1-64)"
    )))
}

/// Update: an OCI LinuxResources whose `unified` keys are plain cgroup file names.
/// libcontainer joins each key onto the container's cgroup directory and writes the value
/// there as root; `../../x` or `/proc/sys/...` would write any file on the host (runc
/// refuses keys with a slash for the same reason).
pub fn resources(id: &str, json: &[u8]) -> Result<LinuxResources> {
    let r: LinuxResources = serde_json::from_slice(json).map_err(|e| {
        Error::InvalidArgument(format!(
            "update {id:?}: resources ({} bytes: {:?}) are not an OCI LinuxResources: {}",
            json.len(),
            preview(&String::from_utf8_lossy(json)),
            preview(&e.to_string())
        ))
    })?;
    if let Some(unified) = r.unified() {
        for (key, value) in unified {
            unified_key(id, key)?;
            no_nul("unified cgroup value", value)?;
        }
    }
    Ok(r)
}

/// The part of a bundle's config.json checked before libcontainer sees it.
#[derive(serde::Deserialize, Default)]
struct BundleConfig {
    #[serde(default)]
    linux: Option<BundleLinux>,
}

#[derive(serde::Deserialize, Default)]
struct BundleLinux {
    #[serde(default)]
    resources: Option<BundleResources>,
}

#[derive(serde::Deserialize, Default)]
struct BundleResources {
    #[serde(default)]
    unified: Option<std::collections::HashMap<String, String>>,
}

/// Largest config.json we read here (libcontainer reads it again, unbounded, but only
/// once this check passed).
pub(crate) const MAX_CONFIG_JSON: u64 = 16 << 20;

/// Create: the bundle's `linux.resources.unified` keys, which libcontainer writes at
/// Create exactly as Update's (see `resources`). A missing or unreadable config.json is
/// left for libcontainer to report as it always has.
pub fn bundle_config(id: &str, bundle: &str) -> Result<()> {
    let path = format!("{}/config.json", bundle.trim_end_matches('/'));
    let Ok(bytes) = crate::safe_open::read_regular("bundle config", &path, MAX_CONFIG_JSON) else {
        return Ok(());
    };
    let Ok(cfg) = serde_json::from_slice::<BundleConfig>(&bytes) else {
        return Ok(());
    };
    let unified = cfg.linux.and_then(|l| l.resources).and_then(|r| r.unified);
    for key in unified.unwrap_or_default().keys() {
        unified_key(id, key)?;
    }
    Ok(())
}

fn unified_key(id: &str, key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && key != "."
        && key != ".."
        && !key.contains(['/', '\0'])
        && key.len() <= 255;
    if ok {
        return Ok(());
    }
    Err(Error::InvalidArgument(format!(
        "container {id:?}: unified cgroup key {:?} must be a file name (no slash)",
        preview(key)
    )))
}

/// Checkpoint: CRIU's work directory, like its image directory, must be absolute (CRIU
/// would resolve a relative one against the shim's working directory).
pub fn checkpoint(spec: &CheckpointSpec) -> Result<()> {
    if let Some(w) = &spec.work_path {
        absolute_path("checkpoint work path", &w.to_string_lossy())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim_protos::protobuf::well_known_types::any::Any;

    #[test]
    fn long_values_are_shortened() {
        let long = "é".repeat(1000);
        let p = preview(&long);
        assert!(p.len() < 200, "{p}");
        assert!(p.contains("2000 bytes"), "{p}");
        assert_eq!(preview("short"), "short");
    }

    #[test]
    fn relative_or_nul_bundles_are_refused() {
        for bad in ["rel/bundle", "", "/a\0b", &format!("/{}", "x".repeat(5000))] {
            let mut req = CreateTaskRequest::new();
            req.id = "c1".into();
            req.bundle = bad.into();
            let e = create(&req).unwrap_err();
            assert_eq!(e.code(), ttrpc::Code::INVALID_ARGUMENT);
            assert!(e.to_string().contains("bundle"), "{e}");
        }
        let mut req = CreateTaskRequest::new();
        req.id = "c1".into();
        req.bundle = "/run/b".into();
        assert!(create(&req).is_ok());
        req.checkpoint = "relative/cp".into();
        assert!(
            create(&req)
                .unwrap_err()
                .to_string()
                .contains("relative/cp")
        );
    }

    #[test]
    fn exec_spec_must_be_a_process() {
        let mut req = ExecProcessRequest::new();
        req.id = "c1".into();
        req.exec_id = "e1".into();
        assert!(exec(&req).is_err());
        for bad in [
            &b"not json"[..],
            b"[]",
            b"{\"args\": 5, \"cwd\": \"/\"}",
            b"\xff\xfe",
        ] {
            let mut any = Any::new();
            any.value = bad.to_vec();
            req.spec = Some(any).into();
            let e = exec(&req).unwrap_err();
            assert_eq!(e.code(), ttrpc::Code::INVALID_ARGUMENT, "{e}");
            assert!(e.to_string().contains("\"e1\""), "{e}");
        }
        let mut any = Any::new();
        any.value =
            br#"{"args":["sh"],"cwd":"/","env":["SECRET=hunter2"],"user":{"uid":0,"gid":0}}"#
                .to_vec();
        req.spec = Some(any).into();
        assert!(exec(&req).is_ok());
    }

    #[test]
    fn an_exec_spec_error_never_quotes_the_environment() {
        let mut req = ExecProcessRequest::new();
        req.id = "c1".into();
        req.exec_id = "e1".into();
        let mut any = Any::new();
        any.value = br#"{"args":["sh"],"cwd":"/","env":"SECRET=hunter2"}"#.to_vec();
        req.spec = Some(any).into();
        let e = exec(&req).unwrap_err().to_string();
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn signals() {
        for ok in [1, 9, 15, 64] {
            assert!(signal(ok).is_ok());
        }
        for bad in [0, 65, u32::MAX, (-9i32) as u32] {
            let e = signal(bad).unwrap_err();
            assert_eq!(e.code(), ttrpc::Code::INVALID_ARGUMENT);
            assert!(e.to_string().contains(&bad.to_string()), "{e}");
        }
    }

    #[test]
    fn unified_keys_cannot_leave_the_cgroup() {
        for bad in [
            r#"{"unified":{"../../../../proc/sys/kernel/core_pattern":"|/x"}}"#,
            r#"{"unified":{"/etc/passwd":"x"}}"#,
            r#"{"unified":{"..":"x"}}"#,
            r#"{"unified":{"":"x"}}"#,
            r#"{"unified":{"memory.max":"1\u0000"}}"#,
        ] {
            let e = resources("c1", bad.as_bytes()).unwrap_err();
            assert_eq!(e.code(), ttrpc::Code::INVALID_ARGUMENT, "{bad}: {e}");
        }
        assert!(resources("c1", br#"{"unified":{"memory.high":"max"}}"#).is_ok());
        assert!(resources("c1", br#"{"memory":{"limit":1048576}}"#).is_ok());
    }

    #[test]
    fn bad_resource_json_is_named_but_not_echoed_whole() {
        let big = format!("{{\"cpu\": \"{}\"}}", "x".repeat(100_000));
        let e = resources("c1", big.as_bytes()).unwrap_err().to_string();
        assert!(e.len() < 1000, "{}", e.len());
        assert!(e.contains("\"c1\""), "{e}");
    }

    #[test]
    fn a_bundle_cannot_name_files_outside_its_cgroup() {
        let d = std::env::temp_dir().join(format!("ysm-validate-b-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let b = d.to_str().unwrap();
        assert!(bundle_config("c1", "/nonexistent").is_ok());
        std::fs::write(
            d.join("config.json"),
            r#"{"linux":{"resources":{"unified":{"memory.high":"max"}}}}"#,
        )
        .unwrap();
        assert!(bundle_config("c1", b).is_ok());
        std::fs::write(
            d.join("config.json"),
            r#"{"linux":{"resources":{"unified":{"../../../etc/x":"1"}}}}"#,
        )
        .unwrap();
        let e = bundle_config("c1", b).unwrap_err();
        assert_eq!(e.code(), ttrpc::Code::INVALID_ARGUMENT);
        assert!(e.to_string().contains("../../../etc/x"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn relative_checkpoint_work_path() {
        let spec = CheckpointSpec {
            image_path: "/cp".into(),
            work_path: Some("work".into()),
            leave_running: true,
            tcp_established: false,
            ext_unix_sk: false,
            file_locks: false,
            shell_job: false,
            cgroups_mode: "soft".into(),
        };
        let e = checkpoint(&spec).unwrap_err();
        assert_eq!(e.code(), ttrpc::Code::INVALID_ARGUMENT);
        assert!(e.to_string().contains("work"), "{e}");
    }
}
