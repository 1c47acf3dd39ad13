//! What the operator tool (`youki-shims`) looks at: every youki shim daemon on the machine
//! and every container libcontainer keeps state for, matched with each other and judged
//! against what containerd knows. Scanning reads /proc and the state root; judging is a
//! pure function, so the rules are unit-tested without a machine to break.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::ids::{validate_id, validate_namespace};
use crate::runtime::youki::load_state;
use crate::shim::args::{Action, Args};
use crate::shim::bootstrap::group_of;

pub const SHIM_BINARY: &str = "containerd-shim-youki-v2";
/// Where libcontainer state lives: `<root>/<namespace>/<id>` (see runtime::youki::state_root).
pub const STATE_ROOT: &str = "/run/containerd/youki";

const POD_NAME: &str = "io.kubernetes.cri.sandbox-name";
const POD_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
const CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";

/// A serving shim daemon, from its command line (`start` spawns it with these flags).
#[derive(Debug, Clone, Serialize)]
pub struct Shim {
    pub pid: i32,
    pub namespace: String,
    /// The container it was started for (a pod's sandbox under CRI).
    pub id: String,
    /// containerd's gRPC address, the one that started it.
    pub address: String,
    pub socket: PathBuf,
    /// The group (pod) `start` spawned it for (`-group`); empty for a daemon of a version
    /// that did not record it.
    pub group: String,
    /// Time since the daemon started.
    #[serde(skip)]
    pub age: Option<Duration>,
}

/// A container libcontainer has state for.
#[derive(Debug, Clone, Serialize)]
pub struct Found {
    pub namespace: String,
    pub id: String,
    /// The init's PID while it runs.
    pub pid: Option<i32>,
    pub status: String,
    pub bundle: PathBuf,
    /// `<pod namespace>/<pod name>` for CRI containers.
    pub pod: Option<String>,
    /// The CRI container name, or "POD" for a sandbox.
    pub name: Option<String>,
    /// The sandbox, or the ctr group, it belongs to.
    pub group: String,
    /// Age since libcontainer created it.
    #[serde(skip)]
    pub age: Option<Duration>,
    /// The shim whose child the init is (shims are child subreapers).
    #[serde(skip)]
    pub parent: Option<i32>,
    /// The socket `start` recorded in the bundle's `address` file (absent for a sibling
    /// containerd 2.3 dialled without `start`).
    #[serde(skip)]
    pub recorded_socket: Option<PathBuf>,
}

/// The shim daemons in `proc` (normally /proc).
pub fn scan_shims(proc: &Path) -> Vec<Shim> {
    let mut shims = Vec::new();
    for e in std::fs::read_dir(proc).into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if let Some(mut s) = parse_shim_cmdline(pid, &raw) {
            s.age = process_age(&e.path());
            shims.push(s);
        }
    }
    shims.sort_by_key(|s| s.pid);
    shims
}

/// A serving daemon's argv: `containerd-shim-youki-v2 -namespace NS -id ID -address A
/// -socket S [-group G] ...`. `start`, `delete` and anything else are not shims that serve.
/// The flags are read by the daemon's own parser, from argv as it is: an empty argument
/// (`-address ""`) is a value, never skipped (which would make the next flag its value).
pub fn parse_shim_cmdline(pid: i32, raw: &[u8]) -> Option<Shim> {
    // Every argument ends with a NUL; only the last one's is a terminator to drop.
    let raw = raw.strip_suffix(b"\0")?;
    let argv: Vec<String> = raw
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let (exe, flags) = argv.split_first()?;
    if Path::new(exe).file_name()?.to_str()? != SHIM_BINARY {
        return None;
    }
    let args = Args::parse(flags.iter().cloned()).ok()?;
    if args.action != Action::Serve || args.socket.is_empty() || args.namespace.is_empty() {
        return None;
    }
    Some(Shim {
        pid,
        namespace: args.namespace,
        id: args.id,
        address: args.address,
        socket: PathBuf::from(args.socket),
        group: args.group,
        age: None,
    })
}

