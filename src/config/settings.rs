//! The typed settings of every component, with their defaults; each field's doc comment is its reference.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// All settings, one section per component.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub broker: BrokerSettings,
    pub mqtt: MqttSettings,
    pub ingest: IngestSettings,
    pub store: StoreSettings,
    pub api: ApiSettings,
    pub devices: DevicesSettings,
    pub profiles: ProfilesSettings,
    pub reload: ReloadSettings,
    pub open_data: OpenDataSettings,
    /// InfluxDB v2 as the production time-series store; absent = embedded store only.
    pub influxdb: Option<InfluxSettings>,
    pub lorawan: LorawanSettings,
    /// Quality control thresholds and device staleness.
    pub quality: super::quality::QualitySettings,
    /// The operator API (`/v1/admin/`): tokens, audit log, brute-force limit.
    pub admin: AdminSettings,
    /// Sensors contributed by citizens: registration, push endpoint, neighbour test.
    pub citizens: super::CitizenSettings,
    /// The public page at `/`.
    pub page: super::PageSettings,
    /// How long readings, dead letters and rollups are kept.
    pub retention: RetentionSettings,
}

/// How long stored data is kept. A background task deletes what is older, a bounded chunk
/// per transaction, so ingest's commits never wait long behind it. 0 days keeps for ever.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionSettings {
    /// Seconds between retention passes; 0 turns retention off (everything is kept).
    pub interval_s: u64,
    /// Most rows one retention transaction deletes.
    pub chunk_rows: usize,
    /// Pause between two retention transactions, in milliseconds, leaving the store to ingest.
    pub chunk_pause_ms: u64,
    /// Readings, by device visibility and quantity.
    pub readings: ReadingsRetention,
    /// Days dead letters are kept (by reception time); 0 = for ever.
    pub dead_letters_days: u32,
    /// Days the 10-minute, hourly and daily rollups (district and device windows) are kept,
    /// counted from the window's end; 0 = for ever. At least as long as any readings retention.
    pub rollups_days: u32,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            interval_s: 3600,
            chunk_rows: 2000,
            chunk_pause_ms: 20,
            readings: ReadingsRetention::default(),
            dead_letters_days: 0,
            rollups_days: 0,
        }
    }
}

/// Days readings are kept, by measurement time: per device visibility, overridden per quantity.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReadingsRetention {
    /// Days readings of open devices are kept; 0 = for ever.
    pub open_days: u32,
    /// Days readings of internal devices (and of devices no longer in the registry) are kept; 0 = for ever.
    pub internal_days: u32,
    /// Days per quantity name (e.g. `battery_voltage = 90`), in place of the visibility's; 0 = for ever.
    pub quantities: std::collections::BTreeMap<String, u32>,
}

impl RetentionSettings {
    /// Checks serde can't express, as (key, message) pairs relative to `retention.`.
    pub(crate) fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.chunk_rows == 0 {
            out.push(("chunk_rows".to_owned(), "expected at least 1".to_owned()));
        }
        for name in self.readings.quantities.keys() {
            if crate::model::Quantity::by_name(name).is_none() {
                out.push((
                    format!("readings.quantities.{name}"),
                    "unknown quantity name (the quantities are listed in docs/data-model.md)".to_owned(),
                ));
            }
        }
        let longest = [self.readings.open_days, self.readings.internal_days]
            .into_iter()
            .chain(self.readings.quantities.values().copied())
            .map(|d| if d == 0 { u32::MAX } else { d })
            .max()
            .unwrap_or(u32::MAX);
        if self.rollups_days != 0 && self.rollups_days < longest {
            out.push((
                "rollups_days".to_owned(),
                "expected 0 (for ever) or at least as many days as the longest readings retention: rollups are kept longer than readings".to_owned(),
            ));
        }
        out
    }
}

