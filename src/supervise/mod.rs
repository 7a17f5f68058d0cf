//! Supervision: the root actor, the restart policy, and the wiring that holds the parts of a
//! pipeline and cuts each actor's narrow context from them.

pub mod leading;
pub mod pipeline;
pub mod recovery;
pub mod settle;
pub mod supervisor;
pub mod threads;
pub mod wiring;
