//! What makes the open routes usable from web pages and downloads: CORS, gzip/brotli by
//! `Accept-Encoding`, and a licence `Link` on every answer. Never applied to `/v1/admin/`
//! (no CORS there: a page on another origin must not drive the operator API from a browser).

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::{licence_link, AppState};

/// CORS for the configured origins (`["*"]`: any). Pages may read the headers a client of
/// open data needs: the licence and paging links, the ETag, the download's file name.
pub fn cors(origins: &[String]) -> CorsLayer {
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::HEAD])
        .allow_headers([header::ACCEPT, header::IF_NONE_MATCH, header::ACCEPT_LANGUAGE])
        .expose_headers([header::LINK, header::ETAG, header::CONTENT_DISPOSITION, HeaderName::from_static("vary")])
        .max_age(Duration::from_secs(3600))
}

/// gzip and brotli, whichever the client prefers; tower-http leaves out bodies under 32
/// bytes, images and streams, and takes brotli at quality 4 (fast enough for live answers).
pub fn compression() -> CompressionLayer {
    CompressionLayer::new().gzip(true).br(true)
}

/// Every open answer names its licence: a handler that knows the data's own licence(s) sets
/// the `Link: rel="license"` itself; every other one (the OpenAPI document, errors) gets the
/// licence of the open data as a whole, `open_data.district_licence`.
pub async fn licence(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let has = response.headers().get_all(header::LINK).iter().any(|v| v.to_str().is_ok_and(|v| v.contains("rel=\"license\"")));
    if !has {
        licence_link(&mut response, &state.open_data.district_licence);
    }
    response
}
