//! Evaluation of parsed `$filter` and `$orderby` expressions against one entity.
//!
//! Values follow OData's rules where they matter to clients: a comparison with a missing or
//! null operand is false (except `eq null` / `ne null`), strings compare with times when they
//! hold one, and a type mismatch is `null` rather than an error, so one odd entity never fails
//! a whole page.

use std::cmp::Ordering;

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde_json::Value;

use super::filter::{Expr, Function, Op};

/// A value during evaluation.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Null,
    Bool(bool),
    Number(f64),
    Text(String),
    Time(DateTime<Utc>),
    /// An object or array property (a location, `properties`): comparable only with null.
    Other,
}

impl Val {
    pub fn from_json(v: &Value) -> Val {
        match v {
            Value::Null => Val::Null,
            Value::Bool(b) => Val::Bool(*b),
            Value::Number(n) => n.as_f64().map(Val::Number).unwrap_or(Val::Null),
            Value::String(s) => Val::Text(s.clone()),
            _ => Val::Other,
        }
    }

    fn time(&self) -> Option<DateTime<Utc>> {
        match self {
            Val::Time(t) => Some(*t),
            // An interval ("start/end") stands for its start, as FROST compares it.
            Val::Text(s) => DateTime::parse_from_rfc3339(s.split('/').next().unwrap_or(s)).ok().map(|t| t.with_timezone(&Utc)),
            _ => None,
        }
    }
}

/// Where property paths get their values: the entity being filtered.
pub trait Properties {
    /// The value at `path` (`["result"]`, `["properties", "district"]`, `["Thing", "name"]`);
    /// [`Val::Null`] when there is none.
    fn get(&self, path: &[String]) -> Val;
}

/// A property path into a JSON entity; `id` means `@iot.id`.
pub fn json_path(entity: &Value, path: &[String]) -> Val {
    let mut at = entity;
    for (i, segment) in path.iter().enumerate() {
        let key = if i == 0 && segment == "id" { "@iot.id" } else { segment.as_str() };
        match at.get(key) {
            Some(v) => at = v,
            None => return Val::Null,
        }
    }
    Val::from_json(at)
}

/// Whether the filter holds for the entity.
pub fn matches(expr: &Expr, entity: &dyn Properties, now: DateTime<Utc>) -> bool {
    eval(expr, entity, now) == Val::Bool(true)
}

/// The value of an expression for the entity.
pub fn eval(expr: &Expr, entity: &dyn Properties, now: DateTime<Utc>) -> Val {
    match expr {
        Expr::Null => Val::Null,
        Expr::Bool(b) => Val::Bool(*b),
        Expr::Number(n) => Val::Number(*n),
        Expr::Text(s) => Val::Text(s.clone()),
        Expr::Time(t) => Val::Time(*t),
        Expr::Path(p) => entity.get(p),
        Expr::Not(e) => match eval(e, entity, now) {
            Val::Bool(b) => Val::Bool(!b),
            _ => Val::Null,
        },
        Expr::Negate(e) => match eval(e, entity, now) {
            Val::Number(n) => Val::Number(-n),
            _ => Val::Null,
        },
        Expr::Binary(Op::And, l, r) => {
            // Short-circuit: a cheap left side spares the right side's lookups.
            if eval(l, entity, now) != Val::Bool(true) {
                return Val::Bool(false);
            }
            Val::Bool(eval(r, entity, now) == Val::Bool(true))
        }
        Expr::Binary(Op::Or, l, r) => {
            if eval(l, entity, now) == Val::Bool(true) {
                return Val::Bool(true);
            }
            Val::Bool(eval(r, entity, now) == Val::Bool(true))
        }
        Expr::Binary(op, l, r) => binary(*op, eval(l, entity, now), eval(r, entity, now)),
        Expr::Call(f, args) => {
            let args: Vec<Val> = args.iter().map(|a| eval(a, entity, now)).collect();
            call(*f, &args, now)
        }
    }
}

