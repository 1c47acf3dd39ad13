//! hostPath volumes with mount propagation, through CRI the way kubelet asks for them
//! (what critest's `[Container Mount Propagation]` checks): a container with a Bidirectional
//! (`rshared`) or HostToContainer (`rslave`) volume starts, and mounts cross between host and
//! container in exactly the directions Kubernetes promises. Each case runs under youki and,
//! as the reference, under runc. `linux.rootfsPropagation` is also checked through ctr.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::kubelet::*;
use k8s_cri::v1::MountPropagation;
use nix::mount::{MntFlags, MsFlags, mount, umount2};

/// Where the volume appears in the container.
const VOLUME: &str = "/mnt/vol";
const TIMEOUT: Duration = Duration::from_secs(20);

/// The host side of the volume: a directory bind-mounted onto itself and made shared,
/// as CRI requires of a Bidirectional source (and accepts for the others). A shared
/// source is also the hardest case for Private: anything the runtime forgets to make
/// private propagates. Dropping it unmounts everything under it and removes it.
struct HostDir {
    path: PathBuf,
}

impl HostDir {
    fn new(tag: &str) -> HostDir {
        let path = std::env::temp_dir().join(format!("youki-mp-{tag}-{}", std::process::id()));
        let _ = umount2(&path, MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        mount(
            Some(&path),
            &path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap_or_else(|e| panic!("bind {} onto itself: {e}", path.display()));
        mount(
            None::<&str>,
            &path,
            None::<&str>,
            MsFlags::MS_SHARED,
            None::<&str>,
        )
        .unwrap_or_else(|e| panic!("make {} shared: {e}", path.display()));
        HostDir { path }
    }
}

impl Drop for HostDir {
    fn drop(&mut self) {
        for sub in ["from-host", "from-ctr"] {
            while umount2(&self.path.join(sub), MntFlags::MNT_DETACH).is_ok() {}
        }
        while umount2(&self.path, MntFlags::MNT_DETACH).is_ok() {}
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A tmpfs at `dir` holding a file `marker`.
fn mount_tmpfs_with_marker(dir: &Path, marker: &str) {
    std::fs::create_dir_all(dir).unwrap();
    mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("size=1m"),
    )
    .unwrap_or_else(|e| panic!("mount tmpfs at {}: {e}", dir.display()));
    std::fs::write(dir.join(marker), marker).unwrap();
}

/// Runs a privileged pod with one container holding the volume, makes a mount on each
/// side after the container started, and returns (host's mount seen in the container,
/// container's mount seen on the host).
fn propagate(handler: &str, propagation: MountPropagation) -> (bool, bool) {
    let tag = format!("{}-{handler}", propagation.as_str_name().to_lowercase());
    let tag = tag.trim_start_matches("propagation_").replace('_', "-");
    let host = HostDir::new(&tag);
    let mut cri = Cri::connect(&cri_socket());
    let mut spec = PodSpec::new(&format!("mp-{tag}"));
    spec.handler = handler.to_string();
    // Kubernetes allows Bidirectional only in privileged containers; the container needs
    // CAP_SYS_ADMIN to mount anyway.
    spec.privileged = true;
    let pod = cri
        .run_pod(&spec)
        .unwrap_or_else(|e| panic!("{tag}: run pod: {e}"));
    let guard = PodGuard::new(&pod, &spec, &cri_socket());
    let mut config = spec.container("vol", &["sleep", "3600"]);
    config
        .mounts
        .push(host_path(&host.path, VOLUME, propagation));
    let id = cri
        .create_container(&pod, &spec, config)
        .unwrap_or_else(|e| panic!("{tag}: {e}"));
    cri.start_container(&id)
        .unwrap_or_else(|e| panic!("{tag}: {e}"));

    // Host → container: a mount made on the host under the source, after the start.
    mount_tmpfs_with_marker(&host.path.join("from-host"), "host-marker");
    let (code, out, err) = cri
        .exec_sync(
            &id,
            &["cat", &format!("{VOLUME}/from-host/host-marker")],
            TIMEOUT,
        )
        .unwrap();
    let into_container = code == 0 && out == "host-marker";
    assert!(
        into_container || err.contains("No such file"),
        "{tag}: unexpected cat failure: {code} {out:?} {err:?}"
    );

    // Container → host: a mount made in the container under the volume.
    let script = format!(
        "mkdir -p {VOLUME}/from-ctr && mount -t tmpfs -o size=1m tmpfs {VOLUME}/from-ctr \
         && echo -n ctr-marker > {VOLUME}/from-ctr/ctr-marker"
    );
    let (code, out, err) = cri.exec_sync(&id, &["sh", "-c", &script], TIMEOUT).unwrap();
    assert_eq!(code, 0, "{tag}: mount in the container: {out:?} {err:?}");
    let onto_host = std::fs::read_to_string(host.path.join("from-ctr/ctr-marker"))
        .is_ok_and(|s| s == "ctr-marker");

    drop(guard);
    drop(host);
    (into_container, onto_host)
}

fn bidirectional(handler: &str) {
    assert_eq!(
        propagate(handler, MountPropagation::PropagationBidirectional),
        (true, true),
        "{handler}: Bidirectional (rshared) must propagate both ways (into container, onto host)"
    );
}

fn host_to_container(handler: &str) {
    assert_eq!(
        propagate(handler, MountPropagation::PropagationHostToContainer),
        (true, false),
        "{handler}: HostToContainer (rslave) must propagate host → container only (into container, onto host)"
    );
}

fn private(handler: &str) {
    assert_eq!(
        propagate(handler, MountPropagation::PropagationPrivate),
        (false, false),
        "{handler}: Private (rprivate) must not propagate (into container, onto host)"
    );
}

/// `ctr run --rootfs-propagation VALUE` with the youki runtime, printing the container's
/// mountinfo line for `/`.
fn run_with_root_propagation(id: &str, value: &str) -> std::process::Output {
    common::ctr(&[
        "run",
        "--rm",
        "--rootfs-propagation",
        value,
        "--runtime",
        common::RUNTIME,
        common::BUSYBOX,
        id,
        "sh",
        "-c",
        "grep ' / / ' /proc/self/mountinfo",
    ])
}

#[test]
fn recursive_root_propagation_names_are_accepted() {
    for value in [
        "rshared", "rslave", "rprivate", "shared", "slave", "private",
    ] {
        let id = common::unique("rootprop");
        let _cleanup = common::RemoveOnDrop(id.clone());
        let out = run_with_root_propagation(&id, value);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{value}: {} {stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The container's root is shared exactly when asked for (after pivot_root, as runc).
        assert_eq!(
            stdout.contains(" shared:"),
            value.ends_with("shared"),
            "{value}: root mount {stdout:?}"
        );
        common::assert_nothing_left(&id);
    }
}

#[test]
fn unknown_root_propagation_is_refused_by_name_and_leaves_nothing() {
    let id = common::unique("rootprop-bad");
    let _cleanup = common::RemoveOnDrop(id.clone());
    let out = run_with_root_propagation(&id, "sideways");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a rootfsPropagation of sideways ran");
    // (ctr prints the message, not the code: InvalidArgument is checked in the unit tests.)
    assert!(
        stderr.contains("linux.rootfsPropagation \"sideways\""),
        "{stderr}"
    );
    common::remove(&id);
    common::assert_nothing_left(&id);
}

#[test]
fn bidirectional_youki() {
    bidirectional(YOUKI_HANDLER);
}

#[test]
fn bidirectional_runc() {
    bidirectional(RUNC_HANDLER);
}

#[test]
fn host_to_container_youki() {
    host_to_container(YOUKI_HANDLER);
}

#[test]
fn host_to_container_runc() {
    host_to_container(RUNC_HANDLER);
}

#[test]
fn private_youki() {
    private(YOUKI_HANDLER);
}

#[test]
fn private_runc() {
    private(RUNC_HANDLER);
}
