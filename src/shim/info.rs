//! `-info`: containerd 2.x runs `<shim> -info` (the runtime options `Any`, if any, on stdin)
//! and reads a protobuf `containerd.types.RuntimeInfo` from stdout. Its `features` is an
//! `Any` holding the OCI runtime-spec features document (the JSON `runc features` prints).
//! containerd uses it to refuse idmap mounts a runtime would silently ignore, and CRI to
//! decide whether a handler may get recursive read-only mounts and user namespaces.
//!
//! Two halves, kept apart: [`detect`] asks libcontainer's tables and this host's kernel what
//! really works (nothing is advertised that libcontainer 0.7 would ignore or that this
//! kernel cannot do); [`features_json`] and [`encode_runtime_info`] only encode.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::str::FromStr;

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{CodedOutputStream, Message};
use libcontainer::syscall::linux::{MountOption, MountRecursive};
use oci_spec::runtime::{Arch, LinuxNamespaceType, LinuxSeccompAction};
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::shim::options;

/// `RuntimeInfo.name`: the runtime type containerd knows us by.
pub const RUNTIME_NAME: &str = "io.containerd.youki.v2";
/// The type URL containerd registers for runtime-spec `features.Features` (typeurl decodes
/// the value as JSON).
pub const FEATURES_TYPE_URL: &str =
    "types.containerd.io/opencontainers/runtime-spec/1/features/Features";
/// The runtime-spec versions libcontainer reads: from 1.0.0 to the one its oci-spec crate
/// implements.
const OCI_VERSION_MIN: &str = "1.0.0";
const OCI_VERSION_MAX: &str = oci_spec::runtime::VERSION;

