//! Device and district rollup windows: journalled per batch in `rollup_pending` by the transaction that stores the readings, folded into the `rollups` table by the replicas, merged into every answer meanwhile.
//!
//! Why stored, not computed from the readings at query time: a district's year of day
//! windows covers every reading of its devices in that year (tens of millions at a
//! 10-minute cadence for a city), far beyond what one API answer may take; a stored window
//! is one index row.
//!
//! Why journalled, not merged into `rollups` by the batch: every batch of a city's
//! gateways touches the same district windows, so merging them in the batch's transaction
//! makes the batches wait for each other's row locks and doubles the commit's work. A batch
//! instead folds its new readings' windows per scope ([`Window::add`], in the batch's
//! order) and inserts one `rollup_pending` row per district it touched and one per group of
//! devices ([`group_of`]: 64 groups, each row holding its devices' parts), one statement. Every
//! `store.window_flush_ms` a replica folds the oldest pending rows ([`fold`]): it locks them
//! with `FOR UPDATE SKIP LOCKED` (two replicas fold different rows), merges them per window
//! in id order ([`Window::merge`]), adds them to the stored rows with
//! `INSERT … ON CONFLICT DO UPDATE` (keys sorted, so two folds lock rows in one order) and
//! deletes them, in one transaction. Answers ([`query`], [`extent`]) read the stored rows
//! and the scope's pending rows (a device's: its group's rows, of which they keep its part)
//! in one statement (one snapshot: a fold committed is seen whole or not at all) and merge
//! the pending ones on top, so they are current the moment a batch committed.
//!
//! Only new readings are journalled; a reading stored again with another value or flag (a
//! corrected replay) makes its windows be recomputed from the readings ([`recompute`]).
//! That must not count a reading twice, once by the recompute and once more when its
//! pending delta is folded afterwards. The scope's advisory lock (one of [`LOCK_BUCKETS`],
//! by `hashtext(scope)`: scopes sharing one only wait for each other more) orders the two:
//! a batch holds it shared from before it inserts its pending rows until it
//! commits; a recompute takes it exclusively, then folds the scope's pending rows itself
//! (`FOR UPDATE`, waiting for a fold that holds some; for a device, every row of its group,
//! whose other devices' windows are folded early, as any fold may fold any row), then reads
//! the readings. Take a
//! batch B whose reading the recompute R's read sees: B committed before that read. B held
//! the shared lock until its commit, and R holds the exclusive one from before its fold, so
//! B committed before R had the lock, hence before R's fold: its pending row is folded (and
//! deleted) by R, or by a fold that committed before R's fold went on; either way it is in
//! the stored windows R then overwrites, and gone. A batch whose reading R does not see
//! commits after R, its pending row too, and is folded on top of R's windows: counted once.
//! A batch that recomputes inserts its own pending rows before its recompute, which folds
//! them with the others (its new readings are visible to its own reads). Locks: a batch
//! takes all its scopes' locks in one statement in bucket order (exclusive where it
//! recomputes, shared elsewhere), and folds all of a recompute's scopes' pending rows
//! before it locks any window row, so the waits never form a circle: a device's windows
//! reach the window rows only through a fold of the rows holding them, and a recompute holds
//! its scope's rows from before it locks its first window row to its commit.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Object, Transaction};
use rustc_hash::FxHashMap;

use super::db;
use crate::aggregates::{Interval, Scope, Window};
use crate::model::{QualityFlag, Quantity};
use crate::store::boundary::{millis, StoreError};

