//! Store tests on a real database in a temporary directory.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::model::{Frame, RedKey, Sample, SpanId, SpanKind, SpanStatus, BUCKET_NS};
use crate::store::{ProfileFilter, RedFilter, TimeRange, TraceFilter};

const T0: i64 = 1_764_000_000_000_000_000;

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let path =
            std::env::temp_dir().join(format!("profiler-server-store-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

use crate::model::labels;

/// A profile from folded lines `a;b;c count` with one label set per line group.
/// A folded stack, its count and its labels.
type Line<'a> = (&'a str, u64, &'a [(&'a str, &'a str)]);

fn profile(time_ns: i64, lines: &[Line<'_>]) -> Profile {
    let mut p = Profile {
        time_ns,
        period_ns: 10_000_000,
        ..Profile::default()
    };
    for (stack, count, set) in lines {
        let set = labels(set);
        let label_index = match p.label_sets.iter().position(|s| *s == set) {
            Some(i) => i,
            None => {
                p.label_sets.push(set);
                p.label_sets.len() - 1
            }
        } as u32;
        let stack = stack
            .split(';')
            .map(|name| {
                let frame = Frame {
                    name: name.trim_end_matches("_[k]").to_owned(),
                    kernel: name.ends_with("_[k]"),
                };
                match p.frames.iter().position(|f| *f == frame) {
                    Some(i) => i as u32,
                    None => {
                        p.frames.push(frame);
                        (p.frames.len() - 1) as u32
                    }
                }
            })
            .collect();
        p.samples.push(Sample {
            stack,
            labels: label_index,
            value: *count,
        });
    }
    p
}

/// Leaf name → count of a query.
fn leaves(counts: &StackCounts) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    for (stack, count) in &counts.stacks {
        if let Some(&leaf) = stack.last() {
            *out.entry(counts.frames[leaf as usize].name.clone())
                .or_insert(0) += count;
        }
    }
    out
}

fn all(selector: &str) -> ProfileFilter {
    ProfileFilter {
        range: TimeRange::ALL,
        selector: Selector::parse(selector).expect("selector"),
        trace_id: None,
        span_id: None,
    }
}

const API: &[(&str, &str)] = &[("service_name", "api"), ("pid", "1")];
const DB: &[(&str, &str)] = &[("service_name", "db"), ("pid", "2")];

#[tokio::test]
async fn profiles_round_trip_and_merge_per_bucket() {
    let dir = TempDir::new();
    let store = SqliteStore::open(&dir.0).expect("open");
    let p = profile(
        T0,
        &[
            ("main;work;burn_alpha", 1, API),
            ("main;work;burn_beta", 2, API),
            ("main;read_[k]", 5, DB),
        ],
    );
    let summary = store.write_profile(p.clone()).await.expect("write");
    assert_eq!(
        summary,
        WriteSummary {
            samples: 8,
            series: 2
        }
    );
    // The same profile again, in the same bucket: counts add up in the same rows.
    store.write_profile(p).await.expect("write");

    let counts = store.stack_counts(all("")).await.expect("read");
    assert_eq!(counts.period_ns, 10_000_000);
    let got = leaves(&counts);
    assert_eq!(got["burn_alpha"], 2);
    assert_eq!(got["burn_beta"], 4);
    assert_eq!(got["read"], 10);
    assert!(counts.frames.iter().any(|f| f.name == "read" && f.kernel));

    let api_only = leaves(
        &store
            .stack_counts(all(r#"{service_name="api"}"#))
            .await
            .expect("read"),
    );
    assert_eq!(
        api_only.keys().collect::<Vec<_>>(),
        ["burn_alpha", "burn_beta"]
    );
    let regex = leaves(
        &store
            .stack_counts(all(r#"{pid=~"[2-9]"}"#))
            .await
            .expect("read"),
    );
    assert_eq!(regex.keys().collect::<Vec<_>>(), ["read"]);

    // Time ranges: the bucket of T0 only.
    let mut filter = all("");
    filter.range = TimeRange {
        from_ns: T0 + BUCKET_NS,
        until_ns: T0 + 2 * BUCKET_NS,
    };
    assert!(store
        .stack_counts(filter)
        .await
        .expect("read")
        .stacks
        .is_empty());

    let range = TimeRange {
        from_ns: T0 - 1,
        until_ns: T0 + 1,
    };
    let names = store
        .label_names(range, Selector::default())
        .await
        .expect("labels");
    assert_eq!(names, ["pid", "service_name"]);
    let values = store
        .label_values(range, Selector::default(), "service_name".into(), 10)
        .await
        .expect("values");
    assert_eq!(values, ["api", "db"]);
    let services = store.services(range).await.expect("services");
    assert_eq!(services.len(), 2);
    assert_eq!(
        (services[0].name.as_str(), services[0].profile_samples),
        ("api", 6)
    );
    store.close().await;
    assert!(
        store.write_profile(Profile::default()).await.is_err(),
        "closed"
    );
}

fn span(
    trace: u8,
    id: u8,
    parent: Option<u8>,
    name: &str,
    start: i64,
    end: i64,
    error: bool,
) -> Span {
    Span {
        trace_id: TraceId([trace; 16]),
        span_id: SpanId([id; 8]),
        parent_span_id: parent.map(|p| SpanId([p; 8])),
        service: "api".into(),
        name: name.into(),
        kind: if parent.is_none() {
            SpanKind::Server
        } else {
            SpanKind::Internal
        },
        start_ns: start,
        end_ns: end,
        status: if error {
            SpanStatus::Error
        } else {
            SpanStatus::Unset
        },
        route: Some("/users/{id}".into()),
        attributes: serde_json::Map::new(),
    }
}

#[tokio::test]
async fn spans_traces_and_span_profiles() {
    let dir = TempDir::new();
    let store = SqliteStore::open(&dir.0).expect("open");
    // The child arrives first; the trace takes the root's name once it is there.
    store
        .write_spans(vec![span(1, 2, Some(1), "query", T0 + 10, T0 + 20, true)])
        .await
        .expect("spans");
    store
        .write_spans(vec![
            span(1, 1, None, "GET /users/{id}", T0, T0 + 50_000_000, false),
            span(1, 2, Some(1), "query", T0 + 10, T0 + 20, true),
            span(3, 1, None, "GET /health", T0 + 100, T0 + 200, false),
        ])
        .await
        .expect("spans");
    let trace_hex = TraceId([1; 16]).to_string();
    let span_hex = SpanId([2; 8]).to_string();
    let labelled = [
        ("service_name", "api"),
        ("pid", "1"),
        ("trace_id", trace_hex.as_str()),
        ("span_id", span_hex.as_str()),
    ];
    store
        .write_profile(profile(
            T0,
            &[
                ("main;handler;query_db", 7, &labelled),
                ("main;idle", 3, API),
            ],
        ))
        .await
        .expect("profile");

    let traces = store
        .traces(TraceFilter {
            limit: 10,
            ..TraceFilter::default()
        })
        .await
        .expect("traces");
    assert_eq!(traces.len(), 2);
    assert_eq!(traces[0].trace_id, TraceId([3; 16]), "newest first");
    let t = &traces[1];
    assert_eq!(t.name, "GET /users/{id}");
    assert_eq!((t.span_count, t.error, t.has_profile), (2, true, true));
    assert_eq!(t.end_ns - t.start_ns, 50_000_000);
    let slow = store
        .traces(TraceFilter {
            limit: 10,
            min_duration_ns: Some(1_000_000),
            error: Some(true),
            route: Some("/users/{id}".into()),
            ..TraceFilter::default()
        })
        .await
        .expect("traces");
    assert_eq!(slow.len(), 1);

    let spans = store.trace(TraceId([1; 16])).await.expect("trace");
    assert_eq!(spans.len(), 2);
    assert_eq!(spans[0].span.name, "GET /users/{id}");
    assert_eq!((spans[0].profile_samples, spans[1].profile_samples), (0, 7));
    assert!(store
        .trace(TraceId([9; 16]))
        .await
        .expect("trace")
        .is_empty());

    // The series has no trace/span labels; the span filter finds its samples.
    let mut filter = all("");
    filter.span_id = Some(SpanId([2; 8]));
    assert_eq!(
        leaves(&store.stack_counts(filter.clone()).await.expect("read"))["query_db"],
        7
    );
    filter.trace_id = Some(TraceId([1; 16]));
    assert_eq!(
        store
            .stack_counts(filter.clone())
            .await
            .expect("read")
            .stacks
            .len(),
        1
    );
    filter.span_id = None;
    assert_eq!(
        store.stack_counts(filter).await.expect("read").stacks.len(),
        1
    );
    let total = leaves(&store.stack_counts(all("")).await.expect("read"));
    assert_eq!((total["query_db"], total["idle"]), (7, 3));
    let names = store
        .label_names(TimeRange::ALL, Selector::default())
        .await
        .expect("labels");
    assert_eq!(names, ["pid", "service_name", "span_id", "trace_id"]);
    let ids = store
        .label_values(TimeRange::ALL, Selector::default(), "span_id".into(), 10)
        .await
        .expect("values");
    assert_eq!(ids, [span_hex]);
    store.close().await;
}

#[tokio::test]
async fn data_survives_reopen_and_retention_deletes_old_buckets() {
    let dir = TempDir::new();
    let store = SqliteStore::open(&dir.0).expect("open");
    let old = T0 - 3_600_000_000_000;
    store
        .write_profile(profile(old, &[("main;old", 4, API)]))
        .await
        .expect("write");
    store
        .write_profile(profile(T0, &[("main;new", 6, API)]))
        .await
        .expect("write");
    store
        .write_spans(vec![span(5, 1, None, "old", old, old + 1, false)])
        .await
        .expect("spans");
    let point = RedPoint {
        key: RedKey {
            service: "api".into(),
            route: "/x".into(),
            method: "GET".into(),
            kind: "server".into(),
            error: false,
        },
        stream: u64::MAX - 3,
        start_ns: old - 1,
        time_ns: old,
        cumulative: true,
        count: 3,
        sum: 0.5,
        bounds: vec![0.1, 1.0],
        counts: vec![1, 2, 0],
    };
    store
        .write_red_points(vec![point.clone()])
        .await
        .expect("red");
    store.close().await;

    let store = SqliteStore::open(&dir.0).expect("reopen");
    let got = leaves(&store.stack_counts(all("")).await.expect("read"));
    assert_eq!((got["old"], got["new"]), (4, 6));
    assert_eq!(
        store.red_points(RedFilter::default()).await.expect("red"),
        [point]
    );
    // New writes after reopen reuse the interned ids.
    store
        .write_profile(profile(T0, &[("main;new", 1, API)]))
        .await
        .expect("write");
    assert_eq!(
        leaves(&store.stack_counts(all("")).await.expect("read"))["new"],
        7
    );

    let deleted = store
        .delete_before(T0 - 60_000_000_000)
        .await
        .expect("retention");
    assert_eq!(
        deleted, 4,
        "a sample row, a span, its trace row and a RED point"
    );
    let got = leaves(&store.stack_counts(all("")).await.expect("read"));
    assert_eq!(got.keys().collect::<Vec<_>>(), ["new"]);
    assert!(store
        .trace(TraceId([5; 16]))
        .await
        .expect("trace")
        .is_empty());
    assert!(store
        .red_points(RedFilter::default())
        .await
        .expect("red")
        .is_empty());
    assert_eq!(
        store
            .delete_before(T0 - 60_000_000_000)
            .await
            .expect("retention"),
        0
    );
    store.close().await;
}