/// How the open data is described to portals (the DCAT-AP.de catalogue at `/v1/catalog`) and licensed.
///
/// The texts come in German (the default, for GovData and the Länder portals) and English;
/// `text_language` picks the default and `?lang=de|en` a request's own.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpenDataSettings {
    /// Public base URL of the API, used in the catalogue's links (no trailing slash).
    pub base_url: String,
    /// Title of the catalogue, in German.
    pub catalog_title: String,
    /// Description of the catalogue, in German.
    pub catalog_description: String,
    /// Title of the catalogue, in English (served for `?lang=en` or `text_language = "en"`).
    pub catalog_title_en: String,
    /// Description of the catalogue, in English.
    pub catalog_description_en: String,
    /// Language of the catalogue's titles and descriptions when a request names none.
    pub text_language: TextLanguage,
    /// Name of the publishing body (the city or department).
    pub publisher_name: String,
    /// URI identifying the publisher.
    pub publisher_uri: String,
    /// Name of the contact point for questions about the data (`dcat:contactPoint`, a vCard).
    pub contact_name: String,
    /// E-mail address of the contact point, without `mailto:`. At least one of
    /// `contact_email`, `contact_url` and `contact_phone` is required.
    pub contact_email: Option<String>,
    /// Web page of the contact point (http or https URL).
    pub contact_url: Option<String>,
    /// Telephone number of the contact point, international form such as `+49 89 1234-0`.
    pub contact_phone: Option<String>,
    /// Amtlicher Gemeindeschlüssel (8 digits) of the municipality the data covers: every
    /// dataset gets `dcatde:politicalGeocodingURI` …/politicalGeocoding/municipalityKey/KEY and
    /// the level `municipality`.
    pub municipality_key: String,
    /// The publisher's id in the DCAT-AP.de contributor list (`dcatde:contributorID`,
    /// http://dcat-ap.de/def/contributors/ID), as assigned by GovData.
    pub contributor_id: String,
    /// Language of the data and its metadata: an EU language authority code (`DEU`, `ENG` ...).
    pub language: String,
    /// How often the datasets are updated: an EU frequency authority code, e.g. `UPDATE_CONT`
    /// (continuously updated), `HOURLY`, `DAILY`.
    pub update_frequency: String,
    /// When the catalogue was first published (`dct:issued`, an `xsd:date`); also the issue
    /// date of a dataset whose devices have no `installed` date.
    pub issued: chrono::NaiveDate,
    /// Datasets per catalogue page; the first page stays at `/v1/catalog`, the others are
    /// linked from it (hydra:PagedCollection) and follow with `?page=N`.
    pub catalog_page_size: usize,
    /// Margin around a district's bounding box, in metres, so that a district with a single
    /// device (or devices in a row) still gets an area, not a point.
    pub bbox_padding_m: f64,
    /// Licence of district aggregates, which mix devices: a code of the DCAT-AP.de licence
    /// vocabulary, `dl-by-de/2.0`, `dl-zero-de/2.0`, `cc-by/4.0`, `cc-by-sa/4.0` or `cc-zero`.
    pub district_licence: String,
    /// Attribution text for licences that require one (BY licences).
    pub attribution: String,
    /// Origins whose web pages may read the open routes (CORS): `["*"]` for any (open data),
    /// or a list such as `["https://karte.example.org"]`. Never applied to `/v1/admin/`.
    pub cors_origins: Vec<String>,
}

/// A language the catalogue's texts are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TextLanguage {
    De,
    En,
}

impl TextLanguage {
    /// The BCP 47 tag of literals in this language.
    pub fn tag(self) -> &'static str {
        match self {
            TextLanguage::De => "de",
            TextLanguage::En => "en",
        }
    }
}

impl Default for OpenDataSettings {
    fn default() -> Self {
        Self {
            base_url: "http://127.0.0.1:8080".into(),
            catalog_title: "Stadtklima-Messnetz".into(),
            catalog_description:
                "Lufttemperatur, Luftfeuchte und weitere Klimamesswerte des städtischen Sensornetzes als offene Daten.".into(),
            catalog_title_en: "Urban climate sensor network".into(),
            catalog_description_en:
                "Air temperature, humidity and other climate measurements of the city's sensor network, as open data.".into(),
            text_language: TextLanguage::De,
            publisher_name: "Stadt Musterstadt, Umweltamt".into(),
            publisher_uri: "https://example.org/stadt/umweltamt".into(),
            contact_name: "Stadt Musterstadt, Umweltamt, Stadtklima".into(),
            contact_email: Some("stadtklima@example.org".into()),
            contact_url: None,
            contact_phone: None,
            municipality_key: "09162000".into(),
            contributor_id: "musterstadt".into(),
            language: "DEU".into(),
            update_frequency: "UPDATE_CONT".into(),
            issued: chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap_or_default(),
            catalog_page_size: 100,
            bbox_padding_m: 50.0,
            district_licence: "dl-by-de/2.0".into(),
            attribution: "Stadt Musterstadt, Stadtklima-Messnetz".into(),
            cors_origins: vec!["*".into()],
        }
    }
}

