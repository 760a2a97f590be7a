//! Tests of profile loading: bundled profiles and their examples, error reports with file and
//! line, example checking, hostile payloads through every bundled profile.

use super::*;

fn bundled_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("sensor-profiles")
}

fn bundled() -> ProfileSet {
    match ProfileSet::load_dir(&bundled_dir()) {
        Ok(set) => set,
        Err(errors) => panic!("{}", errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n")),
    }
}

const VALID: &str = r#"id = "acme-t1"
vendor = "Acme"
model = "T1"
reference = "Acme T1 manual, section Payload"

[[layouts]]
kind = "fixed"
fports = [1]

[[layouts.fields]]
quantity = "air_temperature"
type = "i16be"
byte = 0
scale = 0.1

[[examples]]
fport = 1
payload_hex = "00FA"
readings = [{ quantity = "air_temperature", value = 25.0 }]
"#;

fn load(text: &str) -> Result<Profile, Vec<ProfileError>> {
    Profile::from_toml(Path::new("profiles/acme-t1.toml"), text)
}

fn load_err(text: &str) -> Vec<String> {
    load(text).unwrap_err().iter().map(|e| e.to_string()).collect()
}

#[test]
fn every_bundled_profile_passes_its_examples() {
    let set = bundled();
    assert!(!set.is_empty());
    for p in set.iter() {
        assert_eq!(p.check_examples(), vec![], "{}", p.id());
        assert!(p.examples.len() >= 2, "{}: too few examples", p.id());
    }
}

#[test]
fn dragino_lht65_decodes_the_vendor_example() {
    let set = bundled();
    let p = set.get("dragino-lht65").expect("bundled");
    let bytes = [0xCB, 0xF6, 0x0B, 0x0D, 0x03, 0x76, 0x01, 0x0A, 0xDD, 0x7F, 0xFF];
    let d = p.decode_bytes(Some(2), &bytes).unwrap();
    let got: Vec<(&str, f64)> = d.values.iter().map(|v| (v.quantity.name(), v.value)).collect();
    assert_eq!(
        got,
        [("battery_voltage", 3.062), ("air_temperature", 28.29), ("relative_humidity", 88.6), ("probe_temperature", 27.81)]
    );
    assert!(d.warnings.is_empty());
    assert!(matches!(p.decode_bytes(Some(2), &bytes[..10]), Err(DecodeError::TooShort { needed: 11, got: 10, .. })));
    assert_eq!(set.ids(), {
        let mut ids = set.ids();
        ids.sort();
        ids
    });
}

#[test]
fn a_valid_profile_loads_and_runs_its_examples() {
    let p = load(VALID).unwrap();
    assert_eq!((p.id(), p.vendor(), p.model()), ("acme-t1", "Acme", "T1"));
    assert_eq!(p.check_examples(), vec![]);
    assert_eq!(p.quantities(), vec![Quantity::by_name("air_temperature").unwrap()]);
}

#[test]
fn unknown_quantity_is_reported_with_file_and_line() {
    let errors = load_err(&VALID.replace("quantity = \"air_temperature\"\ntype", "quantity = \"air_temp\"\ntype"));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("profiles/acme-t1.toml:11:"), "{}", errors[0]);
    assert!(errors[0].contains("unknown quantity \"air_temp\""), "{}", errors[0]);
}

#[test]
fn unknown_key_is_reported_with_file_and_line() {
    let errors = load_err(&VALID.replace("scale = 0.1", "scael = 0.1"));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("profiles/acme-t1.toml:14:"), "{}", errors[0]);
    assert!(errors[0].contains("scael"), "{}", errors[0]);
}

#[test]
fn bad_units_are_reported_with_file_and_line() {
    let unknown = load_err(&VALID.replace("scale = 0.1", "unit = \"°C\""));
    assert!(unknown[0].starts_with("profiles/acme-t1.toml:14:"), "{}", unknown[0]);
    assert!(unknown[0].contains("did you mean \"Cel\""), "{}", unknown[0]);
    let wrong_dimension = load_err(&VALID.replace("scale = 0.1", "unit = \"hPa\""));
    assert_eq!(wrong_dimension.len(), 1, "{wrong_dimension:?}");
    let e = &wrong_dimension[0];
    assert!(e.starts_with("profiles/acme-t1.toml:14:"), "{e}");
    assert!(e.contains("layouts[0].fields[0].unit") && e.contains("hPa") && e.contains("Cel"), "{e}");
}

#[test]
fn every_problem_of_a_file_is_reported() {
    let text = VALID
        .replace("id = \"acme-t1\"", "id = \"Acme_T1\"")
        .replace("reference = \"Acme T1 manual, section Payload\"", "reference = \"https://example.com/t1.pdf\"")
        .replace("fports = [1]", "fports = [1]\nmin_length = 1")
        .replace("payload_hex = \"00FA\"", "payload_hex = \"00F\"");
    let errors = load_err(&text);
    let joined = errors.join("\n");
    for expected in ["lower-case", "file name", "instead of linking", "min_length 1", "odd number"] {
        assert!(joined.contains(expected), "{expected} missing from\n{joined}");
    }
}

