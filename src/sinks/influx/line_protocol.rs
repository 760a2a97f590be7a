//! InfluxDB line protocol: one reading as one line, the form in which the spool keeps readings
//! and the writer sends them.

use std::sync::LazyLock;

use crate::devices::Device;
use crate::model::{Quantity, Reading};
use crate::text::Shortest;

/// Per quantity, what follows a line's device tags up to its value: `,unit=Cel value=` (or
/// ` value=` for a quantity without a unit), written in one piece.
static UNIT_VALUE: LazyLock<Vec<String>> = LazyLock::new(|| {
    Quantity::all()
        .map(|q| match q.unit() {
            "" => " value=".to_owned(),
            unit => format!(",unit={unit} value="),
        })
        .collect()
});

/// Append one reading as a line-protocol line (no newline) to `out`.
pub fn write_line(r: &Reading, device: &Device, out: &mut String) {
    let mut tags = String::with_capacity(96);
    device_tags(r.device.as_str(), device, &mut tags);
    let mut time = String::with_capacity(20);
    push_int(&mut time, r.time.timestamp_millis());
    write_line_tagged(r, &tags, &time, out);
}

/// The tags a device gives each of its lines, up to the unit (`,device=…,district=…,owner=…,profile=…`),
/// escaped: the same for every reading of an uplink, so they are written once.
pub fn device_tags(id: &str, device: &Device, out: &mut String) {
    // Tag keys in sorted order, as InfluxDB recommends.
    tag(out, "device", id);
    tag(out, "district", &device.district);
    tag(out, "owner", &device.owner);
    tag(out, "profile", &device.profile);
}

/// Append one reading as a line to `out`, with the device's tags as [`device_tags`] wrote them
/// and its time in milliseconds as [`push_int`] wrote it (an uplink's readings share both).
/// Returns how long the line's series is (measurement and tags): the first part of [`point`]
/// when no backslash is in it (measurement names and units have none; see the tests).
pub fn write_line_tagged(r: &Reading, device_tags: &str, time_ms: &str, out: &mut String) -> usize {
    let start = out.len();
    // Quantity names are CF-style identifiers: nothing to escape in a measurement name.
    out.push_str(r.quantity.name());
    out.push_str(device_tags);
    // Units need no escaping either (see the tests). `value` without an `i` suffix is always
    // a float, even when it prints as "28": one type per field, whatever the decoder produced.
    let unit_value = &UNIT_VALUE[r.quantity.index()];
    out.push_str(unit_value);
    let series = out.len() - start - " value=".len();
    // As `{}` writes it (`Shortest`: whole thousandths directly, anything else by core).
    let _ = Shortest(r.value).write_to(out);
    // A flag is one digit.
    out.push_str(",quality=");
    out.push(char::from(b'0' + r.flag.to_byte()));
    out.push_str("i ");
    out.push_str(time_ms);
    series
}

/// What makes a line a point of its own: its series (measurement and tags, up to the first
/// space not escaped by a backslash) and its time (after the last space). Two lines with
/// different points never overwrite each other, so the order they are written in is free.
pub fn point(line: &[u8]) -> (&[u8], &[u8]) {
    // A space is escaped when an odd run of backslashes comes right before it (each backslash
    // escapes the character after it, another backslash included).
    let escaped = |at: usize| line[..at].iter().rev().take_while(|&&b| b == b'\\').count() % 2 == 1;
    let i = memchr::memchr_iter(b' ', line).find(|&at| !escaped(at)).unwrap_or(line.len());
    let series = &line[..i];
    let time = memchr::memrchr(b' ', line).filter(|&t| t >= i).map_or(&line[line.len()..], |t| &line[t + 1..]);
    (series, time)
}

/// A hash of a line's [`point`]: equal points hash equal; different ones collide rarely,
/// which only makes two batches go one after the other.
pub fn point_hash(line: &[u8]) -> u32 {
    let (series, time) = point(line);
    hash_point(series, time)
}

/// [`point_hash`] of a line whose point is known: `series` and `time` as [`point`] finds them.
pub fn hash_point(series: &[u8], time: &[u8]) -> u32 {
    use std::hash::{Hash, Hasher};
    let mut h = rustc_hash::FxHasher::default();
    series.hash(&mut h);
    time.hash(&mut h);
    let h = h.finish();
    (h ^ (h >> 32)) as u32
}

/// An integer in decimal, without going through the formatting machinery.
pub fn push_int(out: &mut String, n: i64) {
    out.push_str(itoa::Buffer::new().format(n));
}

