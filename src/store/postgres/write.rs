//! One batch into PostgreSQL in one transaction: frame counters, readings (idempotent on device, quantity and time) with their rollup windows journalled, the districts' devices, last-seen times, dead letters and the InfluxDB outbox.
//!
//! Each part is one statement over arrays (`unnest`), so a batch costs a handful of round
//! trips however many messages it holds. Rows are sorted by key first: two gateways'
//! batches touching the same rows lock them in the same order, never in a circle.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::task::Poll;

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::rollups::{self, DeltaBuilder};
use super::{db, frame_counters};
use crate::store::batch::{Lines, WriteBatch};
use crate::store::boundary::StoreError;

/// Write everything of the batch in `tx` (the caller commits); returns the dead letters' ids.
pub(super) async fn write_in(tx: &Transaction<'_>, batch: &WriteBatch) -> Result<Vec<u64>, StoreError> {
    write_in_with(tx, batch, true).await
}

/// [`write_in`], with the rollup windows kept or (`rollups` false, for measuring their
/// cost) left alone.
pub(super) async fn write_in_with(tx: &Transaction<'_>, batch: &WriteBatch, rollups: bool) -> Result<Vec<u64>, StoreError> {
    frame_counters::write(tx, batch).await?;
    // Before the readings: a corrected reading's district window is recomputed through them.
    district_devices(tx, batch).await?;
    readings(tx, batch, rollups).await?;
    last_seen(tx, batch).await?;
    let ids = dead_letters(tx, batch).await?;
    outbox(tx, &batch.outbox).await?;
    Ok(ids)
}

