//! The embedded store's rollups, in one place: district windows kept in the readings' own transaction, device windows journaled there and stored by a periodic flush, their queries, rebuild and encoding.
//!
//! The window maths (intervals, windows, deltas) is the store-neutral part and lives in
//! [`crate::aggregates`]; this module is how redb keeps the windows.
//!
//! - [`districts`]: district windows, updated in the ingest transaction; extent; rebuild.
//! - [`journal`]: which device-hours each batch touched, journaled in its transaction.
//! - [`devices`]: device windows: flush from the journal, query, rebuild, binary encoding.
//! - [`flush`]: the task that flushes the journal every few seconds and at shutdown.

pub mod devices;
pub mod districts;
pub mod flush;
pub mod journal;

pub use devices::FlushSummary;
pub use districts::RebuildSummary;
