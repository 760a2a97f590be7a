//! Fields read from bytes: their compiled form, reading them from a payload (integers of every
//! width and order, bitfields, floats, BCD, sentinels, conditions) and scaling their values
//! (scale and offset or a formula, then the unit).

use std::ops::Range;

use toml::Spanned;

use super::types::{ByteSet, Decoded, DecodedValue, Issues};
use crate::model::Quantity;
use crate::profiles::format::{Condition, FieldSpec, FieldType};
use crate::profiles::formula::Formula;
use crate::profiles::units::{Conversion, Unit};

/// A value read from bytes at a fixed position (of the payload, a channel or a group).
#[derive(Debug)]
pub(crate) struct FixedField {
    pub quantity: Quantity,
    ty: FieldType,
    pub byte: usize,
    /// All ones of the type's width when the profile gives no mask.
    mask: u64,
    shift: u32,
    /// Normalised at load time: signed values for signed types, bit patterns for floats.
    no_value: Vec<i64>,
    when: Option<ByteTest>,
    scaling: Scaling,
}

impl FixedField {
    /// The first byte after the last one this field (or its condition) reads.
    pub fn end(&self) -> usize {
        let end = self.byte + self.ty.width();
        self.when.map_or(end, |t| end.max(t.byte + 1))
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct ByteTest {
    pub byte: usize,
    mask: u8,
    values: ByteSet,
}

impl ByteTest {
    /// `None` when the payload has no byte at the tested position.
    pub fn matches(&self, bytes: &[u8]) -> Option<bool> {
        bytes.get(self.byte).map(|b| self.values.contains(b & self.mask))
    }
}

/// `conversion(arith(raw))`: the profile's scale and offset (or formula), then the unit.
/// A scale of `1/n` is kept as a division by `n` so that `2829 / 100` gives the double nearest
/// 28.29, as the vendor's own decoder does, rather than `2829 * 0.01 = 28.290000000000003`.
#[derive(Debug, Clone)]
pub(crate) struct Scaling {
    mul: f64,
    div: f64,
    add: f64,
    formula: Option<Formula>,
    conversion: Conversion,
}

impl Scaling {
    pub fn apply(&self, raw: f64) -> f64 {
        let v = match &self.formula {
            Some(f) => f.eval(raw),
            None => raw * self.mul / self.div + self.add,
        };
        self.conversion.apply(v)
    }
}

/// What reading one field from bytes gave.
pub(crate) enum FieldRead {
    Value(f64),
    /// A "no reading" sentinel, or the field's condition is false: nothing to report.
    Skip,
    /// Bytes were there but are not a number (a bad BCD digit).
    Warn(&'static str),
    /// A float sent as NaN or infinity (and not listed in `no_value`), or a scale or formula
    /// that made the value so (division by zero): stored as a reading flagged bad.
    NotFinite(f64),
    /// The bytes end before the field does.
    Short,
}

impl FixedField {
    pub fn read(&self, bytes: &[u8]) -> FieldRead {
        if let Some(test) = &self.when {
            match test.matches(bytes) {
                None => return FieldRead::Short,
                Some(false) => return FieldRead::Skip,
                Some(true) => {}
            }
        }
        let Some(bits) = read_bits(self.ty, bytes, self.byte) else {
            return FieldRead::Short;
        };
        let raw = if self.ty.is_float() {
            if self.no_value.contains(&(bits as i64)) {
                return FieldRead::Skip;
            }
            f64::from(f32::from_bits(bits as u32))
        } else if self.ty.is_signed() {
            let unused = 64 - self.ty.bits();
            let signed = ((bits << unused) as i64) >> unused;
            if self.no_value.contains(&signed) {
                return FieldRead::Skip;
            }
            signed as f64
        } else if self.ty.is_bcd() {
            if self.no_value.contains(&(bits as i64)) {
                return FieldRead::Skip;
            }
            match bcd(bits, self.ty.width()) {
                Some(v) => v as f64,
                None => return FieldRead::Warn("is not a valid BCD number"),
            }
        } else {
            let v = (bits & self.mask) >> self.shift;
            if self.no_value.contains(&(v as i64)) {
                return FieldRead::Skip;
            }
            v as f64
        };
        let value = self.scaling.apply(raw);
        if value.is_finite() {
            FieldRead::Value(value)
        } else {
            FieldRead::NotFinite(value)
        }
    }

    /// Decodes this field from `bytes` into `out`; `origin` is the position of `bytes[0]` in the
    /// payload, for warnings. `Err(())` when the bytes end first.
    pub fn decode_into(&self, bytes: &[u8], origin: usize, out: &mut Decoded) -> Result<(), ()> {
        match self.read(bytes) {
            FieldRead::Value(value) => out.values.push(DecodedValue { quantity: self.quantity, value }),
            FieldRead::Skip => {}
            // Not a reading, but worth telling the operator: the sensor sent something its
            // documentation does not describe.
            FieldRead::Warn(what) => out.warnings.push(format!("{}: value at byte {} {what}", self.quantity, origin + self.byte)),
            FieldRead::NotFinite(value) => {
                out.warnings.push(format!(
                    "{}: value at byte {} is {value}, not a finite number",
                    self.quantity,
                    origin + self.byte
                ));
                out.non_finite.push(DecodedValue { quantity: self.quantity, value });
            }
            FieldRead::Short => return Err(()),
        }
        Ok(())
    }
}

/// Packed decimal digits, most significant first; `None` if a nibble is above 9.
pub(super) fn bcd(bits: u64, width: usize) -> Option<u64> {
    let mut v = 0u64;
    for i in (0..width * 2).rev() {
        let digit = (bits >> (i * 4)) & 0xF;
        if digit > 9 {
            return None;
        }
        v = v * 10 + digit;
    }
    Some(v)
}

/// The unsigned integer of `ty`'s width at `at`, or `None` when the payload ends first.
pub(crate) fn read_bits(ty: FieldType, bytes: &[u8], at: usize) -> Option<u64> {
    let end = at.checked_add(ty.width())?;
    let slice = bytes.get(at..end)?;
    let fold_be = |acc: u64, b: &u8| (acc << 8) | u64::from(*b);
    Some(if ty.is_big_endian() || ty.width() == 1 { slice.iter().fold(0, fold_be) } else { slice.iter().rev().fold(0, fold_be) })
}

/// Report each of `keys` that `f` sets although it has no meaning for this kind of field.
pub(crate) fn reject_keys(f: &FieldSpec, keys: &[&str], span: Option<Range<usize>>, path: &str, why: &str, issues: &mut Issues) {
    let set = [
        ("byte", f.byte.is_some()),
        ("type", f.ty.is_some()),
        ("mask", f.mask.is_some()),
        ("shift", f.shift.is_some()),
        ("no_value", f.no_value.is_some()),
        ("when", f.when.is_some()),
        ("channel", f.channel.is_some()),
        ("pointer", f.pointer.is_some()),
    ];
    for (key, present) in set {
        if present && keys.contains(&key) {
            issues.push(span.clone(), format!("{path}.{key}"), format!("`{key}` does not apply {why}"));
        }
    }
}

/// Compiles a field read from bytes (in a `fixed` layout, a TLV channel or a flags group).
pub(crate) fn compile_fixed_field(field: &Spanned<FieldSpec>, path: &str, issues: &mut Issues) -> Option<FixedField> {
    let span = Some(field.span());
    let f = field.get_ref();
    let before = issues.list.len();
    reject_keys(f, &["pointer", "channel"], span.clone(), path, "here; a binary field is read with `byte` and `type`", issues);
    let Some(ty) = f.ty.as_ref().map(|t| *t.get_ref()) else {
        issues.push(span, format!("{path}.type"), "missing `type` (u8, i16be, f32le, ...)");
        return None;
    };
    let Some(byte) = f.byte else {
        issues.push(span, format!("{path}.byte"), "missing `byte`, the position of the value's first byte");
        return None;
    };
    // A position this large cannot be a real payload and would overflow `byte + len` below.
    if byte > 65_535 {
        issues.push(span.clone(), format!("{path}.byte"), format!("byte {byte} is beyond any LoRaWAN payload"));
    }
    let bits = ty.bits();
    let full = if bits == 64 { u64::MAX } else { (1u64 << bits) - 1 };
    if (f.mask.is_some() || f.shift.is_some()) && (ty.is_signed() || ty.is_float() || ty.is_bcd()) {
        issues.push(span.clone(), format!("{path}.mask"), format!("mask and shift apply to unsigned types only, not {ty:?}"));
    }
    let mask = f.mask.unwrap_or(full);
    if mask == 0 || mask & !full != 0 {
        issues.push(span.clone(), format!("{path}.mask"), format!("mask {mask:#X} must be non-zero and fit in {bits} bits"));
    }
    let shift = f.shift.unwrap_or(0);
    if shift >= bits {
        issues.push(span.clone(), format!("{path}.shift"), format!("shift {shift} must be less than {bits}"));
    }
    let no_value = normalise_no_value(f.no_value.as_deref().unwrap_or(&[]), ty, mask.checked_shr(shift).unwrap_or(0))
        .map_err(|m| issues.push(span.clone(), format!("{path}.no_value"), m))
        .unwrap_or_default();
    let when = f.when.as_ref().and_then(|w| compile_condition(w, &format!("{path}.when"), issues));
    let scaling = compile_scaling(f, path, span, issues)?;
    if issues.list.len() != before {
        return None;
    }
    Some(FixedField { quantity: f.quantity, ty, byte, mask, shift, no_value, when, scaling })
}

/// Brings sentinels into the form the decoder compares: the signed value for signed types
/// (so `0x8000` and `-32768` both work for `i16be`), the bit pattern for floats and BCD.
pub(super) fn normalise_no_value(values: &[i64], ty: FieldType, max_unsigned: u64) -> Result<Vec<i64>, String> {
    let bits = ty.bits();
    let span = 1i64 << bits;
    values
        .iter()
        .map(|&v| {
            if ty.is_signed() {
                let half = span / 2;
                match v {
                    v if (-half..half).contains(&v) => Ok(v),
                    v if (half..span).contains(&v) => Ok(v - span),
                    _ => Err(format!("no_value {v} does not fit {ty:?}")),
                }
            } else if ty.is_float() || ty.is_bcd() {
                if (0..span).contains(&v) {
                    Ok(v)
                } else {
                    Err(format!("no_value {v} is not a {bits}-bit pattern; write the raw bytes, e.g. 0x7FC00000 for a NaN float"))
                }
            } else if v >= 0 && (v as u64) <= max_unsigned {
                Ok(v)
            } else {
                Err(format!("no_value {v} can never occur: {ty:?} after mask and shift ranges 0 to {max_unsigned}"))
            }
        })
        .collect()
}

/// Compiles a `when` or `match` test; `path` is the key path of the table itself.
pub(crate) fn compile_condition(when: &Spanned<Condition>, path: &str, issues: &mut Issues) -> Option<ByteTest> {
    let span = Some(when.span());
    let c = when.get_ref();
    let mask = c.mask.unwrap_or(0xFF);
    let mut values = ByteSet::default();
    match (c.equals, &c.any_of) {
        (Some(v), None) => values.insert(v),
        (None, Some(list)) if !list.is_empty() => list.iter().for_each(|&v| values.insert(v)),
        (None, Some(_)) => {
            issues.push(span, path, "`in` is empty, so the test can never pass");
            return None;
        }
        _ => {
            issues.push(span, path, "give exactly one of `equals` and `in`");
            return None;
        }
    }
    if c.byte > 65_535 {
        issues.push(span, path, format!("byte {} is beyond any LoRaWAN payload", c.byte));
        return None;
    }
    // A value with bits outside the mask can never match: almost certainly a mistake.
    if (0..=255u8).any(|v| values.contains(v) && v & !mask != 0) {
        issues.push(span, path, format!("a value has bits outside mask {mask:#04X}, so it can never match"));
        return None;
    }
    Some(ByteTest { byte: c.byte, mask, values })
}

/// Compiles `scale`/`offset` or `formula`, and `unit`, of any field.
pub(crate) fn compile_scaling(f: &FieldSpec, path: &str, span: Option<Range<usize>>, issues: &mut Issues) -> Option<Scaling> {
    let scale = f.scale.unwrap_or(1.0);
    let add = f.offset.unwrap_or(0.0);
    let mut ok = true;
    if !scale.is_finite() || scale == 0.0 {
        issues.push(span.clone(), format!("{path}.scale"), format!("scale must be a finite non-zero number, got {scale}"));
        ok = false;
    }
    if !add.is_finite() {
        issues.push(span.clone(), format!("{path}.offset"), format!("offset must be a finite number, got {add}"));
        ok = false;
    }
    let formula = match &f.formula {
        None => None,
        Some(text) => {
            if f.scale.is_some() || f.offset.is_some() {
                issues.push(Some(text.span()), format!("{path}.formula"), "give either `formula` or `scale`/`offset`, not both");
                ok = false;
            }
            match Formula::parse(text.get_ref()) {
                Ok(formula) => Some(formula),
                Err(m) => {
                    issues.push(Some(text.span()), format!("{path}.formula"), m);
                    ok = false;
                    None
                }
            }
        }
    };
    let canonical = match Unit::parse(f.quantity.unit()) {
        Ok(u) => u,
        Err(e) => {
            // model.rs and units.rs disagree: a programming error, but reported, not panicked.
            issues.push(span, format!("{path}.quantity"), e.to_string());
            return None;
        }
    };
    let conversion = match &f.unit {
        None => Conversion::IDENTITY,
        Some(u) => match Conversion::between(*u.get_ref(), canonical) {
            Ok(c) => c,
            Err(e) => {
                issues.push(Some(u.span()), format!("{path}.unit"), format!("{e}, the canonical unit of {}", f.quantity));
                return None;
            }
        },
    };
    let (mul, div) = as_division(scale);
    ok.then_some(Scaling { mul, div, add, formula, conversion })
}

/// `0.01` becomes `/100`: see [`Scaling`].
pub(super) fn as_division(scale: f64) -> (f64, f64) {
    let n = (1.0 / scale).round();
    if n.abs() >= 2.0 && n.abs() < 1e15 && 1.0 / n == scale {
        (1.0, n)
    } else {
        (scale, 1.0)
    }
}
