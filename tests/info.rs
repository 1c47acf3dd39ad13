//! `-info` (containerd 2.x's runtime introspection): the output decodes and names us, every
//! feature it advertises works in a real container, and containerd (ctr, CRI) reads it.
//! Runs on every containerd version; the parts only 2.x has are asserted there.

mod common;

use std::io::Read;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::kubelet::{Cri, PodGuard, PodSpec, cri_socket};
use common::*;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::empty::Empty;
use containerd_shim_protos::protobuf::{Message, UnknownValueRef};
use serde_json::{Value, json};

const SHIM: &str = env!("CARGO_BIN_EXE_containerd-shim-youki-v2");
const FEATURES_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/features/Features";
/// hack/containerd.sh's handler that runs our shim under runc's runtime type.
const BY_PATH_HANDLER: &str = "youki-by-path";

/// A length-delimited field of a protobuf message.
fn field(msg: &[u8], n: u32) -> Option<Vec<u8>> {
    let m = Empty::parse_from_bytes(msg).expect("protobuf message");
    match m.special_fields.unknown_fields().get(n) {
        Some(UnknownValueRef::LengthDelimited(b)) => Some(b.to_vec()),
        _ => None,
    }
}

/// Runs `<shim> -info` as containerd does (options, if any, on stdin).
fn run_info(stdin: &[u8]) -> std::process::Output {
    let mut child = Command::new(SHIM)
        .arg("-info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run shim -info");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

/// A failed run's stderr and stdout (libcontainer's init logs its errors to the latter).
fn output(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    )
}