/// A window row's key: scope key (`d:…` / `z:…`), quantity, interval code, start (ms).
pub(super) type Key = (String, &'static str, i16, i64);

/// The windows of one batch's new readings, folded; sorted, so rows are locked in one order.
#[derive(Default)]
pub(super) struct Delta {
    pub windows: BTreeMap<Key, Window>,
}

/// Folds a batch's new readings into a [`Delta`], one at a time in the batch's order,
/// without allocating per reading: windows are staged under the borrowed device or
/// district name and get their scope keys once each, at the end.
#[derive(Default)]
pub(super) struct DeltaBuilder<'a> {
    /// (name, whether it is a district, quantity, interval code, start): its window.
    staged: FxHashMap<(&'a str, bool, Quantity, i16, i64), Window>,
}

impl<'a> DeltaBuilder<'a> {
    /// Room for the windows of about `readings` readings of series sent every few minutes.
    pub fn with_capacity(readings: usize) -> Self {
        Self { staged: FxHashMap::with_capacity_and_hasher(readings, Default::default()) }
    }

    /// Add one new reading to its device's windows and, for an open device, its district's.
    pub fn add(
        &mut self,
        device: &'a str,
        district: Option<&'a str>,
        quantity: Quantity,
        t_ms: i64,
        value: f64,
        flag: QualityFlag,
    ) {
        for (name, is_district) in std::iter::once((device, false)).chain(district.map(|z| (z, true))) {
            for interval in Interval::ALL.into_iter().filter(|i| kept(!is_district, *i)) {
                let k = (name, is_district, quantity, i16::from(interval.code()), interval.window_start(t_ms));
                self.staged.entry(k).or_insert(Window::EMPTY).add(value, t_ms, flag);
            }
        }
    }

    pub fn finish(self) -> Delta {
        let mut staged: Vec<_> = self.staged.into_iter().collect();
        // In the order of the finished keys without making them first: a device's key
        // ("d:…") sorts before a district's ("z:…"), then by name.
        staged.sort_unstable_by(|(a, _), (b, _)| (a.1, a.0, a.2.name(), a.3, a.4).cmp(&(b.1, b.0, b.2.name(), b.3, b.4)));
        let mut scope: Option<(&str, bool, String)> = None;
        let mut windows = Vec::with_capacity(staged.len());
        for ((name, is_district, quantity, interval, start), w) in staged {
            let key = match &scope {
                Some((n, z, key)) if *n == name && *z == is_district => key.clone(),
                _ => {
                    let key = if is_district { Scope::District(name.to_owned()) } else { Scope::Device(name.to_owned()) }.key();
                    scope = Some((name, is_district, key.clone()));
                    key
                }
            };
            windows.push(((key, quantity.name(), interval, start), w));
        }
        // Sorted already, so collecting (a stable sort, then a bulk build) takes one pass.
        Delta { windows: windows.into_iter().collect() }
    }
}

/// Whether windows of this interval are kept for a device (`device`) or district scope. A
/// device's 10-minute windows are not: a city's sensors send every 5 to 20 minutes, so such
/// a window mostly holds one reading and storing it would write every reading twice (the
/// fold's window rows outnumbered the readings). They are computed from the readings when
/// asked for ([`query`]), at most `api.max_points` windows, as many readings as
/// `/v1/readings` returns for a sensor sending every 10 minutes.
pub(super) fn kept(device: bool, interval: Interval) -> bool {
    !(device && interval == Interval::TenMinutes)
}

/// The keys of every kept window that holds a reading of `device` (and `district`) at `t_ms`.
pub(super) fn keys_of(device: &str, district: Option<&str>, quantity: Quantity, t_ms: i64, out: &mut BTreeMap<Key, ()>) {
    let scopes = std::iter::once(Scope::Device(device.to_owned())).chain(district.map(|z| Scope::District(z.to_owned())));
    for scope in scopes {
        let key = scope.key();
        let device = matches!(scope, Scope::Device(_));
        for interval in Interval::ALL.into_iter().filter(|i| kept(device, *i)) {
            out.insert((key.clone(), quantity.name(), i16::from(interval.code()), interval.window_start(t_ms)), ());
        }
    }
}

/// Version of the pending rows' encoding (their first byte): one scope's windows.
const ENCODING: u8 = 1;

/// First byte of a row holding several devices' windows ([`group_of`]): then per device
/// its scope key (length u16 first) and its windows as an [`ENCODING`] blob (length u32
/// first), little-endian.
const GROUPED: u8 = 2;

/// Groups a batch's device windows are journalled in. A batch of a city's devices made a
/// pending row per device (1,010 rows for a batch of 1,000 devices, 3.7 ms of the server's
/// time); in groups it makes at most this many, and an answer about one device reads its
/// group's rows and keeps that device's part. A district's windows keep rows of their own.
const DEVICE_GROUPS: u32 = 64;

/// The pending row key of the group a device scope's windows are journalled in (`g:<n>`),
/// `None` for a district's. FNV-1a over the scope key: the same number in every replica and
/// every version (the standard library's hasher is seeded at random, and a crate's may
/// change between its versions).
pub(super) fn group_of(scope: &str) -> Option<String> {
    if !scope.starts_with("d:") {
        return None;
    }
    let hash = scope.bytes().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    Some(format!("g:{}", hash % DEVICE_GROUPS))
}

/// The first `n` bytes of `rest`, which moves past them; `None` if it holds fewer.
fn split_off<'b>(rest: &mut &'b [u8], n: usize) -> Option<&'b [u8]> {
    let (head, tail) = (rest.get(..n)?, rest.get(n..)?);
    *rest = tail;
    Some(head)
}

/// The (scope, [`ENCODING`] blob) parts of a pending row: the row itself for a scope's own
/// row, each device's part of a group's row.
pub(super) fn parts<'b>(row_scope: &'b str, blob: &'b [u8]) -> Result<Vec<(&'b str, &'b [u8])>, StoreError> {
    if blob.first() != Some(&GROUPED) {
        return Ok(vec![(row_scope, blob)]);
    }
    let corrupt = |what: &str| StoreError::Corrupt(format!("pending rollup group {row_scope}: {what}"));
    let mut rest = &blob[1..];
    let mut out = Vec::new();
    while !rest.is_empty() {
        let mut take = |n: usize| split_off(&mut rest, n).ok_or_else(|| corrupt("cut short"));
        let len = take(2)?;
        let scope = std::str::from_utf8(take(usize::from(u16::from_le_bytes([len[0], len[1]])))?)
            .map_err(|_| corrupt("scope is not UTF-8"))?;
        let len = take(4)?;
        let part = take(u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize)?;
        out.push((scope, part));
    }
    Ok(out)
}

/// Entry forms (the high bits of an entry's first byte; the low ones are the interval code).
const FULL: u8 = 0;
/// One reading in the statistics: sum, min, max and last are its value.
const ONE: u8 = 1 << 6;
/// No reading in the statistics (only excluded ones): the other fields are [`Window::EMPTY`]'s.
const NONE: u8 = 2 << 6;

