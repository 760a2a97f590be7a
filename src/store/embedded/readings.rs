//! The readings table, a row per device and millisecond holding that uplink's readings packed
//! together, and each device's series extents: the one file that knows their rows' format.
//!
//! A row per reading, keyed (series, time), cost six inserts an uplink and, with many
//! devices, a leaf per series touched by every commit; a row per uplink writes 4–5× cheaper
//! and reads a series back within 1.0–1.7× (BENCHMARKS.md, "What a thousand devices cost
//! each layout"). A series' readings are its device's rows filtered to its number, so a read
//! of one quantity walks the device's rows of the window; the newest and oldest reading of
//! each series are kept in [`EXTENTS`] so that no read walks a device's whole history.
//!
//! A row is a run of entries in series order: series number (u32), value (f64), flag (u8),
//! the reason's length (LEB128) and the reason's UTF-8 bytes, integers little-endian. A
//! reason an earlier entry of the row wrote is not written again: the flag byte has
//! [`SAME_REASON`] set and the earlier bytes' offset in the row and length follow (LEB128).
//! An uplink stored at its reception time gives every reading the same explanation, some
//! 126 bytes; written for each of six readings it made such a row about four times larger.
//! A reason that begins with earlier bytes and goes on (that explanation, then `; spike: …`
//! for the one reading that also jumped) has [`MORE_REASON`] set as well: after the
//! reference, the length (LEB128) and bytes of the rest.
//! An extents row is a run of (series number u32, first ms i64, last ms i64), in series order.

use std::borrow::Cow;
use std::ops::Range;

use redb::{AccessGuard, ReadableTable, Table, WriteTransaction};

use super::tables::{EXTENTS, READINGS};
use crate::store::boundary::{engine, StoreError};

/// (device number, ms): a row's key.
pub(super) type Key = (u32, i64);

/// The readings table, open for writing.
pub(super) type RowsTable<'t> = Table<'t, Key, &'static [u8]>;

/// The extents table, open for writing.
pub(super) type ExtentsTable<'t> = Table<'t, u32, &'static [u8]>;

/// A series as the table finds it: (device number, series number).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct SeriesKey {
    pub device: u32,
    pub series: u32,
}

/// One reading in a row.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Entry<'r> {
    pub series: u32,
    pub value: f64,
    pub flag: u8,
    /// Borrowed from the row, unless it was written as earlier bytes and a rest.
    pub reason: Cow<'r, str>,
}

/// Set in an entry's flag byte: its reason is, or begins with, bytes an earlier entry of the
/// row wrote.
const SAME_REASON: u8 = 0x80;

/// Set with [`SAME_REASON`]: the reason goes on after the earlier bytes, with bytes of its own.
const MORE_REASON: u8 = 0x40;

/// Where an entry's reason is in its row: the first part, and the rest (empty unless the first
/// part is an earlier entry's bytes).
#[derive(Clone, Debug, PartialEq)]
struct ReasonBytes {
    head: Range<usize>,
    tail: Range<usize>,
}

fn cut_short() -> StoreError {
    StoreError::Corrupt("a readings row is cut short or its reason is not UTF-8".into())
}

/// The entries of a row, in series order.
pub(super) fn entries(row: &[u8]) -> impl Iterator<Item = Result<Entry<'_>, StoreError>> {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at >= row.len() {
            return None;
        }
        let entry = header(row, &mut at)
            .and_then(|(series, value, flag, spans)| Ok(Entry { series, value, flag, reason: reason_at(row, &spans)? }));
        if entry.is_err() {
            at = row.len();
        }
        Some(entry)
    })
}

/// The entry at `*at` without its reason checked, moving `*at` past it: (series, value,
/// flag, where its reason is). A series read checks only the reasons it returns.
fn header(row: &[u8], at: &mut usize) -> Result<(u32, f64, u8, ReasonBytes), StoreError> {
    let start = *at;
    let fixed = row.get(start..start + 13).ok_or_else(cut_short)?;
    let series = u32::from_le_bytes(fixed[0..4].try_into().unwrap_or_default());
    let value = f64::from_le_bytes(fixed[4..12].try_into().unwrap_or_default());
    let flag = fixed[12];
    *at += 13;
    if flag & SAME_REASON != 0 {
        let from = leb128(row, at)?;
        let head = from..from.checked_add(leb128(row, at)?).ok_or_else(cut_short)?;
        // Only bytes of an earlier entry.
        if head.is_empty() || head.end > start {
            return Err(cut_short());
        }
        let tail = if flag & MORE_REASON != 0 {
            let tail = own(row, at)?;
            if tail.is_empty() {
                return Err(cut_short());
            }
            tail
        } else {
            *at..*at
        };
        return Ok((series, value, flag & !(SAME_REASON | MORE_REASON), ReasonBytes { head, tail }));
    }
    if flag & MORE_REASON != 0 {
        return Err(cut_short());
    }
    let head = own(row, at)?;
    Ok((series, value, flag, ReasonBytes { head, tail: *at..*at }))
}

