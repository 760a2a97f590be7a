//! The SensorThings data model mapped onto messnetz: which entities exist, their ids, their
//! JSON, and how they relate. Only open devices take part; an internal device, its
//! datastreams and its readings do not exist here, whichever way they are reached.
//!
//! | SensorThings      | messnetz                              | `@iot.id`                               |
//! |-------------------|---------------------------------------|-----------------------------------------|
//! | Thing             | an open device                        | device id (`demo-lht65`)                |
//! | Location          | its coordinates (GeoJSON Point)       | device id                               |
//! | FeatureOfInterest | the same place, observed              | device id                               |
//! | Sensor            | the sensor profile                    | profile id (`dragino-lht65`)            |
//! | ObservedProperty  | a quantity (CF standard name)         | quantity name (`air_temperature`)       |
//! | Datastream        | device × quantity                     | `demo-lht65:air_temperature`            |
//! | Observation       | one reading                           | `demo-lht65:air_temperature:<ms>`       |

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

pub use super::kinds::Kind;
use super::links::{encode, Links};
use super::vocabulary::{definition, unit_name, NOT_CF};
use crate::api::error::ApiError;
use crate::api::{rfc3339, round};
use crate::devices::{Device, DeviceRegistry, Visibility};
use crate::model::{licence_uri, DeviceId, Quantity, Reading};
use crate::profiles::ProfileSet;
use crate::store::ReadStore;

/// One series of readings: an open device's quantity (a Datastream).
#[derive(Debug, Clone)]
pub struct Series {
    pub device: Arc<Device>,
    pub quantity: Quantity,
}

impl Series {
    pub fn id(&self) -> String {
        format!("{}:{}", self.device.id, self.quantity.name())
    }
}

/// What a navigation from one entity leads to.
pub enum Related {
    One(Kind, Value),
    Many(Kind, Vec<Value>),
    Observations(Vec<Series>),
}

/// A device's quantities, each with the time of its last reading.
type Streams = Arc<Vec<(Quantity, Option<DateTime<Utc>>)>>;

/// Request-wide limits: every reading read and every entity written counts against them.
pub struct Budget {
    /// Readings the request may still read from the store.
    pub scan_left: Cell<usize>,
    /// Entities the response may still hold (expanded ones included).
    pub entities_left: Cell<usize>,
}

/// The open devices, profiles and store as one request sees them (one registry snapshot).
pub struct Catalog {
    pub links: Links,
    pub store: Arc<dyn ReadStore>,
    pub budget: Budget,
    pub now: DateTime<Utc>,
    /// Open devices, by id.
    devices: Vec<Arc<Device>>,
    profiles: Arc<ProfileSet>,
    /// Quantities of each device with the time of its last reading, looked up once per request.
    streams: RefCell<HashMap<DeviceId, Streams>>,
    /// Datastream JSON by id, built once per request (observations' filters read it).
    datastream_json: RefCell<HashMap<String, Value>>,
}

impl Catalog {
    pub fn new(
        devices: &DeviceRegistry,
        profiles: Arc<ProfileSet>,
        store: Arc<dyn ReadStore>,
        links: Links,
        budget: Budget,
    ) -> Self {
        let mut open: Vec<Arc<Device>> = devices.iter().filter(|d| d.visibility == Visibility::Open).cloned().collect();
        open.sort_by(|a, b| a.id.cmp(&b.id));
        Self {
            links,
            store,
            budget,
            now: Utc::now(),
            devices: open,
            profiles,
            streams: RefCell::default(),
            datastream_json: RefCell::default(),
        }
    }

    fn device(&self, id: &str) -> Option<&Arc<Device>> {
        self.devices.binary_search_by(|d| d.id.as_str().cmp(id)).ok().map(|i| &self.devices[i])
    }

    /// Count entities against the response limit.
    pub fn spend_entities(&self, n: usize) -> Result<(), ApiError> {
        let left = self.budget.entities_left.get();
        if n > left {
            return Err(ApiError::BadRequest(format!(
                "the response would hold more than {} entities (expanded ones included); lower $top or the $top inside $expand",
                super::MAX_ENTITIES
            )));
        }
        self.budget.entities_left.set(left - n);
        Ok(())
    }

