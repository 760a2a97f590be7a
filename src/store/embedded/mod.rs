//! The embedded store (redb), the zero-setup default: one file under `store.path`, fsync'd commits, the storage boundary's traits implemented on top of one module per table group.
//!
//! - [`store`]: [`EmbeddedStore`]: open, reopen after I/O errors, the batch commit, reads,
//!   and the trait implementations; the only file that knows the others.
//! - `tables`: every table definition.
//! - `series`: the numbers of (device, quantity) series that readings are keyed by.
//! - `citizens`, `dead_letters`, `frame_counters`, `outbox`: one table group each, as functions over a
//!   transaction.
//! - [`rollups`]: district and device windows, their journal, flush task and queries.

pub mod backup;
mod citizens;
mod dead_letters;
mod frame_counters;
mod outbox;
pub mod retention;
pub mod rollups;
mod series;
mod store;
mod tables;

pub use rollups::{FlushSummary, RebuildSummary};
pub use store::EmbeddedStore;
