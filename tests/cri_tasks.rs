//! What kubelet asks of a running container through CRI beyond its lifecycle:
//! ContainerStats / PodSandboxStats, UpdateContainerResources and the OOMKilled reason.

mod common;

use std::time::Duration;

use common::kubelet::*;
use common::wait_until;
use k8s_cri::v1::{ContainerState, LinuxContainerResources};

fn cgroup_file(spec: &PodSpec, ctrl: &str, id: &str, file: &str) -> String {
    let p = std::path::Path::new("/sys/fs/cgroup")
        .join(ctrl)
        .join(spec.cgroup_parent.trim_start_matches('/'))
        .join(id)
        .join(file);
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
        .trim()
        .to_string()
}

#[test]
fn stats_and_resource_updates_through_cri() {
    let mut cri = Cri::connect(&cri_socket());
    let spec = PodSpec::new("stats");
    let pod = cri.run_pod(&spec).expect("RunPodSandbox");
    let guard = PodGuard::new(&pod, &spec, &cri_socket());
    // Burn some CPU and hold some memory, then idle.
    let app = cri
        .run_container(
            &pod,
            &spec,
            "busy",
            &["sh", "-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; x=$(head -c 4000000 /dev/zero | tr '\\0' a); sleep 3600"],
        )
        .expect("container");
    assert!(wait_until(Duration::from_secs(20), || {
        cri.container_stats(&app)
            .ok()
            .and_then(|s| s.cpu)
            .and_then(|c| c.usage_core_nano_seconds)
            .is_some_and(|v| v.value > 100_000_000)
    }));
    let s = cri.container_stats(&app).expect("ContainerStats");
    let mem = s.memory.expect("memory stats");
    assert!(
        mem.working_set_bytes.map(|v| v.value).unwrap_or(0) > 0,
        "working set: {mem:?}"
    );
    assert!(mem.usage_bytes.map(|v| v.value).unwrap_or(0) > 0, "{mem:?}");

    // PodSandboxStats: containerd 1.6 reports the sandbox's own cgroup through our Stats.
    match cri.pod_stats(&pod) {
        Ok(ps) => {
            let linux = ps.linux.expect("linux pod stats");
            assert!(
                linux.cpu.and_then(|c| c.usage_core_nano_seconds).is_some(),
                "pod cpu stats missing"
            );
        }
        Err(e) => {
            assert!(e.contains("Unimplemented"), "PodSandboxStats failed: {e}");
            eprintln!("containerd does not serve PodSandboxStats: {e}");
        }
    }

    cri.update_resources(
        &app,
        LinuxContainerResources {
            memory_limit_in_bytes: 64 << 20,
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            ..Default::default()
        },
    )
    .expect("UpdateContainerResources");
    assert_eq!(
        cgroup_file(&spec, "memory", &app, "memory.limit_in_bytes"),
        (64u64 << 20).to_string()
    );
    assert_eq!(cgroup_file(&spec, "cpu", &app, "cpu.cfs_quota_us"), "50000");
    assert_eq!(cgroup_file(&spec, "cpu", &app, "cpu.shares"), "512");
    drop(guard);
}

#[test]
fn exceeding_the_memory_limit_is_oom_killed() {
    let mut cri = Cri::connect(&cri_socket());
    let spec = PodSpec::new("oom");
    let pod = cri.run_pod(&spec).expect("RunPodSandbox");
    let guard = PodGuard::new(&pod, &spec, &cri_socket());
    let mut config = spec.container(
        "hog",
        &["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"],
    );
    if let Some(linux) = config.linux.as_mut() {
        linux.resources = Some(LinuxContainerResources {
            memory_limit_in_bytes: 20 << 20,
            ..Default::default()
        });
    }
    let app = cri
        .create_container(&pod, &spec, config)
        .expect("CreateContainer");
    cri.start_container(&app).expect("StartContainer");
    assert!(wait_until(Duration::from_secs(20), || {
        cri.container_state(&app).ok() == Some(ContainerState::ContainerExited)
    }));
    // The reason may land just after the exit (the OOM event and the exit race).
    wait_until(Duration::from_secs(5), || {
        cri.container_status(&app)
            .ok()
            .and_then(|s| s.status)
            .is_some_and(|s| s.reason == "OOMKilled")
    });
    let st = cri.container_status(&app).unwrap().status.unwrap();
    assert_eq!((st.exit_code, st.reason.as_str()), (137, "OOMKilled"));
    drop(guard);
}
