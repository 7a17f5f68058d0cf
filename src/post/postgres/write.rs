//! One document into the interface tables: header and lines in one transaction, nothing when
//! the header is already there.
//!
//! The lines go in as one `INSERT ... SELECT FROM unnest(...)` per document (a column of
//! arrays each), so a 1,000-line page is one round trip, not 1,000.

use super::Fault;
use retailflow_core::aggregate::posting::{DocBody, PostingDoc};
use tokio_postgres::Client;
use tokio_postgres::types::ToSql;

/// The status a refused document is dead-lettered with (`ERP answered 422`): PostgreSQL has
/// no status codes, and 422 is the HTTP answer for "read, understood, refused".
pub const REFUSED_STATUS: u16 = 422;

const HEADER: &str = "INSERT INTO rf_document (document_id, endpoint, kind, location, \
     business_day, currency, barrier_seq, part, page, pages, lineage_events, \
     lineage_first_seq, lineage_last_seq, line_count, is_final, corrects_barrier) \
     VALUES ($1, $2, $3, $4, CAST($5::text AS date), $6, $7, $8, $9, $10, $11, $12, $13, $14, \
     $15, $16) \
     ON CONFLICT (document_id) DO NOTHING";

const SALES: &str = "INSERT INTO rf_sales_line (document_id, line_no, sku, tax_code, qty_sold, \
     qty_returned, sales_amount, returns_amount, discount_amount, tax_amount) \
     SELECT $1, * FROM unnest($2::int4[], $3::text[], $4::text[], $5::int8[], $6::int8[], \
     $7::int8[], $8::int8[], $9::int8[], $10::int8[])";

const TENDERS: &str = "INSERT INTO rf_tender_line (document_id, line_no, tender, paid, refunded, \
     transactions) SELECT $1, * FROM unnest($2::int4[], $3::text[], $4::int8[], $5::int8[], \
     $6::int8[])";

const TAXES: &str = "INSERT INTO rf_tax_line (document_id, line_no, tax_code, taxable_amount, \
     tax_amount) SELECT $1, * FROM unnest($2::int4[], $3::text[], $4::int8[], $5::int8[])";

const MOVEMENTS: &str = "INSERT INTO rf_movement_line (document_id, line_no, location, sku, \
     reason, qty) SELECT $1, * FROM unnest($2::int4[], $3::text[], $4::text[], $5::text[], \
     $6::int8[])";

/// A document's numbers in the column types, checked before anything is sent: a value no
/// column can hold refuses the document instead of wrapping.
pub(super) struct Prepared {
    business_day: Option<String>,
    currency: Option<String>,
    barrier_seq: i64,
    part: i32,
    page: i32,
    pages: i32,
    events: i64,
    first_seq: i64,
    last_seq: i64,
    corrects: Option<i64>,
    line_no: Vec<i32>,
}

fn fit<T: TryFrom<u64>>(v: u64, what: &str) -> Result<T, String> {
    T::try_from(v).map_err(|_| format!("{what} {v} does not fit its column"))
}

impl Prepared {
    pub(super) fn of(doc: &PostingDoc) -> Result<Prepared, String> {
        let lines = doc.body.lines();
        let line_no = (1..=fit::<i32>(lines as u64, "line count")?).collect();
        Ok(Prepared {
            business_day: doc.business_day.map(|d| d.to_string()),
            currency: doc.currency.map(|c| c.to_string()),
            barrier_seq: fit(doc.barrier_seq, "barrier_seq")?,
            part: fit(u64::from(doc.part), "part")?,
            page: fit(u64::from(doc.page), "page")?,
            pages: fit(u64::from(doc.pages), "pages")?,
            events: fit(doc.lineage.events, "lineage events")?,
            first_seq: fit(doc.lineage.first_seq, "lineage first_seq")?,
            last_seq: fit(doc.lineage.last_seq, "lineage last_seq")?,
            corrects: doc.corrects.map(|c| fit(c, "corrects")).transpose()?,
            line_no,
        })
    }
}

