//! The catalogue's titles, descriptions and keywords in German and English.

use crate::config::TextLanguage;
use crate::model::Quantity;

/// A quantity's name for people: (German, English). Unlisted quantities fall back to their
/// canonical name with spaces.
fn label(q: Quantity) -> Option<(&'static str, &'static str)> {
    Some(match q.name() {
        "air_temperature" => ("Lufttemperatur", "air temperature"),
        "relative_humidity" => ("relative Luftfeuchte", "relative humidity"),
        "air_pressure" => ("Luftdruck", "air pressure"),
        "wind_speed" => ("Windgeschwindigkeit", "wind speed"),
        "wind_speed_of_gust" => ("Böengeschwindigkeit", "wind gust speed"),
        "wind_from_direction" => ("Windrichtung", "wind direction"),
        "precipitation_amount" => ("Niederschlagsmenge", "precipitation amount"),
        "rainfall_rate" => ("Regenrate", "rainfall rate"),
        "surface_downwelling_shortwave_flux_in_air" => ("Globalstrahlung", "global radiation"),
        "illuminance" => ("Beleuchtungsstärke", "illuminance"),
        "ultraviolet_index" => ("UV-Index", "UV index"),
        "mass_concentration_of_pm2p5_ambient_aerosol_particles_in_air" => ("Feinstaub PM2,5", "particulate matter PM2.5"),
        "mass_concentration_of_pm10_ambient_aerosol_particles_in_air" => ("Feinstaub PM10", "particulate matter PM10"),
        "mass_concentration_of_pm1_ambient_aerosol_particles_in_air" => ("Feinstaub PM1", "particulate matter PM1"),
        "mass_concentration_of_formaldehyde_in_air" => ("Formaldehyd", "formaldehyde"),
        "water_vapor_partial_pressure_in_air" => ("Wasserdampfpartialdruck", "water vapour pressure"),
        "northward_wind" => ("Nordkomponente des Windes", "northward wind"),
        "eastward_wind" => ("Ostkomponente des Windes", "eastward wind"),
        "lightning_strike_count" => ("Blitzeinschläge", "lightning strikes"),
        "mole_fraction_of_carbon_dioxide_in_air" => ("Kohlendioxid", "carbon dioxide"),
        "mass_concentration_of_nitrogen_dioxide_in_air" => ("Stickstoffdioxid", "nitrogen dioxide"),
        "mass_concentration_of_ozone_in_air" => ("Ozon", "ozone"),
        "volume_mixing_ratio_of_tvoc_in_air" => ("flüchtige organische Verbindungen (TVOC)", "volatile organic compounds (TVOC)"),
        "soil_temperature" => ("Bodentemperatur", "soil temperature"),
        "volume_fraction_of_condensed_water_in_soil" => ("Bodenfeuchte", "soil moisture"),
        "dew_point_temperature" => ("Taupunkt", "dew point"),
        "heat_index" => ("Hitzeindex", "heat index"),
        "sound_pressure_level" => ("Schallpegel", "sound level"),
        "probe_temperature" => ("Fühlertemperatur", "probe temperature"),
        "battery_voltage" => ("Batteriespannung", "battery voltage"),
        "battery_level" => ("Batterieladung", "battery level"),
        _ => return None,
    })
}

/// Texts in one language.
#[derive(Debug, Clone, Copy)]
pub struct Texts(pub TextLanguage);

