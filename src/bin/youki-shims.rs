//! youki-shims: lists every running youki shim with its namespace, pod and containers, and
//! flags the "unknown" ones, shims or containers that containerd (asked through its API
//! socket, the one each shim was started by) no longer knows.
//!
//!   youki-shims [--json] [--kill] [--address SOCK] [--namespace NS] [--grace DURATION]
//!               [--containerd-gone SOCK]...
//!   youki-shims install [HANDLER] [options]     (src/ops/install)
//!   youki-shims uninstall [--force] [options]
//!
//! Exit status: 0 nothing unknown; 1 unknown ones found (with --kill: and all removed);
//! 2 containerd could not be asked, or removing failed.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::sandbox::StoreListRequest;
use containerd_client::services::v1::sandbox::store_client::StoreClient;
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{ListContainersRequest, ListTasksRequest};
use containerd_client::tonic::Request;
use containerd_shim_youki_v2::ops::cleanup::{remove_container, remove_dead_socket, shutdown_shim};
use containerd_shim_youki_v2::ops::install::{self, InstallError};
use containerd_shim_youki_v2::ops::inventory::{
    self, ContainerRow, Known, Report, Shim, Verdict, View, judge,
};
use containerd_shim_youki_v2::shim::bootstrap::SOCKET_DIR;

const USAGE: &str =
    "usage: youki-shims [--json] [--kill] [--address SOCK] [--namespace NS] [--grace DURATION]
                   [--containerd-gone SOCK]...
       youki-shims install|uninstall [options]   (see youki-shims install --help)

Lists every youki shim (containerd-shim-youki-v2) on this machine with its namespace, pod and
containers, and flags the unknown ones: shims and containers that the containerd which started
them no longer knows (no container record, no task, another PID), shims serving nothing, and
containers no shim serves, and shim sockets nothing listens on.

  --json          print the report as JSON
  --kill          remove the unknown ones the way `containerd-shim-youki-v2 delete` does:
                  kill the container's processes, remove its cgroup, mounts and state, and let
                  its shim exit once it serves nothing
  --address SOCK  only shims started by the containerd at SOCK
  --namespace NS  only this containerd namespace
  --grace DURATION
                  do not judge containers or shims younger than this (default 10s; 10s, 2m,
                  0s, or plain seconds): containerd records a task only once its Create
                  returns
  --containerd-gone SOCK
                  the containerd at SOCK is gone for good (removed, never to come back): its
                  shims and containers are unknown, not unverified, and --kill removes them.
                  Refused while anything answers on SOCK. A containerd that is merely down
                  comes back and takes its containers over; do not name it here

Exit status: 0 nothing unknown, 1 unknown ones found, 2 containerd could not be asked or
removing failed.";

