//! PostgreSQL as the store (`[store] backend = "postgres"`): one database shared by any number of gateway replicas, so every replica serves the same data.
//!
//! The store's traits are blocking (the gateway calls them off its async workers); the
//! client is tokio-postgres with a deadpool connection pool, run on a small runtime of the
//! store's own. A call enters that runtime's context and waits for its future on the
//! calling thread (never `block_on` of the gateway's runtime), so it is safe from a
//! blocking thread and from an async worker alike: the sockets are driven by the store's
//! threads. Every call has a time limit, so a database that stops answering fails calls
//! instead of hanging them.
//!
//! Files: [`connect`] (URL, TLS, pool), [`migrations`] (the schema), [`grants`] (a dashboard
//! role's read access), [`partitions`] (monthly partitions and retention), [`write`] (a batch
//! in one transaction), [`rollups`] (windows journalled, folded and queried), [`reads`], [`neighbours`]
//! (late readings' neighbours, a stretch at a time), [`dead_letters`], [`frame_counters`],
//! [`outbox`].

mod citizens;
mod connect;
mod dead_letters;
mod frame_counters;
mod grants;
mod migrations;
mod neighbours;
mod outbox;
mod partitions;
mod reads;
mod rollups;
mod write;

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake};
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::{Object, Pool};

use crate::aggregates::{Interval, Scope, Window};
use crate::citizens::CitizenSensor;
use crate::config::StoreSettings;
use crate::model::{DeviceId, Quantity, Reading};
use crate::quality::{Neighbours, SeriesLookup};
use crate::sources::lorawan::FrameCounter;
use crate::store::batch::WriteBatch;
use crate::store::boundary::{
    AdminStore, BackupError, CitizenStore, CommitStore, ReadStore, Removed, Snapshot, StoreError, StoreHealth,
};
use crate::store::dead_letter::{DeadLetter, ReplayOutcome};

/// Longest one store call may take, waiting for a connection included.
const CALL_LIMIT: Duration = Duration::from_secs(30);

/// Longest the fold of pending windows may delay dropping the store.
const FOLD_AT_DROP: Duration = Duration::from_secs(3);

/// How often partitions are created ahead and old ones dropped.
const MAINTAIN_EVERY: Duration = Duration::from_secs(3600);

/// The PostgreSQL store. Cheap to share in an `Arc`; its calls block.
pub struct PostgresStore {
    /// Runs the connections; `None` only while dropping.
    runtime: Option<tokio::runtime::Runtime>,
    pool: Pool,
    partitions: Arc<partitions::Partitions>,
    /// The first of a run of failed writes, and the latest error (see [`StoreHealth`]).
    health: Mutex<Option<(DateTime<Utc>, String)>>,
    /// Stretches of series read for late readings' neighbours since the last commit.
    spans: neighbours::Spans,
    /// Whether writes journal the rollup windows and the fold runs (always, but for
    /// measuring their cost).
    rollups: Arc<AtomicBool>,
}

fn db(e: tokio_postgres::Error) -> StoreError {
    StoreError::Database(connect::describe(&e))
}

