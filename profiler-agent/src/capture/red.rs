//! RED metrics (rate, errors, duration) of captured requests: one duration histogram per
//! (resource, metric, attribute set), aggregated in memory and taken as OTLP-style DELTA
//! histograms every export interval. Pure: no IO, the caller passes the time of each
//! [`RedAggregator::take`] (only [`RedAggregator::new`] reads the clock, once).
//!
//! Cardinality is bounded the way the OTel SDKs do it: once a service has
//! `max_series_per_service` series of a metric, recordings with a new attribute set go to one
//! overflow series per (resource, metric) whose only attribute is `otel.metric.overflow=true`.
//! Series idle for [`FORGET_AFTER_IDLE_TAKES`] takes are forgotten and free their slot, so memory
//! stays bounded while the cap still holds within every interval.
//!
//! Invalid durations (NaN, infinite, negative) are dropped and counted
//! ([`RedStats::invalid_durations`]) rather than clamped to zero: a clamped value would
//! invent a fast request and pull the low quantiles down, while a dropped one is visible in
//! the counter (and the request still has its span).

use std::{
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use rustc_hash::FxHashMap;

use super::span::{AttrValue, Attribute, Resource, Span, SpanKind};

/// Bucket upper bounds of every duration histogram, seconds: the OTel HTTP semantic
/// conventions' advice. OTel buckets are `(previous bound, bound]`, plus `(10, +inf)`.
pub const DURATION_BUCKETS_S: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Number of bucket counts of a histogram: one per bound plus the overflow bucket.
pub const BUCKET_COUNT: usize = DURATION_BUCKETS_S.len() + 1;

/// A series that received nothing for this many takes in a row is forgotten.
pub const FORGET_AFTER_IDLE_TAKES: u32 = 10;

/// The attribute of the overflow series (OTel SDK cardinality-limit convention).
pub const OVERFLOW_ATTRIBUTE: &str = "otel.metric.overflow";

/// The duration metrics of the OTel semantic conventions, all in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DurationMetric {
    HttpServer,
    HttpClient,
    RpcServer,
    RpcClient,
}

impl DurationMetric {
    pub const ALL: [DurationMetric; 4] = [
        DurationMetric::HttpServer,
        DurationMetric::HttpClient,
        DurationMetric::RpcServer,
        DurationMetric::RpcClient,
    ];

    /// The HTTP metric of a span kind.
    pub fn http(kind: SpanKind) -> Self {
        match kind {
            SpanKind::Server => DurationMetric::HttpServer,
            SpanKind::Client => DurationMetric::HttpClient,
        }
    }

    /// The metric of a span: RPC for gRPC calls (`rpc.system` set), else HTTP.
    pub fn of(span: &Span) -> Self {
        let rpc = span.attributes.iter().any(|(name, _)| name == "rpc.system");
        match (rpc, span.kind) {
            (true, SpanKind::Server) => DurationMetric::RpcServer,
            (true, SpanKind::Client) => DurationMetric::RpcClient,
            (false, kind) => DurationMetric::http(kind),
        }
    }

    /// The semantic-convention metric name.
    pub fn name(self) -> &'static str {
        match self {
            DurationMetric::HttpServer => "http.server.request.duration",
            DurationMetric::HttpClient => "http.client.request.duration",
            DurationMetric::RpcServer => "rpc.server.call.duration",
            DurationMetric::RpcClient => "rpc.client.call.duration",
        }
    }

    /// The semantic-convention description.
    pub fn description(self) -> &'static str {
        match self {
            DurationMetric::HttpServer => "Duration of HTTP server requests.",
            DurationMetric::HttpClient => "Duration of HTTP client requests.",
            DurationMetric::RpcServer => "Measures the duration of inbound RPC.",
            DurationMetric::RpcClient => "Measures the duration of outbound RPC.",
        }
    }

    /// The UCUM unit of every duration metric.
    pub fn unit(self) -> &'static str {
        "s"
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One histogram data point: what a series received during `[start_unix_ns, end_unix_ns)`.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramSeries {
    pub resource: Arc<Resource>,
    pub metric: DurationMetric,
    /// Sorted by name, names unique.
    pub attributes: Vec<Attribute>,
    pub start_unix_ns: u64,
    pub end_unix_ns: u64,
    pub count: u64,
    pub sum_s: f64,
    pub min_s: f64,
    pub max_s: f64,
    /// Counts per bucket of [`DURATION_BUCKETS_S`]: `BUCKET_COUNT` entries, the last one for
    /// values above the last bound.
    pub bucket_counts: Vec<u64>,
}

