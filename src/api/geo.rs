//! `/v1/latest`: a GeoJSON FeatureCollection of the open devices with their latest values, for maps.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use super::{error::ApiError, licence_link, licence_uri, rfc3339, round, AppState};
use crate::devices::Visibility;

/// Served as `application/geo+json` (RFC 7946), with a licence `Link` per licence on the map.
pub async fn latest(State(state): State<AppState>) -> Result<Response, ApiError> {
    let devices = state.registry.devices();
    let licences = super::open_licences(&devices);
    let store = state.store.clone();
    let features = tokio::task::spawn_blocking(move || -> Result<Vec<Value>, ApiError> {
        let mut features = Vec::new();
        for d in devices.iter().filter(|d| d.visibility == Visibility::Open) {
            let mut readings = Map::new();
            for r in store.latest(&d.id)? {
                readings.insert(
                    r.quantity.name().to_owned(),
                    json!({ "value": round(r.value), "unit": r.quantity.unit(), "time": rfc3339(r.time), "quality": r.flag.as_str() }),
                );
            }
            // GeoJSON positions are longitude, latitude[, height].
            let mut coordinates = vec![json!(d.lon), json!(d.lat)];
            if let Some(h) = d.height_m {
                coordinates.push(json!(h));
            }
            features.push(json!({
                "type": "Feature",
                "id": d.id,
                "geometry": { "type": "Point", "coordinates": coordinates },
                "properties": {
                    "name": d.name,
                    "district": d.district,
                    "owner": d.owner,
                    "source": d.source.as_str(),
                    "licence": d.licence,
                    "licence_uri": licence_uri(&d.licence),
                    "last_seen": store.last_seen(&d.id)?.map(rfc3339),
                    "readings": readings,
                },
            }));
        }
        Ok(features)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    let body = serde_json::to_vec(&json!({ "type": "FeatureCollection", "features": features }))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut response = ([(header::CONTENT_TYPE, "application/geo+json")], body).into_response();
    for l in &licences {
        licence_link(&mut response, l);
    }
    Ok(response)
}
