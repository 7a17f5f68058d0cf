//! The retail vocabulary: identifiers, money, the event envelope, wire formats, subjects.

pub mod codec;
pub mod event;
pub mod fastpack;
pub mod ids;
pub mod money;
pub mod subject;

pub use event::*;
pub use ids::*;
pub use money::{BusinessDay, Currency};