/// Reloading devices and profiles without a restart.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReloadSettings {
    /// How often to look for changed device and profile files, in seconds; 0 turns it off.
    /// A changed set is loaded and checked whole; if anything is wrong the old one stays.
    pub interval_s: u64,
}

impl Default for ReloadSettings {
    fn default() -> Self {
        Self { interval_s: 2 }
    }
}

/// The embedded MQTT listener, for running everything on one machine without a broker of your own.
///
/// Publishers (sensors, bridges, `mosquitto_pub`) connect to the gateway itself; a QoS 1
/// message is acknowledged only once it is stored. It takes messages in and serves no
/// subscribers. With it on, the `[mqtt]` connection to a broker is not made; the formats of
/// `[[mqtt.subscriptions]]` still decide how each topic is read.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerSettings {
    /// Start the embedded listener. Turn off when reading from Mosquitto, EMQX, HiveMQ ...
    pub enabled: bool,
    /// Where it listens (MQTT 3.1.1, no TLS, no passwords: keep it on loopback).
    pub listen: SocketAddr,
    /// Publisher connections open at once; further ones are closed at once.
    pub max_connections: usize,
    /// Largest MQTT packet read whole, in bytes. A larger PUBLISH is read past and becomes a
    /// dead letter holding its first 4 KiB (and is acknowledged); a larger packet of any other
    /// kind closes the connection.
    pub max_packet_bytes: usize,
    /// Time a new connection has to send CONNECT, in milliseconds.
    pub connect_timeout_ms: u64,
}

impl Default for BrokerSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 1883)),
            max_connections: 1000,
            max_packet_bytes: 1024 * 1024,
            connect_timeout_ms: 10_000,
        }
    }
}

/// The MQTT connection the gateway reads uplinks from.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttSettings {
    /// Broker host name or address.
    pub host: String,
    /// Broker port (1883 plain, 8883 TLS by convention).
    pub port: u16,
    /// Client id. Keep it stable: the broker keeps the persistent session (and the messages
    /// queued while the gateway is down) under this id.
    pub client_id: String,
    /// Start with a clean session. Leave false so messages published while the gateway is
    /// down are delivered when it returns.
    pub clean_session: bool,
    /// MQTT keep-alive interval in seconds.
    pub keep_alive_s: u16,
    /// User name, if the broker wants one.
    pub username: Option<String>,
    /// Password, if the broker wants one. Never logged.
    pub password: Option<Secret>,
    /// File holding the password (its first line), in place of `password`: a container
    /// secret, say. Under systemd, a credential named `mqtt_password` (`LoadCredential=`) is
    /// read without this key.
    pub password_file: Option<PathBuf>,
    /// TLS to the broker; absent means plain TCP.
    pub tls: Option<TlsSettings>,
    /// First delay before reconnecting after a lost connection, in milliseconds; doubles up to `reconnect_max_ms`.
    pub reconnect_min_ms: u64,
    /// Longest delay between reconnect attempts, in milliseconds.
    pub reconnect_max_ms: u64,
    /// Largest message body stored, in bytes. The connection reads whatever the broker
    /// delivers (a refused packet would come back on every reconnect); a larger message becomes
    /// a dead letter holding its first 4 KiB. Limit sizes at the broker (Mosquitto:
    /// `message_size_limit`).
    pub max_packet_bytes: usize,
    /// What to subscribe to and how to read it.
    pub subscriptions: Vec<SubscriptionSettings>,
}

impl Default for MqttSettings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 1883,
            client_id: "messnetz".into(),
            clean_session: false,
            keep_alive_s: 30,
            username: None,
            password: None,
            password_file: None,
            tls: None,
            reconnect_min_ms: 200,
            reconnect_max_ms: 30_000,
            max_packet_bytes: 256 * 1024,
            subscriptions: vec![
                SubscriptionSettings { topic: "v3/+/devices/+/up".into(), format: MessageFormat::TtnV3, qos: 1 },
                SubscriptionSettings {
                    topic: "application/+/device/+/event/up".into(),
                    format: MessageFormat::ChirpstackV4,
                    qos: 1,
                },
            ],
        }
    }
}

