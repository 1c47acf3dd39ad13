//! The operator side: `delete` (containerd's cleanup of a dead shim's containers), the
//! inventory behind `youki-shims`, and where both find libcontainer's state (`roots`).

pub mod cleanup;
pub mod inventory;
pub mod roots;
