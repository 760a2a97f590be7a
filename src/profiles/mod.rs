//! Sensor profiles: declarative TOML descriptions of a sensor model's payloads, loaded from a
//! directory, validated as a whole, and compiled into decoders.
//!
//! - [`format`]: the serde types of a profile file (the reference is `docs/profiles.md`);
//! - [`decode`]: compiling layouts and decoding payloads with them (`fixed`, `json`, and what
//!   every kind shares); [`tlv`], [`flags`], [`lpp`] and [`js`] are the other layout kinds;
//! - [`formula`]: arithmetic on raw values;
//! - [`units`]: UCUM units and their conversion to a quantity's canonical unit;
//! - [`ttn`]: profiles made from The Things Network's device repository (its vendors' codecs).
//!
//! A profile is refused at load time, never at decode time, for anything that can be known
//! without a payload: an unknown quantity or unit, a unit of the wrong dimension, a field that
//! does not fit its type, an example that does not decode to what it claims.

pub mod decode;
pub mod flags;
pub mod format;
pub mod formula;
pub mod js;
pub mod lpp;
pub mod tlv;
pub mod ttn;
pub mod units;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use decode::{DecodeError, Decoded, DecodedValue};

use crate::model::Quantity;
use decode::{Issue, Layouts};
use format::{ExampleSpec, ProfileFile};

/// A loaded, validated sensor profile.
#[derive(Debug)]
pub struct Profile {
    id: String,
    vendor: String,
    model: String,
    reference: String,
    layouts: Layouts,
    examples: Vec<Example>,
    /// The profile's `[quality]` overrides (ranges, battery threshold).
    quality: crate::config::ProfileQuality,
}

#[derive(Debug)]
struct Example {
    description: Option<String>,
    fport: Option<u8>,
    payload: ExamplePayload,
    expect: Expectation,
    /// Texts each warning-list must contain one of.
    warnings: Vec<String>,
}

#[derive(Debug)]
enum ExamplePayload {
    Bytes(Vec<u8>),
    Json(serde_json::Value),
}

#[derive(Debug)]
enum Expectation {
    Readings(Vec<(Quantity, f64)>),
    /// Text the error message must contain.
    Error(String),
}

/// An example of a profile that did not decode as the profile says it does.
#[derive(Debug, Clone, PartialEq)]
pub struct ExampleMismatch {
    /// Position of the example in the file's `[[examples]]`, counted from 0.
    pub example: usize,
    /// Names the quantity and both values (expected and decoded), or the error.
    pub message: String,
}

impl fmt::Display for ExampleMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "examples[{}]: {}", self.example, self.message)
    }
}

/// Why a profile could not be loaded. Every variant names the file; positions are 1-based.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// The file is not valid TOML or does not fit the format (unknown key, wrong type,
    /// unknown quantity or unit).
    #[error("{}{}: {message}", file.display(), Location(*line, *column))]
    Parse { file: PathBuf, line: Option<usize>, column: Option<usize>, message: String },
    /// The file fits the format but does not make sense (for example a unit of another dimension
    /// than the quantity's); `key` is the path of the offending key, like `layouts[0].fields[1].unit`.
    #[error("{}{}: {key}: {message}", file.display(), Location(*line, *column))]
    Invalid { file: PathBuf, line: Option<usize>, column: Option<usize>, key: String, message: String },
    #[error("{}: {} example(s) do not decode as stated: {}", file.display(), mismatches.len(), join(mismatches))]
    Examples { file: PathBuf, mismatches: Vec<ExampleMismatch> },
    #[error("profile id {id:?} is defined twice: in {} and in {}", first.display(), second.display())]
    Duplicate { id: String, first: PathBuf, second: PathBuf },
}

struct Location(Option<usize>, Option<usize>);

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0, self.1) {
            (Some(line), Some(col)) => write!(f, ":{line}:{col}"),
            (Some(line), None) => write!(f, ":{line}"),
            _ => Ok(()),
        }
    }
}

