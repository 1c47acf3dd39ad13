//! The README's main command: run a pod (our pause + a busybox sibling) through
//! containerd's CRI with runtime handler `youki`, show which namespaces each process shares
//! with the pause container, then remove the pod and show nothing is left.
//!
//!     hack/demo.sh            (builds, starts the private containerd, runs this)

#[path = "../tests/common/kubelet.rs"]
mod kubelet;

use std::time::Duration;

use kubelet::{Cri, PodSpec, cri_socket};

const KINDS: [&str; 7] = ["net", "ipc", "uts", "mnt", "pid", "cgroup", "user"];

fn ns(pid: u32, kind: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .map(|l| l.to_string_lossy().into_owned())
        .unwrap_or_else(|e| format!("? ({e})"))
}

fn inode(link: &str) -> &str {
    link.split(['[', ']']).nth(1).unwrap_or(link)
}

fn shims() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .map(|c| {
                    let c = String::from_utf8_lossy(&c);
                    c.split('\0')
                        .next()
                        .unwrap_or("")
                        .ends_with("containerd-shim-youki-v2")
                        && c.contains("\0k8s.io\0")
                })
                .unwrap_or(false)
        })
        .collect()
}

fn main() -> Result<(), String> {
    let mut cri = Cri::connect(&cri_socket());
    let mut spec = PodSpec::new("demo");
    // hack/demo.sh's SANDBOXER=shim: the handler whose pods containerd 2.x hands to our
    // shim's Sandbox API (no pause image at all).
    if let Ok(h) = std::env::var("DEMO_HANDLER")
        && !h.is_empty()
    {
        spec.handler = h;
    }
    spec.uid = format!("demo-{}", std::process::id());
    spec.cgroup_parent = format!("/youki-test/pod-{}", spec.uid);
    println!("RunPodSandbox (runtime handler {:?}) …", spec.handler);
    let pod = cri.run_pod(&spec)?;
    let result = show(&mut cri, &spec, &pod);
    println!("\nStopContainer → RemoveContainer → StopPodSandbox → RemovePodSandbox …");
    cri.teardown(&pod)?;
    spec.remove_leftover_dirs();
    std::thread::sleep(Duration::from_millis(300));
    let left = shims();
    println!(
        "containerd-shim-youki-v2 processes in k8s.io after removal: {}",
        if left.is_empty() {
            "none".to_string()
        } else {
            format!("{left:?}")
        }
    );
    result
}

fn show(cri: &mut Cri, spec: &PodSpec, pod: &str) -> Result<(), String> {
    let app = cri.run_container(pod, spec, "busybox", &["sleep", "3600"])?;
    let pause = cri.pod_pid(pod)? as u32;
    let sibling = cri.container_pid(&app)? as u32;
    let (code, out, _) = cri.exec_sync(&app, &["hostname"], Duration::from_secs(10))?;
    println!(
        "pod {} ready; ExecSync `hostname` in the sibling → {} (exit {code})",
        &pod[..12],
        out.trim()
    );
    let shim = shims();
    println!("shim processes serving the pod: {shim:?}\n");

    let me = std::process::id();
    let rows = [("pause", pause), ("busybox", sibling), ("host", me)];
    print!("{:<9}{:>7}", "process", "pid");
    for k in KINDS {
        print!("  {k:<18}");
    }
    println!();
    for (name, pid) in rows {
        print!("{name:<9}{pid:>7}");
        for k in KINDS {
            let mine = ns(pid, k);
            let tag = if name == "pause" {
                if mine == ns(me, k) { "host" } else { "pod" }
            } else if name == "host" {
                ""
            } else if mine == ns(pause, k) {
                if mine == ns(me, k) { "host" } else { "shared" }
            } else if mine == ns(me, k) {
                "host"
            } else {
                "own"
            };
            print!("  {:<18}", format!("{} {tag}", inode(&mine)));
        }
        println!();
    }
    println!(
        "\nshared = same namespace as pause; own = the container's alone; host = the node's.\n\
         Expected on a Kubernetes node: net, ipc, uts shared; mnt, pid own; cgroup, user host."
    );
    Ok(())
}
