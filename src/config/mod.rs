//! Layered configuration: built-in defaults, then an optional TOML file, then `MESSNETZ__SECTION__KEY` variables.
//!
//! Each section is read on its own so that one start reports the errors of every section,
//! each with its key path, instead of stopping at the first.

mod citizens;
mod open_data;
mod page;
mod quality;
pub mod redact;
mod secrets;
mod settings;
pub mod topic;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

pub use citizens::CitizenSettings;
pub use page::PageSettings;
pub use quality::{range_problems, ProfileQuality, QualitySettings, DEFAULT_SPIKE_PER_H, DEFAULT_STUCK_EXEMPT};
pub use settings::*;

/// The documented default configuration, printed by `messnetz config default`.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// One problem in the configuration, with the key path it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    /// Dotted key path, e.g. `mqtt.port` or `mqtt.subscriptions[0].format`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in one configuration.
#[derive(Debug, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration ({} problem(s)):", self.0.len())?;
        for e in &self.0 {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

/// Load settings from the optional file and the process environment.
pub fn load(file: Option<&Path>) -> Result<Settings, ConfigErrors> {
    load_with_env(file, std::env::vars())
}

/// Load settings from the optional file and the given environment (tests pass their own).
pub fn load_with_env(file: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Settings, ConfigErrors> {
    let env: Vec<(String, String)> = env.into_iter().collect();
    let credentials = env.iter().find(|(k, _)| k == "CREDENTIALS_DIRECTORY").map(|(_, v)| std::path::PathBuf::from(v));
    let env: config::Map<String, String> = env.into_iter().filter(|(k, _)| k.starts_with("MESSNETZ__")).collect();
    let mut builder = config::Config::builder();
    if let Some(file) = file {
        if !file.exists() {
            return Err(ConfigErrors(vec![ConfigError {
                path: "--config".into(),
                message: format!("file {} does not exist", file.display()),
            }]));
        }
        builder = builder.add_source(config::File::from(file).format(config::FileFormat::Toml));
    }
    builder = builder.add_source(config::Environment::with_prefix("MESSNETZ").separator("__").source(Some(env)));
    // The parser's message quotes the offending source line: secrets in it are redacted.
    let built = builder.build().map_err(|e| {
        ConfigErrors(vec![ConfigError {
            path: file.map(|f| f.display().to_string()).unwrap_or_default(),
            message: redact::redact_source_lines(&e.to_string()),
        }])
    })?;
    let mut settings = from_config(built)?;
    secrets::read_files(&mut settings, credentials.as_deref()).map_err(ConfigErrors)?;
    Ok(settings)
}

fn from_config(cfg: config::Config) -> Result<Settings, ConfigErrors> {
    let sections: BTreeMap<String, config::Value> = cfg
        .try_deserialize()
        .map_err(|e| ConfigErrors(vec![ConfigError { path: String::new(), message: redact::redact_values(&e.to_string()) }]))?;
    let mut errors = Vec::new();
    let mut settings = Settings::default();
    for (name, value) in sections {
        let result = match name.as_str() {
            "broker" => section(&name, value).map(|s| settings.broker = s),
            "mqtt" => section(&name, value).map(|s| settings.mqtt = s),
            "ingest" => section(&name, value).map(|s| settings.ingest = s),
            "store" => section(&name, value).map(|s| settings.store = s),
            "api" => section(&name, value).map(|s| settings.api = s),
            "devices" => section(&name, value).map(|s| settings.devices = s),
            "profiles" => section(&name, value).map(|s| settings.profiles = s),
            "reload" => section(&name, value).map(|s| settings.reload = s),
            "open_data" => section(&name, value).map(|s| settings.open_data = s),
            "influxdb" => section(&name, value).map(|s| settings.influxdb = Some(s)),
            "lorawan" => section(&name, value).map(|s| settings.lorawan = s),
            "quality" => section(&name, value).map(|s| settings.quality = s),
            "admin" => section(&name, value).map(|s| settings.admin = s),
            "citizens" => section(&name, value).map(|s| settings.citizens = s),
            "page" => section(&name, value).map(|s| settings.page = s),
            "retention" => section(&name, value).map(|s| settings.retention = s),
            _ => Err(ConfigError {
                path: name.clone(),
                message: "unknown section; expected one of broker, mqtt, ingest, store, api, devices, profiles, reload, influxdb, open_data, lorawan, quality, admin, citizens, page, retention".into(),
            }),
        };
        if let Err(e) = result {
            errors.push(e);
        }
    }
    errors.extend(validate(&settings));
    if errors.is_empty() {
        Ok(settings)
    } else {
        Err(ConfigErrors(errors))
    }
}

fn section<T: serde::de::DeserializeOwned>(name: &str, value: config::Value) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let path = if inner == "." || inner.is_empty() { name.to_owned() } else { format!("{name}.{inner}") };
        let mut message = e.into_inner().to_string();
        // The config crate appends its own (less exact) key path; ours is in `path`.
        if let Some(at) = message.find(" for key `") {
            message.truncate(at);
        }
        // A value of the wrong type is quoted in the message: not for a secret.
        if redact::is_secret_key(&path) {
            message = redact::redact_values(&message);
        }
        ConfigError { path, message }
    })
}

