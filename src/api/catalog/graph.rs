//! The catalogue as a tree of RDF nodes, before it is written in one of the three syntaxes.
//!
//! A tree rather than a flat list of triples: JSON-LD nests a dataset's distributions inside
//! it, and portals that read the JSON as plain JSON rely on that. Turtle and RDF/XML get the
//! same tree flattened into triples ([`Node::triples`]).

use std::collections::HashSet;

use oxrdf::{BlankNode, Literal as RdfLiteral, NamedNode, NamedOrBlankNode, Term, Triple};

/// Namespaces and the prefixes every syntax abbreviates them with.
pub const PREFIXES: [(&str, &str); 12] = [
    ("dcat", "http://www.w3.org/ns/dcat#"),
    ("dct", "http://purl.org/dc/terms/"),
    ("dcatde", "http://dcat-ap.de/def/dcatde/"),
    ("foaf", "http://xmlns.com/foaf/0.1/"),
    ("vcard", "http://www.w3.org/2006/vcard/ns#"),
    ("locn", "http://www.w3.org/ns/locn#"),
    ("gsp", "http://www.opengis.net/ont/geosparql#"),
    ("xsd", "http://www.w3.org/2001/XMLSchema#"),
    ("hydra", "http://www.w3.org/ns/hydra/core#"),
    ("rdf", "http://www.w3.org/1999/02/22-rdf-syntax-ns#"),
    ("adms", "http://www.w3.org/ns/adms#"),
    ("skos", "http://www.w3.org/2004/02/skos/core#"),
];

/// `rdf:type`.
pub const RDF_TYPE: &str = "http://www.w3.org/1999/02/22-rdf-syntax-ns#type";

/// A literal value.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// An `xsd:string`.
    Plain(String),
    /// A text in a language (`"Lufttemperatur"@de`).
    Lang(String, &'static str),
    /// A value of a datatype, by the datatype's IRI.
    Typed(String, &'static str),
}

/// What a property points to.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    Iri(String),
    Literal(Literal),
    Node(Box<Node>),
}

/// A subject with its types and properties. Without an id it is a blank node, written once,
/// where it is used.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Node {
    pub id: Option<String>,
    pub types: Vec<&'static str>,
    pub props: Vec<(&'static str, Object)>,
}

