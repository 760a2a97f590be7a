//! `/v1/readings`: one series of one open device over a time range, as JSON or CSV, paged.

use std::fmt::Write;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Duration, Utc};
use serde_json::json;

use super::{download_as, error::ApiError, licence_link, open_device, parse_time, rfc3339, round, AppState};
use crate::model::Quantity;

/// Range used when `from` is not given: this long before `to`.
const DEFAULT_RANGE: Duration = Duration::days(7);

#[derive(Debug, PartialEq)]
enum Format {
    Json,
    Csv,
}

#[derive(Debug)]
struct ReadingsQuery {
    device: String,
    quantity: Quantity,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    limit: usize,
    format: Format,
}

fn parse_query(pairs: &[(String, String)], max_points: usize, now: DateTime<Utc>) -> Result<ReadingsQuery, ApiError> {
    let bad = |m: String| ApiError::BadRequest(m);
    let mut device = None;
    let mut quantity = None;
    let mut from = None;
    let mut to = None;
    let mut limit = max_points;
    let mut format = Format::Json;
    for (k, v) in pairs {
        match k.as_str() {
            "device" => device = Some(v.clone()),
            "quantity" => {
                quantity = Some(Quantity::by_name(v).ok_or_else(|| {
                    bad(format!("quantity: unknown quantity {v:?}; see GET /v1/devices/{{id}}/latest for a device's quantities"))
                })?)
            }
            "from" => from = Some(parse_time("from", v)?),
            "to" => to = Some(parse_time("to", v)?),
            "limit" => {
                limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|l| (1..=max_points).contains(l))
                    .ok_or_else(|| bad(format!("limit: expected a whole number from 1 to {max_points}, got {v:?}")))?
            }
            "format" => {
                format = match v.as_str() {
                    "json" => Format::Json,
                    "csv" => Format::Csv,
                    _ => return Err(bad(format!("format: expected json or csv, got {v:?}"))),
                }
            }
            _ => return Err(bad(format!("{k}: unknown parameter; expected device, quantity, from, to, limit, format"))),
        }
    }
    let device = device.ok_or_else(|| bad("device: missing; give the device id, e.g. device=demo-lht65".into()))?;
    let quantity = quantity.ok_or_else(|| bad("quantity: missing, e.g. quantity=air_temperature".into()))?;
    let to = to.unwrap_or(now);
    let from = from.unwrap_or(to - DEFAULT_RANGE);
    if from >= to {
        return Err(bad(format!("from: {} is not before to ({})", rfc3339(from), rfc3339(to))));
    }
    Ok(ReadingsQuery { device, quantity, from, to, limit, format })
}

/// A time series. When more than `limit` points fall in the range, the response carries the
/// URL of the next page (`next`, and a `Link: rel="next"` header).
pub async fn series(State(state): State<AppState>, Query(pairs): Query<Vec<(String, String)>>) -> Result<Response, ApiError> {
    let q = parse_query(&pairs, state.max_points, Utc::now())?;
    let device = open_device(&state, &q.device)?;
    let store = state.store.clone();
    let (id, quantity, from, to, limit) = (device.id.clone(), q.quantity, q.from, q.to, q.limit);
    let readings = tokio::task::spawn_blocking(move || store.readings(&id, quantity, from, to, limit))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    let next = (readings.len() == q.limit).then(|| {
        let after = readings[readings.len() - 1].time + Duration::milliseconds(1);
        format!(
            "/v1/readings?device={}&quantity={}&from={}&to={}&limit={}{}",
            device.id,
            q.quantity,
            rfc3339(after),
            rfc3339(q.to),
            q.limit,
            if q.format == Format::Csv { "&format=csv" } else { "" }
        )
        .replace('+', "%2B")
    });
    let mut response = match q.format {
        Format::Json => {
            let points: Vec<_> = readings
                .iter()
                .map(|r| {
                    let mut p = json!({ "time": rfc3339(r.time), "value": round(r.value), "quality": r.flag.as_str() });
                    if !r.reason.is_empty() {
                        p["reason"] = json!(r.reason);
                    }
                    p
                })
                .collect();
            let mut body = json!({
                "device": device.id,
                "quantity": q.quantity.name(),
                "unit": q.quantity.unit(),
                "licence": device.licence,
                "from": rfc3339(q.from),
                "to": rfc3339(q.to),
                "readings": points,
                "next": next,
            });
            // A citizen's sensor says so (official series keep their documented shape).
            if device.source == crate::devices::Source::Citizen {
                body["source"] = json!(device.source.as_str());
            }
            Json(body).into_response()
        }
        Format::Csv => {
            let mut body = String::from("time,value,unit,quality\n");
            for r in &readings {
                // A NaN or infinite value (flagged bad) is an empty cell, as `null` in JSON.
                let value = if r.value.is_finite() { round(r.value).to_string() } else { String::new() };
                let _ = writeln!(body, "{},{value},{},{}", rfc3339(r.time), q.quantity.unit(), r.flag.as_str());
            }
            let mut response = ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response();
            download_as(&mut response, &format!("{}_{}_{}.csv", device.id, q.quantity.name(), q.from.format("%Y%m%dT%H%M%SZ")));
            response
        }
    };
    licence_link(&mut response, &device.licence);
    if let Some(next) = next {
        if let Ok(v) = header::HeaderValue::from_str(&format!("<{next}>; rel=\"next\"")) {
            response.headers_mut().append(header::LINK, v);
        }
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Result<ReadingsQuery, ApiError> {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        parse_query(&pairs, 100, DateTime::parse_from_rfc3339("2026-11-25T12:00:00Z").unwrap().with_timezone(&Utc))
    }

    fn message(r: Result<ReadingsQuery, ApiError>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn defaults_to_the_last_week() {
        let r = q(&[("device", "d"), ("quantity", "air_temperature")]).unwrap();
        assert_eq!(rfc3339(r.from), "2026-11-18T12:00:00Z");
        assert_eq!(rfc3339(r.to), "2026-11-25T12:00:00Z");
        assert_eq!(r.limit, 100);
        assert_eq!(r.format, Format::Json);
    }

    #[test]
    fn each_bad_parameter_is_named() {
        assert!(message(q(&[("quantity", "air_temperature")])).starts_with("device:"));
        assert!(message(q(&[("device", "d")])).starts_with("quantity:"));
        assert!(message(q(&[("device", "d"), ("quantity", "temp")])).starts_with("quantity: unknown"));
        assert!(message(q(&[("device", "d"), ("quantity", "air_temperature"), ("from", "yesterday")])).starts_with("from:"));
        assert!(
            message(q(&[("device", "d"), ("quantity", "air_temperature"), ("to", "2026-13-01T00:00:00Z")])).starts_with("to:")
        );
        assert!(message(q(&[("device", "d"), ("quantity", "air_temperature"), ("limit", "0")])).starts_with("limit:"));
        assert!(message(q(&[("device", "d"), ("quantity", "air_temperature"), ("limit", "101")])).starts_with("limit:"));
        assert!(message(q(&[("device", "d"), ("quantity", "air_temperature"), ("format", "xml")])).starts_with("format:"));
        assert!(message(q(&[("device", "d"), ("quantity", "air_temperature"), ("colour", "red")])).starts_with("colour:"));
        let inverted = q(&[
            ("device", "d"),
            ("quantity", "air_temperature"),
            ("from", "2026-11-25T00:00:00Z"),
            ("to", "2026-11-24T00:00:00Z"),
        ]);
        assert!(message(inverted).starts_with("from:"));
    }
}
