//! The page's words in German (the default) and English, for the server-rendered HTML and,
//! as JSON, for the script.

use crate::model::Quantity;

/// The page's language: German unless `?lang=en`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    De,
    En,
}

impl Lang {
    pub fn parse(v: Option<&str>) -> Self {
        match v {
            Some(l) if l.eq_ignore_ascii_case("en") => Lang::En,
            _ => Lang::De,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Lang::De => "de",
            Lang::En => "en",
        }
    }

    /// A number as people of this language write it (decimal comma in German).
    pub fn number(self, v: f64) -> String {
        let text = format!("{}", (v * 100.0).round() / 100.0);
        match self {
            Lang::De => text.replace('.', ","),
            Lang::En => text,
        }
    }
}

/// (key, German, English).
const WORDS: &[(&str, &str, &str)] = &[
    ("skip", "Zum Inhalt springen", "Skip to content"),
    ("intro", "Messwerte des städtischen Klima-Messnetzes und von Sensoren der Bürgerinnen und Bürger, als offene Daten.", "Measurements of the city's climate sensor network and of citizens' sensors, as open data."),
    ("language", "Sprache", "Language"),
    ("map", "Karte der Messstationen", "Map of the stations"),
    ("map_alt", "Karte mit {n} Messstationen; jede ist ein Knopf, der ihre Werte zeigt. Dieselben Werte stehen in der Tabelle unten.", "Map with {n} stations; each is a button that shows its values. The same values are in the table below."),
    ("map_plain", "Ohne Kartenhintergrund: Punkte nach Lage.", "Without map background: points by position."),
    ("noscript", "Karte und Diagramme brauchen JavaScript; die Tabelle unten zeigt alle aktuellen Werte.", "The map and charts need JavaScript; the table below shows all current values."),
    ("latest", "Aktuelle Werte", "Latest values"),
    ("station", "Station", "Station"),
    ("district", "Stadtteil", "District"),
    ("quantity", "Messgröße", "Quantity"),
    ("value", "Wert", "Value"),
    ("time", "Zeit (UTC)", "Time (UTC)"),
    ("quality", "Qualität", "Quality"),
    ("source", "Quelle", "Source"),
    ("official", "Stadt", "City"),
    ("citizen", "Bürgersensor", "Citizen sensor"),
    ("stale", "veraltet", "stale"),
    ("current", "aktuell", "current"),
    ("good", "gut", "good"),
    ("suspect", "fraglich", "suspect"),
    ("bad", "fehlerhaft", "bad"),
    ("none", "Noch keine Messwerte.", "No measurements yet."),
    ("details", "Details", "Details"),
    ("show", "Werte und Verlauf von {name}", "Values and history of {name}"),
    ("close", "Schließen", "Close"),
    ("range", "Zeitraum", "Period"),
    ("h24", "24 Stunden", "24 hours"),
    ("d7", "7 Tage", "7 days"),
    ("chart", "{q}: Verlauf über {range} bis {to}; Mittel {mean}, Minimum {min}, Maximum {max} {unit}.", "{q}: history over {range} until {to}; mean {mean}, minimum {min}, maximum {max} {unit}."),
    ("nodata", "Keine Daten in diesem Zeitraum.", "No data in this period."),
    ("download", "Herunterladen", "Download"),
    ("licence", "Lizenz", "Licence"),
    ("districts", "Stadtteile: letzter Tag", "Districts: last day"),
    ("districts_note", "Mittel, Minimum und Maximum der 24 Stunden bis zur letzten Messung im Stadtteil; nur städtische Stationen.", "Mean, minimum and maximum of the 24 hours until the district's last measurement; city stations only."),
    ("mean", "Mittel", "Mean"),
    ("min", "Minimum", "Minimum"),
    ("max", "Maximum", "Maximum"),
    ("until", "bis", "until"),
    ("register", "Eigenen Sensor anmelden", "Register your own sensor"),
    ("register_note", "Nach der Anmeldung erhalten Sie einen Schlüssel (Token) für Ihren Sensor. Die Stadt prüft die Anmeldung, bevor die Daten öffentlich erscheinen. Sensoren mit der sensor.community-Firmware senden an /v1/citizens/push (Token als Passwort).", "After registering you get a key (token) for your sensor. The city checks the registration before its data appears in public. Sensors running the sensor.community firmware send to /v1/citizens/push (token as the password)."),
    ("name", "Name des Sensors", "Name of the sensor"),
    ("lat", "Breitengrad (z. B. 48,137)", "Latitude (e.g. 48.137)"),
    ("lon", "Längengrad (z. B. 11,575)", "Longitude (e.g. 11.575)"),
    ("submit", "Anmelden", "Register"),
    ("registered", "Sensor angemeldet", "Sensor registered"),
    ("token_note", "Ihr Schlüssel wird nur jetzt angezeigt. Bewahren Sie ihn auf; mit ihm senden Sie Daten und können den Sensor mit allen Daten löschen.", "Your key is shown only now. Keep it; with it you send data and can delete the sensor with all its data."),
    ("delete", "Sensor löschen", "Delete a sensor"),
    ("sensor_id", "Sensor-Kennung", "Sensor id"),
    ("token", "Schlüssel (Token)", "Key (token)"),
    ("delete_submit", "Sensor und Daten löschen", "Delete sensor and data"),
    ("deleted", "Gelöscht.", "Deleted."),
    ("failed", "Das hat nicht geklappt:", "That did not work:"),
    ("back", "Zurück zur Übersicht", "Back to the overview"),
    ("footer", "Daten: {attribution}. Lizenz je Station wie angegeben; Stadtteilwerte: {licence}. Bürgersensoren sind nicht kalibriert und als solche gekennzeichnet.", "Data: {attribution}. Licence per station as shown; district values: {licence}. Citizen sensors are not calibrated and are marked as such."),
    ("api", "Offene Schnittstelle", "Open API"),
];

