//! Tests of the declarative decoder: types, fields, conditions, layout choice, compile errors.

use std::path::Path;

use super::field::{as_division, normalise_no_value};
use super::json::check_pointer;
use super::*;
use crate::profiles::format::{FieldType, ProfileFile};

const HEAD: &str = "id = \"test-device\"\nvendor = \"Test\"\nmodel = \"Device\"\nreference = \"none\"\n";

/// Compiles `[[layouts]]` text; panics with the issues if there are any.
fn layouts(body: &str) -> Layouts {
    let (l, issues) = try_layouts(body);
    assert!(issues.is_empty(), "{issues:#?}");
    l
}

fn try_layouts(body: &str) -> (Layouts, Vec<Issue>) {
    let file: ProfileFile = toml::from_str(&format!("{HEAD}{body}")).unwrap();
    let mut issues = Vec::new();
    let l = compile_layouts(&file.layouts, Path::new("."), &mut issues);
    (l, issues)
}

fn one_field(ty: &str, extra: &str) -> Layouts {
    layouts(&format!(
        "[[layouts]]\nkind = \"fixed\"\n[[layouts.fields]]\nquantity = \"air_temperature\"\nbyte = 0\ntype = \"{ty}\"\n{extra}\n"
    ))
}

fn value(l: &Layouts, bytes: &[u8]) -> Option<f64> {
    let d = l.decode_bytes(None, bytes).unwrap();
    assert!(d.warnings.is_empty(), "{:?}", d.warnings);
    d.values.first().map(|v| v.value)
}

#[test]
fn every_type_reads_its_bytes() {
    let cases: &[(&str, &[u8], f64)] = &[
        ("u8", &[0xFF], 255.0),
        ("i8", &[0xFF], -1.0),
        ("i8", &[0x80], -128.0),
        ("i8", &[0x7F], 127.0),
        ("u16be", &[0x12, 0x34], 4660.0),
        ("u16le", &[0x34, 0x12], 4660.0),
        ("i16be", &[0x80, 0x00], -32768.0),
        ("i16le", &[0x00, 0x80], -32768.0),
        ("i16be", &[0x7F, 0xFF], 32767.0),
        ("i16be", &[0xFF, 0x3F], -193.0),
        ("u24be", &[0xFF, 0xFF, 0xFE], 16_777_214.0),
        ("u24le", &[0x01, 0x02, 0x03], 197_121.0),
        ("i24be", &[0x80, 0x00, 0x00], -8_388_608.0),
        ("i24le", &[0xFF, 0xFF, 0xFF], -1.0),
        ("i24be", &[0x7F, 0xFF, 0xFF], 8_388_607.0),
        ("u32be", &[0xFF, 0xFF, 0xFF, 0xFF], 4_294_967_295.0),
        ("u32le", &[0x78, 0x56, 0x34, 0x12], 305_419_896.0),
        ("i32be", &[0x80, 0, 0, 0], -2_147_483_648.0),
        ("i32le", &[0xFE, 0xFF, 0xFF, 0xFF], -2.0),
        ("f32be", &[0x41, 0xC8, 0x00, 0x00], 25.0),
        ("f32le", &[0x00, 0x00, 0xC8, 0xC1], -25.0),
    ];
    for (ty, bytes, expected) in cases {
        assert_eq!(value(&one_field(ty, ""), bytes), Some(*expected), "{ty} {bytes:02X?}");
    }
}

#[test]
fn fields_read_at_their_byte() {
    let l = layouts(
        "[[layouts]]\nkind = \"fixed\"\n[[layouts.fields]]\nquantity = \"air_temperature\"\nbyte = 3\ntype = \"u16le\"\n",
    );
    assert_eq!(value(&l, &[9, 9, 9, 0x01, 0x02]), Some(513.0));
}

#[test]
fn mask_and_shift_extract_bitfields() {
    // Dragino battery: low 14 bits of a u16be, the top two are status.
    let l = one_field("u16be", "mask = 0x3FFF");
    assert_eq!(value(&l, &[0xCB, 0xF6]), Some(3062.0));
    let l = one_field("u16be", "mask = 0xC000\nshift = 14");
    assert_eq!(value(&l, &[0xCB, 0xF6]), Some(3.0));
    let l = one_field("u8", "shift = 4");
    assert_eq!(value(&l, &[0xA5]), Some(10.0));
}