/// Checks that serde can't express: ranges and cross-field rules.
fn validate(s: &Settings) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let mut err = |path: &str, message: &str| errors.push(ConfigError { path: path.into(), message: message.into() });
    for (path, message) in s.citizens.problems().into_iter().chain(s.page.problems()) {
        err(&path, &message);
    }
    if s.mqtt.host.trim().is_empty() {
        err("mqtt.host", "expected a host name or address, got an empty string");
    }
    if s.mqtt.client_id.is_empty() || s.mqtt.client_id.len() > 128 {
        err("mqtt.client_id", "expected 1 to 128 characters");
    }
    if s.mqtt.keep_alive_s < 5 {
        err("mqtt.keep_alive_s", "expected at least 5 seconds");
    }
    if s.mqtt.reconnect_min_ms == 0 || s.mqtt.reconnect_min_ms > s.mqtt.reconnect_max_ms {
        err("mqtt.reconnect_min_ms", "expected 1 ms or more and no more than mqtt.reconnect_max_ms");
    }
    if s.mqtt.subscriptions.is_empty() {
        err("mqtt.subscriptions", "expected at least one subscription");
    }
    if s.mqtt.password.is_some() && s.mqtt.username.is_none() {
        err("mqtt.password", "a password needs mqtt.username too");
    }
    if s.mqtt.password.is_some() && s.mqtt.password_file.is_some() {
        err("mqtt.password_file", "give the password or a file holding it, not both");
    }
    if s.influxdb.as_ref().is_some_and(|i| i.token.is_some() && i.token_file.is_some()) {
        err("influxdb.token_file", "give the token or a file holding it, not both");
    }
    for (i, sub) in s.mqtt.subscriptions.iter().enumerate() {
        if let Err(why) = topic::validate_filter(&sub.topic) {
            err(&format!("mqtt.subscriptions[{i}].topic"), &why);
        }
        if sub.qos > 1 {
            err(&format!("mqtt.subscriptions[{i}].qos"), "expected 0 or 1");
        }
    }
    if let Some(tls) = &s.mqtt.tls {
        if tls.client_cert_file.is_some() != tls.client_key_file.is_some() {
            err("mqtt.tls", "client_cert_file and client_key_file go together");
        }
    }
    if s.ingest.queue_capacity == 0 {
        err("ingest.queue_capacity", "expected at least 1");
    }
    if s.ingest.max_batch == 0 {
        err("ingest.max_batch", "expected at least 1");
    }
    if s.ingest.gather_ms > 1000 {
        err("ingest.gather_ms", "expected 0 to 1000 milliseconds");
    }
    if s.ingest.gather_quiet_ms > 1000 {
        err("ingest.gather_quiet_ms", "expected 0 to 1000 milliseconds");
    }
    if let Some(why) = crate::model::licence_problem(&s.open_data.district_licence) {
        err("open_data.district_licence", &why);
    }
    for (path, why) in open_data::problems(&s.open_data) {
        err(&path, &why);
    }
    if s.open_data.base_url.ends_with('/') || !s.open_data.base_url.starts_with("http") {
        err("open_data.base_url", "expected an http(s) URL without a trailing slash");
    }
    if !(10..=600_000).contains(&s.store.window_flush_ms) {
        err("store.window_flush_ms", "expected 10 to 600000 milliseconds");
    }
    if s.store.backend == StoreBackend::Postgres
        && !(s.store.url.starts_with("postgres://") || s.store.url.starts_with("postgresql://"))
    {
        err("store.url", "expected a postgres:// URL (backend = \"postgres\"); set it or MESSNETZ__STORE__URL");
    }
    if let Some(role) = &s.store.dashboard_role {
        if !is_plain_role_name(role) {
            err(
                "store.dashboard_role",
                "expected a role name of lower-case letters, digits and _ (at most 63, not starting with a digit)",
            );
        }
    }
    if !(1..=1000).contains(&s.store.pool_size) {
        err("store.pool_size", "expected 1 to 1000 connections");
    }
    if !(1..=65_536).contains(&s.store.cache_mb) {
        err("store.cache_mb", "expected 1 to 65536 megabytes");
    }
    if s.api.max_points == 0 {
        err("api.max_points", "expected at least 1");
    }
    if s.api.header_read_timeout_ms == 0 {
        err("api.header_read_timeout_ms", "expected at least 1 ms");
    }
    if s.api.idle_timeout_ms == 0 {
        err("api.idle_timeout_ms", "expected at least 1 ms");
    }
    if s.api.max_connections == 0 {
        err("api.max_connections", "expected at least 1");
    }
    if s.broker.enabled && s.broker.max_connections == 0 {
        err("broker.max_connections", "expected at least 1");
    }
    if s.broker.enabled && !(1024..=268_435_455).contains(&s.broker.max_packet_bytes) {
        err("broker.max_packet_bytes", "expected 1024 to 268435455 bytes");
    }
    if s.broker.enabled && s.broker.connect_timeout_ms == 0 {
        err("broker.connect_timeout_ms", "expected at least 1 millisecond");
    }
    if let Some(influx) = &s.influxdb {
        errors
            .extend(influx.problems().into_iter().map(|(key, message)| ConfigError { path: format!("influxdb.{key}"), message }));
    }
    errors.extend(s.quality.problems().into_iter().map(|(key, message)| ConfigError { path: format!("quality.{key}"), message }));
    errors.extend(s.admin.problems().into_iter().map(|(key, message)| ConfigError { path: format!("admin.{key}"), message }));
    errors.extend(
        s.retention.problems().into_iter().map(|(key, message)| ConfigError { path: format!("retention.{key}"), message }),
    );
    errors
}

