//! The device registry: which device sent an uplink, its profile, and the metadata the API publishes.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::config::{CitizenSettings, QualitySettings};
use crate::model::{DevEui, DeviceId, Quantity};

/// Who may see a device's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// Published in the open API.
    Open,
    /// Stored, but never shown in the open API.
    Internal,
}

/// Where a device's data comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A station of the city's network.
    #[default]
    Official,
    /// A sensor a citizen registered (`/v1/citizens/sensors`): uncalibrated, compared with
    /// the nearest official stations, kept out of the district aggregates unless configured.
    Citizen,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Official => "official",
            Source::Citizen => "citizen",
        }
    }

    fn is_official(&self) -> bool {
        *self == Source::Official
    }
}

/// One `[[device]]` entry of the devices file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// The gateway's id of the device: used in URLs and store keys.
    pub id: DeviceId,
    /// Human-readable name.
    pub name: String,
    /// Id of the sensor profile that decodes its payloads.
    pub profile: String,
    /// LoRaWAN DevEUI (16 hex digits).
    #[serde(default)]
    pub dev_eui: Option<DevEui>,
    /// Device id in the network server (The Things Stack `device_id`), when it differs from `id`.
    #[serde(default)]
    pub ns_device_id: Option<String>,
    /// WGS 84 latitude in degrees.
    pub lat: f64,
    /// WGS 84 longitude in degrees.
    pub lon: f64,
    /// Height of the sensor above ground, in metres.
    #[serde(default)]
    pub height_m: Option<f64>,
    /// City district the device stands in.
    pub district: String,
    /// The department that owns the device and its data.
    pub owner: String,
    /// Licence of the published data, e.g. `dl-by-de/2.0`.
    pub licence: String,
    /// `open` (published) or `internal` (stored only).
    pub visibility: Visibility,
    /// Installation date.
    #[serde(default)]
    pub installed: Option<NaiveDate>,
    /// Physical range per quantity for this device, `[min, max]` in the canonical unit, e.g.
    /// `ranges = { air_temperature = [-30, 50] }`: overrides its profile's and the configured
    /// range for the quality range test.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ranges: BTreeMap<Quantity, [f64; 2]>,
    /// Battery threshold in volts for this device, instead of its profile's or `quality.battery_low_v`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery_low_v: Option<f64>,
    /// Longest silence, in seconds, before the device counts as stale; default
    /// `quality.expected_interval_s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_interval_s: Option<u64>,
    /// `official` (the default) or `citizen`: a citizen's sensor. Registered citizen sensors
    /// are kept in the store, not in this file; the key lets a file mark one it imports.
    #[serde(default, skip_serializing_if = "Source::is_official")]
    pub source: Source,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DevicesFile {
    #[serde(default)]
    device: Vec<Device>,
}

/// Why the devices file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum DevicesError {
    #[error("{path}: cannot read: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: device[{index}] ({id}): {message}")]
    Invalid { path: PathBuf, index: usize, id: String, message: String },
    /// A key an uplink names its device by (`dev_eui`, or the network server's device id) is
    /// already another device's: uplinks naming it could not tell the two apart.
    #[error("{path}: device[{index}] ({id}): {field}: {value} is already used by device[{other_index}] ({other}) as its {other_field}; each device needs its own")]
    Taken {
        path: PathBuf,
        index: usize,
        id: String,
        /// The key of this device: `dev_eui`, `ns_device_id`, or `id` (the network id when `ns_device_id` is absent).
        field: &'static str,
        value: String,
        other_index: usize,
        other: String,
        other_field: &'static str,
    },
}

impl DevicesError {
    /// The other device of a [`DevicesError::Taken`].
    pub fn other_device(&self) -> Option<&str> {
        match self {
            DevicesError::Taken { other, .. } => Some(other),
            _ => None,
        }
    }
}

/// All devices, indexed by every key an uplink can name them by.
#[derive(Debug, Default, Clone)]
pub struct DeviceRegistry {
    devices: Vec<Arc<Device>>,
    by_id: HashMap<DeviceId, usize>,
    by_eui: HashMap<DevEui, usize>,
    by_ns_id: HashMap<String, usize>,
    /// The `[quality]` settings the devices are checked against; kept with the devices so that
    /// every snapshot carries the defaults its per-device overrides fall back on.
    quality: Arc<QualitySettings>,
    /// The `[citizens]` settings, kept with the devices like `quality`.
    citizens: Arc<CitizenSettings>,
}

