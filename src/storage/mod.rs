//! The one place that knows SQL. Reads go through a connection pool; every write
//! goes through the [`Writer`], which commits the writes that are in flight
//! together (group commit) on one connection.

pub mod account_data;
pub mod appservice;
pub mod connections;
pub mod e2ee;
pub mod e2ee_federation;
pub mod events;
pub mod invites;
pub mod key_backup;
pub mod knocks;
pub mod media;
pub mod migrate;
pub mod outbox;
pub mod outliers;
pub mod push;
pub mod receipts;
pub mod redactions;
pub mod relations;
pub mod reports;
pub mod rooms;
pub mod search;
pub mod server_keys;
pub mod state;
pub mod threepid;
pub mod users;
pub mod writer;

use std::{str::FromStr, time::Duration};

use sqlx::{
    AnyPool, Executor,
    any::{AnyConnectOptions, AnyPoolOptions},
};

pub use self::writer::{WriteTxn, Writer};

/// The database engine behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Handle to the database: a read pool and the single writer.
#[derive(Clone)]
pub struct Db {
    pub pool: AnyPool,
    pub backend: Backend,
    pub writer: Writer,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("unsupported database URL {0:?}: expected sqlite:// or postgres://")]
    UnsupportedUrl(String),
    #[error("could not create the data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error("could not open the database: {0}")]
    Connect(#[from] sqlx::Error),
    #[error("could not migrate the database schema: {0}")]
    Migrate(String),
}

impl Db {
    /// Opens (creating if needed) the database at `url` and brings its schema up to date.
    pub async fn open(url: &str, max_connections: u32) -> Result<Self, OpenError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(OpenError::UnsupportedUrl(url.to_owned()));
        };

        let url = match backend {
            Backend::Sqlite => {
                let path = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
                let path = path.split('?').next().unwrap_or(path);
                if let Some(parent) = std::path::Path::new(path).parent()
                    && !parent.as_os_str().is_empty()
                {
                    std::fs::create_dir_all(parent)
                        .map_err(|source| OpenError::DataDir { path: parent.display().to_string(), source })?;
                }
                format!("sqlite://{path}?mode=rwc")
            }
            Backend::Postgres => url.to_owned(),
        };
        let options = AnyConnectOptions::from_str(&url)?;

        let pool = AnyPoolOptions::new()
            .max_connections(max_connections.max(1))
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        conn.execute(SQLITE_PRAGMAS).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options.clone())
            .await?;

        migrate::run(&pool, backend).await.map_err(|e| OpenError::Migrate(e.to_string()))?;
        connections::rebuild_if_requested(&pool).await.map_err(|e| OpenError::Migrate(e.to_string()))?;

        let writer = Writer::start(&options, backend).await?;
        Ok(Self { pool, backend, writer })
    }

    /// Finishes the writes in flight and closes every connection.
    pub async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }
}

/// WAL lets readers run beside the writer; `synchronous = FULL` makes every
/// commit durable before the client hears of it.
const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
     PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;";

pub(crate) fn sqlite_pragmas() -> &'static str {
    SQLITE_PRAGMAS
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