struct Opts {
    json: bool,
    kill: bool,
    address: Option<String>,
    namespace: Option<String>,
    grace: Duration,
    /// containerd addresses the operator says are gone for good.
    gone: Vec<String>,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Opts, String> {
    let mut o = Opts {
        json: false,
        kill: false,
        address: None,
        namespace: None,
        grace: Duration::from_secs(10),
        gone: Vec::new(),
    };
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--json" => o.json = true,
            "--kill" => o.kill = true,
            "--address" => o.address = Some(socket_path(value("--address")?)),
            "-n" | "--namespace" => o.namespace = Some(value("--namespace")?),
            "--grace" => {
                o.grace = parse_duration(&value("--grace")?)?;
            }
            "--containerd-gone" => o.gone.push(socket_path(value("--containerd-gone")?)),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(o)
}

/// A duration as people write it (`10s`, `2m`, `1m30s`, `0s`), or plain seconds as
/// earlier releases took it.
fn parse_duration(v: &str) -> Result<Duration, String> {
    if let Ok(secs) = v.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(v)
        .map_err(|e| format!("--grace {v:?}: not a duration like 10s or 2m ({e})"))
}

/// `youki-shims install|uninstall ARGS`: exits 0 on success, 2 on bad usage, 1 otherwise.
fn install_command(cmd: &str, args: impl Iterator<Item = String>) -> ! {
    let opts = match install::parse_args(args) {
        Ok(o) => o,
        Err(InstallError::Usage(m)) if m.is_empty() => {
            println!("{}", install::INSTALL_USAGE);
            std::process::exit(0);
        }
        Err(e) => {
            eprintln!("youki-shims {cmd}: {e}\n{}", install::INSTALL_USAGE);
            std::process::exit(2);
        }
    };
    let result = if cmd == "install" {
        install::install(&opts)
    } else {
        install::uninstall(&opts)
    };
    if let Err(e) = result {
        eprintln!("youki-shims {cmd}: {e}");
        std::process::exit(1);
    }
    std::process::exit(0);
}

/// A containerd address as shims carry it in `-address`: the socket path, without `unix://`.
fn socket_path(address: String) -> String {
    match address.strip_prefix("unix://") {
        Some(path) => path.to_string(),
        None => address,
    }
}

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    if let Some(cmd) = args.next_if(|a| a == "install" || a == "uninstall") {
        install_command(&cmd, args);
    }
    let opts = match parse(args) {
        Ok(o) => o,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return;
        }
        Err(e) => {
            eprintln!("youki-shims: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    for address in &opts.gone {
        if let Err(e) = check_gone(address) {
            eprintln!("youki-shims: {e}");
            std::process::exit(2);
        }
    }
    let report = survey(&opts);
    let unreachable = report
        .containers()
        .any(|c| matches!(&c.verdict, Verdict::Unverified(r) if r.starts_with("containerd")));
    let found_unknown = unknown(&report) > 0;
    let mut failed = false;
    if opts.json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("youki-shims: encode report: {e}");
                std::process::exit(2);
            }
        }
    } else {
        print_table(&report);
    }
    if opts.kill && found_unknown {
        failed = !kill_unknown(&report, opts.json);
        let after = survey(&opts);
        if unknown(&after) > 0 {
            eprintln!(
                "youki-shims: still unknown after --kill: {} shims, {} containers, {} sockets",
                after.unknown_shims(),
                after.unknown_containers(),
                after.stale_sockets.len()
            );
            failed = true;
        }
    }
    if unreachable {
        eprintln!("youki-shims: some containerd could not be asked; its shims are unverified");
    }
    let code = if failed || unreachable {
        2
    } else if found_unknown {
        1
    } else {
        0
    };
    std::process::exit(code);
}

fn unknown(r: &Report) -> usize {
    r.unknown_shims() + r.unknown_containers() + r.stale_sockets.len()
}

/// Scan, ask every containerd involved, judge.
fn survey(o: &Opts) -> Report {
    let proc = Path::new("/proc");
    // Every shim takes part in matching containers to shims, so a container whose shim
    // belongs to another containerd is not mistaken for one no shim serves; --address
    // only chooses which shims (and so which containerd) are asked about and shown.
    let shims: Vec<Shim> = inventory::scan_shims(proc)
        .into_iter()
        .filter(|s| o.namespace.as_ref().is_none_or(|n| &s.namespace == n))
        .collect();
    // The default state root and every one a Root option put elsewhere.
    let containers: Vec<_> = containerd_shim_youki_v2::ops::roots::bases()
        .iter()
        .flat_map(|base| inventory::scan_containers(base, proc))
        .filter(|c| o.namespace.as_ref().is_none_or(|n| &c.namespace == n))
        .collect();
    let chosen = |s: &Shim| o.address.as_ref().is_none_or(|a| &s.address == a);
    let wanted: BTreeSet<(String, String)> = shims
        .iter()
        .filter(|s| chosen(s))
        .map(|s| (s.address.clone(), s.namespace.clone()))
        .collect();
    let views = ask_containerd(&wanted, &o.gone);
    let mut report = judge(&shims, containers, &views, o.grace);
    report.stale_sockets = inventory::scan_stale_sockets(Path::new(SOCKET_DIR), o.grace);
    // Containers no shim serves belong to no containerd any more: shown whatever
    // --address says.
    report.shims.retain(|row| chosen(&row.shim));
    report
}

/// containerd's containers and tasks for each (address, namespace), over its gRPC API.
/// A containerd the operator named gone is not asked: it knows nothing any more.
fn ask_containerd(
    wanted: &BTreeSet<(String, String)>,
    gone: &[String],
) -> HashMap<(String, String), View> {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return wanted
                .iter()
                .map(|k| (k.clone(), Err(format!("async runtime: {e}"))))
                .collect();
        }
    };
    let mut views = HashMap::new();
    for (address, ns) in wanted {
        if gone.contains(address) {
            views.insert((address.clone(), ns.clone()), Ok(Known::gone()));
            continue;
        }
        let view = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), list(address, ns))
                .await
                .unwrap_or_else(|_| Err("timed out after 10 s".into()))
        });
        views.insert((address.clone(), ns.clone()), view);
    }
    views
}

