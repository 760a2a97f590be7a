//! The embedded store as the history that quality control's spike and stuck tests read
//! ([`SeriesLookup`]): the trait is quality's, the store implements it.

use chrono::{DateTime, Duration, Utc};

use super::EmbeddedStore;
use crate::model::{DeviceId, Quantity, Reading};
use crate::quality::SeriesLookup;
use crate::store::ReadStore;

impl SeriesLookup for EmbeddedStore {
    fn latest(&self, device: &DeviceId) -> Result<Vec<Reading>, String> {
        ReadStore::latest(self, device).map_err(|e| e.to_string())
    }

    fn neighbours(
        &self,
        device: &DeviceId,
        q: Quantity,
        time: DateTime<Utc>,
        within: Duration,
    ) -> Result<(Option<(DateTime<Utc>, f64)>, Option<(DateTime<Utc>, f64)>), String> {
        EmbeddedStore::neighbours(self, device, q, time, within).map_err(|e| e.to_string())
    }
}
