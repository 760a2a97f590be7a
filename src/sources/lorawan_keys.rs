//! ABP session keys of the devices whose raw LoRaWAN frames the gateway opens itself.
//!
//! Keys come from a TOML file that only its owner may read, or from `MESSNETZ_LORAWAN_KEY_<DEVADDR>`
//! environment variables. They are held in [`SessionKey`], whose `Debug` is redacted, and no
//! error in this module ever quotes a key or the line it stands on.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Prefix of the environment variables that carry session keys: `MESSNETZ_LORAWAN_KEY_260B1234`.
pub const ENV_PREFIX: &str = "MESSNETZ_LORAWAN_KEY_";

/// A 128-bit AES session key. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKey([u8; 16]);

impl SessionKey {
    /// Parse 32 hex digits. The error names the problem, never the text.
    pub fn parse_hex(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.len() != 32 || !text.is_ascii() {
            return Err(format!("expected 32 hex digits, got {} characters", text.chars().count()));
        }
        let mut key = [0u8; 16];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte =
                u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| "expected 32 hex digits (0-9, a-f)".to_owned())?;
        }
        Ok(Self(key))
    }

    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    pub(crate) fn aes(&self) -> lorawan::keys::AES128 {
        lorawan::keys::AES128(self.0)
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKey(***)")
    }
}

/// One device's ABP session (LoRaWAN 1.0.x).
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceSession {
    /// The device in the registry: its id or its DevEUI.
    pub device: String,
    /// Network session key: signs (MIC) every frame.
    pub nwk_s_key: SessionKey,
    /// Application session key: encrypts FRMPayload on ports 1-255.
    pub app_s_key: SessionKey,
}

/// All sessions, by DevAddr.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionKeys {
    by_dev_addr: HashMap<u32, DeviceSession>,
}

/// Why the session keys could not be loaded. Never contains key material.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("lorawan.keys_file {path}: cannot read: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("lorawan.keys_file {path}: readable by group or others (mode {mode:o}); run chmod 600 on it")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("lorawan.keys_file {path}: line {line}: {message}")]
    Syntax { path: PathBuf, line: usize, message: String },
    #[error("{source_name}: session[{index}]: {message}")]
    Invalid { source_name: String, index: usize, message: String },
    #[error("{var}: {message}")]
    Env { var: String, message: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(default)]
    session: Vec<SessionEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionEntry {
    dev_addr: String,
    device: String,
    nwk_s_key: String,
    app_s_key: String,
}

/// Parse a DevAddr written as 8 hex digits, most significant byte first (`260B1234`).
/// The error never quotes the text: a session key pasted into the wrong field must not be echoed.
pub fn parse_dev_addr(text: &str) -> Result<u32, String> {
    let text = text.trim();
    if text.len() != 8 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "dev_addr: expected 8 hex digits, got {} character(s) (the value is not shown)",
            text.chars().count()
        ));
    }
    u32::from_str_radix(text, 16).map_err(|_| "dev_addr: expected 8 hex digits".to_owned())
}

