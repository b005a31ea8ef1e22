//! RED series (rate, error ratio, duration quantiles) from request-duration histogram points.
//!
//! Points arrive cumulative (OTel SDK default) or delta. Cumulative points of one stream are
//! turned into deltas by subtracting the previous point; the first point of a stream counts
//! whole only when its accumulation started inside the fetched window (else it is only the
//! baseline for the next one). Deltas are summed per (service, route, kind) and step, and
//! quantiles are interpolated linearly inside the histogram bucket holding the rank, as
//! Prometheus' `histogram_quantile` does.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::model::RedPoint;

const NS_PER_S: i64 = 1_000_000_000;

/// Smallest default step.
pub const MIN_STEP_NS: i64 = 10 * NS_PER_S;

/// The `/red` response.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RedResponse {
    /// Width of each point.
    pub step_seconds: i64,
    /// One series per (service, route, kind), sorted.
    pub series: Vec<RedSeries>,
}

/// A RED series.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RedSeries {
    /// `service.name`.
    pub service: String,
    /// `http.route` or `rpc.service/rpc.method`.
    pub route: String,
    /// `server` or `client`.
    pub kind: String,
    /// One point per step, oldest first.
    pub points: Vec<RedValue>,
}

/// The values of one step.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RedValue {
    /// Start of the step, unix seconds.
    pub t: i64,
    /// Requests per second.
    pub rate: f64,
    /// Failed requests / requests, 0 when there were none.
    pub error_ratio: f64,
    /// Median duration, seconds; `null` without requests.
    pub p50: Option<f64>,
    /// 95th percentile, seconds.
    pub p95: Option<f64>,
    /// 99th percentile, seconds.
    pub p99: Option<f64>,
}

/// The time window of a RED query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RedWindow {
    /// Start of the range, ns.
    pub from_ns: i64,
    /// End of the range, ns.
    pub until_ns: i64,
    /// Step width, ns (> 0).
    pub step_ns: i64,
    /// Start of the points fetched from the store (before `from_ns`, so that the first
    /// cumulative point in range has a predecessor).
    pub fetched_from_ns: i64,
}

/// The default step of a range: range/60, at least 10 s, rounded to whole seconds.
pub fn default_step_ns(from_ns: i64, until_ns: i64) -> i64 {
    let step = (until_ns.saturating_sub(from_ns) / 60).max(MIN_STEP_NS);
    step.div_euclid(NS_PER_S).max(1) * NS_PER_S
}

/// A histogram being summed: explicit bounds and `bounds.len() + 1` counts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    /// Upper bounds, ascending.
    pub bounds: Vec<f64>,
    /// Counts per bucket.
    pub counts: Vec<u64>,
}

impl Histogram {
    /// Adds another histogram; with different bounds each of its buckets is added to the
    /// bucket holding its upper bound (its lower bound for the overflow bucket).
    pub fn add(&mut self, bounds: &[f64], counts: &[u64]) {
        if self.counts.is_empty() {
            self.bounds = bounds.to_vec();
            self.counts = vec![0; bounds.len() + 1];
        }
        if self.bounds == bounds && counts.len() == self.counts.len() {
            for (total, count) in self.counts.iter_mut().zip(counts) {
                *total += count;
            }
            return;
        }
        for (i, &count) in counts.iter().enumerate() {
            let representative = bounds
                .get(i)
                .or_else(|| bounds.last())
                .copied()
                .unwrap_or(0.0);
            let target = self.bounds.partition_point(|&b| b < representative);
            let target = if i >= bounds.len() && target < self.bounds.len() {
                // The overflow bucket's values are above its lower bound.
                self.bounds.partition_point(|&b| b <= representative)
            } else {
                target
            };
            if let Some(slot) = self.counts.get_mut(target) {
                *slot += count;
            }
        }
    }