/// How long ago the process at `/proc/<pid>` started: field 22 of its stat (clock ticks
/// since boot) against the system's uptime.
fn process_age(proc_pid: &Path) -> Option<Duration> {
    let stat = std::fs::read_to_string(proc_pid.join("stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    let ticks: u64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz <= 0 {
        return None;
    }
    let started = ticks as f64 / hz as f64;
    Some(Duration::from_secs_f64((uptime - started).max(0.0)))
}

/// Every container under `root` (normally STATE_ROOT), in every namespace.
pub fn scan_containers(root: &Path, proc: &Path) -> Vec<Found> {
    let mut found = Vec::new();
    for ns in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let namespace = ns.file_name().to_string_lossy().into_owned();
        if validate_namespace(&namespace).is_err() {
            continue;
        }
        for c in std::fs::read_dir(ns.path()).into_iter().flatten().flatten() {
            let id = c.file_name().to_string_lossy().into_owned();
            if validate_id(&id).is_err() || !c.path().is_dir() {
                continue;
            }
            found.push(load_container(&namespace, &id, &c.path(), proc));
        }
    }
    found.sort_by(|a, b| (&a.namespace, &a.id).cmp(&(&b.namespace, &b.id)));
    found
}

fn load_container(namespace: &str, id: &str, dir: &Path, proc: &Path) -> Found {
    let Ok(c) = load_state(dir.to_path_buf()) else {
        // A create that died before libcontainer wrote its state: only the directory.
        return Found {
            namespace: namespace.to_string(),
            id: id.to_string(),
            pid: None,
            status: "unreadable".into(),
            bundle: PathBuf::new(),
            pod: None,
            name: None,
            group: id.to_string(),
            age: None,
            parent: None,
            recorded_socket: None,
        };
    };
    let ann = c.state.annotations.clone().unwrap_or_default();
    let pid = c.pid().map(|p| p.as_raw()).filter(|p| *p > 0);
    let pod = match (ann.get(POD_NAMESPACE), ann.get(POD_NAME)) {
        (Some(ns), Some(name)) => Some(format!("{ns}/{name}")),
        _ => None,
    };
    let name = match ann.get(CONTAINER_TYPE).map(String::as_str) {
        Some("sandbox") => Some("POD".to_string()),
        _ => ann.get(CONTAINER_NAME).cloned(),
    };
    let age = c
        .state
        .created
        .and_then(|t| SystemTime::from(t).elapsed().ok());
    Found {
        namespace: namespace.to_string(),
        id: id.to_string(),
        pid,
        status: format!("{:?}", c.status()).to_lowercase(),
        bundle: c.bundle().clone(),
        pod,
        name,
        group: group_of(&ann, id),
        age,
        parent: pid.and_then(|p| parent_of(proc, p)),
        recorded_socket: recorded_socket(c.bundle()),
    }
}

/// The socket `start` wrote to `<bundle>/address` (`unix://<path>`) for this container.
fn recorded_socket(bundle: &Path) -> Option<PathBuf> {
    let addr = std::fs::read_to_string(bundle.join("address")).ok()?;
    let addr = addr.trim();
    let path = addr.strip_prefix("unix://").unwrap_or(addr);
    (!path.is_empty()).then(|| PathBuf::from(path))
}

fn parent_of(proc: &Path, pid: i32) -> Option<i32> {
    let status = std::fs::read_to_string(proc.join(pid.to_string()).join("status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Sockets in `dir` (normally SOCKET_DIR) that nothing listens on any more, older than
/// `grace` (a shim binds its socket and listens at once; the age keeps a socket being set
/// up out). A shim killed before it could remove its socket leaves one; whoever made it,
/// a dead socket serves no one.
pub fn scan_stale_sockets(dir: &Path, grace: Duration) -> Vec<PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    let mut stale = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(meta) = e.metadata() else { continue };
        let old = meta
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age >= grace);
        if !meta.file_type().is_socket() || !old {
            continue;
        }
        let refused = std::os::unix::net::UnixStream::connect(e.path())
            .err()
            .is_some_and(|err| err.kind() == std::io::ErrorKind::ConnectionRefused);
        if refused {
            stale.push(e.path());
        }
    }
    stale.sort();
    stale
}

