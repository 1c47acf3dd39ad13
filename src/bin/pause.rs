//! The pod sandbox's pause process: holds the pod's namespaces, does nothing else.
//! Sleeps until SIGINT or SIGTERM (then exits 0) and, as PID 1 of a shared PID namespace,
//! reaps every zombie it inherits.
//!
//! It has no dependencies (only libc symbols every Linux libc exports) so that
//! hack/build-images.sh can build it as one static file with plain `rustc` in seconds.

use std::os::raw::{c_int, c_void};
use std::sync::atomic::{AtomicBool, Ordering};

const SIGINT: c_int = 2;
const SIGTERM: c_int = 15;
const SIGCHLD: c_int = 17;
const SIG_BLOCK: c_int = 0;
const WNOHANG: c_int = 1;

/// glibc's and musl's `sigset_t` are 128 bytes; only libc's functions look inside.
#[repr(C)]
struct SigSet([u64; 16]);

unsafe extern "C" {
    fn signal(sig: c_int, handler: extern "C" fn(c_int)) -> *mut c_void;
    fn sigemptyset(set: *mut SigSet) -> c_int;
    fn sigaddset(set: *mut SigSet, sig: c_int) -> c_int;
    fn sigprocmask(how: c_int, set: *const SigSet, old: *mut SigSet) -> c_int;
    fn sigsuspend(mask: *const SigSet) -> c_int;
    fn waitpid(pid: c_int, status: *mut c_int, options: c_int) -> c_int;
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_: c_int) {
    STOP.store(true, Ordering::SeqCst);
}

extern "C" fn on_child(_: c_int) {}

fn main() {
    if std::env::args().any(|a| a == "-v") {
        println!("pause (containerd-shim-youki)");
        return;
    }
    // SAFETY: async-signal-safe handlers (an atomic store, a no-op), sigsets initialised
    // by libc before use.
    unsafe {
        signal(SIGINT, on_stop);
        signal(SIGTERM, on_stop);
        signal(SIGCHLD, on_child);
        // Block the signals outside sigsuspend, so one arriving between the check and the
        // wait is not lost.
        let mut block = SigSet([0; 16]);
        sigemptyset(&mut block);
        for s in [SIGINT, SIGTERM, SIGCHLD] {
            sigaddset(&mut block, s);
        }
        sigprocmask(SIG_BLOCK, &block, std::ptr::null_mut());
        let mut empty = SigSet([0; 16]);
        sigemptyset(&mut empty);
        while !STOP.load(Ordering::SeqCst) {
            sigsuspend(&empty);
            while waitpid(-1, std::ptr::null_mut(), WNOHANG) > 0 {}
        }
    }
}
