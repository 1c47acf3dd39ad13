//! The operator side: `delete` (containerd's cleanup of a dead shim's containers) and the
//! inventory behind `youki-shims`.

pub mod cleanup;
pub mod inventory;
