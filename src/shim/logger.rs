//! The shim's log, in containerd's (logrus) text format, one write(2) per line to stderr,
//! which the daemon points at the bundle's `log` fifo that containerd reads.

use std::borrow::Cow;
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
        let msg = log_message(&r.args().to_string());
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

/// A record's message as it goes between the quotes of `msg="…"`. Whoever logs (we,
/// libcontainer dumping a spec at debug level, a hook's env), environment values never
/// reach containerd's log: they hold Secrets. And one record is one line, as logrus writes
/// it: a message with newlines (a spec dumped with {:#?}, a container-chosen string) must
/// not forge log lines.
fn log_message(msg: &str) -> String {
    redact_env(msg)
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// What an environment's contents become in the log.
const REDACTED: &str = "<redacted>";

/// Replaces the contents of every environment in `msg` with `<redacted>`: the bracketed
/// value after a key `env` or `envs` (any case, quoted or not) and `:` or `=`, optionally
/// inside `Some(…)`. That covers the shapes environments are logged in: Rust's `{:?}` and
/// `{:#?}` of an OCI Spec, Process or Hook (`env: Some(["K=V", …])`), of a map
/// (`envs: {"K": "V"}`), tracing fields (`env=[…]`) and JSON (`"env":[…]`). Brackets
/// inside quoted strings do not count.
pub fn redact_env(msg: &str) -> Cow<'_, str> {
    let b = msg.as_bytes();
    let mut out = String::new();
    let mut copied = 0;
    let mut i = 0;
    while let Some(found) = find_env_key(b, i) {
        let Some((open, close)) = env_value(b, found.end) else {
            i = found.end;
            continue;
        };
        out.push_str(&msg[copied..=open]);
        out.push_str(REDACTED);
        copied = close;
        i = close;
    }
    if copied == 0 {
        Cow::Borrowed(msg)
    } else {
        out.push_str(&msg[copied..]);
        Cow::Owned(out)
    }
}

/// The next `env` or `envs` standing as a word at or after `from`.
fn find_env_key(b: &[u8], from: usize) -> Option<std::ops::Range<usize>> {
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = from;
    while i + 3 <= b.len() {
        if b[i..i + 3].eq_ignore_ascii_case(b"env") && (i == 0 || !word(b[i - 1])) {
            let mut end = i + 3;
            if b.get(end).is_some_and(|c| c.eq_ignore_ascii_case(&b's')) {
                end += 1;
            }
            if !b.get(end).copied().is_some_and(word) {
                return Some(i..end);
            }
        }
        i += 1;
    }
    None
}

/// After a key ending at `at`: the positions of the opening bracket of its value and of
/// its matching closing bracket, if the value is bracketed.
fn env_value(b: &[u8], at: usize) -> Option<(usize, usize)> {
    let skip_ws = |mut i: usize| {
        while b.get(i).is_some_and(|c| c.is_ascii_whitespace()) {
            i += 1;
        }
        i
    };
    let mut i = at;
    if b.get(i) == Some(&b'"') {
        i += 1;
    }
    i = skip_ws(i);
    if !matches!(b.get(i), Some(b':' | b'=')) {
        return None;
    }
    i = skip_ws(i + 1);
    if b[i..].starts_with(b"Some(") {
        i = skip_ws(i + 5);
    }
    let open = i;
    let close_of = match b.get(open)? {
        b'[' => b']',
        b'{' => b'}',
        _ => return None,
    };
    let mut depth = 0usize;
    let mut in_string = false;
    let mut j = open;
    while j < b.len() {
        let c = b[j];
        if in_string {
            match c {
                b'\\' => j += 1,
                b'"' => in_string = false,
                _ => {}
            }
        } else {
            match c {
                b'"' => in_string = true,
                b'[' | b'{' | b'(' => depth += 1,
                b']' | b'}' | b')' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        return (c == close_of).then_some((open, j));
                    }
                }
                _ => {}
            }
        }
        j += 1;
    }
    // Unbalanced (a cut message): everything after the bracket goes.
    Some((open, b.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use libcontainer::oci_spec::runtime::{HookBuilder, HooksBuilder, ProcessBuilder, Spec};

    const SECRET: &str = "s3cr3t-marker";

    fn spec() -> Spec {
        let mut spec = Spec::default();
        let process = ProcessBuilder::default()
            .args(vec!["sh".to_string(), "-c".into(), "echo [env] {x}".into()])
            .env(vec![
                format!("TOKEN={SECRET}"),
                format!("QUOTED=a\"]{SECRET}"),
                "PATH=/bin".into(),
            ])
            .build()
            .unwrap();
        let hook = HookBuilder::default()
            .path("/bin/hook")
            .env(vec![format!("HOOK={SECRET}")])
            .build()
            .unwrap();
        spec.set_process(Some(process));
        spec.set_hooks(Some(
            HooksBuilder::default()
                .create_runtime(vec![hook])
                .build()
                .unwrap(),
        ));
        spec
    }

    #[test]
    fn no_environment_value_survives_any_shape() {
        let mut envs = std::collections::HashMap::new();
        envs.insert("TOKEN".to_string(), SECRET.to_string());
        let shapes = [
            format!("{:#?}", spec()),
            format!("{:?}", spec()),
            format!("validating spec spec={:?}", spec()),
            serde_json::to_string(&spec()).unwrap(),
            serde_json::to_string_pretty(spec().process()).unwrap(),
            format!("run_hooks envs: {envs:?}"),
            format!("ENV = [\"TOKEN={SECRET}\"] then more"),
        ];
        for shape in &shapes {
            assert!(
                shape.contains(SECRET),
                "test input lacks the marker: {shape}"
            );
            let out = redact_env(shape);
            assert!(!out.contains(SECRET), "leaked:\n{out}");
            assert!(out.contains(REDACTED), "{out}");
        }
        // The rest stays readable: the args (brackets in them included) and what follows.
        let out = redact_env(&shapes[0]).into_owned();
        assert!(out.contains("echo [env] {x}"), "{out}");
        assert!(out.contains("/bin/hook"), "{out}");
        assert!(redact_env(&shapes[6]).ends_with("] then more"));
    }

    #[test]
    fn a_record_is_one_line_and_shows_no_environment() {
        let msg = log_message(&format!("{:#?}", spec()));
        assert!(!msg.contains('\n') && !msg.contains(SECRET), "{msg}");
        assert_eq!(
            log_message("a \"quoted\" \\ path\nlevel=error msg=\"forged\""),
            "a \\\"quoted\\\" \\\\ path\\nlevel=error msg=\\\"forged\\\""
        );
    }

    #[test]
    fn messages_without_an_environment_are_untouched() {
        for m in [
            "create c1 took 3ms",
            "environment of c1 is fine",
            "env: 3",
            "the envoy said [x]",
            "dev_env=[a]",
        ] {
            assert!(matches!(redact_env(m), Cow::Borrowed(_)), "{m}");
        }
        assert_eq!(redact_env("env: Some([\"A=1\"\n"), "env: Some([<redacted>");
    }
}
