//! A database of its own for each test on the PostgreSQL server the tests are given:
//! `TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`, a server
//! with trust auth). Without a server, a test asks `TestDatabase::create` and gets
//! `None`, says it was skipped, and passes — unless `REQUIRE_POSTGRES=1` (CI sets it),
//! when a server that cannot be reached fails the test.

use std::io::Write;
use std::time::Duration;

use sqlx::{Connection, PgConnection};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A fresh database, dropped (with any connection still open to it) when this is.
#[derive(Debug)]
pub struct TestDatabase {
    server: String,
    name: String,
}

impl TestDatabase {
    /// A new empty database, or `None` (after saying so on the terminal) when there is
    /// no server to make it on and none is required.
    pub async fn create(test: &str) -> Option<Self> {
        let server = std::env::var("TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.into());
        let connected =
            tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(&server)).await;
        let mut admin = match connected {
            Ok(Ok(connection)) => connection,
            Ok(Err(error)) => return skipped(test, &server, &error.to_string()),
            Err(_) => return skipped(test, &server, "no answer within 5 s"),
        };
        let name = format!("tsa_test_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("the test user can create databases");
        let _ = admin.close().await;
        Some(Self { server, name })
    }

    /// The URL of this database, for `STORE`.
    pub fn url(&self) -> String {
        match self.server.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{}", self.name),
            None => panic!("TEST_POSTGRES_URL names no database: {}", self.server),
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        // Drop cannot await, and may run inside a runtime: a thread of its own does it.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async {
                if let Ok(mut admin) = PgConnection::connect(&server).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut admin)
                        .await;
                }
            });
        })
        .join();
    }
}

fn skipped(test: &str, server: &str, why: &str) -> Option<TestDatabase> {
    if std::env::var("REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
        panic!("REQUIRE_POSTGRES=1 but Postgres at {server} cannot be reached: {why}");
    }
    // Straight to the terminal: the test harness keeps what `eprintln!` prints.
    let _ = writeln!(
        std::io::stderr(),
        "{test}: skipped, no Postgres at {server} ({why}); set TEST_POSTGRES_URL or REQUIRE_POSTGRES=1"
    );
    None
}
