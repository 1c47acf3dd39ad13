//! The shim as one static binary (hack/build-static.sh): what static glibc cannot do must
//! not be on our path. The one user lookup there is libcontainer's: a container's init sets
//! HOME from the container's /etc/passwd when the spec has none (getpwuid_r, after
//! pivot_root). It must answer from the image's files, as runc does, and never load an NSS
//! module from the image (src/runtime/nss.rs).
mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::{Value, json};

/// A container from a spec file whose rootfs holds a static busybox, an /etc/passwd and
/// an /etc/nsswitch.conf of the test's choosing.
struct Image {
    dir: PathBuf,
    spec: Value,
}

impl Image {
    fn new(id: &str, passwd: &str, nsswitch: &str) -> Image {
        let dir = std::env::temp_dir().join(id);
        let rootfs = dir.join("rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).unwrap();
        std::fs::create_dir_all(rootfs.join("etc")).unwrap();
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("busybox-static");
        for applet in ["sh", "echo", "env"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        for d in ["proc", "sys", "dev", "tmp"] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        std::fs::write(rootfs.join("etc/passwd"), passwd).unwrap();
        std::fs::write(rootfs.join("etc/nsswitch.conf"), nsswitch).unwrap();
        let mut spec: Value = serde_json::from_str(&ctr_ok(&["oci", "spec"])).unwrap();
        spec["process"]["args"] = json!(["/bin/sh", "-c", "echo home=$HOME"]);
        // No HOME: the init looks it up.
        spec["process"]["env"] = json!(["PATH=/bin"]);
        spec["process"]["terminal"] = json!(false);
        spec["root"] = json!({"path": rootfs, "readonly": false});
        spec["linux"]["cgroupsPath"] = json!(format!("/{NS}/{id}"));
        Image { dir, spec }
    }

    fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    /// Copies a host library and every library it needs (ldd) into the image's
    /// /lib/x86_64-linux-gnu (and the loader also under its own path), so that the image's
    /// glibc can load it the way it would on Debian.
    fn add_library(&self, lib: &Path) {
        let ldd = std::process::Command::new("ldd").arg(lib).output().unwrap();
        let mut files = vec![lib.to_path_buf()];
        for line in String::from_utf8_lossy(&ldd.stdout).lines() {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux... (0x...)"
            let path = line
                .split("=>")
                .last()
                .and_then(|s| s.split_whitespace().next())
                .filter(|p| p.starts_with('/'));
            if let Some(p) = path {
                files.push(PathBuf::from(p));
            }
        }
        let libdir = self.rootfs().join("lib/x86_64-linux-gnu");
        std::fs::create_dir_all(&libdir).unwrap();
        for f in files {
            let copies = [
                libdir.join(f.file_name().unwrap()),
                self.rootfs().join(f.strip_prefix("/").unwrap()),
            ];
            for to in copies {
                std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                std::fs::copy(&f, &to).unwrap_or_else(|e| panic!("copy {}: {e}", f.display()));
            }
        }
    }

    fn run_as(&mut self, id: &str, uid: u32) -> std::process::Output {
        self.spec["process"]["user"] = json!({"uid": uid, "gid": uid});
        let path = self.dir.join("config.json");
        std::fs::write(&path, serde_json::to_vec(&self.spec).unwrap()).unwrap();
        ctr(&[
            "run",
            "--rm",
            "--runtime",
            RUNTIME,
            "--config",
            path.to_str().unwrap(),
            id,
        ])
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn stdout_of(o: &std::process::Output) -> String {
    assert!(
        o.status.success(),
        "container failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

const PASSWD: &str = "root:x:0:0:root:/root-of-image:/bin/sh\nbob:x:4242:4242::/home/bob:/bin/sh\n";

/// HOME comes from the image's own /etc/passwd.
#[test]
fn home_comes_from_the_images_passwd() {
    let id = unique("nss-files");
    let mut image = Image::new(&id, PASSWD, "passwd: files\ngroup: files\n");
    assert_eq!(
        stdout_of(&image.run_as(&id, 0)).trim(),
        "home=/root-of-image"
    );
    let id2 = unique("nss-files");
    assert_eq!(
        stdout_of(&image.run_as(&id2, 4242)).trim(),
        "home=/home/bob"
    );
}

/// An nsswitch.conf naming a service the image does not have (`compat`, Debian's old
/// default) still finds the user in /etc/passwd, as runc does: we never ask the module.
#[test]
fn a_service_the_image_lacks_does_not_hide_passwd() {
    let id = unique("nss-compat");
    let mut image = Image::new(&id, PASSWD, "passwd: compat\ngroup: compat\n");
    assert_eq!(stdout_of(&image.run_as(&id, 4242)).trim(), "home=/home/bob");
}

/// The crash of the static build: an image with `passwd: files systemd` and
/// libnss_systemd, and a uid not in its /etc/passwd. glibc would dlopen the image's
/// libnss_systemd.so.2 (with the image's libc.so.6) into the static init: SIGSEGV, the
/// container never starts. It starts, and HOME stays unset (no entry to take it from).
#[test]
fn an_images_nss_module_is_never_loaded() {
    let lib = Path::new("/usr/lib/x86_64-linux-gnu/libnss_systemd.so.2");
    if !lib.exists() {
        eprintln!(
            "skipped: no {} on this host (apt-get install libnss-systemd)",
            lib.display()
        );
        return;
    }
    let id = unique("nss-module");
    let mut image = Image::new(&id, PASSWD, "passwd: files systemd\ngroup: files systemd\n");
    image.add_library(lib);
    assert_eq!(stdout_of(&image.run_as(&id, 5555)).trim(), "home=");
}