/// TLS settings of the broker connection.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM file with the CA certificate(s) that signed the broker's certificate.
    pub ca_file: PathBuf,
    /// PEM client certificate, for brokers that authenticate clients by certificate.
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of `client_cert_file`.
    pub client_key_file: Option<PathBuf>,
}

/// One subscription: a topic filter and the format of the messages on it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionSettings {
    /// MQTT topic filter; `$share/GROUP/filter` spreads messages over replicas.
    pub topic: String,
    /// Message format on this topic.
    pub format: MessageFormat,
    /// Subscription QoS: 1 (at least once, acknowledged after storage) or 0.
    #[serde(default = "default_qos")]
    pub qos: u8,
}

fn default_qos() -> u8 {
    1
}

/// The message formats the gateway reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum MessageFormat {
    /// The Things Stack v3 uplink JSON.
    #[serde(rename = "ttn-v3")]
    TtnV3,
    /// ChirpStack v4 `event/up` JSON.
    #[serde(rename = "chirpstack-v4")]
    ChirpstackV4,
    /// Raw LoRaWAN frames from a gateway bridge (ChirpStack Gateway Bridge JSON), opened with ABP session keys.
    #[serde(rename = "lorawan")]
    Lorawan,
    /// A flat JSON object of name → number (ESPHome, Tasmota and similar firmware); the
    /// device is the topic's next-to-last level, its profile's `json` layout reads the names.
    #[serde(rename = "json")]
    Json,
    /// The sensor.community firmware's JSON (`esp8266id`, `sensordatavalues`); the device is
    /// the topic's next-to-last level. Also what the citizens' HTTP push carries.
    #[serde(rename = "sensor-community")]
    SensorCommunity,
}

impl<'de> Deserialize<'de> for MessageFormat {
    // By hand, so that a wrong value is answered with the list of right ones.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "ttn-v3" => Ok(MessageFormat::TtnV3),
            "chirpstack-v4" => Ok(MessageFormat::ChirpstackV4),
            "lorawan" => Ok(MessageFormat::Lorawan),
            "json" => Ok(MessageFormat::Json),
            "sensor-community" => Ok(MessageFormat::SensorCommunity),
            _ => Err(serde::de::Error::custom(format!(
                "unknown format {s:?}; expected \"ttn-v3\", \"chirpstack-v4\", \"lorawan\", \"json\" or \"sensor-community\""
            ))),
        }
    }
}

impl MessageFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageFormat::TtnV3 => "ttn-v3",
            MessageFormat::ChirpstackV4 => "chirpstack-v4",
            MessageFormat::Lorawan => "lorawan",
            MessageFormat::Json => "json",
            MessageFormat::SensorCommunity => "sensor-community",
        }
    }
}

/// Raw LoRaWAN frames (subscriptions with `format = "lorawan"`): where the ABP session keys are.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LorawanSettings {
    /// TOML file of `[[session]]` entries (`dev_addr`, `device`, `nwk_s_key`, `app_s_key`).
    /// It must not be readable by group or others, or the gateway refuses to start. Keys can
    /// also come from `MESSNETZ_LORAWAN_KEY_<DEVADDR>=<device>:<NwkSKey>:<AppSKey>` variables.
    pub keys_file: Option<PathBuf>,
}

/// The stage between the broker and the store.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestSettings {
    /// Messages buffered between the MQTT connection and the store. When full, the gateway
    /// stops reading from the broker (which then holds the messages) instead of growing memory.
    pub queue_capacity: usize,
    /// Most messages committed to the store (and then acknowledged) in one transaction.
    /// Whatever is waiting is taken at once, so batches grow with load up to this size. A
    /// commit rewrites a page of every series it touches, so a backlog of many devices is
    /// stored with far less work in large batches (BENCHMARKS.md: a million uplinks of 1,000
    /// devices took 110.8 s of CPU with 2,000, 52.4 s with 8,000).
    pub max_batch: usize,
    /// Milliseconds a batch that found more than one message waiting (the gateway is busy)
    /// gathers more at most before it is committed; 0 commits what was waiting at once. A
    /// commit costs about half a millisecond of CPU whatever its size (its pages, its sync),
    /// so under load fewer, larger commits cost less; a lone message never waits.
    pub gather_ms: u64,
    /// Milliseconds without a message that end the gathering early: a broker that sends no
    /// more until it has acknowledgements (its in-flight window) is not waited for.
    pub gather_quiet_ms: u64,
}

