//! The pod's /etc/hostname, /etc/hosts, /etc/resolv.conf and /dev/shm, for a pod whose
//! sandbox this shim serves (sandboxer = "shim").
//!
//! With the podsandbox sandboxer containerd's CRI writes these files per pod
//! (internal/cri/server/podsandbox/sandbox_run_linux.go, setupSandboxFiles) and mounts
//! them into every container of the pod (internal/cri/server/container_create.go,
//! linuxContainerMounts). For a shim sandboxer containerd 2.x leaves the files to the
//! sandbox controller: it mounts them only if they exist in its own sandbox directory,
//! which nothing fills. Without this module a container of such a pod would get its
//! image's resolv.conf (no cluster DNS), hosts and hostname, and no /dev/shm shared with
//! its siblings. So the shim writes them in the sandbox's bundle on CreateSandbox and
//! adds CRI's bind mounts to each sibling's spec on its Task Create.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use serde_json::{Value, json};

use super::config::{DnsConfig, Mode, PodConfig};
use crate::error::{Error, Result};

const HOSTNAME: &str = "hostname";
const HOSTS: &str = "hosts";
const RESOLV: &str = "resolv.conf";
const SHM: &str = "shm";
/// CRI's default size of a pod's /dev/shm (defaultShmSize).
const SHM_SIZE: u64 = 64 * 1024 * 1024;

/// What a sibling's Task Create takes from the pod's sandbox, when this shim made it.
#[derive(Clone, Debug)]
pub struct PodSandbox {
    pub id: String,
    /// The directory that holds the pod's files (the sandbox's bundle).
    pub dir: PathBuf,
    /// The pause container's cgroup driver (systemd for a `.slice` cgroup parent).
    /// containerd names every sibling's cgroup from the same parent the same way
    /// (getCgroupsPath), so a sibling whose runtime options do not say follows it.
    pub systemd_cgroup: bool,
}

/// Set by CreateSandbox, read by the Task service's Create, cleared by ShutdownSandbox.
pub type Published = Arc<Mutex<Option<PodSandbox>>>;

pub fn published(p: &Published) -> Option<PodSandbox> {
    p.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

pub fn publish(p: &Published, v: Option<PodSandbox>) {
    *p.lock().unwrap_or_else(|e| e.into_inner()) = v;
}

/// resolv.conf from a pod's DNSConfig, in CRI's format (parseDNSOptions).
pub fn resolv_conf(dns: &DnsConfig) -> String {
    let mut s = String::new();
    if !dns.searches.is_empty() {
        s += &format!("search {}\n", dns.searches.join(" "));
    }
    for server in &dns.servers {
        s += &format!("nameserver {server}\n");
    }
    if !dns.options.is_empty() {
        s += &format!("options {}\n", dns.options.join(" "));
    }
    s
}

fn write_0644(path: &Path, bytes: &[u8]) -> Result<()> {
    let what = || format!("write {}", path.display());
    std::fs::write(path, bytes).map_err(|e| Error::io(what(), e))?;
    // As CRI's files: 0644 whatever the shim's umask.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
        .map_err(|e| Error::io(what(), e))
}

fn copy_0644(from: &str, to: &Path) -> Result<()> {
    let bytes = std::fs::read(from).map_err(|e| Error::io(format!("read {from}"), e))?;
    write_0644(to, &bytes)
}

/// Writes the pod's files in `dir` (the sandbox's bundle), as CRI does for a podsandbox
/// pod: hostname (the pod's, else the node's), a copy of the node's /etc/hosts, the
/// resolv.conf of the pod's DNSConfig (a copy of the node's when it has none), and a pod
/// /dev/shm (tmpfs) unless the pod uses the node's IPC namespace. On failure the caller
/// calls `teardown` and removes `dir`.
pub fn setup(dir: &Path, pod: &PodConfig) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    let hostname = if pod.hostname.is_empty() {
        nix::unistd::gethostname()
            .map_err(|e| Error::Runtime(format!("the node's hostname: {e}")))?
            .to_string_lossy()
            .into_owned()
    } else {
        pod.hostname.clone()
    };
    write_0644(&dir.join(HOSTNAME), format!("{hostname}\n").as_bytes())?;
    copy_0644("/etc/hosts", &dir.join(HOSTS))?;
    match &pod.dns {
        Some(dns) => write_0644(&dir.join(RESOLV), resolv_conf(dns).as_bytes())?,
        // No DNSConfig at all means the node's, as CRI reads it.
        None => copy_0644("/etc/resolv.conf", &dir.join(RESOLV))?,
    }
    if pod.ipc != Mode::Node {
        let shm = dir.join(SHM);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&shm)
            .map_err(|e| Error::io(format!("create {}", shm.display()), e))?;
        mount(
            Some("shm"),
            &shm,
            Some("tmpfs"),
            MsFlags::MS_NOEXEC | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(format!("mode=1777,size={SHM_SIZE}").as_str()),
        )
        .map_err(|e| {
            Error::Runtime(format!(
                "mount the pod's /dev/shm at {}: {e}",
                shm.display()
            ))
        })?;
    }
    Ok(())
}

/// Unmounts the pod's /dev/shm in `dir`, if mounted (as CRI's cleanupSandboxFiles at
/// StopPodSandbox). Idempotent; the directory itself is removed with the bundle.
pub fn teardown(dir: &Path) {
    let shm = dir.join(SHM);
    match umount2(&shm, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => log::warn!("unmount {}: {e}", shm.display()),
    }
}

