//! The dashboard's two static files, compiled into the binary: one small
//! stylesheet and the live-price script (the only JavaScript).

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::IntoResponse;

pub async fn style() -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/css; charset=utf-8"), (CACHE_CONTROL, "max-age=300")],
        include_str!("assets/style.css"),
    )
}

pub async fn script() -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/javascript; charset=utf-8"), (CACHE_CONTROL, "max-age=300")],
        include_str!("assets/price.js"),
    )
}
