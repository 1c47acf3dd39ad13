//! Task API requests as they arrive (protobuf bytes), through the checks the service makes
//! before the pod sees them: Create, Exec, Checkpoint, Kill.
#![no_main]

use containerd_shim_protos::api::{
    CheckpointTaskRequest, CreateTaskRequest, ExecProcessRequest, KillRequest,
};
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::ttrpc::Code;
use containerd_shim_youki_v2::error::Result;
use containerd_shim_youki_v2::shim::validate;
use containerd_shim_youki_v2::task::checkpoint;
use libfuzzer_sys::fuzz_target;

/// Refusals are InvalidArgument and short, whatever the size of the request.
fn refused<T>(r: Result<T>) -> Option<T> {
    match r {
        Ok(t) => Some(t),
        Err(e) => {
            assert_eq!(e.code(), Code::INVALID_ARGUMENT, "{e}");
            let m = e.to_string();
            assert!(m.len() < 2048, "{} bytes: {}", m.len(), &m[..200]);
            None
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, b)) = data.split_first() else {
        return;
    };
    match sel % 4 {
        0 => {
            let Ok(r) = CreateTaskRequest::parse_from_bytes(b) else {
                return;
            };
            if refused(validate::create(&r)).is_some() {
                assert!(r.bundle.starts_with('/'));
                assert!(!r.bundle.contains('\0'));
            }
        }
        1 => {
            let Ok(r) = ExecProcessRequest::parse_from_bytes(b) else {
                return;
            };
            refused(validate::exec(&r));
        }
        2 => {
            let Ok(r) = CheckpointTaskRequest::parse_from_bytes(b) else {
                return;
            };
            if let Some(spec) = refused(checkpoint::decode(&r.path, r.options.as_ref())) {
                if refused(validate::checkpoint(&spec)).is_some() {
                    assert!(spec.image_path.is_absolute());
                    assert!(spec.work_path.as_ref().is_none_or(|w| w.is_absolute()));
                }
            }
        }
        _ => {
            let Ok(r) = KillRequest::parse_from_bytes(b) else {
                return;
            };
            if refused(validate::ids(&r.id, &r.exec_id)).is_some()
                && refused(validate::signal(r.signal)).is_some()
            {
                assert!((1..=64).contains(&r.signal));
            }
        }
    }
});
