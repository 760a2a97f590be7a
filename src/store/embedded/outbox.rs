//! The embedded store's outbox table: the InfluxDB spool, filled in the same commit as the readings and drained in order by the InfluxDB writer.
//!
//! Because the outbox rows are written in the same redb transaction as the readings they
//! copy, "stored in the embedded store" and "spooled for InfluxDB" are one event: the ingest
//! stage's acknowledge-after-commit already means "acknowledged only when in InfluxDB or in
//! the spool", and a crash can never leave a reading stored but forgotten by InfluxDB.
//!
//! Every line has a sequence number, increasing in arrival order, so the writer replays the
//! spool in order. A row holds a run of lines with consecutive numbers, joined by `\n` (line
//! protocol has no newline inside a line), keyed by the number of its *last* line: a commit
//! writes its batch's lines as rows of up to [`ROW_LINES`] instead of one row per reading. The
//! writer reads whole rows while they fit its request, so it removes a sent batch with a few
//! row deletions and rewrites no row's rest; only a first row longer than the request is cut.
//! A store from before holds one line per row, which is a run of one under the same key, so
//! both read alike.
//!
//! When the lines come with their points' hashes ([`Lines::points`]: the writer sends gzip),
//! a row is *packed*: a zero byte (a text row starts with a measurement's name), the count of
//! lines, the text's CRC-32 and length (u32 each, little-endian), one u32 hash per line, then
//! the lines compressed on their own ([`spooled::pack`]). The writer sends such rows as they
//! are, joined into one gzip member ([`Spooled::push_packed`]), so the ingest commit writes
//! about a tenth of the bytes and the writer compresses nothing again. A row that must be cut
//! (a removal in its middle, a request's edge) is inflated and what stays is written back as
//! text.

use std::borrow::Cow;

use redb::{Database, ReadableDatabase, ReadableTable, WriteTransaction};

use super::tables::OUTBOX;
use crate::store::batch::Lines;
use crate::store::boundary::{engine, StoreError};
use crate::store::spooled::{self, Piece, Spooled};

/// Most lines a commit writes into one row: a write request (5,000 lines by default) then
/// takes whole rows and is still nearly full.
const ROW_LINES: usize = 512;

/// A batch's lines as the outbox rows they become, each with its count of lines: made before
/// the write transaction, so compressing them does not hold the store's write lock.
pub(super) struct Rows<'a>(Vec<(u64, Cow<'a, [u8]>)>);

/// Cut `lines` into rows of up to [`ROW_LINES`]: text, or packed when every line has its
/// point's hash.
pub(super) fn rows(lines: &Lines) -> Result<Rows<'_>, StoreError> {
    let points = lines.points();
    let mut rows = Vec::with_capacity(lines.len().div_ceil(ROW_LINES));
    let mut done = 0;
    while done < lines.len() {
        let take = (lines.len() - done).min(ROW_LINES);
        let text = lines.joined(done..done + take).as_bytes();
        let row = match points {
            Some(points) => {
                let piece = spooled::pack(text).map_err(|e| StoreError::Corrupt(format!("deflate: {e}")))?;
                let mut row = Vec::with_capacity(13 + 4 * take + piece.deflate.len());
                row.push(PACKED);
                for n in [take as u32, piece.crc, piece.len] {
                    row.extend_from_slice(&n.to_le_bytes());
                }
                for hash in &points[done..done + take] {
                    row.extend_from_slice(&hash.to_le_bytes());
                }
                row.extend_from_slice(&piece.deflate);
                Cow::Owned(row)
            }
            None => Cow::Borrowed(text),
        };
        rows.push((take as u64, row));
        done += take;
    }
    Ok(Rows(rows))
}

/// Append rows to the outbox inside the caller's transaction (the one storing the readings).
pub(super) fn append(tx: &WriteTransaction, rows: &Rows<'_>) -> Result<(), StoreError> {
    if rows.0.is_empty() {
        return Ok(());
    }
    let mut table = tx.open_table(OUTBOX).map_err(engine)?;
    // Only the InfluxDB writer removes lines, and only lines it has read, so the next number is
    // always above every line still present: order is preserved even after the table empties.
    let mut last = table.last().map_err(engine)?.map(|(k, _)| k.value()).unwrap_or(0);
    for (count, row) in &rows.0 {
        last += count;
        table.insert(last, row.as_ref()).map_err(engine)?;
    }
    Ok(())
}

