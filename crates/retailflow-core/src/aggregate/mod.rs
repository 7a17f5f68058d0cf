//! Per-store aggregation of sales, returns, tenders and tax, and the posting documents formed
//! from it.

pub mod day;
pub mod posting;
pub mod store;
