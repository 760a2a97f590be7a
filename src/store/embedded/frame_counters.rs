//! LoRaWAN frame counters per DevAddr, persisted: the last accepted 32-bit FCnt and the MICs of the most recent frames.
//!
//! [`FrameCounter`] is a type of [`crate::sources::lorawan`], which computes each next state;
//! the store only encodes, writes and reads it. The counters are written in the same
//! transaction as the readings the frames produced, so after a crash the counters and the data
//! agree: a frame whose readings were lost is not counted as seen, and a stored frame is never
//! accepted a second time.

use redb::ReadableDatabase;

use super::tables::FRAME_COUNTERS;
use crate::sources::lorawan::{FrameCounter, RecentFrame};
use crate::store::boundary::{engine, StoreError};

/// Version byte, `last` (4 bytes LE), then 16 bytes per recent frame (FCnt, MIC, time).
fn encode(counter: &FrameCounter) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + 16 * counter.recent.len());
    out.push(1);
    out.extend_from_slice(&counter.last.to_le_bytes());
    for r in &counter.recent {
        out.extend_from_slice(&r.f_cnt.to_le_bytes());
        out.extend_from_slice(&r.mic);
        out.extend_from_slice(&r.at_ms.to_le_bytes());
    }
    out
}

fn decode(bytes: &[u8]) -> Result<FrameCounter, StoreError> {
    let corrupt = || StoreError::Corrupt(format!("frame counter record of {} bytes", bytes.len()));
    let (version, rest) = bytes.split_first().ok_or_else(corrupt)?;
    if *version != 1 || rest.len() < 4 || (rest.len() - 4) % 16 != 0 {
        return Err(corrupt());
    }
    let word = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let recent = rest[4..]
        .chunks_exact(16)
        .map(|c| RecentFrame {
            f_cnt: word(&c[..4]),
            mic: [c[4], c[5], c[6], c[7]],
            at_ms: i64::from_le_bytes([c[8], c[9], c[10], c[11], c[12], c[13], c[14], c[15]]),
        })
        .collect();
    Ok(FrameCounter { last: word(&rest[..4]), recent })
}

/// Write the counters a batch moved forward.
pub(super) fn write<'a>(
    tx: &redb::WriteTransaction,
    counters: impl IntoIterator<Item = (&'a u32, &'a FrameCounter)>,
) -> Result<(), StoreError> {
    let mut table = tx.open_table(FRAME_COUNTERS).map_err(engine)?;
    for (dev_addr, counter) in counters {
        table.insert(*dev_addr, encode(counter).as_slice()).map_err(engine)?;
    }
    Ok(())
}

/// The stored frame counter of a DevAddr; `None` before its first accepted frame.
pub(super) fn read(db: &redb::Database, dev_addr: u32) -> Result<Option<FrameCounter>, StoreError> {
    let tx = db.begin_read().map_err(engine)?;
    let table = tx.open_table(FRAME_COUNTERS).map_err(engine)?;
    match table.get(dev_addr).map_err(engine)? {
        Some(v) => Ok(Some(decode(v.value())?)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::lorawan::RECENT_FRAMES;
    use crate::store::{CommitStore, EmbeddedStore, WriteBatch};

    #[test]
    fn history_is_bounded_and_round_trips() {
        let mut c = FrameCounter::default();
        for i in 0..20u32 {
            c.accept(i, i.to_be_bytes(), i64::from(i) * 1000);
        }
        assert_eq!(c.last, 19);
        assert_eq!(c.recent.len(), RECENT_FRAMES);
        assert_eq!((c.recent[0].f_cnt, c.recent[0].at_ms), (12, 12_000));
        assert_eq!(decode(&encode(&c)).unwrap(), c);
        assert!(decode(&[1, 0, 0]).is_err());
        assert!(decode(&[]).is_err());
    }

    #[test]
    fn counters_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = FrameCounter::default();
        c.accept(70_000, [1, 2, 3, 4], -5);
        {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            assert_eq!(store.frame_counter(0x260B_1234).unwrap(), None);
            let mut batch = WriteBatch::default();
            batch.frame_counters.insert(0x260B_1234, c.clone());
            store.write(&batch).unwrap();
        }
        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(store.frame_counter(0x260B_1234).unwrap(), Some(c));
    }
}