impl PostgresStore {
    /// Connect, migrate the schema (waiting for another gateway doing the same), create the
    /// partitions ahead and start their upkeep. The error says why, without the password.
    pub fn open(settings: &StoreSettings) -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("messnetz-pg")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the PostgreSQL client's threads: {e}"))?;
        let pool = {
            let _entered = runtime.enter();
            connect::pool(settings)?
        };
        let store = Self {
            runtime: Some(runtime),
            pool,
            partitions: Default::default(),
            health: Mutex::new(None),
            spans: Default::default(),
            rollups: Arc::new(AtomicBool::new(true)),
        };
        let retention_days = settings.retention_days;
        store.block(async {
            let mut client = store.pool.get().await.map_err(|e| connect::pool_error(&e))?;
            migrations::run(&mut client).await?;
            if let Some(role) = &settings.dashboard_role {
                grants::grant(&client, role).await?;
            }
            store.partitions.maintain(&mut client, retention_days).await.map_err(|e| connect::describe(&e))?;
            // Windows another gateway left pending (it stopped before its next fold).
            if let Err(e) = rollups::fold(&mut client).await {
                tracing::warn!(error = %e, "folding pending rollup windows at start failed; the next fold tries again");
            }
            Ok::<_, String>(())
        })??;
        let (pool, enabled) = (store.pool.clone(), store.rollups.clone());
        let every = Duration::from_millis(settings.window_flush_ms.max(1));
        store.runtime().spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                if !enabled.load(Ordering::Relaxed) {
                    continue;
                }
                let folded = match pool.get().await {
                    Ok(mut client) => rollups::fold(&mut client).await,
                    Err(e) => Err(StoreError::Database(connect::pool_error(&e))),
                };
                if let Err(e) = folded {
                    tracing::warn!(error = %e, "folding pending rollup windows failed; answers still merge them, the next fold tries again");
                }
            }
        });
        let (pool, partitions) = (store.pool.clone(), store.partitions.clone());
        store.runtime().spawn(async move {
            let mut tick = tokio::time::interval(MAINTAIN_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                let done = match pool.get().await {
                    Ok(mut client) => partitions.maintain(&mut client, retention_days).await.map_err(|e| connect::describe(&e)),
                    Err(e) => Err(connect::pool_error(&e)),
                };
                match done {
                    Ok(dropped) if !dropped.is_empty() => {
                        tracing::info!(?dropped, "readings partitions past the retention dropped")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "readings partition upkeep failed; trying again in an hour"),
                }
            }
        });
        Ok(store)
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().unwrap_or_else(|| unreachable!("the runtime is taken only by drop"))
    }

    /// Wait for `f` on this thread, within the store's runtime context and the time limit.
    ///
    /// Called on a worker of the gateway's (multi-threaded) runtime, the worker first hands
    /// its other tasks to another thread (`block_in_place`): a worker's own scheduler defers
    /// some wake-ups (tokio's cooperative budget) until the worker is back in its loop, which
    /// a worker waiting here would never be. The budget is also switched off for `f`.
    fn block<T>(&self, f: impl Future<Output = T>) -> Result<T, String> {
        let run = || {
            let _entered = self.runtime().enter();
            block_on(tokio::task::unconstrained(async { tokio::time::timeout(CALL_LIMIT, f).await }))
        };
        let on_worker =
            tokio::runtime::Handle::try_current().is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let result = if on_worker { tokio::task::block_in_place(run) } else { run() };
        result.map_err(|_| format!("PostgreSQL did not answer within {} s", CALL_LIMIT.as_secs()))
    }

    /// Run `f` with a connection from the pool.
    fn with_client<T, Fut>(&self, f: impl FnOnce(Object) -> Fut) -> Result<T, StoreError>
    where
        Fut: Future<Output = Result<T, StoreError>>,
    {
        self.block(async {
            let client = self.pool.get().await.map_err(|e| StoreError::Database(connect::pool_error(&e)))?;
            f(client).await
        })
        .map_err(StoreError::Database)?
    }

    /// [`Self::with_client`] for a write: its outcome is the store's health.
    fn with_write<T, Fut>(&self, f: impl FnOnce(Object) -> Fut) -> Result<T, StoreError>
    where
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let result = self.with_client(f);
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        match &result {
            Ok(_) => {
                if let Some((since, _)) = health.take() {
                    tracing::info!(failing_since = %since, "PostgreSQL takes writes again");
                }
            }
            // The batch's own problem (another gateway was first, a record that cannot be
            // encoded), not the database's.
            Err(StoreError::FrameCounterMoved { .. } | StoreError::Corrupt(_)) => {}
            Err(e) => match health.as_mut() {
                Some(failure) => failure.1 = e.to_string(),
                None => *health = Some((Utc::now(), e.to_string())),
            },
        }
        result
    }

    /// Switch the upkeep of rollup windows off (or on again), to measure what it costs
    /// ingest: off, writes journal no windows and this store's fold does not run; windows
    /// are then wrong for what is written meanwhile. Benchmarks only.
    pub fn set_rollups_enabled(&self, on: bool) {
        self.rollups.store(on, Ordering::Relaxed);
    }

    /// Fold the pending rollup windows into the stored ones now (what the store does every
    /// `store.window_flush_ms`); returns how many pending rows were folded. For tests and
    /// tools: answers merge pending windows, so they never need it.
    pub fn fold_windows(&self) -> Result<usize, StoreError> {
        self.with_client(|mut client| async move { rollups::fold(&mut client).await })
    }

    /// Pending rollup rows not folded yet (all gateways'): for tests and tools.
    pub fn count_pending_windows(&self) -> Result<u64, StoreError> {
        self.with_client(|client| async move {
            Ok(client.query_one("SELECT count(*) FROM rollup_pending", &[]).await.map_err(db)?.get::<_, i64>(0) as u64)
        })
    }

    /// Readings stored (all devices): for tests and tools.
    pub fn count_readings(&self) -> Result<u64, StoreError> {
        self.with_client(|client| async move {
            Ok(client.query_one("SELECT count(*) FROM readings", &[]).await.map_err(db)?.get::<_, i64>(0) as u64)
        })
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        // This gateway's windows folded before it goes (best effort: another gateway's fold,
        // or this one's next start, folds what is left).
        if self.rollups.load(Ordering::Relaxed) {
            let pool = self.pool.clone();
            let _ = self.block(async move {
                let fold = async {
                    let mut client = pool.get().await.ok()?;
                    rollups::fold(&mut client).await.ok()
                };
                tokio::time::timeout(FOLD_AT_DROP, fold).await
            });
        }
        // Dropping a runtime waits for its threads, which an async context forbids.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Forgets the neighbour spans when dropped: at the end of a call that may have committed
/// readings (whether it says so or not: a lost answer to a commit may hide one).
struct ForgetSpans<'a>(&'a neighbours::Spans);

