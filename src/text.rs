//! Times and numbers written byte for byte as chrono and `core::fmt` write them, with less
//! machinery: a burst of flagged uplinks writes several into nearly every reading's reason (a
//! spike's explanation names two numbers, a time and a limit a side), and every reading sent to
//! InfluxDB is a number in a line.
//!
//! chrono writes a `DateTime<Utc>` through a `Display` for each of its parts (date, time,
//! fraction, zone), each through `core::fmt`: about a thousand instructions a time
//! (BENCHMARKS.md, "Spike explanations written with less machinery"). A reading's time is a
//! whole millisecond, which is written here directly; any other time (a finer fraction, a leap
//! second, a year outside 0–9999) is left to chrono. A float is written from its thousandths
//! (as `{}` when it is a whole number of them, as `{:.3}` when rounding them is certain) where
//! that is certain to give core's text, and by core otherwise.

use std::fmt;

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};

/// How a time is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// As chrono's `Display`: `2026-12-02 20:00:25.924 UTC`.
    Display,
    /// As chrono's `to_rfc3339_opts(SecondsFormat::AutoSi, true)`: `2026-12-02T20:00:25.924Z`.
    Rfc3339,
}

/// A time to write in a [`Style`].
#[derive(Clone, Copy, Debug)]
pub struct Stamp(pub DateTime<Utc>, pub Style);

impl Stamp {
    /// Write the text to `out` (for a `String`, without the formatting machinery on the
    /// common path, as [`Shortest::write_to`]).
    pub fn write_to(self, f: &mut impl fmt::Write) -> fmt::Result {
        let Stamp(t, style) = self;
        // The fields of the naive time: a `DateTime`'s own getters add its (zero) offset each.
        let n = t.naive_utc();
        let (year, nanos) = (n.year(), n.nanosecond());
        // chrono keeps a leap second as a fraction of a second or more.
        if !(0..=9999).contains(&year) || nanos % 1_000_000 != 0 || nanos >= 1_000_000_000 {
            return match style {
                Style::Display => write!(f, "{t}"),
                Style::Rfc3339 => f.write_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
            };
        }
        let mut text = *b"0000-00-00 00:00:00.000";
        let mut two = |at: usize, n: u32| {
            text[at] = b'0' + (n / 10 % 10) as u8;
            text[at + 1] = b'0' + (n % 10) as u8;
        };
        let year = year as u32;
        two(0, year / 100);
        two(2, year % 100);
        two(5, n.month());
        two(8, n.day());
        two(11, n.hour());
        two(14, n.minute());
        two(17, n.second());
        let ms = nanos / 1_000_000;
        text[20] = b'0' + (ms / 100) as u8;
        text[21] = b'0' + (ms / 10 % 10) as u8;
        text[22] = b'0' + (ms % 10) as u8;
        if style == Style::Rfc3339 {
            text[10] = b'T';
        }
        // A whole second is written without a fraction, as chrono does.
        let written = if ms == 0 { &text[..19] } else { &text[..] };
        // Only ASCII digits and separators were written.
        f.write_str(std::str::from_utf8(written).map_err(|_| fmt::Error)?)?;
        f.write_str(match style {
            Style::Display => " UTC",
            Style::Rfc3339 => "Z",
        })
    }
}

impl fmt::Display for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_to(f)
    }
}

/// A float as `{}` writes it: the shortest text that reads back as the same number, never
/// with an exponent.
#[derive(Clone, Copy, Debug)]
pub struct Shortest(pub f64);

impl Shortest {
    /// Write the text to `out`; for a `String` this costs no formatting machinery on the
    /// common path (`write!` with `{}` goes through it).
    pub fn write_to(self, out: &mut impl fmt::Write) -> fmt::Result {
        let v = self.0;
        // A sensor's value is mostly a whole number of thousandths. Then, below 10^12, the
        // thousandths written out read back as the number (`n / 1000` is one correctly rounded
        // division, as reading the text is) and no shorter text does (the number's neighbours
        // lie closer than a thousandth), so they are core's text too.
        let scaled = (v * 1000.0).round();
        if v.abs() < 1e12 && scaled / 1000.0 == v && !(v == 0.0 && v.is_sign_negative()) {
            let n = scaled.abs() as u64;
            let mut digits = itoa::Buffer::new();
            if v < 0.0 {
                out.write_str("-")?;
            }
            out.write_str(digits.format(n / 1000))?;
            let k = n % 1000;
            if k != 0 {
                let digit = |d: u64| b'0' + (d % 10) as u8;
                let fraction = [b'.', digit(k / 100), digit(k / 10), digit(k)];
                // Trailing zeros are not written.
                let kept = if k % 10 != 0 {
                    4
                } else if k % 100 != 0 {
                    3
                } else {
                    2
                };
                return out.write_str(std::str::from_utf8(&fraction[..kept]).map_err(|_| fmt::Error)?);
            }
            return Ok(());
        }
        write!(out, "{v}")
    }
}

impl fmt::Display for Shortest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_to(f)
    }
}

