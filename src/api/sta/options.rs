//! The query options of a request (`$filter`, `$top`, `$skip`, `$orderby`, `$expand`,
//! `$select`, `$count`, and the server's own `$skiptoken`), also nested inside `$expand`
//! (`Datastreams($top=2;$expand=Observations($orderby=phenomenonTime desc))`).
//!
//! Every error is a 400 that names the option and, for expressions, the position.

use super::filter::{parse_filter, parse_order_item, Expr};
use crate::api::error::ApiError;

/// Entities on a page when `$top` is not given.
pub const DEFAULT_TOP: usize = 100;
/// Most entities on a page; a larger `$top` is lowered to this and the rest is paged.
pub const MAX_TOP: usize = 1000;
/// Deepest `$expand` nesting (`Things?$expand=Datastreams/Observations/FeatureOfInterest` is 3).
pub const MAX_EXPAND_DEPTH: usize = 4;

/// The options of one collection or entity request.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub filter: Option<Expr>,
    /// `$top` as asked (before lowering to [`MAX_TOP`]).
    pub top: Option<usize>,
    pub skip: usize,
    /// (expression, descending) in order of precedence.
    pub orderby: Vec<(Expr, bool)>,
    pub expand: Vec<Expand>,
    /// Property names, `None` for all.
    pub select: Option<Vec<String>>,
    pub count: bool,
    /// Where the previous page ended (from an `@iot.nextLink`).
    pub skiptoken: Option<String>,
    /// The options as given (but `$top`, `$skip`, `$skiptoken`), to carry into next links.
    pub carried: Vec<(String, String)>,
}

impl Options {
    /// The page size: `$top` lowered to [`MAX_TOP`], or [`DEFAULT_TOP`].
    pub fn page_size(&self) -> usize {
        self.top.unwrap_or(DEFAULT_TOP).min(MAX_TOP)
    }
}

/// One `$expand` item: a navigation property and the options for what it leads to.
#[derive(Debug, Clone)]
pub struct Expand {
    pub nav: String,
    pub options: Options,
}

fn bad(option: &str, message: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest(format!("{option}: {message}"))
}

/// Parse the query string's pairs. Parameters without `$` are not SensorThings options and
/// are ignored (as the OData rules ask); an unknown `$` option is refused.
pub fn parse(pairs: &[(String, String)]) -> Result<Options, ApiError> {
    parse_at(pairs, 0, "")
}

fn parse_at(pairs: &[(String, String)], depth: usize, context: &str) -> Result<Options, ApiError> {
    let mut o = Options::default();
    let mut seen: Vec<&str> = Vec::new();
    for (key, value) in pairs {
        let name = format!("{context}{key}");
        if !key.starts_with('$') {
            continue;
        }
        if seen.contains(&key.as_str()) {
            return Err(bad(&name, "given twice"));
        }
        seen.push(key);
        match key.as_str() {
            "$filter" => {
                o.filter = Some(parse_filter(value).map_err(|e| bad(&name, e))?);
            }
            "$top" => {
                o.top =
                    Some(value.trim().parse().map_err(|_| bad(&name, format!("expected a whole number ≥ 0, got {value:?}")))?);
            }
            "$skip" => {
                o.skip = value.trim().parse().map_err(|_| bad(&name, format!("expected a whole number ≥ 0, got {value:?}")))?;
            }
            "$count" => {
                o.count = match value.trim() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(bad(&name, format!("expected true or false, got {value:?}"))),
                }
            }
            "$orderby" => {
                for (offset, item) in split_top_level(value, ',').map_err(|e| bad(&name, e))? {
                    let (expr, descending) = parse_order_item(item).map_err(|mut e| {
                        e.position += offset;
                        bad(&name, e)
                    })?;
                    o.orderby.push((expr, descending));
                }
            }
            "$select" => {
                let mut names = Vec::new();
                for (_, item) in split_top_level(value, ',').map_err(|e| bad(&name, e))? {
                    let item = item.trim();
                    if item.is_empty() || !item.chars().all(|c| c.is_alphanumeric() || matches!(c, '_' | '@' | '.' | '/')) {
                        return Err(bad(&name, format!("expected property names separated by ',', got {item:?}")));
                    }
                    names.push(item.trim_start_matches("@iot.").to_owned());
                }
                o.select = Some(names);
            }
            "$expand" => {
                if depth >= MAX_EXPAND_DEPTH {
                    return Err(bad(&name, format!("expanded deeper than {MAX_EXPAND_DEPTH} levels")));
                }
                for (_, item) in split_top_level(value, ',').map_err(|e| bad(&name, e))? {
                    let expand = parse_expand_item(item.trim(), depth, &name)?;
                    merge(&mut o.expand, expand);
                }
            }
            "$skiptoken" => o.skiptoken = Some(value.clone()),
            "$resultFormat" => return Err(bad(&name, "not supported; responses are JSON")),
            _ => {
                return Err(bad(
                    &name,
                    "unknown option; expected $filter, $top, $skip, $orderby, $expand, $select, $count or $skiptoken",
                ))
            }
        }
        if !matches!(key.as_str(), "$top" | "$skip" | "$skiptoken") {
            o.carried.push((key.clone(), value.clone()));
        }
    }
    Ok(o)
}

