//! The Task API's model: the pod and its containers and execs, each process an explicit
//! state machine (`state`), their exits (reaped by the daemon, routed by `exits`) and
//! checkpoint requests.

pub mod checkpoint;
pub mod container;
pub mod exits;
pub mod launch;
pub mod pod;
pub mod process;
pub mod publish;
pub mod reaper;
pub mod registry;
pub mod state;
