//! The pod sandbox's pause process: holds the pod's namespaces, does nothing else.
//! Sleeps until SIGINT or SIGTERM (then exits 0) and, as PID 1 of a shared PID namespace,
//! reaps every zombie it inherits. Built static (see hack/build-pause.sh) so the image is
//! this one file.

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

extern "C" fn on_child(_: libc::c_int) {}

fn main() {
    if std::env::args().any(|a| a == "-v") {
        println!(
            "pause (containerd-shim-youki) {}",
            env!("CARGO_PKG_VERSION")
        );
        return;
    }
    // SAFETY: installing async-signal-safe handlers (an atomic store, a no-op) and then
    // waiting in sigsuspend/waitpid loops.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_stop as *const () as usize;
        libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut());
        libc::sigaction(libc::SIGTERM, &sa, std::ptr::null_mut());
        sa.sa_sigaction = on_child as *const () as usize;
        sa.sa_flags = libc::SA_NOCLDSTOP;
        libc::sigaction(libc::SIGCHLD, &sa, std::ptr::null_mut());
        // Block the signals outside sigsuspend, so one arriving between the check and the
        // wait is not lost.
        let mut block: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut block);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGCHLD] {
            libc::sigaddset(&mut block, s);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &block, std::ptr::null_mut());
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        while !STOP.load(Ordering::SeqCst) {
            libc::sigsuspend(&empty);
            while libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) > 0 {}
        }
    }
}