impl Default for IngestSettings {
    fn default() -> Self {
        Self { queue_capacity: 16_384, max_batch: 8000, gather_ms: 20, gather_quiet_ms: 3 }
    }
}

/// Where readings, rollups, dead letters and the InfluxDB spool are kept.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSettings {
    /// `embedded` (a file in `path`, one gateway) or `postgres` (a PostgreSQL database at
    /// `url`, shared by any number of gateway replicas).
    pub backend: StoreBackend,
    /// Directory of the embedded store; created if missing. (Also the default directory of
    /// the audit log, whichever the backend.)
    pub path: PathBuf,
    /// Milliseconds between flushes of journaled device windows into the stored windows
    /// (embedded store). Queries are current either way; a longer interval costs ingest less
    /// in a burst.
    pub window_flush_ms: u64,
    /// PostgreSQL connection URL (`backend = "postgres"`), such as
    /// `postgres://messnetz:PASSWORD@db.example:5432/messnetz`; better given as the variable
    /// `MESSNETZ__STORE__URL` than written into a file. Its password is never printed.
    pub url: String,
    /// Most connections to PostgreSQL this gateway holds open at once.
    pub pool_size: usize,
    /// TLS to PostgreSQL: `disable`, `prefer` (TLS when the server offers it) or `require`.
    /// With TLS the server's certificate is always verified, against `ca_file` or the system's roots.
    pub sslmode: PgSslMode,
    /// PEM file of the certificate authorities that sign the PostgreSQL server's certificate;
    /// absent = the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Days of readings kept in PostgreSQL: older monthly partitions are dropped whole
    /// (rollup windows stay). 0 keeps everything.
    pub retention_days: u64,
    /// A PostgreSQL role (created by the database's administrator) given read access to what
    /// dashboards show: `readings`, `rollups`, `district_windows` and `last_seen`, granted at
    /// every start. Never dead letters (raw payloads), citizens' registrations, frame
    /// counters or the spool. Absent: no grants.
    pub dashboard_role: Option<String>,
    /// Megabytes of store pages kept in memory. The gateway's memory grows to about this
    /// much during a long burst; more only saves reads of older data.
    pub cache_mb: u64,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            backend: StoreBackend::Embedded,
            path: PathBuf::from("data"),
            window_flush_ms: 5000,
            url: String::new(),
            pool_size: 8,
            sslmode: PgSslMode::Prefer,
            ca_file: None,
            retention_days: 0,
            dashboard_role: None,
            cache_mb: 1024,
        }
    }
}

/// Which store implementation keeps the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// redb, in one file under `store.path`.
    Embedded,
    /// A PostgreSQL database at `store.url`.
    Postgres,
}

/// TLS to PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PgSslMode {
    /// Plain TCP (a database on the same host or a private network).
    Disable,
    /// TLS when the server offers it, plain TCP otherwise.
    Prefer,
    /// TLS or no connection.
    Require,
}

/// The HTTP API.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSettings {
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// Most points one `/v1/readings` response returns; longer ranges are paged.
    pub max_points: usize,
    /// Seconds to wait for open requests at shutdown.
    pub shutdown_grace_s: u64,
    /// Longest a client may take to send a request's headers, in milliseconds; it also bounds
    /// how long a kept-alive connection waits for its next request. Then the connection is closed.
    pub header_read_timeout_ms: u64,
    /// A connection on which nothing is read or written for this many milliseconds, while no
    /// answer is being computed, is closed (a request body that stalls, a client that stops reading).
    pub idle_timeout_ms: u64,
    /// Most HTTP connections open at once. At the limit, the connection quiet longest (not
    /// being answered) is closed to make room. Lowered at start if the file-descriptor limit
    /// (`LimitNOFILE`) would leave fewer than 256 descriptors for the rest of the gateway.
    pub max_connections: usize,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_points: 10_000,
            shutdown_grace_s: 5,
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            max_connections: 1024,
        }
    }
}

/// The device registry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DevicesSettings {
    /// TOML file listing the devices (see docs/configuration.md, "Devices").
    pub file: PathBuf,
}

