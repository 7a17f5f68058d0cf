//! Per-store aggregation of sales, returns, tenders and tax, and the posting documents formed
//! from it.

pub use retailflow_core::aggregate::{posting, store};
pub mod actor;
