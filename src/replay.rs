//! Dead-letter replay, one service for the operator API and `messnetz dead-letters`: find the
//! letters (each with the device it belongs to now), pick the ones a replay takes, and run one
//! through the ingest path ([`Ingest::replay`]), which stores it exactly once.
//!
//! Callers bring their own scoping and reporting: `visible` says whose letters the caller may
//! see (the admin API: the token's departments; the CLI: everyone's), and each answers and
//! audits in its own way.

use std::sync::Arc;

use crate::config::SubscriptionSettings;
use crate::devices::{Device, DeviceRegistry};
use crate::ingest::Ingest;
use crate::store::{DeadLetter, DeadLetterFilter, EmbeddedStore, ReplayOutcome, StoreError};

/// Whose letters the caller may see, given the letter's device as the registry finds it now
/// (`None`: no known device).
pub type Visible<'a> = &'a dyn Fn(Option<&Device>) -> bool;

/// A dead letter with its device, as the registry identifies the message now.
pub struct Found {
    pub letter: DeadLetter,
    pub device: Option<Arc<Device>>,
}

/// Which letters a replay takes.
pub enum Selection {
    /// These ids, in this order.
    Ids(Vec<u64>),
    /// Every letter that passes the filter, oldest first.
    Matching(DeadLetterFilter),
}

/// The letters a replay takes.
pub struct Picked {
    /// `Err(id)`: an id asked for that is not there, or not the caller's (both "gone").
    pub letters: Vec<Result<DeadLetter, u64>>,
    /// More letters matched than the limit let in.
    pub more: bool,
}

/// Reading the dead letters failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read the dead letters: {0}")]
    Scan(StoreError),
    #[error("cannot read dead letter {id}: {source}")]
    Letter { id: u64, source: StoreError },
}

impl ReadError {
    /// The store's error underneath.
    pub fn into_store(self) -> StoreError {
        match self {
            ReadError::Scan(e) | ReadError::Letter { source: e, .. } => e,
        }
    }
}

/// The dead letters of a store, seen through a device registry.
pub struct DeadLetters<'a> {
    store: &'a EmbeddedStore,
    devices: &'a DeviceRegistry,
}

impl<'a> DeadLetters<'a> {
    pub fn new(store: &'a EmbeddedStore, devices: &'a DeviceRegistry) -> Self {
        Self { store, devices }
    }

    /// Letter `id`, if it is there and the caller may see it.
    pub fn get(&self, id: u64, visible: Visible) -> Result<Option<Found>, StoreError> {
        Ok(self.store.dead_letter(id)?.and_then(|letter| {
            let device = letter.device_in(self.devices);
            visible(device.as_deref()).then_some(Found { letter, device })
        }))
    }

    /// The letters with an id above `after` that pass `filter` and `visible`, oldest first,
    /// at most `limit`, looking at no more than `max_scan`; and the `after` of the next page
    /// when there may be more.
    pub fn list(
        &self,
        filter: &DeadLetterFilter,
        after: u64,
        limit: usize,
        max_scan: usize,
        visible: Visible,
    ) -> Result<(Vec<Found>, Option<u64>), StoreError> {
        let mut devices = Vec::new();
        let (letters, next) = self.store.dead_letters_matching(after, limit, max_scan, &mut |letter| {
            let device = letter.device_in(self.devices);
            let keep = visible(device.as_deref()) && filter.matches(letter, device.as_deref());
            if keep {
                devices.push(device);
            }
            keep
        })?;
        let found = letters.into_iter().zip(devices).map(|(letter, device)| Found { letter, device }).collect();
        Ok((found, next))
    }

    /// The letters a replay takes: at most `limit` of the ids asked for, or of the matching
    /// letters (then `more` says whether others matched too).
    pub fn pick(&self, selection: &Selection, limit: usize, visible: Visible) -> Result<Picked, ReadError> {
        match selection {
            Selection::Ids(ids) => {
                let mut letters = Vec::new();
                for &id in ids.iter().take(limit) {
                    match self.get(id, visible) {
                        Ok(Some(found)) => letters.push(Ok(found.letter)),
                        Ok(None) => letters.push(Err(id)),
                        Err(source) => return Err(ReadError::Letter { id, source }),
                    }
                }
                Ok(Picked { letters, more: false })
            }
            Selection::Matching(filter) => {
                let (mut found, _) =
                    self.list(filter, 0, limit.saturating_add(1), usize::MAX, visible).map_err(ReadError::Scan)?;
                let more = found.len() > limit;
                found.truncate(limit);
                Ok(Picked { letters: found.into_iter().map(|f| Ok(f.letter)).collect(), more })
            }
        }
    }
}

/// Runs dead letters through the ingest path.
pub struct Replayer<'a> {
    ingest: &'a Ingest,
    subscriptions: &'a [SubscriptionSettings],
}

impl<'a> Replayer<'a> {
    /// `subscriptions` give the format of a letter that did not record its own.
    pub fn new(ingest: &'a Ingest, subscriptions: &'a [SubscriptionSettings]) -> Self {
        Self { ingest, subscriptions }
    }

    /// Replay one letter: choose its message format, then decode and store it as if it had
    /// arrived when it did. A letter of no format the ingest path takes is refused, untouched.
    pub fn replay(&self, letter: &DeadLetter) -> Result<ReplayOutcome, StoreError> {
        match letter.message_format(self.subscriptions) {
            Err(why) => Ok(ReplayOutcome::Refused { why }),
            Ok(format) => self.ingest.replay(letter, format),
        }
    }
}

/// The outcome in a few words: the device and reading count, or why it did not work.
pub fn describe(outcome: &ReplayOutcome) -> String {
    match outcome {
        ReplayOutcome::Stored { device, readings } => format!("{device}: {readings} readings"),
        ReplayOutcome::Failed { reason } => reason.clone(),
        ReplayOutcome::Refused { why } => why.clone(),
        ReplayOutcome::Gone => "no such dead letter (replayed already?)".into(),
    }
}
