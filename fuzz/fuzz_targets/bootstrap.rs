//! The start handshake: what containerd writes on `start`'s stdin (runtime options or
//! BootstrapParams), the bundle's config.json annotations that choose the pod, and the
//! command line.
#![no_main]

use containerd_shim_youki_v2::ids::validate_id;
use containerd_shim_youki_v2::shim::args::Args;
use containerd_shim_youki_v2::shim::bootstrap;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    match sel % 3 {
        0 => {
            for (id, ns) in [("c1", "default"), ("", ""), ("c1", "")] {
                if let Ok(input) = bootstrap::decode_input(rest, id, ns) {
                    let reply = bootstrap::reply_format(&input);
                    let _ = bootstrap::format_reply(reply, "unix:///run/containerd/s/x");
                }
            }
        }
        1 => {
            // The group becomes a socket name: whatever is accepted must be a valid ID.
            if let Ok(g) = bootstrap::group_id(rest, "c1") {
                assert!(validate_id(&g).is_ok(), "{g:?}");
            }
        }
        _ => {
            let argv: Vec<String> = rest
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let _ = Args::parse(argv);
        }
    }
});