/// The features document our shim advertises.
fn advertised() -> Value {
    let o = run_info(b"");
    assert!(
        o.status.success(),
        "-info failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let any = Any::parse_from_bytes(&field(&o.stdout, 4).expect("RuntimeInfo.features")).unwrap();
    assert_eq!(any.type_url, FEATURES_URL);
    serde_json::from_slice(&any.value).expect("features JSON")
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn info_names_the_runtime_and_carries_features() {
    let o = run_info(b"");
    assert!(o.status.success(), "{}", output(&o));
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(field(&o.stdout, 1).unwrap(), b"io.containerd.youki.v2");
    let version = field(&o.stdout, 2).expect("RuntimeInfo.version");
    assert_eq!(
        field(&version, 1).unwrap(),
        env!("CARGO_PKG_VERSION").as_bytes()
    );
    let f = advertised();
    assert!(f["ociVersionMin"].is_string() && f["ociVersionMax"].is_string());
    assert!(strings(&f["linux"]["namespaces"]).contains(&"pid".to_string()));
    // libcontainer has no idmapped mounts: said so, so containerd refuses them.
    assert_eq!(f["linux"]["mountExtensions"]["idmap"]["enabled"], false);

    // runc's options (what CRI sends for a runc-type handler) are echoed back.
    let mut opts = Any::new();
    opts.type_url = "containerd.runc.v1.Options".into();
    let o = run_info(&opts.write_to_bytes().unwrap());
    assert!(o.status.success(), "{}", output(&o));
    let echoed = Any::parse_from_bytes(&field(&o.stdout, 3).unwrap()).unwrap();
    assert_eq!(echoed.type_url, opts.type_url);

    // Bad input: an error naming it, nothing on stdout.
    opts.type_url = "example.com/NotOptions".into();
    let o = run_info(&opts.write_to_bytes().unwrap());
    assert!(!o.status.success());
    assert!(o.stdout.is_empty());
    assert!(String::from_utf8_lossy(&o.stderr).contains("NotOptions"));
}

/// containerd 2.x runs -info for `ctr plugins inspect-runtime` (introspection PluginInfo)
/// and decodes it with its own types; 1.x has neither.
#[test]
fn containerd_decodes_our_info() {
    if containerd_major() < 2 {
        let o = ctr(&["plugins", "inspect-runtime", "--runtime", RUNTIME]);
        assert!(!o.status.success(), "containerd 1.x has no inspect-runtime");
        return;
    }
    let out = ctr_ok(&["plugins", "inspect-runtime", "--runtime", RUNTIME]);
    let info: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(info["Name"], "io.containerd.youki.v2", "{out}");
    assert_eq!(
        info["Version"]["Version"],
        env!("CARGO_PKG_VERSION"),
        "{out}"
    );
    // containerd's features.Features, re-encoded: the same document as ours.
    let theirs = &info["Features"];
    let ours = advertised();
    for key in ["ociVersionMin", "ociVersionMax", "hooks", "mountOptions"] {
        assert_eq!(theirs[key], ours[key], "{key}: {out}");
    }
    for key in [
        "namespaces",
        "capabilities",
        "cgroup",
        "seccomp",
        "mountExtensions",
    ] {
        assert_eq!(
            theirs["linux"][key], ours["linux"][key],
            "linux.{key}: {out}"
        );
    }
}

/// CRI (2.x) introspects runtime handlers at start and lists their features in Status.
/// containerd 2.1 asks only runc-type handlers, hence hack/containerd.sh's youki-by-path
/// (our shim under runc's type): it must show recursive read-only mounts, and no user
/// namespaces (they need idmapped mounts, which libcontainer lacks).
#[test]
fn cri_lists_our_features() {
    let mut cri = Cri::connect(&cri_socket());
    let handlers = cri.runtime_handlers().expect("Status");
    if containerd_major() < 2 {
        assert!(handlers.is_empty(), "{handlers:?}");
        return;
    }
    let h = handlers
        .iter()
        .find(|h| h.name == BY_PATH_HANDLER)
        .unwrap_or_else(|| panic!("no {BY_PATH_HANDLER} in {handlers:?}"));
    let f = h.features.as_ref().expect("features");
    assert!(f.recursive_read_only_mounts, "{handlers:?}");
    assert!(!f.user_namespaces, "{handlers:?}");
}

/// A host directory with a tmpfs mounted on it and another tmpfs on its `sub`, removed
/// when dropped.
struct HostTree(PathBuf);

impl HostTree {
    fn new(tag: &str) -> HostTree {
        HostTree::with_flags(tag, &[])
    }

    /// Both mounts remounted with these mount(8) flags (after the files are written).
    fn with_flags(tag: &str, flags: &[&str]) -> HostTree {
        let dir = std::env::temp_dir().join(unique(tag));
        let tree = HostTree(dir.clone());
        std::fs::create_dir_all(&dir).unwrap();
        mount(&["-t", "tmpfs", "tmpfs"], &dir);
        std::fs::create_dir(dir.join("sub")).unwrap();
        mount(&["-t", "tmpfs", "tmpfs"], &dir.join("sub"));
        std::fs::write(dir.join("top-file"), "top").unwrap();
        std::fs::write(dir.join("sub/sub-file"), "sub").unwrap();
        if !flags.is_empty() {
            let o = format!("remount,{}", flags.join(","));
            mount(&["-o", &o], &dir.join("sub"));
            mount(&["-o", &o], &dir);
        }
        tree
    }
}

fn mount(args: &[&str], at: &Path) {
    let ok = Command::new("mount")
        .args(args)
        .arg(at)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "mount {args:?} {}", at.display());
}

impl Drop for HostTree {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-R").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What each advertised mount option must do, seen in the container's mountinfo: the flags
/// the mount (`top`) and its submount (`sub`, for rbind) must show and must not show.
/// Options that only clear a flag are given after the option that set it, or (the
/// recursive ones, which clear what the source has) on a source with every flag set.
struct OptionCase {
    options: &'static [&'static str],
    /// The source is [`FLAGS`]-mounted.
    flagged: bool,
    top_has: &'static [&'static str],
    top_lacks: &'static [&'static str],
    sub_has: &'static [&'static str],
    sub_lacks: &'static [&'static str],
}

const fn case(
    options: &'static [&'static str],
    top_has: &'static [&'static str],
    top_lacks: &'static [&'static str],
    sub_has: &'static [&'static str],
    sub_lacks: &'static [&'static str],
) -> OptionCase {
    OptionCase {
        options,
        flagged: false,
        top_has,
        top_lacks,
        sub_has,
        sub_lacks,
    }
}

