//! The operator side: `delete` (containerd's cleanup of a dead shim's containers), the
//! inventory behind `youki-shims`, `youki-shims install`/`uninstall`, and where both find
//! libcontainer's state (`roots`).

pub mod cleanup;
pub mod install;
pub mod inventory;
pub mod roots;
