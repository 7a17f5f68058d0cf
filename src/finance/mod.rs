//! Finance's view: store days against the tills' Z reports and the ERP's answers
//! (reconciliation), and the events behind a document (lineage). See docs/FINANCE.md.

pub mod books;
pub mod journal;
pub mod lineage;
