//! `/v1/catalog`: the DCAT-AP.de 3.0 catalogue of the open datasets, for open-data portals to
//! harvest, in JSON-LD, Turtle or RDF/XML (by `Accept` or `?format=`), German or English
//! (`?lang=`), in pages of `open_data.catalog_page_size` datasets (hydra:PagedCollection; the
//! first page is the catalogue URL itself, so a harvester's configured URL never changes).
//!
//! The content is described in `catalog/dcat.rs`, held as a tree (`catalog/graph.rs`) and
//! written by `catalog/syntax.rs`; docs/open-data.md is the reference.

mod dcat;
mod graph;
mod syntax;
mod texts;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use chrono::Utc;

use super::{error::ApiError, licence_link, AppState};
use crate::config::TextLanguage;
use crate::devices::{Device, Visibility};
use crate::model::Quantity;
pub use syntax::Syntax;

/// What a catalogue request asks for.
#[derive(Debug, PartialEq)]
struct CatalogQuery {
    page: usize,
    /// `?format=`, when given (it wins over `Accept`).
    format: Option<Syntax>,
    lang: Option<TextLanguage>,
}

fn parse_query(pairs: &[(String, String)]) -> Result<CatalogQuery, ApiError> {
    let bad = |m: String| ApiError::BadRequest(m);
    let mut q = CatalogQuery { page: 1, format: None, lang: None };
    for (k, v) in pairs {
        match k.as_str() {
            "page" => {
                q.page = v
                    .parse::<usize>()
                    .ok()
                    .filter(|p| *p >= 1)
                    .ok_or_else(|| bad(format!("page: expected a whole number from 1, got {v:?}")))?
            }
            "format" => {
                q.format = Some(match v.as_str() {
                    "jsonld" => Syntax::JsonLd,
                    "ttl" => Syntax::Turtle,
                    "rdfxml" => Syntax::RdfXml,
                    _ => return Err(bad(format!("format: expected jsonld, ttl or rdfxml, got {v:?}"))),
                })
            }
            "lang" => {
                q.lang = Some(match v.as_str() {
                    "de" => TextLanguage::De,
                    "en" => TextLanguage::En,
                    _ => return Err(bad(format!("lang: expected de or en, got {v:?}"))),
                })
            }
            _ => return Err(bad(format!("{k}: unknown parameter; expected page, format, lang"))),
        }
    }
    Ok(q)
}

