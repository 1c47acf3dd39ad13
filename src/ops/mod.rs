//! The operator side: `delete` (containerd's cleanup of a dead shim's containers), the
//! inventory behind `youki-shims`, and `youki-shims install`/`uninstall`.

pub mod cleanup;
pub mod install;
pub mod inventory;