impl Drop for ForgetSpans<'_> {
    fn drop(&mut self) {
        self.0.forget();
    }
}

/// Poll a future to completion on this thread, parking between wake-ups.
fn block_on<F: Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let mut f = std::pin::pin!(f);
    let waker = Arc::new(Unpark(std::thread::current())).into();
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(out) = f.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

impl CommitStore for PostgresStore {
    /// Write the batch in one transaction: when this returns `Ok`, PostgreSQL has committed it.
    fn write(&self, batch: &WriteBatch) -> Result<Vec<u64>, StoreError> {
        let months: BTreeSet<partitions::Month> = batch.readings.iter().map(|r| partitions::month_of(r.time)).collect();
        let _forget = ForgetSpans(&self.spans);
        self.with_write(|mut client| async move {
            self.partitions.ensure(&mut client, &months).await.map_err(db)?;
            let tx = client.transaction().await.map_err(db)?;
            let written = write::write_in_with(&tx, batch, self.rollups.load(Ordering::Relaxed)).await;
            let ids = match written {
                Ok(ids) => ids,
                Err(e) => {
                    if matches!(&e, StoreError::Database(text) if text.contains("no partition of relation")) {
                        // Another gateway dropped a partition this one still knew.
                        self.partitions.forget();
                    }
                    return Err(e);
                }
            };
            tx.commit().await.map_err(db)?;
            Ok(ids)
        })
    }

    fn commit_replay(&self, id: u64, batch: WriteBatch) -> Result<ReplayOutcome, StoreError> {
        let months: BTreeSet<partitions::Month> = batch.readings.iter().map(|r| partitions::month_of(r.time)).collect();
        if !months.is_empty() {
            self.with_client(|mut client| async move { self.partitions.ensure(&mut client, &months).await.map_err(db) })?;
        }
        let _forget = ForgetSpans(&self.spans);
        self.replay_in_one(id, batch)
    }

    fn frame_counter(&self, dev_addr: u32) -> Result<Option<FrameCounter>, StoreError> {
        self.with_client(|client| async move { frame_counters::read(&client, dev_addr).await })
    }
}

impl ReadStore for PostgresStore {
    fn health(&self) -> StoreHealth {
        let failure = self.health.lock().unwrap_or_else(|p| p.into_inner()).clone();
        StoreHealth {
            writable: failure.is_none(),
            error: failure.as_ref().map(|f| f.1.clone()),
            since: failure.map(|f| f.0),
            reopens: 0,
        }
    }

    fn latest(&self, device: &DeviceId) -> Result<Vec<Reading>, StoreError> {
        self.with_client(|client| async move { reads::latest(&client, device).await })
    }

