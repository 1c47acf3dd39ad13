//! The part of CRI's `runtime.v1.PodSandboxConfig` the pause container is made from.
//! containerd's CRI puts the whole message into `CreateSandboxRequest.options` (an `Any`);
//! only a handful of its fields matter here, so they are read straight off the wire with
//! `protobuf`'s coded stream instead of linking the CRI API's generated code into every
//! shim. Field numbers are those of k8s.io/cri-api's `api.proto` (v1), which are frozen.

use std::collections::BTreeMap;

use containerd_shim_protos::protobuf::CodedInputStream;
use containerd_shim_protos::protobuf::well_known_types::any::Any;

use crate::error::{Error, Result};

/// CRI's `NamespaceMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Shared by the pod (the pause container's own namespace).
    #[default]
    Pod,
    /// The container's own.
    Container,
    /// The node's (host) namespace.
    Node,
    /// Another container's.
    Target,
}

impl Mode {
    fn from_wire(v: i32) -> Result<Mode> {
        Ok(match v {
            0 => Mode::Pod,
            1 => Mode::Container,
            2 => Mode::Node,
            3 => Mode::Target,
            other => {
                return Err(Error::InvalidArgument(format!(
                    "PodSandboxConfig: unknown namespace mode {other}"
                )));
            }
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodConfig {
    pub name: String,
    pub uid: String,
    pub namespace: String,
    pub attempt: u32,
    pub hostname: String,
    pub log_directory: String,
    pub cgroup_parent: String,
    pub network: Mode,
    pub pid: Mode,
    pub ipc: Mode,
    /// `userns_options.mode`, when the pod asked for one.
    pub userns: Option<Mode>,
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub supplemental_groups: Vec<i64>,
    pub privileged: bool,
    /// `seccomp` (a SecurityProfile; kubelet always sends one), else what the deprecated
    /// `seccomp_profile_path` says; None when neither is given.
    pub seccomp: Option<Seccomp>,
    pub sysctls: BTreeMap<String, String>,
    /// `dns_config`, when the pod has one (kubelet always sends it; absent means "the
    /// host's resolv.conf", as containerd's CRI reads it).
    pub dns: Option<DnsConfig>,
}

/// CRI's seccomp `SecurityProfile` for the pod's sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seccomp {
    /// The runtime's default profile (`RuntimeDefault`, `runtime/default`).
    RuntimeDefault,
    Unconfined,
    /// A profile file on the node (an OCI `LinuxSeccomp` in JSON), by absolute path.
    Localhost(String),
}

impl Seccomp {
    /// The deprecated `seccomp_profile_path` form, as containerd's
    /// GenerateSeccompSecurityProfile reads it.
    fn from_path(p: &str) -> Result<Seccomp> {
        Ok(match p {
            "runtime/default" | "docker/default" => Seccomp::RuntimeDefault,
            "unconfined" => Seccomp::Unconfined,
            _ => match p.strip_prefix("localhost/") {
                Some(path) => Seccomp::Localhost(path.to_string()),
                None => {
                    return Err(Error::InvalidArgument(format!(
                        "PodSandboxConfig seccomp_profile_path {:?}: expected runtime/default, \
                         unconfined or localhost/<path>",
                        crate::error::preview(p)
                    )));
                }
            },
        })
    }

    /// A `SecurityProfile` message: profile_type (1) and localhost_ref (2).
    fn from_wire(bytes: &[u8]) -> Result<Seccomp> {
        let (mut kind, mut path) = (0, String::new());
        read_fields(bytes, "seccomp", |f, _, s| {
            match f {
                1 => kind = s.read_int32()?,
                2 => path = s.read_string()?,
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        // containerd's GenerateSeccompSpecOpts: a reference only with Localhost.
        if kind != 2 && !path.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "PodSandboxConfig seccomp: localhost_ref {:?} is set but profile_type is {kind}, \
                 not Localhost",
                crate::error::preview(&path)
            )));
        }
        Ok(match kind {
            0 => Seccomp::RuntimeDefault,
            1 => Seccomp::Unconfined,
            2 if path.is_empty() => {
                return Err(Error::InvalidArgument(
                    "PodSandboxConfig seccomp: profile_type Localhost needs a localhost_ref".into(),
                ));
            }
            2 => Seccomp::Localhost(path),
            other => {
                return Err(Error::InvalidArgument(format!(
                    "PodSandboxConfig seccomp: unknown profile_type {other}"
                )));
            }
        })
    }
}

/// CRI's `DNSConfig`: what the pod's /etc/resolv.conf says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsConfig {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

/// The type URL containerd's typeurl gives a `runtime.v1.PodSandboxConfig`.
const TYPE: &str = "runtime.v1.PodSandboxConfig";

/// Decodes `CreateSandboxRequest.options`. No options at all is a pod with every
/// default (`ctr`-style callers); options of another type are refused, naming it.
pub fn decode(options: Option<&Any>) -> Result<PodConfig> {
    let Some(any) = options.filter(|a| !a.type_url.is_empty() || !a.value.is_empty()) else {
        return Ok(PodConfig::default());
    };
    if any.type_url.rsplit('/').next() != Some(TYPE) {
        return Err(Error::InvalidArgument(format!(
            "CreateSandbox options: expected a {TYPE}, got {:?}",
            crate::error::preview(&any.type_url)
        )));
    }
    let mut c = PodConfig::default();
    read_fields(&any.value, "PodSandboxConfig", |f, _, s| match f {
        1 => read_fields(&s.read_bytes()?, "metadata", |f, _, s| {
            match f {
                1 => c.name = s.read_string()?,
                2 => c.uid = s.read_string()?,
                3 => c.namespace = s.read_string()?,
                4 => c.attempt = s.read_uint32()?,
                _ => return Ok(false),
            }
            Ok(true)
        })
        .map(|_| true)
        .map_err(FieldError::from),
        2 => {
            c.hostname = s.read_string()?;
            Ok(true)
        }
        3 => {
            c.log_directory = s.read_string()?;
            Ok(true)
        }
        4 => {
            let dns = c.dns.get_or_insert_with(DnsConfig::default);
            read_fields(&s.read_bytes()?, "dns_config", |f, _, s| {
                match f {
                    1 => dns.servers.push(s.read_string()?),
                    2 => dns.searches.push(s.read_string()?),
                    3 => dns.options.push(s.read_string()?),
                    _ => return Ok(false),
                }
                Ok(true)
            })?;
            Ok(true)
        }
        8 => {
            read_linux(&s.read_bytes()?, &mut c)?;
            Ok(true)
        }
        _ => Ok(false),
    })?;
    Ok(c)
}

fn read_linux(bytes: &[u8], c: &mut PodConfig) -> Result<()> {
    read_fields(bytes, "linux", |f, _, s| match f {
        1 => {
            c.cgroup_parent = s.read_string()?;
            Ok(true)
        }
        2 => {
            read_security(&s.read_bytes()?, c)?;
            Ok(true)
        }
        3 => {
            let (mut k, mut v) = (String::new(), String::new());
            read_fields(&s.read_bytes()?, "sysctls", |f, _, s| {
                match f {
                    1 => k = s.read_string()?,
                    2 => v = s.read_string()?,
                    _ => return Ok(false),
                }
                Ok(true)
            })?;
            c.sysctls.insert(k, v);
            Ok(true)
        }
        _ => Ok(false),
    })
}

fn read_security(bytes: &[u8], c: &mut PodConfig) -> Result<()> {
    read_fields(bytes, "security_context", |f, wire, s| match f {
        1 => read_fields(&s.read_bytes()?, "namespace_options", |f, _, s| {
            match f {
                1 => c.network = Mode::from_wire(s.read_int32()?)?,
                2 => c.pid = Mode::from_wire(s.read_int32()?)?,
                3 => c.ipc = Mode::from_wire(s.read_int32()?)?,
                5 => {
                    let mut mode = Mode::Pod;
                    read_fields(&s.read_bytes()?, "userns_options", |f, _, s| {
                        if f != 1 {
                            return Ok(false);
                        }
                        mode = Mode::from_wire(s.read_int32()?)?;
                        Ok(true)
                    })?;
                    c.userns = Some(mode);
                }
                _ => return Ok(false),
            }
            Ok(true)
        })
        .map(|_| true)
        .map_err(FieldError::from),
        3 => {
            c.run_as_user = Some(int64_value(&s.read_bytes()?)?);
            Ok(true)
        }
        8 => {
            c.run_as_group = Some(int64_value(&s.read_bytes()?)?);
            Ok(true)
        }
        5 => {
            // Packed or not, as the encoder chose.
            let v = &mut c.supplemental_groups;
            if wire == 2 {
                let bytes = s.read_bytes()?;
                let mut p = CodedInputStream::from_bytes(&bytes);
                while !p.eof()? {
                    v.push(p.read_int64()?);
                }
            } else {
                v.push(s.read_int64()?);
            }
            Ok(true)
        }
        6 => {
            c.privileged = s.read_bool()?;
            Ok(true)
        }
        7 => {
            // The deprecated path: only if no SecurityProfile came (or comes) with it.
            let p = s.read_string()?;
            if c.seccomp.is_none() && !p.is_empty() {
                c.seccomp = Some(Seccomp::from_path(&p)?);
            }
            Ok(true)
        }
        9 => {
            c.seccomp = Some(Seccomp::from_wire(&s.read_bytes()?)?);
            Ok(true)
        }
        _ => Ok(false),
    })
}

fn int64_value(bytes: &[u8]) -> Result<i64> {
    let mut value = 0;
    read_fields(bytes, "Int64Value", |f, _, s| {
        if f != 1 {
            return Ok(false);
        }
        value = s.read_int64()?;
        Ok(true)
    })?;
    Ok(value)
}

/// Walks the fields of one message: `field(number, wire type, stream)` reads the value of a
/// field it knows and returns true, or returns false and the field is skipped.
fn read_fields(
    bytes: &[u8],
    what: &str,
    mut field: impl FnMut(u32, u32, &mut CodedInputStream) -> ProtoResult<bool>,
) -> Result<()> {
    let bad = |e: FieldError| {
        Error::InvalidArgument(format!(
            "CreateSandbox options: bad PodSandboxConfig {what}: {e}"
        ))
    };
    let mut s = CodedInputStream::from_bytes(bytes);
    while !s.eof().map_err(|e| bad(e.into()))? {
        let tag = s.read_raw_varint32().map_err(|e| bad(e.into()))?;
        let (number, wire) = (tag >> 3, tag & 7);
        if !field(number, wire, &mut s).map_err(bad)? {
            skip(&mut s, wire).map_err(bad)?;
        }
    }
    Ok(())
}

fn skip(s: &mut CodedInputStream, wire: u32) -> ProtoResult<()> {
    match wire {
        0 => {
            s.read_raw_varint64()?;
        }
        1 => {
            s.read_raw_little_endian64()?;
        }
        2 => {
            let n = s.read_raw_varint32()?;
            s.skip_raw_bytes(n)?;
        }
        5 => {
            s.read_raw_little_endian32()?;
        }
        other => return Err(FieldError::Wire(other)),
    }
    Ok(())
}

/// A field that could not be read: the stream's error, or one of ours.
#[derive(Debug)]
enum FieldError {
    Proto(containerd_shim_protos::protobuf::Error),
    Wire(u32),
    Ours(String),
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FieldError::Proto(e) => write!(f, "{e}"),
            FieldError::Wire(w) => write!(f, "unsupported wire type {w}"),
            FieldError::Ours(m) => f.write_str(m),
        }
    }
}

