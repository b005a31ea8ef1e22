//! `POST /api/v1/profiles` and Pyroscope's `POST /ingest`: read the body, decode and
//! normalize the pprof off the async threads, store it in one transaction, answer after the
//! commit. Malformed input is a 400 and stores nothing.

use std::io::Read;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::Json;
use serde_json::{json, Value};

use super::params::{read_body, Params};
use super::AppState;
use crate::error::ApiError;
use crate::ingest::{pprof, pyroscope};
use crate::model::{Labels, Profile, SERVICE_LABEL};
use crate::query::time::from_unix_number;

/// Query parameters of `/api/v1/profiles` that are not labels.
const RESERVED: [&str; 3] = [SERVICE_LABEL, "from", "until"];

/// `POST /api/v1/profiles?service_name=...&from&until&label=value`.
pub async fn profiles(
    State(state): State<AppState>,
    params: Params,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let service = params
        .get(SERVICE_LABEL)
        .ok_or_else(|| ApiError::invalid("`service_name` is required"))?;
    let mut labels: Labels = vec![(SERVICE_LABEL.to_owned(), service.to_owned())];
    for (name, value) in params.iter() {
        if RESERVED.contains(&name) || value.is_empty() {
            continue;
        }
        if !valid_label_name(name) {
            return Err(ApiError::invalid(format!(
                "label name {name:?} must match [a-zA-Z_][a-zA-Z0-9_.]*"
            )));
        }
        labels.push((name.to_owned(), value.to_owned()));
    }
    labels.sort();
    let from_ns = params.time("from")?;
    let body = read_body(&headers, body, state.max_body_bytes).await?;
    let gzipped = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    let now_ns = params.now_ns();
    let profile = tokio::task::spawn_blocking(move || -> Result<Profile, ApiError> {
        let body = if gzipped { gunzip(&body)? } else { body };
        let mut profile = pprof::decode(&body, &labels)?;
        profile.time_ns = from_ns
            .or((profile.time_ns > 0).then_some(profile.time_ns))
            .unwrap_or(now_ns);
        Ok(profile)
    })
    .await
    .map_err(|e| ApiError::internal(format!("decoder task failed: {e}")))??;
    let (samples, series) = store(&state, profile).await?;
    Ok(Json(json!({"samples": samples, "series": series})))
}

/// `POST /ingest?name=app{labels}&from&until&format=pprof&sampleRate` (Pyroscope).
pub async fn pyroscope(
    State(state): State<AppState>,
    params: Params,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let name = params
        .get("name")
        .ok_or_else(|| ApiError::invalid("`name` is required (e.g. `name=app{env=prod}`)"))?;
    let labels = pyroscope::parse_name(name)?;
    if let Some(format) = params.get("format") {
        if format != "pprof" {
            return Err(ApiError::invalid(format!(
                "format {format:?} is not supported; send pprof (format=pprof)"
            )));
        }
    }
    let from_ns = params
        .get("from")
        .map(|v| {
            v.parse::<i64>()
                .map(from_unix_number)
                .map_err(|_| ApiError::invalid(format!("`from` must be unix seconds, not {v:?}")))
        })
        .transpose()?;
    let sample_rate = params
        .get("sampleRate")
        .map(|v| {
            v.parse::<i64>().ok().filter(|r| *r > 0).ok_or_else(|| {
                ApiError::invalid(format!(
                    "`sampleRate` must be a positive integer, not {v:?}"
                ))
            })
        })
        .transpose()?;
    let boundary = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(pyroscope::multipart_boundary)
        .map(str::to_owned);
    let body = read_body(&headers, body, state.max_body_bytes).await?;
    let now_ns = params.now_ns();
    let profile = tokio::task::spawn_blocking(move || -> Result<Profile, ApiError> {
        let pprof_bytes = match &boundary {
            Some(boundary) => pyroscope::multipart_field(&body, boundary, "profile")?,
            None => &body[..],
        };
        let mut profile = pprof::decode(pprof_bytes, &labels)?;
        profile.time_ns = from_ns
            .or((profile.time_ns > 0).then_some(profile.time_ns))
            .unwrap_or(now_ns);
        if profile.period_ns == 0 {
            if let Some(rate) = sample_rate {
                profile.period_ns = 1_000_000_000 / rate;
            }
        }
        Ok(profile)
    })
    .await
    .map_err(|e| ApiError::internal(format!("decoder task failed: {e}")))??;
    store(&state, profile).await?;
    Ok(Json(json!({})))
}

async fn store(state: &AppState, profile: Profile) -> Result<(u64, usize), ApiError> {
    if profile.samples.is_empty() {
        return Ok((0, 0));
    }
    let summary = state.store.write_profile(profile).await?;
    tracing::debug!(
        samples = summary.samples,
        series = summary.series,
        "profile stored"
    );
    Ok((summary.samples, summary.series))
}

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c == '.' || c.is_ascii_alphanumeric())
}

/// Undoes `Content-Encoding: gzip` (the pprof inside may be gzipped again).
fn gunzip(body: &[u8]) -> Result<Bytes, ApiError> {
    let mut out = Vec::new();
    let limit = profiler_pprof::MAX_DECODED_BYTES as u64 + 1;
    flate2::read::MultiGzDecoder::new(body)
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| {
            ApiError::invalid(format!("invalid gzip body (Content-Encoding: gzip): {e}"))
        })?;
    if out.len() as u64 >= limit {
        return Err(ApiError::invalid(format!(
            "decompressed body is larger than {} bytes",
            profiler_pprof::MAX_DECODED_BYTES
        )));
    }
    Ok(out.into())
}
