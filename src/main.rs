//! containerd-shim-youki-v2: a containerd shim v2 that runs a pod's containers through
//! youki's libcontainer.

use containerd_shim_youki_v2::ops::cleanup;
use containerd_shim_youki_v2::runtime::{idmap, nss};
use containerd_shim_youki_v2::shim::args::{Action, Args};
use containerd_shim_youki_v2::shim::{bootstrap, daemon, info, sealed};

fn main() {
    // Before anything can look a user up: container inits set HOME through glibc, and
    // must not load an image's NSS modules (nss.rs).
    if let Err(e) = nss::use_files_only() {
        eprintln!("containerd-shim-youki-v2: {e}");
        std::process::exit(1);
    }
    // Run by libcontainer as newuidmap/newgidmap from a Create worker (see idmap.rs).
    if let Some(code) = idmap::run_if_called_as_helper() {
        std::process::exit(code);
    }
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("containerd-shim-youki-v2: {e}");
            std::process::exit(2);
        }
    };
    let result = match args.action {
        Action::Version => {
            println!("containerd-shim-youki-v2:");
            println!("  Version:  {}", env!("CARGO_PKG_VERSION"));
            println!("  Runtime:  libcontainer (youki)");
            println!("  TaskAPI:  containerd.task.v2.Task, containerd.task.v3.Task");
            Ok(())
        }
        Action::Info => {
            info::run(&mut std::io::stdin().lock()).and_then(|out| bootstrap::write_stdout(&out))
        }
        Action::Start => bootstrap::start(&args, &mut std::io::stdin().lock())
            .and_then(|out| bootstrap::write_stdout(&out)),
        Action::Delete => cleanup::run(&args).and_then(|out| bootstrap::write_stdout(&out)),
        Action::Serve => {
            // Before anything else (threads above all): the daemon, and every container
            // process cloned from it, runs from a sealed copy of this binary, so nothing in
            // a container can reach the file on disk (see shim/sealed.rs). A kernel that
            // refuses (no memfd, exec from memfds forbidden) leaves the daemon on the file,
            // as before, and says so in containerd's log.
            if let Err(e) = sealed::reexec_from_sealed_copy() {
                eprintln!(
                    "containerd-shim-youki-v2: warning: running from the binary on disk, not a sealed copy: {e}"
                );
            }
            daemon::run(args)
        }
    };
    if let Err(e) = result {
        eprintln!("containerd-shim-youki-v2: {e}");
        std::process::exit(1);
    }
}
