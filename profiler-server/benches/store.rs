//! Store benchmark: ingests one hour of a realistic node (100 processes sampled at 19 Hz,
//! 2 threads each, every process drawing from its own ~300 stacks with a Zipf-like skew,
//! one profile per 10 s) through the [`Store`] trait, then reports bytes per sample on disk,
//! ingest throughput and flame graph query latency; also pprof decode speed of the fixture.
//!
//! `cargo bench -p profiler-server --bench store` (add `-- --smoke` for a 5-minute, 10-process
//! run that checks the harness end to end).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use profiler_server::model::{Frame, Labels, Profile, Sample};
use profiler_server::query::{tree, Selector};
use profiler_server::store::sqlite::{SqliteStore, DB_FILE};
use profiler_server::store::{ProfileFilter, Store, TimeRange};

const BURN3: &[u8] = include_bytes!("../tests/data/burn3.pb.gz");
const NS: i64 = 1_000_000_000;

/// Runs of each query after the first, for the median.
const QUERY_REPEATS: usize = 5;

/// One query's timings: the first run (`took`, of which `read` in the store) and the median of
/// [`QUERY_REPEATS`] more.
struct Query {
    what: &'static str,
    took: Duration,
    read: Duration,
    median: Duration,
    total: u64,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct Workload {
    processes: usize,
    threads: usize,
    hz: usize,
    seconds: i64,
    interval_s: i64,
    stacks_per_process: usize,
}

/// A process: its stacks (function names, root first) and their cumulative weights.
struct Process {
    pid: u32,
    comm: String,
    stacks: Vec<Vec<String>>,
    cumulative: Vec<f64>,
}

fn processes(w: &Workload, rng: &mut Rng) -> Vec<Process> {
    // A shared pool of library functions (libc, runtime, kernel) and per-binary functions.
    let shared: Vec<String> = (0..400).map(|i| format!("lib_function_{i}")).collect();
    (0..w.processes)
        .map(|p| {
            let own: Vec<String> = (0..150)
                .map(|i| format!("app{}::module::function_{i}", p % 20))
                .collect();
            let stacks: Vec<Vec<String>> = (0..w.stacks_per_process)
                .map(|_| {
                    let depth = 10 + rng.below(30);
                    let mut stack = vec!["_start".to_owned(), "main".to_owned()];
                    for d in 2..depth {
                        let pool = if d < depth - 4 { &own } else { &shared };
                        stack.push(pool[rng.below(pool.len())].clone());
                    }
                    stack
                })
                .collect();
            let mut total = 0.0;
            let cumulative = (0..stacks.len())
                .map(|k| {
                    total += 1.0 / ((k + 1) as f64).powf(1.1);
                    total
                })
                .collect();
            Process {
                pid: 1000 + p as u32,
                comm: format!("app{}", p % 20),
                stacks,
                cumulative,
            }
        })
        .collect()
}

/// One interval's profile of the whole node.
fn profile(w: &Workload, procs: &[Process], time_ns: i64, rng: &mut Rng) -> Profile {
    let mut out = Profile {
        time_ns,
        period_ns: NS / w.hz as i64,
        ..Profile::default()
    };
    let mut frames = std::collections::HashMap::new();
    for process in procs {
        let mut counts = std::collections::HashMap::new();
        for _ in 0..w.hz * w.interval_s as usize {
            let total = *process.cumulative.last().unwrap_or(&1.0);
            let x = rng.unit() * total;
            let stack = process
                .cumulative
                .partition_point(|&c| c < x)
                .min(process.stacks.len() - 1);
            let thread = rng.below(w.threads);
            *counts.entry((stack, thread)).or_insert(0u64) += 1;
        }
        for ((stack, thread), value) in counts {
            let labels: Labels = vec![
                ("comm".into(), process.comm.clone()),
                ("pid".into(), process.pid.to_string()),
                ("service_name".into(), process.comm.clone()),
                ("tid".into(), (process.pid + thread as u32).to_string()),
            ];
            let label_index = match out.label_sets.iter().position(|l| *l == labels) {
                Some(i) => i,
                None => {
                    out.label_sets.push(labels);
                    out.label_sets.len() - 1
                }
            } as u32;
            let stack = process.stacks[stack]
                .iter()
                .map(|name| {
                    let next = out.frames.len() as u32;
                    *frames.entry(name.clone()).or_insert_with(|| {
                        out.frames.push(Frame {
                            name: name.clone(),
                            kernel: name.starts_with("lib_function_3"),
                        });
                        next
                    })
                })
                .collect();
            out.samples.push(Sample {
                stack,
                labels: label_index,
                value,
            });
        }
    }
    out
}

fn dir_bytes(dir: &PathBuf) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn main() {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let w = if smoke {
        Workload {
            processes: 10,
            threads: 2,
            hz: 19,
            seconds: 300,
            interval_s: 10,
            stacks_per_process: 300,
        }
    } else {
        Workload {
            processes: 100,
            threads: 2,
            hz: 19,
            seconds: 3600,
            interval_s: 10,
            stacks_per_process: 300,
        }
    };
    let dir = std::env::temp_dir().join(format!("profiler-server-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");

    // pprof decode + normalize of the agent fixture.
    let labels: Labels = vec![("service_name".into(), "bench".into())];
    let rounds = if smoke { 50 } else { 2000 };
    let started = Instant::now();
    let mut decoded_samples = 0;
    for _ in 0..rounds {
        let p = profiler_server::ingest::pprof::decode(BURN3, &labels).expect("fixture decodes");
        decoded_samples += p.total();
    }
    let decode = started.elapsed();

    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let procs = processes(&w, &mut rng);
    let t0 = 1_764_000_000 * NS;
    let profiles: Vec<Profile> = (0..w.seconds / w.interval_s)
        .map(|i| profile(&w, &procs, t0 + i * w.interval_s * NS, &mut rng))
        .collect();
    let samples: u64 = profiles.iter().map(Profile::total).sum();

    let (ingest, queries) = runtime.block_on(async {
        let store = SqliteStore::open(&dir).expect("open store");
        let started = Instant::now();
        for p in profiles {
            store.write_profile(p).await.expect("write");
        }
        let ingest = started.elapsed();
        let mut queries = Vec::new();
        let end = t0 + w.seconds * NS;
        for (what, from, selector) in [
            ("flame graph, whole range, all series", t0, ""),
            ("flame graph, last 10 min, all series", end - 600 * NS, ""),
            (
                "flame graph, whole range, one service",
                t0,
                r#"{service_name="app7"}"#,
            ),
        ] {
            let filter = ProfileFilter {
                range: TimeRange {
                    from_ns: from,
                    until_ns: end,
                },
                selector: Selector::parse(selector).expect("selector"),
                trace_id: None,
                span_id: None,
            };
            let started = Instant::now();
            let counts = store.stack_counts(filter.clone()).await.expect("query");
            let read = started.elapsed();
            let graph = tree::flame_graph(&counts, tree::DEFAULT_MAX_NODES);
            let took = started.elapsed();
            // The same query again, to tell a cold first run from noise on a busy machine.
            let mut repeats = Vec::new();
            for _ in 0..QUERY_REPEATS {
                let started = Instant::now();
                let counts = store.stack_counts(filter.clone()).await.expect("query");
                let again = tree::flame_graph(&counts, tree::DEFAULT_MAX_NODES);
                repeats.push(started.elapsed());
                assert_eq!(again, graph, "a repeated query gives the same graph");
            }
            repeats.sort();
            queries.push(Query {
                what,
                took,
                read,
                median: repeats[repeats.len() / 2],
                total: graph.total,
            });
        }
        store.close().await;
        (ingest, queries)
    });
    let bytes = dir_bytes(&dir);
    let _ = std::fs::remove_dir_all(&dir);

    let per_s = |n: u64, d: Duration| n as f64 / d.as_secs_f64();
    println!(
        "workload: {} processes x {} threads at {} Hz for {} s, one profile per {} s",
        w.processes, w.threads, w.hz, w.seconds, w.interval_s
    );
    println!("samples ingested       {samples}");
    println!("bytes on disk          {bytes} ({DB_FILE} after close)");
    println!(
        "bytes per sample       {:.2}",
        bytes as f64 / samples as f64
    );
    println!(
        "ingest                 {:.0} samples/s, {:.1} ms per profile",
        per_s(samples, ingest),
        ingest.as_secs_f64() * 1e3 / (w.seconds / w.interval_s) as f64
    );
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for q in queries {
        println!(
            "{:<38} {:>8.1} ms ({} samples; store {:.1} ms, tree {:.1} ms; median of {} more {:.1} ms)",
            q.what,
            ms(q.took),
            q.total,
            ms(q.read),
            ms(q.took - q.read),
            QUERY_REPEATS,
            ms(q.median)
        );
    }
    println!(
        "pprof decode+normalize {:.0} samples/s ({:.2} ms per {}-byte fixture)",
        per_s(decoded_samples, decode),
        decode.as_secs_f64() * 1e3 / rounds as f64,
        BURN3.len()
    );
}
