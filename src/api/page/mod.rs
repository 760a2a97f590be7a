//! The public page at `/`: a map of the open devices, their latest values, charts of the last
//! day and week, the district aggregates, and the citizens' registration form.
//!
//! - [`html`] renders the page on the server; its tables of latest values and district
//!   aggregates need no JavaScript;
//! - [`data`] reads what it shows; [`i18n`] holds its words (German, English);
//! - `app.js` (map, charts, forms) and `style.css` are embedded in the binary and served
//!   under `/page/`: the gateway needs no CDN and no internet (map tiles are optional).

mod data;
mod html;
mod i18n;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use super::error::ApiError;
use super::AppState;
pub use html::registered;
pub use i18n::Lang;

/// The script: map, charts, device details, forms.
const APP_JS: &str = include_str!("app.js");
/// The style sheet.
const STYLE_CSS: &str = include_str!("style.css");

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/page/app.js", get(|| asset("text/javascript; charset=utf-8", APP_JS)))
        .route("/page/style.css", get(|| asset("text/css; charset=utf-8", STYLE_CSS)))
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "public, max-age=3600")], body).into_response()
}

#[derive(Deserialize)]
struct PageQuery {
    lang: Option<String>,
}

async fn index(State(state): State<AppState>, Query(q): Query<PageQuery>) -> Result<Response, ApiError> {
    let lang = Lang::parse(q.lang.as_deref());
    let (store, devices) = (state.store.clone(), state.registry.devices());
    let data = tokio::task::spawn_blocking(move || data::gather(&*store, &devices, chrono::Utc::now()))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    let body = html::index(lang, &state.page, &state.open_data, &data, state.citizens.settings.enabled);
    let mut response = Html(body).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-cache"));
    // Only what the page itself loads: its own script, style and data, and the map tiles.
    let tiles = state.page.tiles().and_then(tile_origin).unwrap_or_default();
    let csp = format!(
        "default-src 'self'; img-src 'self' data: {tiles}; script-src 'self'; style-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'"
    );
    if let Ok(v) = header::HeaderValue::from_str(&csp) {
        response.headers_mut().insert(header::CONTENT_SECURITY_POLICY, v);
    }
    Ok(response)
}

/// `https://tile.example.org` of a tile URL template.
fn tile_origin(template: &str) -> Option<String> {
    let rest = template
        .strip_prefix("https://")
        .map(|r| ("https://", r))
        .or(template.strip_prefix("http://").map(|r| ("http://", r)))?;
    let host = rest.1.split('/').next()?;
    (!host.is_empty() && !host.contains(['{', ' ', ';', '\''])).then(|| format!("{}{host}", rest.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tile_origin_goes_into_the_policy() {
        assert_eq!(
            tile_origin("https://tile.openstreetmap.org/{z}/{x}/{y}.png").as_deref(),
            Some("https://tile.openstreetmap.org")
        );
        assert_eq!(tile_origin("/tiles/{z}/{x}/{y}.png"), None);
        assert_eq!(tile_origin("https://{s}.tile.example/{z}/{x}/{y}.png"), None);
    }

    #[test]
    fn the_page_stays_small() {
        assert!(APP_JS.len() + STYLE_CSS.len() < 100 * 1024, "script and style: {} bytes", APP_JS.len() + STYLE_CSS.len());
    }
}
