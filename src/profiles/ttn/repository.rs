//! The layout of The Things Network's device repository (`TheThingsNetwork/lorawan-devices`),
//! as far as the import reads it:
//!
//! - `vendor/index.yaml`: `vendors`, a list of `{id, name, ...}`;
//! - `vendor/<vendor>/index.yaml`: `endDevices`, the device ids of the vendor;
//! - `vendor/<vendor>/<device>.yaml`: the model's `name`, and `firmwareVersions`, each with
//!   `profiles` per region whose `codec` names a codec id;
//! - `vendor/<vendor>/<codec>.yaml`: `uplinkDecoder` with `fileName` (the JavaScript, in the
//!   same folder) and `examples`, each with `description`, `input` (`bytes`, `fPort`) and
//!   `output` (`data`, `warnings`, `errors`), and for codecs with `normalizeUplink` often a
//!   `normalizedOutput` (`data`: one measurement or a list of them).
//!
//! Everything a file may get wrong is an `Err` for that model, so the import goes on with the
//! next one.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::yaml;
use crate::profiles::js::MAX_SCRIPT_SIZE;

/// A vendor folder to import.
#[derive(Debug)]
pub struct Vendor {
    /// The folder name, e.g. `dragino`.
    pub id: String,
    /// The vendor's name from `vendor/index.yaml`, else the id.
    pub name: String,
    pub dir: PathBuf,
}

/// One device model of a vendor's `index.yaml`.
#[derive(Debug)]
pub struct Model {
    pub vendor_id: String,
    pub vendor_name: String,
    /// The device id, e.g. `lht65`.
    pub device_id: String,
    /// The model's name from its device file, e.g. `LHT65`.
    pub name: String,
    /// The device file, relative to the import root.
    pub device_file: String,
    pub codec: Codec,
    /// Other codecs named by the device's firmware versions (not imported).
    pub other_codecs: Vec<String>,
}

/// A model's uplink codec.
#[derive(Debug)]
pub struct Codec {
    /// The codec file, relative to the import root.
    pub codec_file: String,
    /// The script's file name in the vendor folder.
    pub script_name: String,
    pub script: String,
    /// The examples in file order; one that cannot be read is its reason (it fails, the
    /// others still count).
    pub examples: Vec<Result<VendorExample, String>>,
}

/// One of the codec's `uplinkDecoder.examples`.
#[derive(Debug, Clone)]
pub struct VendorExample {
    pub description: Option<String>,
    pub f_port: Option<u8>,
    pub bytes: Vec<u8>,
    /// The expected result: `data`, `warnings`, `errors`.
    pub output: Value,
    /// The expected result of `normalizeUplink`, where given.
    pub normalized: Option<Value>,
}

