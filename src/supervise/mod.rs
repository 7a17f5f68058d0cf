//! Supervision: the root actor, the restart policy, and the context actors share.

pub mod members;
pub mod memory;
pub mod pipeline;
pub mod recovery;
pub mod settle;
pub mod shared;
pub mod supervisor;
pub mod threads;