/// Bytes of the entry's own at `*at` (their length, LEB128, then them), moving `*at` past them.
fn own(row: &[u8], at: &mut usize) -> Result<Range<usize>, StoreError> {
    let len = leb128(row, at)?;
    let span = *at..at.checked_add(len).ok_or_else(cut_short)?;
    if span.end > row.len() {
        return Err(cut_short());
    }
    *at = span.end;
    Ok(span)
}

/// The unsigned LEB128 number at `*at`, moving `*at` past it.
fn leb128(row: &[u8], at: &mut usize) -> Result<usize, StoreError> {
    let mut n = 0usize;
    for shift in (0..35).step_by(7) {
        let b = *row.get(*at).ok_or_else(cut_short)?;
        *at += 1;
        n |= usize::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(n);
        }
    }
    Err(cut_short())
}

fn push_leb128(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn reason_at<'r>(row: &'r [u8], at: &ReasonBytes) -> Result<Cow<'r, str>, StoreError> {
    let text = |span: &Range<usize>| std::str::from_utf8(row.get(span.clone()).ok_or_else(cut_short)?).map_err(|_| cut_short());
    let head = text(&at.head)?;
    if at.tail.is_empty() {
        return Ok(Cow::Borrowed(head));
    }
    Ok(Cow::Owned([head, text(&at.tail)?].concat()))
}

/// The entry of `series` in a row, its reason unchecked: (value, flag, where its reason is).
fn locate(row: &[u8], series: u32) -> Result<Option<(f64, u8, ReasonBytes)>, StoreError> {
    let mut at = 0;
    while at < row.len() {
        let (s, value, flag, span) = header(row, &mut at)?;
        if s >= series {
            return Ok((s == series).then_some((value, flag, span)));
        }
    }
    Ok(None)
}

/// A row being built, entries in series order.
#[derive(Default)]
struct Packed {
    bytes: Vec<u8>,
    /// The reasons written out so far, as ranges of `bytes`.
    reasons: Vec<Range<usize>>,
}

impl Packed {
    fn clear(&mut self) {
        self.bytes.clear();
        self.reasons.clear();
    }

    /// Append an entry.
    fn push(&mut self, e: &Entry<'_>) {
        let out = &mut self.bytes;
        out.extend_from_slice(&e.series.to_le_bytes());
        out.extend_from_slice(&e.value.to_le_bytes());
        let reason = e.reason.as_bytes();
        if !reason.is_empty() {
            // The whole reason as earlier bytes, else its longest first failures (a reason is
            // failures joined by "; ") and the rest of its own: found from the earlier reason
            // that begins with most of it.
            let common = |r: &Range<usize>| common_prefix(&out[r.clone()], reason);
            let best = self.reasons.iter().map(|r| (common(r), r.start)).max_by_key(|&(n, _)| n);
            let head = best.and_then(|(n, from)| {
                let cut = if n == reason.len() {
                    Some(n)
                } else {
                    memchr::memrchr_iter(b';', &reason[..=n]).find(|&at| reason.get(at + 1) == Some(&b' '))
                };
                cut.filter(|&cut| cut > 0).map(|cut| (from, cut))
            });
            if let Some((from, cut)) = head {
                let rest = &reason[cut..];
                out.push(e.flag | SAME_REASON | if rest.is_empty() { 0 } else { MORE_REASON });
                push_leb128(out, from);
                push_leb128(out, cut);
                if !rest.is_empty() {
                    push_leb128(out, rest.len());
                    out.extend_from_slice(rest);
                }
                return;
            }
        }
        out.push(e.flag);
        push_leb128(out, reason.len());
        out.extend_from_slice(reason);
        if !reason.is_empty() {
            self.reasons.push(out.len() - reason.len()..out.len());
        }
    }
}

