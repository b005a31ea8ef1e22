//! Query-string and body helpers shared by the handlers.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::error::{ApiError, ErrorCode};
use crate::model::{SpanId, TraceId};
use crate::query::time::{parse_duration, parse_time};
use crate::query::Selector;
use crate::store::TimeRange;

/// Nanoseconds since the Unix epoch, now.
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// The query parameters of a request (the last value wins).
pub struct Params {
    values: HashMap<String, String>,
    now_ns: i64,
}

impl Params {
    /// From axum's parsed query pairs.
    pub fn new(pairs: Vec<(String, String)>) -> Self {
        Self {
            values: pairs.into_iter().collect(),
            now_ns: now_ns(),
        }
    }

    /// The time the request is evaluated at.
    pub fn now_ns(&self) -> i64 {
        self.now_ns
    }

    /// A parameter, `None` when absent or empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// All parameters.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// A time parameter.
    pub fn time(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.get(name)
            .map(|v| parse_time(v, self.now_ns))
            .transpose()
            .map_err(ApiError::from)
    }

    /// `from`/`until`-style range with the API defaults (`now-1h`, `now`).
    pub fn range_named(&self, from: &str, until: &str) -> Result<TimeRange, ApiError> {
        let until_ns = self.time(until)?.unwrap_or(self.now_ns);
        let from_ns = self.time(from)?.unwrap_or(until_ns - 3_600_000_000_000);
        if from_ns > until_ns {
            return Err(ApiError::invalid(format!("`{from}` is after `{until}`")));
        }
        // `until` is inclusive for users: a point stored at exactly `until` is in range.
        Ok(TimeRange {
            from_ns,
            until_ns: until_ns.saturating_add(1),
        })
    }

    /// `from`/`until`.
    pub fn range(&self) -> Result<TimeRange, ApiError> {
        self.range_named("from", "until")
    }

    /// Whether the request gave `from` or `until`.
    pub fn has_range(&self) -> bool {
        self.get("from").is_some() || self.get("until").is_some()
    }

    /// A label selector parameter (empty when absent).
    pub fn selector(&self, name: &str) -> Result<Selector, ApiError> {
        Ok(Selector::parse(self.get(name).unwrap_or(""))?)
    }

    /// A positive integer parameter.
    pub fn usize(&self, name: &str, default: usize) -> Result<usize, ApiError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                ApiError::invalid(format!("`{name}` must be a positive integer, not {v:?}"))
            }),
        }
    }

    /// A non-negative number parameter.
    pub fn f64(&self, name: &str) -> Result<Option<f64>, ApiError> {
        self.get(name)
            .map(|v| {
                v.parse::<f64>()
                    .ok()
                    .filter(|n| n.is_finite() && *n >= 0.0)
                    .ok_or_else(|| {
                        ApiError::invalid(format!("`{name}` must be a number ≥ 0, not {v:?}"))
                    })
            })
            .transpose()
    }

    /// A duration parameter in nanoseconds.
    pub fn duration_ns(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.get(name)
            .map(|v| {
                let d = parse_duration(v)?;
                Ok(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            })
            .transpose()
    }

    /// A hex trace id parameter.
    pub fn trace_id(&self, name: &str) -> Result<Option<TraceId>, ApiError> {
        self.get(name).map(parse_trace_id).transpose()
    }

    /// A hex span id parameter.
    pub fn span_id(&self, name: &str) -> Result<Option<SpanId>, ApiError> {
        self.get(name).map(parse_span_id).transpose()
    }
}

/// Parses a 32-hex-digit trace id.
pub fn parse_trace_id(hex: &str) -> Result<TraceId, ApiError> {
    TraceId::from_hex(hex)
        .ok_or_else(|| ApiError::invalid(format!("trace id must be 32 hex digits, not {hex:?}")))
}

/// Parses a 16-hex-digit span id.
pub fn parse_span_id(hex: &str) -> Result<SpanId, ApiError> {
    SpanId::from_hex(hex)
        .ok_or_else(|| ApiError::invalid(format!("span id must be 16 hex digits, not {hex:?}")))
}

/// Reads a request body of at most `limit` bytes (413 beyond).
pub async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("request body is larger than {limit} bytes (--max-body-bytes)"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(error) => Err(ApiError::invalid(format!(
            "cannot read request body: {error}"
        ))),
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        let axum::extract::Query(pairs) =
            axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
                .map_err(|e| ApiError::invalid(format!("invalid query string: {e}")))?;
        Ok(Self::new(pairs))
    }
}
