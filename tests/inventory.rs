//! `youki-shims` and a live shim's stopped container (issue 14 point 10). A stopped
//! container has no init whose parent names its shim, so the tool must find the shim by
//! what was recorded, not by recomputing the socket name from the daemon's `-address`:
//! - containerd 2.3 names the socket after the address in `BootstrapParams`, which need not
//!   be `-address` (here: BootstrapParams names another address than `-address`);
//! - an empty `-address ""` must stay empty, not make the next flag (`-socket`) its value.
//!
//! Each case runs our `start` by hand (as containerd would) in a bundle of the test's own,
//! creates a container over the daemon's ttrpc socket, lets it exit, and asks youki-shims.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use containerd_shim_protos::api::{
    CreateTaskRequest, DeleteRequest, ShutdownRequest, StartRequest, WaitRequest,
};
use containerd_shim_protos::bootstrap_api::BootstrapParams;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim::shim_ttrpc::TaskClient;

use common::{ctr_ok, unique};

const TOOL: &str = env!("CARGO_BIN_EXE_youki-shims");
const NS: &str = "inventory-it";

/// A bundle and daemon the test made; the daemon is shut down (or killed) and the bundle
/// removed when dropped.
struct Case {
    id: String,
    dir: PathBuf,
    socket: Option<PathBuf>,
}

impl Drop for Case {
    fn drop(&mut self) {
        if let Some(s) = &self.socket
            && let Ok(c) = ttrpc::Client::connect(&format!("unix://{}", s.display()))
        {
            let c = TaskClient::new(c);
            let mut d = DeleteRequest::new();
            d.id = self.id.clone();
            let _ = c.delete(ctx(), &d);
            let _ = c.shutdown(ctx(), &ShutdownRequest::new());
        }
        std::thread::sleep(Duration::from_millis(300));
        for s in containerd_shim_youki_v2::ops::inventory::scan_shims(Path::new("/proc")) {
            if s.namespace == NS && s.id == self.id {
                // SAFETY: kill(2) of a daemon this test started (its namespace and ID).
                unsafe { libc::kill(s.pid, libc::SIGKILL) };
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ctx() -> ttrpc::context::Context {
    ttrpc::context::with_timeout(Duration::from_secs(10).as_nanos() as i64)
}

/// A bundle running `/bin/busybox true` from a rootfs holding only the (static) busybox.
fn bundle(id: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(id);
    std::fs::create_dir_all(dir.join("rootfs/bin")).unwrap();
    std::fs::copy("/bin/busybox", dir.join("rootfs/bin/busybox")).expect("copy busybox");
    let mut spec: serde_json::Value =
        serde_json::from_str(&ctr_ok(&["oci", "spec"])).expect("ctr oci spec");
    spec["process"]["args"] = serde_json::json!(["/bin/busybox", "true"]);
    spec["process"]["env"] = serde_json::json!(["PATH=/bin"]);
    spec["root"] = serde_json::json!({"path": "rootfs"});
    spec["linux"]["cgroupsPath"] = serde_json::json!(format!("/{NS}/{id}"));
    std::fs::write(dir.join("config.json"), spec.to_string()).unwrap();
    dir
}

/// Runs `start` with `-address address` and `stdin`, in the bundle; returns the socket it
/// answered (from the `address` file it writes).
fn start(case: &mut Case, address: &str, stdin: &[u8]) -> PathBuf {
    use std::io::Write;
    let mut child = Command::new(common::private::SHIM)
        .args([
            "-namespace",
            NS,
            "-address",
            address,
            "-id",
            &case.id,
            "start",
        ])
        .current_dir(&case.dir)
        .env_remove("TTRPC_ADDRESS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run start");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "start: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let addr = std::fs::read_to_string(case.dir.join("address")).expect("address file");
    let socket = PathBuf::from(addr.trim().trim_start_matches("unix://"));
    case.socket = Some(socket.clone());
    socket
}

/// Creates, starts and waits for the container over the daemon's socket: it is stopped,
/// not deleted, and its init is gone.
fn run_to_exit(case: &Case, socket: &Path) {
    let client = TaskClient::new(
        ttrpc::Client::connect(&format!("unix://{}", socket.display())).expect("dial shim"),
    );
    let mut create = CreateTaskRequest::new();
    create.id = case.id.clone();
    create.bundle = case.dir.to_string_lossy().into_owned();
    client.create(ctx(), &create).expect("create");
    let mut s = StartRequest::new();
    s.id = case.id.clone();
    client.start(ctx(), &s).expect("start");
    let mut w = WaitRequest::new();
    w.id = case.id.clone();
    let r = client.wait(ctx(), &w).expect("wait");
    assert_eq!(r.exit_status, 0);
}

/// Where youki-shims puts container `id`: "shim <pid>" or "orphan".
fn placement(id: &str) -> String {
    let o = Command::new(TOOL)
        .args(["--json", "--grace", "0", "--namespace", NS])
        .output()
        .expect("youki-shims");
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "youki-shims gave no report ({e}): {}",
            String::from_utf8_lossy(&o.stderr)
        )
    });
    for s in report["shims"].as_array().into_iter().flatten() {
        if s["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["id"] == id)
        {
            return format!(
                "shim {} (-address {:?})",
                s["pid"],
                s["address"].as_str().unwrap_or("?")
            );
        }
    }
    if report["orphans"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["id"] == id)
    {
        return "orphan".into();
    }
    "absent".into()
}

#[test]
fn a_live_shims_stopped_container_is_never_an_orphan() {
    let containerd = common::address();
    // containerd 2.3's shape: BootstrapParams names another gRPC address than -address.
    let mut hashed = Case {
        id: unique("inv-hashed"),
        dir: PathBuf::new(),
        socket: None,
    };
    hashed.dir = bundle(&hashed.id);
    let mut p = BootstrapParams::new();
    p.instance_id = hashed.id.clone();
    p.namespace = NS.into();
    p.containerd_grpc_address = format!("{containerd}.elsewhere");
    let socket = start(&mut hashed, &containerd, &p.write_to_bytes().unwrap());
    run_to_exit(&hashed, &socket);

    // An empty -address (runtime options on stdin: none).
    let mut empty = Case {
        id: unique("inv-empty"),
        dir: PathBuf::new(),
        socket: None,
    };
    empty.dir = bundle(&empty.id);
    let socket = start(&mut empty, "", b"");
    run_to_exit(&empty, &socket);

    let places = [
        (hashed.id.clone(), placement(&hashed.id)),
        (empty.id.clone(), placement(&empty.id)),
    ];
    assert!(
        places.iter().all(|(_, p)| p.starts_with("shim ")),
        "stopped containers of live shims: {places:?}"
    );
    let empty_shim = &places[1].1;
    assert!(
        empty_shim.contains("-address \"\""),
        "the empty -address is read as {empty_shim}"
    );
    drop(empty);
    drop(hashed);
}
