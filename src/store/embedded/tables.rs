//! The embedded store's tables, in one place: every file of the store takes the definitions it
//! reads or writes from here, so no file has to import another for its table.

use redb::TableDefinition;

use crate::aggregates::WindowTuple;

/// (device number, time in ms since the epoch) → the device's readings at that millisecond,
/// packed as `readings` says: a row per uplink (BENCHMARKS.md, "What a thousand devices cost
/// each layout").
pub(super) const READINGS: TableDefinition<(u32, i64), &[u8]> = TableDefinition::new("readings_by_device");
/// Device number → the first and last time of each of its series (`readings::extents`).
pub(super) const EXTENTS: TableDefinition<u32, &[u8]> = TableDefinition::new("series_extents");
/// (device, quantity name) → the series' number, given once and never reused or removed;
/// (device, "") numbers the device itself, from the same sequence.
pub(super) const SERIES: TableDefinition<(&str, &str), u32> = TableDefinition::new("series");
/// Number → (device, quantity name), or (device, "") for a device's own number.
pub(super) const SERIES_NAMES: TableDefinition<u32, (&str, &str)> = TableDefinition::new("series_names");
/// The readings of stores written before a row per uplink, keyed (series number, time) →
/// (value, flag, reason); moved into [`READINGS`] in steps when such a store is opened.
pub(super) const READINGS_BY_SERIES: TableDefinition<(u32, i64), (f64, u8, &str)> = TableDefinition::new("readings_by_series");
/// The readings of stores written before series numbers, keyed (device, quantity name,
/// time); moved into [`READINGS_BY_SERIES`] when such a store is opened.
pub(super) const READINGS_BY_NAME: TableDefinition<(&str, &str, i64), (f64, u8, &str)> = TableDefinition::new("readings");
/// device → last reception time in ms since the epoch.
pub(super) const LAST_SEEN: TableDefinition<&str, i64> = TableDefinition::new("last_seen");
/// sequence number → dead letter as JSON.
pub(super) const DEAD_LETTERS: TableDefinition<u64, &[u8]> = TableDefinition::new("dead_letters");
/// SHA-256 of a kept letter's format, topic and payload ([`DeadLetter::digest`]) → its id: a
/// message delivered again finds its letter instead of becoming a second one. An entry whose
/// letter is gone or different (a store an older version wrote to) counts as absent.
///
/// [`DeadLetter::digest`]: crate::store::dead_letter::DeadLetter::digest
pub(super) const DEAD_LETTER_DIGESTS: TableDefinition<&[u8], u64> = TableDefinition::new("dead_letter_digests");
/// `"last"` → the highest dead letter id ever given.
pub(super) const DEAD_LETTER_SEQ: TableDefinition<&str, u64> = TableDefinition::new("dead_letter_seq");
/// (device, quantity name, day start ms) → a day row (`device_windows::encode_day`).
pub(super) const DEVICE_WINDOWS: TableDefinition<(&str, &str, i64), &[u8]> = TableDefinition::new("device_windows");
/// (scope key, quantity, interval code, window start ms) → (count, excluded, sum, min, max, last, last time ms).
pub(super) const ROLLUPS: TableDefinition<(&str, &str, u8, i64), WindowTuple> = TableDefinition::new("rollups");
/// device → district, for open devices: which device windows make up a district's.
pub(super) const DEVICE_DISTRICT: TableDefinition<&str, &str> = TableDefinition::new("device_district");
/// Journal sequence number → the device hours one batch touched, encoded by `window_journal::encode`.
pub(super) const WINDOW_JOURNAL: TableDefinition<u64, &[u8]> = TableDefinition::new("window_journal");
/// DevAddr (as the 32-bit number its hex spelling reads) → an encoded `FrameCounter`.
pub(super) const FRAME_COUNTERS: TableDefinition<u32, &[u8]> = TableDefinition::new("lorawan_frame_counters");
/// sequence number of the row's last line → a run of InfluxDB line-protocol lines with
/// consecutive numbers, joined by `\n` (one commit's lines; one line per row in older stores).
pub(super) const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("influx_outbox");

/// Citizen sensor id → its registration as JSON ([`crate::citizens::CitizenSensor`]).
pub const CITIZEN_SENSORS: TableDefinition<&str, &[u8]> = TableDefinition::new("citizen_sensors");