#[test]
fn example_mismatches_name_quantity_and_values() {
    let p = load(&VALID.replace("value = 25.0", "value = 25.1")).unwrap();
    let m = p.check_examples();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].example, 0);
    assert_eq!(m[0].message, "air_temperature: expected 25.1 Cel, decoded 25 Cel");
    let p = load(&VALID.replace("readings = [{ quantity = \"air_temperature\", value = 25.0 }]", "readings = []")).unwrap();
    assert_eq!(p.check_examples()[0].message, "air_temperature: decoded 25 Cel, not expected");
    let p =
        load(&VALID.replace("readings = [{ quantity = \"air_temperature\", value = 25.0 }]", "error = \"too short\"")).unwrap();
    assert!(p.check_examples()[0].message.contains("expected an error containing \"too short\""));
    let p = load(&VALID.replace("payload_hex = \"00FA\"", "payload_hex = \"00\"")).unwrap();
    assert!(p.check_examples()[0].message.contains("decoding failed: payload too short"));
}

#[test]
fn json_profiles_check_their_examples() {
    let text = r#"id = "acme-j1"
vendor = "Acme"
model = "J1"
reference = "Acme J1 MQTT interface description, section Messages"

[[layouts]]
kind = "json"

[[layouts.fields]]
quantity = "air_temperature"
pointer = "/env/t_f"
unit = "[degF]"

[[layouts.fields]]
quantity = "wind_speed"
pointer = "/wind"
unit = "km/h"

[[examples]]
payload_json = '{"env": {"t_f": 212}, "wind": 36}'
readings = [{ quantity = "air_temperature", value = 100 }, { quantity = "wind_speed", value = 10 }]

[[examples]]
payload_json = '{"env": {"t_f": "hot"}}'
error = "is a string"
"#;
    let p = Profile::from_toml(Path::new("acme-j1.toml"), text).unwrap();
    assert_eq!(p.check_examples(), vec![]);
    let d = p.decode_json(&serde_json::json!({"wind": 0})).unwrap();
    assert_eq!(d.values.len(), 1);
    assert_eq!(d.warnings, ["air_temperature: no value at JSON pointer /env/t_f"]);
}

#[test]
fn tolerance_is_relative_or_absolute() {
    assert!(close(1000.0, 1000.0009));
    assert!(!close(1000.0, 1000.002));
    assert!(close(0.0, 1e-10));
    assert!(!close(0.0, 1e-8));
}

#[test]
fn load_dir_collects_errors_of_all_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("acme-t1.toml"), VALID).unwrap();
    std::fs::write(dir.path().join("acme-t2.toml"), VALID).unwrap(); // id does not match the name
    std::fs::write(dir.path().join("acme-t3.toml"), "id = ").unwrap();
    std::fs::write(dir.path().join("README.md"), "not a profile").unwrap();
    std::fs::write(dir.path().join(".#acme-t1.toml"), "editor lock").unwrap();
    let errors = ProfileSet::load_dir(dir.path()).unwrap_err();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].to_string().contains("acme-t2.toml:1:6: id: id \"acme-t1\" must equal"), "{}", errors[0]);
    assert!(matches!(&errors[1], ProfileError::Parse { line: Some(1), .. }), "{}", errors[1]);

    std::fs::remove_file(dir.path().join("acme-t2.toml")).unwrap();
    std::fs::remove_file(dir.path().join("acme-t3.toml")).unwrap();
    let set = ProfileSet::load_dir(dir.path()).unwrap();
    assert_eq!(set.ids(), ["acme-t1"]);
    assert!(set.get("acme-t1").is_some() && set.get("acme-t2").is_none());

    std::fs::write(dir.path().join("acme-t1.toml"), VALID.replace("value = 25.0", "value = 24")).unwrap();
    let errors = ProfileSet::load_dir(dir.path()).unwrap_err();
    assert!(errors[0].to_string().contains("expected 24 Cel, decoded 25 Cel"), "{}", errors[0]);

    let missing = ProfileSet::load_dir(&dir.path().join("nope")).unwrap_err();
    assert!(matches!(&missing[0], ProfileError::Io { .. }));
}

#[test]
fn line_col_counts_characters() {
    assert_eq!(line_col("ab\ncd", 0), (1, 1));
    assert_eq!(line_col("ab\ncd", 4), (2, 2));
    assert_eq!(line_col("é\nx", 1), (1, 1));
    assert_eq!(line_col("x", 99), (1, 2));
}

#[test]
fn hex_allows_spaces_and_either_case() {
    assert_eq!(parse_hex("cb F6 0b"), Ok(vec![0xCB, 0xF6, 0x0B]));
    assert!(parse_hex("zz").is_err());
    assert!(parse_hex("é0").is_err());
}

/// xorshift64*: deterministic, so a failure is reproducible from the iteration number.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[test]
fn hostile_payloads_never_panic() {
    let set = bundled();
    let mut profiles: Vec<&Profile> = set.iter().map(|p| p.as_ref()).collect();
    let extra = load(VALID).unwrap();
    profiles.push(&extra);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut buf = [0u8; 64];
    let mut decoded = 0usize;
    for i in 0..100_000 {
        let len = (rng.next() % 65) as usize;
        for b in &mut buf[..len] {
            *b = rng.next() as u8;
        }
        let port = match rng.next() % 4 {
            0 => None,
            1 => Some(2),
            _ => Some(rng.next() as u8),
        };
        let p = profiles[i % profiles.len()];
        if let Ok(d) = p.decode_bytes(port, &buf[..len]) {
            decoded += 1;
            assert!(d.values.iter().all(|v| v.value.is_finite()));
        }
    }
    // The loop must exercise the decoding path, not only the length check.
    assert!(decoded > 1000, "{decoded}");
}