/// `--containerd-gone SOCK` is refused while anything answers on SOCK: removing the
/// containers of a containerd that is only restarting would destroy workloads.
fn check_gone(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("--containerd-gone needs a socket path".into());
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(format!(
            "--containerd-gone {path:?}: a containerd answers there; it is not gone"
        )),
        Err(_) => Ok(()),
    }
}

/// A request scoped to containerd namespace `ns`.
fn with_ns<T>(req: T, ns: &str) -> Request<T> {
    let mut r = Request::new(req);
    if let Ok(v) = ns.parse() {
        r.metadata_mut().insert("containerd-namespace", v);
    }
    r
}

async fn list(address: &str, ns: &str) -> Result<Known, String> {
    let path = address.strip_prefix("unix://").unwrap_or(address);
    let channel = containerd_client::connect(path)
        .await
        .map_err(|e| format!("connect {path}: {e}"))?;
    let containers = ContainersClient::new(channel.clone())
        .list(with_ns(ListContainersRequest::default(), ns))
        .await
        .map_err(|e| format!("list containers: {}", e.message()))?
        .into_inner()
        .containers;
    let tasks = TasksClient::new(channel.clone())
        .list(with_ns(ListTasksRequest::default(), ns))
        .await
        .map_err(|e| format!("list tasks: {}", e.message()))?
        .into_inner()
        .tasks;
    // containerd 2.x: sandboxes whose pause container a shim made itself. containerd 1.x
    // has no sandbox store (Unimplemented): none.
    let sandboxes = match StoreClient::new(channel)
        .list(with_ns(StoreListRequest::default(), ns))
        .await
    {
        Ok(r) => r
            .into_inner()
            .list
            .into_iter()
            .filter(|s| s.sandboxer == "shim")
            .map(|s| s.sandbox_id)
            .collect(),
        Err(e) if e.code() == containerd_client::tonic::Code::Unimplemented => Default::default(),
        Err(e) => return Err(format!("list sandboxes: {}", e.message())),
    };
    Ok(Known {
        containers: containers.into_iter().map(|c| c.id).collect(),
        tasks: tasks.into_iter().map(|t| (t.id, t.pid)).collect(),
        sandboxes,
        gone: false,
    })
}

fn short(id: &str) -> &str {
    id.get(..13).unwrap_or(id)
}

fn verdict_text(v: &Verdict) -> String {
    match v {
        Verdict::Known => "known".into(),
        Verdict::Unverified(r) => format!("unverified: {r}"),
        Verdict::Unknown(r) => format!("UNKNOWN: {r}"),
    }
}

/// One line of the table; `None` prints "-".
#[allow(clippy::too_many_arguments)]
fn line(
    ns: &str,
    shim: Option<i32>,
    pod: Option<&str>,
    id: Option<&str>,
    name: Option<&str>,
    pid: Option<i32>,
    status: Option<&str>,
    verdict: &str,
) {
    let num = |n: Option<i32>| n.map_or("-".to_string(), |n| n.to_string());
    println!(
        "{:<10} {:>7}  {:<24} {:<13}  {:<12} {:>7}  {:<9} {}",
        ns,
        num(shim),
        pod.unwrap_or("-"),
        id.map_or("-", short),
        name.unwrap_or("-"),
        num(pid),
        status.unwrap_or("-"),
        verdict
    );
}

fn container_line(shim: Option<i32>, c: &ContainerRow) {
    let f = &c.container;
    line(
        &f.namespace,
        shim,
        f.pod.as_deref(),
        Some(&f.id),
        f.name.as_deref(),
        f.pid,
        Some(&f.status),
        &verdict_text(&c.verdict),
    );
}

