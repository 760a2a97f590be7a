//! What the page shows, read from the registry and the store: the open devices with their
//! latest readings and staleness, and the district aggregates of the last day.

use chrono::{DateTime, Duration, Utc};

use crate::aggregates::{Interval, Scope};
use crate::devices::{DeviceRegistry, Source, Visibility};
use crate::model::{Quantity, Reading};
use crate::store::{ApiStore, StoreError};

/// One open device as the page shows it.
pub struct DeviceView {
    pub id: String,
    pub name: String,
    pub lat: f64,
    pub lon: f64,
    pub district: String,
    pub source: Source,
    pub licence: String,
    pub stale: bool,
    pub last_seen: Option<DateTime<Utc>>,
    pub readings: Vec<Reading>,
}

/// One line of the district table: a quantity's statistics over a district's last day.
pub struct DistrictRow {
    pub district: String,
    pub quantity: Quantity,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
    /// End of the day summed up: the district's newest measurement.
    pub until: DateTime<Utc>,
}

pub struct PageData {
    pub devices: Vec<DeviceView>,
    pub districts: Vec<DistrictRow>,
}

/// Device health is not what a district's day is about.
fn in_district_table(q: Quantity) -> bool {
    !q.name().starts_with("battery_")
}

/// Read everything the page needs. Blocks (store reads).
pub fn gather(store: &dyn ApiStore, devices: &DeviceRegistry, now: DateTime<Utc>) -> Result<PageData, StoreError> {
    let mut views = Vec::new();
    for d in devices.iter().filter(|d| d.visibility == Visibility::Open) {
        let last_seen = store.last_seen(&d.id)?;
        views.push(DeviceView {
            id: d.id.to_string(),
            name: d.name.clone(),
            lat: d.lat,
            lon: d.lon,
            district: d.district.clone(),
            source: d.source,
            licence: d.licence.clone(),
            stale: devices.is_stale(d, last_seen, now),
            last_seen,
            readings: store.latest(&d.id)?,
        });
    }
    views.sort_by(|a, b| {
        (a.source == Source::Citizen, &a.district, &a.name).cmp(&(b.source == Source::Citizen, &b.district, &b.name))
    });
    // Districts as the aggregates have them: the devices that count towards them.
    let mut districts: Vec<String> =
        devices.iter().filter(|d| devices.counts_in_district(d)).map(|d| d.district.clone()).collect();
    districts.sort();
    districts.dedup();
    let mut rows = Vec::new();
    for z in districts {
        let members: Vec<&DeviceView> = views
            .iter()
            .filter(|v| v.district == z && devices.get(&v.id).is_some_and(|d| devices.counts_in_district(d)))
            .collect();
        let Some(until) = members.iter().flat_map(|v| v.readings.iter().map(|r| r.time)).max() else { continue };
        let mut quantities: Vec<Quantity> =
            members.iter().flat_map(|v| v.readings.iter().map(|r| r.quantity)).filter(|q| in_district_table(*q)).collect();
        quantities.sort();
        quantities.dedup();
        let scope = Scope::District(z.clone());
        for q in quantities {
            let windows = store.rollups(&scope, q, Interval::Hour, until - Duration::hours(24), until + Duration::hours(1))?;
            let (mut count, mut sum, mut min, mut max) = (0u64, 0.0, f64::INFINITY, f64::NEG_INFINITY);
            for (_, w) in windows.iter().filter(|(_, w)| w.count > 0) {
                count += w.count;
                sum += w.sum;
                min = min.min(w.min);
                max = max.max(w.max);
            }
            if count > 0 {
                rows.push(DistrictRow { district: z.clone(), quantity: q, mean: sum / count as f64, min, max, until });
            }
        }
    }
    Ok(PageData { devices: views, districts: rows })
}