/// What this shim can do on this host. Plain data: filled by [`detect`], encoded by
/// [`features_json`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Features {
    pub hooks: Vec<&'static str>,
    pub mount_options: Vec<&'static str>,
    pub namespaces: Vec<&'static str>,
    pub capabilities: Vec<&'static str>,
    pub cgroup: Cgroup,
    pub seccomp: Option<Seccomp>,
    pub apparmor: bool,
    pub selinux: bool,
    pub intel_rdt: bool,
    /// Idmapped mounts (`mountExtensions.idmap`). Always reported, also when false: an
    /// explicit "no" makes containerd refuse idmap mounts instead of running a container
    /// whose mounts silently keep the host's ownership.
    pub idmap: bool,
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cgroup {
    pub v1: bool,
    pub v2: bool,
    pub systemd: bool,
    pub systemd_user: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seccomp {
    pub actions: Vec<String>,
    pub operators: Vec<&'static str>,
    pub archs: Vec<String>,
    pub known_flags: Vec<&'static str>,
    pub supported_flags: Vec<&'static str>,
}

// ---------------------------------------------------------------------------------------
// Detection
// ---------------------------------------------------------------------------------------

/// The hooks libcontainer runs (prestart is deprecated but still run, as runc does).
const HOOKS: &[&str] = &[
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

/// Per-mount options libcontainer 0.7 applies (its fd-based mount flow turns them into
/// `mount_setattr` attributes). Left out because it parses them and then drops them:
/// sync/async, dirsync, mand/nomand, remount, the propagation options (shared, rslave, …:
/// only `rootfsPropagation` is applied), idmap/ridmap, and tmpcopyup/nosymfollow (not known).
const MOUNT_OPTIONS: &[&str] = &[
    "defaults",
    "ro",
    "rw",
    "suid",
    "nosuid",
    "dev",
    "nodev",
    "exec",
    "noexec",
    "atime",
    "noatime",
    "diratime",
    "nodiratime",
    "relatime",
    "norelatime",
    "strictatime",
    "nostrictatime",
    "bind",
    "rbind",
];

/// Recursive options (`mount_setattr(AT_RECURSIVE)`, Linux 5.12), with the kernel release
/// each attribute needs.
const RECURSIVE_MOUNT_OPTIONS: &[(&str, (u32, u32))] = &[
    ("rro", (5, 12)),
    ("rrw", (5, 12)),
    ("rnosuid", (5, 12)),
    ("rsuid", (5, 12)),
    ("rnodev", (5, 12)),
    ("rdev", (5, 12)),
    ("rnoexec", (5, 12)),
    ("rexec", (5, 12)),
    ("rnodiratime", (5, 12)),
    ("rdiratime", (5, 12)),
    ("rrelatime", (5, 12)),
    ("rnorelatime", (5, 12)),
    ("rnoatime", (5, 12)),
    ("ratime", (5, 12)),
    ("rstrictatime", (5, 12)),
    ("rnostrictatime", (5, 12)),
    // MOUNT_ATTR_NOSYMFOLLOW came with 5.14.
    ("rnosymfollow", (5, 14)),
    ("rsymfollow", (5, 14)),
];

/// Every namespace type libcontainer creates, with its /proc/self/ns name.
const NAMESPACES: &[(LinuxNamespaceType, &str)] = &[
    (LinuxNamespaceType::Cgroup, "cgroup"),
    (LinuxNamespaceType::Ipc, "ipc"),
    (LinuxNamespaceType::Mount, "mnt"),
    (LinuxNamespaceType::Network, "net"),
    (LinuxNamespaceType::Pid, "pid"),
    (LinuxNamespaceType::Time, "time"),
    (LinuxNamespaceType::User, "user"),
    (LinuxNamespaceType::Uts, "uts"),
];

/// Capability names by number, as in linux/capability.h (the kernel ABI).
const CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The seccomp actions libcontainer translates, with the libseccomp API level each needs.
const SECCOMP_ACTIONS: &[(LinuxSeccompAction, u32)] = &[
    (LinuxSeccompAction::ScmpActAllow, 1),
    (LinuxSeccompAction::ScmpActErrno, 1),
    (LinuxSeccompAction::ScmpActKill, 1),
    (LinuxSeccompAction::ScmpActKillThread, 1),
    (LinuxSeccompAction::ScmpActTrap, 1),
    (LinuxSeccompAction::ScmpActTrace, 1),
    (LinuxSeccompAction::ScmpActKillProcess, 3),
    (LinuxSeccompAction::ScmpActLog, 3),
    // Needs a listenerPath: libcontainer sends the notify fd there.
    (LinuxSeccompAction::ScmpActNotify, 5),
];

const SECCOMP_OPERATORS: &[&str] = &[
    "SCMP_CMP_NE",
    "SCMP_CMP_LT",
    "SCMP_CMP_LE",
    "SCMP_CMP_EQ",
    "SCMP_CMP_GE",
    "SCMP_CMP_GT",
    "SCMP_CMP_MASKED_EQ",
];

/// The filter flags libcontainer sets, with the libseccomp API level each needs.
const SECCOMP_FLAGS: &[(&str, u32)] = &[
    ("SECCOMP_FILTER_FLAG_TSYNC", 2),
    ("SECCOMP_FILTER_FLAG_LOG", 3),
    ("SECCOMP_FILTER_FLAG_SPEC_ALLOW", 4),
    ("SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV", 7),
];

const SECCOMP_ARCHS: &[Arch] = &[
    Arch::ScmpArchX86,
    Arch::ScmpArchX86_64,
    Arch::ScmpArchX32,
    Arch::ScmpArchArm,
    Arch::ScmpArchAarch64,
    Arch::ScmpArchMips,
    Arch::ScmpArchMips64,
    Arch::ScmpArchMips64n32,
    Arch::ScmpArchMipsel,
    Arch::ScmpArchMipsel64,
    Arch::ScmpArchMipsel64n32,
    Arch::ScmpArchPpc,
    Arch::ScmpArchPpc64,
    Arch::ScmpArchPpc64le,
    Arch::ScmpArchS390,
    Arch::ScmpArchS390x,
    Arch::ScmpArchRiscv64,
    Arch::ScmpArchParisc,
    Arch::ScmpArchParisc64,
    Arch::ScmpArchLoongarch64,
    Arch::ScmpArchM68k,
    Arch::ScmpArchSh,
    Arch::ScmpArchSheb,
];

/// What the host offers, read once; [`features_for`] turns it into [`Features`].
#[derive(Debug)]
pub struct Host {
    /// The kernel release as (major, minor).
    pub kernel: (u32, u32),
    /// `mount_setattr(2)` exists (not ENOSYS).
    pub mount_setattr: bool,
    /// Names under /proc/self/ns.
    pub namespaces: Vec<String>,
    /// User namespaces can be created (`user.max_user_namespaces` > 0).
    pub userns_allowed: bool,
    /// /proc/sys/kernel/cap_last_cap.
    pub cap_last_cap: usize,
    /// Our own bounding set (`CapBnd`): no container of ours can hold more. A host may
    /// withhold some (this test machine has no CAP_SYS_RESOURCE).
    pub cap_bounding: u64,
    pub cgroup: Option<libcgroups::common::CgroupSetup>,
    pub systemd_booted: bool,
    /// libseccomp's API level (0: unusable) and version.
    pub seccomp_api: u32,
    pub libseccomp_version: Option<String>,
    /// Architectures the installed libseccomp accepts.
    pub seccomp_archs: Vec<Arch>,
    pub apparmor: bool,
    pub resctrl: bool,
}

impl Host {
    pub fn probe() -> Host {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let namespaces = std::fs::read_dir("/proc/self/ns")
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let (seccomp_api, libseccomp_version, seccomp_archs) = probe_seccomp();
        Host {
            kernel: parse_kernel(&read("/proc/sys/kernel/osrelease")),
            mount_setattr: probe_mount_setattr(),
            namespaces,
            // Absent on kernels without the knob: then nothing limits them.
            userns_allowed: read("/proc/sys/user/max_user_namespaces")
                .trim()
                .parse::<u64>()
                .map_or(Path::new("/proc/self/ns/user").exists(), |n| n > 0),
            cap_last_cap: read("/proc/sys/kernel/cap_last_cap")
                .trim()
                .parse()
                .unwrap_or(0),
            cap_bounding: read("/proc/self/status")
                .lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
                .unwrap_or(0),
            cgroup: libcgroups::common::get_cgroup_setup().ok(),
            systemd_booted: libcgroups::systemd::booted(),
            seccomp_api,
            libseccomp_version,
            seccomp_archs,
            apparmor: libcontainer::apparmor::is_enabled().unwrap_or(false),
            resctrl: read("/proc/filesystems")
                .lines()
                .any(|l| l.split_whitespace().last() == Some("resctrl")),
        }
    }
}

fn parse_kernel(release: &str) -> (u32, u32) {
    let mut it = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

/// Calls `mount_setattr(-1, "", AT_EMPTY_PATH, NULL, 0)`: EBADF/EINVAL if the kernel has
/// the call, ENOSYS if not. Changes nothing either way.
fn probe_mount_setattr() -> bool {
    // SAFETY: a bad fd and a NULL attribute pointer with size 0: the kernel rejects the
    // call before touching any memory.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            -1 as libc::c_int,
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
            std::ptr::null::<u8>(),
            0usize,
        )
    };
    r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ENOSYS)
}