fn print_table(r: &Report) {
    println!(
        "{:<10} {:>7}  {:<24} {:<13}  {:<12} {:>7}  {:<9} CONTAINERD",
        "NAMESPACE", "SHIM", "POD", "CONTAINER", "NAME", "PID", "STATUS"
    );
    for s in &r.shims {
        if s.containers.is_empty() {
            let v = verdict_text(&s.verdict);
            line(
                &s.shim.namespace,
                Some(s.shim.pid),
                None,
                None,
                None,
                None,
                None,
                &v,
            );
        }
        for c in &s.containers {
            container_line(Some(s.shim.pid), c);
        }
    }
    for c in &r.orphans {
        container_line(None, c);
    }
    for s in &r.stale_sockets {
        println!("stale socket {} (nothing listens)", s.display());
    }
    println!(
        "{} shims, {} containers; unknown: {} shims, {} containers, {} stale sockets",
        r.shims.len(),
        r.containers().count(),
        r.unknown_shims(),
        r.unknown_containers(),
        r.stale_sockets.len()
    );
}

/// Removes every unknown container (through its shim while that lives, then from disk,
/// exactly as `delete` does) and every unknown shim left serving nothing. True if all went.
fn kill_unknown(r: &Report, quiet: bool) -> bool {
    let mut ok = true;
    let say = |m: String| {
        if quiet {
            eprintln!("{m}");
        } else {
            println!("{m}");
        }
    };
    for s in &r.shims {
        let mut all_removed = true;
        for c in s.containers.iter().filter(|c| c.verdict.is_unknown()) {
            let f = &c.container;
            match remove_container(&f.namespace, &f.id, &f.bundle, Some(&s.shim.socket)) {
                Ok(_) => say(format!("removed container {} of shim {}", f.id, s.shim.pid)),
                Err(e) => {
                    eprintln!("youki-shims: remove container {}: {e}", f.id);
                    all_removed = false;
                }
            }
        }
        ok &= all_removed;
        // A shim is stopped only once it serves nothing: never with a container in it.
        let serves_known = s.containers.iter().any(|c| !c.verdict.is_unknown());
        if s.verdict.is_unknown() && !serves_known && all_removed {
            if stop_shim(&s.shim) {
                say(format!(
                    "removed shim {} ({})",
                    s.shim.pid,
                    s.shim.socket.display()
                ));
            } else {
                eprintln!("youki-shims: shim {} did not exit", s.shim.pid);
                ok = false;
            }
        }
    }
    for s in &r.stale_sockets {
        remove_dead_socket(s);
        say(format!("removed stale socket {}", s.display()));
    }
    for c in r.orphans.iter().filter(|c| c.verdict.is_unknown()) {
        let f = &c.container;
        match remove_container(&f.namespace, &f.id, &f.bundle, None) {
            Ok(_) => say(format!("removed container {} (no shim)", f.id)),
            Err(e) => {
                eprintln!("youki-shims: remove container {}: {e}", f.id);
                ok = false;
            }
        }
    }
    ok
}

/// Asks a shim that serves nothing to shut down; one that does not go within 5 s is
/// killed (it holds no container by now). Then its socket goes.
fn stop_shim(s: &Shim) -> bool {
    let _ = shutdown_shim(&s.socket);
    // Gone, a zombie, or the PID reused by something that is not this shim.
    let gone = || {
        let proc = Path::new("/proc").join(s.pid.to_string());
        let stat = std::fs::read_to_string(proc.join("stat")).unwrap_or_default();
        let zombie = stat
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'));
        let same = std::fs::read(proc.join("cmdline"))
            .ok()
            .and_then(|raw| inventory::parse_shim_cmdline(s.pid, &raw))
            .is_some_and(|now| now.socket == s.socket);
        zombie || !same
    };
    let t = Instant::now();
    while !gone() && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    if !gone() {
        // SAFETY: plain kill(2) of the shim PID we found serving nothing.
        unsafe { libc::kill(s.pid, libc::SIGKILL) };
        std::thread::sleep(Duration::from_millis(100));
    }
    remove_dead_socket(&s.socket);
    gone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_takes_durations_as_people_write_them() {
        let g =
            |v: &str| parse(["--grace".to_string(), v.to_string()].into_iter()).map(|o| o.grace);
        assert_eq!(g("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(g("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(g("0s"), Ok(Duration::ZERO));
        assert_eq!(g("7"), Ok(Duration::from_secs(7)));
        assert!(g("soon").unwrap_err().contains("\"soon\""));
    }
}