/// The syntax and `Content-Type` an `Accept` header asks for; `None` when it accepts none of
/// them (a 406). No header, `*/*` or `application/*` get JSON-LD; `text/*` gets Turtle.
fn negotiate(accept: Option<&str>) -> Option<(Syntax, &'static str)> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Some((Syntax::JsonLd, Syntax::JsonLd.media_type()));
    };
    // What the server offers, in its order of preference for equal weights.
    const OFFERS: [(&str, Syntax, &str); 5] = [
        ("application/ld+json", Syntax::JsonLd, "application/ld+json"),
        ("application/json", Syntax::JsonLd, "application/json"),
        ("text/turtle", Syntax::Turtle, "text/turtle; charset=utf-8"),
        ("application/x-turtle", Syntax::Turtle, "text/turtle; charset=utf-8"),
        ("application/rdf+xml", Syntax::RdfXml, "application/rdf+xml"),
    ];
    let ranges: Vec<(String, f32)> = accept
        .split(',')
        .filter_map(|part| {
            let mut fields = part.split(';');
            let range = fields.next()?.trim().to_ascii_lowercase();
            let mut q = 1.0f32;
            for f in fields {
                if let Some(v) = f.trim().strip_prefix("q=").or_else(|| f.trim().strip_prefix("Q=")) {
                    q = v.trim().parse().unwrap_or(0.0);
                }
            }
            (!range.is_empty()).then_some((range, q))
        })
        .collect();
    let mut best: Option<(f32, (Syntax, &'static str))> = None;
    for (offer, syntax, content_type) in OFFERS {
        let (kind, _) = offer.split_once('/').unwrap_or((offer, ""));
        // The most specific range that names this offer decides its weight.
        let weight = ranges
            .iter()
            .filter_map(|(r, q)| {
                let specificity = if r == offer {
                    3
                } else if r.split_once('/').is_some_and(|(k, s)| k == kind && s == "*") {
                    2
                } else if r == "*/*" {
                    1
                } else {
                    return None;
                };
                Some((specificity, *q))
            })
            .max_by_key(|(s, _)| *s)
            .map(|(_, q)| q);
        // A wildcard picks the server's first choice of that kind, not an alias.
        if let Some(w) = weight.filter(|w| *w > 0.0) {
            if best.is_none_or(|(b, _)| w > b) {
                best = Some((w, (syntax, content_type)));
            }
        }
    }
    best.map(|(_, chosen)| chosen)
}

/// Each open device's quantities: its profile's and those derived from them.
fn measured(state: &AppState, open: &[Arc<Device>]) -> BTreeMap<String, BTreeSet<Quantity>> {
    let profiles = state.registry.profiles();
    let mut out = BTreeMap::new();
    for d in open {
        let mut qs: BTreeSet<Quantity> =
            profiles.get(&d.profile).map(|p| p.quantities().into_iter().collect()).unwrap_or_default();
        let has = |n: &str| Quantity::by_name(n).is_some_and(|q| qs.contains(&q));
        if has("air_temperature") && has("relative_humidity") {
            qs.extend(["dew_point_temperature", "heat_index"].iter().filter_map(|n| Quantity::by_name(n)));
        }
        out.insert(d.id.to_string(), qs);
    }
    out
}

pub async fn catalog(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let q = parse_query(&pairs)?;
    let (syntax, content_type) = match q.format {
        Some(s) => (s, s.media_type()),
        None => negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok())).ok_or_else(|| {
            ApiError::NotAcceptable(
                "the catalogue is served as application/ld+json (or application/json), text/turtle or application/rdf+xml; or choose with ?format=jsonld|ttl|rdfxml".into(),
            )
        })?,
    };
    let od = state.open_data.clone();
    let texts = texts::Texts(q.lang.unwrap_or(od.text_language));
    let open: Vec<Arc<Device>> = state.registry.devices().iter().filter(|d| d.visibility == Visibility::Open).cloned().collect();
    let entries = dcat::entries(&open, &measured(&state, &open));
    let per_page = od.catalog_page_size;
    let last_page = entries.len().div_ceil(per_page).max(1);
    if q.page > last_page {
        return Err(ApiError::NotFound(format!("page: the catalogue has {last_page} page(s) of {per_page} datasets")));
    }
    let mut keep = Vec::new();
    if let Some(f) = q.format {
        keep.push(format!("format={}", f.param()));
    }
    if let Some(l) = q.lang {
        keep.push(format!("lang={}", l.tag()));
    }
    let paging = dcat::PageUrlsAndCounts {
        page: q.page,
        last_page,
        total: entries.len(),
        per_page,
        urls: dcat::PageUrls { catalog: format!("{}/v1/catalog", od.base_url), keep: keep.join("&") },
    };
    let next = (q.page < last_page).then(|| paging.urls.page(q.page + 1));
    let store = state.store.clone();
    let body = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, ApiError> {
        let start = (q.page - 1) * per_page;
        let page = &entries[start..(start + per_page).min(entries.len())];
        let tree = dcat::catalog_page(&od, texts, page, &paging, Utc::now(), |scope, quantity| {
            Ok::<_, ApiError>(store.extent(scope, quantity)?)
        })?;
        syntax::write(&tree, syntax, &dcat::COERCED).map_err(|e| ApiError::Internal(e.to_string()))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    // The same URL answers in three syntaxes: caches must key on Accept.
    response.headers_mut().insert(header::VARY, HeaderValue::from_static("accept"));
    licence_link(&mut response, &state.open_data.district_licence);
    if let Some(next) = next {
        if let Ok(v) = HeaderValue::from_str(&format!("<{next}>; rel=\"next\"")) {
            response.headers_mut().append(header::LINK, v);
        }
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Result<CatalogQuery, ApiError> {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        parse_query(&pairs)
    }

    #[test]
    fn each_bad_parameter_is_named() {
        assert_eq!(q(&[]).unwrap(), CatalogQuery { page: 1, format: None, lang: None });
        for (k, v) in [("page", "0"), ("page", "x"), ("format", "csv"), ("format", "json"), ("lang", "fr"), ("colour", "red")] {
            let message = q(&[(k, v)]).unwrap_err().to_string();
            assert!(message.starts_with(&format!("{k}:")), "{k}={v}: {message}");
        }
        assert_eq!(
            q(&[("format", "ttl"), ("lang", "en"), ("page", "3")]).unwrap(),
            CatalogQuery { page: 3, format: Some(Syntax::Turtle), lang: Some(TextLanguage::En) }
        );
    }

    #[test]
    fn accept_picks_the_syntax_by_weight_and_specificity() {
        let syntax = negotiate;
        assert_eq!(syntax(None), Some((Syntax::JsonLd, "application/ld+json")));
        assert_eq!(syntax(Some("*/*")), Some((Syntax::JsonLd, "application/ld+json")));
        assert_eq!(syntax(Some("text/turtle")), Some((Syntax::Turtle, "text/turtle; charset=utf-8")));
        assert_eq!(syntax(Some("application/rdf+xml")), Some((Syntax::RdfXml, "application/rdf+xml")));
        assert_eq!(syntax(Some("application/json")), Some((Syntax::JsonLd, "application/json")));
        assert_eq!(syntax(Some("text/*")), Some((Syntax::Turtle, "text/turtle; charset=utf-8")));
        assert_eq!(
            syntax(Some("application/ld+json;q=0.5, text/turtle;q=0.9, */*;q=0.1")),
            Some((Syntax::Turtle, "text/turtle; charset=utf-8"))
        );
        assert_eq!(syntax(Some("application/rdf+xml, application/ld+json;q=0")), Some((Syntax::RdfXml, "application/rdf+xml")));
        // A browser's header: its */* gets the default.
        assert_eq!(
            syntax(Some("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")),
            Some((Syntax::JsonLd, "application/ld+json"))
        );
        assert_eq!(syntax(Some("text/html")), None);
        assert_eq!(syntax(Some("image/png, */*;q=0")), None);
    }
}
