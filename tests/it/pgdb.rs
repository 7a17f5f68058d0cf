//! A database of its own for each PostgreSQL test, on the machine's PostgreSQL
//! (`127.0.0.1:5432`, user `postgres`, or the server `RETAILFLOW_TEST_PG` names), dropped
//! when the test ends, also when it fails.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio_postgres::{Client, NoTls};

/// The server and maintenance database the tests connect to first.
fn base() -> String {
    std::env::var("RETAILFLOW_TEST_PG")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".into())
}

async fn connect(dsn: &str) -> Client {
    let (client, connection) = match tokio_postgres::connect(dsn, NoTls).await {
        Ok(c) => c,
        Err(e) => panic!(
            "PostgreSQL must be reachable for this test at `{dsn}` (the machine's PostgreSQL on \
             127.0.0.1:5432, user postgres, trust auth, database test; RETAILFLOW_TEST_PG names \
             another): {e}"
        ),
    };
    tokio::spawn(connection);
    client
}

pub struct TestDb {
    pub name: String,
}

impl TestDb {
    pub async fn create() -> TestDb {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!(
            "rf_{}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            nanos
        );
        let admin = connect(&base()).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("CREATE DATABASE");
        TestDb { name }
    }

    /// The connection string of this database.
    pub fn dsn(&self) -> String {
        format!("{} dbname={}", base(), self.name)
    }

    pub async fn client(&self) -> Client {
        connect(&self.dsn()).await
    }

    /// Reads one `bigint` (or a count) from a query.
    pub async fn number(&self, sql: &str) -> i64 {
        let row = self.client().await.query_one(sql, &[]).await;
        let row = row.unwrap_or_else(|e| panic!("{sql}: {e}"));
        row.try_get::<_, Option<i64>>(0)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .unwrap_or(0)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // A runtime of its own on a thread of its own: Drop cannot await, and may run inside
        // (or after) the test's runtime.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime to drop the test database");
            rt.block_on(async {
                let admin = connect(&base()).await;
                let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                tokio::time::timeout(Duration::from_secs(30), admin.batch_execute(&sql)).await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(Ok(())))) {
            eprintln!("test database {} was not dropped: {dropped:?}", self.name);
        }
    }
}