impl Default for DevicesSettings {
    fn default() -> Self {
        Self { file: PathBuf::from("demo/devices.toml") }
    }
}

/// The sensor profiles.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProfilesSettings {
    /// Directory of sensor profiles, one `*.toml` per sensor model.
    pub dir: PathBuf,
}

impl Default for ProfilesSettings {
    fn default() -> Self {
        Self { dir: PathBuf::from("sensor-profiles") }
    }
}

/// A secret string whose `Debug` output is redacted, so it never reaches a log.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: String) -> Self {
        Self(text)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// InfluxDB v2, written from a durable on-disk spool (see `src/store/influx.rs`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfluxSettings {
    /// Write readings to InfluxDB. `false` keeps the section but spools and sends nothing.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Base URL of the server, e.g. `https://influx.stadt.example:8086`.
    pub url: String,
    /// Organization (name or id) that owns the bucket.
    pub org: String,
    /// Bucket the readings go to.
    pub bucket: String,
    /// API token with write access to the bucket. Never logged.
    #[serde(default)]
    pub token: Option<Secret>,
    /// File holding the token (its first line), in place of `token`. Under systemd, a
    /// credential named `influxdb_token` (`LoadCredential=`) is read without this key.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Most readings (lines) per write request.
    #[serde(default = "default_influx_batch_size")]
    pub batch_size: usize,
    /// Longest a reading waits in the spool for a batch to fill before it is sent, in milliseconds.
    #[serde(default = "default_influx_flush_interval_ms")]
    pub flush_interval_ms: u64,
    /// A batch that is not full is sent sooner, once no commit has added readings for this
    /// many milliseconds (ingest went quiet: waiting longer only delays what waits).
    #[serde(default = "default_influx_linger_ms")]
    pub linger_ms: u64,
    /// Compress request bodies with gzip (line protocol shrinks about tenfold).
    #[serde(default = "yes")]
    pub gzip: bool,
    /// A write that has not been answered within this many milliseconds is retried later.
    #[serde(default = "default_influx_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// First wait before retrying a failed write, in milliseconds; doubles up to `retry_max_ms`.
    #[serde(default = "default_influx_retry_min_ms")]
    pub retry_min_ms: u64,
    /// Longest wait between retries, in milliseconds.
    #[serde(default = "default_influx_retry_max_ms")]
    pub retry_max_ms: u64,
    /// Most readings the spool holds while InfluxDB is unreachable; `spool_full` says what happens beyond.
    #[serde(default = "default_influx_spool_max_readings")]
    pub spool_max_readings: u64,
    /// At the spool limit: `backpressure` stops acknowledging MQTT messages (the broker keeps
    /// them) until there is room; `drop-oldest` deletes the oldest spooled readings (they stay
    /// in the embedded store, only InfluxDB misses them) and counts them.
    #[serde(default)]
    pub spool_full: SpoolFullPolicy,
    /// At shutdown, how long the writer may keep sending what is spooled, in milliseconds;
    /// the rest stays in the spool for the next start.
    #[serde(default = "default_influx_shutdown_flush_ms")]
    pub shutdown_flush_ms: u64,
}

/// What the spool does when it holds `spool_max_readings`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SpoolFullPolicy {
    /// Stop committing (and so acknowledging) new messages until the spool has room.
    #[default]
    Backpressure,
    /// Delete the oldest spooled readings to make room.
    DropOldest,
}