    /// The `q` quantile (0..=1) by linear interpolation within the bucket holding the rank;
    /// `None` when the histogram is empty. Ranks in the overflow bucket return the highest
    /// bound; the first bucket starts at 0 when its bound is positive.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        quantile(&self.bounds, &self.counts, q)
    }
}

/// See [`Histogram::quantile`].
pub fn quantile(bounds: &[f64], counts: &[u64], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 || bounds.is_empty() || counts.len() != bounds.len() + 1 || q.is_nan() {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut below = 0.0;
    for (i, &count) in counts.iter().enumerate() {
        let count = count as f64;
        if count > 0.0 && below + count >= rank {
            if i == bounds.len() {
                return bounds.last().copied();
            }
            let upper = bounds[i];
            let lower = if i == 0 {
                if upper > 0.0 {
                    0.0
                } else {
                    upper
                }
            } else {
                bounds[i - 1]
            };
            return Some(lower + (upper - lower) * ((rank - below) / count));
        }
        below += count;
    }
    bounds.last().copied()
}

/// One point's increase since the previous point of its stream.
#[derive(Clone, Debug, PartialEq)]
pub struct Delta<'a> {
    /// The point it came from (for its key and bounds).
    pub point: &'a RedPoint,
    /// Requests in the interval.
    pub count: u64,
    /// Per-bucket increases.
    pub counts: Vec<u64>,
}

/// Turns points into per-interval increases (see the module doc).
pub fn deltas(points: &[RedPoint], fetched_from_ns: i64) -> Vec<Delta<'_>> {
    let mut streams: HashMap<(u64, i64, &crate::model::RedKey), Vec<&RedPoint>> = HashMap::new();
    for point in points {
        streams
            .entry((point.stream, point.start_ns, &point.key))
            .or_default()
            .push(point);
    }
    let mut out = Vec::new();
    for mut stream in streams.into_values() {
        stream.sort_by_key(|p| p.time_ns);
        let mut previous: Option<&RedPoint> = None;
        for point in stream {
            if !point.cumulative {
                out.push(Delta {
                    point,
                    count: point.count,
                    counts: point.counts.clone(),
                });
                continue;
            }
            match previous {
                Some(prev)
                    if prev.bounds == point.bounds
                        && prev.counts.len() == point.counts.len()
                        && point.count >= prev.count =>
                {
                    let counts = point
                        .counts
                        .iter()
                        .zip(&prev.counts)
                        .map(|(now, before)| now.saturating_sub(*before))
                        .collect();
                    out.push(Delta {
                        point,
                        count: point.count - prev.count,
                        counts,
                    });
                }
                // A reset (count went down or bounds changed) starts over from zero.
                Some(_) => out.push(Delta {
                    point,
                    count: point.count,
                    counts: point.counts.clone(),
                }),
                None if point.start_ns >= fetched_from_ns => out.push(Delta {
                    point,
                    count: point.count,
                    counts: point.counts.clone(),
                }),
                None => {}
            }
            previous = Some(point);
        }
    }
    out
}

#[derive(Default)]
struct Step {
    count: u64,
    errors: u64,
    histogram: Histogram,
}