/// Order of two values for `$orderby` and comparisons: numbers, texts, times; `None` when
/// they cannot be compared.
pub fn compare(a: &Val, b: &Val) -> Option<Ordering> {
    match (a, b) {
        (Val::Number(x), Val::Number(y)) => x.partial_cmp(y),
        (Val::Bool(x), Val::Bool(y)) => Some(x.cmp(y)),
        (Val::Time(x), Val::Time(y)) => Some(x.cmp(y)),
        (Val::Time(_), Val::Text(_)) | (Val::Text(_), Val::Time(_)) => Some(a.time()?.cmp(&b.time()?)),
        (Val::Text(x), Val::Text(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// Order for sorting: nulls (and what cannot be compared) first, as FROST sorts ascending.
pub fn sort_order(a: &Val, b: &Val) -> Ordering {
    match (a, b) {
        (Val::Null | Val::Other, Val::Null | Val::Other) => Ordering::Equal,
        (Val::Null | Val::Other, _) => Ordering::Less,
        (_, Val::Null | Val::Other) => Ordering::Greater,
        _ => compare(a, b).unwrap_or(Ordering::Equal),
    }
}

fn binary(op: Op, l: Val, r: Val) -> Val {
    match op {
        Op::Eq | Op::Ne => {
            let equal = match (&l, &r) {
                (Val::Null, Val::Null) => true,
                (Val::Null, _) | (_, Val::Null) => false,
                _ => compare(&l, &r) == Some(Ordering::Equal),
            };
            Val::Bool(if op == Op::Eq { equal } else { !equal })
        }
        Op::Gt | Op::Ge | Op::Lt | Op::Le => {
            let Some(o) = compare(&l, &r) else { return Val::Bool(false) };
            Val::Bool(match op {
                Op::Gt => o == Ordering::Greater,
                Op::Ge => o != Ordering::Less,
                Op::Lt => o == Ordering::Less,
                _ => o != Ordering::Greater,
            })
        }
        Op::Add | Op::Sub | Op::Mul | Op::Div | Op::Mod => {
            let (Val::Number(x), Val::Number(y)) = (l, r) else { return Val::Null };
            let v = match op {
                Op::Add => x + y,
                Op::Sub => x - y,
                Op::Mul => x * y,
                Op::Div => x / y,
                _ => x % y,
            };
            if v.is_finite() {
                Val::Number(v)
            } else {
                Val::Null
            }
        }
        Op::And | Op::Or => unreachable!("evaluated with short-circuit"),
    }
}

fn call(f: Function, args: &[Val], now: DateTime<Utc>) -> Val {
    let text = |i: usize| match args.get(i) {
        Some(Val::Text(s)) => Some(s.as_str()),
        _ => None,
    };
    let number = |i: usize| match args.get(i) {
        Some(Val::Number(n)) => Some(*n),
        _ => None,
    };
    let time = |i: usize| args.get(i).and_then(Val::time);
    let two = || Some((text(0)?, text(1)?));
    let b = |o: Option<bool>| o.map(Val::Bool).unwrap_or(Val::Null);
    let n = |o: Option<f64>| o.map(Val::Number).unwrap_or(Val::Null);
    let t = |o: Option<String>| o.map(Val::Text).unwrap_or(Val::Null);
    match f {
        Function::SubstringOf => b(two().map(|(needle, hay)| hay.contains(needle))),
        Function::Contains => b(two().map(|(hay, needle)| hay.contains(needle))),
        Function::StartsWith => b(two().map(|(s, p)| s.starts_with(p))),
        Function::EndsWith => b(two().map(|(s, p)| s.ends_with(p))),
        Function::Length => n(text(0).map(|s| s.chars().count() as f64)),
        Function::IndexOf => n(two().map(|(s, p)| s.find(p).map(|i| s[..i].chars().count() as f64).unwrap_or(-1.0))),
        Function::Substring => {
            let Some(s) = text(0) else { return Val::Null };
            let Some(start) = number(1).filter(|x| *x >= 0.0) else { return Val::Null };
            let len = match args.get(2) {
                None => usize::MAX,
                Some(Val::Number(l)) if *l >= 0.0 => *l as usize,
                _ => return Val::Null,
            };
            Val::Text(s.chars().skip(start as usize).take(len).collect())
        }
        Function::ToLower => t(text(0).map(str::to_lowercase)),
        Function::ToUpper => t(text(0).map(str::to_uppercase)),
        Function::Trim => t(text(0).map(|s| s.trim().to_owned())),
        Function::Concat => t(two().map(|(a, c)| format!("{a}{c}"))),
        Function::Year => n(time(0).map(|x| f64::from(x.year()))),
        Function::Month => n(time(0).map(|x| f64::from(x.month()))),
        Function::Day => n(time(0).map(|x| f64::from(x.day()))),
        Function::Hour => n(time(0).map(|x| f64::from(x.hour()))),
        Function::Minute => n(time(0).map(|x| f64::from(x.minute()))),
        Function::Second => n(time(0).map(|x| f64::from(x.second()))),
        Function::FractionalSeconds => n(time(0).map(|x| f64::from(x.nanosecond() % 1_000_000_000) / 1e9)),
        Function::Now => Val::Time(now),
        Function::MinDateTime => Val::Time(DateTime::<Utc>::MIN_UTC),
        Function::MaxDateTime => Val::Time(DateTime::<Utc>::MAX_UTC),
        Function::Round => n(number(0).map(f64::round)),
        Function::Floor => n(number(0).map(f64::floor)),
        Function::Ceiling => n(number(0).map(f64::ceil)),
    }
}

/// The time range `[from, to)` that a filter's top-level `and` terms on `phenomenonTime` or
/// `resultTime` allow (both are the time of measurement here), so a series is read only
/// where matches can be. `None` ends are open. Terms under `or` or `not` are not used: they
/// stay in the filter, which is still applied to every reading.
pub fn time_bounds(expr: &Expr) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
    let mut from: Option<DateTime<Utc>> = None;
    let mut to: Option<DateTime<Utc>> = None;
    let mut terms = vec![expr];
    while let Some(e) = terms.pop() {
        let Expr::Binary(op, l, r) = e else { continue };
        if *op == Op::And {
            terms.push(l);
            terms.push(r);
            continue;
        }
        let is_time = |x: &Expr| matches!(x, Expr::Path(p) if p.len() == 1 && (p[0] == "phenomenonTime" || p[0] == "resultTime"));
        // Normalise to `time op literal`.
        let (op, literal) = match (l.as_ref(), r.as_ref()) {
            (x, Expr::Time(t)) if is_time(x) => (*op, *t),
            (Expr::Time(t), x) if is_time(x) => (
                match op {
                    Op::Gt => Op::Lt,
                    Op::Ge => Op::Le,
                    Op::Lt => Op::Gt,
                    Op::Le => Op::Ge,
                    other => *other,
                },
                *t,
            ),
            _ => continue,
        };
        let ms = chrono::Duration::milliseconds(1);
        // Store times are whole milliseconds.
        let floor = |t: DateTime<Utc>| DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t);
        let (lo, hi) = match op {
            Op::Eq => (Some(literal), Some(floor(literal) + ms)),
            Op::Gt => (Some(floor(literal) + ms), None),
            Op::Ge => (Some(literal), None),
            Op::Lt => (None, Some(if floor(literal) == literal { literal } else { floor(literal) + ms })),
            Op::Le => (None, Some(floor(literal) + ms)),
            _ => (None, None),
        };
        if let Some(lo) = lo {
            from = Some(from.map_or(lo, |f| f.max(lo)));
        }
        if let Some(hi) = hi {
            to = Some(to.map_or(hi, |t| t.min(hi)));
        }
    }
    (from, to)
}

/// The datastreams a filter's top-level `and` terms pin observations to
/// (`Datastream/@iot.id eq '…'`, or `Datastream/id`), so only those series are read; `None`
/// when the filter does not pin them.
pub fn pinned_datastream(expr: &Expr) -> Option<String> {
    let mut terms = vec![expr];
    while let Some(e) = terms.pop() {
        let Expr::Binary(op, l, r) = e else { continue };
        match op {
            Op::And => {
                terms.push(l);
                terms.push(r);
            }
            Op::Eq => {
                let is_id = |x: &Expr| matches!(x, Expr::Path(p) if p.len() == 2 && p[0] == "Datastream" && (p[1] == "@iot.id" || p[1] == "id"));
                match (l.as_ref(), r.as_ref()) {
                    (x, Expr::Text(id)) | (Expr::Text(id), x) if is_id(x) => return Some(id.clone()),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::filter::parse_filter;
    use super::*;
    use serde_json::json;

    struct Json(Value);

    impl Properties for Json {
        fn get(&self, path: &[String]) -> Val {
            json_path(&self.0, path)
        }
    }

    fn holds(filter: &str, entity: Value) -> bool {
        let now = "2026-11-25T12:00:00Z".parse().unwrap();
        matches(&parse_filter(filter).unwrap(), &Json(entity), now)
    }

    #[test]
    fn comparisons_functions_and_nulls() {
        let obs = json!({"@iot.id": "d:q:1", "result": 25.5, "phenomenonTime": "2026-11-25T09:10:00Z", "name": "Stadtpark"});
        assert!(holds("result gt 25", obs.clone()));
        assert!(!holds("result gt 25.5", obs.clone()));
        assert!(holds("result ge 25.5 and result le 25.5 and not (result ne 25.5)", obs.clone()));
        assert!(holds("result sub 0.5 eq 25 or false", obs.clone()));
        assert!(holds("phenomenonTime gt 2026-11-25T09:00:00Z", obs.clone()));
        assert!(holds("year(phenomenonTime) eq 2026 and month(phenomenonTime) eq 11 and day(phenomenonTime) eq 25", obs.clone()));
        assert!(holds("hour(phenomenonTime) eq 9 and minute(phenomenonTime) eq 10", obs.clone()));
        assert!(holds("phenomenonTime lt now()", obs.clone()));
        assert!(holds(
            "substringof('park', tolower(name)) and startswith(name, 'Stadt') and endswith(name, 'park')",
            obs.clone()
        ));
        assert!(holds("contains(name, 'tp') and length(name) eq 9 and indexof(name, 'park') eq 5", obs.clone()));
        assert!(holds("substring(name, 5) eq 'park' and substring(name, 0, 5) eq 'Stadt'", obs.clone()));
        assert!(holds("id eq 'd:q:1'", obs.clone()));
        assert!(holds("missing eq null and not (missing gt 3) and not (missing lt 3)", obs.clone()));
        assert!(!holds("result eq null", obs.clone()));
        assert!(!holds("name gt 3", obs.clone()), "a type mismatch is false, not an error");
        assert!(!holds("result div 0 gt 1", obs.clone()));
        assert!(holds("round(result) eq 26 and floor(result) eq 25 and ceiling(result) eq 26", obs));
    }

    #[test]
    fn a_datastream_is_pinned_by_a_top_level_id_term_only() {
        let pinned = |f: &str| pinned_datastream(&parse_filter(f).unwrap());
        assert_eq!(pinned("result gt 3 and Datastream/@iot.id eq 'a:b'").as_deref(), Some("a:b"));
        assert_eq!(pinned("'a:b' eq Datastream/id").as_deref(), Some("a:b"));
        assert_eq!(pinned("result gt 3 or Datastream/@iot.id eq 'a:b'"), None);
        assert_eq!(pinned("not (Datastream/@iot.id eq 'a:b')"), None);
        assert_eq!(pinned("Datastream/@iot.id ne 'a:b'"), None);
    }

    #[test]
    fn time_bounds_come_from_top_level_and_terms_only() {
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let f = parse_filter("phenomenonTime ge 2026-11-25T09:00:00Z and result gt 3 and 2026-11-25T10:00:00Z gt resultTime")
            .unwrap();
        assert_eq!(time_bounds(&f), (Some(t("2026-11-25T09:00:00Z")), Some(t("2026-11-25T10:00:00Z"))));
        let f = parse_filter("phenomenonTime gt 2026-11-25T09:00:00Z").unwrap();
        assert_eq!(time_bounds(&f), (Some(t("2026-11-25T09:00:00.001Z")), None));
        let f = parse_filter("phenomenonTime gt 2026-11-25T09:00:00Z or result gt 3").unwrap();
        assert_eq!(time_bounds(&f), (None, None));
        let f = parse_filter("not (phenomenonTime gt 2026-11-25T09:00:00Z)").unwrap();
        assert_eq!(time_bounds(&f), (None, None));
    }
}
