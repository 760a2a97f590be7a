//! A citizen sensor's token from a request: `Authorization: Bearer <token>`, or HTTP Basic
//! with the token as the password (what the sensor.community firmware's custom API sends
//! when a user and password are set; the user name is not checked).

use axum::http::{header, HeaderMap};

use super::error::CitizenError;
use crate::citizens::{id_of_token, CitizenSensor};
use crate::store::ApiStore;

/// Longest token looked at; real ones are about 60 characters.
const MAX_TOKEN: usize = 256;

/// The token a request carries, if any.
pub fn token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    let token = if scheme.eq_ignore_ascii_case("bearer") {
        rest.trim().to_owned()
    } else if scheme.eq_ignore_ascii_case("basic") {
        use base64::Engine;
        let decoded = base64::engine::general_purpose::STANDARD.decode(rest.trim()).ok()?;
        let text = String::from_utf8(decoded).ok()?;
        text.split_once(':')?.1.to_owned()
    } else {
        return None;
    };
    (!token.is_empty() && token.len() <= MAX_TOKEN).then_some(token)
}

/// The sensor whose token the request carries. Blocks (a store read).
pub fn sensor(store: &dyn ApiStore, headers: &HeaderMap) -> Result<CitizenSensor, CitizenError> {
    let refused = || CitizenError::Unauthorized("a sensor token is needed: Authorization: Bearer <token>".into());
    let token = token(headers).ok_or_else(refused)?;
    let id = id_of_token(&token).ok_or_else(refused)?;
    match store.citizen_sensor(&id)? {
        Some(sensor) if sensor.verifies(&token) => Ok(sensor),
        _ => Err(refused()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn bearer_and_basic_carry_the_token() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer c-1.abc"));
        assert_eq!(token(&h).as_deref(), Some("c-1.abc"));
        // "esp8266-1:c-1.abc"
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic ZXNwODI2Ni0xOmMtMS5hYmM="));
        assert_eq!(token(&h).as_deref(), Some("c-1.abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Digest x"));
        assert_eq!(token(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic !!!"));
        assert_eq!(token(&h), None);
    }
}