/// Computes the RED series of a window from the points fetched for it.
pub fn red(points: &[RedPoint], window: RedWindow) -> RedResponse {
    let step_ns = window.step_ns.max(NS_PER_S);
    let start = window.from_ns.div_euclid(step_ns) * step_ns;
    let span = (window.until_ns - start).max(1);
    let steps = usize::try_from(span / step_ns + i64::from(span % step_ns != 0))
        .unwrap_or(1)
        .clamp(1, 100_000);
    type SeriesKey<'a> = (&'a str, &'a str, &'a str);
    let mut series: BTreeMap<SeriesKey<'_>, Vec<Step>> = BTreeMap::new();
    for delta in deltas(points, window.fetched_from_ns) {
        let time = delta.point.time_ns;
        if time < start || time > window.until_ns {
            continue;
        }
        let index = usize::try_from((time - start) / step_ns)
            .unwrap_or(0)
            .min(steps - 1);
        let key = &delta.point.key;
        let slots = series
            .entry((&key.service, &key.route, &key.kind))
            .or_insert_with(|| (0..steps).map(|_| Step::default()).collect());
        let step = &mut slots[index];
        step.count += delta.count;
        if key.error {
            step.errors += delta.count;
        }
        step.histogram.add(&delta.point.bounds, &delta.counts);
    }
    let step_seconds = step_ns / NS_PER_S;
    let series = series
        .into_iter()
        .map(|((service, route, kind), slots)| RedSeries {
            service: service.to_owned(),
            route: route.to_owned(),
            kind: kind.to_owned(),
            points: slots
                .iter()
                .enumerate()
                .map(|(i, step)| {
                    let count = step.count as f64;
                    RedValue {
                        t: (start + step_ns * i as i64) / NS_PER_S,
                        rate: count / step_seconds as f64,
                        error_ratio: if step.count == 0 {
                            0.0
                        } else {
                            step.errors as f64 / count
                        },
                        p50: step.histogram.quantile(0.50),
                        p95: step.histogram.quantile(0.95),
                        p99: step.histogram.quantile(0.99),
                    }
                })
                .collect(),
        })
        .collect();
    RedResponse {
        step_seconds,
        series,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RedKey;

    const BOUNDS: [f64; 4] = [0.01, 0.1, 1.0, 10.0];

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket() {
        // 10 requests in (0.01, 0.1], 10 in (0.1, 1].
        let counts = [0, 10, 10, 0, 0];
        // p50: rank 10, the end of bucket 1 → 0.1.
        assert!(close(quantile(&BOUNDS, &counts, 0.5), 0.1));
        // p25: rank 5, half-way into (0.01, 0.1].
        assert!(close(quantile(&BOUNDS, &counts, 0.25), 0.055));
        // p95: rank 19, 9/10 into (0.1, 1].
        assert!(close(quantile(&BOUNDS, &counts, 0.95), 0.91));
        // The first bucket starts at 0.
        assert!(close(quantile(&BOUNDS, &[4, 0, 0, 0, 0], 0.5), 0.005));
        // Overflow bucket: the highest bound.
        assert!(close(quantile(&BOUNDS, &[0, 0, 0, 0, 3], 0.99), 10.0));
        assert_eq!(quantile(&BOUNDS, &[0; 5], 0.5), None);
        assert_eq!(quantile(&[], &[5], 0.5), None);
        assert_eq!(quantile(&BOUNDS, &[1, 2], 0.5), None, "bad shape");
    }

    #[test]
    fn histograms_with_other_bounds_are_rebinned() {
        let mut h = Histogram::default();
        h.add(&BOUNDS, &[1, 1, 1, 1, 1]);
        h.add(&[0.1, 10.0], &[2, 3, 4]);
        // 0.1-bucket → bucket of bound 0.1; 10-bucket → bucket of bound 10; overflow → overflow.
        assert_eq!(h.counts, vec![1, 3, 1, 4, 5]);
    }

    fn point(
        key: &RedKey,
        time_s: i64,
        count: u64,
        counts: [u64; 5],
        cumulative: bool,
    ) -> RedPoint {
        RedPoint {
            key: key.clone(),
            stream: 7,
            start_ns: 1_000 * NS_PER_S,
            time_ns: time_s * NS_PER_S,
            cumulative,
            count,
            sum: 0.0,
            bounds: BOUNDS.to_vec(),
            counts: counts.to_vec(),
        }
    }

    fn key(error: bool) -> RedKey {
        RedKey {
            service: "api".to_owned(),
            route: "/users/{id}".to_owned(),
            method: "GET".to_owned(),
            kind: "server".to_owned(),
            error,
        }
    }

    #[test]
    fn cumulative_points_become_rates() {
        let ok = key(false);
        let err = key(true);
        let points = vec![
            // Cumulative since t=1000: 60 requests by 1060, 180 by 1120.
            point(&ok, 1060, 60, [0, 60, 0, 0, 0], true),
            point(&ok, 1120, 180, [0, 60, 120, 0, 0], true),
            // 6 errors in the second minute only (same series once merged).
            point(&err, 1060, 0, [0, 0, 0, 0, 0], true),
            point(&err, 1120, 6, [0, 0, 0, 6, 0], true),
        ];
        let window = RedWindow {
            from_ns: 1_020 * NS_PER_S,
            until_ns: 1_140 * NS_PER_S,
            step_ns: 60 * NS_PER_S,
            fetched_from_ns: 900 * NS_PER_S,
        };
        let response = red(&points, window);
        assert_eq!(response.step_seconds, 60);
        assert_eq!(
            response.series.len(),
            1,
            "method and error merge into one series"
        );
        let series = &response.series[0];
        assert_eq!(
            (series.service.as_str(), series.kind.as_str()),
            ("api", "server")
        );
        let t: Vec<_> = series.points.iter().map(|p| p.t).collect();
        assert_eq!(t, [1020, 1080]);
        // Step [1020, 1080): the first point counts whole (its stream started in the window).
        assert!((series.points[0].rate - 1.0).abs() < 1e-9);
        assert!(close(series.points[0].p50, 0.055));
        assert_eq!(series.points[0].error_ratio, 0.0);
        // Step [1080, 1140): 120 ok + 6 errors.
        let second = &series.points[1];
        assert!((second.rate - 126.0 / 60.0).abs() < 1e-9);
        assert!((second.error_ratio - 6.0 / 126.0).abs() < 1e-9);
        assert!(second.p50.is_some_and(|p| p > 0.1 && p < 1.0));
        assert!(second.p99.is_some_and(|p| p > 1.0 && p <= 10.0));
    }

    #[test]
    fn cumulative_streams_older_than_the_window_need_a_baseline() {
        let ok = key(false);
        let mut old = point(&ok, 1060, 60, [0, 60, 0, 0, 0], true);
        old.start_ns = 0;
        let fetched_from_ns = 1_000 * NS_PER_S;
        assert!(deltas(std::slice::from_ref(&old), fetched_from_ns).is_empty());
        let mut next = old.clone();
        next.time_ns += 60 * NS_PER_S;
        next.count = 70;
        next.counts = vec![0, 70, 0, 0, 0];
        let points = [next, old];
        let d = deltas(&points, fetched_from_ns);
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].count, d[0].counts[1]), (10, 10));
    }

    #[test]
    fn delta_points_count_as_they_are_and_resets_start_over() {
        let ok = key(false);
        let points = [
            point(&ok, 1010, 5, [5, 0, 0, 0, 0], false),
            point(&ok, 1020, 5, [5, 0, 0, 0, 0], false),
        ];
        let d = deltas(&points, 0);
        assert_eq!(d.iter().map(|d| d.count).sum::<u64>(), 10);
        let reset = [
            point(&ok, 1010, 50, [50, 0, 0, 0, 0], true),
            point(&ok, 1020, 3, [3, 0, 0, 0, 0], true),
        ];
        let d = deltas(&reset, 0);
        assert_eq!(d.iter().map(|d| d.count).sum::<u64>(), 53);
    }

    #[test]
    fn default_step_is_a_sixtieth_of_the_range() {
        assert_eq!(default_step_ns(0, 3600 * NS_PER_S), 60 * NS_PER_S);
        assert_eq!(default_step_ns(0, 60 * NS_PER_S), 10 * NS_PER_S);
        let empty = red(
            &[],
            RedWindow {
                from_ns: 0,
                until_ns: 600 * NS_PER_S,
                step_ns: 60 * NS_PER_S,
                fetched_from_ns: 0,
            },
        );
        assert!(empty.series.is_empty());
    }
}
