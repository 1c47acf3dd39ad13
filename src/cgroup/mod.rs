//! Cgroups seen from the daemon: statistics for containerd's Metrics and OOM watching;
//! and the cgroup `start` moves the daemon into (runc-v2's ShimCgroup).

pub mod metrics;
pub mod oom;
pub mod shim;
