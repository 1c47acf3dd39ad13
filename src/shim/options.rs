//! Runtime options as containerd sends them with Create: runc's `containerd.runc.v1.Options`
//! (from `ctr --runc-systemd-cgroup` and friends) or, for any runtime type other than
//! runc's, CRI's generic `runtimeoptions.v1.Options` whose `config_body` is the TOML text of
//! the runtime's `[options]` table. ctr 1.x sends the old `containerd.linux.runc.CreateOptions`
//! for any runtime but runc's when it sets the stdio owner (`ctr run --uidmap`/`--remap-labels`).

use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::protobuf::UnknownValueRef;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::empty::Empty;
use containerd_shim_protos::shim::oci::Options as RuncOptions;
use serde::Deserialize;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeOptions {
    pub systemd_cgroup: bool,
}

#[derive(Deserialize, Default)]
struct TomlOptions {
    #[serde(rename = "SystemdCgroup", default)]
    systemd_cgroup: bool,
}

const RUNC_OPTIONS: &str = "containerd.runc.v1.Options";
const CRI_OPTIONS: &str = "runtimeoptions.v1.Options";
const RUNC_CREATE_OPTIONS: &str = "containerd.linux.runc.CreateOptions";
/// `CreateOptions`' `io_uid` and `io_gid` (containerd's runtime/linux/runctypes/runc.proto).
const IO_UID: u32 = 10;
const IO_GID: u32 = 11;

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
            Ok(RuntimeOptions {
                systemd_cgroup: o.systemd_cgroup,
            })
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
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    Error::InvalidArgument(format!("runtime options config_path {path:?}: {e}"))
                })?;
                (text, format!("config_path {path:?}"))
            } else {
                (body.clone(), format!("config_body {body:?}"))
            };
            let t: TomlOptions = toml::from_str(&body)
                .map_err(|e| Error::InvalidArgument(format!("runtime options {source}: {e}")))?;
            Ok(RuntimeOptions {
                systemd_cgroup: t.systemd_cgroup,
            })
        }
        RUNC_CREATE_OPTIONS => {
            // Only the stdio owner is accepted. It tells runc's shim whom to chown the pipes
            // it puts between the fifos and a user-namespaced container; we create no such
            // pipes (the container gets containerd's fifos as they are), so there is nothing
            // to chown. Any other field set would be a request we cannot honour: refuse it
            // by its number rather than ignore it.
            let msg = Empty::parse_from_bytes(&any.value)
                .map_err(|e| Error::InvalidArgument(format!("decode {}: {e}", any.type_url)))?;
            if let Some((n, _)) = msg
                .special_fields
                .unknown_fields()
                .iter()
                .find(|(n, _)| *n != IO_UID && *n != IO_GID)
            {
                return Err(Error::InvalidArgument(format!(
                    "{RUNC_CREATE_OPTIONS}: field {n} is not supported (only io_uid and io_gid)"
                )));
            }
            Ok(RuntimeOptions::default())
        }
        other => Err(Error::InvalidArgument(format!(
            "unsupported runtime options type {other:?}"
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
        let mut value = vec![tag, text.len() as u8];
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
        assert!(
            !decode(Some(&cri_any("BinaryName = \"x\"\n")))
                .unwrap()
                .systemd_cgroup
        );
        let e = decode(Some(&cri_any("SystemdCgroup = maybe")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("maybe"), "{e}");
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

    #[test]
    fn ctr_1x_create_options_with_the_stdio_owner() {
        let mut any = Any::new();
        any.type_url = RUNC_CREATE_OPTIONS.into();
        // io_uid = 1000 (field 10, varint), io_gid = 1000 (field 11, varint).
        any.value = vec![0x50, 0xe8, 0x07, 0x58, 0xe8, 0x07];
        assert_eq!(decode(Some(&any)).unwrap(), RuntimeOptions::default());
        // no_pivot_root = true (field 1) is a request we cannot honour.
        any.value = vec![0x08, 0x01];
        let e = decode(Some(&any)).unwrap_err().to_string();
        assert!(e.contains("field 1"), "{e}");
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