#[test]
fn scale_offset_and_unit_apply_in_order() {
    let l = one_field("i16be", "scale = 0.01");
    assert_eq!(value(&l, &[0x0B, 0x0D]), Some(28.29));
    let l = one_field("u8", "scale = 0.5\noffset = -40");
    assert_eq!(value(&l, &[100]), Some(10.0));
    let l = one_field("u16be", "unit = \"[degF]\"\nscale = 0.1");
    assert_eq!(value(&l, &[0x08, 0x48]), Some(100.0)); // 2120 * 0.1 = 212 °F
    let l = layouts("[[layouts]]\nkind = \"fixed\"\n[[layouts.fields]]\nquantity = \"battery_voltage\"\nbyte = 0\ntype = \"u16be\"\nunit = \"mV\"\n");
    assert_eq!(value(&l, &[0x0B, 0xF6]), Some(3.062));
}

#[test]
fn no_value_skips_quietly() {
    let l = one_field("i16be", "no_value = [0x7FFF, 0x8000]");
    assert_eq!(value(&l, &[0x7F, 0xFF]), None);
    assert_eq!(value(&l, &[0x80, 0x00]), None);
    assert_eq!(value(&l, &[0x7F, 0xFE]), Some(32766.0));
    let l = one_field("i16be", "no_value = [-1]");
    assert_eq!(value(&l, &[0xFF, 0xFF]), None);
    let l = one_field("u16be", "mask = 0x3FFF\nno_value = [0x3FFF]");
    assert_eq!(value(&l, &[0xFF, 0xFF]), None);
    let l = one_field("f32be", "no_value = [0x7FC00000]");
    assert_eq!(value(&l, &[0x7F, 0xC0, 0, 0]), None);
}

#[test]
fn non_finite_floats_are_a_warning() {
    let l = one_field("f32be", "");
    let d = l.decode_bytes(Some(1), &[0x7F, 0x80, 0, 0]).unwrap();
    assert!(d.values.is_empty());
    assert_eq!(d.warnings.len(), 1, "{:?}", d.warnings);
    // Kept apart, for ingest to store as a bad reading rather than lose.
    assert_eq!(d.non_finite.len(), 1, "{d:?}");
    assert_eq!(d.non_finite[0].value, f64::INFINITY);
}

#[test]
fn conditions_select_fields() {
    let l = one_field("u8", "when = { byte = 1, equals = 1 }");
    assert_eq!(value(&l, &[5, 1]), Some(5.0));
    assert_eq!(value(&l, &[5, 2]), None);
    let l = one_field("u8", "when = { byte = 1, in = [2, 3] }");
    assert_eq!(value(&l, &[5, 3]), Some(5.0));
    assert_eq!(value(&l, &[5, 1]), None);
    let l = one_field("u8", "when = { byte = 1, mask = 0x80, equals = 0x80 }");
    assert_eq!(value(&l, &[5, 0x81]), Some(5.0));
    assert_eq!(value(&l, &[5, 0x7F]), None);
    // The condition byte counts towards the needed length.
    assert!(matches!(l.decode_bytes(None, &[5]), Err(DecodeError::TooShort { needed: 2, got: 1, .. })));
}

#[test]
fn truncated_payloads_are_errors() {
    let l = layouts(
        "[[layouts]]\nkind = \"fixed\"\nfports = [2]\nmin_length = 11\n[[layouts.fields]]\nquantity = \"air_temperature\"\nbyte = 2\ntype = \"i16be\"\n",
    );
    let err = l.decode_bytes(Some(2), &[0; 5]).unwrap_err();
    assert_eq!(err, DecodeError::TooShort { f_port: Some(2), needed: 11, got: 5 });
    assert_eq!(err.to_string(), "payload too short on fPort 2: needs 11 bytes, got 5");
    assert!(l.decode_bytes(Some(2), &[]).is_err());
    assert!(l.decode_bytes(Some(2), &[0; 11]).is_ok());
}

#[test]
fn layouts_are_chosen_by_fport() {
    let l = layouts(
        "[[layouts]]\nkind = \"fixed\"\nfports = [2]\n[[layouts.fields]]\nquantity = \"air_temperature\"\nbyte = 0\ntype = \"u8\"\n\
         [[layouts]]\nkind = \"fixed\"\nfports = [3, 4]\n[[layouts.fields]]\nquantity = \"relative_humidity\"\nbyte = 0\ntype = \"u8\"\n",
    );
    assert_eq!(l.decode_bytes(Some(2), &[7]).unwrap().values[0].quantity.name(), "air_temperature");
    assert_eq!(l.decode_bytes(Some(4), &[7]).unwrap().values[0].quantity.name(), "relative_humidity");
    let err = l.decode_bytes(Some(9), &[7]).unwrap_err();
    assert_eq!(err.to_string(), "no layout for fPort 9; this profile decodes fPorts 2, 3, 4");
    let err = l.decode_bytes(None, &[7]).unwrap_err();
    assert!(err.to_string().contains("without an fPort"), "{err}");
    assert_eq!(l.decode_json(&serde_json::json!({})).unwrap_err(), DecodeError::NoJsonLayout);
    assert_eq!(l.quantities().len(), 2);
}