/// One scope's windows of a delta as a `rollup_pending` blob, sorted by quantity: the
/// version byte, then per quantity its name (length byte first) and number of windows
/// (u16), then per window a byte of form and interval code, the start (ms, i64), count and
/// excluded (u32), and as the form says: nothing, the one value and its time, or sum, min,
/// max, last (f64) and last time (i64); little-endian. Why a blob and not rows: a batch's
/// insert stays one small statement whatever the number of windows, and an answer merges a
/// few rows, not one per window. Why this compact: each blob is written to the WAL in the
/// batch's commit, and most of a batch's device windows hold one or two readings. A
/// district's blob is a row of its own; the devices' go into their group's row ([`GROUPED`]).
pub(super) fn encode<'a>(windows: impl Iterator<Item = (&'a &'static str, &'a i16, &'a i64, &'a Window)>) -> Vec<u8> {
    let mut by_quantity: BTreeMap<&str, Vec<(i16, i64, &Window)>> = BTreeMap::new();
    for (q, i, s, w) in windows {
        by_quantity.entry(q).or_default().push((*i, *s, w));
    }
    let mut out = vec![ENCODING];
    for (quantity, entries) in by_quantity {
        out.push(quantity.len() as u8);
        out.extend_from_slice(quantity.as_bytes());
        out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
        for (interval, start, w) in entries {
            let bits = |f: f64| f.to_bits();
            let e = Window::EMPTY;
            let form = if w.count == 0
                && (bits(w.sum), bits(w.min), bits(w.max), w.last_time) == (bits(e.sum), bits(e.min), bits(e.max), e.last_time)
                && w.last.is_nan()
            {
                NONE
            } else if w.count == 1 && bits(w.sum) == bits(w.min) && bits(w.min) == bits(w.max) && bits(w.max) == bits(w.last) {
                ONE
            } else {
                FULL
            };
            out.push(form | interval as u8);
            out.extend_from_slice(&start.to_le_bytes());
            out.extend_from_slice(&(w.count as u32).to_le_bytes());
            out.extend_from_slice(&(w.excluded as u32).to_le_bytes());
            match form {
                NONE => {}
                ONE => {
                    out.extend_from_slice(&w.last.to_le_bytes());
                    out.extend_from_slice(&w.last_time.to_le_bytes());
                }
                _ => {
                    for f in [w.sum, w.min, w.max, w.last] {
                        out.extend_from_slice(&f.to_le_bytes());
                    }
                    out.extend_from_slice(&w.last_time.to_le_bytes());
                }
            }
        }
    }
    out
}

/// The windows of a `rollup_pending` blob: (quantity, interval code, start ms, window).
pub(super) fn decode(blob: &[u8]) -> Result<Vec<(&'static str, i16, i64, Window)>, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("pending rollup windows: {what}"));
    let Some((&version, rest)) = blob.split_first() else {
        return Err(corrupt("empty"));
    };
    if version != ENCODING {
        return Err(corrupt(&format!("encoding {version}, this messnetz knows {ENCODING}")));
    }
    let mut rest = rest;
    let mut take = |n: usize| split_off(&mut rest, n).ok_or_else(|| corrupt("cut short"));
    let word = |b: &[u8]| <[u8; 8]>::try_from(b).unwrap_or_else(|_| unreachable!("8 bytes"));
    let half = |b: &[u8]| <[u8; 4]>::try_from(b).unwrap_or_else(|_| unreachable!("4 bytes"));
    let mut out = Vec::new();
    loop {
        let len = match take(1) {
            Ok(b) => usize::from(b[0]),
            Err(_) => break,
        };
        let name = std::str::from_utf8(take(len)?).map_err(|_| corrupt("quantity is not UTF-8"))?;
        let quantity = Quantity::by_name(name).ok_or_else(|| corrupt(&format!("unknown quantity {name:?}")))?.name();
        let n = take(2)?;
        for _ in 0..u16::from_le_bytes([n[0], n[1]]) {
            let head = take(17)?;
            let (form, interval) = (head[0] & 0xc0, i16::from(head[0] & 0x3f));
            let mut w = Window {
                count: u64::from(u32::from_le_bytes(half(&head[9..13]))),
                excluded: u64::from(u32::from_le_bytes(half(&head[13..17]))),
                ..Window::EMPTY
            };
            match form {
                NONE => {}
                ONE => {
                    let b = take(16)?;
                    let v = f64::from_le_bytes(word(&b[..8]));
                    (w.sum, w.min, w.max, w.last) = (v, v, v, v);
                    w.last_time = i64::from_le_bytes(word(&b[8..]));
                }
                FULL => {
                    let b = take(40)?;
                    let f = |i: usize| f64::from_le_bytes(word(&b[8 * i..8 * i + 8]));
                    (w.sum, w.min, w.max, w.last) = (f(0), f(1), f(2), f(3));
                    w.last_time = i64::from_le_bytes(word(&b[32..]));
                }
                _ => return Err(corrupt("unknown entry form")),
            }
            out.push((quantity, interval, i64::from_le_bytes(word(&head[1..9])), w));
        }
    }
    Ok(out)
}

/// Pending rows' windows merged per window, keyed by the rows' own scope text: a fold
/// allocates once per window, not once per pending entry.
#[derive(Default)]
struct Merged<'a> {
    windows: FxHashMap<(&'a str, &'static str, i16, i64), Window>,
}

impl<'a> Merged<'a> {
    /// Merge one pending row's windows (rows taken in id order).
    fn merge_blob(&mut self, row_scope: &'a str, blob: &'a [u8]) -> Result<(), StoreError> {
        let ten_minutes = i16::from(Interval::TenMinutes.code());
        for (scope, part) in parts(row_scope, blob)? {
            for (quantity, interval, start, w) in decode(part)? {
                // Pending rows journalled before migration 6 may hold a device's 10-minute windows.
                if interval == ten_minutes && scope.starts_with("d:") {
                    continue;
                }
                self.windows.entry((scope, quantity, interval, start)).or_insert(Window::EMPTY).merge(&w);
            }
        }
        Ok(())
    }

    fn into_delta(self) -> Delta {
        Delta { windows: self.windows.into_iter().map(|((s, q, i, start), w)| ((s.to_owned(), q, i, start), w)).collect() }
    }
}