/// What one containerd knows in one namespace.
#[derive(Debug, Default, Clone)]
pub struct Known {
    pub containers: HashSet<String>,
    /// Task ID → PID.
    pub tasks: HashMap<String, u32>,
    /// Sandboxes containerd 2.x handed to a shim (sandboxer = "shim"): their pause
    /// container is the shim's own, with no container record or task in containerd.
    pub sandboxes: HashSet<String>,
    /// The operator says this containerd is gone for good (`--containerd-gone`): it knows
    /// nothing any more, and everything it started is unknown.
    pub gone: bool,
}

impl Known {
    /// The view of a containerd that is gone for good.
    pub fn gone() -> Known {
        Known {
            gone: true,
            ..Known::default()
        }
    }
}

/// Why a container of a containerd that is gone for good is unknown.
pub const GONE_REASON: &str = "its containerd is gone (--containerd-gone)";

/// containerd's answer for an (address, namespace): what it knows, or why we could not ask.
pub type View = std::result::Result<Known, String>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", content = "reason", rename_all = "lowercase")]
pub enum Verdict {
    Known,
    /// Too young to judge, or containerd could not be asked.
    Unverified(String),
    Unknown(String),
}

impl Verdict {
    pub fn is_unknown(&self) -> bool {
        matches!(self, Verdict::Unknown(_))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ContainerRow {
    #[serde(flatten)]
    pub container: Found,
    #[serde(flatten)]
    pub verdict: Verdict,
}

#[derive(Debug, Clone, Serialize)]
pub struct ShimRow {
    #[serde(flatten)]
    pub shim: Shim,
    #[serde(flatten)]
    pub verdict: Verdict,
    pub containers: Vec<ContainerRow>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub shims: Vec<ShimRow>,
    /// Containers no live shim serves.
    pub orphans: Vec<ContainerRow>,
    /// Shim sockets nothing listens on.
    pub stale_sockets: Vec<PathBuf>,
}

impl Report {
    pub fn unknown_shims(&self) -> usize {
        self.shims.iter().filter(|s| s.verdict.is_unknown()).count()
    }

    /// Unknown containers, in shims or orphaned.
    pub fn unknown_containers(&self) -> usize {
        self.containers().filter(|c| c.verdict.is_unknown()).count()
    }

    pub fn containers(&self) -> impl Iterator<Item = &ContainerRow> {
        self.shims
            .iter()
            .flat_map(|s| s.containers.iter())
            .chain(self.orphans.iter())
    }
}

/// The shim that serves `c`, by what was recorded, never by recomputing a socket name
/// (containerd 2.3 hashes the address it sends in `BootstrapParams`, which need not be the
/// `-address` the daemon was given): the init's parent while it runs; else the socket
/// `start` wrote to the bundle; else the shim of the container's group in its namespace.
fn owner<'a>(c: &Found, shims: &'a [Shim], containers: &[Found]) -> Option<&'a Shim> {
    if let Some(s) = c
        .parent
        .and_then(|ppid| shims.iter().find(|s| s.pid == ppid))
    {
        return Some(s);
    }
    if let Some(s) = c
        .recorded_socket
        .as_ref()
        .and_then(|sock| shims.iter().find(|s| &s.socket == sock))
    {
        return Some(s);
    }
    shims
        .iter()
        .find(|s| s.namespace == c.namespace && shim_group(s, containers) == c.group)
}

/// The group a shim serves: the one it recorded (`-group`), else (a daemon that did not
/// record it) the group of the container it was started for, which is the pod's sandbox
/// or the group's first container.
fn shim_group<'a>(s: &'a Shim, containers: &'a [Found]) -> &'a str {
    if !s.group.is_empty() {
        return &s.group;
    }
    containers
        .iter()
        .find(|c| c.namespace == s.namespace && c.id == s.id)
        .map_or(&s.id, |c| &c.group)
}