/// How many bytes `a` and `b` begin with alike (compared 16 at a time: a byte at a time cost
/// more than the bytes a shared explanation saves).
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let mut i = 0;
    while i + 16 <= n && a[i..i + 16] == b[i..i + 16] {
        i += 16;
    }
    while i < n && a[i] == b[i] {
        i += 1;
    }
    i
}

/// A reading of one series as a series read returns it: its row stays borrowed.
pub(super) struct Stored<'t> {
    pub ms: i64,
    pub value: f64,
    pub flag: u8,
    row: AccessGuard<'t, &'static [u8]>,
    reason: ReasonBytes,
}

impl Stored<'_> {
    /// The reason, checked here (a read that does not ask for it does not check it).
    pub(super) fn reason(&self) -> Result<Cow<'_, str>, StoreError> {
        reason_at(self.row.value(), &self.reason)
    }
}

/// The readings of series `s` with `from <= ms < to`, oldest first (`.rev()` for newest first).
pub(super) fn series<'t, T: ReadableTable<Key, &'static [u8]>>(
    table: &'t T,
    s: SeriesKey,
    from: i64,
    to: i64,
) -> Result<impl DoubleEndedIterator<Item = Result<Stored<'t>, StoreError>> + 't, StoreError> {
    let rows = table.range((s.device, from)..(s.device, to.max(from))).map_err(engine)?;
    Ok(rows.filter_map(move |row| {
        let (k, v) = match row {
            Ok(kv) => kv,
            Err(e) => return Some(Err(engine(e))),
        };
        match locate(v.value(), s.series) {
            Ok(Some((value, flag, reason))) => Some(Ok(Stored { ms: k.value().1, value, flag, row: v, reason })),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }))
}

/// The reading of series `s` at `ms`.
pub(super) fn at<T: ReadableTable<Key, &'static [u8]>>(
    table: &T,
    s: SeriesKey,
    ms: i64,
) -> Result<Option<Stored<'_>>, StoreError> {
    let Some(row) = table.get((s.device, ms)).map_err(engine)? else { return Ok(None) };
    let found = locate(row.value(), s.series)?;
    Ok(found.map(|(value, flag, reason)| Stored { ms, value, flag, row, reason }))
}

/// Call `f(ms, series, value, flag)` for each reading of `device` with `from <= ms < to`,
/// oldest first, in series order within a row (reasons unchecked).
pub(super) fn each_entry<T: ReadableTable<Key, &'static [u8]>>(
    table: &T,
    device: u32,
    from: i64,
    to: i64,
    mut f: impl FnMut(i64, u32, f64, u8),
) -> Result<(), StoreError> {
    for row in table.range((device, from)..(device, to.max(from))).map_err(engine)? {
        let (k, v) = row.map_err(engine)?;
        let (ms, row) = (k.value().1, v.value());
        let mut at = 0;
        while at < row.len() {
            let (series, value, flag, _) = header(row, &mut at)?;
            f(ms, series, value, flag);
        }
    }
    Ok(())
}

/// One reading to store: its row's key and the entry.
pub(super) struct ToStore<'b> {
    pub key: Key,
    pub entry: Entry<'b>,
}

