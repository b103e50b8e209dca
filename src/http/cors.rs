//! `--cors-origin`: lets a browser application on named origins call the
//! API with a bearer token. Off unless an origin is given; never with
//! credentials (cookies), so the dashboard's session is never exposed to
//! another origin.

use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Most origins one server accepts.
pub const MAX_CORS_ORIGINS: usize = 100;

/// How long a browser may keep a preflight's answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// An origin as browsers send it: `scheme://host[:port]`, http or https,
/// with no path, query or trailing slash.
pub fn parse_origin(text: &str) -> Result<HeaderValue, String> {
    let bad = || {
        format!(
            "--cors-origin {text:?} is not an origin: give scheme://host[:port], e.g. https://app.example.com"
        )
    };
    let uri: axum::http::Uri = text.parse().map_err(|_| bad())?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    let bare = uri.authority().is_some_and(|a| !a.as_str().contains('@'))
        && uri.path_and_query().is_none_or(|p| p.as_str().is_empty() || p.as_str() == "/")
        && !text.ends_with('/');
    if !scheme_ok || !bare {
        return Err(bad());
    }
    HeaderValue::from_str(text).map_err(|_| bad())
}

/// The layer for `origins`, or `None` when there are none.
pub fn layer(origins: &[HeaderValue]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins.iter().cloned()))
            .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::PUT, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("idempotency-key"),
            ])
            .expose_headers([
                header::LOCATION,
                header::RETRY_AFTER,
                HeaderName::from_static("idempotent-replayed"),
                HeaderName::from_static("x-request-id"),
            ])
            .max_age(PREFLIGHT_MAX_AGE),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_scheme_host_and_port_only() {
        for good in ["https://app.example.com", "http://127.0.0.1:5173", "http://localhost"] {
            assert!(parse_origin(good).is_ok(), "{good}");
        }
        for bad in [
            "app.example.com",
            "https://app.example.com/",
            "https://app.example.com/path",
            "https://app.example.com?x=1",
            "ftp://files.example.com",
            "*",
            "null",
            "https://user@app.example.com",
            "",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
    }
}
