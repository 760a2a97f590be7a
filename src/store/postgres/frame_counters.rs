//! LoRaWAN frame counters shared by every gateway of the database: written only over the state the batch computed them from.
//!
//! Two replicas behind one shared subscription can get copies of one raw frame at the same
//! moment (two LoRaWAN gateways heard it). Both read the same stored counter and both would
//! accept the frame. Each writes its new counter with a condition: the row must still hold
//! the state it read ([`WriteBatch::frame_counter_bases`]). The first commit wins; the
//! second's update waits for the first's row lock, then finds the row changed, and its batch
//! is refused whole with [`StoreError::FrameCounterMoved`], so the stage decodes it again and
//! the copy counts as a duplicate. Counters are written first in the transaction, in DevAddr
//! order, so such a batch costs little and two batches never wait for each other in a circle.

use deadpool_postgres::{GenericClient, Transaction};

use super::db;
use crate::sources::lorawan::{FrameCounter, RecentFrame};
use crate::store::batch::WriteBatch;
use crate::store::boundary::StoreError;

/// The recent frames, 16 bytes each: FCnt, MIC, time in ms (little-endian), oldest first.
fn encode_recent(counter: &FrameCounter) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 * counter.recent.len());
    for r in &counter.recent {
        out.extend_from_slice(&r.f_cnt.to_le_bytes());
        out.extend_from_slice(&r.mic);
        out.extend_from_slice(&r.at_ms.to_le_bytes());
    }
    out
}

fn decode(last: i64, recent: &[u8]) -> Result<FrameCounter, StoreError> {
    if recent.len() % 16 != 0 || !(0..=i64::from(u32::MAX)).contains(&last) {
        return Err(StoreError::Corrupt(format!("frame counter with {} bytes of recent frames", recent.len())));
    }
    let word = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let recent = recent
        .chunks_exact(16)
        .map(|c| RecentFrame {
            f_cnt: word(&c[..4]),
            mic: [c[4], c[5], c[6], c[7]],
            at_ms: i64::from_le_bytes([c[8], c[9], c[10], c[11], c[12], c[13], c[14], c[15]]),
        })
        .collect();
    Ok(FrameCounter { last: last as u32, recent })
}

/// Write the batch's counters, each only over its base; the first that moved on refuses the batch.
pub(super) async fn write(tx: &Transaction<'_>, batch: &WriteBatch) -> Result<(), StoreError> {
    let mut addrs: Vec<&u32> = batch.frame_counters.keys().collect();
    addrs.sort();
    for dev_addr in addrs {
        let counter = &batch.frame_counters[dev_addr];
        let (addr, last, recent) = (i64::from(*dev_addr), i64::from(counter.last), encode_recent(counter));
        let written = match batch.frame_counter_bases.get(dev_addr) {
            Some(Some(base)) => {
                let stmt = tx
                    .prepare_cached(
                        "UPDATE frame_counters SET last = $2, recent = $3 WHERE dev_addr = $1 AND last = $4 AND recent = $5",
                    )
                    .await
                    .map_err(db)?;
                tx.execute(&stmt, &[&addr, &last, &recent, &i64::from(base.last), &encode_recent(base)]).await.map_err(db)?
            }
            Some(None) => {
                let stmt = tx
                    .prepare_cached(
                        "INSERT INTO frame_counters (dev_addr, last, recent) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    )
                    .await
                    .map_err(db)?;
                tx.execute(&stmt, &[&addr, &last, &recent]).await.map_err(db)?
            }
            // Not read by the batch (a caller that sets counters directly): written as it is.
            None => {
                let stmt = tx
                    .prepare_cached(
                        "INSERT INTO frame_counters (dev_addr, last, recent) VALUES ($1, $2, $3)
                         ON CONFLICT (dev_addr) DO UPDATE SET last = EXCLUDED.last, recent = EXCLUDED.recent",
                    )
                    .await
                    .map_err(db)?;
                tx.execute(&stmt, &[&addr, &last, &recent]).await.map_err(db)?
            }
        };
        if written == 0 {
            return Err(StoreError::FrameCounterMoved { dev_addr: *dev_addr });
        }
    }
    Ok(())
}

/// The stored counter of a DevAddr.
pub(super) async fn read(client: &impl GenericClient, dev_addr: u32) -> Result<Option<FrameCounter>, StoreError> {
    let stmt = client.prepare_cached("SELECT last, recent FROM frame_counters WHERE dev_addr = $1").await.map_err(db)?;
    match client.query_opt(&stmt, &[&i64::from(dev_addr)]).await.map_err(db)? {
        Some(row) => Ok(Some(decode(row.get(0), row.get::<_, &[u8]>(1))?)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_frames_round_trip() {
        let mut c = FrameCounter::default();
        for i in 0..20u32 {
            c.accept(i + 70_000, i.to_be_bytes(), -(i as i64));
        }
        assert_eq!(decode(i64::from(c.last), &encode_recent(&c)).unwrap(), c);
        assert!(decode(1, &[0; 15]).is_err());
        assert!(decode(-1, &[]).is_err());
    }
}
