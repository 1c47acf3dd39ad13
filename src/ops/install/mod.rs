//! `youki-shims install` and `youki-shims uninstall`: put the shim on a node that runs
//! containerd, register it as a CRI runtime handler in the existing config.toml, import
//! our pause image, and take all of it back out again.
//!
//! Safe on a node that already runs pods: nothing is replaced until the merged config has
//! loaded in the node's own containerd (`config dump`), every file is replaced atomically,
//! a failure before the config is replaced undoes what was done, containerd is restarted
//! only when asked (its running pods survive: every shim is re-parented away from it), and
//! a second run changes nothing.
//!
//! Modules: `config` (the TOML merge), `containerd` (asking containerd and ctr), `pause`
//! (the image built into the binary), `apply` (files: atomic writes, backup, record).

pub mod apply;
pub mod config;
pub mod containerd;
pub mod pause;

use std::fmt;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use apply::Staged;
use config::Wanted;
use containerd::Containerd;

/// The binaries a node needs: the shim containerd runs, and the operators' check.
pub const BINARIES: [&str; 2] = ["containerd-shim-youki-v2", "youki-shims"];

#[derive(Debug)]
pub enum InstallError {
    /// Bad command line.
    Usage(String),
    /// config.toml does not parse, or has a version or layout we do not write.
    Config(String),
    /// containerd cannot be run or asked, or refused something.
    Containerd(String),
    /// A file could not be read or written.
    Io(String),
    /// uninstall while containers use our runtime.
    InUse(String),
    /// Installed, but the node does not run containers through the handler.
    Verify(String),
}

impl fmt::Display for InstallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InstallError::Usage(m)
            | InstallError::Config(m)
            | InstallError::Containerd(m)
            | InstallError::Io(m)
            | InstallError::InUse(m) => f.write_str(m),
            InstallError::Verify(m) => write!(f, "verification failed: {m}"),
        }
    }
}

impl std::error::Error for InstallError {}

pub const INSTALL_USAGE: &str = "usage: youki-shims install [HANDLER] [options]
       youki-shims uninstall [--force] [options]

install copies containerd-shim-youki-v2 and youki-shims into --bin-dir, merges the runtime
handler HANDLER (default youki, runtime_type io.containerd.youki.v2) into containerd's
config.toml (keeping its comments, order and other runtimes; config version 2 for
containerd 1.6/1.7, 3 for 2.x), imports our pause image into containerd's k8s.io namespace
and pins it, then runs a trial container through the runtime. A second run changes nothing.
uninstall refuses while containers use the runtime (unless --force), puts the original
config.toml back byte for byte and removes what install added.

  --config PATH             containerd's config (default /etc/containerd/config.toml)
  --bin-dir DIR             where containerd finds shims on its PATH (default /usr/local/bin)
  --from DIR                where the binaries to install are (default: beside this one)
  --systemd-cgroup BOOL     SystemdCgroup for the handler (default: what runc's says)
  --set-default             make HANDLER containerd's default runtime
  --pause                   point CRI's sandbox image at localhost/youki/pause:latest
                            (changes every pod on the node)
  --dry-run                 print the diff of config.toml, change nothing
  --restart                 restart containerd (systemctl restart containerd)
  --restart-cmd CMD         restart containerd with `sh -c CMD` instead (implies --restart)
  --containerd-bin PATH     the containerd binary (default: containerd on PATH)
  --containerd-address SOCK its socket (default: config's [grpc] address, else
                            /run/containerd/containerd.sock)
  --force                   uninstall even while containers use the runtime";

pub struct Opts {
    pub handler: String,
    pub config: PathBuf,
    pub bin_dir: PathBuf,
    pub from: Option<PathBuf>,
    pub systemd_cgroup: Option<bool>,
    pub set_default: bool,
    pub pause: bool,
    pub dry_run: bool,
    pub restart: bool,
    pub restart_cmd: Option<String>,
    pub containerd_bin: PathBuf,
    pub address: Option<String>,
    pub force: bool,
}

pub fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Opts, InstallError> {
    let mut o = Opts {
        handler: "youki".into(),
        config: "/etc/containerd/config.toml".into(),
        bin_dir: "/usr/local/bin".into(),
        from: None,
        systemd_cgroup: None,
        set_default: false,
        pause: false,
        dry_run: false,
        restart: false,
        restart_cmd: None,
        containerd_bin: "containerd".into(),
        address: None,
        force: false,
    };
    let mut handler_set = false;
    let mut args = args.into_iter().peekable();
    while let Some(a) = args.next() {
        // --opt=value and --opt value.
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| InstallError::Usage(format!("{name} needs a value")))
        };
        match name.as_str() {
            "--config" => o.config = value()?.into(),
            "--bin-dir" => o.bin_dir = value()?.into(),
            "--from" => o.from = Some(value()?.into()),
            "--systemd-cgroup" => {
                // --systemd-cgroup, --systemd-cgroup=BOOL or --systemd-cgroup BOOL.
                let v = inline
                    .clone()
                    .or_else(|| args.next_if(|n| n == "true" || n == "false"));
                o.systemd_cgroup = Some(match v.as_deref() {
                    None => true,
                    Some("true") => true,
                    Some("false") => false,
                    Some(v) => {
                        return Err(InstallError::Usage(format!(
                            "--systemd-cgroup={v:?}: expected true or false"
                        )));
                    }
                })
            }
            "--no-systemd-cgroup" => o.systemd_cgroup = Some(false),
            "--set-default" => o.set_default = true,
            "--pause" => o.pause = true,
            "--dry-run" => o.dry_run = true,
            "--restart" => o.restart = true,
            "--restart-cmd" => {
                o.restart_cmd = Some(value()?);
                o.restart = true;
            }
            "--containerd-bin" => o.containerd_bin = value()?.into(),
            "--containerd-address" => o.address = Some(value()?),
            "--force" => o.force = true,
            "-h" | "--help" => return Err(InstallError::Usage(String::new())),
            h if !h.starts_with('-') && !handler_set => {
                o.handler = h.to_string();
                handler_set = true;
            }
            other => return Err(InstallError::Usage(format!("unknown argument {other:?}"))),
        }
    }
    // The handler becomes a TOML key and a RuntimeClass handler: a DNS label.
    let ok = !o.handler.is_empty()
        && o.handler.len() <= 63
        && o.handler
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !o.handler.starts_with('-');
    if !ok {
        return Err(InstallError::Usage(format!(
            "handler {:?}: must be a DNS label (lower-case letters, digits, '-')",
            o.handler
        )));
    }
    Ok(o)
}

