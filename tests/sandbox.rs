//! The Sandbox API our shim serves for containerd 2.x's shim sandboxer (handler
//! `youki-sandboxed`), called the way containerd's own sandbox controller calls it
//! (containerd's `sandbox-controllers` gRPC service, sandboxer "shim") on a pod CRI made:
//! Status (running, pid = the pause CRI reports), Metrics (the pod's cgroup),
//! then Stop (status NOTREADY with an exit time, Wait answers 137) and CRI's removal
//! (nothing left). (containerd 2.1's gRPC controller service has no Platform method; CRI
//! asks our Platform itself.) containerd 1.x has no sandbox controllers: the test says so and passes.

mod common;

use std::time::Duration;

use containerd_client::services::v1::sandbox::controller_client::ControllerClient;
use containerd_client::services::v1::sandbox::{
    ControllerMetricsRequest, ControllerStatusRequest, ControllerStopRequest, ControllerWaitRequest,
};
use containerd_client::tonic::Request;
use containerd_client::tonic::transport::Channel;

use common::kubelet::*;
use common::{containerd_major, identity, proc_alive, wait_until};

const SANDBOXER: &str = "shim";

fn with_ns<T>(req: T) -> Request<T> {
    let mut r = Request::new(req);
    r.metadata_mut()
        .insert("containerd-namespace", "k8s.io".parse().unwrap());
    r
}

#[test]
fn the_sandbox_api_answers_like_containerds_controller_expects() {
    if containerd_major() < 2 {
        eprintln!("skipped: containerd 1.x has no shim sandboxer");
        return;
    }
    let mut cri = Cri::connect(&cri_socket());
    let mut spec = PodSpec::new("sbapi");
    spec.handler = SANDBOXED_HANDLER.into();
    let pod = cri.run_pod(&spec).expect("RunPodSandbox");
    let guard = PodGuard::new(&pod, &spec, &cri_socket());
    let app = cri
        .run_container(&pod, &spec, "app", &["sleep", "3600"])
        .expect("container");
    let pause = cri.pod_pid(&pod).expect("pause pid");
    let pause_id = identity(pause);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let address = cri_socket();
    let channel: Channel = rt
        .block_on(containerd_client::connect(&address))
        .expect("connect to containerd");
    let mut ctl = ControllerClient::new(channel);
    let id = pod.clone();

    let status = |ctl: &mut ControllerClient<Channel>| {
        rt.block_on(ctl.status(with_ns(ControllerStatusRequest {
            sandbox_id: id.clone(),
            verbose: true,
            sandboxer: SANDBOXER.into(),
        })))
        .expect("Status")
        .into_inner()
    };
    let st = status(&mut ctl);
    assert_eq!(st.state, "SANDBOX_READY");
    assert_eq!(st.pid as i32, pause, "Status pid is the pause CRI reports");
    assert!(st.created_at.as_ref().is_some_and(|t| t.seconds > 0));
    // containerd turns "no exit" into the epoch.
    assert!(st.exited_at.as_ref().is_none_or(|t| t.seconds <= 0));
    assert!(st.info.contains_key("info"), "verbose info: {:?}", st.info);

    let metrics = rt
        .block_on(ctl.metrics(with_ns(ControllerMetricsRequest {
            sandbox_id: id.clone(),
            sandboxer: SANDBOXER.into(),
        })))
        .expect("Metrics")
        .into_inner()
        .metrics
        .expect("a metric");
    let data = metrics.data.expect("metric data");
    assert!(
        data.type_url.contains("io.containerd.cgroups.v"),
        "{}",
        data.type_url
    );
    assert!(!data.value.is_empty(), "the pod cgroup's numbers");

    // CRI stops the pod's containers before the sandbox; so does this test.
    cri.stop_container(&app, Duration::from_secs(1)).unwrap();
    rt.block_on(ctl.stop(with_ns(ControllerStopRequest {
        sandbox_id: id.clone(),
        timeout_secs: 0,
        sandboxer: SANDBOXER.into(),
    })))
    .expect("Stop");
    let waited = rt
        .block_on(ctl.wait(with_ns(ControllerWaitRequest {
            sandbox_id: id.clone(),
            sandboxer: SANDBOXER.into(),
        })))
        .expect("Wait")
        .into_inner();
    assert_eq!(waited.exit_status, 137, "pause SIGKILLed by Stop");
    let st = status(&mut ctl);
    assert_eq!(st.state, "SANDBOX_NOTREADY");
    assert!(st.exited_at.as_ref().is_some_and(|t| t.seconds > 0));
    assert!(
        wait_until(Duration::from_secs(5), || !(proc_alive(pause)
            && identity(pause) == pause_id)),
        "pause still running after Stop"
    );

    cri.teardown(&pod).expect("teardown");
    std::mem::forget(guard);
    let bundle = std::path::Path::new("/run/containerd/youki/.sandbox/k8s.io").join(&pod);
    assert!(
        wait_until(Duration::from_secs(5), || !bundle.exists()),
        "pause bundle {} left",
        bundle.display()
    );
    spec.remove_leftover_dirs();
}