/// Store readings, grouped into their rows in key order (the caller sorts `all` by key and
/// series; of two readings of one series at one key, the later one in `all` stays), and
/// widen each device's series extents once. A row already stored keeps the entries of series
/// the batch does not name. `replaced` hears, for each reading kept, the (value, flag) it
/// replaced, or `None` for a new one.
pub(super) fn write(
    (table, extents): &mut (RowsTable<'_>, ExtentsTable<'_>),
    all: &[ToStore<'_>],
    mut replaced: impl FnMut(usize, Option<(f64, u8)>),
) -> Result<(), StoreError> {
    let mut row = Packed { bytes: Vec::with_capacity(128), ..Default::default() };
    let mut kept: Vec<usize> = Vec::with_capacity(8);
    let mut seen: Vec<Extent> = Vec::new();
    let mut start = 0;
    while start < all.len() {
        let key = all[start].key;
        let mut end = start + 1;
        while end < all.len() && all[end].key == key {
            end += 1;
        }
        // The last of each series' readings at this key.
        kept.clear();
        for i in start..end {
            if i + 1 < end && all[i + 1].entry.series == all[i].entry.series {
                continue;
            }
            kept.push(i);
            let (n, ms) = (all[i].entry.series, key.1);
            match seen.iter_mut().find(|e| e.0 == n) {
                Some(e) => (e.1, e.2) = (e.1.min(ms), e.2.max(ms)),
                None => seen.push((n, ms, ms)),
            }
        }
        row.clear();
        for &i in &kept {
            row.push(&all[i].entry);
        }
        let old = table.insert(key, row.bytes.as_slice()).map_err(engine)?.map(|old| old.value().to_vec());
        if let Some(old) = old {
            // Merge with the stored row: its entries of other series stay.
            let mut merged = Packed { bytes: Vec::with_capacity(old.len() + row.bytes.len()), ..Default::default() };
            let mut others = false;
            let mut new = kept.iter().peekable();
            for e in entries(&old) {
                let e = e?;
                while let Some(&i) = new.next_if(|&&i| all[i].entry.series < e.series) {
                    replaced(i, None);
                    merged.push(&all[i].entry);
                }
                if let Some(&i) = new.next_if(|&&i| all[i].entry.series == e.series) {
                    replaced(i, Some((e.value, e.flag)));
                    merged.push(&all[i].entry);
                } else {
                    others = true;
                    merged.push(&e);
                }
            }
            for &i in new {
                replaced(i, None);
                merged.push(&all[i].entry);
            }
            if others {
                table.insert(key, merged.bytes.as_slice()).map_err(engine)?;
            }
        } else {
            for &i in &kept {
                replaced(i, None);
            }
        }
        start = end;
        // A device's last row of the batch: its extents, widened once.
        if all.get(end).is_none_or(|next| next.key.0 != key.0) {
            seen.sort_unstable();
            widen(extents, key.0, &seen)?;
            seen.clear();
        }
    }
    Ok(())
}

/// A series' extent: (series, first ms, last ms).
pub(super) type Extent = (u32, i64, i64);

fn extents_of(row: &[u8]) -> impl Iterator<Item = Extent> + '_ {
    row.chunks_exact(20).map(|c| {
        let n = u32::from_le_bytes(c[0..4].try_into().unwrap_or_default());
        let first = i64::from_le_bytes(c[4..12].try_into().unwrap_or_default());
        let last = i64::from_le_bytes(c[12..20].try_into().unwrap_or_default());
        (n, first, last)
    })
}

/// The extents of a device's series: the first is a lower bound (retention may have removed
/// readings after it), the last is the newest reading's time unless the series has none left.
pub(super) fn extents<T: ReadableTable<u32, &'static [u8]>>(table: &T, device: u32) -> Result<Vec<Extent>, StoreError> {
    Ok(table.get(device).map_err(engine)?.map(|row| extents_of(row.value()).collect()).unwrap_or_default())
}

/// Widen a device's series extents to take in `seen` (series, first, last; sorted by series).
fn widen(table: &mut ExtentsTable<'_>, device: u32, seen: &[Extent]) -> Result<(), StoreError> {
    let mut all = extents(table, device)?;
    let before = all.clone();
    for &(n, first, last) in seen {
        match all.binary_search_by_key(&n, |e| e.0) {
            Ok(i) => {
                all[i].1 = all[i].1.min(first);
                all[i].2 = all[i].2.max(last);
            }
            Err(i) => all.insert(i, (n, first, last)),
        }
    }
    if all != before {
        put_extents(table, device, &all)?;
    }
    Ok(())
}

/// Raise the first times of some of a device's series (series, new first) after retention
/// removed their readings before it.
fn raise_firsts(table: &mut ExtentsTable<'_>, device: u32, firsts: &[(u32, i64)]) -> Result<(), StoreError> {
    let mut all = extents(table, device)?;
    let mut raised = false;
    for e in &mut all {
        if let Some(&(_, first)) = firsts.iter().find(|f| f.0 == e.0).filter(|f| f.1 > e.1) {
            e.1 = first;
            raised = true;
        }
    }
    if raised {
        put_extents(table, device, &all)?;
    }
    Ok(())
}

