//! Cgroups seen from the daemon: statistics for containerd's Metrics and OOM watching;
//! where the systemd driver put a container's cgroup (found without D-Bus); v2 statistics
//! from the controllers a cgroup has;
//! and the cgroup `start` moves the daemon into (runc-v2's ShimCgroup).

pub mod metrics;
pub mod oom;
pub mod path;
pub mod shim;
pub mod v2;
