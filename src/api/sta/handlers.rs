//! Answering a request: resolve the resource path, then apply `$filter`, `$orderby`,
//! `$count`, `$skip`/`$top` (with `@iot.nextLink`), `$expand` and `$select`.
//!
//! Runs on a blocking thread (it reads the store); every store read and every entity in the
//! response counts against the request's [`super::entities::Budget`].

use std::cmp::Ordering;

use serde_json::{json, Map, Value};

use super::entities::{Catalog, Kind, Related, Series};
use super::eval::{eval, matches, pinned_datastream, sort_order};
use super::filter::Expr;
use super::links::Links;
use super::observations::{self, parse_token, Request};
use super::options::Options;
use super::path::Segment;
use super::props::EntityProps;
use crate::api::error::ApiError;

/// A page of a collection: its entities, the next link and the count (when asked for).
type PageParts = (Vec<Value>, Option<String>, Option<usize>);

/// What a request resolves to.
pub enum Answer {
    Json(Value),
    /// A property's raw value (`/$value`).
    Text(String),
}

enum Target {
    Entity(Kind, Value),
    Collection(Kind, Vec<Value>),
    Observations(Vec<Series>),
    Property(String, Value),
}

fn not_found(what: String) -> ApiError {
    ApiError::NotFound(what)
}

/// Answer `GET /sta/v1.1/<segments>?<options>`.
pub fn answer(cat: &Catalog, segments: &[Segment], options: &Options) -> Result<Answer, ApiError> {
    // `…/$ref`: the entities' self links only.
    let refs_only;
    let (segments, options) = match segments.split_last() {
        Some((last, rest)) if last.name == "$ref" && last.id.is_none() && !rest.is_empty() => {
            refs_only = Options { select: Some(vec!["selfLink".into()]), expand: Vec::new(), ..options.clone() };
            (rest, &refs_only)
        }
        _ => (segments, options),
    };
    let target = resolve(cat, segments)?;
    let url = self_url(&cat.links, segments);
    Ok(Answer::Json(match target {
        Target::Entity(kind, v) => shape(cat, kind, v, options)?,
        Target::Collection(kind, items) => {
            let (value, next, count) = collection(cat, kind, items, options, &url)?;
            envelope(value, next, count)
        }
        Target::Observations(series) => {
            let (value, next, count) = observation_page(cat, &series, options, &url)?;
            envelope(value, next, count)
        }
        Target::Property(name, v) => {
            if segments.last().is_some_and(|s| s.name == "$value") {
                return Ok(Answer::Text(match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                }));
            }
            json!({ name: v })
        }
    }))
}

fn envelope(value: Vec<Value>, next: Option<String>, count: Option<usize>) -> Value {
    let mut out = Map::new();
    if let Some(c) = count {
        out.insert("@iot.count".into(), json!(c));
    }
    out.insert("value".into(), Value::Array(value));
    if let Some(n) = next {
        out.insert("@iot.nextLink".into(), json!(n));
    }
    Value::Object(out)
}

/// The request's own URL (without options), for next links.
fn self_url(links: &Links, segments: &[Segment]) -> String {
    let mut url = links.root();
    for s in segments {
        match &s.id {
            Some(id) => url = format!("{url}/{}{}", s.name, Links::id_part(id)),
            None => url = format!("{url}/{}", s.name),
        }
    }
    url
}