/// Matches containers to shims and judges both against containerd's views, keyed by
/// (containerd address, namespace). Containers younger than `grace` are not judged: they
/// may be in the middle of a Create that containerd has not recorded yet.
pub fn judge(
    shims: &[Shim],
    containers: Vec<Found>,
    views: &HashMap<(String, String), View>,
    grace: Duration,
) -> Report {
    let mut rows: Vec<ShimRow> = shims
        .iter()
        .map(|s| ShimRow {
            shim: s.clone(),
            verdict: Verdict::Known,
            containers: Vec::new(),
        })
        .collect();
    let mut orphans = Vec::new();
    let all = containers.clone();
    for c in containers {
        let young = c.age.is_some_and(|a| a < grace) || c.status == "creating";
        match owner(&c, shims, &all) {
            None => {
                let verdict = if young {
                    Verdict::Unverified("being created".into())
                } else {
                    Verdict::Unknown("no shim serves it".into())
                };
                orphans.push(ContainerRow {
                    container: c,
                    verdict,
                });
            }
            Some(s) => {
                let view = views.get(&(s.address.clone(), s.namespace.clone()));
                let verdict = container_verdict(&c, view, young);
                if let Some(row) = rows.iter_mut().find(|r| r.shim.pid == s.pid) {
                    row.containers.push(ContainerRow {
                        container: c,
                        verdict,
                    });
                }
            }
        }
    }
    for row in &mut rows {
        let young = row.shim.age.is_some_and(|a| a < grace);
        row.verdict = match shim_verdict(&row.containers) {
            // Between `start` and its first Create a shim serves nothing yet.
            Verdict::Unknown(_) if young && row.containers.is_empty() => {
                Verdict::Unverified("just started".into())
            }
            v => v,
        };
    }
    Report {
        shims: rows,
        orphans,
        stale_sockets: Vec::new(),
    }
}

fn container_verdict(c: &Found, view: Option<&View>, young: bool) -> Verdict {
    let known = match view {
        None => return Verdict::Unverified("containerd was not asked".into()),
        Some(Err(e)) => return Verdict::Unverified(format!("containerd unreachable: {e}")),
        Some(Ok(k)) => k,
    };
    let verdict = if known.gone {
        Verdict::Unknown(GONE_REASON.into())
    } else if known.sandboxes.contains(&c.id) {
        Verdict::Known
    } else if !known.containers.contains(&c.id) {
        Verdict::Unknown("containerd has no container record".into())
    } else {
        match known.tasks.get(&c.id) {
            None => Verdict::Unknown("containerd has no task".into()),
            Some(&tp) => match c.pid {
                Some(p) if tp != 0 && tp != p as u32 => {
                    Verdict::Unknown(format!("containerd's task has PID {tp}, not {p}"))
                }
                _ => Verdict::Known,
            },
        }
    };
    match verdict {
        Verdict::Unknown(_) if young => Verdict::Unverified("being created".into()),
        v => v,
    }
}

