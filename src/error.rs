//! The shim's one error type and its mapping to ttrpc status codes, so containerd (and
//! kubelet behind it) can tell "no such task" from "wrong state" from "the runtime broke".

use std::fmt;

use ttrpc::{Code, Status};

#[derive(Debug)]
pub enum Error {
    /// The caller sent something we cannot use: a bad ID, a bad flag, a bad spec.
    InvalidArgument(String),
    /// No such container or process.
    NotFound(String),
    /// A container or exec with that ID exists already.
    AlreadyExists(String),
    /// The request is valid but not in the object's current state.
    FailedPrecondition(String),
    /// Not provided by this shim.
    Unimplemented(String),
    /// An OS call failed; the string says what we were doing.
    Io(String, std::io::Error),
    /// libcontainer (or the worker running it) failed.
    Runtime(String),
    /// A forked worker did not answer within its deadline; it and what it ran were killed.
    /// The string names the call and the processes that were still running.
    DeadlineExceeded(String),
    /// Something that should not happen.
    Internal(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// How much of a bad value an error message quotes.
const PREVIEW: usize = 128;
/// `s` for an error message: whole when short, else its start and its length.
pub fn preview(s: &str) -> String {
    if s.len() <= PREVIEW {
        return s.to_string();
    }
    let mut end = PREVIEW;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len())
}

/// A parser's message with every double-quoted string in it replaced by `"…"`. serde's
/// messages quote the value they could not use (`invalid type: string "…", expected a
/// sequence`), and that value may be an environment entry or a password; the position
/// the caller reports says where it was.
pub fn redact_quoted(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut chars = msg.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if c != '"' {
            continue;
        }
        out.push('…');
        let mut escaped = false;
        for q in chars.by_ref() {
            if escaped {
                escaped = false;
            } else if q == '\\' {
                escaped = true;
            } else if q == '"' {
                break;
            }
        }
        out.push('"');
    }
    out
}

impl Error {
    pub fn io(context: impl Into<String>, err: impl Into<std::io::Error>) -> Error {
        Error::Io(context.into(), err.into())
    }

    pub fn code(&self) -> Code {
        match self {
            Error::InvalidArgument(_) => Code::INVALID_ARGUMENT,
            Error::NotFound(_) => Code::NOT_FOUND,
            Error::AlreadyExists(_) => Code::ALREADY_EXISTS,
            Error::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
            Error::Unimplemented(_) => Code::UNIMPLEMENTED,
            Error::Io(_, e) if e.kind() == std::io::ErrorKind::NotFound => Code::NOT_FOUND,
            Error::Io(..) | Error::Runtime(_) => Code::UNKNOWN,
            Error::DeadlineExceeded(_) => Code::DEADLINE_EXCEEDED,
            Error::Internal(_) => Code::INTERNAL,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidArgument(m)
            | Error::NotFound(m)
            | Error::AlreadyExists(m)
            | Error::FailedPrecondition(m)
            | Error::Unimplemented(m)
            | Error::Runtime(m)
            | Error::DeadlineExceeded(m)
            | Error::Internal(m) => f.write_str(m),
            Error::Io(ctx, e) => write!(f, "{ctx}: {e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<nix::Error> for Error {
    fn from(e: nix::Error) -> Error {
        Error::Io("system call".into(), std::io::Error::from(e))
    }
}

impl From<Error> for ttrpc::Error {
    fn from(e: Error) -> ttrpc::Error {
        ttrpc::Error::RpcStatus(Status {
            code: e.code().into(),
            message: e.to_string(),
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(e: Error) -> (Code, String) {
        match ttrpc::Error::from(e) {
            ttrpc::Error::RpcStatus(s) => (s.code(), s.message),
            other => panic!("not a status: {other:?}"),
        }
    }

    #[test]
    fn codes_follow_the_kind() {
        assert_eq!(status(Error::NotFound("x".into())).0, Code::NOT_FOUND);
        assert_eq!(
            status(Error::AlreadyExists("x".into())).0,
            Code::ALREADY_EXISTS
        );
        assert_eq!(
            status(Error::FailedPrecondition("x".into())).0,
            Code::FAILED_PRECONDITION
        );
        assert_eq!(
            status(Error::InvalidArgument("x".into())).0,
            Code::INVALID_ARGUMENT
        );
        assert_eq!(
            status(Error::Unimplemented("x".into())).0,
            Code::UNIMPLEMENTED
        );
        assert_eq!(status(Error::Runtime("x".into())).0, Code::UNKNOWN);
        assert_eq!(
            status(Error::DeadlineExceeded("x".into())).0,
            Code::DEADLINE_EXCEEDED
        );
        let enoent = std::io::Error::from_raw_os_error(libc_enoent());
        assert_eq!(status(Error::io("open /x", enoent)).0, Code::NOT_FOUND);
    }

    #[test]
    fn quoted_values_are_redacted() {
        assert_eq!(
            redact_quoted(r#"invalid type: string "A=\"x\" B", expected a sequence"#),
            r#"invalid type: string "…", expected a sequence"#
        );
        assert_eq!(redact_quoted("no quotes"), "no quotes");
        assert_eq!(redact_quoted(r#"open "x"#), r#"open "…""#);
    }

    #[test]
    fn message_keeps_context() {
        let e = Error::io("open /run/x", std::io::Error::from_raw_os_error(13));
        let (_, msg) = status(e);
        assert!(msg.starts_with("open /run/x: "), "{msg}");
    }

    fn libc_enoent() -> i32 {
        nix::errno::Errno::ENOENT as i32
    }
}
