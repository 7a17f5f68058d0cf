//! Supervision: the root actor, the restart policy, and the context actors share.

pub mod shared;
