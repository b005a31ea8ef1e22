//! The HTTP side: one axum router for the JSON query API (`/api/v1/...`), the HTTP ingest
//! endpoints (`/ingest`, `/api/v1/profiles`), the health checks and the UI's static files.
//! The spec is `docs/api.md`. Handlers parse with [`params`], call the [`Store`] and the pure
//! [`crate::query`] functions, and fail with [`ApiError`] (`{"error": {"code", "message"}}`).

pub mod auth;
mod ingest;
mod params;

pub use params::now_ns;
mod profiles;
mod traces;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::error::ApiError;
use crate::store::Store;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Bearer token required on `/api` and `/ingest`, if set.
    pub auth_token: Option<Arc<str>>,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
}

/// The router of the HTTP port.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/ingest", post(ingest::pyroscope))
        .route("/api/v1/profiles", post(ingest::profiles))
        .route("/api/v1/services", get(profiles::services))
        .route("/api/v1/labels", get(profiles::labels))
        .route("/api/v1/labels/{name}/values", get(profiles::label_values))
        .route("/api/v1/flamegraph", get(profiles::flamegraph))
        .route("/api/v1/top", get(profiles::top))
        .route("/api/v1/diff", get(profiles::diff))
        .route(
            "/api/v1/spans/{span_id}/flamegraph",
            get(profiles::span_flamegraph),
        )
        .route("/api/v1/red", get(traces::red))
        .route("/api/v1/traces", get(traces::traces))
        .route("/api/v1/traces/{trace_id}", get(traces::trace))
        .route("/api/{*rest}", axum::routing::any(api_not_found))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .merge(api)
        .fallback(static_file)
        .layer(tower_http::compression::CompressionLayer::new())
        .with_state(state)
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.store.is_ready() {
        "ready".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "store not open").into_response()
    }
}

async fn api_not_found(request: Request) -> ApiError {
    ApiError::not_found(format!(
        "no API endpoint {} {} (see docs/api.md)",
        request.method(),
        request.uri().path()
    ))
}

/// Serves the UI for `GET`s outside the API; 404 otherwise.
async fn static_file(request: Request) -> Response {
    let path = request.uri().path();
    if request.method() == Method::GET || request.method() == Method::HEAD {
        if let Some((content_type, body)) = crate::ui::asset(path) {
            return ([(header::CONTENT_TYPE, content_type)], body).into_response();
        }
    }
    ApiError::not_found(format!("no such path: {path}")).into_response()
}