impl Delta {
    /// The scopes the delta touches.
    pub fn scopes(&self) -> BTreeSet<String> {
        let mut scopes = BTreeSet::new();
        let mut last: Option<&str> = None;
        // A scope's windows are next to each other: one key each.
        for (scope, ..) in self.windows.keys() {
            if last != Some(scope.as_str()) {
                scopes.insert(scope.clone());
                last = Some(scope.as_str());
            }
        }
        scopes
    }
}

/// First key of the scopes' advisory locks ("roll" in ASCII); the second is the bucket.
pub(super) const LOCK_CLASS: i32 = 0x726f_6c6c;

/// Scopes share this many advisory locks (the low bits of `hashtext(scope)`): a batch of a
/// city's devices then holds at most this many, far below PostgreSQL's shared lock table
/// (`max_locks_per_transaction`, 64 per connection by default), whatever its number of
/// devices. A shared bucket only makes a recompute wait for, and hold up, more batches.
pub(super) const LOCK_BUCKETS: i32 = 64;

/// Take the scopes' advisory locks for the rest of the transaction: exclusive for
/// `exclusive` (recomputed), shared for the others (pending rows written); one statement,
/// in bucket order (see the module's doc).
pub(super) async fn lock(
    tx: &Transaction<'_>,
    shared: &BTreeSet<String>,
    exclusive: &BTreeSet<String>,
) -> Result<(), StoreError> {
    if shared.is_empty() && exclusive.is_empty() {
        return Ok(());
    }
    let scopes: Vec<&str> = shared.iter().chain(exclusive).map(String::as_str).collect();
    let modes: Vec<bool> = shared.iter().map(|_| false).chain(exclusive.iter().map(|_| true)).collect();
    let stmt = tx
        .prepare_cached(
            "SELECT count(CASE WHEN x THEN (SELECT 1 FROM pg_advisory_xact_lock($3, h))
                               ELSE (SELECT 1 FROM pg_advisory_xact_lock_shared($3, h)) END)
             FROM (SELECT hashtext(s) & $4 AS h, bool_or(x) AS x FROM unnest($1::text[], $2::bool[]) AS u(s, x)
                   GROUP BY 1 ORDER BY 1) AS l",
        )
        .await
        .map_err(db)?;
    tx.query_one(&stmt, &[&scopes, &modes, &LOCK_CLASS, &(LOCK_BUCKETS - 1)]).await.map_err(db)?;
    Ok(())
}

/// A delta's `rollup_pending` rows: each district's windows in a row of its own, the
/// devices' in rows of their groups ([`group_of`]).
pub(super) struct Journal {
    scopes: Vec<String>,
    blobs: Vec<Vec<u8>>,
}

impl Journal {
    /// Encode the delta's windows scope by scope (before the batch needs them: the encoding
    /// can run while the server inserts the readings).
    pub fn of(delta: &Delta) -> Self {
        let (mut scopes, mut blobs) = (Vec::new(), Vec::new());
        let mut groups: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut windows = delta.windows.iter().peekable();
        while let Some(((scope, ..), _)) = windows.peek() {
            let scope = scope.as_str();
            let mut one = Vec::new();
            while let Some(((_, q, i, s), w)) = windows.next_if(|((sc, ..), _)| sc == scope) {
                one.push((q, i, s, w));
            }
            let blob = encode(one.into_iter());
            match group_of(scope) {
                None => {
                    scopes.push(scope.to_owned());
                    blobs.push(blob);
                }
                Some(group) => {
                    let row = groups.entry(group).or_insert_with(|| vec![GROUPED]);
                    row.extend_from_slice(&(scope.len() as u16).to_le_bytes());
                    row.extend_from_slice(scope.as_bytes());
                    row.extend_from_slice(&(blob.len() as u32).to_le_bytes());
                    row.extend_from_slice(&blob);
                }
            }
        }
        for (group, row) in groups {
            scopes.push(group);
            blobs.push(row);
        }
        Self { scopes, blobs }
    }
}

/// Journal a delta: its [`Journal`] rows (one statement). The caller holds the scopes'
/// locks ([`lock`]).
pub(super) async fn pend(tx: &Transaction<'_>, journal: &Journal) -> Result<(), StoreError> {
    if journal.scopes.is_empty() {
        return Ok(());
    }
    let stmt = tx
        .prepare_cached("INSERT INTO rollup_pending (scope, windows) SELECT * FROM unnest($1::text[], $2::bytea[])")
        .await
        .map_err(db)?;
    tx.execute(&stmt, &[&journal.scopes, &journal.blobs]).await.map_err(db)?;
    Ok(())
}

/// Fold the pending rows `select` returns (id, scope, windows; in id order, locked) into
/// the stored windows and delete them; returns how many there were.
async fn fold_rows(tx: &impl GenericClient, rows: &[tokio_postgres::Row]) -> Result<usize, StoreError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let mut merged = Merged::default();
    let mut ids = Vec::with_capacity(rows.len());
    for row in rows {
        ids.push(row.get::<_, i64>(0));
        merged.merge_blob(row.get(1), row.get(2))?;
    }
    apply(tx, &merged.into_delta()).await?;
    let delete = tx.prepare_cached("DELETE FROM rollup_pending WHERE id = ANY($1)").await.map_err(db)?;
    tx.execute(&delete, &[&ids]).await.map_err(db)?;
    Ok(rows.len())
}

/// Pending rows folded per transaction. Large: a window's row is written once per fold
/// that touches it, and consecutive batches touch the same hour and day windows (with 2,000
/// rows a fold, 100,000 uplinks of 1,000 devices upserted 364,000 window rows for 121,000
/// windows). A row is one scope of one batch, some hundred bytes.
const FOLD_ROWS: i64 = 20_000;

