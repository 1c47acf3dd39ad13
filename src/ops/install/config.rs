//! Merging our runtime into containerd's config.toml with a format-preserving TOML editor:
//! the operator's comments, key order and other runtimes stay as they are, and a file
//! that already holds what we would write comes out byte for byte the same.

use toml_edit::{DocumentMut, Item, Table, value};

use super::InstallError;

/// What containerd calls the runtime (it runs containerd-shim-youki-v2 for it).
pub const RUNTIME_TYPE: &str = "io.containerd.youki.v2";
/// Our pause image, as imported by `install`.
pub const PAUSE_IMAGE: &str = "localhost/youki/pause:latest";

/// The config layouts we write. Version 1 (a file with no `version` key, read by
/// containerd 1.x only) is refused: its CRI plugin is `plugins.cri` with other keys, and
/// rewriting the operator's whole file into version 2 is a migration we should not do
/// behind their back (`containerd config migrate` on 2.x, or by hand).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigVersion {
    /// containerd 1.6/1.7 (2.x reads it too, migrating in memory).
    V2,
    /// containerd 2.x.
    V3,
}

impl ConfigVersion {
    /// The table that holds `containerd.runtimes` (and, on version 2, `sandbox_image`).
    fn runtime_plugin(self) -> &'static str {
        match self {
            ConfigVersion::V2 => "io.containerd.grpc.v1.cri",
            ConfigVersion::V3 => "io.containerd.cri.v1.runtime",
        }
    }

    pub fn number(self) -> i64 {
        match self {
            ConfigVersion::V2 => 2,
            ConfigVersion::V3 => 3,
        }
    }
}

/// What to merge in.
#[derive(Debug, Clone)]
pub struct Wanted {
    pub handler: String,
    /// None: whatever the runc runtime of the same file uses (false if it says nothing).
    pub systemd_cgroup: Option<bool>,
    pub set_default: bool,
    pub pause: bool,
}

/// A parsed config.toml and the version it declares.
pub struct Config {
    pub doc: DocumentMut,
    pub version: ConfigVersion,
}

/// Parses `text` (read from `path`, named in errors) and checks it against the containerd
/// major version that will read it.
pub fn parse(path: &str, text: &str, containerd_major: u32) -> Result<Config, InstallError> {
    let doc: DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
        InstallError::Config(format!("{path} is not valid TOML: {}", e.to_string().trim()))
    })?;
    let version = match doc.get("version") {
        None => {
            return Err(InstallError::Config(format!(
                "{path} has no `version` key, so it is a version 1 config (containerd 1.x's \
                 oldest layout, plugins.cri): refusing to rewrite it. Add `version = 2` and \
                 rename its tables (plugins.cri -> plugins.\"io.containerd.grpc.v1.cri\"), or \
                 run `containerd config migrate` on containerd 2.x, then install again"
            )));
        }
        Some(item) => match item.as_integer() {
            Some(2) => ConfigVersion::V2,
            Some(3) if containerd_major >= 2 => ConfigVersion::V3,
            Some(3) => {
                return Err(InstallError::Config(format!(
                    "{path} is config version 3, which containerd {containerd_major}.x cannot read"
                )));
            }
            _ => {
                return Err(InstallError::Config(format!(
                    "{path}: unknown config version {}: we know 2 (containerd 1.6/1.7) and 3 \
                     (containerd 2.x)",
                    item.to_string().trim()
                )));
            }
        },
    };
    Ok(Config { doc, version })
}

/// The table at `path` under `root`, created (implicit, so no empty header is written)
/// where missing. An existing key that is not a table is an error naming it.
fn table_at<'a>(root: &'a mut Table, path: &[&str]) -> Result<&'a mut Table, InstallError> {
    let mut t = root;
    let mut walked = String::new();
    for key in path {
        walked.push_str(if walked.is_empty() { "" } else { "." });
        walked.push_str(key);
        if !t.contains_key(key) {
            let mut new = Table::new();
            new.set_implicit(true);
            t.insert(key, Item::Table(new));
        }
        let item = t.get_mut(key).ok_or_else(|| missing(&walked))?;
        // An inline table (`options = { ... }`) is edited as it is written.
        if let Item::Value(toml_edit::Value::InlineTable(_)) = item {
            let inline = std::mem::take(item)
                .into_value()
                .ok()
                .and_then(|v| v.as_inline_table().cloned())
                .ok_or_else(|| missing(&walked))?;
            *item = Item::Table(inline.into_table());
        }
        t = item.as_table_mut().ok_or_else(|| {
            InstallError::Config(format!("config key {walked} is not a table"))
        })?;
    }
    Ok(t)
}