/// The first byte of a packed row.
const PACKED: u8 = 0;

/// What a packed row holds.
struct PackedRow<'a> {
    count: usize,
    /// One little-endian u32 hash per line.
    points: &'a [u8],
    crc: u32,
    len: u32,
    deflate: &'a [u8],
}

impl PackedRow<'_> {
    fn piece(&self) -> Piece {
        Piece { crc: self.crc, len: self.len, deflate: self.deflate.to_vec() }
    }
}

/// A packed row's parts; `None` for a text row. A header cut short (a damaged store) reads as
/// one line that does not inflate, so the rows around it go on.
fn packed(row: &[u8]) -> Option<PackedRow<'_>> {
    if row.first() != Some(&PACKED) {
        return None;
    }
    let word = |at: usize| row.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let whole = (|| {
        let (n, crc, len) = (word(1)? as usize, word(5)?, word(9)?);
        let end = 13usize.checked_add(n.checked_mul(4)?)?;
        Some(PackedRow { count: n, points: row.get(13..end)?, crc, len, deflate: &row[end..] })
    })();
    Some(whole.unwrap_or(PackedRow { count: 1, points: &[], crc: 0, len: 0, deflate: &[] }))
}

/// A row's lines joined by `\n`: a text row as it is, a packed one inflated.
fn text_of(row: &[u8]) -> Cow<'_, [u8]> {
    match packed(row) {
        None => Cow::Borrowed(row),
        Some(packed) => {
            let mut text = spooled::text_of(&packed.piece(), packed.count);
            text.pop();
            Cow::Owned(text)
        }
    }
}

/// Where the first `n` (at least one) lines of `text` end: at the newline after the `n`th, or
/// at the end of the text if it holds no more.
fn end_of_lines(text: &[u8], n: usize) -> usize {
    memchr::memchr_iter(b'\n', text).nth(n - 1).unwrap_or(text.len())
}

/// How many lines a row holds.
fn count(row: &[u8]) -> u64 {
    match packed(row) {
        Some(row) => row.count as u64,
        None => memchr::memchr_iter(b'\n', row).count() as u64 + 1,
    }
}

/// The lines of a row's text ([`text_of`]) with their sequence numbers, given the row's key
/// (its last line's).
fn lines_of(key: u64, text: &[u8]) -> impl Iterator<Item = (u64, &[u8])> {
    let mut from = 0;
    let ends = memchr::memchr_iter(b'\n', text).chain(std::iter::once(text.len()));
    let lines = ends.map(move |end| {
        let line = &text[from..end];
        from = end + 1;
        line
    });
    let n = memchr::memchr_iter(b'\n', text).count() as u64 + 1;
    (key + 1 - n..).zip(lines)
}

/// Lines waiting in the spool.
pub(super) fn len(db: &Database) -> Result<u64, StoreError> {
    let tx = db.begin_read().map_err(engine)?;
    let table = tx.open_table(OUTBOX).map_err(engine)?;
    let mut n = 0;
    for entry in table.iter().map_err(engine)? {
        let (_, v) = entry.map_err(engine)?;
        n += count(v.value());
    }
    Ok(n)
}