/// Fold every pending row no other replica is folding, `FOLD_ROWS` a transaction, oldest
/// first; returns how many were folded.
pub(super) async fn fold(client: &mut Object) -> Result<usize, StoreError> {
    let mut folded = 0;
    loop {
        let tx = client.transaction().await.map_err(db)?;
        let select = tx
            .prepare_cached("SELECT id, scope, windows FROM rollup_pending ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED")
            .await
            .map_err(db)?;
        let rows = tx.query(&select, &[&FOLD_ROWS]).await.map_err(db)?;
        let n = fold_rows(&tx, &rows).await?;
        tx.commit().await.map_err(db)?;
        folded += n;
        if (n as i64) < FOLD_ROWS {
            return Ok(folded);
        }
    }
}

/// Fold the pending rows of `scopes`, waiting for a fold that holds some; the caller holds
/// the scopes' exclusive locks.
pub(super) async fn fold_scopes(tx: &impl GenericClient, scopes: &BTreeSet<String>) -> Result<(), StoreError> {
    // A scope's own rows and, for a device, its group's rows.
    let groups: BTreeSet<String> = scopes.iter().filter_map(|s| group_of(s)).collect();
    let scopes: Vec<&str> = scopes.iter().chain(&groups).map(String::as_str).collect();
    let select = tx
        .prepare_cached("SELECT id, scope, windows FROM rollup_pending WHERE scope = ANY($1) ORDER BY id FOR UPDATE")
        .await
        .map_err(db)?;
    let rows = tx.query(&select, &[&scopes]).await.map_err(db)?;
    fold_rows(tx, &rows).await.map(|_| ())
}

/// Merge the delta into the stored windows (one statement).
pub(super) async fn apply(tx: &impl GenericClient, delta: &Delta) -> Result<(), StoreError> {
    if delta.windows.is_empty() {
        return Ok(());
    }
    let n = delta.windows.len();
    let (mut scopes, mut quantities, mut intervals, mut starts) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut counts, mut excluded, mut sums, mut mins, mut maxs, mut lasts, mut last_times) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for ((scope, q, interval, start), w) in &delta.windows {
        scopes.push(scope.as_str());
        quantities.push(*q);
        intervals.push(*interval);
        starts.push(millis(*start)?);
        counts.push(w.count as i64);
        excluded.push(w.excluded as i64);
        sums.push(w.sum);
        mins.push(w.min);
        maxs.push(w.max);
        lasts.push(w.last);
        last_times.push(w.last_time);
    }
    let stmt = tx
        .prepare_cached(
            "INSERT INTO rollups AS r (scope, quantity, interval, start, count, excluded, sum, min, max, last, last_time)
             SELECT * FROM unnest($1::text[], $2::text[], $3::int2[], $4::timestamptz[], $5::int8[], $6::int8[],
                                  $7::float8[], $8::float8[], $9::float8[], $10::float8[], $11::int8[])
             ON CONFLICT (scope, quantity, interval, start) DO UPDATE SET
                 count = r.count + EXCLUDED.count,
                 excluded = r.excluded + EXCLUDED.excluded,
                 sum = r.sum + EXCLUDED.sum,
                 min = LEAST(r.min, EXCLUDED.min),
                 max = GREATEST(r.max, EXCLUDED.max),
                 last = CASE WHEN EXCLUDED.count > 0 AND (EXCLUDED.last_time > r.last_time
                             OR (EXCLUDED.last_time = r.last_time AND EXCLUDED.last > r.last))
                        THEN EXCLUDED.last ELSE r.last END,
                 last_time = CASE WHEN EXCLUDED.count > 0 AND (EXCLUDED.last_time > r.last_time
                             OR (EXCLUDED.last_time = r.last_time AND EXCLUDED.last > r.last))
                        THEN EXCLUDED.last_time ELSE r.last_time END",
        )
        .await
        .map_err(db)?;
    tx.execute(&stmt, &[&scopes, &quantities, &intervals, &starts, &counts, &excluded, &sums, &mins, &maxs, &lasts, &last_times])
        .await
        .map_err(db)?;
    Ok(())
}

/// The scopes of `keys`.
pub(super) fn scopes_of(keys: &BTreeMap<Key, ()>) -> BTreeSet<String> {
    keys.keys().map(|k| k.0.clone()).collect()
}

