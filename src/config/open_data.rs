//! Checks of `[open_data]` that serde can't express: the DCAT-AP.de codes, the contact
//! point, the page size, the CORS origins.

use super::OpenDataSettings;

/// Each problem as (full key path, message).
pub fn problems(o: &OpenDataSettings) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut err = |key: &str, message: String| out.push((format!("open_data.{key}"), message));
    if o.municipality_key.len() != 8 || !o.municipality_key.bytes().all(|b| b.is_ascii_digit()) {
        err(
            "municipality_key",
            format!("expected the 8-digit Amtlicher Gemeindeschlüssel, e.g. 09162000, got {:?}", o.municipality_key),
        );
    }
    if o.contributor_id.is_empty() || !o.contributor_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        err(
            "contributor_id",
            format!("expected the id of the DCAT-AP.de contributor list (letters, digits, - and _), got {:?}", o.contributor_id),
        );
    }
    let authority_code = |v: &str| !v.is_empty() && v.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    if !(o.language.len() == 3 && authority_code(&o.language)) {
        err("language", format!("expected an EU language authority code such as DEU or ENG, got {:?}", o.language));
    }
    if !authority_code(&o.update_frequency) {
        err(
            "update_frequency",
            format!("expected an EU frequency authority code such as UPDATE_CONT, HOURLY or DAILY, got {:?}", o.update_frequency),
        );
    }
    if o.contact_name.trim().is_empty() {
        err("contact_name", "expected the name of the contact point".into());
    }
    if o.contact_email.is_none() && o.contact_url.is_none() && o.contact_phone.is_none() {
        err(
            "contact_email",
            "a contact point needs an e-mail address, a web page (contact_url) or a telephone number (contact_phone)".into(),
        );
    }
    if let Some(mail) = &o.contact_email {
        let parts: Vec<&str> = mail.split('@').collect();
        if parts.len() != 2
            || parts[0].is_empty()
            || !parts[1].contains('.')
            || mail.contains(char::is_whitespace)
            || mail.starts_with("mailto:")
        {
            err("contact_email", format!("expected an e-mail address such as stadtklima@example.org (no mailto:), got {mail:?}"));
        }
    }
    if let Some(url) = &o.contact_url {
        if !(url.starts_with("https://") || url.starts_with("http://")) || url.contains(char::is_whitespace) {
            err("contact_url", format!("expected an http(s) URL, got {url:?}"));
        }
    }
    if let Some(phone) = &o.contact_phone {
        if !phone.starts_with('+') || !phone[1..].bytes().all(|b| b.is_ascii_digit() || b == b' ' || b == b'-' || b == b'/') {
            err("contact_phone", format!("expected an international number such as +49 89 1234-0, got {phone:?}"));
        }
    }
    if !o.publisher_uri.starts_with("http://") && !o.publisher_uri.starts_with("https://") {
        err("publisher_uri", format!("expected an http(s) URI, got {:?}", o.publisher_uri));
    }
    if !(1..=1000).contains(&o.catalog_page_size) {
        err("catalog_page_size", "expected 1 to 1000 datasets per page".into());
    }
    if !(o.bbox_padding_m.is_finite() && (1.0..=10_000.0).contains(&o.bbox_padding_m)) {
        err("bbox_padding_m", "expected 1 to 10000 metres".into());
    }
    for (i, origin) in o.cors_origins.iter().enumerate() {
        let ok = origin == "*"
            || ((origin.starts_with("https://") || origin.starts_with("http://"))
                && origin.splitn(4, '/').nth(3).is_none()
                && axum::http::HeaderValue::from_str(origin).is_ok());
        if !ok {
            err(
                &format!("cors_origins[{i}]"),
                format!(
                    "expected \"*\" or an origin such as https://karte.example.org (scheme and host, no path), got {origin:?}"
                ),
            );
        }
    }
    if o.cors_origins.len() > 1 && o.cors_origins.iter().any(|c| c == "*") {
        err("cors_origins", "\"*\" stands alone: any origin, or a list of origins".into());
    }
    out
}
