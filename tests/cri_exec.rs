//! CRI Exec as `kubectl exec` uses it: containerd's streaming server hands out a URL, the
//! client dials it over WebSocket with the `v4.channel.k8s.io` protocol (one byte of
//! channel number per message: 0 stdin, 1 stdout, 2 stderr, 3 the final status).

mod common;

use std::time::Duration;

use common::kubelet::*;
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::{Message, connect};

struct Streams {
    stdout: String,
    stderr: String,
    status: String,
}

/// Dials the exec URL, optionally sends `stdin` then closes it, and collects the streams.
fn stream(url: &str, stdin: Option<&str>) -> Streams {
    let ws_url = url.replacen("http://", "ws://", 1);
    assert!(
        ws_url.starts_with("ws://127."),
        "the streaming server must be local: {url}"
    );
    let mut req = ws_url.into_client_request().expect("request");
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("v4.channel.k8s.io"),
    );
    let (mut ws, _) = connect(req).expect("websocket to containerd's streaming server");
    if let Some(input) = stdin {
        let mut frame = vec![0u8];
        frame.extend_from_slice(input.as_bytes());
        ws.send(Message::Binary(frame.into())).expect("stdin");
    }
    let mut s = Streams {
        stdout: String::new(),
        stderr: String::new(),
        status: String::new(),
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        match ws.read() {
            Ok(Message::Binary(b)) if !b.is_empty() => {
                let text = String::from_utf8_lossy(&b[1..]).into_owned();
                match b[0] {
                    1 => s.stdout.push_str(&text),
                    2 => s.stderr.push_str(&text),
                    3 => s.status.push_str(&text),
                    _ => {}
                }
            }
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    s
}

#[test]
fn cri_exec_streams_output_and_the_exit_code() {
    let mut cri = Cri::connect(&cri_socket());
    let spec = PodSpec::new("criexec");
    let pod = cri.run_pod(&spec).expect("RunPodSandbox");
    let _guard = PodGuard::new(&pod, &spec, &cri_socket());
    let app = cri
        .run_container(&pod, &spec, "app", &["sleep", "3600"])
        .expect("container");

    let url = cri
        .exec_url(&app, &["sh", "-c", "echo out; echo err >&2"], false)
        .expect("Exec");
    let s = stream(&url, None);
    assert_eq!((s.stdout.as_str(), s.stderr.as_str()), ("out\n", "err\n"));
    assert!(s.status.contains("Success"), "status: {}", s.status);

    let url = cri
        .exec_url(&app, &["sh", "-c", "read l; echo got:$l; exit 7"], true)
        .expect("Exec");
    let s = stream(&url, Some("typed\n"));
    assert_eq!(s.stdout, "got:typed\n");
    assert!(
        s.status.contains("NonZeroExitCode") && s.status.contains("\"7\""),
        "status: {}",
        s.status
    );
}
