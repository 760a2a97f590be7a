//! Dead-letter replay, one service for the operator API and `messnetz dead-letters`: find the
//! letters (each with the device it belongs to now), pick the ones a replay takes, and run one
//! through the ingest path ([`Ingest::replay`]), which stores it exactly once.
//!
//! Callers bring their own scoping and reporting: `visible` says whose letters the caller may
//! see (the admin API: the token's departments; the CLI: everyone's), and each answers and
//! audits in its own way.

use std::sync::Arc;

use crate::config::{MessageFormat, SubscriptionSettings};
use crate::devices::{Device, DeviceRegistry};
use crate::ingest::Ingest;
use crate::store::{ApiStore, DeadLetter, ReplayOutcome, StoreError};

/// Which dead letters to list or replay. Empty = all.
#[derive(Debug, Clone, Default)]
pub struct DeadLetterFilter {
    /// Only letters of this device (as the registry identifies them now).
    pub device: Option<String>,
    /// Only letters whose reason contains this text (any case).
    pub reason: Option<String>,
    /// Only letters received before this time.
    pub received_before: Option<chrono::DateTime<chrono::Utc>>,
}

impl DeadLetterFilter {
    pub fn is_empty(&self) -> bool {
        self.device.is_none() && self.reason.is_none() && self.received_before.is_none()
    }

    /// Does the letter pass? `device` is the letter's device as [`DeadLetter::device_in`] finds it.
    pub fn matches(&self, letter: &DeadLetter, device: Option<&Device>) -> bool {
        if let Some(want) = &self.device {
            let id = device.map(|d| d.id.as_str()).or(letter.device.as_deref());
            if id != Some(want.as_str()) {
                return false;
            }
        }
        if let Some(text) = &self.reason {
            if !letter.reason.to_lowercase().contains(&text.to_lowercase()) {
                return false;
            }
        }
        if self.received_before.is_some_and(|before| letter.received_at >= before) {
            return false;
        }
        true
    }
}

impl DeadLetter {
    /// The registered device the letter belongs to now: the device it named when it was
    /// dead-lettered, or else the one its message names (a device registered since, say).
    pub fn device_in(&self, devices: &DeviceRegistry) -> Option<Arc<Device>> {
        if let Some(name) = &self.device {
            let found = devices
                .get(name)
                .or_else(|| crate::model::DevEui::parse(name).ok().and_then(|eui| devices.find(Some(eui), None)));
            if let Some(d) = found {
                return Some(d.clone());
            }
        }
        let format = self.known_format()?;
        let uplink = crate::sources::parse_message(format, &self.topic, &self.payload).ok()?;
        devices.find(uplink.dev_eui, uplink.ns_device_id.as_deref()).cloned()
    }

    fn known_format(&self) -> Option<MessageFormat> {
        [
            MessageFormat::TtnV3,
            MessageFormat::ChirpstackV4,
            MessageFormat::Lorawan,
            MessageFormat::Json,
            MessageFormat::SensorCommunity,
        ]
        .into_iter()
        .find(|f| f.as_str() == self.format)
    }

    /// The format to replay the message in: the one it arrived with, or, for a message whose
    /// topic matched no subscription then, the subscription it matches now.
    pub fn message_format(&self, subscriptions: &[SubscriptionSettings]) -> Result<MessageFormat, String> {
        if let Some(f) = self.known_format() {
            return Ok(f);
        }
        if self.format == "-" {
            return crate::sources::Routes::new(subscriptions)
                .format_of(&self.topic)
                .ok_or_else(|| format!("its topic {:?} still matches no subscription", self.topic));
        }
        Err(format!("a {:?} message is not an uplink; it cannot be replayed", self.format))
    }
}

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
    #[error("cannot delete the dead letters: {0}")]
    Delete(StoreError),
}

impl ReadError {
    /// The store's error underneath.
    pub fn into_store(self) -> StoreError {
        match self {
            ReadError::Scan(e) | ReadError::Letter { source: e, .. } | ReadError::Delete(e) => e,
        }
    }
}

/// The dead letters of a store, seen through a device registry.
pub struct DeadLetters<'a> {
    store: &'a dyn ApiStore,
    devices: &'a DeviceRegistry,
}