/// Store the readings; new ones go into their windows, changed ones have them recomputed.
async fn readings(tx: &Transaction<'_>, batch: &WriteBatch, rollups: bool) -> Result<(), StoreError> {
    let all = &batch.readings;
    if all.is_empty() {
        return Ok(());
    }
    let keys: Vec<(&str, &str, i64)> =
        all.iter().map(|r| (r.device.as_str(), r.quantity.name(), r.time.timestamp_millis())).collect();
    // Each reading's district, looked up once per run of one device's readings.
    let mut districts_of: Vec<Option<&str>> = Vec::with_capacity(all.len());
    let mut last: Option<(&str, Option<&str>)> = None;
    for r in all {
        let district = match last {
            Some((device, district)) if device == r.device.as_str() => district,
            _ => batch.districts.get(&r.device).map(String::as_str),
        };
        last = Some((r.device.as_str(), district));
        districts_of.push(district);
    }
    // The rows in key order, each key once: (first, last) index of its readings in the
    // batch. The last of equal keys wins, as when they are written one after the other.
    let mut order: Vec<usize> = (0..all.len()).collect();
    order.sort_by(|a, b| keys[*a].cmp(&keys[*b]));
    let mut rows: Vec<(usize, usize)> = Vec::with_capacity(all.len());
    for i in order {
        match rows.last_mut() {
            Some((first, last)) if keys[*first] == keys[i] => *last = i,
            _ => rows.push((i, i)),
        }
    }
    let n = rows.len();
    let (mut devices, mut quantities, mut times, mut values, mut flags, mut reasons, mut districts) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for &(_, i) in &rows {
        let r = &all[i];
        devices.push(keys[i].0);
        quantities.push(keys[i].1);
        times.push(r.time);
        values.push(r.value);
        flags.push(i16::from(r.flag.to_byte()));
        reasons.push(r.reason.as_str());
        districts.push(districts_of[i]);
    }
    // The windows of the rows `new` says were stored now, folded in the batch's order.
    let delta_of = |new: &dyn Fn(usize) -> bool| {
        let mut firsts: Vec<(usize, usize)> = rows.iter().enumerate().filter(|(u, _)| new(*u)).map(|(_, row)| *row).collect();
        firsts.sort_unstable();
        let mut delta = DeltaBuilder::with_capacity(firsts.len());
        for (_, i) in firsts {
            let r = &all[i];
            delta.add(keys[i].0, districts_of[i], r.quantity, keys[i].2, r.value, r.flag);
        }
        delta.finish()
    };
    let params: [&(dyn ToSql + Sync); 7] = [&devices, &quantities, &times, &values, &flags, &reasons, &districts];
    // Usually every row is new: a plain insert, under a savepoint, is the cheapest way in
    // (PostgreSQL's speculative insertion for ON CONFLICT and a RETURNING set cost a third
    // more). A key stored before (a message delivered again, or taken by another gateway
    // meanwhile) makes it fail whole; then the batch goes in the idempotent way: the new
    // rows inserted, the others updated where they differ.
    tx.batch_execute("SAVEPOINT new_readings").await.map_err(db)?;
    let plain = tx
        .prepare_cached(
            "INSERT INTO readings (device, quantity, time, value, flag, reason, district)
             SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::float8[], $5::int2[], $6::text[], $7::text[])",
        )
        .await
        .map_err(db)?;
    // Sent first; the windows, as if every row is new, are folded and encoded for the journal
    // while the server inserts.
    let mut insert = std::pin::pin!(tx.execute(&plain, &params));
    let early = std::future::poll_fn(|cx| Poll::Ready(insert.as_mut().poll(cx))).await;
    let all_new = rollups.then(|| delta_of(&|_| true));
    let all_new_journal = all_new.as_ref().map(rollups::Journal::of);
    let result = match early {
        Poll::Ready(result) => result,
        Poll::Pending => insert.await,
    };
    // The rows stored now (by number in `rows`); `None`: all of them.
    let inserted: Option<HashSet<usize>> = match result {
        Ok(_) => {
            tx.batch_execute("RELEASE SAVEPOINT new_readings").await.map_err(db)?;
            None
        }
        Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
            tx.batch_execute("ROLLBACK TO SAVEPOINT new_readings").await.map_err(db)?;
            let insert = tx
                .prepare_cached(
                    "INSERT INTO readings (device, quantity, time, value, flag, reason, district)
                     SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::float8[], $5::int2[], $6::text[], $7::text[])
                     ON CONFLICT (device, quantity, time) DO NOTHING
                     RETURNING device, quantity, time",
                )
                .await
                .map_err(db)?;
            let returned = tx.query(&insert, &params).await.map_err(db)?;
            Some(returned.iter().filter_map(|row| row_number(row, &rows, &keys)).collect())
        }
        Err(e) => return Err(db(e)),
    };
    let mut changed = BTreeMap::new();
    if let Some(inserted) = inserted.as_ref().filter(|stored| stored.len() < n) {
        // Stored before: written again only where value, flag or reason differ (a reading
        // stored again as it was changes nothing); their windows are recomputed.
        let again: Vec<usize> = (0..n).filter(|u| !inserted.contains(u)).collect();
        let update = tx
            .prepare_cached(
                "UPDATE readings AS r SET value = u.value, flag = u.flag, reason = u.reason, district = u.district
                 FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::float8[], $5::int2[], $6::text[], $7::text[])
                      AS u(device, quantity, time, value, flag, reason, district)
                 WHERE r.device = u.device AND r.quantity = u.quantity AND r.time = u.time
                   AND (r.value, r.flag, r.reason) IS DISTINCT FROM (u.value, u.flag, u.reason)
                 RETURNING r.device, r.quantity, r.time",
            )
            .await
            .map_err(db)?;
        let params = (
            pick(&again, &devices),
            pick(&again, &quantities),
            pick(&again, &times),
            pick(&again, &values),
            pick(&again, &flags),
            pick(&again, &reasons),
            pick(&again, &districts),
        );
        let updated = tx
            .query(&update, &[&params.0, &params.1, &params.2, &params.3, &params.4, &params.5, &params.6])
            .await
            .map_err(db)?;
        for u in updated.iter().filter_map(|row| row_number(row, &rows, &keys)) {
            let i = rows[u].1;
            rollups::keys_of(keys[i].0, districts_of[i], all[i].quantity, keys[i].2, &mut changed);
        }
    }
    if !rollups {
        return Ok(());
    }
    let late;
    let (delta, journal) = match (&inserted, &all_new, all_new_journal) {
        (None, Some(delta), Some(journal)) => (delta, journal),
        _ => {
            late = delta_of(&|u| inserted.as_ref().is_none_or(|stored| stored.contains(&u)));
            (&late, rollups::Journal::of(&late))
        }
    };
    // Journalled under the scopes' locks, before a recompute (which folds them): see the
    // rollups module's doc.
    rollups::lock(tx, &delta.scopes(), &rollups::scopes_of(&changed)).await?;
    rollups::pend(tx, &journal).await?;
    rollups::recompute(tx, &changed).await
}

/// The number in `rows` (key order) of a returned row's key (device, quantity, time).
fn row_number(row: &Row, rows: &[(usize, usize)], keys: &[(&str, &str, i64)]) -> Option<usize> {
    let (device, quantity, time): (&str, &str, DateTime<Utc>) = (row.get(0), row.get(1), row.get(2));
    let key = (device, quantity, time.timestamp_millis());
    rows.binary_search_by(|(first, _)| keys[*first].cmp(&key)).ok()
}

/// The elements of `v` at `indexes`.
fn pick<T: Copy>(indexes: &[usize], v: &[T]) -> Vec<T> {
    indexes.iter().map(|i| v[*i]).collect()
}

/// The devices counting towards each district, through which its windows are recomputed.
async fn district_devices(tx: &Transaction<'_>, batch: &WriteBatch) -> Result<(), StoreError> {
    if batch.districts.is_empty() {
        return Ok(());
    }
    // In key order (see the module's doc).
    let pairs: BTreeMap<(&str, &str), ()> =
        batch.districts.iter().map(|(device, district)| ((district.as_str(), device.as_str()), ())).collect();
    let (districts, devices): (Vec<&str>, Vec<&str>) = pairs.into_keys().unzip();
    let stmt = tx
        .prepare_cached(
            "INSERT INTO district_devices (district, device) SELECT * FROM unnest($1::text[], $2::text[])
             ON CONFLICT DO NOTHING",
        )
        .await
        .map_err(db)?;
    tx.execute(&stmt, &[&districts, &devices]).await.map_err(db)?;
    Ok(())
}