fn probe_seccomp() -> (u32, Option<String>, Vec<Arch>) {
    let api = libseccomp::get_api();
    let version = libseccomp::ScmpVersion::current()
        .ok()
        .map(|v| format!("{}.{}.{}", v.major, v.minor, v.micro));
    // Ask the installed libseccomp which architectures it adds to a filter the way
    // libcontainer does: to a new filter, which holds the native one. Architectures of the
    // other byte order are refused there (and so in every container), not only here.
    let archs = SECCOMP_ARCHS
        .iter()
        .copied()
        .filter(|a| {
            let Some(arch) = libseccomp::ScmpArch::from_str(&enum_name(a)).ok() else {
                return false;
            };
            libseccomp::ScmpFilterContext::new(libseccomp::ScmpAction::Allow).is_ok_and(
                |mut ctx| ctx.add_arch(arch).is_ok() || ctx.is_arch_present(arch).unwrap_or(false),
            )
        })
        .collect();
    (api, version, archs)
}

/// Probes this host and says what works on it.
pub fn detect() -> Features {
    features_for(&Host::probe())
}

fn at_least(have: (u32, u32), need: (u32, u32)) -> bool {
    have >= need
}

/// The features libcontainer offers on `host`.
pub fn features_for(host: &Host) -> Features {
    // Every mount goes through open_tree/fsmount + mount_setattr in libcontainer 0.7, so
    // options are offered only where that call exists; each name must also still be one
    // libcontainer's parser knows.
    let mut mount_options = Vec::new();
    if host.mount_setattr {
        mount_options.extend(
            MOUNT_OPTIONS
                .iter()
                .copied()
                .filter(|o| MountOption::from_str(o).is_ok()),
        );
        mount_options.extend(
            RECURSIVE_MOUNT_OPTIONS
                .iter()
                .filter(|(o, need)| {
                    at_least(host.kernel, *need) && MountRecursive::from_str(o).is_ok()
                })
                .map(|(o, _)| *o),
        );
    }
    let namespaces = NAMESPACES
        .iter()
        .filter(|(t, proc_name)| {
            host.namespaces.iter().any(|n| n == proc_name)
                && (*t != LinuxNamespaceType::User || host.userns_allowed)
        })
        .map(|(t, _)| namespace_name(*t))
        .collect();
    let capabilities = CAPABILITIES
        .iter()
        .enumerate()
        .take(host.cap_last_cap + 1)
        .filter(|(bit, _)| host.cap_bounding & (1 << bit) != 0)
        .map(|(_, c)| *c)
        // libcontainer takes every capability oci-spec can name.
        .filter(|c| serde_json::from_value::<oci_spec::runtime::Capability>(json!(c)).is_ok())
        .collect();
    use libcgroups::common::CgroupSetup;
    // What libcontainer would use here: v1 managers on a legacy or hybrid host (even with
    // SystemdCgroup, it uses cgroupfs there), v2 only on a unified one; systemd needs a
    // systemd-booted host with the unified hierarchy. The shim runs as root, so never
    // the rootless (user) systemd manager.
    let cgroup = Cgroup {
        v1: matches!(host.cgroup, Some(CgroupSetup::Legacy | CgroupSetup::Hybrid)),
        v2: matches!(host.cgroup, Some(CgroupSetup::Unified)),
        systemd: host.systemd_booted && matches!(host.cgroup, Some(CgroupSetup::Unified)),
        systemd_user: false,
    };
    let seccomp = (host.seccomp_api > 0).then(|| Seccomp {
        actions: SECCOMP_ACTIONS
            .iter()
            .filter(|(_, level)| host.seccomp_api >= *level)
            .map(|(a, _)| enum_name(a))
            .collect(),
        operators: SECCOMP_OPERATORS.to_vec(),
        archs: host.seccomp_archs.iter().map(enum_name).collect(),
        known_flags: SECCOMP_FLAGS.iter().map(|(f, _)| *f).collect(),
        supported_flags: SECCOMP_FLAGS
            .iter()
            .filter(|(_, level)| host.seccomp_api >= *level)
            .map(|(f, _)| *f)
            .collect(),
    });
    let mut annotations = BTreeMap::new();
    if let Some(v) = &host.libseccomp_version {
        annotations.insert("io.github.seccomp.libseccomp.version".into(), v.clone());
    }
    Features {
        hooks: HOOKS.to_vec(),
        mount_options,
        namespaces,
        capabilities,
        cgroup,
        seccomp,
        // libcontainer applies an AppArmor profile when the host has AppArmor enabled.
        apparmor: host.apparmor,
        // libcontainer 0.7 sets no SELinux process label.
        selinux: false,
        // libcontainer writes resctrl groups; only where the kernel has resctrl.
        intel_rdt: host.resctrl,
        // libcontainer 0.7 skips "idmap"/"ridmap" and never sets MOUNT_ATTR_IDMAP.
        idmap: false,
        annotations,
    }
}