const fn flagged(
    options: &'static [&'static str],
    top_has: &'static [&'static str],
    top_lacks: &'static [&'static str],
    sub_has: &'static [&'static str],
    sub_lacks: &'static [&'static str],
) -> OptionCase {
    OptionCase {
        flagged: true,
        ..case(options, top_has, top_lacks, sub_has, sub_lacks)
    }
}

/// How the flagged source tree is mounted.
const FLAGS: &[&str] = &[
    "ro",
    "nosuid",
    "nodev",
    "noexec",
    "noatime",
    "nodiratime",
    "nosymfollow",
];

/// Keyed by the option under test (the last one in `options`).
#[rustfmt::skip]
const OPTION_CASES: &[OptionCase] = &[
    case(&["rbind", "defaults"], &[], &["ro"], &[], &["ro"]),
    // Without rbind the submount is not carried over (checked separately).
    case(&["bind"], &[], &["ro"], &[], &[]),
    case(&["rbind"], &[], &["ro"], &[], &["ro"]),
    case(&["rbind", "ro"], &["ro"], &[], &[], &["ro"]),
    case(&["rbind", "ro", "rw"], &[], &["ro"], &[], &["ro"]),
    case(&["rbind", "nosuid"], &["nosuid"], &[], &[], &["nosuid"]),
    case(&["rbind", "nosuid", "suid"], &[], &["nosuid"], &[], &[]),
    case(&["rbind", "nodev"], &["nodev"], &[], &[], &["nodev"]),
    case(&["rbind", "nodev", "dev"], &[], &["nodev"], &[], &[]),
    case(&["rbind", "noexec"], &["noexec"], &[], &[], &["noexec"]),
    case(&["rbind", "noexec", "exec"], &[], &["noexec"], &[], &[]),
    case(&["rbind", "noatime"], &["noatime"], &[], &[], &["noatime"]),
    case(&["rbind", "noatime", "atime"], &[], &["noatime"], &[], &[]),
    case(&["rbind", "nodiratime"], &["nodiratime"], &[], &[], &["nodiratime"]),
    case(&["rbind", "nodiratime", "diratime"], &[], &["nodiratime"], &[], &[]),
    // (strictatime and noatime win over relatime in one mount, as in mount(8).)
    case(&["rbind", "relatime"], &["relatime"], &[], &[], &[]),
    case(&["rbind", "relatime", "norelatime"], &[], &["noatime"], &[], &[]),
    case(&["rbind", "strictatime"], &[], &["relatime", "noatime"], &["relatime"], &[]),
    case(&["rbind", "strictatime", "nostrictatime"], &["relatime"], &[], &[], &[]),
    case(&["rbind", "rro"], &["ro"], &[], &["ro"], &[]),
    flagged(&["rbind", "rrw"], &[], &["ro"], &[], &["ro"]),
    case(&["rbind", "rnosuid"], &["nosuid"], &[], &["nosuid"], &[]),
    flagged(&["rbind", "rsuid"], &[], &["nosuid"], &[], &["nosuid"]),
    case(&["rbind", "rnodev"], &["nodev"], &[], &["nodev"], &[]),
    flagged(&["rbind", "rdev"], &[], &["nodev"], &[], &["nodev"]),
    case(&["rbind", "rnoexec"], &["noexec"], &[], &["noexec"], &[]),
    flagged(&["rbind", "rexec"], &[], &["noexec"], &[], &["noexec"]),
    case(&["rbind", "rnodiratime"], &["nodiratime"], &[], &["nodiratime"], &[]),
    flagged(&["rbind", "rdiratime"], &[], &["nodiratime"], &[], &["nodiratime"]),
    case(&["rbind", "rnoatime"], &["noatime"], &[], &["noatime"], &[]),
    flagged(&["rbind", "ratime"], &[], &["noatime"], &[], &["noatime"]),
    flagged(&["rbind", "rrelatime"], &["relatime"], &["noatime"], &["relatime"], &["noatime"]),
    case(&["rbind", "rstrictatime"], &[], &["relatime", "noatime"], &[], &["relatime", "noatime"]),
    // Clearing the default atime mode changes nothing visible: the mount must just work.
    case(&["rbind", "rnorelatime"], &[], &[], &[], &[]),
    case(&["rbind", "rnostrictatime"], &[], &[], &[], &[]),
    case(&["rbind", "rnosymfollow"], &["nosymfollow"], &[], &["nosymfollow"], &[]),
    flagged(&["rbind", "rsymfollow"], &[], &["nosymfollow"], &[], &["nosymfollow"]),
];

