//! Citizen sensors: what a registration holds, its token (kept only as a hash), and the
//! device it becomes in the registry.
//!
//! A token is `<sensor id>.<43 characters of randomness>`: the id part finds the sensor
//! without a scan, the random part (256 bits) is what proves ownership. With that much
//! randomness a fast hash (BLAKE2b) is enough; the store never holds the token itself.

use blake2::{digest::consts::U32, Blake2b, Digest};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::CitizenSettings;
use crate::devices::{Device, Source, Visibility};
use crate::model::DeviceId;

/// The owner (department) citizen sensors are filed under in the registry and the admin API.
pub const OWNER: &str = "citizens";

/// One registered citizen sensor, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CitizenSensor {
    /// The gateway's id, `c-` and 12 random hex digits.
    pub id: DeviceId,
    /// Name the citizen gave it (shown on the page once approved).
    pub name: String,
    pub lat: f64,
    pub lon: f64,
    /// District, if the citizen named one (the page shows it; aggregates use it only when
    /// `citizens.in_district_aggregates` is on).
    pub district: String,
    /// Hex BLAKE2b-256 of the token.
    pub token_hash: String,
    /// Approved by an operator: only then is its data public.
    pub approved: bool,
    pub registered_at: DateTime<Utc>,
    /// Sensor profile for plain-JSON MQTT sensors (`format = "json"`); `None` for
    /// sensor.community pushes, whose value types name their quantities.
    #[serde(default)]
    pub profile: Option<String>,
    /// Licence of the data, as granted at registration.
    pub licence: String,
}

/// What a citizen sends to register.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    pub name: String,
    pub lat: f64,
    pub lon: f64,
    #[serde(default)]
    pub district: Option<String>,
    #[serde(default)]
    pub profile: Option<String>,
}

/// Why a registration is refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RegistrationError {
    #[error("name: expected 1 to 80 characters without control characters")]
    Name,
    #[error("lat/lon: ({0}, {1}) is not a position on Earth")]
    Position(f64, f64),
    #[error("district: expected at most 80 characters without control characters")]
    District,
    #[error("profile: no sensor profile {0:?}")]
    Profile(String),
}

fn plain_text(s: &str, max: usize) -> bool {
    s.chars().count() <= max && !s.chars().any(char::is_control)
}

impl Registration {
    /// Check the registration and make the sensor; returns it with its token (shown once).
    pub fn into_sensor(
        self,
        settings: &CitizenSettings,
        profile_exists: impl Fn(&str) -> bool,
        now: DateTime<Utc>,
    ) -> Result<(CitizenSensor, String), RegistrationError> {
        let name = self.name.trim().to_owned();
        if name.is_empty() || !plain_text(&name, 80) {
            return Err(RegistrationError::Name);
        }
        if !(-90.0..=90.0).contains(&self.lat) || !(-180.0..=180.0).contains(&self.lon) {
            return Err(RegistrationError::Position(self.lat, self.lon));
        }
        let district = self.district.map(|d| d.trim().to_owned()).unwrap_or_default();
        if !plain_text(&district, 80) {
            return Err(RegistrationError::District);
        }
        let profile = self.profile.filter(|p| !p.trim().is_empty());
        if let Some(p) = &profile {
            if !profile_exists(p) {
                return Err(RegistrationError::Profile(p.chars().take(64).collect()));
            }
        }
        let id = new_id();
        let token = format!("{id}.{}", secret());
        let sensor = CitizenSensor {
            id,
            name,
            lat: self.lat,
            lon: self.lon,
            district,
            token_hash: hash(&token),
            approved: false,
            registered_at: now,
            profile,
            licence: settings.licence.clone(),
        };
        Ok((sensor, token))
    }
}

/// A fresh sensor id: `c-` and 12 hex digits from the OS's randomness.
fn new_id() -> DeviceId {
    use rand_core::RngCore;
    let mut bytes = [0u8; 6];
    rand_core::OsRng.fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    DeviceId::parse(&format!("c-{hex}")).unwrap_or_else(|_| unreachable!("hex digits are a valid id"))
}

/// 32 bytes from the OS's randomness, base64url (43 characters).
fn secret() -> String {
    use base64::Engine;
    use rand_core::RngCore;
    let mut bytes = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Hex BLAKE2b-256 of a token.
pub fn hash(token: &str) -> String {
    Blake2b::<U32>::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// The sensor id a token names (its part before the dot), if it is shaped like one.
pub fn id_of_token(token: &str) -> Option<DeviceId> {
    let (id, secret) = token.split_once('.')?;
    (secret.len() >= 32).then(|| DeviceId::parse(id).ok()).flatten()
}

impl CitizenSensor {
    /// Does `token` belong to this sensor? Compares digests, so the time taken says nothing
    /// about how much of the token was right.
    pub fn verifies(&self, token: &str) -> bool {
        hash(token) == self.token_hash
    }

    /// The device the registry knows it as: open once approved, internal before; filed
    /// under [`OWNER`], with the source `citizen`.
    pub fn device(&self) -> Device {
        Device {
            id: self.id.clone(),
            name: self.name.clone(),
            profile: self.profile.clone().unwrap_or_else(|| "sensor-community".into()),
            dev_eui: None,
            ns_device_id: None,
            lat: self.lat,
            lon: self.lon,
            height_m: None,
            district: self.district.clone(),
            owner: OWNER.into(),
            licence: self.licence.clone(),
            visibility: if self.approved { Visibility::Open } else { Visibility::Internal },
            installed: Some(self.registered_at.date_naive()),
            ranges: Default::default(),
            battery_low_v: None,
            expected_interval_s: None,
            source: Source::Citizen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(name: &str, lat: f64) -> Registration {
        Registration { name: name.into(), lat, lon: 11.57, district: Some("Altstadt".into()), profile: None }
    }

    #[test]
    fn a_token_names_its_sensor_and_only_its_hash_is_kept() {
        let (s, token) = reg("Balkon", 48.1).into_sensor(&CitizenSettings::default(), |_| false, Utc::now()).unwrap();
        assert_eq!(id_of_token(&token), Some(s.id.clone()));
        assert!(s.verifies(&token));
        assert!(!s.verifies(&format!("{token}x")));
        assert!(!serde_json::to_string(&s).unwrap().contains(token.split_once('.').unwrap().1));
        assert_eq!(s.device().visibility, Visibility::Internal, "not public before approval");
        assert_eq!(s.device().source, Source::Citizen);
    }

    #[test]
    fn bad_registrations_are_refused() {
        let s = CitizenSettings::default();
        assert_eq!(reg("", 48.0).into_sensor(&s, |_| true, Utc::now()).unwrap_err(), RegistrationError::Name);
        assert_eq!(reg("a\u{1b}[2J", 48.0).into_sensor(&s, |_| true, Utc::now()).unwrap_err(), RegistrationError::Name);
        assert!(matches!(reg("x", 91.0).into_sensor(&s, |_| true, Utc::now()), Err(RegistrationError::Position(..))));
        let mut r = reg("x", 48.0);
        r.profile = Some("nope".into());
        assert!(matches!(r.into_sensor(&s, |_| false, Utc::now()), Err(RegistrationError::Profile(_))));
        assert_eq!(id_of_token("c-1.short"), None);
    }
}