/// One word; the key itself if unknown (a bug, but not worth a panic).
pub fn t(lang: Lang, key: &str) -> &'static str {
    WORDS.iter().find(|(k, _, _)| *k == key).map(|(_, de, en)| if lang == Lang::De { *de } else { *en }).unwrap_or("?")
}

/// (quantity, German, English): the quantities people will meet on the page.
const QUANTITIES: &[(&str, &str, &str)] = &[
    ("air_temperature", "Lufttemperatur", "Air temperature"),
    ("relative_humidity", "Relative Luftfeuchte", "Relative humidity"),
    ("air_pressure", "Luftdruck", "Air pressure"),
    ("dew_point_temperature", "Taupunkt", "Dew point"),
    ("heat_index", "Hitzeindex", "Heat index"),
    ("wind_speed", "Windgeschwindigkeit", "Wind speed"),
    ("wind_speed_of_gust", "Böen", "Gusts"),
    ("wind_from_direction", "Windrichtung", "Wind direction"),
    ("precipitation_amount", "Niederschlag", "Precipitation"),
    ("rainfall_rate", "Regenrate", "Rainfall rate"),
    ("mass_concentration_of_pm10_ambient_aerosol_particles_in_air", "Feinstaub PM10", "Particulate matter PM10"),
    ("mass_concentration_of_pm2p5_ambient_aerosol_particles_in_air", "Feinstaub PM2,5", "Particulate matter PM2.5"),
    ("mass_concentration_of_pm1_ambient_aerosol_particles_in_air", "Feinstaub PM1", "Particulate matter PM1"),
    ("mole_fraction_of_carbon_dioxide_in_air", "Kohlendioxid", "Carbon dioxide"),
    ("battery_voltage", "Batteriespannung", "Battery voltage"),
    ("battery_level", "Batteriestand", "Battery level"),
    ("probe_temperature", "Fühlertemperatur", "Probe temperature"),
    ("soil_temperature", "Bodentemperatur", "Soil temperature"),
    ("illuminance", "Beleuchtungsstärke", "Illuminance"),
    ("sound_pressure_level", "Schallpegel", "Sound level"),
];

pub fn quantity(lang: Lang, q: Quantity) -> String {
    QUANTITIES
        .iter()
        .find(|(n, _, _)| *n == q.name())
        .map(|(_, de, en)| if lang == Lang::De { (*de).to_owned() } else { (*en).to_owned() })
        .unwrap_or_else(|| q.name().replace('_', " "))
}

/// A UCUM unit as people write it.
pub fn unit(ucum: &str) -> &str {
    match ucum {
        "Cel" => "°C",
        "ug/m3" => "µg/m³",
        "W/m2" => "W/m²",
        "deg" => "°",
        "1" => "",
        other => other,
    }
}

/// Every word, quantity name and unit of the language as a JSON object, for the script.
pub fn json(lang: Lang) -> serde_json::Value {
    let mut words = serde_json::Map::new();
    for (k, de, en) in WORDS {
        words.insert((*k).to_owned(), (if lang == Lang::De { *de } else { *en }).into());
    }
    let mut quantities = serde_json::Map::new();
    for q in Quantity::all() {
        let text = format!("{}|{}", quantity(lang, q), unit(q.unit()));
        quantities.insert(q.name().to_owned(), text.into());
    }
    serde_json::json!({ "lang": lang.code(), "words": words, "quantities": quantities })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_languages_have_every_word_and_numbers_their_comma() {
        for (k, de, en) in WORDS {
            assert!(!de.is_empty() && !en.is_empty(), "{k}");
        }
        assert_eq!(Lang::De.number(28.29), "28,29");
        assert_eq!(Lang::En.number(28.29), "28.29");
        assert_eq!(Lang::parse(Some("EN")), Lang::En);
        assert_eq!(Lang::parse(Some("fr")), Lang::De);
    }
}