/// Per-mount options of each mount point in a mountinfo text.
fn mount_flags(mountinfo: &str) -> Vec<(String, Vec<String>)> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((
                f.get(4)?.to_string(),
                f.get(5)?.split(',').map(str::to_string).collect(),
            ))
        })
        .collect()
}

/// Every advertised mount option, on a bind mount of a tree with a submount, has its effect
/// in a real container (one mount per option, one container for all).
#[test]
fn advertised_mount_options_apply() {
    let f = advertised();
    let advertised = strings(&f["mountOptions"]);
    for o in &advertised {
        assert!(
            OPTION_CASES
                .iter()
                .any(|c| c.options.last() == Some(&o.as_str())),
            "mount option {o} is advertised but not tested"
        );
    }
    let plain = HostTree::new("mntopts");
    let flagged_tree = HostTree::with_flags("mntopts-flagged", FLAGS);
    let id = unique("mntopts");
    let _rm = RemoveOnDrop(id.clone());
    let mut args = vec![
        "run".to_string(),
        "--rm".into(),
        "--runtime".into(),
        RUNTIME.into(),
    ];
    let mut cases = Vec::new();
    for (i, c) in OPTION_CASES.iter().enumerate() {
        let opt = c.options.last().unwrap().to_string();
        if !advertised.contains(&opt) {
            continue;
        }
        args.push("--mount".into());
        args.push(format!(
            "type=bind,src={},dst=/m{i},options={}",
            if c.flagged { &flagged_tree.0 } else { &plain.0 }.display(),
            c.options.join(":")
        ));
        cases.push((i, c));
    }
    args.extend([
        BUSYBOX.into(),
        id.clone(),
        "cat".into(),
        "/proc/self/mountinfo".into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = ctr(&args);
    assert!(o.status.success(), "{}", output(&o));
    let mounts = mount_flags(&String::from_utf8_lossy(&o.stdout));
    let flags_at = |p: &str| {
        mounts
            .iter()
            .rev()
            .find(|(m, _)| m == p)
            .map(|(_, f)| f.clone())
    };
    for (i, c) in cases {
        let top =
            flags_at(&format!("/m{i}")).unwrap_or_else(|| panic!("no /m{i} for {:?}", c.options));
        let sub = flags_at(&format!("/m{i}/sub"));
        let what = format!("{:?}: top {top:?}, sub {sub:?}", c.options);
        for h in c.top_has {
            assert!(top.iter().any(|f| f == h), "{what}: want {h}");
        }
        for l in c.top_lacks {
            assert!(!top.iter().any(|f| f == l), "{what}: want no {l}");
        }
        if c.options.contains(&"rbind") {
            let sub = sub
                .as_ref()
                .unwrap_or_else(|| panic!("{what}: rbind without the submount"));
            for h in c.sub_has {
                assert!(sub.iter().any(|f| f == h), "{what}: sub wants {h}");
            }
            for l in c.sub_lacks {
                assert!(!sub.iter().any(|f| f == l), "{what}: sub wants no {l}");
            }
        } else {
            assert!(sub.is_none(), "{what}: bind carried the submount");
        }
    }
    assert_nothing_left(&id);
}

/// `rro` really is read-only all the way down: writing fails on the mount and on its
/// submount, where plain `ro` leaves the submount writable.
#[test]
fn rro_mount_is_read_only_all_the_way_down() {
    if !strings(&advertised()["mountOptions"]).contains(&"rro".to_string()) {
        return;
    }
    let tree = HostTree::new("rro");
    let id = unique("rro");
    let _rm = RemoveOnDrop(id.clone());
    let script = "for f in /rro/x /rro/sub/x /ro/x /ro/sub/x; do touch $f 2>/dev/null && echo $f writable || echo $f readonly; done";
    let o = ctr(&[
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        "--mount",
        &format!(
            "type=bind,src={},dst=/rro,options=rbind:rro",
            tree.0.display()
        ),
        "--mount",
        &format!(
            "type=bind,src={},dst=/ro,options=rbind:ro",
            tree.0.display()
        ),
        BUSYBOX,
        &id,
        "sh",
        "-c",
        script,
    ]);
    assert!(o.status.success(), "{}", output(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "/rro/x readonly\n/rro/sub/x readonly\n/ro/x readonly\n/ro/sub/x writable\n"
    );
    assert_nothing_left(&id);
}

/// CRI (2.x) passes a recursive read-only mount only to a handler whose features say
/// `rro`: through youki-by-path it reaches our shim, and the submount is read-only.
#[test]
fn cri_recursive_read_only_mount() {
    if containerd_major() < 2 {
        return;
    }
    let mut cri = Cri::connect(&cri_socket());
    // Asked first: containerd 2.1 dereferences a handler's nil features (no -info answer)
    // for a recursive read-only mount and crashes (spec_linux_opts.go:183).
    let handlers = cri.runtime_handlers().expect("Status");
    assert!(
        handlers.iter().any(|h| h.name == BY_PATH_HANDLER
            && h.features
                .as_ref()
                .is_some_and(|f| f.recursive_read_only_mounts)),
        "{BY_PATH_HANDLER} has no rro feature: {handlers:?}"
    );
    let tree = HostTree::new("cri-rro");
    let mut spec = PodSpec::new("info-rro");
    spec.handler = BY_PATH_HANDLER.into();
    let pod = cri.run_pod(&spec).expect("RunPodSandbox");
    let _guard = PodGuard::new(&pod, &spec, &cri_socket());
    let mut config = spec.container("rro", &["sleep", "3600"]);
    config.mounts.push(k8s_cri::v1::Mount {
        container_path: "/data".into(),
        host_path: tree.0.to_string_lossy().into_owned(),
        readonly: true,
        recursive_read_only: true,
        propagation: k8s_cri::v1::MountPropagation::PropagationPrivate as i32,
        ..Default::default()
    });
    let id = cri
        .create_container(&pod, &spec, config)
        .expect("CreateContainer with a recursive read-only mount");
    cri.start_container(&id).expect("StartContainer");
    for path in ["/data/x", "/data/sub/x"] {
        let (code, _, err) = cri
            .exec_sync(&id, &["touch", path], Duration::from_secs(10))
            .expect("ExecSync");
        assert_ne!(code, 0, "{path} is writable");
        assert!(err.contains("Read-only"), "{path}: {err}");
    }
}

/// A container from a spec file: a static busybox rootfs and `ctr oci spec`'s defaults.
struct SpecRun {
    dir: PathBuf,
    spec: Value,
}

impl SpecRun {
    fn new(id: &str, script: &str) -> SpecRun {
        let dir = std::env::temp_dir().join(id);
        let rootfs = dir.join("rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).unwrap();
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("busybox-static");
        for applet in ["sh", "cat", "readlink", "mkdir", "echo", "grep", "sleep"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        for d in ["proc", "sys", "dev", "tmp"] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        let mut spec: Value = serde_json::from_str(&ctr_ok(&["oci", "spec"])).unwrap();
        spec["process"]["args"] = json!(["/bin/sh", "-c", script]);
        spec["process"]["env"] = json!(["PATH=/bin"]);
        spec["process"]["terminal"] = json!(false);
        spec["root"] = json!({"path": rootfs, "readonly": false});
        spec["linux"]["cgroupsPath"] = json!(format!("/{NS}/{id}"));
        SpecRun { dir, spec }
    }

    /// `ctr run --rm --config`: the container's output.
    fn run(&self, id: &str) -> std::process::Output {
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

impl Drop for SpecRun {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ns_inode(link: &str) -> String {
    std::fs::read_link(link)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Every advertised namespace type is created: the container's namespace differs from the
/// host's for each (time needs no offsets). The user namespace (with an ID mapping) gets a
/// container of its own, with all the others.
#[test]
fn advertised_namespaces_are_created() {
    let advertised = strings(&advertised()["linux"]["namespaces"]);
    let others: Vec<String> = advertised
        .iter()
        .filter(|t| *t != "user")
        .cloned()
        .collect();
    assert_namespaces_created(&others);
    if advertised.iter().any(|t| t == "user") {
        assert_namespaces_created(&advertised);
    }
}

fn assert_namespaces_created(types: &[String]) {
    let proc_name = |t: &str| {
        match t {
            "mount" => "mnt",
            "network" => "net",
            other => other,
        }
        .to_string()
    };
    let id = unique("ns");
    let _rm = RemoveOnDrop(id.clone());
    let script: String = types
        .iter()
        .map(|t| format!("echo {t} $(readlink /proc/self/ns/{}); ", proc_name(t)))
        .collect();
    let mut s = SpecRun::new(&id, &script);
    s.spec["linux"]["namespaces"] =
        json!(types.iter().map(|t| json!({"type": t})).collect::<Vec<_>>());
    let userns = types.iter().any(|t| t == "user");
    if userns {
        let map = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        s.spec["linux"]["uidMappings"] = map.clone();
        s.spec["linux"]["gidMappings"] = map;
        // The rootfs belongs to the container's root, as `ctr run --uidmap` would make it.
        let ok = Command::new("chown")
            .args(["-R", "-h", "100000:100000"])
            .arg(s.dir.join("rootfs"))
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "chown rootfs");
    }
    let o = s.run(&id);
    // ctr 1.x sends the old runc CreateOptions (stdio owner) with ID mappings: accepted.
    assert!(o.status.success(), "{}", output(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    for t in types {
        let host = ns_inode(&format!("/proc/self/ns/{}", proc_name(t)));
        let inside = out
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{t} ")))
            .unwrap_or_else(|| panic!("no {t} in {out}"));
        assert!(
            inside.starts_with(&format!("{}:[", proc_name(t))),
            "{t}: {out}"
        );
        assert_ne!(inside, host, "{t} namespace not created: {out}");
    }
    assert_nothing_left(&id);
}

/// Every advertised hook runs (createContainer and startContainer inside the container).
#[test]
fn advertised_hooks_run() {
    let hooks = strings(&advertised()["hooks"]);
    let id = unique("hooks");
    let _rm = RemoveOnDrop(id.clone());
    let mut s = SpecRun::new(&id, "echo ran");
    let logdir = s.dir.join("log");
    std::fs::create_dir_all(&logdir).unwrap();
    let mut spec_hooks = serde_json::Map::new();
    for h in &hooks {
        // startContainer runs in the container after pivot_root and sees /log; the others
        // see the host's paths (createContainer runs before pivot_root).
        let inside = h == "startContainer";
        let log = if inside {
            PathBuf::from("/log")
        } else {
            logdir.clone()
        };
        let script = format!("cat >/dev/null; echo {h} >> {}/hooks.log", log.display());
        spec_hooks.insert(
            h.clone(),
            json!([{"path": "/bin/sh", "args": ["sh", "-c", script]}]),
        );
    }
    s.spec["hooks"] = Value::Object(spec_hooks);
    s.spec["mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"destination": "/log", "type": "bind", "source": logdir, "options": ["rbind", "rw"]}));
    let o = s.run(&id);
    assert!(o.status.success(), "{}", output(&o));
    let ran = std::fs::read_to_string(logdir.join("hooks.log")).unwrap_or_default();
    for h in &hooks {
        assert!(ran.lines().any(|l| l == h), "hook {h} did not run: {ran:?}");
    }
    assert_nothing_left(&id);
}

/// The advertised capabilities are exactly the ones our bounding set holds (of those the
/// kernel has), and a container gets them all.
#[test]
fn advertised_capabilities_are_granted() {
    let caps = strings(&advertised()["linux"]["capabilities"]);
    // Ours is containerd's: the same bounding set the shim has.
    let bounding = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:").map(|v| v.trim().to_string()))
        .unwrap();
    let mask = u64::from_str_radix(&bounding, 16).unwrap();
    assert_eq!(
        caps.len(),
        mask.count_ones() as usize,
        "{caps:?} vs CapBnd {bounding}"
    );
    let id = unique("caps");
    let _rm = RemoveOnDrop(id.clone());
    let mut s = SpecRun::new(&id, "grep -E '^Cap(Bnd|Eff|Prm):' /proc/self/status");
    for set in ["bounding", "effective", "permitted"] {
        s.spec["process"]["capabilities"][set] = json!(caps);
    }
    let o = s.run(&id);
    assert!(o.status.success(), "{}", output(&o));
    let want = format!("{mask:016x}");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(out.lines().count(), 3, "{out}");
    for l in out.lines() {
        assert!(l.ends_with(&want), "{l}: want {want}");
    }
    assert_nothing_left(&id);
}

/// A filter using every advertised architecture, supported flag, operator and action loads,
/// and acts: mkdir gets EPERM, a notify rule hands its fd to the listener.
#[test]
fn advertised_seccomp_works() {
    let f = advertised();
    let sc = &f["linux"]["seccomp"];
    if sc["enabled"] != true {
        return;
    }
    let id = unique("seccomp");
    let _rm = RemoveOnDrop(id.clone());
    let mut s = SpecRun::new(&id, "mkdir /tmp/x 2>&1; echo mkdir=$?");
    let actions = strings(&sc["actions"]);
    // Syscalls the script never makes, one per action (and per operator, below).
    let spare = [
        "acct",
        "swapon",
        "swapoff",
        "syslog",
        "vhangup",
        "pivot_root",
        "quotactl",
        "settimeofday",
        "sethostname",
        "setdomainname",
        "init_module",
        "delete_module",
        "kexec_load",
        "uselib",
        "ustat",
        "sysfs",
        "lookup_dcookie",
        "iopl",
        "ioperm",
    ];
    let mut syscalls =
        vec![json!({"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1})];
    let mut spare_it = spare.iter();
    for a in actions.iter().filter(|a| *a != "SCMP_ACT_ALLOW") {
        syscalls.push(json!({"names": [spare_it.next().unwrap()], "action": a}));
    }
    for op in strings(&sc["operators"]) {
        syscalls.push(
            json!({"names": [spare_it.next().unwrap()], "action": "SCMP_ACT_ERRNO",
            "args": [{"index": 0, "value": 1, "valueTwo": 1, "op": op}]}),
        );
    }
    let listener_path = s.dir.join("seccomp.sock");
    let listener = UnixListener::bind(&listener_path).unwrap();
    s.spec["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": strings(&sc["archs"]),
        "flags": strings(&sc["supportedFlags"]),
        "listenerPath": listener_path,
        "syscalls": syscalls,
    });
    let notify = actions.iter().any(|a| a == "SCMP_ACT_NOTIFY");
    let got = std::thread::spawn(move || {
        if !notify {
            return String::new();
        }
        let (mut c, _) = listener.accept().unwrap();
        let mut buf = vec![0; 64 * 1024];
        let n = c.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    });
    let o = s.run(&id);
    assert!(o.status.success(), "{}", output(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("Operation not permitted") && out.contains("mkdir=1"),
        "{out}"
    );
    if notify {
        let msg = got.join().unwrap();
        assert!(msg.contains("seccompFd"), "listener got {msg:?}");
    }
    assert_nothing_left(&id);
}