fn read_config(path: &Path) -> Result<(Vec<u8>, u32), InstallError> {
    let data = fs::read(path).map_err(|e| {
        InstallError::Io(format!(
            "cannot read containerd config {}: {e}",
            path.display()
        ))
    })?;
    let mode = fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o644);
    Ok((data, mode))
}

fn text(path: &Path, data: &[u8]) -> Result<String, InstallError> {
    String::from_utf8(data.to_vec())
        .map_err(|_| InstallError::Config(format!("{} is not UTF-8 text", path.display())))
}

fn the_containerd(o: &Opts, doc: Option<&toml_edit::DocumentMut>) -> Containerd {
    let address = o
        .address
        .clone()
        .or_else(|| doc.and_then(config::grpc_address))
        .unwrap_or_else(|| "/run/containerd/containerd.sock".into());
    Containerd::new(o.containerd_bin.clone(), address)
}

/// `youki-shims install`. Prints what it changed.
pub fn install(o: &Opts) -> Result<(), InstallError> {
    let path = o.config.as_path();
    let shown = path.display().to_string();
    let (original, mode) = read_config(path)?;
    let original_text = text(path, &original)?;
    // containerd's version decides which config versions it reads.
    let probe = Containerd::new(o.containerd_bin.clone(), String::new());
    let (major, minor, full) = probe.version()?;
    let mut cfg = config::parse(&shown, &original_text, major)?;
    let ctrd = the_containerd(o, Some(&cfg.doc));
    println!(
        "containerd {full} ({major}.{minor}), config version {}, socket {}",
        cfg.version.number(),
        ctrd.address
    );
    let changes = config::merge(
        &mut cfg,
        &Wanted {
            handler: o.handler.clone(),
            systemd_cgroup: o.systemd_cgroup,
            set_default: o.set_default,
            pause: o.pause,
        },
    )?;
    let merged = cfg.doc.to_string();
    if o.dry_run {
        if changes.is_empty() {
            println!(
                "{shown}: already holds handler {:?}; nothing to change",
                o.handler
            );
        } else {
            print!("{}", config::diff(&shown, &original_text, &merged));
        }
        return Ok(());
    }
    ctrd.check_running()?;
    // Staged beside the config (this is also where missing write access shows), loaded by
    // containerd, and only then renamed over it.
    let staged = if changes.is_empty() {
        None
    } else {
        let s = Staged::new(path, merged.as_bytes(), mode)?;
        ctrd.check_config(&s.tmp)?;
        Some(s)
    };
    let from = match &o.from {
        Some(d) => d.clone(),
        None => std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .ok_or_else(|| {
                InstallError::Io("cannot tell where this binary is: pass --from".into())
            })?,
    };
    let placed = apply::copy_binaries(&from, &o.bin_dir, &BINARIES)?;
    let undo = |e: InstallError| {
        apply::undo_binaries(&placed);
        e
    };
    // The pause image: imported unless this very image is there, pinned either way.
    let archive = pause::archive(pause::PAUSE);
    let before = ctrd.pause_image().map_err(undo)?;
    let imported = match &before {
        Some((digest, true)) if *digest == archive.manifest_digest => false,
        _ => {
            let tar = Staged::new(
                &std::env::temp_dir().join("youki-pause.tar"),
                &archive.tar,
                0o600,
            )
            .map_err(undo)?;
            ctrd.import_pause(&tar.tmp).map_err(undo)?;
            true
        }
    };
    let mut record = apply::load_record(path)?.unwrap_or_default();
    if let Some(staged) = staged {
        // The original, kept once: a later install backs up no file of ours.
        let backup = apply::backup_path(path);
        if !backup.exists() {
            apply::replace(&backup, &original, mode).map_err(undo)?;
            println!("backed up {shown} to {}", backup.display());
        }
        staged.commit().map_err(undo)?;
        for c in &changes {
            println!("{shown}: set {c}");
        }
    }
    for p in &placed {
        println!("installed {}", p.path.display());
    }
    if imported {
        println!(
            "imported and pinned {} in namespace k8s.io",
            config::PAUSE_IMAGE
        );
    }
    let changed = !changes.is_empty() || !placed.is_empty() || imported;
    if changed {
        record.handler = o.handler.clone();
        for p in &placed {
            if !record.binaries.contains(&p.path) {
                record.binaries.push(p.path.clone());
            }
        }
        record.imported_pause |= imported && before.is_none();
        record.config_sha256 = apply::sha256(merged.as_bytes());
        apply::save_record(path, &record)?;
    } else {
        println!("already installed: nothing changed");
    }
    if o.restart && !changes.is_empty() && containerd::restart(o.restart_cmd.as_deref())? {
        ctrd.wait_running(Duration::from_secs(60))?;
        println!("restarted containerd");
    }
    verify(o, &ctrd)
}

