//! Writing the catalogue tree as JSON-LD, Turtle or RDF/XML.
//!
//! Turtle and RDF/XML come from oxigraph's serialisers (`oxttl`, `oxrdfxml`), which check IRIs
//! and escape literals. JSON-LD is written here: it is plain JSON shaped by a context, and
//! portals (and existing clients) read it as nested JSON, which a triple-by-triple JSON-LD
//! writer would not give them.

use std::collections::HashSet;

use serde_json::{json, Map, Value};

use super::graph::{compact, Literal, Node, Object, PREFIXES};

/// `xsd:integer`, written as a JSON number.
const XSD_INTEGER: &str = "http://www.w3.org/2001/XMLSchema#integer";

/// The serialisations the catalogue is served in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    JsonLd,
    Turtle,
    RdfXml,
}

impl Syntax {
    /// The value of `?format=` that asks for this syntax.
    pub fn param(self) -> &'static str {
        match self {
            Syntax::JsonLd => "jsonld",
            Syntax::Turtle => "ttl",
            Syntax::RdfXml => "rdfxml",
        }
    }

    /// The `Content-Type` it is served with.
    pub fn media_type(self) -> &'static str {
        match self {
            Syntax::JsonLd => "application/ld+json",
            Syntax::Turtle => "text/turtle; charset=utf-8",
            Syntax::RdfXml => "application/rdf+xml",
        }
    }
}

/// Why a tree could not be written (a malformed IRI: a bug, or a bad configured URL).
#[derive(Debug, thiserror::Error)]
#[error("cannot write the catalogue: {0}")]
pub struct SyntaxError(String);

/// The tree in `syntax`. `coerced` lists (predicate, datatype) pairs that the JSON-LD context
/// types, so their values are written as plain strings.
pub fn write(root: &Node, syntax: Syntax, coerced: &[(&'static str, &'static str)]) -> Result<Vec<u8>, SyntaxError> {
    match syntax {
        Syntax::JsonLd => serde_json::to_vec(&json_ld(root, coerced)).map_err(|e| SyntaxError(e.to_string())),
        Syntax::Turtle => {
            let mut s = oxttl::TurtleSerializer::new();
            for (prefix, ns) in PREFIXES {
                s = s.with_prefix(prefix, ns).map_err(|e| SyntaxError(e.to_string()))?;
            }
            let mut w = s.for_writer(Vec::with_capacity(64 * 1024));
            for t in root.triples() {
                w.serialize_triple(&t).map_err(|e| SyntaxError(e.to_string()))?;
            }
            w.finish().map_err(|e| SyntaxError(e.to_string()))
        }
        Syntax::RdfXml => {
            let mut s = oxrdfxml::RdfXmlSerializer::new();
            for (prefix, ns) in PREFIXES.iter().filter(|(p, _)| *p != "rdf") {
                s = s.with_prefix(*prefix, *ns).map_err(|e| SyntaxError(e.to_string()))?;
            }
            let mut w = s.for_writer(Vec::with_capacity(64 * 1024));
            for t in root.triples() {
                w.serialize_triple(&t).map_err(|e| SyntaxError(e.to_string()))?;
            }
            w.finish().map_err(|e| SyntaxError(e.to_string()))
        }
    }
}

/// Predicates whose JSON-LD value is an array even when there is one (clients index them).
const ALWAYS_ARRAY: [&str; 4] = [
    "http://www.w3.org/ns/dcat#dataset",
    "http://www.w3.org/ns/dcat#distribution",
    "http://www.w3.org/ns/dcat#service",
    "http://www.w3.org/ns/dcat#keyword",
];

/// Compacted JSON-LD: one top-level node, prefixed names, nested nodes. A named node that
/// occurs again is written as `{"@id": ...}` only.
pub fn json_ld(root: &Node, coerced: &[(&'static str, &'static str)]) -> Value {
    let mut context = Map::new();
    for (prefix, ns) in PREFIXES {
        context.insert(prefix.to_owned(), json!(ns));
    }
    for (predicate, datatype) in coerced {
        context.insert(compact(predicate), json!({ "@type": compact(datatype) }));
    }
    let mut written = HashSet::new();
    let mut body = node_json(root, coerced, &mut written);
    if let Value::Object(map) = &mut body {
        let mut with_context = Map::new();
        with_context.insert("@context".into(), Value::Object(context));
        with_context.append(map);
        return Value::Object(with_context);
    }
    body
}

