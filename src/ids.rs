//! Validation of the names that become paths: container IDs and namespaces. Checked before
//! either is joined onto any directory, so `../x` or `a/b` can never escape a state root.

use crate::error::{Error, Result, preview};

/// A container (or exec) ID: what runc and containerd accept, 1–1024 characters of
/// `[A-Za-z0-9_.-]`, starting with a letter or digit (so never `.` or `..`).
pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && id.as_bytes()[0].is_ascii_alphanumeric()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "invalid container id {:?}: want 1-1024 characters of [A-Za-z0-9_.-] starting with a letter or digit",
            preview(id)
        )))
    }
}

/// A containerd namespace: labels of `[A-Za-z0-9]` joined by single `.`, `_` or `-`,
/// at most 76 characters (containerd's own rule).
pub fn validate_namespace(ns: &str) -> Result<()> {
    let mut prev_sep = true;
    let mut ok = !ns.is_empty() && ns.len() <= 76;
    for b in ns.bytes() {
        if b.is_ascii_alphanumeric() {
            prev_sep = false;
        } else if matches!(b, b'.' | b'_' | b'-') && !prev_sep {
            prev_sep = true;
        } else {
            ok = false;
        }
    }
    if ok && !prev_sep {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "invalid namespace {:?}",
            preview(ns)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for good in ["c1", "a.b_c-d", "0123456789abcdef", &"x".repeat(1024)] {
            assert!(validate_id(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "-x",
            "a b",
            "a\0b",
            &"x".repeat(1025),
        ] {
            let e = validate_id(bad).unwrap_err();
            assert_eq!(e.code(), ttrpc::Code::INVALID_ARGUMENT);
        }
    }

    #[test]
    fn namespaces() {
        for good in ["default", "k8s.io", "moby", "a-b_c.d"] {
            assert!(validate_namespace(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "..",
            "a/b",
            "a..b",
            "-a",
            "a-",
            "k8s.io/../x",
            &"a".repeat(77),
        ] {
            assert!(validate_namespace(bad).is_err(), "{bad}");
        }
    }
}
