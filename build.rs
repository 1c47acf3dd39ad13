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
}
