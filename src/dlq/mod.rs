//! Working the dead letters: list and show them ([`letters`]), send one back where it came
//! from once its cause is fixed ([`redrive`]), and keep a record of every re-drive: who, when,
//! what ([`audit`]). The CLI (`retailflow dlq`) and the HTTP admin routes (`/v1/dlq`) both
//! call these; see docs/OPERATIONS.md.

pub mod audit;
pub mod letters;
pub mod redrive;