fn namespace_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::Mount => "mount",
        LinuxNamespaceType::Network => "network",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Time => "time",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Uts => "uts",
    }
}

/// The spec's spelling of an oci-spec enum value (its serde name).
fn enum_name<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------

/// The runtime-spec features document, as `runc features` prints it.
pub fn features_json(f: &Features) -> Vec<u8> {
    let mut linux = json!({
        "namespaces": f.namespaces,
        "capabilities": f.capabilities,
        "cgroup": {
            "v1": f.cgroup.v1,
            "v2": f.cgroup.v2,
            "systemd": f.cgroup.systemd,
            "systemdUser": f.cgroup.systemd_user,
        },
        "apparmor": {"enabled": f.apparmor},
        "selinux": {"enabled": f.selinux},
        "intelRdt": {"enabled": f.intel_rdt},
        "mountExtensions": {"idmap": {"enabled": f.idmap}},
    });
    linux["seccomp"] = match &f.seccomp {
        Some(s) => json!({
            "enabled": true,
            "actions": s.actions,
            "operators": s.operators,
            "archs": s.archs,
            "knownFlags": s.known_flags,
            "supportedFlags": s.supported_flags,
        }),
        None => json!({"enabled": false}),
    };
    let doc: Value = json!({
        "ociVersionMin": OCI_VERSION_MIN,
        "ociVersionMax": OCI_VERSION_MAX,
        "hooks": f.hooks,
        "mountOptions": f.mount_options,
        "linux": linux,
        "annotations": f.annotations,
    });
    serde_json::to_vec_pretty(&doc).unwrap_or_default()
}