/// `Datastreams/Observations($top=3)` → Datastreams { expand: [Observations { top: 3 }] }.
fn parse_expand_item(item: &str, depth: usize, option: &str) -> Result<Expand, ApiError> {
    let (path, inner) = match item.find('(') {
        Some(i) => {
            let Some(inner) = item[i + 1..].strip_suffix(')') else {
                return Err(bad(option, format!("{item:?}: expected ')' at the end of the nested options")));
            };
            (&item[..i], Some(inner))
        }
        None => (item, None),
    };
    let segments: Vec<&str> = path.split('/').map(str::trim).collect();
    if segments.iter().any(|s| s.is_empty() || !s.chars().all(|c| c.is_ascii_alphabetic())) {
        return Err(bad(
            option,
            format!("{item:?}: expected a navigation property such as Datastreams or Datastreams/Observations"),
        ));
    }
    if depth + segments.len() > MAX_EXPAND_DEPTH {
        return Err(bad(option, format!("expanded deeper than {MAX_EXPAND_DEPTH} levels")));
    }
    let last = segments.len() - 1;
    let mut options = match inner {
        Some(inner) => {
            let mut pairs = Vec::new();
            for (_, part) in split_top_level(inner, ';').map_err(|e| bad(option, e))? {
                let Some((k, v)) = part.split_once('=') else {
                    return Err(bad(option, format!("{part:?}: expected $option=value inside ( )")));
                };
                pairs.push((k.trim().to_owned(), v.to_owned()));
            }
            parse_at(&pairs, depth + last + 1, &format!("{option}({}) ", segments[last]))?
        }
        None => Options::default(),
    };
    for i in (1..=last).rev() {
        options = Options { expand: vec![Expand { nav: segments[i].to_owned(), options }], ..Options::default() };
    }
    Ok(Expand { nav: segments[0].to_owned(), options })
}

/// `Datastreams,Datastreams/Thing` are one expansion of Datastreams with Thing inside.
fn merge(list: &mut Vec<Expand>, item: Expand) {
    match list.iter_mut().find(|e| e.nav == item.nav) {
        Some(existing) => {
            for inner in item.options.expand {
                merge(&mut existing.options.expand, inner);
            }
        }
        None => list.push(item),
    }
}

/// Split at `sep` outside parentheses and quotes; each part with its character offset.
fn split_top_level(text: &str, sep: char) -> Result<Vec<(usize, &str)>, String> {
    let mut out = Vec::new();
    let (mut depth, mut quoted, mut start, mut start_chars) = (0usize, false, 0usize, 0usize);
    for (n, (i, c)) in text.char_indices().enumerate() {
        match c {
            '\'' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => {
                depth = depth.checked_sub(1).ok_or_else(|| format!("at position {}: ')' without '('", n + 1))?;
            }
            c if c == sep && !quoted && depth == 0 => {
                out.push((start_chars, &text[start..i]));
                start = i + c.len_utf8();
                start_chars = n + 1;
            }
            _ => {}
        }
    }
    if depth > 0 {
        return Err(format!("at position {}: expected ')' before the end", text.chars().count() + 1));
    }
    out.push((start_chars, &text[start..]));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Result<Options, ApiError> {
        parse(&pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>())
    }

    fn message(r: Result<Options, ApiError>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn options_parse_and_nest() {
        let o = p(&[
            ("$top", "5000"),
            ("$skip", "3"),
            ("$count", "true"),
            ("$orderby", "phenomenonTime desc, result"),
            ("$select", "id,result,@iot.selfLink"),
            ("$expand", "Datastreams($top=2;$expand=Observations($filter=result gt 3;$top=1)),Datastreams/Thing,Locations"),
            ("other", "ignored"),
        ])
        .unwrap();
        assert_eq!((o.page_size(), o.skip, o.count, o.orderby.len()), (MAX_TOP, 3, true, 2));
        assert!(o.orderby[0].1 && !o.orderby[1].1);
        assert_eq!(o.select.as_deref().unwrap(), ["id", "result", "selfLink"]);
        assert_eq!(o.expand.len(), 2);
        let ds = &o.expand[0];
        assert_eq!((ds.nav.as_str(), ds.options.top), ("Datastreams", Some(2)));
        let navs: Vec<&str> = ds.options.expand.iter().map(|e| e.nav.as_str()).collect();
        assert_eq!(navs, ["Observations", "Thing"]);
        assert!(ds.options.expand[0].options.filter.is_some());
        assert_eq!(o.carried.len(), 4, "$top and $skip are not carried: {:?}", o.carried);
    }

    #[test]
    fn bad_options_name_themselves() {
        assert!(message(p(&[("$top", "-1")])).starts_with("$top:"));
        assert!(message(p(&[("$skip", "x")])).starts_with("$skip:"));
        assert!(message(p(&[("$count", "yes")])).starts_with("$count:"));
        assert!(message(p(&[("$frobnicate", "1")])).starts_with("$frobnicate: unknown"));
        assert!(message(p(&[("$top", "1"), ("$top", "2")])).contains("twice"));
        let e = message(p(&[("$filter", "result gt")]));
        assert!(e.starts_with("$filter: at position 10: expected a value"), "{e}");
        let e = message(p(&[("$orderby", "name, result sideways")]));
        assert!(e.starts_with("$orderby: at position 14"), "{e}");
        let e = message(p(&[("$expand", "Datastreams($filter=result gtt 1)")]));
        assert!(e.starts_with("$expand(Datastreams) $filter: at position 8"), "{e}");
        assert!(message(p(&[("$expand", "Datastreams($top=1")])).contains("expected ')'"));
        assert!(message(p(&[("$expand", "A/B/C/D/E")])).contains("deeper"));
        assert!(message(p(&[("$select", "name,")])).starts_with("$select:"));
    }
}
