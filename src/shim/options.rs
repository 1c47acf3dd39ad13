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

use crate::error::{Error, Result, preview, redact_quoted};
use crate::safe_open;

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