impl<'de> Deserialize<'de> for SpoolFullPolicy {
    // By hand, so that a wrong value is answered with the list of right ones.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "backpressure" => Ok(SpoolFullPolicy::Backpressure),
            "drop-oldest" => Ok(SpoolFullPolicy::DropOldest),
            _ => Err(serde::de::Error::custom(format!("unknown policy {s:?}; expected \"backpressure\" or \"drop-oldest\""))),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_influx_batch_size() -> usize {
    5000
}
fn default_influx_flush_interval_ms() -> u64 {
    1000
}
fn default_influx_linger_ms() -> u64 {
    50
}
fn default_influx_request_timeout_ms() -> u64 {
    10_000
}
fn default_influx_retry_min_ms() -> u64 {
    200
}
fn default_influx_retry_max_ms() -> u64 {
    30_000
}
fn default_influx_spool_max_readings() -> u64 {
    10_000_000
}
fn default_influx_shutdown_flush_ms() -> u64 {
    5000
}

impl InfluxSettings {
    /// Checks serde can't express, as (key, message) pairs relative to `influxdb.`.
    pub(crate) fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        match self.url.split_once("://") {
            Some(("http" | "https", rest)) if !rest.is_empty() => {}
            _ => out.push(("url", format!("expected an http:// or https:// URL, got {:?}", self.url))),
        }
        if self.org.trim().is_empty() {
            out.push(("org", "expected an organization name or id".to_owned()));
        }
        if self.bucket.trim().is_empty() {
            out.push(("bucket", "expected a bucket name".to_owned()));
        }
        if self.batch_size == 0 {
            out.push(("batch_size", "expected at least 1".to_owned()));
        }
        if self.request_timeout_ms == 0 {
            out.push(("request_timeout_ms", "expected at least 1 ms".to_owned()));
        }
        if self.retry_min_ms == 0 || self.retry_min_ms > self.retry_max_ms {
            out.push(("retry_min_ms", "expected 1 ms or more and no more than influxdb.retry_max_ms".to_owned()));
        }
        if self.spool_max_readings < self.batch_size as u64 {
            out.push(("spool_max_readings", "expected at least influxdb.batch_size".to_owned()));
        }
        out
    }
}

/// The operator API under `/v1/admin/` (see docs/api.md, "Operator API").
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSettings {
    /// The operators' bearer tokens, as argon2 hashes. No tokens: every admin request is refused.
    pub tokens: Vec<AdminToken>,
    /// JSON-lines audit log of every change made through the admin API or the CLI (who, what,
    /// when). Absent: `audit.log` in `store.path`.
    pub audit_log: Option<PathBuf>,
    /// Failed token attempts one client address (an IPv6 /64) may make per minute; further
    /// requests from it are answered 429 until the oldest failure is a minute old.
    pub max_failures_per_minute: u32,
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self { tokens: Vec::new(), audit_log: None, max_failures_per_minute: 10 }
    }
}

/// One operator token of `[[admin.tokens]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminToken {
    /// Who holds the token (a team or person); the audit log names them by it.
    pub name: String,
    /// The token's argon2 hash in PHC form (`$argon2id$v=19$m=...`), as printed by
    /// `messnetz admin hash-token`; never the token itself. Redacted in debug output.
    pub hash: Secret,
    /// The departments (device `owner`s) whose devices and dead letters the token may see and
    /// change; `["*"]` for all of them.
    pub owners: Vec<String>,
}

impl AdminSettings {
    /// The audit log's path: the configured one, or `audit.log` in the store's directory.
    pub fn audit_log_path(&self, store: &StoreSettings) -> PathBuf {
        self.audit_log.clone().unwrap_or_else(|| store.path.join("audit.log"))
    }

    /// Checks serde can't express, as (key, message) pairs relative to `admin.`.
    pub(crate) fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.max_failures_per_minute == 0 {
            out.push(("max_failures_per_minute".to_owned(), "expected at least 1".to_owned()));
        }
        for (i, t) in self.tokens.iter().enumerate() {
            let key = |k: &str| format!("tokens[{i}].{k}");
            if t.name.trim().is_empty() {
                out.push((key("name"), "expected a name for the audit log".to_owned()));
            } else if self.tokens[..i].iter().any(|o| o.name == t.name) {
                out.push((key("name"), format!("{:?} is used by an earlier token", t.name)));
            }
            // The hash itself is not repeated in the message: it is the token's verifier.
            match argon2::PasswordHash::new(t.hash.expose()) {
                Ok(h) if h.algorithm.as_str().starts_with("argon2") => {}
                _ => out.push((
                    key("hash"),
                    "expected an argon2 hash in PHC form ($argon2id$v=19$m=...), as printed by `messnetz admin hash-token`"
                        .to_owned(),
                )),
            }
            if t.owners.is_empty() || t.owners.iter().any(|o| o.trim().is_empty()) {
                out.push((key("owners"), "expected one or more department names, or [\"*\"] for all".to_owned()));
            } else if t.owners.len() > 1 && t.owners.iter().any(|o| o == "*") {
                out.push((key("owners"), "\"*\" (all departments) stands alone".to_owned()));
            }
        }
        out
    }
}
