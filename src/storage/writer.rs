//! Group commit. Every write of the server runs as a job on one connection; the
//! writer takes all jobs that are waiting, runs each inside its own savepoint and
//! commits them in one transaction, so that one fsync covers many writes. A job
//! that fails rolls back to its savepoint and leaves the others untouched.
//!
//! Stream positions (event order, receipts, account data, presence, to-device
//! messages, device lists) are handed
//! out inside jobs, so their order is the commit order, and become visible to
//! readers only once the transaction that wrote them has committed.

use std::sync::{
    Arc,
    atomic::{AtomicI64, Ordering},
};

use futures::future::BoxFuture;
use sqlx::{AnyConnection, Connection, Executor, Row, any::AnyConnectOptions};
use tokio::sync::{mpsc, oneshot};

use super::{
    Backend,
    push::{self, PendingOutcomes},
};
use crate::error::{Error, Result};

/// Maximum number of jobs committed in one transaction.
const MAX_BATCH: usize = 256;

/// The streams whose positions the writer hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Events,
    Receipts,
    AccountData,
    Presence,
    StateGroups,
    ToDevice,
    DeviceLists,
}

const STREAM_COUNT: usize = 7;

/// Allocated and committed positions of every stream.
#[derive(Debug, Default)]
pub struct StreamPositions {
    allocated: [AtomicI64; STREAM_COUNT],
    committed: [AtomicI64; STREAM_COUNT],
}

impl StreamPositions {
    /// The highest position whose write has committed.
    pub fn current(&self, stream: Stream) -> i64 {
        self.committed[stream as usize].load(Ordering::Acquire)
    }

    /// Takes a position outside a write job, for ids whose order need not
    /// follow commit order (state groups, which events reference before they commit).
    pub fn reserve(&self, stream: Stream) -> i64 {
        self.allocate(stream)
    }

    fn allocate(&self, stream: Stream) -> i64 {
        self.allocate_many(stream, 1)
    }

    fn allocate_many(&self, stream: Stream, count: i64) -> i64 {
        self.allocated[stream as usize].fetch_add(count, Ordering::AcqRel) + count
    }

    fn publish(&self) {
        for i in 0..STREAM_COUNT {
            let value = self.allocated[i].load(Ordering::Acquire);
            self.committed[i].store(value, Ordering::Release);
        }
    }

    fn init(&self, stream: Stream, value: i64) {
        self.allocated[stream as usize].store(value, Ordering::Release);
        self.committed[stream as usize].store(value, Ordering::Release);
    }
}

/// The open transaction that a job writes into.
pub struct WriteTxn {
    pub conn: AnyConnection,
    positions: Arc<StreamPositions>,
    /// Push rule outcomes of the batch's events, inserted before it commits.
    pub push_outcomes: PendingOutcomes,
}

impl WriteTxn {
    /// Takes the next position of `stream`; it becomes readable when this batch commits.
    pub fn next_position(&self, stream: Stream) -> i64 {
        self.positions.allocate(stream)
    }

    /// Takes the next `count` positions of `stream` at once and returns the last of them.
    pub fn next_positions(&self, stream: Stream, count: i64) -> i64 {
        self.positions.allocate_many(stream, count)
    }

    /// Inserts the queued push rule outcomes now. A job calls it before it
    /// changes push actions that earlier jobs of the same batch may have queued.
    pub async fn insert_push_outcomes(&mut self) -> Result<(), sqlx::Error> {
        push::insert_pending(&mut self.conn, &mut self.push_outcomes).await
    }
}

type Finisher = Box<dyn FnOnce(Result<()>) + Send>;
type Job = Box<dyn for<'c> FnOnce(&'c mut WriteTxn) -> BoxFuture<'c, (bool, Finisher)> + Send>;

enum Command {
    Run(Job),
    Close(oneshot::Sender<()>),
}

/// Handle to the writer task.
#[derive(Clone)]
pub struct Writer {
    sender: mpsc::Sender<Command>,
    positions: Arc<StreamPositions>,
}

impl Writer {
    pub(super) async fn start(options: &AnyConnectOptions, backend: Backend) -> Result<Self, sqlx::Error> {
        let mut conn = AnyConnection::connect_with(options).await?;
        if backend == Backend::Sqlite {
            conn.execute(super::sqlite_pragmas()).await?;
        }
        let positions = Arc::new(StreamPositions::default());
        for (stream, sql) in [
            (Stream::Events, "SELECT COALESCE(MAX(stream_ordering), 0) FROM events"),
            (Stream::Receipts, "SELECT COALESCE(MAX(stream_id), 0) FROM receipts"),
            (Stream::AccountData, "SELECT COALESCE(MAX(stream_id), 0) FROM account_data"),
            (Stream::Presence, "SELECT COALESCE(MAX(stream_id), 0) FROM presence"),
            (Stream::StateGroups, "SELECT COALESCE(MAX(id), 0) FROM state_groups"),
            (Stream::ToDevice, "SELECT COALESCE(MAX(stream_id), 0) FROM to_device_messages"),
            (Stream::DeviceLists, "SELECT COALESCE(MAX(stream_id), 0) FROM device_list_changes"),
        ] {
            let value: i64 = sqlx::query(sql).fetch_one(&mut conn).await?.get(0);
            positions.init(stream, value);
        }

        let (sender, receiver) = mpsc::channel(4096);
        let txn = WriteTxn { conn, positions: positions.clone(), push_outcomes: PendingOutcomes::default() };
        tokio::spawn(run(txn, receiver, backend));
        Ok(Self { sender, positions })
    }