fn join(mismatches: &[ExampleMismatch]) -> String {
    mismatches.iter().map(|m| m.to_string()).collect::<Vec<_>>().join("; ")
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    // A span may end inside a multi-byte character only if the caller is wrong; stay safe.
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

impl Profile {
    /// Parses and validates one profile file's text. `file` names it in errors, and its stem
    /// must equal the profile's `id`. Returns every problem found, not just the first. The
    /// examples are not run here; [`ProfileSet::load_dir`] runs them.
    pub fn from_toml(file: &Path, text: &str) -> Result<Profile, Vec<ProfileError>> {
        let spec: ProfileFile = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unzip();
            vec![ProfileError::Parse { file: file.to_owned(), line, column, message: e.message().trim().to_owned() }]
        })?;
        let mut issues = Vec::new();
        check_metadata(&spec, file, &mut issues);
        let dir = file.parent().unwrap_or(Path::new("."));
        let layouts = decode::compile_layouts(&spec.layouts, dir, &mut issues);
        let examples = compile_examples(&spec.examples, &mut issues);
        if !issues.is_empty() {
            return Err(issues
                .into_iter()
                .map(|i| {
                    let (line, column) = i.span.map(|s| line_col(text, s.start)).unzip();
                    ProfileError::Invalid { file: file.to_owned(), line, column, key: i.path, message: i.message }
                })
                .collect());
        }
        Ok(Profile {
            id: spec.id.into_inner(),
            vendor: spec.vendor,
            model: spec.model,
            reference: spec.reference,
            layouts,
            examples,
            quality: spec.quality,
        })
    }

    /// The profile's quality-control overrides: its measuring ranges and battery threshold.
    pub fn quality(&self) -> &crate::config::ProfileQuality {
        &self.quality
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn vendor(&self) -> &str {
        &self.vendor
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    /// The vendor document the profile follows.
    pub fn reference(&self) -> &str {
        &self.reference
    }

    /// The quantities this profile can produce, each once.
    pub fn quantities(&self) -> Vec<Quantity> {
        self.layouts.quantities()
    }

    /// Whether decoding may run a JavaScript codec, which can take up to its time limit (100 ms
    /// by default): callers on an async runtime should decode such profiles off the runtime's
    /// worker threads (`spawn_blocking`). Declarative profiles decode in well under a microsecond.
    pub fn runs_script(&self) -> bool {
        self.layouts.runs_script()
    }

    /// Decode a binary LoRaWAN FRMPayload.
    pub fn decode_bytes(&self, f_port: Option<u8>, bytes: &[u8]) -> Result<Decoded, DecodeError> {
        self.layouts.decode_bytes(f_port, bytes)
    }

    /// Decode an uplink from a network server: its payload bytes with the binary layouts, or
    /// the server's decoded object (`decoded`) with the `json` layout when the profile has no
    /// binary layout or none of them takes this uplink (docs/profiles.md, "JSON from the network
    /// server").
    pub fn decode_uplink(&self, f_port: Option<u8>, bytes: &[u8], decoded: Option<&str>) -> Result<Decoded, DecodeError> {
        self.layouts.decode_uplink(f_port, bytes, decoded)
    }

    /// Decode a JSON payload (plain MQTT sensors) using the profile's JSON pointers.
    pub fn decode_json(&self, value: &serde_json::Value) -> Result<Decoded, DecodeError> {
        self.layouts.decode_json(value)
    }

    /// The binary payloads of the examples that decode to readings, with their fPort: real
    /// uplinks for benchmarks and fuzzing seeds.
    pub fn example_uplinks(&self) -> impl Iterator<Item = (Option<u8>, &[u8])> {
        self.examples.iter().filter_map(|ex| match (&ex.payload, &ex.expect) {
            (ExamplePayload::Bytes(b), Expectation::Readings(r)) if !r.is_empty() => Some((ex.fport, b.as_slice())),
            _ => None,
        })
    }

    /// Run the profile's own examples; empty vec = all pass.
    ///
    /// A profile with a JavaScript codec has a time budget for all its examples together,
    /// [`EXAMPLE_BUDGET_CALLS`] times its codec's time limit (at least one second): examples not
    /// started within it fail with that reason, so that loading, `check` and an upload stay
    /// bounded whatever the examples run.
    pub fn check_examples(&self) -> Vec<ExampleMismatch> {
        let mut out = Vec::new();
        let budget = self.layouts.script_timeout().map(|t| (t * EXAMPLE_BUDGET_CALLS).max(std::time::Duration::from_secs(1)));
        let started = std::time::Instant::now();
        for (i, ex) in self.examples.iter().enumerate() {
            let label = ex.description.as_deref().map(|d| format!("{d:?}: ")).unwrap_or_default();
            let mut fail = |message: String| out.push(ExampleMismatch { example: i, message: format!("{label}{message}") });
            if let Some(budget) = budget.filter(|b| started.elapsed() >= *b) {
                fail(format!(
                    "not run: the examples used up their time budget of {} ms ({EXAMPLE_BUDGET_CALLS} times the codec's time limit, at least 1 s)",
                    budget.as_millis()
                ));
                continue;
            }
            let result = match &ex.payload {
                ExamplePayload::Bytes(b) => self.decode_bytes(ex.fport, b),
                ExamplePayload::Json(v) => self.decode_json(v),
            };
            match (&ex.expect, result) {
                (Expectation::Error(want), Err(e)) if e.to_string().contains(want.as_str()) => {}
                (Expectation::Error(want), Err(e)) => fail(format!("expected an error containing {want:?}, got: {e}")),
                (Expectation::Error(want), Ok(d)) => {
                    let got: Vec<String> =
                        d.values.iter().map(|v| format!("{} = {} {}", v.quantity, v.value, v.quantity.unit())).collect();
                    fail(format!("expected an error containing {want:?}, but decoded [{}]", got.join(", ")));
                }
                (Expectation::Readings(_), Err(e)) => fail(format!("decoding failed: {e}")),
                (Expectation::Readings(expected), Ok(d)) => {
                    for want in &ex.warnings {
                        if !d.warnings.iter().any(|w| w.contains(want.as_str())) {
                            fail(format!("expected a warning containing {want:?}, got {:?}", d.warnings));
                        }
                    }
                    let mut used = vec![false; d.values.len()];
                    for &(q, want) in expected {
                        let unit = q.unit();
                        let found = d.values.iter().enumerate().position(|(k, v)| !used[k] && v.quantity == q);
                        match found {
                            None => fail(format!("{q}: expected {want} {unit}, not decoded")),
                            Some(k) => {
                                used[k] = true;
                                let got = d.values[k].value;
                                if !close(want, got) {
                                    fail(format!("{q}: expected {want} {unit}, decoded {got} {unit}"));
                                }
                            }
                        }
                    }
                    for (v, _) in d.values.iter().zip(&used).filter(|(_, u)| !**u) {
                        fail(format!("{}: decoded {} {}, not expected", v.quantity, v.value, v.quantity.unit()));
                    }
                }
            }
        }
        out
    }
}

/// How many codec time limits a profile's examples may take together.
pub const EXAMPLE_BUDGET_CALLS: u32 = 5;

/// Equal within 1e-6 relative or 1e-9 absolute: vendors print rounded values, and a scale
/// like 0.1 is not exact in binary.
fn close(expected: f64, got: f64) -> bool {
    let diff = (expected - got).abs();
    diff <= 1e-9 || diff <= 1e-6 * expected.abs()
}

fn check_metadata(spec: &ProfileFile, file: &Path, issues: &mut Vec<Issue>) {
    let mut push = |span: Option<std::ops::Range<usize>>, path: &str, message: String| {
        issues.push(Issue { span, path: path.to_owned(), message })
    };
    let id = spec.id.get_ref();
    let well_formed = id.split('-').count() >= 2
        && id.split('-').all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
    if !well_formed {
        push(
            Some(spec.id.span()),
            "id",
            format!("id {id:?} must be lower-case `vendor-model`: a-z, 0-9 and single '-' between words"),
        );
    }
    let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
    if stem != id {
        push(Some(spec.id.span()), "id", format!("id {id:?} must equal the file name without .toml ({stem:?})"));
    }
    for (key, value) in [("vendor", &spec.vendor), ("model", &spec.model), ("reference", &spec.reference)] {
        if value.trim().is_empty() {
            push(None, key, format!("`{key}` must not be empty"));
        }
    }
    for (q, message) in crate::config::range_problems(&spec.quality.ranges) {
        push(None, &format!("quality.ranges.{q}"), message);
    }
    if spec.quality.battery_low_v.is_some_and(|v| !v.is_finite() || v < 0.0) {
        push(None, "quality.battery_low_v", "expected 0 (off) or more volts".to_owned());
    }
    // Links rot; a title and section can still be found when the vendor moves its website.
    if spec.reference.contains("://") {
        push(None, "reference", "name the document (title, version, section) instead of linking to it".to_owned());
    }
}

fn compile_examples(specs: &[toml::Spanned<ExampleSpec>], issues: &mut Vec<Issue>) -> Vec<Example> {
    let mut push =
        |span: std::ops::Range<usize>, path: String, message: String| issues.push(Issue { span: Some(span), path, message });
    if specs.is_empty() {
        issues.push(Issue {
            span: None,
            path: "examples".to_owned(),
            message: "a profile needs at least one [[examples]] table, ideally the vendor's own".to_owned(),
        });
        return Vec::new();
    }
    let mut out = Vec::with_capacity(specs.len());
    for (i, spanned) in specs.iter().enumerate() {
        let span = spanned.span();
        let ex = spanned.get_ref();
        let path = format!("examples[{i}]");
        let payload = match (&ex.payload_hex, &ex.payload_json) {
            (Some(hex), None) => match parse_hex(hex) {
                Ok(bytes) => ExamplePayload::Bytes(bytes),
                Err(m) => {
                    push(span, format!("{path}.payload_hex"), m);
                    continue;
                }
            },
            (None, Some(json)) => match serde_json::from_str(json) {
                Ok(v) => ExamplePayload::Json(v),
                Err(e) => {
                    push(span, format!("{path}.payload_json"), format!("not valid JSON: {e}"));
                    continue;
                }
            },
            _ => {
                push(span, path, "give exactly one of `payload_hex` and `payload_json`".to_owned());
                continue;
            }
        };
        let expect = match &ex.error {
            Some(_) if !ex.readings.is_empty() => {
                push(span, path, "give either `readings` or `error`, not both".to_owned());
                continue;
            }
            Some(text) if text.trim().is_empty() => {
                push(span, format!("{path}.error"), "`error` must contain part of the expected message".to_owned());
                continue;
            }
            Some(text) => Expectation::Error(text.clone()),
            None => Expectation::Readings(ex.readings.iter().map(|r| (r.quantity, r.value)).collect()),
        };
        if ex.error.is_some() && !ex.warnings.is_empty() {
            push(span, path, "`warnings` go with `readings`; a failing payload has no warnings".to_owned());
            continue;
        }
        out.push(Example {
            description: ex.description.clone(),
            fport: ex.fport,
            payload,
            expect,
            warnings: ex.warnings.clone(),
        });
    }
    out
}

/// Hex digits in either case; spaces are allowed so that fields can be grouped for reading.
pub fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if digits.len() % 2 != 0 {
        return Err(format!("{text:?} has an odd number of hex digits"));
    }
    digits
        .chunks(2)
        .map(|pair| {
            let s = std::str::from_utf8(pair).map_err(|_| format!("{text:?} is not hexadecimal"))?;
            u8::from_str_radix(s, 16).map_err(|_| format!("{text:?} is not hexadecimal (at {s:?})"))
        })
        .collect()
}

