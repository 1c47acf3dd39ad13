//! containerd-shim-youki-v2: a containerd shim v2 that runs a pod's containers through
//! youki's libcontainer. The shim binary (`main.rs`) and the operator tool
//! (`bin/youki-shims.rs`) share these modules.

pub mod args;
pub mod bootstrap;
pub mod checkpoint;
pub mod cleanup;
pub mod container;
pub mod daemon;
pub mod error;
pub mod events;
pub mod forker;
pub mod idmap;
pub mod ids;
pub mod info;
pub mod inventory;
pub mod io;
pub mod log_binary;
pub mod logger;
pub mod metrics;
pub mod mount;
pub mod oom;
pub mod options;
pub mod pod;
pub mod process;
pub mod propagation;
pub mod reaper;
pub mod runtime;
pub mod service;
pub mod socket;
pub mod tty;