/// The vendor folders under `root`: a checkout (with `vendor/`) or one vendor folder.
pub fn vendors(root: &Path) -> Result<Vec<Vendor>, String> {
    let vendor_dir = root.join("vendor");
    if vendor_dir.is_dir() {
        let names = vendor_names(&vendor_dir.join("index.yaml"));
        let mut out = Vec::new();
        let entries = std::fs::read_dir(&vendor_dir).map_err(|e| format!("{}: {e}", vendor_dir.display()))?;
        for entry in entries.flatten() {
            let dir = entry.path();
            if dir.is_dir() && dir.join("index.yaml").is_file() {
                let id = file_name(&dir);
                let name = names.iter().find(|(i, _)| *i == id).map_or_else(|| id.clone(), |(_, n)| n.clone());
                out.push(Vendor { id, name, dir });
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        return Ok(out);
    }
    if root.join("index.yaml").is_file() {
        let id = file_name(&root.canonicalize().unwrap_or_else(|_| root.to_owned()));
        let names = root.parent().map(|p| vendor_names(&p.join("index.yaml"))).unwrap_or_default();
        let name = names.iter().find(|(i, _)| *i == id).map_or_else(|| id.clone(), |(_, n)| n.clone());
        return Ok(vec![Vendor { id, name, dir: root.to_owned() }]);
    }
    Err(format!(
        "{} is neither a checkout of the device repository (no vendor/ folder) nor a vendor folder (no index.yaml)",
        root.display()
    ))
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// `(id, name)` of `vendor/index.yaml`; empty when it is missing or unreadable (names are
/// only cosmetic: the folder name stands in).
fn vendor_names(index: &Path) -> Vec<(String, String)> {
    let Ok(doc) = yaml::read_file(index) else { return Vec::new() };
    let Some(list) = doc.get("vendors").and_then(Value::as_array) else { return Vec::new() };
    list.iter().filter_map(|v| Some((v.get("id")?.as_str()?.to_owned(), v.get("name")?.as_str()?.trim().to_owned()))).collect()
}

/// The device ids of a vendor's `index.yaml`, each once, in file order.
pub fn device_ids(vendor: &Vendor) -> Result<Vec<String>, String> {
    let index = vendor.dir.join("index.yaml");
    let doc = yaml::read_file(&index).map_err(|e| format!("{}: {e}", index.display()))?;
    let list =
        doc.get("endDevices").and_then(Value::as_array).ok_or_else(|| format!("{}: no `endDevices` list", index.display()))?;
    let mut ids: Vec<String> = Vec::new();
    for item in list {
        match item.as_str() {
            Some(id) if !ids.iter().any(|i| i == id) => ids.push(id.to_owned()),
            Some(_) => {}
            None => return Err(format!("{}: `endDevices` holds {item}, not a device id", index.display())),
        }
    }
    Ok(ids)
}

/// Reads one device model: its device file, its codec file and the codec's script.
pub fn model(vendor: &Vendor, device_id: &str) -> Result<Model, String> {
    let rel = |name: &str| format!("vendor/{}/{name}", vendor.id);
    let device_file = rel(&format!("{device_id}.yaml"));
    let file = safe_join(&vendor.dir, &format!("{device_id}.yaml"))?;
    let doc = yaml::read_file(&file).map_err(|e| format!("{device_file}: {e}"))?;
    let name = doc.get("name").and_then(Value::as_str).map(str::trim).filter(|n| !n.is_empty()).unwrap_or(device_id).to_owned();
    let mut codecs: Vec<String> = Vec::new();
    for firmware in doc.get("firmwareVersions").and_then(Value::as_array).into_iter().flatten() {
        for profile in firmware.get("profiles").and_then(Value::as_object).into_iter().flat_map(|m| m.values()) {
            if let Some(codec) = profile.get("codec").and_then(Value::as_str) {
                if !codecs.iter().any(|c| c == codec) {
                    codecs.push(codec.to_owned());
                }
            }
        }
    }
    if codecs.is_empty() {
        return Err(format!("{device_file}: no firmware version names a codec"));
    }
    let codec_id = codecs.remove(0);
    let codec_file = rel(&format!("{codec_id}.yaml"));
    let codec_doc =
        yaml::read_file(&safe_join(&vendor.dir, &format!("{codec_id}.yaml"))?).map_err(|e| format!("{codec_file}: {e}"))?;
    let decoder = codec_doc.get("uplinkDecoder").ok_or_else(|| format!("{codec_file}: no `uplinkDecoder`"))?;
    let script_name = decoder
        .get("fileName")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{codec_file}: `uplinkDecoder` has no `fileName`"))?
        .to_owned();
    let script_path = safe_join(&vendor.dir, &script_name).map_err(|e| format!("{codec_file}: {e}"))?;
    let script =
        super::yaml::read_bounded(&script_path, MAX_SCRIPT_SIZE as u64).map_err(|e| format!("{}: {e}", rel(&script_name)))?;
    let mut examples = Vec::new();
    for ex in decoder.get("examples").and_then(Value::as_array).into_iter().flatten() {
        examples.push(example(ex));
    }
    Ok(Model {
        vendor_id: vendor.id.clone(),
        vendor_name: vendor.name.clone(),
        device_id: device_id.to_owned(),
        name,
        device_file,
        codec: Codec { codec_file, script_name, script, examples },
        other_codecs: codecs,
    })
}

fn example(ex: &Value) -> Result<VendorExample, String> {
    let input = ex.get("input").ok_or("no `input`")?;
    let bytes = input
        .get("bytes")
        .and_then(Value::as_array)
        .ok_or("`input.bytes` is not a list")?
        .iter()
        .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()).ok_or_else(|| format!("`input.bytes` holds {b}, not a byte")))
        .collect::<Result<Vec<u8>, String>>()?;
    let f_port = match input.get("fPort") {
        None | Some(Value::Null) => None,
        Some(p) => {
            Some(p.as_u64().and_then(|p| u8::try_from(p).ok()).ok_or_else(|| format!("`input.fPort` is {p}, not a port"))?)
        }
    };
    let output = ex.get("output").filter(|o| o.is_object()).ok_or("no `output` mapping")?.clone();
    Ok(VendorExample {
        description: ex.get("description").and_then(Value::as_str).map(str::to_owned),
        f_port,
        bytes,
        output,
        normalized: ex.get("normalizedOutput").filter(|o| o.is_object()).cloned(),
    })
}

/// `dir/name` for a plain file name: no path may leave the vendor's folder.
fn safe_join(dir: &Path, name: &str) -> Result<PathBuf, String> {
    let plain = !name.is_empty()
        && !name.contains("..")
        && !name.starts_with('/')
        && !name.contains('\\')
        && name.chars().all(|c| !c.is_control());
    if plain {
        Ok(dir.join(name))
    } else {
        Err(format!("{name:?} is not a file name inside the vendor folder"))
    }
}
