//! The SensorThings entity types: their names, navigation properties and plain properties.

/// The entity types, by their SensorThings names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Thing,
    Location,
    HistoricalLocation,
    Sensor,
    ObservedProperty,
    Datastream,
    Observation,
    FeatureOfInterest,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::Thing,
        Kind::Location,
        Kind::HistoricalLocation,
        Kind::Datastream,
        Kind::Sensor,
        Kind::Observation,
        Kind::ObservedProperty,
        Kind::FeatureOfInterest,
    ];

    pub fn plural(self) -> &'static str {
        match self {
            Kind::Thing => "Things",
            Kind::Location => "Locations",
            Kind::HistoricalLocation => "HistoricalLocations",
            Kind::Sensor => "Sensors",
            Kind::ObservedProperty => "ObservedProperties",
            Kind::Datastream => "Datastreams",
            Kind::Observation => "Observations",
            Kind::FeatureOfInterest => "FeaturesOfInterest",
        }
    }

    pub fn singular(self) -> &'static str {
        match self {
            Kind::Thing => "Thing",
            Kind::Location => "Location",
            Kind::HistoricalLocation => "HistoricalLocation",
            Kind::Sensor => "Sensor",
            Kind::ObservedProperty => "ObservedProperty",
            Kind::Datastream => "Datastream",
            Kind::Observation => "Observation",
            Kind::FeatureOfInterest => "FeatureOfInterest",
        }
    }

    pub fn by_plural(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.plural() == name)
    }

    /// Navigation properties: (name, target, whether it is a collection).
    pub fn navigation(self) -> &'static [(&'static str, Kind, bool)] {
        match self {
            Kind::Thing => &[
                ("Locations", Kind::Location, true),
                ("HistoricalLocations", Kind::HistoricalLocation, true),
                ("Datastreams", Kind::Datastream, true),
            ],
            Kind::Location => &[("Things", Kind::Thing, true), ("HistoricalLocations", Kind::HistoricalLocation, true)],
            Kind::HistoricalLocation => &[("Thing", Kind::Thing, false), ("Locations", Kind::Location, true)],
            Kind::Sensor | Kind::ObservedProperty => &[("Datastreams", Kind::Datastream, true)],
            Kind::Datastream => &[
                ("Thing", Kind::Thing, false),
                ("Sensor", Kind::Sensor, false),
                ("ObservedProperty", Kind::ObservedProperty, false),
                ("Observations", Kind::Observation, true),
            ],
            Kind::Observation => {
                &[("Datastream", Kind::Datastream, false), ("FeatureOfInterest", Kind::FeatureOfInterest, false)]
            }
            Kind::FeatureOfInterest => &[("Observations", Kind::Observation, true)],
        }
    }

    /// Plain properties (`$select` accepts these and the navigation properties).
    pub fn properties(self) -> &'static [&'static str] {
        match self {
            Kind::Thing => &["id", "selfLink", "name", "description", "properties"],
            Kind::Location => &["id", "selfLink", "name", "description", "encodingType", "location", "properties"],
            Kind::HistoricalLocation => &["id", "selfLink", "time"],
            Kind::Sensor => &["id", "selfLink", "name", "description", "encodingType", "metadata", "properties"],
            Kind::ObservedProperty => &["id", "selfLink", "name", "definition", "description", "properties"],
            Kind::Datastream => &[
                "id",
                "selfLink",
                "name",
                "description",
                "unitOfMeasurement",
                "observationType",
                "observedArea",
                "phenomenonTime",
                "resultTime",
                "properties",
            ],
            Kind::Observation => {
                &["id", "selfLink", "phenomenonTime", "resultTime", "result", "resultQuality", "validTime", "parameters"]
            }
            Kind::FeatureOfInterest => &["id", "selfLink", "name", "description", "encodingType", "feature", "properties"],
        }
    }
}