    /// A device's quantities: those its profile produces and those it has readings of, each with
    /// the time of its last reading (one lookup per known quantity, whatever the data).
    fn streams(&self, d: &Device) -> Result<Streams, ApiError> {
        if let Some(s) = self.streams.borrow().get(&d.id) {
            return Ok(s.clone());
        }
        let latest = self.store.latest(&d.id)?;
        let mut quantities: Vec<Quantity> = self.profiles.get(&d.profile).map(|p| p.quantities()).unwrap_or_default();
        quantities.extend(latest.iter().map(|r| r.quantity));
        quantities.sort();
        quantities.dedup();
        let out: Vec<_> = quantities.into_iter().map(|q| (q, latest.iter().find(|r| r.quantity == q).map(|r| r.time))).collect();
        let out = Arc::new(out);
        self.streams.borrow_mut().insert(d.id.clone(), out.clone());
        Ok(out)
    }

    fn series_of(&self, d: &Arc<Device>) -> Result<Vec<Series>, ApiError> {
        Ok(self.streams(d)?.iter().map(|(q, _)| Series { device: d.clone(), quantity: *q }).collect())
    }

    /// Every open datastream as a series, by device then quantity.
    pub fn all_series(&self) -> Result<Vec<Series>, ApiError> {
        let mut out = Vec::new();
        for d in &self.devices {
            out.extend(self.series_of(d)?);
        }
        Ok(out)
    }

    /// The series of a datastream id, when the device is open and has that quantity.
    pub fn series(&self, id: &str) -> Result<Option<Series>, ApiError> {
        let Some((device, quantity)) = id.split_once(':') else { return Ok(None) };
        let (Some(d), Some(q)) = (self.device(device), Quantity::by_name(quantity)) else { return Ok(None) };
        Ok(self.streams(d)?.iter().any(|(x, _)| *x == q).then(|| Series { device: d.clone(), quantity: q }))
    }

    /// Every entity of a kind (not Observations: those are read page by page).
    pub fn list(&self, kind: Kind) -> Result<Vec<Value>, ApiError> {
        Ok(match kind {
            Kind::Thing => self.devices.iter().map(|d| self.thing(d)).collect(),
            Kind::Location => self.devices.iter().map(|d| self.location(d)).collect(),
            Kind::FeatureOfInterest => self.devices.iter().map(|d| self.feature(d)).collect(),
            Kind::HistoricalLocation | Kind::Observation => Vec::new(),
            Kind::Sensor => {
                let mut ids: Vec<&str> = self.devices.iter().map(|d| d.profile.as_str()).collect();
                ids.sort_unstable();
                ids.dedup();
                ids.into_iter().filter_map(|p| self.sensor(p)).collect()
            }
            Kind::ObservedProperty => {
                let mut qs = Vec::new();
                for d in &self.devices {
                    qs.extend(self.streams(d)?.iter().map(|(q, _)| *q));
                }
                qs.sort();
                qs.dedup();
                let mut out: Vec<Value> = qs.into_iter().map(|q| self.observed_property(q)).collect();
                out.sort_by(|a, b| a["@iot.id"].as_str().cmp(&b["@iot.id"].as_str()));
                out
            }
            Kind::Datastream => {
                let mut out = Vec::new();
                for s in self.all_series()? {
                    out.push(self.datastream(&s)?);
                }
                out
            }
        })
    }

    /// One entity by id; `None` when there is no such open entity.
    pub fn get(&self, kind: Kind, id: &str) -> Result<Option<Value>, ApiError> {
        Ok(match kind {
            Kind::Thing => self.device(id).map(|d| self.thing(d)),
            Kind::Location => self.device(id).map(|d| self.location(d)),
            Kind::FeatureOfInterest => self.device(id).map(|d| self.feature(d)),
            Kind::HistoricalLocation => None,
            Kind::Sensor => {
                if self.devices.iter().any(|d| d.profile == id) {
                    self.sensor(id)
                } else {
                    None
                }
            }
            Kind::ObservedProperty => match Quantity::by_name(id) {
                Some(q) if self.list(Kind::ObservedProperty)?.iter().any(|o| o["@iot.id"] == id) => {
                    Some(self.observed_property(q))
                }
                _ => None,
            },
            Kind::Datastream => match self.series(id)? {
                Some(s) => Some(self.datastream(&s)?),
                None => None,
            },
            Kind::Observation => self.observation_by_id(id)?.map(|(s, r)| self.observation(&s, &r)),
        })
    }

    /// An observation by its id (`device:quantity:milliseconds`).
    pub fn observation_by_id(&self, id: &str) -> Result<Option<(Series, Reading)>, ApiError> {
        let Some((ds, ms)) = id.rsplit_once(':') else { return Ok(None) };
        let Some(series) = self.series(ds)? else { return Ok(None) };
        let Some(t) = ms.parse::<i64>().ok().and_then(DateTime::from_timestamp_millis) else { return Ok(None) };
        let found = self.store.readings(&series.device.id, series.quantity, t, t + chrono::Duration::milliseconds(1), 1)?;
        Ok(found.into_iter().next().map(|r| (series, r)))
    }

