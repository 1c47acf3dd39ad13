//! The shim's log, in containerd's (logrus) text format, one write(2) per line to stderr,
//! which the daemon points at the bundle's `log` fifo that containerd reads.

use std::io::Write;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::SystemTime;

struct Logger {
    id: String,
}

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        // libcontainer's and libcgroups' tracing events arrive here too (tracing's `log`
        // feature). Their info and warnings ("cgroup net_prio not supported…") repeat for
        // every container; their errors say why a create failed.
        let library =
            m.target().starts_with("libcontainer") || m.target().starts_with("libcgroups");
        let limit = if library && log::max_level() < log::LevelFilter::Debug {
            log::LevelFilter::Error
        } else {
            log::max_level()
        };
        m.level() <= limit
    }

    fn log(&self, r: &log::Record) {
        if !self.enabled(r.metadata()) || !owned_by_this_process() {
            return;
        }
        let level = match r.level() {
            log::Level::Error => "error",
            log::Level::Warn => "warning",
            log::Level::Info => "info",
            log::Level::Debug => "debug",
            log::Level::Trace => "trace",
        };
        let t = humantime::format_rfc3339_nanos(SystemTime::now());
        let msg = r.args().to_string().replace('"', "\\\"");
        let line = format!(
            "time=\"{t}\" level={level} msg=\"{msg}\" id={} runtime=io.containerd.youki.v2\n",
            self.id
        );
        // Best effort: a full or absent log fifo must never stall the shim.
        let _ = std::io::stderr().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// The process allowed to log: the daemon, or a worker once it adopts the logger. A
/// container init is a clone of a worker with the same logger but its stderr is the
/// container's: libcontainer's messages there would land in the container's output.
static OWNER: AtomicI32 = AtomicI32::new(0);

fn owned_by_this_process() -> bool {
    // SAFETY: getpid has no preconditions.
    OWNER.load(Ordering::Relaxed) == unsafe { libc::getpid() }
}

/// Makes this process the one that logs (call in a freshly forked worker).
pub fn adopt() {
    // SAFETY: getpid has no preconditions.
    OWNER.store(unsafe { libc::getpid() }, Ordering::Relaxed);
}

pub fn init(id: &str, debug: bool) {
    adopt();
    let logger = Box::new(Logger { id: id.to_string() });
    if log::set_boxed_logger(logger).is_ok() {
        log::set_max_level(if debug {
            log::LevelFilter::Debug
        } else {
            log::LevelFilter::Info
        });
    }
}
