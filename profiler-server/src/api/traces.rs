//! Trace search, trace detail and RED series.

use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value};

use super::params::{parse_trace_id, Params};
use super::AppState;
use crate::error::ApiError;
use crate::query::red::{self, RedWindow};
use crate::store::{RedFilter, TimeRange, TraceFilter};

/// How far before `from` RED points are fetched, so cumulative points have a predecessor
/// (covers export intervals up to this long).
const RED_LOOKBACK_NS: i64 = 10 * 60 * 1_000_000_000;

fn ms(ns: i64) -> f64 {
    ns as f64 / 1e6
}

/// `GET /api/v1/traces`.
pub async fn traces(
    State(state): State<AppState>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let error = match params.get("status") {
        None => None,
        Some("ok") => Some(false),
        Some("error") => Some(true),
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "`status` must be `ok` or `error`, not {other:?}"
            )))
        }
    };
    let min_duration_ns = params.f64("min_duration_ms")?.map(|ms| (ms * 1e6) as i64);
    let filter = TraceFilter {
        range: Some(params.range()?),
        service: params.get("service").map(str::to_owned),
        route: params.get("route").map(str::to_owned),
        error,
        min_duration_ns,
        limit: params.usize("limit", 100)?,
    };
    let traces: Vec<Value> = state
        .store
        .traces(filter)
        .await?
        .into_iter()
        .map(|t| {
            json!({
                "trace_id": t.trace_id.to_string(),
                "service": t.service,
                "name": t.name,
                "start_unix_nano": t.start_ns.to_string(),
                "duration_ms": ms(t.end_ns - t.start_ns),
                "status": if t.error { "error" } else { "ok" },
                "span_count": t.span_count,
                "has_profile": t.has_profile,
            })
        })
        .collect();
    Ok(Json(json!({ "traces": traces })))
}

/// `GET /api/v1/traces/{trace_id}`.
pub async fn trace(
    State(state): State<AppState>,
    Path(trace_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_trace_id(&trace_id)?;
    let spans = state.store.trace(id).await?;
    if spans.is_empty() {
        return Err(ApiError::not_found(format!(
            "trace {id} is unknown (or past retention)"
        )));
    }
    let spans: Vec<Value> = spans
        .into_iter()
        .map(|detail| {
            let s = detail.span;
            json!({
                "span_id": s.span_id.to_string(),
                "parent_span_id": s.parent_span_id.map(|p| p.to_string()),
                "name": s.name,
                "service": s.service,
                "kind": s.kind.as_str(),
                "start_unix_nano": s.start_ns.to_string(),
                "end_unix_nano": s.end_ns.to_string(),
                "duration_ms": ms(s.end_ns - s.start_ns),
                "status": s.status.as_str(),
                "attributes": s.attributes,
                "profile_samples": detail.profile_samples,
            })
        })
        .collect();
    Ok(Json(json!({ "trace_id": id.to_string(), "spans": spans })))
}

/// `GET /api/v1/red`.
pub async fn red(State(state): State<AppState>, params: Params) -> Result<Json<Value>, ApiError> {
    let range = params.range()?;
    let step_ns = match params.duration_ns("step")? {
        Some(step) if step >= 1_000_000_000 => step,
        Some(_) => return Err(ApiError::invalid("`step` must be at least 1s")),
        None => red::default_step_ns(range.from_ns, range.until_ns),
    };
    if (range.until_ns - range.from_ns) / step_ns > 10_000 {
        return Err(ApiError::invalid(
            "range/step gives more than 10000 points; raise `step`",
        ));
    }
    let fetched_from_ns = range.from_ns.saturating_sub(RED_LOOKBACK_NS);
    let filter = RedFilter {
        range: Some(TimeRange {
            from_ns: fetched_from_ns,
            until_ns: range.until_ns,
        }),
        service: params.get("service").map(str::to_owned),
        route: params.get("route").map(str::to_owned),
    };
    let points = state.store.red_points(filter).await?;
    let window = RedWindow {
        from_ns: range.from_ns,
        until_ns: range.until_ns,
        step_ns,
        fetched_from_ns,
    };
    Ok(Json(json!(red::red(&points, window))))
}