fn put_extents(table: &mut ExtentsTable<'_>, device: u32, all: &[Extent]) -> Result<(), StoreError> {
    let mut row = Vec::with_capacity(all.len() * 20);
    for (n, first, last) in all {
        row.extend_from_slice(&n.to_le_bytes());
        row.extend_from_slice(&first.to_le_bytes());
        row.extend_from_slice(&last.to_le_bytes());
    }
    table.insert(device, row.as_slice()).map_err(engine)?;
    Ok(())
}

/// Remove a device's readings older than their series' cutoff (`cuts`: series, cutoff ms)
/// from its rows at `rows` (ms), a row left empty with them, and raise the first times of the
/// cut series to their cutoff or `reached`, before which the caller found every such row.
/// The number of readings removed.
pub(super) fn expire(
    (table, extents): &mut (RowsTable<'_>, ExtentsTable<'_>),
    device: u32,
    rows: &[i64],
    cuts: &[(u32, i64)],
    reached: i64,
) -> Result<u64, StoreError> {
    let before = |series: u32| cuts.iter().find(|c| c.0 == series).map(|c| c.1);
    let mut kept = Packed::default();
    let mut removed = 0;
    for &ms in rows {
        let key = (device, ms);
        let Some(row) = table.get(key).map_err(engine)?.map(|r| r.value().to_vec()) else { continue };
        kept.clear();
        let mut gone = 0;
        for e in entries(&row) {
            let e = e?;
            if before(e.series).is_some_and(|b| ms < b) {
                gone += 1;
            } else {
                kept.push(&e);
            }
        }
        if gone == 0 {
            continue;
        }
        removed += gone;
        if kept.bytes.is_empty() {
            table.remove(key).map_err(engine)?;
        } else {
            table.insert(key, kept.bytes.as_slice()).map_err(engine)?;
        }
    }
    let firsts: Vec<(u32, i64)> = cuts.iter().map(|&(n, b)| (n, b.min(reached))).collect();
    raise_firsts(extents, device, &firsts)?;
    Ok(removed)
}

/// Remove every reading of a device and its extents; the number of readings removed.
pub(super) fn remove_device(tx: &WriteTransaction, device: u32) -> Result<u64, StoreError> {
    let (mut table, mut extents) = open(tx)?;
    let mut n = 0;
    for row in table.extract_from_if((device, i64::MIN)..=(device, i64::MAX), |_, _| true).map_err(engine)? {
        let (_, v) = row.map_err(engine)?;
        n += entries(v.value()).count() as u64;
    }
    extents.remove(device).map_err(engine)?;
    Ok(n)
}

/// Open the tables for writing.
pub(super) fn open(tx: &WriteTransaction) -> Result<(RowsTable<'_>, ExtentsTable<'_>), StoreError> {
    Ok((tx.open_table(READINGS).map_err(engine)?, tx.open_table(EXTENTS).map_err(engine)?))
}