/// Last-seen times only move forward.
async fn last_seen(tx: &Transaction<'_>, batch: &WriteBatch) -> Result<(), StoreError> {
    if batch.seen.is_empty() {
        return Ok(());
    }
    let mut newest: BTreeMap<&str, DateTime<Utc>> = BTreeMap::new();
    for (device, at) in &batch.seen {
        let e = newest.entry(device.as_str()).or_insert(*at);
        *e = (*e).max(*at);
    }
    let (devices, ats): (Vec<&str>, Vec<DateTime<Utc>>) = newest.into_iter().unzip();
    let stmt = tx
        .prepare_cached(
            "INSERT INTO last_seen AS s (device, at) SELECT * FROM unnest($1::text[], $2::timestamptz[])
             ON CONFLICT (device) DO UPDATE SET at = GREATEST(s.at, EXCLUDED.at)",
        )
        .await
        .map_err(db)?;
    tx.execute(&stmt, &[&devices, &ats]).await.map_err(db)?;
    Ok(())
}

/// Dead letters under new ids from the sequence, in the batch's order; returns each one's id.
/// A letter whose message is kept already (the same digest: delivered again, or taken by
/// another replica meanwhile) is not stored twice and gets the kept letter's id.
async fn dead_letters(tx: &Transaction<'_>, batch: &WriteBatch) -> Result<Vec<u64>, StoreError> {
    let letters = &batch.dead_letters;
    if letters.is_empty() {
        return Ok(Vec::new());
    }
    let next =
        tx.prepare_cached("SELECT nextval('dead_letter_ids') FROM generate_series(1, $1::int8) ORDER BY 1").await.map_err(db)?;
    let ids: Vec<i64> = tx.query(&next, &[&(letters.len() as i64)]).await.map_err(db)?.iter().map(|r| r.get(0)).collect();
    let digests: Vec<[u8; 32]> = letters.iter().map(|l| l.digest()).collect();
    // Inserted in digest order, so that two gateways inserting the same messages wait for
    // each other's index entries in one order, never in a circle; the first of equal
    // digests in the batch is the one stored.
    let mut order: Vec<usize> = (0..letters.len()).collect();
    order.sort_by(|a, b| digests[*a].cmp(&digests[*b]).then(a.cmp(b)));
    let stmt = tx
        .prepare_cached(
            "INSERT INTO dead_letters (id, received_at, topic, format, device, reason, payload, digest)
             SELECT * FROM unnest($1::int8[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bytea[], $8::bytea[])
             ON CONFLICT (digest) DO NOTHING",
        )
        .await
        .map_err(db)?;
    let ids_o: Vec<i64> = order.iter().map(|&i| ids[i]).collect();
    let received: Vec<DateTime<Utc>> = order.iter().map(|&i| letters[i].received_at).collect();
    let topics: Vec<&str> = order.iter().map(|&i| letters[i].topic.as_str()).collect();
    let formats: Vec<&str> = order.iter().map(|&i| letters[i].format.as_str()).collect();
    let devices: Vec<Option<&str>> = order.iter().map(|&i| letters[i].device.as_deref()).collect();
    let reasons: Vec<&str> = order.iter().map(|&i| letters[i].reason.as_str()).collect();
    let payloads: Vec<&[u8]> = order.iter().map(|&i| letters[i].payload.as_slice()).collect();
    let digests_o: Vec<&[u8]> = order.iter().map(|&i| digests[i].as_slice()).collect();
    tx.execute(&stmt, &[&ids_o, &received, &topics, &formats, &devices, &reasons, &payloads, &digests_o]).await.map_err(db)?;
    // Each letter's id: its own, or that of the letter kept before under its digest.
    let kept = tx.prepare_cached("SELECT digest, id FROM dead_letters WHERE digest = ANY($1)").await.map_err(db)?;
    let rows = tx.query(&kept, &[&digests_o]).await.map_err(db)?;
    let by_digest: HashMap<Vec<u8>, i64> = rows.iter().map(|r| (r.get::<_, Vec<u8>>(0), r.get::<_, i64>(1))).collect();
    digests
        .iter()
        .map(|d| {
            by_digest.get(d.as_slice()).map(|id| *id as u64).ok_or_else(|| {
                // Its kept twin was deleted between the two statements: the batch is
                // written again (the stage retries) and stores it then.
                StoreError::Database("a dead letter's kept twin was deleted meanwhile".into())
            })
        })
        .collect()
}

/// The InfluxDB lines, in order.
async fn outbox(tx: &Transaction<'_>, lines: &Lines) -> Result<(), StoreError> {
    if lines.is_empty() {
        return Ok(());
    }
    let stmt = tx
        .prepare_cached("INSERT INTO outbox (line) SELECT line FROM unnest($1::bytea[]) WITH ORDINALITY AS l(line, n) ORDER BY n")
        .await
        .map_err(db)?;
    let lines: Vec<&[u8]> = lines.iter().map(str::as_bytes).collect();
    tx.execute(&stmt, &[&lines]).await.map_err(db)?;
    Ok(())
}