/// Writes `doc` in one transaction; `Ok(false)` when its header was already there (nothing
/// written, the transaction rolled back).
pub(super) async fn write(
    client: &mut Client,
    doc: &PostingDoc,
    p: &Prepared,
) -> Result<bool, Fault> {
    let tx = client.transaction().await.map_err(fault)?;
    let line_count = p.line_no.len() as i32;
    let inserted = tx
        .execute(
            HEADER,
            &[
                &doc.id,
                &doc.endpoint,
                &doc.body.kind().as_str(),
                &doc.location.as_str(),
                &p.business_day,
                &p.currency,
                &p.barrier_seq,
                &p.part,
                &p.page,
                &p.pages,
                &p.events,
                &p.first_seq,
                &p.last_seq,
                &line_count,
                &doc.final_doc,
                &p.corrects,
            ],
        )
        .await
        .map_err(fault)?;
    if inserted == 0 {
        tx.rollback().await.map_err(fault)?;
        return Ok(false);
    }
    let id: &(dyn ToSql + Sync) = &doc.id;
    let no: &(dyn ToSql + Sync) = &p.line_no;
    match &doc.body {
        DocBody::SalesSummary(l) => {
            let sku: Vec<&str> = l.iter().map(|l| l.sku.as_str()).collect();
            let code: Vec<&str> = l.iter().map(|l| l.tax_code.as_str()).collect();
            let col = |f: fn(&_) -> i64| l.iter().map(f).collect::<Vec<i64>>();
            let (sold, returned) = (col(|l| l.qty_sold), col(|l| l.qty_returned));
            let (sales, returns) = (col(|l| l.sales_amount), col(|l| l.returns_amount));
            let (discount, tax) = (col(|l| l.discount_amount), col(|l| l.tax_amount));
            let params: [&(dyn ToSql + Sync); 10] = [
                id, no, &sku, &code, &sold, &returned, &sales, &returns, &discount, &tax,
            ];
            tx.execute(SALES, &params).await.map_err(fault)?;
        }
        DocBody::TenderSummary(l) => {
            let tender: Vec<&str> = l.iter().map(|l| l.tender.as_str()).collect();
            let paid: Vec<i64> = l.iter().map(|l| l.paid).collect();
            let refunded: Vec<i64> = l.iter().map(|l| l.refunded).collect();
            let transactions = l
                .iter()
                .map(|l| fit::<i64>(l.transactions, "transactions"))
                .collect::<Result<Vec<i64>, String>>()
                .map_err(Fault::Refused)?;
            let params: [&(dyn ToSql + Sync); 6] =
                [id, no, &tender, &paid, &refunded, &transactions];
            tx.execute(TENDERS, &params).await.map_err(fault)?;
        }
        DocBody::TaxSummary(l) => {
            let code: Vec<&str> = l.iter().map(|l| l.code.as_str()).collect();
            let taxable: Vec<i64> = l.iter().map(|l| l.taxable_amount).collect();
            let tax: Vec<i64> = l.iter().map(|l| l.tax_amount).collect();
            let params: [&(dyn ToSql + Sync); 5] = [id, no, &code, &taxable, &tax];
            tx.execute(TAXES, &params).await.map_err(fault)?;
        }
        DocBody::InventoryMovements(l) => {
            let location: Vec<&str> = l.iter().map(|l| l.location.as_str()).collect();
            let sku: Vec<&str> = l.iter().map(|l| l.sku.as_str()).collect();
            let reason: Vec<&str> = l.iter().map(|l| l.reason.as_str()).collect();
            let qty: Vec<i64> = l.iter().map(|l| l.qty).collect();
            let params: [&(dyn ToSql + Sync); 6] = [id, no, &location, &sku, &reason, &qty];
            tx.execute(MOVEMENTS, &params).await.map_err(fault)?;
        }
    }
    tx.commit().await.map_err(fault)?;
    Ok(true)
}

/// SQLSTATE class 22 (data exception) and 23 (integrity constraint violation) are about the
/// document; everything else, and every error without a SQLSTATE (I/O, a closed connection),
/// is about the database.
pub(crate) fn fault(e: tokio_postgres::Error) -> Fault {
    let Some(db) = e.as_db_error() else {
        return Fault::Unavailable(format!("PostgreSQL: {e}"));
    };
    let code = db.code().code();
    let text = || {
        let mut m = format!("PostgreSQL SQLSTATE {code}: {}", db.message());
        if let Some(detail) = db.detail() {
            m.push_str(" (");
            m.push_str(detail);
            m.push(')');
        }
        m.chars().take(2000).collect::<String>()
    };
    // Not even a unique violation is a replay: the header's conflict is `DO NOTHING`, so one
    // here is about the lines, and trying again would fail the same way.
    if code.starts_with("22") || code.starts_with("23") {
        Fault::Refused(text())
    } else {
        Fault::Unavailable(text())
    }
}