    fn readings(
        &self,
        device: &DeviceId,
        quantity: Quantity,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Reading>, StoreError> {
        self.with_client(|client| async move { reads::range(&client, device, quantity, from, to, limit).await })
    }

    fn readings_newest_first(
        &self,
        device: &DeviceId,
        quantity: Quantity,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Reading>, StoreError> {
        self.with_client(|client| async move { reads::range_newest_first(&client, device, quantity, from, to, limit).await })
    }

    fn last_seen(&self, device: &DeviceId) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.with_client(|client| async move { reads::last_seen(&client, device).await })
    }

    fn dead_letter(&self, id: u64) -> Result<Option<DeadLetter>, StoreError> {
        self.with_client(|client| async move { dead_letters::one(&client, id).await })
    }

    fn dead_letters_matching(
        &self,
        after: u64,
        limit: usize,
        max_scan: usize,
        keep: &mut dyn FnMut(&DeadLetter) -> bool,
    ) -> Result<(Vec<DeadLetter>, Option<u64>), StoreError> {
        self.with_client(|client| async move { dead_letters::matching(&client, after, limit, max_scan, keep).await })
    }

    fn rollups(
        &self,
        scope: &Scope,
        quantity: Quantity,
        interval: Interval,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<(DateTime<Utc>, Window)>, StoreError> {
        self.with_client(|client| async move { rollups::query(&client, scope, quantity, interval, from, to).await })
    }

    fn extent(&self, scope: &Scope, quantity: Quantity) -> Result<Option<crate::store::boundary::Extent>, StoreError> {
        self.with_client(|client| async move { rollups::extent(&client, scope, quantity).await })
    }

    /// Windows journalled but not folded yet are merged into every answer: none wait.
    fn pending_windows(&self) -> usize {
        0
    }
}

impl SeriesLookup for PostgresStore {
    fn latest(&self, device: &DeviceId) -> Result<Vec<Reading>, String> {
        ReadStore::latest(self, device).map_err(|e| e.to_string())
    }

    fn neighbours(&self, device: &DeviceId, q: Quantity, time: i64, within: i64) -> Result<Neighbours, String> {
        self.spans
            .neighbours(device, q, time, within, || {
                self.with_client(|client| async move { neighbours::fetch(&client, device, q, time, within).await })
            })
            .map_err(|e| e.to_string())
    }

    fn free_from(&self, device: &DeviceId, from: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
        self.with_client(|client| async move { reads::free_from(&client, device, from).await }).map_err(|e| e.to_string())
    }

    fn at(&self, device: &DeviceId, time: DateTime<Utc>) -> Result<Vec<Reading>, String> {
        self.with_client(|client| async move { reads::at(&client, device, time).await }).map_err(|e| e.to_string())
    }
}

impl CitizenStore for PostgresStore {
    fn citizen_sensors(&self) -> Result<Vec<CitizenSensor>, StoreError> {
        self.with_client(|client| async move { citizens::all(&client).await })
    }

    fn citizen_sensor(&self, id: &DeviceId) -> Result<Option<CitizenSensor>, StoreError> {
        self.with_client(|client| async move { citizens::one(&client, id).await })
    }

    fn put_citizen_sensor(&self, sensor: &CitizenSensor) -> Result<(), StoreError> {
        self.with_write(|client| async move { citizens::put(&client, sensor).await })
    }

    fn remove_citizen_sensor(&self, id: &DeviceId) -> Result<Option<Removed>, StoreError> {
        let _forget = ForgetSpans(&self.spans);
        self.with_write(|mut client| async move {
            let tx = client.transaction().await.map_err(db)?;
            let removed = citizens::remove(&tx, id).await?;
            tx.commit().await.map_err(db)?;
            Ok(removed)
        })
    }
}

impl AdminStore for PostgresStore {
    fn delete_dead_letters(&self, ids: &[u64]) -> Result<Vec<u64>, StoreError> {
        let ids: Vec<i64> = ids.iter().filter_map(|&id| i64::try_from(id).ok()).collect();
        self.with_write(|client| async move {
            let rows = client.query("DELETE FROM dead_letters WHERE id = ANY($1) RETURNING id", &[&ids]).await.map_err(db)?;
            let mut deleted: Vec<u64> = rows.iter().map(|row| row.get::<_, i64>(0) as u64).collect();
            deleted.sort_unstable();
            Ok(deleted)
        })
    }

    /// A shared database is backed up with PostgreSQL's own tools (docs/postgres.md).
    fn backup_to(&self, _dest: &std::path::Path) -> Result<Snapshot, BackupError> {
        Err(BackupError::Unsupported(
            "with store.backend = \"postgres\" the data is in PostgreSQL: back it up with pg_dump (docs/postgres.md)".into(),
        ))
    }
}
