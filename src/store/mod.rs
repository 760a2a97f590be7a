//! The storage boundary: what the ingest stage commits ([`CommitStore`]), what the API, quality and the catalogue read ([`ReadStore`]), and the InfluxDB spool's table ([`Outbox`]).
//!
//! A batch of messages produces readings, dead letters, last-seen times, district
//! memberships, spooled InfluxDB lines and LoRaWAN frame counters ([`WriteBatch`]); a store
//! writes all of it in one transaction, so an acknowledged message is stored or
//! dead-lettered, never half of either. [`embedded`] is the default implementation (redb);
//! a second backend implements the same traits, and nothing above this module changes.

pub mod batch;
pub mod boundary;
pub mod dead_letter;
pub mod embedded;
mod open;
pub mod postgres;
mod spans;
pub mod spooled;

pub use batch::{Lines, WriteBatch};
pub use boundary::{
    AdminStore, ApiStore, BackupError, CitizenStore, CommitStore, Extent, Outbox, ReadStore, Removed, Snapshot, Store,
    StoreError, StoreHealth,
};
pub use dead_letter::{DeadLetter, ReplayOutcome};
pub use embedded::EmbeddedStore;
pub use open::{open, open_backend, Backend, OpenError};
pub use postgres::PostgresStore;
pub use spooled::Spooled;
