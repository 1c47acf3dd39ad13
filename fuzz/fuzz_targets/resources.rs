//! Update's resources: the JSON containerd passes on, through the service's checks, then
//! libcontainer's mapping onto cgroup v2 files, applied to a scratch directory that
//! stands in for the container's cgroup. Nothing may be written outside it.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use containerd_shim_youki_v2::shim::validate;
use libcgroups::common::{CgroupManager, ControllerOpt};
use libfuzzer_sys::fuzz_target;

/// The files a v2 cgroup offers (write_cgroup_file never creates one).
const FILES: &[&str] = &[
    "cgroup.procs",
    "cpu.weight",
    "cpu.max",
    "cpu.max.burst",
    "cpu.idle",
    "cpuset.cpus",
    "cpuset.mems",
    "io.weight",
    "io.bfq.weight",
    "io.max",
    "memory.max",
    "memory.low",
    "memory.high",
    "memory.min",
    "memory.swap.max",
    "memory.oom.group",
    "pids.max",
    "hugetlb.2MB.max",
    "hugetlb.1GB.max",
    "hugetlb.2MB.rsvd.max",
    "hugetlb.1GB.rsvd.max",
];

fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = std::env::temp_dir().join(format!("ysm-fuzz-cg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("c")).expect("scratch cgroup");
        std::fs::write(
            root.join("cgroup.controllers"),
            "cpuset cpu io memory hugetlb pids\n",
        )
        .expect("controllers");
        std::fs::write(root.join("sentinel"), "untouched").expect("sentinel");
        for f in FILES {
            std::fs::write(root.join("c").join(f), "").expect("cgroup file");
        }
        root
    })
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fuzz_target!(|data: &[u8]| {
    let Ok(r) = validate::resources("c1", data) else {
        return;
    };
    let root = scratch();
    let before = (listing(root), listing(&root.join("c")));
    let m =
        libcgroups::v2::manager::Manager::new(root.clone(), PathBuf::from("c")).expect("manager");
    let _ = m.apply(&ControllerOpt {
        resources: &r,
        disable_oom_killer: false,
        oom_score_adj: None,
        freezer_state: None,
    });
    assert_eq!(before, (listing(root), listing(&root.join("c"))));
    assert_eq!(
        std::fs::read_to_string(root.join("sentinel"))
            .ok()
            .as_deref(),
        Some("untouched")
    );
});