/// Unmounts the pod's /dev/shm and removes the sandbox's bundle `dir` (files included).
pub fn remove(dir: &Path) -> std::io::Result<()> {
    teardown(dir);
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// containerd's default /dev/shm mount (oci.defaultMounts), which CRI's own mount replaces.
fn is_default_shm(m: &Value) -> bool {
    m["type"] == "tmpfs" && m["source"] == "shm"
}

fn clean(dest: &str) -> &str {
    match dest.trim_end_matches('/') {
        "" => "/",
        d => d,
    }
}

/// Adds the pod's files to a sibling container's spec, as CRI's linuxContainerMounts
/// does for a podsandbox pod: /etc/hostname, /etc/hosts and /etc/resolv.conf read-only
/// when the container's root is, /dev/shm read-write; each only if the spec mounts
/// nothing of its own there (the container's CRI mounts) and its file exists. Says
/// whether the spec changed.
pub fn add_mounts(spec: &mut Value, dir: &Path) -> Result<bool> {
    let ro = spec["root"]["readonly"].as_bool().unwrap_or(false);
    let wanted = [
        ("/etc/hostname", HOSTNAME, ro),
        ("/etc/hosts", HOSTS, ro),
        ("/etc/resolv.conf", RESOLV, ro),
        ("/dev/shm", SHM, false),
    ];
    let obj = spec
        .as_object_mut()
        .ok_or_else(|| Error::InvalidArgument("bundle config.json is not an object".into()))?;
    let mounts = obj
        .entry("mounts")
        .or_insert_with(|| Value::Array(Vec::new()));
    let Some(mounts) = mounts.as_array_mut() else {
        return Err(Error::InvalidArgument(
            "bundle config.json: mounts is not a list".into(),
        ));
    };
    let mut changed = false;
    for (dest, file, ro) in wanted {
        let source = dir.join(file);
        if !source.exists() {
            continue;
        }
        let ours = json!({
            "destination": dest,
            "type": "bind",
            "source": source,
            "options": ["rbind", "rprivate", if ro { "ro" } else { "rw" }],
        });
        let at = mounts
            .iter()
            .position(|m| m["destination"].as_str().map(clean) == Some(dest));
        match at {
            None => mounts.push(ours),
            // CRI drops the default /dev/shm for its own.
            Some(i) if dest == "/dev/shm" && is_default_shm(&mounts[i]) => mounts[i] = ours,
            // The container's own mount there wins, as with CRI.
            Some(_) => continue,
        }
        changed = true;
    }
    Ok(changed)
}

/// CRI's annotation naming a container's pod.
const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";

/// Rewrites `<bundle>/config.json` with the pod's files mounted, if it is the spec of a
/// container of sandbox `sandbox_id` (its CRI annotation says so).
pub fn add_to_bundle(bundle: &Path, sandbox_id: &str, dir: &Path) -> Result<()> {
    let path = bundle.join("config.json");
    // On the daemon's one thread: a regular file only, bounded, as validate::bundle_config.
    let bytes = crate::safe_open::read_regular(
        "bundle config",
        &path.to_string_lossy(),
        crate::shim::validate::MAX_CONFIG_JSON,
    )?;
    let mut spec: Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::InvalidArgument(format!("{}: {e}", path.display())))?;
    if spec["annotations"][SANDBOX_ID].as_str() != Some(sandbox_id) {
        return Ok(());
    }
    if !add_mounts(&mut spec, dir)? {
        return Ok(());
    }
    let out = serde_json::to_vec(&spec)
        .map_err(|e| Error::Internal(format!("encode {}: {e}", path.display())))?;
    let tmp = bundle.join(".config.json.podfiles");
    std::fs::write(&tmp, out).map_err(|e| Error::io(format!("write {}", tmp.display()), e))?;
    if let Ok(meta) = std::fs::metadata(&path) {
        let _ = std::fs::set_permissions(&tmp, meta.permissions());
    }
    std::fs::rename(&tmp, &path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(format!("replace {}", path.display()), e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_is_cris() {
        let dns = DnsConfig {
            servers: vec!["10.0.0.10".into(), "10.0.0.11".into()],
            searches: vec!["a.svc".into(), "svc".into()],
            options: vec!["ndots:5".into(), "edns0".into()],
        };
        assert_eq!(
            resolv_conf(&dns),
            "search a.svc svc\nnameserver 10.0.0.10\nnameserver 10.0.0.11\noptions ndots:5 edns0\n"
        );
        assert_eq!(resolv_conf(&DnsConfig::default()), "");
    }

    #[test]
    fn mounts_follow_cris_rules() {
        let dir = std::env::temp_dir().join(format!("podfiles-unit-{}", std::process::id()));
        std::fs::create_dir_all(dir.join(SHM)).unwrap();
        for f in [HOSTNAME, HOSTS, RESOLV] {
            std::fs::write(dir.join(f), "x").unwrap();
        }
        let mut spec = json!({
            "root": {"path": "rootfs", "readonly": true},
            "mounts": [
                {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": []},
                {"destination": "/etc/hosts/", "type": "bind", "source": "/mine", "options": []},
            ],
        });
        assert!(add_mounts(&mut spec, &dir).unwrap());
        let m = spec["mounts"].as_array().unwrap();
        let find = |d: &str| {
            m.iter()
                .filter(|x| x["destination"] == d)
                .collect::<Vec<_>>()
        };
        assert_eq!(find("/dev/shm").len(), 1);
        assert_eq!(find("/dev/shm")[0]["source"], json!(dir.join(SHM)));
        assert_eq!(find("/dev/shm")[0]["options"][2], "rw");
        assert_eq!(find("/etc/hosts/")[0]["source"], "/mine");
        assert!(find("/etc/hosts").is_empty());
        assert_eq!(find("/etc/resolv.conf")[0]["options"][2], "ro");
        assert_eq!(find("/etc/hostname")[0]["type"], "bind");
        // Twice changes nothing.
        assert!(!add_mounts(&mut spec, &dir).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