fn missing(key: &str) -> InstallError {
    InstallError::Config(format!("config key {key} vanished while editing"))
}

/// Sets `t[key] = v` unless it already holds exactly that (so the text is untouched).
/// A value replaced keeps its key's and its own decoration (indentation, trailing
/// comment); a new key is indented like the table's other keys.
fn set<V>(t: &mut Table, key: &str, v: V) -> bool
where
    toml_edit::Value: From<V>,
{
    let mut want = toml_edit::Value::from(v);
    if let Some(have) = t.get_mut(key).and_then(Item::as_value_mut) {
        let same = match (&*have, &want) {
            (toml_edit::Value::String(a), toml_edit::Value::String(b)) => a.value() == b.value(),
            (toml_edit::Value::Boolean(a), toml_edit::Value::Boolean(b)) => a.value() == b.value(),
            _ => false,
        };
        if !same {
            *want.decor_mut() = have.decor().clone();
            *have = want;
        }
        return !same;
    }
    let indent = key_indent(t);
    t.insert(key, value(want));
    if let (Some(indent), Some(mut k)) = (indent, t.key_mut(key)) {
        k.leaf_decor_mut().set_prefix(indent);
    }
    true
}

/// The indentation of the first key of `t` written as `key = value`.
fn key_indent(t: &Table) -> Option<String> {
    t.iter()
        .filter(|(_, v)| v.is_value())
        .find_map(|(k, _)| t.key(k))
        .and_then(|k| k.leaf_decor().prefix())
        .and_then(|p| p.as_str())
        .map(|s| s.rsplit('\n').next().unwrap_or(s).to_string())
}

/// The whitespace before a table header (after the line before it).
fn header_indent(t: &Table) -> Option<String> {
    t.decor()
        .prefix()
        .and_then(|p| p.as_str())
        .map(|s| s.rsplit('\n').next().unwrap_or(s).to_string())
}

/// Lays out a runtime table we just created like an existing sibling (runc's, usually):
/// header and keys indented the same, its `options` table too, so the file reads as if
/// the operator had written it.
fn style_like(rt: &mut Table, sibling: Option<&Table>) {
    let Some(sib) = sibling else { return };
    let header = header_indent(sib).unwrap_or_default();
    let keys = key_indent(sib).unwrap_or_else(|| format!("{header}  "));
    let sib_opts = sib.get("options").and_then(Item::as_table);
    let opts_header = sib_opts
        .and_then(header_indent)
        .unwrap_or_else(|| keys.clone());
    let opts_keys = sib_opts
        .and_then(key_indent)
        .unwrap_or_else(|| format!("{opts_header}  "));
    rt.decor_mut().set_prefix(header);
    let names: Vec<String> = rt.iter().map(|(k, _)| k.to_string()).collect();
    for k in &names {
        if let Some(mut key) = rt.key_mut(k) {
            key.leaf_decor_mut().set_prefix(keys.clone());
        }
    }
    if let Some(opts) = rt.get_mut("options").and_then(Item::as_table_mut) {
        opts.decor_mut().set_prefix(opts_header);
        let names: Vec<String> = opts.iter().map(|(k, _)| k.to_string()).collect();
        for k in &names {
            if let Some(mut key) = opts.key_mut(k) {
                key.leaf_decor_mut().set_prefix(opts_keys.clone());
            }
        }
    }
}

/// What the runc runtime (any handler whose runtime_type is io.containerd.runc.v2 or
/// .v1) of this file says about SystemdCgroup; false when it says nothing.
pub fn runc_systemd_cgroup(cfg: &Config) -> bool {
    let plugin = cfg.version.runtime_plugin();
    let runtimes = cfg
        .doc
        .get("plugins")
        .and_then(|p| p.get(plugin))
        .and_then(|p| p.get("containerd"))
        .and_then(|c| c.get("runtimes"))
        .and_then(Item::as_table_like);
    let Some(runtimes) = runtimes else {
        return false;
    };
    // The handler named runc first, then any other runc handler.
    let mut candidates: Vec<&Item> = runtimes.get("runc").into_iter().collect();
    candidates.extend(runtimes.iter().map(|(_, v)| v));
    candidates
        .into_iter()
        .find(|r| {
            r.get("runtime_type")
                .and_then(Item::as_str)
                .is_some_and(|t| t.starts_with("io.containerd.runc."))
        })
        .and_then(|r| r.get("options"))
        .and_then(|o| o.get("SystemdCgroup"))
        .and_then(Item::as_bool)
        .unwrap_or(false)
}