fn resolve(cat: &Catalog, segments: &[Segment]) -> Result<Target, ApiError> {
    let first = &segments[0];
    let kind = Kind::by_plural(&first.name)
        .ok_or_else(|| not_found(format!("no entity set {:?}; the service root /sta/v1.1 lists them", first.name)))?;
    let mut target = match (&first.id, kind) {
        (Some(id), _) => Target::Entity(kind, entity(cat, kind, id)?),
        (None, Kind::Observation) => Target::Observations(cat.all_series()?),
        (None, _) => Target::Collection(kind, cat.list(kind)?),
    };
    for seg in &segments[1..] {
        target = match target {
            Target::Entity(kind, v) => {
                if kind.navigation().iter().any(|(n, _, _)| *n == seg.name) {
                    let related = cat
                        .related(kind, &v, &seg.name)?
                        .ok_or_else(|| not_found(format!("{} has no {}", kind.singular(), seg.name)))?;
                    match (related, &seg.id) {
                        (Related::One(k, v), None) => Target::Entity(k, v),
                        (Related::Many(k, items), None) => Target::Collection(k, items),
                        (Related::Observations(series), None) => Target::Observations(series),
                        (Related::Many(k, items), Some(id)) => {
                            let v = items
                                .into_iter()
                                .find(|v| v["@iot.id"] == id.as_str())
                                .ok_or_else(|| not_found(format!("no {} {id:?} in {}", k.singular(), seg.name)))?;
                            Target::Entity(k, v)
                        }
                        (Related::Observations(series), Some(id)) => match cat.observation_by_id(id)? {
                            Some((s, r)) if series.iter().any(|x| x.id() == s.id()) => {
                                Target::Entity(Kind::Observation, cat.observation(&s, &r))
                            }
                            _ => return Err(not_found(format!("no Observation {id:?} in {}", seg.name))),
                        },
                        (Related::One(..), Some(_)) => {
                            return Err(ApiError::BadRequest(format!("{}: a single entity takes no id", seg.name)))
                        }
                    }
                } else if seg.id.is_none() && kind.properties().contains(&seg.name.as_str()) {
                    let key = match seg.name.as_str() {
                        "id" => "@iot.id",
                        "selfLink" => "@iot.selfLink",
                        other => other,
                    };
                    Target::Property(seg.name.clone(), v.get(key).cloned().unwrap_or(Value::Null))
                } else {
                    return Err(not_found(format!("{} has no property or navigation property {:?}", kind.singular(), seg.name)));
                }
            }
            Target::Property(name, v) if seg.name == "$value" && seg.id.is_none() => Target::Property(name, v),
            Target::Property(..) => return Err(ApiError::BadRequest(format!("{}: only $value may follow a property", seg.name))),
            Target::Collection(..) | Target::Observations(..) => {
                return Err(ApiError::BadRequest(format!(
                    "{}: address one entity by its id, e.g. Things('demo-lht65'), before navigating further",
                    seg.name
                )))
            }
        };
    }
    Ok(target)
}

fn entity(cat: &Catalog, kind: Kind, id: &str) -> Result<Value, ApiError> {
    cat.get(kind, id)?.ok_or_else(|| not_found(format!("no {} {id:?}", kind.singular())))
}

/// A page of an in-memory collection (every entity type but Observations): filtered, sorted,
/// counted, paged, expanded, selected.
fn collection(cat: &Catalog, kind: Kind, items: Vec<Value>, o: &Options, url: &str) -> Result<PageParts, ApiError> {
    let mut items: Vec<Value> = match &o.filter {
        Some(f) => items.into_iter().filter(|v| matches(f, &EntityProps { kind, json: v, catalog: cat }, cat.now)).collect(),
        None => items,
    };
    if !o.orderby.is_empty() {
        let mut keyed: Vec<(Vec<_>, Value)> = items
            .into_iter()
            .map(|v| {
                let keys =
                    o.orderby.iter().map(|(e, _)| eval(e, &EntityProps { kind, json: &v, catalog: cat }, cat.now)).collect();
                (keys, v)
            })
            .collect();
        keyed.sort_by(|(a, _), (b, _)| {
            for (i, (_, descending)) in o.orderby.iter().enumerate() {
                let c = sort_order(&a[i], &b[i]);
                let c = if *descending { c.reverse() } else { c };
                if c != Ordering::Equal {
                    return c;
                }
            }
            Ordering::Equal
        });
        items = keyed.into_iter().map(|(_, v)| v).collect();
    }
    let count = o.count.then_some(items.len());
    let top = o.page_size();
    let total = items.len();
    let page: Vec<Value> = items.into_iter().skip(o.skip).take(top).collect();
    // `$top=0` asks for the count only: a next link would lead to the same empty page.
    let next = (top > 0 && o.skip.saturating_add(top) < total).then(|| {
        let mut q = o.carried.clone();
        q.push(("$top".into(), top.to_string()));
        q.push(("$skip".into(), (o.skip + top).to_string()));
        Links::with_query(url, &q)
    });
    cat.spend_entities(page.len())?;
    let mut out = Vec::with_capacity(page.len());
    for v in page {
        out.push(shape(cat, kind, v, o)?);
    }
    Ok((out, next, count))
}

