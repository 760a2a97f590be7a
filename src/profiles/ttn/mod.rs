//! `messnetz profiles import-ttn`: sensor profiles made from The Things Network's device
//! repository, each running the vendor's own JavaScript codec in the sandbox ([`super::js`]).
//!
//! For every device model of a checkout (or of one vendor folder) the import runs the codec's
//! examples in a codec worker and compares each result with the vendor's ([`compare`]); finds
//! the numeric keys of the passing examples' output and maps them to quantities ([`mapping`]:
//! the normalized payload of `normalizeUplink` where the codec has one, else `decodeUplink`'s
//! keys by name patterns; overrides per profile); and writes `<id>.toml` beside `<id>.js` in
//! the profiles directory, with the passing examples as the profile's examples, so that the
//! profile loads and is checked like any other ([`write`]). What it could not do is in the
//! [`report::Report`], model by model; one broken or hostile model never stops the others.
//!
//! - [`repository`]: the repository's files; [`yaml`]: its YAML, read within bounds;
//! - [`compare`]: the first difference between a result and the vendor's example;
//! - [`mapping`]: the two key tables and the overrides;
//! - [`write`]: the generated files, their generated-by header and hand-edit protection;
//! - [`report`]: what the import did, printed by the command.

pub mod compare;
pub mod mapping;
pub mod report;
pub mod repository;
pub mod write;
pub mod yaml;

use std::path::Path;

use serde_json::Value;

use crate::profiles::js;
use mapping::{Mapped, Overrides};
use report::{ExampleResult, ModelReport, Outcome, Report};
use repository::{Model, VendorExample};

/// What to import and where to.
pub struct ImportOptions<'a> {
    /// A checkout of the repository, or one `vendor/<vendor>` folder.
    pub source: &'a Path,
    /// The profiles directory the profiles are written to.
    pub profiles_dir: &'a Path,
    /// Per-profile mapping choices.
    pub overrides: &'a Overrides,
}

/// Why an import could not start at all (a model's own problems are in the report).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    Source(String),
    #[error("{}: {source}", path.display())]
    Io { path: std::path::PathBuf, source: std::io::Error },
}

/// Imports every device model under `options.source`.
pub fn import(options: &ImportOptions<'_>) -> Result<Report, ImportError> {
    let vendors = repository::vendors(options.source).map_err(ImportError::Source)?;
    let staging = write::Staging::new(options.profiles_dir)
        .map_err(|source| ImportError::Io { path: options.profiles_dir.to_owned(), source })?;
    let mut report = Report::default();
    for vendor in &vendors {
        let ids = match repository::device_ids(vendor) {
            Ok(ids) => ids,
            Err(e) => {
                report.problems.push(e);
                continue;
            }
        };
        for device_id in ids {
            let id = profile_id(&vendor.id, &device_id);
            let source = format!("vendor/{}/{device_id}.yaml", vendor.id);
            let entry = if report.models.iter().any(|m| m.id == id) {
                ModelReport::new(
                    &id,
                    &source,
                    Outcome::Failed(format!("the profile id {id} is already taken by another model of this import")),
                )
            } else {
                match repository::model(vendor, &device_id) {
                    Ok(model) => import_model(&id, &model, options, &staging),
                    Err(e) => ModelReport::new(&id, &source, Outcome::Failed(e)),
                }
            };
            report.models.push(entry);
        }
    }
    for id in options.overrides.profiles.keys() {
        if report.model(id).is_none() {
            report.problems.push(format!("the overrides name {id}, which this import did not find"));
        }
    }
    Ok(report)
}

/// `vendor-device`, lower case, `-` between words (the profile id rules); a device id that
/// already starts with the vendor's is not prefixed again.
pub fn profile_id(vendor: &str, device: &str) -> String {
    let clean = |s: &str| {
        s.to_ascii_lowercase().split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()).collect::<Vec<_>>().join("-")
    };
    let (vendor, device) = (clean(vendor), clean(device));
    if device.starts_with(&format!("{vendor}-")) {
        device
    } else {
        format!("{vendor}-{device}")
    }
}

