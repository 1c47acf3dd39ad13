//! Runtime options as containerd sends them with Create (and, for `start`, on stdin): runc's
//! `containerd.runc.v1.Options` (from `ctr --runc-systemd-cgroup` and friends) or, for any
//! runtime type other than runc's, CRI's generic `runtimeoptions.v1.Options` whose
//! `config_body` is the TOML text of the runtime's `[options]` table. ctr 1.x sends the old
//! `containerd.linux.runc.CreateOptions` for any runtime but runc's (`ctr run --uidmap`,
//! `--runc-*` through the client's `WithNoPivotRoot`, `WithShimCgroup`...).
//!
//! Every field of runc's Options that means something without a runc binary is honoured;
//! any other field that is set is refused by its name. Ignoring one silently would leave an
//! operator believing, say, that containers run under another runtime binary.

use std::path::PathBuf;

use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::protobuf::UnknownValueRef;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::empty::Empty;
use containerd_shim_protos::shim::oci::Options as RuncOptions;
use serde::Deserialize;

use crate::error::{Error, Result, preview, redact_quoted};
use crate::safe_open;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeOptions {
    pub systemd_cgroup: bool,
    /// libcontainer's `no_pivot`: `MS_MOVE` + chroot instead of pivot_root (a rootfs on a
    /// ramdisk cannot be pivoted away from).
    pub no_pivot_root: bool,
    /// Keep the shim's session keyring instead of giving the container its own.
    pub no_new_keyring: bool,
    /// The cgroup (path below the hierarchy's root) the shim daemon is moved into at start.
    pub shim_cgroup: Option<String>,
    /// Owner given to the stdio fifos, so a user-namespaced container can reopen them.
    pub io_uid: u32,
    pub io_gid: u32,
    /// Where libcontainer's state lives, instead of `/run/containerd/youki`: as for runc,
    /// `<root>/<namespace>/<id>`.
    pub root: Option<PathBuf>,
    /// Checkpoint image and work directories when a checkpoint request names none.
    pub criu_image_path: Option<PathBuf>,
    pub criu_work_path: Option<PathBuf>,
    /// The Task API address containerd 2.x names for a container of a pod whose sandbox a
    /// shim serves (sandboxer = "shim"): ours, or Create is refused (service.rs).
    pub task_api_address: Option<String>,
}

/// The `[options]` table as CRI writes it (runc's Options by their Go field names). Fields
/// we cannot honour are still named here, so that setting one gets a message saying why.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TomlOptions {
    #[serde(rename = "SystemdCgroup", default)]
    systemd_cgroup: bool,
    #[serde(rename = "NoPivotRoot", default)]
    no_pivot_root: bool,
    #[serde(rename = "NoNewKeyring", default)]
    no_new_keyring: bool,
    #[serde(rename = "ShimCgroup", default)]
    shim_cgroup: String,
    #[serde(rename = "IoUid", default)]
    io_uid: u32,
    #[serde(rename = "IoGid", default)]
    io_gid: u32,
    #[serde(rename = "Root", default)]
    root: String,
    #[serde(rename = "CriuImagePath", default)]
    criu_image_path: String,
    #[serde(rename = "CriuWorkPath", default)]
    criu_work_path: String,
    #[serde(rename = "BinaryName", default)]
    binary_name: String,
    #[serde(rename = "CriuPath", default)]
    criu_path: String,
    #[serde(rename = "TaskApiAddress", default)]
    task_api_address: String,
    #[serde(rename = "TaskApiVersion", default)]
    task_api_version: u32,
}

/// runc Options' fields, as decoded from any of the three encodings, before validation.
#[derive(Default)]
struct Fields {
    systemd_cgroup: bool,
    no_pivot_root: bool,
    no_new_keyring: bool,
    shim_cgroup: String,
    io_uid: u32,
    io_gid: u32,
    root: String,
    criu_image_path: String,
    criu_work_path: String,
    binary_name: String,
    criu_path: String,
    task_api_address: String,
    task_api_version: u32,
}

