//! The embedded store (redb), the zero-setup default: one file under `store.path`, fsync'd commits, the storage boundary's traits implemented on top of one module per table group.
//!
//! - [`store`]: [`EmbeddedStore`]: open, reopen after I/O errors, the batch commit, reads,
//!   and the trait implementations; the only file that knows the others.
//! - `tables`: every table definition.
//! - `readings`: the readings table (a row per uplink) and each device's series extents.
//! - `series`: the numbers of devices and of their (device, quantity) series.
//! - `upgrade`: moving an older store's readings into rows per uplink at open.
//! - `citizens`, `dead_letters`, `frame_counters`, `outbox`: one table group each, as functions over a
//!   transaction.
//! - [`rollups`]: district and device windows, their journal, flush task and queries.

pub mod backup;
mod citizens;
mod dead_letters;
mod frame_counters;
mod outbox;
mod readings;
pub mod retention;
pub mod rollups;
mod series;
mod store;
mod tables;
mod upgrade;

pub use rollups::{FlushSummary, RebuildSummary};
pub use store::EmbeddedStore;