#[test]
fn json_layouts_follow_pointers() {
    let l = layouts(
        "[[layouts]]\nkind = \"json\"\n\
         [[layouts.fields]]\nquantity = \"air_temperature\"\npointer = \"/t\"\nunit = \"[degF]\"\n\
         [[layouts.fields]]\nquantity = \"air_pressure\"\npointer = \"/p/0\"\nunit = \"Pa\"\n\
         [[layouts.fields]]\nquantity = \"relative_humidity\"\npointer = \"/h\"\nscale = 0.1\n",
    );
    let d = l.decode_json(&serde_json::json!({"t": 212, "p": [101325], "h": 455})).unwrap();
    let got: Vec<f64> = d.values.iter().map(|v| v.value).collect();
    assert_eq!(got, vec![100.0, 1013.25, 45.5]);
    let d = l.decode_json(&serde_json::json!({"t": 32, "h": null})).unwrap();
    assert_eq!(d.values.len(), 1);
    assert_eq!(d.warnings.len(), 2, "{:?}", d.warnings);
    let err = l.decode_json(&serde_json::json!({"t": "21.5"})).unwrap_err();
    assert_eq!(err.to_string(), "JSON value at /t (air_temperature) is a string, expected a number");
    assert_eq!(l.decode_bytes(Some(1), &[1]).unwrap_err(), DecodeError::NoBinaryLayout);
}

#[test]
fn compile_reports_every_problem() {
    let (_, issues) = try_layouts(
        "[[layouts]]\nkind = \"fixed\"\nfports = [0]\nmin_length = 1\n\
         [[layouts.fields]]\nquantity = \"air_temperature\"\nbyte = 0\ntype = \"i16be\"\nmask = 0xFF\nunit = \"mV\"\n\
         [[layouts.fields]]\nquantity = \"air_temperature\"\nbyte = 2\ntype = \"u8\"\nno_value = [256]\npointer = \"/x\"\n\
         [[layouts.fields]]\nquantity = \"relative_humidity\"\nbyte = 3\ntype = \"u8\"\nwhen = { byte = 0 }\nscale = 0\n",
    );
    let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
    for expected in [
        "layouts[0].fports",
        "layouts[0].fields[0].mask",
        "layouts[0].fields[0].unit",
        "layouts[0].fields[1].pointer",
        "layouts[0].fields[1].no_value",
        "layouts[0].fields[2].when",
        "layouts[0].fields[2].scale",
        "layouts[0].fields[1].quantity",
    ] {
        assert!(paths.contains(&expected), "{expected} missing from {issues:#?}");
    }
    assert!(issues.iter().all(|i| i.span.is_some()), "{issues:#?}");
}

#[test]
fn kind_specific_keys_and_unreachable_layouts_are_refused() {
    let (_, issues) = try_layouts(
        "[[layouts]]\nkind = \"json\"\nfports = [1]\n[[layouts.fields]]\nquantity = \"air_temperature\"\npointer = \"t\"\nbyte = 1\n",
    );
    let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
    assert_eq!(paths, ["layouts[0].fports", "layouts[0].fields[0].byte", "layouts[0].fields[0].pointer"], "{issues:#?}");
    let (_, issues) = try_layouts(
        "[[layouts]]\nkind = \"fixed\"\n[[layouts.fields]]\nquantity = \"air_temperature\"\nbyte = 0\ntype = \"u8\"\n\
         [[layouts]]\nkind = \"fixed\"\nfports = [5]\n[[layouts.fields]]\nquantity = \"air_temperature\"\nbyte = 0\ntype = \"u8\"\n",
    );
    assert_eq!(issues.len(), 1, "{issues:#?}");
    assert!(issues[0].message.contains("never used"));
}

#[test]
fn sentinels_normalise_per_type() {
    assert_eq!(normalise_no_value(&[0x8000, -1], FieldType::I16be, 0), Ok(vec![-32768, -1]));
    assert!(normalise_no_value(&[0x10000], FieldType::I16be, 0).is_err());
    assert!(normalise_no_value(&[0x4000], FieldType::U16be, 0x3FFF).is_err());
    assert_eq!(normalise_no_value(&[0xFFFF_FFFF], FieldType::F32le, 0), Ok(vec![0xFFFF_FFFF]));
}

