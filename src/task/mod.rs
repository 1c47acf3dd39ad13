//! The Task API's model: the pod and its containers and execs, what may happen in which
//! state, their exits (reaped by the daemon) and checkpoint requests.

pub mod checkpoint;
pub mod container;
pub mod pod;
pub mod process;
pub mod reaper;
