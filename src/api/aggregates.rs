//! `/v1/aggregates`: rollup windows of an open device or a district, as JSON or CSV.

use std::fmt::Write;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Duration, Utc};
use serde_json::json;

use super::{download_as, error::ApiError, licence_link, licence_uri, open_device, parse_time, rfc3339, round, AppState};
use crate::aggregates::{Interval, Scope};
use crate::devices::Visibility;
use crate::model::Quantity;

#[derive(Debug)]
struct AggregatesQuery {
    scope: Scope,
    quantity: Quantity,
    interval: Interval,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    csv: bool,
}

/// Range used when `from` is not given, per interval: a day of 10-minute windows, a week of
/// hours, a year of days.
fn default_range(interval: Interval) -> Duration {
    match interval {
        Interval::TenMinutes => Duration::days(1),
        Interval::Hour => Duration::days(7),
        Interval::Day => Duration::days(365),
    }
}

fn parse_query(pairs: &[(String, String)], max_points: usize, now: DateTime<Utc>) -> Result<AggregatesQuery, ApiError> {
    let bad = |m: String| ApiError::BadRequest(m);
    let (mut device, mut district, mut quantity, mut from, mut to) = (None, None, None, None, None);
    let mut interval = Interval::Hour;
    let mut csv = false;
    for (k, v) in pairs {
        match k.as_str() {
            "device" => device = Some(v.clone()),
            "district" => district = Some(v.clone()),
            "quantity" => quantity = Some(Quantity::by_name(v).ok_or_else(|| bad(format!("quantity: unknown quantity {v:?}")))?),
            "interval" => {
                interval = Interval::parse(v).ok_or_else(|| bad(format!("interval: expected 10m, 1h or 1d, got {v:?}")))?
            }
            "from" => from = Some(parse_time("from", v)?),
            "to" => to = Some(parse_time("to", v)?),
            "format" => {
                csv = match v.as_str() {
                    "json" => false,
                    "csv" => true,
                    _ => return Err(bad(format!("format: expected json or csv, got {v:?}"))),
                }
            }
            _ => {
                return Err(bad(format!(
                    "{k}: unknown parameter; expected device or district, quantity, interval, from, to, format"
                )))
            }
        }
    }
    let scope = match (device, district) {
        (Some(d), None) => Scope::Device(d),
        (None, Some(z)) => Scope::District(z),
        (Some(_), Some(_)) => return Err(bad("device: give either device or district, not both".into())),
        (None, None) => return Err(bad("device: missing; give device=ID or district=NAME".into())),
    };
    let quantity = quantity.ok_or_else(|| bad("quantity: missing, e.g. quantity=air_temperature".into()))?;
    let to = to.unwrap_or(now);
    let from = from.unwrap_or(to - default_range(interval));
    if from >= to {
        return Err(bad(format!("from: {} is not before to ({})", rfc3339(from), rfc3339(to))));
    }
    let windows = (to - from).num_milliseconds() / interval.millis();
    if windows > max_points as i64 {
        return Err(bad(format!(
            "to: the range holds {windows} windows of {}; at most {max_points} per request: narrow from/to or use a longer interval",
            interval.as_str()
        )));
    }
    Ok(AggregatesQuery { scope, quantity, interval, from, to, csv })
}

pub async fn aggregates(State(state): State<AppState>, Query(pairs): Query<Vec<(String, String)>>) -> Result<Response, ApiError> {
    let q = parse_query(&pairs, state.max_points, Utc::now())?;
    let (who, licence) = match &q.scope {
        Scope::Device(id) => {
            let device = open_device(&state, id)?;
            (json!({ "device": device.id }), device.licence.clone())
        }
        Scope::District(z) => {
            let known = state.registry.devices().iter().any(|d| d.visibility == Visibility::Open && &d.district == z);
            if !known {
                return Err(ApiError::NotFound(format!("no district {z:?} with open devices")));
            }
            (json!({ "district": z }), state.open_data.district_licence.clone())
        }
    };
    let store = state.store.clone();
    let (scope, quantity, interval) = (q.scope.clone(), q.quantity, q.interval);
    // Windows are selected by their start: widen `from` to the start of its window.
    let from = DateTime::from_timestamp_millis(interval.window_start(q.from.timestamp_millis())).unwrap_or(q.from);
    let to = q.to;
    let windows = tokio::task::spawn_blocking(move || store.rollups(&scope, quantity, interval, from, to))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    let opt = |v: f64, count: u64| if count > 0 { Some(round(v)) } else { None };
    let mut response = if q.csv {
        // The unit on every row, as in the readings CSV: a row read alone still says what it is.
        let mut body = String::from("start,count,excluded,mean,min,max,last,unit\n");
        let cell = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
        for (start, w) in &windows {
            let _ = writeln!(
                body,
                "{},{},{},{},{},{},{},{}",
                rfc3339(*start),
                w.count,
                w.excluded,
                cell(w.mean().map(round)),
                cell(opt(w.min, w.count)),
                cell(opt(w.max, w.count)),
                cell(opt(w.last, w.count)),
                q.quantity.unit(),
            );
        }
        let mut response = ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response();
        let who = match &q.scope {
            Scope::Device(id) => id.clone(),
            Scope::District(z) => z.clone(),
        };
        download_as(
            &mut response,
            &format!("{who}_{}_{}_{}.csv", q.quantity.name(), q.interval.as_str(), from.format("%Y%m%dT%H%M%SZ")),
        );
        response
    } else {
        let points: Vec<_> = windows
            .iter()
            .map(|(start, w)| {
                json!({
                    "start": rfc3339(*start),
                    "count": w.count,
                    "excluded": w.excluded,
                    "mean": w.mean().map(round),
                    "min": opt(w.min, w.count),
                    "max": opt(w.max, w.count),
                    "last": opt(w.last, w.count),
                })
            })
            .collect();
        let mut body = who;
        body["quantity"] = json!(q.quantity.name());
        body["unit"] = json!(q.quantity.unit());
        body["interval"] = json!(q.interval.as_str());
        body["licence"] = json!(licence);
        body["licence_uri"] = json!(licence_uri(&licence));
        body["from"] = json!(rfc3339(from));
        body["to"] = json!(rfc3339(q.to));
        body["points"] = json!(points);
        Json(body).into_response()
    };
    licence_link(&mut response, &licence);
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Result<AggregatesQuery, ApiError> {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        parse_query(&pairs, 1000, DateTime::parse_from_rfc3339("2026-11-25T12:00:00Z").unwrap().with_timezone(&Utc))
    }

    #[test]
    fn large_ranges_are_refused_with_the_limit() {
        let err =
            q(&[("district", "Mitte"), ("quantity", "air_temperature"), ("interval", "10m"), ("from", "2026-01-01T00:00:00Z")])
                .unwrap_err()
                .to_string();
        assert!(err.contains("at most 1000"), "{err}");
        assert!(q(&[
            ("district", "Mitte"),
            ("quantity", "air_temperature"),
            ("interval", "1d"),
            ("from", "2026-01-01T00:00:00Z")
        ])
        .is_ok());
    }

    #[test]
    fn exactly_one_of_device_and_district() {
        assert!(q(&[("quantity", "air_temperature")]).unwrap_err().to_string().starts_with("device:"));
        assert!(q(&[("device", "a"), ("district", "b"), ("quantity", "air_temperature")]).is_err());
        assert!(q(&[("device", "a"), ("quantity", "air_temperature"), ("interval", "2h")])
            .unwrap_err()
            .to_string()
            .starts_with("interval:"));
    }
}