/// Recompute windows from the stored readings, each with its row locked first: after the
/// scopes' pending rows were folded. The caller holds the scopes' exclusive locks
/// ([`lock`]) and has journalled its own new readings already.
pub(super) async fn recompute(tx: &Transaction<'_>, keys: &BTreeMap<Key, ()>) -> Result<(), StoreError> {
    if keys.is_empty() {
        return Ok(());
    }
    fold_scopes(tx, &scopes_of(keys)).await?;
    for (scope, quantity, interval, start) in keys.keys() {
        let Some(length) = Interval::ALL.iter().find(|i| i16::from(i.code()) == *interval).map(|i| i.millis()) else {
            continue;
        };
        let (from, to) = (millis(*start)?, millis(start + length)?);
        let e = Window::EMPTY;
        let lock = tx
            .prepare_cached(
                "INSERT INTO rollups (scope, quantity, interval, start, count, excluded, sum, min, max, last, last_time)
                 VALUES ($1, $2, $3, $4, 0, 0, 0, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
            )
            .await
            .map_err(db)?;
        tx.execute(&lock, &[scope, quantity, interval, &from, &e.min, &e.max, &e.last, &e.last_time]).await.map_err(db)?;
        let lock = tx
            .prepare_cached(
                "SELECT 1 FROM rollups WHERE scope = $1 AND quantity = $2 AND interval = $3 AND start = $4 FOR UPDATE",
            )
            .await
            .map_err(db)?;
        tx.execute(&lock, &[scope, quantity, interval, &from]).await.map_err(db)?;
        // A statement of its own, so it sees every batch committed before the lock was had.
        let sql = if scope.starts_with("d:") {
            "SELECT value, flag, time FROM readings WHERE device = $1 AND quantity = $2 AND time >= $3 AND time < $4 ORDER BY time"
        } else {
            "SELECT r.value, r.flag, r.time FROM district_devices AS d JOIN readings AS r ON r.device = d.device
             WHERE d.district = $1 AND r.district = $1 AND r.quantity = $2 AND r.time >= $3 AND r.time < $4
             ORDER BY r.time, r.device"
        };
        let read = tx.prepare_cached(sql).await.map_err(db)?;
        let mut w = Window::EMPTY;
        for row in tx.query(&read, &[&&scope[2..], quantity, &from, &to]).await.map_err(db)? {
            let t: DateTime<Utc> = row.get(2);
            w.add(row.get(0), t.timestamp_millis(), QualityFlag::from_byte(row.get::<_, i16>(1) as u8));
        }
        let write = tx
            .prepare_cached(
                "UPDATE rollups SET count = $5, excluded = $6, sum = $7, min = $8, max = $9, last = $10, last_time = $11
                 WHERE scope = $1 AND quantity = $2 AND interval = $3 AND start = $4",
            )
            .await
            .map_err(db)?;
        tx.execute(
            &write,
            &[
                scope,
                quantity,
                interval,
                &from,
                &(w.count as i64),
                &(w.excluded as i64),
                &w.sum,
                &w.min,
                &w.max,
                &w.last,
                &w.last_time,
            ],
        )
        .await
        .map_err(db)?;
    }
    Ok(())
}

/// Windows of a scope with `from <= start < to`, oldest first: the stored ones with the
/// scope's pending rows merged on top, read in one statement (one snapshot).
pub(super) async fn query(
    client: &impl GenericClient,
    scope: &Scope,
    quantity: Quantity,
    interval: Interval,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<(DateTime<Utc>, Window)>, StoreError> {
    if let Scope::Device(device) = scope {
        if !kept(true, interval) {
            return from_readings(client, device, quantity, interval, from, to).await;
        }
    }
    let stmt = client
        .prepare_cached(
            "SELECT 0::int8 AS id, start, count, excluded, sum, min, max, last, last_time, NULL::bytea AS windows,
                    NULL::text AS scope
             FROM rollups WHERE scope = $1 AND quantity = $2 AND interval = $3 AND start >= $4 AND start < $5
             UNION ALL
             SELECT id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, windows, scope FROM rollup_pending
             WHERE scope IN ($1, $6)
             ORDER BY id",
        )
        .await
        .map_err(db)?;
    let code = i16::from(interval.code());
    let key = scope.key();
    let group = group_of(&key).unwrap_or_else(|| key.clone());
    let rows = client.query(&stmt, &[&key, &quantity.name(), &code, &from, &to, &group]).await.map_err(db)?;
    let (from_ms, to_ms) = (from.timestamp_millis(), to.timestamp_millis());
    let mut windows: BTreeMap<i64, Window> = BTreeMap::new();
    for row in &rows {
        match row.get::<_, Option<&[u8]>>(9) {
            None => {
                let start: DateTime<Utc> = row.get(1);
                let w = Window {
                    count: row.get::<_, i64>(2) as u64,
                    excluded: row.get::<_, i64>(3) as u64,
                    sum: row.get(4),
                    min: row.get(5),
                    max: row.get(6),
                    last: row.get(7),
                    last_time: row.get(8),
                };
                windows.insert(start.timestamp_millis(), w);
            }
            Some(blob) => {
                for (_, part) in parts(row.get(10), blob)?.into_iter().filter(|(s, _)| *s == key) {
                    for (q, i, start, w) in decode(part)? {
                        if q == quantity.name() && i == code && (from_ms..to_ms).contains(&start) {
                            windows.entry(start).or_insert(Window::EMPTY).merge(&w);
                        }
                    }
                }
            }
        }
    }
    windows.into_iter().map(|(start, w)| Ok((millis(start)?, w))).collect()
}

/// A device's windows folded from its readings (in time order), for the intervals not kept.
async fn from_readings(
    client: &impl GenericClient,
    device: &str,
    quantity: Quantity,
    interval: Interval,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<(DateTime<Utc>, Window)>, StoreError> {
    let stmt = client
        .prepare_cached(
            "SELECT time, value, flag FROM readings WHERE device = $1 AND quantity = $2 AND time >= $3 AND time < $4 ORDER BY time",
        )
        .await
        .map_err(db)?;
    let mut windows: BTreeMap<i64, Window> = BTreeMap::new();
    for row in client.query(&stmt, &[&device, &quantity.name(), &from, &to]).await.map_err(db)? {
        let t = row.get::<_, DateTime<Utc>>(0).timestamp_millis();
        let flag = QualityFlag::from_byte(row.get::<_, i16>(2) as u8);
        windows.entry(interval.window_start(t)).or_insert(Window::EMPTY).add(row.get(1), t, flag);
    }
    windows.into_iter().map(|(start, w)| Ok((millis(start)?, w))).collect()
}

/// First and last time of a series' data: a device's readings, a district's day windows.
pub(super) async fn extent(
    client: &impl GenericClient,
    scope: &Scope,
    quantity: Quantity,
) -> Result<Option<(DateTime<Utc>, DateTime<Utc>)>, StoreError> {
    let row = match scope {
        Scope::Device(device) => {
            let stmt = client
                .prepare_cached("SELECT min(time), max(time) FROM readings WHERE device = $1 AND quantity = $2")
                .await
                .map_err(db)?;
            client.query_one(&stmt, &[&device.as_str(), &quantity.name()]).await.map_err(db)?
        }
        Scope::District(_) => {
            // The stored day windows' range widened by the pending ones (one snapshot).
            let stmt = client
                .prepare_cached(
                    "SELECT min(start), max(start), NULL::bytea FROM rollups WHERE scope = $1 AND quantity = $2 AND interval = $3
                     UNION ALL
                     SELECT NULL, NULL, windows FROM rollup_pending WHERE scope = $1",
                )
                .await
                .map_err(db)?;
            let code = i16::from(Interval::Day.code());
            let rows = client.query(&stmt, &[&scope.key(), &quantity.name(), &code]).await.map_err(db)?;
            let mut range: Option<(i64, i64)> = None;
            let mut widen = |t: i64| range = Some(range.map_or((t, t), |(a, b)| (a.min(t), b.max(t))));
            for row in &rows {
                match row.get::<_, Option<&[u8]>>(2) {
                    None => {
                        let (first, last): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) = (row.get(0), row.get(1));
                        if let Some((a, b)) = first.zip(last) {
                            widen(a.timestamp_millis());
                            widen(b.timestamp_millis());
                        }
                    }
                    Some(blob) => {
                        for (q, i, start, _) in decode(blob)? {
                            if q == quantity.name() && i == code {
                                widen(start);
                            }
                        }
                    }
                }
            }
            return range.map(|(a, b)| Ok((millis(a)?, millis(b)?))).transpose();
        }
    };
    let (first, last): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) = (row.get(0), row.get(1));
    Ok(first.zip(last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_journal_puts_districts_in_rows_of_their_own_and_devices_in_their_groups_rows() {
        let t = Quantity::by_name("air_temperature").unwrap();
        let mut builder = DeltaBuilder::default();
        for (i, device) in ["a", "b", "c", "d", "e"].into_iter().enumerate() {
            builder.add(device, Some("Altstadt"), t, 1_000 * i as i64, i as f64, QualityFlag::Good);
        }
        builder.add("x", None, t, 7_000, 7.0, QualityFlag::Good);
        let delta = builder.finish();
        let journal = Journal::of(&delta);
        assert_eq!(journal.scopes.iter().filter(|s| s.starts_with("z:")).count(), 1);
        assert!(journal.scopes.iter().all(|s| !s.starts_with("d:")), "{:?}", journal.scopes);
        // Every device's windows are in its group's row, whole; nothing else is.
        let mut found = Vec::new();
        for (scope, blob) in journal.scopes.iter().zip(&journal.blobs) {
            for (part_scope, part) in parts(scope, blob).unwrap() {
                if scope.starts_with("g:") {
                    assert_eq!(group_of(part_scope).as_deref(), Some(scope.as_str()));
                } else {
                    assert_eq!(part_scope, scope);
                }
                let expected: Vec<_> = delta
                    .windows
                    .iter()
                    .filter(|((s, ..), _)| s == part_scope)
                    .map(|((_, q, i, st), w)| (*q, *i, *st, *w))
                    .collect();
                assert_eq!(decode(part).unwrap(), expected, "{part_scope}");
                found.push(part_scope.to_owned());
            }
        }
        found.sort();
        assert_eq!(found, delta.scopes().into_iter().collect::<Vec<_>>());
        // A scope's own row (encoding 1, as journalled before groups) is one part.
        let own = &journal.blobs[journal.scopes.iter().position(|s| s == "z:Altstadt").unwrap()];
        assert_eq!(parts("z:Altstadt", own).unwrap(), vec![("z:Altstadt", own.as_slice())]);
        // A group's row cut short is corrupt, not a panic.
        let group = &journal.blobs[journal.scopes.iter().position(|s| s.starts_with("g:")).unwrap()];
        for cut in 1..group.len() {
            if let Ok(found) = parts("g:0", &group[..cut]) {
                // Cut between two parts: the parts before the cut, whole.
                assert!(found.iter().all(|(_, p)| decode(p).is_ok()));
            }
        }
        assert_eq!(group_of("d:m000").as_deref(), Some("g:22"), "the groups never change");
        assert_eq!(group_of("z:Altstadt"), None);
    }

    #[test]
    fn a_delta_holds_each_readings_windows_of_its_device_and_district_in_the_batchs_order() {
        let (t, rh) = (Quantity::by_name("air_temperature").unwrap(), Quantity::by_name("relative_humidity").unwrap());
        // Runs of one device, devices coming back, a device changing district, one without.
        let readings = [
            ("d1", Some("Altstadt"), t, 1_000, 1.5, QualityFlag::Good),
            ("d1", Some("Altstadt"), rh, 1_000, 60.0, QualityFlag::Good),
            ("d2", Some("Hafen"), t, 2_000, -4.0, QualityFlag::Suspect),
            ("d1", Some("Altstadt"), t, 3_700_000, 2.5, QualityFlag::Bad),
            ("d3", None, t, 5_000, 9.0, QualityFlag::Good),
            ("d2", Some("Altstadt"), t, 601_000, 3.0, QualityFlag::Good),
            ("d2", Some("Altstadt"), t, 602_000, 3.0, QualityFlag::Good),
            ("d1", Some("Altstadt"), t, 1_000, 7.25, QualityFlag::Good),
        ];
        let mut built = DeltaBuilder::default();
        let mut expected: BTreeMap<Key, Window> = BTreeMap::new();
        for (device, district, q, ms, value, flag) in readings {
            built.add(device, district, q, ms, value, flag);
            let scopes = std::iter::once(format!("d:{device}")).chain(district.map(|z| format!("z:{z}")));
            for scope in scopes {
                for interval in Interval::ALL {
                    let key = (scope.clone(), q.name(), i16::from(interval.code()), interval.window_start(ms));
                    expected.entry(key).or_insert(Window::EMPTY).add(value, ms, flag);
                }
            }
        }
        // A device's 10-minute windows are not kept.
        expected.retain(|(scope, _, interval, _), _| !(scope.starts_with("d:") && *interval == 0));
        let built = built.finish();
        let show = |w: &BTreeMap<Key, Window>| format!("{w:?}");
        assert_eq!(show(&built.windows), show(&expected));
        assert_eq!(
            built.scopes().into_iter().collect::<Vec<_>>(),
            ["d:d1", "d:d2", "d:d3", "z:Altstadt", "z:Hafen"].map(String::from)
        );
    }

    #[test]
    fn a_devices_ten_minute_windows_in_an_older_pending_row_are_not_folded() {
        let q = Quantity::by_name("air_temperature").unwrap();
        let mut w = Window::EMPTY;
        w.add(2.5, 1_000, QualityFlag::Good);
        let (name, start) = (q.name(), 0i64);
        let windows = [(&name, &0i16, &start, &w), (&name, &1i16, &start, &w), (&name, &2i16, &start, &w)];
        let blob = encode(windows.into_iter());
        let mut merged = Merged::default();
        merged.merge_blob("d:old", &blob).unwrap();
        merged.merge_blob("z:Altstadt", &blob).unwrap();
        let delta = merged.into_delta();
        let keys: Vec<(&str, i16)> = delta.windows.keys().map(|(s, _, i, _)| (s.as_str(), *i)).collect();
        assert_eq!(keys, [("d:old", 1), ("d:old", 2), ("z:Altstadt", 0), ("z:Altstadt", 1), ("z:Altstadt", 2)]);
    }

    #[test]
    fn pending_windows_decode_as_encoded_and_other_encodings_are_refused() {
        let mut delta = DeltaBuilder::default();
        let q = Quantity::by_name("air_temperature").unwrap();
        delta.add("d1", Some("Altstadt"), q, 1_700_000_000_123, 3.25, QualityFlag::Good);
        delta.add("d1", Some("Altstadt"), q, 1_700_000_100_000, -1.5, QualityFlag::Bad);
        delta.add("d1", None, Quantity::by_name("relative_humidity").unwrap(), 5, 61.0, QualityFlag::Suspect);
        let delta = delta.finish();
        let ours: Vec<_> = delta.windows.iter().filter(|(k, _)| k.0 == "d:d1").map(|((_, q, i, s), w)| (q, i, s, w)).collect();
        let blob = encode(ours.iter().copied());
        let back = decode(&blob).unwrap();
        assert_eq!(back.len(), ours.len());
        for ((q, i, s, w), (bq, bi, bs, bw)) in ours.iter().zip(&back) {
            assert_eq!((**q, **i, **s), (*bq, *bi, *bs));
            assert_eq!(format!("{w:?}"), format!("{bw:?}"), "NaN `last` of an empty window included");
        }
        let mut other = blob.clone();
        other[0] = ENCODING + 1;
        assert!(matches!(decode(&other), Err(StoreError::Corrupt(_))));
        assert!(matches!(decode(&blob[..blob.len() - 1]), Err(StoreError::Corrupt(_))));
        assert!(matches!(decode(&[]), Err(StoreError::Corrupt(_))));
        let mut unknown = vec![ENCODING, 3];
        unknown.extend_from_slice(b"foo");
        unknown.extend_from_slice(&[1, 0]);
        unknown.extend_from_slice(&[0; 17]);
        assert!(matches!(decode(&unknown), Err(StoreError::Corrupt(_))));
        // Every form: one reading, only excluded ones, several, and -0.0 (its sum is +0.0);
        // through a district, whose 10-minute windows are kept.
        let mut forms = DeltaBuilder::default();
        forms.add("f", Some("Z"), q, 1_000, 2.5, QualityFlag::Good);
        forms.add("f", Some("Z"), q, 700_000, 1.0, QualityFlag::Bad);
        forms.add("f", Some("Z"), q, 1_300_000, 4.0, QualityFlag::Good);
        forms.add("f", Some("Z"), q, 1_400_000, 5.0, QualityFlag::Suspect);
        forms.add("f", Some("Z"), q, 2_000_000, -0.0, QualityFlag::Good);
        let forms = forms.finish();
        let all: Vec<_> = forms.windows.iter().filter(|(k, _)| k.0 == "z:Z").map(|((_, q, i, s), w)| (q, i, s, w)).collect();
        let form = |w: &Window| match (w.count, w.excluded) {
            (0, _) => NONE,
            (1, _) => ONE,
            _ => FULL,
        };
        let seen: BTreeSet<u8> = all.iter().map(|(_, _, _, w)| form(w)).collect();
        assert_eq!(seen, BTreeSet::from([FULL, ONE, NONE]), "every form is encoded here");
        let back = decode(&encode(all.iter().copied())).unwrap();
        assert_eq!(back.len(), all.len());
        for ((q, i, s, w), (bq, bi, bs, bw)) in all.iter().zip(&back) {
            assert_eq!((**q, **i, **s), (*bq, *bi, *bs));
            let t = |w: &Window| {
                (w.count, w.excluded, w.sum.to_bits(), w.min.to_bits(), w.max.to_bits(), w.last.to_bits(), w.last_time)
            };
            assert_eq!(t(w), t(bw), "{i} {s}");
        }
    }
}
