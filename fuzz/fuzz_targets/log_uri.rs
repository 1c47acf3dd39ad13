//! Stdio URIs: fifo paths, `file://` and `binary://` / `binary-v2://` logger URIs.
#![no_main]

use containerd_shim_youki_v2::stdio::{Target, log_binary, target};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(Ok(u)) = log_binary::parse(s) {
        assert!(u.path.starts_with('/'), "{u:?}");
        assert_eq!(u.args.len() % 2, 0, "{u:?}");
        return;
    }
    match target(s) {
        Ok(Target::Null) => assert!(s.is_empty()),
        Ok(Target::Fifo(p)) | Ok(Target::File(p)) => {
            assert!(p.starts_with('/'), "{p:?}");
            assert!(!p.contains('\0'), "{p:?}");
        }
        Err(e) => {
            assert_eq!(
                e.code(),
                containerd_shim_protos::ttrpc::Code::INVALID_ARGUMENT,
                "{e}"
            );
        }
    }
});
