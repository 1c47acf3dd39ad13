//! User lookups never load an NSS module: `passwd` and `group` are answered from the
//! files (`/etc/passwd`, `/etc/group`) only, whatever an `nsswitch.conf` says.
//!
//! libcontainer looks a user up in one place on our path: a container's init, after
//! pivot_root into the container, sets `HOME` from the user's passwd entry when the spec
//! has no `HOME` (`getpwuid_r`). glibc reads the *container's* `nsswitch.conf` for that, and
//! for any service other than `files` it dlopens `libnss_<service>.so.2` from the *container
//! image*. In the static build (hack/build-static.sh) that is a glibc shared object loaded
//! into a static glibc process: an image with `passwd: files systemd` and libnss_systemd
//! (any image with systemd in it) and a uid not in its /etc/passwd crashed the init with
//! SIGSEGV. In the dynamic build it loads image code of the image's glibc into the shim's
//! process. Neither is what runc does: runc parses the container's /etc/passwd itself and
//! never consults NSS. `files` is built into glibc, static or not, so pinning both databases
//! to it gives runc's answer on every image and loads nothing. (docs/design-notes.md, "One
//! static binary".)

use std::ffi::{CStr, c_char, c_int};

unsafe extern "C" {
    /// glibc's override of one database's nsswitch.conf line (exported since glibc 2.0;
    /// it also stops glibc from reloading nsswitch.conf, so a pivot_root does not undo it).
    fn __nss_configure_lookup(db: *const c_char, service_line: *const c_char) -> c_int;
}

/// Pins `passwd` and `group` to `files`. Call once, first thing in main, before any thread
/// or lookup: the container inits libcontainer forks inherit it.
pub fn use_files_only() -> Result<(), String> {
    for db in [c"passwd", c"group"] {
        let files: &CStr = c"files";
        // SAFETY: two NUL-terminated strings that outlive the call; glibc copies what it
        // keeps. Called before other threads exist, so no lookup runs concurrently.
        if unsafe { __nss_configure_lookup(db.as_ptr(), files.as_ptr()) } != 0 {
            return Err(format!("nss: cannot pin {db:?} to files"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After pinning, lookups still answer from /etc/passwd (root is in every one).
    #[test]
    fn files_still_answer() {
        use_files_only().unwrap();
        let root = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(0))
            .unwrap()
            .expect("root in /etc/passwd");
        assert_eq!(root.name, "root");
        let group = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(0))
            .unwrap()
            .expect("gid 0 in /etc/group");
        assert_eq!(group.gid.as_raw(), 0);
    }
}