impl DeviceRegistry {
    /// Load and check the devices file. Every problem is returned, not just the first.
    /// `profile_exists` tells whether a profile id is known.
    pub fn load(path: &Path, profile_exists: impl Fn(&str) -> bool) -> Result<Self, Vec<DevicesError>> {
        let text = std::fs::read_to_string(path).map_err(|source| vec![DevicesError::Read { path: path.to_owned(), source }])?;
        Self::parse(path, &text, profile_exists)
    }

    pub fn parse(path: &Path, text: &str, profile_exists: impl Fn(&str) -> bool) -> Result<Self, Vec<DevicesError>> {
        let file: DevicesFile =
            toml::from_str(text).map_err(|e| vec![DevicesError::Parse { path: path.to_owned(), message: e.to_string() }])?;
        let mut registry = DeviceRegistry::default();
        let mut errors = Vec::new();
        for (index, device) in file.device.into_iter().enumerate() {
            let mut invalid = |message: String| {
                errors.push(DevicesError::Invalid { path: path.to_owned(), index, id: device.id.to_string(), message })
            };
            if !profile_exists(&device.profile) {
                invalid(format!("profile: no sensor profile {:?}", device.profile));
            }
            if !(-90.0..=90.0).contains(&device.lat) || !(-180.0..=180.0).contains(&device.lon) {
                invalid(format!("lat/lon: ({}, {}) is not a position on Earth", device.lat, device.lon));
            }
            if let Some(why) = crate::model::licence_problem(&device.licence) {
                invalid(format!("licence: {why}"));
            }
            if registry.by_id.contains_key(&device.id) {
                invalid("id: used by an earlier device".into());
            }
            for (q, message) in crate::config::range_problems(&device.ranges) {
                invalid(format!("ranges.{q}: {message}"));
            }
            if device.battery_low_v.is_some_and(|v| !v.is_finite() || v < 0.0) {
                invalid("battery_low_v: expected 0 (off) or more volts".into());
            }
            if device.expected_interval_s == Some(0) {
                invalid("expected_interval_s: expected at least 1 second".into());
            }
            let taken = |field: &'static str, value: String, j: usize, other_field: &'static str| DevicesError::Taken {
                path: path.to_owned(),
                index,
                id: device.id.to_string(),
                field,
                value,
                other_index: j,
                other: registry.devices[j].id.to_string(),
                other_field,
            };
            if let Some(eui) = device.dev_eui {
                if let Some(&j) = registry.by_eui.get(&eui) {
                    errors.push(taken("dev_eui", eui.to_string(), j, "dev_eui"));
                }
            }
            // The network server's id: `ns_device_id`, or the device's own id without one.
            let ns_field = |d: &Device| if d.ns_device_id.is_some() { "ns_device_id" } else { "id" };
            let ns_id = device.ns_device_id.clone().unwrap_or_else(|| device.id.to_string());
            if let Some(&j) = registry.by_ns_id.get(&ns_id) {
                let (this, other) = (ns_field(&device), ns_field(&registry.devices[j]));
                // Two equal ids are already reported as such.
                if (this, other) != ("id", "id") {
                    errors.push(taken(this, format!("{ns_id:?}"), j, other));
                }
            }
            let i = registry.devices.len();
            registry.by_id.insert(device.id.clone(), i);
            if let Some(eui) = device.dev_eui {
                registry.by_eui.insert(eui, i);
            }
            registry.by_ns_id.entry(ns_id).or_insert(i);
            registry.devices.push(Arc::new(device));
        }
        if errors.is_empty() {
            Ok(registry)
        } else {
            Err(errors)
        }
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Device>> {
        let id = DeviceId::parse(id).ok()?;
        self.by_id.get(&id).map(|&i| &self.devices[i])
    }

    /// Find the sender of an uplink: by DevEUI first (unique across networks), then by the
    /// network server's device id.
    pub fn find(&self, dev_eui: Option<DevEui>, ns_device_id: Option<&str>) -> Option<&Arc<Device>> {
        dev_eui
            .and_then(|eui| self.by_eui.get(&eui))
            .or_else(|| ns_device_id.and_then(|id| self.by_ns_id.get(id)))
            .map(|&i| &self.devices[i])
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Device>> {
        self.devices.iter()
    }

    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// This registry with `extra` devices added behind its own (the registered citizen
    /// sensors): one whose id or network id is taken by a device already here is left out,
    /// so the devices file always wins.
    pub fn with_extra(&self, extra: &[Device], citizens: Arc<CitizenSettings>) -> Self {
        let mut out = self.clone();
        out.citizens = citizens;
        for device in extra {
            let ns_id = device.ns_device_id.clone().unwrap_or_else(|| device.id.to_string());
            if out.by_id.contains_key(&device.id) || out.by_ns_id.contains_key(&ns_id) {
                continue;
            }
            let i = out.devices.len();
            out.by_id.insert(device.id.clone(), i);
            out.by_ns_id.insert(ns_id, i);
            out.devices.push(Arc::new(device.clone()));
        }
        out
    }

    /// Whether this device's readings count towards its district's aggregates: open devices,
    /// citizen sensors only when `citizens.in_district_aggregates` is on.
    pub fn counts_in_district(&self, device: &Device) -> bool {
        device.visibility == Visibility::Open && (device.source == Source::Official || self.citizens.in_district_aggregates)
    }

    /// The `[citizens]` settings (the neighbour test's thresholds).
    pub fn citizens(&self) -> &CitizenSettings {
        &self.citizens
    }

    /// The official open devices as (id, lat, lon): the neighbours a citizen sensor is
    /// compared with.
    pub fn official_stations(&self) -> impl Iterator<Item = (&DeviceId, f64, f64)> {
        self.devices
            .iter()
            .filter(|d| d.source == Source::Official && d.visibility == Visibility::Open)
            .map(|d| (&d.id, d.lat, d.lon))
    }

    /// Use these `[quality]` settings (the configured ones; without, the defaults).
    pub fn with_quality(mut self, quality: Arc<QualitySettings>) -> Self {
        self.quality = quality;
        self
    }

    pub fn quality(&self) -> &QualitySettings {
        &self.quality
    }

    /// Whether a device last heard from at `last_seen` is stale at `now`: silent for longer
    /// than its expected interval. A device never heard from is stale.
    pub fn is_stale(
        &self,
        device: &Device,
        last_seen: Option<chrono::DateTime<chrono::Utc>>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> bool {
        let interval = device.expected_interval_s.unwrap_or(self.quality.expected_interval_s);
        let interval = chrono::Duration::seconds(interval.min(i64::MAX as u64 / 1000) as i64);
        match last_seen {
            Some(t) => now - t > interval,
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[[device]]
id = "a"
name = "A"
profile = "p"
dev_eui = "a840410000000001"
lat = 48.1
lon = 11.5
district = "Mitte"
owner = "Umweltamt"
licence = "dl-by-de/2.0"
visibility = "open"

[[device]]
id = "b"
name = "B"
profile = "p"
ns_device_id = "ttn-b"
lat = 48.1
lon = 11.5
district = "Mitte"
owner = "Umweltamt"
licence = "dl-by-de/2.0"
visibility = "internal"
installed = "2026-03-01"
"#;

    #[test]
    fn citizen_sensors_join_behind_the_file_and_count_in_districts_only_when_configured() {
        let r = DeviceRegistry::parse(Path::new("d.toml"), FILE, |p| p == "p").unwrap();
        let mut citizen = (**r.get("a").unwrap()).clone();
        citizen.id = DeviceId::parse("c-1").unwrap();
        citizen.dev_eui = None;
        citizen.source = Source::Citizen;
        let mut clash = citizen.clone();
        clash.id = DeviceId::parse("b").unwrap();
        let merged = r.with_extra(&[citizen.clone(), clash], Arc::new(CitizenSettings::default()));
        assert_eq!(merged.len(), 3, "a citizen sensor with a file device's id is left out");
        assert_eq!(merged.get("b").unwrap().source, Source::Official);
        let c = merged.find(None, Some("c-1")).unwrap();
        assert!(!merged.counts_in_district(c), "citizens stay out of district aggregates by default");
        assert!(merged.counts_in_district(merged.get("a").unwrap()));
        assert!(!merged.counts_in_district(merged.get("b").unwrap()), "internal devices never count");
        let ids: Vec<&str> = merged.official_stations().map(|(id, _, _)| id.as_str()).collect();
        assert_eq!(ids, ["a"], "neighbours are official open devices");
        let opted_in = r.with_extra(&[citizen], Arc::new(CitizenSettings { in_district_aggregates: true, ..Default::default() }));
        assert!(opted_in.counts_in_district(opted_in.get("c-1").unwrap()));
    }

    #[test]
    fn finds_devices_by_eui_then_network_id() {
        let r = DeviceRegistry::parse(Path::new("d.toml"), FILE, |p| p == "p").unwrap();
        let eui = DevEui::parse("A840410000000001").unwrap();
        assert_eq!(r.find(Some(eui), Some("whatever")).unwrap().id.as_str(), "a");
        assert_eq!(r.find(None, Some("ttn-b")).unwrap().id.as_str(), "b");
        assert_eq!(r.find(None, Some("a")).unwrap().id.as_str(), "a");
        assert!(r.find(None, Some("b")).is_none());
        assert!(r.find(Some(DevEui([0; 8])), None).is_none());
    }

    #[test]
    fn reports_every_invalid_device() {
        let text = FILE.replace("profile = \"p\"", "profile = \"nope\"").replace("lat = 48.1\nlon = 11.5\ndistrict = \"Mitte\"\nowner = \"Umweltamt\"\nlicence = \"dl-by-de/2.0\"\nvisibility = \"internal\"", "lat = 98.1\nlon = 11.5\ndistrict = \"Mitte\"\nowner = \"Umweltamt\"\nlicence = \"dl-by-de/2.0\"\nvisibility = \"internal\"");
        let errors = DeviceRegistry::parse(Path::new("d.toml"), &text, |p| p == "p").unwrap_err();
        let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(text.len(), 3, "{text:?}");
        assert!(text[0].contains("device[0] (a): profile"), "{text:?}");
        assert!(text[2].contains("device[1] (b): lat/lon"), "{text:?}");
    }

    #[test]
    fn quality_overrides_are_read_checked_and_staleness_follows_them() {
        let text = FILE.replacen(
            "visibility = \"open\"\n",
            "visibility = \"open\"\nranges = { air_temperature = [-30, 50] }\nexpected_interval_s = 600\n",
            1,
        );
        let r = DeviceRegistry::parse(Path::new("d.toml"), &text, |p| p == "p").unwrap();
        let (a, b) = (r.get("a").unwrap(), r.get("b").unwrap());
        assert_eq!(a.ranges[&Quantity::by_name("air_temperature").unwrap()], [-30.0, 50.0]);
        let now = chrono::Utc::now();
        assert!(!r.is_stale(a, Some(now - chrono::Duration::seconds(500)), now));
        assert!(r.is_stale(a, Some(now - chrono::Duration::seconds(700)), now));
        assert!(!r.is_stale(b, Some(now - chrono::Duration::seconds(700)), now), "default 3600 s");
        assert!(r.is_stale(b, None, now));
        let bad =
            FILE.replacen("visibility = \"open\"\n", "visibility = \"open\"\nranges = { air_temperature = [50, -30] }\n", 1);
        let errors = DeviceRegistry::parse(Path::new("d.toml"), &bad, |p| p == "p").unwrap_err();
        assert!(errors[0].to_string().contains("ranges.air_temperature"), "{}", errors[0]);
    }

    #[test]
    fn a_network_id_or_dev_eui_of_two_devices_is_refused_naming_both() {
        let c = "\n[[device]]\nid = \"c\"\nname = \"C\"\nprofile = \"p\"\nlat = 48.1\nlon = 11.5\ndistrict = \"Mitte\"\nowner = \"Gartenamt\"\nlicence = \"dl-by-de/2.0\"\nvisibility = \"open\"\n";
        let same_ns = format!("{FILE}{}", c.replace("name = \"C\"", "name = \"C\"\nns_device_id = \"ttn-b\""));
        let errors = DeviceRegistry::parse(Path::new("d.toml"), &same_ns, |p| p == "p").unwrap_err();
        let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(text.len(), 1, "{text:?}");
        assert!(text[0].contains("device[2] (c): ns_device_id: \"ttn-b\"") && text[0].contains("device[1] (b)"), "{text:?}");
        assert_eq!(errors[0].other_device(), Some("b"));
        // A network id equal to another device's own id (it has no ns_device_id) is as ambiguous.
        let same_as_id = format!("{FILE}{}", c.replace("name = \"C\"", "name = \"C\"\nns_device_id = \"a\""));
        let errors = DeviceRegistry::parse(Path::new("d.toml"), &same_as_id, |p| p == "p").unwrap_err();
        assert!(errors[0].to_string().contains("device[0] (a) as its id"), "{}", errors[0]);
        let same_eui = format!("{FILE}{}", c.replace("name = \"C\"", "name = \"C\"\ndev_eui = \"A840410000000001\""));
        let errors = DeviceRegistry::parse(Path::new("d.toml"), &same_eui, |p| p == "p").unwrap_err();
        assert!(
            errors[0].to_string().contains("(c): dev_eui: A840410000000001") && errors[0].to_string().contains("(a)"),
            "{}",
            errors[0]
        );
        // Its own id as its ns_device_id is no conflict.
        let own = format!("{FILE}{}", c.replace("name = \"C\"", "name = \"C\"\nns_device_id = \"c\""));
        assert!(DeviceRegistry::parse(Path::new("d.toml"), &own, |p| p == "p").is_ok());
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let err = DeviceRegistry::parse(Path::new("d.toml"), "[[device]]\nid = \"a\"\nnmae = 1\n", |_| true).unwrap_err();
        let msg = err[0].to_string();
        assert!(msg.contains("d.toml") && msg.contains("line 3") && msg.contains("nmae"), "{msg}");
    }
}
