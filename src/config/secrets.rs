//! Secrets read from files: `mqtt.password_file` and `influxdb.token_file` (container
//! secrets), and systemd credentials (`LoadCredential=`) found in `$CREDENTIALS_DIRECTORY`
//! under the names `mqtt_password` and `influxdb_token`, so a secret never has to sit in the
//! configuration file or the environment.

use std::path::Path;

use super::{ConfigError, Secret, Settings};

/// The first line of a secret file, without its line break.
fn read(key: &str, path: &Path) -> Result<Secret, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError { path: key.to_owned(), message: format!("cannot read {}: {e}", path.display()) })?;
    let line = text.lines().next().unwrap_or_default().trim_end_matches('\r');
    if line.is_empty() {
        return Err(ConfigError { path: key.to_owned(), message: format!("{} is empty", path.display()) });
    }
    Ok(Secret::new(line.to_owned()))
}

/// Fill in the secrets given as files. A configured value (file or environment) wins over a
/// systemd credential; a credential that is absent is no error.
pub(super) fn read_files(settings: &mut Settings, credentials: Option<&Path>) -> Result<(), Vec<ConfigError>> {
    let mut errors = Vec::new();
    let credential = |name: &str| credentials.map(|dir| dir.join(name)).filter(|p| p.is_file());
    let mqtt = &mut settings.mqtt;
    if mqtt.password.is_none() {
        let file = mqtt.password_file.clone().map(|f| ("mqtt.password_file", f));
        if let Some((key, path)) = file.or_else(|| credential("mqtt_password").map(|p| ("mqtt_password credential", p))) {
            match read(key, &path) {
                Ok(secret) => mqtt.password = Some(secret),
                Err(e) => errors.push(e),
            }
        }
    }
    if let Some(influx) = settings.influxdb.as_mut().filter(|i| i.token.is_none()) {
        let file = influx.token_file.clone().map(|f| ("influxdb.token_file", f));
        if let Some((key, path)) = file.or_else(|| credential("influxdb_token").map(|p| ("influxdb_token credential", p))) {
            match read(key, &path) {
                Ok(secret) => influx.token = Some(secret),
                Err(e) => errors.push(e),
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::super::load_with_env;

    #[test]
    fn secrets_come_from_files_and_systemd_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("creds");
        std::fs::create_dir(&creds).unwrap();
        std::fs::write(creds.join("mqtt_password"), "from-credential\n").unwrap();
        std::fs::write(creds.join("influxdb_token"), "token-from-credential\n").unwrap();
        let config = dir.path().join("messnetz.toml");
        std::fs::write(
            &config,
            "[mqtt]\nusername = \"u\"\n[influxdb]\nurl = \"http://127.0.0.1:8086\"\norg = \"o\"\nbucket = \"b\"\n",
        )
        .unwrap();
        let env = vec![("CREDENTIALS_DIRECTORY".to_owned(), creds.display().to_string())];
        let s = load_with_env(Some(&config), env.clone()).unwrap();
        assert_eq!(s.mqtt.password.unwrap().expose(), "from-credential");
        assert_eq!(s.influxdb.unwrap().token.unwrap().expose(), "token-from-credential");

        // A file named in the configuration wins over the credential.
        let own = dir.path().join("pw");
        std::fs::write(&own, "from-file\nsecond line ignored\n").unwrap();
        let mut with_file = env.clone();
        with_file.push(("MESSNETZ__MQTT__PASSWORD_FILE".into(), own.display().to_string()));
        assert_eq!(load_with_env(Some(&config), with_file).unwrap().mqtt.password.unwrap().expose(), "from-file");

        // A missing file is an error naming its key; a missing credential is not.
        let missing = vec![("MESSNETZ__MQTT__PASSWORD_FILE".to_owned(), "/nonexistent/pw".to_owned())];
        let errors = load_with_env(Some(&config), missing).unwrap_err().0;
        assert_eq!(errors[0].path, "mqtt.password_file", "{errors:?}");
        assert!(load_with_env(Some(&config), Vec::new()).unwrap().mqtt.password.is_none());
    }
}