/// A PostgreSQL role name that needs no quoting: lower-case letters, digits and `_`, at most
/// 63 bytes, not starting with a digit (the store still quotes it).
fn is_plain_role_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 63
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(toml: &str, env: &[(&str, &str)]) -> Result<Settings, ConfigErrors> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("messnetz.toml");
        std::fs::write(&file, toml).unwrap();
        load_with_env(Some(&file), env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn documented_default_file_equals_built_in_defaults() {
        assert_eq!(load_str(DEFAULT_TOML, &[]).unwrap(), Settings::default());
    }

    #[test]
    fn no_file_and_no_env_gives_defaults() {
        assert_eq!(load_with_env(None, Vec::new()).unwrap(), Settings::default());
    }

    #[test]
    fn env_overrides_file() {
        let s = load_str("[mqtt]\nport = 1884\n", &[("MESSNETZ__MQTT__PORT", "2883"), ("MESSNETZ__BROKER__ENABLED", "false")])
            .unwrap();
        assert_eq!(s.mqtt.port, 2883);
        assert!(!s.broker.enabled);
    }

    #[test]
    fn every_error_is_reported_with_its_path() {
        let errors = load_str(
            "[mqtt]\nport = \"x\"\nbogus = 1\n[api]\nlisten = \"nowhere\"\n[extra]\na = 1\n[[mqtt.subscriptions]]\ntopic = \"a/#/b\"\nformat = \"ttn-v3\"\n",
            &[],
        )
        .unwrap_err()
        .0;
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert!(paths.iter().any(|p| p.starts_with("mqtt")), "{errors:?}");
        assert!(paths.contains(&"api.listen"), "{errors:?}");
        assert!(paths.contains(&"extra"), "{errors:?}");
    }

    #[test]
    fn store_cache_size_is_bounded_and_read_from_file_and_env() {
        assert_eq!(load_str("[store]\ncache_mb = 16\n", &[]).unwrap().store.cache_mb, 16);
        for bad in ["0", "65537"] {
            let errors = load_str(&format!("[store]\ncache_mb = {bad}\n"), &[]).unwrap_err().0;
            let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
            assert_eq!(paths, vec!["store.cache_mb"], "{bad}: {errors:?}");
        }
        let s = load_with_env(None, vec![("MESSNETZ__STORE__CACHE_MB".into(), "128".into())]).unwrap();
        assert_eq!(s.store.cache_mb, 128);
    }

    #[test]
    fn ingest_gather_is_bounded() {
        assert_eq!(load_str("[ingest]\ngather_ms = 0\n", &[]).unwrap().ingest.gather_ms, 0);
        assert_eq!(load_str("[ingest]\ngather_ms = 1000\n", &[]).unwrap().ingest.gather_ms, 1000);
        // Past a second it would hold a busy stage's acknowledgements for nothing (and a
        // huge one would overflow the deadline).
        assert_eq!(load_str("[ingest]\ngather_quiet_ms = 0\n", &[]).unwrap().ingest.gather_quiet_ms, 0);
        assert_eq!(load_str("[ingest]\ngather_quiet_ms = 1000\n", &[]).unwrap().ingest.gather_quiet_ms, 1000);
        for key in ["gather_ms", "gather_quiet_ms"] {
            for bad in ["1001", "9223372036854775807"] {
                let errors = load_str(&format!("[ingest]\n{key} = {bad}\n"), &[]).unwrap_err().0;
                let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
                let path = format!("ingest.{key}");
                assert!(paths.iter().all(|p| p.starts_with(&path)) && !paths.is_empty(), "{key} = {bad}: {errors:?}");
            }
        }
    }

    #[test]
    fn unknown_key_names_its_path() {
        let errors = load_str("[store]\npaht = \"x\"\n", &[]).unwrap_err().0;
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].to_string().contains("paht"), "{}", errors[0]);
        assert!(errors[0].path.starts_with("store"), "{}", errors[0]);
    }

    #[test]
    fn subscription_errors_name_the_index() {
        let errors = load_str("[[mqtt.subscriptions]]\ntopic = \"a/#/b\"\nformat = \"ttn-v3\"\nqos = 2\n", &[]).unwrap_err().0;
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, vec!["mqtt.subscriptions[0].topic", "mqtt.subscriptions[0].qos"]);
    }

    #[test]
    fn bad_format_names_the_expected_values() {
        let errors = load_str("[[mqtt.subscriptions]]\ntopic = \"a\"\nformat = \"ttn\"\n", &[]).unwrap_err().0;
        assert!(errors[0].message.contains("ttn-v3"), "{}", errors[0]);
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let s = load_str("[mqtt]\nusername = \"u\"\npassword = \"hunter2\"\n", &[]).unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(s.mqtt.password.unwrap().expose(), "hunter2");
    }

    #[test]
    fn lorawan_format_and_keys_file_load_from_file_and_env() {
        let s = load_str(
            "[[mqtt.subscriptions]]\ntopic = \"eu868/gateway/+/event/up\"\nformat = \"lorawan\"\n",
            &[("MESSNETZ__LORAWAN__KEYS_FILE", "/etc/k.toml")],
        )
        .unwrap();
        assert_eq!(s.mqtt.subscriptions[0].format, MessageFormat::Lorawan);
        assert_eq!(s.lorawan.keys_file.as_deref(), Some(std::path::Path::new("/etc/k.toml")));
        let errors = load_str("[lorawan]\nkeys = \"x\"\n", &[]).unwrap_err().0;
        assert!(errors[0].path.starts_with("lorawan"), "{errors:?}");
    }

    #[test]
    fn influxdb_section_is_optional_validated_and_its_token_redacted() {
        assert!(load_with_env(None, Vec::new()).unwrap().influxdb.is_none());
        let s = load_str(
            "[influxdb]\nurl = \"http://127.0.0.1:8086\"\norg = \"o\"\nbucket = \"b\"\ntoken = \"s3cret\"\nspool_full = \"drop-oldest\"\n",
            &[("MESSNETZ__INFLUXDB__BATCH_SIZE", "100")],
        )
        .unwrap();
        assert!(!format!("{s:?}").contains("s3cret"));
        let influx = s.influxdb.unwrap();
        assert_eq!((influx.spool_full, influx.batch_size, influx.enabled), (SpoolFullPolicy::DropOldest, 100, true));
        let errors = load_str("[influxdb]\nurl = \"influx:8086\"\norg = \" \"\nbucket = \"b\"\n", &[]).unwrap_err().0;
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, vec!["influxdb.url", "influxdb.org"]);
        let errors =
            load_str("[influxdb]\nurl = \"http://x\"\norg = \"o\"\nbucket = \"b\"\nspool_full = \"block\"\n", &[]).unwrap_err().0;
        assert!(errors[0].path.starts_with("influxdb") && errors[0].message.contains("drop-oldest"), "{errors:?}");
    }

    #[test]
    fn quality_thresholds_merge_over_defaults_and_are_validated() {
        use crate::model::Quantity;
        let t = Quantity::by_name("air_temperature").unwrap();
        let rh = Quantity::by_name("relative_humidity").unwrap();
        let s = load_str(
            "[quality.spike]\nair_temperature = 4\n[quality.ranges]\nair_temperature = [-30, 45]\n",
            &[("MESSNETZ__QUALITY__MAX_AGE_H", "48")],
        )
        .unwrap();
        assert_eq!((s.quality.spike[&t], s.quality.spike[&rh]), (4.0, 50.0));
        assert_eq!((s.quality.ranges[&t], s.quality.max_age_h), ([-30.0, 45.0], 48));
        let errors =
            load_str("[quality]\nexpected_interval_s = 0\n[quality.ranges]\nair_temperature = [50, -30]\n", &[]).unwrap_err().0;
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, vec!["quality.ranges.air_temperature", "quality.expected_interval_s"], "{errors:?}");
        let errors = load_str("[quality.spike]\nair_temp = 4\n", &[]).unwrap_err().0;
        assert!(errors[0].path.starts_with("quality") && errors[0].message.contains("air_temperature"), "{errors:?}");
    }

    #[test]
    fn admin_tokens_are_checked_and_their_hashes_redacted() {
        let hash = crate::api::admin::auth::hash_token(&"t".repeat(32)).unwrap();
        let text = format!("[admin]\nmax_failures_per_minute = 3\n[[admin.tokens]]\nname = \"ops\"\nhash = \"{hash}\"\nowners = [\"Umweltamt\"]\n");
        let s = load_str(&text, &[]).unwrap();
        assert_eq!((s.admin.tokens[0].owners.clone(), s.admin.max_failures_per_minute), (vec!["Umweltamt".to_owned()], 3));
        assert!(!format!("{s:?}").contains(&hash));
        assert_eq!(s.admin.audit_log_path(&s.store), std::path::PathBuf::from("data/audit.log"));
        let bad = "[[admin.tokens]]\nname = \"ops\"\nhash = \"hunter2\"\nowners = [\"*\", \"Umweltamt\"]\n[[admin.tokens]]\nname = \"ops\"\nhash = \"x\"\nowners = []\n";
        let errors = load_str(bad, &[]).unwrap_err().0;
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "admin.tokens[0].hash",
                "admin.tokens[0].owners",
                "admin.tokens[1].name",
                "admin.tokens[1].hash",
                "admin.tokens[1].owners"
            ],
            "{errors:?}"
        );
        assert!(!errors.iter().any(|e| e.message.contains("hunter2")));
    }

    #[test]
    fn a_dashboard_role_must_be_a_plain_name() {
        let ok = load_str("[store]\ndashboard_role = \"grafana_reader\"\n", &[]).unwrap();
        assert_eq!(ok.store.dashboard_role.as_deref(), Some("grafana_reader"));
        for bad in ["Grafana", "1reader", "x\\\"; DROP TABLE readings; --", ""] {
            let errors = load_str(&format!("[store]\ndashboard_role = \"{bad}\"\n"), &[]).unwrap_err().0;
            assert_eq!(errors[0].path, "store.dashboard_role", "{bad}: {errors:?}");
        }
    }
}
