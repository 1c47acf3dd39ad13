//! Cgroups seen from the daemon: statistics for containerd's Metrics and OOM watching.

pub mod metrics;
pub mod oom;
