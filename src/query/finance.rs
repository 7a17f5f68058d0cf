//! Reconciliation over HTTP: store days against the tills' Z reports and the ERP's answers
//! (`GET /v1/reconciliation`, JSON or CSV), one store day in detail, and the events behind a
//! document (`GET /v1/documents/{id}/lineage`). Needs the `finance` scope.

use super::reply::{error, json};
use crate::domain::{BusinessDay, LocationId};
use crate::finance::books::{Books, Filter, Reconciliation, Side};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::fmt::Write;
use std::sync::Arc;

/// What the finance routes read: the books, and the events stream for lineage.
#[derive(Clone)]
pub struct FinanceState {
    pub books: Arc<Books>,
    pub js: async_nats::jetstream::Context,
    pub events_stream: String,
}

/// Statuses a listing can be filtered by.
pub const STATUSES: [&str; 6] = [
    "rejected",
    "missing_transactions",
    "variance",
    "late_correction",
    "pending",
    "balanced",
];

pub fn params(q: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(q.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

fn day(value: &str) -> Result<BusinessDay, String> {
    BusinessDay::parse(value).map_err(|e| format!("business_day {value:?}: {e}"))
}

/// The listing's filters; the message of a 400 when one is wrong.
pub fn filter(q: Option<&str>) -> Result<Filter, String> {
    let mut f = Filter::default();
    for (k, v) in params(q) {
        match k.as_str() {
            "business_day" if !v.is_empty() => f.business_day = Some(day(&v)?),
            "store" if !v.is_empty() => {
                let store = LocationId::from(v.as_str());
                store.check().map_err(|e| e.to_string())?;
                f.store = Some(store);
            }
            "status" if !v.is_empty() => {
                if !STATUSES.contains(&v.as_str()) {
                    return Err(format!(
                        "status {v:?} is not one of {}",
                        STATUSES.join(", ")
                    ));
                }
                f.status = Some(v);
            }
            "business_day" | "store" | "status" => {}
            other => {
                return Err(format!(
                    "unknown parameter {other:?}; filters are business_day, store, status"
                ));
            }
        }
    }
    Ok(f)
}

fn wants_csv(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/csv"))
}

/// `GET /v1/reconciliation?business_day=&store=&status=`: every store day that passes the
/// filters, by day then store; CSV with `Accept: text/csv`.
pub async fn list(
    State(st): State<FinanceState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let f = match filter(q.as_deref()) {
        Ok(f) => f,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    let rows = st.books.list(&f);
    if wants_csv(&headers) {
        return (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            )],
            csv(&rows),
        )
            .into_response();
    }
    json(StatusCode::OK, &serde_json::json!({ "days": rows }))
}

/// `GET /v1/reconciliation/{store}/{business_day}`: the day in every currency it has, with its
/// exceptions, tills and listed documents.
pub async fn detail(
    State(st): State<FinanceState>,
    Path((store, business_day)): Path<(String, String)>,
) -> Response {
    let d = match day(&business_day) {
        Ok(d) => d,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    let store = LocationId::from(store.as_str());
    if let Err(e) = store.check() {
        return error(StatusCode::BAD_REQUEST, e.to_string());
    }
    let days = st.books.detail(&store, d);
    if days.is_empty() {
        return error(
            StatusCode::NOT_FOUND,
            format!("no events and no day_closed for store {store} on {business_day}"),
        );
    }
    json(StatusCode::OK, &serde_json::json!({ "days": days }))
}

/// `GET /v1/documents/{id}/lineage?after=&limit=`: the source events of an answered document
/// (its id URL-encoded, `/` as `%2F`), a page at a time.
pub async fn lineage(
    State(st): State<FinanceState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let (mut after, mut limit) = (0u64, 100usize);
    for (k, v) in params(q.as_deref()) {
        let parsed = match k.as_str() {
            "after" => v.parse().map(|n| after = n).is_ok(),
            "limit" => v.parse().map(|n| limit = n).is_ok(),
            _ => false,
        };
        if !parsed {
            return error(
                StatusCode::BAD_REQUEST,
                format!("parameter {k}={v:?}: expected after=<stream sequence>, limit=<1..=500>"),
            );
        }
    }
    let Some(doc) = st.books.document(&id) else {
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "document {id:?} is not among the answered documents listed for its store day (see GET /v1/reconciliation/{{store}}/{{business_day}})"
            ),
        );
    };
    match crate::finance::lineage::page(&st.js, &st.events_stream, &doc, after, limit).await {
        Ok(page) => json(StatusCode::OK, &page),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

/// Columns of the CSV, one row per store day and endpoint.
const CSV_HEADER: &str = "business_day,store,currency,state,status,exceptions,late_events,\
source_events,source_sales,source_tax,source_tendered,\
declared_transactions,declared_sales,declared_tax,declared_tendered,endpoint,\
posted_documents,posted_sales,posted_tax,posted_tendered,\
accepted_documents,accepted_sales,accepted_tax,accepted_tendered,\
rejected_documents,rejected_sales,rejected_tax,rejected_tendered,\
pending_documents,pending_sales,pending_tax,pending_tendered";

fn cells(out: &mut String, side: Option<&Side>) {
    match side {
        Some(s) => {
            let _ = write!(out, ",{},{},{},{}", s.documents, s.sales, s.tax, s.tendered);
        }
        None => out.push_str(",,,,"),
    }
}

/// The listing as CSV: amounts in minor units, every identifier a plain token (no quoting).
pub fn csv(rows: &[Reconciliation]) -> String {
    let mut out = String::with_capacity(256 * (rows.len() + 1));
    out.push_str(CSV_HEADER);
    out.push('\n');
    for r in rows {
        let head = format!(
            "{},{},{},{},{},{},{}",
            r.business_day,
            r.store,
            r.currency,
            r.state,
            r.status,
            r.exception_count,
            r.late_events
        );
        let mut common = String::new();
        cells(&mut common, r.source.as_ref());
        cells(&mut common, r.declared.as_ref());
        let endpoints: Vec<Option<&crate::finance::books::EndpointSide>> = if r.erp.is_empty() {
            vec![None]
        } else {
            r.erp.iter().map(Some).collect()
        };
        for e in endpoints {
            out.push_str(&head);
            out.push_str(&common);
            let _ = write!(out, ",{}", e.map_or("", |e| e.endpoint.as_str()));
            for side in [
                e.map(|e| &e.posted),
                e.map(|e| &e.accepted),
                e.map(|e| &e.rejected),
                e.map(|e| &e.pending),
            ] {
                cells(&mut out, side);
            }
            out.push('\n');
        }
    }
    out
}
