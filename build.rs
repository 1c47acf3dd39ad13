//! Builds our pause (src/bin/pause.rs) as one static file into OUT_DIR, so that
//! `youki-shims install` carries the pause image inside it and a node needs no registry.
//! The flags are hack/build-images.sh's: plain rustc (pause has no dependencies), static.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = "src/bin/pause.rs";
    println!("cargo:rerun-if-changed={src}");
    println!("cargo:rerun-if-changed=build.rs");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("pause");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let status = Command::new(rustc)
        .args([
            "--edition",
            "2024",
            "-C",
            "opt-level=s",
            "-C",
            "panic=abort",
            "-C",
            "strip=symbols",
            "-C",
            "target-feature=+crt-static",
            "-o",
        ])
        .arg(&out)
        .arg(src)
        .status()
        .expect("run rustc for the pause binary");
    assert!(status.success(), "building {src} statically failed");
    // The shim names the pause root after this (sandbox/spec.rs), so it never reads the
    // embedded bytes (1.2 MiB that would become resident in every shim) to tell an old
    // root from the current one. FNV-1a: no build dependency needed.
    let bytes = std::fs::read(&out).expect("read the pause binary just built");
    let digest = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    println!("cargo:rustc-env=PAUSE_DIGEST={digest:016x}");
}