impl SessionKeys {
    /// Load the keys file (if any) and the `MESSNETZ_LORAWAN_KEY_*` variables of `env`.
    /// A DevAddr given twice is an error: which key would be meant is not clear.
    pub fn load(file: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Self, Vec<KeysError>> {
        let mut keys = SessionKeys::default();
        let mut errors = Vec::new();
        if let Some(path) = file {
            match read_private(path) {
                Ok(text) => {
                    if let Err(mut e) = keys.add_file(path, &text) {
                        errors.append(&mut e);
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        let mut vars: Vec<(String, String)> = env.into_iter().filter(|(k, _)| k.starts_with(ENV_PREFIX)).collect();
        vars.sort();
        for (var, value) in vars {
            if let Err(message) = keys.add_env(&var, &value) {
                errors.push(KeysError::Env { var, message });
            }
        }
        if errors.is_empty() {
            Ok(keys)
        } else {
            Err(errors)
        }
    }

    /// Parse the text of a keys file (`path` only names it in errors).
    pub fn add_file(&mut self, path: &Path, text: &str) -> Result<(), Vec<KeysError>> {
        let file: KeysFile = toml::from_str(text).map_err(|e| {
            // toml's Display quotes the offending line, which may hold a key: report only
            // the line number and the message.
            let line = e.span().map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1).unwrap_or(0);
            vec![KeysError::Syntax { path: path.to_owned(), line, message: redact_values(e.message()) }]
        })?;
        let mut errors = Vec::new();
        for (index, entry) in file.session.into_iter().enumerate() {
            let invalid = |message: String| KeysError::Invalid { source_name: path.display().to_string(), index, message };
            match self.add(&entry.dev_addr, &entry.device, &entry.nwk_s_key, &entry.app_s_key) {
                Ok(()) => {}
                Err(message) => errors.push(invalid(message)),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// `MESSNETZ_LORAWAN_KEY_<DEVADDR>=<device>:<NwkSKey>:<AppSKey>`.
    fn add_env(&mut self, var: &str, value: &str) -> Result<(), String> {
        let dev_addr = &var[ENV_PREFIX.len()..];
        let mut parts = value.rsplitn(3, ':');
        let (Some(app), Some(nwk), Some(device)) = (parts.next(), parts.next(), parts.next()) else {
            return Err("expected <device>:<NwkSKey hex>:<AppSKey hex>".into());
        };
        self.add(dev_addr, device, nwk, app)
    }

    fn add(&mut self, dev_addr: &str, device: &str, nwk: &str, app: &str) -> Result<(), String> {
        let addr = parse_dev_addr(dev_addr)?;
        let device = device.trim();
        if device.is_empty() {
            return Err("device: expected a device id or DevEUI".into());
        }
        let nwk_s_key = SessionKey::parse_hex(nwk).map_err(|e| format!("nwk_s_key: {e}"))?;
        let app_s_key = SessionKey::parse_hex(app).map_err(|e| format!("app_s_key: {e}"))?;
        if self.by_dev_addr.contains_key(&addr) {
            return Err(format!("DevAddr {addr:08X} is given more than once"));
        }
        self.by_dev_addr.insert(addr, DeviceSession { device: device.to_owned(), nwk_s_key, app_s_key });
        Ok(())
    }

    /// Add a session directly (tests, benchmarks).
    pub fn insert(&mut self, dev_addr: u32, session: DeviceSession) {
        self.by_dev_addr.insert(dev_addr, session);
    }

    pub fn get(&self, dev_addr: u32) -> Option<&DeviceSession> {
        self.by_dev_addr.get(&dev_addr)
    }

    pub fn len(&self) -> usize {
        self.by_dev_addr.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_dev_addr.is_empty()
    }
}

/// Serde quotes offending values in backticks (`invalid type: integer `123``); a long one
/// may be a key written the wrong way, so it is left out. Field names stay readable.
fn redact_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for (i, part) in message.split('`').enumerate() {
        if i > 0 {
            out.push('`');
        }
        out.push_str(if i % 2 == 1 && part.len() > 12 { "…" } else { part });
    }
    out
}

/// Read a file that must not be readable by group or others.
fn read_private(path: &Path) -> Result<String, KeysError> {
    let read_err = |source| KeysError::Read { path: path.to_owned(), source };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeysError::Permissions { path: path.to_owned(), mode });
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    std::fs::read_to_string(path).map_err(read_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "2B7E151628AED2A6ABF7158809CF4F3C";
    const KEY_B: &str = "000102030405060708090A0B0C0D0E0F";

    #[test]
    fn file_and_env_keys_load_and_never_print() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        std::fs::write(&path, format!("[[session]]\ndev_addr = \"260B1234\"\ndevice = \"demo-lht65\"\nnwk_s_key = \"{KEY_A}\"\napp_s_key = \"{KEY_B}\"\n")).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let env =
            vec![(format!("{ENV_PREFIX}01020304"), format!("A840410000000002:{KEY_B}:{KEY_A}")), ("OTHER".into(), "x".into())];
        let keys = SessionKeys::load(Some(&path), env).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys.get(0x260B_1234).unwrap().device, "demo-lht65");
        assert_eq!(keys.get(0x0102_0304).unwrap().device, "A840410000000002");
        let shown = format!("{keys:?}");
        assert!(!shown.contains("2B7E") && !shown.contains("0A0B") && !shown.to_lowercase().contains("2b7e"), "{shown}");
    }

    #[cfg(unix)]
    #[test]
    fn a_group_or_world_readable_file_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        std::fs::write(&path, "").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = SessionKeys::load(Some(&path), Vec::new()).unwrap_err();
        assert!(err[0].to_string().contains("chmod 600"), "{}", err[0]);
    }

    #[test]
    fn errors_name_the_problem_but_never_the_key() {
        let secret = "2B7E151628AED2A6ABF7158809CF4F3";
        let cases = [
            format!("[[session]]\ndev_addr = \"260B1234\"\ndevice = \"d\"\nnwk_s_key = \"{secret}\"\napp_s_key = \"{KEY_B}\"\n"),
            format!("[[session]]\ndev_addr = \"260B1234\"\ndevice = \"d\"\nnwk_s_key = {secret}\n"),
            format!("[[session]]\ndev_addr = \"260B1234\"\ndevice = \"d\"\nnwk_s_key = \"{secret}Z\"\napp_s_key = \"{KEY_B}\"\n"),
            "[[session]]\ndev_addr = \"260B1234\"\ndevice = \"d\"\nnwk_s_key = 2345678901234567\n".to_owned(),
            format!(
                "[[session]]\ndev_addr = \"260B1234\"\ndevice = \"d\"\nnwk_s_key = [\"{secret}\"]\napp_s_key = \"{KEY_B}\"\n"
            ),
        ];
        for text in cases {
            let err = SessionKeys::default().add_file(Path::new("k.toml"), &text).unwrap_err();
            let msg = err.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n");
            assert!(!msg.contains(secret) && !msg.contains(KEY_B) && !msg.contains("2345678901234567"), "{msg}");
            assert!(msg.contains("k.toml"), "{msg}");
        }
        // A key pasted into dev_addr.
        let pasted =
            format!("[[session]]\ndev_addr = \"{KEY_A}\"\ndevice = \"d\"\nnwk_s_key = \"{KEY_A}\"\napp_s_key = \"{KEY_B}\"\n");
        let err = SessionKeys::default().add_file(Path::new("k.toml"), &pasted).unwrap_err();
        let msg = err[0].to_string();
        assert!(!msg.contains(KEY_A) && msg.contains("session[0]") && msg.contains("dev_addr"), "{msg}");
        let env = vec![(format!("{ENV_PREFIX}260B1234"), format!("d:{secret}"))];
        let err = SessionKeys::load(None, env).unwrap_err();
        assert!(!err[0].to_string().contains(secret), "{}", err[0]);
        let twice = format!(
            "[[session]]\ndev_addr = \"260B1234\"\ndevice = \"a\"\nnwk_s_key = \"{KEY_A}\"\napp_s_key = \"{KEY_B}\"\n[[session]]\ndev_addr = \"260b1234\"\ndevice = \"b\"\nnwk_s_key = \"{KEY_A}\"\napp_s_key = \"{KEY_B}\"\n"
        );
        let err = SessionKeys::default().add_file(Path::new("k.toml"), &twice).unwrap_err();
        assert!(err[0].to_string().contains("session[1]") && err[0].to_string().contains("more than once"), "{}", err[0]);
    }
}
