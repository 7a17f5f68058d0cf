//! The retail vocabulary: identifiers, money, the event envelope and its validation, wire
//! formats, subjects.

pub mod codec;
pub mod event;
pub mod fastpack;
pub mod ids;
pub mod money;
pub mod subject;
mod validate;

pub use event::*;
pub use ids::*;
pub use money::{BusinessDay, Currency};