/// The profiles of a directory, by id.
#[derive(Debug, Default)]
pub struct ProfileSet {
    profiles: BTreeMap<String, Arc<Profile>>,
}

impl ProfileSet {
    /// Load every `*.toml` in the directory. Returns all errors, not just the first.
    ///
    /// A profile whose own examples fail is refused like a malformed one: it would store wrong
    /// readings. Hidden files (editor backups such as `.#x.toml`) are skipped.
    pub fn load_dir(dir: &Path) -> Result<ProfileSet, Vec<ProfileError>> {
        let io = |path: &Path, source| vec![ProfileError::Io { path: path.to_owned(), source }];
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
            let path = entry.map_err(|e| io(dir, e))?.path();
            let hidden = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
            if path.extension().is_some_and(|e| e == "toml") && !hidden && path.is_file() {
                paths.push(path);
            }
        }
        paths.sort();

        let mut errors = Vec::new();
        let mut set = ProfileSet::default();
        let mut origin: BTreeMap<String, PathBuf> = BTreeMap::new();
        for path in paths {
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(source) => {
                    errors.push(ProfileError::Io { path, source });
                    continue;
                }
            };
            let profile = match Profile::from_toml(&path, &text) {
                Ok(p) => p,
                Err(mut e) => {
                    errors.append(&mut e);
                    continue;
                }
            };
            let mismatches = profile.check_examples();
            if !mismatches.is_empty() {
                errors.push(ProfileError::Examples { file: path, mismatches });
                continue;
            }
            if let Some(first) = origin.get(&profile.id) {
                errors.push(ProfileError::Duplicate { id: profile.id.clone(), first: first.clone(), second: path });
                continue;
            }
            origin.insert(profile.id.clone(), path);
            set.profiles.insert(profile.id.clone(), Arc::new(profile));
        }
        if errors.is_empty() {
            Ok(set)
        } else {
            Err(errors)
        }
    }

    /// Builds a set from profiles already loaded (tests, embedded profiles); a later profile
    /// with the same id replaces an earlier one.
    pub fn from_profiles(profiles: impl IntoIterator<Item = Profile>) -> ProfileSet {
        ProfileSet { profiles: profiles.into_iter().map(|p| (p.id.clone(), Arc::new(p))).collect() }
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Profile>> {
        self.profiles.get(id)
    }

    /// The ids, sorted.
    pub fn ids(&self) -> Vec<&str> {
        self.profiles.keys().map(String::as_str).collect()
    }

    pub fn len(&self) -> usize {
        self.profiles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.profiles.is_empty()
    }

    /// The profiles in id order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Profile>> {
        self.profiles.values()
    }
}

#[cfg(test)]
mod tests;