fn tag(out: &mut String, key: &str, value: &str) {
    // Line protocol has no empty tag values; a missing tag is the way to say "none".
    if value.is_empty() {
        return;
    }
    out.push(',');
    out.push_str(key);
    out.push('=');
    // Copy the runs between characters that need care in one go (all of them are ASCII, so a
    // byte index is always a character boundary); most values have none.
    let mut from = 0;
    for (i, b) in value.bytes().enumerate() {
        match b {
            b',' | b'=' | b' ' => {
                out.push_str(&value[from..i]);
                out.push('\\');
                out.push(b as char);
                from = i + 1;
            }
            // A newline would end the line; it has no place in a tag.
            b'\n' | b'\r' => {
                out.push_str(&value[from..i]);
                out.push(' ');
                from = i + 1;
            }
            _ => {}
        }
    }
    out.push_str(&value[from..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DeviceId, QualityFlag, Quantity};

    fn device(district: &str) -> Device {
        let toml = format!(
            "id = \"d1\"\nname = \"n\"\nprofile = \"dragino-lht65\"\nlat = 1.0\nlon = 2.0\ndistrict = \"{district}\"\nowner = \"Umweltamt\"\nlicence = \"dl-by-de/2.0\"\nvisibility = \"open\"\n"
        );
        toml::from_str(&toml).unwrap()
    }

    fn reading(value: f64, flag: QualityFlag) -> Reading {
        Reading {
            device: DeviceId::parse("d1").unwrap(),
            quantity: Quantity::by_name("air_temperature").unwrap(),
            value,
            time: chrono::DateTime::from_timestamp_millis(1_735_689_600_250).unwrap(),
            flag,
            reason: Default::default(),
        }
    }

    #[test]
    fn lines_carry_tags_float_value_integer_quality_and_ms_time() {
        let mut line = String::new();
        write_line(&reading(28.0, QualityFlag::Suspect), &device("Neustadt Nord, Ost"), &mut line);
        assert_eq!(
            line,
            "air_temperature,device=d1,district=Neustadt\\ Nord\\,\\ Ost,owner=Umweltamt,profile=dragino-lht65,unit=Cel value=28,quality=1i 1735689600250"
        );
        let mut line = String::new();
        write_line(&reading(-3.062, QualityFlag::Good), &device(""), &mut line);
        assert!(line.starts_with("air_temperature,device=d1,owner=Umweltamt,"), "{line}");
        assert!(line.contains(" value=-3.062,quality=0i "), "{line}");
    }

    #[test]
    fn measurement_names_and_units_need_no_escaping() {
        // `write_line_tagged` writes them as they are and counts on no backslash in them.
        for q in crate::model::Quantity::all() {
            for text in [q.name(), q.unit()] {
                assert!(!text.contains(['\\', ' ', ',', '=', '\n', '"']), "{text:?}");
            }
        }
    }

    #[test]
    fn integers_print_as_decimal_including_zero_negative_and_extremes() {
        for n in [0, 7, -7, 10, 1_735_689_600_250, -62_135_596_800_000, i64::MAX, i64::MIN] {
            let mut s = String::new();
            push_int(&mut s, n);
            assert_eq!(s, n.to_string());
        }
    }

    #[test]
    fn tag_values_are_escaped_around_multibyte_characters() {
        let mut line = String::new();
        write_line(&reading(1.0, QualityFlag::Good), &device("Süd=Ost, Straße\\nÄ\\r"), &mut line);
        assert!(line.contains(",district=Süd\\=Ost\\,\\ Straße Ä ,owner="), "{line}");
        let mut line = String::new();
        write_line(&reading(1.0, QualityFlag::Good), &device(" "), &mut line);
        assert!(line.contains(",district=\\ ,owner="), "{line}");
    }

    #[test]
    fn a_point_is_its_series_and_time_whatever_its_value() {
        let line = |value, flag, district| {
            let mut line = String::new();
            write_line(&reading(value, flag), &device(district), &mut line);
            line
        };
        let a = line(28.0, QualityFlag::Suspect, "Neustadt Nord, Ost");
        let (series, time) = point(a.as_bytes());
        assert_eq!(
            series,
            b"air_temperature,device=d1,district=Neustadt\\ Nord\\,\\ Ost,owner=Umweltamt,profile=dragino-lht65,unit=Cel"
        );
        assert_eq!(time, b"1735689600250");
        assert_eq!(point(line(-1.5, QualityFlag::Good, "Neustadt Nord, Ost").as_bytes()), (series, time));
        assert_ne!(point(line(28.0, QualityFlag::Suspect, "Neustadt Nord").as_bytes()).0, series);
        // Whatever the bytes, an answer inside the line.
        for odd in [&b""[..], b"m", b"m\\", b"m\\ x", b"m v=1", b" ", b"a b c d"] {
            let (s, t) = point(odd);
            assert!(s.len() + t.len() <= odd.len(), "{odd:?}");
        }
        assert_eq!(point(b"m v=1 5"), (&b"m"[..], &b"5"[..]));
        assert_eq!(point(b"m\\ x v=1 9"), (&b"m\\ x"[..], &b"9"[..]));
        // An escaped backslash before a space leaves the space unescaped.
        assert_eq!(point(b"m\\\\ v=1 9"), (&b"m\\\\"[..], &b"9"[..]));
    }

    #[test]
    fn the_series_ends_where_a_left_to_right_reading_of_escapes_finds_a_bare_space() {
        // The reading the line-protocol grammar describes: a backslash takes the byte after it.
        fn by_escapes(line: &[u8]) -> usize {
            let mut i = 0;
            while i < line.len() && line[i] != b' ' {
                i += if line[i] == b'\\' { 2 } else { 1 };
            }
            i.min(line.len())
        }
        // Every line of up to 7 bytes from these four.
        let alphabet = [b'a', b' ', b'\\', b','];
        for len in 0..=7u32 {
            for n in 0..4usize.pow(len) {
                let line: Vec<u8> = (0..len).map(|k| alphabet[n / 4usize.pow(k) % 4]).collect();
                assert_eq!(point(&line).0.len(), by_escapes(&line), "{:?}", String::from_utf8_lossy(&line));
            }
        }
    }
}
