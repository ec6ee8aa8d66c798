//! The full-text index follows the event stream. Events are indexed in
//! batches after they commit, so the write that stores an event does no
//! text indexing. `/search` calls [`SearchIndex::catch_up`] before it
//! queries, so results include every event committed before the search.

use std::{sync::Arc, time::Duration};

use tokio::sync::{Mutex, watch};

use crate::{
    Services,
    error::Result,
    storage::{self, Db, writer::Stream},
};

/// Stream positions indexed per write job.
const BATCH: i64 = 1_000;
/// How often the background task indexes what has committed since.
const INTERVAL: Duration = Duration::from_millis(500);

/// The indexer's handle: one catch-up runs at a time.
pub struct SearchIndex {
    db: Db,
    /// The indexed position, once read from the database.
    position: Mutex<Option<i64>>,
}

impl SearchIndex {
    pub fn new(db: Db) -> Self {
        Self { db, position: Mutex::new(None) }
    }

    /// Indexes every event that has committed so far.
    pub async fn catch_up(&self) -> Result<()> {
        let target = self.db.writer.positions().current(Stream::Events);
        let mut position = self.position.lock().await;
        let mut indexed = match *position {
            Some(indexed) => indexed,
            None => storage::search::indexed_position(&self.db.pool).await?,
        };
        while indexed < target {
            // Stretches without events, such as the positions a rejoined room
            // reserves for its history gap, are passed in one step.
            let next = storage::search::next_position(&self.db.pool, indexed).await?.unwrap_or(target);
            let upto = target.min((next - 1).max(indexed) + BATCH);
            indexed = self
                .db
                .writer
                .write(move |txn| Box::pin(async move { Ok(storage::search::index_range(&mut txn.conn, upto).await?) }))
                .await?;
            *position = Some(indexed);
        }
        *position = Some(indexed);
        Ok(())
    }
}

/// Starts the task that keeps the index close behind the event stream. It
/// ends when `stop` turns true.
pub fn spawn(services: Arc<Services>, mut stop: watch::Receiver<bool>) {
    tokio::spawn(async move {
        loop {
            if let Err(err) = services.search_index.catch_up().await {
                tracing::warn!(error = %err, "failed to update the search index; retrying in 500 ms");
            }
            tokio::select! {
                _ = tokio::time::sleep(INTERVAL) => {}
                _ = stop.changed() => break,
            }
        }
    });
}