/// `containerd.types.RuntimeInfo`: name = 1, version = 2 (`RuntimeVersion{version = 1,
/// revision = 2}`), options = 3, features = 4, annotations = 5 (a map: entries
/// `{key = 1, value = 2}`). Written by hand: the shim links no generated containerd API.
pub fn encode_runtime_info(options: Option<&Any>, features_json: &[u8]) -> Result<Vec<u8>> {
    let enc = |what: &str, e: containerd_shim_protos::protobuf::Error| {
        Error::Internal(format!("encode RuntimeInfo {what}: {e}"))
    };
    let mut version = Vec::new();
    {
        let mut os = CodedOutputStream::vec(&mut version);
        os.write_string(1, env!("CARGO_PKG_VERSION"))
            .map_err(|e| enc("version", e))?;
        os.flush().map_err(|e| enc("version", e))?;
    }
    let mut features = Any::new();
    features.type_url = FEATURES_TYPE_URL.to_string();
    features.value = features_json.to_vec();
    let features = features.write_to_bytes().map_err(|e| enc("features", e))?;
    let mut out = Vec::new();
    {
        let mut os = CodedOutputStream::vec(&mut out);
        os.write_string(1, RUNTIME_NAME)
            .map_err(|e| enc("name", e))?;
        os.write_bytes(2, &version).map_err(|e| enc("version", e))?;
        if let Some(o) = options {
            let o = o.write_to_bytes().map_err(|e| enc("options", e))?;
            os.write_bytes(3, &o).map_err(|e| enc("options", e))?;
        }
        os.write_bytes(4, &features)
            .map_err(|e| enc("features", e))?;
        os.flush().map_err(|e| enc("flush", e))?;
    }
    Ok(out)
}

