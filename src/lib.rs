//! containerd-shim-youki-v2: a containerd shim v2 that runs a pod's containers through
//! youki's libcontainer. The shim binary (`main.rs`) and the operator tool
//! (`bin/youki-shims.rs`) share these modules.
//!
//! The folders are the layers, from containerd inwards:
//! - `shim`: the shim protocol: arguments, the start handshake, the daemon, the ttrpc Task
//!   service, events to containerd, runtime options and `-info`.
//! - `task`: the Task API's model: the pod, its containers and execs, their exits.
//! - `runtime`: what really runs containers: libcontainer in forked workers (and a fake for
//!   unit tests), with mounts, mount propagation and ID maps.
//! - `stdio`: fifos, files, `binary://` loggers and terminals.
//! - `cgroup`: statistics and OOM watching.
//! - `sandbox`: containerd 2.x's Sandbox API (`sandboxer = "shim"`): the pod's pause
//!   container made by the shim itself, from the pause binary it carries.
//! - `ops`: the operator side: `delete` of a dead shim's containers and `youki-shims`.

pub mod cgroup;
pub mod error;
pub mod ids;
pub mod ops;
pub mod runtime;
pub mod safe_open;
pub mod sandbox;
pub mod shim;
pub mod stdio;
pub mod task;
