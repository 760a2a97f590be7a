//! Entities as `$filter` and `$orderby` see them: property paths into an entity's JSON, through
//! its singular navigation properties, and into a reading without building its JSON.

use super::entities::{observation_id, Catalog, Related, Series};
use super::eval::{json_path, Properties, Val};
use super::kinds::Kind;
use crate::api::round;
use crate::model::Reading;
use serde_json::Value;

/// A JSON entity as filters see it: its properties, and through its singular navigation
/// properties (`Datastream/Thing/name`) the related entities'.
pub struct EntityProps<'a> {
    pub kind: Kind,
    pub json: &'a Value,
    pub catalog: &'a Catalog,
}

impl Properties for EntityProps<'_> {
    fn get(&self, path: &[String]) -> Val {
        if path.len() > 1 {
            if let Some((_, target, false)) = self.kind.navigation().iter().find(|(n, _, _)| *n == path[0]) {
                return match self.catalog.related(self.kind, self.json, &path[0]) {
                    Ok(Some(Related::One(_, v))) => {
                        EntityProps { kind: *target, json: &v, catalog: self.catalog }.get(&path[1..])
                    }
                    _ => Val::Null,
                };
            }
        }
        json_path(self.json, path)
    }
}

/// A reading as filters see it, without building its JSON: readings are filtered by the
/// thousand.
pub struct ReadingProps<'a> {
    pub series: &'a Series,
    pub reading: &'a Reading,
    pub catalog: &'a Catalog,
}

impl Properties for ReadingProps<'_> {
    fn get(&self, path: &[String]) -> Val {
        let r = self.reading;
        match (path[0].as_str(), path.len()) {
            ("result", 1) => {
                if r.value.is_finite() {
                    Val::Number(round(r.value))
                } else {
                    Val::Null
                }
            }
            ("phenomenonTime" | "resultTime", 1) => Val::Time(r.time),
            ("id" | "@iot.id", 1) => Val::Text(observation_id(self.series, r)),
            ("resultQuality", 1) => Val::Other,
            ("resultQuality", 2) if path[1] == "flag" => Val::Text(r.flag.as_str().into()),
            ("resultQuality", 2) if path[1] == "reason" => {
                if r.reason.is_empty() {
                    Val::Null
                } else {
                    Val::Text(r.reason.to_string())
                }
            }
            ("Datastream", n) if n > 1 => match self.catalog.datastream(self.series) {
                Ok(v) => EntityProps { kind: Kind::Datastream, json: &v, catalog: self.catalog }.get(&path[1..]),
                Err(_) => Val::Null,
            },
            ("FeatureOfInterest", n) if n > 1 => {
                let v = self.catalog.feature(&self.series.device);
                EntityProps { kind: Kind::FeatureOfInterest, json: &v, catalog: self.catalog }.get(&path[1..])
            }
            _ => Val::Null,
        }
    }
}
