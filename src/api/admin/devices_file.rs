//! Changing the devices file in place: one `[[device]]` entry is added or its keys updated,
//! everything else (comments, order, layout of other entries) stays as the operator wrote it.
//!
//! The file is the source of truth, so a change is made to its text, the whole new text is
//! checked exactly like a load (`DeviceRegistry::parse`), and only then written: to a
//! temporary file that is synced and renamed over the old one, so a crash leaves either the
//! old or the new file, never half of one.

use std::io::Write;
use std::path::Path;

use serde::Serialize;
use toml_edit::{DocumentMut, Item, Table, Value};

use crate::devices::Device;

/// Why the devices file could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum DevicesFileError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path} is not valid TOML: {message}")]
    Syntax { path: String, message: String },
    #[error("{path}: `device` is not a list of [[device]] tables; change the file by hand")]
    Shape { path: String },
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("cannot express the device in TOML: {0}")]
    Serialize(String),
}

/// The devices file as a document that keeps its formatting.
pub struct DevicesFile {
    doc: DocumentMut,
    path: String,
}

#[derive(Serialize)]
struct One<'a> {
    device: [&'a Device; 1],
}

impl DevicesFile {
    pub fn read(path: &Path) -> Result<Self, DevicesFileError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| DevicesFileError::Read { path: shown.clone(), source })?;
        Self::parse(&shown, &text)
    }

    pub fn parse(path: &str, text: &str) -> Result<Self, DevicesFileError> {
        let doc: DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| DevicesFileError::Syntax {
            path: path.to_owned(),
            message: e.message().to_owned(),
        })?;
        let file = Self { doc, path: path.to_owned() };
        match file.doc.get("device") {
            None | Some(Item::ArrayOfTables(_)) => Ok(file),
            Some(_) => Err(DevicesFileError::Shape { path: path.to_owned() }),
        }
    }

    /// Add the device, or update the entry with its id key by key: unchanged keys keep their
    /// formatting and comments, a changed value keeps its trailing comment.
    pub fn upsert(&mut self, device: &Device) -> Result<(), DevicesFileError> {
        let new = device_table(device)?;
        let next_position = max_position(self.doc.as_table()) + 1;
        let path = self.path.clone();
        let entries = self
            .doc
            .entry("device")
            .or_insert(Item::ArrayOfTables(Default::default()))
            .as_array_of_tables_mut()
            .ok_or(DevicesFileError::Shape { path })?;
        let id = device.id.as_str();
        let at = entries.iter().position(|t| t.get("id").and_then(|v| v.as_str()) == Some(id));
        match at.and_then(|i| entries.get_mut(i)) {
            Some(existing) => merge(existing, &new),
            None => {
                let mut table = new;
                // After everything else, separated by a blank line, as the file's entries are.
                table.set_position(next_position);
                table.decor_mut().set_prefix("\n");
                entries.push(table);
            }
        }
        Ok(())
    }

    pub fn text(&self) -> String {
        self.doc.to_string()
    }
}

/// The device as one `[[device]]` table, nested tables written inline (`ranges = { ... }`).
fn device_table(device: &Device) -> Result<Table, DevicesFileError> {
    let text = toml::to_string(&One { device: [device] }).map_err(|e| DevicesFileError::Serialize(e.to_string()))?;
    let doc: DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| DevicesFileError::Serialize(e.to_string()))?;
    let table = doc
        .get("device")
        .and_then(Item::as_array_of_tables)
        .and_then(|a| a.get(0))
        .cloned()
        .ok_or_else(|| DevicesFileError::Serialize("no [[device]] table".into()))?;
    let mut out = Table::new();
    for (k, item) in table.iter() {
        let item = match item.clone() {
            i @ (Item::Table(_) | Item::ArrayOfTables(_)) => match i.into_value() {
                Ok(v) => Item::Value(v),
                Err(i) => i,
            },
            i => i,
        };
        out.insert(k, item);
    }
    Ok(out)
}