/// Cumulative counters of an aggregator since it was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RedStats {
    /// Recordings that went to an overflow series because of the cap.
    pub overflow_recordings: u64,
    /// Recordings dropped because the duration was NaN, infinite or negative.
    pub invalid_durations: u64,
    /// Series forgotten after being idle.
    pub forgotten_series: u64,
    /// Series currently held (overflow series included).
    pub live_series: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct SeriesKey {
    resource: Arc<Resource>,
    metric: DurationMetric,
    attributes: Vec<Attribute>,
}

struct SeriesState {
    overflow: bool,
    /// Takes in a row in which the series received nothing.
    idle_takes: u32,
    count: u64,
    sum_s: f64,
    min_s: f64,
    max_s: f64,
    bucket_counts: [u64; BUCKET_COUNT],
}

impl SeriesState {
    fn new(overflow: bool) -> Self {
        SeriesState {
            overflow,
            idle_takes: 0,
            count: 0,
            sum_s: 0.0,
            min_s: f64::INFINITY,
            max_s: f64::NEG_INFINITY,
            bucket_counts: [0; BUCKET_COUNT],
        }
    }

    fn record(&mut self, duration_s: f64) {
        self.count += 1;
        self.sum_s += duration_s;
        self.min_s = self.min_s.min(duration_s);
        self.max_s = self.max_s.max(duration_s);
        self.bucket_counts[bucket_index(duration_s)] += 1;
    }

    fn reset(&mut self) {
        *self = SeriesState::new(self.overflow);
    }
}

/// The bucket of a (valid) duration: the first bound it does not exceed.
pub fn bucket_index(duration_s: f64) -> usize {
    DURATION_BUCKETS_S.partition_point(|&bound| bound < duration_s)
}

/// Aggregates durations into delta histograms with a per-service cardinality cap.
pub struct RedAggregator {
    max_series_per_service: usize,
    series: FxHashMap<SeriesKey, SeriesState>,
    /// Regular (non-overflow) series per service name, per [`DurationMetric::index`].
    series_per_service: FxHashMap<String, [usize; DurationMetric::ALL.len()]>,
    /// Start of the current interval: the previous take, or the creation.
    interval_start_unix_ns: u64,
    stats: RedStats,
}