    /// Where a navigation property of an entity leads; `None` when the entity type has no such
    /// navigation property.
    pub fn related(&self, kind: Kind, entity: &Value, nav: &str) -> Result<Option<Related>, ApiError> {
        let id = entity["@iot.id"].as_str().unwrap_or_default();
        let device = |id: &str| self.device(id).cloned();
        Ok(Some(match (kind, nav) {
            (Kind::Thing, "Locations") => {
                Related::Many(Kind::Location, device(id).map(|d| self.location(&d)).into_iter().collect())
            }
            (Kind::Location, "Things") => Related::Many(Kind::Thing, device(id).map(|d| self.thing(&d)).into_iter().collect()),
            (Kind::Thing | Kind::Location, "HistoricalLocations") => Related::Many(Kind::HistoricalLocation, Vec::new()),
            (Kind::Thing, "Datastreams") => {
                let mut out = Vec::new();
                if let Some(d) = device(id) {
                    for s in self.series_of(&d)? {
                        out.push(self.datastream(&s)?);
                    }
                }
                Related::Many(Kind::Datastream, out)
            }
            (Kind::Sensor, "Datastreams") => {
                let mut out = Vec::new();
                for s in self.all_series()?.iter().filter(|s| s.device.profile == id) {
                    out.push(self.datastream(s)?);
                }
                Related::Many(Kind::Datastream, out)
            }
            (Kind::ObservedProperty, "Datastreams") => {
                let mut out = Vec::new();
                for s in self.all_series()?.iter().filter(|s| s.quantity.name() == id) {
                    out.push(self.datastream(s)?);
                }
                Related::Many(Kind::Datastream, out)
            }
            (Kind::Datastream, "Observations") => Related::Observations(self.series(id)?.into_iter().collect()),
            (Kind::FeatureOfInterest, "Observations") => match device(id) {
                Some(d) => Related::Observations(self.series_of(&d)?),
                None => Related::Observations(Vec::new()),
            },
            (Kind::Datastream, "Thing" | "Sensor" | "ObservedProperty") => {
                let Some(s) = self.series(id)? else { return Ok(None) };
                match nav {
                    "Thing" => Related::One(Kind::Thing, self.thing(&s.device)),
                    "Sensor" => match self.sensor(&s.device.profile) {
                        Some(v) => Related::One(Kind::Sensor, v),
                        None => return Ok(None),
                    },
                    _ => Related::One(Kind::ObservedProperty, self.observed_property(s.quantity)),
                }
            }
            (Kind::Observation, "Datastream" | "FeatureOfInterest") => {
                let Some((ds, _)) = id.rsplit_once(':') else { return Ok(None) };
                let Some(s) = self.series(ds)? else { return Ok(None) };
                if nav == "Datastream" {
                    Related::One(Kind::Datastream, self.datastream(&s)?)
                } else {
                    Related::One(Kind::FeatureOfInterest, self.feature(&s.device))
                }
            }
            _ => return Ok(None),
        }))
    }

    fn nav_links(&self, kind: Kind, path: &str, out: &mut Map<String, Value>) {
        for (name, _, _) in kind.navigation() {
            out.insert(format!("{name}@iot.navigationLink"), json!(format!("{path}/{name}")));
        }
    }

    fn entity(&self, kind: Kind, id: &str, fields: Value) -> Value {
        let path = self.links.entity(kind, id);
        let mut out = Map::new();
        out.insert("@iot.id".into(), json!(id));
        out.insert("@iot.selfLink".into(), json!(path));
        if let Value::Object(fields) = fields {
            out.extend(fields);
        }
        self.nav_links(kind, &path, &mut out);
        Value::Object(out)
    }

    fn point(d: &Device) -> Value {
        json!({ "type": "Point", "coordinates": [d.lon, d.lat] })
    }