/// The number of readings in a table.
pub(super) fn count<T: ReadableTable<Key, &'static [u8]>>(table: &T) -> Result<u64, StoreError> {
    let mut n = 0;
    for row in table.iter().map_err(engine)? {
        let (_, v) = row.map_err(engine)?;
        for e in entries(v.value()) {
            e?;
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::ReadableDatabase;

    #[test]
    fn each_entry_gives_a_devices_readings_of_every_series_in_its_range_only() {
        let db = redb::Database::builder().create_with_backend(redb::backends::InMemoryBackend::new()).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut tables = open(&tx).unwrap();
            let mut all = Vec::new();
            let one = |key, series, value, flag, reason| ToStore {
                key,
                entry: Entry { series, value, flag, reason: Cow::Borrowed(reason) },
            };
            for ms in 0..20 {
                all.push(one((4, ms), 1, ms as f64, 0, "why"));
                if ms % 2 == 0 {
                    all.push(one((4, ms), 2, -(ms as f64), 1, "why"));
                }
            }
            // Another device's rows around them stay out.
            all.push(one((3, 7), 1, 99.0, 0, ""));
            all.push(one((5, 3), 1, 99.0, 0, ""));
            all.sort_by_key(|r| (r.key, r.entry.series));
            write(&mut tables, &all, |_, _| {}).unwrap();
        }
        tx.commit().unwrap();
        let tx = db.begin_read().unwrap();
        let table = tx.open_table(READINGS).unwrap();
        let mut got = Vec::new();
        each_entry(&table, 4, 5, 11, |ms, series, value, flag| got.push((ms, series, value, flag))).unwrap();
        let mut want = Vec::new();
        for ms in 5..11 {
            want.push((ms, 1, ms as f64, 0));
            if ms % 2 == 0 {
                want.push((ms, 2, -(ms as f64), 1));
            }
        }
        assert_eq!(got, want);
        each_entry(&table, 4, 11, 5, |_, _, _, _| panic!("an empty range")).unwrap();
    }

    #[test]
    fn a_row_reads_back_what_was_packed_and_a_cut_row_is_an_error_not_a_panic() {
        let long = "x".repeat(300);
        let stuck = "stuck: unchanged for 29.8 h";
        let put = [
            Entry { series: 1, value: 21.5, flag: 0, reason: "".into() },
            Entry { series: 3, value: -3.25, flag: 2, reason: stuck.into() },
            Entry { series: 5, value: 7.0, flag: 1, reason: stuck.into() },
            Entry { series: 7, value: 1.0, flag: 0, reason: "".into() },
            Entry { series: 8, value: 2.0, flag: 0, reason: "".into() },
            Entry { series: 9, value: f64::NAN, flag: 1, reason: long.as_str().into() },
            Entry { series: 10, value: 3.0, flag: 2, reason: long.as_str().into() },
            Entry { series: 12, value: 4.0, flag: 1, reason: stuck.into() },
        ];
        let mut row = Packed::default();
        let mut ends = Vec::new();
        for e in &put {
            row.push(e);
            ends.push(row.bytes.len());
        }
        let row = row.bytes;
        // Each reason is written once (a length byte for each of the three empty ones and the
        // first `stuck`, two for `long`); series 5 and 12 refer back to `stuck` (offset and
        // length, a byte each), series 10 to `long` (offset 113 in a byte, length 300 in two).
        assert_eq!(row.len(), 8 * 13 + 4 + stuck.len() + 2 + long.len() + 2 + 3 + 2);
        let back: Vec<Entry> = entries(&row).collect::<Result<_, _>>().unwrap();
        assert_eq!(back.len(), put.len());
        for (b, p) in back.iter().zip(&put) {
            assert!(b.series == p.series && b.flag == p.flag && b.reason == p.reason, "{b:?} read back as put: {p:?}");
            assert!(b.value == p.value || (b.value.is_nan() && p.value.is_nan()));
        }
        for (i, p) in put.iter().enumerate() {
            let (value, flag, reason) = locate(&row, p.series).unwrap().unwrap();
            assert_eq!((flag, reason_at(&row, &reason).unwrap()), (p.flag, p.reason.clone()), "entry {i} located");
            assert!(value == p.value || value.is_nan());
        }
        assert_eq!(locate(&row, 4).unwrap(), None);
        for cut in (1..row.len()).filter(|c| !ends.contains(c)) {
            assert!(entries(&row[..cut]).any(|e| e.is_err()), "a row cut at {cut} reads as an error");
        }
        let mut bad = Packed::default();
        bad.push(&Entry { series: 1, value: 0.0, flag: 0, reason: "ab".into() });
        let mut bad = bad.bytes;
        let n = bad.len();
        bad[n - 1] = 0xff;
        assert!(entries(&bad).next().unwrap().is_err(), "a reason that is not UTF-8");
        // A reason referring to bytes not before its entry is an error.
        let mut ahead = row[..13].to_vec();
        ahead[12] = SAME_REASON | 1;
        ahead.extend_from_slice(&[0, 5, b'a', b'b', b'c', b'd', b'e']);
        assert!(entries(&ahead).next().unwrap().is_err());
        assert!(locate(&ahead, 1).is_err());
    }

    #[test]
    fn a_reason_that_begins_with_an_earlier_one_writes_only_its_rest() {
        let future = "future: measurement time 2026-12-09T00:00:00Z is 9000 min after its reception (more than 10 min); stored at the reception time";
        let spike = |n: u32| {
            format!("{future}; spike: changed by {n}.000 Cel against 1 Cel at 2026-12-03 10:00:00Z (0 min apart); at most 10 Cel per hour")
        };
        let (one, two, three) = (spike(1), spike(2), format!("{}; stuck: 3 Cel unchanged since then (1.0 h)", spike(1)));
        let put: Vec<Entry> = [future, &one, future, &two, &three, "future: measurement time", "range: below"]
            .iter()
            .enumerate()
            .map(|(i, r)| Entry { series: i as u32 + 1, value: i as f64, flag: 1, reason: Cow::Borrowed(*r) })
            .collect();
        let mut packed = Packed::default();
        let mut ends = Vec::new();
        for e in &put {
            packed.push(e);
            ends.push(packed.bytes.len());
        }
        let row = packed.bytes;
        // `future` once (126 bytes, a length byte); `one` and `two` refer to it (offset and
        // length, a byte each) and add their rest (a length byte); the second `future` refers
        // to it; `three` is `one` and more, but `one` is no run of bytes: it refers to `future`
        // and adds the two failures after it (149 bytes, two length bytes). The start of
        // `future` refers into it; `range` is written out.
        let rest = |r: &str| r.len() - future.len();
        let want = 7 * 13
            + (1 + future.len())
            + (2 + 1 + rest(&one))
            + 2
            + (2 + 1 + rest(&two))
            + (2 + 2 + rest(&three))
            + 2
            + (1 + "range: below".len());
        assert_eq!(row.len(), want);
        let back: Vec<Entry> = entries(&row).collect::<Result<_, _>>().unwrap();
        assert_eq!(back, put);
        assert!(matches!(back[0].reason, Cow::Borrowed(_)) && matches!(back[1].reason, Cow::Owned(_)));
        for p in &put {
            let (_, flag, spans) = locate(&row, p.series).unwrap().unwrap();
            assert_eq!((flag, reason_at(&row, &spans).unwrap()), (1, p.reason.clone()));
        }
        for cut in (1..row.len()).filter(|c| !ends.contains(c)) {
            assert!(entries(&row[..cut]).any(|e| e.is_err()), "a row cut at {cut} reads as an error");
        }
        // The rest of `one` (after its entry's 13 bytes, the reference and the rest's length)
        // made not UTF-8; a rest flagged without a reference; a flagged rest that is empty.
        let mut bad = row.clone();
        let one_rest = ends[0] + 13 + 2 + 1;
        bad[one_rest] = 0xff;
        assert!(entries(&bad).nth(1).unwrap().is_err(), "a rest that is not UTF-8");
        let mut alone = row[..13].to_vec();
        alone[12] = MORE_REASON | 1;
        alone.extend_from_slice(&[1, b'a']);
        assert!(entries(&alone).next().unwrap().is_err(), "a rest without a reference");
        let mut empty = row[..ends[0]].to_vec();
        empty.extend_from_slice(&row[ends[0]..ends[0] + 12]);
        empty.extend_from_slice(&[SAME_REASON | MORE_REASON | 1, 2, 5, 0]);
        assert!(entries(&empty).nth(1).unwrap().is_err(), "a flagged rest that is empty");
    }

    #[test]
    fn a_row_merged_with_a_batch_keeps_the_reasons_its_other_entries_shared() {
        let db = redb::Database::builder().create_with_backend(redb::backends::InMemoryBackend::new()).unwrap();
        let one = |series, value, reason| ToStore {
            key: (1, 0),
            entry: Entry { series, value, flag: 1, reason: Cow::Borrowed(reason) },
        };
        let why = "measurement time 2026-12-09T00:00:00Z is 9000 min after its reception";
        // Besides the reason once: its length, then two references to it (offset and length, a
        // byte each); after the merge, an empty reason's length, the reason's, one reference.
        for (batch, lengths) in [(vec![one(1, 1.0, why), one(2, 2.0, why), one(3, 3.0, why)], 5), (vec![one(1, 10.0, "")], 4)] {
            let tx = db.begin_write().unwrap();
            write(&mut open(&tx).unwrap(), &batch, |_, _| {}).unwrap();
            tx.commit().unwrap();
            let tx = db.begin_read().unwrap();
            let table = tx.open_table(READINGS).unwrap();
            // Written once, also after the merge took the entry that wrote it.
            assert_eq!(table.get((1, 0)).unwrap().unwrap().value().len(), 3 * 13 + lengths + why.len());
            let read = |series| {
                let s = at(&table, SeriesKey { device: 1, series }, 0).unwrap().unwrap();
                (s.value, s.reason().unwrap().into_owned())
            };
            assert_eq!(read(2), (2.0, why.to_owned()));
            assert_eq!(read(3), (3.0, why.to_owned()));
            assert_eq!(read(1), (batch[0].entry.value, batch[0].entry.reason.to_string()));
        }
    }
}