impl RedAggregator {
    /// An aggregator whose first interval starts now (wall clock).
    pub fn new(max_series_per_service: usize) -> Self {
        let now_unix_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| {
                u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
            });
        Self::starting_at(max_series_per_service, now_unix_ns)
    }

    /// An aggregator whose first interval starts at `start_unix_ns`.
    pub fn starting_at(max_series_per_service: usize, start_unix_ns: u64) -> Self {
        RedAggregator {
            max_series_per_service,
            series: FxHashMap::default(),
            series_per_service: FxHashMap::default(),
            interval_start_unix_ns: start_unix_ns,
            stats: RedStats::default(),
        }
    }

    /// Records one duration. Attributes are sorted by name (for duplicate names the first
    /// one wins), so their order does not matter.
    pub fn record(
        &mut self,
        resource: &Arc<Resource>,
        metric: DurationMetric,
        mut attributes: Vec<Attribute>,
        duration_s: f64,
    ) {
        if !duration_s.is_finite() || duration_s < 0.0 {
            self.stats.invalid_durations += 1;
            return;
        }
        // Only -0.0 changes: it would otherwise become the minimum.
        let duration_s = duration_s.abs();
        attributes.sort_by(|a, b| a.0.cmp(&b.0));
        attributes.dedup_by(|later, first| later.0 == first.0);
        let key = SeriesKey {
            resource: Arc::clone(resource),
            metric,
            attributes,
        };
        if let Some(state) = self.series.get_mut(&key) {
            state.record(duration_s);
            return;
        }
        let service_series = self
            .series_per_service
            .get(&resource.service_name)
            .map_or(0, |counts| counts[metric.index()]);
        if service_series < self.max_series_per_service {
            self.series_per_service
                .entry(resource.service_name.clone())
                .or_default()[metric.index()] += 1;
            let mut state = SeriesState::new(false);
            state.record(duration_s);
            self.series.insert(key, state);
            return;
        }
        self.stats.overflow_recordings += 1;
        let overflow_key = SeriesKey {
            attributes: vec![(OVERFLOW_ATTRIBUTE.into(), AttrValue::Bool(true))],
            ..key
        };
        self.series
            .entry(overflow_key)
            .or_insert_with(|| SeriesState::new(true))
            .record(duration_s);
    }

    /// Returns what every series received since the previous take (series that received
    /// nothing are left out) and starts a new interval at `now_unix_ns`. Forgets the series
    /// idle for [`FORGET_AFTER_IDLE_TAKES`] takes.
    pub fn take(&mut self, now_unix_ns: u64) -> Vec<HistogramSeries> {
        let start_unix_ns = self.interval_start_unix_ns;
        self.interval_start_unix_ns = now_unix_ns;
        let mut out = Vec::new();
        let mut forgotten = 0;
        let series_per_service = &mut self.series_per_service;
        self.series.retain(|key, state| {
            if state.count > 0 {
                out.push(HistogramSeries {
                    resource: Arc::clone(&key.resource),
                    metric: key.metric,
                    attributes: key.attributes.clone(),
                    start_unix_ns,
                    end_unix_ns: now_unix_ns,
                    count: state.count,
                    sum_s: state.sum_s,
                    min_s: state.min_s,
                    max_s: state.max_s,
                    bucket_counts: state.bucket_counts.to_vec(),
                });
                state.reset();
                return true;
            }
            state.idle_takes += 1;
            if state.idle_takes < FORGET_AFTER_IDLE_TAKES {
                return true;
            }
            forgotten += 1;
            if !state.overflow {
                let service = &key.resource.service_name;
                if let Some(counts) = series_per_service.get_mut(service) {
                    counts[key.metric.index()] = counts[key.metric.index()].saturating_sub(1);
                    if counts.iter().all(|&count| count == 0) {
                        series_per_service.remove(service);
                    }
                }
            }
            false
        });
        self.stats.forgotten_series += forgotten;
        out
    }

    /// Counters since creation.
    pub fn stats(&self) -> RedStats {
        RedStats {
            live_series: self.series.len(),
            ..self.stats
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(service: &str, pid: i64) -> Arc<Resource> {
        Arc::new(Resource {
            service_name: service.to_string(),
            attributes: vec![
                ("process.pid".into(), AttrValue::Int(pid)),
                ("service.name".into(), AttrValue::Str(service.into())),
            ],
        })
    }

    fn route(route: &str) -> Vec<Attribute> {
        vec![
            ("http.route".into(), AttrValue::Str(route.into())),
            ("http.request.method".into(), AttrValue::Str("GET".into())),
        ]
    }

    #[test]
    fn grpc_spans_feed_the_rpc_metrics() {
        let span = |kind, attributes| Span {
            resource: resource("svc", 1),
            kind,
            trace_id: [1; 16],
            span_id: [2; 8],
            parent_span_id: None,
            name: "n".into(),
            start_unix_ns: 0,
            end_unix_ns: 1,
            attributes,
            error: false,
        };
        let grpc = vec![("rpc.system".into(), AttrValue::Str("grpc".into()))];
        assert_eq!(
            DurationMetric::of(&span(SpanKind::Server, grpc.clone())),
            DurationMetric::RpcServer
        );
        assert_eq!(
            DurationMetric::of(&span(SpanKind::Client, grpc)),
            DurationMetric::RpcClient
        );
        assert_eq!(
            DurationMetric::of(&span(SpanKind::Client, route("/x"))),
            DurationMetric::HttpClient
        );
    }

    /// The taken series sorted by (metric, attributes), for stable assertions.
    fn take_sorted(red: &mut RedAggregator, now: u64) -> Vec<HistogramSeries> {
        let mut series = red.take(now);
        series.sort_by(|a, b| {
            (a.resource.service_name.as_str(), a.metric, &a.attributes).cmp(&(
                b.resource.service_name.as_str(),
                b.metric,
                &b.attributes,
            ))
        });
        series
    }

    #[test]
    fn values_on_a_bound_go_to_that_bounds_bucket() {
        assert_eq!(BUCKET_COUNT, 15);
        assert_eq!(bucket_index(0.0), 0);
        assert_eq!(bucket_index(0.005), 0);
        assert_eq!(bucket_index(0.005_000_1), 1);
        assert_eq!(bucket_index(0.01), 1);
        assert_eq!(bucket_index(1.0), 9);
        assert_eq!(bucket_index(10.0), 13);
        assert_eq!(bucket_index(10.000_001), 14);
        assert_eq!(bucket_index(1e9), 14);
        for (index, &bound) in DURATION_BUCKETS_S.iter().enumerate() {
            assert_eq!(bucket_index(bound), index, "bound {bound}");
        }
    }

    #[test]
    fn take_returns_deltas_then_resets() {
        let app = resource("app", 1);
        let mut red = RedAggregator::starting_at(100, 1_000);
        for duration in [0.005, 0.2, 0.3, 12.0] {
            red.record(&app, DurationMetric::HttpServer, route("/a"), duration);
        }
        let first = red.take(2_000);
        assert_eq!(first.len(), 1);
        let point = &first[0];
        assert_eq!((point.start_unix_ns, point.end_unix_ns), (1_000, 2_000));
        assert_eq!(point.count, 4);
        assert!((point.sum_s - 12.505).abs() < 1e-9, "{}", point.sum_s);
        assert_eq!((point.min_s, point.max_s), (0.005, 12.0));
        let mut expected = vec![0; BUCKET_COUNT];
        expected[0] = 1; // 0.005 in (-inf, 0.005]
        expected[6] = 1; // 0.2 in (0.1, 0.25]
        expected[7] = 1; // 0.3 in (0.25, 0.5]
        expected[14] = 1; // 12 in (10, +inf)
        assert_eq!(point.bucket_counts, expected);
        assert_eq!(point.metric.name(), "http.server.request.duration");

        // Nothing new: nothing returned.
        assert!(red.take(3_000).is_empty());
        // The next interval starts at the previous take, and counts only what is new.
        red.record(&app, DurationMetric::HttpServer, route("/a"), 0.05);
        let third = red.take(4_000);
        assert_eq!(third.len(), 1);
        assert_eq!(
            (third[0].start_unix_ns, third[0].end_unix_ns),
            (3_000, 4_000)
        );
        assert_eq!(third[0].count, 1);
        assert_eq!(
            (third[0].min_s, third[0].max_s, third[0].sum_s),
            (0.05, 0.05, 0.05)
        );
        assert_eq!(third[0].bucket_counts.iter().sum::<u64>(), 1);
    }

    #[test]
    fn attribute_order_does_not_split_series() {
        let app = resource("app", 1);
        let mut red = RedAggregator::starting_at(100, 0);
        let mut reversed = route("/a");
        reversed.reverse();
        red.record(&app, DurationMetric::HttpServer, route("/a"), 0.1);
        red.record(&app, DurationMetric::HttpServer, reversed, 0.1);
        // Same content in another Arc: the same resource.
        red.record(
            &resource("app", 1),
            DurationMetric::HttpServer,
            route("/a"),
            0.1,
        );
        let series = red.take(1);
        assert_eq!(series.len(), 1);
        assert_eq!(series[0].count, 3);
        assert_eq!(series[0].attributes[0].0, "http.request.method");
        assert_eq!(series[0].attributes[1].0, "http.route");
    }

    #[test]
    fn the_cap_sends_new_attribute_sets_to_the_overflow_series() {
        let app = resource("app", 1);
        let other = resource("other", 2);
        let mut red = RedAggregator::starting_at(2, 0);
        for name in ["/a", "/b", "/c", "/d"] {
            red.record(&app, DurationMetric::HttpServer, route(name), 0.1);
        }
        // Existing series keep receiving their own recordings.
        red.record(&app, DurationMetric::HttpServer, route("/a"), 0.1);
        // The cap is per metric and per service.
        red.record(&app, DurationMetric::HttpClient, route("/c"), 0.1);
        red.record(&other, DurationMetric::HttpServer, route("/c"), 0.1);
        assert_eq!(red.stats().overflow_recordings, 2);

        let series = take_sorted(&mut red, 10);
        let summary: Vec<(&str, DurationMetric, String, u64)> = series
            .iter()
            .map(|s| {
                (
                    s.resource.service_name.as_str(),
                    s.metric,
                    format!("{:?}", s.attributes.last().map(|a| &a.1)),
                    s.count,
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    "app",
                    DurationMetric::HttpServer,
                    r#"Some(Str("/a"))"#.into(),
                    2
                ),
                (
                    "app",
                    DurationMetric::HttpServer,
                    r#"Some(Str("/b"))"#.into(),
                    1
                ),
                (
                    "app",
                    DurationMetric::HttpServer,
                    "Some(Bool(true))".into(),
                    2
                ),
                (
                    "app",
                    DurationMetric::HttpClient,
                    r#"Some(Str("/c"))"#.into(),
                    1
                ),
                (
                    "other",
                    DurationMetric::HttpServer,
                    r#"Some(Str("/c"))"#.into(),
                    1
                ),
            ]
        );
        assert_eq!(
            series[2].attributes,
            vec![(OVERFLOW_ATTRIBUTE.into(), AttrValue::Bool(true))]
        );

        // The cap holds in the next interval even though /b is idle in it.
        red.record(&app, DurationMetric::HttpServer, route("/e"), 0.1);
        let series = red.take(20);
        assert_eq!(series.len(), 1);
        assert_eq!(series[0].attributes[0].0, OVERFLOW_ATTRIBUTE);
        assert_eq!(red.stats().overflow_recordings, 3);
    }

    #[test]
    fn idle_series_are_forgotten_and_free_their_slot() {
        let app = resource("app", 1);
        let mut red = RedAggregator::starting_at(1, 0);
        red.record(&app, DurationMetric::HttpServer, route("/a"), 0.1);
        red.record(&app, DurationMetric::HttpServer, route("/b"), 0.1); // overflow
        assert_eq!(red.take(1).len(), 2);
        assert_eq!(red.stats().live_series, 2);
        for now in 2..=u64::from(FORGET_AFTER_IDLE_TAKES) {
            assert!(red.take(now).is_empty());
            assert_eq!(red.stats().live_series, 2, "take {now}");
        }
        assert!(red.take(100).is_empty());
        assert_eq!(red.stats().live_series, 0);
        assert_eq!(red.stats().forgotten_series, 2);
        // /b gets the freed slot.
        red.record(&app, DurationMetric::HttpServer, route("/b"), 0.1);
        let series = red.take(101);
        assert_eq!(series.len(), 1);
        assert_eq!(series[0].attributes, route_sorted("/b"));
        assert_eq!(red.stats().overflow_recordings, 1);
    }

    fn route_sorted(name: &str) -> Vec<Attribute> {
        let mut attributes = route(name);
        attributes.sort();
        attributes
    }

    #[test]
    fn invalid_durations_are_dropped_and_counted() {
        let app = resource("app", 1);
        let mut red = RedAggregator::starting_at(10, 0);
        for duration in [f64::NAN, -0.001, f64::INFINITY, f64::NEG_INFINITY] {
            red.record(&app, DurationMetric::RpcServer, route("/a"), duration);
        }
        assert_eq!(red.stats().invalid_durations, 4);
        assert!(red.take(1).is_empty());
        red.record(&app, DurationMetric::RpcServer, route("/a"), -0.0);
        let series = red.take(2);
        assert_eq!(series[0].count, 1);
        assert!(series[0].min_s.is_sign_positive());
        assert_eq!(series[0].bucket_counts[0], 1);
        assert_eq!(series[0].metric.name(), "rpc.server.call.duration");
    }

    #[test]
    fn metric_names() {
        let names: Vec<&str> = DurationMetric::ALL.iter().map(|m| m.name()).collect();
        assert_eq!(
            names,
            [
                "http.server.request.duration",
                "http.client.request.duration",
                "rpc.server.call.duration",
                "rpc.client.call.duration"
            ]
        );
        assert!(DurationMetric::ALL.iter().all(|m| m.unit() == "s"));
        assert_eq!(
            DurationMetric::http(SpanKind::Client),
            DurationMetric::HttpClient
        );
    }
}
