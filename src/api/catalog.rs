//! `/v1/catalog`: a DCAT-AP (DCAT-AP.de) catalogue in JSON-LD of the open datasets, for open-data portals to harvest.
//!
//! One dataset per district and quantity (hourly aggregates of the district's open devices)
//! and one per open device and quantity (its readings and aggregates). Each carries the
//! mandatory DCAT-AP.de properties: title, description, publisher; each distribution an
//! access URL and a licence URI, plus the attribution text where the licence requires one.

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::{error::ApiError, licence_uri, rfc3339, AppState};
use crate::aggregates::{Interval, Scope};
use crate::devices::{Device, Visibility};
use crate::model::Quantity;

const ENVIRONMENT_THEME: &str = "http://publications.europa.eu/resource/authority/data-theme/ENVI";

/// Percent-encode a query value (district names have spaces and umlauts).
fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The span a temporal coverage may claim: from the earliest plausible measurement time to
/// the end of the day after `now` (readings may be a few minutes ahead of the clock).
fn plausible_span(now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    (crate::quality::earliest_plausible(), day_start(now) + chrono::Duration::days(2))
}

fn day_start(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(Interval::Day.window_start(t.timestamp_millis())).unwrap_or(t)
}

/// Whole UTC days covering `[first, last]`, cut to `[floor, ceiling]`; `None` when nothing is left.
fn clamp_days(
    first: DateTime<Utc>,
    last: DateTime<Utc>,
    floor: DateTime<Utc>,
    ceiling: DateTime<Utc>,
) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let start = day_start(first).max(floor);
    let end = day_start(last).checked_add_signed(chrono::Duration::days(1)).unwrap_or(ceiling).min(ceiling);
    (start < end).then_some((start, end))
}