fn shim_verdict(containers: &[ContainerRow]) -> Verdict {
    if containers.is_empty() {
        return Verdict::Unknown("serves no container".into());
    }
    if containers.iter().all(|c| c.verdict.is_unknown()) {
        return Verdict::Unknown("containerd knows none of its containers".into());
    }
    containers
        .iter()
        .find_map(|c| match &c.verdict {
            Verdict::Unverified(r) => Some(Verdict::Unverified(r.clone())),
            _ => None,
        })
        .unwrap_or(Verdict::Known)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shim::bootstrap::{SOCKET_DIR, socket_path};

    const ADDR: &str = "/run/containerd/containerd.sock";

    fn shim(pid: i32, group: &str) -> Shim {
        Shim {
            pid,
            namespace: "k8s.io".into(),
            id: group.into(),
            address: ADDR.into(),
            socket: socket_path(Path::new(SOCKET_DIR), ADDR, "k8s.io", group),
            group: group.into(),
            age: Some(Duration::from_secs(60)),
        }
    }

    fn found(id: &str, group: &str, pid: Option<i32>, parent: Option<i32>) -> Found {
        Found {
            namespace: "k8s.io".into(),
            id: id.into(),
            pid,
            status: if pid.is_some() { "running" } else { "stopped" }.into(),
            bundle: PathBuf::from("/b").join(id),
            pod: None,
            name: None,
            group: group.into(),
            age: Some(Duration::from_secs(60)),
            parent,
            recorded_socket: None,
        }
    }

    fn view(records: &[&str], tasks: &[(&str, u32)]) -> HashMap<(String, String), View> {
        let k = Known {
            containers: records.iter().map(|s| s.to_string()).collect(),
            tasks: tasks.iter().map(|(i, p)| (i.to_string(), *p)).collect(),
            sandboxes: HashSet::new(),
            gone: false,
        };
        HashMap::from([((ADDR.to_string(), "k8s.io".to_string()), Ok(k))])
    }

    #[test]
    fn parses_only_serving_daemons() {
        let daemon = b"/opt/bin/containerd-shim-youki-v2\0-namespace\0k8s.io\0-id\0p1\0-address\0/run/c.sock\0-socket\0/run/containerd/s/ab\0-debug\0";
        let s = parse_shim_cmdline(7, daemon).unwrap();
        assert_eq!(
            (
                s.pid,
                s.namespace.as_str(),
                s.id.as_str(),
                s.address.as_str()
            ),
            (7, "k8s.io", "p1", "/run/c.sock")
        );
        assert_eq!(s.socket, PathBuf::from("/run/containerd/s/ab"));
        let start = b"containerd-shim-youki-v2\0-namespace\0k8s.io\0-id\0p1\0start\0";
        assert!(parse_shim_cmdline(8, start).is_none());
        let other = b"/usr/bin/containerd-shim-runc-v2\0-socket\0/x\0-namespace\0n\0";
        assert!(parse_shim_cmdline(9, other).is_none());
    }

    #[test]
    fn a_healthy_pod_is_known() {
        let shims = [shim(100, "pod")];
        let cs = vec![
            found("pod", "pod", Some(101), Some(100)),
            found("app", "pod", Some(102), Some(100)),
        ];
        let r = judge(
            &shims,
            cs,
            &view(&["pod", "app"], &[("pod", 101), ("app", 102)]),
            Duration::ZERO,
        );
        assert_eq!(r.shims[0].verdict, Verdict::Known);
        assert_eq!(r.shims[0].containers.len(), 2);
        assert_eq!((r.unknown_shims(), r.unknown_containers()), (0, 0));
    }

    #[test]
    fn records_deleted_behind_the_shims_back_make_it_unknown() {
        let shims = [shim(100, "pod")];
        let cs = vec![found("pod", "pod", Some(101), Some(100))];
        let r = judge(&shims, cs, &view(&[], &[]), Duration::ZERO);
        assert_eq!(
            r.shims[0].containers[0].verdict,
            Verdict::Unknown("containerd has no container record".into())
        );
        assert!(r.shims[0].verdict.is_unknown());
        assert_eq!((r.unknown_shims(), r.unknown_containers()), (1, 1));
    }

    #[test]
    fn a_record_without_a_task_or_with_another_pid_is_unknown() {
        let shims = [shim(100, "pod")];
        let cs = vec![
            found("pod", "pod", Some(101), Some(100)),
            found("a", "pod", Some(102), Some(100)),
            found("b", "pod", Some(103), Some(100)),
        ];
        let r = judge(
            &shims,
            cs,
            &view(&["pod", "a", "b"], &[("pod", 101), ("b", 999)]),
            Duration::ZERO,
        );
        let v: Vec<_> = r.shims[0].containers.iter().map(|c| &c.verdict).collect();
        assert_eq!(v[0], &Verdict::Known);
        assert_eq!(v[1], &Verdict::Unknown("containerd has no task".into()));
        assert_eq!(
            v[2],
            &Verdict::Unknown("containerd's task has PID 999, not 103".into())
        );
        // The shim still serves a known container: only its containers are flagged.
        assert_eq!(r.shims[0].verdict, Verdict::Known);
        assert_eq!((r.unknown_shims(), r.unknown_containers()), (0, 2));
    }

    #[test]
    fn stopped_containers_find_their_shim_by_socket() {
        let shims = [shim(100, "pod")];
        let cs = vec![found("app", "pod", None, None)];
        let r = judge(&shims, cs, &view(&["app"], &[("app", 0)]), Duration::ZERO);
        assert_eq!(r.shims[0].containers.len(), 1);
        assert!(r.orphans.is_empty());
        assert_eq!(r.unknown_containers(), 0);
    }

    #[test]
    fn an_empty_argument_is_a_value_not_a_gap() {
        // `-address ""`: skipping the empty argument made `-socket` the address.
        let daemon = b"/opt/bin/containerd-shim-youki-v2\0-namespace\0k8s.io\0-id\0p1\0-address\0\0-socket\0/run/containerd/s/ab\0-group\0p1\0";
        let s = parse_shim_cmdline(7, daemon).unwrap();
        assert_eq!(s.address, "");
        assert_eq!(s.socket, PathBuf::from("/run/containerd/s/ab"));
        assert_eq!((s.id.as_str(), s.group.as_str()), ("p1", "p1"));
        // An empty ID likewise stays empty rather than taking `-address`.
        let daemon = b"containerd-shim-youki-v2\0-namespace\0n\0-id\0\0-address\0/a\0-socket\0/s\0";
        let s = parse_shim_cmdline(8, daemon).unwrap();
        assert_eq!((s.id.as_str(), s.address.as_str()), ("", "/a"));
        assert_eq!(s.group, "");
        // A daemon is identified by its socket and namespace: without them it is not one.
        let no_socket = b"containerd-shim-youki-v2\0-namespace\0n\0-socket\0\0";
        assert!(parse_shim_cmdline(9, no_socket).is_none());
    }

    #[test]
    fn a_stopped_container_finds_a_shim_whose_socket_hashes_another_address() {
        // containerd 2.3 names the socket after the address in BootstrapParams, which
        // need not be `-address`: recomputing the name from `-address` misses the shim, and
        // its stopped containers (no init, so no parent) looked orphaned.
        let mut s = shim(100, "pod");
        s.socket = socket_path(Path::new(SOCKET_DIR), "/elsewhere.sock", "k8s.io", "pod");
        let sibling = found("app", "pod", None, None);
        let r = judge(
            std::slice::from_ref(&s),
            vec![sibling.clone()],
            &view(&["app"], &[("app", 0)]),
            Duration::ZERO,
        );
        assert!(r.orphans.is_empty(), "{:?}", r.orphans);
        assert_eq!(r.shims[0].containers.len(), 1);
        assert_eq!(r.unknown_containers(), 0);

        // A daemon that did not record its group: the group of the container it was
        // started for (the sandbox) stands in.
        let mut old = s.clone();
        old.group.clear();
        let cs = vec![found("pod", "pod", Some(101), Some(100)), sibling.clone()];
        let r = judge(
            &[old.clone()],
            cs,
            &view(&["pod", "app"], &[("pod", 101), ("app", 0)]),
            Duration::ZERO,
        );
        assert!(r.orphans.is_empty(), "{:?}", r.orphans);
        assert_eq!(r.shims[0].containers.len(), 2);

        // The socket `start` recorded in the bundle decides when nothing else can (a ctr
        // group whose first container is gone, started by a daemon that recorded no group).
        let mut first_gone = old.clone();
        first_gone.id = "first".into();
        let mut second = found("second", "g", None, None);
        second.recorded_socket = Some(s.socket.clone());
        let r = judge(
            &[first_gone.clone()],
            vec![second],
            &view(&["second"], &[("second", 0)]),
            Duration::ZERO,
        );
        assert!(r.orphans.is_empty(), "{:?}", r.orphans);

        // Another pod's or namespace's stopped container is still no one's.
        let mut other_ns = found("app", "pod", None, None);
        other_ns.namespace = "default".into();
        let r = judge(
            std::slice::from_ref(&s),
            vec![found("x", "other-pod", None, None), other_ns],
            &view(&[], &[]),
            Duration::ZERO,
        );
        assert_eq!(r.orphans.len(), 2);
    }

    #[test]
    fn empty_shims_and_shimless_containers_are_unknown() {
        let shims = [shim(100, "gone-pod")];
        let cs = vec![found("x", "other", Some(300), Some(1))];
        let r = judge(&shims, cs, &view(&["x"], &[("x", 300)]), Duration::ZERO);
        assert_eq!(
            r.shims[0].verdict,
            Verdict::Unknown("serves no container".into())
        );
        assert_eq!(
            r.orphans[0].verdict,
            Verdict::Unknown("no shim serves it".into())
        );
        assert_eq!((r.unknown_shims(), r.unknown_containers()), (1, 1));

        // A shim just started has not been sent its first Create yet.
        let mut new = shim(100, "gone-pod");
        new.age = Some(Duration::from_secs(1));
        let r = judge(&[new], vec![], &view(&[], &[]), Duration::from_secs(10));
        assert_eq!(
            r.shims[0].verdict,
            Verdict::Unverified("just started".into())
        );
    }

    #[test]
    fn own_process_age_is_read_from_proc() {
        let age = process_age(Path::new("/proc/self")).expect("age of this process");
        assert!(age < Duration::from_secs(24 * 3600), "{age:?}");
    }

    #[test]
    fn only_refused_sockets_older_than_the_grace_are_stale() {
        let dir = std::env::temp_dir().join(format!("youki-stale-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let live = std::os::unix::net::UnixListener::bind(dir.join("live")).unwrap();
        drop(std::os::unix::net::UnixListener::bind(dir.join("dead")).unwrap());
        std::fs::write(dir.join("file"), "").unwrap();
        assert_eq!(
            scan_stale_sockets(&dir, Duration::ZERO),
            vec![dir.join("dead")]
        );
        assert!(scan_stale_sockets(&dir, Duration::from_secs(60)).is_empty());
        drop(live);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn everything_of_a_containerd_that_is_gone_is_unknown() {
        let shims = [shim(10, "pod1")];
        let views = HashMap::from([((ADDR.to_string(), "k8s.io".to_string()), Ok(Known::gone()))]);
        let r = judge(
            &shims,
            vec![found("pod1", "pod1", Some(11), Some(10))],
            &views,
            Duration::ZERO,
        );
        assert_eq!(
            r.shims[0].containers[0].verdict,
            Verdict::Unknown(GONE_REASON.into())
        );
        assert!(r.shims[0].verdict.is_unknown());
        // Still: nothing younger than the grace is judged.
        let r = judge(
            &shims,
            vec![found("pod1", "pod1", Some(11), Some(10))],
            &views,
            Duration::from_secs(3600),
        );
        assert!(!r.shims[0].containers[0].verdict.is_unknown());
    }

    #[test]
    fn young_containers_and_unreachable_containerd_are_not_judged() {
        let shims = [shim(100, "pod")];
        let mut young = found("pod", "pod", Some(101), Some(100));
        young.age = Some(Duration::from_secs(1));
        let r = judge(
            &shims,
            vec![young],
            &view(&[], &[]),
            Duration::from_secs(10),
        );
        assert_eq!(
            r.shims[0].containers[0].verdict,
            Verdict::Unverified("being created".into())
        );
        assert!(!r.shims[0].verdict.is_unknown());

        let views = HashMap::from([(
            (ADDR.to_string(), "k8s.io".to_string()),
            Err("connection refused".to_string()),
        )]);
        let cs = vec![found("pod", "pod", Some(101), Some(100))];
        let r = judge(&shims, cs, &views, Duration::ZERO);
        assert!(matches!(r.shims[0].verdict, Verdict::Unverified(_)));
        assert_eq!(r.unknown_containers(), 0);
    }
}