impl From<TomlOptions> for Fields {
    fn from(t: TomlOptions) -> Fields {
        Fields {
            systemd_cgroup: t.systemd_cgroup,
            no_pivot_root: t.no_pivot_root,
            no_new_keyring: t.no_new_keyring,
            shim_cgroup: t.shim_cgroup,
            io_uid: t.io_uid,
            io_gid: t.io_gid,
            root: t.root,
            criu_image_path: t.criu_image_path,
            criu_work_path: t.criu_work_path,
            binary_name: t.binary_name,
            criu_path: t.criu_path,
            task_api_address: t.task_api_address,
            task_api_version: t.task_api_version,
        }
    }
}

/// An absolute path without `..`: where state, checkpoints or a cgroup go is the operator's
/// choice, but never a path that climbs out of what it names.
fn clean_path(name: &str, value: &str, absolute: bool) -> Result<Option<PathBuf>> {
    if value.is_empty() {
        return Ok(None);
    }
    let p = PathBuf::from(value);
    let climbs = p
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir));
    if climbs || (absolute && !p.is_absolute()) || value.contains('\0') {
        return Err(Error::InvalidArgument(format!(
            "runtime option {name} {value:?} must be an absolute path without \"..\""
        )));
    }
    Ok(Some(p))
}

impl Fields {
    fn validate(self) -> Result<RuntimeOptions> {
        let refuse = |name: &str, why: &str| {
            Err(Error::InvalidArgument(format!(
                "runtime option {name} is not supported by the youki shim: {why}"
            )))
        };
        if !self.binary_name.is_empty() {
            return refuse(
                &format!("BinaryName {:?}", self.binary_name),
                "containers are run by libcontainer inside the shim, not by a runtime binary",
            );
        }
        if !self.criu_path.is_empty() {
            return refuse(
                &format!("CriuPath {:?}", self.criu_path),
                "CRIU is run as `criu` from the shim's PATH",
            );
        }
        // containerd 2.x sets these for the containers of a shim-served sandbox: the
        // address is the sandbox's shim, which must be the one being asked (service.rs).
        let task_api_address = match (self.task_api_address.as_str(), self.task_api_version) {
            ("", 0) => None,
            (a, 2 | 3) if a.starts_with("ttrpc+unix:///") => Some(a.to_string()),
            (a, v) => {
                return refuse(
                    &format!("TaskApiAddress {a:?} / TaskApiVersion {v}"),
                    "only a ttrpc+unix:// address of this shim's own socket (version 2 or 3) \
                     can be served",
                );
            }
        };
        Ok(RuntimeOptions {
            systemd_cgroup: self.systemd_cgroup,
            no_pivot_root: self.no_pivot_root,
            no_new_keyring: self.no_new_keyring,
            // runc-v2 takes a cgroup path with or without its leading slash.
            shim_cgroup: clean_path("ShimCgroup", &self.shim_cgroup, false)?
                .map(|_| self.shim_cgroup.clone()),
            io_uid: self.io_uid,
            io_gid: self.io_gid,
            root: clean_path("Root", &self.root, true)?,
            criu_image_path: clean_path("CriuImagePath", &self.criu_image_path, true)?,
            criu_work_path: clean_path("CriuWorkPath", &self.criu_work_path, true)?,
            task_api_address,
        })
    }
}

const RUNC_OPTIONS: &str = "containerd.runc.v1.Options";
const CRI_OPTIONS: &str = "runtimeoptions.v1.Options";
const RUNC_CREATE_OPTIONS: &str = "containerd.linux.runc.CreateOptions";
/// runc Options' field 8, `criu_path`, removed from the proto in containerd 2.0 but still
/// sent by 1.x clients.
const RUNC_CRIU_PATH: u32 = 8;

/// Largest runtime options file we read (runc's options fit in a few hundred bytes).
const MAX_CONFIG: u64 = 1 << 20;

/// `ctr --runtime-config-path`'s file: a regular file (never a FIFO or a device, which
/// could block the read or act on being opened), bounded in size: the daemon has one
/// thread, and a FIFO here once stopped it for good.
fn read_config(path: &str) -> Result<String> {
    if !path.starts_with('/') {
        return Err(Error::InvalidArgument(format!(
            "runtime options config_path {:?} is not absolute",
            preview(path)
        )));
    }
    // Whatever is wrong with the file (missing included), the request is what is wrong.
    let bytes =
        safe_open::read_regular("runtime options config_path", path, MAX_CONFIG).map_err(|e| {
            match e {
                Error::Io(..) => Error::InvalidArgument(e.to_string()),
                other => other,
            }
        })?;
    String::from_utf8(bytes).map_err(|_| {
        Error::InvalidArgument(format!(
            "runtime options config_path {:?} is not UTF-8 text",
            preview(path)
        ))
    })
}

