//! runc's `Root` option: libcontainer's state goes to `<Root>/<namespace>/<id>` instead of
//! `/run/containerd/youki/<namespace>/<id>`. Whoever cleans up without the options in hand
//! must still find it: `delete` (run by containerd after a shim died, with only the bundle)
//! and `youki-shims` (run by an operator, with nothing). So `start` records the state root
//! in the bundle (`state-root`, beside `address`) and registers the base directory under
//! `/run/containerd/youki/.roots` (a name no namespace can have), one file per base.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::runtime::youki::{DEFAULT_STATE_BASE, state_root_in};

/// The bundle file holding the container's namespace-level state root.
pub const BUNDLE_FILE: &str = "state-root";
const REGISTRY: &str = ".roots";

/// Records where the containers started from `bundle` keep their state. `base` is the
/// Root option (`None`: the default). Returns the namespace-level state root.
pub fn record(bundle: &Path, base: Option<&Path>, namespace: &str) -> Result<PathBuf> {
    let root = state_root_in(base, namespace);
    if let Some(base) = base {
        register(Path::new(DEFAULT_STATE_BASE), base)?;
    }
    std::fs::write(
        bundle.join(BUNDLE_FILE),
        root.as_os_str().as_encoded_bytes(),
    )
    .map_err(|e| Error::io(format!("record state root in {}", bundle.display()), e))?;
    Ok(root)
}

fn register(default_base: &Path, base: &Path) -> Result<()> {
    let dir = default_base.join(REGISTRY);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    let bytes = base.as_os_str().as_encoded_bytes();
    let file = dir.join(hex::encode(Sha256::digest(bytes)));
    if !file.exists() {
        std::fs::write(&file, bytes)
            .map_err(|e| Error::io(format!("register state root in {}", file.display()), e))?;
    }
    Ok(())
}

/// Every base directory that may hold state: the default first, then each registered one.
pub fn bases() -> Vec<PathBuf> {
    bases_in(Path::new(DEFAULT_STATE_BASE))
}

fn bases_in(default_base: &Path) -> Vec<PathBuf> {
    let mut all = vec![default_base.to_path_buf()];
    let mut found: Vec<PathBuf> = std::fs::read_dir(default_base.join(REGISTRY))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read(e.path()).ok())
        .map(|b| PathBuf::from(String::from_utf8_lossy(&b).into_owned()))
        .filter(|p| p.is_absolute() && p != default_base)
        .collect();
    found.sort();
    all.extend(found);
    all
}

/// The state root `start` recorded in `bundle`, if it did and it names `namespace`.
pub fn of_bundle(bundle: &Path, namespace: &str) -> Option<PathBuf> {
    let bytes = std::fs::read(bundle.join(BUNDLE_FILE)).ok()?;
    let root = PathBuf::from(String::from_utf8_lossy(&bytes).into_owned());
    (root.is_absolute() && root.file_name()? == namespace).then_some(root)
}

/// Where container `id` of `namespace` keeps its state: the first base holding it, else
/// the default.
pub fn find(namespace: &str, id: &str) -> PathBuf {
    find_in(&bases(), namespace, id)
}

fn find_in(bases: &[PathBuf], namespace: &str, id: &str) -> PathBuf {
    bases
        .iter()
        .map(|b| state_root_in(Some(b), namespace))
        .find(|r| r.join(id).is_dir())
        .unwrap_or_else(|| state_root_in(bases.first().map(PathBuf::as_path), namespace))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ysm-roots-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn registered_bases_are_found_and_containers_in_them() {
        let t = tmp("reg");
        let default = t.join("default");
        let custom = t.join("custom");
        register(&default, &custom).unwrap();
        register(&default, &custom).unwrap();
        let bases = bases_in(&default);
        assert_eq!(bases, [default.clone(), custom.clone()]);
        std::fs::create_dir_all(custom.join("ns1/c1")).unwrap();
        assert_eq!(find_in(&bases, "ns1", "c1"), custom.join("ns1"));
        assert_eq!(find_in(&bases, "ns1", "c2"), default.join("ns1"));
        std::fs::remove_dir_all(&t).unwrap();
    }

    #[test]
    fn the_bundle_record_must_name_the_namespace() {
        let t = tmp("bundle");
        std::fs::write(t.join(BUNDLE_FILE), "/srv/state/ns1").unwrap();
        assert_eq!(of_bundle(&t, "ns1"), Some(PathBuf::from("/srv/state/ns1")));
        assert_eq!(of_bundle(&t, "ns2"), None);
        std::fs::write(t.join(BUNDLE_FILE), "relative/ns1").unwrap();
        assert_eq!(of_bundle(&t, "ns1"), None);
        std::fs::remove_dir_all(&t).unwrap();
    }
}