impl Texts {
    pub fn tag(self) -> &'static str {
        self.0.tag()
    }

    pub fn quantity(self, q: Quantity) -> String {
        match (label(q), self.0) {
            (Some((de, _)), TextLanguage::De) => de.to_owned(),
            (Some((_, en)), TextLanguage::En) => en.to_owned(),
            (None, _) => q.name().replace('_', " "),
        }
    }

    /// The first letter upper case (German nouns, English titles).
    fn capital(s: &str) -> String {
        let mut c = s.chars();
        c.next().map(|f| f.to_uppercase().collect::<String>() + c.as_str()).unwrap_or_default()
    }

    pub fn district_title(self, q: Quantity, district: &str) -> String {
        match self.0 {
            TextLanguage::De => format!("{} im Stadtteil {district}, stündlich", Self::capital(&self.quantity(q))),
            TextLanguage::En => format!("{} in {district}, hourly", Self::capital(&self.quantity(q))),
        }
    }

    pub fn district_description(self, q: Quantity, district: &str, sensors: usize) -> String {
        match self.0 {
            TextLanguage::De => format!(
                "Stündliche Anzahl, Mittel, Minimum, Maximum und letzter Wert der Messgröße {} ({}, Einheit {}) über {} des Stadtteils {district}; von der Qualitätskontrolle als fehlerhaft markierte Messwerte sind ausgenommen. 10-Minuten- und Tageswerte: interval= in der URL ändern.",
                self.quantity(q),
                q.name(),
                q.unit(),
                if sensors == 1 { "den einen offenen Sensor".to_owned() } else { format!("die {sensors} offenen Sensoren") }
            ),
            TextLanguage::En => format!(
                "Hourly count, mean, minimum, maximum and last value of {} ({}, unit {}) over the {sensors} open sensor(s) of district {district}; readings flagged bad by quality control are excluded. 10-minute and daily windows: change interval= in the URL.",
                self.quantity(q), q.name(), q.unit()
            ),
        }
    }

    pub fn device_title(self, q: Quantity, device_name: &str) -> String {
        match self.0 {
            TextLanguage::De => format!("{} am Standort {device_name}", Self::capital(&self.quantity(q))),
            TextLanguage::En => format!("{} at {device_name}", Self::capital(&self.quantity(q))),
        }
    }

    pub fn device_description(self, q: Quantity, id: &str, name: &str, district: &str) -> String {
        match self.0 {
            TextLanguage::De => format!(
                "Messwerte der Größe {} ({}, Einheit {}) des Sensors {id} ({name}) im Stadtteil {district}, jeweils mit Qualitätskennzeichen; dazu die stündlichen Aggregate.",
                self.quantity(q), q.name(), q.unit()
            ),
            TextLanguage::En => format!(
                "Readings of {} ({}, unit {}) from sensor {id} ({name}), district {district}, each with a quality flag; and their hourly aggregates.",
                self.quantity(q), q.name(), q.unit()
            ),
        }
    }

    /// The distribution's title: what the download holds.
    pub fn distribution_title(self, what: Download) -> &'static str {
        match (what, self.0) {
            (Download::HourlyJson, TextLanguage::De) => "Stundenwerte (JSON)",
            (Download::HourlyJson, TextLanguage::En) => "Hourly aggregates (JSON)",
            (Download::HourlyCsv, TextLanguage::De) => "Stundenwerte (CSV)",
            (Download::HourlyCsv, TextLanguage::En) => "Hourly aggregates (CSV)",
            (Download::ReadingsJson, TextLanguage::De) => "Einzelmesswerte (JSON)",
            (Download::ReadingsJson, TextLanguage::En) => "Readings (JSON)",
            (Download::ReadingsCsv, TextLanguage::De) => "Einzelmesswerte (CSV)",
            (Download::ReadingsCsv, TextLanguage::En) => "Readings (CSV)",
        }
    }

    pub fn service_title(self, catalog_title: &str) -> String {
        match self.0 {
            TextLanguage::De => format!("{catalog_title}: Programmierschnittstelle"),
            TextLanguage::En => format!("{catalog_title} API"),
        }
    }

    /// A keyword for every dataset.
    pub fn topic(self) -> &'static str {
        match self.0 {
            TextLanguage::De => "Stadtklima",
            TextLanguage::En => "urban climate",
        }
    }
}

/// What a distribution offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Download {
    HourlyJson,
    HourlyCsv,
    ReadingsJson,
    ReadingsCsv,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_quantity_has_a_label_in_both_languages() {
        for q in Quantity::all() {
            assert!(label(q).is_some(), "{q} has no label");
        }
        let de = Texts(TextLanguage::De);
        let q = Quantity::by_name("air_temperature").unwrap();
        assert_eq!(de.district_title(q, "Altstadt"), "Lufttemperatur im Stadtteil Altstadt, stündlich");
        assert_eq!(Texts(TextLanguage::En).device_title(q, "Rathaus"), "Air temperature at Rathaus");
        assert!(de.district_description(q, "Altstadt", 1).contains("über den einen offenen Sensor des Stadtteils Altstadt"));
        assert!(de.district_description(q, "Altstadt", 3).contains("über die 3 offenen Sensoren des Stadtteils Altstadt"));
    }
}
