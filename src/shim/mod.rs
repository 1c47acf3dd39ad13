//! The shim protocol: how containerd starts us (`args`, `bootstrap`), the long-lived
//! daemon and its socket, the ttrpc Task service, events back to containerd, runtime
//! options and `-info`.

pub mod args;
pub mod bootstrap;
pub mod daemon;
pub mod events;
pub mod info;
pub mod logger;
pub mod options;
pub mod sealed;
pub mod service;
pub mod socket;
pub mod validate;
