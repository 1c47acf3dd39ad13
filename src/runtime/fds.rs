//! Closing every inherited fd but a few, in a process just forked from the daemon (a
//! worker, whose clones become container inits): what it does not close, a container that
//! is created but not started holds — the shim's listening socket, other containers' fifos
//! (runc's CVE-2024-21626 was one such fd).
//!
//! close_range(2) does it in one call from Linux 5.9; on older kernels (RHEL 8's 4.18) it
//! fails with ENOSYS and the fds are closed one by one from the list in /proc/self/fd (or,
//! without /proc, every number up to the fd limit). Allocating here is safe: the daemon is
//! single-threaded when it forks (forker's `assert_single_threaded`), so no other thread
//! can hold the allocator's lock in the child.

use std::os::fd::RawFd;
use std::path::Path;

/// Closes every fd but stdio and `keep`.
pub fn close_all_but(keep: &[RawFd]) {
    let keep = sorted_keep(keep);
    if close_ranges(&keep).is_err() {
        close_listed(&keep, Path::new("/proc/self/fd"));
    }
}

fn sorted_keep(keep: &[RawFd]) -> Vec<u32> {
    let mut keep: Vec<u32> = keep.iter().filter(|&&f| f > 2).map(|&f| f as u32).collect();
    keep.sort_unstable();
    keep.dedup();
    keep
}

/// close_range over the gaps between the kept fds; the first failure stops it.
fn close_ranges(keep: &[u32]) -> std::io::Result<()> {
    let close_range = |first: u32, last: u32| {
        // SAFETY: closing fd ranges of our own process; no pointer arguments.
        if unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) } == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    let mut from = 3u32;
    for &k in keep {
        if k > from {
            close_range(from, k - 1)?;
        }
        from = from.max(k + 1);
    }
    close_range(from, u32::MAX)
}

/// The fallback: every fd listed in `listing` (/proc/self/fd), or every number below the
/// soft fd limit when it cannot be read. Closing a number that is not open is harmless.
fn close_listed(keep: &[u32], listing: &Path) {
    let close = |fd: u32| {
        if fd > 2 && keep.binary_search(&fd).is_err() {
            // SAFETY: closing an fd of our own process that nothing here uses any more.
            unsafe { libc::close(fd as RawFd) };
        }
    };
    // Listed first, closed after: the directory's own fd is closed (and listed) before
    // any other is, and closing it again is an EBADF.
    let listed: Option<Vec<u32>> = std::fs::read_dir(listing).ok().map(|dir| {
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect()
    });
    match listed {
        Some(fds) => fds.into_iter().for_each(close),
        None => {
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: getrlimit writes the struct we pass.
            let max = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
                limit.rlim_cur.min(1 << 20) as u32
            } else {
                1 << 16
            };
            (3..max).for_each(close);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    use nix::unistd::{ForkResult, fork};

    /// Runs `f` in a forked copy of the test process (closing fds or loading a seccomp
    /// filter must not touch the harness) and returns its exit code.
    fn in_child(f: impl FnOnce() -> i32) -> i32 {
        // SAFETY: the child only runs `f` (syscalls and small allocations) and _exits.
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(99);
                // SAFETY: leave the forked test process without running the harness.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
                loop {
                    match waitpid(child, Some(WaitPidFlag::WNOHANG)).unwrap() {
                        WaitStatus::StillAlive if std::time::Instant::now() < deadline => {
                            std::thread::sleep(std::time::Duration::from_millis(10))
                        }
                        WaitStatus::Exited(_, code) => return code,
                        other => {
                            let _ = nix::sys::signal::kill(child, nix::sys::signal::SIGKILL);
                            panic!("the forked test process ended as {other:?}");
                        }
                    }
                }
            }
        }
    }

    /// Makes close_range fail with ENOSYS in this process, as on a kernel before 5.9.
    fn without_close_range() -> bool {
        let stmt = |code: u32, k: u32| libc::sock_filter {
            code: code as u16,
            jt: 0,
            jf: 0,
            k,
        };
        let filter = [
            // The syscall number: offset 0 of struct seccomp_data.
            stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0),
            libc::sock_filter {
                code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
                jt: 0,
                jf: 1,
                k: libc::SYS_close_range as u32,
            },
            stmt(
                libc::BPF_RET | libc::BPF_K,
                libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
            ),
            stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
        ];
        let prog = libc::sock_fprog {
            len: filter.len() as u16,
            filter: filter.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: prctl with a filter program that outlives the call.
        unsafe {
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
                && libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog) == 0
                && libc::syscall(libc::SYS_close_range, 1000u32, 1000u32, 0u32) != 0
                && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS)
        }
    }

    fn is_open(fd: RawFd) -> bool {
        // SAFETY: F_GETFD only reads the fd's flags.
        (unsafe { libc::fcntl(fd, libc::F_GETFD) }) >= 0
    }

    /// Opens five fds, keeps the second and fourth, and checks exactly those survive.
    fn closes_all_but_the_kept() -> i32 {
        let fds: Vec<RawFd> = (0..5)
            .map(|_| {
                use std::os::fd::IntoRawFd;
                std::fs::File::open("/dev/null").unwrap().into_raw_fd()
            })
            .collect();
        close_all_but(&[fds[3], fds[1]]);
        let open: Vec<bool> = fds.iter().map(|&f| is_open(f)).collect();
        let stdio = (0..3).all(is_open);
        if stdio && open == [false, true, false, true, false] {
            0
        } else {
            1
        }
    }

    #[test]
    fn every_fd_but_the_kept_ones_is_closed() {
        assert_eq!(in_child(closes_all_but_the_kept), 0);
    }

    #[test]
    fn without_close_range_the_fds_are_closed_one_by_one() {
        // A kernel before 5.9: close_range is ENOSYS; the fds must be closed all the same.
        let code = in_child(|| {
            if !without_close_range() {
                return 2;
            }
            closes_all_but_the_kept()
        });
        assert_eq!(code, 0, "2: no seccomp filter; 1: fds left open");
    }

    #[test]
    fn without_proc_every_number_is_tried() {
        let code = in_child(|| {
            use std::os::fd::IntoRawFd;
            let a = std::fs::File::open("/dev/null").unwrap().into_raw_fd();
            let b = std::fs::File::open("/dev/null").unwrap().into_raw_fd();
            close_listed(&sorted_keep(&[b]), Path::new("/nonexistent/fd"));
            if !is_open(a) && is_open(b) && (0..3).all(is_open) {
                0
            } else {
                1
            }
        });
        assert_eq!(code, 0);
    }
}
