//! The resource path after `/sta/v1.1/`: `Things`, `Things('demo-lht65')/Datastreams`,
//! `Datastreams('demo-lht65:air_temperature')/Observations`, `Things('x')/name/$value`.

use crate::api::error::ApiError;

/// One path segment: a collection, navigation property, property or `$value`, with the id
/// given in parentheses, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub name: String,
    pub id: Option<String>,
}

/// Longest resource path accepted, in bytes.
const MAX_PATH: usize = 2048;
/// Most segments in a resource path.
const MAX_SEGMENTS: usize = 8;

/// Split and check a resource path. Ids are written `('text')` (a quote inside doubled) or,
/// leniently, without quotes.
pub fn parse(path: &str) -> Result<Vec<Segment>, ApiError> {
    let bad = |m: String| ApiError::BadRequest(format!("resource path: {m}"));
    if path.len() > MAX_PATH {
        return Err(bad(format!("longer than {MAX_PATH} bytes")));
    }
    let path = path.trim_end_matches('/');
    let mut out = Vec::new();
    let mut rest = path;
    while !rest.is_empty() {
        if out.len() == MAX_SEGMENTS {
            return Err(bad(format!("more than {MAX_SEGMENTS} segments")));
        }
        let name_end = rest.find(['(', '/']).unwrap_or(rest.len());
        let name = &rest[..name_end];
        if name.is_empty() || !name.chars().enumerate().all(|(i, c)| c.is_ascii_alphanumeric() || (i == 0 && c == '$')) {
            return Err(bad(format!("{name:?}: expected an entity set or property name such as Things or Datastreams")));
        }
        rest = &rest[name_end..];
        let mut id = None;
        if let Some(after) = rest.strip_prefix('(') {
            let (value, used) = if let Some(quoted) = after.strip_prefix('\'') {
                let mut value = String::new();
                let mut chars = quoted.char_indices();
                let mut end = None;
                while let Some((i, c)) = chars.next() {
                    if c == '\'' {
                        if quoted[i + 1..].starts_with('\'') {
                            value.push('\'');
                            chars.next();
                        } else {
                            end = Some(i);
                            break;
                        }
                    } else {
                        value.push(c);
                    }
                }
                let end = end.ok_or_else(|| bad(format!("{name}: the id has no closing quote")))?;
                (value, end + 2)
            } else {
                let end = after.find(')').ok_or_else(|| bad(format!("{name}: the id has no closing ')'")))?;
                (after[..end].to_owned(), end)
            };
            let after = &after[used..];
            rest = after.strip_prefix(')').ok_or_else(|| bad(format!("{name}({value}): expected ')' after the id")))?;
            id = Some(value);
        }
        if !rest.is_empty() {
            rest = rest.strip_prefix('/').ok_or_else(|| bad(format!("{name}: expected '/' after the id")))?;
            if rest.is_empty() {
                break;
            }
        }
        out.push(Segment { name: name.to_owned(), id });
    }
    if out.is_empty() {
        return Err(bad("empty".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(name: &str, id: Option<&str>) -> Segment {
        Segment { name: name.into(), id: id.map(str::to_owned) }
    }

    #[test]
    fn paths_split_into_segments_with_ids() {
        assert_eq!(parse("Things").unwrap(), [seg("Things", None)]);
        assert_eq!(
            parse("Datastreams('demo-lht65:air_temperature')/Observations").unwrap(),
            [seg("Datastreams", Some("demo-lht65:air_temperature")), seg("Observations", None)]
        );
        assert_eq!(parse("Things(42)/name/$value").unwrap(), [seg("Things", Some("42")), seg("name", None), seg("$value", None)]);
        assert_eq!(parse("Things('it''s')").unwrap(), [seg("Things", Some("it's"))]);
        assert_eq!(parse("Things('a)b')/").unwrap(), [seg("Things", Some("a)b"))]);
    }

    #[test]
    fn malformed_paths_are_400() {
        for p in
            ["", "Things('x", "Things(x", "Things('x'", "Things('x')y", "Th ings", "Things//Datastreams", "a/b/c/d/e/f/g/h/i"]
        {
            assert!(parse(p).is_err(), "{p}");
        }
    }
}
