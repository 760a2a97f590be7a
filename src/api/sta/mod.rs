//! OGC SensorThings API 1.1 (read-only) under `/sta/v1.1`: devices, profiles, quantities and
//! readings as Things, Sensors, ObservedProperties, Datastreams and Observations (see
//! `entities` for the mapping and `docs/sensorthings.md` for the reference).
//!
//! One concern per file: `path` (resource paths), `options` (query options), `filter`
//! (`$filter` parser), `eval` (its evaluation), `props` (entities as filters see them),
//! `kinds` (entity types), `entities` (the mapping), `vocabulary` (definition URIs, unit
//! names), `observations` (bounded store reads), `links` (self, navigation and next links),
//! `handlers` (putting it together).
//!
//! Limits, so that no request reads or writes without bound: a page holds at most
//! [`options::MAX_TOP`] entities (default [`options::DEFAULT_TOP`]); one request reads at
//! most [`SCAN_LIMIT`] readings from the store (a filtered page that needs more ends early
//! with an `@iot.nextLink` that continues the scan); one response holds at most
//! [`MAX_ENTITIES`] entities, expanded ones included (more is a 400).

mod entities;
pub mod eval;
pub mod filter;
mod handlers;
mod kinds;
mod links;
mod observations;
mod options;
mod path;
mod props;
mod vocabulary;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::error::ApiError;
use super::AppState;
use entities::{Budget, Catalog, Kind};
use links::Links;

pub use filter::{parse_filter, FilterError};

/// Most readings one request reads from the store (pages, counts and expansions together).
pub const SCAN_LIMIT: usize = 100_000;
/// Most entities in one response, expanded ones included.
pub const MAX_ENTITIES: usize = 10_000;

/// The SensorThings routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(links::PREFIX, get(service_root))
        .route(&format!("{}/", links::PREFIX), get(service_root))
        .route(&format!("{}/{{*path}}", links::PREFIX), get(resource))
}

/// The service root: the entity sets and the conformance classes served.
async fn service_root(State(state): State<AppState>, headers: HeaderMap) -> Json<serde_json::Value> {
    let links = Links::from_request(&headers, &state.open_data.base_url);
    let sets: Vec<_> =
        Kind::ALL.iter().map(|k| json!({ "name": k.plural(), "url": format!("{}/{}", links.root(), k.plural()) })).collect();
    Json(json!({
        "value": sets,
        "serverSettings": {
            "conformance": [
                "http://www.opengis.net/spec/iot_sensing/1.1/req/datamodel",
                "http://www.opengis.net/spec/iot_sensing/1.1/req/resource-path/resource-path-to-entities",
                "http://www.opengis.net/spec/iot_sensing/1.1/req/request-data",
            ],
        },
    }))
}

async fn resource(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(path): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let links = Links::from_request(&headers, &state.open_data.base_url);
    let options = options::parse(&pairs)?;
    let segments = path::parse(&path)?;
    let devices = state.registry.devices();
    let profiles = state.registry.profiles();
    let store = state.store.clone();
    let answer = tokio::task::spawn_blocking(move || {
        let budget = Budget { scan_left: SCAN_LIMIT.into(), entities_left: MAX_ENTITIES.into() };
        let catalog = Catalog::new(&devices, profiles, store, links, budget);
        handlers::answer(&catalog, &segments, &options)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(match answer {
        handlers::Answer::Json(v) => Json(v).into_response(),
        handlers::Answer::Text(t) => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], t).into_response(),
    })
}