    fn thing(&self, d: &Device) -> Value {
        let mut properties = json!({
            "district": d.district,
            "owner": d.owner,
            "licence": d.licence,
            "licenceUri": licence_uri(&d.licence),
            "profile": d.profile,
        });
        if let Some(h) = d.height_m {
            properties["heightAboveGround_m"] = json!(h);
        }
        if let Some(i) = d.installed {
            properties["installed"] = json!(i.to_string());
        }
        properties["districtAggregates"] = json!(self.links.v1(&format!("/v1/aggregates?district={}", encode(&d.district))));
        self.entity(
            Kind::Thing,
            d.id.as_str(),
            json!({
                "name": d.name,
                "description": format!("Climate sensor {} ({}) in {}, operated by {}", d.id, d.profile, d.district, d.owner),
                "properties": properties,
            }),
        )
    }

    fn location(&self, d: &Device) -> Value {
        self.entity(
            Kind::Location,
            d.id.as_str(),
            json!({
                "name": d.name,
                "description": format!("Where sensor {} stands", d.id),
                "encodingType": "application/geo+json",
                "location": Self::point(d),
            }),
        )
    }

    pub fn feature(&self, d: &Device) -> Value {
        self.entity(
            Kind::FeatureOfInterest,
            d.id.as_str(),
            json!({
                "name": d.name,
                "description": format!("The air at sensor {}", d.id),
                "encodingType": "application/geo+json",
                "feature": Self::point(d),
            }),
        )
    }

    fn sensor(&self, profile: &str) -> Option<Value> {
        let p = self.profiles.get(profile)?;
        Some(self.entity(
            Kind::Sensor,
            profile,
            json!({
                "name": format!("{} {}", p.vendor(), p.model()),
                "description": format!("Sensor profile {profile}: {} {}", p.vendor(), p.model()),
                "encodingType": "text/html",
                "metadata": p.reference(),
            }),
        ))
    }

    fn observed_property(&self, q: Quantity) -> Value {
        let cf = !NOT_CF.contains(&q.name());
        self.entity(
            Kind::ObservedProperty,
            q.name(),
            json!({
                "name": q.name(),
                "definition": definition(q),
                "description": if cf { format!("CF standard name {}", q.name()) } else { format!("{} (messnetz quantity, not a CF standard name)", q.name()) },
                "properties": { "unit": q.unit() },
            }),
        )
    }

    /// A datastream's JSON (built once per request).
    pub fn datastream(&self, s: &Series) -> Result<Value, ApiError> {
        let id = s.id();
        if let Some(v) = self.datastream_json.borrow().get(&id) {
            return Ok(v.clone());
        }
        let last = self.streams(&s.device)?.iter().find(|(q, _)| *q == s.quantity).and_then(|(_, t)| *t);
        let time = match last {
            Some(last) => {
                let first =
                    self.store.readings(&s.device.id, s.quantity, DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC, 1)?;
                let first = first.first().map_or(last, |r| r.time);
                Some(format!("{}/{}", rfc3339(first), rfc3339(last)))
            }
            None => None,
        };
        let (d, q) = (&s.device, s.quantity);
        let v = self.entity(
            Kind::Datastream,
            &id,
            json!({
                "name": format!("{} at {}", q.name(), d.name),
                "description": format!("{} measured by sensor {}, in {}", q.name(), d.id, q.unit()),
                "unitOfMeasurement": {
                    "name": unit_name(q.unit()),
                    "symbol": q.unit(),
                    "definition": format!("http://unitsofmeasure.org/ucum.html#{}", encode(q.unit())),
                },
                "observationType": "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement",
                "observedArea": Self::point(d),
                "phenomenonTime": time,
                "resultTime": time,
                "properties": {
                    "licence": d.licence,
                    "licenceUri": licence_uri(&d.licence),
                    "district": d.district,
                    "aggregates": self.links.v1(&format!("/v1/aggregates?device={}&quantity={}", d.id, q.name())),
                    "districtAggregates": self.links.v1(&format!("/v1/aggregates?district={}&quantity={}", encode(&d.district), q.name())),
                },
            }),
        );
        self.datastream_json.borrow_mut().insert(id, v.clone());
        Ok(v)
    }

    pub fn observation(&self, s: &Series, r: &Reading) -> Value {
        let time = rfc3339(r.time);
        let mut quality = json!({ "flag": r.flag.as_str() });
        if !r.reason.is_empty() {
            quality["reason"] = json!(r.reason);
        }
        let result = if r.value.is_finite() { json!(round(r.value)) } else { Value::Null };
        self.entity(
            Kind::Observation,
            &observation_id(s, r),
            json!({ "phenomenonTime": time, "resultTime": time, "result": result, "resultQuality": quality }),
        )
    }
}

pub fn observation_id(s: &Series, r: &Reading) -> String {
    format!("{}:{}:{}", s.device.id, s.quantity.name(), r.time.timestamp_millis())
}