fn node_json(node: &Node, coerced: &[(&'static str, &'static str)], written: &mut HashSet<String>) -> Value {
    let mut map = Map::new();
    if let Some(id) = &node.id {
        map.insert("@id".into(), json!(id));
        if !written.insert(id.clone()) {
            return Value::Object(map);
        }
    }
    match node.types.as_slice() {
        [] => {}
        [one] => {
            map.insert("@type".into(), json!(compact(one)));
        }
        many => {
            map.insert("@type".into(), Value::Array(many.iter().map(|t| json!(compact(t))).collect()));
        }
    }
    for (predicate, object) in &node.props {
        let value = match object {
            Object::Iri(iri) => json!({ "@id": iri }),
            Object::Literal(Literal::Plain(v)) => json!(v),
            Object::Literal(Literal::Lang(v, lang)) => json!({ "@value": v, "@language": lang }),
            Object::Literal(Literal::Typed(v, dt)) => {
                if coerced.iter().any(|(p, d)| p == predicate && d == dt) {
                    json!(v)
                } else if *dt == XSD_INTEGER && v.parse::<i64>().is_ok() {
                    json!(v.parse::<i64>().unwrap_or_default())
                } else {
                    json!({ "@value": v, "@type": compact(dt) })
                }
            }
            Object::Node(n) => node_json(n, coerced, written),
        };
        let key = compact(predicate);
        match map.get_mut(&key) {
            Some(Value::Array(values)) => values.push(value),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, value]);
            }
            None if ALWAYS_ARRAY.contains(predicate) => {
                map.insert(key, Value::Array(vec![value]));
            }
            None => {
                map.insert(key, value);
            }
        }
    }
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &str = "http://www.w3.org/2001/XMLSchema#date";

    fn tree() -> Node {
        Node::named("https://example.org/catalog", &["http://www.w3.org/ns/dcat#Catalog"])
            .lang("http://purl.org/dc/terms/title", "Katalog \"Stadtklima\" <&>", "de")
            .typed("http://purl.org/dc/terms/issued", "2026-01-01", DATE)
            .typed("http://purl.org/dc/terms/modified", "2026-01-02", "http://www.w3.org/2001/XMLSchema#dateTime")
            .node(
                "http://www.w3.org/ns/dcat#dataset",
                Node::named("https://example.org/catalog#a", &["http://www.w3.org/ns/dcat#Dataset"])
                    .iri("http://www.w3.org/ns/dcat#mediaType", "https://www.iana.org/assignments/media-types/text/csv"),
            )
    }

    #[test]
    fn json_ld_types_values_through_the_context_or_inline() {
        let v = json_ld(&tree(), &[("http://purl.org/dc/terms/issued", DATE)]);
        assert_eq!(v["@context"]["dct:issued"], json!({ "@type": "xsd:date" }));
        assert_eq!(v["dct:issued"], "2026-01-01");
        assert_eq!(v["dct:modified"], json!({ "@value": "2026-01-02", "@type": "xsd:dateTime" }));
        assert_eq!(v["dct:title"], json!({ "@value": "Katalog \"Stadtklima\" <&>", "@language": "de" }));
        assert_eq!(v["dcat:dataset"][0]["@type"], "dcat:Dataset");
        assert_eq!(v["dcat:dataset"][0]["dcat:mediaType"]["@id"], "https://www.iana.org/assignments/media-types/text/csv");
    }

    #[test]
    fn turtle_and_rdf_xml_escape_and_type() {
        let ttl = String::from_utf8(write(&tree(), Syntax::Turtle, &[]).unwrap()).unwrap();
        assert!(ttl.contains("\"2026-01-01\"^^xsd:date"), "{ttl}");
        assert!(ttl.contains("\"Katalog \\\"Stadtklima\\\" <&>\"@de"), "{ttl}");
        let xml = String::from_utf8(write(&tree(), Syntax::RdfXml, &[]).unwrap()).unwrap();
        assert!(xml.contains("&lt;&amp;&gt;") || xml.contains("&lt;&amp;>"), "{xml}");
        assert!(xml.contains("rdf:datatype=\"http://www.w3.org/2001/XMLSchema#date\""), "{xml}");
    }
}