impl Node {
    /// A node with an IRI.
    pub fn named(id: impl Into<String>, types: &[&'static str]) -> Self {
        Node { id: Some(id.into()), types: types.to_vec(), props: Vec::new() }
    }

    /// A blank node.
    pub fn blank(types: &[&'static str]) -> Self {
        Node { id: None, types: types.to_vec(), props: Vec::new() }
    }

    /// Adds `predicate` → IRI.
    pub fn iri(mut self, predicate: &'static str, iri: impl Into<String>) -> Self {
        self.props.push((predicate, Object::Iri(iri.into())));
        self
    }

    /// Adds `predicate` → a plain string.
    pub fn text(mut self, predicate: &'static str, value: impl Into<String>) -> Self {
        self.props.push((predicate, Object::Literal(Literal::Plain(value.into()))));
        self
    }

    /// Adds `predicate` → a text in language `lang`.
    pub fn lang(mut self, predicate: &'static str, value: impl Into<String>, lang: &'static str) -> Self {
        self.props.push((predicate, Object::Literal(Literal::Lang(value.into(), lang))));
        self
    }

    /// Adds `predicate` → a value of `datatype`.
    pub fn typed(mut self, predicate: &'static str, value: impl Into<String>, datatype: &'static str) -> Self {
        self.props.push((predicate, Object::Literal(Literal::Typed(value.into(), datatype))));
        self
    }

    /// Adds `predicate` → another node.
    pub fn node(mut self, predicate: &'static str, node: Node) -> Self {
        self.props.push((predicate, Object::Node(Box::new(node))));
        self
    }

    /// The tree as triples, each node's own before those of the nodes it points to. A named
    /// node that occurs more than once (the publisher of every dataset) has its properties
    /// written only the first time; blank nodes get ids `b0`, `b1` ...
    pub fn triples(&self) -> Vec<Triple> {
        let mut out = Vec::new();
        let mut written = HashSet::new();
        let mut blanks = 0usize;
        let subject = self.subject(&mut blanks);
        self.flatten(subject, &mut out, &mut written, &mut blanks);
        out
    }

    fn subject(&self, blanks: &mut usize) -> NamedOrBlankNode {
        match &self.id {
            Some(iri) => NamedNode::new_unchecked(iri.clone()).into(),
            None => {
                *blanks += 1;
                BlankNode::new_unchecked(format!("b{}", *blanks - 1)).into()
            }
        }
    }

    fn flatten(&self, subject: NamedOrBlankNode, out: &mut Vec<Triple>, written: &mut HashSet<String>, blanks: &mut usize) {
        if let Some(iri) = &self.id {
            if !written.insert(iri.clone()) {
                return;
            }
        }
        for t in &self.types {
            out.push(Triple::new(subject.clone(), NamedNode::new_unchecked(RDF_TYPE), NamedNode::new_unchecked(*t)));
        }
        let mut children = Vec::new();
        for (p, o) in &self.props {
            let object: Term = match o {
                Object::Iri(iri) => NamedNode::new_unchecked(iri.clone()).into(),
                Object::Literal(Literal::Plain(v)) => RdfLiteral::new_simple_literal(v.clone()).into(),
                Object::Literal(Literal::Lang(v, lang)) => {
                    RdfLiteral::new_language_tagged_literal_unchecked(v.clone(), *lang).into()
                }
                Object::Literal(Literal::Typed(v, dt)) => {
                    RdfLiteral::new_typed_literal(v.clone(), NamedNode::new_unchecked(*dt)).into()
                }
                Object::Node(n) => {
                    let child = n.subject(blanks);
                    children.push((n, child.clone()));
                    child.into()
                }
            };
            out.push(Triple::new(subject.clone(), NamedNode::new_unchecked(*p), object));
        }
        for (n, child) in children {
            n.flatten(child, out, written, blanks);
        }
    }
}

/// `prefix:local` for an IRI in one of the [`PREFIXES`] namespaces whose local part needs no
/// escaping; the IRI itself otherwise.
pub fn compact(iri: &str) -> String {
    for (prefix, ns) in PREFIXES {
        if let Some(local) = iri.strip_prefix(ns) {
            if !local.is_empty() && local.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
                return format!("{prefix}:{local}");
            }
        }
    }
    iri.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_named_node_is_written_once_and_blank_nodes_get_their_own_ids() {
        let publisher = Node::named("https://example.org/p", &["http://xmlns.com/foaf/0.1/Agent"])
            .text("http://xmlns.com/foaf/0.1/name", "P");
        let tree = Node::named("https://example.org/c", &[])
            .node("http://purl.org/dc/terms/publisher", publisher.clone())
            .node("http://purl.org/dc/terms/temporal", Node::blank(&[]).text("http://example.org/a", "1"))
            .node("http://purl.org/dc/terms/temporal", Node::blank(&[]).text("http://example.org/a", "2"))
            .node("http://purl.org/dc/terms/creator", publisher);
        let triples = tree.triples();
        let text: Vec<String> = triples.iter().map(|t| t.to_string()).collect();
        assert_eq!(text.iter().filter(|t| t.contains("foaf/0.1/name")).count(), 1, "{text:#?}");
        assert!(text.iter().any(|t| t.starts_with("_:b0 ")) && text.iter().any(|t| t.starts_with("_:b1 ")), "{text:#?}");
        assert_eq!(triples.len(), 8, "{text:#?}");
    }

    #[test]
    fn compacts_only_what_a_prefixed_name_can_say() {
        assert_eq!(compact("http://www.w3.org/ns/dcat#Dataset"), "dcat:Dataset");
        assert_eq!(compact("http://purl.org/dc/terms/license"), "dct:license");
        assert_eq!(compact("http://www.w3.org/ns/dcat#"), "http://www.w3.org/ns/dcat#");
        assert_eq!(compact("http://example.org/x"), "http://example.org/x");
    }
}