impl From<containerd_shim_protos::protobuf::Error> for FieldError {
    fn from(e: containerd_shim_protos::protobuf::Error) -> Self {
        FieldError::Proto(e)
    }
}

impl From<Error> for FieldError {
    fn from(e: Error) -> Self {
        FieldError::Ours(e.to_string())
    }
}

type ProtoResult<T> = std::result::Result<T, FieldError>;

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim_protos::protobuf::CodedOutputStream;

    fn msg(build: impl FnOnce(&mut CodedOutputStream)) -> Vec<u8> {
        let mut v = Vec::new();
        {
            let mut o = CodedOutputStream::vec(&mut v);
            build(&mut o);
            o.flush().unwrap();
        }
        v
    }

    fn sample() -> Any {
        let meta = msg(|o| {
            o.write_string(1, "web").unwrap();
            o.write_string(2, "uid-1").unwrap();
            o.write_string(3, "default").unwrap();
            o.write_uint32(4, 2).unwrap();
        });
        let ns = msg(|o| {
            o.write_enum(1, 0).unwrap();
            o.write_enum(2, 2).unwrap();
            o.write_enum(3, 0).unwrap();
        });
        let runas = msg(|o| o.write_int64(1, 1000).unwrap());
        let groups = msg(|o| {
            o.write_raw_varint64(7).unwrap();
            o.write_raw_varint64(8).unwrap();
        });
        let sec = msg(|o| {
            o.write_bytes(1, &ns).unwrap();
            o.write_bytes(3, &runas).unwrap();
            o.write_bytes(5, &groups).unwrap();
            o.write_bool(6, false).unwrap();
            o.write_string(7, "unconfined").unwrap();
        });
        let sysctl = msg(|o| {
            o.write_string(1, "net.ipv4.ip_forward").unwrap();
            o.write_string(2, "1").unwrap();
        });
        let linux = msg(|o| {
            o.write_string(1, "/kubepods/besteffort/pod1").unwrap();
            o.write_bytes(2, &sec).unwrap();
            o.write_bytes(3, &sysctl).unwrap();
        });
        let dns = msg(|o| {
            o.write_string(1, "10.96.0.10").unwrap();
            o.write_string(1, "10.96.0.11").unwrap();
            o.write_string(2, "default.svc.cluster.local").unwrap();
            o.write_string(3, "ndots:5").unwrap();
        });
        let cfg = msg(|o| {
            o.write_bytes(1, &meta).unwrap();
            o.write_string(2, "web-0").unwrap();
            o.write_string(3, "/var/log/pods/x").unwrap();
            o.write_bytes(4, &dns).unwrap();
            o.write_string(6, "ignored-label-bytes").unwrap();
            o.write_bytes(8, &linux).unwrap();
        });
        let mut any = Any::new();
        any.type_url = TYPE.to_string();
        any.value = cfg;
        any
    }

    #[test]
    fn reads_what_the_pause_container_needs() {
        let c = decode(Some(&sample())).unwrap();
        assert_eq!(c.name, "web");
        assert_eq!(c.uid, "uid-1");
        assert_eq!(c.namespace, "default");
        assert_eq!(c.attempt, 2);
        assert_eq!(c.hostname, "web-0");
        assert_eq!(c.log_directory, "/var/log/pods/x");
        assert_eq!(
            c.dns,
            Some(DnsConfig {
                servers: vec!["10.96.0.10".into(), "10.96.0.11".into()],
                searches: vec!["default.svc.cluster.local".into()],
                options: vec!["ndots:5".into()],
            })
        );
        assert_eq!(c.cgroup_parent, "/kubepods/besteffort/pod1");
        assert_eq!(
            (c.network, c.pid, c.ipc),
            (Mode::Pod, Mode::Node, Mode::Pod)
        );
        assert_eq!(c.run_as_user, Some(1000));
        assert_eq!(c.run_as_group, None);
        assert_eq!(c.supplemental_groups, vec![7, 8]);
        assert_eq!(
            c.sysctls.get("net.ipv4.ip_forward").map(String::as_str),
            Some("1")
        );
    }

    fn with_security(build: impl FnOnce(&mut CodedOutputStream)) -> Result<PodConfig> {
        let sec = msg(build);
        let linux = msg(|o| o.write_bytes(2, &sec).unwrap());
        let mut any = Any::new();
        any.type_url = TYPE.to_string();
        any.value = msg(|o| o.write_bytes(8, &linux).unwrap());
        decode(Some(&any))
    }

    fn profile(kind: i32, reference: &str) -> Vec<u8> {
        msg(|o| {
            o.write_enum(1, kind).unwrap();
            o.write_string(2, reference).unwrap();
        })
    }

    #[test]
    fn seccomp_from_the_profile_else_the_deprecated_path() {
        let c = decode(Some(&sample())).unwrap();
        assert_eq!(c.seccomp, Some(Seccomp::Unconfined));
        // The SecurityProfile wins over the path, whichever comes first.
        let p = profile(2, "/etc/seccomp/p.json");
        let c = with_security(|o| {
            o.write_string(7, "unconfined").unwrap();
            o.write_bytes(9, &p).unwrap();
        })
        .unwrap();
        assert_eq!(
            c.seccomp,
            Some(Seccomp::Localhost("/etc/seccomp/p.json".into()))
        );
        let c = with_security(|o| {
            o.write_bytes(9, &p).unwrap();
            o.write_string(7, "unconfined").unwrap();
        })
        .unwrap();
        assert_eq!(
            c.seccomp,
            Some(Seccomp::Localhost("/etc/seccomp/p.json".into()))
        );
        // An empty SecurityProfile is RuntimeDefault (the enum's zero).
        let c = with_security(|o| o.write_bytes(9, &[]).unwrap()).unwrap();
        assert_eq!(c.seccomp, Some(Seccomp::RuntimeDefault));
        for (path, want) in [
            ("runtime/default", Seccomp::RuntimeDefault),
            ("docker/default", Seccomp::RuntimeDefault),
            ("unconfined", Seccomp::Unconfined),
            ("localhost//x.json", Seccomp::Localhost("/x.json".into())),
        ] {
            let c = with_security(|o| o.write_string(7, path).unwrap()).unwrap();
            assert_eq!(c.seccomp, Some(want), "{path}");
        }
        assert_eq!(with_security(|_| {}).unwrap().seccomp, None);
    }

    #[test]
    fn bad_seccomp_profiles_are_refused_by_value() {
        let e = with_security(|o| o.write_string(7, "bogus-profile").unwrap()).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
        assert!(e.to_string().contains("bogus-profile"), "{e}");
        for (kind, reference, names) in [
            (2, "", "localhost_ref"),
            (0, "/p.json", "/p.json"),
            (1, "/p.json", "/p.json"),
            (7, "", "7"),
        ] {
            let p = profile(kind, reference);
            let e = with_security(|o| o.write_bytes(9, &p).unwrap()).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
            assert!(e.to_string().contains(names), "{kind} {reference:?}: {e}");
        }
    }

    #[test]
    fn no_options_is_every_default() {
        assert_eq!(decode(None).unwrap(), PodConfig::default());
    }

    #[test]
    fn other_types_and_garbage_are_refused_by_name() {
        let mut any = sample();
        any.type_url = "containerd.runc.v1.Options".into();
        let e = decode(Some(&any)).unwrap_err().to_string();
        assert!(e.contains("containerd.runc.v1.Options"), "{e}");
        let mut any = sample();
        any.value = vec![0x0a, 0xff, 0x01];
        let e = decode(Some(&any)).unwrap_err().to_string();
        assert!(e.contains("PodSandboxConfig"), "{e}");
    }
}
