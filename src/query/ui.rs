//! The reconciliation dashboard for finance users, served at `/ui/`: stores x business days
//! with their status, a page per store day with the totals side by side, the exceptions and
//! the documents, and a document's source events. Server-rendered HTML (maud), no script: the
//! pages refresh themselves with a `<meta http-equiv="refresh">`. Needs the `finance` scope.

use super::finance::{FinanceState, STATUSES, filter};
use crate::domain::{BusinessDay, LocationId};
use crate::finance::books::{Reconciliation, Side};
use crate::finance::lineage::LineagePage;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use std::collections::{BTreeMap, BTreeSet};

/// Seconds between the pages' own refreshes.
const REFRESH_S: u32 = 15;
/// Business days shown as columns of the overview at most (the newest).
const MAX_DAY_COLUMNS: usize = 14;

const STYLE: &str = "
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1b1b1b}
table{border-collapse:collapse;margin:.75rem 0}
th,td{border:1px solid #bbb;padding:.3rem .55rem;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}
caption{text-align:left;font-weight:600;padding:.3rem 0}
.st{display:inline-block;padding:.1rem .45rem;border-radius:.3rem;font-weight:600}
.st-balanced{background:#d7f0dc;color:#0b5a1e}
.st-pending{background:#e6e6e6;color:#333}
.st-variance{background:#ffe8b3;color:#6b4700}
.st-missing_transactions{background:#ffd2bf;color:#7a2500}
.st-rejected{background:#f8c9cc;color:#7d0d16}
.st-late_correction{background:#d2e3fc;color:#0b3d91}
form label{margin-right:.75rem}
nav a{margin-right:1rem}
";

fn page(title: &str, body: Markup) -> Response {
    let doc = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="refresh" content=(REFRESH_S);
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · retailflow" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                nav aria-label="Reconciliation" {
                    a href="/ui/" { "All store days" }
                }
                main { (body) }
                footer {
                    p { small { "Refreshes every " (REFRESH_S) " s. Amounts in minor units." } }
                }
            }
        }
    };
    Html(doc.into_string()).into_response()
}

fn problem(status: StatusCode, message: &str) -> Response {
    let mut r = page(
        "Problem",
        html! { h1 { "Problem" } p role="alert" { (message) } },
    );
    *r.status_mut() = status;
    r
}

fn status_badge(status: &str) -> Markup {
    html! { span class={ "st st-" (status) } { (status.replace('_', " ")) } }
}

fn day_href(store: &LocationId, day: BusinessDay) -> String {
    format!("/ui/day/{store}/{day}")
}

/// `GET /ui/`: store days by store (rows) and business day (columns), with filters.
pub async fn overview(State(st): State<FinanceState>, RawQuery(q): RawQuery) -> Response {
    let f = match filter(q.as_deref()) {
        Ok(f) => f,
        Err(m) => return problem(StatusCode::BAD_REQUEST, &m),
    };
    let rows = st.books.list(&f);
    let days: BTreeSet<BusinessDay> = rows.iter().map(|r| r.business_day).collect();
    let days: Vec<BusinessDay> = days.into_iter().rev().take(MAX_DAY_COLUMNS).collect();
    let mut grid: BTreeMap<&LocationId, BTreeMap<BusinessDay, Vec<&Reconciliation>>> =
        BTreeMap::new();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &rows {
        *counts.entry(r.status).or_default() += 1;
        grid.entry(&r.store)
            .or_default()
            .entry(r.business_day)
            .or_default()
            .push(r);
    }
    let chosen = |k: &str| -> String {
        crate::query::finance::params(q.as_deref())
            .into_iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v)
            .unwrap_or_default()
    };
    let body = html! {
        h1 { "Reconciliation" }
        form method="get" action="/ui/" {
            label { "Business day " input type="date" name="business_day" value=(chosen("business_day")); }
            label { "Store " input type="text" name="store" value=(chosen("store")) size="10"; }
            label {
                "Status "
                select name="status" {
                    option value="" { "any" }
                    @for s in STATUSES {
                        option value=(s) selected[chosen("status") == s] { (s.replace('_', " ")) }
                    }
                }
            }
            button type="submit" { "Filter" }
        }
        p id="summary" {
            (rows.len()) " store days"
            @for (s, n) in &counts { " · " (status_badge(s)) " " (n) }
        }
        @if rows.is_empty() {
            p { "No store day matches." }
        } @else {
            table id="days" {
                caption { "Store days by status (newest business days first)" }
                thead { tr {
                    th scope="col" { "Store" }
                    @for d in &days { th scope="col" { (d) } }
                } }
                tbody {
                    @for (store, by_day) in &grid {
                        tr {
                            th scope="row" { (store) }
                            @for d in &days {
                                td {
                                    @for r in by_day.get(d).into_iter().flatten() {
                                        a href=(day_href(store, *d)) data-status=(r.status)
                                            aria-label={ (store) " " (d) " " (r.currency) ": " (r.status) } {
                                            (status_badge(r.status))
                                        }
                                        " " small { (r.currency) " · " (r.state) }
                                        @if r.exception_count == 1 { " · 1 exception" }
                                        @if r.exception_count > 1 { " · " (r.exception_count) " exceptions" }
                                        br;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page("Reconciliation", body)
}

/// One row of the totals table.
enum Row {
    Sales,
    Tax,
    Tendered,
    Tender(String),
    TaxCode(String),
}

impl Row {
    fn label(&self) -> String {
        match self {
            Row::Sales => "Sales".into(),
            Row::Tax => "Tax".into(),
            Row::Tendered => "Tendered".into(),
            Row::Tender(t) => format!("Tender {t}"),
            Row::TaxCode(t) => format!("Tax {t}"),
        }
    }

    fn of(&self, s: &Side) -> i64 {
        match self {
            Row::Sales => s.sales,
            Row::Tax => s.tax,
            Row::Tendered => s.tendered,
            Row::Tender(t) => s.tenders.get(t).copied().unwrap_or(0),
            Row::TaxCode(t) => s.taxes.get(t).copied().unwrap_or(0),
        }
    }
}

fn money_rows(sides: &[(&str, Option<&Side>)]) -> Markup {
    let present = || sides.iter().filter_map(|(_, s)| *s);
    let tenders: BTreeSet<&String> = present().flat_map(|s| s.tenders.keys()).collect();
    let taxes: BTreeSet<&String> = present().flat_map(|s| s.taxes.keys()).collect();
    let mut lines = vec![Row::Sales, Row::Tax, Row::Tendered];
    lines.extend(tenders.into_iter().map(|t| Row::Tender(t.clone())));
    lines.extend(taxes.into_iter().map(|t| Row::TaxCode(t.clone())));
    html! {
        table id="totals" {
            caption { "Totals side by side" }
            thead { tr {
                th scope="col" { "" }
                @for (name, _) in sides { th scope="col" { (name) } }
            } }
            tbody {
                @for row in &lines {
                    tr {
                        th scope="row" { (row.label()) }
                        @for (_, side) in sides {
                            td class="num" { @if let Some(s) = side { (row.of(s)) } @else { "–" } }
                        }
                    }
                }
                tr {
                    th scope="row" { "Events / transactions / documents" }
                    @for (_, side) in sides {
                        td class="num" { @if let Some(s) = side { (s.documents) } @else { "–" } }
                    }
                }
            }
        }
    }
}

fn exception_text(e: &retailflow_core::aggregate::day::Exception) -> String {
    use retailflow_core::aggregate::day::Exception as X;
    match e {
        X::MissingTransactions {
            till,
            ranges,
            missing,
        } => {
            let listed: Vec<String> = ranges
                .iter()
                .map(|(a, b)| {
                    if a == b {
                        a.to_string()
                    } else {
                        format!("{a}–{b}")
                    }
                })
                .collect();
            format!(
                "Till {till}: {missing} transactions missing (sequences {})",
                listed.join(", ")
            )
        }
        X::TenderVariance {
            tender,
            declared,
            computed,
            difference,
        } => format!(
            "Tender {tender}: declared {declared}, computed {computed}, difference {difference}"
        ),
        X::TaxVariance {
            code,
            declared,
            computed,
            difference,
        } => {
            format!("Tax {code}: declared {declared}, computed {computed}, difference {difference}")
        }
        X::LateCorrection { events, documents } => format!(
            "{events} events arrived after the close and were posted in {documents} correction documents"
        ),
    }
}

fn one_day(r: &Reconciliation) -> Markup {
    let mut sides: Vec<(String, Option<&Side>)> = vec![
        ("Source".into(), r.source.as_ref()),
        ("Declared".into(), r.declared.as_ref()),
    ];
    for e in &r.erp {
        sides.push((format!("{} posted", e.endpoint), Some(&e.posted)));
        sides.push((format!("{} accepted", e.endpoint), Some(&e.accepted)));
        sides.push((format!("{} rejected", e.endpoint), Some(&e.rejected)));
        sides.push((format!("{} pending", e.endpoint), Some(&e.pending)));
    }
    let named: Vec<(&str, Option<&Side>)> = sides.iter().map(|(n, s)| (n.as_str(), *s)).collect();
    html! {
        section aria-labelledby={ "cur-" (r.currency) } {
            h2 id={ "cur-" (r.currency) } { (r.currency) " · " (status_badge(r.status)) " · state " (r.state) }
            @if let Some(at) = r.closed_at { p { "Closed at barrier " (at) "." } }
            (money_rows(&named))
            h3 { "Exceptions" }
            @if r.exceptions.is_empty() {
                p { "None." }
            } @else {
                ul id="exceptions" {
                    @for e in &r.exceptions { li data-kind=(e.status()) { (exception_text(e)) } }
                }
            }
            @if !r.tills.is_empty() {
                table id="tills" {
                    caption { "Tills: declared against applied transactions" }
                    thead { tr {
                        th scope="col" { "Till" } th scope="col" { "Declared" }
                        th scope="col" { "Applied" } th scope="col" { "Last sequence" }
                    } }
                    tbody { @for t in &r.tills { tr {
                        th scope="row" { (t.till) }
                        td class="num" { @if let Some(n) = t.declared { (n) } @else { "–" } }
                        td class="num" { (t.applied) }
                        td class="num" { @if let Some(n) = t.last_seq { (n) } @else { "–" } }
                    } } }
                }
            }
            table id="documents" {
                caption { "Documents the ERP answered (newest first)" }
                thead { tr {
                    th scope="col" { "Document" } th scope="col" { "Kind" } th scope="col" { "ERP status" }
                    th scope="col" { "Marks" } th scope="col" { "Events" } th scope="col" { "Message" }
                } }
                tbody { @for d in &r.documents { tr {
                    td { a href={ "/ui/lineage?id=" (urlencode(&d.document)) } { (d.document) } }
                    td { (d.kind.as_str()) }
                    td data-status=(d.status.as_str()) { (d.status.as_str()) }
                    td {
                        @if d.final_doc { "final " }
                        @if let Some(c) = d.corrects { "corrects barrier " (c) }
                    }
                    td class="num" { (d.lineage.events) }
                    td { (d.message.as_deref().unwrap_or("")) }
                } } }
            }
            @if !r.redrives.is_empty() {
                table id="redrives" {
                    caption { "Dead letters sent back (newest first)" }
                    thead { tr {
                        th scope="col" { "Letter" } th scope="col" { "Stage / reason" }
                        th scope="col" { "Event or document" } th scope="col" { "By" }
                    } }
                    tbody { @for x in &r.redrives { tr {
                        td class="num" { (x.letter) }
                        td { (x.stage) " / " (x.reason) }
                        td { (x.id.as_deref().unwrap_or("–")) }
                        td { (x.by) }
                    } } }
                }
            }
        }
    }
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// `GET /ui/day/{store}/{business_day}`: one store day, every currency.
pub async fn day(
    State(st): State<FinanceState>,
    Path((store, business_day)): Path<(String, String)>,
) -> Response {
    let Ok(d) = BusinessDay::parse(&business_day) else {
        return problem(
            StatusCode::BAD_REQUEST,
            &format!("{business_day:?} is not a business day (YYYY-MM-DD)"),
        );
    };
    let store = LocationId::from(store.as_str());
    if store.check().is_err() {
        return problem(StatusCode::BAD_REQUEST, "not a store id");
    }
    let days = st.books.detail(&store, d);
    if days.is_empty() {
        return problem(
            StatusCode::NOT_FOUND,
            &format!("No events and no day_closed for store {store} on {d}."),
        );
    }
    let title = format!("{store} · {d}");
    page(
        &title,
        html! {
            h1 { "Store " (store) " · business day " (d) }
            @for r in &days { (one_day(r)) }
        },
    )
}

/// `GET /ui/lineage?id=&after=`: a document's source events, a page at a time.
pub async fn lineage(State(st): State<FinanceState>, RawQuery(q): RawQuery) -> Response {
    let (mut id, mut after) = (String::new(), 0u64);
    for (k, v) in crate::query::finance::params(q.as_deref()) {
        match k.as_str() {
            "id" => id = v,
            "after" => after = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    let Some(doc) = st.books.document(&id) else {
        return problem(
            StatusCode::NOT_FOUND,
            "That document is not among the answered documents listed for its store day.",
        );
    };
    let page_of = crate::finance::lineage::page(&st.js, &st.events_stream, &doc, after, 100).await;
    let p: LineagePage = match page_of {
        Ok(p) => p,
        Err(e) => return problem(StatusCode::SERVICE_UNAVAILABLE, &e),
    };
    let back = day_href(&doc.location, doc.business_day);
    page(
        "Source events",
        html! {
            h1 { "Source events of " (p.document) }
            p { a href=(back) { "Back to " (doc.location) " · " (doc.business_day) } }
            p { (p.events) " events between stream sequences " (p.first_seq) " and " (p.last_seq) "." }
            table id="events" {
                caption { "Sales and returns the document sums up" }
                thead { tr {
                    th scope="col" { "Stream seq" } th scope="col" { "Event id" } th scope="col" { "Till" }
                    th scope="col" { "Kind" } th scope="col" { "Net" } th scope="col" { "Tax" } th scope="col" { "Tendered" }
                } }
                tbody { @for e in &p.items { tr {
                    td class="num" { (e.stream_seq) } td { (e.id) } td { (e.source) } td { (e.kind) }
                    td class="num" { (e.net) } td class="num" { (e.tax) } td class="num" { (e.tendered) }
                } } }
            }
            @if let Some(next) = p.next_after {
                p { a href={ "/ui/lineage?id=" (urlencode(&p.document)) "&after=" (next) } { "Next page" } }
            }
        },
    )
}