fn merge(existing: &mut Table, new: &Table) {
    let gone: Vec<String> = existing.iter().map(|(k, _)| k.to_owned()).filter(|k| !new.contains_key(k)).collect();
    for k in gone {
        existing.remove(&k);
    }
    for (k, item) in new.iter() {
        match (existing.get_mut(k), item) {
            (Some(Item::Value(old)), Item::Value(v)) => {
                if bare(old) != bare(v) {
                    let decor = old.decor().clone();
                    let mut v = v.clone();
                    *v.decor_mut() = decor;
                    *old = v;
                }
            }
            (Some(slot), _) => *slot = item.clone(),
            (None, _) => {
                existing.insert(k, item.clone());
            }
        }
    }
}

/// A value as text without its surrounding whitespace and comments.
fn bare(v: &Value) -> String {
    let mut v = v.clone();
    v.decor_mut().clear();
    v.to_string()
}

fn max_position(table: &Table) -> usize {
    let mut max = table.position().unwrap_or(0);
    for (_, item) in table.iter() {
        match item {
            Item::Table(t) => max = max.max(max_position(t)),
            Item::ArrayOfTables(a) => {
                for t in a.iter() {
                    max = max.max(max_position(t));
                }
            }
            _ => {}
        }
    }
    max
}

/// Replace `path` with `text`: a synced temporary file in the same directory, renamed over it
/// (keeping the old file's permissions), then the directory synced.
pub fn write_atomically(path: &Path, text: &str) -> Result<(), DevicesFileError> {
    let err = |source| DevicesFileError::Write { path: path.display().to_string(), source };
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // A hidden name, so the profile loader and editors' globs pass it over.
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(text.as_bytes())?;
        if let Ok(meta) = std::fs::metadata(path) {
            file.set_permissions(meta.permissions())?;
        }
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"# Our sensors. Keep this comment.

[[device]]
id = "a"
name = "A"
profile = "p"
lat = 48.1
lon = 11.5
district = "Mitte"   # moved in 2025
owner = "Umweltamt"
licence = "dl-by-de/2.0"
visibility = "open"

[[device]]
id = "b"
name = "B"
profile = "p"
lat = 48.2
lon = 11.6
district = "Nord"
owner = "Gartenamt"
licence = "dl-by-de/2.0"
visibility = "internal"
"#;

    fn device(file: &DevicesFile, id: &str) -> Device {
        let parsed: toml::Value = toml::from_str(&file.text()).unwrap();
        let all = parsed["device"].as_array().unwrap();
        all.iter().find(|d| d["id"].as_str() == Some(id)).unwrap().clone().try_into().unwrap()
    }

    #[test]
    fn an_update_changes_only_its_keys_and_keeps_comments() {
        let mut file = DevicesFile::parse("d.toml", FILE).unwrap();
        let mut a = device(&file, "a");
        a.visibility = crate::devices::Visibility::Internal;
        a.district = "Süd".into();
        a.height_m = Some(2.5);
        file.upsert(&a).unwrap();
        let text = file.text();
        assert!(text.starts_with("# Our sensors. Keep this comment.\n"), "{text}");
        assert!(text.contains("district = \"Süd\"   # moved in 2025"), "{text}");
        assert!(text.contains("height_m = 2.5"), "{text}");
        assert_eq!(device(&file, "a"), a);
        assert_eq!(text.matches("visibility = \"internal\"").count(), 2, "{text}");
        // b untouched, byte for byte.
        assert!(text.ends_with(&FILE[FILE.find("[[device]]\nid = \"b\"").unwrap()..]), "{text}");
    }

    #[test]
    fn a_new_device_is_appended_as_a_device_table() {
        let mut file = DevicesFile::parse("d.toml", FILE).unwrap();
        let mut c = device(&file, "a");
        c.id = crate::model::DeviceId::parse("c").unwrap();
        c.installed = chrono::NaiveDate::from_ymd_opt(2026, 1, 2);
        file.upsert(&c).unwrap();
        let text = file.text();
        assert!(text.starts_with(FILE), "{text}");
        assert!(text.contains("\n\n[[device]]\nid = \"c\""), "{text}");
        assert_eq!(device(&file, "c"), c);
        let empty = DevicesFile::parse("d.toml", "# nothing yet\n");
        let mut empty = empty.unwrap();
        empty.upsert(&c).unwrap();
        assert_eq!(device(&empty, "c"), c);
        assert!(DevicesFile::parse("d.toml", "device = 1\n").is_err());
    }

    #[test]
    fn writes_replace_the_file_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("devices.toml");
        std::fs::write(&path, "old").unwrap();
        write_atomically(&path, "new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left");
    }
}