/// The oldest spooled lines with their sequence numbers, oldest first, leaving out those
/// numbered in `skip` (sorted ascending): whole rows while they fit in `limit` lines, or the
/// first `limit` lines of the first row if that alone is longer. A row all in `skip` is passed
/// over unread; one partly in it gives its other lines one by one.
pub(super) fn peek(db: &Database, limit: usize, skip: &[u64]) -> Result<Spooled, StoreError> {
    // `EmbeddedStore::open` creates the table, so it is never missing here.
    let tx = db.begin_read().map_err(engine)?;
    let table = tx.open_table(OUTBOX).map_err(engine)?;
    let mut out = Spooled::default();
    for entry in table.iter().map_err(engine)? {
        let (k, v) = entry.map_err(engine)?;
        let (key, row) = (k.value(), v.value());
        let room = limit - out.len();
        if room == 0 {
            break;
        }
        let lines = count(row);
        let first = key + 1 - lines;
        // A row's lines are numbered first..=key, one after another.
        let skipped = skip.partition_point(|&s| s <= key) - skip.partition_point(|&s| s < first);
        if skipped as u64 >= lines {
            continue;
        }
        if skipped > 0 {
            let text = text_of(row);
            for (seq, line) in lines_of(key, &text).filter(|(seq, _)| skip.binary_search(seq).is_err()).take(room) {
                out.push(seq, line);
            }
            continue;
        }
        if lines as usize <= room {
            match packed(row) {
                Some(packed) if packed.points.len() == 4 * packed.count => {
                    let points: Vec<u32> =
                        packed.points.chunks_exact(4).map(|h| u32::from_le_bytes([h[0], h[1], h[2], h[3]])).collect();
                    out.push_packed(first, &points, packed.piece());
                }
                Some(_) => out.push_joined(first, &text_of(row)),
                None => out.push_joined(first, row),
            }
            continue;
        }
        // Sending part of a row makes its removal rewrite the rest; leave it for the next
        // request unless nothing else goes into this one.
        if out.is_empty() && room > 0 {
            let text = text_of(row);
            out.push_joined(first, &text[..end_of_lines(&text, room)]);
        }
        break;
    }
    Ok(out)
}

/// Runs of lines with consecutive numbers, each with its last line's number.
type Runs = Vec<(u64, Vec<u8>)>;

/// Remove sent (or dead-lettered) lines inside the caller's transaction. A number not in the
/// spool is no error; lines of a row that are not listed stay, as rows of their own runs.
pub(super) fn remove(tx: &WriteTransaction, keys: &[u64]) -> Result<(), StoreError> {
    let mut sorted = keys.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let (Some(&lo), Some(&hi)) = (sorted.first(), sorted.last()) else { return Ok(()) };
    let mut table = tx.open_table(OUTBOX).map_err(engine)?;
    // The rows that may hold a listed line: from the first whose last line is at or above `lo`
    // to the first whose last line is at or above `hi`.
    let contiguous = (hi - lo).checked_add(1) == Some(sorted.len() as u64);
    let mut whole = Vec::new();
    // Rows that keep some of their lines: the row's key and what stays of it, as runs of
    // consecutive numbers, each keyed by its last line.
    let mut touched: Vec<(u64, Runs)> = Vec::new();
    let listed = |seq: u64| if contiguous { lo <= seq && seq <= hi } else { sorted.binary_search(&seq).is_ok() };
    let mut previous = None;
    for entry in table.range(lo..).map_err(engine)? {
        let (k, v) = entry.map_err(engine)?;
        let (key, row) = (k.value(), v.value());
        // Every row after the first one visited starts above that one's key, so above `lo`:
        // only the first and the last row need their lines counted.
        let first = match previous {
            Some(p) if key <= hi => p + 1,
            _ => key + 1 - count(row),
        };
        previous = Some(key);
        if contiguous && lo <= first && key <= hi {
            // The common case: the writer sent a run from the front of the spool.
            whole.push(key);
        } else if sorted.get(sorted.partition_point(|&s| s < first)).is_some_and(|&s| s <= key) {
            let mut runs: Runs = Vec::new();
            let text = text_of(row);
            for (seq, line) in lines_of(key, &text) {
                if listed(seq) {
                    continue;
                }
                match runs.last_mut() {
                    Some((last, run)) if *last + 1 == seq => {
                        run.push(b'\n');
                        run.extend_from_slice(line);
                        *last = seq;
                    }
                    _ => runs.push((seq, line.to_vec())),
                }
            }
            touched.push((key, runs));
        }
        if key >= hi {
            break;
        }
    }
    for key in whole {
        table.remove(key).map_err(engine)?;
    }
    for (key, runs) in touched {
        table.remove(key).map_err(engine)?;
        for (last, run) in runs {
            table.insert(last, run.as_slice()).map_err(engine)?;
        }
    }
    Ok(())
}

