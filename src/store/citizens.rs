//! Registered citizen sensors in the embedded store, their removal with all their data, and
//! the store as the neighbour test's view of the official stations ([`NearbyLookup`]).

use chrono::{DateTime, Duration, Utc};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::embedded::EmbeddedStore;
use super::tables::{DEVICE_DISTRICT, DEVICE_WINDOWS, LAST_SEEN, READINGS, ROLLUPS};
use super::{engine, StoreError};
use crate::citizens::CitizenSensor;
use crate::model::{DeviceId, QualityFlag, Quantity};
use crate::quality::neighbours::NearbyLookup;

/// sensor id → the registration as JSON ([`CitizenSensor`]).
const CITIZEN_SENSORS: TableDefinition<&str, &[u8]> = TableDefinition::new("citizen_sensors");

/// What removing a citizen sensor removed.
#[derive(Debug, Default, PartialEq)]
pub struct Removed {
    pub readings: u64,
}

fn corrupt(e: serde_json::Error) -> StoreError {
    StoreError::Corrupt(format!("citizen sensor record: {e}"))
}

impl EmbeddedStore {
    /// Every registered citizen sensor, approved or not, ordered by id.
    pub fn citizen_sensors(&self) -> Result<Vec<CitizenSensor>, StoreError> {
        self.with_db(|db| {
            let tx = db.begin_read().map_err(engine)?;
            let table = match tx.open_table(CITIZEN_SENSORS) {
                Ok(t) => t,
                // A store that never had a registration has no table yet.
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(engine(e)),
            };
            let mut out = Vec::new();
            for entry in table.iter().map_err(engine)? {
                let (_, v) = entry.map_err(engine)?;
                out.push(serde_json::from_slice(v.value()).map_err(corrupt)?);
            }
            Ok(out)
        })
    }

    /// One citizen sensor by id.
    pub fn citizen_sensor(&self, id: &DeviceId) -> Result<Option<CitizenSensor>, StoreError> {
        self.with_db(|db| {
            let tx = db.begin_read().map_err(engine)?;
            let table = match tx.open_table(CITIZEN_SENSORS) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(engine(e)),
            };
            match table.get(id.as_str()).map_err(engine)? {
                Some(v) => Ok(Some(serde_json::from_slice(v.value()).map_err(corrupt)?)),
                None => Ok(None),
            }
        })
    }

    /// Add or replace a citizen sensor's registration.
    pub fn put_citizen_sensor(&self, sensor: &CitizenSensor) -> Result<(), StoreError> {
        let json = serde_json::to_vec(sensor).map_err(corrupt)?;
        self.with_write(|db| {
            let tx = db.begin_write().map_err(engine)?;
            tx.open_table(CITIZEN_SENSORS).map_err(engine)?.insert(sensor.id.as_str(), json.as_slice()).map_err(engine)?;
            tx.commit().map_err(engine)?;
            Ok(((), true))
        })
    }

    /// Remove a citizen sensor and everything stored of it (readings, device windows, last
    /// seen, its district entry) in one transaction; `None` if there is no such sensor.
    /// District windows it counted towards (only with `citizens.in_district_aggregates`)
    /// keep its share until `messnetz rollups rebuild`.
    pub fn remove_citizen_sensor(&self, id: &DeviceId) -> Result<Option<Removed>, StoreError> {
        self.with_write(|db| {
            let tx = db.begin_write().map_err(engine)?;
            let existed = tx.open_table(CITIZEN_SENSORS).map_err(engine)?.remove(id.as_str()).map_err(engine)?.is_some();
            if !existed {
                return Ok((None, false));
            }
            let d = id.as_str();
            // Quantity names are lowercase ASCII, so "~" sorts after every one of them.
            let readings = tx
                .open_table(READINGS)
                .map_err(engine)?
                .extract_from_if((d, "", i64::MIN)..=(d, "~", i64::MAX), |_, _| true)
                .map_err(engine)?
                .count() as u64;
            tx.open_table(DEVICE_WINDOWS)
                .map_err(engine)?
                .retain_in((d, "", i64::MIN)..=(d, "~", i64::MAX), |_, _| false)
                .map_err(engine)?;
            let scope = format!("d:{d}");
            tx.open_table(ROLLUPS)
                .map_err(engine)?
                .retain_in((scope.as_str(), "", 0u8, i64::MIN)..=(scope.as_str(), "~", u8::MAX, i64::MAX), |_, _| false)
                .map_err(engine)?;
            tx.open_table(LAST_SEEN).map_err(engine)?.remove(d).map_err(engine)?;
            tx.open_table(DEVICE_DISTRICT).map_err(engine)?.remove(d).map_err(engine)?;
            tx.commit().map_err(engine)?;
            Ok((Some(Removed { readings }), true))
        })
    }
}

impl NearbyLookup for EmbeddedStore {
    fn value_near(&self, device: &DeviceId, quantity: Quantity, time: DateTime<Utc>, within: Duration) -> Option<f64> {
        let exact = self.readings(device, quantity, time, time + Duration::milliseconds(1), 1).ok()?;
        if let Some(r) = exact.into_iter().find(|r| r.flag != QualityFlag::Bad) {
            return Some(r.value);
        }
        let (before, after) = self.neighbours(device, quantity, time, within).ok()?;
        match (before, after) {
            (Some((tb, vb)), Some((ta, va))) => Some(if time - tb <= ta - time { vb } else { va }),
            (Some((_, v)), None) | (None, Some((_, v))) => Some(v),
            (None, None) => None,
        }
    }
}