/// Merges `want` into the document. Returns a line per change made (empty: the file
/// already holds it all).
pub fn merge(cfg: &mut Config, want: &Wanted) -> Result<Vec<String>, InstallError> {
    let systemd = want
        .systemd_cgroup
        .unwrap_or_else(|| runc_systemd_cgroup(cfg));
    let plugin = cfg.version.runtime_plugin();
    let base = ["plugins", plugin, "containerd"];
    let mut changes = Vec::new();
    let root = cfg.doc.as_table_mut();
    let prefix = format!("plugins.\"{plugin}\".containerd");
    {
        let mut path = base.to_vec();
        path.push("runtimes");
        let runtimes = table_at(root, &path)?;
        let created = !runtimes.contains_key(&want.handler);
        // A sibling to look like: the runc handler, else any runtime written as a table.
        let sibling = runtimes
            .get("runc")
            .and_then(Item::as_table)
            .or_else(|| runtimes.iter().find_map(|(_, v)| v.as_table()))
            .cloned();
        let rt = table_at(runtimes, &[want.handler.as_str()])?;
        if set(rt, "runtime_type", RUNTIME_TYPE) {
            changes.push(format!(
                "{prefix}.runtimes.{}.runtime_type = \"{RUNTIME_TYPE}\"",
                want.handler
            ));
        }
        let opts = table_at(rt, &["options"])?;
        if set(opts, "SystemdCgroup", systemd) {
            changes.push(format!(
                "{prefix}.runtimes.{}.options.SystemdCgroup = {systemd}",
                want.handler
            ));
        }
        if created {
            // A table written by us is a real header, not implicit.
            rt.set_implicit(false);
            style_like(rt, sibling.as_ref());
        }
    }
    if want.set_default {
        let c = table_at(root, &base)?;
        if set(c, "default_runtime_name", want.handler.as_str()) {
            changes.push(format!(
                "{prefix}.default_runtime_name = \"{}\"",
                want.handler
            ));
        }
    }
    if want.pause {
        let (path, key): (&[&str], &str) = match cfg.version {
            ConfigVersion::V2 => (&["plugins", "io.containerd.grpc.v1.cri"], "sandbox_image"),
            ConfigVersion::V3 => (
                &["plugins", "io.containerd.cri.v1.images", "pinned_images"],
                "sandbox",
            ),
        };
        let t = table_at(root, path)?;
        if set(t, key, PAUSE_IMAGE) {
            changes.push(format!(
                "plugins.\"{}\".{key} = \"{PAUSE_IMAGE}\"",
                path[1..].join(".")
            ));
        }
    }
    Ok(changes)
}

/// The `[grpc] address` the file gives containerd (None: containerd's default).
pub fn grpc_address(doc: &DocumentMut) -> Option<String> {
    doc.get("grpc")
        .and_then(|g| g.get("address"))
        .and_then(Item::as_str)
        .map(str::to_string)
}