/// A page of observations, read from the store within the scan budget.
fn observation_page(cat: &Catalog, series: &[Series], o: &Options, url: &str) -> Result<PageParts, ApiError> {
    // A filter pinned to one datastream reads only that series (the filter still applies).
    let pinned: Vec<Series>;
    let series = match o.filter.as_ref().and_then(pinned_datastream) {
        Some(id) if series.len() > 1 => {
            pinned = series.iter().filter(|s| s.id() == id).cloned().collect();
            &pinned[..]
        }
        _ => series,
    };
    // Observations are read in store order: by datastream, then by time. Ordering by time is
    // that order within one datastream (read from either end); across several it would need
    // a merge of whole series, which is refused rather than done without bound.
    let descending = match o.orderby.as_slice() {
        [] => false,
        [(Expr::Path(p), descending)] if p.len() == 1 && matches!(p[0].as_str(), "phenomenonTime" | "resultTime") => {
            if series.len() > 1 {
                return Err(ApiError::BadRequest(
                    "$orderby: observations are ordered by time within one datastream; ask Datastreams('<id>')/Observations (without $orderby they come by datastream, then time)".into(),
                ));
            }
            *descending
        }
        _ => {
            return Err(ApiError::BadRequest(
                "$orderby: observations are ordered by phenomenonTime or resultTime, asc or desc; other orders would need a scan of the whole series".into(),
            ))
        }
    };
    let resume = o.skiptoken.as_deref().map(|t| parse_token(series, t)).transpose()?;
    let top = o.page_size();
    let req = Request { filter: o.filter.as_ref(), skip: o.skip, top, descending, resume };
    let page = observations::page(cat, series, &req)?;
    let next = page.next.filter(|_| top > 0).map(|(resume, skip)| {
        let mut q = o.carried.clone();
        q.push(("$top".into(), top.to_string()));
        if skip > 0 {
            q.push(("$skip".into(), skip.to_string()));
        }
        q.push(("$skiptoken".into(), observations::token(series, resume)));
        Links::with_query(url, &q)
    });
    let count = if o.count { observations::count(cat, series, o.filter.as_ref())? } else { None };
    cat.spend_entities(page.readings.len())?;
    let mut out = Vec::with_capacity(page.readings.len());
    for (i, r) in &page.readings {
        out.push(shape(cat, Kind::Observation, cat.observation(&series[*i], r), o)?);
    }
    Ok((out, next, count))
}

/// One entity with its `$expand`ed relations and only its `$select`ed properties.
fn shape(cat: &Catalog, kind: Kind, mut v: Value, o: &Options) -> Result<Value, ApiError> {
    for e in &o.expand {
        if !kind.navigation().iter().any(|(n, _, _)| *n == e.nav) {
            let navs: Vec<&str> = kind.navigation().iter().map(|(n, _, _)| *n).collect();
            return Err(ApiError::BadRequest(format!(
                "$expand: {} has no navigation property {:?}; it has {}",
                kind.singular(),
                e.nav,
                navs.join(", ")
            )));
        }
        let url = v[format!("{}@iot.navigationLink", e.nav)].as_str().unwrap_or_default().to_owned();
        let (value, next, count) = match cat.related(kind, &v, &e.nav)? {
            None => (Value::Null, None, None),
            Some(Related::One(k, related)) => {
                cat.spend_entities(1)?;
                (shape(cat, k, related, &e.options)?, None, None)
            }
            Some(Related::Many(k, items)) => {
                let (items, next, count) = collection(cat, k, items, &e.options, &url)?;
                (Value::Array(items), next, count)
            }
            Some(Related::Observations(series)) => {
                let (items, next, count) = observation_page(cat, &series, &e.options, &url)?;
                (Value::Array(items), next, count)
            }
        };
        if let Some(obj) = v.as_object_mut() {
            obj.insert(e.nav.clone(), value);
            if let Some(n) = next {
                obj.insert(format!("{}@iot.nextLink", e.nav), json!(n));
            }
            if let Some(c) = count {
                obj.insert(format!("{}@iot.count", e.nav), json!(c));
            }
        }
    }
    if let Some(select) = &o.select {
        for name in select {
            if !kind.properties().contains(&name.as_str()) && !kind.navigation().iter().any(|(n, _, _)| n == name) {
                return Err(ApiError::BadRequest(format!(
                    "$select: {} has no property {name:?}; it has {}",
                    kind.singular(),
                    kind.properties().join(", ")
                )));
            }
        }
        let expanded = |key: &str| {
            o.expand
                .iter()
                .any(|e| key == e.nav || key == format!("{}@iot.nextLink", e.nav) || key == format!("{}@iot.count", e.nav))
        };
        let keep = |key: &str| {
            let name = match key {
                "@iot.id" => "id",
                "@iot.selfLink" => "selfLink",
                k => k.strip_suffix("@iot.navigationLink").unwrap_or(k),
            };
            select.iter().any(|s| s == name) || expanded(key)
        };
        if let Value::Object(map) = &mut v {
            map.retain(|k, _| keep(k));
        }
    }
    Ok(v)
}