    pub fn positions(&self) -> &StreamPositions {
        &self.positions
    }

    /// Runs `job` inside the next group commit and returns its result once the
    /// commit is durable. An error from `job` rolls back only its own writes.
    pub async fn write<T, F>(&self, job: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut WriteTxn) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        self.submit(job).await?.await
    }

    /// Queues `job` and returns at once with a future of its result. Jobs run in
    /// the order they were queued, so a caller may queue a job that depends on an
    /// earlier one before that one has committed.
    pub async fn submit<T, F>(&self, job: F) -> Result<impl Future<Output = Result<T>> + use<T, F>>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut WriteTxn) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        let (done_tx, done_rx) = oneshot::channel::<Result<T>>();
        let job: Job = Box::new(move |txn| {
            Box::pin(async move {
                let outcome = job(txn).await;
                let ok = outcome.is_ok();
                let finisher: Finisher = Box::new(move |commit: Result<()>| {
                    let _ = done_tx.send(commit.and(outcome));
                });
                (ok, finisher)
            })
        });
        self.sender
            .send(Command::Run(job))
            .await
            .map_err(|_| Error::internal("writing to the database", "the writer has stopped"))?;
        Ok(
            async move {
                done_rx.await.map_err(|_| Error::internal("writing to the database", "the writer dropped a job"))?
            },
        )
    }

    /// Commits what is queued and stops the writer.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.sender.send(Command::Close(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

async fn run(mut txn: WriteTxn, mut receiver: mpsc::Receiver<Command>, backend: Backend) {
    let begin = match backend {
        Backend::Sqlite => "BEGIN IMMEDIATE",
        Backend::Postgres => "BEGIN",
    };
    let mut closing: Option<oneshot::Sender<()>> = None;
    while closing.is_none() {
        let Some(first) = receiver.recv().await else {
            break;
        };
        let mut jobs = Vec::new();
        match first {
            Command::Run(job) => jobs.push(job),
            Command::Close(done) => closing = Some(done),
        }
        while jobs.len() < MAX_BATCH && closing.is_none() {
            match receiver.try_recv() {
                Ok(Command::Run(job)) => jobs.push(job),
                Ok(Command::Close(done)) => closing = Some(done),
                Err(_) => break,
            }
        }
        if jobs.is_empty() {
            continue;
        }
        commit_batch(&mut txn, jobs, begin, backend == Backend::Postgres).await;
    }
    let _ = txn.conn.close().await;
    if let Some(done) = closing {
        let _ = done.send(());
    }
}

async fn commit_batch(txn: &mut WriteTxn, jobs: Vec<Job>, begin: &'static str, release_savepoints: bool) {
    let mut finishers = Vec::with_capacity(jobs.len());
    if let Err(err) = txn.conn.execute(begin).await {
        tracing::error!(error = %err, "could not begin a write transaction");
        // The jobs never ran, so they report the failure without a finisher.
        drop(jobs);
        return;
    }
    if jobs.len() == 1 {
        // A job alone needs no savepoint: the transaction itself isolates it.
        let job = jobs.into_iter().next().expect("one job");
        let (ok, finisher) = job(txn).await;
        if !ok {
            if let Err(err) = txn.conn.execute("ROLLBACK").await {
                tracing::error!(error = %err, "could not roll back a failed write");
            }
            txn.push_outcomes.clear();
            txn.positions.publish();
            finisher(Ok(()));
            return;
        }
        finishers.push(finisher);
    } else {
        for job in jobs {
            if let Err(err) = txn.conn.execute("SAVEPOINT job").await {
                tracing::error!(error = %err, "could not open a savepoint");
            }
            let before_job = txn.push_outcomes.mark();
            let (ok, finisher) = job(txn).await;
            if !ok {
                if let Err(err) = txn.conn.execute("ROLLBACK TO SAVEPOINT job").await {
                    tracing::error!(error = %err, "could not roll back a savepoint");
                }
                txn.push_outcomes.undo_to(before_job);
            }
            // SQLite keeps the savepoints of a batch open until COMMIT releases them
            // all, which saves a statement per job. PostgreSQL releases each one,
            // because many open subtransactions slow down its readers.
            if release_savepoints {
                if let Err(err) = txn.conn.execute("RELEASE SAVEPOINT job").await {
                    tracing::error!(error = %err, "could not release a savepoint");
                }
            }
            finishers.push(finisher);
        }
    }
    // The push rule outcomes of all jobs go in together; if that fails, the
    // whole batch fails, so that no event commits without its outcome.
    let committed = match txn.insert_push_outcomes().await {
        Ok(()) => txn.conn.execute("COMMIT").await.map(|_| ()),
        Err(err) => Err(err),
    };
    txn.push_outcomes.clear();
    match committed {
        Ok(_) => {
            txn.positions.publish();
            for finisher in finishers {
                finisher(Ok(()));
            }
        }
        Err(err) => {
            tracing::error!(error = %err, jobs = finishers.len(), "group commit failed");
            let _ = txn.conn.execute("ROLLBACK").await;
            // Positions handed out in this batch stay unused gaps.
            txn.positions.publish();
            let error = Error::internal("committing to the database", err);
            for finisher in finishers {
                finisher(Err(error.clone()));
            }
        }
    }
}