/// A line diff of `old` to `new` (longest common subsequence; config files are small),
/// unified style with three lines of context.
pub fn diff(name: &str, old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    // The edit script: (' ' | '-' | '+', line).
    let mut ops = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            ops.push((' ', a[i]));
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            ops.push(('+', b[j]));
            j += 1;
        } else {
            ops.push(('-', a[i]));
            i += 1;
        }
    }
    let near_change = |k: usize| {
        let lo = k.saturating_sub(3);
        let hi = (k + 3).min(ops.len() - 1);
        ops[lo..=hi].iter().any(|(c, _)| *c != ' ')
    };
    let mut out = format!("--- {name}\n+++ {name} (merged)\n");
    let mut skipped = false;
    for (k, (c, line)) in ops.iter().enumerate() {
        if near_change(k) {
            if skipped {
                out.push_str("@@\n");
                skipped = false;
            }
            out.push_str(&format!("{c}{line}\n"));
        } else {
            skipped = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const V2: &str = r#"# Managed by the ops team: ask before editing.
version = 2
root = "/var/lib/containerd"

[grpc]
  address = "/run/containerd/containerd.sock"

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    # our mirror
    sandbox_image = "registry.k8s.io/pause:3.9"
    [plugins."io.containerd.grpc.v1.cri".containerd]
      default_runtime_name = "runc"  # until youki is proven here
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = true   # kubelet uses systemd
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.gvisor]
        runtime_type = "io.containerd.runsc.v1"
"#;

    const V3: &str = r#"version = 3
# pinned by policy
[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = 'registry.k8s.io/pause:3.10'

[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
  runtime_type = 'io.containerd.runc.v2'
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
    SystemdCgroup = false
"#;

    fn want() -> Wanted {
        Wanted {
            handler: "youki".into(),
            systemd_cgroup: None,
            set_default: false,
            pause: false,
        }
    }

    fn merged(text: &str, major: u32, w: &Wanted) -> (String, Vec<String>) {
        let mut c = parse("config.toml", text, major).unwrap();
        let changes = merge(&mut c, w).unwrap();
        (c.doc.to_string(), changes)
    }

    #[test]
    fn v2_keeps_comments_order_and_other_runtimes_and_follows_runc() {
        let (out, changes) = merged(V2, 1, &want());
        // Only lines added, none changed; ours indented like runc's.
        let d = diff("c", V2, &out);
        assert!(!d.lines().skip(2).any(|l| l.starts_with('-')), "{d}");
        assert!(
            d.contains("+      [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.youki]\n")
                && d.contains("+        runtime_type = \"io.containerd.youki.v2\"\n")
                && d.contains("+          SystemdCgroup = true\n"),
            "{d}"
        );
        assert!(out.contains("# our mirror") && out.contains("gvisor"));
        let again: DocumentMut = out.parse().unwrap();
        let rt = &again["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]["youki"];
        assert_eq!(rt["runtime_type"].as_str(), Some(RUNTIME_TYPE));
        assert_eq!(rt["options"]["SystemdCgroup"].as_bool(), Some(true));
        assert_eq!(changes.len(), 2);
        // The sandbox image is the operator's unless --pause.
        assert!(out.contains("registry.k8s.io/pause:3.9"));
    }

    #[test]
    fn a_changed_value_keeps_its_comment() {
        let w = Wanted {
            set_default: true,
            ..want()
        };
        let (out, _) = merged(V2, 1, &w);
        assert!(
            out.contains("      default_runtime_name = \"youki\"  # until youki is proven here\n"),
            "{out}"
        );
    }

    #[test]
    fn second_merge_changes_nothing() {
        let w = Wanted {
            set_default: true,
            pause: true,
            ..want()
        };
        for (text, major) in [(V2, 1), (V3, 2)] {
            let (once, _) = merged(text, major, &w);
            let (twice, changes) = merged(&once, major, &w);
            assert_eq!(once, twice);
            assert!(changes.is_empty(), "{changes:?}");
        }
    }

    #[test]
    fn v3_pause_and_default_only_when_asked() {
        let (out, _) = merged(V3, 2, &want());
        assert!(out.contains("registry.k8s.io/pause:3.10"));
        assert!(!out.contains("default_runtime_name"));
        let w = Wanted {
            set_default: true,
            pause: true,
            systemd_cgroup: Some(true),
            ..want()
        };
        let (out, _) = merged(V3, 2, &w);
        let d: DocumentMut = out.parse().unwrap();
        assert_eq!(
            d["plugins"]["io.containerd.cri.v1.images"]["pinned_images"]["sandbox"].as_str(),
            Some(PAUSE_IMAGE)
        );
        let c = &d["plugins"]["io.containerd.cri.v1.runtime"]["containerd"];
        assert_eq!(c["default_runtime_name"].as_str(), Some("youki"));
        assert_eq!(
            c["runtimes"]["youki"]["options"]["SystemdCgroup"].as_bool(),
            Some(true)
        );
        assert!(out.contains("# pinned by policy"));
    }

    #[test]
    fn refuses_version_1_unknown_versions_and_bad_toml() {
        let e = |t: &str, major| parse("/x/config.toml", t, major).err().unwrap().to_string();
        assert!(e("[plugins.cri]\n", 1).contains("version 1"));
        assert!(e("version = 7\n", 2).contains("unknown config version 7"));
        assert!(e("version = 3\n", 1).contains("containerd 1.x cannot read"));
        assert!(e("version = = 2\n", 1).contains("/x/config.toml is not valid TOML"));
        assert!(e("version = \"2\"\n", 1).contains("unknown config version \"2\""));
    }

    #[test]
    fn a_scalar_where_a_table_belongs_is_named() {
        let t = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\ncontainerd = 1\n";
        let mut c = parse("c", t, 1).unwrap();
        let e = merge(&mut c, &want()).err().unwrap().to_string();
        assert!(e.contains("plugins.io.containerd.grpc.v1.cri.containerd is not a table"), "{e}");
    }

    #[test]
    fn diff_shows_only_the_change() {
        let d = diff("c", "a\nb\nc\n", "a\nb\nx\nc\n");
        assert!(d.contains("+x\n"), "{d}");
        assert!(!d.lines().skip(2).any(|l| l.starts_with('-')), "{d}");
    }
}
