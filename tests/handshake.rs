//! The `start`/`delete` binary protocol, driven the way each containerd version drives it,
//! without containerd: the real binary, a bundle directory, stdin and stdout.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use containerd_shim_protos::api::{ConnectRequest, DeleteResponse, ShutdownRequest};
use containerd_shim_protos::bootstrap_api::{BootstrapParams, BootstrapResult};
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim::shim_ttrpc::TaskClient;
use containerd_shim_youki_v2::ops::inventory;

const SHIM: &str = env!("CARGO_BIN_EXE_containerd-shim-youki-v2");

struct Bundle {
    dir: PathBuf,
}

impl Bundle {
    fn new(tag: &str, annotations: serde_json::Value) -> Bundle {
        let dir = std::env::temp_dir().join(format!("hs-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let spec = serde_json::json!({"ociVersion": "1.0.2", "annotations": annotations});
        std::fs::write(dir.join("config.json"), spec.to_string()).unwrap();
        Bundle { dir }
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Kills, when dropped, any serving daemon this test started for `ids` (namespace "hs")
/// and removes its socket: a failed assertion must not leave a shim behind. A test that
/// passes has shut its daemons down already, so this finds nothing.
struct Daemons(Vec<String>);

impl Drop for Daemons {
    fn drop(&mut self) {
        let ours = inventory::scan_shims(Path::new("/proc"))
            .into_iter()
            .filter(|s| s.namespace == "hs" && self.0.contains(&s.id));
        for s in ours {
            // SAFETY: kill(2) of a daemon this test started (its namespace and ID).
            unsafe { libc::kill(s.pid, libc::SIGKILL) };
            let _ = std::fs::remove_file(&s.socket);
        }
    }
}

fn shim(bundle: &Path, args: &[&str], stdin: &[u8]) -> std::process::Output {
    let mut child = Command::new(SHIM)
        .args(args)
        .current_dir(bundle)
        .env_remove("TTRPC_ADDRESS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shim");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().expect("shim output")
}

fn start_args<'a>(address: &'a str, id: &'a str) -> Vec<&'a str> {
    vec![
        "-namespace",
        "hs",
        "-address",
        address,
        "-publish-binary",
        "/bin/false",
        "-id",
        id,
        "start",
    ]
}

fn daemon_pid(client: &TaskClient) -> u32 {
    let ctx = ttrpc::context::with_timeout(Duration::from_secs(5).as_nanos() as i64);
    client
        .connect(ctx, &ConnectRequest::new())
        .expect("connect rpc")
        .shim_pid
}

/// Shuts the (empty) daemon down and waits until it is gone with its socket.
fn shutdown(client: TaskClient, pid: u32, socket: &Path) {
    let ctx = ttrpc::context::with_timeout(Duration::from_secs(5).as_nanos() as i64);
    client
        .shutdown(ctx, &ShutdownRequest::new())
        .expect("shutdown rpc");
    wait_daemon_gone(pid, socket, "Shutdown");
}

/// Waits (5 s at most) until daemon `pid` has exited and removed its socket.
fn wait_daemon_gone(pid: u32, socket: &Path, after: &str) {
    for _ in 0..100 {
        if !Path::new(&format!("/proc/{pid}")).exists() && !socket.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "daemon {pid} or socket {} still there after {after}",
        socket.display()
    );
}

/// `delete` of container `id` (namespace "hs") in bundle `dir`, as containerd runs it.
fn delete(dir: &Path, id: &str) -> std::process::Output {
    let bundle = dir.to_string_lossy();
    shim(
        dir,
        &[
            "-namespace",
            "hs",
            "-address",
            "/run/hs/containerd.sock",
            "-id",
            id,
            "-bundle",
            &bundle,
            "delete",
        ],
        b"",
    )
}

fn client(address: &str) -> TaskClient {
    TaskClient::new(ttrpc::Client::connect(address).expect("dial shim"))
}

#[test]
fn containerd_2_3_bootstrap_params_get_a_bootstrap_result() {
    let b = Bundle::new("v23", serde_json::json!({}));
    let sockdir = b.dir.join("s");
    let id = format!("boot{}", std::process::id());
    let _daemons = Daemons(vec![id.clone()]);
    let mut p = BootstrapParams::new();
    p.instance_id = id.clone();
    p.namespace = "hs".into();
    p.containerd_version = "v2.3.0".into();
    p.containerd_grpc_address = "/run/hs/containerd.sock".into();
    p.containerd_ttrpc_address = "/run/hs/containerd.sock.ttrpc".into();
    p.socket_dir = Some(sockdir.to_string_lossy().into_owned());
    let out = shim(
        &b.dir,
        &start_args("/run/hs/containerd.sock", &id),
        &p.write_to_bytes().unwrap(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "start must keep stderr clean: {:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = BootstrapResult::parse_from_bytes(&out.stdout).expect("a BootstrapResult on stdout");
    assert_eq!(r.version, 3);
    assert_eq!(r.protocol, "ttrpc");
    let socket = PathBuf::from(r.address.strip_prefix("unix://").expect("unix address"));
    assert_eq!(
        socket.parent(),
        Some(sockdir.as_path()),
        "socket_dir honoured"
    );
    let c = client(&r.address);
    let pid = daemon_pid(&c);
    drop(c);
    // containerd's `delete` after it lost this task (say, killed before Create): it must
    // reach the live shim in the socket dir containerd chose and make the idle shim exit.
    let out = delete(&b.dir, &id);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_daemon_gone(pid, &socket, "delete");
}

#[test]
fn legacy_start_prints_the_plain_address_and_groups_a_pod() {
    let address = format!("/run/hs-{}/containerd.sock", std::process::id());
    let pause = Bundle::new("pause", serde_json::json!({}));
    let pod = format!("pod{}", std::process::id());
    let sid = format!("sib{}", std::process::id());
    let _daemons = Daemons(vec![pod.clone(), sid.clone()]);
    let out = shim(&pause.dir, &start_args(&address, &pod), b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let addr = String::from_utf8(out.stdout).unwrap();
    assert!(
        addr.starts_with("unix:///run/containerd/s/") && !addr.contains('\n'),
        "{addr:?}"
    );
    let socket = PathBuf::from(addr.strip_prefix("unix://").unwrap());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // A sibling naming the pod gets the same shim.
    let sib = Bundle::new(
        "sib",
        serde_json::json!({"io.kubernetes.cri.sandbox-id": pod}),
    );
    let out = shim(&sib.dir, &start_args(&address, &sid), b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), addr);
    assert_eq!(
        std::fs::read_to_string(sib.dir.join("address")).unwrap(),
        addr
    );
    let c = client(&addr);
    let pid = daemon_pid(&c);
    shutdown(c, pid, &socket);
}

#[test]
fn bad_ids_and_namespaces_are_refused_before_any_path_is_made() {
    let b = Bundle::new("bad", serde_json::json!({}));
    let _daemons = Daemons(
        ["../../etc", "ok", "a/b", "okid"]
            .map(String::from)
            .to_vec(),
    );
    for (ns, id) in [("hs", "../../etc"), ("../x", "ok"), ("hs", "a/b")] {
        let out = shim(
            &b.dir,
            &[
                "-namespace",
                ns,
                "-address",
                "/run/x.sock",
                "-id",
                id,
                "start",
            ],
            b"",
        );
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("invalid"), "{err}");
        assert!(out.stdout.is_empty());
    }
    let bad_group = Bundle::new(
        "badgroup",
        serde_json::json!({"io.containerd.runc.v2.group": "../../x"}),
    );
    let out = shim(&bad_group.dir, &start_args("/run/x.sock", "okid"), b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("../../x"));
}

#[test]
fn delete_without_state_still_answers() {
    let b = Bundle::new("del", serde_json::json!({}));
    let out = delete(&b.dir, "never-created");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = DeleteResponse::parse_from_bytes(&out.stdout).expect("DeleteResponse on stdout");
    assert_eq!(r.exit_status, 137);
    assert!(r.exited_at.is_some());
}

#[test]
fn version_flag() {
    let out = Command::new(SHIM).arg("-v").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("containerd-shim-youki-v2") && text.contains(env!("CARGO_PKG_VERSION")),
        "{text}"
    );
}

#[test]
fn no_action_without_start_is_a_clear_error() {
    let out = Command::new(SHIM).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("start"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(SHIM).arg("-bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("-bogus"));
}