/// A TOML error as line, column and message only. The toml crate's own Display quotes
/// the offending line of the input, and options files can hold credentials (a
/// registry's, a logger's) that must not reach containerd's log.
fn toml_error(source: &str, text: &str, e: &toml::de::Error) -> Error {
    let at = e
        .span()
        .map(|span| {
            let before = &text.as_bytes()[..span.start.min(text.len())];
            let line = before.iter().filter(|b| **b == b'\n').count() + 1;
            let col = before.iter().rev().take_while(|b| **b != b'\n').count() + 1;
            format!(" at line {line} column {col}")
        })
        .unwrap_or_default();
    Error::InvalidArgument(format!(
        "runtime options {source}: TOML error{at}: {}",
        redact_quoted(e.message().trim_end())
    ))
}

fn short_name(type_url: &str) -> &str {
    type_url.rsplit('/').next().unwrap_or(type_url)
}

pub fn decode(any: Option<&Any>) -> Result<RuntimeOptions> {
    let Some(any) = any.filter(|a| !a.type_url.is_empty()) else {
        return Ok(RuntimeOptions::default());
    };
    match short_name(&any.type_url) {
        RUNC_OPTIONS => {
            let o = RuncOptions::parse_from_bytes(&any.value)
                .map_err(|e| Error::InvalidArgument(format!("decode {}: {e}", any.type_url)))?;
            let mut criu_path = String::new();
            for (n, v) in o.special_fields.unknown_fields().iter() {
                match (n, v) {
                    (RUNC_CRIU_PATH, UnknownValueRef::LengthDelimited(b)) => {
                        criu_path = String::from_utf8_lossy(b).into_owned()
                    }
                    _ => {
                        return Err(Error::InvalidArgument(format!(
                            "{RUNC_OPTIONS}: field {n} is not supported"
                        )));
                    }
                }
            }
            Fields {
                systemd_cgroup: o.systemd_cgroup,
                no_pivot_root: o.no_pivot_root,
                no_new_keyring: o.no_new_keyring,
                shim_cgroup: o.shim_cgroup,
                io_uid: o.io_uid,
                io_gid: o.io_gid,
                root: o.root,
                criu_image_path: o.criu_image_path,
                criu_work_path: o.criu_work_path,
                binary_name: o.binary_name,
                criu_path,
                task_api_address: o.task_api_address,
                task_api_version: o.task_api_version,
            }
            .validate()
        }
        CRI_OPTIONS => {
            // runtimeoptions.v1.Options{type_url = 1, config_path = 2, config_body = 3}: read
            // the fields without a generated type for a three-field message. CRI sends the
            // TOML text as config_body; `ctr --runtime-config-path` sends a file's path.
            let msg = Empty::parse_from_bytes(&any.value)
                .map_err(|e| Error::InvalidArgument(format!("decode {}: {e}", any.type_url)))?;
            let field = |n: u32| match msg.special_fields.unknown_fields().get(n) {
                Some(UnknownValueRef::LengthDelimited(b)) => {
                    String::from_utf8_lossy(b).into_owned()
                }
                _ => String::new(),
            };
            let (body, path) = (field(3), field(2));
            let (body, source) = if body.is_empty() && !path.is_empty() {
                (
                    read_config(&path)?,
                    format!("config_path {:?}", preview(&path)),
                )
            } else {
                let n = body.len();
                (body, format!("config_body ({n} bytes)"))
            };
            let t: TomlOptions =
                toml::from_str(&body).map_err(|e| toml_error(&source, &body, &e))?;
            Fields::from(t).validate()
        }
        RUNC_CREATE_OPTIONS => {
            // The old v1 CreateOptions (runtime/linux/runctypes/runc.proto) carries the same
            // settings under other numbers, next to restore-only fields no Create needs:
            // those are refused by name rather than ignored.
            let msg = Empty::parse_from_bytes(&any.value)
                .map_err(|e| Error::InvalidArgument(format!("decode {}: {e}", any.type_url)))?;
            let mut f = Fields::default();
            for (n, v) in msg.special_fields.unknown_fields().iter() {
                let text = || match v {
                    UnknownValueRef::LengthDelimited(b) => String::from_utf8_lossy(b).into_owned(),
                    _ => String::new(),
                };
                let number = match v {
                    UnknownValueRef::Varint(x) => x,
                    _ => 0,
                };
                match n {
                    1 => f.no_pivot_root = number != 0,
                    8 => f.no_new_keyring = number != 0,
                    9 => f.shim_cgroup = text(),
                    10 => f.io_uid = number as u32,
                    11 => f.io_gid = number as u32,
                    12 => f.criu_work_path = text(),
                    13 => f.criu_image_path = text(),
                    n => {
                        let name = match n {
                            2 => "open_tcp",
                            3 => "external_unix_sockets",
                            4 => "terminal",
                            5 => "file_locks",
                            6 => "empty_namespaces",
                            7 => "cgroups_mode",
                            _ => "unknown",
                        };
                        return Err(Error::InvalidArgument(format!(
                            "{RUNC_CREATE_OPTIONS}: field {n} ({name}) is not supported"
                        )));
                    }
                }
            }
            f.validate()
        }
        _ => Err(Error::InvalidArgument(format!(
            "unsupported runtime options type {:?}",
            preview(&any.type_url)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn none_is_default() {
        assert_eq!(decode(None).unwrap(), RuntimeOptions::default());
    }

    #[test]
    fn runc_options() {
        let mut o = RuncOptions::new();
        o.systemd_cgroup = true;
        let mut any = Any::new();
        any.type_url = RUNC_OPTIONS.into();
        any.value = o.write_to_bytes().unwrap();
        assert!(decode(Some(&any)).unwrap().systemd_cgroup);
    }

    fn cri_any(body: &str) -> Any {
        cri_field(0x1a, body)
    }

    /// Encodes runtimeoptions.v1.Options with one string field by hand: the tag byte is
    /// (field << 3) | 2, so 0x12 = config_path, 0x1a = config_body.
    fn cri_field(tag: u8, text: &str) -> Any {
        let mut value = vec![tag];
        let mut len = text.len();
        while len >= 0x80 {
            value.push((len as u8 & 0x7f) | 0x80);
            len >>= 7;
        }
        value.push(len as u8);
        value.extend_from_slice(text.as_bytes());
        let mut any = Any::new();
        any.type_url = format!("type.googleapis.com/{CRI_OPTIONS}");
        any.value = value;
        any
    }

    #[test]
    fn cri_toml_options() {
        assert!(
            decode(Some(&cri_any("SystemdCgroup = true\n")))
                .unwrap()
                .systemd_cgroup
        );
        let e = decode(Some(&cri_any("SystemdCgroup = maybe")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1 column 17"), "{e}");
    }

    #[test]
    fn ctr_config_path_is_read() {
        let path = std::env::temp_dir().join(format!("ysm-opts-{}.toml", std::process::id()));
        std::fs::write(&path, "SystemdCgroup = true\n").unwrap();
        let any = cri_field(0x12, path.to_str().unwrap());
        assert!(decode(Some(&any)).unwrap().systemd_cgroup);
        std::fs::remove_file(&path).unwrap();
        let e = decode(Some(&cri_field(0x12, "/nonexistent/opts.toml"))).unwrap_err();
        assert_eq!(e.code(), ttrpc::Code::INVALID_ARGUMENT);
        assert!(e.to_string().contains("/nonexistent/opts.toml"), "{e}");
    }

    /// cri_field with a two-byte varint length, for texts of 128 bytes and more.
    fn cri_long(tag: u8, text: &str) -> Any {
        let n = text.len();
        assert!(n < 1 << 14);
        let mut value = vec![tag, (n as u8 & 0x7f) | 0x80, (n >> 7) as u8];
        value.extend_from_slice(text.as_bytes());
        let mut any = Any::new();
        any.type_url = format!("type.googleapis.com/{CRI_OPTIONS}");
        any.value = value;
        any
    }

    #[test]
    fn toml_errors_never_quote_the_text() {
        let secret = "password = \"hunter2\"\nSystemdCgroup = \"hunter2\"\n";
        for any in [
            cri_any(secret),
            cri_long(0x1a, &format!("{secret}#{}\n", "x".repeat(300))),
        ] {
            let e = decode(Some(&any)).unwrap_err();
            assert_eq!(e.code(), ttrpc::Code::INVALID_ARGUMENT);
            let e = e.to_string();
            assert!(!e.contains("hunter2"), "{e}");
            assert!(e.contains("line 2 column 17"), "{e}");
        }
        let path = std::env::temp_dir().join(format!("ysm-opts-s-{}.toml", std::process::id()));
        std::fs::write(&path, secret).unwrap();
        let e = decode(Some(&cri_field(0x12, path.to_str().unwrap())))
            .unwrap_err()
            .to_string();
        std::fs::remove_file(&path).unwrap();
        assert!(!e.contains("hunter2"), "{e}");
        assert!(e.contains(path.to_str().unwrap()), "{e}");
    }

    #[test]
    fn config_path_must_be_a_regular_file() {
        let d = std::env::temp_dir().join(format!("ysm-opts-k-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let fifo = d.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let link = d.join("link");
        std::os::unix::fs::symlink(&fifo, &link).unwrap();
        // A FIFO without a writer would block a plain read forever.
        for p in [
            fifo.to_str().unwrap(),
            link.to_str().unwrap(),
            d.to_str().unwrap(),
            "/dev/zero",
            "relative.toml",
        ] {
            let e = decode(Some(&cri_field(0x12, p))).unwrap_err();
            assert_eq!(e.code(), ttrpc::Code::INVALID_ARGUMENT, "{p}: {e}");
            assert!(e.to_string().contains(p), "{e}");
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn ctr_1x_create_options_with_the_stdio_owner() {
        let mut any = Any::new();
        any.type_url = RUNC_CREATE_OPTIONS.into();
        // io_uid = 1000 (field 10, varint), io_gid = 1000 (field 11, varint).
        any.value = vec![0x50, 0xe8, 0x07, 0x58, 0xe8, 0x07];
        let o = decode(Some(&any)).unwrap();
        assert_eq!((o.io_uid, o.io_gid), (1000, 1000));
        // no_pivot_root (1), no_new_keyring (8), shim_cgroup (9) = "/a", criu paths (12, 13).
        any.value = vec![
            0x08, 0x01, 0x40, 0x01, 0x4a, 0x02, b'/', b'a', 0x62, 0x02, b'/', b'w', 0x6a, 0x02,
            b'/', b'i',
        ];
        let o = decode(Some(&any)).unwrap();
        assert!(o.no_pivot_root && o.no_new_keyring);
        assert_eq!(o.shim_cgroup.as_deref(), Some("/a"));
        assert_eq!(o.criu_work_path, Some(PathBuf::from("/w")));
        assert_eq!(o.criu_image_path, Some(PathBuf::from("/i")));
        // open_tcp = true (field 2) belongs to restore, not to Create.
        any.value = vec![0x10, 0x01];
        let e = decode(Some(&any)).unwrap_err().to_string();
        assert!(e.contains("field 2 (open_tcp)"), "{e}");
    }

    fn runc_any(o: &RuncOptions) -> Any {
        let mut any = Any::new();
        any.type_url = format!("type.googleapis.com/{RUNC_OPTIONS}");
        any.value = o.write_to_bytes().unwrap();
        any
    }

    #[test]
    fn every_honoured_runc_field_is_decoded() {
        let mut o = RuncOptions::new();
        o.no_pivot_root = true;
        o.no_new_keyring = true;
        o.shim_cgroup = "/containerd/shim".into();
        o.io_uid = 1001;
        o.io_gid = 1002;
        o.root = "/run/state".into();
        o.criu_image_path = "/var/ckpt".into();
        o.criu_work_path = "/var/ckpt-work".into();
        // containerd 2.x, for a container of a shim-served sandbox.
        o.task_api_address = "ttrpc+unix:///run/containerd/s/ab".into();
        o.task_api_version = 2;
        let got = decode(Some(&runc_any(&o))).unwrap();
        assert_eq!(
            got,
            RuntimeOptions {
                systemd_cgroup: false,
                no_pivot_root: true,
                no_new_keyring: true,
                shim_cgroup: Some("/containerd/shim".into()),
                io_uid: 1001,
                io_gid: 1002,
                root: Some("/run/state".into()),
                criu_image_path: Some("/var/ckpt".into()),
                criu_work_path: Some("/var/ckpt-work".into()),
                task_api_address: Some("ttrpc+unix:///run/containerd/s/ab".into()),
            }
        );
    }

    #[test]
    fn every_honoured_toml_field_is_decoded() {
        let body = "NoPivotRoot = true\nNoNewKeyring = true\nShimCgroup = \"/c/s\"\n\
                    IoUid = 7\nIoGid = 8\nRoot = \"/r\"\nCriuImagePath = \"/i\"\n\
                    CriuWorkPath = \"/w\"\nSystemdCgroup = true\nBinaryName = \"\"\n";
        let got = decode(Some(&cri_any(body))).unwrap();
        assert_eq!(
            got,
            RuntimeOptions {
                systemd_cgroup: true,
                no_pivot_root: true,
                no_new_keyring: true,
                shim_cgroup: Some("/c/s".into()),
                io_uid: 7,
                io_gid: 8,
                root: Some("/r".into()),
                criu_image_path: Some("/i".into()),
                criu_work_path: Some("/w".into()),
                task_api_address: None,
            }
        );
    }

    fn refused(any: &Any) -> String {
        let e = decode(Some(any)).unwrap_err();
        assert_eq!(e.code(), ttrpc::Code::INVALID_ARGUMENT);
        e.to_string()
    }

    #[test]
    fn fields_we_cannot_honour_are_refused_by_name() {
        let mut o = RuncOptions::new();
        o.binary_name = "crun".into();
        let e = refused(&runc_any(&o));
        assert!(e.contains("BinaryName \"crun\""), "{e}");
        let mut o = RuncOptions::new();
        o.task_api_address = "grpc+vsock://3:1024".into();
        o.task_api_version = 3;
        assert!(refused(&runc_any(&o)).contains("TaskApiAddress"));
        // containerd 1.x's criu_path = 8.
        let mut any = runc_any(&RuncOptions::new());
        any.value = vec![0x42, 0x02, b'/', b'c'];
        let e = refused(&any);
        assert!(e.contains("CriuPath \"/c\""), "{e}");
        let e = refused(&cri_any("BinaryName = \"runsc\"\n"));
        assert!(e.contains("BinaryName \"runsc\""), "{e}");
        let e = refused(&cri_any("CriuPath = \"/usr/sbin/criu\"\n"));
        assert!(e.contains("CriuPath"), "{e}");
        // A misspelt key is named too, rather than taken for "not set".
        let e = refused(&cri_any("SystemdCgroups = true\n"));
        assert!(e.contains("SystemdCgroups"), "{e}");
    }

    #[test]
    fn paths_must_be_absolute_and_not_climb() {
        let mut o = RuncOptions::new();
        o.root = "relative/state".into();
        assert!(refused(&runc_any(&o)).contains("Root \"relative/state\""));
        let mut o = RuncOptions::new();
        o.shim_cgroup = "/a/../../b".into();
        assert!(refused(&runc_any(&o)).contains("ShimCgroup"));
        let e = refused(&cri_any("CriuImagePath = \"/x/../y\"\n"));
        assert!(e.contains("CriuImagePath"), "{e}");
        // runc-v2 accepts a cgroup path without its leading slash.
        let mut o = RuncOptions::new();
        o.shim_cgroup = "containerd/shim".into();
        assert_eq!(
            decode(Some(&runc_any(&o))).unwrap().shim_cgroup.as_deref(),
            Some("containerd/shim")
        );
    }

    #[test]
    fn unknown_type_names_itself() {
        let mut any = Any::new();
        any.type_url = "example.Bogus".into();
        let e = decode(Some(&any)).unwrap_err();
        assert_eq!(e.code(), ttrpc::Code::INVALID_ARGUMENT);
        assert!(e.to_string().contains("example.Bogus"));
    }
}
