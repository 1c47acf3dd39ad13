//! Our pause image, built into the binary: build.rs compiles src/bin/pause.rs statically,
//! and this module wraps it in an OCI image archive (oci-layout, index.json, manifest,
//! config and one tar layer) that `ctr images import` takes, named like
//! hack/build-image.py names it. Every byte is fixed (mtime 0, sorted keys), so the
//! manifest digest says whether the node already has this very image.

use serde_json::json;
use sha2::{Digest, Sha256};

use super::config::PAUSE_IMAGE;

/// The static pause binary build.rs made.
pub static PAUSE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/pause"));

/// One tar (ustar) entry: a regular file.
fn tar_file(out: &mut Vec<u8>, name: &str, mode: u32, data: &[u8]) {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    let octal = |h: &mut [u8; 512], at: usize, len: usize, v: u64| {
        let s = format!("{v:0width$o}\0", width = len - 1);
        h[at..at + len].copy_from_slice(s.as_bytes());
    };
    octal(&mut h, 100, 8, mode.into());
    octal(&mut h, 108, 8, 0); // uid
    octal(&mut h, 116, 8, 0); // gid
    octal(&mut h, 124, 12, data.len() as u64);
    octal(&mut h, 136, 12, 0); // mtime
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[265..269].copy_from_slice(b"root");
    h[297..301].copy_from_slice(b"root");
    // The checksum is computed with its own field as spaces.
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

fn tar_end(out: &mut Vec<u8>) {
    out.resize(out.len() + 1024, 0);
}

fn sha(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// The archive and its manifest's digest.
pub struct Archive {
    pub tar: Vec<u8>,
    pub manifest_digest: String,
}

/// Builds the image archive around `binary` (served as /pause).
pub fn archive(binary: &[u8]) -> Archive {
    let mut layer = Vec::new();
    tar_file(&mut layer, "pause", 0o755, binary);
    tar_end(&mut layer);
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Entrypoint": ["/pause"],
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [sha(&layer)]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "youki-shims install"}],
    })
    .to_string()
    .into_bytes();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": sha(&layer), "size": layer.len()}],
    })
    .to_string()
    .into_bytes();
    let tag = PAUSE_IMAGE.rsplit(':').next().unwrap_or("latest");
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": sha(&manifest),
            "size": manifest.len(),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"io.containerd.image.name": PAUSE_IMAGE,
                            "org.opencontainers.image.ref.name": tag},
        }],
    })
    .to_string()
    .into_bytes();
    let mut tar = Vec::new();
    tar_file(&mut tar, "oci-layout", 0o644, br#"{"imageLayoutVersion":"1.0.0"}"#);
    tar_file(&mut tar, "index.json", 0o644, &index);
    for blob in [&layer, &config, &manifest] {
        let name = format!("blobs/sha256/{}", &sha(blob)["sha256:".len()..]);
        tar_file(&mut tar, &name, 0o644, blob);
    }
    tar_end(&mut tar);
    Archive {
        tar,
        manifest_digest: sha(&manifest),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_is_a_static_elf_and_the_archive_is_stable() {
        assert_eq!(&PAUSE[..4], b"\x7fELF");
        let a = archive(PAUSE);
        let b = archive(PAUSE);
        assert_eq!(a.manifest_digest, b.manifest_digest);
        assert_eq!(a.tar.len() % 512, 0);
        // The first entry's checksum is what tar(1) computes.
        let h = &a.tar[..512];
        let mut blank = h.to_vec();
        blank[148..156].copy_from_slice(b"        ");
        let sum: u32 = blank.iter().map(|&b| u32::from(b)).sum();
        let field = std::str::from_utf8(&h[148..154]).unwrap();
        assert_eq!(u32::from_str_radix(field, 8).unwrap(), sum);
    }
}