pub async fn catalog(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let devices = state.registry.devices();
    let profiles = state.registry.profiles();
    let open: Vec<std::sync::Arc<Device>> = devices.iter().filter(|d| d.visibility == Visibility::Open).cloned().collect();
    // What each open device measures: its profile's quantities and what is derived from them.
    let mut measured: BTreeMap<String, BTreeSet<Quantity>> = BTreeMap::new();
    for d in &open {
        let mut qs: BTreeSet<Quantity> =
            profiles.get(&d.profile).map(|p| p.quantities().into_iter().collect()).unwrap_or_default();
        let has = |n: &str| Quantity::by_name(n).is_some_and(|q| qs.contains(&q));
        if has("air_temperature") && has("relative_humidity") {
            qs.extend(["dew_point_temperature", "heat_index"].iter().filter_map(|n| Quantity::by_name(n)));
        }
        measured.insert(d.id.to_string(), qs);
    }
    let store = state.store.clone();
    let od = state.open_data.clone();
    let body = tokio::task::spawn_blocking(move || -> Result<Value, ApiError> {
        let base = &od.base_url;
        let publisher = json!({ "@id": od.publisher_uri, "@type": "foaf:Agent", "foaf:name": od.publisher_name });
        // Whole UTC days, from the first day with data to the end of the last, within real
        // years: ingest stores no reading before 2000-01-01 or beyond `max_future_min`, but
        // a store written by an older version may hold such times (year 0001 or 9999).
        let (floor, ceiling) = plausible_span(Utc::now());
        let extent = |scope: &Scope, q: Quantity| -> Result<Option<crate::store::Extent>, ApiError> {
            Ok(store.extent(scope, q)?.and_then(|(first, last)| clamp_days(first, last, floor, ceiling)))
        };
        let distribution = |url: String, format: &str, media: &str, licence: &str| {
            let mut d = json!({
                "@type": "dcat:Distribution",
                "dcat:accessURL": { "@id": url },
                "dct:format": { "@id": format!("http://publications.europa.eu/resource/authority/file-type/{format}") },
                "dcat:mediaType": media,
                "dct:license": { "@id": licence_uri(licence).unwrap_or(licence) },
            });
            if licence.contains("by") && !licence.contains("zero") {
                d["dcatde:licenseAttributionByText"] = json!(od.attribution);
            }
            d
        };
        let dataset = |id: String, title: String, description: String, keywords: Vec<String>, spatial: Value, temporal: Option<(DateTime<Utc>, DateTime<Utc>)>, distributions: Vec<Value>| {
            let mut d = json!({
                "@id": id,
                "@type": "dcat:Dataset",
                "dct:title": title,
                "dct:description": description,
                "dct:publisher": publisher,
                "dcat:theme": { "@id": ENVIRONMENT_THEME },
                "dcat:keyword": keywords,
                "dct:spatial": spatial,
                "dcat:distribution": distributions,
            });
            if let Some((start, end)) = temporal {
                d["dct:temporal"] = json!({ "@type": "dct:PeriodOfTime", "dcat:startDate": rfc3339(start), "dcat:endDate": rfc3339(end) });
            }
            d
        };
        let bbox = |devices: &[&std::sync::Arc<Device>]| {
            let (mut w, mut s, mut e, mut n) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
            for d in devices {
                w = w.min(d.lon);
                e = e.max(d.lon);
                s = s.min(d.lat);
                n = n.max(d.lat);
            }
            json!({ "@type": "dct:Location", "dcat:bbox": format!("POLYGON(({w} {s}, {e} {s}, {e} {n}, {w} {n}, {w} {s}))") })
        };
        let mut datasets = Vec::new();
        // Districts.
        let mut districts: BTreeMap<&str, Vec<&std::sync::Arc<Device>>> = BTreeMap::new();
        for d in &open {
            districts.entry(d.district.as_str()).or_default().push(d);
        }
        for (district, members) in &districts {
            let qs: BTreeSet<Quantity> = members.iter().flat_map(|d| measured[d.id.as_str()].iter().copied()).collect();
            for q in qs {
                let scope = Scope::District((*district).to_owned());
                let url = format!("{base}/v1/aggregates?district={}&quantity={}&interval=1h", enc(district), q.name());
                let lic = &od.district_licence;
                datasets.push(dataset(
                    format!("{base}/v1/catalog#district/{}/{}", enc(district), q.name()),
                    format!("{} in {district}, hourly", q.name().replace('_', " ")),
                    format!(
                        "Hourly count, mean, minimum, maximum and last value of {} ({}) over the {} open sensor(s) of district {district}; readings flagged bad by quality control are excluded. 10-minute and daily windows: change interval= in the URL.",
                        q.name(), q.unit(), members.len()
                    ),
                    vec![q.name().to_owned(), district.to_string(), "Stadtklima".into()],
                    bbox(members),
                    extent(&scope, q)?,
                    vec![
                        distribution(url.clone(), "JSON", "application/json", lic),
                        distribution(format!("{url}&format=csv"), "CSV", "text/csv", lic),
                    ],
                ));
            }
        }
        // Devices.
        for d in &open {
            for q in &measured[d.id.as_str()] {
                let scope = Scope::Device(d.id.to_string());
                let readings = format!("{base}/v1/readings?device={}&quantity={}", d.id, q.name());
                let hourly = format!("{base}/v1/aggregates?device={}&quantity={}&interval=1h", d.id, q.name());
                datasets.push(dataset(
                    format!("{base}/v1/catalog#device/{}/{}", d.id, q.name()),
                    format!("{} at {}", q.name().replace('_', " "), d.name),
                    format!("Readings of {} ({}) from sensor {} ({}), district {}, with a quality flag each; and their hourly aggregates.", q.name(), q.unit(), d.id, d.name, d.district),
                    vec![q.name().to_owned(), d.district.clone(), "Stadtklima".into()],
                    json!({ "@type": "dct:Location", "locn:geometry": { "@type": "gsp:wktLiteral", "@value": format!("POINT({} {})", d.lon, d.lat) } }),
                    extent(&scope, *q)?,
                    vec![
                        distribution(readings.clone(), "JSON", "application/json", &d.licence),
                        distribution(format!("{readings}&format=csv"), "CSV", "text/csv", &d.licence),
                        distribution(hourly, "JSON", "application/json", &d.licence),
                    ],
                ));
            }
        }
        Ok(json!({
            "@context": {
                "dcat": "http://www.w3.org/ns/dcat#",
                "dct": "http://purl.org/dc/terms/",
                "foaf": "http://xmlns.com/foaf/0.1/",
                "dcatde": "http://dcat-ap.de/def/dcatde/",
                "locn": "http://www.w3.org/ns/locn#",
                "gsp": "http://www.opengis.net/ont/geosparql#"
            },
            "@id": format!("{base}/v1/catalog"),
            "@type": "dcat:Catalog",
            "dct:title": od.catalog_title,
            "dct:description": od.catalog_description,
            "dct:publisher": publisher,
            "dcat:service": [{
                "@id": format!("{base}/openapi.json#service"),
                "@type": "dcat:DataService",
                "dct:title": format!("{} API", od.catalog_title),
                "dct:publisher": publisher,
                "dcat:endpointURL": { "@id": base },
                "dcat:endpointDescription": { "@id": format!("{base}/openapi.json") },
                "dct:license": { "@id": licence_uri(&od.district_licence).unwrap_or_default() },
            }],
            "dcat:dataset": datasets,
        }))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(Json(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn coverage_stays_within_real_years() {
        let (floor, ceiling) = plausible_span(at("2026-11-30T06:00:00Z"));
        assert_eq!((floor, ceiling), (at("2000-01-01T00:00:00Z"), at("2026-12-02T00:00:00Z")));
        let got = clamp_days(at("2026-11-01T10:00:00Z"), at("2026-11-30T05:00:00Z"), floor, ceiling);
        assert_eq!(got, Some((at("2026-11-01T00:00:00Z"), at("2026-12-01T00:00:00Z"))));
        let got = clamp_days(at("0001-01-01T00:00:00Z"), at("9999-12-31T23:59:59Z"), floor, ceiling);
        assert_eq!(got, Some((floor, ceiling)));
        assert_eq!(clamp_days(at("9999-12-31T00:00:00Z"), at("9999-12-31T00:00:00Z"), floor, ceiling), None);
        assert_eq!(clamp_days(at("0001-01-01T00:00:00Z"), at("0001-01-02T00:00:00Z"), floor, ceiling), None);
    }
}