impl<'a> DeadLetters<'a> {
    pub fn new(store: &'a dyn ApiStore, devices: &'a DeviceRegistry) -> Self {
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

/// What a delete came to.
#[derive(Debug, Default)]
pub struct Deleted {
    /// The letters deleted, oldest first.
    pub ids: Vec<u64>,
    /// Ids asked for that were not there, or not the caller's.
    pub gone: Vec<u64>,
    /// More letters matched than the limit let in.
    pub more: bool,
}

impl DeadLetters<'_> {
    /// Delete the selected letters (at most `limit`) in one transaction.
    pub fn delete(&self, selection: &Selection, limit: usize, visible: Visible) -> Result<Deleted, ReadError> {
        let picked = self.pick(selection, limit, visible)?;
        let mut gone = Vec::new();
        let mut ids = Vec::new();
        for letter in picked.letters {
            match letter {
                Ok(l) => ids.push(l.id),
                Err(id) => gone.push(id),
            }
        }
        let deleted = self.store.delete_dead_letters(&ids).map_err(ReadError::Delete)?;
        // Deleted or replayed by someone else between picking and deleting.
        gone.extend(ids.iter().filter(|id| !deleted.contains(id)));
        Ok(Deleted { ids: deleted, gone, more: picked.more })
    }
}

/// Runs dead letters through the ingest path.
pub struct Replayer {
    ingest: Ingest,
    subscriptions: Vec<SubscriptionSettings>,
}

impl Replayer {
    /// `subscriptions` give the format of a letter that did not record its own.
    pub fn new(ingest: Ingest, subscriptions: &[SubscriptionSettings]) -> Self {
        Self { ingest, subscriptions: subscriptions.to_vec() }
    }

