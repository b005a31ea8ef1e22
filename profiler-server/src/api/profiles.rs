//! Profile queries: services, labels, flame graph, top functions, diff, span flame graph.

use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value};

use super::params::{parse_span_id, Params};
use super::AppState;
use crate::error::ApiError;
use crate::model::{SPAN_ID_LABEL, TRACE_ID_LABEL};
use crate::query::tree::{self, DEFAULT_MAX_NODES};
use crate::store::{ProfileFilter, TimeRange};

/// Most label values returned.
const MAX_LABEL_VALUES: usize = 1000;

/// `GET /api/v1/services`.
pub async fn services(
    State(state): State<AppState>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let services = state.store.services(params.range()?).await?;
    let services: Vec<Value> = services
        .into_iter()
        .map(|s| json!({"name": s.name, "profile_samples": s.profile_samples, "spans": s.spans}))
        .collect();
    Ok(Json(json!({ "services": services })))
}

/// `GET /api/v1/labels`.
pub async fn labels(
    State(state): State<AppState>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let labels = state
        .store
        .label_names(params.range()?, params.selector("query")?)
        .await?;
    Ok(Json(json!({ "labels": labels })))
}

/// `GET /api/v1/labels/{name}/values`.
pub async fn label_values(
    State(state): State<AppState>,
    Path(name): Path<String>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let values = state
        .store
        .label_values(
            params.range()?,
            params.selector("query")?,
            name,
            MAX_LABEL_VALUES,
        )
        .await?;
    Ok(Json(json!({ "values": values })))
}

/// The profile filter of `/flamegraph`-like requests: `query`, `from`/`until`, `trace_id`,
/// `span_id` (also accepted as `trace_id="..."` matchers of the query). Filtered by trace or
/// span without an explicit range, the whole retention is searched: spans are looked up by id.
fn profile_filter(params: &Params, query: &str) -> Result<ProfileFilter, ApiError> {
    let mut selector = params.selector(query)?;
    let mut trace_id = params.trace_id("trace_id")?;
    let mut span_id = params.span_id("span_id")?;
    if let Some(hex) = selector.take_equal(TRACE_ID_LABEL) {
        trace_id = Some(super::params::parse_trace_id(&hex)?);
    }
    if let Some(hex) = selector.take_equal(SPAN_ID_LABEL) {
        span_id = Some(parse_span_id(&hex)?);
    }
    let range = if (trace_id.is_some() || span_id.is_some()) && !params.has_range() {
        TimeRange::ALL
    } else {
        params.range()?
    };
    Ok(ProfileFilter {
        range,
        selector,
        trace_id,
        span_id,
    })
}

/// `GET /api/v1/flamegraph`.
pub async fn flamegraph(
    State(state): State<AppState>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let filter = profile_filter(&params, "query")?;
    let max_nodes = params.usize("max_nodes", DEFAULT_MAX_NODES)?;
    let counts = state.store.stack_counts(filter).await?;
    Ok(Json(json!(tree::flame_graph(&counts, max_nodes))))
}

/// `GET /api/v1/spans/{span_id}/flamegraph?trace_id`.
pub async fn span_flamegraph(
    State(state): State<AppState>,
    Path(span_id): Path<String>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let mut filter = profile_filter(&params, "query")?;
    filter.span_id = Some(parse_span_id(&span_id)?);
    if !params.has_range() {
        filter.range = TimeRange::ALL;
    }
    let max_nodes = params.usize("max_nodes", DEFAULT_MAX_NODES)?;
    let counts = state.store.stack_counts(filter).await?;
    Ok(Json(json!(tree::flame_graph(&counts, max_nodes))))
}

/// `GET /api/v1/top`.
pub async fn top(State(state): State<AppState>, params: Params) -> Result<Json<Value>, ApiError> {
    let filter = profile_filter(&params, "query")?;
    let limit = params.usize("limit", 100)?;
    let counts = state.store.stack_counts(filter).await?;
    Ok(Json(json!(tree::top(&counts, limit))))
}

/// `GET /api/v1/diff`: base defaults to the same query over the preceding range of equal
/// length.
pub async fn diff(State(state): State<AppState>, params: Params) -> Result<Json<Value>, ApiError> {
    let filter = profile_filter(&params, "query")?;
    let range = filter.range;
    let length = range.until_ns.saturating_sub(range.from_ns);
    let base_range = if params.get("base_from").is_some() || params.get("base_until").is_some() {
        params.range_named("base_from", "base_until")?
    } else {
        TimeRange {
            from_ns: range.from_ns.saturating_sub(length),
            until_ns: range.from_ns,
        }
    };
    let base_query = if params.get("base_query").is_some() {
        "base_query"
    } else {
        "query"
    };
    let mut base = profile_filter(&params, base_query)?;
    base.range = base_range;
    let max_nodes = params.usize("max_nodes", DEFAULT_MAX_NODES)?;
    let (counts, base_counts) = tokio::try_join!(
        state.store.stack_counts(filter),
        state.store.stack_counts(base)
    )?;
    Ok(Json(json!(tree::diff(&counts, &base_counts, max_nodes))))
}
