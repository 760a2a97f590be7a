//! Ingest: a pure pipeline that turns a message into readings or a rejection, and the stage that batches, commits and acknowledges.
//!
//! - [`pipeline`]: format, topic, bytes and reception time → flagged readings of one device,
//!   or a typed [`Rejection`]; no runtime, broker or store in it.
//! - [`stage`]: takes messages from the sources' queue in batches, runs the pipeline, commits
//!   each batch in one durable transaction and only then acknowledges its messages.

pub mod pipeline;
mod rejection;
mod stage;

pub use pipeline::{Message, Outcome, Pipeline};
pub use rejection::Rejection;
pub use stage::{readings_taken, Ingest};