/// `-info`: reads the options from `stdin`, answers the RuntimeInfo bytes for stdout.
/// Options are echoed back (as runc-v2 does) once they decode as options we take; anything
/// else on stdin is an error naming it, and nothing is written.
pub fn run(stdin: &mut impl Read) -> Result<Vec<u8>> {
    let mut input = Vec::new();
    stdin
        .read_to_end(&mut input)
        .map_err(|e| Error::io("-info: read stdin", e))?;
    let options = if input.is_empty() {
        None
    } else {
        let any = Any::parse_from_bytes(&input).map_err(|e| {
            Error::InvalidArgument(format!("-info: stdin is not runtime options (an Any): {e}"))
        })?;
        options::decode(Some(&any)).map_err(|e| Error::InvalidArgument(format!("-info: {e}")))?;
        Some(any).filter(|a| !a.type_url.is_empty())
    };
    encode_runtime_info(options.as_ref(), &features_json(&detect()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim_protos::protobuf::UnknownValueRef;
    use containerd_shim_protos::protobuf::well_known_types::empty::Empty;
    use containerd_shim_protos::shim::oci::Options as RuncOptions;
    use libcgroups::common::CgroupSetup;

    fn host() -> Host {
        Host {
            kernel: (6, 1),
            mount_setattr: true,
            namespaces: ["cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts"]
                .map(String::from)
                .to_vec(),
            userns_allowed: true,
            cap_last_cap: 40,
            cap_bounding: (1 << 41) - 1,
            cgroup: Some(CgroupSetup::Unified),
            systemd_booted: true,
            seccomp_api: 6,
            libseccomp_version: Some("2.5.4".into()),
            seccomp_archs: vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86],
            apparmor: false,
            resctrl: false,
        }
    }

    /// Field `n` of a message as raw bytes (strings and sub-messages).
    fn field(msg: &[u8], n: u32) -> Option<Vec<u8>> {
        let m = Empty::parse_from_bytes(msg).unwrap();
        match m.special_fields.unknown_fields().get(n) {
            Some(UnknownValueRef::LengthDelimited(b)) => Some(b.to_vec()),
            _ => None,
        }
    }

    #[test]
    fn recursive_options_need_the_kernel() {
        let f = features_for(&host());
        assert!(f.mount_options.contains(&"rro"));
        assert!(f.mount_options.contains(&"rnosymfollow"));
        let old = features_for(&Host {
            kernel: (5, 13),
            ..host()
        });
        assert!(old.mount_options.contains(&"rro"));
        assert!(!old.mount_options.contains(&"rnosymfollow"));
        let none = features_for(&Host {
            kernel: (5, 4),
            mount_setattr: false,
            ..host()
        });
        assert!(none.mount_options.is_empty(), "{:?}", none.mount_options);
    }

    #[test]
    fn ignored_options_are_not_advertised() {
        let f = features_for(&host());
        for o in [
            "sync",
            "dirsync",
            "mand",
            "rshared",
            "rslave",
            "rprivate",
            "idmap",
            "tmpcopyup",
        ] {
            assert!(!f.mount_options.contains(&o), "{o} advertised");
        }
        assert!(!f.idmap);
    }

    #[test]
    fn namespaces_follow_the_host() {
        let f = features_for(&host());
        assert_eq!(
            f.namespaces,
            [
                "cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"
            ]
        );
        let mut h = host();
        h.namespaces.retain(|n| n != "time");
        h.userns_allowed = false;
        let f = features_for(&h);
        assert!(!f.namespaces.contains(&"time") && !f.namespaces.contains(&"user"));
    }

    #[test]
    fn capabilities_stop_at_cap_last_cap() {
        let f = features_for(&Host {
            cap_last_cap: 37,
            ..host()
        });
        assert_eq!(f.capabilities.len(), 38);
        assert_eq!(f.capabilities.last(), Some(&"CAP_AUDIT_READ"));
        assert_eq!(features_for(&host()).capabilities.len(), 41);
        let f = features_for(&Host {
            cap_bounding: ((1 << 41) - 1) & !(1 << 24),
            ..host()
        });
        assert!(!f.capabilities.contains(&"CAP_SYS_RESOURCE"));
        assert_eq!(f.capabilities.len(), 40);
    }

    #[test]
    fn cgroup_drivers_follow_the_hierarchy() {
        let f = features_for(&host());
        assert_eq!(
            f.cgroup,
            Cgroup {
                v1: false,
                v2: true,
                systemd: true,
                systemd_user: false
            }
        );
        let f = features_for(&Host {
            cgroup: Some(CgroupSetup::Hybrid),
            ..host()
        });
        assert_eq!(
            f.cgroup,
            Cgroup {
                v1: true,
                v2: false,
                systemd: false,
                systemd_user: false
            }
        );
    }

    #[test]
    fn seccomp_follows_the_api_level() {
        let s = features_for(&Host {
            seccomp_api: 3,
            ..host()
        })
        .seccomp
        .unwrap();
        assert!(s.actions.contains(&"SCMP_ACT_KILL_PROCESS".to_string()));
        assert!(!s.actions.contains(&"SCMP_ACT_NOTIFY".to_string()));
        assert_eq!(
            s.supported_flags,
            ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG"]
        );
        assert_eq!(s.archs, ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"]);
        assert!(
            features_for(&Host {
                seccomp_api: 0,
                ..host()
            })
            .seccomp
            .is_none()
        );
    }

    #[test]
    fn features_document_has_the_spec_field_names() {
        let doc: Value = serde_json::from_slice(&features_json(&features_for(&host()))).unwrap();
        assert_eq!(doc["ociVersionMin"], "1.0.0");
        assert!(
            doc["mountOptions"]
                .as_array()
                .unwrap()
                .contains(&json!("rro"))
        );
        assert_eq!(doc["linux"]["mountExtensions"]["idmap"]["enabled"], false);
        assert_eq!(doc["linux"]["cgroup"]["systemdUser"], false);
        assert_eq!(doc["linux"]["seccomp"]["enabled"], true);
        assert!(
            doc["linux"]["namespaces"]
                .as_array()
                .unwrap()
                .contains(&json!("network"))
        );
        // It parses as oci-spec's own Features type too.
        let typed: oci_spec::runtime::Features = serde_json::from_value(doc.clone()).unwrap();
        assert_eq!(typed.oci_version_max(), OCI_VERSION_MAX);
    }

    #[test]
    fn runtime_info_fields() {
        let mut o = RuncOptions::new();
        o.systemd_cgroup = true;
        let mut any = Any::new();
        any.type_url = "containerd.runc.v1.Options".into();
        any.value = o.write_to_bytes().unwrap();
        let out = encode_runtime_info(Some(&any), b"{}").unwrap();
        assert_eq!(field(&out, 1).unwrap(), RUNTIME_NAME.as_bytes());
        let version = field(&out, 2).unwrap();
        assert_eq!(
            field(&version, 1).unwrap(),
            env!("CARGO_PKG_VERSION").as_bytes()
        );
        assert_eq!(
            Any::parse_from_bytes(&field(&out, 3).unwrap()).unwrap(),
            any
        );
        let features = Any::parse_from_bytes(&field(&out, 4).unwrap()).unwrap();
        assert_eq!(features.type_url, FEATURES_TYPE_URL);
        assert_eq!(features.value, b"{}");
        let bare = encode_runtime_info(None, b"{}").unwrap();
        assert!(field(&bare, 3).is_none());
    }

    #[test]
    fn stdin_options_are_checked_and_echoed() {
        let out = run(&mut &b""[..]).unwrap();
        assert!(field(&out, 3).is_none());
        let mut any = Any::new();
        any.type_url = "containerd.runc.v1.Options".into();
        any.value = RuncOptions::new().write_to_bytes().unwrap();
        let out = run(&mut &any.write_to_bytes().unwrap()[..]).unwrap();
        assert_eq!(
            Any::parse_from_bytes(&field(&out, 3).unwrap()).unwrap(),
            any
        );
        let mut bad = Any::new();
        bad.type_url = "example.com/Bogus".into();
        let e = run(&mut &bad.write_to_bytes().unwrap()[..])
            .unwrap_err()
            .to_string();
        assert!(e.contains("Bogus"), "{e}");
        let e = run(&mut &b"\xff\xff\xff"[..]).unwrap_err().to_string();
        assert!(e.contains("-info"), "{e}");
    }
}