/// A float as `{:.3}` writes it: rounded to thousandths.
#[derive(Clone, Copy, Debug)]
pub struct Thousandths(pub f64);

impl Thousandths {
    /// Write the text to `out` (as [`Shortest::write_to`]).
    pub fn write_to(self, f: &mut impl fmt::Write) -> fmt::Result {
        let v = self.0;
        let scaled = v * 1000.0;
        // Below 10^12 thousandths the product is within 2^-53 of itself (10^-4) of the exact
        // one: unless it lies that near half-way between two integers, both round to the same.
        if v.is_sign_positive() && scaled < 1e12 {
            let rounded = scaled.round();
            if (scaled - rounded).abs() < 0.499 {
                let n = rounded as u64;
                let mut digits = itoa::Buffer::new();
                f.write_str(digits.format(n / 1000))?;
                let k = n % 1000;
                let digit = |d: u64| b'0' + (d % 10) as u8;
                let fraction = [b'.', digit(k / 100), digit(k / 10), digit(k)];
                return f.write_str(std::str::from_utf8(&fraction).map_err(|_| fmt::Error)?);
            }
        }
        write!(f, "{v:.3}")
    }
}

impl fmt::Display for Thousandths {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_to(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, TimeZone};

    fn both(t: DateTime<Utc>) {
        assert_eq!(Stamp(t, Style::Display).to_string(), t.to_string(), "{t:?} as Display");
        assert_eq!(Stamp(t, Style::Rfc3339).to_string(), t.to_rfc3339_opts(SecondsFormat::AutoSi, true), "{t:?} as RFC 3339");
    }

    #[test]
    fn times_are_written_as_chrono_writes_them() {
        // Whole seconds, milliseconds with leading and trailing zeros, the ends of the years
        // written directly and the first ones beyond them.
        for ms in [
            0,
            1,
            10,
            100,
            999,
            1_000,
            1_764_705_625_924,
            1_764_705_626_000,
            1_764_705_626_090,
            951_782_400_005,     // 2000-02-29
            -62_167_219_200_000, // 0000-01-01
            -62_167_219_200_001, // the millisecond before: year -1
            253_402_300_799_999, // 9999-12-31 23:59:59.999
            253_402_300_800_000, // 10000-01-01
        ] {
            both(DateTime::from_timestamp_millis(ms).unwrap());
        }
        // Every millisecond of a pseudo-random walk over four centuries.
        let mut ms: i64 = 946_684_800_000;
        for i in 0..20_000i64 {
            ms = ms.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407 + i);
            let t = DateTime::from_timestamp_millis(ms.rem_euclid(12_600_000_000_000) + 946_684_800_000).unwrap();
            both(t);
        }
    }

    /// Pseudo-random bits (a 64-bit LCG's high half twice), reproducible.
    fn floats(n: usize) -> impl Iterator<Item = f64> {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            x >> 32
        };
        (0..n).map(move |i| match i % 4 {
            // Any bit pattern: NaN, infinities, subnormals, huge and tiny numbers.
            0 => f64::from_bits(next() << 32 | next()),
            // Decimals as sensors send them: hundredths and thousandths, whole numbers.
            1 => (next() % 2_000_000) as f64 / 100.0 - 10_000.0,
            2 => (next() % 2_000_000) as f64 / 1000.0,
            // Halves of thousandths, where rounding is closest to a tie.
            _ => ((next() % 2_000_000) as f64 + 0.5) / 1000.0,
        })
    }

    #[test]
    fn floats_are_written_as_core_writes_them() {
        let edges = [
            0.0,
            -0.0,
            1.0,
            -1.0,
            0.1,
            0.3,
            10.0,
            0.0005,
            0.0015,
            2.0005,
            999_999_999.999_5,
            999_999_999.999_4,
            1e12,
            1e15,
            1e16,
            1e21,
            1e-5,
            1e-7,
            f64::MAX,
            f64::MIN_POSITIVE,
            5e-324,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ];
        for v in edges.into_iter().chain(floats(100_000)) {
            assert_eq!(Shortest(v).to_string(), format!("{v}"), "{v:e} ({:#x}) shortest", v.to_bits());
            let mut direct = String::from("x");
            Shortest(v).write_to(&mut direct).unwrap();
            assert_eq!(direct, format!("x{v}"), "{v:e} written straight to a string");
            assert_eq!(Thousandths(v).to_string(), format!("{v:.3}"), "{v:e} ({:#x}) to thousandths", v.to_bits());
        }
    }

    #[test]
    fn finer_times_and_leap_seconds_are_left_to_chrono() {
        let micros = Utc.timestamp_opt(1_764_705_625, 924_500_000).unwrap();
        let nanos = Utc.timestamp_opt(1_764_705_625, 924_000_001).unwrap();
        let leap = NaiveDate::from_ymd_opt(2016, 12, 31).unwrap().and_hms_milli_opt(23, 59, 59, 1_500).unwrap().and_utc();
        for t in [micros, nanos, leap] {
            both(t);
        }
        assert_eq!(Stamp(leap, Style::Display).to_string(), "2016-12-31 23:59:60.500 UTC");
    }
}