/// Delete the `n` oldest lines inside the caller's transaction; returns how many went.
pub(super) fn drop_oldest(tx: &WriteTransaction, n: u64) -> Result<u64, StoreError> {
    let mut table = tx.open_table(OUTBOX).map_err(engine)?;
    let mut dropped = 0;
    while dropped < n {
        let Some((k, v)) = table.first().map_err(engine)? else { break };
        let (key, row) = (k.value(), v.value().to_vec());
        drop((k, v));
        let lines = count(&row);
        if dropped + lines <= n {
            table.remove(key).map_err(engine)?;
            dropped += lines;
        } else {
            // Keep the row's newest lines under the same key (its last line's number), as text.
            let skip = (n - dropped) as usize;
            let text = text_of(&row);
            let cut = memchr::memchr_iter(b'\n', &text).nth(skip - 1).map_or(text.len(), |i| i + 1);
            table.insert(key, &text[cut..]).map_err(engine)?;
            dropped = n;
        }
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};

    use super::super::tables::OUTBOX;
    use super::ROW_LINES;
    use crate::store::boundary::engine;
    use crate::store::{CommitStore, EmbeddedStore, Lines, Outbox, WriteBatch};

    fn outbox_keeps_order_and_survives_reopen_and_emptying(pack: bool) {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            let batch = batch(pack, &["a", "b", "c"]);
            store.write(&batch).unwrap();
        }
        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(store.outbox_len().unwrap(), 3);
        let first = store.outbox_peek(2).unwrap();
        assert_eq!(first.iter().map(|(_, l)| l).collect::<Vec<_>>(), vec![b"a".as_slice(), b"b"]);
        store.outbox_remove(&first.keys(0..first.len())).unwrap();
        let rest = store.outbox_peek(10).unwrap();
        assert_eq!(rest.len(), 1);
        store.outbox_remove(&[rest.key(0)]).unwrap();
        store.write(&batch(pack, &["d", "e"])).unwrap();
        assert_eq!(store.outbox_drop_oldest(1).unwrap(), 1);
        let left = store.outbox_peek(10).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left.line(0), b"e");
    }

    fn remove_takes_exactly_the_listed_keys_in_any_order_with_repeats_and_gaps(pack: bool) {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let lines: Vec<String> = (0..10).map(|i| format!("l{i}")).collect();
        store.write(&batch(pack, &lines.iter().map(String::as_str).collect::<Vec<_>>())).unwrap();
        let keys: Vec<u64> = store.outbox_peek(10).unwrap().iter().map(|(k, _)| k).collect();
        // Not a run: the key between them stays; a repeat and a missing key are no error.
        store.outbox_remove(&[keys[4], keys[2], keys[2], 9_999]).unwrap();
        let left =
            |store: &EmbeddedStore| -> Vec<Vec<u8>> { store.outbox_peek(20).unwrap().iter().map(|(_, l)| l.to_vec()).collect() };
        let expect: Vec<Vec<u8>> = [0, 1, 3, 5, 6, 7, 8, 9].iter().map(|i| format!("l{i}").into_bytes()).collect();
        assert_eq!(left(&store), expect);
        // A run with a repeat that makes the list as long as a wider run: only the listed go.
        store.outbox_remove(&[keys[5], keys[5], keys[6]]).unwrap();
        let expect: Vec<Vec<u8>> = [0, 1, 3, 7, 8, 9].iter().map(|i| format!("l{i}").into_bytes()).collect();
        assert_eq!(left(&store), expect);
        store.outbox_remove(&[keys[0], keys[1], keys[3]]).unwrap();
        store.outbox_remove(&[]).unwrap();
        let expect: Vec<Vec<u8>> = [7, 8, 9].iter().map(|i| format!("l{i}").into_bytes()).collect();
        assert_eq!(left(&store), expect);
    }

    /// Lines as the writer sees them.
    fn peeked(store: &EmbeddedStore, limit: usize) -> Vec<(u64, String)> {
        peeked_except(store, limit, &[])
    }

    /// Lines as the writer sees them with `skip` in flight.
    fn peeked_except(store: &EmbeddedStore, limit: usize, skip: &[u64]) -> Vec<(u64, String)> {
        store.outbox_peek_except(limit, skip).unwrap().iter().map(|(k, l)| (k, String::from_utf8(l.to_vec()).unwrap())).collect()
    }

    /// A batch of `lines`; packed, with a hash of each line standing for its point.
    fn batch(pack: bool, lines: &[&str]) -> WriteBatch {
        let mut outbox = Lines::default();
        for line in lines {
            outbox.push(line);
            if pack {
                outbox.push_point(line.len() as u32);
            }
        }
        WriteBatch { outbox, ..Default::default() }
    }

    #[test]
    fn packed_rows_go_to_the_writer_as_stored_in_one_gzip_member() {
        use std::io::Read;
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        store.write(&batch(false, &["t1"])).unwrap();
        store.write(&batch(true, &["a x=1 1", "b x=2 2", "c x=3 3"])).unwrap();
        store.write(&batch(true, &["d x=4 4"])).unwrap();
        let row = store
            .with_db(|db| {
                let tx = db.begin_read().map_err(engine)?;
                let table = tx.open_table(OUTBOX).map_err(engine)?;
                Ok(table.get(4).map_err(engine)?.unwrap().value().to_vec())
            })
            .unwrap();
        let text = b"a x=1 1\nb x=2 2\nc x=3 3\n";
        assert_eq!(row[..5], [0, 3, 0, 0, 0], "a zero byte, then the count");
        assert_eq!(row[5..9], crc32fast::hash(text).to_le_bytes(), "the text's CRC-32");
        assert_eq!(row[9..13], (text.len() as u32).to_le_bytes(), "and length");
        assert_eq!(row[13..25], [7, 0, 0, 0, 7, 0, 0, 0, 7, 0, 0, 0], "each line's point hash");
        let spooled = store.outbox_peek(10).unwrap();
        assert_eq!(spooled.len(), 5);
        let body = spooled.body(1..4, true).unwrap();
        assert_eq!(body[10..body.len() - 10], row[25..], "the row goes as it was stored");
        // One gzip member, which a reader that stops after the first one reads whole.
        let mut text = String::new();
        flate2::read::GzDecoder::new(spooled.body(0..5, true).unwrap().as_slice()).read_to_string(&mut text).unwrap();
        assert_eq!(text, "t1\na x=1 1\nb x=2 2\nc x=3 3\nd x=4 4\n", "text rows before packed ones");
        assert_eq!(spooled.point_hashes(0..5, |_| 99), vec![99, 7, 7, 7, 7]);
    }

    #[test]
    fn a_damaged_packed_row_reads_as_empty_lines_and_the_rows_around_it_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        store.write(&batch(true, &["a x=1 1"])).unwrap();
        store.write(&batch(true, &["b x=2 2", "c x=3 3"])).unwrap();
        store.write(&batch(true, &["d x=4 4"])).unwrap();
        store.write(&batch(true, &["e x=5 5"])).unwrap();
        // Row 3 (lines 2 and 3) keeps its header and loses its deflate; row 4 is cut after the
        // zero byte.
        store
            .with_db(|db| {
                let tx = db.begin_write().map_err(engine)?;
                {
                    let mut table = tx.open_table(OUTBOX).map_err(engine)?;
                    let mut row = table.get(3).map_err(engine)?.unwrap().value().to_vec();
                    row.truncate(13 + 8);
                    row.extend_from_slice(b"not deflate");
                    table.insert(3, row.as_slice()).map_err(engine)?;
                    table.insert(4, [0u8, 7].as_slice()).map_err(engine)?;
                }
                tx.commit().map_err(engine)?;
                Ok(())
            })
            .unwrap();
        assert_eq!(store.outbox_len().unwrap(), 5);
        let all = peeked(&store, 10);
        let lines: Vec<&str> = all.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(lines, vec!["a x=1 1", "", "", "", "e x=5 5"]);
        assert_eq!(all.iter().map(|(k, _)| *k).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
        // Cut, skipped past, removed in part, dropped: nothing stops on them.
        assert_eq!(peeked_except(&store, 10, &[1, 2]).len(), 3);
        store.outbox_remove(&[2]).unwrap();
        assert_eq!(store.outbox_drop_oldest(3).unwrap(), 3);
        assert_eq!(peeked(&store, 10), vec![(5, "e x=5 5".into())]);
    }

    /// Each scenario on text rows and on packed ones.
    macro_rules! text_and_packed {
        ($($name:ident),* $(,)?) => {
            mod text {
                $(#[test]
                fn $name() {
                    super::$name(false)
                })*
            }
            mod packed {
                $(#[test]
                fn $name() {
                    super::$name(true)
                })*
            }
        };
    }

    text_and_packed!(
        outbox_keeps_order_and_survives_reopen_and_emptying,
        remove_takes_exactly_the_listed_keys_in_any_order_with_repeats_and_gaps,
        a_commit_is_one_row_and_a_limit_cuts_only_a_first_row_longer_than_it,
        lines_in_flight_are_left_out_by_rows_or_one_by_one,
        a_long_commit_is_cut_into_rows_the_writer_takes_whole,
        removing_inside_a_row_keeps_the_rest_in_order_and_numbers_go_on,
        a_spool_of_one_line_per_row_from_an_older_version_is_read_and_continued,
        a_run_across_rows_and_gaps_removes_exactly_its_lines
    );

    fn rows(store: &EmbeddedStore) -> u64 {
        store
            .with_db(|db| {
                let tx = db.begin_read().map_err(engine)?;
                let table = tx.open_table(OUTBOX).map_err(engine)?;
                table.len().map_err(engine)
            })
            .unwrap()
    }

    fn a_commit_is_one_row_and_a_limit_cuts_only_a_first_row_longer_than_it(pack: bool) {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        store.write(&batch(pack, &["a", "b", "c"])).unwrap();
        store.write(&batch(pack, &["d", "e"])).unwrap();
        assert_eq!(rows(&store), 2, "one row per commit");
        assert_eq!(store.outbox_len().unwrap(), 5);
        // The second row doesn't fit in four lines: it waits, whole, for the next request.
        let head = peeked(&store, 4);
        assert_eq!(head, vec![(1, "a".into()), (2, "b".into()), (3, "c".into())]);
        // A first row longer than the limit is cut.
        let head = peeked(&store, 2);
        assert_eq!(head, vec![(1, "a".into()), (2, "b".into())]);
        // The writer sent those two: the row keeps its last line under its number.
        store.outbox_remove(&head.iter().map(|(k, _)| *k).collect::<Vec<_>>()).unwrap();
        assert_eq!(peeked(&store, 10), vec![(3, "c".into()), (4, "d".into()), (5, "e".into())]);
        assert_eq!(store.outbox_len().unwrap(), 3);
        store.outbox_remove(&[3, 4]).unwrap();
        assert_eq!(peeked(&store, 10), vec![(5, "e".into())]);
        store.write(&batch(pack, &["f"])).unwrap();
        assert_eq!(peeked(&store, 10), vec![(5, "e".into()), (6, "f".into())]);
    }

    fn lines_in_flight_are_left_out_by_rows_or_one_by_one(pack: bool) {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        store.write(&batch(pack, &["a", "b", "c"])).unwrap();
        store.write(&batch(pack, &["d", "e"])).unwrap();
        store.write(&batch(pack, &["f"])).unwrap();
        let except = |limit, skip: &[u64]| peeked_except(&store, limit, skip);
        // The first row in flight: passed over whole.
        assert_eq!(except(10, &[1, 2, 3]), vec![(4, "d".into()), (5, "e".into()), (6, "f".into())]);
        // A row partly in flight gives its other lines; rows after it come whole if they fit.
        assert_eq!(except(10, &[2]), vec![(1, "a".into()), (3, "c".into()), (4, "d".into()), (5, "e".into()), (6, "f".into())]);
        assert_eq!(except(2, &[1]), vec![(2, "b".into()), (3, "c".into())]);
        assert_eq!(except(1, &[1, 2, 3, 4]), vec![(5, "e".into())]);
        // The limit still leaves a row that does not fit for the next request.
        assert_eq!(except(2, &[1, 2]), vec![(3, "c".into())]);
        // Numbers in `skip` that are not in the spool change nothing.
        assert_eq!(except(10, &[0, 7, 99]).len(), 6);
        assert!(except(10, &[1, 2, 3, 4, 5, 6]).is_empty());
        assert!(except(0, &[]).is_empty());
    }

    fn a_long_commit_is_cut_into_rows_the_writer_takes_whole(pack: bool) {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        store.write(&batch(pack, &["first"])).unwrap();
        let lines: Vec<String> = (0..2 * ROW_LINES + 3).map(|i| format!("l{i}")).collect();
        store.write(&batch(pack, &lines.iter().map(String::as_str).collect::<Vec<_>>())).unwrap();
        assert_eq!(rows(&store), 4, "one row, then the commit's {} lines in three", lines.len());
        assert_eq!(store.outbox_len().unwrap(), 1 + lines.len() as u64);
        // Every line once, in order, numbered one after another.
        let all = peeked(&store, usize::MAX);
        let expect: Vec<(u64, String)> = std::iter::once("first".to_owned())
            .chain(lines.iter().cloned())
            .enumerate()
            .map(|(i, l)| (i as u64 + 1, l))
            .collect();
        assert_eq!(all, expect);
        // Room for a row and a half: the first two rows (1 + ROW_LINES lines), nothing cut.
        let head = peeked(&store, ROW_LINES + ROW_LINES / 2);
        assert_eq!(head.len(), 1 + ROW_LINES);
        store.outbox_remove(&head.iter().map(|(k, _)| *k).collect::<Vec<_>>()).unwrap();
        assert_eq!(rows(&store), 2, "whole rows went");
        assert_eq!(peeked(&store, usize::MAX), expect[1 + ROW_LINES..]);
    }

    fn removing_inside_a_row_keeps_the_rest_in_order_and_numbers_go_on(pack: bool) {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        store.write(&batch(pack, &["l1", "l2", "l3", "l4", "l5", "l6"])).unwrap();
        // One rejected line in the middle of a row, dead-lettered and removed on its own.
        store.outbox_remove(&[3]).unwrap();
        store.outbox_remove(&[5, 6]).unwrap();
        assert_eq!(peeked(&store, 10), vec![(1, "l1".into()), (2, "l2".into()), (4, "l4".into())]);
        assert_eq!(store.outbox_len().unwrap(), 3);
        // The newest line is gone: a new line still gets a number above every one given.
        store.write(&batch(pack, &["l7"])).unwrap();
        let all = peeked(&store, 10);
        assert_eq!(all.iter().map(|(_, l)| l.as_str()).collect::<Vec<_>>(), vec!["l1", "l2", "l4", "l7"]);
        assert!(all.windows(2).all(|w| w[0].0 < w[1].0), "{all:?}");
        assert_eq!(store.outbox_drop_oldest(2).unwrap(), 2);
        assert_eq!(peeked(&store, 10).iter().map(|(_, l)| l.as_str()).collect::<Vec<_>>(), vec!["l4", "l7"]);
        assert_eq!(store.outbox_drop_oldest(10).unwrap(), 2);
        assert_eq!(store.outbox_len().unwrap(), 0);
    }

    fn a_spool_of_one_line_per_row_from_an_older_version_is_read_and_continued(pack: bool) {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        // What the previous layout wrote: a row per line, keyed by its own sequence number.
        store
            .with_db(|db| {
                let tx = db.begin_write().map_err(engine)?;
                {
                    let mut table = tx.open_table(OUTBOX).map_err(engine)?;
                    for (k, line) in [(7u64, "old7"), (8, "old8"), (9, "old9")] {
                        table.insert(k, line.as_bytes()).map_err(engine)?;
                    }
                }
                tx.commit().map_err(engine)?;
                Ok(())
            })
            .unwrap();
        drop(store);
        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(store.outbox_len().unwrap(), 3);
        store.write(&batch(pack, &["new10", "new11"])).unwrap();
        assert_eq!(
            peeked(&store, 10),
            vec![(7, "old7".into()), (8, "old8".into()), (9, "old9".into()), (10, "new10".into()), (11, "new11".into())]
        );
        store.outbox_remove(&[7, 8]).unwrap();
        assert_eq!(store.outbox_drop_oldest(2).unwrap(), 2);
        assert_eq!(peeked(&store, 10), vec![(11, "new11".into())]);
    }

    fn a_run_across_rows_and_gaps_removes_exactly_its_lines(pack: bool) {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        store.write(&batch(pack, &["l1", "l2", "l3", "l4", "l5", "l6"])).unwrap();
        store.outbox_remove(&[3]).unwrap();
        store.write(&batch(pack, &["l7", "l8", "l9"])).unwrap();
        store.write(&batch(pack, &["l10"])).unwrap();
        // Rows now: 1-2, 4-6, 7-9, 10. A run from 2 to 8 (3 is gone already) cuts the first
        // and the third row and takes the second whole.
        store.outbox_remove(&(2..=8).collect::<Vec<u64>>()).unwrap();
        assert_eq!(peeked(&store, 10), vec![(1, "l1".into()), (9, "l9".into()), (10, "l10".into())]);
        assert_eq!(store.outbox_len().unwrap(), 3);
        store.outbox_remove(&[1, 9, 10]).unwrap();
        assert_eq!(store.outbox_len().unwrap(), 0);
    }
}
