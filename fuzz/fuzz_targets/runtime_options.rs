//! Runtime options from Create (and `start`'s stdin): runc's Options, CRI's generic
//! options with TOML text or a config path, ctr 1.x's CreateOptions, anything else.
#![no_main]

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_youki_v2::shim::options;
use libfuzzer_sys::fuzz_target;

const TYPES: [&str; 5] = [
    "containerd.runc.v1.Options",
    "type.googleapis.com/runtimeoptions.v1.Options",
    "containerd.linux.runc.CreateOptions",
    "",
    "example.Unknown",
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, value)) = data.split_first() else {
        return;
    };
    let mut any = Any::new();
    any.type_url = TYPES[sel as usize % TYPES.len()].into();
    any.value = value.to_vec();
    if let Err(e) = options::decode(Some(&any)) {
        assert_eq!(e.code(), ttrpc_code_invalid(), "{e}");
        // Never the options text back: an error is a short position and message.
        let m = e.to_string();
        assert!(m.len() < 1024, "{} bytes: {m}", m.len());
    }
});

fn ttrpc_code_invalid() -> containerd_shim_protos::ttrpc::Code {
    containerd_shim_protos::ttrpc::Code::INVALID_ARGUMENT
}
