//! Supervision: the root actor, the restart policy, and the context actors share.

pub mod memory;
pub mod pipeline;
pub mod recovery;
pub mod settle;
pub mod supervisor;
pub mod threads;
