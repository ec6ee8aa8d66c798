//! Schema migrations: the numbered SQL files under `schema/<backend>/`, applied
//! in order, each in its own transaction, and recorded in `schema_migrations`.

use sqlx::{AnyPool, Row};

use super::Backend;

struct Migration {
    version: i64,
    name: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "core",
        sqlite: include_str!("../../schema/sqlite/0001_core.sql"),
        postgres: include_str!("../../schema/postgres/0001_core.sql"),
    },
    Migration {
        version: 2,
        name: "connections",
        sqlite: include_str!("../../schema/sqlite/0002_connections.sql"),
        postgres: include_str!("../../schema/postgres/0002_connections.sql"),
    },
    Migration {
        version: 3,
        name: "media",
        sqlite: include_str!("../../schema/sqlite/0003_media.sql"),
        postgres: include_str!("../../schema/postgres/0003_media.sql"),
    },
    Migration {
        version: 4,
        name: "sender_index",
        sqlite: include_str!("../../schema/sqlite/0004_sender_index.sql"),
        postgres: include_str!("../../schema/postgres/0004_sender_index.sql"),
    },
    Migration {
        version: 5,
        name: "appservice",
        sqlite: include_str!("../../schema/sqlite/0005_appservice.sql"),
        postgres: include_str!("../../schema/postgres/0005_appservice.sql"),
    },
    Migration {
        version: 6,
        name: "push",
        sqlite: include_str!("../../schema/sqlite/0006_push.sql"),
        postgres: include_str!("../../schema/postgres/0006_push.sql"),
    },
    Migration {
        version: 7,
        name: "e2ee",
        sqlite: include_str!("../../schema/sqlite/0007_e2ee.sql"),
        postgres: include_str!("../../schema/postgres/0007_e2ee.sql"),
    },
    Migration {
        version: 8,
        name: "federation",
        sqlite: include_str!("../../schema/sqlite/0008_federation.sql"),
        postgres: include_str!("../../schema/postgres/0008_federation.sql"),
    },
    Migration {
        version: 9,
        name: "push_actions_key",
        sqlite: include_str!("../../schema/sqlite/0009_push_actions_key.sql"),
        postgres: include_str!("../../schema/postgres/0009_push_actions_key.sql"),
    },
    Migration {
        version: 10,
        name: "remote_invites",
        sqlite: include_str!("../../schema/sqlite/0010_remote_invites.sql"),
        postgres: include_str!("../../schema/postgres/0010_remote_invites.sql"),
    },
    Migration {
        version: 11,
        name: "outliers",
        sqlite: include_str!("../../schema/sqlite/0011_outliers.sql"),
        postgres: include_str!("../../schema/postgres/0011_outliers.sql"),
    },
    Migration {
        version: 12,
        name: "e2ee_federation",
        sqlite: include_str!("../../schema/sqlite/0012_e2ee_federation.sql"),
        postgres: include_str!("../../schema/postgres/0012_e2ee_federation.sql"),
    },
    Migration {
        version: 13,
        name: "push_shared",
        sqlite: include_str!("../../schema/sqlite/0013_push_shared.sql"),
        postgres: include_str!("../../schema/postgres/0013_push_shared.sql"),
    },
    Migration {
        version: 14,
        name: "conversations",
        sqlite: include_str!("../../schema/sqlite/0014_conversations.sql"),
        postgres: include_str!("../../schema/postgres/0014_conversations.sql"),
    },
    Migration {
        version: 15,
        name: "backfill",
        sqlite: include_str!("../../schema/sqlite/0015_backfill.sql"),
        postgres: include_str!("../../schema/postgres/0015_backfill.sql"),
    },
    Migration {
        version: 16,
        name: "push_shared_stream_key",
        sqlite: include_str!("../../schema/sqlite/0016_push_shared_stream_key.sql"),
        postgres: include_str!("../../schema/postgres/0016_push_shared_stream_key.sql"),
    },
    Migration {
        version: 18,
        name: "pending_redactions",
        sqlite: include_str!("../../schema/sqlite/0018_pending_redactions.sql"),
        postgres: include_str!("../../schema/postgres/0018_pending_redactions.sql"),
    },
    Migration {
        version: 19,
        name: "relations",
        sqlite: include_str!("../../schema/sqlite/0019_relations.sql"),
        postgres: include_str!("../../schema/postgres/0019_relations.sql"),
    },
    Migration {
        version: 20,
        name: "search",
        sqlite: include_str!("../../schema/sqlite/0020_search.sql"),
        postgres: include_str!("../../schema/postgres/0020_search.sql"),
    },
    Migration {
        version: 21,
        name: "reports",
        sqlite: include_str!("../../schema/sqlite/0021_reports.sql"),
        postgres: include_str!("../../schema/postgres/0021_reports.sql"),
    },
    Migration {
        version: 22,
        name: "search_position",
        sqlite: include_str!("../../schema/sqlite/0022_search_position.sql"),
        postgres: include_str!("../../schema/postgres/0022_search_position.sql"),
    },
];

pub async fn run(pool: &AnyPool, backend: Backend) -> Result<(), sqlx::Error> {
    run_upto(pool, backend, i64::MAX).await
}

/// Applies the migrations up to version `last`; tests of a migration start
/// from the schema before it.
pub(crate) async fn run_upto(pool: &AnyPool, backend: Backend, last: i64) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version BIGINT PRIMARY KEY,
            name TEXT NOT NULL,
            applied_ts BIGINT NOT NULL
        )",
    )
    .execute(pool)
    .await?;

    let applied: Vec<i64> = sqlx::query("SELECT version FROM schema_migrations")
        .fetch_all(pool)
        .await?
        .iter()
        .map(|row| row.get::<i64, _>(0))
        .collect();

    for migration in MIGRATIONS.iter().filter(|m| m.version <= last) {
        if applied.contains(&migration.version) {
            continue;
        }
        let sql = match backend {
            Backend::Sqlite => migration.sqlite,
            Backend::Postgres => migration.postgres,
        };
        let mut tx = pool.begin().await?;
        sqlx::raw_sql(sql).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO schema_migrations (version, name, applied_ts) VALUES ($1, $2, $3)")
            .bind(migration.version)
            .bind(migration.name)
            .bind(super::now_ms())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(version = migration.version, name = migration.name, "applied migration");
    }
    Ok(())
}