#[test]
fn reciprocal_scales_divide() {
    assert_eq!(as_division(0.01), (1.0, 100.0));
    assert_eq!(as_division(0.1), (1.0, 10.0));
    assert_eq!(as_division(-0.5), (1.0, -2.0));
    assert_eq!(as_division(0.3), (0.3, 1.0));
    assert_eq!(as_division(10.0), (10.0, 1.0));
}

#[test]
fn pointers_are_checked() {
    assert!(check_pointer("").is_ok());
    assert!(check_pointer("/a~0b/c~1d/0").is_ok());
    assert!(check_pointer("a").is_err());
    assert!(check_pointer("/a~2").is_err());
    assert!(check_pointer("/a~").is_err());
}

#[test]
fn header_bytes_choose_layouts() {
    let l = layouts(
        "[[layouts]]\nkind = \"fixed\"\nfports = [6]\nmatch = { byte = 0, equals = 1 }\n[[layouts.fields]]\nquantity = \"air_temperature\"\nbyte = 1\ntype = \"i8\"\n\
         [[layouts]]\nkind = \"fixed\"\nfports = [6]\nmatch = { byte = 0, in = [2, 3] }\n[[layouts.fields]]\nquantity = \"relative_humidity\"\nbyte = 1\ntype = \"u8\"\n\
         [[layouts]]\nkind = \"ignore\"\nfports = [6]\nmatch = { byte = 0, mask = 0x80, equals = 0x80 }\n",
    );
    assert_eq!(l.decode_bytes(Some(6), &[1, 0xFF]).unwrap().values[0].value, -1.0);
    assert_eq!(l.decode_bytes(Some(6), &[3, 0xFF]).unwrap().values[0].quantity.name(), "relative_humidity");
    assert_eq!(l.decode_bytes(Some(6), &[0x81]).unwrap(), Decoded::default());
    assert_eq!(l.decode_bytes(Some(6), &[4, 0]).unwrap_err(), DecodeError::NoLayoutMatches { f_port: Some(6) });
    assert!(matches!(l.decode_bytes(Some(6), &[]), Err(DecodeError::TooShort { needed: 1, got: 0, .. })));
    // A layout with `match` does not hide later layouts of the same fPort.
    assert!(l.decode_bytes(Some(7), &[1]).is_err());
}

#[test]
fn bcd_and_formula_fields() {
    let l = one_field("bcd16be", "scale = 0.1");
    assert_eq!(value(&l, &[0x12, 0x34]), Some(123.4));
    let d = l.decode_bytes(None, &[0x1A, 0x34]).unwrap();
    assert_eq!(d.warnings, ["air_temperature: value at byte 0 is not a valid BCD number"]);
    let l = one_field("bcd8", "no_value = [0xFF]");
    assert_eq!(value(&l, &[0xFF]), None);
    let l = one_field("u16be", "formula = \"175 * x / 65535 - 45\"");
    assert_eq!(value(&l, &[0x64, 0xA0]), Some(175.0 * 25760.0 / 65535.0 - 45.0));
    let l = one_field("u8", "formula = \"1 / (x - 1)\"");
    assert_eq!(l.decode_bytes(None, &[1]).unwrap().warnings.len(), 1);
    let (_, issues) = try_layouts("[[layouts]]\nkind = \"fixed\"\n[[layouts.fields]]\nquantity = \"air_temperature\"\nbyte = 0\ntype = \"u8\"\nscale = 2\nformula = \"x ^ 2\"\n");
    let messages: Vec<&str> = issues.iter().map(|i| i.message.as_str()).collect();
    assert!(messages.iter().any(|m| m.contains("not both")) && messages.iter().any(|m| m.contains("'^'")), "{issues:#?}");
}

#[test]
fn oversized_payloads_are_errors() {
    let l = one_field("u8", "");
    let err = l.decode_bytes(None, &[0; 243]).unwrap_err();
    assert_eq!(err.to_string(), "payload too long: at most 242 bytes, got 243");
    assert!(l.decode_bytes(None, &[0; 242]).is_ok());
    let l = layouts("[[layouts]]\nkind = \"fixed\"\nmax_length = 4\n[[layouts.fields]]\nquantity = \"air_temperature\"\nbyte = 0\ntype = \"u8\"\n");
    assert!(matches!(l.decode_bytes(None, &[0; 5]), Err(DecodeError::TooLong { max: 4, got: 5, .. })));
}