/// A trial container through the runtime, then youki-shims' own check of the shims of
/// this containerd.
fn verify(o: &Opts, ctrd: &Containerd) -> Result<(), InstallError> {
    ctrd.trial_run()?;
    println!("verified: a container ran through {}", config::RUNTIME_TYPE);
    let check = o.bin_dir.join("youki-shims");
    let out = std::process::Command::new(&check)
        .args(["--address", &ctrd.address])
        .output()
        .map_err(|e| InstallError::Verify(format!("run {}: {e}", check.display())))?;
    if !out.status.success() {
        return Err(InstallError::Verify(format!(
            "{} --address {} reports unknown shims or containers:\n{}{}",
            check.display(),
            ctrd.address,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    println!("verified: youki-shims reports nothing unknown");
    Ok(())
}

/// `youki-shims uninstall`.
pub fn uninstall(o: &Opts) -> Result<(), InstallError> {
    let path = o.config.as_path();
    let shown = path.display().to_string();
    let Some(record) = apply::load_record(path)? else {
        return Err(InstallError::Io(format!(
            "nothing to uninstall: no {} (install was not run with --config {shown})",
            apply::record_path(path).display()
        )));
    };
    let (current, _) = read_config(path)?;
    let doc = text(path, &current)
        .ok()
        .and_then(|t| t.parse::<toml_edit::DocumentMut>().ok());
    let ctrd = the_containerd(o, doc.as_ref());
    ctrd.check_running()?;
    let users = ctrd.containers_with_our_runtime()?;
    if !users.is_empty() && !o.force {
        let names: Vec<String> = users.iter().map(|(ns, id)| format!("{ns}/{id}")).collect();
        return Err(InstallError::InUse(format!(
            "{} containers use {}: {} (stop them first, or --force)",
            users.len(),
            config::RUNTIME_TYPE,
            names.join(", ")
        )));
    }
    if apply::sha256(&current) != record.config_sha256 && !o.force {
        return Err(InstallError::Config(format!(
            "{shown} changed since install: restoring the backup would lose those changes \
             (--force restores it anyway)"
        )));
    }
    let backup = apply::backup_path(path);
    let restored = backup.exists();
    if restored {
        fs::rename(&backup, path).map_err(|e| {
            InstallError::Io(format!("restore {} to {shown}: {e}", backup.display()))
        })?;
        println!("restored {shown} from {}", backup.display());
    }
    for b in &record.binaries {
        match fs::remove_file(b) {
            Ok(()) => println!("removed {}", b.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => eprintln!("youki-shims: remove {}: {e}", b.display()),
        }
    }
    if users.is_empty() {
        // The shared pause roots of shim-sandboxed pods (and their exec bind mounts, on a
        // noexec /run): with no container of ours left, nothing runs from them.
        for base in crate::ops::roots::bases() {
            match crate::sandbox::spec::remove_roots(&base) {
                Ok(removed) => removed
                    .iter()
                    .for_each(|r| println!("removed {}", r.display())),
                Err(e) => eprintln!("youki-shims: {e}"),
            }
        }
    }
    if record.imported_pause {
        let in_use = ctrd
            .containers()?
            .iter()
            .any(|c| c.image == config::PAUSE_IMAGE);
        if in_use {
            println!("kept {}: containers use it", config::PAUSE_IMAGE);
        } else {
            ctrd.remove_pause()?;
            println!("removed image {}", config::PAUSE_IMAGE);
        }
    }
    let rec = apply::record_path(path);
    fs::remove_file(&rec)
        .map_err(|e| InstallError::Io(format!("remove {}: {e}", rec.display())))?;
    if o.restart && restored && containerd::restart(o.restart_cmd.as_deref())? {
        ctrd.wait_running(Duration::from_secs(60))?;
        println!("restarted containerd");
    }
    Ok(())
}
