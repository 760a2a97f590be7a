//! Registered citizen sensors in the embedded store, and their removal with all their data, as functions over the database.

use redb::{Database, ReadableDatabase, ReadableTable, WriteTransaction};

use super::series;
use super::tables::{CITIZEN_SENSORS, DEVICE_DISTRICT, DEVICE_WINDOWS, LAST_SEEN, ROLLUPS, SERIES};
use crate::citizens::CitizenSensor;
use crate::model::DeviceId;
use crate::store::boundary::{engine, Removed, StoreError};

fn corrupt(e: serde_json::Error) -> StoreError {
    StoreError::Corrupt(format!("citizen sensor record: {e}"))
}

/// Every registered citizen sensor, approved or not, ordered by id.
pub(super) fn all(db: &Database) -> Result<Vec<CitizenSensor>, StoreError> {
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
}

/// One citizen sensor by id.
pub(super) fn get(db: &Database, id: &DeviceId) -> Result<Option<CitizenSensor>, StoreError> {
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
}

/// Add or replace a registration inside the caller's transaction.
pub(super) fn put(tx: &WriteTransaction, sensor: &CitizenSensor) -> Result<(), StoreError> {
    let json = serde_json::to_vec(sensor).map_err(corrupt)?;
    tx.open_table(CITIZEN_SENSORS).map_err(engine)?.insert(sensor.id.as_str(), json.as_slice()).map_err(engine)?;
    Ok(())
}

/// Remove a sensor and everything stored of it inside the caller's transaction; `None` if
/// there is no such sensor (then nothing was touched).
pub(super) fn remove(tx: &WriteTransaction, id: &DeviceId) -> Result<Option<Removed>, StoreError> {
    let existed = tx.open_table(CITIZEN_SENSORS).map_err(engine)?.remove(id.as_str()).map_err(engine)?.is_some();
    if !existed {
        return Ok(None);
    }
    let d = id.as_str();
    let mut readings = 0;
    if let Some(number) = series::device(&tx.open_table(SERIES).map_err(engine)?, d)? {
        readings = super::readings::remove_device(tx, number)?;
    }
    // Quantity names are lowercase ASCII, so "~" sorts after every one of them.
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
    Ok(Some(Removed { readings }))
}
