//! The PostgreSQL interface-table endpoint of a month-end run: a database of its own on the
//! machine's PostgreSQL, the ERP's import job that marks documents imported, and the books
//! its tables hold, summed for the check against the oracle.

use crate::reserve_bench::pg_connect;
use retailflow::config::{ErpEndpointConfig, ErpKind};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::task::JoinHandle;

/// The variable the endpoint's connection string is handed over in.
const DSN_ENV: &str = "RETAILFLOW_MONTH_END_PG";
/// The endpoint's name in the pipeline's configuration and in reconciliation.
pub const ENDPOINT: &str = "erp-tables";

/// The server and maintenance database: `RETAILFLOW_TEST_PG`, or the machine's PostgreSQL.
fn server() -> String {
    std::env::var("RETAILFLOW_TEST_PG")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".into())
}

/// What the interface tables hold, summed.
#[derive(Debug, Default)]
pub struct TableBooks {
    /// (location, sku, tax code) -> (qty sold, qty returned, sales, returns, tax).
    pub sales: BTreeMap<(String, String, String), [i64; 5]>,
    /// (location, tender) -> (paid, refunded).
    pub tenders: BTreeMap<(String, String), (i64, i64)>,
    /// (location, sku) -> the movements' quantities added up.
    pub movements: BTreeMap<(String, String), i64>,
    pub documents: i64,
    /// Documents whose import status is not `imported`.
    pub not_imported: i64,
}

/// A database of its own for the run, dropped by [`Tables::drop`].
pub struct Tables {
    name: String,
}

impl Tables {
    pub async fn create() -> Result<Tables, String> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!("rf_month_end_{}_{nanos}", std::process::id());
        let admin = pg_connect(&server()).await.map_err(|e| e.to_string())?;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .map_err(|e| format!("CREATE DATABASE {name}: {e}"))?;
        Ok(Tables { name })
    }

    fn dsn(&self) -> String {
        format!("{} dbname={}", server(), self.name)
    }

    /// The pipeline's endpoint for these tables; sets the variable its connection string is
    /// read from.
    pub fn endpoint(&self, like: &ErpEndpointConfig) -> ErpEndpointConfig {
        // SAFETY: set before the pipeline starts; only this run reads the variable.
        unsafe { std::env::set_var(DSN_ENV, self.dsn()) };
        ErpEndpointConfig {
            name: ENDPOINT.into(),
            kind: ErpKind::Postgres,
            dsn_env: DSN_ENV.into(),
            url: String::new(),
            status_poll: Duration::from_millis(500),
            ..like.clone()
        }
    }

    /// The ERP's import job: every 500 ms it marks the new documents imported, until `stop`.
    /// Counts the documents it imported.
    pub fn import_job(&self, stop: Arc<AtomicBool>) -> (JoinHandle<()>, Arc<AtomicU64>) {
        let dsn = self.dsn();
        let imported = Arc::new(AtomicU64::new(0));
        let count = imported.clone();
        let job = tokio::spawn(async move {
            let mut client = None;
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if client.is_none() {
                    client = pg_connect(&dsn).await.ok();
                }
                let Some(c) = &client else { continue };
                // The tables appear when the endpoint's migrations have run.
                match c
                    .execute(
                        "UPDATE rf_document SET import_status = 'imported' \
                         WHERE import_status = 'new'",
                        &[],
                    )
                    .await
                {
                    Ok(n) => {
                        count.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(e) if e.as_db_error().is_some() => {}
                    Err(_) => client = None,
                }
            }
        });
        (job, imported)
    }

    /// The tables' books, summed.
    pub async fn books(&self) -> Result<TableBooks, String> {
        let c = pg_connect(&self.dsn()).await.map_err(|e| e.to_string())?;
        let q = |sql: &'static str| {
            let c = &c;
            async move { c.query(sql, &[]).await.map_err(|e| format!("{sql}: {e}")) }
        };
        let mut b = TableBooks::default();
        for r in q(
            "SELECT d.location, l.sku, l.tax_code, sum(l.qty_sold)::int8, \
                    sum(l.qty_returned)::int8, sum(l.sales_amount)::int8, \
                    sum(l.returns_amount)::int8, sum(l.tax_amount)::int8 \
                    FROM rf_sales_line l JOIN rf_document d USING (document_id) GROUP BY 1, 2, 3",
        )
        .await?
        {
            b.sales.insert(
                (r.get(0), r.get(1), r.get(2)),
                [r.get(3), r.get(4), r.get(5), r.get(6), r.get(7)],
            );
        }
        for r in q(
            "SELECT d.location, l.tender, sum(l.paid)::int8, sum(l.refunded)::int8 \
                    FROM rf_tender_line l JOIN rf_document d USING (document_id) GROUP BY 1, 2",
        )
        .await?
        {
            b.tenders.insert((r.get(0), r.get(1)), (r.get(2), r.get(3)));
        }
        for r in
            q("SELECT location, sku, sum(qty)::int8 FROM rf_movement_line GROUP BY 1, 2").await?
        {
            b.movements.insert((r.get(0), r.get(1)), r.get(2));
        }
        let counts = q(
            "SELECT count(*), count(*) FILTER (WHERE import_status <> 'imported') \
                        FROM rf_document",
        )
        .await?;
        if let Some(r) = counts.first() {
            b.documents = r.get(0);
            b.not_imported = r.get(1);
        }
        Ok(b)
    }

    /// Drops the database.
    pub async fn drop(self) {
        if let Ok(admin) = pg_connect(&server()).await {
            let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
            if let Err(e) = admin.batch_execute(&sql).await {
                tracing::warn!(error = %e, "month-end: dropping the run's database");
            }
        }
    }
}