fn import_model(id: &str, model: &Model, options: &ImportOptions<'_>, staging: &write::Staging) -> ModelReport {
    let mut entry = ModelReport::new(id, &model.device_file, Outcome::Failed(String::new()));
    if !model.other_codecs.is_empty() {
        entry.notes.push(format!("other firmware versions use the codecs {} (not imported)", model.other_codecs.join(", ")));
    }
    if let Some(reason) = write::protected(options.profiles_dir, id) {
        entry.outcome = Outcome::LeftAlone(reason);
        return entry;
    }
    let codec = &model.codec;
    if codec.examples.is_empty() {
        entry.outcome =
            Outcome::NotImported("the codec has no examples: nothing to check it against or find its keys in".to_owned());
        return entry;
    }
    if let Err(e) = js::check_codec(&codec.script) {
        entry.outcome = Outcome::Failed(format!("{}: the script does not load: {e}", codec.script_name));
        return entry;
    }
    let overrides = options.overrides.profiles.get(id);
    let has_normalize = codec.script.contains("normalizeUplink");
    let normalize = has_normalize && overrides.and_then(|o| o.normalize).unwrap_or(true);
    entry.normalized = normalize;

    // Run every example: its decodeUplink result against the vendor's `output`, and with
    // normalize its normalizeUplink result against `normalizedOutput` where the example has one.
    struct Run<'a> {
        example: &'a VendorExample,
        decoded: Option<Value>,
        normalized: Option<Value>,
        normalize_difference: Option<String>,
    }
    let mut passing: Vec<Run<'_>> = Vec::new();
    for (i, ex) in codec.examples.iter().enumerate() {
        let ex = match ex {
            Ok(ex) => ex,
            Err(e) => {
                entry.examples.push(ExampleResult {
                    index: i,
                    description: None,
                    difference: Some(format!("cannot read the example in {}: {e}", codec.codec_file)),
                    normalize_difference: None,
                });
                continue;
            }
        };
        let actual = js::run_codec(&codec.script, ex.f_port, &ex.bytes, normalize);
        let difference = compare::compare_output(&ex.output, actual.as_ref().map_err(String::as_str));
        let expects_error = ex.output.get("errors").and_then(Value::as_array).is_some_and(|e| !e.is_empty());
        let mut run = Run { example: ex, decoded: None, normalized: None, normalize_difference: None };
        if difference.is_none() && !expects_error {
            run.decoded = ex.output.get("data").cloned();
            if normalize {
                let got = actual.as_ref().ok().and_then(|r| r.get("normalized"));
                match (&ex.normalized, got) {
                    (Some(want), Some(got)) => {
                        run.normalize_difference = compare::compare_output(&as_list(want), Ok(&as_list(got)));
                        run.normalized = want.get("data").cloned();
                    }
                    (None, Some(got)) => {
                        let errors = got.get("errors").and_then(Value::as_array).filter(|e| !e.is_empty());
                        run.normalize_difference = errors.map(|e| format!("it returned errors {}", Value::Array(e.clone())));
                        run.normalized = got.get("data").cloned();
                    }
                    (_, None) => run.normalize_difference = Some("it returned nothing".to_owned()),
                }
                run.normalized = run.normalized.map(first_measurement);
            }
        }
        entry.examples.push(ExampleResult {
            index: i,
            description: ex.description.clone(),
            difference: difference.clone(),
            normalize_difference: run.normalize_difference.clone(),
        });
        if difference.is_none() {
            passing.push(run);
        }
    }
    if passing.is_empty() {
        entry.outcome = Outcome::NotImported("no example decodes to the vendor's output".to_owned());
        return entry;
    }
    // A normalizeUplink that disagrees with the vendor in every example cannot be trusted:
    // the decoded keys are mapped instead, and the report says so.
    let mut normalize = normalize;
    let mut with_data = passing.iter().filter(|r| r.decoded.is_some()).peekable();
    if normalize && with_data.peek().is_some() && with_data.all(|r| r.normalize_difference.is_some()) {
        normalize = false;
        entry.normalized = false;
        entry.notes.push(
            "normalizeUplink's output differs from the vendor's normalizedOutput in every example: decodeUplink's keys are mapped instead"
                .to_owned(),
        );
    }
    let passing: Vec<(&VendorExample, Option<Value>)> = passing
        .into_iter()
        .filter(|r| !normalize || r.normalize_difference.is_none())
        .map(|r| (r.example, if normalize { r.normalized } else { r.decoded }))
        .collect();

    let keys = mapping::numeric_keys(passing.iter().filter_map(|(_, out)| out.as_ref()));
    let (fields, unmapped) = mapping::map_keys(&keys, normalize, overrides);
    entry.fields = fields.clone();
    entry.unmapped = unmapped;
    if fields.is_empty() {
        entry.outcome = Outcome::NotImported(format!(
            "no key of the {} output maps to a quantity",
            if normalize { "normalized" } else { "decoded" }
        ));
        return entry;
    }
    let examples: Vec<write::Example> = passing.iter().map(|(ex, out)| profile_example(ex, out.as_ref(), &fields)).collect();
    let files = write::Files::new(id, model, normalize, &fields, &examples);
    entry.outcome = match staging.check_and_install(&files) {
        Ok(outcome) => outcome,
        Err(e) => Outcome::Failed(e),
    };
    entry
}

/// A normalized result whose `data` is one measurement, as a list of one: the repository's
/// schema is a list, and codecs return either.
fn as_list(result: &Value) -> Value {
    let mut result = result.clone();
    if let Some(data) = result.get_mut("data").filter(|d| d.is_object()) {
        *data = Value::Array(vec![data.take()]);
    }
    result
}

/// The normalized payload is one measurement or a list of them; the profile maps the first.
fn first_measurement(data: Value) -> Value {
    match data {
        Value::Array(mut items) if !items.is_empty() => items.swap_remove(0),
        other => other,
    }
}

/// A passing vendor example as a profile example: its readings are the vendor's values at the
/// mapped keys, in canonical units; an example that expects errors expects the first of them.
fn profile_example(ex: &VendorExample, output: Option<&Value>, fields: &[Mapped]) -> write::Example {
    let error = ex
        .output
        .get("errors")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
        .map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_owned));
    let readings = match (&error, output) {
        (None, Some(out)) => fields
            .iter()
            .filter_map(|f| {
                let raw = mapping::number(out.pointer(&f.pointer)?)?;
                Some((f.quantity, f.canonical(raw))).filter(|(_, v)| v.is_finite())
            })
            .collect(),
        _ => Vec::new(),
    };
    write::Example { description: ex.description.clone(), f_port: ex.f_port, bytes: ex.bytes.clone(), error, readings }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_ids_follow_the_id_rules() {
        assert_eq!(profile_id("dragino", "lht65"), "dragino-lht65");
        assert_eq!(profile_id("milesight-iot", "em300_th"), "milesight-iot-em300-th");
        assert_eq!(profile_id("elsys", "elsys-ers"), "elsys-ers");
        assert_eq!(profile_id("Acme", "--T1--"), "acme-t1");
    }
}
