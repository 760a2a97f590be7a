//! Links in responses: `@iot.selfLink`, navigation links and `@iot.nextLink`, all absolute, as
//! SensorThings clients follow them as they are.
//!
//! The base is where the client reached the server: the scheme and host of
//! `X-Forwarded-Proto`/`X-Forwarded-Host` or the `Host` header, else the configured
//! `open_data.base_url`. So links work both directly and behind a proxy that forwards the
//! host, with no extra setting.

use axum::http::HeaderMap;

use super::kinds::Kind;

/// Percent-encode a query value or id for a link (RFC 3986 unreserved characters pass).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An id in a path: encoded, but `:` (which datastream and observation ids hold) and `'` pass.
fn encode_id(id: &str) -> String {
    encode(id).replace("%3A", ":").replace("%27", "'")
}

/// The path prefix of the SensorThings API.
pub const PREFIX: &str = "/sta/v1.1";

/// Absolute link builder for one request.
#[derive(Debug, Clone)]
pub struct Links {
    /// `scheme://host`, no trailing slash.
    origin: String,
}

impl Links {
    pub fn from_request(headers: &HeaderMap, base_url: &str) -> Self {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty());
        let configured = base_url.trim_end_matches('/');
        let (configured_scheme, configured_host) = configured.split_once("://").unwrap_or(("http", configured));
        let host = header("x-forwarded-host").or_else(|| header("host")).filter(|h| valid_host(h));
        let origin = match host {
            Some(host) => {
                let scheme = match header("x-forwarded-proto") {
                    Some("https") => "https",
                    Some("http") => "http",
                    _ if host == configured_host.split('/').next().unwrap_or_default() => configured_scheme,
                    _ => "http",
                };
                format!("{scheme}://{host}")
            }
            None => configured.to_owned(),
        };
        Self { origin }
    }

    /// `…/sta/v1.1`
    pub fn root(&self) -> String {
        format!("{}{PREFIX}", self.origin)
    }

    /// `…/sta/v1.1/Things('demo-lht65')`
    pub fn entity(&self, kind: Kind, id: &str) -> String {
        format!("{}/{}{}", self.root(), kind.plural(), Self::id_part(id))
    }

    /// `('demo-lht65')`: an id as a path writes it.
    pub fn id_part(id: &str) -> String {
        format!("('{}')", encode_id(&id.replace('\'', "''")))
    }

    /// A path of the gateway's own API (`/v1/...`), absolute.
    pub fn v1(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.origin)
    }

    /// `path` (absolute) with query options, each value encoded.
    pub fn with_query(path: &str, options: &[(String, String)]) -> String {
        if options.is_empty() {
            return path.to_owned();
        }
        let query: Vec<String> =
            options.iter().map(|(k, v)| format!("{}={}", encode(k).replace("%24", "$"), encode(v))).collect();
        format!("{path}?{}", query.join("&"))
    }
}

/// A host (and port) as it may appear in a link: letters, digits and `.-:[]`.
fn valid_host(h: &str) -> bool {
    h.len() <= 255 && h.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links(pairs: &[(&str, &str)]) -> String {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        Links::from_request(&h, "https://daten.example.org").root()
    }

    #[test]
    fn the_base_is_where_the_client_reached_the_server() {
        assert_eq!(links(&[]), "https://daten.example.org/sta/v1.1");
        assert_eq!(links(&[("host", "127.0.0.1:4000")]), "http://127.0.0.1:4000/sta/v1.1");
        assert_eq!(links(&[("host", "daten.example.org")]), "https://daten.example.org/sta/v1.1");
        assert_eq!(
            links(&[("host", "a"), ("x-forwarded-host", "b.org"), ("x-forwarded-proto", "https")]),
            "https://b.org/sta/v1.1"
        );
        assert_eq!(links(&[("host", "evil/\"x")]), "https://daten.example.org/sta/v1.1", "a host that is not one is not used");
    }
}