    /// Replay one letter: choose its message format, then decode and store it as if it had
    /// arrived when it did. A letter of no format the ingest path takes is refused, untouched.
    pub fn replay(&self, letter: &DeadLetter) -> Result<ReplayOutcome, StoreError> {
        match letter.message_format(&self.subscriptions) {
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use chrono::DateTime;

    use super::*;
    use crate::store::WriteBatch;
    use crate::store::{CommitStore, EmbeddedStore};

    fn device(id: &str, owner: &str) -> String {
        format!(
            "[[device]]\nid = \"{id}\"\nname = \"{id}\"\nprofile = \"p\"\nlat = 48.1\nlon = 11.5\ndistrict = \"Mitte\"\n\
             owner = \"{owner}\"\nlicence = \"dl-by-de/2.0\"\nvisibility = \"open\"\n"
        )
    }

    fn letter(device: Option<&str>, reason: &str) -> DeadLetter {
        DeadLetter {
            id: 0,
            received_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            topic: "v3/app/devices/x/up".into(),
            format: "ttn-v3".into(),
            device: device.map(str::to_owned),
            reason: reason.into(),
            // Each letter its own message (one message is one letter in a store).
            payload: format!("{{\"device\": {device:?}, \"reason\": {reason:?}}}").into_bytes(),
        }
    }

    #[test]
    fn filters_match_by_device_and_by_reason_in_any_case() {
        let by_device = DeadLetterFilter { device: Some("a".into()), reason: None, ..Default::default() };
        assert!(by_device.matches(&letter(Some("a"), "x"), None) && !by_device.matches(&letter(None, "x"), None));
        let by_reason = DeadLetterFilter { device: None, reason: Some("UNKNOWN".into()), ..Default::default() };
        assert!(by_reason.matches(&letter(None, "unknown device"), None) && !by_reason.matches(&letter(None, "profile"), None));
    }

    #[test]
    fn the_replay_format_is_the_stored_one_or_the_matching_subscription() {
        let subs = crate::config::MqttSettings::default().subscriptions;
        assert_eq!(letter(None, "").message_format(&subs), Ok(MessageFormat::TtnV3));
        let unmatched = DeadLetter { format: "-".into(), ..letter(None, "") };
        assert_eq!(unmatched.message_format(&subs), Ok(MessageFormat::TtnV3));
        let influx = DeadLetter { format: "influx-line-protocol".into(), ..letter(None, "") };
        assert!(influx.message_format(&subs).is_err());
    }

    /// Letters 1..=5: a (Umweltamt), b (Gartenamt), no device, a, b.
    fn fixture() -> (tempfile::TempDir, EmbeddedStore, DeviceRegistry) {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let letters = vec![
            letter(Some("a"), "profile p: too short"),
            letter(Some("b"), "profile p: too short"),
            letter(None, "unknown device"),
            letter(Some("a"), "not JSON"),
            letter(Some("b"), "not JSON"),
        ];
        store.write(&WriteBatch { dead_letters: letters, ..Default::default() }).unwrap();
        let text = format!("{}{}", device("a", "Umweltamt"), device("b", "Gartenamt"));
        let devices = DeviceRegistry::parse(Path::new("devices.toml"), &text, |_| true).unwrap();
        (dir, store, devices)
    }

    fn umweltamt(device: Option<&Device>) -> bool {
        device.is_some_and(|d| d.owner == "Umweltamt")
    }

    fn ids(picked: &Picked) -> Vec<Result<u64, u64>> {
        picked.letters.iter().map(|l| l.as_ref().map(|l| l.id).map_err(|id| *id)).collect()
    }

    #[test]
    fn lists_only_what_the_caller_sees_each_letter_with_its_device() {
        let (_dir, store, devices) = fixture();
        let letters = DeadLetters::new(&store, &devices);
        let (found, next) = letters.list(&DeadLetterFilter::default(), 0, 10, 100, &umweltamt).unwrap();
        assert_eq!(found.iter().map(|f| f.letter.id).collect::<Vec<_>>(), vec![1, 4]);
        assert!(found.iter().all(|f| f.device.as_ref().is_some_and(|d| d.id.as_str() == "a")));
        assert_eq!(next, None);
        let reason = DeadLetterFilter { device: None, reason: Some("NOT json".into()), ..Default::default() };
        let (found, next) = letters.list(&reason, 0, 1, 100, &|_| true).unwrap();
        assert_eq!((found.iter().map(|f| f.letter.id).collect::<Vec<_>>(), next), (vec![4], Some(4)));
    }

    #[test]
    fn get_hides_letters_of_other_departments_and_of_no_device() {
        let (_dir, store, devices) = fixture();
        let letters = DeadLetters::new(&store, &devices);
        assert!(letters.get(1, &umweltamt).unwrap().is_some());
        assert!(letters.get(2, &umweltamt).unwrap().is_none());
        assert!(letters.get(3, &umweltamt).unwrap().is_none());
        assert!(letters.get(3, &|_| true).unwrap().is_some_and(|f| f.device.is_none()));
        assert!(letters.get(99, &|_| true).unwrap().is_none());
    }

    #[test]
    fn picks_ids_in_order_with_missing_and_foreign_ones_gone() {
        let (_dir, store, devices) = fixture();
        let letters = DeadLetters::new(&store, &devices);
        let picked = letters.pick(&Selection::Ids(vec![4, 2, 99, 1]), 10, &umweltamt).unwrap();
        assert_eq!(ids(&picked), vec![Ok(4), Err(2), Err(99), Ok(1)]);
        assert!(!picked.more);
        let picked = letters.pick(&Selection::Ids(vec![4, 1]), 1, &umweltamt).unwrap();
        assert_eq!(ids(&picked), vec![Ok(4)]);
    }

    #[test]
    fn picks_matching_letters_up_to_the_limit_and_says_when_more_matched() {
        let (_dir, store, devices) = fixture();
        let letters = DeadLetters::new(&store, &devices);
        let all = Selection::Matching(DeadLetterFilter::default());
        let picked = letters.pick(&all, usize::MAX, &|_| true).unwrap();
        assert_eq!(ids(&picked), vec![Ok(1), Ok(2), Ok(3), Ok(4), Ok(5)]);
        assert!(!picked.more);
        let picked = letters.pick(&all, 2, &|_| true).unwrap();
        assert_eq!((ids(&picked), picked.more), (vec![Ok(1), Ok(2)], true));
        let of_b = Selection::Matching(DeadLetterFilter { device: Some("b".into()), reason: None, ..Default::default() });
        let picked = letters.pick(&of_b, 2, &|_| true).unwrap();
        assert_eq!((ids(&picked), picked.more), (vec![Ok(2), Ok(5)], false));
        assert!(letters.pick(&of_b, 10, &umweltamt).unwrap().letters.is_empty());
    }

    #[test]
    fn describes_each_outcome() {
        assert_eq!(describe(&ReplayOutcome::Stored { device: "a".into(), readings: 3 }), "a: 3 readings");
        assert_eq!(describe(&ReplayOutcome::Failed { reason: "too short".into() }), "too short");
        assert_eq!(describe(&ReplayOutcome::Refused { why: "no format".into() }), "no format");
        assert_eq!(describe(&ReplayOutcome::Gone), "no such dead letter (replayed already?)");
    }
}
