//! Pruning of stored push actions: a periodic task deletes the actions older
//! than `push.action_retention_secs`, and in each room those that every local
//! member has read (an unthreaded read receipt or a message of their own at or
//! after them), which no count, push or email can need again.

use std::{sync::Arc, time::Duration};

use tokio::sync::watch;

use crate::{Services, error::Result, storage};

/// Starts the task. It ends when `stop` turns true.
pub fn spawn(services: Arc<Services>, mut stop: watch::Receiver<bool>) {
    if !services.config.push.enabled {
        return;
    }
    let interval = Duration::from_secs(services.config.push.prune_interval_secs.max(1));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.changed() => break,
            }
            match prune(&services).await {
                Ok(0) => {}
                Ok(rows) => tracing::info!(rows, "pruned push actions"),
                Err(err) => tracing::warn!(error = %err, "could not prune push actions; trying again later"),
            }
        }
    });
}

/// Deletes the push actions that are too old or read by every local member;
/// returns the number of rows deleted.
pub async fn prune(services: &Services) -> Result<u64> {
    let retention_ms = (services.config.push.action_retention_secs as i64).saturating_mul(1000);
    let before = storage::now_ms().saturating_sub(retention_ms);
    let mut deleted = services
        .db
        .writer
        .write(move |txn| {
            Box::pin(async move {
                txn.insert_push_outcomes().await?;
                Ok(storage::push::prune_older_than(&mut txn.conn, before).await?)
            })
        })
        .await?;

    let suffix = format!(":{}", services.server_name);
    for room_id in storage::push::rooms_with_actions(&services.db.pool).await? {
        let positions = storage::push::room_read_positions(&services.db.pool, &room_id).await?;
        // Only local members have push actions; a room without any keeps its rows
        // until they age out.
        let Some(upto) = positions.iter().filter(|(user, _)| user.ends_with(&suffix)).map(|(_, read)| *read).min()
        else {
            continue;
        };
        if upto <= 0 {
            continue;
        }
        deleted += services
            .db
            .writer
            .write(move |txn| {
                Box::pin(async move {
                    txn.insert_push_outcomes().await?;
                    Ok(storage::push::prune_room_upto(&mut txn.conn, &room_id, upto).await?)
                })
            })
            .await?;
    }
    Ok(deleted)
}
