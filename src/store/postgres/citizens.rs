//! Registered citizen sensors in PostgreSQL, and their removal with everything stored of them in one transaction.

use deadpool_postgres::GenericClient;

use super::db;
use crate::citizens::CitizenSensor;
use crate::model::DeviceId;
use crate::store::boundary::{Removed, StoreError};

fn corrupt(e: serde_json::Error) -> StoreError {
    StoreError::Corrupt(format!("citizen sensor record: {e}"))
}

/// Every registered citizen sensor, approved or not, ordered by id.
pub(super) async fn all(client: &impl GenericClient) -> Result<Vec<CitizenSensor>, StoreError> {
    let rows = client.query("SELECT registration FROM citizen_sensors ORDER BY id", &[]).await.map_err(db)?;
    rows.iter().map(|row| serde_json::from_str(row.get::<_, &str>(0)).map_err(corrupt)).collect()
}

pub(super) async fn one(client: &impl GenericClient, id: &DeviceId) -> Result<Option<CitizenSensor>, StoreError> {
    let row = client.query_opt("SELECT registration FROM citizen_sensors WHERE id = $1", &[&id.as_str()]).await.map_err(db)?;
    row.map(|row| serde_json::from_str(row.get::<_, &str>(0)).map_err(corrupt)).transpose()
}

pub(super) async fn put(client: &impl GenericClient, sensor: &CitizenSensor) -> Result<(), StoreError> {
    let json = serde_json::to_string(sensor).map_err(corrupt)?;
    client
        .execute(
            "INSERT INTO citizen_sensors (id, registration) VALUES ($1, $2)
             ON CONFLICT (id) DO UPDATE SET registration = EXCLUDED.registration",
            &[&sensor.id.as_str(), &json],
        )
        .await
        .map_err(db)?;
    Ok(())
}

/// Remove the registration, the sensor's readings, its own windows, last-seen time and district membership in
/// the caller's transaction; `None` (nothing touched) if there is no such sensor.
pub(super) async fn remove(client: &impl GenericClient, id: &DeviceId) -> Result<Option<Removed>, StoreError> {
    let d = id.as_str();
    if client.execute("DELETE FROM citizen_sensors WHERE id = $1", &[&d]).await.map_err(db)? == 0 {
        return Ok(None);
    }
    let readings = client.execute("DELETE FROM readings WHERE device = $1", &[&d]).await.map_err(db)?;
    let scope = crate::aggregates::Scope::Device(d.to_owned()).key();
    // Under the scope's lock: a batch that journalled the sensor's windows committed before
    // (its pending windows, in rows shared with other devices, are folded here and deleted
    // with the stored ones) or commits after, as its readings do.
    client
        .execute(
            "SELECT pg_advisory_xact_lock($2, hashtext($1) & $3)",
            &[&scope, &super::rollups::LOCK_CLASS, &(super::rollups::LOCK_BUCKETS - 1)],
        )
        .await
        .map_err(db)?;
    super::rollups::fold_scopes(client, &std::iter::once(scope.clone()).collect()).await?;
    client.execute("DELETE FROM rollups WHERE scope = $1", &[&scope]).await.map_err(db)?;
    client.execute("DELETE FROM last_seen WHERE device = $1", &[&d]).await.map_err(db)?;
    client.execute("DELETE FROM district_devices WHERE device = $1", &[&d]).await.map_err(db)?;
    Ok(Some(Removed { readings }))
}
