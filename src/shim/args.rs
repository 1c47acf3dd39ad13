//! The shim's command line, as containerd writes it (Go `flag` syntax: `-name value`,
//! `-name=value`, `--name value`; booleans take no value).

use crate::error::{Error, Result};

/// What the invocation asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `start`: hand containerd the address of the shim serving this container.
    Start,
    /// `delete`: clean up after a dead shim using what is on disk.
    Delete,
    /// No action: serve the Task API (the daemon `start` spawned).
    Serve,
    /// `-v` / `--version`.
    Version,
    /// `-info` (containerd 2.x): print a protobuf `RuntimeInfo` and exit.
    Info,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    pub namespace: String,
    pub id: String,
    /// containerd's gRPC address (`-address`).
    pub address: String,
    pub publish_binary: String,
    pub bundle: String,
    /// The socket to serve on, set only for the daemon `start` spawned.
    pub socket: String,
    /// The Root runtime option the daemon serves with (empty: the default state root).
    pub state_root: String,
    /// The group (pod) the daemon was spawned for: recorded on its command line so that
    /// `youki-shims` matches containers to it without recomputing socket names.
    pub group: String,
    pub debug: bool,
    pub action: Action,
}

impl Args {
    pub fn parse<I, S>(argv: I) -> Result<Args>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut args = Args {
            namespace: String::new(),
            id: String::new(),
            address: String::new(),
            publish_binary: String::new(),
            bundle: String::new(),
            socket: String::new(),
            state_root: String::new(),
            group: String::new(),
            debug: false,
            action: Action::Serve,
        };
        let mut positional = Vec::new();
        let mut it = argv.into_iter().map(Into::into);
        while let Some(arg) = it.next() {
            let Some(flag) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
                positional.push(arg);
                continue;
            };
            if flag.is_empty() {
                // A lone `-` or `--` ends the flags, as in Go.
                positional.extend(it.by_ref());
                break;
            }
            let (name, inline) = match flag.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (flag, None),
            };
            match name {
                "debug" => args.debug = parse_bool(name, inline.as_deref())?,
                "v" | "version" => {
                    if parse_bool(name, inline.as_deref())? {
                        args.action = Action::Version;
                    }
                }
                "info" => {
                    if parse_bool(name, inline.as_deref())? {
                        args.action = Action::Info;
                    }
                }
                "namespace" | "id" | "address" | "publish-binary" | "bundle" | "socket"
                | "group" | "state-root" => {
                    let value = match inline {
                        Some(v) => v,
                        None => it.next().ok_or_else(|| {
                            Error::InvalidArgument(format!("flag -{name} needs a value"))
                        })?,
                    };
                    match name {
                        "namespace" => args.namespace = value,
                        "id" => args.id = value,
                        "address" => args.address = value,
                        "publish-binary" => args.publish_binary = value,
                        "bundle" => args.bundle = value,
                        "state-root" => args.state_root = value,
                        "group" => args.group = value,
                        _ => args.socket = value,
                    }
                }
                other => {
                    return Err(Error::InvalidArgument(format!("unknown flag -{other}")));
                }
            }
        }
        if matches!(args.action, Action::Version | Action::Info) {
            return Ok(args);
        }
        match positional.as_slice() {
            [] => {}
            [a] if a == "start" => args.action = Action::Start,
            [a] if a == "delete" => args.action = Action::Delete,
            other => {
                return Err(Error::InvalidArgument(format!(
                    "unknown action {other:?}: want start, delete or none"
                )));
            }
        }
        Ok(args)
    }
}

fn parse_bool(name: &str, value: Option<&str>) -> Result<bool> {
    match value {
        None | Some("true") | Some("1") | Some("t") | Some("T") | Some("TRUE") => Ok(true),
        Some("false") | Some("0") | Some("f") | Some("F") | Some("FALSE") => Ok(false),
        Some(v) => Err(Error::InvalidArgument(format!(
            "flag -{name}: invalid boolean {v:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerd_start_line() {
        let a = Args::parse([
            "-namespace",
            "default",
            "-address",
            "/run/containerd/containerd.sock",
            "-publish-binary",
            "/usr/bin/containerd",
            "-id",
            "c1",
            "-debug",
            "start",
        ])
        .unwrap();
        assert_eq!(a.namespace, "default");
        assert_eq!(a.address, "/run/containerd/containerd.sock");
        assert_eq!(a.publish_binary, "/usr/bin/containerd");
        assert_eq!(a.id, "c1");
        assert!(a.debug);
        assert_eq!(a.action, Action::Start);
    }

    #[test]
    fn delete_with_bundle_and_equals_syntax() {
        let a = Args::parse(["--namespace=k8s.io", "-id=x", "-bundle", "/b", "delete"]).unwrap();
        assert_eq!(a.namespace, "k8s.io");
        assert_eq!(a.id, "x");
        assert_eq!(a.bundle, "/b");
        assert_eq!(a.action, Action::Delete);
        assert!(!a.debug);
    }

    #[test]
    fn no_action_serves() {
        let a = Args::parse(["-id", "x", "-socket", "/run/containerd/s/abc"]).unwrap();
        assert_eq!(a.action, Action::Serve);
        assert_eq!(a.socket, "/run/containerd/s/abc");
    }

    #[test]
    fn an_empty_value_is_a_value() {
        // What `start` spawns when containerd gave an empty -address: the next flag must
        // not become the address.
        let a = Args::parse([
            "-namespace",
            "n",
            "-id",
            "c",
            "-address",
            "",
            "-socket",
            "/s",
            "-group",
            "g",
        ])
        .unwrap();
        assert_eq!(a.address, "");
        assert_eq!(a.socket, "/s");
        assert_eq!(a.group, "g");
        assert_eq!(a.action, Action::Serve);
        let a = Args::parse(["-address=", "-id", "c"]).unwrap();
        assert_eq!((a.address.as_str(), a.id.as_str()), ("", "c"));
    }

    #[test]
    fn version_flags() {
        assert_eq!(Args::parse(["-v"]).unwrap().action, Action::Version);
        assert_eq!(Args::parse(["--version"]).unwrap().action, Action::Version);
        assert_eq!(Args::parse(["-v=false"]).unwrap().action, Action::Serve);
    }

    #[test]
    fn info_flag() {
        // What containerd 2.x runs: the flag alone, options on stdin.
        assert_eq!(Args::parse(["-info"]).unwrap().action, Action::Info);
        assert_eq!(Args::parse(["--info=true"]).unwrap().action, Action::Info);
        assert_eq!(Args::parse(["-info=false"]).unwrap().action, Action::Serve);
    }

    #[test]
    fn bad_input_names_the_offender() {
        let e = Args::parse(["-bogus"]).unwrap_err().to_string();
        assert!(e.contains("-bogus"), "{e}");
        let e = Args::parse(["-id"]).unwrap_err().to_string();
        assert!(e.contains("-id"), "{e}");
        let e = Args::parse(["frobnicate"]).unwrap_err().to_string();
        assert!(e.contains("frobnicate"), "{e}");
        let e = Args::parse(["-debug=maybe"]).unwrap_err().to_string();
        assert!(e.contains("maybe"), "{e}");
    }
}
